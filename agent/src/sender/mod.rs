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
//! Map: `spec` (what a destination is: the config's `Destination` plus encoder, limits and the
//! `file:` output's owner), `error`, `file` (opening a `file:` output without following links,
//! refusing one others could have planted), `queue` (the producer side: reservation, counters,
//! rate-limited drop log), `task` (the destination's loop), `link` (connecting and writing per
//! transport), `tls` (the rustls client configuration), `backoff`. This file holds the handles ([`Sender`], [`FanOut`],
//! [`SenderTask`]) and starting; the children never import it. docs/senders.md describes the
//! behaviour for users.

mod backoff;
mod error;
mod file;
mod link;
mod queue;
mod spec;
mod task;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use heptap_config::Destination;
use heptap_hep::TraceMessage;
use tokio::sync::{mpsc, watch};

use crate::stats::Stats;

pub use error::SenderError;
pub use file::{FileOwner, FileRefused};
pub use queue::{DropReason, Offer, SenderCounters, SenderState};
pub use spec::{DestinationSpec, Limits};
pub use task::ShutdownReport;

/// The producer's handle on a destination. Cheap to clone: two `Arc`s.
#[derive(Clone)]
pub struct Sender {
    /// The queue of each lane (one per relay worker for HEP destinations), only ever
    /// `try_send`; a producer uses its own worker's lane, so a connection's packets stay in
    /// order and wake a task on the producer's own thread.
    lanes: Arc<[mpsc::Sender<Arc<TraceMessage>>]>,
    /// Reservation, counters and state shared with the destination's task.
    shared: Arc<queue::Shared>,
    /// A TLS destination's client configuration, shared with its lanes: renewed in place.
    tls: Option<Arc<tls::ClientTls>>,
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

    /// Reads a TLS destination's certificate, key and CA files (those `spec` names) again:
    /// `Ok(true)` when they changed, and its lanes' next connections use them (connections up
    /// keep theirs); `Ok(false)` when they hold the same, or the destination is not TLS. On
    /// error it goes on with what it had.
    pub fn renew_tls(&self, spec: &DestinationSpec) -> Result<bool, SenderError> {
        let (Some(tls), Destination::Hep(id)) = (&self.tls, &spec.destination) else {
            return Ok(false);
        };
        let host = id.host.trim_start_matches('[').trim_end_matches(']');
        tls.renew(&spec.name, host, &id.tls)
    }
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

/// Checks what [`spawn`] would check (limits, HEPv1/v2 over a stream, TLS files, an existing
/// output file as it would be opened, a new one's directory) without starting anything or
/// creating files; for `heptap check-config` and for validating a reload before applying it.
pub fn check(spec: &DestinationSpec) -> Result<(), SenderError> {
    spec.limits.check(&spec.name)?;
    link::Endpoint::check(spec, true)
}

/// [`check`] without reading TLS certificate, key and CA files: what a reload checks before it
/// changes anything (it reads those files per destination, so one that cannot be used leaves
/// that destination as it was and does not stop the others).
pub fn check_except_tls_files(spec: &DestinationSpec) -> Result<(), SenderError> {
    spec.limits.check(&spec.name)?;
    link::Endpoint::check(spec, false)
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
    spec.limits.check(&name)?;
    let lanes = match spec.destination {
        Destination::Hep(_) => workers.len(),
        Destination::Stdout | Destination::File(_) => 1,
    };
    if lanes == 0 {
        return Err(SenderError::NoRuntime { name });
    }
    let endpoint = link::Endpoint::prepare(&spec)?;
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
            tls: endpoint.tls().cloned(),
        },
        SenderTask {
            stop,
            lanes: handles,
            shared,
        },
    ))
}
