//! TLS for the tap tests: a throwaway PKI made with rcgen (ring) for each test, written as PEM
//! into a [`Scratch`] directory, rustls clients that trust it, and TLS upstreams (echo or SIP).
//! Nothing is committed: every certificate is generated when the test runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, KeyLog, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::collector::Scratch;

/// `X509_NAME_oneline` of the test CA.
pub const CA_SUBJECT: &str = "/C=RO/O=heptap tests/CN=heptap test CA";
/// Of the certificate heptap's listeners present.
pub const SERVER_SUBJECT: &str = "/C=RO/O=heptap tests/CN=localhost";
/// Of the upstream proxy's certificate.
pub const UPSTREAM_SUBJECT: &str = "/C=RO/O=heptap tests/CN=upstream";
/// Of the client certificate.
pub const CLIENT_SUBJECT: &str = "/C=RO/O=heptap tests/CN=alice";
/// Of heptap's client certificate toward the upstream.
pub const HEPTAP_CLIENT_SUBJECT: &str = "/C=RO/O=heptap tests/CN=heptap";
/// Of a CA nobody trusts.
pub const ROGUE_CA_SUBJECT: &str = "/C=RO/O=heptap tests/CN=rogue CA";

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "RO");
    dn.push(DnType::OrganizationName, "heptap tests");
    dn.push(DnType::CommonName, cn);
    dn
}

/// A certificate and its key, in memory and as PEM files.
#[derive(Debug)]
pub struct Issued {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    /// Its key (PKCS#8 DER).
    pub key: Vec<u8>,
    /// The certificate as a PEM file.
    pub cert_file: PathBuf,
    /// The key as a PEM file.
    pub key_file: PathBuf,
}

impl Issued {
    /// The key as rustls takes it.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

/// A client that presents one certificate whatever the server asks for.
#[derive(Debug)]
struct PresentCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for PresentCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A CA and the certificates the tests need, under one scratch directory.
#[derive(Debug)]
pub struct Pki {
    /// Where the PEM files are.
    pub dir: Scratch,
    /// The CA certificate as a PEM file.
    pub ca_file: PathBuf,
    /// The CA certificate.
    pub ca: CertificateDer<'static>,
    /// heptap's listener certificate: `localhost` and 127.0.0.1.
    pub server: Issued,
    /// The upstream's certificate: `localhost` and 127.0.0.1.
    pub upstream: Issued,
    /// A client certificate (`alice`).
    pub client: Issued,
    /// heptap's client certificate toward the upstream.
    pub heptap_client: Issued,
    /// A CA that nothing trusts, as a PEM file.
    pub rogue_ca_file: PathBuf,
    /// A client certificate of the rogue CA.
    pub rogue_client: Issued,
    /// The CA, to issue more certificates ([`Pki::issue_server`]).
    root: Ca,
}

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A certificate for `localhost` and 127.0.0.1 (server) or a client one, named `cn`, issued by
/// `by`, written as `<name>.pem` and `<name>.key` in `dir`.
fn issue(dir: &Scratch, name: &str, cn: &str, by: &Ca, server: bool) -> Issued {
    let write = |file: String, text: &str| {
        let path = dir.path().join(file);
        std::fs::write(&path, text).expect("write PEM");
        path
    };
    let key = KeyPair::generate().expect("key");
    let sans = if server {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
    } else {
        Vec::new()
    };
    let mut p = CertificateParams::new(sans).expect("params");
    p.distinguished_name = dn(cn);
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = p.signed_by(&key, &by.cert, &by.key).expect("sign");
    Issued {
        cert: cert.der().clone(),
        key: key.serialize_der(),
        cert_file: write(format!("{name}.pem"), &cert.pem()),
        key_file: write(format!("{name}.key"), &key.serialize_pem()),
    }
}

/// `X509_NAME_oneline` of a certificate [`Pki::issue_server`] made with `cn`.
pub fn subject_of(cn: &str) -> String {
    format!("/C=RO/O=heptap tests/CN={cn}")
}

fn ca(cn: &str) -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ca {
        cert: p.self_signed(&key).expect("CA cert"),
        key,
    }
}

