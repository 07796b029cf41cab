//! Why a listener cannot be set up: its TLS material ([`TapError`]) or its socket
//! ([`ListenError`]). What goes wrong on one connection is an [`End`](super::events::End), not an
//! error of the listener.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// The private key is not the certificate's.
    #[error(
        "listener {listener}: {key_what} {} does not match {cert_what} {}: it is not the key of that certificate",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The listener's name.
        listener: String,
        /// Which key names the certificate (`tls.cert_file`, `upstream_tls.cert_file`).
        cert_what: &'static str,
        /// The certificate file.
        cert: PathBuf,
        /// Which key names the private key.
        key_what: &'static str,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the material.
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
    /// `upstream_source = "client"`, but heptap may not open a transparent socket.
    #[error("listener {listener}: upstream_source = \"client\": {source}")]
    Transparent {
        /// The listener's name.
        listener: String,
        /// Why.
        source: super::transparent::SourceError,
    },
}

/// A listener that cannot start listening.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Its TLS material does not load.
    #[error("{0}")]
    Tls(#[from] TapError),
    /// Its address cannot be bound (taken, not ours, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address in the config.
        addr: SocketAddr,
        /// The system's reason.
        source: std::io::Error,
    },
}
