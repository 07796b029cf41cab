//! The PROXY protocol header (HAProxy's proxy-protocol.txt, v1 text and v2 binary) that a
//! listener can send first on every upstream connection, so the proxy sees the real client
//! address instead of heptap's. It is written on the TCP connection before anything else,
//! TLS included, as HAProxy does.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use heptap_config::ProxyProtocol;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// The header announcing a connection from `client` to `server` (our listening address as the
/// client reached it); empty for [`ProxyProtocol::None`].
pub fn header(version: ProxyProtocol, client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    match version {
        ProxyProtocol::None => Vec::new(),
        ProxyProtocol::V1 => v1(client, server),
        ProxyProtocol::V2 => v2(client, server),
    }
}

/// Both addresses in one family: IPv4 when both are (or map to) IPv4, otherwise IPv6 (an IPv4
/// address then as `::ffff:a.b.c.d`), since a header carries one family.
fn same_family(client: SocketAddr, server: SocketAddr) -> (IpAddr, IpAddr) {
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    match (v4(client.ip()), v4(server.ip())) {
        (Some(c), Some(s)) => (IpAddr::V4(c), IpAddr::V4(s)),
        _ => (IpAddr::V6(v6(client.ip())), IpAddr::V6(v6(server.ip()))),
    }
}

/// `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`.
fn v1(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let (c, s) = same_family(client, server);
    let family = if c.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {c} {s} {} {}\r\n",
        client.port(),
        server.port()
    )
    .into_bytes()
}

/// Signature, version 2 + PROXY command, TCP over IPv4/IPv6, length, addresses, ports.
fn v2(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let (c, s) = same_family(client, server);
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21);
    match (c, s) {
        (IpAddr::V4(c), IpAddr::V4(s)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&c.octets());
            out.extend_from_slice(&s.octets());
        }
        (c, s) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            let (c, s): (Ipv6Addr, Ipv6Addr) = (v6(c), v6(s));
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&c.octets());
            out.extend_from_slice(&s.octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&server.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_ipv4_is_one_text_line() {
        assert_eq!(
            header(
                ProxyProtocol::V1,
                a("192.0.2.10:40000"),
                a("198.51.100.1:5061")
            ),
            b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 5061\r\n"
        );
    }

    #[test]
    fn v1_ipv6_and_mixed_families_use_tcp6() {
        assert_eq!(
            header(ProxyProtocol::V1, a("[2001:db8::1]:1"), a("[::1]:2")),
            b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"
        );
        assert_eq!(
            header(ProxyProtocol::V1, a("192.0.2.1:1"), a("[2001:db8::2]:2")),
            b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n"
        );
        // A v4-mapped client on a dual-stack socket is announced as IPv4.
        assert_eq!(
            header(
                ProxyProtocol::V1,
                a("[::ffff:192.0.2.1]:1"),
                a("[::ffff:10.0.0.1]:2")
            ),
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2\r\n"
        );
    }

    #[test]
    fn v2_ipv4_is_28_bytes() {
        let h = header(
            ProxyProtocol::V2,
            a("192.0.2.10:40000"),
            a("198.51.100.1:5061"),
        );
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0x00, 0x0C]);
        expected.extend_from_slice(&[192, 0, 2, 10, 198, 51, 100, 1]);
        expected.extend_from_slice(&[0x9C, 0x40, 0x13, 0xC5]);
        assert_eq!(h, expected);
    }

    #[test]
    fn v2_ipv6_is_52_bytes() {
        let h = header(ProxyProtocol::V2, a("[2001:db8::1]:1"), a("[::1]:2"));
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0x00, 0x24]);
        assert_eq!(
            &h[16..32],
            &a("[2001:db8::1]:1")
                .ip()
                .to_string()
                .parse::<Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(&h[48..], &[0, 1, 0, 2]);
    }

    #[test]
    fn none_sends_nothing() {
        assert!(header(ProxyProtocol::None, a("1.2.3.4:1"), a("5.6.7.8:2")).is_empty());
    }
}
