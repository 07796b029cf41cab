//! HEP destinations against real collectors on 127.0.0.1: delivery over UDP, TCP and TLS, a
//! collector restarted on the same port, a collector that never reads, oversize datagrams,
//! fan-out, local JSON-line outputs and shutdown. No sleeps: every wait is for a condition,
//! bounded in time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heptap::Stats;
use heptap::Workers;
use heptap::sender::{
    self, DestinationSpec, DropReason, FanOut, FileOwner, Limits, Offer, Sender, SenderError,
    SenderTask,
};
use heptap_config::{Destination, HepId, HepTls, Transport};
use heptap_hep::{Encoder, Hep3Framer, Packet, TraceMessage, Version};
use heptap_testkit::eventually;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

// ---------------------------------------------------------------------------------------------
// Messages

/// A SIP message traced with sequence number `seq` in its Call-ID (chunk 0x11), so order and
/// completeness can be read off what the collector receives.
fn message(seq: u32) -> Arc<TraceMessage> {
    message_with_payload(
        seq,
        format!(
            "OPTIONS sip:probe@10.0.0.2 SIP/2.0\r\nCall-ID: call-{seq}\r\nCSeq: {seq} OPTIONS\r\n\r\n"
        ),
    )
}

fn message_with_payload(seq: u32, payload: String) -> Arc<TraceMessage> {
    let src: SocketAddr = "10.0.0.1:5060".parse().unwrap();
    let dst: SocketAddr = "10.0.0.2:5060".parse().unwrap();
    Arc::new(
        TraceMessage::new(1, 6, src, dst, 1_700_000_000, seq)
            .correlation(format!("call-{seq}"))
            .payload(payload.into_bytes()),
    )
}

/// The sequence number a packet carries in its correlation id.
fn seq(packet: &Packet) -> u32 {
    let id = packet.correlation_id.as_deref().unwrap();
    std::str::from_utf8(id)
        .unwrap()
        .strip_prefix("call-")
        .unwrap()
        .parse()
        .unwrap()
}

fn seqs(packets: &[Packet]) -> Vec<u32> {
    packets.iter().map(seq).collect()
}

// ---------------------------------------------------------------------------------------------
// Destinations

fn limits() -> Limits {
    Limits {
        connect_timeout: Duration::from_secs(2),
        write_timeout: Duration::from_secs(2),
        ..Limits::default()
    }
}

fn hep_spec(name: &str, addr: SocketAddr, transport: Transport) -> DestinationSpec {
    let id: HepId = format!("[{name}] {addr}; transport={transport}")
        .parse()
        .unwrap();
    DestinationSpec {
        name: name.to_owned(),
        destination: Destination::Hep(id),
        encoder: Encoder::default(),
        limits: limits(),
        file_owner: FileOwner::default(),
    }
}

fn tls_spec(name: &str, host: &str, port: u16, tls: HepTls) -> DestinationSpec {
    let mut id: HepId = format!("[{name}] {host}:{port}; transport=tls")
        .parse()
        .unwrap();
    id.tls = tls;
    DestinationSpec {
        name: name.to_owned(),
        destination: Destination::Hep(id),
        encoder: Encoder::default(),
        limits: limits(),
        file_owner: FileOwner::default(),
    }
}

// ---------------------------------------------------------------------------------------------
// Collectors

/// A UDP collector: every datagram, as received.
struct UdpCollector {
    addr: SocketAddr,
    datagrams: mpsc::UnboundedReceiver<Vec<u8>>,
    task: JoinHandle<()>,
}

impl UdpCollector {
    async fn start(bind: &str) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(bind).await?;
        let addr = socket.local_addr()?;
        let (tx, datagrams) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 70_000];
            while let Ok(n) = socket.recv(&mut buf).await {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Ok(UdpCollector {
            addr,
            datagrams,
            task,
        })
    }

    async fn recv(&mut self, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < n {
            let d = timeout(Duration::from_secs(5), self.datagrams.recv())
                .await
                .unwrap_or_else(|_| panic!("received {} of {n} datagrams", out.len()))
                .unwrap();
            out.push(d);
        }
        out
    }
}

impl UdpCollector {
    /// Closes the socket and returns once it is closed.
    async fn stop(self) -> SocketAddr {
        let addr = self.addr;
        self.task.abort();
        let mut this = self;
        let _ = (&mut this.task).await;
        addr
    }
}

impl Drop for UdpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP (or TLS) collector that frames the stream as heplify-server does and decodes every
/// frame. It can be stopped and started again on the same port.
struct TcpCollector {
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tx: mpsc::UnboundedSender<Packet>,
    packets: mpsc::UnboundedReceiver<Packet>,
    /// Bytes left over at the end of each connection: a half frame if not zero.
    leftovers: Arc<Mutex<Vec<usize>>>,
    /// Handshake errors seen by the collector.
    handshake_errors: Arc<Mutex<Vec<String>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

fn listener_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

impl TcpCollector {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let (tx, packets) = mpsc::unbounded_channel();
        let mut c = TcpCollector {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls,
            tx,
            packets,
            leftovers: Arc::default(),
            handshake_errors: Arc::default(),
            tasks: Arc::default(),
        };
        c.listen();
        c
    }

