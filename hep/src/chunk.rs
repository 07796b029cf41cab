//! HEP3 chunk identifiers (spec/hep.md §1.2, HEP rev 37) and their value types.
//!
//! Every chunk heptap writes uses vendor [`GENERIC_VENDOR`] (0), as OpenSIPS does.

/// Vendor id of the generic chunks defined by the HEP specification.
pub const GENERIC_VENDOR: u16 = 0x0000;

/// Vendor ids registered in the HEP specification, so dumps can name the chunk's owner.
pub mod vendor {
    /// Generic (specification) chunks.
    pub const GENERIC: u16 = 0x0000;
    /// FreeSWITCH.
    pub const FREESWITCH: u16 = 0x0001;
    /// Kamailio / SER.
    pub const KAMAILIO: u16 = 0x0002;
    /// OpenSIPS (defined by OpenSIPS but never used when it emits).
    pub const OPENSIPS: u16 = 0x0003;
    /// Asterisk.
    pub const ASTERISK: u16 = 0x0004;
    /// Homer.
    pub const HOMER: u16 = 0x0005;
    /// SipXecs.
    pub const SIPXECS: u16 = 0x0006;
    /// Yeti Switch.
    pub const YETI: u16 = 0x0007;
    /// Genesys.
    pub const GENESYS: u16 = 0x0008;

    /// Name of a registered vendor id, for dumps.
    pub fn name(vendor: u16) -> Option<&'static str> {
        Some(match vendor {
            GENERIC => "generic",
            FREESWITCH => "freeswitch",
            KAMAILIO => "kamailio",
            OPENSIPS => "opensips",
            ASTERISK => "asterisk",
            HOMER => "homer",
            SIPXECS => "sipxecs",
            YETI => "yeti",
            GENESYS => "genesys",
            _ => return None,
        })
    }
}

/// IP protocol family (u8): 2 = AF_INET, 10 = AF_INET6 (Linux numbers).
pub const FAMILY: u16 = 0x0001;
/// IP protocol number (u8): 6 TCP, 17 UDP, or a stand-in (see [`crate::ip_proto`]).
pub const IP_PROTO: u16 = 0x0002;
/// IPv4 source address (4 bytes).
pub const SRC_IPV4: u16 = 0x0003;
/// IPv4 destination address (4 bytes).
pub const DST_IPV4: u16 = 0x0004;
/// IPv6 source address (16 bytes).
pub const SRC_IPV6: u16 = 0x0005;
/// IPv6 destination address (16 bytes).
pub const DST_IPV6: u16 = 0x0006;
/// Source port (u16).
pub const SRC_PORT: u16 = 0x0007;
/// Destination port (u16).
pub const DST_PORT: u16 = 0x0008;
/// Timestamp, seconds since the epoch (u32).
pub const TS_SEC: u16 = 0x0009;
/// Timestamp, microseconds within the second (u32).
pub const TS_USEC: u16 = 0x000a;
/// Protocol type of the payload (u8, see [`crate::proto_type`]).
pub const PROTO_TYPE: u16 = 0x000b;
/// Numeric capture agent id (u32), OpenSIPS `hep_capture_id`.
pub const CAPTURE_ID: u16 = 0x000c;
/// Keep-alive timer in seconds (u16); nobody sends it, decoded for completeness.
pub const KEEP_ALIVE: u16 = 0x000d;
/// Authentication key ("capture password", octets); collectors do not verify it.
pub const AUTH_KEY: u16 = 0x000e;
/// Captured payload (octets).
pub const PAYLOAD: u16 = 0x000f;
/// Compressed payload (gzip/inflate octets); heplify-server ignores it.
pub const COMPRESSED_PAYLOAD: u16 = 0x0010;
/// Correlation id (octets): the join key Homer uses for every non-SIP type.
pub const CORRELATION_ID: u16 = 0x0011;
/// VLAN id (u16).
pub const VLAN_ID: u16 = 0x0012;
/// Capture agent name ("node name", octets).
pub const NODE_NAME: u16 = 0x0013;
/// Source MAC (u64).
pub const SRC_MAC: u16 = 0x0014;
/// Destination MAC (u64).
pub const DST_MAC: u16 = 0x0015;
/// Ethernet type (u16).
pub const ETH_TYPE: u16 = 0x0016;
/// TCP flags (u8).
pub const TCP_FLAGS: u16 = 0x0017;
/// IP TOS (u8).
pub const IP_TOS: u16 = 0x0018;
/// MOS value (u16).
pub const MOS: u16 = 0x0020;
/// R-factor (u16).
pub const R_FACTOR: u16 = 0x0021;
/// GEO location (octets).
pub const GEO_LOCATION: u16 = 0x0022;
/// Jitter (u32).
pub const JITTER: u16 = 0x0023;
/// Transaction type, e.g. call or registration (octets).
pub const TRANSACTION_TYPE: u16 = 0x0024;
/// Payload JSON keys (octets).
pub const PAYLOAD_JSON_KEYS: u16 = 0x0025;
/// Tags values (octets).
pub const TAGS_VALUES: u16 = 0x0026;
/// Type of tag (u16).
pub const TAG_TYPE: u16 = 0x0027;
/// Event type (u16): 1 recording, 2 recording LI.
pub const EVENT_TYPE: u16 = 0x0028;
/// Group id (octets).
pub const GROUP_ID: u16 = 0x0029;
/// OpenSIPS's non-standard generic chunk 101: the "extra correlation" JSON object (JSON mode only).
pub const EXTRA_CORRELATION: u16 = 0x0065;

