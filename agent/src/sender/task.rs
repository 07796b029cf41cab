//! The destination's task: take packets from the queue, encode them once, deliver them, and
//! reconnect with backoff whenever the link fails, until shutdown.
//!
//! Delivery is by batches of whole units (datagrams, HEP3 frames, JSON lines) kept in
//! [`Pending`] until they are known to be handed over completely. On a stream a unit counts as
//! sent once all its bytes are in the kernel (TCP) or flushed through rustls (TLS); after an
//! error every unit not counted yet is sent again, from its first byte, on the next connection.
//! So a collector never sees half a frame followed by something else, and may see a frame twice
//! (TLS, or a file line) when the error struck after the bytes left but before they were counted.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use heptap_hep::{EncodeError, Encoder, TraceMessage};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::link::{Endpoint, Framing, Link, LinkError, send_datagrams};
use super::queue::{DropReason, Shared, estimate};
use super::spec::{DestinationSpec, Limits};
use super::spool::{Lost, Spool, SpoolMode};

/// What a graceful shutdown achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Packets delivered during the grace period.
    pub flushed: u64,
    /// Packets still held when the grace period ended, counted as `dropped_shutdown`.
    pub abandoned: u64,
    /// Packets held at the end that went to the disk spool instead (for the next process).
    pub spooled: u64,
}

/// Most messages taken from the queue at once.
const BATCH_MESSAGES: usize = 64;

/// Most packets moved from memory to the spool, or read back from it, in one operation.
const SPOOL_BATCH: usize = 1024;

/// How long a UDP destination with a spool waits, after its first datagram on a new socket, for
/// an ICMP "port unreachable" before it believes a collector listens: UDP says nothing else, and
/// without it every reconnection attempt during an outage would lose a datagram.
const UDP_PROBE_WAIT: Duration = Duration::from_millis(100);

/// A spool write failure is logged as a warning at most this often (the drop counters count
/// every packet).
const SPOOL_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// A connect failure with the same error is logged as a warning at most this often.
const CONNECT_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// One encoded unit waiting to be delivered.
#[derive(Clone, Copy, Debug)]
struct Unit {
    /// Its length in `Pending::buf`.
    len: usize,
    /// What it reserved in the queue, given back when it is sent or dropped (0 for a unit
    /// read back from the spool, which never was in the queue).
    est: usize,
    /// Read back from the spool: it stays there until it is sent.
    spooled: bool,
}

/// Encoded units not yet known to be delivered, in queue order.
#[derive(Debug, Default)]
struct Pending {
    /// The units back to back, from `head` on.
    buf: Vec<u8>,
    /// Bytes at the start of `buf` that belong to units already counted as sent.
    head: usize,
    /// The units not counted yet.
    units: VecDeque<Unit>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Forgets the bytes of counted units, so the rest is resent from its first byte.
    fn compact(&mut self) {
        self.buf.drain(..self.head);
        self.head = 0;
        if self.units.is_empty() {
            self.buf.clear();
        }
    }
}

/// The shutdown signal: a deadline, once.
#[derive(Debug)]
struct Stop {
    /// Gone once the deadline arrived or the [`super::SenderTask`] was dropped.
    rx: Option<watch::Receiver<Option<Instant>>>,
    /// When the flush must end.
    deadline: Option<Instant>,
}

impl Stop {
    /// Resolves when the deadline arrives; pending forever after that or without a handle.
    async fn arrived(&mut self) -> Instant {
        loop {
            let Some(rx) = &mut self.rx else {
                return std::future::pending().await;
            };
            if rx.changed().await.is_err() {
                self.rx = None;
                continue;
            }
            let deadline = *rx.borrow_and_update();
            if let Some(deadline) = deadline {
                self.deadline = Some(deadline);
                self.rx = None;
                return deadline;
            }
        }
    }
}

/// Runs `fut` for at most `limit`, and never past the shutdown deadline (even one that arrives
/// meanwhile). `None` when time ran out; `fut` is then dropped, and with it the link it used.
async fn within<F: Future>(stop: &mut Stop, limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let sleep = tokio::time::sleep(limit);
    let mut sleep = std::pin::pin!(sleep);
    if let Some(d) = stop.deadline.filter(|d| *d < sleep.deadline()) {
        sleep.as_mut().reset(d);
    }
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return Some(out),
            () = &mut sleep => return None,
            d = stop.arrived() => {
                if d < sleep.deadline() {
                    sleep.as_mut().reset(d);
                }
            }
        }
    }
}

/// Sends a datagram on a non-blocking socket whose send buffer was full, retrying every
/// millisecond (the caller bounds the wait). UDP sockets are not registered with the runtime
/// (see [`Link::Datagram`]), so there is no readiness to wait for.
async fn send_when_room(socket: &std::net::UdpSocket, datagram: &[u8]) -> io::Result<usize> {
    loop {
        match socket.send(datagram) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => return other,
        }
    }
}

