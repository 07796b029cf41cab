//! SIP as the tracer sees it: where each message starts and ends on a stream, and the few header
//! values a HEP packet and a method filter need.
//!
//! Pure byte handling: no I/O, no async, no allocation beyond one copy per traced message. The
//! relay forwards every byte whatever happens here; this module only decides what is traced.
//!
//! - [`SipFramer`]: one direction of a TCP/TLS connection cut into messages by RFC 3261 §18.3
//!   (headers to the empty line, then Content-Length bytes), skipping CRLF keep-alives,
//!   resynchronising after garbage and giving up on streams that are not SIP, within [`Limits`];
//!   what it cannot frame is reported with a [`LostReason`] (and the head, when it was read).
//! - [`parse_head`]: request method or response code, Call-ID (HEP chunk 0x0011), CSeq method,
//!   Content-Length, from a whole message; [`read_head`] the same as a proxy reads it (the
//!   first Content-Length counts), for tracing.
//! - [`SipMessage`]: the one accessor routes (`sip_trace_route`) and dynamic traces
//!   (`trace_start` filters) read a message through: start line and any header, on demand.
//! - On WS/WSS one data frame is one message: call [`read_head`] on it directly (after
//!   [`is_keepalive`] to skip CRLF-only frames); no framer is involved.
//!
//! The rules, limits and counters are described in docs/sip-framing.md.

mod framer;
mod head;
mod message;

pub use framer::{Framed, FramerCounters, Limits, LostReason, SipFramer};
pub use head::{HeadError, HeadIndex, Kind, SipHead, is_keepalive, parse_head, read_head};
pub use message::SipMessage;

#[cfg(test)]
mod framer_tests;
