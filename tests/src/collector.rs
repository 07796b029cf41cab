//! In-process peers for end-to-end tests: a HEP collector that decodes what heptap sends, an
//! upstream "proxy" that echoes, and helpers to run heptap's `start()` on a config written for
//! the test. Everything binds 127.0.0.1 port 0.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heptap_hep::{Hep3Framer, Packet, decode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(10);

/// A HEP collector on UDP: every datagram decoded, in arrival order.
#[derive(Debug)]
pub struct UdpCollector {
    /// Where heptap should send.
    pub addr: SocketAddr,
    /// Decoded packets (or decode errors, as text).
    rx: mpsc::UnboundedReceiver<Result<Packet, String>>,
    /// The receive task.
    task: tokio::task::JoinHandle<()>,
}

impl UdpCollector {
    /// Binds 127.0.0.1:0 and starts receiving.
    pub async fn bind() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let addr = sock.local_addr().expect("collector addr");
        // heptap sends from its own worker threads, while this task runs only when the test's
        // runtime gets to it: a burst (50 connections' events) must not outgrow the default
        // receive buffer meanwhile, or datagrams are lost. The kernel caps it at rmem_max.
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &(4 << 20))
            .expect("collector receive buffer");
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, _)) = sock.recv_from(&mut buf).await {
                if tx
                    .send(decode(&buf[..n]).map_err(|e| e.to_string()))
                    .is_err()
                {
                    return;
                }
            }
        });
        Self { addr, rx, task }
    }

    /// The next packet, or None after `timeout`. Panics on a packet heptap-hep cannot decode.
    pub async fn next(&mut self, timeout: Duration) -> Option<Packet> {
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Some(Ok(p))) => Some(p),
            Ok(Some(Err(e))) => panic!("the collector got an undecodable packet: {e}"),
            _ => None,
        }
    }

    /// Packets until `done(&packets)` holds; panics with what arrived when `timeout` passes.
    pub async fn until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[Packet]) -> bool,
    ) -> Vec<Packet> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(p) => got.push(p),
                None => panic!(
                    "timed out after {timeout:?}; got {} packets: {:#?}",
                    got.len(),
                    got.iter().map(summary).collect::<Vec<_>>()
                ),
            }
        }
        got
    }

    /// Whatever is already queued or arrives within `quiet` of the last packet.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(p) = self.next(quiet).await {
            got.push(p);
        }
        got
    }
}

impl Drop for UdpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A packet's net-event payload as a JSON object (JSON payload mode).
pub fn payload_json(p: &Packet) -> Value {
    let text = p
        .payload
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// The `Event` part of a net packet in JSON mode.
pub fn event_of(p: &Packet) -> String {
    payload_json(p)
        .get("Event")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// The correlation id (chunk 0x11) as text.
pub fn correlation(p: &Packet) -> String {
    p.correlation_id
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// One line describing a packet, for assertion messages.
pub fn summary(p: &Packet) -> String {
    format!(
        "type={:?} {:?}->{:?} corr={} payload={}",
        p.proto_type,
        p.src(),
        p.dst(),
        correlation(p),
        p.payload
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    )
}

/// A HEP collector on TCP: frames decoded, in arrival order, from any number of connections.
#[derive(Debug)]
pub struct TcpCollector {
    /// Where heptap should connect.
    pub addr: SocketAddr,
    /// Decoded packets.
    rx: mpsc::UnboundedReceiver<Packet>,
    /// The accept task.
    task: tokio::task::JoinHandle<()>,
}

impl TcpCollector {
    /// Binds 127.0.0.1:0 and starts accepting.
    pub async fn bind() -> Self {
        Self::bind_at(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` (a collector coming back where heptap was told it is) and starts accepting.
    pub async fn bind_at(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut framer = Hep3Framer::new();
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        framer.push(&buf[..n]);
                        while let Ok(Some(frame)) = framer.next_frame() {
                            if let Ok(p) = decode(&frame) {
                                let _ = tx.send(p);
                            }
                        }
                    }
                });
            }
        });
        Self { addr, rx, task }
    }

    /// The next packet, or None after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Packet> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for TcpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An upstream that echoes every byte back and passes half-closes on (EOF in -> shutdown out).
#[derive(Debug)]
pub struct EchoUpstream {
    /// Where heptap should relay to.
    pub addr: SocketAddr,
    /// The accept task.
    task: tokio::task::JoinHandle<()>,
}

impl EchoUpstream {
    /// Binds 127.0.0.1:0 and echoes on every connection.
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

/// A directory of the test's own under the system temp dir, removed on drop: for the MI FIFO
/// and anything else a running heptap writes.
#[derive(Debug)]
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    /// A fresh, empty directory (mode 0700).
    pub fn new() -> Self {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "heptap-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .expect("create the scratch dir");
        Self(dir)
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// An `[mi]` section that keeps the MI inside this directory, with HTTP off (or on a port
    /// of its own with `http`).
    pub fn mi_toml(&self, http: bool) -> String {
        format!(
            "[mi]\nfifo_name = \"{}/fifo\"\nreply_dir = \"{}\"\nhttp_listen = \"{}\"\n",
            self.0.display(),
            self.0.display(),
            if http { "127.0.0.1:0" } else { "" }
        )
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
