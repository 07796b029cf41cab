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
