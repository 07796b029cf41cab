//! SIP tracing on relayed connections (spec/opensips-tracing.md §5.3, spec/hep.md §4).
//!
//! Per connection, one [`SipConn`] knows where the connection's SIP packets go (the listener's
//! `sip_trace_id`) and how they look (addresses as the client sees them, ip-proto by the
//! listener's protocol, Call-ID in chunk 0x0011, `{"net": <connection id>}` as extra
//! correlation). On TCP and TLS each direction has a [`SipFramer`] behind a [`SipObserver`]; on
//! WS and WSS each data message is handed to [`SipConn::frame`] directly.
//!
//! The tracer is asked per message ([`Tracer::sip`]: global `trace_on`, `sip_methods`, the
//! listener's `sip_trace_route`, the trace ids' switches, the dynamic traces), so `sip_trace tid
//! off` stops the very next message. Nothing here can change or delay the relayed bytes: it
//! only looks at them after they were read, and `offer`s to queues that never block.
//!
//! SIP that was relayed but cannot be traced whole (framing lost, a message too large) is never
//! silent: a `SIP_FRAMING_LOST` event on the client leg says why and how many bytes, under the
//! leg's `[net.*]` switches as its other events, and a head that could be read is traced as SIP
//! all the same ([`SipConn::lost`]).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use heptap_filters::{Bwlist, ConnInfo, Route};
use heptap_hep::{NetProto, TraceMessage, proto_type};

use super::events::{Direction, Leg};
use crate::clock::split;
use crate::sip::{
    Framed, FramerCounters, HeadIndex, Limits, LostReason, SipFramer, SipMessage, is_keepalive,
    read_head,
};
use crate::stats::Counter;
use crate::tracer::{SipEvent, SipTraced, Tracer};

/// How a listener traces SIP (from `[[listener]]` and `[tracer]`).
#[derive(Clone, Debug)]
pub struct SipSettings {
    /// The trace id whose switch and destinations apply.
    pub trace_id: String,
    /// `sip_methods`: which methods are traced (responses by their CSeq method).
    pub methods: Option<Bwlist>,
    /// `sip_trace_route`: run per message; `drop` skips it, `trace("tid")` picks trace ids.
    pub route: Option<Route>,
    /// `sip_payload = "json"`: OpenSIPS's `{"payload": "..."}` form instead of the raw message.
    pub json_payload: bool,
    /// What the stream framer holds and traces whole (the listener's `max_message_bytes`).
    pub limits: Limits,
}

/// Per-listener SIP counters (`listener_<name>:sip_…`).
#[derive(Clone, Debug)]
pub struct SipStats {
    /// Messages framed (traced or not).
    pub messages: Counter,
    /// Messages handed to the trace id's destinations.
    pub traced: Counter,
    /// Messages skipped by `sip_methods` or dropped by `sip_trace_route`.
    pub filtered: Counter,
    /// Messages not traced because tracing was switched off (`trace_on`, the trace id's
    /// switch: `sip_trace off`, `sip_trace <tid> off`).
    pub switched_off: Counter,
    /// Stream parts that were not SIP; the framer resynchronised.
    pub malformed: Counter,
    /// Messages too large for one HEP frame: counted, not traced, never truncated.
    pub oversize: Counter,
    /// Connections on which the framer stopped tracing SIP (the bytes are still relayed).
    pub gave_up: Counter,
    /// CRLF keep-alives skipped.
    pub keepalives: Counter,
    /// SIP relayed but not traced whole: each `SIP_FRAMING_LOST` occasion, traced or not.
    pub framing_lost: Counter,
    /// SIP requests read on relayed connections, either way, over every listener (OpenSIPS's
    /// `core:rcv_requests`, also listed as `core:fwd_requests`: heptap relays every one).
    pub requests: Counter,
    /// SIP replies read (`core:rcv_replies`, also `core:fwd_replies`).
    pub replies: Counter,
    /// Stream parts that were not SIP, over every listener (`core:bad_msg_hdr`).
    pub bad_msg_hdr: Counter,
}

