//! Independent HEP implementations as test oracles, and `heptap hep-dump` as a child process.
//!
//! - [`HepjsDecoder`]: hep-js (sipcapture's Node.js HEP3 library) decoding what heptap sends, one
//!   JSON line per datagram (`tests/interop/hepjs-decode.js`).
//! - [`hepjs_encode`]: hep-js building the packets heptap must read (`tests/interop/hepjs-encode.js`).
//! - [`HepDump`]: the real `heptap hep-dump` binary on ports of its own choosing.
//!
//! The Node.js side is installed with `npm ci` in `tests/interop` (see [`interop_dir`]); when it is
//! missing the tests fail with that instruction rather than being skipped, so CI cannot pass
//! without the oracle. Every child process is killed when its handle is dropped, and every wait is
//! bounded by a timeout (lines are read on a thread and handed over through a channel).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How long a child process gets to say it is listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `tests/interop`: the Node.js package (hep-js pinned in package-lock.json) and its scripts.
pub fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Panics with the install instructions unless `node` runs and hep-js is installed.
pub fn require_hepjs() {
    let hepjs = interop_dir().join("node_modules/hep-js/package.json");
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        node_ok && hepjs.is_file(),
        "the hep-js oracle is not installed: install Node.js (apt-get install nodejs npm) and run \
         `npm ci` in {} (node found: {node_ok}, {} present: {})",
        interop_dir().display(),
        hepjs.display(),
        hepjs.is_file()
    );
}

/// A child process that is killed (and reaped) when dropped.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines a child writes to one of its pipes, read on a thread so that waits can time out.
#[derive(Debug)]
pub struct Lines {
    /// Lines in the order they were written, without their line ends.
    rx: Receiver<String>,
    /// Every line received so far, for failure messages.
    seen: Vec<String>,
}

impl Lines {
    /// Starts reading `pipe` (a child's stdout or stderr) line by line.
    pub fn spawn(pipe: impl Read + Send + 'static) -> Self {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line, or `None` when none came within `timeout` or the pipe closed.
    pub fn next(&mut self, timeout: Duration) -> Option<String> {
        match self.rx.recv_timeout(timeout) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The first line for which `pick` returns something, skipping the others; `None` on timeout.
    pub fn find<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next(left)?;
            if let Some(found) = pick(&line) {
                return Some(found);
            }
        }
    }

    /// Waits (bounded) until the pipe closes, keeping the lines still written; false on timeout.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    /// Every line received so far, joined, for failure messages.
    pub fn seen(&self) -> String {
        self.seen.join("\n")
    }

    /// Lines already written but not yet taken, without waiting.
    pub fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = self.rx.try_recv() {
            self.seen.push(line.clone());
            out.push(line);
        }
        out
    }
}

/// `hepjs-decode.js` listening on 127.0.0.1: every datagram sent to [`HepjsDecoder::addr`] comes
/// back from [`HepjsDecoder::next_json`] as hep-js decoded it.
#[derive(Debug)]
pub struct HepjsDecoder {
    /// Where to send HEP datagrams.
    pub addr: SocketAddr,
    /// The decoder's stdout: one JSON line per datagram.
    stdout: Lines,
    /// The decoder's stderr, for failure messages.
    stderr: Lines,
    /// Held open: the decoder exits when its stdin closes.
    _stdin: ChildStdin,
    /// The node process; declared last so the pipes above are dropped first.
    _child: KillOnDrop,
}

