//! Load-time errors: every mistake is reported with file, line, column and a caret excerpt, all
//! mistakes of a load are reported together, and nothing compiles when anything is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use std::collections::BTreeMap;

use heptap_filters::{AddressGroups, CompileError, CompileErrors, Routes, Source};

fn groups() -> AddressGroups {
    let mut table = BTreeMap::new();
    table.insert("trusted".to_owned(), vec!["10.0.0.0/8".parse().unwrap()]);
    table.insert("1".to_owned(), vec!["192.0.2.0/24".parse().unwrap()]);
    AddressGroups::new(&table)
}

fn errors(text: &str) -> Vec<CompileError> {
    match Routes::compile(&[Source::new("routes.cfg", text)], &groups()) {
        Ok(routes) => panic!(
            "expected errors, but routes compiled: {:?}",
            routes.names().collect::<Vec<_>>()
        ),
        Err(CompileErrors(errors)) => errors,
    }
}

#[test]
fn the_display_names_the_file_line_and_column_and_draws_a_caret() {
    let text = "route[f] {\n    # look at this\n    if ($foo == 1)\n        drop;\n}\n";
    let errors = Routes::compile(&[Source::new("routes.cfg", text)], &groups()).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "routes.cfg:3:9: unknown variable $foo\n    if ($foo == 1)\n        ^"
    );
}

