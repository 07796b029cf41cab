//! `heptap mi` / `heptap fifo` as an operator runs them (the real binary), against heptap's MI
//! in-process and against a stand-in for OpenSIPS's mi_http: they check that the server is
//! heptap before sending anything, find heptap's MI and token in the config, and stop quietly
//! when their reader goes away (`| head -1`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heptap::{LogHandle, Running, Stop, start};
use heptap_config::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Longest a client run may take before the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(30);
const TOKEN: &str = "5f2b8c0e9d4a4b7e8a1c3d6f0e2b4a69";

/// Runs `heptap <args>` with `env` added; stdout goes to `stdout` (piped when `None`).
async fn heptap(args: &[&str], env: &[(&str, &Path)], stdout: Option<Stdio>) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_heptap"));
    cmd.args(args)
        .env_remove("HEPTAP_CONFIG")
        .stdin(Stdio::null())
        .stdout(stdout.unwrap_or_else(Stdio::piped))
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // spawn, not output(): output() would pipe stdout whatever was asked.
    let child = cmd.spawn().unwrap();
    tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("heptap finished within the deadline")
        .unwrap()
}

/// `heptap fifo --fifo <fifo> --reply-dir <reply_dir> <args>`.
async fn heptap_fifo(fifo: &str, reply_dir: &Path, args: &[&str]) -> Output {
    let reply_dir = reply_dir.display().to_string();
    let mut all = vec!["fifo", "--fifo", fifo, "--reply-dir", &reply_dir];
    all.extend_from_slice(args);
    heptap(&all, &[], None).await
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// heptap in-process with its MI in `dir` (FIFO and HTTP on 127.0.0.1:0), plus `mi_extra`.
async fn heptap_mi(dir: &Path, mi_extra: &str) -> Running {
    let text = format!(
        "[mi]\nfifo_name = \"{0}/fifo\"\nreply_dir = \"{0}\"\nhttp_listen = \"127.0.0.1:0\"\n{mi_extra}",
        dir.display()
    );
    let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    start(config, LogHandle::detached())
        .await
        .expect("heptap starts")
}

fn token_file(dir: &Path) -> PathBuf {
    let file = dir.join("mi-token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    file
}

/// A stand-in for OpenSIPS's mi_http: answers `version` as OpenSIPS 3.4 does and everything
/// else with "OK", and notes every method it was sent.
struct FakeOpensips {
    addr: SocketAddr,
    methods: Arc<Mutex<Vec<String>>>,
}

impl FakeOpensips {
    async fn start() -> FakeOpensips {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let methods = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&methods);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let Some(body) = read_request(&mut s).await else {
                        return;
                    };
                    let request: Value = serde_json::from_slice(&body).unwrap();
                    let method = request["method"].as_str().unwrap().to_owned();
                    seen.lock().unwrap().push(method.clone());
                    let result = if method == "version" {
                        serde_json::json!({"Server": "OpenSIPS (3.4.2 (x86_64/linux))"})
                    } else {
                        serde_json::json!("OK")
                    };
                    let reply = serde_json::json!({"jsonrpc": "2.0", "result": result, "id": request["id"]})
                        .to_string();
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                                reply.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                });
            }
        });
        FakeOpensips { addr, methods }
    }

    fn url(&self) -> String {
        format!("http://{}/mi", self.addr)
    }

    fn methods(&self) -> Vec<String> {
        self.methods.lock().unwrap().clone()
    }
}

/// The body of one HTTP/1.1 request with a Content-Length.
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return Some(got[end + 4..end + 4 + length].to_vec());
            }
        }
    }
}

#[tokio::test]
async fn heptap_mi_sends_nothing_to_a_server_that_is_not_heptap() {
    let opensips = FakeOpensips::start().await;
    let url = opensips.url();
    let out = heptap(&["mi", "--url", &url, "tcp_trace", "off"], &[], None).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{url} is not heptap's MI"))
            && err.contains("OpenSIPS (3.4.2 (x86_64/linux))")
            && err.contains("--any-server"),
        "{err}"
    );
    assert_eq!(opensips.methods(), ["version"], "tcp_trace never went out");
    // On purpose: --any-server talks to whatever answers.
    let out = heptap(
        &["mi", "--url", &url, "--any-server", "tcp_trace", "off"],
        &[],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(opensips.methods(), ["version", "tcp_trace"]);
}

