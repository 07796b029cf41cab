//! What a filter route can see of a connection, and what it decides.

use std::net::SocketAddr;

use heptap_hep::NetProto;

/// What a `$proto` literal names. OpenSIPS routes may test for `udp`, which heptap never taps,
/// so such a test is known false (or, with `!=`, true) when the route is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProtoName {
    /// A protocol heptap taps.
    Tapped(NetProto),
    /// `udp`.
    Udp,
}

impl ProtoName {
    /// Looks a protocol up by name, ignoring ASCII case as OpenSIPS's string comparison does.
    pub(crate) fn find(name: &str) -> Option<ProtoName> {
        if name.eq_ignore_ascii_case("udp") {
            return Some(ProtoName::Udp);
        }
        NetProto::ALL
            .into_iter()
            .find(|proto| proto.name().eq_ignore_ascii_case(name))
            .map(ProtoName::Tapped)
    }
}

/// A `$proto` literal that is none of `udp`, `tcp`, `tls`, `ws`, `wss`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol \"{0}\" (expected udp, tcp, tls, ws or wss)")]
pub(crate) struct UnknownProto(pub String);

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
    fn proto(&self) -> NetProto;
}

impl<T: Inspect + ?Sized> Inspect for &T {
    fn remote(&self) -> SocketAddr {
        (**self).remote()
    }

    fn local(&self) -> SocketAddr {
        (**self).local()
    }

    fn proto(&self) -> NetProto {
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
    pub proto: NetProto,
}

impl Inspect for ConnInfo {
    fn remote(&self) -> SocketAddr {
        self.remote
    }

    fn local(&self) -> SocketAddr {
        self.local
    }

    fn proto(&self) -> NetProto {
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
