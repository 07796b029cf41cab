//! heptap, the agent: everything that runs.
//!
//! It owns the taps (relays that trace connections), the tracer (events -> filters -> switches ->
//! destinations), the senders (per-destination queues and HEP transports), the statistics, the
//! local receiver `hep-dump`, and the process's life (signals, reload, shutdown). It does not own
//! the HEP byte format (heptap-hep), the config model (heptap-config), the route language
//! (heptap-filters) or the MI protocol (heptap-mi).
//!
//! - [`agent`]: build from a config, [`agent::start`] / [`agent::Running`], reload, shutdown.
//! - [`build`]: config -> destinations, routes, switches, listener specs.
//! - [`tap`]: listeners, one session per connection, the byte and message relays, the events.
//! - [`tracer`]: the published pipeline snapshot and the run-time switches.
//! - [`sender`]: one task per destination behind a bounded queue; UDP, TCP, TLS, stdout, file.
//! - [`sip`]: SIP framing on streams and the header values a trace needs.
//! - [`control`]: the MI's view of the agent (`heptap_mi::Control`); `mi_settings`: `[mi]` as the
//!   MI crate wants it; `shared`: what the agent and its MI share, and reload.
//! - [`tls`]: TLS material shared by the taps and the senders (ring provider, PEM, roots).
//! - [`stats`]: the one registry of counters, named `group:name` as OpenSIPS names statistics.
//! - [`hep_dump`]: `heptap hep-dump`, a HEP receiver printing JSON lines.
//! - [`cli`], [`logging`], [`signals`], [`service`], [`clock`], [`conn_id`]: the process around
//!   it.

#![forbid(unsafe_code)]

pub mod agent;
pub mod build;
pub mod cli;
pub mod clock;
pub mod conn_id;
pub mod control;
mod dump_text;
pub mod hep_dump;
pub mod logging;
mod mi_settings;
pub mod sender;
pub mod service;
mod shared;
pub mod signals;
pub mod sip;
pub mod stats;
pub mod tap;
pub mod tls;
pub mod tracer;
pub mod workers;
