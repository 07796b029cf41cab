//! An upstream proxy that refuses, resets, half-closes, stalls or black-holes: the client sees
//! what it would see connecting to that proxy directly (a reset, an EOF), both legs are traced,
//! and nothing is left behind: heptap runs in-process, so the test's own file descriptor table
//! (/proc/self/fd) is heptap's, and so are the live tasks of its runtime and of heptap's relay
//! workers; both return to where they were before the connections.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use heptap::{Running, Stop};
use heptap_hep::Packet;
use heptap_testkit::{described, eventually};
use heptap_tests::collector::{Scratch, UdpCollector, WAIT, closed_port, correlation, event_of};
use heptap_tests::events::part;
use heptap_tests::fault::{BlackHole, ScriptedUpstream, UpstreamScript, open_fds};
use heptap_tests::taps::{config, connections_over, listener, run, stat, statistic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs `body` on a runtime of its own, one test at a time: file descriptors are per process,
/// so no other test of this file may open or close any (its runtime's included) meanwhile.
fn serial(body: impl AsyncFnOnce()) {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(body());
}

/// Tasks alive in this test's runtime.
/// The live tasks of this test's runtime and of heptap's relay workers (connections, accept
/// loops, destination lanes).
fn tasks(heptap: &Running) -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
        + heptap.worker_tasks()
}

/// heptap relaying TCP to `upstream` with `keys` on its listener, traced to a UDP collector.
async fn heptap(upstream: SocketAddr, keys: &str, dir: &Scratch) -> (Running, UdpCollector) {
    let col = UdpCollector::bind().await;
    let heptap = run(config(
        &listener("tcp", upstream, keys, None, ""),
        col.addr,
        "",
        dir,
    ))
    .await;
    (heptap, col)
}

/// What each open descriptor is (for failure messages).
fn fd_targets() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.display().to_string())
        .collect()
}

/// What is open now, to compare with once the connections are over.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Baseline {
    fds: usize,
    tasks: usize,
}

impl Baseline {
    fn now(heptap: &Running) -> Self {
        Baseline {
            fds: open_fds(),
            tasks: tasks(heptap),
        }
    }

    /// The baseline once heptap's destination socket exists: a first connection (any) is made
    /// and its events delivered, since the UDP sender opens its socket with the first packet.
    /// With `up`, its connection from the first one is let go and over, too.
    async fn warmed_up(
        heptap: &Running,
        col: &mut UdpCollector,
        up: Option<&ScriptedUpstream>,
    ) -> Self {
        // Bound first, so its address is known even when heptap (upstream refusing or
        // resetting) resets it before connect() has looked at the handshake.
        let first = tokio::net::TcpSocket::new_v4().unwrap();
        first.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let me = first.local_addr().unwrap();
        drop(first.connect(heptap.listen_addrs()[0]).await);
        let seen = col
            .until(WAIT, |got| {
                got.iter()
                    .any(|p| p.src() == Some(me) && event_of(p) == "CLOSED")
            })
            .await
            .len();
        connections_over(heptap).await;
        // Its upstream leg's CLOSED can still be on its way: once heptap has sent everything,
        // take every packet, so none is left for the test's own connection to find.
        let hep = |name: &str| statistic(heptap, "hep_col", name).unwrap_or(0);
        eventually(WAIT, "the warm-up's packets sent", || {
            hep("queue_depth") == 0
        })
        .await;
        let sent = hep("sent");
        col.until(WAIT, |more| (seen + more.len()) as u64 >= sent)
            .await;
        if let Some(up) = up {
            up.release();
            eventually(WAIT, "the upstream's side over", || up.live() == 0).await;
        }
        Baseline::now(heptap)
    }

    /// Waits until no connection is active and the descriptors and tasks are back to this.
    async fn returns(self, heptap: &Running) {
        connections_over(heptap).await;
        let back = described(|| {
            format!(
                "the baseline: {self:?} before, {:?} now; open: {:?}",
                Baseline::now(heptap),
                fd_targets()
            )
        });
        eventually(WAIT, back, || Baseline::now(heptap) == self).await;
    }
}

/// The events of `n` connections, each ending with its client leg's CLOSED, grouped by client
/// leg id (the upstream leg carries it as its `net` correlation).
async fn closed_connections(col: &mut UdpCollector, n: usize) -> Vec<Packet> {
    col.until(WAIT, |got| {
        got.iter()
            .filter(|p| event_of(p) == "CLOSED" && p.extra_correlation.is_none())
            .count()
            >= n
    })
    .await
}

