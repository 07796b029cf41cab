//! `heptap upgrade`: finds the running heptap, watches its hand-over socket, sends it SIGUSR2
//! and waits for the outcome; the exit code says which it was (see [`Outcome`]).

use std::io::{BufRead, BufReader};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::watch::socket_name;

/// How `heptap upgrade` ends, and its exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 0: the new process accepts; the old one drains.
    Ready {
        /// The old process.
        old: u32,
        /// The new one.
        new: u32,
    },
    /// 1: the new process failed; the old one keeps serving as before.
    Failed(String),
    /// 2: no heptap to upgrade (not found, not running, not reachable, or too old to hand over:
    /// nothing was signalled).
    NotFound(String),
    /// 3: heptap refused (a hand-over is already under way, or it is draining).
    Refused(String),
    /// 4: no outcome within the time given (or the old process went away without one).
    NoAnswer(String),
}

impl Outcome {
    /// The exit code.
    pub fn code(&self) -> u8 {
        match self {
            Outcome::Ready { .. } => 0,
            Outcome::Failed(_) => 1,
            Outcome::NotFound(_) => 2,
            Outcome::Refused(_) => 3,
            Outcome::NoAnswer(_) => 4,
        }
    }
}

/// Where to find the running heptap.
#[derive(Debug, Default)]
pub struct Target {
    /// `--pid`.
    pub pid: Option<u32>,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// The config's `[service] pid_file`, when a config names one.
    pub config_pid_file: Option<PathBuf>,
    /// `--unit`: the systemd unit whose `MainPID` is heptap.
    pub unit: String,
}

/// Runs `heptap upgrade`: prints what happened and returns the exit code.
pub fn main(target: &Target, timeout: Duration) -> ExitCode {
    let outcome = upgrade(target, timeout);
    match &outcome {
        Outcome::Ready { old, new } => println!(
            "heptap: pid {new} took over from pid {old}; pid {old} relays its live connections until they close (drain_timeout)"
        ),
        Outcome::Failed(why) => {
            eprintln!("heptap: the hand-over failed; the running heptap keeps serving: {why}")
        }
        Outcome::NotFound(why) => eprintln!("heptap: nothing upgraded: {why}"),
        Outcome::Refused(why) => eprintln!("heptap: the hand-over was refused: {why}"),
        Outcome::NoAnswer(why) => eprintln!("heptap: no outcome: {why}"),
    }
    ExitCode::from(outcome.code())
}

/// Finds heptap, watches, signals, waits.
pub fn upgrade(target: &Target, timeout: Duration) -> Outcome {
    let pid = match find(target) {
        Ok(pid) => pid,
        Err(why) => return Outcome::NotFound(why),
    };
    // Watch before signalling: the outcome cannot come before the watcher is registered. A
    // heptap that does not listen here (not heptap, or a version without hand-over, which
    // SIGUSR2 would kill) is not signalled.
    let name = socket_name(pid);
    let stream = match std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .and_then(|addr| UnixStream::connect_addr(&addr))
    {
        Ok(s) => s,
        Err(e) => {
            return Outcome::NotFound(format!(
                "pid {pid} does not take hand-overs (no @{name}: {e}); is it a heptap that knows SIGUSR2?"
            ));
        }
    };
    if let Err(e) = stream.set_read_timeout(Some(timeout)) {
        return Outcome::NotFound(format!("@{name}: {e}"));
    }
    let mut lines = BufReader::new(stream).lines();
    match lines.next() {
        Some(Ok(l)) if l == format!("watching {pid}") => {}
        other => {
            return Outcome::NotFound(format!(
                "@{name} did not greet as heptap pid {pid}: {other:?}"
            ));
        }
    }
    let target_pid = nix::unistd::Pid::from_raw(pid as i32);
    if let Err(e) = nix::sys::signal::kill(target_pid, nix::sys::signal::Signal::SIGUSR2) {
        return Outcome::NotFound(format!("cannot signal pid {pid}: {e}"));
    }
    // A refusal heard after a start is another client's SIGUSR2 refused during the hand-over
    // this one watches: its outcome is this one's too.
    let mut started = false;
    for line in lines {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                return Outcome::NoAnswer(format!(
                    "pid {pid} said nothing more within {timeout:?} ({e})"
                ));
            }
        };
        let (word, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match word {
            "started" => {
                started = true;
                println!("heptap: pid {pid} started pid {rest}");
            }
            "refused" if started => {}
            "ready" => match rest.parse() {
                Ok(new) => return Outcome::Ready { old: pid, new },
                Err(_) => return Outcome::NoAnswer(format!("pid {pid} said {line:?}")),
            },
            "failed" => return Outcome::Failed(rest.to_owned()),
            "refused" => return Outcome::Refused(rest.to_owned()),
            _ => return Outcome::NoAnswer(format!("pid {pid} said {line:?}")),
        }
    }
    Outcome::NoAnswer(format!("pid {pid} closed the watch without an outcome"))
}

/// The pid: `--pid`, else the pid file (`--pid-file`, else the config's), else systemd's
/// `MainPID` of the unit.
fn find(target: &Target) -> Result<u32, String> {
    if let Some(pid) = target.pid {
        // 0 and -1 would signal a process group, 1 is init: never heptap.
        return parse_pid(&pid.to_string()).ok_or_else(|| format!("--pid {pid} names no heptap"));
    }
    if let Some(file) = target.pid_file.as_ref().or(target.config_pid_file.as_ref()) {
        return read_pid_file(file);
    }
    main_pid(&target.unit)
}

fn read_pid_file(file: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the pid file {}: {e}", file.display()))?;
    parse_pid(text.trim()).ok_or_else(|| format!("{} holds no pid: {text:?}", file.display()))
}

fn parse_pid(text: &str) -> Option<u32> {
    text.parse::<u32>().ok().filter(|&p| p > 1)
}

/// The unit's `MainPID`, from systemctl.
fn main_pid(unit: &str) -> Result<u32, String> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Err(format!(
            "systemd is not running, so the unit {unit} cannot name heptap's pid: give --pid or --pid-file (or [service] pid_file in the config)"
        ));
    }
    let out = std::process::Command::new("systemctl")
        .args(["show", "--property=MainPID", "--value", unit])
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_pid(text.trim()) {
        Some(pid) if out.status.success() => Ok(pid),
        _ => Err(format!("{unit} is not running (MainPID={})", text.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_codes_are_distinct() {
        let all = [
            Outcome::Ready { old: 2, new: 3 },
            Outcome::Failed(String::new()),
            Outcome::NotFound(String::new()),
            Outcome::Refused(String::new()),
            Outcome::NoAnswer(String::new()),
        ];
        let codes: Vec<u8> = all.iter().map(Outcome::code).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_pid_file_holds_a_pid_above_1() {
        assert_eq!(parse_pid("1234"), Some(1234));
        assert_eq!(parse_pid("0"), None);
        assert_eq!(parse_pid("1"), None);
        assert_eq!(parse_pid("x"), None);
    }
}
