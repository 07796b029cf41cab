//! Dynamic tracing: OpenSIPS's `trace_start` / `trace_stop` (tracer 3.x, `tracer:start` /
//! `tracer:stop` in 4.x). An orchestrator traces one subscriber's SIP (From user, Request-URI
//! user, client address) to a HEP destination without a reload, and stops it.
//!
//! The set of dynamic traces is an immutable list behind an `ArcSwap`, read without locks per
//! SIP message; starting or stopping one swaps the list. A reload does not touch it (OpenSIPS
//! keeps dynamic traces until they are stopped). Filters are parsed once, at `trace_start`; a
//! message that matches none costs header look-ups and no allocation.
//!
//! Scope `dialog` (the default, as OpenSIPS's): a matching initial INVITE (no To tag) puts its
//! Call-ID in the trace's table, and every message with a Call-ID in the table is traced, both
//! ways. heptap keeps no dialog state, so the table is bounded ([`MAX_DIALOGS`] per trace) and
//! each Call-ID expires [`DIALOG_TTL`] after it was last seen. Scope `message`: each message
//! that matches the filters is traced on its own.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use heptap_filters::{SipInspect, SipStart, sip_fields};

use crate::sender::{Sender, SenderTask};
use crate::sip::SipMessage;
use crate::stats::{Counter, Stats};

/// Most dialogs (Call-IDs) one `dialog`-scoped trace follows at once; past it, new dialogs are
/// not followed (counted as `dialogs_full`) until older ones expire.
pub const MAX_DIALOGS: usize = 10_000;

/// How long a followed Call-ID stays in the table after its last message.
pub const DIALOG_TTL: Duration = Duration::from_secs(4 * 3600);

/// Most dynamic traces at once.
pub const MAX_DYNAMIC_TRACES: usize = 64;

/// Which messages a dynamic trace takes (`scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `m`/`message`: each message matching the filters.
    Message,
    /// `d`/`dialog`: every message with the Call-ID of a matching initial INVITE.
    Dialog,
}

impl Scope {
    /// OpenSIPS's letters (`m`, `d`; spaces ignored) or the words `message` and `dialog`.
    /// Transaction (`t`) and B2B (`b`) scopes need state heptap does not keep.
    pub fn parse(text: &str) -> Result<Scope, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("message") || t.eq_ignore_ascii_case("m") {
            Ok(Scope::Message)
        } else if t.eq_ignore_ascii_case("dialog") || t.eq_ignore_ascii_case("d") {
            Ok(Scope::Dialog)
        } else {
            Err(format!(
                "invalid trace scope '{t}': heptap traces 'm' (message) or 'd' (dialog); \
                 't' and 'b' need transaction state it does not keep"
            ))
        }
    }

    /// How `trace` lists it.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Message => "message",
            Scope::Dialog => "dialog",
        }
    }
}

/// One filter of a dynamic trace; every filter must match (OpenSIPS ANDs them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `caller=user[@domain]`: the From URI.
    Caller(String),
    /// `callee=user[@domain]`: the Request-URI (a response's To URI, in scope `message`).
    Callee(String),
    /// `ip=addr`: the client address of the connection the message crosses.
    Ip(IpAddr),
}

