//! Any bytes as a spool segment file (what a crash, a full disk or someone else may leave in the
//! spool directory): the reader never panics, and what it reports holds together: the good part
//! ends where the damage starts, the cursor lies within it on a record boundary, walking the
//! records from the cursor finds exactly the records counted, and those records written again
//! into a fresh segment read back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/sender/spool/segment.rs"]
mod segment;

use segment::{HEADER_LEN, Next, encode_record, header, next_record, scan};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = scan(data) else {
        assert!(data.len() < HEADER_LEN || &data[..8] != segment::MAGIC);
        return;
    };
    let len = data.len() as u64;
    assert!(s.good_end <= len);
    assert_eq!(s.good_end + s.damaged_bytes, len);
    assert!(s.cursor >= HEADER_LEN as u64 && s.cursor <= s.good_end);
    let mut at = s.cursor as usize;
    let mut records = Vec::new();
    while at < s.good_end as usize {
        match next_record(&data[at..s.good_end as usize]) {
            Next::Record {
                spooled_at_ms,
                payload,
                size,
            } => {
                records.push((spooled_at_ms, payload.to_vec()));
                at += size;
            }
            other => panic!("a record the scan counted is {other:?} at {at}"),
        }
    }
    assert_eq!(at as u64, s.good_end);
    assert_eq!(records.len() as u64, s.records);
    assert_eq!(s.first_ms, records.first().map(|r| r.0));
    assert_eq!(s.last_ms, records.last().map(|r| r.0));

    let mut again = header().to_vec();
    for (at, payload) in &records {
        encode_record(&mut again, *at, payload);
    }
    let t = scan(&again).unwrap_or_else(|e| panic!("a fresh segment unreadable: {e:?}"));
    assert_eq!((t.records, t.damaged_bytes), (s.records, 0));
    assert_eq!(t.good_end, again.len() as u64);
});
