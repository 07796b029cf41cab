//! The listener: binds a listener's address once per relay worker (`SO_REUSEPORT`), runs each
//! worker's accept loop with the listener's connection limit, and starts a [`Session`] per
//! accepted connection on the worker that accepted it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::error::ListenError;
use super::session::Session;
use super::spec::{Active, ListenerSpec, ListenerStats, Tap, TapContext};

/// A bound listener, ready to serve: one listening socket per relay worker, all on the same
/// address (`SO_REUSEPORT`), so each worker accepts and relays its own connections.
#[derive(Debug)]
pub struct BoundListener {
    /// Its spec.
    pub spec: Arc<ListenerSpec>,
    /// The spec with its TLS configurations.
    tap: Arc<Tap>,
    /// The sockets, one per worker; taken out of the binding runtime so each worker registers
    /// its own.
    sockets: Vec<std::net::TcpListener>,
    /// The address actually bound (port 0 resolved).
    local: SocketAddr,
}

impl BoundListener {
    /// Loads the listener's TLS material and binds `sockets` (at least 1) listening sockets on
    /// its address (before privileges are dropped, before READY is reported). Runs inside a
    /// runtime: tokio registers a socket when it starts listening (it is taken out again for the
    /// workers).
    pub async fn bind(spec: ListenerSpec, sockets: usize) -> Result<Self, ListenError> {
        let tap = Tap::new(spec)?;
        let listen = tap.spec.listen;
        let cannot = |source| ListenError::Bind {
            addr: listen,
            source,
        };
        // SO_REUSEPORT would let this share a port that another process of the same user (a
        // second heptap) already listens on, and silently take half its connections: a taken
        // port is refused as a plain bind would refuse it.
        if listen.port() != 0 {
            plain_bind(listen).map_err(cannot)?;
        }
        // The first socket resolves port 0; the others join it on the port it got.
        let first = reuseport_listener(listen).map_err(cannot)?;
        let local = first.local_addr().map_err(cannot)?;
        let mut all = vec![first];
        for _ in 1..sockets.max(1) {
            all.push(reuseport_listener(local).map_err(cannot)?);
        }
        Ok(Self {
            spec: tap.spec.clone(),
            tap: Arc::new(tap),
            sockets: all,
            local,
        })
    }

