//! The hand-over channel: a Unix `SOCK_SEQPACKET` connection between the old and the new
//! process, named in the abstract namespace (no file to create in a directory the service may
//! not write, nothing left behind by a crash). Each message is one JSON value and carries the
//! descriptors that go with it (`SCM_RIGHTS`); message boundaries are the socket's, so
//! descriptors never arrive with the wrong message.
//!
//! rustix, not nix, sends and receives the descriptors: its `recvmsg` hands them over as
//! `OwnedFd`, where nix gives raw numbers that only `unsafe` could own. The sockets are
//! registered with tokio as its `UnixListener` / `UnixStream` (tokio's `AsyncFd` takes a raw
//! descriptor only through `unsafe`); only their readiness is used, every read and write is a
//! rustix `recvmsg` / `sendmsg`, which keep the `SOCK_SEQPACKET` boundaries.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
    UCred,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};

/// The largest message either side sends (the offer names every listener once).
const MAX_MESSAGE: usize = 64 * 1024;

/// Descriptors per message, below the kernel's limit (`SCM_MAX_FD`, 253); an offer with more
/// sockets continues in further messages.
pub const MAX_FDS: usize = 200;

/// What went wrong on the channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The socket call failed.
    #[error("{step}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The system's reason.
        source: io::Error,
    },
    /// The other process closed the channel (it exited, or gave up).
    #[error("the other process closed the hand-over channel")]
    Closed,
    /// A message that is not what the protocol allows.
    #[error("unexpected message on the hand-over channel: {0}")]
    Garbled(String),
}

fn io_err(step: &'static str) -> impl FnOnce(io::Error) -> ChannelError {
    move |source| ChannelError::Io { step, source }
}

/// A non-blocking `SOCK_SEQPACKET` Unix socket.
fn seqpacket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?)
}

fn abstract_addr(name: &str) -> io::Result<SocketAddrUnix> {
    Ok(SocketAddrUnix::new_abstract_name(name.as_bytes())?)
}

/// The old process's end before the new process connects.
#[derive(Debug)]
pub struct ChannelListener {
    /// The listening socket.
    listener: UnixListener,
}

impl ChannelListener {
    /// Listens on the abstract address `name`.
    pub fn bind(name: &str) -> Result<Self, ChannelError> {
        let fd = seqpacket().map_err(io_err("create the hand-over socket"))?;
        let addr = abstract_addr(name).map_err(io_err("name the hand-over socket"))?;
        rustix::net::bind(&fd, &addr).map_err(|e| ChannelError::Io {
            step: "bind the hand-over socket",
            source: e.into(),
        })?;
        rustix::net::listen(&fd, 4).map_err(|e| ChannelError::Io {
            step: "listen on the hand-over socket",
            source: e.into(),
        })?;
        let listener = UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
            .map_err(io_err("register the hand-over socket"))?;
        Ok(Self { listener })
    }

    /// The next connection and who made it (the caller checks it is the process it started).
    pub async fn accept(&self) -> Result<(Channel, UCred), ChannelError> {
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(io_err("accept on the hand-over socket"))?;
        let channel = Channel { stream };
        let peer = channel.peer()?;
        Ok((channel, peer))
    }
}

/// One end of a connected hand-over channel.
#[derive(Debug)]
pub struct Channel {
    /// The connected `SOCK_SEQPACKET` socket (tokio's type is a stream's; see the module doc).
    stream: UnixStream,
}

impl Channel {
    fn new(fd: OwnedFd) -> Result<Self, ChannelError> {
        let stream = UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
            .map_err(io_err("register the hand-over channel"))?;
        Ok(Self { stream })
    }

    /// Connects to the old process's channel `name` (the new process's end).
    pub fn connect(name: &str) -> Result<Self, ChannelError> {
        let fd = seqpacket().map_err(io_err("create the hand-over socket"))?;
        let addr = abstract_addr(name).map_err(io_err("name the hand-over socket"))?;
        rustix::net::connect(&fd, &addr).map_err(|e| ChannelError::Io {
            step: "connect to the old process",
            source: e.into(),
        })?;
        Self::new(fd)
    }

