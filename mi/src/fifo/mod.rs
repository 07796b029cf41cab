//! The FIFO server (OpenSIPS mi_fifo): creates the FIFO with `fifo_mode` and owner, reads it
//! through a read-write handle (so it never sees end-of-file when clients close), cuts the
//! stream into requests (`frame`), answers each in its own task through the reply FIFO it
//! names (`reply`), and re-creates the FIFO if it is deleted or replaced.

pub(crate) mod frame;
pub(crate) mod reply;
pub(crate) mod scan;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::stat::Mode;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::Core;
use crate::error::MiError;
use crate::handover::{FifoId, FifoState};
use crate::jsonrpc::{self, Id, RpcError};
use crate::settings::MiSettings;
use crate::text::TextReply;
use crate::trace::Origin;
use frame::{Bad, Cut, Frame, FrameParser, Framing};

/// Requests answered at once; the reader waits for a slot beyond that (backpressure).
const MAX_IN_FLIGHT: usize = 64;

/// The FIFO as created: which inode is ours, so a replaced or deleted one is noticed.
#[derive(Debug)]
struct Created {
    /// The read-write handle requests are read from.
    receiver: pipe::Receiver,
    /// Device of the FIFO we created.
    dev: u64,
    /// Inode of the FIFO we created.
    ino: u64,
}

/// The FIFO's owner, resolved from `fifo_user` / `fifo_group` when the MI is built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Owner {
    /// Owner uid; `None` keeps heptap's.
    uid: Option<u32>,
    /// Group gid; `None` keeps heptap's.
    gid: Option<u32>,
}

impl Owner {
    /// Resolves `fifo_user` / `fifo_group` (names or numeric ids).
    pub(crate) fn resolve(settings: &MiSettings) -> Result<Owner, MiError> {
        let uid = match settings.fifo_user.as_deref() {
            None => None,
            Some(u) => Some(match u.parse::<u32>() {
                Ok(n) => n,
                Err(_) => nix::unistd::User::from_name(u)
                    .ok()
                    .flatten()
                    .map(|user| user.uid.as_raw())
                    .ok_or_else(|| MiError::UnknownUser(u.to_owned()))?,
            }),
        };
        let gid = match settings.fifo_group.as_deref() {
            None => None,
            Some(g) => Some(match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => nix::unistd::Group::from_name(g)
                    .ok()
                    .flatten()
                    .map(|group| group.gid.as_raw())
                    .ok_or_else(|| MiError::UnknownGroup(g.to_owned()))?,
            }),
        };
        Ok(Owner { uid, gid })
    }
}

