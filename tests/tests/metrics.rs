//! What operators see of heptap itself: `GET /metrics` read by the Prometheus project's own
//! parser (Python `prometheus_client`) with values checked against the traffic the test sent,
//! on the MI's HTTP listener and on `metrics_listen`; and every `get_statistics` example of
//! docs/mi.md run against a running heptap.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Stdio;

use heptap::{Running, Stop};
use heptap_config::Config;
use heptap_mi::Params;
use heptap_testkit::{eventually, prometheus_python};
use heptap_tests::collector::{Scratch, UdpCollector, WAIT};
use heptap_tests::sip::{SipUpstream, is_sip, play_dialog, sip_packets};
use heptap_tests::taps::{self, run};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A listener `edge` tracing SIP (trace id `tid`) and its connections to the UDP destination
/// `homer`, the MI on HTTP, and the metrics on a listener of their own.
fn config(upstream: SocketAddr, collector: SocketAddr, dir: &Scratch) -> Config {
    let mi = dir.mi_toml(true);
    let text = format!(
        "[hep.ids]\nhomer = \"[homer] {collector}; transport=udp\"\n\
         [tracer]\ntrace_id = [\"[tid]uri=hep:homer\"]\n\
         [[listener]]\nname = \"edge\"\nproto = \"tcp\"\nlisten = \"127.0.0.1:0\"\n\
         upstream = \"{upstream}\"\nsip_trace_id = \"tid\"\n\
         [net.tcp]\ntrace_on = true\ntrace_destination = \"homer\"\n\
         {mi}metrics_listen = \"127.0.0.1:0\"\n"
    );
    taps::parse(&text)
}

/// One HTTP/1.1 request with `Connection: close`: the status and the body.
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_with(addr, method, path, "").await
}

/// [`http`] with `headers` (each ending in CRLF) added.
async fn http_with(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\
         {headers}Content-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the answer within WAIT")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    assert!(
        status != 200 || head.contains("text/plain; version=0.0.4"),
        "the exposition's content type: {head}"
    );
    (status, body.to_owned())
}

/// One sample as the parser read it.
#[derive(Debug, Clone)]
struct Sample {
    family: String,
    kind: String,
    name: String,
    labels: Value,
    value: f64,
}

