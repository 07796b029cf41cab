//! Decoding HEPv1, HEPv2 and HEPv3 packets into [`Packet`].
//!
//! Strict where the format is unambiguous (lengths, fixed chunk sizes, v1/v2 header sizes) and
//! lossless elsewhere: vendor chunks, unassigned chunks and repeated chunks are kept in
//! [`Packet::chunks`]. Every failure is a [`DecodeError`] naming the byte offset; nothing panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use crate::chunk;
use crate::message::Version;

/// AF_INET as HEP carries it.
pub const AF_INET: u8 = 2;
/// AF_INET6 as HEP carries it (the Linux number).
pub const AF_INET6: u8 = 10;

/// One HEP3 chunk that has no field of its own in [`Packet`] (vendor, unassigned, or repeated).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Chunk {
    /// Vendor id; 0 for the generic chunks of the specification.
    pub vendor: u16,
    /// Chunk type id within the vendor's space.
    pub id: u16,
    /// The chunk's data, without the 6-byte chunk header.
    pub data: Bytes,
}

/// A decoded packet, any version. Fields are `None` when the packet did not carry them (HEPv3
/// chunks are all optional; v1/v2 always carry the header fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Which wire format the packet used.
    pub version: Version,
    /// Chunk 0x0001 / `hp_f`: 2 (AF_INET) or 10 (AF_INET6), as the sender wrote it.
    pub ip_family: Option<u8>,
    /// Chunk 0x0002 / `hp_p`: IP protocol or stand-in.
    pub ip_proto: Option<u8>,
    /// Chunk 0x0003 or 0x0005: source address.
    pub src_ip: Option<IpAddr>,
    /// Chunk 0x0004 or 0x0006: destination address.
    pub dst_ip: Option<IpAddr>,
    /// Chunk 0x0007: source port.
    pub src_port: Option<u16>,
    /// Chunk 0x0008: destination port.
    pub dst_port: Option<u16>,
    /// Chunk 0x0009 (v2: time header): seconds.
    pub ts_sec: Option<u32>,
    /// Chunk 0x000A (v2: time header): microseconds.
    pub ts_usec: Option<u32>,
    /// Chunk 0x000B: protocol type of the payload (absent in v1/v2).
    pub proto_type: Option<u8>,
    /// Chunk 0x000C (v2: 16-bit time header field): capture agent id.
    pub capture_id: Option<u32>,
    /// Chunk 0x000D: keep-alive timer.
    pub keep_alive: Option<u16>,
    /// Chunk 0x000E: auth key.
    pub auth_key: Option<Bytes>,
    /// Chunk 0x000F (v1/v2: everything after the headers): the payload.
    pub payload: Option<Bytes>,
    /// Chunk 0x0010: compressed payload, kept as received (not inflated).
    pub compressed_payload: Option<Bytes>,
    /// Chunk 0x0011: correlation id.
    pub correlation_id: Option<Bytes>,
    /// Chunk 0x0012: VLAN id.
    pub vlan: Option<u16>,
    /// Chunk 0x0013: capture agent name.
    pub node_name: Option<Bytes>,
    /// Chunk 0x0065: OpenSIPS's extra correlation (JSON text).
    pub extra_correlation: Option<Bytes>,
    /// Every other chunk, in wire order: vendor chunks, generic chunks without a field above, and
    /// repeats of chunks whose field was already filled by an earlier one.
    pub chunks: Vec<Chunk>,
}

impl Packet {
    /// An empty packet of `version`; fill the fields and [`Packet::encode`] it.
    pub fn new(version: Version) -> Self {
        Packet {
            version,
            ip_family: None,
            ip_proto: None,
            src_ip: None,
            dst_ip: None,
            src_port: None,
            dst_port: None,
            ts_sec: None,
            ts_usec: None,
            proto_type: None,
            capture_id: None,
            keep_alive: None,
            auth_key: None,
            payload: None,
            compressed_payload: None,
            correlation_id: None,
            vlan: None,
            node_name: None,
            extra_correlation: None,
            chunks: Vec::new(),
        }
    }

    /// Source address and port, when both were present.
    pub fn src(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.src_ip?, self.src_port?))
    }

    /// Destination address and port, when both were present.
    pub fn dst(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.dst_ip?, self.dst_port?))
    }
}

