//! A `sip_trace_route` over a SIP message, both from the input: the text up to the first NUL
//! is route source (compiled like a config's `[routes]`), the rest is one message read through
//! the agent's `SipMessage` accessor. Whatever compiles runs as a SIP route against the message
//! and as a connection route: nothing may panic,
//! at most 64 trace ids are chosen, and a route reading no SIP value decides the same with
//! and without the message.
#![no_main]

use heptap_filters::{AddressGroups, ConnInfo, Routes, SipVerdict, Source, Verdict};
use heptap_hep::NetProto;
use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../src/sip/mod.rs"]
mod sip;

use sip::SipMessage;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let Ok(text) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let message = data.get(split + 1..).unwrap_or_default();
    let Ok(routes) = Routes::compile(&[Source::new("fuzz.cfg", text)], &AddressGroups::default())
    else {
        return;
    };
    let _ = routes.check_trace_ids(|t| t.len() % 2 == 0);
    let conn = ConnInfo {
        remote: ([127, 0, 0, 2], 40000).into(),
        local: ([127, 0, 0, 1], 5060).into(),
        proto: NetProto::Tcp,
    };
    let msg = SipMessage::new(message);
    for name in routes.names() {
        let Some(route) = routes.get(name) else {
            continue;
        };
        let sip = route.eval_sip(&conn, &msg);
        if let SipVerdict::Trace(choice) = sip {
            assert!(route.chosen(choice).count() <= 64);
        }
        let plain = route.eval(&conn);
        if route.sip_use().is_none() {
            let same = match sip {
                SipVerdict::Drop => Verdict::Drop,
                SipVerdict::Trace(_) => Verdict::Trace,
            };
            assert_eq!(plain, same, "route {name} reads no SIP but decided differently");
        }
    }
});
