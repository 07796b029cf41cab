//! The PROXY protocol header (HAProxy's proxy-protocol.txt, v1 text and v2 binary) that a
//! listener can send first on every upstream connection, so the proxy sees the real client
//! address instead of heptap's. It is written on the TCP connection before anything else,
//! TLS included, as HAProxy does.
//!
//! The other way, [`accept`] reads the header a load balancer in front of heptap sends first
//! on a client connection (`accept_proxy_protocol = true`), parsed by the `ppp` crate.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use heptap_config::ProxyProtocol;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Why a client connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Reading failed, or the client closed before the header's end.
    #[error("client: PROXY header not read: {0}")]
    Read(#[from] io::Error),
    /// The connection does not start with a PROXY header.
    #[error("client: no PROXY header (accept_proxy_protocol = true)")]
    Missing,
    /// A v1 line longer than the protocol's 107 bytes.
    #[error("client: PROXY v1 header longer than 107 bytes")]
    TooLong,
    /// The header does not parse.
    #[error("client: bad PROXY header: {0}")]
    Invalid(String),
}

/// The longest v1 line, `\r\n` included (proxy-protocol.txt §2.1).
const V1_MAX: usize = 107;

/// Reads exactly one PROXY header (v1 or v2) from `tcp`, nothing after it (TLS may follow),
/// and returns the client's address and the address it reached, or `None` when the header
/// carries none (v1 `UNKNOWN`, v2 `LOCAL`, or a family without ports): then the connection's
/// own addresses stand.
pub async fn accept(tcp: &mut TcpStream) -> Result<Option<(SocketAddr, SocketAddr)>, AcceptError> {
    // 12 bytes tell v2 (its signature) from v1 ("PROXY ..."), and no v1 header is shorter.
    let mut head = vec![0u8; 12];
    tcp.read_exact(&mut head).await?;
    if head == V2_SIGNATURE {
        let mut rest = [0u8; 4];
        tcp.read_exact(&mut rest).await?;
        head.extend_from_slice(&rest);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let start = head.len();
        head.resize(start + len, 0);
        tcp.read_exact(&mut head[start..]).await?;
        let header = ppp::v2::Header::try_from(head.as_slice())
            .map_err(|e| AcceptError::Invalid(e.to_string()))?;
        if header.command == ppp::v2::Command::Local {
            return Ok(None);
        }
        return Ok(match header.addresses {
            ppp::v2::Addresses::IPv4(a) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            ppp::v2::Addresses::IPv6(a) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            _ => None,
        });
    }
    if !head.starts_with(b"PROXY ") {
        return Err(AcceptError::Missing);
    }
    // One byte at a time: what follows the line belongs to the client's stream.
    while !head.ends_with(b"\r\n") {
        if head.len() == V1_MAX {
            return Err(AcceptError::TooLong);
        }
        head.push(tcp.read_u8().await?);
    }
    let header = ppp::v1::Header::try_from(head.as_slice())
        .map_err(|e| AcceptError::Invalid(e.to_string()))?;
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        ppp::v1::Addresses::Tcp6(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        ppp::v1::Addresses::Unknown => None,
    })
}

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

    /// What `accept` makes of `sent` (then the client's first bytes, which must stay unread).
    async fn accepted(sent: &[u8]) -> Result<Option<(SocketAddr, SocketAddr)>, AcceptError> {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(sent).await.unwrap();
        client.write_all(b"\x16\x03\x01").await.unwrap();
        client.shutdown().await.unwrap();
        let result = accept(&mut server).await;
        if result.is_ok() {
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(
                rest, b"\x16\x03\x01",
                "the bytes after the header are the client's"
            );
        }
        result
    }

    #[tokio::test]
    async fn a_v1_or_v2_header_gives_the_client_and_the_address_it_reached() {
        let (client, server) = (a("203.0.113.7:40000"), a("192.0.2.1:5061"));
        for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
            let got = accepted(&header(version, client, server)).await.unwrap();
            assert_eq!(got, Some((client, server)), "{version:?}");
        }
        let (client, server) = (a("[2001:db8::7]:40000"), a("[2001:db8::1]:5061"));
        for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
            let got = accepted(&header(version, client, server)).await.unwrap();
            assert_eq!(got, Some((client, server)), "{version:?}");
        }
    }

    #[tokio::test]
    async fn v1_unknown_and_v2_local_leave_the_connection_addresses() {
        assert_eq!(accepted(b"PROXY UNKNOWN\r\n").await.unwrap(), None);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(accepted(&local).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_connection_without_or_with_a_bad_header_is_refused_saying_why() {
        let e = accepted(b"OPTIONS sip:a SIP/2.0\r\n").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "client: no PROXY header (accept_proxy_protocol = true)"
        );
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        let e = accepted(long.as_bytes()).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "client: PROXY v1 header longer than 107 bytes"
        );
        let e = accepted(b"PROXY TCP4 999.0.0.1 1.2.3.4 1 2\r\n")
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with("client: bad PROXY header: "),
            "{e}"
        );
        let e = accepted(b"PROXY TC").await.unwrap_err();
        assert!(matches!(e, AcceptError::Read(_)), "{e}");
    }

    #[test]
    fn none_sends_nothing() {
        assert!(header(ProxyProtocol::None, a("1.2.3.4:1"), a("5.6.7.8:2")).is_empty());
    }
}
