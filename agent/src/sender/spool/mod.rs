//! A HEP destination's disk spool: what the memory queue cannot hold while the collector is down
//! or slow, kept in segment files and replayed, oldest first, once it is back.
//!
//! Each lane writes its own *chain* of segments (`seg-<instance>-<lane>-<seq>.seg` in the
//! destination's directory), so the spool keeps the lane's order, which is the order of every
//! relayed connection's packets (docs/senders.md). A segment is created under a temporary name,
//! locked (`flock`) and only then renamed into place; its writer holds the lock until it closes
//! it, and a reader takes a segment only by locking it. So two processes sharing the directory (a
//! restart, the SIGUSR2 hand-over, a reload that replaces the destination) never read a segment
//! being written or read by the other: the new one *adopts* the old one's closed segments, chain
//! by chain, in order, and stops at the first locked one of a chain.
//!
//! Everything here is blocking file I/O: the destination's task calls it on the blocking thread
//! pool, never on the relay's threads. The bytes of a segment are [`segment`]'s.

pub mod segment;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heptap_config::HepSpool;
use nix::fcntl::{AT_FDCWD, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::file::FileOwner;
use crate::stats::{Counter, Stats};
use segment::{CURSOR_AT, HEADER_LEN, MAX_RECORD, Next};

/// The destination directory's mode: only the service user may list or read the spool (it holds
/// SIP with credentials, maybe TLS secrets).
const DIR_MODE: u32 = 0o700;
/// A segment's mode.
const FILE_MODE: u32 = 0o600;
/// Segment file names: `seg-<instance>-<lane>-<seq>.seg`.
const PREFIX: &str = "seg-";
/// See [`PREFIX`].
const SUFFIX: &str = ".seg";
/// A segment being created: ignored by readers until it is renamed.
const TMP_PREFIX: &str = ".tmp-";
/// The most bytes read from a segment at once when replaying.
const READ_CHUNK: usize = 256 * 1024;
/// The largest segment file a reader takes over (bigger is no segment of ours).
const MAX_ADOPT_BYTES: u64 = 256 << 20;

/// Why a spool directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolRefused {
    /// The system refused to create, open or inspect it.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A symbolic link: it could point anywhere.
    #[error("it is a symbolic link, which is not followed")]
    Symlink,
    /// Not a directory.
    #[error("it is not a directory")]
    NotDirectory,
    /// Someone else's directory.
    #[error("it is owned by uid {owner}; it must belong to uid {allowed}{}", if *.root_too { " or root" } else { "" })]
    Owner {
        /// Its owner.
        owner: u32,
        /// The service user.
        allowed: u32,
        /// Whether root may own it too (the parent `spool_dir`).
        root_too: bool,
    },
    /// `spool_dir` itself is writable by anyone: they could plant a destination's directory.
    #[error("it is writable by others (mode {mode:04o})")]
    WritableByOthers {
        /// Its permission bits.
        mode: u32,
    },
    /// A destination's directory others may enter or list.
    #[error("its group or others have access (mode {mode:04o}); it must be 0700")]
    OpenToOthers {
        /// Its permission bits.
        mode: u32,
    },
}

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from(e)
}

fn dir_flags() -> OFlag {
    OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC
}

