//! Cutting one direction of a TCP/TLS connection into SIP messages (RFC 3261 §18.3).
//!
//! The relay forwards every byte whatever happens here; this only decides what gets traced. The
//! work per read is in [`SipFramer::push_framed`]: `idle` (keep-alives, then whole messages
//! straight from the read), `head_buffered` / `body_buffered` (a message split across reads),
//! `skip` (an oversize body) and `resync` (garbage, looking for the next start line).
//!
//! What the framer cannot cut into whole messages is reported as it happens
//! ([`Framed::Lost`], with a [`LostReason`] and the head when it could be read), so that SIP the
//! proxy received is never silently missing from the trace.

use std::fmt;
use std::mem;

use bytes::{Bytes, BytesMut};
use memchr::memchr;

use super::head::{HeadIndex, LengthError, find_head_end, start_line, stream_head};

/// Framing limits: they bound the memory one direction of one connection can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of a start line plus headers plus the empty line. A head that has no empty line
    /// within this many bytes is malformed; a line this long is not SIP at all (the framer gives
    /// up). Clamped to 16..=`max_message_bytes`.
    pub max_header_bytes: usize,
    /// Most bytes of a whole message (head plus Content-Length) that is buffered and traced. A
    /// longer one is "oversize": its head is offered, its body skipped as it passes, never held.
    /// At least 16.
    pub max_message_bytes: usize,
    /// Most bytes skipped while looking for the next start line after malformed input before the
    /// framer stops tracing the connection.
    pub max_resync_bytes: usize,
}

/// OpenSIPS's largest SIP message over TCP (`BUF_SIZE`), head included.
pub const OPENSIPS_MAX_MESSAGE: usize = 65_535;

impl Default for Limits {
    /// Messages, and so heads, up to OpenSIPS's 65,535 bytes (a HEP3 frame, length field u16,
    /// cannot carry a larger one anyway); 64 KiB of garbage before giving up.
    fn default() -> Self {
        Self::for_messages(OPENSIPS_MAX_MESSAGE)
    }
}

impl Limits {
    /// Messages up to `max_message_bytes`, heads as long as a whole message (what a proxy that
    /// reads a message into one buffer, as OpenSIPS does, accepts), 64 KiB of garbage before
    /// giving up.
    pub fn for_messages(max_message_bytes: usize) -> Self {
        Self {
            max_header_bytes: max_message_bytes,
            max_message_bytes,
            max_resync_bytes: 64 * 1024,
        }
    }
}

/// What happened on one direction of a connection, for the statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FramerCounters {
    /// Whole messages handed out.
    pub messages: u64,
    /// CRLF keep-alives skipped: each RFC 5626 ping (CRLFCRLF) or pong (CRLF) counts one.
    pub keepalives: u64,
    /// Times the stream stopped being SIP (bad start line, no or bad Content-Length, a head
    /// beyond `max_header_bytes`) and the framer started looking for the next start line.
    pub malformed: u64,
    /// Messages beyond `max_message_bytes`: head offered, body skipped.
    pub oversize: u64,
    /// 1 once the framer stopped tracing SIP on this stream (no start line found in time).
    pub gave_up: u64,
}

impl FramerCounters {
    /// The counts that happened after `earlier` was read.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            messages: self.messages.wrapping_sub(earlier.messages),
            keepalives: self.keepalives.wrapping_sub(earlier.keepalives),
            malformed: self.malformed.wrapping_sub(earlier.malformed),
            oversize: self.oversize.wrapping_sub(earlier.oversize),
            gave_up: self.gave_up.wrapping_sub(earlier.gave_up),
        }
    }
}

/// One thing the framer found in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framed {
    /// A whole SIP message: start line, headers, empty line, Content-Length bytes of body; and
    /// where its Call-ID and CSeq lie, found while framing it (no second walk of its headers).
    Message(Bytes, HeadIndex),
    /// A message longer than `max_message_bytes`: only its head (start line to empty line), so
    /// the caller can still count or log it; the body passes without being held.
    Oversize {
        /// Start line, headers and the empty line.
        head: Bytes,
        /// The declared body length.
        content_length: u64,
    },
    /// Bytes the framer could not cut into a message (the relay passed them on all the same).
    Lost {
        /// Why.
        reason: LostReason,
        /// How many bytes it judged: the line, the head, or what was skipped.
        bytes: u64,
        /// The head (start line to empty line), when a whole one was read: a SIP message the
        /// proxy may well accept, to be traced all the same.
        head: Option<Bytes>,
    },
}

