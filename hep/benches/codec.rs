//! HEPv3 encode and decode throughput with a 600-byte SIP payload (placeholder, filled below).
fn main() {}