/// Reads the exposition with `prometheus_client.parser` (which refuses what Prometheus
/// would refuse), every sample with its family's name and type.
async fn parse(text: &str) -> Vec<Sample> {
    const SCRIPT: &str = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        out.append({"family": f.name, "type": f.type, "name": s.name, "labels": s.labels,
                    "value": s.value})
print(json.dumps(out))
"#;
    let mut child = tokio::process::Command::new(prometheus_python())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter()
        .map(|s| Sample {
            family: s["family"].as_str().unwrap().to_owned(),
            kind: s["type"].as_str().unwrap().to_owned(),
            name: s["name"].as_str().unwrap().to_owned(),
            labels: s["labels"].clone(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`; panics when there is none.
fn value(samples: &[Sample], name: &str, labels: Value) -> f64 {
    let want = labels.as_object().unwrap();
    samples
        .iter()
        .find(|s| s.name == name && want.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels}"))
        .value
}

fn stat(heptap: &Running, group: &str, name: &str) -> u64 {
    heptap.stats().lookup(group, name).map_or(0, |c| c.get())
}

#[tokio::test]
async fn metrics_read_by_the_prometheus_parser_match_the_traffic_sent() {
    let up = SipUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, col.addr, &dir)).await;
    let mi = heptap.mi_http_addr().unwrap();
    let url = format!("http://{mi}/mi");

    // A dialog traced: seven SIP messages.
    let mut client = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    play_dialog(&mut client).await;
    let mut received = sip_packets(&mut col, 7).await;
    // Switched off over the MI (an MI request answered OK): the next dialog is counted as not
    // traced because of the switch.
    heptap_mi::http_call(
        &url,
        "sip_trace",
        &Params::Positional(vec![json!("off")]),
        WAIT,
    )
    .await
    .unwrap();
    play_dialog(&mut client).await;
    eventually(WAIT, "14 SIP messages counted", || {
        stat(&heptap, "listener_edge", "sip_messages") == 14
    })
    .await;
    // An MI error and an MI refusal.
    assert!(
        heptap_mi::http_call(&url, "no_such_command", &Params::None, WAIT)
            .await
            .is_err()
    );
    assert_eq!(http(mi, "GET", "/mi").await.0, 405);
    // And one over the FIFO.
    let fifo = dir.path().join("fifo");
    heptap_mi::fifo_call(&fifo, dir.path(), "ps", &Params::None, WAIT)
        .await
        .unwrap();
    drop(client);
    eventually(WAIT, "the connection closed and its events sent", || {
        stat(&heptap, "listener_edge", "active") == 0
            && stat(&heptap, "hep_homer", "enqueued") == stat(&heptap, "hep_homer", "sent")
    })
    .await;
    let sent = stat(&heptap, "hep_homer", "sent");
    let first = received.len() as u64;
    received.extend(col.until(WAIT, |g| g.len() as u64 + first >= sent).await);
    assert_eq!(received.iter().filter(|p| is_sip(p)).count(), 7);

    // Scraped on both listeners; the parser reads both.
    let (status, text) = http(mi, "GET", "/metrics").await;
    assert_eq!(status, 200, "{text}");
    let samples = parse(&text).await;
    let metrics_addr = heptap.metrics_addr().unwrap();
    let (status, own) = http(metrics_addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "{own}");
    parse(&own).await;

    let edge = || json!({"listener": "edge", "proto": "tcp"});
    let homer = || json!({"destination": "homer", "proto": "udp"});
    assert_eq!(
        value(&samples, "heptap_listener_sip_traced_total", edge()),
        7.0
    );
    assert_eq!(
        value(&samples, "heptap_listener_sip_switched_off_total", edge()),
        7.0
    );
    assert_eq!(
        value(&samples, "heptap_listener_sip_messages_total", edge()),
        14.0
    );
    assert_eq!(
        value(
            &samples,
            "heptap_listener_accepted_connections_total",
            edge()
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "heptap_listener_active_connections", edge()),
        0.0
    );
    assert_eq!(
        value(&samples, "heptap_destination_sent_packets_total", homer()),
        received.len() as f64,
        "sent is what the collector received"
    );
    assert_eq!(
        value(
            &samples,
            "heptap_destination_enqueued_packets_total",
            homer()
        ),
        sent as f64
    );
    for reason in ["queue_full", "oversize", "encode_error", "shutdown"] {
        let labels = json!({"destination": "homer", "reason": reason});
        assert_eq!(
            value(&samples, "heptap_destination_dropped_packets_total", labels),
            0.0
        );
    }
    assert_eq!(
        value(&samples, "heptap_destination_connected", homer()),
        1.0
    );
    assert_eq!(
        value(&samples, "heptap_destination_queue_packets", homer()),
        0.0
    );
    let since = value(
        &samples,
        "heptap_destination_seconds_since_last_send",
        homer(),
    );
    assert!((0.0..60.0).contains(&since), "{since}");
    let mi_requests = |result: &str| {
        value(
            &samples,
            "heptap_mi_requests_total",
            json!({"transport": "http", "result": result}),
        )
    };
    assert_eq!(mi_requests("ok"), 1.0, "sip_trace off");
    assert_eq!(mi_requests("error"), 1.0, "no_such_command");
    assert_eq!(mi_requests("refused"), 1.0, "GET /mi");
    let fifo_ok = json!({"transport": "fifo", "result": "ok"});
    assert_eq!(
        value(&samples, "heptap_mi_requests_total", fifo_ok),
        1.0,
        "ps"
    );
    assert_eq!(
        value(
            &samples,
            "heptap_build_info",
            json!({"version": env!("CARGO_PKG_VERSION")})
        ),
        1.0
    );
    assert!(value(&samples, "heptap_uptime_seconds", json!({})) > 0.0);
    let listen = heptap.listen_addrs()[0].to_string();
    assert_eq!(
        value(
            &samples,
            "heptap_listener_info",
            json!({"listener": "edge", "proto": "tcp", "listen": listen})
        ),
        1.0
    );
    // Counters are counters (`_total`), and every statistic is there exactly once: the
    // samples besides those that only a scraper needs are as many as get_statistics lists.
    for s in &samples {
        if s.kind == "counter" {
            assert!(s.name.ends_with("_total"), "{s:?}");
        }
    }
    let extra: BTreeSet<&str> = [
        "heptap_destination_seconds_since_last_send",
        "heptap_listener_info",
        "heptap_destination_info",
        "heptap_build_info",
        "heptap_uptime_seconds",
    ]
    .into();
    let from_stats = samples
        .iter()
        .filter(|s| !extra.contains(s.family.as_str()))
        .count();
    // As the MI lists them (what get_statistics answers, aggregate groups included).
    assert_eq!(from_stats, heptap.control().statistics().len(), "{text}");
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn the_metrics_listener_serves_get_metrics_and_nothing_else() {
    let up = SipUpstream::bind().await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, col.addr, &dir)).await;
    let addr = heptap.metrics_addr().unwrap();
    assert_eq!(http(addr, "HEAD", "/metrics").await.0, 200);
    assert_eq!(http(addr, "POST", "/metrics").await.0, 405);
    assert_eq!(http(addr, "GET", "/mi").await.0, 404);
    assert_eq!(http(addr, "GET", "/").await.0, 404);
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn on_the_mi_listener_a_scrape_passes_the_mis_gate_and_the_metrics_listener_needs_no_token() {
    use std::os::unix::fs::PermissionsExt;
    let up = SipUpstream::bind().await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let token_file = dir.path().join("token");
    let token = "scrape-token-0123456789abcdef";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut config = config(up.addr, col.addr, &dir);
    config.mi.http_token_file = Some(token_file);
    let heptap = run(config).await;
    let mi = heptap.mi_http_addr().unwrap();
    assert_eq!(http(mi, "GET", "/metrics").await.0, 401, "no token");
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let (status, text) = http_with(mi, "GET", "/metrics", &bearer).await;
    assert_eq!(status, 200);
    parse(&text).await;
    let cross_site = format!("{bearer}Origin: http://evil.example\r\n");
    assert_eq!(http_with(mi, "GET", "/metrics", &cross_site).await.0, 403);
    let (status, text) = http(heptap.metrics_addr().unwrap(), "GET", "/metrics").await;
    assert_eq!(status, 200, "metrics_listen asks for no token");
    let samples = parse(&text).await;
    let refused = json!({"transport": "http", "result": "refused"});
    assert_eq!(value(&samples, "heptap_mi_requests_total", refused), 2.0);
    heptap.shutdown(Stop::Immediate).await;
}

/// The selector words of every `get_statistics` example in docs/mi.md: after
/// `get_statistics` up to the end of the code span or line, the words that are selectors.
fn doc_examples(doc: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in doc.lines() {
        let mut rest = line;
        while let Some(i) = rest.find("get_statistics ") {
            rest = &rest[i + "get_statistics ".len()..];
            let end = rest.find('`').unwrap_or(rest.len());
            let words: Vec<String> = rest[..end]
                .split_whitespace()
                .take_while(|w| w.contains(':') || *w == "all")
                .map(str::to_owned)
                .collect();
            if !words.is_empty() {
                out.push(words);
            }
        }
    }
    out
}

/// The `"group:name"` keys of the JSON results shown in the `get_statistics` section.
fn doc_result_names(doc: &str) -> Vec<String> {
    let section = doc
        .split("### `get_statistics`")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("docs/mi.md has a get_statistics section");
    let mut names = Vec::new();
    for piece in section.split('"').skip(1).step_by(2) {
        if let Some((group, name)) = piece.split_once(':')
            && !group.is_empty()
            && !name.is_empty()
            && !piece.contains(' ')
        {
            names.push(piece.to_owned());
        }
    }
    names
}

#[tokio::test]
async fn every_get_statistics_example_of_the_docs_answers() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/mi.md")).unwrap();
    let examples = doc_examples(&doc);
    assert!(examples.len() >= 3, "examples found: {examples:?}");
    let results = doc_result_names(&doc);
    assert!(!results.is_empty(), "no example result found");
    let up = SipUpstream::bind().await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let heptap = run(config(up.addr, col.addr, &dir)).await;
    let url = format!("http://{}/mi", heptap.mi_http_addr().unwrap());
    for words in &examples {
        let params = Params::Positional(vec![json!(words)]);
        let reply = heptap_mi::http_call(&url, "get_statistics", &params, WAIT).await;
        let reply = reply.unwrap_or_else(|e| panic!("get_statistics {words:?}: {e}"));
        assert!(
            reply.result.as_object().is_some_and(|o| !o.is_empty()),
            "get_statistics {words:?}: {}",
            reply.result
        );
    }
    let all = heptap_mi::http_call(
        &url,
        "get_statistics",
        &Params::Positional(vec![json!(["all"])]),
        WAIT,
    )
    .await
    .unwrap();
    for name in &results {
        assert!(
            all.result.get(name).is_some(),
            "docs/mi.md shows {name}, which get_statistics does not have"
        );
    }
    // And the other way round: every statistic heptap has is documented by its name.
    let docs: String = ["mi.md", "senders.md", "taps.md", "metrics.md"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(format!("{}/../docs/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap()
        })
        .collect();
    for key in all.result.as_object().unwrap().keys() {
        let (group, name) = key.split_once(':').unwrap();
        let documented = if group == "mi" {
            docs.contains("`requests_<transport>_<result>`")
        } else {
            docs.contains(&format!("`{name}`"))
        };
        assert!(documented, "{key} is not documented in docs/");
    }
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_metrics_address_another_program_holds_fails_the_start_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let up = SipUpstream::bind().await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let mut config = config(up.addr, col.addr, &dir);
    config.mi.metrics_listen = Some(addr);
    let Err(err) = heptap::start(config, heptap::LogHandle::detached()).await else {
        panic!("heptap started on an address another program holds");
    };
    let text = err.to_string();
    assert!(
        text.contains("mi.metrics_listen") && text.contains(&addr.to_string()),
        "{text}"
    );
}
