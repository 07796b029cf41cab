//! What one WebSocket message may cost heptap (issue 16, hole 6): a message larger than the
//! listener's `max_message_bytes` (default 65,535 bytes, OpenSIPS's largest SIP message), or one
//! still unfinished `message_timeout` after its first byte, closes the side that sent it with
//! 1009 (too big) or 1008 (policy: too slow), the other side as heptap closes it for any
//! failure, and both legs' CLOSED events say why. The last test measures the real binary: ten
//! clients each sending an unfinished 8 MiB fragmented message.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use heptap::{Running, Stop};
use heptap_hep::Packet;
use heptap_tests::collector::{Scratch, UdpCollector, WAIT, event_of};
use heptap_tests::events::part;
use heptap_tests::taps::{connections_over, run_tap, stat};
use heptap_tests::tls::Pki;
use heptap_tests::ws::{Behaviour, WsUpstream, client, read_head, upgrade_request};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

/// OpenSIPS's largest SIP message, heptap's default `max_message_bytes`.
const DEFAULT_MAX: usize = 65_535;

/// Connects and upgrades a WebSocket client through heptap.
async fn ws_client(listen: SocketAddr) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(listen).await.unwrap();
    let request = upgrade_request("/ws", &listen.to_string());
    client(tcp, &request).await.0.expect("upgraded")
}

/// A data frame (`Binary`, or `Continue` after the first fragment) the way a client sends it.
fn fragment(first: bool, fin: bool, payload: Vec<u8>) -> Message {
    let opcode = if first { Data::Binary } else { Data::Continue };
    Message::Frame(Frame::message(payload, OpCode::Data(opcode), fin))
}

/// What the client reads next, within [`WAIT`].
async fn next(ws: &mut WebSocketStream<TcpStream>) -> Option<Message> {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("heptap answered within the timeout")
        .and_then(Result::ok)
}

/// The close frame heptap sent, skipping what came before it.
async fn close_code(ws: &mut WebSocketStream<TcpStream>) -> Option<CloseCode> {
    loop {
        match next(ws).await? {
            Message::Close(frame) => return frame.map(|f| f.code),
            _ => continue,
        }
    }
}

/// The two CLOSED events of a connection, client leg first (the leg without a `net`
/// correlation).
async fn closed_events(col: &mut UdpCollector) -> (Packet, Packet) {
    let got = col
        .until(WAIT, |g| {
            g.iter().filter(|p| event_of(p) == "CLOSED").count() >= 2
        })
        .await;
    let mut closed: Vec<Packet> = got
        .into_iter()
        .filter(|p| event_of(p) == "CLOSED")
        .collect();
    closed.sort_by_key(|p| p.extra_correlation.is_some());
    let upstream = closed.pop().unwrap();
    (closed.pop().unwrap(), upstream)
}

/// The `Message` of both CLOSED events, client leg first.
async fn closed_messages(col: &mut UdpCollector) -> (String, String) {
    let (client, upstream) = closed_events(col).await;
    (part(&client, "Message"), part(&upstream, "Message"))
}

/// heptap with one ws listener (its `keys`) in front of an echo upstream.
async fn echo_tap(keys: &str) -> (Running, UdpCollector, WsUpstream, Pki) {
    let pki = Pki::new();
    let up = WsUpstream::bind(None, Behaviour::Echo).await;
    let col = UdpCollector::bind().await;
    let heptap = run_tap("ws", up.addr, keys, "", &col, &pki).await;
    (heptap, col, up, pki)
}

