//! The FIFO server with real FIFOs: both framings, errors, limits, reply-FIFO attacks, a
//! client that never reads, re-creation, and the crate's own FIFO clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::*;
use heptap_hep::NetProto;
use heptap_mi::{ClientError, MiError, Params, fifo_call, fifo_call_text};
use heptap_testkit::eventually;
use nix::sys::stat::Mode;
use serde_json::json;
use tokio::net::unix::pipe;

const PS: &str = r#"{"jsonrpc":"2.0","id":"9","method":"ps","params":{}}"#;

/// The server still answers (used after every bad input).
async fn still_serving(h: &Harness) {
    let reply = h.fifo_json(PS).await;
    assert!(
        reply.starts_with(r#"{"jsonrpc":"2.0","result":{"Processes":["#),
        "{reply}"
    );
}

#[tokio::test]
async fn opensips_cli_framing_gets_a_one_line_reply_and_switches_the_trace_id() {
    let h = Harness::start().await;
    let reply = h
        .fifo_json(
            r#"{"jsonrpc": "2.0", "id": "6204", "method": "sip_trace", "params": ["tid2", "off"]}"#,
        )
        .await;
    assert_eq!(reply, r#"{"jsonrpc":"2.0","result":"OK","id":"6204"}"#);
    assert!(!h.control.trace_id_on("tid2"));
    assert!(h.control.trace_id_on("tid"));
}

#[tokio::test]
async fn text_framing_prints_the_trace_status() {
    let h = Harness::start().await;
    let reply = h.fifo_raw("rt", b":sip_trace:rt\n\n").await;
    assert_eq!(
        reply,
        "200 OK\n\
         global:: on\n\
         tid::  type=HEP uri=1.2.3.4:6053 state=on\n\
         tid2::  type=HEP uri=10.0.0.6:9061 state=on\n\
         tid2::  type=HEP uri=10.0.0.7:9060 state=on\n\
         \n"
    );
}

#[tokio::test]
async fn text_framing_switches_a_trace_id_and_the_global_switch() {
    let h = Harness::start().await;
    assert_eq!(
        h.fifo_raw("r1", b":sip_trace:r1\ntid2\noff\n\n").await,
        "200 OK\n\n"
    );
    assert!(!h.control.trace_id_on("tid2"));
    assert_eq!(
        h.fifo_raw("r2", b":sip_trace:r2\nOFF\n\n").await,
        "200 OK\n\n"
    );
    assert!(!h.control.global.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(
        h.fifo_raw("r3", b":sip_trace:r3\nnope\n\n").await,
        "400 Bad trace id value\n\n"
    );
    assert_eq!(
        h.fifo_raw("r4", b":tcp_trace:r4\n\n").await,
        "200 OK\nTCP tracing:: on\n\n"
    );
    assert_eq!(
        h.fifo_raw("r5", b":tcp_trace:r5\noff\n\n").await,
        "200 OK\n\n"
    );
    assert!(!h.control.net_on(NetProto::Tcp));
}

#[tokio::test]
async fn text_framing_ps_version_and_statistics() {
    let h = Harness::start().await;
    let pid = std::process::id();
    assert_eq!(
        h.fifo_raw("p", b":ps:p\n\n").await,
        format!(
            "200 OK\nProcess::  ID=0 PID={pid} Type=main\nProcess::  ID=1 PID={pid} Type=MI FIFO\n\n"
        )
    );
    let v = h.fifo_raw("v", b":version:v\n\n").await;
    assert!(v.starts_with("200 OK\nServer:: heptap "), "{v}");
    assert_eq!(
        h.fifo_raw("s", b":get_statistics:s\nhomer:\ncore:events\n\n")
            .await,
        "200 OK\ncore:events = 12\nhomer:sent = 40\nhomer:dropped_queue_full = 2\n\n"
    );
}

#[tokio::test]
async fn text_framing_unknown_command_is_not_available() {
    let h = Harness::start().await;
    assert_eq!(
        h.fifo_raw("u", b":nope:u\nx\n\n").await,
        "500 command 'nope' not available\n"
    );
    still_serving(&h).await;
}

#[tokio::test]
async fn both_framings_share_one_stream() {
    let h = Harness::start().await;
    let (a, b) = (h.reply_dir.join("a"), h.reply_dir.join("b"));
    for p in [&a, &b] {
        nix::unistd::mkfifo(p, Mode::from_bits_truncate(0o600)).unwrap();
    }
    let mut ra = pipe::OpenOptions::new().open_receiver(&a).unwrap();
    let mut rb = pipe::OpenOptions::new().open_receiver(&b).unwrap();
    write_fifo(
        &h.fifo,
        b":tls_trace:a\n\n:b:{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ws_trace\"}",
    )
    .await;
    let (mut sa, mut sb) = (String::new(), String::new());
    use tokio::io::AsyncReadExt;
    ra.read_to_string(&mut sa).await.unwrap();
    rb.read_to_string(&mut sb).await.unwrap();
    assert_eq!(sa, "200 OK\nTLS tracing:: on\n\n");
    assert_eq!(
        sb,
        r#"{"jsonrpc":"2.0","result":{"WS tracing":"on"},"id":1}"#
    );
}

#[tokio::test]
async fn bad_json_gets_a_parse_error_and_the_fifo_keeps_serving() {
    let h = Harness::start().await;
    assert_eq!(
        h.fifo_json("{not json}").await,
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#
    );
    assert_eq!(
        h.fifo_json(r#"{"jsonrpc":"1.0","id":"5","method":"ps"}"#)
            .await,
        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":"5"}"#
    );
    still_serving(&h).await;
}

#[tokio::test]
async fn a_request_cut_short_is_answered_after_the_request_timeout() {
    let h = Harness::start_with(TestControl::default(), |s| {
        s.request_timeout = Duration::from_millis(200)
    })
    .await;
    assert_eq!(
        h.fifo_raw("cut", br#":cut:{"jsonrpc":"2.0","method":"#)
            .await,
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error","data":"incomplete request"},"id":null}"#
    );
    still_serving(&h).await;
}

#[tokio::test]
async fn unknown_command_is_method_not_found() {
    let h = Harness::start().await;
    assert_eq!(
        h.fifo_json(r#"{"jsonrpc":"2.0","id":"3","method":"dlg_list"}"#)
            .await,
        r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":"3"}"#
    );
}

#[tokio::test]
async fn wrong_params_get_invalid_params_with_opensips_data() {
    let h = Harness::start().await;
    let cases = [
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"sip_trace","params":["a","b","c"]}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Too few or too many parameters"},"id":1}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"method":"trace","params":["on"]}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Command only supports named parameters"},"id":2}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"tcp_trace","params":{"mode":"on"}}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Named parameters do not match"},"id":3}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"get_statistics","params":{"statistics":[]}}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Empty array in parameter 'statistics'"},"id":4}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"tcp_trace","params":["maybe"]}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"trace_mode should be 'on' or 'off'"},"id":5}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":6,"method":"tls_trace","params":["maybe"]}"#,
            r#"{"jsonrpc":"2.0","error":{"code":500,"message":"Bad parameter value","data":"trace_mode should be 'on' or 'off'"},"id":6}"#,
        ),
    ];
    for (request, reply) in cases {
        assert_eq!(h.fifo_json(request).await, reply, "{request}");
    }
}

