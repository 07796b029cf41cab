//! The OpenSIPS modparam string syntaxes, parsed as OpenSIPS parses them (spec §1.9, §4.3,
//! §5.1) with the differences called out where they are made:
//! - `hep_id`: `"[name] host[:port]; transport=udp|tcp|tls; version=1|2|3"`. heptap also takes
//!   bracketed IPv6 hosts (`[::1]:9060`), and refuses an explicit tcp/tls transport with HEP
//!   v1/v2 instead of silently sending UDP.
//! - `trace_id`: `"[tid]uri=hep:name"` (also `uri=stdout` and `uri=file:/path`).
//!
//! `trace_bwlist` and listener `sip_methods` (`"w: a, b"`) are [`heptap_filters::Bwlist`]s,
//! parsed there; the HEP version is [`heptap_hep::Version`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use heptap_hep::Version;

use crate::units::{serde_via_str, split_host_port};

/// The name of the built-in local destination that prints hep-dump JSON lines on stdout (also
/// `uri=stdout`). It always exists and cannot be redefined as a HEP collector.
pub const STDOUT: &str = "stdout";

/// The default HEP port (proto_hep `hep_port`).
pub const DEFAULT_HEP_PORT: u16 = 9060;

/// How HEP packets travel to a collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// One packet per datagram; the only transport for HEP v1/v2.
    Udp,
    /// A stream of HEP3 frames (OpenSIPS's default).
    Tcp,
    /// HEP3 frames over TLS (CA verification on by default).
    Tls,
}

impl Transport {
    /// The lowercase name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = String;

    /// Case-insensitive, as OpenSIPS compares it.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "tls" => Ok(Transport::Tls),
            _ => Err(format!(
                "unknown transport '{}', expected udp, tcp or tls",
                s.trim()
            )),
        }
    }
}

serde_via_str!(Transport, "udp, tcp or tls");

/// Why an OpenSIPS `hep_id` string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HepIdError {
    /// OpenSIPS requires the `[name]` prefix in the modparam.
    #[error("a hep_id must start with '[name]'")]
    MissingName,
    /// `[` was never closed.
    #[error("missing ']' after the hep_id name")]
    UnclosedName,
    /// `[]` or `[ ]`.
    #[error("empty hep_id name")]
    EmptyName,
    /// Nothing but keys after the name.
    #[error("no destination host in hep_id")]
    MissingHost,
    /// Two tokens without `=`.
    #[error("unexpected '{0}': expected key=value after the host")]
    ExtraHost(String),
    /// The host or port part does not parse.
    #[error("bad destination: {0}")]
    BadHost(String),
    /// A key other than `transport` and `version` (matched case-sensitively, like OpenSIPS).
    #[error("unknown key '{0}' in hep_id, expected transport or version")]
    UnknownKey(String),
    /// `transport=` or `version=` with nothing after it.
    #[error("empty value for '{0}' in hep_id")]
    EmptyValue(String),
    /// The same key twice.
    #[error("'{0}' given twice in hep_id")]
    DuplicateKey(String),
    /// The transport is not udp, tcp or tls.
    #[error("{0}")]
    BadTransport(String),
    /// The version is not 1, 2 or 3.
    #[error("{0}")]
    BadVersion(String),
    /// HEP v1/v2 exist only over UDP; OpenSIPS silently downgrades the transport, heptap refuses.
    #[error(
        "HEP version {version} cannot be sent over {transport}: HEPv1/v2 are UDP only \
         (OpenSIPS silently switches to UDP; heptap refuses). Use version=3, or transport=udp"
    )]
    VersionNeedsUdp {
        /// The v1/v2 version asked for.
        version: Version,
        /// The stream transport asked for.
        transport: Transport,
    },
}

/// The parts of an OpenSIPS `hep_id` string, before defaults are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HepIdString {
    /// The `[name]`, when the string had one.
    pub name: Option<String>,
    /// Host name or IP address (brackets removed).
    pub host: String,
    /// The port, when given (9060 otherwise).
    pub port: Option<u16>,
    /// The transport, when given (TCP for v3, UDP for v1/v2 otherwise).
    pub transport: Option<Transport>,
    /// The version, when given (3 otherwise).
    pub version: Option<Version>,
}

