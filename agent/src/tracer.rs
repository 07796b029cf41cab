//! The tracer: decides, per event, whether and where it is traced.
//!
//! Events come from the taps (connection events, SIP messages) and the MI, and each asks here:
//! [`Tracer::net`], [`Tracer::sip`], [`Tracer::mi`] (and [`Tracer::wants_secrets`] before a TLS
//! handshake). What the decision needs is published as an immutable [`Pipeline`] snapshot behind
//! an `ArcSwap`: each question loads it once, without locks, and a reload swaps it whole. The
//! run-time switches (global, per protocol, per trace id) are atomics shared by every snapshot,
//! so an MI `sip_trace tid off` takes effect for the very next event and survives a reload.
//!
//! A traced event is built inside the closure the caller hands in, which runs only when the
//! event is traced: an event that is not traced costs one snapshot load and no allocation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use heptap_filters::{Bwlist, ConnInfo, Inspect, Route, SipVerdict, sip_fields};
use heptap_hep::{NetProto, TraceMessage};

use crate::dyntrace::{DynTraces, Target};
use crate::sender::{FanOut, Sender};
use crate::sip::SipMessage;

/// A run-time on/off switch, shared by every snapshot that names it.
#[derive(Clone, Debug)]
pub struct Switch(Arc<AtomicBool>);

impl Switch {
    /// A switch in state `on`.
    pub fn new(on: bool) -> Self {
        Self(Arc::new(AtomicBool::new(on)))
    }

    /// Whether it is on.
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Turns it on or off.
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed)
    }
}

/// Where a protocol's connection events go (`[net.<proto>]`).
#[derive(Clone, Debug)]
pub struct NetTrace {
    /// `trace_on`, switched by `tcp_trace on|off` and friends.
    pub on: Switch,
    /// `trace_destination`; without one nothing is traced, as in OpenSIPS.
    pub destination: Option<Sender>,
    /// `trace_filter_route`, run once per connection at its first traced event.
    pub filter: Option<Route>,
    /// `trace_master_key` (TLS and WSS): send the session secrets. Off unless set.
    pub master_key: bool,
}

/// One trace id (`[tid]uri=...`): its switch and its destinations.
#[derive(Clone, Debug)]
pub struct TraceId {
    /// Its run-time switch.
    pub on: Switch,
    /// Every destination of the id; an event goes to each (never blocking).
    pub destinations: FanOut,
}

/// Everything the data path reads to decide about an event; immutable once published.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// Connection-event tracing per protocol, indexed by [`NetProto::index`].
    pub net: [NetTrace; 4],
    /// The tracer's global SIP switch (`[tracer] trace_on`, MI `sip_trace on|off`).
    pub sip_on: Switch,
    /// Trace ids by name.
    pub trace_ids: BTreeMap<String, TraceId>,
    /// Every destination by name (for MI `hep_ids`, and to keep them alive).
    pub destinations: BTreeMap<String, Sender>,
    /// `[mi] trace_destination`: where MI requests and replies are traced.
    pub mi: Option<Sender>,
}

impl Pipeline {
    /// The connection-event settings of one protocol.
    pub fn net(&self, proto: NetProto) -> &NetTrace {
        &self.net[proto.index()]
    }
}

/// Whether a leg's connection events are traced: its filter route runs at its first event that
/// would be traced, and the leg keeps the answer for the rest of its life (as OpenSIPS marks a
/// connection `F_CONN_TRACE_DROPPED`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LegVerdict {
    /// No event has been traced yet (tracing was off, or nothing happened).
    #[default]
    Undecided,
    /// The filter route let it through (or there is none).
    Traced,
    /// The filter route ended in `drop`: nothing of this leg is ever traced.
    Dropped,
}

/// One SIP message as the tracer is asked about it.
#[derive(Clone, Copy, Debug)]
pub struct SipEvent<'a> {
    /// The message.
    pub msg: SipMessage<'a>,
    /// The connection it crosses (`$si` is the client, `$Ri` the listening address).
    pub conn: ConnInfo,
    /// The listener's `sip_trace_id`.
    pub trace_id: &'a str,
    /// The listener's `sip_methods`.
    pub methods: Option<&'a Bwlist>,
    /// The listener's `sip_trace_route`.
    pub route: Option<&'a Route>,
}

/// What became of a SIP message the tracer was asked about.
#[derive(Debug, PartialEq, Eq)]
pub enum SipTraced<E> {
    /// Not traced: the global switch is off, or nothing wanted it.
    No,
    /// Skipped by `sip_methods`, or `drop`ped by `sip_trace_route` (and no dynamic trace took
    /// it).
    Filtered,
    /// Built and offered to every destination that wanted it.
    Sent,
    /// Wanted, but the message could not be built (too large for HEP).
    Failed(E),
}

/// A SIP packet built on first need, then shared by every destination.
struct Packet<F> {
    /// How to build it, until it is built.
    build: Option<F>,
    /// Once built.
    built: Option<Arc<TraceMessage>>,
}

impl<F> Packet<F> {
    /// The packet, built now if it was not (`None` only after a failed build).
    fn get<E>(&mut self) -> Result<Option<Arc<TraceMessage>>, E>
    where
        F: FnOnce() -> Result<Arc<TraceMessage>, E>,
    {
        if self.built.is_none()
            && let Some(build) = self.build.take()
        {
            self.built = Some(build()?);
        }
        Ok(self.built.clone())
    }
}

/// The published pipeline.
#[derive(Debug)]
pub struct Tracer {
    /// Swapped whole on reload; loaded without locks per event.
    current: ArcSwap<Pipeline>,
    /// `trace_start`'s traces: not part of the config, so a reload keeps them.
    pub dynamic: DynTraces,
}

