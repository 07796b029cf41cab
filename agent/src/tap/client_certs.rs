//! Client certificates on TLS listeners (`tls.client_cert`).
//!
//! - `request` asks for a certificate and takes any (or none), so that it can be traced as
//!   OpenSIPS traces it: an X.509 v1 certificate too, which webpki refuses to parse
//!   (`UnsupportedCertVersion`). The handshake signature is still checked, against the key
//!   read from the certificate, so the client holds that key.
//! - `require` verifies the chain with web PKI rules (webpki), which need X.509 v3; a v1
//!   certificate is refused with an error that says so, instead of webpki's bare
//!   `UnsupportedCertVersion`.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

/// `client_cert = "request"`: any certificate (or none) is taken; see the module's text.
#[derive(Debug)]
pub struct AcceptAnyClientCertificate(pub Arc<CryptoProvider>);

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
        let algs = &self.0.signature_verification_algorithms;
        if webpki::EndEntityCert::try_from(cert).is_ok() {
            return rustls::crypto::verify_tls12_signature(message, cert, dss, algs);
        }
        verify_with_key_of(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        if webpki::EndEntityCert::try_from(cert).is_ok() {
            return rustls::crypto::verify_tls13_signature(message, cert, dss, algs);
        }
        let spki = subject_public_key_info(cert)?;
        rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate's public key, read with x509-parser, which takes every X.509 version.
fn subject_public_key_info(
    cert: &CertificateDer<'_>,
) -> Result<SubjectPublicKeyInfoDer<'static>, rustls::Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    Ok(SubjectPublicKeyInfoDer::from(
        parsed.public_key().raw.to_vec(),
    ))
}

/// A TLS 1.2 handshake signature checked against the certificate's key alone (webpki has no
/// TLS 1.2 raw-key check in rustls): any algorithm of the negotiated scheme that verifies it.
fn verify_with_key_of(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let spki = subject_public_key_info(cert)?;
    let key = webpki::RawPublicKeyEntity::try_from(&spki)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let candidates = algs
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, a)| *a)
        .ok_or(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ))?;
    if candidates
        .iter()
        .any(|alg| key.verify_signature(*alg, message, dss.signature()).is_ok())
    {
        Ok(HandshakeSignatureValid::assertion())
    } else {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::BadSignature,
        ))
    }
}

/// `client_cert = "require"`: webpki's verifier, with a clear refusal of X.509 v1.
#[derive(Debug)]
pub struct RequireClientCertificate(pub Arc<dyn ClientCertVerifier>);

/// Why `require` refuses an X.509 v1 client certificate.
#[derive(thiserror::Error)]
#[error(
    "X.509 v1 client certificate refused: client_cert = \"require\" verifies it with web PKI rules, which need X.509 v3; issue the client a v3 certificate, or use client_cert = \"request\" to accept and trace it unverified"
)]
pub struct V1Refused;

/// The sentence itself: rustls prints a certificate error's cause with `{:?}`, and this is what
/// the ACCEPTED FAILURE event and the log should say.
impl std::fmt::Debug for V1Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Whether `cert` is an X.509 v1 certificate (no `version` field: v1 is its default).
fn is_v1(cert: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(cert)
        .is_ok_and(|(_, c)| c.version() == x509_parser::x509::X509Version::V1)
}

impl ClientCertVerifier for RequireClientCertificate {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if is_v1(end_entity) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(V1Refused)),
            )));
        }
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
