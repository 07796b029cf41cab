//! Cuts the FIFO byte stream into requests. Both framings share the FIFO and are told apart
//! per request: after `:NAME:`, a `{` (or `[`) starts a 3.x JSON-RPC body and NAME is the reply
//! FIFO; anything else is the 2.x framing, where NAME is the command, the rest of the line the
//! reply FIFO, and parameter lines follow up to an empty line.
//!
//! Every writer shares the one stream, so a writer that dies mid-request leaves half a request
//! that the next writer's bytes would complete. A request therefore ends early where another
//! one visibly begins inside it: a JSON body ends where it stops being JSON if a request header
//! (`:NAME:`) began at or shortly before that byte; a 2.x request ends at a line that begins
//! with a header, or where one begins inside its header line. What never completes is given up
//! by the server after `request_timeout` ([`FrameParser::expire`]), and the stream resumes at
//! the next header. Pure: bytes in, frames out, each byte looked at once, so every case is
//! tested without a FIFO and no result depends on how the reads split the stream.

use crate::text::{self, TextParam};

use super::scan::is_name_byte;
use super::scan::{Brackets, HeaderTrack, JsonSyntax, MAX_NAME, Shape, Step, header_shape};

/// A header (`:name:reply`) longer than this without its end is garbage.
pub(crate) const MAX_HEADER: usize = 1024;

/// How far before the byte where a JSON body stops being JSON a request header is looked for:
/// one written by another client makes the body invalid within its first few bytes.
const LOOKBACK: usize = MAX_HEADER;

/// Which framing a request used (decides how errors are answered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `:reply_fifo:{json-rpc}` (OpenSIPS 3.x and later).
    Json,
    /// `:command:reply_fifo\nparam\n...\n\n` (OpenSIPS 2.x and older).
    Text,
}

/// Why a request stopped before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Not complete within `request_timeout` of its first byte.
    Timeout,
    /// Another request began inside it (its writer died, or wrote it in pieces).
    NextRequest,
}

/// Why a request could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Bad {
    /// Larger than `max_request_size`; the rest of it is dropped.
    TooLarge,
    /// Not a request (no leading `:`, no name separator, a stray quote ...).
    Garbled(&'static str),
    /// Stopped before it was complete.
    Incomplete(Cut),
}

/// One request cut from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A 3.x request.
    Json {
        /// The reply FIFO name (empty = no reply).
        reply: String,
        /// The JSON-RPC body (or, when it is not JSON, what its brackets enclose).
        body: Vec<u8>,
    },
    /// A 2.x request.
    Text {
        /// The command name.
        command: String,
        /// The reply FIFO name (empty = no reply).
        reply: String,
        /// The parameter lines.
        params: Vec<TextParam>,
    },
    /// A request that gets an error, if it said where to send one.
    Bad {
        framing: Framing,
        /// The reply FIFO name when the header was readable.
        reply: Option<String>,
        /// The command (2.x) when known, for the error text.
        command: Option<String>,
        /// What was wrong.
        why: Bad,
    },
}

/// How a request's bytes end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The request ends just before this position (its last byte was the one before).
    End(usize),
    /// Another request begins at this position.
    Cut(usize),
}

/// A JSON body that stopped being JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Broken {
    /// At byte `at`, while a header that may begin at `open` (at or before `at`) was being
    /// read; `closed` is where the brackets closed meanwhile.
    Awaiting {
        at: usize,
        open: usize,
        closed: Option<usize>,
    },
    /// No request began inside it: it ends where its brackets close or the next header begins.
    Unframed,
}

/// The body of a 3.x request, read one byte at a time.
#[derive(Clone, Debug)]
struct JsonBody {
    /// The reply FIFO.
    reply: String,
    /// Whether the bytes are still JSON.
    syntax: JsonSyntax,
    /// Bracket depth, for a body that is not JSON.
    brackets: Brackets,
    /// Headers inside the body.
    headers: HeaderTrack,
    /// Set once the body stopped being JSON.
    broken: Option<Broken>,
}

impl JsonBody {
    /// Takes the byte at request position `pos`.
    fn feed(&mut self, pos: usize, b: u8) -> Option<Outcome> {
        let found = self.headers.feed(pos, b);
        let closed = self.brackets.feed(b).then_some(pos + 1);
        match self.broken {
            None => match self.syntax.feed(b) {
                Step::More => None,
                Step::End => Some(Outcome::End(pos + 1)),
                Step::Invalid => match self.headers.open_start() {
                    // A header may be beginning here: wait for its name.
                    Some(open) => {
                        self.broken = Some(Broken::Awaiting {
                            at: pos,
                            open,
                            closed,
                        });
                        None
                    }
                    None => self.no_header_at_or_before(pos, closed),
                },
            },
            Some(Broken::Awaiting {
                at,
                open,
                closed: closed_before,
            }) => {
                if found == Some(open) {
                    return Some(Outcome::Cut(open));
                }
                let closed = closed_before.or(closed);
                if self.headers.open_start() == Some(open) {
                    self.broken = Some(Broken::Awaiting { at, open, closed });
                    return None;
                }
                self.no_header_at_or_before(at, closed)
            }
            Some(Broken::Unframed) => match (found, closed) {
                (Some(start), _) => Some(Outcome::Cut(start)),
                (None, Some(end)) => Some(Outcome::End(end)),
                (None, None) => None,
            },
        }
    }

