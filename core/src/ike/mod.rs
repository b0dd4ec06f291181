//! IKEv2 (RFC 7296) with additional key exchanges (RFC 9370) over IKE_INTERMEDIATE (RFC 9242).
//!
//! | module | what |
//! | --- | --- |
//! | [`config`] | modes and their one proposal each, identities, PSK, knobs |
//! | [`config_reply`] | what the client accepts from the gateway's CFG_REPLY |
//! | [`keys`] | the key schedule |
//! | `handshake` | what both roles hold between IKE_SA_INIT and IKE_AUTH; the key updates |
//! | `auth` | AUTH octets; how we prove our identity and how the peer must prove its own |
//! | [`Initiator`] | the client's IKE SA: IKE_SA_INIT, IKE_INTERMEDIATE, IKE_AUTH |
//! | [`Responder`] | the gateway side, for `pqvpn gateway`, the demo and the tests |
//! | `session` | what both roles do once the IKE SA is up: rekeying, liveness, Delete |
//!
//! Both roles have the quinn-proto shape: `handle_datagram(now, remote, bytes)`,
//! `handle_timeout(now)`, `poll_transmit(now, buf)`, `poll_timeout()`, `poll_event()`.

#![forbid(unsafe_code)]

mod auth;
pub mod config;
pub mod config_reply;
#[cfg(feature = "gateway")]
mod cookie;
mod error;
mod handshake;
mod session;
#[cfg(test)]
pub(crate) use session::Faults;
#[cfg(test)]
pub(crate) use session::Pfs;
mod initiator;
pub mod keys;
mod proposal;
pub(crate) mod protect;
#[cfg(feature = "gateway")]
mod responder;
mod sa;

pub use config::{
    CryptoPolicy, DEFAULT_DPD_INTERVAL, DEFAULT_FRAGMENT_SIZE, InitiatorConfig, Lifetime,
    MAX_IKE_SA_INIT, Mode, ResponderConfig, RetransmitConfig, UnknownMode,
};
pub use config_reply::ConfigRefusal;
pub use error::Error;
pub use initiator::Initiator;
#[cfg(feature = "gateway")]
pub use responder::{Responder, ResponderStats};
pub use sa::{
    ChildSaEstablished, ChildSaId, ConfigReceived, Event, IKE_PORT, NAT_T_PORT, Suite, Transmit,
};
