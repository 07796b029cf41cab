//! The `heptap` binary as a service: SIGTERM drains, SIGINT stops at once, SIGHUP reloads,
//! sd_notify tells systemd where heptap is, and a start as root gives every id up to
//! `[service] user`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use heptap_hep::{Packet, decode};
use heptap_testkit::eventually_blocking;
use heptap_tests::collector::{Scratch, event_of};
use heptap_tests::heptap_bin;
use heptap_tests::tls::Pki;

/// How long a test waits for something that should happen at once.
const WAIT: Duration = Duration::from_secs(20);

/// A `heptap serve` child: its log lines as they come, and its exit status once it exits.
struct Heptap {
    /// The child's pid, for signals.
    pid: u32,
    /// stderr, line by line.
    logs: mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
    /// The exit status, sent by the thread that waits on the child.
    exit: mpsc::Receiver<ExitStatus>,
    /// Set once the exit status was received.
    exited: bool,
}

impl Heptap {
    fn start(config: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let mut cmd = Command::new(heptap_bin());
        cmd.args(["serve", "-c"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let pid = child.id();
        let err = BufReader::new(child.stderr.take().unwrap());
        let (log_tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                let _ = log_tx.send(l);
            }
        });
        let (exit_tx, exit) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        Heptap {
            pid,
            logs,
            seen: Vec::new(),
            exit,
            exited: false,
        }
    }

    /// Reads the log until a line contains `needle`; panics with the log after [`WAIT`].
    fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?} within {WAIT:?}; the log:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.pid);
    }

    /// The exit status within `timeout`; panics with the log otherwise.
    fn exit_within(&mut self, timeout: Duration) -> ExitStatus {
        match self.exit.recv_timeout(timeout) {
            Ok(status) => {
                self.exited = true;
                status
            }
            Err(_) => {
                while let Ok(l) = self.logs.try_recv() {
                    self.seen.push(l);
                }
                panic!(
                    "heptap did not exit within {timeout:?}; the log:\n{}",
                    self.seen.join("\n")
                )
            }
        }
    }

    /// Waits for the exit (within [`WAIT`]) and checks it is a clean one, status 0.
    fn exits_0(&mut self) {
        let status = self.exit_within(WAIT);
        assert_eq!(status.code(), Some(0), "{}", self.rest_of_log());
    }

    /// Whether the process has exited (without waiting).
    fn has_exited(&mut self) -> bool {
        if !self.exited && self.exit.try_recv().is_ok() {
            self.exited = true;
        }
        self.exited
    }

    /// The rest of the log once the process has exited.
    fn rest_of_log(&mut self) -> String {
        for l in self.logs.iter() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }
}

impl Drop for Heptap {
    fn drop(&mut self) {
        if !self.has_exited() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

/// A free port on 127.0.0.1 (bound, then released; heptap binds it right after).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A config relaying `listen` to `upstream`, with `extra` TOML appended and the MI inside
/// `scratch` (no HTTP).
fn write_config(
    scratch: &Scratch,
    listen: SocketAddr,
    upstream: SocketAddr,
    extra: &str,
) -> std::path::PathBuf {
    let path = scratch.path().join("heptap.toml");
    std::fs::write(&path, config_text(scratch, listen, upstream, extra)).unwrap();
    path
}

fn config_text(scratch: &Scratch, listen: SocketAddr, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[[listener]]\nproto = \"tcp\"\nlisten = \"{listen}\"\nupstream = \"{upstream}\"\n\n{}\n{extra}\n",
        scratch.mi_toml(false)
    )
}

/// heptap serving a config (in `scratch`) that relays a free port to an upstream listening here,
/// with `extra` TOML, once it has logged that it is ready; the upstream and heptap's address.
fn serving(scratch: &Scratch, extra: &str) -> (Heptap, TcpListener, SocketAddr) {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = free_port();
    let cfg = write_config(scratch, listen, upstream.local_addr().unwrap(), extra);
    let mut heptap = Heptap::start(&cfg, &[]);
    heptap.wait_log("heptap is ready");
    (heptap, upstream, listen)
}

/// Connects a client through heptap and accepts its relayed connection on `upstream`.
fn relayed(listen: SocketAddr, upstream: &TcpListener) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(listen).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let (up, _) = upstream.accept().unwrap();
    up.set_read_timeout(Some(WAIT)).unwrap();
    (client, up)
}

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// Reads until the peer closes (end of stream or reset); returns what arrived before.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return got;
            }
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }
}