/// Opens a directory without following a link, creating it (0700, for `owner`) when `create`
/// and missing.
fn open_dir_at<Fd: AsFd>(
    at: Fd,
    name: &Path,
    owner: FileOwner,
    create: bool,
) -> Result<OwnedFd, SpoolRefused> {
    let at = at.as_fd();
    if create {
        match mkdirat(at, name, Mode::from_bits_truncate(DIR_MODE)) {
            Ok(()) => {
                let fd = openat(at, name, dir_flags(), Mode::empty()).map_err(errno)?;
                // Exactly 0700 whatever the umask, and the service user's (heptap may be root
                // about to drop its privileges).
                fchmod(&fd, Mode::from_bits_truncate(DIR_MODE)).map_err(errno)?;
                if FileOwner::current() != owner {
                    std::os::unix::fs::fchown(&fd, Some(owner.uid), Some(owner.gid))?;
                }
                return Ok(fd);
            }
            Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(SpoolRefused::Io(errno(e))),
        }
    }
    match openat(at, name, dir_flags(), Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(nix::errno::Errno::ELOOP) => Err(SpoolRefused::Symlink),
        Err(nix::errno::Errno::ENOTDIR) => {
            // O_NOFOLLOW on a link to a directory may say either.
            match nix::sys::stat::fstatat(at, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st)
                    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK =>
                {
                    Err(SpoolRefused::Symlink)
                }
                _ => Err(SpoolRefused::NotDirectory),
            }
        }
        Err(e) => Err(SpoolRefused::Io(errno(e))),
    }
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Opens the destination's directory (`spool.dir`, i.e. `<spool_dir>/<name>`), creating it and
/// `spool_dir` itself (one level) when `create`. Neither is followed if it is a link, and both
/// are checked on the open descriptor: `spool_dir` a directory of root or the service user not
/// writable by others, the destination's own one the service user's with mode 0700.
pub(crate) fn open_dir(
    dir: &Path,
    owner: FileOwner,
    create: bool,
) -> Result<OwnedFd, SpoolRefused> {
    let (parent, name) = match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) if !p.as_os_str().is_empty() => (p, Path::new(n)),
        _ => return Err(SpoolRefused::NotDirectory),
    };
    if create {
        create_ancestors(parent, owner)?;
    }
    let parent_fd = open_dir_at(AT_FDCWD, parent, owner, create)?;
    let st = fstat(&parent_fd).map_err(errno)?;
    if !is_dir(&st) {
        return Err(SpoolRefused::NotDirectory);
    }
    if st.st_uid != 0 && st.st_uid != owner.uid {
        return Err(SpoolRefused::Owner {
            owner: st.st_uid,
            allowed: owner.uid,
            root_too: true,
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o002 != 0 {
        return Err(SpoolRefused::WritableByOthers { mode });
    }
    let fd = open_dir_at(&parent_fd, name, owner, create)?;
    let st = fstat(&fd).map_err(errno)?;
    if !is_dir(&st) {
        return Err(SpoolRefused::NotDirectory);
    }
    if st.st_uid != owner.uid {
        return Err(SpoolRefused::Owner {
            owner: st.st_uid,
            allowed: owner.uid,
            root_too: false,
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SpoolRefused::OpenToOthers { mode });
    }
    Ok(fd)
}

/// Creates the missing directories above `spool_dir` (`/var/lib/heptap` where the package
/// did not), 0700 and the service user's, like `spool_dir` itself.
fn create_ancestors(spool_dir: &Path, owner: FileOwner) -> Result<(), SpoolRefused> {
    let missing: Vec<&Path> = spool_dir
        .ancestors()
        .skip(1)
        .take_while(|a| !a.as_os_str().is_empty() && std::fs::symlink_metadata(a).is_err())
        .collect();
    for dir in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
            Ok(()) => {
                if FileOwner::current() != owner {
                    std::os::unix::fs::chown(dir, Some(owner.uid), Some(owner.gid))?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(SpoolRefused::Io(e)),
        }
    }
    Ok(())
}

/// What `open_dir` would check, creating nothing: an existing directory as it would be taken,
/// or, for a new one, that its nearest existing ancestor is a directory (the rest is created
/// at start).
pub(crate) fn check_dir(dir: &Path, owner: FileOwner) -> Result<(), SpoolRefused> {
    match std::fs::symlink_metadata(dir) {
        Ok(_) => open_dir(dir, owner, false).map(drop),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let existing = dir
                .ancestors()
                .skip(1)
                .find(|a| std::fs::symlink_metadata(a).is_ok())
                .unwrap_or(Path::new("/"));
            if std::fs::metadata(existing)?.is_dir() {
                Ok(())
            } else {
                Err(SpoolRefused::NotDirectory)
            }
        }
        Err(e) => Err(SpoolRefused::Io(e)),
    }
}

/// Now, in milliseconds since the Unix epoch (what records carry: it survives a restart).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a lane's spool is doing, for the MI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SpoolMode {
    /// Nothing spooled: packets go from memory to the collector.
    Idle = 0,
    /// The collector is away: packets go to disk.
    Spooling = 1,
    /// The collector is back: the spool is being replayed, new packets queue behind it.
    Replaying = 2,
}

impl SpoolMode {
    /// "idle", "spooling" or "replaying".
    pub fn as_str(self) -> &'static str {
        match self {
            SpoolMode::Idle => "idle",
            SpoolMode::Spooling => "spooling",
            SpoolMode::Replaying => "replaying",
        }
    }
}

/// The spool's statistics (group `hep_<name>`, next to the queue's).
#[derive(Debug)]
pub(crate) struct SpoolCounters {
    /// Packets written to the spool.
    pub(crate) spooled: Counter,
    /// Packets sent from the spool.
    pub(crate) replayed: Counter,
    /// Packets found in segments another process (or an earlier run) left, taken over.
    pub(crate) adopted: Counter,
    /// Gauge: bytes of the segment files held.
    pub(crate) bytes: Counter,
    /// Gauge: packets in the spool not sent yet.
    pub(crate) records: Counter,
    /// Gauge: age of the oldest packet held, in milliseconds (refreshed every second).
    pub(crate) oldest_age_ms: Counter,
}

