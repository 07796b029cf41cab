//! The agent's side of the MI: [`AgentControl`] implements `heptap_mi::Control` over the
//! tracer's switches, the statistics, the log level and reload; [`mi_settings`] maps `[mi]`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use heptap_config::{Config, Destination};
use heptap_hep::TraceMessage;
use heptap_mi::{
    Control, DestinationInfo, LogLevel, MiSettings, NetProto as MiProto, ProcessInfo, Statistic,
    TraceIdInfo, UnknownTraceId, UpstreamSettings, UpstreamTarget,
};
use serde_json::{Value, json};

use crate::agent::Shared;
use crate::tracer::NetProto;

/// The private run directory used when `[mi]` names no FIFO or reply directory:
/// `$XDG_RUNTIME_DIR/heptap`, else `/tmp/heptap-<uid>`.
pub fn private_run_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("heptap"),
        None => PathBuf::from(format!("/tmp/heptap-{}", nix::unistd::getuid())),
    }
}

/// The FIFO heptap serves by default, and `heptap fifo` talks to by default.
pub fn default_fifo() -> PathBuf {
    private_run_dir().join("heptap_fifo")
}

/// Creates the private run directory (mode 0700) if it is missing, and refuses one that is not
/// a directory owned by us with no access for others (someone could plant FIFOs there).
fn ensure_private_dir(dir: &Path) -> Result<(), heptap_mi::MiError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let err = |why: String| heptap_mi::MiError::Upstream(format!("{}: {why}", dir.display()));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(format!("cannot create the run directory: {e}")))?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        return Err(err("the run directory is not a directory".to_owned()));
    }
    if meta.uid() != nix::unistd::getuid().as_raw() || meta.permissions().mode() & 0o077 != 0 {
        return Err(err(
            "the run directory must belong to heptap's user with mode 0700".to_owned(),
        ));
    }
    Ok(())
}

/// `[mi]` as the MI crate wants it. With no `fifo_name`/`reply_dir` both live in the private
/// run directory, which is created here.
pub fn mi_settings(config: &Config) -> Result<MiSettings, heptap_mi::MiError> {
    let mi = &config.mi;
    let private = || -> Result<PathBuf, heptap_mi::MiError> {
        let dir = private_run_dir();
        ensure_private_dir(&dir)?;
        Ok(dir)
    };
    let fifo_name = match &mi.fifo_name {
        Some(p) => p.clone(),
        None => private()?.join("heptap_fifo"),
    };
    let reply_dir = match &mi.reply_dir {
        Some(d) => d.clone(),
        None => private()?,
    };
    let upstream = mi.upstream.as_ref().and_then(|u| {
        let target = match (&u.fifo, &u.url) {
            (Some(fifo), _) => UpstreamTarget::Fifo {
                fifo: fifo.clone(),
                reply_dir: u.reply_dir.clone(),
            },
            (None, Some(url)) => UpstreamTarget::Http { url: url.clone() },
            (None, None) => return None,
        };
        Some(UpstreamSettings {
            target,
            timeout: u.timeout,
        })
    });
    Ok(MiSettings {
        fifo_name: Some(fifo_name),
        fifo_mode: mi.fifo_mode,
        fifo_user: mi.fifo_user.clone(),
        fifo_group: mi.fifo_group.clone(),
        reply_dir,
        http_listen: mi.http_listen,
        http_root: mi.http_root.clone(),
        http_allow_remote: mi.http_allow_remote,
        trace_bwlist: mi.trace_bwlist.as_ref().map(|b| b.to_string()),
        pretty_printing: mi.pretty_printing,
        upstream,
        ..MiSettings::default()
    })
}

fn proto(p: MiProto) -> NetProto {
    match p {
        MiProto::Tcp => NetProto::Tcp,
        MiProto::Tls => NetProto::Tls,
        MiProto::Ws => NetProto::Ws,
        MiProto::Wss => NetProto::Wss,
    }
}

fn level_directive(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    }
}

