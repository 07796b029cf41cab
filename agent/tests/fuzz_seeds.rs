//! The committed cargo-fuzz seed corpus of the spool segment reader
//! (agent/fuzz/corpus/spool_segment/seed-*): a segment as heptap writes it, one replayed half
//! way (its cursor moved), one torn by a crash, one with a flipped bit, and files that are no
//! segment. Each is checked here as the fuzz target checks any input, so the seeds are a normal
//! test too. `cargo test -p heptap --test fuzz_seeds -- --ignored` rewrites them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use std::path::PathBuf;

use heptap::sender::scan_spool_segment;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/spool_segment")
}

/// One record as the segment format lays it out (docs/senders.md, the disk spool).
fn record(out: &mut Vec<u8>, at_ms: u64, payload: &[u8]) {
    let mut head = Vec::new();
    head.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    head.extend_from_slice(&at_ms.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(payload);
    out.extend_from_slice(&head);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

fn header(cursor: u64) -> Vec<u8> {
    let mut h = b"HEPTAPS1".to_vec();
    h.extend_from_slice(&cursor.to_le_bytes());
    h.extend_from_slice(&crc32fast::hash(&cursor.to_le_bytes()).to_le_bytes());
    h.resize(32, 0);
    h
}

fn hep_like(i: u32) -> Vec<u8> {
    let mut p = b"HEP3".to_vec();
    p.extend_from_slice(&[0, 40]);
    p.extend_from_slice(format!("OPTIONS sip:{i}@example.com SIP/2.0\r\n").as_bytes());
    p
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut whole = header(32);
    for i in 0..5 {
        record(&mut whole, 1_700_000_000_000 + u64::from(i), &hep_like(i));
    }
    let second = 32 + 16 + hep_like(0).len() as u64;
    let mut replayed = whole.clone();
    replayed[..32].copy_from_slice(&header(second));
    let torn = whole[..whole.len() - 7].to_vec();
    let mut flipped = whole.clone();
    let mid = 32 + 16 + 3;
    flipped[mid] ^= 0x20;
    let mut bad_cursor = whole.clone();
    bad_cursor[..32].copy_from_slice(&header(second + 1));
    vec![
        ("seed-whole", whole),
        ("seed-replayed-half", replayed),
        ("seed-torn", torn),
        ("seed-flipped-bit", flipped),
        ("seed-cursor-off-boundary", bad_cursor),
        ("seed-header-only", header(32)),
        ("seed-not-a-segment", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
    ]
}

#[test]
fn committed_seeds_are_current_and_read_as_the_fuzz_target_expects() {
    for (name, bytes) in seeds() {
        let on_disk = std::fs::read(corpus().join(name)).unwrap();
        assert_eq!(on_disk, bytes, "{name} is stale: rerun with --ignored");
        let Ok(s) = scan_spool_segment(&bytes) else {
            assert!(name == "seed-not-a-segment", "{name} refused");
            continue;
        };
        assert_eq!(s.good_end + s.damaged_bytes, bytes.len() as u64, "{name}");
        assert!(s.cursor >= 32 && s.cursor <= s.good_end, "{name}");
        let expected = match name {
            "seed-whole" | "seed-cursor-off-boundary" => 5,
            "seed-replayed-half" | "seed-torn" => 4,
            "seed-flipped-bit" | "seed-header-only" => 0,
            _ => unreachable!(),
        };
        assert_eq!(s.records, expected, "{name}: {s:?}");
    }
}

#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_fuzz_seed_corpus() {
    std::fs::create_dir_all(corpus()).unwrap();
    for (name, bytes) in seeds() {
        std::fs::write(corpus().join(name), bytes).unwrap();
    }
}
