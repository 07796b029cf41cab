//! Reading what the tracer needs from a SIP message's start line and headers, without allocating.
//!
//! RFC 3261 §7.3.1 rules that matter here: header names are case-insensitive and have compact
//! forms (`i` = Call-ID, `l` = Content-Length); a line starting with a space or a tab continues the
//! previous header (folding); whitespace around the colon and the value is not part of the value.
//! Bare-LF line ends are tolerated as well as CRLF, as SIP stacks do.

use memchr::memchr;

/// Why a message's head could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Nothing to read.
    #[error("empty SIP message")]
    Empty,
    /// The first line is neither `SIP/2.0 NNN reason` nor `METHOD Request-URI SIP/2.0`.
    #[error("not a SIP start line")]
    StartLine,
    /// A header the tracer reports is not UTF-8 text.
    #[error("{header} header is not text")]
    NotText {
        /// The header's full name.
        header: &'static str,
    },
    /// Content-Length is not a number, or two Content-Length headers disagree.
    #[error("bad Content-Length")]
    ContentLength,
}

/// Why a head's Content-Length headers do not give its body's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthError {
    /// A value that is not a number (or too large for one).
    NotANumber,
    /// Two Content-Length headers disagree: the first value, and the first one unlike it.
    Disagree {
        /// The first Content-Length (the one OpenSIPS and Kamailio frame by).
        first: u64,
        /// The first later one that differs.
        other: u64,
    },
}

/// The Content-Length headers of a header section, as they are met.
#[derive(Clone, Copy, Debug, Default)]
struct Lengths {
    /// The first value that is a number.
    first: Option<u64>,
    /// The first later value unlike `first`.
    other: Option<u64>,
    /// Some value was not a number.
    bad: bool,
}

impl Lengths {
    /// One more Content-Length value.
    fn add(&mut self, value: &[u8]) {
        match (parse_length(value), self.first) {
            (None, _) => self.bad = true,
            (Some(n), None) => self.first = Some(n),
            (Some(n), Some(first)) if n != first && self.other.is_none() => self.other = Some(n),
            (Some(_), Some(_)) => {}
        }
    }

    /// The body's length when every value is a number and they agree; None without any.
    fn agreed(&self) -> Result<Option<u64>, LengthError> {
        if self.bad {
            return Err(LengthError::NotANumber);
        }
        match (self.first, self.other) {
            (Some(first), Some(other)) => Err(LengthError::Disagree { first, other }),
            (first, _) => Ok(first),
        }
    }
}

/// Request or response, from the start line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    /// `METHOD Request-URI SIP/2.0`.
    Request {
        /// The method token as written (methods are case-sensitive in SIP).
        method: &'a str,
    },
    /// `SIP/2.0 NNN reason`.
    Response {
        /// The status code, 100..=699.
        code: u16,
    },
}

/// What the tracer needs from one SIP message: the kind for filtering, the Call-ID for HEP chunk
/// 0x0011, the CSeq method so responses can be filtered by the method they answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipHead<'a> {
    /// Request (with its method) or response (with its code).
    pub kind: Kind<'a>,
    /// The Call-ID (or compact `i`) value, trimmed; `None` if absent or empty.
    pub call_id: Option<&'a str>,
    /// The method in CSeq (`CSeq: 314159 INVITE` gives `INVITE`); `None` if absent or malformed.
    pub cseq_method: Option<&'a str>,
    /// Content-Length (or compact `l`); `None` if absent (allowed on WS, not on TCP/TLS streams).
    pub content_length: Option<u64>,
    /// Bytes of the start line, headers and the empty line (the whole input if it has no empty
    /// line): the body starts here.
    pub head_len: usize,
}

impl<'a> SipHead<'a> {
    /// The method a method black/white list looks at: a request's own method, a response's CSeq
    /// method (so "skip OPTIONS" skips the OPTIONS and its 200 OK alike).
    pub fn method(&self) -> Option<&'a str> {
        match self.kind {
            Kind::Request { method } => Some(method),
            Kind::Response { .. } => self.cseq_method,
        }
    }
}

