//! The new process's side: connect to the old process, receive the offer and its sockets, and,
//! once everything is built, say ready (or why not) and wait to be released.

use std::os::fd::OwnedFd;
use std::time::Duration;

use super::channel::Channel;
use super::protocol::{ENV, HandoverError, Inherited, Message, Offer, PROTOCOL};

/// How long the old process may take to send its offer, and to release the new process once it
/// is ready: it does both at once, without waiting for anything.
const OLD_PROCESS_WAIT: Duration = Duration::from_secs(30);

/// A hand-over this process was started for (`$HEPTAP_HANDOVER`).
#[derive(Debug)]
pub struct Incoming {
    /// The channel to the old process.
    channel: Channel,
    /// The old process's pid.
    old_pid: u32,
    /// The sockets received, until the agent takes them.
    inherited: Inherited,
}

impl Incoming {
    /// The channel named by `$HEPTAP_HANDOVER`, if this process was started for a hand-over.
    pub fn channel_name() -> Option<String> {
        std::env::var(ENV).ok().filter(|n| !n.is_empty())
    }

    /// Connects to the old process's channel `name`, checks it is this process's parent, and
    /// receives the offer with its sockets.
    pub async fn connect(name: &str) -> Result<Self, HandoverError> {
        let channel = Channel::connect(name)?;
        let parent = nix::unistd::getppid().as_raw();
        let peer = channel.peer()?.pid.as_raw_nonzero().get();
        if peer != parent {
            return Err(HandoverError::Protocol(format!(
                "the hand-over channel {name} belongs to pid {peer}, not to this process's parent (pid {parent})"
            )));
        }
        let received = tokio::time::timeout(OLD_PROCESS_WAIT, receive_offer(&channel))
            .await
            .map_err(|_| {
                HandoverError::Protocol(format!(
                    "the old process sent no offer within {OLD_PROCESS_WAIT:?}"
                ))
            })?;
        let (offer, fds) = match received {
            Ok(received) => received,
            Err(e) => {
                let reason = e.to_string();
                let _ = channel.send(&Message::Failed { reason }, &[]).await;
                return Err(e);
            }
        };
        let old_pid = offer.pid;
        let inherited = split(offer, fds);
        Ok(Self {
            channel,
            old_pid,
            inherited,
        })
    }

    /// The sockets and the MI FIFO received, for the agent to serve.
    pub fn take_inherited(&mut self) -> Inherited {
        std::mem::take(&mut self.inherited)
    }

    /// Tells the old process this one cannot take over, and why (it logs it and keeps serving).
    pub async fn failed(&self, reason: &str) {
        let msg = Message::Failed {
            reason: reason.to_owned(),
        };
        if let Err(e) = self.channel.send(&msg, &[]).await {
            tracing::warn!(error = %e, "Cannot tell the old process why the hand-over failed");
        }
    }

    /// [`Incoming::ready`], logged: returns the old process's pid. A failure here is only
    /// logged: this process accepts already, and the old one stops accepting anyway once it
    /// hears `Ready`, or stops this one.
    pub async fn take_over(self) -> u32 {
        let old_pid = self.old_pid;
        match self.ready().await {
            Ok(()) => tracing::info!(old_pid, "Took over from the old process, which drains"),
            Err(e) => {
                tracing::warn!(old_pid, error = %e, "The old process did not confirm the hand-over");
            }
        }
        old_pid
    }

    /// Tells the old process every socket accepts here, and waits until it has stopped
    /// accepting and told systemd this process's pid.
    pub async fn ready(self) -> Result<(), HandoverError> {
        let pid = std::process::id();
        self.channel.send(&Message::Ready { pid }, &[]).await?;
        let released = tokio::time::timeout(OLD_PROCESS_WAIT, self.channel.recv::<Message>())
            .await
            .map_err(|_| {
                HandoverError::Protocol(format!(
                    "the old process (pid {}) did not release the sockets within {OLD_PROCESS_WAIT:?}",
                    self.old_pid
                ))
            })??;
        match released {
            (Message::Released, _) => Ok(()),
            (other, _) => Err(HandoverError::Protocol(format!(
                "the old process sent {other:?} instead of releasing the sockets"
            ))),
        }
    }
}

/// The offer and every descriptor it announces.
async fn receive_offer(channel: &Channel) -> Result<(Offer, Vec<OwnedFd>), HandoverError> {
    let (offer, mut fds) = match channel.recv::<Message>().await? {
        (Message::Offer(offer), fds) => (offer, fds),
        (other, _) => {
            return Err(HandoverError::Protocol(format!(
                "the old process sent {other:?} instead of its offer"
            )));
        }
    };
    if offer.protocol != PROTOCOL {
        return Err(HandoverError::Protocol(format!(
            "the old process speaks hand-over protocol {}, this one {PROTOCOL}",
            offer.protocol
        )));
    }
    while fds.len() < offer.fds() {
        match channel.recv::<Message>().await? {
            (Message::MoreFds, more) if !more.is_empty() => fds.extend(more),
            (other, _) => {
                return Err(HandoverError::Protocol(format!(
                    "the old process sent {other:?} with {} of {} sockets received",
                    fds.len(),
                    offer.fds()
                )));
            }
        }
    }
    if fds.len() != offer.fds() {
        return Err(HandoverError::Protocol(format!(
            "the old process sent {} sockets for an offer of {}",
            fds.len(),
            offer.fds()
        )));
    }
    Ok((offer, fds))
}

/// The descriptors, in the offer's order: each listener's sockets, then the MI's HTTP socket.
fn split(offer: Offer, fds: Vec<OwnedFd>) -> Inherited {
    let mut fds = fds.into_iter();
    let listeners = offer
        .listeners
        .into_iter()
        .map(|l| {
            let sockets = fds
                .by_ref()
                .take(l.sockets)
                .map(std::net::TcpListener::from)
                .collect();
            (l, sockets)
        })
        .collect();
    let http = offer
        .mi_http
        .and(fds.next())
        .map(std::net::TcpListener::from);
    let fifo = offer.fifo.map(|f| heptap_mi::FifoId {
        dev: f.dev,
        ino: f.ino,
    });
    Inherited {
        listeners,
        mi: heptap_mi::Inherited {
            http,
            fifo,
            handover: true,
        },
    }
}
