//! The listener: binds a listener's address once per relay worker (`SO_REUSEPORT`), runs each
//! worker's accept loop with the listener's connection limit, and starts a [`Session`] per
//! accepted connection on the worker that accepted it.
//!
//! A running [`Listener`] is changed and stopped on its own, which is what a reload does to a
//! `[[listener]]`: [`Listener::update`] swaps what new connections are accepted with (the spec,
//! its TLS material, the counters) while every live connection keeps the one it was accepted
//! with; [`Listener::stop_accepting`] closes its sockets while its connections go on.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, setsockopt, sockopt,
};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::error::ListenError;
use super::session::Session;
use super::spec::{Active, ListenerSpec, ListenerStats, Tap, TapContext};
use crate::stats::Stats;

/// A bound listener, ready to serve: one listening socket per relay worker, all on the same
/// address (`SO_REUSEPORT`), so each worker accepts and relays its own connections.
#[derive(Debug)]
pub struct BoundListener {
    /// The spec with its TLS configurations.
    tap: Tap,
    /// The sockets, one per worker, registered with no runtime yet: each worker registers its
    /// own.
    sockets: Vec<std::net::TcpListener>,
    /// The address actually bound (port 0 resolved).
    local: SocketAddr,
}

impl BoundListener {
    /// Loads the listener's TLS material and binds `sockets` (at least 1) listening sockets on
    /// its address (at start before privileges are dropped and READY is reported; at a reload
    /// for a listener the config added). Needs no runtime.
    pub fn bind(spec: ListenerSpec, sockets: usize) -> Result<Self, ListenError> {
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
            tap,
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
            tap,
            sockets: all,
            local,
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Its spec.
    pub fn spec(&self) -> &ListenerSpec {
        &self.tap.spec
    }

    /// Starts one accept loop per socket, each on its worker in `workers` (socket i on worker
    /// i modulo the workers: sockets handed over by a process with more workers are shared
    /// out), until `stop` (or the listener's own [`Listener::stop_accepting`]) stops them.
    /// Every connection runs in `tracker` so a drain can wait for them, and is told to stop
    /// through `kill`.
    pub fn serve(
        self,
        ctx: &Arc<TapContext>,
        tracker: &TaskTracker,
        stop: &CancellationToken,
        kill: &CancellationToken,
        workers: &[tokio::runtime::Handle],
    ) -> Listener {
        let spec = self.tap.spec.clone();
        // Kept for a hand-over to a new process until the listener stops accepting.
        let kept = self
            .sockets
            .iter()
            .map(|s| s.try_clone().map(OwnedFd::from))
            .collect::<std::io::Result<Vec<_>>>()
            .unwrap_or_else(|e| {
                tracing::warn!(listener = %spec.name, error = %e, "Cannot keep the sockets for a hand-over; SIGUSR2 will be refused");
                Vec::new()
            });
        let serving = Serving {
            stats: ListenerStats::new(&ctx.stats, &spec.name),
            tap: Arc::new(self.tap),
        };
        let listener = Listener {
            current: Arc::new(ArcSwap::from_pointee(serving)),
            limit: Arc::new(ConnectionLimit::new(spec.max_connections.max(1))),
            stop: stop.child_token(),
            connections: TaskTracker::new(),
            stopped: Arc::new(Stopped::keeping(kept)),
            local: self.local,
        };
        let running = Arc::new(AtomicUsize::new(self.sockets.len()));
        tracing::info!(listener = %spec.name, proto = spec.proto.name(), listen = %self.local, upstream = %spec.upstream, "Listening");
        for (index, socket) in self.sockets.into_iter().enumerate() {
            let Some(worker) = workers.get(index % workers.len().max(1)) else {
                break;
            };
            let accept = Accept {
                current: listener.current.clone(),
                ctx: ctx.clone(),
                limit: listener.limit.clone(),
                running: running.clone(),
                bound: self.local,
                tracker: tracker.clone(),
                connections: listener.connections.clone(),
                stopped: listener.stopped.clone(),
                stop: listener.stop.clone(),
                kill: kill.clone(),
            };
            worker.spawn(tracker.track_future(accept.run(socket, index)));
        }
        listener
    }
}

/// What a listener's new connections are accepted with, swapped whole by a reload; each
/// connection keeps the one it was accepted with for its life.
#[derive(Debug)]
struct Serving {
    /// The spec and its TLS material.
    tap: Arc<Tap>,
    /// The counters of the listener's name.
    stats: ListenerStats,
}

/// A listener that serves: its accept loops run on every worker until it is stopped, and its
/// connections are counted until the last one closes.
#[derive(Debug)]
pub struct Listener {
    /// What new connections get; [`Listener::update`] swaps it.
    current: Arc<ArcSwap<Serving>>,
    /// `max_connections`, shared by the accept loops of every worker.
    limit: Arc<ConnectionLimit>,
    /// Stops this listener's accept loops (a child of the agent's: shutdown stops it too).
    stop: CancellationToken,
    /// This listener's connections, to tell how many are left once it stops accepting; closed
    /// when its last accept loop ends.
    connections: TaskTracker,
    /// Set when its last accept loop has ended: its sockets are closed.
    stopped: Arc<Stopped>,
    /// The address actually bound.
    local: SocketAddr,
}

/// A latch set once a listener's last accept loop has ended, for a reload (on the control
/// thread, not a runtime) that must bind where the listener was. Until then it keeps
/// duplicates of the listening sockets for a hand-over; setting it closes them, so the sockets
/// are closed when it is set.
#[derive(Debug, Default)]
struct Stopped {
    done: std::sync::Mutex<bool>,
    changed: std::sync::Condvar,
    /// Duplicates of the listening sockets, for a hand-over to a new process.
    kept: std::sync::Mutex<Vec<OwnedFd>>,
}

impl Stopped {
    fn keeping(sockets: Vec<OwnedFd>) -> Self {
        Self {
            kept: std::sync::Mutex::new(sockets),
            ..Self::default()
        }
    }

