//! The output file of a `file:` destination, which heptap may open as root before it gives up
//! privileges: never through a symbolic link (`O_NOFOLLOW`), a new one created 0640 and given
//! to the service user, an existing one refused unless it is a regular file with one name,
//! owned by root or the service user and not writable by others. Someone who can write the
//! directory can then neither point heptap at another file nor read or rewrite what it writes.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use nix::libc;

/// The mode of a file heptap creates: the service user writes, its group reads.
const NEW_FILE_MODE: u32 = 0o640;

/// Who a `file:` output belongs to: the service user (`[service] user` and `group`), or the
/// user heptap runs as when none is set. Root may own an existing file too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileOwner {
    /// The user a new file is given to, and who else than root may own an existing one.
    pub uid: u32,
    /// The group a new file is given to.
    pub gid: u32,
}

impl FileOwner {
    /// The user and group heptap runs as (effective ids).
    pub fn current() -> Self {
        FileOwner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }
}

impl Default for FileOwner {
    fn default() -> Self {
        FileOwner::current()
    }
}

/// Why an output file is not used.
#[derive(Debug, thiserror::Error)]
pub enum FileRefused {
    /// The system refused to create, open or inspect it.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A symbolic link: it could point anywhere (another user's or a root-only file).
    #[error("it is a symbolic link, which is not followed")]
    Symlink,
    /// A FIFO, device, socket or directory.
    #[error("it is not a regular file")]
    NotRegular,
    /// Someone else's file: they could read or rewrite the traces.
    #[error("it is owned by uid {owner}; only root{} may own it", also(*.allowed))]
    Owner {
        /// Its owner.
        owner: u32,
        /// The service user.
        allowed: u32,
    },
    /// Anyone can write it.
    #[error("it is writable by others (mode {mode:04o})")]
    WritableByOthers {
        /// Its permission bits.
        mode: u32,
    },
    /// It has other names, maybe in places the service user cannot see.
    #[error("it has {links} names (hard links)")]
    HardLinked {
        /// Its link count.
        links: u64,
    },
}

/// Who else than root may own an output file, for [`FileRefused::Owner`].
fn also(allowed: u32) -> String {
    if allowed == 0 {
        String::new()
    } else {
        format!(" or the service user (uid {allowed})")
    }
}

/// Opens `path` for appending, creating it (0640, given to `owner`) when it does not exist.
pub(crate) fn open(path: &Path, owner: FileOwner) -> Result<File, FileRefused> {
    // Created or found: a file removed between the two tries is created on the second.
    for _ in 0..2 {
        // O_EXCL creates a file of our own, and never through a link.
        match options().create_new(true).mode(NEW_FILE_MODE).open(path) {
            Ok(file) => return adopt_new(path, file, owner),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(FileRefused::Io(e)),
        }
        match open_existing(path, owner) {
            Err(FileRefused::Io(e)) if e.kind() == io::ErrorKind::NotFound => continue,
            opened => return opened,
        }
    }
    Err(FileRefused::Io(io::Error::new(
        io::ErrorKind::NotFound,
        "removed while being opened",
    )))
}

/// What [`open`] checks, without creating anything: an existing file as `open` would take it,
/// or, for a new one, that its directory exists.
pub(crate) fn check(path: &Path, owner: FileOwner) -> Result<(), FileRefused> {
    match fs::symlink_metadata(path) {
        Ok(_) => open_existing(path, owner).map(drop),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if fs::metadata(dir)?.is_dir() {
                Ok(())
            } else {
                Err(FileRefused::Io(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "not a directory",
                )))
            }
        }
        Err(e) => Err(FileRefused::Io(e)),
    }
}

/// Append-only, no link followed, no blocking on a FIFO, no controlling terminal.
fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY);
    o
}

/// Opens a file that exists: looked at before (nothing but a regular file is opened at all)
/// and checked again on the open descriptor (what was opened is what counts).
fn open_existing(path: &Path, owner: FileOwner) -> Result<File, FileRefused> {
    let before = fs::symlink_metadata(path)?;
    if before.file_type().is_symlink() {
        return Err(FileRefused::Symlink);
    }
    acceptable(&before, owner)?;
    let file = match options().open(path) {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(FileRefused::Symlink),
        // A FIFO nobody reads, put there after the look.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(FileRefused::NotRegular),
        Err(e) => return Err(FileRefused::Io(e)),
    };
    // It may have been replaced since the look: what was opened is what is checked.
    acceptable(&file.metadata()?, owner)?;
    Ok(file)
}

/// The checks an existing file must pass.
fn acceptable(meta: &fs::Metadata, owner: FileOwner) -> Result<(), FileRefused> {
    if !meta.file_type().is_file() {
        return Err(FileRefused::NotRegular);
    }
    if meta.uid() != 0 && meta.uid() != owner.uid {
        return Err(FileRefused::Owner {
            owner: meta.uid(),
            allowed: owner.uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o002 != 0 {
        return Err(FileRefused::WritableByOthers { mode });
    }
    if meta.nlink() > 1 {
        return Err(FileRefused::HardLinked {
            links: meta.nlink(),
        });
    }
    Ok(())
}

/// A file just created: exactly 0640 (the umask may have taken more), owned by `owner` (heptap
/// may be root, about to become the service user). Removed again if that fails.
fn adopt_new(path: &Path, file: File, owner: FileOwner) -> Result<File, FileRefused> {
    let adopted = file
        .set_permissions(fs::Permissions::from_mode(NEW_FILE_MODE))
        .and_then(|()| {
            if FileOwner::current() == owner {
                Ok(())
            } else {
                std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid))
            }
        });
    match adopted {
        Ok(()) => Ok(file),
        Err(e) => {
            let _ = fs::remove_file(path);
            Err(FileRefused::Io(e))
        }
    }
}
