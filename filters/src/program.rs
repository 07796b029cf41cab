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
}

/// All routes of one compilation; route calls index into `routes`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Program {
    /// The routes, in definition order.
    pub(crate) routes: Vec<CompiledRoute>,
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
    pub(crate) fn run(&self, index: usize, facts: &Facts) -> Flow {
        let Some(route) = self.routes.get(index) else {
            return Flow::Next;
        };
        self.block(&route.body, facts, &route.name)
    }

    fn block(&self, body: &[Stmt], facts: &Facts, route: &str) -> Flow {
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
    pub(crate) fn holds(&self, facts: &Facts) -> bool {
        match self {
            Cond::Const(value) => *value,
            Cond::Not(inner) => !inner.holds(facts),
            Cond::All(terms) => terms.iter().all(|term| term.holds(facts)),
            Cond::Any(terms) => terms.iter().any(|term| term.holds(facts)),
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
            Cond::Matches { var, re, matching } => {
                let mut text = StackText::new();
                // Every variable's text fits the buffer (an IPv6 address is at most 45 bytes);
                // were it ever cut short, matching the prefix is the best effort left.
                let _ = facts.write_var(*var, &mut text);
                re.is_match(text.as_str()) == *matching
            }
            Cond::InSubnet { var, nets } => nets.contains(facts.ip(*var)),
            Cond::InGroup { nets } => nets.contains(facts.si),
        }
    }
}

impl Xlog {
    /// Formats the line and logs it through `tracing` under the `heptap::xlog` target.
    fn emit(&self, facts: &Facts, route: &str) {
        let mut line = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => line.push_str(text),
                Piece::Var(var) => {
                    let _ = facts.write_var(*var, &mut line);
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
