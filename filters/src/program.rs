//! The compiled, typed route tree and its evaluator.
//!
//! Everything that can be prepared is prepared at compile time (addresses and networks parsed,
//! regexes built, address groups resolved to shared sets, route calls resolved to indexes), so
//! evaluation is comparisons over a [`Facts`] snapshot and never allocates (an `xlog` builds its
//! line, which is logging, not filtering).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use heptap_hep::NetProto;
use regex::Regex;

use crate::cidr::CidrSet;
use crate::conn::Inspect;
use crate::error::CompileError;
use crate::sip::{SipInspect, SipStart, fields};
use crate::text::StackText;

/// The two addresses a route can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpVar {
    /// `$si`: the peer.
    Remote,
    /// `$Ri`, `$socket_in(ip)`: heptap's side.
    Local,
}

/// The two ports a route can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortVar {
    /// `$sp`: the peer's port.
    Remote,
    /// `$Rp`, `$socket_in(port)`: heptap's port.
    Local,
}

/// A variable, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarRef {
    /// An address variable.
    Ip(IpVar),
    /// A port variable.
    Port(PortVar),
    /// `$proto`.
    Proto,
    /// A SIP message variable (`sip_trace_route` only).
    Sip(SipVar),
}

/// Longest header name `$hdr(...)` takes: kept inline so a variable stays `Copy` and reading
/// it allocates nothing (real header names are far shorter).
pub(crate) const MAX_HEADER_NAME: usize = 48;

/// A `$hdr(Name)` name, stored inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderName {
    /// The name's bytes (ASCII token characters), then zeros.
    bytes: [u8; MAX_HEADER_NAME],
    /// How many bytes are the name.
    len: u8,
}

impl HeaderName {
    /// The name, if it is a non-empty SIP token of at most [`MAX_HEADER_NAME`] bytes.
    pub(crate) fn new(name: &str) -> Option<HeaderName> {
        let token = |b: u8| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
                )
        };
        if name.is_empty() || name.len() > MAX_HEADER_NAME || !name.bytes().all(token) {
            return None;
        }
        let mut bytes = [0; MAX_HEADER_NAME];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(HeaderName {
            bytes,
            len: name.len() as u8,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII was copied in; "" keeps it total.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// The SIP variables of `sip_trace_route`, with OpenSIPS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SipVar {
    /// `$rm`: the request's method (a response's CSeq method, as OpenSIPS gives it).
    Method,
    /// `$rs`: the response's status code.
    Status,
    /// `$ru`: the Request-URI.
    Ruri,
    /// `$rU`: its user.
    RuriUser,
    /// `$rd`: its domain.
    RuriHost,
    /// `$fu`: the From URI.
    FromUri,
    /// `$fU`: its user.
    FromUser,
    /// `$fd`: its domain.
    FromHost,
    /// `$tu`: the To URI.
    ToUri,
    /// `$tU`: its user.
    ToUser,
    /// `$ci`: the Call-ID.
    CallId,
    /// `$ua`: the User-Agent.
    UserAgent,
    /// `$hdr(Name)`: the first header of that name.
    Header(HeaderName),
}

impl SipVar {
    /// The variable's text in `sip` (None when the message has no such value). `$rs` is written
    /// by [`Ctx::write_var`] instead: it is a number.
    fn text(self, sip: &dyn SipInspect) -> Option<&str> {
        let ruri = || match sip.start()? {
            SipStart::Request { uri, .. } => Some(uri),
            SipStart::Response { .. } => None,
        };
        let from = || sip.header("From").map(fields::name_addr_uri);
        let to = || sip.header("To").map(fields::name_addr_uri);
        match self {
            SipVar::Method => fields::method(sip),
            SipVar::Status => None,
            SipVar::Ruri => ruri(),
            SipVar::RuriUser => ruri().and_then(fields::uri_user),
            SipVar::RuriHost => ruri().and_then(fields::uri_host),
            SipVar::FromUri => from(),
            SipVar::FromUser => from().and_then(fields::uri_user),
            SipVar::FromHost => from().and_then(fields::uri_host),
            SipVar::ToUri => to(),
            SipVar::ToUser => to().and_then(fields::uri_user),
            SipVar::CallId => sip.header("Call-ID"),
            SipVar::UserAgent => sip.header("User-Agent"),
            SipVar::Header(name) => sip.header(name.as_str()),
        }
    }

    /// A response's status code.
    fn status(sip: &dyn SipInspect) -> Option<u16> {
        match sip.start()? {
            SipStart::Response { code } => Some(code),
            SipStart::Request { .. } => None,
        }
    }
}

/// Integer comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ordering {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Ordering {
    fn holds(self, lhs: i64, rhs: i64) -> bool {
        match self {
            Ordering::Eq => lhs == rhs,
            Ordering::Ne => lhs != rhs,
            Ordering::Lt => lhs < rhs,
            Ordering::Le => lhs <= rhs,
            Ordering::Gt => lhs > rhs,
            Ordering::Ge => lhs >= rhs,
        }
    }
}

