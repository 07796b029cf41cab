//! The Markdown report: the results of one run (JSON lines written by the load tools) turned
//! into one table per transport with absolute figures, ratios and the aims of the issues, and
//! written into BENCHMARKS.md between [`START`] and [`END`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// Marks the start of this report's section in BENCHMARKS.md.
pub const START: &str = "<!-- relay-bench:start -->";
/// Marks its end.
pub const END: &str = "<!-- relay-bench:end -->";

/// The targets, in table order: (label in the results, column title).
pub const TARGETS: [(&str, &str); 5] = [
    ("heptap-on", "heptap, tracing on, HEP/UDP"),
    ("heptap-tcp", "heptap, tracing on, HEP/TCP"),
    ("heptap-off", "heptap, tracing off"),
    ("haproxy", "HAProxy"),
    ("direct", "direct"),
];

/// The targets that trace, with the name their ratios and aims go by.
const TRACING: [(&str, &str); 2] = [("heptap-on", "UDP"), ("heptap-tcp", "TCP")];
/// What the tracing targets are compared with.
const OFF: &str = "heptap-off";
const HAPROXY: &str = "haproxy";

/// One measurement of one target, as appended to the results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// `bulk`, `rr_fixed`, `rr_max`, `connrate`, `idle`, or `udp_floor`.
    pub test: String,
    /// `tcp` or `tls`; `udp` for `udp_floor`.
    pub proto: String,
    /// `heptap-on`, `heptap-tcp`, `heptap-off`, `haproxy` or `direct`; `bare-sender` for
    /// `udp_floor`.
    pub target: String,
    /// Which repetition.
    pub round: u32,
    /// What the load tool measured.
    pub result: Value,
}

/// Reads a results file (one [`Record`] per line).
pub fn read_results(path: &Path) -> Result<Vec<Record>, Error> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(Error::from))
        .collect()
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// How a row compares heptap (tracing on) with HAProxy.
#[derive(Debug, Clone, Copy)]
enum Aim {
    /// Information only.
    None,
    /// heptap-on / HAProxy must be at least this (throughput-like figures).
    AtLeast(f64),
    /// heptap-on / HAProxy must be at most this (latency, memory).
    AtMost(f64),
}

/// One table row.
struct Row {
    /// What is measured, with its unit.
    label: &'static str,
    /// Which test's results it reads.
    test: &'static str,
    /// The figure, from one result.
    value: fn(&Value) -> Option<f64>,
    /// Digits after the decimal point.
    decimals: usize,
    /// The aim against HAProxy.
    aim: Aim,
    /// The aim for heptap-on / heptap-off (SIP tracing's cost), at least this.
    on_off_aim: Option<f64>,
}

/// How the rounds of one figure are combined into the number shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combine {
    /// The median.
    Median,
    /// The round least disturbed by other jobs: the highest rate, the lowest latency.
    Best,
}

fn per_thousand(v: &Value, count: &[&str]) -> Option<f64> {
    let cpu = num(v, &["probe", "relay_cpu_s"])?;
    let n = num(v, count)?;
    (n > 0.0).then(|| cpu * 1e3 / n * 1e3)
}

/// The relay's CPU per round trip at the maximum rate: a table row, and what the UDP floor
/// note compares tracing's cost with.
const CPU_PER_ROUND_TRIP: Row = Row {
    label: "relay CPU per message at max rate, µs",
    test: "rr_max",
    value: |v| per_thousand(v, &["completed"]),
    decimals: 1,
    aim: Aim::None,
    on_off_aim: None,
};

