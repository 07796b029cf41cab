//! heptap agent library.

#![forbid(unsafe_code)]
