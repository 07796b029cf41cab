//! Hand-over to a new process (SIGUSR2, `heptap upgrade`), with the real binary on loopback: the
//! new process takes every listening socket over while the old one drains, so no exchange
//! fails, no connection is cut or refused and every message is traced once; a new process that
//! cannot start leaves the old one serving and says why.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heptap_testkit::eventually;
use heptap_tests::collector::{Scratch, TcpCollector, UdpCollector, correlation};
use heptap_tests::heptap_bin;
use heptap_tests::process::{HeptapProcess, WAIT, alive, field, signal_pid};
use heptap_tests::sip::{SipUpstream, is_sip, read_message};
use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A free port on 127.0.0.1 (bound, then released; heptap binds it right after).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Where one test's heptap listens and traces, and its config file.
struct Setup {
    scratch: Scratch,
    /// The config file.
    cfg: PathBuf,
    /// The relay's listener.
    listen: SocketAddr,
    /// The MI's HTTP listener.
    http: SocketAddr,
    /// `[mi] metrics_listen`.
    metrics: SocketAddr,
    upstream: SipUpstream,
    col: UdpCollector,
}

impl Setup {
    async fn new() -> Self {
        let scratch = Scratch::new();
        let cfg = scratch.path().join("heptap.toml");
        Self {
            cfg,
            scratch,
            listen: free_port(),
            http: free_port(),
            metrics: free_port(),
            upstream: SipUpstream::bind().await,
            col: UdpCollector::bind().await,
        }
    }

    /// Writes the config: a TCP listener with SIP traced to the collector, the MI's FIFO and
    /// HTTP, and `service` keys.
    fn write(&self, service: &str) {
        let dir = self.scratch.path().display();
        let text = format!(
            "[[listener]]\nproto = \"tcp\"\nlisten = \"{}\"\nupstream = \"{}\"\nsip_trace_id = \"tid\"\n\n\
             [hep.ids]\ncol = \"[col] {}; transport=udp\"\n\n\
             [tracer]\ntrace_id = [\"[tid]uri=hep:col\"]\n\n\
             [net.tcp]\ntrace_on = false\n\n\
             [service]\nshutdown_grace = \"2s\"\n{service}\n\n\
             [mi]\nfifo_name = \"{dir}/fifo\"\nreply_dir = \"{dir}\"\nhttp_listen = \"{}\"\n\
             metrics_listen = \"{}\"\n",
            self.listen, self.upstream.addr, self.col.addr, self.http, self.metrics
        );
        std::fs::write(&self.cfg, text).unwrap();
    }

    /// Starts heptap on the config, from `exe`, once it is ready.
    async fn start(&self, exe: &Path) -> HeptapProcess {
        let mut heptap = HeptapProcess::start(exe, &self.cfg, &[]);
        heptap.wait_log(&["heptap is ready"]).await;
        heptap
    }

    fn fifo(&self) -> PathBuf {
        self.scratch.path().join("fifo")
    }
}

/// Sends SIGUSR2 to `heptap` and waits until the new process says it is ready; its pid.
async fn hand_over(heptap: &mut HeptapProcess) -> u32 {
    let pid = heptap.pid;
    hand_over_from(heptap, pid).await
}

/// Sends SIGUSR2 to `old`, `heptap` or a process it led to (whose log comes to `heptap`'s), and
/// waits until the new process says it is ready; its pid.
async fn hand_over_from(heptap: &mut HeptapProcess, old: u32) -> u32 {
    signal_pid(old, Signal::SIGUSR2);
    let ready = heptap.wait_log(&["heptap is ready"]).await;
    let pid: u32 = field(&ready, "pid").unwrap().parse().unwrap();
    assert_ne!(pid, old, "{ready}");
    heptap.also_kill(pid);
    pid
}