/// How a client's read ends.
async fn read_outcome(client: &mut TcpStream) -> Result<Vec<u8>, ErrorKind> {
    let mut got = Vec::new();
    match tokio::time::timeout(WAIT, client.read_to_end(&mut got))
        .await
        .expect("the connection ends within the timeout")
    {
        Ok(_) => Ok(got),
        Err(e) => Err(e.kind()),
    }
}

#[test]
fn a_refused_upstream_resets_every_client_and_leaves_nothing_behind() {
    serial(async || {
        let dead = closed_port().await;
        let dir = Scratch::new();
        let (heptap, mut col) = heptap(dead, "", &dir).await;
        let listen = heptap.listen_addrs()[0];
        let before = Baseline::warmed_up(&heptap, &mut col, None).await;
        // Without heptap the connect itself is refused; through it, the closest thing: a reset.
        let direct = TcpStream::connect(dead)
            .await
            .map(|_| ())
            .map_err(|e| e.kind());
        assert_eq!(direct, Err(ErrorKind::ConnectionRefused));

        const N: usize = 50;
        let mut clients = Vec::new();
        for _ in 0..N {
            // The reset can reach a client before its connect() has looked at the handshake
            // (heptap accepts, fails upstream and resets within microseconds): then connect()
            // reports it.
            clients.push(TcpStream::connect(listen).await.map_err(|e| e.kind()));
        }
        for c in &mut clients {
            let outcome = match c {
                Ok(c) => read_outcome(c).await,
                Err(e) => Err(*e),
            };
            assert_eq!(outcome, Err(ErrorKind::ConnectionReset));
        }
        drop(clients);
        let got = closed_connections(&mut col, N).await;
        let count = |ev: &str, status: &str| {
            got.iter()
                .filter(|p| event_of(p) == ev && part(p, "Status") == status)
                .count()
        };
        assert_eq!(count("ACCEPTED", "SUCCESS"), N);
        // Refused at once: no CONNECT_START, unless a connect was slow (counted).
        assert_eq!(
            count("CONNECT_START", "SUCCESS") as u64,
            stat(&heptap, "upstream_connect_slow").unwrap_or(0)
        );
        assert_eq!(
            count("CONNECTED", "FAILURE"),
            N,
            "the upstream leg's failure"
        );
        assert_eq!(count("CLOSED", "SUCCESS"), N);
        assert_eq!(
            stat(&heptap, "upstream_connect_failed"),
            Some(N as u64 + 1),
            "and the warm-up's"
        );
        before.returns(&heptap).await;
        heptap.shutdown(Stop::Immediate).await;
    });
}

/// Plays `client` against the upstream directly and through heptap; both must end alike.
async fn same_as_direct(
    script: UpstreamScript,
    client: impl AsyncFn(&mut TcpStream) -> Result<Vec<u8>, ErrorKind>,
) -> (Result<Vec<u8>, ErrorKind>, Vec<Packet>) {
    let direct_up = ScriptedUpstream::bind(script).await;
    let mut direct = TcpStream::connect(direct_up.addr).await.unwrap();
    let expected = client(&mut direct).await;
    drop(direct);
    direct_up.stop().await;
    let up = ScriptedUpstream::bind(script).await;
    let dir = Scratch::new();
    let (heptap, mut col) = heptap(up.addr, "", &dir).await;
    let before = Baseline::warmed_up(&heptap, &mut col, Some(&up)).await;
    let mut relayed = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
    let got = client(&mut relayed).await;
    assert_eq!(got, expected, "{script:?}: through heptap as directly");
    drop(relayed);
    let events = closed_connections(&mut col, 1).await;
    let closed: Vec<&Packet> = events.iter().filter(|p| event_of(p) == "CLOSED").collect();
    // An upstream that resets as it accepts can beat heptap's look at its connect: then the
    // upstream leg is a failed connect, traced as CONNECTED FAILURE with no CLOSED of its own.
    let legs = if script == UpstreamScript::ResetAtOnce && failed_connect(&events) {
        1
    } else {
        2
    };
    assert_eq!(
        closed.len(),
        legs,
        "both legs traced as closed: {events:#?}"
    );
    before.returns(&heptap).await;
    heptap.shutdown(Stop::Immediate).await;
    up.stop().await;
    (got, events)
}

/// The upstream leg's CLOSED event.
/// Whether the upstream leg's connect was traced as failed.
fn failed_connect(events: &[Packet]) -> bool {
    events
        .iter()
        .any(|p| event_of(p) == "CONNECTED" && part(p, "Status") == "FAILURE")
}

