//! heptap-tests: the end-to-end test suite and its support library.
//!
//! The tests in tests/ run the real thing: the `heptap` binary ([`heptap_bin`]) or the agent's
//! `start()` in-process, with real peers on 127.0.0.1 port 0: HEP collectors and echo/SIP
//! upstreams ([`collector`], [`sip`]), independent HEP implementations as oracles ([`interop`]:
//! hep-js; [`kamailio`]: Kamailio's sipcapture), and `heptap serve` as a child process of an
//! async test ([`process`]). This library is test support only: it panics
//! on what it cannot set up, since that is how a test fails.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod collector;
mod heptap_bin;
pub mod interop;
pub mod kamailio;
pub mod mi_cli;
pub mod sip;

pub use heptap_bin::{HEPTAP_BIN_ENV, heptap_bin};
pub mod events;
pub mod fault;
pub mod process;
pub mod taps;
pub mod tls;
pub mod ws;
