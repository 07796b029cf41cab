//! Tokens to syntax tree. A syntax error abandons the route it is in (the parser skips to the
//! route's closing brace) and parsing goes on with the next route, so one load reports the
//! problems of every route.

use crate::ast::{CmpOp, ExprAst, Operand, RouteAst, StmtAst};
use crate::lexer::{Tok, Token};

/// How deep blocks, parentheses and `!` may nest. Compiling and evaluating recurse along the
/// nesting, so bounding it bounds their stack use (and keeps fuzzed input from overflowing it).
pub(crate) const MAX_NESTING: usize = 32;

/// A syntax error: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// Byte offset in the source.
    pub(crate) at: usize,
    /// The message.
    pub(crate) message: String,
}

/// What a source parsed into.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// Routes that parsed completely.
    pub(crate) routes: Vec<RouteAst>,
    /// Names (and offsets) of routes abandoned on a syntax error, so calls to them are not also
    /// reported as calls to unknown routes.
    pub(crate) broken: Vec<(String, usize)>,
    /// The syntax errors, one per abandoned route or stray top-level text.
    pub(crate) errors: Vec<SyntaxError>,
}

/// Parses a whole token stream (ending with `Eof`).
pub(crate) fn parse(tokens: &[Token]) -> Parsed {
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let mut parsed = Parsed::default();
    loop {
        let start = parser.pos;
        match parser.peek() {
            Tok::Eof => return parsed,
            Tok::Ident(word) if word == "route" => {
                parser.depth = 0;
                let mut name = None;
                match parser.route(&mut name) {
                    Ok(route) => parsed.routes.push(route),
                    Err(error) => {
                        parsed.errors.push(error);
                        if let Some(name) = name {
                            parsed.broken.push(name);
                        }
                        parser.recover(start + 1);
                    }
                }
            }
            other => {
                let message = match other {
                    Tok::Ident(word) if word.ends_with("route") => format!(
                        "only route[name] blocks are supported in filter routes, found `{word}`"
                    ),
                    Tok::Error(message) => message.clone(),
                    other => format!("expected `route[name] {{ ... }}`, found {other}"),
                };
                parsed.errors.push(SyntaxError {
                    at: parser.at(),
                    message,
                });
                parser.recover(start + 1);
            }
        }
    }
}

/// Cursor over the tokens.
struct Parser<'t> {
    /// All tokens of the source, ending with `Eof`.
    tokens: &'t [Token],
    /// Index of the next token.
    pos: usize,
    /// Current nesting, checked against [`MAX_NESTING`].
    depth: usize,
}

type PResult<T> = Result<T, SyntaxError>;

