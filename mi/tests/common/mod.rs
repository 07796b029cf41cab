//! What every MI test needs: a `Control` made of plain fields, a running MI on a FIFO in a
//! temporary directory and on 127.0.0.1:0, and raw FIFO / HTTP exchanges that show the bytes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heptap_hep::{NetProto, TraceMessage};
use heptap_mi::{
    Control, DestinationInfo, LogLevel, Mi, MiRunning, MiSettings, ProcessInfo, ReloadRefused,
    ReloadReport, Statistic, TcpConnInfo, TcpConnList, TraceIdInfo, UnknownTraceId,
};
use nix::sys::stat::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

/// Longest any single exchange may take before the test fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A `Control` whose state is plain fields the tests set and read.
#[derive(Debug)]
pub struct TestControl {
    pub global: AtomicBool,
    pub ids: Mutex<Vec<TraceIdInfo>>,
    pub net: Mutex<HashMap<NetProto, bool>>,
    pub stats: Mutex<Vec<Statistic>>,
    pub level: Mutex<LogLevel>,
    pub reload_result: Mutex<Result<ReloadReport, Vec<String>>>,
    pub reloads: AtomicUsize,
    pub tls_reload_result: Mutex<ReloadReport>,
    pub tls_reloads: AtomicUsize,
    pub tracing: AtomicBool,
    pub traces: Mutex<Vec<TraceMessage>>,
    pub hep_ids: serde_json::Value,
    pub conns: Mutex<Vec<TcpConnInfo>>,
}

fn dest(uri: &str) -> DestinationInfo {
    DestinationInfo {
        kind: "HEP".into(),
        uri: uri.into(),
    }
}

fn stat(group: &str, name: &str, value: u64, gauge: bool) -> Statistic {
    Statistic {
        group: group.into(),
        name: name.into(),
        value,
        gauge,
    }
}

impl Default for TestControl {
    fn default() -> Self {
        TestControl {
            global: AtomicBool::new(true),
            ids: Mutex::new(vec![
                TraceIdInfo {
                    name: "tid".into(),
                    on: true,
                    destinations: vec![dest("1.2.3.4:6053")],
                },
                TraceIdInfo {
                    name: "tid2".into(),
                    on: true,
                    destinations: vec![dest("10.0.0.6:9061"), dest("10.0.0.7:9060")],
                },
            ]),
            net: Mutex::new(NetProto::ALL.into_iter().map(|p| (p, true)).collect()),
            stats: Mutex::new(vec![
                stat("core", "events", 12, false),
                stat("core", "connections", 3, true),
                stat("homer", "sent", 40, false),
                stat("homer", "dropped_queue_full", 2, false),
            ]),
            level: Mutex::new(LogLevel::Info),
            reload_result: Mutex::new(Ok(ReloadReport::default())),
            reloads: AtomicUsize::new(0),
            tls_reload_result: Mutex::new(ReloadReport::default()),
            tls_reloads: AtomicUsize::new(0),
            tracing: AtomicBool::new(false),
            traces: Mutex::new(Vec::new()),
            hep_ids: serde_json::json!({"homer": {"state": "connected", "sent": 40}}),
            conns: Mutex::new(Vec::new()),
        }
    }
}

impl TestControl {
    pub fn trace_id_on(&self, name: &str) -> bool {
        self.ids
            .lock()
            .unwrap()
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.on)
            .unwrap()
    }

    pub fn net_on(&self, p: NetProto) -> bool {
        self.net.lock().unwrap()[&p]
    }

    pub fn take_traces(&self) -> Vec<TraceMessage> {
        std::mem::take(&mut self.traces.lock().unwrap())
    }

    pub fn stat(&self, group: &str, name: &str) -> u64 {
        self.stats
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.group == group && s.name == name)
            .map(|s| s.value)
            .unwrap()
    }
}

