//! The process as a system service: telling systemd where heptap is in its life (sd_notify), and
//! giving up root after start-up when started as root outside systemd.
//!
//! Under the packaged unit (`Type=notify`, `User=heptap`, `CAP_NET_BIND_SERVICE` as an ambient
//! capability) heptap already runs as its own user and nothing here changes who it is; it only
//! notifies. Started as root with `[service] user` set, heptap binds its sockets and creates its
//! MI FIFO as root, then [`Privileges::drop_after_start`] switches groups, gid and uid for good and checks
//! that root cannot be regained before heptap reports itself ready.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use heptap_config::Config;
use nix::unistd::{Gid, Group, Uid, User};

use crate::sender::FileOwner;

/// Why heptap cannot become the user its config names.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// `[service] user` names no user of this system.
    #[error("service.user {0:?}: no such user")]
    UnknownUser(String),
    /// `[service] group` names no group of this system.
    #[error("service.group {0:?}: no such group")]
    UnknownGroup(String),
    /// The user database could not be read.
    #[error("cannot look up {what}: {source}")]
    Lookup {
        /// The user or group looked up.
        what: String,
        /// What the system said.
        source: nix::Error,
    },
    /// Only root can switch users; heptap runs as someone else.
    #[error(
        "service.user {user:?}: heptap runs as uid {uid} gid {gid}, not as root, so it cannot \
         become uid {target_uid} gid {target_gid} (start it as root, or as that user)"
    )]
    NotRoot {
        /// The user asked for.
        user: String,
        /// Who heptap runs as.
        uid: u32,
        /// Its group.
        gid: u32,
        /// The uid asked for.
        target_uid: u32,
        /// The gid asked for.
        target_gid: u32,
    },
    /// A step of the switch failed; heptap must not go on half-switched.
    #[error("cannot drop privileges: {step}: {source}")]
    Switch {
        /// The call that failed.
        step: &'static str,
        /// What the system said.
        source: nix::Error,
    },
    /// A run directory or the FIFO could not be prepared for the new user.
    #[error("{}: cannot {step}: {source}", path.display())]
    Path {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// What the system said.
        source: io::Error,
    },
    /// The switch was made but a check after it found a way back to root.
    #[error("privileges were not dropped for good: {0}")]
    StillPrivileged(String),
}

impl From<ServiceError> for io::Error {
    fn from(e: ServiceError) -> Self {
        io::Error::new(io::ErrorKind::PermissionDenied, e)
    }
}

/// The user and group heptap switches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The user name (for initgroups and the logs).
    pub user: String,
    /// Its uid.
    pub uid: Uid,
    /// `[service] group`, else the user's primary group.
    pub gid: Gid,
}

/// What `[service] user` / `group` mean for this process, decided before anything is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No `user` is set: heptap stays who it is (warning when that is root).
    Keep,
    /// heptap already is the user asked for (systemd's `User=`, or a start with runuser):
    /// nothing to drop.
    Already(Target),
    /// Started as root with `user` set: switch once the sockets and the FIFO exist.
    Switch(Target),
}

