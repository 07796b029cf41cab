//! Timestamps for HEP packets: taken when the bytes were read, and strictly increasing within
//! one connection (+1 µs on ties), so Homer shows the messages of a flow in order even when the
//! clock's resolution or a burst makes two of them equal (spec/hep.md §6, pain point 3).

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One connection's clock.
#[derive(Debug, Default, Clone)]
pub struct FlowClock {
    /// The last timestamp handed out, in µs.
    last: u64,
}

impl FlowClock {
    /// A clock that has handed out nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The timestamp for bytes read at `micros`: never equal to or before the previous one.
    pub fn stamp(&mut self, micros: u64) -> (u32, u32) {
        let t = micros.max(self.last.saturating_add(1));
        self.last = t;
        split(t)
    }
}

/// `(seconds, microseconds)` as HEP carries them.
pub fn split(micros: u64) -> (u32, u32) {
    ((micros / 1_000_000) as u32, (micros % 1_000_000) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_and_clock_steps_back_still_increase_by_one_microsecond() {
        let mut c = FlowClock::new();
        assert_eq!(c.stamp(5_000_000), (5, 0));
        assert_eq!(c.stamp(5_000_000), (5, 1));
        assert_eq!(c.stamp(4_999_999), (5, 2));
        assert_eq!(c.stamp(6_000_000), (6, 0));
    }
}
