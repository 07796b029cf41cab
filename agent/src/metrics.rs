//! The Prometheus view of the statistics (`GET /metrics`, docs/metrics.md): every statistic
//! `get_statistics` lists, renamed by Prometheus's conventions (`heptap_<subject>_<what>_total`
//! with `destination`, `listener`, `proto`, `reason` labels), plus what only a scraper needs
//! (build info, uptime, seconds since a destination last delivered).
//!
//! Rendered per scrape from a snapshot: nothing here runs on the relay path. prometheus-client
//! (the Prometheus project's own Rust client) writes the text format, through a `Collector` so
//! the registry's atomics stay the only counters.

use std::collections::BTreeMap;
use std::time::Duration;

use heptap_mi::Statistic;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// A serving listener, for the `proto` label and `heptap_listener_info`.
#[derive(Clone, Debug)]
pub struct ListenerInfo {
    /// Its name (`listener_<name>:` in get_statistics).
    pub name: String,
    /// tcp, tls, ws or wss.
    pub proto: &'static str,
    /// The address it listens on.
    pub listen: String,
}

/// A destination, for the `proto` label and `heptap_destination_info`.
#[derive(Clone, Debug)]
pub struct DestinationInfo {
    /// Its `hep_id` name (`hep_<name>:` in get_statistics).
    pub name: String,
    /// udp, tcp, tls, stdout or file.
    pub proto: &'static str,
    /// `host:port`, `stdout` or `file:<path>`.
    pub address: String,
}

/// What one scrape shows.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// Every statistic, as `get_statistics all` lists them.
    pub stats: Vec<Statistic>,
    /// The serving listeners.
    pub listeners: Vec<ListenerInfo>,
    /// The destinations.
    pub destinations: Vec<DestinationInfo>,
    /// How long heptap has run.
    pub uptime: Duration,
    /// Now, Unix time in milliseconds.
    pub now_unix_ms: u64,
}

/// Counter or gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// Where a statistic goes: its family (name without the prefix and `_total`), help, kind,
/// one extra label, and the factor its value is multiplied by (ms -> s).
#[derive(Clone, Copy, Debug)]
struct Target {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    label: Option<(&'static str, &'static str)>,
    scale: f64,
}

const fn t(name: &'static str, help: &'static str, kind: Kind) -> Target {
    Target {
        name,
        help,
        kind,
        label: None,
        scale: 1.0,
    }
}

const fn labelled(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    label: (&'static str, &'static str),
) -> Target {
    Target {
        name,
        help,
        kind,
        label: Some(label),
        scale: 1.0,
    }
}

const MS: f64 = 0.001;

/// A `hep_<name>:` statistic's family.
fn destination_target(stat: &str) -> Option<Target> {
    use Kind::{Counter, Gauge};
    if let Some(reason) = stat.strip_prefix("dropped_") {
        let reason = DROP_REASONS.iter().find(|r| **r == reason)?;
        return Some(labelled(
            "heptap_destination_dropped_packets",
            "Packets a destination dropped, by reason.",
            Counter,
            ("reason", reason),
        ));
    }
    Some(match stat {
        "enqueued" => t(
            "heptap_destination_enqueued_packets",
            "Packets accepted into a destination's queue.",
            Counter,
        ),
        "sent" => t(
            "heptap_destination_sent_packets",
            "Packets delivered to a destination (docs/senders.md says what delivered means per transport).",
            Counter,
        ),
        "sent_bytes" => t(
            "heptap_destination_sent_bytes",
            "Bytes delivered to a destination.",
            Counter,
        ),
        "send_errors" => t(
            "heptap_destination_send_errors",
            "Failed connects and writes, and lost connections, of a destination.",
            Counter,
        ),
        "reconnects" => t(
            "heptap_destination_reconnects",
            "Connections to a destination after the first.",
            Counter,
        ),
        "connected" => t(
            "heptap_destination_connected",
            "1 while a destination's connection (or socket, or file) is up.",
            Gauge,
        ),
        "queue_depth" => t(
            "heptap_destination_queue_packets",
            "Packets held in a destination's memory queue.",
            Gauge,
        ),
        "queue_bytes" => t(
            "heptap_destination_queue_bytes",
            "Estimated bytes held in a destination's memory queue.",
            Gauge,
        ),
        "last_sent_unix_ms" => Target {
            scale: MS,
            ..t(
                "heptap_destination_last_send_timestamp_seconds",
                "When a destination last delivered a packet (Unix time; 0: never).",
                Gauge,
            )
        },
        "spooled" => t(
            "heptap_destination_spooled_packets",
            "Packets written to a destination's disk spool.",
            Counter,
        ),
        "spool_replayed" => t(
            "heptap_destination_spool_replayed_packets",
            "Packets read back from a destination's spool and delivered.",
            Counter,
        ),
        "spool_adopted" => t(
            "heptap_destination_spool_adopted_packets",
            "Packets taken over from another process's spool.",
            Counter,
        ),
        "spool_bytes" => t(
            "heptap_destination_spool_bytes",
            "Bytes of a destination's spool segments.",
            Gauge,
        ),
        "spool_records" => t(
            "heptap_destination_spool_packets",
            "Packets held in a destination's spool.",
            Gauge,
        ),
        "spool_oldest_age_ms" => Target {
            scale: MS,
            ..t(
                "heptap_destination_spool_oldest_age_seconds",
                "Age of the oldest packet in a destination's spool.",
                Gauge,
            )
        },
        _ => return None,
    })
}

