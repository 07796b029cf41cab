//! The bytes of a spool segment file: a header, then records appended one after the other,
//! each length-prefixed and checksummed. Pure (no I/O), so the reader is fuzzed as shipped
//! (agent/fuzz/fuzz_targets/spool_segment.rs compiles this file itself).
//!
//! ```text
//! header  (32 bytes)  "HEPTAPS1" | cursor u64 LE | crc32(cursor) u32 LE | 12 zero bytes
//! record  (16 + len)  len u32 LE | spooled_at_ms u64 LE | crc32(len, spooled_at_ms, payload) u32 LE | payload
//! ```
//!
//! Records are only ever appended. The header's cursor is the one field rewritten in place: the
//! offset of the first record not yet delivered, so a process that takes a half-replayed segment
//! over (a restart, a hand-over) resumes there instead of sending its first half again. A cursor
//! that fails its checksum is read as "from the start" (duplicates rather than losses).
//!
//! A record that is cut short (a crash in the middle of a write) or fails its checksum ends the
//! segment: what precedes it is good, what follows is counted as damaged and never read.

/// The first bytes of every segment file (and its format version).
pub const MAGIC: &[u8; 8] = b"HEPTAPS1";
/// Bytes before the first record.
pub const HEADER_LEN: usize = 32;
/// Bytes of a record before its payload.
pub const RECORD_HEADER_LEN: usize = 16;
/// The largest payload: a HEP3 packet cannot be larger, a datagram neither.
pub const MAX_RECORD: usize = 65_535;
/// Where the cursor and its checksum sit in the header, for rewriting them in place.
pub const CURSOR_AT: u64 = 8;

/// A new segment's header, its cursor on the first record.
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..20].copy_from_slice(&cursor_field(HEADER_LEN as u64));
    h
}

/// The 12 bytes at [`CURSOR_AT`]: the cursor and its checksum.
pub fn cursor_field(cursor: u64) -> [u8; 12] {
    let mut f = [0u8; 12];
    f[..8].copy_from_slice(&cursor.to_le_bytes());
    let crc = crc32fast::hash(&f[..8]);
    f[8..].copy_from_slice(&crc.to_le_bytes());
    f
}

/// Appends one record to `out`. The caller keeps `payload` within [`MAX_RECORD`] bytes (a longer
/// one would be refused by every reader).
pub fn encode_record(out: &mut Vec<u8>, spooled_at_ms: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut head = [0u8; 12];
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..].copy_from_slice(&spooled_at_ms.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(payload);
    out.extend_from_slice(&head);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why a segment cannot be read at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than a header: created and never written (a crash right after creating it).
    Short,
    /// Not a heptap spool segment, or another version of the format.
    Magic,
}

/// Reads the header: the cursor (the offset to resume from), or why the file is no segment.
/// A damaged or impossible cursor gives the first record's offset.
pub fn parse_header(bytes: &[u8]) -> Result<u64, HeaderError> {
    let Some(h) = bytes.get(..HEADER_LEN) else {
        return Err(HeaderError::Short);
    };
    if &h[..8] != MAGIC {
        return Err(HeaderError::Magic);
    }
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&h[8..16]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&h[16..20]);
    let cursor = u64::from_le_bytes(raw);
    if crc32fast::hash(&raw) != u32::from_le_bytes(crc) || cursor < HEADER_LEN as u64 {
        return Ok(HEADER_LEN as u64);
    }
    Ok(cursor)
}

/// What starts at some offset of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// A good record, `size` bytes in all (header included).
    Record {
        /// When it was spooled (Unix time, milliseconds).
        spooled_at_ms: u64,
        /// The packet as it goes on the wire.
        payload: &'a [u8],
        /// Header plus payload.
        size: usize,
    },
    /// Nothing: the end.
    End,
    /// The start of a record whose rest is not in the buffer; at the end of the file, a
    /// record torn by a crash.
    Incomplete,
    /// Bytes that are no record: a length out of range or a checksum that does not match.
    Corrupt,
}

/// Reads the record at the start of `buf`.
pub fn next_record(buf: &[u8]) -> Next<'_> {
    if buf.is_empty() {
        return Next::End;
    }
    let Some(head) = buf.get(..RECORD_HEADER_LEN) else {
        return Next::Incomplete;
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(&head[..4]);
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_RECORD {
        return Next::Corrupt;
    }
    let size = RECORD_HEADER_LEN + len;
    let Some(payload) = buf.get(RECORD_HEADER_LEN..size) else {
        return Next::Incomplete;
    };
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[..12]);
    crc.update(payload);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&head[12..16]);
    if crc.finalize() != u32::from_le_bytes(stored) {
        return Next::Corrupt;
    }
    let mut at = [0u8; 8];
    at.copy_from_slice(&head[4..12]);
    Next::Record {
        spooled_at_ms: u64::from_le_bytes(at),
        payload,
        size,
    }
}

/// A whole segment file read through: what a process taking it over needs to know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Where reading resumes (the header's cursor, or the first record's offset).
    pub cursor: u64,
    /// Good records from the cursor on.
    pub records: u64,
    /// The end of the last good record: reading stops here.
    pub good_end: u64,
    /// Bytes after `good_end` that are no good record (torn or corrupt).
    pub damaged_bytes: u64,
    /// Spool time of the first and the last good record after the cursor (Unix ms).
    pub first_ms: Option<u64>,
    /// See `first_ms`.
    pub last_ms: Option<u64>,
}

