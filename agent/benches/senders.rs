//! Packets per second through one UDP and one TCP sender to a local sink, against a plain loop
//! that writes the same bytes to the same sink, in the same run (`cargo bench -p heptap --bench
//! senders`). The machine is small and shared, so the ratio is the figure to read, not the
//! absolute rates; each variant runs several rounds, interleaved, and the median is reported.
//!
//! - plain UDP: a blocking `send` per pre-encoded packet on a connected socket.
//! - plain TCP: a blocking `write_all` per pre-encoded packet (what a naive agent does), and the
//!   same through a 64 KiB `BufWriter` (the best a single thread can do with no queue at all).
//! - sender: `offer` of the `Arc<TraceMessage>` for every packet from the bench thread, timed
//!   until the destination's `sent` counter says all of them are in the kernel; encoding,
//!   queueing and batching are inside the measurement.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup may unwrap

use std::io::{BufWriter, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use heptap::Stats;
use heptap::sender::{self, DestinationSpec, FileOwner, Limits, Offer};
use heptap_config::{Destination, HepId, Transport};
use heptap_hep::{Encoder, TraceMessage};

/// Packets per UDP round and per TCP round.
const UDP_PACKETS: usize = 20_000;
const TCP_PACKETS: usize = 50_000;
/// Rounds per variant; the median is reported.
const ROUNDS: usize = 21;

/// A typical traced SIP request (~600 bytes of HEP3).
fn message(seq: usize) -> Arc<TraceMessage> {
    let payload = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK{seq:08}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag={seq}\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: bench-{seq}@10.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@10.0.0.1:5060;transport=tcp>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: 150\r\n\r\n\
         v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    );
    let src: SocketAddr = "10.0.0.1:5060".parse().unwrap();
    let dst: SocketAddr = "10.0.0.2:5060".parse().unwrap();
    Arc::new(
        TraceMessage::new(1, 6, src, dst, 1_700_000_000, (seq % 1_000_000) as u32)
            .correlation(format!("bench-{seq}@10.0.0.1"))
            .payload(payload.into_bytes()),
    )
}

/// Discards datagrams until told to stop.
fn udp_sink() -> (SocketAddr, Arc<AtomicBool>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !flag.load(Ordering::Relaxed) {
            let _ = socket.recv(&mut buf);
        }
    });
    (addr, stop)
}

/// Reads and discards every connection's bytes.
fn tcp_sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

fn spec(addr: SocketAddr, transport: Transport, packets: usize) -> DestinationSpec {
    let id: HepId = format!("[bench_{transport}] {addr}; transport={transport}")
        .parse()
        .unwrap();
    DestinationSpec {
        name: id.name.clone(),
        destination: Destination::Hep(id),
        encoder: Encoder::default(),
        limits: Limits {
            // Room for the whole run: the figure is throughput, not drop behaviour.
            queue_packets: packets,
            queue_bytes: 1 << 30,
            ..Limits::default()
        },
        file_owner: FileOwner::default(),
    }
}

/// Offers every message and waits until the destination has sent them all; packets/s.
fn through_sender(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    transport: Transport,
    msgs: &[Arc<TraceMessage>],
) -> f64 {
    let stats = Stats::new();
    let (sender, task) = {
        let _enter = rt.enter();
        sender::spawn(spec(addr, transport, msgs.len()), &stats).unwrap()
    };
    let sent = stats
        .lookup(&format!("hep_bench_{}", transport.as_str()), "sent")
        .unwrap();
    // Connected before the clock starts, as the plain loop's socket is.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sender.state().connected {
        assert!(Instant::now() < deadline, "sender did not connect");
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    for m in msgs {
        assert_eq!(sender.offer(m), Offer::Queued);
    }
    while sent.get() < msgs.len() as u64 {
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed();
    rt.block_on(task.shutdown(Duration::from_secs(1)));
    msgs.len() as f64 / elapsed.as_secs_f64()
}

fn plain_udp(addr: SocketAddr, frames: &[Vec<u8>]) -> f64 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(addr).unwrap();
    let start = Instant::now();
    for f in frames {
        socket.send(f).unwrap();
    }
    frames.len() as f64 / start.elapsed().as_secs_f64()
}

