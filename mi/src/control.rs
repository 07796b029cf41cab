//! The seam between the MI and the rest of heptap: what a command may read or switch.
//!
//! The agent implements [`Control`] over its switches, statistics and config; the MI never sees
//! the agent's types. Every method is synchronous and cheap (atomics, snapshots), except
//! [`Control::reload`] and [`Control::tls_reload`], which the MI runs on a blocking thread and
//! which answer with a [`ReloadReport`]: the MI replies `"OK"` only when nothing was left out.

use std::net::SocketAddr;
use std::time::SystemTime;

use heptap_hep::{NetProto, TraceMessage};

/// One destination of a trace id, as `sip_trace` / `trace` list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationInfo {
    /// `HEP`, `FILE` or `STDOUT` (OpenSIPS prints `HEP`, `SIP`, `Database`).
    pub kind: String,
    /// Where it goes, as OpenSIPS prints it: `host:port` for HEP, the path for a file.
    pub uri: String,
}

/// A trace id (OpenSIPS `trace_id`), its switch and its destinations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceIdInfo {
    /// The name between brackets in `"[tid]uri=hep:homer"`.
    pub name: String,
    /// Whether events for this trace id are sent (`sip_trace tid off` clears it).
    pub on: bool,
    /// Where its events go; one reply entry per destination.
    pub destinations: Vec<DestinationInfo>,
}

/// A dynamic trace (`trace_start`), as `trace` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicTraceInfo {
    /// Its id.
    pub name: String,
    /// `HEP`.
    pub kind: String,
    /// Where it goes: `host:port` of the destination it started, or the hep_id's.
    pub uri: String,
    /// Its filters as `(caller|callee|ip, value)`, in the order given.
    pub filters: Vec<(String, String)>,
}

/// What `trace_start` asks for, as given (the agent parses and checks it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceStart {
    /// `id`: the new trace's name.
    pub id: String,
    /// `uri`: `hep:<hep_id>` (an existing destination by name) or `hep:host[:port][;..]` (a
    /// new one, the hep_id syntax).
    pub uri: String,
    /// `filter`: `caller=..`, `callee=..`, `ip=..`.
    pub filters: Vec<String>,
    /// `scope`: `m`/`message` or `d`/`dialog` (the default).
    pub scope: Option<String>,
    /// `type`: `sip` (the only one heptap traces; also the default).
    pub kind: Option<String>,
}

/// Why `trace_start` refused, with OpenSIPS's reply for each.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceStartError {
    /// A configured trace id has that name (500 "Bad parameter value").
    #[error("trace id already used")]
    StaticName,
    /// A dynamic trace has that name (500 "Bad parameter value").
    #[error("dynamic trace id already used")]
    DynamicName,
    /// A parameter that cannot be used, and why (500 "Bad parameter value").
    #[error("{0}")]
    BadParameter(String),
    /// A uri heptap cannot trace to (`sip:`, `file:`, databases) (406).
    #[error("{0}")]
    NotAcceptable(String),
    /// The agent cannot start dynamic traces (a test double).
    #[error("dynamic tracing is not available")]
    Unavailable,
}

/// One statistic, named `group:name` as OpenSIPS names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statistic {
    /// The group (`core`, `net`, a destination name ...).
    pub group: String,
    /// The name within the group.
    pub name: String,
    /// The current value.
    pub value: u64,
    /// Gauges report a state, are listed as `non-incremental` and are not reset.
    pub gauge: bool,
}

/// One row of `ps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// OpenSIPS's process index (`"ID"`).
    pub id: u32,
    /// The operating-system pid (`"PID"`); heptap is one process, so every row repeats it.
    pub pid: u32,
    /// What the process (for heptap: the task group) does (`"Type"`).
    pub kind: String,
}

