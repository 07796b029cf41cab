//! Interoperability of SIP tracing with a real capture node: a dialog relayed by heptap is
//! traced to Kamailio's sipcapture (Debian's kamailio + db_sqlite) over HEP3 on UDP, then
//! another over HEP3 on TCP, and every message is stored with the right Call-ID, method and
//! addresses. (One dialog per transport, one after the other: Kamailio's UDP and TCP workers are
//! separate processes, and db_sqlite fails an insert that meets the other's lock.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::time::Duration;

use heptap::LogHandle;
use heptap::{Stop, start};
use heptap_config::Config;
use heptap_testkit::{described, eventually};
use heptap_tests::collector::Scratch;
use heptap_tests::kamailio::Kamailio;
use heptap_tests::sip::{CALL_ID, SipUpstream, client_messages, read_message};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_dialog_is_stored_by_kamailio_sipcapture_over_udp_and_tcp() {
    let kamailio = tokio::task::spawn_blocking(Kamailio::start).await.unwrap();
    let up = SipUpstream::bind().await;
    let dir = Scratch::new();
    let text = format!(
        r#"
[hep]
capture_id = 2002

[hep.ids]
kam_udp = "[kam_udp] {udp}; transport=udp"
kam_tcp = "[kam_tcp] {tcp}; transport=tcp"

[tracer]
trace_id = ["[via_udp]uri=hep:kam_udp", "[via_tcp]uri=hep:kam_tcp"]

[[listener]]
proto = "tcp"
listen = "127.0.0.1:0"
upstream = "{upstream}"
sip_trace_id = "via_udp"

[[listener]]
proto = "tcp"
listen = "127.0.0.1:0"
upstream = "{upstream}"
sip_trace_id = "via_tcp"

{mi}
"#,
        udp = kamailio.udp,
        tcp = kamailio.tcp,
        upstream = up.addr,
        mi = dir.mi_toml(false)
    );
    let config = Config::from_toml_str(&text).unwrap();
    let heptap = start(config, LogHandle::detached()).await.unwrap();
    let mut legs = Vec::new();
    for (i, listen) in heptap.listen_addrs().iter().copied().enumerate() {
        let mut client = TcpStream::connect(listen).await.unwrap();
        legs.push((client.local_addr().unwrap(), listen));
        let [invite, ack, bye] = client_messages();
        client.write_all(&invite).await.unwrap();
        for _ in 0..3 {
            read_message(&mut client).await.unwrap();
        }
        client.write_all(&ack).await.unwrap();
        client.write_all(&bye).await.unwrap();
        read_message(&mut client).await.unwrap();
        // 7 messages per dialog; Kamailio logs each store. Wait before the next transport.
        wait_stored(&kamailio, 7 * (i + 1)).await;
    }
    let rows: Vec<Value> = serde_json::from_str(&kamailio.rows(&format!(
        "SELECT method, callid, source_ip, source_port, destination_ip, \
         destination_port, proto, node FROM sip_capture WHERE callid = '{CALL_ID}' \
         ORDER BY id"
    )))
    .unwrap();
    assert_eq!(rows.len(), 14, "{rows:#?}");
    for (dialog, (me, listen)) in rows.chunks(7).zip(legs) {
        let methods: Vec<&str> = dialog
            .iter()
            .map(|r| r["method"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            methods,
            ["INVITE", "100", "180", "200", "ACK", "BYE", "200"]
        );
        for r in dialog {
            assert_eq!(r["callid"], CALL_ID);
            assert_eq!(
                r["proto"], 2,
                "Kamailio stores ip-proto 6 as its PROTO_TCP, 2"
            );
            assert_eq!(r["node"], "homer01:2002");
            let from_client = matches!(r["method"].as_str(), Some("INVITE" | "ACK" | "BYE"));
            let (src, dst) = if from_client {
                (me, listen)
            } else {
                (listen, me)
            };
            assert_eq!(r["source_ip"], src.ip().to_string());
            assert_eq!(r["source_port"], src.port());
            assert_eq!(r["destination_ip"], dst.ip().to_string());
            assert_eq!(r["destination_port"], dst.port());
        }
    }
    heptap.shutdown(Stop::Immediate).await;
}

/// Waits (bounded) until Kamailio's log says it stored `n` messages of the dialog.
async fn wait_stored(kamailio: &Kamailio, n: usize) {
    let stored = format!("heptap-test: stored sip_capture {CALL_ID}");
    let count = |log: &str| log.lines().filter(|l| l.ends_with(&stored)).count();
    let what = described(|| {
        let log = kamailio.log();
        format!(
            "Kamailio to store {n} messages; it stored {}\nlog:\n{log}",
            count(&log)
        )
    });
    eventually(Duration::from_secs(20), what, || {
        count(&kamailio.log()) >= n
    })
    .await;
}