    /// Listens on `self.addr` (port 0 the first time) and serves connections.
    fn listen(&mut self) {
        let listener = listener_on(self.addr).unwrap();
        self.addr = listener.local_addr().unwrap();
        let tx = self.tx.clone();
        let tls = self.tls.clone();
        let leftovers = Arc::clone(&self.leftovers);
        let errors = Arc::clone(&self.handshake_errors);
        let tasks = Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (tx, tls, leftovers, errors) =
                    (tx.clone(), tls.clone(), leftovers.clone(), errors.clone());
                let conn = tokio::spawn(async move {
                    match tls {
                        None => serve(stream, tx, leftovers).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => serve(stream, tx, leftovers).await,
                            Err(e) => errors.lock().unwrap().push(e.to_string()),
                        },
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes the listener and every connection, and returns once they are closed.
    async fn stop(&mut self) {
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap());
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Listens again on the same port.
    fn restart(&mut self) {
        self.listen();
    }

    async fn recv(&mut self, n: usize) -> Vec<Packet> {
        let mut out = Vec::new();
        while out.len() < n {
            let p = timeout(Duration::from_secs(5), self.packets.recv())
                .await
                .unwrap_or_else(|_| panic!("received {} of {n} packets", out.len()))
                .unwrap();
            out.push(p);
        }
        out
    }
}

impl Drop for TcpCollector {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().iter() {
            t.abort();
        }
    }
}

async fn serve(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    tx: mpsc::UnboundedSender<Packet>,
    leftovers: Arc<Mutex<Vec<usize>>>,
) {
    let left = read_frames(&mut stream, |p| {
        let _ = tx.send(p);
    })
    .await;
    leftovers.lock().unwrap().push(left);
}

/// Decodes every HEP3 frame of `stream` until it ends; returns the bytes left over (a half
/// frame if not zero).
async fn read_frames(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    mut each: impl FnMut(Packet),
) -> usize {
    let mut framer = Hep3Framer::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => framer.push(&buf[..n]),
        }
        while let Some(frame) = framer.next_frame().unwrap() {
            each(heptap_hep::decode(&frame).unwrap());
        }
    }
    framer.buffered()
}

// ---------------------------------------------------------------------------------------------
// UDP

#[tokio::test]
async fn udp_sends_one_datagram_per_packet_in_queue_order() {
    let mut collector = UdpCollector::start("127.0.0.1:0").await.unwrap();
    let stats = Stats::new();
    let (sender, task) =
        sender::spawn(hep_spec("homer", collector.addr, Transport::Udp), &stats).unwrap();

    for i in 0..3 {
        assert_eq!(sender.offer(&message(i)), Offer::Queued);
    }
    let datagrams = collector.recv(3).await;
    let packets: Vec<Packet> = datagrams
        .iter()
        .map(|d| heptap_hep::decode(d).unwrap())
        .collect();
    assert_eq!(seqs(&packets), [0, 1, 2]);
    // Each datagram is exactly one HEP3 packet: its length field covers the whole datagram.
    for d in &datagrams {
        assert_eq!(&d[..4], b"HEP3");
        assert_eq!(usize::from(u16::from_be_bytes([d[4], d[5]])), d.len());
    }
    assert_eq!(packets[0].payload.as_deref(), message(0).payload.as_deref(),);

    eventually(Duration::from_secs(2), "sent == 3", || {
        sender.state().counters.sent == 3
    })
    .await;
    let state = sender.state();
    assert_eq!(state.destination, collector.addr.to_string());
    assert_eq!(state.transport, "udp");
    assert!(state.connected);
    let total: u64 = datagrams.iter().map(|d| d.len() as u64).sum();
    assert_eq!(state.counters.sent_bytes, total);
    assert_eq!(stats.lookup("hep_homer", "sent").map(|c| c.get()), Some(3));
    task.shutdown(Duration::from_secs(1)).await;
}

