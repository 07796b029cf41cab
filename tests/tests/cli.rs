//! The `heptap` binary as a user runs it: `--version`, `check-config`, `hep-dump`, and `serve`
//! on a config whose events go to the `stdout` destination.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use heptap_hep::{Encoder, PayloadMode, TraceMessage, Version, proto_type};
use heptap_testkit::eventually_blocking;
use heptap_tests::heptap_bin;
use heptap_tests::interop::HepDump;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn sip_message(n: u32) -> TraceMessage {
    TraceMessage::new(
        proto_type::SIP,
        17,
        "10.0.0.1:5060".parse().unwrap(),
        "10.0.0.2:5070".parse().unwrap(),
        1_700_000_000 + n,
        n,
    )
    .correlation(format!("call-{n}"))
    .payload(format!("INVITE sip:{n}@x SIP/2.0\r\nCall-ID: call-{n}\r\n\r\n").into_bytes())
}

fn encode(version: Version, msg: &TraceMessage) -> Vec<u8> {
    let mut e = Encoder::new(version);
    e.mode = PayloadMode::Json { pretty: false };
    e.capture_id = 77;
    let mut out = Vec::new();
    e.encode(msg, &mut out).unwrap();
    out
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn version_prints_the_package_version() {
    let out = Command::new(heptap_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("heptap {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_accepts_the_builtin_default_and_the_packaged_example() {
    let out = Command::new(heptap_bin())
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/heptap.toml");
    let out = Command::new(heptap_bin())
        .args(["check-config", "-c", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_lists_every_error_with_its_key_and_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[hep.ids]\nhomer = \"[homer] 10.0.0.5:9060; transport=sctp\"\n\n\
         [net.tcp]\nbogus = 1\n\n[[listener]]\nproto = \"sctp\"\n",
    )
    .unwrap();
    let out = Command::new(heptap_bin())
        .args(["check-config", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hep.ids.homer"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("sctp"), "{err}");
    assert!(err.contains("net.tcp"), "{err}");
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("listener[0].proto"), "{err}");
}

/// The file: what once took four runs (types, then references, then routes) comes in
/// one, the route name at its own line (not "built-in default"), with `-c` before the
/// subcommand and with `-t` alike.
#[test]
fn check_config_shows_types_references_and_route_names_in_one_run_and_takes_t_and_c_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[hep]
hep_capture_id = \"lots\"

[hep.ids]
homer = \"udp:10.0.0.1:9060\"

\
         [tracer]
trace_id = \"[tid]uri=hep:homer\"

[routes]
inline = \"route[a] { drop; }\"

\
         [net.tcp]
trace_on = true
trace_destination = \"homer\"
trace_filter_route = \"b\"

\
         [[listener]]
proto = \"tcp\"
listen = \"127.0.0.1:5062\"
upstream = \"127.0.0.1:5060\"
\
         sip_trace_id = \"nope\"
max_connections = -1
",
    )
    .unwrap();
    let mut outputs = Vec::new();
    for args in [
        vec!["-c", path.to_str().unwrap(), "check-config"],
        vec!["check-config", "-c", path.to_str().unwrap()],
        vec!["-t", "-c", path.to_str().unwrap()],
    ] {
        let out = Command::new(heptap_bin()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        outputs.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let err = &outputs[0];
    for line in [
        "hep.hep_capture_id (FILE line 2): expected a whole number from 0 to 4294967295, found \"lots\"",
        "hep.ids.homer (FILE line 5): bad destination: 'udp:10.0.0.1:9060' is a URI",
        "net.tcp.trace_filter_route (FILE line 16): unknown route 'b'",
        "listener[0].sip_trace_id (FILE line 22): unknown trace_id 'nope'",
        "listener[0].max_connections (FILE line 23): expected a whole number (0 or more), found -1",
    ] {
        let line = line.replace("FILE", &path.display().to_string());
        assert!(err.contains(&line), "{line}\nnot in:\n{err}");
    }
    assert_eq!(err.lines().count(), 5, "{err}");
    assert!(outputs.iter().all(|o| o == err), "{outputs:#?}");
    // -t with the built-in default, and -t beside another subcommand.
    let out = Command::new(heptap_bin()).arg("-t").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    let out = Command::new(heptap_bin())
        .args(["-t", "hep-dump", "--listen", "udp:127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_route_that_does_not_compile_is_refused_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.cfg");
    std::fs::write(
        &routes,
        "route[net_filter] {\n    if ($foo == 1) drop;\n}\n",
    )
    .unwrap();
    let cfg = dir.path().join("heptap.toml");
    std::fs::write(
        &cfg,
        format!(
            "[routes]\nfiles = [\"{}\"]\n\n[net.tcp]\ntrace_on = true\ntrace_destination = \"stdout\"\ntrace_filter_route = \"net_filter\"\n",
            routes.display()
        ),
    )
    .unwrap();
    let out = Command::new(heptap_bin())
        .args(["check-config", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes.cfg:2:"), "{err}");
    assert!(err.contains("$foo"), "{err}");
}

#[test]
fn hep_dump_prints_v1_v2_and_v3_from_udp_and_coalesced_frames_from_tcp() {
    let mut dump = HepDump::start(&["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = dump.udp.unwrap();
    for (i, v) in [Version::V1, Version::V2, Version::V3]
        .into_iter()
        .enumerate()
    {
        udp.send_to(&encode(v, &sip_message(i as u32)), to).unwrap();
        let line = json(&dump.next_json(WAIT));
        assert_eq!(line["version"], i + 1, "{line}");
        assert_eq!(line["src_ip"], "10.0.0.1");
        assert_eq!(line["src_port"], 5060);
        assert_eq!(line["dst_port"], 5070);
        if v != Version::V1 {
            // HEPv1 has no time header.
            assert_eq!(line["ts_sec"], 1_700_000_000 + i as u64);
        }
        assert!(
            line["payload"]
                .as_str()
                .unwrap()
                .starts_with(&format!("INVITE sip:{i}@x")),
            "{line}"
        );
    }
    // Three frames in one write, then a fourth split in two writes.
    let mut tcp = TcpStream::connect(dump.tcp.unwrap()).unwrap();
    let mut bytes = Vec::new();
    for n in 10..13 {
        bytes.extend(encode(Version::V3, &sip_message(n)));
    }
    tcp.write_all(&bytes).unwrap();
    let last = encode(Version::V3, &sip_message(13));
    tcp.write_all(&last[..7]).unwrap();
    tcp.flush().unwrap();
    for n in 10..13 {
        let line = json(&dump.next_json(WAIT));
        assert_eq!(line["correlation_id"], format!("call-{n}"));
        assert_eq!(line["capture_id"], 77);
        assert_eq!(line["proto_type"], 1);
    }
    tcp.write_all(&last[7..]).unwrap();
    let line = json(&dump.next_json(WAIT));
    assert_eq!(line["correlation_id"], "call-13");
}

#[test]
fn hep_dump_reports_a_bad_packet_with_peer_and_reason_and_goes_on() {
    let mut dump = HepDump::start(&["udp:127.0.0.1:0"]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = udp.local_addr().unwrap();
    let to = dump.udp.unwrap();
    udp.send_to(b"HEP3\x00\x40garbage", to).unwrap();
    udp.send_to(&encode(Version::V3, &sip_message(1)), to)
        .unwrap();
    let line = json(&dump.next_json(WAIT));
    assert_eq!(line["correlation_id"], "call-1");
    let err = dump
        .stderr_line(&format!("bad packet from udp:{me}"), WAIT)
        .unwrap_or_else(|seen| panic!("no bad-packet report: {seen}"));
    assert!(err.contains("offset"), "the reason names the offset: {err}");
}

#[test]
fn hep_dump_exits_0_on_sigterm() {
    let mut child = Command::new(heptap_bin())
        .args(["hep-dump", "--listen", "udp:127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.starts_with("listening on udp:127.0.0.1:"), "{first}");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx
        .recv_timeout(WAIT)
        .expect("exits within the timeout")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The lines a child writes on one of its pipes, as they come.
fn line_channel(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

/// Reads log lines until heptap says it is ready (panics after WAIT).
fn wait_ready(logs: &mpsc::Receiver<String>) {
    loop {
        let l = logs.recv_timeout(WAIT).expect("heptap reports it is ready");
        if l.contains("heptap is ready") {
            return;
        }
    }
}

/// A free port on 127.0.0.1 (bound, then released; the binary binds it right after).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn serve_traces_connection_events_to_stdout_as_hep_dump_json_lines() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap();
    let listen = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("heptap.toml");
    std::fs::write(
        &cfg,
        format!(
            "[hep]\nhomer5_on = false\n\n\
             [[listener]]\nproto = \"tcp\"\nlisten = \"{listen}\"\nupstream = \"{up}\"\n\n\
             [net.tcp]\ntrace_on = true\ntrace_destination = \"stdout\"\n\n\
             [mi]\nhttp_listen = \"\"\nfifo_name = \"{}\"\nreply_dir = \"{}\"\n",
            dir.path().join("fifo").display(),
            dir.path().display()
        ),
    )
    .unwrap();
    // Started with the soft open-file limit at 1024, as a shell usually leaves it.
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -Sn 1024 && exec \"$0\" \"$@\""])
        .arg(heptap_bin())
        .args(["serve", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_channel(child.stdout.take().unwrap());
    wait_ready(&line_channel(child.stderr.take().unwrap()));
    let client = TcpStream::connect(listen).unwrap();
    let me = client.local_addr().unwrap();
    let (_accepted_upstream, _) = upstream.accept().unwrap();
    let mut events = Vec::new();
    while events.len() < 2 {
        let l = lines.recv_timeout(WAIT).expect("an event line on stdout");
        events.push(json(&l));
    }
    assert_eq!(events[0]["proto_type"], 89);
    assert_eq!(events[0]["src_port"], me.port());
    assert_eq!(events[0]["payload_json"]["Event"], "ACCEPTED");
    // A connect done within 100 ms: one CONNECTED, no CONNECT_START (OpenSIPS's async path).
    assert_eq!(events[1]["payload_json"]["Event"], "CONNECTED");
    assert_eq!(events[1]["src_port"], up.port());
    let pid = child.id().to_string();
    // The soft open-file limit is raised to the hard one (two descriptors per relayed
    // connection; 1024 would refuse connections after about 500).
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(files[3], files[4], "soft == hard: {limits}");
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    drop(client);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx
        .recv_timeout(WAIT)
        .expect("exits within the timeout")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The relay worker threads of a running heptap (`heptap-w<index>`), and tokio's own worker
/// threads (which `serve` no longer starts: its control plane runs on the main thread).
fn worker_threads(pid: u32) -> (usize, usize) {
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim_end().to_owned())
        .collect();
    (
        names.iter().filter(|n| n.starts_with("heptap-w")).count(),
        names.iter().filter(|n| *n == "tokio-rt-worker").count(),
    )
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

#[test]
fn service_workers_sets_how_many_threads_relay_and_the_default_is_one_per_core() {
    let cores = std::thread::available_parallelism().unwrap().get();
    for (workers, expected) in [(Some(1), 1), (Some(3), 3), (None, cores)] {
        let listen = free_port();
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("heptap.toml");
        let service = workers.map_or(String::new(), |w| format!("[service]\nworkers = {w}\n\n"));
        std::fs::write(
            &cfg,
            format!(
                "{service}[[listener]]\nproto = \"tcp\"\nlisten = \"{listen}\"\n\
                 upstream = \"127.0.0.1:9\"\n\n\
                 [mi]\nhttp_listen = \"\"\nfifo_name = \"{}\"\nreply_dir = \"{}\"\n",
                dir.path().join("fifo").display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let mut child = Command::new(heptap_bin())
            .args(["serve", "-c"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env_remove("TOKIO_WORKER_THREADS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_ready(&line_channel(child.stderr.take().unwrap()));
        // The threads exist once the runtime is built, but each names itself when it first
        // runs, which on a busy machine can come after heptap is ready: wait for the names.
        let mut seen = worker_threads(child.id());
        eventually_blocking(
            WAIT,
            format!("{expected} named workers (workers = {workers:?} on {cores} cores)"),
            || {
                seen = worker_threads(child.id());
                seen.0 >= expected
            },
        );
        assert_eq!(
            seen,
            (expected, 0),
            "workers = {workers:?} on {cores} cores"
        );
        // Each worker accepts on a socket of its own, all on the listener's address.
        assert_eq!(
            listening_sockets(listen.port()),
            expected,
            "workers = {workers:?}: one listening socket per worker"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// `[log] format = "json"`: every line heptap logs is one JSON object (for Vector, Fluent Bit
/// and the like), fields by name; and a collector that stays down is reminded about.
#[test]
fn json_logs_are_one_object_per_line_and_a_down_collector_is_reminded_about() {
    let gone = free_port();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap();
    let listen = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("heptap.toml");
    std::fs::write(
        &cfg,
        format!(
            "[log]\nlevel = \"info\"\nformat = \"json\"\n\n\
             [hep]\nbackoff_max = \"100ms\"\ndown_log_interval = \"1s\"\n\n\
             [hep.ids]\ngone = \"[gone] {gone}; transport=tcp\"\n\n\
             [[listener]]\nproto = \"tcp\"\nlisten = \"{listen}\"\nupstream = \"{up}\"\n\n\
             [net.tcp]\ntrace_on = true\ntrace_destination = \"gone\"\n\n\
             [mi]\nhttp_listen = \"\"\nfifo_name = \"{}\"\nreply_dir = \"{}\"\n",
            dir.path().join("fifo").display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(heptap_bin())
        .args(["serve", "-c"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = line_channel(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut next = || {
        let line = logs.recv_timeout(WAIT).expect("a log line");
        let v = json(&line);
        seen.push(line);
        v
    };
    while next()["fields"]["message"] != "heptap is ready" {}
    // Events for the collector: its lanes try, fail, and the outage is reminded about.
    let _client = TcpStream::connect(listen).unwrap();
    let reminder = loop {
        let v = next();
        let message = v["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if message.starts_with("HEP destination still disconnected for ") {
            break v;
        }
    };
    assert_eq!(reminder["level"], "WARN");
    assert_eq!(reminder["fields"]["hep_id"], "gone");
    assert!(
        reminder["fields"]["down_for_s"].as_u64().unwrap() >= 1,
        "{reminder}"
    );
    assert!(reminder["fields"]["dropped"].is_u64(), "{reminder}");
    assert!(reminder["timestamp"].is_string(), "{reminder}");
    let _ = child.kill();
    let _ = child.wait();
}

/// A dead upstream with many retrying clients: one warning, then one line per interval with
/// how many connections failed, not one line per client.
#[test]
fn a_dead_upstream_is_logged_as_a_count_per_interval_not_a_line_per_client() {
    let dead = free_port();
    let listen = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("heptap.toml");
    std::fs::write(
        &cfg,
        format!(
            "[log]\nlevel = \"info\"\n\n\
             [[listener]]\nproto = \"tcp\"\nlisten = \"{listen}\"\nupstream = \"{dead}\"\n\n\
             [mi]\nhttp_listen = \"\"\nfifo_name = \"{}\"\nreply_dir = \"{}\"\n",
            dir.path().join("fifo").display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(heptap_bin())
        .args(["serve", "-c"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = line_channel(child.stderr.take().unwrap());
    wait_ready(&logs);
    let refused = || {
        // Accepted, then reset: heptap could not reach the upstream.
        let mut c = TcpStream::connect(listen).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        let _ = std::io::Read::read(&mut c, &mut [0u8; 16]);
    };
    for _ in 0..30 {
        refused();
    }
    let started = std::time::Instant::now();
    let mut lines = Vec::new();
    let counted = loop {
        assert!(started.elapsed() < WAIT, "no count line in {lines:#?}");
        refused();
        while let Ok(l) = logs.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
        if let Some(l) = lines
            .iter()
            .find(|l| l.contains("Upstream connect failed for "))
        {
            break l.clone();
        }
    };
    let failed: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("Upstream connect failed"))
        .collect();
    // The first failure, then the count: two lines for 30 and more clients.
    assert_eq!(failed.len(), 2, "{failed:#?}");
    assert!(failed[0].contains("WARN"), "{}", failed[0]);
    let n: u64 = counted
        .split("Upstream connect failed for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(n >= 30, "{counted}");
    assert!(
        counted.contains("connections in the last 10 s or more"),
        "{counted}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
