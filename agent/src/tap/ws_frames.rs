//! Per read, WS and WSS: where WebSocket messages begin and end on the wire, seen below
//! tungstenite, so that a message still unfinished `message_timeout` after its first byte can be
//! cut. tungstenite bounds a message's size (`max_message_bytes`) but keeps its fragments for as
//! long as the sender takes, and cannot say since when a message has been arriving.
//!
//! [`Watched`] wraps a leg's stream and shows each read to a [`FrameScan`] (the frame headers
//! of RFC 6455 §5.2, parsed by tungstenite's own `FrameHeader`; payloads are skipped, nothing is
//! copied or allocated), which tells the leg's [`MessageClock`] when a message opens and when
//! it is complete. The relay waits for each message under that clock ([`MessageClock::read`]).

use std::io::{self, Cursor};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode;

/// The longest frame header: 2 bytes, a 64-bit length, a 4-byte mask key.
const MAX_HEADER: usize = 14;

/// Where the scan is in the current frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// Reading a header; this many of its bytes are held (0: between frames).
    Header(usize),
    /// Skipping a payload; this many bytes are still to come.
    Payload(u64),
    /// A header tungstenite refuses (a reserved opcode): it fails the connection on it, so
    /// there is nothing more to time.
    Refused,
}

/// What a read did to the messages of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A message (or a lone control frame) began in these bytes and is not complete.
    Opened,
    /// The message that was open is complete, and no other one began.
    Completed,
    /// Neither: nothing was open or opened, or the open message goes on.
    Same,
}

/// Frame boundaries of one direction of a WebSocket, from its bytes as read.
#[derive(Clone, Debug)]
pub struct FrameScan {
    /// The header being read.
    header: [u8; MAX_HEADER],
    /// Header or payload.
    at: At,
    /// The current frame ends a data message (a final data frame).
    ends_message: bool,
    /// A fragmented data message has begun and its final frame is still to come.
    in_message: bool,
}

impl Default for FrameScan {
    fn default() -> Self {
        Self {
            header: [0; MAX_HEADER],
            at: At::Header(0),
            ends_message: false,
            in_message: false,
        }
    }
}

impl FrameScan {
    /// Whether a message, or a frame, is under way: its first byte has been read, its last not
    /// yet.
    pub fn is_open(&self) -> bool {
        match self.at {
            At::Refused => false,
            At::Header(have) => self.in_message || have > 0,
            At::Payload(_) => true,
        }
    }

    /// Reads `data`, the next bytes of the stream; says what that did to its messages.
    pub fn feed(&mut self, mut data: &[u8]) -> Change {
        let was_open = self.is_open();
        // A message (or control frame) completed within `data`: what is open now began here.
        let mut completed = false;
        while !data.is_empty() {
            let used = match self.at {
                At::Header(have) => self.header(data, have),
                At::Payload(left) => self.payload(data, left),
                At::Refused => data.len(),
            };
            data = data.get(used..).unwrap_or_default();
            completed |= !self.is_open();
        }
        match (was_open, self.is_open()) {
            (false, true) => Change::Opened,
            (true, true) if completed => Change::Opened,
            (true, false) => Change::Completed,
            _ => Change::Same,
        }
    }

    /// Header bytes: returns how many of `data` it took (none past the header).
    fn header(&mut self, data: &[u8], have: usize) -> usize {
        let take = (MAX_HEADER - have).min(data.len());
        self.header[have..have + take].copy_from_slice(&data[..take]);
        let mut held = Cursor::new(&self.header[..have + take]);
        match FrameHeader::parse(&mut held) {
            Ok(Some((header, len))) => {
                // The header's own bytes; what followed it in `data` is payload.
                let end = usize::try_from(held.position()).unwrap_or(have + take);
                self.begin_frame(&header, len);
                end.saturating_sub(have)
            }
            Ok(None) => {
                self.at = At::Header(have + take);
                take
            }
            Err(_) => {
                self.at = At::Refused;
                data.len()
            }
        }
    }

    /// A whole header is read: the frame's payload comes next.
    fn begin_frame(&mut self, header: &FrameHeader, len: u64) {
        // Control frames come between fragments without touching the message.
        if let OpCode::Data(_) = header.opcode {
            self.ends_message = header.is_final;
            self.in_message |= !header.is_final;
        } else {
            self.ends_message = false;
        }
        self.at = At::Payload(len);
        if len == 0 {
            self.end_frame();
        }
    }

