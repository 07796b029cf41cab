//! The agent's side of the MI: [`AgentControl`] implements `heptap_mi::Control` over the
//! tracer's switches, the statistics, the log level and reload.

use std::sync::Arc;

use heptap_config::{Config, Destination};
use heptap_hep::{NetProto, TraceMessage};
use heptap_mi::{
    Backend, Control, DestinationInfo, LogLevel, MiOutcome, ProcessInfo, ReloadRefused,
    ReloadReport, Statistic, TraceIdInfo, UnknownTraceId,
};
use serde_json::{Value, json};

use crate::shared::Shared;

/// The MI's view of the running agent.
#[derive(Debug)]
pub struct AgentControl {
    /// The agent's shared state.
    shared: Arc<Shared>,
}

impl AgentControl {
    /// The control of a running agent.
    pub fn new(shared: Arc<Shared>) -> Self {
        register_mi_counters(&shared.stats);
        Self { shared }
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

/// The `spool` object of a `hep_ids` row: what is on disk and how the replay goes.
fn spool_row(sp: &crate::sender::SpoolState, c: &crate::sender::SenderCounters) -> Value {
    json!({
        "dir": sp.dir.display().to_string(),
        "state": sp.mode,
        "bytes": sp.bytes,
        "max_bytes": sp.max_bytes,
        "records": sp.records,
        "oldest_age_ms": sp.oldest_age.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
        "spooled": sp.spooled,
        "replayed": sp.replayed,
        "adopted": sp.adopted,
        "dropped_spool_full": c.dropped_spool_full,
        "dropped_spool_expired": c.dropped_spool_expired,
        "dropped_spool_corrupt": c.dropped_spool_corrupt,
        "dropped_spool_error": c.dropped_spool_error,
    })
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

    fn net_trace_on(&self, proto: NetProto) -> bool {
        self.shared.tracer.load().net(proto).on.is_on()
    }

    fn set_net_trace_on(&self, proto: NetProto, on: bool) {
        self.shared.tracer.load().net(proto).on.set(on);
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
                let mut row = json!({
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
                });
                if let (Some(sp), Some(obj)) = (&st.spool, row.as_object_mut()) {
                    obj.insert("spool".to_owned(), spool_row(sp, &c));
                }
                row
            })
            .collect();
        json!({ "hep_ids": rows })
    }

    fn reload(&self) -> Result<ReloadReport, ReloadRefused> {
        self.shared
            .reload_from_source()
            .map_err(|e| ReloadRefused { errors: e.lines() })
    }

    fn tls_reload(&self) -> Result<ReloadReport, ReloadRefused> {
        self.shared
            .tls_reload()
            .map_err(|e| ReloadRefused { errors: e.lines() })
    }

    fn log_level(&self) -> LogLevel {
        *self.shared.level.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_log_level(&self, level: LogLevel) -> Result<(), String> {
        self.shared
            .log
            .set(level.name())
            .map_err(|e| e.to_string())?;
        *self.shared.level.lock().unwrap_or_else(|e| e.into_inner()) = level;
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
        rows.extend(self.shared.listener_rows());
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

    fn count_mi_request(&self, backend: Backend, outcome: MiOutcome) {
        self.shared
            .stats
            .counter(MI_GROUP, &mi_request_stat(backend, outcome))
            .inc();
    }

    fn metrics(&self) -> Option<String> {
        let destinations = self
            .shared
            .tracer
            .load()
            .destinations
            .values()
            .map(|s| {
                let st = s.state();
                crate::metrics::DestinationInfo {
                    name: st.name,
                    proto: st.transport,
                    address: st.destination,
                }
            })
            .collect();
        let listeners = self
            .shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .listeners
            .infos();
        let now_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Some(crate::metrics::render(&crate::metrics::Scrape {
            stats: self.statistics(),
            listeners,
            destinations,
            uptime: self.shared.up_since.elapsed(),
            now_unix_ms,
        }))
    }
}

/// The statistics group of the MI's own counters (`mi:requests_<transport>_<result>`).
const MI_GROUP: &str = "mi";

/// `requests_<transport>_<result>`: the transport as operators call it (`http` for
/// OpenSIPS's `json` backend).
fn mi_request_stat(backend: Backend, outcome: MiOutcome) -> String {
    let transport = match backend {
        Backend::Fifo => "fifo",
        Backend::Json => "http",
    };
    format!("requests_{transport}_{}", outcome.name())
}

/// Registers every MI request counter at zero, so that each series exists before its first
/// request (a rate over a series that appears late misses its first increase).
pub fn register_mi_counters(stats: &crate::stats::Stats) {
    for backend in [Backend::Fifo, Backend::Json] {
        for outcome in [MiOutcome::Ok, MiOutcome::Error, MiOutcome::Refused] {
            stats.counter(MI_GROUP, &mi_request_stat(backend, outcome));
        }
    }
}