/// Reads the start line and the headers the tracer needs from one whole SIP message (a framed
/// stream message or one WS data frame). Stops at the empty line; the body is not looked at.
/// Content-Length headers that are not numbers or disagree are an error ([`read_head`] reads
/// past them).
pub fn parse_head(msg: &[u8]) -> Result<SipHead<'_>, HeadError> {
    let (mut head, lengths) = read_fields(msg)?;
    head.content_length = lengths.agreed().map_err(|_| HeadError::ContentLength)?;
    Ok(head)
}

/// [`parse_head`] as a proxy reads a head: the first Content-Length that is a number counts,
/// whatever the others say (OpenSIPS's and Kamailio's stream readers do the same). For tracing
/// a message whose framing is in doubt: its Call-ID and method are still read.
pub fn read_head(msg: &[u8]) -> Result<SipHead<'_>, HeadError> {
    let (mut head, lengths) = read_fields(msg)?;
    head.content_length = lengths.first;
    Ok(head)
}

/// The start line and the fields the tracer needs; the Content-Length values as met.
fn read_fields(msg: &[u8]) -> Result<(SipHead<'_>, Lengths), HeadError> {
    if msg.is_empty() {
        return Err(HeadError::Empty);
    }
    let (line, headers_at) = match memchr(b'\n', msg) {
        Some(lf) => (&msg[..lf], lf + 1),
        None => (msg, msg.len()),
    };
    let kind = start_line(trim_cr(line)).ok_or(HeadError::StartLine)?;
    let mut head = SipHead {
        kind,
        call_id: None,
        cseq_method: None,
        content_length: None,
        head_len: msg.len(),
    };
    let mut lengths = Lengths::default();
    let mut fields = Fields::new(&msg[headers_at..]);
    for field in &mut fields {
        if is_name(field.name, b"call-id", b"i") {
            if head.call_id.is_none() && !field.value.is_empty() {
                let text = std::str::from_utf8(field.value)
                    .map_err(|_| HeadError::NotText { header: "Call-ID" })?;
                head.call_id = Some(text);
            }
        } else if field.name.eq_ignore_ascii_case(b"cseq") {
            if head.cseq_method.is_none() {
                head.cseq_method = cseq_method(field.value);
            }
        } else if is_name(field.name, b"content-length", b"l") {
            lengths.add(field.value);
        }
    }
    head.head_len = headers_at + fields.end();
    Ok((head, lengths))
}

/// RFC 3261 §7.3.3 and later RFCs' compact header forms, by full name.
const COMPACT_FORMS: &[(&str, &str)] = &[
    ("Accept-Contact", "a"),
    ("Allow-Events", "u"),
    ("Call-ID", "i"),
    ("Contact", "m"),
    ("Content-Encoding", "e"),
    ("Content-Length", "l"),
    ("Content-Type", "c"),
    ("Event", "o"),
    ("From", "f"),
    ("Identity", "y"),
    ("Refer-To", "r"),
    ("Referred-By", "b"),
    ("Reject-Contact", "j"),
    ("Request-Disposition", "d"),
    ("Session-Expires", "x"),
    ("Subject", "s"),
    ("Supported", "k"),
    ("To", "t"),
    ("Via", "v"),
];

/// The value of the first header called `name` (any case, or its compact form) in a message's
/// header section, trimmed, folded lines included; `None` if absent or not UTF-8. Reads the
/// headers with the same rules as the framer, stopping at the empty line.
pub fn header<'a>(msg: &'a [u8], name: &str) -> Option<&'a str> {
    let compact = COMPACT_FORMS
        .iter()
        .find(|(full, _)| full.eq_ignore_ascii_case(name))
        .map_or(b"" as &[u8], |(_, c)| c.as_bytes());
    let headers_at = memchr(b'\n', msg)? + 1;
    Fields::new(&msg[headers_at..])
        .find(|field| {
            field.name.eq_ignore_ascii_case(name.as_bytes())
                || (!compact.is_empty() && field.name.eq_ignore_ascii_case(compact))
        })
        .and_then(|field| std::str::from_utf8(field.value).ok())
}

/// The Request-URI of a request's start line (between its two spaces).
pub fn request_uri(msg: &[u8]) -> Option<&str> {
    let line = trim_cr(&msg[..memchr(b'\n', msg).unwrap_or(msg.len())]);
    let first = memchr(b' ', line)?;
    let last = memchr::memrchr(b' ', line)?;
    std::str::from_utf8(line.get(first + 1..last)?).ok()
}

