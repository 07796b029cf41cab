//! heptap-testkit: the test helpers every test crate of the workspace shares, so each exists
//! once. A dev-dependency only (it depends on tokio alone, so even heptap-mi's tests can use it
//! without a cycle through the agent).
//!
//! [`eventually`] is linkerd's `assert_eventually!`: tests wait for a condition, bounded, and
//! never sleep to synchronise. [`opensips_cli`] finds the MI client operators use, for the tests
//! that drive heptap's MI with it; [`write_and_die`] is a FIFO client killed mid-request.

#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a condition is checked again: often enough that a wait costs the test almost
/// nothing once the condition holds, rarely enough not to load a busy machine.
const POLL_EVERY: Duration = Duration::from_millis(5);

/// Waits until `cond()` holds, checking it every few milliseconds; panics after `timeout`,
/// saying it was waiting for `what`: `eventually(WAIT, "the queue empty", || ...)`.
///
/// `what` is formatted only when the wait fails: pass a `&str`, or [`described`] to show the
/// state at that moment.
pub async fn eventually(
    timeout: Duration,
    what: impl fmt::Display,
    mut cond: impl FnMut() -> bool,
) {
    let wait = Wait::start(what, timeout);
    while !cond() {
        wait.not_over();
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// [`eventually`] for a test without a runtime (one that drives a child process or blocking
/// sockets): blocks the calling thread between checks.
pub fn eventually_blocking(
    timeout: Duration,
    what: impl fmt::Display,
    mut cond: impl FnMut() -> bool,
) {
    let wait = Wait::start(what, timeout);
    while !cond() {
        wait.not_over();
        std::thread::sleep(POLL_EVERY);
    }
}

/// One bounded wait: what it waits for and until when; both flavours of [`eventually`] share it.
struct Wait<W> {
    /// For the panic message.
    what: W,
    /// How long the wait may take, for the panic message.
    timeout: Duration,
    /// When the wait fails.
    deadline: Instant,
}

impl<W: fmt::Display> Wait<W> {
    fn start(what: W, timeout: Duration) -> Self {
        Wait {
            what,
            timeout,
            deadline: Instant::now() + timeout,
        }
    }

    /// Panics, saying what was awaited, once the deadline has passed.
    fn not_over(&self) {
        assert!(
            Instant::now() < self.deadline,
            "timed out after {:?} waiting for {}",
            self.timeout,
            self.what
        );
    }
}

/// A description worked out only when it is shown: for [`eventually`]'s `what`, when a failed
/// wait should say what the state was at the time (a log, a counter).
pub fn described<F: Fn() -> String>(describe: F) -> Described<F> {
    Described(describe)
}

/// See [`described`].
pub struct Described<F>(F);

impl<F: Fn() -> String> fmt::Display for Described<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&(self.0)())
    }
}

impl<F> fmt::Debug for Described<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Described")
    }
}

/// A FIFO client that dies mid-request: a real process writes `bytes` into `fifo` and is killed
/// (SIGKILL) right after, so the FIFO sees a real writer come and go.
pub async fn write_and_die(fifo: &Path, bytes: &str) {
    let status = tokio::process::Command::new("sh")
        .args(["-c", r#"printf '%s' "$1" > "$2"; kill -9 $$"#, "sh", bytes])
        .arg(fifo)
        .status()
        .await;
    match status {
        Ok(s) => assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&s),
            Some(9),
            "the writer was killed"
        ),
        Err(e) => panic!("cannot run sh: {e}"),
    }
}

/// Where `opensips-cli` is: `OPENSIPS_CLI`, else the first on `PATH`. Panics when there is
/// none, saying how to get it: a test that needs it fails rather than passing without it.
pub fn opensips_cli() -> PathBuf {
    if let Some(p) = std::env::var_os("OPENSIPS_CLI") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    match std::env::split_paths(&path)
        .map(|d| d.join("opensips-cli"))
        .find(|p| p.is_file())
    {
        Some(found) => found,
        None => panic!(
            "opensips-cli not found: run .ci/run, or `pip install opensipscli==0.4.1`, or set \
             OPENSIPS_CLI (or leave these tests out with `cargo test -- --skip opensips_cli`)"
        ),
    }
}

/// A Python with the Prometheus project's `prometheus_client` package, for the tests that read
/// heptap's `/metrics` with a real parser: `HEPTAP_PYTHON`, else the `.ci/.venv` that .ci/run
/// builds in the checkout. Panics when there is none, saying how to get it.
pub fn prometheus_python() -> PathBuf {
    if let Some(p) = std::env::var_os("HEPTAP_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/.venv/bin/python3");
    let works = std::process::Command::new(&venv)
        .args(["-c", "import prometheus_client.parser"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return venv;
    }
    panic!(
        "no Python with prometheus_client: run .ci/run, or `.ci/.venv/bin/pip install \
         prometheus-client`, or set HEPTAP_PYTHON to a python3 that has it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cell::Cell;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let checks = Cell::new(0);
        eventually(Duration::from_secs(5), "the third check", || {
            checks.set(checks.get() + 1);
            checks.get() == 3
        })
        .await;
        assert_eq!(checks.get(), 3);
    }

    #[tokio::test]
    async fn sees_a_condition_another_task_makes_true() {
        let flag = Arc::new(AtomicBool::new(false));
        let set = flag.clone();
        tokio::spawn(async move { set.store(true, Ordering::Relaxed) });
        eventually(Duration::from_secs(5), "the flag set", || {
            flag.load(Ordering::Relaxed)
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for the impossible")]
    async fn panics_with_the_description_after_the_timeout() {
        eventually(Duration::from_millis(20), "the impossible", || false).await;
    }

    #[test]
    fn the_blocking_flavour_returns_once_the_condition_holds() {
        let mut checks = 0;
        eventually_blocking(Duration::from_secs(5), "the second check", || {
            checks += 1;
            checks == 2
        });
        assert_eq!(checks, 2);
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible")]
    fn the_blocking_flavour_panics_with_the_description_after_the_timeout() {
        eventually_blocking(Duration::from_millis(20), "the impossible", || false);
    }

    #[test]
    #[should_panic(expected = "waiting for 7 rows; the log says: nothing")]
    fn a_described_wait_shows_the_state_when_it_fails() {
        let rows = Cell::new(0);
        eventually_blocking(
            Duration::from_millis(20),
            described(|| format!("{} rows; the log says: nothing", rows.get())),
            || {
                rows.set(7);
                false
            },
        );
    }
}
