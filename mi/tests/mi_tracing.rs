//! MI tracing (proto type 87): a request and a reply message per command, sharing one
//! `MICORR` id, with OpenSIPS's parts, caps, addresses and `trace_bwlist`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;

use common::*;
use heptap_hep::{ip_proto, proto_type};

fn tracing_control() -> TestControl {
    let c = TestControl::default();
    c.tracing.store(true, Ordering::SeqCst);
    c
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn a_fifo_command_is_traced_as_request_and_reply_with_one_id() {
    let h = Harness::start_with(tracing_control(), |_| {}).await;
    let reply = h
        .fifo_json(
            r#"{"jsonrpc": "2.0", "id": "6204", "method": "sip_trace", "params": ["tid2", "off"]}"#,
        )
        .await;
    let traces = h.control.take_traces();
    assert_eq!(traces.len(), 2);
    let (req, rpl) = (&traces[0], &traces[1]);
    for m in [req, rpl] {
        assert_eq!(m.proto_type, proto_type::MI);
        assert_eq!(m.ip_proto, ip_proto::TCP);
        assert_eq!(m.src.to_string(), "127.0.0.2:0");
        assert_eq!(m.dst.to_string(), "127.0.0.2:0");
    }
    let id = req.correlation_id.as_deref().unwrap();
    assert!(id.starts_with("MICORR") && id.len() == 34, "{id}");
    assert_eq!(rpl.correlation_id.as_deref(), Some(id));
    assert_eq!(
        parts(req),
        kv(&[
            ("command", "sip_trace"),
            ("backend", "fifo"),
            ("parameters", "tid2,off")
        ])
    );
    assert_eq!(parts(rpl), kv(&[("reply", reply.as_str())]));
    // The next command gets a new id.
    h.fifo_json(r#"{"jsonrpc":"2.0","id":1,"method":"ps"}"#)
        .await;
    let next = h.control.take_traces();
    assert_ne!(next[0].correlation_id.as_deref(), Some(id));
    assert_eq!(
        parts(&next[0]),
        kv(&[("command", "ps"), ("backend", "fifo")])
    );
}

#[tokio::test]
async fn an_http_command_is_traced_with_client_and_server_addresses() {
    let h = Harness::start_with(tracing_control(), |_| {}).await;
    let server = h.running.as_ref().unwrap().http_addr.unwrap();
    let mut s = tokio::net::TcpStream::connect(server).await.unwrap();
    let client = s.local_addr().unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(
        post(
            "/mi",
            r#"{"jsonrpc":"2.0","id":1,"method":"trace","params":{"id":"tid","mode":"off"}}"#,
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let traces = h.control.take_traces();
    assert_eq!(traces.len(), 2);
    assert_eq!((traces[0].src, traces[0].dst), (client, server));
    assert_eq!((traces[1].src, traces[1].dst), (server, client));
    assert_eq!(
        parts(&traces[0]),
        kv(&[
            ("command", "trace"),
            ("backend", "json"),
            ("parameters", "tid,off")
        ])
    );
    assert_eq!(
        parts(&traces[1]),
        kv(&[("reply", r#"{"jsonrpc":"2.0","result":"OK","id":1}"#)])
    );
}

#[tokio::test]
async fn long_parameters_and_replies_are_capped() {
    let h = Harness::start_with(tracing_control(), |_| {}).await;
    let long = "p".repeat(300);
    h.fifo_json(&format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"sip_trace","params":["{long}"]}}"#
    ))
    .await;
    h.fifo_json(r#"{"jsonrpc":"2.0","id":2,"method":"which"}"#)
        .await;
    let traces = h.control.take_traces();
    assert_eq!(parts(&traces[0])[2].1, "p".repeat(127));
    let which_reply = &parts(&traces[3])[0].1;
    assert_eq!(which_reply.len(), 128);
    assert!(which_reply.starts_with(r#"{"jsonrpc":"2.0","result":["which","ps","#));
}

#[tokio::test]
async fn unknown_commands_are_traced_too() {
    let h = Harness::start_with(tracing_control(), |s| {
        s.trace_bwlist = Some("w: ps".parse().unwrap())
    })
    .await;
    h.fifo_json(r#"{"jsonrpc":"2.0","id":1,"method":"dlg_list","params":{"x":5}}"#)
        .await;
    let traces = h.control.take_traces();
    assert_eq!(
        parts(&traces[0]),
        kv(&[
            ("command", "dlg_list"),
            ("backend", "fifo"),
            ("parameters", "5")
        ])
    );
}

#[tokio::test]
async fn a_whitelist_traces_only_its_commands_and_their_aliases() {
    let h = Harness::start_with(tracing_control(), |s| {
        s.trace_bwlist = Some("w: sip_trace, get_statistics".parse().unwrap())
    })
    .await;
    h.fifo_json(r#"{"jsonrpc":"2.0","id":1,"method":"ps"}"#)
        .await;
    assert!(h.control.take_traces().is_empty());
    h.fifo_json(r#"{"jsonrpc":"2.0","id":1,"method":"statistics:get","params":[["all"]]}"#)
        .await;
    let traces = h.control.take_traces();
    assert_eq!(traces.len(), 2);
    assert_eq!(
        parts(&traces[0])[0],
        ("command".into(), "statistics:get".into())
    );
}

#[tokio::test]
async fn a_blacklist_traces_everything_else() {
    let h = Harness::start_with(tracing_control(), |s| {
        s.trace_bwlist = Some("b: ps, which".parse().unwrap())
    })
    .await;
    h.fifo_json(r#"{"jsonrpc":"2.0","id":1,"method":"ps"}"#)
        .await;
    h.fifo_json(r#"{"jsonrpc":"2.0","id":1,"method":"core:which"}"#)
        .await;
    assert!(h.control.take_traces().is_empty());
    h.fifo_json(r#"{"jsonrpc":"2.0","id":1,"method":"uptime"}"#)
        .await;
    assert_eq!(h.control.take_traces().len(), 2);
}

#[tokio::test]
async fn a_bwlist_naming_an_unknown_command_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_in(dir.path());
    settings.trace_bwlist = Some("b: ps, dlg_list".parse().unwrap());
    let err =
        heptap_mi::Mi::new(settings, std::sync::Arc::new(TestControl::default())).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"trace_bwlist: can't find mi command "dlg_list""#
    );
}

#[tokio::test]
async fn text_framing_replies_are_traced_with_code_and_reason() {
    let h = Harness::start_with(tracing_control(), |_| {}).await;
    h.fifo_raw("t", b":tcp_trace:t\n\n").await;
    h.fifo_raw("u", b":nope:u\n\n").await;
    let traces = h.control.take_traces();
    assert_eq!(traces.len(), 4);
    assert_eq!(
        parts(&traces[0]),
        kv(&[("command", "tcp_trace"), ("backend", "fifo")])
    );
    assert_eq!(
        parts(&traces[1]),
        kv(&[
            ("code", "200"),
            ("reason", "OK"),
            ("reply", "TCP tracing:: on\n")
        ])
    );
    assert_eq!(traces[0].correlation_id, traces[1].correlation_id);
    assert_eq!(
        parts(&traces[3]),
        kv(&[("code", "500"), ("reason", "command 'nope' not available")])
    );
}

#[tokio::test]
async fn nothing_is_built_when_mi_tracing_is_off() {
    let h = Harness::start().await;
    h.fifo_json(r#"{"jsonrpc":"2.0","id":1,"method":"ps"}"#)
        .await;
    assert!(h.control.take_traces().is_empty());
}

#[tokio::test]
async fn an_http_notification_traces_202_accepted() {
    let h = Harness::start_with(tracing_control(), |_| {}).await;
    let server = h.running.as_ref().unwrap().http_addr.unwrap();
    http_raw(
        server,
        &post(
            "/mi",
            r#"{"jsonrpc":"2.0","method":"ws_trace","params":["on"]}"#,
        ),
    )
    .await;
    let traces = h.control.take_traces();
    assert_eq!(parts(&traces[1]), kv(&[("reply", "202 Accepted")]));
}

/// What OpenSIPS's mi_http traces for requests it cannot run: the method when one could be
/// read (else "unknown"), the readable parameters, and the error reply sent.
#[tokio::test]
async fn bad_requests_are_traced_as_unknown_or_their_method_with_the_error_reply() {
    let h = Harness::start_with(tracing_control(), |_| {}).await;
    let server = h.running.as_ref().unwrap().http_addr.unwrap();
    // (body, the request's parts, the reply)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 5] = [
        (
            "{not json",
            &[("command", "unknown"), ("backend", "json")],
            r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#,
        ),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"ps"}]"#,
            &[("command", "unknown"), ("backend", "json")],
            r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"params":["x"]}"#,
            &[
                ("command", "unknown"),
                ("backend", "json"),
                ("parameters", "x"),
            ],
            r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":2}"#,
        ),
        (
            r#"{"jsonrpc":"1.0","id":3,"method":"tcp_trace","params":["on"]}"#,
            &[
                ("command", "tcp_trace"),
                ("backend", "json"),
                ("parameters", "on"),
            ],
            r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":3}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":7}"#,
            &[("command", "unknown"), ("backend", "json")],
            r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":4}"#,
        ),
    ];
    for (body, request, reply) in cases {
        let answer = http_raw(server, &post("/mi", body)).await;
        assert!(answer.ends_with(reply), "{body}: {answer}");
        let traces = h.control.take_traces();
        assert_eq!(traces.len(), 2, "{body}");
        assert_eq!(parts(&traces[0]), kv(request), "{body}");
        assert_eq!(parts(&traces[1]), kv(&[("reply", reply)]), "{body}");
        assert_eq!(traces[0].correlation_id, traces[1].correlation_id);
    }
    // The same over the FIFO, where heptap answers (OpenSIPS stays silent or crashes).
    let reply = h.fifo_json(r#"{"jsonrpc":"2.0","id":5}"#).await;
    let traces = h.control.take_traces();
    assert_eq!(
        parts(&traces[0]),
        kv(&[("command", "unknown"), ("backend", "fifo")])
    );
    assert_eq!(parts(&traces[1]), kv(&[("reply", reply.as_str())]));
}

#[tokio::test]
async fn http_refusals_before_json_rpc_are_traced_as_mi_http_does() {
    let h = Harness::start_with(tracing_control(), |_| {}).await;
    let server = h.running.as_ref().unwrap().http_addr.unwrap();
    http_raw(
        server,
        "GET /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    http_raw(server, &post("/mi", "  ")).await;
    let traces = h.control.take_traces();
    assert_eq!(traces.len(), 4);
    assert_eq!(
        parts(&traces[0]),
        kv(&[("command", "unknown"), ("backend", "json")])
    );
    assert_eq!(
        parts(&traces[1]),
        kv(&[("reply", "405 Method Not Allowed")])
    );
    assert_eq!(parts(&traces[3]), kv(&[("reply", "400 Bad Request")]));
}

#[tokio::test]
async fn a_bad_request_naming_a_blacklisted_command_is_not_traced() {
    let h = Harness::start_with(tracing_control(), |s| {
        s.trace_bwlist = Some("b: ps".parse().unwrap())
    })
    .await;
    h.fifo_json(r#"{"jsonrpc":"1.0","id":1,"method":"ps"}"#)
        .await;
    assert!(h.control.take_traces().is_empty());
}
