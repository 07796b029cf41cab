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
use crate::program::{CompiledRoute, Facts, Flow, Program};

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
        };
        let mut compiled = Vec::with_capacity(asts.len());
        let mut calls = Vec::with_capacity(asts.len());
        for (source_index, route) in &asts {
            compiler.source = *source_index;
            let body = compiler.block(&route.body);
            calls.push(std::mem::take(&mut compiler.calls));
            compiled.push(CompiledRoute {
                name: route.name.as_str().into(),
                body,
            });
        }
        diags.append(&mut compiler.diags);
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

        let program = Arc::new(Program { routes: compiled });
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
        Ok(Routes { by_name })
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
    /// Reads `conn` once and does not allocate (an `xlog` statement formats its line).
    pub fn eval(&self, conn: &(impl Inspect + ?Sized)) -> Verdict {
        let facts = Facts::read(conn);
        match self.program.run(self.index, &facts) {
            Flow::Drop => Verdict::Drop,
            Flow::Next | Flow::Exit | Flow::Return => Verdict::Trace,
        }
    }
}

/// Turns a diagnostic into a located, quoted error.
fn locate(sources: &[Source<'_>], source: usize, at: usize, message: String) -> CompileError {
    let (name, text) = sources
        .get(source)
        .map_or(("?", ""), |source| (source.name, source.text));
    CompileError::at(name, text, at, message)
}