/// One leg of a relayed connection, as `list_tcp_conns` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnLeg {
    /// The id its HEP events carry in chunk 0x11 (OpenSIPS-shaped: the low 32 bits are the
    /// connection counter OpenSIPS lists as `ID`).
    pub conn_id: u64,
    /// `tcp`, `tls`, `ws`, `wss` (OpenSIPS's `Type`).
    pub proto: NetProto,
    /// The peer: the client, or the upstream (OpenSIPS's `Remote`).
    pub remote: SocketAddr,
    /// heptap's end (OpenSIPS's `Local`).
    pub local: SocketAddr,
}

/// Where a relayed connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// The client's TLS handshake or WebSocket upgrade.
    Accepting,
    /// Opening the upstream leg.
    Connecting,
    /// Relaying.
    Relaying,
}

impl ConnState {
    /// OpenSIPS 3.5's `State` number (net/tcp_conn_defs.h `enum tcp_conn_states`): S_CONN_OK
    /// (0), also for a connection in its TLS or WebSocket handshake, as OpenSIPS keeps those
    /// apart from the state; S_CONN_CONNECTING (1) while the upstream leg is opened.
    pub fn opensips_number(self) -> i64 {
        match self {
            ConnState::Accepting | ConnState::Relaying => 0,
            ConnState::Connecting => 1,
        }
    }

    /// heptap's word for it (`Phase`).
    pub fn name(self) -> &'static str {
        match self {
            ConnState::Accepting => "accepting",
            ConnState::Connecting => "connecting",
            ConnState::Relaying => "relaying",
        }
    }
}

/// One relayed connection (`list_tcp_conns`): the client leg in OpenSIPS's shape, plus the
/// upstream leg, the bytes each way and the age.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConnInfo {
    /// The listener it came in on.
    pub listener: String,
    /// Where it is in its life.
    pub state: ConnState,
    /// The client leg.
    pub client: ConnLeg,
    /// The upstream leg, once it is being opened.
    pub upstream: Option<ConnLeg>,
    /// When the idle timeout closes it if nothing moves (OpenSIPS's `Lifetime`); `None`
    /// without `idle_timeout`.
    pub expires: Option<SystemTime>,
    /// When it was accepted.
    pub since: SystemTime,
    /// Bytes relayed client -> upstream (WS/WSS: message payloads).
    pub bytes_in: u64,
    /// Bytes relayed upstream -> client.
    pub bytes_out: u64,
}

/// What `list_tcp_conns` lists: at most the number asked for, and how many there are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpConnList {
    /// The connections listed (oldest first).
    pub listed: Vec<TcpConnInfo>,
    /// How many relayed connections there are in all.
    pub total: usize,
}

/// heptap's log levels, with the numbers OpenSIPS's `log_level` uses for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Errors only (OpenSIPS L_ERR, -1; L_ALERT and L_CRIT map here too).
    Error,
    /// Warnings (L_WARN, 1).
    Warn,
    /// Informational messages (L_INFO, 3; L_NOTICE maps here).
    Info,
    /// Debugging (L_DBG, 4).
    Debug,
    /// Everything (5, beyond OpenSIPS's range).
    Trace,
}

impl LogLevel {
    /// The OpenSIPS number for this level.
    pub fn opensips_number(self) -> i64 {
        match self {
            LogLevel::Error => -1,
            LogLevel::Warn => 1,
            LogLevel::Info => 3,
            LogLevel::Debug => 4,
            LogLevel::Trace => 5,
        }
    }

    /// The level for an OpenSIPS number (`-3`..`4`, and `5` for trace).
    pub fn from_opensips_number(n: i64) -> Option<LogLevel> {
        Some(match n {
            -3..=-1 => LogLevel::Error,
            0 | 1 => LogLevel::Warn,
            2 | 3 => LogLevel::Info,
            4 => LogLevel::Debug,
            5 => LogLevel::Trace,
            _ => return None,
        })
    }

