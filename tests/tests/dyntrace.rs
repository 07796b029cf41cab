//! Dynamic tracing driven by opensips-cli, as an orchestrator would: `trace_start` a trace of one
//! caller among several to a new HEP destination, see only that caller's dialogs reach it,
//! `trace` list it as dynamic with its filter, keep it across a reload, `trace_stop` it; and the
//! errors a bad `trace_start` gets.
//!
//! Needs `opensips-cli` on PATH or in `OPENSIPS_CLI` (.ci/run installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::SocketAddr;
use std::time::Duration;

use heptap::{Running, Stop};
use heptap_hep::Packet;
use heptap_tests::collector::{Scratch, UdpCollector, WAIT, correlation};
use heptap_tests::mi_cli::opensips_cli as cli;
use heptap_tests::sip::{MirrorUpstream, is_sip, play_call};
use heptap_tests::taps::run_toml;
use tokio::net::TcpStream;

fn toml(upstream: SocketAddr, collector: SocketAddr, dir: &Scratch) -> String {
    format!(
        r#"
[hep.ids]
col = "[col] {collector}; transport=udp"

[tracer]
trace_id = ["[tid2]uri=hep:col"]

[[listener]]
proto = "tcp"
listen = "127.0.0.1:0"
upstream = "{upstream}"
sip_trace_id = "tid2"

{mi}
"#,
        mi = dir.mi_toml(true)
    )
}

fn call_ids(packets: &[Packet]) -> Vec<String> {
    packets
        .iter()
        .filter(|p| is_sip(p))
        .map(correlation)
        .collect()
}

/// Plays a call of `user` on its own connection and waits until the configured trace id's
/// collector has its seven messages (so heptap has decided about each of them).
async fn call(h: &Running, col: &mut UdpCollector, user: &str, call_id: &str) {
    let mut client = TcpStream::connect(h.listen_addrs()[0]).await.unwrap();
    play_call(&mut client, user, call_id).await;
    col.until(WAIT, |g| {
        g.iter()
            .filter(|p| is_sip(p) && correlation(p) == call_id)
            .count()
            >= 7
    })
    .await;
}

