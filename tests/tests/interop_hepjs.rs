//! hep-js (sipcapture's Node.js HEP3 library, npm hep-js 1.0.22) as an independent oracle:
//! it decodes packets built by heptap-hep field by field, and `heptap hep-dump` decodes packets
//! hep-js built, over UDP and over TCP.
//!
//! hep-js reads IPv4 and UTF-8 payloads only (spec/hep.md §7.2), so these packets stay within
//! that. Chunk 0x0065 (extra correlation) is known to hep-js through a vendor-0 extension the
//! scripts register, and shows up as `rcinfo.extra_correlation`.

// A test crate: helpers unwrap because a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use heptap_hep::{Encoder, PayloadMode, TraceMessage, Version, ip_proto, proto_type};
use heptap_tests::interop::{HepDump, HepjsDecoder, SendTo, hepjs_encode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

const CALL_ID: &str = "a84b4c76e66710@pc33.atlanta.example.com";

/// An INVITE as it crosses the relay (RFC 3261 §24.2, trimmed).
fn invite(call_id: &str) -> String {
    format!(
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\n\
         To: Bob <sip:bob@biloxi.example.com>\r\n\
         From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 314159 INVITE\r\n\
         Contact: <sip:alice@192.0.2.10:5060>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Encodes with heptap-hep, sends one datagram to hep-js, returns what hep-js decoded.
fn decoded_by_hepjs(encoder: &Encoder, msg: &TraceMessage) -> Value {
    let mut packet = Vec::new();
    encoder.encode(msg, &mut packet).unwrap();
    let mut hepjs = HepjsDecoder::start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&packet, hepjs.addr).unwrap();
    serde_json::from_str(&hepjs.next_json(WAIT)).unwrap()
}

fn encoder(mode: PayloadMode) -> Encoder {
    Encoder {
        version: Version::V3,
        mode,
        capture_id: 2001,
        auth_key: Some(b"s3cret-key".to_vec()),
        node_name: Some("edge-1".to_owned()),
    }
}

#[test]
fn hep_js_decodes_every_field_of_a_heptap_hep3_sip_packet() {
    let msg = TraceMessage::new(
        proto_type::SIP,
        ip_proto::UDP,
        addr("192.0.2.10:5060"),
        addr("198.51.100.7:5062"),
        1_700_000_123,
        456_789,
    )
    .correlation(CALL_ID)
    .payload(invite(CALL_ID).into_bytes());

    let got = decoded_by_hepjs(&encoder(PayloadMode::default()), &msg);

    assert_eq!(
        got,
        json!({
            "rcinfo": {
                "protocolFamily": 2,
                "protocol": 17,
                "srcIp": "192.0.2.10",
                "dstIp": "198.51.100.7",
                "srcPort": 5060,
                "dstPort": 5062,
                "timeSeconds": 1_700_000_123,
                "timeUseconds": 456_789,
                "payloadType": 1,
                "captureId": 2001,
                "capturePass": "s3cret-key",
                "hepNodeName": "edge-1",
                "correlation_id": CALL_ID,
            },
            "payload": invite(CALL_ID),
        })
    );
}

#[test]
fn hep_js_decodes_a_heptap_net_event_in_json_mode_with_its_extra_correlation() {
    // The upstream leg of a relayed connection: its own id in 0x11, the client leg's in 0x65.
    let msg = TraceMessage::new(
        proto_type::NET,
        ip_proto::TCP,
        addr("127.0.0.1:5060"),
        addr("127.0.0.1:41000"),
        1_700_000_200,
        7,
    )
    .correlation("co-18")
    .part("Protocol", "tcp")
    .part("Event", "CONNECTED")
    .part("Status", "0")
    .part("Message", "success")
    .extra_correlation("net", "co-17");

    let got = decoded_by_hepjs(&encoder(PayloadMode::Json { pretty: false }), &msg);

    assert_eq!(
        got,
        json!({
            "rcinfo": {
                "protocolFamily": 2,
                "protocol": 6,
                "srcIp": "127.0.0.1",
                "dstIp": "127.0.0.1",
                "srcPort": 5060,
                "dstPort": 41000,
                "timeSeconds": 1_700_000_200,
                "timeUseconds": 7,
                "payloadType": 89,
                "captureId": 2001,
                "capturePass": "s3cret-key",
                "hepNodeName": "edge-1",
                "correlation_id": "co-18",
                "extra_correlation": r#"{"net":"co-17"}"#,
            },
            "payload": r#"{"Protocol":"tcp","Event":"CONNECTED","Status":"0","Message":"success"}"#,
        })
    );
}

#[test]
fn hep_js_decodes_a_heptap_net_event_in_homer5_mode() {
    let msg = TraceMessage::new(
        proto_type::NET,
        ip_proto::TCP,
        addr("203.0.113.9:53122"),
        addr("127.0.0.1:5062"),
        1_700_000_300,
        999_999,
    )
    .correlation("co-19")
    .part("Protocol", "tcp")
    .part("Event", "ACCEPTED")
    .part("Status", "0")
    .part("Message", "success");

    let got = decoded_by_hepjs(&encoder(PayloadMode::homer5()), &msg);

    assert_eq!(
        got,
        json!({
            "rcinfo": {
                "protocolFamily": 2,
                "protocol": 6,
                "srcIp": "203.0.113.9",
                "dstIp": "127.0.0.1",
                "srcPort": 53122,
                "dstPort": 5062,
                "timeSeconds": 1_700_000_300,
                "timeUseconds": 999_999,
                "payloadType": 89,
                "captureId": 2001,
                "capturePass": "s3cret-key",
                "hepNodeName": "edge-1",
                "correlation_id": "co-19",
            },
            "payload": "tcp:ACCEPTED:0:success",
        })
    );
}

/// hep-js input for one SIP packet with every field hep-js can encode.
fn hepjs_sip(call_id: &str, src_port: u16, usec: u32) -> String {
    json!({
        "payload": invite(call_id),
        "rcinfo": {
            "protocolFamily": 2,
            "protocol": 17,
            "srcIp": "192.0.2.10",
            "dstIp": "198.51.100.7",
            "srcPort": src_port,
            "dstPort": 5060,
            "timeSeconds": 1_700_000_400,
            "timeUseconds": usec,
            "payloadType": 1,
            "captureId": 3002,
            "capturePass": "hep-js-key",
            "hepNodeName": "hepjs-node",
            "correlation_id": call_id,
        },
    })
    .to_string()
}

/// What hep-dump must print for [`hepjs_sip`] (hep-js writes no other chunk).
fn dumped_sip(call_id: &str, src_port: u16, usec: u32) -> Value {
    json!({
        "version": 3,
        "ip_family": 2,
        "ip_proto": 17,
        "src_ip": "192.0.2.10",
        "src_port": src_port,
        "dst_ip": "198.51.100.7",
        "dst_port": 5060,
        "ts_sec": 1_700_000_400,
        "ts_usec": usec,
        "proto_type": 1,
        "proto_type_name": "sip",
        "capture_id": 3002,
        "correlation_id": call_id,
        "payload": invite(call_id),
        "auth_key": "hep-js-key",
        "node_name": "hepjs-node",
    })
}

#[test]
fn hep_dump_decodes_a_hep_js_sip_packet_sent_over_udp() {
    let mut dump = HepDump::start(&["udp:127.0.0.1:0"]);
    let udp = dump.udp.unwrap();

    hepjs_encode(&[hepjs_sip(CALL_ID, 5070, 1)], SendTo::Udp(udp));

    let got: Value = serde_json::from_str(&dump.next_json(WAIT)).unwrap();
    assert_eq!(
        got,
        dumped_sip(CALL_ID, 5070, 1),
        "stderr:\n{}",
        dump.stderr()
    );
}

#[test]
fn hep_dump_splits_hep_js_packets_sent_back_to_back_over_one_tcp_connection() {
    let mut dump = HepDump::start(&["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]);
    let tcp = dump.tcp.unwrap();
    let calls = ["call-1@hepjs", "call-2@hepjs", "call-3@hepjs"];
    let lines: Vec<String> = calls
        .iter()
        .zip(1u16..)
        .map(|(call, i)| hepjs_sip(call, 5070 + i, u32::from(i)))
        .collect();

    hepjs_encode(&lines, SendTo::Tcp(tcp));

    for (call, i) in calls.iter().zip(1u16..) {
        let got: Value = serde_json::from_str(&dump.next_json(WAIT)).unwrap();
        assert_eq!(
            got,
            dumped_sip(call, 5070 + i, u32::from(i)),
            "stderr:\n{}",
            dump.stderr()
        );
    }
}

#[test]
fn hep_dump_decodes_a_hep_js_net_event_with_extra_correlation() {
    let mut dump = HepDump::start(&["udp:127.0.0.1:0"]);
    let udp = dump.udp.unwrap();
    let event = json!({
        "payload": r#"{"Protocol":"tcp","Event":"ACCEPTED","Status":"0","Message":"success"}"#,
        "rcinfo": {
            "protocolFamily": 2,
            "protocol": 6,
            "srcIp": "203.0.113.9",
            "dstIp": "127.0.0.1",
            "srcPort": 53122,
            "dstPort": 5062,
            "timeSeconds": 1_700_000_500,
            "timeUseconds": 42,
            "payloadType": 89,
            "captureId": 3002,
            "hepNodeName": "hepjs-node",
            "correlation_id": "co-21",
            "extra_correlation": r#"{"net":"co-20"}"#,
        },
    });

    let packets = hepjs_encode(&[event.to_string()], SendTo::Udp(udp));

    let got: Value = serde_json::from_str(&dump.next_json(WAIT)).unwrap();
    assert_eq!(
        got,
        json!({
            "version": 3,
            "ip_family": 2,
            "ip_proto": 6,
            "src_ip": "203.0.113.9",
            "src_port": 53122,
            "dst_ip": "127.0.0.1",
            "dst_port": 5062,
            "ts_sec": 1_700_000_500,
            "ts_usec": 42,
            "proto_type": 89,
            "proto_type_name": "net",
            "capture_id": 3002,
            "correlation_id": "co-21",
            "extra_correlation": {"net": "co-20"},
            "payload": r#"{"Protocol":"tcp","Event":"ACCEPTED","Status":"0","Message":"success"}"#,
            "payload_json": {"Protocol": "tcp", "Event": "ACCEPTED", "Status": "0", "Message": "success"},
            "node_name": "hepjs-node",
        }),
        "packet: {packets:02x?}\nstderr:\n{}",
        dump.stderr()
    );
}
