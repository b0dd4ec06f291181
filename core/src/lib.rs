//! The protocol core of pqvpn: a post-quantum IKEv2 client (hybrid ML-KEM, RFC 9370 / RFC 9242)
//! and its ESP data plane, written sans-IO.
//!
//! | module | what | I/O |
//! | --- | --- | --- |
//! | [`wire`] | RFC 7296 §3 message and payload codec; open enums for every IANA registry | none |
//! | [`crypto`] | the [`CryptoProvider`](crypto::CryptoProvider) trait, its RustCrypto implementation, secret types | none |
//! | [`ike`] | IKEv2 key schedule ([`ike::keys`]) and, with later issues, the SA state machines | none |
//! | [`esp`] | ESP tunnel mode (RFC 4303) in UDP (RFC 3948): seal/open into caller buffers, anti-replay | none |
//! | [`tunnel`] | the IKE SA and its ESP SAs as one state machine per tunnel ([`tunnel::ClientTunnel`]) | none |
//! | `driver` | tokio loops over socket, packet device and one timer around `tunnel` | sockets, clock |
//! | `platform` | TUN, routes, DNS per OS | the OS |
//!
//! `wire`, `crypto`, `ike`, `esp` and `tunnel` never read a clock, open a socket or call a global RNG:
//! time arrives as a `now` argument and randomness from the crypto provider, so both ends of a
//! tunnel can run in one test on a virtual clock. The tokio driver and the per-OS platform code
//! live behind the default `driver` feature; `cargo check -p pqvpn-core --no-default-features`
//! proves the boundary. The gateway (responder, pool, gateway data plane) is the default
//! `gateway` feature; a phone build leaves it out.

#![cfg_attr(not(feature = "driver"), forbid(unsafe_code))] // driver: platform::sys opts out

pub mod crypto;
#[cfg(feature = "driver")]
pub mod driver;
pub mod esp;
pub mod ike;
#[cfg(feature = "driver")]
pub mod platform;
#[cfg(feature = "profile")]
pub mod profile;
pub mod tunnel;
pub mod wire;

#[cfg(all(any(test, feature = "test-provider"), feature = "gateway"))]
pub mod fuzzing;

#[cfg(test)]
#[cfg(feature = "gateway")]
mod tests;
