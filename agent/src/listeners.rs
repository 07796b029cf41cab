//! The listeners as a set: every `[[listener]]` that serves, each started, changed and stopped
//! on its own, and the removed ones whose connections go on until they close.
//!
//! A reload ([`Listeners::reload`]) matches the config's listeners to the running ones by their
//! configured address (port 0: and by name) and then, one listener at a time:
//! - one still in the config keeps its listening sockets (no connection attempt is refused
//!   across the reload) and its new connections get the new settings, certificate and key,
//!   whatever changed (proto, TLS, upstream, limits, timeouts, SIP tracing); its live
//!   connections keep what they were accepted with;
//! - one added is bound on every worker and starts accepting;
//! - one removed stops accepting; its connections go on, counted and traced, until they close.
//!
//! What cannot be done (TLS files that cannot be used, an address in use) is reported and that
//! listener is left as it was; the others go on. `tls_reload` ([`Listeners::reload_tls`]) only
//! reads the TLS files again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use heptap_config::Config;
use heptap_mi::ReloadReport;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::build::{changed_keys, listener_specs, without_prefix};
use crate::handover::ListenerSockets;
use crate::tap::{BoundListener, ListenError, Listener, ListenerSpec, Tap, TapContext};

/// How long a reload waits for a removed listener's sockets to close (its accept loops end on
/// the workers at once; this only bounds a worker stuck in something else).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// One serving or draining listener and the config it runs.
#[derive(Debug)]
struct Entry {
    /// The `[[listener]]` it runs, as the config gave it (to tell what a reload changes).
    config: heptap_config::Listener,
    /// The running listener.
    listener: Listener,
}

impl Entry {
    /// `listener <name>`: how reports and logs name it.
    fn item(&self) -> String {
        item(&self.listener.tap().spec)
    }
}

fn item(spec: &ListenerSpec) -> String {
    format!("listener {}", spec.name)
}

/// Every listener of the agent.
#[derive(Debug)]
pub struct Listeners {
    /// What every connection shares (tracer, ids, statistics).
    ctx: Arc<TapContext>,
    /// Every connection task and accept loop: shutdown waits for them.
    tracker: TaskTracker,
    /// Stops every accept loop (shutdown); each listener has a child of it.
    stop: CancellationToken,
    /// Ends every connection (shutdown).
    kill: CancellationToken,
    /// The relay workers: one socket and accept loop per worker per listener.
    workers: Arc<[tokio::runtime::Handle]>,
    /// The listeners that accept, in config order.
    serving: Vec<Entry>,
    /// Removed listeners whose connections are still open.
    draining: Vec<Entry>,
}

impl Listeners {
    /// No listener yet; [`Listeners::start`] serves the ones bound at start.
    pub fn new(
        ctx: Arc<TapContext>,
        tracker: TaskTracker,
        stop: CancellationToken,
        kill: CancellationToken,
        workers: Arc<[tokio::runtime::Handle]>,
    ) -> Self {
        Self {
            ctx,
            tracker,
            stop,
            kill,
            workers,
            serving: Vec::new(),
            draining: Vec::new(),
        }
    }

    /// Binds the listeners of `config` on every worker, without serving them yet: at start,
    /// before privileges are dropped. Any that cannot be bound is an error. At a hand-over,
    /// `inherited(name, listen)` gives the old process's sockets for a listener, which is then
    /// served on them instead.
    pub fn bind(
        config: &Config,
        workers: usize,
        mut inherited: impl FnMut(&str, SocketAddr) -> Option<Vec<std::net::TcpListener>>,
    ) -> Result<Vec<(heptap_config::Listener, BoundListener)>, ListenError> {
        listener_specs(config)
            .into_iter()
            .zip(&config.listener)
            .map(|(spec, c)| {
                let bound = match inherited(&spec.name, spec.listen) {
                    Some(sockets) => BoundListener::adopt(spec, sockets, workers)?,
                    None => BoundListener::bind(spec, workers)?,
                };
                Ok((c.clone(), bound))
            })
            .collect()
    }

    /// Every serving listener's sockets, duplicated, for a hand-over to a new process (the
    /// removed ones still draining are not offered: they no longer accept).
    pub fn handover(&self) -> std::io::Result<Vec<ListenerSockets>> {
        self.serving
            .iter()
            .map(|e| {
                Ok(ListenerSockets {
                    name: e.listener.tap().spec.name.clone(),
                    listen: e.config.listen,
                    local: e.listener.local_addr(),
                    sockets: e.listener.handover_sockets()?,
                })
            })
            .collect()
    }

    /// Starts serving listeners bound by [`Listeners::bind`].
    pub fn start(&mut self, bound: Vec<(heptap_config::Listener, BoundListener)>) {
        for (config, bound) in bound {
            let listener = self.serve(bound);
            self.serving.push(Entry { config, listener });
        }
    }

