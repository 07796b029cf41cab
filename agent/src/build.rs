//! From a validated config to the things that run: destinations (senders), compiled routes,
//! the tracer's pipeline with its switches, and the listener specs.
//!
//! A reload builds a new set next to the running one ([`rebuild`]) and reuses what did not
//! change: a sender whose destination spec is identical keeps its task, queue and connection
//! (its TLS files are read again); a switch that still exists keeps its run-time state (an MI
//! `sip_trace tid off` survives a reload). A destination that cannot be built at a reload is
//! reported and left as it was, without stopping the rest.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use heptap_config::{Config, Destination};
use heptap_filters::{AddressGroups, Routes};
use heptap_hep::{Encoder, NetProto, PayloadMode, Version};
use heptap_mi::ReloadReport;
use serde_json::Value;

use crate::sender::{self, DestinationSpec, FanOut, Limits, Sender, SenderTask};
use crate::sip::Limits as FramerLimits;
use crate::stats::Stats;
use crate::tap::ListenerSpec;
use crate::tap::sip::SipSettings;
use crate::tracer::{NetTrace, Pipeline, Switch, TraceId};

/// One thing in a config that cannot be built, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum BuildProblem {
    /// A route file cannot be read, or a key names a route that does not exist.
    #[error("{0}")]
    Config(heptap_config::ConfigErrors),
    /// The routes do not compile.
    #[error("{0}")]
    Routes(heptap_filters::CompileErrors),
    /// A listener's TLS material cannot be used.
    #[error("listener[{index}]: {source}")]
    Listener {
        /// The listener's index in the config.
        index: usize,
        /// Why.
        source: crate::tap::TapError,
    },
    /// A transparent listener (`upstream_source = "client"`) would lose its capability after
    /// start-up.
    #[error("listener[{index}]: upstream_source = \"client\": {reason}")]
    Transparent {
        /// The listener's index in the config.
        index: usize,
        /// What is missing.
        reason: String,
    },
    /// A destination cannot be set up (its TLS material, mostly).
    #[error("hep.ids.{name}: {source}")]
    Destination {
        /// The destination's name.
        name: String,
        /// Why.
        source: sender::SenderError,
    },
    /// `[mi]` cannot be used.
    #[error("mi: {0}")]
    Mi(#[from] heptap_mi::MiError),
}

/// Something in the config that cannot be built; every problem is listed, one per line.
#[derive(Debug)]
pub struct BuildError(pub Vec<BuildProblem>);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BuildError {}

impl BuildError {
    /// With the file line (or variable) of each config error (route names), as the loader
    /// gives its own.
    pub fn located(self, src: &heptap_config::Source) -> BuildError {
        BuildError(
            self.0
                .into_iter()
                .map(|p| match p {
                    BuildProblem::Config(errors) => BuildProblem::Config(src.locate(errors)),
                    other => other,
                })
                .collect(),
        )
    }
}

impl From<BuildProblem> for BuildError {
    fn from(problem: BuildProblem) -> Self {
        BuildError(vec![problem])
    }
}

/// What a build produced: the pipeline to publish and the tasks behind it.
#[derive(Debug)]
pub struct Built {
    /// The snapshot for the tracer.
    pub pipeline: Pipeline,
    /// Each destination's spec and task, by name (to reuse on reload and flush at shutdown).
    tasks: BTreeMap<String, (DestinationSpec, Option<SenderTask>)>,
}

impl Built {
    /// Reads the certificate, key and CA files of every TLS destination again (`tls_reload`,
    /// and every reload for the destinations it keeps): a destination whose files changed uses
    /// them from its next connection; one whose files cannot be used goes on with the old ones.
    pub fn renew_tls(&self, report: &mut ReloadReport) {
        for (name, (spec, _)) in &self.tasks {
            if let Some(sender) = self.pipeline.destinations.get(name) {
                renew_tls(sender, spec, report);
            }
        }
    }

    /// After a successful reload build: takes over the running tasks of the destinations that
    /// `self` reuses from `old`, so they are flushed at shutdown like any other.
    pub fn adopt(&mut self, old: &mut Built) {
        for (name, (_, task)) in self.tasks.iter_mut() {
            if task.is_none()
                && let Some((_, old_task)) = old.tasks.get_mut(name)
            {
                *task = old_task.take();
            }
        }
    }

