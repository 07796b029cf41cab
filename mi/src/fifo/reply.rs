//! Writing a reply into a client's reply FIFO without ever writing anywhere else and without
//! ever blocking the server (mi_fifo's mi_open_reply_pipe + mi_fifo_check, tightened):
//! the name must be a plain basename inside `reply_dir`; the file must be a FIFO, not a
//! symlink, not hard-linked, not the server's own FIFO (by device and inode), and the same
//! inode when opened as when checked; it is opened
//! write-only, non-blocking, without following links, retried 4 times 80 ms apart while no
//! reader has it open; the write has a deadline.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::libc;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

/// Tries after the first one while the client has not opened its reply FIFO yet (OpenSIPS
/// FIFO_REPLY_RETRIES).
const RETRIES: u32 = 4;
/// Wait between tries (OpenSIPS FIFO_REPLY_WAIT).
const RETRY_WAIT: Duration = Duration::from_millis(80);
/// Longest accepted reply FIFO name (NAME_MAX).
const MAX_NAME: usize = 255;

/// Why a reply was not written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplyError {
    /// The name is not a plain basename.
    #[error("forbidden reply FIFO name {0:?} (a basename without '.', '/' or '\\' is required)")]
    BadName(String),
    /// The path is a symbolic link.
    #[error("reply FIFO {0} is a symbolic link")]
    Symlink(PathBuf),
    /// The path is not a FIFO.
    #[error("reply FIFO {0} is not a FIFO")]
    NotFifo(PathBuf),
    /// The FIFO has more than one name.
    #[error("reply FIFO {0} is hard-linked")]
    HardLinked(PathBuf),
    /// The server's own FIFO: a reply written there would be read back as requests.
    #[error("reply FIFO {0} is the MI FIFO itself")]
    ServerFifo(PathBuf),
    /// The file changed between the check and the open.
    #[error("reply FIFO {0} was replaced while being opened")]
    Replaced(PathBuf),
    /// Nobody opened it for reading in time.
    #[error("no client reading reply FIFO {0}")]
    NoReader(PathBuf),
    /// The client did not read the whole reply in time.
    #[error("timed out writing to reply FIFO {0}")]
    Timeout(PathBuf),
    /// Any other failure.
    #[error("reply FIFO {path}: {source}")]
    Io {
        /// The reply FIFO.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The FIFO the server reads requests from, which is never a reply FIFO (whatever its name in
/// `reply_dir`).
#[derive(Clone, Debug)]
pub(crate) struct ServerFifo {
    /// `fifo_name`: whatever is there now is the server's too (it may have been re-created
    /// since the request was read).
    pub path: PathBuf,
    /// Device of the FIFO the request was read from.
    pub dev: u64,
    /// Inode of the FIFO the request was read from.
    pub ino: u64,
}

impl ServerFifo {
    /// Whether `meta` is the server's FIFO, as read from or as at `fifo_name` now.
    fn is(&self, meta: &fs::Metadata) -> bool {
        let same = |dev, ino| meta.dev() == dev && meta.ino() == ino;
        same(self.dev, self.ino)
            || fs::symlink_metadata(&self.path).is_ok_and(|now| same(now.dev(), now.ino()))
    }
}

/// The path of a reply FIFO: `reply_dir/name`, refused unless `name` is a plain basename.
pub(crate) fn reply_path(reply_dir: &Path, name: &str) -> Result<PathBuf, ReplyError> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME
        || name
            .chars()
            .any(|c| matches!(c, '.' | '/' | '\\') || c.is_control());
    if bad {
        return Err(ReplyError::BadName(name.to_owned()));
    }
    Ok(reply_dir.join(name))
}

/// Checks what is at `path` without following it.
fn check_fifo(path: &Path, server: &ServerFifo) -> Result<fs::Metadata, ReplyError> {
    let io_err = |source| ReplyError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(io_err)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(ReplyError::Symlink(path.to_owned()));
    }
    if !kind.is_fifo() {
        return Err(ReplyError::NotFifo(path.to_owned()));
    }
    if meta.nlink() > 1 {
        return Err(ReplyError::HardLinked(path.to_owned()));
    }
    if server.is(&meta) {
        return Err(ReplyError::ServerFifo(path.to_owned()));
    }
    Ok(meta)
}

/// Opens the checked FIFO for writing, retrying while it has no reader.
async fn open_checked(path: &Path, server: &ServerFifo) -> Result<File, ReplyError> {
    let mut tries = 0;
    loop {
        let before = check_fifo(path, server)?;
        let opened = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path);
        match opened {
            Ok(file) => {
                let after = file.metadata().map_err(|source| ReplyError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                let same = after.file_type().is_fifo()
                    && after.nlink() == 1
                    && after.dev() == before.dev()
                    && after.ino() == before.ino();
                if !same {
                    return Err(ReplyError::Replaced(path.to_owned()));
                }
                return Ok(file);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if tries == RETRIES {
                    return Err(ReplyError::NoReader(path.to_owned()));
                }
                tries += 1;
                tokio::time::sleep(RETRY_WAIT).await;
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(ReplyError::Symlink(path.to_owned()));
            }
            Err(source) => {
                return Err(ReplyError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Writes `reply` into the reply FIFO `name` inside `reply_dir`, within `timeout`; never into
/// `server`.
pub(crate) async fn write_reply(
    reply_dir: &Path,
    name: &str,
    reply: &[u8],
    timeout: Duration,
    server: &ServerFifo,
) -> Result<(), ReplyError> {
    let path = reply_path(reply_dir, name)?;
    let file = open_checked(&path, server).await?;
    let mut sender = pipe::Sender::from_file(file).map_err(|source| ReplyError::Io {
        path: path.clone(),
        source,
    })?;
    match tokio::time::timeout(timeout, sender.write_all(reply)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(ReplyError::Io { path, source }),
        Err(_) => Err(ReplyError::Timeout(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_basenames_are_reply_names() {
        let dir = Path::new("/run/heptap/");
        assert_eq!(
            reply_path(dir, "opensips_fifo_reply_1_2_3").unwrap(),
            Path::new("/run/heptap/opensips_fifo_reply_1_2_3")
        );
        for bad in [
            "",
            "../x",
            "a/b",
            "a\\b",
            "x.y",
            "..",
            "a\nb",
            &"n".repeat(256),
        ] {
            assert!(
                matches!(reply_path(dir, bad), Err(ReplyError::BadName(_))),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_server_fifo_is_refused_by_inode_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("heptap_fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let meta = fs::metadata(&fifo).unwrap();
        // Found under another name (as a bind mount would show it), or re-created since the
        // request was read (what is at fifo_name now): refused by identity either way.
        let by_identity = ServerFifo {
            path: dir.path().join("elsewhere"),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let at_fifo_name = ServerFifo {
            path: fifo,
            dev: meta.dev(),
            ino: u64::MAX,
        };
        for server in [by_identity, at_fifo_name] {
            let err = write_reply(
                dir.path(),
                "heptap_fifo",
                b"x",
                Duration::from_secs(1),
                &server,
            )
            .await
            .unwrap_err();
            assert!(matches!(err, ReplyError::ServerFifo(_)), "{err}");
        }
    }
}
