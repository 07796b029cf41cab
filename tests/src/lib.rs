//! placeholder

#![forbid(unsafe_code)]

pub mod collector;
mod heptap_bin;
pub mod interop;
pub mod kamailio;

pub use heptap_bin::{HEPTAP_BIN_ENV, heptap_bin};
