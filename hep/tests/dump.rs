//! The hep-dump JSON line (`Packet::to_json`): key order, text vs base64, parsed JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use std::net::SocketAddr;

use heptap_hep::{Encoder, TraceMessage, Version, decode, ip_proto, proto_type};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn line(bytes: &[u8]) -> String {
    serde_json::to_string(&decode(bytes).unwrap().to_json()).unwrap()
}

#[test]
fn a_net_event_dumps_every_field_in_the_documented_order() {
    let m = TraceMessage::new(
        proto_type::NET,
        ip_proto::TLS,
        addr("10.0.0.1:40000"),
        addr("10.0.0.2:5061"),
        1_700_000_000,
        5,
    )
    .correlation("42")
    .part("Protocol", "TLS")
    .part("Event", "CONNECTED")
    .extra_correlation("net", "41");
    let enc = Encoder {
        capture_id: 7,
        auth_key: Some(b"k".to_vec()),
        node_name: Some("edge-1".into()),
        ..Encoder::default()
    };
    let mut out = Vec::new();
    enc.encode(&m, &mut out).unwrap();
    assert_eq!(
        line(&out),
        concat!(
            r#"{"version":3,"ip_family":2,"ip_proto":22,"#,
            r#""src_ip":"10.0.0.1","src_port":40000,"dst_ip":"10.0.0.2","dst_port":5061,"#,
            r#""ts_sec":1700000000,"ts_usec":5,"proto_type":89,"proto_type_name":"net","#,
            r#""capture_id":7,"correlation_id":"42","extra_correlation":{"net":"41"},"#,
            r#""payload":"{\"Protocol\":\"TLS\",\"Event\":\"CONNECTED\"}","#,
            r#""payload_json":{"Protocol":"TLS","Event":"CONNECTED"},"#,
            r#""auth_key":"k","node_name":"edge-1"}"#
        )
    );
}

#[test]
fn a_binary_payload_is_base64_and_a_v2_packet_has_no_proto_type() {
    let v2 = [
        &[2u8, 16, 2, 17, 0, 1, 0, 2, 1, 1, 1, 1, 2, 2, 2, 2][..],
        &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0],
        &[0xff, 0xfe, 0x00],
    ]
    .concat();
    assert_eq!(
        line(&v2),
        concat!(
            r#"{"version":2,"ip_family":2,"ip_proto":17,"#,
            r#""src_ip":"1.1.1.1","src_port":1,"dst_ip":"2.2.2.2","dst_port":2,"#,
            r#""ts_sec":1,"ts_usec":2,"capture_id":3,"payload_base64":"//4A"}"#
        )
    );
}

#[test]
fn other_chunks_are_listed_with_name_value_and_hex() {
    let p = [
        &b"HEP3"[..],
        &[0, 46],
        &[0, 0, 0, 0x20, 0, 8, 0x01, 0xa4],              // MOS 420
        &[0, 0, 0, 0x24, 0, 10, b'c', b'a', b'l', b'l'], // transaction type "call"
        &[0, 8, 0, 0x01, 0, 7, 0x09],                    // vendor 8 (Genesys) chunk 1
        &[0, 0, 0, 0x0b, 0, 7, 0x99],                    // proto type 153: no name
        &[0, 0, 0, 0x10, 0, 8, 0x1f, 0x8b],              // compressed payload
    ]
    .concat();
    assert_eq!(
        line(&p),
        concat!(
            r#"{"version":3,"proto_type":153,"compressed_payload_base64":"H4s=","chunks":["#,
            r#"{"vendor":0,"id":32,"name":"mos","value":420,"hex":"01a4"},"#,
            r#"{"vendor":0,"id":36,"name":"transaction_type","value":"call","hex":"63616c6c"},"#,
            r#"{"vendor":8,"id":1,"name":null,"hex":"09"}]}"#
        )
    );
}

#[test]
fn an_extra_correlation_that_is_not_json_is_given_as_text() {
    let p = [&b"HEP3"[..], &[0, 15], &[0, 0, 0, 0x65, 0, 9], b"net"].concat();
    assert_eq!(line(&p), r#"{"version":3,"extra_correlation":"net"}"#);
}

#[test]
fn v1_dump_carries_addresses_and_payload_only() {
    let m = TraceMessage::new(1, 17, addr("[::1]:1"), addr("[::2]:2"), 9, 9).payload(&b"x"[..]);
    let mut out = Vec::new();
    Encoder::new(Version::V1).encode(&m, &mut out).unwrap();
    assert_eq!(
        line(&out),
        r#"{"version":1,"ip_family":10,"ip_proto":17,"src_ip":"::1","src_port":1,"dst_ip":"::2","dst_port":2,"payload":"x"}"#
    );
}