    /// Payload bytes, skipped: returns how many of `data` it took.
    fn payload(&mut self, data: &[u8], left: u64) -> usize {
        let take = u64::try_from(data.len()).map_or(left, |n| n.min(left));
        if take == left {
            self.end_frame();
        } else {
            self.at = At::Payload(left - take);
        }
        // take <= data.len(), so it fits.
        usize::try_from(take).unwrap_or(data.len())
    }

    /// The frame's last byte is read.
    fn end_frame(&mut self) {
        if self.ends_message {
            self.in_message = false;
            self.ends_message = false;
        }
        self.at = At::Header(0);
    }
}

/// Since when the message under way on one direction has been arriving, against
/// `message_timeout`. Written by that direction's [`Watched`] stream, read by its relay.
#[derive(Debug)]
pub struct MessageClock {
    /// `message_timeout`.
    timeout: Duration,
    /// Where `opened` counts from.
    start: Instant,
    /// Microseconds from `start` to the open message's first byte, plus one; 0 when none is
    /// open. Written only when a message opens or completes.
    opened: AtomicU64,
}

impl MessageClock {
    /// A clock with nothing open.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            start: Instant::now(),
            opened: AtomicU64::new(0),
        }
    }

    /// `message_timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// What a read did ([`FrameScan::feed`]).
    fn change(&self, change: Change) {
        match change {
            Change::Opened => {
                let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.opened.store(us.saturating_add(1), Ordering::Relaxed);
            }
            Change::Completed => self.opened.store(0, Ordering::Relaxed),
            Change::Same => {}
        }
    }

    /// When the open message runs out of time; None when none is open.
    fn deadline(&self) -> Option<Instant> {
        match self.opened.load(Ordering::Relaxed) {
            0 => None,
            us => Some(self.start + Duration::from_micros(us - 1) + self.timeout),
        }
    }

    /// Waits for `read` (the next message) until it completes, or until the message under way
    /// runs out of time (then `read`, a cancel-safe read, is dropped and None returned). The
    /// deadline is looked at again whenever the read is woken, that is whenever bytes arrive,
    /// so a message that opens during the wait is timed from its first byte.
    pub async fn read<F: Future>(&self, read: F) -> Option<F::Output> {
        let mut read = pin!(read);
        let mut timer: Pin<&mut Option<Sleep>> = pin!(None);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = read.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            let Some(deadline) = self.deadline() else {
                return Poll::Pending;
            };
            if timer.as_ref().as_pin_ref().map(|t| t.deadline()) != Some(deadline) {
                timer.set(Some(tokio::time::sleep_until(deadline)));
            }
            match timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(None),
                _ => Poll::Pending,
            }
        })
        .await
    }
}

/// A leg's stream with its frames watched: every byte read is shown to a [`FrameScan`] and
/// moves the leg's [`MessageClock`]. Writes pass straight through.
#[derive(Debug)]
pub struct Watched<S> {
    /// The stream.
    inner: S,
    /// Frame boundaries so far.
    scan: FrameScan,
    /// Told when a message opens or completes.
    clock: Arc<MessageClock>,
}

impl<S> Watched<S> {
    /// Watches `inner`, whose first bytes `leftover` were already read (behind the upgrade's
    /// HTTP head) and go to tungstenite directly.
    pub fn new(inner: S, leftover: &[u8], clock: Arc<MessageClock>) -> Self {
        let mut scan = FrameScan::default();
        clock.change(scan.feed(leftover));
        Self { inner, scan, clock }
    }

