//! Loading: defaults < TOML file < HEPTAP_* environment, the built-in default config, and
//! how errors are located and reported.

#![allow(clippy::unwrap_used)] // test helpers: a failure to set up the test should panic

use std::path::{Path, PathBuf};
use std::time::Duration;

use heptap_config::{
    Config, ConfigError, ConfigErrors, Destination, HepIdEntry, Origin, STDOUT, Source, TraceId,
    Transport,
};
use heptap_hep::{NetProto, Version};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_file(
    text: &str,
    vars: &[(&str, &str)],
) -> (tempfile::TempDir, PathBuf, Result<Config, ConfigErrors>) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "heptap.toml", text);
    let result = Config::load(&Source {
        file: Some(file.clone()),
        env: env(vars),
    });
    (dir, file, result)
}

fn errors(result: Result<Config, ConfigErrors>) -> Vec<ConfigError> {
    match result {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e.0,
    }
}

fn find<'a>(errs: &'a [ConfigError], path: &str) -> &'a ConfigError {
    errs.iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no error at {path}; got:\n{}", ConfigErrors(errs.to_vec())))
}

// ---- the built-in default -------------------------------------------------------------------

#[test]
fn builtin_default_validates() {
    Config::builtin_default().validate().unwrap();
}

#[test]
fn builtin_default_relays_5062_to_5060_over_tcp_tracing_everything_to_stdout() {
    let c = Config::builtin_default();
    assert_eq!(c.listener.len(), 1);
    let l = &c.listener[0];
    assert_eq!(l.proto, NetProto::Tcp);
    assert_eq!(l.listen.to_string(), "127.0.0.1:5062");
    assert_eq!(l.upstream.to_string(), "127.0.0.1:5060");
    assert_eq!(l.upstream_proto(), NetProto::Tcp);
    assert_eq!(l.sip_trace_id.as_deref(), Some("default"));
    assert!(c.hep.ids.is_empty());
    assert!(c.tracer.trace_on);
    assert_eq!(
        c.trace_ids(),
        [TraceId {
            name: "default".into(),
            destinations: vec![STDOUT.into()]
        }]
    );
    assert!(c.net.tcp.trace_on);
    assert_eq!(c.net.tcp.trace_destination.as_deref(), Some(STDOUT));
    assert_eq!(c.mi.trace_destination.as_deref(), Some(STDOUT));
    assert_eq!(
        c.mi.fifo_name, None,
        "None: a private per-user run directory"
    );
    assert_eq!(c.mi.reply_dir, None);
    assert_eq!(
        c.mi.http_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:8888")
    );
    assert_eq!(
        c.destinations().into_iter().collect::<Vec<_>>(),
        [(STDOUT.to_owned(), Destination::Stdout)]
    );
}

#[test]
fn load_without_a_file_is_the_builtin_default() {
    let c = Config::load(&Source::default()).unwrap();
    assert_eq!(c, Config::builtin_default());
}

#[test]
fn an_empty_file_gets_the_serde_defaults_not_the_builtin_default() {
    let c = Config::from_toml_str("").unwrap();
    assert_eq!(c, Config::default());
    assert!(c.listener.is_empty());
    assert!(
        !c.net.tcp.trace_on,
        "transport tracing is off by default, as in OpenSIPS"
    );
    assert_eq!(
        c.mi.fifo_name.as_deref(),
        Some(Path::new("/run/heptap/heptap_fifo"))
    );
    assert_eq!(c.mi.fifo_mode, 0o600);
    assert_eq!(c.hep.capture_id, 1);
    assert_eq!(c.hep.queue_bytes, 16 << 20);
    assert_eq!(c.hep.backoff_initial, Duration::from_millis(100));
    assert_eq!(c.service.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.service.workers, 0, "one worker per core unless told");
}

#[test]
fn service_workers_come_from_the_file_or_the_environment_and_absurd_counts_are_refused() {
    let (_dir, _file, result) = load_file("[service]\nworkers = 1\n", &[]);
    assert_eq!(result.unwrap().service.workers, 1);
    let (_dir, _file, result) = load_file(
        "[service]\nworkers = 1\n",
        &[("HEPTAP_SERVICE__WORKERS", "4")],
    );
    assert_eq!(result.unwrap().service.workers, 4);
    let (_dir, _file, result) = load_file("[service]\nworkers = 100000\n", &[]);
    let errs = errors(result);
    let e = find(&errs, "service.workers");
    assert!(e.message.contains("at most 1024"), "{e}");
    assert!(
        matches!(e.origin, Origin::File { line: Some(2), .. }),
        "{e}"
    );
}

