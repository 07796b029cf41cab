//! Any request reaching the MI's command handling, as JSON-RPC and as 2.x text: nothing panics
//! and every request gets a well-formed reply (JSON-RPC 2.0 with exactly one of `result` and
//! `error`, or a 2.x code line), with MI tracing on so the trace messages are built too.
//!
//! Input layout: byte 0 picks the mode, byte 1 a command (from the MI's own `which` list):
//! - mode 0: the rest is a whole JSON-RPC body (parsing, ids, members);
//! - mode 1: the rest is the `params` of a call to that command, as JSON when it parses and as
//!   a string otherwise (recipe matching and each handler's parameter checks);
//! - mode 2: the rest is the 2.x parameter lines of that command, one per line, `name::value`
//!   and quoted forms included.
#![no_main]

use std::sync::{Arc, OnceLock};

use heptap_hep::{NetProto, TraceMessage};
use heptap_mi::{
    ConnLeg, ConnState, Control, DestinationInfo, LogLevel, Mi, MiSettings, Origin, ProcessInfo,
    ReloadRefused, ReloadReport, Statistic, TcpConnInfo, TcpConnList, TextParam, TraceIdInfo,
    UnknownTraceId,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// A `Control` with a little of everything and no state worth keeping.
struct Stub;

impl Control for Stub {
    fn sip_trace_on(&self) -> bool {
        true
    }
    fn set_sip_trace_on(&self, _on: bool) {}
    fn trace_ids(&self) -> Vec<TraceIdInfo> {
        vec![TraceIdInfo {
            name: "tid".into(),
            on: true,
            destinations: vec![DestinationInfo {
                kind: "HEP".into(),
                uri: "10.0.0.5:9060".into(),
            }],
        }]
    }
    fn set_trace_id_on(&self, name: &str, _on: bool) -> Result<(), UnknownTraceId> {
        if name == "tid" {
            Ok(())
        } else {
            Err(UnknownTraceId(name.into()))
        }
    }
    fn net_trace_on(&self, _proto: NetProto) -> bool {
        true
    }
    fn set_net_trace_on(&self, _proto: NetProto, _on: bool) {}
    fn statistics(&self) -> Vec<Statistic> {
        vec![
            Statistic {
                group: "core".into(),
                name: "events".into(),
                value: 7,
                gauge: false,
            },
            Statistic {
                group: "hep_homer".into(),
                name: "queue_depth".into(),
                value: 3,
                gauge: true,
            },
        ]
    }
    fn reset_statistic(&self, _group: &str, _name: &str) {}
    fn hep_ids(&self) -> Value {
        json!({"homer": {"connected": true}})
    }
    fn reload(&self) -> Result<ReloadReport, ReloadRefused> {
        Err(ReloadRefused {
            errors: vec!["hep.ids.homer: bad".into()],
        })
    }
    fn tls_reload(&self) -> Result<ReloadReport, ReloadRefused> {
        let mut report = ReloadReport::default();
        report.applied("listener edge", "certificate /CN=new");
        report.not_applied("hep.ids.homer", "ca_file /x: unreadable");
        Ok(report)
    }
    fn log_level(&self) -> LogLevel {
        LogLevel::Info
    }
    fn set_log_level(&self, _level: LogLevel) -> Result<(), String> {
        Ok(())
    }
    fn processes(&self) -> Vec<ProcessInfo> {
        vec![ProcessInfo {
            id: 0,
            pid: 1,
            kind: "heptap".into(),
        }]
    }
    fn mi_tracing_enabled(&self) -> bool {
        true
    }
    fn trace_mi(&self, _msg: TraceMessage) {}
    fn tcp_connections(&self, proto: Option<NetProto>, max: usize) -> TcpConnList {
        let since = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_765_000_000);
        let leg = |conn_id, remote: &str| ConnLeg {
            conn_id,
            proto: NetProto::Tcp,
            remote: remote.parse().unwrap(),
            local: "127.0.0.1:5062".parse().unwrap(),
        };
        let conn = TcpConnInfo {
            listener: "edge".into(),
            state: ConnState::Relaying,
            client: leg(7, "10.0.0.9:40000"),
            upstream: Some(leg(8, "127.0.0.1:5060")),
            expires: None,
            since,
            bytes_in: 10,
            bytes_out: 20,
        };
        let wanted = proto.is_none_or(|p| p == NetProto::Tcp);
        TcpConnList {
            listed: [conn].into_iter().filter(|_| wanted).take(max).collect(),
            total: usize::from(wanted),
        }
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    mi: Mi,
    commands: Vec<String>,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mi = Mi::new(MiSettings::default(), Arc::new(Stub)).unwrap();
        let which = rt
            .block_on(mi.handle_jsonrpc(
                br#"{"jsonrpc":"2.0","id":1,"method":"which"}"#,
                &Origin::fifo(),
            ))
            .unwrap();
        let which: Value = serde_json::from_str(&which).unwrap();
        let commands = which["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        Harness { rt, mi, commands }
    })
}

/// A JSON-RPC 2.0 reply: an object with `"jsonrpc": "2.0"`, an `id`, and one of `result` and
/// `error` (an error with an integer code and a message).
fn check_jsonrpc(reply: &str) {
    let v: Value = serde_json::from_str(reply).unwrap_or_else(|e| panic!("{e}: {reply}"));
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {reply}"));
    assert_eq!(o.get("jsonrpc"), Some(&json!("2.0")), "{reply}");
    assert!(o.contains_key("id"), "{reply}");
    match (o.get("result"), o.get("error")) {
        (Some(_), None) => {}
        (None, Some(e)) => {
            assert!(e["code"].is_i64(), "{reply}");
            assert!(e["message"].is_string(), "{reply}");
        }
        _ => panic!("not exactly one of result and error: {reply}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let h = harness();
    let (mode, pick, rest) = (data[0] % 3, data[1], &data[2..]);
    let command = &h.commands[usize::from(pick) % h.commands.len()];
    match mode {
        0 => {
            if let Some(reply) = h.rt.block_on(h.mi.handle_jsonrpc(rest, &Origin::fifo())) {
                check_jsonrpc(&reply);
            }
        }
        1 => {
            let text = String::from_utf8_lossy(rest);
            let params: Value =
                serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.into_owned()));
            let body = json!({"jsonrpc": "2.0", "id": 7, "method": command, "params": params});
            let reply =
                h.rt.block_on(h.mi.handle_jsonrpc(body.to_string().as_bytes(), &Origin::fifo()))
                    .expect("a call with an id is answered");
            check_jsonrpc(&reply);
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let params: Vec<TextParam> = text
                .lines()
                .map(|line| match line.split_once("::") {
                    Some((name, value)) => TextParam {
                        name: Some(name.to_owned()),
                        value: value.to_owned(),
                    },
                    None => TextParam {
                        name: None,
                        value: line.to_owned(),
                    },
                })
                .collect();
            let reply = h.rt.block_on(h.mi.handle_text(command, &params));
            let out = reply.to_text();
            assert!((100..600).contains(&reply.code), "{out}");
            assert!(out.starts_with(&format!("{} ", reply.code)), "{out}");
        }
    }
});