    /// The body stopped being JSON at `at` and no header is being read there: it ends at the
    /// last header before `at` (within [`LOOKBACK`]), else it is a body that is not JSON.
    fn no_header_at_or_before(&mut self, at: usize, closed: Option<usize>) -> Option<Outcome> {
        if let Some(last) = self.headers.last.filter(|&l| l + LOOKBACK >= at) {
            return Some(Outcome::Cut(last));
        }
        self.broken = Some(Broken::Unframed);
        closed.map(Outcome::End)
    }

    /// The first position still needed once the body's bytes are dropped (`next` is the first
    /// byte not yet read): where the request may yet be cut.
    fn keep_from(&self, next: usize) -> usize {
        let open = self.headers.open_start();
        let last = match self.broken {
            None => self.headers.last.filter(|&l| l + LOOKBACK >= next),
            Some(Broken::Awaiting { at, .. }) => self.headers.last.filter(|&l| l + LOOKBACK >= at),
            Some(Broken::Unframed) => None,
        };
        [Some(next), open, last]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next)
    }
}

/// What the start of a 2.x line says so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineHead {
    /// Nothing read yet.
    Start,
    /// `:` and this many name bytes: maybe a request header.
    Name(usize),
    /// Not a request header.
    No,
}

/// How much of the current line is read: the request ends at a line that is empty once one
/// trailing CR is taken off (a line of several CRs, or of blanks, is skipped, not the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineSoFar {
    /// Nothing yet.
    Empty,
    /// One CR.
    Cr,
    /// Anything else.
    Content,
}

/// The parameter lines of a 2.x request, read one byte at a time.
#[derive(Clone, Debug)]
struct TextBody {
    /// The command.
    command: String,
    /// The reply FIFO.
    reply: String,
    /// Where the current line starts.
    line_start: usize,
    /// How much of it is read.
    line: LineSoFar,
    /// Whether it begins like a request header.
    head: LineHead,
}

impl TextBody {
    /// Takes the byte at request position `pos`.
    fn feed(&mut self, pos: usize, b: u8) -> Option<Outcome> {
        if b == b'\n' {
            let ends = self.line != LineSoFar::Content;
            self.line_start = pos + 1;
            self.line = LineSoFar::Empty;
            self.head = LineHead::Start;
            return ends.then_some(Outcome::End(pos + 1));
        }
        self.line = match (b, self.line) {
            (b'\r', LineSoFar::Empty) => LineSoFar::Cr,
            _ => LineSoFar::Content,
        };
        self.head = match self.head {
            LineHead::Start if b == b':' => LineHead::Name(0),
            // A line that begins with a request header is the next request, not a parameter.
            LineHead::Name(n) if b == b':' && n > 0 => {
                return Some(Outcome::Cut(self.line_start));
            }
            LineHead::Name(n) if is_name_byte(b) && n < MAX_NAME => LineHead::Name(n + 1),
            LineHead::Start | LineHead::Name(_) | LineHead::No => LineHead::No,
        };
        None
    }

    /// The first position still needed once the request's bytes are dropped.
    fn keep_from(&self, next: usize) -> usize {
        match self.head {
            LineHead::Name(_) => self.line_start,
            LineHead::Start | LineHead::No => next,
        }
    }
}

/// The body of the request being read.
#[derive(Clone, Debug)]
enum Body {
    Json(JsonBody),
    Text(TextBody),
}

/// The request being read, once its header is known.
#[derive(Clone, Debug)]
struct Request {
    /// Its framing and scanners.
    body: Body,
    /// Where the body starts (its header and the newline of a 2.x header line before).
    body_start: usize,
    /// Bytes of it read so far (positions count from its leading `:`).
    read: usize,
    /// Bytes of it dropped from the front of the buffer (only once refused as too large).
    dropped: usize,
    /// Refused as too large already: its bytes are dropped as they are read.
    too_large: bool,
}

impl Request {
    fn feed(&mut self, pos: usize, b: u8) -> Option<Outcome> {
        match &mut self.body {
            Body::Json(j) => j.feed(pos, b),
            Body::Text(t) => t.feed(pos, b),
        }
    }

    fn keep_from(&self) -> usize {
        match &self.body {
            Body::Json(j) => j.keep_from(self.read),
            Body::Text(t) => t.keep_from(self.read),
        }
    }

    /// The error its client gets, if it said where to send one.
    fn bad(&self, why: Bad) -> Frame {
        match &self.body {
            Body::Json(j) => Frame::Bad {
                framing: Framing::Json,
                reply: Some(j.reply.clone()),
                command: None,
                why,
            },
            Body::Text(t) => Frame::Bad {
                framing: Framing::Text,
                reply: Some(t.reply.clone()),
                command: Some(t.command.clone()),
                why,
            },
        }
    }
}

