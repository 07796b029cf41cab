//! The MI of a running heptap, driven by the clients operators use: opensips-cli (PyPI
//! `opensipscli`) over the FIFO and over HTTP, and heptap's own `heptap fifo` / `heptap mi`.
//! Switching really switches what is traced; MI commands are traced themselves; a reload with
//! a broken config is refused and the old config keeps running.
//!
//! Needs `opensips-cli` on PATH or in `OPENSIPS_CLI` (.ci/run installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::SocketAddr;
use std::path::Path;

use heptap::LogHandle;
use heptap::{Running, Stop, start_with_source};
use heptap_config::{Config, Source};
use heptap_hep::Packet;
use heptap_tests::collector::{Scratch, UdpCollector, WAIT, correlation, event_of, payload_json};
use heptap_tests::heptap_bin;
use heptap_tests::mi_cli::opensips_cli as cli;
use heptap_tests::sip::{SipUpstream, options, read_message};
use heptap_tests::taps::run_toml;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn toml(upstream: SocketAddr, collector: SocketAddr, dir: &Scratch, extra: &str) -> String {
    format!(
        r#"
[hep]
# The tests read the MI and SIP traces' parts by name (heptap's default is homer5).
homer5_on = false

[hep.ids]
col = "[col] {collector}; transport=udp"

[tracer]
trace_id = ["[tid2]uri=hep:col"]

[[listener]]
proto = "tcp"
listen = "127.0.0.1:0"
upstream = "{upstream}"
sip_trace_id = "tid2"

[net.tcp]
trace_on = true
trace_destination = "col"

{mi}
{extra}
"#,
        mi = dir.mi_toml(true)
    )
}

fn is_sip(p: &Packet) -> bool {
    p.proto_type == Some(1)
}

/// Whether trace id `name` is on, read through the MI's Control (as `sip_trace` shows it).
fn trace_id_on(h: &Running, name: &str) -> bool {
    h.control()
        .trace_ids()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no trace id {name}"))
        .on
}

/// Sends an OPTIONS through heptap and waits for the 200.
async fn ping(client: &mut TcpStream) {
    client.write_all(&options()).await.unwrap();
    read_message(client).await.expect("200 to OPTIONS");
}