impl HepIdString {
    /// Parses the string; `require_name` is OpenSIPS's rule, relaxed for `[hep.ids]` values
    /// whose table key already names them.
    pub fn parse(text: &str, require_name: bool) -> Result<Self, HepIdError> {
        let s = text.trim();
        // `[::1]:9060` is a bracketed IPv6 host, not a name: names never contain ':'.
        let named =
            s.starts_with('[') && parse_bracket_name(s).is_none_or(|(n, _)| !n.contains(':'));
        let (name, rest) = if named {
            let (name, rest) = parse_bracket_name(s).ok_or(HepIdError::UnclosedName)?;
            if name.is_empty() {
                return Err(HepIdError::EmptyName);
            }
            (Some(name.to_owned()), rest)
        } else if require_name {
            return Err(HepIdError::MissingName);
        } else {
            (None, s)
        };

        // A FreeSWITCH or Kamailio URI's parameters would be refused as unknown keys first.
        let first = rest.split(';').next().unwrap_or("");
        if let Some(hint) = crate::units::pasted_uri(first) {
            return Err(HepIdError::BadHost(hint));
        }
        let mut host_port: Option<&str> = None;
        let mut transport = None;
        let mut version = None;
        for token in rest.split(';').map(str::trim).filter(|t| !t.is_empty()) {
            let Some((key, value)) = token.split_once('=') else {
                if host_port.is_some() {
                    return Err(HepIdError::ExtraHost(token.to_owned()));
                }
                host_port = Some(token);
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() {
                return Err(HepIdError::EmptyValue(key.to_owned()));
            }
            match key {
                "transport" => {
                    if transport.is_some() {
                        return Err(HepIdError::DuplicateKey(key.to_owned()));
                    }
                    transport = Some(value.parse().map_err(HepIdError::BadTransport)?);
                }
                "version" => {
                    if version.is_some() {
                        return Err(HepIdError::DuplicateKey(key.to_owned()));
                    }
                    version = Some(
                        value
                            .parse::<Version>()
                            .map_err(|e| HepIdError::BadVersion(e.to_string()))?,
                    );
                }
                _ => return Err(HepIdError::UnknownKey(key.to_owned())),
            }
        }
        let host_port = host_port.ok_or(HepIdError::MissingHost)?;
        let (host, port) = split_host_port(host_port).map_err(HepIdError::BadHost)?;
        if port == Some(0) {
            return Err(HepIdError::BadHost(format!(
                "'{host_port}': port 0 is not a destination port"
            )));
        }
        Ok(HepIdString {
            name,
            host: host.to_owned(),
            port,
            transport,
            version,
        })
    }

    /// The effective transport: the one given, else UDP for v1/v2 and TCP for v3 (OpenSIPS's
    /// default is TCP and it forces v1/v2 onto UDP; with no explicit transport we pick UDP).
    /// An explicit stream transport with v1/v2 is an error.
    pub fn effective_transport(
        version: Version,
        transport: Option<Transport>,
    ) -> Result<Transport, HepIdError> {
        match (version, transport) {
            (Version::V3, t) => Ok(t.unwrap_or(Transport::Tcp)),
            (_, None | Some(Transport::Udp)) => Ok(Transport::Udp),
            (version, Some(transport)) => Err(HepIdError::VersionNeedsUdp { version, transport }),
        }
    }
}

/// Splits `[name]rest` the OpenSIPS way: spaces after `[` are skipped, the name ends at the
/// first space or `]`, and anything between a space and `]` is ignored.
fn parse_bracket_name(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('[')?;
    let close = inner.find(']')?;
    let body = inner[..close].trim_start();
    let name = body.split(' ').next().unwrap_or("");
    Some((name, &inner[close + 1..]))
}

/// Where a trace_id entry sends SIP traces (the `uri=` value).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TraceUri {
    /// `hep:<name>`: a `[hep.ids]` destination (or the built-in `stdout`).
    Hep(String),
    /// `stdout`: hep-dump JSON lines on standard output (heptap only).
    Stdout,
    /// `file:<path>`: hep-dump JSON lines appended to a file.
    File(PathBuf),
}

impl TraceUri {
    /// The destination name this uri resolves to: the hep_id name, `stdout`, or `file:<path>`
    /// (a file uri is its own implicit destination).
    pub fn destination_name(&self) -> String {
        match self {
            TraceUri::Hep(name) => name.clone(),
            TraceUri::Stdout => STDOUT.to_owned(),
            TraceUri::File(path) => format!("file:{}", path.display()),
        }
    }
}

