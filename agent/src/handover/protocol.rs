//! What the two processes of a hand-over say to each other ([`Message`], the [`Offer`]), what
//! the new one makes of what it receives ([`Inherited`]), what the old one keeps to offer
//! ([`ListenerSockets`]), and how a process runs again ([`Image`]).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::channel::ChannelError;

/// The variable that tells a new process the name of the old one's hand-over channel.
pub const ENV: &str = "HEPTAP_HANDOVER";

/// The version of this protocol; a process refuses an offer of another.
pub const PROTOCOL: u32 = 1;

/// Why a hand-over did not happen (the old process keeps serving), seen from either side.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The new process could not be started.
    #[error("cannot start {}: {source}", exe.display())]
    Spawn {
        /// The binary.
        exe: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The new process exited before it was ready.
    #[error("the new process (pid {pid}) exited before it was ready: {status}")]
    Exited {
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// The new process did not say it was ready in time.
    #[error("the new process (pid {pid}) was not ready within {timeout:?}")]
    NotReady {
        /// Its pid.
        pid: u32,
        /// `handover_timeout`.
        timeout: std::time::Duration,
    },
    /// The new process started but could not take over, and said why.
    #[error("the new process (pid {pid}) could not start: {reason}")]
    Refused {
        /// Its pid.
        pid: u32,
        /// What it said.
        reason: String,
    },
    /// The old process's listening sockets could not be duplicated for the offer.
    #[error("cannot offer the listening sockets: {0}")]
    Offer(std::io::Error),
    /// The channel between the two processes failed.
    #[error("hand-over channel: {0}")]
    Channel(#[from] ChannelError),
    /// The other side speaks another version of the protocol, or is not who it should be.
    #[error("{0}")]
    Protocol(String),
}

/// What crosses the channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum Message {
    /// Old -> new: what is handed over; [`Offer::fds`] descriptors follow, attached to this
    /// message and to the [`Message::MoreFds`] after it, in the offer's order.
    Offer(Offer),
    /// Old -> new: more descriptors of the offer.
    MoreFds,
    /// New -> old: every socket accepts in the new process.
    Ready {
        /// The new process's pid.
        pid: u32,
    },
    /// New -> old: the new process cannot take over and exits.
    Failed {
        /// Why, for the old process's log.
        reason: String,
    },
    /// Old -> new: the old process stopped accepting and told systemd the new main pid.
    Released,
}

/// What the old process hands over, besides the descriptors themselves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// [`PROTOCOL`].
    pub protocol: u32,
    /// The old process's pid.
    pub pid: u32,
    /// The listeners, in config order; their sockets are the first descriptors, in this order.
    pub listeners: Vec<OfferedListener>,
    /// Where the MI's HTTP socket listens, if it does; its descriptor comes last.
    pub mi_http: Option<SocketAddr>,
    /// The MI FIFO, if there is one (the new process opens it by path, then checks it is the
    /// same inode).
    pub fifo: Option<OfferedFifo>,
}

impl Offer {
    /// How many descriptors go with the offer.
    pub fn fds(&self) -> usize {
        self.listeners.iter().map(|l| l.sockets).sum::<usize>()
            + usize::from(self.mi_http.is_some())
    }
}

/// One listener of the old process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfferedListener {
    /// Its name (`listener[0]`...), to match a port-0 listener.
    pub name: String,
    /// The address in its config (what the new process's config is matched against).
    pub listen: SocketAddr,
    /// The address its sockets are bound to.
    pub local: SocketAddr,
    /// How many sockets (the old process's workers).
    pub sockets: usize,
}

/// The old process's MI FIFO.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfferedFifo {
    /// `fifo_name`.
    pub path: PathBuf,
    /// Its device.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
}

/// One listener's sockets, kept by the running agent so it can offer them: duplicates of the
/// sockets its workers accept on.
#[derive(Debug)]
pub struct ListenerSockets {
    /// The listener's name.
    pub name: String,
    /// The address in its config.
    pub listen: SocketAddr,
    /// The address bound.
    pub local: SocketAddr,
    /// One per worker.
    pub sockets: Vec<OwnedFd>,
}

/// Builds the offer of `listeners` and the MI's `mi` sockets, with duplicates of every
/// descriptor in the offer's order.
pub fn offer(
    listeners: &[ListenerSockets],
    mi: heptap_mi::Handover,
) -> std::io::Result<(Offer, Vec<OwnedFd>)> {
    let mut fds = Vec::new();
    let mut offered = Vec::new();
    for l in listeners {
        for s in &l.sockets {
            fds.push(s.as_fd().try_clone_to_owned()?);
        }
        offered.push(OfferedListener {
            name: l.name.clone(),
            listen: l.listen,
            local: l.local,
            sockets: l.sockets.len(),
        });
    }
    let mi_http = match mi.http {
        Some(fd) => {
            let addr = std::net::TcpListener::from(fd.try_clone()?).local_addr()?;
            fds.push(fd);
            Some(addr)
        }
        None => None,
    };
    let offer = Offer {
        protocol: PROTOCOL,
        pid: std::process::id(),
        listeners: offered,
        mi_http,
        fifo: mi.fifo.map(|(path, id)| OfferedFifo {
            path,
            dev: id.dev,
            ino: id.ino,
        }),
    };
    Ok((offer, fds))
}