impl SipStats {
    /// Registers the counters of listener `group`.
    pub fn new(stats: &crate::stats::Stats, group: &str) -> Self {
        Self {
            messages: stats.counter(group, "sip_messages"),
            traced: stats.counter(group, "sip_traced"),
            filtered: stats.counter(group, "sip_filtered"),
            switched_off: stats.counter(group, "sip_switched_off"),
            malformed: stats.counter(group, "sip_malformed"),
            oversize: stats.counter(group, "sip_oversize"),
            gave_up: stats.counter(group, "sip_gave_up"),
            keepalives: stats.counter(group, "sip_keepalives"),
            framing_lost: stats.counter(group, "sip_framing_lost"),
            requests: core_counter(stats, ["rcv_requests", "fwd_requests", "drop_requests"]),
            replies: core_counter(stats, ["rcv_replies", "fwd_replies", "drop_replies"]),
            bad_msg_hdr: stats.counter("core", "bad_msg_hdr"),
        }
    }

    /// Counts one whole message read, a request or a reply.
    fn count(&self, msg: &[u8]) {
        if msg.starts_with(b"SIP/2.0 ") {
            self.replies.inc();
        } else {
            self.requests.inc();
        }
    }

    fn add(&self, c: FramerCounters) {
        self.messages.add(c.messages);
        self.malformed.add(c.malformed);
        self.bad_msg_hdr.add(c.malformed);
        self.oversize.add(c.oversize);
        self.gave_up.add(c.gave_up);
        self.keepalives.add(c.keepalives);
    }
}

/// The `core:` counter `[rcv, fwd, drop]`: `rcv` counted, listed as `fwd` too, and `drop`
/// registered beside them, staying 0: heptap relays every message it reads.
fn core_counter(stats: &crate::stats::Stats, [rcv, fwd, drop]: [&str; 3]) -> Counter {
    let c = stats.counter("core", rcv);
    stats.alias("core", fwd, &c);
    stats.counter("core", drop);
    c
}

/// Bytes a HEP3 SIP packet needs besides the message and the Call-ID: the IPv6 fixed part, the
/// payload chunk header, the correlation chunk header, a JSON extra correlation with a 20-digit
/// id, and room for auth key / node name. A message that does not fit is counted as oversize.
const HEP_OVERHEAD: usize = 117 + 6 + 6 + 40 + 256;

/// What became of a message handed to [`SipConn::trace`], when SIP tracing is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Traced {
    /// Handed to the trace id's destinations.
    Sent,
    /// Skipped by `sip_methods`.
    Filtered,
    /// Too large for one HEP packet: counted, not sent.
    TooLarge,
}

/// One connection's SIP tracing state, shared by both directions.
#[derive(Debug)]
pub struct SipConn<'a> {
    /// The listener's settings.
    settings: Arc<SipSettings>,
    /// The counters.
    stats: SipStats,
    /// The client's address.
    client: SocketAddr,
    /// Our listening address as the client sees it (the proxy, in Homer's call flow).
    listen: SocketAddr,
    /// The listener's protocol (`$proto` for `sip_trace_route`).
    proto: NetProto,
    /// TCP 6, TLS 22, WS/WSS 50.
    ip_proto: u8,
    /// The client leg's connection id, the `net` extra correlation.
    conn_id: u64,
    /// The last timestamp handed out (µs), shared by both directions so the whole connection's
    /// packets are strictly ordered.
    last: AtomicU64,
    /// The client leg, which tells of SIP that could not be traced whole (both directions
    /// share it, and the session gets it back for its CLOSED event).
    leg: &'a Mutex<Leg>,
}

