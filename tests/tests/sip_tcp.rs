//! SIP tracing on a relayed TCP connection: a whole dialog, both payload modes, the trace id
//! switch, split/coalesced messages, keep-alives and malformed streams.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::SocketAddr;

use heptap::Stop;
use heptap_config::Config;
use heptap_hep::Packet;
use heptap_testkit::eventually;
use heptap_tests::collector::{Scratch, UdpCollector, WAIT, correlation, event_of};
use heptap_tests::events::part;
use heptap_tests::sip::{
    CALL_ID, SipUpstream, client_messages, is_sip, options, play_dialog, read_message, sip_packets,
    upstream_messages,
};
use heptap_tests::taps::{TRACER, listener, run, stat};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One TCP listener relaying to `upstream` with SIP traced by the trace_id `tid`, `extra` keys in
/// its `[tracer]` section.
fn config(upstream: SocketAddr, collector: SocketAddr, extra: &str, dir: &Scratch) -> Config {
    heptap_tests::taps::config(
        &listener("tcp", upstream, "sip_trace_id = \"tid\"", None, ""),
        collector,
        &format!("{TRACER}{extra}\n"),
        dir,
    )
}

#[tokio::test]
async fn a_dialog_is_traced_in_order_with_addresses_call_id_and_the_connection_id() {
    let up = SipUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, col.addr, "", &dir)).await;
    let listen = heptap.listen_addrs()[0];
    let mut client = TcpStream::connect(listen).await.unwrap();
    let me = client.local_addr().unwrap();
    let replies = play_dialog(&mut client).await;
    assert_eq!(replies, upstream_messages().to_vec(), "relayed unchanged");

    let got = sip_packets(&mut col, 7).await;
    let accepted = got.iter().find(|p| event_of(p) == "ACCEPTED").unwrap();
    let conn_id = correlation(accepted);
    let sip: Vec<&Packet> = got.iter().filter(|p| is_sip(p)).collect();
    let [invite, ack, bye] = client_messages();
    let up_msgs = upstream_messages();
    let expected: Vec<(&[u8], bool)> = vec![
        (&invite, true),
        (&up_msgs[0], false),
        (&up_msgs[1], false),
        (&up_msgs[2], false),
        (&ack, true),
        (&bye, true),
        (&up_msgs[3], false),
    ];
    for (p, (bytes, from_client)) in sip.iter().zip(&expected) {
        assert_eq!(
            p.payload.as_deref(),
            Some(*bytes),
            "raw SIP payload, in order"
        );
        assert_eq!(correlation(p), CALL_ID);
        assert_eq!(p.ip_proto, Some(6));
        let (src, dst) = if *from_client {
            (me, listen)
        } else {
            (listen, me)
        };
        assert_eq!((p.src(), p.dst()), (Some(src), Some(dst)));
        let extra: Value = serde_json::from_slice(p.extra_correlation.as_deref().unwrap()).unwrap();
        assert_eq!(extra, json!({"net": conn_id}));
    }
    let ts: Vec<(u32, u32)> = sip
        .iter()
        .map(|p| (p.ts_sec.unwrap(), p.ts_usec.unwrap()))
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {ts:?}"
    );
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn sip_payload_json_wraps_the_message_as_opensips_does() {
    let up = SipUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, col.addr, "sip_payload = \"json\"", &dir)).await;
    let mut client = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    play_dialog(&mut client).await;
    let got = col.until(WAIT, |g| g.iter().any(is_sip)).await;
    let p = got.iter().find(|p| is_sip(p)).unwrap();
    let v: Value = serde_json::from_slice(p.payload.as_deref().unwrap()).unwrap();
    let [invite, ..] = client_messages();
    assert_eq!(v, json!({"payload": String::from_utf8(invite).unwrap()}));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn switching_the_trace_id_off_mid_dialog_stops_sip_packets_and_the_relay_goes_on() {
    let up = SipUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, col.addr, "", &dir)).await;
    let mut client = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    let [invite, ack, bye] = client_messages();
    client.write_all(&invite).await.unwrap();
    for _ in 0..3 {
        read_message(&mut client).await.unwrap();
    }
    sip_packets(&mut col, 4).await;
    // Switched as `sip_trace tid off` would, through the MI's Control.
    let control = heptap.control();
    control.set_trace_id_on("tid", false).unwrap();
    client.write_all(&ack).await.unwrap();
    client.write_all(&bye).await.unwrap();
    let ok = read_message(&mut client).await.expect("the relay goes on");
    assert!(ok.starts_with(b"SIP/2.0 200 OK"));
    // heptap relays a message before tracing it, on its own thread: wait until all seven
    // (INVITE, three replies, ACK, BYE, 200) are counted, which is after their tracing.
    eventually(WAIT, "seven SIP messages counted", || {
        stat(&heptap, "sip_messages") == Some(7)
    })
    .await;
    // Back on: the next SIP packet is the OPTIONS, so nothing of ACK/BYE/200 was traced.
    control.set_trace_id_on("tid", true).unwrap();
    client.write_all(&options()).await.unwrap();
    read_message(&mut client).await.unwrap();
    let got = col.until(WAIT, |g| g.iter().any(is_sip)).await;
    let first = got.iter().find(|p| is_sip(p)).unwrap();
    assert!(
        first.payload.as_deref().unwrap().starts_with(b"OPTIONS"),
        "got {:?}",
        String::from_utf8_lossy(first.payload.as_deref().unwrap())
    );
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn split_coalesced_keepalives_and_garbage_are_relayed_identically_and_sip_still_traced() {
    // An echo upstream: what the client sends comes back, so both directions carry the stream.
    let up = heptap_tests::collector::EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, col.addr, "", &dir)).await;
    let mut client = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    let [invite, ack, bye] = client_messages();
    let mut stream = Vec::new();
    stream.extend_from_slice(&invite);
    stream.extend_from_slice(b"\r\n\r\n"); // RFC 5626 ping
    stream.extend_from_slice(b"this is not SIP\r\nat all\r\n\r\n");
    stream.extend_from_slice(&ack);
    stream.extend_from_slice(b"\r\n"); // pong
    stream.extend_from_slice(&bye);
    let (mut r, mut w) = client.split();
    let sent = stream.clone();
    let write = async move {
        // Byte-sized to 97-byte writes: every message split across reads somewhere.
        for (i, chunk) in sent.chunks(97).enumerate() {
            if i % 3 == 0 {
                for b in chunk.chunks(1) {
                    w.write_all(b).await.unwrap();
                }
            } else {
                w.write_all(chunk).await.unwrap();
            }
        }
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let read = r.read_to_end(&mut back);
    let (_, n) = tokio::join!(write, read);
    n.unwrap();
    assert!(back == stream, "relayed byte for byte");
    // Each of the 3 messages is traced twice (to the upstream, and echoed back).
    let got = sip_packets(&mut col, 6).await;
    let sip: Vec<&[u8]> = got
        .iter()
        .filter(|p| is_sip(p))
        .map(|p| p.payload.as_deref().unwrap())
        .collect();
    for m in [&invite, &ack, &bye] {
        assert_eq!(
            sip.iter().filter(|p| **p == m.as_slice()).count(),
            2,
            "each message traced once per direction"
        );
    }
    let stat = |name: &str| stat(&heptap, name).unwrap_or(0);
    assert!(
        stat("sip_malformed") >= 2,
        "the garbage was counted in both directions"
    );
    assert_eq!(
        heptap_tests::taps::statistic(&heptap, "core", "bad_msg_hdr"),
        Some(stat("sip_malformed")),
        "and as OpenSIPS's core:bad_msg_hdr"
    );
    assert!(stat("sip_keepalives") >= 4);
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn in_homer5_mode_the_payload_is_the_raw_message_and_the_net_correlation_is_dropped() {
    let up = SipUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let mut cfg = config(up.addr, col.addr, "", &dir);
    cfg.hep.homer5_on = true;
    let heptap = run(cfg).await;
    let mut client = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    play_dialog(&mut client).await;
    let got = sip_packets(&mut col, 7).await;
    let [invite, ..] = client_messages();
    let sip: Vec<&Packet> = got.iter().filter(|p| is_sip(p)).collect();
    assert_eq!(sip[0].payload.as_deref(), Some(invite.as_slice()));
    for p in sip {
        assert_eq!(correlation(p), CALL_ID, "0x11 stays the Call-ID");
        assert!(
            p.extra_correlation.is_none(),
            "homer5 mode sends no 0x65 chunk (OpenSIPS drops the net correlation)"
        );
    }
    heptap.shutdown(Stop::Immediate).await;
}

/// An INVITE built from `headers` (start line to the last header, no empty line) and `body`.
fn invite(headers: &str, body: &str) -> Vec<u8> {
    format!("INVITE sip:bob@example.com SIP/2.0\r\n{headers}\r\n\r\n{body}").into_bytes()
}

/// The common headers of the evasion tests' INVITEs.
fn invite_headers() -> String {
    format!(
        "Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK-evasion\r\n\
         From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: {CALL_ID}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70"
    )
}

/// What an evasion test runs against: heptap tracing SIP and connection events on a TCP
/// listener, its collector, and an upstream that only reads (so only the client's direction
/// carries SIP).
struct Evasion {
    heptap: heptap::Running,
    up: heptap_tests::fault::ScriptedUpstream,
    col: UdpCollector,
    /// Holds the MI's files while heptap runs.
    _dir: Scratch,
}

async fn evasion_tap() -> Evasion {
    use heptap_tests::fault::{ScriptedUpstream, UpstreamScript};
    let up = ScriptedUpstream::bind(UpstreamScript::Sink).await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, col.addr, "", &dir)).await;
    Evasion {
        heptap,
        up,
        col,
        _dir: dir,
    }
}

