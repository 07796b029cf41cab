//! What a listener is ([`ListenerSpec`], and [`Tap`] with its TLS configurations built once) and
//! what its connections share with it: the agent's [`TapContext`] and the per-listener
//! [`ListenerStats`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use heptap_config::{
    ListenerTls, ProxyProtocol, UpstreamSource, UpstreamSourceFallback, UpstreamSourcePort,
    UpstreamTls,
};
use heptap_hep::NetProto;

use super::error::TapError;
use super::live::LiveConns;
use super::sip::{SipSettings, SipStats};
use super::transparent::{self, SourceFailures};
use super::transport::{TlsClient, TlsServer};
use super::ws_relay::MessageLimits;
use crate::conn_id::ConnIds;
use crate::logging::Flood;
use crate::stats::{Counter, Stats};
use crate::tls::Digest;
use crate::tracer::Tracer;

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
    pub sip: Option<Arc<SipSettings>>,
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
    /// A PROXY header (v1 or v2) comes first from the client side (a load balancer): its
    /// addresses are the client's.
    pub accept_proxy_protocol: bool,
    /// The upstream connection's source address: heptap's or the client's (transparent).
    pub upstream_source: UpstreamSource,
    /// With a client source: its port too, where free.
    pub upstream_source_port: UpstreamSourcePort,
    /// With a client source: what a connection does when the client's address cannot be bound.
    pub upstream_source_fallback: UpstreamSourceFallback,
    /// Upper bound for the client's TLS handshake and WebSocket upgrade.
    pub handshake_timeout: Duration,
    /// `max_message_bytes`: the largest WebSocket message relayed (ws, wss); on tcp and tls,
    /// the SIP framer's bound, in [`SipSettings`].
    pub max_message_bytes: usize,
    /// `message_timeout` (ws, wss): how long a WebSocket message may take to arrive.
    pub message_timeout: Duration,
}

impl ListenerSpec {
    /// What one WebSocket message may cost on this listener, either way.
    pub fn message_limits(&self) -> MessageLimits {
        MessageLimits {
            max_bytes: self.max_message_bytes,
            timeout: self.message_timeout,
        }
    }
}

/// A listener ready to relay: its spec and the TLS configurations built from it once.
#[derive(Debug)]
pub struct Tap {
    /// The spec.
    pub spec: Arc<ListenerSpec>,
    /// Terminates the clients' TLS (tls and wss listeners).
    pub tls_server: Option<TlsServer>,
    /// Originates TLS to the upstream (tls and wss upstreams).
    pub tls_client: Option<TlsClient>,
}

impl Tap {
    /// Loads the TLS material the spec names, and checks that a transparent listener may open
    /// transparent sockets (so a missing capability refuses the listener, at start-up,
    /// check-config and reload alike, instead of every connection).
    pub fn new(spec: ListenerSpec) -> Result<Self, TapError> {
        if spec.upstream_source == UpstreamSource::Client {
            transparent::check_capability(&spec.upstream_host).map_err(|source| {
                TapError::Transparent {
                    listener: spec.name.clone(),
                    source,
                }
            })?;
        }
        let tls_server = match (
            &spec.tls,
            matches!(spec.proto, NetProto::Tls | NetProto::Wss),
        ) {
            (Some(t), true) => Some(TlsServer::new(&spec.name, t)?),
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
            Some(TlsClient::new(&spec.name, &spec.upstream_host, settings)?)
        } else {
            None
        };
        Ok(Self {
            spec: Arc::new(spec),
            tls_server,
            tls_client,
        })
    }

    /// Whether clients upgrade to WebSocket (ws and wss listeners).
    pub fn is_websocket(&self) -> bool {
        matches!(self.spec.proto, NetProto::Ws | NetProto::Wss)
    }

    /// The TLS material read for both sides: equal when a reload read the same files again.
    pub fn tls_digest(&self) -> Digest {
        let server = self.tls_server.as_ref().map(TlsServer::digest);
        let client = self.tls_client.as_ref().map(TlsClient::digest);
        server.unwrap_or_default().and(client.unwrap_or_default())
    }

