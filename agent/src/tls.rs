//! TLS material shared by the taps (both legs) and the HEP senders: the one crypto provider
//! (ring), PEM files, the system roots, the verifier behind `tls_verify = false`, and the
//! [`Digest`] a reload compares to tell renewed material from the same files read again. Each
//! user wraps the plain error texts here into its own error type, naming its config key.

use std::hash::{DefaultHasher, Hasher as _};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The ring provider, the only one heptap builds with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS server name toward `host`, or the configured `server_name` in its place; the
/// brackets of an IPv6 literal are URI syntax, not part of the name. `Err` holds the name that
/// is not one.
pub fn server_name(configured: Option<&str>, host: &str) -> Result<ServerName<'static>, String> {
    let sni = configured.unwrap_or(host);
    let sni = sni.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(sni.to_owned()).map_err(|_| sni.to_owned())
}

/// Every certificate of a PEM file, in file order; a file without one is an error.
pub fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".to_owned());
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn pem_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| e.to_string())
}

/// What TLS material was loaded (certificates, key, CA bundle), so a reload can tell renewed
/// files from the same ones read again and say so. Not a cryptographic hash: it only answers
/// "did the files change", inside one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest(u64);

impl Digest {
    /// The digest of `parts`, in order (each part's length counts, so parts cannot run into
    /// each other).
    pub fn of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut h = DefaultHasher::new();
        for part in parts {
            h.write_usize(part.len());
            h.write(part);
        }
        Digest(h.finish())
    }

    /// The digest of `self` followed by `other` (one listener's two sides).
    pub fn and(self, other: Digest) -> Self {
        Digest::of([self.0.to_le_bytes().as_slice(), &other.0.to_le_bytes()])
    }
}

/// The digest of a certificate store: each trust anchor's name and key.
pub fn roots_digest(roots: &RootCertStore) -> Digest {
    Digest::of(roots.roots.iter().flat_map(|anchor| {
        [
            anchor.subject.as_ref(),
            anchor.subject_public_key_info.as_ref(),
        ]
    }))
}

/// Whether rustls refused a certificate and key because the key is not the certificate's
/// (`CertifiedKey::keys_match`, which rustls runs when a certificate is installed).
pub fn is_key_mismatch(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)
    )
}

/// The system's CA certificates (what `ca_file` defaults to); `who` names the user in logs.
/// May be empty: the caller decides whether that is an error.
pub fn system_roots(who: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%who, %error, "Skipping part of the system CA store");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(%who, added, ignored, "Loaded the system CA store");
    roots
}

/// `tls_verify = false`: any certificate for any name, but the handshake signatures are still
/// checked with the provider's algorithms (so the peer holds the key of what it shows).
#[derive(Debug)]
pub struct AcceptAnyServerCertificate(Arc<CryptoProvider>);

impl AcceptAnyServerCertificate {
    /// The verifier, as rustls wants it.
    pub fn new() -> Arc<Self> {
        Arc::new(Self(provider()))
    }
}

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
