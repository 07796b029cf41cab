//! The route language, construct by construct: each test compiles a route and shows which
//! connections it traces and which it drops.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use heptap_filters::{AddressGroups, ConnInfo, Route, Routes, Source, Verdict};
use heptap_hep::NetProto;

/// Groups as a config would define them: OpenSIPS-style numeric names are just names.
fn groups() -> AddressGroups {
    let mut table = BTreeMap::new();
    table.insert(
        "1".to_owned(),
        vec![
            "10.10.10.0/24".parse().unwrap(),
            "192.0.2.10/32".parse().unwrap(),
        ],
    );
    table.insert(
        "carriers".to_owned(),
        vec!["2001:db8:c::/48".parse().unwrap()],
    );
    AddressGroups::new(&table)
}

fn routes(text: &str) -> Routes {
    Routes::compile(&[Source::new("routes.cfg", text)], &groups())
        .unwrap_or_else(|errors| panic!("routes did not compile:\n{errors}"))
}

fn route(text: &str) -> Route {
    routes(text).get("f").expect("a route named f").clone()
}

/// A connection from `remote` to heptap's `local` over `proto`.
fn conn(remote: &str, local: &str, proto: NetProto) -> ConnInfo {
    ConnInfo {
        remote: remote.parse().unwrap(),
        local: local.parse().unwrap(),
        proto,
    }
}

fn tcp_from(remote: &str) -> ConnInfo {
    conn(remote, "10.0.0.1:5060", NetProto::Tcp)
}

fn verdict(text: &str, conn: &ConnInfo) -> Verdict {
    route(text).eval(conn)
}

use Verdict::{Drop, Trace};

// ---- the two tutorial routes -------------------------------------------------------------

#[test]
fn tutorial_route_drops_the_listed_peer_and_traces_everyone_else() {
    let routes = routes(
        r#"
route[net_filter] {
    if ($si == "10.10.10.10")
        drop;
}
"#,
    );
    let net_filter = routes.get("net_filter").unwrap();
    assert_eq!(net_filter.eval(&tcp_from("10.10.10.10:40000")), Drop);
    assert_eq!(net_filter.eval(&tcp_from("10.10.10.11:40000")), Trace);
}

#[test]
fn tutorial_check_source_address_route_traces_only_the_trusted_group_and_logs_it() {
    let routes = routes(
        r#"
route[net_filter] {
    if (check_source_address("1")) { xlog("L_INFO", "tracing trusted $si:$sp\n"); exit; }
    drop;
}
"#,
    );
    let net_filter = routes.get("net_filter").unwrap();
    let (verdict, logs) = capture_logs(|| net_filter.eval(&tcp_from("10.10.10.7:5070")));
    assert_eq!(verdict, Trace);
    assert!(
        logs.contains("INFO heptap::xlog: tracing trusted 10.10.10.7:5070 route=\"net_filter\""),
        "{logs}"
    );
    assert_eq!(net_filter.eval(&tcp_from("192.0.2.10:5060")), Trace);
    assert_eq!(net_filter.eval(&tcp_from("192.0.2.11:5060")), Drop);
}

// ---- verdicts ------------------------------------------------------------------------------

#[test]
fn falling_off_the_end_of_the_route_traces() {
    assert_eq!(verdict("route[f] {}", &tcp_from("192.0.2.1:1")), Trace);
}

#[test]
fn exit_ends_the_route_and_traces() {
    assert_eq!(
        verdict("route[f] { exit; drop; }", &tcp_from("192.0.2.1:1")),
        Trace
    );
    assert_eq!(
        verdict("route[f] { exit(); drop; }", &tcp_from("192.0.2.1:1")),
        Trace
    );
}

#[test]
fn drop_ends_the_route_and_does_not_trace() {
    assert_eq!(
        verdict("route[f] { drop; exit; }", &tcp_from("192.0.2.1:1")),
        Drop
    );
    assert_eq!(
        verdict("route[f] { drop(); }", &tcp_from("192.0.2.1:1")),
        Drop
    );
}