/// Tries to connect until the listening socket is closed (connection refused), once heptap has
/// logged that it stopped accepting; panics after [`WAIT`].
fn until_refused(listen: SocketAddr) {
    let refused = format!("{listen} to refuse connections (heptap still accepts)");
    eventually_blocking(WAIT, refused, || match TcpStream::connect(listen) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => true,
        // Queued in the backlog in the instant before the socket closes; heptap no longer
        // accepts, so closing the socket resets it.
        Ok(s) => {
            drop(s);
            false
        }
        Err(e) => panic!("connect: {e}"),
    });
}

#[test]
fn sigterm_stops_accepting_and_lets_an_exchange_in_progress_finish_then_exits_0() {
    let scratch = Scratch::new();
    // A grace far longer than the test waits: the exit below comes from the connection ending.
    let (mut heptap, upstream, listen) =
        serving(&scratch, "[service]\nshutdown_grace = \"120s\"\n");
    let (mut client, mut up) = relayed(listen, &upstream);
    client.write_all(b"REGISTER 1\r\n").unwrap();
    assert_eq!(read_exact(&mut up, 12), b"REGISTER 1\r\n");

    heptap.signal("TERM");
    heptap.wait_log("SIGTERM: draining");
    heptap.wait_log("Stopped accepting");
    until_refused(listen);

    // The exchange in progress goes on, both ways, after SIGTERM.
    up.write_all(b"SIP/2.0 200 OK\r\n").unwrap();
    assert_eq!(read_exact(&mut client, 16), b"SIP/2.0 200 OK\r\n");
    client.write_all(b"BYE\r\n").unwrap();
    assert_eq!(read_exact(&mut up, 5), b"BYE\r\n");
    assert!(
        !heptap.has_exited(),
        "heptap exited with a connection still relaying"
    );

    // The client hangs up: the relay ends, and heptap exits 0 without waiting for the grace.
    drop(client);
    assert_eq!(read_to_close(&mut up), b"");
    drop(up);
    heptap.exits_0();
}

#[test]
fn sigterm_closes_connections_still_open_when_the_grace_ends_and_exits_0() {
    let scratch = Scratch::new();
    let (mut heptap, upstream, listen) =
        serving(&scratch, "[service]\nshutdown_grace = \"700ms\"\n");
    let (mut client, mut up) = relayed(listen, &upstream);
    client.write_all(b"OPTIONS\r\n").unwrap();
    assert_eq!(read_exact(&mut up, 9), b"OPTIONS\r\n");

    let signalled = Instant::now();
    heptap.signal("TERM");
    // Neither side hangs up: heptap closes both when the grace is over, not before.
    assert_eq!(read_to_close(&mut client), b"");
    let closed_after = signalled.elapsed();
    assert!(
        closed_after >= Duration::from_millis(700),
        "closed after {closed_after:?}, before the 700ms grace"
    );
    assert_eq!(read_to_close(&mut up), b"");
    heptap.exits_0();
    assert!(heptap.rest_of_log().contains("Grace period over"));
}

#[test]
fn sigint_stops_at_once_with_connections_open_and_exits_0() {
    let scratch = Scratch::new();
    let (mut heptap, upstream, listen) =
        serving(&scratch, "[service]\nshutdown_grace = \"120s\"\n");
    let (mut client, mut up) = relayed(listen, &upstream);

    heptap.signal("INT");
    // No grace: the relayed connection is cut and heptap is gone long before 120s.
    assert_eq!(read_to_close(&mut client), b"");
    assert_eq!(read_to_close(&mut up), b"");
    heptap.exits_0();
    assert!(!scratch.path().join("fifo").exists(), "the FIFO is removed");
}

