//! Connection ids in OpenSIPS's shape (spec/opensips-tracing.md §2.3), so capture nodes and
//! operators see the same kind of numbers they already know:
//! `conn_id | (startup_time & 0xFFFFFF) << 32 | (random byte) << 56`, where `conn_id` is a 32-bit
//! counter that starts at a random value. Printed as an unsigned decimal in chunk 0x0011.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Hands out connection ids, unique per process lifetime until the 32-bit counter wraps
/// (4 billion connections).
#[derive(Debug)]
pub struct ConnIds {
    /// The per-connection counter; its start is random so ids differ across restarts.
    next: AtomicU32,
    /// `startup_time & 0xFFFFFF`, already shifted into bits 32..56.
    startup_bits: u64,
}

impl Default for ConnIds {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnIds {
    /// A generator seeded from the clock and the thread RNG.
    pub fn new() -> Self {
        let startup = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            next: AtomicU32::new(rand::random()),
            startup_bits: (startup & 0xFF_FFFF) << 32,
        }
    }

    /// The next id.
    pub fn next_id(&self) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        u64::from(n) | self.startup_bits | (u64::from(rand::random::<u8>()) << 56)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_opensips_shape_and_are_unique() {
        let ids = ConnIds::new();
        let a = ids.next_id();
        let b = ids.next_id();
        assert_ne!(a, b);
        // Same startup bits, consecutive counters.
        assert_eq!(a & 0x00FF_FFFF_0000_0000, b & 0x00FF_FFFF_0000_0000);
        assert_eq!((a as u32).wrapping_add(1), b as u32);
    }
}
