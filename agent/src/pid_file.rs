//! `[service] pid_file`: the pid of the heptap that accepts. Written once heptap is ready (by the
//! new process after a hand-over, replacing the old one's pid), removed at exit only while it
//! still holds this process's pid; the old process of a hand-over gives it up when it hands over
//! (it no longer accepts), so it never removes the new one's, even one not written yet.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The pid file this process wrote.
#[derive(Debug)]
pub struct PidFile {
    /// Where.
    path: PathBuf,
    /// Whether this process still names it (not after a hand-over).
    owned: bool,
}

impl PidFile {
    /// Writes this process's pid to `path` in one step (a temporary file renamed over it, so a
    /// reader never sees it half written).
    pub fn write(path: &Path) -> std::io::Result<Self> {
        let pid = std::process::id();
        let tmp = path.with_file_name(format!(
            ".{}.{pid}.tmp",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(format!("{pid}\n").as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(std::io::Error::new(
                e.kind(),
                format!("pid file {}: {e}", path.display()),
            ));
        }
        tracing::debug!(path = %path.display(), pid, "Wrote the pid file");
        Ok(Self {
            path: path.to_owned(),
            owned: true,
        })
    }
}

impl PidFile {
    /// Gives the file up without removing it: another process (the new one of a hand-over)
    /// accepts now and writes its own pid.
    pub fn disown(mut self) {
        self.owned = false;
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let mine = self.owned
            && std::fs::read_to_string(&self.path)
                .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if mine {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_file_holds_the_pid_and_goes_only_while_it_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heptap.pid");
        let file = PidFile::write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(file);
        assert!(!path.exists());

        // Handed over: the file is left to the new process, whatever it holds yet.
        let file = PidFile::write(&path).unwrap();
        file.disown();
        assert!(path.exists());

        // Another process took over (a hand-over): its pid stays.
        let file = PidFile::write(&path).unwrap();
        std::fs::write(&path, "4242\n").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
    }
}