fn upstream_closed(events: &[Packet]) -> &Packet {
    events
        .iter()
        .find(|p| event_of(p) == "CLOSED" && p.extra_correlation.is_some())
        .expect("the upstream leg's CLOSED")
}

#[test]
fn an_upstream_resetting_at_once_resets_the_client_as_it_would_directly() {
    serial(async || {
        let (got, events) =
            same_as_direct(UpstreamScript::ResetAtOnce, async |c| read_outcome(c).await).await;
        assert_eq!(got, Err(ErrorKind::ConnectionReset));
        // Reset before or after heptap looked at its connect (see same_as_direct).
        if !failed_connect(&events) {
            assert!(
                part(upstream_closed(&events), "Message").starts_with("Read error: "),
                "{:?}",
                part(upstream_closed(&events), "Message")
            );
        }
    });
}

#[test]
fn an_upstream_resetting_mid_stream_resets_the_client_as_it_would_directly() {
    serial(async || {
        let (got, events) = same_as_direct(UpstreamScript::ResetAfter(5), async |c| {
            c.write_all(b"hello").await.unwrap();
            read_outcome(c).await
        })
        .await;
        assert_eq!(got, Err(ErrorKind::ConnectionReset));
        assert!(part(upstream_closed(&events), "Message").starts_with("Read error: "));
    });
}

#[test]
fn an_upstream_half_close_reaches_the_client_and_the_other_way_keeps_flowing() {
    serial(async || {
        let (got, events) = same_as_direct(UpstreamScript::HalfClose, async |c| {
            // The upstream said goodbye and half-closed: the client reads it, then EOF...
            let mut bye = Vec::new();
            c.read_to_end(&mut bye).await.unwrap();
            // ...and can still send: the upstream reads until the client half-closes too.
            c.write_all(b"OPTIONS after the upstream's FIN")
                .await
                .unwrap();
            c.shutdown().await.unwrap();
            Ok(bye)
        })
        .await;
        assert_eq!(got, Ok(b"bye\r\n".to_vec()));
        let closed: Vec<String> = events
            .iter()
            .filter(|p| event_of(p) == "CLOSED")
            .map(|p| part(p, "Message"))
            .collect();
        assert_eq!(closed, ["EOF received", "EOF received"]);
    });
}

#[test]
fn an_upstream_half_close_lets_every_later_client_byte_through() {
    serial(async || {
        let mut up = ScriptedUpstream::bind(UpstreamScript::HalfClose).await;
        let dir = Scratch::new();
        let (heptap, _col) = heptap(up.addr, "", &dir).await;
        let mut c = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
        let mut bye = Vec::new();
        c.read_to_end(&mut bye).await.unwrap();
        assert_eq!(bye, b"bye\r\n");
        let after: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        c.write_all(&after).await.unwrap();
        c.shutdown().await.unwrap();
        let received = tokio::time::timeout(WAIT, up.received.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            received == after,
            "what the client sent after the upstream's FIN arrived whole"
        );
        heptap.shutdown(Stop::Immediate).await;
    });
}

#[test]
fn a_stalled_upstream_is_closed_on_both_legs_after_the_idle_timeout() {
    serial(async || {
        let up = ScriptedUpstream::bind(UpstreamScript::Stall).await;
        let dir = Scratch::new();
        let (heptap, mut col) = heptap(up.addr, "idle_timeout = \"300ms\"", &dir).await;
        let before = Baseline::warmed_up(&heptap, &mut col, Some(&up)).await;
        let mut c = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
        c.write_all(b"INVITE").await.unwrap();
        // Directly, this client would wait forever; heptap ends it after idle_timeout.
        assert_eq!(
            read_outcome(&mut c).await,
            Ok(Vec::new()),
            "closed, not reset"
        );
        drop(c);
        let events = closed_connections(&mut col, 1).await;
        let reasons: Vec<String> = events
            .iter()
            .filter(|p| event_of(p) == "CLOSED")
            .map(|p| part(p, "Message"))
            .collect();
        assert!(
            reasons.iter().any(|r| r == "Timeout on no traffic"),
            "{reasons:?}"
        );
        up.release();
        before.returns(&heptap).await;
        heptap.shutdown(Stop::Immediate).await;
    });
}

