//! The relay: what happens per connection and per read.
//!
//! Per connection: the client's handshake (TLS, WebSocket upgrade, both, or none) under
//! `handshake_timeout`; the upstream connect (PROXY header, TLS, WebSocket upgrade) under
//! `connect_timeout`; then both directions at once until the legs are done, and a CLOSED event
//! for each leg.
//!
//! The bytes are sacred: each read is written on unchanged (and flushed, which TLS needs) before
//! the next read, an EOF is passed on as a half-close, and a failure on one side closes the
//! other (with a reset when the failure was a reset, so the client sees what it would have seen
//! without heptap). Tracing only looks.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use heptap_hep::{NetProto, Part};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_util::sync::CancellationToken;

use super::leg::{Leg, event, message, status};
use super::sip::{Direction, NoObserver, Observe, SipConn, SipObserver};
use super::stream::Stream;
use super::tls::TlsInfo;
use super::{ListenerStats, Tap, TapContext, proxy_protocol, ws};
use crate::clock::now_micros;
use crate::stats::Counter;
use crate::tracer::Tracer;

/// Bytes read at once per direction once a connection has shown bulk traffic.
const BUF_SIZE: usize = 16 * 1024;

/// Bytes read at once until a read fills the buffer: enough for most SIP messages. What an idle
/// TLS connection keeps per direction (an idle plain TCP one keeps none, see [`pump`]).
const FIRST_BUF_SIZE: usize = 2 * 1024;

/// A relay direction lets the other tasks of its worker run after handing this many messages
/// to tracing: one batch of a destination's lane.
const YIELD_AFTER_MESSAGES: usize = 64;

/// Gives the destinations' lanes, which share the worker's thread, their turn: one yield every
/// [`YIELD_AFTER_MESSAGES`] messages a relay direction (a pump, a WS side) hands to tracing. A
/// stream that is always readable would otherwise trace thousands of messages before the lanes
/// run, and overflow their queues with a healthy collector. Called after the bytes are written
/// on, so only the next read waits.
#[derive(Debug, Default)]
pub(super) struct LaneTurns {
    /// Messages handed to tracing since the last yield.
    since: usize,
}