    /// The stream.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The clock of what is read here.
    pub fn clock(&self) -> &Arc<MessageClock> {
        &self.clock
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && let Some(read) = buf.filled().get(before..).filter(|r| !r.is_empty())
        {
            let this = &mut *self;
            this.clock.change(this.scan.feed(read));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A frame as a client writes it (masked; the payload's bytes do not matter here).
    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let header = FrameHeader {
            is_final: fin,
            opcode: OpCode::from(opcode),
            mask: Some([1, 2, 3, 4]),
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        header.format(len as u64, &mut out).unwrap();
        out.resize(out.len() + len, b'x');
        out
    }

    #[test]
    fn a_header_tungstenite_refuses_ends_the_watch() {
        let mut scan = FrameScan::default();
        assert_eq!(scan.feed(&[0x83, 0x80, 1, 2, 3, 4, 9, 9]), Change::Same);
        assert!(!scan.is_open());
    }

    #[test]
    fn whole_messages_in_one_read_open_nothing() {
        let mut scan = FrameScan::default();
        let reads = [
            frame(true, 1, 5),
            frame(true, 2, 300),
            frame(true, 2, 70_000),
        ]
        .concat();
        assert_eq!(scan.feed(&reads), Change::Same);
        assert!(!scan.is_open());
    }

    #[test]
    fn a_message_opens_at_its_first_byte_and_completes_at_its_last_however_it_is_split() {
        let msg = [
            frame(false, 2, 1000),
            frame(true, 9, 3), // a ping between fragments
            frame(false, 0, 200),
            frame(true, 0, 130),
        ]
        .concat();
        for step in [1, 2, 7, 13, 999, msg.len() - 1] {
            let mut scan = FrameScan::default();
            let changes: Vec<Change> = msg.chunks(step).map(|c| scan.feed(c)).collect();
            assert_eq!(changes[0], Change::Opened, "reads of {step}");
            assert_eq!(changes.last(), Some(&Change::Completed), "reads of {step}");
            assert!(
                changes[1..changes.len() - 1]
                    .iter()
                    .all(|c| *c == Change::Same),
                "reads of {step}: {changes:?}"
            );
            assert!(!scan.is_open());
        }
    }

    #[test]
    fn the_end_of_one_message_and_the_start_of_the_next_in_one_read_reopen_the_clock() {
        let mut scan = FrameScan::default();
        let first = frame(true, 1, 10);
        assert_eq!(scan.feed(&first[..4]), Change::Opened);
        let rest = [&first[4..], &frame(false, 1, 10)[..]].concat();
        assert_eq!(scan.feed(&rest), Change::Opened);
        assert_eq!(scan.feed(&frame(true, 0, 0)), Change::Completed);
    }

    #[test]
    fn an_unmasked_server_frame_and_a_header_split_byte_by_byte_are_read() {
        let mut scan = FrameScan::default();
        let server = [0x82u8, 126, 0x01, 0x00];
        for b in server {
            assert!(matches!(scan.feed(&[b]), Change::Opened | Change::Same));
        }
        assert_eq!(scan.at, At::Payload(256));
        assert_eq!(scan.feed(&[0; 256]), Change::Completed);
    }

    #[tokio::test]
    async fn a_read_is_cut_when_the_open_message_runs_out_of_time_and_not_before() {
        const TIMEOUT: Duration = Duration::from_millis(100);
        let clock = MessageClock::new(TIMEOUT);
        // Nothing open: the read waits as long as it takes.
        let quick = clock.read(async {
            tokio::time::sleep(2 * TIMEOUT).await;
            1
        });
        assert_eq!(quick.await, Some(1));
        let started = Instant::now();
        clock.change(Change::Opened);
        let slow = clock.read(std::future::pending::<()>());
        assert_eq!(slow.await, None);
        let after = started.elapsed();
        let early = TIMEOUT - Duration::from_millis(1);
        assert!(after >= early && after < 20 * TIMEOUT, "{after:?}");
        clock.change(Change::Completed);
        assert_eq!(clock.deadline(), None);
    }

    #[tokio::test]
    async fn watched_reads_move_the_clock_and_pass_the_bytes_unchanged() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut far, near) = tokio::io::duplex(64);
        let clock = Arc::new(MessageClock::new(Duration::from_secs(1)));
        let half = frame(false, 2, 3);
        let mut watched = Watched::new(near, &half[..2], clock.clone());
        assert!(clock.deadline().is_some(), "the leftover opened a message");
        far.write_all(&half[2..]).await.unwrap();
        far.write_all(&frame(true, 0, 1)).await.unwrap();
        let mut got = vec![0u8; half.len() - 2 + 7];
        watched.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..half.len() - 2], &half[2..]);
        assert_eq!(clock.deadline(), None, "the final fragment completed it");
    }
}