#[tokio::test]
async fn a_message_over_max_message_bytes_closes_the_client_with_1009_and_says_why() {
    let (heptap, mut col, _up, _pki) = echo_tap("").await;
    let mut ws = ws_client(heptap.listen_addrs()[0]).await;
    // The largest message allowed goes through, both ways.
    let largest = Message::binary(vec![7u8; DEFAULT_MAX]);
    ws.send(largest.clone()).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(largest));
    // One byte more closes the client's side with 1009.
    ws.send(Message::binary(vec![8u8; DEFAULT_MAX + 1]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
    assert_eq!(
        closed_messages(&mut col).await,
        (
            "Message too big: 65536 bytes, max_message_bytes is 65535 (closed with 1009)".into(),
            "Closed by heptap: the client leg ended".into()
        )
    );
    connections_over(&heptap).await;
    assert_eq!(stat(&heptap, "ws_message_too_big"), Some(1));
    assert_eq!(stat(&heptap, "ws_message_timeout"), Some(0));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn fragments_adding_up_to_more_than_max_message_bytes_close_with_1009() {
    let (heptap, mut col, _up, _pki) = echo_tap("max_message_bytes = \"2KiB\"").await;
    let mut ws = ws_client(heptap.listen_addrs()[0]).await;
    ws.send(fragment(true, false, vec![1; 1000])).await.unwrap();
    ws.send(fragment(false, false, vec![2; 1000]))
        .await
        .unwrap();
    // 3,000 bytes: over the 2,048 allowed, although no fragment is.
    ws.send(fragment(false, true, vec![3; 1000])).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
    let (client, _) = closed_messages(&mut col).await;
    assert_eq!(
        client,
        "Message too big: 3000 bytes, max_message_bytes is 2048 (closed with 1009)"
    );
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn an_unfinished_message_is_closed_with_1008_at_message_timeout_though_fragments_trickle() {
    let (heptap, mut col, _up, _pki) = echo_tap("message_timeout = \"400ms\"").await;
    let ws = ws_client(heptap.listen_addrs()[0]).await;
    let (mut tx, mut rx) = ws.split();
    let started = Instant::now();
    tx.send(fragment(true, false, b"INVITE sip:".to_vec()))
        .await
        .unwrap();
    // A fragment every 100 ms: bytes keep coming, the message never ends.
    let trickle = tokio::spawn(async move {
        loop {
            // The attacker's pace, not a synchronisation.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tx
                .send(fragment(false, false, b"x".to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let code = loop {
        match tokio::time::timeout(WAIT, rx.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    let after = started.elapsed();
    assert_eq!(code, Some(CloseCode::Policy));
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );
    trickle.abort();
    assert_eq!(
        closed_messages(&mut col).await,
        (
            "Message not complete within 400ms (closed with 1008)".into(),
            "Closed by heptap: the client leg ended".into()
        )
    );
    connections_over(&heptap).await;
    assert_eq!(stat(&heptap, "ws_message_timeout"), Some(1));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn each_message_has_its_own_clock_so_slow_but_finished_messages_pass() {
    let (heptap, _col, _up, _pki) = echo_tap("message_timeout = \"400ms\"").await;
    let mut ws = ws_client(heptap.listen_addrs()[0]).await;
    // Three messages, each finished 250 ms after it started: 750 ms in all, each in time.
    for i in 0..3u8 {
        ws.send(fragment(true, false, vec![i; 10])).await.unwrap();
        // The client's pace, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(250)).await;
        ws.send(fragment(false, true, vec![i; 10])).await.unwrap();
        assert_eq!(next(&mut ws).await, Some(Message::binary(vec![i; 20])));
    }
    // A ping in the middle of a message does not end it, nor start another clock.
    ws.send(fragment(true, false, vec![9; 5])).await.unwrap();
    ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    ws.send(fragment(false, true, vec![9; 5])).await.unwrap();
    loop {
        match next(&mut ws).await {
            Some(Message::Binary(b)) => {
                assert_eq!(b.to_vec(), vec![9; 10]);
                break;
            }
            Some(Message::Pong(_)) => continue,
            other => panic!("expected the echo, got {other:?}"),
        }
    }
    assert_eq!(stat(&heptap, "ws_message_timeout"), Some(0));
    heptap.shutdown(Stop::Immediate).await;
}

/// An upstream that sends one binary message of `size` bytes after the upgrade, then reports
/// the close code it gets back.
async fn flooding_upstream(
    size: usize,
) -> (SocketAddr, tokio::sync::oneshot::Receiver<Option<u16>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        ws.send(Message::binary(vec![0u8; size])).await.unwrap();
        let mut code = None;
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(frame) = m {
                code = frame.map(|f| u16::from(f.code));
                break;
            }
        }
        let _ = tx.send(code);
    });
    (addr, rx)
}

#[tokio::test]
async fn an_upstream_sending_too_big_a_message_gets_the_1009_and_the_client_is_closed() {
    let pki = Pki::new();
    let (up, code) = flooding_upstream(DEFAULT_MAX + 10).await;
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("ws", up, "", "", &col, &pki).await;
    let mut ws = ws_client(heptap.listen_addrs()[0]).await;
    let got = tokio::time::timeout(WAIT, code).await.unwrap().unwrap();
    assert_eq!(got, Some(1009));
    // The client is closed as for any failure of the other leg: its connection ends.
    let end = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert!(
        !matches!(end, Some(Ok(Message::Binary(_)))),
        "the message was not relayed: {end:?}"
    );
    assert_eq!(
        closed_messages(&mut col).await,
        (
            "Closed by heptap: the upstream leg ended".into(),
            "Message too big: 65545 bytes, max_message_bytes is 65535 (closed with 1009)".into()
        )
    );
    heptap.shutdown(Stop::Immediate).await;
}

/// A data frame as a client writes it: tungstenite's header, masked (the payload goes
/// unmasked: heptap unmasks it into other bytes, which nothing here looks at).
fn raw_frame(first: bool, fin: bool, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        is_final: fin,
        opcode: OpCode::Data(if first { Data::Binary } else { Data::Continue }),
        mask: Some([0x11, 0x22, 0x33, 0x44]),
        ..FrameHeader::default()
    };
    let mut out = Vec::with_capacity(payload.len() + 14);
    header.format(payload.len() as u64, &mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

/// `VmRSS` or `VmHWM` of process `pid`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .unwrap()
}

/// A free port on 127.0.0.1 for the binary's listener (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One attacker: upgrades, then sends `total` bytes of one message in `piece`-byte fragments,
/// never the last one, and keeps the connection open. Returns once heptap has taken (or
/// refused) every byte: the writes are done, or the connection was closed under them.
async fn unfinished_message(listen: SocketAddr, total: usize, piece: usize) -> TcpStream {
    let mut tcp = TcpStream::connect(listen).await.unwrap();
    tcp.write_all(&upgrade_request("/", &listen.to_string()))
        .await
        .unwrap();
    let reply = read_head(&mut tcp).await.unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 101 "));
    let payload = vec![b'a'; piece];
    let mut sent = 0;
    while sent < total {
        let frame = raw_frame(sent == 0, false, &payload);
        if tcp.write_all(&frame).await.is_err() {
            break;
        }
        sent += piece;
    }
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_unfinished_8_mib_messages_cost_the_heptap_binary_less_than_20_mib() {
    let up = WsUpstream::bind(None, Behaviour::Echo).await;
    let dir = Scratch::new();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let file = dir.path().join("heptap.toml");
    std::fs::write(
        &file,
        format!(
            "[[listener]]\nproto = \"ws\"\nlisten = \"{listen}\"\nupstream = \"{}\"\n\n{}",
            up.addr,
            dir.mi_toml(false)
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(heptap_tests::heptap_bin())
        .args(["serve", "-c"])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    heptap_testkit::eventually(WAIT, "heptap listening", || {
        std::net::TcpStream::connect(listen).is_ok()
    })
    .await;
    // Warm up: one relayed message, so the baseline has a connection's worth of buffers.
    let mut warm = ws_client(listen).await;
    warm.send(Message::text("warm")).await.unwrap();
    assert_eq!(next(&mut warm).await, Some(Message::text("warm")));
    drop(warm);
    let before = status_kib(pid, "VmRSS");
    let attackers: Vec<_> = (0..10)
        .map(|_| tokio::spawn(unfinished_message(listen, 8 << 20, 60_000)))
        .collect();
    let mut held = Vec::new();
    for a in attackers {
        held.push(tokio::time::timeout(WAIT * 3, a).await.unwrap().unwrap());
    }
    // Every byte sent was read by heptap or refused; what it holds now, and the most it held.
    let (rss, peak) = (status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM"));
    // The attackers stay connected while this is measured.
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "heptap RSS {before} KiB before, {rss} KiB after 10 x 8 MiB unfinished, peak {peak} KiB"
    );
    assert!(
        peak.saturating_sub(before) < 20 * 1024,
        "10 unfinished 8 MiB messages cost {} KiB (peak {peak}, before {before})",
        peak - before
    );
}

#[tokio::test]
async fn a_wss_client_gets_the_same_limits() {
    let pki = Pki::new();
    let up = WsUpstream::bind(None, Behaviour::Echo).await;
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("wss", up.addr, "", "", &col, &pki).await;
    let listen = heptap.listen_addrs()[0];
    let tls = pki.connect(listen).await;
    let request = upgrade_request("/ws", &listen.to_string());
    let (ws, _) = client(tls, &request).await;
    let mut ws = ws.expect("upgraded");
    ws.send(Message::binary(vec![1u8; DEFAULT_MAX + 1]))
        .await
        .unwrap();
    let code = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(CloseCode::Size));
    let (client, _) = closed_events(&mut col).await;
    assert_eq!(part(&client, "Protocol"), "WSS");
    assert!(part(&client, "Message").starts_with("Message too big: 65536 bytes"));
    heptap.shutdown(Stop::Immediate).await;
}
