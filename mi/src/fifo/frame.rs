//! Cuts the FIFO byte stream into requests. Both framings share the FIFO and are told apart
//! per request: after `:NAME:`, a `{` (or `[`) starts a 3.x JSON-RPC body and NAME is the reply
//! FIFO; anything else is the 2.x framing, where NAME is the command, the rest of the line the
//! reply FIFO, and parameter lines follow up to an empty line.
//!
//! Pure: bytes in, frames out, so every framing case is tested without a FIFO.

use crate::text::{self, TextParam};

/// A header (`:name:reply`) longer than this without its end is garbage.
pub(crate) const MAX_HEADER: usize = 1024;

/// Which framing a request used (decides how errors are answered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `:reply_fifo:{json-rpc}` (OpenSIPS 3.x and later).
    Json,
    /// `:command:reply_fifo\nparam\n...\n\n` (OpenSIPS 2.x and older).
    Text,
}

/// Why a request could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Bad {
    /// Larger than `max_request_size`; the rest of it is drained.
    TooLarge,
    /// Not a request (no leading `:`, no name separator, a stray quote ...).
    Garbled(&'static str),
    /// Stopped arriving before it was complete.
    Incomplete,
}

/// One request cut from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A 3.x request.
    Json {
        /// The reply FIFO name (empty = no reply).
        reply: String,
        /// The JSON-RPC body.
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

/// Finds where a JSON value that starts with `{` or `[` ends, across reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct JsonScan {
    /// Open brackets not yet closed.
    depth: usize,
    /// Inside a string, where brackets do not count.
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escape: bool,
}

