//! The protocol core of pqvpn: a post-quantum IKEv2 client (hybrid ML-KEM, RFC 9370 / RFC 9242)
//! and its ESP data plane, written sans-IO.
//!
//! | module | what | I/O |
//! | --- | --- | --- |
//! | [`wire`] | RFC 7296 §3 message and payload codec; open enums for every IANA registry | none |
//! | [`crypto`] | the [`CryptoProvider`](crypto::CryptoProvider) trait, its RustCrypto implementation, secret types | none |
//! | [`ike`] | IKEv2 key schedule ([`ike::keys`]) and, with later issues, the SA state machines | none |
//! | [`esp`] | ESP tunnel mode (RFC 4303) in UDP (RFC 3948): seal/open into caller buffers, anti-replay | none |
//!
//! `wire`, `crypto`, `ike` and `esp` never read a clock, open a socket or call a global RNG:
//! time arrives as a `now` argument and randomness from the crypto provider, so both ends of a
//! tunnel can run in one test on a virtual clock. The tokio driver and the per-OS platform code
//! live behind the default `driver` feature; `cargo check -p pqvpn-core --no-default-features`
//! proves the boundary.

#![cfg_attr(not(feature = "driver"), forbid(unsafe_code))] // driver: platform::sys opts out

pub mod crypto;
#[cfg(feature = "driver")]
pub mod driver;
pub mod esp;
pub mod ike;
#[cfg(feature = "driver")]
pub mod platform;
pub mod wire;

#[cfg(any(test, feature = "test-provider"))]
pub mod fuzzing;

#[cfg(test)]
mod tests;
