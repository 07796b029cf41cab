//! heptap-mi: heptap's management interface, compatible with OpenSIPS's MI.
//!
//! It owns the JSON-RPC core with OpenSIPS 3.x semantics (`jsonrpc`: case-insensitive members,
//! recipes, OpenSIPS's error codes and data strings, compact replies), the command table with
//! 3.x names and 4.x aliases (`commands`) and handlers (`handlers`), the 2.x text MI (`text`),
//! the FIFO server speaking both framings (`fifo`), JSON-RPC over HTTP (`http`, served by
//! hyper-util behind its gate and lock-out limits), the HTTP bearer token (`token`), MI tracing
//! (`trace`: proto type 87, `MICORR` ids, `trace_bwlist`), forwarding to the proxy's MI
//! (`upstream`), the clients behind `heptap fifo` / `heptap mi` (`client`), and what a new
//! heptap process takes over at a hand-over (`handover`: the HTTP socket, the FIFO's inode).
//!
//! It does not own heptap's state: every command reads or switches it through the [`Control`]
//! trait, which the agent implements. It does not read config files ([`MiSettings`] is filled
//! by the agent) and does not send HEP (trace messages go to [`Control::trace_mi`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
mod commands;
pub mod control;
mod core;
mod dyntrace;
mod error;
mod fifo;
mod handlers;
mod handover;
mod http;
pub mod jsonrpc;
pub mod settings;
pub mod text;
pub mod token;
pub mod trace;
mod upstream;

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use client::{
    ClientError, Reply, check_heptap_fifo, check_heptap_http, cli_params, fifo_call,
    fifo_call_text, http_call, http_call_with_token, parse_reply,
};
pub use commands::UnknownBwlistCommand;
pub use control::{
    ConnLeg, ConnState, Control, DestinationInfo, DynamicTraceInfo, LogLevel, MiOutcome,
    ProcessInfo, ReloadItem, ReloadRefused, ReloadReport, Statistic, TcpConnInfo, TcpConnList,
    TraceIdInfo, TraceStart, TraceStartError, UnknownTraceId,
};
pub use error::MiError;
pub use handlers::MAX_LISTED_CONNECTIONS;
pub use handover::{FifoId, Handover, Inherited};
pub use jsonrpc::{Id, Params, Request, RpcError};
pub use settings::{MiSettings, UpstreamSettings, UpstreamTarget};
pub use text::{TextParam, TextReply};
pub use token::{BearerToken, TokenError};
pub use trace::{Backend, Origin};

/// The management interface: built once from settings and a [`Control`], then started.
#[derive(Clone)]
pub struct Mi {
    /// Shared by every transport task.
    core: Arc<core::Core>,
    /// The FIFO's owner, resolved at build time so bad names fail early.
    owner: fifo::Owner,
}

impl std::fmt::Debug for Mi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mi")
            .field("fifo_name", &self.core.settings.fifo_name)
            .field("http_listen", &self.core.settings.http_listen)
            .finish_non_exhaustive()
    }
}

