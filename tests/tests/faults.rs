//! A collector that misbehaves never costs the relay anything: heptap's `start()` in-process
//! relays SIP through to an echo upstream while its only HEP destination (TCP) is down at
//! start, goes down mid-stream, reads 1 KB/s, stalls, is black-holed or resets every connection.
//! Each test runs the same relay workload with the collector healthy and faulty and checks:
//! every relayed byte comes back unchanged, every trace message is either queued or counted as
//! dropped (exactly), and delivery resumes once the collector recovers. The latency and
//! throughput figures are printed (`cargo test --test faults -- --nocapture`) and recorded in
//! RELIABILITY.md; the comparison asserted here is deliberately loose (a factor of 10, where a
//! relay that waited for the collector would be hundreds of times slower).
//!
//! Also: SIGHUP with a broken config file keeps the old config running and logs why.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heptap::{Running, Stop};
use heptap_testkit::eventually;
use heptap_tests::collector::{EchoUpstream, Scratch, UdpCollector, WAIT, closed_port};
use heptap_tests::fault::{BlackHole, FaultyCollector, Figures, Mode, percentile};
use heptap_tests::taps::{random_bytes, run, statistic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The destination's queue: small, so a faulty collector fills it within the workload.
const QUEUE_PACKETS: usize = 512;
/// Single-message round trips per run (latency).
const ROUND_TRIPS: usize = 200;
/// Messages streamed both ways per run (throughput).
const BULK: usize = 2000;
/// Trace messages per relayed connection besides SIP: ACCEPTED, CONNECTED and one CLOSED per
/// leg; plus a CONNECT_START for each upstream connect still pending after 100 ms, counted by
/// `upstream_connect_slow` (added in [`every_message_accounted_for`]).
const NET_EVENTS: u64 = 4;

/// The tests compare timings: one at a time, so they do not slow each other down.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(upstream: SocketAddr, collector: SocketAddr, dir: &Scratch) -> heptap_config::Config {
    config_with(upstream, collector, dir, "")
}

/// [`config`] with `hep_extra` added to `[hep]`.
fn config_with(
    upstream: SocketAddr,
    collector: SocketAddr,
    dir: &Scratch,
    hep_extra: &str,
) -> heptap_config::Config {
    let mi = dir.mi_toml(false);
    let text = format!(
        r#"
[hep]
{hep_extra}
connect_timeout = "1s"
write_timeout = "1s"
backoff_initial = "20ms"
backoff_max = "300ms"

[hep.ids]
col = {{ host = "127.0.0.1", port = {port}, transport = "tcp", queue_packets = {QUEUE_PACKETS} }}

[tracer]
trace_id = ["[tid]uri=hep:col"]

[[listener]]
proto = "tcp"
listen = "127.0.0.1:0"
upstream = "{upstream}"
sip_trace_id = "tid"

[net.tcp]
trace_on = true
trace_destination = "col"

{mi}
"#,
        port = collector.port()
    );
    heptap_config::Config::from_toml_str(&text)
        .unwrap_or_else(|e| panic!("test config refused:\n{e}\n{text}"))
}

/// SIP message `i` of run `seed`: an OPTIONS with its own Call-ID and a body of 100 to 700
/// pseudo-random letters, so every message differs and a lost or reordered byte shows.
fn sip_message(seed: u64, i: usize) -> Vec<u8> {
    let noise = random_bytes(seed.wrapping_mul(7919).wrapping_add(i as u64), 2);
    let len = 100 + (usize::from(noise[0]) << 8 | usize::from(noise[1])) % 600;
    let body: String = random_bytes(seed ^ (i as u64) << 20, len)
        .into_iter()
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    format!(
        "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK{seed}x{i}\r\n\
         From: <sip:alice@example.com>;tag={i}\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: run{seed}-msg{i}@example.com\r\nCSeq: {i} OPTIONS\r\nMax-Forwards: 70\r\n\
         Content-Type: text/plain\r\nContent-Length: {len}\r\n\r\n{body}"
    )
    .into_bytes()
}

