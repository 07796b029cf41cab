//! The syntax tree as written, before names and types are checked. Every node keeps the byte
//! offset it came from so the compiler can point at it.

use crate::lexer::StrLit;

/// One `route[name] { ... }` block.
#[derive(Debug, Clone)]
pub(crate) struct RouteAst {
    /// The route's name.
    pub(crate) name: String,
    /// Offset of the name, for "defined twice" errors.
    pub(crate) name_at: usize,
    /// The statements of the body.
    pub(crate) body: Vec<StmtAst>,
}

/// A statement.
#[derive(Debug, Clone)]
pub(crate) enum StmtAst {
    /// `if (..) .. else if (..) .. else ..`, with the `else if` chain kept flat so a long chain
    /// does not nest.
    If {
        /// Conditions and their bodies, tried in order.
        arms: Vec<(ExprAst, Vec<StmtAst>)>,
        /// The final `else` body (empty when absent).
        otherwise: Vec<StmtAst>,
    },
    /// A bare `{ ... }` block.
    Block(Vec<StmtAst>),
    /// `exit;`
    Exit,
    /// `drop;`
    Drop,
    /// `return;` (value 1) or `return(n);`
    Return(i64),
    /// `route(name);`
    RouteCall {
        /// The called route.
        name: String,
        /// Offset of the name.
        at: usize,
    },
    /// `function(args);`: `xlog` and friends.
    Call {
        /// Function name.
        name: String,
        /// Arguments as written.
        args: Vec<Operand>,
        /// Offset of the name.
        at: usize,
    },
}

/// A boolean expression.
#[derive(Debug, Clone)]
pub(crate) enum ExprAst {
    /// `a || b || ...` (flat).
    Any(Vec<ExprAst>),
    /// `a && b && ...` (flat).
    All(Vec<ExprAst>),
    /// `!a`
    Not(Box<ExprAst>),
    /// `lhs op rhs`
    Cmp {
        /// Left operand.
        lhs: Operand,
        /// The operator.
        op: CmpOp,
        /// Right operand.
        rhs: Operand,
        /// Offset of the operator.
        at: usize,
    },
    /// An operand used as a condition on its own (a function call, a number).
    Operand(Operand),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `=~`
    Match,
    /// `!~`
    NotMatch,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// How the operator is written.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Match => "=~",
            CmpOp::NotMatch => "!~",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A value in an expression or an argument list.
#[derive(Debug, Clone)]
pub(crate) enum Operand {
    /// `$name` or `$name(arg)`.
    Var {
        /// Name after `$`.
        name: String,
        /// The parenthesised argument, if any.
        arg: Option<String>,
        /// Offset of the `$`.
        at: usize,
    },
    /// A quoted string.
    Str(StrLit, usize),
    /// An integer (possibly negative).
    Int(i64, usize),
    /// An unquoted IPv4 address or CIDR.
    Net(String, usize),
    /// `name(args)`.
    Call {
        /// Function name.
        name: String,
        /// Arguments.
        args: Vec<Operand>,
        /// Offset of the name.
        at: usize,
    },
}

impl Operand {
    /// Offset of the operand's first character.
    pub(crate) fn at(&self) -> usize {
        match self {
            Operand::Var { at, .. }
            | Operand::Str(_, at)
            | Operand::Int(_, at)
            | Operand::Net(_, at)
            | Operand::Call { at, .. } => *at,
        }
    }
}
