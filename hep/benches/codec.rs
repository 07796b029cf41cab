//! HEPv3 packets encoded and decoded per second, with a 600-byte SIP payload (the common case:
//! one traced SIP message per packet). Run with `cargo bench -p heptap-hep --bench codec`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup may unwrap

use std::hint::black_box;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use heptap_hep::{Encoder, PayloadMode, TraceMessage, decode, decode_bytes, ip_proto, proto_type};

/// A SIP INVITE padded with SDP to exactly 600 bytes.
fn sip_600() -> Bytes {
    let mut sip = concat!(
        "INVITE sip:bob@example.com SIP/2.0\r\n",
        "Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bK776asdhds\r\n",
        "Max-Forwards: 70\r\n",
        "To: Bob <sip:bob@example.com>\r\n",
        "From: Alice <sip:alice@example.com>;tag=1928301774\r\n",
        "Call-ID: a84b4c76e66710@pc33.example.com\r\n",
        "CSeq: 314159 INVITE\r\n",
        "Contact: <sip:alice@10.0.0.1:5061;transport=tls>\r\n",
        "Content-Type: application/sdp\r\n",
        "Content-Length: 142\r\n\r\n",
        "v=0\r\no=alice 2890844526 2890844526 IN IP4 10.0.0.1\r\ns=-\r\n",
        "c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
    )
    .to_owned();
    while sip.len() < 600 {
        sip.push_str("a=x\r\n");
    }
    sip.truncate(600);
    Bytes::from(sip)
}

fn message() -> TraceMessage {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    TraceMessage::new(
        proto_type::SIP,
        ip_proto::TLS,
        addr("10.0.0.1:5061"),
        addr("10.0.0.2:5061"),
        1_700_000_000,
        123_456,
    )
    .payload(sip_600())
    .correlation("a84b4c76e66710@pc33.example.com")
    .extra_correlation("net", "10289601672139926570")
}

fn codec(c: &mut Criterion) {
    let msg = message();
    let enc = Encoder {
        mode: PayloadMode::Json { pretty: true },
        ..Encoder::default()
    };
    let mut out = Vec::with_capacity(2048);
    enc.encode(&msg, &mut out).unwrap();
    let packet = out.clone();
    let shared = Bytes::from(packet.clone());

    let mut group = c.benchmark_group("hepv3_600b_sip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            enc.encode(black_box(&msg), &mut out).unwrap();
            black_box(out.len())
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| black_box(decode(black_box(&packet)).unwrap()))
    });
    group.bench_function("decode_bytes_zero_copy", |b| {
        b.iter(|| black_box(decode_bytes(black_box(shared.clone())).unwrap()))
    });
    group.bench_function("decode_to_json", |b| {
        b.iter(|| black_box(decode(black_box(&packet)).unwrap().to_json()))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
