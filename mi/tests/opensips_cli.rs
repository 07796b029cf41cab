//! The real `opensips-cli` (PyPI package `opensipscli`) against heptap's MI, over the FIFO and
//! over HTTP, as an operator would use it.
//!
//! Needs `opensips-cli` on PATH (or its path in `OPENSIPS_CLI`): `pip install opensipscli`.
//! Without it they fail, saying so; `cargo test -- --skip opensips_cli` leaves them out, and
//! cargo counts them as filtered out, not passed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use heptap_testkit::opensips_cli;
use serde_json::{Value, json};

/// What one opensips-cli run printed and returned.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// Which MI transport opensips-cli is configured for.
enum Via {
    Fifo,
    Http,
}

fn write_config(h: &Harness, via: &Via) -> PathBuf {
    let comm = match via {
        Via::Fifo => format!(
            "communication_type: fifo\nfifo_file: {0}\nfifo_file_fallback: {0}\nfifo_reply_dir: {1}\n",
            h.fifo.display(),
            h.reply_dir.display()
        ),
        Via::Http => format!("communication_type: http\nurl: {}\n", h.url),
    };
    let path = h.dir.path().join(match via {
        Via::Fifo => "cli-fifo.cfg",
        Via::Http => "cli-http.cfg",
    });
    std::fs::write(
        &path,
        format!("[default]\nlog_level: WARNING\noutput_type: pretty-print\n{comm}"),
    )
    .unwrap();
    path
}

async fn run(cli: &Path, h: &Harness, via: &Via, args: &[&str]) -> Run {
    let cfg = write_config(h, via);
    let child = tokio::process::Command::new(cli)
        .arg("-f")
        .arg(&cfg)
        .arg("-x")
        .args(args)
        // opensips-cli reads ~/.opensips-cli.cfg and keeps a history file in HOME.
        .env("HOME", h.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("opensips-cli finished within the deadline")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn sip_trace_off_and_on(via: Via) {
    let cli = opensips_cli();
    let h = Harness::start().await;
    let r = run(&cli, &h, &via, &["mi", "sip_trace", "tid2", "off"]).await;
    assert_eq!(r.json(), json!("OK"));
    assert!(!h.control.trace_id_on("tid2"));
    assert!(h.control.trace_id_on("tid"));
    let status = run(&cli, &h, &via, &["mi", "sip_trace", "tid2"])
        .await
        .json();
    assert_eq!(status["trace destinations"][0]["state"], "off");
    assert_eq!(
        run(&cli, &h, &via, &["mi", "sip_trace", "tid2", "on"])
            .await
            .json(),
        json!("OK")
    );
    assert!(h.control.trace_id_on("tid2"));
    assert_eq!(
        run(&cli, &h, &via, &["mi", "trace", "id=tid", "mode=off"])
            .await
            .json(),
        json!("OK")
    );
    assert!(!h.control.trace_id_on("tid"));
    assert_eq!(
        run(&cli, &h, &via, &["mi", "tcp_trace", "off"])
            .await
            .json(),
        json!("OK")
    );
    assert!(!h.control.net_on(heptap_hep::NetProto::Tcp));
}

async fn which_ps_get_statistics(via: Via) {
    let cli = opensips_cli();
    let h = Harness::start().await;
    let which = run(&cli, &h, &via, &["mi", "which"]).await.json();
    assert!(
        which.as_array().unwrap().contains(&json!("sip_trace")),
        "{which}"
    );
    let ps = run(&cli, &h, &via, &["mi", "ps"]).await.json();
    assert_eq!(ps["Processes"][0]["Type"], "main");
    assert_eq!(
        run(&cli, &h, &via, &["mi", "get_statistics", "all"])
            .await
            .json(),
        json!({"core:events": 12, "core:connections": 3, "homer:sent": 40, "homer:dropped_queue_full": 2})
    );
    assert_eq!(
        run(
            &cli,
            &h,
            &via,
            &["mi", "get_statistics", "homer:", "core:events"]
        )
        .await
        .json(),
        json!({"core:events": 12, "homer:sent": 40, "homer:dropped_queue_full": 2})
    );
}

async fn errors_exit_255(via: Via) {
    let cli = opensips_cli();
    let h = Harness::start().await;
    let r = run(&cli, &h, &via, &["mi", "sip_trace", "nope", "off"]).await;
    assert_eq!(r.code, 255, "stdout: {} stderr: {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("400: Bad parameter value"),
        "{}",
        r.stderr
    );
    let r = run(&cli, &h, &via, &["mi", "tcp_trace", "maybe"]).await;
    assert_eq!(r.code, 255);
    assert!(
        r.stderr
            .contains("-32602: Invalid params (trace_mode should be 'on' or 'off')"),
        "{}",
        r.stderr
    );
    // `ps` with a named parameter: OpenSIPS's "Too few or too many parameters".
    let r = run(&cli, &h, &via, &["mi", "ps", "x=1"]).await;
    assert_eq!(r.code, 255);
    assert!(
        r.stderr
            .contains("-32602: Invalid params (Too few or too many parameters)"),
        "{}",
        r.stderr
    );
    // opensips-cli itself refuses what `which` does not list.
    let r = run(&cli, &h, &via, &["mi", "dlg_list"]).await;
    assert_ne!(r.code, 0);
}

#[tokio::test]
async fn opensips_cli_over_fifo_switches_a_trace_id_off_and_on() {
    sip_trace_off_and_on(Via::Fifo).await;
}

#[tokio::test]
async fn opensips_cli_over_http_switches_a_trace_id_off_and_on() {
    sip_trace_off_and_on(Via::Http).await;
}

#[tokio::test]
async fn opensips_cli_over_fifo_which_ps_get_statistics() {
    which_ps_get_statistics(Via::Fifo).await;
}

#[tokio::test]
async fn opensips_cli_over_http_which_ps_get_statistics() {
    which_ps_get_statistics(Via::Http).await;
}

#[tokio::test]
async fn opensips_cli_over_fifo_exits_255_on_errors() {
    errors_exit_255(Via::Fifo).await;
}

#[tokio::test]
async fn opensips_cli_over_http_exits_255_on_errors() {
    errors_exit_255(Via::Http).await;
}
