//! The Security Association payload: proposals, transforms and attributes ([RFC 7296 §3.3]).
//!
//! [RFC 7296 §3.3]: https://www.rfc-editor.org/rfc/rfc7296#section-3.3

use super::emit::{close_len16, count8, len16};
use super::enums::{
    EncryptionAlgorithm, EsnMode, IntegrityAlgorithm, KeyExchangeMethod, PrfAlgorithm, ProtocolId,
    TransformAttributeType, TransformType,
};
use super::error::ParseError;
use super::reader::Reader;

/// Last Substructure value of a proposal that is followed by another ([RFC 7296 §3.3.1]).
///
/// [RFC 7296 §3.3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.3.1
const MORE_PROPOSALS: u8 = 2;
/// Last Substructure value of a transform that is followed by another ([RFC 7296 §3.3.2]).
///
/// [RFC 7296 §3.3.2]: https://www.rfc-editor.org/rfc/rfc7296#section-3.3.2
const MORE_TRANSFORMS: u8 = 3;
/// The Attribute Format bit: set for TV, clear for TLV ([RFC 7296 §3.3.5]).
///
/// [RFC 7296 §3.3.5]: https://www.rfc-editor.org/rfc/rfc7296#section-3.3.5
const AF_TV: u16 = 0x8000;

/// The body of a Security Association payload: the proposals in order of preference
/// ([RFC 7296 §3.3]).
///
/// A received SA payload has at least one proposal; emitting one without proposals yields a
/// payload the parser rejects.
///
/// [RFC 7296 §3.3]: https://www.rfc-editor.org/rfc/rfc7296#section-3.3
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SaPayload {
    /// The proposals, most preferred first.
    pub proposals: Vec<Proposal>,
}

/// One proposal substructure of an SA payload ([RFC 7296 §3.3.1]).
///
/// [RFC 7296 §3.3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.3.1
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Proposal {
    /// Proposal Num: 1 for the first proposal, then the same or one more.
    pub number: u8,
    /// The protocol negotiated: IKE, AH or ESP.
    pub protocol_id: ProtocolId,
    /// The sender's SPI: empty for IKE in IKE_SA_INIT, 8 octets for IKE rekeys, 4 for ESP.
    /// At most 255 octets.
    pub spi: Vec<u8>,
    /// The transforms; at most 255.
    pub transforms: Vec<Transform>,
}

/// One transform substructure of a proposal ([RFC 7296 §3.3.2]).
///
/// [RFC 7296 §3.3.2]: https://www.rfc-editor.org/rfc/rfc7296#section-3.3.2
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Transform {
    /// The Transform Type (ENCR, PRF, INTEG, KE, ESN, ADDKE1..7).
    pub transform_type: TransformType,
    /// The Transform ID, interpreted per `transform_type`; see the typed accessors.
    pub id: u16,
    /// Transform attributes, such as the key length of a variable-length cipher.
    pub attributes: Vec<TransformAttribute>,
}

/// A transform attribute in TV or TLV format ([RFC 7296 §3.3.5]).
///
/// `attr_type` must be below 0x8000: its top bit is the Attribute Format bit.
///
/// [RFC 7296 §3.3.5]: https://www.rfc-editor.org/rfc/rfc7296#section-3.3.5
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransformAttribute {
    /// Type/Value format (AF = 1) with a two-octet value, as Key Length uses.
    Tv {
        /// The attribute type.
        attr_type: TransformAttributeType,
        /// The two-octet value.
        value: u16,
    },
    /// Type/Length/Value format (AF = 0); the value is at most 65535 octets.
    Tlv {
        /// The attribute type.
        attr_type: TransformAttributeType,
        /// The value.
        value: Vec<u8>,
    },
}

impl TransformAttribute {
    /// The Key Length attribute (TV, in bits).
    pub fn key_length(bits: u16) -> Self {
        Self::Tv {
            attr_type: TransformAttributeType::KeyLength,
            value: bits,
        }
    }

    /// The attribute type, whichever the format.
    pub fn attr_type(&self) -> TransformAttributeType {
        match self {
            Self::Tv { attr_type, .. } | Self::Tlv { attr_type, .. } => *attr_type,
        }
    }