fn rows() -> Vec<Row> {
    vec![
        Row {
            label: "bulk throughput, MB/s (1 connection)",
            test: "bulk",
            value: |v| num(v, &["mb_per_s"]),
            decimals: 0,
            aim: Aim::AtLeast(0.9),
            on_off_aim: None,
        },
        Row {
            label: "SIP at 5,000 msg/s (50 conns): p50 latency, µs",
            test: "rr_fixed",
            value: |v| num(v, &["latency", "p50_us"]),
            decimals: 0,
            aim: Aim::None,
            on_off_aim: None,
        },
        Row {
            label: "SIP at 5,000 msg/s (50 conns): p99 latency, µs",
            test: "rr_fixed",
            value: |v| num(v, &["latency", "p99_us"]),
            decimals: 0,
            aim: Aim::AtMost(1.2),
            on_off_aim: None,
        },
        Row {
            label: "SIP at 5,000 msg/s: rate achieved, msg/s",
            test: "rr_fixed",
            value: |v| num(v, &["rate_achieved"]),
            decimals: 0,
            aim: Aim::None,
            on_off_aim: None,
        },
        Row {
            label: "SIP max rate (50 conns, closed loop), msg/s",
            test: "rr_max",
            value: |v| num(v, &["rate"]),
            decimals: 0,
            aim: Aim::AtLeast(0.9),
            on_off_aim: Some(0.85),
        },
        Row {
            label: "SIP at max rate: p99 latency, µs",
            test: "rr_max",
            value: |v| num(v, &["latency", "p99_us"]),
            decimals: 0,
            aim: Aim::None,
            on_off_aim: None,
        },
        Row {
            label: "connections/s (connect, 1 request, close)",
            test: "connrate",
            value: |v| num(v, &["rate"]),
            decimals: 0,
            aim: Aim::AtLeast(0.9),
            on_off_aim: None,
        },
        Row {
            label: "connections/s: failed connections",
            test: "connrate",
            value: |v| num(v, &["errors"]),
            decimals: 0,
            aim: Aim::None,
            on_off_aim: None,
        },
        Row {
            label: "memory per idle connection, KiB",
            test: "idle",
            value: |v| num(v, &["bytes_per_conn"]).map(|b| b / 1024.0),
            decimals: 1,
            aim: Aim::AtMost(3.0),
            on_off_aim: None,
        },
        Row {
            label: "idle: connections that failed to open",
            test: "idle",
            value: |v| num(v, &["errors"]),
            decimals: 0,
            aim: Aim::None,
            on_off_aim: None,
        },
        CPU_PER_ROUND_TRIP,
        Row {
            label: "relay CPU per connection, µs",
            test: "connrate",
            value: |v| per_thousand(v, &["completed"]),
            decimals: 1,
            aim: Aim::None,
            on_off_aim: None,
        },
        Row {
            label: "relay CPU per MB of bulk, µs",
            test: "bulk",
            value: |v| {
                let cpu = num(v, &["probe", "relay_cpu_s"])?;
                let mb = num(v, &["bytes"])? / 1e6;
                (mb > 0.0).then(|| cpu / mb * 1e6)
            },
            decimals: 0,
            aim: Aim::None,
            on_off_aim: None,
        },
        Row {
            label: "HEP packets received at 5,000 msg/s (2 per round trip expected)",
            test: "rr_fixed",
            value: |v| num(v, &["probe", "hep_packets"]),
            decimals: 0,
            aim: Aim::None,
            on_off_aim: None,
        },
        Row {
            label: "HEP packets received per round trip at max rate",
            test: "rr_max",
            value: |v| {
                let hep = num(v, &["probe", "hep_packets"])?;
                let n = num(v, &["completed"])?;
                (n > 0.0).then(|| hep / n)
            },
            decimals: 2,
            aim: Aim::None,
            on_off_aim: None,
        },
    ]
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    Some(if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    })
}

/// The rounds of each (test, proto, target) figure of `row`, combined.
fn figure(
    records: &[Record],
    row: &Row,
    proto: &str,
    target: &str,
    combine: Combine,
) -> Option<f64> {
    let xs: Vec<f64> = records
        .iter()
        .filter(|r| r.test == row.test && r.proto == proto && r.target == target)
        .filter_map(|r| (row.value)(&r.result))
        .collect();
    match (combine, row.aim) {
        (Combine::Best, Aim::AtLeast(_)) => xs.into_iter().reduce(f64::max),
        (Combine::Best, Aim::AtMost(_)) => xs.into_iter().reduce(f64::min),
        _ => median(xs),
    }
}

