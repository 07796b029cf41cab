//! TLS material shared by the taps (both legs) and the HEP senders: the one crypto provider
//! (ring), PEM files, the system roots, the verifier behind `tls_verify = false`, and the
//! [`Digest`] a reload compares to tell renewed material from the same files read again. Each
//! user wraps the plain error texts here into its own error type, naming its config key.

use std::hash::{DefaultHasher, Hasher as _};
use std::path::Path;
use std::sync::Arc;

use heptap_config::Sha256Fingerprint;
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

/// Whose certificate a client-side verifier checks: the words and the config keys of what it
/// says when it refuses one.
#[derive(Debug, Clone)]
pub enum TlsPeer {
    /// A HEP collector, by its hep_id name.
    Collector(String),
    /// A listener's tls/wss upstream (the proxy).
    Upstream,
}

impl TlsPeer {
    fn who(&self) -> &'static str {
        match self {
            TlsPeer::Collector(_) => "the collector",
            TlsPeer::Upstream => "the upstream",
        }
    }

    /// Where its keys are (`hep.ids.homer.`, `upstream_tls.`).
    fn keys(&self) -> String {
        match self {
            TlsPeer::Collector(name) => format!("hep.ids.{name}."),
            TlsPeer::Upstream => "upstream_tls.".to_owned(),
        }
    }

    /// How to trust a self-signed certificate `fp` on this side.
    fn self_signed(&self, fp: &Sha256Fingerprint) -> String {
        match self {
            TlsPeer::Collector(name) => format!(
                "trust it by its fingerprint: hep.ids.{name}.tls_pin_sha256 = \"{fp}\" (in \
                 place of ca_file)"
            ),
            TlsPeer::Upstream => format!(
                "for a proxy on loopback, upstream_tls.tls_verify = false accepts it (its \
                 SHA-256 is {fp})"
            ),
        }
    }
}

/// The SHA-256 fingerprint of a certificate, as `openssl x509 -fingerprint -sha256` shows it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> Sha256Fingerprint {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    Sha256Fingerprint(out)
}

/// A certificate refused, said in plain words with what to do; carried inside rustls's error
/// (as its `Other` reason) up to the log line and the MI.
#[derive(Debug)]
pub struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

fn refused(text: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(Refusal(text)),
    )))
}

/// What rustls's refusal of `cert` means and what to do, when it is one operators meet (a CA
/// certificate or a v1 certificate shown by a server, an unknown CA, another name, expired).
fn advice(
    e: &rustls::Error,
    cert: &CertificateDer<'_>,
    name: &ServerName<'_>,
    peer: &TlsPeer,
) -> Option<String> {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(c) = e else {
        return None;
    };
    let (who, keys, fp) = (peer.who(), peer.keys(), fingerprint(cert));
    let name = name.to_str();
    let text = match c {
        C::Other(other) => match other.0.downcast_ref::<webpki::Error>()? {
            webpki::Error::CaUsedAsEndEntity => format!(
                "{who} shows a CA certificate (basicConstraints CA:TRUE, what `openssl req \
                 -x509` makes unless told otherwise) as its own, which TLS clients refuse: {}; \
                 or give {who} a server certificate (CA:FALSE) issued by that CA and keep the \
                 CA in {keys}ca_file",
                peer.self_signed(&fp)
            ),
            webpki::Error::UnsupportedCertVersion => format!(
                "{who} shows an X.509 version 1 certificate (no extensions, no \
                 subjectAltName), which TLS clients refuse: reissue it as version 3 with a \
                 subjectAltName naming '{name}' (openssl x509 -req ... -extfile with \
                 subjectAltName=DNS:... or IP:...)"
            ),
            _ => return None,
        },
        C::UnknownIssuer => format!(
            "{who}'s certificate (SHA-256 {fp}) is not signed by a CA heptap trusts \
             ({keys}ca_file, or the system's CAs when it is unset): set {keys}ca_file to the \
             CA that issued it; if it is self-signed, {}",
            peer.self_signed(&fp)
        ),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            let names = match c {
                C::NotValidForNameContext { presented, .. } if !presented.is_empty() => {
                    format!(" (it names {})", presented.join(", "))
                }
                _ => String::new(),
            };
            format!(
                "{who}'s certificate is not for '{name}'{names}: set {keys}server_name to a \
                 name it carries, or reach {who} by that name"
            )
        }
        C::Expired | C::ExpiredContext { .. } => {
            let when = match c {
                C::ExpiredContext { not_after, .. } => format!(" at {}", utc(*not_after)),
                _ => String::new(),
            };
            format!(
                "{who}'s certificate expired{when}: renew it on {who} (and check this host's \
                 clock)"
            )
        }
        C::NotValidYet | C::NotValidYetContext { .. } => format!(
            "{who}'s certificate is not valid yet: check the clocks of this host and of {who}"
        ),
        _ => return None,
    };
    Some(text)
}

