//! The human-readable one-line form of a packet (`hep-dump --format text`).

use heptap_hep::Packet;
use serde_json::Value;

/// `ts proto_type src -> dst [corr=...] payload`, with the payload's control characters escaped
/// so one packet is always one line.
pub fn line(packet: &Packet) -> String {
    let j = packet.to_json();
    let s = |k: &str| match j.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    let proto = match j.get("proto_type_name") {
        Some(Value::String(n)) => format!("{}({})", n, s("proto_type")),
        _ => s("proto_type"),
    };
    let ip = |ip: String, port: String| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    let mut out = format!(
        "v{} {}.{:0>6} {} {} -> {}",
        s("version"),
        s("ts_sec"),
        s("ts_usec"),
        proto,
        ip(s("src_ip"), s("src_port")),
        ip(s("dst_ip"), s("dst_port")),
    );
    let corr = s("correlation_id");
    if !corr.is_empty() {
        out.push_str(" corr=");
        out.push_str(&corr);
    }
    let payload = match j.get("payload") {
        Some(Value::String(p)) => p.escape_debug().to_string(),
        _ => match j.get("payload_base64") {
            Some(Value::String(b)) => format!("base64:{b}"),
            _ => String::new(),
        },
    };
    if !payload.is_empty() {
        out.push(' ');
        out.push_str(&payload);
    }
    out
}
