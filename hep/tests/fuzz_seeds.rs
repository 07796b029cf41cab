//! The committed cargo-fuzz seed corpus (hep/fuzz/corpus/*/seed-*): valid packets of every
//! version and family. `cargo test -p heptap-hep --test fuzz_seeds -- --ignored` rewrites them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use std::net::SocketAddr;
use std::path::PathBuf;

use heptap_hep::{Encoder, PayloadMode, TraceMessage, Version, decode, ip_proto, proto_type};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn sip(src: &str, dst: &str) -> TraceMessage {
    TraceMessage::new(
        proto_type::SIP,
        ip_proto::UDP,
        addr(src),
        addr(dst),
        1313440459,
        120000,
    )
    .payload(
        &b"INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: abc@host\r\nCSeq: 1 INVITE\r\n\r\n"[..],
    )
    .correlation("abc@host")
    .extra_correlation("net", "42")
}

fn net_event() -> TraceMessage {
    TraceMessage::new(
        proto_type::NET,
        ip_proto::TLS,
        addr("10.0.0.1:40000"),
        addr("10.0.0.2:5061"),
        1,
        2,
    )
    .correlation("10289601672139926570")
    .part("Protocol", "TLS")
    .part("Event", "ACCEPTED")
    .part("Status", "SUCCESS")
    .part("Message", "Connection accepted...")
}

/// (file name, packet) for every seed.
fn decode_seeds() -> Vec<(&'static str, Vec<u8>, Version)> {
    let v4 = sip("212.202.0.1:12010", "82.116.0.211:5060");
    let v6 = sip("[2001:db8::1]:5060", "[2001:db8::2]:5060");
    let extras = Encoder {
        capture_id: 2002,
        auth_key: Some(b"secret".to_vec()),
        node_name: Some("edge-1".into()),
        mode: PayloadMode::Json { pretty: true },
        ..Encoder::default()
    };
    let homer5 = Encoder {
        mode: PayloadMode::homer5(),
        ..Encoder::default()
    };
    let enc = |e: &Encoder, m: &TraceMessage| {
        let mut out = Vec::new();
        e.encode(m, &mut out).unwrap();
        out
    };
    vec![
        (
            "seed-v1-ipv4",
            enc(&Encoder::new(Version::V1), &v4),
            Version::V1,
        ),
        (
            "seed-v1-ipv6",
            enc(&Encoder::new(Version::V1), &v6),
            Version::V1,
        ),
        (
            "seed-v2-ipv4",
            enc(&Encoder::new(Version::V2), &v4),
            Version::V2,
        ),
        (
            "seed-v2-ipv6",
            enc(&Encoder::new(Version::V2), &v6),
            Version::V2,
        ),
        (
            "seed-v3-ipv4-sip",
            enc(&Encoder::default(), &v4),
            Version::V3,
        ),
        ("seed-v3-ipv6-sip-extras", enc(&extras, &v6), Version::V3),
        (
            "seed-v3-ipv4-net-homer5",
            enc(&homer5, &net_event()),
            Version::V3,
        ),
        (
            "seed-v3-ipv4-net-json",
            enc(&extras, &net_event()),
            Version::V3,
        ),
    ]
}

/// Framer seeds: a read size byte, then a stream of several frames.
fn framer_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let frames: Vec<u8> = decode_seeds()
        .into_iter()
        .filter(|(_, _, v)| *v == Version::V3)
        .flat_map(|(_, p, _)| p)
        .collect();
    vec![
        ("seed-stream-step7", [&[7u8][..], &frames].concat()),
        ("seed-stream-step255", [&[255u8][..], &frames].concat()),
    ]
}

#[test]
fn committed_decode_seeds_are_valid_packets_of_each_version() {
    for (name, bytes, version) in decode_seeds() {
        let on_disk = std::fs::read(corpus("decode").join(name)).unwrap();
        assert_eq!(on_disk, bytes, "{name} is stale: rerun with --ignored");
        assert_eq!(decode(&on_disk).unwrap().version, version, "{name}");
    }
    for (name, bytes) in framer_seeds() {
        assert_eq!(
            std::fs::read(corpus("framer").join(name)).unwrap(),
            bytes,
            "{name}"
        );
    }
}

#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_fuzz_seed_corpus() {
    for (name, bytes, _) in decode_seeds() {
        std::fs::write(corpus("decode").join(name), bytes).unwrap();
    }
    for (name, bytes) in framer_seeds() {
        std::fs::write(corpus("framer").join(name), bytes).unwrap();
    }
}
