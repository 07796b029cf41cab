//! Why a destination cannot start: bad files or settings, found before anything is sent.

use std::path::PathBuf;

use heptap_hep::Version;

use super::file::FileRefused;

/// Errors found when a destination starts (bad files or settings); never raised later.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// A certificate, key or CA file could not be read or parsed.
    #[error("hep_id {name}: cannot load {what} from {}: {reason}", path.display())]
    TlsFile {
        /// The destination.
        name: String,
        /// Which file: "ca_file", "cert_file" or "key_file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// Neither `ca_file` nor the system offered a single root certificate.
    #[error("hep_id {name}: no CA certificates: set ca_file (the system store is empty)")]
    NoRootCertificates {
        /// The destination.
        name: String,
    },
    /// A client certificate without its key or the other way round.
    #[error("hep_id {name}: mutual TLS needs both cert_file and key_file")]
    ClientAuthIncomplete {
        /// The destination.
        name: String,
    },
    /// `key_file` is not the key of `cert_file`.
    #[error(
        "hep_id {name}: key_file {} does not match cert_file {}: it is not the key of that certificate",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The destination.
        name: String,
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("hep_id {name}: TLS configuration refused: {source}")]
    Tls {
        /// The destination.
        name: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The SNI name is neither a DNS name nor an IP address.
    #[error("hep_id {name}: {server_name:?} is not a valid TLS server name")]
    InvalidServerName {
        /// The destination.
        name: String,
        /// The name that was refused.
        server_name: String,
    },
    /// HEPv1/v2 packets carry no length, so a stream cannot be cut back into packets.
    #[error("hep_id {name}: HEP version {version} can only be sent over UDP")]
    StreamNeedsHep3 {
        /// The destination.
        name: String,
        /// The configured version.
        version: Version,
    },
    /// The `file:` destination cannot be created or opened, or is refused (a symbolic link,
    /// not a regular file, someone else's, writable by others, hard-linked).
    #[error("hep_id {name}: cannot use {}: {source}", path.display())]
    File {
        /// The destination.
        name: String,
        /// The file.
        path: PathBuf,
        /// The operating system's reason, or why the file is refused.
        #[source]
        source: FileRefused,
    },
    /// A queue size of zero, or a datagram limit no packet can meet.
    #[error("hep_id {name}: {reason}")]
    InvalidLimits {
        /// The destination.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `spawn` was called outside a Tokio runtime.
    #[error("hep_id {name}: senders must be started inside the Tokio runtime")]
    NoRuntime {
        /// The destination.
        name: String,
    },
}
