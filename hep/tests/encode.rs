//! Encoder behaviour: chunk placement per payload mode, limits, and what happens on error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use std::net::SocketAddr;

use heptap_hep::{
    EncodeError, Encoder, Hep3Framer, MAX_PACKET_LEN, PayloadMode, TraceMessage, Version, chunk,
    decode, ip_proto, proto_type,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn msg() -> TraceMessage {
    TraceMessage::new(
        proto_type::LOG,
        ip_proto::TCP,
        addr("192.0.2.1:5060"),
        addr("192.0.2.1:5060"),
        1,
        2,
    )
}

fn encode(enc: &Encoder, m: &TraceMessage) -> Vec<u8> {
    let mut out = Vec::new();
    enc.encode(m, &mut out).unwrap();
    out
}

/// (vendor, id, data) of every chunk, in wire order.
fn chunks(packet: &[u8]) -> Vec<(u16, u16, Vec<u8>)> {
    let mut at = 6;
    let mut list = Vec::new();
    while at < packet.len() {
        let be = |i: usize| u16::from_be_bytes([packet[i], packet[i + 1]]);
        let len = usize::from(be(at + 4));
        list.push((be(at), be(at + 2), packet[at + 6..at + len].to_vec()));
        at += len;
    }
    list
}

fn ids(packet: &[u8]) -> Vec<u16> {
    chunks(packet).into_iter().map(|(_, id, _)| id).collect()
}

fn data(packet: &[u8], id: u16) -> Option<Vec<u8>> {
    chunks(packet).into_iter().find(|c| c.1 == id).map(|c| c.2)
}

fn homer5() -> Encoder {
    Encoder {
        mode: PayloadMode::homer5(),
        ..Encoder::default()
    }
}

const FIXED: [u16; 10] = [0x01, 0x02, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x03, 0x04];

#[test]
fn json_mode_puts_extra_correlation_after_the_payload_and_before_the_correlation_id() {
    let m = msg()
        .part("Event", "ERROR")
        .extra_correlation("sip", "call-1")
        .correlation("call-1");
    let out = encode(&Encoder::default(), &m);
    assert_eq!(ids(&out), [&FIXED[..], &[0x0f, 0x65, 0x11]].concat());
    assert_eq!(
        data(&out, chunk::EXTRA_CORRELATION).unwrap(),
        br#"{"sip":"call-1"}"#
    );
}

#[test]
fn homer5_mode_never_writes_extra_correlation_and_drops_non_sip_keys() {
    let m = msg()
        .part("Event", "x")
        .extra_correlation("net", "7")
        .correlation("cid");
    let out = encode(&homer5(), &m);
    assert_eq!(ids(&out), [&FIXED[..], &[0x0f, 0x11]].concat());
    assert_eq!(data(&out, chunk::CORRELATION_ID).unwrap(), b"cid");
}

#[test]
fn homer5_mode_sip_extra_correlation_replaces_the_correlation_id() {
    let m = msg()
        .correlation("RESTCORRxyz")
        .extra_correlation("sip", "call-id@host");
    let out = encode(&homer5(), &m);
    assert_eq!(data(&out, chunk::CORRELATION_ID).unwrap(), b"call-id@host");
    assert_eq!(ids(&out).iter().filter(|&&id| id == 0x11).count(), 1);
}

#[test]
fn homer5_mode_sip_extra_correlation_creates_the_correlation_id_when_there_is_none() {
    let m = msg()
        .extra_correlation("sipx", "a")
        .extra_correlation("net", "1");
    let out = encode(&homer5(), &m);
    assert_eq!(ids(&out), [&FIXED[..], &[0x11]].concat());
    assert_eq!(data(&out, chunk::CORRELATION_ID).unwrap(), b"a");
}

#[test]
fn a_message_without_payload_has_no_payload_chunk() {
    // OpenSIPS's correlate() control packet: no payload, only the extra correlation.
    let m = TraceMessage::new(
        proto_type::CONTROL,
        ip_proto::TCP,
        addr("127.0.0.2:0"),
        addr("127.0.0.2:0"),
        5,
        6,
    )
    .extra_correlation("sip", "a")
    .extra_correlation("net", "b");
    let enc = Encoder {
        mode: PayloadMode::Json { pretty: true },
        ..Encoder::default()
    };
    let out = encode(&enc, &m);
    assert_eq!(ids(&out), [&FIXED[..], &[0x65]].concat());
    assert_eq!(
        data(&out, 0x65).unwrap(),
        b"{\n\t\"sip\":\t\"a\",\n\t\"net\":\t\"b\"\n}"
    );
    assert_eq!(decode(&out).unwrap().payload, None);
}

#[test]
fn an_empty_raw_payload_is_an_empty_payload_chunk() {
    let out = encode(&Encoder::default(), &msg().payload(&b""[..]));
    assert_eq!(ids(&out), [&FIXED[..], &[0x0f]].concat());
    assert_eq!(out.len(), 93 + 6);
}

#[test]
fn payload_parts_take_the_place_of_the_raw_payload() {
    let m = msg().payload(&b"raw"[..]).part("payload", "built");
    assert_eq!(data(&encode(&homer5(), &m), 0x0f).unwrap(), b"built");
    assert_eq!(
        data(&encode(&Encoder::default(), &m), 0x0f).unwrap(),
        br#"{"payload":"built"}"#
    );
}

#[test]
fn auth_key_and_node_name_come_last_when_configured() {
    let enc = Encoder {
        auth_key: Some(vec![0xff, 0x00]),
        node_name: Some("n".into()),
        ..Encoder::default()
    };
    let out = encode(&enc, &msg().payload(&b"p"[..]).correlation("c"));
    assert_eq!(ids(&out), [&FIXED[..], &[0x0f, 0x11, 0x0e, 0x13]].concat());
    assert_eq!(data(&out, chunk::AUTH_KEY).unwrap(), [0xff, 0x00]);
}

#[test]
fn a_frame_of_exactly_65535_bytes_is_encoded() {
    let payload = vec![b'x'; MAX_PACKET_LEN - 93 - 6];
    let out = encode(&Encoder::default(), &msg().payload(payload));
    assert_eq!(out.len(), 65535);
    assert_eq!(&out[4..6], &[0xff, 0xff]);
    assert!(decode(&out).is_ok());
}

#[test]
fn one_byte_more_is_refused_with_the_size_and_the_buffer_is_left_alone() {
    let payload = vec![b'x'; MAX_PACKET_LEN - 93 - 6 + 1];
    let mut out = b"earlier packet".to_vec();
    let err = Encoder::default().encode(&msg().payload(payload), &mut out);
    assert_eq!(err, Err(EncodeError::TooLarge { len: 65536 }));
    assert_eq!(out, b"earlier packet");
    assert_eq!(
        err.unwrap_err().to_string(),
        "HEP packet would be 65536 bytes, more than the 65535 a HEP packet can hold"
    );
}

#[test]
fn oversized_parts_and_v1_payloads_are_refused_too() {
    let big = "y".repeat(70_000);
    let mut out = Vec::new();
    let r = Encoder::default().encode(&msg().part("k", big.clone()), &mut out);
    assert!(matches!(r, Err(EncodeError::TooLarge { len }) if len == 93 + 6 + 70_000 + 8));
    let r = Encoder::new(Version::V1).encode(&msg().payload(big.into_bytes()), &mut out);
    assert_eq!(r, Err(EncodeError::TooLarge { len: 16 + 70_000 }));
    assert!(out.is_empty());
}

#[test]
fn v2_refuses_a_capture_id_wider_than_16_bits() {
    let enc = Encoder {
        version: Version::V2,
        capture_id: 65536,
        ..Encoder::default()
    };
    let mut out = vec![1];
    assert_eq!(
        enc.encode(&msg(), &mut out),
        Err(EncodeError::CaptureIdOutOfRange { capture_id: 65536 })
    );
    assert_eq!(out, [1]);
}

#[test]
fn mixed_families_are_sent_as_ipv6_with_the_ipv4_side_mapped() {
    let m = TraceMessage::new(
        proto_type::NET,
        ip_proto::TCP,
        addr("192.0.2.7:1000"),
        addr("[2001:db8::5]:5060"),
        0,
        0,
    );
    let p = decode(&encode(&Encoder::default(), &m)).unwrap();
    assert_eq!(p.ip_family, Some(10));
    assert_eq!(p.src(), Some(addr("[::ffff:192.0.2.7]:1000")));
    assert_eq!(p.dst(), Some(addr("[2001:db8::5]:5060")));

    let v2 = Encoder {
        version: Version::V2,
        ..Encoder::default()
    };
    let out = encode(&v2, &m);
    assert_eq!(&out[..4], &[2, 40, 10, 6]);
    assert_eq!(
        decode(&out).unwrap().src(),
        Some(addr("[::ffff:192.0.2.7]:1000"))
    );
}

#[test]
fn encode_appends_so_packets_can_be_batched_and_framed_apart() {
    let enc = Encoder::default();
    let mut out = Vec::new();
    enc.encode(&msg().payload(&b"one"[..]), &mut out).unwrap();
    let first = out.len();
    enc.encode(&msg().payload(&b"two"[..]), &mut out).unwrap();
    let mut framer = Hep3Framer::new();
    framer.push(&out);
    let a = framer.next_frame().unwrap().unwrap();
    let b = framer.next_frame().unwrap().unwrap();
    assert_eq!(a.len(), first);
    assert_eq!(decode(&b).unwrap().payload.as_deref(), Some(&b"two"[..]));
    assert_eq!(framer.next_frame(), Ok(None));
}

#[test]
fn debug_output_never_shows_the_auth_key() {
    let enc = Encoder {
        auth_key: Some(b"hunter2".to_vec()),
        ..Encoder::default()
    };
    let text = format!("{enc:?}");
    assert!(text.contains("auth_key: Some(\"<redacted>\")"), "{text}");
    assert!(!text.contains("104, 117"), "{text}");
}
