//! Per event: what the trace says about a relayed connection. A [`Leg`] (the client's connection
//! to us, or ours to the upstream) builds the `net` (89) packets of spec/opensips-tracing.md
//! §2.2–§3.5 from the part builders here, asking the tracer whether each is traced.
//!
//! How a connection ends is one typed [`End`]: which [`Side`] it came from (as pingora's
//! `ErrorSource` says `Downstream`, `Upstream`, `Internal`) and what happened. Every CLOSED
//! event's `Message` is worked out from the ends in [`closed_message`], the one place that
//! knows OpenSIPS's texts for them.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use heptap_hep::{NetProto, Part, TraceMessage, proto_type};

use super::certs::CertNames;
use super::transparent::SourceError;
use super::transport::{ConnectTcpError, TlsInfo};
use super::upgrade::{BadRequest, BadUpstreamUpgrade, WsHeads};
use crate::clock::{FlowClock, now_micros};
use crate::sip::LostReason;
use crate::tracer::{LegVerdict, Tracer};

/// `Event` part values.
mod event {
    /// The client's connection was accepted (or its handshake failed).
    pub const ACCEPTED: &str = "ACCEPTED";
    /// An upstream connect has started.
    pub const CONNECT_START: &str = "CONNECT_START";
    /// The upstream connect (and its handshake) ended.
    pub const CONNECTED: &str = "CONNECTED";
    /// The leg is closed.
    pub const CLOSED: &str = "CLOSED";
    /// SIP went through but could not be traced whole (heptap's own event, no OpenSIPS one).
    pub const SIP_FRAMING_LOST: &str = "SIP_FRAMING_LOST";
}

/// `Status` part values.
mod status {
    /// It worked.
    pub const SUCCESS: &str = "SUCCESS";
    /// It did not.
    pub const FAILURE: &str = "FAILURE";
}

/// OpenSIPS's fixed `Message` texts (net/trans_trace.c).
mod message {
    /// CONNECT_START.
    pub const ASYNC_CONNECT_INIT: &str = "Async connect in progress...";
    /// CONNECTED, SUCCESS, after a CONNECT_START.
    pub const CONNECT_OK: &str = "Successfully connected...";
    /// CONNECTED, SUCCESS, when the connect completed within
    /// `tcp_async_local_connect_timeout` (no CONNECT_START before it).
    pub const ASYNC_CONNECT_OK: &str = "Successfully connected asynchronously...";
    /// ACCEPTED, SUCCESS.
    pub const ACCEPT_OK: &str = "Connection accepted...";
    /// ACCEPTED, FAILURE.
    pub const ACCEPT_FAIL: &str = "Failed to accept connection...";
    /// CONNECTED, FAILURE.
    pub const CONNECT_FAIL: &str = "Failed to connect...";
}

/// OpenSIPS's `tcp_async_local_connect_timeout` (100 ms): an upstream connect done within it is
/// traced as one CONNECTED ("Successfully connected asynchronously..."); one still pending then
/// gets a CONNECT_START, and "Successfully connected..." when it completes (proto_tcp.c
/// `proto_tcp_send`).
pub const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// `Ws-Request` and `Ws-Reply` are cut to this many bytes (OpenSIPS's `WS_TRACE_MAX`).
pub const TRACE_MAX: usize = 1024;

/// The prefix of an HTTP head that the trace carries.
fn trace_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(TRACE_MAX)]).into_owned()
}

/// Where something happened, or who did it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client's leg (pingora's `Downstream`).
    Client,
    /// The upstream's leg (`Upstream`).
    Upstream,
    /// heptap itself (`Internal`): it cut a direction, or it is stopping.
    Heptap,
}

/// Which way data goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the proxy.
    ClientToUpstream,
    /// From the proxy to the client.
    UpstreamToClient,
}

impl Direction {
    /// The leg it reads from: an EOF or a read error happened there.
    pub fn reader(self) -> Side {
        match self {
            Direction::ClientToUpstream => Side::Client,
            Direction::UpstreamToClient => Side::Upstream,
        }
    }

    /// The leg it writes to: a write error happened there.
    pub fn writer(self) -> Side {
        match self {
            Direction::ClientToUpstream => Side::Upstream,
            Direction::UpstreamToClient => Side::Client,
        }
    }
}