#[tokio::test]
async fn a_dynamic_trace_of_one_caller_reaches_only_its_destination_and_stops() {
    let up = MirrorUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let mut dynamic = UdpCollector::bind().await;
    let dir = Scratch::new();
    let h = run_toml(&toml(up.addr, col.addr, &dir)).await;

    let uri = format!("uri=hep:{}; transport=udp", dynamic.addr);
    let (code, out) = cli(
        &h,
        &dir,
        "fifo",
        &["mi", "trace_start", "id=alice", &uri, "filter=caller=alice"],
    )
    .await;
    assert_eq!(code, 0, "{out}");

    call(&h, &mut col, "carol", "carol-1").await;
    call(&h, &mut col, "alice", "alice-1").await;
    call(&h, &mut col, "bob", "bob-1").await;
    // Alice's whole dialog, both ways: INVITE, 100, 180, 200, ACK, BYE, 200.
    let got = dynamic
        .until(WAIT, |g| g.iter().filter(|p| is_sip(p)).count() >= 7)
        .await;
    let quiet = dynamic.drain(Duration::from_millis(300)).await;
    let all: Vec<String> = call_ids(&got).into_iter().chain(call_ids(&quiet)).collect();
    assert_eq!(all, vec!["alice-1".to_owned(); 7], "only alice's dialog");

    // `trace` lists it as dynamic, with its filter, over HTTP.
    let (code, out) = cli(&h, &dir, "http", &["mi", "trace"]).await;
    assert_eq!(code, 0, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = listed["trace destinations"].as_array().unwrap();
    let row = rows.iter().find(|r| r["name"] == "alice").unwrap();
    assert_eq!(row["state"], "dynamic");
    assert_eq!(row["type"], "HEP");
    assert_eq!(row["uri"], dynamic.addr.to_string());
    assert_eq!(row["filters"], serde_json::json!([{"caller": "alice"}]));
    // The destination it started is in `hep_ids`, with its counters.
    let hep_ids = h.control().hep_ids();
    let started = hep_ids["hep_ids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "alice")
        .unwrap_or_else(|| panic!("{hep_ids}"));
    assert_eq!(started["uri"], dynamic.addr.to_string());
    assert_eq!(started["enqueued"], 7);

    // A reload keeps it (OpenSIPS keeps dynamic traces until they are stopped).
    let (code, out) = cli(&h, &dir, "http", &["mi", "reload"]).await;
    assert_eq!(code, 0, "{out}");
    call(&h, &mut col, "alice", "alice-2").await;
    dynamic
        .until(WAIT, |g| {
            g.iter()
                .filter(|p| is_sip(p) && correlation(p) == "alice-2")
                .count()
                >= 7
        })
        .await;

    let (code, out) = cli(&h, &dir, "http", &["mi", "tracer:stop", "id=alice"]).await;
    assert_eq!(code, 0, "{out}");
    call(&h, &mut col, "alice", "alice-3").await;
    let after = dynamic.drain(Duration::from_millis(300)).await;
    assert!(
        call_ids(&after).is_empty(),
        "stopped: {:?}",
        call_ids(&after)
    );
    assert!(h.control().dynamic_traces().is_empty());
    let hep_ids = h.control().hep_ids().to_string();
    assert!(!hep_ids.contains("\"alice\""), "{hep_ids}");
    // Stopping it again: OpenSIPS's 400.
    let (code, out) = cli(&h, &dir, "fifo", &["mi", "trace_stop", "id=alice"]).await;
    assert_eq!(code, 255, "{out}");
    assert!(out.contains("Bad parameter value"), "{out}");
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_message_scope_trace_by_client_address_to_an_existing_hep_id() {
    let up = MirrorUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let h = run_toml(&toml(up.addr, col.addr, &dir)).await;
    // To the configured `col`, by name: every message of clients from 127.0.0.1 is traced a
    // second time there.
    let (code, out) = cli(
        &h,
        &dir,
        "http",
        &[
            "mi",
            "trace_start",
            "id=local",
            "uri=hep:col",
            "filter=ip=127.0.0.1",
            "scope=m",
            "type=sip",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let mut client = TcpStream::connect(h.listen_addrs()[0]).await.unwrap();
    play_call(&mut client, "dave", "dave-1").await;
    col.until(WAIT, |g| {
        g.iter()
            .filter(|p| is_sip(p) && correlation(p) == "dave-1")
            .count()
            >= 14
    })
    .await;
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn bad_trace_start_parameters_get_clear_mi_errors() {
    let up = MirrorUpstream::bind().await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let h = run_toml(&toml(up.addr, col.addr, &dir)).await;
    let start = |args: &'static [&'static str]| {
        let mut all = vec!["mi", "trace_start"];
        all.extend_from_slice(args);
        all
    };
    for (args, expect) in [
        (start(&["id=tid2", "uri=hep:col"]), "trace id already used"),
        (
            start(&["id=x", "uri=sip:10.0.0.1"]),
            "heptap traces to HEP only",
        ),
        (
            start(&["id=x", "uri=hep:127.0.0.1:9; transport=sctp"]),
            "error while allocating new hep_id",
        ),
        (
            start(&["id=x", "uri=hep:col", "filter=user=alice"]),
            "unknown filter 'user'",
        ),
        (
            start(&["id=x", "uri=hep:col", "filter=ip=999.1.1.1"]),
            "invalid IP in filter",
        ),
        (
            start(&[
                "id=x",
                "uri=hep:col",
                "filter=caller=a",
                "scope=t",
                "type=sip",
            ]),
            "invalid trace scope 't'",
        ),
        (
            start(&[
                "id=x",
                "uri=hep:col",
                "filter=caller=a",
                "scope=d",
                "type=xlog",
            ]),
            "heptap traces SIP only",
        ),
        (start(&["id=../x", "uri=hep:col"]), "bad trace id"),
        // No recipe of one parameter: OpenSIPS's get_cmd_recipe says "Too few or too many".
        (start(&["id=x"]), "Too few or too many parameters"),
    ] {
        let (code, out) = cli(&h, &dir, "http", &args).await;
        assert_eq!(code, 255, "{args:?}: {out}");
        assert!(
            out.contains(expect),
            "{args:?}: expected {expect:?} in {out}"
        );
    }
    let (code, out) = cli(&h, &dir, "http", &start(&["id=x", "uri=hep:col"])).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(&h, &dir, "http", &start(&["id=x", "uri=hep:col"])).await;
    assert_eq!(code, 255, "{out}");
    assert!(out.contains("dynamic trace id already used"), "{out}");
    h.shutdown(Stop::Immediate).await;
}