impl<'a> SipConn<'a> {
    /// The state of one connection whose client leg is `leg` (id `conn_id`).
    pub fn new(
        settings: Arc<SipSettings>,
        stats: SipStats,
        proto: NetProto,
        (client, listen): (SocketAddr, SocketAddr),
        conn_id: u64,
        leg: &'a Mutex<Leg>,
    ) -> Self {
        Self {
            settings,
            stats,
            client,
            listen,
            proto,
            ip_proto: proto.ip_proto(),
            conn_id,
            last: AtomicU64::new(0),
            leg,
        }
    }

    /// A timestamp for bytes read at `micros`, strictly after every earlier one of this
    /// connection.
    fn stamp(&self, micros: u64) -> (u32, u32) {
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let t = micros.max(prev.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(prev, t, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return split(t),
                Err(p) => prev = p,
            }
        }
    }

    /// Traces one whole SIP message read at `read_at` (µs), if the tracer says so; `index`
    /// (the framer's) locates its Call-ID and CSeq, and without one (a WS frame) its headers are
    /// read only if it is traced. One too large for a HEP packet is reported lost, and its
    /// head traced.
    pub fn message(
        &self,
        tracer: &Tracer,
        dir: Direction,
        (msg, index): (Bytes, Option<HeadIndex>),
        read_at: u64,
    ) {
        self.stats.count(&msg);
        let traced = self.trace(tracer, dir, (&msg, index), read_at);
        if traced.is_none() {
            self.stats.switched_off.inc();
        }
        if traced == Some(Traced::TooLarge) {
            let head = read_head(&msg).ok().map(|h| msg.slice(..h.head_len));
            let bytes = msg.len() as u64;
            self.lost(
                tracer,
                dir,
                LostReason::TooLargeForHep,
                bytes,
                head,
                read_at,
            );
        }
    }

    /// SIP relayed `dir` that cannot be traced whole: `bytes` of it, for `reason`. Counted,
    /// told on the client leg (`SIP_FRAMING_LOST`), and its `head`, when one was read, traced
    /// as SIP so the message still shows in Homer.
    pub fn lost(
        &self,
        tracer: &Tracer,
        dir: Direction,
        reason: LostReason,
        bytes: u64,
        head: Option<Bytes>,
        read_at: u64,
    ) {
        self.stats.framing_lost.inc();
        self.leg
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sip_framing_lost(tracer, dir, reason, bytes);
        if let Some(head) = head {
            // A head too large for HEP is counted as oversize there; nothing more to say.
            let _ = self.trace(tracer, dir, (&head, None), read_at);
        }
    }

    /// Hands `msg` to the destinations that want it (None when nothing does); `index`, when the
    /// framer gave one, locates its Call-ID and CSeq, so neither the filters nor the packet walk
    /// its headers again.
    fn trace(
        &self,
        tracer: &Tracer,
        dir: Direction,
        (msg, index): (&Bytes, Option<HeadIndex>),
        read_at: u64,
    ) -> Option<Traced> {
        let settings = &*self.settings;
        let sip = SipMessage::indexed(msg, index);
        let ev = SipEvent {
            msg: sip,
            conn: ConnInfo {
                remote: self.client,
                local: self.listen,
                proto: self.proto,
            },
            trace_id: &settings.trace_id,
            methods: settings.methods.as_ref(),
            route: settings.route.as_ref(),
        };
        let traced = tracer.sip(&ev, || {
            // Read as the proxy reads it: disagreeing Content-Lengths still give a Call-ID.
            let call_id = sip.call_id();
            if msg.len() + call_id.map_or(0, str::len) + HEP_OVERHEAD > heptap_hep::MAX_PACKET_LEN {
                return Err(Traced::TooLarge);
            }
            let (sec, usec) = self.stamp(read_at);
            let (src, dst) = match dir {
                Direction::ClientToUpstream => (self.client, self.listen),
                Direction::UpstreamToClient => (self.listen, self.client),
            };
            let mut m = TraceMessage::new(proto_type::SIP, self.ip_proto, src, dst, sec, usec);
            m.correlation_id = call_id.map(|c| Cow::Owned(c.to_owned()));
            m.extra_correlation
                .push(("net".into(), Cow::Owned(self.conn_id.to_string())));
            if settings.json_payload {
                m.parts.push((
                    "payload".into(),
                    Cow::Owned(String::from_utf8_lossy(msg).into_owned()),
                ));
            } else {
                m.payload = Some(msg.clone());
            }
            Ok(Arc::new(m))
        });
        match traced {
            SipTraced::No => None,
            SipTraced::Filtered => {
                self.stats.filtered.inc();
                Some(Traced::Filtered)
            }
            SipTraced::Sent => {
                self.stats.traced.inc();
                Some(Traced::Sent)
            }
            SipTraced::Failed(why) => {
                self.stats.oversize.inc();
                Some(why)
            }
        }
    }