/// A HEP collector on a UDP socket of its own.
struct Collector {
    sock: UdpSocket,
}

impl Collector {
    fn bind() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        Collector { sock }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// Packets until one is the `event` of the connection from `client`; panics after [`WAIT`].
    fn event_from(&self, client: SocketAddr, event: &str) -> Packet {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 65536];
        loop {
            assert!(
                Instant::now() < deadline,
                "no {event} from {client} on {}",
                self.addr()
            );
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => panic!("no {event} from {client} on {}: {e}", self.addr()),
            };
            let p = decode(&buf[..n]).unwrap();
            if p.src() == Some(client) && event_of(&p) == event {
                return p;
            }
        }
    }
}

fn traced_to(homer: SocketAddr) -> String {
    format!(
        "[hep]\nhomer5_on = false\n[hep.ids]\nhomer = \"[homer] {homer}; transport=udp; version=3\"\n\n\
         [net.tcp]\ntrace_on = true\ntrace_destination = \"homer\"\n"
    )
}

#[test]
fn sighup_rereads_the_file_and_a_broken_file_is_refused_while_the_old_config_keeps_running() {
    let scratch = Scratch::new();
    let (first, second) = (Collector::bind(), Collector::bind());
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let listen = free_port();
    let cfg = write_config(&scratch, listen, up_addr, &traced_to(first.addr()));
    let mut heptap = Heptap::start(&cfg, &[]);
    heptap.wait_log("heptap is ready");

    let (c1, u1) = relayed(listen, &upstream);
    first.event_from(c1.local_addr().unwrap(), "ACCEPTED");

    // The destination moves to the second collector; the thread count cannot change while
    // running: the rest applies, and the log says what did not, one line per item, and that
    // the config is reloaded only in part.
    let workers = std::thread::available_parallelism().unwrap().get() + 1;
    let moved = format!(
        "{}\n[service]\nworkers = {workers}\n",
        traced_to(second.addr())
    );
    std::fs::write(&cfg, config_text(&scratch, listen, up_addr, &moved)).unwrap();
    heptap.signal("HUP");
    heptap.wait_log(&format!(
        "Reload: not applied: service.workers: {workers} asked, {} running; it takes effect at the next restart",
        workers - 1
    ));
    heptap.wait_log("Reload: applied: hep_id homer: changed");
    heptap.wait_log("Config reloaded in part");
    let (c2, u2) = relayed(listen, &upstream);
    second.event_from(c2.local_addr().unwrap(), "ACCEPTED");

    // A file that does not load is refused with its reason; the second collector still gets
    // the traces.
    std::fs::write(&cfg, "[[listener]\nproto = \"tcp\"\n").unwrap();
    heptap.signal("HUP");
    let refused = heptap.wait_log("Reload refused");
    heptap.wait_log("line 1");
    assert!(refused.contains("old config keeps running"), "{refused}");
    let (c3, u3) = relayed(listen, &upstream);
    second.event_from(c3.local_addr().unwrap(), "ACCEPTED");

    drop((c1, u1, c2, u2, c3, u3));
    heptap.signal("TERM");
    heptap.exits_0();
}

/// `openssl s_client` to heptap's TLS listener at `listen` as `localhost`, trusting `ca`.
fn s_client(listen: SocketAddr, ca: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &listen.to_string(),
        "-servername",
        "localhost",
    ])
    .arg("-CAfile")
    .arg(ca)
    .args(extra);
    cmd
}