    fn set(&self) {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).clear();
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    fn wait(&self, timeout: Duration) -> bool {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = self
            .changed
            .wait_timeout_while(done, timeout, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }
}

impl Listener {
    /// What new connections are accepted with: the spec and its TLS material.
    pub fn tap(&self) -> Arc<Tap> {
        self.current.load().tap.clone()
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connections accepted by this listener and not yet closed.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// Duplicates of its listening sockets, one per worker, for a hand-over to a new process.
    pub fn handover_sockets(&self) -> std::io::Result<Vec<OwnedFd>> {
        let kept = self.stopped.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.is_empty() {
            return Err(std::io::Error::other(format!(
                "listener {}: its sockets were not kept",
                self.tap().spec.name
            )));
        }
        kept.iter().map(OwnedFd::try_clone).collect()
    }

    /// New connections are accepted with `tap` from now on (its spec, its TLS material, the
    /// counters of its name, its `max_connections`); live ones keep what they were accepted
    /// with. The sockets stay: no connection attempt is refused meanwhile.
    pub fn update(&self, tap: Tap, stats: &Stats) {
        self.limit.set_max(tap.spec.max_connections.max(1));
        let stats = ListenerStats::new(stats, &tap.spec.name);
        self.current.store(Arc::new(Serving {
            tap: Arc::new(tap),
            stats,
        }));
    }

    /// Stops accepting and closes the listening sockets; the connections go on until they
    /// close (or heptap stops).
    pub fn stop_accepting(&self) {
        self.stop.cancel();
    }

    /// Blocks (never on a runtime's thread) until its sockets are closed after
    /// [`Listener::stop_accepting`], at most `timeout`; whether they are.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        self.stopped.wait(timeout)
    }

    /// Whether it has stopped accepting and its last connection has closed.
    pub fn is_drained(&self) -> bool {
        self.connections.is_closed() && self.connections.is_empty()
    }

    /// Resolves once it has stopped accepting and its last connection has closed.
    pub fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        let connections = self.connections.clone();
        async move { connections.wait().await }
    }
}

/// Binds (and closes) a socket on `addr` without `SO_REUSEPORT`: fails with `AddrInUse` if
/// anything listens there.
fn plain_bind(addr: SocketAddr) -> std::io::Result<()> {
    let fd = tcp_socket(addr)?;
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(())
}

/// A non-blocking TCP socket of `addr`'s family with `SO_REUSEADDR` (restarts bind over
/// TIME_WAIT).
fn tcp_socket(addr: SocketAddr) -> std::io::Result<std::os::fd::OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = nix::sys::socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    Ok(fd)
}

/// A listening socket bound with `SO_REUSEADDR` and `SO_REUSEPORT`, non-blocking, backlog 1024
/// (what `TcpListener::bind` uses), not registered with any runtime: made without one, so a
/// reload on the control thread can bind too.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let fd = tcp_socket(addr)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    nix::sys::socket::listen(&fd, Backlog::new(1024)?)?;
    Ok(std::net::TcpListener::from(fd))
}

/// `max_connections` of one listener over all its workers, changeable while connections run:
/// a lower limit than the connections open takes slots out as those connections end.
#[derive(Debug)]
struct ConnectionLimit {
    /// Free slots.
    slots: Semaphore,
    /// The limit in force.
    max: AtomicUsize,
    /// Slots still to take out of circulation as connections end.
    owed: AtomicUsize,
}

impl ConnectionLimit {
    fn new(max: usize) -> Self {
        Self {
            slots: Semaphore::new(max),
            max: AtomicUsize::new(max),
            owed: AtomicUsize::new(0),
        }
    }

    /// Waits for a free slot; `None` if the limit is gone (never: it is never closed).
    async fn acquire(self: &Arc<Self>) -> Option<Slot> {
        self.slots.acquire().await.ok()?.forget();
        Some(Slot(self.clone()))
    }