/// What the new process received, taken listener by listener as it binds.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Each offered listener and its sockets, until taken.
    pub listeners: Vec<(OfferedListener, Vec<std::net::TcpListener>)>,
    /// The MI's HTTP socket and FIFO.
    pub mi: heptap_mi::Inherited,
}

impl Inherited {
    /// Nothing inherited: an ordinary start.
    pub fn none() -> Self {
        Self::default()
    }

    /// The sockets of the old process's listener on `listen` (with `name`, when the port is 0),
    /// if there was one: the new process accepts on every one of them.
    pub fn take_listener(
        &mut self,
        name: &str,
        listen: SocketAddr,
    ) -> Option<Vec<std::net::TcpListener>> {
        let i = self
            .listeners
            .iter()
            .position(|(l, _)| l.listen == listen && (listen.port() != 0 || l.name == name))?;
        let (offered, sockets) = self.listeners.remove(i);
        tracing::info!(listener = %name, listen = %offered.local, sockets = sockets.len(), "Taking the listening sockets over");
        Some(sockets)
    }

    /// Closes what no listener of the new config took: the listeners the config no longer has
    /// (connections queued on them are refused, as at any removal of a listener).
    pub fn close_the_rest(&mut self) {
        for (offered, _) in self.listeners.drain(..) {
            tracing::warn!(listener = %offered.name, listen = %offered.local, "The new config has no listener here: its sockets are closed");
        }
    }
}

/// How this process was started, taken when it starts: what a hand-over runs again.
#[derive(Clone, Debug)]
pub struct Image {
    /// The binary: the path it was started as (`argv[0]`, made absolute), so that a package
    /// upgrade that replaced the file runs the new version; `/proc/self/exe` would name the
    /// old, deleted file. When `argv[0]` has no `/` (found through `PATH`), the file
    /// `/proc/self/exe` named at start.
    pub exe: PathBuf,
    /// The arguments after `argv[0]`.
    pub args: Vec<OsString>,
}

impl Image {
    /// This process's, read now: call it as the process starts.
    pub fn of_this_process() -> Self {
        let mut argv = std::env::args_os();
        let argv0 = argv.next().map(PathBuf::from);
        let args = argv.collect();
        let exe = match argv0 {
            Some(p) if p.as_os_str().as_encoded_bytes().contains(&b'/') => {
                std::path::absolute(&p).unwrap_or(p)
            }
            other => std::env::current_exe()
                .ok()
                .or(other)
                .unwrap_or_else(|| PathBuf::from("heptap")),
        };
        Self { exe, args }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_port_0_listener_is_matched_by_name_as_well() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let fixed: SocketAddr = "127.0.0.1:5062".parse().unwrap();
        let listener = |name: &str, listen| {
            (
                OfferedListener {
                    name: name.to_owned(),
                    listen,
                    local: listen,
                    sockets: 0,
                },
                Vec::new(),
            )
        };
        let mut inherited = Inherited {
            listeners: vec![listener("a", any), listener("b", any), listener("c", fixed)],
            mi: Default::default(),
        };
        assert!(inherited.take_listener("z", any).is_none());
        assert!(inherited.take_listener("b", any).is_some());
        assert!(inherited.take_listener("b", any).is_none(), "taken once");
        // A fixed address is the listener, whatever it is called now.
        assert!(inherited.take_listener("renamed", fixed).is_some());
        assert_eq!(inherited.listeners.len(), 1);
    }

    #[test]
    fn the_offer_counts_every_socket_and_the_mi_http_one() {
        let offer = Offer {
            protocol: PROTOCOL,
            pid: 1,
            listeners: vec![
                OfferedListener {
                    name: "a".into(),
                    listen: "127.0.0.1:1".parse().unwrap(),
                    local: "127.0.0.1:1".parse().unwrap(),
                    sockets: 3,
                };
                2
            ],
            mi_http: Some("127.0.0.1:2".parse().unwrap()),
            fifo: None,
        };
        assert_eq!(offer.fds(), 7);
        let json = serde_json::to_string(&Message::Offer(offer.clone())).unwrap();
        match serde_json::from_str(&json).unwrap() {
            Message::Offer(back) => assert_eq!(back, offer),
            other => panic!("{other:?}"),
        }
    }
}
