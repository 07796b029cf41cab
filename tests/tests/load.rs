//! Load: many concurrent relayed connections, then sustained churn, through heptap's `start()`
//! in-process with every connection event traced. Every relayed byte is checked end to end
//! (each connection's payload is regenerated from its seed and compared with the echo), and
//! afterwards heptap's file descriptors and tasks return to their baseline and its memory
//! returns near it.
//!
//! In-process, each relayed connection costs four descriptors (the client, heptap's two legs,
//! the upstream's socket), so 10,000 at once need about 40,100 open files. The test raises its
//! soft limit to what it needs and fails, saying so, when the hard limit is lower: it never
//! runs a smaller load quietly. `HEPTAP_LOAD_CONCURRENT` sets another count on purpose (the
//! figures printed name it).
//!
//! `ten_thousand_...` is the load of the issue, ignored by default (it needs the open-file
//! limit and a minute of two cores): `cargo test -p heptap-tests --release --test load --
//! --ignored --nocapture`. `two_thousand_...` runs the same code at a size any CI allows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use heptap::{Running, Stop};
use heptap_testkit::{described, eventually};
use heptap_tests::collector::Scratch;
use heptap_tests::fault::{open_fds, status_kib};
use heptap_tests::taps::{random_bytes, run, stat, statistic};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// Connects in flight at once (the listen backlog is 1024).
const CONNECTING: usize = 256;
/// Churn connections in flight at once.
const CHURN_PARALLEL: usize = 128;
/// Trace messages per relayed connection: ACCEPTED, CONNECTED, CLOSED x2; plus a
/// CONNECT_START for each upstream connect still pending after 100 ms
/// (`upstream_connect_slow`, see [`net_events`]).
const NET_EVENTS: u64 = 4;

/// The connection events `connections` relayed connections traced.
fn net_events(heptap: &Running, connections: u64) -> u64 {
    NET_EVENTS * connections + stat(heptap, "upstream_connect_slow").unwrap_or(0)
}
/// The whole load must finish within this.
const BUDGET: Duration = Duration::from_secs(240);

/// A UDP HEP sink that only counts datagrams (decoding 5 per connection would cost the test
/// more CPU than heptap).
struct CountingSink {
    addr: SocketAddr,
    count: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingSink {
    async fn bind() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while sock.recv_from(&mut buf).await.is_ok() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        CountingSink { addr, count, task }
    }
}

impl Drop for CountingSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(
    upstream: SocketAddr,
    collector: SocketAddr,
    max: usize,
    dir: &Scratch,
) -> heptap_config::Config {
    let mi = dir.mi_toml(false);
    let text = format!(
        r#"
[hep]
queue_packets = 100000

[hep.ids]
col = "[col] {collector}; transport=udp"

[[listener]]
proto = "tcp"
listen = "127.0.0.1:0"
upstream = "{upstream}"
max_connections = {max}

[net.tcp]
trace_on = true
trace_destination = "col"

{mi}
"#
    );
    heptap_config::Config::from_toml_str(&text).unwrap()
}

/// Raises the open-file soft limit to `needed`, or fails saying why it cannot.
fn enough_open_files(needed: u64, concurrent: usize) {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= needed,
        "this load needs {needed} open files for {concurrent} concurrent connections (4 each \
         in-process: the client, heptap's two legs, the upstream) but the hard limit is {hard}. \
         Raise it (ulimit -Hn, LimitNOFILE=, docker run --ulimit nofile=) or set \
         HEPTAP_LOAD_CONCURRENT to a smaller count on purpose; a smaller load is never run \
         silently."
    );
    if soft < needed {
        setrlimit(Resource::RLIMIT_NOFILE, needed, hard).unwrap();
    }
}

