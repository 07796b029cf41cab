//! The Markdown report: the results of one run (JSON lines written by the load tools) turned
//! into one table per transport with absolute figures, CPU per unit of work, every relay's
//! ratio to HAProxy and the aims of issue 21 (met or missed), and written into BENCHMARKS.md
//! between [`START`] and [`END`].

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
pub const TARGETS: [(&str, &str); 6] = [
    ("heptap-on", "heptap, tracing on, HEP/UDP"),
    ("heptap-tcp", "heptap, tracing on, HEP/TCP"),
    ("heptap-off", "heptap, tracing off"),
    ("haproxy", "HAProxy"),
    ("nginx", "nginx"),
    ("direct", "direct"),
];

/// The targets set against HAProxy in the ratio columns, with the short name the columns and
/// the aims give them.
const VS_HAPROXY: [(&str, &str); 4] = [
    ("heptap-on", "on UDP"),
    ("heptap-tcp", "on TCP"),
    ("heptap-off", "off"),
    ("nginx", "nginx"),
];

/// The targets that trace, with the HEP transport they send over.
const TRACING: [(&str, &str); 2] = [("heptap-on", "UDP"), ("heptap-tcp", "TCP")];
/// What the tracing targets are compared with.
const OFF: &str = "heptap-off";
/// What every ratio is taken against.
const HAPROXY: &str = "haproxy";

/// One measurement of one target, as appended to the results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// `bulk`, `rr_fixed`, `rr_max`, `connrate`, `idle`, or `udp_floor`.
    pub test: String,
    /// `tcp` or `tls`; `udp` for `udp_floor`.
    pub proto: String,
    /// `heptap-on`, `heptap-tcp`, `heptap-off`, `heptap-spool`, `haproxy`, `nginx` or
    /// `direct`; `bare-sender` for `udp_floor`.
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

/// Which way a figure is better: what the best-round view picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    /// Rates.
    Higher,
    /// Latency, memory, CPU per unit.
    Lower,
}

/// How a ratio to HAProxy must come out.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// At least this (rates).
    AtLeast(f64),
    /// At most this (latency, memory, CPU).
    AtMost(f64),
}

/// One aim of issue 21: a target's figure over HAProxy's.
#[derive(Debug, Clone, Copy)]
struct Aim {
    /// The target held to it.
    target: &'static str,
    /// What its ratio to HAProxy must be.
    bound: Bound,
    /// Only over this transport (`None`: over both).
    proto: Option<&'static str>,
}

const fn at_least(target: &'static str, ratio: f64) -> Aim {
    Aim {
        target,
        bound: Bound::AtLeast(ratio),
        proto: None,
    }
}

const fn at_most(target: &'static str, ratio: f64) -> Aim {
    Aim {
        target,
        bound: Bound::AtMost(ratio),
        proto: None,
    }
}

/// Every heptap target's idle memory per plain TCP connection: at most 1.5 × HAProxy's.
const MEMORY_AIMS: [Aim; 3] = [
    Aim {
        target: "heptap-on",
        bound: Bound::AtMost(1.5),
        proto: Some("tcp"),
    },
    Aim {
        target: "heptap-tcp",
        bound: Bound::AtMost(1.5),
        proto: Some("tcp"),
    },
    Aim {
        target: "heptap-off",
        bound: Bound::AtMost(1.5),
        proto: Some("tcp"),
    },
];

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
    /// Which way is better.
    better: Better,
    /// The aims against HAProxy (rows with none are information, left out of the best-round
    /// view).
    aims: &'static [Aim],
}

/// How the rounds of one figure are combined into the number shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combine {
    /// The median.
    Median,
    /// The round least disturbed by other jobs: the highest rate, the lowest latency.
    Best,
}