/// A destination's spool as its lanes and the MI share it.
#[derive(Debug)]
pub(crate) struct SpoolShared {
    /// The destination's directory.
    pub(crate) dir: PathBuf,
    /// The settings.
    pub(crate) settings: HepSpool,
    /// The statistics.
    pub(crate) counters: SpoolCounters,
    /// The directory, open (every file is opened relative to it, never through a path).
    fd: OwnedFd,
    /// Who the files belong to (and who may have written those taken over).
    owner: FileOwner,
    /// This destination instance's part of the segment names: `<start_ns>-<pid>-<nonce>`.
    instance: String,
    /// Per lane: spool time of the oldest packet held (Unix ms), 0 for none.
    oldest: Box<[AtomicU64]>,
    /// Per lane: a [`SpoolMode`].
    modes: Box<[AtomicU8]>,
}

impl SpoolShared {
    /// Opens (creating) the destination's directory and registers the statistics.
    pub(crate) fn open(
        name: &str,
        settings: &HepSpool,
        owner: FileOwner,
        lanes: usize,
        stats: &Stats,
    ) -> Result<Self, SpoolRefused> {
        let fd = open_dir(&settings.dir, owner, true)?;
        let group = format!("hep_{name}");
        let counter = |n: &str| stats.counter(&group, n);
        let gauge = |n: &str| stats.gauge(&group, n);
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(SpoolShared {
            dir: settings.dir.clone(),
            settings: settings.clone(),
            counters: SpoolCounters {
                spooled: counter("spooled"),
                replayed: counter("spool_replayed"),
                adopted: counter("spool_adopted"),
                bytes: gauge("spool_bytes"),
                records: gauge("spool_records"),
                oldest_age_ms: gauge("spool_oldest_age_ms"),
            },
            fd,
            owner,
            instance: format!(
                "{start:020}-{:010}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            oldest: (0..lanes).map(|_| AtomicU64::new(0)).collect(),
            modes: (0..lanes).map(|_| AtomicU8::new(0)).collect(),
        })
    }

    /// The age of the oldest packet held by any lane.
    pub(crate) fn oldest_age(&self, now_ms: u64) -> Option<Duration> {
        self.oldest
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .filter(|&o| o != 0)
            .min()
            .map(|o| Duration::from_millis(now_ms.saturating_sub(o)))
    }

    /// Replaying if a lane replays, else spooling if a lane spools, else idle.
    pub(crate) fn mode(&self) -> SpoolMode {
        let modes: Vec<u8> = self
            .modes
            .iter()
            .map(|m| m.load(Ordering::Relaxed))
            .collect();
        if modes.contains(&(SpoolMode::Replaying as u8)) {
            SpoolMode::Replaying
        } else if modes.contains(&(SpoolMode::Spooling as u8)) {
            SpoolMode::Spooling
        } else {
            SpoolMode::Idle
        }
    }

    /// Records what lane `lane` is doing.
    pub(crate) fn set_mode(&self, lane: usize, mode: SpoolMode) {
        if let Some(m) = self.modes.get(lane) {
            m.store(mode as u8, Ordering::Relaxed);
        }
    }

    /// Refreshes the `spool_oldest_age_ms` gauge.
    pub(crate) fn refresh_age(&self) {
        let age = self
            .oldest_age(now_ms())
            .map_or(0, |a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX));
        self.counters.oldest_age_ms.set(age);
    }
}

/// Packets a spool operation lost, by reason (the task counts them with the queue's drops).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lost {
    /// Deleted with the oldest segments to stay within `spool_max_bytes`.
    pub(crate) full: u64,
    /// Older than `spool_max_age`.
    pub(crate) expired: u64,
    /// Torn or damaged records (each damaged place counts once: at least one packet).
    pub(crate) corrupt: u64,
    /// Not written: the disk is full or failing.
    pub(crate) error: u64,
}

/// One segment file a lane holds (its own, or one it took over).
#[derive(Debug)]
struct Segment {
    /// A number unique within the lane, for the records in flight.
    id: u64,
    /// Its file name in the directory.
    name: String,
    /// Open for reading and writing, and locked (`flock`) for as long as it is held.
    file: File,
    /// Written by this lane and still appended to.
    active: bool,
    /// The end of the last good record.
    end: u64,
    /// Where the next record is read.
    read_at: u64,
    /// The end of the last record delivered: the cursor to persist.
    acked: u64,
    /// The cursor as written in the file.
    persisted: u64,
    /// Records not read yet.
    unread: u64,
    /// Records read and not yet known to be delivered.
    inflight: u64,
    /// Spool time of the oldest record not delivered (approximate once reading began).
    first_ms: Option<u64>,
    /// Spool time of the newest record.
    last_ms: Option<u64>,
    /// Bytes counted in the `spool_bytes` gauge.
    size: u64,
}