impl Identity {
    /// Looks `[service] user` and `group` up and compares them with who heptap runs as.
    pub fn resolve(service: &heptap_config::Service) -> Result<Self, ServiceError> {
        let Some(name) = service.user.as_deref() else {
            if let Some(group) = &service.group {
                tracing::warn!(
                    group = %group,
                    "[service] group is set without user; it is ignored"
                );
            }
            return Ok(Identity::Keep);
        };
        let user = lookup_user(name)?;
        let gid = match service.group.as_deref() {
            Some(g) => lookup_group(g)?,
            None => user.gid,
        };
        let target = Target {
            user: user.name,
            uid: user.uid,
            gid,
        };
        let (euid, egid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        if euid == target.uid && egid == target.gid {
            Ok(Identity::Already(target))
        } else if euid.is_root() {
            if target.uid.is_root() {
                // `user = "root"` asks for nothing to drop.
                Ok(Identity::Keep)
            } else {
                Ok(Identity::Switch(target))
            }
        } else {
            Err(ServiceError::NotRoot {
                user: target.user,
                uid: euid.as_raw(),
                gid: egid.as_raw(),
                target_uid: target.uid.as_raw(),
                target_gid: target.gid.as_raw(),
            })
        }
    }
}

/// The privilege drop planned from the config: resolved before start-up (so a bad user fails
/// before anything is bound), carried out by [`Privileges::drop_after_start`] after it.
#[derive(Debug, Clone)]
pub struct Privileges {
    /// Who heptap becomes.
    identity: Identity,
    /// Give the MI FIFO to the target user (no `fifo_user` set), so that it can serve it.
    fifo_to_user: bool,
    /// Give the MI FIFO to the target group (no `fifo_group` set).
    fifo_to_group: bool,
}

impl Privileges {
    /// Resolves `[service]` and, when heptap will switch users, creates the MI's missing run
    /// directories (the FIFO's and `reply_dir`) owned by the target user, as systemd's
    /// `RuntimeDirectory=` does under the unit: after the switch heptap must still be able to
    /// re-create its FIFO there, and its clients to create reply FIFOs.
    pub fn plan(config: &Config) -> Result<Self, ServiceError> {
        let identity = Identity::resolve(&config.service)?;
        if let Identity::Switch(target) = &identity {
            let fifo_dir = config
                .mi
                .fifo_name
                .as_deref()
                .and_then(Path::parent)
                .filter(|d| !d.as_os_str().is_empty());
            for dir in fifo_dir.into_iter().chain(config.mi.reply_dir.as_deref()) {
                create_run_dir(dir, target)?;
            }
        }
        Ok(Privileges {
            identity,
            fifo_to_user: config.mi.fifo_user.is_none(),
            fifo_to_group: config.mi.fifo_group.is_none(),
        })
    }

    /// Called once the listeners are bound and the MI FIFO (`fifo`) exists: hands the FIFO to
    /// the target user (unless `fifo_user` / `fifo_group` chose its owner), then switches
    /// supplementary groups, gid and uid, and checks that root cannot be regained.
    pub fn drop_after_start(&self, fifo: Option<&Path>) -> Result<(), ServiceError> {
        match &self.identity {
            Identity::Keep => {
                if nix::unistd::geteuid().is_root() {
                    tracing::warn!(
                        "heptap runs as root; set [service] user to drop privileges after start-up"
                    );
                }
                Ok(())
            }
            Identity::Already(target) => {
                tracing::debug!(user = %target.user, "Already running as the service user");
                Ok(())
            }
            Identity::Switch(target) => {
                if let Some(fifo) = fifo {
                    let uid = self.fifo_to_user.then_some(target.uid.as_raw());
                    let gid = self.fifo_to_group.then_some(target.gid.as_raw());
                    if uid.is_some() || gid.is_some() {
                        std::os::unix::fs::chown(fifo, uid, gid).map_err(|source| {
                            ServiceError::Path {
                                path: fifo.to_owned(),
                                step: "hand the MI FIFO to the service user",
                                source,
                            }
                        })?;
                    }
                }
                switch_to(target)?;
                verify(target)?;
                tracing::info!(
                    user = %target.user,
                    uid = target.uid.as_raw(),
                    gid = target.gid.as_raw(),
                    "Dropped privileges"
                );
                Ok(())
            }
        }
    }
}

/// Who `file:` outputs belong to: `[service] user` (with `group`, else the user's primary
/// group), or the user heptap runs as when none is set. A user that cannot be looked up is
/// refused at start by [`Privileges::plan`]; until then (check-config) heptap's own ids stand in.
pub fn file_owner(service: &heptap_config::Service) -> FileOwner {
    let Some(name) = service.user.as_deref() else {
        return FileOwner::current();
    };
    let Ok(user) = lookup_user(name) else {
        return FileOwner::current();
    };
    let gid = service
        .group
        .as_deref()
        .and_then(|g| lookup_group(g).ok())
        .unwrap_or(user.gid);
    FileOwner {
        uid: user.uid.as_raw(),
        gid: gid.as_raw(),
    }
}

fn lookup_user(name: &str) -> Result<User, ServiceError> {
    let found = match name.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)),
        Err(_) => User::from_name(name),
    };
    found
        .map_err(|source| ServiceError::Lookup {
            what: format!("user {name:?}"),
            source,
        })?
        .ok_or_else(|| ServiceError::UnknownUser(name.to_owned()))
}