/// The right side of an integer comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntOperand {
    /// Another port variable.
    Port(PortVar),
    /// A literal.
    Const(i64),
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    /// A constant (`if (0)`), also the placeholder for a condition that failed to compile.
    Const(bool),
    /// `!c`
    Not(Box<Cond>),
    /// `a && b && ...`
    All(Box<[Cond]>),
    /// `a || b || ...`
    Any(Box<[Cond]>),
    /// `$si == "addr"` / `!=`: compared as addresses.
    IpIs {
        /// Which address.
        var: IpVar,
        /// The literal, parsed (and IPv4-mapped addresses made IPv4).
        ip: IpAddr,
        /// `==` (true) or `!=` (false).
        equal: bool,
    },
    /// `$si == $Ri` / `!=`.
    IpSame {
        /// Left address.
        lhs: IpVar,
        /// Right address.
        rhs: IpVar,
        /// `==` (true) or `!=` (false).
        equal: bool,
    },
    /// `$si == 10.0.0.0/8` (unquoted network, OpenSIPS's net match) / `!=`.
    IpInNet {
        /// Which address.
        var: IpVar,
        /// The network.
        net: CidrSet,
        /// `==` (true) or `!=` (false).
        equal: bool,
    },
    /// `$sp < 1024` and friends.
    Int {
        /// The port on the left.
        lhs: PortVar,
        /// The operator.
        op: Ordering,
        /// The right side.
        rhs: IntOperand,
    },
    /// `$proto == "tcp"` / `!=`.
    ProtoIs {
        /// The protocol named by the literal.
        proto: NetProto,
        /// `==` (true) or `!=` (false).
        equal: bool,
    },
    /// `var =~ "re"` / `!~`: the variable's text matched by a precompiled regex.
    Matches {
        /// The variable whose text is matched.
        var: VarRef,
        /// The compiled pattern.
        re: Regex,
        /// `=~` (true) or `!~` (false).
        matching: bool,
    },
    /// `is_in_subnet($si, "net[,net...]")`.
    InSubnet {
        /// Which address.
        var: IpVar,
        /// The networks.
        nets: CidrSet,
    },
    /// `check_source_address("group")`: `$si` in a config address group.
    InGroup {
        /// The group's networks, shared with the config's [`crate::AddressGroups`].
        nets: Arc<CidrSet>,
    },
    /// `$fU == "alice"` / `!=`: a SIP variable's text, compared exactly (a message without the
    /// value is unequal to everything).
    SipText {
        /// The variable.
        var: SipVar,
        /// The literal.
        text: Box<str>,
        /// `==` (true) or `!=` (false).
        equal: bool,
    },
    /// `$rs >= 400` and friends: false for requests (`!=` true).
    Status {
        /// The operator.
        op: Ordering,
        /// The literal.
        rhs: i64,
    },
    /// `is_method("INVITE|BYE")`: the method (a response's CSeq method), any case.
    IsMethod(Box<[Box<str>]>),
    /// `has_totag()`: the To header has a `tag` parameter.
    HasToTag,
}