    /// Stops, in the background, the tasks of a replaced set that were not adopted (their
    /// destinations were removed or changed): they flush what they hold for a short grace.
    pub fn retire(mut self) {
        for (_, (_, task)) in std::mem::take(&mut self.tasks) {
            if let Some(task) = task {
                tokio::spawn(async move {
                    let _ = task.shutdown(Duration::from_secs(2)).await;
                });
            }
        }
    }

    /// Flushes every destination within `grace` and stops them.
    pub async fn shutdown(mut self, grace: Duration) {
        self.pipeline = empty_pipeline();
        let mut set = tokio::task::JoinSet::new();
        for (_, (_, task)) in std::mem::take(&mut self.tasks) {
            if let Some(task) = task {
                set.spawn(task.shutdown(grace));
            }
        }
        while set.join_next().await.is_some() {}
    }
}

/// A pipeline that traces nothing (used while shutting down).
pub fn empty_pipeline() -> Pipeline {
    let off = || NetTrace {
        on: Switch::new(false),
        destination: None,
        filter: None,
        master_key: false,
    };
    Pipeline {
        net: [off(), off(), off(), off()],
        sip_on: Switch::new(false),
        trace_ids: BTreeMap::new(),
        destinations: BTreeMap::new(),
        mi: None,
    }
}

/// The encoder of every destination: `[hep]` settings, the destination's version.
fn encoder(config: &Config, version: Version) -> Encoder {
    let mut e = Encoder::new(version);
    e.mode = if config.hep.homer5_on {
        PayloadMode::Homer5 {
            delim: config.hep.homer5_delim.clone(),
        }
    } else {
        PayloadMode::Json {
            pretty: config.hep.json_pretty,
        }
    };
    e.capture_id = config.hep.capture_id;
    e.auth_key = config.hep.auth_key.as_ref().map(|k| k.as_bytes().to_vec());
    e.node_name = config.hep.node_name.clone();
    e
}

/// The sender spec of every destination the config defines.
pub fn destination_specs(config: &Config) -> Vec<DestinationSpec> {
    config
        .destinations()
        .into_iter()
        .map(|(name, destination)| destination_spec(config, name, destination))
        .collect()
}

/// The sender spec of `destination` under the config's `[hep]` settings.
fn destination_spec(config: &Config, name: String, destination: Destination) -> DestinationSpec {
    let hep = &config.hep;
    let limits = |queue_packets: usize, queue_bytes: u64, max_udp_size: usize| Limits {
        udp_replay_rate: hep.udp_replay_rate,
        queue_packets,
        queue_bytes: usize::try_from(queue_bytes).unwrap_or(usize::MAX),
        max_udp_size,
        connect_timeout: hep.connect_timeout,
        write_timeout: hep.write_timeout,
        backoff_initial: hep.backoff_initial,
        backoff_max: hep.backoff_max,
        down_log_interval: hep.down_log_interval,
    };
    let (version, limits) = match &destination {
        Destination::Hep(id) => (
            id.version,
            Limits {
                udp_replay_rate: id.udp_replay_rate,
                ..limits(id.queue_packets, id.queue_bytes, id.max_udp_size)
            },
        ),
        Destination::Stdout | Destination::File(_) => (
            Version::V3,
            limits(hep.queue_packets, hep.queue_bytes, hep.max_udp_size),
        ),
    };
    DestinationSpec {
        name,
        destination,
        encoder: encoder(config, version),
        limits,
        file_owner: crate::service::file_owner(&config.service),
    }
}

