//! A UDP collector that comes back after an outage, against a real collector socket on
//! 127.0.0.1 with the kernel's default receive buffer, reading about 20,000 packets a second:
//! what heptap queued meanwhile goes out at `udp_replay_rate`, not in one burst, so the
//! collector receives (nearly) everything heptap counts as sent. Waits are for conditions,
//! bounded in time; the load is bounded in count.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use heptap::Stats;
use heptap::sender::{self, DestinationSpec, FileOwner, Limits, Offer, Sender, SenderCounters};
use heptap_config::{Destination, HepId};
use heptap_hep::{Encoder, TraceMessage};
use heptap_testkit::{described, eventually};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// How long a phase may take before the test fails.
const LIMIT: Duration = Duration::from_secs(60);

/// What the test collector reads per second at most: a collector about as fast as a busy
/// heplify-server instance (the figure).
const COLLECTOR_RATE: f64 = 20_000.0;

fn message(seq: u32) -> Arc<TraceMessage> {
    let src: SocketAddr = "10.0.0.1:5060".parse().unwrap();
    let dst: SocketAddr = "10.0.0.2:5060".parse().unwrap();
    Arc::new(
        TraceMessage::new(1, 6, src, dst, 1_700_000_000, seq)
            .correlation(format!("call-{seq}"))
            .payload(
                format!(
                    "OPTIONS sip:probe@10.0.0.2 SIP/2.0\r\nCall-ID: call-{seq}\r\nCSeq: 1 \
                     OPTIONS\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK{seq}\r\n\
                     Content-Length: 0\r\n\r\n"
                )
                .into_bytes(),
            ),
    )
}

fn spec(addr: SocketAddr, udp_replay_rate: u32) -> DestinationSpec {
    let id: HepId = format!("[homer] {addr}; transport=udp").parse().unwrap();
    DestinationSpec {
        name: "homer".to_owned(),
        destination: Destination::Hep(id),
        encoder: Encoder::default(),
        limits: Limits {
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            udp_replay_rate,
            ..Limits::default()
        },
        file_owner: FileOwner::default(),
    }
}

/// A UDP port nothing listens on now.
async fn free_port() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.local_addr().unwrap()
}

/// A collector on `addr` with the default receive buffer, reading at most [`COLLECTOR_RATE`]
/// datagrams a second (it pauses when ahead of that pace, as a busy collector would be
/// elsewhere); counts what it read.
fn slow_collector(addr: SocketAddr, got: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let socket = UdpSocket::bind(addr).await.unwrap();
        let mut buf = vec![0u8; 70_000];
        let start = Instant::now();
        let mut n = 0u64;
        while socket.recv(&mut buf).await.is_ok() {
            n += 1;
            got.store(n, Ordering::Relaxed);
            // The pace, not a synchronisation: every 100 datagrams, wait until the rate
            // allows them.
            if n.is_multiple_of(100) {
                let due = start + Duration::from_secs_f64(n as f64 / COLLECTOR_RATE);
                tokio::time::sleep_until(due).await;
            }
        }
    })
}

async fn offer_all(sender: &Sender, range: std::ops::Range<u32>) {
    let start = Instant::now();
    for i in range {
        let msg = message(i);
        while sender.offer(&msg) != Offer::Queued {
            assert!(start.elapsed() < LIMIT, "packet {i} never queued");
            tokio::task::yield_now().await;
        }
    }
}

fn counters(sender: &Sender) -> SenderCounters {
    sender.state().counters
}

/// Queues `n` packets while the collector is down, brings it back (then offers `live` more,
/// 100 every 25 ms, as traffic going on), and returns (sent, received, how long the sending
/// took) once everything is sent or dropped and the collector has read all it will.
async fn outage(n: u32, live: u32, udp_replay_rate: u32) -> (u64, u64, Duration) {
    let addr = free_port().await;
    let stats = Stats::new();
    let (sender, task) = sender::spawn(spec(addr, udp_replay_rate), &stats).unwrap();
    offer_all(&sender, 0..n).await;
    // Nothing reached a collector that is not there: the probe of each new socket kept the
    // datagram instead of counting it sent.
    assert_eq!(counters(&sender).sent, 0, "{:?}", counters(&sender));

    let got = Arc::new(AtomicU64::new(0));
    let back = Instant::now();
    let serve = slow_collector(addr, got.clone());
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    for from in (n..n + live).step_by(100) {
        tick.tick().await;
        offer_all(&sender, from..(from + 100).min(n + live)).await;
    }
    let n = n + live;
    eventually(
        LIMIT,
        described(|| format!("every packet sent or dropped: {:?}", counters(&sender))),
        || {
            let c = counters(&sender);
            c.sent + c.dropped() >= u64::from(n)
        },
    )
    .await;
    let took = back.elapsed();
    let sent = counters(&sender).sent;
    // The collector reads what is still in its receive buffer; then its count stays put.
    let mut last = (got.load(Ordering::Relaxed), Instant::now());
    eventually(
        Duration::from_secs(10),
        "the collector's count steady for 300 ms",
        || {
            let now = got.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            }
            now >= sent || last.1.elapsed() >= Duration::from_millis(300)
        },
    )
    .await;
    serve.abort();
    task.shutdown(Duration::from_secs(1)).await;
    (sent, got.load(Ordering::Relaxed), took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_reading_20000_a_second_receives_98_percent_of_what_is_counted_sent_after_an_outage()
 {
    let n = 8_000;
    let (sent, received, took) = outage(n, 0, 10_000).await;
    eprintln!(
        "udp_replay_rate 10000: {n} queued during the outage, {sent} sent in {took:?}, \
         {received} received"
    );
    assert_eq!(
        sent,
        u64::from(n),
        "nothing dropped: the queue held the outage"
    );
    assert!(
        received as f64 >= 0.98 * sent as f64,
        "received {received} of {sent} counted as sent"
    );
    // Paced: 8,000 packets at 10,000/s take at least most of 0.8 s, not one burst.
    assert!(took >= Duration::from_millis(600), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaced_the_same_backlog_overruns_the_collectors_receive_buffer() {
    // Why the rate exists: the backlog sent as fast as the socket takes it arrives faster
    // than the collector reads, and its receive buffer (the kernel default) overflows.
    let n = 8_000;
    let (sent, received, took) = outage(n, 0, 0).await;
    eprintln!("udp_replay_rate 0: {n} queued, {sent} sent in {took:?}, {received} received");
    assert_eq!(sent, u64::from(n));
    assert!(
        (received as f64) < 0.98 * sent as f64,
        "received {received} of {sent}: the burst did not overrun the buffer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_going_on_during_the_catch_up_queues_behind_it_and_arrives_too() {
    // 6,000 held at the reconnection, 2,000 more offered at 4,000/s meanwhile.
    let (sent, received, took) = outage(6_000, 2_000, 10_000).await;
    eprintln!("6000 held + 2000 live: {sent} sent in {took:?}, {received} received");
    assert_eq!(sent, 8_000, "nothing dropped");
    assert!(
        received as f64 >= 0.98 * sent as f64,
        "received {received} of {sent} counted as sent"
    );
}