    /// The level for a name (`error`, `warn`, `info`, `debug`, `trace`, any case) or a number.
    pub fn parse(text: &str) -> Option<LogLevel> {
        let t = text.trim();
        if let Ok(n) = t.parse::<i64>() {
            return LogLevel::from_opensips_number(n);
        }
        Some(match t.to_ascii_lowercase().as_str() {
            "error" | "err" | "alert" | "crit" | "critical" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" | "notice" => LogLevel::Info,
            "debug" | "dbg" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }

    /// The lower-case name (`tracing`'s spelling).
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// One thing a reload (`reload`, `tls_reload`, SIGHUP) changed, or could not change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadItem {
    /// What it is about, named as the config names it: `listener edge`, `hep.ids.homer`,
    /// `service.workers`.
    pub item: String,
    /// What was done, or why it was not.
    pub detail: String,
}

impl std::fmt::Display for ReloadItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.item, self.detail)
    }
}

/// What a reload did: every change it applied and every one it could not apply (and why). The
/// MI answers `"OK"` only when [`ReloadReport::is_complete`]; otherwise 500 "Reload incomplete"
/// with every item.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// What now runs as the config says.
    pub applied: Vec<ReloadItem>,
    /// What the config asks for and does not run (the old state goes on), with the reason.
    pub not_applied: Vec<ReloadItem>,
}

impl ReloadReport {
    /// Records a change that was applied.
    pub fn applied(&mut self, item: impl Into<String>, detail: impl Into<String>) {
        self.applied.push(ReloadItem {
            item: item.into(),
            detail: detail.into(),
        });
    }

    /// Records a change that was not applied, and why.
    pub fn not_applied(&mut self, item: impl Into<String>, detail: impl Into<String>) {
        self.not_applied.push(ReloadItem {
            item: item.into(),
            detail: detail.into(),
        });
    }

    /// Whether everything asked for was applied (nothing at all counts too).
    pub fn is_complete(&self) -> bool {
        self.not_applied.is_empty()
    }

    /// One line per item, what was not applied first: `not applied: <item>: <why>`, then
    /// `applied: <item>: <what>`. The MI's error data joins them with `; `; SIGHUP logs each.
    pub fn lines(&self) -> Vec<String> {
        let not = self.not_applied.iter().map(|i| format!("not applied: {i}"));
        let done = self.applied.iter().map(|i| format!("applied: {i}"));
        not.chain(done).collect()
    }
}

/// A reload refused as a whole (the config does not load, or names something that cannot be
/// built): nothing changed. Every reason, one per entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.join("; "))]
pub struct ReloadRefused {
    /// Each reason, as the agent words it (key path and why).
    pub errors: Vec<String>,
}

/// `set_trace_id_on` was given a name no trace id has.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown trace id {0:?}")]
pub struct UnknownTraceId(pub String);

/// What became of one MI request (the `result` of the agent's `mi:<transport>_<result>`
/// counters and of `heptap_mi_requests_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MiOutcome {
    /// Answered with a result (or accepted, a notification; or forwarded and answered by the
    /// upstream).
    Ok,
    /// Answered with an error: bad JSON-RPC, an unknown command, bad parameters, a failed
    /// command or upstream.
    Error,
    /// Refused by the HTTP listener before any command ran: Host, Origin, token, Content-Type,
    /// path, method, size or time limits.
    Refused,
}

impl MiOutcome {
    /// The label value: `ok`, `error`, `refused`.
    pub fn name(self) -> &'static str {
        match self {
            MiOutcome::Ok => "ok",
            MiOutcome::Error => "error",
            MiOutcome::Refused => "refused",
        }
    }
}