/// The reasons of the `dropped_<reason>` statistics (docs/senders.md).
const DROP_REASONS: &[&str] = &[
    "queue_full",
    "oversize",
    "encode_error",
    "shutdown",
    "spool_full",
    "spool_expired",
    "spool_corrupt",
    "spool_error",
];

/// A `listener_<name>:` statistic's family.
fn listener_target(stat: &str) -> Option<Target> {
    use Kind::{Counter, Gauge};
    Some(match stat {
        "accepted" => t(
            "heptap_listener_accepted_connections",
            "Client connections a listener accepted.",
            Counter,
        ),
        "active" => t(
            "heptap_listener_active_connections",
            "Connections a listener relays now.",
            Gauge,
        ),
        "upstream_connect_failed" => t(
            "heptap_listener_upstream_connect_failures",
            "Upstream connects that failed (the proxy refused or did not answer).",
            Counter,
        ),
        "handshake_failed" => t(
            "heptap_listener_handshake_failures",
            "Client TLS handshakes or WebSocket upgrades that failed or timed out.",
            Counter,
        ),
        "upstream_source_failed" => t(
            "heptap_listener_upstream_source_failures",
            "Transparent listeners: upstream connections that could not use the client's address (refused or opened from heptap's).",
            Counter,
        ),
        "upstream_source_port_taken" => t(
            "heptap_listener_upstream_source_port_taken",
            "Transparent listeners: upstream connections that could not keep the client's port (another one taken).",
            Counter,
        ),
        "accept_errors" => t(
            "heptap_listener_accept_errors",
            "accept() errors (EMFILE...).",
            Counter,
        ),
        "bytes_in" => labelled(
            "heptap_listener_relayed_bytes",
            "Bytes relayed (WS/WSS: message payloads), by direction.",
            Counter,
            ("direction", "client_to_upstream"),
        ),
        "bytes_out" => labelled(
            "heptap_listener_relayed_bytes",
            "Bytes relayed (WS/WSS: message payloads), by direction.",
            Counter,
            ("direction", "upstream_to_client"),
        ),
        "ws_message_too_big" => labelled(
            "heptap_listener_ws_closed",
            "WebSocket sides heptap closed, by reason.",
            Counter,
            ("reason", "message_too_big"),
        ),
        "ws_message_timeout" => labelled(
            "heptap_listener_ws_closed",
            "WebSocket sides heptap closed, by reason.",
            Counter,
            ("reason", "message_timeout"),
        ),
        "sip_messages" => t(
            "heptap_listener_sip_messages",
            "SIP messages framed on a listener's connections, traced or not.",
            Counter,
        ),
        "sip_traced" => t(
            "heptap_listener_sip_traced",
            "SIP messages handed to the trace id's destinations.",
            Counter,
        ),
        "sip_filtered" => t(
            "heptap_listener_sip_filtered",
            "SIP messages not traced: their method is left out by sip_methods.",
            Counter,
        ),
        "sip_switched_off" => t(
            "heptap_listener_sip_switched_off",
            "SIP messages not traced: tracing was switched off (trace_on, sip_trace).",
            Counter,
        ),
        "sip_malformed" => t(
            "heptap_listener_sip_malformed",
            "Stream parts that were not SIP (the framer resynchronised).",
            Counter,
        ),
        "sip_oversize" => t(
            "heptap_listener_sip_oversize",
            "SIP messages too large for one HEP packet: counted, not traced whole.",
            Counter,
        ),
        "sip_gave_up" => t(
            "heptap_listener_sip_gave_up",
            "Connections on which SIP framing stopped (bytes still relayed).",
            Counter,
        ),
        "sip_keepalives" => t(
            "heptap_listener_sip_keepalives",
            "CRLF keep-alives skipped.",
            Counter,
        ),
        "sip_framing_lost" => t(
            "heptap_listener_sip_framing_lost",
            "Occasions SIP was relayed but could not be traced whole.",
            Counter,
        ),
        _ => return None,
    })
}