impl LaneTurns {
    /// Counts `messages` just handed to tracing; yields once enough have been.
    pub(super) async fn after(&mut self, messages: usize) {
        self.since += messages;
        if self.since >= YIELD_AFTER_MESSAGES {
            self.since = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// How one direction of a relay ended.
#[derive(Debug)]
pub enum End {
    /// The reader sent EOF (TCP FIN, TLS close_notify, or a WebSocket connection dropped
    /// without a close); on TCP and TLS it was passed on as a half-close.
    Eof,
    /// Reading failed.
    ReadError(io::Error),
    /// Writing to the other side failed.
    WriteError(io::Error),
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// A WebSocket close frame (with its code) was read and relayed.
    Close(Option<u16>),
}

/// `idle_timeout` for one connection: it is idle when neither direction has moved for that
/// long, so a connection where only one side talks (keep-alives one way) stays up.
#[derive(Debug)]
pub struct Idle {
    /// The timeout.
    timeout: Duration,
    /// When the connection started; `last` counts from here.
    start: Instant,
    /// Milliseconds from `start` to the last data either way (one relaxed store per read).
    last: AtomicU64,
}

impl Idle {
    /// A connection that has just moved data.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// Data moved, one way or the other.
    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How much longer to wait before the connection is idle; None when it is.
    fn left(&self) -> Option<Duration> {
        let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
        let deadline = last + self.timeout;
        let now = Instant::now();
        (deadline > now).then(|| deadline - now)
    }

    /// Waits for `read` until it completes, or until the connection has been idle for the
    /// timeout in both directions (then `read`, a cancel-safe read, is dropped).
    pub async fn read<F: std::future::Future>(&self, read: F) -> Option<F::Output> {
        tokio::pin!(read);
        loop {
            let left = self.left()?;
            if let Ok(r) = tokio::time::timeout(left, read.as_mut()).await {
                return Some(r);
            }
        }
    }
}

/// The read side of a relay direction, as [`pump`] sees it.
pub trait ReadSide: AsyncRead + Unpin {
    /// Whether [`ReadSide::readable`] really waits for data. Then the pump waits with no buffer
    /// and takes one only to read what arrived, so an idle connection holds none.
    const WAITS: bool;
    /// Resolves when a read would find data (or EOF, or an error).
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>>;
}

impl ReadSide for tokio::net::tcp::OwnedReadHalf {
    const WAITS: bool = true;
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> {
        tokio::net::tcp::OwnedReadHalf::readable(self)
    }
}

impl<T: ReadSide> ReadSide for &mut T {
    const WAITS: bool = T::WAITS;
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> {
        T::readable(self)
    }
}

/// A TLS (or otherwise wrapped) stream: rustls buffers records itself, so there is no
/// readiness to wait on without reading; the pump keeps its buffer.
impl<T: AsyncRead> ReadSide for tokio::io::ReadHalf<T> {
    const WAITS: bool = false;
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> {
        std::future::ready(Ok(()))
    }
}

/// Copies `r` to `w` until EOF or an error, counting bytes; passes EOF on with `shutdown`.
/// Each chunk is written on (and flushed: a TLS writer holds records until flushed) first and
/// shown to `obs` after, so tracing adds nothing to the relay's latency; its timestamp is
/// still the time it was read.
///
/// The buffer: [`FIRST_BUF_SIZE`] until a read fills it, then [`BUF_SIZE`] for the rest of the
/// connection (bulk transfers). Where the reader can wait for data without reading (plain TCP),
/// a read that did not fill the buffer (the socket is drained) gives the buffer back, and the
/// next one is taken when data arrives: an idle connection holds no buffer, a busy one keeps it.
pub async fn pump<R, W>(
    mut r: R,
    mut w: W,
    bytes: &Counter,
    idle: Option<&Idle>,
    obs: &mut impl Observe,
) -> End
where
    R: ReadSide,
    W: AsyncWrite + Unpin,
{
    let mut size = FIRST_BUF_SIZE;
    let mut buf: Vec<u8> = Vec::new();
    let mut turns = LaneTurns::default();
    loop {
        if buf.capacity() == 0 {
            if R::WAITS {
                let ready = match idle {
                    Some(idle) => match idle.read(r.readable()).await {
                        Some(r) => r,
                        None => return End::Idle,
                    },
                    None => r.readable().await,
                };
                if let Err(e) = ready {
                    return End::ReadError(e);
                }
            }
            buf = Vec::with_capacity(size);
        }
        buf.clear();
        // Into the spare capacity: nothing to zero first.
        let read = match idle {
            Some(idle) => match idle.read(r.read_buf(&mut buf)).await {
                Some(r) => r,
                None => return End::Idle,
            },
            None => r.read_buf(&mut buf).await,
        };
        let n = match read {
            // A TLS peer that closes its socket without close_notify: an EOF all the same.
            Ok(0) => return half_close(&mut w).await,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return half_close(&mut w).await;
            }
            Ok(n) => n,
            Err(e) => return End::ReadError(e),
        };
        if let Some(idle) = idle {
            idle.touch();
        }
        let read_at = if obs.wants_time() { now_micros() } else { 0 };
        if let Err(e) = w.write_all(&buf[..n]).await {
            return End::WriteError(e);
        }
        if let Err(e) = w.flush().await {
            return End::WriteError(e);
        }
        bytes.add(n as u64);
        turns.after(obs.observe(&buf[..n], read_at)).await;
        if n >= size {
            if size < BUF_SIZE {
                size = BUF_SIZE;
                buf = Vec::with_capacity(size);
            }
        } else if R::WAITS {
            buf = Vec::new();
        }
    }
}

/// Passes an EOF on: the other side may still have things to say.
async fn half_close<W: AsyncWrite + Unpin>(w: &mut W) -> End {
    match w.shutdown().await {
        Ok(()) => End::Eof,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => End::Eof,
        Err(e) => End::WriteError(e),
    }
}

/// Whether an I/O error is the peer resetting or dropping the connection.
pub(super) fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Connects to the first address of `upstream` that answers. The socket is not bound before the
/// connect: a port taken by `bind` cannot be shared between destinations and stays held through
/// TIME_WAIT, which ran the ephemeral range dry at a few thousand connections per second. So
/// CONNECT_START carries an unspecified local address (port 0); CONNECTED and later events carry
/// the real one.
async fn connect_tcp(
    upstream: &str,
    proto: NetProto,
    timeout: Duration,
    ctx: &TapContext,
    client: &Leg,
) -> (Leg, Result<TcpStream, String>) {
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(upstream).await {
        Ok(a) => a.collect(),
        Err(e) => {
            let leg = Leg::new(
                proto,
                ctx.ids.next_id(),
                unspecified,
                unspecified,
                Some(client.id),
            );
            return (leg, Err(format!("cannot resolve {upstream}: {e}")));
        }
    };
    let first = addrs.first().copied().unwrap_or(unspecified);
    let mut leg = Leg::new(
        proto,
        ctx.ids.next_id(),
        first,
        unspecified,
        Some(client.id),
    );
    let mut last_err = format!("{upstream} resolved to no address");
    for addr in addrs {
        leg.remote = addr;
        let sock = match if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        } {
            Ok(s) => s,
            Err(e) => {
                last_err = e.to_string();
                continue;
            }
        };
        let any: SocketAddr = if addr.is_ipv4() {
            unspecified
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        leg.local = any;
        leg.event(
            &ctx.tracer,
            event::CONNECT_START,
            status::SUCCESS,
            message::ASYNC_CONNECT_INIT,
        );
        match tokio::time::timeout(timeout, sock.connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                if let Ok(local) = stream.local_addr() {
                    leg.local = local;
                }
                return (leg, Ok(stream));
            }
            Ok(Err(e)) => last_err = format!("{addr}: {e}"),
            Err(_) => last_err = format!("{addr}: connect timed out after {timeout:?}"),
        }
    }
    (leg, Err(last_err))
}

/// The client leg after its handshake.
struct Accepted {
    /// The connection, TLS terminated if it was TLS.
    stream: Stream,
    /// The WebSocket upgrade, on ws/wss listeners.
    upgrade: Option<ws::Upgrade>,
}

/// The `Event` ... parts of a WebSocket handshake event, in OpenSIPS's order: `Event`,
/// `Ws-Request`, `Status`, `Ws-Reply`, `Message` (a part with no bytes is left out).
fn ws_parts(
    parts: &mut Vec<Part>,
    ev: &'static str,
    request: &[u8],
    st: &'static str,
    reply: Option<&[u8]>,
    msg: Cow<'static, str>,
) {
    parts.push(("Event".into(), ev.into()));
    if !request.is_empty() {
        parts.push(("Ws-Request".into(), ws::trace_text(request).into()));
    }
    parts.push(("Status".into(), st.into()));
    if let Some(reply) = reply.filter(|r| !r.is_empty()) {
        parts.push(("Ws-Reply".into(), ws::trace_text(reply).into()));
    }
    parts.push(("Message".into(), msg));
}

/// `Event`, `Status`, `Message`.
fn plain_parts(parts: &mut Vec<Part>, ev: &'static str, st: &'static str, msg: Cow<'static, str>) {
    parts.push(("Event".into(), ev.into()));
    parts.push(("Status".into(), st.into()));
    if !msg.is_empty() {
        parts.push(("Message".into(), msg));
    }
}

/// The client's handshake under `handshake_timeout`, with its one ACCEPTED event (for WSS the
/// TLS parts and the WebSocket parts in one event). On failure, the ACCEPTED FAILURE event has
/// been traced and the reason for the CLOSED event is returned.
async fn accept_client(
    tcp: TcpStream,
    tap: &Tap,
    tracer: &Tracer,
    leg: &mut Leg,
) -> Result<Accepted, String> {
    let spec = &tap.spec;
    let deadline = Instant::now() + spec.handshake_timeout;
    let timed_out = || format!("handshake timed out after {:?}", spec.handshake_timeout);
    let (stream, tls) = match &tap.tls_server {
        None => (Stream::Tcp(tcp), None),
        Some(server) => {
            let capture = leg.wants_secrets(tracer);
            let failed = |leg: &mut Leg, why: &str| {
                let info = server.failed_info();
                let msg = format!("{} {why}", message::ACCEPT_FAIL);
                leg.trace_with(tracer, |parts| {
                    info.push_parts(parts);
                    plain_parts(parts, event::ACCEPTED, status::FAILURE, msg.into());
                });
            };
            match tokio::time::timeout_at(deadline, server.accept(tcp, capture)).await {
                Ok(Ok((s, info))) => (Stream::from(s), Some(info)),
                Ok(Err(e)) => {
                    failed(leg, &format!("TLS: {e}"));
                    return Err(format!("TLS handshake failed: {e}"));
                }
                Err(_) => {
                    failed(leg, &timed_out());
                    return Err("Handshake timeout".to_owned());
                }
            }
        }
    };
    let tls_parts = |parts: &mut Vec<Part>| {
        if let Some(info) = &tls {
            info.push_parts(parts);
        }
    };
    if !matches!(spec.proto, NetProto::Ws | NetProto::Wss) {
        leg.trace_with(tracer, |parts| {
            tls_parts(parts);
            plain_parts(
                parts,
                event::ACCEPTED,
                status::SUCCESS,
                message::ACCEPT_OK.into(),
            );
        });
        return Ok(Accepted {
            stream,
            upgrade: None,
        });
    }
    let mut stream = stream;
    match tokio::time::timeout_at(deadline, ws::accept(&mut stream)).await {
        Ok(Ok(upgrade)) => {
            leg.trace_with(tracer, |parts| {
                tls_parts(parts);
                ws_parts(
                    parts,
                    event::ACCEPTED,
                    &upgrade.request,
                    status::SUCCESS,
                    Some(&upgrade.reply),
                    message::ACCEPT_OK.into(),
                );
            });
            Ok(Accepted {
                stream,
                upgrade: Some(upgrade),
            })
        }
        Ok(Err(ws::AcceptError::Refused { request, reason })) => {
            leg.trace_with(tracer, |parts| {
                tls_parts(parts);
                ws_parts(
                    parts,
                    event::ACCEPTED,
                    &request,
                    status::FAILURE,
                    Some(ws::BAD_REQUEST),
                    message::ACCEPT_FAIL.into(),
                );
            });
            ws::linger_close(&mut stream).await;
            Err(format!("WebSocket upgrade refused: {reason}"))
        }
        Ok(Err(ws::AcceptError::Io(e))) => {
            leg.trace_with(tracer, |parts| {
                tls_parts(parts);
                let msg = format!("{} {e}", message::ACCEPT_FAIL);
                plain_parts(parts, event::ACCEPTED, status::FAILURE, msg.into());
            });
            Err(format!("Read error: {e}"))
        }
        Err(_) => {
            leg.trace_with(tracer, |parts| {
                tls_parts(parts);
                let msg = format!("{} {}", message::ACCEPT_FAIL, timed_out());
                plain_parts(parts, event::ACCEPTED, status::FAILURE, msg.into());
            });
            Err("Handshake timeout".to_owned())
        }
    }
}

/// The upstream leg after its handshakes.
struct Opened {
    /// The connection, TLS originated if the upstream speaks TLS.
    stream: Stream,
    /// The WebSocket upgrade, toward ws/wss upstreams.
    upgrade: Option<ws::Connected>,
}

/// Connects upstream: TCP (CONNECT_START), the PROXY header, TLS, the WebSocket upgrade with
/// the client's target, `Origin` and subprotocol; then the one CONNECTED event. On failure the
/// CONNECTED FAILURE event has been traced and the reason is returned.
async fn open_upstream(
    tap: &Tap,
    ctx: &TapContext,
    client: &Leg,
    client_upgrade: Option<&ws::Upgrade>,
) -> (Leg, Result<Opened, String>) {
    let spec = &tap.spec;
    let tracer = &ctx.tracer;
    let (mut leg, tcp) = connect_tcp(
        &spec.upstream,
        spec.upstream_proto,
        spec.connect_timeout,
        ctx,
        client,
    )
    .await;
    let mut tcp = match tcp {
        Ok(s) => s,
        Err(reason) => {
            leg.event(
                tracer,
                event::CONNECTED,
                status::FAILURE,
                message::CONNECT_FAIL,
            );
            return (leg, Err(reason));
        }
    };
    let deadline = Instant::now() + spec.connect_timeout;
    let timed_out = || format!("handshake timed out after {:?}", spec.connect_timeout);
    let header = proxy_protocol::header(spec.proxy_protocol, client.remote, client.local);
    if !header.is_empty() {
        let written = tokio::time::timeout_at(deadline, tcp.write_all(&header)).await;
        if let Some(e) = match written {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("PROXY header: {e}")),
            Err(_) => Some(timed_out()),
        } {
            let msg = format!("{} {e}", message::CONNECT_FAIL);
            leg.event(tracer, event::CONNECTED, status::FAILURE, msg);
            return (leg, Err(e));
        }
    }
    let (stream, tls) = match &tap.tls_client {
        None => (Stream::Tcp(tcp), None),
        Some(client_tls) => {
            let capture = leg.wants_secrets(tracer);
            let why =
                match tokio::time::timeout_at(deadline, client_tls.connect(tcp, capture)).await {
                    Ok(Ok((s, info))) => Ok((Stream::from(s), Some(info))),
                    Ok(Err(e)) => Err(format!("TLS: {e}")),
                    Err(_) => Err(timed_out()),
                };
            match why {
                Ok(opened) => opened,
                Err(why) => {
                    let info = client_tls.failed_info();
                    let msg = format!("{} {why}", message::CONNECT_FAIL);
                    leg.trace_with(tracer, |parts| {
                        info.push_parts(parts);
                        plain_parts(parts, event::CONNECTED, status::FAILURE, msg.into());
                    });
                    return (leg, Err(why));
                }
            }
        }
    };
    let tls_parts = |parts: &mut Vec<Part>, tls: &Option<TlsInfo>| {
        if let Some(info) = tls {
            info.push_parts(parts);
        }
    };
    let Some(client_upgrade) = client_upgrade else {
        leg.trace_with(tracer, |parts| {
            tls_parts(parts, &tls);
            plain_parts(
                parts,
                event::CONNECTED,
                status::SUCCESS,
                message::CONNECT_OK.into(),
            );
        });
        return (
            leg,
            Ok(Opened {
                stream,
                upgrade: None,
            }),
        );
    };
    let mut stream = stream;
    let request = ws::UpgradeRequest {
        host: &spec.upstream,
        target: &client_upgrade.target,
        origin: client_upgrade.origin.as_deref().unwrap_or(&spec.upstream),
        sip: client_upgrade.sip,
    };
    let failure = match tokio::time::timeout_at(deadline, ws::connect(&mut stream, &request)).await
    {
        Ok(Ok(connected)) => {
            leg.trace_with(tracer, |parts| {
                tls_parts(parts, &tls);
                ws_parts(
                    parts,
                    event::CONNECTED,
                    &connected.request,
                    status::SUCCESS,
                    Some(&connected.reply),
                    message::CONNECT_OK.into(),
                );
            });
            return (
                leg,
                Ok(Opened {
                    stream,
                    upgrade: Some(connected),
                }),
            );
        }
        Ok(Err(e)) => e,
        Err(_) => ws::ConnectError {
            request: Vec::new(),
            reply: None,
            reason: timed_out(),
        },
    };
    leg.trace_with(tracer, |parts| {
        tls_parts(parts, &tls);
        ws_parts(
            parts,
            event::CONNECTED,
            &failure.request,
            status::FAILURE,
            failure.reply.as_deref(),
            message::CONNECT_FAIL.into(),
        );
    });
    (
        leg,
        Err(format!("WebSocket upgrade failed: {}", failure.reason)),
    )
}

