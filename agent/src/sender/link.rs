//! Where a destination's bytes go: connecting (names resolved on every attempt, IPv4 and IPv6)
//! and the connected link of each transport.
//!
//! [`Endpoint`] is what was checked at start (addresses to resolve, the TLS configuration, the
//! file); [`Link`] is one live connection, socket or open output, dropped on the first error.

use std::fs::File;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use heptap_config::{Destination, HepId, Transport};
use heptap_hep::Version;
use nix::sys::socket::MsgFlags;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::error::SenderError;
use super::file::{self, FileOwner, FileRefused};
use super::spec::DestinationSpec;
use super::tls;

/// HEPv1/v2 have no length field, so only a datagram can delimit them.
fn needs_datagrams(version: Version) -> bool {
    version != Version::V3
}

/// How a destination cuts its output into units that are sent or lost whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// One HEP packet per UDP datagram.
    Datagram,
    /// HEP3 frames back to back on a byte stream.
    Stream,
    /// One `hep-dump` JSON line per packet.
    JsonLine,
}

/// A destination's address and settings, checked when it starts.
#[derive(Clone, Debug)]
pub(crate) enum Endpoint {
    /// A capture node reached over UDP, TCP or TLS.
    Hep {
        /// Host name or address, without IPv6 brackets.
        host: String,
        /// Port of the capture node.
        port: u16,
        /// UDP, TCP or TLS.
        transport: Transport,
        /// For TLS: the client configuration and the SNI name, shared by every lane and
        /// swapped when the files are read again.
        tls: Option<Arc<tls::ClientTls>>,
    },
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File {
        /// The file.
        path: PathBuf,
        /// Who it belongs to (a new one is created for this user).
        owner: FileOwner,
    },
}

impl Endpoint {
    /// Checks the destination and loads its files; a `file:` output is opened (created if
    /// missing) and checked.
    pub(crate) fn prepare(spec: &DestinationSpec) -> Result<Self, SenderError> {
        Self::prepare_with(spec, true)
    }

    /// [`Endpoint::prepare`]; without `tls_files`, a TLS destination's certificate, key and CA
    /// files are not read (and the endpoint has no TLS configuration: only for checks).
    fn prepare_with(spec: &DestinationSpec, tls_files: bool) -> Result<Self, SenderError> {
        let name = spec.name.as_str();
        match &spec.destination {
            Destination::Hep(HepId {
                host,
                port,
                transport,
                tls: settings,
                ..
            }) => {
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                if *transport != Transport::Udp && needs_datagrams(spec.encoder.version) {
                    return Err(SenderError::StreamNeedsHep3 {
                        name: name.to_owned(),
                        version: spec.encoder.version,
                    });
                }
                let tls = match transport {
                    Transport::Tls if tls_files => {
                        Some(Arc::new(tls::ClientTls::load(name, &host, settings)?))
                    }
                    Transport::Tls | Transport::Udp | Transport::Tcp => None,
                };
                Ok(Endpoint::Hep {
                    host,
                    port: *port,
                    transport: *transport,
                    tls,
                })
            }
            Destination::Stdout => Ok(Endpoint::Stdout),
            Destination::File(path) => {
                let owner = spec.file_owner;
                file::open(path, owner).map_err(|source| SenderError::File {
                    name: name.to_owned(),
                    path: path.clone(),
                    source,
                })?;
                Ok(Endpoint::File {
                    path: path.clone(),
                    owner,
                })
            }
        }
    }

    /// The checks of [`Endpoint::prepare`] without its side effect: a missing output file is not
    /// created, only its directory is looked at; an existing one is checked as `prepare` would.
    /// Without `tls_files`, TLS certificate, key and CA files are not read (a reload reads them
    /// per destination, so one bad file does not stop the rest).
    pub(crate) fn check(spec: &DestinationSpec, tls_files: bool) -> Result<(), SenderError> {
        match &spec.destination {
            Destination::File(path) => {
                file::check(path, spec.file_owner).map_err(|source| SenderError::File {
                    name: spec.name.clone(),
                    path: path.clone(),
                    source,
                })
            }
            Destination::Hep(_) | Destination::Stdout => {
                Self::prepare_with(spec, tls_files).map(drop)
            }
        }
    }

    /// The TLS configuration shared by the lanes, for TLS destinations.
    pub(crate) fn tls(&self) -> Option<&Arc<tls::ClientTls>> {
        match self {
            Endpoint::Hep { tls, .. } => tls.as_ref(),
            Endpoint::Stdout | Endpoint::File { .. } => None,
        }
    }

    /// `host:port` (IPv6 in brackets), `stdout` or `file:<path>`.
    pub(crate) fn destination(&self) -> String {
        match self {
            Endpoint::Hep { host, port, .. } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Hep { host, port, .. } => format!("{host}:{port}"),
            Endpoint::Stdout => "stdout".to_owned(),
            Endpoint::File { path, .. } => format!("file:{}", path.display()),
        }
    }