/// One lane's spool: its chain of segments and the ones it took over, the reader's place.
#[derive(Debug)]
pub(crate) struct Spool {
    /// Shared with the other lanes and the MI.
    shared: Arc<SpoolShared>,
    /// This lane.
    lane: usize,
    /// Lanes of the destination (chains left by others are shared out among them).
    lanes: usize,
    /// The next segment's sequence number.
    next_seq: u64,
    /// The next segment id.
    next_id: u64,
    /// Held segments, oldest first: those taken over, then this lane's own.
    segments: VecDeque<Segment>,
    /// Records read and not yet delivered, in order: (segment id, end offset).
    inflight: VecDeque<(u64, u64)>,
    /// A segment is closed once it is this large.
    segment_bytes: u64,
    /// Buffer for records being written.
    wbuf: Vec<u8>,
    /// Buffer for bytes being read.
    rbuf: Vec<u8>,
}

impl Spool {
    /// Lane `lane` of `lanes`.
    pub(crate) fn new(shared: Arc<SpoolShared>, lane: usize, lanes: usize) -> Self {
        // Small enough that the bound is kept closely and a segment is soon closed (and so
        // available to another process); large enough that files stay few.
        let segment_bytes = (shared.settings.max_bytes / 16).clamp(64 << 10, 8 << 20);
        Spool {
            shared,
            lane,
            lanes: lanes.max(1),
            next_seq: 0,
            next_id: 0,
            segments: VecDeque::new(),
            inflight: VecDeque::new(),
            segment_bytes,
            wbuf: Vec::new(),
            rbuf: Vec::new(),
        }
    }

    /// Whether records wait to be delivered (unread or in flight).
    pub(crate) fn has_backlog(&self) -> bool {
        !self.inflight.is_empty() || self.has_unread()
    }

    /// Whether records wait to be read.
    pub(crate) fn has_unread(&self) -> bool {
        self.segments.iter().any(|s| s.unread > 0)
    }

    fn update_oldest(&self) {
        let oldest = self
            .segments
            .iter()
            .filter(|s| s.unread + s.inflight > 0)
            .filter_map(|s| s.first_ms)
            .min()
            .unwrap_or(0);
        if let Some(o) = self.shared.oldest.get(self.lane) {
            o.store(oldest, Ordering::Relaxed);
        }
    }

    /// Appends packets (`lens[i]` bytes each, back to back in `buf`) behind everything spooled.
    /// What cannot be written is lost and said so; this never waits for room.
    pub(crate) fn append(&mut self, buf: &[u8], lens: &[usize]) -> (u64, Lost, Option<String>) {
        let mut lost = Lost::default();
        let mut error = None;
        self.maintain();
        let now = now_ms();
        self.wbuf.clear();
        let mut at = 0usize;
        let mut n = 0u64;
        for &len in lens {
            let Some(payload) = buf.get(at..at + len) else {
                break;
            };
            at += len;
            if payload.is_empty() || payload.len() > MAX_RECORD {
                lost.error += 1;
                continue;
            }
            segment::encode_record(&mut self.wbuf, now, payload);
            n += 1;
        }
        if n == 0 {
            return (0, lost, error);
        }
        let need = self.wbuf.len() as u64;
        // Room first: the oldest segments go (never the data being written).
        while self.shared.counters.bytes.get() + need > self.shared.settings.max_bytes {
            match self.evict_oldest() {
                Some(dropped) => lost.full += dropped,
                None => break,
            }
        }
        if self.shared.counters.bytes.get() + need > self.shared.settings.max_bytes {
            lost.full += n;
            return (0, lost, error);
        }
        let roll = self.segments.back().is_none_or(|s| {
            !s.active || (s.end > HEADER_LEN as u64 && s.end + need > self.segment_bytes)
        });
        if roll {
            if let Some(s) = self.segments.back_mut() {
                s.active = false;
            }
            match self.create_segment() {
                Ok(seg) => self.segments.push_back(seg),
                Err(e) => {
                    lost.error += n;
                    error = Some(format!("cannot create a spool segment: {e}"));
                    return (0, lost, error);
                }
            }
        }
        let Some(seg) = self.segments.back_mut() else {
            lost.error += n;
            return (0, lost, error);
        };
        if let Err(e) = seg.file.write_all_at(&self.wbuf, seg.end) {
            // Whatever part went in is cut off again, so the next write starts clean (and a
            // reader never sees half a record followed by another).
            let _ = seg.file.set_len(seg.end);
            lost.error += n;
            error = Some(format!("cannot write to the spool: {e}"));
            return (0, lost, error);
        }
        seg.end += need;
        seg.size += need;
        seg.unread += n;
        seg.first_ms.get_or_insert(now);
        seg.last_ms = Some(now);
        let c = &self.shared.counters;
        c.bytes.add(need);
        c.records.add(n);
        c.spooled.add(n);
        self.update_oldest();
        (n, lost, error)
    }

