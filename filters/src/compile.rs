//! Syntax tree to typed program: resolves variables, functions, address groups and route calls,
//! parses addresses and networks, builds regexes, and checks that every comparison makes sense.
//! Errors are collected, never fatal, so one load reports them all.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use regex::{Regex, RegexBuilder};

use crate::ast::{CmpOp, ExprAst, Operand, StmtAst};
use crate::cidr::{CidrSet, parse_net};
use crate::conn::{ProtoName, UnknownProto};
use crate::groups::AddressGroups;
use crate::lexer::StrLit;
use crate::program::{
    Cond, HeaderName, IntOperand, IpVar, MAX_HEADER_NAME, Ordering, Piece, PortVar, SipVar, Stmt,
    VarRef, Xlog, XlogLevel,
};

/// How long a chain of `route(...)` calls may be (the calling route counts). Evaluation
/// recurses along calls, so this and [`crate::parser::MAX_NESTING`] bound its stack use.
pub(crate) const MAX_ROUTE_DEPTH: usize = 16;

/// How many distinct trace ids `trace("tid")` may name in one set of routes (a message's choice
/// is a 64-bit set).
pub(crate) const MAX_TRACE_IDS: usize = 64;

/// Compiled regexes may not grow beyond this many bytes: a pathological pattern is refused at
/// load time instead of costing memory and time per connection.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A problem found while compiling: which source, where, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diag {
    /// Index of the source in the compile call.
    pub(crate) source: usize,
    /// Byte offset in that source.
    pub(crate) at: usize,
    /// The message.
    pub(crate) message: String,
}

/// Compiles route bodies; one per [`crate::Routes::compile`] call.
pub(crate) struct Compiler<'a> {
    /// The configured address groups.
    pub(crate) groups: &'a AddressGroups,
    /// Route name to its index in the program.
    pub(crate) routes: &'a HashMap<String, usize>,
    /// Routes abandoned on a syntax error: calls to them are already covered by that error.
    pub(crate) broken: &'a HashSet<String>,
    /// The source of the route being compiled.
    pub(crate) source: usize,
    /// Calls made by the route being compiled: callee index and call-site offset.
    pub(crate) calls: Vec<(usize, usize)>,
    /// Everything reported so far.
    pub(crate) diags: Vec<Diag>,
    /// Every trace id `trace()` names, in order of first use (the program's table).
    pub(crate) trace_ids: Vec<Box<str>>,
    /// The route being compiled: where it first reads the SIP message (a SIP variable or
    /// function, or `trace()`), and what it reads there.
    pub(crate) sip_use: Option<(usize, String)>,
    /// The route being compiled: each `trace()` call, its trace id's index and offset.
    pub(crate) trace_refs: Vec<(usize, usize)>,
}

