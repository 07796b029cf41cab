//! Encoding [`TraceMessage`]s (and decoded [`Packet`]s) into HEPv1, HEPv2 and HEPv3.
//!
//! HEPv3 chunks are written in the order and with the sizes OpenSIPS uses
//! (opensips-tracing.md §1.2, §8), so capture nodes that check exact chunk sizes accept them:
//! family, ip proto, src port, dst port, ts sec, ts usec, proto type, capture id, src address,
//! dst address, payload (0x000F, omitted when there is none), extra correlation (0x0065, JSON mode
//! only), correlation id (0x0011), then heptap's extras: auth key (0x000E) and node name (0x0013).

use std::net::{IpAddr, SocketAddr};

use crate::chunk;
use crate::decode::{AF_INET, AF_INET6, Packet};
use crate::message::{TraceMessage, Version};
use crate::payload::{self, PayloadMode};

/// The largest HEP packet there is: the HEP3 length field is 16 bits, and heptap holds v1/v2 to
/// the same bound.
pub const MAX_PACKET_LEN: usize = 65535;

/// Why a packet could not be encoded. On error the output buffer is left as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The packet would exceed [`MAX_PACKET_LEN`]; heptap refuses rather than truncating.
    #[error("HEP packet would be {len} bytes, more than the 65535 a HEP packet can hold")]
    TooLarge {
        /// The size the whole packet would have had.
        len: usize,
    },
    /// HEPv2 carries a 16-bit capture id; heptap refuses rather than truncating it as OpenSIPS does.
    #[error("capture id {capture_id} does not fit the 16-bit HEPv2 capture id field")]
    CaptureIdOutOfRange {
        /// The configured capture id.
        capture_id: u32,
    },
}

/// Per-destination encoding settings (OpenSIPS `hep_id` version, `homer5_on`/`homer5_delim`,
/// `hep_capture_id`, plus heptap's `auth_key` and `node_name`). `Debug` hides the auth key.
#[derive(Clone)]
pub struct Encoder {
    /// Wire format of the destination.
    pub version: Version,
    /// How payload parts and extra correlations are written.
    pub mode: PayloadMode,
    /// Chunk 0x000C (16 bits in HEPv2, absent in HEPv1).
    pub capture_id: u32,
    /// Chunk 0x000E, HEPv3 only.
    pub auth_key: Option<Vec<u8>>,
    /// Chunk 0x0013, HEPv3 only.
    pub node_name: Option<String>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("version", &self.version)
            .field("mode", &self.mode)
            .field("capture_id", &self.capture_id)
            .field("auth_key", &self.auth_key.as_ref().map(|_| "<redacted>"))
            .field("node_name", &self.node_name)
            .finish()
    }
}

impl Default for Encoder {
    /// HEPv3, compact JSON payloads, capture id 1 (OpenSIPS's default), no auth key or node name.
    fn default() -> Self {
        Encoder {
            version: Version::V3,
            mode: PayloadMode::default(),
            capture_id: 1,
            auth_key: None,
            node_name: None,
        }
    }
}

impl Encoder {
    /// Default settings (see [`Encoder::default`]) for `version`.
    pub fn new(version: Version) -> Self {
        Encoder {
            version,
            ..Encoder::default()
        }
    }

