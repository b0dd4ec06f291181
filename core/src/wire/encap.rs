//! UDP port 4500 framing: IKE behind the non-ESP marker, NAT-keepalives and UDP-encapsulated
//! ESP ([RFC 3948 §2], [RFC 7296 §2.23]).
//!
//! [RFC 3948 §2]: https://www.rfc-editor.org/rfc/rfc3948#section-2
//! [RFC 7296 §2.23]: https://www.rfc-editor.org/rfc/rfc7296#section-2.23

use super::error::ParseError;

/// The four zero octets that precede an IKE message on port 4500; an ESP SPI is never zero
/// ([RFC 3948 §2.2]). IKE Length fields do not count them.
///
/// [RFC 3948 §2.2]: https://www.rfc-editor.org/rfc/rfc3948#section-2.2
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];

/// The single-octet payload of a NAT-keepalive packet ([RFC 3948 §2.3]).
///
/// [RFC 3948 §2.3]: https://www.rfc-editor.org/rfc/rfc3948#section-2.3
pub const NAT_KEEPALIVE: [u8; 1] = [0xff];

/// Length of the ESP header fields that must be present: SPI and Sequence Number.
const ESP_MIN_LEN: usize = 8;

/// What a UDP payload received on port 4500 carries.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Udp4500<'a> {
    /// An IKE message, with the non-ESP marker already removed.
    Ike(&'a [u8]),
    /// A NAT-keepalive, to be dropped.
    NatKeepalive,
    /// An ESP packet starting at its SPI, which is non-zero.
    Esp(&'a [u8]),
}

/// Classifies a UDP payload received on port 4500 ([RFC 3948 §2]).
///
/// One octet 0xFF is a NAT-keepalive; four zero octets start an IKE message; anything else
/// is ESP and needs at least the 8 octets of SPI and Sequence Number. The IKE message itself
/// is not checked here.
///
/// [RFC 3948 §2]: https://www.rfc-editor.org/rfc/rfc3948#section-2
///
/// # Errors
///
/// - [`ParseError::InvalidValue`] for a one-octet payload other than 0xFF.
/// - [`ParseError::Truncated`] for an empty payload, or an ESP packet under 8 octets.
pub fn classify_udp4500(payload: &[u8]) -> Result<Udp4500<'_>, ParseError> {
    match payload {
        [] => Err(ParseError::Truncated {
            what: "UDP-4500 payload",
        }),
        [0xff] => Ok(Udp4500::NatKeepalive),
        [_] => Err(ParseError::InvalidValue {
            what: "NAT-keepalive",
        }),
        [0, 0, 0, 0, ike @ ..] => Ok(Udp4500::Ike(ike)),
        esp if esp.len() < ESP_MIN_LEN => Err(ParseError::Truncated {
            what: "UDP-encapsulated ESP header",
        }),
        esp => Ok(Udp4500::Esp(esp)),
    }
}

/// Prefixes an IKE message with the non-ESP marker for sending on port 4500.
pub fn prepend_non_esp_marker(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NON_ESP_MARKER.len().saturating_add(message.len()));
    out.extend_from_slice(&NON_ESP_MARKER);
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn classifies_each_kind() {
        assert_eq!(classify_udp4500(&[0xff]), Ok(Udp4500::NatKeepalive));
        let ike = hex!("00000000 0102030405060708");
        assert_eq!(classify_udp4500(&ike), Ok(Udp4500::Ike(&ike[4..])));
        assert_eq!(classify_udp4500(&[0, 0, 0, 0]), Ok(Udp4500::Ike(&[])));
        let esp = hex!("c0ffee01 00000001");
        assert_eq!(classify_udp4500(&esp), Ok(Udp4500::Esp(&esp)));
        let esp = hex!("00000001 00000001 aabb");
        assert_eq!(classify_udp4500(&esp), Ok(Udp4500::Esp(&esp)));
    }

    #[test]
    fn rejects_short_or_odd_payloads() {
        assert_eq!(
            classify_udp4500(&[]),
            Err(ParseError::Truncated {
                what: "UDP-4500 payload"
            })
        );
        assert_eq!(
            classify_udp4500(&[0]),
            Err(ParseError::InvalidValue {
                what: "NAT-keepalive"
            })
        );
        for bad in [&[0xff, 0xff][..], &[0, 0, 0], &hex!("c0ffee01 000000")] {
            assert_eq!(
                classify_udp4500(bad),
                Err(ParseError::Truncated {
                    what: "UDP-encapsulated ESP header"
                })
            );
        }
    }

    #[test]
    fn marker_round_trips() {
        let msg = hex!("0102030405060708");
        let framed = prepend_non_esp_marker(&msg);
        assert_eq!(framed, hex!("00000000 0102030405060708"));
        assert_eq!(classify_udp4500(&framed), Ok(Udp4500::Ike(&msg[..])));
    }

    proptest! {
        #[test]
        fn framed_ike_is_recovered(msg in prop::collection::vec(any::<u8>(), 0..64)) {
            let framed = prepend_non_esp_marker(&msg);
            prop_assert_eq!(classify_udp4500(&framed), Ok(Udp4500::Ike(&msg[..])));
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..16)) {
            match classify_udp4500(&bytes) {
                Ok(Udp4500::Esp(esp)) => {
                    prop_assert!(esp.len() >= 8);
                    prop_assert_ne!(&esp[..4], &NON_ESP_MARKER[..]);
                }
                Ok(Udp4500::Ike(ike)) => prop_assert_eq!(ike.len() + 4, bytes.len()),
                Ok(Udp4500::NatKeepalive) => prop_assert_eq!(bytes, vec![0xff]),
                Err(_) => prop_assert!(bytes.len() < 8),
            }
        }
    }
}