/// A resolved operand.
#[derive(Debug, Clone, Copy)]
enum Val<'t> {
    /// A variable.
    Var(VarRef),
    /// A quoted string.
    Str(&'t StrLit),
    /// An integer.
    Int(i64),
    /// An unquoted IPv4 address or network.
    Net(&'t str),
    /// A function call (not a value in this language).
    Call(&'t str),
}

impl Compiler<'_> {
    /// Notes that the route reads the SIP message at `at` (the first place counts).
    fn note_sip(&mut self, at: usize, what: impl FnOnce() -> String) {
        if self.sip_use.is_none() {
            self.sip_use = Some((at, what()));
        }
    }

    fn report(&mut self, at: usize, message: impl Into<String>) {
        self.diags.push(Diag {
            source: self.source,
            at,
            message: message.into(),
        });
    }

    /// Compiles a block, flattening bare `{ }` blocks into it.
    pub(crate) fn block(&mut self, body: &[StmtAst]) -> Box<[Stmt]> {
        let mut out = Vec::with_capacity(body.len());
        for stmt in body {
            self.statement(stmt, &mut out);
        }
        out.into_boxed_slice()
    }

    fn statement(&mut self, stmt: &StmtAst, out: &mut Vec<Stmt>) {
        match stmt {
            StmtAst::If { arms, otherwise } => {
                let arms = arms
                    .iter()
                    .map(|(cond, body)| (self.cond(cond), self.block(body)))
                    .collect();
                let otherwise = self.block(otherwise);
                out.push(Stmt::If { arms, otherwise });
            }
            StmtAst::Block(body) => {
                for stmt in body {
                    self.statement(stmt, out);
                }
            }
            StmtAst::Exit => out.push(Stmt::Exit),
            StmtAst::Drop => out.push(Stmt::Drop),
            StmtAst::Return(value) => out.push(Stmt::Return(*value)),
            StmtAst::RouteCall { name, at } => match self.routes.get(name) {
                Some(&index) => {
                    self.calls.push((index, *at));
                    out.push(Stmt::Call(index));
                }
                None if self.broken.contains(name) => {}
                None => self.report(*at, format!("unknown route {name:?}")),
            },
            StmtAst::Call { name, args, at } => match name.as_str() {
                "xlog" | "xdbg" => {
                    if let Some(xlog) = self.xlog(name, args, *at) {
                        out.push(Stmt::Xlog(xlog));
                    }
                }
                "trace" => {
                    if let Some(index) = self.trace(args, *at) {
                        out.push(Stmt::Trace(index));
                    }
                }
                "is_in_subnet" | "check_source_address" | "is_method" | "has_totag" => self.report(
                    *at,
                    format!("{name}() has no effect as a statement; use it as an if condition"),
                ),
                _ => self.report(*at, format!("unknown function {name}()")),
            },
        }
    }

    /// `trace("tid")`: the message goes to trace id `tid` (`sip_trace_route` only).
    fn trace(&mut self, args: &[Operand], at: usize) -> Option<u8> {
        self.note_sip(at, || "trace()".to_owned());
        let name = match args {
            [Operand::Str(lit, _)] if !lit.value.trim().is_empty() => lit.value.trim(),
            [_, extra, ..] => {
                self.report(
                    extra.at(),
                    "trace() takes only the trace id here: each message is traced on its own \
                     (scope and type arguments are not supported)",
                );
                return None;
            }
            _ => {
                self.report(at, "trace() needs a quoted trace id: trace(\"tid\")");
                return None;
            }
        };
        let index = match self.trace_ids.iter().position(|t| &**t == name) {
            Some(index) => index,
            None if self.trace_ids.len() < MAX_TRACE_IDS => {
                self.trace_ids.push(name.into());
                self.trace_ids.len() - 1
            }
            None => {
                self.report(
                    at,
                    format!("trace() may name at most {MAX_TRACE_IDS} different trace ids"),
                );
                return None;
            }
        };
        self.trace_refs.push((index, at));
        u8::try_from(index).ok()
    }

    /// `xlog("fmt")`, `xlog("L_LEVEL", "fmt")`, `xdbg("fmt")`.
    fn xlog(&mut self, name: &str, args: &[Operand], at: usize) -> Option<Xlog> {
        let (level, format, format_at) = match (name, args) {
            ("xdbg", [Operand::Str(format, format_at)]) => (XlogLevel::Debug, format, *format_at),
            ("xlog", [Operand::Str(format, format_at)]) => (XlogLevel::Error, format, *format_at),
            (
                "xlog",
                [
                    Operand::Str(level, level_at),
                    Operand::Str(format, format_at),
                ],
            ) => {
                let Some(level) = xlog_level(&level.value) else {
                    self.report(
                        *level_at,
                        format!(
                            "unknown log level {:?} (expected L_ALERT, L_CRIT, L_ERR, L_WARN, \
                             L_NOTICE, L_INFO or L_DBG)",
                            level.value
                        ),
                    );
                    return None;
                };
                (level, format, *format_at)
            }
            ("xdbg", _) => {
                self.report(at, "xdbg() takes one format string: xdbg(\"...\")");
                return None;
            }
            _ => {
                self.report(
                    at,
                    "xlog() takes a format string, optionally after a level: \
                     xlog(\"L_INFO\", \"...\")",
                );
                return None;
            }
        };
        if format.value.is_empty() {
            self.report(format_at, format!("{name}() format is empty"));
            return None;
        }
        let pieces = self.format(format, format_at)?;
        Some(Xlog { level, pieces })
    }

    /// Splits an xlog format at its `$variables`; a `$` not followed by a name is literal.
    fn format(&mut self, format: &StrLit, format_at: usize) -> Option<Box<[Piece]>> {
        let value = format.value.as_str();
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut ok = true;
        let mut i = 0;
        while let Some(c) = value[i..].chars().next() {
            // `$` is one byte, so `i + 1` is a character boundary whenever `c == '$'`.
            let name_len = if c == '$'
                && value[i + 1..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            {
                value[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(value.len() - i - 1)
            } else {
                0
            };
            if name_len == 0 {
                text.push(c);
                i += c.len_utf8();
                continue;
            }
            let name = &value[i + 1..i + 1 + name_len];
            let mut end = i + 1 + name_len;
            let mut arg = None;
            if value[end..].starts_with('(')
                && let Some(close) = value[end..].find(')')
            {
                arg = Some(value[end + 1..end + close].trim());
                end += close + 1;
            }
            match resolve_var(name, arg) {
                Ok(var) => {
                    if matches!(var, VarRef::Sip(_)) {
                        let at = format.origin(i, format_at);
                        self.note_sip(at, || format!("${name}"));
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text).into_boxed_str()));
                    }
                    pieces.push(Piece::Var(var));
                }
                Err(message) => {
                    self.report(format.origin(i, format_at), message);
                    ok = false;
                }
            }
            i = end;
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text.into_boxed_str()));
        }
        ok.then(|| pieces.into_boxed_slice())
    }

    fn cond(&mut self, expr: &ExprAst) -> Cond {
        match expr {
            ExprAst::Any(terms) => Cond::Any(terms.iter().map(|term| self.cond(term)).collect()),
            ExprAst::All(terms) => Cond::All(terms.iter().map(|term| self.cond(term)).collect()),
            ExprAst::Not(inner) => Cond::Not(Box::new(self.cond(inner))),
            ExprAst::Cmp { lhs, op, rhs, at } => self.compare(lhs, *op, rhs, *at),
            ExprAst::Operand(operand) => self.lone(operand),
        }
    }

    /// Resolves an operand; unknown variables are reported here.
    fn value<'t>(&mut self, operand: &'t Operand) -> Option<Val<'t>> {
        match operand {
            Operand::Var { name, arg, at } => match resolve_var(name, arg.as_deref()) {
                Ok(var) => {
                    if matches!(var, VarRef::Sip(_)) {
                        self.note_sip(*at, || var_text(operand));
                    }
                    Some(Val::Var(var))
                }
                Err(message) => {
                    self.report(*at, message);
                    None
                }
            },
            Operand::Str(lit, _) => Some(Val::Str(lit)),
            Operand::Int(n, _) => Some(Val::Int(*n)),
            Operand::Net(net, _) => Some(Val::Net(net)),
            Operand::Call { name, .. } => Some(Val::Call(name)),
        }
    }

    /// An operand standing alone as a condition.
    fn lone(&mut self, operand: &Operand) -> Cond {
        match operand {
            Operand::Call { name, args, at } => self.function(name, args, *at),
            Operand::Int(n, _) => Cond::Const(*n != 0),
            Operand::Var { at, .. } => {
                if self.value(operand).is_some() {
                    let var = var_text(operand);
                    self.report(
                        *at,
                        format!("{var} alone is not a condition; compare it, e.g. {var} == ..."),
                    );
                }
                Cond::Const(false)
            }
            Operand::Str(_, at) | Operand::Net(_, at) => {
                self.report(*at, "a constant alone is not a condition");
                Cond::Const(false)
            }
        }
    }

    fn compare(&mut self, lhs: &Operand, op: CmpOp, rhs: &Operand, op_at: usize) -> Cond {
        let (left, right) = (self.value(lhs), self.value(rhs));
        let (Some(left), Some(right)) = (left, right) else {
            return Cond::Const(false);
        };
        for (val, operand) in [(left, lhs), (right, rhs)] {
            if let Val::Call(name) = val {
                self.report(
                    operand.at(),
                    format!("the result of {name}() cannot be compared; use it as a condition on its own"),
                );
                return Cond::Const(false);
            }
        }
        // Keep the variable on the left: `"10.0.0.1" == $si` reads as `$si == "10.0.0.1"`.
        let (var, var_operand, op, other, other_operand) = match (left, right) {
            (Val::Var(var), _) => (var, lhs, op, right, rhs),
            (_, Val::Var(var)) => {
                let Some(flipped) = flip(op) else {
                    self.report(
                        lhs.at(),
                        format!(
                            "the pattern goes on the right of {}: write {} {} \"pattern\"",
                            op.as_str(),
                            var_text(rhs),
                            op.as_str()
                        ),
                    );
                    return Cond::Const(false);
                };
                (var, rhs, flipped, left, lhs)
            }
            _ => {
                self.report(
                    op_at,
                    format!(
                        "both sides of {} are constants; one side must be a variable such as $si",
                        op.as_str()
                    ),
                );
                return Cond::Const(false);
            }
        };
        let other_at = other_operand.at();
        match (op, other) {
            (CmpOp::Match | CmpOp::NotMatch, Val::Str(lit)) => match self.regex(lit, other_at) {
                Some(re) => Cond::Matches {
                    var,
                    re,
                    matching: op == CmpOp::Match,
                },
                None => Cond::Const(false),
            },
            (CmpOp::Match | CmpOp::NotMatch, _) => {
                self.report(
                    other_at,
                    format!(
                        "the right side of {} must be a quoted regular expression",
                        op.as_str()
                    ),
                );
                Cond::Const(false)
            }
            _ => match var {
                VarRef::Ip(ip_var) => {
                    self.compare_ip(ip_var, var_operand, op, op_at, other, other_at)
                }
                VarRef::Port(port) => self.compare_port(port, op, other, other_at),
                VarRef::Proto => self.compare_proto(op, op_at, other, other_at),
                VarRef::Sip(SipVar::Status) => self.compare_status(op, other, other_at),
                VarRef::Sip(sip) => self.compare_sip_text(sip, op, op_at, other, other_at),
            },
        }
    }

    fn compare_ip(
        &mut self,
        var: IpVar,
        var_operand: &Operand,
        op: CmpOp,
        op_at: usize,
        other: Val<'_>,
        other_at: usize,
    ) -> Cond {
        let Some(equal) = self.equality(op, op_at, "addresses") else {
            return Cond::Const(false);
        };
        match other {
            Val::Str(lit) => {
                if let Ok(ip) = lit.value.parse::<IpAddr>() {
                    return Cond::IpIs {
                        var,
                        ip: ip.to_canonical(),
                        equal,
                    };
                }
                let message = if lit.value.contains('/') && parse_net(&lit.value).is_some() {
                    format!(
                        "{:?} is a network, not an address; use is_in_subnet({}, {:?})",
                        lit.value,
                        var_text(var_operand),
                        lit.value
                    )
                } else {
                    format!("{:?} is not an IP address", lit.value)
                };
                self.report(other_at, message);
                Cond::Const(false)
            }
            Val::Net(text) => match parse_net(text) {
                Some(net) if text.contains('/') => Cond::IpInNet {
                    var,
                    net: CidrSet::from_nets([net]),
                    equal,
                },
                Some(net) => Cond::IpIs {
                    var,
                    ip: net.addr().to_canonical(),
                    equal,
                },
                None => {
                    self.report(other_at, format!("{text} is not an IP address or network"));
                    Cond::Const(false)
                }
            },
            Val::Var(VarRef::Ip(rhs)) => Cond::IpSame {
                lhs: var,
                rhs,
                equal,
            },
            Val::Int(n) => {
                self.report(other_at, format!("{n} is not an IP address"));
                Cond::Const(false)
            }
            Val::Var(other_var) => {
                self.report(
                    other_at,
                    format!("cannot compare an address with {}", describe(other_var)),
                );
                Cond::Const(false)
            }
            Val::Call(_) => Cond::Const(false),
        }
    }

    fn compare_port(&mut self, lhs: PortVar, op: CmpOp, other: Val<'_>, other_at: usize) -> Cond {
        let Some(op) = ordering(op) else {
            return Cond::Const(false);
        };
        let rhs = match other {
            Val::Int(n) => IntOperand::Const(n),
            Val::Var(VarRef::Port(port)) => IntOperand::Port(port),
            Val::Str(lit) => match lit.value.trim().parse::<i64>() {
                Ok(n) => IntOperand::Const(n),
                Err(_) => {
                    self.report(other_at, format!("{:?} is not a port number", lit.value));
                    return Cond::Const(false);
                }
            },
            Val::Net(text) => {
                self.report(other_at, format!("{text} is not a port number"));
                return Cond::Const(false);
            }
            Val::Var(other_var) => {
                self.report(
                    other_at,
                    format!("cannot compare a port with {}", describe(other_var)),
                );
                return Cond::Const(false);
            }
            Val::Call(_) => return Cond::Const(false),
        };
        Cond::Int { lhs, op, rhs }
    }

    /// `==` (true) or `!=` (false); any other operator is reported as not applying to `what`.
    fn equality(&mut self, op: CmpOp, op_at: usize, what: &str) -> Option<bool> {
        match op {
            CmpOp::Eq => Some(true),
            CmpOp::Ne => Some(false),
            _ => {
                self.report(
                    op_at,
                    format!("operator {} does not apply to {what}", op.as_str()),
                );
                None
            }
        }
    }

    fn compare_proto(&mut self, op: CmpOp, op_at: usize, other: Val<'_>, other_at: usize) -> Cond {
        let Some(equal) = self.equality(op, op_at, "$proto") else {
            return Cond::Const(false);
        };
        match other {
            Val::Str(lit) => match ProtoName::find(&lit.value) {
                Some(ProtoName::Tapped(proto)) => Cond::ProtoIs { proto, equal },
                // No tapped connection is UDP.
                Some(ProtoName::Udp) => Cond::Const(!equal),
                None => {
                    self.report(other_at, UnknownProto(lit.value.clone()).to_string());
                    Cond::Const(false)
                }
            },
            Val::Var(VarRef::Proto) => Cond::Const(equal),
            Val::Var(other_var) => {
                self.report(
                    other_at,
                    format!("cannot compare a protocol with {}", describe(other_var)),
                );
                Cond::Const(false)
            }
            Val::Int(_) | Val::Net(_) => {
                self.report(
                    other_at,
                    "$proto is compared with a protocol name such as \"tcp\"",
                );
                Cond::Const(false)
            }
            Val::Call(_) => Cond::Const(false),
        }
    }

    /// `$rs` against a number.
    fn compare_status(&mut self, op: CmpOp, other: Val<'_>, other_at: usize) -> Cond {
        let Some(op) = ordering(op) else {
            return Cond::Const(false);
        };
        let rhs = match other {
            Val::Int(n) => n,
            Val::Str(lit) => match lit.value.trim().parse::<i64>() {
                Ok(n) => n,
                Err(_) => {
                    self.report(other_at, format!("{:?} is not a status code", lit.value));
                    return Cond::Const(false);
                }
            },
            _ => {
                self.report(other_at, "$rs is compared with a status code such as 200");
                return Cond::Const(false);
            }
        };
        Cond::Status { op, rhs }
    }

    /// A SIP text variable against a literal: `==` and `!=` only, exact comparison.
    fn compare_sip_text(
        &mut self,
        var: SipVar,
        op: CmpOp,
        op_at: usize,
        other: Val<'_>,
        other_at: usize,
    ) -> Cond {
        let Some(equal) = self.equality(op, op_at, "SIP text; use ==, !=, =~ or !~") else {
            return Cond::Const(false);
        };
        let text = match other {
            Val::Str(lit) => lit.value.clone(),
            Val::Int(n) => n.to_string(),
            Val::Net(text) => text.to_owned(),
            Val::Var(_) | Val::Call(_) => {
                self.report(
                    other_at,
                    "a SIP variable is compared with a quoted text such as \"alice\"",
                );
                return Cond::Const(false);
            }
        };
        Cond::SipText {
            var,
            text: text.into_boxed_str(),
            equal,
        }
    }

    /// Builds a `=~` pattern: case-insensitive like OpenSIPS's `REG_ICASE` (`(?-i)` turns it
    /// off), unanchored like `regexec`.
    fn regex(&mut self, lit: &StrLit, at: usize) -> Option<Regex> {
        match RegexBuilder::new(&lit.value)
            .case_insensitive(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            Ok(re) => Some(re),
            Err(error) => {
                self.report(
                    at,
                    format!(
                        "bad regular expression {:?}: {}",
                        lit.value,
                        regex_error_text(&error)
                    ),
                );
                None
            }
        }
    }

    /// A function used as a condition.
    fn function(&mut self, name: &str, args: &[Operand], at: usize) -> Cond {
        match name {
            "is_in_subnet" => self.is_in_subnet(args, at),
            "check_source_address" => self.check_source_address(args, at),
            "is_method" => self.is_method(args, at),
            "has_totag" => {
                self.note_sip(at, || "has_totag()".to_owned());
                if let Some(extra) = args.first() {
                    self.report(extra.at(), "has_totag() takes no arguments");
                }
                Cond::HasToTag
            }
            "trace" => {
                self.report(at, "trace() is a statement, not a condition");
                Cond::Const(false)
            }
            "xlog" | "xdbg" => {
                self.report(at, format!("{name}() is a statement, not a condition"));
                Cond::Const(false)
            }
            _ => {
                self.report(at, format!("unknown function {name}()"));
                Cond::Const(false)
            }
        }
    }

    /// `is_method("INVITE")`, `is_method("INVITE|BYE")`.
    fn is_method(&mut self, args: &[Operand], at: usize) -> Cond {
        self.note_sip(at, || "is_method()".to_owned());
        let [Operand::Str(lit, lit_at)] = args else {
            self.report(
                at,
                "is_method() takes one quoted method list: is_method(\"INVITE|BYE\")",
            );
            return Cond::Const(false);
        };
        let methods: Vec<Box<str>> = lit.value.split('|').map(|m| m.trim().into()).collect();
        if let Some(bad) = methods.iter().find(|m| {
            m.is_empty()
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
        }) {
            self.report(
                *lit_at,
                format!("{bad:?} is not a SIP method (expected a list such as \"INVITE|BYE\")"),
            );
            return Cond::Const(false);
        }
        Cond::IsMethod(methods.into_boxed_slice())
    }

    /// `is_in_subnet($si, "10.0.0.0/8[, 192.168.0.0/16...]")`.
    fn is_in_subnet(&mut self, args: &[Operand], at: usize) -> Cond {
        let [ip_arg, nets_arg] = args else {
            self.report(
                at,
                format!(
                    "is_in_subnet() takes 2 arguments (an address variable and a network list), \
                     found {}",
                    args.len()
                ),
            );
            return Cond::Const(false);
        };
        let var = match self.value(ip_arg) {
            Some(Val::Var(VarRef::Ip(var))) => Some(var),
            None => None,
            Some(_) => {
                self.report(
                    ip_arg.at(),
                    "the first argument of is_in_subnet() must be an address variable such as $si",
                );
                None
            }
        };
        let nets = match nets_arg {
            Operand::Str(lit, lit_at) => self.network_list(lit, *lit_at),
            Operand::Net(text, net_at) => match parse_net(text) {
                Some(net) => Some(CidrSet::from_nets([net])),
                None => {
                    self.report(*net_at, format!("{text} is not an IP address or network"));
                    None
                }
            },
            other => {
                self.report(
                    other.at(),
                    "the second argument of is_in_subnet() must be a quoted network list \
                     such as \"10.0.0.0/8\"",
                );
                None
            }
        };
        match (var, nets) {
            (Some(var), Some(nets)) => Cond::InSubnet { var, nets },
            _ => Cond::Const(false),
        }
    }

    /// `"10.0.0.0/8, 2001:db8::/32, 192.0.2.1"`, each entry checked.
    fn network_list(&mut self, lit: &StrLit, lit_at: usize) -> Option<CidrSet> {
        let mut nets = CidrSet::default();
        let mut ok = true;
        let mut offset = 0;
        for entry in lit.value.split(',') {
            let entry_at = lit.origin(offset, lit_at);
            offset += entry.len() + 1;
            match parse_net(entry) {
                Some(net) => nets.insert(net),
                None => {
                    self.report(
                        entry_at,
                        format!(
                            "{:?} is not a network (expected an address or a CIDR such as \
                             10.0.0.0/8)",
                            entry.trim()
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(nets)
    }

    /// `check_source_address("group")`: the group must exist in the config.
    fn check_source_address(&mut self, args: &[Operand], at: usize) -> Cond {
        let group = match args {
            [] => {
                self.report(at, "check_source_address() needs a group name");
                return Cond::Const(false);
            }
            [Operand::Str(lit, _)] => lit.value.clone(),
            [Operand::Int(n, _)] => n.to_string(),
            [other] => {
                self.report(
                    other.at(),
                    "the group of check_source_address() must be a quoted name",
                );
                return Cond::Const(false);
            }
            [_, extra, ..] => {
                self.report(
                    extra.at(),
                    "check_source_address() takes only the group here (context, pattern and \
                     partition arguments are not supported)",
                );
                return Cond::Const(false);
            }
        };
        match self.groups.get(&group) {
            Some(nets) => Cond::InGroup { nets },
            None => {
                let known: Vec<&str> = self.groups.names().collect();
                let hint = if known.is_empty() {
                    "no address groups are configured".to_owned()
                } else {
                    format!("known groups: {}", known.join(", "))
                };
                self.report(
                    args[0].at(),
                    format!("unknown address group {group:?} ({hint})"),
                );
                Cond::Const(false)
            }
        }
    }
}

/// The variables routes know: the connection's, and the SIP message's (which only a
/// `sip_trace_route` may read; the routes check where each route is used).
pub(crate) fn resolve_var(name: &str, arg: Option<&str>) -> Result<VarRef, String> {
    let plain = |var: VarRef| match arg {
        None => Ok(var),
        Some(_) => Err(format!("${name} takes no argument")),
    };
    let sip = |var: SipVar| plain(VarRef::Sip(var));
    match name {
        "rm" => sip(SipVar::Method),
        "rs" => sip(SipVar::Status),
        "ru" => sip(SipVar::Ruri),
        "rU" => sip(SipVar::RuriUser),
        "rd" => sip(SipVar::RuriHost),
        "fu" => sip(SipVar::FromUri),
        "fU" => sip(SipVar::FromUser),
        "fd" => sip(SipVar::FromHost),
        "tu" => sip(SipVar::ToUri),
        "tU" => sip(SipVar::ToUser),
        "ci" => sip(SipVar::CallId),
        "ua" => sip(SipVar::UserAgent),
        "hdr" => match arg {
            Some(header) => HeaderName::new(header)
                .map(|h| VarRef::Sip(SipVar::Header(h)))
                .ok_or_else(|| {
                    format!(
                        "{header:?} is not a header name (letters, digits and -._!%*+`'~, at \
                         most {MAX_HEADER_NAME} characters)"
                    )
                }),
            None => Err("$hdr needs a header name: $hdr(User-Agent)".to_owned()),
        },
        "si" => plain(VarRef::Ip(IpVar::Remote)),
        "sp" => plain(VarRef::Port(PortVar::Remote)),
        "Ri" => plain(VarRef::Ip(IpVar::Local)),
        "Rp" => plain(VarRef::Port(PortVar::Local)),
        "proto" | "pr" => plain(VarRef::Proto),
        "socket_in" => match arg {
            Some("ip") => Ok(VarRef::Ip(IpVar::Local)),
            Some("port") => Ok(VarRef::Port(PortVar::Local)),
            Some("proto") => Ok(VarRef::Proto),
            Some(other) => Err(format!(
                "unknown field {other:?} of $socket_in (expected ip, port or proto)"
            )),
            None => Err(
                "$socket_in needs a field: $socket_in(ip), $socket_in(port) or $socket_in(proto)"
                    .to_owned(),
            ),
        },
        _ => Err(match arg {
            None => format!("unknown variable ${name}"),
            Some(arg) => format!("unknown variable ${name}({arg})"),
        }),
    }
}

/// How a variable operand is written, for messages.
fn var_text(operand: &Operand) -> String {
    match operand {
        Operand::Var {
            name, arg: None, ..
        } => format!("${name}"),
        Operand::Var {
            name,
            arg: Some(arg),
            ..
        } => format!("${name}({arg})"),
        _ => "$si".to_owned(),
    }
}

/// "an address", "a port", "a protocol", "a SIP value".
fn describe(var: VarRef) -> &'static str {
    match var {
        VarRef::Ip(_) => "an address",
        VarRef::Port(_) => "a port",
        VarRef::Proto => "a protocol",
        VarRef::Sip(SipVar::Status) => "a status code",
        VarRef::Sip(_) => "a SIP value",
    }
}

/// The operator seen from the other side (`a < b` is `b > a`); `None` for regex operators.
fn flip(op: CmpOp) -> Option<CmpOp> {
    Some(match op {
        CmpOp::Eq => CmpOp::Eq,
        CmpOp::Ne => CmpOp::Ne,
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        CmpOp::Match | CmpOp::NotMatch => return None,
    })
}

/// The integer form of a comparison operator.
fn ordering(op: CmpOp) -> Option<Ordering> {
    Some(match op {
        CmpOp::Eq => Ordering::Eq,
        CmpOp::Ne => Ordering::Ne,
        CmpOp::Lt => Ordering::Lt,
        CmpOp::Le => Ordering::Le,
        CmpOp::Gt => Ordering::Gt,
        CmpOp::Ge => Ordering::Ge,
        CmpOp::Match | CmpOp::NotMatch => return None,
    })
}

/// OpenSIPS's xlog level names.
fn xlog_level(name: &str) -> Option<XlogLevel> {
    Some(match name {
        "L_ALERT" | "L_CRIT" | "L_ERR" => XlogLevel::Error,
        "L_WARN" => XlogLevel::Warn,
        "L_NOTICE" | "L_INFO" => XlogLevel::Info,
        "L_DBG" => XlogLevel::Debug,
        _ => return None,
    })
}

/// The one-line reason of a regex error (the crate's own text is a multi-line picture).
fn regex_error_text(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => text
            .lines()
            .find_map(|line| line.strip_prefix("error: "))
            .map_or_else(|| text.replace('\n', " "), str::to_owned),
        regex::Error::CompiledTooBig(_) => "pattern too large".to_owned(),
        other => other.to_string(),
    }
}

/// Checks the call graph: no route may reach itself through `route(...)` calls, and no chain
/// may be longer than [`MAX_ROUTE_DEPTH`]. `calls[r]` lists route `r`'s callees with call-site
/// offsets; `sources[r]` and `names[r]` locate and name route `r`. Iterative, so a long chain in
/// fuzzed input cannot overflow the stack here.
pub(crate) fn check_calls(
    calls: &[Vec<(usize, usize)>],
    sources: &[usize],
    names: &[(&str, usize)],
) -> Vec<Diag> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum State {
        Unvisited,
        OnStack,
        Done(usize),
    }
    let mut diags = Vec::new();
    let mut state = vec![State::Unvisited; calls.len()];
    for root in 0..calls.len() {
        if state[root] != State::Unvisited {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = State::OnStack;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&(callee, call_at)) = calls[node].get(*next) {
                *next += 1;
                match state.get(callee).copied() {
                    Some(State::Unvisited) => {
                        state[callee] = State::OnStack;
                        stack.push((callee, 0));
                    }
                    Some(State::OnStack) => {
                        let from = stack.iter().position(|&(n, _)| n == callee).unwrap_or(0);
                        let mut path: Vec<&str> =
                            stack[from..].iter().map(|&(n, _)| names[n].0).collect();
                        path.push(names[callee].0);
                        diags.push(Diag {
                            source: sources[node],
                            at: call_at,
                            message: format!(
                                "recursive route call: {} (routes may not call themselves)",
                                path.join(" -> ")
                            ),
                        });
                    }
                    _ => {}
                }
            } else {
                let depth = 1 + calls[node]
                    .iter()
                    .filter_map(|&(callee, _)| match state.get(callee) {
                        Some(State::Done(depth)) => Some(*depth),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                state[node] = State::Done(depth);
                if depth == MAX_ROUTE_DEPTH + 1 {
                    diags.push(Diag {
                        source: sources[node],
                        at: names[node].1,
                        message: format!(
                            "route calls starting at {:?} nest {depth} routes deep; at most \
                             {MAX_ROUTE_DEPTH} are allowed",
                            names[node].0
                        ),
                    });
                }
                stack.pop();
            }
        }
    }
    diags
}