/// Microseconds of a process's CPU (`relay_cpu_s` or `sink_cpu_s`) per unit counted at
/// `count`.
fn cpu_us_per(v: &Value, cpu: &str, count: &[&str]) -> Option<f64> {
    let cpu = num(v, &["probe", cpu])?;
    let n = num(v, count)?;
    (n > 0.0).then(|| cpu * 1e6 / n)
}

/// Microseconds of a process's CPU per MB (10^6 bytes) of bulk.
fn cpu_us_per_mb(v: &Value, cpu: &str) -> Option<f64> {
    let cpu = num(v, &["probe", cpu])?;
    let mb = num(v, &["bytes"])? / 1e6;
    (mb > 0.0).then(|| cpu / mb * 1e6)
}

/// The relay's CPU time over the measured window, in percent of one core.
fn busy_percent(v: &Value) -> Option<f64> {
    let cpu = num(v, &["probe", "relay_cpu_s"])?;
    let secs = num(v, &["secs"])?;
    (secs > 0.0).then(|| cpu / secs * 100.0)
}

/// The relay's CPU per round trip at the maximum rate: a table row, and what the UDP floor
/// note compares tracing's cost with.
const CPU_PER_ROUND_TRIP: Row = Row {
    label: "relay CPU per message at max rate, µs",
    test: "rr_max",
    value: |v| cpu_us_per(v, "relay_cpu_s", &["completed"]),
    decimals: 1,
    better: Better::Lower,
    aims: &[at_most(OFF, 1.0)],
};

/// HEP packets the sink counted per round trip at the maximum rate: a table row, and how the
/// UDP floor note turns tracing's cost per round trip into a cost per HEP packet.
const HEP_PER_ROUND_TRIP: Row = Row {
    label: "HEP packets received per round trip at max rate",
    test: "rr_max",
    value: |v| {
        let hep = num(v, &["probe", "hep_packets"])?;
        let n = num(v, &["completed"])?;
        (n > 0.0).then(|| hep / n)
    },
    decimals: 2,
    better: Better::Higher,
    aims: &[],
};