impl Pki {
    /// Generates everything and writes the PEM files.
    pub fn new() -> Self {
        let dir = Scratch::new();
        let root = ca("heptap test CA");
        let rogue = ca("rogue CA");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        let issue = |name: &str, cn: &str, by: &Ca, server: bool| issue(&dir, name, cn, by, server);
        Self {
            ca_file: write("ca.pem", &root.cert.pem()),
            ca: root.cert.der().clone(),
            server: issue("server", "localhost", &root, true),
            upstream: issue("upstream", "upstream", &root, true),
            client: issue("client", "alice", &root, false),
            heptap_client: issue("heptap-client", "heptap", &root, false),
            rogue_ca_file: write("rogue-ca.pem", &rogue.cert.pem()),
            rogue_client: issue("rogue-client", "alice", &rogue, false),
            root,
            dir,
        }
    }

    /// Another server certificate of the CA (`localhost`, 127.0.0.1) with common name `cn`,
    /// written as `<name>.pem` / `<name>.key`: a renewal, to the clients that trust the CA.
    pub fn issue_server(&self, name: &str, cn: &str) -> Issued {
        issue(&self.dir, name, cn, &self.root, true)
    }

    /// An X.509 **v1** client certificate named `cn` (no extensions: rcgen cannot make one),
    /// issued by the CA with the `openssl` CLI (`x509 -req` without `-extfile`), its P-256 key
    /// made by openssl too; everything written in the scratch directory, nothing kept in git.
    pub fn issue_v1_client(&self, name: &str, cn: &str) -> Issued {
        let path = |file: String| self.dir.path().join(file);
        let (ca_key, csr) = (path(format!("{name}-ca.key")), path(format!("{name}.csr")));
        let (cert_file, key_file) = (path(format!("{name}.pem")), path(format!("{name}.key")));
        std::fs::write(&ca_key, self.root.key.serialize_pem()).expect("write CA key");
        let ca_file = self.ca_file.to_str().expect("path");
        let subject = format!("/C=RO/O=heptap tests/CN={cn}");
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl (apt-get install openssl; .ci/run does)");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        let p = |p: &PathBuf| p.to_str().expect("path").to_owned();
        run(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &p(&key_file),
        ]);
        run(&[
            "req",
            "-new",
            "-key",
            &p(&key_file),
            "-subj",
            &subject,
            "-out",
            &p(&csr),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &p(&csr),
            "-CA",
            ca_file,
            "-CAkey",
            &p(&ca_key),
            "-set_serial",
            "4242",
            "-days",
            "2",
            "-out",
            &p(&cert_file),
        ]);
        let cert = CertificateDer::from_pem_file(&cert_file).expect("v1 certificate");
        // Certificate and TBSCertificate headers (30 82 len len, twice), then the serial
        // number straight away: no `[0] version` field, so X.509 v1.
        assert_eq!(
            (cert.get(..2), cert.get(4..6), cert.get(8)),
            (
                Some(&[0x30, 0x82][..]),
                Some(&[0x30, 0x82][..]),
                Some(&0x02)
            ),
            "openssl made an X.509 v1 certificate"
        );
        let key = match PrivateKeyDer::from_pem_file(&key_file).expect("v1 key") {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            other => panic!("openssl genpkey wrote a PKCS#8 key, not {other:?}"),
        };
        Issued {
            cert,
            key,
            cert_file,
            key_file,
        }
    }

    /// A client trusting the CA, without a certificate, connected to `addr` over TLS; panics
    /// when the connection or the handshake fails.
    pub async fn connect(&self, addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
        connect(addr, self.client_config(None, None, None))
            .await
            .expect("TLS connection")
    }

    /// A client trusting the CA, presenting `cert` if given, speaking only `versions` if given,
    /// logging its secrets to `keylog` if given.
    pub fn client_config(
        &self,
        cert: Option<&Issued>,
        versions: Option<&[&'static SupportedProtocolVersion]>,
        keylog: Option<Arc<dyn KeyLog>>,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).expect("CA");
        let builder = ClientConfig::builder_with_provider(ring());
        let builder = match versions {
            Some(v) => builder.with_protocol_versions(v),
            None => builder.with_safe_default_protocol_versions(),
        }
        .expect("versions")
        .with_root_certificates(roots);
        let mut config = match cert {
            // Through a resolver: rustls's own check of the certificate against its key
            // (`with_client_auth_cert`) cannot parse an X.509 v1 certificate.
            Some(c) => {
                let key = ring()
                    .key_provider
                    .load_private_key(c.private_key())
                    .expect("client key");
                let certified = rustls::sign::CertifiedKey::new(vec![c.cert.clone()], key);
                builder.with_client_cert_resolver(Arc::new(PresentCertificate(Arc::new(certified))))
            }
            None => builder.with_no_client_auth(),
        };
        if let Some(k) = keylog {
            config.key_log = k;
        }
        Arc::new(config)
    }

    /// The upstream proxy's server configuration (its own certificate; client certificates of
    /// the CA are asked for and accepted when offered).
    pub fn upstream_config(&self) -> Arc<ServerConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).expect("CA");
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), ring())
                .allow_unauthenticated()
                .build()
                .expect("verifier");
        let config = ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.upstream.cert.clone()],
                self.upstream.private_key(),
            )
            .expect("upstream cert");
        Arc::new(config)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// Connects to `addr` over TLS as `localhost`.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(config).connect(name, tcp).await
}