/// Why SIP on a stream could not be traced whole: reported by the framer ([`Framed::Lost`]),
/// and by the tracer for the last two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// The first line is not a SIP start line.
    NotSip,
    /// A head without Content-Length, mandatory on streams.
    NoContentLength,
    /// A Content-Length that is not a number.
    BadContentLength,
    /// Content-Length headers that disagree: where the body ends depends on who reads it.
    ConflictingContentLength {
        /// The first value (OpenSIPS and Kamailio frame by it).
        first: u64,
        /// The first later one unlike it.
        other: u64,
    },
    /// No empty line within `max_header_bytes`.
    HeadTooLong {
        /// The header bound.
        max: usize,
    },
    /// A line of `max_header_bytes` or more: SIP is no longer traced on this direction.
    LineTooLong {
        /// The header bound.
        max: usize,
    },
    /// No start line after `max_resync_bytes` of malformed input: SIP is no longer traced on
    /// this direction.
    NoStartLine,
    /// A message over `max_message_bytes` ([`Framed::Oversize`]): relayed, its head traced.
    TooLarge {
        /// The message bound.
        max: usize,
    },
    /// A message too large for one HEP packet: its head traced.
    TooLargeForHep,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const STOPPED: &str = "SIP tracing stopped on this direction";
        match self {
            LostReason::NotSip => f.write_str("not a SIP start line"),
            LostReason::NoContentLength => f.write_str("no Content-Length"),
            LostReason::BadContentLength => f.write_str("Content-Length is not a number"),
            LostReason::ConflictingContentLength { first, other } => {
                write!(f, "Content-Length headers disagree ({first}, {other})")
            }
            LostReason::HeadTooLong { max } => write!(f, "no end of headers within {max} bytes"),
            LostReason::LineTooLong { max } => {
                write!(f, "a line of {max} bytes or more, {STOPPED}")
            }
            LostReason::NoStartLine => write!(f, "no SIP start line in sight, {STOPPED}"),
            LostReason::TooLarge { max } => {
                write!(f, "a message over max_message_bytes ({max})")
            }
            LostReason::TooLargeForHep => f.write_str("a message too large for one HEP packet"),
        }
    }
}

/// How far the head being received has been searched, so bytes arriving one at a time are not
/// searched again each time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct HeadScan {
    /// Offset just past the start line's LF once it has been seen and checked, else 0.
    start_line_end: usize,
    /// Where to resume searching for the start line's LF or the empty line.
    scanned: usize,
}

/// Where the framer is in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between messages: CR and LF are keep-alives, anything else starts a message. The buffer
    /// is empty.
    Idle,
    /// The buffer holds the start of a head, no empty line yet.
    Head(HeadScan),
    /// The buffer holds the head and part of the body of a message `total` bytes long (buffer
    /// capacity already `total`).
    Body {
        /// Head plus Content-Length.
        total: usize,
        /// What the head's walk found.
        index: HeadIndex,
    },
    /// Passing the body of an oversize message: this many bytes still to skip.
    Skip {
        /// Body bytes not seen yet.
        remaining: u64,
    },
    /// Looking for a start line at the beginning of a line; the buffer holds the current line so
    /// far (no LF in it).
    Resync {
        /// Bytes of whole lines skipped so far in this search.
        skipped: usize,
    },
    /// Gave up on this stream: every push is a no-op.
    Stopped,
}

/// What a head seen from its first byte says, within `max_header_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    /// No verdict yet: more bytes are needed (and fit within the limit).
    NeedMore,
    /// No LF within `max_header_bytes`: a line that long is not SIP.
    LineTooLong,
    /// The first line is not a SIP start line; look again from `line_end`.
    BadStartLine {
        /// Offset just past the first line's LF.
        line_end: usize,
    },
    /// No empty line within `max_header_bytes`; look again from the start of the last
    /// (incomplete) line seen.
    HeadTooLong {
        /// Offset just past the last LF within the limit.
        last_line_end: usize,
    },
    /// The header section has no usable Content-Length (missing, not a number, conflicting).
    NoLength {
        /// Offset just past the empty line.
        head_end: usize,
        /// Which of the three.
        reason: LostReason,
    },
    /// A head to frame: `head_end + content_length` bytes.
    Frame {
        /// Offset just past the empty line.
        head_end: usize,
        /// The declared body length.
        content_length: u64,
        /// Where its Call-ID and CSeq lie.
        index: HeadIndex,
    },
}