/// What ended a direction of a relay, or a connection before its relay started.
#[derive(Debug)]
pub struct End {
    /// Where it happened: the leg whose CLOSED event tells it.
    pub side: Side,
    /// What happened, with its cause.
    pub kind: EndKind,
}

/// What happened, with its cause.
#[derive(Debug)]
pub enum EndKind {
    /// EOF: TCP FIN, TLS close_notify, or a WebSocket connection dropped without a close (on
    /// TCP and TLS it was passed on as a half-close).
    Eof,
    /// Reading failed.
    Read(io::Error),
    /// Writing failed.
    Write(io::Error),
    /// Nothing moved either way for the idle timeout (told on the leg that noticed first).
    Idle,
    /// A WebSocket close frame (with its code) was read and relayed.
    CloseFrame(Option<u16>),
    /// A WebSocket message (or frame) over `max_message_bytes` was being read: this side was
    /// sent a close 1009.
    MessageTooBig {
        /// Its size as far as it was known (a frame's declared length, or the fragments so far).
        size: usize,
        /// The listener's `max_message_bytes`.
        max: usize,
    },
    /// A WebSocket message was still unfinished `message_timeout` after its first byte: this
    /// side was sent a close 1008.
    MessageTimeout(Duration),
    /// The client's TLS handshake or WebSocket upgrade did not finish in time.
    HandshakeTimeout(TimedOut),
    /// The client's TLS handshake failed.
    Tls(io::Error),
    /// The client's WebSocket upgrade request was refused (and answered with a 400).
    UpgradeRefused(BadRequest),
    /// The upstream leg could not be opened.
    Unreachable(Unreachable),
    /// heptap stopped this direction: the other one ended.
    Cut,
    /// heptap stopped this direction: it is shutting down.
    Shutdown,
}

impl End {
    /// `kind` on `side`.
    pub fn new(side: Side, kind: EndKind) -> Self {
        Self { side, kind }
    }

    /// A clean EOF: the other direction may go on (TCP's half-close).
    pub fn is_eof(&self) -> bool {
        matches!(self.kind, EndKind::Eof)
    }

    /// A relayed WebSocket close: the other direction gets a grace period to answer.
    pub fn is_close_frame(&self) -> bool {
        matches!(self.kind, EndKind::CloseFrame(_))
    }

    /// The WebSocket close (code and reason) heptap owes the side this happened on, when heptap
    /// ended the connection because of what that side sent: 1009 (too big) or 1008 (policy:
    /// too slow).
    pub fn close_owed(&self) -> Option<(u16, &'static str)> {
        match self.kind {
            EndKind::MessageTooBig { .. } => Some((1009, "Message too big")),
            EndKind::MessageTimeout(_) => Some((1008, "Message too slow")),
            _ => None,
        }
    }

    /// Whether this was the peer on `self.side` resetting or dropping its connection (which is
    /// passed on as a reset to the other peer).
    pub fn is_reset(&self) -> bool {
        matches!(&self.kind, EndKind::Read(e) if is_reset(e))
    }

    /// The CLOSED `Message` traced for the leg this happened on: a WebSocket close frame is
    /// "EOF received", as OpenSIPS's proto_ws traces it whatever the code; the log keeps the
    /// code ([`End::message`]).
    fn closed_text(&self) -> Cow<'static, str> {
        match self.kind {
            EndKind::CloseFrame(_) => "EOF received".into(),
            _ => self.message(),
        }
    }

    /// What happened, as the log says it.
    fn message(&self) -> Cow<'static, str> {
        match &self.kind {
            EndKind::Eof => "EOF received".into(),
            EndKind::Read(e) => format!("Read error: {e}").into(),
            EndKind::Write(e) => format!("Write error: {e}").into(),
            EndKind::Idle => "Timeout on no traffic".into(),
            EndKind::CloseFrame(Some(code)) => format!("Close frame received ({code})").into(),
            EndKind::CloseFrame(None) => "Close frame received".into(),
            EndKind::MessageTooBig { size, max } => format!(
                "Message too big: {size} bytes, max_message_bytes is {max} (closed with 1009)"
            )
            .into(),
            EndKind::MessageTimeout(after) => {
                format!("Message not complete within {after:?} (closed with 1008)").into()
            }
            EndKind::HandshakeTimeout(_) => "Handshake timeout".into(),
            EndKind::Tls(e) => format!("TLS handshake failed: {e}").into(),
            EndKind::UpgradeRefused(reason) => {
                format!("WebSocket upgrade refused: {reason}").into()
            }
            EndKind::Unreachable(e) => e.to_string().into(),
            EndKind::Cut => "Closed by heptap: the other direction ended".into(),
            EndKind::Shutdown => "Closed by heptap: shutting down".into(),
        }
    }
}