#[test]
fn the_effective_config_prints_as_toml_and_loads_back_unchanged() {
    let text = r#"
        [hep]
        queue_bytes = "1MiB"
        [hep.ids]
        homer = "[homer] 10.0.0.5:9060; transport=tls"
        lab = { host = "::1", port = 9999, transport = "udp", version = 2, max_udp_size = 1400 }
        dump = "file:/tmp/heptap-trace.jsonl"
        [tracer]
        trace_id = ["[tid]uri=hep:homer", "[tid]uri=hep:lab", "[all]uri=stdout"]
        [[listener]]
        proto = "ws"
        listen = "[::1]:8080"
        upstream = "localhost:8081"
        sip_trace_id = "tid"
        sip_methods = "b: OPTIONS, NOTIFY"
        idle_timeout = "1m30s"
        [net.ws]
        trace_on = true
        trace_destination = "dump"
        [mi]
        fifo_name = ""
        http_listen = ""
        trace_bwlist = "w: trace"
    "#;
    let c = Config::from_toml_str(text).unwrap();
    for original in [c, Config::builtin_default(), Config::default()] {
        let printed = toml::to_string(&original).unwrap();
        let again = Config::from_toml_str(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
        // The `[name]` of an OpenSIPS string is not printed back (the key is the name).
        let mut expected = original.clone();
        for entry in expected.hep.ids.values_mut() {
            if let HepIdEntry::Hep(t) = entry {
                t.declared_name = None;
            }
        }
        assert_eq!(again, expected, "{printed}");
    }
}

// ---- hep.ids and trace ids ----------------------------------------------------------------------

#[test]
fn hep_ids_take_the_opensips_string_with_or_without_its_name_or_a_table() {
    let c = Config::from_toml_str(
        r#"
        [hep]
        queue_packets = 500
        [hep.ids]
        homer = "[homer] 10.0.0.5:9061; transport=udp; version=2"
        backup = "10.0.0.6"
        secure = { host = "homer.example.com", transport = "TLS", server_name = "homer", queue_packets = 50 }
        console = "stdout"
        "#,
    )
    .unwrap();
    let d = c.destinations();
    let Destination::Hep(homer) = &d["homer"] else {
        panic!("{d:?}")
    };
    assert_eq!(
        (
            homer.host.as_str(),
            homer.port,
            homer.transport,
            homer.version
        ),
        ("10.0.0.5", 9061, Transport::Udp, Version::V2)
    );
    assert_eq!(homer.queue_packets, 500, "[hep] queue_packets applies");
    let Destination::Hep(backup) = &d["backup"] else {
        panic!()
    };
    assert_eq!(
        (backup.name.as_str(), backup.port, backup.transport),
        ("backup", 9060, Transport::Tcp)
    );
    let Destination::Hep(secure) = &d["secure"] else {
        panic!()
    };
    assert_eq!(secure.transport, Transport::Tls);
    assert_eq!(secure.tls.server_name.as_deref(), Some("homer"));
    assert!(secure.tls.tls_verify);
    assert_eq!(
        secure.queue_packets, 50,
        "the per-destination override wins"
    );
    assert_eq!(d["console"], Destination::Stdout);
    assert_eq!(d[STDOUT], Destination::Stdout);
}

#[test]
fn a_hep_id_string_without_name_may_start_with_a_bracketed_ipv6_host() {
    let c = Config::from_toml_str(
        "[hep.ids]\nlab = \"[::1]:9061; transport=udp\"\nv6 = \"[v6] [2001:db8::5]\"\n",
    )
    .unwrap();
    let d = c.destinations();
    let Destination::Hep(lab) = &d["lab"] else {
        panic!("{d:?}")
    };
    assert_eq!(
        (
            lab.name.as_str(),
            lab.host.as_str(),
            lab.port,
            lab.transport
        ),
        ("lab", "::1", 9061, Transport::Udp)
    );
    let Destination::Hep(v6) = &d["v6"] else {
        panic!("{d:?}")
    };
    assert_eq!(
        (v6.host.as_str(), v6.port, v6.transport),
        ("2001:db8::5", 9060, Transport::Tcp)
    );
    // The modparam form itself needs its [name], as in OpenSIPS.
    assert!("[::1]:9061".parse::<heptap_config::HepId>().is_err());
}

#[test]
fn trace_id_entries_sharing_a_name_are_one_id_with_several_destinations() {
    let c = Config::from_toml_str(
        r#"
        [hep.ids]
        a = "[a] 10.0.0.1"
        b = "[b] 10.0.0.2"
        [tracer]
        trace_id = ["[tid]uri=hep:a", "[other]uri=stdout", "[tid]uri=hep:b", "[tid]uri=file:/tmp/t.jsonl"]
        "#,
    )
    .unwrap();
    assert_eq!(
        c.trace_ids(),
        [
            TraceId {
                name: "tid".into(),
                destinations: vec!["a".into(), "b".into(), "file:/tmp/t.jsonl".into()]
            },
            TraceId {
                name: "other".into(),
                destinations: vec![STDOUT.into()]
            },
        ]
    );
    assert_eq!(
        c.destinations()["file:/tmp/t.jsonl"],
        Destination::File("/tmp/t.jsonl".into())
    );
}

// ---- the environment ---------------------------------------------------------------------------

#[test]
fn environment_overrides_the_file() {
    let (_dir, _file, result) = load_file(
        "[hep]\ncapture_id = 2\nhomer5_on = false\n",
        &[
            ("HEPTAP_HEP__CAPTURE_ID", "5"),
            ("HEPTAP_HEP__HOMER5_ON", "true"),
            ("HEPTAP_HEP__QUEUE_BYTES", "4MiB"),
            ("HEPTAP_MI__FIFO_MODE", "0660"),
            ("HEPTAP_LOG__LEVEL", "debug"),
            (
                "HEPTAP_HEP__IDS__HOMER",
                "[homer] 10.0.0.5:9060; transport=udp",
            ),
            ("HEPTAP_TRACER__TRACE_ID", r#"["[tid]uri=hep:homer"]"#),
            ("PATH", "/usr/bin"),
            ("HEPTAP_CONFIG", "/etc/heptap/heptap.toml"),
        ],
    );
    let c = result.unwrap();
    assert_eq!(c.hep.capture_id, 5);
    assert!(c.hep.homer5_on);
    assert_eq!(c.hep.queue_bytes, 4 << 20);
    assert_eq!(c.mi.fifo_mode, 0o660);
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.trace_ids()[0].destinations, ["homer"]);
    assert!(
        matches!(c.destinations()["homer"], Destination::Hep(ref h) if h.transport == Transport::Udp)
    );
}

#[test]
fn environment_can_replace_the_listeners_with_an_array_of_tables() {
    let listeners = r#"[{proto="tcp", listen="127.0.0.1:7000", upstream="10.0.0.1:5060"}, {proto="ws", listen="127.0.0.1:7001", upstream="10.0.0.1:8080"}]"#;
    let c = Config::load(&Source {
        file: None,
        env: env(&[("HEPTAP_LISTENER", listeners)]),
    })
    .unwrap();
    let listens: Vec<String> = c.listener.iter().map(|l| l.listen.to_string()).collect();
    assert_eq!(listens, ["127.0.0.1:7000", "127.0.0.1:7001"]);
    assert_eq!(c.listener[1].upstream_proto(), NetProto::Ws);
}

#[test]
fn environment_without_a_file_applies_on_top_of_the_builtin_default() {
    let c = Config::load(&Source {
        file: None,
        env: env(&[("HEPTAP_MI__HTTP_LISTEN", "127.0.0.1:9999")]),
    })
    .unwrap();
    assert_eq!(c.mi.http_listen.unwrap().to_string(), "127.0.0.1:9999");
    assert_eq!(c.listener, Config::builtin_default().listener);
    assert!(c.net.tcp.trace_on);
}

#[test]
fn a_specific_variable_wins_over_a_whole_table_variable() {
    let c = Config::load(&Source {
        file: None,
        env: env(&[
            ("HEPTAP_HEP__CAPTURE_ID", "9"),
            ("HEPTAP_HEP", "{capture_id=3, node_name=\"edge\"}"),
        ]),
    })
    .unwrap();
    assert_eq!(
        (c.hep.capture_id, c.hep.node_name.as_deref()),
        (9, Some("edge"))
    );
}

#[test]
fn environment_errors_name_the_variable() {
    let (_dir, _file, result) = load_file(
        "[hep]\ncapture_id = 2\n",
        &[
            ("HEPTAP_HEP__CAPTURE_ID", "lots"),
            ("HEPTAP_HEPP__CAPTURE_ID", "1"),
            ("HEPTAP_MI____X", "1"),
        ],
    );
    let errs = errors(result);
    let e = find(&errs, "hep.capture_id");
    assert_eq!(e.origin, Origin::Env("HEPTAP_HEP__CAPTURE_ID".into()));
    assert!(
        e.to_string()
            .starts_with("hep.capture_id (environment variable HEPTAP_HEP__CAPTURE_ID): "),
        "{e}"
    );
    let e = find(&errs, "hepp");
    assert_eq!(e.origin, Origin::Env("HEPTAP_HEPP__CAPTURE_ID".into()));
    assert!(e.message.starts_with("unknown section 'hepp'"), "{e}");
    let e = find(&errs, "");
    assert_eq!(e.origin, Origin::Env("HEPTAP_MI____X".into()));
}

#[test]
fn errors_in_the_builtin_default_are_impossible_but_env_errors_on_it_are_located() {
    let errs = errors(Config::load(&Source {
        file: None,
        env: env(&[("HEPTAP_NET__TCP__TRACE_DESTINATION", "nowhere")]),
    }));
    let e = find(&errs, "net.tcp.trace_destination");
    assert_eq!(
        e.origin,
        Origin::Env("HEPTAP_NET__TCP__TRACE_DESTINATION".into())
    );
    assert!(
        e.message.starts_with("unknown destination 'nowhere'"),
        "{e}"
    );
}

// ---- errors: key path, line, message, all at once -------------------------------------------------

#[test]
fn error_display_names_key_path_file_line_and_reason() {
    let (_dir, file, result) = load_file(
        "[hep.ids]\nhomer = { host = \"10.0.0.5\", transport = \"sctp\" }\n",
        &[],
    );
    let errs = errors(result);
    assert_eq!(errs.len(), 1, "{}", ConfigErrors(errs.clone()));
    assert_eq!(
        errs[0].to_string(),
        format!(
            "hep.ids.homer.transport ({} line 2): unknown transport 'sctp', expected udp, tcp or tls",
            file.display()
        )
    );
}

#[test]
fn a_file_that_is_not_toml_reports_the_line() {
    let errs = errors(Config::from_toml_str("[hep]\ncapture_id = \n"));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "");
    assert_eq!(
        errs[0].origin,
        Origin::File {
            path: "<toml>".into(),
            line: Some(2)
        }
    );
    assert!(errs[0].message.starts_with("not valid TOML"), "{}", errs[0]);
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let errs = errors(Config::load(&Source {
        file: Some("/nonexistent/heptap.toml".into()),
        env: vec![],
    }));
    assert_eq!(
        errs[0].origin,
        Origin::File {
            path: "/nonexistent/heptap.toml".into(),
            line: None
        }
    );
    assert!(errs[0].message.starts_with("cannot read the config file"));
}

