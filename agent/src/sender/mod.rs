//! Destinations: one task per named destination (`hep_id`, `stdout`, `file:`) behind a bounded
//! queue that never blocks the producer.
//!
//! The tracer holds a [`Sender`] per destination (or a [`FanOut`] per `trace_id`) and calls
//! [`Sender::offer`] with an `Arc<TraceMessage>`: a plain function that reserves room in the queue
//! and `try_send`s, or drops the newest packet and counts why. Everything slow happens in the
//! destination's own task: encoding (once per destination, with its [`heptap_hep::Encoder`]),
//! connecting (names resolved again on every attempt), writing (UDP datagrams, batched TCP/TLS
//! frames, JSON lines) and reconnecting with capped exponential backoff and jitter, forever.
//!
//! Map: [`queue`] (the producer side: reservation, counters, rate-limited drop log), [`task`]
//! (the destination's loop), [`link`] (connecting and writing per transport), [`tls`] (the
//! rustls client configuration), [`backoff`]. docs/senders.md describes the behaviour for users.

mod backoff;
mod link;
mod queue;
mod task;
mod tls;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use heptap_config::Destination;
use heptap_hep::{Encoder, TraceMessage, Version};
use tokio::sync::{mpsc, watch};

use crate::stats::Stats;

pub use queue::{DropReason, SenderCounters};

/// Queue sizes and timings of a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most packets held (queued or being written) at once; the newest is dropped beyond it.
    pub queue_packets: usize,
    /// Most bytes held at once, estimated from the messages (see `docs/senders.md`); bounds the
    /// memory a slow collector can cost whatever the message sizes.
    pub queue_bytes: usize,
    /// Largest UDP datagram sent; a bigger packet is dropped as `oversize`, never truncated.
    pub max_udp_size: usize,
    /// Bound on resolving the host and establishing the connection (TLS handshake included).
    pub connect_timeout: Duration,
    /// A write that makes no progress for this long means the collector is stuck: reconnect.
    pub write_timeout: Duration,
    /// First delay before reconnecting after a failure.
    pub backoff_initial: Duration,
    /// Longest delay between reconnection attempts; attempts never stop.
    pub backoff_max: Duration,
}

impl Limits {
    /// The largest UDP payload an IPv4 datagram can carry, and heplify-server's input cap.
    pub const MAX_UDP_SIZE: usize = 65507;
}

impl Default for Limits {
    /// The `[hep]` defaults of docs/configuration.md: 10000 packets or 16 MiB, datagrams up to
    /// 65507 bytes, 2 s timeouts, backoff from 100 ms to 10 s.
    fn default() -> Self {
        Limits {
            queue_packets: 10_000,
            queue_bytes: 16 * 1024 * 1024,
            max_udp_size: Limits::MAX_UDP_SIZE,
            connect_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// Everything needed to start one destination: the config's destination (where, over what, with
/// which TLS settings) and what the agent adds to it (how to encode, how much to queue). Two
/// equal specs describe the same destination, so a reload can keep its task (and its queue and
/// connection) running.
#[derive(Clone, Debug)]
pub struct DestinationSpec {
    /// The destination name (`hep_id` name, `stdout`, `file:<path>`); names the statistics group
    /// `hep_<name>` and the log lines.
    pub name: String,
    /// Where the packets go: a HEP collector (host, port, transport, TLS), stdout or a file.
    pub destination: Destination,
    /// Version, payload mode, capture id, auth key and node name of this destination; its
    /// version is the one sent (the agent builds it from the `hep_id`'s).
    pub encoder: Encoder,
    /// Queue sizes and timings (the agent takes them from `[hep]` and the `hep_id`'s
    /// overrides).
    pub limits: Limits,
}

impl PartialEq for DestinationSpec {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.encoder, &other.encoder);
        self.name == other.name
            && self.destination == other.destination
            && self.limits == other.limits
            && a.version == b.version
            && a.mode == b.mode
            && a.capture_id == b.capture_id
            && a.auth_key == b.auth_key
            && a.node_name == b.node_name
    }
}

impl Eq for DestinationSpec {}

/// What became of an offered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// In the destination's queue; it is now the sender's to deliver or count as dropped.
    Queued,
    /// Not taken: counted under `dropped_<reason>`.
    Dropped(DropReason),
}

