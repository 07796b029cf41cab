//! The config model: one struct per TOML table, the serde defaults a file gets for the keys it
//! omits, and [`Config::builtin_default`], what heptap runs on with no file at all.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use heptap_filters::Bwlist;
use heptap_hep::{NetProto, Version};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::opensips::{HepIdError, HepIdString, STDOUT, TraceIdEntry, TraceUri, Transport};
use crate::units::{self, HostPort, Sha256Fingerprint};

/// The whole heptap configuration.
/// `Config::default()` holds the serde defaults: what an empty config file yields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[log]`: how much heptap logs about itself.
    pub log: Log,
    /// `[service]`: process identity and shutdown.
    pub service: Service,
    /// `[hep]`: HEP encoding (proto_hep modparams) and the named destinations (`[hep.ids]`).
    pub hep: Hep,
    /// `[tracer]`: SIP tracing (the tracer module's modparams).
    pub tracer: Tracer,
    /// `[[listener]]`: where clients connect and which proxy each connection is relayed to.
    pub listener: Vec<Listener>,
    /// `[net.tcp]`, `[net.tls]`, `[net.ws]`, `[net.wss]`: connection-event tracing per protocol.
    pub net: Net,
    /// `[routes]`: OpenSIPS script `route[...]` blocks used as `trace_filter_route`.
    pub routes: Routes,
    /// `[address_groups]`: named IP/CIDR sets for `check_source_address("name")` in routes.
    #[serde(deserialize_with = "de_address_groups")]
    pub address_groups: BTreeMap<String, Vec<IpNet>>,
    /// `[mi]`: the management interface (FIFO and JSON-RPC over HTTP) and its tracing.
    pub mi: Mi,
}

