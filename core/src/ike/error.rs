//! The errors of an IKE SA, and the one place that decides which Notify each one answers with.

use crate::crypto;
use crate::ike::config::Mode;
use crate::ike::config_reply::ConfigRefusal;
use crate::ike::keys::KeyScheduleError;
use crate::wire::{KeyExchangeMethod, NotifyPayload, NotifyType, ParseError};

/// Why an IKE SA (or the Child SA negotiated with it) failed.
///
/// Allocation-free and comparable, so tests can assert on exact causes. The Notify a responder
/// sends for each cause comes from [`Error::notify_type`] and nowhere else.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A message did not parse.
    #[error("malformed message: {0}")]
    Malformed(#[from] ParseError),
    /// A cryptographic operation failed (bad peer key exchange data, RNG failure).
    #[error("cryptography: {0}")]
    Crypto(#[from] crypto::Error),
    /// The key schedule refused its inputs.
    #[error("key schedule: {0}")]
    KeySchedule(#[from] KeyScheduleError),
    /// The peer sent an error Notify.
    #[error("gateway answered {0}")]
    NotifyReceived(NotifyType),
    /// No proposal of ours is acceptable to the responder, or none of the initiator's to us.
    #[error("no acceptable proposal")]
    NoProposalChosen,
    /// The gateway answered IKE_SA_INIT with NO_PROPOSAL_CHOSEN: it accepts none of the
    /// algorithms of this mode.
    #[error("the gateway accepted none of our {} proposals (NO_PROPOSAL_CHOSEN){}", .0.as_str(), if matches!(.0, Mode::Classical) { "" } else { "; it may not support ML-KEM" })]
    GatewayRejectedProposal(Mode),
    /// Hybrid or PQ-only mode, and the responder chose a proposal without ML-KEM.
    #[error("the gateway refused ML-KEM (no post-quantum key exchange); refusing to connect")]
    GatewayRefusedMlKem,
    /// The responder chose something that was not in our proposal.
    #[error("the gateway chose a proposal we did not offer: {0}")]
    ProposalMismatch(&'static str),
    /// INVALID_KE_PAYLOAD asked for a method our policy does not allow.
    #[error("the gateway asked for key exchange {0}, which the policy does not allow")]
    UnacceptableKeyExchange(KeyExchangeMethod),
    /// The peer's KE payload uses a method other than the negotiated one.
    #[error("key exchange payload for {got}, {expected} was negotiated")]
    WrongKeyExchangeMethod {
        /// The negotiated method.
        expected: KeyExchangeMethod,
        /// The method in the payload.
        got: KeyExchangeMethod,
    },
    /// The peer's AUTH payload does not verify (wrong PSK or tampered exchange).
    #[error("authentication of the peer failed")]
    AuthenticationFailed,
    /// The peer's identity is not the configured one.
    #[error("the peer's identity does not match the configuration")]
    IdentityMismatch,
    /// A required payload is missing.
    #[error("missing {0} payload")]
    MissingPayload(&'static str),
    /// The peer broke a protocol rule.
    #[error("protocol violation: {0}")]
    PeerMisbehaved(&'static str),
    /// An IKE_INTERMEDIATE or later message failed its integrity check.
    #[error("integrity check failed")]
    IntegrityCheckFailed,
    /// A fragmented message exceeds what we reassemble.
    #[error("fragmented message too large")]
    FragmentTooLarge,
    /// No traffic selectors both sides accept.
    #[error("traffic selectors unacceptable")]
    TsUnacceptable,
    /// The responder cannot hand out a virtual address.
    #[error("no virtual address available")]
    InternalAddressFailure,
    /// The responder hands out addresses from a pool, and the initiator asked for none
    /// (RFC 7296 §3.10.1 FAILED_CP_REQUIRED): it may not pick its own inner address.
    #[error("the gateway requires a configuration request for a virtual address")]
    CpRequired,
    /// The gateway's CFG_REPLY assigns something the client refuses: a virtual address that
    /// cannot be a host's own (or is public, unless allowed), or a pushed route that is a default
    /// route or covers the gateway (security review L6). Fails the Child SA of IKE_AUTH.
    #[error("the gateway's configuration reply was refused: {0}")]
    ConfigReplyRefused(ConfigRefusal),
    /// The peer did not answer after every retransmission (RFC 7296 §2.1).
    #[error("the gateway did not answer (timeout)")]
    Timeout,
    /// A request of an established IKE SA went unanswered after every retransmission: the peer
    /// is gone (liveness check, RFC 7296 §2.4).
    #[error("the peer stopped answering (dead peer)")]
    DeadPeer,
    /// The IKE SA reached its hard lifetime without being rekeyed.
    #[error("the IKE SA expired without being rekeyed")]
    IkeSaExpired,
    /// The peer asked to rekey while another exchange on the same SA was in progress
    /// (RFC 7296 §2.25); it may retry later.
    #[error("another exchange is in progress")]
    ExchangeInProgress,
    /// The peer asked to rekey a Child SA we do not have (RFC 7296 §2.25).
    #[error("no such Child SA")]
    ChildSaNotFound,
    /// An IKE_FOLLOWUP_KE request named a link we hold no state for (RFC 9370 §2.2.4).
    #[error("IKE_FOLLOWUP_KE for an unknown exchange")]
    StateNotFound,
    /// The peer asked for an additional Child SA, which this implementation does not create.
    #[error("additional Child SAs are not supported")]
    NoAdditionalSas,
    /// A call was made in a state that does not allow it.
    #[error("API misuse: {0}")]
    ApiMisuse(&'static str),
}

impl Error {
    /// The Notify a responder sends in reply to the request that caused this error, or `None`
    /// if the request is dropped silently (RFC 7296 §2.21).
    ///
    /// Failed integrity checks are dropped without a reply: answering them would let anyone
    /// tear down a handshake with forged packets.
    pub fn notify_type(&self) -> Option<NotifyType> {
        Some(match self {
            Self::Malformed(parse) => parse.notify_type(),
            Self::Crypto(crypto::Error::InvalidPeerValue { .. }) => NotifyType::InvalidSyntax,
            Self::Crypto(
                crypto::Error::UnsupportedKeyExchange(_) | crypto::Error::UnsupportedPrf(_),
            ) => NotifyType::NoProposalChosen,
            // Our own failure (RNG, key schedule, AEAD): not the peer's proposal. Nothing names
            // it in RFC 7296 §3.10.1; the request is not answered with a false reason.
            Self::Crypto(_) | Self::KeySchedule(_) => return None,
            Self::NoProposalChosen
            | Self::GatewayRefusedMlKem
            | Self::GatewayRejectedProposal(_)
            | Self::ProposalMismatch(_)
            | Self::UnacceptableKeyExchange(_) => NotifyType::NoProposalChosen,
            Self::WrongKeyExchangeMethod { .. } => NotifyType::InvalidKePayload,
            Self::AuthenticationFailed | Self::IdentityMismatch => NotifyType::AuthenticationFailed,
            Self::MissingPayload(_) | Self::PeerMisbehaved(_) => NotifyType::InvalidSyntax,
            Self::TsUnacceptable => NotifyType::TsUnacceptable,
            Self::InternalAddressFailure => NotifyType::InternalAddressFailure,
            Self::CpRequired => NotifyType::FailedCpRequired,
            Self::ExchangeInProgress => NotifyType::TemporaryFailure,
            Self::ChildSaNotFound => NotifyType::ChildSaNotFound,
            Self::StateNotFound => NotifyType::StateNotFound,
            Self::NoAdditionalSas => NotifyType::NoAdditionalSas,
            Self::DeadPeer | Self::IkeSaExpired => return None,
            Self::IntegrityCheckFailed
            | Self::FragmentTooLarge
            | Self::NotifyReceived(_)
            | Self::ConfigReplyRefused(_)
            | Self::Timeout
            | Self::ApiMisuse(_) => return None,
        })
    }

    /// The Notify payload a responder sends for this error ([`notify_type`](Self::notify_type)
    /// with its data: INVALID_KE_PAYLOAD names the method we accept, RFC 7296 §3.10.1).
    pub(crate) fn notify_payload(&self) -> Option<NotifyPayload> {
        let t = self.notify_type()?;
        Some(match self {
            Self::WrongKeyExchangeMethod { expected, .. } => {
                NotifyPayload::invalid_ke_payload(*expected)
            }
            // UNSUPPORTED_CRITICAL_PAYLOAD names the payload type (RFC 7296 §3.10.1).
            Self::Malformed(parse) => parse.to_notify(),
            _ => NotifyPayload::status(t, Vec::new()),
        })
    }

    /// Whether the error concerns only the Child SA of IKE_AUTH: the IKE SA stays up
    /// (RFC 7296 §1.2).
    pub fn is_child_sa_only(&self) -> bool {
        matches!(
            self,
            Self::TsUnacceptable | Self::InternalAddressFailure | Self::CpRequired
        ) || matches!(
            self,
            Self::NotifyReceived(
                NotifyType::TsUnacceptable
                    | NotifyType::InternalAddressFailure
                    | NotifyType::NoProposalChosen
                    | NotifyType::SinglePairRequired
                    | NotifyType::FailedCpRequired
            )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ParseError, PayloadType};

    /// Review item: a local RNG or key-schedule failure is ours, not the peer's proposal, and
    /// is not answered with NO_PROPOSAL_CHOSEN; an algorithm the provider lacks still is.
    #[test]
    fn local_failures_are_not_blamed_on_the_proposal() {
        assert_eq!(
            Error::Crypto(crypto::Error::RandomFailed).notify_type(),
            None
        );
        assert_eq!(
            Error::Crypto(crypto::Error::RandomFailed).notify_payload(),
            None
        );
        assert_eq!(
            Error::Crypto(crypto::Error::UnsupportedPrf(
                crate::wire::PrfAlgorithm::HmacSha2_256
            ))
            .notify_type(),
            Some(NotifyType::NoProposalChosen)
        );
    }

    #[test]
    fn unsupported_critical_payload_notify_names_the_payload_type() {
        let e = Error::Malformed(ParseError::UnsupportedCriticalPayload(PayloadType::from(
            99,
        )));
        let n = e.notify_payload().unwrap();
        assert_eq!(n.notify_type, NotifyType::UnsupportedCriticalPayload);
        assert_eq!(n.data, vec![99]);
        // Others carry no data.
        let n = Error::TsUnacceptable.notify_payload().unwrap();
        assert!(n.data.is_empty());
    }

    #[test]
    fn a_pool_without_cp_is_failed_cp_required_and_child_only() {
        assert_eq!(
            Error::CpRequired.notify_type(),
            Some(NotifyType::FailedCpRequired)
        );
        assert!(Error::CpRequired.is_child_sa_only());
    }
}