/// The verdict on the head that starts at `win[0]` (never a CR or LF), looking only at its first
/// `max_header` bytes so that the verdict does not depend on how the stream was split.
fn decide(win: &[u8], scan: &mut HeadScan, max_header: usize) -> Decision {
    let full = win.len() >= max_header;
    let view = &win[..win.len().min(max_header)];
    if scan.start_line_end == 0 {
        let from = scan.scanned.min(view.len());
        let Some(k) = memchr(b'\n', &view[from..]) else {
            if full {
                return Decision::LineTooLong;
            }
            scan.scanned = view.len();
            return Decision::NeedMore;
        };
        let lf = from + k;
        let line = &view[..lf];
        if start_line(line.strip_suffix(b"\r").unwrap_or(line)).is_none() {
            return Decision::BadStartLine { line_end: lf + 1 };
        }
        scan.start_line_end = lf + 1;
        scan.scanned = lf;
    }
    match find_head_end(view, scan.scanned) {
        Ok(head_end) => {
            match stream_head(&view[scan.start_line_end..head_end], scan.start_line_end) {
                (Ok(Some(content_length)), index) => Decision::Frame {
                    head_end,
                    content_length,
                    index,
                },
                (Ok(None), _) => Decision::NoLength {
                    head_end,
                    reason: LostReason::NoContentLength,
                },
                (Err(LengthError::NotANumber), _) => Decision::NoLength {
                    head_end,
                    reason: LostReason::BadContentLength,
                },
                (Err(LengthError::Disagree { first, other }), _) => Decision::NoLength {
                    head_end,
                    reason: LostReason::ConflictingContentLength { first, other },
                },
            }
        }
        Err(_) if full => Decision::HeadTooLong {
            last_line_end: memchr::memrchr(b'\n', view).map_or(0, |lf| lf + 1),
        },
        Err(resume) => {
            scan.scanned = resume;
            Decision::NeedMore
        }
    }
}

/// Appends to a buffer, growing it (doubling) but never past `bound` unless the bytes themselves
/// need more, so capacity stays within the limits.
fn extend_bounded(buf: &mut BytesMut, bytes: &[u8], bound: usize) {
    let need = buf.len() + bytes.len();
    if need > buf.capacity() {
        let target = (buf.capacity() * 2).max(512).min(bound).max(need);
        let mut grown = BytesMut::with_capacity(target);
        grown.extend_from_slice(buf);
        *buf = grown;
    }
    buf.extend_from_slice(bytes);
}

/// A buffer left empty but larger than this is released, so idle connections hold nothing.
const KEEP_IDLE_CAPACITY: usize = 4096;

/// Frames one direction of one TCP/TLS connection into SIP messages. Feed it the bytes exactly
/// as relayed; it never fails, never panics and holds at most `max_message_bytes`.
#[derive(Debug)]
pub struct SipFramer {
    /// The limits, clamped to sane values.
    limits: Limits,
    /// Where in the stream we are.
    state: State,
    /// Bytes of a message (or resync line) split across reads; empty in the common case.
    buf: BytesMut,
    /// LFs seen in the current run of keep-alive bytes: every other one starts a new keep-alive.
    lf_run: u64,
    /// Running totals.
    counts: FramerCounters,
    /// Totals at the last [`SipFramer::take_counters`].
    reported: FramerCounters,
}

impl SipFramer {
    /// A framer at the start of a stream. Limits are clamped: both sizes at least 16 bytes, the
    /// header bound at most the message bound.
    pub fn new(limits: Limits) -> Self {
        let max_message_bytes = limits.max_message_bytes.max(16);
        let limits = Limits {
            max_header_bytes: limits.max_header_bytes.clamp(16, max_message_bytes),
            max_message_bytes,
            max_resync_bytes: limits.max_resync_bytes,
        };
        Self {
            limits,
            state: State::Idle,
            buf: BytesMut::new(),
            lf_run: 0,
            counts: FramerCounters::default(),
            reported: FramerCounters::default(),
        }
    }

