//! The framing rules, each shown with the bytes on the wire.

use bytes::Bytes;
use proptest::prelude::*;

use super::{Framed, FramerCounters, HeadIndex, Limits, LostReason, SipFramer, parse_head};

const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK776asdhds\r\n\
From: <sip:alice@example.com>;tag=1928301774\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 14\r\n\
\r\n\
v=0\r\no=- 1 1\r\n";

const OK: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK776asdhds\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 0\r\n\
\r\n";

/// Pushes each read in turn; returns every message handed out.
fn frame(framer: &mut SipFramer, reads: &[&[u8]]) -> Vec<Bytes> {
    let mut out = Vec::new();
    for read in reads {
        framer.push(read, |msg| out.push(msg));
    }
    out
}

/// A message as the framer hands it out, its index from a walk of its own.
fn framed_message(msg: &'static [u8]) -> Framed {
    Framed::Message(Bytes::from_static(msg), HeadIndex::of(msg))
}

fn framer() -> SipFramer {
    SipFramer::new(Limits::default())
}

fn counters(messages: u64, keepalives: u64, malformed: u64) -> FramerCounters {
    FramerCounters {
        messages,
        keepalives,
        malformed,
        ..FramerCounters::default()
    }
}

#[test]
fn one_message_in_one_read_is_handed_out_whole() {
    let mut f = framer();
    assert_eq!(frame(&mut f, &[INVITE]), [INVITE]);
    assert_eq!(f.counters(), counters(1, 0, 0));
    assert_eq!(f.buffered(), 0);
}

#[test]
fn two_messages_coalesced_in_one_read_are_two_messages() {
    let stream = [INVITE, OK].concat();
    let mut f = framer();
    assert_eq!(frame(&mut f, &[&stream]), [INVITE, OK]);
    assert_eq!(f.counters(), counters(2, 0, 0));
}

#[test]
fn a_stream_split_at_every_offset_gives_the_same_messages() {
    let stream = [INVITE, b"\r\n\r\n", OK, b"\r\n", INVITE].concat();
    for a in 0..=stream.len() {
        let mut f = framer();
        let msgs = frame(&mut f, &[&stream[..a], &stream[a..]]);
        assert_eq!(msgs, [INVITE, OK, INVITE], "split at {a}");
        assert_eq!(f.counters(), counters(3, 2, 0), "split at {a}");
        assert_eq!(f.buffered(), 0);
    }
    let mut f = framer();
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(frame(&mut f, &bytes), [INVITE, OK, INVITE]);
}

#[test]
fn a_message_split_over_three_reads_is_byte_identical() {
    let mut f = framer();
    assert!(frame(&mut f, &[&INVITE[..10], &INVITE[10..200]]).is_empty());
    assert_eq!(f.buffered(), 200);
    assert_eq!(frame(&mut f, &[&INVITE[200..]]), [INVITE]);
    assert_eq!(f.buffered(), 0);
}

#[test]
fn compact_l_gives_the_body_length() {
    let msg = b"MESSAGE sip:a@b SIP/2.0\r\ni: c1\r\nl: 5\r\n\r\nhello";
    let mut f = framer();
    assert_eq!(frame(&mut f, &[msg, OK]), [&msg[..], OK]);
}

#[test]
fn header_names_are_case_insensitive() {
    let msg = b"MESSAGE sip:a@b SIP/2.0\r\nCONTENT-length: 2\r\n\r\nhi";
    let lower = b"MESSAGE sip:a@b SIP/2.0\r\ncontent-length: 2\r\n\r\nhi";
    let compact = b"MESSAGE sip:a@b SIP/2.0\r\nL: 2\r\n\r\nhi";
    let mut f = framer();
    assert_eq!(
        frame(&mut f, &[msg, lower, compact]),
        [&msg[..], &lower[..], &compact[..]]
    );
}

#[test]
fn content_length_zero_ends_the_message_at_the_empty_line() {
    let msg = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n";
    let stream = [&msg[..], &msg[..]].concat();
    let mut f = framer();
    assert_eq!(frame(&mut f, &[&stream]), [&msg[..], &msg[..]]);
}

#[test]
fn a_body_with_crlfs_and_empty_lines_is_framed_by_length_not_lines() {
    let msg = b"INFO sip:a@b SIP/2.0\r\nContent-Length: 12\r\n\r\n\r\n\r\nline\r\n\r\n";
    let mut f = framer();
    assert_eq!(frame(&mut f, &[msg, OK]), [&msg[..], OK]);
    assert_eq!(f.counters(), counters(2, 0, 0));
}