impl Tracer {
    /// A tracer publishing `pipeline`.
    pub fn new(pipeline: Pipeline) -> Self {
        Self {
            current: ArcSwap::from_pointee(pipeline),
            dynamic: DynTraces::default(),
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> arc_swap::Guard<Arc<Pipeline>> {
        self.current.load()
    }

    /// Publishes a new snapshot; events after this see it.
    pub fn publish(&self, pipeline: Pipeline) {
        self.current.store(Arc::new(pipeline));
    }

    /// A connection event of a `proto` leg: traced when the protocol's switch is on, it has a
    /// destination, and the filter route lets the leg through. The route runs once per leg, at
    /// its first event that gets this far; `verdict` keeps its answer. `trace` builds the event
    /// and hands it to the destination; it runs only when the event is traced.
    pub fn net<R>(
        &self,
        proto: NetProto,
        verdict: &mut LegVerdict,
        leg: &impl Inspect,
        trace: impl FnOnce(&Sender) -> R,
    ) -> Option<R> {
        let pipeline = self.current.load();
        let net = pipeline.net(proto);
        if !net.on.is_on() || *verdict == LegVerdict::Dropped {
            return None;
        }
        let destination = net.destination.as_ref()?;
        if *verdict == LegVerdict::Undecided {
            *verdict = match net.filter.as_ref().map(|route| route.eval(leg)) {
                Some(heptap_filters::Verdict::Drop) => LegVerdict::Dropped,
                Some(heptap_filters::Verdict::Trace) | None => LegVerdict::Traced,
            };
            if *verdict == LegVerdict::Dropped {
                return None;
            }
        }
        Some(trace(destination))
    }

    /// Whether a `proto` leg's TLS handshake should keep the session secrets: `trace_master_key`
    /// is set for the protocol and its events are traced, as far as can be known before the
    /// handshake (a filter route that has not run yet may still drop the leg).
    pub fn wants_secrets(&self, proto: NetProto, verdict: LegVerdict) -> bool {
        let pipeline = self.current.load();
        let net = pipeline.net(proto);
        net.master_key
            && net.on.is_on()
            && net.destination.is_some()
            && verdict != LegVerdict::Dropped
    }

    /// A SIP message: traced when the global SIP switch is on, `sip_methods` allows it, and
    /// then (each destination once per set that wants it) to the trace ids the listener's
    /// `sip_trace_route` chooses (its `sip_trace_id` when it has no route or the route chose
    /// none; nothing on `drop`) whose switches are on, and to every dynamic trace that takes it.
    /// `build` makes the packet, at most once and only when something wants it.
    pub fn sip<E>(
        &self,
        ev: &SipEvent<'_>,
        build: impl FnOnce() -> Result<Arc<TraceMessage>, E>,
    ) -> SipTraced<E> {
        let pipeline = self.current.load();
        if !pipeline.sip_on.is_on() {
            return SipTraced::No;
        }
        if let Some(list) = ev.methods
            && !sip_fields::method(&ev.msg).is_none_or(|m| list.allows(m))
        {
            return SipTraced::Filtered;
        }
        let mut packet = Packet {
            build: Some(build),
            built: None,
        };
        let mut dropped = false;
        let choice = match ev.route.map(|route| route.eval_sip(&ev.conn, &ev.msg)) {
            None => Some(None),
            Some(SipVerdict::Drop) => None,
            Some(SipVerdict::Trace(choice)) => Some(Some(choice)),
        };
        let offer_id = |name: &str, packet: &mut Packet<_>| -> Result<(), E> {
            if let Some(id) = pipeline.trace_ids.get(name)
                && id.on.is_on()
                && !id.destinations.is_empty()
                && let Some(msg) = packet.get()?
            {
                id.destinations.offer(&msg);
            }
            Ok(())
        };
        let offered = match (choice, ev.route) {
            (None, _) => {
                dropped = true;
                Ok(())
            }
            (Some(Some(choice)), Some(route)) if !choice.is_empty() => route
                .chosen(choice)
                .try_for_each(|name| offer_id(name, &mut packet)),
            (Some(_), _) => offer_id(ev.trace_id, &mut packet),
        };
        if let Err(e) = offered {
            return SipTraced::Failed(e);
        }
        let dynamic = self.dynamic.load();
        if !dynamic.is_empty() {
            let now = std::time::Instant::now();
            let client = ev.conn.remote.ip();
            for trace in dynamic.iter().filter(|t| t.wants(&ev.msg, client, now)) {
                let sender = match &trace.target {
                    Target::Own { sender, .. } => Some(sender),
                    Target::Named(name) => pipeline.destinations.get(name),
                };
                if let Some(sender) = sender {
                    match packet.get() {
                        Ok(Some(msg)) => {
                            sender.offer(&msg);
                            trace.traced.inc();
                        }
                        Ok(None) => {}
                        Err(e) => return SipTraced::Failed(e),
                    }
                }
            }
        }
        match packet.built {
            Some(_) => SipTraced::Sent,
            None if dropped => SipTraced::Filtered,
            None => SipTraced::No,
        }
    }

    /// An MI request or reply: traced when `[mi] trace_destination` is set. `trace` builds the
    /// event and hands it to the destination; it runs only when the event is traced.
    pub fn mi<R>(&self, trace: impl FnOnce(&Sender) -> R) -> Option<R> {
        let pipeline = self.current.load();
        pipeline.mi.as_ref().map(trace)
    }
}
