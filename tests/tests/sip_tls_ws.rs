//! SIP tracing on TLS, WS and WSS taps: a whole dialog through heptap, each SIP message one
//! HEP packet (proto type 1) with the listener's ip-proto (TLS 22, WS/WSS 50), the Call-ID in
//! chunk 0x0011, the client leg's connection id as `{"net": id}`, and the client and the
//! listener as src/dst (spec/opensips-tracing.md §5.3). On WS/WSS each text message is one SIP
//! message; CRLF keep-alive messages are counted, not traced.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use heptap::Stop;
use heptap_hep::Packet;
use heptap_tests::collector::{UdpCollector, correlation, event_of};
use heptap_tests::events::net_correlation;
use heptap_tests::sip::{
    CALL_ID, SipUpstream, client_messages, is_sip, play_dialog, sip_packets, upstream_messages,
};
use heptap_tests::taps::{TRACER, run_tap, stat, upstream_over};
use heptap_tests::tls::Pki;
use heptap_tests::ws::{Behaviour, WsUpstream, client, upgrade_request};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Checks the 7 SIP packets of the dialog: order, bytes, ip-proto, addresses, Call-ID, and the
/// `net` correlation to the connection's ACCEPTED event.
fn check_dialog(got: &[Packet], ip_proto: u8, client: SocketAddr, listen: SocketAddr) {
    let accepted = got.iter().find(|p| event_of(p) == "ACCEPTED").unwrap();
    let conn_id = correlation(accepted);
    let sip: Vec<&Packet> = got.iter().filter(|p| is_sip(p)).collect();
    let [invite, ack, bye] = client_messages();
    let up = upstream_messages();
    let expected: Vec<(&[u8], bool)> = vec![
        (&invite, true),
        (&up[0], false),
        (&up[1], false),
        (&up[2], false),
        (&ack, true),
        (&bye, true),
        (&up[3], false),
    ];
    assert_eq!(sip.len(), expected.len());
    for (p, (bytes, from_client)) in sip.iter().zip(&expected) {
        assert_eq!(
            p.payload.as_deref(),
            Some(*bytes),
            "raw SIP payload, in order"
        );
        assert_eq!(p.ip_proto, Some(ip_proto));
        assert_eq!(correlation(p), CALL_ID);
        assert_eq!(net_correlation(p).as_deref(), Some(conn_id.as_str()));
        let (src, dst) = if *from_client {
            (client, listen)
        } else {
            (listen, client)
        };
        assert_eq!((p.src(), p.dst()), (Some(src), Some(dst)));
    }
    let ts: Vec<(u32, u32)> = sip
        .iter()
        .map(|p| (p.ts_sec.unwrap(), p.ts_usec.unwrap()))
        .collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
}

#[tokio::test]
async fn a_dialog_over_tls_is_traced_with_ip_proto_22() {
    let pki = Pki::new();
    let up = SipUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("tls", up.addr, "sip_trace_id = \"tid\"", TRACER, &col, &pki).await;
    let listen = heptap.listen_addrs()[0];
    let mut s = pki.connect(listen).await;
    let me = s.get_ref().0.local_addr().unwrap();
    let replies = play_dialog(&mut s).await;
    assert_eq!(replies, upstream_messages().to_vec(), "relayed unchanged");
    let got = sip_packets(&mut col, 7).await;
    check_dialog(&got, 22, me, listen);
    heptap.shutdown(Stop::Immediate).await;
}

/// Plays the dialog over a WebSocket (one SIP message per text message, plus a CRLF
/// keep-alive) and returns the replies.
async fn ws_dialog<S>(ws: &mut WebSocketStream<S>) -> Vec<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let text = |b: &[u8]| Message::text(String::from_utf8(b.to_vec()).unwrap());
    let [invite, ack, bye] = client_messages();
    let mut replies = Vec::new();
    ws.send(text(&invite)).await.unwrap();
    for _ in 0..3 {
        replies.push(ws.next().await.unwrap().unwrap().into_data().to_vec());
    }
    ws.send(Message::text("\r\n\r\n")).await.unwrap();
    ws.send(text(&ack)).await.unwrap();
    ws.send(text(&bye)).await.unwrap();
    replies.push(ws.next().await.unwrap().unwrap().into_data().to_vec());
    replies
}

#[tokio::test]
async fn a_dialog_over_ws_is_traced_message_by_message_with_ip_proto_50() {
    let pki = Pki::new();
    let up = WsUpstream::bind(None, Behaviour::Sip).await;
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("ws", up.addr, "sip_trace_id = \"tid\"", TRACER, &col, &pki).await;
    let listen = heptap.listen_addrs()[0];
    let tcp = TcpStream::connect(listen).await.unwrap();
    let me = tcp.local_addr().unwrap();
    let (ws, _) = client(tcp, &upgrade_request("/", "sip.test")).await;
    let mut ws = ws.unwrap();
    assert_eq!(ws_dialog(&mut ws).await, upstream_messages().to_vec());
    let got = sip_packets(&mut col, 7).await;
    check_dialog(&got, 50, me, listen);
    assert_eq!(stat(&heptap, "sip_keepalives"), Some(1));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_dialog_over_wss_is_traced_with_ip_proto_50() {
    let pki = Pki::new();
    let up = WsUpstream::bind(Some(pki.upstream_config()), Behaviour::Sip).await;
    let mut col = UdpCollector::bind().await;
    let keys = format!("sip_trace_id = \"tid\"\n{}", upstream_over("wss", &pki));
    let heptap = run_tap("wss", up.addr, &keys, TRACER, &col, &pki).await;
    let listen = heptap.listen_addrs()[0];
    let s = pki.connect(listen).await;
    let me = s.get_ref().0.local_addr().unwrap();
    let (ws, _) = client(s, &upgrade_request("/", "sip.test")).await;
    let mut ws = ws.unwrap();
    assert_eq!(ws_dialog(&mut ws).await, upstream_messages().to_vec());
    let got = sip_packets(&mut col, 7).await;
    check_dialog(&got, 50, me, listen);
    heptap.shutdown(Stop::Immediate).await;
}