/// A certificate's time, as a UTC date and time.
fn utc(t: UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .map_or_else(
            || format!("{} s after 1970", t.as_secs()),
            |d| d.to_string(),
        )
}

/// The TLS failure behind `e` in plain words (the [`Refusal`] a verifier attached, a refusal
/// from the other side), else `e` as it is.
pub fn explain(e: &std::io::Error) -> String {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return e.to_string();
    };
    match tls {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            match other.0.downcast_ref::<Refusal>() {
                Some(refusal) => refusal.to_string(),
                None => e.to_string(),
            }
        }
        rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::HandshakeFailure
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA),
        ) => format!(
            "the other side refused the handshake ({alert:?}): it may want a client \
             certificate (cert_file and key_file) it trusts"
        ),
        _ => e.to_string(),
    }
}

/// rustls's verifier (CA chain, name, dates) with its refusals said in plain words
/// ([`Refusal`]).
#[derive(Debug)]
pub struct Explaining {
    /// rustls's own verifier.
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    /// Whose certificate it checks.
    peer: TlsPeer,
}

impl Explaining {
    /// Verifies against `roots`.
    pub fn new(roots: RootCertStore, peer: TlsPeer) -> Result<Arc<Self>, String> {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        Ok(Arc::new(Self { inner, peer }))
    }
}

impl ServerCertVerifier for Explaining {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| match advice(&e, end_entity, server_name, &self.peer) {
                Some(text) => refused(text),
                None => e,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `tls_pin_sha256`: exactly the certificate with this fingerprint, whoever signed it and
/// whatever name and dates it carries (how a self-signed collector is trusted); the
/// handshake's signature is checked, so the peer holds that certificate's key.
#[derive(Debug)]
pub struct PinnedCertificate {
    /// The fingerprint configured.
    pin: Sha256Fingerprint,
    /// Whose certificate it checks.
    peer: TlsPeer,
    /// Checks the handshake signatures, as for `tls_verify = false`.
    signatures: AcceptAnyServerCertificate,
}

impl PinnedCertificate {
    /// Trusts the certificate whose SHA-256 is `pin`.
    pub fn new(pin: Sha256Fingerprint, peer: TlsPeer) -> Arc<Self> {
        Arc::new(Self {
            pin,
            peer,
            signatures: AcceptAnyServerCertificate(provider()),
        })
    }
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let shown = fingerprint(end_entity);
        if shown == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        Err(refused(format!(
            "{} shows a certificate whose SHA-256 is {shown}, not the one pinned in {}tls_pin_sha256 \
             ({}): if its certificate was renewed on purpose, pin the new one",
            self.peer.who(),
            self.peer.keys(),
            self.pin
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(e: webpki::Error) -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            Arc::new(e),
        )))
    }

    #[test]
    fn a_v1_certificate_is_explained_with_how_to_reissue_it() {
        let cert = CertificateDer::from(vec![1, 2, 3]);
        let name = ServerName::try_from("homer.example").unwrap_or_else(|e| panic!("{e}"));
        let peer = TlsPeer::Collector("homer".into());
        let text = advice(
            &other(webpki::Error::UnsupportedCertVersion),
            &cert,
            &name,
            &peer,
        )
        .unwrap_or_default();
        assert!(
            text.starts_with("the collector shows an X.509 version 1 certificate"),
            "{text}"
        );
        assert!(text.contains("naming 'homer.example'"), "{text}");
        // Refusals with no advice of their own keep rustls's words.
        assert_eq!(
            advice(&other(webpki::Error::BadDer), &cert, &name, &peer),
            None
        );
    }

    #[test]
    fn explain_unwraps_the_refusal_a_verifier_attached() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            refused("in plain words".into()),
        );
        assert_eq!(explain(&e), "in plain words");
        let plain = std::io::Error::other("not TLS");
        assert_eq!(explain(&plain), "not TLS");
    }
}
