//! Misbehaving peers for the fault tests: a HEP collector over TCP whose behaviour the test
//! switches at run time (healthy, slow, stalled, resetting, or gone), a collector address that
//! black-holes connection attempts, and the process-level gauges the tests compare before and
//! after (open file descriptors, resident memory).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use heptap_hep::{Hep3Framer, Packet, decode};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// What a [`FaultyCollector`] does with its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Reads as fast as it can and decodes every frame.
    Healthy,
    /// Reads at most this many bytes per second (and decodes them).
    Slow(usize),
    /// Accepts and never reads: the sender's socket buffer fills, then its writes stall.
    Stalled,
    /// Resets every connection as soon as it is accepted (and the open ones at once).
    Resetting,
}

/// A HEP collector on TCP whose behaviour can be switched while heptap sends to it, and which can
/// be stopped and started again on the same address.
#[derive(Debug)]
pub struct FaultyCollector {
    /// Where heptap sends.
    pub addr: SocketAddr,
    /// The current mode; connection tasks watch it.
    mode: watch::Sender<Mode>,
    /// Decoded packets, in arrival order.
    rx: mpsc::UnboundedReceiver<Packet>,
    /// The accept loop and the connection tasks; dropping them closes every socket.
    tasks: JoinSet<()>,
}

/// A listener on `addr` with SO_REUSEADDR, so a collector can come back on the port it left, and
/// a fixed receive buffer (inherited by accepted sockets), so a collector that reads slowly or
/// not at all pushes back on the sender after a few hundred kilobytes. Not smaller: below
/// loopback's 64 KiB MSS, Linux holds back window updates (silly window avoidance) and the
/// sender waits on its zero-window probe timer, for a minute or more, after the reader
/// resumes.
fn listen_on(addr: SocketAddr, backlog: u32) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.set_recv_buffer_size(256 * 1024).expect("SO_RCVBUF");
    socket
        .bind(addr)
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    socket.listen(backlog).expect("listen")
}

impl FaultyCollector {
    /// A healthy collector on 127.0.0.1:0.
    pub async fn bind() -> Self {
        Self::bind_at("127.0.0.1:0".parse().expect("address"), Mode::Healthy)
    }

    /// A collector on `addr` (a port it had before, or one heptap has been failing to reach).
    pub fn bind_at(addr: SocketAddr, mode: Mode) -> Self {
        let listener = listen_on(addr, 128);
        let addr = listener.local_addr().expect("addr");
        let (mode, mode_rx) = watch::channel(mode);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        // The accept loop owns the connection tasks: aborting it drops them, closing every socket.
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((s, _)) => {
                            conns.spawn(serve(s, mode_rx.clone(), tx.clone()));
                        }
                        Err(_) => return,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Self {
            addr,
            mode,
            rx,
            tasks,
        }
    }

    /// Switches what every connection, open or future, does.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Closes the listener and every connection (heptap sees resets or EOF, then refused
    /// connects); returns the address to come back on.
    pub async fn stop(mut self) -> SocketAddr {
        self.tasks.shutdown().await;
        self.addr
    }

    /// The next packet, or None after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Packet> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Reads packets until one satisfies `want` (Ok) or `timeout` passes (Err); either way,
    /// how many packets went by before.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&Packet) -> bool,
    ) -> Result<usize, usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut before = 0;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(p) if want(&p) => return Ok(before),
                Some(_) => before += 1,
                None => return Err(before),
            }
        }
    }

    /// Packets received so far and still unread, discarded; returns how many.
    pub fn discard(&mut self) -> usize {
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }
}

/// One collector connection under the watched mode.
async fn serve(
    mut s: TcpStream,
    mut mode: watch::Receiver<Mode>,
    tx: mpsc::UnboundedSender<Packet>,
) {
    let mut framer = Hep3Framer::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let current = *mode.borrow_and_update();
        let limit = match current {
            Mode::Resetting => {
                let _ = s.set_zero_linger();
                return;
            }
            Mode::Stalled => {
                // Hold the connection without reading until the mode changes.
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Mode::Healthy => buf.len(),
            Mode::Slow(per_second) => per_second.clamp(1, buf.len()),
        };
        let n = tokio::select! {
            r = s.read(&mut buf[..limit]) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        framer.push(&buf[..n]);
        while let Ok(Some(frame)) = framer.next_frame() {
            if let Ok(p) = decode(&frame) {
                let _ = tx.send(p);
            }
        }
        if let Mode::Slow(_) = current {
            // The peer's pace, not a synchronisation: one read per second.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = mode.changed() => {}
            }
        }
    }
}

