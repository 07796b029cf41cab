//! Feeds arbitrary UTF-8 to `Routes::compile` (lexer, parser, compiler, error formatting) and
//! evaluates whatever compiles against a few connections. Nothing may panic, overflow the stack
//! or hang.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use heptap_filters::{AddressGroups, ConnInfo, Routes, Source};
use heptap_hep::NetProto;
use libfuzzer_sys::fuzz_target;

fn groups() -> &'static AddressGroups {
    static GROUPS: OnceLock<AddressGroups> = OnceLock::new();
    GROUPS.get_or_init(|| {
        let mut table = BTreeMap::new();
        let nets = |items: &[&str]| -> Vec<ipnet::IpNet> {
            items.iter().filter_map(|item| item.parse().ok()).collect()
        };
        table.insert("1".to_owned(), nets(&["10.10.10.0/24", "192.0.2.10/32"]));
        table.insert("trusted".to_owned(), nets(&["10.0.0.0/8", "2001:db8::/32"]));
        AddressGroups::new(&table)
    })
}

fn conns() -> [ConnInfo; 3] {
    let conn = |remote: &str, local: &str, proto| ConnInfo {
        remote: remote.parse().unwrap_or_else(|_| ([127, 0, 0, 1], 1).into()),
        local: local.parse().unwrap_or_else(|_| ([127, 0, 0, 1], 2).into()),
        proto,
    };
    [
        conn("10.10.10.10:5060", "10.0.0.1:5061", NetProto::Tcp),
        conn("[2001:db8::7]:40000", "[2001:db8::1]:5061", NetProto::Wss),
        conn("[::ffff:192.0.2.10]:1", "0.0.0.0:0", NetProto::Ws),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Split into two sources at the first NUL, so cross-source calls and locations are covered.
    let (first, second) = text.split_once('\0').unwrap_or((text, ""));
    let sources = [Source::new("a.cfg", first), Source::new("inline", second)];
    match Routes::compile(&sources, groups()) {
        Ok(routes) => {
            for name in routes.names() {
                if let Some(route) = routes.get(name) {
                    for conn in &conns() {
                        let _ = route.eval(conn);
                    }
                }
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            let _ = errors.to_string();
        }
    }
});
