//! The public face of the route language: compile sources into [`Routes`], evaluate a
//! [`Route`] against a connection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::compile::{Compiler, Diag, check_calls};
use crate::conn::{Inspect, Verdict};
use crate::error::{CompileError, CompileErrors};
use crate::groups::AddressGroups;
use crate::lexer::lex;
use crate::parser::parse;
use crate::program::{CompiledRoute, Ctx, Facts, Flow, Program};
use crate::sip::SipInspect;

/// One text holding `route[name] { ... }` blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    /// Where the text came from, as errors should name it: a file path, or `"inline"` for
    /// routes written in the TOML config.
    pub name: &'a str,
    /// The route text.
    pub text: &'a str,
}

impl<'a> Source<'a> {
    /// A source named `name` holding `text`.
    pub const fn new(name: &'a str, text: &'a str) -> Self {
        Source { name, text }
    }
}

/// Every compiled route of a configuration, by name.
///
/// Cheap to clone (the compiled program is shared), `Send + Sync`, and immutable: a reload
/// compiles a new `Routes` and swaps it in.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Each route, by name.
    by_name: BTreeMap<String, Route>,
    /// Each `trace("tid")` call of any route: the trace id, and the call located (its message
    /// says the id is unknown, for [`Routes::check_trace_ids`]).
    trace_refs: Vec<(Box<str>, CompileError)>,
}

/// What a `sip_trace_route` decided for one SIP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipVerdict {
    /// `drop`: the message is not traced.
    Drop,
    /// Traced: to the trace ids `trace()` chose, or, when it chose none, to the listener's own
    /// `sip_trace_id`.
    Trace(TraceChoice),
}

/// The trace ids a `sip_trace_route` chose with `trace("tid")` for one message: a set over the
/// route's table, read back with [`Route::chosen`]. Copy, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceChoice(u64);

impl TraceChoice {
    /// Whether `trace()` chose nothing (the listener's `sip_trace_id` applies).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One compiled route, ready to evaluate. Holds the compiled program (and through it the
/// address groups it uses), so it outlives the [`Routes`] it came from.
#[derive(Debug, Clone)]
pub struct Route {
    /// The program of the compilation this route belongs to (route calls stay inside it).
    program: Arc<Program>,
    /// This route's index in the program.
    index: usize,
}

impl Routes {
    /// Compiles all sources together (routes may call routes of other sources) against the
    /// configured address groups.
    ///
    /// Every syntax error, unknown variable, function, address group or route, bad address,
    /// network or regex, duplicate route and recursive call is collected, in source order; if
    /// there is any, nothing is returned but the errors.
    pub fn compile(
        sources: &[Source<'_>],
        groups: &AddressGroups,
    ) -> Result<Routes, CompileErrors> {
        let mut diags = Vec::new();
        let mut asts = Vec::new();
        let mut broken = HashSet::new();
        for (source_index, source) in sources.iter().enumerate() {
            let parsed = parse(&lex(source.text));
            diags.extend(parsed.errors.into_iter().map(|error| Diag {
                source: source_index,
                at: error.at,
                message: error.message,
            }));
            broken.extend(parsed.broken.into_iter().map(|(name, _)| name));
            asts.extend(parsed.routes.into_iter().map(|route| (source_index, route)));
        }

        let mut index_of: HashMap<String, usize> = HashMap::new();
        for (index, (source_index, route)) in asts.iter().enumerate() {
            match index_of.get(&route.name) {
                Some(&first) => {
                    let (first_source, first_route) = &asts[first];
                    let first_at =
                        locate(sources, *first_source, first_route.name_at, String::new());
                    diags.push(Diag {
                        source: *source_index,
                        at: route.name_at,
                        message: format!(
                            "route {:?} is defined twice (first at {}:{}:{})",
                            route.name, first_at.source_name, first_at.line, first_at.column
                        ),
                    });
                }
                None => {
                    index_of.insert(route.name.clone(), index);
                }
            }
        }
        // A route that failed to parse but is defined correctly elsewhere is not "broken".
        broken.retain(|name| !index_of.contains_key(name));

        let mut compiler = Compiler {
            groups,
            routes: &index_of,
            broken: &broken,
            source: 0,
            calls: Vec::new(),
            diags: Vec::new(),
            trace_ids: Vec::new(),
            sip_use: None,
            trace_refs: Vec::new(),
        };
        let mut compiled = Vec::with_capacity(asts.len());
        let mut calls = Vec::with_capacity(asts.len());
        let mut sip_uses = Vec::with_capacity(asts.len());
        let mut trace_refs = Vec::new();
        for (source_index, route) in &asts {
            compiler.source = *source_index;
            let body = compiler.block(&route.body);
            calls.push(std::mem::take(&mut compiler.calls));
            sip_uses.push(compiler.sip_use.take().map(|(at, what)| {
                let message = format!(
                    "route {:?} reads the SIP message ({what}), which only a sip_trace_route \
                     sees: connection routes run before any SIP message",
                    route.name
                );
                locate(sources, *source_index, at, message)
            }));
            for (index, at) in std::mem::take(&mut compiler.trace_refs) {
                trace_refs.push((*source_index, index, at));
            }
            compiled.push(CompiledRoute {
                name: route.name.as_str().into(),
                body,
                sip_use: None,
            });
        }
        diags.append(&mut compiler.diags);
        let trace_ids = std::mem::take(&mut compiler.trace_ids);
        let route_sources: Vec<usize> = asts.iter().map(|(source, _)| *source).collect();
        let names: Vec<(&str, usize)> = asts
            .iter()
            .map(|(_, route)| (route.name.as_str(), route.name_at))
            .collect();
        diags.extend(check_calls(&calls, &route_sources, &names));

        if !diags.is_empty() {
            diags.sort_by_key(|diag| (diag.source, diag.at));
            diags.dedup();
            return Err(CompileErrors(
                diags
                    .into_iter()
                    .map(|diag| locate(sources, diag.source, diag.at, diag.message))
                    .collect(),
            ));
        }

        // A route that calls one reading the SIP message reads it too (at the call).
        for (index, route) in compiled.iter_mut().enumerate() {
            route.sip_use = sip_use_of(index, &calls, &sip_uses, &asts, sources);
        }
        let trace_refs = trace_refs
            .into_iter()
            .filter_map(|(source, index, at): (usize, usize, usize)| {
                let name = trace_ids.get(index)?.clone();
                let message = format!("unknown trace id {name:?}: no trace_id of that name");
                Some((name, locate(sources, source, at, message)))
            })
            .collect();
        let program = Arc::new(Program {
            routes: compiled,
            trace_ids,
        });
        let by_name = index_of
            .into_iter()
            .map(|(name, index)| {
                let route = Route {
                    program: Arc::clone(&program),
                    index,
                };
                (name, route)
            })
            .collect();
        Ok(Routes {
            by_name,
            trace_refs,
        })
    }

    /// Checks every `trace("tid")` of every route against the configured trace ids: each
    /// unknown one is an error located at its call.
    pub fn check_trace_ids(&self, is_defined: impl Fn(&str) -> bool) -> Result<(), CompileErrors> {
        let errors: Vec<CompileError> = self
            .trace_refs
            .iter()
            .filter(|(name, _)| !is_defined(name))
            .map(|(_, error)| error.clone())
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CompileErrors(errors))
        }
    }