/// An address where TCP connection attempts get no answer at all: a listener whose accept
/// queue is full (backlog 0, one connection queued and never accepted), so the kernel drops
/// every further SYN, as a firewall black-holing the collector would.
#[derive(Debug)]
pub struct BlackHole {
    /// The black-holed address.
    pub addr: SocketAddr,
    /// The listener that never accepts.
    _listener: TcpListener,
    /// The connection that fills its accept queue.
    _filler: TcpStream,
}

impl BlackHole {
    /// Binds 127.0.0.1:0 (or `addr`) and fills the accept queue; checks that a further connect
    /// gets no answer.
    pub async fn bind_at(addr: SocketAddr) -> Self {
        let listener = listen_on(addr, 0);
        let addr = listener.local_addr().expect("addr");
        let filler = TcpStream::connect(addr)
            .await
            .expect("fill the accept queue");
        let probe =
            tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await;
        assert!(
            probe.is_err(),
            "a connect to the black hole should get no answer, got {probe:?}"
        );
        Self {
            addr,
            _listener: listener,
            _filler: filler,
        }
    }
}

/// Open file descriptors of this process (/proc/self/fd).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// A field of /proc/self/status in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Latency and throughput of a relay run, for the record.
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    /// Median round trip of one message.
    pub rtt_p50: Duration,
    /// 99th percentile round trip.
    pub rtt_p99: Duration,
    /// Echoed bulk throughput, MB/s (10^6 bytes) each way.
    pub mb_per_s: f64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rtt p50 {:.0} us, p99 {:.0} us, bulk {:.1} MB/s",
            self.rtt_p50.as_secs_f64() * 1e6,
            self.rtt_p99.as_secs_f64() * 1e6,
            self.mb_per_s
        )
    }
}

/// The `p`th percentile (0-100) of `samples` (sorted in place).
pub fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    let i = (samples.len().saturating_sub(1) * p) / 100;
    samples.get(i).copied().unwrap_or_default()
}

/// What a [`ScriptedUpstream`] does with each connection it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamScript {
    /// Resets the connection as soon as it is accepted.
    ResetAtOnce,
    /// Reads this many bytes, then resets.
    ResetAfter(usize),
    /// Writes `bye\r\n`, half-closes (FIN), then reads to EOF and reports what it read.
    HalfClose,
    /// Reads everything and reports it at EOF; never writes.
    Sink,
    /// Neither reads nor writes; holds the connection until [`ScriptedUpstream::release`].
    Stall,
}

/// An upstream "proxy" that misbehaves as scripted, on 127.0.0.1:0.
#[derive(Debug)]
pub struct ScriptedUpstream {
    /// Where heptap relays to.
    pub addr: SocketAddr,
    /// What each connection read before it ended (HalfClose and Sink).
    pub received: mpsc::UnboundedReceiver<Vec<u8>>,
    /// Bumped to make the connections held so far let go.
    release: watch::Sender<u64>,
    /// Connections being served right now.
    live: Arc<AtomicUsize>,
    /// The accept loop; owns the connection tasks.
    tasks: JoinSet<()>,
}

impl ScriptedUpstream {
    /// Binds 127.0.0.1:0 and follows `script` on every connection.
    pub async fn bind(script: UpstreamScript) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, received) = mpsc::unbounded_channel();
        let (release, release_rx) = watch::channel(0);
        let live = Arc::new(AtomicUsize::new(0));
        let counted = live.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((s, _)) => {
                            let live = Live::new(&counted);
                            let (tx, release) = (tx.clone(), release_rx.clone());
                            conns.spawn(async move {
                                follow(s, script, tx, release).await;
                                drop(live);
                            });
                        }
                        Err(_) => return,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Self {
            addr,
            received,
            release,
            live,
            tasks,
        }
    }

    /// Makes the connections held so far (Stall) close; later ones are held again.
    pub fn release(&self) {
        self.release.send_modify(|generation| *generation += 1);
    }

    /// Connections being served right now (their sockets open).
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Stops listening and closes every connection.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn follow(
    mut s: TcpStream,
    script: UpstreamScript,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    mut release: watch::Receiver<u64>,
) {
    let held_since = *release.borrow_and_update();
    use tokio::io::AsyncWriteExt;
    match script {
        UpstreamScript::ResetAtOnce => {
            let _ = s.set_zero_linger();
        }
        UpstreamScript::ResetAfter(n) => {
            let mut buf = vec![0u8; n];
            let _ = s.read_exact(&mut buf).await;
            let _ = s.set_zero_linger();
        }
        UpstreamScript::HalfClose | UpstreamScript::Sink => {
            if script == UpstreamScript::HalfClose {
                let _ = s.write_all(b"bye\r\n").await;
                let _ = s.shutdown().await;
            }
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            let _ = tx.send(got);
        }
        UpstreamScript::Stall => {
            let _ = release
                .wait_for(|generation| *generation != held_since)
                .await;
        }
    }
}

/// Counts a connection as live while it exists.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Live(count.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
