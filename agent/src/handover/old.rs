//! The old process's side: start the new process, offer it the sockets, wait until it is ready
//! (or has failed), and release it. The drain that follows is the agent's
//! (`Running::drain_after_handover`).

use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::channel::{Channel, ChannelError, ChannelListener, MAX_FDS};
use super::protocol::{ENV, HandoverError, Image, Message, Offer};
use super::watch::{Event, Teller, Watch};

/// A hand-over under way.
type Attempt = Pin<Box<dyn Future<Output = Result<NewProcess, HandoverError>> + Send>>;

/// The hand-overs of a serving process: at most one at a time, watched by `heptap upgrade`.
#[derive(Debug)]
pub struct Upgrades {
    /// What to start.
    image: Image,
    /// `heptap upgrade`'s watchers.
    watch: Option<Watch>,
    /// The attempt under way, if any.
    attempt: Option<AttemptBox>,
}

/// [`Attempt`] with a `Debug` for [`Upgrades`].
struct AttemptBox(Attempt);

impl std::fmt::Debug for AttemptBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attempt")
    }
}

impl Upgrades {
    /// Ready for SIGUSR2: `image` is what to start. Starts the watch socket of
    /// `heptap upgrade`.
    pub fn new(image: Image) -> Self {
        Self {
            image,
            watch: Watch::start(),
            attempt: None,
        }
    }

    fn teller(&self) -> Teller {
        self.watch.as_ref().map(Watch::teller).unwrap_or_default()
    }

    /// SIGUSR2: starts a hand-over of the sockets `offer()` gives (the running agent's), the
    /// new process given `timeout` (`handover_timeout`) to be ready, unless one is under way.
    pub fn begin(
        &mut self,
        offer: impl FnOnce() -> std::io::Result<(Offer, Vec<OwnedFd>)>,
        timeout: Duration,
    ) {
        if self.attempt.is_some() {
            self.refuse("a hand-over is already under way".to_owned());
            return;
        }
        let (offer, fds) = match offer() {
            Ok(offered) => offered,
            Err(e) => {
                let e = HandoverError::Offer(e);
                tracing::error!(error = %e, "SIGUSR2: no hand-over; this process keeps serving");
                self.teller().tell(Event::Failed {
                    reason: e.to_string(),
                });
                return;
            }
        };
        tracing::info!(exe = %self.image.exe.display(), sockets = fds.len(), "SIGUSR2: handing over to a new process");
        let (image, teller) = (self.image.clone(), self.teller());
        let attempt = async move {
            launch(&image, offer, fds, timeout, |pid| {
                teller.tell(Event::Started { pid });
            })
            .await
        };
        self.attempt = Some(AttemptBox(Box::pin(attempt)));
    }

    /// The outcome of the hand-over under way (never returns while there is none).
    pub async fn outcome(&mut self) -> Result<NewProcess, HandoverError> {
        let result = match &mut self.attempt {
            Some(attempt) => attempt.0.as_mut().await,
            None => std::future::pending().await,
        };
        self.attempt = None;
        if let Err(e) = &result {
            tracing::error!(error = %e, "Hand-over failed; this process keeps serving as before");
            self.teller().tell(Event::Failed {
                reason: e.to_string(),
            });
        }
        result
    }

    /// A SIGUSR2 that starts nothing: one is under way, or this process drains.
    pub fn refuse(&self, reason: String) {
        tracing::warn!("SIGUSR2 refused: {reason}");
        self.teller().tell(Event::Refused { reason });
    }

    /// The new process took over.
    pub fn taken_over(&self, new_pid: u32) {
        self.teller().tell(Event::Ready { pid: new_pid });
    }

    /// This process stops: a hand-over under way is given up (its new process stopped).
    pub fn give_up(&mut self) {
        if self.attempt.take().is_some() {
            tracing::info!("The hand-over under way is given up");
            self.teller().tell(Event::Failed {
                reason: "the old process was told to stop".to_owned(),
            });
        }
    }
}

/// A new process that said it is ready, not yet released: dropping it (the old process was told
/// to stop meanwhile) stops it, as any [`Launch`] that does not end in a hand-over does.
#[derive(Debug)]
pub struct NewProcess {
    /// The channel to it.
    channel: Channel,
    /// The child; stopped on drop unless released.
    child: Launched,
    /// Its pid.
    pub pid: u32,
}

impl NewProcess {
    /// Tells the new process it owns the sockets now (the old one no longer accepts, systemd
    /// knows the new main pid). From here on the new process lives on its own.
    pub async fn release(mut self) {
        if let Err(e) = self.channel.send(&Message::Released, &[]).await {
            // It is serving already; it learns the rest from the channel closing.
            tracing::warn!(pid = self.pid, error = %e, "Cannot tell the new process it was released");
        }
        self.child.disarm();
    }
}

/// The child while a hand-over is under way: SIGTERM on drop unless disarmed, so a hand-over
/// that fails (or is given up) never leaves a second heptap behind holding the sockets. It
/// drains what it may have accepted, as at any SIGTERM; tokio reaps it.
#[derive(Debug)]
struct Launched {
    /// The process.
    child: Child,
    /// Its pid (read once: `Child::id` is `None` after it is reaped).
    pid: u32,
    /// Whether to stop it on drop.
    armed: bool,
}

