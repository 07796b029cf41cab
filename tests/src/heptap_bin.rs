//! The real `heptap` binary, for end-to-end tests that run it as a user would.
//!
//! Cargo builds a package's own binaries before that package's integration tests, but not the
//! binaries of its dependencies, and `env!("CARGO_BIN_EXE_heptap")` exists only inside the agent
//! package. So the first test that needs the binary builds it, once per test process, into the
//! target directory and profile the running test was built in (found from the test executable's
//! own path), and every later caller gets the same path.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Set to a path to use that `heptap` binary instead of building one (for example a release build
/// or an installed package).
pub const HEPTAP_BIN_ENV: &str = "HEPTAP_BIN";

/// Path of a `heptap` binary built from this checkout (or [`HEPTAP_BIN_ENV`] when set).
///
/// The first call runs `cargo build -p heptap --bin heptap` with the running test's target
/// directory and profile; it panics with cargo's output when the build fails.
pub fn heptap_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(locate_or_build) {
        Ok(path) => path.clone(),
        Err(why) => panic!("no heptap binary for the test: {why}"),
    }
}

fn locate_or_build() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(HEPTAP_BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{HEPTAP_BIN_ENV}={} is not a file", path.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let layout = BuildLayout::of_test_exe(&exe)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "-p", "heptap", "--bin", "heptap"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&layout.target_dir)
        .arg("--profile")
        .arg(&layout.profile);
    if let Some(triple) = &layout.target_triple {
        cmd.arg("--target").arg(triple);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{cmd:?}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bin = layout
        .profile_dir
        .join(format!("heptap{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo built heptap but {} is missing",
            bin.display()
        ))
    }
}

/// Where the running test executable sits: `<target>/[<triple>/]<profile dir>/deps/<test>`.
#[derive(Debug)]
struct BuildLayout {
    /// `<target>`: the directory to pass as `--target-dir`.
    target_dir: PathBuf,
    /// `<target>/[<triple>/]<profile dir>`: where cargo puts the built binary.
    profile_dir: PathBuf,
    /// The cargo profile the directory belongs to ("debug" is the `dev` profile).
    profile: String,
    /// Set when the tests were built with `--target <triple>`.
    target_triple: Option<String>,
}

impl BuildLayout {
    fn of_test_exe(exe: &Path) -> Result<Self, String> {
        let deps = exe
            .parent()
            .filter(|d| d.file_name().is_some_and(|n| n == "deps"))
            .ok_or_else(|| format!("{} is not in a cargo deps directory", exe.display()))?;
        let profile_dir = deps
            .parent()
            .ok_or_else(|| format!("{} has no profile directory", deps.display()))?;
        let profile_name = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{} has no profile name", profile_dir.display()))?;
        let profile = match profile_name {
            "debug" => "dev".to_owned(),
            other => other.to_owned(),
        };
        let above = profile_dir
            .parent()
            .ok_or_else(|| format!("{} has no target directory", profile_dir.display()))?;
        // The target directory is the one cargo tags with CACHEDIR.TAG; anything between it and
        // the profile directory is a `--target` triple.
        let (target_dir, target_triple) = if above.join("CACHEDIR.TAG").is_file() {
            (above.to_path_buf(), None)
        } else {
            let triple = above
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned);
            let target = above
                .parent()
                .ok_or_else(|| format!("{} has no target directory", above.display()))?;
            (target.to_path_buf(), triple)
        };
        Ok(BuildLayout {
            target_dir,
            profile_dir: profile_dir.to_path_buf(),
            profile,
            target_triple,
        })
    }
}
