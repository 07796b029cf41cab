//! Reading connection events (proto type 89) the way a capture node does, keeping what the
//! JSON object form hides: the order of the payload parts.

use std::fmt;

use heptap_hep::Packet;
use serde::de::{Deserializer as _, MapAccess, Visitor};

/// The payload parts of a JSON-mode net event, in the order they were written (duplicates
/// kept).
pub fn parts_of(p: &Packet) -> Vec<(String, String)> {
    let bytes = p.payload.as_deref().unwrap_or(b"");
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_map(Ordered).unwrap_or_else(|e| {
        panic!(
            "not a JSON object ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    })
}

struct Ordered;

impl<'de> Visitor<'de> for Ordered {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, String>()? {
            out.push((k, v));
        }
        Ok(out)
    }
}

/// `[("Protocol", "TLS"), ...]` as owned pairs, to compare with [`parts_of`].
pub fn owned(parts: &[(&str, &str)]) -> Vec<(String, String)> {
    parts
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The value of part `key` (the first one), or "".
pub fn part(p: &Packet, key: &str) -> String {
    parts_of(p)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// The payload as text (homer5 mode).
pub fn text_of(p: &Packet) -> String {
    String::from_utf8_lossy(p.payload.as_deref().unwrap_or(b"")).into_owned()
}

/// The `net` extra correlation (chunk 0x0065), if any.
pub fn net_correlation(p: &Packet) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(p.extra_correlation.as_deref()?).ok()?;
    v.get("net")?.as_str().map(str::to_owned)
}

/// The HEP3 packet OpenSIPS sends for a connection event with no proto_hep modparam set
/// (homer5 mode, capture id 1), written byte by byte after spec/opensips-tracing.md §8 from
/// the fields that vary (addresses, time, connection id): a golden packet to compare heptap's
/// bytes with. Homer5 mode carries no extra correlation (`net` is dropped, §1.5).
pub fn opensips_net_packet(
    (src, dst): (std::net::SocketAddrV4, std::net::SocketAddrV4),
    (sec, usec): (u32, u32),
    ip_proto: u8,
    cid: &str,
    values: &[&str],
) -> Vec<u8> {
    let payload = values.join(":");
    let chunk = |id: u8, data: &[u8]| {
        let len = u16::try_from(6 + data.len()).expect("chunk length");
        let mut c = vec![0, 0, 0, id];
        c.extend_from_slice(&len.to_be_bytes());
        c.extend_from_slice(data);
        c
    };
    let body = [
        chunk(0x01, &[2]),                      // AF_INET
        chunk(0x02, &[ip_proto]),               // TCP 6, TLS 22, WS/WSS 50
        chunk(0x07, &src.port().to_be_bytes()), // src port
        chunk(0x08, &dst.port().to_be_bytes()), // dst port
        chunk(0x09, &sec.to_be_bytes()),        // seconds
        chunk(0x0a, &usec.to_be_bytes()),       // microseconds
        chunk(0x0b, &[89]),                     // proto type: net
        chunk(0x0c, &1u32.to_be_bytes()),       // hep_capture_id
        chunk(0x03, &src.ip().octets()),        // src IPv4
        chunk(0x04, &dst.ip().octets()),        // dst IPv4
        chunk(0x0f, payload.as_bytes()),        // payload
        chunk(0x11, cid.as_bytes()),            // correlation id
    ]
    .concat();
    let total = u16::try_from(6 + body.len()).expect("packet length");
    [&b"HEP3"[..], &total.to_be_bytes(), &body].concat()
}
