//! heptap-bench: the load tools behind `bench/run.sh`, which compares heptap (SIP and
//! connection tracing on, and off), a direct connection, HAProxy and nginx on loopback.
//!
//! Modules: [`sip`] (the 600-byte request, 400-byte reply and a Content-Length framer),
//! [`tls`] (certificate, client and server configs), [`target`] (connecting over TCP or TLS),
//! [`echo`] (the SIP responder and bulk sink every target relays to), [`load`] (bulk,
//! request/response at a fixed rate and at the maximum rate, connection rate, idle
//! connections), [`floor`] (the kernel's cost per HEP datagram on loopback, with the cheapest
//! sender), [`sink`] (a UDP HEP receiver that only counts), [`procfs`] (CPU time and
//! resident memory of the processes under test) and [`report`] (the Markdown table in
//! BENCHMARKS.md). It does not start or configure the relays: the script does.

#![forbid(unsafe_code)]

pub mod echo;
pub mod floor;
pub mod load;
pub mod procfs;
pub mod report;
pub mod sink;
pub mod sip;
pub mod target;
pub mod tls;

/// What can go wrong in a load tool.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket or file operation failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Loading or generating TLS material, or a handshake, failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The peer sent something that is not the benchmark's protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The peer closed the connection while a reply was expected.
    #[error("connection closed by the peer")]
    Closed,
    /// A results or report file could not be read or written as JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Something did not finish in its bounded time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl From<sip::FrameError> for Error {
    fn from(e: sip::FrameError) -> Self {
        Error::Protocol(e.to_string())
    }
}

/// Raises this process's open-file soft limit to its hard limit (10,000 idle connections
/// need more than the usual 1,024).
pub fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