    /// The route called `name` (what `trace_filter_route` names).
    pub fn get(&self, name: &str) -> Option<&Route> {
        self.by_name.get(name)
    }

    /// All route names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no route is defined.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl Route {
    /// The route's name.
    pub fn name(&self) -> &str {
        self.program
            .routes
            .get(self.index)
            .map_or("", |route| &route.name)
    }

    /// Runs the route for a connection: [`Verdict::Drop`] if it ends in `drop`,
    /// [`Verdict::Trace`] for any other end (`exit`, `return`, falling off the end).
    ///
    /// Reads `conn` once and does not allocate (an `xlog` statement formats its line). A route
    /// that reads the SIP message ([`Route::sip_use`]) sees none here: its SIP values are absent.
    pub fn eval(&self, conn: &(impl Inspect + ?Sized)) -> Verdict {
        let mut ctx = Ctx {
            facts: Facts::read(conn),
            sip: None,
            traced: 0,
        };
        match self.program.run(self.index, &mut ctx) {
            Flow::Drop => Verdict::Drop,
            Flow::Next | Flow::Exit | Flow::Return => Verdict::Trace,
        }
    }

    /// Runs the route as a `sip_trace_route` for one message on connection `conn`: `drop`
    /// means not traced; otherwise the trace ids `trace()` chose. Reads SIP values only as the
    /// route asks for them, and does not allocate (but `xlog`).
    pub fn eval_sip(&self, conn: &(impl Inspect + ?Sized), sip: &dyn SipInspect) -> SipVerdict {
        let mut ctx = Ctx {
            facts: Facts::read(conn),
            sip: Some(sip),
            traced: 0,
        };
        match self.program.run(self.index, &mut ctx) {
            Flow::Drop => SipVerdict::Drop,
            Flow::Next | Flow::Exit | Flow::Return => SipVerdict::Trace(TraceChoice(ctx.traced)),
        }
    }

    /// The trace ids of a choice, in the order the routes first name them.
    pub fn chosen(&self, choice: TraceChoice) -> impl Iterator<Item = &str> {
        self.program
            .trace_ids
            .iter()
            .enumerate()
            .filter(move |(index, _)| choice.0 & (1u64 << index) != 0)
            .map(|(_, name)| &**name)
    }

    /// Where the route (or a route it calls) reads the SIP message, as the error to give when
    /// it is used where there is none (`trace_filter_route`); `None` if it reads only the
    /// connection.
    pub fn sip_use(&self) -> Option<&CompileError> {
        self.program
            .routes
            .get(self.index)
            .and_then(|route| route.sip_use.as_ref())
    }
}

/// Where route `index` reads the SIP message: its own first use, else the first call of a route
/// that does (the call graph is acyclic here: recursion was refused before).
fn sip_use_of(
    index: usize,
    calls: &[Vec<(usize, usize)>],
    own: &[Option<CompileError>],
    asts: &[(usize, crate::ast::RouteAst)],
    sources: &[Source<'_>],
) -> Option<CompileError> {
    if let Some(error) = own.get(index)?.as_ref() {
        return Some(error.clone());
    }
    let (source, route) = asts.get(index)?;
    calls.get(index)?.iter().find_map(|&(callee, at)| {
        let inner = sip_use_of(callee, calls, own, asts, sources)?;
        let callee_name = asts.get(callee).map_or("?", |(_, r)| r.name.as_str());
        let message = format!(
            "route {:?} calls route {callee_name:?}, which reads the SIP message; only a \
             sip_trace_route sees one (there: {})",
            route.name, inner.message
        );
        Some(locate(sources, *source, at, message))
    })
}

/// Turns a diagnostic into a located, quoted error.
fn locate(sources: &[Source<'_>], source: usize, at: usize, message: String) -> CompileError {
    let (name, text) = sources
        .get(source)
        .map_or(("?", ""), |source| (source.name, source.text));
    CompileError::at(name, text, at, message)
}
