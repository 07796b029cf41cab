//! Payload builders: ordered (key, value) parts into the text OpenSIPS puts in the payload and
//! extra-correlation chunks (opensips-tracing.md §1.5).
//!
//! - JSON: an object of string values in insertion order, duplicate keys kept, escaped as cJSON
//!   escapes. Compact (`{"k":"v","k2":"v2"}`, cJSON_PrintUnformatted) or OpenSIPS's own
//!   tab-indented cJSON_Print form (`{\n\t"k":\t"v",\n\t"k2":\t"v2"\n}`).
//! - homer5: keys dropped, values joined by the delimiter.

use std::borrow::Cow;

/// How payload parts and extra correlations are written (OpenSIPS `homer5_on`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadMode {
    /// `homer5_on = 0`: JSON objects, extra correlations in chunk 0x0065.
    Json {
        /// OpenSIPS's tab-indented cJSON_Print form instead of compact JSON.
        pretty: bool,
    },
    /// `homer5_on = 1`: values joined by `delim`; only a "sip*" extra correlation survives, as
    /// chunk 0x0011.
    Homer5 {
        /// `homer5_delim`, ":" in OpenSIPS.
        delim: String,
    },
}

impl PayloadMode {
    /// homer5 mode with OpenSIPS's default delimiter ":".
    pub fn homer5() -> Self {
        PayloadMode::Homer5 {
            delim: ":".to_owned(),
        }
    }
}

impl Default for PayloadMode {
    /// heptap's default: compact JSON (OpenSIPS defaults to homer5; see docs/hep.md).
    fn default() -> Self {
        PayloadMode::Json { pretty: false }
    }
}

/// Appends the JSON object of `parts` to `out`, in order, duplicate keys kept.
///
/// `pretty` gives OpenSIPS's cJSON_Print layout byte for byte. An empty list is written as `{}`.
pub fn write_json<K: AsRef<str>, V: AsRef<str>>(out: &mut Vec<u8>, parts: &[(K, V)], pretty: bool) {
    out.push(b'{');
    for (i, (key, value)) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if pretty {
            out.extend_from_slice(b"\n\t");
        }
        write_json_string(out, key.as_ref());
        out.push(b':');
        if pretty {
            out.push(b'\t');
        }
        write_json_string(out, value.as_ref());
    }
    if pretty && !parts.is_empty() {
        out.push(b'\n');
    }
    out.push(b'}');
}

/// Appends `s` as a JSON string literal with cJSON's escaping: `\" \\ \b \f \n \r \t`, other
/// bytes below 0x20 as `\u00xx` (lowercase hex); `/`, DEL and non-ASCII are written as they are.
///
/// cJSON stops at an embedded NUL (truncating the value); we write it as `\u0000` instead, so no
/// text is lost and the result is still valid JSON.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0x0f)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean_from..i]);
        out.extend_from_slice(escape);
        clean_from = i + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

/// Appends the values of `parts` joined by `delim` (homer5 mode); keys are dropped.
pub fn write_homer5<K, V: AsRef<str>>(out: &mut Vec<u8>, parts: &[(K, V)], delim: &str) {
    for (i, (_, value)) in parts.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(delim.as_bytes());
        }
        out.extend_from_slice(value.as_ref().as_bytes());
    }
}

/// The extra correlation that survives in homer5 mode: the value of the last key starting with
/// "sip" (OpenSIPS compares the first three bytes), which then replaces chunk 0x0011.
pub fn homer5_correlation<K: AsRef<str>, V: AsRef<str>>(extra: &[(K, V)]) -> Option<&str> {
    extra
        .iter()
        .rev()
        .find(|(key, _)| key.as_ref().starts_with("sip"))
        .map(|(_, value)| value.as_ref())
}

/// Builds the payload text of `parts` in `mode` into a new buffer (convenience for tests/tools).
pub fn build(parts: &[(Cow<'_, str>, Cow<'_, str>)], mode: &PayloadMode) -> Vec<u8> {
    let mut out = Vec::new();
    match mode {
        PayloadMode::Json { pretty } => write_json(&mut out, parts, *pretty),
        PayloadMode::Homer5 { delim } => write_homer5(&mut out, parts, delim),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(parts: &[(&str, &str)], pretty: bool) -> String {
        let mut out = Vec::new();
        write_json(&mut out, parts, pretty);
        String::from_utf8(out).unwrap()
    }

    const ACCEPTED: &[(&str, &str)] = &[
        ("Protocol", "TCP"),
        ("Event", "ACCEPTED"),
        ("Status", "SUCCESS"),
        ("Message", "Connection accepted..."),
    ];

    #[test]
    fn compact_json_has_no_whitespace_and_keeps_insertion_order() {
        assert_eq!(
            json(ACCEPTED, false),
            r#"{"Protocol":"TCP","Event":"ACCEPTED","Status":"SUCCESS","Message":"Connection accepted..."}"#
        );
    }

    #[test]
    fn pretty_json_is_cjson_print_layout_of_104_bytes_for_tcp_accepted() {
        let text = json(ACCEPTED, true);
        assert_eq!(
            text,
            "{\n\t\"Protocol\":\t\"TCP\",\n\t\"Event\":\t\"ACCEPTED\",\n\t\"Status\":\t\"SUCCESS\",\n\t\"Message\":\t\"Connection accepted...\"\n}"
        );
        assert_eq!(text.len(), 104);
    }

    #[test]
    fn pretty_extra_correlation_object_matches_opensips() {
        assert_eq!(
            json(&[("net", "10289601672139926570")], true),
            "{\n\t\"net\":\t\"10289601672139926570\"\n}"
        );
    }

    #[test]
    fn json_escaping_follows_cjson() {
        let value = "q\" b\\ \u{8}\u{c}\n\r\t \u{1}\u{1f}\u{0} / é \u{7f}";
        assert_eq!(
            json(&[("k", value)], false),
            "{\"k\":\"q\\\" b\\\\ \\b\\f\\n\\r\\t \\u0001\\u001f\\u0000 / é \u{7f}\"}"
        );
    }

    #[test]
    fn json_keeps_duplicate_keys_and_escapes_keys_too() {
        assert_eq!(
            json(&[("a", "1"), ("a", "2"), ("\"", "")], false),
            r#"{"a":"1","a":"2","\"":""}"#
        );
    }

    #[test]
    fn escaped_json_parses_back_to_the_same_strings() {
        let value: String = (0u8..0x80).map(char::from).chain("é€😀".chars()).collect();
        let text = json(&[("k", &value)], true);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["k"], serde_json::Value::String(value));
    }

    #[test]
    fn homer5_joins_values_with_the_delimiter_and_drops_keys() {
        let mut out = Vec::new();
        write_homer5(&mut out, ACCEPTED, ":");
        assert_eq!(out, b"TCP:ACCEPTED:SUCCESS:Connection accepted...");
        assert_eq!(out.len(), 43);
        let mut out = Vec::new();
        write_homer5(&mut out, &[("payload", "INVITE sip:bob SIP/2.0\r\n")], "|");
        assert_eq!(
            out, b"INVITE sip:bob SIP/2.0\r\n",
            "a single part is the raw value"
        );
    }

    #[test]
    fn homer5_correlation_is_the_last_sip_prefixed_key() {
        assert_eq!(homer5_correlation(&[("net", "1")]), None);
        assert_eq!(
            homer5_correlation(&[("sip", "a"), ("net", "1"), ("sipx", "b")]),
            Some("b")
        );
        assert_eq!(homer5_correlation(&[("si", "a"), ("SIP", "b")]), None);
    }
}
