//! MI tracing as OpenSIPS's mi_trace.c does it (spec §4.2): one HEP message (proto type 87,
//! ip-proto 6) for the request and one for the reply, sharing a `MICORR...` correlation id.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use heptap_hep::{TraceMessage, ip_proto, proto_type};
use serde_json::Value;

use crate::jsonrpc::number_as_int;

/// OpenSIPS's MAX_TRACE_FIELD: the request `parameters` get at most 127 characters, the reply
/// at most 128 bytes.
pub const MAX_TRACE_FIELD: usize = 128;

/// The cookie in front of MI correlation ids (mi/mi_trace.c).
pub const MI_CORRELATION_COOKIE: &str = "MICORR";

/// The stand-in address OpenSIPS uses when a backend has none (FIFO): 127.0.0.2:0.
pub const NO_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 0);

/// Which MI backend a request came through: the `backend` part of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The FIFO (both framings): `fifo`.
    Fifo,
    /// JSON-RPC over HTTP (OpenSIPS mi_http): `json`.
    Json,
}

impl Backend {
    /// The string OpenSIPS puts in the `backend` part.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Fifo => "fifo",
            Backend::Json => "json",
        }
    }
}

/// Where a request came from: the backend and, for HTTP, the two ends of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The backend.
    pub backend: Backend,
    /// The client's address (requests are traced client -> server, replies the other way).
    pub client: SocketAddr,
    /// The server's local address.
    pub server: SocketAddr,
}

impl Origin {
    /// A FIFO request: both addresses are 127.0.0.2:0, as OpenSIPS.
    pub fn fifo() -> Self {
        Origin {
            backend: Backend::Fifo,
            client: NO_ADDRESS,
            server: NO_ADDRESS,
        }
    }

    /// An HTTP request from `client` to the listener at `server`.
    pub fn http(client: SocketAddr, server: SocketAddr) -> Self {
        Origin {
            backend: Backend::Json,
            client,
            server,
        }
    }
}

/// Builds MI trace messages and their correlation ids.
#[derive(Debug)]
pub(crate) struct MiTracer {
    /// For the ids' `uticks`: microseconds since the MI started.
    started: Instant,
    /// The ids' `startup_time` (low 32 bits of the Unix time at start).
    startup_secs: u32,
    /// The ids' `pid`.
    pid: u32,
}

impl MiTracer {
    pub fn new() -> Self {
        let startup_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        MiTracer {
            started: Instant::now(),
            startup_secs,
            pid: std::process::id(),
        }
    }

    /// `MICORR` + base64 of pid | startup | uticks | random, little-endian (spec §1.12).
    pub fn correlation_id(&self) -> String {
        let uticks = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut raw = [0u8; 20];
        raw[0..4].copy_from_slice(&self.pid.to_le_bytes());
        raw[4..8].copy_from_slice(&self.startup_secs.to_le_bytes());
        raw[8..16].copy_from_slice(&uticks.to_le_bytes());
        raw[16..20].copy_from_slice(&rand::random::<u32>().to_le_bytes());
        let mut id = String::with_capacity(34);
        id.push_str(MI_CORRELATION_COOKIE);
        base64::engine::general_purpose::STANDARD.encode_string(raw, &mut id);
        id
    }

    fn message(&self, corr: &str, src: SocketAddr, dst: SocketAddr) -> TraceMessage {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        TraceMessage::new(
            proto_type::MI,
            ip_proto::TCP,
            src,
            dst,
            now.as_secs() as u32,
            now.subsec_micros(),
        )
        .correlation(corr.to_owned())
    }

    /// The request message: `command`, `backend`, and `parameters` when there are any.
    pub fn request(
        &self,
        corr: &str,
        method: &str,
        params: &[&Value],
        origin: &Origin,
    ) -> TraceMessage {
        let msg = self
            .message(corr, origin.client, origin.server)
            .part("command", method.to_owned())
            .part("backend", origin.backend.name());
        let joined = join_parameters(params);
        if joined.is_empty() {
            msg
        } else {
            msg.part("parameters", joined)
        }
    }

    /// A 3.x reply message: `reply` = the response text, cut to 128 bytes.
    pub fn reply(&self, corr: &str, reply: &str, origin: &Origin) -> TraceMessage {
        self.message(corr, origin.server, origin.client)
            .part("reply", truncate(reply, MAX_TRACE_FIELD).to_owned())
    }

    /// A 2.x (text framing) reply message: `code`, `reason` and, if any, `reply`.
    pub fn text_reply(
        &self,
        corr: &str,
        code: u16,
        reason: &str,
        body: &str,
        origin: &Origin,
    ) -> TraceMessage {
        let msg = self
            .message(corr, origin.server, origin.client)
            .part("code", code.to_string())
            .part("reason", reason.to_owned());
        if body.is_empty() {
            msg
        } else {
            msg.part("reply", truncate(body, MAX_TRACE_FIELD).to_owned())
        }
    }
}

/// The parameter values joined by `,` the way mi_trace.c prints them: numbers as integers,
/// strings raw, anything else skipped, a comma before every item but the first (so a skipped
/// first item still leaves a leading comma); at most 127 characters.
pub(crate) fn join_parameters(params: &[&Value]) -> String {
    let mut out = String::new();
    for (i, v) in params.iter().enumerate() {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => number_as_int(n).to_string(),
            _ => continue,
        };
        if i > 0 {
            out.push(',');
        }
        out.push_str(&text);
        if out.len() >= MAX_TRACE_FIELD - 1 {
            break;
        }
    }
    truncate(&out, MAX_TRACE_FIELD - 1).to_owned()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn correlation_ids_are_micorr_and_28_base64_chars() {
        let t = MiTracer::new();
        let id = t.correlation_id();
        assert_eq!(id.len(), 34);
        assert!(id.starts_with("MICORR"));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&id[6..])
            .unwrap();
        assert_eq!(&raw[0..4], &std::process::id().to_le_bytes());
        assert_ne!(t.correlation_id(), id);
    }

    #[test]
    fn parameters_are_values_joined_by_commas() {
        let (a, n, arr, b) = (json!("tid"), json!(7), json!(["x"]), json!("on"));
        assert_eq!(join_parameters(&[&a, &n, &b]), "tid,7,on");
        assert_eq!(join_parameters(&[&arr, &a]), ",tid");
        assert_eq!(join_parameters(&[&a, &arr]), "tid");
        let long = json!("x".repeat(300));
        assert_eq!(join_parameters(&[&long]).len(), 127);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 128), "abc");
    }
}
