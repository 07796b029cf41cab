//! Kamailio's sipcapture module as a real HEP capture node, storing what it receives in SQLite.
//!
//! [`Kamailio::start`] renders `tests/interop/kamailio/sipcapture.cfg.in` with free loopback
//! ports and a fresh SQLite file (schema from `schema.sql` next to it, created by the `sqlite3`
//! CLI because Kamailio ships none), runs `kamailio -DD -E` in the foreground in its own process
//! group, and returns once its TCP port accepts. Dropping it stops the whole group (SIGTERM, then
//! SIGKILL if it lingers) and removes the directory. [`Kamailio::wait_stored`] waits for
//! Kamailio's own confirmation that a message is stored, and [`Kamailio::rows`] then queries the
//! database with `sqlite3 -json`.
//!
//! Needs the Debian packages `kamailio kamailio-sqlite-modules sqlite3`; without them the tests
//! fail with that instruction rather than being skipped.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use heptap_testkit::{described, eventually_blocking};

/// Set to use another `kamailio` binary than `/usr/sbin/kamailio` (or the one on PATH).
pub const KAMAILIO_ENV: &str = "KAMAILIO";

/// How long Kamailio gets to open its ports (it takes well under a second here).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How often the port is tried, and the main process checked, while waiting for them.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Attempts at starting on freshly picked ports: a port picked free can be taken by someone else
/// before Kamailio binds it.
const START_ATTEMPTS: u32 = 5;

/// A running Kamailio sipcapture node on 127.0.0.1.
#[derive(Debug)]
pub struct Kamailio {
    /// Where HEP (v1, v2 or v3) datagrams are taken.
    pub udp: SocketAddr,
    /// Where HEP3 is taken over TCP.
    pub tcp: SocketAddr,
    /// The SQLite file sipcapture writes to (tables `sip_capture`, `report_capture`, ...).
    pub db: PathBuf,
    /// Kamailio's stderr and stdout (its log, `-E`), shown when a wait fails.
    log: PathBuf,
    /// The private directory holding the config, the database and the log; removed on drop.
    dir: PathBuf,
    /// The Kamailio main process, leader of its own process group.
    child: Child,
}

