//! OpenSIPS parity (issue 19) against a running heptap: the connection events whose shape
//! follows OpenSIPS, compared byte for byte with golden packets written after the spec (with a
//! config that sets no payload key, so heptap's defaults are OpenSIPS's: homer5); the relayed
//! connections as `list_tcp_conns` lists them (through opensips-cli); `get_statistics core:`
//! and `tcp:` against real traffic.
//!
//! Needs `opensips-cli` on PATH or in `OPENSIPS_CLI` (.ci/run installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::{SocketAddr, SocketAddrV4};

use futures_util::{SinkExt, StreamExt};
use heptap::{LogHandle, Running, Stop, start};
use heptap_hep::{Packet, decode};
use heptap_testkit::eventually;
use heptap_tests::collector::{EchoUpstream, Scratch, WAIT, correlation};
use heptap_tests::events::opensips_net_packet;
use heptap_tests::mi_cli::opensips_cli as cli;
use heptap_tests::sip::{SipUpstream, options, read_message};
use heptap_tests::taps::{parse, statistic};
use heptap_tests::ws::{Behaviour, WsUpstream, client, upgrade_request};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A HEP collector that keeps each datagram's bytes beside its decoding.
struct RawCollector {
    addr: SocketAddr,
    sock: UdpSocket,
}

impl RawCollector {
    async fn bind() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Self {
            addr: sock.local_addr().unwrap(),
            sock,
        }
    }

    /// Every packet until (and with) the first whose homer5 payload starts with `prefix`.
    async fn until(&self, prefix: &str) -> Vec<(Vec<u8>, Packet)> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = tokio::time::timeout(WAIT, self.sock.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {prefix} packet; got {:?}", texts(&got)))
                .unwrap();
            let bytes = buf[..n].to_vec();
            let p = decode(&bytes).unwrap();
            let done = text(&p).starts_with(prefix);
            got.push((bytes, p));
            if done {
                return got;
            }
        }
    }
}

fn text(p: &Packet) -> String {
    String::from_utf8_lossy(p.payload.as_deref().unwrap_or(b"")).into_owned()
}

fn texts(got: &[(Vec<u8>, Packet)]) -> Vec<String> {
    got.iter().map(|(_, p)| text(p)).collect()
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => panic!("IPv4 expected, got {a}"),
    }
}

/// The golden packet for `p`'s event: its addresses, time and id, OpenSIPS's bytes around them.
fn golden(p: &Packet, ip_proto: u8, values: &[&str]) -> Vec<u8> {
    opensips_net_packet(
        (v4(p.src().unwrap()), v4(p.dst().unwrap())),
        (p.ts_sec.unwrap(), p.ts_usec.unwrap()),
        ip_proto,
        &correlation(p),
        values,
    )
}

/// heptap with one `proto` listener to `upstream`, connection events of every protocol traced
/// to `col`, and no `[hep]` key at all: OpenSIPS's defaults.
async fn heptap(proto: &str, upstream: SocketAddr, col: SocketAddr, dir: &Scratch) -> Running {
    heptap_with(proto, upstream, col, dir, "", "").await
}

async fn heptap_with(
    proto: &str,
    upstream: SocketAddr,
    col: SocketAddr,
    dir: &Scratch,
    listener_keys: &str,
    mi_keys: &str,
) -> Running {
    let mut net = String::new();
    for p in ["tcp", "tls", "ws", "wss"] {
        net.push_str(&format!(
            "[net.{p}]\ntrace_on = true\ntrace_destination = \"col\"\n"
        ));
    }
    let text = format!(
        "[hep.ids]\ncol = \"[col] {col}; transport=udp\"\n\n\
         [tracer]\ntrace_id = [\"[tid]uri=hep:col\"]\n\n\
         [[listener]]\nname = \"edge\"\nproto = \"{proto}\"\nlisten = \"127.0.0.1:0\"\n\
         upstream = \"{upstream}\"\n{listener_keys}\n\n{net}\n{}{mi_keys}\n",
        dir.mi_toml(true)
    );
    let config = parse(&text);
    assert!(
        config.hep.homer5_on,
        "homer5_on defaults to 1, as OpenSIPS's"
    );
    start(config, LogHandle::detached())
        .await
        .expect("heptap starts")
}