#[test]
fn keepalive_pings_and_pongs_between_messages_are_skipped_and_counted() {
    // RFC 5626: ping = CRLFCRLF, pong = CRLF.
    let stream = [b"\r\n\r\n", OK, b"\r\n", OK, b"\r\n\r\n\r\n"].concat();
    let mut f = framer();
    assert_eq!(frame(&mut f, &[&stream]), [OK, OK]);
    assert_eq!(f.counters(), counters(2, 4, 0));
    // The same ping split in two reads is one keep-alive, not two.
    let mut f = framer();
    assert!(frame(&mut f, &[b"\r\n", b"\r\n"]).is_empty());
    assert_eq!(f.counters(), counters(0, 1, 0));
}

#[test]
fn garbage_before_a_start_line_is_skipped_and_counted() {
    let stream = [&b"hello there\r\n\x00\x01binary\r\n"[..], OK].concat();
    let mut f = framer();
    assert_eq!(frame(&mut f, &[&stream]), [OK]);
    assert_eq!(f.counters(), counters(1, 0, 1));
    assert!(!f.is_stopped());
}

#[test]
fn garbage_split_across_reads_resyncs_the_same_way() {
    let stream = [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], OK, OK].concat();
    for a in 0..=stream.len() {
        let mut f = framer();
        assert_eq!(
            frame(&mut f, &[&stream[..a], &stream[a..]]),
            [OK, OK],
            "split at {a}"
        );
        assert_eq!(f.counters(), counters(2, 0, 1), "split at {a}");
    }
}

#[test]
fn a_message_without_content_length_is_malformed_and_the_next_one_is_found() {
    let no_length =
        b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\nsome body\r\nof unknown size\r\n";
    let stream = [&no_length[..], OK].concat();
    let mut f = framer();
    assert_eq!(frame(&mut f, &[&stream]), [OK]);
    assert_eq!(f.counters(), counters(1, 0, 1));
}

#[test]
fn a_bad_or_conflicting_content_length_is_malformed() {
    let bad = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: ten\r\n\r\n";
    let conflict = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\n";
    let stream = [&bad[..], OK, &conflict[..], OK].concat();
    let mut f = framer();
    assert_eq!(frame(&mut f, &[&stream]), [OK, OK]);
    assert_eq!(f.counters(), counters(2, 0, 2));
}

/// Everything the framer hands out for `reads`.
fn framed(framer: &mut SipFramer, reads: &[&[u8]]) -> Vec<Framed> {
    let mut out = Vec::new();
    for read in reads {
        framer.push_framed(read, |f| out.push(f));
    }
    out
}

fn lost(reason: LostReason, bytes: usize, head: Option<&[u8]>) -> Framed {
    Framed::Lost {
        reason,
        bytes: bytes as u64,
        head: head.map(Bytes::copy_from_slice),
    }
}

#[test]
fn a_head_whose_length_is_unknown_is_reported_lost_with_the_head_whatever_the_reads() {
    let conflict = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: c\r\nl: 4\r\nContent-Length: 0\r\n\r\n";
    let no_length = b"ACK sip:a@b SIP/2.0\r\nCall-ID: c\r\n\r\n";
    let bad = b"BYE sip:a@b SIP/2.0\r\nl: 1x\r\n\r\n";
    let stream = [&conflict[..], b"body\r\n", no_length, bad, OK].concat();
    let expected = [
        lost(
            LostReason::ConflictingContentLength { first: 4, other: 0 },
            conflict.len(),
            Some(conflict),
        ),
        lost(
            LostReason::NoContentLength,
            no_length.len(),
            Some(no_length),
        ),
        lost(LostReason::BadContentLength, bad.len(), Some(bad)),
        framed_message(OK),
    ];
    for step in [1, 5, 33, stream.len()] {
        let mut f = framer();
        let reads: Vec<&[u8]> = stream.chunks(step).collect();
        assert_eq!(framed(&mut f, &reads), expected, "reads of {step}");
        assert_eq!(f.counters(), counters(1, 0, 3), "reads of {step}");
    }
}

#[test]
fn garbage_is_reported_once_per_loss_then_skipped_quietly() {
    let stream = [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], OK, b"junk\n", OK].concat();
    let mut f = framer();
    assert_eq!(
        framed(&mut f, &[&stream]),
        [
            lost(LostReason::NotSip, 16, None),
            framed_message(OK),
            lost(LostReason::NotSip, 5, None),
            framed_message(OK),
        ]
    );
}

