//! One registry for every counter heptap keeps, read by the MI (`get_statistics`,
//! `list_statistics`, `reset_statistics`, `hep_ids`) and by the logs.
//!
//! Statistics are named as OpenSIPS names them: `group:name`. Counters are plain atomics so the
//! relay path can bump them without locks; the registry's lock is only taken to register a new
//! statistic (at start or reload) and to take a snapshot (MI).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A counter or gauge. Cheap to clone (an `Arc`), cheap to bump (one relaxed atomic add).
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<Stat>);

#[derive(Debug, Default)]
struct Stat {
    /// The current value.
    value: AtomicU64,
    /// Gauges report a state (queue depth, connected) and are not zeroed by `reset_statistics`.
    gauge: bool,
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.value.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        // Adding nothing leaves the cache line, shared by every connection, alone.
        if n != 0 {
            self.0.value.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Subtracts `n`, saturating at zero (gauges only go down as far as they went up).
    pub fn sub(&self, n: u64) {
        let _ = self
            .0
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    /// Sets the value (gauges).
    pub fn set(&self, n: u64) {
        self.0.value.store(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.value.load(Ordering::Relaxed)
    }

    /// Whether `reset_statistics` leaves this one alone.
    pub fn is_gauge(&self) -> bool {
        self.0.gauge
    }
}

/// The registry: `group -> name -> counter`, ordered so that listings are stable.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Shared by every clone: the agent, each sender, the MI.
    inner: Arc<RwLock<BTreeMap<String, BTreeMap<String, Counter>>>>,
}

impl Stats {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter `group:name`, created at zero on first use. Registering twice returns the same
    /// counter, so a reload that keeps a destination keeps its counts.
    pub fn counter(&self, group: &str, name: &str) -> Counter {
        self.register(group, name, false)
    }

    /// The gauge `group:name` (not zeroed by [`Stats::reset`]).
    pub fn gauge(&self, group: &str, name: &str) -> Counter {
        self.register(group, name, true)
    }

    fn register(&self, group: &str, name: &str, gauge: bool) -> Counter {
        if let Some(c) = self.lookup(group, name) {
            return c;
        }
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.entry(group.to_owned())
            .or_default()
            .entry(name.to_owned())
            .or_insert_with(|| {
                Counter(Arc::new(Stat {
                    value: AtomicU64::new(0),
                    gauge,
                }))
            })
            .clone()
    }

    /// Lists `counter` under `group:name` too (OpenSIPS's `fwd_requests` is heptap's
    /// `rcv_requests`: every message read is relayed). A name already taken keeps its counter.
    pub fn alias(&self, group: &str, name: &str, counter: &Counter) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.entry(group.to_owned())
            .or_default()
            .entry(name.to_owned())
            .or_insert_with(|| counter.clone());
    }

    /// The counter `group:name` if it exists.
    pub fn lookup(&self, group: &str, name: &str) -> Option<Counter> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(group).and_then(|g| g.get(name)).cloned()
    }

    /// Every statistic as `(group, name, value)`, ordered by group then name.
    pub fn snapshot(&self) -> Vec<(String, String, u64)> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .flat_map(|(g, names)| {
                names
                    .iter()
                    .map(move |(n, c)| (g.clone(), n.clone(), c.get()))
            })
            .collect()
    }

    /// Every statistic as `(group, name, value, is_gauge)`, ordered by group then name.
    pub fn snapshot_with_kind(&self) -> Vec<(String, String, u64, bool)> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .flat_map(|(g, names)| {
                names
                    .iter()
                    .map(move |(n, c)| (g.clone(), n.clone(), c.get(), c.is_gauge()))
            })
            .collect()
    }

    /// Zeroes every counter (not the gauges), as OpenSIPS's `reset_statistics`.
    pub fn reset(&self) {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        for c in map.values().flat_map(|g| g.values()) {
            if !c.is_gauge() {
                c.set(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registering_twice_returns_the_same_counter() {
        let stats = Stats::new();
        stats.counter("hep_homer", "sent").inc();
        stats.counter("hep_homer", "sent").add(2);
        assert_eq!(stats.lookup("hep_homer", "sent").map(|c| c.get()), Some(3));
    }

    #[test]
    fn reset_zeroes_counters_but_not_gauges() {
        let stats = Stats::new();
        stats.counter("g", "sent").add(5);
        stats.gauge("g", "queue_depth").set(7);
        stats.reset();
        assert_eq!(
            stats.snapshot(),
            vec![
                ("g".to_owned(), "queue_depth".to_owned(), 7),
                ("g".to_owned(), "sent".to_owned(), 0)
            ]
        );
    }

    #[test]
    fn an_alias_is_the_same_counter_under_another_name() {
        let stats = Stats::new();
        let rcv = stats.counter("core", "rcv_requests");
        stats.alias("core", "fwd_requests", &rcv);
        rcv.add(4);
        assert_eq!(
            stats.lookup("core", "fwd_requests").map(|c| c.get()),
            Some(4)
        );
        stats.reset();
        assert_eq!(
            stats.lookup("core", "fwd_requests").map(|c| c.get()),
            Some(0)
        );
    }

    #[test]
    fn gauges_saturate_at_zero() {
        let stats = Stats::new();
        let g = stats.gauge("g", "depth");
        g.add(1);
        g.sub(3);
        assert_eq!(g.get(), 0);
    }
}
