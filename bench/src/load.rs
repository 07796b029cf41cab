//! The measurements: bulk throughput, SIP request/response at a fixed rate and at the
//! maximum rate, connection rate, and memory per idle connection.
//!
//! Every loop is bounded in time (and connection counts in number); every measurement reports
//! the CPU time the relay used and, with tracing on, how many HEP packets reached the sink
//! meanwhile and the CPU time the sink used to take them (kept apart from the relay's).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::Error;
use crate::echo::BULK_PREAMBLE;
use crate::procfs::{CpuMeter, rss_kib_sum};
use crate::sink;
use crate::sip::{REPLY_SIZE, request};
use crate::target::{BoxStream, MessageReader, Target};

/// Longest a measurement may run past its nominal duration (draining replies, closing).
const GRACE: Duration = Duration::from_secs(15);

/// What is watched during a measurement besides the load itself.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// The relay's processes (one, or a master and its workers), whose CPU time together is
    /// reported (none for the direct target).
    pub cpu_pids: Vec<u32>,
    /// The HEP sink's process, whose CPU time is reported on its own (tracing-on targets).
    pub sink_pid: Option<u32>,
    /// The HEP sink's stats file, whose packet count is reported (tracing-on targets).
    pub hep_stats: Option<PathBuf>,
}

/// What the probe saw over one measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// CPU seconds (user + system) the relay used during the measurement.
    pub relay_cpu_s: Option<f64>,
    /// CPU seconds the HEP sink used meanwhile: what receiving the relay's HEP cost, which
    /// a collector on another host would pay, so not in `relay_cpu_s`.
    pub sink_cpu_s: Option<f64>,
    /// HEP packets the sink received during the measurement.
    pub hep_packets: Option<u64>,
}

/// A started probe.
#[derive(Debug)]
struct Probing {
    /// The relay's CPU time at the start.
    cpu: CpuMeter,
    /// The sink's.
    sink_cpu: CpuMeter,
    /// HEP packet count at the start.
    hep: Option<u64>,
    /// Where the packet count is read again.
    hep_stats: Option<PathBuf>,
}

impl Probe {
    fn start(&self) -> Probing {
        Probing {
            cpu: CpuMeter::start(&self.cpu_pids),
            sink_cpu: CpuMeter::start(self.sink_pid.as_slice()),
            hep: self.hep_stats.as_deref().and_then(sink::read_packets),
            hep_stats: self.hep_stats.clone(),
        }
    }
}

