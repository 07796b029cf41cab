//! Writers that die mid-request on the shared MI FIFO (issue 16, hole 3): each costs at most
//! its own request. The request is answered with an error where it named a reply FIFO, the
//! requests written after it are answered (a poller, another client, both framings), and a
//! request that stops arriving is given up `request_timeout` after its first byte, however many
//! bytes others keep writing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use heptap_hep::NetProto;
use heptap_testkit::write_and_die;
use nix::sys::stat::Mode;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// The reply a 3.x request cut short gets.
const INCOMPLETE: &str = r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error","data":"incomplete request"},"id":null}"#;

/// A client's reply FIFO, created and opened for reading before its request is written.
struct ReplyFifo(pipe::Receiver);

impl ReplyFifo {
    fn open(h: &Harness, name: &str) -> ReplyFifo {
        let path = h.reply_dir.join(name);
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).unwrap();
        ReplyFifo(pipe::OpenOptions::new().open_receiver(&path).unwrap())
    }

    /// Everything written to it until heptap closes it, within `within`.
    async fn reply(mut self, within: Duration, what: &str) -> String {
        let mut out = String::new();
        tokio::time::timeout(within, self.0.read_to_string(&mut out))
            .await
            .unwrap_or_else(|_| panic!("{what}: no reply within {within:?}"))
            .unwrap();
        out
    }
}

/// A `tcp_trace` request with id `id` from another client is answered (`after`: for the
/// failure message).
async fn assert_answered(h: &Harness, id: usize, after: &str) {
    let reply = h
        .fifo_json(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tcp_trace"}}"#
        ))
        .await;
    assert_eq!(
        reply,
        format!(r#"{{"jsonrpc":"2.0","result":{{"TCP tracing":"on"}},"id":{id}}}"#),
        "{after}"
    );
}

/// `<method> off` (`tls_trace`, `ws_trace`...) from another client is answered OK.
async fn switch_off(h: &Harness, method: &str) {
    let request = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":["off"]}}"#);
    assert_eq!(
        h.fifo_json(&request).await,
        r#"{"jsonrpc":"2.0","result":"OK","id":1}"#,
        "{method} off"
    );
}