/// Relays one accepted connection and traces both legs.
pub async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    tap: &Tap,
    ctx: &TapContext,
    stats: &ListenerStats,
    kill: CancellationToken,
) {
    let spec = &tap.spec;
    let _ = tcp.set_nodelay(true);
    let mut client_leg = Leg::new(spec.proto, ctx.ids.next_id(), peer, local, None);
    let accepted = tokio::select! {
        a = accept_client(tcp, tap, &ctx.tracer, &mut client_leg) => a,
        _ = kill.cancelled() => return,
    };
    let accepted = match accepted {
        Ok(a) => a,
        Err(reason) => {
            stats.handshake_failed.inc();
            tracing::debug!(client.addr = %peer, conn.id = %client_leg.id, error = %reason, "Client handshake failed");
            client_leg.event(&ctx.tracer, event::CLOSED, status::SUCCESS, reason);
            return;
        }
    };
    tracing::debug!(client.addr = %peer, conn.id = %client_leg.id, "Connection accepted");

    let opened = tokio::select! {
        o = open_upstream(tap, ctx, &client_leg, accepted.upgrade.as_ref()) => o,
        _ = kill.cancelled() => return,
    };
    let (mut up_leg, upstream) = opened;
    let upstream = match upstream {
        Ok(u) => u,
        Err(reason) => {
            stats.upstream_connect_failed.inc();
            tracing::warn!(client.addr = %peer, server.addr = %spec.upstream, error = %reason, "Upstream connect failed");
            client_leg.event(
                &ctx.tracer,
                event::CLOSED,
                status::SUCCESS,
                "Upstream connect failed",
            );
            refuse_client(accepted).await;
            return;
        }
    };

    let sip = spec.sip.as_ref().map(|settings| {
        SipConn::new(
            settings.clone(),
            stats.sip.clone(),
            spec.proto,
            peer,
            local,
            client_leg.id,
        )
    });
    let idle = spec.idle_timeout.map(Idle::new);
    let (c_end, u_end) = match (accepted.upgrade, upstream.upgrade) {
        (Some(c_up), Some(u_up)) => {
            let client = ws::websocket(accepted.stream, c_up.leftover, Role::Server).await;
            let up = ws::websocket(upstream.stream, u_up.leftover, Role::Client).await;
            let r = ws::Relay {
                tracer: &ctx.tracer,
                sip: sip.as_ref(),
                bytes_in: &stats.bytes_in,
                bytes_out: &stats.bytes_out,
                idle: idle.as_ref(),
            };
            ws::relay(client, up, &r, &kill).await
        }
        _ => {
            let r = Bytes {
                tracer: &ctx.tracer,
                sip: sip.as_ref(),
                stats,
                idle: idle.as_ref(),
                kill: &kill,
            };
            relay_bytes(accepted.stream, upstream.stream, &r).await
        }
    };
    let (client_reason, up_reason) = close_reasons(&c_end, &u_end);
    up_leg.event(&ctx.tracer, event::CLOSED, status::SUCCESS, up_reason);
    client_leg.event(&ctx.tracer, event::CLOSED, status::SUCCESS, client_reason);
    tracing::debug!(client.addr = %peer, conn.id = %client_leg.id, "Connection closed");
}

