//! Filter route evaluation: the per-connection cost of `trace_filter_route`.
//!
//! `ten_rules` is a 10-rule route mixing every kind of check (`$si ==`, `is_in_subnet`,
//! `check_source_address`, `$proto`, `$sp` comparisons, `=~`) evaluated against a connection
//! that passes all ten rules, so every rule runs. `tutorial` is the one-line tutorial route.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup may unwrap

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use heptap_filters::{AddressGroups, ConnInfo, Routes, Source, Verdict};
use heptap_hep::NetProto;

const TEN_RULES: &str = r#"
route[ten_rules] {
    if ($si == "192.0.2.1") drop;
    if (is_in_subnet($si, "198.51.100.0/24")) drop;
    if (check_source_address("blocked")) drop;
    if ($proto == "udp") drop;
    if ($sp < 1024) drop;
    if ($si =~ "^203\.0\.113\.") drop;
    if ($Rp == 5080) drop;
    if ($si == "2001:db8::1") drop;
    if (!is_in_subnet($si, "10.0.0.0/8") && $proto == "ws") drop;
    if (check_source_address("trusted")) exit;
    drop;
}

route[tutorial] {
    if ($si == "10.10.10.10")
        drop;
}
"#;

fn groups() -> AddressGroups {
    let mut table = BTreeMap::new();
    table.insert(
        "blocked".to_owned(),
        vec![
            "192.0.2.128/25".parse().unwrap(),
            "2001:db8:bad::/48".parse().unwrap(),
            "203.0.113.7/32".parse().unwrap(),
        ],
    );
    table.insert(
        "trusted".to_owned(),
        vec![
            "10.0.0.0/8".parse().unwrap(),
            "172.16.0.0/12".parse().unwrap(),
            "2001:db8:1::/48".parse().unwrap(),
        ],
    );
    AddressGroups::new(&table)
}

fn eval(c: &mut Criterion) {
    let routes = Routes::compile(&[Source::new("bench.cfg", TEN_RULES)], &groups()).unwrap();
    let ten_rules = routes.get("ten_rules").unwrap();
    let tutorial = routes.get("tutorial").unwrap();

    let v4 = ConnInfo {
        remote: "10.1.2.3:40000".parse().unwrap(),
        local: "10.0.0.1:5060".parse().unwrap(),
        proto: NetProto::Tcp,
    };
    let v6 = ConnInfo {
        remote: "[2001:db8:1::42]:40000".parse().unwrap(),
        local: "[2001:db8::5]:5060".parse().unwrap(),
        proto: NetProto::Tls,
    };
    assert_eq!(ten_rules.eval(&v4), Verdict::Trace);
    assert_eq!(ten_rules.eval(&v6), Verdict::Trace);

    c.bench_function("ten_rules_ipv4", |b| {
        b.iter(|| ten_rules.eval(black_box(&v4)))
    });
    c.bench_function("ten_rules_ipv6", |b| {
        b.iter(|| ten_rules.eval(black_box(&v6)))
    });
    c.bench_function("tutorial", |b| b.iter(|| tutorial.eval(black_box(&v4))));
    c.bench_function("compile_ten_rules", |b| {
        let groups = groups();
        b.iter(|| Routes::compile(&[Source::new("bench.cfg", black_box(TEN_RULES))], &groups))
    });
}

criterion_group!(benches, eval);
criterion_main!(benches);
