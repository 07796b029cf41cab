//! Why the MI cannot be built or started; every variant names the `[mi]` key at fault.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::commands::UnknownBwlistCommand;
use crate::token::TokenError;

/// Why the MI cannot be built or started.
#[derive(Debug, thiserror::Error)]
pub enum MiError {
    /// `trace_bwlist` names an unknown command.
    #[error(transparent)]
    Bwlist(#[from] UnknownBwlistCommand),
    /// `http_listen` is not a loopback address and `http_allow_remote` is off.
    #[error(
        "mi.http_listen {0} is not a loopback address; set mi.http_allow_remote = true to expose the MI"
    )]
    RemoteHttp(SocketAddr),
    /// `http_allow_remote` is on and no token protects the MI.
    #[error(
        "mi.http_allow_remote = true needs mi.http_token_file: whoever reaches the MI can switch \
         tracing and reload the config"
    )]
    TokenRequired,
    /// `http_token_file` cannot be used.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// `http_root` is not a single path segment.
    #[error("mi.http_root {0:?} must be one URL path segment (e.g. \"mi\")")]
    HttpRoot(String),
    /// `fifo_mode` has bits beyond 0777.
    #[error("mi.fifo_mode {0:o} is not a permission mode (0000-0777)")]
    FifoMode(u32),
    /// `fifo_user` does not exist.
    #[error("mi.fifo_user {0:?}: no such user")]
    UnknownUser(String),
    /// `fifo_group` does not exist.
    #[error("mi.fifo_group {0:?}: no such group")]
    UnknownGroup(String),
    /// Something other than a FIFO sits at `fifo_name`; heptap does not delete it.
    #[error("mi.fifo_name {0}: exists and is not a FIFO; refusing to replace it")]
    FifoPathTaken(PathBuf),
    /// The FIFO could not be created or opened.
    #[error("mi.fifo_name {path}: {source}")]
    Fifo {
        /// The FIFO.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `reply_dir` is not a directory.
    #[error("mi.reply_dir {0}: not a directory")]
    ReplyDir(PathBuf),
    /// The HTTP listener could not bind.
    #[error("mi.http_listen {addr}: {source}")]
    HttpBind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The metrics listener could not bind.
    #[error("mi.metrics_listen {addr}: {source}")]
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// `[mi.upstream]` cannot be used.
    #[error("mi.upstream: {0}")]
    Upstream(String),
}
