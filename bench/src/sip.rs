//! The SIP traffic of the benchmark: a 600-byte request, the 400-byte reply the responder
//! builds from it, and a Content-Length framer for reading either off a byte stream.
//!
//! Sizes are exact so that every target moves the same bytes; the body is padding.

/// Size in bytes of every request the load tools send.
pub const REQUEST_SIZE: usize = 600;
/// Size in bytes of every reply the responder sends.
pub const REPLY_SIZE: usize = 400;
/// Largest message the framer accepts before declaring the stream broken.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Builds a message of exactly `total` bytes: `head` (start line and headers, each ending in
/// CRLF), a Content-Length header, the blank line and a body of `x` padding.
///
/// Returns `None` when `head` alone is too long for `total`.
fn padded(head: &str, total: usize) -> Option<Vec<u8>> {
    // The Content-Length digits depend on the body length, which depends on the digits: try
    // each width.
    for digits in 1..=5 {
        let fixed = head.len() + "Content-Length: ".len() + digits + 4;
        let body = total.checked_sub(fixed)?;
        if body.to_string().len() == digits {
            let mut msg = Vec::with_capacity(total);
            msg.extend_from_slice(head.as_bytes());
            msg.extend_from_slice(format!("Content-Length: {body}\r\n\r\n").as_bytes());
            msg.resize(total, b'x');
            return Some(msg);
        }
    }
    None
}

/// The request number `seq` of connection `conn`: a MESSAGE of exactly [`REQUEST_SIZE`]
/// bytes with a Call-ID unique per connection and a CSeq counting requests.
pub fn request(conn: u32, seq: u32) -> Vec<u8> {
    let head = format!(
        "MESSAGE sip:bench@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK{conn:08x}{seq:010}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:load@127.0.0.1>;tag={conn:08x}\r\n\
         To: <sip:bench@127.0.0.1>\r\n\
         Call-ID: {conn:08x}-bench@127.0.0.1\r\n\
         CSeq: {seq:010} MESSAGE\r\n\
         Content-Type: text/plain\r\n"
    );
    // The head is about 330 bytes whatever the numbers: always fits.
    padded(&head, REQUEST_SIZE).unwrap_or_default()
}

/// The `200 OK` the responder sends for `request`, exactly [`REPLY_SIZE`] bytes, with the
/// request's Via, From, To, Call-ID and CSeq copied as a SIP server would.
///
/// Headers too long to fit are left out rather than making the reply longer.
pub fn reply(request: &[u8]) -> Vec<u8> {
    let mut head = String::from("SIP/2.0 200 OK\r\n");
    let text = String::from_utf8_lossy(head_of(request));
    for line in text.split("\r\n").skip(1) {
        let name = line.split(':').next().unwrap_or("").trim();
        let copied = ["via", "from", "to", "call-id", "cseq"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h));
        if copied && head.len() + line.len() + 2 + 40 < REPLY_SIZE {
            head.push_str(line);
            head.push_str("\r\n");
        }
    }
    padded(&head, REPLY_SIZE).unwrap_or_else(|| vec![b'x'; REPLY_SIZE])
}

/// The start line and headers of `msg`, without the blank line (all of `msg` if it has none).
fn head_of(msg: &[u8]) -> &[u8] {
    match find(msg, b"\r\n\r\n") {
        Some(end) => &msg[..end],
        None => msg,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What is wrong with a byte stream that is not the benchmark's SIP.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A message head without a readable Content-Length.
    #[error("a SIP message without a valid Content-Length")]
    ContentLength,
    /// A message (or unterminated head) beyond [`MAX_MESSAGE`].
    #[error("a SIP message longer than {MAX_MESSAGE} bytes")]
    TooLong,
}

/// Splits a byte stream into SIP messages by Content-Length.
///
/// Keep-alive CRLFs between messages are skipped. Bytes go in with [`Framer::buffer`] and
/// messages come out of [`Framer::next_message`].
#[derive(Debug, Default)]
pub struct Framer {
    /// Bytes read and not yet handed out as a message.
    buf: Vec<u8>,
    /// Where the unconsumed bytes of `buf` start (compacted lazily).
    start: usize,
}

impl Framer {
    /// A framer with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn buffer(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        while self.buf[self.start..].starts_with(b"\r\n") {
            self.start += 2;
        }
        let rest = &self.buf[self.start..];
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            return if rest.len() > MAX_MESSAGE {
                Err(FrameError::TooLong)
            } else {
                Ok(None)
            };
        };
        let body = content_length(&rest[..head_end]).ok_or(FrameError::ContentLength)?;
        let total = head_end + 4 + body;
        if total > MAX_MESSAGE {
            return Err(FrameError::TooLong);
        }
        if rest.len() < total {
            return Ok(None);
        }
        let msg = rest[..total].to_vec();
        self.start += total;
        if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(msg))
    }
}

/// The Content-Length (or compact `l`) of a message head.
fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            value.trim().parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_request_is_600_bytes_with_a_matching_content_length() {
        for (conn, seq) in [(0, 0), (49, 7), (u32::MAX, u32::MAX)] {
            let req = request(conn, seq);
            assert_eq!(req.len(), REQUEST_SIZE);
            let mut f = Framer::new();
            f.buffer(&req);
            assert_eq!(f.next_message().unwrap().unwrap(), req);
        }
    }

    #[test]
    fn a_reply_is_400_bytes_and_carries_the_request_call_id_and_cseq() {
        let rep = reply(&request(3, 42));
        assert_eq!(rep.len(), REPLY_SIZE);
        let text = String::from_utf8(rep.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(text.contains("\r\nCall-ID: 00000003-bench@127.0.0.1\r\n"));
        assert!(text.contains("\r\nCSeq: 0000000042 MESSAGE\r\n"));
        let mut f = Framer::new();
        f.buffer(&rep);
        assert_eq!(f.next_message().unwrap().unwrap(), rep);
    }

    #[test]
    fn the_framer_splits_coalesced_messages_fed_a_byte_at_a_time_and_skips_keepalives() {
        let (a, b) = (request(1, 1), request(1, 2));
        let stream = [a.as_slice(), b"\r\n\r\n", b.as_slice()].concat();
        let mut f = Framer::new();
        let mut got = Vec::new();
        for byte in &stream {
            f.buffer(std::slice::from_ref(byte));
            while let Some(m) = f.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![a, b]);
    }

    #[test]
    fn a_head_without_content_length_is_an_error() {
        let mut f = Framer::new();
        f.buffer(b"OPTIONS sip:x SIP/2.0\r\nVia: a\r\n\r\n");
        assert_eq!(f.next_message(), Err(FrameError::ContentLength));
    }
}