/// Every row, in table order.
const ROWS: &[Row] = &[
    Row {
        label: "bulk throughput, MB/s (1 connection)",
        test: "bulk",
        value: |v| num(v, &["mb_per_s"]),
        decimals: 0,
        better: Better::Higher,
        aims: &[at_least(OFF, 1.0)],
    },
    Row {
        label: "SIP at 5,000 msg/s (50 conns): p50 latency, µs",
        test: "rr_fixed",
        value: |v| num(v, &["latency", "p50_us"]),
        decimals: 0,
        better: Better::Lower,
        aims: &[],
    },
    Row {
        label: "SIP at 5,000 msg/s (50 conns): p99 latency, µs",
        test: "rr_fixed",
        value: |v| num(v, &["latency", "p99_us"]),
        decimals: 0,
        better: Better::Lower,
        aims: &[
            at_most("heptap-on", 1.0),
            at_most("heptap-tcp", 1.0),
            at_most(OFF, 1.0),
        ],
    },
    Row {
        label: "SIP at 5,000 msg/s: rate achieved, msg/s",
        test: "rr_fixed",
        value: |v| num(v, &["rate_achieved"]),
        decimals: 0,
        better: Better::Higher,
        aims: &[],
    },
    Row {
        label: "SIP max rate (50 conns, closed loop), msg/s",
        test: "rr_max",
        value: |v| num(v, &["rate"]),
        decimals: 0,
        better: Better::Higher,
        aims: &[
            at_least(OFF, 1.0),
            at_least("heptap-tcp", 0.95),
            at_least("heptap-on", 0.85),
        ],
    },
    Row {
        label: "SIP at max rate: p99 latency, µs",
        test: "rr_max",
        value: |v| num(v, &["latency", "p99_us"]),
        decimals: 0,
        better: Better::Lower,
        aims: &[],
    },
    Row {
        label: "connections/s (connect, 1 request, close)",
        test: "connrate",
        value: |v| num(v, &["rate"]),
        decimals: 0,
        better: Better::Higher,
        aims: &[at_least(OFF, 1.0), at_least("heptap-tcp", 0.95)],
    },
    Row {
        label: "connections/s: failed connections",
        test: "connrate",
        value: |v| num(v, &["errors"]),
        decimals: 0,
        better: Better::Lower,
        aims: &[],
    },
    Row {
        label: "memory per idle connection, KiB",
        test: "idle",
        value: |v| num(v, &["bytes_per_conn"]).map(|b| b / 1024.0),
        decimals: 1,
        better: Better::Lower,
        aims: &MEMORY_AIMS,
    },
    Row {
        label: "idle: connections that failed to open",
        test: "idle",
        value: |v| num(v, &["errors"]),
        decimals: 0,
        better: Better::Lower,
        aims: &[],
    },
    Row {
        label: "relay CPU per message at 5,000 msg/s, µs",
        test: "rr_fixed",
        value: |v| cpu_us_per(v, "relay_cpu_s", &["received"]),
        decimals: 1,
        better: Better::Lower,
        aims: &[at_most(OFF, 1.0)],
    },
    CPU_PER_ROUND_TRIP,
    Row {
        label: "relay CPU per connection, µs",
        test: "connrate",
        value: |v| cpu_us_per(v, "relay_cpu_s", &["completed"]),
        decimals: 1,
        better: Better::Lower,
        aims: &[at_most(OFF, 1.0)],
    },
    Row {
        label: "relay CPU per MB of bulk, µs",
        test: "bulk",
        value: |v| cpu_us_per_mb(v, "relay_cpu_s"),
        decimals: 0,
        better: Better::Lower,
        aims: &[],
    },
    Row {
        label: "relay CPU use at max rate, % of one core",
        test: "rr_max",
        value: busy_percent,
        decimals: 0,
        better: Better::Lower,
        aims: &[],
    },
    Row {
        label: "relay CPU use at connections/s, % of one core",
        test: "connrate",
        value: busy_percent,
        decimals: 0,
        better: Better::Lower,
        aims: &[],
    },
    Row {
        label: "HEP sink CPU per message at 5,000 msg/s, µs (not in the relay's)",
        test: "rr_fixed",
        value: |v| cpu_us_per(v, "sink_cpu_s", &["received"]),
        decimals: 1,
        better: Better::Lower,
        aims: &[],
    },
    Row {
        label: "HEP sink CPU per message at max rate, µs (not in the relay's)",
        test: "rr_max",
        value: |v| cpu_us_per(v, "sink_cpu_s", &["completed"]),
        decimals: 1,
        better: Better::Lower,
        aims: &[],
    },
    Row {
        label: "HEP sink CPU per connection, µs (not in the relay's)",
        test: "connrate",
        value: |v| cpu_us_per(v, "sink_cpu_s", &["completed"]),
        decimals: 1,
        better: Better::Lower,
        aims: &[],
    },
    Row {
        label: "HEP packets received at 5,000 msg/s (2 per round trip expected)",
        test: "rr_fixed",
        value: |v| num(v, &["probe", "hep_packets"]),
        decimals: 0,
        better: Better::Higher,
        aims: &[],
    },
    HEP_PER_ROUND_TRIP,
];

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
    match (combine, row.better) {
        (Combine::Median, _) => median(xs),
        (Combine::Best, Better::Higher) => xs.into_iter().reduce(f64::max),
        (Combine::Best, Better::Lower) => xs.into_iter().reduce(f64::min),
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
        "Figures are medians over {} round(s). Ratios are each relay's figure over HAProxy's: \
         heptap with tracing on sending HEP over UDP (`on UDP`) and over TCP (`on TCP`), heptap \
         with tracing off (`off`), and nginx. Relay CPU is the relay's processes only; the HEP \
         sink's CPU has its own rows. The aims (issue 21) hold heptap to HAProxy: tracing off \
         at least 1.0 × its rates and at most its CPU per message and per connection; tracing \
         on at least 0.95 × its maximum rate and connections/s with HEP over TCP, 0.85 × its \
         maximum rate with HEP over UDP; every heptap at most 1.0 × its p99 at 5,000 msg/s \
         and 1.5 × its memory per idle plain TCP connection.\n\n",
        rounds.len()
    );
    out.push_str(&table_set(records, Combine::Median));
    if rounds.len() > 1 {
        out.push_str(
            "Best round of each figure that has an aim (highest rate, lowest latency, memory \
             or CPU): noise from other jobs only ever makes a figure worse, so this is the \
             least disturbed view.\n\n",
        );
        out.push_str(&table_set(records, Combine::Best));
    }
    if let Some(note) = udp_floor_note(records) {
        out.push_str(&note);
    }
    out
}

