//! The Notify and Delete payloads ([RFC 7296 §3.10], [RFC 7296 §3.11]).
//!
//! [RFC 7296 §3.10]: https://www.rfc-editor.org/rfc/rfc7296#section-3.10
//! [RFC 7296 §3.11]: https://www.rfc-editor.org/rfc/rfc7296#section-3.11

use super::emit::{count8, len16};
use super::enums::{HashAlgorithm, KeyExchangeMethod, NotifyType, ProtocolId};
use super::error::ParseError;
use super::reader::Reader;
use super::spi::EspSpi;

/// The body of a Notify payload ([RFC 7296 §3.10]).
///
/// `protocol_id` is 0 when `spi` is empty, as for every notify about the IKE SA.
///
/// [RFC 7296 §3.10]: https://www.rfc-editor.org/rfc/rfc7296#section-3.10
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NotifyPayload {
    /// The protocol of the SA the notify is about, or 0.
    pub protocol_id: ProtocolId,
    /// The SPI of that SA; at most 255 octets, usually empty or 4.
    pub spi: Vec<u8>,
    /// The Notify Message Type.
    pub notify_type: NotifyType,
    /// The Notification Data.
    pub data: Vec<u8>,
}

impl NotifyPayload {
    /// A notify with no SPI (Protocol ID 0), as used for the IKE SA; fits error and status
    /// types alike.
    pub fn status(notify_type: NotifyType, data: Vec<u8>) -> Self {
        Self {
            protocol_id: ProtocolId::from(0),
            spi: Vec::new(),
            notify_type,
            data,
        }
    }

    /// INVALID_KE_PAYLOAD naming the key exchange method the responder accepts
    /// ([RFC 7296 §1.3]).
    ///
    /// [RFC 7296 §1.3]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3
    pub fn invalid_ke_payload(accepted: KeyExchangeMethod) -> Self {
        Self::status(
            NotifyType::InvalidKePayload,
            accepted.value().to_be_bytes().to_vec(),
        )
    }

    /// The accepted method of an INVALID_KE_PAYLOAD notify.
    ///
    /// `None` for other notify types and when the data is not exactly two octets.
    pub fn invalid_ke_payload_method(&self) -> Option<KeyExchangeMethod> {
        if self.notify_type != NotifyType::InvalidKePayload {
            return None;
        }
        <[u8; 2]>::try_from(self.data.as_slice())
            .ok()
            .map(|b| KeyExchangeMethod::from(u16::from_be_bytes(b)))
    }

    /// SIGNATURE_HASH_ALGORITHMS listing `algorithms` ([RFC 7427 §4]).
    ///
    /// [RFC 7427 §4]: https://www.rfc-editor.org/rfc/rfc7427#section-4
    pub fn signature_hash_algorithms(algorithms: &[HashAlgorithm]) -> Self {
        Self::status(
            NotifyType::SignatureHashAlgorithms,
            algorithms
                .iter()
                .flat_map(|a| a.value().to_be_bytes())
                .collect(),
        )
    }

    /// The algorithms of a SIGNATURE_HASH_ALGORITHMS notify.
    ///
    /// `None` for other notify types and when the data is not a whole number of 2-octet
    /// identifiers.
    pub fn hash_algorithms(&self) -> Option<Vec<HashAlgorithm>> {
        if self.notify_type != NotifyType::SignatureHashAlgorithms
            || !self.data.len().is_multiple_of(2)
        {
            return None;
        }
        Some(
            self.data
                .chunks_exact(2)
                .filter_map(|c| <[u8; 2]>::try_from(c).ok())
                .map(|b| HashAlgorithm::from(u16::from_be_bytes(b)))
                .collect(),
        )
    }

