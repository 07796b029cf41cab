//! Any bytes, pushed whole into one framer and in pieces (sizes taken from the input) into
//! another: neither panics, both hand out the same messages and counts (framing never depends on
//! how reads were split), the buffer never exceeds the limits, every message handed out has a
//! SIP start line and exactly the body its Content-Length declares, and every head reported lost
//! is a whole SIP head; the Call-ID and CSeq a message's index locates are those a walk of the
//! message alone finds.
//!
//! Input layout: byte 0 picks the limits (0xff = the defaults, else small ones that are easy to
//! hit), bytes 1..9 are the read sizes used in turn, the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../src/sip/mod.rs"]
mod sip;

use sip::{Framed, HeadError, HeadIndex, Limits, SipFramer, parse_head, read_head};

fn limits(sel: u8) -> Limits {
    if sel == 0xff {
        return Limits::default();
    }
    let max_header_bytes = 16 + usize::from(sel & 0x0f) * 64;
    Limits {
        max_header_bytes,
        max_message_bytes: max_header_bytes + usize::from(sel >> 4) * 128,
        max_resync_bytes: usize::from(sel) * 8,
    }
}

/// A message handed out is a SIP message whose body is exactly its Content-Length; the head of
/// a lost message is a whole SIP head.
fn check(framed: &Framed) {
    let (bytes, declared) = match framed {
        Framed::Message(msg, index) => {
            // What the framer's walk found is what a walk of the message alone finds, and the
            // Call-ID it gives is read_head's.
            assert_eq!(*index, HeadIndex::of(msg));
            let call_id = read_head(msg).ok().and_then(|h| h.call_id);
            assert_eq!(index.call_id(msg), call_id);
            (msg, None)
        }
        Framed::Oversize {
            head,
            content_length,
        } => (head, Some(*content_length)),
        Framed::Lost {
            head: Some(head), ..
        } => {
            match read_head(head) {
                Ok(h) => assert_eq!(h.head_len, head.len()),
                Err(HeadError::NotText { .. }) => {}
                Err(e) => panic!("framer reported the head {head:?}: {e}"),
            }
            return;
        }
        Framed::Lost { head: None, .. } => return,
    };
    match parse_head(bytes) {
        Ok(head) => match declared {
            None => assert_eq!(
                head.content_length,
                Some((bytes.len() - head.head_len) as u64)
            ),
            Some(len) => {
                assert_eq!(head.head_len, bytes.len());
                assert_eq!(head.content_length, Some(len));
            }
        },
        // The framer does not look at Call-ID; everything else it checked.
        Err(HeadError::NotText { .. }) => {}
        Err(e) => panic!("framer handed out {bytes:?}: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let (plan, stream) = data.split_at(9);
    let limits = limits(plan[0]);
    let sizes: Vec<usize> = plan[1..].iter().map(|&b| usize::from(b) * 3 + 1).collect();

    let mut whole = SipFramer::new(limits);
    let mut expected = Vec::new();
    whole.push_framed(stream, |f| expected.push(f));

    let mut split = SipFramer::new(limits);
    let bound = split.limits().max_message_bytes;
    let mut got = Vec::new();
    let mut rest = stream;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (read, after) = rest.split_at(rest.len().min(*size));
        split.push_framed(read, |f| got.push(f));
        assert!(split.buffered() <= bound);
        assert!(split.buffer_capacity() <= bound);
        rest = after;
    }
    assert_eq!(got, expected);
    assert_eq!(split.counters(), whole.counters());
    assert_eq!(split.is_stopped(), whole.is_stopped());
    got.iter().for_each(check);
});
