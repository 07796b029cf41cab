//! Both directions of a relayed connection, for the byte pump (TCP, TLS: [`relay_bytes`]) and
//! the WebSocket message relay (WS, WSS: [`relay_messages`]) alike: one loop runs the two
//! directions and decides when the connection is done ([`both_ways`]), and a reset on one side
//! is passed on to the other ([`pass_reset`]).
//!
//! The one difference between the two is what an end of one direction means for the other
//! ([`Then`]): TCP has a half-close, so after a clean EOF the other direction goes on; WebSocket
//! has none, but after a close frame the other direction gets [`CLOSE_GRACE`] to answer it.
//! A side whose message was too big or too slow is then sent the close it is owed
//! ([`close_offender`]); the other side is closed as for any other failure.

use std::pin::{Pin, pin};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::events::{Direction, End, EndKind, Ends, Side};
use super::pump::{Idle, ReadSide, Tally, pump};
use super::sip::{SipConn, SipObserver};
use super::transport::{Stream, reset_on_drop};
use super::ws_frames::Watched;
use super::ws_relay::{CLOSE_GRACE, OneWay, Pings, close_offender, forward};
use crate::tracer::Tracer;

/// What both directions of a relayed connection share.
#[derive(Debug)]
pub struct Relay<'a> {
    /// Decides what is traced.
    pub tracer: &'a Tracer,
    /// SIP tracing of the connection, if the listener has it.
    pub sip: Option<&'a SipConn<'a>>,
    /// Bytes (WS: message payloads) relayed client -> upstream.
    pub bytes_in: Tally<'a>,
    /// Bytes (WS: message payloads) relayed upstream -> client.
    pub bytes_out: Tally<'a>,
    /// Close after this long without a byte or a message either way.
    pub idle: Option<&'a Idle>,
    /// heptap is stopping.
    pub kill: &'a CancellationToken,
}

/// Relays bytes both ways. Plain TCP on both legs splits into owned halves (no lock per read);
/// a TLS leg is split through tokio's lock, which both halves only take within this task.
pub async fn relay_bytes(client: Stream, upstream: Stream, r: &Relay<'_>) -> Ends {
    match (client, upstream) {
        (Stream::Tcp(c), Stream::Tcp(u)) => {
            let (mut cr, mut cw) = c.into_split();
            let (mut ur, mut uw) = u.into_split();
            let ends = pump_both_ways(&mut cr, &mut cw, &mut ur, &mut uw, r).await;
            // Reunited: an owned write half dropped alone sends a FIN, which would beat the
            // reset.
            let (client, upstream) = (cr.reunite(cw).ok(), ur.reunite(uw).ok());
            pass_reset(&ends, client.as_ref(), upstream.as_ref());
            ends
        }
        (c, u) => {
            let (mut cr, mut cw) = tokio::io::split(c);
            let (mut ur, mut uw) = tokio::io::split(u);
            let ends = pump_both_ways(&mut cr, &mut cw, &mut ur, &mut uw, r).await;
            let (client, upstream) = (cr.unsplit(cw), ur.unsplit(uw));
            pass_reset(&ends, Some(client.tcp()), Some(upstream.tcp()));
            ends
        }
    }
}

/// A pump each way, each with its own SIP framer when the listener traces SIP.
async fn pump_both_ways<CR, CW, UR, UW>(
    cr: &mut CR,
    cw: &mut CW,
    ur: &mut UR,
    uw: &mut UW,
    r: &Relay<'_>,
) -> Ends
where
    CR: ReadSide,
    CW: AsyncWrite + Unpin,
    UR: ReadSide,
    UW: AsyncWrite + Unpin,
{
    let observer = |dir| r.sip.map(|conn| SipObserver::new(conn, r.tracer, dir));
    let mut to_upstream_sip = observer(Direction::ClientToUpstream);
    let mut to_client_sip = observer(Direction::UpstreamToClient);
    let to_upstream = pin!(pump(
        cr,
        uw,
        Direction::ClientToUpstream,
        r.bytes_in,
        r.idle,
        &mut to_upstream_sip,
    ));
    let to_client = pin!(pump(
        ur,
        cw,
        Direction::UpstreamToClient,
        r.bytes_out,
        r.idle,
        &mut to_client_sip,
    ));
    both_ways(to_upstream, to_client, after_half_close, r.kill).await
}

