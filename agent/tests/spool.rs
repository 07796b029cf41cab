//! The disk spool of a HEP destination against real collectors on 127.0.0.1: a collector down
//! for a long run gets every packet once, in order, when it returns (TCP and UDP); a second
//! instance sharing the spool directory takes over what the first left; a damaged segment is
//! skipped and counted; a full disk drops and counts without holding the producer. No sleeps:
//! every wait is for a condition, bounded in time; every load loop is bounded in count and time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heptap::Stats;
use heptap::sender::{self, DestinationSpec, FileOwner, Limits, Offer, Sender, SenderCounters};
use heptap_config::{Destination, HepId, HepSpool, Transport};
use heptap_hep::{Encoder, Hep3Framer, Packet, TraceMessage};
use heptap_testkit::{described, eventually};
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a whole load phase may take before the test fails.
const LOAD_LIMIT: Duration = Duration::from_secs(120);

fn message(seq: u32) -> Arc<TraceMessage> {
    let src: SocketAddr = "10.0.0.1:5060".parse().unwrap();
    let dst: SocketAddr = "10.0.0.2:5060".parse().unwrap();
    Arc::new(
        TraceMessage::new(1, 6, src, dst, 1_700_000_000, seq)
            .correlation(format!("call-{seq}"))
            .payload(
                format!("OPTIONS sip:probe@10.0.0.2 SIP/2.0\r\nCall-ID: call-{seq}\r\n\r\n")
                    .into_bytes(),
            ),
    )
}

fn seq(packet: &Packet) -> u32 {
    let id = packet.correlation_id.as_deref().unwrap();
    std::str::from_utf8(id)
        .unwrap()
        .strip_prefix("call-")
        .unwrap()
        .parse()
        .unwrap()
}

fn spool_spec(
    name: &str,
    addr: SocketAddr,
    transport: Transport,
    dir: &Path,
    replay_rate: u32,
) -> DestinationSpec {
    let mut id: HepId = format!("[{name}] {addr}; transport={transport}")
        .parse()
        .unwrap();
    id.spool = Some(HepSpool {
        dir: dir.join(name),
        max_bytes: 1 << 30,
        max_age: Duration::from_secs(3600),
        replay_rate,
    });
    DestinationSpec {
        name: name.to_owned(),
        destination: Destination::Hep(id),
        encoder: Encoder::default(),
        limits: Limits {
            queue_packets: 1000,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            ..Limits::default()
        },
        file_owner: FileOwner::default(),
    }
}

/// A port nothing listens on now (TCP and UDP alike, as far as these tests go).
async fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// What a collector received: sequence numbers in arrival order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<u32>>>);

impl Received {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn all(&self) -> Vec<u32> {
        self.0.lock().unwrap().clone()
    }
}

/// A HEP collector on `addr` (TCP: frames as heplify-server does; UDP: one packet per datagram).
fn collector(addr: SocketAddr, transport: Transport, got: Received) -> JoinHandle<()> {
    match transport {
        Transport::Udp => tokio::spawn(async move {
            let socket = UdpSocket::bind(addr).await.unwrap();
            let mut buf = vec![0u8; 70_000];
            while let Ok(n) = socket.recv(&mut buf).await {
                let p = heptap_hep::decode(&buf[..n]).unwrap();
                got.0.lock().unwrap().push(seq(&p));
            }
        }),
        _ => tokio::spawn(async move {
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            socket.bind(addr).unwrap();
            let listener = socket.listen(16).unwrap();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let got = got.clone();
                tokio::spawn(async move {
                    let mut framer = Hep3Framer::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => framer.push(&buf[..n]),
                        }
                        while let Ok(Some(frame)) = framer.next_frame() {
                            let p = heptap_hep::decode(&frame).unwrap();
                            got.0.lock().unwrap().push(seq(&p));
                        }
                    }
                });
            }
        }),
    }
}

/// Offers `range` in order, each until it is queued (a producer that waits where the relay
/// would drop: what these tests check is that nothing queued is lost). Bounded in time.
async fn offer_all(sender: &Sender, range: std::ops::Range<u32>) {
    let start = Instant::now();
    for i in range {
        let msg = message(i);
        while sender.offer(&msg) != Offer::Queued {
            assert!(start.elapsed() < LOAD_LIMIT, "packet {i} never queued");
            tokio::task::yield_now().await;
        }
    }
}

