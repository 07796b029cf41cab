//! What the agent builds from a validated config: destinations by name, trace ids with their
//! destinations, and the route sources with the route names the config refers to.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::ConfigErrors;
use heptap_hep::NetProto;

use crate::model::{Config, Destination, HepIdEntry, TraceId};
use crate::opensips::STDOUT;

/// A route name the config refers to, with the key that refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRef {
    /// The key path, e.g. `net.tcp.trace_filter_route`.
    pub path: String,
    /// The route name.
    pub name: String,
}

/// One piece of route script text to compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteText {
    /// The file it was read from; None for `routes.inline`.
    pub file: Option<PathBuf>,
    /// The key path that names it (`routes.files[0]`, `routes.inline`), for error messages.
    pub path: String,
    /// The script text.
    pub text: String,
}

impl Config {
    /// Every destination by name: the built-in `stdout`, each `[hep.ids]` entry (HEP ids with
    /// defaults and `[hep]` queue sizes applied), and an implicit destination named `file:<path>`
    /// for each `file:` uri or trace_destination. Entries that do not resolve are left out:
    /// call this on a config that passed [`Config::validate`].
    pub fn destinations(&self) -> BTreeMap<String, Destination> {
        let mut out = BTreeMap::new();
        out.insert(STDOUT.to_owned(), Destination::Stdout);
        for (name, entry) in &self.hep.ids {
            let dest = match entry {
                HepIdEntry::Hep(table) => match table.resolve(name, &self.hep) {
                    Ok(id) => Destination::Hep(id),
                    Err(_) => continue,
                },
                HepIdEntry::Stdout => Destination::Stdout,
                HepIdEntry::File(path) => Destination::File(path.clone()),
            };
            out.insert(name.clone(), dest);
        }
        let referenced = self
            .tracer
            .trace_id
            .iter()
            .map(|e| e.uri.destination_name())
            .chain(
                NetProto::ALL
                    .into_iter()
                    .filter_map(|p| self.net.get(p).trace_destination.clone()),
            )
            .chain(self.mi.trace_destination.clone());
        for name in referenced {
            if let Some(path) = name.strip_prefix("file:") {
                let dest = Destination::File(PathBuf::from(path.trim()));
                out.entry(name.clone()).or_insert(dest);
            }
        }
        out
    }

    /// The trace ids, in order of first appearance, each with its destination names (keys of
    /// [`Config::destinations`]).
    pub fn trace_ids(&self) -> Vec<TraceId> {
        let mut out: Vec<TraceId> = Vec::new();
        for entry in &self.tracer.trace_id {
            let dest = entry.uri.destination_name();
            match out.iter_mut().find(|t| t.name == entry.name) {
                Some(t) if !t.destinations.contains(&dest) => t.destinations.push(dest),
                Some(_) => {}
                None => out.push(TraceId {
                    name: entry.name.clone(),
                    destinations: vec![dest],
                }),
            }
        }
        out
    }

    /// The route names the config refers to (`net.*.trace_filter_route`,
    /// `listener[i].sip_trace_route`), for the agent to check against the compiled routes.
    pub fn route_refs(&self) -> Vec<RouteRef> {
        let net = NetProto::ALL.into_iter().filter_map(|p| {
            self.net
                .get(p)
                .trace_filter_route
                .as_ref()
                .map(|name| RouteRef {
                    path: format!("net.{p}.trace_filter_route"),
                    name: name.clone(),
                })
        });
        let sip = self.listener.iter().enumerate().filter_map(|(i, l)| {
            l.sip_trace_route.as_ref().map(|name| RouteRef {
                path: format!("listener[{i}].sip_trace_route"),
                name: name.clone(),
            })
        });
        net.chain(sip).collect()
    }

    /// Reports every route reference that `is_defined` does not know, as config errors at the
    /// referring key (locate them with [`crate::Source::locate`]).
    pub fn check_route_names(&self, is_defined: impl Fn(&str) -> bool) -> Result<(), ConfigErrors> {
        let mut errs = ConfigErrors::default();
        for r in self.route_refs() {
            if !is_defined(&r.name) {
                errs.push(
                    r.path,
                    format!(
                        "unknown route '{}': no route[{}] in [routes]",
                        r.name, r.name
                    ),
                );
            }
        }
        errs.into_result()
    }

    /// Reads the route script texts: each `routes.files` entry in order, then `routes.inline`.
    pub fn route_texts(&self) -> Result<Vec<RouteText>, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let mut out = Vec::new();
        for (i, file) in self.routes.files.iter().enumerate() {
            let path = format!("routes.files[{i}]");
            match std::fs::read_to_string(file) {
                Ok(text) => out.push(RouteText {
                    file: Some(file.clone()),
                    path,
                    text,
                }),
                Err(e) => errs.push(path, format!("cannot read '{}': {e}", file.display())),
            }
        }
        if let Some(text) = &self.routes.inline {
            out.push(RouteText {
                file: None,
                path: "routes.inline".to_owned(),
                text: text.clone(),
            });
        }
        errs.into_result().map(|()| out)
    }
}
