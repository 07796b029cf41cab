//! Destinations: one task per named destination behind a bounded, never-blocking queue.
