//! The producer's side of a destination: the bounded queue's reservation (packets and bytes), the
//! destination's counters, and the rate-limited drop warning.
//!
//! A packet is "held" from the moment `offer` reserves room for it until the task has sent it or
//! dropped it; `queue_depth` and `queue_bytes` count exactly those, so at any quiet moment
//! `enqueued == sent + dropped_oversize + dropped_encode_error + dropped_shutdown (after the
//! queue) + queue_depth` and `offered == enqueued + dropped_queue_full + dropped_shutdown (at the
//! door)`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heptap_hep::TraceMessage;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::spec::Limits;
use super::spool::SpoolShared;
use crate::stats::{Counter, Stats};

/// What became of an offered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// In the destination's queue; it is now the sender's to deliver or count as dropped.
    Queued,
    /// Not taken: counted under `dropped_<reason>`.
    Dropped(DropReason),
}

/// A destination as the MI shows it (`hep_ids`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderState {
    /// The `hep_id` name.
    pub name: String,
    /// `host:port` for HEP, `stdout`, or `file:<path>`.
    pub destination: String,
    /// "udp", "tcp", "tls", "stdout" or "file".
    pub transport: &'static str,
    /// Whether a connection (or socket, or open file) is up right now.
    pub connected: bool,
    /// The destination's counters, as in `get_statistics hep_<name>:`.
    pub counters: SenderCounters,
    /// The last connection or write error, for operators asking "why is it not sending".
    pub last_error: Option<String>,
    /// The disk spool, when the destination has one.
    pub spool: Option<SpoolState>,
}

/// A destination's disk spool as the MI shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolState {
    /// The destination's spool directory.
    pub dir: std::path::PathBuf,
    /// "idle", "spooling" (the collector is away) or "replaying" (it is back).
    pub mode: &'static str,
    /// Bytes of the segment files held.
    pub bytes: u64,
    /// Packets spooled and not yet sent.
    pub records: u64,
    /// Age of the oldest of them.
    pub oldest_age: Option<Duration>,
    /// Packets written to the spool so far.
    pub spooled: u64,
    /// Packets sent from the spool so far.
    pub replayed: u64,
    /// Packets taken over from segments another process (or an earlier run) left.
    pub adopted: u64,
    /// The spool's bound in bytes.
    pub max_bytes: u64,
}

/// Why a packet was not delivered; each reason has its counter `dropped_<reason>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The queue held `queue_packets` packets or `queue_bytes` bytes: the newest is dropped.
    QueueFull,
    /// Larger than `max_udp_size` on UDP, or than the 65535 bytes a HEP packet can hold.
    Oversize,
    /// The encoder refused the message (for example a capture id too large for HEPv2).
    EncodeError,
    /// Offered after shutdown began, or still queued when the grace period ended.
    Shutdown,
    /// In a spool segment deleted to keep the spool within `spool_max_bytes`.
    SpoolFull,
    /// Spooled longer ago than `spool_max_age`.
    SpoolExpired,
    /// In a spool segment found torn or damaged (each damaged place counts once).
    SpoolCorrupt,
    /// Could not be written to the spool (disk full or failing).
    SpoolError,
}

impl DropReason {
    /// The counter suffix and log word: `queue_full`, `oversize`, `encode_error`, `shutdown`,
    /// `spool_full`, `spool_expired`, `spool_corrupt`, `spool_error`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Oversize => "oversize",
            DropReason::EncodeError => "encode_error",
            DropReason::Shutdown => "shutdown",
            DropReason::SpoolFull => "spool_full",
            DropReason::SpoolExpired => "spool_expired",
            DropReason::SpoolCorrupt => "spool_corrupt",
            DropReason::SpoolError => "spool_error",
        }
    }
}

