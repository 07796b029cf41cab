//! The WS and WSS taps end to end: a client that writes its own upgrade request, heptap's
//! `start()` in-process, an upstream running tungstenite's server handshake, and a HEP
//! collector on 127.0.0.1 (spec/opensips-tracing.md §3.5): the handshake event of each leg
//! carries `Ws-Request` and `Ws-Reply` in OpenSIPS's order; WSS adds the TLS parts to the same
//! event.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use heptap::Stop;
use heptap_hep::NetProto;
use heptap_hep::Packet;
use heptap_tests::collector::{UdpCollector, WAIT, closed_port, correlation, event_of};
use heptap_tests::events::{net_correlation, owned, part, parts_of, text_of};
use heptap_tests::taps::{
    connections_over, events, random_bytes, random_sizes, run, run_tap, stat, tap_config,
    upstream_over,
};
use heptap_tests::tls::{CA_SUBJECT, Pki, SERVER_SUBJECT, UPSTREAM_SUBJECT};
use heptap_tests::ws::{Behaviour, WsUpstream, client, expected_reply, read_head, upgrade_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const OPENSIPS_400: &str = "HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// Connects a client through heptap and upgrades; returns it, its address and the request.
async fn ws_client(listen: SocketAddr) -> (WebSocketStream<TcpStream>, SocketAddr, Vec<u8>) {
    let tcp = TcpStream::connect(listen).await.unwrap();
    let me = tcp.local_addr().unwrap();
    let request = upgrade_request("/ws?room=1", &listen.to_string());
    let (ws, reply) = client(tcp, &request).await;
    assert_eq!(text(&reply), text(&expected_reply()));
    (ws.expect("upgraded"), me, request)
}

/// Sends a normal close (1000) and reads until the connection ends.
async fn close<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.close(Some(bye)).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
}