/// What the MI may read and switch in heptap. The agent implements it; tests implement it with
/// plain fields. Object-safe: the MI holds an `Arc<dyn Control>`.
///
/// Switches must take effect for the very next event: the agent publishes them where the data
/// path reads them without locks.
pub trait Control: Send + Sync + 'static {
    /// The tracer's global switch (`[tracer] trace_on`).
    fn sip_trace_on(&self) -> bool;
    /// Sets the global switch (`sip_trace on|off`, `trace mode=on|off`).
    fn set_sip_trace_on(&self, on: bool);
    /// Every trace id with its switch and destinations, in config order.
    fn trace_ids(&self) -> Vec<TraceIdInfo>;
    /// Switches one trace id (`sip_trace tid off`).
    fn set_trace_id_on(&self, name: &str, on: bool) -> Result<(), UnknownTraceId>;
    /// Whether connection events of `proto` are traced (`[net.<proto>] trace_on`; the
    /// `tcp_trace`, `tls_trace`, `ws_trace`, `wss_trace` commands, OpenSIPS's proto_* switch).
    fn net_trace_on(&self, proto: NetProto) -> bool;
    /// Switches connection-event tracing of `proto` (`tcp_trace off`).
    fn set_net_trace_on(&self, proto: NetProto, on: bool);
    /// Every statistic, in a stable order.
    fn statistics(&self) -> Vec<Statistic>;
    /// Zeroes one counter (the MI expands `all` and `group:`; gauges are never passed).
    fn reset_statistic(&self, group: &str, name: &str);
    /// The `hep_ids` reply: every destination with its state and counters, already shaped.
    fn hep_ids(&self) -> serde_json::Value;
    /// Re-reads and re-validates the config and applies what it can: `Ok` lists what was
    /// applied and what was not (and why); `Err` means nothing changed. Runs on a blocking
    /// thread.
    fn reload(&self) -> Result<ReloadReport, ReloadRefused>;
    /// Re-reads the certificate, key and CA files of every listener and destination (OpenSIPS
    /// tls_mgm's `tls_reload`), and nothing else; new handshakes use what loaded. Runs on a
    /// blocking thread.
    fn tls_reload(&self) -> Result<ReloadReport, ReloadRefused>;
    /// The current log level.
    fn log_level(&self) -> LogLevel;
    /// Changes the log level; `Err` is shown to the client.
    fn set_log_level(&self, level: LogLevel) -> Result<(), String>;
    /// The rows of `ps`.
    fn processes(&self) -> Vec<ProcessInfo>;
    /// Whether `[mi] trace_destination` is set; when false the MI builds no trace messages.
    fn mi_tracing_enabled(&self) -> bool;
    /// Sends one MI trace message (proto type 87) to `[mi] trace_destination`. The MI has
    /// already applied `trace_bwlist`. Must not block.
    fn trace_mi(&self, msg: TraceMessage);
    /// The relayed connections (`list_tcp_conns`), of `proto` only when given, at most `max`
    /// of them (oldest first), and how many there are.
    fn tcp_connections(&self, proto: Option<NetProto>, max: usize) -> TcpConnList;
    /// Starts a dynamic trace (`trace_start`); it runs until `trace_stop`, across reloads.
    fn trace_start(&self, request: TraceStart) -> Result<(), TraceStartError> {
        let _ = request;
        Err(TraceStartError::Unavailable)
    }
    /// Stops dynamic trace `id` (`trace_stop`); a destination it started drains and closes.
    fn trace_stop(&self, id: &str) -> Result<(), UnknownTraceId> {
        Err(UnknownTraceId(id.to_owned()))
    }
    /// The dynamic traces, in the order they were started.
    fn dynamic_traces(&self) -> Vec<DynamicTraceInfo> {
        Vec::new()
    }
    /// Counts one MI request by the transport it came through (`fifo` or `json`, i.e. HTTP)
    /// and what became of it. Must not block. Controls that keep no counters ignore it.
    fn count_mi_request(&self, _backend: crate::trace::Backend, _outcome: MiOutcome) {}
    /// The Prometheus text exposition (format 0.0.4) of every statistic, served at
    /// `GET /metrics`; `None`: no metrics (the path answers 404).
    fn metrics(&self) -> Option<String> {
        None
    }
}
