//! Byte-at-a-time scanners the FIFO framing runs over a request: JSON syntax (where a body
//! stops being JSON), bracket depth (where a body that is not JSON ends) and request headers
//! (`:NAME:`, where the next request may begin). Each takes one byte at a time, so what they
//! find never depends on how the reads split the stream.

/// Longest name in a request header (NAME_MAX): the reply FIFO (3.x) or the command (2.x).
pub(crate) const MAX_NAME: usize = 255;

/// Deepest JSON nesting checked; deeper counts as not JSON (serde_json stops at 128 anyway).
const MAX_DEPTH: usize = 256;

/// Whether `b` may be part of a header's name: not blank, not a control, not `:` and not JSON
/// punctuation (so JSON text is never read as a name).
pub(crate) fn is_name_byte(b: u8) -> bool {
    !b.is_ascii_whitespace()
        && !b.is_ascii_control()
        && !matches!(b, b':' | b'"' | b'{' | b'}' | b'[' | b']' | b',')
}

/// What the bytes at a `:` say about a request header starting there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `:NAME:`, NAME of 1 to 255 name bytes.
    Header,
    /// Not a header.
    NotHeader,
    /// Still a name when the bytes run out.
    Unknown,
}

/// Whether a request header (`:NAME:`) starts at `bytes[0]`.
pub(crate) fn header_shape(bytes: &[u8]) -> Shape {
    let Some((b':', rest)) = bytes.split_first() else {
        return Shape::NotHeader;
    };
    for (k, &b) in rest.iter().enumerate() {
        if b == b':' {
            return if k > 0 {
                Shape::Header
            } else {
                Shape::NotHeader
            };
        }
        if !is_name_byte(b) || k == MAX_NAME {
            return Shape::NotHeader;
        }
    }
    Shape::Unknown
}

/// Follows the request headers that begin inside a request's bytes ([`header_shape`], one byte
/// at a time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeaderTrack {
    /// The newest `:` and how many name bytes follow it, while it can still start a header.
    pub open: Option<(usize, usize)>,
    /// Where the last header found starts.
    pub last: Option<usize>,
}

impl HeaderTrack {
    /// Takes the byte at `pos`; returns where a header starts when this byte completes one.
    pub fn feed(&mut self, pos: usize, b: u8) -> Option<usize> {
        let mut found = None;
        if let Some((start, len)) = self.open {
            self.open = if b == b':' {
                if len > 0 {
                    found = Some(start);
                    self.last = found;
                }
                None
            } else if is_name_byte(b) && len < MAX_NAME {
                Some((start, len + 1))
            } else {
                None
            };
        }
        if b == b':' {
            self.open = Some((pos, 0));
        }
        found
    }

    /// Where the header being read starts, if one may be.
    pub fn open_start(&self) -> Option<usize> {
        self.open.map(|(start, _)| start)
    }
}

/// Finds where a value that starts with `{` or `[` ends by its brackets (strings skipped),
/// whether or not it is JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Brackets {
    /// Open brackets not yet closed.
    depth: usize,
    /// Inside a string, where brackets do not count.
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escape: bool,
}

impl Brackets {
    /// Takes one byte; true when it closes the outermost bracket.
    pub fn feed(&mut self, b: u8) -> bool {
        if self.in_string {
            if self.escape {
                self.escape = false;
            } else if b == b'\\' {
                self.escape = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return false;
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' if self.depth > 0 => {
                self.depth -= 1;
                return self.depth == 0;
            }
            _ => {}
        }
        false
    }
}

/// What one byte did to the JSON syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Still JSON, not finished.
    More,
    /// This byte ends the value.
    End,
    /// This byte cannot follow what came before in JSON.
    Invalid,
}

/// Where a number is (RFC 8259: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpInt,
}

impl Num {
    /// The state after `b`, or `None` when `b` is not part of the number.
    fn next(self, b: u8) -> Option<Num> {
        use Num::*;
        Some(match (self, b) {
            (Minus, b'0') => Zero,
            (Minus, b'1'..=b'9') | (Int, b'0'..=b'9') => Int,
            (Zero | Int, b'.') => Dot,
            (Dot | Frac, b'0'..=b'9') => Frac,
            (Zero | Int | Frac, b'e' | b'E') => Exp,
            (Exp, b'+' | b'-') => ExpSign,
            (Exp | ExpSign | ExpInt, b'0'..=b'9') => ExpInt,
            _ => return None,
        })
    }