/// Sends `bytes` through heptap, closes, and checks the upstream got them unchanged.
async fn relay_to_sink(
    heptap: &heptap::Running,
    up: &mut heptap_tests::fault::ScriptedUpstream,
    bytes: &[u8],
) -> SocketAddr {
    let mut client = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    let me = client.local_addr().unwrap();
    client.write_all(bytes).await.unwrap();
    client.shutdown().await.unwrap();
    let received = tokio::time::timeout(WAIT, up.received.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(received == bytes, "relayed unchanged");
    me
}

/// The SIP_FRAMING_LOST events among `got`.
fn framing_lost(got: &[Packet]) -> Vec<&Packet> {
    got.iter()
        .filter(|p| event_of(p) == "SIP_FRAMING_LOST")
        .collect()
}

/// Packets until `events` SIP_FRAMING_LOST events and `sip` SIP packets have arrived.
async fn lost_and_sip(col: &mut UdpCollector, events: usize, sip: usize) -> Vec<Packet> {
    col.until(WAIT, |g| {
        framing_lost(g).len() >= events && g.iter().filter(|p| is_sip(p)).count() >= sip
    })
    .await
}

#[tokio::test]
async fn an_invite_with_a_17_kib_header_is_traced_whole() {
    let mut t = evasion_tap().await;
    let big = format!("{}\r\nX-Big: {}", invite_headers(), "b".repeat(17 * 1024));
    let msg = invite(&format!("{big}\r\nContent-Length: 0"), "");
    let me = relay_to_sink(&t.heptap, &mut t.up, &msg).await;
    let got = sip_packets(&mut t.col, 1).await;
    let sip = got.iter().find(|p| is_sip(p)).unwrap();
    assert!(
        sip.payload.as_deref() == Some(msg.as_slice()),
        "traced whole"
    );
    assert_eq!(correlation(sip), CALL_ID);
    assert_eq!(sip.src(), Some(me));
    assert!(framing_lost(&got).is_empty());
    assert_eq!(stat(&t.heptap, "sip_malformed"), Some(0));
    t.heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn an_invite_with_disagreeing_content_lengths_is_traced_with_a_framing_lost_event() {
    let mut t = evasion_tap().await;
    let body = "v=0\r\no=- 1 1\r\n";
    let msg = invite(
        &format!(
            "{}\r\nContent-Length: 14\r\nContent-Length: 0",
            invite_headers()
        ),
        body,
    );
    let head = &msg[..msg.len() - body.len()];
    let me = relay_to_sink(&t.heptap, &mut t.up, &msg).await;
    let got = lost_and_sip(&mut t.col, 1, 1).await;
    let accepted = got.iter().find(|p| event_of(p) == "ACCEPTED").unwrap();
    let lost = framing_lost(&got)[0];
    assert_eq!(
        correlation(lost),
        correlation(accepted),
        "on the client leg"
    );
    assert_eq!((lost.proto_type, lost.src()), (Some(89), Some(me)));
    assert_eq!(
        heptap_tests::events::parts_of(lost),
        heptap_tests::events::owned(&[
            ("Protocol", "TCP"),
            ("Event", "SIP_FRAMING_LOST"),
            ("Status", "FAILURE"),
            (
                "Message",
                &format!(
                    "from the client: Content-Length headers disagree (14, 0); {} bytes",
                    head.len()
                )
            ),
        ])
    );
    // The readable part, the head, is traced as SIP so Homer shows the INVITE.
    let sip = got.iter().find(|p| is_sip(p)).unwrap();
    assert!(sip.payload.as_deref() == Some(head), "the head is traced");
    assert_eq!(correlation(sip), CALL_ID);
    assert_eq!(stat(&t.heptap, "sip_framing_lost"), Some(1));
    t.heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_message_over_max_message_bytes_is_relayed_and_its_head_traced_with_the_event() {
    let mut t = evasion_tap().await;
    let body = "x".repeat(70_000);
    let msg = invite(
        &format!("{}\r\nContent-Length: {}", invite_headers(), body.len()),
        &body,
    );
    let head = &msg[..msg.len() - body.len()];
    relay_to_sink(&t.heptap, &mut t.up, &msg).await;
    let got = lost_and_sip(&mut t.col, 1, 1).await;
    assert_eq!(
        part(framing_lost(&got)[0], "Message"),
        format!(
            "from the client: a message over max_message_bytes (65535); {} bytes",
            msg.len()
        )
    );
    let sip = got.iter().find(|p| is_sip(p)).unwrap();
    assert!(sip.payload.as_deref() == Some(head), "the head is traced");
    assert_eq!(stat(&t.heptap, "sip_oversize"), Some(1));
    t.heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn garbage_and_a_message_without_content_length_are_each_reported_once() {
    let mut t = evasion_tap().await;
    let no_length = invite(&invite_headers(), "");
    let [_, ack, _] = client_messages();
    let stream = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".as_slice(),
        &ack,
        &no_length,
        &ack,
    ]
    .concat();
    relay_to_sink(&t.heptap, &mut t.up, &stream).await;
    let got = lost_and_sip(&mut t.col, 2, 3).await;
    let texts: Vec<String> = framing_lost(&got)
        .iter()
        .map(|p| part(p, "Message"))
        .collect();
    assert_eq!(
        texts,
        [
            "from the client: not a SIP start line; 16 bytes".to_owned(),
            format!(
                "from the client: no Content-Length; {} bytes",
                no_length.len()
            ),
        ]
    );
    // Both ACKs, and the readable head without a length.
    let sip: Vec<&[u8]> = got
        .iter()
        .filter(|p| is_sip(p))
        .map(|p| p.payload.as_deref().unwrap())
        .collect();
    assert_eq!(sip, [ack.as_slice(), no_length.as_slice(), ack.as_slice()]);
    t.heptap.shutdown(Stop::Immediate).await;
}