/// One key-log entry: label, client random, secret.
type KeyEntry = (String, Vec<u8>, Vec<u8>);

/// A key log that keeps every line (to compare with what heptap traced).
#[derive(Debug, Default)]
pub struct KeyLines(pub Mutex<Vec<KeyEntry>>);

impl KeyLog for KeyLines {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        self.0.lock().expect("lock").push((
            label.to_owned(),
            client_random.to_vec(),
            secret.to_vec(),
        ));
    }
}

impl KeyLines {
    /// The NSS key-log lines, `LABEL <random hex> <secret hex>`.
    pub fn lines(&self) -> Vec<String> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        self.0
            .lock()
            .expect("lock")
            .iter()
            .map(|(l, r, s)| format!("{l} {} {}", hex(r), hex(s)))
            .collect()
    }
}

/// What a TLS upstream does with each accepted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Echoes every byte and passes the half-close on.
    Echo,
    /// Answers SIP like a proxy ([`crate::sip::answer`]).
    Sip,
}

/// A TLS upstream on 127.0.0.1; optionally reads a PROXY header of `proxy_len` bytes first.
#[derive(Debug)]
pub struct TlsUpstream {
    /// Where heptap should relay to.
    pub addr: SocketAddr,
    /// The PROXY headers received, one per connection.
    pub proxy_headers: mpsc::UnboundedReceiver<Vec<u8>>,
    /// The client certificate each connection presented, if any.
    pub client_certs: mpsc::UnboundedReceiver<Option<CertificateDer<'static>>>,
    /// The accept task.
    task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    /// Binds 127.0.0.1:0.
    pub async fn bind(pki: &Pki, behaviour: Behaviour, proxy_len: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = TlsAcceptor::from(pki.upstream_config());
        let (ptx, proxy_headers) = mpsc::unbounded_channel();
        let (ctx, client_certs) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let ptx = ptx.clone();
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if proxy_len > 0 {
                        let mut header = vec![0u8; proxy_len];
                        if tcp.read_exact(&mut header).await.is_err() {
                            return;
                        }
                        let _ = ptx.send(header);
                    }
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first().cloned());
                    let _ = ctx.send(peer);
                    match behaviour {
                        Behaviour::Echo => {
                            let (mut r, mut w) = tokio::io::split(tls);
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                            let _ = w.shutdown().await;
                        }
                        Behaviour::Sip => crate::sip::answer(tls).await,
                    }
                });
            }
        });
        Self {
            addr,
            proxy_headers,
            client_certs,
            task,
        }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