    /// A WS/WSS data frame: one message, unless it is a CRLF keep-alive.
    pub fn frame(&self, tracer: &Tracer, dir: Direction, msg: Bytes, read_at: u64) {
        if is_keepalive(&msg) {
            self.stats.keepalives.inc();
            return;
        }
        self.message(tracer, dir, (msg, None), read_at);
        // Counted once its tracing is decided, as the framer's counters are.
        self.stats.messages.inc();
    }
}

/// What the relay's pump calls with every chunk of bytes it read, before writing it on.
pub trait Observe {
    /// Bytes read at `read_at` (µs since the epoch); returns how many messages they completed,
    /// or lost parts they reported (each may have been traced).
    fn observe(&mut self, data: &[u8], read_at: u64) -> usize;
    /// Whether `observe` wants the read time (so the pump reads the clock only when needed).
    fn wants_time(&self) -> bool;
}

/// One direction of a TCP/TLS connection: frames SIP and traces each message.
#[derive(Debug)]
pub struct SipObserver<'a> {
    /// The connection.
    conn: &'a SipConn<'a>,
    /// Decides what is traced.
    tracer: &'a Tracer,
    /// Which way these bytes go.
    dir: Direction,
    /// This direction's framing state.
    framer: SipFramer,
}

impl<'a> SipObserver<'a> {
    /// The observer of one direction.
    pub fn new(conn: &'a SipConn<'a>, tracer: &'a Tracer, dir: Direction) -> Self {
        Self {
            conn,
            tracer,
            dir,
            framer: SipFramer::new(conn.settings.limits),
        }
    }
}

impl Observe for SipObserver<'_> {
    fn observe(&mut self, data: &[u8], read_at: u64) -> usize {
        if self.framer.is_stopped() {
            return 0;
        }
        let (conn, tracer, dir) = (self.conn, self.tracer, self.dir);
        let max = self.framer.limits().max_message_bytes;
        let mut messages = 0;
        self.framer.push_framed(data, |framed| {
            match framed {
                Framed::Message(msg, index) => {
                    conn.message(tracer, dir, (msg, Some(index)), read_at);
                }
                Framed::Oversize {
                    head,
                    content_length,
                } => {
                    let bytes = (head.len() as u64).saturating_add(content_length);
                    let reason = LostReason::TooLarge { max };
                    conn.lost(tracer, dir, reason, bytes, Some(head), read_at);
                }
                Framed::Lost {
                    reason,
                    bytes,
                    head,
                } => conn.lost(tracer, dir, reason, bytes, head, read_at),
            }
            messages += 1;
        });
        conn.stats.add(self.framer.take_counters());
        messages
    }

    fn wants_time(&self) -> bool {
        !self.framer.is_stopped()
    }
}

/// A listener that does not trace SIP looks at nothing.
impl Observe for Option<SipObserver<'_>> {
    fn observe(&mut self, data: &[u8], read_at: u64) -> usize {
        match self {
            Some(o) => o.observe(data, read_at),
            None => 0,
        }
    }

    fn wants_time(&self) -> bool {
        self.as_ref().is_some_and(Observe::wants_time)
    }
}