#[tokio::test]
async fn a_1mb_request_gets_an_error_and_the_fifo_keeps_serving() {
    let h = Harness::start().await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":"1","method":"sip_trace","params":["{}"]}}"#,
        "x".repeat(1024 * 1024)
    );
    assert_eq!(
        h.fifo_json(&big).await,
        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request","data":"request larger than 65536 bytes"},"id":null}"#
    );
    still_serving(&h).await;
    let mut text = b":sip_trace:big2\n".to_vec();
    for _ in 0..(1024 * 1024 / 64) {
        text.extend_from_slice(&[b'y'; 63]);
        text.push(b'\n');
    }
    text.push(b'\n');
    assert_eq!(
        h.fifo_raw("big2", &text).await,
        "400 request larger than 65536 bytes in command 'sip_trace'\n"
    );
    still_serving(&h).await;
}

#[tokio::test]
async fn reply_fifo_symlink_to_a_regular_file_is_not_followed() {
    let mut h = Harness::start().await;
    let victim = h.dir.path().join("victim");
    std::fs::write(&victim, "original").unwrap();
    std::os::unix::fs::symlink(&victim, h.reply_dir.join("evil")).unwrap();
    write_fifo(&h.fifo, format!(":evil:{PS}").as_bytes()).await;
    still_serving(&h).await;
    h.stop().await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original");
}