/// Reads a whole segment: never panics, whatever the bytes. A cursor that is not the start of
/// a good record or the end of the last one (it always is, unless the file was tampered with)
/// makes the scan start from the first record.
pub fn scan(bytes: &[u8]) -> Result<Scan, HeaderError> {
    let cursor = parse_header(bytes)?;
    // One pass, counting both from the first record and from the cursor.
    let mut all = Tally::default();
    let mut after = Tally::default();
    let mut cursor_ok = false;
    let mut at = HEADER_LEN;
    let mut damaged_bytes = 0;
    loop {
        let start = at as u64;
        cursor_ok |= start == cursor;
        match next_record(bytes.get(at..).unwrap_or_default()) {
            Next::Record {
                spooled_at_ms,
                size,
                ..
            } => {
                all.add(spooled_at_ms);
                if start >= cursor {
                    after.add(spooled_at_ms);
                }
                at += size;
            }
            Next::End => break,
            Next::Incomplete | Next::Corrupt => {
                damaged_bytes = bytes.len().saturating_sub(at) as u64;
                break;
            }
        }
    }
    let (cursor, t) = if cursor_ok {
        (cursor, after)
    } else {
        (HEADER_LEN as u64, all)
    };
    Ok(Scan {
        cursor,
        records: t.records,
        good_end: at as u64,
        damaged_bytes,
        first_ms: t.first_ms,
        last_ms: t.last_ms,
    })
}

/// Records counted by [`scan`], with their first and last spool times.
#[derive(Default)]
struct Tally {
    records: u64,
    first_ms: Option<u64>,
    last_ms: Option<u64>,
}

impl Tally {
    fn add(&mut self, spooled_at_ms: u64) {
        self.records += 1;
        self.first_ms.get_or_insert(spooled_at_ms);
        self.last_ms = Some(spooled_at_ms);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn segment(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = header().to_vec();
        for (at, p) in records {
            encode_record(&mut out, *at, p);
        }
        out
    }

    #[test]
    fn records_read_back_as_written() {
        let seg = segment(&[(1, b"one"), (2, b"two")]);
        let mut at = HEADER_LEN;
        let mut got = Vec::new();
        while let Next::Record {
            spooled_at_ms,
            payload,
            size,
        } = next_record(&seg[at..])
        {
            got.push((spooled_at_ms, payload.to_vec()));
            at += size;
        }
        assert_eq!(got, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
        let s = scan(&seg).unwrap();
        assert_eq!(
            (s.records, s.good_end, s.damaged_bytes),
            (2, seg.len() as u64, 0)
        );
        assert_eq!((s.first_ms, s.last_ms), (Some(1), Some(2)));
    }

    #[test]
    fn a_torn_last_record_ends_the_segment_and_is_counted_as_damaged() {
        let seg = segment(&[(1, b"one"), (2, b"two")]);
        let torn = &seg[..seg.len() - 2];
        let s = scan(torn).unwrap();
        assert_eq!(s.records, 1);
        assert_eq!(s.good_end, (HEADER_LEN + RECORD_HEADER_LEN + 3) as u64);
        assert_eq!(s.damaged_bytes, (RECORD_HEADER_LEN + 1) as u64);
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let mut seg = segment(&[(1, b"one"), (2, b"two")]);
        let last = seg.len() - 1;
        seg[last] ^= 1;
        assert_eq!(scan(&seg).unwrap().records, 1);
        seg[HEADER_LEN + 17] ^= 1;
        assert_eq!(scan(&seg).unwrap().records, 0);
    }

    #[test]
    fn the_cursor_skips_what_was_delivered_and_a_bad_one_means_from_the_start() {
        let mut seg = segment(&[(1, b"one"), (2, b"two"), (3, b"three")]);
        let second = (HEADER_LEN + RECORD_HEADER_LEN + 3) as u64;
        seg[8..20].copy_from_slice(&cursor_field(second));
        let s = scan(&seg).unwrap();
        assert_eq!((s.cursor, s.records, s.first_ms), (second, 2, Some(2)));
        // Not on a record boundary: from the start.
        seg[8..20].copy_from_slice(&cursor_field(second + 1));
        assert_eq!(scan(&seg).unwrap().records, 3);
        // Checksum off: from the start.
        seg[8..20].copy_from_slice(&cursor_field(second));
        seg[19] ^= 0xff;
        assert_eq!(scan(&seg).unwrap().records, 3);
        // Exactly at the end: nothing left.
        let end = seg.len() as u64;
        seg[8..20].copy_from_slice(&cursor_field(end));
        let s = scan(&seg).unwrap();
        assert_eq!((s.records, s.good_end), (0, seg.len() as u64));
    }

    #[test]
    fn files_that_are_no_segment_are_told_apart() {
        assert_eq!(scan(b"HEPTAPS1"), Err(HeaderError::Short));
        assert_eq!(scan(&[0u8; 64]), Err(HeaderError::Magic));
        assert_eq!(next_record(&[0u8; 16]), Next::Corrupt);
        assert_eq!(next_record(&[1, 0, 0]), Next::Incomplete);
    }
}