#[test]
fn giving_up_is_reported_with_the_reason() {
    let limits = Limits {
        max_header_bytes: 64,
        max_message_bytes: 64,
        max_resync_bytes: 100,
    };
    let mut f = SipFramer::new(limits);
    let long = [&b"INVITE "[..], &[b'a'; 100]].concat();
    assert_eq!(
        framed(&mut f, &[&long]),
        [lost(LostReason::LineTooLong { max: 64 }, 64, None)]
    );
    let mut f = SipFramer::new(limits);
    let lines = b"not sip\r\n".repeat(20);
    assert_eq!(
        framed(&mut f, &[&lines]),
        [
            lost(LostReason::NotSip, 9, None),
            lost(LostReason::NoStartLine, 108, None)
        ]
    );
    assert!(f.is_stopped());
}

#[test]
fn a_head_of_17_kib_is_framed_under_the_default_limits() {
    let head = format!(
        "INVITE sip:a@b SIP/2.0\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "b".repeat(17 * 1024)
    );
    let mut f = framer();
    assert_eq!(frame(&mut f, &[head.as_bytes()]), [head.as_bytes()]);
    assert_eq!(Limits::default(), Limits::for_messages(65_535));
}

#[test]
fn an_oversize_message_offers_its_head_and_skips_its_body_without_holding_it() {
    let limits = Limits {
        max_header_bytes: 256,
        max_message_bytes: 1024,
        ..Limits::default()
    };
    let head = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n";
    let body = vec![b'x'; 5000];
    let mut f = SipFramer::new(limits);
    let mut seen = Vec::new();
    f.push_framed(head, |x| seen.push(x));
    for piece in body.chunks(700) {
        f.push_framed(piece, |x| seen.push(x));
        assert_eq!(f.buffered(), 0);
    }
    f.push_framed(OK, |x| seen.push(x));
    assert_eq!(
        seen,
        [
            Framed::Oversize {
                head: Bytes::from_static(head),
                content_length: 5000
            },
            framed_message(OK),
        ]
    );
    assert_eq!(f.counters().oversize, 1);
    assert_eq!(f.counters().messages, 1);
    // `push` hands out messages only.
    let mut f = SipFramer::new(limits);
    let stream = [&head[..], &body, OK].concat();
    assert_eq!(frame(&mut f, &[&stream]), [OK]);
    assert_eq!(f.counters().oversize, 1);
}

#[test]
fn a_message_of_exactly_max_message_bytes_is_not_oversize() {
    let head = b"MESSAGE sip:a@b SIP/2.0\r\nl: 46\r\n\r\n";
    let msg = [&head[..], &[b'y'; 46]].concat();
    assert_eq!(msg.len(), 80);
    let limits = Limits {
        max_header_bytes: 64,
        max_message_bytes: 80,
        ..Limits::default()
    };
    let mut f = SipFramer::new(limits);
    assert_eq!(frame(&mut f, &[&msg[..40], &msg[40..]]), [&msg[..]]);
    let limits = Limits {
        max_message_bytes: 79,
        ..limits
    };
    let mut f = SipFramer::new(limits);
    assert!(frame(&mut f, &[&msg]).is_empty());
    assert_eq!(f.counters().oversize, 1);
}

#[test]
fn a_head_beyond_the_header_bound_is_malformed_and_the_next_message_is_found() {
    let limits = Limits {
        max_header_bytes: 256,
        ..Limits::default()
    };
    let mut big = b"MESSAGE sip:a@b SIP/2.0\r\n".to_vec();
    for i in 0..20 {
        big.extend_from_slice(format!("X-Pad-{i}: padding padding\r\n").as_bytes());
    }
    big.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    assert!(big.len() > 2 * 256 && OK.len() < 256);
    let stream = [&big[..], OK].concat();
    for step in [1, 7, 100, stream.len()] {
        let mut f = SipFramer::new(limits);
        let reads: Vec<&[u8]> = stream.chunks(step).collect();
        assert_eq!(frame(&mut f, &reads), [OK], "reads of {step}");
        assert_eq!(f.counters(), counters(1, 0, 1), "reads of {step}");
    }
}

/// Found by the `sip_framer` fuzz target: a start line split across reads that alone fills the
/// header bound was judged (too long, malformed) only when more bytes came, so at the end of
/// the stream the counts depended on how the reads fell.
#[test]
fn a_split_start_line_as_long_as_the_header_bound_is_judged_at_once() {
    let limits = Limits {
        max_header_bytes: 16,
        max_message_bytes: 400,
        max_resync_bytes: 384,
    };
    let stream: &[u8] = b"\n7\n\x00\x01\xff\r\nSIP/2.0 200\nSIP/2.0 200 OK\r\n";
    let mut whole = SipFramer::new(limits);
    assert!(frame(&mut whole, &[stream]).is_empty());
    let mut split = SipFramer::new(limits);
    let reads: Vec<&[u8]> = stream.chunks(13).collect();
    assert!(frame(&mut split, &reads).is_empty());
    assert_eq!(whole.counters(), counters(0, 1, 3));
    assert_eq!(split.counters(), whole.counters());
    assert_eq!(split.buffered(), 0);
}

