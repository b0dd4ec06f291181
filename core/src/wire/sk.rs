//! The Encrypted (SK) and Encrypted Fragment (SKF) payloads, and in-place access to them
//! for decryption and encryption ([RFC 7296 §3.14], [RFC 7383 §2.5], [RFC 5282 §5.1]).
//!
//! [RFC 7296 §3.14]: https://www.rfc-editor.org/rfc/rfc7296#section-3.14
//! [RFC 7383 §2.5]: https://www.rfc-editor.org/rfc/rfc7383#section-2.5
//! [RFC 5282 §5.1]: https://www.rfc-editor.org/rfc/rfc5282#section-5.1

use core::ops::Range;

use super::emit::{close_len16, patch_u8, patch_u32};
use super::enums::PayloadType;
use super::error::ParseError;
use super::header::Header;
use super::payload::{GENERIC_HEADER_LEN, Payload, checked_payload_bytes, emit_chain, walk};
use super::reader::Reader;

/// Length of the Fragment Number and Total Fragments fields of SKF.
const FRAGMENT_FIELDS_LEN: usize = 4;

/// The body of an SK payload ([RFC 7296 §3.14]).
///
/// `data` is Initialization Vector, ciphertext and Integrity Checksum Data together; their
/// split depends on the negotiated algorithms and is the IKE SA's concern.
///
/// [RFC 7296 §3.14]: https://www.rfc-editor.org/rfc/rfc7296#section-3.14
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EncryptedPayload {
    /// The type of the first payload inside, carried in the SK Next Payload field.
    pub next_inner: PayloadType,
    /// IV, ciphertext and ICV.
    pub data: Vec<u8>,
}

impl EncryptedPayload {
    /// Wraps the body of an SK payload whose Next Payload field was `next_inner`.
    pub fn parse(next_inner: PayloadType, body: &[u8]) -> Self {
        Self {
            next_inner,
            data: body.to_vec(),
        }
    }

    /// Appends the body of the SK payload.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.data);
    }
}

/// The Fragment Number and Total Fragments of an SKF payload ([RFC 7383 §2.5]).
///
/// [RFC 7383 §2.5]: https://www.rfc-editor.org/rfc/rfc7383#section-2.5
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentNumbers {
    /// This fragment's number, from 1.
    pub fragment_number: u16,
    /// The number of fragments of the message.
    pub total_fragments: u16,
}

impl FragmentNumbers {
    /// Checks that `1 <= fragment_number <= total_fragments`.
    ///
    /// # Errors
    ///
    /// [`ParseError::InvalidFragmentNumber`] otherwise.
    pub fn new(fragment_number: u16, total_fragments: u16) -> Result<Self, ParseError> {
        if fragment_number == 0 || fragment_number > total_fragments {
            return Err(ParseError::InvalidFragmentNumber {
                number: fragment_number,
                total: total_fragments,
            });
        }
        Ok(Self {
            fragment_number,
            total_fragments,
        })
    }

    fn parse(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let number = r.u16()?;
        let total = r.u16()?;
        Self::new(number, total)
    }

    fn emit(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.fragment_number.to_be_bytes());
        out.extend_from_slice(&self.total_fragments.to_be_bytes());
    }
}

/// The body of an SKF payload ([RFC 7383 §2.5]).
///
/// `next_inner` is the first inner payload's type in fragment 1 and 0 in the others; that
/// rule is the reassembler's to check.
///
/// [RFC 7383 §2.5]: https://www.rfc-editor.org/rfc/rfc7383#section-2.5
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EncryptedFragment {
    /// The Next Payload field.
    pub next_inner: PayloadType,
    /// Fragment Number, from 1.
    pub fragment_number: u16,
    /// Total Fragments, at least `fragment_number`.
    pub total_fragments: u16,
    /// IV, ciphertext and ICV of this fragment.
    pub data: Vec<u8>,
}