/// How far above the UDP floor tracing's added CPU per HEP packet over UDP may be (issue 21).
const FLOOR_MARGIN_US: f64 = 0.3;

/// The floor under HEP over UDP (`heptap-bench udp-floor`) beside what tracing adds to heptap's
/// CPU per HEP packet at the maximum rate, per transport and HEP transport, with the aim that
/// over UDP it be within [`FLOOR_MARGIN_US`] of the floor.
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
    let mut aims = Vec::new();
    for proto in ["tcp", "tls"] {
        let median_of = |row: &Row, t: &str| figure(records, row, proto, t, Combine::Median);
        let Some(off) = median_of(&CPU_PER_ROUND_TRIP, OFF) else {
            continue;
        };
        let mut each = Vec::new();
        for &(t, via) in &TRACING {
            let Some(on) = median_of(&CPU_PER_ROUND_TRIP, t) else {
                continue;
            };
            // Two traced SIP messages (request and reply), so two HEP packets, per round trip,
            // unless the sink counted otherwise.
            let packets = median_of(&HEP_PER_ROUND_TRIP, t)
                .filter(|p| *p > 0.0)
                .unwrap_or(2.0);
            let per_packet = (on - off) / packets;
            each.push(format!("{per_packet:.2} µs with HEP over {via}"));
            if via == "UDP" {
                let over = per_packet - floor;
                aims.push(format!(
                    "{}: {per_packet:.2} µs, {over:+.2} µs from the floor: {}",
                    proto.to_uppercase(),
                    verdict(over <= FLOOR_MARGIN_US)
                ));
            }
        }
        if !each.is_empty() {
            added.push(format!("{}: {}", proto.to_uppercase(), each.join(", ")));
        }
    }
    if !added.is_empty() {
        let _ = write!(
            out,
            " What tracing added to heptap's CPU per HEP packet at the maximum rate (tracing on \
             minus tracing off, per round trip, over the HEP packets the sink counted per round \
             trip; everything included: framing, encoding, queueing, sending): {}.",
            added.join("; ")
        );
    }
    if !aims.is_empty() {
        let _ = write!(
            out,
            " Aim: with HEP over UDP, at most {FLOOR_MARGIN_US} µs above the floor per HEP \
             packet. {}.",
            aims.join("; ")
        );
    }
    out.push_str("\n\n");
    Some(out)
}