    /// Appends one complete HEP packet to `out` (does not clear it). On error `out` is left as
    /// it was.
    ///
    /// HEPv1/v2 carry no chunks: the correlation id, extra correlations, auth key and node name
    /// are dropped, and the payload is the built parts text (or the raw payload, or nothing).
    pub fn encode(&self, msg: &TraceMessage, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = match self.version {
            Version::V3 => self.encode_v3(msg, out, start),
            Version::V1 | Version::V2 => self.encode_v12(msg, out, start),
        };
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_v3(
        &self,
        msg: &TraceMessage,
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), EncodeError> {
        use chunk::*;
        let (family, src_ip, dst_ip) = same_family(msg.src.ip(), msg.dst.ip());
        out.extend_from_slice(b"HEP3\0\0");
        put_u8(out, FAMILY, family);
        put_u8(out, IP_PROTO, msg.ip_proto);
        put_u16(out, SRC_PORT, msg.src.port());
        put_u16(out, DST_PORT, msg.dst.port());
        put_u32(out, TS_SEC, msg.ts_sec);
        put_u32(out, TS_USEC, msg.ts_usec);
        put_u8(out, PROTO_TYPE, msg.proto_type);
        put_u32(out, CAPTURE_ID, self.capture_id);
        put_ip(out, SRC_IPV4, SRC_IPV6, src_ip);
        put_ip(out, DST_IPV4, DST_IPV6, dst_ip);
        if !msg.parts.is_empty() {
            put_with(out, PAYLOAD, |out| self.write_parts(out, msg));
        } else if let Some(raw) = &msg.payload {
            put_bytes(out, PAYLOAD, raw);
        }
        let correlation = match &self.mode {
            PayloadMode::Json { pretty } => {
                if !msg.extra_correlation.is_empty() {
                    put_with(out, EXTRA_CORRELATION, |out| {
                        payload::write_json(out, &msg.extra_correlation, *pretty)
                    });
                }
                msg.correlation_id.as_deref()
            }
            PayloadMode::Homer5 { .. } => payload::homer5_correlation(&msg.extra_correlation)
                .or(msg.correlation_id.as_deref()),
        };
        if let Some(correlation) = correlation {
            put_bytes(out, CORRELATION_ID, correlation.as_bytes());
        }
        if let Some(key) = &self.auth_key {
            put_bytes(out, AUTH_KEY, key);
        }
        if let Some(name) = &self.node_name {
            put_bytes(out, NODE_NAME, name.as_bytes());
        }
        finish_v3(out, start)
    }

    fn encode_v12(
        &self,
        msg: &TraceMessage,
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), EncodeError> {
        put_v12_header(
            out,
            self.version,
            msg.ip_proto,
            msg.src,
            msg.dst,
            (msg.ts_sec, msg.ts_usec),
            self.capture_id,
        )?;
        if !msg.parts.is_empty() {
            self.write_parts(out, msg);
        } else if let Some(raw) = &msg.payload {
            out.extend_from_slice(raw);
        }
        check_len(out, start)
    }

    fn write_parts(&self, out: &mut Vec<u8>, msg: &TraceMessage) {
        match &self.mode {
            PayloadMode::Json { pretty } => payload::write_json(out, &msg.parts, *pretty),
            PayloadMode::Homer5 { delim } => payload::write_homer5(out, &msg.parts, delim),
        }
    }
}

impl Packet {
    /// Appends this packet to `out` in its own version (HEPv3 packets are written as "HEP3").
    ///
    /// HEPv3: the fields that are present, in OpenSIPS's order, then keep-alive and VLAN, payload,
    /// compressed payload, extra correlation, correlation id, auth key, node name, then
    /// [`Packet::chunks`] in order. HEPv1/v2: header fields (absent ones as zero, addresses as
    /// 0.0.0.0) and the payload; every other field is dropped. On error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = match self.version {
            Version::V3 => self.encode_v3(out, start),
            Version::V1 | Version::V2 => self.encode_v12(out, start),
        };
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_v3(&self, out: &mut Vec<u8>, start: usize) -> Result<(), EncodeError> {
        use chunk::*;
        out.extend_from_slice(b"HEP3\0\0");
        let u8s = [(FAMILY, self.ip_family), (IP_PROTO, self.ip_proto)];
        for (id, v) in u8s {
            if let Some(v) = v {
                put_u8(out, id, v);
            }
        }
        for (id, v) in [(SRC_PORT, self.src_port), (DST_PORT, self.dst_port)] {
            if let Some(v) = v {
                put_u16(out, id, v);
            }
        }
        for (id, v) in [(TS_SEC, self.ts_sec), (TS_USEC, self.ts_usec)] {
            if let Some(v) = v {
                put_u32(out, id, v);
            }
        }
        if let Some(v) = self.proto_type {
            put_u8(out, PROTO_TYPE, v);
        }
        if let Some(v) = self.capture_id {
            put_u32(out, CAPTURE_ID, v);
        }
        if let Some(ip) = self.src_ip {
            put_ip(out, SRC_IPV4, SRC_IPV6, ip);
        }
        if let Some(ip) = self.dst_ip {
            put_ip(out, DST_IPV4, DST_IPV6, ip);
        }
        for (id, v) in [(KEEP_ALIVE, self.keep_alive), (VLAN_ID, self.vlan)] {
            if let Some(v) = v {
                put_u16(out, id, v);
            }
        }
        let octets = [
            (PAYLOAD, &self.payload),
            (COMPRESSED_PAYLOAD, &self.compressed_payload),
            (EXTRA_CORRELATION, &self.extra_correlation),
            (CORRELATION_ID, &self.correlation_id),
            (AUTH_KEY, &self.auth_key),
            (NODE_NAME, &self.node_name),
        ];
        for (id, v) in octets {
            if let Some(v) = v {
                put_bytes(out, id, v);
            }
        }
        for c in &self.chunks {
            put_vendor_bytes(out, c.vendor, c.id, &c.data);
        }
        finish_v3(out, start)
    }