    /// Reads up to `max` packets from the oldest segment on into `out` (back to back, their
    /// lengths in `lens`); packets older than `spool_max_age` are skipped and counted.
    pub(crate) fn read(&mut self, max: usize, out: &mut Vec<u8>, lens: &mut Vec<usize>) -> Lost {
        let mut lost = Lost::default();
        self.maintain();
        let cutoff = now_ms().saturating_sub(millis(self.shared.settings.max_age));
        let mut index = 0;
        while lens.len() < max && index < self.segments.len() {
            let Some(seg) = self.segments.get_mut(index) else {
                break;
            };
            if seg.unread > 0 && seg.read_at >= seg.end {
                // Counted records past the end: the bookkeeping and the file disagree. Give
                // them up (counted) rather than wait for them for ever.
                lost.corrupt += 1;
                self.shared.counters.records.sub(seg.unread);
                seg.unread = 0;
            }
            if seg.unread == 0 {
                index += 1;
                continue;
            }
            let want = usize::try_from(seg.end - seg.read_at)
                .unwrap_or(usize::MAX)
                .min(READ_CHUNK);
            self.rbuf.resize(want, 0);
            if let Err(e) = seg.file.read_exact_at(&mut self.rbuf, seg.read_at) {
                // Unreadable (the disk fails, the file was cut): what is left of it is lost.
                tracing::warn!(segment = %seg.name, error = %e, "Cannot read a spool segment");
                lost.corrupt += 1;
                self.shared.counters.records.sub(seg.unread);
                seg.unread = 0;
                seg.read_at = seg.end;
                index += 1;
                continue;
            }
            let mut at = 0usize;
            let mut started = false;
            while lens.len() < max && seg.unread > 0 {
                match segment::next_record(&self.rbuf[at..]) {
                    Next::Record {
                        spooled_at_ms,
                        payload,
                        size,
                    } => {
                        at += size;
                        seg.read_at += size as u64;
                        seg.unread -= 1;
                        if spooled_at_ms < cutoff {
                            lost.expired += 1;
                            self.shared.counters.records.sub(1);
                            if seg.inflight == 0 {
                                seg.acked = seg.read_at;
                            }
                            continue;
                        }
                        if !started && seg.inflight == 0 {
                            seg.first_ms = Some(spooled_at_ms);
                        }
                        started = true;
                        out.extend_from_slice(payload);
                        lens.push(payload.len());
                        seg.inflight += 1;
                        self.inflight.push_back((seg.id, seg.read_at));
                    }
                    // The rest of a record that did not fit in this read: the next read.
                    Next::Incomplete if at > 0 => break,
                    Next::End | Next::Incomplete | Next::Corrupt => {
                        // Within what was written or found good: only a file changed under
                        // us gets here. The rest of it is lost.
                        tracing::warn!(segment = %seg.name, offset = seg.read_at,
                            "Damaged record in a spool segment; skipping the rest of it");
                        lost.corrupt += 1;
                        self.shared.counters.records.sub(seg.unread);
                        seg.unread = 0;
                        seg.read_at = seg.end;
                        break;
                    }
                }
            }
        }
        self.update_oldest();
        lost
    }

    /// The `n` oldest records in flight were delivered. Bookkeeping only; the cursor reaches the
    /// file, and finished segments are deleted, at the next operation.
    pub(crate) fn delivered(&mut self, n: usize) {
        let n = n.min(self.inflight.len());
        for (id, end) in self.inflight.drain(..n) {
            if let Some(seg) = self.segments.iter_mut().find(|s| s.id == id) {
                seg.inflight = seg.inflight.saturating_sub(1);
                seg.acked = end;
            }
        }
        let c = &self.shared.counters;
        c.records.sub(n as u64);
        c.replayed.add(n as u64);
    }

