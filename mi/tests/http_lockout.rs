//! The HTTP MI under the lock-out attacks of issue 16, on 127.0.0.1 with a short
//! `request_timeout`: clients that keep requests unfinished on every connection slot, over
//! HTTP/2 (a new unfinished stream after every 408) and HTTP/1.1 (a new connection after every
//! 408). An operator's probe must be answered within 2 x `request_timeout` all along.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::*;
use heptap_testkit::eventually;
use hyper::body::{Body, Bytes, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The request timeout of the HTTP/2 attack: short, so it cycles many times in a few seconds.
const H2_TIMEOUT: Duration = Duration::from_millis(500);
/// The request timeout of the HTTP/1.1 attack: under pressure heptap closes a holder after a
/// tenth of it, and 256 holders reconnecting at once are a load of their own on this machine.
const H1_TIMEOUT: Duration = Duration::from_secs(2);
/// How many probes each attack faces.
const PROBES: usize = 5;

/// What the attackers saw, for the waits between probes and the failure messages.
#[derive(Debug, Default)]
struct Seen {
    /// 408 answers received.
    timeouts: AtomicUsize,
    /// Connections opened.
    connections: AtomicUsize,
}

/// A request body that sends half a JSON object and then never ends.
struct Unfinished {
    /// Whether the half object went out.
    sent: bool,
}

impl Body for Unfinished {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent {
            // Never woken: the stream stays open until the request is dropped.
            return Poll::Pending;
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{\"jsonrpc\"")))))
    }
}