/// What a 2.x header line holds.
enum HeaderLine {
    /// Its end has not arrived.
    Wait,
    /// Too long to be a header: more than [`MAX_HEADER`] bytes before its newline; `end` is
    /// where its line ends (after the newline), when the newline was read.
    TooLong { end: Option<usize> },
    /// Another request begins inside it, here.
    Cut(usize),
    /// The reply FIFO name; the body starts at `body_start`.
    Line { reply: String, body_start: usize },
}

/// The FIFO stream parser.
#[derive(Debug)]
pub(crate) struct FrameParser {
    /// Bytes read but not yet cut into requests (of the request being read, only those still
    /// needed once it is refused as too large).
    buf: Vec<u8>,
    /// `max_request_size`.
    max: usize,
    /// The request being read, once its header is known.
    request: Option<Request>,
    /// Requests finished so far (answered, refused, dropped): the server starts a request's
    /// deadline when this changes.
    taken: u64,
}

impl FrameParser {
    /// A parser refusing requests larger than `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameParser {
            buf: Vec::new(),
            max,
            request: None,
            taken: 0,
        }
    }

    /// Whether bytes of an unfinished request are held (the request timeout applies).
    pub fn has_partial(&self) -> bool {
        self.request.is_some() || self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }

    /// How many requests have left the stream so far.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// Bytes held between reads (the fuzz target checks they stay bounded).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds bytes read from the FIFO.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete request (or error to answer), or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.request.is_some() {
                match self.read_body() {
                    Read::Frame(frame) => return Some(frame),
                    Read::Next => continue,
                    Read::Wait => return None,
                }
            }
            self.skip_blanks();
            let first = *self.buf.first()?;
            if first != b':' {
                return self.garbage(0, "a request must begin with ':'");
            }
            let sep = match self.buf[1..].iter().position(|&b| !is_name_byte(b)) {
                Some(n) if n <= MAX_NAME && self.buf[1 + n] == b':' => 1 + n,
                Some(_) => return self.garbage(1, "no ':' after the name"),
                None if self.buf.len() > MAX_NAME + 1 => {
                    return self.garbage(1, "no ':' after the name");
                }
                None => return None,
            };
            let name = String::from_utf8_lossy(&self.buf[1..sep]).into_owned();
            let body_start = sep
                + 1
                + self.buf[sep + 1..]
                    .iter()
                    .take_while(|&&b| b == b' ' || b == b'\t')
                    .count();
            let body = match self.buf.get(body_start) {
                None => return self.wait_or_too_large(None),
                Some(b'{' | b'[') => Body::Json(JsonBody {
                    reply: name,
                    syntax: JsonSyntax::default(),
                    brackets: Brackets::default(),
                    headers: HeaderTrack::default(),
                    broken: None,
                }),
                Some(_) => match self.header_line(sep) {
                    HeaderLine::Wait => return None,
                    HeaderLine::TooLong { end: Some(end) } => {
                        self.finish(end);
                        return Some(Frame::Bad {
                            framing: Framing::Text,
                            reply: None,
                            command: Some(name),
                            why: Bad::Garbled("header too long"),
                        });
                    }
                    HeaderLine::TooLong { end: None } => {
                        return self.wait_or_too_large(Some(name));
                    }
                    HeaderLine::Cut(at) => {
                        self.finish(at);
                        return Some(Frame::Bad {
                            framing: Framing::Text,
                            reply: None,
                            command: None,
                            why: Bad::Incomplete(Cut::NextRequest),
                        });
                    }
                    HeaderLine::Line { reply, body_start } => {
                        self.request = Some(Request {
                            body: Body::Text(TextBody {
                                command: name,
                                reply,
                                line_start: body_start,
                                line: LineSoFar::Empty,
                                head: LineHead::Start,
                            }),
                            body_start,
                            read: body_start,
                            dropped: 0,
                            too_large: false,
                        });
                        continue;
                    }
                },
            };
            self.request = Some(Request {
                body,
                body_start,
                read: body_start,
                dropped: 0,
                too_large: false,
            });
        }
    }

    /// Reads the request's bytes one at a time until it ends, is cut, is refused as too large,
    /// or the bytes run out.
    fn read_body(&mut self) -> Read {
        let Some(req) = self.request.as_mut() else {
            return Read::Next;
        };
        while let Some(&b) = self.buf.get(req.read - req.dropped) {
            let pos = req.read;
            req.read += 1;
            let outcome = req.feed(pos, b);
            let len = match outcome {
                Some(Outcome::End(end)) => end,
                Some(Outcome::Cut(at)) => at,
                None => req.read,
            };
            if len > self.max && !req.too_large {
                // Refused as soon as it is known to be too large: answered now, dropped as read.
                req.too_large = true;
                let frame = req.bad(Bad::TooLarge);
                if let Some(o) = outcome {
                    self.end_request(o);
                }
                return Read::Frame(frame);
            }
            let Some(outcome) = outcome else { continue };
            let frame = match outcome {
                _ if req.too_large => None,
                Outcome::Cut(_) => Some(req.bad(Bad::Incomplete(Cut::NextRequest))),
                Outcome::End(end) => Some(complete(&self.buf, req, end)),
            };
            self.end_request(outcome);
            return match frame {
                Some(frame) => Read::Frame(frame),
                None => Read::Next,
            };
        }
        if req.too_large {
            let keep = req.keep_from();
            self.buf.drain(..keep - req.dropped);
            req.dropped = keep;
        }
        Read::Wait
    }

    /// The request is over: its bytes leave the buffer, the next request starts after them.
    fn end_request(&mut self, outcome: Outcome) {
        let dropped = self.request.take().map_or(0, |r| r.dropped);
        let (Outcome::End(at) | Outcome::Cut(at)) = outcome;
        self.finish(at - dropped);
    }

    /// Drops the whitespace between requests.
    fn skip_blanks(&mut self) {
        let start = self
            .buf
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(self.buf.len());
        self.buf.drain(..start);
    }

    /// Drops the first `n` bytes of the buffer: one request (or garbage) has left the stream.
    fn finish(&mut self, n: usize) {
        self.buf.drain(..n);
        self.taken += 1;
    }

    /// Where a 2.x header line ends, or where another request begins inside it.
    fn header_line(&self, sep: usize) -> HeaderLine {
        let rest = &self.buf[sep + 1..];
        let newline = rest.iter().position(|&b| b == b'\n').map(|n| sep + 1 + n);
        let line_end = newline.unwrap_or(self.buf.len());
        // A reply name has no ':': one there means a writer died in the header and another
        // request follows, beginning at that ':' or (`:de` + `:r:{...}`) at the separator.
        if let Some(colon) = self.buf[sep + 1..line_end].iter().position(|&b| b == b':') {
            let colon = sep + 1 + colon;
            match header_shape(&self.buf[colon..]) {
                Shape::Header => return HeaderLine::Cut(colon),
                Shape::NotHeader if header_shape(&self.buf[sep..]) == Shape::Header => {
                    return HeaderLine::Cut(sep);
                }
                Shape::Unknown if self.buf.len() <= MAX_HEADER => return HeaderLine::Wait,
                Shape::Unknown | Shape::NotHeader => {}
            }
        }
        // Too long whether or not the newline came in the same read as the bytes before it, so
        // what is held and how the stream is cut do not depend on how the reads split it.
        if line_end > MAX_HEADER {
            return HeaderLine::TooLong {
                end: newline.map(|n| n + 1),
            };
        }
        match newline {
            Some(n) => HeaderLine::Line {
                reply: String::from_utf8_lossy(&self.buf[sep + 1..n])
                    .trim()
                    .to_owned(),
                body_start: n + 1,
            },
            None => HeaderLine::Wait,
        }
    }

    /// Bytes that cannot be a request, from `from` on: dropped through their newline or up to
    /// a request header on the same line, whichever comes first (or whole, when there is
    /// neither and they are already too long to be a header).
    fn garbage(&mut self, from: usize, why: &'static str) -> Option<Frame> {
        let bad = Frame::Bad {
            framing: Framing::Text,
            reply: None,
            command: None,
            why: Bad::Garbled(why),
        };
        for i in from..self.buf.len() {
            let end = match self.buf[i] {
                b'\n' => i + 1,
                b':' => match header_shape(&self.buf[i..]) {
                    Shape::Header => i,
                    Shape::Unknown if self.buf.len() > MAX_HEADER => i,
                    Shape::Unknown => return None,
                    Shape::NotHeader => continue,
                },
                _ => continue,
            };
            self.finish(end);
            return Some(bad);
        }
        if self.buf.len() <= MAX_HEADER {
            return None;
        }
        let all = self.buf.len();
        self.finish(all);
        Some(bad)
    }

    /// A header whose end has not come: waits, unless it is already too long to be one.
    fn wait_or_too_large(&mut self, command: Option<String>) -> Option<Frame> {
        if self.buf.len() <= MAX_HEADER {
            return None;
        }
        let all = self.buf.len();
        self.finish(all);
        Some(Frame::Bad {
            framing: Framing::Text,
            reply: None,
            command,
            why: Bad::Garbled("header too long"),
        })
    }

    /// Gives up on the request being read (the request timeout passed since its first byte):
    /// returns it as incomplete, answered if its header named a reply FIFO, and resumes the
    /// stream at the next whole request header after its first byte (or drops everything
    /// held).
    pub fn expire(&mut self) -> Option<Frame> {
        let (frame, from) = match self.request.take() {
            Some(req) => {
                let frame = (!req.too_large).then(|| req.bad(Bad::Incomplete(Cut::Timeout)));
                (frame, usize::from(req.dropped == 0))
            }
            None => {
                self.skip_blanks();
                if self.buf.is_empty() {
                    return None;
                }
                (Some(self.unfinished_header()), 1)
            }
        };
        // Only a whole header: a `:` the bytes end with is far more often the dead request's
        // own (`"id":`) than the start of another one.
        let next = (from..self.buf.len())
            .find(|&i| header_shape(&self.buf[i..]) == Shape::Header)
            .unwrap_or(self.buf.len());
        self.finish(next);
        frame
    }

    /// The error for what is held when the request's header itself never completed.
    fn unfinished_header(&self) -> Frame {
        let text = String::from_utf8_lossy(&self.buf);
        let (command, reply) = match text.strip_prefix(':').and_then(|r| r.split_once(':')) {
            // A 2.x header line is complete only with its newline, so the reply name is not
            // known yet.
            Some((command, _)) => (Some(command.to_owned()), None),
            None => (None, None),
        };
        Frame::Bad {
            framing: Framing::Text,
            reply,
            command,
            why: Bad::Incomplete(Cut::Timeout),
        }
    }
}

