//! Certificate material for the TLS taps: PEM files in, and certificate names out in the shape
//! OpenSIPS traces them (`X509_NAME_oneline`: `/C=RO/O=Org/CN=host`).

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::TapError;

/// Every certificate of a PEM file, in file order; an empty file is an error.
pub fn load_certs(
    listener: &str,
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TapError> {
    let file_error = |reason: String| TapError::TlsFile {
        listener: listener.to_owned(),
        what,
        path: path.to_owned(),
        reason,
    };
    crate::tls::pem_certs(path).map_err(file_error)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(
    listener: &str,
    what: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, TapError> {
    crate::tls::pem_key(path).map_err(|reason| TapError::TlsFile {
        listener: listener.to_owned(),
        what,
        path: path.to_owned(),
        reason,
    })
}

/// A certificate's subject and issuer, printed as OpenSSL's `X509_NAME_oneline` prints them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertNames {
    /// `/C=../O=../CN=..` of the subject.
    pub subject: String,
    /// The same for the issuer.
    pub issuer: String,
}

impl CertNames {
    /// The names of a DER certificate; None when it does not parse (the handshake accepted it,
    /// but a trace part is not worth failing a connection for).
    pub fn of(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(Self {
            subject: oneline(cert.subject()),
            issuer: oneline(cert.issuer()),
        })
    }
}

/// `X509_NAME_oneline`: every attribute in order as `/SN=value`, OpenSSL's short name (or the
/// dotted OID when it has none), value bytes outside printable ASCII as `\xHH` (upper case).
pub fn oneline(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut out = String::new();
    for atv in name.iter_attributes() {
        out.push('/');
        let oid = atv.attr_type().to_id_string();
        match short_name(&oid) {
            Some(sn) => out.push_str(sn),
            None => out.push_str(&oid),
        }
        out.push('=');
        for &b in atv.as_slice() {
            if (b' '..=b'~').contains(&b) {
                out.push(char::from(b));
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push_str("\\x");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xF)]));
            }
        }
    }
    out
}

/// OpenSSL's short names (`OBJ_nid2sn`) of the attributes found in certificate names.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.13" => "description",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.41" => "name",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.45" => "x500UniqueIdentifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.97" => "organizationIdentifier",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.3.6.1.4.1.311.60.2.1.1" => "jurisdictionL",
        "1.3.6.1.4.1.311.60.2.1.2" => "jurisdictionST",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_print_like_x509_name_oneline() {
        let mut params = rcgen::CertificateParams::new(vec!["sip.example.com".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "RO");
        dn.push(rcgen::DnType::OrganizationName, "Org Ünïcode");
        dn.push(rcgen::DnType::CommonName, "sip.example.com");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let names = CertNames::of(cert.der()).unwrap();
        // UTF-8 bytes outside printable ASCII are escaped, as OpenSSL does.
        assert_eq!(
            names.subject,
            "/C=RO/O=Org \\xC3\\x9Cn\\xC3\\xAFcode/CN=sip.example.com"
        );
        assert_eq!(names.issuer, names.subject, "self-signed");
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(CertNames::of(b"not DER"), None);
    }
}
