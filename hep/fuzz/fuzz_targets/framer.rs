//! Any bytes, pushed in pieces whose sizes come from the input: the framer must not panic, and
//! every frame it returns must start with a HEP3 magic and be as long as its length field says.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut framer = heptap_hep::Hep3Framer::new();
    let mut taken = 0u64;
    for piece in stream.chunks(step) {
        framer.push(piece);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    assert!(&frame[..4] == b"HEP3" || &frame[..4] == b"EEP3");
                    assert_eq!(usize::from(u16::from_be_bytes([frame[4], frame[5]])), frame.len());
                    taken += frame.len() as u64;
                    let _ = heptap_hep::decode(&frame);
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(e.to_string().contains(&format!("stream offset {taken}")));
                    return;
                }
            }
        }
    }
    assert_eq!(taken + framer.buffered() as u64, stream.len() as u64);
});
