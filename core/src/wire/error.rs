//! The one error type of the wire codec and the Notify each error answers with.

use super::enums::{NotifyType, PayloadType, ProtocolId};
use super::notify::NotifyPayload;

/// Why a byte string is not a well-formed IKEv2 message, payload or UDP-4500 datagram.
///
/// Every variant names the structure at fault with a static string, so the error is `Copy` and
/// allocation-free. [`notify_type`](Self::notify_type) gives the Notify a responder answers
/// with ([RFC 7296 §2.21]).
///
/// [RFC 7296 §2.21]: https://www.rfc-editor.org/rfc/rfc7296#section-2.21
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseError {
    /// The input ends inside the named structure.
    #[error("truncated {what}")]
    Truncated {
        /// The structure that is cut short.
        what: &'static str,
    },
    /// A length field, or the length of a value, is impossible for the named structure.
    #[error("invalid length of {what}")]
    InvalidLength {
        /// The structure whose length is wrong.
        what: &'static str,
    },
    /// A field holds a value that this structure does not allow.
    #[error("invalid value of {what}")]
    InvalidValue {
        /// The field whose value is wrong.
        what: &'static str,
    },
    /// A count field disagrees with the number of elements that follow it.
    #[error("count field does not match the {what} that follow")]
    CountMismatch {
        /// The elements that were counted.
        what: &'static str,
    },
    /// Octets follow the end of the named structure inside its enclosing length.
    #[error("trailing octets after {what}")]
    TrailingData {
        /// The structure after which the octets follow.
        what: &'static str,
    },
    /// A payload of a type this codec does not know has the critical bit set
    /// ([RFC 7296 §2.5]).
    ///
    /// [RFC 7296 §2.5]: https://www.rfc-editor.org/rfc/rfc7296#section-2.5
    #[error("unsupported critical payload {0}")]
    UnsupportedCriticalPayload(PayloadType),
    /// The IKE header carries a major version other than 2 ([RFC 7296 §3.1]).
    ///
    /// [RFC 7296 §3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.1
    #[error("invalid major version {0}")]
    InvalidMajorVersion(u8),
    /// An SK or SKF payload is followed by further octets; it must be the last payload
    /// ([RFC 7296 §3.14], [RFC 7383 §2.5]).
    ///
    /// [RFC 7296 §3.14]: https://www.rfc-editor.org/rfc/rfc7296#section-3.14
    /// [RFC 7383 §2.5]: https://www.rfc-editor.org/rfc/rfc7383#section-2.5
    #[error("encrypted payload is not the last payload")]
    EncryptedNotLast,
    /// Decrypted inner payloads contain another SK or SKF payload.
    #[error("encrypted payload inside an encrypted payload")]
    NestedEncrypted,
    /// An SKF payload's Fragment Number is 0 or above its Total Fragments, or Total Fragments is
    /// 0 ([RFC 7383 §2.5]).
    ///
    /// [RFC 7383 §2.5]: https://www.rfc-editor.org/rfc/rfc7383#section-2.5
    #[error("invalid fragment number {number} of {total}")]
    InvalidFragmentNumber {
        /// The Fragment Number field.
        number: u16,
        /// The Total Fragments field.
        total: u16,
    },
}

impl ParseError {
    /// The Notify Message Type that reports this error to the peer ([RFC 7296 §3.10.1]).
    ///
    /// [RFC 7296 §3.10.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.10.1
    pub fn notify_type(&self) -> NotifyType {
        match self {
            Self::UnsupportedCriticalPayload(_) => NotifyType::UnsupportedCriticalPayload,
            Self::InvalidMajorVersion(_) => NotifyType::InvalidMajorVersion,
            _ => NotifyType::InvalidSyntax,
        }
    }

    /// The Notification Data that goes with [`notify_type`](Self::notify_type).
    ///
    /// Only UNSUPPORTED_CRITICAL_PAYLOAD carries data: the one-octet type of the payload
    /// ([RFC 7296 §3.10.1]).
    ///
    /// [RFC 7296 §3.10.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.10.1
    pub fn notify_data(&self) -> Option<[u8; 1]> {
        match self {
            Self::UnsupportedCriticalPayload(t) => Some([t.value()]),
            _ => None,
        }
    }

    /// The whole Notify payload that reports this error, with no SPI.
    pub fn to_notify(&self) -> NotifyPayload {
        NotifyPayload {
            protocol_id: ProtocolId::from(0),
            spi: Vec::new(),
            notify_type: self.notify_type(),
            data: self.notify_data().map(Vec::from).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_notifies() {
        let e = ParseError::UnsupportedCriticalPayload(PayloadType::from(99));
        assert_eq!(e.notify_type(), NotifyType::UnsupportedCriticalPayload);
        assert_eq!(e.notify_data(), Some([99]));
        let n = e.to_notify();
        assert_eq!(n.notify_type.value(), 1);
        assert_eq!(n.data, vec![99]);
        assert_eq!(n.protocol_id.value(), 0);

        let e = ParseError::InvalidMajorVersion(3);
        assert_eq!(e.notify_type(), NotifyType::InvalidMajorVersion);
        assert_eq!(e.notify_data(), None);

        for e in [
            ParseError::Truncated { what: "x" },
            ParseError::InvalidLength { what: "x" },
            ParseError::InvalidValue { what: "x" },
            ParseError::CountMismatch { what: "x" },
            ParseError::TrailingData { what: "x" },
            ParseError::EncryptedNotLast,
            ParseError::NestedEncrypted,
            ParseError::InvalidFragmentNumber {
                number: 0,
                total: 1,
            },
        ] {
            assert_eq!(e.notify_type(), NotifyType::InvalidSyntax);
            assert!(e.to_notify().data.is_empty());
        }
    }

    #[test]
    fn messages_are_lowercase() {
        let e = ParseError::Truncated { what: "IKE header" };
        assert_eq!(e.to_string(), "truncated IKE header");
        let e = ParseError::UnsupportedCriticalPayload(PayloadType::from(99));
        assert_eq!(
            e.to_string(),
            "unsupported critical payload PayloadType(99)"
        );
    }
}
