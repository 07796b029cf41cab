//! Golden vectors: packets written out byte by byte, decoded and encoded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use heptap_hep::{
    Chunk, Encoder, Packet, PayloadMode, TraceMessage, Version, decode, ip_proto, proto_type,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn encode(enc: &Encoder, msg: &TraceMessage) -> Vec<u8> {
    let mut out = Vec::new();
    enc.encode(msg, &mut out).unwrap();
    out
}

/// The HEP3 specification's example (spec/hep.md §9 item 8), in the specification's chunk order.
fn spec_example() -> Vec<u8> {
    [
        &b"HEP3"[..],
        &[0x00, 0x71],                                   // total length 113
        &[0, 0, 0, 0x01, 0, 7, 0x02],                    // family AF_INET
        &[0, 0, 0, 0x02, 0, 7, 0x11],                    // ip proto 17 (UDP)
        &[0, 0, 0, 0x03, 0, 10, 212, 202, 0, 1],         // src 212.202.0.1
        &[0, 0, 0, 0x04, 0, 10, 82, 116, 0, 211],        // dst 82.116.0.211
        &[0, 0, 0, 0x07, 0, 8, 0x2e, 0xea],              // src port 12010
        &[0, 0, 0, 0x08, 0, 8, 0x13, 0xc4],              // dst port 5060
        &[0, 0, 0, 0x09, 0, 10, 0x4e, 0x49, 0x82, 0xcb], // ts 1313440459
        &[0, 0, 0, 0x0a, 0, 10, 0x00, 0x01, 0xd4, 0xc0], // usec 120000
        &[0, 0, 0, 0x0b, 0, 7, 0x01],                    // proto type SIP
        &[0, 0, 0, 0x0c, 0, 10, 0x00, 0x00, 0x00, 0xe4], // capture id 228
        &[0, 0, 0, 0x0f, 0, 0x14],                       // payload, 20 bytes
        b"INVITE sip:bob",
    ]
    .concat()
}

#[test]
fn spec_example_is_113_bytes_and_decodes_to_its_fields() {
    let bytes = spec_example();
    assert_eq!(bytes.len(), 113);
    let p = decode(&bytes).unwrap();
    assert_eq!(p.version, Version::V3);
    assert_eq!(p.ip_family, Some(2));
    assert_eq!(p.ip_proto, Some(17));
    assert_eq!(p.src(), Some(addr("212.202.0.1:12010")));
    assert_eq!(p.dst(), Some(addr("82.116.0.211:5060")));
    assert_eq!((p.ts_sec, p.ts_usec), (Some(1313440459), Some(120000)));
    assert_eq!(p.proto_type, Some(proto_type::SIP));
    assert_eq!(p.capture_id, Some(228));
    assert_eq!(p.payload.as_deref(), Some(&b"INVITE sip:bob"[..]));
    assert_eq!(p.correlation_id, None);
    assert!(p.chunks.is_empty());
}

#[test]
fn spec_example_reencodes_with_equal_semantics_in_opensips_order() {
    let decoded = decode(&spec_example()).unwrap();
    let msg = TraceMessage::new(
        proto_type::SIP,
        ip_proto::UDP,
        addr("212.202.0.1:12010"),
        addr("82.116.0.211:5060"),
        1313440459,
        120000,
    )
    .payload(&b"INVITE sip:bob"[..]);
    let enc = Encoder {
        capture_id: 228,
        ..Encoder::default()
    };
    let ours = encode(&enc, &msg);
    assert_eq!(ours.len(), 113, "same chunks, same sizes");
    assert_ne!(
        ours,
        spec_example(),
        "OpenSIPS's order puts ports before addresses"
    );
    assert_eq!(decode(&ours).unwrap(), decoded);

    let mut again = Vec::new();
    decoded.encode(&mut again).unwrap();
    assert_eq!(
        again, ours,
        "Packet::encode writes the same order as Encoder"
    );
}

const NET_CID: &str = "10289601672139926570";

/// OpenSIPS's TCP ACCEPTED net event (opensips-tracing.md §2.2), as a tracer hands it over.
fn tcp_accepted() -> TraceMessage {
    TraceMessage::new(
        proto_type::NET,
        ip_proto::TCP,
        addr("10.0.0.1:40000"),
        addr("10.0.0.2:5060"),
        1_700_000_000,
        123_456,
    )
    .correlation(NET_CID)
    .part("Protocol", "TCP")
    .part("Event", "ACCEPTED")
    .part("Status", "SUCCESS")
    .part("Message", "Connection accepted...")
}