impl Config {
    /// What `heptap` runs on when no config file is given: relay 127.0.0.1:5062 -> 127.0.0.1:5060
    /// over TCP, trace every connection event, SIP message and MI command to the local `stdout`
    /// destination, MI FIFO and reply FIFOs in a private per-user run directory, JSON-RPC on
    /// 127.0.0.1:8888. It differs from [`Config::default`] (what a file gets for omitted keys)
    /// where a file should opt in: tracing switched on, destinations chosen.
    pub fn builtin_default() -> Config {
        let mut config = Config::default();
        config.tracer.trace_id = vec![TraceIdEntry {
            name: "default".to_owned(),
            uri: TraceUri::Stdout,
        }];
        config.listener = vec![Listener {
            name: Some("default".to_owned()),
            sip_trace_id: Some("default".to_owned()),
            ..Listener::new(
                NetProto::Tcp,
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5062),
                HostPort {
                    host: "127.0.0.1".to_owned(),
                    port: 5060,
                },
            )
        }];
        config.net.tcp.trace_on = true;
        config.net.tcp.trace_destination = Some(STDOUT.to_owned());
        config.mi.fifo_name = None;
        config.mi.reply_dir = None;
        config.mi.trace_destination = Some(STDOUT.to_owned());
        // Readable lines on a terminal: each event's parts by name, not values joined by ':'.
        config.hep.homer5_on = false;
        config
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `trace`, `debug`, `info`, `warn`, `error`, `off`, or a tracing EnvFilter directive string
    /// (`"info,heptap::sender=debug"`) for finer control.
    pub level: String,
    /// `text` (one line per event, for a terminal and journald) or `json` (one JSON object per
    /// line, for log shippers). Read at start.
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2024-05-01T12:00:00Z  WARN heptap::sender::task: message key=value`.
    #[default]
    Text,
    /// `{"timestamp":...,"level":"WARN","fields":{"message":...,"key":...},"target":...}`.
    Json,
}

/// `[service]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Service {
    /// User to switch to after the listeners and the FIFO are set up (binding privileged ports
    /// needs root; relaying does not). None: keep the current user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group to switch to, with `user`. None: the user's primary group, or keep the current one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// How long a graceful shutdown (SIGTERM) waits for relayed connections and queued traces.
    #[serde(with = "units::duration")]
    pub shutdown_grace: Duration,
    /// Threads that run the relay and the tracing (HAProxy's `nbthread`); 0: one per core the
    /// process may use. Read at start only.
    pub workers: usize,
    /// After a hand-over (SIGUSR2), how long the old process keeps relaying the connections it
    /// has before it cuts those still open and exits (HAProxy's `hard-stop-after`): SIP
    /// connections live as long as their calls and registrations.
    #[serde(with = "units::duration")]
    pub drain_timeout: Duration,
    /// How long the new process of a hand-over may take to say it is ready before the old one
    /// gives up on it (and keeps serving).
    #[serde(with = "units::duration")]
    pub handover_timeout: Duration,
    /// Where heptap writes its pid (the process that accepts: a hand-over rewrites it), for
    /// `heptap upgrade` and init scripts. None: no pid file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
}

impl Default for Service {
    fn default() -> Self {
        Service {
            user: None,
            group: None,
            shutdown_grace: Duration::from_secs(10),
            workers: 0,
            drain_timeout: Duration::from_secs(3600),
            handover_timeout: Duration::from_secs(30),
            pid_file: None,
        }
    }
}

/// `[hep]`: proto_hep modparams and heptap's sender settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hep {
    /// `hep_capture_id`: the capture agent id in every packet (HEPv2 carries the low 16 bits).
    /// OpenSIPS's name is accepted too.
    #[serde(alias = "hep_capture_id")]
    pub capture_id: u32,
    /// `homer5_on`: payloads as values joined by `homer5_delim` instead of JSON. On by default,
    /// as OpenSIPS's proto_hep: a config moved from OpenSIPS without the modparam gives the same
    /// payloads. Homer 7 reads both.
    pub homer5_on: bool,
    /// `homer5_delim`: the separator for homer5 payloads.
    pub homer5_delim: String,
    /// JSON payloads in OpenSIPS's tab-indented cJSON form instead of compact JSON.
    pub json_pretty: bool,
    /// Sent in chunk 0x000E (auth key) so the collector can authenticate this agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_key: Option<String>,
    /// Sent in chunk 0x0013 (node name) to tell agents apart in Homer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Packets queued per destination before new ones are dropped (and counted): tracing never
    /// blocks the relay.
    pub queue_packets: usize,
    /// Bytes queued per destination before new packets are dropped (and counted). An integer, or
    /// a string such as "16MiB".
    #[serde(with = "units::size")]
    pub queue_bytes: u64,
    /// The largest UDP datagram sent; larger packets are counted and dropped, never truncated.
    pub max_udp_size: usize,
    /// How long a TCP/TLS connect (and TLS handshake) to a collector may take.
    #[serde(with = "units::duration")]
    pub connect_timeout: Duration,
    /// How long one write to a collector may stall before the connection is dropped.
    #[serde(with = "units::duration")]
    pub write_timeout: Duration,
    /// First reconnect delay after a collector connection fails; doubles up to `backoff_max`
    /// (with jitter).
    #[serde(with = "units::duration")]
    pub backoff_initial: Duration,
    /// Longest reconnect delay. (OpenSIPS gives up for an hour; heptap keeps trying.)
    #[serde(with = "units::duration")]
    pub backoff_max: Duration,
    /// While a collector stays unreachable, a "still disconnected for N s (M dropped)"
    /// warning this often; "0s": none (the first failure is always warned about).
    #[serde(with = "units::duration")]
    pub down_log_interval: Duration,
    /// Where each HEP destination spools what its memory queue cannot hold while its collector
    /// is down or slow: one subdirectory per destination (`<spool_dir>/<name>`). Unset or `""`:
    /// no spool, the newest packets are dropped as before.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "units::path_empty_is_none"
    )]
    pub spool_dir: Option<PathBuf>,
    /// Most bytes a destination's spool holds; beyond it the oldest segments are deleted
    /// (counted as `dropped_spool_full`).
    #[serde(with = "units::size")]
    pub spool_max_bytes: u64,
    /// Oldest packet a spool keeps; older ones are deleted (counted as `dropped_spool_expired`).
    #[serde(with = "units::duration")]
    pub spool_max_age: Duration,
    /// Packets per second replayed from a destination's spool once its collector is back (all
    /// lanes together), so a collector is not flooded; 0: as fast as the collector takes them.
    pub spool_replay_rate: u32,
    /// Packets per second at which a UDP destination sends, all lanes together, what queued
    /// during a collector outage (what is held when a new socket is opened after a failure),
    /// so the collector's receive buffer is not overrun; 0: as fast as the socket takes them.
    pub udp_replay_rate: u32,
    /// `hep_id`: named destinations, by name. `stdout` always exists besides these.
    pub ids: BTreeMap<String, HepIdEntry>,
}

impl Default for Hep {
    fn default() -> Self {
        Hep {
            capture_id: 1,
            homer5_on: true,
            homer5_delim: ":".to_owned(),
            json_pretty: false,
            auth_key: None,
            node_name: None,
            queue_packets: 10_000,
            queue_bytes: 16 << 20,
            max_udp_size: 65_507,
            connect_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            down_log_interval: Duration::from_secs(60),
            spool_dir: None,
            spool_max_bytes: 1 << 30,
            spool_max_age: Duration::from_secs(24 * 3600),
            spool_replay_rate: 20_000,
            udp_replay_rate: 10_000,
            ids: BTreeMap::new(),
        }
    }
}