/// The payload of connection `id`, round `round`: 1 to 4096 pseudo-random bytes.
fn payload(id: u64, round: u64) -> Vec<u8> {
    let seed = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round;
    let len = 1 + (u64::from_le_bytes(random_bytes(seed, 8).try_into().unwrap()) % 4096) as usize;
    random_bytes(seed.rotate_left(17), len)
}

/// Sends `data` as one framed message (4-byte length, then the bytes) and reads the echo; it
/// must be identical.
async fn exchange(s: &mut TcpStream, data: &[u8], what: &str) {
    let len = u32::try_from(data.len()).unwrap().to_be_bytes();
    s.write_all(&[&len[..], data].concat())
        .await
        .unwrap_or_else(|e| panic!("{what}: write: {e}"));
    let mut back = vec![0u8; 4 + data.len()];
    s.read_exact(&mut back)
        .await
        .unwrap_or_else(|e| panic!("{what}: read: {e}"));
    assert!(
        back[..4] == len && back[4..] == *data,
        "{what}: relayed bytes differ"
    );
}

/// Asks the upstream to close (a zero length), reads its EOF, then closes: the upstream closes
/// first, as a proxy hanging up does, so the TIME_WAIT states (a minute each) land on the
/// accepting sockets and tens of thousands of churned connections do not use up the ephemeral
/// ports the box shares with whatever else runs.
async fn hang_up(s: &mut TcpStream, what: &str) {
    s.write_all(&[0, 0, 0, 0])
        .await
        .unwrap_or_else(|e| panic!("{what}: write: {e}"));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .await
        .unwrap_or_else(|e| panic!("{what}: read to EOF: {e}"));
    assert!(rest.is_empty(), "{what}: nothing after the last echo");
    s.shutdown()
        .await
        .unwrap_or_else(|e| panic!("{what}: shutdown: {e}"));
}

