//! The byte relay: what happens per connection and per read.
//!
//! The bytes are sacred: each read is written on unchanged before the next read, an EOF is
//! passed on as a half-close, and a failure on one side closes the other (with a reset when the
//! failure was a reset, so the client sees what it would have seen without heptap). Tracing
//! only looks.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use super::leg::{Leg, event, message, status};
use super::sip::{Direction, NoObserver, Observe, SipConn, SipObserver};
use super::{ListenerSpec, ListenerStats, TapContext};
use crate::clock::now_micros;
use crate::stats::Counter;

/// Bytes read at once per direction.
const BUF_SIZE: usize = 16 * 1024;

/// How one direction of a relay ended.
#[derive(Debug)]
pub enum End {
    /// The reader sent EOF; it was passed on as a half-close.
    Eof,
    /// Reading failed.
    ReadError(io::Error),
    /// Writing to the other side failed.
    WriteError(io::Error),
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Copies `r` to `w` until EOF or an error, counting bytes; passes EOF on with `shutdown`.
/// Each chunk is written on first and shown to `obs` after, so tracing adds nothing to the
/// relay's latency; its timestamp is still the time it was read.
pub async fn pump<R, W>(
    mut r: R,
    mut w: W,
    bytes: &Counter,
    idle: Option<Duration>,
    obs: &mut impl Observe,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let read = match idle {
            Some(d) => match tokio::time::timeout(d, r.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => return End::Idle,
            },
            None => r.read(&mut buf).await,
        };
        let n = match read {
            Ok(0) => {
                // Half-close: the other side may still have things to say.
                return match w.shutdown().await {
                    Ok(()) => End::Eof,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => End::Eof,
                    Err(e) => End::WriteError(e),
                };
            }
            Ok(n) => n,
            Err(e) => return End::ReadError(e),
        };
        let read_at = if obs.wants_time() { now_micros() } else { 0 };
        if let Err(e) = w.write_all(&buf[..n]).await {
            return End::WriteError(e);
        }
        bytes.add(n as u64);
        obs.observe(&buf[..n], read_at);
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Connects to the first address of `upstream` that answers, with a socket bound first so the
/// CONNECT_START event can carry our local port.
async fn connect_upstream(
    upstream: &str,
    timeout: Duration,
    ctx: &TapContext,
    client: &Leg,
) -> (Leg, Result<TcpStream, String>) {
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(upstream).await {
        Ok(a) => a.collect(),
        Err(e) => {
            let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
            let leg = Leg::new(
                client.proto,
                ctx.ids.next_id(),
                unspecified,
                unspecified,
                Some(client.id.clone()),
            );
            return (leg, Err(format!("cannot resolve {upstream}: {e}")));
        }
    };
    let first = addrs
        .first()
        .copied()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut leg = Leg::new(
        client.proto,
        ctx.ids.next_id(),
        first,
        SocketAddr::from(([0, 0, 0, 0], 0)),
        Some(client.id.clone()),
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
        let unspecified: SocketAddr = if addr.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        if let Err(e) = sock.bind(unspecified) {
            last_err = e.to_string();
            continue;
        }
        leg.local = sock.local_addr().unwrap_or(unspecified);
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

/// Relays one accepted TCP connection and traces both legs.
pub async fn tcp(
    client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    spec: &ListenerSpec,
    ctx: &TapContext,
    stats: &ListenerStats,
    kill: CancellationToken,
) {
    let _ = client.set_nodelay(true);
    let mut client_leg = Leg::new(spec.proto, ctx.ids.next_id(), peer, local, None);
    client_leg.event(
        &ctx.tracer,
        event::ACCEPTED,
        status::SUCCESS,
        message::ACCEPT_OK,
    );
    tracing::debug!(client.addr = %peer, conn.id = %client_leg.id, "Connection accepted");

    let (mut up_leg, upstream) =
        connect_upstream(&spec.upstream, spec.connect_timeout, ctx, &client_leg).await;
    let upstream = match upstream {
        Ok(s) => s,
        Err(reason) => {
            stats.upstream_connect_failed.inc();
            tracing::warn!(client.addr = %peer, server.addr = %spec.upstream, error = %reason, "Upstream connect failed");
            up_leg.event(
                &ctx.tracer,
                event::CONNECTED,
                status::FAILURE,
                message::CONNECT_FAIL,
            );
            client_leg.event(
                &ctx.tracer,
                event::CLOSED,
                status::SUCCESS,
                "Upstream connect failed",
            );
            // A reset, as close as we can get to the "connection refused" the client would
            // have seen connecting directly.
            let _ = client.set_zero_linger();
            return;
        }
    };
    up_leg.event(
        &ctx.tracer,
        event::CONNECTED,
        status::SUCCESS,
        message::CONNECT_OK,
    );

    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let (mut c_end, mut u_end): (Option<End>, Option<End>) = (None, None);
    let sip = spec.sip.as_ref().map(|settings| {
        SipConn::new(
            settings.clone(),
            stats.sip.clone(),
            spec.proto,
            peer,
            local,
            client_leg.id.clone(),
        )
    });
    {
        // Two observers per connection at most; both borrow the connection's SIP state.
        let (mut c_obs, mut u_obs) = match &sip {
            Some(conn) => (
                Either::Sip(SipObserver::new(
                    conn,
                    &ctx.tracer,
                    Direction::ClientToUpstream,
                )),
                Either::Sip(SipObserver::new(
                    conn,
                    &ctx.tracer,
                    Direction::UpstreamToClient,
                )),
            ),
            None => (Either::None(NoObserver), Either::None(NoObserver)),
        };
        let c2u = pump(
            &mut cr,
            &mut uw,
            &stats.bytes_in,
            spec.idle_timeout,
            &mut c_obs,
        );
        let u2c = pump(
            &mut ur,
            &mut cw,
            &stats.bytes_out,
            spec.idle_timeout,
            &mut u_obs,
        );
        tokio::pin!(c2u, u2c);
        // Run both directions; after a clean EOF one way keep the other going (half-close),
        // after an error stop both.
        loop {
            tokio::select! {
                e = &mut c2u, if c_end.is_none() => c_end = Some(e),
                e = &mut u2c, if u_end.is_none() => u_end = Some(e),
                _ = kill.cancelled() => break,
            }
            match (&c_end, &u_end) {
                (Some(_), Some(_)) => break,
                (Some(e), None) | (None, Some(e)) if !matches!(e, End::Eof) => break,
                _ => {}
            }
        }
    }
    // A reset on one side is passed on as a reset on the other, so each peer sees what it would
    // have seen without heptap in the middle.
    if matches!(&u_end, Some(End::ReadError(e)) if is_reset(e)) {
        if let Ok(s) = cr.reunite(cw) {
            let _ = s.set_zero_linger();
        }
    } else if matches!(&c_end, Some(End::ReadError(e)) if is_reset(e))
        && let Ok(s) = ur.reunite(uw)
    {
        let _ = s.set_zero_linger();
    }

    let (client_reason, up_reason) = close_reasons(&c_end, &u_end);
    up_leg.event(&ctx.tracer, event::CLOSED, status::SUCCESS, up_reason);
    client_leg.event(&ctx.tracer, event::CLOSED, status::SUCCESS, client_reason);
    tracing::debug!(client.addr = %peer, conn.id = %client_leg.id, "Connection closed");
}

/// The `Message` of each leg's CLOSED event: what ended it, from that leg's point of view.
fn close_reasons(c: &Option<End>, u: &Option<End>) -> (String, String) {
    let mut client = None;
    let mut up = None;
    match c {
        Some(End::Eof) => client = Some("EOF received".to_owned()),
        Some(End::ReadError(e)) => client = Some(format!("Read error: {e}")),
        Some(End::WriteError(e)) => up = Some(format!("Write error: {e}")),
        Some(End::Idle) => client = Some("Timeout on no traffic".to_owned()),
        None => {}
    }
    match u {
        Some(End::Eof) => up = up.or(Some("EOF received".to_owned())),
        Some(End::ReadError(e)) => up = up.or(Some(format!("Read error: {e}"))),
        Some(End::WriteError(e)) => client = client.or(Some(format!("Write error: {e}"))),
        Some(End::Idle) => up = up.or(Some("Timeout on no traffic".to_owned())),
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
    fn observe(&mut self, data: &[u8], read_at: u64) {
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