/// One `[hep.ids]` value as written: an OpenSIPS `hep_id` string or a table (both become a
/// [`HepIdTable`]), `"stdout"`, or `"file:/path"`.
#[derive(Debug, Clone, PartialEq)]
// A handful per config, built at start and reload: their size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum HepIdEntry {
    /// A HEP collector.
    Hep(HepIdTable),
    /// Another name for the local `stdout` destination.
    Stdout,
    /// hep-dump JSON lines appended to this file.
    File(PathBuf),
}

impl Serialize for HepIdEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HepIdEntry::Hep(table) => table.serialize(s),
            HepIdEntry::Stdout => s.serialize_str(STDOUT),
            HepIdEntry::File(path) => s.collect_str(&format_args!("file:{}", path.display())),
        }
    }
}

impl<'de> Deserialize<'de> for HepIdEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HepIdEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a hep_id string (\"[name] host:port; transport=tcp; version=3\"), a table, \
                     \"stdout\" or \"file:/path\"",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HepIdEntry, E> {
                let t = v.trim();
                if t == STDOUT {
                    return Ok(HepIdEntry::Stdout);
                }
                if let Some(path) = t.strip_prefix("file:") {
                    if path.trim().is_empty() {
                        return Err(E::custom("'file:' needs a path"));
                    }
                    return Ok(HepIdEntry::File(PathBuf::from(path.trim())));
                }
                let parsed = HepIdString::parse(t, false).map_err(E::custom)?;
                Ok(HepIdEntry::Hep(HepIdTable::from(parsed)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<HepIdEntry, A::Error> {
                HepIdTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(HepIdEntry::Hep)
            }
        }
        d.deserialize_any(V)
    }
}

/// A HEP collector as configured: the `[hep.ids]` table form, which the OpenSIPS string form
/// also parses into. [`Config::destinations`] resolves it into a [`HepId`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HepIdTable {
    /// The `[name]` of the OpenSIPS string form, when it had one; must equal the table key.
    #[serde(skip)]
    pub declared_name: Option<String>,
    /// Collector host name or IP address (IPv6 with or without brackets).
    pub host: String,
    /// Collector port.
    #[serde(default = "default_hep_port")]
    pub port: u16,
    /// udp, tcp or tls. Not given: tcp for HEPv3, udp for v1/v2 (which exist only over UDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// HEP version 1, 2 or 3.
    #[serde(default = "default_hep_version")]
    pub version: Version,
    /// CA bundle (PEM) that verifies the collector's certificate; the system roots otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Verify the collector's certificate and name. Turn off only for lab collectors.
    #[serde(default = "yes")]
    pub tls_verify: bool,
    /// Trust exactly the certificate with this SHA-256 fingerprint (a self-signed collector),
    /// instead of a CA; its name and dates are not checked, the handshake's signature is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_pin_sha256: Option<Sha256Fingerprint>,
    /// The name sent in SNI and checked in the certificate, when it is not `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Overrides `[hep] queue_packets` for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_packets: Option<usize>,
    /// Overrides `[hep] queue_bytes` for this destination.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "units::size::option"
    )]
    pub queue_bytes: Option<u64>,
    /// Overrides `[hep] max_udp_size` for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_udp_size: Option<usize>,
    /// Overrides `[hep] spool_dir` for this destination (its spool is `<spool_dir>/<name>`);
    /// `""` turns the spool off for this destination only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
    /// Overrides `[hep] spool_max_bytes` for this destination.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "units::size::option"
    )]
    pub spool_max_bytes: Option<u64>,
    /// Overrides `[hep] spool_max_age` for this destination.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "units::duration::option"
    )]
    pub spool_max_age: Option<Duration>,
    /// Overrides `[hep] spool_replay_rate` for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_replay_rate: Option<u32>,
    /// Overrides `[hep] udp_replay_rate` for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_replay_rate: Option<u32>,
}

fn default_hep_port() -> u16 {
    crate::opensips::DEFAULT_HEP_PORT
}
fn default_hep_version() -> Version {
    Version::V3
}
fn yes() -> bool {
    true
}