impl Launched {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if self.armed && matches!(self.child.try_wait(), Ok(None)) {
            let pid = nix::unistd::Pid::from_raw(self.pid as i32);
            if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
                tracing::warn!(pid = self.pid, error = %e, "Cannot stop the new process");
            } else {
                tracing::info!(pid = self.pid, "Stopped the new process (SIGTERM)");
            }
        }
    }
}

/// Starts the new process from `image` and offers it `offer` with its `fds`; returns once it
/// says it is ready. Any error leaves this process as it was (the new one, if it runs, is
/// stopped); `on_started` is told the new process's pid as soon as it runs.
async fn launch(
    image: &Image,
    offer: Offer,
    fds: Vec<OwnedFd>,
    timeout: Duration,
    on_started: impl FnOnce(u32),
) -> Result<NewProcess, HandoverError> {
    let deadline = Instant::now() + timeout;
    let name = format!(
        "heptap-handover-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    );
    let listener = ChannelListener::bind(&name)?;
    let child = Command::new(&image.exe)
        .args(&image.args)
        .env(ENV, &name)
        .stdin(Stdio::null())
        // stdout and stderr are this process's: under systemd the journal, where the new
        // process logs for the rest of its life (a pipe to this one would break when it exits).
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| HandoverError::Spawn {
            exe: image.exe.clone(),
            source,
        })?;
    let Some(pid) = child.id() else {
        return Err(HandoverError::Protocol(
            "the new process has no pid".to_owned(),
        ));
    };
    let mut child = Launched {
        child,
        pid,
        armed: true,
    };
    on_started(pid);
    tracing::info!(pid, exe = %image.exe.display(), "Started the new process");

    // Biased: a message the new process sent before it exited is read before its exit is
    // seen, so the old process logs the reason rather than only the status.
    let channel = tokio::select! {
        biased;
        r = accept_from(&listener, pid) => r?,
        status = child.child.wait() => return Err(exited(pid, status)),
        () = tokio::time::sleep_until(deadline) => return Err(HandoverError::NotReady { pid, timeout }),
    };
    drop(listener);
    tokio::select! {
        biased;
        r = send_offer(&channel, &offer, &fds) => r?,
        () = tokio::time::sleep_until(deadline) => return Err(HandoverError::NotReady { pid, timeout }),
    }
    drop(fds);
    let reply = tokio::select! {
        biased;
        r = channel.recv::<Message>() => r,
        status = child.child.wait() => {
            // What it said before it went is still in the channel.
            match tokio::time::timeout(Duration::from_secs(1), channel.recv::<Message>()).await {
                Ok(Ok((Message::Failed { reason }, _))) => return Err(HandoverError::Refused { pid, reason }),
                _ => return Err(exited(pid, status)),
            }
        }
        () = tokio::time::sleep_until(deadline) => return Err(HandoverError::NotReady { pid, timeout }),
    };
    match reply {
        Ok((Message::Ready { pid: said }, _)) if said == pid => {}
        Ok((Message::Ready { pid: said }, _)) => {
            return Err(HandoverError::Protocol(format!(
                "the new process (pid {pid}) said it is pid {said}"
            )));
        }
        Ok((Message::Failed { reason }, _)) => return Err(HandoverError::Refused { pid, reason }),
        Ok((other, _)) => {
            return Err(HandoverError::Protocol(format!(
                "the new process (pid {pid}) sent {other:?}"
            )));
        }
        // Closed without a word: its exit status says more.
        Err(ChannelError::Closed) => {
            return match tokio::time::timeout(Duration::from_secs(1), child.child.wait()).await {
                Ok(status) => Err(exited(pid, status)),
                Err(_) => Err(ChannelError::Closed.into()),
            };
        }
        Err(e) => return Err(e.into()),
    }
    Ok(NewProcess {
        channel,
        child,
        pid,
    })
}

fn exited(pid: u32, status: std::io::Result<std::process::ExitStatus>) -> HandoverError {
    match status {
        Ok(status) => HandoverError::Exited { pid, status },
        Err(e) => {
            HandoverError::Protocol(format!("cannot wait for the new process (pid {pid}): {e}"))
        }
    }
}

/// Accepts the connection of the process `pid`; any other process's is closed unanswered.
async fn accept_from(listener: &ChannelListener, pid: u32) -> Result<Channel, HandoverError> {
    loop {
        let (channel, peer) = listener.accept().await?;
        let from = peer.pid.as_raw_nonzero().get() as u32;
        if from == pid {
            return Ok(channel);
        }
        tracing::warn!(
            from,
            expected = pid,
            "A process other than the new heptap connected to the hand-over channel; ignored"
        );
    }
}

/// The offer, then the rest of its descriptors, [`MAX_FDS`] at a time.
async fn send_offer(
    channel: &Channel,
    offer: &Offer,
    fds: &[OwnedFd],
) -> Result<(), HandoverError> {
    let fds: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let mut batches = fds.chunks(MAX_FDS);
    channel
        .send(
            &Message::Offer(offer.clone()),
            batches.next().unwrap_or(&[]),
        )
        .await?;
    for batch in batches {
        channel.send(&Message::MoreFds, batch).await?;
    }
    Ok(())
}
