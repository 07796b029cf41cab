//! The rustls client configuration of a TLS destination (ring provider only).
//!
//! Verification is on by default, against `ca_file` or the system's roots (refusals said in
//! plain words, [`Explaining`]), or against one certificate (`tls_pin_sha256`,
//! [`PinnedCertificate`]); `tls_verify = false`
//! installs [`AcceptAnyServerCertificate`], which still checks the handshake signatures (so the peer
//! must hold the key of the certificate it shows) but trusts any certificate and any name.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use heptap_config::HepTls;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::tls::{
    AcceptAnyServerCertificate, Digest, Explaining, PinnedCertificate, TlsPeer, is_key_mismatch,
    provider, roots_digest,
};

use super::error::SenderError;

/// A TLS destination's client side as its files were when last read: every lane's next
/// connection takes the one in force, and a reload (`reload`, `tls_reload`, SIGHUP) swaps in
/// a new one; connections already up keep theirs.
#[derive(Debug)]
pub(crate) struct ClientTls {
    /// The configuration in force.
    current: ArcSwap<Loaded>,
}

/// What the files held when read.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The rustls configuration.
    pub config: Arc<ClientConfig>,
    /// SNI and the name the collector's certificate must carry.
    pub server_name: ServerName<'static>,
    /// The CA certificates, client certificate and key read.
    digest: Digest,
}

impl ClientTls {
    /// Loads the files of destination `name` at `host`.
    pub(crate) fn load(name: &str, host: &str, settings: &HepTls) -> Result<Self, SenderError> {
        Ok(Self {
            current: ArcSwap::from_pointee(client_config(name, host, settings)?),
        })
    }

    /// The configuration for the next connection.
    pub(crate) fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// Reads the files again: `Ok(true)` when what they hold changed (and is now in force),
    /// `Ok(false)` when it is the same; on error the old configuration stays.
    pub(crate) fn renew(
        &self,
        name: &str,
        host: &str,
        settings: &HepTls,
    ) -> Result<bool, SenderError> {
        let loaded = client_config(name, host, settings)?;
        let changed = loaded.digest != self.current.load().digest;
        if changed {
            self.current.store(Arc::new(loaded));
        }
        Ok(changed)
    }
}

/// Builds the client configuration and the SNI name of destination `name` at `host`.
fn client_config(name: &str, host: &str, settings: &HepTls) -> Result<Loaded, SenderError> {
    let tls_err = |source| SenderError::Tls {
        name: name.to_owned(),
        source,
    };
    let server_name =
        crate::tls::server_name(settings.server_name.as_deref(), host).map_err(|server_name| {
            SenderError::InvalidServerName {
                name: name.to_owned(),
                server_name,
            }
        })?;

    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let mut digest = Digest::default();
    let peer = TlsPeer::Collector(name.to_owned());
    let builder = if let Some(pin) = settings.pin_sha256 {
        digest = Digest::of([pin.0.as_slice()]);
        builder
            .dangerous()
            .with_custom_certificate_verifier(PinnedCertificate::new(pin, peer))
    } else if settings.tls_verify {
        let roots = root_store(name, settings.ca_file.as_deref())?;
        digest = roots_digest(&roots);
        let verifier =
            Explaining::new(roots, peer).map_err(|e| tls_err(rustls::Error::General(e)))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
    } else {
        tracing::warn!(
            hep_id = %name,
            "TLS certificate verification is off (tls_verify = false): the collector is not authenticated"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(AcceptAnyServerCertificate::new())
    };
    let config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key_file)) => {
            let chain = load_certs(name, "cert_file", cert)?;
            let key = load_key(name, key_file)?;
            digest = digest.and(Digest::of(
                chain.iter().map(|c| c.as_ref()).chain([key.secret_der()]),
            ));
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                if is_key_mismatch(&e) {
                    SenderError::KeyMismatch {
                        name: name.to_owned(),
                        cert: cert.clone(),
                        key: key_file.clone(),
                    }
                } else {
                    tls_err(e)
                }
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(SenderError::ClientAuthIncomplete {
                name: name.to_owned(),
            });
        }
    };
    Ok(Loaded {
        config: Arc::new(config),
        server_name,
        digest,
    })
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
        None => roots = crate::tls::system_roots(&format!("hep_id {name}")),
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
    crate::tls::pem_certs(path).map_err(|e| file_error(name, what, path, e))
}

fn load_key(name: &str, path: &Path) -> Result<PrivateKeyDer<'static>, SenderError> {
    crate::tls::pem_key(path).map_err(|e| file_error(name, "key_file", path, e))
}

fn file_error(name: &str, what: &'static str, path: &Path, reason: String) -> SenderError {
    SenderError::TlsFile {
        name: name.to_owned(),
        what,
        path: path.to_owned(),
        reason,
    }
}