/// What a failed handshake event says after OpenSIPS's fixed text ([`End::detail`]).
enum Detail<'a> {
    /// A TLS handshake's error.
    Tls(&'a io::Error),
    /// Said as it is.
    Text(&'a dyn fmt::Display),
}

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detail::Tls(e) => write!(f, "TLS: {e}"),
            Detail::Text(text) => text.fmt(f),
        }
    }
}

impl End {
    /// What the failed handshake event (ACCEPTED, CONNECTED) of a connection that ended with
    /// this says after OpenSIPS's fixed text, if anything: a refused WebSocket upgrade shows
    /// its heads instead, a failed TCP connect nothing more.
    fn detail(&self) -> Option<Detail<'_>> {
        match &self.kind {
            EndKind::Tls(e) => Some(Detail::Tls(e)),
            EndKind::HandshakeTimeout(t) => Some(Detail::Text(t)),
            EndKind::Read(e) => Some(Detail::Text(e)),
            EndKind::Unreachable(
                e @ (Unreachable::ProxyHeader(_)
                | Unreachable::Source(_)
                | Unreachable::Tls(_)
                | Unreachable::HandshakeTimeout(_)),
            ) => Some(Detail::Text(e)),
            _ => None,
        }
    }
}

/// For the logs: what happened, and its cause.
impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// Whether an I/O error is the peer resetting or dropping the connection.
fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// A handshake that did not finish in time, as OpenSIPS-shaped messages say it.
#[derive(Clone, Copy, Debug)]
pub struct TimedOut(pub Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "handshake timed out after {:?}", self.0)
    }
}

/// Why the upstream leg could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    /// The upstream's name did not resolve.
    #[error("cannot resolve {upstream}: {source}")]
    Resolve {
        /// The upstream as configured.
        upstream: String,
        /// The resolver's reason.
        source: io::Error,
    },
    /// The upstream's name resolved to nothing.
    #[error("{upstream} resolved to no address")]
    NoAddress {
        /// The upstream as configured.
        upstream: String,
    },
    /// No address of the upstream took the connection (the last one's reason).
    #[error("{0}")]
    Connect(#[from] ConnectTcpError),
    /// The client's address could not be the source (`upstream_source = "client"`, with
    /// `upstream_source_fallback = "refuse"`).
    #[error("upstream_source = \"client\": {0}")]
    Source(SourceError),
    /// The PROXY protocol header could not be written.
    #[error("PROXY header: {0}")]
    ProxyHeader(io::Error),
    /// The TLS handshake with the upstream failed.
    #[error("TLS: {}", crate::tls::explain(.0))]
    Tls(io::Error),
    /// The PROXY header or the TLS handshake did not finish within the connect timeout.
    #[error("{0}")]
    HandshakeTimeout(TimedOut),
    /// The upstream refused the WebSocket upgrade, or its reply was not one.
    #[error("WebSocket upgrade failed: {0}")]
    Upgrade(BadUpstreamUpgrade),
    /// The upstream's upgrade reply did not come within the connect timeout.
    #[error("WebSocket upgrade failed: {0}")]
    UpgradeTimeout(TimedOut),
}

/// How both directions of a relay ended.
#[derive(Debug)]
pub struct Ends {
    /// Client -> upstream.
    pub to_upstream: End,
    /// Upstream -> client.
    pub to_client: End,
}

impl Ends {
    /// Both, client -> upstream first (the order [`closed_message`] reads them in).
    pub fn both(&self) -> [&End; 2] {
        [&self.to_upstream, &self.to_client]
    }