/// One connection through heptap: ROUND_TRIPS messages one at a time (latency), then BULK
/// messages written while the echo is read (throughput). Every byte read back is checked.
/// Returns the figures and the number of SIP messages relayed (each is traced both ways).
async fn relay_run(listen: SocketAddr, seed: u64) -> (Figures, u64) {
    let client = TcpStream::connect(listen).await.unwrap();
    client.set_nodelay(true).unwrap();
    let (mut r, mut w) = client.into_split();
    let mut rtts = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS {
        let msg = sip_message(seed, i);
        let mut back = vec![0u8; msg.len()];
        let t = Instant::now();
        w.write_all(&msg).await.unwrap();
        tokio::time::timeout(WAIT, r.read_exact(&mut back))
            .await
            .expect("the echo within the timeout")
            .unwrap();
        rtts.push(t.elapsed());
        assert!(back == msg, "round trip {i}: relayed bytes differ");
    }
    let bulk: Vec<Vec<u8>> = (ROUND_TRIPS..ROUND_TRIPS + BULK)
        .map(|i| sip_message(seed, i))
        .collect();
    let expected: Vec<u8> = bulk.concat();
    let t = Instant::now();
    let writer = tokio::spawn(async move {
        for m in &bulk {
            w.write_all(m).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(expected.len());
    tokio::time::timeout(WAIT, r.read_to_end(&mut back))
        .await
        .expect("the bulk echo within the timeout")
        .unwrap();
    let elapsed = t.elapsed();
    writer.await.unwrap();
    assert_eq!(back.len(), expected.len(), "bulk: bytes lost");
    assert!(back == expected, "bulk: relayed bytes differ");
    let figures = Figures {
        rtt_p50: percentile(&mut rtts, 50),
        rtt_p99: percentile(&mut rtts, 99),
        mb_per_s: expected.len() as f64 / elapsed.as_secs_f64() / 1e6,
    };
    (figures, (ROUND_TRIPS + BULK) as u64)
}

/// A statistic of the `col` destination (`hep_col:<name>`).
fn hep(heptap: &Running, name: &str) -> u64 {
    stat(heptap, "hep_col", name)
}

/// Every `hep_col` statistic, for failure messages.
fn hep_stats(heptap: &Running) -> Vec<(String, u64)> {
    heptap
        .stats()
        .snapshot()
        .into_iter()
        .filter(|(g, _, _)| g == "hep_col")
        .map(|(_, n, v)| (n, v))
        .collect()
}

fn stat(heptap: &Running, group: &str, name: &str) -> u64 {
    statistic(heptap, group, name).unwrap_or_else(|| panic!("no statistic {group}:{name}"))
}

/// What became of the trace messages so far.
#[derive(Clone, Copy, Debug, Default)]
struct Fate {
    /// Accepted into the queue.
    enqueued: u64,
    /// Refused because the queue was full.
    dropped: u64,
}

impl Fate {
    fn now(heptap: &Running) -> Self {
        Fate {
            enqueued: hep(heptap, "enqueued"),
            dropped: hep(heptap, "dropped_queue_full"),
        }
    }

    fn offered(&self) -> u64 {
        self.enqueued + self.dropped
    }
}

/// Waits until `expected` trace messages have been offered in all (the CLOSED events follow
/// the client's EOF by a moment), then checks none more was and each was queued or counted.
async fn every_message_accounted_for(heptap: &Running, expected: u64) -> Fate {
    // The CONNECT_STARTs of upstream connects that took over 100 ms (rare on loopback).
    let expected = expected + stat(heptap, "listener_0", "upstream_connect_slow");
    eventually(WAIT, "every trace message offered", || {
        Fate::now(heptap).offered() >= expected
    })
    .await;
    let fate = Fate::now(heptap);
    assert_eq!(
        fate.offered(),
        expected,
        "offered = enqueued + dropped_queue_full, exactly one per event: {fate:?}"
    );
    assert_eq!(hep(heptap, "dropped_oversize"), 0);
    assert_eq!(hep(heptap, "dropped_encode_error"), 0);
    fate
}

/// What the queue held is delivered, then a new connection's events reach the collector:
/// delivery works (again).
async fn delivery_works(heptap: &Running, col: &mut FaultyCollector, what: &str) {
    eventually(Duration::from_secs(20), "the queue delivered", || {
        hep(heptap, "queue_depth") == 0 && hep(heptap, "connected") == 1
    })
    .await;
    let probe = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    let me = probe.local_addr().unwrap();
    let arrived = col
        .wait_for(Duration::from_secs(20), |p| {
            p.proto_type == Some(89) && p.src() == Some(me)
        })
        .await;
    assert!(
        arrived.is_ok(),
        "{what}: the collector is back but the probe's event did not arrive ({arrived:?} others did); hep_col: {:?}, hep_ids: {}",
        hep_stats(heptap),
        heptap.control().hep_ids()
    );
    drop(probe);
    eprintln!("{what}: delivery resumed");
}

/// The relay with a faulty collector is within a factor of 10 of the healthy one.
fn unaffected(what: &str, healthy: Figures, faulty: Figures) {
    eprintln!("FIGURES {what}: healthy collector: {healthy}; faulty: {faulty}");
    assert!(
        faulty.mb_per_s * 10.0 >= healthy.mb_per_s,
        "{what}: throughput fell from {healthy} to {faulty}"
    );
    assert!(
        faulty.rtt_p50 <= healthy.rtt_p50 * 10 + Duration::from_millis(1),
        "{what}: latency rose from {healthy} to {faulty}"
    );
}

/// A collector after `fault`: the same one misbehaving, gone, or replaced by a black hole.
enum Broken {
    /// Still there, in a faulty mode.
    Same(FaultyCollector),
    /// Stopped: nothing listens.
    Gone,
    /// Nothing answers.
    Hole(BlackHole),
}

/// Mends what `fault` broke: a healthy collector on the same address.
fn recover(broken: Broken, addr: SocketAddr) -> FaultyCollector {
    match broken {
        Broken::Same(col) => {
            col.set_mode(Mode::Healthy);
            col
        }
        Broken::Gone => FaultyCollector::bind_at(addr, Mode::Healthy),
        Broken::Hole(hole) => {
            drop(hole);
            FaultyCollector::bind_at(addr, Mode::Healthy)
        }
    }
}

/// The healthy run, then `fault`, the faulty run, and recovery; checks bytes, counts and that
/// delivery resumes.
async fn healthy_then_faulty(what: &str, fault: impl AsyncFnOnce(FaultyCollector) -> Broken) {
    let _serial = SERIAL.lock().await;
    let up = EchoUpstream::bind().await;
    let mut col = FaultyCollector::bind().await;
    let addr = col.addr;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, addr, &dir)).await;
    let listen = heptap.listen_addrs()[0];

    let (healthy, first) = relay_run(listen, 1).await;
    let mut expected = NET_EVENTS + 2 * first;
    let before = every_message_accounted_for(&heptap, expected).await;
    // The lanes share the relay's thread; a streaming connection lets them run (every 64
    // traced messages), so a healthy collector loses nothing even to a 512-packet queue.
    assert_eq!(
        before.dropped, 0,
        "{what}: healthy collector, nothing dropped: {before:?}"
    );
    col.discard();

    let broken = fault(col).await;
    // Relay through the fault until the queue overflows: what the kernel's socket buffers absorb
    // first depends on how they were tuned by the healthy run (a collector that stops reading
    // can take a few MB before heptap's writes stall). At most 5 runs.
    let mut second = 0;
    let mut after = before;
    for run in 0..5 {
        let (faulty, n) = relay_run(listen, 2 + run).await;
        second += n;
        expected += NET_EVENTS + 2 * n;
        after = every_message_accounted_for(&heptap, expected).await;
        unaffected(what, healthy, faulty);
        if after.dropped > before.dropped {
            break;
        }
    }
    assert!(
        after.dropped > before.dropped,
        "{what}: the queue of {QUEUE_PACKETS} overflowed and the drops were counted: {before:?} -> {after:?}"
    );
    assert_eq!(
        stat(&heptap, "listener_0", "sip_traced"),
        2 * (first + second),
        "every relayed SIP message was traced, both ways"
    );
    eprintln!(
        "{what}: while faulty, {} trace messages queued and {} dropped (counted)",
        after.enqueued - before.enqueued,
        after.dropped - before.dropped
    );

    let mut col = recover(broken, addr);
    delivery_works(&heptap, &mut col, what).await;
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_down_at_start_costs_the_relay_nothing_and_gets_events_once_it_is_up() {
    let _serial = SERIAL.lock().await;
    let up = EchoUpstream::bind().await;
    let down = closed_port().await;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, down, &dir)).await;
    let listen = heptap.listen_addrs()[0];

    let (faulty, messages) = relay_run(listen, 1).await;
    let mut expected = NET_EVENTS + 2 * messages;
    let down_fate = every_message_accounted_for(&heptap, expected).await;
    assert_eq!(hep(&heptap, "sent"), 0, "nothing could be sent");
    assert!(
        hep(&heptap, "send_errors") > 0,
        "failed connects are counted"
    );
    assert_eq!(
        down_fate.enqueued, QUEUE_PACKETS as u64,
        "the queue filled up and stayed full: {down_fate:?}"
    );

    let mut col = FaultyCollector::bind_at(down, Mode::Healthy);
    delivery_works(&heptap, &mut col, "down at start").await;
    assert!(
        hep(&heptap, "sent") > QUEUE_PACKETS as u64,
        "what the queue held was delivered, then the probe's event"
    );
    expected += NET_EVENTS; // the probe connection
    let (healthy, messages) = relay_run(listen, 2).await;
    expected += NET_EVENTS + 2 * messages;
    every_message_accounted_for(&heptap, expected).await;
    unaffected("down at start", healthy, faulty);
    heptap.shutdown(Stop::Immediate).await;
}

