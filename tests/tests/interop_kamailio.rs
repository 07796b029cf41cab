//! Kamailio 5.6's sipcapture module (Debian's `kamailio` + `kamailio-sqlite-modules`) as an
//! independent capture node: packets built by heptap-hep are accepted and stored with the right
//! Call-ID, addresses, ports, method and time, over HEPv3 on UDP and TCP and over HEPv2 on UDP.
//!
//! What sipcapture stores (sipcapture.c, spec/hep.md §10): `micro_ts` = the packet's
//! `ts_sec * 1000000 + ts_usec`, `node` = "homer01:<capture id>", `proto` = Kamailio's transport
//! number (1 UDP, 2 TCP) from chunk 0x0002, `date` = `ts_sec` (whole seconds) as db_sqlite's
//! Julian day number, `correlation_id` from chunk 0x0011. Non-SIP packets go through `report_capture`, which keeps the correlation id and
//! the payload (and takes addresses and time from the datagram itself).

// A test crate: helpers unwrap because a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use heptap_hep::{Encoder, TraceMessage, Version, ip_proto, proto_type};
use heptap_tests::kamailio::Kamailio;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// An INVITE as it crosses the relay (RFC 3261 §24.2, trimmed).
fn invite(call_id: &str) -> String {
    format!(
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\n\
         To: Bob <sip:bob@biloxi.example.com>\r\n\
         From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 314159 INVITE\r\n\
         Contact: <sip:alice@192.0.2.10:5060>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn sip_message(
    call_id: &str,
    ip_proto: u8,
    src: &str,
    dst: &str,
    sec: u32,
    usec: u32,
) -> TraceMessage {
    TraceMessage::new(
        proto_type::SIP,
        ip_proto,
        src.parse().unwrap(),
        dst.parse().unwrap(),
        sec,
        usec,
    )
    .correlation(call_id.to_owned())
    .payload(invite(call_id).into_bytes())
}

fn encode(encoder: &Encoder, msg: &TraceMessage) -> Vec<u8> {
    let mut packet = Vec::new();
    encoder.encode(msg, &mut packet).unwrap();
    packet
}

fn send_udp(packet: &[u8], to: SocketAddr) {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(packet, to)
        .unwrap();
}

/// The stored INVITE with `call_id`, as sipcapture wrote it, with `date` back in Unix seconds
/// (db_sqlite's sqlite_to_timet: 86400 * (jd - 2440587.5) + 0.5).
fn stored_invite(kamailio: &Kamailio, call_id: &str) -> Value {
    kamailio.wait_stored("sip_capture", call_id, WAIT);
    let rows = kamailio.rows(&format!(
        "SELECT method, callid, correlation_id, source_ip, source_port, destination_ip, \
             destination_port, proto, family, type, node, micro_ts, ruri_user, from_user, \
             to_user, cseq, CAST(round((date - 2440587.5) * 86400.0 + 0.5) AS INTEGER) AS date \
             FROM sip_capture WHERE callid = '{call_id}'"
    ));
    let rows: Vec<Value> = serde_json::from_str(&rows).unwrap();
    assert_eq!(rows.len(), 1, "one stored row for {call_id}: {rows:?}");
    rows.into_iter().next().unwrap()
}

#[test]
fn kamailio_sipcapture_stores_a_heptap_hep3_invite_sent_over_udp() {
    let kamailio = Kamailio::start();
    let call_id = "hep3-udp-a84b4c76e66710@pc33.atlanta.example.com";
    let encoder = Encoder {
        capture_id: 2001,
        auth_key: Some(b"s3cret-key".to_vec()),
        node_name: Some("edge-1".to_owned()),
        ..Encoder::new(Version::V3)
    };
    let msg = sip_message(
        call_id,
        ip_proto::UDP,
        "192.0.2.10:5060",
        "198.51.100.7:5062",
        1_700_000_123,
        456_789,
    );

    send_udp(&encode(&encoder, &msg), kamailio.udp);

    let row = stored_invite(&kamailio, call_id);
    assert_eq!(
        row,
        json!({
            "method": "INVITE",
            "callid": call_id,
            "correlation_id": call_id,
            "source_ip": "192.0.2.10",
            "source_port": 5060,
            "destination_ip": "198.51.100.7",
            "destination_port": 5062,
            "proto": 1,
            "family": 2,
            "type": 1,
            "node": "homer01:2001",
            "micro_ts": 1_700_000_123_456_789_u64,
            "date": 1_700_000_123,
            "ruri_user": "bob",
            "from_user": "alice",
            "to_user": "bob",
            "cseq": "314159 INVITE",
        })
    );
}

#[test]
fn kamailio_sipcapture_stores_a_heptap_hep3_invite_sent_over_tcp() {
    let kamailio = Kamailio::start();
    let call_id = "hep3-tcp-a84b4c76e66710@pc33.atlanta.example.com";
    let encoder = Encoder {
        capture_id: 2002,
        ..Encoder::new(Version::V3)
    };
    let msg = sip_message(
        call_id,
        ip_proto::TCP,
        "192.0.2.11:50000",
        "198.51.100.8:5060",
        1_700_000_124,
        1,
    );

    let mut conn = TcpStream::connect(kamailio.tcp).unwrap();
    conn.write_all(&encode(&encoder, &msg)).unwrap();

    let row = stored_invite(&kamailio, call_id);
    assert_eq!(
        row,
        json!({
            "method": "INVITE",
            "callid": call_id,
            "correlation_id": call_id,
            "source_ip": "192.0.2.11",
            "source_port": 50000,
            "destination_ip": "198.51.100.8",
            "destination_port": 5060,
            "proto": 2,
            "family": 2,
            "type": 1,
            "node": "homer01:2002",
            "micro_ts": 1_700_000_124_000_001_u64,
            "date": 1_700_000_124,
            "ruri_user": "bob",
            "from_user": "alice",
            "to_user": "bob",
            "cseq": "314159 INVITE",
        })
    );
}

#[test]
fn kamailio_sipcapture_reads_heptap_hep2_time_and_capture_id_as_little_endian() {
    // HEPv2's 12-byte time header is little-endian (spec/hep.md §1.4). Had heptap written it
    // big-endian, Kamailio would store 0x3412 as the capture id and a time decades away.
    let kamailio = Kamailio::start();
    let call_id = "hep2-udp-a84b4c76e66710@pc33.atlanta.example.com";
    let encoder = Encoder {
        capture_id: 0x1234,
        ..Encoder::new(Version::V2)
    };
    let msg = sip_message(
        call_id,
        ip_proto::UDP,
        "192.0.2.12:5070",
        "198.51.100.9:5080",
        1_700_000_125,
        654_321,
    );
    let packet = encode(&encoder, &msg);
    assert_eq!(
        &packet[16..28],
        &[
            0x7d, 0xf1, 0x53, 0x65, // 1_700_000_125 = 0x6553f17d, little-endian
            0xf1, 0xfb, 0x09, 0x00, // 654_321 = 0x0009fbf1, little-endian
            0x34, 0x12, 0x00,
            0x00, // capture id 0x1234, little-endian, then 2 bytes of padding
        ],
        "the HEPv2 time header heptap wrote"
    );

    send_udp(&packet, kamailio.udp);

    let row = stored_invite(&kamailio, call_id);
    assert_eq!(
        row,
        json!({
            "method": "INVITE",
            "callid": call_id,
            // HEPv2 has no correlation chunk; sipcapture falls back to the Call-ID.
            "correlation_id": call_id,
            "source_ip": "192.0.2.12",
            "source_port": 5070,
            "destination_ip": "198.51.100.9",
            "destination_port": 5080,
            "proto": 1,
            "family": 2,
            "type": 1,
            "node": "homer01:4660",
            "micro_ts": 1_700_000_125_654_321_u64,
            "date": 1_700_000_125,
            "ruri_user": "bob",
            "from_user": "alice",
            "to_user": "bob",
            "cseq": "314159 INVITE",
        })
    );
}

#[test]
fn kamailio_sipcapture_stores_a_heptap_net_event_under_its_connection_id() {
    let kamailio = Kamailio::start();
    let msg = TraceMessage::new(
        proto_type::NET,
        ip_proto::TCP,
        "203.0.113.9:53122".parse().unwrap(),
        "127.0.0.1:5062".parse().unwrap(),
        1_700_000_126,
        0,
    )
    .correlation("co-kamailio-1")
    .part("Protocol", "tcp")
    .part("Event", "ACCEPTED")
    .part("Status", "0")
    .part("Message", "success");

    send_udp(&encode(&Encoder::new(Version::V3), &msg), kamailio.udp);

    kamailio.wait_stored("report_capture", "co-kamailio-1", WAIT);
    let rows = kamailio.rows(
        "SELECT correlation_id, msg FROM report_capture WHERE correlation_id = 'co-kamailio-1'",
    );
    let rows: Vec<Value> = serde_json::from_str(&rows).unwrap();
    assert_eq!(
        rows,
        vec![json!({
            "correlation_id": "co-kamailio-1",
            "msg": r#"{"Protocol":"tcp","Event":"ACCEPTED","Status":"0","Message":"success"}"#,
        })]
    );
}