/// The MI's view of the running agent.
#[derive(Debug)]
pub struct AgentControl {
    /// The agent's shared state.
    shared: Arc<Shared>,
    /// The level last set (the config's until `log_level` changes it).
    level: Mutex<LogLevel>,
}

impl AgentControl {
    /// The control of a running agent.
    pub fn new(shared: Arc<Shared>) -> Self {
        let configured = shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config
            .log
            .level
            .clone();
        let level = LogLevel::parse(&configured).unwrap_or(LogLevel::Info);
        Self {
            shared,
            level: Mutex::new(level),
        }
    }

    fn config(&self) -> Config {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config
            .clone()
    }
}

/// `HEP`, `FILE` or `STDOUT`, and the uri as OpenSIPS prints it.
fn describe(dest: Option<&Destination>, name: &str) -> DestinationInfo {
    match dest {
        Some(Destination::Hep(id)) => DestinationInfo {
            kind: "HEP".to_owned(),
            uri: if id.host.contains(':') {
                format!("[{}]:{}", id.host, id.port)
            } else {
                format!("{}:{}", id.host, id.port)
            },
        },
        Some(Destination::File(p)) => DestinationInfo {
            kind: "FILE".to_owned(),
            uri: p.display().to_string(),
        },
        Some(Destination::Stdout) => DestinationInfo {
            kind: "STDOUT".to_owned(),
            uri: "stdout".to_owned(),
        },
        None => DestinationInfo {
            kind: "UNKNOWN".to_owned(),
            uri: name.to_owned(),
        },
    }
}

impl Control for AgentControl {
    fn sip_trace_on(&self) -> bool {
        self.shared.tracer.load().sip_on.is_on()
    }

    fn set_sip_trace_on(&self, on: bool) {
        self.shared.tracer.load().sip_on.set(on);
    }

    fn trace_ids(&self) -> Vec<TraceIdInfo> {
        let config = self.config();
        let dests = config.destinations();
        let pipeline = self.shared.tracer.load();
        config
            .trace_ids()
            .into_iter()
            .map(|t| TraceIdInfo {
                on: pipeline
                    .trace_ids
                    .get(&t.name)
                    .is_some_and(|id| id.on.is_on()),
                destinations: t
                    .destinations
                    .iter()
                    .map(|d| describe(dests.get(d), d))
                    .collect(),
                name: t.name,
            })
            .collect()
    }

    fn set_trace_id_on(&self, name: &str, on: bool) -> Result<(), UnknownTraceId> {
        match self.shared.tracer.load().trace_ids.get(name) {
            Some(id) => {
                id.on.set(on);
                Ok(())
            }
            None => Err(UnknownTraceId(name.to_owned())),
        }
    }

    fn net_trace_on(&self, p: MiProto) -> bool {
        self.shared.tracer.load().net(proto(p)).on.is_on()
    }

    fn set_net_trace_on(&self, p: MiProto, on: bool) {
        self.shared.tracer.load().net(proto(p)).on.set(on);
    }

    fn statistics(&self) -> Vec<Statistic> {
        self.shared
            .stats
            .snapshot_with_kind()
            .into_iter()
            .map(|(group, name, value, gauge)| Statistic {
                group,
                name,
                value,
                gauge,
            })
            .collect()
    }

    fn reset_statistic(&self, group: &str, name: &str) {
        if let Some(c) = self.shared.stats.lookup(group, name)
            && !c.is_gauge()
        {
            c.set(0);
        }
    }