impl Probing {
    async fn finish(self) -> ProbeResult {
        let relay_cpu_s = self.cpu.used();
        let sink_cpu_s = self.sink_cpu.used();
        let hep_packets = match (&self.hep_stats, self.hep) {
            (Some(path), Some(before)) => {
                // Packets still in flight, and the sink's next stats write.
                tokio::time::sleep(sink::STATS_PERIOD * 4).await;
                sink::read_packets(path).map(|after| after.saturating_sub(before))
            }
            _ => None,
        };
        ProbeResult {
            relay_cpu_s,
            sink_cpu_s,
            hep_packets,
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

fn histogram() -> Result<Histogram<u64>, Error> {
    // Nanoseconds, 1 ns to 2 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000_000, 3)
        .map_err(|e| Error::Protocol(format!("histogram: {e}")))
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

fn latency(h: &Histogram<u64>) -> Latency {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Latency {
        count: h.len(),
        p50_us: us(0.5),
        p90_us: us(0.9),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: h.max() as f64 / 1000.0,
    }
}

/// Bulk throughput over one connection.
#[derive(Debug, Clone, Serialize)]
pub struct Bulk {
    /// Bytes the responder counted (equal to what was sent).
    pub bytes: u64,
    /// From the first byte written to the responder's count read back.
    pub secs: f64,
    /// `bytes / secs`, in MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Relay CPU and HEP packets.
    pub probe: ProbeResult,
}

/// Writes 64 KiB chunks of non-SIP bytes for `duration`, half-closes, and waits for the
/// responder to report how many bytes it received: the time includes draining every buffer
/// on the way.
pub async fn bulk(target: &Target, duration: Duration, probe: &Probe) -> Result<Bulk, Error> {
    let mut stream = target.connect().await?;
    let chunk = vec![0x5a_u8; 64 * 1024];
    let probing = probe.start();
    let t0 = Instant::now();
    stream.write_all(BULK_PREAMBLE).await?;
    let mut sent = 0u64;
    while t0.elapsed() < duration {
        stream.write_all(&chunk).await?;
        sent += chunk.len() as u64;
    }
    stream.shutdown().await?;
    let mut count = [0u8; 8];
    tokio::time::timeout(GRACE, stream.read_exact(&mut count))
        .await
        .map_err(|_| Error::Timeout("the bulk byte count".into()))??;
    let secs = t0.elapsed().as_secs_f64();
    let bytes = u64::from_be_bytes(count);
    if bytes != sent {
        return Err(Error::Protocol(format!(
            "sent {sent} bytes, the responder counted {bytes}"
        )));
    }
    Ok(Bulk {
        bytes,
        secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        probe: probing.finish().await,
    })
}

/// Opens `n` connections one after the other and does one request/response on each, so the
/// measurement starts with every connection set up end to end.
async fn open_warm(target: &Target, n: usize) -> Result<Vec<BoxStream>, Error> {
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let mut reader = MessageReader::new(target.connect().await?);
        round_trip(&mut reader, &request(conn_id(i), 0)).await?;
        streams.push(reader.into_inner());
    }
    Ok(streams)
}

fn conn_id(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

async fn round_trip(reader: &mut MessageReader<BoxStream>, req: &[u8]) -> Result<(), Error> {
    reader.get_mut().write_all(req).await?;
    check_reply(&reader.next().await?)
}

fn check_reply(msg: &[u8]) -> Result<(), Error> {
    if msg.len() == REPLY_SIZE && msg.starts_with(b"SIP/2.0 200 ") {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "unexpected reply of {} bytes: {:?}",
            msg.len(),
            String::from_utf8_lossy(&msg[..msg.len().min(40)])
        )))
    }
}

/// Request/response at a fixed rate.
#[derive(Debug, Clone, Serialize)]
pub struct RrFixed {
    /// Connections the load was spread over.
    pub conns: usize,
    /// Requests per second asked for.
    pub rate_target: u32,
    /// Requests sent.
    pub sent: u64,
    /// Replies received.
    pub received: u64,
    /// Connections that failed (write or read error) during the run.
    pub errors: u64,
    /// From the first intended send to the last reply.
    pub secs: f64,
    /// `received / secs`.
    pub rate_achieved: f64,
    /// From each request's intended send time to its reply (open loop: no coordinated
    /// omission).
    pub latency: Latency,
    /// How late the pacer handed each request out: the client's own floor.
    pub pacer_lag: Latency,
    /// Relay CPU and HEP packets.
    pub probe: ProbeResult,
}

/// Sends `rate` requests per second for `duration`, round-robin over `conns` connections, each
/// at its scheduled time whatever the replies do (pipelining on a connection when replies are
/// late), and times each reply from the request's intended send time.
///
/// A dedicated thread paces (with 1 ns timer slack, so it wakes within microseconds); each
/// connection has a writer task fed by the pacer and a reader task that matches replies to
/// intended times in order.
pub async fn rr_fixed(
    target: &Target,
    conns: usize,
    rate: u32,
    duration: Duration,
    probe: &Probe,
) -> Result<RrFixed, Error> {
    let conns = conns.max(1);
    let streams = open_warm(target, conns).await?;
    let mut to_writers = Vec::with_capacity(conns);
    let mut readers = JoinSet::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let (read, mut write) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
        let (due_tx, mut due_rx) = mpsc::unbounded_channel::<Instant>();
        to_writers.push(tx);
        let req = request(conn_id(i), 1);
        tokio::spawn(async move {
            while let Some(due) = rx.recv().await {
                if due_tx.send(due).is_err() || write.write_all(&req).await.is_err() {
                    break;
                }
            }
            // Dropping the write half leaves the connection open: the reader holds the other.
        });
        readers.spawn(async move {
            let mut h = histogram()?;
            let mut reader = MessageReader::new(read);
            let mut last = None;
            let mut failed = false;
            while let Some(due) = due_rx.recv().await {
                match reader.next().await {
                    Ok(msg) if check_reply(&msg).is_ok() => {
                        let now = Instant::now();
                        record(&mut h, now - due);
                        last = Some(now);
                    }
                    _ => {
                        failed = true;
                        break;
                    }
                }
            }
            Ok::<_, Error>((h, last, failed))
        });
    }
    let total = u64::from(rate) * duration.as_secs().max(1);
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let probing = probe.start();
    let t0 = Instant::now() + Duration::from_millis(20);
    let pacer = std::thread::spawn(move || -> Result<(Histogram<u64>, u64), Error> {
        let _ = nix::sys::prctl::set_timerslack(1);
        let mut lag = histogram()?;
        let mut sent = 0;
        for k in 0..total {
            let due = t0 + interval.mul_f64(k as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            record(&mut lag, Instant::now().saturating_duration_since(due));
            let idx = usize::try_from(k % to_writers.len() as u64).unwrap_or(0);
            if to_writers[idx].send(due).is_ok() {
                sent += 1;
            }
        }
        Ok((lag, sent))
    });
    let mut h = histogram()?;
    let (mut received, mut errors, mut last) = (0u64, 0u64, t0);
    let deadline = tokio::time::Instant::from_std(t0 + duration + GRACE);
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, readers.join_next()).await {
        let Ok(Ok((part, part_last, failed))) = done else {
            errors += 1;
            continue;
        };
        received += part.len();
        h.add(&part)
            .map_err(|e| Error::Protocol(format!("histogram: {e}")))?;
        last = last.max(part_last.unwrap_or(t0));
        errors += u64::from(failed);
    }
    errors += readers.len() as u64;
    readers.abort_all();
    let (lag, sent) = pacer
        .join()
        .map_err(|_| Error::Protocol("the pacer thread panicked".into()))??;
    let secs = last.saturating_duration_since(t0).as_secs_f64();
    Ok(RrFixed {
        conns,
        rate_target: rate,
        sent,
        received,
        errors,
        secs,
        rate_achieved: if secs > 0.0 {
            received as f64 / secs
        } else {
            0.0
        },
        latency: latency(&h),
        pacer_lag: latency(&lag),
        probe: probing.finish().await,
    })
}