#[test]
fn return_from_the_top_route_traces_whatever_its_value() {
    for text in [
        "route[f] { return; drop; }",
        "route[f] { return(); drop; }",
        "route[f] { return(1); drop; }",
        "route[f] { return(-1); drop; }",
        "route[f] { return(0); drop; }",
    ] {
        assert_eq!(verdict(text, &tcp_from("192.0.2.1:1")), Trace, "{text}");
    }
}

// ---- route calls ---------------------------------------------------------------------------

#[test]
fn a_called_route_that_drops_drops_the_connection() {
    let text = "route[f] { route(deny); exit; } route[deny] { drop; }";
    assert_eq!(verdict(text, &tcp_from("192.0.2.1:1")), Drop);
}

#[test]
fn return_from_a_called_route_goes_on_with_the_caller() {
    let text = "route[f] { route(check); drop; } route[check] { return(1); exit; }";
    assert_eq!(verdict(text, &tcp_from("192.0.2.1:1")), Drop);
}

#[test]
fn return_zero_from_a_called_route_ends_everything_like_exit() {
    // OpenSIPS: an action returning 0 stops the script (run_action_list sets ACT_FL_EXIT).
    let text = "route[f] { route(check); drop; } route[check] { return(0); }";
    assert_eq!(verdict(text, &tcp_from("192.0.2.1:1")), Trace);
}

#[test]
fn exit_in_a_called_route_ends_everything() {
    let text = "route[f] { route(check); drop; } route[check] { exit; }";
    assert_eq!(verdict(text, &tcp_from("192.0.2.1:1")), Trace);
}

#[test]
fn routes_may_call_routes_of_another_source() {
    let routes = Routes::compile(
        &[
            Source::new("main.cfg", "route[f] { route(blocked); }"),
            Source::new(
                "inline",
                "route[blocked] { if ($si == \"192.0.2.66\") drop; }",
            ),
        ],
        &groups(),
    )
    .unwrap();
    let f = routes.get("f").unwrap();
    assert_eq!(f.eval(&tcp_from("192.0.2.66:1")), Drop);
    assert_eq!(f.eval(&tcp_from("192.0.2.67:1")), Trace);
}

// ---- if / else -----------------------------------------------------------------------------

#[test]
fn if_else_if_else_takes_the_first_true_branch() {
    let text = r#"
route[f] {
    if ($sp == 1) {
        drop;
    } else if ($sp == 2) {
        exit;
    } else if ($sp == 3)
        drop;
    else {
        exit;
    }
    drop;
}"#;
    let route = route(text);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:1")), Drop);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:2")), Trace);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:3")), Drop);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:4")), Trace);
}

#[test]
fn an_if_without_a_taken_branch_falls_through() {
    let text = "route[f] { if ($sp == 1) exit; drop; }";
    assert_eq!(verdict(text, &tcp_from("192.0.2.1:2")), Drop);
}

#[test]
fn bare_blocks_and_stray_semicolons_are_accepted() {
    let text = "route[f] { { ; if (1) { drop; }; } ; }";
    assert_eq!(verdict(text, &tcp_from("192.0.2.1:2")), Drop);
}

#[test]
fn constant_conditions_are_numbers() {
    assert_eq!(
        verdict("route[f] { if (0) drop; }", &tcp_from("192.0.2.1:2")),
        Trace
    );
    assert_eq!(
        verdict("route[f] { if (1) drop; }", &tcp_from("192.0.2.1:2")),
        Drop
    );
}

// ---- variables ---------------------------------------------------------------------------

