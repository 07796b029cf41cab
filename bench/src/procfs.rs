//! What the script and the tools read about the process under test from /proc: CPU time
//! (user + system) and resident memory.

/// Linux reports CPU times in /proc in units of USER_HZ, fixed at 100 by the ABI.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) `pid` has used so far, `None` if it cannot be read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Resident memory (VmRSS) of `pid` in KiB, `None` if it cannot be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time of a process over a measurement: take it before, ask it after.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    /// The process measured; `None` when there is none (the direct target).
    pid: Option<u32>,
    /// Its CPU seconds when the meter started.
    start: Option<f64>,
}

impl CpuMeter {
    /// Starts measuring `pid`.
    pub fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            start: pid.and_then(cpu_seconds),
        }
    }

    /// CPU seconds used since [`CpuMeter::start`].
    pub fn used(&self) -> Option<f64> {
        Some(cpu_seconds(self.pid?)? - self.start?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn this_process_has_a_resident_size_and_a_cpu_time() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(cpu_seconds(me).unwrap() >= 0.0);
    }
}