/// The 93 bytes before the payload chunk: header and the fixed chunks, in OpenSIPS's order.
fn tcp_accepted_head(total_len: u8) -> Vec<u8> {
    [
        &b"HEP3"[..],
        &[0x00, total_len],
        &[0, 0, 0, 0x01, 0, 7, 0x02],       // family AF_INET
        &[0, 0, 0, 0x02, 0, 7, 0x06],       // ip proto TCP
        &[0, 0, 0, 0x07, 0, 8, 0x9c, 0x40], // src port 40000
        &[0, 0, 0, 0x08, 0, 8, 0x13, 0xc4], // dst port 5060
        &[0, 0, 0, 0x09, 0, 10, 0x65, 0x53, 0xf1, 0x00], // ts 1700000000
        &[0, 0, 0, 0x0a, 0, 10, 0x00, 0x01, 0xe2, 0x40], // usec 123456
        &[0, 0, 0, 0x0b, 0, 7, 0x59],       // proto type net (89)
        &[0, 0, 0, 0x0c, 0, 10, 0, 0, 0, 1], // capture id 1
        &[0, 0, 0, 0x03, 0, 10, 10, 0, 0, 1], // src 10.0.0.1
        &[0, 0, 0, 0x04, 0, 10, 10, 0, 0, 2], // dst 10.0.0.2
    ]
    .concat()
}

const CORRELATION_CHUNK: &[u8] = &[0, 0, 0, 0x11, 0, 26]; // + the 20-digit connection id

#[test]
fn tcp_accepted_in_homer5_mode_is_168_bytes() {
    let expected = [
        &tcp_accepted_head(168)[..],
        &[0, 0, 0, 0x0f, 0, 49],
        b"TCP:ACCEPTED:SUCCESS:Connection accepted...",
        CORRELATION_CHUNK,
        NET_CID.as_bytes(),
    ]
    .concat();
    let enc = Encoder {
        mode: PayloadMode::homer5(),
        ..Encoder::default()
    };
    let out = encode(&enc, &tcp_accepted());
    assert_eq!(out.len(), 168);
    assert_eq!(out, expected);
}

#[test]
fn tcp_accepted_in_pretty_json_mode_is_229_bytes() {
    let expected = [
        &tcp_accepted_head(229)[..],
        &[0, 0, 0, 0x0f, 0, 110],
        b"{\n\t\"Protocol\":\t\"TCP\",\n\t\"Event\":\t\"ACCEPTED\",\n\t\"Status\":\t\"SUCCESS\",\n\t\"Message\":\t\"Connection accepted...\"\n}",
        CORRELATION_CHUNK,
        NET_CID.as_bytes(),
    ]
    .concat();
    let enc = Encoder {
        mode: PayloadMode::Json { pretty: true },
        ..Encoder::default()
    };
    let out = encode(&enc, &tcp_accepted());
    assert_eq!(out.len(), 229);
    assert_eq!(out, expected);
}