fn lookup_group(name: &str) -> Result<Gid, ServiceError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    Group::from_name(name)
        .map_err(|source| ServiceError::Lookup {
            what: format!("group {name:?}"),
            source,
        })?
        .map(|g| g.gid)
        .ok_or_else(|| ServiceError::UnknownGroup(name.to_owned()))
}

/// Creates `dir` (mode 0750, owned by the target) when it is missing; leaves an existing one.
fn create_run_dir(dir: &Path, target: &Target) -> Result<(), ServiceError> {
    if dir.exists() {
        return Ok(());
    }
    let err = |step, source| ServiceError::Path {
        path: dir.to_owned(),
        step,
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|e| err("create the run directory", e))?;
    std::os::unix::fs::chown(dir, Some(target.uid.as_raw()), Some(target.gid.as_raw()))
        .map_err(|e| err("give the run directory to the service user", e))?;
    tracing::info!(dir = %dir.display(), user = %target.user, "Created the run directory");
    Ok(())
}

/// Supplementary groups (the user's, from the group database), then gid, then uid: in this
/// order, since each step needs the privileges the next one gives up. glibc applies each call
/// to every thread of the process.
fn switch_to(target: &Target) -> Result<(), ServiceError> {
    let step = |step| move |source| ServiceError::Switch { step, source };
    let name = CString::new(target.user.as_bytes()).map_err(|_| ServiceError::Switch {
        step: "initgroups",
        source: nix::Error::EINVAL,
    })?;
    nix::unistd::initgroups(&name, target.gid).map_err(step("initgroups"))?;
    nix::unistd::setresgid(target.gid, target.gid, target.gid).map_err(step("setresgid"))?;
    nix::unistd::setresuid(target.uid, target.uid, target.uid).map_err(step("setresuid"))?;
    Ok(())
}

/// After the switch: real, effective and saved ids are all the target's, setuid(0) and
/// setgid(0) fail, and no capability is left.
fn verify(target: &Target) -> Result<(), ServiceError> {
    let still = |why: String| Err(ServiceError::StillPrivileged(why));
    let uids = nix::unistd::getresuid().map_err(|source| ServiceError::Switch {
        step: "getresuid",
        source,
    })?;
    let gids = nix::unistd::getresgid().map_err(|source| ServiceError::Switch {
        step: "getresgid",
        source,
    })?;
    if [uids.real, uids.effective, uids.saved] != [target.uid; 3] {
        return still(format!(
            "uids are {}/{}/{} (real/effective/saved), not {}",
            uids.real, uids.effective, uids.saved, target.uid
        ));
    }
    if [gids.real, gids.effective, gids.saved] != [target.gid; 3] {
        return still(format!(
            "gids are {}/{}/{} (real/effective/saved), not {}",
            gids.real, gids.effective, gids.saved, target.gid
        ));
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return still("setuid(0) succeeded".to_owned());
    }
    if target.gid.as_raw() != 0 && nix::unistd::setgid(Gid::from_raw(0)).is_ok() {
        return still("setgid(0) succeeded".to_owned());
    }
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|source| ServiceError::Path {
            path: "/proc/self/status".into(),
            step: "read the capabilities",
            source,
        })?;
    for (key, value) in capabilities(&status) {
        if value != 0 {
            return still(format!("{key} is {value:016x}"));
        }
    }
    Ok(())
}