#[tokio::test]
async fn a_ws_connection_traces_the_upgrade_of_each_leg_in_opensips_order() {
    let pki = Pki::new();
    let mut up = WsUpstream::bind(None, Behaviour::Echo).await;
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("ws", up.addr, "", "", &col, &pki).await;
    let listen = heptap.listen_addrs()[0];
    let (mut ws, me, request) = ws_client(listen).await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    close(&mut ws).await;

    // The upstream connect completes at once: no CONNECT_START.
    let got = events(&mut col, 4).await;
    let seq: Vec<String> = got.iter().map(event_of).collect();
    assert_eq!(seq, ["ACCEPTED", "CONNECTED", "CLOSED", "CLOSED"]);
    let client_id = correlation(&got[0]);
    for p in &got {
        assert_eq!((p.proto_type, p.ip_proto), (Some(89), Some(50)), "WS is 50");
        assert_eq!(part(p, "Protocol"), "WS");
    }
    assert_eq!((got[0].src(), got[0].dst()), (Some(me), Some(listen)));
    assert_eq!(
        parts_of(&got[0]),
        owned(&[
            ("Protocol", "WS"),
            ("Event", "ACCEPTED"),
            ("Ws-Request", &text(&request)),
            ("Status", "SUCCESS"),
            ("Ws-Reply", &text(&expected_reply())),
            ("Message", "Connection accepted..."),
        ])
    );
    // The upstream leg: what the upstream read and wrote, byte for byte.
    let seen = up.seen.recv().await.unwrap();
    assert_eq!(
        parts_of(&got[1]),
        owned(&[
            ("Protocol", "WS"),
            ("Event", "CONNECTED"),
            ("Ws-Request", &text(&seen.request)),
            ("Status", "SUCCESS"),
            ("Ws-Reply", &text(&seen.reply)),
            ("Message", "Successfully connected..."),
        ])
    );
    assert_eq!(got[1].src(), Some(up.addr));
    assert_eq!(
        net_correlation(&got[1]).as_deref(),
        Some(client_id.as_str())
    );
    // Same path, the client's Origin, the sip subprotocol, OpenSIPS's header order.
    let upstream_request = text(&seen.request);
    assert!(
        upstream_request.starts_with(&format!(
            "GET /ws?room=1 HTTP/1.1\r\nHost: {}\r\nOrigin: https://phone.test\r\nSec-WebSocket-Key: ",
            up.addr
        )),
        "{upstream_request}"
    );
    assert!(upstream_request.ends_with(
        "\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
    ));
    assert!(text(&seen.reply).contains("sec-websocket-protocol: sip\r\n"));
    // The client's close went through; both legs say so, as OpenSIPS: "EOF received".
    for p in &got[2..] {
        assert_eq!(part(p, "Message"), "EOF received", "{p:?}");
    }
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn homer5_mode_joins_the_ws_handshake_parts_in_opensips_order() {
    let pki = Pki::new();
    let up = WsUpstream::bind(None, Behaviour::Echo).await;
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("ws", up.addr, "", "[hep]\nhomer5_on = true\n", &col, &pki).await;
    let (_ws, _, request) = ws_client(heptap.listen_addrs()[0]).await;
    let got = events(&mut col, 1).await;
    assert_eq!(
        text_of(&got[0]),
        format!(
            "WS:ACCEPTED:{}:SUCCESS:{}:Connection accepted...",
            text(&request),
            text(&expected_reply())
        )
    );
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn messages_are_relayed_unchanged_both_ways() {
    let pki = Pki::new();
    let up = WsUpstream::bind(None, Behaviour::Echo).await;
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("ws", up.addr, "", "", &col, &pki).await;
    let (ws, _, _) = ws_client(heptap.listen_addrs()[0]).await;
    let (mut tx, mut rx) = ws.split();

    // 1 MiB in binary messages of random sizes, and a text message every 50.
    let data = random_bytes(0x1234_5678, 1 << 20);
    let sizes = random_sizes(99, 4096, 8000);
    let mut messages = Vec::new();
    let (mut off, mut i) = (0, 0);
    while off < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - off);
        messages.push(Message::binary(data[off..off + n].to_vec()));
        if i % 50 == 0 {
            messages.push(Message::text(format!("SIP/2.0 100 message {i}\r\n\r\n")));
        }
        off += n;
        i += 1;
    }
    let sent = messages.clone();
    let writer = tokio::spawn(async move {
        for m in sent {
            tx.send(m).await.unwrap();
        }
        tx
    });
    let mut back = Vec::with_capacity(messages.len());
    while back.len() < messages.len() {
        let m = tokio::time::timeout(WAIT, rx.next())
            .await
            .expect("echo within the timeout")
            .unwrap()
            .unwrap();
        back.push(m);
    }
    assert!(back == messages, "relayed messages differ");
    let mut ws = writer.await.unwrap().reunite(rx).unwrap();
    close(&mut ws).await;
    events(&mut col, 4).await;
    let binary: u64 = messages.iter().map(|m| m.len() as u64).sum();
    assert_eq!(stat(&heptap, "bytes_in"), Some(binary));
    assert_eq!(stat(&heptap, "bytes_out"), Some(binary));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn pings_reach_the_far_side_each_gets_one_pong_and_keepalive_pongs_are_relayed() {
    let pki = Pki::new();
    let mut up = WsUpstream::bind(None, Behaviour::Echo).await;
    let col = UdpCollector::bind().await;
    let heptap = run_tap("ws", up.addr, "", "", &col, &pki).await;
    let (mut ws, _, _) = ws_client(heptap.listen_addrs()[0]).await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::text("send-pong")).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(ws.next().await.unwrap().unwrap());
    }
    assert_eq!(
        got,
        [
            // heptap's own answer; the upstream's answer to the relayed ping is not repeated.
            Message::Pong(b"are you there".to_vec().into()),
            // The upstream's unsolicited keep-alive pong, relayed.
            Message::Pong(b"keepalive".to_vec().into()),
            Message::text("send-pong"),
        ]
    );
    assert_eq!(up.pings.recv().await.unwrap(), b"are you there");
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_refused_upgrade_gets_opensips_400_and_is_traced_as_accepted_failure() {
    let pki = Pki::new();
    let up = WsUpstream::bind(None, Behaviour::Echo).await;
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("ws", up.addr, "", "", &col, &pki).await;
    let mut tcp = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    let request = "GET /ws HTTP/1.1\r\nHost: sip.test\r\n\r\n";
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut reply))
        .await
        .expect("answered and closed")
        .unwrap();
    assert_eq!(text(&reply), OPENSIPS_400);
    let got = events(&mut col, 2).await;
    assert_eq!(
        parts_of(&got[0]),
        owned(&[
            ("Protocol", "WS"),
            ("Event", "ACCEPTED"),
            ("Ws-Request", request),
            ("Status", "FAILURE"),
            ("Ws-Reply", OPENSIPS_400),
            ("Message", "Failed to accept connection..."),
        ])
    );
    assert_eq!(
        parts_of(&got[1]),
        owned(&[
            ("Protocol", "WS"),
            ("Event", "CLOSED"),
            ("Status", "SUCCESS"),
            (
                "Message",
                "WebSocket upgrade refused: no Upgrade: websocket"
            ),
        ])
    );
    assert_eq!(stat(&heptap, "handshake_failed"), Some(1));
    heptap.shutdown(Stop::Immediate).await;
}

