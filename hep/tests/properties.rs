//! Properties over generated inputs: round trips for every version and family, decoding that
//! never panics, and framing that survives any split or coalescing of a stream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use heptap_hep::{
    Chunk, EncodeError, Encoder, Hep3Framer, MAX_PACKET_LEN, Packet, PayloadMode, TraceMessage,
    Version, decode, payload,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from)
    ]
}

/// Chunks that have no field in `Packet`: vendor chunks and generic ids the decoder keeps as is.
fn arb_other_chunk() -> impl Strategy<Value = Chunk> {
    (any::<u16>(), any::<u16>(), arb_bytes(40))
        .prop_filter(
            "generic chunks with a field are not 'other'",
            |(vendor, id, _)| *vendor != 0 || !(matches!(*id, 0x01..=0x13) || *id == 0x65),
        )
        .prop_map(|(vendor, id, data)| Chunk { vendor, id, data })
}

fn arb_v3_packet() -> impl Strategy<Value = Packet> {
    let header = (
        option::of(any::<u8>()),
        option::of(any::<u8>()),
        option::of(arb_ip()),
        option::of(arb_ip()),
        option::of(any::<u16>()),
        option::of(any::<u16>()),
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        option::of(any::<u8>()),
        option::of(any::<u32>()),
        option::of(any::<u16>()),
        option::of(any::<u16>()),
    );
    let octets = (
        option::of(arb_bytes(16)),
        option::of(arb_bytes(700)),
        option::of(arb_bytes(40)),
        option::of(arb_bytes(40)),
        option::of(arb_bytes(16)),
        option::of(arb_bytes(60)),
        vec(arb_other_chunk(), 0..6),
    );
    (header, octets).prop_map(|(h, o)| {
        let mut p = Packet::new(Version::V3);
        (p.ip_family, p.ip_proto, p.src_ip, p.dst_ip) = (h.0, h.1, h.2, h.3);
        (p.src_port, p.dst_port, p.ts_sec, p.ts_usec) = (h.4, h.5, h.6, h.7);
        (p.proto_type, p.capture_id, p.keep_alive, p.vlan) = (h.8, h.9, h.10, h.11);
        (p.auth_key, p.payload, p.compressed_payload) = (o.0, o.1, o.2);
        (p.correlation_id, p.node_name, p.extra_correlation, p.chunks) = (o.3, o.4, o.5, o.6);
        p
    })
}

/// A v1/v2 packet as a decoder sees it: every header field present, one family for both sides.
fn arb_v12_packet() -> impl Strategy<Value = Packet> {
    let addrs = prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| (2, a.into(), b.into())),
        (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(a, b)| (10, a.into(), b.into())),
    ];
    (
        prop_oneof![Just(Version::V1), Just(Version::V2)],
        addrs,
        any::<u8>(),
        any::<(u16, u16, u32, u32, u16)>(),
        arb_bytes(700),
    )
        .prop_map(|(version, (family, src, dst), ip_proto, n, payload)| {
            let mut p = Packet::new(version);
            p.ip_family = Some(family);
            p.ip_proto = Some(ip_proto);
            (p.src_ip, p.dst_ip) = (Some(src), Some(dst));
            (p.src_port, p.dst_port) = (Some(n.0), Some(n.1));
            if version == Version::V2 {
                (p.ts_sec, p.ts_usec, p.capture_id) = (Some(n.2), Some(n.3), Some(u32::from(n.4)));
            }
            p.payload = Some(payload);
            p
        })
}

fn arb_packet() -> impl Strategy<Value = Packet> {
    prop_oneof![arb_v3_packet(), arb_v12_packet()]
}

fn arb_text() -> impl Strategy<Value = Cow<'static, str>> {
    prop_oneof![
        "[a-zA-Z_]{0,12}".prop_map(Cow::Owned),
        any::<String>().prop_map(Cow::Owned),
        Just(Cow::Borrowed("sip")),
        Just(Cow::Borrowed("net")),
    ]
}

fn arb_parts(max: usize) -> impl Strategy<Value = Vec<(Cow<'static, str>, Cow<'static, str>)>> {
    vec((arb_text(), arb_text()), 0..max)
}

fn arb_message() -> impl Strategy<Value = TraceMessage> {
    (
        any::<(u8, u8, u32, u32)>(),
        arb_ip(),
        arb_ip(),
        any::<(u16, u16)>(),
        option::of(arb_text()),
        option::of(arb_bytes(600)),
        arb_parts(6),
        arb_parts(3),
    )
        .prop_map(
            |(n, src, dst, ports, corr, raw, parts, extra)| TraceMessage {
                proto_type: n.0,
                ip_proto: n.1,
                src: SocketAddr::new(src, ports.0),
                dst: SocketAddr::new(dst, ports.1),
                ts_sec: n.2,
                ts_usec: n.3,
                correlation_id: corr,
                payload: raw,
                parts,
                extra_correlation: extra,
            },
        )
}

