//! heptap-filters decides what is traced. It owns the filter route language (the subset of the
//! OpenSIPS script that `trace_filter_route` routes use: `route[name]` blocks with `if`/`else`,
//! `exit`, `drop`, `return`, `route()`, `xlog`, the connection variables `$si $sp $Ri $Rp
//! $proto $socket_in(..)`, comparisons, `is_in_subnet()` and `check_source_address()`), the
//! named address groups behind `check_source_address`, and OpenSIPS's black/white lists
//! ([`Bwlist`]: `trace_bwlist` command lists, `sip_methods` method lists), parsed from their
//! `"w: a, b"` text here and nowhere else.
//!
//! Routes are parsed and compiled once, at load time, into a typed tree: every error is reported
//! then, with file, line, column and a caret excerpt, and a source with any error is refused
//! whole. Evaluation reads the connection through the [`Inspect`] trait and does not allocate.
//! It does not own configuration files (heptap-config hands over route texts and groups), when
//! routes run (the taps), or what a verdict triggers (the tracer). `$proto` is heptap-hep's
//! [`NetProto`](heptap_hep::NetProto).
//!
//! ```
//! use heptap_filters::{AddressGroups, ConnInfo, Routes, Source, Verdict};
//! use heptap_hep::NetProto;
//!
//! let text = r#"
//! route[net_filter] {
//!     if ($si == "10.10.10.10")
//!         drop;
//! }
//! "#;
//! let routes = Routes::compile(&[Source::new("inline", text)], &AddressGroups::default())?;
//! let conn = ConnInfo {
//!     remote: "10.10.10.10:40000".parse()?,
//!     local: "10.0.0.1:5060".parse()?,
//!     proto: NetProto::Tcp,
//! };
//! assert_eq!(routes.get("net_filter").map(|route| route.eval(&conn)), Some(Verdict::Drop));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules: `lexer` (text to tokens), `parser` (tokens to syntax tree), `compile` (syntax tree
//! to typed program), `program` (typed program and evaluator), `routes` (the public
//! [`Routes`]/[`Route`] API), `groups`, `lists`, `conn` (the connection view and verdict),
//! `error`.

#![forbid(unsafe_code)]

mod ast;
mod cidr;
mod compile;
mod conn;
mod error;
mod groups;
mod lexer;
mod lists;
mod parser;
mod program;
mod routes;
mod sip;
mod text;

pub use conn::{ConnInfo, Inspect, Verdict};
pub use error::{CompileError, CompileErrors};
pub use groups::AddressGroups;
pub use lists::{Bwlist, BwlistError, BwlistKind};
pub use routes::{Route, Routes, SipVerdict, Source, TraceChoice};
pub use sip::{SipInspect, SipStart, fields as sip_fields};

/// How deep blocks, parentheses and `!` may nest in a route.
pub const MAX_NESTING: usize = parser::MAX_NESTING;

/// How long a chain of `route(...)` calls may be, counting the first route.
pub const MAX_ROUTE_DEPTH: usize = compile::MAX_ROUTE_DEPTH;