/// The spec of a destination `trace_start` creates from `uri` (a hep_id without its `[name]`:
/// `host[:port][;transport=..][;version=..]`), named `name`, with the config's `[hep]`
/// settings. It has no disk spool: a dynamic trace is a diagnosis, not a record to keep.
pub fn dynamic_destination(
    config: &Config,
    name: &str,
    uri: &str,
) -> Result<DestinationSpec, String> {
    let parsed = heptap_config::HepIdString::parse(uri, false).map_err(|e| e.to_string())?;
    if parsed.name.is_some() {
        return Err("the uri takes no [name]: the trace id names the destination".to_owned());
    }
    let mut table = heptap_config::HepIdTable::from(parsed);
    table.spool_dir = Some(std::path::PathBuf::new());
    let id = table
        .resolve(name, &config.hep)
        .map_err(|e| e.to_string())?;
    Ok(destination_spec(
        config,
        name.to_owned(),
        Destination::Hep(id),
    ))
}

/// Compiles the routes of the config and checks the names it refers to.
pub fn compile_routes(config: &Config) -> Result<Routes, BuildError> {
    let texts = config.route_texts().map_err(BuildProblem::Config)?;
    let names: Vec<String> = texts
        .iter()
        .map(|t| match &t.file {
            Some(f) => f.display().to_string(),
            None => t.path.clone(),
        })
        .collect();
    let sources: Vec<heptap_filters::Source<'_>> = texts
        .iter()
        .zip(&names)
        .map(|(t, name)| heptap_filters::Source {
            name,
            text: &t.text,
        })
        .collect();
    let groups = AddressGroups::new(&config.address_groups);
    let routes = Routes::compile(&sources, &groups).map_err(BuildProblem::Routes)?;
    config
        .check_route_names(|n| routes.get(n).is_some())
        .map_err(BuildProblem::Config)?;
    let trace_ids: Vec<String> = config.trace_ids().into_iter().map(|t| t.name).collect();
    let mut errors = match routes.check_trace_ids(|t| trace_ids.iter().any(|k| k == t)) {
        Ok(()) => Vec::new(),
        Err(e) => e.0,
    };
    // A connection route runs before any SIP message: one that reads SIP is a mistake.
    for proto in NetProto::ALL {
        if let Some(error) = config
            .net
            .get(proto)
            .trace_filter_route
            .as_ref()
            .and_then(|name| routes.get(name)?.sip_use())
            && !errors.contains(error)
        {
            errors.push(error.clone());
        }
    }
    if !errors.is_empty() {
        return Err(BuildProblem::Routes(heptap_filters::CompileErrors(errors)).into());
    }
    Ok(routes)
}

/// What a reload checks before it changes anything, so that a config that cannot run is refused
/// as a whole: routes, destinations (but their TLS files), `[mi]`. Listeners and TLS files are
/// taken one by one at the reload: one that cannot be used is reported and left as it was.
pub fn check_reload(config: &Config) -> Result<(), BuildError> {
    check_parts(config, Parts::ForReload)
}

/// Checks everything `start` would build, without binding or spawning: routes, TLS material,
/// `[mi]`, what transparent listeners need. What may still be wrong but cannot be proved
/// (the routing of transparent listeners) is returned, one warning per line.
pub fn check(config: &Config) -> Result<Vec<String>, BuildError> {
    let mut errors = match check_parts(config, Parts::All) {
        Ok(()) => Vec::new(),
        Err(e) => e.0,
    };
    let mut warnings = Vec::new();
    check_transparent(config, &mut errors, &mut warnings);
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(BuildError(errors))
    }
}

/// What the transparent listeners need beyond the capability (which `Tap::new` checks, at
/// reloads too; docs/transparent.md): to keep it after start-up (a switch to `[service] user`
/// drops every capability), and the routing that brings the proxy's replies back, which is only
/// warned about (heptap can inspect it, not prove it).
fn check_transparent(config: &Config, errors: &mut Vec<BuildProblem>, warnings: &mut Vec<String>) {
    use heptap_config::UpstreamSource;
    let transparent = config
        .listener
        .iter()
        .enumerate()
        .filter(|(_, l)| l.upstream_source == UpstreamSource::Client);
    for (index, l) in transparent {
        if let Ok(crate::service::Identity::Switch(target)) =
            crate::service::Identity::resolve(&config.service)
        {
            errors.push(BuildProblem::Transparent {
                index,
                reason: format!(
                    "heptap would switch to the user {} after start-up and lose the capability \
                     every connection needs (CAP_NET_RAW or CAP_NET_ADMIN): start heptap as that \
                     user with the capability instead (systemd: AmbientCapabilities=CAP_NET_RAW, \
                     docs/packaging.md)",
                    target.user
                ),
            });
            continue;
        }
        warnings.extend(
            crate::tap::routing_warnings(&l.upstream.to_string())
                .into_iter()
                .map(|w| format!("listener[{index}]: upstream_source = \"client\": {w}")),
        );
    }
}

