//! The OpenSIPS modparam strings: `hep_id` (spec §1.9), `trace_id` (§5.1), `trace_bwlist` (§4.3).

use heptap_config::{HepId, HepIdError, TraceIdEntry, TraceIdError, TraceUri, Transport};
use heptap_filters::{Bwlist, BwlistError, BwlistKind};
use heptap_hep::Version;

fn hep_id(s: &str) -> HepId {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} must parse: {e}"))
}

fn hep_id_err(s: &str) -> HepIdError {
    match s.parse::<HepId>() {
        Ok(id) => panic!("{s:?} must be refused, got {id:?}"),
        Err(e) => e,
    }
}

// ---- hep_id -------------------------------------------------------------------------------

#[test]
fn readme_hep_id_with_tcp_and_version_3() {
    let id = hep_id("[hep_dst] 127.0.0.1:8001; transport=tcp; version=3");
    assert_eq!(id.name, "hep_dst");
    assert_eq!((id.host.as_str(), id.port), ("127.0.0.1", 8001));
    assert_eq!((id.transport, id.version), (Transport::Tcp, Version::V3));
}

#[test]
fn readme_hep_id_version_2_without_transport_is_sent_over_udp() {
    let id = hep_id("[hep_dst] 1.2.3.4:5000; version=2");
    assert_eq!((id.host.as_str(), id.port), ("1.2.3.4", 5000));
    assert_eq!((id.transport, id.version), (Transport::Udp, Version::V2));
}

#[test]
fn readme_hep_id_with_host_only_is_port_9060_tcp_version_3() {
    let id = hep_id("[hid]10.10.10.10");
    assert_eq!(id.name, "hid");
    assert_eq!((id.host.as_str(), id.port), ("10.10.10.10", 9060));
    assert_eq!((id.transport, id.version), (Transport::Tcp, Version::V3));
}

#[test]
fn hep_id_keys_come_in_either_order() {
    let id = hep_id("[a] 10.0.0.1; version=1; transport=udp");
    assert_eq!((id.transport, id.version), (Transport::Udp, Version::V1));
    let id = hep_id("[a] 10.0.0.1; transport=udp; version=1");
    assert_eq!((id.transport, id.version), (Transport::Udp, Version::V1));
}

#[test]
fn hep_id_transport_is_case_insensitive() {
    assert_eq!(hep_id("[a] h; transport=TLS").transport, Transport::Tls);
    assert_eq!(hep_id("[a] h; transport=Udp").transport, Transport::Udp);
}

#[test]
fn hep_id_tolerates_whitespace_and_a_trailing_semicolon() {
    let id = hep_id("  [hid]   10.0.0.1:9061 ;  transport = udp ;version= 3 ; ");
    assert_eq!(
        (id.name.as_str(), id.host.as_str(), id.port),
        ("hid", "10.0.0.1", 9061)
    );
    assert_eq!(id.transport, Transport::Udp);
    assert_eq!(hep_id("[hid] 10.0.0.1;").port, 9060);
}

#[test]
fn hep_id_name_skips_leading_spaces_and_ends_at_a_space() {
    // OpenSIPS: spaces after '[' skipped, the name ends at a space, the rest up to ']' ignored.
    assert_eq!(hep_id("[ hid] 10.0.0.1").name, "hid");
    assert_eq!(hep_id("[hid ignored words] 10.0.0.1").name, "hid");
}

#[test]
fn hep_id_takes_host_names() {
    let id = hep_id("[homer] homer.example.com:9061; transport=tls");
    assert_eq!((id.host.as_str(), id.port), ("homer.example.com", 9061));
    assert_eq!(id.transport, Transport::Tls);
    assert!(
        id.tls.tls_verify,
        "TLS verification is on unless switched off"
    );
}

#[test]
fn hep_id_takes_bracketed_ipv6_hosts_which_opensips_cannot() {
    let id = hep_id("[v6] [::1]:9061; transport=udp");
    assert_eq!((id.host.as_str(), id.port), ("::1", 9061));
    let id = hep_id("[v6] [2001:db8::5]");
    assert_eq!((id.host.as_str(), id.port), ("2001:db8::5", 9060));
}

#[test]
fn hep_id_takes_queue_sizes_from_the_hep_defaults() {
    let id = hep_id("[a] 10.0.0.1");
    assert_eq!(
        (id.queue_packets, id.queue_bytes, id.max_udp_size),
        (10_000, 16 << 20, 65_507)
    );
}

