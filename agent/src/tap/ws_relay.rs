//! Per message: the WebSocket relay (WS and WSS) after both upgrades. It moves messages, not
//! bytes: each text, binary, ping, pong or close message read on one side is sent on the other.
//!
//! tungstenite answers every ping it reads by itself (that cannot be switched off); pings are
//! still relayed end to end so the far side sees them, and the far side's pong to a relayed ping
//! is dropped, since the pinging side already had its answer ([`Pings`]). Unsolicited pongs
//! (keep-alives) are relayed. Fragmented messages arrive reassembled and leave as one frame.
//!
//! What one message may cost is bounded both ways: tungstenite refuses a frame or a message over
//! the listener's `max_message_bytes` (it never buffers more), and a message still unfinished
//! `message_timeout` after its first byte is cut ([`super::ws_frames`]). Either ends the
//! direction on the side that sent it, which [`close_offender`] then closes with 1009 or 1008.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::events::{Direction, End, EndKind};
use super::pump::{Idle, LaneTurns, Tally};
use super::sip::SipConn;
use super::upgrade::linger_close;
use super::ws_frames::{MessageClock, Watched};
use crate::clock::now_micros;
use crate::tracer::Tracer;

/// How long the far side has to answer a relayed close before the connection is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Pings remembered per direction, to recognise the pongs that answer them.
const PING_MEMORY: usize = 8;

/// How long sending the close that ends an offending side may take.
const CLOSE_SEND: Duration = Duration::from_secs(1);

/// What one WebSocket message may cost: a listener's `max_message_bytes` and
/// `message_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageLimits {
    /// The largest message (and frame) read, in bytes.
    pub max_bytes: usize,
    /// How long a message may take from its first byte to its last.
    pub timeout: Duration,
}

/// tungstenite's settings: a read buffer sized like the byte relay's (its default, 128 KiB per
/// side, is too much for thousands of SIP connections), and `max_bytes` for a frame and for a
/// message, checked before anything is buffered for them.
fn config(max_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(max_bytes))
        .max_frame_size(Some(max_bytes))
}

/// A WebSocket over `stream` after an upgrade done here ([`super::upgrade`]), with the bytes
/// read past the HTTP head, its messages bounded by `limits` and watched by its
/// [`MessageClock`] (`stream.get_ref().clock()`).
pub async fn websocket<S>(
    stream: S,
    leftover: Vec<u8>,
    role: Role,
    limits: MessageLimits,
) -> WebSocketStream<Watched<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Arc::new(MessageClock::new(limits.timeout));
    let watched = Watched::new(stream, &leftover, clock);
    WebSocketStream::from_partially_read(watched, leftover, role, Some(config(limits.max_bytes)))
        .await
}

/// Pings relayed one way, until the pong answering them comes back.
#[derive(Debug, Default)]
pub struct Pings(Mutex<VecDeque<Bytes>>);

impl Pings {
    /// A ping was relayed.
    fn sent(&self, payload: &Bytes) {
        if let Ok(mut q) = self.0.lock() {
            if q.len() == PING_MEMORY {
                q.pop_front();
            }
            q.push_back(payload.clone());
        }
    }

    /// Whether a pong answers a relayed ping (which tungstenite already answered).
    fn answers(&self, payload: &Bytes) -> bool {
        let Ok(mut q) = self.0.lock() else {
            return false;
        };
        match q.iter().position(|p| p == payload) {
            Some(i) => {
                q.remove(i);
                true
            }
            None => false,
        }
    }
}

/// What one direction of a WebSocket relay works with.
#[derive(Debug)]
pub struct OneWay<'a> {
    /// Which way it relays.
    pub dir: Direction,
    /// Decides what is traced.
    pub tracer: &'a Tracer,
    /// SIP tracing of the connection, if the listener has it.
    pub sip: Option<&'a SipConn<'a>>,
    /// Payload bytes relayed this way.
    pub bytes: Tally<'a>,
    /// Close after this long without a message either way.
    pub idle: Option<&'a Idle>,
    /// Times the message arriving from the source.
    pub clock: &'a MessageClock,
    /// The pings relayed this way.
    pub pings: &'a Pings,
    /// The pings relayed the other way, whose pongs are not relayed.
    pub answered: &'a Pings,
}

