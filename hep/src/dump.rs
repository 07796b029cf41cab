//! The JSON-lines form of a decoded packet, shared by `heptap hep-dump` and the local `stdout` /
//! `file:` destinations (documented in docs/hep.md).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::chunk::{self, ValueType};
use crate::decode::{Chunk, Packet};
use crate::proto_type;

impl Packet {
    /// Every field as one JSON object, keys in a fixed order; keys of absent fields are left out.
    ///
    /// Octet fields (correlation id, auth key, node name, payload) are strings when they are
    /// UTF-8, and appear as `<key>_base64` otherwise. A payload that is a JSON object is also
    /// given parsed as `payload_json`; the extra correlation is given parsed when it is a JSON
    /// object. Chunks without a field of their own are listed under `chunks`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("version".into(), json!(self.version.number()));
        put(&mut m, "ip_family", self.ip_family);
        put(&mut m, "ip_proto", self.ip_proto);
        put(&mut m, "src_ip", self.src_ip.map(|ip| ip.to_string()));
        put(&mut m, "src_port", self.src_port);
        put(&mut m, "dst_ip", self.dst_ip.map(|ip| ip.to_string()));
        put(&mut m, "dst_port", self.dst_port);
        put(&mut m, "ts_sec", self.ts_sec);
        put(&mut m, "ts_usec", self.ts_usec);
        put(&mut m, "proto_type", self.proto_type);
        put(
            &mut m,
            "proto_type_name",
            self.proto_type.and_then(proto_type::name),
        );
        put(&mut m, "capture_id", self.capture_id);
        put_octets(&mut m, "correlation_id", self.correlation_id.as_deref());
        if let Some(extra) = &self.extra_correlation {
            match json_object(extra) {
                Some(obj) => {
                    m.insert("extra_correlation".into(), obj);
                }
                None => put_octets(&mut m, "extra_correlation", Some(extra)),
            }
        }
        put_octets(&mut m, "payload", self.payload.as_deref());
        put(
            &mut m,
            "payload_json",
            self.payload.as_deref().and_then(json_object),
        );
        put_octets(&mut m, "auth_key", self.auth_key.as_deref());
        put_octets(&mut m, "node_name", self.node_name.as_deref());
        put(&mut m, "keep_alive", self.keep_alive);
        put(&mut m, "vlan", self.vlan);
        put(
            &mut m,
            "compressed_payload_base64",
            self.compressed_payload.as_deref().map(|b| BASE64.encode(b)),
        );
        if !self.chunks.is_empty() {
            let chunks = self.chunks.iter().map(chunk_json).collect();
            m.insert("chunks".into(), Value::Array(chunks));
        }
        Value::Object(m)
    }
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v.into());
    }
}

fn put_octets(m: &mut Map<String, Value>, key: &str, v: Option<&[u8]>) {
    let Some(v) = v else { return };
    match std::str::from_utf8(v) {
        Ok(s) => m.insert(key.to_owned(), Value::String(s.to_owned())),
        Err(_) => m.insert(format!("{key}_base64"), Value::String(BASE64.encode(v))),
    };
}

/// The bytes parsed as JSON when they hold a JSON object (cheap first-byte check before parsing).
fn json_object(b: &[u8]) -> Option<Value> {
    let first = b.iter().find(|c| !c.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice::<Value>(b)
        .ok()
        .filter(Value::is_object)
}

fn chunk_json(c: &Chunk) -> Value {
    let mut m = Map::new();
    m.insert("vendor".into(), json!(c.vendor));
    m.insert("id".into(), json!(c.id));
    m.insert("name".into(), json!(chunk::name(c.vendor, c.id)));
    if let Some(v) = chunk::value_type(c.vendor, c.id).and_then(|t| typed_value(t, &c.data)) {
        m.insert("value".into(), v);
    }
    let mut hex = String::with_capacity(c.data.len() * 2);
    for b in c.data.iter() {
        let _ = write!(hex, "{b:02x}");
    }
    m.insert("hex".into(), Value::String(hex));
    Value::Object(m)
}

/// The chunk's value per its specification type, when the data has that type's size.
fn typed_value(t: ValueType, d: &[u8]) -> Option<Value> {
    Some(match t {
        ValueType::U8 => json!(<[u8; 1]>::try_from(d).ok()?[0]),
        ValueType::U16 => json!(u16::from_be_bytes(d.try_into().ok()?)),
        ValueType::U32 => json!(u32::from_be_bytes(d.try_into().ok()?)),
        ValueType::U64 => json!(u64::from_be_bytes(d.try_into().ok()?)),
        ValueType::Inet4 => json!(Ipv4Addr::from(<[u8; 4]>::try_from(d).ok()?).to_string()),
        ValueType::Inet6 => json!(Ipv6Addr::from(<[u8; 16]>::try_from(d).ok()?).to_string()),
        ValueType::Octets => json!(std::str::from_utf8(d).ok()?),
    })
}