    /// The peer that should see a reset: the other side of a peer that reset its connection, so
    /// each peer sees what it would have seen without heptap in the middle. An upstream's reset
    /// is looked at first.
    pub fn reset_to_pass(&self) -> Option<Side> {
        [&self.to_client, &self.to_upstream]
            .into_iter()
            .find(|end| end.is_reset())
            .and_then(|end| match end.side {
                Side::Upstream => Some(Side::Client),
                Side::Client => Some(Side::Upstream),
                Side::Heptap => None,
            })
    }
}

/// The `Message` of `leg`'s CLOSED event when the connection ended with `ends` (in a relay, the
/// client -> upstream direction first): the first end on that leg says what ended it. A leg
/// with no end of its own was closed by heptap, because the other leg ended or (for the client
/// leg) the upstream could not be reached.
pub fn closed_message<'e>(leg: Side, ends: impl IntoIterator<Item = &'e End>) -> Cow<'static, str> {
    let mut unreachable = false;
    for end in ends {
        if end.side == leg {
            return end.closed_text();
        }
        unreachable |= matches!(end.kind, EndKind::Unreachable(_));
    }
    match leg {
        Side::Client if unreachable => "Upstream connect failed".into(),
        Side::Client => "Closed by heptap: the upstream leg ended".into(),
        Side::Upstream | Side::Heptap => "Closed by heptap: the client leg ended".into(),
    }
}

/// `Event`, `Status`, `Message` (left out when empty).
fn plain_parts(parts: &mut Vec<Part>, ev: &'static str, st: &'static str, msg: Cow<'static, str>) {
    parts.push(("Event".into(), ev.into()));
    parts.push(("Status".into(), st.into()));
    if !msg.is_empty() {
        parts.push(("Message".into(), msg));
    }
}

/// The parts of a WebSocket handshake event, in OpenSIPS's order: `Event`, `Ws-Request`,
/// `Status`, `Ws-Reply`, `Message` (a head with no bytes is left out).
fn ws_parts(
    parts: &mut Vec<Part>,
    ev: &'static str,
    heads: WsHeads<'_>,
    st: &'static str,
    msg: Cow<'static, str>,
) {
    parts.push(("Event".into(), ev.into()));
    if !heads.request.is_empty() {
        parts.push(("Ws-Request".into(), trace_text(heads.request).into()));
    }
    parts.push(("Status".into(), st.into()));
    if let Some(reply) = heads.reply.filter(|r| !r.is_empty()) {
        parts.push(("Ws-Reply".into(), trace_text(reply).into()));
    }
    parts.push(("Message".into(), msg));
}

/// The TLS parts in OpenSIPS's order: `client-subject`, `client-issuer` (the peer),
/// `server-subject`, `server-issuer` (ours), then the secrets: `master-key` (TLS 1.2: the
/// master secret in hex) and `keylog` (NSS key-log lines, TLS 1.2 and 1.3, so Wireshark can
/// decrypt a capture).
fn tls_parts(parts: &mut Vec<Part>, tls: &TlsInfo) {
    if let Some(names) = tls.peer.as_ref().and_then(|c| CertNames::of(c)) {
        parts.push(("client-subject".into(), names.subject.into()));
        parts.push(("client-issuer".into(), names.issuer.into()));
    }
    if let Some(own) = &tls.own {
        parts.push(("server-subject".into(), own.subject.clone().into()));
        parts.push(("server-issuer".into(), own.issuer.clone().into()));
    }
    if tls.secrets.is_empty() {
        return;
    }
    if let Some(master) = tls.secrets.iter().find(|l| l.label == "CLIENT_RANDOM") {
        parts.push(("master-key".into(), hex(&master.secret).into()));
    }
    let mut keylog = String::new();
    for (i, l) in tls.secrets.iter().enumerate() {
        if i > 0 {
            keylog.push('\n');
        }
        keylog.push_str(&l.label);
        keylog.push(' ');
        keylog.push_str(&hex(&l.client_random));
        keylog.push(' ');
        keylog.push_str(&hex(&l.secret));
    }
    parts.push((Cow::Borrowed("keylog"), keylog.into()));
}