/// A copy of a destination's counters (statistics group `hep_<name>`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderCounters {
    /// Packets accepted into the queue.
    pub enqueued: u64,
    /// Packets handed completely to the socket (or written to stdout or the file).
    pub sent: u64,
    /// Bytes of those packets as sent (HEP packets, or JSON lines).
    pub sent_bytes: u64,
    /// Packets refused because the queue was full.
    pub dropped_queue_full: u64,
    /// Packets larger than the datagram limit or than a HEP packet can be.
    pub dropped_oversize: u64,
    /// Packets the encoder refused.
    pub dropped_encode_error: u64,
    /// Packets refused or abandoned because the destination was shutting down.
    pub dropped_shutdown: u64,
    /// Spooled packets deleted to keep the spool within its size.
    pub dropped_spool_full: u64,
    /// Spooled packets older than the spool's age limit.
    pub dropped_spool_expired: u64,
    /// Torn or damaged places found in spool segments.
    pub dropped_spool_corrupt: u64,
    /// Packets the spool could not write (disk full or failing).
    pub dropped_spool_error: u64,
    /// Failed connection attempts and failed writes.
    pub send_errors: u64,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// Packets held right now (queued or being written).
    pub queue_depth: u64,
    /// Estimated bytes held right now.
    pub queue_bytes: u64,
}

impl SenderCounters {
    /// Every packet dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_oversize
            + self.dropped_encode_error
            + self.dropped_shutdown
            + self.dropped_spool_full
            + self.dropped_spool_expired
            + self.dropped_spool_corrupt
            + self.dropped_spool_error
    }
}

/// The registry's statistics of one destination, named as in docs/senders.md.
#[derive(Debug)]
pub(crate) struct Counters {
    /// Packets accepted by `offer`.
    pub(crate) enqueued: Counter,
    /// Packets delivered.
    pub(crate) sent: Counter,
    /// Bytes delivered.
    pub(crate) sent_bytes: Counter,
    /// Refused: the queue was full.
    pub(crate) dropped_queue_full: Counter,
    /// Too large for a datagram or a HEP packet.
    pub(crate) dropped_oversize: Counter,
    /// Refused by the encoder.
    pub(crate) dropped_encode_error: Counter,
    /// Refused or abandoned by shutdown.
    pub(crate) dropped_shutdown: Counter,
    /// Deleted from a full spool.
    pub(crate) dropped_spool_full: Counter,
    /// Expired in the spool.
    pub(crate) dropped_spool_expired: Counter,
    /// Damaged in the spool.
    pub(crate) dropped_spool_corrupt: Counter,
    /// Not written to the spool.
    pub(crate) dropped_spool_error: Counter,
    /// Failed connects and writes, lost connections.
    pub(crate) send_errors: Counter,
    /// Connections after the first.
    pub(crate) reconnects: Counter,
    /// Gauge: 1 while connected.
    pub(crate) connected: Counter,
    /// Gauge: packets held.
    pub(crate) queue_depth: Counter,
    /// Gauge: estimated bytes held.
    pub(crate) queue_bytes: Counter,
    /// Gauge: when a packet was last delivered (Unix time, ms; 0: never).
    pub(crate) last_sent_unix_ms: Counter,
}

impl Counters {
    fn register(stats: &Stats, name: &str) -> Self {
        let group = format!("hep_{name}");
        let counter = |n: &str| stats.counter(&group, n);
        let gauge = |n: &str| stats.gauge(&group, n);
        Counters {
            enqueued: counter("enqueued"),
            sent: counter("sent"),
            sent_bytes: counter("sent_bytes"),
            dropped_queue_full: counter("dropped_queue_full"),
            dropped_oversize: counter("dropped_oversize"),
            dropped_encode_error: counter("dropped_encode_error"),
            dropped_shutdown: counter("dropped_shutdown"),
            dropped_spool_full: counter("dropped_spool_full"),
            dropped_spool_expired: counter("dropped_spool_expired"),
            dropped_spool_corrupt: counter("dropped_spool_corrupt"),
            dropped_spool_error: counter("dropped_spool_error"),
            send_errors: counter("send_errors"),
            reconnects: counter("reconnects"),
            connected: gauge("connected"),
            queue_depth: gauge("queue_depth"),
            queue_bytes: gauge("queue_bytes"),
            last_sent_unix_ms: gauge("last_sent_unix_ms"),
        }
    }

    fn dropped(&self, reason: DropReason) -> &Counter {
        match reason {
            DropReason::QueueFull => &self.dropped_queue_full,
            DropReason::Oversize => &self.dropped_oversize,
            DropReason::EncodeError => &self.dropped_encode_error,
            DropReason::Shutdown => &self.dropped_shutdown,
            DropReason::SpoolFull => &self.dropped_spool_full,
            DropReason::SpoolExpired => &self.dropped_spool_expired,
            DropReason::SpoolCorrupt => &self.dropped_spool_corrupt,
            DropReason::SpoolError => &self.dropped_spool_error,
        }
    }