    /// The limits in force (after clamping).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Feeds bytes exactly as relayed; calls `on_msg` with each complete message, in order.
    /// Oversize messages are counted and skipped (see [`SipFramer::push_framed`] to get their
    /// heads).
    pub fn push(&mut self, data: &[u8], mut on_msg: impl FnMut(Bytes)) {
        self.push_framed(data, |framed| {
            if let Framed::Message(msg, _) = framed {
                on_msg(msg);
            }
        });
    }

    /// Feeds bytes exactly as relayed; calls `on_framed` for each complete message and each
    /// oversize message's head, in stream order.
    pub fn push_framed(&mut self, mut data: &[u8], mut on_framed: impl FnMut(Framed)) {
        while !data.is_empty() {
            let used = match self.state {
                State::Idle => self.idle(data, &mut on_framed),
                State::Head(scan) => self.head_buffered(data, scan, &mut on_framed),
                State::Body { total, index } => {
                    self.body_buffered(data, total, index, &mut on_framed)
                }
                State::Skip { remaining } => self.skip(data, remaining),
                State::Resync { skipped } => self.resync(data, skipped, &mut on_framed),
                State::Stopped => return,
            };
            data = data.get(used..).unwrap_or_default();
        }
        if self.buf.is_empty() && self.buf.capacity() > KEEP_IDLE_CAPACITY {
            self.buf = BytesMut::new();
        }
    }

    /// Totals since the framer was created.
    pub fn counters(&self) -> FramerCounters {
        self.counts
    }

    /// Counts since the last call (or since creation), for adding to shared statistics.
    pub fn take_counters(&mut self) -> FramerCounters {
        let delta = self.counts.since(&self.reported);
        self.reported = self.counts;
        delta
    }

    /// True once the framer has given up on this stream; `push` is then a cheap no-op.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Bytes held for a message (or line) split across reads.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes allocated for that buffer (never above the limits).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Between messages: skips keep-alives, then frames from `data` itself without buffering when
    /// the message is whole. Returns the bytes of `data` used.
    fn idle(&mut self, data: &[u8], on_framed: &mut impl FnMut(Framed)) -> usize {
        let mut at = 0;
        for &b in data {
            match b {
                b'\n' => {
                    if self.lf_run.is_multiple_of(2) {
                        self.counts.keepalives += 1;
                    }
                    self.lf_run += 1;
                }
                b'\r' => {}
                _ => break,
            }
            at += 1;
        }
        let Some(win) = data.get(at..).filter(|win| !win.is_empty()) else {
            return data.len();
        };
        self.lf_run = 0;
        let mut scan = HeadScan::default();
        let max_header = self.limits.max_header_bytes;
        let used = match decide(win, &mut scan, max_header) {
            Decision::NeedMore => {
                extend_bounded(&mut self.buf, win, max_header);
                self.state = State::Head(scan);
                win.len()
            }
            Decision::LineTooLong => {
                self.counts.malformed += 1;
                self.give_up(
                    on_framed,
                    LostReason::LineTooLong { max: max_header },
                    max_header,
                );
                win.len()
            }
            Decision::BadStartLine { line_end } => {
                self.start_resync(on_framed, LostReason::NotSip, line_end, None);
                line_end
            }
            Decision::HeadTooLong { last_line_end } => {
                let reason = LostReason::HeadTooLong { max: max_header };
                self.start_resync(on_framed, reason, max_header, None);
                last_line_end
            }
            Decision::NoLength { head_end, reason } => {
                let head = Bytes::copy_from_slice(&win[..head_end]);
                self.start_resync(on_framed, reason, head_end, Some(head));
                head_end
            }
            Decision::Frame {
                head_end,
                content_length,
                index,
            } => self.frame_direct(win, (head_end, content_length, index), on_framed),
        };
        at + used
    }