#[tokio::test]
async fn a_connect_done_within_100ms_is_one_connected_as_opensips_sends_it_by_default() {
    let up = EchoUpstream::bind().await;
    let col = RawCollector::bind().await;
    let dir = Scratch::new();
    let h = heptap("tcp", up.addr, col.addr, &dir).await;
    let client = TcpStream::connect(h.listen_addrs()[0]).await.unwrap();
    let got = col.until("TCP:CONNECTED:").await;
    assert_eq!(
        texts(&got),
        [
            "TCP:ACCEPTED:SUCCESS:Connection accepted...",
            "TCP:CONNECTED:SUCCESS:Successfully connected asynchronously...",
        ],
        "no CONNECT_START before a connect that completed at once"
    );
    let (accepted, connected) = (&got[0], &got[1]);
    assert_eq!(accepted.1.src(), Some(client.local_addr().unwrap()));
    assert_eq!(
        accepted.0,
        golden(
            &accepted.1,
            6,
            &["TCP", "ACCEPTED", "SUCCESS", "Connection accepted..."]
        )
    );
    // The upstream leg: src the upstream, dst heptap's real local address.
    assert_eq!(connected.1.src(), Some(up.addr));
    assert_ne!(connected.1.dst().unwrap().port(), 0);
    assert_eq!(
        connected.0,
        golden(
            &connected.1,
            6,
            &[
                "TCP",
                "CONNECTED",
                "SUCCESS",
                "Successfully connected asynchronously..."
            ]
        )
    );
    assert_eq!(
        statistic(&h, "listener_edge", "upstream_connect_slow"),
        Some(0)
    );
    drop(client);
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_connect_still_pending_after_100ms_is_connect_start_then_connected() {
    // An upstream whose accept queue is full: the kernel drops heptap's SYN, and the connect
    // completes at the SYN's retransmission (1 s) once the queue is drained.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let upstream = socket.listen(0).unwrap();
    let up = upstream.local_addr().unwrap();
    let filler = TcpStream::connect(up).await.unwrap();
    let col = RawCollector::bind().await;
    let dir = Scratch::new();
    let h = heptap("tcp", up, col.addr, &dir).await;
    let client = TcpStream::connect(h.listen_addrs()[0]).await.unwrap();
    let got = col.until("TCP:CONNECT_START:").await;
    let start = &got[got.len() - 1];
    assert_eq!(start.1.src(), Some(up));
    // Not bound before the connect: no local port is known yet (documented).
    assert_eq!(start.1.dst(), Some("0.0.0.0:0".parse().unwrap()));
    assert_eq!(
        start.0,
        golden(
            &start.1,
            6,
            &[
                "TCP",
                "CONNECT_START",
                "SUCCESS",
                "Async connect in progress..."
            ]
        )
    );
    // Drain the queue: heptap's connection gets in.
    let accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = upstream.accept().await {
            held.push(s);
        }
    });
    let got = col.until("TCP:CONNECTED:").await;
    let connected = &got[got.len() - 1];
    assert_eq!(correlation(&connected.1), correlation(&start.1));
    assert_eq!(
        connected.0,
        golden(
            &connected.1,
            6,
            &["TCP", "CONNECTED", "SUCCESS", "Successfully connected..."]
        )
    );
    assert_eq!(
        statistic(&h, "listener_edge", "upstream_connect_slow"),
        Some(1)
    );
    drop((client, filler));
    accepting.abort();
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_ws_close_frame_1000_is_closed_eof_received_as_opensips_sends_it() {
    let up = WsUpstream::bind(None, Behaviour::Echo).await;
    let col = RawCollector::bind().await;
    let dir = Scratch::new();
    let h = heptap("ws", up.addr, col.addr, &dir).await;
    let listen = h.listen_addrs()[0];
    let tcp = TcpStream::connect(listen).await.unwrap();
    let me = tcp.local_addr().unwrap();
    let (ws, _) = client(tcp, &upgrade_request("/", &listen.to_string())).await;
    let mut ws = ws.expect("upgraded");
    ws.send(Message::text("hi")).await.unwrap();
    ws.next().await.unwrap().unwrap();
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.close(Some(bye)).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    let mut closed = Vec::new();
    while closed.len() < 2 {
        closed.push(col.until("WS:CLOSED:").await.pop().unwrap());
    }
    let client_leg = closed
        .iter()
        .find(|(_, p)| p.src() == Some(me))
        .expect("the client leg's CLOSED");
    assert_eq!(client_leg.1.dst(), Some(listen));
    assert_eq!(
        client_leg.0,
        golden(
            &client_leg.1,
            50,
            &["WS", "CLOSED", "SUCCESS", "EOF received"]
        )
    );
    h.shutdown(Stop::Immediate).await;
}

