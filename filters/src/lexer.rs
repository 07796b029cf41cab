//! Splits route text into tokens. Never fails: what it cannot read becomes an
//! [`Tok::Error`] token that the parser reports at the right place.

use std::fmt;

/// A string literal with its unescaped value and where each byte of the value came from, so
/// errors inside strings (an unknown `$var` in an `xlog` format) point at the right column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StrLit {
    /// The text after escape processing.
    pub(crate) value: String,
    /// For each byte of `value`, the byte offset in the source of the character it came from.
    pub(crate) origins: Vec<usize>,
}

impl StrLit {
    /// Source offset of byte `index` of the value (the closing quote when past the end).
    pub(crate) fn origin(&self, index: usize, fallback: usize) -> usize {
        self.origins.get(index).copied().unwrap_or(fallback)
    }
}

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A word: keyword, function or route name.
    Ident(String),
    /// `$name` or `$name(arg)`.
    Var { name: String, arg: Option<String> },
    /// A quoted string.
    Str(StrLit),
    /// A decimal integer.
    Int(i64),
    /// An unquoted IPv4 address or CIDR (`10.0.0.0/8`), as OpenSIPS accepts after `==`.
    Net(String),
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// `[`
    LBracket,
    /// `]`
    RBracket,
    /// `;`
    Semi,
    /// `,`
    Comma,
    /// `-` (only meaningful before an integer)
    Minus,
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
    /// `&&`
    And,
    /// `||`
    Or,
    /// `!`
    Not,
    /// Unreadable input, with the message to report.
    Error(String),
    /// End of the source.
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(word) => write!(f, "`{word}`"),
            Tok::Var { name, arg: None } => write!(f, "variable ${name}"),
            Tok::Var {
                name,
                arg: Some(arg),
            } => write!(f, "variable ${name}({arg})"),
            Tok::Str(_) => f.write_str("a string"),
            Tok::Int(n) => write!(f, "number {n}"),
            Tok::Net(net) => write!(f, "address {net}"),
            Tok::Error(message) => f.write_str(message),
            Tok::Eof => f.write_str("end of file"),
            punct => write!(f, "`{}`", punct_text(punct)),
        }
    }
}

/// The spelling of a punctuation token.
pub(crate) fn punct_text(tok: &Tok) -> &'static str {
    match tok {
        Tok::LParen => "(",
        Tok::RParen => ")",
        Tok::LBrace => "{",
        Tok::RBrace => "}",
        Tok::LBracket => "[",
        Tok::RBracket => "]",
        Tok::Semi => ";",
        Tok::Comma => ",",
        Tok::Minus => "-",
        Tok::Eq => "==",
        Tok::Ne => "!=",
        Tok::Match => "=~",
        Tok::NotMatch => "!~",
        Tok::Lt => "<",
        Tok::Le => "<=",
        Tok::Gt => ">",
        Tok::Ge => ">=",
        Tok::And => "&&",
        Tok::Or => "||",
        Tok::Not => "!",
        _ => "?",
    }
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// What it is.
    pub(crate) tok: Tok,
    /// Byte offset of its first character in the source.
    pub(crate) at: usize,
}

/// Tokenizes a whole source; the last token is always [`Tok::Eof`]. Lexing stops at the first
/// unterminated string or comment (the rest of the input is inside it).
pub(crate) fn lex(text: &str) -> Vec<Token> {
    let mut lexer = Lexer {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        tokens: Vec::new(),
    };
    lexer.run();
    lexer.tokens
}

/// Cursor over the source.
struct Lexer<'a> {
    /// The source.
    text: &'a str,
    /// The source as bytes (everything significant is ASCII).
    bytes: &'a [u8],
    /// Current byte offset.
    pos: usize,
    /// Tokens so far.
    tokens: Vec<Token>,
}