/// An OPTIONS request with its own Call-ID (the upstream answers 200 with the same Call-ID).
fn options(call_id: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK{call_id}\r\n\
         From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// One request and its reply on `s`.
async fn exchange(s: &mut TcpStream, call_id: &str) -> Result<(), String> {
    s.write_all(&options(call_id))
        .await
        .map_err(|e| format!("{call_id}: write: {e}"))?;
    let reply = tokio::time::timeout(WAIT, read_message(s))
        .await
        .map_err(|_| format!("{call_id}: no reply within {WAIT:?}"))?
        .ok_or_else(|| format!("{call_id}: the connection closed"))?;
    let text = String::from_utf8_lossy(&reply);
    if text.starts_with("SIP/2.0 200 OK") && text.contains(&format!("Call-ID: {call_id}\r\n")) {
        Ok(())
    } else {
        Err(format!("{call_id}: unexpected reply {text:?}"))
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Exchanges answered on the long-lived connections.
    live_ok: AtomicUsize,
    /// New connections that did their exchange.
    new_ok: AtomicUsize,
    /// New connections refused (or reset) at connect.
    refused: AtomicUsize,
    /// Every failure, said.
    failures: Mutex<Vec<String>>,
    /// Every Call-ID sent.
    call_ids: Mutex<Vec<String>>,
}

impl Tally {
    fn sent(&self, id: &str) {
        self.call_ids.lock().unwrap().push(id.to_owned());
    }

    fn failed(&self, why: String) {
        self.failures.lock().unwrap().push(why);
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
}

/// A connection that exchanges a request every 100 ms until `stop`, then closes.
async fn live_connection(i: usize, listen: SocketAddr, tally: Arc<Tally>, stop: CancellationToken) {
    let mut s = match TcpStream::connect(listen).await {
        Ok(s) => s,
        Err(e) => {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            tally.failed(format!("live {i}: connect: {e}"));
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for n in 0.. {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let id = format!("live-{i}-{n}");
        tally.sent(&id);
        match exchange(&mut s, &id).await {
            Ok(()) => {
                tally.live_ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tally.failed(format!("live {i} (cut?): {e}"));
                return;
            }
        }
    }
}

/// Opens a new connection every 20 ms until `stop`, each doing one exchange, then closing.
async fn new_connections(listen: SocketAddr, tally: Arc<Tally>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut all = tokio::task::JoinSet::new();
    for k in 0.. {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let tally = tally.clone();
        all.spawn(async move {
            let mut s = match TcpStream::connect(listen).await {
                Ok(s) => s,
                Err(e) => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                    tally.failed(format!("new {k}: connect: {e}"));
                    return;
                }
            };
            let id = format!("new-{k}");
            tally.sent(&id);
            match exchange(&mut s, &id).await {
                Ok(()) => {
                    tally.new_ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tally.failed(format!("new {k}: {e}")),
            }
        });
    }
    while all.join_next().await.is_some() {}
}

/// Each Call-ID's SIP packets at the collector: (requests, replies).
fn traced(packets: &[heptap_hep::Packet]) -> BTreeMap<String, (usize, usize)> {
    let mut by_id: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for p in packets.iter().filter(|p| is_sip(p)) {
        let entry = by_id.entry(correlation(p)).or_default();
        if p.payload
            .as_deref()
            .unwrap_or_default()
            .starts_with(b"OPTIONS")
        {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_a_sigusr2_no_exchange_fails_no_connection_is_cut_or_refused_and_every_message_is_traced_once()
 {
    let mut setup = Setup::new().await;
    // The new process runs fewer workers than the old one: it must accept on all 3 sockets
    // it is handed (SO_REUSEPORT keeps sending new connections to each of them).
    setup.write("workers = 3\n");
    let mut old = setup.start(&heptap_bin()).await;

    let tally = Arc::new(Tally::default());
    let stop_live = CancellationToken::new();
    let stop_new = CancellationToken::new();
    let live: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(live_connection(
                i,
                setup.listen,
                tally.clone(),
                stop_live.clone(),
            ))
        })
        .collect();
    let churn = tokio::spawn(new_connections(
        setup.listen,
        tally.clone(),
        stop_new.clone(),
    ));
    let progress = |live: usize, new: usize| {
        let tally = tally.clone();
        move || {
            tally.live_ok.load(Ordering::Relaxed) >= live
                && tally.new_ok.load(Ordering::Relaxed) >= new
        }
    };
    eventually(WAIT, "traffic through the old process", progress(60, 10)).await;

    // Three hand-overs in a row, each new process with another worker count (3 sockets handed
    // to 2 workers, then 2 to 1, then 1 joined by a second), each followed by half a second of
    // both kinds of traffic: the live connections still on the first process, the new ones
    // on the newest.
    let mut serving = old.pid;
    let mut switches = Vec::new();
    for workers in [2, 1, 2] {
        setup.write(&format!("workers = {workers}\n"));
        let (live_at, new_at) = (
            tally.live_ok.load(Ordering::Relaxed),
            tally.new_ok.load(Ordering::Relaxed),
        );
        let signalled = Instant::now();
        let next = hand_over_from(&mut old, serving).await;
        switches.push(signalled.elapsed());
        eventually(
            WAIT,
            "traffic after the hand-over",
            progress(live_at + 100, new_at + 25),
        )
        .await;
        if serving != old.pid {
            // A process in between held only short connections: it is gone once they are.
            eventually(WAIT, "a drained process in between to exit", || {
                !alive(serving)
            })
            .await;
        }
        serving = next;
    }
    let new_pid = serving;
    stop_new.cancel();
    churn.await.unwrap();
    assert!(
        alive(old.pid),
        "the old process drains while its 20 connections live"
    );

    stop_live.cancel();
    for t in live {
        t.await.unwrap();
    }
    let closed = Instant::now();
    let status = old.exit_within(WAIT).await;
    let gone_after = closed.elapsed();
    assert_eq!(status.code(), Some(0), "{}", old.log());
    assert!(
        gone_after < Duration::from_secs(1),
        "the old process exited {gone_after:?} after its last connection closed"
    );
    assert!(old.logged("Drain over: every relayed connection closed; none cut"));

    let failures = tally.failures();
    let (live_ok, new_ok) = (
        tally.live_ok.load(Ordering::Relaxed),
        tally.new_ok.load(Ordering::Relaxed),
    );
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "exchanges failed, cut or refused"
    );
    assert_eq!(tally.refused.load(Ordering::Relaxed), 0);

    // Every request and every reply traced once, by whichever process relayed it.
    let ids: Vec<String> = tally.call_ids.lock().unwrap().clone();
    assert_eq!(ids.len(), live_ok + new_ok);
    let packets = setup
        .col
        .until(WAIT, |got| {
            got.iter().filter(|p| is_sip(p)).count() >= 2 * ids.len()
        })
        .await;
    // Anything more (a message traced twice) would be on its way by now.
    let late = setup.col.drain(Duration::from_millis(200)).await;
    let by_id = traced(&[packets, late].concat());
    let wrong: Vec<_> = ids
        .iter()
        .filter(|id| by_id.get(*id) != Some(&(1, 1)))
        .map(|id| (id, by_id.get(id)))
        .collect();
    assert!(wrong.is_empty(), "not traced exactly once: {wrong:?}");
    assert_eq!(by_id.len(), ids.len(), "traces of Call-IDs nobody sent");
    println!(
        "hand-over under load: {live_ok} exchanges on 20 live connections, {new_ok} new connections, \
         0 failed, 0 cut, 0 refused, {} SIP messages traced once each; old pid {} gone {gone_after:?} \
         after its last connection closed; 3 hand-overs, each new process ready {switches:?} after SIGUSR2",
        2 * ids.len(),
        old.pid
    );
    signal_pid(new_pid, Signal::SIGTERM);
    eventually(WAIT, "the new process to exit on SIGTERM", || {
        !alive(new_pid)
    })
    .await;
}

/// A SIP exchange on a new connection through `listen`, and its two traces at `col`.
async fn relayed_and_traced(listen: SocketAddr, col: &mut UdpCollector, call_id: &str) {
    let mut s = TcpStream::connect(listen).await.unwrap();
    exchange(&mut s, call_id).await.unwrap();
    let got = col
        .until(WAIT, |got| {
            got.iter()
                .filter(|p| is_sip(p) && correlation(p) == call_id)
                .count()
                >= 2
        })
        .await;
    assert_eq!(traced(&got).get(call_id), Some(&(1, 1)));
}

#[tokio::test]
async fn a_sigusr2_with_a_broken_config_leaves_the_old_process_serving_and_logs_why() {
    let mut setup = Setup::new().await;
    setup.write("");
    let mut old = setup.start(&heptap_bin()).await;
    let mut held = TcpStream::connect(setup.listen).await.unwrap();
    exchange(&mut held, "held-1").await.unwrap();

    std::fs::write(&setup.cfg, "[[listener]\nproto = \"tcp\"\n").unwrap();
    old.signal(Signal::SIGUSR2);
    let started = old.wait_log(&["Started the new process"]).await;
    let new_pid: u32 = field(&started, "pid").unwrap().parse().unwrap();
    old.also_kill(new_pid);
    let failed = old.wait_log(&["Hand-over failed"]).await;
    assert!(
        failed.contains("the config is refused") && failed.contains("line 1"),
        "{failed}"
    );
    assert!(failed.contains("keeps serving"), "{failed}");
    eventually(WAIT, "the new process to be gone", || !alive(new_pid)).await;

    // The old process serves as before: the connection it had, and new ones, relayed and traced.
    exchange(&mut held, "held-2").await.unwrap();
    relayed_and_traced(setup.listen, &mut setup.col, "after-failed-handover").await;
    assert!(!old.has_exited());
    assert!(!old.logged("Stopped accepting"), "{}", old.log());
    // Its MI too.
    let url = format!("http://{}/mi", setup.http);
    let ps = heptap_mi::http_call(&url, "ps", &heptap_mi::Params::None, WAIT)
        .await
        .unwrap();
    assert_eq!(ps.result["Processes"][0]["PID"], old.pid);

    drop(held);
    old.signal(Signal::SIGTERM);
    assert_eq!(old.exit_within(WAIT).await.code(), Some(0));
}

/// The status of `GET /metrics` on `addr`, if it answers (blocking, bounded).
fn scrape_status(addr: SocketAddr) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The pid in the MI's `ps` reply.
fn ps_pid(reply: &heptap_mi::Reply) -> u64 {
    reply.result["Processes"][0]["PID"]
        .as_u64()
        .unwrap_or_else(|| panic!("no PID in {}", reply.text))
}

/// How many sockets listen on 127.0.0.1:`port` (state 0A in /proc/net/tcp).
fn listening_sockets(port: u16) -> usize {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")
        })
        .count()
}

#[tokio::test]
async fn after_a_hand_over_the_new_process_answers_the_mi_fifo_and_http_and_holds_the_pid_file() {
    let mut setup = Setup::new().await;
    let pid_file = setup.scratch.path().join("heptap.pid");
    setup.write(&format!(
        "workers = 1\npid_file = \"{}\"\n",
        pid_file.display()
    ));
    let mut old = setup.start(&heptap_bin()).await;
    let url = format!("http://{}/mi", setup.http);
    let (fifo, reply_dir) = (setup.fifo(), setup.scratch.path().to_owned());
    let none = heptap_mi::Params::None;
    let ps = heptap_mi::fifo_call(&fifo, &reply_dir, "ps", &none, WAIT)
        .await
        .unwrap();
    assert_eq!(ps_pid(&ps), u64::from(old.pid));
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        old.pid.to_string()
    );
    assert_eq!(scrape_status(setup.metrics), Some(200), "metrics_listen");
    assert_eq!(listening_sockets(setup.listen.port()), 1);

    // The new process runs one more worker: it adds a socket of its own to the group.
    setup.write(&format!(
        "workers = 2\npid_file = \"{}\"\n",
        pid_file.display()
    ));
    let new_pid = hand_over(&mut old).await;
    // With no connection to drain, the old process is gone at once; the FIFO it served stays,
    // the new process's now.
    assert_eq!(old.exit_within(WAIT).await.code(), Some(0));
    assert!(
        fifo.exists(),
        "the old process removed the FIFO it handed over"
    );
    let ps = heptap_mi::fifo_call(&fifo, &reply_dir, "ps", &none, WAIT)
        .await
        .unwrap();
    assert_eq!(ps_pid(&ps), u64::from(new_pid), "FIFO ps");
    let ps = heptap_mi::http_call(&url, "ps", &none, WAIT).await.unwrap();
    assert_eq!(ps_pid(&ps), u64::from(new_pid), "HTTP ps");
    // metrics_listen was the old process's until it let go; the new one binds it then.
    let metrics = setup.metrics;
    eventually(
        WAIT,
        "GET /metrics answered by the new process",
        move || scrape_status(metrics) == Some(200),
    )
    .await;
    let version = heptap_mi::http_call(&url, "version", &none, WAIT)
        .await
        .unwrap();
    assert!(version.text.contains("heptap"), "{}", version.text);
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        new_pid.to_string()
    );
    assert_eq!(listening_sockets(setup.listen.port()), 2);
    relayed_and_traced(setup.listen, &mut setup.col, "through-the-new-process").await;

    signal_pid(new_pid, Signal::SIGTERM);
    eventually(WAIT, "the new process to exit on SIGTERM", || {
        !alive(new_pid)
    })
    .await;
    assert!(!fifo.exists(), "the new process removes its FIFO at exit");
    assert!(
        !pid_file.exists(),
        "the new process removes its pid file at exit"
    );
}

/// `heptap upgrade` with `args`: its exit code, stdout and stderr.
async fn upgrade(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(heptap_bin())
        .arg("upgrade")
        .args(args)
        .env_remove("HEPTAP_CONFIG")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Puts `script` where heptap was started from (the path a hand-over runs), in one step.
fn replace_binary(exe: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = exe.with_extension("new");
    std::fs::write(&tmp, script).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, exe).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heptap_upgrade_exits_0_taken_over_1_failed_2_no_heptap_3_refused_4_no_outcome() {
    let mut setup = Setup::new().await;
    setup.write("handover_timeout = \"3s\"\n");
    // heptap runs as a link, so the test can put another "binary" where a hand-over looks.
    let exe = setup.scratch.path().join("heptap");
    std::os::unix::fs::symlink(heptap_bin(), &exe).unwrap();
    let mut old = setup.start(&exe).await;
    let pid = |p: u32| p.to_string();

    // 2: not a heptap that takes hand-overs; nothing is signalled (SIGUSR2 would kill it).
    let mut sleeper = tokio::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let (code, _, err) = upgrade(&["--pid", &pid(sleeper.id().unwrap())]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not take hand-overs"), "{err}");
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "the process was signalled"
    );
    sleeper.kill().await.unwrap();

    // 0: taken over; the old process drains the connection it holds.
    let mut held = TcpStream::connect(setup.listen).await.unwrap();
    exchange(&mut held, "held-1").await.unwrap();
    let (code, out, err) = upgrade(&["--pid", &pid(old.pid)]).await;
    assert_eq!(code, 0, "{out}{err}\n{}", old.log());
    // "heptap: pid <new> took over from pid <old>; ..."
    let new_pid: u32 = out
        .lines()
        .find(|l| l.contains("took over"))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or_else(|| panic!("no new pid in {out:?}"));
    assert!(
        out.contains(&format!("took over from pid {}", old.pid)),
        "{out}"
    );
    old.also_kill(new_pid);
    old.wait_log(&["heptap is ready", &format!("pid={new_pid}")])
        .await;

    // 3: the old process drains; it refuses to hand over again.
    let (code, _, err) = upgrade(&["--pid", &pid(old.pid)]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("draining"), "{err}");
    exchange(&mut held, "held-2").await.unwrap();

    // 1: the new process of a hand-over fails (a broken config); the running one serves on.
    std::fs::write(&setup.cfg, "[service]\nworkers = \"many\"\n").unwrap();
    let (code, _, err) = upgrade(&["--pid", &pid(new_pid)]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("config is refused"), "{err}");
    old.wait_log(&["Hand-over failed"]).await;
    relayed_and_traced(setup.listen, &mut setup.col, "after-exit-1").await;

    // 1: a binary that is no heptap: its exit status is the reason.
    setup.write("handover_timeout = \"3s\"\n");
    replace_binary(&exe, "#!/bin/sh\necho 'not heptap' >&2\nexit 3\n");
    let (code, _, err) = upgrade(&["--pid", &pid(new_pid)]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exit status: 3"), "{err}");
    let failed = old.wait_log(&["Hand-over failed"]).await;
    assert!(failed.contains("exited before it was ready"), "{failed}");

    // 4: a new process that never gets ready, watched for less than handover_timeout; and 3:
    // a second upgrade while that one is under way.
    replace_binary(&exe, "#!/bin/sh\nexec sleep 30\n");
    let waiting =
        tokio::spawn(async move { upgrade(&["--pid", &pid(new_pid), "--timeout", "1"]).await });
    let started = old.wait_log(&["Started the new process"]).await;
    let stuck: u32 = field(&started, "pid").unwrap().parse().unwrap();
    old.also_kill(stuck);
    let (code, _, err) = upgrade(&["--pid", &pid(new_pid)]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("already under way"), "{err}");
    let (code, _, err) = waiting.await.unwrap();
    assert_eq!(code, 4, "{err}");
    // The running process gives up on it after handover_timeout, stops it, and serves on.
    let failed = old.wait_log(&["Hand-over failed"]).await;
    assert!(failed.contains("was not ready within 3s"), "{failed}");
    eventually(WAIT, "the stuck process stopped", || !alive(stuck)).await;
    relayed_and_traced(setup.listen, &mut setup.col, "after-exit-4").await;

    drop(held);
    assert_eq!(old.exit_within(WAIT).await.code(), Some(0));
    signal_pid(new_pid, Signal::SIGTERM);
    eventually(WAIT, "the new process to exit on SIGTERM", || {
        !alive(new_pid)
    })
    .await;
}

#[tokio::test]
async fn the_old_process_cuts_what_is_open_after_drain_timeout_and_says_how_many() {
    let setup = Setup::new().await;
    setup.write("drain_timeout = \"1s\"\n");
    let mut old = setup.start(&heptap_bin()).await;
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..3 {
        let mut s = TcpStream::connect(setup.listen).await.unwrap();
        exchange(&mut s, &format!("held-{i}")).await.unwrap();
        held.push(s);
    }
    let new_pid = hand_over(&mut old).await;
    let over = old.wait_log(&["Drain over"]).await;
    assert!(over.contains("cut=3"), "{over}");
    assert_eq!(old.exit_within(WAIT).await.code(), Some(0));
    for mut s in held {
        assert!(
            read_message(&mut s).await.is_none(),
            "cut by the old process"
        );
    }
    let mut s = TcpStream::connect(setup.listen).await.unwrap();
    exchange(&mut s, "after-the-drain").await.unwrap();
    signal_pid(new_pid, Signal::SIGTERM);
    eventually(WAIT, "the new process to exit on SIGTERM", || {
        !alive(new_pid)
    })
    .await;
}

#[tokio::test]
async fn sigterm_to_a_draining_old_process_ends_its_drain_within_shutdown_grace() {
    let setup = Setup::new().await;
    // shutdown_grace is 2s (Setup); the drain would last an hour.
    setup.write("");
    let mut old = setup.start(&heptap_bin()).await;
    let mut held = TcpStream::connect(setup.listen).await.unwrap();
    exchange(&mut held, "held").await.unwrap();
    let new_pid = hand_over(&mut old).await;
    // What systemctl stop does with KillMode=control-group: SIGTERM to both processes.
    let sent = Instant::now();
    old.signal(Signal::SIGTERM);
    signal_pid(new_pid, Signal::SIGTERM);
    let over = old.wait_log(&["Drain over"]).await;
    assert!(over.contains("cut=1"), "{over}");
    assert_eq!(old.exit_within(WAIT).await.code(), Some(0));
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "the old process took {took:?} to stop, its grace is 2s"
    );
    assert!(
        read_message(&mut held).await.is_none(),
        "cut at the end of the grace"
    );
    eventually(WAIT, "the new process to exit on SIGTERM", || {
        !alive(new_pid)
    })
    .await;
}

/// systemd's notify socket: each datagram with the pid that sent it (`SO_PASSCRED`), as
/// systemd checks it against `NotifyAccess=main`.
struct NotifySocket {
    sock: std::os::unix::net::UnixDatagram,
}

impl NotifySocket {
    fn bind(path: &Path) -> Arc<Self> {
        let sock = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        rustix::net::sockopt::set_socket_passcred(&sock, true).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        Arc::new(Self { sock })
    }

    /// The next datagram and its sender's pid (at most [`WAIT`]).
    async fn next(self: &Arc<Self>) -> (String, u32) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.recv())
            .await
            .unwrap()
    }

    fn recv(&self) -> (String, u32) {
        use std::mem::MaybeUninit;
        let mut buf = [0u8; 4096];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
        let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let msg = rustix::net::recvmsg(
            &self.sock,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut control,
            rustix::net::RecvFlags::empty(),
        )
        .expect("an sd_notify datagram");
        let pid = control
            .drain()
            .find_map(|m| match m {
                rustix::net::RecvAncillaryMessage::ScmCredentials(c) => {
                    Some(c.pid.as_raw_nonzero().get() as u32)
                }
                _ => None,
            })
            .expect("the sender's credentials");
        (String::from_utf8_lossy(&buf[..msg.bytes]).into_owned(), pid)
    }
}