/// Sends an OPTIONS through `client` and reads the 200.
async fn ping(client: &mut TcpStream) {
    client.write_all(&options()).await.unwrap();
    read_message(client).await.expect("200 to OPTIONS");
}

#[tokio::test]
async fn list_tcp_conns_lists_the_live_relayed_connections_through_opensips_cli() {
    let up = SipUpstream::bind().await;
    let col = RawCollector::bind().await;
    let dir = Scratch::new();
    let h = heptap_with(
        "tcp",
        up.addr,
        col.addr,
        &dir,
        "sip_trace_id = \"tid\"\nidle_timeout = \"1h\"",
        "",
    )
    .await;
    let listen = h.listen_addrs()[0];
    let mut a = TcpStream::connect(listen).await.unwrap();
    let mut b = TcpStream::connect(listen).await.unwrap();
    ping(&mut a).await;
    ping(&mut a).await;
    ping(&mut b).await;
    let accepted: Vec<(SocketAddr, String)> = {
        let mut ids = Vec::new();
        while ids.len() < 2 {
            let (_, p) = col.until("TCP:ACCEPTED:").await.pop().unwrap();
            ids.push((p.src().unwrap(), correlation(&p)));
        }
        ids
    };
    let (code, out) = cli(&h, &dir, "http", &["mi", "list_tcp_conns"]).await;
    assert_eq!(code, 0, "{out}");
    let reply: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let conns = reply["Connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2, "{reply:#}");
    for (me, pings) in [(&a, 2u64), (&b, 1)] {
        let me = me.local_addr().unwrap();
        let row = conns
            .iter()
            .find(|c| c["Remote"] == me.to_string())
            .unwrap_or_else(|| panic!("{me} listed: {reply:#}"));
        let id = &accepted.iter().find(|(a, _)| *a == me).unwrap().1;
        assert_eq!(row["Connection id"], id.as_str(), "the id its events carry");
        assert_eq!(row["ID"], id.parse::<u64>().unwrap() & 0xFFFF_FFFF);
        assert_eq!(row["Type"], "tcp");
        assert_eq!(row["State"], 0);
        assert_eq!(row["Phase"], "relaying");
        assert_eq!(row["Local"], listen.to_string());
        assert_eq!(row["Listener"], "edge");
        assert_eq!(row["Upstream"]["Remote"], up.addr.to_string());
        assert_eq!(row["Upstream"]["Type"], "tcp");
        let up_id: u64 = row["Upstream"]["Connection id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(up_id.to_string(), *id);
        assert_eq!(row["Bytes in"], pings * options().len() as u64);
        assert!(row["Bytes out"].as_u64().unwrap() > 0);
        assert!(row["Lifetime"].as_str().unwrap().len() == 19, "{row}");
        assert!(row["Age"].as_u64().is_some());
    }
    // The 4.x name, filtered by protocol; closed connections leave the list.
    drop(a);
    drop(b);
    eventually(WAIT, "the connections closed", || {
        statistic(&h, "listener_edge", "active") == Some(0)
    })
    .await;
    let (code, out) = cli(&h, &dir, "fifo", &["mi", "tcp:list", "tls"]).await;
    assert_eq!(code, 0, "{out}");
    let reply: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply["Connections"], Value::Array(Vec::new()));
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn get_statistics_core_and_tcp_count_the_relayed_sip_and_connections() {
    let up = SipUpstream::bind().await;
    let col = RawCollector::bind().await;
    let dir = Scratch::new();
    let h = heptap_with("tcp", up.addr, col.addr, &dir, "sip_trace_id = \"tid\"", "").await;
    let mut client = TcpStream::connect(h.listen_addrs()[0]).await.unwrap();
    for _ in 0..3 {
        ping(&mut client).await;
    }
    let (code, out) = cli(&h, &dir, "http", &["mi", "get_statistics", "core:", "tcp:"]).await;
    assert_eq!(code, 0, "{out}");
    let got: Value = serde_json::from_str(&out).unwrap();
    let n = |name: &str| {
        got[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: {got:#}"))
    };
    assert_eq!(n("core:rcv_requests"), 3);
    assert_eq!(n("core:rcv_replies"), 3);
    assert_eq!(n("core:fwd_requests"), 3);
    assert_eq!(n("core:fwd_replies"), 3);
    assert_eq!(n("core:drop_requests"), 0);
    assert_eq!(n("core:drop_replies"), 0);
    assert_eq!(n("core:bad_msg_hdr"), 0, "(garbage: sip_tcp.rs)");
    assert_eq!(
        n("tcp:current_opened_connections"),
        2,
        "client and upstream legs"
    );
    assert_eq!(n("tcp:passive_open"), 1);
    assert_eq!(n("tcp:active_open"), 1);
    assert_eq!(n("tcp:connect_failed"), 0);
    // reset_all_statistics zeroes the counters, not the gauge.
    let (code, out) = cli(&h, &dir, "fifo", &["mi", "reset_all_statistics"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(statistic(&h, "core", "rcv_requests"), Some(0));
    assert_eq!(statistic(&h, "tcp", "current_opened_connections"), Some(2));
    drop(client);
    eventually(WAIT, "both legs closed", || {
        statistic(&h, "tcp", "current_opened_connections") == Some(0)
    })
    .await;
    // An unknown group stays 404 (OpenSIPS's `{}` is an uninitialised variable).
    let (code, out) = cli(&h, &dir, "http", &["mi", "get_statistics", "nope:"]).await;
    assert_eq!(code, 255, "{out}");
    assert!(out.contains("404"), "{out}");
    // help is answered, with OpenSIPS's texts.
    let (code, out) = cli(&h, &dir, "http", &["mi", "help", "list_tcp_conns"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("list all ongoing TCP based connections"),
        "{out}"
    );
    h.shutdown(Stop::Immediate).await;
}

/// Sends `request` to heptap's HTTP MI and returns the whole answer.
async fn http(addr: SocketAddr, request: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

fn post(body: &str) -> String {
    format!(
        "POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn bad_mi_requests_reach_the_collector_as_opensips_traces_them() {
    let up = EchoUpstream::bind().await;
    let col = RawCollector::bind().await;
    let dir = Scratch::new();
    let h = heptap_with(
        "tcp",
        up.addr,
        col.addr,
        &dir,
        "",
        "trace_destination = \"col\"",
    )
    .await;
    let mi = h.mi_http_addr().unwrap();
    let cases = [
        (
            "{oops",
            "unknown:json",
            r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#,
        ),
        (
            r#"[{"jsonrpc":"2.0","method":"ps","id":1}]"#,
            "unknown:json",
            r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#,
        ),
        (
            r#"{"jsonrpc":"1.0","method":"tcp_trace","params":["off"],"id":7}"#,
            "tcp_trace:json:off",
            r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":7}"#,
        ),
    ];
    for (body, request, reply) in cases {
        let answer = http(mi, &post(body)).await;
        assert!(answer.ends_with(reply), "{answer}");
        let got = col.until(r#"{"jsonrpc""#).await;
        let [.., (_, req), (_, rpl)] = &got[..] else {
            panic!("a request and a reply: {:?}", texts(&got));
        };
        // Homer5 (the default): the parts' values joined by ':', proto type 87.
        assert_eq!((req.proto_type, rpl.proto_type), (Some(87), Some(87)));
        assert_eq!(text(req), request);
        assert_eq!(text(rpl), reply);
        assert_eq!(correlation(req), correlation(rpl));
        assert!(correlation(req).starts_with("MICORR"));
    }
    // tcp_trace was not run by the 1.0 request.
    assert!(h.control().net_trace_on(heptap_hep::NetProto::Tcp));
    h.shutdown(Stop::Immediate).await;
}