/// The upstream could not be reached: a TCP or TLS client gets a reset, as close as we can get
/// to the "connection refused" it would have seen connecting directly; a WebSocket client,
/// already upgraded, gets a close frame 1011.
async fn refuse_client(accepted: Accepted) {
    match accepted.upgrade {
        None => accepted.stream.reset_on_drop(),
        Some(upgrade) => {
            let mut ws = ws::websocket(accepted.stream, upgrade.leftover, Role::Server).await;
            let close = CloseFrame {
                code: CloseCode::Error,
                reason: "Upstream unavailable".into(),
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(close))).await;
        }
    }
}

/// What both directions of a byte relay share.
struct Bytes<'a> {
    /// Decides what is traced.
    tracer: &'a Tracer,
    /// SIP tracing of the connection.
    sip: Option<&'a SipConn>,
    /// Byte counters.
    stats: &'a ListenerStats,
    /// Close after this long without a byte either way.
    idle: Option<&'a Idle>,
    /// Shutdown.
    kill: &'a CancellationToken,
}

/// Relays bytes both ways. Plain TCP on both legs splits into owned halves (no lock per read);
/// a TLS leg is split through tokio's lock, which both halves only take within this task.
async fn relay_bytes(
    client: Stream,
    upstream: Stream,
    r: &Bytes<'_>,
) -> (Option<End>, Option<End>) {
    match (client, upstream) {
        (Stream::Tcp(c), Stream::Tcp(u)) => {
            let (mut cr, mut cw) = c.into_split();
            let (mut ur, mut uw) = u.into_split();
            let ends = both_ways(&mut cr, &mut cw, &mut ur, &mut uw, r).await;
            let client = cr.reunite(cw).ok().map(Stream::Tcp);
            let upstream = ur.reunite(uw).ok().map(Stream::Tcp);
            pass_reset(&ends, client.as_ref(), upstream.as_ref());
            ends
        }
        (c, u) => {
            let (mut cr, mut cw) = tokio::io::split(c);
            let (mut ur, mut uw) = tokio::io::split(u);
            let ends = both_ways(&mut cr, &mut cw, &mut ur, &mut uw, r).await;
            let (client, upstream) = (cr.unsplit(cw), ur.unsplit(uw));
            pass_reset(&ends, Some(&client), Some(&upstream));
            ends
        }
    }
}