/// (what is wrong, the source, line, column, message)
const TABLE: &[(&str, &str, usize, usize, &str)] = &[
    (
        "unknown variable",
        "route[f] {\n  if ($du == \"x\") drop;\n}",
        2,
        7,
        "unknown variable $du",
    ),
    (
        "unknown variable with argument",
        "route[f] { if ($var(x) == 1) drop; }",
        1,
        16,
        "unknown variable $var(x)",
    ),
    (
        "unknown $socket_in field",
        "route[f] { if ($socket_in(name) == \"x\") drop; }",
        1,
        16,
        "unknown field \"name\" of $socket_in (expected ip, port or proto)",
    ),
    (
        "$socket_in without field",
        "route[f] { if ($socket_in == \"x\") drop; }",
        1,
        16,
        "$socket_in needs a field: $socket_in(ip), $socket_in(port) or $socket_in(proto)",
    ),
    (
        "argument to a plain variable",
        "route[f] { if ($si(x) == \"1.2.3.4\") drop; }",
        1,
        16,
        "$si takes no argument",
    ),
    (
        "unknown function in a condition",
        "route[f] { if (is_present_hf(\"X\")) drop; }",
        1,
        16,
        "unknown function is_present_hf()",
    ),
    (
        "unknown function as a statement",
        "route[f] {\n\tt_relay();\n}",
        2,
        2,
        "unknown function t_relay()",
    ),
    (
        "unknown address group",
        "route[f] { if (check_source_address(\"2\")) drop; }",
        1,
        37,
        "unknown address group \"2\" (known groups: 1, trusted)",
    ),
    (
        "bad regex",
        "route[f] { if ($si =~ \"(10\\.\") drop; }",
        1,
        23,
        "bad regular expression \"(10\\\\.\": unclosed group",
    ),
    (
        "regex pattern not a string",
        "route[f] { if ($si =~ 10) drop; }",
        1,
        23,
        "the right side of =~ must be a quoted regular expression",
    ),
    (
        "regex pattern on the left",
        "route[f] { if (\"^10\" =~ $si) drop; }",
        1,
        16,
        "the pattern goes on the right of =~: write $si =~ \"pattern\"",
    ),
    (
        "address literal that is not an address",
        "route[f] { if ($si == \"proxy.example.com\") drop; }",
        1,
        23,
        "\"proxy.example.com\" is not an IP address",
    ),
    (
        "network where an address is expected",
        "route[f] { if ($si == \"10.0.0.0/8\") drop; }",
        1,
        23,
        "\"10.0.0.0/8\" is a network, not an address; use is_in_subnet($si, \"10.0.0.0/8\")",
    ),
    (
        "number compared with an address",
        "route[f] { if ($Ri == 5060) drop; }",
        1,
        23,
        "5060 is not an IP address",
    ),
    (
        "ordering of addresses",
        "route[f] { if ($si < \"10.0.0.1\") drop; }",
        1,
        20,
        "operator < does not apply to addresses",
    ),
    (
        "address compared with a port",
        "route[f] { if ($si == $sp) drop; }",
        1,
        23,
        "cannot compare an address with a port",
    ),
    (
        "port compared with a word",
        "route[f] { if ($sp == \"sip\") drop; }",
        1,
        23,
        "\"sip\" is not a port number",
    ),
    (
        "unknown protocol",
        "route[f] { if ($proto == \"sctp\") drop; }",
        1,
        26,
        "unknown protocol \"sctp\" (expected udp, tcp, tls, ws or wss)",
    ),
    (
        "protocol compared with a number",
        "route[f] { if ($proto == 6) drop; }",
        1,
        26,
        "$proto is compared with a protocol name such as \"tcp\"",
    ),
    (
        "ordering of protocols",
        "route[f] { if ($proto > \"tcp\") drop; }",
        1,
        23,
        "operator > does not apply to $proto",
    ),
    (
        "two constants",
        "route[f] { if (\"a\" == \"b\") drop; }",
        1,
        20,
        "both sides of == are constants; one side must be a variable such as $si",
    ),
    (
        "variable alone",
        "route[f] { if ($si) drop; }",
        1,
        16,
        "$si alone is not a condition; compare it, e.g. $si == ...",
    ),
    (
        "function result compared",
        "route[f] { if (is_in_subnet($si, \"10.0.0.0/8\") == 1) drop; }",
        1,
        16,
        "the result of is_in_subnet() cannot be compared; use it as a condition on its own",
    ),
    (
        "bad network in an is_in_subnet list",
        "route[f] { if (is_in_subnet($si, \"10.0.0.0/8,10.0.0.0/40\")) drop; }",
        1,
        46,
        "\"10.0.0.0/40\" is not a network (expected an address or a CIDR such as 10.0.0.0/8)",
    ),
    (
        "is_in_subnet on a port",
        "route[f] { if (is_in_subnet($sp, \"10.0.0.0/8\")) drop; }",
        1,
        29,
        "the first argument of is_in_subnet() must be an address variable such as $si",
    ),
    (
        "is_in_subnet arity",
        "route[f] { if (is_in_subnet($si)) drop; }",
        1,
        16,
        "is_in_subnet() takes 2 arguments (an address variable and a network list), found 1",
    ),
    (
        "check_source_address with extra arguments",
        "route[f] { if (check_source_address(\"1\", \"$avp(ctx)\")) drop; }",
        1,
        42,
        "check_source_address() takes only the group here (context, pattern and partition \
         arguments are not supported)",
    ),
    (
        "condition function used as a statement",
        "route[f] { is_in_subnet($si, \"10.0.0.0/8\"); }",
        1,
        12,
        "is_in_subnet() has no effect as a statement; use it as an if condition",
    ),
    (
        "xlog in a condition",
        "route[f] { if (xlog(\"x\")) drop; }",
        1,
        16,
        "xlog() is a statement, not a condition",
    ),
    (
        "unknown xlog level",
        "route[f] { xlog(\"L_LOUD\", \"x\"); }",
        1,
        17,
        "unknown log level \"L_LOUD\" (expected L_ALERT, L_CRIT, L_ERR, L_WARN, L_NOTICE, L_INFO \
         or L_DBG)",
    ),
    (
        "unknown variable inside an xlog format",
        "route[f] { xlog(\"L_INFO\", \"from \\t$si to $du\"); }",
        1,
        42,
        "unknown variable $du",
    ),
    (
        "empty xlog format",
        "route[f] { xlog(\"\"); }",
        1,
        17,
        "xlog() format is empty",
    ),
    (
        "xlog without a string",
        "route[f] { xlog($si); }",
        1,
        12,
        "xlog() takes a format string, optionally after a level: xlog(\"L_INFO\", \"...\")",
    ),
    (
        "call of an unknown route",
        "route[f] { route(missing); }",
        1,
        18,
        "unknown route \"missing\"",
    ),
    (
        "route calling itself",
        "route[f] {\n  route(f);\n}",
        2,
        9,
        "recursive route call: f -> f (routes may not call themselves)",
    ),
    (
        "route defined twice",
        "route[f] { drop; }\nroute[f] { exit; }",
        2,
        7,
        "route \"f\" is defined twice (first at routes.cfg:1:7)",
    ),
    (
        "missing semicolon",
        "route[f] {\n  if ($sp == 1) drop\n}",
        3,
        1,
        "expected `;` after the statement, found `}`",
    ),
    (
        "missing closing parenthesis",
        "route[f] { if ($sp == 1 drop; }",
        1,
        25,
        "expected `)` to close the condition, found `drop`",
    ),
    (
        "missing operand",
        "route[f] { if ($sp == ) drop; }",
        1,
        23,
        "expected a variable, a string, a number or a function call, found `)`",
    ),
    (
        "assignment",
        "route[f] { if ($si = \"1.2.3.4\") drop; }",
        1,
        20,
        "unexpected `=` (assignments are not supported; did you mean `==`?)",
    ),
    (
        "else without if",
        "route[f] { else drop; }",
        1,
        12,
        "`else` without a matching `if`",
    ),
    (
        "unterminated string",
        "route[f] {\n  if ($si == \"10.0.0.1) drop;\n}",
        2,
        14,
        "unterminated string",
    ),
    (
        "unterminated block comment",
        "route[f] { drop; }\n/* never closed",
        2,
        1,
        "unterminated /* comment",
    ),
    (
        "unclosed route",
        "route[f] {\n  drop;\n",
        3,
        1,
        "expected `}` to close the block, found end of file",
    ),
    (
        "stray character",
        "route[f] { if ($si == \"1.2.3.4\") @drop; }",
        1,
        34,
        "unexpected character `@`",
    ),
    (
        "something other than a route at the top level",
        "modparam(\"proto_tcp\", \"trace_on\", 1)\nroute[f] { drop; }",
        1,
        1,
        "expected `route[name] { ... }`, found `modparam`",
    ),
    (
        "other kinds of OpenSIPS routes",
        "failure_route[f] { drop; }",
        1,
        1,
        "only route[name] blocks are supported in filter routes, found `failure_route`",
    ),
    (
        "missing route name",
        "route[] { drop; }",
        1,
        7,
        "expected a route name, found `]`",
    ),
    (
        "number too large",
        "route[f] { if ($sp == 99999999999999999999) drop; }",
        1,
        23,
        "number 99999999999999999999 is too large",
    ),
];