impl From<HepIdString> for HepIdTable {
    fn from(s: HepIdString) -> Self {
        HepIdTable {
            declared_name: s.name,
            port: s.port.unwrap_or(crate::opensips::DEFAULT_HEP_PORT),
            transport: s.transport,
            version: s.version.unwrap_or(Version::V3),
            ..HepIdTable::new(s.host)
        }
    }
}

impl HepIdTable {
    /// A HEPv3-over-TCP collector at `host`:9060 with every other key at its default.
    pub fn new(host: impl Into<String>) -> Self {
        HepIdTable {
            declared_name: None,
            host: host.into(),
            port: crate::opensips::DEFAULT_HEP_PORT,
            transport: None,
            version: Version::V3,
            ca_file: None,
            cert_file: None,
            key_file: None,
            tls_verify: true,
            tls_pin_sha256: None,
            server_name: None,
            queue_packets: None,
            queue_bytes: None,
            max_udp_size: None,
            spool_dir: None,
            spool_max_bytes: None,
            spool_max_age: None,
            spool_replay_rate: None,
            udp_replay_rate: None,
        }
    }

    /// Applies the defaults (transport, per-destination queue sizes from `[hep]`). Fails only
    /// for an explicit tcp/tls transport with HEP v1/v2; `validate()` checks everything else.
    pub fn resolve(&self, name: &str, hep: &Hep) -> Result<HepId, HepIdError> {
        let transport = HepIdString::effective_transport(self.version, self.transport)?;
        let host = self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host);
        Ok(HepId {
            name: name.to_owned(),
            host: host.to_owned(),
            port: self.port,
            transport,
            version: self.version,
            tls: HepTls {
                ca_file: self.ca_file.clone(),
                cert_file: self.cert_file.clone(),
                key_file: self.key_file.clone(),
                tls_verify: self.tls_verify,
                pin_sha256: self.tls_pin_sha256,
                server_name: self.server_name.clone(),
            },
            queue_packets: self.queue_packets.unwrap_or(hep.queue_packets),
            queue_bytes: self.queue_bytes.unwrap_or(hep.queue_bytes),
            max_udp_size: self.max_udp_size.unwrap_or(hep.max_udp_size),
            udp_replay_rate: self.udp_replay_rate.unwrap_or(hep.udp_replay_rate),
            spool: self.spool(name, hep),
        })
    }

    /// The destination's spool after the `[hep]` defaults: its own subdirectory of the
    /// `spool_dir` in force, or none when that is unset or `""`.
    fn spool(&self, name: &str, hep: &Hep) -> Option<HepSpool> {
        let parent = match &self.spool_dir {
            Some(dir) if dir.as_os_str().is_empty() => return None,
            Some(dir) => dir,
            None => hep.spool_dir.as_ref()?,
        };
        Some(HepSpool {
            dir: parent.join(name),
            max_bytes: self.spool_max_bytes.unwrap_or(hep.spool_max_bytes),
            max_age: self.spool_max_age.unwrap_or(hep.spool_max_age),
            replay_rate: self.spool_replay_rate.unwrap_or(hep.spool_replay_rate),
        })
    }
}

/// A destination's disk spool, resolved: where, how much, how long, how fast to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HepSpool {
    /// The destination's own directory, `<spool_dir>/<name>`.
    pub dir: PathBuf,
    /// Most bytes held; the oldest segments go beyond it.
    pub max_bytes: u64,
    /// Oldest packet kept.
    pub max_age: Duration,
    /// Packets per second replayed (all lanes together); 0: no limit.
    pub replay_rate: u32,
}

/// A resolved HEP destination: what a sender connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HepId {
    /// The hep_id name (key in `[hep.ids]`), shown by MI `hep_ids` and in logs.
    pub name: String,
    /// Host name or IP address, without brackets; names are resolved at connect time.
    pub host: String,
    /// Collector port.
    pub port: u16,
    /// The transport after defaults.
    pub transport: Transport,
    /// The HEP version to encode.
    pub version: Version,
    /// TLS client settings (used when `transport` is tls).
    pub tls: HepTls,
    /// Queue limit in packets (the `[hep]` value unless overridden).
    pub queue_packets: usize,
    /// Queue limit in bytes (the `[hep]` value unless overridden).
    pub queue_bytes: u64,
    /// Largest UDP datagram (the `[hep]` value unless overridden).
    pub max_udp_size: usize,
    /// UDP: packets per second while catching up after an outage (the `[hep]` value unless
    /// overridden); 0: no limit.
    pub udp_replay_rate: u32,
    /// The disk spool, when `spool_dir` is set (`[hep]` or the table form's override).
    pub spool: Option<HepSpool>,
}

impl std::str::FromStr for HepId {
    type Err = HepIdError;

