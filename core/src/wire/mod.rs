//! The IKEv2 wire format, RFC 7296 §3, with RFC 7383 fragments and RFC 3948 UDP encapsulation.
//!
//! Parsing is total: any byte string yields `Ok` or a precise [`ParseError`], never a panic,
//! and no allocation is larger than the input that asked for it. Emitting is infallible and
//! computes every length and Next Payload field.
//!
//! | item | what |
//! | --- | --- |
//! | [`Message`], [`Header`] | whole messages and the 28-octet IKE header |
//! | [`Payload`], [`parse_payloads`], [`emit_payloads`] | payload chains, e.g. SK contents |
//! | [`SaPayload`] … [`ConfigPayload`] | typed payload bodies |
//! | [`locate_encrypted`], [`emit_protected`] | SK/SKF in place, for the IKE SA's AEAD |
//! | [`classify_udp4500`], [`prepend_non_esp_marker`] | UDP port 4500 framing |
//! | [`Reader`] | the bounds-checked cursor the parsers use |
//! | [`ParseError`] | what went wrong, and the Notify to answer with |

#![forbid(unsafe_code)]

mod auth;
mod cp;
mod emit;
mod encap;
mod enums;
mod error;
mod header;
mod id;
mod ke;
mod nonce;
mod notify;
mod payload;
mod reader;
mod sa;
mod sk;
mod spi;
#[cfg(test)]
mod strategies;
mod ts;

pub use auth::{AuthPayload, CertPayload, CertReqPayload};
pub use cp::{ConfigAttribute, ConfigPayload};
pub use encap::{NAT_KEEPALIVE, NON_ESP_MARKER, Udp4500, classify_udp4500, prepend_non_esp_marker};
pub use enums::*;
pub use error::ParseError;
pub use header::{Flags, Header, IkeSpi, MessageId};
pub use id::{Identification, IkeId};
pub use ke::KePayload;
pub use nonce::Nonce;
pub use notify::{DeletePayload, NotifyPayload};
pub use payload::{Message, Payload, emit_payloads, parse_payloads};
pub use reader::Reader;
pub use sa::{Proposal, SaPayload, Transform, TransformAttribute};
pub use sk::{
    EncryptedFragment, EncryptedPayload, EncryptedView, FragmentNumbers, ProtectedMessage,
    emit_protected, locate_encrypted,
};
pub use spi::EspSpi;
pub use ts::{TrafficSelector, TsPayload};