#[tokio::test]
async fn systemd_hears_mainpid_from_the_old_process_then_ready_from_the_new_one() {
    let setup = Setup::new().await;
    setup.write("");
    let path = setup.scratch.path().join("notify");
    let notify = NotifySocket::bind(&path);
    let mut old = HeptapProcess::start(
        &heptap_bin(),
        &setup.cfg,
        &[("NOTIFY_SOCKET", path.as_os_str())],
    );
    let (ready, from) = notify.next().await;
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert_eq!(from, old.pid);
    old.wait_log(&["heptap is ready"]).await;

    let new_pid = hand_over(&mut old).await;
    // With NotifyAccess=main systemd hears the main pid only: the old process moves it first...
    let (main_pid, from) = notify.next().await;
    assert_eq!(
        main_pid,
        format!("MAINPID={new_pid}\nSTATUS=Handed over to pid {new_pid}")
    );
    assert_eq!(from, old.pid);
    // ... then the new one, the main process now, says it is ready; the old one says nothing
    // more (a STOPPING=1 from it would stop the unit).
    let (ready, from) = notify.next().await;
    assert_eq!(
        ready,
        format!(
            "READY=1\nSTATUS=Relaying on 1 listener(s); took over from pid {}",
            old.pid
        )
    );
    assert_eq!(from, new_pid);
    assert_eq!(old.exit_within(WAIT).await.code(), Some(0));
    signal_pid(new_pid, Signal::SIGTERM);
    let (stopping, from) = notify.next().await;
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");
    assert_eq!(from, new_pid, "the old process never says STOPPING=1");
    eventually(WAIT, "the new process to exit on SIGTERM", || {
        !alive(new_pid)
    })
    .await;
}

