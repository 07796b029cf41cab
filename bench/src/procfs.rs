//! What the script and the tools read about the processes under test from /proc: CPU time
//! (user + system) and resident memory, of one process or of several together (a relay with
//! worker processes).

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

/// Resident memory of several processes together (a relay with worker processes), KiB;
/// `None` if there are none or one cannot be read.
pub fn rss_kib_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_kib(p)).sum()
}

/// CPU time of a set of processes over a measurement: take it before, ask it after.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    /// The processes measured (a relay's, or its workers'); empty when there is none (the
    /// direct target).
    pids: Vec<u32>,
    /// Their CPU seconds together when the meter started.
    start: Option<f64>,
}

impl CpuMeter {
    /// Starts measuring `pids` together.
    pub fn start(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            start: Self::sum(pids),
        }
    }

    fn sum(pids: &[u32]) -> Option<f64> {
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|&p| cpu_seconds(p)).sum()
    }

    /// CPU seconds used since [`CpuMeter::start`].
    pub fn used(&self) -> Option<f64> {
        Some(Self::sum(&self.pids)? - self.start?)
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

    #[test]
    fn a_meter_adds_up_its_processes_and_has_nothing_to_say_without_one() {
        let me = std::process::id();
        assert!(rss_kib_sum(&[me, me]).unwrap() > 0);
        assert!(CpuMeter::start(&[me, me]).used().unwrap() >= 0.0);
        assert_eq!(CpuMeter::start(&[]).used(), None);
        assert_eq!(rss_kib_sum(&[]), None);
    }
}