/// Errors found when a destination starts (bad files or settings); never raised later.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// A certificate, key or CA file could not be read or parsed.
    #[error("hep_id {name}: cannot load {what} from {}: {reason}", path.display())]
    TlsFile {
        /// The destination.
        name: String,
        /// Which file: "ca_file", "cert_file" or "key_file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// Neither `ca_file` nor the system offered a single root certificate.
    #[error("hep_id {name}: no CA certificates: set ca_file (the system store is empty)")]
    NoRootCertificates {
        /// The destination.
        name: String,
    },
    /// A client certificate without its key or the other way round.
    #[error("hep_id {name}: mutual TLS needs both cert_file and key_file")]
    ClientAuthIncomplete {
        /// The destination.
        name: String,
    },
    /// rustls refused the configuration (for example a key that does not match the certificate).
    #[error("hep_id {name}: TLS configuration refused: {source}")]
    Tls {
        /// The destination.
        name: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The SNI name is neither a DNS name nor an IP address.
    #[error("hep_id {name}: {server_name:?} is not a valid TLS server name")]
    InvalidServerName {
        /// The destination.
        name: String,
        /// The name that was refused.
        server_name: String,
    },
    /// HEPv1/v2 packets carry no length, so a stream cannot be cut back into packets.
    #[error("hep_id {name}: HEP version {version} can only be sent over UDP")]
    StreamNeedsHep3 {
        /// The destination.
        name: String,
        /// The configured version.
        version: Version,
    },
    /// The `file:` destination cannot be created or opened.
    #[error("hep_id {name}: cannot open {}: {source}", path.display())]
    File {
        /// The destination.
        name: String,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A queue size of zero, or a datagram limit no packet can meet.
    #[error("hep_id {name}: {reason}")]
    InvalidLimits {
        /// The destination.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `spawn` was called outside a Tokio runtime.
    #[error("hep_id {name}: senders must be started inside the Tokio runtime")]
    NoRuntime {
        /// The destination.
        name: String,
    },
}

/// The producer's handle on a destination. Cheap to clone: two `Arc`s.
#[derive(Clone)]
pub struct Sender {
    /// The queue of each lane (one per relay worker for HEP destinations), only ever
    /// `try_send`; a producer uses its own worker's lane, so a connection's packets stay in
    /// order and wake a task on the producer's own thread.
    lanes: Arc<[mpsc::Sender<Arc<TraceMessage>>]>,
    /// Reservation, counters and state shared with the destination's task.
    shared: Arc<queue::Shared>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("name", &self.shared.name)
            .field("destination", &self.shared.destination)
            .finish()
    }
}

impl Sender {
    /// Queues `msg` for this destination, or drops it and counts why. Never blocks and never
    /// awaits: it reserves room (packets and bytes), clones the `Arc` and `try_send`s.
    pub fn offer(&self, msg: &Arc<TraceMessage>) -> Offer {
        let lane = crate::workers::current();
        match self.lanes.get(lane).or(self.lanes.first()) {
            Some(tx) => self.shared.offer(tx, msg),
            None => self.shared.refuse(DropReason::Shutdown),
        }
    }

    /// The `hep_id` name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Destination text, transport, connection state and counters, for the MI's `hep_ids`.
    pub fn state(&self) -> SenderState {
        self.shared.state()
    }
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
}

/// What a graceful shutdown achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Packets delivered during the grace period.
    pub flushed: u64,
    /// Packets still held when the grace period ended, counted as `dropped_shutdown`.
    pub abandoned: u64,
}

/// The running destination; stop it with [`SenderTask::shutdown`]. Dropping it leaves the tasks
/// running until every [`Sender`] is gone and the queues are delivered.
#[derive(Debug)]
pub struct SenderTask {
    /// Carries the flush deadline to the lanes' tasks.
    stop: watch::Sender<Option<tokio::time::Instant>>,
    /// The lanes' tasks; each yields its report.
    lanes: Vec<tokio::task::JoinHandle<ShutdownReport>>,
    /// For the closing flag and the counters if the task has to be aborted.
    shared: Arc<queue::Shared>,
}

impl SenderTask {
    /// Closes the queue (later offers are dropped as `shutdown`), delivers what it can within
    /// `grace`, then stops; what is left is counted as `dropped_shutdown`.
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        let deadline = tokio::time::Instant::now() + grace;
        self.shared.close();
        let _ = self.stop.send(Some(deadline));
        // The task honours the deadline itself; the margin only covers a write stuck in a
        // blocking file or stdout call, which cannot be interrupted.
        let margin = Duration::from_secs(1);
        let mut report = ShutdownReport::default();
        let mut stuck = false;
        for lane in &mut self.lanes {
            match tokio::time::timeout_at(deadline + margin, &mut *lane).await {
                Ok(Ok(r)) => {
                    report.flushed += r.flushed;
                    report.abandoned += r.abandoned;
                }
                _ => {
                    lane.abort();
                    stuck = true;
                }
            }
        }
        if stuck {
            // What the stuck lanes held is still reserved: count it as abandoned.
            let abandoned = self.shared.counters.queue_depth.get();
            self.shared.counters.dropped_shutdown.add(abandoned);
            report.abandoned += abandoned;
        }
        report
    }
}