/// Creates the FIFO (replacing a stale FIFO, never another kind of file), sets its mode and
/// owner, and opens it read-write and non-blocking.
fn create(path: &Path, mode: u32, owner: &Owner) -> Result<Created, MiError> {
    let err = |source: std::io::Error| MiError::Fifo {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => return Err(MiError::FifoPathTaken(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(mode))
        .map_err(|e| err(std::io::Error::from(e)))?;
    // mkfifo is subject to the umask; fifo_mode is meant literally.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    if owner.uid.is_some() || owner.gid.is_some() {
        std::os::unix::fs::chown(path, owner.uid, owner.gid).map_err(err)?;
    }
    let receiver = pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .map_err(err)?;
    let meta = std::fs::symlink_metadata(path).map_err(err)?;
    Ok(Created {
        receiver,
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Opens the FIFO another heptap process serves at `path` (a hand-over), read-write and
/// non-blocking, if it still is the inode `id`; `None` (with the reason logged) otherwise.
fn adopt(path: &Path, id: FifoId) -> Option<Created> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .and_then(|file| Ok((file.metadata()?, file)));
    let why = match opened {
        Ok((meta, file))
            if meta.file_type().is_fifo() && meta.dev() == id.dev && meta.ino() == id.ino =>
        {
            match pipe::Receiver::from_file(file) {
                Ok(receiver) => {
                    return Some(Created {
                        receiver,
                        dev: id.dev,
                        ino: id.ino,
                    });
                }
                Err(e) => e.to_string(),
            }
        }
        Ok(_) => "it is no longer the FIFO the previous process served".to_owned(),
        Err(e) => e.to_string(),
    };
    tracing::warn!(fifo = %path.display(), reason = %why, "Cannot take the MI FIFO over; creating a new one");
    None
}

/// Whether the FIFO at `path` is still the one we created.
fn still_ours(path: &Path, created: &Created) -> bool {
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.file_type().is_fifo() && m.dev() == created.dev && m.ino() == created.ino)
}

/// The running FIFO server.
pub(crate) struct FifoServer {
    /// Answers the requests.
    core: Arc<Core>,
    /// `fifo_name`.
    path: PathBuf,
    /// `fifo_mode`, re-applied when the FIFO is re-created.
    mode: u32,
    /// `fifo_user` / `fifo_group`, re-applied too.
    owner: Owner,
    /// The FIFO currently served.
    created: Created,
    /// Which FIFO is served, for a hand-over; and whether it was handed over.
    state: Arc<FifoState>,
}

impl FifoServer {
    /// Creates the FIFO, or takes over `inherited` (the FIFO the previous process served at a
    /// hand-over) when the path still is that FIFO; errors here fail `Mi::start`.
    pub fn create(
        core: Arc<Core>,
        path: PathBuf,
        mode: u32,
        owner: Owner,
        inherited: Option<FifoId>,
        state: Arc<FifoState>,
    ) -> Result<Self, MiError> {
        let created = match inherited.and_then(|id| adopt(&path, id)) {
            Some(created) => {
                tracing::info!(fifo = %path.display(), "MI FIFO taken over");
                created
            }
            None => {
                let created = create(&path, mode, &owner)?;
                tracing::info!(fifo = %path.display(), mode = format!("{mode:o}"), "MI FIFO created");
                created
            }
        };
        state.set(FifoId {
            dev: created.dev,
            ino: created.ino,
        });
        Ok(FifoServer {
            core,
            path,
            mode,
            owner,
            created,
            state,
        })
    }

    /// Serves until `shutdown`, then removes the FIFO (if it is still ours).
    pub async fn run(mut self, shutdown: CancellationToken, recheck: Arc<Notify>) {
        let settings = &self.core.settings;
        let (max, timeout, every) = (
            settings.max_request_size,
            settings.request_timeout,
            settings.fifo_check_interval,
        );
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        // In-flight answers finish (each bounded by reply_timeout) before run() returns.
        let tracker = TaskTracker::new();
        let mut parser = FrameParser::new(max);
        let mut buf = vec![0u8; 16 * 1024];
        // When the first byte of the request being read arrived: it is given up
        // request_timeout later, however many bytes anyone writes meanwhile.
        let mut since: Option<Instant> = None;
        let mut check = tokio::time::interval_at(Instant::now() + every, every);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = since.map(|s| s + timeout);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                read = self.created.receiver.read(&mut buf) => match read {
                    Ok(0) => {
                        // Cannot happen on a read-write handle; treat it as a lost FIFO.
                        self.recreate(&mut parser);
                    }
                    Ok(n) => {
                        let read_at = Instant::now();
                        let (was_partial, taken) = (parser.has_partial(), parser.taken());
                        parser.push(&buf[..n]);
                        while let Some(frame) = parser.next_frame() {
                            self.spawn(frame, &permits, &tracker, &shutdown).await;
                        }
                        // The same request still unfinished keeps its deadline; a new one
                        // began in this read.
                        if !was_partial || parser.taken() != taken || since.is_none() {
                            since = Some(read_at);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(fifo = %self.path.display(), error = %e, "MI FIFO read failed");
                        self.recreate(&mut parser);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let expired = parser.expire();
                    for frame in expired.into_iter().chain(std::iter::from_fn(|| parser.next_frame())) {
                        self.spawn(frame, &permits, &tracker, &shutdown).await;
                    }
                    since = Some(Instant::now());
                }
                _ = check.tick() => self.check(&mut parser),
                _ = recheck.notified() => self.check(&mut parser),
            }
            if !parser.has_partial() {
                since = None;
            }
        }
        // Handed over, the FIFO is the next process's now: it stays.
        if !self.state.is_handed_over() && still_ours(&self.path, &self.created) {
            let _ = std::fs::remove_file(&self.path);
        }
        tracker.close();
        tracker.wait().await;
    }

    fn check(&mut self, parser: &mut FrameParser) {
        // Handed over, the FIFO at the path is the next process's business.
        if !self.state.is_handed_over() && !still_ours(&self.path, &self.created) {
            tracing::warn!(fifo = %self.path.display(), "MI FIFO removed or replaced; re-creating it");
            self.recreate(parser);
        }
    }

    fn recreate(&mut self, parser: &mut FrameParser) {
        match create(&self.path, self.mode, &self.owner) {
            Ok(created) => {
                self.state.set(FifoId {
                    dev: created.dev,
                    ino: created.ino,
                });
                self.created = created;
                *parser = FrameParser::new(self.core.settings.max_request_size);
                tracing::info!(fifo = %self.path.display(), "MI FIFO re-created");
            }
            Err(e) => {
                tracing::error!(error = %e, "MI FIFO cannot be re-created; will retry");
            }
        }
    }

    async fn spawn(
        &self,
        frame: Frame,
        permits: &Arc<Semaphore>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let permit = tokio::select! {
            p = Arc::clone(permits).acquire_owned() => p,
            _ = shutdown.cancelled() => return,
        };
        let Ok(permit) = permit else { return };
        let core = Arc::clone(&self.core);
        let server = reply::ServerFifo {
            path: self.path.clone(),
            dev: self.created.dev,
            ino: self.created.ino,
        };
        tracker.spawn(async move {
            let _permit = permit;
            answer(&core, frame, &server).await;
        });
    }
}

/// Answers one request (runs in its own task: a slow client delays nobody else); the reply
/// never goes into `server`.
async fn answer(core: &Core, frame: Frame, server: &reply::ServerFifo) {
    let (reply_name, reply) = match frame {
        Frame::Json { reply, body } => {
            let out = core.handle_jsonrpc(&body, &Origin::fifo()).await;
            (reply, out)
        }
        Frame::Text {
            command,
            reply,
            params,
        } => {
            let out = core.handle_text(&command, &params).await;
            (reply, Some(out.to_text()))
        }
        Frame::Bad {
            framing,
            reply,
            command,
            why,
        } => {
            core.control.count_mi_request(
                crate::trace::Backend::Fifo,
                crate::control::MiOutcome::Refused,
            );
            let limit = core.settings.max_request_size;
            let detail = match &why {
                Bad::TooLarge => format!("request larger than {limit} bytes"),
                Bad::Garbled(w) => (*w).to_owned(),
                Bad::Incomplete(_) => "incomplete request".to_owned(),
            };
            let cause = match &why {
                Bad::Incomplete(Cut::Timeout) => "not complete within request_timeout",
                Bad::Incomplete(Cut::NextRequest) => "another request began inside it",
                Bad::TooLarge | Bad::Garbled(_) => "",
            };
            tracing::warn!(
                reply_fifo = reply.as_deref().unwrap_or(""),
                command = command.as_deref().unwrap_or(""),
                reason = %detail,
                cause,
                "Bad MI FIFO request"
            );
            let text = match framing {
                Framing::Json => {
                    let error = match why {
                        Bad::TooLarge => RpcError::invalid_request().with_data(detail),
                        _ => RpcError::parse_error().with_data(detail),
                    };
                    jsonrpc::failure(&error, &Id::Null, core.style)
                }
                Framing::Text => TextReply {
                    code: 400,
                    reason: match &command {
                        Some(c) => format!("{detail} in command '{c}'"),
                        None => detail,
                    },
                    body: String::new(),
                    end_line: false,
                }
                .to_text(),
            };
            (reply.unwrap_or_default(), Some(text))
        }
    };
    let Some(reply) = reply else { return };
    if reply_name.is_empty() {
        return;
    }
    let s = &core.settings;
    let written = reply::write_reply(
        &s.reply_dir,
        &reply_name,
        reply.as_bytes(),
        s.reply_timeout,
        server,
    );
    if let Err(e) = written.await {
        tracing::warn!(error = %e, "MI reply not written");
    }
}