    /// Takes over the listening `sockets` another heptap process bound for this listener (a
    /// hand-over) instead of binding: every one of them is accepted on (a socket of the
    /// `SO_REUSEPORT` group nobody accepts on would keep getting new connections), and when
    /// there are fewer than `workers` more are bound on the same address. Needs no runtime.
    pub fn adopt(
        spec: ListenerSpec,
        sockets: Vec<std::net::TcpListener>,
        workers: usize,
    ) -> Result<Self, ListenError> {
        let tap = Tap::new(spec)?;
        let listen = tap.spec.listen;
        let cannot = |source| ListenError::Bind {
            addr: listen,
            source,
        };
        let Some(first) = sockets.first() else {
            return Err(cannot(std::io::Error::other("no socket was handed over")));
        };
        let local = first.local_addr().map_err(cannot)?;
        for s in &sockets {
            s.set_nonblocking(true).map_err(cannot)?;
        }
        let mut all = sockets;
        while all.len() < workers {
            match reuseport_listener(local) {
                Ok(s) => all.push(s),
                Err(e) => {
                    // Only the same user can join a SO_REUSEPORT group (and only a privileged
                    // one below port 1024): the sockets handed over are spread over the workers.
                    tracing::warn!(listener = %tap.spec.name, listen = %local, error = %e, sockets = all.len(), workers, "Cannot add a socket for every worker; the workers share the sockets handed over");
                    break;
                }
            }
        }
        Ok(Self {
            spec: tap.spec.clone(),
            tap: Arc::new(tap),
            sockets: all,
            local,
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Duplicates of the listening sockets, kept for a hand-over to a new process.
    pub fn handover_sockets(&self) -> std::io::Result<Vec<std::os::fd::OwnedFd>> {
        self.sockets
            .iter()
            .map(|s| s.try_clone().map(std::os::fd::OwnedFd::from))
            .collect()
    }

    /// Starts one accept loop per socket, each on its worker in `workers` (socket i on worker
    /// i modulo the workers: sockets handed over by a process with more workers are shared out),
    /// until `stop` is cancelled. Every connection runs in `tracker` so a drain can wait for
    /// them, and is told to stop through `kill`.
    pub fn serve(
        self,
        ctx: &Arc<TapContext>,
        tracker: &TaskTracker,
        stop: &CancellationToken,
        kill: &CancellationToken,
        workers: &[tokio::runtime::Handle],
    ) {
        let spec = self.spec;
        let stats = ListenerStats::new(&ctx.stats, &spec.name);
        let permits = Arc::new(Semaphore::new(spec.max_connections.max(1)));
        let running = Arc::new(AtomicUsize::new(self.sockets.len()));
        tracing::info!(listener = %spec.name, proto = spec.proto.name(), listen = %self.local, upstream = %spec.upstream, "Listening");
        for (index, socket) in self.sockets.into_iter().enumerate() {
            let Some(worker) = workers.get(index % workers.len().max(1)) else {
                break;
            };
            let accept = Accept {
                spec: spec.clone(),
                tap: self.tap.clone(),
                ctx: ctx.clone(),
                stats: stats.clone(),
                permits: permits.clone(),
                running: running.clone(),
                bound: self.local,
                tracker: tracker.clone(),
                stop: stop.clone(),
                kill: kill.clone(),
            };
            worker.spawn(tracker.track_future(accept.run(socket, index)));
        }
    }
}

/// Binds (and closes) a socket on `addr` without `SO_REUSEPORT`: fails with `AddrInUse` if
/// anything listens there.
fn plain_bind(addr: SocketAddr) -> std::io::Result<()> {
    tcp_socket(addr)?.bind(addr)
}

/// A TCP socket of `addr`'s family with `SO_REUSEADDR` (restarts bind over TIME_WAIT).
fn tcp_socket(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

/// A listening socket bound with `SO_REUSEADDR` and `SO_REUSEPORT`, non-blocking, backlog 1024
/// (what `TcpListener::bind` uses), not yet registered with any runtime.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = tcp_socket(addr)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// One worker's accept loop over its socket of a listener.
struct Accept {
    spec: Arc<ListenerSpec>,
    tap: Arc<Tap>,
    ctx: Arc<TapContext>,
    stats: ListenerStats,
    /// The listener's connection limit, shared by its workers.
    permits: Arc<Semaphore>,
    /// The listener's accept loops still running; the last to stop says so.
    running: Arc<AtomicUsize>,
    bound: SocketAddr,
    tracker: TaskTracker,
    stop: CancellationToken,
    kill: CancellationToken,
}

impl Accept {
    /// Accepts on `socket` until told to stop; the listener's last loop to stop logs it.
    async fn run(self, socket: std::net::TcpListener, index: usize) {
        let running = self.running.clone();
        let name = self.spec.name.clone();
        self.accept_all(socket, index).await;
        if running.fetch_sub(1, Ordering::AcqRel) == 1 {
            tracing::info!(listener = %name, "Stopped accepting");
        }
    }

    async fn accept_all(self, socket: std::net::TcpListener, index: usize) {
        let Accept {
            spec,
            tap,
            ctx,
            stats,
            permits,
            running: _,
            bound,
            tracker,
            stop,
            kill,
        } = self;
        let listener = match TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                stats.accept_errors.inc();
                tracing::error!(listener = %spec.name, worker = index, error = %e, "Cannot accept on this worker");
                return;
            }
        };
        loop {
            // Biased: once told to stop, a connection that is ready too is not taken.
            let accepted = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    // The slot is taken after the accept: a worker waiting for a connection on
                    // its own socket must not hold a slot that another worker's connection
                    // needs. At the limit this connection waits here untouched, as the next
                    // ones wait in the kernel's backlog.
                    let permit = tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        p = permits.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                    };
                    stats.accepted.inc();
                    // A listener bound to one address accepts on that address: no
                    // getsockname per connection (a wildcard one needs to ask).
                    let local = if bound.ip().is_unspecified() {
                        stream.local_addr().unwrap_or(bound)
                    } else {
                        bound
                    };
                    let ctx = ctx.clone();
                    let tap = tap.clone();
                    let stats = stats.clone();
                    let kill = kill.clone();
                    // On this worker's runtime: the connection never leaves its thread.
                    tracker.spawn(async move {
                        let active = Active::new(&stats.active);
                        let session = Session {
                            tap: &tap,
                            ctx: &ctx,
                            stats: &stats,
                            kill,
                            peer,
                            local,
                        };
                        session.run(stream).await;
                        drop(active);
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
    }
}