/// What woke the idle task.
enum Wake {
    /// Messages are in `scratch`.
    Messages,
    /// The queue is closed and empty.
    QueueDone,
    /// Shutdown began.
    Stop,
    /// The collector went away.
    Lost(LinkError),
    /// Time to report pending drops.
    Tick,
}

/// Appends one encoded unit for `msg` to `buf`; its length, or why it is dropped.
fn encode_to(
    encoder: &Encoder,
    framing: Framing,
    max_udp_size: usize,
    hep: &mut Vec<u8>,
    buf: &mut Vec<u8>,
    msg: &TraceMessage,
) -> Result<usize, DropReason> {
    let start = buf.len();
    let refused = |e: EncodeError| match e {
        EncodeError::TooLarge { .. } => DropReason::Oversize,
        _ => DropReason::EncodeError,
    };
    match framing {
        Framing::Datagram => {
            encoder.encode(msg, buf).map_err(refused)?;
            let len = buf.len() - start;
            if len > max_udp_size {
                // Never truncated: a cut HEP packet is garbage to the collector.
                buf.truncate(start);
                return Err(DropReason::Oversize);
            }
            Ok(len)
        }
        Framing::Stream => {
            encoder.encode(msg, buf).map_err(refused)?;
            Ok(buf.len() - start)
        }
        Framing::JsonLine => {
            // Through the HEP bytes, so the line is exactly what `heptap hep-dump` prints
            // for the same packet.
            hep.clear();
            encoder.encode(msg, hep).map_err(refused)?;
            let packet = heptap_hep::decode(hep).map_err(|_| DropReason::EncodeError)?;
            if serde_json::to_writer(&mut *buf, &packet.to_json()).is_err() {
                buf.truncate(start);
                return Err(DropReason::EncodeError);
            }
            buf.push(b'\n');
            Ok(buf.len() - start)
        }
    }
}

/// A destination's task and everything it owns.
#[derive(Debug)]
pub(crate) struct Task {
    /// Counters, reservation and state shared with the producers.
    shared: Arc<Shared>,
    /// The queue's receiving end.
    rx: mpsc::Receiver<Arc<TraceMessage>>,
    /// The shutdown deadline, once given.
    stop: Stop,
    /// This destination's HEP settings.
    encoder: Encoder,
    /// Where to connect.
    endpoint: Endpoint,
    /// Datagrams, stream frames or JSON lines.
    framing: Framing,
    /// Timeouts, backoff and the datagram limit.
    limits: Limits,
    /// Encoded units not yet delivered.
    pending: Pending,
    /// Messages just taken from the queue.
    scratch: Vec<Arc<TraceMessage>>,
    /// The encoded HEP packet of a JSON line.
    hep: Vec<u8>,
    /// The live connection, socket or output; `None` between a failure and the next attempt.
    link: Option<Link>,
    /// Delays between connection attempts.
    backoff: Backoff,
    /// No connection attempt before this.
    next_attempt: Instant,
    /// Whether a connection was ever established (the next ones are reconnects).
    ever_connected: bool,
    /// The last connect error logged as a warning, and when.
    last_warned: Option<(String, Instant)>,
    /// Units delivered since shutdown began.
    flushed: u64,
    /// This lane's number (its place in the spool's names and gauges).
    lane: usize,
    /// The lane's disk spool, when the destination has one (taken out while a blocking
    /// operation runs on it).
    spool: Option<Spool>,
    /// The replay's rate limit (this lane's share of `spool_replay_rate`).
    replay: Bucket,
    /// UDP: the rate limit while catching up after an outage (this lane's share of
    /// `udp_replay_rate`).
    catchup: Bucket,
    /// UDP: datagrams of the backlog (found at a reconnection, or queued behind it) still to
    /// send at the `catchup` rate, not in a burst a collector's receive buffer cannot hold.
    catchup_left: usize,
    /// A UDP socket not yet known to reach a listening collector (spool only, see
    /// [`UDP_PROBE_WAIT`]).
    probe: bool,
    /// When a spool failure was last logged as a warning.
    spool_warned: Option<Instant>,
}

/// A token bucket: how many spooled packets may be replayed now.
#[derive(Debug)]
struct Bucket {
    /// Packets per second; 0: no limit.
    rate: f64,
    /// Packets that may go now.
    tokens: f64,
    /// The most that may accumulate (a short burst keeps batches efficient).
    burst: f64,
    /// When `tokens` was last topped up.
    last: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        // 5 ms worth: batches stay efficient, and a UDP collector's receive buffer sees no
        // burst larger than that.
        let burst = (rate / 200.0).clamp(1.0, SPOOL_BATCH as f64);
        Bucket {
            rate,
            tokens: burst,
            burst,
            last: Instant::now(),
        }
    }

    /// How many may go now (at most `max`); the caller spends what it used.
    fn available(&mut self, max: usize) -> usize {
        if self.rate <= 0.0 {
            return max;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        (self.tokens.floor() as usize).min(max)
    }

    fn spend(&mut self, n: usize) {
        if self.rate > 0.0 {
            self.tokens -= n as f64;
        }
    }

    /// How long until a batch's worth may go.
    fn wait(&self) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let want = self.burst.clamp(1.0, 64.0);
        Duration::from_secs_f64(((want - self.tokens).max(0.0) / self.rate).min(1.0))
    }
}