#[tokio::test]
async fn opensips_cli_sip_trace_tid2_off_stops_sip_packets_and_on_restarts_them() {
    let up = SipUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let h = run_toml(&toml(up.addr, col.addr, &dir, "")).await;
    let mut client = TcpStream::connect(h.listen_addrs()[0]).await.unwrap();
    ping(&mut client).await;
    col.until(WAIT, |g| g.iter().filter(|p| is_sip(p)).count() >= 2)
        .await;

    let (code, out) = cli(&h, &dir, "fifo", &["mi", "sip_trace", "tid2", "off"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(!trace_id_on(&h, "tid2"));
    ping(&mut client).await;
    // Status over HTTP shows it off; then on again over HTTP.
    let (code, out) = cli(&h, &dir, "http", &["mi", "sip_trace"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("\"state\": \"off\"") || out.contains("\"state\":\"off\""),
        "{out}"
    );
    let (code, out) = cli(&h, &dir, "http", &["mi", "sip_trace", "tid2", "on"]).await;
    assert_eq!(code, 0, "{out}");
    client.write_all(b"INVITE sip:x SIP/2.0\r\nCall-ID: after-on\r\nCSeq: 9 INVITE\r\nContent-Length: 0\r\n\r\n").await.unwrap();
    read_message(&mut client).await.unwrap();
    // The next SIP packet is the INVITE: the OPTIONS and its 200 sent while off left none.
    let got = col.until(WAIT, |g| g.iter().any(is_sip)).await;
    let first = got.iter().find(|p| is_sip(p)).unwrap();
    assert_eq!(correlation(first), "after-on");
    // An unknown trace id is an error, and opensips-cli exits 255.
    let (code, out) = cli(&h, &dir, "fifo", &["mi", "sip_trace", "nope", "off"]).await;
    assert_eq!(code, 255, "{out}");
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn opensips_cli_which_ps_get_statistics_and_tcp_trace_work_against_heptap() {
    let up = SipUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let h = run_toml(&toml(up.addr, col.addr, &dir, "")).await;
    let mut client = TcpStream::connect(h.listen_addrs()[0]).await.unwrap();
    ping(&mut client).await;
    col.until(WAIT, |g| g.iter().filter(|p| is_sip(p)).count() >= 2)
        .await;

    let (code, out) = cli(&h, &dir, "http", &["mi", "which"]).await;
    assert_eq!(code, 0, "{out}");
    for cmd in [
        "sip_trace",
        "trace",
        "tcp_trace",
        "get_statistics",
        "hep_ids",
        "reload",
    ] {
        assert!(
            out.contains(&format!("\"{cmd}\"")),
            "which lists {cmd}: {out}"
        );
    }
    let (code, out) = cli(&h, &dir, "fifo", &["mi", "ps"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&std::process::id().to_string()), "{out}");
    assert!(out.contains("\"relay worker 0\""), "{out}");
    let (code, out) = cli(
        &h,
        &dir,
        "http",
        &["mi", "get_statistics", "listener_0:", "hep_col:"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    assert_eq!(v["listener_0:accepted"], 1, "{v}");
    assert_eq!(v["listener_0:sip_traced"], 2, "{v}");
    assert!(v["hep_col:sent"].as_u64().unwrap() >= 4, "{v}");

    // tcp_trace off: the next connection leaves no event; on: the one after does.
    let (code, out) = cli(&h, &dir, "fifo", &["mi", "tcp_trace", "off"]).await;
    assert_eq!(code, 0, "{out}");
    let mut silent = TcpStream::connect(h.listen_addrs()[0]).await.unwrap();
    // A SIP exchange through it: its ACCEPTED (not traced) is decided before tracing is back on.
    silent.write_all(&options()).await.unwrap();
    read_message(&mut silent).await.unwrap();
    let (code, out) = cli(&h, &dir, "fifo", &["mi", "tcp_trace", "trace_mode=on"]).await;
    assert_eq!(code, 0, "{out}");
    let traced = TcpStream::connect(h.listen_addrs()[0]).await.unwrap();
    // Waits for the traced connection's ACCEPTED and for the silent one's SIP request (traced:
    // sip_trace is on). An ACCEPTED of the silent connection would have been queued before its
    // SIP on the same lane, so it would be among what arrived by then.
    let (traced_addr, silent_addr) = (traced.local_addr().unwrap(), silent.local_addr().unwrap());
    let accepted_from = |p: &Packet, addr| event_of(p) == "ACCEPTED" && p.src() == Some(addr);
    let got = col
        .until(WAIT, |g| {
            g.iter().any(|p| accepted_from(p, traced_addr))
                && g.iter().any(|p| is_sip(p) && p.src() == Some(silent_addr))
        })
        .await;
    assert!(
        !got.iter().any(|p| accepted_from(p, silent_addr)),
        "the connection made with tcp_trace off was traced"
    );
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn mi_requests_and_replies_are_traced_as_proto_87_with_a_shared_micorr_id() {
    let up = SipUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let h = run_toml(&toml(
        up.addr,
        col.addr,
        &dir,
        "trace_destination = \"col\"\ntrace_bwlist = \"b: ps\"\n",
    ))
    .await;
    let (code, out) = cli(&h, &dir, "http", &["mi", "ps"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(&h, &dir, "fifo", &["mi", "sip_trace", "tid2", "off"]).await;
    assert_eq!(code, 0, "{out}");
    let got = col
        .until(WAIT, |g| {
            g.iter().any(|p| {
                p.proto_type == Some(87)
                    && payload_json(p)["reply"]
                        .as_str()
                        .is_some_and(|r| r.contains("\"result\":\"OK\""))
            })
        })
        .await;
    let mi: Vec<&Packet> = got.iter().filter(|p| p.proto_type == Some(87)).collect();
    // opensips-cli asks `which` first (traced), ps is black-listed, sip_trace is traced.
    let req = mi
        .iter()
        .find(|p| payload_json(p)["command"] == "sip_trace")
        .expect("the sip_trace request is traced");
    assert_eq!(payload_json(req)["backend"], "fifo");
    assert_eq!(payload_json(req)["parameters"], "tid2,off");
    let id = correlation(req);
    assert!(id.starts_with("MICORR") && id.len() == 34, "{id}");
    let reply = mi
        .iter()
        .find(|p| correlation(p) == id && payload_json(p).get("reply").is_some())
        .expect("the reply shares the id");
    assert!(
        payload_json(reply)["reply"]
            .as_str()
            .unwrap()
            .contains("\"result\":\"OK\"")
    );
    assert!(
        mi.iter().all(|p| payload_json(p)["command"] != "ps"),
        "ps is black-listed"
    );
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn mi_reload_with_a_broken_config_is_refused_and_the_old_config_keeps_running() {
    let up = SipUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let file = dir.path().join("heptap.toml");
    let good = toml(up.addr, col.addr, &dir, "");
    std::fs::write(&file, &good).unwrap();
    let source = Source {
        file: Some(file.clone()),
        env: Vec::new(),
    };
    let config = Config::load(&source).unwrap();
    let h = start_with_source(config, LogHandle::detached(), Some(source))
        .await
        .unwrap();
    std::fs::write(&file, good.replace("transport=udp", "transport=sctp")).unwrap();
    let (code, out) = cli(&h, &dir, "http", &["mi", "reload"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("sctp"), "the error says why: {out}");
    let mut client = TcpStream::connect(h.listen_addrs()[0]).await.unwrap();
    ping(&mut client).await;
    col.until(WAIT, |g| g.iter().any(is_sip)).await;
    // A good file reloads.
    std::fs::write(&file, &good).unwrap();
    let (code, out) = cli(&h, &dir, "fifo", &["mi", "reload"]).await;
    assert_eq!(code, 0, "{out}");
    h.shutdown(Stop::Immediate).await;
}

fn heptap(args: &[&str], extra: &[&Path]) -> std::process::Output {
    let mut cmd = std::process::Command::new(heptap_bin());
    cmd.args(args);
    for p in extra {
        cmd.arg(p);
    }
    cmd.output().unwrap()
}

#[tokio::test]
async fn heptap_fifo_and_heptap_mi_print_replies_and_exit_nonzero_on_errors() {
    let up = SipUpstream::bind().await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let h = run_toml(&toml(up.addr, col.addr, &dir, "")).await;
    let fifo = h.mi_fifo().unwrap().clone();
    let url = format!("http://{}/mi", h.mi_http_addr().unwrap());
    let fifo_args = |cmd: &'static [&'static str]| {
        let mut v = vec![
            "fifo".to_owned(),
            "--fifo".to_owned(),
            fifo.display().to_string(),
            "--reply-dir".to_owned(),
            dir.path().display().to_string(),
        ];
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    };
    let out = tokio::task::spawn_blocking({
        let a = fifo_args(&["sip_trace"]);
        move || heptap(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("200 OK"), "{text}");
    assert!(text.contains("global:: on"), "{text}");
    assert!(text.contains("tid2::  type=HEP uri="), "{text}");

    let url2 = url.clone();
    let out =
        tokio::task::spawn_blocking(move || heptap(&["mi", "--url", &url2, "tcp_trace"], &[]))
            .await
            .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"TCP tracing": "on"}));

    let out =
        tokio::task::spawn_blocking(move || heptap(&["mi", "--url", &url, "no_such_command"], &[]))
            .await
            .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-32601"));

    let out = tokio::task::spawn_blocking(|| {
        heptap(
            &[
                "mi",
                "--url",
                "http://127.0.0.1:1/mi",
                "--timeout",
                "2",
                "ps",
            ],
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "unreachable is exit 2");
    h.shutdown(Stop::Immediate).await;
}
