//! heptap-config owns heptap's configuration: the model (one struct per TOML table, a doc
//! comment on every key), loading it with figment (built-in defaults < TOML file < `HEPTAP_*`
//! environment), the OpenSIPS modparam string syntaxes `hep_id` and `trace_id`, the HEP
//! [`Transport`] of a destination, and `validate()`, which reports every problem at once with
//! its key path and origin (file and line, environment variable, or default).
//!
//! The words it shares with other crates are theirs: the connection protocol and the HEP
//! version are heptap-hep's `NetProto` and `Version`, the `trace_bwlist` / `sip_methods` lists
//! heptap-filters' `Bwlist`. It does not compile routes (heptap-filters does; this crate reads
//! the route texts and lists the route names referenced), resolve host names, open sockets or
//! load certificates beyond checking the files are readable. No tokio.

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
pub use load::{ENV_PREFIX, ENV_SEPARATOR, Loaded, Source};
pub use model::{
    ClientCert, Config, Destination, Hep, HepId, HepIdEntry, HepIdTable, HepSpool, HepTls,
    Listener, ListenerTls, Log, LogFormat, Mi, MiUpstream, Net, NetTracing, ProxyProtocol, Routes,
    Service, SipPayload, TraceId, Tracer, UpstreamSource, UpstreamSourceFallback,
    UpstreamSourcePort, UpstreamTls,
};
pub use opensips::{
    DEFAULT_HEP_PORT, HepIdError, HepIdString, STDOUT, TraceIdEntry, TraceIdError, TraceUri,
    Transport,
};
pub use resolve::{RouteRef, RouteText};
pub use units::{HostPort, Sha256Fingerprint};