    pub(crate) fn snapshot(&self) -> SenderCounters {
        SenderCounters {
            enqueued: self.enqueued.get(),
            sent: self.sent.get(),
            sent_bytes: self.sent_bytes.get(),
            dropped_queue_full: self.dropped_queue_full.get(),
            dropped_oversize: self.dropped_oversize.get(),
            dropped_encode_error: self.dropped_encode_error.get(),
            dropped_shutdown: self.dropped_shutdown.get(),
            dropped_spool_full: self.dropped_spool_full.get(),
            dropped_spool_expired: self.dropped_spool_expired.get(),
            dropped_spool_corrupt: self.dropped_spool_corrupt.get(),
            dropped_spool_error: self.dropped_spool_error.get(),
            send_errors: self.send_errors.get(),
            reconnects: self.reconnects.get(),
            queue_depth: self.queue_depth.get(),
            queue_bytes: self.queue_bytes.get(),
        }
    }
}

/// How much of the byte capacity a message takes while held: its variable-length content plus
/// a fixed allowance for the message itself and its HEP chunk headers. An estimate, computed
/// without encoding so that `offer` stays cheap; the same function releases what it reserved.
pub(crate) fn estimate(msg: &TraceMessage) -> usize {
    /// The `TraceMessage` and `Arc` headers plus the fixed HEP3 chunks, rounded up.
    const OVERHEAD: usize = 256;
    let parts = |parts: &[heptap_hep::Part]| -> usize {
        parts
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>()
    };
    OVERHEAD
        + msg.payload.as_ref().map_or(0, |p| p.len())
        + msg.correlation_id.as_ref().map_or(0, |c| c.len())
        + parts(&msg.parts)
        + parts(&msg.extra_correlation)
}

/// The shortest time between two drop warnings of one destination.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Logs drops as one warning per destination per [`DROP_LOG_INTERVAL`] at most, with the count
/// since the previous warning, so a collector outage cannot flood the logs (opensips#3622).
#[derive(Debug)]
struct DropLog {
    /// Origin of the millisecond clock below.
    base: Instant,
    /// Milliseconds since `base` before which no warning is written.
    next_ms: AtomicU64,
    /// Total drops already reported.
    reported: AtomicU64,
}