/// A burst queued at once goes out in sendmmsg batches (64 datagrams per system call): every
/// packet still arrives as its own whole datagram, in queue order, and is counted once.
#[tokio::test]
async fn udp_burst_goes_out_in_batches_each_packet_its_own_whole_datagram_in_order() {
    let mut collector = UdpCollector::start("127.0.0.1:0").await.unwrap();
    let (sender, task) = sender::spawn(
        hep_spec("homer", collector.addr, Transport::Udp),
        &Stats::new(),
    )
    .unwrap();
    // Two and a half batches, of different sizes, queued before the sender task first runs
    // (this runtime has one thread); few enough for the collector's receive buffer.
    let total = 160u32;
    let messages: Vec<_> = (0..total)
        .map(|i| message_with_payload(i, "x".repeat(usize::try_from(i).unwrap() * 3)))
        .collect();
    for m in &messages {
        assert_eq!(sender.offer(m), Offer::Queued);
    }
    let datagrams = collector.recv(usize::try_from(total).unwrap()).await;
    for (i, d) in datagrams.iter().enumerate() {
        assert_eq!(usize::from(u16::from_be_bytes([d[4], d[5]])), d.len());
        let packet = heptap_hep::decode(d).unwrap();
        assert_eq!(seq(&packet), u32::try_from(i).unwrap());
        assert_eq!(packet.payload.as_deref(), messages[i].payload.as_deref());
    }
    eventually(Duration::from_secs(2), "all counted as sent", || {
        sender.state().counters.sent == u64::from(total)
    })
    .await;
    task.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn udp_packet_larger_than_max_udp_size_is_counted_as_oversize_and_never_sent() {
    let mut collector = UdpCollector::start("127.0.0.1:0").await.unwrap();
    let stats = Stats::new();
    let mut spec = hep_spec("homer", collector.addr, Transport::Udp);
    spec.limits.max_udp_size = 400;
    let (sender, task) = sender::spawn(spec, &stats).unwrap();

    let small = message(1);
    let big = message_with_payload(2, "x".repeat(1000));
    let small_again = message(3);
    for m in [&small, &big, &small_again] {
        assert_eq!(sender.offer(m), Offer::Queued);
    }

    // Exactly the two small packets arrive, whole; nothing truncated in between.
    let datagrams = collector.recv(2).await;
    let packets: Vec<Packet> = datagrams
        .iter()
        .map(|d| heptap_hep::decode(d).unwrap())
        .collect();
    assert_eq!(seqs(&packets), [1, 3]);
    assert!(datagrams.iter().all(|d| d.len() <= 400));

    eventually(Duration::from_secs(2), "all three handled", || {
        let c = sender.state().counters;
        c.sent + c.dropped_oversize == 3
    })
    .await;
    let c = sender.state().counters;
    assert_eq!((c.sent, c.dropped_oversize, c.queue_depth), (2, 1, 0));
    assert_eq!(
        stats
            .lookup("hep_homer", "dropped_oversize")
            .map(|c| c.get()),
        Some(1)
    );
    task.shutdown(Duration::from_secs(1)).await;
    assert!(
        collector.datagrams.try_recv().is_err(),
        "nothing else was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_destination_resumes_by_itself_when_the_collector_comes_back() {
    let mut collector = UdpCollector::start("127.0.0.1:0").await.unwrap();
    let (sender, task) = sender::spawn(
        hep_spec("homer", collector.addr, Transport::Udp),
        &Stats::new(),
    )
    .unwrap();
    sender.offer(&message(0));
    assert_eq!(
        seq(&heptap_hep::decode(&collector.recv(1).await[0]).unwrap()),
        0
    );

    // Nobody listens: the kernel answers with "port unreachable", seen on the next send.
    let addr = collector.stop().await;
    for i in 1..=20 {
        assert_eq!(sender.offer(&message(i)), Offer::Queued);
    }
    eventually(Duration::from_secs(2), "the refusal noticed", || {
        sender.state().counters.send_errors >= 1
    })
    .await;

    // Back on the same port: what is offered now arrives, and everything arrives in order.
    let mut collector = UdpCollector::start(&addr.to_string()).await.unwrap();
    for i in 21..=30 {
        assert_eq!(sender.offer(&message(i)), Offer::Queued);
    }
    let mut got = Vec::new();
    while got.last() != Some(&30) {
        got.push(seq(
            &heptap_hep::decode(&collector.recv(1).await[0]).unwrap()
        ));
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
    assert!(
        (21..=30).all(|i| got.contains(&i)),
        "missing some of 21..=30: {got:?}"
    );
    assert!(sender.state().counters.reconnects >= 1);
    task.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn drops_log_one_warning_per_interval_with_the_count_not_one_per_packet() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut spec = hep_spec("down", closed, Transport::Tcp);
    spec.limits.queue_packets = 1;
    let (sender, task) = sender::spawn(spec, &Stats::new()).unwrap();
    assert_eq!(sender.offer(&message(0)), Offer::Queued);
    for i in 1..100 {
        assert_eq!(
            sender.offer(&message(i)),
            Offer::Dropped(DropReason::QueueFull)
        );
    }
    assert_eq!(sender.state().counters.dropped_queue_full, 99);
    let text = logs.text();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Dropping HEP packets"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(warnings[0].contains("hep_id=down"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("dropped=1 queue_full=1"),
        "{}",
        warnings[0]
    );
    task.shutdown(Duration::from_millis(50)).await;
}

/// A collector that stays away is not logged once and forgotten: a reminder per interval says
/// for how long and how much was dropped meanwhile; the same connect error is not repeated.
#[tokio::test]
async fn a_collector_that_stays_down_gets_a_reminder_per_interval_with_duration_and_drops() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut spec = hep_spec("gone", closed, Transport::Tcp);
    spec.limits.queue_packets = 1;
    spec.limits.backoff_initial = Duration::from_millis(10);
    spec.limits.backoff_max = Duration::from_millis(20);
    spec.limits.down_log_interval = Duration::from_secs(1);
    let (sender, task) = sender::spawn(spec, &Stats::new()).unwrap();
    // The outage begins at the first failure; what is dropped from then on is reported.
    eventually(Duration::from_secs(5), "a failed connect", || {
        sender.state().counters.send_errors >= 1
    })
    .await;
    for i in 0..10 {
        sender.offer(&message(i));
    }
    let reminders = || {
        logs.text()
            .lines()
            .filter(|l| l.contains("HEP destination still disconnected for"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(10), "two reminders", || {
        reminders().len() >= 2
    })
    .await;
    let first = &reminders()[0];
    assert!(first.contains("WARN"), "{first}");
    assert!(first.contains("hep_id=gone"), "{first}");
    // 9 of the 10 offers were dropped (the queue holds one) after the outage began.
    let seconds = |line: &str| -> u64 {
        let rest = line.split("still disconnected for ").nth(1).unwrap();
        assert!(rest.contains(" s (9 dropped)"), "{line}");
        rest.split(' ').next().unwrap().parse().unwrap()
    };
    // One interval apart, counted from the first failure.
    let (a, b) = (seconds(first), seconds(&reminders()[1]));
    assert!(a >= 1 && b > a, "{a} then {b}");
    assert!(first.contains("Connection refused"), "{first}");
    let text = logs.text();
    let warned = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("Cannot connect to HEP destination"))
        .count();
    assert_eq!(warned, 1, "{text}");
    task.shutdown(Duration::from_millis(50)).await;
}

#[tokio::test]
#[ignore = "needs IPv6 loopback; .ci/run runs it where [::1] can be bound"]
async fn udp_reaches_an_ipv6_collector() {
    let mut collector = UdpCollector::start("[::1]:0")
        .await
        .expect("needs IPv6 loopback: [::1] cannot be bound here");
    let (sender, task) = sender::spawn(
        hep_spec("v6", collector.addr, Transport::Udp),
        &Stats::new(),
    )
    .unwrap();
    assert_eq!(
        sender.state().destination,
        format!("[::1]:{}", collector.addr.port())
    );
    sender.offer(&message(7));
    let d = collector.recv(1).await;
    assert_eq!(seq(&heptap_hep::decode(&d[0]).unwrap()), 7);
    task.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// TCP

#[tokio::test]
async fn tcp_sends_every_packet_as_one_whole_frame_in_order() {
    let mut collector = TcpCollector::start().await;
    let (sender, task) = sender::spawn(
        hep_spec("homer", collector.addr, Transport::Tcp),
        &Stats::new(),
    )
    .unwrap();
    for i in 0..500 {
        assert_eq!(sender.offer(&message(i)), Offer::Queued);
    }
    let packets = collector.recv(500).await;
    assert_eq!(seqs(&packets), (0..500).collect::<Vec<_>>());
    assert_eq!(
        packets[42].payload.as_deref(),
        message(42).payload.as_deref()
    );
    let report = task.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.abandoned, 0);
    let c = sender.state().counters;
    assert_eq!((c.enqueued, c.sent, c.dropped()), (500, 500, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_collector_stopped_and_restarted_on_the_same_port_gets_what_the_queue_held_in_order() {
    let mut collector = TcpCollector::start().await;
    let port = collector.addr.port();
    let (sender, task) = sender::spawn(
        hep_spec("homer", collector.addr, Transport::Tcp),
        &Stats::new(),
    )
    .unwrap();

    // Events flow to a running collector.
    for i in 0..100 {
        assert_eq!(sender.offer(&message(i)), Offer::Queued);
    }
    assert_eq!(
        seqs(&collector.recv(100).await),
        (0..100).collect::<Vec<_>>()
    );
    eventually(Duration::from_secs(2), "connected", || {
        sender.state().connected
    })
    .await;

    // The collector goes away; events keep coming and are held.
    collector.stop().await;
    for i in 100..200 {
        assert_eq!(sender.offer(&message(i)), Offer::Queued);
    }
    eventually(Duration::from_secs(2), "the loss noticed", || {
        !sender.state().connected
    })
    .await;

    // Back on the same port: delivery resumes by itself, in order, nothing lost.
    collector.restart();
    assert_eq!(collector.addr.port(), port);
    let restarted = Instant::now();
    let mut resumed = Vec::new();
    while resumed.len() < 100 {
        let left = Duration::from_secs(2).saturating_sub(restarted.elapsed());
        let p = timeout(left, collector.packets.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} packets within 2 s of the restart", resumed.len()))
            .unwrap();
        resumed.push(p);
    }
    assert_eq!(seqs(&resumed), (100..200).collect::<Vec<_>>());

    // The counters follow the writes that the collector has just read.
    eventually(Duration::from_secs(2), "sent == 200", || {
        sender.state().counters.sent == 200
    })
    .await;
    let state = sender.state();
    assert!(state.connected);
    assert!(state.counters.reconnects >= 1, "{:?}", state.counters);
    assert!(state.counters.send_errors >= 1, "{:?}", state.counters);
    assert!(state.last_error.is_some());
    assert_eq!(state.counters.sent, 200);
    assert_eq!(state.counters.dropped(), 0);
    assert_eq!(state.counters.queue_depth, 0);
    task.shutdown(Duration::from_secs(1)).await;
    collector.stop().await;
    // Every connection the collector saw ended on a frame boundary.
    assert!(collector.leftovers.lock().unwrap().iter().all(|&n| n == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_tcp_collector_costs_producers_nothing_and_every_drop_is_counted() {
    // Accepts connections and never reads from them.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });

    let stats = Stats::new();
    let mut spec = hep_spec("hole", addr, Transport::Tcp);
    spec.limits.queue_packets = 1000;
    // The stuck write stays stuck for the whole test: the numbers below are then stable.
    spec.limits.write_timeout = Duration::from_secs(600);
    let (sender, task) = sender::spawn(spec, &stats).unwrap();

    // `offer` is a plain function: it cannot wait for the collector. Offer far more than the
    // socket buffers and the queue can hold (~2 KiB x 40000 = 80 MB).
    let payload = "v".repeat(2000);
    let offered = 40_000u64;
    let (mut queued, mut dropped) = (0u64, 0u64);
    for i in 0..offered as u32 {
        match sender.offer(&message_with_payload(i, payload.clone())) {
            Offer::Queued => queued += 1,
            Offer::Dropped(DropReason::QueueFull) => dropped += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(queued + dropped, offered);
    assert!(dropped > 0, "the black hole should have filled the queue");

    let c = sender.state().counters;
    assert_eq!(c.enqueued, queued);
    assert_eq!(c.dropped_queue_full, dropped);
    // Once the writer is stuck, everything accepted is either in the kernel or still held.
    eventually(
        Duration::from_secs(5),
        "sent + queue_depth == enqueued",
        || {
            let c = sender.state().counters;
            c.sent + c.queue_depth == c.enqueued
        },
    )
    .await;
    let c = sender.state().counters;
    assert_eq!(c.sent + c.queue_depth + c.dropped_queue_full, offered);
    assert!(c.queue_depth <= 1000);
    assert_eq!(c.dropped_oversize + c.dropped_encode_error, 0);
    assert_eq!(
        stats.lookup("hep_hole", "queue_depth").map(|g| g.get()),
        Some(c.queue_depth)
    );

    // Shutdown gives up on the stuck collector after the grace period and counts the rest.
    let report = task.shutdown(Duration::from_millis(200)).await;
    let c = sender.state().counters;
    assert_eq!(report.abandoned, c.dropped_shutdown);
    assert_eq!(c.queue_depth, 0);
    assert_eq!(c.sent + c.dropped(), offered);
    hole.abort();
}

// ---------------------------------------------------------------------------------------------
// Fan-out

#[tokio::test]
async fn one_trace_id_with_two_destinations_delivers_every_packet_to_each() {
    let mut udp = UdpCollector::start("127.0.0.1:0").await.unwrap();
    let mut tcp = TcpCollector::start().await;
    let stats = Stats::new();
    let (a, task_a) = sender::spawn(hep_spec("a", udp.addr, Transport::Udp), &stats).unwrap();
    let (b, task_b) = sender::spawn(hep_spec("b", tcp.addr, Transport::Tcp), &stats).unwrap();
    let fan_out = FanOut::new(vec![a.clone(), b.clone()]);

    for i in 0..50 {
        assert_eq!(fan_out.offer(&message(i)), 2);
    }
    let from_udp: Vec<Packet> = udp
        .recv(50)
        .await
        .iter()
        .map(|d| heptap_hep::decode(d).unwrap())
        .collect();
    let from_tcp = tcp.recv(50).await;
    assert_eq!(seqs(&from_udp), (0..50).collect::<Vec<_>>());
    assert_eq!(seqs(&from_tcp), (0..50).collect::<Vec<_>>());
    assert_eq!(stats.lookup("hep_a", "enqueued").map(|c| c.get()), Some(50));
    assert_eq!(stats.lookup("hep_b", "enqueued").map(|c| c.get()), Some(50));
    task_a.shutdown(Duration::from_secs(1)).await;
    task_b.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn each_destination_encodes_with_its_own_version() {
    let mut v3 = UdpCollector::start("127.0.0.1:0").await.unwrap();
    let mut v2 = UdpCollector::start("127.0.0.1:0").await.unwrap();
    let stats = Stats::new();
    let (a, ta) = sender::spawn(hep_spec("v3", v3.addr, Transport::Udp), &stats).unwrap();
    let mut spec = hep_spec("v2", v2.addr, Transport::Udp);
    spec.encoder = Encoder::new(Version::V2);
    let (b, tb) = sender::spawn(spec, &stats).unwrap();
    FanOut::new(vec![a, b]).offer(&message(5));
    assert_eq!(&v3.recv(1).await[0][..4], b"HEP3");
    let d = v2.recv(1).await;
    assert_eq!(d[0][0], 2, "HEPv2 starts with its version byte");
    assert_eq!(heptap_hep::decode(&d[0]).unwrap().version, Version::V2);
    ta.shutdown(Duration::from_secs(1)).await;
    tb.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A test CA and certificates made for this run (never stored).
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Self {
        // Each CA has a name of its own, as two real CAs would.
        static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("heptap test CA {n}"));
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `names` signed by this CA: (certificate, key).
    fn issue(&self, names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert, key)
    }

    /// Writes a client certificate and key, returns their paths.
    fn client_files(&self, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue(&[name]);
        let cert_path = self.dir.path().join(format!("{name}.pem"));
        let key_path = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS collector serving a certificate for `names` from `pki`; with `client_ca`, it demands
/// a client certificate signed by that CA.
async fn tls_collector(pki: &Pki, names: &[&str], client_ca: Option<&Pki>) -> TcpCollector {
    TcpCollector::start_with(Some(tls_acceptor(pki, names, client_ca))).await
}

/// The server side of [`tls_collector`].
fn tls_acceptor(pki: &Pki, names: &[&str], client_ca: Option<&Pki>) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let (cert, key) = pki.issue(names);
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from(ca.ca.der().to_vec()))
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn verified(ca_file: PathBuf) -> HepTls {
    HepTls {
        ca_file: Some(ca_file),
        ..HepTls::default()
    }
}

/// Log lines written while the guard lives (current-thread tests only: the sender's task runs
/// on the test's thread).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        // A callsite first hit by another test's thread while only the global no-op subscriber
        // existed can have cached "never" in the middle of set_default's own rebuild (tracing's
        // single-dispatcher fast path skips the lock); this recomputes every callsite's interest
        // with this thread's subscriber registered. (Seen once: the drop warning never logged.)
        tracing::callsite::rebuild_interest_cache();
        guard
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

#[tokio::test]
async fn tls_collector_signed_by_the_configured_ca_is_verified_and_receives_packets() {
    let pki = Pki::new();
    // Reached by name: "localhost" is resolved at connect time and checked against the
    // certificate (and sent as SNI).
    let mut collector = tls_collector(&pki, &["localhost"], None).await;
    let spec = tls_spec(
        "secure",
        "localhost",
        collector.addr.port(),
        verified(pki.ca_file()),
    );
    let (sender, task) = sender::spawn(spec, &Stats::new()).unwrap();
    for i in 0..20 {
        sender.offer(&message(i));
    }
    assert_eq!(seqs(&collector.recv(20).await), (0..20).collect::<Vec<_>>());
    let state = sender.state();
    assert_eq!(state.transport, "tls");
    assert!(state.connected);
    let report = task.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.abandoned, 0);
    assert_eq!(sender.state().counters.sent, 20);
}

/// A collector whose certificate moves to another CA (a renewal): the destination trusts it
/// once its `ca_file` holds that CA and is read again (`tls_reload`, a reload), from its next
/// connection; a `ca_file` that cannot be used changes nothing.
#[tokio::test]
async fn a_renewed_ca_file_is_used_from_the_next_connection_and_a_bad_one_changes_nothing() {
    let (old_ca, new_ca) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::copy(old_ca.ca_file(), &ca_file).unwrap();
    let mut collector = tls_collector(&old_ca, &["localhost"], None).await;
    let spec = tls_spec(
        "secure",
        "localhost",
        collector.addr.port(),
        verified(ca_file.clone()),
    );
    let (sender, task) = sender::spawn(spec.clone(), &Stats::new()).unwrap();
    sender.offer(&message(0));
    assert_eq!(seqs(&collector.recv(1).await), [0]);

    // Read again, the same: nothing changes.
    assert!(!sender.renew_tls(&spec).unwrap());
    // A file that cannot be used is refused with its path; the destination goes on.
    std::fs::write(&ca_file, "not PEM").unwrap();
    let e = sender.renew_tls(&spec).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "hep_id secure: cannot load ca_file from {}: no PEM certificate in the file",
            ca_file.display()
        )
    );
    sender.offer(&message(1));
    assert_eq!(seqs(&collector.recv(1).await), [1]);

    // The collector comes back with a certificate of another CA: refused with the old one...
    collector.stop().await;
    collector.tls = Some(tls_acceptor(&new_ca, &["localhost"], None));
    collector.restart();
    let errors = sender.state().counters.send_errors;
    eventually(Duration::from_secs(10), "a refused handshake", || {
        sender.offer(&message(2));
        sender
            .state()
            .last_error
            .is_some_and(|e| e.contains("is not signed by a CA heptap trusts"))
            && sender.state().counters.send_errors > errors
    })
    .await;
    // ... and trusted once the renewed CA file is read.
    std::fs::copy(new_ca.ca_file(), &ca_file).unwrap();
    assert!(sender.renew_tls(&spec).unwrap());
    eventually(
        Duration::from_secs(10),
        "a packet over the renewed trust",
        || {
            sender.offer(&message(3));
            collector.packets.try_recv().is_ok()
        },
    )
    .await;
    assert!(sender.state().connected);
    task.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn tls_collector_signed_by_another_ca_is_refused_with_a_clear_log_line() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let trusted = Pki::new();
    let other = Pki::new();
    let mut collector = tls_collector(&other, &["localhost"], None).await;
    let spec = tls_spec(
        "secure",
        "127.0.0.1",
        collector.addr.port(),
        HepTls {
            server_name: Some("localhost".into()),
            ..verified(trusted.ca_file())
        },
    );
    let (sender, task) = sender::spawn(spec, &Stats::new()).unwrap();
    sender.offer(&message(1));

    eventually(Duration::from_secs(5), "a failed handshake", || {
        sender.state().counters.send_errors >= 1
    })
    .await;
    let state = sender.state();
    assert!(!state.connected);
    let error = state.last_error.unwrap();
    assert!(error.contains("TLS handshake with 127.0.0.1"), "{error}");
    assert!(
        error.contains("the collector's certificate (SHA-256 ")
            && error.contains(
                "is not signed by a CA heptap trusts (hep.ids.secure.ca_file, or the system's CAs \
             when it is unset): set hep.ids.secure.ca_file to the CA that issued it"
            ),
        "{error}"
    );
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("Cannot connect to HEP destination"))
        .unwrap_or_else(|| panic!("no warning in {text:?}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("hep_id=secure"), "{line}");
    assert!(
        line.contains("is not signed by a CA heptap trusts"),
        "{line}"
    );
    assert!(
        collector.packets.try_recv().is_err(),
        "nothing reached the collector"
    );

    let report = task.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.abandoned, 1);
}

#[tokio::test]
async fn tls_collector_whose_certificate_names_another_host_is_refused() {
    let pki = Pki::new();
    let mut collector = tls_collector(&pki, &["collector.example"], None).await;
    // Reached as 127.0.0.1: the certificate has no such name.
    let spec = tls_spec(
        "secure",
        "127.0.0.1",
        collector.addr.port(),
        verified(pki.ca_file()),
    );
    let (sender, task) = sender::spawn(spec, &Stats::new()).unwrap();
    sender.offer(&message(1));
    eventually(Duration::from_secs(5), "a failed handshake", || {
        sender.state().counters.send_errors >= 1
    })
    .await;
    let error = sender.state().last_error.unwrap();
    assert!(
        error.contains(
            "the collector's certificate is not for '127.0.0.1' (it names \
             DnsName(\"collector.example\")): set hep.ids.secure.server_name to a name it \
             carries"
        ),
        "{error}"
    );
    assert!(collector.packets.try_recv().is_err());
    task.shutdown(Duration::from_millis(100)).await;

    // The same collector is accepted when its name is the one checked (server_name).
    let spec = tls_spec(
        "named",
        "127.0.0.1",
        collector.addr.port(),
        HepTls {
            server_name: Some("collector.example".into()),
            ..verified(pki.ca_file())
        },
    );
    let (sender, task) = sender::spawn(spec, &Stats::new()).unwrap();
    sender.offer(&message(2));
    assert_eq!(seqs(&collector.recv(1).await), [2]);
    task.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate_the_collector_demands() {
    let pki = Pki::new();
    let clients = Pki::new();
    let mut collector = tls_collector(&pki, &["localhost"], Some(&clients)).await;
    let (cert_file, key_file) = clients.client_files("heptap-edge-1");

    let spec = tls_spec(
        "mtls",
        "localhost",
        collector.addr.port(),
        HepTls {
            cert_file: Some(cert_file),
            key_file: Some(key_file),
            ..verified(pki.ca_file())
        },
    );
    let (sender, task) = sender::spawn(spec, &Stats::new()).unwrap();
    for i in 0..5 {
        sender.offer(&message(i));
    }
    assert_eq!(seqs(&collector.recv(5).await), [0, 1, 2, 3, 4]);
    task.shutdown(Duration::from_secs(1)).await;

    // Without a client certificate the collector refuses the handshake; nothing is delivered.
    // (With TLS 1.3 the client learns of the refusal only from the alert that answers its first
    // write, so that write counts as sent; the error shows in send_errors and last_error.)
    let spec = tls_spec(
        "anonymous",
        "localhost",
        collector.addr.port(),
        verified(pki.ca_file()),
    );
    let (sender, task) = sender::spawn(spec, &Stats::new()).unwrap();
    sender.offer(&message(9));
    let errors = Arc::clone(&collector.handshake_errors);
    eventually(Duration::from_secs(5), "the collector refusing", || {
        !errors.lock().unwrap().is_empty()
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "the refusal seen by the sender",
        || {
            sender
                .state()
                .last_error
                .is_some_and(|e| e.contains("CertificateRequired"))
        },
    )
    .await;
    assert!(collector.packets.try_recv().is_err());
    task.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn tls_verify_false_accepts_an_untrusted_certificate_and_says_so() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let pki = Pki::new();
    let mut collector = tls_collector(&pki, &["collector.example"], None).await;
    let spec = tls_spec(
        "lax",
        "127.0.0.1",
        collector.addr.port(),
        HepTls {
            tls_verify: false,
            ..HepTls::default()
        },
    );
    let (sender, task) = sender::spawn(spec, &Stats::new()).unwrap();
    assert!(logs.text().contains("TLS certificate verification is off"));
    sender.offer(&message(3));
    assert_eq!(seqs(&collector.recv(1).await), [3]);
    task.shutdown(Duration::from_secs(1)).await;
}

/// A collector serving the self-signed CA certificate `openssl req -x509` makes (CA:TRUE,
/// used as its own server certificate): (acceptor, the certificate's PEM, its SHA-256).
fn self_signed_ca_acceptor(names: &[&str]) -> (tokio_rustls::TlsAcceptor, String, String) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, cert.der())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        cert.pem(),
        fingerprint,
    )
}

/// The issue's collector: its self-signed CA certificate as `ca_file` is refused in plain words
/// that give the fingerprint to pin; pinned, it receives; another pin is refused.
#[tokio::test]
async fn a_self_signed_ca_certificate_is_explained_and_trusted_by_its_pinned_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, pem, fingerprint) = self_signed_ca_acceptor(&["localhost"]);
    let ca_file = dir.path().join("collector.pem");
    std::fs::write(&ca_file, pem).unwrap();
    let mut collector = TcpCollector::start_with(Some(acceptor)).await;
    let port = collector.addr.port();

    let (sender, task) = sender::spawn(
        tls_spec("homer", "localhost", port, verified(ca_file)),
        &Stats::new(),
    )
    .unwrap();
    sender.offer(&message(1));
    eventually(Duration::from_secs(5), "a refused handshake", || {
        sender.state().counters.send_errors >= 1
    })
    .await;
    let error = sender.state().last_error.unwrap();
    assert!(
        error.contains(&format!(
            "the collector shows a CA certificate (basicConstraints CA:TRUE, what `openssl req \
             -x509` makes unless told otherwise) as its own, which TLS clients refuse: trust it \
             by its fingerprint: hep.ids.homer.tls_pin_sha256 = \"{fingerprint}\""
        )),
        "{error}"
    );
    assert!(!error.contains("Other("), "{error}");
    task.shutdown(Duration::from_millis(100)).await;

    // Pinned (the form openssl prints, its label included): trusted, whatever its name.
    let pin: heptap_config::Sha256Fingerprint =
        format!("sha256 Fingerprint={fingerprint}").parse().unwrap();
    let pinned = HepTls {
        pin_sha256: Some(pin),
        ..HepTls::default()
    };
    let (sender, task) =
        sender::spawn(tls_spec("homer", "127.0.0.1", port, pinned), &Stats::new()).unwrap();
    sender.offer(&message(2));
    assert_eq!(seqs(&collector.recv(1).await), [2]);
    task.shutdown(Duration::from_secs(1)).await;

    // Another certificate's fingerprint: refused, saying which was shown.
    let other = HepTls {
        pin_sha256: Some(heptap_config::Sha256Fingerprint([7; 32])),
        ..HepTls::default()
    };
    let (sender, task) =
        sender::spawn(tls_spec("homer", "localhost", port, other), &Stats::new()).unwrap();
    sender.offer(&message(3));
    eventually(Duration::from_secs(5), "a refused handshake", || {
        sender.state().counters.send_errors >= 1
    })
    .await;
    let error = sender.state().last_error.unwrap();
    assert!(
        error.contains(&format!(
            "the collector shows a certificate whose SHA-256 is {fingerprint}, not the one \
             pinned in hep.ids.homer.tls_pin_sha256"
        )),
        "{error}"
    );
    assert!(collector.packets.try_recv().is_err());
    task.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn an_expired_collector_certificate_is_refused_saying_when_it_expired() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let pki = Pki::new();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &pki.ca, &pki.ca_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let collector =
        TcpCollector::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await;
    let spec = tls_spec(
        "old",
        "localhost",
        collector.addr.port(),
        verified(pki.ca_file()),
    );
    let (sender, task) = sender::spawn(spec, &Stats::new()).unwrap();
    sender.offer(&message(1));
    eventually(Duration::from_secs(5), "a refused handshake", || {
        sender.state().counters.send_errors >= 1
    })
    .await;
    let error = sender.state().last_error.unwrap();
    assert!(
        error.contains("the collector's certificate expired at 2021-01-01 0:00:00.0 +00:00:00: renew it on the collector"),
        "{error}"
    );
    task.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn bad_tls_files_are_refused_when_the_destination_starts() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let spec = tls_spec("secure", "localhost", 9061, verified(missing.clone()));
    let err = sender::spawn(spec.clone(), &Stats::new()).unwrap_err();
    assert!(
        matches!(
            err,
            SenderError::TlsFile {
                what: "ca_file",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("hep_id secure: cannot load ca_file from "),
        "{err}"
    );
    assert!(sender::check(&spec).is_err());

    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let err = sender::check(&tls_spec("secure", "localhost", 9061, verified(not_pem))).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");

    let pki = Pki::new();
    let (cert_file, _) = pki.client_files("edge");
    let err = sender::check(&tls_spec(
        "secure",
        "localhost",
        9061,
        HepTls {
            cert_file: Some(cert_file),
            ..verified(pki.ca_file())
        },
    ))
    .unwrap_err();
    assert!(
        matches!(err, SenderError::ClientAuthIncomplete { .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration errors

#[tokio::test]
async fn hep_v1_and_v2_are_refused_on_a_stream() {
    let mut spec = hep_spec("old", "127.0.0.1:9060".parse().unwrap(), Transport::Tcp);
    spec.encoder = Encoder::new(Version::V2);
    let err = sender::spawn(spec, &Stats::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "hep_id old: HEP version 2 can only be sent over UDP"
    );
}

#[test]
fn spawning_outside_the_runtime_is_an_error_not_a_panic() {
    let spec = hep_spec("x", "127.0.0.1:9060".parse().unwrap(), Transport::Udp);
    let err = sender::spawn(spec, &Stats::new()).unwrap_err();
    assert!(matches!(err, SenderError::NoRuntime { .. }));
}

// ---------------------------------------------------------------------------------------------
// Local outputs and shutdown

#[tokio::test]
async fn file_destination_appends_one_hep_dump_json_line_per_packet() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.jsonl");
    let spec = DestinationSpec {
        name: "file".into(),
        destination: Destination::File(path.clone()),
        encoder: Encoder::default(),
        limits: limits(),
        file_owner: FileOwner::default(),
    };
    let (sender, task) = sender::spawn(spec, &Stats::new()).unwrap();
    for i in 0..3 {
        sender.offer(&message(i));
    }
    let report = task.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.abandoned, 0);

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        // Exactly what hep-dump prints for the same packet.
        let mut hep = Vec::new();
        Encoder::default()
            .encode(&message(i as u32), &mut hep)
            .unwrap();
        let expected = heptap_hep::decode(&hep).unwrap().to_json();
        assert_eq!(*line, serde_json::to_string(&expected).unwrap());
    }
    assert!(text.ends_with('\n'));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    assert_eq!(
        sender.state().destination,
        format!("file:{}", path.display())
    );
}

#[tokio::test]
async fn file_destination_in_a_missing_directory_is_refused_at_start() {
    let path = Path::new("/nonexistent-heptap-dir/trace.jsonl").to_owned();
    let spec = DestinationSpec {
        name: "file".into(),
        destination: Destination::File(path),
        encoder: Encoder::default(),
        limits: limits(),
        file_owner: FileOwner::default(),
    };
    assert!(matches!(
        sender::check(&spec),
        Err(SenderError::File { .. })
    ));
    assert!(matches!(
        sender::spawn(spec, &Stats::new()),
        Err(SenderError::File { .. })
    ));
}

/// A destination has one lane per relay worker: each worker's packets go out on that worker's
/// own connection, in the order the worker offered them; `connected` is set once every lane is
/// up, and the counters are the destination's.
#[tokio::test]
async fn each_worker_has_its_own_lane_and_connection_and_keeps_its_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, u32)>();
    let accept = tokio::spawn(async move {
        let mut conns = Vec::new();
        for conn in 0.. {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            conns.push(tokio::spawn(async move {
                read_frames(&mut stream, |p| {
                    let _ = tx.send((conn, seq(&p)));
                })
                .await;
            }));
        }
    });
    let workers = Workers::start(2).unwrap();
    let (sender, task) = sender::spawn_on(
        hep_spec("homer", addr, Transport::Tcp),
        &Stats::new(),
        workers.handles(),
    )
    .unwrap();
    eventually(Duration::from_secs(5), "both lanes connected", || {
        sender.state().connected
    })
    .await;
    // Worker w offers 1000w, 1000w + 1, ... from its own thread.
    for (w, runtime) in workers.handles().iter().enumerate() {
        let sender = sender.clone();
        let base = 1000 * u32::try_from(w).unwrap();
        runtime
            .spawn(async move {
                for i in 0..500 {
                    assert_eq!(sender.offer(&message(base + i)), Offer::Queued);
                }
            })
            .await
            .unwrap();
    }
    let mut by_connection = std::collections::BTreeMap::<usize, Vec<u32>>::new();
    for _ in 0..1000 {
        let (conn, seq) = timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("every packet within the timeout")
            .unwrap();
        by_connection.entry(conn).or_default().push(seq);
    }
    assert_eq!(by_connection.len(), 2, "one connection per lane");
    let mut streams: Vec<Vec<u32>> = by_connection.into_values().collect();
    streams.sort();
    assert_eq!(
        streams,
        vec![(0..500).collect::<Vec<_>>(), (1000..1500).collect()],
        "each worker's packets on one connection, in order"
    );
    let report = task.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.abandoned, 0);
    let state = sender.state();
    let c = state.counters;
    assert_eq!((c.enqueued, c.sent, c.queue_depth), (1000, 1000, 0));
    assert!(!state.connected, "the lanes are down after shutdown");
    workers.stop().await;
    accept.abort();
}

#[tokio::test]
async fn shutdown_flushes_the_queue_to_a_live_collector() {
    let mut collector = TcpCollector::start().await;
    let (sender, task) = sender::spawn(
        hep_spec("homer", collector.addr, Transport::Tcp),
        &Stats::new(),
    )
    .unwrap();
    for i in 0..1000 {
        sender.offer(&message(i));
    }
    let report = task.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.abandoned, 0);
    assert_eq!(
        seqs(&collector.recv(1000).await),
        (0..1000).collect::<Vec<_>>()
    );
    // The queue is closed: later offers are refused and counted.
    assert_eq!(
        sender.offer(&message(1000)),
        Offer::Dropped(DropReason::Shutdown)
    );
    let c = sender.state().counters;
    assert_eq!((c.sent, c.dropped_shutdown, c.queue_depth), (1000, 1, 0));
}

#[tokio::test]
async fn shutdown_with_the_collector_down_stops_after_the_grace_period_and_counts_the_rest() {
    // A port with nobody listening.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (sender, task) =
        sender::spawn(hep_spec("down", addr, Transport::Tcp), &Stats::new()).unwrap();
    for i in 0..10 {
        assert_eq!(sender.offer(&message(i)), Offer::Queued);
    }
    let report = timeout(
        Duration::from_secs(5),
        task.shutdown(Duration::from_millis(300)),
    )
    .await
    .expect("shutdown is bounded by its grace period");
    assert_eq!(report.abandoned, 10);
    let c = sender.state().counters;
    assert_eq!(
        (c.sent, c.dropped_shutdown, c.queue_depth, c.queue_bytes),
        (0, 10, 0, 0)
    );
    assert!(c.send_errors >= 1);
}

#[tokio::test]
async fn sender_state_names_the_destination_for_the_mi() {
    let collector = TcpCollector::start().await;
    let (sender, task): (Sender, SenderTask) = sender::spawn(
        hep_spec("homer", collector.addr, Transport::Tcp),
        &Stats::new(),
    )
    .unwrap();
    assert_eq!(sender.name(), "homer");
    let s = sender.state();
    assert_eq!((s.name.as_str(), s.transport), ("homer", "tcp"));
    assert_eq!(s.destination, collector.addr.to_string());
    eventually(Duration::from_secs(2), "connected", || {
        sender.state().connected
    })
    .await;
    task.shutdown(Duration::from_secs(1)).await;
    assert!(!sender.state().connected);
}
