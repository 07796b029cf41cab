//! The connection protocols heptap taps (TCP, TLS, WS, WSS) and the wire facts HEP and OpenSIPS
//! attach to them: the `Protocol` part label, the ip-proto chunk value, the lower-case name.

use std::fmt;
use std::str::FromStr;

use crate::ip_proto;

/// A connection protocol: what a listener accepts, what it opens toward the upstream, what a
/// connection event's `Protocol` part says and what a filter route's `$proto` compares with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum NetProto {
    /// Plain TCP (`tcp_trace`, `[net.tcp]`).
    Tcp,
    /// TLS over TCP (`tls_trace`, `[net.tls]`).
    Tls,
    /// WebSocket over TCP (`ws_trace`, `[net.ws]`).
    Ws,
    /// WebSocket over TLS (`wss_trace`, `[net.wss]`).
    Wss,
}

impl NetProto {
    /// Every protocol, in switch order (the order of [`NetProto::index`]).
    pub const ALL: [NetProto; 4] = [NetProto::Tcp, NetProto::Tls, NetProto::Ws, NetProto::Wss];

    /// Index into per-protocol arrays: 0..4 in the order of [`NetProto::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The upper-case label OpenSIPS writes in the `Protocol` payload part and in MI replies
    /// (`{"TCP tracing":"on"}`): `TCP`, `TLS`, `WS`, `WSS`.
    pub fn label(self) -> &'static str {
        match self {
            NetProto::Tcp => "TCP",
            NetProto::Tls => "TLS",
            NetProto::Ws => "WS",
            NetProto::Wss => "WSS",
        }
    }

    /// The lower-case name of configs (`proto = "tls"`, `[net.tls]`), MI commands (`tls_trace`)
    /// and `$proto`: `tcp`, `tls`, `ws`, `wss`.
    pub fn name(self) -> &'static str {
        match self {
            NetProto::Tcp => "tcp",
            NetProto::Tls => "tls",
            NetProto::Ws => "ws",
            NetProto::Wss => "wss",
        }
    }

    /// The ip-proto chunk value OpenSIPS writes: 6 for TCP, its stand-ins 22 for TLS and 50 for
    /// WS and WSS (see [`crate::ip_proto`]).
    pub fn ip_proto(self) -> u8 {
        match self {
            NetProto::Tcp => ip_proto::TCP,
            NetProto::Tls => ip_proto::TLS,
            NetProto::Ws | NetProto::Wss => ip_proto::WS,
        }
    }

    /// Whether the protocol runs TLS (TLS and WSS).
    pub fn is_tls(self) -> bool {
        matches!(self, NetProto::Tls | NetProto::Wss)
    }

    /// Whether the protocol is WebSocket (WS and WSS).
    pub fn is_ws(self) -> bool {
        matches!(self, NetProto::Ws | NetProto::Wss)
    }
}

impl fmt::Display for NetProto {
    /// The lower-case name, as [`FromStr`] reads it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A protocol name that is none of `tcp`, `tls`, `ws`, `wss`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol '{0}', expected one of: tcp, tls, ws, wss")]
pub struct UnknownNetProto(pub String);

impl FromStr for NetProto {
    type Err = UnknownNetProto;

    /// The lower-case name exactly, as configs write it.
    fn from_str(name: &str) -> Result<Self, UnknownNetProto> {
        NetProto::ALL
            .into_iter()
            .find(|proto| proto.name() == name)
            .ok_or_else(|| UnknownNetProto(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_ip_protos_are_opensips_s() {
        let facts: Vec<_> = NetProto::ALL
            .iter()
            .map(|p| (p.index(), p.name(), p.label(), p.ip_proto()))
            .collect();
        assert_eq!(
            facts,
            [
                (0, "tcp", "TCP", 6),
                (1, "tls", "TLS", 22),
                (2, "ws", "WS", 50),
                (3, "wss", "WSS", 50)
            ]
        );
        assert_eq!(
            NetProto::ALL.map(|p| (p.is_tls(), p.is_ws())),
            [(false, false), (true, false), (false, true), (true, true)]
        );
    }

    #[test]
    fn the_name_reads_back_and_nothing_else_does() {
        for proto in NetProto::ALL {
            assert_eq!(proto.to_string().parse(), Ok(proto));
        }
        assert_eq!(
            "TCP".parse::<NetProto>(),
            Err(UnknownNetProto("TCP".into()))
        );
        assert_eq!(
            "udp".parse::<NetProto>().unwrap_err().to_string(),
            "unknown protocol 'udp', expected one of: tcp, tls, ws, wss"
        );
    }
}