/// A compiled statement.
#[derive(Debug, Clone)]
pub(crate) enum Stmt {
    /// An `if` / `else if` / `else` chain.
    If {
        /// Conditions and bodies, tried in order.
        arms: Box<[(Cond, Box<[Stmt]>)]>,
        /// The `else` body (empty when absent).
        otherwise: Box<[Stmt]>,
    },
    /// `exit`: stop, trace.
    Exit,
    /// `drop`: stop, do not trace.
    Drop,
    /// `return(n)`: leave the current route; `return(0)` ends the whole route like `exit`, as in
    /// OpenSIPS.
    Return(i64),
    /// `route(name)`: run another route (index into [`Program::routes`]).
    Call(usize),
    /// `xlog(...)`.
    Xlog(Xlog),
    /// `trace("tid")`: trace the message to this trace id (index into the program's table).
    Trace(u8),
}

/// Log levels of `xlog`, with OpenSIPS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XlogLevel {
    /// `L_ALERT`, `L_CRIT`, `L_ERR` (the default of one-argument `xlog`).
    Error,
    /// `L_WARN`
    Warn,
    /// `L_NOTICE`, `L_INFO`
    Info,
    /// `L_DBG` (and `xdbg`)
    Debug,
}

/// A piece of an `xlog` format.
#[derive(Debug, Clone)]
pub(crate) enum Piece {
    /// Literal text.
    Text(Box<str>),
    /// A variable substituted at run time.
    Var(VarRef),
}

/// A compiled `xlog` statement.
#[derive(Debug, Clone)]
pub(crate) struct Xlog {
    /// Where the line goes.
    pub(crate) level: XlogLevel,
    /// The format, split at variables.
    pub(crate) pieces: Box<[Piece]>,
}

/// One compiled route.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRoute {
    /// Its name, for logs.
    pub(crate) name: Box<str>,
    /// Its statements.
    pub(crate) body: Box<[Stmt]>,
    /// Where it (or a route it calls) first reads the SIP message, as the error a connection
    /// route that does so gets; `None` when it reads only the connection.
    pub(crate) sip_use: Option<CompileError>,
}

/// All routes of one compilation; route calls index into `routes`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Program {
    /// The routes, in definition order.
    pub(crate) routes: Vec<CompiledRoute>,
    /// The trace ids `trace("tid")` names, in order of first use; a message's choice is a bit
    /// set over this table.
    pub(crate) trace_ids: Vec<Box<str>>,
}

/// What one evaluation reads and what it chose: the connection, the SIP message (for a
/// `sip_trace_route`), and the trace ids `trace()` picked.
pub(crate) struct Ctx<'a> {
    /// The connection's variables.
    pub(crate) facts: Facts,
    /// The message, when the route runs for one.
    pub(crate) sip: Option<&'a dyn SipInspect>,
    /// Bit `i` set: `trace()` named `Program::trace_ids[i]`.
    pub(crate) traced: u64,
}

impl Ctx<'_> {
    /// Writes a variable's text (the same text `xlog` prints and regexes see); an absent SIP
    /// value writes nothing and answers false.
    fn write_var(&self, var: VarRef, out: &mut impl std::fmt::Write) -> bool {
        match var {
            VarRef::Sip(SipVar::Status) => match self.sip.and_then(SipVar::status) {
                Some(code) => write!(out, "{code}").is_ok(),
                None => false,
            },
            VarRef::Sip(var) => match self.sip.and_then(|sip| var.text(sip)) {
                Some(text) => out.write_str(text).is_ok(),
                None => false,
            },
            other => self.facts.write_var(other, out).is_ok(),
        }
    }
}