impl JsonScan {
    /// Feeds bytes; returns the index just past the closing bracket once the value ends.
    fn feed(&mut self, data: &[u8]) -> Option<usize> {
        for (i, &b) in data.iter().enumerate() {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// How much of the current line a 2.x drain has seen: the request ends at a line that is empty
/// once one trailing CR is taken off, exactly as [`FrameParser`] reads parameter lines (a line
/// of several CRs, or of blanks, is skipped, not the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineSoFar {
    /// Nothing yet: the last byte ended a line.
    Empty,
    /// One CR.
    Cr,
    /// Anything else.
    Content,
}

impl LineSoFar {
    /// Where the line ending `buf` stands (`buf` holds at least the header's newline).
    fn of(buf: &[u8]) -> Self {
        match buf {
            [.., b'\n'] => LineSoFar::Empty,
            [.., b'\n', b'\r'] => LineSoFar::Cr,
            _ => LineSoFar::Content,
        }
    }
}

/// Draining the rest of a request that was too large.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Drain {
    /// Until the JSON value ends.
    Json(JsonScan),
    /// Until the empty line that ends a 2.x request.
    Text(LineSoFar),
}

/// The FIFO stream parser.
#[derive(Debug)]
pub(crate) struct FrameParser {
    /// Bytes read but not yet cut into a request.
    buf: Vec<u8>,
    /// `max_request_size`.
    max: usize,
    /// Set while the rest of a too-large request is being dropped.
    drain: Option<Drain>,
}

impl FrameParser {
    /// A parser refusing requests larger than `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameParser {
            buf: Vec::new(),
            max,
            drain: None,
        }
    }

    /// Whether bytes of an unfinished request are held (the idle timeout applies).
    pub fn has_partial(&self) -> bool {
        self.drain.is_some() || self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }

    /// Bytes held between reads (the fuzz target checks they stay bounded).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds bytes read from the FIFO.
    pub fn push(&mut self, data: &[u8]) {
        let rest = match self.drain.take() {
            None => data,
            Some(Drain::Json(mut scan)) => match scan.feed(data) {
                Some(end) => &data[end..],
                None => {
                    self.drain = Some(Drain::Json(scan));
                    return;
                }
            },
            Some(Drain::Text(mut line)) => {
                let mut end = None;
                for (i, &b) in data.iter().enumerate() {
                    line = match (b, line) {
                        (b'\n', LineSoFar::Empty | LineSoFar::Cr) => {
                            end = Some(i + 1);
                            break;
                        }
                        (b'\n', LineSoFar::Content) => LineSoFar::Empty,
                        (b'\r', LineSoFar::Empty) => LineSoFar::Cr,
                        _ => LineSoFar::Content,
                    };
                }
                match end {
                    Some(end) => &data[end..],
                    None => {
                        self.drain = Some(Drain::Text(line));
                        return;
                    }
                }
            }
        };
        self.buf.extend_from_slice(rest);
    }

    /// The next complete request, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.drain.is_some() {
            return None;
        }
        let start = self
            .buf
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(self.buf.len());
        self.buf.drain(..start);
        if self.buf.is_empty() {
            return None;
        }
        let newline = self.buf.iter().position(|&b| b == b'\n');
        if self.buf[0] != b':' {
            return self.garbage_line(newline, "a request must begin with ':'");
        }
        let sep = self.buf[1..].iter().position(|&b| b == b':').map(|i| i + 1);
        let sep = match sep {
            Some(s) if newline.is_none_or(|n| s < n) => s,
            _ => return self.garbage_line(newline, "no ':' after the name"),
        };
        let name = String::from_utf8_lossy(&self.buf[1..sep]).into_owned();
        let body_start = sep
            + 1
            + self.buf[sep + 1..]
                .iter()
                .take_while(|&&b| b == b' ' || b == b'\t')
                .count();
        match self.buf.get(body_start) {
            None => self.wait_or_too_large(Framing::Text, None, None),
            Some(b'{' | b'[') => self.json_frame(name, body_start),
            Some(_) => self.text_frame(name, sep, newline),
        }
    }

    fn json_frame(&mut self, reply: String, body_start: usize) -> Option<Frame> {
        let mut scan = JsonScan::default();
        match scan.feed(&self.buf[body_start..]) {
            Some(len) => {
                let end = body_start + len;
                // Complete but too large: refused as when it is cut, whatever the reads were.
                if end > self.max {
                    self.buf.drain(..end);
                    return Some(Frame::Bad {
                        framing: Framing::Json,
                        reply: Some(reply),
                        command: None,
                        why: Bad::TooLarge,
                    });
                }
                let body = self.buf[body_start..end].to_vec();
                self.buf.drain(..end);
                Some(Frame::Json { reply, body })
            }
            None if self.buf.len() > self.max => {
                self.buf.clear();
                self.drain = Some(Drain::Json(scan));
                Some(Frame::Bad {
                    framing: Framing::Json,
                    reply: Some(reply),
                    command: None,
                    why: Bad::TooLarge,
                })
            }
            None => None,
        }
    }

    fn text_frame(&mut self, command: String, sep: usize, newline: Option<usize>) -> Option<Frame> {
        let Some(header_end) = newline else {
            return self.wait_or_too_large(Framing::Text, None, Some(command));
        };
        let reply = String::from_utf8_lossy(&self.buf[sep + 1..header_end])
            .trim()
            .to_owned();
        // Parameter lines up to an empty one; lines of blanks are skipped, as 2.x did.
        let mut lines = Vec::new();
        let mut pos = header_end + 1;
        let end = loop {
            let Some(nl) = self.buf[pos..].iter().position(|&b| b == b'\n') else {
                if self.buf.len() > self.max {
                    let line = LineSoFar::of(&self.buf);
                    self.buf.clear();
                    self.drain = Some(Drain::Text(line));
                    return Some(Frame::Bad {
                        framing: Framing::Text,
                        reply: Some(reply),
                        command: Some(command),
                        why: Bad::TooLarge,
                    });
                }
                return None;
            };
            let line = &self.buf[pos..pos + nl];
            pos += nl + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break pos;
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                lines.push(String::from_utf8_lossy(line).into_owned());
            }
        };
        self.buf.drain(..end);
        if end > self.max {
            return Some(Frame::Bad {
                framing: Framing::Text,
                reply: Some(reply),
                command: Some(command),
                why: Bad::TooLarge,
            });
        }
        let params: Option<Vec<TextParam>> =
            lines.iter().map(|l| text::parse_param_line(l)).collect();
        Some(match params {
            Some(params) => Frame::Text {
                command,
                reply,
                params,
            },
            None => Frame::Bad {
                framing: Framing::Text,
                reply: Some(reply),
                command: Some(command),
                why: Bad::Garbled("bad parameter line"),
            },
        })
    }

    /// A header that cannot be a request: dropped through its newline (or whole, when there
    /// is none yet and it is already too long to be a header).
    fn garbage_line(&mut self, newline: Option<usize>, why: &'static str) -> Option<Frame> {
        match newline {
            Some(n) => {
                self.buf.drain(..=n);
            }
            None if self.buf.len() > MAX_HEADER => self.buf.clear(),
            None => return None,
        }
        Some(Frame::Bad {
            framing: Framing::Text,
            reply: None,
            command: None,
            why: Bad::Garbled(why),
        })
    }

    fn wait_or_too_large(
        &mut self,
        framing: Framing,
        reply: Option<String>,
        command: Option<String>,
    ) -> Option<Frame> {
        if self.buf.len() <= MAX_HEADER {
            return None;
        }
        self.buf.clear();
        Some(Frame::Bad {
            framing,
            reply,
            command,
            why: Bad::Garbled("header too long"),
        })
    }

    /// Gives up on what is buffered (no new bytes for a while): returns it as an incomplete
    /// request, answered if its header names a reply FIFO.
    pub fn flush_partial(&mut self) -> Option<Frame> {
        if self.drain.take().is_some() {
            // Already answered as too large when it was cut.
            self.buf.clear();
            return None;
        }
        let buf = std::mem::take(&mut self.buf);
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_start();
        if text.is_empty() {
            return None;
        }
        let header = text.strip_prefix(':').and_then(|rest| rest.split_once(':'));
        let frame = match header {
            Some((name, rest)) if rest.trim_start_matches([' ', '\t']).starts_with(['{', '[']) => {
                Frame::Bad {
                    framing: Framing::Json,
                    reply: Some(name.to_owned()),
                    command: None,
                    why: Bad::Incomplete,
                }
            }
            Some((command, rest)) => Frame::Bad {
                framing: Framing::Text,
                reply: rest.split_once('\n').map(|(r, _)| r.trim().to_owned()),
                command: Some(command.to_owned()),
                why: Bad::Incomplete,
            },
            None => Frame::Bad {
                framing: Framing::Text,
                reply: None,
                command: None,
                why: Bad::Incomplete,
            },
        };
        Some(frame)
    }
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
    /// the reads.
    #[test]
    fn a_drained_text_request_ends_where_a_whole_one_does() {
        let stream: &[u8] = b":ps:r\nxxxxxxxx\n\r\r\n:ps:swallowed\n\n:ps:r2\n\n";
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
    }

    #[test]
    fn an_idle_partial_request_is_flushed_with_its_reply_name() {
        let mut p = FrameParser::new(65536);
        p.push(b":rr:{\"jsonrpc\":");
        assert_eq!(p.next_frame(), None);
        assert!(p.has_partial());
        assert_eq!(
            p.flush_partial(),
            Some(Frame::Bad {
                framing: Framing::Json,
                reply: Some("rr".into()),
                command: None,
                why: Bad::Incomplete
            })
        );
        assert!(!p.has_partial());
    }
}