    /// Whether the number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpInt)
    }
}

/// Where the JSON syntax is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Syn {
    /// A value is expected (`]` too, right after `[`).
    Value { close_ok: bool },
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value: `,` or the closing bracket.
    After,
    /// Inside a string (a key or a value).
    Str { key: bool },
    /// After a backslash in a string.
    Esc { key: bool },
    /// Inside `\uXXXX`, with this many hex digits to come.
    Hex { key: bool, left: u8 },
    /// Inside a number.
    Num(Num),
    /// Inside `true`, `false` or `null`, with these bytes to come.
    Lit(&'static [u8]),
}

/// Checks JSON syntax (RFC 8259, any bytes from 0x80 taken as they are) one byte at a time, to
/// find where a body stops being JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JsonSyntax {
    /// Open containers, innermost last: true for an object.
    stack: Vec<bool>,
    /// Where the syntax is.
    state: Syn,
}

impl Default for JsonSyntax {
    fn default() -> Self {
        JsonSyntax {
            stack: Vec::new(),
            state: Syn::Value { close_ok: false },
        }
    }
}

impl JsonSyntax {
    /// Takes one byte.
    pub fn feed(&mut self, b: u8) -> Step {
        let blank = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        match self.state {
            Syn::Num(n) => match n.next(b) {
                Some(n) => self.go(Syn::Num(n)),
                // A number ends at the byte after it, which is then read as what follows it.
                None if n.complete() => {
                    self.state = Syn::After;
                    self.feed(b)
                }
                None => Step::Invalid,
            },
            Syn::Value { close_ok } => match b {
                _ if blank => Step::More,
                b'{' => self.open(true, Syn::KeyOrEnd),
                b'[' => self.open(false, Syn::Value { close_ok: true }),
                b'"' => self.go(Syn::Str { key: false }),
                b'-' => self.go(Syn::Num(Num::Minus)),
                b'0' => self.go(Syn::Num(Num::Zero)),
                b'1'..=b'9' => self.go(Syn::Num(Num::Int)),
                b't' => self.go(Syn::Lit(b"rue")),
                b'f' => self.go(Syn::Lit(b"alse")),
                b'n' => self.go(Syn::Lit(b"ull")),
                b']' if close_ok => self.close(),
                _ => Step::Invalid,
            },
            Syn::KeyOrEnd => match b {
                _ if blank => Step::More,
                b'"' => self.go(Syn::Str { key: true }),
                b'}' => self.close(),
                _ => Step::Invalid,
            },
            Syn::Key => match b {
                _ if blank => Step::More,
                b'"' => self.go(Syn::Str { key: true }),
                _ => Step::Invalid,
            },
            Syn::Colon => match b {
                _ if blank => Step::More,
                b':' => self.go(Syn::Value { close_ok: false }),
                _ => Step::Invalid,
            },
            Syn::After => {
                let in_object = self.stack.last().copied();
                match (b, in_object) {
                    _ if blank => Step::More,
                    (b',', Some(true)) => self.go(Syn::Key),
                    (b',', Some(false)) => self.go(Syn::Value { close_ok: false }),
                    (b'}', Some(true)) | (b']', Some(false)) => self.close(),
                    _ => Step::Invalid,
                }
            }
            Syn::Str { key } => match b {
                b'"' if key => self.go(Syn::Colon),
                b'"' => self.value_done(),
                b'\\' => self.go(Syn::Esc { key }),
                0..0x20 => Step::Invalid,
                _ => Step::More,
            },
            Syn::Esc { key } => match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.go(Syn::Str { key }),
                b'u' => self.go(Syn::Hex { key, left: 4 }),
                _ => Step::Invalid,
            },
            Syn::Hex { key, left } if b.is_ascii_hexdigit() => match left {
                1 => self.go(Syn::Str { key }),
                _ => self.go(Syn::Hex {
                    key,
                    left: left - 1,
                }),
            },
            Syn::Hex { .. } => Step::Invalid,
            Syn::Lit(rest) => match rest.split_first() {
                Some((&next, [])) if next == b => self.value_done(),
                Some((&next, more)) if next == b => self.go(Syn::Lit(more)),
                _ => Step::Invalid,
            },
        }
    }

    fn go(&mut self, state: Syn) -> Step {
        self.state = state;
        Step::More
    }

    fn open(&mut self, object: bool, state: Syn) -> Step {
        if self.stack.len() == MAX_DEPTH {
            return Step::Invalid;
        }
        self.stack.push(object);
        self.go(state)
    }

    fn close(&mut self) -> Step {
        self.stack.pop();
        self.value_done()
    }

    /// A value is complete: the whole body when it was the outermost one.
    fn value_done(&mut self) -> Step {
        if self.stack.is_empty() {
            Step::End
        } else {
            self.go(Syn::After)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where `text` ends as JSON, or the byte where it stops being JSON, or neither.
    fn syntax(text: &str) -> (Step, usize) {
        let mut s = JsonSyntax::default();
        for (i, &b) in text.as_bytes().iter().enumerate() {
            match s.feed(b) {
                Step::More => {}
                step => return (step, i),
            }
        }
        (Step::More, text.len())
    }

    #[test]
    fn json_bodies_end_at_their_last_bracket() {
        for body in [
            r#"{}"#,
            r#"[]"#,
            r#"{"jsonrpc": "2.0", "id": "6204", "method": "sip_trace", "params": ["tid2", "off"]}"#,
            r#"{"a":[1,-2.5e+3,0,true,false,null,{"b":"\"\\\/\b\f\n\r\tx\u00e9"}],"c":{}}"#,
            "{\"é\":\"\u{1F600}\"}",
            r#"[[[],[{}]],0.5,1E9]"#,
        ] {
            assert_eq!(syntax(body), (Step::End, body.len() - 1), "{body}");
        }
    }

    #[test]
    fn a_body_stops_being_json_at_the_first_byte_that_cannot_follow() {
        for (body, at) in [
            (r#"{not json}"#, 1),
            (r#"{"id"::p:{"#, 6),
            (r#"{"id":1:p:{"#, 7),
            (r#"{"id":tr:p"#, 8),
            (r#"{"m":"p\:"#, 8),
            (r#"{"m":"p:p1:{"jsonrpc""#, 13),
            (r#"{"a":01}"#, 6),
            (r#"{"a":1.}"#, 7),
            (r#"{"a" 1}"#, 5),
            (r#"[1,]"#, 3),
            (r#"{"a":1,}"#, 7),
            ("{\"a\n\"}", 3),
            (r#"{"a":"\u12g4"}"#, 10),
        ] {
            let (step, i) = syntax(body);
            assert_eq!((step, i), (Step::Invalid, at), "{body}");
        }
        // `{}}`: the value ended at byte 1; what follows is not the body's business.
        assert_eq!(syntax("{}}"), (Step::End, 1));
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_not_json() {
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(syntax(&deep), (Step::Invalid, MAX_DEPTH));
    }

    #[test]
    fn header_shapes() {
        assert_eq!(header_shape(b":r:{"), Shape::Header);
        assert_eq!(header_shape(b":sip_trace:reply\n"), Shape::Header);
        assert_eq!(header_shape(b"::{"), Shape::NotHeader);
        assert_eq!(header_shape(b":\"a\":"), Shape::NotHeader);
        assert_eq!(header_shape(b":a b:"), Shape::NotHeader);
        assert_eq!(header_shape(b":abc\n"), Shape::NotHeader);
        assert_eq!(header_shape(b":abc"), Shape::Unknown);
        assert_eq!(header_shape(b"x:a:"), Shape::NotHeader);
        let longest = format!(":{}:", "n".repeat(MAX_NAME));
        assert_eq!(header_shape(longest.as_bytes()), Shape::Header);
        let longer = format!(":{}:", "n".repeat(MAX_NAME + 1));
        assert_eq!(header_shape(longer.as_bytes()), Shape::NotHeader);
    }

    #[test]
    fn the_tracker_finds_the_headers_header_shape_finds() {
        let text: &[u8] = b"{\"a\":1:p1:{\"x::y:\":[:q:]}:longer_name:";
        let mut track = HeaderTrack::default();
        let found: Vec<usize> = text
            .iter()
            .enumerate()
            .filter_map(|(i, &b)| track.feed(i, b))
            .collect();
        let expected: Vec<usize> = (0..text.len())
            .filter(|&i| header_shape(&text[i..]) == Shape::Header)
            .collect();
        assert_eq!(found, expected);
        assert_eq!(track.last, expected.last().copied());
    }
}