impl Filter {
    /// `caller=`, `callee=`, `ip=` (names in any case, as OpenSIPS).
    pub fn parse(text: &str) -> Result<Filter, String> {
        let t = text.trim();
        let (key, value) = t
            .split_once('=')
            .ok_or_else(|| format!("bad filter '{t}': expected caller=, callee= or ip="))?;
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("filter '{t}' has no value"));
        }
        match key.trim().to_ascii_lowercase().as_str() {
            "caller" => Ok(Filter::Caller(value.to_owned())),
            "callee" => Ok(Filter::Callee(value.to_owned())),
            "ip" => value
                .parse::<IpAddr>()
                .map(|ip| Filter::Ip(ip.to_canonical()))
                .map_err(|_| format!("invalid IP in filter '{t}'")),
            other => Err(format!(
                "unknown filter '{other}' in '{t}': expected caller=, callee= or ip="
            )),
        }
    }

    /// `{"caller": "alice"}`: the key and value `trace` lists.
    pub fn listed(&self) -> (&'static str, String) {
        match self {
            Filter::Caller(v) => ("caller", v.clone()),
            Filter::Callee(v) => ("callee", v.clone()),
            Filter::Ip(ip) => ("ip", ip.to_string()),
        }
    }

    fn matches(&self, sip: &SipMessage<'_>, client: IpAddr) -> bool {
        match self {
            Filter::Caller(want) => sip
                .header("From")
                .is_some_and(|v| sip_fields::user_matches(sip_fields::name_addr_uri(v), want)),
            Filter::Callee(want) => {
                let uri = match sip.start() {
                    Some(SipStart::Request { uri, .. }) => Some(uri),
                    Some(SipStart::Response { .. }) => {
                        sip.header("To").map(sip_fields::name_addr_uri)
                    }
                    None => None,
                };
                uri.is_some_and(|uri| sip_fields::user_matches(uri, want))
            }
            Filter::Ip(ip) => client.to_canonical() == *ip,
        }
    }
}

/// Where a dynamic trace sends.
#[derive(Clone, Debug)]
pub enum Target {
    /// A destination started for this trace (`uri=hep:host:port;...`), named as the trace.
    Own {
        /// Its producers' handle.
        sender: Sender,
        /// Its HEP version, for `hep_ids`.
        version: u8,
    },
    /// A configured `hep_id` by name (`uri=hep:<name>`), looked up in the current snapshot so
    /// it follows reloads.
    Named(String),
}

/// The Call-IDs a `dialog` trace follows.
#[derive(Debug, Default)]
struct Dialogs {
    /// Call-ID to when it was last seen.
    seen: Mutex<HashMap<Box<str>, Instant>>,
}

/// One dynamic trace.
#[derive(Debug)]
pub struct DynTrace {
    /// The trace id (`id`).
    pub name: String,
    /// The destination as `trace` lists it (`host:port`, or the hep_id name).
    pub uri: String,
    /// Which messages it takes.
    pub scope: Scope,
    /// Every one must match.
    pub filters: Vec<Filter>,
    /// Where its messages go.
    pub target: Target,
    /// The Call-IDs followed (scope `dialog`).
    dialogs: Dialogs,
    /// Messages handed to its destination (`dyntrace_<id>:traced`).
    pub traced: Counter,
    /// Dialogs not followed because the table was full (`dyntrace_<id>:dialogs_full`).
    pub dialogs_full: Counter,
}

impl DynTrace {
    /// A trace with its counters in `stats` (group `dyntrace_<name>`).
    pub fn new(
        name: String,
        uri: String,
        (scope, filters): (Scope, Vec<Filter>),
        target: Target,
        stats: &Stats,
    ) -> Self {
        let group = format!("dyntrace_{name}");
        Self {
            traced: stats.counter(&group, "traced"),
            dialogs_full: stats.counter(&group, "dialogs_full"),
            name,
            uri,
            scope,
            filters,
            target,
            dialogs: Dialogs::default(),
        }
    }

