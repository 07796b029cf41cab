//! Every command, through the JSON-RPC core without a transport (`Mi::handle_jsonrpc`):
//! requests and replies as bytes, the Control state before and after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::TestControl;
use heptap_hep::NetProto;
use heptap_mi::{LogLevel, Mi, MiSettings, Origin, ReloadReport};
use serde_json::{Value, json};

fn mi_with(control: TestControl, settings: MiSettings) -> (Mi, Arc<TestControl>) {
    let control = Arc::new(control);
    (Mi::new(settings, control.clone()).unwrap(), control)
}

fn mi() -> (Mi, Arc<TestControl>) {
    mi_with(TestControl::default(), MiSettings::default())
}

async fn call(mi: &Mi, body: &str) -> String {
    mi.handle_jsonrpc(body.as_bytes(), &Origin::fifo())
        .await
        .unwrap()
}

/// The `result` (or `error`) of a call with the given method and params, as JSON.
async fn rpc(mi: &Mi, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let reply: Value = serde_json::from_str(&call(mi, &body).await).unwrap();
    if let Some(e) = reply.get("error") {
        json!({"error": e})
    } else {
        reply["result"].clone()
    }
}

#[tokio::test]
async fn sip_trace_without_params_lists_the_trace_ids() {
    let (mi, _) = mi();
    assert_eq!(
        call(&mi, r#"{"jsonrpc":"2.0","id":"1","method":"sip_trace"}"#).await,
        r#"{"jsonrpc":"2.0","result":{"global":"on","trace destinations":[{"name":"tid","type":"HEP","uri":"1.2.3.4:6053","state":"on"},{"name":"tid2","type":"HEP","uri":"10.0.0.6:9061","state":"on"},{"name":"tid2","type":"HEP","uri":"10.0.0.7:9060","state":"on"}]},"id":"1"}"#
    );
}

#[tokio::test]
async fn sip_trace_switches_global_and_per_id_with_2x_semantics() {
    let (mi, c) = mi();
    assert_eq!(rpc(&mi, "sip_trace", json!(["off"])).await, json!("OK"));
    assert!(!c.global.load(Ordering::SeqCst));
    assert_eq!(rpc(&mi, "sip_trace", json!(["On"])).await, json!("OK"));
    assert!(c.global.load(Ordering::SeqCst));
    assert_eq!(
        rpc(&mi, "sip_trace", json!(["tid2", "off"])).await,
        json!("OK")
    );
    assert!(!c.trace_id_on("tid2") && c.trace_id_on("tid"));
    assert_eq!(
        rpc(&mi, "sip_trace", json!(["tid2"])).await,
        json!({"trace destinations": [
            {"name": "tid2", "type": "HEP", "uri": "10.0.0.6:9061", "state": "off"},
            {"name": "tid2", "type": "HEP", "uri": "10.0.0.7:9060", "state": "off"}]})
    );
    assert_eq!(
        rpc(&mi, "sip_trace", json!(["nope"])).await,
        json!({"error": {"code": 400, "message": "Bad trace id value"}})
    );
    assert_eq!(
        rpc(&mi, "sip_trace", json!(["nope", "on"])).await,
        json!({"error": {"code": 400, "message": "Bad parameter value"}})
    );
    assert_eq!(
        rpc(&mi, "sip_trace", json!(["tid", "maybe"])).await,
        json!({"error": {"code": 500, "message": "Bad parameter value", "data": "trace mode should be 'on' or 'off'"}})
    );
    assert!(c.trace_id_on("tid"));
}

#[tokio::test]
async fn trace_takes_named_params_like_3x() {
    let (mi, c) = mi();
    assert_eq!(rpc(&mi, "trace", json!({"mode": "OFF"})).await, json!("OK"));
    assert!(!c.global.load(Ordering::SeqCst));
    assert_eq!(
        rpc(&mi, "tracer:trace", json!({"id": "tid", "mode": "off"})).await,
        json!("OK")
    );
    assert!(!c.trace_id_on("tid"));
    assert_eq!(
        rpc(&mi, "trace", json!({"id": "tid"})).await,
        json!({"trace destinations": [{"name": "tid", "type": "HEP", "uri": "1.2.3.4:6053", "state": "off"}]})
    );
    assert_eq!(rpc(&mi, "trace", json!({})).await["global"], json!("off"));
    assert_eq!(
        rpc(&mi, "trace", json!({"id": "zz"})).await,
        json!({"error": {"code": 400, "message": "Bad trace id value"}})
    );
    assert_eq!(
        rpc(&mi, "trace", json!({"mode": "onx"})).await,
        json!({"error": {"code": 500, "message": "Bad parameter value", "data": "trace mode should be 'on' or 'off'"}})
    );
}

#[tokio::test]
async fn transport_trace_commands_and_their_4x_aliases() {
    let (mi, c) = mi();
    for (cmd, alias, proto) in [
        ("tcp_trace", "tcp:trace", NetProto::Tcp),
        ("tls_trace", "tls:trace", NetProto::Tls),
        ("ws_trace", "ws:trace", NetProto::Ws),
        ("wss_trace", "wss:trace", NetProto::Wss),
    ] {
        let label = format!("{} tracing", proto.label());
        assert_eq!(
            rpc(&mi, cmd, json!([])).await,
            json!({ label.clone(): "on" })
        );
        assert_eq!(
            rpc(&mi, alias, json!({"trace_mode": "OFFline"})).await,
            json!("OK")
        );
        assert!(!c.net_on(proto));
        assert_eq!(rpc(&mi, cmd, json!([])).await, json!({ label: "off" }));
        assert_eq!(rpc(&mi, cmd, json!(["on"])).await, json!("OK"));
        assert!(c.net_on(proto));
    }
}

#[tokio::test]
async fn which_lists_commands_and_recipes() {
    let (mi, _) = mi();
    let names = rpc(&mi, "which", json!({})).await;
    for n in [
        "which",
        "ps",
        "version",
        "uptime",
        "get_statistics",
        "reset_statistics",
        "list_statistics",
        "reload",
        "tls_reload",
        "hep_ids",
        "log_level",
        "sip_trace",
        "trace",
        "tcp_trace",
        "tls_trace",
        "ws_trace",
        "wss_trace",
        "tcp:trace",
        "tracer:trace",
        "statistics:get",
        // OpenSIPS core commands heptap answers meaningfully.
        "list_tcp_conns",
        "reset_all_statistics",
        "help",
        "tcp:list",
        "statistics:reset_all",
        "core:help",
    ] {
        assert!(names.as_array().unwrap().contains(&json!(n)), "{n}");
    }
    // And no OpenSIPS command heptap could not answer meaningfully.
    for n in [
        "kill",
        "pwd",
        "arg",
        "mem_pkg_dump",
        "reload_routes",
        "log_level_filter",
    ] {
        assert!(!names.as_array().unwrap().contains(&json!(n)), "{n}");
    }
    assert_eq!(
        rpc(&mi, "which", json!({"command": "tcp_trace"})).await,
        json!([[], ["trace_mode"]])
    );
    assert_eq!(
        rpc(&mi, "which", json!(["trace"])).await,
        json!([[], ["id"], ["mode"], ["id", "mode"]])
    );
    assert_eq!(
        rpc(&mi, "which", json!({"command": "dlg_list"})).await,
        json!({"error": {"code": 404, "message": "unknown MI command"}})
    );
}

#[tokio::test]
async fn ps_version_uptime() {
    let (mi, _) = mi();
    let pid = std::process::id();
    assert_eq!(
        rpc(&mi, "ps", json!({})).await,
        json!({"Processes": [{"ID": 0, "PID": pid, "Type": "main"}, {"ID": 1, "PID": pid, "Type": "MI FIFO"}]})
    );
    let server = rpc(&mi, "version", json!({})).await["Server"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        server,
        format!(
            "heptap {} ({}/{})",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH,
            std::env::consts::OS
        )
    );
    let up = rpc(&mi, "uptime", json!({})).await;
    let keys: Vec<&String> = up.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["Now", "Up since", "Up time"]);
    assert!(up["Up time"].as_str().unwrap().ends_with(" [sec]"));
    assert_eq!(up["Now"].as_str().unwrap().len(), 24, "{up}");
}

