//! TLS on both legs of a tap (rustls, ring provider only): terminating the client's TLS with the
//! listener's certificate, originating TLS to the upstream, and what the trace shows of a
//! handshake (spec/opensips-tracing.md §3.4).
//!
//! Session secrets are captured only for a connection whose protocol has `trace_master_key =
//! true` (and tracing on) at its handshake: that connection gets a copy of the listener's
//! config with a capturing [`KeyLog`]; every other connection runs on the shared config, which
//! has no key log at all.

use std::borrow::Cow;
use std::io;
use std::sync::{Arc, Mutex};

use heptap_config::{ClientCert, ListenerTls, UpstreamTls};
use heptap_hep::Part;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, KeyLog, ProtocolVersion, RootCertStore,
    ServerConfig, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use super::TapError;
use super::certs::{CertNames, load_certs, load_key};

use crate::tls::{AcceptAnyServerCertificate, provider};

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
    /// TLS 1.2 or 1.3.
    pub version: Option<ProtocolVersion>,
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
            version: conn.protocol_version(),
        }
    }

    /// What a failed handshake shows: our own certificate only.
    fn failed(own: &Option<Arc<CertNames>>) -> Self {
        TlsInfo {
            own: own.clone(),
            ..TlsInfo::default()
        }
    }

    /// Appends the TLS parts in OpenSIPS's order: `client-subject`, `client-issuer` (the peer),
    /// `server-subject`, `server-issuer` (ours), then the secrets: `master-key` (TLS 1.2: the
    /// master secret in hex) and `keylog` (NSS key-log lines, TLS 1.2 and 1.3, so Wireshark can
    /// decrypt a capture).
    pub fn push_parts(&self, parts: &mut Vec<Part>) {
        if let Some(names) = self.peer.as_ref().and_then(|c| CertNames::of(c)) {
            parts.push(("client-subject".into(), names.subject.into()));
            parts.push(("client-issuer".into(), names.issuer.into()));
        }
        if let Some(own) = &self.own {
            parts.push(("server-subject".into(), own.subject.clone().into()));
            parts.push(("server-issuer".into(), own.issuer.clone().into()));
        }
        if self.secrets.is_empty() {
            return;
        }
        if let Some(master) = self.secrets.iter().find(|l| l.label == "CLIENT_RANDOM") {
            parts.push(("master-key".into(), hex(&master.secret).into()));
        }
        let mut keylog = String::new();
        for (i, l) in self.secrets.iter().enumerate() {
            if i > 0 {
                keylog.push('\n');
            }
            keylog.push_str(&l.label);
            keylog.push(' ');
            keylog.push_str(&hex(&l.client_random));
            keylog.push(' ');
            keylog.push_str(&hex(&l.secret));
        }
        parts.push((Cow::Borrowed("keylog"), keylog.into()));
    }
}

/// Lower-case hex, as key-log files and OpenSIPS's `master-key` print secrets.
fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xF)]));
    }
    s
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

/// The server side of a tls/wss listener.
#[derive(Debug)]
pub struct TlsServer {
    /// Shared by every connection that does not capture secrets.
    config: Arc<ServerConfig>,
    /// Our certificate's names, for `server-subject`/`server-issuer`.
    own: Option<Arc<CertNames>>,
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
                    roots.add(cert).map_err(tls_err)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TapError::ClientVerifier {
                            listener: name.to_owned(),
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(chain, key).map_err(tls_err)?;
        Ok(Self {
            config: Arc::new(config),
            own,
        })
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
}

impl TlsClient {
    /// Builds the client configuration of listener `name` toward `host`.
    pub fn new(name: &str, host: &str, tls: &UpstreamTls) -> Result<Self, TapError> {
        let tls_err = |source| TapError::Tls {
            listener: name.to_owned(),
            source,
        };
        let sni = tls.server_name.as_deref().unwrap_or(host);
        let sni = sni.trim_start_matches('[').trim_end_matches(']');
        let server_name =
            ServerName::try_from(sni.to_owned()).map_err(|_| TapError::InvalidServerName {
                listener: name.to_owned(),
                server_name: sni.to_owned(),
            })?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?;
        let builder = if tls.tls_verify {
            builder.with_root_certificates(root_store(name, tls)?)
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
                let chain = load_certs(name, "upstream_tls.cert_file", cert)?;
                let key = load_key(name, "upstream_tls.key_file", key)?;
                let own = chain.first().and_then(|c| CertNames::of(c)).map(Arc::new);
                (
                    builder.with_client_auth_cert(chain, key).map_err(tls_err)?,
                    own,
                )
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
        })
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

/// `client_cert = "request"`: asks for a certificate and takes any (or none), so it can be
/// traced; the handshake signature is still checked, so the client holds the certificate's key.
#[derive(Debug)]
struct AcceptAnyClientCertificate(Arc<CryptoProvider>);

impl ClientCertVerifier for AcceptAnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_become_a_hex_master_key_and_nss_key_log_lines() {
        let info = TlsInfo {
            secrets: vec![KeyLine {
                label: "CLIENT_RANDOM".into(),
                client_random: vec![0xAB; 2],
                secret: vec![0x01, 0xFF],
            }],
            ..TlsInfo::default()
        };
        let mut parts = Vec::new();
        info.push_parts(&mut parts);
        assert_eq!(
            parts,
            vec![
                (Cow::from("master-key"), Cow::from("01ff")),
                (Cow::from("keylog"), Cow::from("CLIENT_RANDOM abab 01ff")),
            ]
        );
    }

    #[test]
    fn tls13_secrets_have_no_master_key_only_key_log_lines() {
        let line = |label: &str| KeyLine {
            label: label.into(),
            client_random: vec![1],
            secret: vec![2],
        };
        let info = TlsInfo {
            secrets: vec![
                line("CLIENT_HANDSHAKE_TRAFFIC_SECRET"),
                line("SERVER_TRAFFIC_SECRET_0"),
            ],
            ..TlsInfo::default()
        };
        let mut parts = Vec::new();
        info.push_parts(&mut parts);
        assert_eq!(
            parts,
            vec![(
                Cow::from("keylog"),
                Cow::from("CLIENT_HANDSHAKE_TRAFFIC_SECRET 01 02\nSERVER_TRAFFIC_SECRET_0 01 02")
            )]
        );
    }
}