/// The upstream: echoes framed messages; a zero length means hang up (FIN first, then read to
/// the client's EOF).
struct FramedEcho {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FramedEcho {
    async fn bind() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut len = [0u8; 4];
                    while s.read_exact(&mut len).await.is_ok() {
                        let n = u32::from_be_bytes(len) as usize;
                        if n == 0 {
                            let _ = s.shutdown().await;
                            let mut rest = Vec::new();
                            let _ = s.read_to_end(&mut rest).await;
                            return;
                        }
                        let mut data = vec![0u8; 4 + n];
                        data[..4].copy_from_slice(&len);
                        if s.read_exact(&mut data[4..]).await.is_err()
                            || s.write_all(&data).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        FramedEcho { addr, task }
    }
}

impl Drop for FramedEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Memory and descriptors at one moment.
#[derive(Clone, Copy, Debug)]
struct Gauges {
    rss_kib: u64,
    fds: usize,
}

impl Gauges {
    fn now() -> Self {
        Gauges {
            rss_kib: status_kib("VmRSS"),
            fds: open_fds(),
        }
    }
}

fn hep(heptap: &Running, name: &str) -> u64 {
    statistic(heptap, "hep_col", name).unwrap_or(0)
}

/// What one round of load showed.
#[derive(Clone, Copy, Debug)]
struct Round {
    /// Time to open and check every concurrent connection.
    opened: Duration,
    /// Time for the second exchange on all of them and their close.
    talked: Duration,
    /// Time for the churn.
    churned: Duration,
    /// With every concurrent connection open.
    held: Gauges,
    /// Once everything is closed and settled.
    after: Gauges,
}

/// `concurrent` connections opened and checked, all held at once, a second checked exchange on
/// all of them at once, closed; then `churn` short checked connections, CHURN_PARALLEL at a
/// time. Payload seeds start at `first_id`. Waits until no connection is active and the
/// descriptors are back to `baseline`.
async fn round(
    heptap: &Running,
    concurrent: usize,
    churn: usize,
    first_id: u64,
    baseline: Gauges,
) -> Round {
    let listen = heptap.listen_addrs()[0];
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut opening = Vec::with_capacity(concurrent);
    for i in 0..concurrent as u64 {
        let gate = gate.clone();
        let id = first_id + i;
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let mut s = TcpStream::connect(listen)
                .await
                .unwrap_or_else(|e| panic!("connection {id}: connect: {e}"));
            exchange(&mut s, &payload(id, 0), &format!("connection {id}")).await;
            s
        }));
    }
    let mut open = Vec::with_capacity(concurrent);
    for t in opening {
        open.push(
            tokio::time::timeout(BUDGET, t)
                .await
                .expect("within the budget")
                .unwrap(),
        );
    }
    let opened = started.elapsed();
    assert_eq!(
        stat(heptap, "active"),
        Some(concurrent as u64),
        "every connection relayed at once"
    );
    let held = Gauges::now();

    let started = Instant::now();
    let mut talking = Vec::with_capacity(concurrent);
    for (i, mut s) in open.into_iter().enumerate() {
        let id = first_id + i as u64;
        talking.push(tokio::spawn(async move {
            exchange(
                &mut s,
                &payload(id, 1),
                &format!("connection {id}, second exchange"),
            )
            .await;
            hang_up(&mut s, &format!("connection {id}")).await;
        }));
    }
    for t in talking {
        tokio::time::timeout(BUDGET, t)
            .await
            .expect("within the budget")
            .unwrap();
    }
    let talked = started.elapsed();

    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(CHURN_PARALLEL));
    let mut churning = Vec::with_capacity(churn);
    for i in 0..churn as u64 {
        let gate = gate.clone();
        let id = first_id + concurrent as u64 + i;
        churning.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let mut s = TcpStream::connect(listen)
                .await
                .unwrap_or_else(|e| panic!("churn {id}: connect: {e}"));
            exchange(&mut s, &payload(id, 0), &format!("churn {id}")).await;
            hang_up(&mut s, &format!("connection {id}")).await;
        }));
    }
    for t in churning {
        tokio::time::timeout(BUDGET, t)
            .await
            .expect("within the budget")
            .unwrap();
    }
    let churned = started.elapsed();

    eventually(Duration::from_secs(30), "no active connection", || {
        stat(heptap, "active") == Some(0)
    })
    .await;
    let settled = described(|| {
        format!(
            "file descriptors back to the baseline: {baseline:?} -> {:?}",
            Gauges::now()
        )
    });
    eventually(Duration::from_secs(30), settled, || {
        open_fds() == baseline.fds
    })
    .await;
    let after = Gauges::now();
    Round {
        opened,
        talked,
        churned,
        held,
        after,
    }
}

