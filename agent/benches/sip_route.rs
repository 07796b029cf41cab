//! `sip_trace_route` per message: a typical route (method, From user, source address, a header)
//! run through `Route::eval_sip` over `SipMessage`, the accessor the tap uses, for a 600-byte
//! INVITE that the route traces and for a 200 OK it drops; and a route that reads no SIP value,
//! which must cost no header parsing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup may unwrap

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use heptap::sip::SipMessage;
use heptap_filters::{AddressGroups, ConnInfo, Routes, Source};
use heptap_hep::NetProto;

const ROUTES: &str = r#"
route[typical] {
    if (is_method("OPTIONS")) drop;
    if (is_method("INVITE") && !has_totag() && $fU == "alice" && $si == "192.0.2.10") {
        trace("alice");
        exit;
    }
    if ($hdr(X-Account) == "gold") trace("gold");
    if ($rs >= 400) trace("errors");
}

route[connection_only] {
    if ($si == "198.51.100.1" || $proto == "ws") drop;
}
"#;

const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
    Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
    Max-Forwards: 70\r\n\
    From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
    To: Bob <sip:bob@biloxi.example.com>\r\n\
    Call-ID: 3848276298220188511@atlanta.example.com\r\n\
    CSeq: 1 INVITE\r\n\
    Contact: <sip:alice@client.atlanta.example.com;transport=tcp>\r\n\
    X-Account: gold\r\n\
    Content-Type: application/sdp\r\n\
    Content-Length: 0\r\n\r\n";

const OK_200: &[u8] = b"SIP/2.0 200 OK\r\n\
    Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
    From: Carol <sip:carol@atlanta.example.com>;tag=9fxced76sl\r\n\
    To: Bob <sip:bob@biloxi.example.com>;tag=8321234356\r\n\
    Call-ID: 3848276298220188511@atlanta.example.com\r\n\
    CSeq: 1 OPTIONS\r\n\
    Content-Length: 0\r\n\r\n";

fn bench(c: &mut Criterion) {
    let routes = Routes::compile(
        &[Source::new("bench.cfg", ROUTES)],
        &AddressGroups::default(),
    )
    .expect("routes compile");
    let typical = routes.get("typical").unwrap();
    let plain = routes.get("connection_only").unwrap();
    let conn = ConnInfo {
        remote: "192.0.2.10:40000".parse().unwrap(),
        local: "192.0.2.1:5060".parse().unwrap(),
        proto: NetProto::Tcp,
    };
    let mut group = c.benchmark_group("sip_trace_route");
    group.bench_function("typical route, INVITE traced", |b| {
        b.iter(|| typical.eval_sip(black_box(&conn), &SipMessage::new(black_box(INVITE))))
    });
    group.bench_function("typical route, OPTIONS 200 dropped", |b| {
        b.iter(|| typical.eval_sip(black_box(&conn), &SipMessage::new(black_box(OK_200))))
    });
    group.bench_function("route without SIP values", |b| {
        b.iter(|| plain.eval_sip(black_box(&conn), &SipMessage::new(black_box(INVITE))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