    /// Changes the limit; connections over a lower one are not cut, new ones wait for them.
    fn set_max(&self, max: usize) {
        let old = self.max.swap(max, Ordering::AcqRel);
        if max > old {
            let more = max - old;
            // What is owed is cancelled first; the rest are new slots.
            let owed = self
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                    Some(o.saturating_sub(more))
                })
                .unwrap_or(0);
            self.slots.add_permits(more - owed.min(more));
        } else if max < old {
            let fewer = old - max;
            let taken = self.slots.forget_permits(fewer);
            self.owed.fetch_add(fewer - taken, Ordering::AcqRel);
        }
    }

    /// A connection ended: its slot is free again, unless a lower limit still owes one.
    fn release(&self) {
        let paid = self
            .owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| o.checked_sub(1))
            .is_ok();
        if !paid {
            self.slots.add_permits(1);
        }
    }
}

/// One connection's slot in its listener's limit, given back when the connection ends.
#[derive(Debug)]
struct Slot(Arc<ConnectionLimit>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// One worker's accept loop over its socket of a listener.
struct Accept {
    /// What new connections get.
    current: Arc<ArcSwap<Serving>>,
    ctx: Arc<TapContext>,
    /// The listener's connection limit, shared by its workers.
    limit: Arc<ConnectionLimit>,
    /// The listener's accept loops still running; the last to stop says so.
    running: Arc<AtomicUsize>,
    bound: SocketAddr,
    /// Every connection of the agent (shutdown waits for them).
    tracker: TaskTracker,
    /// This listener's connections.
    connections: TaskTracker,
    /// Set by the last loop to end.
    stopped: Arc<Stopped>,
    stop: CancellationToken,
    kill: CancellationToken,
}

impl Accept {
    /// Accepts on `socket` until told to stop; the listener's last loop to stop logs it and
    /// closes the listener's connection count (no connection can be added after it).
    async fn run(self, socket: std::net::TcpListener, index: usize) {
        let running = self.running.clone();
        let connections = self.connections.clone();
        let current = self.current.clone();
        let stopped = self.stopped.clone();
        self.accept_all(socket, index).await;
        if running.fetch_sub(1, Ordering::AcqRel) == 1 {
            connections.close();
            stopped.set();
            let name = current.load().tap.spec.name.clone();
            tracing::info!(listener = %name, connections = connections.len(), "Stopped accepting");
        }
    }

    async fn accept_all(self, socket: std::net::TcpListener, index: usize) {
        let Accept {
            current,
            ctx,
            limit,
            running: _,
            bound,
            tracker,
            connections,
            stopped: _,
            stop,
            kill,
        } = self;
        let listener = match TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                let serving = current.load();
                serving.stats.accept_errors.inc();
                tracing::error!(listener = %serving.tap.spec.name, worker = index, error = %e, "Cannot accept on this worker");
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
                    let slot = tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        s = limit.acquire() => match s {
                            Some(s) => s,
                            None => break,
                        },
                    };
                    // What the listener is now: the connection keeps it for life.
                    let serving = current.load_full();
                    serving.stats.accepted.inc();
                    // A listener bound to one address accepts on that address: no
                    // getsockname per connection (a wildcard one needs to ask).
                    let local = if bound.ip().is_unspecified() {
                        stream.local_addr().unwrap_or(bound)
                    } else {
                        bound
                    };
                    let ctx = ctx.clone();
                    let kill = kill.clone();
                    // On this worker's runtime: the connection never leaves its thread.
                    tracker.spawn(connections.track_future(async move {
                        let active = Active::new(&serving.stats.active);
                        let session = Session {
                            tap: &serving.tap,
                            ctx: &ctx,
                            stats: &serving.stats,
                            kill,
                            peer,
                            local,
                        };
                        session.run(stream).await;
                        drop(active);
                        drop(slot);
                    }));
                }
                Err(e) => {
                    let serving = current.load();
                    serving.stats.accept_errors.inc();
                    // EMFILE/ENFILE/ENOBUFS: the condition lasts a while; back off instead of
                    // spinning on a listener that stays readable.
                    tracing::warn!(listener = %serving.tap.spec.name, error = %e, "Accept failed; backing off");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn free(limit: &ConnectionLimit) -> usize {
        limit.slots.available_permits()
    }

    #[tokio::test]
    async fn a_lower_limit_waits_for_connections_to_end_a_higher_one_frees_slots_at_once() {
        let limit = Arc::new(ConnectionLimit::new(3));
        let a = limit.acquire().await.unwrap();
        let b = limit.acquire().await.unwrap();
        assert_eq!(free(&limit), 1);
        // Down to 1 with 2 open: the free slot goes, and one more as a connection ends.
        limit.set_max(1);
        assert_eq!(free(&limit), 0);
        drop(a);
        assert_eq!(free(&limit), 0, "the first to end pays what is owed");
        drop(b);
        assert_eq!(free(&limit), 1);
        // Up again: what is owed is cancelled before new slots are made.
        let c = limit.acquire().await.unwrap();
        limit.set_max(0);
        assert_eq!(limit.owed.load(Ordering::Acquire), 1);
        limit.set_max(4);
        assert_eq!((free(&limit), limit.owed.load(Ordering::Acquire)), (3, 0));
        drop(c);
        assert_eq!(free(&limit), 4);
    }
}
