//! `file:` destinations against a user who can write their directory (issue 16, hole 5): a
//! symbolic link, a hard link, a FIFO or a world-writable file planted at the path is refused
//! at start, by check-config and at reload, naming the path, and what it points to is left
//! alone; a new file is created 0640 for the service user. The tests that give files to other
//! users need root and are run by `.ci/run` as root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use heptap::{LogHandle, Running, Stop};
use heptap_config::{Config, Source};

/// A scratch directory holding heptap's MI FIFO, its config file and the trace files.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config whose only destinations are `file:` outputs at `files`, with `extra` appended.
    fn config_text(&self, files: &[&Path], extra: &str) -> String {
        let mut text = String::from("[hep.ids]\n");
        for (i, f) in files.iter().enumerate() {
            text.push_str(&format!("dump{i} = \"file:{}\"\n", f.display()));
        }
        text.push_str(&format!(
            "[mi]\nfifo_name = \"{}\"\nreply_dir = \"{}\"\nhttp_listen = \"\"\n{extra}",
            self.path("fifo").display(),
            self.dir.path().display()
        ));
        text
    }

    fn config(&self, files: &[&Path], extra: &str) -> Config {
        Config::from_toml_str(&self.config_text(files, extra)).unwrap()
    }
}

/// What check-config and a start say about `config`: both must refuse it.
async fn refused(config: Config) -> (String, String) {
    // check-config runs exactly this; a FIFO at the path must not hang it.
    let checked = {
        let config = config.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || heptap::check(&config)),
        )
        .await
        .expect("check-config does not hang on the file")
        .unwrap()
    };
    let check = match checked {
        Ok(_) => panic!("check-config accepted it"),
        Err(e) => e.to_string(),
    };
    let started = tokio::time::timeout(
        Duration::from_secs(10),
        heptap::start(config, LogHandle::detached()),
    )
    .await
    .expect("the start does not hang on the file");
    let start = match started {
        Ok(running) => {
            running.shutdown(Stop::Immediate).await;
            panic!("heptap started with it")
        }
        Err(e) => e.to_string(),
    };
    (check, start)
}

fn assert_names(message: &str, path: &Path, why: &str) {
    assert!(
        message.contains(&path.display().to_string()) && message.contains(why),
        "{message:?} should name {} and say {why:?}",
        path.display()
    );
}

/// A root-only file somebody would like heptap to write SIP traces into.
fn victim(dir: &Scratch) -> PathBuf {
    let victim = dir.path("shadow");
    std::fs::write(&victim, "root only\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    victim
}

fn assert_untouched(victim: &Path) {
    assert_eq!(std::fs::read_to_string(victim).unwrap(), "root only\n");
    let meta = std::fs::metadata(victim).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
}

#[tokio::test]
async fn a_symlink_planted_at_the_path_is_refused_and_its_target_untouched() {
    let dir = Scratch::new();
    let victim = victim(&dir);
    let trace = dir.path("sip.jsonl");
    std::os::unix::fs::symlink(&victim, &trace).unwrap();
    let (check, start) = refused(dir.config(&[&trace], "")).await;
    assert_names(&check, &trace, "symbolic link");
    assert_names(&start, &trace, "symbolic link");
    assert_untouched(&victim);
    // A link to nowhere is not followed to create its target either.
    let dangling = dir.path("dangling.jsonl");
    let target = dir.path("created-through-the-link");
    std::os::unix::fs::symlink(&target, &dangling).unwrap();
    let (check, start) = refused(dir.config(&[&dangling], "")).await;
    assert_names(&check, &dangling, "symbolic link");
    assert_names(&start, &dangling, "symbolic link");
    assert!(!target.exists());
}

#[tokio::test]
async fn a_hard_link_to_another_file_is_refused() {
    let dir = Scratch::new();
    let victim = victim(&dir);
    let trace = dir.path("sip.jsonl");
    std::fs::hard_link(&victim, &trace).unwrap();
    let (check, start) = refused(dir.config(&[&trace], "")).await;
    assert_names(&check, &trace, "hard links");
    assert_names(&start, &trace, "hard links");
    assert_untouched(&victim);
}

#[tokio::test]
async fn a_world_writable_file_is_refused() {
    let dir = Scratch::new();
    let trace = dir.path("sip.jsonl");
    std::fs::write(&trace, "planted\n").unwrap();
    std::fs::set_permissions(&trace, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (check, start) = refused(dir.config(&[&trace], "")).await;
    assert_names(&check, &trace, "writable by others (mode 0666)");
    assert_names(&start, &trace, "writable by others");
    assert_eq!(std::fs::read_to_string(&trace).unwrap(), "planted\n");
}

#[tokio::test]
async fn a_fifo_or_a_directory_at_the_path_is_refused_without_hanging() {
    let dir = Scratch::new();
    let fifo = dir.path("sip.jsonl");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (check, start) = refused(dir.config(&[&fifo], "")).await;
    assert_names(&check, &fifo, "not a regular file");
    assert_names(&start, &fifo, "not a regular file");
    let directory = dir.path("traces");
    std::fs::create_dir(&directory).unwrap();
    let (check, start) = refused(dir.config(&[&directory], "")).await;
    assert_names(&check, &directory, "not a regular file");
    assert_names(&start, &directory, "not a regular file");
}

#[tokio::test]
async fn a_new_file_is_created_0640_for_heptaps_user_and_an_own_file_is_kept_as_it_is() {
    let dir = Scratch::new();
    let new = dir.path("new.jsonl");
    let own = dir.path("own.jsonl");
    std::fs::write(&own, "kept\n").unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.config(&[&new, &own], "");
    heptap::check(&config).unwrap();
    assert!(!new.exists(), "check-config creates nothing");
    let running = heptap::start(config, LogHandle::detached()).await.unwrap();
    let meta = std::fs::symlink_metadata(&new).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(
        (meta.uid(), meta.gid()),
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw()
        )
    );
    running.shutdown(Stop::Immediate).await;
    assert_eq!(std::fs::read_to_string(&own).unwrap(), "kept\n");
    assert_eq!(
        std::fs::metadata(&own).unwrap().permissions().mode() & 0o7777,
        0o600,
        "an existing file keeps its mode"
    );
}

#[tokio::test]
async fn a_reload_naming_a_planted_symlink_is_refused_and_the_old_config_keeps_running() {
    let dir = Scratch::new();
    let good = dir.path("good.jsonl");
    let file = dir.path("heptap.toml");
    std::fs::write(&file, dir.config_text(&[&good], "")).unwrap();
    let source = Source {
        file: Some(file.clone()),
        env: Vec::new(),
    };
    let config = Config::load(&source).unwrap();
    let running: Running = heptap::start_with_source(config, LogHandle::detached(), Some(source))
        .await
        .unwrap();
    let victim = victim(&dir);
    let evil = dir.path("evil.jsonl");
    std::os::unix::fs::symlink(&victim, &evil).unwrap();
    std::fs::write(&file, dir.config_text(&[&good, &evil], "")).unwrap();
    // What SIGHUP and the MI's `reload` do.
    let errors = running.reload_from_source().unwrap_err().lines().join("\n");
    assert_names(&errors, &evil, "symbolic link");
    assert!(
        !running.control().hep_ids().to_string().contains("dump1"),
        "old config"
    );
    running.shutdown(Stop::Immediate).await;
    assert_untouched(&victim);
}

/// The tests below give files to other users, which only root can do.
fn needs_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: only root gives files to other users"
    );
}