/// What the route reads of the connection, taken once per evaluation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    /// `$si` (IPv4-mapped made IPv4).
    si: IpAddr,
    /// `$sp`
    sp: u16,
    /// `$Ri` (IPv4-mapped made IPv4).
    ri: IpAddr,
    /// `$Rp`
    rp: u16,
    /// `$proto`
    proto: NetProto,
}

impl Facts {
    pub(crate) fn read(conn: &(impl Inspect + ?Sized)) -> Facts {
        let remote = conn.remote();
        let local = conn.local();
        Facts {
            si: remote.ip().to_canonical(),
            sp: remote.port(),
            ri: local.ip().to_canonical(),
            rp: local.port(),
            proto: conn.proto(),
        }
    }

    fn ip(&self, var: IpVar) -> IpAddr {
        match var {
            IpVar::Remote => self.si,
            IpVar::Local => self.ri,
        }
    }

    fn port(&self, var: PortVar) -> u16 {
        match var {
            PortVar::Remote => self.sp,
            PortVar::Local => self.rp,
        }
    }

    /// Writes a variable's text (the same text `xlog` prints and regexes see).
    fn write_var(&self, var: VarRef, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        match var {
            VarRef::Ip(var) => match self.ip(var) {
                IpAddr::V4(ip) => write_ipv4(ip, out),
                ip @ IpAddr::V6(_) => write!(out, "{ip}"),
            },
            VarRef::Port(var) => write!(out, "{}", self.port(var)),
            VarRef::Proto => out.write_str(self.proto.name()),
            // SIP variables are written by `Ctx::write_var`.
            VarRef::Sip(_) => Ok(()),
        }
    }
}

