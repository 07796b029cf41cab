//! Taps: listeners that relay every client connection to the upstream proxy, byte for byte, and
//! trace what happens on both legs.
//!
//! Per connection the work is: accept (a permit from the listener's connection limit is taken
//! first: backpressure at the door), the client's handshake inside the connection's task under
//! `handshake_timeout` ([`tls`] and/or the [`ws`] upgrade), connect upstream (a
//! [`proxy_protocol`] header first if asked, then TLS and/or the WebSocket upgrade), then relay
//! both ways: bytes through [`relay::pump`] for TCP and TLS, messages through [`ws::relay`] for
//! WS and WSS. Tracing happens beside the data, never in its way: events are built and
//! `offer`ed to the destinations' queues, which never block.

pub mod certs;
pub mod leg;
pub mod proxy_protocol;
pub mod relay;
pub mod sip;
pub mod stream;
pub mod tls;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use heptap_config::{ListenerTls, ProxyProtocol, UpstreamTls};
use heptap_hep::NetProto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn_id::ConnIds;
use crate::stats::{Counter, Stats};
use crate::tracer::Tracer;

/// A listener that cannot be set up (its TLS material, mostly).
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// A certificate, key or CA file cannot be read or holds nothing usable.
    #[error("listener {listener}: {what} {}: {reason}", path.display())]
    TlsFile {
        /// The listener's name.
        listener: String,
        /// Which key (`tls.cert_file`...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the material (a key that does not match the certificate...).
    #[error("listener {listener}: TLS: {source}")]
    Tls {
        /// The listener's name.
        listener: String,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// `upstream_tls.server_name` (or the upstream host) is not a valid TLS name.
    #[error("listener {listener}: '{server_name}' is not a valid TLS server name")]
    InvalidServerName {
        /// The listener's name.
        listener: String,
        /// The name.
        server_name: String,
    },
    /// Verification is on but there is no CA to verify the upstream with.
    #[error(
        "listener {listener}: no CA certificate to verify the upstream (set upstream_tls.ca_file)"
    )]
    NoRootCertificates {
        /// The listener's name.
        listener: String,
    },
    /// Only one of `upstream_tls.cert_file` and `key_file` is set.
    #[error("listener {listener}: upstream_tls needs both cert_file and key_file")]
    ClientAuthIncomplete {
        /// The listener's name.
        listener: String,
    },
    /// A tls or wss listener without `tls` (certificate and key).
    #[error("listener {listener}: a tls or wss listener needs tls.cert_file and tls.key_file")]
    MissingCertificate {
        /// The listener's name.
        listener: String,
    },
    /// `client_cert = "require"` without `client_ca_file`.
    #[error("listener {listener}: client_cert = \"require\" needs tls.client_ca_file")]
    MissingClientCa {
        /// The listener's name.
        listener: String,
    },
    /// The client CA file cannot verify anything.
    #[error("listener {listener}: tls.client_ca_file: {reason}")]
    ClientVerifier {
        /// The listener's name.
        listener: String,
        /// Why.
        reason: String,
    },
}

/// One `[[listener]]`, resolved.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    /// A label for logs and statistics (`listener[0]` when the config gives none).
    pub name: String,
    /// The protocol clients speak to us.
    pub proto: NetProto,
    /// Where we listen.
    pub listen: SocketAddr,
    /// The proxy, `host:port` (resolved at every connect).
    pub upstream: String,
    /// At most this many relayed connections at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Upper bound for the upstream connect.
    pub connect_timeout: Duration,
    /// Close a connection after this long without a byte either way.
    pub idle_timeout: Option<Duration>,
    /// SIP tracing (`sip_trace_id`); `None` when the listener names no trace id.
    pub sip: Option<Arc<sip::SipSettings>>,
    /// The protocol of the upstream leg: tcp or tls for tcp/tls listeners, ws or wss for ws/wss
    /// ones. The upstream leg's events are traced under this protocol's `[net.*]` settings.
    pub upstream_proto: NetProto,
    /// The upstream's host without brackets: the default TLS server name.
    pub upstream_host: String,
    /// The certificate clients see (tls and wss listeners).
    pub tls: Option<ListenerTls>,
    /// TLS toward the upstream; set exactly when `upstream_proto` is tls or wss.
    pub upstream_tls: Option<UpstreamTls>,
    /// PROXY protocol header sent first on every upstream connection.
    pub proxy_protocol: ProxyProtocol,
    /// Upper bound for the client's TLS handshake and WebSocket upgrade.
    pub handshake_timeout: Duration,
}