/// How a chunk's data is to be read, per the specification's type column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// One unsigned byte.
    U8,
    /// Big-endian u16.
    U16,
    /// Big-endian u32.
    U32,
    /// Big-endian u64.
    U64,
    /// Four address bytes.
    Inet4,
    /// Sixteen address bytes.
    Inet6,
    /// Free-form bytes (often text, never guaranteed to be).
    Octets,
}

impl ValueType {
    /// Exact data size (without the 6-byte chunk header) for fixed-size types.
    pub fn fixed_len(self) -> Option<usize> {
        match self {
            ValueType::U8 => Some(1),
            ValueType::U16 => Some(2),
            ValueType::U32 => Some(4),
            ValueType::U64 => Some(8),
            ValueType::Inet4 => Some(4),
            ValueType::Inet6 => Some(16),
            ValueType::Octets => None,
        }
    }
}

/// The specification's value type of a chunk, `None` for vendor and unassigned chunks.
pub fn value_type(vendor: u16, id: u16) -> Option<ValueType> {
    if vendor != GENERIC_VENDOR {
        return None;
    }
    Some(match id {
        FAMILY | IP_PROTO | PROTO_TYPE | TCP_FLAGS | IP_TOS => ValueType::U8,
        SRC_PORT | DST_PORT | KEEP_ALIVE | VLAN_ID | ETH_TYPE | MOS | R_FACTOR | TAG_TYPE
        | EVENT_TYPE => ValueType::U16,
        TS_SEC | TS_USEC | CAPTURE_ID | JITTER => ValueType::U32,
        SRC_MAC | DST_MAC => ValueType::U64,
        SRC_IPV4 | DST_IPV4 => ValueType::Inet4,
        SRC_IPV6 | DST_IPV6 => ValueType::Inet6,
        AUTH_KEY | PAYLOAD | COMPRESSED_PAYLOAD | CORRELATION_ID | NODE_NAME | GEO_LOCATION
        | TRANSACTION_TYPE | PAYLOAD_JSON_KEYS | TAGS_VALUES | GROUP_ID | EXTRA_CORRELATION => {
            ValueType::Octets
        }
        _ => return None,
    })
}

/// Name of a chunk for dumps and error messages; `None` for vendor and unassigned chunks.
pub fn name(vendor: u16, id: u16) -> Option<&'static str> {
    if vendor != GENERIC_VENDOR {
        return None;
    }
    Some(match id {
        FAMILY => "ip_family",
        IP_PROTO => "ip_proto",
        SRC_IPV4 => "src_ipv4",
        DST_IPV4 => "dst_ipv4",
        SRC_IPV6 => "src_ipv6",
        DST_IPV6 => "dst_ipv6",
        SRC_PORT => "src_port",
        DST_PORT => "dst_port",
        TS_SEC => "ts_sec",
        TS_USEC => "ts_usec",
        PROTO_TYPE => "proto_type",
        CAPTURE_ID => "capture_id",
        KEEP_ALIVE => "keep_alive",
        AUTH_KEY => "auth_key",
        PAYLOAD => "payload",
        COMPRESSED_PAYLOAD => "compressed_payload",
        CORRELATION_ID => "correlation_id",
        VLAN_ID => "vlan_id",
        NODE_NAME => "node_name",
        SRC_MAC => "src_mac",
        DST_MAC => "dst_mac",
        ETH_TYPE => "eth_type",
        TCP_FLAGS => "tcp_flags",
        IP_TOS => "ip_tos",
        MOS => "mos",
        R_FACTOR => "r_factor",
        GEO_LOCATION => "geo_location",
        JITTER => "jitter",
        TRANSACTION_TYPE => "transaction_type",
        PAYLOAD_JSON_KEYS => "payload_json_keys",
        TAGS_VALUES => "tags_values",
        TAG_TYPE => "tag_type",
        EVENT_TYPE => "event_type",
        GROUP_ID => "group_id",
        EXTRA_CORRELATION => "extra_correlation",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_generic_chunk_has_a_value_type_and_vendor_chunks_have_neither() {
        for id in 0..=0x00ffu16 {
            assert_eq!(
                name(0, id).is_some(),
                value_type(0, id).is_some(),
                "id {id:#06x}"
            );
            assert_eq!(name(3, id), None);
            assert_eq!(value_type(3, id), None);
        }
        assert_eq!(name(0, EXTRA_CORRELATION), Some("extra_correlation"));
        assert_eq!(name(0, 0x0019), None, "0x19..0x1f are reserved");
    }
}
