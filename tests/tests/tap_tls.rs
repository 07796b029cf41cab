//! The TLS tap end to end: heptap's `start()` in-process, rustls clients and upstreams with a
//! PKI generated for the test, and a HEP collector on 127.0.0.1 that decodes the connection
//! events (spec/opensips-tracing.md §3.4): one handshake event per leg with the certificate
//! names in OpenSSL's one-line form, secrets only with `trace_master_key`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::sync::Arc;

use heptap::Stop;
use heptap_hep::NetProto;
use heptap_hep::Packet;
use heptap_tests::collector::{EchoUpstream, UdpCollector, WAIT, correlation, event_of};
use heptap_tests::events::{net_correlation, owned, part, parts_of, text_of};
use heptap_tests::taps::{
    config, connections_over, events, half_close, listener, random_bytes, random_sizes, read_once,
    relay_in_slices, roundtrip, run, run_tap, stat, tap_config, upstream_over,
};
use heptap_tests::tls::{
    self, Behaviour, CA_SUBJECT, CLIENT_SUBJECT, HEPTAP_CLIENT_SUBJECT, KeyLines, Pki,
    ROGUE_CA_SUBJECT, SERVER_SUBJECT, TlsUpstream, UPSTREAM_SUBJECT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ACCEPTED_OK: [(&str, &str); 3] = [
    ("Event", "ACCEPTED"),
    ("Status", "SUCCESS"),
    ("Message", "Connection accepted..."),
];

fn our_certificate() -> Vec<(String, String)> {
    owned(&[
        ("server-subject", SERVER_SUBJECT),
        ("server-issuer", CA_SUBJECT),
    ])
}

/// `[("Protocol", proto)] + middle + tail`.
fn expect(
    proto: &str,
    middle: Vec<(String, String)>,
    tail: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut v = owned(&[("Protocol", proto)]);
    v.extend(middle);
    v.extend(owned(tail));
    v
}

#[tokio::test]
async fn a_tls_client_leg_has_one_accepted_event_with_our_certificate_then_the_tcp_upstream_leg() {
    let pki = Pki::new();
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("tls", up.addr, "", "", &col, &pki).await;
    let listen = heptap.listen_addrs()[0];
    let mut client = pki.connect(listen).await;
    let me = client.get_ref().0.local_addr().unwrap();
    let echo = roundtrip(&mut client, b"hello").await;
    assert_eq!(&echo, b"hello");
    let rest = half_close(&mut client).await;
    assert!(rest.is_empty());

    let got = events(&mut col, 4).await;
    let seq: Vec<String> = got.iter().map(event_of).collect();
    assert_eq!(seq, ["ACCEPTED", "CONNECTED", "CLOSED", "CLOSED"]);
    let client_id = correlation(&got[0]);
    assert_eq!(got[0].proto_type, Some(89));
    assert_eq!(got[0].ip_proto, Some(22), "TLS is 22");
    assert_eq!((got[0].src(), got[0].dst()), (Some(me), Some(listen)));
    assert_eq!(
        parts_of(&got[0]),
        expect("TLS", our_certificate(), &ACCEPTED_OK),
        "no client certificate, no secrets"
    );
    // The upstream leg speaks TCP and is traced as TCP, joined to the client leg.
    for p in &got[1..2] {
        assert_eq!(p.ip_proto, Some(6));
        assert_eq!(part(p, "Protocol"), "TCP");
        assert_eq!(net_correlation(p).as_deref(), Some(client_id.as_str()));
        assert_eq!(p.src(), Some(up.addr));
    }
    let closed_client = got[2..]
        .iter()
        .find(|p| correlation(p) == client_id)
        .unwrap();
    assert_eq!(
        parts_of(closed_client),
        owned(&[
            ("Protocol", "TLS"),
            ("Event", "CLOSED"),
            ("Status", "SUCCESS"),
            ("Message", "EOF received"),
        ])
    );
    assert_eq!(closed_client.src(), Some(me));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn homer5_mode_joins_the_tls_parts_of_every_event_of_both_legs_in_opensips_order() {
    let pki = Pki::new();
    let up = TlsUpstream::bind(&pki, Behaviour::Echo, 0).await;
    let mut col = UdpCollector::bind().await;
    let keys = upstream_over("tls", &pki);
    let heptap = run_tap(
        "tls",
        up.addr,
        &keys,
        "[hep]\nhomer5_on = true\n",
        &col,
        &pki,
    )
    .await;
    let mut client = pki.connect(heptap.listen_addrs()[0]).await;
    roundtrip(&mut client, b"x").await;
    half_close(&mut client).await;
    let got = events(&mut col, 4).await;
    let texts: Vec<String> = got.iter().map(text_of).collect();
    assert_eq!(
        texts,
        [
            format!("TLS:{SERVER_SUBJECT}:{CA_SUBJECT}:ACCEPTED:SUCCESS:Connection accepted..."),
            format!(
                "TLS:{UPSTREAM_SUBJECT}:{CA_SUBJECT}:CONNECTED:SUCCESS:Successfully connected..."
            ),
            "TLS:CLOSED:SUCCESS:EOF received".to_owned(),
            "TLS:CLOSED:SUCCESS:EOF received".to_owned(),
        ]
    );
    assert!(got.iter().all(|p| p.extra_correlation.is_none()));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_requested_client_certificate_is_traced_whoever_issued_it_and_its_absence_too() {
    let pki = Pki::new();
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let heptap = run(config(
        &listener("tls", up.addr, "", Some(&pki), "client_cert = \"request\""),
        col.addr,
        "",
        &pki.dir,
    ))
    .await;
    let listen = heptap.listen_addrs()[0];
    let cases = [
        (Some(&pki.client), Some(CA_SUBJECT)),
        (Some(&pki.rogue_client), Some(ROGUE_CA_SUBJECT)),
        (None, None),
    ];
    for (cert, issuer) in cases {
        let mut client = tls::connect(listen, pki.client_config(cert, None, None))
            .await
            .unwrap();
        roundtrip(&mut client, b"x").await;
        let got = col
            .until(WAIT, |g| g.iter().any(|p| event_of(p) == "ACCEPTED"))
            .await;
        let accepted = got.iter().find(|p| event_of(p) == "ACCEPTED").unwrap();
        let mut middle = Vec::new();
        if let Some(issuer) = issuer {
            middle = owned(&[
                ("client-subject", CLIENT_SUBJECT),
                ("client-issuer", issuer),
            ]);
        }
        middle.extend(our_certificate());
        assert_eq!(parts_of(accepted), expect("TLS", middle, &ACCEPTED_OK));
        drop(client);
        col.until(WAIT, |g| {
            g.iter().filter(|p| event_of(p) == "CLOSED").count() == 2
        })
        .await;
    }
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn required_client_certificates_are_verified_and_a_refusal_is_accepted_failure() {
    let pki = Pki::new();
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let tls_keys = format!(
        "client_cert = \"require\"\nclient_ca_file = \"{}\"",
        pki.ca_file.display()
    );
    let heptap = run(config(
        &listener("tls", up.addr, "", Some(&pki), &tls_keys),
        col.addr,
        "",
        &pki.dir,
    ))
    .await;
    let listen = heptap.listen_addrs()[0];

    // A certificate of the configured CA: accepted and traced.
    let mut good = tls::connect(listen, pki.client_config(Some(&pki.client), None, None))
        .await
        .unwrap();
    roundtrip(&mut good, b"x").await;
    let got = events(&mut col, 2).await;
    assert_eq!(part(&got[0], "client-subject"), CLIENT_SUBJECT);
    assert_eq!(part(&got[0], "Status"), "SUCCESS");
    drop(good);
    events(&mut col, 2).await;

    // A certificate of another CA: the handshake fails (TLS 1.3 clients learn it on their
    // first read), one ACCEPTED FAILURE with our certificate and the reason, then CLOSED.
    let rogue = tls::connect(
        listen,
        pki.client_config(Some(&pki.rogue_client), None, None),
    )
    .await;
    if let Ok(mut s) = rogue {
        let mut b = [0u8; 1];
        assert!(s.read(&mut b).await.is_err(), "refused");
    }
    let got = events(&mut col, 2).await;
    let parts = parts_of(&got[0]);
    assert_eq!(
        parts[..5],
        expect(
            "TLS",
            our_certificate(),
            &[("Event", "ACCEPTED"), ("Status", "FAILURE")]
        )[..]
    );
    assert_eq!(parts[5].0, "Message");
    assert!(
        parts[5]
            .1
            .starts_with("Failed to accept connection... TLS: "),
        "{parts:?}"
    );
    assert_eq!(event_of(&got[1]), "CLOSED");
    assert!(part(&got[1], "Message").starts_with("TLS handshake failed: "));
    assert_eq!(correlation(&got[0]), correlation(&got[1]));
    assert_eq!(stat(&heptap, "handshake_failed"), Some(1));
    heptap.shutdown(Stop::Immediate).await;
}

/// Runs one client with `versions` against a listener with `trace_master_key = master_key`
/// and returns the ACCEPTED event and the client's own key-log lines.
async fn accepted_with_secrets(
    versions: &[&'static rustls::SupportedProtocolVersion],
    master_key: bool,
) -> (Packet, Vec<String>) {
    let pki = Pki::new();
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let mut cfg = tap_config("tls", up.addr, "", "", &col, &pki);
    cfg.net.tls.trace_master_key = master_key;
    let heptap = run(cfg).await;
    let keys = Arc::new(KeyLines::default());
    let mut client = tls::connect(
        heptap.listen_addrs()[0],
        pki.client_config(None, Some(versions), Some(keys.clone())),
    )
    .await
    .unwrap();
    roundtrip(&mut client, b"x").await;
    let got = events(&mut col, 1).await;
    heptap.shutdown(Stop::Immediate).await;
    (got[0].clone(), keys.lines())
}

#[tokio::test]
async fn tls12_master_key_is_traced_in_hex_only_with_trace_master_key() {
    let (accepted, lines) = accepted_with_secrets(&[&rustls::version::TLS12], true).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let secret = lines[0].rsplit(' ').next().unwrap();
    assert_eq!(secret.len(), 96, "48-byte master secret");
    let mut middle = our_certificate();
    middle.extend(owned(&[("master-key", secret), ("keylog", &lines[0])]));
    assert_eq!(parts_of(&accepted), expect("TLS", middle, &ACCEPTED_OK));

    let (accepted, _) = accepted_with_secrets(&[&rustls::version::TLS12], false).await;
    assert_eq!(
        parts_of(&accepted),
        expect("TLS", our_certificate(), &ACCEPTED_OK)
    );
}

#[tokio::test]
async fn tls13_secrets_are_traced_as_nss_key_log_lines_only_with_trace_master_key() {
    let (accepted, mut lines) = accepted_with_secrets(&[&rustls::version::TLS13], true).await;
    let parts = parts_of(&accepted);
    assert!(
        parts.iter().all(|(k, _)| k != "master-key"),
        "no master secret in TLS 1.3"
    );
    let keylog = part(&accepted, "keylog");
    let mut traced: Vec<String> = keylog.lines().map(str::to_owned).collect();
    traced.sort();
    lines.sort();
    assert_eq!(traced, lines, "the client's own key log, line for line");
    assert!(keylog.contains("CLIENT_TRAFFIC_SECRET_0 "));
    assert_eq!(parts[3].0, "keylog", "after the certificate parts");

    let (accepted, _) = accepted_with_secrets(&[&rustls::version::TLS13], false).await;
    assert_eq!(
        parts_of(&accepted),
        expect("TLS", our_certificate(), &ACCEPTED_OK)
    );
}

#[tokio::test]
async fn a_tls_upstream_leg_is_verified_and_traced_with_both_certificates() {
    let pki = Pki::new();
    let mut up = TlsUpstream::bind(&pki, Behaviour::Echo, 0).await;
    let mut col = UdpCollector::bind().await;
    let keys = format!(
        "upstream_proto = \"tls\"\nupstream_tls = {{ ca_file = \"{}\", cert_file = \"{}\", key_file = \"{}\" }}",
        pki.ca_file.display(),
        pki.heptap_client.cert_file.display(),
        pki.heptap_client.key_file.display(),
    );
    let heptap = run_tap("tls", up.addr, &keys, "", &col, &pki).await;
    let mut client = pki.connect(heptap.listen_addrs()[0]).await;
    roundtrip(&mut client, b"x").await;
    // A connect done at once: no CONNECT_START; proto_tls's CONNECTED text.
    let got = events(&mut col, 2).await;
    let client_id = correlation(&got[0]);
    // "client" is the peer (the upstream), "server" is us, as OpenSIPS names them.
    assert_eq!(
        parts_of(&got[1]),
        owned(&[
            ("Protocol", "TLS"),
            ("client-subject", UPSTREAM_SUBJECT),
            ("client-issuer", CA_SUBJECT),
            ("server-subject", HEPTAP_CLIENT_SUBJECT),
            ("server-issuer", CA_SUBJECT),
            ("Event", "CONNECTED"),
            ("Status", "SUCCESS"),
            ("Message", "Successfully connected..."),
        ])
    );
    assert_eq!(got[1].ip_proto, Some(22));
    assert_eq!(got[1].src(), Some(up.addr));
    assert_eq!(
        net_correlation(&got[1]).as_deref(),
        Some(client_id.as_str())
    );
    assert_eq!(
        up.client_certs.recv().await.unwrap().as_ref(),
        Some(&pki.heptap_client.cert),
        "the upstream saw heptap's client certificate"
    );
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_is_connected_failure_and_the_client_is_reset() {
    let pki = Pki::new();
    let up = TlsUpstream::bind(&pki, Behaviour::Echo, 0).await;
    let mut col = UdpCollector::bind().await;
    let keys = format!(
        "upstream_proto = \"tls\"\nupstream_tls = {{ ca_file = \"{}\" }}",
        pki.rogue_ca_file.display()
    );
    let heptap = run_tap("tls", up.addr, &keys, "", &col, &pki).await;
    let mut client = pki.connect(heptap.listen_addrs()[0]).await;
    let r = read_once(&mut client).await;
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    let got = events(&mut col, 3).await;
    let seq: Vec<(String, String)> = got
        .iter()
        .map(|p| (event_of(p), part(p, "Status")))
        .collect();
    assert_eq!(
        seq,
        [
            ("ACCEPTED".into(), "SUCCESS".into()),
            ("CONNECTED".into(), "FAILURE".into()),
            ("CLOSED".into(), "SUCCESS".into()),
        ]
    );
    let message = part(&got[1], "Message");
    // In plain words, with what to do (not rustls's debug dump).
    assert!(
        message.starts_with("Failed to connect... TLS: the upstream's certificate (SHA-256 "),
        "{message}"
    );
    assert!(
        message.contains(
            "is not signed by a CA heptap trusts (upstream_tls.ca_file, or the system's CAs \
             when it is unset): set upstream_tls.ca_file to the CA that issued it"
        ),
        "{message}"
    );
    assert_eq!(part(&got[2], "Message"), "Upstream connect failed");
    assert_eq!(stat(&heptap, "upstream_connect_failed"), Some(1));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_client_that_never_handshakes_times_out_as_accepted_failure_then_closed() {
    let pki = Pki::new();
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap(
        "tls",
        up.addr,
        "handshake_timeout = \"300ms\"",
        "",
        &col,
        &pki,
    )
    .await;
    let mut silent = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(WAIT, silent.read(&mut b))
        .await
        .expect("closed by heptap")
        .unwrap();
    assert_eq!(n, 0);
    let got = events(&mut col, 2).await;
    assert_eq!(
        parts_of(&got[0]),
        expect(
            "TLS",
            our_certificate(),
            &[
                ("Event", "ACCEPTED"),
                ("Status", "FAILURE"),
                (
                    "Message",
                    "Failed to accept connection... handshake timed out after 300ms"
                ),
            ]
        )
    );
    assert_eq!(part(&got[1], "Event"), "CLOSED");
    assert_eq!(part(&got[1], "Message"), "Handshake timeout");
    assert_eq!(stat(&heptap, "handshake_failed"), Some(1));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn an_upstream_reset_mid_stream_resets_the_tls_client_and_both_legs_close() {
    let pki = Pki::new();
    let resetter = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = resetter.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (mut s, _) = resetter.accept().await.unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).await.unwrap();
        s.set_zero_linger().unwrap();
        drop(s);
    });
    let mut col = UdpCollector::bind().await;
    let heptap = run_tap("tls", up_addr, "", "", &col, &pki).await;
    let mut client = pki.connect(heptap.listen_addrs()[0]).await;
    client.write_all(b"hello").await.unwrap();
    upstream.await.unwrap();
    let r = read_once(&mut client).await;
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the reset is passed on: {r:?}"
    );
    let got = events(&mut col, 4).await;
    let client_id = correlation(&got[0]);
    let closed: Vec<&Packet> = got.iter().filter(|p| event_of(p) == "CLOSED").collect();
    let (c, u): (Vec<&Packet>, Vec<&Packet>) =
        closed.iter().partition(|p| correlation(p) == client_id);
    assert!(
        part(u[0], "Message").starts_with("Read error: "),
        "{:?}",
        parts_of(u[0])
    );
    assert_eq!(
        part(c[0], "Message"),
        "Closed by heptap: the upstream leg ended"
    );
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn bytes_are_relayed_unchanged_through_tls_on_both_legs_with_random_splits_and_half_close() {
    let pki = Pki::new();
    let up = TlsUpstream::bind(&pki, Behaviour::Echo, 0).await;
    let mut col = UdpCollector::bind().await;
    let keys = upstream_over("tls", &pki);
    let heptap = run_tap("tls", up.addr, &keys, "", &col, &pki).await;
    let client = pki.connect(heptap.listen_addrs()[0]).await;
    let data = random_bytes(0x9E37_79B9_7F4A_7C15, 1 << 20);
    // Half-closed with close_notify at the end.
    let back = relay_in_slices(client, &data, random_sizes(7, 4096, 3000)).await;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "relayed bytes differ");
    let got = events(&mut col, 4).await;
    assert_eq!(got.iter().filter(|p| event_of(p) == "CLOSED").count(), 2);
    assert_eq!(stat(&heptap, "bytes_in"), Some(1 << 20));
    assert_eq!(stat(&heptap, "bytes_out"), Some(1 << 20));
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_proxy_protocol_v2_header_precedes_the_upstream_tls_handshake() {
    let pki = Pki::new();
    let mut up = TlsUpstream::bind(&pki, Behaviour::Echo, 28).await;
    let mut col = UdpCollector::bind().await;
    let keys = format!("proxy_protocol = \"v2\"\n{}", upstream_over("tls", &pki));
    let heptap = run_tap("tls", up.addr, &keys, "", &col, &pki).await;
    let listen = heptap.listen_addrs()[0];
    let mut client = pki.connect(listen).await;
    let me = client.get_ref().0.local_addr().unwrap();
    let b = roundtrip(&mut client, b"ping").await;
    assert_eq!(&b, b"ping");
    let header = up.proxy_headers.recv().await.unwrap();
    let mut expected = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    expected.extend_from_slice(&[0x21, 0x11, 0x00, 0x0C, 127, 0, 0, 1, 127, 0, 0, 1]);
    expected.extend_from_slice(&me.port().to_be_bytes());
    expected.extend_from_slice(&listen.port().to_be_bytes());
    assert_eq!(
        header, expected,
        "PROXY v2, TCP over IPv4, client -> our listener"
    );
    events(&mut col, 2).await;
    heptap.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_tls_filter_route_that_drops_hides_the_client_leg_and_trace_on_false_hides_it_too() {
    let pki = Pki::new();
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let routes = "[routes]\ninline = '''\nroute[no_tls] {\n    if ($proto == \"tls\")\n        drop;\n}\n'''\n";
    let mut cfg = tap_config("tls", up.addr, "", routes, &col, &pki);
    cfg.net.tls.trace_filter_route = Some("no_tls".into());
    let heptap = run(cfg).await;
    let listen = heptap.listen_addrs()[0];
    let connection = || async {
        let mut c = pki.connect(listen).await;
        roundtrip(&mut c, b"x").await;
        half_close(&mut c).await;
    };
    // Dropped by the route: only the TCP upstream leg (its own protocol, no filter) is traced.
    connection().await;
    let got = events(&mut col, 2).await;
    assert!(got.iter().all(|p| part(p, "Protocol") == "TCP"), "{got:#?}");
    assert_eq!(
        got.iter().map(event_of).collect::<Vec<_>>(),
        ["CONNECTED", "CLOSED"]
    );
    // trace_on = false for TLS (the switch the MI turns): the same.
    let control = heptap.control();
    control.set_net_trace_on(NetProto::Tls, false);
    let mut cfg = tap_config("tls", up.addr, "", "", &col, &pki);
    cfg.net.tls.trace_on = true;
    connection().await;
    let got = events(&mut col, 2).await;
    assert!(got.iter().all(|p| part(p, "Protocol") == "TCP"), "{got:#?}");
    // Switched on again (and the route gone): the next connection's client leg is traced. The
    // switch is read at every event: let the second connection end (on its worker) first.
    connections_over(&heptap).await;
    control.set_net_trace_on(NetProto::Tls, true);
    heptap.reload(cfg).unwrap();
    connection().await;
    let got = events(&mut col, 4).await;
    assert_eq!(part(&got[0], "Protocol"), "TLS");
    assert_eq!(event_of(&got[0]), "ACCEPTED");
    heptap.shutdown(Stop::Immediate).await;
}

/// OpenSIPS accepts an X.509 v1 client certificate and traces its names; webpki cannot parse
/// one (`UnsupportedCertVersion`). `request` takes it over TLS 1.2 and 1.3 (the handshake
/// signature checked against its key); `require` refuses it and says why.
#[tokio::test]
async fn an_x509_v1_client_certificate_is_taken_by_request_and_refused_by_require_saying_why() {
    let pki = Pki::new();
    let v1 = pki.issue_v1_client("v1-client", "v1 alice");
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let heptap = run(config(
        &listener("tls", up.addr, "", Some(&pki), "client_cert = \"request\""),
        col.addr,
        "",
        &pki.dir,
    ))
    .await;
    let listen = heptap.listen_addrs()[0];
    for versions in [
        &[&rustls::version::TLS12][..],
        &[&rustls::version::TLS13][..],
    ] {
        let config = pki.client_config(Some(&v1), Some(versions), None);
        let mut client = tls::connect(listen, config).await.unwrap();
        assert_eq!(roundtrip(&mut client, b"v1").await, b"v1", "{versions:?}");
        let got = col
            .until(WAIT, |g| g.iter().any(|p| event_of(p) == "ACCEPTED"))
            .await;
        let accepted = got.iter().find(|p| event_of(p) == "ACCEPTED").unwrap();
        let mut middle = owned(&[
            ("client-subject", "/C=RO/O=heptap tests/CN=v1 alice"),
            ("client-issuer", CA_SUBJECT),
        ]);
        middle.extend(our_certificate());
        assert_eq!(parts_of(accepted), expect("TLS", middle, &ACCEPTED_OK));
        drop(client);
        col.until(WAIT, |g| {
            g.iter().filter(|p| event_of(p) == "CLOSED").count() == 2
        })
        .await;
    }
    heptap.shutdown(Stop::Immediate).await;

    let tls_keys = format!(
        "client_cert = \"require\"\nclient_ca_file = \"{}\"",
        pki.ca_file.display()
    );
    let heptap = run(config(
        &listener("tls", up.addr, "", Some(&pki), &tls_keys),
        col.addr,
        "",
        &pki.dir,
    ))
    .await;
    let listen = heptap.listen_addrs()[0];
    let refused = tls::connect(listen, pki.client_config(Some(&v1), None, None)).await;
    if let Ok(mut s) = refused {
        let mut b = [0u8; 1];
        assert!(s.read(&mut b).await.is_err(), "refused");
    }
    let got = col
        .until(WAIT, |g| g.iter().any(|p| event_of(p) == "CLOSED"))
        .await;
    let accepted = got.iter().find(|p| event_of(p) == "ACCEPTED").unwrap();
    assert_eq!(part(accepted, "Status"), "FAILURE");
    let why = part(accepted, "Message");
    assert!(
        why.contains("X.509 v1 client certificate refused")
            && why.contains("client_cert = \"request\""),
        "{why}"
    );
    heptap.shutdown(Stop::Immediate).await;
}
