//! `heptap hep-dump`: a small HEP receiver that prints every packet it gets as one JSON line.
//!
//! It exists for users checking what heptap (or any other agent) sends, and for tests: it takes
//! HEP v1/v2/v3 on UDP and HEP3 framed on TCP, prints `Packet::to_json()` per packet on stdout
//! (the same lines as heptap's `stdout` and `file:` destinations), reports each bad packet on
//! stderr with the peer and the reason, and goes on.

use std::io::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;

use heptap_hep::{Hep3Framer, Packet, decode};
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

/// Where hep-dump listens: `udp:ADDR` or `tcp:ADDR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenSpec {
    /// One datagram is one packet (v1, v2 or v3).
    Udp(SocketAddr),
    /// HEP3 frames cut by their length field.
    Tcp(SocketAddr),
}

/// A `--listen` value that is not `udp:ADDR` or `tcp:ADDR`.
#[derive(Debug, thiserror::Error)]
#[error("invalid listen address '{0}': expected udp:IP:PORT or tcp:IP:PORT (IPv6 as [::1]:9060)")]
pub struct BadListenSpec(String);

impl FromStr for ListenSpec {
    type Err = BadListenSpec;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadListenSpec(s.to_owned());
        let (proto, addr) = s.split_once(':').ok_or_else(bad)?;
        let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
        match proto.to_ascii_lowercase().as_str() {
            "udp" => Ok(Self::Udp(addr)),
            "tcp" => Ok(Self::Tcp(addr)),
            _ => Err(bad()),
        }
    }
}

/// How packets are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (`Packet::to_json`).
    Json,
    /// One human-readable line per packet.
    Text,
}

/// Runs until SIGINT or SIGTERM. Binds every listener first and reports each bound address on
/// stderr as `listening on udp:IP:PORT`, so a caller that asked for port 0 learns the port.
pub async fn run(listen: Vec<ListenSpec>, format: Format) -> std::io::Result<()> {
    // Handlers first: once "listening on" is printed, a SIGTERM must end hep-dump cleanly.
    let mut signals = crate::signals::Signals::install()?;
    let (lines, mut rx) = mpsc::channel::<String>(4096);
    let mut tasks = tokio::task::JoinSet::new();
    for spec in listen {
        match spec {
            ListenSpec::Udp(addr) => {
                let sock = UdpSocket::bind(addr).await?;
                eprintln!("listening on udp:{}", sock.local_addr()?);
                tasks.spawn(udp_loop(sock, format, lines.clone()));
            }
            ListenSpec::Tcp(addr) => {
                let listener = TcpListener::bind(addr).await?;
                eprintln!("listening on tcp:{}", listener.local_addr()?);
                tasks.spawn(tcp_loop(listener, format, lines.clone()));
            }
        }
    }
    drop(lines);
    // One writer owns stdout, so lines never interleave; it flushes whenever it has caught up,
    // so a reader (a test, `jq`) sees each packet as soon as it arrived.
    let writer = tokio::task::spawn_blocking(move || {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        while let Some(line) = rx.blocking_recv() {
            if writeln!(out, "{line}").is_err() {
                return;
            }
            if rx.is_empty() && out.flush().is_err() {
                return;
            }
        }
        let _ = out.flush();
    });
    while signals.recv().await == crate::signals::Signal::Reload {}
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let _ = writer.await;
    Ok(())
}

fn render(packet: &Packet, format: Format) -> String {
    match format {
        Format::Json => packet.to_json().to_string(),
        Format::Text => crate::dump_text::line(packet),
    }
}

async fn udp_loop(sock: UdpSocket, format: Format, lines: mpsc::Sender<String>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("udp receive error: {e}");
                continue;
            }
        };
        match decode(&buf[..n]) {
            Ok(packet) => {
                if lines.send(render(&packet, format)).await.is_err() {
                    return;
                }
            }
            Err(e) => eprintln!("bad packet from udp:{peer} ({n} bytes): {e}"),
        }
    }
}

async fn tcp_loop(listener: TcpListener, format: Format, lines: mpsc::Sender<String>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("tcp accept error: {e}");
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(tcp_conn(stream, peer, format, lines.clone()));
    }
}

async fn tcp_conn(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    format: Format,
    lines: mpsc::Sender<String>,
) {
    let mut framer = Hep3Framer::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                eprintln!("tcp:{peer}: read error: {e}");
                return;
            }
        };
        framer.push(&buf[..n]);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => match decode(&frame) {
                    Ok(packet) => {
                        if lines.send(render(&packet, format)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("bad packet from tcp:{peer} ({} bytes): {e}", frame.len()),
                },
                Ok(None) => break,
                Err(e) => {
                    // The stream has lost its framing; nothing after this point can be trusted.
                    eprintln!("tcp:{peer}: {e}; closing the connection");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_specs_parse_udp_tcp_and_ipv6() {
        assert_eq!(
            "udp:127.0.0.1:9060".parse::<ListenSpec>().ok(),
            Some(ListenSpec::Udp(SocketAddr::from(([127, 0, 0, 1], 9060))))
        );
        assert!(matches!(
            "tcp:[::1]:0".parse::<ListenSpec>(),
            Ok(ListenSpec::Tcp(_))
        ));
        assert!("sctp:127.0.0.1:1".parse::<ListenSpec>().is_err());
        assert!("udp:localhost".parse::<ListenSpec>().is_err());
    }
}