#[tokio::test]
async fn get_statistics_all_groups_and_names() {
    let (mi, _) = mi();
    assert_eq!(
        rpc(&mi, "get_statistics", json!([["all"]])).await,
        json!({"core:events": 12, "core:connections": 3, "homer:sent": 40, "homer:dropped_queue_full": 2})
    );
    assert_eq!(
        rpc(
            &mi,
            "statistics:get",
            json!({"statistics": ["homer:", "events"]})
        )
        .await,
        json!({"core:events": 12, "homer:sent": 40, "homer:dropped_queue_full": 2})
    );
    assert_eq!(
        rpc(&mi, "get_statistics", json!([["nope:"]])).await,
        json!({"error": {"code": 404, "message": "Statistics Not Found"}})
    );
    assert_eq!(
        rpc(&mi, "get_statistics", json!(["all"])).await,
        json!({"error": {"code": -32602, "message": "Invalid params", "data": "Bad type for parameter 'statistics'"}})
    );
    assert_eq!(
        rpc(&mi, "list_statistics", json!({})).await,
        json!({"core:events": "incremental", "core:connections": "non-incremental", "homer:sent": "incremental", "homer:dropped_queue_full": "incremental"})
    );
}

#[tokio::test]
async fn reset_statistics_zeroes_counters_not_gauges() {
    let (mi, c) = mi();
    assert_eq!(
        rpc(&mi, "reset_statistics", json!([["core:"]])).await,
        json!("OK")
    );
    assert_eq!(
        (c.stat("core", "events"), c.stat("core", "connections")),
        (0, 3)
    );
    assert_eq!(c.stat("homer", "sent"), 40);
}