impl EncryptedFragment {
    /// Parses the body of an SKF payload whose Next Payload field was `next_inner`.
    ///
    /// # Errors
    ///
    /// - [`ParseError::Truncated`] if the body is shorter than 4 octets.
    /// - [`ParseError::InvalidFragmentNumber`] if Fragment Number is 0 or above Total
    ///   Fragments.
    pub fn parse(next_inner: PayloadType, body: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(body, "SKF payload");
        let numbers = FragmentNumbers::parse(&mut r)?;
        Ok(Self {
            next_inner,
            fragment_number: numbers.fragment_number,
            total_fragments: numbers.total_fragments,
            data: r.rest().to_vec(),
        })
    }

    /// Appends the body of the SKF payload.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.fragment_number.to_be_bytes());
        out.extend_from_slice(&self.total_fragments.to_be_bytes());
        out.extend_from_slice(&self.data);
    }
}

/// A received message whose last payload is SK or SKF, seen in place.
///
/// [`aad`](Self::aad) is what AEAD ciphers authenticate: the message from the IKE header
/// through the SK generic payload header ([RFC 5282 §5.1]), or for SKF through the Total
/// Fragments field ([RFC 7383 §2.5.3]). Integrity-checked (non-AEAD) ciphers cover
/// `aad() | body()` minus the ICV ([RFC 7296 §3.14]).
///
/// [RFC 5282 §5.1]: https://www.rfc-editor.org/rfc/rfc5282#section-5.1
/// [RFC 7383 §2.5.3]: https://www.rfc-editor.org/rfc/rfc7383#section-2.5.3
/// [RFC 7296 §3.14]: https://www.rfc-editor.org/rfc/rfc7296#section-3.14
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedView<'a> {
    message: &'a [u8],
    header: Header,
    payload_offset: usize,
    body_offset: usize,
    next_inner: PayloadType,
    fragment: Option<FragmentNumbers>,
    unprotected: Vec<Payload>,
}

impl<'a> EncryptedView<'a> {
    /// The parsed IKE header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The whole message.
    pub fn message(&self) -> &'a [u8] {
        self.message
    }

    /// The offset of the SK or SKF generic payload header within the message.
    pub fn payload_offset(&self) -> usize {
        self.payload_offset
    }

    /// The associated data: the message up to the start of the IV.
    pub fn aad(&self) -> &'a [u8] {
        self.message.get(..self.body_offset).unwrap_or_default()
    }

    /// IV, ciphertext and ICV: the message from the end of [`aad`](Self::aad) to its end.
    pub fn body(&self) -> &'a [u8] {
        self.message.get(self.body_offset..).unwrap_or_default()
    }

    /// The octet range of [`body`](Self::body) within the message.
    pub fn body_range(&self) -> Range<usize> {
        self.body_offset..self.message.len()
    }

    /// The type of the first inner payload (the SK or SKF Next Payload field).
    pub fn next_inner(&self) -> PayloadType {
        self.next_inner
    }

    /// The fragment numbers if the payload is SKF.
    pub fn fragment(&self) -> Option<FragmentNumbers> {
        self.fragment
    }

    /// The payloads before SK or SKF, which travel unprotected (usually none).
    pub fn unprotected_payloads(&self) -> &[Payload] {
        &self.unprotected
    }
}

/// Finds the SK or SKF payload of a received message for in-place decryption.
///
/// Returns `Ok(None)` if the message has no SK or SKF payload. The whole message is checked
/// as by [`Message::parse`](super::Message::parse), except that the encrypted body is not
/// copied.
///
/// # Errors
///
/// Every error of [`Message::parse`](super::Message::parse).
pub fn locate_encrypted(message: &[u8]) -> Result<Option<EncryptedView<'_>>, ParseError> {
    let header = Header::parse(message)?;
    let payload_bytes = checked_payload_bytes(&header, message)?;
    let mut unprotected = Vec::new();
    let mut found = None;
    walk(header.next_payload, payload_bytes, |raw| {
        let body_start = Header::LEN + raw.offset + GENERIC_HEADER_LEN;
        match raw.payload_type {
            PayloadType::Encrypted => {
                found = Some((raw.offset, body_start, raw.next_payload, None));
            }
            PayloadType::EncryptedFragment => {
                let numbers = FragmentNumbers::parse(&mut Reader::new(raw.body, "SKF payload"))?;
                found = Some((
                    raw.offset,
                    body_start + FRAGMENT_FIELDS_LEN,
                    raw.next_payload,
                    Some(numbers),
                ));
            }
            _ => unprotected.push(Payload::from_raw(&raw)?),
        }
        Ok(())
    })?;
    Ok(found.map(
        |(offset, body_offset, next_inner, fragment)| EncryptedView {
            message,
            header,
            payload_offset: Header::LEN + offset,
            body_offset,
            next_inner,
            fragment,
            unprotected,
        },
    ))
}