/// A listener ready to relay: its spec and the TLS configurations built from it once.
#[derive(Debug)]
pub struct Tap {
    /// The spec.
    pub spec: Arc<ListenerSpec>,
    /// Terminates the clients' TLS (tls and wss listeners).
    pub tls_server: Option<tls::TlsServer>,
    /// Originates TLS to the upstream (tls and wss upstreams).
    pub tls_client: Option<tls::TlsClient>,
}

impl Tap {
    /// Loads the TLS material the spec names.
    pub fn new(spec: ListenerSpec) -> Result<Self, TapError> {
        let tls_server = match (
            &spec.tls,
            matches!(spec.proto, NetProto::Tls | NetProto::Wss),
        ) {
            (Some(t), true) => Some(tls::TlsServer::new(&spec.name, t)?),
            (None, true) => {
                return Err(TapError::MissingCertificate {
                    listener: spec.name.clone(),
                });
            }
            _ => None,
        };
        let tls_client = if matches!(spec.upstream_proto, NetProto::Tls | NetProto::Wss) {
            let defaults = UpstreamTls::default();
            let settings = spec.upstream_tls.as_ref().unwrap_or(&defaults);
            Some(tls::TlsClient::new(
                &spec.name,
                &spec.upstream_host,
                settings,
            )?)
        } else {
            None
        };
        Ok(Self {
            spec: Arc::new(spec),
            tls_server,
            tls_client,
        })
    }
}

/// Checks that a listener's TLS material loads, without binding anything (`check-config`).
pub fn check(spec: &ListenerSpec) -> Result<(), TapError> {
    Tap::new(spec.clone()).map(|_| ())
}

/// What every connection task shares.
#[derive(Debug)]
pub struct TapContext {
    /// Decides what is traced and where.
    pub tracer: Arc<Tracer>,
    /// Connection ids.
    pub ids: ConnIds,
    /// The statistics registry.
    pub stats: Stats,
}

/// Per-listener counters (`listener_<name>:…`).
#[derive(Clone, Debug)]
pub struct ListenerStats {
    /// Connections accepted.
    pub accepted: Counter,
    /// Connections relayed right now (gauge).
    pub active: Counter,
    /// Upstream connects that failed.
    pub upstream_connect_failed: Counter,
    /// Client TLS handshakes or WebSocket upgrades that failed or timed out.
    pub handshake_failed: Counter,
    /// Bytes relayed client -> upstream (WS/WSS: message payloads).
    pub bytes_in: Counter,
    /// Bytes relayed upstream -> client (WS/WSS: message payloads).
    pub bytes_out: Counter,
    /// `accept()` errors (EMFILE...).
    pub accept_errors: Counter,
    /// SIP framing and tracing.
    pub sip: sip::SipStats,
}

impl ListenerStats {
    fn new(stats: &Stats, name: &str) -> Self {
        let g = format!("listener_{name}");
        Self {
            accepted: stats.counter(&g, "accepted"),
            active: stats.gauge(&g, "active"),
            upstream_connect_failed: stats.counter(&g, "upstream_connect_failed"),
            handshake_failed: stats.counter(&g, "handshake_failed"),
            bytes_in: stats.counter(&g, "bytes_in"),
            bytes_out: stats.counter(&g, "bytes_out"),
            accept_errors: stats.counter(&g, "accept_errors"),
            sip: sip::SipStats::new(stats, &g),
        }
    }
}