#[tokio::test]
async fn sigterm_drains_for_shutdown_grace_and_logs_how_many_connections_it_cut() {
    let setup = Setup::new().await;
    setup.write("");
    let mut heptap = setup.start(&heptap_bin()).await;
    let mut held = Vec::new();
    for i in 0..2 {
        let mut s = TcpStream::connect(setup.listen).await.unwrap();
        exchange(&mut s, &format!("held-{i}")).await.unwrap();
        held.push(s);
    }
    heptap.signal(Signal::SIGTERM);
    let over = heptap.wait_log(&["Grace period over"]).await;
    assert!(over.contains("cut=2"), "{over}");
    assert_eq!(heptap.exit_within(WAIT).await.code(), Some(0));
}

#[tokio::test]
async fn a_listener_a_reload_added_is_handed_over_and_one_it_removed_is_not() {
    let mut setup = Setup::new().await;
    setup.write("");
    let mut old = setup.start(&heptap_bin()).await;
    // A second listener, added by a reload; the first one removed by the same reload.
    let second = free_port();
    let text = std::fs::read_to_string(&setup.cfg).unwrap().replacen(
        &format!("listen = \"{}\"", setup.listen),
        &format!("listen = \"{second}\""),
        1,
    );
    std::fs::write(&setup.cfg, text).unwrap();
    old.signal(Signal::SIGHUP);
    old.wait_log(&["Config reloaded"]).await;
    relayed_and_traced(second, &mut setup.col, "added-by-reload").await;

    let new_pid = hand_over(&mut old).await;
    assert_eq!(old.exit_within(WAIT).await.code(), Some(0));
    let log = old.log();
    let taken: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Taking the listening sockets over"))
        .collect();
    assert_eq!(taken.len(), 1, "{log}");
    assert!(taken[0].contains(&second.to_string()), "{log}");
    relayed_and_traced(second, &mut setup.col, "after-hand-over").await;
    assert!(
        TcpStream::connect(setup.listen).await.is_err(),
        "the listener the reload removed is not served again"
    );
    signal_pid(new_pid, Signal::SIGTERM);
    eventually(WAIT, "the new process to exit on SIGTERM", || {
        !alive(new_pid)
    })
    .await;
}

