//! One IKE SA of a session: its SPIs, `SK_*` keys, message IDs (window size 1, [RFC 7296
//! §2.3]), the cached last response ([RFC 7296 §2.1]) and our one outstanding request.
//!
//! [RFC 7296 §2.1]: https://www.rfc-editor.org/rfc/rfc7296#section-2.1
//! [RFC 7296 §2.3]: https://www.rfc-editor.org/rfc/rfc7296#section-2.3

use std::time::Instant;

use crate::crypto::{Prf, SecretBytes};
use crate::ike::proposal::IkeChoice;
use crate::ike::protect::{Reassembly, SkCipher};
use crate::ike::sa::Outstanding;
use crate::wire::{ExchangeType, Flags, Header, IkeSpi, MessageId};

use super::Exchange;

/// The keys and message ID state of one IKE SA.
pub(crate) struct IkeSa {
    pub(crate) spi_i: IkeSpi,
    pub(crate) spi_r: IkeSpi,
    /// Whether we are the original initiator of this IKE SA (RFC 7296 §2.18: the initiator of
    /// the rekey is the original initiator of the new SA).
    pub(crate) original_initiator: bool,
    pub(crate) choice: IkeChoice,
    pub(crate) prf: Box<dyn Prf>,
    pub(crate) sk_d: SecretBytes,
    pub(crate) cipher: SkCipher,
    pub(crate) peer_fragmentation: bool,
    /// Message ID of our next request.
    pub(crate) next_request_id: MessageId,
    /// Message ID of the peer's next request.
    pub(crate) expected_request_id: MessageId,
    /// Our last response, resent for a retransmitted request (RFC 7296 §2.1).
    pub(crate) last_response: Option<(MessageId, Vec<Vec<u8>>)>,
    /// When the cached response was last resent (see [`resend_allowed`]).
    pub(super) last_resend: Option<Instant>,
    pub(super) requests: Reassembly,
    pub(super) responses: Reassembly,
    /// Our one outstanding request and what it is (window size 1).
    pub(super) active: Option<(Outstanding, Exchange)>,
    /// When a retired SA is dropped even without a Delete.
    pub(super) expires: Option<Instant>,
}

/// What a finished handshake (IKE_AUTH) or IKE SA rekey hands to a new [`IkeSa`].
pub(crate) struct IkeSaParts {
    pub(crate) spi_i: IkeSpi,
    pub(crate) spi_r: IkeSpi,
    /// We started the exchange that made this SA (RFC 7296 §2.18).
    pub(crate) original_initiator: bool,
    pub(crate) choice: IkeChoice,
    pub(crate) prf: Box<dyn Prf>,
    pub(crate) sk_d: SecretBytes,
    pub(crate) cipher: SkCipher,
    pub(crate) peer_fragmentation: bool,
    /// Message ID of our next request.
    pub(crate) next_request_id: MessageId,
    /// Message ID of the peer's next request.
    pub(crate) expected_request_id: MessageId,
    /// Our last response (IKE_AUTH's, for a retransmitted request).
    pub(crate) last_response: Option<(MessageId, Vec<Vec<u8>>)>,
}

impl IkeSa {
    /// An IKE SA from a finished handshake or rekey.
    pub(crate) fn new(parts: IkeSaParts) -> Self {
        Self {
            spi_i: parts.spi_i,
            spi_r: parts.spi_r,
            original_initiator: parts.original_initiator,
            choice: parts.choice,
            prf: parts.prf,
            sk_d: parts.sk_d,
            cipher: parts.cipher,
            peer_fragmentation: parts.peer_fragmentation,
            next_request_id: parts.next_request_id,
            expected_request_id: parts.expected_request_id,
            last_response: parts.last_response,
            last_resend: None,
            requests: Reassembly::default(),
            responses: Reassembly::default(),
            active: None,
            expires: None,
        }
    }

    pub(super) fn spis(&self) -> (IkeSpi, IkeSpi) {
        (self.spi_i, self.spi_r)
    }

    pub(super) fn local_spi(&self) -> IkeSpi {
        if self.original_initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    pub(super) fn flags(&self, response: bool) -> Flags {
        Flags {
            initiator: self.original_initiator,
            version: false,
            response,
        }
    }

    pub(super) fn header(
        &self,
        exchange: ExchangeType,
        response: bool,
        message_id: MessageId,
    ) -> Header {
        Header::new(
            self.spi_i,
            self.spi_r,
            exchange,
            self.flags(response),
            message_id,
        )
    }
}