    /// The subject of the certificate clients are shown (tls and wss listeners).
    pub fn subject(&self) -> Option<&str> {
        let names = self.tls_server.as_ref()?.names()?;
        Some(&names.subject)
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
    /// The relayed connections now (`list_tcp_conns`).
    pub conns: LiveConns,
}

/// Per-listener counters (`listener_<name>:…`).
#[derive(Clone, Debug)]
pub struct ListenerStats {
    /// Connections accepted.
    pub accepted: Counter,
    /// Connections relayed right now (gauge; see [`Active`]).
    pub active: Counter,
    /// Upstream connects that failed.
    pub upstream_connect_failed: Counter,
    /// Upstream connects still pending after `tcp_async_local_connect_timeout` (100 ms), each
    /// traced with a CONNECT_START before its CONNECTED: an upstream slow to accept.
    pub upstream_connect_slow: Counter,
    /// Client TLS handshakes or WebSocket upgrades that failed or timed out.
    pub handshake_failed: Counter,
    /// Bytes relayed client -> upstream (WS/WSS: message payloads).
    pub bytes_in: Counter,
    /// Bytes relayed upstream -> client (WS/WSS: message payloads).
    pub bytes_out: Counter,
    /// `accept()` errors (EMFILE...).
    pub accept_errors: Counter,
    /// WebSocket sides closed with 1009: a message over `max_message_bytes`.
    pub ws_message_too_big: Counter,
    /// WebSocket sides closed with 1008: a message unfinished after `message_timeout`.
    pub ws_message_timeout: Counter,
    /// Transparent listeners: connections whose upstream leg could not be opened from the
    /// client's address (refused or opened from heptap's, per `upstream_source_fallback`),
    /// counted and logged at a bounded rate.
    pub upstream_source_failed: Arc<SourceFailures>,
    /// Transparent listeners with `upstream_source_port = "client"`: connections opened from
    /// another port of the client's address because the client's own was in use.
    pub upstream_source_port_taken: Counter,
    /// SIP framing and tracing.
    pub sip: SipStats,
    /// The "Upstream connect failed" warning: one line per interval with a count, however
    /// many clients retry against a dead upstream.
    pub upstream_failures: Arc<Flood>,
    /// The counters every listener adds to (`tcp:`).
    pub tcp: TcpStats,
}

/// Kamailio's `tcp:` statistics (OpenSIPS 3.5 has no such group) over every listener, so
/// monitoring that polls a proxy's TCP counters works against heptap. Both legs of a relayed
/// connection count, as the proxy's own TCP stack would count them.
#[derive(Clone, Debug)]
pub struct TcpStats {
    /// Legs open now: client legs from accept, upstream legs from connect (gauge).
    pub current_opened_connections: Counter,
    /// Client connections accepted.
    pub passive_open: Counter,
    /// Upstream connections opened.
    pub active_open: Counter,
    /// Upstream connects that failed.
    pub connect_failed: Counter,
    /// Connections closed by `idle_timeout`.
    pub con_timeout: Counter,
    /// Connections a peer reset.
    pub con_reset: Counter,
}

impl TcpStats {
    /// Registers (or finds) the `tcp:` counters.
    pub fn new(stats: &Stats) -> Self {
        Self {
            current_opened_connections: stats.gauge("tcp", "current_opened_connections"),
            passive_open: stats.counter("tcp", "passive_open"),
            active_open: stats.counter("tcp", "active_open"),
            connect_failed: stats.counter("tcp", "connect_failed"),
            con_timeout: stats.counter("tcp", "con_timeout"),
            con_reset: stats.counter("tcp", "con_reset"),
        }
    }
}

/// The least time between two "Upstream connect failed" warnings of one listener.
pub const UPSTREAM_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl ListenerStats {
    /// Registers the counters of listener `name`.
    pub fn new(stats: &Stats, name: &str) -> Self {
        let g = format!("listener_{name}");
        Self {
            accepted: stats.counter(&g, "accepted"),
            active: stats.gauge(&g, "active"),
            upstream_connect_failed: stats.counter(&g, "upstream_connect_failed"),
            upstream_connect_slow: stats.counter(&g, "upstream_connect_slow"),
            handshake_failed: stats.counter(&g, "handshake_failed"),
            bytes_in: stats.counter(&g, "bytes_in"),
            bytes_out: stats.counter(&g, "bytes_out"),
            accept_errors: stats.counter(&g, "accept_errors"),
            ws_message_too_big: stats.counter(&g, "ws_message_too_big"),
            ws_message_timeout: stats.counter(&g, "ws_message_timeout"),
            upstream_source_failed: Arc::new(SourceFailures::new(
                stats.counter(&g, "upstream_source_failed"),
            )),
            upstream_source_port_taken: stats.counter(&g, "upstream_source_port_taken"),
            sip: SipStats::new(stats, &g),
            tcp: TcpStats::new(stats),
            upstream_failures: Arc::new(Flood::new(UPSTREAM_FAILURE_LOG_INTERVAL)),
        }
    }
}

/// One relayed connection in the `active` gauge: counted while this lives, so a connection
/// task that is aborted (a runtime shutting down mid-relay) is uncounted as it is dropped.
#[derive(Debug)]
pub struct Active(Counter);

impl Active {
    /// Counts one more connection in `gauge`.
    pub fn new(gauge: &Counter) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.sub(1);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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
            accept_proxy_protocol: false,
            upstream_source: UpstreamSource::Local,
            upstream_source_port: UpstreamSourcePort::Any,
            upstream_source_fallback: UpstreamSourceFallback::Refuse,
            handshake_timeout: Duration::from_secs(1),
            max_message_bytes: 65_535,
            message_timeout: Duration::from_secs(10),
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

    #[tokio::test]
    async fn an_aborted_connection_task_leaves_the_active_gauge_at_zero() {
        let stats = Stats::new();
        let gauge = ListenerStats::new(&stats, "edge").active;
        let (counted, is_counted) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let gauge = gauge.clone();
            async move {
                let _active = Active::new(&gauge);
                let _ = counted.send(());
                // A relay that never ends.
                std::future::pending::<()>().await;
            }
        });
        is_counted.await.unwrap();
        assert_eq!(gauge.get(), 1);
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(gauge.get(), 0);
    }
}