impl Kamailio {
    /// Starts a capture node on free loopback ports and waits (bounded) until it accepts.
    pub fn start() -> Self {
        let kamailio = kamailio_binary();
        let dir = private_dir();
        let db = dir.join("capture.sqlite");
        create_schema(&db);
        let template = fs::read_to_string(kamailio_dir().join("sipcapture.cfg.in"))
            .unwrap_or_else(|e| panic!("reading sipcapture.cfg.in: {e}"));
        let log = dir.join("kamailio.log");
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let (udp, tcp) = free_ports();
            let cfg = dir.join("kamailio.cfg");
            let rendered = template
                .replace("{{udp_port}}", &udp.port().to_string())
                .replace("{{tcp_port}}", &tcp.port().to_string())
                .replace("{{db_path}}", &db.display().to_string());
            fs::write(&cfg, rendered).unwrap_or_else(|e| panic!("writing kamailio.cfg: {e}"));
            let log_file =
                fs::File::create(&log).unwrap_or_else(|e| panic!("creating kamailio.log: {e}"));
            let log_err = log_file
                .try_clone()
                .unwrap_or_else(|e| panic!("kamailio.log: {e}"));
            let child = Command::new(&kamailio)
                .arg("-f")
                .arg(&cfg)
                .args(["-DD", "-E", "-Y"])
                .arg(&dir)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log_file)
                .stderr(log_err)
                // Its own group, so that drop reaches the workers Kamailio forks.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", kamailio.display()));
            let mut child = child;
            match wait_accepting(&mut child, tcp) {
                Ok(()) => {
                    return Kamailio {
                        udp,
                        tcp,
                        db,
                        log,
                        dir,
                        child,
                    };
                }
                Err(why) => {
                    stop_group(&mut child);
                    let log = read_lossy(&log);
                    failures.push(format!("attempt {attempt}: {why}\n{log}"));
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!(
            "Kamailio did not start in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// Kamailio's log so far (it quotes unparsable packets raw, hence lossy).
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    /// Runs `sql` with `sqlite3 -json` and returns its output: a JSON array of row objects
    /// (column name to value; SQL NULL is `null`), `[]` when there is no row.
    pub fn rows(&self, sql: &str) -> String {
        let out = Command::new("sqlite3")
            .args(["-json", "-cmd", ".timeout 5000"])
            .arg(&self.db)
            .arg(sql)
            .output()
            .unwrap_or_else(|e| panic!("cannot run sqlite3 (apt-get install sqlite3): {e}"));
        assert!(
            out.status.success(),
            "sqlite3 failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if text.is_empty() {
            "[]".to_owned()
        } else {
            text
        }
    }

    /// Waits (bounded) until Kamailio confirms in its log that it stored the message with `key`
    /// (the Call-ID for SIP, chunk 0x0011 otherwise) in `table`; panics with the log when it says
    /// it could not, or says nothing within `timeout`.
    ///
    /// Wait for this before [`Kamailio::rows`]: db_sqlite sets no busy timeout, so an insert
    /// that meets a reader's lock fails at once ("database is locked") and the row is lost. The
    /// log is read as a plain file, which never gets in Kamailio's way.
    pub fn wait_stored(&self, table: &str, key: &str, timeout: Duration) {
        let stored = format!("heptap-test: stored {table} {key}");
        let not_stored = format!("heptap-test: not stored {table} {key}");
        let what =
            described(|| format!("Kamailio to store {key} in {table}\nlog:\n{}", self.log()));
        eventually_blocking(timeout, what, || {
            let log = self.log();
            if log.lines().any(|line| line.ends_with(&stored)) {
                return true;
            }
            // Kamailio saying it could not is a failure now, not after the timeout.
            assert!(
                !log.lines().any(|line| line.ends_with(&not_stored)),
                "Kamailio could not store {key} in {table}\nlog:\n{log}"
            );
            false
        });
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        stop_group(&mut self.child);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Polls the TCP port until it accepts; fails early when Kamailio exits (a port was taken).
fn wait_accepting(child: &mut Child, tcp: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("kamailio exited during start-up ({status})"));
        }
        if TcpStream::connect_timeout(&tcp, POLL_EVERY).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("tcp {tcp} not accepting after {START_TIMEOUT:?}"));
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Stops Kamailio's process group: SIGTERM (the main process stops its workers), a bounded wait
/// for the main process to exit, SIGKILL to whatever is left, then reaps the main process.
///
/// The main process is reaped only after the last signal: until then its pid (the group id)
/// cannot be reused, so the signals reach only processes this test started.
fn stop_group(child: &mut Child) {
    let pid = child.id();
    let group = format!("-{pid}");
    if matches!(child.try_wait(), Ok(None)) {
        signal_group("TERM", &group);
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_running(pid) && Instant::now() < deadline {
            std::thread::sleep(POLL_EVERY);
        }
        signal_group("KILL", &group);
    }
    let _ = child.wait();
}

/// True while `pid` exists and is not a zombie (Linux /proc; checking does not reap it).
fn is_running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and may hold spaces.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Sends a signal to a process group we started (`group` is "-PGID"); std has no kill(2).
fn signal_group(signal: &str, group: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(group)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("({}: {e})", path.display()))
}

/// `tests/interop/kamailio`: the config template and the SQLite schema.
pub fn kamailio_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/kamailio")
}

fn kamailio_binary() -> PathBuf {
    let path = std::env::var_os(KAMAILIO_ENV)
        .map(PathBuf::from)
        .or_else(|| {
            let sbin = PathBuf::from("/usr/sbin/kamailio");
            sbin.is_file().then_some(sbin)
        })
        .unwrap_or_else(|| PathBuf::from("kamailio"));
    let runs = Command::new(&path)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        runs,
        "Kamailio is not installed ({} does not run): apt-get install kamailio \
         kamailio-sqlite-modules sqlite3",
        path.display()
    );
    path
}

fn create_schema(db: &Path) {
    let schema = fs::read(kamailio_dir().join("schema.sql"))
        .unwrap_or_else(|e| panic!("reading schema.sql: {e}"));
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run sqlite3 (apt-get install sqlite3): {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        stdin
            .write_all(&schema)
            .unwrap_or_else(|e| panic!("writing the schema to sqlite3: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("sqlite3: {e}"));
    assert!(
        out.status.success(),
        "creating the sipcapture schema failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A UDP and a TCP port that were free a moment ago (bound to port 0, then released).
fn free_ports() -> (SocketAddr, SocketAddr) {
    let udp = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap_or_else(|e| panic!("no free UDP port: {e}"));
    let tcp = TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap_or_else(|e| panic!("no free TCP port: {e}"));
    (udp, tcp)
}

/// A new empty directory under the system temp dir, unique per process and call.
fn private_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("heptap-kamailio-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}