/// A reset on one side is passed on as a reset on the other, so each peer sees what it would
/// have seen without heptap in the middle.
fn pass_reset(ends: &(Option<End>, Option<End>), client: Option<&Stream>, up: Option<&Stream>) {
    let reset = |e: &Option<End>| matches!(e, Some(End::ReadError(e)) if is_reset(e));
    if reset(&ends.1) {
        if let Some(c) = client {
            c.reset_on_drop();
        }
    } else if reset(&ends.0)
        && let Some(u) = up
    {
        u.reset_on_drop();
    }
}

/// Runs both directions; after a clean EOF one way keeps the other going (half-close), after
/// an error stops both.
async fn both_ways<CR, CW, UR, UW>(
    cr: &mut CR,
    cw: &mut CW,
    ur: &mut UR,
    uw: &mut UW,
    r: &Bytes<'_>,
) -> (Option<End>, Option<End>)
where
    CR: ReadSide,
    CW: AsyncWrite + Unpin,
    UR: ReadSide,
    UW: AsyncWrite + Unpin,
{
    let (mut c_end, mut u_end): (Option<End>, Option<End>) = (None, None);
    // Two observers per connection at most; both borrow the connection's SIP state.
    let (mut c_obs, mut u_obs) = match r.sip {
        Some(conn) => (
            Either::Sip(SipObserver::new(
                conn,
                r.tracer,
                Direction::ClientToUpstream,
            )),
            Either::Sip(SipObserver::new(
                conn,
                r.tracer,
                Direction::UpstreamToClient,
            )),
        ),
        None => (Either::None(NoObserver), Either::None(NoObserver)),
    };
    let c2u = pump(cr, uw, &r.stats.bytes_in, r.idle, &mut c_obs);
    let u2c = pump(ur, cw, &r.stats.bytes_out, r.idle, &mut u_obs);
    tokio::pin!(c2u, u2c);
    loop {
        tokio::select! {
            e = &mut c2u, if c_end.is_none() => c_end = Some(e),
            e = &mut u2c, if u_end.is_none() => u_end = Some(e),
            _ = r.kill.cancelled() => break,
        }
        match (&c_end, &u_end) {
            (Some(_), Some(_)) => break,
            (Some(e), None) | (None, Some(e)) if !matches!(e, End::Eof) => break,
            _ => {}
        }
    }
    (c_end, u_end)
}