impl HepjsDecoder {
    /// Starts the decoder and waits (bounded) for its `{"listening":PORT}` line.
    pub fn start() -> Self {
        require_hepjs();
        let mut child = Command::new("node")
            .arg(interop_dir().join("hepjs-decode.js"))
            .current_dir(interop_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node hepjs-decode.js: {e}"));
        let stdin = child.stdin.take().unwrap_or_else(|| unreachable!());
        let mut stdout = Lines::spawn(child.stdout.take().unwrap_or_else(|| unreachable!()));
        let mut stderr = Lines::spawn(child.stderr.take().unwrap_or_else(|| unreachable!()));
        let child = KillOnDrop(child);
        let port = stdout.find(START_TIMEOUT, |line| {
            line.strip_prefix("{\"listening\":")
                .and_then(|rest| rest.strip_suffix('}'))
                .and_then(|port| port.parse::<u16>().ok())
        });
        let Some(port) = port else {
            stderr.drain();
            panic!(
                "hepjs-decode.js did not report its port within {START_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                stdout.seen(),
                stderr.seen()
            );
        };
        HepjsDecoder {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stdout,
            stderr,
            _stdin: stdin,
            _child: child,
        }
    }

    /// The next decoded datagram as hep-js's JSON line (`{"rcinfo":{..},"payload":".."}` or
    /// `{"error":".."}`); panics when none comes within `timeout`.
    pub fn next_json(&mut self, timeout: Duration) -> String {
        match self.stdout.next(timeout) {
            Some(line) => line,
            None => {
                self.stderr.drain();
                panic!(
                    "hep-js decoded nothing within {timeout:?}\nstderr:\n{}",
                    self.stderr.seen()
                )
            }
        }
    }
}

/// Where [`hepjs_encode`] sends what it builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendTo {
    /// Build only; nothing is sent.
    Nowhere,
    /// One datagram per packet.
    Udp(SocketAddr),
    /// One connection carrying every packet back to back, then closed.
    Tcp(SocketAddr),
}

/// Builds one HEP3 packet per input with hep-js (`HEPjs.encapsulate(payload, rcinfo)`), sends
/// them as `to` says, and returns the packets' bytes in order.
///
/// Each input is one JSON object `{"payload":"...","rcinfo":{...}}` on one line; rcinfo keys are
/// hep-js's (`protocolFamily`, `protocol`, `srcIp`, `dstIp`, `srcPort`, `dstPort`, `timeSeconds`,
/// `timeUseconds`, `payloadType`, `captureId`, `capturePass`, `hepNodeName`, `correlation_id`),
/// plus `extra_correlation` for chunk 0x0065. Panics when the encoder fails.
pub fn hepjs_encode(json_lines: &[String], to: SendTo) -> Vec<Vec<u8>> {
    require_hepjs();
    let mut cmd = Command::new("node");
    cmd.arg(interop_dir().join("hepjs-encode.js"))
        .arg("--hex")
        .current_dir(interop_dir());
    match to {
        SendTo::Nowhere => {}
        SendTo::Udp(addr) => {
            cmd.arg("--to")
                .arg(format!("udp:{}:{}", addr.ip(), addr.port()));
        }
        SendTo::Tcp(addr) => {
            cmd.arg("--to")
                .arg(format!("tcp:{}:{}", addr.ip(), addr.port()));
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node hepjs-encode.js: {e}"));
    let mut stdin = child.stdin.take().unwrap_or_else(|| unreachable!());
    let mut stdout = Lines::spawn(child.stdout.take().unwrap_or_else(|| unreachable!()));
    let mut stderr = Lines::spawn(child.stderr.take().unwrap_or_else(|| unreachable!()));
    let mut child = KillOnDrop(child);
    for line in json_lines {
        assert!(!line.contains('\n'), "one JSON object per line: {line}");
        writeln!(stdin, "{line}").unwrap_or_else(|e| panic!("writing to hepjs-encode.js: {e}"));
    }
    drop(stdin);
    let mut packets = Vec::new();
    while packets.len() < json_lines.len() {
        let Some(hex) = stdout.next(START_TIMEOUT) else {
            stderr.drain();
            panic!(
                "hepjs-encode.js built {} of {} packets\nstderr:\n{}",
                packets.len(),
                json_lines.len(),
                stderr.seen()
            );
        };
        packets.push(from_hex(&hex));
    }
    // The packets are built; the sends are done when the process exits, which closes stderr.
    if !stderr.wait_closed(START_TIMEOUT) {
        panic!("hepjs-encode.js did not exit within {START_TIMEOUT:?}");
    }
    let status = child
        .0
        .wait()
        .unwrap_or_else(|e| panic!("waiting for hepjs-encode.js: {e}"));
    assert!(
        status.success(),
        "hepjs-encode.js failed ({status}):\n{}",
        stderr.seen()
    );
    packets
}

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(
        hex.len().is_multiple_of(2),
        "odd-length hex from hepjs-encode.js: {hex}"
    );
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .unwrap_or_else(|e| panic!("bad hex from hepjs-encode.js ({e}): {hex}"))
        })
        .collect()
}