    fn hep_ids(&self) -> Value {
        let config = self.config();
        let dests = config.destinations();
        let pipeline = self.shared.tracer.load();
        let rows: Vec<Value> = pipeline
            .destinations
            .values()
            .map(|s| {
                let st = s.state();
                let info = describe(dests.get(&st.name), &st.name);
                let version = match dests.get(&st.name) {
                    Some(Destination::Hep(id)) => id.version.number(),
                    _ => 3,
                };
                let c = st.counters;
                json!({
                    "name": st.name,
                    "type": info.kind,
                    "uri": info.uri,
                    "transport": st.transport,
                    "version": version,
                    "state": if st.connected { "connected" } else { "disconnected" },
                    "last_error": st.last_error,
                    "enqueued": c.enqueued,
                    "sent": c.sent,
                    "sent_bytes": c.sent_bytes,
                    "dropped_queue_full": c.dropped_queue_full,
                    "dropped_oversize": c.dropped_oversize,
                    "dropped_encode_error": c.dropped_encode_error,
                    "dropped_shutdown": c.dropped_shutdown,
                    "send_errors": c.send_errors,
                    "reconnects": c.reconnects,
                    "queue_depth": c.queue_depth,
                    "queue_bytes": c.queue_bytes,
                })
            })
            .collect();
        json!({ "hep_ids": rows })
    }

    fn reload(&self) -> Result<(), Vec<String>> {
        self.shared.reload_from_source()
    }

    fn log_level(&self) -> LogLevel {
        *self.level.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_log_level(&self, level: LogLevel) -> Result<(), String> {
        self.shared
            .log
            .set(level_directive(level))
            .map_err(|e| e.to_string())?;
        *self.level.lock().unwrap_or_else(|e| e.into_inner()) = level;
        Ok(())
    }

    fn processes(&self) -> Vec<ProcessInfo> {
        let pid = std::process::id();
        let mut rows = vec!["attendant".to_owned(), "MI FIFO".to_owned()];
        if self.config().mi.http_listen.is_some() {
            rows.push("MI HTTP".to_owned());
        }
        for i in 0..self.shared.workers.len() {
            rows.push(format!("relay worker {i}"));
        }
        for (name, p, addr) in &self.shared.listeners {
            rows.push(format!(
                "{} listener {name} on {addr}",
                p.to_ascii_uppercase()
            ));
        }
        for name in self.shared.tracer.load().destinations.keys() {
            rows.push(format!("HEP sender {name}"));
        }
        rows.into_iter()
            .enumerate()
            .map(|(i, kind)| ProcessInfo {
                id: i as u32,
                pid,
                kind,
            })
            .collect()
    }

    fn mi_tracing_enabled(&self) -> bool {
        self.shared.tracer.mi(|_| ()).is_some()
    }

    fn trace_mi(&self, msg: TraceMessage) {
        self.shared.tracer.mi(|dest| dest.offer(&Arc::new(msg)));
    }
}

/// A control that controls nothing: lets `check-config` validate `[mi]` exactly as `start`
/// would, without an agent.
#[derive(Debug)]
pub struct NullControl;

impl Control for NullControl {
    fn sip_trace_on(&self) -> bool {
        false
    }
    fn set_sip_trace_on(&self, _: bool) {}
    fn trace_ids(&self) -> Vec<TraceIdInfo> {
        Vec::new()
    }
    fn set_trace_id_on(&self, name: &str, _: bool) -> Result<(), UnknownTraceId> {
        Err(UnknownTraceId(name.to_owned()))
    }
    fn net_trace_on(&self, _: MiProto) -> bool {
        false
    }
    fn set_net_trace_on(&self, _: MiProto, _: bool) {}
    fn statistics(&self) -> Vec<Statistic> {
        Vec::new()
    }
    fn reset_statistic(&self, _: &str, _: &str) {}
    fn hep_ids(&self) -> Value {
        Value::Null
    }
    fn reload(&self) -> Result<(), Vec<String>> {
        Ok(())
    }
    fn log_level(&self) -> LogLevel {
        LogLevel::Info
    }
    fn set_log_level(&self, _: LogLevel) -> Result<(), String> {
        Ok(())
    }
    fn processes(&self) -> Vec<ProcessInfo> {
        Vec::new()
    }
    fn mi_tracing_enabled(&self) -> bool {
        false
    }
    fn trace_mi(&self, _: TraceMessage) {}
}
