//! The tracer: decides, per event, whether and where it is traced.
//!
//! Events come from the taps (connection events, SIP messages) and the MI. What the decision
//! needs is published as an immutable [`Pipeline`] snapshot behind an `ArcSwap`: the connection
//! path loads it without locks, a reload swaps it whole. The run-time switches (global, per
//! protocol, per trace id) are atomics shared by every snapshot, so an MI `sip_trace tid off`
//! takes effect for the very next event and survives a reload.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use heptap_filters::Route;
use heptap_hep::NetProto;

use crate::sender::{FanOut, Sender};

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
    /// The name operators use in `sip_trace <tid> on|off`.
    pub name: String,
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

/// The published pipeline.
#[derive(Debug)]
pub struct Tracer {
    /// Swapped whole on reload; loaded without locks per event.
    current: ArcSwap<Pipeline>,
}

impl Tracer {
    /// A tracer publishing `pipeline`.
    pub fn new(pipeline: Pipeline) -> Self {
        Self {
            current: ArcSwap::from_pointee(pipeline),
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> arc_swap::Guard<Arc<Pipeline>> {
        self.current.load()
    }

    /// The current snapshot, owned (for the MI and reload, not the data path).
    pub fn snapshot(&self) -> Arc<Pipeline> {
        self.current.load_full()
    }

    /// Publishes a new snapshot; events after this see it.
    pub fn publish(&self, pipeline: Pipeline) {
        self.current.store(Arc::new(pipeline));
    }
}