/// One broken file, every error reported together, each with its key path and line.
#[test]
fn type_errors_in_every_section_are_reported_together_with_lines() {
    let text = r#"[log]
level = 3

[hep]
capture_id = -1
queue_bytes = "16 lots"
connect_timeout = 2

[hep.ids]
homer = "[homer] 10.0.0.5; transport=sctp"
backup = { host = "10.0.0.6", colour = "red" }

[tracer]
trace_id = ["[tid]hep:homer"]

[[listener]]
proto = "udp"
listen = "127.0.0.1:5062"
upstream = "127.0.0.1:5060"

[[listener]]
proto = "tcp"
listen = "localhost:5063"
upstream = "127.0.0.1"

[[listener]]
proto = "tcp"
upstream = "127.0.0.1:5060"

[net.sctp]
trace_on = true

[mi]
fifo_mode = "0999"
trace_bwlist = "x: ps"

[bogus]
"#;
    let errs = errors(Config::from_toml_str(text));
    let expected: &[(&str, usize, &str)] = &[
        ("log.level", 2, "expected a string in quotes, found 3"),
        (
            "hep.capture_id",
            5,
            "expected a whole number from 0 to 4294967295, found -1",
        ),
        ("hep.queue_bytes", 6, "16 lots"),
        ("hep.connect_timeout", 7, "duration"),
        (
            "hep.ids.homer",
            10,
            "unknown transport 'sctp', expected udp, tcp or tls",
        ),
        (
            "hep.ids.backup.colour",
            11,
            "unknown key 'colour', expected one of: host, port, transport",
        ),
        ("tracer.trace_id[0]", 14, "key delimiter '=' not found"),
        (
            "listener[0].proto",
            17,
            "unknown value 'udp', expected one of: tcp, tls, ws, wss",
        ),
        (
            "listener[1].listen",
            23,
            "invalid address 'localhost:5063': expected ip:port",
        ),
        ("listener[1].upstream", 24, "has no port"),
        ("listener[2].listen", 26, "missing key"),
        (
            "net.sctp",
            30,
            "unknown key, expected one of: tcp, tls, ws, wss",
        ),
        ("mi.fifo_mode", 34, "invalid file mode '0999'"),
        ("mi.trace_bwlist", 35, "found 'x'"),
        ("bogus", 37, "unknown section 'bogus'"),
    ];
    for (path, line, fragment) in expected {
        let e = find(&errs, path);
        assert_eq!(
            e.origin,
            Origin::File {
                path: "<toml>".into(),
                line: Some(*line)
            },
            "{e}"
        );
        assert!(
            e.message.contains(fragment),
            "{path}: {:?} lacks {fragment:?}",
            e.message
        );
    }
    // Every broken key, not only the first of each table: the tables are read key by key.
    let more: Vec<_> = errs
        .iter()
        .filter(|e| !expected.iter().any(|x| x.0 == e.path))
        .map(ToString::to_string)
        .collect();
    assert!(more.is_empty(), "{more:#?}");
}