/// Fan-out over the destinations of one `trace_id` (OpenSIPS: several `uri=hep:` per tid).
#[derive(Clone, Debug, Default)]
pub struct FanOut {
    /// The destinations, in configuration order.
    senders: Arc<[Sender]>,
}

impl FanOut {
    /// A fan-out over `senders`.
    pub fn new(senders: Vec<Sender>) -> Self {
        FanOut {
            senders: senders.into(),
        }
    }

    /// Offers `msg` to every destination; returns how many queued it. Each destination drops
    /// and counts on its own, so a slow one never costs the others a packet.
    pub fn offer(&self, msg: &Arc<TraceMessage>) -> usize {
        self.senders
            .iter()
            .filter(|s| s.offer(msg) == Offer::Queued)
            .count()
    }

    /// The destinations.
    pub fn senders(&self) -> &[Sender] {
        &self.senders
    }

    /// Whether there is no destination at all.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }
}

/// Checks what [`spawn`] would check (limits, HEPv1/v2 over a stream, TLS files, the output
/// file's directory) without starting anything or creating files; for `heptap check` and for
/// validating a reload before applying it.
pub fn check(spec: &DestinationSpec) -> Result<(), SenderError> {
    validate_limits(&spec.name, &spec.limits)?;
    link::Endpoint::check(&spec.name, &spec.destination, &spec.encoder)
}

/// Starts the destination's task on the current runtime and returns the producers' handle and
/// the task's handle; [`spawn_on`] with this runtime as the only lane.
pub fn spawn(spec: DestinationSpec, stats: &Stats) -> Result<(Sender, SenderTask), SenderError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SenderError::NoRuntime {
        name: spec.name.clone(),
    })?;
    spawn_on(spec, stats, &[runtime])
}

/// Starts the destination with one lane per runtime in `workers` (the relay workers), each a
/// task on its runtime with its own socket or connection, and returns the producers' handle and
/// the tasks' handle. `stdout` and `file:` destinations get one lane (on the first runtime), so
/// their lines never interleave.
///
/// Everything that can be checked before sending is checked here (TLS files, limits, HEPv1/v2
/// over a stream, the output file), so a bad destination fails at start with its name.
pub fn spawn_on(
    spec: DestinationSpec,
    stats: &Stats,
    workers: &[tokio::runtime::Handle],
) -> Result<(Sender, SenderTask), SenderError> {
    let name = spec.name.clone();
    validate_limits(&name, &spec.limits)?;
    let lanes = match spec.destination {
        Destination::Hep(_) => workers.len(),
        Destination::Stdout | Destination::File(_) => 1,
    };
    if lanes == 0 {
        return Err(SenderError::NoRuntime { name });
    }
    let endpoint = link::Endpoint::prepare(&name, &spec.destination, &spec.encoder)?;
    let shared = Arc::new(queue::Shared::new(
        name,
        endpoint.destination(),
        endpoint.transport_name(),
        &spec.limits,
        lanes,
        stats,
    ));
    let (stop, stop_rx) = watch::channel(None);
    let mut txs = Vec::with_capacity(lanes);
    let mut handles = Vec::with_capacity(lanes);
    for runtime in workers.iter().take(lanes) {
        // The shared reservation bounds all lanes together; each channel could hold them all.
        let (tx, rx) = mpsc::channel(spec.limits.queue_packets);
        let task = task::Task::new(
            spec.clone(),
            endpoint.clone(),
            Arc::clone(&shared),
            rx,
            stop_rx.clone(),
        );
        txs.push(tx);
        handles.push(runtime.spawn(task.run()));
    }
    Ok((
        Sender {
            lanes: txs.into(),
            shared: Arc::clone(&shared),
        },
        SenderTask {
            stop,
            lanes: handles,
            shared,
        },
    ))
}

fn validate_limits(name: &str, limits: &Limits) -> Result<(), SenderError> {
    let invalid = |reason| SenderError::InvalidLimits {
        name: name.to_owned(),
        reason,
    };
    if limits.queue_packets == 0 {
        return Err(invalid("queue_packets must be at least 1"));
    }
    if limits.queue_packets > u32::MAX as usize {
        return Err(invalid("queue_packets is too large"));
    }
    if limits.queue_bytes == 0 {
        return Err(invalid("queue_bytes must be at least 1"));
    }
    if limits.max_udp_size < 6 {
        return Err(invalid("max_udp_size is smaller than any HEP packet"));
    }
    Ok(())
}

/// HEPv1/v2 have no length field, so only a datagram can delimit them.
fn needs_datagrams(version: Version) -> bool {
    version != Version::V3
}