/// A user that is neither root nor heptap's, for files that are someone else's.
const OTHER_UID: u32 = 4242;

#[tokio::test]
#[ignore = "needs root (gives files to other users); .ci/run runs it as root"]
async fn a_file_owned_by_another_user_is_refused() {
    needs_root();
    let dir = Scratch::new();
    let trace = dir.path("sip.jsonl");
    std::fs::write(&trace, "theirs\n").unwrap();
    std::os::unix::fs::chown(&trace, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let (check, start) = refused(dir.config(&[&trace], "")).await;
    assert_names(&check, &trace, "owned by uid 4242");
    assert_names(&start, &trace, "owned by uid 4242");
    assert_eq!(std::fs::read_to_string(&trace).unwrap(), "theirs\n");
}

#[tokio::test]
#[ignore = "needs root (starts as root with service.user = nobody); .ci/run runs it as root"]
async fn started_as_root_with_service_user_files_are_the_service_users() {
    needs_root();
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a nobody user");
    let service = "[service]\nuser = \"nobody\"\n";
    let dir = Scratch::new();
    // The case: a 0666 file owned by nobody.
    let planted = dir.path("planted.jsonl");
    std::fs::write(&planted, "").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::chown(&planted, Some(nobody.uid.as_raw()), None).unwrap();
    let (check, _) = refused(dir.config(&[&planted], service)).await;
    assert_names(&check, &planted, "writable by others");
    // Another user's file is refused; the service user's and root's are taken.
    let other = dir.path("other.jsonl");
    std::fs::write(&other, "").unwrap();
    std::os::unix::fs::chown(&other, Some(OTHER_UID), None).unwrap();
    let (check, _) = refused(dir.config(&[&other], service)).await;
    assert_names(
        &check,
        &other,
        &format!("only root or the service user (uid {})", nobody.uid),
    );
    let theirs = dir.path("theirs.jsonl");
    std::fs::write(&theirs, "").unwrap();
    std::os::unix::fs::chown(&theirs, Some(nobody.uid.as_raw()), None).unwrap();
    let roots = dir.path("roots.jsonl");
    std::fs::write(&roots, "").unwrap();
    // A new file is created for nobody (its primary group), 0640, before any privilege drop.
    let new = dir.path("new.jsonl");
    let config = dir.config(&[&theirs, &roots, &new], service);
    heptap::check(&config).unwrap();
    let running = heptap::start(config, LogHandle::detached()).await.unwrap();
    let meta = std::fs::symlink_metadata(&new).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777),
        (nobody.uid.as_raw(), nobody.gid.as_raw(), 0o640)
    );
    running.shutdown(Stop::Immediate).await;
}