#[test]
fn tcp_accepted_decodes_back_to_the_parts_as_json() {
    let out = encode(&Encoder::default(), &tcp_accepted());
    let p = decode(&out).unwrap();
    assert_eq!(
        p.payload.as_deref(),
        Some(&br#"{"Protocol":"TCP","Event":"ACCEPTED","Status":"SUCCESS","Message":"Connection accepted..."}"#[..])
    );
    assert_eq!(p.correlation_id.as_deref(), Some(NET_CID.as_bytes()));
    assert_eq!(p.extra_correlation, None);
}

/// SIP over TLS between IPv6 peers, with extra correlation, auth key and node name.
fn ipv6_sip_over_tls() -> Vec<u8> {
    let a1 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let a2 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    [
        &b"HEP3"[..],
        &[0x00, 0xcc],                                   // total length 204
        &[0, 0, 0, 0x01, 0, 7, 0x0a],                    // family AF_INET6 (10)
        &[0, 0, 0, 0x02, 0, 7, 0x16],                    // ip proto 22: OpenSIPS's TLS stand-in
        &[0, 0, 0, 0x07, 0, 8, 0x13, 0xc5],              // src port 5061
        &[0, 0, 0, 0x08, 0, 8, 0x13, 0xc5],              // dst port 5061
        &[0, 0, 0, 0x09, 0, 10, 0x65, 0x53, 0xf1, 0x00], // ts 1700000000
        &[0, 0, 0, 0x0a, 0, 10, 0x00, 0x00, 0x00, 0x07], // usec 7
        &[0, 0, 0, 0x0b, 0, 7, 0x01],                    // proto type SIP
        &[0, 0, 0, 0x0c, 0, 10, 0, 0, 0x07, 0xd2],       // capture id 2002
        &[0, 0, 0, 0x05, 0, 22],                         // src 2001:db8::1
        &a1,
        &[0, 0, 0, 0x06, 0, 22], // dst 2001:db8::2
        &a2,
        &[0, 0, 0, 0x0f, 0, 31],
        b"OPTIONS sip:bob SIP/2.0\r\n",
        &[0, 0, 0, 0x65, 0, 18], // extra correlation (compact JSON)
        br#"{"net":"42"}"#,
        &[0, 0, 0, 0x11, 0, 14], // correlation id (Call-ID)
        b"abc@host",
        &[0, 0, 0, 0x0e, 0, 12], // auth key
        b"secret",
        &[0, 0, 0, 0x13, 0, 12], // node name
        b"edge-1",
    ]
    .concat()
}

#[test]
fn ipv6_packet_with_heptap_extras_is_written_in_opensips_order_then_extras() {
    let msg = TraceMessage::new(
        proto_type::SIP,
        ip_proto::TLS,
        addr("[2001:db8::1]:5061"),
        addr("[2001:db8::2]:5061"),
        1_700_000_000,
        7,
    )
    .payload(&b"OPTIONS sip:bob SIP/2.0\r\n"[..])
    .correlation("abc@host")
    .extra_correlation("net", "42");
    let enc = Encoder {
        capture_id: 2002,
        auth_key: Some(b"secret".to_vec()),
        node_name: Some("edge-1".into()),
        ..Encoder::default()
    };
    let out = encode(&enc, &msg);
    assert_eq!(out, ipv6_sip_over_tls());

    let p = decode(&out).unwrap();
    assert_eq!(p.ip_family, Some(10));
    assert_eq!(p.src(), Some(addr("[2001:db8::1]:5061")));
    assert_eq!(p.dst(), Some(addr("[2001:db8::2]:5061")));
    assert_eq!(
        p.extra_correlation.as_deref(),
        Some(&br#"{"net":"42"}"#[..])
    );
    assert_eq!(p.auth_key.as_deref(), Some(&b"secret"[..]));
    assert_eq!(p.node_name.as_deref(), Some(&b"edge-1"[..]));
}

/// HEPv2 as OpenSIPS/Kamailio/captagent write it: the spec example's fields, time header
/// little-endian with a 16-bit capture id and 2 padding bytes.
fn v2_packet() -> Vec<u8> {
    [
        &[0x02, 16, 0x02, 0x11][..], // hp_v 2, hp_l 16 (header + addresses), AF_INET, UDP
        &[0x2e, 0xea, 0x13, 0xc4],   // ports 12010 -> 5060, big-endian
        &[212, 202, 0, 1],           // src
        &[82, 116, 0, 211],          // dst
        &[0xcb, 0x82, 0x49, 0x4e],   // tv_sec 1313440459, little-endian
        &[0xc0, 0xd4, 0x01, 0x00],   // tv_usec 120000, little-endian
        &[0xe4, 0x00],               // captid 228, 16-bit little-endian
        &[0x00, 0x00],               // struct padding
        b"INVITE sip:bob",
    ]
    .concat()
}

fn spec_example_message() -> TraceMessage {
    TraceMessage::new(
        proto_type::SIP,
        ip_proto::UDP,
        addr("212.202.0.1:12010"),
        addr("82.116.0.211:5060"),
        1313440459,
        120000,
    )
    .payload(&b"INVITE sip:bob"[..])
}

#[test]
fn v2_packet_encodes_and_decodes_byte_for_byte() {
    let enc = Encoder {
        version: Version::V2,
        capture_id: 228,
        ..Encoder::default()
    };
    let out = encode(&enc, &spec_example_message());
    assert_eq!(out, v2_packet());
    assert_eq!(out.len(), 42);

    let p = decode(&out).unwrap();
    assert_eq!(p.version, Version::V2);
    assert_eq!(p.src(), Some(addr("212.202.0.1:12010")));
    assert_eq!(p.dst(), Some(addr("82.116.0.211:5060")));
    assert_eq!(
        (p.ts_sec, p.ts_usec, p.capture_id),
        (Some(1313440459), Some(120000), Some(228))
    );
    assert_eq!(p.proto_type, None, "v1/v2 have no proto type");
    assert_eq!(p.payload.as_deref(), Some(&b"INVITE sip:bob"[..]));
}

#[test]
fn v2_from_opensips_keeps_its_8_trailing_zero_bytes_in_the_payload() {
    let mut opensips = v2_packet();
    opensips.extend_from_slice(&[0; 8]);
    let p = decode(&opensips).unwrap();
    assert_eq!(
        p.payload.as_deref(),
        Some(&b"INVITE sip:bob\0\0\0\0\0\0\0\0"[..])
    );
}

/// HEPv1 over IPv6: header, 16-byte addresses, payload; no time header.
fn v1_ipv6_packet() -> Vec<u8> {
    let mut a1 = [0u8; 16];
    a1[..2].copy_from_slice(&[0xfe, 0x80]);
    a1[15] = 1;
    let mut a2 = a1;
    a2[15] = 2;
    [
        &[0x01, 40, 0x0a, 0x06][..], // hp_v 1, hp_l 40, AF_INET6, TCP
        &[0x13, 0xc4, 0x9c, 0x40],   // ports 5060 -> 40000
        &a1,                         // src fe80::1
        &a2,                         // dst fe80::2
        b"SIP/2.0 200 OK\r\n",
    ]
    .concat()
}

#[test]
fn v1_ipv6_packet_encodes_and_decodes_byte_for_byte() {
    let msg = TraceMessage::new(
        proto_type::SIP,
        ip_proto::TCP,
        addr("[fe80::1]:5060"),
        addr("[fe80::2]:40000"),
        1,
        2,
    )
    .payload(&b"SIP/2.0 200 OK\r\n"[..])
    .correlation("dropped in v1");
    let out = encode(&Encoder::new(Version::V1), &msg);
    assert_eq!(out, v1_ipv6_packet());

    let mut expected = Packet::new(Version::V1);
    expected.ip_family = Some(10);
    expected.ip_proto = Some(6);
    expected.src_ip = Some(ip("fe80::1"));
    expected.src_port = Some(5060);
    expected.dst_ip = Some(ip("fe80::2"));
    expected.dst_port = Some(40000);
    expected.payload = Some(Bytes::from_static(b"SIP/2.0 200 OK\r\n"));
    assert_eq!(decode(&out).unwrap(), expected);
}

#[test]
fn v1_packet_carries_the_built_parts_text_as_payload() {
    let enc = Encoder {
        version: Version::V1,
        mode: PayloadMode::homer5(),
        ..Encoder::default()
    };
    let out = encode(&enc, &tcp_accepted());
    assert_eq!(&out[16..], b"TCP:ACCEPTED:SUCCESS:Connection accepted...");
}

#[test]
fn vendor_and_unknown_chunks_are_kept_in_wire_order() {
    let mut bytes = spec_example();
    bytes.extend_from_slice(&[0, 3, 0, 0x20, 0, 8, 0xab, 0xcd]); // OpenSIPS vendor chunk
    bytes.extend_from_slice(&[0, 0, 0x01, 0x00, 0, 6]); // unassigned generic id 0x100, empty
    bytes.extend_from_slice(&[0, 0, 0, 0x0b, 0, 7, 0x64]); // a second proto type chunk
    let len = bytes.len() as u16;
    bytes[4..6].copy_from_slice(&len.to_be_bytes());
    let p = decode(&bytes).unwrap();
    assert_eq!(
        p.proto_type,
        Some(1),
        "the first occurrence fills the field"
    );
    assert_eq!(
        p.chunks,
        vec![
            Chunk {
                vendor: 3,
                id: 0x20,
                data: Bytes::from_static(&[0xab, 0xcd])
            },
            Chunk {
                vendor: 0,
                id: 0x100,
                data: Bytes::new()
            },
            Chunk {
                vendor: 0,
                id: 0x0b,
                data: Bytes::from_static(&[0x64])
            },
        ]
    );
    let mut again = Vec::new();
    p.encode(&mut again).unwrap();
    assert_eq!(decode(&again).unwrap(), p);
}
