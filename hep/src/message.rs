//! What a tracer hands to the encoder, and the HEP version it is encoded in.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use bytes::Bytes;

/// HEP protocol version of a packet or a destination (OpenSIPS `hep_id ... version=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// HEPv1: fixed header, addresses, payload. No timestamp, no capture id. UDP only.
    V1 = 1,
    /// HEPv2: HEPv1 plus a 12-byte little-endian time header with a 16-bit capture id. UDP only.
    V2 = 2,
    /// HEPv3: "HEP3" + length + type-length-value chunks; the default.
    V3 = 3,
}

impl Version {
    /// The version number as written in configs, dumps and on the wire.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The version of number `n` (1, 2 or 3). `i128` holds every integer a config can give.
    fn from_number(n: impl Into<i128>) -> Result<Self, UnknownVersion> {
        match n.into() {
            1 => Ok(Version::V1),
            2 => Ok(Version::V2),
            3 => Ok(Version::V3),
            other => Err(UnknownVersion::Number(other)),
        }
    }
}

impl fmt::Display for Version {
    /// The number: `1`, `2` or `3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// A version that is not 1, 2 or 3.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnknownVersion {
    /// A number out of range.
    #[error("unknown HEP version {0}, expected 1, 2 or 3")]
    Number(i128),
    /// Text that is not a number.
    #[error("unknown HEP version '{0}', expected 1, 2 or 3")]
    Text(String),
}

impl FromStr for Version {
    type Err = UnknownVersion;

    /// The number, surrounding blanks ignored (`version= 3` in a `hep_id` string).
    fn from_str(s: &str) -> Result<Self, UnknownVersion> {
        let t = s.trim();
        match t.parse::<u64>() {
            Ok(n) => Version::from_number(n),
            Err(_) => Err(UnknownVersion::Text(t.to_owned())),
        }
    }
}

/// Configs write the version as a number (`version = 3`); a string holding one is taken too.
#[cfg(feature = "serde")]
impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.number())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Version;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("1, 2 or 3")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Version, E> {
                Version::from_number(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Version, E> {
                Version::from_number(v).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Version, E> {
                v.parse().map_err(E::custom)
            }
        }
        // Asking for an integer lets figment's lossy mode turn "3" from the environment into 3.
        d.deserialize_u8(Visitor)
    }
}

/// A key/value pair of a payload or an extra correlation; keys are mostly static names.
pub type Part = (Cow<'static, str>, Cow<'static, str>);

/// What a tracer hands over: OpenSIPS's create_trace_message + add_payload_part +
/// add_extra_correlation. One `TraceMessage` can be encoded for many destinations, each with its
/// own [`crate::Encoder`] settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceMessage {
    /// Chunk 0x000B: what the payload is (see [`crate::proto_type`]).
    pub proto_type: u8,
    /// Chunk 0x0002: the IP protocol, or OpenSIPS's stand-in for TLS/WS (see [`crate::ip_proto`]).
    pub ip_proto: u8,
    /// Source address and port (for connection events: the remote peer, as OpenSIPS does).
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Chunk 0x0009: capture time, seconds since the epoch.
    pub ts_sec: u32,
    /// Chunk 0x000A: capture time, microseconds within the second.
    pub ts_usec: u32,
    /// Chunk 0x0011: the join key in Homer (Call-ID for SIP, connection id for net events).
    pub correlation_id: Option<Cow<'static, str>>,
    /// Raw payload, used when `parts` is empty (e.g. a SIP message as Homer expects it).
    pub payload: Option<Bytes>,
    /// Ordered payload parts; when non-empty they ARE the payload (JSON object or homer5 values).
    pub parts: Vec<Part>,
    /// Ordered extra correlations (JSON: chunk 0x0065; homer5: only a "sip*" key survives as
    /// 0x0011).
    pub extra_correlation: Vec<Part>,
}

impl TraceMessage {
    /// A message with addresses, protocol numbers and time, and nothing else yet.
    pub fn new(
        proto_type: u8,
        ip_proto: u8,
        src: SocketAddr,
        dst: SocketAddr,
        ts_sec: u32,
        ts_usec: u32,
    ) -> Self {
        TraceMessage {
            proto_type,
            ip_proto,
            src,
            dst,
            ts_sec,
            ts_usec,
            correlation_id: None,
            payload: None,
            parts: Vec::new(),
            extra_correlation: Vec::new(),
        }
    }

    /// Appends a payload part (OpenSIPS `add_payload_part`); duplicate keys are kept.
    pub fn part(
        mut self,
        key: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.parts.push((key.into(), value.into()));
        self
    }

    /// Appends an extra correlation (OpenSIPS `add_extra_correlation`).
    pub fn extra_correlation(
        mut self,
        key: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.extra_correlation.push((key.into(), value.into()));
        self
    }

    /// Sets the correlation id (chunk 0x0011).
    pub fn correlation(mut self, id: impl Into<Cow<'static, str>>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the raw payload (used only while there are no payload parts).
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = Some(payload.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_reads_back_from_its_number_and_nothing_else_does() {
        for version in [Version::V1, Version::V2, Version::V3] {
            assert_eq!(version.to_string().parse(), Ok(version));
        }
        assert_eq!(" 3 ".parse(), Ok(Version::V3));
        assert_eq!(
            "4".parse::<Version>().unwrap_err().to_string(),
            "unknown HEP version 4, expected 1, 2 or 3"
        );
        assert_eq!(
            "three".parse::<Version>().unwrap_err().to_string(),
            "unknown HEP version 'three', expected 1, 2 or 3"
        );
        assert_eq!(Version::from_number(-1), Err(UnknownVersion::Number(-1)));
    }
}
