//! Taps: listeners that relay every client connection to the upstream proxy, byte for byte, and
//! trace what happens on both legs.
//!
//! Per connection the work is: accept (a permit from the listener's connection limit is taken
//! first: backpressure at the door), connect upstream, then [`relay::pump`] both ways. Tracing
//! happens beside the bytes, never in their way: events are built and `offer`ed to the
//! destinations' queues, which never block.

pub mod leg;
pub mod relay;
pub mod sip;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn_id::ConnIds;
use crate::stats::{Counter, Stats};
use crate::tracer::{NetProto, Tracer};

/// One `[[listener]]`, resolved.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    /// A label for logs and statistics (`listener[0]` when the config gives none).
    pub name: String,
    /// The protocol clients speak to us.
    pub proto: NetProto,
    /// Where we listen.
    pub listen: SocketAddr,
    /// The proxy, `host:port` (resolved at every connect).
    pub upstream: String,
    /// At most this many relayed connections at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Upper bound for the upstream connect.
    pub connect_timeout: Duration,
    /// Close a connection after this long without a byte either way.
    pub idle_timeout: Option<Duration>,
    /// SIP tracing (`sip_trace_id`); `None` when the listener names no trace id.
    pub sip: Option<Arc<sip::SipSettings>>,
}

/// What every connection task shares.
#[derive(Debug)]
pub struct TapContext {
    /// Decides what is traced and where.
    pub tracer: Arc<Tracer>,
    /// Connection ids.
    pub ids: ConnIds,
    /// The statistics registry.
    pub stats: Stats,
}

/// Per-listener counters (`listener_<name>:…`).
#[derive(Clone, Debug)]
pub struct ListenerStats {
    /// Connections accepted.
    pub accepted: Counter,
    /// Connections relayed right now (gauge).
    pub active: Counter,
    /// Upstream connects that failed.
    pub upstream_connect_failed: Counter,
    /// Bytes relayed client -> upstream.
    pub bytes_in: Counter,
    /// Bytes relayed upstream -> client.
    pub bytes_out: Counter,
    /// `accept()` errors (EMFILE...).
    pub accept_errors: Counter,
    /// SIP framing and tracing.
    pub sip: sip::SipStats,
}

impl ListenerStats {
    fn new(stats: &Stats, name: &str) -> Self {
        let g = format!("listener_{name}");
        Self {
            accepted: stats.counter(&g, "accepted"),
            active: stats.gauge(&g, "active"),
            upstream_connect_failed: stats.counter(&g, "upstream_connect_failed"),
            bytes_in: stats.counter(&g, "bytes_in"),
            bytes_out: stats.counter(&g, "bytes_out"),
            accept_errors: stats.counter(&g, "accept_errors"),
            sip: sip::SipStats::new(stats, &g),
        }
    }
}

/// A bound listener, ready to serve.
#[derive(Debug)]
pub struct BoundListener {
    /// Its spec.
    pub spec: Arc<ListenerSpec>,
    /// The socket.
    listener: TcpListener,
}

impl BoundListener {
    /// Binds the listening socket (before privileges are dropped, before READY is reported).
    pub async fn bind(spec: ListenerSpec) -> std::io::Result<Self> {
        let listener = TcpListener::bind(spec.listen).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", spec.listen))
        })?;
        Ok(Self {
            spec: Arc::new(spec),
            listener,
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until `stop` is cancelled; each connection runs in `tracker` so a drain can wait
    /// for them. Connections are told to stop through `kill`.
    pub async fn serve(
        self,
        ctx: Arc<TapContext>,
        tracker: TaskTracker,
        stop: CancellationToken,
        kill: CancellationToken,
    ) {
        let spec = self.spec;
        let stats = ListenerStats::new(&ctx.stats, &spec.name);
        let permits = Arc::new(Semaphore::new(spec.max_connections.max(1)));
        let bound = self.listener.local_addr().unwrap_or(spec.listen);
        tracing::info!(listener = %spec.name, proto = spec.proto.name(), listen = %bound, upstream = %spec.upstream, "Listening");
        loop {
            let permit = tokio::select! {
                _ = stop.cancelled() => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    stats.accepted.inc();
                    let local = stream.local_addr().unwrap_or(spec.listen);
                    let ctx = ctx.clone();
                    let spec = spec.clone();
                    let stats = stats.clone();
                    let kill = kill.clone();
                    tracker.spawn(async move {
                        stats.active.inc();
                        relay::tcp(stream, peer, local, &spec, &ctx, &stats, kill).await;
                        stats.active.sub(1);
                        drop(permit);
                    });
                }
                Err(e) => {
                    stats.accept_errors.inc();
                    // EMFILE/ENFILE/ENOBUFS: the condition lasts a while; back off instead of
                    // spinning on a listener that stays readable.
                    tracing::warn!(listener = %spec.name, error = %e, "Accept failed; backing off");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
        tracing::info!(listener = %spec.name, "Stopped accepting");
    }
}