/// `trace mode=off` as a poller sends it, answered on `reply`.
fn poll(reply: &str, id: usize) -> String {
    format!(r#":{reply}:{{"jsonrpc":"2.0","method":"trace","params":{{"mode":"off"}},"id":{id}}}"#)
}

#[tokio::test]
async fn half_a_3x_request_from_a_dead_client_costs_only_that_request() {
    let timeout = Duration::from_secs(3);
    let h = Harness::start_with(TestControl::default(), |s| s.request_timeout = timeout).await;
    let dead = ReplyFifo::open(&h, "dead");
    write_and_die(&h.fifo, r#":dead:{"jsonrpc":"2.0","method":"ps","id":"#).await;
    // A poller switching tracing off, and another client, both after the dead one: each is
    // executed and answered, well within the request timeout.
    let mut slowest = Duration::ZERO;
    for i in 0..6 {
        let t = Instant::now();
        let name = format!("poll_{i}");
        let reply = ReplyFifo::open(&h, &name);
        h.control.global.store(true, Ordering::SeqCst);
        write_fifo(&h.fifo, poll(&name, i).as_bytes()).await;
        assert_eq!(
            reply.reply(timeout, &name).await,
            format!(r#"{{"jsonrpc":"2.0","result":"OK","id":{i}}}"#)
        );
        assert!(
            !h.control.global.load(Ordering::SeqCst),
            "poll {i} executed"
        );
        assert!(t.elapsed() < timeout, "poll {i} took {:?}", t.elapsed());
        slowest = slowest.max(t.elapsed());
        assert_answered(&h, i, "another client").await;
    }
    // The dead client named its reply FIFO: it is told its request was incomplete.
    assert_eq!(dead.reply(DEADLINE, "the dead client").await, INCOMPLETE);
    eprintln!("6 polls after a dead writer, each answered within {slowest:?}");
}

#[tokio::test]
async fn a_request_is_given_up_request_timeout_after_its_first_byte_though_bytes_keep_coming() {
    let timeout = Duration::from_millis(500);
    let h = Harness::start_with(TestControl::default(), |s| s.request_timeout = timeout).await;
    let slow = ReplyFifo::open(&h, "slow");
    let first_byte = Instant::now();
    write_fifo(&h.fifo, br#":slow:{"jsonrpc":"2.0","#).await;
    // Blanks are valid inside the JSON value: the request stays unfinished while they come,
    // one every 50 ms for twice the timeout.
    let trickle = {
        let fifo = h.fifo.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(50));
            for _ in 0..20 {
                every.tick().await;
                write_fifo(&fifo, b" ").await;
            }
        })
    };
    assert_eq!(slow.reply(DEADLINE, "the slow request").await, INCOMPLETE);
    let answered = first_byte.elapsed();
    assert!(
        answered < timeout * 2 && !trickle.is_finished(),
        "answered {answered:?} after its first byte, while bytes were still coming"
    );
    assert!(answered >= timeout, "{answered:?}");
    eprintln!(
        "answered {answered:?} after its first byte, timeout {timeout:?}, bytes still coming"
    );
    trickle.await.unwrap();
    // What the trickle left is blanks; the next request is answered at once.
    assert_answered(&h, 1, "after the trickle").await;
}

#[tokio::test]
async fn a_dead_2x_request_does_not_swallow_the_next_request_as_its_parameters() {
    let h = Harness::start_with(TestControl::default(), |s| {
        s.request_timeout = Duration::from_secs(3)
    })
    .await;
    let dead = ReplyFifo::open(&h, "dead2");
    // No empty line: the request never ends.
    write_and_die(&h.fifo, ":sip_trace:dead2\ntid2\n").await;
    // A 2.x request from another client: executed with its own parameter, not the dead one's.
    let t = Instant::now();
    assert_eq!(
        h.fifo_raw("r1", b":tcp_trace:r1\noff\n\n").await,
        "200 OK\n\n"
    );
    assert!(!h.control.net_on(NetProto::Tcp));
    assert!(h.control.trace_id_on("tid2"), "the dead request ran");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(
        dead.reply(DEADLINE, "the dead 2.x client").await,
        "400 incomplete request in command 'sip_trace'\n"
    );
    // Again, followed by a 3.x request (no newline at all, as opensips-cli writes it).
    let dead = ReplyFifo::open(&h, "dead3");
    write_and_die(&h.fifo, ":sip_trace:dead3\ntid2\n").await;
    switch_off(&h, "tls_trace").await;
    assert!(!h.control.net_on(NetProto::Tls));
    assert!(h.control.trace_id_on("tid2"));
    assert_eq!(
        dead.reply(DEADLINE, "the second dead 2.x client").await,
        "400 incomplete request in command 'sip_trace'\n"
    );
}

#[tokio::test]
async fn a_2x_header_cut_mid_line_does_not_swallow_the_next_request() {
    let h = Harness::start_with(TestControl::default(), |s| {
        s.request_timeout = Duration::from_secs(3)
    })
    .await;
    // Its reply FIFO's name was cut short: nothing can be answered, nothing is executed.
    write_and_die(&h.fifo, ":sip_trace:dea").await;
    switch_off(&h, "ws_trace").await;
    assert!(!h.control.net_on(NetProto::Ws));
    assert!(h.control.global.load(Ordering::SeqCst));
}

#[tokio::test]
async fn dead_writers_in_every_state_each_cost_only_their_own_request() {
    let h = Harness::start_with(TestControl::default(), |s| {
        s.request_timeout = Duration::from_secs(3)
    })
    .await;
    // Where a writer can die: in the header, after it, inside a string, after a backslash, in
    // a number, in a literal, between members, inside nested parameters.
    let cuts = [
        ":",
        ":de",
        ":dead:",
        r#":dead:{"#,
        r#":dead:{"jsonrpc"#,
        r#":dead:{"jsonrpc""#,
        r#":dead:{"jsonrpc":"2.0","method":"p"#,
        r#":dead:{"jsonrpc":"2.0","method":"p\"#,
        r#":dead:{"jsonrpc":"2.0","method":"ps","id":12"#,
        r#":dead:{"jsonrpc":"2.0","method":"ps","id":tr"#,
        r#":dead:{"jsonrpc":"2.0","method":"ps","#,
        r#":dead:{"jsonrpc":"2.0","method":"get_statistics","params":[["a","#,
        r#":dead:[{"jsonrpc":"2.0"}"#,
    ];
    for (i, cut) in cuts.iter().enumerate() {
        write_and_die(&h.fifo, cut).await;
        let t = Instant::now();
        assert_answered(&h, i, cut).await;
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "after {cut:?}: {:?}",
            t.elapsed()
        );
    }
}
