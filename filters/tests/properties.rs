//! Properties that hold for any input: compiling never panics, errors always point inside the
//! source, and address checks agree with plain address arithmetic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use heptap_filters::{AddressGroups, ConnInfo, Routes, Source, Verdict};
use heptap_hep::NetProto;
use ipnet::IpNet;
use proptest::prelude::*;

/// Fragments of the language, so generated text gets past the lexer into the parser and
/// compiler more often than random characters do.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("route[f] {".to_owned()),
        Just("route(f);".to_owned()),
        Just("if (".to_owned()),
        Just(") ".to_owned()),
        Just("else ".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("drop;".to_owned()),
        Just("exit;".to_owned()),
        Just("return(0);".to_owned()),
        Just("$si".to_owned()),
        Just("$sp".to_owned()),
        Just("$proto".to_owned()),
        Just("$socket_in(ip)".to_owned()),
        Just(" == ".to_owned()),
        Just(" =~ ".to_owned()),
        Just(" < ".to_owned()),
        Just(" && ".to_owned()),
        Just(" || ".to_owned()),
        Just("!".to_owned()),
        Just("\"10.0.0.1\"".to_owned()),
        Just("\"::1\"".to_owned()),
        Just("\"^1[0-9]\"".to_owned()),
        Just("5060".to_owned()),
        Just("10.0.0.0/8".to_owned()),
        Just("is_in_subnet($si, \"10.0.0.0/8\")".to_owned()),
        Just("check_source_address(\"g\")".to_owned()),
        Just("xlog(\"L_INFO\", \"$si\");".to_owned()),
        Just("/*".to_owned()),
        Just("*/".to_owned()),
        Just("\n".to_owned()),
        "\\PC{0,3}",
    ]
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
        // Addresses close to each other, so equal and contained cases are common.
        (0u32..4).prop_map(|n| IpAddr::V4(Ipv4Addr::new(10, 0, 0, n as u8))),
    ]
}

fn conn(ip: IpAddr, port: u16) -> ConnInfo {
    ConnInfo {
        remote: SocketAddr::new(ip, port),
        local: "10.0.0.1:5060".parse().unwrap(),
        proto: NetProto::Tcp,
    }
}

fn groups() -> AddressGroups {
    let mut table = std::collections::BTreeMap::new();
    table.insert("g".to_owned(), vec!["10.0.0.0/8".parse().unwrap()]);
    AddressGroups::new(&table)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compiling_any_text_never_panics_and_errors_point_inside_it(
        parts in prop::collection::vec(fragment(), 0..40)
    ) {
        let text: String = parts.concat();
        match Routes::compile(&[Source::new("p.cfg", &text)], &groups()) {
            Ok(routes) => {
                for name in routes.names() {
                    let _ = routes.get(name).unwrap().eval(&conn("10.0.0.3".parse().unwrap(), 5060));
                }
            }
            Err(errors) => {
                prop_assert!(!errors.0.is_empty());
                let lines = text.split('\n').count();
                for error in &errors.0 {
                    prop_assert!(error.line >= 1 && error.line <= lines, "{error:?}");
                    prop_assert!(error.column >= 1);
                    prop_assert!(error.excerpt.ends_with('^'));
                    let prefix = format!("p.cfg:{}:{}: ", error.line, error.column);
                    prop_assert!(error.to_string().starts_with(&prefix), "{error}");
                }
            }
        }
    }

    #[test]
    fn si_equals_a_literal_exactly_when_the_addresses_are_equal(
        literal in any_ip(), peer in any_ip(), port in any::<u16>()
    ) {
        let text = format!("route[f] {{ if ($si == \"{literal}\") drop; }}");
        let routes = Routes::compile(&[Source::new("p.cfg", &text)], &groups()).unwrap();
        let verdict = routes.get("f").unwrap().eval(&conn(peer, port));
        prop_assert_eq!(verdict == Verdict::Drop, literal.to_canonical() == peer.to_canonical());
    }

    #[test]
    fn is_in_subnet_agrees_with_network_containment(
        net_ip in any_ip(), prefix in 0u8..=128, peer in any_ip()
    ) {
        let max = if net_ip.is_ipv4() { 32 } else { 128 };
        let net = IpNet::new(net_ip, prefix.min(max)).unwrap();
        let text = format!("route[f] {{ if (is_in_subnet($si, \"{net}\")) drop; }}");
        let routes = Routes::compile(&[Source::new("p.cfg", &text)], &groups()).unwrap();
        let verdict = routes.get("f").unwrap().eval(&conn(peer, 5060));
        let peer = peer.to_canonical();
        prop_assert_eq!(verdict == Verdict::Drop, net.trunc().contains(&peer) || {
            // An IPv4-mapped network of prefix >= 96 is the IPv4 network it maps.
            matches!((net, peer), (IpNet::V6(v6), IpAddr::V4(v4))
                if v6.prefix_len() >= 96
                    && v6.addr().to_ipv4_mapped().is_some()
                    && v6.trunc().contains(&v4.to_ipv6_mapped()))
        });
    }

    #[test]
    fn port_comparisons_agree_with_integer_comparisons(
        port in any::<u16>(), literal in -5i64..70000, op in prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="])
    ) {
        let text = format!("route[f] {{ if ($sp {op} {literal}) drop; }}");
        let routes = Routes::compile(&[Source::new("p.cfg", &text)], &groups()).unwrap();
        let verdict = routes.get("f").unwrap().eval(&conn("192.0.2.1".parse().unwrap(), port));
        let port = i64::from(port);
        let expected = match op {
            "==" => port == literal,
            "!=" => port != literal,
            "<" => port < literal,
            "<=" => port <= literal,
            ">" => port > literal,
            _ => port >= literal,
        };
        prop_assert_eq!(verdict == Verdict::Drop, expected);
    }
}