/// Request/response as fast as the target answers.
#[derive(Debug, Clone, Serialize)]
pub struct RrMax {
    /// Connections, each with one request outstanding at a time.
    pub conns: usize,
    /// Round trips completed.
    pub completed: u64,
    /// Connections that failed.
    pub errors: u64,
    /// The measured window.
    pub secs: f64,
    /// `completed / secs`: messages (requests) per second.
    pub rate: f64,
    /// From each send to its reply (closed loop).
    pub latency: Latency,
    /// Relay CPU and HEP packets.
    pub probe: ProbeResult,
}

/// `conns` connections each sending the next request as soon as the previous reply arrives,
/// for `duration`.
pub async fn rr_max(
    target: &Target,
    conns: usize,
    duration: Duration,
    probe: &Probe,
) -> Result<RrMax, Error> {
    let conns = conns.max(1);
    let streams = open_warm(target, conns).await?;
    let probing = probe.start();
    let t0 = Instant::now();
    let deadline = t0 + duration;
    let mut tasks = JoinSet::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let req = request(conn_id(i), 1);
        tasks.spawn(async move {
            let mut h = histogram()?;
            let mut reader = MessageReader::new(stream);
            let mut failed = false;
            while Instant::now() < deadline {
                let sent = Instant::now();
                if round_trip(&mut reader, &req).await.is_err() {
                    failed = true;
                    break;
                }
                record(&mut h, sent.elapsed());
            }
            Ok::<_, Error>((h, failed))
        });
    }
    let mut h = histogram()?;
    let mut errors = 0;
    let hard = tokio::time::Instant::from_std(deadline + GRACE);
    while let Ok(Some(done)) = tokio::time::timeout_at(hard, tasks.join_next()).await {
        match done {
            Ok(Ok((part, failed))) => {
                h.add(&part)
                    .map_err(|e| Error::Protocol(format!("histogram: {e}")))?;
                errors += u64::from(failed);
            }
            _ => errors += 1,
        }
    }
    errors += tasks.len() as u64;
    tasks.abort_all();
    let secs = t0.elapsed().as_secs_f64();
    Ok(RrMax {
        conns,
        completed: h.len(),
        errors,
        secs,
        rate: h.len() as f64 / secs,
        latency: latency(&h),
        probe: probing.finish().await,
    })
}

/// Connections per second.
#[derive(Debug, Clone, Serialize)]
pub struct ConnRate {
    /// Clients connecting at once.
    pub concurrency: usize,
    /// Connections that completed connect, one request/response and close.
    pub completed: u64,
    /// Connections that failed.
    pub errors: u64,
    /// The first failure, to tell what went wrong.
    pub first_error: Option<String>,
    /// The measured window.
    pub secs: f64,
    /// `completed / secs`.
    pub rate: f64,
    /// Connect (with handshake) + request/response + close, per connection.
    pub latency: Latency,
    /// Relay CPU and HEP packets.
    pub probe: ProbeResult,
}

