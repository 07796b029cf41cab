//! The agent's life: build everything from a config, bind, serve, reload, drain, stop.
//!
//! [`start`] takes a config and returns a [`Running`] agent with its bound addresses, so tests
//! run the real thing in-process on port 0; [`serve`] is what `heptap serve` does around it
//! (signals, the startup report). The MI reaches the same state ([`Shared`]) through
//! [`crate::control`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heptap_config::{Config, Source};
use heptap_mi::{Mi, MiRunning};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use heptap_mi::ReloadReport;

use crate::build::{self, BuildError};
use crate::conn_id::ConnIds;
use crate::control::AgentControl;
use crate::handover::{Incoming, Inherited};
use crate::listeners::Listeners;
use crate::logging::LogHandle;
use crate::shared::{ReloadError, Shared, StartOnly, State, level_of};
use crate::signals::{Signal, Signals};
use crate::stats::Stats;
use crate::tap::{ListenError, LiveConns, TapContext};
use crate::tracer::Tracer;
use crate::workers::Workers;

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
    /// A listener could not be set up: its TLS material, or its address.
    #[error("{0}")]
    Listen(#[from] ListenError),
    /// The MI could not be set up (its FIFO, its HTTP listener, its settings).
    #[error("mi: {0}")]
    Mi(#[from] heptap_mi::MiError),
}

/// A running agent.
#[derive(Debug)]
pub struct Running {
    /// What the MI shares.
    shared: Arc<Shared>,
    /// Cancelled to stop accepting.
    stop: CancellationToken,
    /// Cancelled to end relayed connections now.
    kill: CancellationToken,
    /// Cancelled to stop the MI.
    mi_stop: CancellationToken,
    /// Every connection task and accept loop.
    tracker: TaskTracker,
    /// The MI servers.
    mi: MiRunning,
    /// The relay workers; stopped last.
    workers: Workers,
}

/// Builds everything from `config`, binds every listener and the MI, and starts serving. A
/// reload re-applies the config in memory; see [`start_with_source`] to re-read a file.
pub async fn start(config: Config, log: LogHandle) -> Result<Running, StartError> {
    start_with_source(config, log, None).await
}

/// [`start`], with the source a reload (SIGHUP, MI `reload`) re-reads the config from.
pub async fn start_with_source(
    config: Config,
    log: LogHandle,
    source: Option<Source>,
) -> Result<Running, StartError> {
    start_taking_over(config, log, source, Inherited::none()).await
}

/// [`start_with_source`], serving the sockets and the MI FIFO `inherited` from the previous
/// heptap process (a hand-over) where the config still has them, binding the rest.
pub(crate) async fn start_taking_over(
    config: Config,
    log: LogHandle,
    source: Option<Source>,
    mut inherited: Inherited,
) -> Result<Running, StartError> {
    let stats = Stats::new();
    let workers = Workers::start(crate::workers::count(config.service.workers))?;
    let built = build::build(&config, &stats, None, workers.handles())?;
    let tracer = Arc::new(Tracer::new(built.pipeline.clone()));
    let conns = LiveConns::new(workers.handles().len());
    let ctx = Arc::new(TapContext {
        tracer: tracer.clone(),
        ids: ConnIds::new(),
        stats: stats.clone(),
        conns: conns.clone(),
    });
    // At a hand-over, the old process's sockets for the listeners the config still has.
    let bound = Listeners::bind(&config, workers.handles().len(), |name, listen| {
        inherited.take_listener(name, listen)
    })?;
    inherited.close_the_rest();
    let mi_settings = crate::mi_settings::mi_settings(&config)?;
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let tracker = TaskTracker::new();
    let listeners = Listeners::new(
        ctx,
        tracker.clone(),
        stop.clone(),
        kill.clone(),
        workers.handles().clone(),
    );
    let shared = Arc::new(Shared {
        tracer: tracer.clone(),
        stats: stats.clone(),
        log,
        level: Mutex::new(level_of(&config.log.level)),
        source,
        state: Mutex::new(State {
            started: StartOnly::of(&config),
            config,
            built: Some(built),
            listeners,
        }),
        workers: workers.handles().clone(),
        conns,
        up_since: std::time::Instant::now(),
    });
    let mi_stop = CancellationToken::new();
    let mi = Mi::new(mi_settings, Arc::new(AgentControl::new(shared.clone())))?
        .start_with(mi_stop.clone(), inherited.mi)
        .await?;
    shared
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .listeners
        .start(bound);
    Ok(Running {
        shared,
        stop,
        kill,
        mi_stop,
        tracker,
        mi,
        workers,
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
    /// The bound address of each `[[listener]]` that serves, in config order (a reload
    /// changes them: listeners added, removed, or not applied).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.shared.listen_addrs()
    }

    /// Where the MI's JSON-RPC over HTTP listens, if it does.
    pub fn mi_http_addr(&self) -> Option<SocketAddr> {
        self.mi.http_addr
    }

    /// Where `[mi] metrics_listen` listens (the real port when the config said port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.mi.metrics_addr
    }

    /// The MI FIFO, if there is one.
    pub fn mi_fifo(&self) -> Option<&PathBuf> {
        self.mi.fifo_path.as_ref()
    }

    /// Tasks alive on the relay workers (connections, accept loops, destination lanes), for
    /// checking that nothing is left behind.
    pub fn worker_tasks(&self) -> usize {
        self.workers
            .handles()
            .iter()
            .map(|h| h.metrics().num_alive_tasks())
            .sum()
    }

    /// The statistics registry.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The agent's [`heptap_mi::Control`], the seam an operator's MI command goes through: the
    /// same switches, statistics, log level and reload the MI's own control reaches.
    pub fn control(&self) -> Arc<dyn heptap_mi::Control> {
        Arc::new(AgentControl::new(self.shared.clone()))
    }

    /// What the MI shares.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Applies a new config as far as it can and says what it applied and what not; see
    /// [`Shared::reload`].
    pub fn reload(&self, config: Config) -> Result<ReloadReport, ReloadError> {
        self.shared.reload(config)
    }

    /// Re-reads the config from its source and applies it (SIGHUP, MI `reload`).
    pub fn reload_from_source(&self) -> Result<ReloadReport, ReloadError> {
        self.shared.reload_from_source()
    }

    /// Re-reads every listener's and destination's TLS files (MI `tls_reload`).
    pub fn tls_reload(&self) -> Result<ReloadReport, ReloadError> {
        self.shared.tls_reload()
    }

    /// Makes the MI check its FIFO now and re-create it if it was deleted.
    pub fn recheck_fifo(&self) {
        self.mi.recheck_fifo();
    }

    /// Stops the agent.
    pub async fn shutdown(self, how: Stop) {
        self.stop_accepting();
        let grace = match how {
            Stop::Graceful(grace) => {
                if tokio::time::timeout(grace, self.connections_closed())
                    .await
                    .is_err()
                {
                    tracing::info!(
                        cut = self.connections(),
                        "Grace period over; closing the remaining connections"
                    );
                }
                grace
            }
            Stop::Immediate => Duration::ZERO,
        };
        self.finish(grace).await;
    }

    /// Stops accepting (the listening sockets close here; a new process that took them over
    /// keeps them open). Live connections go on.
    pub(crate) fn stop_accepting(&self) {
        self.stop.cancel();
        self.tracker.close();
    }

    /// Relayed connections still open (and, until [`Running::stop_accepting`] has taken
    /// effect, the accept loops).
    pub(crate) fn connections(&self) -> usize {
        self.tracker.len()
    }

    /// Returns once every relayed connection has closed (after [`Running::stop_accepting`]).
    pub(crate) async fn connections_closed(&self) {
        self.tracker.wait().await;
    }

    /// What a new process takes over: every serving listener's sockets and the MI's,
    /// duplicated.
    pub(crate) fn handover_offer(
        &self,
    ) -> std::io::Result<(crate::handover::Offer, Vec<std::os::fd::OwnedFd>)> {
        let listeners = self
            .shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .listeners
            .handover()?;
        crate::handover::offer(&listeners, self.mi.handover()?)
    }

    /// A new process serves now: stop accepting and stop the MI, leaving its FIFO and HTTP
    /// socket to the new process. Relayed connections go on.
    pub(crate) fn handed_over(&self) {
        self.stop_accepting();
        self.mi.handed_over();
        self.mi_stop.cancel();
    }

    /// After a hand-over: relays and traces the live connections until they close, or until
    /// `drain_timeout`; a SIGTERM shortens that to `grace` from then, a SIGINT ends it now.
    /// Then cuts what is left (logging how many), delivers the HEP queues and stops.
    pub(crate) async fn drain_after_handover(
        self,
        signals: &mut Signals,
        upgrades: &crate::handover::Upgrades,
        drain_timeout: Duration,
        grace: Duration,
        new_pid: u32,
    ) {
        use tokio::time::Instant;
        let mut deadline = Instant::now() + drain_timeout;
        tracing::info!(drain_timeout = ?drain_timeout, new_pid, "Draining: relaying the live connections until they close");
        let closed = loop {
            tokio::select! {
                () = self.connections_closed() => break true,
                () = tokio::time::sleep_until(deadline) => break false,
                signal = signals.recv() => match signal {
                    Signal::Terminate => {
                        deadline = deadline.min(Instant::now() + grace);
                        tracing::info!(grace = ?grace, "SIGTERM while draining: the drain ends within the grace period");
                    }
                    Signal::Interrupt => {
                        tracing::info!("SIGINT while draining: stopping now");
                        break false;
                    }
                    Signal::Reload => {
                        tracing::info!(new_pid, "SIGHUP ignored: this process is draining; reload the new one");
                    }
                    Signal::Upgrade => {
                        upgrades.refuse(format!("this process is draining; pid {new_pid} serves now"));
                    }
                },
            }
        };
        if closed {
            tracing::info!("Drain over: every relayed connection closed; none cut");
        } else {
            tracing::warn!(
                cut = self.connections(),
                "Drain over: cutting the connections still open"
            );
        }
        self.finish(grace).await;
    }

    /// Ends what is left: cuts the connections still open, stops the MI, delivers the HEP
    /// queues (within `flush`, at least 200 ms) and stops the workers.
    pub(crate) async fn finish(self, flush: Duration) {
        self.kill.cancel();
        self.tracker.wait().await;
        self.mi_stop.cancel();
        self.mi.join().await;
        // Dropping the tracer's snapshot releases the last producers; then flush.
        self.shared.tracer.publish(build::empty_pipeline());
        let dynamic = self.shared.tracer.dynamic.take_all();
        let built = self
            .shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .built
            .take();
        let flush = flush.max(Duration::from_millis(200));
        let mut drains = tokio::task::JoinSet::new();
        for task in dynamic {
            drains.spawn(task.shutdown(flush));
        }
        if let Some(built) = built {
            built.shutdown(flush).await;
        }
        while drains.join_next().await.is_some() {}
        self.workers.stop().await;
    }
}

/// `heptap serve`: start (taking over from the old process when `incoming` is a hand-over),
/// report, then act on signals until told to stop, or until a new process has taken over
/// (SIGUSR2) and this one has drained.
pub async fn serve(
    config: Config,
    source: Source,
    log: LogHandle,
    mut incoming: Option<Incoming>,
) -> Result<(), StartError> {
    // What SIGUSR2 starts again: taken now, before a package upgrade can replace the binary.
    let image = crate::handover::Image::of_this_process();
    let mut signals = Signals::install()?;
    let pid_file = config.service.pid_file.clone();
    // -- service (packaging): who heptap becomes, and systemd's notify socket; see service.rs.
    let privileges = crate::service::Privileges::plan(&config).map_err(std::io::Error::from)?;
    crate::service::raise_open_file_limit();
    let notify = crate::service::Notifier::from_env();
    // --
    let inherited = incoming
        .as_mut()
        .map(Incoming::take_inherited)
        .unwrap_or_default();
    let running = match start_taking_over(config, log, Some(source), inherited).await {
        Ok(running) => running,
        Err(e) => {
            if let Some(incoming) = &incoming {
                incoming.failed(&e.to_string()).await;
            }
            return Err(e);
        }
    };
    if let Some(fifo) = running.mi_fifo() {
        tracing::info!(fifo = %fifo.display(), "MI FIFO ready");
    }
    // -- service: sockets are bound and the FIFO exists; give up root before reporting ready.
    if let Err(e) = privileges.drop_after_start(running.mi_fifo().map(PathBuf::as_path)) {
        if let Some(incoming) = &incoming {
            incoming.failed(&e.to_string()).await;
        }
        running.shutdown(Stop::Immediate).await;
        return Err(std::io::Error::from(e).into());
    }
    // --
    // A hand-over: the old process stops accepting and gives systemd this pid before this
    // process says READY=1.
    let took_over = match incoming.take() {
        Some(incoming) => Some(crate::handover::Incoming::take_over(incoming).await),
        None => None,
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        pid = std::process::id(),
        "heptap is ready"
    );
    let mut pid_file =
        pid_file
            .as_deref()
            .and_then(|path| match crate::pid_file::PidFile::write(path) {
                Ok(file) => Some(file),
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot write the pid file");
                    None
                }
            });
    notify.ready(&match took_over {
        Some(old) => format!(
            "Relaying on {} listener(s); took over from pid {old}",
            running.listen_addrs().len()
        ),
        None => format!("Relaying on {} listener(s)", running.listen_addrs().len()),
    });
    let mut upgrades = crate::handover::Upgrades::new(image);
    loop {
        let signal = tokio::select! {
            signal = signals.recv() => signal,
            outcome = upgrades.outcome() => {
                let Ok(new) = outcome else { continue };
                // The new process accepts on every socket: stop accepting here (connections
                // queued on the sockets are the new process's), stop the MI, move systemd's
                // main pid, and let the new process report itself ready.
                let new_pid = new.pid;
                // The file names the heptap that accepts, which is the new one from here: never
                // remove it at exit, even before the new process has written its pid.
                if let Some(file) = pid_file.take() {
                    file.disown();
                }
                running.handed_over();
                notify.main_pid(new_pid, &format!("Handed over to pid {new_pid}"));
                new.release().await;
                upgrades.taken_over(new_pid);
                tracing::info!(new_pid, "Handed over to the new process");
                // The timeouts as last applied (a reload changes them).
                let service = running.shared().service();
                running
                    .drain_after_handover(
                        &mut signals,
                        &upgrades,
                        service.drain_timeout,
                        service.shutdown_grace,
                        new_pid,
                    )
                    .await;
                return Ok(());
            }
        };
        match signal {
            Signal::Upgrade => {
                let timeout = running.shared().service().handover_timeout;
                upgrades.begin(|| running.handover_offer(), timeout);
            }
            Signal::Reload => {
                tracing::info!("SIGHUP: reloading the config");
                notify.reloading();
                running.recheck_fifo();
                let shared = running.shared().clone();
                let result = tokio::task::spawn_blocking(move || shared.reload_from_source()).await;
                // Each item was logged on its own line by the reload.
                match result {
                    Ok(Ok(report)) if report.is_complete() => {
                        tracing::info!(applied = report.applied.len(), "Config reloaded");
                        notify.ready("Config reloaded");
                    }
                    Ok(Ok(report)) => {
                        tracing::warn!(
                            applied = report.applied.len(),
                            not_applied = report.not_applied.len(),
                            "Config reloaded in part: what was not applied goes on as it was"
                        );
                        notify.ready("Config reloaded in part; the log says what was not applied");
                    }
                    Ok(Err(e)) => {
                        tracing::error!("Reload refused, the old config keeps running:\n{e}");
                        notify.ready("Reload refused; the old config keeps running");
                    }
                    // The reload panicked: heptap's own fault, and the old config is still in
                    // force.
                    Err(e) => {
                        tracing::error!(error = %e, "Reload failed inside heptap; the old config keeps running");
                        notify.ready("Reload failed; the old config keeps running");
                    }
                }
            }
            Signal::Terminate => {
                upgrades.give_up();
                let grace = running.shared().shutdown_grace();
                tracing::info!(grace = ?grace, "SIGTERM: draining");
                notify.stopping("Draining");
                running.shutdown(Stop::Graceful(grace)).await;
                return Ok(());
            }
            Signal::Interrupt => {
                upgrades.give_up();
                tracing::info!("SIGINT: stopping");
                notify.stopping("Stopping");
                running.shutdown(Stop::Immediate).await;
                return Ok(());
            }
        }
    }
}