    /// "udp", "tcp", "tls", "stdout" or "file".
    pub(crate) fn transport_name(&self) -> &'static str {
        match self {
            Endpoint::Hep { transport, .. } => transport.as_str(),
            Endpoint::Stdout => "stdout",
            Endpoint::File { .. } => "file",
        }
    }

    pub(crate) fn framing(&self) -> Framing {
        match self {
            Endpoint::Hep {
                transport: Transport::Udp,
                ..
            } => Framing::Datagram,
            Endpoint::Hep { .. } => Framing::Stream,
            Endpoint::Stdout | Endpoint::File { .. } => Framing::JsonLine,
        }
    }

    /// One connection attempt: resolve the host now, then try its addresses in order. The
    /// caller bounds it with the connect timeout.
    pub(crate) async fn connect(&self) -> Result<Link, LinkError> {
        match self {
            Endpoint::Hep {
                host,
                port,
                transport,
                tls,
            } => {
                let addrs = resolve(host, *port).await?;
                match (transport, tls) {
                    (Transport::Udp, _) => connect_udp(&addrs).await,
                    (_, None) => {
                        let (stream, peer) = connect_tcp(&addrs).await?;
                        Ok(Link::stream(stream, peer, true))
                    }
                    (_, Some(tls)) => {
                        let (tcp, peer) = connect_tcp(&addrs).await?;
                        let fd = tcp.as_raw_fd();
                        // The files as last read: a renewal applies from the next connect.
                        let loaded = tls.current();
                        let connector = tokio_rustls::TlsConnector::from(loaded.config.clone());
                        let stream = connector
                            .connect(loaded.server_name.clone(), tcp)
                            .await
                            .map_err(|source| LinkError::Tls { addr: peer, source })?;
                        Ok(Link::Stream(StreamLink::new(
                            Box::new(stream),
                            fd,
                            peer,
                            false,
                        )))
                    }
                }
            }
            Endpoint::Stdout => Ok(Link::Local(LocalOut::Stdout)),
            // Reopened after an error with the same checks (after the privilege drop, as the
            // service user): a file swapped for a link meanwhile is refused, not followed.
            Endpoint::File { path, owner } => file::open(path, *owner)
                .map(|f| Link::Local(LocalOut::File(Arc::new(f))))
                .map_err(|source| LinkError::Open {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, LinkError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| LinkError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(LinkError::NoAddress {
            host: host.to_owned(),
        });
    }
    Ok(addrs)
}

async fn connect_tcp(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), LinkError> {
    let mut last = None;
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // heptap gathers frames itself; Nagle would only add latency.
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
            Err(source) => last = Some(LinkError::Connect { addr, source }),
        }
    }
    Err(last.unwrap_or(LinkError::NoAddress {
        host: String::new(),
    }))
}

async fn connect_udp(addrs: &[SocketAddr]) -> Result<Link, LinkError> {
    let mut last = None;
    for &addr in addrs {
        let local: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        // A connected socket reports ICMP errors (port unreachable) on the next send. Binding
        // and connecting a UDP socket never wait.
        let socket = std::net::UdpSocket::bind(local)
            .and_then(|s| s.connect(addr).map(|()| s))
            .and_then(|s| s.set_nonblocking(true).map(|()| s));
        match socket {
            Ok(socket) => return Ok(Link::Datagram(socket)),
            Err(source) => last = Some(LinkError::Connect { addr, source }),
        }
    }
    Err(last.unwrap_or(LinkError::NoAddress {
        host: String::new(),
    }))
}

/// Sends `datagrams` on the connected, non-blocking socket with one system call (`sendmmsg`);
/// how many of them went, from the first. An error is the first datagram's: one the kernel
/// refuses later in the batch ends the batch there and is reported by the next call.
pub(crate) fn send_datagrams(
    socket: &std::net::UdpSocket,
    datagrams: &[&[u8]],
) -> io::Result<usize> {
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags};
    if let [one] = datagrams {
        return socket.send(one).map(|_| 1);
    }
    let iovs: Vec<[io::IoSlice<'_>; 1]> = datagrams.iter().map(|d| [io::IoSlice::new(d)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = iovs
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = iovs
        .iter()
        .zip(controls.iter_mut())
        .map(|(iov, control)| MMsgHdr::new(iov, control))
        .collect();
    rustix::net::sendmmsg(socket, &mut msgs, SendFlags::empty()).map_err(io::Error::from)
}

