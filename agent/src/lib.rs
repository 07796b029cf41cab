//! heptap, the agent: everything that runs.
//!
//! It owns the taps (relays that trace connections), the tracer (events -> filters -> switches ->
//! destinations), the senders (per-destination queues and HEP transports), the statistics, the
//! local receiver `hep-dump`, and the process's life (signals, reload, shutdown). It does not own
//! the HEP byte format (heptap-hep), the config model (heptap-config), the route language
//! (heptap-filters) or the MI protocol (heptap-mi).
//!
//! - [`stats`]: the one registry of counters, named `group:name` as OpenSIPS names statistics.
//! - [`sender`]: one task per destination behind a bounded queue; UDP, TCP, TLS, stdout, file.

#![forbid(unsafe_code)]

pub mod sender;
pub mod sip;
pub mod stats;