impl Parser<'_> {
    fn token(&self) -> &Token {
        // `pos` never passes the final Eof, which `lex` always emits; an empty slice only
        // happens if a caller forgets it, and then this keeps the parser total.
        const EOF: Token = Token {
            tok: Tok::Eof,
            at: 0,
        };
        self.tokens
            .get(self.pos)
            .or_else(|| self.tokens.last())
            .unwrap_or(&EOF)
    }

    fn peek(&self) -> &Tok {
        &self.token().tok
    }

    fn peek_ahead(&self, ahead: usize) -> &Tok {
        self.tokens
            .get(self.pos + ahead)
            .map_or(&Tok::Eof, |token| &token.tok)
    }

    fn at(&self) -> usize {
        self.token().at
    }

    fn bump(&mut self) -> Token {
        let token = self.token().clone();
        if self.pos < self.tokens.len().saturating_sub(1) {
            self.pos += 1;
        }
        token
    }

    fn error<T>(&self, expected: &str) -> PResult<T> {
        let message = match self.peek() {
            // The lexer's message says it better than "expected x".
            Tok::Error(message) => message.clone(),
            found => format!("expected {expected}, found {found}"),
        };
        Err(SyntaxError {
            at: self.at(),
            message,
        })
    }

    fn expect(&mut self, want: &Tok, expected: &str) -> PResult<Token> {
        if self.peek() == want {
            Ok(self.bump())
        } else {
            self.error(expected)
        }
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w == word)
    }

    fn nest(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(SyntaxError {
                at: self.at(),
                message: format!("nesting deeper than {MAX_NESTING} levels"),
            });
        }
        Ok(())
    }

    fn unnest(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Skips what is left of a broken top-level item: up to and including the closing brace of
    /// the first block that opens, or up to the next `route` at the top level.
    fn recover(&mut self, from: usize) {
        self.pos = from.min(self.tokens.len().saturating_sub(1));
        let mut depth = 0usize;
        loop {
            match self.peek() {
                Tok::Eof => return,
                Tok::LBrace => depth += 1,
                Tok::RBrace if depth <= 1 => {
                    self.bump();
                    if depth == 1 {
                        return;
                    }
                    continue;
                }
                Tok::RBrace => depth -= 1,
                Tok::Ident(word) if word == "route" && depth == 0 => return,
                _ => {}
            }
            self.bump();
        }
    }

    /// `route[name] { body }`; `name` is filled in as soon as it is known.
    fn route(&mut self, name: &mut Option<(String, usize)>) -> PResult<RouteAst> {
        self.bump(); // `route`
        self.expect(&Tok::LBracket, "`[` after `route`")?;
        let name_at = self.at();
        let route_name = self.route_name()?;
        *name = Some((route_name.clone(), name_at));
        self.expect(&Tok::RBracket, "`]` after the route name")?;
        self.expect(&Tok::LBrace, "`{` to open the route body")?;
        let body = self.block_body()?;
        Ok(RouteAst {
            name: route_name,
            name_at,
            body,
        })
    }

    /// A route name: a word, a number, or a quoted string.
    fn route_name(&mut self) -> PResult<String> {
        match self.peek().clone() {
            Tok::Ident(word) => {
                self.bump();
                Ok(word)
            }
            Tok::Int(n) => {
                self.bump();
                Ok(n.to_string())
            }
            Tok::Str(lit) if !lit.value.is_empty() => {
                self.bump();
                Ok(lit.value)
            }
            _ => self.error("a route name"),
        }
    }

    /// Statements up to and including the closing `}`.
    fn block_body(&mut self) -> PResult<Vec<StmtAst>> {
        self.nest()?;
        let mut body = Vec::new();
        loop {
            match self.peek() {
                Tok::RBrace => {
                    self.bump();
                    self.unnest();
                    return Ok(body);
                }
                Tok::Eof => return self.error("`}` to close the block"),
                _ => {
                    if let Some(stmt) = self.statement()? {
                        body.push(stmt);
                    }
                }
            }
        }
    }

    /// The body of an `if`/`else`: a braced block or a single statement (OpenSIPS allows
    /// `if (cond) drop;`).
    fn branch(&mut self) -> PResult<Vec<StmtAst>> {
        if *self.peek() == Tok::LBrace {
            self.bump();
            return self.block_body();
        }
        self.nest()?;
        let stmt = self.statement()?;
        self.unnest();
        Ok(stmt.into_iter().collect())
    }

    /// One statement; `None` for an empty `;`.
    fn statement(&mut self) -> PResult<Option<StmtAst>> {
        let word = match self.peek() {
            Tok::Semi => {
                self.bump();
                return Ok(None);
            }
            Tok::LBrace => {
                self.bump();
                return Ok(Some(StmtAst::Block(self.block_body()?)));
            }
            Tok::Ident(word) => word.clone(),
            _ => return self.error("a statement"),
        };
        let stmt = match word.as_str() {
            "if" => return self.if_chain().map(Some),
            "else" => {
                return Err(SyntaxError {
                    at: self.at(),
                    message: "`else` without a matching `if`".into(),
                });
            }
            "exit" => {
                self.bump();
                self.empty_parens()?;
                StmtAst::Exit
            }
            "drop" => {
                self.bump();
                self.empty_parens()?;
                StmtAst::Drop
            }
            "return" => {
                self.bump();
                StmtAst::Return(self.return_value()?)
            }
            "route" if *self.peek_ahead(1) == Tok::LParen => {
                self.bump();
                self.bump();
                let at = self.at();
                let name = self.route_name()?;
                self.expect(&Tok::RParen, "`)` after the route name")?;
                StmtAst::RouteCall { name, at }
            }
            _ if *self.peek_ahead(1) == Tok::LParen => {
                let at = self.at();
                self.bump();
                let args = self.arguments()?;
                StmtAst::Call {
                    name: word,
                    args,
                    at,
                }
            }
            _ => return self.error("a statement"),
        };
        self.expect(&Tok::Semi, "`;` after the statement")?;
        Ok(Some(stmt))
    }

    /// Optional `()` after `exit` / `drop`.
    fn empty_parens(&mut self) -> PResult<()> {
        if *self.peek() == Tok::LParen {
            self.bump();
            self.expect(&Tok::RParen, "`)`")?;
        }
        Ok(())
    }

    /// `return`, `return()`, `return(n)`, `return(-n)`; a bare return returns 1.
    fn return_value(&mut self) -> PResult<i64> {
        if *self.peek() != Tok::LParen {
            return Ok(1);
        }
        self.bump();
        let value = match self.peek().clone() {
            Tok::RParen => 1,
            Tok::Int(n) => {
                self.bump();
                n
            }
            Tok::Minus => {
                self.bump();
                match self.peek().clone() {
                    Tok::Int(n) => {
                        self.bump();
                        -n
                    }
                    _ => return self.error("a number after `-`"),
                }
            }
            _ => return self.error("a number in `return(...)`"),
        };
        self.expect(&Tok::RParen, "`)` after the return value")?;
        Ok(value)
    }

    /// `if (cond) body [else if (cond) body]* [else body]`, kept flat.
    fn if_chain(&mut self) -> PResult<StmtAst> {
        let mut arms = Vec::new();
        let mut otherwise = Vec::new();
        loop {
            self.bump(); // `if`
            self.expect(&Tok::LParen, "`(` after `if`")?;
            let cond = self.expr()?;
            self.expect(&Tok::RParen, "`)` to close the condition")?;
            let body = self.branch()?;
            arms.push((cond, body));
            if !self.is_word("else") {
                break;
            }
            self.bump();
            if !self.is_word("if") {
                otherwise = self.branch()?;
                break;
            }
        }
        Ok(StmtAst::If { arms, otherwise })
    }

    /// `a || b || ...`
    fn expr(&mut self) -> PResult<ExprAst> {
        let mut terms = vec![self.conjunction()?];
        while *self.peek() == Tok::Or {
            self.bump();
            terms.push(self.conjunction()?);
        }
        Ok(flatten(terms, ExprAst::Any))
    }

    /// `a && b && ...`
    fn conjunction(&mut self) -> PResult<ExprAst> {
        let mut terms = vec![self.unary()?];
        while *self.peek() == Tok::And {
            self.bump();
            terms.push(self.unary()?);
        }
        Ok(flatten(terms, ExprAst::All))
    }

    /// `!a` or a primary.
    fn unary(&mut self) -> PResult<ExprAst> {
        if *self.peek() == Tok::Not {
            self.bump();
            self.nest()?;
            let inner = self.unary()?;
            self.unnest();
            return Ok(ExprAst::Not(Box::new(inner)));
        }
        self.primary()
    }

    /// `( expr )`, or an operand optionally compared with another.
    fn primary(&mut self) -> PResult<ExprAst> {
        if *self.peek() == Tok::LParen {
            self.bump();
            self.nest()?;
            let inner = self.expr()?;
            self.unnest();
            self.expect(&Tok::RParen, "`)` to close the parenthesis")?;
            return Ok(inner);
        }
        let lhs = self.operand()?;
        let op = match self.peek() {
            Tok::Eq => CmpOp::Eq,
            Tok::Ne => CmpOp::Ne,
            Tok::Match => CmpOp::Match,
            Tok::NotMatch => CmpOp::NotMatch,
            Tok::Lt => CmpOp::Lt,
            Tok::Le => CmpOp::Le,
            Tok::Gt => CmpOp::Gt,
            Tok::Ge => CmpOp::Ge,
            _ => return Ok(ExprAst::Operand(lhs)),
        };
        let at = self.at();
        self.bump();
        let rhs = self.operand()?;
        Ok(ExprAst::Cmp { lhs, op, rhs, at })
    }

    /// A variable, a literal, or a function call.
    fn operand(&mut self) -> PResult<Operand> {
        let at = self.at();
        match self.peek().clone() {
            Tok::Var { name, arg } => {
                self.bump();
                Ok(Operand::Var { name, arg, at })
            }
            Tok::Str(lit) => {
                self.bump();
                Ok(Operand::Str(lit, at))
            }
            Tok::Int(n) => {
                self.bump();
                Ok(Operand::Int(n, at))
            }
            Tok::Minus => {
                self.bump();
                match self.peek().clone() {
                    Tok::Int(n) => {
                        self.bump();
                        Ok(Operand::Int(-n, at))
                    }
                    _ => self.error("a number after `-`"),
                }
            }
            Tok::Net(net) => {
                self.bump();
                Ok(Operand::Net(net, at))
            }
            Tok::Ident(name) if *self.peek_ahead(1) == Tok::LParen => {
                self.bump();
                self.nest()?;
                let args = self.arguments()?;
                self.unnest();
                Ok(Operand::Call { name, args, at })
            }
            _ => self.error("a variable, a string, a number or a function call"),
        }
    }

    /// `( arg, arg, ... )`, the `(` not yet consumed.
    fn arguments(&mut self) -> PResult<Vec<Operand>> {
        self.expect(&Tok::LParen, "`(`")?;
        let mut args = Vec::new();
        if *self.peek() == Tok::RParen {
            self.bump();
            return Ok(args);
        }
        loop {
            args.push(self.operand()?);
            match self.peek() {
                Tok::Comma => {
                    self.bump();
                }
                Tok::RParen => {
                    self.bump();
                    return Ok(args);
                }
                _ => return self.error("`,` or `)` in the argument list"),
            }
        }
    }
}