impl Mi {
    /// Validates the settings (bwlist names, loopback rule, owner names, upstream URL).
    pub fn new(mut settings: MiSettings, control: Arc<dyn Control>) -> Result<Mi, MiError> {
        let upstream = settings.upstream.as_ref().map(upstream::Upstream::new);
        let traced = settings
            .trace_bwlist
            .as_ref()
            .map(|list| commands::TracedCommands::resolve(list, upstream.is_some()))
            .transpose()?;
        if let Some(addr) = settings.http_listen
            && !addr.ip().is_loopback()
            && !settings.http_allow_remote
        {
            return Err(MiError::RemoteHttp(addr));
        }
        if settings.http_allow_remote
            && settings.http_listen.is_some()
            && settings.http_token.is_none()
        {
            return Err(MiError::TokenRequired);
        }
        let root = settings.http_root.trim_matches('/').to_owned();
        if root
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c.is_control())
        {
            return Err(MiError::HttpRoot(settings.http_root.clone()));
        }
        settings.http_root = root;
        if settings.fifo_mode > 0o777 {
            return Err(MiError::FifoMode(settings.fifo_mode));
        }
        let owner = fifo::Owner::resolve(&settings)?;
        match settings.upstream.as_ref().map(|u| &u.target) {
            Some(UpstreamTarget::Http { url }) => {
                client::check_url(url).map_err(|e| MiError::Upstream(e.to_string()))?;
            }
            Some(UpstreamTarget::Fifo { fifo, .. })
                if Some(fifo) == settings.fifo_name.as_ref() =>
            {
                return Err(MiError::Upstream(
                    "the upstream FIFO is heptap's own fifo_name".to_owned(),
                ));
            }
            _ => {}
        }
        let style = if settings.pretty_printing {
            jsonrpc::Style::Pretty
        } else {
            jsonrpc::Style::Compact
        };
        Ok(Mi {
            core: Arc::new(core::Core {
                settings,
                control,
                traced,
                started: SystemTime::now(),
                upstream,
                tracer: trace::MiTracer::new(),
                style,
            }),
            owner,
        })
    }

    /// Handles one JSON-RPC request body as the given transport would (tracing included);
    /// `None` = no reply (a notification).
    pub async fn handle_jsonrpc(&self, body: &[u8], origin: &Origin) -> Option<String> {
        self.core.handle_jsonrpc(body, origin).await
    }

    /// Handles one 2.x text request (`:command:reply\nparams\n\n` without the framing).
    pub async fn handle_text(&self, command: &str, params: &[TextParam]) -> TextReply {
        self.core.handle_text(command, params).await
    }

    /// Creates the FIFO and binds the HTTP listener (errors come back here), then serves both
    /// in background tasks until `shutdown` is cancelled.
    pub async fn start(self, shutdown: CancellationToken) -> Result<MiRunning, MiError> {
        self.start_with(shutdown, Inherited::default()).await
    }

    /// [`Mi::start`], serving the FIFO and HTTP socket of the previous heptap process
    /// (`inherited`, at a hand-over) where they still fit the settings.
    pub async fn start_with(
        self,
        shutdown: CancellationToken,
        inherited: Inherited,
    ) -> Result<MiRunning, MiError> {
        let settings = &self.core.settings;
        let recheck = Arc::new(Notify::new());
        let fifo_state = Arc::new(handover::FifoState::default());
        let mut tasks = Vec::new();
        let fifo_server = match &settings.fifo_name {
            Some(path) => {
                if !settings.reply_dir.is_dir() {
                    return Err(MiError::ReplyDir(settings.reply_dir.clone()));
                }
                Some(fifo::FifoServer::create(
                    Arc::clone(&self.core),
                    path.clone(),
                    settings.fifo_mode,
                    self.owner,
                    inherited.fifo,
                    Arc::clone(&fifo_state),
                )?)
            }
            None => None,
        };
        let listener = match settings.http_listen {
            Some(addr) => match inherited.http.and_then(|l| http::take_over(l, addr)) {
                Some(taken) => Some(taken),
                None => Some(http::bind(addr).await?),
            },
            None => None,
        };
        let http_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        // Kept for a hand-over: the next process gets a duplicate of this socket.
        let http_socket = match &listener {
            Some(l) => {
                Some(
                    l.as_fd()
                        .try_clone_to_owned()
                        .map_err(|source| MiError::HttpBind {
                            addr: http_addr.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
                            source,
                        })?,
                )
            }
            None => None,
        };
        let handover = inherited.handover;
        // A hand-over's new process binds while the old one still serves: the address may be
        // taken until the old one stops its MI, and is bound then.
        let (metrics, metrics_later) = match settings.metrics_listen {
            None => (None, None),
            Some(addr) => match http::metrics::bind(addr) {
                Ok(l) => (Some(l), None),
                Err(e) if handover && http::metrics::in_use(&e) => (None, Some(addr)),
                Err(e) => return Err(e),
            },
        };
        let metrics_addr = metrics
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .or(metrics_later);
        if let Some(server) = fifo_server {
            tasks.push(tokio::spawn(
                server.run(shutdown.clone(), Arc::clone(&recheck)),
            ));
        }
        if let Some(listener) = listener {
            if let Some(addr) = http_addr {
                tracing::info!(http.addr = %addr, root = %settings.http_root, "MI HTTP listening");
                if !addr.ip().is_loopback() {
                    tracing::warn!(
                        http.addr = %addr,
                        "The MI listens beyond loopback (http_allow_remote = true): its bearer token is all that stands between the network and tracing and reload, and plain HTTP carries it in clear; reach it through a TLS proxy or an SSH tunnel"
                    );
                }
            }
            tasks.push(tokio::spawn(http::serve(
                Arc::clone(&self.core),
                listener,
                shutdown.clone(),
            )));
        }
        if let Some(listener) = metrics {
            if let Some(addr) = metrics_addr {
                tracing::info!(metrics.addr = %addr, "Metrics listening (GET /metrics, no token)");
            }
            tasks.push(tokio::spawn(http::metrics::serve(
                Arc::clone(&self.core.control),
                listener,
                shutdown.clone(),
            )));
        }
        if let Some(addr) = metrics_later {
            tasks.push(tokio::spawn(http::metrics::serve_when_free(
                Arc::clone(&self.core.control),
                addr,
                shutdown.clone(),
            )));
        }
        Ok(MiRunning {
            fifo_path: settings.fifo_name.clone(),
            http_addr,
            metrics_addr,
            recheck,
            tasks,
            http_socket: Mutex::new(http_socket),
            fifo_state,
        })
    }
}