    fn parse(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let type_field = r.u16()?;
        let attr_type = TransformAttributeType::from(type_field & !AF_TV);
        let length_or_value = r.u16()?;
        if type_field & AF_TV != 0 {
            Ok(Self::Tv {
                attr_type,
                value: length_or_value,
            })
        } else {
            let value = r.take(usize::from(length_or_value))?.to_vec();
            Ok(Self::Tlv { attr_type, value })
        }
    }

    fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Self::Tv { attr_type, value } => {
                out.extend_from_slice(&(attr_type.value() | AF_TV).to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
            Self::Tlv { attr_type, value } => {
                out.extend_from_slice(&(attr_type.value() & !AF_TV).to_be_bytes());
                out.extend_from_slice(&len16(value.len()).to_be_bytes());
                out.extend_from_slice(value);
            }
        }
    }
}

impl Transform {
    /// A transform of `transform_type` with `id` and no attributes.
    pub fn new(transform_type: TransformType, id: u16) -> Self {
        Self {
            transform_type,
            id,
            attributes: Vec::new(),
        }
    }

    /// An encryption transform, with the Key Length attribute (bits) if `key_length` is set.
    pub fn encryption(algorithm: EncryptionAlgorithm, key_length: Option<u16>) -> Self {
        Self {
            attributes: key_length
                .map(TransformAttribute::key_length)
                .into_iter()
                .collect(),
            ..Self::new(TransformType::Encryption, algorithm.value())
        }
    }

    /// A pseudorandom function transform.
    pub fn prf(algorithm: PrfAlgorithm) -> Self {
        Self::new(TransformType::PseudoRandomFunction, algorithm.value())
    }

    /// An integrity algorithm transform.
    pub fn integrity(algorithm: IntegrityAlgorithm) -> Self {
        Self::new(TransformType::Integrity, algorithm.value())
    }

    /// A key exchange method transform (Transform Type 4).
    pub fn key_exchange(method: KeyExchangeMethod) -> Self {
        Self::new(TransformType::KeyExchange, method.value())
    }

    /// An additional key exchange transform, ADDKE`round` ([RFC 9370 §2.2.1]); `None` unless
    /// `round` is 1..=7.
    ///
    /// [RFC 9370 §2.2.1]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.1
    pub fn additional_key_exchange(round: u8, method: KeyExchangeMethod) -> Option<Self> {
        TransformType::additional_key_exchange(round).map(|t| Self::new(t, method.value()))
    }

    /// An Extended Sequence Numbers transform.
    pub fn esn(mode: EsnMode) -> Self {
        Self::new(TransformType::ExtendedSequenceNumbers, mode.value())
    }

    /// The value of the first Key Length attribute, in bits.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            TransformAttribute::Tv {
                attr_type: TransformAttributeType::KeyLength,
                value,
            } => Some(*value),
            _ => None,
        })
    }

    /// The encryption algorithm, if this is an ENCR transform.
    pub fn encryption_algorithm(&self) -> Option<EncryptionAlgorithm> {
        (self.transform_type == TransformType::Encryption).then(|| self.id.into())
    }

    /// The pseudorandom function, if this is a PRF transform.
    pub fn prf_algorithm(&self) -> Option<PrfAlgorithm> {
        (self.transform_type == TransformType::PseudoRandomFunction).then(|| self.id.into())
    }

    /// The integrity algorithm, if this is an INTEG transform.
    pub fn integrity_algorithm(&self) -> Option<IntegrityAlgorithm> {
        (self.transform_type == TransformType::Integrity).then(|| self.id.into())
    }

    /// The key exchange method, if this is a KE or ADDKE1..7 transform.
    pub fn key_exchange_method(&self) -> Option<KeyExchangeMethod> {
        (self.transform_type == TransformType::KeyExchange
            || self
                .transform_type
                .additional_key_exchange_round()
                .is_some())
        .then(|| self.id.into())
    }

    /// The ESN mode, if this is an ESN transform.
    pub fn esn_mode(&self) -> Option<EsnMode> {
        (self.transform_type == TransformType::ExtendedSequenceNumbers).then(|| self.id.into())
    }

    /// Parses one transform; returns it and whether another follows.
    fn parse(r: &mut Reader<'_>) -> Result<(Self, bool), ParseError> {
        let last = r.u8()?;
        let more = match last {
            0 => false,
            MORE_TRANSFORMS => true,
            _ => {
                return Err(ParseError::InvalidValue {
                    what: "transform last substructure",
                });
            }
        };
        let _reserved = r.u8()?;
        let length = usize::from(r.u16()?);
        let body_len = length
            .checked_sub(4)
            .filter(|n| *n >= 4)
            .ok_or(ParseError::InvalidLength { what: "transform" })?;
        let mut body = r.sub(body_len, "transform")?;
        let transform_type = TransformType::from(body.u8()?);
        let _reserved = body.u8()?;
        let id = body.u16()?;
        let mut attributes = Vec::new();
        let mut attrs = Reader::new(body.rest(), "transform attribute");
        while !attrs.is_empty() {
            attributes.push(TransformAttribute::parse(&mut attrs)?);
        }
        Ok((
            Self {
                transform_type,
                id,
                attributes,
            },
            more,
        ))
    }

    fn emit(&self, last: bool, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(if last { 0 } else { MORE_TRANSFORMS });
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        out.push(self.transform_type.value());
        out.push(0);
        out.extend_from_slice(&self.id.to_be_bytes());
        for a in &self.attributes {
            a.emit(out);
        }
        close_len16(out, start + 2, start);
    }
}