    /// Who is at the other end (`SO_PEERCRED`: its pid and uid when it connected).
    pub fn peer(&self) -> Result<UCred, ChannelError> {
        rustix::net::sockopt::socket_peercred(&self.stream).map_err(|e| ChannelError::Io {
            step: "read the peer's credentials",
            source: e.into(),
        })
    }

    /// Sends `msg` with `fds` (at most [`MAX_FDS`]) attached.
    pub async fn send<T: Serialize>(
        &self,
        msg: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ChannelError> {
        let bytes = serde_json::to_vec(msg).map_err(|e| ChannelError::Garbled(e.to_string()))?;
        if bytes.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
            return Err(ChannelError::Garbled(format!(
                "a message of {} bytes and {} descriptors is too large",
                bytes.len(),
                fds.len()
            )));
        }
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        loop {
            self.stream
                .writable()
                .await
                .map_err(io_err("wait on the hand-over channel"))?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
                    return Err(io::Error::other("no room for the descriptors"));
                }
                Ok(rustix::net::sendmsg(
                    &self.stream,
                    &[IoSlice::new(&bytes)],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )?)
            });
            match sent {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(ChannelError::Garbled(format!(
                        "sent {n} of {} bytes",
                        bytes.len()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Err(ChannelError::Closed);
                }
                Err(e) => return Err(io_err("send on the hand-over channel")(e)),
            }
        }
    }

    /// The next message and the descriptors it carries; [`ChannelError::Closed`] at the end.
    pub async fn recv<T: DeserializeOwned>(&self) -> Result<(T, Vec<OwnedFd>), ChannelError> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        loop {
            self.stream
                .readable()
                .await
                .map_err(io_err("wait on the hand-over channel"))?;
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let got = self.stream.try_io(Interest::READABLE, || {
                Ok(rustix::net::recvmsg(
                    &self.stream,
                    &mut [IoSliceMut::new(&mut buf)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )?)
            });
            let msg = match got {
                Ok(msg) => msg,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(ChannelError::Closed);
                }
                Err(e) => return Err(io_err("receive on the hand-over channel")(e)),
            };
            // Taken first, so that they are closed whatever happens next.
            let mut fds = Vec::new();
            for m in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = m {
                    fds.extend(received);
                }
            }
            if msg.bytes == 0 {
                return Err(ChannelError::Closed);
            }
            if msg
                .flags
                .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
            {
                return Err(ChannelError::Garbled(
                    "a message or its descriptors were cut short".to_owned(),
                ));
            }
            let value = serde_json::from_slice(&buf[..msg.bytes])
                .map_err(|e| ChannelError::Garbled(e.to_string()))?;
            return Ok((value, fds));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::fd::AsFd;

    #[tokio::test]
    async fn a_message_arrives_with_its_descriptors_and_the_peer_is_known() {
        let name = format!("heptap-channel-test-{}", std::process::id());
        let listener = ChannelListener::bind(&name).unwrap();
        let client = Channel::connect(&name).unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.pid.as_raw_nonzero().get() as u32, std::process::id());

        let sockets: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|s| s.as_fd()).collect();
        server.send(&"offer", &fds).await.unwrap();
        let (text, got): (String, _) = client.recv().await.unwrap();
        assert_eq!(text, "offer");
        let got: Vec<std::net::TcpListener> = got.into_iter().map(Into::into).collect();
        let addrs = |l: &[std::net::TcpListener]| {
            l.iter()
                .map(|s| s.local_addr().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(addrs(&got), addrs(&sockets), "the same sockets, in order");

        drop(server);
        assert!(matches!(
            client.recv::<String>().await,
            Err(ChannelError::Closed)
        ));
    }
}