impl Lexer<'_> {
    fn run(&mut self) {
        loop {
            self.skip_blanks_and_comments();
            let at = self.pos;
            let Some(&byte) = self.bytes.get(at) else {
                self.push(Tok::Eof, at);
                return;
            };
            let tok = match byte {
                b'/' if self.peek(1) == Some(b'*') => {
                    // Only reached for an unterminated block comment.
                    self.pos = self.bytes.len();
                    Tok::Error("unterminated /* comment".into())
                }
                b'"' | b'\'' => self.string(byte),
                b'$' => self.variable(),
                b'0'..=b'9' => self.number(),
                b if b.is_ascii_alphabetic() || b == b'_' => {
                    Tok::Ident(self.take_while(|b| b.is_ascii_alphanumeric() || b == b'_'))
                }
                _ => self.punct(),
            };
            let stop = matches!(tok, Tok::Error(_)) && self.pos >= self.bytes.len();
            self.push(tok, at);
            if stop {
                self.push(Tok::Eof, self.bytes.len());
                return;
            }
        }
    }

    fn push(&mut self, tok: Tok, at: usize) {
        self.tokens.push(Token { tok, at });
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> String {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(|&b| keep(b)) {
            self.pos += 1;
        }
        self.text[start..self.pos].to_owned()
    }

    fn skip_blanks_and_comments(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b), _) if b.is_ascii_whitespace() => self.pos += 1,
                (Some(b'#'), _) | (Some(b'/'), Some(b'/')) => {
                    while self.peek(0).is_some_and(|b| b != b'\n') {
                        self.pos += 1;
                    }
                }
                (Some(b'/'), Some(b'*')) => match self.text[self.pos + 2..].find("*/") {
                    Some(end) => self.pos += 2 + end + 2,
                    None => return, // reported by run()
                },
                _ => return,
            }
        }
    }

    /// `"..."` with OpenSIPS's escapes (`\n \r \t \\ \"`; any other backslash is kept, so
    /// regexes like `"^10\.0\."` read as written), or `'...'` taken literally.
    fn string(&mut self, quote: u8) -> Tok {
        self.pos += 1;
        let mut lit = StrLit {
            value: String::new(),
            origins: Vec::new(),
        };
        loop {
            let here = self.pos;
            let Some(c) = self.text[here..].chars().next() else {
                self.pos = self.bytes.len();
                return Tok::Error("unterminated string".into());
            };
            self.pos += c.len_utf8();
            if c as u32 == u32::from(quote) {
                return Tok::Str(lit);
            }
            let out = if c == '\\' && quote == b'"' {
                match self.peek(0) {
                    Some(b'n') => Some('\n'),
                    Some(b'r') => Some('\r'),
                    Some(b't') => Some('\t'),
                    Some(b'\\') => Some('\\'),
                    Some(b'"') => Some('"'),
                    _ => None,
                }
            } else {
                None
            };
            let c = match out {
                Some(escaped) => {
                    self.pos += 1;
                    escaped
                }
                None => c,
            };
            lit.value.push(c);
            lit.origins.extend(std::iter::repeat_n(here, c.len_utf8()));
        }
    }

    /// `$name` or `$name(arg)`.
    fn variable(&mut self) -> Tok {
        self.pos += 1;
        if !self
            .peek(0)
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        {
            return Tok::Error("expected a variable name after `$`".into());
        }
        let name = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'_');
        if self.peek(0) != Some(b'(') {
            return Tok::Var { name, arg: None };
        }
        let open = self.pos;
        match self.text[open..].find([')', '\n']) {
            Some(close) if self.bytes[open + close] == b')' => {
                self.pos = open + close + 1;
                Tok::Var {
                    name,
                    arg: Some(self.text[open + 1..open + close].trim().to_owned()),
                }
            }
            _ => Tok::Error(format!("unterminated `${name}(`: missing `)`")),
        }
    }

    /// A decimal integer, or an unquoted IPv4 address / CIDR when a `.` follows the digits.
    fn number(&mut self) -> Tok {
        let digits = self.take_while(|b| b.is_ascii_digit());
        if self.peek(0) == Some(b'.') && self.peek(1).is_some_and(|b| b.is_ascii_digit()) {
            let rest = self.take_while(|b| b.is_ascii_digit() || b == b'.');
            let mut net = digits + &rest;
            if self.peek(0) == Some(b'/') && self.peek(1).is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
                net.push('/');
                net.push_str(&self.take_while(|b| b.is_ascii_digit()));
            }
            return Tok::Net(net);
        }
        match digits.parse::<i64>() {
            Ok(n) => Tok::Int(n),
            Err(_) => Tok::Error(format!("number {digits} is too large")),
        }
    }

    fn punct(&mut self) -> Tok {
        let two = (self.peek(0), self.peek(1));
        let (tok, len) = match two {
            (Some(b'='), Some(b'=')) => (Tok::Eq, 2),
            (Some(b'!'), Some(b'=')) => (Tok::Ne, 2),
            (Some(b'='), Some(b'~')) => (Tok::Match, 2),
            (Some(b'!'), Some(b'~')) => (Tok::NotMatch, 2),
            (Some(b'<'), Some(b'=')) => (Tok::Le, 2),
            (Some(b'>'), Some(b'=')) => (Tok::Ge, 2),
            (Some(b'&'), Some(b'&')) => (Tok::And, 2),
            (Some(b'|'), Some(b'|')) => (Tok::Or, 2),
            (Some(b'<'), _) => (Tok::Lt, 1),
            (Some(b'>'), _) => (Tok::Gt, 1),
            (Some(b'!'), _) => (Tok::Not, 1),
            (Some(b'('), _) => (Tok::LParen, 1),
            (Some(b')'), _) => (Tok::RParen, 1),
            (Some(b'{'), _) => (Tok::LBrace, 1),
            (Some(b'}'), _) => (Tok::RBrace, 1),
            (Some(b'['), _) => (Tok::LBracket, 1),
            (Some(b']'), _) => (Tok::RBracket, 1),
            (Some(b';'), _) => (Tok::Semi, 1),
            (Some(b','), _) => (Tok::Comma, 1),
            (Some(b'-'), _) => (Tok::Minus, 1),
            (Some(b'='), _) => (
                Tok::Error(
                    "unexpected `=` (assignments are not supported; did you mean `==`?)".into(),
                ),
                1,
            ),
            _ => {
                let c = self.text[self.pos..].chars().next().unwrap_or('?');
                self.pos += c.len_utf8();
                return Tok::Error(format!("unexpected character `{}`", c.escape_debug()));
            }
        };
        self.pos += len;
        tok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        lex(text).into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn comments_of_all_three_kinds_are_skipped() {
        assert_eq!(
            toks("# hash\n// slashes\n/* block\n */ exit"),
            [Tok::Ident("exit".into()), Tok::Eof]
        );
    }

    #[test]
    fn variables_take_an_optional_argument() {
        assert_eq!(
            toks("$si $socket_in(ip)"),
            [
                Tok::Var {
                    name: "si".into(),
                    arg: None
                },
                Tok::Var {
                    name: "socket_in".into(),
                    arg: Some("ip".into())
                },
                Tok::Eof
            ]
        );
    }

    #[test]
    fn double_quoted_strings_unescape_known_escapes_and_keep_others() {
        let [Tok::Str(lit), Tok::Eof] = &toks(r#""a\n\"b\"\.c""#)[..] else {
            panic!("expected one string");
        };
        assert_eq!(lit.value, "a\n\"b\"\\.c");
    }

    #[test]
    fn single_quoted_strings_are_literal() {
        let [Tok::Str(lit), Tok::Eof] = &toks(r"'a\n'")[..] else {
            panic!("expected one string");
        };
        assert_eq!(lit.value, "a\\n");
    }

    #[test]
    fn string_origins_point_into_the_source() {
        let text = r#"  "x\ny$si""#;
        let [
            Token {
                tok: Tok::Str(lit), ..
            },
            ..,
        ] = &lex(text)[..]
        else {
            panic!("expected a string");
        };
        let dollar = lit.value.find('$').unwrap();
        assert_eq!(lit.origin(dollar, 0), text.find('$').unwrap());
    }

    #[test]
    fn unquoted_ipv4_addresses_and_cidrs_are_one_token() {
        assert_eq!(
            toks("10.0.0.0/8 192.0.2.1 5060"),
            [
                Tok::Net("10.0.0.0/8".into()),
                Tok::Net("192.0.2.1".into()),
                Tok::Int(5060),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn two_character_operators_win_over_one_character_ones() {
        assert_eq!(
            toks("== != =~ !~ <= >= && || < > !"),
            [
                Tok::Eq,
                Tok::Ne,
                Tok::Match,
                Tok::NotMatch,
                Tok::Le,
                Tok::Ge,
                Tok::And,
                Tok::Or,
                Tok::Lt,
                Tok::Gt,
                Tok::Not,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn unreadable_input_becomes_error_tokens_and_lexing_ends_at_unterminated_strings() {
        let tokens = toks("@ \"open");
        assert!(matches!(&tokens[0], Tok::Error(m) if m.contains('@')));
        assert!(matches!(&tokens[1], Tok::Error(m) if m.contains("unterminated string")));
        assert_eq!(tokens[2], Tok::Eof);
        assert_eq!(tokens.len(), 3);
    }

    #[test]
    fn unterminated_block_comment_is_an_error() {
        let tokens = toks("exit /* never closed");
        assert!(matches!(&tokens[1], Tok::Error(m) if m.contains("/*")));
        assert_eq!(tokens[2], Tok::Eof);
    }
}