/// What a check covers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Parts {
    /// Everything, listeners and TLS files included (start, `check-config`).
    All,
    /// All but the listeners and the TLS files, which a reload takes one by one.
    ForReload,
}

/// Every problem of `config` in `parts`, at once.
fn check_parts(config: &Config, parts: Parts) -> Result<(), BuildError> {
    let mut errors = Vec::new();
    if let Err(e) = compile_routes(config) {
        errors.extend(e.0);
    }
    if parts == Parts::All {
        for (index, spec) in listener_specs(config).iter().enumerate() {
            if let Err(source) = crate::tap::check(spec) {
                errors.push(BuildProblem::Listener { index, source });
            }
        }
    }
    for spec in destination_specs(config) {
        let checked = match parts {
            Parts::All => sender::check(&spec),
            Parts::ForReload => sender::check_except_tls_files(&spec),
        };
        if let Err(source) = checked {
            errors.push(BuildProblem::Destination {
                name: spec.name,
                source,
            });
        }
    }
    if let Err(e) = crate::mi_settings::check(config) {
        errors.push(BuildProblem::Mi(e));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(BuildError(errors))
    }
}

/// Builds destinations (one lane per runtime in `workers`), routes and the pipeline. With
/// `previous`, unchanged destinations and existing switches are carried over. Every destination
/// must start: one that cannot is an error.
pub fn build(
    config: &Config,
    stats: &Stats,
    previous: Option<&Built>,
    workers: &[tokio::runtime::Handle],
) -> Result<Built, BuildError> {
    assemble(config, stats, previous, workers, None)
}

/// [`build`] for a reload over `previous`: what changed is reported in `report`, and a
/// destination that cannot start is reported there too and left as it was (the old one goes
/// on; a new one is not started), so one bad `hep_id` does not stop the rest. Only routes that
/// do not compile are an error.
pub fn rebuild(
    config: &Config,
    stats: &Stats,
    previous: &Built,
    workers: &[tokio::runtime::Handle],
    report: &mut ReloadReport,
) -> Result<Built, BuildError> {
    assemble(config, stats, Some(previous), workers, Some(report))
}

/// How a destination is named in a reload's report (its errors start the same way).
fn destination_item(name: &str) -> String {
    format!("hep_id {name}")
}

