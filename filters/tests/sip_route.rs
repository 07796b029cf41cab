//! `sip_trace_route`: routes that read the SIP message (`$rm`, `$fU`, `$hdr(..)`, `is_method()`,
//! `has_totag()`) and choose trace ids with `trace("tid")`, and their load-time errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use heptap_filters::{
    AddressGroups, CompileErrors, ConnInfo, Routes, SipInspect, SipStart, SipVerdict, Source,
    Verdict,
};
use heptap_hep::NetProto;

/// A message as a test writes it: a start line and headers.
struct Msg {
    start: Option<SipStart<'static>>,
    headers: &'static [(&'static str, &'static str)],
}

impl SipInspect for Msg {
    fn start(&self) -> Option<SipStart<'_>> {
        self.start
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

fn invite(from: &'static str, to: &'static str) -> Msg {
    let headers: &'static [(&str, &str)] = Box::leak(Box::new([
        ("From", from),
        ("To", to),
        ("Call-ID", "c1@host"),
        ("CSeq", "1 INVITE"),
        ("User-Agent", "softphone 1.0"),
        ("X-Account", "gold"),
    ]));
    Msg {
        start: Some(SipStart::Request {
            method: "INVITE",
            uri: "sip:bob@example.com;transport=tcp",
        }),
        headers,
    }
}

fn reply(code: u16, cseq: &'static str) -> Msg {
    let headers: &'static [(&str, &str)] = Box::leak(Box::new([
        ("From", "<sip:alice@example.com>;tag=a"),
        ("To", "<sip:bob@example.com>;tag=b"),
        ("CSeq", cseq),
    ]));
    Msg {
        start: Some(SipStart::Response { code }),
        headers,
    }
}

fn conn(remote: &str) -> ConnInfo {
    ConnInfo {
        remote: remote.parse().unwrap(),
        local: "10.0.0.1:5060".parse().unwrap(),
        proto: NetProto::Tcp,
    }
}

fn compile(text: &str) -> Routes {
    Routes::compile(&[Source::new("sip.cfg", text)], &AddressGroups::default()).unwrap()
}

fn chosen(routes: &Routes, name: &str, conn: &ConnInfo, msg: &Msg) -> Option<Vec<String>> {
    let route = routes.get(name).unwrap();
    match route.eval_sip(conn, msg) {
        SipVerdict::Drop => None,
        SipVerdict::Trace(choice) => Some(route.chosen(choice).map(str::to_owned).collect()),
    }
}

const ONE_CALLER: &str = r#"
route[one_caller] {
    # Only alice's INVITE dialogs from one address, to their own trace id.
    if (is_method("INVITE") && !has_totag() && $fU == "alice" && $si == "192.0.2.10") {
        trace("alice");
        exit;
    }
    drop;
}
"#;

#[test]
fn a_route_traces_only_one_callers_initial_invites_from_one_address() {
    let routes = compile(ONE_CALLER);
    let alice = invite(
        "\"Alice\" <sip:alice@example.com>;tag=a",
        "<sip:bob@example.com>",
    );
    let carol = invite("<sip:carol@example.com>;tag=c", "<sip:bob@example.com>");
    let re_invite = invite(
        "<sip:alice@example.com>;tag=a",
        "<sip:bob@example.com>;tag=b",
    );
    let from_alice = conn("192.0.2.10:40000");
    assert_eq!(
        chosen(&routes, "one_caller", &from_alice, &alice),
        Some(vec!["alice".to_owned()])
    );
    assert_eq!(chosen(&routes, "one_caller", &from_alice, &carol), None);
    assert_eq!(chosen(&routes, "one_caller", &from_alice, &re_invite), None);
    assert_eq!(
        chosen(&routes, "one_caller", &conn("192.0.2.11:40000"), &alice),
        None
    );
}