impl Task {
    pub(crate) fn new(
        spec: DestinationSpec,
        endpoint: Endpoint,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Arc<TraceMessage>>,
        stop: watch::Receiver<Option<Instant>>,
        lane: usize,
        spool: Option<Spool>,
    ) -> Self {
        // Each lane replays its equal share of the destination's rate.
        let rate = shared.spool.as_ref().map_or(0.0, |sp| {
            f64::from(sp.settings.replay_rate) / shared.lanes() as f64
        });
        let udp_rate = f64::from(spec.limits.udp_replay_rate) / shared.lanes() as f64;
        Task {
            lane,
            spool,
            replay: Bucket::new(rate),
            catchup: Bucket::new(udp_rate),
            catchup_left: 0,
            probe: false,
            spool_warned: None,
            framing: endpoint.framing(),
            backoff: Backoff::new(spec.limits.backoff_initial, spec.limits.backoff_max),
            shared,
            rx,
            stop: Stop {
                rx: Some(stop),
                deadline: None,
            },
            encoder: spec.encoder,
            endpoint,
            limits: spec.limits,
            pending: Pending::default(),
            scratch: Vec::with_capacity(BATCH_MESSAGES),
            hep: Vec::new(),
            link: None,
            next_attempt: Instant::now(),
            ever_connected: false,
            last_warned: None,
            flushed: 0,
        }
    }

    pub(crate) async fn run(mut self) -> ShutdownReport {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if self.spool.is_some() {
            // What an earlier process (or a replaced destination) left goes first.
            self.spool_tick().await;
        }
        loop {
            if let Some(deadline) = self.stop.deadline {
                // Later offers are refused; what is queued now is all there is to flush.
                if !self.rx.is_closed() {
                    self.rx.close();
                }
                if Instant::now() >= deadline {
                    break;
                }
                if self.spool.is_some() && (self.link.is_none() || self.backlog()) {
                    // Nothing to gain by waiting: memory goes to disk, for the next process.
                    break;
                }
            }
            let nothing_left = self.pending.is_empty() && self.rx.is_empty();
            let replaying = self.link.is_some() && self.backlog() && self.stop.deadline.is_none();
            if nothing_left && !replaying && (self.stop.deadline.is_some() || self.rx.is_closed()) {
                break;
            }
            if self.link.is_none() {
                if self.spool.is_some() {
                    self.spool_while_down(&mut tick).await;
                } else {
                    self.wait_and_connect().await;
                }
                continue;
            }
            if self.pending.is_empty() {
                if self.backlog() {
                    self.replay_step(&mut tick).await;
                } else {
                    self.set_mode(SpoolMode::Idle);
                    match self.wait_for_work(&mut tick).await {
                        Wake::Messages => {
                            self.gather().await;
                            self.encode_scratch();
                        }
                        Wake::Lost(e) => self.lose_link(e),
                        Wake::Tick => self.on_tick().await,
                        Wake::Stop | Wake::QueueDone => {}
                    }
                }
            }
            if !self.pending.is_empty()
                && self.link.is_some()
                && let Err(e) = self.write_pending().await
            {
                if self.stop.deadline.is_some_and(|d| Instant::now() >= d) {
                    // The grace period, not the collector, cut this write short.
                    break;
                }
                self.lose_link(e);
            }
            // A collector slower than the traffic: the queue goes to disk before it overflows,
            // behind what is there (memory is never sent ahead of the spool).
            if self.spool.is_some()
                && self.pending.is_empty()
                && self.stop.deadline.is_none()
                && self.shared.spool_pressure()
            {
                self.spool_queue().await;
            }
        }
        self.finish().await
    }

    // ---- the spool ---------------------------------------------------------------------------

    /// Whether spooled packets wait to be delivered (read or not).
    fn backlog(&self) -> bool {
        self.spool.as_ref().is_some_and(Spool::has_backlog)
    }

    fn set_mode(&self, mode: SpoolMode) {
        if let Some(sp) = &self.shared.spool {
            sp.set_mode(self.lane, mode);
        }
    }

