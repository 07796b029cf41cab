//! Logs through `tracing` to stderr (journald picks them up); stdout belongs to the `stdout`
//! destination. The level can be changed at run time (MI `log_level`) through [`LogHandle`].

use heptap_config::LogFormat;
use tracing_subscriber::{EnvFilter, prelude::*, reload};

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogHandle {
    /// The reload handle of the installed filter layer; `None` when another subscriber was
    /// already installed (tests that run several agents in one process).
    inner: Option<reload::Handle<EnvFilter, tracing_subscriber::Registry>>,
    /// `RUST_LOG` was set at start: it wins over `[log] level`, a reload included.
    from_env: bool,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("installed", &self.inner.is_some())
            .field("from_env", &self.from_env)
            .finish()
    }
}

/// A level or directive string that `EnvFilter` refuses.
#[derive(Debug, thiserror::Error)]
#[error("invalid log level '{level}': {reason}")]
pub struct BadLevel {
    /// What was asked for.
    level: String,
    /// Why it was refused.
    reason: String,
}

fn filter(level: &str) -> Result<EnvFilter, BadLevel> {
    EnvFilter::builder().parse(level).map_err(|e| BadLevel {
        level: level.to_owned(),
        reason: e.to_string(),
    })
}

/// Installs the global subscriber at `level` (`RUST_LOG`, when set, wins: it is the developer's
/// override), writing `format`. Falls back to `info` on a bad level, saying so.
pub fn init(level: &str, format: LogFormat) -> LogHandle {
    let from_env = std::env::var("RUST_LOG").ok();
    let wanted = from_env.clone().unwrap_or_else(|| level.to_owned());
    let (f, bad) = match filter(&wanted) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let (layer, handle) = reload::Layer::new(f);
    let (text, json) = match format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            ),
            None,
        ),
        // One object per line, fields by name, for Vector, Fluent Bit, Promtail and the like.
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    let installed = tracing_subscriber::registry()
        .with(layer)
        .with(text)
        .with(json)
        .try_init()
        .is_ok();
    if let Some(e) = bad {
        tracing::warn!("{e}; using info");
    }
    LogHandle {
        inner: installed.then_some(handle),
        from_env: from_env.is_some(),
    }
}

impl LogHandle {
    /// A handle that changes nothing (for agents started inside tests).
    pub fn detached() -> Self {
        Self {
            inner: None,
            from_env: false,
        }
    }

    /// Whether `RUST_LOG` chose the level at start (a reload then leaves `[log] level` alone).
    pub fn overridden_by_env(&self) -> bool {
        self.from_env
    }

    /// Sets a new level or directive string.
    pub fn set(&self, level: &str) -> Result<(), BadLevel> {
        let f = filter(level)?;
        if let Some(h) = &self.inner {
            h.reload(f).map_err(|e| BadLevel {
                level: level.to_owned(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// A warning that can come in floods (a dead upstream refusing every client): written at once
/// the first time, then at most once per `interval`, with how many happened since the last one
/// written, so the log holds one line per interval with a count instead of one per occurrence.
#[derive(Debug)]
pub struct Flood {
    /// The least time between two lines.
    interval: std::time::Duration,
    /// When the last line was written, and what happened since.
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Flood {
    /// At most one line per `interval`.
    pub fn new(interval: std::time::Duration) -> Self {
        Self {
            interval,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// One more occurrence: `Some(n)` when a line is due now, `n` the occurrences it covers
    /// (this one included); `None` when it waits for the next line.
    pub fn hit(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        match state.0 {
            Some(last) if now.duration_since(last) < self.interval => None,
            _ => {
                let n = state.1;
                *state = (Some(now), 0);
                Some(n)
            }
        }
    }

    /// The interval, for the line's words.
    pub fn interval(&self) -> std::time::Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_one_line_per_interval_counting_what_came_between() {
        let flood = Flood::new(std::time::Duration::from_secs(3600));
        assert_eq!(flood.hit(), Some(1));
        for _ in 0..99 {
            assert_eq!(flood.hit(), None);
        }
        let now = Flood::new(std::time::Duration::ZERO);
        assert_eq!(now.hit(), Some(1));
        assert_eq!(now.hit(), Some(1));
    }
}
