//! heptap-config owns heptap's configuration: the model (one struct per TOML table, a doc
//! comment on every key), loading it with figment (built-in defaults < TOML file < `HEPTAP_*`
//! environment), the OpenSIPS modparam string syntaxes (`hep_id`, `trace_id`, `trace_bwlist`),
//! and `validate()`, which reports every problem at once with its key path and origin (file and
//! line, environment variable, or default).
//!
//! It does not compile routes (heptap-filters does; this crate reads the route texts and lists
//! the route names referenced), resolve host names, open sockets or load certificates beyond
//! checking the files are readable. No tokio.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod load;
mod model;
mod opensips;
mod resolve;
pub mod units;
mod validate;

pub use error::{ConfigError, ConfigErrors, Origin};
pub use load::{ENV_PREFIX, ENV_SEPARATOR, Source};
pub use model::{
    ClientCert, Config, Destination, Hep, HepId, HepIdEntry, HepIdTable, HepTls, Listener,
    ListenerTls, Log, Mi, MiUpstream, Net, NetProto, Proto, ProxyProtocol, Routes, STDOUT, Service,
    SipPayload, TraceId, Tracer, UpstreamTls,
};
pub use opensips::{
    Bwlist, BwlistError, BwlistKind, DEFAULT_HEP_PORT, HepIdError, HepIdString, TraceIdEntry,
    TraceIdError, TraceUri, Transport, Version,
};
pub use resolve::{RouteRef, RouteText};
pub use units::HostPort;