/// Validation errors across sections, all reported, each at its key's line.
#[test]
fn validation_errors_are_reported_together_with_lines() {
    let text = r#"[log]
level = "verbose"

[hep]
backoff_initial = "20s"
max_udp_size = 100

[hep.ids]
homer = "[backup] 10.0.0.5"
old = "[old] 10.0.0.7; version=2; transport=tcp"
stdout = "[stdout] 10.0.0.8"
tls_no_tls = { host = "10.0.0.9", ca_file = "/etc/ssl/ca.pem" }
"bad name" = "10.0.0.10"
missing = { host = "10.0.0.11", transport = "tls", ca_file = "/nonexistent/ca.pem" }

[tracer]
trace_id = ["[tid]uri=hep:nowhere", "[tid2]uri=stdout", "[tid2]uri=stdout"]

[[listener]]
proto = "tls"
listen = "127.0.0.1:5061"
upstream = "127.0.0.1:5060"
sip_trace_id = "nope"

[[listener]]
proto = "ws"
listen = "127.0.0.1:5061"
upstream = "127.0.0.1:5060"
upstream_proto = "tcp"

[[listener]]
proto = "tcp"
listen = "127.0.0.1:5070"
upstream = "127.0.0.1:5060"
upstream_tls = { tls_verify = false }
max_connections = 0

[net.tcp]
trace_on = true

[net.ws]
trace_master_key = true
trace_destination = "homer"
trace_filter_route = "net_filter"

[routes]
files = ["/nonexistent/routes.cfg"]

[mi]
http_listen = "0.0.0.0:8888"
trace_destination = "ghost"
fifo_name = "relative/fifo"

[mi.upstream]
fifo = "/run/opensips/fifo"
url = "http://127.0.0.1:8889/mi"
"#;
    let (_dir, file, result) = load_file(text, &[]);
    let errs = errors(result);
    let expected: &[(&str, usize, &str)] = &[
        ("log.level", 2, "unknown log level 'verbose'"),
        (
            "hep.backoff_max",
            4,
            "backoff_max (10s) is shorter than backoff_initial (20s)",
        ),
        (
            "hep.max_udp_size",
            6,
            "max_udp_size 100 is out of range 512..=65507",
        ),
        (
            "hep.ids.homer",
            9,
            "the hep_id string is named '[backup]' but its key is 'homer'",
        ),
        (
            "hep.ids.old.transport",
            10,
            "HEP version 2 cannot be sent over tcp",
        ),
        (
            "hep.ids.stdout",
            11,
            "'stdout' is the built-in local destination and cannot be redefined",
        ),
        (
            "hep.ids.tls_no_tls.ca_file",
            12,
            "ca_file is only used with transport = \"tls\" (this hep_id uses tcp)",
        ),
        (
            "hep.ids.bad name",
            13,
            "name 'bad name' may contain only letters, digits, '_' and '-'",
        ),
        (
            "hep.ids.missing.ca_file",
            14,
            "cannot read '/nonexistent/ca.pem'",
        ),
        (
            "tracer.trace_id[0]",
            17,
            "uri=hep:nowhere: unknown hep_id 'nowhere'",
        ),
        (
            "tracer.trace_id[2]",
            17,
            "'[tid2]uri=stdout' is listed twice",
        ),
        (
            "listener[0].tls",
            19,
            "a tls listener needs tls = { cert_file = \"...\", key_file = \"...\" }",
        ),
        (
            "listener[0].sip_trace_id",
            23,
            "unknown trace_id 'nope': tracer.trace_id defines tid, tid2",
        ),
        (
            "listener[1].listen",
            27,
            "127.0.0.1:5061 is already the listen address of listener[0]",
        ),
        (
            "listener[1].upstream_proto",
            29,
            "a ws listener relays to ws or wss, not tcp",
        ),
        (
            "listener[2].upstream_tls",
            35,
            "upstream_tls is only used when upstream_proto is tls or wss",
        ),
        (
            "listener[2].max_connections",
            36,
            "max_connections must be at least 1",
        ),
        (
            "net.tcp.trace_destination",
            38,
            "trace_on is true but no trace_destination is set",
        ),
        (
            "net.ws.trace_master_key",
            42,
            "trace_master_key only applies to tls and wss, not ws",
        ),
        (
            "routes.files[0]",
            47,
            "cannot read '/nonexistent/routes.cfg'",
        ),
        (
            "mi.http_listen",
            50,
            "0.0.0.0:8888 is not a loopback address",
        ),
        (
            "mi.trace_destination",
            51,
            "unknown destination 'ghost': expected a [hep.ids] name, stdout or file:<path>",
        ),
        (
            "mi.fifo_name",
            52,
            "'relative/fifo' must be an absolute path",
        ),
        ("mi.upstream", 54, "set one of fifo and url, not both"),
    ];
    for (path, line, fragment) in expected {
        let e = find(&errs, path);
        assert_eq!(
            e.origin,
            Origin::File {
                path: file.clone(),
                line: Some(*line)
            },
            "{e}"
        );
        assert!(
            e.message.contains(fragment),
            "{path}: {:?} lacks {fragment:?}",
            e.message
        );
    }
    assert_eq!(
        errs.len(),
        expected.len(),
        "unexpected extra errors:\n{}",
        ConfigErrors(errs.clone())
    );
}

#[test]
fn errors_display_one_per_line() {
    let errs =
        Config::from_toml_str("[log]\nlevel = \"loud\"\n[mi]\nhttp_root = \"a/b\"\n").unwrap_err();
    let text = errs.to_string();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with("log.level (<toml> line 2): unknown log level 'loud'"),
        "{text}"
    );
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("mi.http_root (<toml> line 4): "),
        "{text}"
    );
}

#[test]
fn an_error_on_a_default_value_names_the_default() {
    // backoff_max keeps its default (10s) while backoff_initial comes from the environment.
    let errs = errors(Config::load(&Source {
        file: None,
        env: env(&[("HEPTAP_HEP__BACKOFF_INITIAL", "1m")]),
    }));
    let e = find(&errs, "hep.backoff_max");
    assert_eq!(e.origin, Origin::Default);
    assert!(
        e.to_string()
            .starts_with("hep.backoff_max (built-in default): "),
        "{e}"
    );
}

// ---- listeners, TLS files, MI ----------------------------------------------------------------

