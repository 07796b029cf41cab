//! One MI HTTP connection's clock and switches: when the request being read sent its first
//! byte, whether requests are being answered or commands run, when it last got an answer, and
//! the tokens that close it. The service (mod.rs) and the slots (slots.rs) share it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The instants of a connection's life that its deadlines count from.
#[derive(Debug)]
struct Times {
    /// When the first byte of the request being read arrived (HTTP/1.x); cleared after each
    /// answer, so the next request's deadline counts from its own first byte.
    first_byte: Option<Instant>,
    /// When the connection opened or last finished answering a request: idle expiry.
    last_done: Instant,
    /// When the connection opened or last got an answer that was not a timeout: how long it
    /// has waited, which decides who makes room for a new connection.
    last_answered: Instant,
}

/// A connection's shared state.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// Requests being answered (head read, answer not yet handed to hyper).
    busy: AtomicUsize,
    /// Commands running for this connection: it is never closed to make room meanwhile.
    executing: AtomicUsize,
    /// See [`Times`].
    times: Mutex<Times>,
    /// Cancelled to drop the connection now (it made room for a new one).
    evict: CancellationToken,
    /// Cancelled to stop taking requests and close once the in-flight ones are answered (one
    /// of its requests timed out).
    finish: CancellationToken,
}

impl ConnState {
    pub(crate) fn new() -> Arc<Self> {
        let now = Instant::now();
        Arc::new(ConnState {
            busy: AtomicUsize::new(0),
            executing: AtomicUsize::new(0),
            times: Mutex::new(Times {
                first_byte: None,
                last_done: now,
                last_answered: now,
            }),
            evict: CancellationToken::new(),
            finish: CancellationToken::new(),
        })
    }

    fn times(&self) -> MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived: the first of a request if none is pending.
    fn bytes_arrived(&self) {
        let mut t = self.times();
        if t.first_byte.is_none() {
            t.first_byte = Some(Instant::now());
        }
    }

    /// When the HTTP/1.x request whose head was just read sent its first byte (now when its
    /// bytes came with the previous request's).
    pub(crate) fn request_started(&self) -> Instant {
        self.times().first_byte.unwrap_or_else(Instant::now)
    }

    /// Marks a request as being answered until the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(self))
    }

    /// Marks a command as running until the guard is dropped.
    pub(crate) fn executing(self: &Arc<Self>) -> Executing {
        self.executing.fetch_add(1, Ordering::SeqCst);
        Executing(Arc::clone(self))
    }

    /// A request got an answer that was not a timeout.
    pub(crate) fn answered(&self) {
        self.times().last_answered = Instant::now();
    }

    /// Whether a command is running for this connection.
    pub(crate) fn is_executing(&self) -> bool {
        self.executing.load(Ordering::SeqCst) > 0
    }

    /// Since when the connection has been waiting for an answer (or idle).
    pub(crate) fn waiting_since(&self) -> Instant {
        self.times().last_answered
    }

    /// Drops the connection now.
    pub(crate) fn evict(&self) {
        self.evict.cancel();
    }

    /// Whether the connection was told to go.
    #[cfg(test)]
    pub(crate) fn is_evicted(&self) -> bool {
        self.evict.is_cancelled()
    }

    /// Resolves once the connection is to be dropped at once.
    pub(crate) async fn evicted(&self) {
        self.evict.cancelled().await;
    }

    /// Takes no more requests on this connection and closes it after the in-flight ones.
    pub(crate) fn finish(&self) {
        self.finish.cancel();
    }

    /// Resolves once the connection is to be closed after its in-flight requests.
    pub(crate) async fn finishing(&self) {
        self.finish.cancelled().await;
    }

    /// Resolves once no request has been answered or in progress for `idle`: a connection that
    /// holds its slot without a request (half a head, a silent client, an idle keep-alive, an
    /// HTTP/2 preface alone) is closed.
    pub(crate) async fn idle_expired(&self, idle: Duration) {
        loop {
            let last = self.times().last_done;
            let next = if self.busy.load(Ordering::SeqCst) > 0 {
                Instant::now() + idle
            } else if last.elapsed() >= idle {
                return;
            } else {
                last + idle
            };
            tokio::time::sleep_until(next.into()).await;
        }
    }
}

/// A request being answered.
#[derive(Debug)]
pub(crate) struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        {
            let mut t = self.0.times();
            t.last_done = Instant::now();
            t.first_byte = None;
        }
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A command running.
#[derive(Debug)]
pub(crate) struct Executing(Arc<ConnState>);

impl Drop for Executing {
    fn drop(&mut self) {
        self.0.executing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connection's socket, noting when request bytes arrive (for deadlines that count from
/// a request's first byte).
#[derive(Debug)]
pub(crate) struct Clocked {
    /// The socket.
    inner: TcpStream,
    /// Where arrivals are noted.
    state: Arc<ConnState>,
}

impl Clocked {
    pub(crate) fn new(inner: TcpStream, state: Arc<ConnState>) -> Self {
        Clocked { inner, state }
    }
}

impl Drop for Clocked {
    /// A connection closed to make room is reset rather than closed: heptap keeps no
    /// TIME_WAIT for it, so clients turned away in numbers cannot fill the port space that a
    /// new connection (the operator's) needs.
    fn drop(&mut self) {
        if self.state.evict.is_cancelled() {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for Clocked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Clocked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