#[test]
fn ten_megabytes_without_a_newline_never_exceed_the_bound_and_stop_tracing() {
    let limits = Limits::default();
    let garbage = vec![b'A'; 10 * 1024 * 1024];
    let mut f = SipFramer::new(limits);
    for read in garbage.chunks(1000) {
        f.push(read, |_| panic!("garbage is not a message"));
        assert!(f.buffered() <= limits.max_header_bytes);
        assert!(f.buffer_capacity() <= limits.max_header_bytes);
    }
    assert!(f.is_stopped());
    assert_eq!(f.buffer_capacity(), 0);
    assert_eq!(f.counters().gave_up, 1);
    assert_eq!(f.counters().malformed, 1);
    // Once stopped, even valid SIP is not traced.
    assert!(frame(&mut f, &[OK]).is_empty());
}

#[test]
fn garbage_lines_with_no_start_line_stop_tracing_after_the_resync_budget() {
    let limits = Limits::default();
    let line = b"this is not sip at all, just text\r\n";
    let mut f = SipFramer::new(limits);
    let mut fed = 0;
    while !f.is_stopped() {
        f.push(line, |_| panic!("garbage is not a message"));
        fed += line.len();
        assert!(f.buffered() < limits.max_header_bytes);
        assert!(fed <= limits.max_resync_bytes + 2 * line.len());
    }
    assert!(fed > limits.max_resync_bytes);
    assert_eq!(f.counters().gave_up, 1);
}

#[test]
fn a_garbage_line_longer_than_the_header_bound_stops_tracing() {
    let limits = Limits {
        max_header_bytes: 64,
        ..Limits::default()
    };
    let stream = [&b"junk\r\n"[..], &[b'z'; 100], b"\r\n", OK].concat();
    let mut f = SipFramer::new(limits);
    assert!(frame(&mut f, &[&stream]).is_empty());
    assert!(f.is_stopped());
}

#[test]
fn folded_headers_are_read_through() {
    let msg = b"MESSAGE sip:a@b SIP/2.0\r\n\
        Subject: one\r\n two\r\n\
        Content-Length:\r\n 3\r\n\
        \r\n\
        abc";
    let mut f = framer();
    assert_eq!(frame(&mut f, &[msg, OK]), [&msg[..], OK]);
}

#[test]
fn bare_lf_heads_are_framed() {
    let msg = b"SIP/2.0 100 Trying\nl: 0\n\n";
    let mut f = framer();
    assert_eq!(frame(&mut f, &[msg, msg]), [&msg[..], &msg[..]]);
}

#[test]
fn a_framed_response_gives_its_code_and_cseq_method() {
    let mut f = framer();
    let msgs = frame(&mut f, &[OK]);
    let head = parse_head(&msgs[0]).unwrap();
    assert_eq!(head.kind, super::Kind::Response { code: 200 });
    assert_eq!(head.cseq_method, Some("INVITE"));
    assert_eq!(head.method(), Some("INVITE"));
    assert_eq!(head.call_id, Some("a84b4c76e66710@pc33.example.com"));
}

#[test]
fn take_counters_reports_what_happened_since_the_last_take() {
    let mut f = framer();
    frame(&mut f, &[OK, b"\r\n\r\n"]);
    assert_eq!(f.take_counters(), counters(1, 1, 0));
    frame(&mut f, &[OK]);
    assert_eq!(f.take_counters(), counters(1, 0, 0));
    assert_eq!(f.take_counters(), FramerCounters::default());
    assert_eq!(f.counters(), counters(2, 1, 0));
}

#[test]
fn limits_are_clamped_to_something_workable() {
    let f = SipFramer::new(Limits {
        max_header_bytes: 1_000_000,
        max_message_bytes: 0,
        max_resync_bytes: 0,
    });
    assert_eq!(f.limits().max_message_bytes, 16);
    assert_eq!(f.limits().max_header_bytes, 16);
}