/// Lower-case hex, as key-log files and OpenSIPS's `master-key` print secrets.
fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xF)]));
    }
    s
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
    /// The upstream connect completed within [`LOCAL_CONNECT_TIMEOUT`]: no CONNECT_START came
    /// before CONNECTED, which says "Successfully connected asynchronously..." on a TCP leg.
    pub connected_at_once: bool,
    /// The filter route's answer for this leg, once it has run.
    verdict: LegVerdict,
    /// Keeps this leg's timestamps strictly increasing.
    clock: FlowClock,
}

impl Leg {
    /// A leg with a fresh id; an upstream leg names its client leg's id in `peer_id`.
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
            connected_at_once: false,
            verdict: LegVerdict::Undecided,
            clock: FlowClock::new(),
        }
    }

    /// Which leg this is.
    pub fn side(&self) -> Side {
        match self.peer_id {
            Some(_) => Side::Upstream,
            None => Side::Client,
        }
    }

    /// Traces one event whose parts after `Protocol` are written by `parts`, if the tracer says
    /// so ([`Tracer::net`]); `parts` runs only then, so certificate names and handshake texts
    /// cost nothing otherwise. Never blocks.
    fn trace_with(&mut self, tracer: &Tracer, parts: impl FnOnce(&mut Vec<Part>)) {
        // The filter route's view of the leg.
        let view = heptap_filters::ConnInfo {
            remote: self.remote,
            local: self.local,
            proto: self.proto,
        };
        tracer.net(self.proto, &mut self.verdict, &view, |destination| {
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
            destination.offer(&Arc::new(m));
        });
    }

    /// Traces CONNECT_START: a connect to `remote` has started.
    pub fn connect_start(&mut self, tracer: &Tracer) {
        self.trace_with(tracer, |parts| {
            let msg = message::ASYNC_CONNECT_INIT.into();
            plain_parts(parts, event::CONNECT_START, status::SUCCESS, msg);
        });
    }

    /// Traces this leg's handshake event as a success: ACCEPTED on the client leg, CONNECTED on
    /// the upstream leg.
    pub fn handshake_done(
        &mut self,
        tracer: &Tracer,
        tls: Option<&TlsInfo>,
        ws: Option<WsHeads<'_>>,
    ) {
        let (_, ok, _) = self.handshake_texts();
        self.handshake(tracer, status::SUCCESS, || ok.into(), tls, ws);
    }

    /// Traces this leg's handshake event as a failure that ended the connection with `end`
    /// (the detail after OpenSIPS's fixed text comes from it).
    pub fn handshake_failed(
        &mut self,
        tracer: &Tracer,
        end: &End,
        tls: Option<&TlsInfo>,
        ws: Option<WsHeads<'_>>,
    ) {
        let (_, _, failed) = self.handshake_texts();
        let msg = || match end.detail() {
            Some(detail) => format!("{failed} {detail}").into(),
            None => failed.into(),
        };
        self.handshake(tracer, status::FAILURE, msg, tls, ws);
    }

    /// `Event`, and the `Message` of a success and of a failure, of this leg's handshake event.
    fn handshake_texts(&self) -> (&'static str, &'static str, &'static str) {
        match self.side() {
            // proto_tcp's text for a connect done at once; proto_tls and proto_ws say
            // "Successfully connected..." after their handshakes whatever the TCP connect did.
            Side::Upstream if self.connected_at_once && self.proto == NetProto::Tcp => (
                event::CONNECTED,
                message::ASYNC_CONNECT_OK,
                message::CONNECT_FAIL,
            ),
            Side::Upstream => (event::CONNECTED, message::CONNECT_OK, message::CONNECT_FAIL),
            Side::Client | Side::Heptap => {
                (event::ACCEPTED, message::ACCEPT_OK, message::ACCEPT_FAIL)
            }
        }
    }

    /// A handshake event: the TLS parts when the leg speaks TLS, then the WebSocket heads when
    /// it upgrades (OpenSIPS puts both in one event on WSS).
    fn handshake(
        &mut self,
        tracer: &Tracer,
        st: &'static str,
        msg: impl FnOnce() -> Cow<'static, str>,
        tls: Option<&TlsInfo>,
        ws: Option<WsHeads<'_>>,
    ) {
        let (ev, _, _) = self.handshake_texts();
        self.trace_with(tracer, |parts| {
            if let Some(tls) = tls {
                tls_parts(parts, tls);
            }
            match ws {
                Some(heads) => ws_parts(parts, ev, heads, st, msg()),
                None => plain_parts(parts, ev, st, msg()),
            }
        });
    }

    /// Traces this leg's CLOSED event, saying what ended it ([`closed_message`]).
    pub fn closed<'e>(&mut self, tracer: &Tracer, ends: impl IntoIterator<Item = &'e End>) {
        let side = self.side();
        self.trace_with(tracer, |parts| {
            let msg = closed_message(side, ends);
            plain_parts(parts, event::CLOSED, status::SUCCESS, msg);
        });
    }

    /// Traces SIP_FRAMING_LOST: `bytes` of SIP relayed `dir` could not be traced whole, for
    /// `reason`. Always on the client leg, which the connection's SIP belongs to.
    pub fn sip_framing_lost(
        &mut self,
        tracer: &Tracer,
        dir: Direction,
        reason: LostReason,
        bytes: u64,
    ) {
        self.trace_with(tracer, |parts| {
            let from = match dir.reader() {
                Side::Upstream => "the upstream",
                Side::Client | Side::Heptap => "the client",
            };
            let msg = format!("from {from}: {reason}; {bytes} bytes");
            plain_parts(parts, event::SIP_FRAMING_LOST, status::FAILURE, msg.into());
        });
    }

    /// Whether this leg's TLS handshake should keep the session secrets
    /// ([`Tracer::wants_secrets`]).
    pub fn wants_secrets(&self, tracer: &Tracer) -> bool {
        tracer.wants_secrets(self.proto, self.verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tap::transport::KeyLine;

    fn end(side: Side, kind: EndKind) -> End {
        End::new(side, kind)
    }

    fn reset() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionReset, "reset")
    }

    #[test]
    fn each_leg_tells_its_own_end_and_the_client_direction_comes_first() {
        let ends = Ends {
            to_upstream: end(Side::Upstream, EndKind::Write(reset())),
            to_client: end(Side::Upstream, EndKind::Read(reset())),
        };
        assert_eq!(
            closed_message(Side::Upstream, ends.both()),
            "Write error: reset"
        );
        assert_eq!(
            closed_message(Side::Client, ends.both()),
            "Closed by heptap: the upstream leg ended"
        );
        assert_eq!(ends.reset_to_pass(), Some(Side::Client));
        let half_closed = Ends {
            to_upstream: end(Side::Client, EndKind::Eof),
            to_client: end(Side::Upstream, EndKind::Eof),
        };
        assert_eq!(
            closed_message(Side::Client, half_closed.both()),
            "EOF received"
        );
        assert_eq!(
            closed_message(Side::Upstream, half_closed.both()),
            "EOF received"
        );
        assert_eq!(half_closed.reset_to_pass(), None);
    }

    #[test]
    fn a_leg_cut_by_heptap_says_which_leg_ended() {
        let ends = Ends {
            to_upstream: end(Side::Client, EndKind::CloseFrame(Some(1000))),
            to_client: end(Side::Heptap, EndKind::Cut),
        };
        // Traced as OpenSIPS does; the log keeps the code.
        assert_eq!(closed_message(Side::Client, ends.both()), "EOF received");
        assert_eq!(ends.to_upstream.to_string(), "Close frame received (1000)");
        assert_eq!(
            closed_message(Side::Upstream, ends.both()),
            "Closed by heptap: the client leg ended"
        );
        let stopped = [end(Side::Heptap, EndKind::Shutdown)];
        assert_eq!(
            closed_message(Side::Client, &stopped),
            "Closed by heptap: the upstream leg ended"
        );
    }

    #[test]
    fn handshake_and_connect_failures_have_opensips_closed_texts() {
        let client = |kind| closed_message(Side::Client, &[end(Side::Client, kind)]);
        let timed_out = TimedOut(Duration::from_millis(300));
        assert_eq!(
            client(EndKind::HandshakeTimeout(timed_out)),
            "Handshake timeout"
        );
        assert_eq!(
            client(EndKind::UpgradeRefused(BadRequest::NoUpgrade)),
            "WebSocket upgrade refused: no Upgrade: websocket"
        );
        assert_eq!(client(EndKind::Idle), "Timeout on no traffic");
        assert_eq!(client(EndKind::CloseFrame(None)), "EOF received");
        assert_eq!(
            client(EndKind::MessageTooBig {
                size: 70_000,
                max: 65_535
            }),
            "Message too big: 70000 bytes, max_message_bytes is 65535 (closed with 1009)"
        );
        assert_eq!(
            client(EndKind::MessageTimeout(Duration::from_secs(10))),
            "Message not complete within 10s (closed with 1008)"
        );
        let unreachable = end(
            Side::Upstream,
            EndKind::Unreachable(Unreachable::NoAddress {
                upstream: "proxy:5060".into(),
            }),
        );
        assert_eq!(
            closed_message(Side::Client, [&unreachable]),
            "Upstream connect failed"
        );
        assert_eq!(unreachable.to_string(), "proxy:5060 resolved to no address");
    }

    #[test]
    fn a_failed_handshake_event_says_why_after_opensips_text_where_opensips_does() {
        let detail = |side, kind| End::new(side, kind).detail().map(|d| d.to_string());
        let io = || io::Error::other("boom");
        assert_eq!(
            detail(Side::Client, EndKind::Tls(io())).as_deref(),
            Some("TLS: boom")
        );
        assert_eq!(
            detail(
                Side::Client,
                EndKind::HandshakeTimeout(TimedOut(Duration::from_secs(5)))
            )
            .as_deref(),
            Some("handshake timed out after 5s")
        );
        assert_eq!(
            detail(Side::Client, EndKind::Read(io())).as_deref(),
            Some("boom")
        );
        assert_eq!(
            detail(Side::Client, EndKind::UpgradeRefused(BadRequest::NoKey)),
            None
        );
        let unreachable = |e| detail(Side::Upstream, EndKind::Unreachable(e));
        assert_eq!(
            unreachable(Unreachable::ProxyHeader(io())).as_deref(),
            Some("PROXY header: boom")
        );
        assert_eq!(
            unreachable(Unreachable::Tls(io())).as_deref(),
            Some("TLS: boom")
        );
        assert_eq!(
            unreachable(Unreachable::Upgrade(BadUpstreamUpgrade::Refused {
                code: 404,
                reason: "Not Found".into()
            })),
            None
        );
        assert_eq!(
            unreachable(Unreachable::UpgradeTimeout(TimedOut(Duration::from_secs(
                5
            )))),
            None
        );
        let refused = ConnectTcpError::Failed {
            addr: SocketAddr::from(([127, 0, 0, 1], 5060)),
            source: io(),
        };
        assert_eq!(unreachable(Unreachable::Connect(refused)), None);
    }

    #[test]
    fn secrets_become_a_hex_master_key_and_nss_key_log_lines() {
        let info = TlsInfo {
            secrets: vec![KeyLine {
                label: "CLIENT_RANDOM".into(),
                client_random: vec![0xAB; 2],
                secret: vec![0x01, 0xFF],
            }],
            ..TlsInfo::default()
        };
        let mut parts = Vec::new();
        tls_parts(&mut parts, &info);
        assert_eq!(
            parts,
            vec![
                (Cow::from("master-key"), Cow::from("01ff")),
                (Cow::from("keylog"), Cow::from("CLIENT_RANDOM abab 01ff")),
            ]
        );
    }

    #[test]
    fn tls13_secrets_have_no_master_key_only_key_log_lines() {
        let line = |label: &str| KeyLine {
            label: label.into(),
            client_random: vec![1],
            secret: vec![2],
        };
        let info = TlsInfo {
            secrets: vec![
                line("CLIENT_HANDSHAKE_TRAFFIC_SECRET"),
                line("SERVER_TRAFFIC_SECRET_0"),
            ],
            ..TlsInfo::default()
        };
        let mut parts = Vec::new();
        tls_parts(&mut parts, &info);
        assert_eq!(
            parts,
            vec![(
                Cow::from("keylog"),
                Cow::from("CLIENT_HANDSHAKE_TRAFFIC_SECRET 01 02\nSERVER_TRAFFIC_SECRET_0 01 02")
            )]
        );
    }

    #[test]
    fn trace_text_is_capped_at_1024_bytes() {
        assert_eq!(trace_text(&[b'x'; 2000]).len(), 1024);
    }
}
