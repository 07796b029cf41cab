//! What a filter route can see of a connection, and what it decides.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Transport of a traced connection, named as OpenSIPS's `$proto` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// SIP over UDP (`udp`).
    Udp,
    /// SIP over TCP (`tcp`).
    Tcp,
    /// SIP over TLS (`tls`).
    Tls,
    /// SIP over WebSocket (`ws`).
    Ws,
    /// SIP over secure WebSocket (`wss`).
    Wss,
}

impl Proto {
    /// Every protocol, in the order error messages list them.
    pub const ALL: [Proto; 5] = [Proto::Udp, Proto::Tcp, Proto::Tls, Proto::Ws, Proto::Wss];

    /// The lowercase name OpenSIPS gives the protocol (`$proto`): `udp`, `tcp`, `tls`, `ws`, `wss`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Tls => "tls",
            Proto::Ws => "ws",
            Proto::Wss => "wss",
        }
    }

    /// Looks a protocol up by name, ignoring ASCII case as OpenSIPS's string comparison does.
    pub fn from_name(name: &str) -> Option<Proto> {
        Proto::ALL
            .into_iter()
            .find(|proto| proto.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol name that is none of `udp`, `tcp`, `tls`, `ws`, `wss`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol \"{0}\" (expected udp, tcp, tls, ws or wss)")]
pub struct UnknownProto(pub String);

impl FromStr for Proto {
    type Err = UnknownProto;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Proto::from_name(name).ok_or_else(|| UnknownProto(name.to_owned()))
    }
}

/// The view of a connection that filter routes evaluate against.
///
/// Taps implement it on their connection state, so routes never depend on concrete socket types
/// (the linkerd tap `Inspect` shape). The methods are called once per evaluation and should be
/// cheap field reads.
pub trait Inspect {
    /// The peer that is not heptap: `$si` / `$sp` (for both accepted and outgoing connections,
    /// as OpenSIPS defines them).
    fn remote(&self) -> SocketAddr;
    /// heptap's own socket for the connection: `$Ri` / `$Rp` and `$socket_in(ip|port)`.
    fn local(&self) -> SocketAddr;
    /// The connection's transport: `$proto`.
    fn proto(&self) -> Proto;
}

impl<T: Inspect + ?Sized> Inspect for &T {
    fn remote(&self) -> SocketAddr {
        (**self).remote()
    }

    fn local(&self) -> SocketAddr {
        (**self).local()
    }

    fn proto(&self) -> Proto {
        (**self).proto()
    }
}

/// A plain connection description, for callers that have the three facts at hand (the MI, tests,
/// benchmarks) rather than a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The peer address (`$si:$sp`).
    pub remote: SocketAddr,
    /// heptap's address on the connection (`$Ri:$Rp`).
    pub local: SocketAddr,
    /// The transport (`$proto`).
    pub proto: Proto,
}

impl Inspect for ConnInfo {
    fn remote(&self) -> SocketAddr {
        self.remote
    }

    fn local(&self) -> SocketAddr {
        self.local
    }

    fn proto(&self) -> Proto {
        self.proto
    }
}

/// What a filter route decided for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Trace the connection: the route ended in any way other than `drop`.
    Trace,
    /// Never trace this connection (OpenSIPS's `F_CONN_TRACE_DROPPED`): the route ran `drop`.
    Drop,
}
