//! Any bytes, cut into requests by the MI FIFO's parser in one read and in pieces (sizes taken
//! from the input): nothing panics, the parser never holds more than `max_request_size` (or the
//! longest header) between reads, whatever a client writes, and the requests cut from a stream
//! (too large ones included) do not depend on how the reads split it, as long as no header
//! reaches the 1 KiB header limit.
//!
//! Input layout: byte 0 picks `max_request_size` (below 0x80: the default 64 KiB; from 0x80: a
//! small one, easy to exceed), bytes 1..9 are the read sizes used in turn, the rest is the
//! stream.
#![no_main]

use heptap_mi::fuzzing::fifo_frames;
use libfuzzer_sys::fuzz_target;

const DEFAULT_MAX: usize = 65536;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let (plan, stream) = data.split_at(9);
    let max = if plan[0] < 0x80 {
        DEFAULT_MAX
    } else {
        1 + usize::from(plan[0] - 0x80) * 8
    };
    let sizes: Vec<usize> = plan[1..].iter().map(|&b| usize::from(b) + 1).collect();

    let whole = fifo_frames(max, &[stream]);
    assert!(
        whole.most_held <= whole.bound,
        "held {} > {}",
        whole.most_held,
        whole.bound
    );

    let mut reads = Vec::new();
    let mut rest = stream;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (read, after) = rest.split_at(rest.len().min(*size));
        reads.push(read);
        rest = after;
    }
    let split = fifo_frames(max, &reads);
    assert!(
        split.most_held <= split.bound,
        "held {} > {}",
        split.most_held,
        split.bound
    );
    if stream.len() <= 1024 {
        assert_eq!(whole.frames, split.frames, "reads {:?}", sizes);
    }
});