/// Relays messages both ways between two upgraded connections.
pub async fn relay_messages(
    client: WebSocketStream<Watched<Stream>>,
    upstream: WebSocketStream<Watched<Stream>>,
    r: &Relay<'_>,
) -> Ends {
    let (client_clock, upstream_clock) = (
        client.get_ref().clock().clone(),
        upstream.get_ref().clock().clone(),
    );
    let (mut c_tx, mut c_rx) = client.split();
    let (mut u_tx, mut u_rx) = upstream.split();
    let (client_pings, upstream_pings) = (Pings::default(), Pings::default());
    let to_upstream = OneWay {
        dir: Direction::ClientToUpstream,
        tracer: r.tracer,
        sip: r.sip,
        bytes: r.bytes_in,
        idle: r.idle,
        clock: &client_clock,
        pings: &client_pings,
        answered: &upstream_pings,
    };
    let to_client = OneWay {
        dir: Direction::UpstreamToClient,
        bytes: r.bytes_out,
        clock: &upstream_clock,
        pings: &upstream_pings,
        answered: &client_pings,
        ..to_upstream
    };
    let ends = both_ways(
        pin!(forward(&mut c_rx, &mut u_tx, &to_upstream)),
        pin!(forward(&mut u_rx, &mut c_tx, &to_client)),
        after_close_frame,
        r.kill,
    )
    .await;
    let (mut client, mut upstream) = (c_rx.reunite(c_tx).ok(), u_rx.reunite(u_tx).ok());
    for end in ends.both() {
        let offender = match end.side {
            Side::Client => client.as_mut(),
            Side::Upstream => upstream.as_mut(),
            Side::Heptap => None,
        };
        if let Some(ws) = offender {
            // Bounded (the close send, the linger), and cut short if heptap stops.
            tokio::select! {
                () = close_offender(ws, end) => {}
                () = r.kill.cancelled() => {}
            }
        }
    }
    pass_reset(
        &ends,
        client.as_ref().map(|ws| ws.get_ref().inner().tcp()),
        upstream.as_ref().map(|ws| ws.get_ref().inner().tcp()),
    );
    ends
}

/// What happens to the other direction once one direction has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// It goes on until it ends by itself.
    GoesOn,
    /// It gets this long to end by itself.
    GetsGrace(Duration),
    /// It is stopped now.
    Stops,
}

/// Bytes (TCP, TLS): an EOF was passed on as a half-close, and the other side may still have
/// things to say; anything else stops both.
fn after_half_close(end: &End) -> Then {
    if end.is_eof() {
        Then::GoesOn
    } else {
        Then::Stops
    }
}

/// Messages (WS, WSS): no half-close, but a relayed close frame gives the far side
/// [`CLOSE_GRACE`] to answer; anything else stops both.
fn after_close_frame(end: &End) -> Then {
    if end.is_close_frame() {
        Then::GetsGrace(CLOSE_GRACE)
    } else {
        Then::Stops
    }
}

/// Runs both directions until both have ended, or one has ended in a way that stops the other
/// (`then`), or heptap stops. A direction that did not end by itself ends on heptap's side.
///
/// The directions come pinned by the caller, not by value: an async fn keeps its arguments for
/// its whole life, so futures moved in and pinned here would be held twice in every
/// connection's task (about 1.6 KiB per idle connection).
pub async fn both_ways<U, C>(
    mut to_upstream: Pin<&mut U>,
    mut to_client: Pin<&mut C>,
    then: fn(&End) -> Then,
    kill: &CancellationToken,
) -> Ends
where
    U: Future<Output = End>,
    C: Future<Output = End>,
{
    let (mut up_end, mut client_end): (Option<End>, Option<End>) = (None, None);
    let mut deadline: Option<Instant> = None;
    let mut stopping = false;
    loop {
        tokio::select! {
            e = to_upstream.as_mut(), if up_end.is_none() => up_end = Some(e),
            e = to_client.as_mut(), if client_end.is_none() => client_end = Some(e),
            _ = grace(deadline), if deadline.is_some() => break,
            _ = kill.cancelled() => {
                stopping = true;
                break;
            }
        }
        let ended = match (&up_end, &client_end) {
            (Some(_), Some(_)) => break,
            (Some(e), None) | (None, Some(e)) => e,
            (None, None) => continue,
        };
        match then(ended) {
            Then::GoesOn => {}
            Then::GetsGrace(grace) => {
                deadline.get_or_insert_with(|| Instant::now() + grace);
            }
            Then::Stops => break,
        }
    }
    let by_heptap = || {
        let kind = if stopping {
            EndKind::Shutdown
        } else {
            EndKind::Cut
        };
        End::new(Side::Heptap, kind)
    };
    Ends {
        to_upstream: up_end.unwrap_or_else(by_heptap),
        to_client: client_end.unwrap_or_else(by_heptap),
    }
}