/// Why a packet could not be decoded, and at which byte offset of the packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the structure at `offset` needs.
    #[error("truncated at offset {offset}: {what} needs {needed} bytes, {available} available")]
    Truncated {
        /// Where the incomplete structure starts.
        offset: usize,
        /// What was being read.
        what: &'static str,
        /// How many bytes it needs.
        needed: usize,
        /// How many were left.
        available: usize,
    },
    /// The first bytes are neither "HEP3"/"EEP3" nor a v1/v2 version byte.
    #[error("not a HEP packet at offset 0: starts with {found:02x?}")]
    BadMagic {
        /// Up to four leading bytes.
        found: Vec<u8>,
    },
    /// The HEP3 total length field disagrees with the packet size or is below 6.
    #[error("bad HEP3 total length at offset 4: header says {declared}, packet has {actual} bytes")]
    BadTotalLength {
        /// The value of the length field.
        declared: u16,
        /// The number of bytes handed to the decoder.
        actual: usize,
    },
    /// A chunk's length field is below the 6-byte chunk header.
    #[error(
        "bad chunk length at offset {offset}: chunk {vendor:#06x}/{id:#06x} says {len}, minimum is 6"
    )]
    ChunkTooShort {
        /// Offset of the chunk header.
        offset: usize,
        /// The chunk's vendor.
        vendor: u16,
        /// The chunk's type id.
        id: u16,
        /// The length field.
        len: u16,
    },
    /// A chunk's length runs past the end of the packet.
    #[error(
        "chunk overruns the packet at offset {offset}: chunk {vendor:#06x}/{id:#06x} says {len} bytes, {remaining} remain"
    )]
    ChunkOverrun {
        /// Offset of the chunk header.
        offset: usize,
        /// The chunk's vendor.
        vendor: u16,
        /// The chunk's type id.
        id: u16,
        /// The length field.
        len: u16,
        /// Bytes left in the packet from `offset`.
        remaining: usize,
    },
    /// A generic fixed-size chunk with the wrong data size.
    #[error("bad {name} chunk at offset {offset}: data is {found} bytes, expected {expected}")]
    BadChunkSize {
        /// Offset of the chunk header.
        offset: usize,
        /// Chunk name (see [`chunk::name`]).
        name: &'static str,
        /// Expected data size.
        expected: usize,
        /// Actual data size.
        found: usize,
    },
    /// A HEPv1/v2 address family other than 2 or 10.
    #[error("bad HEPv{version} address family at offset 2: {family} (expected 2 or 10)")]
    BadFamily {
        /// 1 or 2.
        version: u8,
        /// The `hp_f` byte.
        family: u8,
    },
    /// A HEPv1/v2 `hp_l` that is not header + addresses (16 for IPv4, 40 for IPv6).
    #[error("bad HEPv{version} header length at offset 1: {hp_l} (expected {expected})")]
    BadHeaderLength {
        /// 1 or 2.
        version: u8,
        /// The `hp_l` byte.
        hp_l: u8,
        /// 16 or 40, per the family.
        expected: u8,
    },
}

impl DecodeError {
    /// Byte offset in the packet where the problem was found.
    pub fn offset(&self) -> usize {
        match self {
            DecodeError::Truncated { offset, .. }
            | DecodeError::ChunkTooShort { offset, .. }
            | DecodeError::ChunkOverrun { offset, .. }
            | DecodeError::BadChunkSize { offset, .. } => *offset,
            DecodeError::BadMagic { .. } => 0,
            DecodeError::BadTotalLength { .. } => 4,
            DecodeError::BadFamily { .. } => 2,
            DecodeError::BadHeaderLength { .. } => 1,
        }
    }
}

/// Decodes one HEP packet of any version (copies `buf` once; see [`decode_bytes`]).
pub fn decode(buf: &[u8]) -> Result<Packet, DecodeError> {
    decode_bytes(Bytes::copy_from_slice(buf))
}

/// Decodes one HEP packet; payload and other octet fields are zero-copy slices of `buf`.
///
/// A HEP3 packet must be exactly as long as its length field says (a stream is cut into frames
/// by [`crate::Hep3Framer`] first). For v1/v2 the payload is everything after the headers.
pub fn decode_bytes(buf: Bytes) -> Result<Packet, DecodeError> {
    match buf.first() {
        None => Err(DecodeError::Truncated {
            offset: 0,
            what: "HEP header",
            needed: 6,
            available: 0,
        }),
        Some(1) => decode_v12(buf, Version::V1),
        Some(2) => decode_v12(buf, Version::V2),
        Some(b'H' | b'E') => decode_v3(buf),
        Some(_) => Err(bad_magic(&buf)),
    }
}