#[tokio::test]
async fn reply_names_leaving_reply_dir_are_refused() {
    let mut h = Harness::start().await;
    // A FIFO with a reader just outside reply_dir: a write would succeed if it were tried.
    let outside = h.dir.path().join("x");
    nix::unistd::mkfifo(&outside, Mode::from_bits_truncate(0o600)).unwrap();
    let rx = pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&outside)
        .unwrap();
    write_fifo(&h.fifo, format!(":../x:{PS}").as_bytes()).await;
    write_fifo(&h.fifo, b":ps:../x\n\n").await;
    still_serving(&h).await;
    h.stop().await;
    let mut buf = [0u8; 64];
    let nothing = rx.try_read(&mut buf).unwrap_err();
    assert_eq!(nothing.kind(), std::io::ErrorKind::WouldBlock);
}

#[tokio::test]
async fn a_regular_file_in_place_of_the_reply_fifo_is_not_written() {
    let mut h = Harness::start().await;
    let plain = h.reply_dir.join("plain");
    std::fs::write(&plain, "original").unwrap();
    write_fifo(&h.fifo, format!(":plain:{PS}").as_bytes()).await;
    still_serving(&h).await;
    h.stop().await;
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "original");
}

#[tokio::test]
async fn a_hard_linked_reply_fifo_is_refused() {
    let mut h = Harness::start().await;
    let a = h.reply_dir.join("linked");
    nix::unistd::mkfifo(&a, Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::hard_link(&a, h.reply_dir.join("other_name")).unwrap();
    let rx = pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&a)
        .unwrap();
    write_fifo(&h.fifo, format!(":linked:{PS}").as_bytes()).await;
    still_serving(&h).await;
    h.stop().await;
    let mut buf = [0u8; 64];
    assert_eq!(
        rx.try_read(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_block_the_server() {
    // Enough statistics for a reply larger than a pipe's 64 KiB buffer.
    let control = TestControl::default();
    control
        .stats
        .lock()
        .unwrap()
        .extend((0..5000).map(|i| heptap_mi::Statistic {
            group: "bulk".into(),
            name: format!("counter_number_{i}"),
            value: i,
            gauge: false,
        }));
    let mut h = Harness::start_with(control, |_| {}).await;
    // One client opens its reply FIFO and never reads; another never even opens it.
    let stuck = h.reply_dir.join("stuck");
    nix::unistd::mkfifo(&stuck, Mode::from_bits_truncate(0o600)).unwrap();
    let _held = pipe::OpenOptions::new().open_receiver(&stuck).unwrap();
    nix::unistd::mkfifo(&h.reply_dir.join("absent"), Mode::from_bits_truncate(0o600)).unwrap();
    let all = r#"{"jsonrpc":"2.0","id":1,"method":"get_statistics","params":[["all"]]}"#;
    write_fifo(&h.fifo, format!(":stuck:{all}").as_bytes()).await;
    write_fifo(&h.fifo, format!(":absent:{PS}").as_bytes()).await;
    still_serving(&h).await;
    // Both give up within reply_timeout / the open retries, so stopping finishes.
    h.stop().await;
}

#[tokio::test]
async fn a_notification_gets_no_reply() {
    let mut h = Harness::start().await;
    write_fifo(
        &h.fifo,
        br#"::{"jsonrpc":"2.0","method":"sip_trace","params":["off"]}"#,
    )
    .await;
    let named = h.reply_dir.join("waiting");
    nix::unistd::mkfifo(&named, Mode::from_bits_truncate(0o600)).unwrap();
    let rx = pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&named)
        .unwrap();
    write_fifo(
        &h.fifo,
        br#":waiting:{"jsonrpc":"2.0","method":"tcp_trace","params":["off"]}"#,
    )
    .await;
    still_serving(&h).await;
    h.stop().await;
    assert!(!h.control.global.load(std::sync::atomic::Ordering::SeqCst));
    assert!(!h.control.net_on(NetProto::Tcp));
    let mut buf = [0u8; 64];
    assert_eq!(
        rx.try_read(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

#[tokio::test]
async fn a_deleted_fifo_is_recreated() {
    let h = Harness::start().await;
    std::fs::remove_file(&h.fifo).unwrap();
    h.running.as_ref().unwrap().recheck_fifo();
    eventually(DEADLINE, "the FIFO re-created", || h.fifo.exists()).await;
    still_serving(&h).await;
}

#[tokio::test]
async fn the_fifo_gets_fifo_mode() {
    let h = Harness::start().await;
    let mode = std::fs::metadata(&h.fifo).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    let h = Harness::start_with(TestControl::default(), |s| s.fifo_mode = 0o640).await;
    let meta = std::fs::metadata(&h.fifo).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(meta.uid(), nix::unistd::getuid().as_raw());
}

#[tokio::test]
async fn something_else_at_fifo_name_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_in(dir.path());
    let path = settings.fifo_name.clone().unwrap();
    std::fs::write(&path, "keep me").unwrap();
    let mi = heptap_mi::Mi::new(settings, std::sync::Arc::new(TestControl::default())).unwrap();
    let err = mi
        .start(tokio_util::sync::CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, MiError::FifoPathTaken(_)), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[tokio::test]
async fn the_crate_clients_speak_both_framings() {
    let h = Harness::start().await;
    let t = Duration::from_secs(5);
    let reply = fifo_call(
        &h.fifo,
        &h.reply_dir,
        "get_statistics",
        &heptap_mi::cli_params("get_statistics", &["homer:".to_owned()]),
        t,
    )
    .await
    .unwrap();
    assert_eq!(
        reply.result,
        json!({"homer:sent": 40, "homer:dropped_queue_full": 2})
    );
    let err = fifo_call(
        &h.fifo,
        &h.reply_dir,
        "sip_trace",
        &Params::Positional(vec![json!("nope"), json!("on")]),
        t,
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "400: Bad parameter value");
    let text = fifo_call_text(&h.fifo, &h.reply_dir, "tcp_trace", &[], t)
        .await
        .unwrap();
    assert_eq!(text, "200 OK\nTCP tracing:: on\n\n");
    let err = fifo_call_text(&h.fifo, &h.reply_dir, "nope", &[], t)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Text { code: 500, .. }), "{err}");
    // Reply FIFOs are cleaned up.
    assert_eq!(std::fs::read_dir(&h.reply_dir).unwrap().count(), 0);
}

#[tokio::test]
async fn a_fifo_client_fails_fast_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("no_server");
    let err = fifo_call(
        &fifo,
        dir.path(),
        "ps",
        &Params::None,
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::NoServer { .. }), "{err}");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    let err = fifo_call(
        &fifo,
        dir.path(),
        "ps",
        &Params::None,
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("nobody is reading"), "{err}");
}

#[tokio::test]
#[ignore = "needs root (chowns the FIFO to another user); .ci/run runs it as root"]
async fn the_fifo_gets_fifo_user_and_fifo_group() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: only root can chown the FIFO to another user"
    );
    let h = Harness::start_with(TestControl::default(), |s| {
        s.fifo_user = Some("65534".into());
        s.fifo_group = Some("root".into());
    })
    .await;
    let meta = std::fs::metadata(&h.fifo).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 0));
}

