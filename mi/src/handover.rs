//! What the MI hands to the next heptap process at a hand-over (SIGUSR2), and takes from the
//! previous one: the HTTP listening socket (clients queued in its backlog are answered by the
//! new process, none is refused) and the FIFO (the very same inode keeps being read, so a
//! client that opened it before the switch is answered too).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Which FIFO a server reads: the inode it created. The process that takes over serves that
/// inode only, so a FIFO someone else put at the path in the meantime is not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FifoId {
    /// The device of the FIFO.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
}

/// What [`crate::Mi::start_with`] serves instead of creating its own.
#[derive(Debug, Default)]
pub struct Inherited {
    /// The previous process's HTTP listening socket: served when it is bound where
    /// `http_listen` says (port 0 in the config: any port), otherwise closed and a new one bound.
    pub http: Option<std::net::TcpListener>,
    /// The previous process's FIFO: served when `fifo_name` still is this inode, otherwise a new
    /// FIFO is created as at any start.
    pub fifo: Option<FifoId>,
    /// Started by a hand-over: the previous process may still hold `metrics_listen`, which is
    /// then bound as soon as it lets go.
    pub handover: bool,
}

/// What a running MI gives the next process (see [`crate::MiRunning::handover`]).
#[derive(Debug)]
pub struct Handover {
    /// A duplicate of the HTTP listening socket.
    pub http: Option<OwnedFd>,
    /// The FIFO served now: its path and inode.
    pub fifo: Option<(PathBuf, FifoId)>,
}

/// What the FIFO server and [`crate::MiRunning`] share: which FIFO is served now (it changes
/// when the FIFO is re-created), and whether to leave it in place at the end.
#[derive(Debug, Default)]
pub(crate) struct FifoState {
    /// The FIFO being served.
    id: Mutex<Option<FifoId>>,
    /// Set once another process serves the FIFO: stopping must not remove it.
    handed_over: AtomicBool,
}

impl FifoState {
    pub(crate) fn set(&self, id: FifoId) {
        *self.id.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
    }

    pub(crate) fn get(&self) -> Option<FifoId> {
        *self.id.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn hand_over(&self) {
        self.handed_over.store(true, Ordering::Release);
    }

    pub(crate) fn is_handed_over(&self) -> bool {
        self.handed_over.load(Ordering::Acquire)
    }
}