#[test]
fn one_way_traffic_lasting_longer_than_the_idle_timeout_is_not_cut() {
    serial(async || {
        let mut up = ScriptedUpstream::bind(UpstreamScript::Sink).await;
        let dir = Scratch::new();
        let (heptap, mut col) = heptap(up.addr, "idle_timeout = \"300ms\"", &dir).await;
        let mut c = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
        // A client that only talks (the upstream only listens): a byte every 50 ms for 1.5 s is
        // traffic all along, so the idle timeout never applies.
        let mut sent = Vec::new();
        for i in 0..30u8 {
            c.write_all(&[b'a' + i % 26]).await.unwrap();
            sent.push(b'a' + i % 26);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.shutdown().await.unwrap();
        let received = tokio::time::timeout(WAIT, up.received.recv())
            .await
            .unwrap()
            .unwrap();
        let events = closed_connections(&mut col, 1).await;
        let reasons: Vec<(String, String)> = events
            .iter()
            .filter(|p| event_of(p) == "CLOSED")
            .map(|p| (correlation(p), part(p, "Message")))
            .collect();
        assert_eq!(
            received, sent,
            "every byte reached the upstream; CLOSED: {reasons:?}"
        );
        assert!(
            reasons.iter().all(|(_, r)| r != "Timeout on no traffic"),
            "{reasons:?}"
        );
        heptap.shutdown(Stop::Immediate).await;
    });
}

#[test]
fn a_black_holed_upstream_fails_at_connect_timeout_and_the_client_is_reset() {
    serial(async || {
        let hole = BlackHole::bind_at("127.0.0.1:0".parse().unwrap()).await;
        let dir = Scratch::new();
        let (heptap, mut col) = heptap(hole.addr, "connect_timeout = \"300ms\"", &dir).await;
        let before = Baseline::warmed_up(&heptap, &mut col, None).await;
        let mut c = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
        assert_eq!(read_outcome(&mut c).await, Err(ErrorKind::ConnectionReset));
        drop(c);
        let events = closed_connections(&mut col, 1).await;
        let failed = events
            .iter()
            .find(|p| event_of(p) == "CONNECTED")
            .expect("the upstream leg's CONNECTED");
        assert_eq!(part(failed, "Status"), "FAILURE");
        before.returns(&heptap).await;
        heptap.shutdown(Stop::Immediate).await;
    });
}

/// The proxy is down and a phone registers: the REGISTER it sent is what an operator looks for,
/// so it is traced (proto 1, as if relayed, joined to the connection's events by the `net`
/// correlation) before the client is reset; one message's worth, no more.
#[test]
fn the_sip_a_client_sent_before_the_upstream_connect_failed_is_traced_with_the_connection() {
    serial(async || {
        let dead = closed_port().await;
        let dir = Scratch::new();
        let col = UdpCollector::bind().await;
        let heptap = run(config(
            &listener("tcp", dead, "sip_trace_id = \"tid\"", None, ""),
            col.addr,
            "[tracer]\ntrace_id = \"[tid]uri=hep:col\"",
            &dir,
        ))
        .await;
        let mut col = col;
        let register = "REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.9:5060;branch=z9hG4bK1\r\n\
                        From: <sip:alice@example.org>;tag=1\r\nTo: <sip:alice@example.org>\r\n\
                        Call-ID: down-1@10.0.0.9\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
        let mut client = TcpStream::connect(heptap.listen_addrs()[0]).await.unwrap();
        let me = client.local_addr().unwrap();
        // Sent at once, as a phone does: heptap is still connecting (or has just failed).
        let _ = client.write_all(register.as_bytes()).await;
        assert_eq!(
            read_outcome(&mut client).await,
            Err(ErrorKind::ConnectionReset)
        );
        let got = closed_connections(&mut col, 1).await;
        let accepted = got
            .iter()
            .find(|p| event_of(p) == "ACCEPTED")
            .expect("the client leg's ACCEPTED");
        let sip: Vec<&Packet> = got.iter().filter(|p| p.proto_type == Some(1)).collect();
        assert_eq!(sip.len(), 1, "{got:#?}");
        assert_eq!(sip[0].payload.as_deref(), Some(register.as_bytes()));
        assert_eq!(sip[0].src_port, Some(me.port()));
        assert_eq!(correlation(sip[0]), "down-1@10.0.0.9");
        assert_eq!(
            heptap_tests::events::net_correlation(sip[0]),
            Some(correlation(accepted)),
            "joined to the connection's events"
        );
        // Traced before the client leg's CLOSED.
        let at = |f: &dyn Fn(&Packet) -> bool| got.iter().position(f).unwrap();
        assert!(
            at(&|p| p.proto_type == Some(1))
                < at(&|p| event_of(p) == "CLOSED" && p.extra_correlation.is_none())
        );
        assert_eq!(stat(&heptap, "sip_traced"), Some(1));
        heptap.shutdown(Stop::Immediate).await;
    });
}