fn fmt(x: Option<f64>, decimals: usize) -> String {
    match x {
        Some(x) => format!("{x:.decimals$}"),
        None => "n/a".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// The tables of one run, with what the aims say: medians of every figure, then (with more
/// than one round) the best round of each figure that has an aim.
pub fn tables(records: &[Record]) -> String {
    let rounds: BTreeMap<u32, ()> = records.iter().map(|r| (r.round, ())).collect();
    let mut out = format!(
        "Figures are medians over {} round(s). Ratios: heptap with tracing on (sending HEP over \
         UDP, and over TCP) over HAProxy (`on/HAProxy`) and over heptap with tracing off \
         (`on/off`).\n\n",
        rounds.len()
    );
    out.push_str(&table_set(records, Combine::Median));
    if rounds.len() > 1 {
        out.push_str(
            "Best round of each figure that has an aim (highest rate, lowest latency or \
             memory): noise from other jobs only ever makes a figure worse, so this is the \
             least disturbed view.\n\n",
        );
        out.push_str(&table_set(records, Combine::Best));
    }
    if let Some(note) = udp_floor_note(records) {
        out.push_str(&note);
    }
    out
}

/// The floor under HEP over UDP (`heptap-bench udp-floor`) beside what tracing adds to heptap's
/// CPU per traced SIP message at the maximum rate, per transport and HEP transport.
fn udp_floor_note(records: &[Record]) -> Option<String> {
    let floors: Vec<&Record> = records.iter().filter(|r| r.test == "udp_floor").collect();
    let floor = median(
        floors
            .iter()
            .filter_map(|r| num(&r.result, &["cpu_us_per_datagram"]))
            .collect(),
    )?;
    let sent: f64 = floors
        .iter()
        .filter_map(|r| num(&r.result, &["datagrams"]))
        .sum();
    let counted: f64 = floors
        .iter()
        .filter_map(|r| num(&r.result, &["hep_packets"]))
        .sum();
    let size = floors
        .first()
        .and_then(|r| num(&r.result, &["size"]))
        .unwrap_or(0.0);
    let rate = floors
        .first()
        .and_then(|r| num(&r.result, &["rate_target"]))
        .unwrap_or(0.0);
    let mut out = format!(
        "**HEP over UDP, the floor.** A bare sender (one thread, a connected socket, 64 \
         datagrams per `sendmmsg`, nothing encoded or queued) sending {size:.0}-byte datagrams \
         at {rate:.0}/s to the same sink paid **{floor:.2} µs** of CPU per datagram (median of \
         {} round(s); the sink counted {counted:.0} of the {sent:.0} sent). On loopback that \
         is the kernel's send path and the sink's receive path, both charged to the sender.",
        floors.len()
    );
    let mut added = Vec::new();
    for proto in ["tcp", "tls"] {
        let cpu = |t: &str| figure(records, &CPU_PER_ROUND_TRIP, proto, t, Combine::Median);
        let Some(off) = cpu(OFF) else { continue };
        let each: Vec<String> = TRACING
            .iter()
            .filter_map(|&(t, via)| {
                // Two traced SIP messages (request and reply) per round trip.
                cpu(t).map(|on| format!("{:.2} µs with HEP over {via}", (on - off) / 2.0))
            })
            .collect();
        if !each.is_empty() {
            added.push(format!("{}: {}", proto.to_uppercase(), each.join(", ")));
        }
    }
    if !added.is_empty() {
        let _ = write!(
            out,
            " What tracing added to heptap's CPU per traced SIP message at the maximum rate \
             (tracing on minus tracing off, per round trip, halved; everything included: \
             framing, encoding, queueing, sending): {}.",
            added.join("; ")
        );
    }
    out.push_str("\n\n");
    Some(out)
}

fn table_set(records: &[Record], combine: Combine) -> String {
    let mut out = String::new();
    // udp_floor is not a target's figure: it has its own note.
    let mut protos: Vec<&str> = records
        .iter()
        .filter(|r| r.proto == "tcp" || r.proto == "tls")
        .map(|r| r.proto.as_str())
        .collect();
    protos.sort_by_key(|p| if *p == "tcp" { 0 } else { 1 });
    protos.dedup();
    for proto in protos {
        let which = match combine {
            Combine::Median => "medians",
            Combine::Best => "best round",
        };
        let _ = writeln!(out, "#### {}, {which}\n", proto.to_uppercase());
        let mut head = String::from("| measurement |");
        for (_, title) in TARGETS {
            let _ = write!(head, " {title} |");
        }
        for (_, via) in TRACING {
            let _ = write!(head, " on/HAProxy, {via} |");
        }
        for (_, via) in TRACING {
            let _ = write!(head, " on/off, {via} |");
        }
        head.push_str(" aim |");
        let _ = writeln!(out, "{head}");
        let columns = TARGETS.len() + 2 * TRACING.len();
        let _ = writeln!(out, "|---|{}---|", "---:|".repeat(columns));
        for row in rows() {
            if combine == Combine::Best && matches!(row.aim, Aim::None) {
                continue;
            }
            let figs: Vec<Option<f64>> = TARGETS
                .iter()
                .map(|(t, _)| figure(records, &row, proto, t, combine))
                .collect();
            if figs.iter().all(Option::is_none) {
                continue;
            }
            let of = |target: &str| {
                TARGETS
                    .iter()
                    .position(|(t, _)| *t == target)
                    .and_then(|i| figs[i])
            };
            let vs_haproxy: Vec<Option<f64>> = TRACING
                .iter()
                .map(|&(t, _)| ratio(of(t), of(HAPROXY)))
                .collect();
            let vs_off: Vec<Option<f64>> = TRACING
                .iter()
                .map(|&(t, _)| ratio(of(t), of(OFF)))
                .collect();
            let mut aims = Vec::new();
            for (&(_, via), r) in TRACING.iter().zip(&vs_haproxy) {
                match (row.aim, r) {
                    (Aim::AtLeast(a), Some(r)) => {
                        aims.push(format!("on/HAProxy ≥ {a}, {via}: {}", verdict(*r >= a)));
                    }
                    (Aim::AtMost(a), Some(r)) => {
                        aims.push(format!("on/HAProxy ≤ {a}, {via}: {}", verdict(*r <= a)));
                    }
                    _ => {}
                }
            }
            for (&(_, via), r) in TRACING.iter().zip(&vs_off) {
                if let (Some(a), Some(r)) = (row.on_off_aim, r) {
                    aims.push(format!("on/off ≥ {a}, {via}: {}", verdict(*r >= a)));
                }
            }
            let mut line = format!("| {} |", row.label);
            for f in &figs {
                let _ = write!(line, " {} |", fmt(*f, row.decimals));
            }
            for r in vs_haproxy.iter().chain(&vs_off) {
                let _ = write!(line, " {} |", fmt(*r, 2));
            }
            let _ = writeln!(out, "{line} {} |", aims.join("; "));
        }
        out.push('\n');
    }
    out
}

/// Replaces the section between [`START`] and [`END`] in `doc` with `section` (markers
/// included), or appends it when the markers are not there.
pub fn splice(doc: &str, section: &str) -> String {
    let block = format!("{START}\n{}\n{END}", section.trim_end());
    match (doc.find(START), doc.find(END)) {
        (Some(s), Some(e)) if s < e => {
            format!("{}{block}{}", &doc[..s], &doc[e + END.len()..])
        }
        _ if doc.trim().is_empty() => format!("# Benchmarks\n\n{block}\n"),
        _ => format!("{}\n\n{block}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn splice_replaces_only_the_marked_section() {
        let doc = format!("# Benchmarks\n\n## HEP senders\nkeep\n\n{START}\nold\n{END}\n\ntail\n");
        let got = splice(&doc, "new\n");
        assert_eq!(
            got,
            format!("# Benchmarks\n\n## HEP senders\nkeep\n\n{START}\nnew\n{END}\n\ntail\n")
        );
    }

    #[test]
    fn splice_appends_when_there_is_no_section_yet() {
        assert_eq!(
            splice("# Benchmarks\n\n## HEP senders\n", "x"),
            format!("# Benchmarks\n\n## HEP senders\n\n{START}\nx\n{END}\n")
        );
    }

    #[test]
    fn a_table_shows_medians_ratios_and_whether_the_aim_is_met() {
        let rec = |target: &str, round, rate: f64| Record {
            test: "rr_max".into(),
            proto: "tcp".into(),
            target: target.into(),
            round,
            result: json!({"rate": rate, "completed": 1000, "latency": {"p99_us": 100.0},
                           "probe": {"relay_cpu_s": null, "hep_packets": null}}),
        };
        let records = vec![
            rec("heptap-on", 1, 800.0),
            rec("heptap-on", 2, 900.0),
            rec("heptap-on", 3, 1000.0),
            rec("heptap-tcp", 1, 800.0),
            rec("heptap-off", 1, 1000.0),
            rec("haproxy", 1, 1000.0),
            rec("direct", 1, 2000.0),
        ];
        let t = tables(&records);
        assert!(
            t.contains(
                "| SIP max rate (50 conns, closed loop), msg/s | 900 | 800 | 1000 | 1000 | 2000 | 0.90 | 0.80 | 0.90 | 0.80 | on/HAProxy ≥ 0.9, UDP: met; on/HAProxy ≥ 0.9, TCP: **missed**; on/off ≥ 0.85, UDP: met; on/off ≥ 0.85, TCP: **missed** |"
            ),
            "{t}"
        );
    }

    #[test]
    fn the_udp_floor_is_set_beside_what_tracing_adds_per_message() {
        let rr = |target: &str, cpu: f64| Record {
            test: "rr_max".into(),
            proto: "tcp".into(),
            target: target.into(),
            round: 1,
            result: json!({"rate": 1000.0, "completed": 1000,
                           "probe": {"relay_cpu_s": cpu, "hep_packets": null}}),
        };
        let floor = |round, us: f64| Record {
            test: "udp_floor".into(),
            proto: "udp".into(),
            target: "bare-sender".into(),
            round,
            result: json!({"cpu_us_per_datagram": us, "datagrams": 100, "hep_packets": 100,
                           "size": 600, "rate_target": 100000}),
        };
        let records = vec![
            rr("heptap-on", 0.020),
            rr("heptap-tcp", 0.014),
            rr("heptap-off", 0.013),
            floor(1, 2.5),
            floor(2, 2.7),
            floor(3, 9.0),
        ];
        let t = tables(&records);
        assert!(t.contains("paid **2.70 µs** of CPU per datagram (median of 3 round(s); the sink counted 300 of the 300 sent)"), "{t}");
        assert!(
            t.contains("TCP: 3.50 µs with HEP over UDP, 0.50 µs with HEP over TCP."),
            "{t}"
        );
        assert!(!t.contains("#### UDP"), "{t}");
    }
}