    /// Dialogs followed now.
    #[cfg(test)]
    fn dialogs(&self) -> usize {
        self.dialogs
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether this trace takes `sip`, crossing a connection whose client is `client`.
    pub fn wants(&self, sip: &SipMessage<'_>, client: IpAddr, now: Instant) -> bool {
        let all = || self.filters.iter().all(|f| f.matches(sip, client));
        match self.scope {
            Scope::Message => all(),
            Scope::Dialog => {
                let Some(call_id) = sip.header("Call-ID") else {
                    return false;
                };
                if self.follows(call_id, now) {
                    return true;
                }
                let initial_invite = matches!(
                    sip.start(),
                    Some(SipStart::Request {
                        method: "INVITE",
                        ..
                    })
                ) && !sip.header("To").is_some_and(sip_fields::has_tag);
                if initial_invite && all() {
                    self.follow(call_id, now);
                    return true;
                }
                false
            }
        }
    }

    /// Whether `call_id` is followed (and not expired); refreshes it.
    fn follows(&self, call_id: &str, now: Instant) -> bool {
        let mut seen = self
            .dialogs
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match seen.get_mut(call_id) {
            Some(last) if now.saturating_duration_since(*last) < DIALOG_TTL => {
                *last = now;
                true
            }
            Some(_) => {
                seen.remove(call_id);
                false
            }
            None => false,
        }
    }

    /// Starts following `call_id`, making room by dropping expired ones when full.
    fn follow(&self, call_id: &str, now: Instant) {
        let mut seen = self
            .dialogs
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= MAX_DIALOGS {
            seen.retain(|_, last| now.saturating_duration_since(*last) < DIALOG_TTL);
        }
        if seen.len() >= MAX_DIALOGS {
            self.dialogs_full.inc();
            return;
        }
        seen.insert(call_id.into(), now);
    }
}

/// Why `trace_start` refused (OpenSIPS's reply for each).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configured trace id has that name.
    #[error("trace id already used")]
    StaticName,
    /// A dynamic trace has that name.
    #[error("dynamic trace id already used")]
    DynamicName,
    /// [`MAX_DYNAMIC_TRACES`] run already.
    #[error("too many dynamic traces (at most {MAX_DYNAMIC_TRACES}); stop one first")]
    TooMany,
}

/// Every dynamic trace, and the tasks of the destinations they started.
#[derive(Debug, Default)]
pub struct DynTraces {
    /// Read per SIP message without locks; swapped whole at start and stop.
    list: ArcSwap<Vec<Arc<DynTrace>>>,
    /// Serialises start and stop, and holds the started destinations' tasks by trace name.
    tasks: Mutex<BTreeMap<String, Option<SenderTask>>>,
}

impl DynTraces {
    /// The current list.
    pub fn load(&self) -> arc_swap::Guard<Arc<Vec<Arc<DynTrace>>>> {
        self.list.load()
    }

    /// Adds `trace` (with the task of its own destination, if it started one). `is_static`
    /// tells whether a configured trace id has the name.
    pub fn start(
        &self,
        trace: DynTrace,
        task: Option<SenderTask>,
        is_static: bool,
    ) -> Result<(), (StartError, Option<SenderTask>)> {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.list.load_full();
        if is_static {
            return Err((StartError::StaticName, task));
        }
        if current.iter().any(|t| t.name == trace.name) {
            return Err((StartError::DynamicName, task));
        }
        if current.len() >= MAX_DYNAMIC_TRACES {
            return Err((StartError::TooMany, task));
        }
        tasks.insert(trace.name.clone(), task);
        let mut next: Vec<Arc<DynTrace>> = current.iter().cloned().collect();
        next.push(Arc::new(trace));
        self.list.store(Arc::new(next));
        Ok(())
    }

    /// Whether a dynamic trace has this name.
    pub fn contains(&self, name: &str) -> bool {
        self.list.load().iter().any(|t| t.name == name)
    }

    /// Removes trace `name`; its own destination's task, if any, is returned for the caller to
    /// drain. `None` when no dynamic trace has that name.
    pub fn stop(&self, name: &str) -> Option<Option<SenderTask>> {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.list.load_full();
        if !current.iter().any(|t| t.name == name) {
            return None;
        }
        let next: Vec<Arc<DynTrace>> = current.iter().filter(|t| t.name != name).cloned().collect();
        self.list.store(Arc::new(next));
        Some(tasks.remove(name).flatten())
    }