#[test]
fn every_sip_variable_reads_its_part_of_the_message() {
    let routes = compile(
        r#"
route[vars] {
    if ($rm != "INVITE") drop;
    if ($ru != "sip:bob@example.com;transport=tcp") drop;
    if ($rU != "bob" || $rd != "example.com") drop;
    if ($fu != "sip:alice@example.com" || $fU != "alice" || $fd != "example.com") drop;
    if ($tu != "sip:bob@example.com" || $tU != "bob") drop;
    if ($ci != "c1@host") drop;
    if ($ua !~ "^softphone") drop;
    if ($hdr(x-account) != "gold") drop;
    if ($hdr(X-Missing) == "x") drop;
    if ($rs == 200) drop;
    trace("all");
}
"#,
    );
    let msg = invite("<sip:alice@example.com>;tag=a", "<sip:bob@example.com>");
    assert_eq!(
        chosen(&routes, "vars", &conn("192.0.2.1:1"), &msg),
        Some(vec!["all".to_owned()])
    );
}

#[test]
fn replies_have_a_status_and_their_cseq_method() {
    let routes = compile(
        r#"
route[replies] {
    if ($rs >= 400 && is_method("INVITE|BYE")) trace("errors");
    if ($rm == "BYE") trace("byes");
}
"#,
    );
    let c = conn("192.0.2.1:1");
    assert_eq!(
        chosen(&routes, "replies", &c, &reply(486, "1 INVITE")),
        Some(vec!["errors".to_owned()])
    );
    assert_eq!(
        chosen(&routes, "replies", &c, &reply(481, "2 bye")),
        Some(vec!["errors".to_owned()]),
        "is_method() ignores case; $rm is exact"
    );
    assert_eq!(
        chosen(&routes, "replies", &c, &reply(200, "2 BYE")),
        Some(vec!["byes".to_owned()])
    );
    assert_eq!(
        chosen(&routes, "replies", &c, &reply(200, "3 OPTIONS")),
        Some(vec![]),
        "no trace(): the listener's own trace id"
    );
}

#[test]
fn several_trace_calls_choose_several_ids_across_routes() {
    let routes = compile(
        r#"
route[main] { trace("a"); route(more); }
route[more] { trace("b"); trace("a"); }
"#,
    );
    let msg = reply(200, "1 INVITE");
    assert_eq!(
        chosen(&routes, "main", &conn("192.0.2.1:1"), &msg),
        Some(vec!["a".to_owned(), "b".to_owned()])
    );
}

