//! Every way a packet can be wrong gives a typed error naming the byte offset.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use heptap_hep::{DecodeError, decode};

/// A valid HEP3 packet: header + family chunk + payload chunk "hi".
fn small() -> Vec<u8> {
    [
        &b"HEP3"[..],
        &[0, 21],
        &[0, 0, 0, 0x01, 0, 7, 2],
        &[0, 0, 0, 0x0f, 0, 8],
        b"hi",
    ]
    .concat()
}

fn err(bytes: &[u8]) -> DecodeError {
    decode(bytes).unwrap_err()
}

#[test]
fn the_small_packet_is_valid() {
    assert_eq!(
        decode(&small()).unwrap().payload.as_deref(),
        Some(&b"hi"[..])
    );
}

#[test]
fn empty_input_is_truncated_at_offset_0() {
    assert_eq!(
        err(b"").to_string(),
        "truncated at offset 0: HEP header needs 6 bytes, 0 available"
    );
}

#[test]
fn unknown_leading_bytes_are_a_bad_magic() {
    let e = err(b"SIP/2.0 200 OK");
    assert_eq!(
        e,
        DecodeError::BadMagic {
            found: b"SIP/".to_vec()
        }
    );
    assert_eq!(
        e.to_string(),
        "not a HEP packet at offset 0: starts with [53, 49, 50, 2f]"
    );
    assert!(matches!(err(b"HEP2\0\x06"), DecodeError::BadMagic { .. }));
    assert!(matches!(err(b"HX"), DecodeError::BadMagic { .. }));
}

#[test]
fn eep3_is_accepted_like_hep3() {
    let mut p = small();
    p[0] = b'E';
    assert!(decode(&p).is_ok());
}

#[test]
fn a_header_cut_short_is_truncated() {
    assert_eq!(
        err(b"HEP3\0"),
        DecodeError::Truncated {
            offset: 0,
            what: "HEP3 header",
            needed: 6,
            available: 5
        }
    );
    assert!(matches!(
        err(b"HE"),
        DecodeError::Truncated { offset: 0, .. }
    ));
}

#[test]
fn the_total_length_must_equal_the_packet_size() {
    let mut p = small();
    p.push(0);
    let e = err(&p);
    assert_eq!(
        e,
        DecodeError::BadTotalLength {
            declared: 21,
            actual: 22
        }
    );
    assert_eq!(
        e.to_string(),
        "bad HEP3 total length at offset 4: header says 21, packet has 22 bytes"
    );
    assert_eq!(
        err(b"HEP3\0\x05"),
        DecodeError::BadTotalLength {
            declared: 5,
            actual: 6
        }
    );
}

#[test]
fn a_chunk_header_cut_short_is_truncated_at_its_offset() {
    let mut p = small();
    p.truncate(16);
    p[5] = 16;
    assert_eq!(
        err(&p),
        DecodeError::Truncated {
            offset: 13,
            what: "chunk header",
            needed: 6,
            available: 3
        }
    );
}

#[test]
fn a_chunk_length_below_six_is_reported_at_the_chunk() {
    let mut p = small();
    p[18] = 5;
    let e = err(&p);
    assert_eq!(
        e,
        DecodeError::ChunkTooShort {
            offset: 13,
            vendor: 0,
            id: 0x0f,
            len: 5
        }
    );
    assert_eq!(e.offset(), 13);
    assert_eq!(
        e.to_string(),
        "bad chunk length at offset 13: chunk 0x0000/0x000f says 5, minimum is 6"
    );
}

#[test]
fn a_chunk_running_past_the_end_is_an_overrun() {
    let mut p = small();
    p[18] = 9;
    assert_eq!(
        err(&p).to_string(),
        "chunk overruns the packet at offset 13: chunk 0x0000/0x000f says 9 bytes, 8 remain"
    );
}

#[test]
fn a_fixed_size_chunk_of_the_wrong_size_is_named() {
    let p = [&b"HEP3"[..], &[0, 14], &[0, 0, 0, 0x07, 0, 8, 0, 0]].concat();
    assert!(decode(&p).is_ok());
    let p = [&b"HEP3"[..], &[0, 15], &[0, 0, 0, 0x07, 0, 9, 0, 0, 0]].concat();
    let e = err(&p);
    assert_eq!(
        e,
        DecodeError::BadChunkSize {
            offset: 6,
            name: "src_port",
            expected: 2,
            found: 3
        }
    );
    assert_eq!(
        e.to_string(),
        "bad src_port chunk at offset 6: data is 3 bytes, expected 2"
    );
}

#[test]
fn v1_v2_family_and_header_length_are_checked() {
    let mut v1 = vec![1, 16, 2, 17, 0, 1, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8];
    assert!(decode(&v1).is_ok());
    v1[2] = 4;
    assert_eq!(
        err(&v1).to_string(),
        "bad HEPv1 address family at offset 2: 4 (expected 2 or 10)"
    );
    v1[2] = 10;
    assert_eq!(
        err(&v1).to_string(),
        "bad HEPv1 header length at offset 1: 16 (expected 40)"
    );
}

#[test]
fn v1_v2_cut_short_say_what_is_missing() {
    assert_eq!(
        err(&[2, 16, 2, 17]).to_string(),
        "truncated at offset 0: HEPv1/v2 header needs 8 bytes, 4 available"
    );
    assert_eq!(
        err(&[2, 16, 2, 17, 0, 0, 0, 0, 1]).to_string(),
        "truncated at offset 8: HEPv1/v2 addresses needs 8 bytes, 1 available"
    );
    let v2 = [&[2u8, 16, 2, 17, 0, 0, 0, 0][..], &[0; 8], &[0; 11]].concat();
    assert_eq!(
        err(&v2).to_string(),
        "truncated at offset 16: HEPv2 time header needs 12 bytes, 11 available"
    );
}

#[test]
fn every_error_message_names_its_offset() {
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        b"XYZ".to_vec(),
        b"HEP3\0\x07".to_vec(),
        [&b"HEP3"[..], &[0, 10], &[0, 0, 0, 1]].concat(),
        vec![2, 16, 7, 0, 0, 0, 0, 0],
    ];
    for c in cases {
        let e = err(&c);
        assert!(
            e.to_string().contains(&format!("at offset {}", e.offset())),
            "{e}"
        );
    }
}