#[tokio::test]
async fn reload_reports_every_error_and_keeps_going() {
    let (mi, c) = mi();
    assert_eq!(rpc(&mi, "reload", json!({})).await, json!("OK"));
    *c.reload_result.lock().unwrap() = Err(vec![
        "tracer.trace_id[0]: unknown hep_id \"nope\"".into(),
        "listener[1].listen: address in use".into(),
    ]);
    assert_eq!(
        rpc(&mi, "reload", json!({})).await,
        json!({"error": {"code": 500, "message": "Reload failed",
            "data": "tracer.trace_id[0]: unknown hep_id \"nope\"; listener[1].listen: address in use"}})
    );
    assert_eq!(c.reloads.load(Ordering::SeqCst), 2);
}

/// A reload that applied part of the file is not "OK": every item the agent reported is in the
/// error's data, what was not applied (and why) first, so a client (opensips-cli prints
/// `500: Reload incomplete (<data>)`) and a script testing for "OK" both see it.
#[tokio::test]
async fn a_reload_that_left_something_out_is_an_error_listing_every_item() {
    let (mi, c) = mi();
    let mut report = ReloadReport::default();
    report.applied("listener edge2", "listening on 127.0.0.1:5070");
    report.not_applied(
        "service.workers",
        "4 asked, 2 running; it takes effect at the next restart",
    );
    report.not_applied(
        "listener edge3",
        "cannot listen on 127.0.0.1:5071: Address in use",
    );
    *c.reload_result.lock().unwrap() = Ok(report);
    assert_eq!(
        rpc(&mi, "reload", json!([])).await,
        json!({"error": {"code": 500, "message": "Reload incomplete",
            "data": "not applied: service.workers: 4 asked, 2 running; it takes effect at the next restart; \
                     not applied: listener edge3: cannot listen on 127.0.0.1:5071: Address in use; \
                     applied: listener edge2: listening on 127.0.0.1:5070"}})
    );
    // Everything applied: OpenSIPS's plain "OK", whatever was applied.
    let mut report = ReloadReport::default();
    report.applied("listener edge2", "listening on 127.0.0.1:5070");
    *c.reload_result.lock().unwrap() = Ok(report);
    assert_eq!(rpc(&mi, "reload", json!([])).await, json!("OK"));
    // The 2.x framing says the same in its status line.
    *c.reload_result.lock().unwrap() = Ok({
        let mut r = ReloadReport::default();
        r.not_applied("mi.fifo_name", "it takes effect at the next restart");
        r
    });
    let reply = mi.handle_text("reload", &[]).await;
    assert_eq!(
        (reply.code, reply.reason.as_str()),
        (
            500,
            "Reload incomplete: not applied: mi.fifo_name: it takes effect at the next restart"
        )
    );
}