#[test]
fn every_kind_of_mistake_is_reported_where_it_is() {
    for &(what, text, line, column, message) in TABLE {
        let errors = errors(text);
        let first = &errors[0];
        assert_eq!(
            (first.line, first.column, first.message.as_str()),
            (line, column, message),
            "{what}: {errors:#?}"
        );
        assert_eq!(
            errors.len(),
            1,
            "{what}: exactly one error expected, got {errors:#?}"
        );
        assert_eq!(first.source_name, "routes.cfg");
        let caret_line = first.excerpt.lines().nth(1).unwrap_or("");
        assert_eq!(
            caret_line.chars().count(),
            column,
            "{what}: caret under column {column} in {:?}",
            first.excerpt
        );
        assert!(caret_line.ends_with('^'));
    }
}

#[test]
fn deep_nesting_is_refused_instead_of_overflowing_the_stack() {
    let text = format!("route[f] {{ if ({}1{}) drop; }}", "!".repeat(200), "");
    let errors = errors(&text);
    assert_eq!(
        errors[0].message,
        format!("nesting deeper than {} levels", heptap_filters::MAX_NESTING)
    );
    let text = format!("route[f] {}drop;{} ", "{ ".repeat(200), " }".repeat(200));
    assert!(
        errors_of(&text)[0]
            .message
            .starts_with("nesting deeper than")
    );
}