/// The start line's kind, read as the framer reads it.
pub fn start_kind(msg: &[u8]) -> Option<Kind<'_>> {
    start_line(trim_cr(&msg[..memchr(b'\n', msg).unwrap_or(msg.len())]))
}

/// True for a WS data frame (or any chunk) made only of CR and LF: an RFC 5626 style keep-alive,
/// not a SIP message.
pub fn is_keepalive(msg: &[u8]) -> bool {
    !msg.is_empty() && msg.iter().all(|&b| b == b'\r' || b == b'\n')
}

/// The Content-Length a stream message's header section declares (`Ok(None)` if it has none,
/// `Err` if a value is not a number or two values disagree), and, from the same walk, where its
/// first Call-ID and CSeq values lie. `section` is what follows the start line, up to and
/// including the empty line; it starts `base` bytes into the message.
pub(crate) fn stream_head(
    section: &[u8],
    base: usize,
) -> (Result<Option<u64>, LengthError>, HeadIndex) {
    let mut lengths = Lengths::default();
    let mut index = HeadIndex::default();
    let span = |field: &Field<'_>| Span::new(base + field.at, field.value.len());
    for field in Fields::new(section) {
        if is_name(field.name, b"content-length", b"l") {
            lengths.add(field.value);
        } else if is_name(field.name, b"call-id", b"i") {
            if index.call_id.is_none() {
                index.call_id = span(&field);
            }
        } else if field.name.eq_ignore_ascii_case(b"cseq") && index.cseq.is_none() {
            index.cseq = span(&field);
        }
    }
    (lengths.agreed(), index)
}

/// Where a value lies in a message: `start..end` (u32, so an index costs the framer's state
/// little); `start == 0` means absent, since a start line always comes first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The span of `len` bytes at `start`, or absent if either does not fit in a u32 (a head
    /// is bounded by `max_header_bytes`, far below).
    fn new(start: usize, len: usize) -> Self {
        match (u32::try_from(start), u32::try_from(start + len)) {
            (Ok(start), Ok(end)) => Span { start, end },
            _ => Span::default(),
        }
    }

    fn is_none(&self) -> bool {
        self.start == 0
    }

    /// The value in `msg`, if present and UTF-8.
    fn get<'a>(&self, msg: &'a [u8]) -> Option<&'a str> {
        if self.is_none() {
            return None;
        }
        let range = usize::try_from(self.start).ok()?..usize::try_from(self.end).ok()?;
        std::str::from_utf8(msg.get(range)?).ok()
    }
}

/// What the framer's one walk of a stream message's headers found, so the tracer and routes
/// read a framed message's Call-ID and CSeq without walking its headers again: the first
/// `Call-ID` (or `i`) and the first `CSeq` value, trimmed as [`header`] gives them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadIndex {
    call_id: Span,
    cseq: Span,
}

impl HeadIndex {
    /// The index of a whole message read on its own (a WS frame; tests): one walk of its
    /// headers, as the framer's.
    pub fn of(msg: &[u8]) -> Self {
        match memchr(b'\n', msg) {
            Some(lf) => stream_head(&msg[lf + 1..], lf + 1).1,
            None => HeadIndex::default(),
        }
    }

    /// `header(msg, "Call-ID")`, without a walk: `None` when the message has none (or it is not
    /// UTF-8).
    pub fn call_id_header<'a>(&self, msg: &'a [u8]) -> Option<&'a str> {
        self.call_id.get(msg)
    }

    /// `header(msg, "CSeq")`, without a walk.
    pub fn cseq_header<'a>(&self, msg: &'a [u8]) -> Option<&'a str> {
        self.cseq.get(msg)
    }

    /// The Call-ID for HEP chunk 0x0011 as [`read_head`] reads it (the first non-empty one):
    /// from the index, unless the first Call-ID header is empty and a later one may not be.
    pub fn call_id<'a>(&self, msg: &'a [u8]) -> Option<&'a str> {
        if !self.call_id.is_none() && self.call_id.start == self.call_id.end {
            return read_head(msg).ok().and_then(|h| h.call_id);
        }
        self.call_id.get(msg)
    }
}