/// The frame of `req`, which ends just before `end`; all of it is in `buf`.
fn complete(buf: &[u8], req: &Request, end: usize) -> Frame {
    let bytes = &buf[req.body_start..end];
    match &req.body {
        Body::Json(j) => Frame::Json {
            reply: j.reply.clone(),
            body: bytes.to_vec(),
        },
        Body::Text(t) => {
            // Parameter lines up to the empty one; lines of blanks are skipped, as 2.x did.
            let params: Option<Vec<TextParam>> = bytes
                .split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .take_while(|l| !l.is_empty())
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .map(|l| text::parse_param_line(&String::from_utf8_lossy(l)))
                .collect();
            match params {
                Some(params) => Frame::Text {
                    command: t.command.clone(),
                    reply: t.reply.clone(),
                    params,
                },
                None => req.bad(Bad::Garbled("bad parameter line")),
            }
        }
    }
}

/// What reading the request's body gave.
enum Read {
    /// A frame to hand out.
    Frame(Frame),
    /// The request ended without a frame (refused before): go on with the next one.
    Next,
    /// The bytes ran out.
    Wait,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut p = FrameParser::new(max);
        let mut out = Vec::new();
        for c in chunks {
            p.push(c);
            while let Some(f) = p.next_frame() {
                out.push(f);
            }
        }
        out
    }

    fn json(reply: &str, body: &str) -> Frame {
        Frame::Json {
            reply: reply.into(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn param(v: &str) -> TextParam {
        TextParam {
            name: None,
            value: v.into(),
        }
    }

    #[test]
    fn opensips_cli_request_is_one_json_frame() {
        let body =
            r#"{"jsonrpc": "2.0", "id": "6204", "method": "sip_trace", "params": ["tid2", "off"]}"#;
        let req = format!(":opensips_fifo_reply_21103_1795769115_3586814:{body}");
        assert_eq!(
            frames(65536, &[req.as_bytes()]),
            vec![json("opensips_fifo_reply_21103_1795769115_3586814", body)]
        );
    }

    #[test]
    fn json_split_across_reads_and_concatenated_requests() {
        let out = frames(
            65536,
            &[
                b":r1:{\"a\":\"}{\\\"\"",
                b",\"b\":[1]}\n:r2:{}",
                b"::{\"x\":1}",
            ],
        );
        assert_eq!(
            out,
            vec![
                json("r1", "{\"a\":\"}{\\\"\",\"b\":[1]}"),
                json("r2", "{}"),
                json("", "{\"x\":1}")
            ]
        );
    }

    #[test]
    fn text_framing_with_params_and_empty_line() {
        let out = frames(65536, &[b":sip_trace:reply\ntid2\n", b"off\n\n:ps:r2\n\n"]);
        assert_eq!(
            out,
            vec![
                Frame::Text {
                    command: "sip_trace".into(),
                    reply: "reply".into(),
                    params: vec![param("tid2"), param("off")],
                },
                Frame::Text {
                    command: "ps".into(),
                    reply: "r2".into(),
                    params: vec![],
                }
            ]
        );
    }

    #[test]
    fn where_reads_split_the_stream_does_not_matter() {
        let stream: &[u8] =
            b":a:{\"s\":\"}:{\"}\n:sip_trace:b\r\ntid\n  \n\"x \\\"y\"\n\n::[1,[2]]:c:{}";
        let whole = frames(65536, &[stream]);
        assert_eq!(whole.len(), 4);
        assert!(
            matches!(&whole[1], Frame::Text { params, .. } if params == &[param("tid"), param("x \"y")]),
            "{whole:?}"
        );
        assert_eq!(whole[2], json("", "[1,[2]]"));
        for i in 0..stream.len() {
            for j in i..stream.len() {
                let (a, rest) = stream.split_at(i);
                let (b, c) = rest.split_at(j - i);
                assert_eq!(frames(65536, &[a, b, c]), whole, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn text_framing_waits_for_the_empty_line() {
        assert!(frames(65536, &[b":sip_trace:reply\ntid2\n"]).is_empty());
    }

    #[test]
    fn garbage_lines_are_reported_and_skipped() {
        let out = frames(65536, &[b"hello\n:r:{}"]);
        assert_eq!(out.len(), 2);
        assert!(matches!(
            out[0],
            Frame::Bad {
                reply: None,
                why: Bad::Garbled(_),
                ..
            }
        ));
        assert_eq!(out[1], json("r", "{}"));
    }

    #[test]
    fn too_large_json_is_answered_then_drained() {
        let mut p = FrameParser::new(100);
        p.push(b":big:{\"params\":[\"");
        assert_eq!(p.next_frame(), None);
        p.push(&[b'x'; 200]);
        assert_eq!(
            p.next_frame(),
            Some(Frame::Bad {
                framing: Framing::Json,
                reply: Some("big".into()),
                command: None,
                why: Bad::TooLarge
            })
        );
        p.push(&[b'}'; 50]); // inside the string: still draining
        assert_eq!(p.next_frame(), None);
        p.push(b"\"]}:next:{}");
        assert_eq!(p.next_frame(), Some(json("next", "{}")));
    }

    #[test]
    fn too_large_json_is_refused_even_when_it_arrives_in_one_read() {
        let big = format!(":big:{{\"params\":[\"{}\"]}}:next:{{}}", "x".repeat(200));
        assert_eq!(
            frames(100, &[big.as_bytes()]),
            [
                Frame::Bad {
                    framing: Framing::Json,
                    reply: Some("big".into()),
                    command: None,
                    why: Bad::TooLarge
                },
                json("next", "{}")
            ]
        );
    }

    /// Found by the fifo_framing fuzz target: a 2.x header line longer than a header may be
    /// was taken whole (and held) when its newline came in the same read, refused when it came
    /// later. Refused both ways now, and what follows its newline is read.
    #[test]
    fn a_header_line_too_long_is_refused_whether_or_not_its_newline_came_with_it() {
        let long = format!(":ps:{}\n\n:ps:r\n\n", "r".repeat(MAX_HEADER));
        let bad = Frame::Bad {
            framing: Framing::Text,
            reply: None,
            command: Some("ps".into()),
            why: Bad::Garbled("header too long"),
        };
        let mut p = FrameParser::new(65536);
        p.push(long.as_bytes());
        let mut got = Vec::new();
        while let Some(f) = p.next_frame() {
            got.push(f);
        }
        assert_eq!(got.first(), Some(&bad));
        assert!(
            matches!(got.last(), Some(Frame::Text { command, reply, .. }) if command == "ps" && reply == "r"),
            "{got:?}"
        );
        assert_eq!(p.buffered(), 0);
        // The same line at exactly the bound is a header.
        let longest = format!(":ps:{}\n\n", "r".repeat(MAX_HEADER - 5));
        assert!(matches!(
            frames(65536, &[longest.as_bytes()]).as_slice(),
            [Frame::Text { .. }]
        ));
    }

    #[test]
    fn too_large_text_is_answered_then_drained() {
        let mut p = FrameParser::new(64);
        p.push(b":sip_trace:r\n");
        p.push(&[b'a'; 100]);
        assert!(matches!(
            p.next_frame(),
            Some(Frame::Bad {
                framing: Framing::Text,
                why: Bad::TooLarge,
                ..
            })
        ));
        p.push(b"\nmore\n\n:ps:r2\n\n");
        assert!(matches!(p.next_frame(), Some(Frame::Text { command, .. }) if command == "ps"));
    }

    /// Found by the `fifo_framing` fuzz target: draining a too-large 2.x request took a line
    /// of several CRs for the empty line that ends it, where a request read whole skips such a
    /// line as a blank parameter line; so the next line started a request or not depending on
    /// the reads. Since issue 16 a line that begins with a request header starts a request
    /// whatever came before it, so the regression is shown with a plain line after the CRs.
    #[test]
    fn a_drained_text_request_ends_where_a_whole_one_does() {
        let stream: &[u8] = b":ps:r\nxxxxxxxx\n\r\r\nswallowed\n\n:ps:r2\n\n";
        let whole = frames(8, &[stream]);
        // The first read ends just after a line, so the drain starts at a line's start.
        let (first, rest) = stream.split_at(15);
        let mut reads = vec![first];
        reads.extend(rest.chunks(3));
        let split = frames(8, &reads);
        assert_eq!(split, whole);
        assert!(matches!(
            &whole[0],
            Frame::Bad {
                why: Bad::TooLarge,
                ..
            }
        ));
        assert!(matches!(&whole[1], Frame::Text { reply, .. } if reply == "r2"));
        assert_eq!(whole.len(), 2);
        // The stream of the original finding: the line after the CRs is a request of its own
        // (too large too, at 8 bytes), however the reads split it.
        let stream: &[u8] = b":ps:r\nxxxxxxxx\n\r\r\n:ps:swallowed\n\n:ps:r2\n\n";
        let whole = frames(8, &[stream]);
        let (first, rest) = stream.split_at(15);
        let mut reads = vec![first];
        reads.extend(rest.chunks(3));
        assert_eq!(frames(8, &reads), whole);
        let too_large = |reply: &str| Frame::Bad {
            framing: Framing::Text,
            reply: Some(reply.into()),
            command: Some("ps".into()),
            why: Bad::TooLarge,
        };
        assert_eq!(whole[..2], [too_large("r"), too_large("swallowed")]);
        assert!(matches!(&whole[2], Frame::Text { reply, .. } if reply == "r2"));
        assert_eq!(whole.len(), 3);
    }

    /// The frames of `stream` read whole, checked to be the same for every split in two.
    fn frames_any_split(max: usize, stream: &[u8]) -> Vec<Frame> {
        let whole = frames(max, &[stream]);
        for i in 0..stream.len() {
            let (a, b) = stream.split_at(i);
            assert_eq!(frames(max, &[a, b]), whole, "split at {i}");
        }
        whole
    }

    fn cut(framing: Framing, reply: Option<&str>, command: Option<&str>) -> Frame {
        Frame::Bad {
            framing,
            reply: reply.map(str::to_owned),
            command: command.map(str::to_owned),
            why: Bad::Incomplete(Cut::NextRequest),
        }
    }

    const POLL: &str = r#"{"jsonrpc":"2.0","method":"trace","params":{"mode":"off"},"id":1}"#;

    #[test]
    fn half_a_json_request_ends_where_the_next_request_begins() {
        for dead in [
            ":dead:{",
            r#":dead:{"jsonrpc":"2.0","method":"ps","id":"#,
            r#":dead:{"jsonrpc":"2.0","method":"p"#,
            r#":dead:{"jsonrpc":"2.0","method":"p"#,
            r#":dead:{"jsonrpc":"2.0","method":"ps","id":12"#,
            r#":dead:{"jsonrpc":"2.0","method":"ps","id":nu"#,
            r#":dead:{"params":[[":x:y","#,
            r#":dead:[{}"#,
        ] {
            let stream = format!("{dead}:poll:{POLL}:next:{{}}");
            assert_eq!(
                frames_any_split(65536, stream.as_bytes()),
                [
                    cut(Framing::Json, Some("dead"), None),
                    json("poll", POLL),
                    json("next", "{}")
                ],
                "{dead}"
            );
        }
    }

    #[test]
    fn json_that_is_not_json_still_ends_at_its_brackets() {
        // The core answers it -32700, as before; a request after it is its own.
        assert_eq!(
            frames_any_split(65536, b":r:{not json}:next:{}"),
            [json("r", "{not json}"), json("next", "{}")]
        );
        // Unclosed: it ends where the next request begins.
        assert_eq!(
            frames_any_split(65536, b":r:{not json:next:{}"),
            [cut(Framing::Json, Some("r"), None), json("next", "{}")]
        );
        // A header-like text inside a valid body is only text.
        let body = r#"{"jsonrpc":"2.0","method":"x","params":[":a:{",":b:c\n"]}"#;
        let stream = format!(":r:{body}");
        assert_eq!(
            frames_any_split(65536, stream.as_bytes()),
            [json("r", body)]
        );
    }

    #[test]
    fn a_2x_request_ends_at_a_line_that_begins_a_request() {
        let out = frames_any_split(65536, b":sip_trace:dead\ntid2\n:tcp_trace:r1\noff\n\n");
        assert_eq!(
            out,
            [
                cut(Framing::Text, Some("dead"), Some("sip_trace")),
                Frame::Text {
                    command: "tcp_trace".into(),
                    reply: "r1".into(),
                    params: vec![param("off")],
                }
            ]
        );
        // A 3.x request begins it without a newline at all.
        let stream = format!(":sip_trace:dead\ntid2\n:poll:{POLL}");
        assert_eq!(
            frames_any_split(65536, stream.as_bytes()),
            [
                cut(Framing::Text, Some("dead"), Some("sip_trace")),
                json("poll", POLL)
            ]
        );
        // Values that merely contain colons are parameters.
        let out = frames_any_split(65536, b":x:r\n::1\nsip:a@b:5060\nname::v\n\n");
        assert!(
            matches!(&out[..], [Frame::Text { params, .. }] if params.len() == 3),
            "{out:?}"
        );
    }

    #[test]
    fn a_header_cut_mid_line_ends_where_the_next_request_begins() {
        let none = cut(Framing::Text, None, None);
        // After the separator: `:de` + `:poll:{...}`.
        let stream = format!(":de:poll:{POLL}");
        assert_eq!(
            frames_any_split(65536, stream.as_bytes()),
            [none.clone(), json("poll", POLL)]
        );
        // In the reply name: `:sip_trace:dea` + `:poll:{...}` or a 2.x request.
        let stream = format!(":sip_trace:dea:poll:{POLL}");
        assert_eq!(
            frames_any_split(65536, stream.as_bytes()),
            [none.clone(), json("poll", POLL)]
        );
        assert_eq!(
            frames_any_split(65536, b":sip_trace:dea:tcp_trace:r1\noff\n\n"),
            [
                none,
                Frame::Text {
                    command: "tcp_trace".into(),
                    reply: "r1".into(),
                    params: vec![param("off")],
                }
            ]
        );
    }

    #[test]
    fn a_too_large_request_cut_by_the_next_one_lets_it_through() {
        let stream = format!(r#":big:{{"params":["{}",:poll:{POLL}"#, "x".repeat(300));
        let out = frames_any_split(100, stream.as_bytes());
        assert_eq!(
            out,
            [
                Frame::Bad {
                    framing: Framing::Json,
                    reply: Some("big".into()),
                    command: None,
                    why: Bad::TooLarge
                },
                json("poll", POLL)
            ]
        );
        let mut text = b":sip_trace:big\n".to_vec();
        text.extend_from_slice(&[b'y'; 300]);
        text.extend_from_slice(b"\n:ps:r2\n\n");
        assert!(matches!(
            &frames_any_split(100, &text)[..],
            [Frame::Bad { why: Bad::TooLarge, .. }, Frame::Text { reply, .. }] if reply == "r2"
        ));
    }

    #[test]
    fn a_request_given_up_resumes_the_stream_at_the_next_whole_header() {
        // Still JSON (inside a string): only the timeout ends it.
        let mut p = FrameParser::new(65536);
        p.push(br#":slow:{"a":"x:poll:{}:next:{}"#);
        assert_eq!(p.next_frame(), None);
        assert_eq!(
            p.expire(),
            Some(Frame::Bad {
                framing: Framing::Json,
                reply: Some("slow".into()),
                command: None,
                why: Bad::Incomplete(Cut::Timeout)
            })
        );
        assert_eq!(p.next_frame(), Some(json("poll", "{}")));
        assert_eq!(p.next_frame(), Some(json("next", "{}")));
        assert!(!p.has_partial());
        // A 2.x parameter line that another request continued.
        let mut p = FrameParser::new(65536);
        p.push(format!(":sip_trace:dead\ntid:poll:{POLL}").as_bytes());
        assert_eq!(p.next_frame(), None);
        assert_eq!(
            p.expire(),
            Some(Frame::Bad {
                framing: Framing::Text,
                reply: Some("dead".into()),
                command: Some("sip_trace".into()),
                why: Bad::Incomplete(Cut::Timeout)
            })
        );
        assert_eq!(p.next_frame(), Some(json("poll", POLL)));
        let taken = p.taken();
        assert!(!p.has_partial());
        assert_eq!(taken, 2);
    }

    /// The fuzz target's two properties, over streams made of the pieces dead and live
    /// writers leave (requests of both framings cut anywhere, garbage, headers in strings),
    /// with a small and the default `max_request_size`: the frames do not depend on the reads,
    /// and the parser never holds more than the larger of the limit and a header.
    #[test]
    fn streams_of_whole_and_cut_requests_frame_the_same_whatever_the_reads() {
        use rand::{Rng, SeedableRng, seq::IndexedRandom};
        let pieces: [&[u8]; 14] = [
            br#":r:{"jsonrpc":"2.0","method":"ps","id":1}"#,
            br#":poll:{"jsonrpc":"2.0","method":"trace","params":{"mode":"off"},"id":"x"}"#,
            b":sip_trace:r2\ntid2\noff\n\n",
            b":ps:r3\r\n\r\n",
            br#"::{"jsonrpc":"2.0","method":"ps"}"#,
            br#":s:{"a":":b:{","c":[1,-2.5e3,true,null,"\u00e9\""]}"#,
            b"garbage line\n",
            b":x:y\n::1\nname::v\n\r\r\n\n",
            b"{not json}",
            b":r:{not json}",
            b"  \n\t",
            b":a b:{}",
            b"[[[[",
            b"\"]}}",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(16);
        for round in 0..1500 {
            let max = if round % 2 == 0 {
                65536
            } else {
                rng.random_range(1..200)
            };
            let mut stream = Vec::new();
            for _ in 0..rng.random_range(1..6) {
                let Some(piece) = pieces.choose(&mut rng) else {
                    continue;
                };
                // Half the time a writer dies somewhere in its piece.
                let len = if rng.random_bool(0.5) {
                    rng.random_range(0..=piece.len())
                } else {
                    piece.len()
                };
                stream.extend_from_slice(&piece[..len]);
            }
            let run = |reads: &[&[u8]]| {
                let mut p = FrameParser::new(max);
                let mut out = Vec::new();
                for r in reads {
                    p.push(r);
                    while let Some(f) = p.next_frame() {
                        out.push(f);
                    }
                    assert!(p.buffered() <= max.max(MAX_HEADER), "{max}: {stream:?}");
                }
                while p.has_partial() {
                    out.extend(p.expire());
                    while let Some(f) = p.next_frame() {
                        out.push(f);
                    }
                }
                out
            };
            let whole = run(&[&stream]);
            let mut reads = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let (read, after) = rest.split_at(rng.random_range(1..=rest.len().min(9)));
                reads.push(read);
                rest = after;
            }
            assert_eq!(run(&reads), whole, "max {max}, reads {reads:?}");
        }
    }

    #[test]
    fn an_idle_partial_request_is_flushed_with_its_reply_name() {
        let mut p = FrameParser::new(65536);
        p.push(b":rr:{\"jsonrpc\":");
        assert_eq!(p.next_frame(), None);
        assert!(p.has_partial());
        assert_eq!(
            p.expire(),
            Some(Frame::Bad {
                framing: Framing::Json,
                reply: Some("rr".into()),
                command: None,
                why: Bad::Incomplete(Cut::Timeout)
            })
        );
        assert!(!p.has_partial());
    }
}