fn errors_of(text: &str) -> Vec<CompileError> {
    errors(text)
}

#[test]
fn long_call_chains_are_refused() {
    let depth = heptap_filters::MAX_ROUTE_DEPTH + 1;
    let mut text = String::new();
    for n in 0..depth {
        if n + 1 < depth {
            text.push_str(&format!("route[r{n}] {{ route(r{}); }}\n", n + 1));
        } else {
            text.push_str(&format!("route[r{n}] {{ drop; }}\n"));
        }
    }
    let errors = errors(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        errors[0].message,
        format!(
            "route calls starting at \"r0\" nest {depth} routes deep; at most {} are allowed",
            heptap_filters::MAX_ROUTE_DEPTH
        )
    );
    // One route less is fine.
    let ok: String = text.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert!(Routes::compile(&[Source::new("routes.cfg", &ok)], &groups()).is_ok());
}

#[test]
fn mutual_recursion_is_reported_with_the_whole_cycle() {
    let errors = errors("route[a] { route(b); }\nroute[b] { route(c); }\nroute[c] { route(a); }");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        errors[0].message,
        "recursive route call: a -> b -> c -> a (routes may not call themselves)"
    );
    assert_eq!((errors[0].line, errors[0].column), (3, 18));
}

#[test]
fn all_errors_of_all_routes_and_sources_are_reported_in_order() {
    let first = "route[a] {\n  if ($foo == 1) drop;\n  if (check_source_address(\"nope\")) drop;\n}\n\
                 route[b] { if ($sp == ) drop; }\n\
                 route[c] { xlog(\"L_INFO\", \"$bar\"); }\n";
    let second = "route[d] { if ($si =~ \"[\") drop; route(b); route(zzz); }";
    let errors = Routes::compile(
        &[
            Source::new("/etc/heptap/routes.cfg", first),
            Source::new("inline", second),
        ],
        &groups(),
    )
    .unwrap_err()
    .0;
    let located: Vec<(&str, usize, usize, &str)> = errors
        .iter()
        .map(|e| (e.source_name.as_str(), e.line, e.column, e.message.as_str()))
        .collect();
    assert_eq!(
        located,
        [
            ("/etc/heptap/routes.cfg", 2, 7, "unknown variable $foo"),
            (
                "/etc/heptap/routes.cfg",
                3,
                28,
                "unknown address group \"nope\" (known groups: 1, trusted)"
            ),
            (
                "/etc/heptap/routes.cfg",
                5,
                23,
                "expected a variable, a string, a number or a function call, found `)`"
            ),
            ("/etc/heptap/routes.cfg", 6, 28, "unknown variable $bar"),
            (
                "inline",
                1,
                23,
                "bad regular expression \"[\": unclosed character class"
            ),
            ("inline", 1, 50, "unknown route \"zzz\""),
        ],
        "a call to b (which failed to parse) is not reported again"
    );
}

#[test]
fn unknown_group_hint_says_when_no_group_is_configured() {
    let errors = Routes::compile(
        &[Source::new(
            "inline",
            "route[f] { if (check_source_address(\"1\")) drop; }",
        )],
        &AddressGroups::default(),
    )
    .unwrap_err();
    assert_eq!(
        errors.0[0].message,
        "unknown address group \"1\" (no address groups are configured)"
    );
}

#[test]
fn regexes_too_large_to_compile_are_refused_at_load_time() {
    let errors = errors(r#"route[f] { if ($si =~ "(\w{50}){50}") drop; }"#);
    assert!(
        errors[0].message.starts_with("bad regular expression"),
        "{errors:#?}"
    );
}
