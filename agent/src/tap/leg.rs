//! One leg of a relayed connection as the tracer sees it: its id, its addresses, and whether its
//! filter route has let it be traced. Builds the `net` (89) packets of spec/opensips-tracing.md
//! §2.2–§3.5.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use heptap_hep::{NetProto, Part, TraceMessage, proto_type};

use crate::clock::{FlowClock, now_micros};
use crate::tracer::Tracer;

/// `Event` part values.
pub mod event {
    /// The client's connection was accepted (or its handshake failed).
    pub const ACCEPTED: &str = "ACCEPTED";
    /// An upstream connect has started.
    pub const CONNECT_START: &str = "CONNECT_START";
    /// The upstream connect (and its handshake) ended.
    pub const CONNECTED: &str = "CONNECTED";
    /// The leg is closed.
    pub const CLOSED: &str = "CLOSED";
}

/// `Status` part values.
pub mod status {
    /// It worked.
    pub const SUCCESS: &str = "SUCCESS";
    /// It did not.
    pub const FAILURE: &str = "FAILURE";
}

/// OpenSIPS's fixed `Message` texts (net/trans_trace.c).
pub mod message {
    /// CONNECT_START.
    pub const ASYNC_CONNECT_INIT: &str = "Async connect in progress...";
    /// CONNECTED, SUCCESS.
    pub const CONNECT_OK: &str = "Successfully connected...";
    /// ACCEPTED, SUCCESS.
    pub const ACCEPT_OK: &str = "Connection accepted...";
    /// ACCEPTED, FAILURE.
    pub const ACCEPT_FAIL: &str = "Failed to accept connection...";
    /// CONNECTED, FAILURE.
    pub const CONNECT_FAIL: &str = "Failed to connect...";
}

/// Whether this leg's events are traced, decided once at its first traced event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// No event has been traced yet (tracing was off, or nothing happened).
    Undecided,
    /// The filter route let it through (or there is none).
    Traced,
    /// The filter route ended in `drop`: nothing of this leg is ever traced.
    Dropped,
}

/// One leg: the client's connection to us, or ours to the upstream.
#[derive(Debug)]
pub struct Leg {
    /// The protocol of this leg.
    pub proto: NetProto,
    /// The connection id, printed in decimal into chunk 0x0011 (only when an event is traced).
    pub id: u64,
    /// The peer's address (`src` of the packets, `$si`/`$sp` in the filter).
    pub remote: SocketAddr,
    /// Our address on this leg (`dst`, `$Ri`/`$Rp`).
    pub local: SocketAddr,
    /// The client leg's id, for an upstream leg: the `{"net": id}` extra correlation that lets a
    /// capture node join both legs.
    pub peer_id: Option<u64>,
    /// The filter's decision.
    verdict: Verdict,
    /// Keeps this leg's timestamps strictly increasing.
    clock: FlowClock,
}

/// The filter route's view of a leg.
struct Inspected<'a>(&'a Leg);

impl heptap_filters::Inspect for Inspected<'_> {
    fn remote(&self) -> SocketAddr {
        self.0.remote
    }
    fn local(&self) -> SocketAddr {
        self.0.local
    }
    fn proto(&self) -> NetProto {
        self.0.proto
    }
}

impl Leg {
    /// A leg with a fresh id.
    pub fn new(
        proto: NetProto,
        id: u64,
        remote: SocketAddr,
        local: SocketAddr,
        peer_id: Option<u64>,
    ) -> Self {
        Self {
            proto,
            id,
            remote,
            local,
            peer_id,
            verdict: Verdict::Undecided,
            clock: FlowClock::new(),
        }
    }

    /// Traces one event of this leg, if the protocol's switch is on, it has a destination, and
    /// the filter route (run now if this is the leg's first traced event) did not drop it.
    /// `extra` parts go between `Protocol` and `Event` (the TLS certificate fields) or after
    /// `Message` (`trailer`). Never blocks.
    pub fn trace(
        &mut self,
        tracer: &Tracer,
        ev: &'static str,
        st: &'static str,
        msg: Cow<'static, str>,
        extra: Vec<Part>,
        trailer: Vec<Part>,
    ) {
        self.trace_with(tracer, |parts| {
            parts.extend(extra);
            parts.push(("Event".into(), ev.into()));
            parts.push(("Status".into(), st.into()));
            if !msg.is_empty() {
                parts.push(("Message".into(), msg));
            }
            parts.extend(trailer);
        });
    }

    /// Traces one event whose parts after `Protocol` are written by `parts`, which runs only
    /// when the event is traced (so certificate names and handshake texts cost nothing
    /// otherwise). For events whose parts interleave, like the WebSocket handshake's `Event`,
    /// `Ws-Request`, `Status`, `Ws-Reply`, `Message`. Never blocks.
    pub fn trace_with(&mut self, tracer: &Tracer, parts: impl FnOnce(&mut Vec<Part>)) {
        let pipeline = tracer.load();
        let net = pipeline.net(self.proto);
        if !net.on.is_on() || self.verdict == Verdict::Dropped {
            return;
        }
        let Some(dest) = &net.destination else {
            return;
        };
        if self.verdict == Verdict::Undecided {
            self.verdict = match &net.filter {
                Some(route) => match route.eval(&Inspected(self)) {
                    heptap_filters::Verdict::Drop => Verdict::Dropped,
                    heptap_filters::Verdict::Trace => Verdict::Traced,
                },
                None => Verdict::Traced,
            };
            if self.verdict == Verdict::Dropped {
                return;
            }
        }
        let (sec, usec) = self.clock.stamp(now_micros());
        let mut m = TraceMessage::new(
            proto_type::NET,
            self.proto.ip_proto(),
            self.remote,
            self.local,
            sec,
            usec,
        );
        m.correlation_id = Some(Cow::Owned(self.id.to_string()));
        m.parts.reserve(8);
        m.parts.push(("Protocol".into(), self.proto.label().into()));
        parts(&mut m.parts);
        if let Some(peer) = self.peer_id {
            m.extra_correlation
                .push(("net".into(), Cow::Owned(peer.to_string())));
        }
        dest.offer(&Arc::new(m));
    }

    /// Whether this leg's handshake should keep the TLS session secrets: `trace_master_key` is
    /// set for its protocol and its events are traced (as far as can be known before the
    /// handshake; the filter route may still drop the leg).
    pub fn wants_secrets(&self, tracer: &Tracer) -> bool {
        let pipeline = tracer.load();
        let net = pipeline.net(self.proto);
        net.master_key
            && net.on.is_on()
            && net.destination.is_some()
            && self.verdict != Verdict::Dropped
    }

    /// [`Leg::trace`] with no extra parts.
    pub fn event(
        &mut self,
        tracer: &Tracer,
        ev: &'static str,
        st: &'static str,
        msg: impl Into<Cow<'static, str>>,
    ) {
        self.trace(tracer, ev, st, msg.into(), Vec::new(), Vec::new());
    }
}
