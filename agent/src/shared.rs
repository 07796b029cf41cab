//! What the running agent and its MI share, and the reload that swaps a new config in.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use heptap_config::{Config, Source};

use crate::build::{self, BuildError, Built};
use crate::logging::LogHandle;
use crate::stats::Stats;
use crate::tracer::Tracer;

/// What the running agent and its MI share.
#[derive(Debug)]
pub struct Shared {
    /// Where events go; the switches.
    pub tracer: Arc<Tracer>,
    /// Every counter.
    pub stats: Stats,
    /// Changes the log level at run time.
    pub log: LogHandle,
    /// Where a reload re-reads the config from; `None` re-applies the config in memory.
    pub source: Option<Source>,
    /// The config and what was built from it; taken at shutdown.
    pub state: Mutex<State>,
    /// The bound listeners, for MI `ps`: (name, proto, address).
    pub listeners: Vec<(String, &'static str, SocketAddr)>,
    /// The relay workers' runtimes: where a (re)build starts the destinations' lanes.
    pub workers: Arc<[tokio::runtime::Handle]>,
}

/// The part a reload replaces.
#[derive(Debug)]
pub struct State {
    /// The config in force.
    pub config: Config,
    /// Destinations' tasks; `None` once shut down.
    pub built: Option<Built>,
}

/// Why a reload was refused; the old config keeps running.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config source cannot be read, or does not validate.
    #[error("{0}")]
    Load(#[from] heptap_config::ConfigErrors),
    /// The new config names something that cannot be built.
    #[error("{0}")]
    Build(#[from] BuildError),
    /// heptap is stopping; nothing is swapped in any more.
    #[error("heptap is shutting down")]
    ShuttingDown,
}

impl ReloadError {
    /// The problems as the MI lists them: each build problem on its own, the config's errors
    /// as one text.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ReloadError::Build(e) => e.0.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

impl Shared {
    /// Swaps in `config` (already loaded and validated): destinations, trace ids, routes and the
    /// switches' defaults. Relayed connections are not touched; listeners and the MI's own
    /// settings are not re-bound (a change there needs a restart, and the log says so). On any
    /// error the old config keeps running.
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(old) = state.built.as_mut() else {
            return Err(ReloadError::ShuttingDown);
        };
        let mut built = build::build(&config, &self.stats, Some(old), &self.workers)?;
        built.adopt(old);
        let listeners = |c: &Config| {
            build::listener_specs(c)
                .into_iter()
                .map(|s| (s.proto, s.listen, s.upstream))
                .collect::<Vec<_>>()
        };
        if listeners(&config) != listeners(&state.config) {
            tracing::warn!(
                "The [[listener]] sections changed; they take effect at the next restart"
            );
        }
        if config.service.workers != state.config.service.workers {
            tracing::warn!("service.workers changed; it takes effect at the next restart");
        }
        if config.mi != state.config.mi {
            tracing::warn!("The [mi] section changed; it takes effect at the next restart");
        }
        self.tracer.publish(built.pipeline.clone());
        if let Some(old) = state.built.replace(built) {
            old.retire();
        }
        state.config = config;
        Ok(())
    }

    /// Re-reads the config from its source (or re-applies the one in memory), validates it,
    /// and swaps it in.
    pub fn reload_from_source(&self) -> Result<(), ReloadError> {
        let config = match &self.source {
            Some(src) => Config::load(src)?,
            None => self
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .config
                .clone(),
        };
        build::check(&config)?;
        self.reload(config)
    }
}