/// The servers of a started [`Mi`].
#[derive(Debug)]
pub struct MiRunning {
    /// The FIFO being served, if any.
    pub fifo_path: Option<PathBuf>,
    /// Where HTTP listens (the real port when `http_listen` had port 0).
    pub http_addr: Option<SocketAddr>,
    /// Where `metrics_listen` listens (the real port when it had port 0).
    pub metrics_addr: Option<SocketAddr>,
    /// Wakes the FIFO server to check its FIFO now.
    recheck: Arc<Notify>,
    /// The server tasks, awaited by `join`.
    tasks: Vec<JoinHandle<()>>,
    /// A duplicate of the HTTP listening socket, for a hand-over; dropped once handed over.
    http_socket: Mutex<Option<OwnedFd>>,
    /// Which FIFO is served, for a hand-over.
    fifo_state: Arc<handover::FifoState>,
}

impl MiRunning {
    /// Makes the FIFO server check its FIFO now and re-create it if it was deleted (SIGHUP).
    pub fn recheck_fifo(&self) {
        self.recheck.notify_one();
    }

    /// What the next heptap process takes over: a duplicate of the HTTP listening socket, and
    /// the FIFO being served.
    pub fn handover(&self) -> std::io::Result<Handover> {
        let http = self
            .http_socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(OwnedFd::try_clone)
            .transpose()?;
        let fifo = self.fifo_path.clone().zip(self.fifo_state.get());
        Ok(Handover { http, fifo })
    }

    /// The next process serves the MI now: once stopped, this one leaves the FIFO in place and
    /// keeps no copy of the HTTP socket (it stays open as long as the next process has it).
    pub fn handed_over(&self) {
        self.fifo_state.hand_over();
        self.http_socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Waits until the servers have stopped (after the shutdown token was cancelled); the FIFO
    /// is removed by then, unless it was handed over.
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Entry points for the fuzz targets in `mi/fuzz`: the FIFO framing is private, and a fuzz
/// target can only reach public items. Not an API; it may change at any time.
#[doc(hidden)]
pub mod fuzzing {
    use crate::fifo::frame::{FrameParser, MAX_HEADER};

    /// What the FIFO server's parser made of a stream.
    #[derive(Debug)]
    pub struct FifoRun {
        /// Each request cut from the stream (its debug text), then what giving up the rest at
        /// the request timeout returned.
        pub frames: Vec<String>,
        /// The most bytes the parser held after any read once its requests were taken out.
        pub most_held: usize,
        /// What it may hold at most: `max_request_size` or the longest header, whichever is
        /// larger.
        pub bound: usize,
    }

    /// Feeds `reads` to the FIFO parser as the server does (taking every complete request
    /// after each read), then gives up what is left as the request timeout would (and takes
    /// the requests it resumes at).
    pub fn fifo_frames(max_request_size: usize, reads: &[&[u8]]) -> FifoRun {
        let mut parser = FrameParser::new(max_request_size);
        let mut frames = Vec::new();
        let mut most_held = 0;
        for read in reads {
            parser.push(read);
            while let Some(frame) = parser.next_frame() {
                frames.push(format!("{frame:?}"));
            }
            most_held = most_held.max(parser.buffered());
        }
        while parser.has_partial() {
            if let Some(frame) = parser.expire() {
                frames.push(format!("{frame:?}"));
            }
            while let Some(frame) = parser.next_frame() {
                frames.push(format!("{frame:?}"));
            }
        }
        FifoRun {
            frames,
            most_held,
            bound: max_request_size.max(MAX_HEADER),
        }
    }
}
