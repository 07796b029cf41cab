//! `heptap serve` as a child process for async tests: its log lines as they come (a new process
//! started by a hand-over writes to the same stderr, so its lines come here too), signals, and
//! its exit. Dropping it kills every heptap it knows of (the child, and the pids a test adds
//! with [`HeptapProcess::also_kill`]).

use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// How long a wait for a log line or an exit may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running `heptap serve`.
#[derive(Debug)]
pub struct HeptapProcess {
    /// The child's pid.
    pub pid: u32,
    /// stderr, line by line.
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far, for failure messages.
    pub seen: Vec<String>,
    /// The exit status, once the child exits.
    exit: Option<oneshot::Receiver<ExitStatus>>,
    /// Other heptap processes to kill at the end (the new process of a hand-over).
    others: Vec<u32>,
}

impl HeptapProcess {
    /// Starts `exe serve -c config` (`exe`: the heptap binary, or a link to it) with `env`.
    pub fn start(exe: &Path, config: &Path, env: &[(&str, &OsStr)]) -> Self {
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(["serve", "-c"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start heptap");
        let pid = child.id().expect("a pid");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = r.next_line().await {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let (exit_tx, exit) = oneshot::channel();
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let _ = exit_tx.send(status);
            }
        });
        Self {
            pid,
            lines,
            seen: Vec::new(),
            exit: Some(exit),
            others: Vec::new(),
        }
    }

    /// Reads the log until a line (of this process or of one it started) contains every one of
    /// `needles`; panics with the log after [`WAIT`].
    pub async fn wait_log(&mut self, needles: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) => {
                    self.seen.push(l.clone());
                    if needles.iter().all(|n| l.contains(n)) {
                        return l;
                    }
                }
                _ => panic!(
                    "no log line with {needles:?} within {WAIT:?}; the log:\n{}",
                    self.log()
                ),
            }
        }
    }

    /// Every line read so far, and those waiting, joined.
    pub fn log(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    /// Whether a line read so far contains `needle`.
    pub fn logged(&mut self, needle: &str) -> bool {
        self.log();
        self.seen.iter().any(|l| l.contains(needle))
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        signal_pid(self.pid, signal);
    }

    /// Kills `pid` too when this is dropped.
    pub fn also_kill(&mut self, pid: u32) {
        self.others.push(pid);
    }

    /// The child's exit status within `timeout`; panics with the log otherwise.
    pub async fn exit_within(&mut self, timeout: Duration) -> ExitStatus {
        let Some(mut exit) = self.exit.take() else {
            panic!("the exit was already taken");
        };
        match tokio::time::timeout(timeout, &mut exit).await {
            Ok(Ok(status)) => status,
            _ => {
                let pid = self.pid;
                panic!(
                    "heptap (pid {pid}) did not exit within {timeout:?}; the log:\n{}",
                    self.log()
                )
            }
        }
    }

    /// Whether the child has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        match self.exit.as_mut().map(oneshot::Receiver::try_recv) {
            None | Some(Ok(_)) => {
                self.exit = None;
                true
            }
            Some(Err(oneshot::error::TryRecvError::Empty)) => false,
            Some(Err(oneshot::error::TryRecvError::Closed)) => true,
        }
    }
}

impl Drop for HeptapProcess {
    fn drop(&mut self) {
        for pid in self.others.drain(..) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if !self.has_exited() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Sends `signal` to `pid`; panics when it cannot.
pub fn signal_pid(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
}

/// Whether process `pid` exists (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: Z is a zombie.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The value of `key=` in a log line (tracing's `key=value` fields).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    line[start..]
        .split_whitespace()
        .next()
        .map(|v| v.trim_matches('"'))
}