/// `heptap hep-dump` running as a child process on the listeners it was given.
#[derive(Debug)]
pub struct HepDump {
    /// The UDP listener's address, when one was asked for.
    pub udp: Option<SocketAddr>,
    /// The TCP listener's address, when one was asked for.
    pub tcp: Option<SocketAddr>,
    /// hep-dump's stdout: one JSON object per packet.
    stdout: Lines,
    /// hep-dump's stderr: the listening lines, then one line per bad packet.
    stderr: Lines,
    /// The hep-dump process; declared last so the pipes above are dropped first.
    _child: KillOnDrop,
}

impl HepDump {
    /// Starts `heptap hep-dump --format json` with one `--listen` per item (`"udp:127.0.0.1:0"`,
    /// `"tcp:127.0.0.1:0"`) and waits (bounded) until every listener reported its address.
    pub fn start(listen: &[&str]) -> Self {
        let mut cmd = Command::new(crate::heptap_bin());
        cmd.arg("hep-dump");
        for spec in listen {
            cmd.arg("--listen").arg(spec);
        }
        let mut child = cmd
            .args(["--format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start heptap hep-dump: {e}"));
        let stdout = Lines::spawn(child.stdout.take().unwrap_or_else(|| unreachable!()));
        let mut stderr = Lines::spawn(child.stderr.take().unwrap_or_else(|| unreachable!()));
        let child = KillOnDrop(child);
        let (mut udp, mut tcp) = (None, None);
        let deadline = Instant::now() + START_TIMEOUT;
        for _ in listen {
            let left = deadline.saturating_duration_since(Instant::now());
            let found = stderr.find(left, |line| {
                let rest = line.strip_prefix("listening on ")?;
                let (proto, addr) = rest.split_once(':')?;
                Some((proto.to_owned(), addr.parse::<SocketAddr>().ok()?))
            });
            match found {
                Some((proto, addr)) if proto == "udp" => udp = Some(addr),
                Some((proto, addr)) if proto == "tcp" => tcp = Some(addr),
                Some((proto, _)) => panic!("hep-dump listens on unknown transport {proto}"),
                None => panic!(
                    "hep-dump did not report its listeners within {START_TIMEOUT:?}\nstderr:\n{}",
                    stderr.seen()
                ),
            }
        }
        HepDump {
            udp,
            tcp,
            stdout,
            stderr,
            _child: child,
        }
    }

    /// The next packet hep-dump printed (one JSON object); panics when none comes within
    /// `timeout`, showing what hep-dump reported on stderr.
    pub fn next_json(&mut self, timeout: Duration) -> String {
        match self.stdout.next(timeout) {
            Some(line) => line,
            None => {
                self.stderr.drain();
                panic!(
                    "hep-dump printed no packet within {timeout:?}\nstderr:\n{}",
                    self.stderr.seen()
                )
            }
        }
    }

    /// What hep-dump wrote on stderr so far (listening lines, bad-packet reports).
    pub fn stderr(&mut self) -> String {
        self.stderr.drain();
        self.stderr.seen()
    }

    /// Waits (bounded) for the stderr line containing `text`; `Err` with everything seen on
    /// timeout. Standard error is read by a thread of its own, so it can lag behind stdout.
    pub fn stderr_line(&mut self, text: &str, timeout: Duration) -> Result<String, String> {
        self.stderr
            .find(timeout, |l| l.contains(text).then(|| l.to_owned()))
            .ok_or_else(|| self.stderr.seen())
    }
}
