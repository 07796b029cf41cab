//! SIP framing throughput: a stream of 600-byte INVITEs pushed in 16 KiB reads (messages split
//! across reads included), as the relay would hand them over; plus `parse_head` per message.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use heptap::sip::{Limits, SipFramer, parse_head};
use std::hint::black_box;

/// One INVITE of exactly 600 bytes: a typical head and an SDP-like body.
fn invite() -> Vec<u8> {
    let head_without_length = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
        Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
        Max-Forwards: 70\r\n\
        From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
        To: Bob <sip:bob@biloxi.example.com>\r\n\
        Call-ID: 3848276298220188511@atlanta.example.com\r\n\
        CSeq: 1 INVITE\r\n\
        Contact: <sip:alice@client.atlanta.example.com;transport=tcp>\r\n\
        Content-Type: application/sdp\r\n";
    // "Content-Length: NNN\r\n\r\n" is 23 bytes for a three-digit length.
    let body_len = 600 - head_without_length.len() - 23;
    let msg = format!(
        "{head_without_length}Content-Length: {body_len}\r\n\r\n{}",
        "v=0\r\no=alice 2890844526 2890844526 IN IP4 client.atlanta.example.com\r\n"
            .repeat(8)
            .get(..body_len)
            .unwrap_or_default()
    );
    assert_eq!(msg.len(), 600);
    msg.into_bytes()
}

fn framing(c: &mut Criterion) {
    let msg = invite();
    let count = 10_000;
    let stream = msg.repeat(count);
    let mut group = c.benchmark_group("sip_framer");
    group.throughput(Throughput::Elements(count as u64));
    group.bench_function("600B INVITEs in 16 KiB reads", |b| {
        b.iter(|| {
            let mut framer = SipFramer::new(Limits::default());
            let mut n = 0usize;
            for read in stream.chunks(16 * 1024) {
                framer.push(black_box(read), |m| n += m.len());
            }
            assert_eq!(n, stream.len());
        })
    });
    group.bench_function("600B INVITEs in 16 KiB reads + parse_head", |b| {
        b.iter(|| {
            let mut framer = SipFramer::new(Limits::default());
            let mut n = 0usize;
            for read in stream.chunks(16 * 1024) {
                framer.push(black_box(read), |m| {
                    if let Ok(head) = parse_head(&m) {
                        n += head.call_id.map_or(0, str::len);
                    }
                });
            }
            assert_eq!(n, count * "3848276298220188511@atlanta.example.com".len());
        })
    });
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