/// heptap's MI on a thread and runtime of its own, as in heptap (the control plane runs on the
/// main thread), so the attackers' tasks in the test runtime do not delay it.
struct MiThread {
    /// Where HTTP listens.
    addr: SocketAddr,
    /// Stops it.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The thread.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MiThread {
    fn start(request_timeout: Duration) -> MiThread {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut h = Harness::start_with(TestControl::default(), |s| {
                    s.request_timeout = request_timeout;
                })
                .await;
                addr_tx
                    .send(h.running.as_ref().unwrap().http_addr.unwrap())
                    .unwrap();
                let _ = stopped.await;
                h.stop().await;
            });
        });
        let addr = addr_rx.recv_timeout(DEADLINE).unwrap();
        MiThread {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for MiThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP/2 attacker: a connection that always keeps one unfinished stream, opening a new
/// one after every 408, and a new connection whenever heptap closes it.
async fn h2_attacker(addr: SocketAddr, seen: Arc<Seen>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let Ok(tcp) = TcpStream::connect(addr).await else {
            continue;
        };
        seen.connections.fetch_add(1, Ordering::SeqCst);
        let Ok((mut send, conn)) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await
        else {
            continue;
        };
        let driver = tokio::spawn(conn);
        loop {
            let request = http::Request::post("/mi")
                .header("host", "127.0.0.1")
                .header("content-type", "application/json")
                .body(Unfinished { sent: false })
                .unwrap();
            let answer = tokio::select! {
                () = stop.cancelled() => break,
                answer = send.send_request(request) => answer,
            };
            match answer {
                Ok(response) if response.status() == 408 => {
                    seen.timeouts.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                // heptap closed the connection: open another.
                Err(_) => break,
            }
            if send.ready().await.is_err() {
                break;
            }
        }
        driver.abort();
    }
}

/// One HTTP/1.1 holder: half a request (half a head, half a body, or nothing), held until
/// heptap answers 408 or closes; then again on a new connection.
async fn h1_holder(kind: usize, addr: SocketAddr, seen: Arc<Seen>, stop: CancellationToken) {
    let half = match kind % 3 {
        0 => "POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le".to_owned(),
        1 => "POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"jsonrpc\""
            .to_owned(),
        _ => String::new(),
    };
    while !stop.is_cancelled() {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            continue;
        };
        seen.connections.fetch_add(1, Ordering::SeqCst);
        if s.write_all(half.as_bytes()).await.is_err() {
            continue;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = tokio::select! {
                () = stop.cancelled() => return,
                n = s.read(&mut buf) => n,
            };
            match n {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.starts_with(b"HTTP/1.1 408") {
                seen.timeouts.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
}

/// An operator's `version` over a new HTTP/1.1 connection; how long the answer took (given up
/// after 3 x `limit`).
async fn probe(addr: SocketAddr, limit: Duration) -> Result<Duration, String> {
    let t = Instant::now();
    let r = tokio::time::timeout(
        limit * 3,
        http_raw_unbounded(
            addr,
            &post("/mi", r#"{"jsonrpc":"2.0","id":1,"method":"version"}"#),
        ),
    )
    .await;
    match r {
        Ok(reply) if status(&reply) == "HTTP/1.1 200 OK" => Ok(t.elapsed()),
        Ok(reply) => Err(format!("answered {reply:?}")),
        Err(_) => Err(format!("no answer within {:?}", limit * 3)),
    }
}

/// [`http_raw`] without its panics: a refused or reset connection is an empty answer.
async fn http_raw_unbounded(addr: SocketAddr, request: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return String::new();
    };
    if s.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

impl Seen {
    /// How far the attack went: every 408 and every new connection.
    fn progress(&self) -> usize {
        self.timeouts.load(Ordering::SeqCst) + self.connections.load(Ordering::SeqCst)
    }
}

/// Runs `PROBES` probes while the attack goes on, each after the attackers have made `cycle`
/// more steps (408s, new connections) since the previous one; returns every probe's outcome.
async fn probe_during(
    addr: SocketAddr,
    seen: &Seen,
    cycle: usize,
    limit: Duration,
) -> Vec<Result<Duration, String>> {
    let mut outcomes = Vec::new();
    for _ in 0..PROBES {
        let before = seen.progress();
        eventually(DEADLINE, "the attack to go on", || {
            seen.progress() >= before + cycle
        })
        .await;
        outcomes.push(probe(addr, limit).await);
    }
    outcomes
}

/// Every probe answered within `limit` (2 x `request_timeout`, the issue's criterion).
fn assert_probes_answered(outcomes: &[Result<Duration, String>], seen: &Seen, limit: Duration) {
    eprintln!(
        "probes: {outcomes:?}; attackers saw {} timeouts on {} connections",
        seen.timeouts.load(Ordering::SeqCst),
        seen.connections.load(Ordering::SeqCst)
    );
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            Ok(took) => assert!(
                *took < limit,
                "probe {i} took {took:?}, over 2 x request_timeout: {outcomes:?}"
            ),
            Err(e) => panic!("probe {i}: {e}; all: {outcomes:?}"),
        }
    }
}

/// Starts an MI with `request_timeout`, sets `count` attackers on it (each given its number,
/// the MI's address, the shared counters and the stop token), probes it `PROBES` times (each
/// after `cycle` more attack steps), stops the attack and checks every probe was answered
/// within 2 x `request_timeout`.
async fn probes_under_attack<A, F>(
    request_timeout: Duration,
    count: usize,
    cycle: usize,
    attacker: A,
) where
    A: Fn(usize, SocketAddr, Arc<Seen>, CancellationToken) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mi = MiThread::start(request_timeout);
    let seen = Arc::new(Seen::default());
    let stop = CancellationToken::new();
    let attackers: Vec<_> = (0..count)
        .map(|i| tokio::spawn(attacker(i, mi.addr, seen.clone(), stop.clone())))
        .collect();
    let outcomes = probe_during(mi.addr, &seen, cycle, request_timeout * 2).await;
    stop.cancel();
    for a in attackers {
        let _ = tokio::time::timeout(DEADLINE, a).await;
    }
    assert_probes_answered(&outcomes, &seen, request_timeout * 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_answered_while_64_http2_connections_keep_a_stream_unfinished() {
    probes_under_attack(H2_TIMEOUT, 64, 128, |_, addr, seen, stop| {
        h2_attacker(addr, seen, stop)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_answered_while_http1_holders_reconnect_after_every_408() {
    // Four times as many holders as connection slots, so most always wait for one.
    probes_under_attack(H1_TIMEOUT, 256, 256, h1_holder).await;
}

/// Writes `bytes` one at a time, `every` apart (a slowloris client).
async fn trickle(
    s: &mut (impl tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
    every: Duration,
) -> std::io::Result<()> {
    let mut tick = tokio::time::interval(every);
    for b in bytes {
        tick.tick().await;
        s.write_all(std::slice::from_ref(b)).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_trickled_request_gets_408_at_request_timeout_from_its_first_byte() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let h = Harness::start_with(TestControl::default(), |s| s.request_timeout = TIMEOUT).await;
    let addr = h.running.as_ref().unwrap().http_addr.unwrap();
    let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
    // The head takes most of the timeout, then the body never ends: the deadline counts from
    // the head's first byte, not from the end of the head (nor from the last byte).
    let head = b"POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                 Content-Length: 1000\r\n\r\n";
    let every = TIMEOUT * 7 / 10 / head.len() as u32;
    let t = Instant::now();
    let mut reply = Vec::new();
    let sending = async {
        trickle(&mut wr, head, every).await?;
        trickle(&mut wr, &[b' '; 1000], every).await
    };
    let reading = tokio::time::timeout(DEADLINE, rd.read_to_end(&mut reply));
    tokio::pin!(sending, reading);
    let mut sent = false;
    loop {
        tokio::select! {
            // Writes fail once heptap has closed: the reply is still to be read.
            done = &mut sending, if !sent => {
                assert!(done.is_err(), "the whole request went out: it was never cut");
                sent = true;
            }
            read = &mut reading => {
                // A reset after the reply (our late bytes) is not the test's concern.
                let _ = read.unwrap();
                break;
            }
        }
    }
    let took = t.elapsed();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        took >= TIMEOUT * 9 / 10 && took < TIMEOUT * 14 / 10,
        "408 after {took:?}, request_timeout {TIMEOUT:?}"
    );
}