impl fmt::Display for TraceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceUri::Hep(name) => write!(f, "hep:{name}"),
            TraceUri::Stdout => f.write_str(STDOUT),
            TraceUri::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// Why a `trace_id` string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceIdError {
    /// The string must begin with the trace id's name.
    #[error("a trace_id must start with '[name]'")]
    MissingName,
    /// `[` was never closed.
    #[error("missing ']' after the trace_id name")]
    UnclosedName,
    /// `[]`.
    #[error("empty trace_id name")]
    EmptyName,
    /// A token without `=` (OpenSIPS's own message).
    #[error("key delimiter '=' not found in '{0}' (expected uri=...)")]
    NoKeyDelimiter(String),
    /// `uri=` with nothing after it.
    #[error("empty value for '{0}' in trace_id")]
    EmptyValue(String),
    /// No `uri=` at all.
    #[error("trace_id has no uri=")]
    MissingUri,
    /// `uri=` twice in one entry (write two entries with the same name instead).
    #[error("uri given twice in one trace_id; write one entry per destination")]
    DuplicateUri,
    /// A key heptap does not support (`table` is for database tracing).
    #[error("unknown key '{0}' in trace_id, expected uri")]
    UnknownKey(String),
    /// `uri=hep:10.0.0.1:9060;transport=...` is the OpenSIPS 2.2 inline form.
    #[error(
        "'hep:{0}' must name a [hep.ids] entry; the inline hep:host:port form of OpenSIPS 2.2 is \
         not supported"
    )]
    InlineHep(String),
    /// `hep:` with no name, `file:` with no path.
    #[error("'{0}' names no destination")]
    EmptyUri(String),
    /// `sip:`, database urls, `syslog`: OpenSIPS tracer types heptap does not have.
    #[error("unsupported trace uri '{0}', expected hep:<hep_id>, stdout or file:<path>")]
    UnsupportedUri(String),
}

/// One OpenSIPS `trace_id` entry: `"[tid]uri=hep:homer"`. Several entries with the same name
/// make one trace id with several destinations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceIdEntry {
    /// The trace id name (what `sip_trace_id` and MI `trace id=` refer to).
    pub name: String,
    /// The destination of this entry.
    pub uri: TraceUri,
}

impl FromStr for TraceIdEntry {
    type Err = TraceIdError;

    fn from_str(text: &str) -> Result<Self, TraceIdError> {
        let s = text.trim();
        if !s.starts_with('[') {
            return Err(TraceIdError::MissingName);
        }
        let (name, rest) = parse_bracket_name(s).ok_or(TraceIdError::UnclosedName)?;
        if name.is_empty() {
            return Err(TraceIdError::EmptyName);
        }
        let mut uri = None;
        for token in rest.split(';').map(str::trim).filter(|t| !t.is_empty()) {
            let Some((key, value)) = token.split_once('=') else {
                return Err(TraceIdError::NoKeyDelimiter(token.to_owned()));
            };
            let (key, value) = (key.trim(), value.trim());
            if key != "uri" {
                return Err(TraceIdError::UnknownKey(key.to_owned()));
            }
            if value.is_empty() {
                return Err(TraceIdError::EmptyValue(key.to_owned()));
            }
            if uri.is_some() {
                return Err(TraceIdError::DuplicateUri);
            }
            uri = Some(parse_trace_uri(value)?);
        }
        let uri = uri.ok_or(TraceIdError::MissingUri)?;
        Ok(TraceIdEntry {
            name: name.to_owned(),
            uri,
        })
    }
}

fn parse_trace_uri(value: &str) -> Result<TraceUri, TraceIdError> {
    if value == STDOUT {
        return Ok(TraceUri::Stdout);
    }
    if let Some(name) = value.strip_prefix("hep:") {
        let name = name.trim();
        if name.is_empty() {
            return Err(TraceIdError::EmptyUri(value.to_owned()));
        }
        if name.contains(':') {
            return Err(TraceIdError::InlineHep(name.to_owned()));
        }
        return Ok(TraceUri::Hep(name.to_owned()));
    }
    if let Some(path) = value.strip_prefix("file:") {
        if path.trim().is_empty() {
            return Err(TraceIdError::EmptyUri(value.to_owned()));
        }
        return Ok(TraceUri::File(PathBuf::from(path.trim())));
    }
    Err(TraceIdError::UnsupportedUri(value.to_owned()))
}

impl fmt::Display for TraceIdEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]uri={}", self.name, self.uri)
    }
}

serde_via_str!(
    TraceIdEntry,
    "a trace_id string such as \"[tid]uri=hep:homer\""
);

/// serde for the `Option<Bwlist>` keys (`trace_bwlist`, `sip_methods`): the list in its text
/// form, `"b: ps, which"`.
pub(crate) mod bwlist {
    use heptap_filters::Bwlist;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::units::FromStrVisitor;

    /// Writes the list as text when present.
    pub(crate) fn serialize<S: Serializer>(list: &Option<Bwlist>, s: S) -> Result<S::Ok, S::Error> {
        match list {
            Some(list) => s.serialize_some(&list.to_string()),
            None => s.serialize_none(),
        }
    }

    /// Reads an optional list from its text.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bwlist>, D::Error> {
        struct Text(Bwlist);
        impl<'de> Deserialize<'de> for Text {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(FromStrVisitor::<Bwlist>(
                    "a list such as \"b: ps, which\"",
                    std::marker::PhantomData,
                ))
                .map(Text)
            }
        }
        Ok(Option::<Text>::deserialize(d)?.map(|text| text.0))
    }
}