    /// Persists the cursors that moved and deletes the segments fully delivered.
    fn maintain(&mut self) {
        for seg in &mut self.segments {
            if seg.acked > seg.persisted
                && seg
                    .file
                    .write_all_at(&segment::cursor_field(seg.acked), CURSOR_AT)
                    .is_ok()
            {
                seg.persisted = seg.acked;
            }
        }
        let fd = &self.shared.fd;
        let counters = &self.shared.counters;
        self.segments.retain(|seg| {
            let done = seg.unread == 0 && seg.inflight == 0;
            // This lane's current segment goes too once delivered: the next packet starts a
            // new one, and the disk holds nothing that is not waiting.
            if !done {
                return true;
            }
            let _ = unlinkat(fd, seg.name.as_str(), UnlinkatFlags::NoRemoveDir);
            counters.bytes.sub(seg.size);
            false
        });
        self.update_oldest();
    }

    /// Deletes the oldest segment held; the packets it still had unread, or `None` when nothing
    /// is held.
    fn evict_oldest(&mut self) -> Option<u64> {
        let seg = self.segments.pop_front()?;
        let _ = unlinkat(
            &self.shared.fd,
            seg.name.as_str(),
            UnlinkatFlags::NoRemoveDir,
        );
        let c = &self.shared.counters;
        c.bytes.sub(seg.size);
        c.records.sub(seg.unread);
        tracing::debug!(segment = %seg.name, unread = seg.unread, "Spool segment deleted");
        self.update_oldest();
        Some(seg.unread)
    }

    /// Once a second: deletes the segments whose newest packet is older than `spool_max_age`,
    /// and takes over the closed segments other processes (or replaced destinations) left.
    pub(crate) fn tick(&mut self, adopt: bool) -> Lost {
        let mut lost = Lost::default();
        self.maintain();
        let cutoff = now_ms().saturating_sub(millis(self.shared.settings.max_age));
        while let Some(front) = self.segments.front() {
            if front.last_ms.is_some_and(|l| l < cutoff) {
                lost.expired += self.evict_oldest().unwrap_or(0);
            } else {
                break;
            }
        }
        if adopt {
            let found = self.adopt();
            lost.corrupt += found.corrupt;
        }
        self.update_oldest();
        lost
    }

