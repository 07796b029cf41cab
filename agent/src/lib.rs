//! heptap, the agent: everything that runs.
//!
//! It owns the taps (relays that trace connections), the tracer (events -> filters -> switches ->
//! destinations), the senders (per-destination queues and HEP transports), the statistics, the
//! local receiver `hep-dump`, and the process's life (signals, reload, shutdown). It does not own
//! the HEP byte format (heptap-hep), the config model (heptap-config), the route language
//! (heptap-filters) or the MI protocol (heptap-mi).
//!
//! The modules are private; what other crates use is re-exported here: the binary's [`main`],
//! the agent in-process for the end-to-end tests ([`start`] -> [`Running`], [`Stop`], [`LogHandle`],
//! [`Stats`]), the errors those return, and two modules kept public for their own tests,
//! benchmarks and fuzz targets ([`sender`], [`sip`]).
//!
//! Inside (docs/architecture.md draws it): `agent` (start, run, stop, `serve`), `shared` (what
//! the agent and its MI share, reload and `tls_reload`), `build` (config -> destinations,
//! routes, switches, listener specs), `listeners` (the listeners as a set: started, changed and
//! stopped one by one at a reload, removed ones draining), `tap` (a listener, one session per
//! connection, the byte and message relays, the events), `tracer` (the published pipeline snapshot and the run-time switches: it decides
//! what is traced and where), `sender` (one task per destination behind a bounded queue; UDP,
//! TCP, TLS, stdout, file), `sip` (SIP framing on streams and the header values a trace needs),
//! `handover` (SIGUSR2: a new process takes the listening sockets over while this one drains;
//! `heptap upgrade`), `control` (the MI's view of the agent, `heptap_mi::Control`), `mi_settings` (`[mi]` as the MI
//! crate wants it), `tls` (TLS material shared by the taps and the senders), `stats` (the one
//! registry of counters, named `group:name` as OpenSIPS names statistics), `metrics` (their
//! Prometheus exposition), `hep_dump` (`heptap
//! hep-dump`), `workers` (the relay threads), and the process around it: `cli`, `logging`,
//! `signals`, `service`, `pid_file`, `clock`, `conn_id`.

#![forbid(unsafe_code)]

mod agent;
mod build;
mod cli;
mod clock;
mod conn_id;
mod control;
mod dump_text;
mod dyntrace;
mod handover;
mod hep_dump;
mod listeners;
mod logging;
mod metrics;
mod mi_settings;
mod pid_file;
pub mod sender;
mod service;
mod shared;
mod signals;
pub mod sip;
mod stats;
mod tap;
mod tls;
mod tracer;
mod workers;

pub use agent::{Running, StartError, Stop, start, start_with_source};
pub use build::{BuildError, BuildProblem, check};
pub use cli::main;
pub use logging::LogHandle;
pub use shared::ReloadError;
pub use stats::Stats;
pub use tap::{ListenError, TapError};
pub use workers::Workers;
