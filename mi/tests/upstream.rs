//! Forwarding to the proxy's MI (`[mi.upstream]`): commands heptap does not own go to a fake
//! OpenSIPS MI (over its FIFO or HTTP) and its replies come back unchanged; `which` lists both
//! sets; a dead or hung upstream gives a clear error within the timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use heptap_mi::{UpstreamSettings, UpstreamTarget};
use nix::sys::stat::Mode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

/// What the fake OpenSIPS answers. Spaces after ':' and ',' show that heptap passes replies on
/// unchanged (its own replies are compact). `None` = never answer (a hung proxy).
fn fake_opensips_reply(request: &Value) -> Option<String> {
    let id = request["id"].to_string();
    let result = match request["method"].as_str().unwrap_or("") {
        "which" if request["params"].get("command").is_some() => json!([["callid"]]),
        "which" => json!(["dlg_list", "ps", "uptime"]),
        "dlg_list" => json!({"Dialogs": [{"callid": "abc"}]}),
        "hang" => return None,
        _ => {
            return Some(format!(
                r#"{{"jsonrpc": "2.0", "error": {{"code": -32601, "message": "Method not found"}}, "id": {id}}}"#
            ));
        }
    };
    Some(format!(
        r#"{{"jsonrpc": "2.0", "result": {result}, "id": {id}}}"#
    ))
}

/// Requests the fake received, as the bytes of their JSON body.
type Seen = Arc<Mutex<Vec<String>>>;

/// A fake OpenSIPS mi_fifo: reads `:reply:{json}` and writes the answer into `dir/reply`.
fn fake_fifo_upstream(dir: &Path) -> (PathBuf, Seen) {
    let fifo = dir.join("opensips_fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    let mut rx = pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&fifo)
        .unwrap();
    let seen: Seen = Arc::default();
    let (seen2, dir) = (seen.clone(), dir.to_owned());
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            let n = rx.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            // Each request is `:name:{json}`; heptap writes each one in a single write.
            while let Some(rest) = buf.strip_prefix(b":") {
                let sep = rest.iter().position(|&b| b == b':').unwrap();
                let name = String::from_utf8(rest[..sep].to_vec()).unwrap();
                let body = &rest[sep + 1..];
                let mut it = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
                let Some(Ok(request)) = it.next() else { break };
                let used = 1 + sep + 1 + it.byte_offset();
                seen2
                    .lock()
                    .unwrap()
                    .push(String::from_utf8(body[..it.byte_offset()].to_vec()).unwrap());
                buf.drain(..used);
                if let (false, Some(reply)) = (name.is_empty(), fake_opensips_reply(&request)) {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(dir.join(&name))
                        .unwrap();
                    let mut tx = pipe::Sender::from_file(f).unwrap();
                    tx.write_all(reply.as_bytes()).await.unwrap();
                }
            }
        }
    });
    (fifo, seen)
}

/// A fake OpenSIPS mi_http on 127.0.0.1:0.
async fn fake_http_upstream() -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mi", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let service =
                    tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let bytes = req.into_body().collect().await.unwrap().to_bytes();
                            let text = String::from_utf8(bytes.to_vec()).unwrap();
                            seen.lock().unwrap().push(text.clone());
                            let request: Value = serde_json::from_str(&text).unwrap();
                            let reply = match fake_opensips_reply(&request) {
                                Some(r) => r,
                                None => std::future::pending().await,
                            };
                            Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                                hyper::body::Bytes::from(reply),
                            )))
                        }
                    });
                let _ = jsonrpsee::server::serve(stream, service).await;
            });
        }
    });
    (url, seen)
}

fn upstream(target: UpstreamTarget) -> Option<UpstreamSettings> {
    Some(UpstreamSettings {
        target,
        timeout: Duration::from_millis(500),
    })
}

async fn with_fifo_upstream() -> (Harness, Seen, tempfile::TempDir) {
    let updir = tempfile::tempdir().unwrap();
    let (fifo, seen) = fake_fifo_upstream(updir.path());
    let target = UpstreamTarget::Fifo {
        fifo,
        reply_dir: updir.path().to_owned(),
    };
    let h = Harness::start_with(TestControl::default(), |s| s.upstream = upstream(target)).await;
    (h, seen, updir)
}

async fn with_http_upstream() -> (Harness, Seen) {
    let (url, seen) = fake_http_upstream().await;
    let h = Harness::start_with(TestControl::default(), |s| {
        s.upstream = upstream(UpstreamTarget::Http { url })
    })
    .await;
    (h, seen)
}

const DLG_LIST: &str = r#"{"jsonrpc": "2.0", "id": "77", "method": "dlg_list", "params": {}}"#;
const DLG_REPLY: &str =
    r#"{"jsonrpc": "2.0", "result": {"Dialogs":[{"callid":"abc"}]}, "id": "77"}"#;