/// A bound listener, ready to serve: one listening socket per relay worker, all on the same
/// address (`SO_REUSEPORT`), so each worker accepts and relays its own connections.
#[derive(Debug)]
pub struct BoundListener {
    /// Its spec.
    pub spec: Arc<ListenerSpec>,
    /// The spec with its TLS configurations.
    tap: Arc<Tap>,
    /// The sockets, one per worker; taken out of the binding runtime so each worker registers
    /// its own.
    sockets: Vec<std::net::TcpListener>,
    /// The address actually bound (port 0 resolved).
    local: SocketAddr,
}

impl BoundListener {
    /// Loads the listener's TLS material and binds `sockets` (at least 1) listening sockets on
    /// its address (before privileges are dropped, before READY is reported). Bad TLS material
    /// is an `InvalidInput` error naming the listener and the file. Runs inside a runtime: tokio
    /// registers a socket when it starts listening (it is taken out again for the workers).
    pub async fn bind(spec: ListenerSpec, sockets: usize) -> std::io::Result<Self> {
        let tap = Tap::new(spec)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let listen = tap.spec.listen;
        let cannot = |e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}"))
        };
        // SO_REUSEPORT would let this share a port that another process of the same user (a
        // second heptap) already listens on, and silently take half its connections: a taken
        // port is refused as a plain bind would refuse it.
        if listen.port() != 0 {
            plain_bind(listen).map_err(cannot)?;
        }
        // The first socket resolves port 0; the others join it on the port it got.
        let first = reuseport_listener(listen).map_err(cannot)?;
        let local = first.local_addr()?;
        let mut all = vec![first];
        for _ in 1..sockets.max(1) {
            all.push(reuseport_listener(local).map_err(cannot)?);
        }
        Ok(Self {
            spec: tap.spec.clone(),
            tap: Arc::new(tap),
            sockets: all,
            local,
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Starts one accept loop per socket, each on its worker in `workers` (socket i on worker
    /// i), until `stop` is cancelled. Every connection runs in `tracker` so a drain can wait for
    /// them, and is told to stop through `kill`.
    pub fn serve(
        self,
        ctx: &Arc<TapContext>,
        tracker: &TaskTracker,
        stop: &CancellationToken,
        kill: &CancellationToken,
        workers: &[tokio::runtime::Handle],
    ) {
        let spec = self.spec;
        let stats = ListenerStats::new(&ctx.stats, &spec.name);
        let permits = Arc::new(Semaphore::new(spec.max_connections.max(1)));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(self.sockets.len()));
        tracing::info!(listener = %spec.name, proto = spec.proto.name(), listen = %self.local, upstream = %spec.upstream, "Listening");
        for (index, (socket, worker)) in self.sockets.into_iter().zip(workers).enumerate() {
            let accept = Accept {
                spec: spec.clone(),
                tap: self.tap.clone(),
                ctx: ctx.clone(),
                stats: stats.clone(),
                permits: permits.clone(),
                running: running.clone(),
                bound: self.local,
                tracker: tracker.clone(),
                stop: stop.clone(),
                kill: kill.clone(),
            };
            worker.spawn(tracker.track_future(accept.run(socket, index)));
        }
    }
}

/// Binds (and closes) a socket on `addr` without `SO_REUSEPORT`: fails with `AddrInUse` if
/// anything listens there.
fn plain_bind(addr: SocketAddr) -> std::io::Result<()> {
    tcp_socket(addr)?.bind(addr)
}

/// A TCP socket of `addr`'s family with `SO_REUSEADDR` (restarts bind over TIME_WAIT).
fn tcp_socket(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

/// A listening socket bound with `SO_REUSEADDR` and `SO_REUSEPORT`, non-blocking, backlog 1024
/// (what `TcpListener::bind` uses), not yet registered with any runtime.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = tcp_socket(addr)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// One worker's accept loop over its socket of a listener.
struct Accept {
    spec: Arc<ListenerSpec>,
    tap: Arc<Tap>,
    ctx: Arc<TapContext>,
    stats: ListenerStats,
    /// The listener's connection limit, shared by its workers.
    permits: Arc<Semaphore>,
    /// The listener's accept loops still running; the last to stop says so.
    running: Arc<std::sync::atomic::AtomicUsize>,
    bound: SocketAddr,
    tracker: TaskTracker,
    stop: CancellationToken,
    kill: CancellationToken,
}

impl Accept {
    /// Accepts on `socket` until told to stop; the listener's last loop to stop logs it.
    async fn run(self, socket: std::net::TcpListener, index: usize) {
        let running = self.running.clone();
        let name = self.spec.name.clone();
        self.accept_all(socket, index).await;
        if running.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            tracing::info!(listener = %name, "Stopped accepting");
        }
    }

    async fn accept_all(self, socket: std::net::TcpListener, index: usize) {
        let Accept {
            spec,
            tap,
            ctx,
            stats,
            permits,
            running: _,
            bound,
            tracker,
            stop,
            kill,
        } = self;
        let listener = match TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                stats.accept_errors.inc();
                tracing::error!(listener = %spec.name, worker = index, error = %e, "Cannot accept on this worker");
                return;
            }
        };
        loop {
            // Biased: once told to stop, a connection that is ready too is not taken.
            let accepted = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    // The slot is taken after the accept: a worker waiting for a connection on
                    // its own socket must not hold a slot that another worker's connection
                    // needs. At the limit this connection waits here untouched, as the next
                    // ones wait in the kernel's backlog.
                    let permit = tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        p = permits.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                    };
                    stats.accepted.inc();
                    // A listener bound to one address accepts on that address: no
                    // getsockname per connection (a wildcard one needs to ask).
                    let local = if bound.ip().is_unspecified() {
                        stream.local_addr().unwrap_or(bound)
                    } else {
                        bound
                    };
                    let ctx = ctx.clone();
                    let tap = tap.clone();
                    let stats = stats.clone();
                    let kill = kill.clone();
                    // On this worker's runtime: the connection never leaves its thread.
                    tracker.spawn(async move {
                        stats.active.inc();
                        relay::connection(stream, peer, local, &tap, &ctx, &stats, kill).await;
                        stats.active.sub(1);
                        drop(permit);
                    });
                }
                Err(e) => {
                    stats.accept_errors.inc();
                    // EMFILE/ENFILE/ENOBUFS: the condition lasts a while; back off instead of
                    // spinning on a listener that stays readable.
                    tracing::warn!(listener = %spec.name, error = %e, "Accept failed; backing off");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(proto: NetProto, tls: Option<ListenerTls>) -> ListenerSpec {
        ListenerSpec {
            name: "edge".into(),
            proto,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: "127.0.0.1:5060".into(),
            max_connections: 1,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: None,
            sip: None,
            upstream_proto: NetProto::Tcp,
            upstream_host: "127.0.0.1".into(),
            tls,
            upstream_tls: None,
            proxy_protocol: ProxyProtocol::None,
            handshake_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn unreadable_tls_material_is_refused_naming_the_listener_and_the_file() {
        let tls = ListenerTls {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            client_ca_file: None,
            client_cert: heptap_config::ClientCert::None,
        };
        let e = check(&spec(NetProto::Tls, Some(tls)))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("listener edge: tls.cert_file /nonexistent/cert.pem: "),
            "{e}"
        );
    }

    #[test]
    fn a_tls_listener_without_a_certificate_is_refused() {
        let e = check(&spec(NetProto::Wss, None)).unwrap_err().to_string();
        assert_eq!(
            e,
            "listener edge: a tls or wss listener needs tls.cert_file and tls.key_file"
        );
        assert!(check(&spec(NetProto::Tcp, None)).is_ok());
    }
}
