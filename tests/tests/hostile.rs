//! Hostile input at heptap's doors, with its `start()` in-process: malformed TLS ClientHellos,
//! WebSocket upgrades with bad or missing headers, handshakes that trickle in forever
//! (slowloris), silent clients holding every connection slot, and the MI: another user at the
//! FIFO, the HTTP listener's address, half requests on both transports. Each is refused or
//! timed out cleanly, never reaches the upstream, and is traced as the spec says (ACCEPTED with
//! Status FAILURE, then CLOSED).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heptap::{Running, Stop};
use heptap_hep::Packet;
use heptap_testkit::{eventually, write_and_die};
use heptap_tests::collector::{EchoUpstream, Scratch, UdpCollector, WAIT, correlation, event_of};
use heptap_tests::events::part;
use heptap_tests::fault::{ScriptedUpstream, UpstreamScript};
use heptap_tests::taps::{roundtrip, run, run_tap, stat};
use heptap_tests::tls::Pki;
use heptap_tests::ws::{read_head, upgrade_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where nothing must arrive: hostile clients never get an upstream connection.
async fn sink() -> ScriptedUpstream {
    ScriptedUpstream::bind(UpstreamScript::Sink).await
}

/// heptap with one `proto` listener toward `upstream`, its `keys`, traced to a collector.
async fn heptap(
    proto: &str,
    upstream: SocketAddr,
    keys: &str,
    pki: &Pki,
) -> (Running, UdpCollector) {
    let col = UdpCollector::bind().await;
    let heptap = run_tap(proto, upstream, keys, "", &col, pki).await;
    (heptap, col)
}

/// How a hostile connection ended, from the client's side, and how long it took.
#[derive(Debug)]
struct Ended {
    /// What heptap wrote before closing (a TLS alert, an HTTP 400), or the read error.
    outcome: Result<Vec<u8>, std::io::ErrorKind>,
    /// From the first byte sent to the end.
    after: Duration,
}

/// Sends `bytes` in `pieces` bytes at a time, `gap` apart, then (with `then_close`) half-closes;
/// reads whatever comes back until heptap closes.
async fn play(
    listen: SocketAddr,
    bytes: &[u8],
    pieces: usize,
    gap: Duration,
    then_close: bool,
) -> Ended {
    let s = TcpStream::connect(listen).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let started = Instant::now();
    let bytes = bytes.to_vec();
    let writer = tokio::spawn(async move {
        for chunk in bytes.chunks(pieces.max(1)) {
            if w.write_all(chunk).await.is_err() {
                return;
            }
            if !gap.is_zero() {
                // The attacker's pace, not a synchronisation.
                tokio::time::sleep(gap).await;
            }
        }
        if then_close {
            let _ = w.shutdown().await;
        }
        // Keep the write half open until heptap closes the connection.
        std::future::pending::<()>().await;
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, r.read_to_end(&mut got))
        .await
        .expect("heptap ends the connection");
    writer.abort();
    Ended {
        outcome: read.map(|_| got).map_err(|e| e.kind()),
        after: started.elapsed(),
    }
}

/// The events of one connection (by its client leg id), waiting for its CLOSED.
async fn connection_events(col: &mut UdpCollector, seen: &mut Vec<Packet>) -> Vec<Packet> {
    let more = col
        .until(WAIT, |got| got.iter().any(|p| event_of(p) == "CLOSED"))
        .await;
    seen.extend(more);
    let closed = seen
        .iter()
        .position(|p| event_of(p) == "CLOSED")
        .expect("a CLOSED");
    let id = correlation(&seen[closed]);
    let mine: Vec<Packet> = seen
        .iter()
        .filter(|p| correlation(p) == id)
        .cloned()
        .collect();
    seen.retain(|p| correlation(p) != id);
    mine
}

/// An ACCEPTED FAILURE then a CLOSED, and nothing else (no upstream leg).
fn refused_at_the_door(events: &[Packet], what: &str) -> (String, String) {
    let seq: Vec<(String, String)> = events
        .iter()
        .map(|p| (event_of(p), part(p, "Status")))
        .collect();
    assert_eq!(
        seq,
        [
            ("ACCEPTED".to_owned(), "FAILURE".to_owned()),
            ("CLOSED".to_owned(), "SUCCESS".to_owned())
        ],
        "{what}"
    );
    (part(&events[0], "Message"), part(&events[1], "Message"))
}

/// A connection's events: refused at the door because its handshake was not over within the
/// listener's `handshake_timeout` of 500 ms.
fn cut_at_the_handshake_timeout(events: &[Packet], what: &str) {
    let (accepted, closed) = refused_at_the_door(events, what);
    assert!(
        accepted.ends_with("handshake timed out after 500ms"),
        "{accepted}"
    );
    assert_eq!(closed, "Handshake timeout");
}

/// Sends `bytes` to `listen` one byte every 20 ms (slowloris: the whole would take seconds) and
/// checks that heptap ends the connection at its 500 ms handshake timeout (the timeout is for
/// the whole handshake, not per byte) and traces it so.
async fn trickled_and_cut(listen: SocketAddr, col: &mut UdpCollector, bytes: &[u8], what: &str) {
    let ended = play(listen, bytes, 1, Duration::from_millis(20), false).await;
    assert!(
        ended.after >= Duration::from_millis(450) && ended.after < Duration::from_secs(2),
        "{ended:?}"
    );
    let events = connection_events(col, &mut Vec::new()).await;
    cut_at_the_handshake_timeout(&events, what);
}

/// The first flight of a real TLS client (its ClientHello records), as rustls writes it.
fn client_hello(pki: &Pki) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn =
        rustls::ClientConnection::new(pki.client_config(None, None, None), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

#[tokio::test]
async fn malformed_client_hellos_are_refused_at_once_and_traced_as_accepted_failure() {
    let pki = Pki::new();
    let mut up = sink().await;
    let (heptap, mut col) = heptap("tls", up.addr, "", &pki).await;
    let listen = heptap.listen_addrs()[0];
    let hello = client_hello(&pki);
    let mut no_ciphers = hello.clone();
    // After record (5) + handshake header (4) + version (2) + random (32) + session id.
    let sid = usize::from(hello[43]);
    let at = 44 + sid;
    no_ciphers[at..at + 2].copy_from_slice(&[0, 0]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "SIP, not TLS",
            b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        (
            "HTTP, not TLS",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "an SSLv2 ClientHello",
            [
                &[0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15][..],
                &[0u8; 0x2e][..],
            ]
            .concat(),
        ),
        (
            "application data first",
            vec![0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5],
        ),
        (
            "a record longer than TLS allows",
            [&[0x16, 0x03, 0x01, 0xff, 0xff][..], &[0u8; 64][..]].concat(),
        ),
        (
            "an empty handshake record",
            vec![0x16, 0x03, 0x01, 0x00, 0x00],
        ),
        (
            "a ClientHello of garbage",
            [
                &[0x16, 0x03, 0x01, 0x00, 0x30, 0x01, 0x00, 0x00, 0x2c][..],
                &[0xff; 44][..],
            ]
            .concat(),
        ),
        ("a ClientHello with no cipher suite", no_ciphers),
    ];
    let mut seen = Vec::new();
    for (what, bytes) in &cases {
        let ended = play(listen, bytes, bytes.len(), Duration::ZERO, false).await;
        // Refused at once (the handshake timeout is 5 s): an alert and a close, or a reset.
        assert!(
            ended.after < Duration::from_secs(2),
            "{what}: refused at once, not at the timeout: {ended:?}"
        );
        if let Ok(alert) = &ended.outcome {
            assert!(
                alert.is_empty() || alert[0] == 0x15,
                "{what}: nothing or a TLS alert record: {alert:?}"
            );
        }
        let events = connection_events(&mut col, &mut seen).await;
        let (accepted, closed) = refused_at_the_door(&events, what);
        assert!(
            accepted.starts_with("Failed to accept connection... TLS: "),
            "{what}: {accepted}"
        );
        assert!(
            closed.starts_with("TLS handshake failed: "),
            "{what}: {closed}"
        );
        eprintln!(
            "{what}: {:?} after {:?}; traced: {accepted}",
            ended.outcome.as_ref().map(|b| b.len()),
            ended.after
        );
    }
    // Cut short: half a real ClientHello, then EOF.
    let ended = play(
        listen,
        &hello[..hello.len() / 2],
        hello.len(),
        Duration::ZERO,
        true,
    )
    .await;
    assert!(ended.after < Duration::from_secs(2), "{ended:?}");
    let events = connection_events(&mut col, &mut seen).await;
    refused_at_the_door(&events, "half a ClientHello then EOF");
    assert_eq!(
        stat(&heptap, "handshake_failed"),
        Some(cases.len() as u64 + 1)
    );
    assert_eq!(up.live(), 0);
    assert!(up.received.try_recv().is_err(), "no upstream connection");
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_client_hello_trickled_byte_by_byte_is_cut_at_the_handshake_timeout() {
    let pki = Pki::new();
    let up = sink().await;
    let (heptap, mut col) = heptap("tls", up.addr, "handshake_timeout = \"500ms\"", &pki).await;
    let hello = client_hello(&pki);
    let listen = heptap.listen_addrs()[0];
    trickled_and_cut(listen, &mut col, &hello, "slowloris ClientHello").await;
    assert_eq!(up.live(), 0);
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_hundred_silent_tls_clients_do_not_delay_a_real_one_and_all_time_out() {
    let pki = Pki::new();
    let up = EchoUpstream::bind().await;
    let (heptap, _col) = heptap("tls", up.addr, "handshake_timeout = \"1s\"", &pki).await;
    let listen = heptap.listen_addrs()[0];
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(listen).await.unwrap());
    }
    let t = Instant::now();
    let mut real = pki.connect(listen).await;
    let back = roundtrip(&mut real, b"ping").await;
    assert_eq!(&back, b"ping");
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "served while the silent ones still wait: {:?}",
        t.elapsed()
    );
    for mut s in silent {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(WAIT, s.read(&mut b)).await.unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "closed by heptap: {n:?}");
    }
    eventually(WAIT, "100 handshake timeouts counted", || {
        stat(&heptap, "handshake_failed") == Some(100)
    })
    .await;
    drop(real);
    heptap.shutdown(Stop::Immediate).await;
}

/// `upgrade_request` with `edit` applied to its text.
fn upgrade_with(edit: impl Fn(String) -> String) -> Vec<u8> {
    edit(String::from_utf8(upgrade_request("/ws", "sip.test")).unwrap()).into_bytes()
}

#[tokio::test]
async fn bad_websocket_upgrades_get_400_and_are_traced_as_accepted_failure() {
    let pki = Pki::new();
    let mut up = sink().await;
    let (heptap, mut col) = heptap("ws", up.addr, "", &pki).await;
    let listen = heptap.listen_addrs()[0];
    let many_headers = upgrade_with(|t| {
        let extra: String = (0..70).map(|i| format!("X-Pad-{i}: {i}\r\n")).collect();
        t.replacen("\r\n", &format!("\r\n{extra}"), 1)
    });
    let huge_head =
        upgrade_with(|t| t.replacen("\r\n", &format!("\r\nX-Big: {}\r\n", "b".repeat(20_000)), 1));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "no Upgrade header",
            upgrade_with(|t| t.replace("Upgrade: websocket\r\n", "")),
            "Upgrade",
        ),
        (
            "no Connection header",
            upgrade_with(|t| t.replace("Connection: Upgrade\r\n", "")),
            "Connection",
        ),
        (
            "no Sec-WebSocket-Key",
            upgrade_with(|t| t.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")),
            "Key",
        ),
        (
            "a short key",
            upgrade_with(|t| t.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")),
            "Key",
        ),
        (
            "version 8",
            upgrade_with(|t| t.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8")),
            "ersion",
        ),
        (
            "POST",
            upgrade_with(|t| t.replacen("GET", "POST", 1)),
            "GET",
        ),
        (
            "HTTP/1.0",
            upgrade_with(|t| t.replacen("HTTP/1.1", "HTTP/1.0", 1)),
            "HTTP/1.1",
        ),
        (
            "a garbage start line",
            b"\x16\x03\x01\x00\x05hello\r\n\r\n".to_vec(),
            "",
        ),
        ("70 extra headers", many_headers, ""),
        ("a 20 KB head", huge_head, "bytes"),
    ];
    let mut seen = Vec::new();
    for (what, request, why) in &cases {
        let ended = play(listen, request, request.len(), Duration::ZERO, false).await;
        // Every refused client reads the whole 400 and then an orderly end: heptap stops
        // reading a head at 8 KiB, and its lingering close drains the rest instead of closing
        // over unread bytes (which makes the kernel send a reset that can overtake the 400).
        match &ended.outcome {
            Ok(reply) => assert_eq!(
                String::from_utf8_lossy(reply),
                "HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\n\r\n",
                "{what}"
            ),
            Err(e) => panic!("{what}: the client got {e:?} instead of the 400 and an EOF"),
        }
        let events = connection_events(&mut col, &mut seen).await;
        let (accepted, closed) = refused_at_the_door(&events, what);
        assert_eq!(accepted, "Failed to accept connection...", "{what}");
        assert!(
            part(&events[0], "Ws-Reply").starts_with("HTTP/1.1 400 Bad Request"),
            "{what}"
        );
        assert!(
            !part(&events[0], "Ws-Request").is_empty(),
            "{what}: the request is traced"
        );
        assert!(
            closed.starts_with("WebSocket upgrade refused: ") && closed.contains(why),
            "{what}: {closed}"
        );
        eprintln!("{what}: {closed}");
    }
    // Cut short: half an upgrade, then EOF.
    let request = upgrade_request("/ws", "sip.test");
    let ended = play(listen, &request[..40], 40, Duration::ZERO, true).await;
    assert!(ended.after < Duration::from_secs(2), "{ended:?}");
    let events = connection_events(&mut col, &mut seen).await;
    let (accepted, closed) = refused_at_the_door(&events, "half an upgrade then EOF");
    eprintln!("half an upgrade then EOF: {accepted} / {closed}");
    assert_eq!(
        stat(&heptap, "handshake_failed"),
        Some(cases.len() as u64 + 1)
    );
    assert!(up.received.try_recv().is_err(), "no upstream connection");
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn an_upgrade_head_over_8_kib_is_refused_whatever_the_reads() {
    let pki = Pki::new();
    let up = sink().await;
    let (heptap, mut col) = heptap("ws", up.addr, "", &pki).await;
    let request =
        upgrade_with(|t| t.replacen("\r\n", &format!("\r\nX-Big: {}\r\n", "b".repeat(9000)), 1));
    let ended = play(
        heptap.listen_addrs()[0],
        &request,
        request.len(),
        Duration::ZERO,
        false,
    )
    .await;
    let reply = ended.outcome.expect("the 400 and an EOF, not a reset");
    assert!(
        reply.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    let events = connection_events(&mut col, &mut Vec::new()).await;
    refused_at_the_door(&events, "a 9 KB head");
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn an_upgrade_trickled_byte_by_byte_is_cut_at_the_handshake_timeout() {
    let pki = Pki::new();
    let up = sink().await;
    let (heptap, mut col) = heptap("ws", up.addr, "handshake_timeout = \"500ms\"", &pki).await;
    let request = upgrade_request("/ws", "sip.test");
    let listen = heptap.listen_addrs()[0];
    trickled_and_cut(listen, &mut col, &request, "slowloris upgrade").await;
    assert_eq!(up.live(), 0);
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_wss_client_that_finishes_tls_but_never_upgrades_is_cut_at_the_handshake_timeout() {
    let pki = Pki::new();
    let up = sink().await;
    let (heptap, mut col) = heptap("wss", up.addr, "handshake_timeout = \"500ms\"", &pki).await;
    let t = Instant::now();
    let mut client = pki.connect(heptap.listen_addrs()[0]).await;
    // TLS is up; the upgrade starts and never finishes.
    client.write_all(b"GET /ws HTTP/1.1\r\n").await.unwrap();
    client.flush().await.unwrap();
    let head = tokio::time::timeout(WAIT, read_head(&mut client))
        .await
        .unwrap();
    assert!(head.is_err(), "closed without a reply: {head:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let events = connection_events(&mut col, &mut Vec::new()).await;
    cut_at_the_handshake_timeout(&events, "slow WSS upgrade");
    assert_eq!(part(&events[0], "Protocol"), "WSS");
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn silent_tcp_clients_holding_every_slot_keep_the_next_one_at_the_door_until_idle_timeout() {
    let pki = Pki::new();
    let up = EchoUpstream::bind().await;
    let (heptap, _col) = heptap(
        "tcp",
        up.addr,
        "max_connections = 5\nidle_timeout = \"500ms\"",
        &pki,
    )
    .await;
    let listen = heptap.listen_addrs()[0];
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(listen).await.unwrap());
    }
    eventually(WAIT, "five relayed", || stat(&heptap, "active") == Some(5)).await;
    // The kernel accepts the sixth into the backlog; heptap takes it once a slot frees up.
    let t = Instant::now();
    let mut sixth = TcpStream::connect(listen).await.unwrap();
    sixth.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(WAIT, sixth.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"ping");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "served only once the silent ones timed out: {:?}",
        t.elapsed()
    );
    for mut s in silent {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 0, "closed with a FIN");
    }
    assert_eq!(stat(&heptap, "accepted"), Some(6));
    heptap.shutdown(Stop::Immediate).await;
}

/// heptap with its MI inside `dir` (FIFO, and HTTP on 127.0.0.1:0 with `http`), `mi_extra` in
/// its `[mi]` section, and a listener of its own so no default port is taken.
async fn mi_heptap(dir: &Scratch, http: bool, mi_extra: &str) -> (Running, EchoUpstream) {
    let up = EchoUpstream::bind().await;
    let text = format!(
        "[[listener]]\nproto = \"tcp\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n\n{}{mi_extra}\n",
        up.addr,
        dir.mi_toml(http)
    );
    let config = heptap_config::Config::from_toml_str(&text)
        .unwrap_or_else(|e| panic!("test config refused:\n{e}\n{text}"));
    (run(config).await, up)
}

/// `version` over the MI's FIFO with the crate's client.
async fn fifo_version(
    heptap: &Running,
    dir: &Scratch,
    timeout: Duration,
) -> Result<String, String> {
    heptap_mi::fifo_call(
        heptap.mi_fifo().unwrap(),
        dir.path(),
        "version",
        &heptap_mi::Params::None,
        timeout,
    )
    .await
    .map(|r| format!("{:?}", r.result))
    .map_err(|e| e.to_string())
}

/// Runs `script` (sh) as `nobody`; its exit status and stderr.
fn as_nobody(script: &str, arg: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(arg)
        .output()
        .expect("setpriv (util-linux)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
#[ignore = "needs root (runs a FIFO client as another user); .ci/run runs it as root"]
async fn another_user_is_refused_by_the_fifo_mode_and_let_in_only_by_a_wider_one() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: only root can run a client as another user"
    );
    let write = r#"printf '%s' '::{"jsonrpc":"2.0","method":"version"}' > "$1""#;
    for (mode, allowed) in [("", false), ("fifo_mode = \"0666\"\n", true)] {
        let dir = Scratch::new();
        // The directory lets anyone through (its default 0700 would refuse on its own).
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .unwrap();
        let (heptap, _up) = mi_heptap(&dir, false, mode).await;
        let fifo = heptap.mi_fifo().unwrap().clone();
        let (ok, err) = tokio::task::spawn_blocking(move || as_nobody(write, &fifo))
            .await
            .unwrap();
        if allowed {
            assert!(ok, "fifo_mode 0666 lets nobody write: {err}");
        } else {
            assert!(
                !ok && err.contains("Permission denied"),
                "refused by the default 0600: {err}"
            );
        }
        // The MI serves its own user either way.
        assert!(fifo_version(&heptap, &dir, WAIT).await.is_ok());
        heptap.shutdown(Stop::Immediate).await;
    }
}

#[tokio::test]
async fn the_mi_http_listener_is_loopback_unless_http_allow_remote_says_otherwise() {
    let default = heptap_config::Config::default();
    let addr = default.mi.http_listen.expect("HTTP on by default");
    assert!(addr.ip().is_loopback(), "{addr}");
    let refused = heptap_config::Config::from_toml_str("[mi]\nhttp_listen = \"0.0.0.0:8888\"\n")
        .expect_err("refused at load");
    let text = refused.to_string();
    assert!(
        text.contains("mi.http_listen") && text.contains("http_allow_remote"),
        "{text}"
    );
    // (A remote MI needs a bearer token.)
    let dir = Scratch::new();
    let token = private_token_file(&dir);
    let allowed = heptap_config::Config::from_toml_str(&format!(
        "[mi]\nhttp_listen = \"0.0.0.0:8888\"\nhttp_allow_remote = true\nhttp_token_file = \"{}\"\n",
        token.display()
    ))
    .unwrap();
    assert_eq!(
        allowed.mi.http_listen,
        Some("0.0.0.0:8888".parse().unwrap())
    );
}

/// A bearer token file (mode 0600) in `dir`, for a remote MI.
fn private_token_file(dir: &Scratch) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.path().join("mi-token");
    std::fs::write(&file, "5f2b8c0e9d4a4b7e8a1c3d6f0e2b4a69\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    file
}

#[test]
fn a_remote_mi_http_listener_is_logged_as_a_warning() {
    use std::io::BufRead;
    let dir = Scratch::new();
    let file = dir.path().join("heptap.toml");
    std::fs::write(
        &file,
        format!(
            "[[listener]]\nproto = \"tcp\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:9\"\n\n\
             [mi]\nfifo_name = \"{0}/fifo\"\nreply_dir = \"{0}\"\nhttp_listen = \"0.0.0.0:0\"\n\
             http_allow_remote = true\nhttp_token_file = \"{1}\"\n",
            dir.path().display(),
            private_token_file(&dir).display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(heptap_tests::heptap_bin())
        .args(["serve", "-c"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut logged = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !logged
        .iter()
        .any(|l: &String| l.contains("heptap is ready"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => logged.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let warning = logged
        .iter()
        .find(|l| l.contains("WARN") && l.contains("0.0.0.0"))
        .unwrap_or_else(|| panic!("no warning about the remote MI:\n{}", logged.join("\n")));
    assert!(warning.contains("http_allow_remote"), "{warning}");
}

#[tokio::test]
async fn a_fifo_client_killed_mid_request_is_answered_incomplete_and_the_mi_serves_on() {
    let dir = Scratch::new();
    let (heptap, _up) = mi_heptap(&dir, false, "request_timeout = \"5s\"\n").await;
    let fifo = heptap.mi_fifo().unwrap().clone();
    // The dying client's reply FIFO, held open here as the client would have.
    let reply = dir.path().join("dying");
    nix::unistd::mkfifo(&reply, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut rx = tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(&reply)
        .unwrap();
    write_and_die(&fifo, r#":dying:{"jsonrpc":"2.0","id":1,"meth"#).await;
    // After the request timeout (5 s), what it left is answered as incomplete...
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, rx.read_to_end(&mut got))
        .await
        .expect("answered within the request timeout")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error","data":"incomplete request"},"id":null}"#
    );
    // ...and the next client is served at once.
    let t = Instant::now();
    assert!(fifo_version(&heptap, &dir, WAIT).await.is_ok());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_fifo_client_killed_before_reading_its_reply_delays_nobody() {
    let dir = Scratch::new();
    let (heptap, _up) = mi_heptap(&dir, false, "").await;
    let fifo = heptap.mi_fifo().unwrap().clone();
    // A whole request, a reply FIFO nobody will ever open for reading.
    let reply = dir.path().join("gone");
    nix::unistd::mkfifo(&reply, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    write_and_die(&fifo, r#":gone:{"jsonrpc":"2.0","id":1,"method":"ps"}"#).await;
    // The server keeps trying that reply for its reply timeout; others are answered meanwhile.
    let t = Instant::now();
    assert!(fifo_version(&heptap, &dir, WAIT).await.is_ok());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    heptap.shutdown(Stop::Immediate).await;
}

/// A JSON-RPC `version` call over HTTP/1.1 on a new connection; the reply body.
async fn http_version(addr: SocketAddr) -> String {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"version"}"#;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn an_http_client_that_sends_half_a_request_and_leaves_costs_nothing() {
    let dir = Scratch::new();
    let (heptap, _up) = mi_heptap(&dir, true, "").await;
    let addr = heptap.mi_http_addr().unwrap();
    for half in [
        "POST /mi HTTP/1.1\r\nHost: x\r\nContent-Le".to_owned(),
        "POST /mi HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"".to_owned(),
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(half.as_bytes()).await.unwrap();
        drop(s);
        let t = Instant::now();
        let reply = tokio::time::timeout(WAIT, http_version(addr))
            .await
            .unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn half_http_requests_held_open_on_every_connection_slot_do_not_lock_the_mi_out() {
    let dir = Scratch::new();
    let (heptap, _up) = mi_heptap(&dir, true, "request_timeout = \"5s\"\n").await;
    let addr = heptap.mi_http_addr().unwrap();
    // 64 connections (the MI serves 64 at once): half heads, half bodies, silence; all held.
    let mut held = Vec::new();
    for i in 0..64 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let half = match i % 3 {
            0 => "POST /mi HTTP/1.1\r\nHost: x\r\nContent-Le",
            1 => "POST /mi HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"",
            _ => "",
        };
        s.write_all(half.as_bytes()).await.unwrap();
        held.push(s);
    }
    // A real client still gets its answer, after the request timeout (5 s) at the latest.
    let t = Instant::now();
    let reply = tokio::time::timeout(WAIT, http_version(addr))
        .await
        .expect("the MI answers despite the held connections");
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    eprintln!(
        "answered after {:?} with 64 half requests held",
        t.elapsed()
    );
    // Each held connection was closed by heptap (some with a 408 first).
    for mut s in held {
        let mut rest = Vec::new();
        let r = tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await;
        assert!(r.is_ok(), "heptap closed the held connection");
    }
    heptap.shutdown(Stop::Immediate).await;
}