    fn serve(&self, bound: BoundListener) -> Listener {
        bound.serve(
            &self.ctx,
            &self.tracker,
            &self.stop,
            &self.kill,
            &self.workers,
        )
    }

    /// The bound address of each serving listener, in config order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.serving
            .iter()
            .map(|e| e.listener.local_addr())
            .collect()
    }

    /// Each serving listener for the metrics: name, protocol, address, in config order.
    pub fn infos(&self) -> Vec<crate::metrics::ListenerInfo> {
        self.serving
            .iter()
            .map(|e| {
                let tap = e.listener.tap();
                crate::metrics::ListenerInfo {
                    name: tap.spec.name.clone(),
                    proto: tap.spec.proto.name(),
                    listen: e.listener.local_addr().to_string(),
                }
            })
            .collect()
    }

    /// The rows of MI `ps`: each serving listener, then each removed one still relaying.
    pub fn rows(&mut self) -> Vec<String> {
        self.prune();
        let row = |e: &Entry| {
            let tap = e.listener.tap();
            format!(
                "{} listener {} on {}",
                tap.spec.proto.name().to_ascii_uppercase(),
                tap.spec.name,
                e.listener.local_addr()
            )
        };
        let serving = self.serving.iter().map(row);
        let draining = self.draining.iter().map(|e| {
            format!(
                "{} (removed; {} connection(s) open)",
                row(e),
                e.listener.connections()
            )
        });
        serving.chain(draining).collect()
    }

    /// Forgets removed listeners whose last connection has closed.
    fn prune(&mut self) {
        self.draining.retain(|e| !e.listener.is_drained());
    }

    /// Applies the `[[listener]]`s of `config` (see the module doc), reporting every listener
    /// added, changed, renewed or removed, and every one that could not be.
    pub fn reload(&mut self, config: &Config, report: &mut ReloadReport) {
        self.prune();
        let mut old: Vec<Option<Entry>> = std::mem::take(&mut self.serving)
            .into_iter()
            .map(Some)
            .collect();
        let next: Vec<Next> = listener_specs(config)
            .into_iter()
            .zip(&config.listener)
            .map(|(spec, c)| Next {
                running: take_match(&mut old, &spec),
                spec,
                config: c.clone(),
            })
            .collect();
        let removed: Vec<Entry> = old.into_iter().flatten().collect();

        // Bind what is new before anything stops, so that a new listener that cannot bind
        // leaves the others as they were.
        let mut later = Vec::new();
        let mut slots: Vec<Option<Entry>> = Vec::new();
        let mut to_serve = Vec::new();
        for Next {
            running,
            spec,
            config: c,
        } in next
        {
            match running {
                Some(entry) => slots.push(Some(self.update(entry, spec, c, report))),
                None => match BoundListener::bind(spec.clone(), self.workers.len()) {
                    Ok(bound) => {
                        to_serve.push((slots.len(), c, bound));
                        slots.push(None);
                    }
                    // Taken by a listener this reload removes (a wildcard address and one of
                    // its own, say): bound again once that one has closed its sockets.
                    Err(ListenError::Bind { source, .. })
                        if source.kind() == std::io::ErrorKind::AddrInUse
                            && removed
                                .iter()
                                .any(|r| overlaps(r.listener.local_addr(), spec.listen)) =>
                    {
                        later.push((slots.len(), spec, c));
                        slots.push(None);
                    }
                    Err(e) => report.not_applied(
                        item(&spec),
                        format!(
                            "{}; not started",
                            without_prefix(e.to_string(), &item(&spec))
                        ),
                    ),
                },
            }
        }

        for entry in &removed {
            entry.listener.stop_accepting();
        }
        for entry in removed {
            // Its accept loops run on the workers and close its sockets as they end: when the
            // reload answers, the address refuses new connections (and can be bound again).
            if !entry.listener.wait_stopped(CLOSE_WAIT) {
                tracing::warn!(
                    "{}: its sockets are still open {CLOSE_WAIT:?} after it was removed",
                    entry.item()
                );
            }
            let open = entry.listener.connections();
            report.applied(
                entry.item(),
                format!(
                    "removed: stopped accepting on {}; its {open} connection(s) go on until they close",
                    entry.listener.local_addr()
                ),
            );
            let drained = entry.listener.drained();
            let name = entry.item();
            if let Some(worker) = self.workers.first() {
                worker.spawn(async move {
                    drained.await;
                    tracing::info!("{name}: removed, its last connection has closed");
                });
            }
            self.draining.push(entry);
        }

        for (slot, spec, c) in later {
            match BoundListener::bind(spec.clone(), self.workers.len()) {
                Ok(bound) => to_serve.push((slot, c, bound)),
                Err(e) => report.not_applied(
                    item(&spec),
                    format!(
                        "{}; not started",
                        without_prefix(e.to_string(), &item(&spec))
                    ),
                ),
            }
        }

        for (slot, config, bound) in to_serve {
            let local = bound.local_addr();
            let what = item(bound.spec());
            let listener = self.serve(bound);
            report.applied(what, format!("added: listening on {local}"));
            if let Some(s) = slots.get_mut(slot) {
                *s = Some(Entry { config, listener });
            }
        }
        self.serving = slots.into_iter().flatten().collect();
    }

    /// A listener the config keeps: new connections get what the config now says, read again
    /// (its TLS files too); when that cannot be built it goes on as it was.
    fn update(
        &self,
        mut entry: Entry,
        spec: ListenerSpec,
        config: heptap_config::Listener,
        report: &mut ReloadReport,
    ) -> Entry {
        let name = entry.item();
        let old = entry.listener.tap();
        let tap = match Tap::new(spec) {
            Ok(tap) => tap,
            Err(e) => {
                report.not_applied(
                    &name,
                    format!(
                        "{}; it goes on as it was",
                        without_prefix(e.to_string(), &name)
                    ),
                );
                return entry;
            }
        };
        let keys = changed_keys(&entry.config, &config);
        let renewed = tap.tls_digest() != old.tls_digest();
        if !keys.is_empty() {
            report.applied(
                &name,
                format!(
                    "new connections get the new {}; live ones keep what they had",
                    keys.join(", ")
                ),
            );
        }
        if renewed {
            report.applied(&name, renewed_text(&tap));
        }
        // Swapped even when nothing of its own changed: what it takes from other sections
        // (`[tracer] sip_payload`) may have, and they report themselves.
        entry.listener.update(tap, &self.ctx.stats);
        entry.config = config;
        entry
    }

    /// Reads the certificate, key and CA files of every serving listener again (`tls_reload`):
    /// the next handshakes use what changed; a listener whose files cannot be used goes on with
    /// the old ones.
    pub fn reload_tls(&mut self, report: &mut ReloadReport) {
        for entry in &self.serving {
            let old = entry.listener.tap();
            if old.tls_server.is_none() && old.tls_client.is_none() {
                continue;
            }
            let name = entry.item();
            match Tap::new(ListenerSpec::clone(&old.spec)) {
                Ok(tap) if tap.tls_digest() != old.tls_digest() => {
                    report.applied(&name, renewed_text(&tap));
                    entry.listener.update(tap, &self.ctx.stats);
                }
                Ok(_) => {}
                Err(e) => report.not_applied(
                    &name,
                    format!(
                        "{}; it goes on with the files it had",
                        without_prefix(e.to_string(), &name)
                    ),
                ),
            }
        }
    }
}