fn arb_encoder() -> impl Strategy<Value = Encoder> {
    let mode = prop_oneof![
        any::<bool>().prop_map(|pretty| PayloadMode::Json { pretty }),
        "[:|;,]{1,2}".prop_map(|delim| PayloadMode::Homer5 { delim }),
    ];
    let version = prop_oneof![Just(Version::V1), Just(Version::V2), Just(Version::V3)];
    (
        version,
        mode,
        any::<u16>(),
        option::of(vec(any::<u8>(), 0..20)),
        option::of("[a-z0-9-]{0,12}"),
    )
        .prop_map(|(version, mode, capture_id, auth_key, node_name)| Encoder {
            version,
            mode,
            capture_id: u32::from(capture_id),
            auth_key,
            node_name,
        })
}

/// What the single family chunk (or v1/v2 header) makes of src and dst.
fn wire_ips(src: IpAddr, dst: IpAddr) -> (u8, IpAddr, IpAddr) {
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
        v6 => v6,
    };
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (2, src, dst),
        _ => (10, v6(src), v6(dst)),
    }
}

/// The packet a decoder must see for `msg` encoded with `enc`, written from the rules in
/// docs/hep.md rather than from the encoder's code.
fn expected_packet(enc: &Encoder, msg: &TraceMessage) -> Packet {
    let (family, src, dst) = wire_ips(msg.src.ip(), msg.dst.ip());
    let mut p = Packet::new(enc.version);
    p.ip_family = Some(family);
    p.ip_proto = Some(msg.ip_proto);
    (p.src_ip, p.dst_ip) = (Some(src), Some(dst));
    (p.src_port, p.dst_port) = (Some(msg.src.port()), Some(msg.dst.port()));
    let built = (!msg.parts.is_empty()).then(|| Bytes::from(payload::build(&msg.parts, &enc.mode)));
    let body = built.or_else(|| msg.payload.clone());
    if enc.version != Version::V3 {
        p.payload = Some(body.unwrap_or_default());
        if enc.version == Version::V2 {
            (p.ts_sec, p.ts_usec, p.capture_id) =
                (Some(msg.ts_sec), Some(msg.ts_usec), Some(enc.capture_id));
        }
        return p;
    }
    (p.ts_sec, p.ts_usec) = (Some(msg.ts_sec), Some(msg.ts_usec));
    p.proto_type = Some(msg.proto_type);
    p.capture_id = Some(enc.capture_id);
    p.payload = body;
    let own = msg
        .correlation_id
        .as_deref()
        .map(|c| Bytes::copy_from_slice(c.as_bytes()));
    match &enc.mode {
        PayloadMode::Json { pretty } => {
            if !msg.extra_correlation.is_empty() {
                let mut text = Vec::new();
                payload::write_json(&mut text, &msg.extra_correlation, *pretty);
                p.extra_correlation = Some(text.into());
            }
            p.correlation_id = own;
        }
        PayloadMode::Homer5 { .. } => {
            let sip = msg
                .extra_correlation
                .iter()
                .rev()
                .find(|(k, _)| k.starts_with("sip"));
            p.correlation_id = sip
                .map(|(_, v)| Bytes::copy_from_slice(v.as_bytes()))
                .or(own);
        }
    }
    p.auth_key = enc.auth_key.clone().map(Bytes::from);
    p.node_name = enc.node_name.clone().map(Bytes::from);
    p
}

/// Every decode error must say where; offsets never point past the input.
fn check_decode(bytes: &[u8]) -> Option<Packet> {
    match decode(bytes) {
        Ok(p) => Some(p),
        Err(e) => {
            assert!(e.offset() <= bytes.len(), "{e} for {} bytes", bytes.len());
            assert!(
                e.to_string().contains(&format!("at offset {}", e.offset())),
                "{e}"
            );
            None
        }
    }
}

