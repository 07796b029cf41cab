//! The transparent relay (`upstream_source = "client"`): the upstream connection is opened from
//! the client's own address, as HAProxy's `usesrc clientip` and Envoy's `original_src` do, so
//! the proxy sees every client as itself without any PROXY protocol support. The socket is
//! marked IP_TRANSPARENT (IPV6_TRANSPARENT), which lets it bind an address this host does not
//! own; policy routing brings the proxy's replies back to it (docs/transparent.md).
//!
//! Per connection: [`bind_client_source`]. At start-up and `check-config`: [`check`], which
//! says when the capability or the routing is missing instead of every connection failing.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use heptap_config::UpstreamSourcePort;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpSocket;

use crate::stats::Counter;

/// Why the client's address cannot be the source of an upstream connection.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No socket could be made (out of descriptors...).
    #[error("heptap: no socket: {0}")]
    Socket(io::Error),
    /// The kernel refused IP_TRANSPARENT: heptap lacks the capability.
    #[error("heptap: IP_TRANSPARENT refused ({0}): it needs CAP_NET_RAW or CAP_NET_ADMIN")]
    Transparent(io::Error),
    /// The client's address (and port) could not be bound: in use by another connection.
    #[error("heptap: cannot bind the client's address {addr}: {source}")]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// The system's reason.
        source: io::Error,
    },
    /// An IPv4 client relayed to an IPv6 upstream, or the other way round.
    #[error(
        "client: {client} cannot be the source of a connection to {upstream} (another address family)"
    )]
    Family {
        /// The client's address.
        client: IpAddr,
        /// The upstream address.
        upstream: SocketAddr,
    },
}

/// A socket bound to the client's address, ready to connect to the upstream.
#[derive(Debug)]
pub struct Bound {
    /// The socket.
    pub socket: TcpSocket,
    /// The address it is bound to: the client's, with the client's port or another.
    pub local: SocketAddr,
    /// `upstream_source_port = "client"` asked for the client's port and it was in use.
    pub port_taken: bool,
}

/// A socket to `upstream` bound to the client's address (its port too, with
/// `upstream_source_port = "client"`, when free).
pub fn bind_client_source(
    client: SocketAddr,
    upstream: SocketAddr,
    port: UpstreamSourcePort,
) -> Result<Bound, SourceError> {
    // A dual-stack listener shows IPv4 clients as ::ffff:a.b.c.d.
    let ip = client.ip().to_canonical();
    if ip.is_ipv4() != upstream.ip().to_canonical().is_ipv4() {
        return Err(SourceError::Family {
            client: ip,
            upstream,
        });
    }
    // No SO_REUSEADDR: with it, the bind of a port in use by another connection would succeed
    // and its connect fail; without it, a port in use (TIME_WAIT included) is seen here.
    let socket = transparent_socket(upstream)?;
    let mut port_taken = false;
    if port == UpstreamSourcePort::Client {
        let addr = SocketAddr::new(ip, client.port());
        match socket.bind(&addr.into()) {
            Ok(()) => return bound(socket, addr, false),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => port_taken = true,
            Err(source) => return Err(SourceError::Bind { addr, source }),
        }
    }
    let addr = SocketAddr::new(ip, 0);
    // The port is picked at the connect, unique per 4-tuple only (as for an unbound socket):
    // a port picked at the bind would be held for every destination and through TIME_WAIT,
    // and a busy client address would run out of them. Best effort: without it the bind
    // picks the port.
    let _ = nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    );
    socket
        .bind(&addr.into())
        .map_err(|source| SourceError::Bind { addr, source })?;
    bound(socket, addr, port_taken)
}

/// A non-blocking TCP socket of `upstream`'s family, marked transparent.
fn transparent_socket(upstream: SocketAddr) -> Result<Socket, SourceError> {
    let socket = Socket::new(
        Domain::for_address(upstream),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )
    .map_err(SourceError::Socket)?;
    let marked = if upstream.is_ipv4() {
        socket.set_ip_transparent_v4(true)
    } else {
        socket.set_ip_transparent_v6(true)
    };
    marked.map_err(SourceError::Transparent)?;
    Ok(socket)
}

