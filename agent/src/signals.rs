//! Process signals, each with one meaning: TERM drains, INT stops at once, HUP reloads, USR2
//! hands over to a new process (see `handover`).

use tokio::signal::unix::{SignalKind, signal};

/// What a signal asks of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: stop accepting, let relayed connections finish within the grace period, flush.
    Terminate,
    /// SIGINT: stop now.
    Interrupt,
    /// SIGHUP: re-read the config and swap what can be swapped.
    Reload,
    /// SIGUSR2: start a new heptap from the binary on disk and hand it the listening sockets.
    Upgrade,
}

/// A stream of the signals heptap acts on.
#[derive(Debug)]
pub struct Signals {
    /// SIGTERM.
    term: tokio::signal::unix::Signal,
    /// SIGINT.
    int: tokio::signal::unix::Signal,
    /// SIGHUP.
    hup: tokio::signal::unix::Signal,
    /// SIGUSR2.
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. From here on these signals no longer kill the process.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Terminate,
            _ = self.int.recv() => Signal::Interrupt,
            _ = self.hup.recv() => Signal::Reload,
            _ = self.usr2.recv() => Signal::Upgrade,
        }
    }
}