/// What an aim says of a row's ratios in one transport's table, `None` when it does not apply
/// or a figure is missing.
fn judge(aim: &Aim, proto: &str, ratio_of: impl Fn(&str) -> Option<f64>) -> Option<String> {
    if aim.proto.is_some_and(|p| p != proto) {
        return None;
    }
    let name = VS_HAPROXY
        .iter()
        .find(|(t, _)| *t == aim.target)
        .map_or(aim.target, |(_, n)| n);
    let r = ratio_of(aim.target)?;
    Some(match aim.bound {
        Bound::AtLeast(a) => format!("{name} ≥ {a:.2}: {}", verdict(r >= a)),
        Bound::AtMost(a) => format!("{name} ≤ {a:.2}: {}", verdict(r <= a)),
    })
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
        for (_, name) in VS_HAPROXY {
            let _ = write!(head, " {name}/HAProxy |");
        }
        head.push_str(" aim (ratio to HAProxy) |");
        let _ = writeln!(out, "{head}");
        let columns = TARGETS.len() + VS_HAPROXY.len();
        let _ = writeln!(out, "|---|{}---|", "---:|".repeat(columns));
        for row in ROWS {
            if combine == Combine::Best && row.aims.is_empty() {
                continue;
            }
            let figs: Vec<Option<f64>> = TARGETS
                .iter()
                .map(|(t, _)| figure(records, row, proto, t, combine))
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
            let ratio_of = |target: &str| ratio(of(target), of(HAPROXY));
            let aims: Vec<String> = row
                .aims
                .iter()
                .filter_map(|aim| judge(aim, proto, ratio_of))
                .collect();
            let mut line = format!("| {} |", row.label);
            for f in &figs {
                let _ = write!(line, " {} |", fmt(*f, row.decimals));
            }
            for (t, _) in VS_HAPROXY {
                let _ = write!(line, " {} |", fmt(ratio_of(t), 2));
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

    fn rr_max(target: &str, round: u32, rate: f64) -> Record {
        // CPU per message in µs is rate / 100; the sink's is 3 µs for the tracing targets.
        let relay = (target != "direct").then_some(rate * 1e-5);
        let sink = matches!(target, "heptap-on" | "heptap-tcp").then_some(0.003);
        Record {
            test: "rr_max".into(),
            proto: "tcp".into(),
            target: target.into(),
            round,
            result: json!({"rate": rate, "completed": 1000, "secs": 1.0,
                           "latency": {"p99_us": 100.0},
                           "probe": {"relay_cpu_s": relay,
                                     "sink_cpu_s": sink,
                                     "hep_packets": null}}),
        }
    }

    #[test]
    fn a_table_sets_every_relay_against_haproxy_and_says_whether_each_aim_is_met() {
        let records = vec![
            rr_max("heptap-on", 1, 800.0),
            rr_max("heptap-on", 2, 900.0),
            rr_max("heptap-on", 3, 1000.0),
            rr_max("heptap-tcp", 1, 900.0),
            rr_max("heptap-off", 1, 1000.0),
            rr_max("haproxy", 1, 1000.0),
            rr_max("nginx", 1, 1100.0),
            rr_max("direct", 1, 2000.0),
        ];
        let t = tables(&records);
        let medians = &t[t.find("#### TCP, medians").unwrap()..t.find("#### TCP, best").unwrap()];
        let best = &t[t.find("#### TCP, best").unwrap()..];
        for line in [
            "| measurement | heptap, tracing on, HEP/UDP | heptap, tracing on, HEP/TCP | heptap, tracing off | HAProxy | nginx | direct | on UDP/HAProxy | on TCP/HAProxy | off/HAProxy | nginx/HAProxy | aim (ratio to HAProxy) |",
            "| SIP max rate (50 conns, closed loop), msg/s | 900 | 900 | 1000 | 1000 | 1100 | 2000 | 0.90 | 0.90 | 1.00 | 1.10 | off ≥ 1.00: met; on TCP ≥ 0.95: **missed**; on UDP ≥ 0.85: met |",
            "| relay CPU per message at max rate, µs | 9.0 | 9.0 | 10.0 | 10.0 | 11.0 | n/a | 0.90 | 0.90 | 1.00 | 1.10 | off ≤ 1.00: met |",
            "| relay CPU use at max rate, % of one core | 1 | 1 | 1 | 1 | 1 | n/a | 0.90 | 0.90 | 1.00 | 1.10 |  |",
            "| HEP sink CPU per message at max rate, µs (not in the relay's) | 3.0 | 3.0 | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |  |",
        ] {
            assert!(medians.contains(line), "{line}\n{t}");
        }
        // The best round: the highest rate, the lowest CPU; rows without an aim left out.
        assert!(
            best.contains("| SIP max rate (50 conns, closed loop), msg/s | 1000 | 900 | 1000 | 1000 | 1100 | 2000 | 1.00 | 0.90 | 1.00 | 1.10 |"),
            "{t}"
        );
        assert!(
            best.contains("| relay CPU per message at max rate, µs | 8.0 | 9.0 | 10.0 |"),
            "{t}"
        );
        assert!(!best.contains("HEP sink"), "{t}");
    }

    #[test]
    fn the_memory_aim_is_for_plain_tcp_connections_only() {
        let idle = |target: &str, proto: &str, kib: f64| Record {
            test: "idle".into(),
            proto: proto.into(),
            target: target.into(),
            round: 1,
            result: json!({"bytes_per_conn": kib * 1024.0, "errors": 0,
                           "probe": {"relay_cpu_s": null, "sink_cpu_s": null, "hep_packets": null}}),
        };
        let mut records = Vec::new();
        for proto in ["tcp", "tls"] {
            records.extend([
                idle("heptap-on", proto, 6.0),
                idle("heptap-tcp", proto, 4.0),
                idle("heptap-off", proto, 4.0),
                idle("haproxy", proto, 4.0),
                idle("nginx", proto, 2.0),
            ]);
        }
        let t = tables(&records);
        assert!(
            t.contains("| memory per idle connection, KiB | 6.0 | 4.0 | 4.0 | 4.0 | 2.0 | n/a | 1.50 | 1.00 | 1.00 | 0.50 | on UDP ≤ 1.50: met; on TCP ≤ 1.50: met; off ≤ 1.50: met |"),
            "{t}"
        );
        let tls = &t[t.find("#### TLS").unwrap()..];
        assert!(
            tls.contains("| memory per idle connection, KiB | 6.0 | 4.0 | 4.0 | 4.0 | 2.0 | n/a | 1.50 | 1.00 | 1.00 | 0.50 |  |"),
            "{t}"
        );
    }

    #[test]
    fn the_udp_floor_is_set_beside_what_tracing_adds_per_hep_packet() {
        let rr = |target: &str, proto: &str, cpu: f64, hep: Option<u64>| Record {
            test: "rr_max".into(),
            proto: proto.into(),
            target: target.into(),
            round: 1,
            result: json!({"rate": 1000.0, "completed": 1000,
                           "probe": {"relay_cpu_s": cpu, "sink_cpu_s": null, "hep_packets": hep}}),
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
            // No packet count: two per round trip.
            rr("heptap-on", "tcp", 0.020, None),
            rr("heptap-tcp", "tcp", 0.014, None),
            rr("heptap-off", "tcp", 0.013, None),
            // Four HEP packets per round trip counted.
            rr("heptap-on", "tls", 0.0244, Some(4000)),
            rr("heptap-off", "tls", 0.013, None),
            floor(1, 2.5),
            floor(2, 2.7),
            floor(3, 9.0),
        ];
        let t = tables(&records);
        assert!(t.contains("paid **2.70 µs** of CPU per datagram (median of 3 round(s); the sink counted 300 of the 300 sent)"), "{t}");
        assert!(
            t.contains("TCP: 3.50 µs with HEP over UDP, 0.50 µs with HEP over TCP; TLS: 2.85 µs with HEP over UDP."),
            "{t}"
        );
        assert!(
            t.contains("Aim: with HEP over UDP, at most 0.3 µs above the floor per HEP packet. TCP: 3.50 µs, +0.80 µs from the floor: **missed**; TLS: 2.85 µs, +0.15 µs from the floor: met."),
            "{t}"
        );
        assert!(!t.contains("#### UDP"), "{t}");
    }
}
