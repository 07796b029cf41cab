//! The `heptap serve` binary with a disk spool, killed with SIGKILL in the middle of a collector
//! outage and started again: the new process delivers everything the old one had spooled, in
//! order, once; a torn last record is counted, nothing else is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use heptap_hep::Hep3Framer;
use heptap_testkit::{described, eventually_blocking};
use heptap_tests::collector::Scratch;
use heptap_tests::heptap_bin;

/// How long a phase may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);
/// Packets spooled before the kill.
const SPOOLED_BEFORE_KILL: u64 = 20_000;

/// `heptap serve` with its log lines, killed on drop.
struct Heptap {
    child: Child,
    logs: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Heptap {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(heptap_bin())
            .args(["serve", "-c"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = BufReader::new(child.stderr.take().unwrap());
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Heptap {
            child,
            logs,
            seen: Vec::new(),
        }
    }

    fn wait_log(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(l) if l.contains(needle) => {
                    self.seen.push(l);
                    return;
                }
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no {needle:?} in the log:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn log(&mut self) -> String {
        while let Ok(l) = self.logs.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Heptap {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The good records in the spool directory, and how many segments end in damage.
fn on_disk(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let mut records = 0;
    let mut damaged = 0;
    for e in entries.map_while(Result::ok) {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "seg") {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if let Ok(scan) = heptap::sender::scan_spool_segment(&bytes) {
            records += scan.records;
            damaged += u64::from(scan.damaged_bytes > 0);
        }
    }
    (records, damaged)
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

/// A HEP-over-TCP collector on `addr`: the Call-ID number of every SIP packet, in order.
fn collector(addr: SocketAddr, got: Arc<Mutex<Vec<u64>>>) {
    let listener = TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let got = Arc::clone(&got);
            std::thread::spawn(move || {
                let mut framer = Hep3Framer::new();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    framer.push(&buf[..n]);
                    while let Ok(Some(frame)) = framer.next_frame() {
                        let p = heptap_hep::decode(&frame).unwrap();
                        let id = String::from_utf8_lossy(p.correlation_id.as_deref().unwrap())
                            .into_owned();
                        let n = id.strip_prefix("call-").unwrap().parse().unwrap();
                        got.lock().unwrap().push(n);
                    }
                }
            });
        }
    });
}

#[test]
fn sigkill_in_an_outage_then_a_restart_delivers_what_was_spooled_in_order_once() {
    let scratch = Scratch::new();
    let spool_dir = scratch.path().join("spool");
    let homer = free_port();
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    // The proxy: reads and forgets.
    std::thread::spawn(move || {
        for s in upstream.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let listen = free_port();
    let config = scratch.path().join("heptap.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\nworkers = 1\n\
             [[listener]]\nproto = \"tcp\"\nlisten = \"{listen}\"\nupstream = \"{up_addr}\"\n\
             sip_trace_id = \"tid\"\n\n{}\n\
             [hep]\nqueue_packets = 1000\nbackoff_initial = \"20ms\"\nbackoff_max = \"200ms\"\n\
             spool_dir = \"{}\"\nspool_replay_rate = 0\n\
             [hep.ids]\nhomer = \"[homer] {homer}; transport=tcp\"\n\
             [tracer]\ntrace_id = [\"[tid]uri=hep:homer\"]\n",
            scratch.mi_toml(false),
            spool_dir.display()
        ),
    )
    .unwrap();

    let mut first = Heptap::start(&config);
    first.wait_log("heptap is ready");
    // A client sends SIP messages for as long as it can (until heptap is killed), bounded.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(listen).unwrap();
            for i in 0..2_000_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let msg = format!(
                    "OPTIONS sip:x@10.0.0.2 SIP/2.0\r\nCall-ID: call-{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                );
                if s.write_all(msg.as_bytes()).is_err() {
                    break;
                }
            }
        })
    };
    let lane_dir = spool_dir.join("homer");
    eventually_blocking(
        WAIT,
        described(|| {
            format!(
                "{SPOOLED_BEFORE_KILL} packets spooled: {:?}",
                on_disk(&lane_dir)
            )
        }),
        || on_disk(&lane_dir).0 >= SPOOLED_BEFORE_KILL,
    );
    first.kill();
    stop.store(true, Ordering::Relaxed);
    let _ = client.join();

    // A crash in the middle of a write leaves a torn record: tear the newest one for sure.
    let newest = newest_segment(&lane_dir);
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() - 3]).unwrap();
    let (expected, damaged) = on_disk(&lane_dir);
    assert!(damaged >= 1);
    eprintln!(
        "after SIGKILL and a torn last record: {expected} good records on disk, {damaged} damaged segment(s)"
    );

    let got = Arc::new(Mutex::new(Vec::new()));
    collector(homer, Arc::clone(&got));
    let mut second = Heptap::start(&config);
    second.wait_log("heptap is ready");
    eventually_blocking(
        WAIT,
        described(|| format!("{} of {expected} delivered", got.lock().unwrap().len())),
        || got.lock().unwrap().len() as u64 >= expected,
    );
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len() as u64, expected, "more than was spooled");
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "out of order or repeated"
    );
    let log = second.log();
    assert!(log.contains("Taking over a spool segment"), "{log}");
    assert!(log.contains("damaged"), "{log}");
    eventually_blocking(WAIT, "the spool emptied", || on_disk(&lane_dir).0 == 0);
}