/// The subject of the certificate a new `openssl s_client` handshake gets (verified against
/// `ca`), blanks removed: `subject=C=RO,O=heptaptests,CN=localhost`.
fn served_subject(listen: SocketAddr, ca: &Path) -> String {
    let out = s_client(listen, ca, &["-verify_return_error"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no subject in:\n{text}"))
        .replace(' ', "")
}

/// An upstream that echoes every connection, each in a thread of its own.
fn echo_upstream() -> SocketAddr {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in upstream.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                if let Ok(mut r) = s.try_clone() {
                    let mut w = s;
                    let _ = std::io::copy(&mut r, &mut w);
                }
            });
        }
    });
    addr
}

#[test]
fn sighup_serves_a_renewed_certificate_to_the_next_openssl_s_client_while_a_live_one_keeps_exchanging()
 {
    let scratch = Scratch::new();
    let pki = Pki::new();
    let (cert, key) = (
        scratch.path().join("edge.pem"),
        scratch.path().join("edge.key"),
    );
    std::fs::copy(&pki.server.cert_file, &cert).unwrap();
    std::fs::copy(&pki.server.key_file, &key).unwrap();
    let listen = free_port();
    let cfg = scratch.path().join("heptap.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listener]]\nname = \"edge\"\nproto = \"tls\"\nlisten = \"{listen}\"\nupstream = \"{}\"\n\
             [listener.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n{}",
            echo_upstream(),
            cert.display(),
            key.display(),
            scratch.mi_toml(false)
        ),
    )
    .unwrap();
    let mut heptap = Heptap::start(&cfg, &[]);
    heptap.wait_log("heptap is ready");
    assert!(served_subject(listen, &pki.ca_file).ends_with(",CN=localhost"));

    // A call in progress over TLS: openssl s_client relays its stdin and prints what comes back.
    let mut live = s_client(listen, &pki.ca_file, &["-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to_live = live.stdin.take().unwrap();
    let from_live = BufReader::new(live.stdout.take().unwrap());
    let (tx, echoed) = mpsc::channel();
    std::thread::spawn(move || {
        for l in from_live.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let exchange = |to: &mut std::process::ChildStdin, line: &str| {
        to.write_all(format!("{line}\n").as_bytes()).unwrap();
        to.flush().unwrap();
        assert_eq!(echoed.recv_timeout(WAIT).unwrap(), line);
    };
    exchange(&mut to_live, "INVITE before the renewal");

    // The renewal lands (renamed into place, as a deploy hook does) and heptap gets SIGHUP.
    let renewed = pki.issue_server("renewed", "renewed");
    for (from, to) in [(&renewed.cert_file, &cert), (&renewed.key_file, &key)] {
        std::fs::copy(from, to.with_extension("new")).unwrap();
        std::fs::rename(to.with_extension("new"), to).unwrap();
    }
    heptap.signal("HUP");
    heptap.wait_log(
        "Reload: applied: listener edge: TLS files reloaded: new handshakes get the certificate \
         /C=RO/O=heptap tests/CN=renewed, live connections go on",
    );
    heptap.wait_log("Config reloaded");
    assert!(served_subject(listen, &pki.ca_file).ends_with(",CN=renewed"));
    exchange(&mut to_live, "BYE after the renewal");

    let _ = live.kill();
    let _ = live.wait();
    heptap.signal("TERM");
    heptap.exits_0();
}

#[test]
fn ready_is_notified_once_the_listener_accepts_then_reloading_and_stopping() {
    let scratch = Scratch::new();
    let notify_path = scratch.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let next = || {
        let mut buf = [0u8; 4096];
        let n = notify.recv(&mut buf).expect("an sd_notify datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = free_port();
    let cfg = write_config(&scratch, listen, upstream.local_addr().unwrap(), "");
    let mut heptap = Heptap::start(&cfg, &[("NOTIFY_SOCKET", notify_path.as_os_str())]);

    let ready = next();
    assert!(ready.starts_with("READY=1\nSTATUS="), "{ready:?}");
    // READY=1 means bound: the listener accepts and the MI FIFO exists right now.
    let (_client, _up) = relayed(listen, &upstream);
    assert!(scratch.path().join("fifo").exists());

    heptap.signal("HUP");
    assert!(next().starts_with("RELOADING=1\n"));
    assert_eq!(next(), "READY=1\nSTATUS=Config reloaded");

    heptap.signal("INT");
    assert!(next().starts_with("STOPPING=1\n"));
    heptap.exits_0();
}

#[test]
fn a_service_user_that_does_not_exist_stops_start_up_with_its_name_and_exit_1() {
    let scratch = Scratch::new();
    let listen = free_port();
    let cfg = write_config(
        &scratch,
        listen,
        free_port(),
        "[service]\nuser = \"no-such-heptap-user\"\n",
    );
    let mut heptap = Heptap::start(&cfg, &[]);
    let status = heptap.exit_within(WAIT);
    assert_eq!(status.code(), Some(1));
    let log = heptap.rest_of_log();
    assert!(
        log.contains("service.user \"no-such-heptap-user\": no such user"),
        "{log}"
    );
    assert!(TcpStream::connect(listen).is_err(), "nothing was bound");
}

/// The four ids of a `Uid:` or `Gid:` line of /proc/<pid>/status (real, effective, saved, fs).
fn ids(status: &str, key: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

fn id_of(flag: &str, user: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().unwrap();
    assert!(out.status.success(), "id {flag} {user}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    ids(&status, "Uid:")[1] == 0
}

/// A free port below 1024 (binding it proves heptap bound it while still root).
fn free_privileged_port() -> SocketAddr {
    (900..1024)
        .rev()
        .find_map(|p| TcpListener::bind(("127.0.0.1", p)).ok())
        .expect("a free port below 1024")
        .local_addr()
        .unwrap()
}

#[test]
#[ignore = "needs root (drops privileges to nobody); .ci/run runs it as root"]
fn started_as_root_with_service_user_nobody_every_id_of_every_thread_is_nobodys() {
    assert!(running_as_root(), "needs root to drop privileges");
    let (uid, gid) = (id_of("-u", "nobody"), id_of("-g", "nobody"));
    let scratch = Scratch::new();
    // An echo upstream, so the relay is seen working after the drop.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = upstream.accept() {
            let mut r = s.try_clone().unwrap();
            let _ = std::io::copy(&mut r, &mut s);
        }
    });
    let listen = free_privileged_port();
    let cfg = write_config(&scratch, listen, up_addr, "[service]\nuser = \"nobody\"\n");
    let mut heptap = Heptap::start(&cfg, &[]);
    heptap.wait_log("Dropped privileges");
    heptap.wait_log("heptap is ready");

    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{}/task", heptap.pid))
        .unwrap()
        .map(|t| t.unwrap().path())
        .collect();
    assert!(tasks.len() > 1, "a multi-threaded runtime: {tasks:?}");
    for task in tasks {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        assert_eq!(
            ids(&status, "Uid:"),
            [uid; 4],
            "{}: {status}",
            task.display()
        );
        assert_eq!(
            ids(&status, "Gid:"),
            [gid; 4],
            "{}: {status}",
            task.display()
        );
        assert_eq!(
            ids(&status, "Groups:"),
            [gid],
            "{}: {status}",
            task.display()
        );
        for cap in ["CapPrm:", "CapEff:", "CapAmb:"] {
            let line = status.lines().find(|l| l.starts_with(cap)).unwrap();
            assert!(line.ends_with("0000000000000000"), "{line}");
        }
    }
    let fifo = std::fs::metadata(scratch.path().join("fifo")).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&fifo),
            std::os::unix::fs::MetadataExt::gid(&fifo)
        ),
        (uid, gid),
        "the MI FIFO belongs to the user heptap now runs as"
    );

    // The port below 1024 bound as root still relays.
    let mut client = TcpStream::connect(listen).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.write_all(b"OPTIONS sip:x SIP/2.0\r\n").unwrap();
    assert_eq!(read_exact(&mut client, 23), b"OPTIONS sip:x SIP/2.0\r\n");
    drop(client);

    heptap.signal("TERM");
    heptap.exits_0();
}