/// One direction: each message read from `src` is sent on `dst`, until one side closes or
/// fails.
pub async fn forward<S, D>(src: &mut S, dst: &mut D, way: &OneWay<'_>) -> End
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
    D: Sink<Message, Error = WsError> + Unpin,
{
    let dir = way.dir;
    let mut turns = LaneTurns::default();
    let too_slow = || End::new(dir.reader(), EndKind::MessageTimeout(way.clock.timeout()));
    loop {
        let next = match way.idle {
            Some(idle) => match idle.read(way.clock.read(src.next())).await {
                Some(Some(n)) => n,
                Some(None) => return too_slow(),
                None => return End::new(dir.reader(), EndKind::Idle),
            },
            None => match way.clock.read(src.next()).await {
                Some(n) => n,
                None => return too_slow(),
            },
        };
        if let Some(idle) = way.idle {
            idle.touch();
        }
        let msg = match next {
            None => return End::new(dir.reader(), EndKind::Eof),
            Some(Ok(m)) => m,
            Some(Err(e)) => return End::new(dir.reader(), read_end(e)),
        };
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                let traced = way.sip.map(|conn| {
                    let payload = match &msg {
                        Message::Text(t) => Bytes::from(t.clone()),
                        Message::Binary(b) => b.clone(),
                        _ => Bytes::new(),
                    };
                    (conn, payload, now_micros())
                });
                let len = msg.len() as u64;
                if let Err(e) = dst.send(msg).await {
                    return End::new(dir.writer(), write_end(e));
                }
                way.bytes.add(len);
                if let Some((conn, payload, read_at)) = traced {
                    conn.frame(way.tracer, dir, payload, read_at);
                    turns.after(1).await;
                }
            }
            Message::Ping(p) => {
                way.pings.sent(&p);
                if let Err(e) = dst.send(Message::Ping(p)).await {
                    return End::new(dir.writer(), write_end(e));
                }
            }
            Message::Pong(p) => {
                if !way.answered.answers(&p)
                    && let Err(e) = dst.send(Message::Pong(p)).await
                {
                    return End::new(dir.writer(), write_end(e));
                }
            }
            Message::Close(frame) => {
                let code = frame.as_ref().map(|f| u16::from(f.code));
                // The far side may have closed too; then there is nothing to tell it.
                let _ = dst.send(Message::Close(frame)).await;
                // Reading on lets tungstenite send its close reply and finish this side.
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    while let Some(Ok(_)) = src.next().await {}
                })
                .await;
                return End::new(dir.reader(), EndKind::CloseFrame(code));
            }
            Message::Frame(_) => {}
        }
    }
}

/// How a failed read ends a direction.
fn read_end(e: WsError) -> EndKind {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match e {
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => EndKind::Eof,
        WsError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => EndKind::Eof,
        WsError::Io(e) => EndKind::Read(e),
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            EndKind::MessageTooBig {
                size,
                max: max_size,
            }
        }
        e => EndKind::Read(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
    }
}

/// Closes `ws`, whose side sent what ended the relay with `end`, with the close code heptap owes
/// it (1009, 1008; nothing for other ends), then lingers as an HTTP server does: its side shut
/// down, what the peer still sends read and dropped for a while, so the close frame is read
/// rather than lost to a reset.
pub async fn close_offender<S>(ws: &mut WebSocketStream<S>, end: &End)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some((code, reason)) = end.close_owed() else {
        return;
    };
    let close = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    // A peer that does not read cannot hold us: the close is best effort.
    let _ = tokio::time::timeout(CLOSE_SEND, ws.close(Some(close))).await;
    linger_close(ws.get_mut()).await;
}

/// How a failed send ends a direction.
fn write_end(e: WsError) -> EndKind {
    match e {
        WsError::Io(e) => EndKind::Write(e),
        e => EndKind::Write(io::Error::new(io::ErrorKind::BrokenPipe, e.to_string())),
    }
}
