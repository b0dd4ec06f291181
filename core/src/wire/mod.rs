//! The IKEv2 wire format, RFC 7296 §3, with RFC 7383 fragments and RFC 3948 UDP encapsulation.
//!
//! Parsing is total: any byte string yields `Ok` or a precise [`ParseError`], never a panic,
//! and no allocation is larger than the input that asked for it.

mod enums;

pub use enums::*;
