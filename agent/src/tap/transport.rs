//! The transport under a tap's two legs: plain TCP or TLS over TCP, server side (the client's
//! connection) and client side (ours to the upstream), behind one [`Stream`] type so the layers
//! above are written once. TLS is rustls with the ring provider only.
//!
//! Session secrets are captured only for a connection whose protocol has `trace_master_key =
//! true` (and tracing on) at its handshake: that connection gets a copy of the listener's
//! config with a capturing [`KeyLog`]; every other connection runs on the shared config, which
//! has no key log at all. What the trace shows of a handshake is gathered in [`TlsInfo`]
//! (spec/opensips-tracing.md §3.4); the parts are built from it with the other events.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use heptap_config::{ClientCert, ListenerTls, UpstreamTls};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, KeyLog, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use super::certs::{CertNames, load_certs, load_key};
use super::client_certs::{AcceptAnyClientCertificate, RequireClientCertificate};
use super::error::TapError;
use crate::tls::{AcceptAnyServerCertificate, Digest, is_key_mismatch, provider, roots_digest};

/// A leg's connection.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS, either side of it (boxed: a TLS session is large and most legs are plain).
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    /// The socket under it (for linger and addresses).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// [`reset_on_drop`] for the socket under it.
    pub fn reset_on_drop(&self) {
        reset_on_drop(self.tcp());
    }
}

/// Makes `tcp` close with a reset instead of a FIN when dropped, so the peer sees what it would
/// have seen from the other side without heptap in the middle.
pub fn reset_on_drop(tcp: &TcpStream) {
    let _ = tcp.set_zero_linger();
}

impl From<tokio_rustls::server::TlsStream<TcpStream>> for Stream {
    fn from(s: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(s)))
    }
}

impl From<tokio_rustls::client::TlsStream<TcpStream>> for Stream {
    fn from(s: tokio_rustls::client::TlsStream<TcpStream>) -> Self {
        Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s)))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a TCP connect to one address failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectTcpError {
    /// No socket could be made (out of descriptors...).
    #[error("{0}")]
    Socket(io::Error),
    /// The connect failed (refused, unreachable...).
    #[error("{addr}: {source}")]
    Failed {
        /// The address tried.
        addr: SocketAddr,
        /// The system's reason.
        source: io::Error,
    },
    /// No answer within the connect timeout.
    #[error("{addr}: connect timed out after {after:?}")]
    TimedOut {
        /// The address tried.
        addr: SocketAddr,
        /// The timeout.
        after: Duration,
    },
}

/// A socket of `addr`'s family, to connect to `addr`, and the unspecified local address it
/// has until it connects. It is not bound before the connect: a port taken by `bind` cannot be
/// shared between destinations and stays held through TIME_WAIT, which ran the ephemeral range
/// dry at a few thousand connections per second.
pub fn tcp_socket_for(addr: SocketAddr) -> Result<(TcpSocket, SocketAddr), ConnectTcpError> {
    let (socket, any) = if addr.is_ipv4() {
        (TcpSocket::new_v4(), SocketAddr::from(([0, 0, 0, 0], 0)))
    } else {
        (TcpSocket::new_v6(), SocketAddr::from(([0u16; 8], 0)))
    };
    socket.map(|s| (s, any)).map_err(ConnectTcpError::Socket)
}

/// Connects `socket` to `addr` within `timeout`, with Nagle off (SIP messages are small and
/// each is written whole).
pub async fn connect_tcp(
    socket: TcpSocket,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ConnectTcpError> {
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(source)) => Err(ConnectTcpError::Failed { addr, source }),
        Err(_) => Err(ConnectTcpError::TimedOut {
            addr,
            after: timeout,
        }),
    }
}

/// What the trace shows of one leg's handshake.
#[derive(Debug, Default)]
pub struct TlsInfo {
    /// The peer's certificate (`client-subject`/`client-issuer`; OpenSIPS calls the peer
    /// "client" on both legs).
    pub peer: Option<CertificateDer<'static>>,
    /// Our own certificate's names (`server-subject`/`server-issuer`), when we presented one.
    pub own: Option<Arc<CertNames>>,
    /// The session secrets, captured only when `trace_master_key` asked for them.
    pub secrets: Vec<KeyLine>,
}

impl TlsInfo {
    /// What a finished handshake shows, on either leg: the peer's certificate, our names, the
    /// captured secrets (when a key log was installed) and the version.
    fn of(
        conn: &rustls::CommonState,
        own: &Option<Arc<CertNames>>,
        keys: Option<Arc<Capture>>,
    ) -> Self {
        TlsInfo {
            peer: conn.peer_certificates().and_then(|c| c.first()).cloned(),
            own: own.clone(),
            secrets: keys.map(|k| k.take()).unwrap_or_default(),
        }
    }