impl DropLog {
    fn new() -> Self {
        DropLog {
            base: Instant::now(),
            next_ms: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }

    /// Writes the warning if the interval has passed and there is something new to report.
    fn maybe_log(&self, name: &str, counters: &Counters) {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now < next {
            return;
        }
        let total = counters.snapshot().dropped();
        let reported = self.reported.load(Ordering::Relaxed);
        if total <= reported {
            // Nothing new (or reset_statistics zeroed the counters: start again from there).
            if total < reported {
                self.reported.store(total, Ordering::Relaxed);
            }
            return;
        }
        let interval = u64::try_from(DROP_LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if self
            .next_ms
            .compare_exchange(next, now + interval, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return; // another producer is writing this very warning
        }
        let since = total.saturating_sub(self.reported.swap(total, Ordering::Relaxed));
        let c = counters.snapshot();
        tracing::warn!(
            hep_id = %name,
            dropped = since,
            queue_full = c.dropped_queue_full,
            oversize = c.dropped_oversize,
            encode_error = c.dropped_encode_error,
            shutdown = c.dropped_shutdown,
            spool_full = c.dropped_spool_full,
            spool_expired = c.dropped_spool_expired,
            spool_corrupt = c.dropped_spool_corrupt,
            spool_error = c.dropped_spool_error,
            queue_depth = c.queue_depth,
            "Dropping HEP packets"
        );
    }
}

/// Shared by a destination's [`super::Sender`]s and its task.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The `hep_id` name.
    pub(crate) name: String,
    /// `host:port`, `stdout` or `file:<path>`.
    pub(crate) destination: String,
    /// "udp", "tcp", "tls", "stdout" or "file".
    pub(crate) transport: &'static str,
    /// Capacity in packets.
    max_packets: usize,
    /// Capacity in estimated bytes.
    max_bytes: usize,
    /// Packets held (the reservation; mirrored by the `queue_depth` gauge).
    depth: AtomicUsize,
    /// Estimated bytes held (mirrored by the `queue_bytes` gauge).
    bytes: AtomicUsize,
    /// Set when shutdown begins: offers are refused from then on.
    closed: AtomicBool,
    /// The destination's lanes (one task each).
    lanes: usize,
    /// Lanes whose link is up; the `connected` gauge is 1 when all are. A lock, not an atomic,
    /// so the gauge is written in the same order as the count changes (links come and go
    /// rarely).
    lanes_up: Mutex<usize>,
    /// The statistics.
    pub(crate) counters: Counters,
    /// Rate limit of the drop warning.
    drop_log: DropLog,
    /// Last connection or write error, shown by the MI.
    last_error: Mutex<Option<String>>,
    /// The disk spool shared by the lanes, when the destination has one.
    pub(crate) spool: Option<Arc<SpoolShared>>,
    /// Held packets (the reservation) at or above which a lane moves its queue to the spool.
    pub(crate) spool_packets: usize,
    /// Held bytes at or above which a lane moves its queue to the spool.
    pub(crate) spool_bytes: usize,
    /// The outage while no lane is connected, for the reminder; `None` while one is.
    outage: Mutex<Option<Outage>>,
    /// How often the reminder is written (`[hep] down_log_interval`); zero: never.
    down_log_interval: Duration,
}

/// A destination with no lane connected: since when, and what it had dropped then.
#[derive(Debug)]
struct Outage {
    /// The first failure with no lane up.
    since: Instant,
    /// Drops counted before it.
    dropped_before: u64,
    /// No reminder before this.
    next: Instant,
}

impl Shared {
    pub(crate) fn new(
        name: String,
        destination: String,
        transport: &'static str,
        limits: &Limits,
        lanes: usize,
        stats: &Stats,
    ) -> Self {
        let counters = Counters::register(stats, &name);
        Shared {
            name,
            destination,
            transport,
            max_packets: limits.queue_packets,
            max_bytes: limits.queue_bytes,
            depth: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            lanes: lanes.max(1),
            lanes_up: Mutex::new(0),
            counters,
            drop_log: DropLog::new(),
            last_error: Mutex::new(None),
            spool: None,
            // Half the queue: the other half takes what arrives while the lane writes.
            spool_packets: (limits.queue_packets / 2).max(1),
            spool_bytes: (limits.queue_bytes / 2).max(1),
            outage: Mutex::new(None),
            down_log_interval: limits.down_log_interval,
        }
    }

    /// A lane could not connect (or lost its link): with no lane up, the outage starts at the
    /// first such failure, and while it lasts a reminder is logged once per
    /// `down_log_interval` for the whole destination, however many lanes retry.
    pub(crate) fn still_down(&self, error: &str) {
        if self.down_log_interval.is_zero()
            || *self.lanes_up.lock().unwrap_or_else(|e| e.into_inner()) > 0
        {
            return;
        }
        let now = Instant::now();
        let dropped = self.counters.snapshot().dropped();
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        match outage.as_mut() {
            None => {
                *outage = Some(Outage {
                    since: now,
                    dropped_before: dropped,
                    next: now + self.down_log_interval,
                });
            }
            Some(o) if now >= o.next => {
                o.next = now + self.down_log_interval;
                let secs = now.duration_since(o.since).as_secs();
                let lost = dropped.saturating_sub(o.dropped_before);
                tracing::warn!(hep_id = %self.name, destination = %self.destination,
                    down_for_s = secs, dropped = lost, error = %error,
                    "HEP destination still disconnected for {secs} s ({lost} dropped)");
            }
            Some(_) => {}
        }
    }

    /// Whether a connect error seen before is logged again only as a debug line: the reminder
    /// says the destination is still down.
    pub(crate) fn reminds(&self) -> bool {
        !self.down_log_interval.is_zero()
    }

    /// The destination's lanes.
    pub(crate) fn lanes(&self) -> usize {
        self.lanes
    }