/// Reads the close frame a client gets when heptap cannot reach the upstream.
async fn close_code(ws: &mut WebSocketStream<TcpStream>) -> Option<CloseCode> {
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => Some(code),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn an_upstream_that_refuses_the_upgrade_is_connected_failure_and_the_client_gets_1011() {
    let pki = Pki::new();
    let refuser = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = refuser.local_addr().unwrap();
    let refused = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
    let upstream = tokio::spawn(async move {
        let (mut s, _) = refuser.accept().await.unwrap();
        let request = read_head(&mut s).await.unwrap();
        s.write_all(refused.as_bytes()).await.unwrap();
        request
    });
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("ws", up_addr, "", "", &col, &pki).await;
    let (mut ws, _, _) = ws_client(heptap.listen_addrs()[0]).await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Error));
    let request = upstream.await.unwrap();
    let got = events(&mut col, 3).await;
    assert_eq!(
        parts_of(&got[1]),
        owned(&[
            ("Protocol", "WS"),
            ("Event", "CONNECTED"),
            ("Ws-Request", &text(&request)),
            ("Status", "FAILURE"),
            ("Ws-Reply", refused),
            ("Message", "Failed to connect..."),
        ])
    );
    assert_eq!(part(&got[2], "Message"), "Upstream connect failed");
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_connected_failure_and_the_client_gets_1011() {
    let pki = Pki::new();
    let dead = closed_port().await;
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("ws", dead, "", "", &col, &pki).await;
    let (mut ws, _, _) = ws_client(heptap.listen_addrs()[0]).await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Error));
    let got = events(&mut col, 3).await;
    assert_eq!(
        parts_of(&got[1]),
        owned(&[
            ("Protocol", "WS"),
            ("Event", "CONNECTED"),
            ("Status", "FAILURE"),
            ("Message", "Failed to connect..."),
        ])
    );
    assert_eq!(got[1].src(), Some(dead));
    assert_eq!(stat(&heptap, "upstream_connect_failed"), Some(1));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn an_upstream_reset_mid_stream_resets_the_client_and_both_legs_close() {
    let pki = Pki::new();
    let resetter = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = resetter.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (s, _) = resetter.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
        let _ = ws.next().await;
        let tcp = ws.get_ref();
        tcp.set_zero_linger().unwrap();
        drop(ws);
    });
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("ws", up_addr, "", "", &col, &pki).await;
    let (mut ws, _, _) = ws_client(heptap.listen_addrs()[0]).await;
    ws.send(Message::text("hello")).await.unwrap();
    upstream.await.unwrap();
    let r = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert!(
        matches!(&r, Some(Err(tokio_tungstenite::tungstenite::Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the reset is passed on: {r:?}"
    );
    let got = events(&mut col, 4).await;
    let client_id = correlation(&got[0]);
    let (c, u): (Vec<&Packet>, Vec<&Packet>) =
        got[2..].iter().partition(|p| correlation(p) == client_id);
    assert!(part(u[0], "Message").starts_with("Read error: "));
    assert_eq!(
        part(c[0], "Message"),
        "Closed by heptap: the upstream leg ended"
    );
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_proxy_protocol_v1_line_precedes_the_upstream_upgrade() {
    let pki = Pki::new();
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let (tx, mut header) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            s.read_exact(&mut b).await.unwrap();
            line.push(b[0]);
        }
        tx.send(line).unwrap();
        let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
        while let Some(Ok(m)) = ws.next().await {
            if m.is_text() && ws.send(m).await.is_err() {
                break;
            }
        }
    });
    let col = UdpCollector::bind().await;
    let heptap = run_tap("ws", up_addr, "proxy_protocol = \"v1\"", "", &col, &pki).await;
    let listen = heptap.listen_addrs()[0];
    let (mut ws, me, _) = ws_client(listen).await;
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    assert_eq!(
        text(&header.recv().await.unwrap()),
        format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
            me.port(),
            listen.port()
        )
    );
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn ws_trace_on_false_and_a_dropping_filter_route_trace_nothing_while_relaying() {
    let pki = Pki::new();
    let up = WsUpstream::bind(None, Behaviour::Echo).await;
    let mut col = UdpCollector::bind().await;
    let routes = "[routes]\ninline = '''\nroute[no_ws] {\n    if ($proto == \"ws\")\n        drop;\n}\n'''\n";
    let mut cfg = tap_config("ws", up.addr, "", routes, &col, &pki);
    cfg.net.ws.trace_filter_route = Some("no_ws".into());
    let heptap = run(cfg).await;
    let listen = heptap.listen_addrs()[0];
    let roundtrip = || async {
        let (mut ws, me, _) = ws_client(listen).await;
        ws.send(Message::text("x")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("x"));
        close(&mut ws).await;
        me
    };
    // The switch is read at every event, and heptap ends a connection on its own thread after
    // the client has seen the close: wait for each to be over before flipping the switch.
    roundtrip().await;
    connections_over(&heptap).await;
    // Switched as `ws_trace off` would, through the MI's Control.
    let control = heptap.control();
    control.set_net_trace_on(NetProto::Ws, false);
    roundtrip().await;
    connections_over(&heptap).await;
    // The route goes, the switch comes back on: only the third connection is traced.
    heptap
        .reload(tap_config("ws", up.addr, "", "", &col, &pki))
        .unwrap();
    control.set_net_trace_on(NetProto::Ws, true);
    let third = roundtrip().await;
    let got = events(&mut col, 1).await;
    assert_eq!(event_of(&got[0]), "ACCEPTED");
    assert_eq!(
        got[0].src(),
        Some(third),
        "nothing of the first two connections"
    );
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_wss_connection_traces_tls_and_ws_parts_in_one_event_per_leg() {
    let pki = Pki::new();
    let mut up = WsUpstream::bind(Some(pki.upstream_config()), Behaviour::Echo).await;
    let mut col = UdpCollector::bind().await;
    let keys = upstream_over("wss", &pki);
    let heptap = run_tap("wss", up.addr, &keys, "", &col, &pki).await;
    let listen = heptap.listen_addrs()[0];
    let tls = pki.connect(listen).await;
    let request = upgrade_request("/", "sip.test");
    let (ws, reply) = client(tls, &request).await;
    assert_eq!(text(&reply), text(&expected_reply()));
    let mut ws = ws.unwrap();
    ws.send(Message::text("over tls")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over tls"));
    close(&mut ws).await;
    let got = events(&mut col, 4).await;
    for p in &got {
        assert_eq!(
            (part(p, "Protocol").as_str(), p.ip_proto),
            ("WSS", Some(50))
        );
    }
    assert_eq!(
        parts_of(&got[0]),
        owned(&[
            ("Protocol", "WSS"),
            ("server-subject", SERVER_SUBJECT),
            ("server-issuer", CA_SUBJECT),
            ("Event", "ACCEPTED"),
            ("Ws-Request", &text(&request)),
            ("Status", "SUCCESS"),
            ("Ws-Reply", &text(&expected_reply())),
            ("Message", "Connection accepted..."),
        ])
    );
    let seen = up.seen.recv().await.unwrap();
    assert_eq!(
        parts_of(&got[1]),
        owned(&[
            ("Protocol", "WSS"),
            ("client-subject", UPSTREAM_SUBJECT),
            ("client-issuer", CA_SUBJECT),
            ("Event", "CONNECTED"),
            ("Ws-Request", &text(&seen.request)),
            ("Status", "SUCCESS"),
            ("Ws-Reply", &text(&seen.reply)),
            ("Message", "Successfully connected..."),
        ])
    );
    for p in &got[2..] {
        assert_eq!(
            parts_of(p),
            owned(&[
                ("Protocol", "WSS"),
                ("Event", "CLOSED"),
                ("Status", "SUCCESS"),
                ("Message", "EOF received"),
            ])
        );
    }
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn homer5_mode_for_wss_joins_every_event_of_both_legs_in_order() {
    let pki = Pki::new();
    let mut up = WsUpstream::bind(Some(pki.upstream_config()), Behaviour::Echo).await;
    let mut col = UdpCollector::bind().await;
    let keys = upstream_over("wss", &pki);
    let heptap = run_tap(
        "wss",
        up.addr,
        &keys,
        "[hep]\nhomer5_on = true\n",
        &col,
        &pki,
    )
    .await;
    let tls = pki.connect(heptap.listen_addrs()[0]).await;
    let request = upgrade_request("/", "sip.test");
    let (ws, _) = client(tls, &request).await;
    let mut ws = ws.unwrap();
    close(&mut ws).await;
    let got = events(&mut col, 4).await;
    let seen = up.seen.recv().await.unwrap();
    let texts: Vec<String> = got.iter().map(text_of).collect();
    assert_eq!(
        texts,
        [
            format!(
                "WSS:{SERVER_SUBJECT}:{CA_SUBJECT}:ACCEPTED:{}:SUCCESS:{}:Connection accepted...",
                text(&request),
                text(&expected_reply())
            ),
            format!(
                "WSS:{UPSTREAM_SUBJECT}:{CA_SUBJECT}:CONNECTED:{}:SUCCESS:{}:Successfully connected...",
                text(&seen.request),
                text(&seen.reply)
            ),
            "WSS:CLOSED:SUCCESS:EOF received".to_owned(),
            "WSS:CLOSED:SUCCESS:EOF received".to_owned(),
        ]
    );
    assert!(got.iter().all(|p| p.extra_correlation.is_none()));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn idle_timeout_spares_a_connection_where_one_side_talks_and_closes_a_silent_one() {
    let pki = Pki::new();
    let up = WsUpstream::bind(None, Behaviour::Sip).await;
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("ws", up.addr, "idle_timeout = \"300ms\"", "", &col, &pki).await;
    let (mut ws, _, _) = ws_client(heptap.listen_addrs()[0]).await;
    // Client -> upstream only (the upstream answers nothing to these), for twice the timeout.
    for _ in 0..6 {
        ws.send(Message::text("\r\n\r\n")).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Still relayed both ways.
    let invite = heptap_tests::sip::client_messages()[0].clone();
    ws.send(Message::text(String::from_utf8(invite).unwrap()))
        .await
        .unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert!(
        matches!(&reply, Some(Ok(Message::Text(t))) if t.starts_with("SIP/2.0 100")),
        "{reply:?}"
    );
    // Then silence both ways: heptap closes.
    let mut rest = Vec::new();
    while let Some(Ok(m)) = tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        rest.push(m);
    }
    assert_eq!(rest.len(), 2, "180 and 200, then the end");
    let got = events(&mut col, 4).await;
    let reasons: Vec<String> = got[2..].iter().map(|p| part(p, "Message")).collect();
    assert!(
        reasons.iter().any(|r| r == "Timeout on no traffic"),
        "{reasons:?}"
    );
    heptap.shutdown(Stop::Immediate).await;
}
