//! Who may ask the HTTP MI (issue 16, hole 1), with real connections on 127.0.0.1: what a web
//! page in a browser on the host can send (cross-site POSTs, form bodies, DNS rebinding) is
//! refused before it runs; the MI's own clients (opensips-cli, `heptap mi`, curl with
//! `Content-Type: application/json`) go through; the bearer token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use heptap_mi::{
    BearerToken, ClientError, Control, LogLevel, Mi, MiError, MiSettings, Params, http_call,
    http_call_with_token,
};
use hyper_util::rt::{TokioExecutor, TokioIo};

const TOKEN: &str = "5f2b8c0e9d4a4b7e8a1c3d6f0e2b4a69";

fn addr(h: &Harness) -> std::net::SocketAddr {
    h.running.as_ref().unwrap().http_addr.unwrap()
}

/// A POST of `body` to /mi with the given extra header lines (each ending in CRLF).
fn request(headers: &str, body: &str) -> String {
    format!(
        "POST /mi HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

const TRACE_OFF: &str = r#"{"jsonrpc":"2.0","method":"trace","params":{"mode":"off"},"id":1}"#;

#[tokio::test]
async fn a_cross_site_text_plain_post_cannot_switch_tracing_off() {
    let h = Harness::start().await;
    let host = format!("Host: {}\r\n", addr(&h));
    for (origin, content_type, why) in [
        // What a page on http://evil.example sends with fetch(..., {mode: "no-cors"}): no
        // preflight.
        (
            "http://evil.example",
            "text/plain",
            r#"cross-origin request refused (Origin \"http://evil.example\")"#,
        ),
        // Even as JSON (a preflight would stop a browser, but not a careless one).
        (
            "http://evil.example",
            "application/json",
            r#"cross-origin request refused (Origin \"http://evil.example\")"#,
        ),
        // A sandboxed frame or a file:// page is foreign too.
        (
            "null",
            "application/json",
            r#"cross-origin request refused (Origin \"null\")"#,
        ),
    ] {
        let headers = format!("{host}Origin: {origin}\r\nContent-Type: {content_type}\r\n");
        let r = http_raw(addr(&h), &request(&headers, TRACE_OFF)).await;
        assert_eq!(status(&r), "HTTP/1.1 403 Forbidden", "{r}");
        assert_eq!(
            body(&r),
            format!(
                r#"{{"jsonrpc":"2.0","error":{{"code":-32600,"message":"Invalid Request","data":"{why}"}},"id":null}}"#
            )
        );
        assert!(h.control.sip_trace_on(), "tracing is still on");
    }
}

#[tokio::test]
async fn a_form_encoded_body_cannot_set_the_log_level() {
    let h = Harness::start().await;
    let host = format!("Host: {}\r\n", addr(&h));
    // An HTML form posting `{"jsonrpc":...,"x":"=..."}` as its one field.
    let form = r#"{"jsonrpc":"2.0","method":"log_level","params":[4],"id":1,"x":"=y"}"#;
    for content_type in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let r = http_raw(
            addr(&h),
            &request(&format!("{host}Content-Type: {content_type}\r\n"), form),
        )
        .await;
        assert_eq!(status(&r), "HTTP/1.1 415 Unsupported Media Type", "{r}");
        assert!(
            body(&r).contains(r#""data":"Content-Type must be application/json, not"#),
            "{r}"
        );
    }
    // No Content-Type at all (curl -d without -H sends a form type; raw clients none).
    let r = http_raw(addr(&h), &request(&host, form)).await;
    assert_eq!(status(&r), "HTTP/1.1 415 Unsupported Media Type", "{r}");
    assert_eq!(
        h.control.log_level(),
        LogLevel::Info,
        "the level is unchanged"
    );
}

#[tokio::test]
async fn a_dns_rebinding_host_gets_no_reply() {
    let h = Harness::start().await;
    let hep_ids = r#"{"jsonrpc":"2.0","method":"hep_ids","id":1}"#;
    let r = http_raw(
        addr(&h),
        &request(
            &format!(
                "Host: rebind.attacker.example:{}\r\nContent-Type: application/json\r\n",
                addr(&h).port()
            ),
            hep_ids,
        ),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 421 Misdirected Request", "{r}");
    assert!(!r.contains("homer"), "nothing of the reply leaks: {r}");
    assert!(
        body(&r).contains("is not an IP address, localhost or a name listed in mi.http_hosts"),
        "{r}"
    );
    // A request without a Host at all.
    let r = http_raw(
        addr(&h),
        &request("Content-Type: application/json\r\n", hep_ids),
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 400 Bad Request", "{r}");
}

#[tokio::test]
async fn addresses_localhost_listed_names_and_the_mis_own_origin_are_answered() {
    let h = Harness::start_with(TestControl::default(), |s| {
        s.http_hosts = vec!["mi.example.org".to_owned()];
    })
    .await;
    let port = addr(&h).port();
    let version = r#"{"jsonrpc":"2.0","method":"version","id":1}"#;
    for headers in [
        format!("Host: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"),
        format!("Host: [::1]:{port}\r\nContent-Type: application/json; charset=utf-8\r\n"),
        format!("Host: localhost:{port}\r\nContent-Type: Application/JSON\r\n"),
        format!(
            "Host: localhost:{port}\r\nOrigin: http://localhost:{port}\r\nContent-Type: application/json\r\n"
        ),
        "Host: MI.example.org\r\nContent-Type: application/json\r\n".to_owned(),
        format!(
            "Host: 127.0.0.1:{port}\r\nOrigin: https://mi.example.org\r\nContent-Type: application/json\r\n"
        ),
    ] {
        let r = http_raw(addr(&h), &request(&headers, version)).await;
        assert_eq!(status(&r), "HTTP/1.1 200 OK", "{headers}\n{r}");
        assert!(body(&r).contains(r#""Server":"heptap "#), "{r}");
    }
}

#[tokio::test]
async fn http2_requests_pass_the_same_gate() {
    let h = Harness::start().await;
    let tcp = tokio::net::TcpStream::connect(addr(&h)).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let ask = |authority: &str, content_type: &str| {
        http::Request::post(format!("http://{authority}/mi"))
            .header("content-type", content_type)
            .body(http_body_util::Full::new(hyper::body::Bytes::from_static(
                TRACE_OFF.as_bytes(),
            )))
            .unwrap()
    };
    let r = send
        .send_request(ask("rebind.attacker.example", "application/json"))
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    let r = send
        .send_request(ask(&addr(&h).to_string(), "text/plain"))
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(h.control.sip_trace_on());
    let r = send
        .send_request(ask(&addr(&h).to_string(), "application/json"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!h.control.sip_trace_on());
}

#[tokio::test]
async fn with_a_token_every_request_must_carry_it() {
    let token = BearerToken::new(TOKEN).unwrap();
    let h = Harness::start_with(TestControl::default(), |s| {
        s.http_token = Some(token.clone());
    })
    .await;
    let host = format!("Host: {}\r\nContent-Type: application/json\r\n", addr(&h));
    let r = http_raw(addr(&h), &request(&host, TRACE_OFF)).await;
    assert_eq!(status(&r), "HTTP/1.1 401 Unauthorized", "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("www-authenticate: bearer realm=\"heptap mi\"\r\n"),
        "{r}"
    );
    let wrong = format!(
        "{host}Authorization: Bearer {}\r\n",
        TOKEN.replace('5', "6")
    );
    let r = http_raw(addr(&h), &request(&wrong, TRACE_OFF)).await;
    assert_eq!(status(&r), "HTTP/1.1 401 Unauthorized", "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("www-authenticate: bearer realm=\"heptap mi\", error=\"invalid_token\""),
        "{r}"
    );
    assert!(h.control.sip_trace_on(), "nothing ran");
    let right = format!("{host}Authorization: Bearer {TOKEN}\r\n");
    let r = http_raw(addr(&h), &request(&right, TRACE_OFF)).await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK", "{r}");
    assert!(!h.control.sip_trace_on());
    // The crate's client: refused without the token (the reason readable), served with it.
    let t = Duration::from_secs(5);
    let err = http_call(&h.url, "ps", &Params::None, t).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused { status: 401, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("a bearer token is required"),
        "{err}"
    );
    let reply = http_call_with_token(&h.url, "ps", &Params::None, t, Some(&token))
        .await
        .unwrap();
    assert_eq!(reply.result["Processes"][0]["Type"], "main");
}

#[tokio::test]
async fn a_remote_mi_needs_a_token() {
    let settings = MiSettings {
        http_listen: Some("0.0.0.0:0".parse().unwrap()),
        http_allow_remote: true,
        ..MiSettings::default()
    };
    let err = Mi::new(settings.clone(), Arc::new(TestControl::default())).unwrap_err();
    assert!(matches!(err, MiError::TokenRequired), "{err}");
    assert!(err.to_string().contains("mi.http_token_file"), "{err}");
    let with_token = MiSettings {
        http_token: Some(BearerToken::new(TOKEN).unwrap()),
        ..settings
    };
    assert!(Mi::new(with_token, Arc::new(TestControl::default())).is_ok());
}

#[test]
fn a_token_file_must_be_private_and_hold_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let token = BearerToken::read_file(&file).unwrap();
    assert!(
        token.matches(TOKEN.as_bytes()),
        "the final newline is not part of it"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(BearerToken::read_file(&file).is_ok());
    for mode in [0o644, 0o604, 0o660, 0o606] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = BearerToken::read_file(&file).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("mi.http_token_file {}: mode", file.display())),
            "{mode:o}: {err}"
        );
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&file, "\n").unwrap();
    let err = BearerToken::read_file(&file).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
    std::fs::write(&file, "secret\n").unwrap();
    let err = BearerToken::read_file(&file).unwrap_err().to_string();
    assert!(err.contains("too short"), "{err}");
    let err = BearerToken::read_file(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("No such file"), "{err}");
    let err = BearerToken::read_file(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
}