    /// Runs `op` on the spool on the blocking thread pool: file I/O never runs on a relay
    /// thread. `None` if the spool is gone (a panic in an earlier operation).
    async fn on_spool<R: Send + 'static>(
        &mut self,
        op: impl FnOnce(&mut Spool) -> R + Send + 'static,
    ) -> Option<R> {
        let mut spool = self.spool.take()?;
        match tokio::task::spawn_blocking(move || {
            let r = op(&mut spool);
            (spool, r)
        })
        .await
        {
            Ok((spool, r)) => {
                self.spool = Some(spool);
                Some(r)
            }
            Err(e) => {
                tracing::error!(hep_id = %self.shared.name, error = %e,
                    "The spool failed; this lane drops instead of spooling from now on");
                self.shared.set_last_error(format!("spool failed: {e}"));
                None
            }
        }
    }

    /// Counts what a spool operation lost.
    fn count_lost(&self, lost: Lost) {
        for (reason, n) in [
            (DropReason::SpoolFull, lost.full),
            (DropReason::SpoolExpired, lost.expired),
            (DropReason::SpoolCorrupt, lost.corrupt),
            (DropReason::SpoolError, lost.error),
        ] {
            if n > 0 {
                self.shared.dropped(reason, n);
            }
        }
    }

    /// Writes `n` memory packets (`est` reserved bytes in all) to the spool; they leave the
    /// queue whatever happens (spooled, or dropped and counted).
    async fn append_to_spool(&mut self, buf: Vec<u8>, lens: Vec<usize>, est: usize) {
        let n = lens.len();
        if n == 0 {
            return;
        }
        let result = self.on_spool(move |s| s.append(&buf, &lens)).await;
        self.shared.release_many(n, est);
        match result {
            Some((_, lost, error)) => {
                self.count_lost(lost);
                if let Some(error) = error {
                    let now = Instant::now();
                    if self
                        .spool_warned
                        .is_none_or(|at| now.duration_since(at) >= SPOOL_WARN_INTERVAL)
                    {
                        tracing::warn!(hep_id = %self.shared.name, error = %error,
                            "Cannot spool HEP packets; dropping them");
                        self.spool_warned = Some(now);
                    }
                    self.shared.set_last_error(error);
                }
            }
            None => self.shared.dropped(DropReason::SpoolError, n as u64),
        }
    }

    /// Moves the pending units that came from the queue to the spool. (Pending holds either
    /// units from the queue or units read back from the spool, never both: queue units are
    /// taken only when no spooled packet waits.)
    async fn spool_pending_memory(&mut self) {
        if self.pending.units.iter().all(|u| u.spooled) {
            return;
        }
        let units = std::mem::take(&mut self.pending.units);
        let buf = self.pending.buf.split_off(self.pending.head);
        self.pending.buf.clear();
        self.pending.head = 0;
        let est = units.iter().map(|u| u.est).sum();
        let lens = units.iter().map(|u| u.len).collect();
        self.append_to_spool(buf, lens, est).await;
    }

    /// Moves up to a batch of queued packets to the spool, encoded as they will be sent.
    async fn spool_queue(&mut self) {
        while self.scratch.len() < SPOOL_BATCH {
            match self.rx.try_recv() {
                Ok(msg) => self.scratch.push(msg),
                Err(_) => break,
            }
        }
        self.spool_scratch().await;
    }

    /// Encodes what is in `scratch` and writes it to the spool.
    async fn spool_scratch(&mut self) {
        if self.scratch.is_empty() {
            return;
        }
        let mut buf = Vec::new();
        let mut lens = Vec::with_capacity(self.scratch.len());
        let mut est_total = 0;
        let scratch = std::mem::take(&mut self.scratch);
        for msg in &scratch {
            let est = estimate(msg);
            match encode_to(
                &self.encoder,
                self.framing,
                self.limits.max_udp_size,
                &mut self.hep,
                &mut buf,
                msg,
            ) {
                Ok(len) => {
                    lens.push(len);
                    est_total += est;
                }
                Err(reason) => {
                    self.shared.release_many(1, est);
                    self.shared.dropped(reason, 1);
                }
            }
        }
        self.scratch = scratch;
        self.scratch.clear();
        self.append_to_spool(buf, lens, est_total).await;
    }

    /// The collector is away: memory goes to disk while the backoff runs, then one attempt.
    async fn spool_while_down(&mut self, tick: &mut tokio::time::Interval) {
        self.set_mode(SpoolMode::Spooling);
        self.spool_pending_memory().await;
        if !self.rx.is_empty() {
            self.spool_queue().await;
            return;
        }
        let at = match self.stop.deadline {
            Some(deadline) => self.next_attempt.min(deadline),
            None => self.next_attempt,
        };
        if at > Instant::now() {
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                n = self.rx.recv_many(&mut self.scratch, BATCH_MESSAGES) => {
                    if n > 0 {
                        self.spool_queue().await;
                    } else {
                        // Every producer is gone: nothing more will come; try the collector.
                        self.next_attempt = Instant::now();
                    }
                    return;
                }
                _ = self.stop.arrived() => return,
                _ = tick.tick() => {
                    self.on_tick().await;
                    return;
                }
            }
        }
        self.attempt_connect().await;
    }

    /// The collector is back and spooled packets wait: reads the next batch (at the replay
    /// rate) into `pending`. New packets wait in the queue meanwhile, and go to disk behind the
    /// backlog when the queue fills.
    async fn replay_step(&mut self, tick: &mut tokio::time::Interval) {
        self.set_mode(SpoolMode::Replaying);
        if self.shared.spool_pressure() {
            self.spool_queue().await;
            return;
        }
        let n = self.replay.available(SPOOL_BATCH);
        if n == 0 {
            // Short waits, so a filling queue is noticed in time.
            let wait = self.replay.wait().min(Duration::from_millis(10));
            let Some(link) = self.link.as_mut() else {
                return;
            };
            tokio::select! {
                biased;
                _ = self.stop.arrived() => {}
                e = link.closed_by_peer() => self.lose_link(e),
                () = tokio::time::sleep(wait) => {}
                _ = tick.tick() => self.on_tick().await,
            }
            return;
        }
        let read = self
            .on_spool(move |s| {
                let mut out = Vec::new();
                let mut lens = Vec::new();
                let lost = s.read(n, &mut out, &mut lens);
                (out, lens, lost)
            })
            .await;
        let Some((out, lens, lost)) = read else {
            return;
        };
        self.count_lost(lost);
        self.replay.spend(lens.len());
        self.pending.compact();
        self.pending.buf.extend_from_slice(&out);
        for len in lens {
            self.pending.units.push_back(Unit {
                len,
                est: 0,
                spooled: true,
            });
        }
    }

    /// Once a second: the pending drop warning; with a spool, its age gauge, expiry, and
    /// taking over what other processes left.
    async fn on_tick(&mut self) {
        self.shared.report_drops();
        if self.spool.is_some() {
            self.spool_tick().await;
        }
    }

    async fn spool_tick(&mut self) {
        if let Some(lost) = self.on_spool(|s| s.tick(true)).await {
            self.count_lost(lost);
        }
        if let Some(sp) = &self.shared.spool {
            sp.refresh_age();
        }
    }

    /// The end: with a spool, what memory still holds goes to disk instead of being dropped,
    /// and the segments are closed (left to the next process); then the rest is abandoned.
    async fn finish(mut self) -> ShutdownReport {
        let mut spooled = 0;
        if self.spool.is_some() {
            self.rx.close();
            let before = self.shared.counters.queue_depth.get();
            self.spool_pending_memory().await;
            while !self.rx.is_empty() {
                self.spool_queue().await;
            }
            spooled = before.saturating_sub(self.shared.counters.queue_depth.get());
            if let Some(spool) = self.spool.take() {
                let _ = tokio::task::spawn_blocking(move || spool.close()).await;
            }
        }
        let mut report = self.abandon();
        report.spooled = spooled;
        report
    }

    /// Waits for the backoff to expire (or for shutdown), then makes one attempt.
    async fn wait_and_connect(&mut self) {
        let at = match self.stop.deadline {
            Some(deadline) => self.next_attempt.min(deadline),
            None => self.next_attempt,
        };
        if at > Instant::now() {
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                _ = self.stop.arrived() => return,
            }
        }
        self.attempt_connect().await;
    }

    /// One connection attempt, unless the shutdown deadline passed.
    async fn attempt_connect(&mut self) {
        if self.stop.deadline.is_some_and(|d| Instant::now() >= d) {
            return;
        }
        // Drops go on while the collector is away: report them even if no new drop comes.
        self.shared.report_drops();
        let limit = self.limits.connect_timeout;
        let result = within(&mut self.stop, limit, self.endpoint.connect()).await;
        match result {
            Some(Ok(link)) => self.connected(link),
            Some(Err(e)) => self.connect_failed(e),
            // The shutdown deadline, not the collector, ended this attempt.
            None if self.stop.deadline.is_some_and(|d| Instant::now() >= d) => {}
            None => self.connect_failed(LinkError::ConnectTimeout(limit)),
        }
    }

    fn connected(&mut self, link: Link) {
        let reconnected = self.ever_connected;
        if self.ever_connected {
            self.shared.counters.reconnects.inc();
        }
        self.ever_connected = true;
        self.shared.link_up();
        // Every new UDP socket waits for a "port unreachable" before its first datagram counts
        // as sent: `sent` then never counts datagrams a collector that is not there lost.
        self.probe = matches!(link, Link::Datagram(_));
        // What queued while the collector was away goes out paced, and what queued behind it
        // meanwhile, until no more than a batch waits. (Not at the first connection: nothing
        // was away, and a start under load would only queue and drop.)
        self.catchup_left = if self.probe && reconnected && self.catchup.rate > 0.0 {
            self.pending.units.len() + self.rx.len()
        } else {
            0
        };
        if self.last_warned.take().is_some() {
            tracing::info!(hep_id = %self.shared.name, destination = %self.shared.destination,
                "Connected to HEP destination");
        } else {
            tracing::debug!(hep_id = %self.shared.name, destination = %self.shared.destination,
                "Connected to HEP destination");
        }
        self.link = Some(link);
    }

    fn connect_failed(&mut self, error: LinkError) {
        self.shared.counters.send_errors.inc();
        let delay = self.backoff.next_delay();
        self.next_attempt = Instant::now() + delay;
        let text = error.to_string();
        let now = Instant::now();
        // The same error again: the reminder (or, without one, a warning a minute) says it.
        let repeat = self.last_warned.as_ref().is_some_and(|(t, at)| {
            *t == text && (self.shared.reminds() || now.duration_since(*at) < CONNECT_WARN_INTERVAL)
        });
        self.shared.still_down(&text);
        if repeat {
            tracing::debug!(hep_id = %self.shared.name, destination = %self.shared.destination,
                error = %text, retry_in = ?delay, "Cannot connect to HEP destination");
        } else {
            tracing::warn!(hep_id = %self.shared.name, destination = %self.shared.destination,
                error = %text, retry_in = ?delay, "Cannot connect to HEP destination");
            self.last_warned = Some((text.clone(), now));
        }
        self.shared.set_last_error(text);
    }

    /// Drops the link after an error; its unsent units stay pending for the next one.
    fn lose_link(&mut self, error: LinkError) {
        self.link = None;
        self.pending.compact();
        self.shared.link_down();
        self.shared.counters.send_errors.inc();
        let delay = self.backoff.next_delay();
        self.next_attempt = Instant::now() + delay;
        let text = error.to_string();
        tracing::warn!(hep_id = %self.shared.name, destination = %self.shared.destination,
            error = %text, retry_in = ?delay, pending = self.pending.units.len(),
            "Lost connection to HEP destination");
        self.shared.still_down(&text);
        // The next connect failure is news too.
        self.last_warned = Some((String::new(), Instant::now()));
        self.shared.set_last_error(text);
    }

    async fn wait_for_work(&mut self, tick: &mut tokio::time::Interval) -> Wake {
        let Some(link) = self.link.as_mut() else {
            return Wake::Tick;
        };
        tokio::select! {
            biased;
            _ = self.stop.arrived() => Wake::Stop,
            e = link.closed_by_peer() => Wake::Lost(e),
            n = self.rx.recv_many(&mut self.scratch, BATCH_MESSAGES) => {
                if n == 0 { Wake::QueueDone } else { Wake::Messages }
            }
            _ = tick.tick() => Wake::Tick,
        }
    }

    /// Woken for a few messages: lets the tasks that are ready run first, then takes what they
    /// queued meanwhile into the same batch. Under load that makes one system call (and one
    /// wake-up of this task) carry many packets instead of one each; idle, it costs one pass
    /// of the scheduler.
    async fn gather(&mut self) {
        if self.scratch.len() >= BATCH_MESSAGES {
            return;
        }
        tokio::task::yield_now().await;
        while self.scratch.len() < BATCH_MESSAGES {
            match self.rx.try_recv() {
                Ok(msg) => self.scratch.push(msg),
                Err(_) => break,
            }
        }
    }

    /// Encodes the messages in `scratch` into `pending`, dropping (and counting) those that
    /// cannot be sent at all.
    fn encode_scratch(&mut self) {
        let mut scratch = std::mem::take(&mut self.scratch);
        for msg in scratch.drain(..) {
            let est = estimate(&msg);
            match self.encode(&msg) {
                Ok(len) => self.pending.units.push_back(Unit {
                    len,
                    est,
                    spooled: false,
                }),
                Err(reason) => {
                    self.shared.release_many(1, est);
                    self.shared.dropped(reason, 1);
                }
            }
        }
        self.scratch = scratch;
    }

    /// Appends one unit to `pending.buf`; its length, or why it is dropped.
    fn encode(&mut self, msg: &TraceMessage) -> Result<usize, DropReason> {
        encode_to(
            &self.encoder,
            self.framing,
            self.limits.max_udp_size,
            &mut self.hep,
            &mut self.pending.buf,
            msg,
        )
    }

    /// Counts the `n` oldest pending units as delivered (counters updated once per batch: the
    /// producers share these cache lines).
    fn sent_units(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let (mut bytes, mut est, mut from_spool) = (0usize, 0usize, 0usize);
        for unit in self.pending.units.drain(..n) {
            bytes += unit.len;
            est += unit.est;
            from_spool += usize::from(unit.spooled);
        }
        self.pending.head += bytes;
        self.shared.counters.sent.add(n as u64);
        self.shared.counters.sent_bytes.add(bytes as u64);
        // Once per batch: a clock read is cheap next to the system call that sent it.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.shared.counters.last_sent_unix_ms.set(now);
        self.shared.release_many(n - from_spool, est);
        if from_spool > 0
            && let Some(spool) = self.spool.as_mut()
        {
            spool.delivered(from_spool);
        }
        if self.stop.deadline.is_some() {
            self.flushed += n as u64;
        }
    }

    /// Every pending unit was delivered.
    fn sent_all(&mut self) {
        self.sent_units(self.pending.units.len());
        self.pending.compact();
        // The link carried data: the next failure starts the backoff afresh.
        self.backoff.reset();
    }

    async fn write_pending(&mut self) -> Result<(), LinkError> {
        match self.framing {
            Framing::Datagram => self.write_datagrams().await,
            Framing::Stream => self.write_stream().await,
            Framing::JsonLine => self.write_lines().await,
        }
    }

    async fn write_datagrams(&mut self) -> Result<(), LinkError> {
        if self.probe {
            self.probe_datagram().await?;
        }
        let write_timeout = self.limits.write_timeout;
        // Units sent since the last counter update, and the offset of the next one.
        let (mut done, mut offset) = (0usize, self.pending.head);
        // After a short batch the next datagram goes alone: sendmmsg loses the error that ended
        // the batch (an ICMP port unreachable, say), and a single send reports it.
        let mut alone = false;
        while done < self.pending.units.len() {
            let Some(Link::Datagram(socket)) = self.link.as_ref() else {
                break;
            };
            // Up to a batch's worth of datagrams in one system call: on loopback the call itself
            // costs about as much as handing the datagram to the kernel.
            let mut end = offset;
            let mut most = if alone { 1 } else { BATCH_MESSAGES };
            if self.catchup_left > 0 {
                most = self.catchup.available(most.min(self.catchup_left));
                if most == 0 {
                    let wait = self.catchup.wait().max(Duration::from_millis(1));
                    if within(&mut self.stop, wait, std::future::pending::<()>())
                        .await
                        .is_none()
                        && self.stop.deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        // The grace period ended: what is left is abandoned by the caller.
                        break;
                    }
                    continue;
                }
            }
            let batch: Vec<&[u8]> = (self.pending.units.range(done..).take(most))
                .map(|unit| {
                    let datagram = &self.pending.buf[end..end + unit.len];
                    end += unit.len;
                    datagram
                })
                .collect();
            // The socket is nearly always writable: no timer unless it is not.
            let result = match send_datagrams(socket, &batch) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let first = batch[0];
                    within(&mut self.stop, write_timeout, send_when_room(socket, first))
                        .await
                        .map(|r| r.map(|_| 1))
                }
                other => Some(other),
            };
            match result {
                Some(Ok(n)) => {
                    if self.catchup_left > 0 {
                        self.catchup.spend(n);
                        self.catchup_left = self.catchup_left.saturating_sub(n);
                        if self.catchup_left == 0 {
                            // What queued during the catch-up is a backlog too, unless it is
                            // no more than a batch: the catch-up ends once the lane keeps up.
                            let held =
                                self.pending.units.len().saturating_sub(done + n) + self.rx.len();
                            if held > BATCH_MESSAGES {
                                self.catchup_left = held;
                            }
                        }
                    }
                    alone = n < batch.len();
                    offset += batch.iter().take(n).map(|d| d.len()).sum::<usize>();
                    done += n;
                }
                Some(Err(e)) if e.raw_os_error() == Some(nix::errno::Errno::EMSGSIZE as i32) => {
                    // The path refuses a datagram this large: drop it as oversize, keep going.
                    self.sent_units(done);
                    done = 0;
                    if let Some(unit) = self.pending.units.pop_front() {
                        self.pending.head += unit.len;
                        if unit.spooled {
                            // Gone from the spool too: it can never be sent.
                            if let Some(spool) = self.spool.as_mut() {
                                spool.delivered(1);
                            }
                        } else {
                            self.shared.release_many(1, unit.est);
                        }
                        self.shared.dropped(DropReason::Oversize, 1);
                    }
                    offset = self.pending.head;
                }
                // Typically an ICMP port unreachable for an earlier datagram: this one was not
                // sent, and is retried on a fresh socket.
                Some(Err(e)) => {
                    self.sent_units(done);
                    return Err(LinkError::Write(e));
                }
                None => {
                    self.sent_units(done);
                    return Err(LinkError::WriteTimeout(write_timeout));
                }
            }
        }
        self.sent_units(done);
        if self.pending.units.is_empty() {
            self.sent_all();
        }
        Ok(())
    }

    /// Sends the first pending datagram alone on a new socket and waits for a "port
    /// unreachable" before counting it: with a spool, a datagram is kept rather than lost to a
    /// collector that is not there.
    async fn probe_datagram(&mut self) -> Result<(), LinkError> {
        let Some(Link::Datagram(socket)) = self.link.as_ref() else {
            return Ok(());
        };
        let Some(first) = self.pending.units.front().copied() else {
            return Ok(());
        };
        let start = self.pending.head;
        let datagram = &self.pending.buf[start..start + first.len];
        match socket.send(datagram) {
            Ok(_) => {}
            // Too large for the path: the usual loop drops it as oversize.
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EMSGSIZE as i32) => return Ok(()),
            Err(e) => return Err(LinkError::Write(e)),
        }
        within(&mut self.stop, UDP_PROBE_WAIT, std::future::pending::<()>()).await;
        let Some(Link::Datagram(socket)) = self.link.as_ref() else {
            return Ok(());
        };
        match socket.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Err(LinkError::Write(e)),
        }
        self.probe = false;
        self.sent_units(1);
        if self.pending.units.is_empty() {
            self.sent_all();
        }
        Ok(())
    }

    async fn write_stream(&mut self) -> Result<(), LinkError> {
        let write_timeout = self.limits.write_timeout;
        let Some(Link::Stream(link)) = self.link.as_mut() else {
            return Ok(());
        };
        if let Some(e) = link.gone() {
            return Err(e);
        }
        let confirm_on_write = link.confirm_on_write;
        // Units are resent from their first byte on every new link.
        let mut written = self.pending.head;
        // Bytes of the units counted so far, relative to `head` at start.
        while written < self.pending.buf.len() {
            let Some(Link::Stream(link)) = self.link.as_mut() else {
                return Ok(());
            };
            let chunk = &self.pending.buf[written..];
            let n = match within(&mut self.stop, write_timeout, link.writer.write(chunk)).await {
                Some(Ok(0)) => {
                    return Err(LinkError::Write(std::io::ErrorKind::WriteZero.into()));
                }
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(LinkError::Write(e)),
                None => return Err(LinkError::WriteTimeout(write_timeout)),
            };
            written += n;
            if confirm_on_write {
                // Whole units now in the kernel count as sent.
                let mut end = self.pending.head;
                let whole = self
                    .pending
                    .units
                    .iter()
                    .take_while(|u| {
                        end += u.len;
                        end <= written
                    })
                    .count();
                self.sent_units(whole);
            }
        }
        let Some(Link::Stream(link)) = self.link.as_mut() else {
            return Ok(());
        };
        match within(&mut self.stop, write_timeout, link.writer.flush()).await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(LinkError::Write(e)),
            None => return Err(LinkError::WriteTimeout(write_timeout)),
        }
        self.sent_all();
        Ok(())
    }

    async fn write_lines(&mut self) -> Result<(), LinkError> {
        let Some(Link::Local(out)) = self.link.as_ref() else {
            return Ok(());
        };
        let out = out.clone();
        let buf = std::mem::take(&mut self.pending.buf);
        let head = self.pending.head;
        // Blocking writes run on the blocking pool; they are not interrupted by timeouts.
        let joined = tokio::task::spawn_blocking(move || {
            let result = out.write_all(&buf[head..]);
            (buf, result)
        })
        .await;
        match joined {
            Ok((buf, result)) => {
                self.pending.buf = buf;
                result.map_err(LinkError::Write)?;
                self.sent_all();
                Ok(())
            }
            Err(e) => {
                // The write panicked and took the lines with it: they are lost, and counted.
                let lost = std::mem::take(&mut self.pending.units);
                let est = lost.iter().map(|u| u.est).sum();
                self.shared.release_many(lost.len(), est);
                self.shared
                    .dropped(DropReason::EncodeError, lost.len() as u64);
                self.pending.head = 0;
                Err(LinkError::Write(std::io::Error::other(e.to_string())))
            }
        }
    }

    /// Shutdown's end: whatever is still held is counted as dropped.
    fn abandon(mut self) -> ShutdownReport {
        self.rx.close();
        let mut abandoned = 0u64;
        while let Ok(msg) = self.rx.try_recv() {
            self.shared.release_many(1, estimate(&msg));
            abandoned += 1;
        }
        for unit in std::mem::take(&mut self.pending.units) {
            // A unit read back from the spool is still there, for the next process.
            if !unit.spooled {
                self.shared.release_many(1, unit.est);
                abandoned += 1;
            }
        }
        if abandoned > 0 {
            self.shared.dropped(DropReason::Shutdown, abandoned);
        }
        if self.link.take().is_some() {
            self.shared.link_down();
        }
        tracing::debug!(hep_id = %self.shared.name, flushed = self.flushed, abandoned,
            "HEP destination stopped");
        ShutdownReport {
            flushed: self.flushed,
            abandoned,
            spooled: 0,
        }
    }
}