/// The permitted, effective and ambient capability sets from /proc/<pid>/status.
fn capabilities(status: &str) -> Vec<(&str, u64)> {
    status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| matches!(*k, "CapPrm" | "CapEff" | "CapAmb"))
        .map(|(k, v)| (k, u64::from_str_radix(v.trim(), 16).unwrap_or(u64::MAX)))
        .collect()
}

/// Where `$NOTIFY_SOCKET` points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotifyAddr {
    /// A socket file (an absolute path).
    Path(PathBuf),
    /// A Linux abstract socket (`@name`).
    Abstract(Vec<u8>),
}

/// Tells systemd (`Type=notify`) where heptap is in its life by sending sd_notify datagrams
/// to `$NOTIFY_SOCKET`: READY=1 once the listeners and the MI are bound, RELOADING=1 and READY=1
/// around a reload, STOPPING=1 at shutdown. Without `$NOTIFY_SOCKET` (not started by systemd)
/// it does nothing. A failed send is logged, never fatal: the service still runs.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// The socket; `None` when there is nobody to tell.
    addr: Option<NotifyAddr>,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`, as systemd sets it for the service.
    pub fn from_env() -> Self {
        Self::new(std::env::var_os("NOTIFY_SOCKET").as_deref())
    }

    /// The notifier for a `NOTIFY_SOCKET` value: an absolute path, or `@name` for an abstract
    /// socket. Anything else (empty, relative, `vsock:`) notifies nobody, with a warning.
    pub fn new(socket: Option<&OsStr>) -> Self {
        let addr = socket.filter(|s| !s.is_empty()).and_then(|s| {
            let bytes = s.as_bytes();
            if let Some(name) = bytes.strip_prefix(b"@") {
                Some(NotifyAddr::Abstract(name.to_vec()))
            } else if bytes.starts_with(b"/") {
                Some(NotifyAddr::Path(PathBuf::from(s)))
            } else {
                tracing::warn!(
                    socket = %s.to_string_lossy(),
                    "NOTIFY_SOCKET is neither a path nor an abstract socket; not notifying"
                );
                None
            }
        });
        Notifier { addr }
    }

    /// Whether there is a socket to notify.
    #[cfg(test)]
    pub fn enabled(&self) -> bool {
        self.addr.is_some()
    }

    /// Sends one sd_notify message (`KEY=value` lines). `Ok(false)`: nobody to tell.
    pub fn send(&self, state: &str) -> io::Result<bool> {
        let Some(addr) = &self.addr else {
            return Ok(false);
        };
        let sock = UnixDatagram::unbound()?;
        let sent = match addr {
            NotifyAddr::Path(path) => sock.send_to(state.as_bytes(), path)?,
            NotifyAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)?
            }
        };
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the notify datagram was cut short",
            ));
        }
        Ok(true)
    }

    /// READY=1: the listeners and the MI are bound (and privileges dropped); with a STATUS line.
    pub fn ready(&self, status: &str) {
        self.log(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// MAINPID=: the process that accepts is `pid` now (a hand-over). Sent by the old process,
    /// which systemd still takes for the main one, so the unit keeps `NotifyAccess=main`; the
    /// datagram is queued before the old process can exit, so systemd never sees the service's
    /// main process gone.
    pub fn main_pid(&self, pid: u32, status: &str) {
        self.log(&format!("MAINPID={pid}\nSTATUS={}", one_line(status)));
    }

    /// RELOADING=1: a reload (SIGHUP) started; [`Notifier::ready`] ends it.
    pub fn reloading(&self) {
        self.log("RELOADING=1\nSTATUS=Reloading the config");
    }

    /// STOPPING=1: shutdown started.
    pub fn stopping(&self, status: &str) {
        self.log(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    fn log(&self, state: &str) {
        if let Err(e) = self.send(state) {
            tracing::warn!(error = %e, "Cannot notify systemd (NOTIFY_SOCKET)");
        }
    }
}

/// A STATUS value is one line.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// Raises the soft limit on open files to the hard limit: a relayed connection holds two
/// descriptors, and the usual soft limit of 1024 would refuse connections after about 500
/// (systemd's unit sets its own limit; this covers heptap started anywhere else). Returns the
/// limit now in force.
pub fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= hard {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::debug!(from = soft, to = hard, "Raised the open-file limit");
            Some(hard)
        }
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "Cannot raise the open-file limit");
            Some(soft)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receiver() -> (tempfile::TempDir, PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (dir, path, sock)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn ready_is_one_datagram_of_key_value_lines_on_a_path_socket() {
        let (_dir, path, sock) = receiver();
        let n = Notifier::new(Some(path.as_os_str()));
        assert!(n.enabled());
        n.ready("Relaying\non 1 listener");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=Relaying on 1 listener");
        n.reloading();
        assert_eq!(recv(&sock), "RELOADING=1\nSTATUS=Reloading the config");
        n.stopping("Draining");
        assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=Draining");
        n.main_pid(4242, "Handed over\nto 4242");
        assert_eq!(recv(&sock), "MAINPID=4242\nSTATUS=Handed over to 4242");
    }

    #[test]
    fn an_at_sign_names_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("heptap-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::new(Some(OsStr::new(&format!("@{name}"))));
        assert!(n.send("READY=1").unwrap());
        assert_eq!(recv(&sock), "READY=1");
    }

    #[test]
    fn without_notify_socket_nothing_is_sent() {
        assert!(!Notifier::new(None).send("READY=1").unwrap());
        assert!(!Notifier::new(Some(OsStr::new(""))).enabled());
        assert!(!Notifier::new(Some(OsStr::new("relative/path"))).enabled());
        assert!(!Notifier::new(Some(OsStr::new("vsock:2:1234"))).enabled());
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::new(Some(dir.path().join("gone").as_os_str()));
        assert!(n.send("READY=1").is_err());
        n.ready("still fine"); // logged, not fatal
    }

    fn service(user: Option<&str>, group: Option<&str>) -> heptap_config::Service {
        heptap_config::Service {
            user: user.map(str::to_owned),
            group: group.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn no_user_keeps_the_current_identity() {
        assert_eq!(
            Identity::resolve(&service(None, None)).unwrap(),
            Identity::Keep
        );
    }

    #[test]
    fn an_unknown_user_or_group_is_refused_by_name() {
        let e = Identity::resolve(&service(Some("no-such-heptap-user"), None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service.user \"no-such-heptap-user\": no such user"
        );
        let me = nix::unistd::geteuid().to_string();
        let e = Identity::resolve(&service(Some(&me), Some("no-such-heptap-group"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service.group \"no-such-heptap-group\": no such group"
        );
    }

    #[test]
    fn the_user_heptap_already_runs_as_needs_no_switch() {
        let me = User::from_uid(nix::unistd::geteuid()).unwrap().unwrap();
        let gid = nix::unistd::getegid().to_string();
        match Identity::resolve(&service(Some(&me.name), Some(&gid))).unwrap() {
            Identity::Already(t) => {
                assert_eq!(t.uid, me.uid);
                assert_eq!(t.gid, nix::unistd::getegid());
            }
            Identity::Keep if me.uid.is_root() => {} // user = "root" asks for nothing
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_user_needs_root() {
        let nobody = User::from_name("nobody").unwrap().expect("a nobody user");
        match Identity::resolve(&service(Some("nobody"), None)) {
            Ok(Identity::Switch(t)) => {
                assert!(nix::unistd::geteuid().is_root());
                assert_eq!((t.uid, t.gid), (nobody.uid, nobody.gid));
            }
            Err(e @ ServiceError::NotRoot { .. }) => {
                assert!(!nix::unistd::geteuid().is_root());
                assert!(e.to_string().contains("not as root"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn capabilities_are_read_from_proc_status() {
        let status = "Name:\theptap\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000400\n\
                      CapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";
        assert_eq!(
            capabilities(status),
            vec![("CapPrm", 0x400), ("CapEff", 0), ("CapAmb", 0)]
        );
    }
}
