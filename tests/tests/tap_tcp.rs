//! The TCP tap end to end: heptap's `start()` in-process, a real client, a real upstream, and a
//! HEP collector on 127.0.0.1, checking the relayed bytes and the traced connection events
//! (spec/opensips-tracing.md §2.2, §3.3).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::SocketAddr;

use heptap::Stop;
use heptap_config::Config;
use heptap_hep::Packet;
use heptap_tests::collector::{
    EchoUpstream, Scratch, UdpCollector, closed_port, correlation, event_of, payload_json,
};
use heptap_tests::taps::{
    connections_over, events, half_close, listener, read_once, relay_in_slices, roundtrip, run,
    stat,
};
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// A config with one TCP listener on port 0 relaying to `upstream`, tracing connection events to
/// the UDP collector, plus `extra` TOML.
fn config(upstream: SocketAddr, collector: SocketAddr, extra: &str, dir: &Scratch) -> Config {
    heptap_tests::taps::config(
        &listener("tcp", upstream, "", None, ""),
        collector,
        extra,
        dir,
    )
}

fn parts(p: &Packet) -> Value {
    payload_json(p)
}

#[tokio::test]
async fn a_relayed_connection_traces_both_legs_in_opensips_shape() {
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, col.addr, "", &dir)).await;
    let listen = heptap.listen_addrs()[0];

    let mut client = TcpStream::connect(listen).await.unwrap();
    let client_addr = client.local_addr().unwrap();
    let echo = roundtrip(&mut client, b"OPTIONS sip:x SIP/2.0\r\n\r\n").await;
    assert_eq!(&echo, b"OPTIONS sip:x SIP/2.0\r\n\r\n");
    let rest = half_close(&mut client).await;
    assert!(rest.is_empty());

    // The upstream connect completes within 100 ms: one CONNECTED, no CONNECT_START
    // (OpenSIPS's tcp_async path).
    let got = events(&mut col, 4).await;
    let seq: Vec<String> = got.iter().map(event_of).collect();
    assert_eq!(
        seq,
        ["ACCEPTED", "CONNECTED", "CLOSED", "CLOSED"],
        "{got:#?}"
    );
    let client_id = correlation(&got[0]);
    let up_id = correlation(&got[1]);
    assert!(client_id.parse::<u64>().is_ok(), "decimal id: {client_id}");
    assert!(up_id.parse::<u64>().is_ok() && up_id != client_id);
    for p in &got {
        assert_eq!(p.proto_type, Some(89), "net proto type");
        assert_eq!(p.ip_proto, Some(6), "TCP ip proto");
        assert_eq!(parts(p)["Protocol"], "TCP");
        assert_eq!(parts(p)["Status"], "SUCCESS");
    }
    // Client leg: src = the client, dst = our listening socket.
    assert_eq!(got[0].src(), Some(client_addr));
    assert_eq!(got[0].dst(), Some(listen));
    assert_eq!(
        parts(&got[0]),
        json!({"Protocol":"TCP","Event":"ACCEPTED","Status":"SUCCESS","Message":"Connection accepted..."})
    );
    assert!(got[0].extra_correlation.is_none());
    // Upstream leg: src = the upstream, dst = our side; joined to the client leg by "net".
    for p in &got[1..2] {
        assert_eq!(correlation(p), up_id);
        assert_eq!(p.src(), Some(up.addr));
        let extra: Value =
            serde_json::from_slice(p.extra_correlation.as_deref().unwrap_or(b"null")).unwrap();
        assert_eq!(extra, json!({"net": client_id}));
    }
    // CONNECTED has the real local address (the connect is done).
    assert_ne!(got[1].dst().map(|a| a.port()), Some(0));
    assert_eq!(
        parts(&got[1])["Message"],
        "Successfully connected asynchronously..."
    );
    // Both CLOSED events carry real addresses and a reason.
    let closed_client = got[2..]
        .iter()
        .find(|p| correlation(p) == client_id)
        .unwrap();
    let closed_up = got[2..].iter().find(|p| correlation(p) == up_id).unwrap();
    assert_eq!(closed_client.src(), Some(client_addr));
    assert_eq!(parts(closed_client)["Message"], "EOF received");
    assert_eq!(closed_up.src(), Some(up.addr));
    assert_eq!(parts(closed_up)["Message"], "EOF received");
    // Timestamps never go back within a leg.
    let ts = |p: &Packet| (p.ts_sec.unwrap(), p.ts_usec.unwrap());
    assert!(ts(&got[0]) < ts(closed_client));
    assert!(ts(&got[1]) < ts(closed_up));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn homer5_mode_joins_the_values_with_the_delimiter_and_drops_the_net_correlation() {
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, col.addr, "[hep]\nhomer5_on = true\n", &dir)).await;
    let client = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    let got = events(&mut col, 2).await;
    let text = |p: &Packet| String::from_utf8(p.payload.clone().unwrap().to_vec()).unwrap();
    assert_eq!(text(&got[0]), "TCP:ACCEPTED:SUCCESS:Connection accepted...");
    assert_eq!(
        text(&got[1]),
        "TCP:CONNECTED:SUCCESS:Successfully connected asynchronously..."
    );
    assert!(got.iter().all(|p| p.extra_correlation.is_none()));
    drop(client);
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn bytes_are_relayed_unchanged_both_ways_with_random_splits_and_half_close() {
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, col.addr, "", &dir)).await;
    let client = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();

    // 1 MiB of pseudo-random bytes, written in pseudo-random slices.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let data: Vec<u8> = (0..1 << 20).map(|_| next() as u8).collect();
    let splits: Vec<usize> = (0..4096).map(|_| 1 + (next() % 700) as usize).collect();
    let back = relay_in_slices(client, &data, splits).await;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "relayed bytes differ");
    let got = events(&mut col, 4).await;
    assert_eq!(
        got.iter().filter(|p| event_of(p) == "CLOSED").count(),
        2,
        "both legs closed"
    );
    assert_eq!(stat(&heptap, "bytes_in"), Some(1 << 20));
    assert_eq!(stat(&heptap, "bytes_out"), Some(1 << 20));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_refused_upstream_is_traced_as_connected_failure_and_the_client_is_reset() {
    let dead = closed_port().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let heptap = run(config(dead, col.addr, "", &dir)).await;
    // The reset can reach the client before its connect() has looked at the handshake (heptap
    // accepts, fails upstream and resets within microseconds): then connect() reports it.
    let r = match TcpStream::connect(heptap.listen_addrs()[0]).await {
        Ok(mut client) => read_once(&mut client).await,
        Err(e) => Err(e),
    };
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the client sees a reset, as it would connecting to a closed port: {r:?}"
    );
    // Refused at once: no CONNECT_START (heptap says more than OpenSIPS, which traces nothing
    // for an async connect that fails at once: CONNECTED FAILURE, then CLOSED).
    let got = events(&mut col, 3).await;
    let seq: Vec<(String, String)> = got
        .iter()
        .map(|p| {
            (
                event_of(p),
                parts(p)["Status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seq,
        [
            ("ACCEPTED".into(), "SUCCESS".into()),
            ("CONNECTED".into(), "FAILURE".into()),
            ("CLOSED".into(), "SUCCESS".into()),
        ]
    );
    assert_eq!(parts(&got[1])["Message"], "Failed to connect...");
    assert_eq!(got[1].src(), Some(dead));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn with_trace_on_false_the_connection_is_relayed_and_nothing_is_traced() {
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let mut cfg = config(up.addr, col.addr, "", &dir);
    cfg.net.tcp.trace_on = false;
    let heptap = run(cfg).await;
    let mut client = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    let buf = roundtrip(&mut client, b"ping").await;
    assert_eq!(&buf, b"ping");
    drop(client);
    // The switch is read at every event: let the first connection end (on its worker) first.
    connections_over(&heptap).await;
    // The switch is the only difference: turn it on and the next connection is traced, which
    // also proves nothing from the first one was queued behind it.
    heptap
        .control()
        .set_net_trace_on(heptap_hep::NetProto::Tcp, true);
    let _second = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    let got = events(&mut col, 1).await;
    assert_eq!(event_of(&got[0]), "ACCEPTED");
    assert_eq!(got[0].src(), Some(_second.local_addr().unwrap()));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_filter_route_that_drops_traces_nothing_of_that_connection() {
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let extra = r#"
[routes]
inline = '''
route[net_filter] {
    if ($si == "127.0.0.1" && $Rp != 1)
        drop;
}
route[keep] {
    exit;
}
'''
"#;
    let dir = Scratch::new();
    let mut cfg = config(up.addr, col.addr, extra, &dir);
    cfg.net.tcp.trace_filter_route = Some("net_filter".into());
    let heptap = run(cfg.clone()).await;
    let mut client = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    roundtrip(&mut client, b"x").await;
    drop(client);
    // A reload to a route that keeps everything: the next connection is traced.
    cfg.net.tcp.trace_filter_route = Some("keep".into());
    heptap.reload(cfg).unwrap();
    let second = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    let got = events(&mut col, 1).await;
    assert_eq!(event_of(&got[0]), "ACCEPTED");
    assert_eq!(
        got[0].src(),
        Some(second.local_addr().unwrap()),
        "the first, dropped, connection left no event"
    );
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_port_something_else_listens_on_is_refused_not_shared() {
    // Every worker listens with SO_REUSEPORT; without a check a second heptap of the same user
    // would share the port and silently take part of the first one's connections.
    let up = EchoUpstream::bind().await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let first = run(config(up.addr, col.addr, "", &dir)).await;
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for taken in [first.listen_addrs()[0], plain.local_addr().unwrap()] {
        let other = Scratch::new();
        let mut cfg = config(up.addr, col.addr, "", &other);
        cfg.listener[0].listen = taken;
        let e = heptap::start(cfg, heptap::LogHandle::detached())
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("cannot listen on {taken}: ")) && e.contains("in use"),
            "{e}"
        );
    }
    first.shutdown(Stop::Immediate).await;
}
