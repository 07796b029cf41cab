//! What the running agent and its MI share, and the reloads: `reload` (SIGHUP, MI `reload`)
//! re-reads the config and applies what it can, `tls_reload` re-reads only the TLS files. Both
//! answer with a [`ReloadReport`] that lists every change applied and every one that was not
//! (and why), and log it one line per item: nothing is called done that did not happen.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use heptap_config::{Config, Source};
use heptap_hep::NetProto;
use heptap_mi::{LogLevel, ReloadReport};

use crate::build::{self, BuildError, Built, changed_keys};
use crate::listeners::Listeners;
use crate::logging::LogHandle;
use crate::stats::Stats;
use crate::tracer::Tracer;

/// What the running agent and its MI share.
#[derive(Debug)]
pub struct Shared {
    /// Where events go; the switches.
    pub tracer: Arc<Tracer>,
    /// Every counter.
    pub stats: Stats,
    /// Changes the log level at run time.
    pub log: LogHandle,
    /// The level last set: `[log] level` at start and at a reload that changed it, or MI
    /// `log_level` (what `log_level` without a parameter answers).
    pub level: Mutex<LogLevel>,
    /// Where a reload re-reads the config from; `None` re-applies the config in memory.
    pub source: Option<Source>,
    /// The config and what was built from it; taken at shutdown.
    pub state: Mutex<State>,
    /// The relay workers' runtimes: where a (re)build starts the destinations' lanes.
    pub workers: Arc<[tokio::runtime::Handle]>,
    /// The relayed connections now (`list_tcp_conns`).
    pub conns: crate::tap::LiveConns,
    /// When the agent started (`heptap_uptime_seconds`).
    pub up_since: std::time::Instant,
}

/// The part a reload replaces.
#[derive(Debug)]
pub struct State {
    /// The config last applied (the file as last read; what could not be applied of it is in
    /// the report of that reload).
    pub config: Config,
    /// The settings read at start only, for telling what a reload cannot apply.
    pub started: StartOnly,
    /// Destinations' tasks; `None` once shut down.
    pub built: Option<Built>,
    /// The listeners, serving and draining.
    pub listeners: Listeners,
}

/// The settings that take effect at start only: a reload compares the file with these, so
/// every reload reports them until a restart applies them.
#[derive(Debug)]
pub struct StartOnly {
    /// `[service]` at start (`user`, `group`).
    pub service: heptap_config::Service,
    /// `[mi]` at start (all but `trace_destination`).
    pub mi: heptap_config::Mi,
    /// `[log] format` at start.
    pub log_format: heptap_config::LogFormat,
}

impl StartOnly {
    /// What of `config` runs until a restart.
    pub fn of(config: &Config) -> Self {
        Self {
            service: config.service.clone(),
            mi: config.mi.clone(),
            log_format: config.log.format,
        }
    }
}