#[test]
fn max_message_bytes_and_message_timeout_have_opensips_defaults_and_are_checked() {
    let listener = |proto: &str, keys: &str| {
        format!(
            "[[listener]]\nproto = \"{proto}\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:9\"\n{keys}\n"
        )
    };
    let c = Config::from_toml_str(&listener("ws", "")).unwrap();
    assert_eq!(
        c.listener[0].max_message_bytes, 65_535,
        "OpenSIPS's BUF_SIZE"
    );
    assert_eq!(c.listener[0].message_timeout, None);
    assert_eq!(c.listener[0].message_timeout(), Duration::from_secs(10));
    let c = Config::from_toml_str(&listener(
        "wss",
        "max_message_bytes = \"1MiB\"\nmessage_timeout = \"2s\"\ntls = { cert_file = \"/etc/hosts\", key_file = \"/etc/hosts\" }",
    ))
    .unwrap();
    assert_eq!(c.listener[0].max_message_bytes, 1 << 20);
    assert_eq!(c.listener[0].message_timeout(), Duration::from_secs(2));
    // Sizes apply to tcp/tls too (the largest message traced whole).
    let c = Config::from_toml_str(&listener("tcp", "max_message_bytes = 4096")).unwrap();
    assert_eq!(c.listener[0].max_message_bytes, 4096);

    let text = [
        listener("ws", "max_message_bytes = 100"),
        listener("ws", "max_message_bytes = \"32MiB\""),
        listener("ws", "message_timeout = \"0s\""),
        listener("tcp", "message_timeout = \"1s\""),
    ]
    .concat();
    let (_dir, file, result) = load_file(&text, &[]);
    let errs = errors(result);
    let said = |path: &str| {
        let e = find(&errs, path);
        let line = match &e.origin {
            Origin::File { path, line } if *path == file => *line,
            other => panic!("{e}: from {other:?}"),
        };
        (line, e.message.clone())
    };
    assert_eq!(
        said("listener[0].max_message_bytes"),
        (
            Some(5),
            "max_message_bytes 100 is out of range 1024..=16777216".to_owned()
        )
    );
    assert_eq!(
        said("listener[1].max_message_bytes"),
        (
            Some(10),
            "max_message_bytes 33554432 is out of range 1024..=16777216".to_owned()
        )
    );
    assert_eq!(
        said("listener[2].message_timeout"),
        (Some(15), "must be longer than 0".to_owned())
    );
    assert_eq!(
        said("listener[3].message_timeout"),
        (
            Some(20),
            "message_timeout only applies to ws and wss listeners (a tcp listener relays bytes, not messages)"
                .to_owned()
        )
    );
    assert_eq!(errs.len(), 4, "{}", ConfigErrors(errs.clone()));
}

#[test]
fn tls_listener_files_must_be_readable_and_client_cert_modes_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "cert.pem", "cert");
    let key = write(dir.path(), "key.pem", "key");
    let good = format!(
        r#"
        [[listener]]
        proto = "wss"
        listen = "127.0.0.1:0"
        upstream = "[::1]:5060"
        upstream_proto = "wss"
        tls = {{ cert_file = "{cert}", key_file = "{key}", client_cert = "request" }}
        upstream_tls = {{ ca_file = "{cert}", server_name = "proxy.example.com" }}
        "#,
        cert = cert.display(),
        key = key.display()
    );
    let c = Config::from_toml_str(&good).unwrap();
    assert_eq!(c.listener[0].upstream_proto(), NetProto::Wss);
    assert_eq!(c.listener[0].upstream.host, "::1");

    let bad = format!(
        r#"
        [[listener]]
        proto = "tls"
        listen = "127.0.0.1:0"
        upstream = "127.0.0.1:5060"
        tls = {{ cert_file = "{dir}", key_file = "{dir}/missing.pem", client_cert = "require" }}

        [[listener]]
        proto = "tls"
        listen = "127.0.0.1:0"
        upstream = "127.0.0.1:5060"
        tls = {{ cert_file = "{cert}", key_file = "{key}", client_ca_file = "{cert}" }}
        "#,
        dir = dir.path().display(),
        cert = cert.display(),
        key = key.display()
    );
    let errs = errors(Config::from_toml_str(&bad));
    assert!(
        find(&errs, "listener[0].tls.cert_file")
            .message
            .contains("is a directory, not a file")
    );
    assert!(
        find(&errs, "listener[0].tls.key_file")
            .message
            .starts_with("cannot read")
    );
    assert!(
        find(&errs, "listener[0].tls.client_ca_file")
            .message
            .contains("needs client_ca_file")
    );
    assert!(
        find(&errs, "listener[1].tls.client_ca_file")
            .message
            .contains("only used with client_cert = \"require\"")
    );
    assert_eq!(
        errs.len(),
        4,
        "listeners on port 0 may share an address:\n{}",
        ConfigErrors(errs.clone())
    );
}

#[test]
fn mi_http_listen_may_be_remote_only_when_allowed_and_empty_disables_it() {
    // (A remote MI needs a token file: see mi_http_allow_remote_needs_a_token_file.)
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "5f2b8c0e9d4a4b7e8a1c3d6f0e2b4a69\n");
    let c = Config::from_toml_str(&format!(
        "[mi]\nhttp_listen = \"0.0.0.0:8888\"\nhttp_allow_remote = true\nhttp_token_file = {:?}\n",
        token.display().to_string()
    ))
    .unwrap();
    assert_eq!(c.mi.http_listen.unwrap().to_string(), "0.0.0.0:8888");
    let c = Config::from_toml_str("[mi]\nhttp_listen = \"\"\nfifo_name = \"\"\n").unwrap();
    assert_eq!((c.mi.http_listen, c.mi.fifo_name), (None, None));
    let c = Config::from_toml_str("[mi]\nhttp_listen = \"[::1]:8888\"\n").unwrap();
    assert!(c.mi.http_listen.unwrap().ip().is_loopback());
}

#[test]
fn mi_request_timeout_defaults_to_10s_and_must_be_positive() {
    assert_eq!(
        Config::default().mi.request_timeout,
        Duration::from_secs(10)
    );
    let c = Config::from_toml_str("[mi]\nrequest_timeout = \"2s\"\n").unwrap();
    assert_eq!(c.mi.request_timeout, Duration::from_secs(2));
    let errs = errors(Config::from_toml_str("[mi]\nrequest_timeout = \"0s\"\n"));
    assert_eq!(
        find(&errs, "mi.request_timeout").message,
        "must be longer than 0"
    );
}

#[test]
fn mi_upstream_takes_a_fifo_or_an_http_url() {
    let c =
        Config::from_toml_str("[mi.upstream]\nfifo = \"/run/opensips/opensips_fifo\"\n").unwrap();
    let up = c.mi.upstream.unwrap();
    assert_eq!(
        (up.reply_dir.to_str(), up.timeout),
        (Some("/tmp/"), Duration::from_secs(5))
    );
    Config::from_toml_str("[mi.upstream]\nurl = \"http://127.0.0.1:8889/mi\"\n").unwrap();
    let errs = errors(Config::from_toml_str(
        "[mi.upstream]\nurl = \"ftp://x/mi\"\n",
    ));
    assert!(
        find(&errs, "mi.upstream.url")
            .message
            .contains("must start with http://")
    );
    let errs = errors(Config::from_toml_str("[mi.upstream]\ntimeout = \"1s\"\n"));
    assert!(find(&errs, "mi.upstream").message.contains("set fifo"));
}

