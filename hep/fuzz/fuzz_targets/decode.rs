//! Any bytes: decode must not panic, errors must name an offset inside the input, and whatever
//! decodes must re-encode to bytes that decode to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match heptap_hep::decode(data) {
        Ok(packet) => {
            let _ = packet.to_json();
            let mut again = Vec::new();
            // v1/v2 inputs longer than 65535 bytes cannot be re-encoded; that is a refusal, not a bug.
            if packet.encode(&mut again).is_ok() {
                assert_eq!(heptap_hep::decode(&again).as_ref(), Ok(&packet));
            }
        }
        Err(e) => {
            assert!(e.offset() <= data.len());
            assert!(e.to_string().contains(&format!("at offset {}", e.offset())));
        }
    }
});