impl Proposal {
    /// Parses one proposal; returns it and whether another follows.
    fn parse(r: &mut Reader<'_>) -> Result<(Self, bool), ParseError> {
        let last = r.u8()?;
        let more = match last {
            0 => false,
            MORE_PROPOSALS => true,
            _ => {
                return Err(ParseError::InvalidValue {
                    what: "proposal last substructure",
                });
            }
        };
        let _reserved = r.u8()?;
        let length = usize::from(r.u16()?);
        let body_len = length
            .checked_sub(4)
            .filter(|n| *n >= 4)
            .ok_or(ParseError::InvalidLength { what: "proposal" })?;
        let mut body = r.sub(body_len, "proposal")?;
        let number = body.u8()?;
        let protocol_id = ProtocolId::from(body.u8()?);
        let spi_size = body.u8()?;
        let num_transforms = body.u8()?;
        let spi = body.take(usize::from(spi_size))?.to_vec();
        let mut transforms = Vec::new();
        let mut rest = Reader::new(body.rest(), "transform");
        let mut more_transforms = !rest.is_empty();
        while more_transforms {
            let (t, more) = Transform::parse(&mut rest)?;
            transforms.push(t);
            more_transforms = more;
        }
        rest.finish()?;
        if transforms.len() != usize::from(num_transforms) {
            return Err(ParseError::CountMismatch { what: "transforms" });
        }
        Ok((
            Self {
                number,
                protocol_id,
                spi,
                transforms,
            },
            more,
        ))
    }

    fn emit(&self, last: bool, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(if last { 0 } else { MORE_PROPOSALS });
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        out.push(self.number);
        out.push(self.protocol_id.value());
        out.push(count8(self.spi.len()));
        out.push(count8(self.transforms.len()));
        out.extend_from_slice(&self.spi);
        let count = self.transforms.len();
        for (i, t) in self.transforms.iter().enumerate() {
            t.emit(i + 1 == count, out);
        }
        close_len16(out, start + 2, start);
    }
}