#[test]
fn mi_http_allow_remote_needs_a_token_file() {
    let (_dir, _, result) = load_file(
        "[mi]\nhttp_listen = \"0.0.0.0:8888\"\nhttp_allow_remote = true\n",
        &[],
    );
    let errs = errors(result);
    let e = find(&errs, "mi.http_token_file");
    assert!(
        e.message
            .contains("http_allow_remote = true needs a token file"),
        "{e}"
    );
    let (_dir, _, result) = load_file("[mi]\nhttp_token_file = \"/nonexistent/token\"\n", &[]);
    let errs = errors(result);
    assert!(
        find(&errs, "mi.http_token_file")
            .message
            .contains("cannot read '/nonexistent/token'")
    );
}

#[test]
fn mi_http_hosts_are_host_names() {
    let c =
        Config::from_toml_str("[mi]\nhttp_hosts = [\"mi.example.org\", \"heptap-1.\"]\n").unwrap();
    assert_eq!(c.mi.http_hosts, ["mi.example.org", "heptap-1."]);
    assert_eq!(c.mi.http_token_file, None);
    let (_dir, _, result) = load_file(
        "[mi]\nhttp_hosts = [\"ok.example\", \"mi.example.org:8888\", \"http://x\", \"\"]\n",
        &[],
    );
    let errs = errors(result);
    let e = find(&errs, "mi.http_hosts[1]");
    assert!(
        e.message
            .contains("'mi.example.org:8888' is not a host name"),
        "{e}"
    );
    find(&errs, "mi.http_hosts[2]");
    find(&errs, "mi.http_hosts[3]");
    assert!(errs.iter().all(|e| e.path != "mi.http_hosts[0]"));
}

#[test]
fn sip_methods_are_sip_tokens_each_refused_one_on_its_own() {
    let listener = |methods: &str| {
        format!(
            "[[listener]]\nproto = \"tcp\"\nlisten = \"127.0.0.1:5062\"\nupstream = \
             \"127.0.0.1:5060\"\nsip_methods = \"{methods}\"\n"
        )
    };
    let c = Config::from_toml_str(&listener("w: INVITE, X-Ext.1")).unwrap();
    let methods = c.listener[0].sip_methods.as_ref().unwrap();
    assert_eq!(methods.names, ["INVITE", "X-Ext.1"]);
    let errs = errors(Config::from_toml_str(&listener(
        "b: IN VITE, OPTIONS, NOTIFY:x",
    )));
    let messages: Vec<&str> = errs
        .iter()
        .filter(|e| e.path == "listener[0].sip_methods")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "'IN VITE' is not a SIP method name",
            "'NOTIFY:x' is not a SIP method name"
        ]
    );
}

#[test]
fn address_groups_take_addresses_and_networks() {
    let c = Config::from_toml_str(
        "[address_groups]\noffice = [\"10.0.0.0/8\", \"192.168.1.1\", \"2001:db8::/32\", \"::1\"]\n",
    )
    .unwrap();
    let nets: Vec<String> = c.address_groups["office"]
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        nets,
        ["10.0.0.0/8", "192.168.1.1/32", "2001:db8::/32", "::1/128"]
    );
    let errs = errors(Config::from_toml_str(
        "[address_groups]\noffice = [\"10.0.0.0/8\",\n \"10.0.0.300\"]\n",
    ));
    let e = find(&errs, "address_groups.office[1]");
    assert_eq!(
        e.origin,
        Origin::File {
            path: "<toml>".into(),
            line: Some(3)
        }
    );
    assert!(
        e.message
            .contains("'10.0.0.300' is not an IP address or network"),
        "{e}"
    );
}

// ---- routes --------------------------------------------------------------------------------

#[test]
fn routes_are_read_in_order_and_route_names_checked_by_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "routes.cfg", "route[net_filter] { exit; }\n");
    let text = format!(
        "[net.tcp]\ntrace_on = true\ntrace_destination = \"stdout\"\ntrace_filter_route = \"net_filter\"\n\
         [net.tls]\ntrace_filter_route = \"tls_filter\"\n\
         [routes]\nfiles = [\"{}\"]\ninline = \"route[inline_one] {{ drop; }}\"\n",
        file.display()
    );
    let path = write(dir.path(), "heptap.toml", &text);
    let src = Source {
        file: Some(path.clone()),
        env: vec![],
    };
    let c = Config::load(&src).unwrap();
    let texts = c.route_texts().unwrap();
    assert_eq!(texts.len(), 2);
    assert_eq!(
        (texts[0].file.as_deref(), texts[0].path.as_str()),
        (Some(file.as_path()), "routes.files[0]")
    );
    assert_eq!(texts[0].text, "route[net_filter] { exit; }\n");
    assert_eq!(
        (texts[1].file.as_deref(), texts[1].path.as_str()),
        (None, "routes.inline")
    );
    let refs: Vec<_> = c
        .route_refs()
        .into_iter()
        .map(|r| (r.path, r.name))
        .collect();
    assert_eq!(
        refs,
        [
            (
                "net.tcp.trace_filter_route".to_owned(),
                "net_filter".to_owned()
            ),
            (
                "net.tls.trace_filter_route".to_owned(),
                "tls_filter".to_owned()
            )
        ]
    );
    let errs = src.locate(
        c.check_route_names(|name| name == "net_filter")
            .unwrap_err(),
    );
    assert_eq!(errs.0.len(), 1);
    assert_eq!(
        errs.0[0].to_string(),
        format!(
            "net.tls.trace_filter_route ({} line 6): unknown route 'tls_filter': no route[tls_filter] in [routes]",
            path.display()
        )
    );
}

#[test]
fn a_filter_route_without_any_routes_is_an_error() {
    let errs = errors(Config::from_toml_str(
        "[net.ws]\ntrace_filter_route = \"f\"\n",
    ));
    assert!(
        find(&errs, "net.ws.trace_filter_route")
            .message
            .contains("[routes] has no files and no inline text")
    );
}

// ---- the shipped example ---------------------------------------------------------------------