    /// Parses the OpenSIPS modparam string, `[name]` required as in OpenSIPS; queue sizes take
    /// the `[hep]` defaults ([`Config::destinations`] applies the configured ones).
    fn from_str(s: &str) -> Result<Self, HepIdError> {
        let parsed = HepIdString::parse(s, true)?;
        let name = parsed.name.clone().unwrap_or_default();
        HepIdTable::from(parsed).resolve(&name, &Hep::default())
    }
}

/// TLS client settings toward a HEP collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HepTls {
    /// CA bundle that verifies the collector; None: the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Verify the collector's certificate and name.
    pub tls_verify: bool,
    /// `tls_pin_sha256`: trust this one certificate instead of a CA.
    pub pin_sha256: Option<Sha256Fingerprint>,
    /// SNI / certificate name when not the host.
    pub server_name: Option<String>,
}

impl Default for HepTls {
    /// What a `[hep.ids]` entry gets: verification on against the system roots, no client
    /// certificate, SNI from the host.
    fn default() -> Self {
        HepTls {
            ca_file: None,
            cert_file: None,
            key_file: None,
            tls_verify: true,
            pin_sha256: None,
            server_name: None,
        }
    }
}

/// What a destination name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
// A handful per config, built at start and reload: their size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Destination {
    /// A HEP collector.
    Hep(HepId),
    /// hep-dump JSON lines on standard output.
    Stdout,
    /// hep-dump JSON lines appended to a file.
    File(PathBuf),
}

/// A trace id with all its destinations (the entries that share its name, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceId {
    /// The trace id name (what `sip_trace_id` and MI `trace id=` use).
    pub name: String,
    /// Destination names: `[hep.ids]` keys, `stdout`, or `file:<path>` for implicit file
    /// destinations; each is a key of [`Config::destinations`].
    pub destinations: Vec<String>,
}

/// `[tracer]`: SIP tracing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tracer {
    /// The global SIP tracing switch (tracer `trace_on`, MI `trace mode=on|off`).
    pub trace_on: bool,
    /// tracer `trace_id` entries: `"[tid]uri=hep:<hep_id>"`, `"[tid]uri=stdout"`,
    /// `"[tid]uri=file:/path"`. Entries sharing a name form one id with several destinations.
    /// One string is one entry, as one modparam line is.
    #[serde(deserialize_with = "units::one_or_many")]
    pub trace_id: Vec<TraceIdEntry>,
    /// What a SIP trace carries as payload: the raw message bytes, or a JSON wrapper.
    pub sip_payload: SipPayload,
}

impl Default for Tracer {
    fn default() -> Self {
        Tracer {
            trace_on: true,
            trace_id: Vec::new(),
            sip_payload: SipPayload::Raw,
        }
    }
}

/// The payload of SIP trace packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipPayload {
    /// The SIP message bytes as the payload chunk (what Homer expects, OpenSIPS's homer5 mode).
    Raw,
    /// OpenSIPS's JSON mode: the payload chunk is `{"payload": "<the SIP message>"}`.
    Json,
}