    /// Parses the body of a Notify payload (after the generic payload header).
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if the body is shorter than its fixed part plus the SPI.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(body, "notify payload");
        let protocol_id = ProtocolId::from(r.u8()?);
        let spi_size = r.u8()?;
        let notify_type = NotifyType::from(r.u16()?);
        let spi = r.take(usize::from(spi_size))?.to_vec();
        Ok(Self {
            protocol_id,
            spi,
            notify_type,
            data: r.rest().to_vec(),
        })
    }

    /// Appends the body of the Notify payload.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.protocol_id.value());
        out.push(count8(self.spi.len()));
        out.extend_from_slice(&self.notify_type.value().to_be_bytes());
        out.extend_from_slice(&self.spi);
        out.extend_from_slice(&self.data);
    }
}

/// The body of a Delete payload ([RFC 7296 §3.11]).
///
/// Deleting the IKE SA uses Protocol ID 1, SPI Size 0 and no SPIs; deleting Child SAs lists
/// their inbound SPIs, each `spi_size` octets.
///
/// [RFC 7296 §3.11]: https://www.rfc-editor.org/rfc/rfc7296#section-3.11
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeletePayload {
    /// The protocol of the SAs deleted.
    pub protocol_id: ProtocolId,
    /// The length of each SPI, in octets.
    pub spi_size: u8,
    /// The SPIs; each must be `spi_size` octets long.
    pub spis: Vec<Vec<u8>>,
}

impl DeletePayload {
    /// The Delete payload that deletes the IKE SA the message is sent under.
    pub fn ike() -> Self {
        Self {
            protocol_id: ProtocolId::Ike,
            spi_size: 0,
            spis: Vec::new(),
        }
    }

    /// A Delete payload for ESP SAs with these inbound SPIs.
    pub fn esp(spis: &[EspSpi]) -> Self {
        Self {
            protocol_id: ProtocolId::Esp,
            spi_size: 4,
            spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
        }
    }