/// One term stays itself; several become the flat node.
fn flatten(mut terms: Vec<ExprAst>, node: fn(Vec<ExprAst>) -> ExprAst) -> ExprAst {
    if terms.len() == 1
        && let Some(term) = terms.pop()
    {
        return term;
    }
    node(terms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::lex;

    fn parse_text(text: &str) -> Parsed {
        parse(&lex(text))
    }

    fn first_error(text: &str) -> (usize, String) {
        let parsed = parse_text(text);
        let error = parsed.errors.first().expect("a syntax error").clone();
        (error.at, error.message)
    }

    #[test]
    fn braceless_if_takes_one_statement() {
        let parsed = parse_text("route[f] { if ($si == \"1.2.3.4\") drop; exit; }");
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let body = &parsed.routes[0].body;
        assert_eq!(body.len(), 2);
        let StmtAst::If { arms, otherwise } = &body[0] else {
            panic!("expected if");
        };
        assert_eq!(arms.len(), 1);
        assert!(matches!(arms[0].1[..], [StmtAst::Drop]));
        assert!(otherwise.is_empty());
    }

    #[test]
    fn else_if_chains_stay_flat() {
        let parsed = parse_text(
            "route[f] { if (1) exit; else if (0) drop; else if (1) return; else drop; }",
        );
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let StmtAst::If { arms, otherwise } = &parsed.routes[0].body[0] else {
            panic!("expected if");
        };
        assert_eq!(arms.len(), 3);
        assert!(matches!(otherwise[..], [StmtAst::Drop]));
    }

    #[test]
    fn or_binds_looser_than_and() {
        let parsed = parse_text("route[f] { if (1 || 0 && 0) drop; }");
        let StmtAst::If { arms, .. } = &parsed.routes[0].body[0] else {
            panic!("expected if");
        };
        let ExprAst::Any(terms) = &arms[0].0 else {
            panic!("expected ||, got {:?}", arms[0].0);
        };
        assert!(matches!(terms[..], [ExprAst::Operand(_), ExprAst::All(_)]));
    }

    #[test]
    fn a_syntax_error_abandons_only_its_route() {
        let parsed = parse_text("route[a] { if ($si == ) drop; }\nroute[b] { drop; }");
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(parsed.routes.len(), 1);
        assert_eq!(parsed.routes[0].name, "b");
        assert_eq!(parsed.broken[0].0, "a");
    }

    #[test]
    fn missing_semicolon_is_reported_at_the_next_token() {
        let text = "route[a] {\n  drop\n}";
        let (at, message) = first_error(text);
        assert_eq!(at, text.rfind('}').unwrap());
        assert_eq!(message, "expected `;` after the statement, found `}`");
    }

    #[test]
    fn other_opensips_route_kinds_are_refused_by_name() {
        let (_, message) = first_error("onreply_route[x] { exit; }");
        assert_eq!(
            message,
            "only route[name] blocks are supported in filter routes, found `onreply_route`"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!(
            "route[a] {{ if ({}1{}) drop; }}",
            "(".repeat(100),
            ")".repeat(100)
        );
        let (_, message) = first_error(&deep);
        assert_eq!(message, format!("nesting deeper than {MAX_NESTING} levels"));
    }

    #[test]
    fn long_and_chains_do_not_count_as_nesting() {
        let long = format!("route[a] {{ if (1{}) drop; }}", " && 1".repeat(1000));
        assert!(parse_text(&long).errors.is_empty());
    }

    #[test]
    fn route_names_may_be_words_numbers_or_strings() {
        let parsed = parse_text("route[a_1] {} route[2] {} route[\"net filter\"] {}");
        let names: Vec<_> = parsed.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a_1", "2", "net filter"]);
    }
}