    /// A head found whole in `win` (the read itself): hands out the message if the read holds
    /// all of it, else starts buffering it. Returns the bytes of `win` used.
    fn frame_direct(
        &mut self,
        win: &[u8],
        (head_end, content_length, index): (usize, u64, HeadIndex),
        on_framed: &mut impl FnMut(Framed),
    ) -> usize {
        let Some(total) = self.message_len(head_end, content_length) else {
            let head = Bytes::copy_from_slice(&win[..head_end]);
            return head_end + self.oversize(head, content_length, win.len() - head_end, on_framed);
        };
        if let Some(msg) = win.get(..total) {
            self.counts.messages += 1;
            on_framed(Framed::Message(Bytes::copy_from_slice(msg), index));
            total
        } else {
            self.buf = BytesMut::with_capacity(total);
            self.buf.extend_from_slice(win);
            self.state = State::Body { total, index };
            win.len()
        }
    }

    /// A head split across reads: appends at most up to the header bound, decides, and gives
    /// back what belongs after the head's verdict. Returns the bytes of `data` used.
    fn head_buffered(
        &mut self,
        data: &[u8],
        mut scan: HeadScan,
        on_framed: &mut impl FnMut(Framed),
    ) -> usize {
        let max_header = self.limits.max_header_bytes;
        let old = self.buf.len();
        let take = data.len().min(max_header.saturating_sub(old));
        extend_bounded(&mut self.buf, &data[..take], max_header);
        // Every offset a verdict returns lies past `old`: with fewer bytes it would have been
        // found on an earlier push. Bytes after it are left in `data` for the next state.
        let used_up_to = |end: usize| end.saturating_sub(old);
        match decide(&self.buf, &mut scan, max_header) {
            Decision::NeedMore => {
                self.state = State::Head(scan);
                take
            }
            Decision::LineTooLong => {
                self.counts.malformed += 1;
                self.give_up(
                    on_framed,
                    LostReason::LineTooLong { max: max_header },
                    max_header,
                );
                take
            }
            Decision::HeadTooLong { last_line_end } => {
                // The incomplete last line stays buffered as the line resync is looking at.
                let reason = LostReason::HeadTooLong { max: max_header };
                self.start_resync(on_framed, reason, max_header, None);
                let _ = self.buf.split_to(last_line_end.min(self.buf.len()));
                take
            }
            Decision::BadStartLine { line_end } => {
                self.buf.clear();
                self.start_resync(on_framed, LostReason::NotSip, line_end, None);
                used_up_to(line_end)
            }
            Decision::NoLength { head_end, reason } => {
                let head = self.buf.split_to(head_end.min(self.buf.len())).freeze();
                self.buf.clear();
                self.start_resync(on_framed, reason, head_end, Some(head));
                used_up_to(head_end)
            }
            Decision::Frame {
                head_end,
                content_length,
                index,
            } => {
                let Some(total) = self.message_len(head_end, content_length) else {
                    let head = Bytes::copy_from_slice(&self.buf[..head_end]);
                    let body_here = self.buf.len() - head_end;
                    self.buf.clear();
                    let body = self.oversize(head, content_length, body_here, on_framed);
                    return used_up_to(head_end + body);
                };
                if let Some(msg) = self.buf.get(..total) {
                    let msg = Bytes::copy_from_slice(msg);
                    self.buf.clear();
                    self.state = State::Idle;
                    self.counts.messages += 1;
                    on_framed(Framed::Message(msg, index));
                    used_up_to(total)
                } else {
                    if self.buf.capacity() < total {
                        let mut exact = BytesMut::with_capacity(total);
                        exact.extend_from_slice(&self.buf);
                        self.buf = exact;
                    }
                    self.state = State::Body { total, index };
                    take
                }
            }
        }
    }

    /// The body of a message split across reads: takes exactly what is missing and hands the
    /// buffer itself out as the message (no second copy).
    fn body_buffered(
        &mut self,
        data: &[u8],
        total: usize,
        index: HeadIndex,
        on_framed: &mut impl FnMut(Framed),
    ) -> usize {
        let take = data.len().min(total.saturating_sub(self.buf.len()));
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() >= total {
            self.counts.messages += 1;
            self.state = State::Idle;
            on_framed(Framed::Message(mem::take(&mut self.buf).freeze(), index));
        }
        take
    }

    /// Passes the body of an oversize message.
    fn skip(&mut self, data: &[u8], remaining: u64) -> usize {
        let take = u64::try_from(data.len()).map_or(remaining, |len| len.min(remaining));
        let left = remaining - take;
        self.state = if left == 0 {
            State::Idle
        } else {
            State::Skip { remaining: left }
        };
        // take <= data.len(), so it fits.
        usize::try_from(take).unwrap_or(data.len())
    }