#[test]
fn a_message_without_a_start_line_has_no_sip_values() {
    let routes = compile(r#"route[r] { if ($rm == "INVITE" || $rs == 200 || has_totag()) drop; }"#);
    let garbled = Msg {
        start: None,
        headers: &[],
    };
    assert_eq!(
        chosen(&routes, "r", &conn("192.0.2.1:1"), &garbled),
        Some(vec![])
    );
}

#[test]
fn trace_ids_are_checked_against_the_configured_ones_at_their_call() {
    let routes = compile("route[r] {\n    trace(\"known\");\n    trace(\"nope\");\n}\n");
    let errors = routes.check_trace_ids(|t| t == "known").unwrap_err();
    assert_eq!(
        errors.to_string(),
        "sip.cfg:3:5: unknown trace id \"nope\": no trace_id of that name\n    \
         trace(\"nope\");\n    ^"
    );
    assert!(routes.check_trace_ids(|_| true).is_ok());
}

#[test]
fn a_route_reading_sip_says_where_for_connection_use() {
    let routes = compile(
        "route[net] {\n    if ($si == \"192.0.2.1\") route(sip);\n}\nroute[sip] {\n    if ($fU == \"x\") drop;\n}\nroute[plain] { exit; }\n",
    );
    let sip = routes.get("sip").unwrap().sip_use().unwrap();
    assert_eq!((sip.line, sip.column), (5, 9));
    assert!(sip.message.contains("($fU)"), "{}", sip.message);
    let net = routes.get("net").unwrap().sip_use().unwrap();
    assert_eq!((net.line, net.column), (2, 35));
    assert!(
        net.message.contains("calls route \"sip\""),
        "{}",
        net.message
    );
    assert!(routes.get("plain").unwrap().sip_use().is_none());
    // Evaluated for a connection, SIP values are absent: `$fU == "x"` is false.
    assert_eq!(
        routes.get("net").unwrap().eval(&conn("192.0.2.1:1")),
        Verdict::Trace
    );
}

fn errors(text: &str) -> Vec<(usize, usize, String)> {
    match Routes::compile(&[Source::new("sip.cfg", text)], &AddressGroups::default()) {
        Ok(_) => panic!("expected errors for {text}"),
        Err(CompileErrors(errors)) => errors
            .into_iter()
            .map(|e| (e.line, e.column, e.message))
            .collect(),
    }
}

#[test]
fn sip_mistakes_are_located_errors() {
    let cases: &[(&str, (usize, usize, &str))] = &[
        (
            "route[r] { if ($hdr == \"x\") drop; }",
            (1, 16, "$hdr needs a header name: $hdr(User-Agent)"),
        ),
        (
            "route[r] { if ($hdr(a b) == \"x\") drop; }",
            (1, 16, "\"a b\" is not a header name"),
        ),
        (
            "route[r] { if ($fU < \"x\") drop; }",
            (
                1,
                20,
                "operator < does not apply to SIP text; use ==, !=, =~ or !~",
            ),
        ),
        (
            "route[r] { if ($rs == \"OK\") drop; }",
            (1, 23, "\"OK\" is not a status code"),
        ),
        (
            "route[r] { if ($fU == $tU) drop; }",
            (
                1,
                23,
                "a SIP variable is compared with a quoted text such as \"alice\"",
            ),
        ),
        (
            "route[r] { if (is_method(\"INVITE,BYE\")) drop; }",
            (1, 26, "\"INVITE,BYE\" is not a SIP method"),
        ),
        (
            "route[r] { if (is_method()) drop; }",
            (1, 16, "is_method() takes one quoted method list"),
        ),
        (
            "route[r] { trace(); }",
            (1, 12, "trace() needs a quoted trace id: trace(\"tid\")"),
        ),
        (
            "route[r] { trace(\"tid\", \"d\"); }",
            (1, 25, "trace() takes only the trace id here"),
        ),
        (
            "route[r] { if (trace(\"tid\")) drop; }",
            (1, 16, "trace() is a statement, not a condition"),
        ),
        (
            "route[r] { is_method(\"INVITE\"); }",
            (1, 12, "is_method() has no effect as a statement"),
        ),
        (
            "route[r] { if (has_totag(1)) drop; }",
            (1, 26, "has_totag() takes no arguments"),
        ),
    ];
    for (text, (line, column, message)) in cases {
        let found = errors(text);
        assert!(
            found
                .iter()
                .any(|(l, c, m)| (l, c) == (line, column) && m.starts_with(message)),
            "{text}: expected {line}:{column} {message:?}, got {found:?}"
        );
    }
}

/// The routes docs/filters.md gives to paste for `sip_trace_route` compile, and their trace ids
/// are the ones its config example defines.
#[test]
fn the_documented_sip_routes_compile() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/filters.md");
    let docs = std::fs::read_to_string(path).unwrap();
    let section = docs
        .split("## `sip_trace_route`")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    let mut blocks = 0;
    for block in section.split("```").skip(1).step_by(2) {
        let text = match block.split_once("inline = \"\"\"") {
            Some((_, rest)) => rest.split("\"\"\"").next().unwrap(),
            None => block,
        };
        if !text.contains("route[") {
            continue;
        }
        let routes = Routes::compile(&[Source::new("docs", text)], &AddressGroups::default())
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        routes
            .check_trace_ids(|t| ["tid", "alice", "security"].contains(&t))
            .unwrap();
        blocks += 1;
    }
    assert_eq!(blocks, 2);
}