async fn load(concurrent: usize, churn: usize) {
    let concurrent = std::env::var("HEPTAP_LOAD_CONCURRENT")
        .ok()
        .map(|v| {
            v.parse::<usize>()
                .expect("HEPTAP_LOAD_CONCURRENT is a count")
        })
        .unwrap_or(concurrent);
    enough_open_files(4 * concurrent as u64 + 512, concurrent);
    let up = FramedEcho::bind().await;
    let sink = CountingSink::bind().await;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, sink.addr, concurrent, &dir)).await;
    // One connection first: the destination opens its socket with the first packet.
    let mut warm = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    exchange(&mut warm, b"warm-up", "warm-up").await;
    hang_up(&mut warm, "warm-up").await;
    drop(warm);
    eventually(
        Duration::from_secs(30),
        "the warm-up over and traced",
        || stat(&heptap, "active") == Some(0) && sink.count.load(Ordering::Relaxed) >= NET_EVENTS,
    )
    .await;
    let baseline = Gauges::now();
    // This runtime's tasks and heptap's relay workers' (connections, accept loops, lanes).
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            + heptap.worker_tasks()
    };
    let tasks_before = alive();

    // The same load several times: what one round leaves resident is reused by the next,
    // not added to.
    let rounds: usize = std::env::var("HEPTAP_LOAD_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("HEPTAP_LOAD_ROUNDS is a count"))
        .unwrap_or(3);
    let mut done = Vec::new();
    for r in 0..rounds as u64 {
        let first_id = r * (concurrent + churn) as u64;
        done.push(round(&heptap, concurrent, churn, first_id, baseline).await);
    }
    let peak_kib = status_kib("VmHWM");

    let total = 1 + (rounds * (concurrent + churn)) as u64;
    eventually(
        Duration::from_secs(30),
        "every connection event offered",
        || {
            hep(&heptap, "enqueued") + hep(&heptap, "dropped_queue_full")
                >= net_events(&heptap, total)
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the tasks of the load over",
        || alive() <= tasks_before,
    )
    .await;
    let tasks_after = alive();
    let traced = hep(&heptap, "enqueued");
    let dropped = hep(&heptap, "dropped_queue_full");
    for (n, r) in done.iter().enumerate() {
        eprintln!(
            "LOAD round {}: {concurrent} concurrent opened and checked in {:.1} s, second \
             exchange and close {:.1} s; {churn} churned in {:.1} s ({:.0}/s); RSS KiB: \
             baseline {}, all open {}, after {}; fds: baseline {}, all open {}, after {}",
            n + 1,
            r.opened.as_secs_f64(),
            r.talked.as_secs_f64(),
            r.churned.as_secs_f64(),
            churn as f64 / r.churned.as_secs_f64(),
            baseline.rss_kib,
            r.held.rss_kib,
            r.after.rss_kib,
            baseline.fds,
            r.held.fds,
            r.after.fds,
        );
    }
    eprintln!(
        "LOAD peak RSS {peak_kib} KiB; bytes_in {} bytes_out {}; tasks {tasks_before} -> \
         {tasks_after}; events: {traced} queued, {dropped} dropped, {} received by the sink",
        stat(&heptap, "bytes_in").unwrap_or(0),
        stat(&heptap, "bytes_out").unwrap_or(0),
        sink.count.load(Ordering::Relaxed),
    );
    assert_eq!(tasks_after, tasks_before, "no task left behind");
    assert_eq!(
        traced + dropped,
        net_events(&heptap, total),
        "every connection event queued or counted as dropped"
    );
    assert_eq!(
        stat(&heptap, "bytes_in").unwrap(),
        stat(&heptap, "bytes_out").unwrap() + 4 * total,
        "the echo came back whole (all but each connection's 4-byte hang-up)"
    );
    // Bounded: at most 64 KiB per concurrent connection, both ends of the test included.
    for r in &done {
        let growth = r.held.rss_kib.saturating_sub(baseline.rss_kib);
        assert!(
            growth <= 64 * concurrent as u64,
            "{growth} KiB for {concurrent} connections"
        );
    }
    // Returns: the allocator keeps freed memory for reuse rather than giving it back, so
    // "returns" is measured as reuse: from the second round on, a round leaves less than 1 KiB
    // per connection more resident (what a 1 KiB leak per connection would add). Measured:
    // +/- 0.6 KiB from one round to the next (allocator placement), flat over 12 rounds.
    if let [_, second, later @ ..] = done.as_slice()
        && let Some(last) = later.last()
    {
        let allowed = (concurrent + churn) as u64 * later.len() as u64;
        assert!(
            last.after.rss_kib <= second.after.rss_kib + allowed,
            "memory kept grows round after round: {:?}",
            done.iter().map(|r| r.after.rss_kib).collect::<Vec<_>>()
        );
    }
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "10,000 connections: needs ~40,100 open files (ulimit -Hn) and about a minute; run with --ignored"]
async fn ten_thousand_concurrent_relayed_connections_and_churn_lose_no_byte_and_give_everything_back()
 {
    load(10_000, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_relayed_connections_and_churn_lose_no_byte_and_give_everything_back()
 {
    load(2_000, 2_000).await;
}