/// `[[listener]]`: one listening socket relayed to one upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// A label for logs and statistics; optional, unique when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What clients speak: tcp, tls, ws or wss.
    pub proto: NetProto,
    /// Where to listen, `ip:port` (`[::]:5060` for IPv6). Port 0 picks a free port (tests).
    #[serde(with = "units::socket_addr")]
    pub listen: SocketAddr,
    /// The proxy to relay to, `host:port`; a host name is resolved at each connect.
    pub upstream: HostPort,
    /// What to speak to the upstream: tcp or tls for tcp/tls listeners, ws or wss for ws/wss
    /// listeners. Not given: tcp, or ws. See [`Listener::upstream_proto`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_proto: Option<NetProto>,
    /// The certificate clients see; required for tls and wss listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// TLS settings toward the upstream when `upstream_proto` is tls or wss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<UpstreamTls>,
    /// PROXY protocol header sent first to the upstream so it sees the real client address.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    /// Clients come through a load balancer that sends a PROXY protocol header (v1 or v2) first:
    /// read it, and take the client's address (and the address it reached) from it, for the
    /// traces, the filters, the PROXY header toward the upstream and `upstream_source`.
    #[serde(default)]
    pub accept_proxy_protocol: bool,
    /// The source address of the upstream connection: heptap's own (`local`), or the client's
    /// (`client`: a transparent socket, IP_TRANSPARENT, so the proxy sees the client's address
    /// without any PROXY protocol; needs CAP_NET_RAW or CAP_NET_ADMIN and policy routing,
    /// docs/transparent.md).
    #[serde(default)]
    pub upstream_source: UpstreamSource,
    /// With `upstream_source = "client"`: the source port of the upstream connection, any
    /// (`any`, the kernel picks one) or the client's own (`client`, where it is free; any
    /// otherwise, counted).
    #[serde(default)]
    pub upstream_source_port: UpstreamSourcePort,
    /// With `upstream_source = "client"`: what a connection does when the client's address
    /// cannot be bound (no capability, the address in use): `refuse` it (the client gets a
    /// reset), or fall back to heptap's `local` address. Either way it is counted and logged.
    #[serde(default)]
    pub upstream_source_fallback: UpstreamSourceFallback,
    /// The trace_id whose destinations get this listener's SIP messages; None: SIP on this
    /// listener is not traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_trace_id: Option<String>,
    /// Which SIP methods are traced: `"b: OPTIONS"` (all but these), `"w: INVITE, BYE"` (only
    /// these). Replies follow their request's method (CSeq). None: all.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::opensips::bwlist"
    )]
    pub sip_methods: Option<Bwlist>,
    /// A route of `[routes]` run once per SIP message before it is traced (the OpenSIPS
    /// script's `if (...) trace("tid");`): `drop` means not traced, `trace("tid")` chooses the
    /// trace ids; when it chooses none, `sip_trace_id` applies. Needs `sip_trace_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_trace_route: Option<String>,
    /// Connections accepted at once; more wait in the kernel backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a client TLS or WebSocket handshake may take.
    #[serde(default = "five_seconds", with = "units::duration")]
    pub handshake_timeout: Duration,
    /// How long connecting to the upstream (including its TLS/WS handshake) may take.
    #[serde(default = "five_seconds", with = "units::duration")]
    pub connect_timeout: Duration,
    /// Close a relayed connection idle this long in both directions; None: never.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "units::duration::option"
    )]
    pub idle_timeout: Option<Duration>,
    /// The largest SIP message, in bytes: on ws/wss the largest WebSocket message relayed
    /// either way (a larger one closes the side that sent it with 1009); on tcp/tls the
    /// largest message traced whole (a larger one is relayed, its head traced). OpenSIPS's
    /// limit, 65,535, by default. An integer, or a string such as "64KiB".
    #[serde(default = "default_max_message_bytes", with = "units::size")]
    pub max_message_bytes: u64,
    /// ws/wss only: how long a WebSocket message may take from its first byte to its last; one
    /// still unfinished then closes the side that sent it with 1008. None: 10 s.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "units::duration::option"
    )]
    pub message_timeout: Option<Duration>,
}

fn default_max_connections() -> usize {
    10_000
}

/// OpenSIPS's largest SIP message (`BUF_SIZE`), over TCP and WebSocket alike.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 65_535;

/// `message_timeout` when a ws/wss listener sets none.
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

fn default_max_message_bytes() -> u64 {
    DEFAULT_MAX_MESSAGE_BYTES
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

impl Listener {
    /// A listener with every optional key at its default.
    pub fn new(proto: NetProto, listen: SocketAddr, upstream: HostPort) -> Self {
        Listener {
            name: None,
            proto,
            listen,
            upstream,
            upstream_proto: None,
            tls: None,
            upstream_tls: None,
            proxy_protocol: ProxyProtocol::None,
            accept_proxy_protocol: false,
            upstream_source: UpstreamSource::Local,
            upstream_source_port: UpstreamSourcePort::Any,
            upstream_source_fallback: UpstreamSourceFallback::Refuse,
            sip_trace_id: None,
            sip_methods: None,
            sip_trace_route: None,
            max_connections: default_max_connections(),
            handshake_timeout: five_seconds(),
            connect_timeout: five_seconds(),
            idle_timeout: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            message_timeout: None,
        }
    }

    /// `message_timeout`, or its default.
    pub fn message_timeout(&self) -> Duration {
        self.message_timeout.unwrap_or(DEFAULT_MESSAGE_TIMEOUT)
    }

    /// The protocol toward the upstream: as configured, else tcp for tcp/tls listeners and ws
    /// for ws/wss listeners.
    pub fn upstream_proto(&self) -> NetProto {
        self.upstream_proto.unwrap_or(if self.proto.is_ws() {
            NetProto::Ws
        } else {
            NetProto::Tcp
        })
    }
}

/// The server side of a tls/wss listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificate chain (PEM) presented to clients: usually the proxy's own.
    pub cert_file: PathBuf,
    /// Private key (PEM) of `cert_file`.
    pub key_file: PathBuf,
    /// CA bundle (PEM) that verifies client certificates when `client_cert = "require"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// Whether to ask clients for a certificate.
    #[serde(default)]
    pub client_cert: ClientCert,
}