#[test]
fn the_spool_is_per_destination_under_hep_spool_dir_with_table_overrides() {
    let c = Config::from_toml_str(
        r#"
        [hep]
        spool_dir = "/var/lib/heptap/spool"
        spool_max_bytes = "64MiB"
        [hep.ids]
        homer = "[homer] 10.0.0.5:9060; transport=udp"
        big = { host = "10.0.0.6", spool_max_bytes = "2GiB", spool_max_age = "2h", spool_replay_rate = 500 }
        moved = { host = "10.0.0.7", spool_dir = "/srv/spool" }
        none = { host = "10.0.0.8", spool_dir = "" }
        "#,
    )
    .unwrap();
    c.validate().unwrap();
    let spool = |name: &str| match &c.destinations()[name] {
        heptap_config::Destination::Hep(id) => id.spool.clone(),
        other => panic!("{other:?}"),
    };
    let homer = spool("homer").unwrap();
    assert_eq!(homer.dir, Path::new("/var/lib/heptap/spool/homer"));
    assert_eq!(homer.max_bytes, 64 << 20);
    assert_eq!(homer.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(homer.replay_rate, 20_000);
    let big = spool("big").unwrap();
    assert_eq!(
        (big.max_bytes, big.max_age, big.replay_rate),
        (2 << 30, Duration::from_secs(7200), 500)
    );
    assert_eq!(spool("moved").unwrap().dir, Path::new("/srv/spool/moved"));
    assert_eq!(spool("none"), None);

    // Without [hep] spool_dir nothing spools unless a table asks for it.
    let c = Config::from_toml_str("[hep.ids]\nh = \"[h] 10.0.0.5:9060\"\n").unwrap();
    assert!(
        matches!(&c.destinations()["h"], heptap_config::Destination::Hep(id) if id.spool.is_none())
    );
}

#[test]
fn spool_keys_are_checked() {
    let errs = errors(Config::from_toml_str(
        r#"
        [hep]
        spool_dir = "relative/spool"
        spool_max_bytes = 1000
        spool_max_age = "0s"
        [hep.ids]
        h = { host = "10.0.0.6", spool_dir = "rel", spool_max_bytes = 5 }
        "#,
    ));
    for path in [
        "hep.spool_dir",
        "hep.spool_max_bytes",
        "hep.spool_max_age",
        "hep.ids.h.spool_dir",
        "hep.ids.h.spool_max_bytes",
    ] {
        find(&errs, path);
    }
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn packaging_example_config_loads_and_validates() {
    let c = Config::load(&Source {
        file: Some(repo_file("packaging/heptap.toml")),
        env: vec![],
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.listener.is_empty());
}

/// Every key the model has is written in docs/configuration.md and packaging/heptap.toml.
#[test]
fn every_key_is_documented_and_in_the_example() {
    let mut full = Config::default();
    let mut listener = Config::builtin_default().listener.remove(0);
    listener.tls = Some(heptap_config::ListenerTls {
        cert_file: "/c".into(),
        key_file: "/k".into(),
        client_ca_file: Some("/ca".into()),
        client_cert: Default::default(),
    });
    listener.upstream_tls = Some(heptap_config::UpstreamTls {
        ca_file: Some("/ca".into()),
        server_name: Some("s".into()),
        cert_file: Some("/c".into()),
        key_file: Some("/k".into()),
        ..Default::default()
    });
    listener.upstream_proto = Some(NetProto::Tls);
    listener.sip_methods = Some("b: OPTIONS".parse().unwrap());
    listener.idle_timeout = Some(Duration::from_secs(1));
    listener.message_timeout = Some(Duration::from_secs(1));
    full.listener.push(listener);
    let mut id = heptap_config::HepIdTable::new("h");
    id.transport = Some(Transport::Tls);
    id.ca_file = Some("/ca".into());
    id.cert_file = Some("/c".into());
    id.key_file = Some("/k".into());
    id.server_name = Some("s".into());
    id.queue_packets = Some(1);
    id.queue_bytes = Some(1);
    id.max_udp_size = Some(1);
    id.spool_dir = Some("/s".into());
    id.spool_max_bytes = Some(1);
    id.spool_max_age = Some(Duration::from_secs(1));
    id.spool_replay_rate = Some(1);
    id.udp_replay_rate = Some(1);
    full.hep.ids.insert("h".into(), HepIdEntry::Hep(id));
    full.hep.spool_dir = Some("/s".into());
    full.hep.auth_key = Some("k".into());
    full.hep.node_name = Some("n".into());
    full.service.user = Some("u".into());
    full.service.group = Some("g".into());
    full.service.pid_file = Some("/p".into());
    full.routes.inline = Some("r".into());
    full.net.tcp.trace_destination = Some("d".into());
    full.net.tcp.trace_filter_route = Some("r".into());
    full.mi.fifo_user = Some("u".into());
    full.mi.fifo_group = Some("g".into());
    full.mi.trace_destination = Some("d".into());
    full.mi.trace_bwlist = Some("b: ps".parse().unwrap());
    full.mi.upstream = Some(heptap_config::MiUpstream {
        fifo: Some("/f".into()),
        url: Some("u".into()),
        ..Default::default()
    });

    let mut keys = std::collections::BTreeSet::new();
    collect_keys(&toml::Value::try_from(&full).unwrap(), &mut keys);
    let docs = std::fs::read_to_string(repo_file("docs/configuration.md")).unwrap();
    let example = std::fs::read_to_string(repo_file("packaging/heptap.toml")).unwrap();
    for key in &keys {
        let in_docs = [
            format!("`{key}`"),
            format!("[{key}]"),
            format!("[{key}."),
            format!(".{key}]"),
        ]
        .iter()
        .any(|form| docs.contains(form.as_str()));
        assert!(in_docs, "docs/configuration.md does not document `{key}`");
        let in_example = [
            format!("{key} ="),
            format!("[{key}]"),
            format!("[{key}."),
            format!(".{key}]"),
        ]
        .iter()
        .any(|form| example.contains(form.as_str()));
        assert!(in_example, "packaging/heptap.toml lacks {key}");
    }
}

fn collect_keys(v: &toml::Value, keys: &mut std::collections::BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                if k != "h" {
                    keys.insert(k.clone());
                }
                collect_keys(v, keys);
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| collect_keys(v, keys)),
        _ => {}
    }
}

// ---- one pass, OpenSIPS's names, pasted URIs ---------------------------------------------------

/// Types, values, ranges and references in one run: a bad key costs only itself, a hep_id that
/// failed still counts as defined, and the listeners after a broken one keep their numbers.
#[test]
fn type_range_and_reference_errors_come_in_one_run() {
    let text = r#"[hep]
capture_id = "lots"
max_udp_size = 100

[hep.ids]
homer = "[homer] 10.0.0.5:9060; transport=sctp"

[tracer]
trace_id = ["[tid]uri=hep:homer", "[tid]uri=hep:nosuch"]

[net.tcp]
trace_on = true
trace_destination = "homer"

[[listener]]
proto = "tcp"
listen = "127.0.0.1:5062"
upstream = "127.0.0.1"
max_connections = "many"

[[listener]]
proto = "tcp"
listen = "127.0.0.1:5063"
upstream = "127.0.0.1:5060"
sip_trace_id = "other"
"#;
    let errs = errors(Config::from_toml_str(text));
    let expected: &[(&str, usize, &str)] = &[
        (
            "hep.capture_id",
            2,
            "expected a whole number from 0 to 4294967295, found \"lots\"",
        ),
        ("hep.max_udp_size", 3, "out of range 512..=65507"),
        ("hep.ids.homer", 6, "unknown transport 'sctp'"),
        ("tracer.trace_id[1]", 9, "unknown hep_id 'nosuch'"),
        ("listener[0].upstream", 18, "has no port"),
        (
            "listener[0].max_connections",
            19,
            "expected a whole number (0 or more), found \"many\"",
        ),
        ("listener[1].sip_trace_id", 25, "unknown trace_id 'other'"),
    ];
    for (path, line, fragment) in expected {
        let e = find(&errs, path);
        assert_eq!(
            e.origin,
            Origin::File {
                path: "<toml>".into(),
                line: Some(*line)
            },
            "{e}"
        );
        assert!(e.message.contains(fragment), "{e} lacks {fragment:?}");
    }
    // Nothing that only follows from what failed (homer's references, listener[0]'s absence).
    assert_eq!(errs.len(), expected.len(), "{}", ConfigErrors(errs.clone()));
}

#[test]
fn opensips_modparam_names_and_one_line_strings_are_accepted() {
    let config = Config::from_toml_str(
        r#"[hep]
hep_capture_id = 42
hep_id = "[homer] 10.0.0.5:9060; transport=udp"

[tracer]
trace_id = "[tid]uri=hep:homer"

[mi]
root = "json"
"#,
    )
    .unwrap();
    assert_eq!(config.hep.capture_id, 42);
    assert!(
        matches!(config.hep.ids.get("homer"), Some(HepIdEntry::Hep(t)) if t.host == "10.0.0.5")
    );
    assert_eq!(config.tracer.trace_id.len(), 1);
    assert_eq!(config.tracer.trace_id[0].name, "tid");
    assert_eq!(config.mi.http_root, "json");
    // One modparam line per entry, as a list.
    let config =
        Config::from_toml_str("[hep]\nhep_id = [\"[a] 10.0.0.5\", \"[b] 10.0.0.6; version=2\"]\n")
            .unwrap();
    assert_eq!(config.hep.ids.len(), 2);
    // An error on the OpenSIPS name is found on its line.
    let errs = errors(Config::from_toml_str("[hep]\n\nhep_capture_id = -1\n"));
    let e = find(&errs, "hep.hep_capture_id");
    assert_eq!(
        e.origin,
        Origin::File {
            path: "<toml>".into(),
            line: Some(3)
        }
    );
}

#[test]
fn collector_uris_pasted_from_freeswitch_kamailio_or_heplify_get_a_precise_hint() {
    for (value, address, transport) in [
        (
            "udp:10.0.0.1:9060;hep=3;capture_id=100",
            "10.0.0.1:9060",
            "udp",
        ),
        ("sip:10.0.0.1:9060", "10.0.0.1:9060", "udp"),
        ("tcp:10.0.0.1:9061", "10.0.0.1:9061", "tcp"),
        ("hep://10.0.0.1:9060", "10.0.0.1:9060", "udp"),
    ] {
        let errs = errors(Config::from_toml_str(&format!(
            "[hep.ids]\nhomer = \"{value}\"\n"
        )));
        let e = find(&errs, "hep.ids.homer");
        assert!(
            e.message
                .contains(&format!("\"{address}; transport={transport}\"")),
            "{e}"
        );
        assert!(!e.message.contains("IPv6"), "{e}");
    }
    let errs = errors(Config::from_toml_str(
        "[hep.ids.homer]\nhost = \"udp:10.0.0.1\"\n",
    ));
    assert!(
        find(&errs, "hep.ids.homer.host")
            .message
            .contains("transport")
    );
    // trace_id's uri syntax where a destination name is wanted.
    let errs = errors(Config::from_toml_str(
        "[hep.ids]\nhomer = \"10.0.0.1\"\n[net.tcp]\ntrace_on = true\ntrace_destination = \"hep:homer\"\n",
    ));
    assert!(
        find(&errs, "net.tcp.trace_destination")
            .message
            .contains("write the name alone, \"homer\""),
    );
}

// ---- transparent relay (upstream_source) -----------------------------------------------------

#[test]
fn upstream_source_is_local_by_default_and_client_takes_its_port_and_fallback() {
    let c = Config::from_toml_str(
        r#"
        [[listener]]
        proto = "tcp"
        listen = "127.0.0.1:5062"
        upstream = "127.0.0.1:5060"
        [[listener]]
        proto = "tcp"
        listen = "127.0.0.1:5063"
        upstream = "127.0.0.1:5060"
        accept_proxy_protocol = true
        upstream_source = "client"
        upstream_source_port = "client"
        upstream_source_fallback = "local"
    "#,
    )
    .unwrap();
    let plain = &c.listener[0];
    assert!(!plain.accept_proxy_protocol);
    assert!(c.listener[1].accept_proxy_protocol);
    assert_eq!(plain.upstream_source, heptap_config::UpstreamSource::Local);
    assert_eq!(
        plain.upstream_source_port,
        heptap_config::UpstreamSourcePort::Any
    );
    assert_eq!(
        plain.upstream_source_fallback,
        heptap_config::UpstreamSourceFallback::Refuse
    );
    let transparent = &c.listener[1];
    assert_eq!(
        transparent.upstream_source,
        heptap_config::UpstreamSource::Client
    );
    assert_eq!(
        transparent.upstream_source_port,
        heptap_config::UpstreamSourcePort::Client
    );
    assert_eq!(
        transparent.upstream_source_fallback,
        heptap_config::UpstreamSourceFallback::Local
    );
}

#[test]
fn upstream_source_port_and_fallback_without_a_client_source_are_refused_and_bad_values_named() {
    let (_dir, _file, result) = load_file(
        r#"
        [[listener]]
        proto = "tcp"
        listen = "127.0.0.1:5062"
        upstream = "127.0.0.1:5060"
        upstream_source_port = "client"
        upstream_source_fallback = "local"
    "#,
        &[],
    );
    let errs = errors(result);
    assert_eq!(
        find(&errs, "listener[0].upstream_source_port").message,
        "upstream_source_port is only used with upstream_source = \"client\""
    );
    assert_eq!(
        find(&errs, "listener[0].upstream_source_fallback").message,
        "upstream_source_fallback is only used with upstream_source = \"client\""
    );
    let (_dir, _file, result) = load_file(
        r#"
        [[listener]]
        proto = "tcp"
        listen = "127.0.0.1:5062"
        upstream = "127.0.0.1:5060"
        upstream_source = "proxy"
    "#,
        &[],
    );
    let errs = errors(result);
    let e = find(&errs, "listener[0].upstream_source");
    assert!(
        e.message.contains("local") && e.message.contains("client"),
        "{e}"
    );
}