    /// Removes every trace and returns their destinations' tasks (shutdown).
    pub fn take_all(&self) -> Vec<SenderTask> {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        self.list.store(Arc::new(Vec::new()));
        std::mem::take(&mut *tasks)
            .into_values()
            .flatten()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE_INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
        From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
        Call-ID: d1\r\nCSeq: 1 INVITE\r\n\r\n";
    const BOB_200: &[u8] = b"SIP/2.0 200 OK\r\n\
        From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>;tag=2\r\n\
        Call-ID: d1\r\nCSeq: 1 INVITE\r\n\r\n";
    const CAROL_INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
        From: <sip:carol@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
        Call-ID: d2\r\nCSeq: 1 INVITE\r\n\r\n";

    fn trace(scope: Scope, filters: &[&str]) -> DynTrace {
        let filters = filters.iter().map(|f| Filter::parse(f).unwrap()).collect();
        let target = Target::Named("x".into());
        DynTrace::new(
            "t".into(),
            "x".into(),
            (scope, filters),
            target,
            &Stats::new(),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn filters_parse_as_opensips_names_them_and_refuse_the_rest() {
        assert_eq!(
            Filter::parse("CALLER=alice"),
            Ok(Filter::Caller("alice".into()))
        );
        assert_eq!(
            Filter::parse("ip=::ffff:192.0.2.1"),
            Ok(Filter::Ip(ip("192.0.2.1")))
        );
        assert!(Filter::parse("ip=nope").unwrap_err().contains("invalid IP"));
        assert!(
            Filter::parse("user=a")
                .unwrap_err()
                .contains("unknown filter 'user'")
        );
        assert!(Filter::parse("caller").is_err());
        assert!(Filter::parse("callee=").is_err());
        assert_eq!(Scope::parse("M"), Ok(Scope::Message));
        assert_eq!(Scope::parse("dialog"), Ok(Scope::Dialog));
        assert!(Scope::parse("t").is_err());
    }

    #[test]
    fn a_dialog_trace_follows_the_call_id_of_a_matching_initial_invite() {
        let t = trace(Scope::Dialog, &["caller=alice", "ip=192.0.2.10"]);
        let now = Instant::now();
        let client = ip("192.0.2.10");
        assert!(
            !t.wants(&SipMessage::new(BOB_200), client, now),
            "not yet followed"
        );
        assert!(t.wants(&SipMessage::new(ALICE_INVITE), client, now));
        assert!(t.wants(&SipMessage::new(BOB_200), ip("198.51.100.1"), now));
        assert!(!t.wants(&SipMessage::new(CAROL_INVITE), client, now));
        assert!(!t.wants(&SipMessage::new(BOB_200), client, now + DIALOG_TTL));
        assert_eq!(t.dialogs(), 0, "expired and removed");
    }

    #[test]
    fn a_message_trace_matches_each_message_and_callee_is_the_request_uri() {
        let t = trace(Scope::Message, &["callee=bob@example.com"]);
        let now = Instant::now();
        let client = ip("192.0.2.10");
        assert!(t.wants(&SipMessage::new(ALICE_INVITE), client, now));
        assert!(
            t.wants(&SipMessage::new(BOB_200), client, now),
            "a reply by its To"
        );
        let other = trace(Scope::Message, &["callee=carol"]);
        assert!(!other.wants(&SipMessage::new(ALICE_INVITE), client, now));
    }

    #[test]
    fn the_dialog_table_is_bounded() {
        let t = trace(Scope::Dialog, &[]);
        let now = Instant::now();
        for n in 0..MAX_DIALOGS {
            t.follow(&n.to_string(), now);
        }
        let invite = SipMessage::new(ALICE_INVITE);
        let reply = SipMessage::new(BOB_200);
        let client = ip("192.0.2.1");
        assert!(
            t.wants(&invite, client, now),
            "the matching INVITE itself is traced"
        );
        assert!(
            !t.wants(&reply, client, now),
            "but its dialog is not followed: full"
        );
        assert_eq!(t.dialogs_full.get(), 1);
        let later = now + DIALOG_TTL;
        assert!(t.wants(&invite, client, later), "expired ones make room");
        assert!(t.wants(&reply, client, later));
        assert_eq!(t.dialogs(), 1);
    }
}
