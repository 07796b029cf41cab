//! Per read: the byte pump that relays one direction of a TCP or TLS connection, and what it
//! shares with the WebSocket message relay (the idle timeout, the lanes' turns).
//!
//! The bytes are sacred: each read is written on unchanged (and flushed, which TLS needs) before
//! the next read, an EOF is passed on as a half-close, and tracing only looks, after the write.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::events::{Direction, End, EndKind};
use super::sip::Observe;
use crate::clock::now_micros;
use crate::stats::Counter;

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
pub struct LaneTurns {
    /// Messages handed to tracing since the last yield.
    since: usize,
}

impl LaneTurns {
    /// Counts `messages` just handed to tracing; yields once enough have been.
    pub async fn after(&mut self, messages: usize) {
        self.since += messages;
        if self.since >= YIELD_AFTER_MESSAGES {
            self.since = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// Where a direction counts what it relayed: the listener's total and the connection's own
/// (`list_tcp_conns`). Two relaxed adds per read.
#[derive(Clone, Copy, Debug)]
pub struct Tally<'a> {
    /// The listener's `bytes_in` or `bytes_out`.
    pub total: &'a Counter,
    /// The connection's.
    pub conn: &'a AtomicU64,
}

impl Tally<'_> {
    /// `n` more bytes relayed.
    pub fn add(&self, n: u64) {
        self.total.add(n);
        self.conn.fetch_add(n, Ordering::Relaxed);
    }
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

    /// When the connection is idle if nothing moves before (`list_tcp_conns`' `Lifetime`).
    pub fn deadline(&self) -> std::time::Instant {
        let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
        (last + self.timeout).into_std()
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

/// The read side of a relay direction, as [`pump`] sees it. Implemented for the owned read half
/// of a plain TCP socket and for tokio's split half of anything else (TLS), so each pump is
/// compiled for its reader: no dynamic dispatch per read.
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
    dir: Direction,
    bytes: Tally<'_>,
    idle: Option<&Idle>,
    obs: &mut impl Observe,
) -> End
where
    R: ReadSide,
    W: AsyncWrite + Unpin,
{
    let read_end = |kind| End::new(dir.reader(), kind);
    let write_end = |e| End::new(dir.writer(), EndKind::Write(e));
    let mut size = FIRST_BUF_SIZE;
    let mut buf: Vec<u8> = Vec::new();
    let mut turns = LaneTurns::default();
    loop {
        if buf.capacity() == 0 {
            if R::WAITS {
                let ready = match idle {
                    Some(idle) => match idle.read(r.readable()).await {
                        Some(r) => r,
                        None => return read_end(EndKind::Idle),
                    },
                    None => r.readable().await,
                };
                if let Err(e) = ready {
                    return read_end(EndKind::Read(e));
                }
            }
            buf = Vec::with_capacity(size);
        }
        buf.clear();
        // Into the spare capacity: nothing to zero first.
        let read = match idle {
            Some(idle) => match idle.read(r.read_buf(&mut buf)).await {
                Some(r) => r,
                None => return read_end(EndKind::Idle),
            },
            None => r.read_buf(&mut buf).await,
        };
        let n = match read {
            // A TLS peer that closes its socket without close_notify: an EOF all the same.
            Ok(0) => return half_close(&mut w, dir).await,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return half_close(&mut w, dir).await;
            }
            Ok(n) => n,
            Err(e) => return read_end(EndKind::Read(e)),
        };
        if let Some(idle) = idle {
            idle.touch();
        }
        let read_at = if obs.wants_time() { now_micros() } else { 0 };
        if let Err(e) = w.write_all(&buf[..n]).await {
            return write_end(e);
        }
        if let Err(e) = w.flush().await {
            return write_end(e);
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
async fn half_close<W: AsyncWrite + Unpin>(w: &mut W, dir: Direction) -> End {
    match w.shutdown().await {
        Ok(()) => End::new(dir.reader(), EndKind::Eof),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => End::new(dir.reader(), EndKind::Eof),
        Err(e) => End::new(dir.writer(), EndKind::Write(e)),
    }
}
