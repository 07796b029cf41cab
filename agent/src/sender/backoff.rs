//! Capped exponential backoff with jitter between connection attempts.
//!
//! The n-th delay after a failure is drawn uniformly from `[base/2, base]` with
//! `base = min(initial * 2^n, max)`: it doubles from `initial` up to `max` and stays there, so a
//! collector that is down for hours is retried every `max/2..max` and never given up on
//! (unlike OpenSIPS's `hep_retry_cooldown` of an hour). The jitter keeps many agents that lost the
//! same collector from reconnecting in lock step.

use std::time::Duration;

use rand::Rng as _;

/// The delays of one run of failures.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    /// Base of the first delay.
    initial: Duration,
    /// Cap of the base.
    max: Duration,
    /// Failures since the last success.
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial: initial.max(Duration::from_millis(1)),
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The base (upper bound) of the next delay, without jitter.
    pub(crate) fn next_base(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt; counts one more failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next_base();
        self.failures = self.failures.saturating_add(1);
        let half = base / 2;
        let jitter = rand::rng().random_range(0..=u64::try_from(half.as_micros()).unwrap_or(0));
        half + Duration::from_micros(jitter)
    }

    /// After a connection proved itself: the next failure starts from `initial` again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_initial_value_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut bases = Vec::new();
        for _ in 0..10 {
            bases.push(b.next_base().as_millis());
            b.next_delay();
        }
        assert_eq!(
            bases,
            [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
    }

    #[test]
    fn each_delay_lies_between_half_its_base_and_its_base() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..200 {
            let base = b.next_base();
            let d = b.next_delay();
            assert!(d >= base / 2 && d <= base, "{d:?} outside {base:?}");
        }
    }

    #[test]
    fn reset_starts_again_from_the_initial_delay() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.next_base(), Duration::from_millis(100));
    }

    #[test]
    fn attempts_never_stop_and_never_exceed_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..10_000 {
            assert!(b.next_delay() <= Duration::from_secs(10));
        }
    }
}