    /// What a failed handshake shows: our own certificate only.
    fn failed(own: &Option<Arc<CertNames>>) -> Self {
        TlsInfo {
            own: own.clone(),
            ..TlsInfo::default()
        }
    }
}

/// One NSS key-log line: `LABEL <client random> <secret>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLine {
    /// `CLIENT_RANDOM` (TLS 1.2), `CLIENT_HANDSHAKE_TRAFFIC_SECRET`, ... (TLS 1.3).
    pub label: String,
    /// The handshake's client random, which names the session in a capture.
    pub client_random: Vec<u8>,
    /// The secret.
    pub secret: Vec<u8>,
}

/// A key log that keeps the lines of one connection (installed only on that connection's
/// config copy).
#[derive(Debug, Default)]
struct Capture(Mutex<Vec<KeyLine>>);

impl KeyLog for Capture {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(KeyLine {
                label: label.to_owned(),
                client_random: client_random.to_vec(),
                secret: secret.to_vec(),
            });
        }
    }

    fn will_log(&self, _label: &str) -> bool {
        true
    }
}

impl Capture {
    fn take(&self) -> Vec<KeyLine> {
        self.0
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}

/// The server side of a tls/wss listener: what its files held when they were read. A reload
/// builds a new one (the listener's next handshakes use it); connections keep theirs.
#[derive(Debug)]
pub struct TlsServer {
    /// Shared by every connection that does not capture secrets.
    config: Arc<ServerConfig>,
    /// Our certificate's names, for `server-subject`/`server-issuer`.
    own: Option<Arc<CertNames>>,
    /// The certificates, key and client CA read, to tell renewed files from the same ones.
    digest: Digest,
}

impl TlsServer {
    /// Loads the certificate, key and client CA of listener `name`.
    pub fn new(name: &str, tls: &ListenerTls) -> Result<Self, TapError> {
        let tls_err = |source| TapError::Tls {
            listener: name.to_owned(),
            source,
        };
        let chain = load_certs(name, "tls.cert_file", &tls.cert_file)?;
        let key = load_key(name, "tls.key_file", &tls.key_file)?;
        let own = chain.first().and_then(|c| CertNames::of(c)).map(Arc::new);
        let mut material: Vec<Vec<u8>> = chain.iter().map(|c| c.to_vec()).collect();
        material.push(key.secret_der().to_vec());
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?;
        let builder = match (tls.client_cert, &tls.client_ca_file) {
            (ClientCert::None, _) => builder.with_no_client_auth(),
            (ClientCert::Request, _) => {
                builder.with_client_cert_verifier(Arc::new(AcceptAnyClientCertificate(provider())))
            }
            (ClientCert::Require, ca) => {
                let Some(ca) = ca else {
                    return Err(TapError::MissingClientCa {
                        listener: name.to_owned(),
                    });
                };
                let mut roots = RootCertStore::empty();
                for cert in load_certs(name, "tls.client_ca_file", ca)? {
                    material.push(cert.to_vec());
                    roots.add(cert).map_err(tls_err)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TapError::ClientVerifier {
                            listener: name.to_owned(),
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(Arc::new(RequireClientCertificate(verifier)))
            }
        };
        let config = builder.with_single_cert(chain, key).map_err(|e| {
            if is_key_mismatch(&e) {
                TapError::KeyMismatch {
                    listener: name.to_owned(),
                    cert_what: "tls.cert_file",
                    cert: tls.cert_file.clone(),
                    key_what: "tls.key_file",
                    key: tls.key_file.clone(),
                }
            } else {
                tls_err(e)
            }
        })?;
        Ok(Self {
            config: Arc::new(config),
            own,
            digest: Digest::of(material.iter().map(Vec::as_slice)),
        })
    }

    /// What was read: compares equal for the same certificate, key and client CA.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Our certificate's names (its subject is what a reload reports).
    pub fn names(&self) -> Option<&CertNames> {
        self.own.as_deref()
    }

    /// Runs the server handshake on an accepted connection. With `capture`, the session
    /// secrets are kept for the trace.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        capture: bool,
    ) -> io::Result<(server::TlsStream<TcpStream>, TlsInfo)> {
        let (acceptor, keys) = if capture {
            let keys = Arc::new(Capture::default());
            let mut config = ServerConfig::clone(&self.config);
            config.key_log = keys.clone();
            (TlsAcceptor::from(Arc::new(config)), Some(keys))
        } else {
            (TlsAcceptor::from(self.config.clone()), None)
        };
        let stream = acceptor.accept(tcp).await?;
        let info = TlsInfo::of(stream.get_ref().1, &self.own, keys);
        Ok((stream, info))
    }

    /// What the trace shows when the handshake failed: our own certificate only.
    pub fn failed_info(&self) -> TlsInfo {
        TlsInfo::failed(&self.own)
    }
}

/// The client side toward a tls/wss upstream.
#[derive(Debug)]
pub struct TlsClient {
    /// Shared by every connection that does not capture secrets.
    config: Arc<ClientConfig>,
    /// SNI and the name the upstream's certificate must carry.
    server_name: ServerName<'static>,
    /// Our client certificate's names, when we present one.
    own: Option<Arc<CertNames>>,
    /// The CA certificates, client certificate and key read.
    digest: Digest,
}

impl TlsClient {
    /// Builds the client configuration of listener `name` toward `host`.
    pub fn new(name: &str, host: &str, tls: &UpstreamTls) -> Result<Self, TapError> {
        let tls_err = |source| TapError::Tls {
            listener: name.to_owned(),
            source,
        };
        let server_name =
            crate::tls::server_name(tls.server_name.as_deref(), host).map_err(|server_name| {
                TapError::InvalidServerName {
                    listener: name.to_owned(),
                    server_name,
                }
            })?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?;
        let mut digest = Digest::default();
        let builder = if tls.tls_verify {
            let roots = root_store(name, tls)?;
            digest = roots_digest(&roots);
            let verifier = crate::tls::Explaining::new(roots, crate::tls::TlsPeer::Upstream)
                .map_err(|e| tls_err(rustls::Error::General(e)))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
        } else {
            tracing::warn!(
                listener = name,
                "Upstream TLS verification is off (upstream_tls.tls_verify = false): the upstream is not authenticated"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(AcceptAnyServerCertificate::new())
        };
        let (config, own) = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                let key_file = key;
                let chain = load_certs(name, "upstream_tls.cert_file", cert)?;
                let key = load_key(name, "upstream_tls.key_file", key_file)?;
                let own = chain.first().and_then(|c| CertNames::of(c)).map(Arc::new);
                digest = digest.and(Digest::of(
                    chain.iter().map(|c| c.as_ref()).chain([key.secret_der()]),
                ));
                let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
                    if is_key_mismatch(&e) {
                        TapError::KeyMismatch {
                            listener: name.to_owned(),
                            cert_what: "upstream_tls.cert_file",
                            cert: cert.clone(),
                            key_what: "upstream_tls.key_file",
                            key: key_file.clone(),
                        }
                    } else {
                        tls_err(e)
                    }
                })?;
                (config, own)
            }
            (None, None) => (builder.with_no_client_auth(), None),
            _ => {
                return Err(TapError::ClientAuthIncomplete {
                    listener: name.to_owned(),
                });
            }
        };
        Ok(Self {
            config: Arc::new(config),
            server_name,
            own,
            digest,
        })
    }

    /// What was read: compares equal for the same CA, client certificate and key.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Runs the client handshake on a connected socket. With `capture`, the session secrets
    /// are kept for the trace.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        capture: bool,
    ) -> io::Result<(client::TlsStream<TcpStream>, TlsInfo)> {
        let (connector, keys) = if capture {
            let keys = Arc::new(Capture::default());
            let mut config = ClientConfig::clone(&self.config);
            config.key_log = keys.clone();
            (TlsConnector::from(Arc::new(config)), Some(keys))
        } else {
            (TlsConnector::from(self.config.clone()), None)
        };
        let stream = connector.connect(self.server_name.clone(), tcp).await?;
        let info = TlsInfo::of(stream.get_ref().1, &self.own, keys);
        Ok((stream, info))
    }

    /// What the trace shows when the handshake failed: our own certificate only.
    pub fn failed_info(&self) -> TlsInfo {
        TlsInfo::failed(&self.own)
    }
}

fn root_store(name: &str, tls: &UpstreamTls) -> Result<RootCertStore, TapError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in load_certs(name, "upstream_tls.ca_file", path)? {
                roots.add(cert).map_err(|source| TapError::Tls {
                    listener: name.to_owned(),
                    source,
                })?;
            }
        }
        None => roots = crate::tls::system_roots(&format!("listener {name}")),
    }
    if roots.is_empty() {
        return Err(TapError::NoRootCertificates {
            listener: name.to_owned(),
        });
    }
    Ok(roots)
}