#[test]
fn si_compares_addresses_not_text() {
    let route = route(r#"route[f] { if ($si == "::1") drop; }"#);
    assert_eq!(route.eval(&tcp_from("[0:0:0:0:0:0:0:1]:5060")), Drop);
    assert_eq!(route.eval(&tcp_from("[::2]:5060")), Trace);
    let route = self::route(r#"route[f] { if ($si == "2001:DB8:0::0001") drop; }"#);
    assert_eq!(route.eval(&tcp_from("[2001:db8::1]:5060")), Drop);
}

#[test]
fn an_ipv4_mapped_peer_matches_its_ipv4_address() {
    let route = route(r#"route[f] { if ($si == "192.0.2.1") drop; }"#);
    assert_eq!(route.eval(&tcp_from("[::ffff:192.0.2.1]:5060")), Drop);
}

#[test]
fn si_not_equal_is_the_negation() {
    let route = route(r#"route[f] { if ($si != "192.0.2.1") drop; }"#);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:5060")), Trace);
    assert_eq!(route.eval(&tcp_from("192.0.2.2:5060")), Drop);
}

#[test]
fn an_unquoted_ipv4_network_after_equals_is_a_network_match_as_in_opensips() {
    let route =
        route("route[f] { if ($si == 10.0.0.0/8) drop; if ($si != 192.0.2.0/24) exit; drop; }");
    assert_eq!(route.eval(&tcp_from("10.9.8.7:1")), Drop);
    assert_eq!(route.eval(&tcp_from("198.51.100.1:1")), Trace);
    assert_eq!(route.eval(&tcp_from("192.0.2.9:1")), Drop);
    let route = self::route("route[f] { if ($si == 192.0.2.1) drop; }");
    assert_eq!(route.eval(&tcp_from("192.0.2.1:1")), Drop);
}

#[test]
fn sp_compares_as_an_integer_with_every_operator() {
    let cases = [
        ("$sp == 5060", [false, true, false]),
        ("$sp != 5060", [true, false, true]),
        ("$sp < 5060", [true, false, false]),
        ("$sp <= 5060", [true, true, false]),
        ("$sp > 5060", [false, false, true]),
        ("$sp >= 5060", [false, true, true]),
        ("$sp == \"5060\"", [false, true, false]),
        ("5060 < $sp", [false, false, true]),
    ];
    for (cond, expected) in cases {
        let route = route(&format!("route[f] {{ if ({cond}) drop; }}"));
        for (port, drops) in [1024, 5060, 40000].into_iter().zip(expected) {
            let got = route.eval(&tcp_from(&format!("192.0.2.1:{port}")));
            assert_eq!(got == Drop, drops, "{cond} with $sp = {port}");
        }
    }
}

#[test]
fn ri_rp_and_socket_in_read_heptaps_side() {
    let conn = conn("192.0.2.1:40000", "10.0.0.1:5061", NetProto::Tls);
    for cond in [
        "$Ri == \"10.0.0.1\"",
        "$Rp == 5061",
        "$socket_in(ip) == \"10.0.0.1\"",
        "$socket_in(port) == 5061",
        "$socket_in(proto) == \"tls\"",
        "$sp > $Rp",
        "$si != $Ri",
    ] {
        assert_eq!(
            verdict(&format!("route[f] {{ if ({cond}) drop; }}"), &conn),
            Drop,
            "{cond}"
        );
    }
    for cond in [
        "$Ri == \"192.0.2.1\"",
        "$Rp == 40000",
        "$si == $Ri",
        "$sp < $Rp",
    ] {
        assert_eq!(
            verdict(&format!("route[f] {{ if ({cond}) drop; }}"), &conn),
            Trace,
            "{cond}"
        );
    }
}

#[test]
fn proto_compares_names_ignoring_case() {
    for (proto, name) in [
        (NetProto::Tcp, "TCP"),
        (NetProto::Tls, "Tls"),
        (NetProto::Ws, "ws"),
        (NetProto::Wss, "WSS"),
    ] {
        let route = route(&format!("route[f] {{ if ($proto == \"{name}\") drop; }}"));
        for other in NetProto::ALL {
            let got = route.eval(&conn("192.0.2.1:1", "10.0.0.1:5060", other));
            assert_eq!(got == Drop, other == proto, "$proto == {name:?} on {other}");
        }
    }
    // `udp` is a protocol name a route may test; no tapped connection is UDP.
    for (op, verdict) in [("==", Trace), ("!=", Drop)] {
        let route = route(&format!("route[f] {{ if ($proto {op} \"udp\") drop; }}"));
        for other in NetProto::ALL {
            let got = route.eval(&conn("192.0.2.1:1", "10.0.0.1:5060", other));
            assert_eq!(got, verdict, "$proto {op} \"udp\" on {other}");
        }
    }
    let route = route("route[f] { if ($pr != \"ws\") drop; }");
    assert_eq!(
        route.eval(&conn("192.0.2.1:1", "10.0.0.1:80", NetProto::Ws)),
        Trace
    );
    assert_eq!(
        route.eval(&conn("192.0.2.1:1", "10.0.0.1:80", NetProto::Wss)),
        Drop
    );
}

// ---- regular expressions -------------------------------------------------------------------

#[test]
fn regex_matches_the_address_text_unanchored() {
    let route = route(r#"route[f] { if ($si =~ "^10\.1\.") drop; }"#);
    assert_eq!(route.eval(&tcp_from("10.1.2.3:1")), Drop);
    assert_eq!(route.eval(&tcp_from("10.11.2.3:1")), Trace);
    let route = self::route(r#"route[f] { if ($si =~ "\.3$") drop; }"#);
    assert_eq!(route.eval(&tcp_from("10.1.2.3:1")), Drop);
}

#[test]
fn regex_not_match_is_the_negation() {
    let route = route(r#"route[f] { if ($si !~ "^192\.0\.2\.") drop; }"#);
    assert_eq!(route.eval(&tcp_from("192.0.2.8:1")), Trace);
    assert_eq!(route.eval(&tcp_from("198.51.100.8:1")), Drop);
}

#[test]
fn regex_ignores_case_like_opensips_unless_told_otherwise() {
    let route = route(r#"route[f] { if ($si =~ "^2001:DB8:") drop; }"#);
    assert_eq!(route.eval(&tcp_from("[2001:db8::1]:1")), Drop);
    let route = self::route(r#"route[f] { if ($si =~ "(?-i)^2001:DB8:") drop; }"#);
    assert_eq!(route.eval(&tcp_from("[2001:db8::1]:1")), Trace);
    let route = self::route(r#"route[f] { if ($proto =~ "^T") drop; }"#);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:1")), Drop);
}

#[test]
fn regex_matches_ports_as_decimal_text() {
    let route = route(r#"route[f] { if ($sp =~ "^50[0-9][0-9]$") drop; }"#);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:5080")), Drop);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:15080")), Trace);
}

#[test]
fn posix_bracket_classes_work_in_patterns() {
    let route = route(r#"route[f] { if ($sp =~ "^[[:digit:]]{4}$") drop; }"#);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:5060")), Drop);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:50600")), Trace);
}

// ---- functions -----------------------------------------------------------------------------

#[test]
fn is_in_subnet_checks_ipv4_and_ipv6_networks() {
    let route = route(
        r#"route[f] {
            if (is_in_subnet($si, "10.0.0.0/8")) drop;
            if (is_in_subnet($si, "2001:db8::/32")) drop;
        }"#,
    );
    assert_eq!(route.eval(&tcp_from("10.200.0.1:1")), Drop);
    assert_eq!(route.eval(&tcp_from("[2001:db8:ffff::1]:1")), Drop);
    assert_eq!(route.eval(&tcp_from("11.0.0.1:1")), Trace);
    assert_eq!(route.eval(&tcp_from("[2001:db9::1]:1")), Trace);
}

#[test]
fn is_in_subnet_takes_a_comma_separated_list_and_other_address_variables() {
    let route =
        route(r#"route[f] { if (is_in_subnet($Ri, "192.168.0.0/16, 10.0.0.1 ,fd00::/8")) drop; }"#);
    assert_eq!(
        route.eval(&conn("192.0.2.1:1", "10.0.0.1:5060", NetProto::Tcp)),
        Drop
    );
    assert_eq!(
        route.eval(&conn("192.0.2.1:1", "192.168.7.7:5060", NetProto::Tcp)),
        Drop
    );
    assert_eq!(
        route.eval(&conn("192.0.2.1:1", "[fd12::1]:5060", NetProto::Tcp)),
        Drop
    );
    assert_eq!(
        route.eval(&conn("192.0.2.1:1", "10.0.0.2:5060", NetProto::Tcp)),
        Trace
    );
}

#[test]
fn check_source_address_looks_up_the_peer_in_ipv6_groups_too() {
    let route = route(r#"route[f] { if (!check_source_address("carriers")) drop; }"#);
    assert_eq!(route.eval(&tcp_from("[2001:db8:c:1::9]:5060")), Trace);
    assert_eq!(route.eval(&tcp_from("[2001:db8:d::9]:5060")), Drop);
}

#[test]
fn check_source_address_accepts_an_unquoted_number_as_the_group() {
    let route = route("route[f] { if (check_source_address(1)) drop; }");
    assert_eq!(route.eval(&tcp_from("10.10.10.1:5060")), Drop);
}

// ---- operators and precedence --------------------------------------------------------------

#[test]
fn not_binds_tighter_than_and_which_binds_tighter_than_or() {
    // Parsed as ((!A) && B) || C.
    let route =
        route(r#"route[f] { if (!$sp == 1 && $proto == "tcp" || $si == "192.0.2.99") drop; }"#);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:2")), Drop); // !A && B
    assert_eq!(route.eval(&tcp_from("192.0.2.1:1")), Trace); // A, not C
    assert_eq!(route.eval(&tcp_from("192.0.2.99:1")), Drop); // C
    let tls = conn("192.0.2.1:2", "10.0.0.1:5060", NetProto::Tls);
    assert_eq!(route.eval(&tls), Trace); // !A but not B
}

#[test]
fn parentheses_override_precedence() {
    // A && (B || C): with A false nothing else matters.
    let route =
        route(r#"route[f] { if ($sp == 1 && ($proto == "udp" || $si == "192.0.2.1")) drop; }"#);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:2")), Trace);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:1")), Drop);
    assert_eq!(route.eval(&tcp_from("192.0.2.2:1")), Trace);
}

#[test]
fn not_of_a_parenthesised_expression_negates_all_of_it() {
    let route = route(r#"route[f] { if (!($sp == 1 || $sp == 2)) drop; }"#);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:1")), Trace);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:2")), Trace);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:3")), Drop);
    let route = self::route("route[f] { if (!!(1)) drop; }");
    assert_eq!(route.eval(&tcp_from("192.0.2.1:3")), Drop);
}

#[test]
fn a_literal_on_the_left_reads_like_the_variable_on_the_left() {
    let route = route(r#"route[f] { if ("192.0.2.1" == $si || 1024 > $sp) drop; }"#);
    assert_eq!(route.eval(&tcp_from("192.0.2.1:5060")), Drop);
    assert_eq!(route.eval(&tcp_from("192.0.2.2:1000")), Drop);
    assert_eq!(route.eval(&tcp_from("192.0.2.2:5060")), Trace);
}

// ---- syntax details ------------------------------------------------------------------------

#[test]
fn all_comment_styles_are_ignored() {
    let text = r#"
# hash comment
// slash comment
/* block
   comment */
route[f] { /* inline */ if ($sp == 1) drop; # trailing
}"#;
    assert_eq!(verdict(text, &tcp_from("192.0.2.1:1")), Drop);
}

#[test]
fn a_route_pasted_from_opensips_cfg_with_tabs_and_crlf_compiles() {
    let text = "route[net_filter] {\r\n\tif ($si == \"10.10.10.10\")\r\n\t\tdrop;\r\n}\r\n";
    let routes = routes(text);
    assert_eq!(
        routes
            .get("net_filter")
            .unwrap()
            .eval(&tcp_from("10.10.10.10:1")),
        Drop
    );
}

#[test]
fn quoted_and_numeric_route_names_are_looked_up_as_written() {
    let routes = routes(r#"route["net filter"] { drop; } route[2] { exit; }"#);
    assert_eq!(routes.names().collect::<Vec<_>>(), ["2", "net filter"]);
    assert_eq!(routes.get("net filter").unwrap().name(), "net filter");
    assert!(routes.get("missing").is_none());
}

#[test]
fn xlog_with_one_argument_logs_at_error_and_substitutes_every_variable() {
    let route = route(
        r#"route[f] { xlog("$si:$sp -> $Ri:$Rp/$socket_in(ip):$socket_in(port) over $proto ($pr) costs $5"); }"#,
    );
    let conn = conn("[2001:db8::7]:5070", "10.0.0.1:5061", NetProto::Wss);
    let (verdict, logs) = capture_logs(|| route.eval(&conn));
    assert_eq!(verdict, Trace);
    assert!(
        logs.contains(
            "ERROR heptap::xlog: 2001:db8::7:5070 -> 10.0.0.1:5061/10.0.0.1:5061 over wss (wss) costs $5"
        ),
        "{logs}"
    );
}

#[test]
fn xdbg_logs_at_debug() {
    let route = route(r#"route[f] { xdbg("peer $si"); }"#);
    let (_, logs) = capture_logs(|| route.eval(&tcp_from("192.0.2.1:1")));
    assert!(
        logs.contains("DEBUG heptap::xlog: peer 192.0.2.1"),
        "{logs}"
    );
}

// ---- the API -------------------------------------------------------------------------------

#[test]
fn no_sources_compile_to_no_routes() {
    let routes = Routes::compile(&[], &AddressGroups::default()).unwrap();
    assert!(routes.is_empty());
    assert_eq!(routes.len(), 0);
}

#[test]
fn a_route_outlives_the_routes_it_came_from_and_is_shareable() {
    fn shareable<T: Send + Sync + Clone + 'static>(_: &T) {}
    let routes = routes("route[f] { route(g); } route[g] { drop; }");
    shareable(&routes);
    let f = routes.get("f").unwrap().clone();
    shareable(&f);
    drop(routes);
    assert_eq!(f.eval(&tcp_from("192.0.2.1:1")), Drop);
}

#[test]
fn routes_keep_the_groups_they_were_compiled_with() {
    let routes = routes(r#"route[f] { if (check_source_address("1")) drop; }"#);
    // A reload builds new groups; the compiled route still holds the old ones.
    let _replaced = AddressGroups::default();
    assert_eq!(
        routes.get("f").unwrap().eval(&tcp_from("10.10.10.1:1")),
        Drop
    );
}

#[test]
fn eval_accepts_references_and_trait_objects() {
    let route = route("route[f] { if ($sp == 1) drop; }");
    let conn = tcp_from("192.0.2.1:1");
    let by_ref: &ConnInfo = &conn;
    assert_eq!(route.eval(&by_ref), Drop);
    let as_trait_object: &dyn heptap_filters::Inspect = &conn;
    assert_eq!(route.eval(as_trait_object), Drop);
}

/// Runs `f` with a subscriber that writes plain log lines into a buffer.
fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .without_time()
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (result, logs)
}

#[test]
fn the_deepest_program_allowed_evaluates_on_a_small_stack() {
    // 16 chained routes, each nested as deep as the parser allows, the innermost condition
    // a tower of `!`: the limits bound evaluation's stack use.
    let depth = heptap_filters::MAX_ROUTE_DEPTH;
    let mut text = String::new();
    for n in 0..depth {
        let call = if n + 1 < depth {
            format!("route(r{});", n + 1)
        } else {
            "drop;".to_owned()
        };
        let blocks = 20;
        let nots = heptap_filters::MAX_NESTING - blocks - 2;
        text.push_str(&format!(
            "route[r{n}] {{ {} if ({}(1)) {{ {call} }} {} }}\n",
            "if (1) {".repeat(blocks),
            "!!".repeat(nots / 2),
            "}".repeat(blocks)
        ));
    }
    let routes = Routes::compile(&[Source::new("deep.cfg", &text)], &groups())
        .unwrap_or_else(|errors| panic!("{errors}"));
    let r0 = routes.get("r0").unwrap().clone();
    let verdict = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || r0.eval(&tcp_from("192.0.2.1:1")))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(verdict, Drop);
}