fn bound(socket: Socket, asked: SocketAddr, port_taken: bool) -> Result<Bound, SourceError> {
    let std: std::net::TcpStream = socket.into();
    let local = std.local_addr().unwrap_or(asked);
    Ok(Bound {
        socket: TcpSocket::from_std_stream(std),
        local,
        port_taken,
    })
}

/// The shortest time between two warnings about one listener's failed client sources.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A listener's failed client sources: each counted, and logged as one warning per
/// [`FAILURE_LOG_INTERVAL`] at most with the number since the previous one, so a missing
/// capability under load cannot flood the logs, and is never silent either.
#[derive(Debug)]
pub struct SourceFailures {
    /// `listener_<name>:upstream_source_failed`.
    failed: Counter,
    /// Origin of the millisecond clock below.
    base: Instant,
    /// Milliseconds since `base` before which no warning is written.
    next_ms: AtomicU64,
    /// Failures not yet told in a warning.
    untold: AtomicU64,
}

impl SourceFailures {
    /// Counts into `failed`.
    pub fn new(failed: Counter) -> Self {
        SourceFailures {
            failed,
            base: Instant::now(),
            next_ms: AtomicU64::new(0),
            untold: AtomicU64::new(0),
        }
    }

    /// Counts one failure and logs it unless a warning was written less than
    /// [`FAILURE_LOG_INTERVAL`] ago (that one is then told with the next).
    pub fn failed(&self, listener: &str, client: SocketAddr, e: &SourceError, fallback: &str) {
        self.failed.inc();
        self.untold.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(FAILURE_LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if now < next
            || self
                .next_ms
                .compare_exchange(next, now + interval, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let failures = self.untold.swap(0, Ordering::Relaxed);
        tracing::warn!(
            listener = %listener,
            client.addr = %client,
            failures,
            error = %e,
            "Upstream connection not opened from the client's address: {fallback}"
        );
    }
}

/// Whether heptap may open transparent sockets toward `upstream_host` (an IPv6 literal asks
/// for IPV6_TRANSPARENT, anything else for IP_TRANSPARENT: the capability is the same, and a
/// host name is not resolved here).
pub fn check_capability(upstream_host: &str) -> Result<(), SourceError> {
    let v6 = upstream_host.parse::<std::net::Ipv6Addr>().is_ok();
    let probe = if v6 {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    transparent_socket(probe).map(drop)
}

/// What may keep the proxy's replies from reaching a transparent listener relaying to
/// `upstream`: one warning per upstream address whose routing looks missing (heptap can inspect
/// the routing, not prove it; docs/transparent.md).
pub fn routing_warnings(upstream: &str) -> Vec<String> {
    match upstream.to_socket_addrs() {
        Ok(addrs) => addrs.filter_map(routing_warning).collect(),
        Err(e) => vec![format!(
            "cannot resolve the upstream {upstream} to check the routing: {e}"
        )],
    }
}

/// Why the proxy's replies to the client addresses heptap connects from seem not to come back
/// to heptap, if they seem not to.
fn routing_warning(upstream: SocketAddr) -> Option<String> {
    let v6 = upstream.is_ipv6();
    let family = if v6 { "-6" } else { "-4" };
    // An address of the benchmarking ranges (RFC 2544, RFC 5180) stands for any client: the
    // routing asked about is "everything", and these are seldom this host's own.
    let probe = if v6 { "2001:2::1" } else { "198.18.0.1" };
    if is_local(upstream.ip()) {
        // Same host: the proxy's own packets, from its port, must be routed locally.
        let ip = upstream.ip().to_string();
        let port = upstream.port().to_string();
        let args = [
            family, "route", "get", probe, "from", &ip, "ipproto", "tcp", "sport", &port,
        ];
        return match run_ip(&args) {
            Err(e) => Some(e),
            Ok(route) if route.trim_start().starts_with("local ") => None,
            Ok(route) => Some(format!(
                "the proxy's replies from {upstream} to client addresses are not routed back to \
                 heptap (`ip {}`: {}); add `ip {family} rule add ipproto tcp sport {port} lookup \
                 100` and `ip {family} route add local {} dev lo table 100` (docs/transparent.md)",
                args.join(" "),
                route.trim(),
                if v6 { "::/0" } else { "0.0.0.0/0" },
            )),
        };
    }
    // Another host: its replies arrive on an interface, marked by the firewall, and a fwmark
    // rule sends them to a table with a local default route.
    let rules = match run_ip(&[family, "rule", "show"]) {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    let marked_tables: Vec<&str> = rules
        .lines()
        .filter(|l| l.contains("fwmark"))
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "lookup").nth(1))
        .collect();
    let routed = marked_tables.iter().any(|table| {
        run_ip(&[family, "route", "show", "table", table, "type", "local"])
            .is_ok_and(|routes| routes.lines().any(|l| l.starts_with("local default")))
    });
    if routed {
        return None;
    }
    Some(format!(
        "the proxy {upstream} is on another host and no fwmark rule leads to a table with a \
         local default route: its replies to client addresses will not reach heptap (the \
         nftables recipe is in docs/transparent.md)"
    ))
}

/// Whether `ip` is one of this host's addresses (binding it needs no transparency).
fn is_local(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// `ip ARGS`' output, or why it could not be had.
fn run_ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot check the routing: `ip` does not run ({e})"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Ok(format!(
            "{}{}",
            text,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_of_another_family_than_the_upstream_is_refused_before_any_socket() {
        let e = bind_client_source(
            a("[2001:db8::10]:5000"),
            a("127.0.0.1:5060"),
            UpstreamSourcePort::Any,
        )
        .unwrap_err();
        assert!(matches!(e, SourceError::Family { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "client: 2001:db8::10 cannot be the source of a connection to 127.0.0.1:5060 \
             (another address family)"
        );
    }

    #[tokio::test]
    async fn a_local_client_address_binds_with_its_port_and_falls_back_to_another_when_taken() {
        // 127.0.0.1 is this host's: binding it needs no capability beyond IP_TRANSPARENT's.
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = upstream.local_addr().unwrap();
        let Ok(first) = bind_client_source(a("127.0.0.1:0"), up, UpstreamSourcePort::Any) else {
            // Without CAP_NET_RAW/CAP_NET_ADMIN (not root) there is nothing to test here.
            return;
        };
        // The port is picked at the connect (IP_BIND_ADDRESS_NO_PORT).
        assert_eq!(first.local, a("127.0.0.1:0"));
        let held = first.socket.connect(up).await.unwrap();
        let client = held.local_addr().unwrap();
        let (_accepted, seen) = upstream.accept().await.unwrap();
        assert_eq!(seen, client);
        // The same port again: in use by the connection above, so another one.
        let second = bind_client_source(client, up, UpstreamSourcePort::Client).unwrap();
        assert!(second.port_taken);
        assert_eq!(second.local.ip(), client.ip());
        assert_ne!(second.local.port(), client.port());
        drop(held);
    }

    #[test]
    fn failures_are_all_counted_and_logged_once_per_interval() {
        let counter = Counter::default();
        let failures = SourceFailures::new(counter.clone());
        let e = SourceError::Transparent(io::Error::from(io::ErrorKind::PermissionDenied));
        for _ in 0..1000 {
            failures.failed("edge", a("192.0.2.10:5000"), &e, "refused");
        }
        assert_eq!(counter.get(), 1000);
        // The first was told at once; the 999 after it wait for the next warning.
        assert_eq!(failures.untold.load(Ordering::Relaxed), 999);
    }
}