fn plain_tcp(addr: SocketAddr, frames: &[Vec<u8>], buffered: bool) -> f64 {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let start = Instant::now();
    if buffered {
        let mut w = BufWriter::with_capacity(64 * 1024, &stream);
        for f in frames {
            w.write_all(f).unwrap();
        }
        w.flush().unwrap();
    } else {
        let mut w = &stream;
        for f in frames {
            w.write_all(f).unwrap();
        }
    }
    frames.len() as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Rates of each variant over the rounds, and the ratio sender / plain of each round.
#[derive(Default)]
struct Pairs {
    plain: Vec<f64>,
    sender: Vec<f64>,
    ratio: Vec<f64>,
}

impl Pairs {
    fn push(&mut self, plain: f64, sender: f64) {
        self.plain.push(plain);
        self.sender.push(sender);
        self.ratio.push(sender / plain);
    }

    fn row(self, path: &str) -> String {
        let (lo, hi) = self
            .ratio
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        format!(
            "| {path} | {:.0} | {:.0} | {:.2} | {lo:.2}..{hi:.2} |",
            median(self.plain),
            median(self.sender),
            median(self.ratio),
        )
    }
}

fn main() {
    // `cargo test --benches` passes --test: a quick smoke run is enough then.
    let quick = std::env::args().any(|a| a == "--test");
    let (udp_n, tcp_n, rounds) = if quick {
        (2_000, 2_000, 1)
    } else {
        (UDP_PACKETS, TCP_PACKETS, ROUNDS)
    };
    let workers = std::env::var("HEPTAP_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();

    let msgs: Vec<Arc<TraceMessage>> = (0..tcp_n.max(udp_n)).map(message).collect();
    let frames: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| {
            let mut out = Vec::new();
            Encoder::default().encode(m, &mut out).unwrap();
            out
        })
        .collect();
    let frame_len = frames.iter().map(Vec::len).sum::<usize>() / frames.len();

    let (udp_addr, udp_stop) = udp_sink();
    let tcp_addr = tcp_sink();

    // Each round runs a plain loop and the sender back to back (alternating which goes first),
    // so both see the same background load; the ratio is taken per round.
    let (mut udp, mut tcp, mut tcp_buffered) =
        (Pairs::default(), Pairs::default(), Pairs::default());
    let started = Instant::now();
    for round in 0..rounds {
        let plain_first = round % 2 == 0;
        let (p, s) = if plain_first {
            let p = plain_udp(udp_addr, &frames[..udp_n]);
            (
                p,
                through_sender(&rt, udp_addr, Transport::Udp, &msgs[..udp_n]),
            )
        } else {
            let s = through_sender(&rt, udp_addr, Transport::Udp, &msgs[..udp_n]);
            (plain_udp(udp_addr, &frames[..udp_n]), s)
        };
        udp.push(p, s);
        let (p, b, s) = if plain_first {
            let p = plain_tcp(tcp_addr, &frames[..tcp_n], false);
            let b = plain_tcp(tcp_addr, &frames[..tcp_n], true);
            (
                p,
                b,
                through_sender(&rt, tcp_addr, Transport::Tcp, &msgs[..tcp_n]),
            )
        } else {
            let s = through_sender(&rt, tcp_addr, Transport::Tcp, &msgs[..tcp_n]);
            let b = plain_tcp(tcp_addr, &frames[..tcp_n], true);
            (plain_tcp(tcp_addr, &frames[..tcp_n], false), b, s)
        };
        tcp.push(p, s);
        tcp_buffered.push(b, s);
    }
    udp_stop.store(true, Ordering::Relaxed);

    println!(
        "HEP senders: {frame_len}-byte HEP3 packets, {rounds} rounds of {udp_n} UDP / {tcp_n} TCP \
         packets, {workers} runtime workers, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "| path | plain loop (pkt/s, median) | sender (pkt/s, median) | sender / plain (median) | range |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!("{}", udp.row("UDP: send() per packet"));
    println!("{}", tcp.row("TCP: write_all() per packet"));
    println!("{}", tcp_buffered.row("TCP: 64 KiB BufWriter"));
}