#[tokio::test]
async fn tls_reload_answers_ok_or_lists_what_it_could_not_reload() {
    let (mi, c) = mi();
    assert_eq!(rpc(&mi, "tls_reload", json!([])).await, json!("OK"));
    assert_eq!(c.tls_reloads.load(Ordering::SeqCst), 1);
    assert_eq!(
        c.reloads.load(Ordering::SeqCst),
        0,
        "tls_reload is not reload"
    );
    let mut report = ReloadReport::default();
    report.applied("listener edge", "certificate /CN=sip.example.com");
    report.not_applied(
        "listener wss",
        "listener wss: tls.cert_file /etc/heptap/wss.pem: No such file or directory",
    );
    *c.tls_reload_result.lock().unwrap() = report;
    assert_eq!(
        rpc(&mi, "tls_reload", json!({})).await,
        json!({"error": {"code": 500, "message": "Reload incomplete",
            "data": "not applied: listener wss: listener wss: tls.cert_file /etc/heptap/wss.pem: No such file or directory; \
                     applied: listener edge: certificate /CN=sip.example.com"}})
    );
    assert_eq!(
        rpc(&mi, "tls_reload", json!(["now"])).await["error"]["code"],
        json!(-32602),
        "no parameters, as OpenSIPS"
    );
    assert_eq!(
        rpc(&mi, "which", json!({"command": "tls_reload"})).await,
        json!([[]])
    );
}

#[tokio::test]
async fn hep_ids_and_log_level() {
    let (mi, c) = mi();
    assert_eq!(
        rpc(&mi, "hep_ids", json!({})).await,
        json!({"homer": {"state": "connected", "sent": 40}})
    );
    let pid = std::process::id();
    assert_eq!(
        rpc(&mi, "log_level", json!({})).await,
        json!({"Processes": [{"PID": pid, "Log level": 3}]})
    );
    assert_eq!(
        rpc(&mi, "log_level", json!([4])).await,
        json!({"New global log level": 4})
    );
    assert_eq!(*c.level.lock().unwrap(), LogLevel::Debug);
    assert_eq!(
        rpc(&mi, "log_level", json!(["warn"])).await,
        json!({"New global log level": 1})
    );
    assert_eq!(
        rpc(&mi, "log_level", json!(["loud"])).await,
        json!({"error": {"code": -32602, "message": "Invalid params", "data": "Bad log level value"}})
    );
}