proptest! {
    #[test]
    fn any_packet_of_any_version_round_trips(p in arb_packet()) {
        let mut out = Vec::new();
        p.encode(&mut out).unwrap();
        prop_assert_eq!(decode(&out).unwrap(), p);
    }

    #[test]
    fn any_trace_message_decodes_to_what_the_encoder_settings_promise(
        enc in arb_encoder(),
        msg in arb_message(),
    ) {
        let mut out = Vec::new();
        match enc.encode(&msg, &mut out) {
            Ok(()) => {
                prop_assert!(out.len() <= MAX_PACKET_LEN);
                prop_assert_eq!(decode(&out).unwrap(), expected_packet(&enc, &msg));
            }
            Err(EncodeError::TooLarge { len }) => {
                prop_assert!(len > MAX_PACKET_LEN);
                prop_assert!(out.is_empty());
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn json_payloads_parse_back_to_the_parts_in_order(
        parts in vec(("[a-z]{1,3}", any::<String>()), 1..6),
        pretty in any::<bool>(),
    ) {
        let mut keys = parts.iter().map(|(k, _)| k).collect::<Vec<_>>();
        keys.sort();
        keys.dedup();
        prop_assume!(keys.len() == parts.len());
        let mut text = Vec::new();
        payload::write_json(&mut text, &parts, pretty);
        let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text).unwrap();
        let back: Vec<(String, String)> = parsed
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap().to_owned()))
            .collect();
        prop_assert_eq!(back, parts);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..512)) {
        check_decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_hep3_shaped_bytes(tail in vec(any::<u8>(), 0..400), fix_len in any::<bool>()) {
        let mut bytes = [&b"HEP3"[..], &[0, 0], &tail].concat();
        let len = if fix_len { bytes.len() as u16 } else { u16::from_be_bytes([tail.first().copied().unwrap_or(0), 7]) };
        bytes[4..6].copy_from_slice(&len.to_be_bytes());
        check_decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutated_valid_packets(
        p in arb_packet(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in option::of(any::<prop::sample::Index>()),
        fix_len in any::<bool>(),
    ) {
        let mut bytes = Vec::new();
        p.encode(&mut bytes).unwrap();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if fix_len && bytes.len() >= 6 && &bytes[..4] == b"HEP3" {
            let len = bytes.len() as u16;
            bytes[4..6].copy_from_slice(&len.to_be_bytes());
        }
        if let Some(decoded) = check_decode(&bytes) {
            // Whatever decodes re-encodes to something that decodes the same.
            let mut again = Vec::new();
            decoded.encode(&mut again).unwrap();
            prop_assert_eq!(decode(&again).unwrap(), decoded);
        }
    }

    #[test]
    fn framer_returns_every_frame_whatever_the_read_sizes(
        packets in vec(arb_v3_packet(), 1..6),
        cuts in vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let frames: Vec<Vec<u8>> = packets
            .iter()
            .map(|p| {
                let mut out = Vec::new();
                p.encode(&mut out).unwrap();
                out
            })
            .collect();
        let stream = frames.concat();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.extend([0, stream.len()]);
        points.sort_unstable();
        let mut framer = Hep3Framer::new();
        let mut got = Vec::new();
        for w in points.windows(2) {
            framer.push(&stream[w[0]..w[1]]);
            while let Some(frame) = framer.next_frame().unwrap() {
                got.push(frame.to_vec());
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(framer.buffered(), 0);
        prop_assert_eq!(framer.stream_offset(), stream.len() as u64);
    }

    #[test]
    fn framer_reports_garbage_at_the_offset_where_it_starts(
        packets in vec(arb_v3_packet(), 0..4),
        garbage in vec(any::<u8>(), 1..20),
    ) {
        prop_assume!(!b"HEP3".starts_with(&garbage[..garbage.len().min(4)]));
        prop_assume!(!b"EEP3".starts_with(&garbage[..garbage.len().min(4)]));
        let mut stream = Vec::new();
        for p in &packets {
            p.encode(&mut stream).unwrap();
        }
        let good = stream.len() as u64;
        stream.extend_from_slice(&garbage);
        let mut framer = Hep3Framer::new();
        framer.push(&stream);
        for _ in &packets {
            prop_assert!(framer.next_frame().unwrap().is_some());
        }
        let err = framer.next_frame().unwrap_err();
        let at_good = matches!(err, heptap_hep::FrameError::BadMagic { offset, .. } if offset == good);
        prop_assert!(at_good, "{err}");
    }
}

#[test]
fn ipv4_mapped_addresses_in_a_v6_pair_stay_ipv6() {
    let mapped = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201));
    let m = TraceMessage::new(
        1,
        17,
        SocketAddr::new(mapped, 1),
        SocketAddr::new(mapped, 2),
        0,
        0,
    );
    let mut out = Vec::new();
    Encoder::default().encode(&m, &mut out).unwrap();
    assert_eq!(decode(&out).unwrap().src_ip, Some(mapped));
}
