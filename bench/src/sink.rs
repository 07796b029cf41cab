//! A HEP collector that only counts: it gives heptap's tracing somewhere to send on loopback
//! without the cost of decoding or printing, and tells the load tools how many packets
//! arrived during a measurement. It receives datagrams on UDP and HEP3 frames on TCP connections
//! at the same address, and polls its sockets rather than sleeping in `recv`, so that heptap's
//! sends do not pay for waking it, as with a collector on another host.
//!
//! The counts go to a stats file, `"<packets> <bytes>\n"`, rewritten (through a rename)
//! every [`STATS_PERIOD`].

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Error;

/// How often the sink wakes up to read what has arrived (16 MiB of socket buffer hold far more
/// than heptap sends in that time).
pub const DRAIN_PERIOD: Duration = Duration::from_millis(1);

/// How often the stats file is rewritten.
pub const STATS_PERIOD: Duration = Duration::from_millis(100);

/// Receives on `addr` until the process is stopped, counting datagrams and bytes into
/// `stats`.
pub fn run(addr: SocketAddr, stats: PathBuf) -> Result<(), Error> {
    let socket = UdpSocket::bind(addr)?;
    // Bursts of tens of thousands of packets a second: a big buffer (forced, we may be root).
    let size = 16 * 1024 * 1024usize;
    if nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &size).is_err()
    {
        let _ = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBuf, &size);
    }
    let packets = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    {
        let (packets, bytes) = (packets.clone(), bytes.clone());
        std::thread::spawn(move || {
            loop {
                let line = format!(
                    "{} {}\n",
                    packets.load(Ordering::Relaxed),
                    bytes.load(Ordering::Relaxed)
                );
                let tmp = stats.with_extension("tmp");
                if std::fs::write(&tmp, line).is_ok() {
                    let _ = std::fs::rename(&tmp, &stats);
                }
                std::thread::sleep(STATS_PERIOD);
            }
        });
    }
    let listener = TcpListener::bind(addr)?;
    {
        let (packets, bytes) = (packets.clone(), bytes.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (packets, bytes) = (packets.clone(), bytes.clone());
                std::thread::spawn(move || count_frames(stream, &packets, &bytes));
            }
        });
    }
    // Drain every DRAIN_PERIOD instead of blocking in recv: a reader asleep on the socket makes
    // every sendto of heptap pay for waking it (a third of heptap's CPU at full rate in a
    // profile), which a collector on another host never costs the sender.
    // And up to BATCH datagrams per system call: the sink shares the CPU with the relay it
    // measures, so it should cost as little as a collector elsewhere would cost it (nothing).
    socket.set_nonblocking(true)?;
    let mut bufs = vec![vec![0u8; 65536]; BATCH];
    loop {
        std::thread::sleep(DRAIN_PERIOD);
        loop {
            match receive_batch(&socket, &mut bufs) {
                Ok((n, len)) => {
                    packets.fetch_add(n as u64, Ordering::Relaxed);
                    bytes.fetch_add(len, Ordering::Relaxed);
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
        }
    }
}

/// Datagrams taken per `recvmmsg`.
const BATCH: usize = 64;

/// One `recvmmsg` without waiting: how many datagrams, and their bytes.
fn receive_batch(socket: &UdpSocket, bufs: &mut [Vec<u8>]) -> nix::Result<(usize, u64)> {
    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
    use std::os::fd::AsRawFd as _;
    let mut iovs: Vec<[std::io::IoSliceMut<'_>; 1]> = bufs
        .iter_mut()
        .map(|b| [std::io::IoSliceMut::new(b)])
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(iovs.len(), None);
    let received = recvmmsg(
        socket.as_raw_fd(),
        &mut headers,
        iovs.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    let (mut n, mut len) = (0usize, 0u64);
    for msg in received {
        n += 1;
        len += msg.bytes as u64;
    }
    Ok((n, len))
}

/// Counts the HEP3 frames of one TCP connection (length at bytes 4..6 of each frame), draining
/// it every [`DRAIN_PERIOD`], until it closes or a frame is not HEP3.
fn count_frames(mut stream: TcpStream, packets: &AtomicU64, bytes: &AtomicU64) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut buf = vec![0u8; 1 << 20];
    let (mut start, mut end) = (0usize, 0usize);
    loop {
        std::thread::sleep(DRAIN_PERIOD);
        loop {
            if start > 0 {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            match stream.read(&mut buf[end..]) {
                Ok(0) => return,
                Ok(n) => end += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
            while end - start >= 6 {
                let head = &buf[start..start + 6];
                if &head[..4] != b"HEP3" {
                    return;
                }
                let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
                if len < 6 {
                    return;
                }
                if end - start < len {
                    break;
                }
                packets.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(len as u64, Ordering::Relaxed);
                start += len;
            }
        }
    }
}

/// The packet count in a stats file, `None` if it cannot be read.
pub fn read_packets(stats: &Path) -> Option<u64> {
    std::fs::read_to_string(stats)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