/// `concurrency` clients each looping connect, one request/response, close, for `duration`
/// or until `max_conns` connections have been started.
pub async fn connrate(
    target: &Target,
    concurrency: usize,
    duration: Duration,
    max_conns: u64,
    probe: &Probe,
) -> Result<ConnRate, Error> {
    let concurrency = concurrency.max(1);
    let started = Arc::new(AtomicU64::new(0));
    let probing = probe.start();
    let t0 = Instant::now();
    let deadline = t0 + duration;
    let mut tasks = JoinSet::new();
    for i in 0..concurrency {
        let (target, started) = (target.clone(), started.clone());
        let req = request(conn_id(i), 1);
        tasks.spawn(async move {
            let mut h = histogram()?;
            let (mut errors, mut first_error) = (0u64, None);
            while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < max_conns {
                let t = Instant::now();
                match one_connection(&target, &req).await {
                    Ok(()) => record(&mut h, t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            Ok::<_, Error>((h, errors, first_error))
        });
    }
    let mut h = histogram()?;
    let (mut errors, mut first_error) = (0u64, None);
    let hard = tokio::time::Instant::from_std(deadline + GRACE);
    while let Ok(Some(done)) = tokio::time::timeout_at(hard, tasks.join_next()).await {
        if let Ok(Ok((part, part_errors, part_first))) = done {
            h.add(&part)
                .map_err(|e| Error::Protocol(format!("histogram: {e}")))?;
            errors += part_errors;
            if first_error.is_none() {
                first_error = part_first;
            }
        } else {
            errors += 1;
        }
    }
    tasks.abort_all();
    let secs = t0.elapsed().as_secs_f64();
    Ok(ConnRate {
        concurrency,
        completed: h.len(),
        errors,
        first_error,
        secs,
        rate: h.len() as f64 / secs,
        latency: latency(&h),
        probe: probing.finish().await,
    })
}

async fn one_connection(target: &Target, req: &[u8]) -> Result<(), Error> {
    let mut reader = MessageReader::new(target.connect().await?);
    round_trip(&mut reader, req).await?;
    // TLS: close_notify then FIN; TCP: FIN. The client closes first, as SIP clients do.
    let _ = reader.get_mut().shutdown().await;
    Ok(())
}

/// Memory per idle connection.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    /// Connections asked for.
    pub count: usize,
    /// Connections open (after one request/response each) when memory was read.
    pub opened: usize,
    /// Connections that failed to open.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Seconds to open them all.
    pub open_secs: f64,
    /// The relay's VmRSS before opening, KiB.
    pub rss_before_kib: Option<u64>,
    /// The relay's VmRSS with every connection open and idle, KiB.
    pub rss_open_kib: Option<u64>,
    /// The relay's VmRSS after they all closed, KiB.
    pub rss_closed_kib: Option<u64>,
    /// `(rss_open - rss_before) / opened`, bytes.
    pub bytes_per_conn: Option<f64>,
    /// Relay CPU and HEP packets, over the whole open/hold/close sequence.
    pub probe: ProbeResult,
}

/// Opens `count` connections (`concurrency` at a time), does one request/response on each so
/// that both legs are established, waits `settle`, reads the relay's VmRSS, closes them all
/// and reads it again after `settle`.
pub async fn idle(
    target: &Target,
    count: usize,
    concurrency: usize,
    settle: Duration,
    probe: &Probe,
) -> Result<Idle, Error> {
    let rss = || rss_kib_sum(&probe.cpu_pids);
    let rss_before_kib = rss();
    let probing = probe.start();
    let t0 = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let (target, permits) = (target.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|_| Error::Protocol("semaphore closed".into()))?;
            let mut reader = MessageReader::new(target.connect().await?);
            round_trip(&mut reader, &request(conn_id(i), 1)).await?;
            Ok::<_, Error>(reader.into_inner())
        });
    }
    let mut open = Vec::with_capacity(count);
    let (mut errors, mut first_error) = (0u64, None);
    let hard = tokio::time::Instant::from_std(t0 + Duration::from_secs(120));
    while let Ok(Some(done)) = tokio::time::timeout_at(hard, tasks.join_next()).await {
        match done {
            Ok(Ok(stream)) => open.push(stream),
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    errors += tasks.len() as u64;
    tasks.abort_all();
    let open_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let rss_open_kib = rss();
    let opened = open.len();
    drop(open);
    tokio::time::sleep(settle * 2).await;
    let rss_closed_kib = rss();
    let bytes_per_conn = match (rss_before_kib, rss_open_kib) {
        (Some(before), Some(after)) if opened > 0 => {
            Some((after as f64 - before as f64) * 1024.0 / opened as f64)
        }
        _ => None,
    };
    Ok(Idle {
        count,
        opened,
        errors,
        first_error,
        open_secs,
        rss_before_kib,
        rss_open_kib,
        rss_closed_kib,
        bytes_per_conn,
        probe: probing.finish().await,
    })
}