/// Dotted-quad text of an IPv4 address, as `Display` writes it but without the formatting
/// machinery: `$si =~` runs once per connection and this is most of its cost.
fn write_ipv4(ip: Ipv4Addr, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    let mut buf = [0u8; 15];
    let mut len = 0;
    for (index, octet) in ip.octets().into_iter().enumerate() {
        if index > 0 {
            buf[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            buf[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            buf[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        buf[len] = b'0' + octet % 10;
        len += 1;
    }
    out.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| std::fmt::Error)?)
}

/// How a block ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Fell off the end: go on with the caller.
    Next,
    /// `exit` (or `return(0)`): stop everything, trace.
    Exit,
    /// `drop`: stop everything, do not trace.
    Drop,
    /// `return(n)`, n != 0: leave the current route.
    Return,
}

impl Program {
    /// Runs route `index` to its end.
    pub(crate) fn run(&self, index: usize, facts: &mut Ctx<'_>) -> Flow {
        let Some(route) = self.routes.get(index) else {
            return Flow::Next;
        };
        self.block(&route.body, facts, &route.name)
    }

    fn block(&self, body: &[Stmt], facts: &mut Ctx<'_>, route: &str) -> Flow {
        for stmt in body {
            let flow = match stmt {
                Stmt::If { arms, otherwise } => {
                    let taken = arms
                        .iter()
                        .find(|(cond, _)| cond.holds(facts))
                        .map_or(&**otherwise, |(_, body)| &**body);
                    self.block(taken, facts, route)
                }
                Stmt::Exit => Flow::Exit,
                Stmt::Drop => Flow::Drop,
                Stmt::Return(0) => Flow::Exit,
                Stmt::Return(_) => Flow::Return,
                Stmt::Call(callee) => match self.run(*callee, facts) {
                    Flow::Next | Flow::Return => Flow::Next,
                    stop => stop,
                },
                Stmt::Xlog(xlog) => {
                    xlog.emit(facts, route);
                    Flow::Next
                }
                Stmt::Trace(index) => {
                    facts.traced |= 1u64 << index;
                    Flow::Next
                }
            };
            if flow != Flow::Next {
                return flow;
            }
        }
        Flow::Next
    }
}

impl Cond {
    /// Evaluates the condition; no allocation.
    pub(crate) fn holds(&self, ctx: &Ctx<'_>) -> bool {
        let facts = &ctx.facts;
        match self {
            Cond::Const(value) => *value,
            Cond::Not(inner) => !inner.holds(ctx),
            Cond::All(terms) => terms.iter().all(|term| term.holds(ctx)),
            Cond::Any(terms) => terms.iter().any(|term| term.holds(ctx)),
            Cond::IpIs { var, ip, equal } => (facts.ip(*var) == *ip) == *equal,
            Cond::IpSame { lhs, rhs, equal } => (facts.ip(*lhs) == facts.ip(*rhs)) == *equal,
            Cond::IpInNet { var, net, equal } => net.contains(facts.ip(*var)) == *equal,
            Cond::Int { lhs, op, rhs } => {
                let rhs = match rhs {
                    IntOperand::Port(var) => i64::from(facts.port(*var)),
                    IntOperand::Const(n) => *n,
                };
                op.holds(i64::from(facts.port(*lhs)), rhs)
            }
            Cond::ProtoIs { proto, equal } => (facts.proto == *proto) == *equal,
            Cond::Matches {
                var: VarRef::Sip(var),
                re,
                matching,
            } if *var != SipVar::Status => {
                // SIP text is matched where it lies; an absent value matches nothing.
                let text = ctx.sip.and_then(|sip| var.text(sip));
                text.is_some_and(|text| re.is_match(text)) == *matching
            }
            Cond::Matches { var, re, matching } => {
                let mut text = StackText::new();
                // Every variable's text fits the buffer (an IPv6 address is at most 45 bytes);
                // were it ever cut short, matching the prefix is the best effort left.
                let present = ctx.write_var(*var, &mut text);
                (present && re.is_match(text.as_str())) == *matching
            }
            Cond::InSubnet { var, nets } => nets.contains(facts.ip(*var)),
            Cond::InGroup { nets } => nets.contains(facts.si),
            Cond::SipText { var, text, equal } => {
                let value = ctx.sip.and_then(|sip| var.text(sip));
                (value == Some(&**text)) == *equal
            }
            Cond::Status { op, rhs } => match ctx.sip.and_then(SipVar::status) {
                Some(code) => op.holds(i64::from(code), *rhs),
                None => *op == Ordering::Ne,
            },
            Cond::IsMethod(methods) => ctx
                .sip
                .and_then(|sip| fields::method(sip))
                .is_some_and(|m| methods.iter().any(|want| want.eq_ignore_ascii_case(m))),
            Cond::HasToTag => ctx
                .sip
                .and_then(|sip| sip.header("To"))
                .is_some_and(fields::has_tag),
        }
    }
}

impl Xlog {
    /// Formats the line and logs it through `tracing` under the `heptap::xlog` target.
    fn emit(&self, ctx: &Ctx<'_>, route: &str) {
        let mut line = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => line.push_str(text),
                Piece::Var(var) => {
                    // OpenSIPS prints an absent value as <null>.
                    if !ctx.write_var(*var, &mut line) {
                        line.push_str("<null>");
                    }
                }
            }
        }
        // OpenSIPS formats end in "\n"; tracing adds its own line end.
        let line = line.strip_suffix('\n').unwrap_or(&line);
        match self.level {
            XlogLevel::Error => tracing::error!(target: "heptap::xlog", route, "{line}"),
            XlogLevel::Warn => tracing::warn!(target: "heptap::xlog", route, "{line}"),
            XlogLevel::Info => tracing::info!(target: "heptap::xlog", route, "{line}"),
            XlogLevel::Debug => tracing::debug!(target: "heptap::xlog", route, "{line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_text_is_what_display_writes_for_every_octet_value() {
        for n in 0..=255u8 {
            for ip in [
                Ipv4Addr::new(n, 0, 255, n),
                Ipv4Addr::new(9, n, 10, 99),
                Ipv4Addr::new(100, 1, n, 250),
            ] {
                let mut text = String::new();
                write_ipv4(ip, &mut text).unwrap();
                assert_eq!(text, ip.to_string());
            }
        }
    }
}