    /// Whether the held packets reached the point where the lanes spool their queues.
    pub(crate) fn spool_pressure(&self) -> bool {
        self.depth.load(Ordering::Relaxed) >= self.spool_packets
            || self.bytes.load(Ordering::Relaxed) >= self.spool_bytes
    }

    /// The body of [`super::Sender::offer`].
    pub(crate) fn offer(
        &self,
        tx: &mpsc::Sender<Arc<TraceMessage>>,
        msg: &Arc<TraceMessage>,
    ) -> Offer {
        if self.closed.load(Ordering::Relaxed) {
            return self.refuse(DropReason::Shutdown);
        }
        let est = estimate(msg);
        if !self.reserve(est) {
            return self.refuse(DropReason::QueueFull);
        }
        match tx.try_send(Arc::clone(msg)) {
            Ok(()) => {
                self.counters.enqueued.inc();
                Offer::Queued
            }
            Err(TrySendError::Full(_)) => {
                // Unreachable while the reservation holds no more than the channel's capacity;
                // handled as what it would mean.
                self.release(est);
                self.refuse(DropReason::QueueFull)
            }
            Err(TrySendError::Closed(_)) => {
                self.release(est);
                self.refuse(DropReason::Shutdown)
            }
        }
    }

    /// A lane's link came up.
    pub(crate) fn link_up(&self) {
        *self.outage.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut up = self.lanes_up.lock().unwrap_or_else(|e| e.into_inner());
        *up += 1;
        self.counters.connected.set(u64::from(*up >= self.lanes));
    }

    /// A lane's link went down.
    pub(crate) fn link_down(&self) {
        let mut up = self.lanes_up.lock().unwrap_or_else(|e| e.into_inner());
        *up = up.saturating_sub(1);
        self.counters.connected.set(0);
    }

    pub(crate) fn refuse(&self, reason: DropReason) -> Offer {
        self.dropped(reason, 1);
        Offer::Dropped(reason)
    }

    /// Counts `n` drops for `reason` and maybe logs the warning.
    pub(crate) fn dropped(&self, reason: DropReason, n: u64) {
        self.counters.dropped(reason).add(n);
        self.drop_log.maybe_log(&self.name, &self.counters);
    }

    /// Writes a pending drop warning once the rate limit allows it (called by the task, so the
    /// last drops of a burst are reported even if no drop follows).
    pub(crate) fn report_drops(&self) {
        self.drop_log.maybe_log(&self.name, &self.counters);
    }