/// Why a reload was refused; the old config keeps running, nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config source cannot be read, or does not validate.
    #[error("{0}")]
    Load(#[from] heptap_config::ConfigErrors),
    /// The new config names something that cannot be built.
    #[error("{0}")]
    Build(#[from] BuildError),
    /// heptap is stopping; nothing is swapped in any more.
    #[error("heptap is shutting down")]
    ShuttingDown,
}

impl ReloadError {
    /// The problems as the MI lists them: each build problem on its own, the config's errors
    /// as one text.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ReloadError::Build(e) => e.0.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `config` (already loaded and validated) as far as it can: destinations, trace
    /// ids, routes, switches whose value the file changed, listeners (added, changed, removed,
    /// their TLS files read again), the log level, `shutdown_grace`. Relayed connections are
    /// not touched. What cannot be applied is reported and left as it was: a listener or a
    /// destination whose TLS files cannot be used, an address in use, and what takes effect at
    /// start only (`service.workers`, `user`, `group`, `[mi]` but its `trace_destination`).
    /// `Err`: nothing changed (routes that do not compile, heptap shutting down).
    pub fn reload(&self, config: Config) -> Result<ReloadReport, ReloadError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(old) = state.built.as_mut() else {
            return Err(ReloadError::ShuttingDown);
        };
        let mut report = ReloadReport::default();
        let mut built = build::rebuild(&config, &self.stats, old, &self.workers, &mut report)?;
        built.adopt(old);
        switches(&state.config, &config, &built, &mut report);
        self.sections(&state.config, &config, &state.started, &mut report);
        // The pipeline first: the trace ids a new listener names exist before it accepts.
        self.tracer.publish(built.pipeline.clone());
        if let Some(old) = state.built.replace(built) {
            old.retire();
        }
        state.listeners.reload(&config, &mut report);
        state.config = config;
        drop(guard);
        log_report("Reload", &report);
        Ok(report)
    }

    /// Re-reads the config from its source (or re-applies the one in memory), validates it,
    /// and applies it ([`Shared::reload`]).
    pub fn reload_from_source(&self) -> Result<ReloadReport, ReloadError> {
        let config = match &self.source {
            Some(src) => Config::load(src)?,
            None => self.lock().config.clone(),
        };
        build::check_reload(&config).map_err(|e| match &self.source {
            Some(src) => e.located(src),
            None => e,
        })?;
        self.reload(config)
    }

    /// Re-reads the certificate, key and CA files of every listener and destination, and
    /// nothing else (MI `tls_reload`): new handshakes use what changed; one whose files cannot
    /// be used goes on with the old ones, the others are renewed.
    pub fn tls_reload(&self) -> Result<ReloadReport, ReloadError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(built) = state.built.as_ref() else {
            return Err(ReloadError::ShuttingDown);
        };
        let mut report = ReloadReport::default();
        state.listeners.reload_tls(&mut report);
        built.renew_tls(&mut report);
        drop(guard);
        log_report("TLS reload", &report);
        Ok(report)
    }

    /// The bound address of each serving listener, in config order.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.lock().listeners.addrs()
    }

    /// The listeners' rows of MI `ps`.
    pub fn listener_rows(&self) -> Vec<String> {
        self.lock().listeners.rows()
    }

    /// `[service] shutdown_grace` as last applied.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        self.lock().config.service.shutdown_grace
    }

    /// `[service]` as last applied (its timeouts are read when they are needed).
    pub fn service(&self) -> heptap_config::Service {
        self.lock().config.service.clone()
    }

    /// Reports (and applies where a reload can) what changed in the sections that are not
    /// destinations, listeners or switches.
    fn sections(&self, old: &Config, new: &Config, started: &StartOnly, report: &mut ReloadReport) {
        let restart = "it takes effect at the next restart";
        if old.log.level != new.log.level {
            let item = "log.level";
            if self.log.overridden_by_env() {
                report.not_applied(item, "RUST_LOG is set, and it wins over [log] level");
            } else {
                match self.log.set(&new.log.level) {
                    Ok(()) => {
                        *self.level.lock().unwrap_or_else(|e| e.into_inner()) =
                            level_of(&new.log.level);
                        report.applied(item, format!("{} -> {}", old.log.level, new.log.level));
                    }
                    Err(e) => report.not_applied(item, e.to_string()),
                }
            }
        }
        if started.log_format != new.log.format {
            report.not_applied("log.format", restart);
        }
        for key in changed_keys(&started.service, &new.service) {
            match key.as_str() {
                // Compared with what runs, below and in `shutdown_grace`; the hand-over's
                // timeouts are read at the next SIGUSR2.
                "workers" | "shutdown_grace" | "drain_timeout" | "handover_timeout" => {}
                _ => report.not_applied(format!("service.{key}"), restart),
            }
        }
        let wanted = crate::workers::count(new.service.workers);
        if wanted != self.workers.len() {
            report.not_applied(
                "service.workers",
                format!("{wanted} asked, {} running; {restart}", self.workers.len()),
            );
        }
        if old.service.shutdown_grace != new.service.shutdown_grace {
            report.applied(
                "service.shutdown_grace",
                format!("{:?}, for the next SIGTERM", new.service.shutdown_grace),
            );
        }
        for (key, old_value, new_value) in [
            (
                "service.drain_timeout",
                old.service.drain_timeout,
                new.service.drain_timeout,
            ),
            (
                "service.handover_timeout",
                old.service.handover_timeout,
                new.service.handover_timeout,
            ),
        ] {
            if old_value != new_value {
                report.applied(
                    key,
                    format!("{new_value:?}, for the next hand-over (SIGUSR2)"),
                );
            }
        }
        for key in changed_keys(&old.hep, &new.hep) {
            // Each hep_id reports itself.
            if key != "ids" {
                report.applied(format!("hep.{key}"), "applied: the destinations use it");
            }
        }
        for key in changed_keys(&old.tracer, &new.tracer) {
            if key != "trace_on" {
                report.applied(format!("tracer.{key}"), "applied");
            }
        }
        for proto in NetProto::ALL {
            for key in changed_keys(old.net.get(proto), new.net.get(proto)) {
                if key != "trace_on" {
                    report.applied(format!("net.{}.{key}", proto.name()), "applied");
                }
            }
        }
        for key in changed_keys(&old.routes, &new.routes) {
            report.applied(format!("routes.{key}"), "applied");
        }
        if old.address_groups != new.address_groups {
            report.applied("address_groups", "applied");
        }
        if old.mi.trace_destination != new.mi.trace_destination {
            report.applied("mi.trace_destination", "applied");
        }
        for key in changed_keys(&started.mi, &new.mi) {
            if key != "trace_destination" {
                report.not_applied(format!("mi.{key}"), restart);
            }
        }
    }
}

/// The MI's level for `[log] level`: a level name, or `info` for a directive string
/// (`"info,heptap::sender=debug"`), which no single level names.
pub fn level_of(configured: &str) -> LogLevel {
    LogLevel::parse(configured).unwrap_or(LogLevel::Info)
}

/// A switch whose value the file changed is set to it (an MI switch left alone in the file
/// keeps its run-time state across reloads).
fn switches(old: &Config, new: &Config, built: &Built, report: &mut ReloadReport) {
    let on_off = |on: bool| if on { "on" } else { "off" };
    if old.tracer.trace_on != new.tracer.trace_on {
        built.pipeline.sip_on.set(new.tracer.trace_on);
        report.applied(
            "tracer.trace_on",
            format!("SIP tracing switched {}", on_off(new.tracer.trace_on)),
        );
    }
    for proto in NetProto::ALL {
        let (was, is) = (old.net.get(proto).trace_on, new.net.get(proto).trace_on);
        if was != is {
            built.pipeline.net(proto).on.set(is);
            report.applied(
                format!("net.{}.trace_on", proto.name()),
                format!(
                    "{} tracing switched {}",
                    proto.name().to_ascii_uppercase(),
                    on_off(is)
                ),
            );
        }
    }
}

/// One log line per item: what was not applied as a warning, what was as information.
fn log_report(what: &str, report: &ReloadReport) {
    for item in &report.not_applied {
        tracing::warn!("{what}: not applied: {item}");
    }
    for item in &report.applied {
        tracing::info!("{what}: applied: {item}");
    }
}