#[test]
fn hep_id_errors() {
    let cases: &[(&str, HepIdError, &str)] = &[
        (
            "10.0.0.1:9060",
            HepIdError::MissingName,
            "a hep_id must start with '[name]'",
        ),
        (
            "[hid 10.0.0.1",
            HepIdError::UnclosedName,
            "missing ']' after the hep_id name",
        ),
        ("[] 10.0.0.1", HepIdError::EmptyName, "empty hep_id name"),
        ("[ ] 10.0.0.1", HepIdError::EmptyName, "empty hep_id name"),
        (
            "[hid]",
            HepIdError::MissingHost,
            "no destination host in hep_id",
        ),
        (
            "[hid] ; transport=tcp",
            HepIdError::MissingHost,
            "no destination host in hep_id",
        ),
        (
            "[hid] 10.0.0.1; 10.0.0.2",
            HepIdError::ExtraHost("10.0.0.2".into()),
            "unexpected '10.0.0.2': expected key=value after the host",
        ),
        (
            "[hid] 10.0.0.1; uri=hep",
            HepIdError::UnknownKey("uri".into()),
            "unknown key 'uri' in hep_id, expected transport or version",
        ),
        (
            "[hid] 10.0.0.1; Transport=tcp",
            HepIdError::UnknownKey("Transport".into()),
            "unknown key 'Transport' in hep_id, expected transport or version",
        ),
        (
            "[hid] 10.0.0.1; transport=",
            HepIdError::EmptyValue("transport".into()),
            "empty value for 'transport' in hep_id",
        ),
        (
            "[hid] 10.0.0.1; version= ;",
            HepIdError::EmptyValue("version".into()),
            "empty value for 'version' in hep_id",
        ),
        (
            "[hid] 10.0.0.1; transport=tcp; transport=udp",
            HepIdError::DuplicateKey("transport".into()),
            "'transport' given twice in hep_id",
        ),
        (
            "[hid] 10.0.0.1; transport=sctp",
            HepIdError::BadTransport("unknown transport 'sctp', expected udp, tcp or tls".into()),
            "unknown transport 'sctp', expected udp, tcp or tls",
        ),
        (
            "[hid] 10.0.0.1; version=4",
            HepIdError::BadVersion("unknown HEP version 4, expected 1, 2 or 3".into()),
            "unknown HEP version 4, expected 1, 2 or 3",
        ),
        (
            "[hid] 10.0.0.1; version=three",
            HepIdError::BadVersion("unknown HEP version 'three', expected 1, 2 or 3".into()),
            "unknown HEP version 'three', expected 1, 2 or 3",
        ),
    ];
    for (text, expected, message) in cases {
        let e = hep_id_err(text);
        assert_eq!(&e, expected, "{text:?}");
        assert_eq!(e.to_string(), *message, "{text:?}");
    }
}

#[test]
fn hep_id_refuses_bad_hosts_and_ports() {
    for (text, fragment) in [
        ("[hid] 10.0.0.1:", "port '' is not a number"),
        ("[hid] 10.0.0.1:http", "port 'http' is not a number"),
        ("[hid] 10.0.0.1:65536", "from 1 to 65535"),
        ("[hid] 10.0.0.1:0", "port 0"),
        ("[hid] 2001:db8::1", "IPv6 addresses need brackets"),
        ("[hid] [2001:db8::1", "missing ']'"),
        ("[hid] [not-v6]:9060", "not an IPv6 address"),
        ("[hid] :9060", "no host"),
    ] {
        let e = hep_id_err(text);
        assert!(matches!(e, HepIdError::BadHost(_)), "{text:?}: {e:?}");
        assert!(e.to_string().contains(fragment), "{text:?}: {e}");
    }
}

#[test]
fn hep_v1_or_v2_over_an_explicit_tcp_or_tls_is_refused_not_downgraded() {
    for (text, version, transport) in [
        (
            "[a] 10.0.0.1; transport=tcp; version=2",
            Version::V2,
            Transport::Tcp,
        ),
        (
            "[a] 10.0.0.1; version=1; transport=tls",
            Version::V1,
            Transport::Tls,
        ),
    ] {
        let e = hep_id_err(text);
        assert_eq!(e, HepIdError::VersionNeedsUdp { version, transport });
        let msg = e.to_string();
        assert!(
            msg.contains("UDP only") && msg.contains("heptap refuses"),
            "{msg}"
        );
    }
    assert_eq!(
        hep_id("[a] 10.0.0.1; transport=udp; version=1").transport,
        Transport::Udp
    );
}

// ---- trace_id ------------------------------------------------------------------------------

fn trace_id(s: &str) -> TraceIdEntry {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} must parse: {e}"))
}

#[test]
fn trace_id_references_a_hep_id_by_name() {
    let t = trace_id("[tid]uri=hep:hid");
    assert_eq!(t.name, "tid");
    assert_eq!(t.uri, TraceUri::Hep("hid".into()));
    assert_eq!(t.uri.destination_name(), "hid");
}