#[tokio::test]
async fn heptap_mi_finds_heptap_and_its_token_in_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let h = heptap_mi(
        dir.path(),
        &format!("http_token_file = \"{}\"\n", token.display()),
    )
    .await;
    let addr = h.mi_http_addr().unwrap();
    // The config an operator's client reads (as /etc/heptap/heptap.toml would be; HEPTAP_CONFIG
    // names it instead of -c).
    let config = dir.path().join("heptap.toml");
    std::fs::write(
        &config,
        format!(
            "[mi]\nhttp_listen = \"{addr}\"\nhttp_token_file = \"{}\"\n",
            token.display()
        ),
    )
    .unwrap();
    let env = [("HEPTAP_CONFIG", config.as_path())];
    let out = heptap(&["mi", "tcp_trace", "off"], &env, None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\"OK\"\n");
    let out = heptap(&["mi", "tcp_trace"], &env, None).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"TCP tracing": "off"}));
    // A --url gets no token from the config: refused, and the reason is shown.
    let url = format!("http://{addr}/mi");
    let out = heptap(&["mi", "--url", &url, "ps"], &env, None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("HTTP status 401")
            && stderr(&out).contains("a bearer token is required"),
        "{}",
        stderr(&out)
    );
    let token = token.display().to_string();
    let out = heptap(
        &["mi", "--url", &url, "--token-file", &token, "ps"],
        &[],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_reader_that_goes_away_ends_the_clients_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let h = heptap_mi(dir.path(), "").await;
    let url = format!("http://{}/mi", h.mi_http_addr().unwrap());
    let fifo = h.mi_fifo().unwrap().display().to_string();
    let reply_dir = dir.path().display().to_string();
    for args in [
        vec!["mi", "--url", &url, "which"],
        vec!["fifo", "--fifo", &fifo, "--reply-dir", &reply_dir, "which"],
    ] {
        // `| head -1` that has already exited: the pipe's reader is gone.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = heptap(&args, &[], Some(Stdio::from(writer))).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
    h.shutdown(Stop::Immediate).await;
}

/// A stand-in for an OpenSIPS 2.x mi_fifo at `dir/opensips_fifo`: answers `version` with
/// OpenSIPS's server line and anything else with `200 OK`, noting every command.
async fn fake_opensips_fifo(dir: &Path) -> (PathBuf, Arc<Mutex<Vec<String>>>) {
    let fifo = dir.join("opensips_fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Read-write, as mi_fifo does: writers closing it never end the stream.
    let mut rx = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&fifo)
        .unwrap();
    let commands = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&commands);
    let reply_dir = dir.to_owned();
    tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = rx.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
            while let Some(end) = got.windows(2).position(|w| w == b"\n\n") {
                let request = String::from_utf8_lossy(&got[..end]).into_owned();
                got.drain(..end + 2);
                // `:command:reply_fifo`
                let mut head = request.lines().next().unwrap_or("").split(':').skip(1);
                let (command, reply) = (head.next().unwrap_or(""), head.next().unwrap_or(""));
                seen.lock().unwrap().push(command.to_owned());
                let text = if command == "version" {
                    "200 OK\nServer:: OpenSIPS (2.4.9 (x86_64/linux))\n\n"
                } else {
                    "200 OK\n\n"
                };
                let mut tx = tokio::net::unix::pipe::OpenOptions::new()
                    .open_sender(reply_dir.join(reply))
                    .unwrap();
                tx.write_all(text.as_bytes()).await.unwrap();
            }
        }
    });
    (fifo, commands)
}

#[tokio::test]
async fn heptap_fifo_sends_nothing_to_a_fifo_that_is_not_heptaps() {
    let dir = tempfile::tempdir().unwrap();
    let (fifo, commands) = fake_opensips_fifo(dir.path()).await;
    let fifo = fifo.display().to_string();
    let out = heptap_fifo(&fifo, dir.path(), &["tcp_trace", "off"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{fifo} is not heptap's MI"))
            && stderr(&out).contains("OpenSIPS (2.4.9 (x86_64/linux))"),
        "{}",
        stderr(&out)
    );
    assert_eq!(*commands.lock().unwrap(), ["version"]);
    let out = heptap_fifo(&fifo, dir.path(), &["--any-server", "tcp_trace", "off"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(*commands.lock().unwrap(), ["version", "tcp_trace"]);
}

#[tokio::test]
async fn heptap_fifo_talks_to_heptap_and_fails_on_a_dead_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let h = heptap_mi(dir.path(), "").await;
    let fifo = h.mi_fifo().unwrap().display().to_string();
    let out = heptap_fifo(&fifo, dir.path(), &["tcp_trace", "off"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("200 OK"));
    // A FIFO nobody serves: the check fails the way the command would, with nothing sent.
    let out = heptap_fifo(&format!("{fifo}-none"), dir.path(), &["ps"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no MI server at"), "{}", stderr(&out));
    h.shutdown(Stop::Immediate).await;
}