/// Whether a TLS listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCert {
    /// Do not ask.
    #[default]
    None,
    /// Ask and accept any certificate (so it can be traced), or none.
    Request,
    /// Require a certificate that verifies against `client_ca_file`.
    Require,
}

/// The client side toward a tls/wss upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTls {
    /// CA bundle (PEM) that verifies the upstream; None: the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Verify the upstream's certificate and name. Off only for a proxy on loopback with a
    /// self-signed certificate.
    pub tls_verify: bool,
    /// SNI / certificate name, when not the upstream host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Client certificate chain (PEM) presented to the upstream; needs `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            ca_file: None,
            tls_verify: true,
            server_name: None,
            cert_file: None,
            key_file: None,
        }
    }
}

/// PROXY protocol toward the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// No header.
    #[default]
    None,
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

/// The source address of a listener's upstream connections (`upstream_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamSource {
    /// heptap's own address: the proxy sees heptap as the client.
    #[default]
    Local,
    /// The client's address (transparent relay, IP_TRANSPARENT).
    Client,
}

/// The source port of a transparent upstream connection (`upstream_source_port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamSourcePort {
    /// Whatever port the kernel picks on the client's address.
    #[default]
    Any,
    /// The client's own port where it is free on the client's address, any otherwise.
    Client,
}

/// What a transparent upstream connection does when the client's address cannot be bound
/// (`upstream_source_fallback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamSourceFallback {
    /// The connection is refused (the client gets a reset): the proxy never sees heptap's
    /// address in place of a client's (which its ACLs may trust).
    #[default]
    Refuse,
    /// The upstream connection is opened from heptap's own address, as with `local`.
    Local,
}

/// `[net]`: connection-event tracing, one table per protocol.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Net {
    /// `[net.tcp]` (proto_tcp modparams).
    pub tcp: NetTracing,
    /// `[net.tls]` (proto_tls modparams).
    pub tls: NetTracing,
    /// `[net.ws]` (proto_ws modparams).
    pub ws: NetTracing,
    /// `[net.wss]` (proto_wss modparams).
    pub wss: NetTracing,
}

impl Net {
    /// The table of one protocol.
    pub fn get(&self, proto: NetProto) -> &NetTracing {
        match proto {
            NetProto::Tcp => &self.tcp,
            NetProto::Tls => &self.tls,
            NetProto::Ws => &self.ws,
            NetProto::Wss => &self.wss,
        }
    }
}

/// Connection-event tracing settings of one protocol (`[net.<proto>]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetTracing {
    /// Initial state of the switch (MI `tcp_trace on|off` etc.); off by default, as in OpenSIPS.
    pub trace_on: bool,
    /// Where the events go: a `[hep.ids]` name, `stdout`, or `file:<path>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_destination: Option<String>,
    /// A route (from `[routes]`) run once per connection; `drop` there means "never trace this
    /// connection".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_filter_route: Option<String>,
    /// tls/wss only: add the TLS master key / traffic secrets to the trace, so captures can be
    /// decrypted. Off: it is a secret.
    pub trace_master_key: bool,
}

/// `[routes]`: where the `route[name] { ... }` blocks come from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Routes {
    /// Files of OpenSIPS script text (route blocks can be pasted from an opensips.cfg).
    pub files: Vec<PathBuf>,
    /// Script text inline in this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}

