//! Where `heptap upgrade` watches a hand-over: each heptap listens on the abstract Unix socket
//! `heptap-upgrade-<pid>` and tells every watcher, one line each, how a hand-over goes:
//! `watching <pid>` once the watcher is registered (the client sends SIGUSR2 only then, so it
//! cannot miss the outcome), then `started <new pid>`, and `ready <new pid>`, `failed <why>`
//! or `refused <why>` (a SIGUSR2 that started nothing). Only root and heptap's own user may
//! watch (`SO_PEERCRED`).

use std::os::linux::net::SocketAddrExt;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::broadcast;

/// The abstract socket name heptap `pid` listens on.
pub fn socket_name(pid: u32) -> String {
    format!("heptap-upgrade-{pid}")
}

/// What happens to a hand-over, as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The new process runs.
    Started {
        /// Its pid.
        pid: u32,
    },
    /// The new process accepts; this one drains.
    Ready {
        /// Its pid.
        pid: u32,
    },
    /// The hand-over failed; this process keeps serving.
    Failed {
        /// Why.
        reason: String,
    },
    /// A SIGUSR2 started nothing (one is under way, or this process drains).
    Refused {
        /// Why.
        reason: String,
    },
}

impl Event {
    /// The line watchers get (one line: newlines in a reason become spaces).
    pub fn line(&self) -> String {
        let flat = |s: &str| s.replace(['\n', '\r'], " ");
        match self {
            Event::Started { pid } => format!("started {pid}\n"),
            Event::Ready { pid } => format!("ready {pid}\n"),
            Event::Failed { reason } => format!("failed {}\n", flat(reason)),
            Event::Refused { reason } => format!("refused {}\n", flat(reason)),
        }
    }

    /// Whether a watcher has heard all there is (it is then disconnected).
    fn is_last(&self) -> bool {
        !matches!(self, Event::Started { .. })
    }
}

/// The watchers of this process's hand-overs.
#[derive(Debug)]
pub struct Watch {
    /// Every watcher's feed.
    events: broadcast::Sender<Event>,
    /// The accept loop.
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Listens on [`socket_name`] of this process (a warning, and nobody can watch, when that
    /// fails: the hand-over itself does not need it).
    pub fn start() -> Option<Self> {
        let name = socket_name(std::process::id());
        let bound = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|addr| std::os::unix::net::UnixListener::bind_addr(&addr))
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::UnixListener::from_std(l)
            });
        let listener = match bound {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(socket = %format!("@{name}"), error = %e, "Cannot listen for `heptap upgrade`; SIGUSR2 still hands over");
                return None;
            }
        };
        let (events, _) = broadcast::channel(16);
        let feed = events.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if let Some(uid) = allowed(&stream) {
                    tokio::spawn(serve_watcher(stream, feed.subscribe(), uid));
                }
            }
        });
        Some(Self { events, task })
    }

    /// Something that tells the watchers from elsewhere (a hand-over under way).
    pub fn teller(&self) -> Teller {
        Teller(Some(self.events.clone()))
    }
}

/// Tells the watchers of a [`Watch`], if there is one.
#[derive(Clone, Debug, Default)]
pub struct Teller(Option<broadcast::Sender<Event>>);

impl Teller {
    /// Tells every watcher (nobody, when nobody watches or heptap could not listen).
    pub fn tell(&self, event: Event) {
        if let Some(events) = &self.0 {
            let _ = events.send(event);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watcher's uid when it may watch: root or heptap's own user.
fn allowed(stream: &UnixStream) -> Option<u32> {
    let uid = rustix::net::sockopt::socket_peercred(stream)
        .ok()?
        .uid
        .as_raw();
    let me = nix::unistd::geteuid().as_raw();
    if uid == 0 || uid == me {
        Some(uid)
    } else {
        tracing::warn!(
            uid,
            "A user other than root or heptap's tried to watch a hand-over; refused"
        );
        None
    }
}

/// Greets the watcher (it is registered from now on), then passes events on until the last, or
/// until the watcher goes away.
async fn serve_watcher(stream: UnixStream, mut events: broadcast::Receiver<Event>, uid: u32) {
    let (mut from, mut to) = stream.into_split();
    let hello = format!("watching {}\n", std::process::id());
    if to.write_all(hello.as_bytes()).await.is_err() {
        return;
    }
    tracing::debug!(uid, "A hand-over watcher connected");
    let mut sink = [0u8; 64];
    loop {
        let event = tokio::select! {
            e = events.recv() => match e {
                Ok(e) => e,
                Err(_) => return,
            },
            // A watcher says nothing; a read that returns means it closed.
            _ = from.read(&mut sink) => return,
        };
        if to.write_all(event.line().as_bytes()).await.is_err() || event.is_last() {
            return;
        }
    }
}