/// A protected message laid out by [`emit_protected`], ready for encryption in place.
///
/// The body (IV, ciphertext, ICV) is zero-filled; the caller writes the IV, encrypts the
/// padded inner payloads into the space after it and writes the ICV at the end, all through
/// [`split_mut`](Self::split_mut), which also yields the AAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedMessage {
    bytes: Vec<u8>,
    body_offset: usize,
}

impl ProtectedMessage {
    /// The associated data: header through the SK generic header (or SKF fragment fields).
    pub fn aad(&self) -> &[u8] {
        self.bytes.get(..self.body_offset).unwrap_or_default()
    }

    /// The octet range of the associated data, `0..body_range().start`.
    pub fn aad_range(&self) -> Range<usize> {
        0..self.body_offset
    }

    /// The octet range of the body (IV, ciphertext, ICV), which runs to the end.
    pub fn body_range(&self) -> Range<usize> {
        self.body_offset..self.bytes.len()
    }

    /// The body, to be filled with IV, ciphertext and ICV.
    pub fn body_mut(&mut self) -> &mut [u8] {
        self.bytes.get_mut(self.body_offset..).unwrap_or_default()
    }

    /// The associated data and the body, borrowed together for encryption in place.
    pub fn split_mut(&mut self) -> (&[u8], &mut [u8]) {
        let at = self.body_offset.min(self.bytes.len());
        let (aad, body) = self.bytes.split_at_mut(at);
        (aad, body)
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The whole message, by value, ready to send.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Lays out a message that ends in an SK payload (or, with `fragment`, an SKF payload) with
/// a zero-filled body of `body_len` octets, for encryption in place.
///
/// `header.next_payload` and `header.length` are computed. `unprotected` payloads precede
/// the encrypted one in clear and must not include SK or SKF. `next_inner` is the type of
/// the first payload inside (for SKF fragments after the first, NO_NEXT_PAYLOAD per
/// [RFC 7383 §2.5]). `body_len` is IV + padded plaintext + pad length octet + ICV.
///
/// [RFC 7383 §2.5]: https://www.rfc-editor.org/rfc/rfc7383#section-2.5
pub fn emit_protected(
    header: &Header,
    unprotected: &[Payload],
    next_inner: PayloadType,
    fragment: Option<FragmentNumbers>,
    body_len: usize,
) -> ProtectedMessage {
    let encrypted_type = if fragment.is_some() {
        PayloadType::EncryptedFragment
    } else {
        PayloadType::Encrypted
    };
    let mut bytes = Vec::new();
    header.emit(&mut bytes);
    let first = emit_chain(unprotected, encrypted_type, &mut bytes);
    patch_u8(&mut bytes, Header::NEXT_PAYLOAD_OFFSET, first.value());
    let start = bytes.len();
    bytes.extend_from_slice(&[next_inner.value(), 0, 0, 0]);
    if let Some(numbers) = fragment {
        numbers.emit(&mut bytes);
    }
    let body_offset = bytes.len();
    bytes.resize(body_offset.saturating_add(body_len), 0);
    close_len16(&mut bytes, start + 2, start);
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    patch_u32(&mut bytes, Header::LENGTH_OFFSET, len);
    ProtectedMessage { bytes, body_offset }
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::{arb_header, arb_inner_payloads, bytes};
    use crate::wire::{ExchangeType, Flags, IkeSpi, Message, MessageId, NotifyPayload, NotifyType};

    /// IKE_AUTH request: header, then SK naming IDi, with an 8-octet IV, 8 octets of
    /// ciphertext and a 16-octet ICV.
    const SK_MESSAGE: [u8; 64] = hex!(
        "0102030405060708 1112131415161718" // SPIs
        "2e 20 23 08 00000001 00000040"     // Next SK, IKE_AUTH, I, MID 1, Length 64
        "23 00 0024"                        // SK: next IDi, length 36
        "a0a1a2a3a4a5a6a7"                  //   IV
        "c0c1c2c3c4c5c6c7"                  //   ciphertext
        "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf"  //   ICV
    );

    /// The same contents as fragment 2 of 3 in SKF.
    const SKF_MESSAGE: [u8; 68] = hex!(
        "0102030405060708 1112131415161718"
        "35 20 23 08 00000001 00000044"     // Next SKF, Length 68
        "00 00 0028 0002 0003"              // SKF: next 0, length 40, fragment 2 of 3
        "a0a1a2a3a4a5a6a7"
        "c0c1c2c3c4c5c6c7"
        "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    );

    fn header() -> Header {
        Header::new(
            IkeSpi(0x0102_0304_0506_0708),
            IkeSpi(0x1112_1314_1516_1718),
            ExchangeType::IkeAuth,
            Flags::initiator_request(),
            MessageId(1),
        )
    }

    #[test]
    fn locates_sk() {
        let v = locate_encrypted(&SK_MESSAGE).unwrap().unwrap();
        assert_eq!(v.header().length, 64);
        assert_eq!(v.payload_offset(), 28);
        assert_eq!(v.aad(), &SK_MESSAGE[..32]);
        assert_eq!(v.body(), &SK_MESSAGE[32..]);
        assert_eq!(v.body_range(), 32..64);
        assert_eq!(v.next_inner(), PayloadType::IdentificationInitiator);
        assert_eq!(v.fragment(), None);
        assert!(v.unprotected_payloads().is_empty());
        assert_eq!(v.message(), &SK_MESSAGE[..]);
        let m = Message::parse(&SK_MESSAGE).unwrap();
        assert_eq!(
            m.payloads,
            vec![Payload::Sk(EncryptedPayload {
                next_inner: PayloadType::IdentificationInitiator,
                data: SK_MESSAGE[32..].to_vec()
            })]
        );
        assert_eq!(m.emit(), SK_MESSAGE);
    }

    #[test]
    fn locates_skf_with_fragment_fields_in_aad() {
        let v = locate_encrypted(&SKF_MESSAGE).unwrap().unwrap();
        assert_eq!(v.payload_offset(), 28);
        assert_eq!(v.aad(), &SKF_MESSAGE[..36]);
        assert_eq!(v.body(), &SKF_MESSAGE[36..]);
        assert_eq!(v.next_inner(), PayloadType::NoNextPayload);
        assert_eq!(
            v.fragment(),
            Some(FragmentNumbers {
                fragment_number: 2,
                total_fragments: 3
            })
        );
        let m = Message::parse(&SKF_MESSAGE).unwrap();
        assert_eq!(
            m.payloads,
            vec![Payload::Skf(EncryptedFragment {
                next_inner: PayloadType::NoNextPayload,
                fragment_number: 2,
                total_fragments: 3,
                data: SKF_MESSAGE[36..].to_vec()
            })]
        );
        assert_eq!(m.emit(), SKF_MESSAGE);
    }

    #[test]
    fn emit_protected_matches_hand_built_messages() {
        let mut p = emit_protected(
            &header(),
            &[],
            PayloadType::IdentificationInitiator,
            None,
            32,
        );
        assert_eq!(p.aad(), &SK_MESSAGE[..32]);
        assert_eq!(p.aad_range(), 0..32);
        assert_eq!(p.body_range(), 32..64);
        p.body_mut().copy_from_slice(&SK_MESSAGE[32..]);
        assert_eq!(p.as_bytes(), SK_MESSAGE);

        let numbers = FragmentNumbers::new(2, 3).unwrap();
        let mut p = emit_protected(
            &header(),
            &[],
            PayloadType::NoNextPayload,
            Some(numbers),
            32,
        );
        let (aad, body) = p.split_mut();
        assert_eq!(aad, &SKF_MESSAGE[..36]);
        body.copy_from_slice(&SKF_MESSAGE[36..]);
        assert_eq!(p.into_bytes(), SKF_MESSAGE);
    }

    #[test]
    fn unprotected_payloads_precede_sk() {
        let clear = [Payload::Notify(NotifyPayload::status(
            NotifyType::Cookie,
            vec![7; 8],
        ))];
        let p = emit_protected(&header(), &clear, PayloadType::Notify, None, 24);
        let bytes = p.as_bytes();
        assert_eq!(bytes[16], PayloadType::Notify.value());
        assert_eq!(bytes[28..32], hex!("2e 00 0010"));
        assert_eq!(bytes[44..48], hex!("29 00 001c"));
        let v = locate_encrypted(bytes).unwrap().unwrap();
        assert_eq!(v.unprotected_payloads(), &clear);
        assert_eq!(v.payload_offset(), 44);
        assert_eq!(v.aad(), &bytes[..48]);
        assert_eq!(v.body(), &[0; 24]);
    }

    #[test]
    fn no_encrypted_payload_is_none() {
        let m = Message::new(header(), vec![Payload::VendorId(b"pqvpn".to_vec())]);
        assert_eq!(locate_encrypted(&m.emit()), Ok(None));
    }

    #[test]
    fn locate_reports_errors() {
        let mut b = SK_MESSAGE.to_vec();
        b[31] = 35; // SK one octet shorter than the message
        assert_eq!(locate_encrypted(&b), Err(ParseError::EncryptedNotLast));
        let mut b = SKF_MESSAGE;
        b[33] = 0;
        assert_eq!(
            locate_encrypted(&b),
            Err(ParseError::InvalidFragmentNumber {
                number: 0,
                total: 3
            })
        );
        let mut b = SKF_MESSAGE;
        b[33] = 4;
        assert_eq!(
            locate_encrypted(&b),
            Err(ParseError::InvalidFragmentNumber {
                number: 4,
                total: 3
            })
        );
        let mut b = SK_MESSAGE.to_vec();
        b.push(0);
        assert_eq!(
            locate_encrypted(&b),
            Err(ParseError::TrailingData {
                what: "IKE message"
            })
        );
        assert_eq!(
            locate_encrypted(&SK_MESSAGE[..27]),
            Err(ParseError::Truncated { what: "IKE header" })
        );
        assert_eq!(
            FragmentNumbers::new(1, 0),
            Err(ParseError::InvalidFragmentNumber {
                number: 1,
                total: 0
            })
        );
    }

    proptest! {
        #[test]
        fn emit_protected_and_locate_agree(
            header in arb_header(),
            clear in arb_inner_payloads(),
            next_inner in any::<u8>(),
            fragment in proptest::option::of((1u16..=8).prop_flat_map(|t| (1..=t, Just(t)))),
            body in bytes(64),
        ) {
            let fragment = fragment.map(|(n, t)| FragmentNumbers::new(n, t).unwrap());
            let mut p = emit_protected(&header, &clear, next_inner.into(), fragment, body.len());
            p.body_mut().copy_from_slice(&body);
            let aad = p.aad().to_vec();
            let bytes = p.into_bytes();
            let v = locate_encrypted(&bytes).unwrap().unwrap();
            prop_assert_eq!(v.aad(), &aad[..]);
            prop_assert_eq!(v.body(), &body[..]);
            prop_assert_eq!(v.next_inner(), PayloadType::from(next_inner));
            prop_assert_eq!(v.fragment(), fragment);
            prop_assert_eq!(v.unprotected_payloads(), &clear[..]);
            prop_assert_eq!(v.header().exchange_type, header.exchange_type);
            let m = Message::parse(&bytes).unwrap();
            prop_assert_eq!(m.payloads.len(), clear.len() + 1);
        }
    }
}