fn bad_magic(buf: &[u8]) -> DecodeError {
    DecodeError::BadMagic {
        found: buf[..buf.len().min(4)].to_vec(),
    }
}

fn truncated(offset: usize, what: &'static str, needed: usize, available: usize) -> DecodeError {
    DecodeError::Truncated {
        offset,
        what,
        needed,
        available,
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn decode_v12(buf: Bytes, version: Version) -> Result<Packet, DecodeError> {
    let v = version.number();
    if buf.len() < 8 {
        return Err(truncated(0, "HEPv1/v2 header", 8, buf.len()));
    }
    let (hp_l, family, ip_proto) = (buf[1], buf[2], buf[3]);
    let addr_len = match family {
        AF_INET => 4,
        AF_INET6 => 16,
        _ => return Err(DecodeError::BadFamily { version: v, family }),
    };
    let expected = 8 + 2 * addr_len as u8;
    if hp_l != expected {
        return Err(DecodeError::BadHeaderLength {
            version: v,
            hp_l,
            expected,
        });
    }
    let hp_l = usize::from(hp_l);
    if buf.len() < hp_l {
        return Err(truncated(8, "HEPv1/v2 addresses", hp_l - 8, buf.len() - 8));
    }
    let mut p = Packet::new(version);
    p.ip_family = Some(family);
    p.ip_proto = Some(ip_proto);
    p.src_port = Some(be16(&buf, 4));
    p.dst_port = Some(be16(&buf, 6));
    p.src_ip = Some(read_ip(&buf[8..8 + addr_len]));
    p.dst_ip = Some(read_ip(&buf[8 + addr_len..hp_l]));
    let mut end = hp_l;
    if version == Version::V2 {
        // struct hep_timehdr written with memcpy: host (little-endian) order, 10 bytes + 2 padding.
        if buf.len() < end + 12 {
            return Err(truncated(end, "HEPv2 time header", 12, buf.len() - end));
        }
        p.ts_sec = Some(le32(&buf, end));
        p.ts_usec = Some(le32(&buf, end + 4));
        p.capture_id = Some(u32::from(u16::from_le_bytes([buf[end + 8], buf[end + 9]])));
        end += 12;
    }
    p.payload = Some(buf.slice(end..));
    Ok(p)
}

/// 4 bytes -> IPv4, 16 bytes -> IPv6; callers guarantee one of the two sizes.
fn read_ip(b: &[u8]) -> IpAddr {
    if let Ok(a) = <[u8; 4]>::try_from(b) {
        IpAddr::V4(Ipv4Addr::from(a))
    } else if let Ok(a) = <[u8; 16]>::try_from(b) {
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

fn decode_v3(buf: Bytes) -> Result<Packet, DecodeError> {
    if buf.len() < 4 {
        return if b"HEP3".starts_with(&buf) || b"EEP3".starts_with(&buf) {
            Err(truncated(0, "HEP3 header", 6, buf.len()))
        } else {
            Err(bad_magic(&buf))
        };
    }
    if &buf[..4] != b"HEP3" && &buf[..4] != b"EEP3" {
        return Err(bad_magic(&buf));
    }
    if buf.len() < 6 {
        return Err(truncated(0, "HEP3 header", 6, buf.len()));
    }
    let declared = be16(&buf, 4);
    if usize::from(declared) != buf.len() || declared < 6 {
        return Err(DecodeError::BadTotalLength {
            declared,
            actual: buf.len(),
        });
    }
    let mut p = Packet::new(Version::V3);
    let mut at = 6;
    while at < buf.len() {
        let remaining = buf.len() - at;
        if remaining < 6 {
            return Err(truncated(at, "chunk header", 6, remaining));
        }
        let vendor = be16(&buf, at);
        let id = be16(&buf, at + 2);
        let len = be16(&buf, at + 4);
        if len < 6 {
            return Err(DecodeError::ChunkTooShort {
                offset: at,
                vendor,
                id,
                len,
            });
        }
        if usize::from(len) > remaining {
            return Err(DecodeError::ChunkOverrun {
                offset: at,
                vendor,
                id,
                len,
                remaining,
            });
        }
        let range = at + 6..at + usize::from(len);
        // Fixed-size fields are read from the slice; only octet data becomes a `Bytes` view.
        let slice = || buf.slice(range.clone());
        if !p.take_chunk(vendor, id, &buf[range.clone()], slice, at)? {
            p.chunks.push(Chunk {
                vendor,
                id,
                data: slice(),
            });
        }
        at += usize::from(len);
    }
    Ok(p)
}

/// Fixed-size data of a chunk, or the error naming it.
fn fixed<const N: usize>(data: &[u8], id: u16, offset: usize) -> Result<[u8; N], DecodeError> {
    <[u8; N]>::try_from(data).map_err(|_| DecodeError::BadChunkSize {
        offset,
        name: chunk::name(chunk::GENERIC_VENDOR, id).unwrap_or("generic"),
        expected: N,
        found: data.len(),
    })
}

/// Like [`fill`], making the value only when the slot is free.
fn fill_with<T>(slot: &mut Option<T>, make: impl Fn() -> T) -> bool {
    if slot.is_some() {
        return false;
    }
    *slot = Some(make());
    true
}

/// Stores `value` in `slot` unless it is already filled; reports whether it was stored.
fn fill<T>(slot: &mut Option<T>, value: T) -> bool {
    if slot.is_some() {
        return false;
    }
    *slot = Some(value);
    true
}

impl Packet {
    /// Puts a generic chunk into its field. Returns false when the chunk has no field, or its
    /// field is already filled (the caller keeps it in `chunks`).
    fn take_chunk(
        &mut self,
        vendor: u16,
        id: u16,
        d: &[u8],
        data: impl Fn() -> Bytes,
        offset: usize,
    ) -> Result<bool, DecodeError> {
        use chunk::*;
        if vendor != GENERIC_VENDOR {
            return Ok(false);
        }
        Ok(match id {
            FAMILY => fill(&mut self.ip_family, fixed::<1>(d, id, offset)?[0]),
            IP_PROTO => fill(&mut self.ip_proto, fixed::<1>(d, id, offset)?[0]),
            SRC_IPV4 => fill(
                &mut self.src_ip,
                Ipv4Addr::from(fixed::<4>(d, id, offset)?).into(),
            ),
            DST_IPV4 => fill(
                &mut self.dst_ip,
                Ipv4Addr::from(fixed::<4>(d, id, offset)?).into(),
            ),
            SRC_IPV6 => fill(
                &mut self.src_ip,
                Ipv6Addr::from(fixed::<16>(d, id, offset)?).into(),
            ),
            DST_IPV6 => fill(
                &mut self.dst_ip,
                Ipv6Addr::from(fixed::<16>(d, id, offset)?).into(),
            ),
            SRC_PORT => fill(
                &mut self.src_port,
                u16::from_be_bytes(fixed(d, id, offset)?),
            ),
            DST_PORT => fill(
                &mut self.dst_port,
                u16::from_be_bytes(fixed(d, id, offset)?),
            ),
            TS_SEC => fill(&mut self.ts_sec, u32::from_be_bytes(fixed(d, id, offset)?)),
            TS_USEC => fill(&mut self.ts_usec, u32::from_be_bytes(fixed(d, id, offset)?)),
            PROTO_TYPE => fill(&mut self.proto_type, fixed::<1>(d, id, offset)?[0]),
            CAPTURE_ID => fill(
                &mut self.capture_id,
                u32::from_be_bytes(fixed(d, id, offset)?),
            ),
            KEEP_ALIVE => fill(
                &mut self.keep_alive,
                u16::from_be_bytes(fixed(d, id, offset)?),
            ),
            VLAN_ID => fill(&mut self.vlan, u16::from_be_bytes(fixed(d, id, offset)?)),
            AUTH_KEY => fill_with(&mut self.auth_key, &data),
            PAYLOAD => fill_with(&mut self.payload, &data),
            COMPRESSED_PAYLOAD => fill_with(&mut self.compressed_payload, &data),
            CORRELATION_ID => fill_with(&mut self.correlation_id, &data),
            NODE_NAME => fill_with(&mut self.node_name, &data),
            EXTRA_CORRELATION => fill_with(&mut self.extra_correlation, &data),
            _ => false,
        })
    }
}
