//! A HEP collector that only counts: it gives heptap's tracing somewhere to send on loopback
//! without the cost of decoding or printing, and tells the load tools how many packets
//! arrived during a measurement.
//!
//! The counts go to a stats file, `"<packets> <bytes>\n"`, rewritten (through a rename)
//! every [`STATS_PERIOD`].

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Error;

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
    let mut buf = vec![0u8; 65536];
    loop {
        let n = socket.recv(&mut buf)?;
        packets.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(n as u64, Ordering::Relaxed);
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