/// One `[[listener]]` of the new config, and the running listener it stands for.
struct Next {
    /// Running already (same address): changed in place. `None`: a new one.
    running: Option<Entry>,
    /// What it should be.
    spec: ListenerSpec,
    /// As the config gives it.
    config: heptap_config::Listener,
}

/// The running listener `spec` stands for, taken out of `old`: the same configured address and
/// name, else (not for port 0, where only the name tells listeners apart) the same address.
fn take_match(old: &mut [Option<Entry>], spec: &ListenerSpec) -> Option<Entry> {
    let same = |e: &Entry, by_name: bool| {
        e.config.listen == spec.listen && (!by_name || e.listener.tap().spec.name == spec.name)
    };
    let found = old
        .iter()
        .position(|e| e.as_ref().is_some_and(|e| same(e, true)))
        .or_else(|| {
            (spec.listen.port() != 0)
                .then(|| {
                    old.iter()
                        .position(|e| e.as_ref().is_some_and(|e| same(e, false)))
                })
                .flatten()
        })?;
    old.get_mut(found)?.take()
}

/// Whether a socket bound on `bound` keeps another from binding `wanted` (same port, and the
/// same address or a wildcard on either side).
fn overlaps(bound: SocketAddr, wanted: SocketAddr) -> bool {
    bound.port() == wanted.port()
        && (bound.ip() == wanted.ip()
            || bound.ip().is_unspecified()
            || wanted.ip().is_unspecified())
}

/// What a reload reports for a listener whose TLS files changed.
fn renewed_text(tap: &Tap) -> String {
    match tap.subject() {
        Some(subject) => format!(
            "TLS files reloaded: new handshakes get the certificate {subject}, live connections go on"
        ),
        None => "TLS files reloaded: new handshakes use them, live connections go on".to_owned(),
    }
}