/// Why a connection attempt or a write failed; shown in the logs and by the MI.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// The host name resolved to nothing.
    #[error("{host} resolves to no address")]
    NoAddress {
        /// The name.
        host: String,
    },
    /// Resolving and connecting took longer than the connect timeout.
    #[error("connecting timed out after {0:?}")]
    ConnectTimeout(std::time::Duration),
    /// The collector refused or could not be reached.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried last.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name, refused client cert...).
    #[error("TLS handshake with {addr} failed: {}", crate::tls::explain(source))]
    Tls {
        /// The collector's address.
        addr: SocketAddr,
        /// rustls's reason, wrapped by tokio-rustls.
        #[source]
        source: io::Error,
    },
    /// The output file cannot be opened, or is refused.
    #[error("cannot use {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The operating system's reason, or why the file is refused.
        #[source]
        source: FileRefused,
    },
    /// The collector closed the connection (or reset it) while heptap had nothing to send.
    #[error("the collector closed the connection: {0}")]
    PeerClosed(io::Error),
    /// A write failed.
    #[error("write failed: {0}")]
    Write(io::Error),
    /// A write made no progress for the write timeout: the collector is not reading.
    #[error("write made no progress for {0:?}")]
    WriteTimeout(std::time::Duration),
}

/// A byte stream to a collector: plain TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One live connection, socket or output.
pub(crate) enum Link {
    /// A connected, non-blocking UDP socket. Deliberately not registered with the runtime: a
    /// registered UDP socket wakes the runtime's poller every time the kernel frees a sent
    /// datagram, which costs a context switch per packet. A full send buffer (rare for UDP)
    /// is waited out by retrying.
    Datagram(std::net::UdpSocket),
    /// A TCP or TLS connection.
    Stream(StreamLink),
    /// Standard output or a file.
    Local(LocalOut),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Link::Datagram(s) => f.debug_tuple("Datagram").field(s).finish(),
            Link::Stream(s) => f.debug_tuple("Stream").field(&s.peer).finish(),
            Link::Local(o) => f.debug_tuple("Local").field(o).finish(),
        }
    }
}

impl Link {
    fn stream(stream: TcpStream, peer: SocketAddr, confirm_on_write: bool) -> Self {
        let fd = stream.as_raw_fd();
        Link::Stream(StreamLink::new(
            Box::new(stream),
            fd,
            peer,
            confirm_on_write,
        ))
    }

    /// Resolves when the collector closes or resets the connection; never for UDP or local
    /// outputs. Anything the collector sends is read and ignored (capture nodes send nothing;
    /// TLS session tickets are consumed by rustls on the way).
    pub(crate) async fn closed_by_peer(&mut self) -> LinkError {
        match self {
            Link::Stream(s) => {
                let mut buf = [0u8; 512];
                loop {
                    match s.reader.read(&mut buf).await {
                        Ok(0) => {
                            return LinkError::PeerClosed(io::Error::from(
                                io::ErrorKind::UnexpectedEof,
                            ));
                        }
                        Ok(_) => {}
                        Err(e) => return LinkError::PeerClosed(e),
                    }
                }
            }
            Link::Datagram(_) | Link::Local(_) => std::future::pending().await,
        }
    }
}

/// A TCP or TLS connection, split so that a close by the collector is noticed while idle.
pub(crate) struct StreamLink {
    /// Read side: only watched for end of stream.
    reader: ReadHalf<Box<dyn Io>>,
    /// Write side: the frames.
    pub(crate) writer: WriteHalf<Box<dyn Io>>,
    /// The TCP socket underneath, for the non-blocking check before each batch.
    fd: RawFd,
    /// The collector's address.
    pub(crate) peer: SocketAddr,
    /// Plain TCP: bytes accepted by `write` are in the kernel, so complete frames among them
    /// count as sent at once. TLS: they may still sit in rustls's buffer until `flush`.
    pub(crate) confirm_on_write: bool,
}

impl StreamLink {
    fn new(io: Box<dyn Io>, fd: RawFd, peer: SocketAddr, confirm_on_write: bool) -> Self {
        let (reader, writer) = tokio::io::split(io);
        StreamLink {
            reader,
            writer,
            fd,
            peer,
            confirm_on_write,
        }
    }

    /// Asks the kernel, without waiting, whether the collector already closed or reset the
    /// connection. Bytes written after that would be accepted locally and lost, so frames that
    /// outlived an outage are kept for the next connection instead. The runtime's readiness
    /// can lag behind the kernel; this system call does not.
    pub(crate) fn gone(&self) -> Option<LinkError> {
        let mut byte = [0u8; 1];
        match nix::sys::socket::recv(
            self.fd,
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => Some(LinkError::PeerClosed(io::Error::from(
                io::ErrorKind::UnexpectedEof,
            ))),
            Ok(_) => None,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => None,
            Err(errno) => Some(LinkError::PeerClosed(io::Error::from(errno))),
        }
    }
}

/// A local output; writes are blocking and run on the blocking pool.
#[derive(Clone, Debug)]
pub(crate) enum LocalOut {
    /// Standard output; lines are written whole under its lock, so they never interleave.
    Stdout,
    /// The file, opened for appending.
    File(Arc<File>),
}

impl LocalOut {
    /// Writes whole lines (blocking).
    pub(crate) fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            LocalOut::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            LocalOut::File(file) => {
                let mut f: &File = file;
                f.write_all(buf)
            }
        }
    }
}
