//! JSON-RPC over HTTP with real connections on 127.0.0.1: the root path, methods, statuses,
//! notifications, limits, the loopback rule and the crate's HTTP client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use heptap_mi::{ClientError, Mi, MiError, MiSettings, http_call};
use serde_json::json;

fn addr(h: &Harness) -> std::net::SocketAddr {
    h.running.as_ref().unwrap().http_addr.unwrap()
}

#[tokio::test]
async fn post_to_the_root_answers_json_rpc() {
    let h = Harness::start().await;
    let r = http_raw(
        addr(&h),
        &post("/mi", r#"{"jsonrpc": "2.0", "id": "21311", "method": "sip_trace", "params": ["tid2", "off"]}"#),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
    assert!(
        r.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{r}"
    );
    assert_eq!(body(&r), r#"{"jsonrpc":"2.0","result":"OK","id":"21311"}"#);
    assert!(!h.control.trace_id_on("tid2"));
}

#[tokio::test]
async fn errors_are_json_rpc_errors_inside_a_200() {
    let h = Harness::start().await;
    let r = http_raw(
        addr(&h),
        &post("/mi", r#"{"jsonrpc":"2.0","id":7,"method":"nope"}"#),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
    assert_eq!(
        body(&r),
        r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":7}"#
    );
    let r = http_raw(addr(&h), &post("/mi", "{oops")).await;
    assert_eq!(
        body(&r),
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#
    );
}

#[tokio::test]
async fn get_is_405() {
    let h = Harness::start().await;
    let r = http_raw(
        addr(&h),
        "GET /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 405 Method Not Allowed");
    assert!(r.to_ascii_lowercase().contains("allow: post"), "{r}");
}

#[tokio::test]
async fn other_paths_are_404() {
    let h = Harness::start().await;
    for path in ["/", "/json", "/mi/ps", "/mix"] {
        let r = http_raw(
            addr(&h),
            &post(path, r#"{"jsonrpc":"2.0","id":1,"method":"ps"}"#),
        )
        .await;
        assert_eq!(status(&r), "HTTP/1.1 404 Not Found", "{path}");
    }
}

#[tokio::test]
async fn a_notification_is_202_with_no_body() {
    let h = Harness::start().await;
    let r = http_raw(
        addr(&h),
        &post(
            "/mi",
            r#"{"jsonrpc":"2.0","method":"tcp_trace","params":["off"]}"#,
        ),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 202 Accepted");
    assert_eq!(body(&r), "");
    assert!(!h.control.net_on(heptap_hep::NetProto::Tcp));
}

#[tokio::test]
async fn an_empty_body_is_400_and_a_1mb_body_is_413() {
    let h = Harness::start().await;
    let r = http_raw(addr(&h), &post("/mi", "")).await;
    assert_eq!(status(&r), "HTTP/1.1 400 Bad Request");
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ps","params":["{}"]}}"#,
        "x".repeat(1024 * 1024)
    );
    let r = http_raw(addr(&h), &post("/mi", &big)).await;
    assert_eq!(status(&r), "HTTP/1.1 413 Payload Too Large");
    assert_eq!(
        body(&r),
        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request","data":"request larger than 65536 bytes"},"id":null}"#
    );
    let r = http_raw(
        addr(&h),
        &post("/mi", r#"{"jsonrpc":"2.0","id":1,"method":"uptime"}"#),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn http_root_is_configurable() {
    let h = Harness::start_with(TestControl::default(), |s| {
        s.http_root = "/json_rpc/".into()
    })
    .await;
    let r = http_raw(
        addr(&h),
        &post(
            "/json_rpc",
            r#"{"jsonrpc":"2.0","id":1,"method":"version"}"#,
        ),
    )
    .await;
    assert!(
        body(&r).starts_with(r#"{"jsonrpc":"2.0","result":{"Server":"heptap "#),
        "{r}"
    );
    let r = http_raw(
        addr(&h),
        &post("/mi", r#"{"jsonrpc":"2.0","id":1,"method":"version"}"#),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 404 Not Found");
}

#[tokio::test]
async fn a_remote_listen_address_needs_http_allow_remote() {
    let settings = MiSettings {
        http_listen: Some("0.0.0.0:0".parse().unwrap()),
        ..MiSettings::default()
    };
    let err = Mi::new(settings.clone(), Arc::new(TestControl::default())).unwrap_err();
    assert!(matches!(err, MiError::RemoteHttp(_)), "{err}");
    // (With a token: a remote MI needs one, see http_gate.rs.)
    let allowed = MiSettings {
        http_allow_remote: true,
        http_token: Some(heptap_mi::BearerToken::new("0123456789abcdef").unwrap()),
        ..settings
    };
    assert!(Mi::new(allowed, Arc::new(TestControl::default())).is_ok());
}

#[tokio::test]
async fn the_crate_http_client() {
    let h = Harness::start().await;
    let t = Duration::from_secs(5);
    let reply = http_call(
        &h.url,
        "trace",
        &heptap_mi::cli_params("trace", &["id=tid".to_owned()]),
        t,
    )
    .await
    .unwrap();
    assert_eq!(
        reply.result,
        json!({"trace destinations": [{"name": "tid", "type": "HEP", "uri": "1.2.3.4:6053", "state": "on"}]})
    );
    let err = http_call(
        &h.url,
        "trace",
        &heptap_mi::cli_params("trace", &["id=zz".to_owned()]),
        t,
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "400: Bad trace id value");
    let wrong_path = h.url.replace("/mi", "/other");
    let err = http_call(&wrong_path, "ps", &heptap_mi::Params::None, t)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::HttpStatus { status: 404 }),
        "{err}"
    );
}

#[tokio::test]
async fn the_http_client_fails_fast_when_nothing_listens() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mi", l.local_addr().unwrap());
    drop(l);
    let err = http_call(&url, "ps", &heptap_mi::Params::None, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
}
