//! ESP ([RFC 4303]) tunnel mode over UDP encapsulation ([RFC 3948]), sans-IO.
//!
//! The data plane in the style of boringtun's `Tunn`: buffers belong to the caller, nothing on
//! the per-packet path allocates, reads a clock or panics, and each result says what to do next.
//!
//! | item | what |
//! | --- | --- |
//! | [`OutboundSa`] | [`seal`](OutboundSa::seal): inner IP packet → ESP datagram; sequence numbers and their limits |
//! | [`InboundSa`] | [`open`](InboundSa::open): ESP datagram → [`Inbound`]; anti-replay, ESN, trailer checks |
//! | [`ChildSa`] | one Child SA: the two directions created together from negotiated parameters |
//! | [`ReplayWindow`] | the [RFC 4303 §3.4.3] sliding window, split into check and update |
//! | [`selectors_allow`] | the [RFC 4301 §5.2] inbound selector check of a decrypted inner packet |
//! | [`Demux`] | port 4500 demultiplexing ([RFC 3948 §2.2]): IKE, NAT keepalive, ESP by SPI, on top of [`wire::classify_udp4500`](crate::wire::classify_udp4500) |
//!
//! Only AEAD transforms are supported: AES-GCM-16 with 128- or 256-bit keys ([RFC 4106]) and
//! ChaCha20-Poly1305 ([RFC 7634]). The 8-octet explicit IV is the 64-bit sequence number, which
//! never repeats under one key, so no randomness is needed per packet.
//!
//! A datagram on the wire is:
//!
//! ```text
//! SPI (4) | Sequence Number (4) | IV (8) | ciphertext( payload | padding | Pad Length | Next Header ) | ICV (16)
//! ```
//!
//! [RFC 4303]: https://www.rfc-editor.org/rfc/rfc4303
//! [RFC 3948]: https://www.rfc-editor.org/rfc/rfc3948
//! [RFC 4106]: https://www.rfc-editor.org/rfc/rfc4106
//! [RFC 7634]: https://www.rfc-editor.org/rfc/rfc7634
//! [RFC 4303 §3.4.3]: https://www.rfc-editor.org/rfc/rfc4303#section-3.4.3
//! [RFC 3948 §2.2]: https://www.rfc-editor.org/rfc/rfc3948#section-2.2
//! [RFC 4301 §5.2]: https://www.rfc-editor.org/rfc/rfc4301#section-5.2

#![forbid(unsafe_code)]

mod replay;
mod sa;
mod selector;
mod udp;

#[cfg(test)]
mod tests;

pub use replay::{DEFAULT_REPLAY_WINDOW, MAX_REPLAY_WINDOW, MIN_REPLAY_WINDOW, ReplayWindow};
pub use sa::{
    ChildSa, Inbound, InboundSa, InboundStats, OutboundSa, OutboundStats, ReplayProtection,
    SaConfig, Stats, sealed_len,
};
pub use selector::{Direction, selectors_allow};
pub use udp::{Demux, Received, UDP_ENCAPSULATION_PORT, nat_keepalive};

use crate::crypto::{self, IV_LEN, TAG_LEN};
pub use crate::wire::EspSpi;
use crate::wire::ParseError;

/// Octets of SPI and Sequence Number at the start of every ESP packet ([RFC 4303 §2]).
///
/// [RFC 4303 §2]: https://www.rfc-editor.org/rfc/rfc4303#section-2
pub const HEADER_LEN: usize = 8;

/// Offset of the payload (the inner IP packet) in a datagram: header plus explicit IV.
///
/// [`OutboundSa::seal_in_place`] expects the inner packet at this offset, so a driver can read
/// from the TUN device straight into `buf[PAYLOAD_OFFSET..]`.
pub const PAYLOAD_OFFSET: usize = HEADER_LEN + IV_LEN;

/// The shortest valid datagram: header, IV, a 4-octet ciphertext (empty payload, two octets of
/// padding, Pad Length, Next Header) and the ICV.
pub const MIN_DATAGRAM_LEN: usize = PAYLOAD_OFFSET + 4 + TAG_LEN;