#[tokio::test]
async fn fifo_upstream_gets_foreign_commands_verbatim_and_replies_come_back_unchanged() {
    let (h, seen, _updir) = with_fifo_upstream().await;
    assert_eq!(h.fifo_json(DLG_LIST).await, DLG_REPLY);
    assert_eq!(seen.lock().unwrap().as_slice(), [DLG_LIST]);
    // heptap's own commands stay here.
    h.fifo_json(r#"{"jsonrpc":"2.0","id":1,"method":"tcp_trace","params":["off"]}"#)
        .await;
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn http_upstream_gets_foreign_commands_verbatim_and_replies_come_back_unchanged() {
    let (h, seen) = with_http_upstream().await;
    let addr = h.running.as_ref().unwrap().http_addr.unwrap();
    let r = http_raw(addr, &post("/mi", DLG_LIST)).await;
    assert_eq!(body(&r), DLG_REPLY);
    assert_eq!(seen.lock().unwrap().as_slice(), [DLG_LIST]);
    // An error of the proxy comes back as the proxy wrote it.
    let r = http_raw(
        addr,
        &post("/mi", r#"{"jsonrpc":"2.0","id":5,"method":"nope"}"#),
    )
    .await;
    assert_eq!(
        body(&r),
        r#"{"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 5}"#
    );
}

#[tokio::test]
async fn which_lists_heptaps_commands_then_the_proxys() {
    let (h, _seen, _updir) = with_fifo_upstream().await;
    let reply: Value = serde_json::from_str(
        &h.fifo_json(r#"{"jsonrpc":"2.0","id":1,"method":"which"}"#)
            .await,
    )
    .unwrap();
    let names: Vec<&str> = reply["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"which"));
    assert_eq!(names.last(), Some(&"dlg_list"));
    assert_eq!(names.iter().filter(|n| **n == "ps").count(), 1);
    // `which command=<proxy command>` is the proxy's to answer.
    assert_eq!(
        h.fifo_json(r#"{"jsonrpc":"2.0","id":2,"method":"which","params":{"command":"dlg_list"}}"#)
            .await,
        r#"{"jsonrpc": "2.0", "result": [["callid"]], "id": 2}"#
    );
}

#[tokio::test]
async fn text_framing_commands_are_forwarded_as_json_rpc() {
    let (h, seen) = with_http_upstream().await;
    assert_eq!(
        h.fifo_raw("t", b":dlg_list:t\n\n").await,
        "200 OK\nDialogs:: \n\tcallid:: abc\n\n"
    );
    let sent: Value = serde_json::from_str(&seen.lock().unwrap()[0]).unwrap();
    assert_eq!(sent["method"], "dlg_list");
}

#[tokio::test]
async fn a_dead_fifo_upstream_is_a_clear_error_at_once() {
    let updir = tempfile::tempdir().unwrap();
    let fifo = updir.path().join("nobody_reads");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    let target = UpstreamTarget::Fifo {
        fifo: fifo.clone(),
        reply_dir: updir.path().to_owned(),
    };
    let h = Harness::start_with(TestControl::default(), |s| s.upstream = upstream(target)).await;
    let reply = h.fifo_json(DLG_LIST).await;
    assert_eq!(
        reply,
        format!(
            r#"{{"jsonrpc":"2.0","error":{{"code":-32000,"message":"Server error","data":"upstream MI FIFO {0} failed: no MI server at {0}: nobody is reading the FIFO"}},"id":"77"}}"#,
            fifo.display()
        )
    );
    // heptap's own commands, and which, still work.
    let which = h
        .fifo_json(r#"{"jsonrpc":"2.0","id":1,"method":"which"}"#)
        .await;
    assert!(
        which.starts_with(r#"{"jsonrpc":"2.0","result":["which""#),
        "{which}"
    );
}

#[tokio::test]
async fn a_dead_http_upstream_is_a_clear_error_at_once() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mi", l.local_addr().unwrap());
    drop(l);
    let h = Harness::start_with(TestControl::default(), |s| {
        s.upstream = upstream(UpstreamTarget::Http { url: url.clone() })
    })
    .await;
    let reply: Value = serde_json::from_str(&h.fifo_json(DLG_LIST).await).unwrap();
    assert_eq!(reply["error"]["code"], -32000);
    let data = reply["error"]["data"].as_str().unwrap();
    assert!(
        data.starts_with(&format!(
            "upstream MI {url} failed: cannot connect to {url}"
        )),
        "{data}"
    );
}

#[tokio::test]
async fn a_hung_upstream_times_out() {
    for fifo in [true, false] {
        let updir = tempfile::tempdir().unwrap();
        let h = if fifo {
            let (up, _) = fake_fifo_upstream(updir.path());
            let target = UpstreamTarget::Fifo {
                fifo: up,
                reply_dir: updir.path().to_owned(),
            };
            Harness::start_with(TestControl::default(), |s| s.upstream = upstream(target)).await
        } else {
            with_http_upstream().await.0
        };
        let started = Instant::now();
        let reply: Value = serde_json::from_str(
            &h.fifo_json(r#"{"jsonrpc":"2.0","id":1,"method":"hang"}"#)
                .await,
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(reply["error"]["code"], -32000);
        let data = reply["error"]["data"].as_str().unwrap();
        assert!(data.ends_with("failed: no reply within 500ms"), "{data}");
    }
}

#[tokio::test]
async fn a_bwlist_may_name_proxy_commands_when_there_is_an_upstream() {
    let (url, _) = fake_http_upstream().await;
    let control = TestControl::default();
    control
        .tracing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let h = Harness::start_with(control, |s| {
        s.upstream = upstream(UpstreamTarget::Http { url });
        s.trace_bwlist = Some("w: dlg_list".parse().unwrap());
    })
    .await;
    h.fifo_json(r#"{"jsonrpc":"2.0","id":1,"method":"ps"}"#)
        .await;
    assert!(h.control.take_traces().is_empty());
    let reply = h.fifo_json(DLG_LIST).await;
    let traces = h.control.take_traces();
    assert_eq!(traces.len(), 2);
    assert_eq!(parts(&traces[0])[0], ("command".into(), "dlg_list".into()));
    assert_eq!(parts(&traces[1])[0], ("reply".into(), reply));
}