#[tokio::test]
async fn members_are_case_insensitive_and_notifications_get_nothing() {
    let (mi, c) = mi();
    assert_eq!(
        call(
            &mi,
            r#"{"JsonRpc":"2.0","ID":3,"METHOD":"tcp_trace","Params":["off"]}"#
        )
        .await,
        r#"{"jsonrpc":"2.0","result":"OK","id":3}"#
    );
    assert!(!c.net_on(NetProto::Tcp));
    let none = mi
        .handle_jsonrpc(br#"{"jsonrpc":"2.0","method":"nope"}"#, &Origin::fifo())
        .await;
    assert_eq!(none, None);
    // ... except when the request itself is broken.
    assert_eq!(
        mi.handle_jsonrpc(br#"{"jsonrpc":"2.0","method":7}"#, &Origin::fifo())
            .await
            .as_deref(),
        Some(r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#)
    );
}

#[tokio::test]
async fn pretty_printing_is_cjson_style() {
    let settings = MiSettings {
        pretty_printing: true,
        ..MiSettings::default()
    };
    let (mi, _) = mi_with(TestControl::default(), settings);
    assert_eq!(
        call(&mi, r#"{"jsonrpc":"2.0","id":"1","method":"tcp_trace"}"#).await,
        "{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t{\n\t\t\"TCP tracing\":\t\"on\"\n\t},\n\t\"id\":\t\"1\"\n}"
    );
}

#[tokio::test]
async fn ps_with_a_named_parameter_is_too_few_or_too_many_as_opensips() {
    let (mi, _) = mi();
    assert_eq!(
        rpc(&mi, "ps", json!({"x": 1})).await,
        json!({"error": {"code": -32602, "message": "Invalid params", "data": "Too few or too many parameters"}})
    );
}

#[tokio::test]
async fn reset_all_statistics_zeroes_every_counter_not_gauges() {
    let (mi, c) = mi();
    assert_eq!(
        rpc(&mi, "reset_all_statistics", json!({})).await,
        json!("OK")
    );
    assert_eq!(
        (
            c.stat("core", "events"),
            c.stat("homer", "sent"),
            c.stat("core", "connections")
        ),
        (0, 0, 3)
    );
}

#[tokio::test]
async fn help_answers_with_opensips_texts() {
    let (mi, _) = mi();
    assert_eq!(
        rpc(&mi, "help", json!({})).await,
        json!("Usage: help mi_cmd - returns information about 'mi_cmd'")
    );
    assert_eq!(
        rpc(&mi, "help", json!({"mi_cmd": "list_tcp_conns"})).await,
        json!({"Help": "list all ongoing TCP based connections", "Exported by": "core"})
    );
    assert_eq!(
        rpc(&mi, "help", json!(["tcp:trace"])).await["Exported by"],
        json!("proto_tcp")
    );
    assert_eq!(
        rpc(&mi, "help", json!(["dlg_list"])).await,
        json!({"error": {"code": 404, "message": "unknown MI command"}})
    );
}

fn conn(id: u64, proto: NetProto, port: u16) -> heptap_mi::TcpConnInfo {
    use heptap_mi::{ConnLeg, ConnState, TcpConnInfo};
    use std::time::{Duration, SystemTime};
    let since = SystemTime::now() - Duration::from_secs(5);
    TcpConnInfo {
        listener: "edge".into(),
        state: ConnState::Relaying,
        client: ConnLeg {
            conn_id: id,
            proto,
            remote: format!("127.0.0.1:{port}").parse().unwrap(),
            local: "127.0.0.1:5062".parse().unwrap(),
        },
        upstream: Some(ConnLeg {
            conn_id: id + 1,
            proto: NetProto::Tcp,
            remote: "127.0.0.1:5060".parse().unwrap(),
            local: "127.0.0.1:40000".parse().unwrap(),
        }),
        expires: Some(std::time::UNIX_EPOCH + Duration::from_secs(1_488_884_884)),
        since,
        bytes_in: 10,
        bytes_out: 20,
    }
}

#[tokio::test]
async fn list_tcp_conns_lists_in_opensips_shape_with_both_legs() {
    let (mi, c) = mi();
    let id = 0x8ECC_0234_442A_6C2A_u64;
    c.conns.lock().unwrap().extend([
        conn(id, NetProto::Tcp, 40001),
        conn(7, NetProto::Tls, 40002),
    ]);
    let got = rpc(&mi, "list_tcp_conns", json!({})).await;
    assert_eq!(got["Connections"].as_array().unwrap().len(), 2);
    let first = &got["Connections"][0];
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "ID",
            "Type",
            "State",
            "Remote",
            "Local",
            "Lifetime",
            "Listener",
            "Phase",
            "Connection id",
            "Upstream",
            "Bytes in",
            "Bytes out",
            "Age"
        ]
    );
    assert_eq!(first["ID"], json!(0x442A_6C2A_u64));
    assert_eq!(first["Type"], json!("tcp"));
    assert_eq!(first["State"], json!(0));
    assert_eq!(first["Phase"], json!("relaying"));
    assert_eq!(first["Remote"], json!("127.0.0.1:40001"));
    assert_eq!(first["Local"], json!("127.0.0.1:5062"));
    assert_eq!(first["Lifetime"], json!("2017-03-07 11:08:04"));
    assert_eq!(first["Connection id"], json!(id.to_string()));
    assert_eq!(
        first["Upstream"],
        json!({"Type": "tcp", "Remote": "127.0.0.1:5060", "Local": "127.0.0.1:40000", "Connection id": (id + 1).to_string()})
    );
    assert_eq!(
        (&first["Bytes in"], &first["Bytes out"]),
        (&json!(10), &json!(20))
    );
    assert!(first["Age"].as_u64().unwrap() >= 5);
    assert!(got.get("Truncated").is_none());
    // The 4.x name with its proto filter.
    let tls = rpc(&mi, "tcp:list", json!({"proto": "tls"})).await;
    assert_eq!(tls["Connections"].as_array().unwrap().len(), 1);
    assert_eq!(tls["Connections"][0]["Type"], json!("tls"));
    assert_eq!(
        rpc(&mi, "tcp:list", json!({"proto": "udp"})).await["error"]["code"],
        json!(400)
    );
}

#[tokio::test]
async fn list_tcp_conns_is_bounded_and_says_when_it_was_cut() {
    let (mi, c) = mi();
    let n = heptap_mi::MAX_LISTED_CONNECTIONS + 5;
    c.conns
        .lock()
        .unwrap()
        .extend((0..n as u64).map(|i| conn(i, NetProto::Tcp, 1000 + i as u16)));
    let got = rpc(&mi, "list_tcp_conns", json!({})).await;
    assert_eq!(
        got["Connections"].as_array().unwrap().len(),
        heptap_mi::MAX_LISTED_CONNECTIONS
    );
    assert_eq!(
        got["Truncated"],
        json!(format!(
            "1000 of {n} connections listed (at most 1000 per reply)"
        ))
    );
}