/// One sample: its labels and value.
type Sample = (Vec<(&'static str, String)>, f64);

/// One family: help, kind and samples, in the order they came.
#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: Kind,
    samples: Vec<Sample>,
}

/// The families of one scrape, by name, ready to encode.
#[derive(Debug, Default)]
struct Families(BTreeMap<&'static str, Family>);

impl Families {
    fn push(&mut self, name: &'static str, help: &'static str, kind: Kind, sample: Sample) {
        self.0
            .entry(name)
            .or_insert_with(|| Family {
                help,
                kind,
                samples: Vec::new(),
            })
            .samples
            .push(sample);
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, family) in &self.0 {
            let kind = match family.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut metric = encoder.encode_descriptor(name, family.help, None, kind)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                match family.kind {
                    // Counters stay integers (exact beyond 2^53).
                    Kind::Counter if value.fract() == 0.0 && *value >= 0.0 => {
                        ConstCounter::new(*value as u64).encode(sample)?;
                    }
                    Kind::Counter => ConstCounter::new(*value).encode(sample)?,
                    Kind::Gauge => ConstGauge::new(*value).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

/// The text exposition (format 0.0.4) of `scrape`.
pub fn render(scrape: &Scrape) -> String {
    let mut families = Families::default();
    let listener_proto: BTreeMap<&str, &str> = scrape
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.proto))
        .collect();
    let destination_proto: BTreeMap<&str, &str> = scrape
        .destinations
        .iter()
        .map(|d| (d.name.as_str(), d.proto))
        .collect();
    let uptime = scrape.uptime.as_secs_f64();
    for s in &scrape.stats {
        let value = s.value as f64;
        let known = if let Some(dest) = s.group.strip_prefix("hep_") {
            destination_target(&s.name).map(|target| {
                let proto = destination_proto.get(dest).copied().unwrap_or("");
                (target, vec![("destination", dest), ("proto", proto)])
            })
        } else if let Some(listener) = s.group.strip_prefix("listener_") {
            listener_target(&s.name).map(|target| {
                let proto = listener_proto.get(listener).copied().unwrap_or("");
                (target, vec![("listener", listener), ("proto", proto)])
            })
        } else if s.group == "mi" {
            mi_target(&s.name)
        } else {
            None
        };
        match known {
            Some((target, base)) => {
                let mut labels: Vec<(&'static str, String)> =
                    base.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
                if let Some((k, v)) = target.label {
                    labels.push((k, v.to_owned()));
                }
                if s.name == "last_sent_unix_ms" {
                    // Never: since heptap started, which is how long it has had nothing out.
                    let since = if s.value == 0 {
                        uptime
                    } else {
                        scrape.now_unix_ms.saturating_sub(s.value) as f64 * MS
                    };
                    families.push(
                        "heptap_destination_seconds_since_last_send",
                        "Seconds since a destination last delivered a packet (since start when it never did).",
                        Kind::Gauge,
                        (labels.clone(), since),
                    );
                }
                families.push(
                    target.name,
                    target.help,
                    target.kind,
                    (labels, value * target.scale),
                );
            }
            // Whatever has no Prometheus name of its own is still there, under its
            // get_statistics name.
            None => {
                let labels = vec![("group", s.group.clone()), ("name", s.name.clone())];
                if s.gauge {
                    families.push(
                        "heptap_statistic_gauge",
                        "A get_statistics gauge without a metric of its own (group:name).",
                        Kind::Gauge,
                        (labels, value),
                    );
                } else {
                    families.push(
                        "heptap_statistic",
                        "A get_statistics counter without a metric of its own (group:name).",
                        Kind::Counter,
                        (labels, value),
                    );
                }
            }
        }
    }
    for l in &scrape.listeners {
        families.push(
            "heptap_listener_info",
            "A serving listener: its protocol and address (always 1).",
            Kind::Gauge,
            (
                vec![
                    ("listener", l.name.clone()),
                    ("proto", l.proto.to_owned()),
                    ("listen", l.listen.clone()),
                ],
                1.0,
            ),
        );
    }
    for d in &scrape.destinations {
        families.push(
            "heptap_destination_info",
            "A destination: its transport and address (always 1).",
            Kind::Gauge,
            (
                vec![
                    ("destination", d.name.clone()),
                    ("proto", d.proto.to_owned()),
                    ("address", d.address.clone()),
                ],
                1.0,
            ),
        );
    }
    families.push(
        "heptap_build_info",
        "heptap's version (always 1).",
        Kind::Gauge,
        (vec![("version", env!("CARGO_PKG_VERSION").to_owned())], 1.0),
    );
    families.push(
        "heptap_uptime_seconds",
        "Seconds since heptap started.",
        Kind::Gauge,
        (Vec::new(), uptime),
    );
    let mut registry = Registry::default();
    registry.register_collector(Box::new(families));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// A `mi:` statistic: `requests_<transport>_<result>`.
fn mi_target(stat: &str) -> Option<(Target, Vec<(&'static str, &str)>)> {
    let rest = stat.strip_prefix("requests_")?;
    let (transport, result) = rest.split_once('_')?;
    let transport = ["fifo", "http"].into_iter().find(|t| *t == transport)?;
    let result = ["ok", "error", "refused"]
        .into_iter()
        .find(|r| *r == result)?;
    Some((
        t(
            "heptap_mi_requests",
            "MI requests by transport and result.",
            Kind::Counter,
        ),
        vec![("transport", transport), ("result", result)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(group: &str, name: &str, value: u64, gauge: bool) -> Statistic {
        Statistic {
            group: group.to_owned(),
            name: name.to_owned(),
            value,
            gauge,
        }
    }

    fn scrape(stats: Vec<Statistic>) -> String {
        render(&Scrape {
            stats,
            listeners: Vec::new(),
            destinations: vec![DestinationInfo {
                name: "homer".to_owned(),
                proto: "udp",
                address: "10.0.0.5:9060".to_owned(),
            }],
            uptime: Duration::from_secs(30),
            now_unix_ms: 1_700_000_010_000,
        })
    }

    #[test]
    fn a_statistic_without_a_name_of_its_own_keeps_its_get_statistics_name() {
        let text = scrape(vec![
            stat("core", "rcv_requests", 5, false),
            stat("core", "shm_used", 7, true),
        ]);
        assert!(
            text.contains("heptap_statistic_total{group=\"core\",name=\"rcv_requests\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("heptap_statistic_gauge{group=\"core\",name=\"shm_used\"} 7"),
            "{text}"
        );
    }

    #[test]
    fn drops_are_one_metric_by_reason_and_milliseconds_become_seconds() {
        let text = scrape(vec![
            stat("hep_homer", "dropped_queue_full", 3, false),
            stat("hep_homer", "spool_oldest_age_ms", 1500, true),
            stat("hep_homer", "last_sent_unix_ms", 1_700_000_000_000, true),
        ]);
        assert!(
            text.contains(
                "heptap_destination_dropped_packets_total{destination=\"homer\",proto=\"udp\",reason=\"queue_full\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("heptap_destination_spool_oldest_age_seconds{destination=\"homer\",proto=\"udp\"} 1.5"),
            "{text}"
        );
        assert!(
            text.contains(
                "heptap_destination_seconds_since_last_send{destination=\"homer\",proto=\"udp\"} 10"
            ),
            "{text}"
        );
    }

    #[test]
    fn never_sent_counts_from_the_start() {
        let text = scrape(vec![stat("hep_homer", "last_sent_unix_ms", 0, true)]);
        assert!(
            text.contains(
                "heptap_destination_seconds_since_last_send{destination=\"homer\",proto=\"udp\"} 30"
            ),
            "{text}"
        );
    }
}
