//! `sip_trace_route`: a listener's route decides per SIP message what is traced and where, as
//! an OpenSIPS script's `if (...) trace("tid");` does. A route that traces only one caller's
//! INVITE dialogs from one address, run against real connections; and what a config with a
//! wrong route gets at load (file:line:col errors).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::SocketAddr;
use std::time::Duration;

use heptap::LogHandle;
use heptap::{Stop, start};
use heptap_hep::Packet;
use heptap_testkit::eventually;
use heptap_tests::collector::{Scratch, UdpCollector, WAIT, correlation};
use heptap_tests::sip::{MirrorUpstream, call_request, is_sip, play_call, read_message};
use heptap_tests::taps::{parse, run_toml};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const ONE_CALLER: &str = r#"
route[one_caller] {
    # alice's INVITE dialogs, from 127.0.0.2 only, to their own trace id.
    if ($fU == "alice" && $si == "127.0.0.2" && is_method("INVITE|ACK|BYE")) {
        trace("alice");
        exit;
    }
    drop;
}
"#;

fn toml(
    dir: &Scratch,
    (upstream, default, alice): (SocketAddr, SocketAddr, SocketAddr),
    route: &str,
) -> String {
    let mi = dir.mi_toml(false);
    format!(
        r#"
[hep.ids]
col = "[col] {default}; transport=udp"
alice = "[alice] {alice}; transport=udp"

[tracer]
trace_id = ["[tid2]uri=hep:col", "[alice]uri=hep:alice"]

[[listener]]
name = "edge"
proto = "tcp"
listen = "127.0.0.1:0"
upstream = "{upstream}"
sip_trace_id = "tid2"
sip_trace_route = "one_caller"

{mi}
[routes]
inline = '''
{route}
'''
"#
    )
}

async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

fn call_ids(packets: &[Packet]) -> Vec<String> {
    packets
        .iter()
        .filter(|p| is_sip(p))
        .map(correlation)
        .collect()
}

#[tokio::test]
async fn a_route_traces_only_one_callers_invite_dialogs_from_one_address() {
    let up = MirrorUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let mut alice_col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let text = toml(&dir, (up.addr, col.addr, alice_col.addr), ONE_CALLER);
    let h = run_toml(&text).await;
    let listen = h.listen_addrs()[0];

    // Carol from the right address, alice from another one: nothing is traced.
    let mut carol = connect_from("127.0.0.2", listen).await;
    play_call(&mut carol, "carol", "carol-1").await;
    let mut elsewhere = connect_from("127.0.0.1", listen).await;
    play_call(&mut elsewhere, "alice", "alice-elsewhere").await;
    // Alice from 127.0.0.2: her dialog goes to "alice"; an OPTIONS of hers does not.
    let mut alice = connect_from("127.0.0.2", listen).await;
    play_call(&mut alice, "alice", "alice-1").await;
    alice
        .write_all(&call_request("OPTIONS", "alice", "alice-options", 3))
        .await
        .unwrap();
    read_message(&mut alice).await.expect("200 to OPTIONS");
    let got = alice_col
        .until(WAIT, |g| g.iter().filter(|p| is_sip(p)).count() >= 7)
        .await;
    let filtered = h.stats().counter("listener_edge", "sip_filtered");
    // carol's 7 and alice-elsewhere's 7 messages were dropped by the route.
    eventually(WAIT, "the route dropped 14 messages", || {
        filtered.get() >= 14
    })
    .await;
    let more = alice_col.drain(Duration::from_millis(300)).await;
    let ids: Vec<String> = call_ids(&got).into_iter().chain(call_ids(&more)).collect();
    assert_eq!(ids, vec!["alice-1".to_owned(); 7]);
    // Every message went through the route: none reached the listener's own trace id.
    assert!(call_ids(&col.drain(Duration::from_millis(300)).await).is_empty());
    h.shutdown(Stop::Immediate).await;
}

/// What `start` says of a config whose routes are wrong.
async fn refused(text: &str) -> String {
    match start(parse(text), LogHandle::detached()).await {
        Ok(h) => {
            h.shutdown(Stop::Immediate).await;
            panic!("started with {text}")
        }
        Err(e) => e.to_string(),
    }
}

/// The config with a `[net.tcp]` whose `trace_filter_route` is `net`.
fn with_net_route(text: String) -> String {
    text.replace(
        "[mi]",
        "[net.tcp]\ntrace_on = true\ntrace_destination = \"col\"\ntrace_filter_route = \"net\"\n\n[mi]",
    )
}

#[tokio::test]
async fn a_route_with_mistakes_is_refused_at_load_with_line_and_column() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let dir = Scratch::new();
    let addrs = (addr, addr, addr);
    let bad_status = refused(&toml(
        &dir,
        addrs,
        "route[one_caller] {\n    if ($fU == \"alice\" && $rs < \"x\") drop;\n}\n",
    ))
    .await;
    assert!(
        bad_status.contains(":2:33: \"x\" is not a status code"),
        "{bad_status}"
    );
    let unknown_tid = refused(&toml(
        &dir,
        addrs,
        "route[one_caller] {\n  trace(\"nobody\");\n}\n",
    ))
    .await;
    assert!(
        unknown_tid.contains(":2:3: unknown trace id \"nobody\": no trace_id of that name"),
        "{unknown_tid}"
    );
    let net = refused(&with_net_route(toml(
        &dir,
        addrs,
        "route[one_caller] { exit; }\nroute[net] {\n  if (is_method(\"INVITE\")) drop;\n}\n",
    )))
    .await;
    assert!(
        net.contains(":3:7: route \"net\" reads the SIP message (is_method())"),
        "{net}"
    );
    let undefined = refused(&toml(&dir, addrs, "route[other] { exit; }")).await;
    assert!(
        undefined.contains("listener[0].sip_trace_route")
            && undefined.contains("unknown route 'one_caller'"),
        "{undefined}"
    );
}
