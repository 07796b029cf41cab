//! Per connection: a [`Session`] takes one accepted client connection through its life, in the
//! order this file reads:
//!
//! 1. the client's handshake (TLS, WebSocket upgrade, both, or none) under `handshake_timeout`,
//!    with its one ACCEPTED event;
//! 2. the upstream opened (CONNECT_START; TCP, the PROXY header, TLS, the WebSocket upgrade)
//!    under `connect_timeout`, with its one CONNECTED event;
//! 3. the relay both ways ([`relay_bytes`] or [`relay_messages`]) until the legs are done;
//! 4. a CLOSED event for each leg, saying what ended it.
//!
//! A failure at any step is an [`End`] on the side it happened on; it ends the session there.

use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use heptap_config::{UpstreamSource, UpstreamSourceFallback};
use heptap_mi::{ConnLeg, ConnState};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_util::sync::CancellationToken;

use super::events::{
    Direction, End, EndKind, Ends, LOCAL_CONNECT_TIMEOUT, Leg, Side, TimedOut, Unreachable,
};
use super::proxy_protocol;
use super::pump::{Idle, Tally};
use super::relay::{Relay, relay_bytes, relay_messages};
use super::sip::{Observe as _, SipConn, SipObserver};
use super::spec::{Active, ListenerStats, Tap, TapContext};
use super::transparent;
use super::transport::{Stream, TlsInfo, connect_tcp, tcp_socket_for};
use super::upgrade::{self, AcceptError, Connected, Upgrade, UpgradeRequest, WsHeads};
use super::ws_relay::{MessageLimits, websocket};
use crate::clock::now_micros;
use crate::stats::Counter;

/// One client connection, from its accept to its close.
#[derive(Debug)]
pub struct Session<'a> {
    /// The listener it came in on.
    pub tap: &'a Tap,
    /// The tracer, connection ids, statistics.
    pub ctx: &'a TapContext,
    /// The listener's counters.
    pub stats: &'a ListenerStats,
    /// Cancelled when heptap stops: the session ends where it is.
    pub kill: CancellationToken,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address as the client reached it.
    pub local: SocketAddr,
}

/// The client leg after its handshake.
struct Accepted {
    /// The connection, TLS terminated if it was TLS.
    stream: Stream,
    /// The WebSocket upgrade, on ws/wss listeners.
    upgrade: Option<Upgrade>,
}

/// The upstream leg after its handshakes.
struct Opened {
    /// The connection, TLS originated if the upstream speaks TLS.
    stream: Stream,
    /// The WebSocket upgrade, toward ws/wss upstreams.
    upgrade: Option<Connected>,
}