/// `text` without the `prefix: ` it starts with, when it does: a report item names its subject
/// once.
pub fn without_prefix(text: String, prefix: &str) -> String {
    match text.strip_prefix(prefix).and_then(|t| t.strip_prefix(": ")) {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}

/// Reads a kept destination's TLS files again and reports what became of them.
fn renew_tls(sender: &Sender, spec: &DestinationSpec, report: &mut ReloadReport) {
    let item = destination_item(&spec.name);
    match sender.renew_tls(spec) {
        Ok(true) => report.applied(
            item,
            "TLS files reloaded: its next connections use them, the one up goes on",
        ),
        Ok(false) => {}
        Err(e) => report.not_applied(
            &item,
            format!(
                "{}; it goes on with the files it had",
                without_prefix(e.to_string(), &item)
            ),
        ),
    }
}

fn assemble(
    config: &Config,
    stats: &Stats,
    previous: Option<&Built>,
    workers: &[tokio::runtime::Handle],
    mut report: Option<&mut ReloadReport>,
) -> Result<Built, BuildError> {
    let routes = compile_routes(config)?;
    let mut errors = Vec::new();
    let mut senders: BTreeMap<String, Sender> = BTreeMap::new();
    let mut tasks = BTreeMap::new();
    for spec in destination_specs(config) {
        let old = previous.and_then(|p| {
            let (old, _) = p.tasks.get(&spec.name)?;
            let sender = p.pipeline.destinations.get(&spec.name)?;
            Some((old, sender))
        });
        if let Some((old_spec, sender)) = old
            && old_spec == &spec
        {
            if let Some(report) = report.as_deref_mut() {
                renew_tls(sender, &spec, report);
            }
            senders.insert(spec.name.clone(), sender.clone());
            tasks.insert(spec.name.clone(), (spec, None));
            continue;
        }
        let item = destination_item(&spec.name);
        match sender::spawn_on(spec.clone(), stats, workers) {
            Ok((sender, task)) => {
                if let Some(report) = report.as_deref_mut() {
                    let what = match old {
                        Some(_) => {
                            "changed: restarted with the new settings (a new queue and connection)"
                        }
                        None => "added",
                    };
                    report.applied(item, what);
                }
                senders.insert(spec.name.clone(), sender);
                tasks.insert(spec.name.clone(), (spec, Some(task)));
            }
            Err(source) => match report.as_deref_mut() {
                None => errors.push(BuildProblem::Destination {
                    name: spec.name.clone(),
                    source,
                }),
                Some(report) => {
                    let why = without_prefix(source.to_string(), &item);
                    match old {
                        // The running one goes on: its old spec stays, so the next reload
                        // tries the new one again.
                        Some((old_spec, sender)) => {
                            report.not_applied(item, format!("{why}; it goes on as it was"));
                            senders.insert(spec.name.clone(), sender.clone());
                            tasks.insert(spec.name.clone(), (old_spec.clone(), None));
                        }
                        None => report.not_applied(item, format!("{why}; not started")),
                    }
                }
            },
        }
    }
    if !errors.is_empty() {
        return Err(BuildError(errors));
    }
    if let (Some(report), Some(previous)) = (report, previous) {
        for name in previous.tasks.keys() {
            if !tasks.contains_key(name) {
                report.applied(
                    destination_item(name),
                    "removed: what it had queued is sent for 2 s, then it stops",
                );
            }
        }
    }
    let old = previous.map(|p| &p.pipeline);
    let net = NetProto::ALL.map(|p| {
        let c = config.net.get(p);
        NetTrace {
            on: carry(old.map(|o| &o.net(p).on), c.trace_on),
            destination: c
                .trace_destination
                .as_ref()
                .and_then(|d| senders.get(d).cloned()),
            filter: c
                .trace_filter_route
                .as_ref()
                .and_then(|r| routes.get(r).cloned()),
            master_key: c.trace_master_key,
        }
    });
    let trace_ids = config
        .trace_ids()
        .into_iter()
        .map(|t| {
            let on = carry(
                old.and_then(|o| o.trace_ids.get(&t.name)).map(|o| &o.on),
                true,
            );
            let destinations = FanOut::new(
                t.destinations
                    .iter()
                    .filter_map(|d| senders.get(d).cloned())
                    .collect(),
            );
            (t.name, TraceId { on, destinations })
        })
        .collect();
    let pipeline = Pipeline {
        net,
        sip_on: carry(old.map(|o| &o.sip_on), config.tracer.trace_on),
        trace_ids,
        mi: config
            .mi
            .trace_destination
            .as_ref()
            .and_then(|d| senders.get(d).cloned()),
        destinations: senders,
    };
    Ok(Built { pipeline, tasks })
}

/// The keys of two serialized config sections whose values differ, in key order: what a
/// reload reports as changed.
pub fn changed_keys<T: serde::Serialize>(old: &T, new: &T) -> Vec<String> {
    match (serde_json::to_value(old), serde_json::to_value(new)) {
        (Ok(Value::Object(old)), Ok(Value::Object(new))) => {
            let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            keys.into_iter()
                .filter(|k| old.get(*k) != new.get(*k))
                .cloned()
                .collect()
        }
        (old, new) if old.as_ref().ok() == new.as_ref().ok() => Vec::new(),
        _ => vec!["(all)".to_owned()],
    }
}

/// A switch carried over from the previous pipeline, or a new one in state `initial`.
fn carry(old: Option<&Switch>, initial: bool) -> Switch {
    old.cloned().unwrap_or_else(|| Switch::new(initial))
}

/// The listener specs of the config, in config order. Their `sip_trace_route`s come from the
/// config's routes, compiled again here (start and reload have compiled them without error).
pub fn listener_specs(config: &Config) -> Vec<ListenerSpec> {
    let routes = compile_routes(config).unwrap_or_default();
    config
        .listener
        .iter()
        .enumerate()
        .map(|(i, l)| {
            // validate() bounds it to 16 MiB.
            let max_message_bytes = usize::try_from(l.max_message_bytes).unwrap_or(usize::MAX);
            listener_spec(config, i, l, max_message_bytes, &routes)
        })
        .collect()
}

/// Listener `i` of the config, resolved.
fn listener_spec(
    config: &Config,
    i: usize,
    l: &heptap_config::Listener,
    max_message_bytes: usize,
    routes: &Routes,
) -> ListenerSpec {
    ListenerSpec {
        name: l.name.clone().unwrap_or_else(|| i.to_string()),
        proto: l.proto,
        listen: l.listen,
        upstream: l.upstream.to_string(),
        max_connections: l.max_connections,
        connect_timeout: l.connect_timeout,
        idle_timeout: l.idle_timeout,
        upstream_proto: l.upstream_proto(),
        upstream_host: l.upstream.host.clone(),
        tls: l.tls.clone(),
        // A TLS upstream without `upstream_tls` verifies against the system roots.
        upstream_tls: l
            .upstream_proto()
            .is_tls()
            .then(|| l.upstream_tls.clone().unwrap_or_default()),
        proxy_protocol: l.proxy_protocol,
        accept_proxy_protocol: l.accept_proxy_protocol,
        upstream_source: l.upstream_source,
        upstream_source_port: l.upstream_source_port,
        upstream_source_fallback: l.upstream_source_fallback,
        handshake_timeout: l.handshake_timeout,
        max_message_bytes,
        message_timeout: l.message_timeout(),
        sip: l.sip_trace_id.as_ref().map(|tid| {
            Arc::new(SipSettings {
                trace_id: tid.clone(),
                // SIP methods compare ignoring case; `validate()` checked they are tokens.
                methods: l
                    .sip_methods
                    .clone()
                    .map(heptap_filters::Bwlist::ignoring_case),
                route: l
                    .sip_trace_route
                    .as_ref()
                    .and_then(|name| routes.get(name).cloned()),
                json_payload: config.tracer.sip_payload == heptap_config::SipPayload::Json,
                limits: FramerLimits::for_messages(max_message_bytes),
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(moved_port: u16, homer5_on: bool) -> Config {
        Config::from_toml_str(&format!(
            "[hep]\nhomer5_on = {homer5_on}\n[hep.ids]\nsame = \"[same] 127.0.0.1:9; \
             transport=udp\"\nmoved = \"[moved] 127.0.0.1:{moved_port}; transport=udp\"\n"
        ))
        .unwrap()
    }

    /// Whether `name` is new in `built` (its own task) rather than carried over (no task:
    /// the running one stays with the old set until `adopt`).
    fn respawned(built: &Built, name: &str) -> bool {
        built.tasks[name].1.is_some()
    }

    #[tokio::test]
    async fn a_reload_keeps_the_task_of_a_destination_whose_spec_is_unchanged() {
        let stats = Stats::new();
        let workers = [tokio::runtime::Handle::current()];
        let mut first = build(&config(10, false), &stats, None, &workers).unwrap();
        assert!(respawned(&first, "same") && respawned(&first, "moved"));

        // The hep_id of one destination changed: only that one is started again.
        let mut second = build(&config(11, false), &stats, Some(&first), &workers).unwrap();
        assert!(!respawned(&second, "same") && !respawned(&second, "stdout"));
        assert!(respawned(&second, "moved"));
        second.adopt(&mut first);
        assert!(respawned(&second, "same"), "adopted from the old set");
        first.retire();

        // What the agent adds changed (the encoder's payload mode): every one is replaced.
        let third = build(&config(11, true), &stats, Some(&second), &workers).unwrap();
        assert!(
            ["same", "moved", "stdout"]
                .iter()
                .all(|n| respawned(&third, n))
        );
        second.retire();
        third.shutdown(Duration::from_secs(1)).await;
    }
}