/// Octets ESP adds to an inner packet at most: header, IV, up to 3 octets of padding, Pad
/// Length, Next Header and the ICV.
pub const MAX_OVERHEAD: usize = PAYLOAD_OFFSET + 3 + 2 + TAG_LEN;

/// Next Header value of an IPv4 packet in tunnel mode (IP-in-IP).
pub const NEXT_HEADER_IPV4: u8 = 4;
/// Next Header value of an IPv6 packet in tunnel mode.
pub const NEXT_HEADER_IPV6: u8 = 41;
/// Next Header value of a dummy packet used for traffic flow confidentiality ([RFC 4303 §2.6]).
///
/// [RFC 4303 §2.6]: https://www.rfc-editor.org/rfc/rfc4303#section-2.6
pub const NEXT_HEADER_NO_NEXT: u8 = 59;

/// Why an ESP operation failed.
///
/// Every variant but [`BufferTooSmall`](Self::BufferTooSmall), [`ApiMisuse`](Self::ApiMisuse)
/// and [`Crypto`](Self::Crypto) describes a received datagram that must be dropped; the SA
/// counts it in its [`InboundStats`]. None of them is fatal for the SA.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The datagram is shorter than the smallest ESP packet or UDP-4500 message.
    #[error("datagram too short")]
    Truncated,
    /// The ciphertext does not end on a 4-octet boundary ([RFC 4303 §2.4]).
    ///
    /// [RFC 4303 §2.4]: https://www.rfc-editor.org/rfc/rfc4303#section-2.4
    #[error("ciphertext length {0} is not a multiple of 4")]
    Misaligned(usize),
    /// No inbound SA has this SPI.
    #[error("no SA for SPI {0}")]
    UnknownSpi(EspSpi),
    /// The sequence number was already received ([RFC 4303 §3.4.3]).
    ///
    /// [RFC 4303 §3.4.3]: https://www.rfc-editor.org/rfc/rfc4303#section-3.4.3
    #[error("replayed sequence number {0}")]
    Replay(u64),
    /// The sequence number lies below the replay window ([RFC 4303 §3.4.3]).
    ///
    /// [RFC 4303 §3.4.3]: https://www.rfc-editor.org/rfc/rfc4303#section-3.4.3
    #[error("sequence number {0} is below the replay window")]
    TooOld(u64),
    /// The ICV does not verify: the packet was forged, corrupted, or sealed under another key.
    #[error("integrity check failed")]
    AuthenticationFailed,
    /// Pad Length exceeds the payload or the padding is not 1, 2, 3, … ([RFC 4303 §2.4]).
    ///
    /// [RFC 4303 §2.4]: https://www.rfc-editor.org/rfc/rfc4303#section-2.4
    #[error("invalid ESP padding")]
    BadPadding,
    /// The Next Header is neither IPv4 (4), IPv6 (41) nor a dummy packet (59).
    #[error("unsupported Next Header {0}")]
    UnsupportedNextHeader(u8),
    /// The inner packet does not match its Next Header or its own length field.
    #[error("invalid inner packet: {0}")]
    InvalidInnerPacket(&'static str),
    /// The output buffer is too small; `needed` octets would do.
    #[error("output buffer too small, {needed} octets needed")]
    BufferTooSmall {
        /// The buffer length that would have sufficed.
        needed: usize,
    },
    /// The next sequence number would pass the SA's hard limit: the SA must be rekeyed
    /// ([RFC 4303 §3.3.3]).
    ///
    /// [RFC 4303 §3.3.3]: https://www.rfc-editor.org/rfc/rfc4303#section-3.3.3
    #[error("sequence numbers exhausted, the SA must be rekeyed")]
    SequenceExhausted,
    /// A port 4500 payload is neither IKE, a NAT keepalive nor ESP
    /// ([`wire::classify_udp4500`](crate::wire::classify_udp4500)).
    #[error("not a UDP-4500 payload: {0}")]
    NotUdp4500(ParseError),
    /// The caller passed parameters this module cannot use.
    #[error("API misuse: {0}")]
    ApiMisuse(&'static str),
    /// The crypto provider failed to key or run the AEAD.
    #[error("crypto: {0}")]
    Crypto(crypto::Error),
}
