//! The agent's life: build everything from a config, bind, serve, reload, drain, stop.
//!
//! [`start`] takes a config and returns a [`Running`] agent with its bound addresses, so tests
//! run the real thing in-process on port 0; [`serve`] is what `heptap serve` does around it
//! (signals, the startup report).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use heptap_config::{Config, Source};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::build::{self, BuildError, Built};
use crate::conn_id::ConnIds;
use crate::logging::LogHandle;
use crate::signals::{Signal, Signals};
use crate::stats::Stats;
use crate::tap::{BoundListener, TapContext};
use crate::tracer::Tracer;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config names something that cannot be built (a route that does not compile, a
    /// destination whose TLS files are bad...).
    #[error("{0}")]
    Build(#[from] BuildError),
    /// A socket could not be bound.
    #[error("{0}")]
    Bind(#[from] std::io::Error),
}

/// Checks everything `start` would build from `config`, without binding or spawning anything.
pub fn check(config: &Config) -> Result<(), BuildError> {
    build::check(config)
}

/// A running agent.
#[derive(Debug)]
pub struct Running {
    /// The config it runs on.
    config: Config,
    /// Where events go.
    tracer: Arc<Tracer>,
    /// Every counter.
    stats: Stats,
    /// The bound address of each `[[listener]]`, in config order.
    listen_addrs: Vec<SocketAddr>,
    /// Cancelled to stop accepting.
    stop: CancellationToken,
    /// Cancelled to end relayed connections now.
    kill: CancellationToken,
    /// Every connection task and accept loop.
    tracker: TaskTracker,
    /// The destinations' tasks, flushed at shutdown.
    built: Built,
    /// Changes the log level at run time.
    log: LogHandle,
}

/// Builds everything from `config`, binds every listener and starts serving.
pub async fn start(config: Config, log: LogHandle) -> Result<Running, StartError> {
    let stats = Stats::new();
    let built = build::build(&config, &stats, None)?;
    let tracer = Arc::new(Tracer::new(built.pipeline.clone()));
    let ctx = Arc::new(TapContext {
        tracer: tracer.clone(),
        ids: ConnIds::new(),
        stats: stats.clone(),
    });
    let mut bound = Vec::new();
    for spec in build::listener_specs(&config) {
        bound.push(BoundListener::bind(spec).await?);
    }
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut listen_addrs = Vec::new();
    for l in bound {
        listen_addrs.push(l.local_addr()?);
        tracker.spawn(l.serve(ctx.clone(), tracker.clone(), stop.clone(), kill.clone()));
    }
    Ok(Running {
        config,
        tracer,
        stats,
        listen_addrs,
        stop,
        kill,
        tracker,
        built,
        log,
    })
}

/// How to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: stop accepting, let relayed connections end within `grace`, flush the queues.
    Graceful(Duration),
    /// SIGINT: end everything now.
    Immediate,
}

impl Running {
    /// The bound address of each `[[listener]]`, in config order.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// The statistics registry.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The tracer (switches and destinations).
    pub fn tracer(&self) -> &Arc<Tracer> {
        &self.tracer
    }

    /// The config it runs on.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The log level handle.
    pub fn log(&self) -> &LogHandle {
        &self.log
    }

    /// Swaps in a new config: destinations, trace ids, filters and switches' defaults. Relayed
    /// connections are not touched; listeners are not re-bound (a changed `[[listener]]` needs a
    /// restart, and says so). On any error the old config keeps running.
    pub fn reload(&mut self, config: Config) -> Result<(), BuildError> {
        let mut built = build::build(&config, &self.stats, Some(&self.built))?;
        built.adopt(&mut self.built);
        if build::listener_specs(&config)
            .iter()
            .map(|s| (s.proto, s.listen, s.upstream.clone()))
            .ne(build::listener_specs(&self.config)
                .iter()
                .map(|s| (s.proto, s.listen, s.upstream.clone())))
        {
            tracing::warn!(
                "The [[listener]] sections changed; they take effect at the next restart"
            );
        }
        self.tracer.publish(built.pipeline.clone());
        std::mem::replace(&mut self.built, built).retire();
        self.config = config;
        Ok(())
    }

    /// Stops the agent.
    pub async fn shutdown(self, how: Stop) {
        self.stop.cancel();
        self.tracker.close();
        let grace = match how {
            Stop::Graceful(grace) => {
                if tokio::time::timeout(grace, self.tracker.wait())
                    .await
                    .is_err()
                {
                    tracing::info!("Grace period over; closing the remaining connections");
                }
                grace
            }
            Stop::Immediate => Duration::ZERO,
        };
        self.kill.cancel();
        self.tracker.wait().await;
        // Dropping the tracer's snapshot releases the last producers; then flush.
        self.tracer.publish(build::empty_pipeline());
        self.built
            .shutdown(grace.max(Duration::from_millis(200)))
            .await;
    }
}

/// `heptap serve`: start, report, then act on signals until told to stop.
pub async fn serve(config: Config, source: Source, log: LogHandle) -> Result<(), StartError> {
    let mut signals = Signals::install()?;
    let grace = config.service.shutdown_grace;
    let mut running = start(config, log).await?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "heptap is ready");
    loop {
        match signals.recv().await {
            Signal::Reload => {
                tracing::info!("SIGHUP: reloading the config");
                match Config::load(&source)
                    .map_err(|e| e.to_string())
                    .and_then(|c| {
                        check(&c).map_err(|e| e.to_string())?;
                        Ok(c)
                    }) {
                    Ok(c) => match running.reload(c) {
                        Ok(()) => tracing::info!("Config reloaded"),
                        Err(e) => {
                            tracing::error!("Reload refused, the old config keeps running:\n{e}")
                        }
                    },
                    Err(e) => tracing::error!("Reload refused, the old config keeps running:\n{e}"),
                }
            }
            Signal::Terminate => {
                tracing::info!(grace = ?grace, "SIGTERM: draining");
                running.shutdown(Stop::Graceful(grace)).await;
                return Ok(());
            }
            Signal::Interrupt => {
                tracing::info!("SIGINT: stopping");
                running.shutdown(Stop::Immediate).await;
                return Ok(());
            }
        }
    }
}