impl Session<'_> {
    /// Relays the connection `tcp` and traces both legs.
    pub async fn run(mut self, mut tcp: TcpStream) {
        let _ = tcp.set_nodelay(true);
        // 0. A load balancer's PROXY header: the client and the address it reached are in it.
        let header = if self.tap.spec.accept_proxy_protocol {
            let read = {
                let reading = pin!(self.read_proxy_header(&mut tcp));
                self.or_stop(reading).await
            };
            match read {
                None => return,
                Some(Ok(addrs)) => {
                    if let Some((peer, local)) = addrs {
                        self.peer = peer;
                        self.local = local;
                    }
                    Ok(())
                }
                Some(Err(kind)) => Err(kind),
            }
        } else {
            Ok(())
        };
        let tracer = &self.ctx.tracer;
        let spec = &self.tap.spec;
        let mut client_leg = Leg::new(
            spec.proto,
            self.ctx.ids.next_id(),
            self.peer,
            self.local,
            None,
        );
        // Listed by `list_tcp_conns` while this runs; counted among the open legs.
        let client = ConnLeg {
            conn_id: client_leg.id,
            proto: spec.proto,
            remote: self.peer,
            local: self.local,
        };
        let live = self
            .ctx
            .conns
            .register(&spec.name, client, spec.idle_timeout.map(Idle::new));
        let tcp_stats = &self.stats.tcp;
        tcp_stats.passive_open.inc();
        let _client_open = Active::new(&tcp_stats.current_opened_connections);
        if let Err(kind) = header {
            let end = End::new(Side::Client, kind);
            tracing::debug!(client.addr = %self.peer, conn.id = %client_leg.id, error = %end, "Client PROXY header refused");
            client_leg.handshake_failed(tracer, &end, None, None);
            return self.end_early(&self.stats.handshake_failed, &mut client_leg, &end);
        }

        // 1. The client's handshake.
        let accepted = {
            let accepting = pin!(self.accept_client(tcp, &mut client_leg));
            self.or_stop(accepting).await
        };
        let accepted = match accepted {
            None => return,
            Some(Ok(a)) => a,
            Some(Err(end)) => {
                tracing::debug!(client.addr = %self.peer, conn.id = %client_leg.id, error = %end, "Client handshake failed");
                return self.end_early(&self.stats.handshake_failed, &mut client_leg, &end);
            }
        };
        tracing::debug!(client.addr = %self.peer, conn.id = %client_leg.id, "Connection accepted");

        // 2. The upstream leg.
        live.conn.set_state(ConnState::Connecting);
        let opening = {
            let upstream = pin!(self.open_upstream(&client_leg, accepted.upgrade.as_ref()));
            self.or_stop(upstream).await
        };
        let (mut upstream_leg, opened) = match opening {
            None => return,
            Some((leg, Ok(opened))) => (leg, opened),
            Some((_, Err(end))) => {
                tcp_stats.connect_failed.inc();
                let flood = &self.stats.upstream_failures;
                match flood.hit() {
                    Some(1) => {
                        tracing::warn!(client.addr = %self.peer, server.addr = %spec.upstream, error = %end,
                            "Upstream connect failed");
                    }
                    Some(n) => {
                        let secs = flood.interval().as_secs();
                        tracing::warn!(client.addr = %self.peer, server.addr = %spec.upstream, error = %end,
                            connections = n, "Upstream connect failed for {n} connections in the last {secs} s or more");
                    }
                    None => {
                        tracing::debug!(client.addr = %self.peer, server.addr = %spec.upstream, error = %end,
                            "Upstream connect failed");
                    }
                }
                let mut accepted = accepted;
                if accepted.upgrade.is_none() {
                    client_leg = self.trace_unrelayed(&mut accepted.stream, client_leg).await;
                }
                self.end_early(&self.stats.upstream_connect_failed, &mut client_leg, &end);
                return refuse_client(accepted, spec.message_limits()).await;
            }
        };
        // Listed with both legs from here; both counted open.
        tcp_stats.active_open.inc();
        let _upstream_open = Active::new(&tcp_stats.current_opened_connections);
        live.conn.set_upstream(ConnLeg {
            conn_id: upstream_leg.id,
            proto: upstream_leg.proto,
            remote: upstream_leg.remote,
            local: upstream_leg.local,
        });
        live.conn.set_state(ConnState::Relaying);

        // 3. The relay, until both legs are done: messages when both legs upgraded to
        // WebSocket, bytes otherwise. The client leg is shared meanwhile: SIP that cannot be
        // traced whole is told on it, from either direction. (Written here rather than in a
        // function of its own: an async fn keeps its arguments for its whole life, and the legs
        // moved into one would be held twice by every connection's task.)
        let client_id = client_leg.id;
        let shared_leg = Mutex::new(client_leg);
        let sip = spec.sip.as_ref().map(|settings| {
            SipConn::new(
                settings.clone(),
                self.stats.sip.clone(),
                spec.proto,
                (self.peer, self.local),
                client_id,
                &shared_leg,
            )
        });
        // The idle clock starts with the relay, not with the handshakes.
        let idle = live.conn.idle.as_ref();
        if let Some(idle) = idle {
            idle.touch();
        }
        let r = Relay {
            tracer,
            sip: sip.as_ref(),
            bytes_in: Tally {
                total: &self.stats.bytes_in,
                conn: &live.conn.bytes_in,
            },
            bytes_out: Tally {
                total: &self.stats.bytes_out,
                conn: &live.conn.bytes_out,
            },
            idle,
            kill: &self.kill,
        };
        let ends = match (accepted.upgrade, opened.upgrade) {
            (Some(client), Some(upstream)) => {
                let limits = spec.message_limits();
                let client =
                    websocket(accepted.stream, client.leftover, Role::Server, limits).await;
                let upstream =
                    websocket(opened.stream, upstream.leftover, Role::Client, limits).await;
                relay_messages(client, upstream, &r).await
            }
            _ => relay_bytes(accepted.stream, opened.stream, &r).await,
        };
        drop(sip);
        let mut client_leg = shared_leg
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        self.count_ends(&ends);

        // 4. Each leg's CLOSED event.
        upstream_leg.closed(tracer, ends.both());
        client_leg.closed(tracer, ends.both());
        tracing::debug!(client.addr = %self.peer, conn.id = %client_leg.id, "Connection closed");
    }

    /// The upstream could not be reached: what the client sent meanwhile (a REGISTER, an
    /// INVITE: what an operator looks for when the proxy is down) is traced as SIP, correlated
    /// with the connection, as if relayed. At most one message's worth (`max_message_bytes`),
    /// waited for [`UNRELAYED_WAIT`] at most; nothing is written back.
    async fn trace_unrelayed(&self, stream: &mut Stream, leg: Leg) -> Leg {
        use tokio::io::AsyncReadExt as _;
        let Some(settings) = self.tap.spec.sip.as_ref() else {
            return leg;
        };
        let shared_leg = Mutex::new(leg);
        let sip = SipConn::new(
            settings.clone(),
            self.stats.sip.clone(),
            self.tap.spec.proto,
            (self.peer, self.local),
            shared_leg.lock().unwrap_or_else(PoisonError::into_inner).id,
            &shared_leg,
        );
        let tracer = &self.ctx.tracer;
        let mut observer = SipObserver::new(&sip, tracer, Direction::ClientToUpstream);
        let worth = settings.limits.max_message_bytes;
        let mut buf = vec![0; worth.min(64 * 1024)];
        let mut left = worth;
        let deadline = Instant::now() + UNRELAYED_WAIT;
        while left > 0 {
            let room = buf.len().min(left);
            let n = match timeout_at(deadline, stream.read(&mut buf[..room])).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            };
            left -= n;
            if observer.observe(&buf[..n], now_micros()) > 0 {
                break;
            }
        }
        drop(observer);
        drop(sip);
        shared_leg
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The PROXY header a load balancer sends first (`accept_proxy_protocol`), within
    /// `handshake_timeout`: the client's address and the one it reached, if it names them.
    async fn read_proxy_header(
        &self,
        tcp: &mut TcpStream,
    ) -> Result<Option<(SocketAddr, SocketAddr)>, EndKind> {
        let spec = &self.tap.spec;
        let deadline = Instant::now() + spec.handshake_timeout;
        match timeout_at(deadline, proxy_protocol::accept(tcp)).await {
            Ok(Ok(addrs)) => Ok(addrs),
            Ok(Err(e)) => Err(EndKind::Read(io::Error::new(
                io::ErrorKind::InvalidData,
                e.to_string(),
            ))),
            Err(_) => Err(EndKind::HandshakeTimeout(TimedOut(spec.handshake_timeout))),
        }
    }

    /// Counts the WebSocket sides closed for a message too big or too slow, and (`tcp:`) the
    /// connection closed for idleness or reset by a peer.
    fn count_ends(&self, ends: &Ends) {
        for end in ends.both() {
            match end.kind {
                EndKind::MessageTooBig { .. } => self.stats.ws_message_too_big.inc(),
                EndKind::MessageTimeout(_) => self.stats.ws_message_timeout.inc(),
                _ => {}
            }
        }
        if ends.both().iter().any(|e| matches!(e.kind, EndKind::Idle)) {
            self.stats.tcp.con_timeout.inc();
        }
        if ends.both().iter().any(|e| e.is_reset()) {
            self.stats.tcp.con_reset.inc();
        }
    }

    /// A handshake failed: the session ends before its relay, counted in `failed`, and the
    /// client leg's CLOSED event says why.
    fn end_early(&self, failed: &Counter, client_leg: &mut Leg, end: &End) {
        failed.inc();
        client_leg.closed(&self.ctx.tracer, [end]);
    }

    /// Runs a step of the handshakes unless heptap stops first; then the session ends where it
    /// is, tracing nothing more.
    /// The step comes pinned by the caller: moved in by value, it would be held twice in the
    /// connection's task (an async fn keeps its arguments for its whole life).
    async fn or_stop<T>(&self, step: Pin<&mut impl Future<Output = T>>) -> Option<T> {
        tokio::select! {
            done = step => Some(done),
            _ = self.kill.cancelled() => None,
        }
    }

    /// The client's handshake under `handshake_timeout`, with its one ACCEPTED event (for WSS
    /// the TLS parts and the WebSocket parts in one event). On failure, the ACCEPTED FAILURE
    /// event has been traced.
    async fn accept_client(&self, tcp: TcpStream, leg: &mut Leg) -> Result<Accepted, End> {
        let spec = &self.tap.spec;
        let tracer = &self.ctx.tracer;
        let deadline = Instant::now() + spec.handshake_timeout;
        let timed_out = TimedOut(spec.handshake_timeout);
        let failed = |leg: &mut Leg, kind, tls: Option<&TlsInfo>, ws| {
            let end = End::new(Side::Client, kind);
            leg.handshake_failed(tracer, &end, tls, ws);
            Err(end)
        };
        let (mut stream, tls) = match &self.tap.tls_server {
            None => (Stream::Tcp(tcp), None),
            Some(server) => {
                let capture = leg.wants_secrets(tracer);
                let failure = match timeout_at(deadline, server.accept(tcp, capture)).await {
                    Ok(Ok((s, info))) => Ok((Stream::from(s), Some(info))),
                    Ok(Err(e)) => Err(EndKind::Tls(e)),
                    Err(_) => Err(EndKind::HandshakeTimeout(timed_out)),
                };
                match failure {
                    Ok(handshaken) => handshaken,
                    Err(kind) => return failed(leg, kind, Some(&server.failed_info()), None),
                }
            }
        };
        let tls = tls.as_ref();
        if !self.tap.is_websocket() {
            leg.handshake_done(tracer, tls, None);
            return Ok(Accepted {
                stream,
                upgrade: None,
            });
        }
        match timeout_at(deadline, upgrade::accept(&mut stream)).await {
            Ok(Ok(upgrade)) => {
                leg.handshake_done(tracer, tls, Some(upgrade.heads()));
                Ok(Accepted {
                    stream,
                    upgrade: Some(upgrade),
                })
            }
            Ok(Err(AcceptError::Refused { request, reason })) => {
                let heads = WsHeads {
                    request: &request,
                    reply: Some(upgrade::BAD_REQUEST),
                };
                let refused = failed(leg, EndKind::UpgradeRefused(reason), tls, Some(heads));
                upgrade::linger_close(&mut stream).await;
                refused
            }
            Ok(Err(AcceptError::Io(e))) => failed(leg, EndKind::Read(e), tls, None),
            Err(_) => failed(leg, EndKind::HandshakeTimeout(timed_out), tls, None),
        }
    }

    /// Opens the upstream leg: TCP (CONNECT_START), the PROXY header, TLS, the WebSocket
    /// upgrade with the client's target, `Origin` and subprotocol; then the one CONNECTED event.
    /// On failure the CONNECTED FAILURE event has been traced.
    async fn open_upstream(
        &self,
        client: &Leg,
        client_upgrade: Option<&Upgrade>,
    ) -> (Leg, Result<Opened, End>) {
        let spec = &self.tap.spec;
        let tracer = &self.ctx.tracer;
        let (mut leg, tcp) = self.connect_tcp(client).await;
        let failed = |mut leg: Leg, e, tls: Option<&TlsInfo>, ws| {
            let end = End::new(Side::Upstream, EndKind::Unreachable(e));
            leg.handshake_failed(tracer, &end, tls, ws);
            (leg, Err(end))
        };
        let mut tcp = match tcp {
            Ok(s) => s,
            Err(e) => return failed(leg, e, None, None),
        };
        let deadline = Instant::now() + spec.connect_timeout;
        let timed_out = TimedOut(spec.connect_timeout);
        // Written on the TCP connection before anything else, TLS included, as HAProxy does.
        let header = proxy_protocol::header(spec.proxy_protocol, client.remote, client.local);
        if !header.is_empty() {
            match timeout_at(deadline, tcp.write_all(&header)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return failed(leg, Unreachable::ProxyHeader(e), None, None),
                Err(_) => return failed(leg, Unreachable::HandshakeTimeout(timed_out), None, None),
            }
        }
        let (mut stream, tls) = match &self.tap.tls_client {
            None => (Stream::Tcp(tcp), None),
            Some(client_tls) => {
                let capture = leg.wants_secrets(tracer);
                let failure = match timeout_at(deadline, client_tls.connect(tcp, capture)).await {
                    Ok(Ok((s, info))) => Ok((Stream::from(s), Some(info))),
                    Ok(Err(e)) => Err(Unreachable::Tls(e)),
                    Err(_) => Err(Unreachable::HandshakeTimeout(timed_out)),
                };
                match failure {
                    Ok(handshaken) => handshaken,
                    Err(e) => return failed(leg, e, Some(&client_tls.failed_info()), None),
                }
            }
        };
        let tls = tls.as_ref();
        let Some(client_upgrade) = client_upgrade else {
            leg.handshake_done(tracer, tls, None);
            let opened = Opened {
                stream,
                upgrade: None,
            };
            return (leg, Ok(opened));
        };
        let request = UpgradeRequest {
            host: &spec.upstream,
            target: &client_upgrade.target,
            origin: client_upgrade.origin.as_deref().unwrap_or(&spec.upstream),
            sip: client_upgrade.sip,
        };
        let refused = match timeout_at(deadline, upgrade::connect(&mut stream, &request)).await {
            Ok(Ok(connected)) => {
                leg.handshake_done(tracer, tls, Some(connected.heads()));
                let opened = Opened {
                    stream,
                    upgrade: Some(connected),
                };
                return (leg, Ok(opened));
            }
            Ok(Err(refused)) => refused,
            Err(_) => {
                let heads = WsHeads {
                    request: &[],
                    reply: None,
                };
                return failed(
                    leg,
                    Unreachable::UpgradeTimeout(timed_out),
                    tls,
                    Some(heads),
                );
            }
        };
        let upgrade::ConnectError {
            request,
            reply,
            reason,
        } = refused;
        let heads = WsHeads {
            request: &request,
            reply: reply.as_deref(),
        };
        failed(leg, Unreachable::Upgrade(reason), tls, Some(heads))
    }

    /// Connects to the first address of the upstream that answers. A connect still pending
    /// after [`LOCAL_CONNECT_TIMEOUT`] gets a CONNECT_START event (one per address tried); one
    /// done before gets none, and its CONNECTED says so. The socket is not bound before the
    /// connect, so CONNECT_START carries an unspecified local address (port 0); CONNECTED and
    /// later events carry the real one.
    async fn connect_tcp(&self, client: &Leg) -> (Leg, Result<TcpStream, Unreachable>) {
        let spec = &self.tap.spec;
        let tracer = &self.ctx.tracer;
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let leg_to = |remote| {
            let id = self.ctx.ids.next_id();
            Leg::new(
                spec.upstream_proto,
                id,
                remote,
                unspecified,
                Some(client.id),
            )
        };
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(&spec.upstream).await {
            Ok(a) => a.collect(),
            Err(source) => {
                let upstream = spec.upstream.clone();
                return (
                    leg_to(unspecified),
                    Err(Unreachable::Resolve { upstream, source }),
                );
            }
        };
        let mut leg = leg_to(addrs.first().copied().unwrap_or(unspecified));
        let mut last_failure = None;
        for addr in addrs {
            leg.remote = addr;
            let (socket, local) = match self.upstream_socket(client.remote, addr) {
                Ok(s) => s,
                Err(e) => {
                    last_failure = Some(e);
                    continue;
                }
            };
            leg.local = local;
            // OpenSIPS's async connect: one CONNECTED when it completes within 100 ms, a
            // CONNECT_START first when it is still pending then.
            let mut connecting = pin!(connect_tcp(socket, addr, spec.connect_timeout));
            let connected = match tokio::time::timeout(LOCAL_CONNECT_TIMEOUT, &mut connecting).await
            {
                Ok(done) => {
                    leg.connected_at_once = done.is_ok();
                    done
                }
                Err(_) => {
                    self.stats.upstream_connect_slow.inc();
                    leg.connect_start(tracer);
                    connecting.await
                }
            };
            match connected {
                Ok(stream) => {
                    if let Ok(local) = stream.local_addr() {
                        leg.local = local;
                    }
                    return (leg, Ok(stream));
                }
                Err(e) => last_failure = Some(Unreachable::Connect(e)),
            }
        }
        let failure = last_failure.unwrap_or_else(|| Unreachable::NoAddress {
            upstream: spec.upstream.clone(),
        });
        (leg, Err(failure))
    }

    /// A socket to connect to `addr`, and its local address until it connects: unbound (the
    /// unspecified address), or bound to the client's address on a transparent listener. A
    /// client address that cannot be bound is counted and logged, and either refuses the
    /// connection or falls back to an unbound socket (`upstream_source_fallback`).
    fn upstream_socket(
        &self,
        client: SocketAddr,
        addr: SocketAddr,
    ) -> Result<(TcpSocket, SocketAddr), Unreachable> {
        let spec = &self.tap.spec;
        if spec.upstream_source == UpstreamSource::Client {
            match transparent::bind_client_source(client, addr, spec.upstream_source_port) {
                Ok(bound) => {
                    if bound.port_taken {
                        self.stats.upstream_source_port_taken.inc();
                    }
                    return Ok((bound.socket, bound.local));
                }
                Err(e) => {
                    let refuse = spec.upstream_source_fallback == UpstreamSourceFallback::Refuse;
                    let outcome = if refuse {
                        "connection refused (upstream_source_fallback = \"refuse\")"
                    } else {
                        "opened from heptap's address (upstream_source_fallback = \"local\")"
                    };
                    self.stats
                        .upstream_source_failed
                        .failed(&spec.name, client, &e, outcome);
                    if refuse {
                        return Err(Unreachable::Source(e));
                    }
                }
            }
        }
        tcp_socket_for(addr).map_err(Unreachable::Connect)
    }
}

/// How long a client whose upstream could not be reached may take to send its first message,
/// to be traced: SIP clients speak first, right after connecting.
const UNRELAYED_WAIT: Duration = Duration::from_millis(200);

/// The upstream could not be reached: a TCP or TLS client gets a reset, as close as we can get
/// to the "connection refused" it would have seen connecting directly; a WebSocket client,
/// already upgraded, gets a close frame 1011.
async fn refuse_client(accepted: Accepted, limits: MessageLimits) {
    match accepted.upgrade {
        None => accepted.stream.reset_on_drop(),
        Some(upgrade) => {
            let mut ws = websocket(accepted.stream, upgrade.leftover, Role::Server, limits).await;
            let close = CloseFrame {
                code: CloseCode::Error,
                reason: "Upstream unavailable".into(),
            };
            let _ = timeout_at(
                Instant::now() + Duration::from_secs(1),
                ws.close(Some(close)),
            )
            .await;
        }
    }
}