/// Valid messages of several shapes (compact `l`, folded lines, bodies with CRLFs, bare LF).
fn message() -> impl Strategy<Value = Vec<u8>> {
    (
        0..4usize,
        prop::collection::vec(prop::sample::select(&b"ab\r\n=x "[..]), 0..300),
        0..3u16,
    )
        .prop_map(|(shape, body, n)| {
            let head = match shape {
                0 => format!(
                    "INVITE sip:{n}@example.com SIP/2.0\r\nCall-ID: c{n}\r\nCSeq: {n} INVITE\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                ),
                1 => format!("SIP/2.0 200 OK\r\ni: c{n}\r\nl: {}\r\n\r\n", body.len()),
                2 => format!(
                    "MESSAGE sip:a@b SIP/2.0\r\nSubject: x\r\n\tfolded\r\ncontent-length:\r\n {}\r\n\r\n",
                    body.len()
                ),
                _ => format!("NOTIFY sip:a@b SIP/2.0\nl: {}\n\n", body.len()),
            };
            [head.as_bytes(), &body].concat()
        })
}

fn keepalive() -> impl Strategy<Value = &'static [u8]> {
    prop::sample::select(vec![&b""[..], b"\r\n", b"\r\n\r\n"])
}

/// Cuts `stream` at the given fractions.
fn split_at<'a>(stream: &'a [u8], cuts: &[f64]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| ((stream.len() as f64) * c) as usize)
        .collect();
    at.push(0);
    at.push(stream.len());
    at.sort_unstable();
    at.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
}

proptest! {
    #[test]
    fn any_split_of_valid_messages_and_keepalives_gives_exactly_those_messages(
        parts in prop::collection::vec((keepalive(), message()), 1..8),
        cuts in prop::collection::vec(0.0..1.0f64, 0..12),
    ) {
        let stream: Vec<u8> = parts.iter().flat_map(|(k, m)| [*k, &m[..]].concat()).collect();
        let keepalives = parts.iter().filter(|(k, _)| !k.is_empty()).count() as u64;
        let mut f = framer();
        let msgs = frame(&mut f, &split_at(&stream, &cuts));
        let expected: Vec<&[u8]> = parts.iter().map(|(_, m)| &m[..]).collect();
        prop_assert_eq!(msgs, expected);
        prop_assert_eq!(f.counters(), counters(parts.len() as u64, keepalives, 0));
        prop_assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn any_bytes_split_anywhere_frame_as_in_one_read_within_the_bounds(
        chunks in prop::collection::vec(
            prop_oneof![
                message(),
                prop::collection::vec(any::<u8>(), 0..40),
                Just(b"\r\n".to_vec()),
                Just(b"l: 99999\r\n\r\n".to_vec()),
            ],
            0..10,
        ),
        cuts in prop::collection::vec(0.0..1.0f64, 0..12),
        max_header in 16..200usize,
        max_message in 16..400usize,
        max_resync in 0..300usize,
    ) {
        let stream = chunks.concat();
        let limits = Limits { max_header_bytes: max_header, max_message_bytes: max_message, max_resync_bytes: max_resync };
        let mut whole = SipFramer::new(limits);
        let mut expected = Vec::new();
        whole.push_framed(&stream, |x| expected.push(x));
        let mut split = SipFramer::new(limits);
        let bound = split.limits().max_message_bytes;
        let mut got = Vec::new();
        for read in split_at(&stream, &cuts) {
            split.push_framed(read, |x| got.push(x));
            prop_assert!(split.buffer_capacity() <= bound.max(512));
            prop_assert!(split.buffered() <= bound);
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(split.counters(), whole.counters());
    }

    #[test]
    fn every_head_reported_lost_is_a_whole_sip_head(
        chunks in prop::collection::vec(
            prop_oneof![
                message(),
                prop::collection::vec(any::<u8>(), 0..40),
                Just(b"INVITE sip:a@b SIP/2.0\r\nl: 1\r\nl: 2\r\n\r\n".to_vec()),
                Just(b"ACK sip:a@b SIP/2.0\r\ni: x\r\n\r\n".to_vec()),
                Just(b"\r\n".to_vec()),
            ],
            0..10,
        ),
        max_header in 16..200usize,
    ) {
        let limits = Limits { max_header_bytes: max_header, ..Limits::default() };
        let mut f = SipFramer::new(limits);
        let mut heads = Vec::new();
        f.push_framed(&chunks.concat(), |x| {
            if let Framed::Lost { head: Some(head), bytes, .. } = x {
                heads.push((head, bytes));
            }
        });
        for (head, bytes) in heads {
            prop_assert_eq!(head.len() as u64, bytes);
            match super::read_head(&head) {
                Ok(h) => prop_assert_eq!(h.head_len, head.len()),
                Err(super::HeadError::NotText { .. }) => {}
                Err(e) => prop_assert!(false, "{:?}: {}", head, e),
            }
        }
    }
}