fn counters(sender: &Sender) -> SenderCounters {
    sender.state().counters
}

fn assert_in_order_once(got: &[u32], n: u32) {
    assert_eq!(got.len(), n as usize, "received {} of {n}", got.len());
    if let Some(i) = got.iter().enumerate().position(|(i, s)| *s != i as u32) {
        panic!(
            "out of order at {i}: {:?}",
            &got[i.saturating_sub(3)..(i + 3).min(got.len())]
        );
    }
}

async fn long_outage(transport: Transport, n: u32, replay_rate: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_port().await;
    let stats = Stats::new();
    let (sender, task) = sender::spawn(
        spool_spec("homer", addr, transport, tmp.path(), replay_rate),
        &stats,
    )
    .unwrap();
    let started = Instant::now();
    offer_all(&sender, 0..n).await;
    eventually(
        LOAD_LIMIT,
        described(|| format!("every packet spooled: {:?}", counters(&sender))),
        || {
            sender
                .state()
                .spool
                .is_some_and(|s| s.records == u64::from(n))
        },
    )
    .await;
    let spool = sender.state().spool.unwrap();
    assert_eq!(spool.mode, "spooling");
    assert!(spool.bytes > 0 && spool.oldest_age.is_some());

    let spooled_in = started.elapsed();
    let got = Received::default();
    let back = Instant::now();
    let serve = collector(addr, transport, got.clone());
    eventually(
        LOAD_LIMIT,
        described(|| format!("{} of {n} received; {:?}", got.len(), counters(&sender))),
        || got.len() >= n as usize,
    )
    .await;
    eprintln!(
        "{transport}: {n} packets spooled in {spooled_in:?} ({} bytes on disk), replayed in {:?} \
         (replay rate {replay_rate}/s, 0 = unlimited)",
        spool.bytes,
        back.elapsed()
    );
    assert_in_order_once(&got.all(), n);
    let c = counters(&sender);
    assert_eq!(c.sent, u64::from(n));
    assert_eq!(c.dropped() - c.dropped_queue_full, 0, "{c:?}");
    eventually(
        Duration::from_secs(10),
        "the spool emptied and its files deleted",
        || {
            sender
                .state()
                .spool
                .is_some_and(|s| s.records == 0 && s.bytes == 0)
                && std::fs::read_dir(tmp.path().join("homer")).unwrap().count() == 0
        },
    )
    .await;
    let report = task.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.abandoned, 0);
    serve.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_collector_down_for_200000_packets_gets_every_one_once_in_order_when_it_returns() {
    long_outage(Transport::Tcp, 200_000, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_collector_down_for_200000_packets_gets_every_one_once_in_order_at_the_replay_rate() {
    // Paced, so the collector's socket buffer is never overrun (what the rate is for).
    long_outage(Transport::Udp, 200_000, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_packets_queue_behind_the_backlog_while_it_is_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_port().await;
    let stats = Stats::new();
    let (sender, task) = sender::spawn(
        spool_spec("homer", addr, Transport::Tcp, tmp.path(), 20_000),
        &stats,
    )
    .unwrap();
    offer_all(&sender, 0..20_000).await;
    eventually(LOAD_LIMIT, "20000 spooled", || {
        sender.state().spool.is_some_and(|s| s.records == 20_000)
    })
    .await;
    let got = Received::default();
    let serve = collector(addr, Transport::Tcp, got.clone());
    // The replay takes about a second at 20000/s: these arrive while it runs.
    eventually(LOAD_LIMIT, "the replay started", || {
        sender.state().spool.is_some_and(|s| s.mode == "replaying")
    })
    .await;
    offer_all(&sender, 20_000..30_000).await;
    eventually(
        LOAD_LIMIT,
        described(|| format!("{} of 30000 received", got.len())),
        || got.len() >= 30_000,
    )
    .await;
    assert_in_order_once(&got.all(), 30_000);
    task.shutdown(Duration::from_secs(2)).await;
    serve.abort();
}

/// Starts a destination on `dir`'s spool whose collector is down, spools `range`, and stops it:
/// its segments stay behind for the next instance.
async fn spool_and_stop(dir: &Path, addr: SocketAddr, range: std::ops::Range<u32>) -> u64 {
    let stats = Stats::new();
    let (sender, task) =
        sender::spawn(spool_spec("homer", addr, Transport::Tcp, dir, 0), &stats).unwrap();
    let n = u64::from(range.end - range.start);
    offer_all(&sender, range).await;
    eventually(LOAD_LIMIT, "all spooled", || {
        sender.state().spool.is_some_and(|s| s.records == n)
    })
    .await;
    let report = task.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.abandoned, 0);
    n
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_spool_directory_and_the_second_takes_over_what_the_first_left() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_port().await;
    // The old process spools while its collector is down...
    let stats_old = Stats::new();
    let (old, old_task) = sender::spawn(
        spool_spec("homer", addr, Transport::Tcp, tmp.path(), 0),
        &stats_old,
    )
    .unwrap();
    offer_all(&old, 0..5_000).await;
    eventually(LOAD_LIMIT, "the old instance spooled", || {
        old.state().spool.is_some_and(|s| s.records == 5_000)
    })
    .await;
    // ...the new one starts on the same directory while the old one still holds its segment:
    // it takes nothing the old one holds.
    let stats_new = Stats::new();
    let (new, new_task) = sender::spawn(
        spool_spec("homer", addr, Transport::Tcp, tmp.path(), 0),
        &stats_new,
    )
    .unwrap();
    offer_all(&new, 5_000..6_000).await;
    eventually(LOAD_LIMIT, "the new instance spooled its own", || {
        new.state().spool.is_some_and(|s| s.records == 1_000)
    })
    .await;
    assert_eq!(new.state().spool.unwrap().adopted, 0);
    // The old one drains away (its memory to disk, its segments closed); the new one adopts
    // them and, once the collector is up, sends them first (they are older).
    old_task.shutdown(Duration::from_secs(2)).await;
    eventually(LOAD_LIMIT, "the old segments adopted", || {
        new.state().spool.is_some_and(|s| s.adopted == 5_000)
    })
    .await;
    let got = Received::default();
    let serve = collector(addr, Transport::Tcp, got.clone());
    eventually(
        LOAD_LIMIT,
        described(|| format!("{} of 6000 received", got.len())),
        || got.len() >= 6_000,
    )
    .await;
    assert_in_order_once(&got.all(), 6_000);
    new_task.shutdown(Duration::from_secs(2)).await;
    serve.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_segment_is_replayed_up_to_the_damage_and_a_foreign_file_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_port().await;
    let n = spool_and_stop(tmp.path(), addr, 0..3_000).await;
    let dir = tmp.path().join("homer");
    let segs = segments(&dir);
    assert!(!segs.is_empty());
    // Tear the last record of the newest segment (a crash in the middle of a write)...
    let last = segs.last().unwrap();
    let bytes = std::fs::read(last).unwrap();
    let scan = sender::scan_spool_segment(&bytes).unwrap();
    std::fs::write(last, &bytes[..bytes.len() - 5]).unwrap();
    // ...and leave a file that is no segment at all where a segment would be.
    let junk = dir.join("seg-00000000000000000000-0000000001-00000000-0000-0000000000.seg");
    std::fs::write(&junk, b"not a segment at all, no header").unwrap();
    std::fs::set_permissions(&junk, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let stats = Stats::new();
    let (sender, task) = sender::spawn(
        spool_spec("homer", addr, Transport::Tcp, tmp.path(), 0),
        &stats,
    )
    .unwrap();
    let got = Received::default();
    let serve = collector(addr, Transport::Tcp, got.clone());
    let expected = n - 1;
    eventually(
        LOAD_LIMIT,
        described(|| {
            format!(
                "{} of {expected} received; {:?}",
                got.len(),
                counters(&sender)
            )
        }),
        || got.len() as u64 >= expected,
    )
    .await;
    assert!(scan.records > 1);
    assert_in_order_once(&got.all(), expected as u32);
    let c = counters(&sender);
    // The torn record and the foreign file: two damaged places, nothing else lost.
    assert_eq!(c.dropped_spool_corrupt, 2, "{c:?}");
    assert_eq!(sender.state().spool.unwrap().adopted, expected);
    assert!(!junk.exists(), "the foreign file is deleted once counted");
    task.shutdown(Duration::from_secs(2)).await;
    serve.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_directory_is_private_and_a_planted_link_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_port().await;
    spool_and_stop(tmp.path(), addr, 0..10).await;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tmp.path().join("homer");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for seg in segments(&dir) {
        assert_eq!(
            std::fs::metadata(&seg).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // A destination directory that is a link somewhere else is not followed.
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), tmp.path().join("linked")).unwrap();
    let stats = Stats::new();
    let err = sender::spawn(
        spool_spec("linked", addr, Transport::Tcp, tmp.path(), 0),
        &stats,
    )
    .unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    // One others may enter is refused too.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = sender::spawn(
        spool_spec("open", addr, Transport::Tcp, tmp.path(), 0),
        &stats,
    )
    .unwrap_err();
    assert!(err.to_string().contains("must be 0700"), "{err}");
}

/// Whether the round trip of `offer` stays small while the spool writes fail: the disk is a
/// 1 MiB tmpfs (root only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (mounts a small tmpfs); .ci/run runs it as root"]
async fn a_full_disk_drops_and_counts_without_holding_the_producer() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs failed");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());

    let addr = free_port().await;
    let stats = Stats::new();
    let (sender, task) =
        sender::spawn(spool_spec("homer", addr, Transport::Tcp, &mnt, 0), &stats).unwrap();
    // Far more than 1 MiB of packets; the producer never waits longer than an offer takes.
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    let mut queued = 0u64;
    for i in 0..100_000u32 {
        let msg = message(i);
        let t = std::time::Instant::now();
        if sender.offer(&msg) == Offer::Queued {
            queued += 1;
        }
        slowest = slowest.max(t.elapsed());
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
        assert!(start.elapsed() < LOAD_LIMIT);
    }
    eventually(
        LOAD_LIMIT,
        described(|| format!("the queue drained; {:?}", counters(&sender))),
        || counters(&sender).queue_depth == 0,
    )
    .await;
    let c = counters(&sender);
    let spool = sender.state().spool.unwrap();
    eprintln!(
        "full disk: {} offered, {} queued, {} spooled, {} dropped as spool_error, {} as \
         queue_full; slowest offer {slowest:?}",
        100_000, c.enqueued, spool.records, c.dropped_spool_error, c.dropped_queue_full
    );
    assert!(c.dropped_spool_error > 0, "{c:?}");
    assert_eq!(
        c.enqueued,
        spool.records + c.dropped_spool_error + c.dropped_spool_full,
        "{c:?} {spool:?}"
    );
    assert!(queued > 0);
    // An offer is a few atomics and a try_send: a disk that refuses writes never shows here.
    assert!(
        slowest < Duration::from_millis(50),
        "an offer took {slowest:?}"
    );
    task.shutdown(Duration::from_secs(1)).await;
}

/// Started as root with `[service] user` set, the spool is the service user's: heptap writes it
/// after the privilege drop and a later run (as that user) must be able to take it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (gives the spool to another user); .ci/run runs it as root"]
async fn started_as_root_the_spool_belongs_to_the_service_user() {
    use std::os::unix::fs::MetadataExt as _;
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: only root gives files to other users"
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a nobody user");
    let owner = FileOwner {
        uid: nobody.uid.as_raw(),
        gid: nobody.gid.as_raw(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_port().await;
    let mut spec = spool_spec("homer", addr, Transport::Tcp, tmp.path(), 0);
    spec.file_owner = owner;
    let stats = Stats::new();
    let (sender, task) = sender::spawn(spec, &stats).unwrap();
    offer_all(&sender, 0..100).await;
    eventually(LOAD_LIMIT, "all spooled", || {
        sender.state().spool.is_some_and(|s| s.records == 100)
    })
    .await;
    task.shutdown(Duration::from_secs(2)).await;
    let dir = tmp.path().join("homer");
    let owned = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owned(&dir), (owner.uid, owner.gid), "{}", dir.display());
    let segs = segments(&dir);
    assert!(!segs.is_empty());
    for seg in segs {
        assert_eq!(owned(&seg), (owner.uid, owner.gid), "{}", seg.display());
    }
}