/// The disk spool across a hand-over (issue 20): with the collector down, what the old process
/// traced before and during its drain is spooled, the new process spools its own and takes the
/// old one's segments over once they are closed, and when the collector comes back every message
/// of both processes arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_old_process_spooled_is_delivered_by_the_new_one() {
    let setup = Setup::new().await;
    // Nothing listens here until the end: the collector is down for the whole hand-over.
    let hep = free_port();
    let dir = setup.scratch.path().display();
    let text = format!(
        "[[listener]]\nproto = \"tcp\"\nlisten = \"{}\"\nupstream = \"{}\"\nsip_trace_id = \"tid\"\n\n\
         [hep]\nspool_dir = \"{dir}/spool\"\nspool_replay_rate = 0\n\n\
         [hep.ids]\ncol = \"[col] {hep}; transport=tcp\"\n\n\
         [tracer]\ntrace_id = [\"[tid]uri=hep:col\"]\n\n\
         [net.tcp]\ntrace_on = false\n\n\
         [service]\nshutdown_grace = \"2s\"\n\n\
         [mi]\nfifo_name = \"{dir}/fifo\"\nreply_dir = \"{dir}\"\nhttp_listen = \"{}\"\n",
        setup.listen, setup.upstream.addr, setup.http
    );
    std::fs::write(&setup.cfg, text).unwrap();
    let mut heptap = setup.start(&heptap_bin()).await;
    let old = heptap.pid;

    let mut held = TcpStream::connect(setup.listen).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = format!("before-{i}");
        exchange(&mut held, &id).await.unwrap();
        ids.push(id);
    }
    let new = hand_over(&mut heptap).await;
    // The old process drains the held connection (and spools its traces); the new one serves
    // new connections.
    for i in 0..5 {
        let id = format!("during-{i}");
        exchange(&mut held, &id).await.unwrap();
        ids.push(id);
        let id = format!("after-{i}");
        let mut s = TcpStream::connect(setup.listen).await.unwrap();
        exchange(&mut s, &id).await.unwrap();
        ids.push(id);
    }
    drop(held);
    eventually(WAIT, "the old process to be gone", || !alive(old)).await;
    assert!(alive(new));

    // The collector comes back: the new process replays its own spool and the old one's.
    let mut col = TcpCollector::bind_at(hep).await;
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT * 2;
    while traced(&got).len() < ids.len() || traced(&got).values().any(|&(q, r)| q < 1 || r < 1) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "not all traced: {:?}", traced(&got));
        if let Some(p) = col.next(left).await {
            got.push(p);
        }
    }
    let by_id = traced(&got);
    for id in &ids {
        assert_eq!(by_id.get(id), Some(&(1, 1)), "{id}: {by_id:?}");
    }
    assert_eq!(by_id.len(), ids.len(), "{by_id:?}");
    assert!(
        heptap.logged("Taking over a spool segment"),
        "{}",
        heptap.log()
    );
    signal_pid(new, Signal::SIGTERM);
    eventually(WAIT, "the new process to be gone", || !alive(new)).await;
}