/// `[mi]`: the management interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mi {
    /// mi_fifo `fifo_name`: the FIFO heptap reads commands from. None (`""` in a file): a
    /// private per-user run directory chosen by heptap (`$XDG_RUNTIME_DIR/heptap/` or
    /// `/tmp/heptap-<uid>/`).
    #[serde(with = "units::path_empty_is_none")]
    pub fifo_name: Option<PathBuf>,
    /// Permissions of the FIFO, octal.
    #[serde(with = "units::mode")]
    pub fifo_mode: u32,
    /// Owner of the FIFO, when not the running user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fifo_user: Option<String>,
    /// Group of the FIFO, when not the running user's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fifo_group: Option<String>,
    /// mi_fifo `reply_dir`: where clients' reply FIFOs live. None (`""` in a file): the same
    /// private run directory as the FIFO.
    #[serde(with = "units::path_empty_is_none")]
    pub reply_dir: Option<PathBuf>,
    /// JSON-RPC over HTTP (`POST /<http_root>`); None (`""` in a file): no HTTP listener.
    #[serde(with = "units::socket_addr::empty_is_none")]
    pub http_listen: Option<SocketAddr>,
    /// Where Prometheus metrics alone are served (`GET /metrics`) without the MI's token; None
    /// (`""`, the default): only on `http_listen`, behind its checks. Any address: it reads
    /// counters and switches nothing.
    #[serde(with = "units::socket_addr::empty_is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// mi_http `root`: the URL path of the JSON-RPC endpoint (`root` is accepted too).
    #[serde(alias = "root")]
    pub http_root: String,
    /// Allow `http_listen` on a non-loopback address (the MI can switch tracing and reload).
    /// Needs `http_token_file`.
    pub http_allow_remote: bool,
    /// Host names the HTTP MI answers to besides IP addresses and `localhost`; a request naming
    /// any other `Host` is refused (DNS rebinding), and pages on these names may send requests.
    pub http_hosts: Vec<String>,
    /// A file holding the bearer token every HTTP request must carry (`Authorization: Bearer`);
    /// None (`""`): no token. Required with `http_allow_remote`.
    #[serde(with = "units::path_empty_is_none")]
    pub http_token_file: Option<PathBuf>,
    /// Where MI commands are traced: a `[hep.ids]` name, `stdout` or `file:<path>`; None: not
    /// traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_destination: Option<String>,
    /// Which MI commands are traced: `"b: ps, which"` or `"w: trace"`; None: all.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::opensips::bwlist"
    )]
    pub trace_bwlist: Option<Bwlist>,
    /// Indent JSON-RPC replies.
    pub pretty_printing: bool,
    /// How long a request may take to arrive, counted from its first byte, on both transports:
    /// a FIFO request not complete by then (a writer that died) is answered with an error and
    /// dropped; an HTTP request gets 408.
    #[serde(with = "units::duration")]
    pub request_timeout: Duration,
    /// `[mi.upstream]`: the proxy's own MI, to which unknown commands are forwarded (and traced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<MiUpstream>,
}

impl Default for Mi {
    fn default() -> Self {
        Mi {
            fifo_name: Some(PathBuf::from("/run/heptap/heptap_fifo")),
            fifo_mode: 0o600,
            fifo_user: None,
            fifo_group: None,
            reply_dir: Some(PathBuf::from("/run/heptap/")),
            http_listen: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8888)),
            metrics_listen: None,
            http_root: "mi".to_owned(),
            http_allow_remote: false,
            http_hosts: Vec::new(),
            http_token_file: None,
            trace_destination: None,
            trace_bwlist: None,
            pretty_printing: false,
            request_timeout: Duration::from_secs(10),
            upstream: None,
        }
    }
}

/// `[mi.upstream]`: the proxy's MI; exactly one of `fifo` and `url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MiUpstream {
    /// The proxy's MI FIFO (OpenSIPS 3.x framing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fifo: Option<PathBuf>,
    /// The proxy's JSON-RPC URL, e.g. `http://127.0.0.1:8889/mi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where heptap creates its reply FIFO for the proxy (the proxy's `reply_dir`).
    pub reply_dir: PathBuf,
    /// How long to wait for the proxy's reply.
    #[serde(with = "units::duration")]
    pub timeout: Duration,
}

impl Default for MiUpstream {
    fn default() -> Self {
        MiUpstream {
            fifo: None,
            url: None,
            reply_dir: PathBuf::from("/tmp/"),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Reads `[address_groups]`: each entry an IP address (a host route) or a CIDR network.
pub(crate) fn de_address_groups<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Vec<IpNet>>, D::Error> {
    struct Net(IpNet);
    impl std::str::FromStr for Net {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let t = s.trim();
            if let Ok(net) = t.parse::<IpNet>() {
                return Ok(Net(net));
            }
            if let Ok(ip) = t.parse::<IpAddr>() {
                return Ok(Net(IpNet::from(ip)));
            }
            Err(format!(
                "'{t}' is not an IP address or network, expected e.g. 10.0.0.0/8, 192.168.1.1 \
                 or 2001:db8::/32"
            ))
        }
    }
    impl<'de> Deserialize<'de> for Net {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(units::FromStrVisitor::<Net>(
                "an IP address or CIDR network",
                std::marker::PhantomData,
            ))
        }
    }
    let groups = BTreeMap::<String, Vec<Net>>::deserialize(d)?;
    Ok(groups
        .into_iter()
        .map(|(name, nets)| (name, nets.into_iter().map(|n| n.0).collect()))
        .collect())
}
