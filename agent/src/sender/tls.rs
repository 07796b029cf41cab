//! The rustls client configuration of a TLS destination (ring provider only).
//!
//! Verification is on by default, against `ca_file` or the system's roots; `verify = false`
//! installs [`AcceptAnyCertificate`], which still checks the handshake signatures (so the peer
//! must hold the key of the certificate it shows) but trusts any certificate and any name.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{SenderError, TlsSettings};

/// The ring provider, the only one heptap builds with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client configuration and the SNI name of destination `name` at `host`.
pub(crate) fn client_config(
    name: &str,
    host: &str,
    settings: &TlsSettings,
) -> Result<(Arc<ClientConfig>, ServerName<'static>), SenderError> {
    let tls_err = |source| SenderError::Tls {
        name: name.to_owned(),
        source,
    };
    let sni = settings.server_name.as_deref().unwrap_or(host);
    // Brackets of an IPv6 literal are URI syntax, not part of the name.
    let sni = sni.trim_start_matches('[').trim_end_matches(']');
    let server_name =
        ServerName::try_from(sni.to_owned()).map_err(|_| SenderError::InvalidServerName {
            name: name.to_owned(),
            server_name: sni.to_owned(),
        })?;

    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let builder = if settings.verify {
        builder.with_root_certificates(root_store(name, settings.ca_file.as_deref())?)
    } else {
        tracing::warn!(
            hep_id = %name,
            "TLS certificate verification is off (tls_verify = false): the collector is not authenticated"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
    };
    let config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => {
            let chain = load_certs(name, "cert_file", cert)?;
            let key = load_key(name, key)?;
            builder.with_client_auth_cert(chain, key).map_err(tls_err)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(SenderError::ClientAuthIncomplete {
                name: name.to_owned(),
            });
        }
    };
    Ok((Arc::new(config), server_name))
}

fn root_store(name: &str, ca_file: Option<&Path>) -> Result<RootCertStore, SenderError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(name, "ca_file", path)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error(name, "ca_file", path, e.to_string()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::debug!(hep_id = %name, %error, "Skipping part of the system CA store");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(hep_id = %name, added, ignored, "Loaded the system CA store");
        }
    }
    if roots.is_empty() {
        return Err(SenderError::NoRootCertificates {
            name: name.to_owned(),
        });
    }
    Ok(roots)
}

fn load_certs(
    name: &str,
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SenderError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(name, what, path, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(name, what, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(
            name,
            what,
            path,
            "no PEM certificate in the file".to_owned(),
        ));
    }
    Ok(certs)
}

fn load_key(name: &str, path: &Path) -> Result<PrivateKeyDer<'static>, SenderError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_error(name, "key_file", path, e.to_string()))
}

fn file_error(name: &str, what: &'static str, path: &Path, reason: String) -> SenderError {
    SenderError::TlsFile {
        name: name.to_owned(),
        what,
        path: path.to_owned(),
        reason,
    }
}

/// `tls_verify = false`: any certificate for any name, but the handshake signatures are still
/// checked with the provider's algorithms.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
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