#[test]
fn trace_id_takes_stdout_and_file_uris() {
    assert_eq!(trace_id("[t]uri=stdout").uri, TraceUri::Stdout);
    let t = trace_id("[t]uri=file:/var/log/heptap/sip.jsonl");
    assert_eq!(t.uri, TraceUri::File("/var/log/heptap/sip.jsonl".into()));
    assert_eq!(t.uri.destination_name(), "file:/var/log/heptap/sip.jsonl");
}

#[test]
fn trace_id_tolerates_whitespace_and_trailing_semicolons() {
    let t = trace_id("  [ tid ] uri = hep:homer ; ");
    assert_eq!(
        (t.name.as_str(), t.uri.clone()),
        ("tid", TraceUri::Hep("homer".into()))
    );
}

#[test]
fn trace_id_prints_back_in_opensips_form() {
    assert_eq!(
        trace_id(" [tid] uri=hep:homer;").to_string(),
        "[tid]uri=hep:homer"
    );
    assert_eq!(trace_id("[t]uri=file:/x").to_string(), "[t]uri=file:/x");
}

#[test]
fn trace_id_without_uri_key_is_rejected_like_opensips() {
    let e = "[tid]hep:x".parse::<TraceIdEntry>().unwrap_err();
    assert_eq!(e, TraceIdError::NoKeyDelimiter("hep:x".into()));
    assert!(
        e.to_string().starts_with("key delimiter '=' not found"),
        "{e}"
    );
}

#[test]
fn trace_id_errors() {
    let cases: &[(&str, TraceIdError)] = &[
        ("tid uri=hep:x", TraceIdError::MissingName),
        ("[tid uri=hep:x", TraceIdError::UnclosedName),
        ("[]uri=hep:x", TraceIdError::EmptyName),
        ("[tid]", TraceIdError::MissingUri),
        ("[tid]uri=", TraceIdError::EmptyValue("uri".into())),
        ("[tid]uri=hep:", TraceIdError::EmptyUri("hep:".into())),
        ("[tid]uri=file:", TraceIdError::EmptyUri("file:".into())),
        ("[tid]uri=hep:a;uri=hep:b", TraceIdError::DuplicateUri),
        (
            "[tid]table=sip_trace",
            TraceIdError::UnknownKey("table".into()),
        ),
        (
            "[tid]uri=sip:10.0.0.1:5060",
            TraceIdError::UnsupportedUri("sip:10.0.0.1:5060".into()),
        ),
        (
            "[tid]uri=syslog",
            TraceIdError::UnsupportedUri("syslog".into()),
        ),
        (
            "[tid]uri=hep:10.10.10.12:5061;transport=tcp;version=3;",
            TraceIdError::InlineHep("10.10.10.12:5061".into()),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(
            &text.parse::<TraceIdEntry>().unwrap_err(),
            expected,
            "{text:?}"
        );
    }
}

// ---- trace_bwlist --------------------------------------------------------------------------

#[test]
fn bwlist_whitelist_and_blacklist() {
    let w: Bwlist = "w: ps, which".parse().unwrap();
    assert_eq!(w.kind, BwlistKind::White);
    assert_eq!(w.names, ["ps", "which"]);
    assert!(w.allows("ps") && !w.allows("trace"));
    let b: Bwlist = "b: ps".parse().unwrap();
    assert_eq!(
        (b.kind, b.names.clone()),
        (BwlistKind::Black, vec!["ps".to_owned()])
    );
    assert!(!b.allows("ps") && b.allows("trace"));
}

#[test]
fn bwlist_type_is_one_letter_of_either_case_and_names_are_trimmed() {
    let l: Bwlist = " W :ps ,  which ".parse().unwrap();
    assert_eq!(
        (l.kind, l.names.clone()),
        (BwlistKind::White, vec!["ps".into(), "which".into()])
    );
    let l: Bwlist = "B:OPTIONS".parse().unwrap();
    assert_eq!(
        (l.kind, l.names.clone()),
        (BwlistKind::Black, vec!["OPTIONS".into()])
    );
    assert_eq!(l.to_string(), "b: OPTIONS");
}

#[test]
fn bwlist_errors() {
    let cases: &[(&str, BwlistError)] = &[
        ("ps, which", BwlistError::MissingColon),
        ("x: ps", BwlistError::BadKind("x".into())),
        ("wb: ps", BwlistError::BadKind("wb".into())),
        (": ps", BwlistError::BadKind("".into())),
        ("w:", BwlistError::EmptyList),
        ("b:   ", BwlistError::EmptyList),
        ("w: ps,,which", BwlistError::EmptyName),
        ("w: ps,", BwlistError::EmptyName),
    ];
    for (text, expected) in cases {
        assert_eq!(&text.parse::<Bwlist>().unwrap_err(), expected, "{text:?}");
    }
    assert_eq!(BwlistError::EmptyList.to_string(), "no command in list!");
}