    /// Parses the body of a Delete payload (after the generic payload header).
    ///
    /// # Errors
    ///
    /// - [`ParseError::Truncated`] if the body is shorter than its 4-octet fixed part.
    /// - [`ParseError::InvalidValue`] if SPI Size is 0 but Num of SPIs is not.
    /// - [`ParseError::CountMismatch`] if the SPIs do not fill the rest of the body exactly.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(body, "delete payload");
        let protocol_id = ProtocolId::from(r.u8()?);
        let spi_size = r.u8()?;
        let count = usize::from(r.u16()?);
        let rest = r.rest();
        let spis = if spi_size == 0 {
            if count != 0 {
                return Err(ParseError::InvalidValue {
                    what: "delete SPI count",
                });
            }
            if !rest.is_empty() {
                return Err(ParseError::TrailingData {
                    what: "delete payload",
                });
            }
            Vec::new()
        } else {
            if rest.len() != count.saturating_mul(usize::from(spi_size)) {
                return Err(ParseError::CountMismatch { what: "SPIs" });
            }
            rest.chunks_exact(usize::from(spi_size))
                .map(<[u8]>::to_vec)
                .collect()
        };
        Ok(Self {
            protocol_id,
            spi_size,
            spis,
        })
    }

    /// Appends the body of the Delete payload.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.protocol_id.value());
        out.push(self.spi_size);
        out.extend_from_slice(&len16(self.spis.len()).to_be_bytes());
        for spi in &self.spis {
            out.extend_from_slice(spi);
        }
    }
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::{arb_delete, arb_notify};

    #[test]
    fn parses_and_emits_invalid_ke_payload() {
        let bytes = hex!("00 00 0011 0014");
        let n = NotifyPayload::parse(&bytes).unwrap();
        assert_eq!(
            n,
            NotifyPayload::invalid_ke_payload(KeyExchangeMethod::Ecp384)
        );
        assert_eq!(
            n.invalid_ke_payload_method(),
            Some(KeyExchangeMethod::Ecp384)
        );
        let mut out = Vec::new();
        n.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn invalid_ke_payload_needs_exactly_two_octets() {
        for data in [&[][..], &[0x00], &[0x00, 0x14, 0x00]] {
            let n = NotifyPayload::status(NotifyType::InvalidKePayload, data.to_vec());
            assert_eq!(n.invalid_ke_payload_method(), None);
        }
        let n = NotifyPayload::status(NotifyType::Cookie, vec![0, 0x14]);
        assert_eq!(n.invalid_ke_payload_method(), None);
    }

    #[test]
    fn signature_hash_algorithms() {
        let bytes = hex!("00 00 402f 0002 0003 0004");
        let n = NotifyPayload::parse(&bytes).unwrap();
        let algs = [
            HashAlgorithm::Sha2_256,
            HashAlgorithm::Sha2_384,
            HashAlgorithm::Sha2_512,
        ];
        assert_eq!(n, NotifyPayload::signature_hash_algorithms(&algs));
        assert_eq!(n.hash_algorithms(), Some(algs.to_vec()));
        let odd = NotifyPayload::status(NotifyType::SignatureHashAlgorithms, vec![0, 2, 0]);
        assert_eq!(odd.hash_algorithms(), None);
    }

    #[test]
    fn notify_with_esp_spi() {
        let bytes = hex!("03 04 4009 c0ffee01");
        let n = NotifyPayload::parse(&bytes).unwrap();
        assert_eq!(n.protocol_id, ProtocolId::Esp);
        assert_eq!(n.spi, hex!("c0ffee01"));
        assert_eq!(n.notify_type, NotifyType::RekeySa);
        assert!(n.data.is_empty());
        let mut out = Vec::new();
        n.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn rejects_truncated_notify() {
        let bytes = hex!("03 04 4009 c0ffee01");
        for n in 0..bytes.len() {
            assert_eq!(
                NotifyPayload::parse(&bytes[..n]),
                Err(ParseError::Truncated {
                    what: "notify payload"
                })
            );
        }
    }

    #[test]
    fn parses_and_emits_delete() {
        let bytes = hex!("01 00 0000");
        let d = DeletePayload::parse(&bytes).unwrap();
        assert_eq!(d, DeletePayload::ike());
        let mut out = Vec::new();
        d.emit(&mut out);
        assert_eq!(out, bytes);

        let bytes = hex!("03 04 0002 c0ffee01 c0ffee02");
        let d = DeletePayload::parse(&bytes).unwrap();
        assert_eq!(
            d,
            DeletePayload::esp(&[EspSpi(0xc0ff_ee01), EspSpi(0xc0ff_ee02)])
        );
        let mut out = Vec::new();
        d.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn rejects_bad_delete() {
        for n in 0..4 {
            assert_eq!(
                DeletePayload::parse(&hex!("01000000")[..n]),
                Err(ParseError::Truncated {
                    what: "delete payload"
                })
            );
        }
        assert_eq!(
            DeletePayload::parse(&hex!("01 00 ffff")),
            Err(ParseError::InvalidValue {
                what: "delete SPI count"
            })
        );
        assert_eq!(
            DeletePayload::parse(&hex!("01 00 0000 00")),
            Err(ParseError::TrailingData {
                what: "delete payload"
            })
        );
        assert_eq!(
            DeletePayload::parse(&hex!("03 04 0002 c0ffee01")),
            Err(ParseError::CountMismatch { what: "SPIs" })
        );
        assert_eq!(
            DeletePayload::parse(&hex!("03 04 0001 c0ffee01 00")),
            Err(ParseError::CountMismatch { what: "SPIs" })
        );
    }

    proptest! {
        #[test]
        fn notify_round_trips(n in arb_notify()) {
            let mut out = Vec::new();
            n.emit(&mut out);
            prop_assert_eq!(NotifyPayload::parse(&out), Ok(n));
        }

        #[test]
        fn delete_round_trips(d in arb_delete()) {
            let mut out = Vec::new();
            d.emit(&mut out);
            prop_assert_eq!(DeletePayload::parse(&out), Ok(d));
        }
    }
}