#[tokio::test]
async fn unknown_fifo_user_is_refused_at_build_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_in(dir.path());
    settings.fifo_user = Some("no-such-user-heptap".into());
    let err =
        heptap_mi::Mi::new(settings, std::sync::Arc::new(TestControl::default())).unwrap_err();
    assert!(matches!(err, MiError::UnknownUser(_)), "{err}");
}

#[tokio::test]
async fn the_server_fifo_is_refused_as_a_reply_fifo_and_the_next_requests_are_answered() {
    // reply_dir is the FIFO's own directory (the default when neither is configured), so the
    // server FIFO's name is a valid reply name there.
    let mut h = Harness::start_with(TestControl::default(), |s| {
        s.reply_dir = s.fifo_name.as_deref().unwrap().parent().unwrap().to_owned();
    })
    .await;
    let own = h.fifo.file_name().unwrap().to_str().unwrap().to_owned();
    write_fifo(&h.fifo, format!(":{own}:{PS}").as_bytes()).await;
    for i in 0..5 {
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            h.fifo_json(&format!(
                r#"{{"jsonrpc":"2.0","id":{i},"method":"tcp_trace"}}"#
            )),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} after the self-reply was not answered"));
        assert_eq!(
            reply,
            format!(r#"{{"jsonrpc":"2.0","result":{{"TCP tracing":"on"}},"id":{i}}}"#)
        );
    }
    h.stop().await;
}