/// Waits until `deadline` (forever without one).
async fn grace(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A reset on one side is passed on as a reset on the other ([`Ends::reset_to_pass`]), so each
/// peer sees what it would have seen without heptap in the middle.
pub fn pass_reset(ends: &Ends, client: Option<&TcpStream>, upstream: Option<&TcpStream>) {
    let peer = match ends.reset_to_pass() {
        Some(Side::Client) => client,
        Some(Side::Upstream) => upstream,
        Some(Side::Heptap) | None => None,
    };
    if let Some(tcp) = peer {
        reset_on_drop(tcp);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io;

    use super::*;

    fn end(side: Side, kind: EndKind) -> End {
        End::new(side, kind)
    }

    #[tokio::test]
    async fn after_a_clean_eof_the_other_direction_goes_on_until_it_ends() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let kill = CancellationToken::new();
        let to_upstream = async { end(Side::Client, EndKind::Eof) };
        let to_client = async move {
            let _ = rx.await;
            end(Side::Upstream, EndKind::Eof)
        };
        let relay = tokio::spawn(async move {
            both_ways(pin!(to_upstream), pin!(to_client), after_half_close, &kill).await
        });
        tokio::task::yield_now().await;
        assert!(!relay.is_finished());
        tx.send(()).unwrap();
        let ends = relay.await.unwrap();
        assert!(ends.to_upstream.is_eof() && ends.to_client.is_eof());
    }

    #[tokio::test]
    async fn an_error_one_way_cuts_the_other_way() {
        let kill = CancellationToken::new();
        let failed = async {
            end(
                Side::Client,
                EndKind::Read(io::ErrorKind::ConnectionReset.into()),
            )
        };
        let ends = both_ways(
            pin!(failed),
            pin!(std::future::pending::<End>()),
            after_half_close,
            &kill,
        )
        .await;
        assert!(ends.to_upstream.is_reset());
        assert!(matches!(
            ends.to_client,
            End {
                side: Side::Heptap,
                kind: EndKind::Cut
            }
        ));
        assert_eq!(ends.reset_to_pass(), Some(Side::Upstream));
    }

    #[tokio::test]
    async fn a_close_frame_gives_the_other_way_its_grace_then_cuts_it() {
        let close = end(Side::Upstream, EndKind::CloseFrame(Some(1000)));
        assert_eq!(after_close_frame(&close), Then::GetsGrace(CLOSE_GRACE));
        assert_eq!(after_half_close(&close), Then::Stops);
        const GRACE: Duration = Duration::from_millis(20);
        let short_grace = |e: &End| match after_close_frame(e) {
            Then::GetsGrace(_) => Then::GetsGrace(GRACE),
            then => then,
        };
        let kill = CancellationToken::new();
        let started = Instant::now();
        let ends = both_ways(
            pin!(std::future::pending::<End>()),
            pin!(async { close }),
            short_grace,
            &kill,
        )
        .await;
        assert!(started.elapsed() >= GRACE);
        assert!(ends.to_client.is_close_frame());
        assert!(matches!(ends.to_upstream.kind, EndKind::Cut));
    }

    #[tokio::test]
    async fn heptap_stopping_ends_both_directions_on_its_side() {
        let kill = CancellationToken::new();
        kill.cancel();
        let ends = both_ways(
            pin!(std::future::pending::<End>()),
            pin!(std::future::pending::<End>()),
            after_half_close,
            &kill,
        )
        .await;
        for e in ends.both() {
            assert!(matches!(
                e,
                End {
                    side: Side::Heptap,
                    kind: EndKind::Shutdown
                }
            ));
        }
    }
}