/// Where the header section of the head starting at `buf[0]` ends (just past its empty line), or
/// `Err(resume)`: no empty line yet, search again from `resume` once more bytes are appended.
/// `from` must point at or before the LF that ends the start line.
pub(crate) fn find_head_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut at = from;
    while let Some(k) = buf.get(at..).and_then(|rest| memchr(b'\n', rest)) {
        let lf = at + k;
        match buf.get(lf + 1) {
            None => return Err(lf),
            Some(b'\n') => return Ok(lf + 2),
            Some(b'\r') => match buf.get(lf + 2) {
                None => return Err(lf),
                Some(b'\n') => return Ok(lf + 3),
                Some(_) => {}
            },
            Some(_) => {}
        }
        at = lf + 1;
    }
    Err(buf.len())
}

/// Parses a start line (without its line end): a response `SIP/2.0 NNN [reason]` with NNN in
/// 100..=699, or a request `METHOD SP Request-URI SP SIP/2.0` with a token method and a URI
/// without whitespace. The version is matched case-insensitively (RFC 3261 §7.1).
pub(crate) fn start_line(line: &[u8]) -> Option<Kind<'_>> {
    const VERSION: &[u8] = b"SIP/2.0";
    if line.len() > VERSION.len()
        && line[..VERSION.len()].eq_ignore_ascii_case(VERSION)
        && line[VERSION.len()] == b' '
    {
        let rest = &line[VERSION.len() + 1..];
        let digits = rest.get(..3)?;
        if !digits.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|&b| b != b' ') {
            return None;
        }
        let code = digits
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        return (100..=699)
            .contains(&code)
            .then_some(Kind::Response { code });
    }
    let first_sp = memchr(b' ', line)?;
    let last_sp = memchr::memrchr(b' ', line)?;
    let method = &line[..first_sp];
    let uri = line.get(first_sp + 1..last_sp)?;
    let version = &line[last_sp + 1..];
    if method.is_empty()
        || !method.iter().all(|&b| is_token_byte(b))
        || uri.is_empty()
        || uri.iter().any(|&b| b == b' ' || b == b'\t')
        || !version.eq_ignore_ascii_case(VERSION)
    {
        return None;
    }
    // Token bytes are ASCII, so this never fails; no unwrap on input all the same.
    let method = std::str::from_utf8(method).ok()?;
    Some(Kind::Request { method })
}

/// `token` characters of RFC 3261 §25.1.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// A Content-Length value: one or more digits, nothing else (whitespace already trimmed).
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// The method of a CSeq value `1*DIGIT LWS Method`, if it has that shape.
fn cseq_method(value: &[u8]) -> Option<&str> {
    let is_lws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let digits_end = value.iter().position(is_lws)?;
    if digits_end == 0 || !value[..digits_end].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let method = trim_lws(&value[digits_end..]);
    if method.is_empty() || !method.iter().all(|&b| is_token_byte(b)) {
        return None;
    }
    std::str::from_utf8(method).ok()
}

/// Header name match: the full name or the compact form, case-insensitively.
fn is_name(name: &[u8], full: &[u8], compact: &[u8]) -> bool {
    name.eq_ignore_ascii_case(full) || name.eq_ignore_ascii_case(compact)
}