/// The disk spool on a full disk (a 1 MiB tmpfs, so root only) with the collector down: the
/// relay's figures stay those of a healthy run; the spool drops and counts what does not fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (mounts a small tmpfs); .ci/run runs it as root"]
async fn a_full_disk_under_the_spool_costs_the_relay_nothing() {
    let _serial = SERIAL.lock().await;
    let up = EchoUpstream::bind().await;
    let dir = Scratch::new();
    // The healthy run: collector up, no spool.
    let mut col = FaultyCollector::bind().await;
    let heptap = run(config(up.addr, col.addr, &dir)).await;
    let (healthy, _) = relay_run(heptap.listen_addrs()[0], 1).await;
    col.discard();
    heptap.shutdown(Stop::Immediate).await;

    let disk = dir.path().join("small");
    std::fs::create_dir(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a 1 MiB tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(disk.clone());
    let down = closed_port().await;
    let spool = format!("spool_dir = \"{}\"", disk.join("spool").display());
    let heptap = run(config_with(up.addr, down, &dir, &spool)).await;
    let listen = heptap.listen_addrs()[0];
    let mut faulty = relay_run(listen, 2).await.0;
    // Fill the disk for sure, then measure again on the full disk.
    for run in 0..20 {
        if hep(&heptap, "dropped_spool_error") > 0 {
            break;
        }
        faulty = relay_run(listen, 3 + run).await.0;
    }
    assert!(
        hep(&heptap, "dropped_spool_error") > 0,
        "the full disk's refusals are counted: {:?}",
        hep_stats(&heptap)
    );
    let (full, _) = relay_run(listen, 100).await;
    // The MI shows the spool: where, what it does, what it lost.
    let ids = heptap.control().hep_ids();
    let spool = &ids["hep_ids"][0]["spool"];
    assert_eq!(spool["state"], "spooling", "{ids}");
    assert!(spool["dropped_spool_error"].as_u64() > Some(0), "{ids}");
    assert!(
        spool["dir"]
            .as_str()
            .is_some_and(|d| d.ends_with("spool/col")),
        "{ids}"
    );
    unaffected("spool on a full disk", healthy, faulty);
    unaffected("spool on a full disk (again)", healthy, full);
    eprintln!(
        "spool on a full disk: spooled {}, dropped_spool_error {}, dropped_queue_full {}",
        hep(&heptap, "spooled"),
        hep(&heptap, "dropped_spool_error"),
        hep(&heptap, "dropped_queue_full")
    );
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_going_down_mid_stream_costs_the_relay_nothing_and_delivery_resumes() {
    healthy_then_faulty("down mid-stream", async |col| {
        col.stop().await;
        Broken::Gone
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_reading_1_kb_per_second_costs_the_relay_nothing() {
    healthy_then_faulty("slow (1 KB/s)", async |col| {
        col.set_mode(Mode::Slow(1024));
        Broken::Same(col)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_accepts_and_never_reads_costs_the_relay_nothing() {
    healthy_then_faulty("stalled (never reads)", async |col| {
        col.set_mode(Mode::Stalled);
        Broken::Same(col)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_collector_costs_the_relay_nothing_and_delivery_resumes() {
    healthy_then_faulty("black-holed (SYNs dropped)", async |col| {
        let addr = col.stop().await;
        Broken::Hole(BlackHole::bind_at(addr).await)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_resetting_every_connection_costs_the_relay_nothing() {
    healthy_then_faulty("resetting", async |col| {
        col.set_mode(Mode::Resetting);
        Broken::Same(col)
    })
    .await;
}

/// `heptap serve` on a config file, with its log lines (stderr) as a channel.
struct Served {
    child: std::process::Child,
    log: std::sync::mpsc::Receiver<String>,
}

impl Served {
    fn start(file: &std::path::Path) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(heptap_tests::heptap_bin())
            .args(["serve", "-c"])
            .arg(file)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        let err = std::io::BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut served = Served { child, log };
        served.wait_for("heptap is ready");
        served
    }

    /// Log lines up to the first containing `text`; panics after WAIT with what was logged.
    fn wait_for(&mut self, text: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(text);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no log line with {text:?}; logged:\n{}", seen.join("\n")),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One relayed round trip through `listen`, and the node name of its ACCEPTED event.
async fn relayed_and_traced(listen: SocketAddr, col: &mut UdpCollector) -> String {
    let mut client = TcpStream::connect(listen).await.unwrap();
    let me = client.local_addr().unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    client.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
    let got = col
        .until(WAIT, |got| got.iter().any(|p| p.src() == Some(me)))
        .await;
    let accepted = got.iter().find(|p| p.src() == Some(me)).unwrap();
    String::from_utf8_lossy(accepted.node_name.as_deref().unwrap_or(b"")).into_owned()
}

#[tokio::test]
async fn sighup_with_a_broken_config_file_keeps_the_old_config_running_and_logs_why() {
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let listen = closed_port().await;
    let file = dir.path().join("heptap.toml");
    let mi = dir.mi_toml(false);
    let col_addr = col.addr;
    let text = |node: &str, destination: &str| {
        format!(
            "[hep]\nnode_name = \"{node}\"\n[hep.ids]\ncol = \"[col] {}; transport=udp\"\n\n\
             [[listener]]\nproto = \"tcp\"\nlisten = \"{listen}\"\nupstream = \"{}\"\n\n\
             [net.tcp]\ntrace_on = true\ntrace_destination = \"{destination}\"\n\n{mi}",
            col_addr, up.addr
        )
    };
    std::fs::write(&file, text("first", "col")).unwrap();
    let mut heptap = Served::start(&file);
    assert_eq!(relayed_and_traced(listen, &mut col).await, "first");

    // A config naming a destination that does not exist: refused, logged, the old one stays.
    std::fs::write(&file, text("second", "nowhere")).unwrap();
    heptap.signal("-HUP");
    let logged = heptap.wait_for("Reload refused, the old config keeps running");
    let logged = [logged, heptap.wait_for("nowhere")].concat();
    eprintln!("logged:\n{}", logged.join("\n"));
    assert_eq!(
        relayed_and_traced(listen, &mut col).await,
        "first",
        "the old config keeps tracing"
    );

    // Fixed: the next SIGHUP applies it.
    std::fs::write(&file, text("second", "col")).unwrap();
    heptap.signal("-HUP");
    heptap.wait_for("Config reloaded");
    assert_eq!(relayed_and_traced(listen, &mut col).await, "second");
    heptap.signal("-TERM");
    let status = heptap.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
