//! heptap-hep: the HEP (Homer Encapsulation Protocol) wire format as heptap speaks it.
//!
//! It owns HEPv1/v2/v3 encoding ([`Encoder`], from a tracer's [`TraceMessage`]) and decoding
//! ([`decode`] into [`Packet`]), the chunk and protocol-type numbers ([`chunk`], [`proto_type`],
//! [`ip_proto`]), the HEP [`Version`], the connection protocols and their OpenSIPS labels
//! ([`NetProto`]), OpenSIPS's payload formats ([`payload`]: JSON and homer5), the hep-dump JSON
//! line ([`Packet::to_json`]) and the TCP/TLS stream framer ([`Hep3Framer`]). It does no I/O, has
//! no async runtime and knows nothing about destinations, queues or configuration files.
//!
//! With the `serde` feature, [`NetProto`] and [`Version`] read and write their config forms.
//!
//! Map: `message` (what goes in, the version), `net_proto` (connection protocols), `encode`
//! (bytes out, OpenSIPS chunk order), `decode` (bytes in, typed errors with offsets), `payload`
//! (JSON/homer5 text), `dump` (JSON lines), `framer`.

#![forbid(unsafe_code)]

pub mod chunk;
mod decode;
mod dump;
mod encode;
mod framer;
pub mod ip_proto;
mod message;
mod net_proto;
pub mod payload;
pub mod proto_type;

pub use decode::{AF_INET, AF_INET6, Chunk, DecodeError, Packet, decode, decode_bytes};
pub use encode::{EncodeError, Encoder, MAX_PACKET_LEN};
pub use framer::{FrameError, Hep3Framer};
pub use message::{Part, TraceMessage, UnknownVersion, Version};
pub use net_proto::{NetProto, UnknownNetProto};
pub use payload::PayloadMode;