    /// Looks for a line that is a SIP start line. Whole lines are checked in `data` itself; only
    /// a line split across reads is buffered, and one longer than the header bound ends tracing.
    fn resync(
        &mut self,
        data: &[u8],
        mut skipped: usize,
        on_framed: &mut impl FnMut(Framed),
    ) -> usize {
        let max_header = self.limits.max_header_bytes;
        let too_long = LostReason::LineTooLong { max: max_header };
        let mut at = 0;
        while let Some(rest) = data.get(at..).filter(|rest| !rest.is_empty()) {
            let held = self.buf.len();
            let Some(lf) = memchr(b'\n', rest) else {
                if held + rest.len() >= max_header {
                    self.give_up(on_framed, too_long, max_header);
                } else {
                    extend_bounded(&mut self.buf, rest, max_header);
                }
                return data.len();
            };
            if held + lf >= max_header {
                self.give_up(on_framed, too_long, max_header);
                return data.len();
            }
            let line_len = held + lf + 1;
            if held == 0 {
                let line = &rest[..lf];
                if start_line(line.strip_suffix(b"\r").unwrap_or(line)).is_some() {
                    self.state = State::Idle;
                    return at;
                }
            } else {
                extend_bounded(&mut self.buf, &rest[..=lf], max_header);
                let line = &self.buf[..line_len - 1];
                if start_line(line.strip_suffix(b"\r").unwrap_or(line)).is_some() {
                    if line_len >= max_header {
                        // The start line alone fills the header bound: the head is too long,
                        // as a read holding it whole finds at once (not on the next push).
                        self.buf.clear();
                        let reason = LostReason::HeadTooLong { max: max_header };
                        self.start_resync(on_framed, reason, max_header, None);
                        at += lf + 1;
                        skipped = 0;
                        continue;
                    }
                    self.state = State::Head(HeadScan {
                        start_line_end: line_len,
                        scanned: line_len - 1,
                    });
                    return at + lf + 1;
                }
                self.buf.clear();
            }
            at += lf + 1;
            skipped += line_len;
            if skipped > self.limits.max_resync_bytes {
                self.give_up(on_framed, LostReason::NoStartLine, skipped);
                return data.len();
            }
            self.state = State::Resync { skipped };
        }
        data.len()
    }

    /// Head plus body, if that fits in `max_message_bytes`.
    fn message_len(&self, head_end: usize, content_length: u64) -> Option<usize> {
        let body = usize::try_from(content_length).ok()?;
        head_end
            .checked_add(body)
            .filter(|&total| total <= self.limits.max_message_bytes)
    }

    /// Reports an oversize message and starts skipping its body, of which `body_here` bytes (or
    /// more) are already at hand. Returns the body bytes at hand that belong to it.
    fn oversize(
        &mut self,
        head: Bytes,
        content_length: u64,
        body_here: usize,
        on_framed: &mut impl FnMut(Framed),
    ) -> usize {
        self.counts.oversize += 1;
        on_framed(Framed::Oversize {
            head,
            content_length,
        });
        let here = u64::try_from(body_here).map_or(content_length, |n| n.min(content_length));
        let remaining = content_length - here;
        self.state = if remaining == 0 {
            State::Idle
        } else {
            State::Skip { remaining }
        };
        usize::try_from(here).unwrap_or(body_here)
    }

    /// The stream stopped being SIP: report `bytes` of it lost (with the `head` when one was
    /// read whole), count it, and look for the next start line.
    fn start_resync(
        &mut self,
        on_framed: &mut impl FnMut(Framed),
        reason: LostReason,
        bytes: usize,
        head: Option<Bytes>,
    ) {
        self.counts.malformed += 1;
        self.state = State::Resync { skipped: 0 };
        on_framed(Framed::Lost {
            reason,
            bytes: bytes as u64,
            head,
        });
    }

    /// No start line in sight: stop tracing this stream, free the buffer, and say so.
    fn give_up(&mut self, on_framed: &mut impl FnMut(Framed), reason: LostReason, bytes: usize) {
        self.counts.gave_up = 1;
        self.state = State::Stopped;
        self.buf = BytesMut::new();
        on_framed(Framed::Lost {
            reason,
            bytes: bytes as u64,
            head: None,
        });
    }
}
