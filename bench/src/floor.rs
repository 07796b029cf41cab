//! The floor under HEP over UDP on this machine: the CPU time the kernel charges a sender for
//! each datagram to the local sink, measured with the cheapest sender there is (one thread, a
//! connected socket, up to 64 datagrams per `sendmmsg`, nothing to encode or queue). The report
//! sets it beside what each traced message costs heptap when HEP goes over UDP, so that what
//! heptap adds and what any UDP sender pays on loopback can be told apart.

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Error;
use crate::sink;

/// Datagrams per `sendmmsg`, as heptap's UDP sender batches at most.
pub const BATCH: usize = 64;

/// What the bare sender paid.
#[derive(Debug, Clone, Serialize)]
pub struct UdpFloor {
    /// Datagrams sent.
    pub datagrams: u64,
    /// Bytes in each (a HEP3 header and padding).
    pub size: usize,
    /// Datagrams per `sendmmsg` call.
    pub batch: usize,
    /// Datagrams per second asked for.
    pub rate_target: u32,
    /// From the first send to the last.
    pub secs: f64,
    /// CPU time (user + system) of the sending thread.
    pub cpu_s: f64,
    /// `cpu_s` per datagram, in microseconds.
    pub cpu_us_per_datagram: f64,
    /// Datagrams the sink counted meanwhile (all of them, or the figure is not the floor).
    pub hep_packets: Option<u64>,
}

/// Sends `size`-byte datagrams to `sink` at `rate` per second for `duration`, in batches of
/// [`BATCH`], and reports the sending thread's CPU time per datagram. Paced rather than as fast
/// as possible: at heptap's own rate the sink keeps up and every datagram takes the whole
/// receive path (a full socket buffer would drop them early, which is cheaper).
pub fn udp_floor(
    sink_addr: SocketAddr,
    size: usize,
    rate: u32,
    duration: Duration,
    hep_stats: Option<&Path>,
) -> Result<UdpFloor, Error> {
    let size = size.clamp(6, 65_000);
    let mut datagram = vec![0u8; size];
    datagram[..4].copy_from_slice(b"HEP3");
    let len = u16::try_from(size).unwrap_or(u16::MAX);
    datagram[4..6].copy_from_slice(&len.to_be_bytes());
    let local: SocketAddr = if sink_addr.is_ipv4() {
        ([127, 0, 0, 1], 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(sink_addr)?;

    let rate = rate.max(1);
    let total = u64::from(rate) * duration.as_secs().max(1);
    let per_batch = Duration::from_secs_f64(BATCH as f64 / f64::from(rate));
    let before = hep_stats.and_then(sink::read_packets);
    let cpu0 = thread_cpu()?;
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut k = 0u32;
    // Paced, the run takes `duration`; a socket that stops taking datagrams ends it at twice that.
    let deadline = t0 + duration * 2;
    while sent < total && Instant::now() < deadline {
        let due = t0 + per_batch * k;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let n = usize::try_from(total - sent).map_or(BATCH, |left| left.min(BATCH));
        sent += send_batch(&socket, &datagram, n)? as u64;
        k += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu_s = thread_cpu()? - cpu0;
    let hep_packets = match (hep_stats, before) {
        (Some(path), Some(before)) => {
            // Datagrams still in the sink's buffer, and its next stats write.
            std::thread::sleep(sink::STATS_PERIOD * 4);
            sink::read_packets(path).map(|after| after.saturating_sub(before))
        }
        _ => None,
    };
    Ok(UdpFloor {
        datagrams: sent,
        size,
        batch: BATCH,
        rate_target: rate,
        secs,
        cpu_s,
        cpu_us_per_datagram: if sent > 0 {
            cpu_s * 1e6 / sent as f64
        } else {
            0.0
        },
        hep_packets,
    })
}

/// Sends `n` copies of `datagram` with one `sendmmsg`, retrying what a full socket buffer
/// held back; how many went.
fn send_batch(socket: &UdpSocket, datagram: &[u8], n: usize) -> Result<usize, Error> {
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags};
    let iovs: Vec<[IoSlice<'_>; 1]> = (0..n).map(|_| [IoSlice::new(datagram)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = iovs
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = iovs
        .iter()
        .zip(controls.iter_mut())
        .map(|(iov, control)| MMsgHdr::new(iov, control))
        .collect();
    let mut done = 0;
    while done < n {
        match rustix::net::sendmmsg(socket, &mut msgs[done..], SendFlags::empty()) {
            Ok(0) => break,
            Ok(k) => done += k,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    }
    Ok(done)
}

/// CPU seconds (user + system) the calling thread has used.
fn thread_cpu() -> Result<f64, Error> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_THREAD).map_err(std::io::Error::from)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}