/// The line without a trailing CR.
fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Without leading and trailing SP, HT, CR, LF (LWS, including the line ends of folded lines).
fn trim_lws(bytes: &[u8]) -> &[u8] {
    let is_lws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = lws_lead(bytes);
    let end = bytes
        .iter()
        .rposition(|b| !is_lws(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// How many LWS bytes `bytes` starts with (where [`trim_lws`]'s result begins).
fn lws_lead(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(bytes.len())
}

/// One header field: its name (trailing whitespace trimmed) and its value (LWS trimmed, folded
/// continuation lines included).
#[derive(Debug)]
struct Field<'a> {
    /// The name as written, e.g. `Call-ID` or `i`.
    name: &'a [u8],
    /// The value, possibly spanning folded lines.
    value: &'a [u8],
    /// Where the value starts in the section.
    at: usize,
}

/// Iterates the header fields of a header section, stopping after the empty line. Lines without
/// a colon are skipped: they say nothing the tracer needs and must not stop the trace.
#[derive(Debug)]
struct Fields<'a> {
    /// The bytes after the start line.
    section: &'a [u8],
    /// Where the next line starts.
    pos: usize,
    /// Set once the empty line has been read.
    done: bool,
}

impl<'a> Fields<'a> {
    fn new(section: &'a [u8]) -> Self {
        Self {
            section,
            pos: 0,
            done: false,
        }
    }

    /// Offset just past the empty line, or the section's length if there is none.
    fn end(&self) -> usize {
        self.pos
    }
}

/// Length of the line at the start of `bytes` without its line end, and the offset of the next
/// line.
fn line_at(bytes: &[u8]) -> (usize, usize) {
    match memchr(b'\n', bytes) {
        Some(lf) => (trim_cr(&bytes[..lf]).len(), lf + 1),
        None => (trim_cr(bytes).len(), bytes.len()),
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        while !self.done {
            let rest = self.section.get(self.pos..).unwrap_or_default();
            if rest.is_empty() {
                self.done = true;
                break;
            }
            let (len, mut end) = line_at(rest);
            if len == 0 {
                self.pos += end;
                self.done = true;
                break;
            }
            while matches!(rest.get(end), Some(b' ' | b'\t')) {
                end += line_at(&rest[end..]).1;
            }
            let line_start = self.pos;
            self.pos += end;
            let field = &rest[..end];
            if let Some(colon) = memchr(b':', field) {
                let after = &field[colon + 1..];
                return Some(Field {
                    name: trim_lws(&field[..colon]),
                    value: trim_lws(after),
                    at: line_start + colon + 1 + lws_lead(after),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_gives_method_call_id_and_cseq_method() {
        let msg = b"INVITE sip:bob@example.com SIP/2.0\r\n\
            Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
            Call-ID: a84b4c76e66710@pc33.example.com\r\n\
            CSeq: 314159 INVITE\r\n\
            Content-Length: 4\r\n\
            \r\n\
            v=0\n";
        let head = parse_head(msg).unwrap();
        assert_eq!(head.kind, Kind::Request { method: "INVITE" });
        assert_eq!(head.call_id, Some("a84b4c76e66710@pc33.example.com"));
        assert_eq!(head.cseq_method, Some("INVITE"));
        assert_eq!(head.content_length, Some(4));
        assert_eq!(head.head_len, msg.len() - 4);
        assert_eq!(head.method(), Some("INVITE"));
    }

    #[test]
    fn response_gives_code_and_the_cseq_method_for_filtering() {
        let msg = b"SIP/2.0 200 OK\r\nCSeq: 7 OPTIONS\r\nCall-ID: k1\r\nContent-Length: 0\r\n\r\n";
        let head = parse_head(msg).unwrap();
        assert_eq!(head.kind, Kind::Response { code: 200 });
        assert_eq!(head.cseq_method, Some("OPTIONS"));
        assert_eq!(head.method(), Some("OPTIONS"));
        assert_eq!(head.call_id, Some("k1"));
    }

    #[test]
    fn compact_forms_and_any_case_are_the_same_headers() {
        let msg = b"BYE sip:a@b SIP/2.0\r\ni: short-form\r\nCSEQ: 2 BYE\r\nl: 0\r\n\r\n";
        let head = parse_head(msg).unwrap();
        assert_eq!(head.call_id, Some("short-form"));
        assert_eq!(head.cseq_method, Some("BYE"));
        assert_eq!(head.content_length, Some(0));
        let msg = b"BYE sip:a@b SIP/2.0\r\ncall-id: lower\r\nCONTENT-LENGTH: 0\r\n\r\n";
        let head = parse_head(msg).unwrap();
        assert_eq!(head.call_id, Some("lower"));
        assert_eq!(head.content_length, Some(0));
    }

    #[test]
    fn whitespace_around_colon_and_value_is_trimmed() {
        let msg =
            b"ACK sip:a@b SIP/2.0\r\nCall-ID \t:   spaced@host  \t\r\nCSeq:\t9   ACK \r\n\r\n";
        let head = parse_head(msg).unwrap();
        assert_eq!(head.call_id, Some("spaced@host"));
        assert_eq!(head.cseq_method, Some("ACK"));
        assert_eq!(head.content_length, None);
    }

    #[test]
    fn folded_header_lines_continue_the_value() {
        let msg = b"MESSAGE sip:a@b SIP/2.0\r\n\
            Subject: first\r\n  and folded\r\n\
            Call-ID:\r\n folded-id@host\r\n\
            CSeq: 5\r\n\tMESSAGE\r\n\
            Content-Length:\r\n 2\r\n\
            \r\n\
            hi";
        let head = parse_head(msg).unwrap();
        assert_eq!(head.call_id, Some("folded-id@host"));
        assert_eq!(head.cseq_method, Some("MESSAGE"));
        assert_eq!(head.content_length, Some(2));
        assert_eq!(head.head_len, msg.len() - 2);
    }

    #[test]
    fn bare_lf_line_ends_are_tolerated() {
        let msg = b"SIP/2.0 180 Ringing\nCall-ID: lf-only\nCSeq: 1 INVITE\nl: 0\n\n";
        let head = parse_head(msg).unwrap();
        assert_eq!(head.kind, Kind::Response { code: 180 });
        assert_eq!(head.call_id, Some("lf-only"));
        assert_eq!(head.head_len, msg.len());
    }

    #[test]
    fn headers_after_the_empty_line_are_body_not_headers() {
        let msg = b"SIP/2.0 200 OK\r\nContent-Length: 18\r\n\r\nCall-ID: in-body\r\n";
        let head = parse_head(msg).unwrap();
        assert_eq!(head.call_id, None);
        assert_eq!(head.head_len, msg.len() - 18);
    }

    #[test]
    fn the_first_call_id_wins_and_empty_ones_are_absent() {
        let msg = b"INFO sip:a@b SIP/2.0\r\nCall-ID:\r\nCall-ID: second\r\ni: third\r\n\r\n";
        assert_eq!(parse_head(msg).unwrap().call_id, Some("second"));
    }

    #[test]
    fn bad_start_lines_are_refused() {
        for msg in [
            &b"HTTP/1.1 200 OK\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"SIP/2.0 99 Low\r\n\r\n",
            b"SIP/2.0 700 High\r\n\r\n",
            b"SIP/2.0 2000 Long\r\n\r\n",
            b"SIP/2.0 20x OK\r\n\r\n",
            b"INVITE  SIP/2.0\r\n\r\n",
            b"INVITE sip:a@b\r\n\r\n",
            b"INV@TE sip:a@b SIP/2.0\r\n\r\n",
            b" INVITE sip:a@b SIP/2.0\r\n\r\n",
            b"INVITE sip:a@b SIP/3.0\r\n\r\n",
            b"\x00\xff\xfe",
        ] {
            assert_eq!(parse_head(msg), Err(HeadError::StartLine), "{msg:?}");
        }
        assert_eq!(parse_head(b""), Err(HeadError::Empty));
    }

    #[test]
    fn the_index_gives_what_a_walk_of_the_headers_gives() {
        for msg in [
            &b"INVITE sip:b@x SIP/2.0\r\ni:  c1@h \r\nCSeq: 1\r\n  INVITE\r\nl: 0\r\n\r\n"[..],
            b"SIP/2.0 200 OK\r\nCall-ID:\r\nCall-ID: later\r\nCSeq: 2 BYE\r\n\r\n",
            b"SIP/2.0 200 OK\r\nCall-ID: \xff\r\n\r\n",
            b"OPTIONS sip:x SIP/2.0\r\nVia: a\r\n\r\nCall-ID: body\r\n",
            b"OPTIONS sip:x SIP/2.0",
        ] {
            let index = HeadIndex::of(msg);
            assert_eq!(index.call_id_header(msg), header(msg, "Call-ID"), "{msg:?}");
            assert_eq!(index.cseq_header(msg), header(msg, "CSeq"), "{msg:?}");
            let read = read_head(msg).ok().and_then(|h| h.call_id);
            assert_eq!(index.call_id(msg), read, "{msg:?}");
        }
        let msg = b"SIP/2.0 200 OK\r\nCall-ID:\r\nCall-ID: later\r\n\r\n";
        assert_eq!(HeadIndex::of(msg).call_id(msg), Some("later"));
    }

    #[test]
    fn version_is_case_insensitive_and_reason_is_optional() {
        assert_eq!(
            start_line(b"sip/2.0 486"),
            Some(Kind::Response { code: 486 })
        );
        assert_eq!(
            start_line(b"NOTIFY sips:x@y;transport=tls sip/2.0"),
            Some(Kind::Request { method: "NOTIFY" })
        );
    }

    #[test]
    fn bad_or_conflicting_content_length_is_an_error() {
        let bad = b"SIP/2.0 200 OK\r\nContent-Length: 1a\r\n\r\n";
        assert_eq!(parse_head(bad), Err(HeadError::ContentLength));
        let conflict = b"SIP/2.0 200 OK\r\nContent-Length: 1\r\nl: 2\r\n\r\nx";
        assert_eq!(parse_head(conflict), Err(HeadError::ContentLength));
        let same = b"SIP/2.0 200 OK\r\nContent-Length: 1\r\nl: 01\r\n\r\nx";
        assert_eq!(parse_head(same).unwrap().content_length, Some(1));
        let huge = b"SIP/2.0 200 OK\r\nl: 99999999999999999999999\r\n\r\n";
        assert_eq!(parse_head(huge), Err(HeadError::ContentLength));
    }

    #[test]
    fn read_head_reads_past_content_lengths_that_disagree_as_a_proxy_does() {
        let conflict =
            b"INVITE sip:a@b SIP/2.0\r\nl: 1\r\nCall-ID: c1\r\nContent-Length: 2\r\n\r\nx";
        assert_eq!(parse_head(conflict), Err(HeadError::ContentLength));
        let head = read_head(conflict).unwrap();
        assert_eq!(head.call_id, Some("c1"));
        assert_eq!(head.method(), Some("INVITE"));
        assert_eq!(head.content_length, Some(1), "the first one counts");
        let bad_first = b"SIP/2.0 200 OK\r\nl: x\r\nl: 3\r\n\r\n";
        assert_eq!(read_head(bad_first).unwrap().content_length, Some(3));
    }

    #[test]
    fn content_length_says_why_it_cannot_frame() {
        assert_eq!(stream_head(b"l: 5\r\n\r\n", 0).0, Ok(Some(5)));
        assert_eq!(stream_head(b"X: y\r\n\r\n", 0).0, Ok(None));
        assert_eq!(
            stream_head(b"l: 5\r\nContent-Length: 0\r\nl: 7\r\n\r\n", 0).0,
            Err(LengthError::Disagree { first: 5, other: 0 })
        );
        assert_eq!(
            stream_head(b"l: 5\r\nl: five\r\n\r\n", 0).0,
            Err(LengthError::NotANumber)
        );
    }

    #[test]
    fn a_call_id_that_is_not_utf8_is_reported() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: \xff\xfe\r\n\r\n";
        assert_eq!(
            parse_head(msg),
            Err(HeadError::NotText { header: "Call-ID" })
        );
    }

    #[test]
    fn a_malformed_cseq_has_no_method() {
        let msg = b"SIP/2.0 200 OK\r\nCSeq: INVITE\r\n\r\n";
        assert_eq!(parse_head(msg).unwrap().cseq_method, None);
        let msg = b"SIP/2.0 200 OK\r\nCSeq: 12\r\n\r\n";
        assert_eq!(parse_head(msg).unwrap().method(), None);
    }

    #[test]
    fn head_end_is_the_first_empty_line() {
        assert_eq!(find_head_end(b"A\r\nB: c\r\n\r\nbody", 0), Ok(11));
        assert_eq!(find_head_end(b"A\nB: c\n\nbody", 0), Ok(8));
        assert_eq!(find_head_end(b"A\r\n\r\n", 0), Ok(5));
        assert_eq!(find_head_end(b"A\r\nB: c\r\n", 0), Err(8));
        assert_eq!(find_head_end(b"A\r\nB: c\r\n\r", 0), Err(8));
        assert_eq!(find_head_end(b"A\r\nB: c", 0), Err(7));
        assert_eq!(find_head_end(b"A\r\n \r\n\r\n", 0), Ok(8));
    }

    #[test]
    fn keepalive_frames_are_only_crlf() {
        assert!(is_keepalive(b"\r\n\r\n"));
        assert!(is_keepalive(b"\r\n"));
        assert!(!is_keepalive(b""));
        assert!(!is_keepalive(b"\r\nX"));
    }
}