    /// Takes room for one packet of `est` bytes, or refuses. A packet larger than the whole
    /// byte capacity is still taken when nothing else is held, so it is dropped for what it
    /// is (oversize, at encoding) rather than as `queue_full` forever.
    fn reserve(&self, est: usize) -> bool {
        let max_packets = self.max_packets;
        if self
            .depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                (d < max_packets).then_some(d + 1)
            })
            .is_err()
        {
            return false;
        }
        let max_bytes = self.max_bytes;
        if self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b == 0 || b.saturating_add(est) <= max_bytes).then_some(b + est)
            })
            .is_err()
        {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        // The gauges go up before the packet is visible to the task, so its decrement can
        // never come first.
        self.counters.queue_depth.inc();
        self.counters.queue_bytes.add(est as u64);
        true
    }

    /// Gives back the room of one packet of `est` bytes (refused after its reservation).
    pub(crate) fn release(&self, est: usize) {
        self.release_many(1, est);
    }

    /// Gives back the room of `n` packets of `est` bytes in all (sent or dropped).
    pub(crate) fn release_many(&self, n: usize, est: usize) {
        self.counters.queue_depth.sub(n as u64);
        self.counters.queue_bytes.sub(est as u64);
        self.bytes.fetch_sub(est, Ordering::AcqRel);
        self.depth.fetch_sub(n, Ordering::AcqRel);
    }

    /// Refuses every later offer.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Records the latest error for the MI.
    pub(crate) fn set_last_error(&self, error: String) {
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some(error);
    }

    pub(crate) fn state(&self) -> SenderState {
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        SenderState {
            name: self.name.clone(),
            destination: self.destination.clone(),
            transport: self.transport,
            connected: self.counters.connected.get() == 1,
            counters: self.counters.snapshot(),
            last_error,
            spool: self.spool.as_ref().map(|sp| {
                let c = &sp.counters;
                SpoolState {
                    dir: sp.dir.clone(),
                    mode: sp.mode().as_str(),
                    bytes: c.bytes.get(),
                    records: c.records.get(),
                    oldest_age: sp.oldest_age(super::spool::now_ms()),
                    spooled: c.spooled.get(),
                    replayed: c.replayed.get(),
                    adopted: c.adopted.get(),
                    max_bytes: sp.settings.max_bytes,
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn shared(max_packets: usize, max_bytes: usize) -> Shared {
        let limits = Limits {
            queue_packets: max_packets,
            queue_bytes: max_bytes,
            ..Limits::default()
        };
        Shared::new(
            "t".into(),
            "127.0.0.1:9060".into(),
            "udp",
            &limits,
            1,
            &Stats::new(),
        )
    }

    fn msg(payload: &'static [u8]) -> Arc<TraceMessage> {
        let a: SocketAddr = "127.0.0.1:5060".parse().unwrap_or_else(|_| unreachable!());
        Arc::new(TraceMessage::new(1, 17, a, a, 0, 0).payload(payload))
    }

    #[test]
    fn the_estimate_is_the_content_plus_a_fixed_allowance() {
        let m = TraceMessage::clone(&msg(b"INVITE"))
            .correlation("abc")
            .part("Event", "ACCEPTED");
        assert_eq!(estimate(&m), 256 + 6 + 3 + (5 + 8 + 8));
    }

    #[test]
    fn the_queue_refuses_the_packet_beyond_its_packet_capacity() {
        let s = shared(2, 1 << 20);
        let (tx, _rx) = mpsc::channel(2);
        let m = msg(b"x");
        assert_eq!(s.offer(&tx, &m), Offer::Queued);
        assert_eq!(s.offer(&tx, &m), Offer::Queued);
        assert_eq!(s.offer(&tx, &m), Offer::Dropped(DropReason::QueueFull));
        let c = s.counters.snapshot();
        assert_eq!((c.enqueued, c.dropped_queue_full, c.queue_depth), (2, 1, 2));
    }

    #[test]
    fn the_queue_refuses_the_packet_beyond_its_byte_capacity() {
        let one = estimate(&msg(b"0123456789"));
        let s = shared(100, 2 * one + 1);
        let (tx, _rx) = mpsc::channel(100);
        let m = msg(b"0123456789");
        assert_eq!(s.offer(&tx, &m), Offer::Queued);
        assert_eq!(s.offer(&tx, &m), Offer::Queued);
        assert_eq!(s.offer(&tx, &m), Offer::Dropped(DropReason::QueueFull));
        assert_eq!(s.counters.snapshot().queue_bytes, 2 * one as u64);
        s.release(one);
        assert_eq!(s.offer(&tx, &m), Offer::Queued);
    }

    #[test]
    fn a_packet_larger_than_the_byte_capacity_is_taken_when_the_queue_is_empty() {
        let s = shared(100, 10);
        let (tx, _rx) = mpsc::channel(100);
        let m = msg(b"a payload far larger than ten bytes");
        assert_eq!(s.offer(&tx, &m), Offer::Queued);
        assert_eq!(s.offer(&tx, &m), Offer::Dropped(DropReason::QueueFull));
    }

    #[test]
    fn offers_after_close_are_dropped_as_shutdown() {
        let s = shared(10, 1 << 20);
        let (tx, _rx) = mpsc::channel(10);
        s.close();
        assert_eq!(
            s.offer(&tx, &msg(b"x")),
            Offer::Dropped(DropReason::Shutdown)
        );
        let c = s.counters.snapshot();
        assert_eq!((c.enqueued, c.dropped_shutdown, c.queue_depth), (0, 1, 0));
    }

    #[test]
    fn a_closed_channel_gives_the_reservation_back() {
        let s = shared(10, 1 << 20);
        let (tx, rx) = mpsc::channel(10);
        drop(rx);
        assert_eq!(
            s.offer(&tx, &msg(b"x")),
            Offer::Dropped(DropReason::Shutdown)
        );
        let c = s.counters.snapshot();
        assert_eq!((c.queue_depth, c.queue_bytes), (0, 0));
    }
}
