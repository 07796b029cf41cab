//! Values for the IP protocol field (chunk 0x0002, HEPv1/v2 `hp_p`), including the stand-ins
//! OpenSIPS uses for transports that have no IP protocol number (opensips-tracing.md §1.7).

/// TCP.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;
/// SCTP.
pub const SCTP: u8 = 132;
/// IPPROTO_IDP, the number OpenSIPS (and Kamailio) put in the field for TLS and BINS.
pub const IDP: u8 = 22;
/// IPPROTO_ESP, the number OpenSIPS puts in the field for WS and WSS.
pub const ESP: u8 = 50;
/// TLS, as OpenSIPS writes it (the IDP stand-in).
pub const TLS: u8 = IDP;
/// WS and WSS, as OpenSIPS writes them (the ESP stand-in).
pub const WS: u8 = ESP;

/// Name of an IP protocol value as heptap and OpenSIPS use it, for dumps.
pub fn name(p: u8) -> Option<&'static str> {
    Some(match p {
        TCP => "tcp",
        UDP => "udp",
        SCTP => "sctp",
        TLS => "tls",
        WS => "ws",
        _ => return None,
    })
}
