//! What the MI needs from the `[mi]` config section, decoupled from heptap-config's structs:
//! the agent maps its config onto [`MiSettings`], so the two crates can change independently.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use heptap_filters::Bwlist;

use crate::token::BearerToken;

/// Settings of the MI servers (OpenSIPS mi_fifo / mi_http modparams plus heptap's own limits).
#[derive(Clone, Debug)]
pub struct MiSettings {
    /// The server FIFO (`fifo_name`); `None` = no FIFO server.
    pub fifo_name: Option<PathBuf>,
    /// Permission bits of the FIFO (`fifo_mode`); 0600 by default (OpenSIPS: 0660).
    pub fifo_mode: u32,
    /// Owner of the FIFO, a user name or a numeric uid (`fifo_user`).
    pub fifo_user: Option<String>,
    /// Group of the FIFO, a group name or a numeric gid (`fifo_group`).
    pub fifo_group: Option<String>,
    /// Where clients create their reply FIFOs (`reply_dir`); reply names are basenames in it.
    pub reply_dir: PathBuf,
    /// Where JSON-RPC over HTTP listens (`http_listen`); `None` = no HTTP server.
    pub http_listen: Option<SocketAddr>,
    /// Where the Prometheus metrics alone are served (`GET /metrics`), without the MI's token
    /// (`metrics_listen`); `None` = only on `http_listen`, behind its gate.
    pub metrics_listen: Option<SocketAddr>,
    /// The URL path (without the leading `/`) that answers JSON-RPC (`http_root`, default `mi`).
    pub http_root: String,
    /// Allows `http_listen` on a non-loopback address; off so the MI is not exposed by accident.
    /// Needs `http_token`.
    pub http_allow_remote: bool,
    /// Host names the HTTP MI answers to besides IP addresses and `localhost` (`http_hosts`);
    /// any other `Host` is refused (DNS rebinding), pages on these names may send requests.
    pub http_hosts: Vec<String>,
    /// The bearer token every HTTP request must carry (read from `http_token_file`).
    pub http_token: Option<BearerToken>,
    /// OpenSIPS `trace_bwlist` (`"b: ps, which"` / `"w: sip_trace"`), parsed; [`crate::Mi::new`]
    /// checks its names against the command table.
    pub trace_bwlist: Option<Bwlist>,
    /// cJSON-style tab-indented replies (`pretty_printing`); breaks one-line FIFO clients.
    pub pretty_printing: bool,
    /// Largest request accepted on either transport; larger ones get an error and are drained.
    pub max_request_size: usize,
    /// How long a request may take to arrive, from its first byte (`[mi] request_timeout`, 10 s):
    /// a FIFO request not complete by then is answered as incomplete and dropped, so a writer
    /// that died mid-request cannot wedge the stream.
    pub request_timeout: Duration,
    /// How long writing one reply into a reply FIFO may take (a client that never reads).
    pub reply_timeout: Duration,
    /// How often the FIFO server checks that its FIFO still exists and re-creates it.
    pub fifo_check_interval: Duration,
    /// The proxy's own MI, where commands heptap does not own are forwarded (`[mi.upstream]`).
    pub upstream: Option<UpstreamSettings>,
}

impl Default for MiSettings {
    fn default() -> Self {
        MiSettings {
            fifo_name: None,
            fifo_mode: 0o600,
            fifo_user: None,
            fifo_group: None,
            reply_dir: PathBuf::from("/tmp/"),
            http_listen: None,
            metrics_listen: None,
            http_root: "mi".to_owned(),
            http_allow_remote: false,
            http_hosts: Vec::new(),
            http_token: None,
            trace_bwlist: None,
            pretty_printing: false,
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            request_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(2),
            fifo_check_interval: Duration::from_secs(5),
            upstream: None,
        }
    }
}

/// 64 KiB: far above any real MI request (OpenSIPS reads 4 KiB), far below what would hurt.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 64 * 1024;

/// The proxy's MI (`[mi.upstream]`).
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// How to reach it.
    pub target: UpstreamTarget,
    /// How long a forwarded command may take before the client gets an error.
    pub timeout: Duration,
}

/// Where the proxy's MI listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// OpenSIPS mi_fifo (3.x JSON framing).
    Fifo {
        /// The proxy's MI FIFO (its `fifo_name`).
        fifo: PathBuf,
        /// The proxy's `reply_dir`, where heptap creates its reply FIFOs.
        reply_dir: PathBuf,
    },
    /// OpenSIPS mi_http: `http://host:port/path`.
    Http {
        /// The full URL, e.g. `http://127.0.0.1:8888/mi`.
        url: String,
    },
}
