//! opensips-cli, the MI client operators use (PyPI `opensipscli`), driving a heptap that runs
//! in-process: over its FIFO or its HTTP MI.

use std::time::Duration;

use heptap::Running;
use heptap_testkit::opensips_cli as locate;

use crate::collector::Scratch;

/// Runs `opensips-cli -x <args>` with a config for `via` ("fifo" or "http"); returns the exit
/// code and what it printed (stdout, then stderr, where it logs errors).
pub async fn opensips_cli(h: &Running, dir: &Scratch, via: &str, args: &[&str]) -> (i32, String) {
    let comm = match via {
        "fifo" => format!(
            "communication_type: fifo\nfifo_file: {0}\nfifo_file_fallback: {0}\nfifo_reply_dir: {1}\n",
            h.mi_fifo().unwrap().display(),
            dir.path().display()
        ),
        _ => format!(
            "communication_type: http\nurl: http://{}/mi\n",
            h.mi_http_addr().unwrap()
        ),
    };
    let cfg = dir.path().join(format!("cli-{via}.cfg"));
    std::fs::write(
        &cfg,
        format!("[default]\nlog_level: WARNING\noutput_type: pretty-print\n{comm}"),
    )
    .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(locate())
            .arg("-f")
            .arg(&cfg)
            .arg("-x")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("opensips-cli finishes")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}
