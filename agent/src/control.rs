//! The agent's side of the MI: [`AgentControl`] implements `heptap_mi::Control` over the
//! tracer's switches, the statistics, the log level and reload.

use std::sync::Arc;

use heptap_config::{Config, Destination};
use heptap_hep::{NetProto, TraceMessage};
use heptap_mi::{
    Backend, Control, DestinationInfo, DynamicTraceInfo, LogLevel, MiOutcome, ProcessInfo,
    ReloadRefused, ReloadReport, Statistic, TraceIdInfo, TraceStart, TraceStartError,
    UnknownTraceId,
};
use serde_json::{Value, json};

use crate::dyntrace::{DynTrace, Filter, Scope, StartError, Target};
use crate::sender::SenderTask;
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

/// Longest dynamic trace id; ids name a destination and its statistics.
const MAX_TRACE_ID_LEN: usize = 64;

/// Whether `id` can name a dynamic trace (and the destination it starts): letters, digits, `_`,
/// `-`, `.`, not starting with `.`.
fn good_trace_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_TRACE_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
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
        let configured = pipeline.destinations.values().map(|s| {
            let name = s.name();
            let version = match dests.get(name) {
                Some(Destination::Hep(id)) => id.version.number(),
                _ => 3,
            };
            (s.clone(), describe(dests.get(name), name), version)
        });
        // Destinations started by trace_start, while their trace runs.
        let dynamic = self.shared.tracer.dynamic.load();
        let started = dynamic.iter().filter_map(|t| match &t.target {
            Target::Own { sender, version } => {
                let info = DestinationInfo {
                    kind: "HEP".to_owned(),
                    uri: t.uri.clone(),
                };
                Some((sender.clone(), info, *version))
            }
            Target::Named(_) => None,
        });
        let rows: Vec<Value> = configured
            .chain(started)
            .map(|(s, info, version)| {
                let st = s.state();
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

    fn tcp_connections(&self, proto: Option<NetProto>, max: usize) -> heptap_mi::TcpConnList {
        self.shared.conns.list(proto, max)
    }

    fn trace_start(&self, req: TraceStart) -> Result<(), TraceStartError> {
        use TraceStartError::{BadParameter, NotAcceptable};
        let id = req.id.trim();
        if !good_trace_id(id) {
            return Err(BadParameter(format!(
                "bad trace id '{id}': letters, digits, '_', '-', '.', at most \
                 {MAX_TRACE_ID_LEN} characters"
            )));
        }
        if let Some(kind) = &req.kind
            && !kind.trim().eq_ignore_ascii_case("sip")
        {
            return Err(BadParameter(format!(
                "trace type '{}': heptap traces SIP only (type=sip)",
                kind.trim()
            )));
        }
        let scope = match &req.scope {
            Some(text) => Scope::parse(text).map_err(BadParameter)?,
            None => Scope::Dialog,
        };
        let filters = req
            .filters
            .iter()
            .map(|f| Filter::parse(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(BadParameter)?;
        let config = self.config();
        let is_static = config.trace_ids().iter().any(|t| t.name == id);
        let tracer = &self.shared.tracer;
        if is_static {
            return Err(TraceStartError::StaticName);
        }
        if tracer.dynamic.contains(id) {
            return Err(TraceStartError::DynamicName);
        }
        let uri = req.uri.trim();
        let rest = match uri.get(..4) {
            Some(scheme) if scheme.eq_ignore_ascii_case("hep:") => uri[4..].trim(),
            _ => {
                return Err(NotAcceptable(format!(
                    "uri '{uri}': heptap traces to HEP only: hep:<hep_id name> or \
                     hep:host[:port][;transport=udp|tcp|tls][;version=3]"
                )));
            }
        };
        let dests = config.destinations();
        let pipeline = tracer.load();
        let (target, shown, task) = if pipeline.destinations.contains_key(rest) {
            let shown = describe(dests.get(rest), rest).uri;
            (Target::Named(rest.to_owned()), shown, None)
        } else {
            let allocating =
                |why: String| BadParameter(format!("error while allocating new hep_id: {why}"));
            if pipeline.destinations.contains_key(id) {
                return Err(allocating(format!(
                    "a hep_id named '{id}' exists: use uri=hep:{id} or another trace id"
                )));
            }
            let spec = crate::build::dynamic_destination(&config, id, rest).map_err(allocating)?;
            let shown = describe(Some(&spec.destination), id).uri;
            let version = match &spec.destination {
                Destination::Hep(hep) => hep.version.number(),
                _ => 3,
            };
            let (sender, task) =
                crate::sender::spawn_on(spec, &self.shared.stats, &self.shared.workers)
                    .map_err(|e| allocating(e.to_string()))?;
            (Target::Own { sender, version }, shown, Some(task))
        };
        drop(pipeline);
        let trace = DynTrace::new(
            id.to_owned(),
            shown,
            (scope, filters),
            target,
            &self.shared.stats,
        );
        match tracer.dynamic.start(trace, task, is_static) {
            Ok(()) => {
                tracing::info!(trace_id = id, scope = scope.name(), "Dynamic trace started");
                Ok(())
            }
            Err((why, task)) => {
                if let Some(task) = task {
                    self.drain(task);
                }
                Err(match why {
                    StartError::StaticName => TraceStartError::StaticName,
                    StartError::DynamicName => TraceStartError::DynamicName,
                    StartError::TooMany => BadParameter(why.to_string()),
                })
            }
        }
    }

    fn trace_stop(&self, id: &str) -> Result<(), UnknownTraceId> {
        let task = self
            .shared
            .tracer
            .dynamic
            .stop(id)
            .ok_or_else(|| UnknownTraceId(id.to_owned()))?;
        if let Some(task) = task {
            self.drain(task);
        }
        tracing::info!(trace_id = id, "Dynamic trace stopped");
        Ok(())
    }

    fn dynamic_traces(&self) -> Vec<DynamicTraceInfo> {
        self.shared
            .tracer
            .dynamic
            .load()
            .iter()
            .map(|t| DynamicTraceInfo {
                name: t.name.clone(),
                kind: "HEP".to_owned(),
                uri: t.uri.clone(),
                filters: t
                    .filters
                    .iter()
                    .map(|f| {
                        let (k, v) = f.listed();
                        (k.to_owned(), v)
                    })
                    .collect(),
            })
            .collect()
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

impl AgentControl {
    /// Lets a stopped dynamic destination deliver what it holds (2 s), then closes it.
    fn drain(&self, task: SenderTask) {
        let grace = std::time::Duration::from_secs(2);
        match self.shared.workers.first() {
            Some(worker) => {
                worker.spawn(async move {
                    let _ = task.shutdown(grace).await;
                });
            }
            None => drop(task),
        }
    }
}