    fn encode_v12(&self, out: &mut Vec<u8>, start: usize) -> Result<(), EncodeError> {
        let unspecified = IpAddr::from([0u8; 4]);
        put_v12_header(
            out,
            self.version,
            self.ip_proto.unwrap_or(0),
            SocketAddr::new(
                self.src_ip.unwrap_or(unspecified),
                self.src_port.unwrap_or(0),
            ),
            SocketAddr::new(
                self.dst_ip.unwrap_or(unspecified),
                self.dst_port.unwrap_or(0),
            ),
            (self.ts_sec.unwrap_or(0), self.ts_usec.unwrap_or(0)),
            self.capture_id.unwrap_or(0),
        )?;
        if let Some(payload) = &self.payload {
            out.extend_from_slice(payload);
        }
        check_len(out, start)
    }
}

/// One family for both addresses: a chunk set (and a v1/v2 header) has a single family, so when
/// src and dst differ the IPv4 one is written as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
/// instead of refusing to trace, as Kamailio does.
fn same_family(src: IpAddr, dst: IpAddr) -> (u8, IpAddr, IpAddr) {
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (AF_INET, src, dst),
        (IpAddr::V6(_), IpAddr::V6(_)) => (AF_INET6, src, dst),
        (IpAddr::V4(s), IpAddr::V6(_)) => (AF_INET6, s.to_ipv6_mapped().into(), dst),
        (IpAddr::V6(_), IpAddr::V4(d)) => (AF_INET6, src, d.to_ipv6_mapped().into()),
    }
}

/// HEPv1/v2 fixed header (hp_l = header + addresses), addresses, and for v2 the 12-byte
/// little-endian time header (tv_sec, tv_usec, 16-bit captid, 2 zero padding bytes).
fn put_v12_header(
    out: &mut Vec<u8>,
    version: Version,
    ip_proto: u8,
    src: SocketAddr,
    dst: SocketAddr,
    (ts_sec, ts_usec): (u32, u32),
    capture_id: u32,
) -> Result<(), EncodeError> {
    let captid = if version == Version::V2 {
        u16::try_from(capture_id).map_err(|_| EncodeError::CaptureIdOutOfRange { capture_id })?
    } else {
        0
    };
    let (family, src_ip, dst_ip) = same_family(src.ip(), dst.ip());
    let hp_l = if family == AF_INET { 16 } else { 40 };
    out.extend_from_slice(&[version.number(), hp_l, family, ip_proto]);
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    put_ip_octets(out, src_ip);
    put_ip_octets(out, dst_ip);
    if version == Version::V2 {
        out.extend_from_slice(&ts_sec.to_le_bytes());
        out.extend_from_slice(&ts_usec.to_le_bytes());
        out.extend_from_slice(&captid.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    Ok(())
}

fn put_ip_octets(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

fn check_len(out: &[u8], start: usize) -> Result<(), EncodeError> {
    let len = out.len() - start;
    if len > MAX_PACKET_LEN {
        return Err(EncodeError::TooLarge { len });
    }
    Ok(())
}

/// Checks the size and writes the HEP3 total length at `start + 4`.
fn finish_v3(out: &mut [u8], start: usize) -> Result<(), EncodeError> {
    check_len(out, start)?;
    patch_u16(out, start + 4, out.len() - start);
    Ok(())
}

/// Writes `len` as a big-endian u16 at `at`. Lengths above 65535 only occur in packets that
/// [`check_len`] then refuses, so saturating here never reaches the wire.
fn patch_u16(out: &mut [u8], at: usize, len: usize) {
    let v = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    out[at..at + 2].copy_from_slice(&v);
}

fn put_header(out: &mut Vec<u8>, vendor: u16, id: u16, data_len: usize) {
    out.extend_from_slice(&vendor.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    let len = u16::try_from(data_len + 6).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

fn put_u8(out: &mut Vec<u8>, id: u16, v: u8) {
    put_header(out, chunk::GENERIC_VENDOR, id, 1);
    out.push(v);
}

fn put_u16(out: &mut Vec<u8>, id: u16, v: u16) {
    put_header(out, chunk::GENERIC_VENDOR, id, 2);
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, id: u16, v: u32) {
    put_header(out, chunk::GENERIC_VENDOR, id, 4);
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_ip(out: &mut Vec<u8>, id4: u16, id6: u16, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => put_bytes(out, id4, &a.octets()),
        IpAddr::V6(a) => put_bytes(out, id6, &a.octets()),
    }
}

fn put_bytes(out: &mut Vec<u8>, id: u16, data: &[u8]) {
    put_vendor_bytes(out, chunk::GENERIC_VENDOR, id, data);
}

fn put_vendor_bytes(out: &mut Vec<u8>, vendor: u16, id: u16, data: &[u8]) {
    put_header(out, vendor, id, data.len());
    out.extend_from_slice(data);
}

/// Writes a generic chunk whose data `write` appends straight into `out` (no temporary buffer),
/// then fills in its length.
fn put_with(out: &mut Vec<u8>, id: u16, write: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    put_header(out, chunk::GENERIC_VENDOR, id, 0);
    write(out);
    let len = out.len() - at;
    patch_u16(out, at + 4, len);
}