/// The `Message` of each leg's CLOSED event: what ended it, from that leg's point of view.
fn close_reasons(c: &Option<End>, u: &Option<End>) -> (String, String) {
    let close = |code: &Option<u16>| match code {
        Some(code) => format!("Close frame received ({code})"),
        None => "Close frame received".to_owned(),
    };
    let mut client = None;
    let mut up = None;
    match c {
        Some(End::Eof) => client = Some("EOF received".to_owned()),
        Some(End::ReadError(e)) => client = Some(format!("Read error: {e}")),
        Some(End::WriteError(e)) => up = Some(format!("Write error: {e}")),
        Some(End::Idle) => client = Some("Timeout on no traffic".to_owned()),
        Some(End::Close(code)) => client = Some(close(code)),
        None => {}
    }
    match u {
        Some(End::Eof) => up = up.or(Some("EOF received".to_owned())),
        Some(End::ReadError(e)) => up = up.or(Some(format!("Read error: {e}"))),
        Some(End::WriteError(e)) => client = client.or(Some(format!("Write error: {e}"))),
        Some(End::Idle) => up = up.or(Some("Timeout on no traffic".to_owned())),
        Some(End::Close(code)) => up = up.or(Some(close(code))),
        None => {}
    }
    (
        client.unwrap_or_else(|| "Closed by heptap: the upstream leg ended".to_owned()),
        up.unwrap_or_else(|| "Closed by heptap: the client leg ended".to_owned()),
    )
}

/// A SIP observer or none, without boxing.
enum Either<'a> {
    /// Frames and traces SIP.
    Sip(SipObserver<'a>),
    /// Looks at nothing.
    None(NoObserver),
}

impl Observe for Either<'_> {
    fn observe(&mut self, data: &[u8], read_at: u64) -> usize {
        match self {
            Either::Sip(o) => o.observe(data, read_at),
            Either::None(o) => o.observe(data, read_at),
        }
    }
    fn wants_time(&self) -> bool {
        match self {
            Either::Sip(o) => o.wants_time(),
            Either::None(o) => o.wants_time(),
        }
    }
}