    /// Creates this lane's next segment: under a temporary name, locked, header written, then
    /// renamed into place, so no reader ever sees it unlocked or without its header.
    fn create_segment(&mut self) -> io::Result<Segment> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let base = format!(
            "{}-{:04}-{seq:010}{SUFFIX}",
            self.shared.instance, self.lane
        );
        let name = format!("{PREFIX}{base}");
        let tmp = format!("{TMP_PREFIX}{base}");
        let fd = &self.shared.fd;
        let flags =
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let owned =
            openat(fd, tmp.as_str(), flags, Mode::from_bits_truncate(FILE_MODE)).map_err(errno)?;
        let file = File::from(owned);
        let made = (|| {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
            fchmod(&file, Mode::from_bits_truncate(FILE_MODE)).map_err(errno)?;
            if FileOwner::current() != self.shared.owner {
                let o = self.shared.owner;
                std::os::unix::fs::fchown(&file, Some(o.uid), Some(o.gid))?;
            }
            file.write_all_at(&segment::header(), 0)?;
            renameat(fd, tmp.as_str(), fd, name.as_str()).map_err(errno)
        })();
        if let Err(e) = made {
            let _ = unlinkat(fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        self.shared.counters.bytes.add(HEADER_LEN as u64);
        let id = self.next_id;
        self.next_id += 1;
        Ok(Segment {
            id,
            name,
            file,
            active: true,
            end: HEADER_LEN as u64,
            read_at: HEADER_LEN as u64,
            acked: HEADER_LEN as u64,
            persisted: HEADER_LEN as u64,
            unread: 0,
            inflight: 0,
            first_ms: None,
            last_ms: None,
            size: HEADER_LEN as u64,
        })
    }

    /// Takes over the closed segments of chains that are not this destination instance's and
    /// fall to this lane (a chain's old lane number modulo the lanes), each chain in order up to
    /// its first segment another holds. Taken segments go before this lane's own (they are
    /// older). Returns what was found damaged.
    fn adopt(&mut self) -> Lost {
        let mut lost = Lost::default();
        // A new open file description: a duplicate would share (and exhaust) the position.
        let Ok(dir) = nix::dir::Dir::openat(&self.shared.fd, ".", dir_flags(), Mode::empty())
        else {
            return lost;
        };
        // (chain, seq, name), sorted: chains by their instance's start time, then lane.
        let mut found: Vec<(String, u64, String)> = dir
            .into_iter()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str().ok()?.to_owned();
                let (chain, seq) = parse_name(&name)?;
                Some((chain.to_owned(), seq, name))
            })
            .filter(|(chain, _, _)| !chain.starts_with(&self.shared.instance))
            .filter(|(chain, _, _)| lane_of(chain).is_some_and(|l| l % self.lanes == self.lane))
            .collect();
        found.sort();
        let mut blocked: Option<String> = None;
        let mut taken = Vec::new();
        for (chain, _, name) in found {
            if blocked.as_deref() == Some(chain.as_str()) {
                continue;
            }
            if self.segments.iter().any(|s| s.name == name) {
                continue;
            }
            match self.take_over(&name, &mut lost) {
                Ok(Some(seg)) => taken.push(seg),
                Ok(None) => {}
                // Locked (being written, or read by another), or refused: the chain's later
                // segments must wait for it.
                Err(()) => blocked = Some(chain),
            }
        }
        if !taken.is_empty() {
            // Before this lane's own segments, after those taken earlier.
            let own_at = self
                .segments
                .iter()
                .position(|s| {
                    s.name
                        .starts_with(&format!("{PREFIX}{}", self.shared.instance))
                })
                .unwrap_or(self.segments.len());
            for (i, seg) in taken.into_iter().enumerate() {
                self.segments.insert(own_at + i, seg);
            }
        }
        lost
    }

    /// Opens, locks, checks and reads through one segment left by another writer. `Ok(None)`:
    /// nothing to replay in it (deleted); `Err(())`: not available now.
    fn take_over(&mut self, name: &str, lost: &mut Lost) -> Result<Option<Segment>, ()> {
        let fd = &self.shared.fd;
        let flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let file = match openat(fd, name, flags, Mode::empty()) {
            Ok(owned) => File::from(owned),
            Err(_) => return Err(()),
        };
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(());
        }
        let Ok(st) = fstat(&file) else {
            return Err(());
        };
        // Deleted by the one that held it before we locked it: nothing left.
        if st.st_nlink == 0 {
            return Ok(None);
        }
        let owner = self.shared.owner;
        let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
        if !regular
            || st.st_nlink != 1
            || (st.st_uid != owner.uid && st.st_uid != 0)
            || st.st_size < 0
            || st.st_size as u64 > MAX_ADOPT_BYTES
        {
            tracing::warn!(spool = %self.shared.dir.display(), segment = name,
                "Refusing a spool file that is not a regular file of the service user's with one name");
            return Err(());
        }
        let size = st.st_size as u64;
        let mut bytes = vec![0u8; usize::try_from(size).unwrap_or(0)];
        if file.read_exact_at(&mut bytes, 0).is_err() {
            return Err(());
        }
        let remove = |lost: &mut Lost| {
            let _ = unlinkat(fd, name, UnlinkatFlags::NoRemoveDir);
            lost.corrupt += 1;
        };
        let scan = match segment::scan(&bytes) {
            Ok(scan) => scan,
            Err(e) => {
                tracing::warn!(spool = %self.shared.dir.display(), segment = name, bytes = size,
                    reason = ?e, "Spool segment unreadable; deleted");
                remove(lost);
                return Ok(None);
            }
        };
        if scan.damaged_bytes > 0 {
            tracing::warn!(spool = %self.shared.dir.display(), segment = name,
                good_records = scan.records, damaged_bytes = scan.damaged_bytes,
                "Spool segment damaged (torn by a crash?); replaying it up to its last good record");
            lost.corrupt += 1;
        }
        if scan.records == 0 {
            let _ = unlinkat(fd, name, UnlinkatFlags::NoRemoveDir);
            return Ok(None);
        }
        let c = &self.shared.counters;
        c.bytes.add(size);
        c.records.add(scan.records);
        c.adopted.add(scan.records);
        let id = self.next_id;
        self.next_id += 1;
        tracing::info!(spool = %self.shared.dir.display(), segment = name, records = scan.records,
            "Taking over a spool segment");
        Ok(Some(Segment {
            id,
            name: name.to_owned(),
            file,
            active: false,
            end: scan.good_end,
            read_at: scan.cursor,
            acked: scan.cursor,
            persisted: scan.cursor,
            unread: scan.records,
            inflight: 0,
            first_ms: scan.first_ms,
            last_ms: scan.last_ms,
            size,
        }))
    }

    /// Stops: the cursors are written, the segments unlocked (and so left to the next process),
    /// and what this lane held leaves the gauges.
    pub(crate) fn close(mut self) {
        self.maintain();
        let c = &self.shared.counters;
        for seg in &self.segments {
            c.bytes.sub(seg.size);
            c.records.sub(seg.unread + seg.inflight);
        }
        if let Some(o) = self.shared.oldest.get(self.lane) {
            o.store(0, Ordering::Relaxed);
        }
        self.shared.set_mode(self.lane, SpoolMode::Idle);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `seg-<chain>-<seq>.seg` -> (chain, seq), where chain is `<start>-<pid>-<nonce>-<lane>`.
fn parse_name(name: &str) -> Option<(&str, u64)> {
    let inner = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (chain, seq) = inner.rsplit_once('-')?;
    Some((chain, seq.parse().ok()?))
}

/// The lane number at the end of a chain name.
fn lane_of(chain: &str) -> Option<usize> {
    chain.rsplit_once('-')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn spool_in(dir: &Path, max_bytes: u64) -> (Arc<SpoolShared>, Stats) {
        let stats = Stats::new();
        let settings = HepSpool {
            dir: dir.join("dest"),
            max_bytes,
            max_age: Duration::from_secs(3600),
            replay_rate: 0,
        };
        let shared =
            Arc::new(SpoolShared::open("t", &settings, FileOwner::current(), 1, &stats).unwrap());
        (shared, stats)
    }

    fn packets(range: std::ops::Range<u32>) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut lens = Vec::new();
        for i in range {
            let p = format!("packet-{i:06}");
            buf.extend_from_slice(p.as_bytes());
            lens.push(p.len());
        }
        (buf, lens)
    }

    fn read_all(spool: &mut Spool) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            let (mut out, mut lens) = (Vec::new(), Vec::new());
            spool.read(100, &mut out, &mut lens);
            if lens.is_empty() {
                return got;
            }
            let mut at = 0;
            for len in &lens {
                got.push(String::from_utf8(out[at..at + len].to_vec()).unwrap());
                at += len;
            }
            spool.delivered(lens.len());
        }
    }

    #[test]
    fn what_is_appended_is_read_back_in_order_and_deleted_once_delivered() {
        let tmp = tempfile::tempdir().unwrap();
        let (shared, _stats) = spool_in(tmp.path(), 1 << 20);
        let mut spool = Spool::new(Arc::clone(&shared), 0, 1);
        for chunk in 0..50 {
            let (buf, lens) = packets(chunk * 100..(chunk + 1) * 100);
            let (n, lost, _) = spool.append(&buf, &lens);
            assert_eq!((n, lost), (100, Lost::default()));
        }
        assert!(shared.counters.bytes.get() > 0);
        let got = read_all(&mut spool);
        assert_eq!(got.len(), 5000);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, p)| *p == format!("packet-{i:06}"))
        );
        spool.tick(false);
        assert!(!spool.has_backlog());
        assert_eq!(shared.counters.records.get(), 0);
        assert_eq!(shared.counters.bytes.get(), 0);
        let left = std::fs::read_dir(&shared.dir).unwrap().count();
        assert_eq!(left, 0, "every segment deleted");
    }

    #[test]
    fn a_full_spool_deletes_its_oldest_segments_and_counts_their_packets() {
        let tmp = tempfile::tempdir().unwrap();
        let (shared, _stats) = spool_in(tmp.path(), 1 << 20);
        let mut spool = Spool::new(Arc::clone(&shared), 0, 1);
        let mut full = 0;
        for chunk in 0..200u32 {
            let (buf, lens) = packets(chunk * 500..(chunk + 1) * 500);
            let (_, lost, _) = spool.append(&buf, &lens);
            full += lost.full;
        }
        assert!(shared.counters.bytes.get() <= 1 << 20);
        let got = read_all(&mut spool);
        assert_eq!(got.len() as u64 + full, 100_000);
        // What is left is the newest, in order.
        assert_eq!(got.last().unwrap(), "packet-099999");
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_second_instance_takes_over_closed_segments_from_the_cursor_on() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, _s1) = spool_in(tmp.path(), 1 << 20);
        let mut old = Spool::new(Arc::clone(&first), 0, 1);
        let (buf, lens) = packets(0..1000);
        old.append(&buf, &lens);
        // Half delivered, then the process stops.
        let (mut out, mut l) = (Vec::new(), Vec::new());
        old.read(400, &mut out, &mut l);
        old.delivered(400);
        let (second, _s2) = spool_in(tmp.path(), 1 << 20);
        let mut new = Spool::new(Arc::clone(&second), 0, 1);
        // Still locked by the old one: nothing to take.
        new.tick(true);
        assert!(!new.has_backlog());
        old.close();
        new.tick(true);
        let got = read_all(&mut new);
        assert_eq!(got.len(), 600);
        assert_eq!(got[0], "packet-000400");
        assert_eq!(second.counters.adopted.get(), 600);
    }

    #[test]
    fn names_carry_the_chain_and_the_sequence() {
        let name = "seg-00000000000000000001-0000000042-0000abcd-0003-0000000007.seg";
        let (chain, seq) = parse_name(name).unwrap();
        assert_eq!(seq, 7);
        assert_eq!(lane_of(chain), Some(3));
        assert_eq!(parse_name(".tmp-x-1.seg"), None);
    }
}
