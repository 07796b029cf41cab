//! TLS for the benchmark: a self-signed certificate for `localhost`, the client config every
//! load tool uses, and the responder's server config for the direct TLS target.
//!
//! The client offers TLS 1.3 with one cipher suite (AES-128-GCM) and no session resumption, so
//! every target negotiates the same thing and every connection pays a full handshake.

use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::{CryptoProvider, ring};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::Error;

/// The name in the certificate and the SNI the clients send.
pub const SERVER_NAME: &str = "localhost";

/// Writes `cert.pem`, `key.pem` and `combined.pem` (certificate then key, as HAProxy's
/// `crt` wants) into `dir`.
pub fn generate(dir: &Path) -> Result<(), Error> {
    let names = vec![SERVER_NAME.to_string(), "127.0.0.1".to_string()];
    let key = rcgen::generate_simple_self_signed(names)
        .map_err(|e| Error::Tls(format!("generating a certificate: {e}")))?;
    let cert = key.cert.pem();
    let private = key.key_pair.serialize_pem();
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("cert.pem"), &cert)?;
    std::fs::write(dir.join("key.pem"), &private)?;
    std::fs::write(dir.join("combined.pem"), format!("{cert}{private}"))?;
    Ok(())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: vec![ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
        ..ring::default_provider()
    })
}

/// The client side: trusts only `cert_file`, TLS 1.3, one suite, resumption off.
pub fn client(cert_file: &Path) -> Result<tokio_rustls::TlsConnector, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| Error::Tls(format!("{}: {e}", cert_file.display())))?
    {
        let cert = cert.map_err(|e| Error::Tls(format!("{}: {e}", cert_file.display())))?;
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("{}: {e}", cert_file.display())))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The SNI every client sends.
pub fn server_name() -> Result<ServerName<'static>, Error> {
    ServerName::try_from(SERVER_NAME).map_err(|e| Error::Tls(e.to_string()))
}

/// The responder's server side, for the direct TLS target.
pub fn server(cert_file: &Path, key_file: &Path) -> Result<tokio_rustls::TlsAcceptor, Error> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("{}: {e}", cert_file.display())))?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| Error::Tls(format!("{}: {e}", key_file.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
