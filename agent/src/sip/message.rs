//! One SIP message as routes and dynamic traces read it: the start line and headers the framer
//! cut out, looked up only when asked (a route that reads no SIP value parses no header). The
//! Call-ID and CSeq come from where the framer's walk found them ([`HeadIndex`]); any other
//! header is one walk of the headers per lookup.

use heptap_filters::{SipInspect, SipStart};

use super::head::{HeadIndex, Kind, header, read_head, request_uri, start_kind};

/// A whole SIP message (a framed stream message or one WS data frame), read lazily.
#[derive(Clone, Copy, Debug)]
pub struct SipMessage<'a> {
    /// The message's bytes, start line first.
    bytes: &'a [u8],
    /// Where its Call-ID and CSeq lie, when known.
    index: Option<HeadIndex>,
}

impl<'a> SipMessage<'a> {
    /// The message in `bytes`; every header is looked up by a walk.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, index: None }
    }

    /// The message in `bytes` whose Call-ID and CSeq `index` locates (the framer's), or, with
    /// `None` (a WS frame), one whose headers are walked only when asked.
    pub fn indexed(bytes: &'a [u8], index: Option<HeadIndex>) -> Self {
        Self { bytes, index }
    }

    /// The Call-ID for HEP chunk 0x0011, as [`read_head`] reads it (the first non-empty one).
    pub fn call_id(&self) -> Option<&'a str> {
        match self.index {
            Some(index) => index.call_id(self.bytes),
            None => read_head(self.bytes).ok().and_then(|h| h.call_id),
        }
    }
}

impl SipInspect for SipMessage<'_> {
    fn start(&self) -> Option<SipStart<'_>> {
        Some(match start_kind(self.bytes)? {
            Kind::Request { method } => SipStart::Request {
                method,
                uri: request_uri(self.bytes)?,
            },
            Kind::Response { code } => SipStart::Response { code },
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        match self.index {
            Some(index) if name.eq_ignore_ascii_case("Call-ID") => index.call_id_header(self.bytes),
            Some(index) if name.eq_ignore_ascii_case("CSeq") => index.cseq_header(self.bytes),
            _ => header(self.bytes, name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heptap_filters::sip_fields;

    const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/TCP 192.0.2.10:40000;branch=z9hG4bK1\r\n\
        f: \"Alice\" <sip:alice@example.com>;tag=1\r\n\
        To:\r\n <sip:bob@example.com>\r\n\
        Call-ID: c1@host\r\n\
        CSeq: 1 INVITE\r\n\
        Content-Length: 0\r\n\
        \r\n";

    #[test]
    fn reads_the_start_line_and_headers_with_compact_forms_and_folding() {
        let m = SipMessage::new(INVITE);
        assert_eq!(
            m.start(),
            Some(SipStart::Request {
                method: "INVITE",
                uri: "sip:bob@example.com"
            })
        );
        assert_eq!(
            m.header("from"),
            Some("\"Alice\" <sip:alice@example.com>;tag=1")
        );
        assert_eq!(m.header("TO"), Some("<sip:bob@example.com>"));
        assert_eq!(m.header("i"), None, "a compact name is not a full name");
        assert_eq!(m.header("Call-ID"), Some("c1@host"));
        assert_eq!(m.header("X-Absent"), None);
        assert_eq!(sip_fields::method(&m), Some("INVITE"));
    }

    #[test]
    fn an_indexed_message_reads_as_one_walked() {
        let indexed = SipMessage::indexed(INVITE, Some(HeadIndex::of(INVITE)));
        let walked = SipMessage::new(INVITE);
        for name in ["Call-ID", "call-id", "CSeq", "cseq", "From", "i"] {
            assert_eq!(indexed.header(name), walked.header(name), "{name}");
        }
        assert_eq!(sip_fields::method(&indexed), Some("INVITE"));
        assert_eq!(indexed.call_id(), Some("c1@host"));
        assert_eq!(walked.call_id(), Some("c1@host"));
    }

    #[test]
    fn a_body_is_not_headers_and_garbage_has_no_start() {
        let m = SipMessage::new(b"SIP/2.0 200 OK\r\nCSeq: 2 BYE\r\n\r\nFrom: body\r\n");
        assert_eq!(m.start(), Some(SipStart::Response { code: 200 }));
        assert_eq!(m.header("From"), None);
        assert_eq!(sip_fields::method(&m), Some("BYE"));
        assert_eq!(SipMessage::new(b"\x16\x03\x01garbage").start(), None);
    }
}