impl SaPayload {
    /// Parses the body of an SA payload (after the generic payload header).
    ///
    /// # Errors
    ///
    /// [`ParseError`] if a proposal, transform or attribute is truncated or its length is
    /// wrong, a Last Substructure field is not 0/2 (proposals) or 0/3 (transforms) or
    /// disagrees with what follows, a Num Transforms field is wrong, or there are no
    /// proposals.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(body, "proposal");
        if r.is_empty() {
            return Err(ParseError::InvalidLength { what: "SA payload" });
        }
        let mut proposals = Vec::new();
        let mut more = true;
        while more {
            let (p, next) = Proposal::parse(&mut r)?;
            proposals.push(p);
            more = next;
        }
        r.finish()?;
        Ok(Self { proposals })
    }

    /// Appends the body of the SA payload.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let count = self.proposals.len();
        for (i, p) in self.proposals.iter().enumerate() {
            p.emit(i + 1 == count, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::arb_sa;

    /// SA{ENCR_AES_GCM_16 keylen 256, PRF_HMAC_SHA2_384, KE CURVE_25519, ADDKE1 ML_KEM_768}.
    const SA_BODY: [u8; 44] = hex!(
        "00 00 002c"     // Proposal: last, RESERVED, length 44
        "01 01 00 04"    // Proposal Num 1, Protocol IKE, SPI Size 0, 4 transforms
        "03 00 000c"     // Transform: more, RESERVED, length 12
        "01 00 0014"     //   Type ENCR, RESERVED, ID ENCR_AES_GCM_16 (20)
        "800e 0100"      //   AF=1 Key Length (14) = 256
        "03 00 0008"     // Transform: more, length 8
        "02 00 0006"     //   Type PRF, ID PRF_HMAC_SHA2_384 (6)
        "03 00 0008"     // Transform: more, length 8
        "04 00 001f"     //   Type KE, ID CURVE_25519 (31)
        "00 00 0008"     // Transform: last, length 8
        "06 00 0024"     //   Type ADDKE1, ID ML_KEM_768 (36)
    );

    fn pq_sa() -> SaPayload {
        SaPayload {
            proposals: vec![Proposal {
                number: 1,
                protocol_id: ProtocolId::Ike,
                spi: Vec::new(),
                transforms: vec![
                    Transform::encryption(EncryptionAlgorithm::AesGcm16, Some(256)),
                    Transform::prf(PrfAlgorithm::HmacSha2_384),
                    Transform::key_exchange(KeyExchangeMethod::Curve25519),
                    Transform::additional_key_exchange(1, KeyExchangeMethod::MlKem768).unwrap(),
                ],
            }],
        }
    }

    #[test]
    fn parses_and_emits_pq_proposal() {
        let sa = SaPayload::parse(&SA_BODY).unwrap();
        assert_eq!(sa, pq_sa());
        let mut out = Vec::new();
        sa.emit(&mut out);
        assert_eq!(out, SA_BODY);
    }

    #[test]
    fn typed_accessors() {
        let sa = pq_sa();
        let t = &sa.proposals[0].transforms;
        assert_eq!(t[0].key_length(), Some(256));
        assert_eq!(
            t[0].encryption_algorithm(),
            Some(EncryptionAlgorithm::AesGcm16)
        );
        assert_eq!(t[0].prf_algorithm(), None);
        assert_eq!(t[1].prf_algorithm(), Some(PrfAlgorithm::HmacSha2_384));
        assert_eq!(t[1].key_length(), None);
        assert_eq!(
            t[2].key_exchange_method(),
            Some(KeyExchangeMethod::Curve25519)
        );
        assert_eq!(
            t[3].key_exchange_method(),
            Some(KeyExchangeMethod::MlKem768)
        );
        assert_eq!(t[3].transform_type, TransformType::AdditionalKeyExchange1);
        assert_eq!(t[3].integrity_algorithm(), None);
        assert_eq!(t[3].esn_mode(), None);
        assert_eq!(
            Transform::integrity(IntegrityAlgorithm::HmacSha2_256_128).integrity_algorithm(),
            Some(IntegrityAlgorithm::HmacSha2_256_128)
        );
        assert_eq!(
            Transform::esn(EsnMode::NoEsn).esn_mode(),
            Some(EsnMode::NoEsn)
        );
        assert_eq!(
            Transform::additional_key_exchange(0, KeyExchangeMethod::MlKem768),
            None
        );
        assert_eq!(
            Transform::additional_key_exchange(8, KeyExchangeMethod::MlKem768),
            None
        );
        assert_eq!(
            Transform::additional_key_exchange(7, KeyExchangeMethod::MlKem1024)
                .unwrap()
                .transform_type
                .value(),
            12
        );
    }

    #[test]
    fn esp_proposal_with_spi_and_tlv_attribute() {
        let bytes = hex!(
            "00 00 0020"     // last proposal, length 32
            "02 03 04 02"    // Num 2, ESP, SPI size 4, 2 transforms
            "c0ffee01"       // SPI
            "03 00 000c"     // transform, more, length 12
            "01 00 000c"     //   ENCR_AES_CBC
            "0063 0000"      //   TLV type 99, length 0
            "00 00 0008"     // transform, last, length 8
            "05 00 0000"     //   ESN: No ESN
        );
        let sa = SaPayload::parse(&bytes).unwrap();
        let p = &sa.proposals[0];
        assert_eq!(p.number, 2);
        assert_eq!(p.protocol_id, ProtocolId::Esp);
        assert_eq!(p.spi, hex!("c0ffee01"));
        assert_eq!(
            p.transforms[0].attributes,
            vec![TransformAttribute::Tlv {
                attr_type: TransformAttributeType::from(99),
                value: Vec::new()
            }]
        );
        assert_eq!(p.transforms[0].attributes[0].attr_type().value(), 99);
        assert_eq!(p.transforms[1].esn_mode(), Some(EsnMode::NoEsn));
        let mut out = Vec::new();
        sa.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn two_proposals_use_last_substructure_two() {
        let mut sa = pq_sa();
        let mut second = sa.proposals[0].clone();
        second.number = 2;
        sa.proposals.push(second);
        let mut out = Vec::new();
        sa.emit(&mut out);
        assert_eq!(out[0], 2);
        assert_eq!(out[44], 0);
        assert_eq!(SaPayload::parse(&out).unwrap(), sa);
    }

    #[test]
    fn rejects_every_truncation() {
        for n in 0..SA_BODY.len() {
            assert!(SaPayload::parse(&SA_BODY[..n]).is_err(), "prefix {n}");
        }
        assert_eq!(
            SaPayload::parse(&[]),
            Err(ParseError::InvalidLength { what: "SA payload" })
        );
        assert_eq!(
            SaPayload::parse(&SA_BODY[..3]),
            Err(ParseError::Truncated { what: "proposal" })
        );
        assert_eq!(
            SaPayload::parse(&SA_BODY[..43]),
            Err(ParseError::Truncated { what: "proposal" })
        );
    }

    #[test]
    fn rejects_bad_last_substructure() {
        let mut b = SA_BODY;
        b[0] = 1;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::InvalidValue {
                what: "proposal last substructure"
            })
        );
        // Claims another proposal follows, but none does.
        let mut b = SA_BODY;
        b[0] = 2;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::Truncated { what: "proposal" })
        );
        // Transform marked last although more follow.
        let mut b = SA_BODY;
        b[8] = 0;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::TrailingData { what: "transform" })
        );
        let mut b = SA_BODY;
        b[8] = 2;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::InvalidValue {
                what: "transform last substructure"
            })
        );
        // Last transform claims another follows.
        let mut b = SA_BODY;
        b[36] = 3;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::Truncated { what: "transform" })
        );
    }

    #[test]
    fn rejects_bad_lengths_and_counts() {
        let mut b = SA_BODY;
        b[7] = 3;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::CountMismatch { what: "transforms" })
        );
        let mut b = SA_BODY;
        b[7] = 5;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::CountMismatch { what: "transforms" })
        );
        // Proposal length below the 8-octet minimum.
        let mut b = SA_BODY;
        b[3] = 7;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::InvalidLength { what: "proposal" })
        );
        // Proposal length beyond the SA body.
        let mut b = SA_BODY;
        b[3] = 45;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::Truncated { what: "proposal" })
        );
        // Proposal length shorter than its transforms: the last transform is cut.
        let mut b = SA_BODY;
        b[3] = 40;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::Truncated { what: "transform" })
        );
        // SPI size beyond the proposal.
        let mut b = SA_BODY;
        b[6] = 200;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::Truncated { what: "proposal" })
        );
        // Transform length below 8.
        let mut b = SA_BODY;
        b[11] = 7;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::InvalidLength { what: "transform" })
        );
        // Transform length cutting its attribute in half.
        let mut b = SA_BODY;
        b[11] = 10;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::Truncated {
                what: "transform attribute"
            })
        );
        // TLV attribute length beyond the transform.
        let mut b = SA_BODY;
        b[16] = 0x00;
        assert_eq!(
            SaPayload::parse(&b),
            Err(ParseError::Truncated {
                what: "transform attribute"
            })
        );
    }

    proptest! {
        #[test]
        fn sa_round_trips(sa in arb_sa()) {
            let mut out = Vec::new();
            sa.emit(&mut out);
            prop_assert_eq!(SaPayload::parse(&out), Ok(sa));
        }
    }
}