impl Control for TestControl {
    fn sip_trace_on(&self) -> bool {
        self.global.load(Ordering::SeqCst)
    }
    fn set_sip_trace_on(&self, on: bool) {
        self.global.store(on, Ordering::SeqCst)
    }
    fn trace_ids(&self) -> Vec<TraceIdInfo> {
        self.ids.lock().unwrap().clone()
    }
    fn set_trace_id_on(&self, name: &str, on: bool) -> Result<(), UnknownTraceId> {
        let mut ids = self.ids.lock().unwrap();
        let t = ids
            .iter_mut()
            .find(|t| t.name == name)
            .ok_or_else(|| UnknownTraceId(name.into()))?;
        t.on = on;
        Ok(())
    }
    fn net_trace_on(&self, proto: NetProto) -> bool {
        self.net_on(proto)
    }
    fn set_net_trace_on(&self, proto: NetProto, on: bool) {
        self.net.lock().unwrap().insert(proto, on);
    }
    fn statistics(&self) -> Vec<Statistic> {
        self.stats.lock().unwrap().clone()
    }
    fn reset_statistic(&self, group: &str, name: &str) {
        for s in self.stats.lock().unwrap().iter_mut() {
            if s.group == group && s.name == name {
                s.value = 0;
            }
        }
    }
    fn hep_ids(&self) -> serde_json::Value {
        self.hep_ids.clone()
    }
    fn reload(&self) -> Result<ReloadReport, ReloadRefused> {
        self.reloads.fetch_add(1, Ordering::SeqCst);
        self.reload_result
            .lock()
            .unwrap()
            .clone()
            .map_err(|errors| ReloadRefused { errors })
    }
    fn tls_reload(&self) -> Result<ReloadReport, ReloadRefused> {
        self.tls_reloads.fetch_add(1, Ordering::SeqCst);
        Ok(self.tls_reload_result.lock().unwrap().clone())
    }
    fn log_level(&self) -> LogLevel {
        *self.level.lock().unwrap()
    }
    fn set_log_level(&self, level: LogLevel) -> Result<(), String> {
        *self.level.lock().unwrap() = level;
        Ok(())
    }
    fn processes(&self) -> Vec<ProcessInfo> {
        vec![
            ProcessInfo {
                id: 0,
                pid: std::process::id(),
                kind: "main".into(),
            },
            ProcessInfo {
                id: 1,
                pid: std::process::id(),
                kind: "MI FIFO".into(),
            },
        ]
    }
    fn mi_tracing_enabled(&self) -> bool {
        self.tracing.load(Ordering::SeqCst)
    }
    fn trace_mi(&self, msg: TraceMessage) {
        self.traces.lock().unwrap().push(msg);
    }
    fn tcp_connections(&self, proto: Option<NetProto>, max: usize) -> TcpConnList {
        let all: Vec<TcpConnInfo> = self
            .conns
            .lock()
            .unwrap()
            .iter()
            .filter(|c| proto.is_none_or(|p| c.client.proto == p))
            .cloned()
            .collect();
        TcpConnList {
            total: all.len(),
            listed: all.into_iter().take(max).collect(),
        }
    }
}

/// A started MI with its FIFO and reply dir in a temporary directory and HTTP on 127.0.0.1:0.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub fifo: PathBuf,
    pub reply_dir: PathBuf,
    pub url: String,
    pub control: Arc<TestControl>,
    pub mi: Mi,
    pub running: Option<MiRunning>,
    pub shutdown: CancellationToken,
}

/// Settings for a test MI in `dir` (FIFO `dir/heptap_fifo`, replies in `dir/replies/`).
pub fn settings_in(dir: &Path) -> MiSettings {
    let reply_dir = dir.join("replies");
    std::fs::create_dir_all(&reply_dir).unwrap();
    MiSettings {
        fifo_name: Some(dir.join("heptap_fifo")),
        reply_dir,
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        reply_timeout: Duration::from_millis(500),
        ..MiSettings::default()
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(TestControl::default(), |_| {}).await
    }

    pub async fn start_with(control: TestControl, tweak: impl FnOnce(&mut MiSettings)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = settings_in(dir.path());
        tweak(&mut settings);
        let control = Arc::new(control);
        let mi = Mi::new(settings.clone(), control.clone()).unwrap();
        let shutdown = CancellationToken::new();
        let running = mi.clone().start(shutdown.clone()).await.unwrap();
        let url = format!(
            "http://{}/{}",
            running.http_addr.unwrap(),
            settings.http_root.trim_matches('/')
        );
        Harness {
            fifo: running.fifo_path.clone().unwrap(),
            reply_dir: settings.reply_dir.clone(),
            dir,
            url,
            control,
            mi,
            running: Some(running),
            shutdown,
        }
    }

    /// Stops the servers and waits until every in-flight reply has been written or given up.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(DEADLINE, r.join()).await.unwrap();
        }
    }

    /// Writes `payload(reply_name)` to the MI FIFO through a fresh reply FIFO and returns what
    /// comes back before the server closes it.
    pub async fn fifo_raw(&self, reply_name: &str, payload: &[u8]) -> String {
        let path = self.reply_dir.join(reply_name);
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).unwrap();
        let mut rx = pipe::OpenOptions::new().open_receiver(&path).unwrap();
        write_fifo(&self.fifo, payload).await;
        let mut out = String::new();
        tokio::time::timeout(DEADLINE, rx.read_to_string(&mut out))
            .await
            .expect("reply within the deadline")
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        out
    }

    /// A 3.x JSON request over the FIFO, the way opensips-cli frames it.
    pub async fn fifo_json(&self, body: &str) -> String {
        let name = unique_name("r");
        let payload = format!(":{name}:{body}");
        self.fifo_raw(&name, payload.as_bytes()).await
    }
}

/// Writes bytes into a FIFO that has a reader.
pub async fn write_fifo(fifo: &Path, payload: &[u8]) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(fifo)
        .unwrap();
    let mut tx = pipe::Sender::from_file(file).unwrap();
    tokio::time::timeout(DEADLINE, tx.write_all(payload))
        .await
        .unwrap()
        .unwrap();
}

pub fn unique_name(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}_{}", N.fetch_add(1, Ordering::SeqCst))
}

/// One HTTP/1.1 request over a fresh connection; returns the whole response as text.
pub async fn http_raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// A POST of `body` to `path` with `Connection: close`.
pub fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The body of an HTTP response.
pub fn body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("")
}

/// The status line of an HTTP response.
pub fn status(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

/// A trace message's payload parts as (key, value) string pairs.
pub fn parts(m: &TraceMessage) -> Vec<(String, String)> {
    m.parts
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
