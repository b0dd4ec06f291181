//! The generic payload chain and whole IKE messages ([RFC 7296 §3.2]).
//!
//! [RFC 7296 §3.2]: https://www.rfc-editor.org/rfc/rfc7296#section-3.2

use super::auth::{AuthPayload, CertPayload, CertReqPayload};
use super::cp::ConfigPayload;
use super::emit::{close_len16, patch_u8, patch_u32};
use super::enums::PayloadType;
use super::error::ParseError;
use super::header::Header;
use super::id::Identification;
use super::ke::KePayload;
use super::nonce::Nonce;
use super::notify::{DeletePayload, NotifyPayload};
use super::reader::Reader;
use super::sa::SaPayload;
use super::sk::{EncryptedFragment, EncryptedPayload};
use super::ts::TsPayload;

/// The critical bit of the generic payload header ([RFC 7296 §3.2]).
///
/// [RFC 7296 §3.2]: https://www.rfc-editor.org/rfc/rfc7296#section-3.2
const CRITICAL_BIT: u8 = 0x80;

/// Length of the generic payload header in octets.
pub(super) const GENERIC_HEADER_LEN: usize = 4;

/// One IKEv2 payload with its typed body ([RFC 7296 §3.2]).
///
/// Known payloads are emitted with the critical bit clear and the bit is ignored on receipt
/// ([RFC 7296 §2.5]). A payload of an unknown type is an error if its critical bit is set,
/// otherwise it is kept as [`Unknown`](Self::Unknown) so that callers can skip it and it
/// round-trips.
///
/// [RFC 7296 §3.2]: https://www.rfc-editor.org/rfc/rfc7296#section-3.2
/// [RFC 7296 §2.5]: https://www.rfc-editor.org/rfc/rfc7296#section-2.5
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Payload {
    /// SA, Security Association ([RFC 7296 §3.3]).
    ///
    /// [RFC 7296 §3.3]: https://www.rfc-editor.org/rfc/rfc7296#section-3.3
    Sa(SaPayload),
    /// KE, Key Exchange ([RFC 7296 §3.4]).
    ///
    /// [RFC 7296 §3.4]: https://www.rfc-editor.org/rfc/rfc7296#section-3.4
    Ke(KePayload),
    /// IDi, Identification - Initiator ([RFC 7296 §3.5]).
    ///
    /// [RFC 7296 §3.5]: https://www.rfc-editor.org/rfc/rfc7296#section-3.5
    IdI(Identification),
    /// IDr, Identification - Responder ([RFC 7296 §3.5]).
    ///
    /// [RFC 7296 §3.5]: https://www.rfc-editor.org/rfc/rfc7296#section-3.5
    IdR(Identification),
    /// CERT, Certificate ([RFC 7296 §3.6]).
    ///
    /// [RFC 7296 §3.6]: https://www.rfc-editor.org/rfc/rfc7296#section-3.6
    Cert(CertPayload),
    /// CERTREQ, Certificate Request ([RFC 7296 §3.7]).
    ///
    /// [RFC 7296 §3.7]: https://www.rfc-editor.org/rfc/rfc7296#section-3.7
    CertReq(CertReqPayload),
    /// AUTH, Authentication ([RFC 7296 §3.8]).
    ///
    /// [RFC 7296 §3.8]: https://www.rfc-editor.org/rfc/rfc7296#section-3.8
    Auth(AuthPayload),
    /// Ni or Nr, Nonce ([RFC 7296 §3.9]).
    ///
    /// [RFC 7296 §3.9]: https://www.rfc-editor.org/rfc/rfc7296#section-3.9
    Nonce(Nonce),
    /// N, Notify ([RFC 7296 §3.10]).
    ///
    /// [RFC 7296 §3.10]: https://www.rfc-editor.org/rfc/rfc7296#section-3.10
    Notify(NotifyPayload),
    /// D, Delete ([RFC 7296 §3.11]).
    ///
    /// [RFC 7296 §3.11]: https://www.rfc-editor.org/rfc/rfc7296#section-3.11
    Delete(DeletePayload),
    /// V, Vendor ID: an opaque identifier ([RFC 7296 §3.12]).
    ///
    /// [RFC 7296 §3.12]: https://www.rfc-editor.org/rfc/rfc7296#section-3.12
    VendorId(Vec<u8>),
    /// TSi, Traffic Selector - Initiator ([RFC 7296 §3.13]).
    ///
    /// [RFC 7296 §3.13]: https://www.rfc-editor.org/rfc/rfc7296#section-3.13
    TsI(TsPayload),
    /// TSr, Traffic Selector - Responder ([RFC 7296 §3.13]).
    ///
    /// [RFC 7296 §3.13]: https://www.rfc-editor.org/rfc/rfc7296#section-3.13
    TsR(TsPayload),
    /// SK, Encrypted and Authenticated; always the last payload ([RFC 7296 §3.14]).
    ///
    /// [RFC 7296 §3.14]: https://www.rfc-editor.org/rfc/rfc7296#section-3.14
    Sk(EncryptedPayload),
    /// CP, Configuration ([RFC 7296 §3.15]).
    ///
    /// [RFC 7296 §3.15]: https://www.rfc-editor.org/rfc/rfc7296#section-3.15
    Cp(ConfigPayload),
    /// EAP, Extensible Authentication: the EAP message, opaque here ([RFC 7296 §3.16]).
    ///
    /// [RFC 7296 §3.16]: https://www.rfc-editor.org/rfc/rfc7296#section-3.16
    Eap(Vec<u8>),
    /// SKF, Encrypted and Authenticated Fragment; always the last payload ([RFC 7383 §2.5]).
    ///
    /// [RFC 7383 §2.5]: https://www.rfc-editor.org/rfc/rfc7383#section-2.5
    Skf(EncryptedFragment),
    /// A payload of a type without a variant above, received with the critical bit clear.
    ///
    /// `payload_type` must not be a type that has a variant above. Emitting one with
    /// `critical` set produces a payload that the parser rejects, which is only useful to
    /// test a peer.
    Unknown {
        /// The payload type.
        payload_type: PayloadType,
        /// The critical bit.
        critical: bool,
        /// The payload body, after the generic payload header.
        body: Vec<u8>,
    },
}

impl Payload {
    /// The payload type, as named in the preceding Next Payload field.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            Self::Sa(_) => PayloadType::SecurityAssociation,
            Self::Ke(_) => PayloadType::KeyExchange,
            Self::IdI(_) => PayloadType::IdentificationInitiator,
            Self::IdR(_) => PayloadType::IdentificationResponder,
            Self::Cert(_) => PayloadType::Certificate,
            Self::CertReq(_) => PayloadType::CertificateRequest,
            Self::Auth(_) => PayloadType::Authentication,
            Self::Nonce(_) => PayloadType::Nonce,
            Self::Notify(_) => PayloadType::Notify,
            Self::Delete(_) => PayloadType::Delete,
            Self::VendorId(_) => PayloadType::VendorId,
            Self::TsI(_) => PayloadType::TrafficSelectorInitiator,
            Self::TsR(_) => PayloadType::TrafficSelectorResponder,
            Self::Sk(_) => PayloadType::Encrypted,
            Self::Cp(_) => PayloadType::Configuration,
            Self::Eap(_) => PayloadType::ExtensibleAuthentication,
            Self::Skf(_) => PayloadType::EncryptedFragment,
            Self::Unknown { payload_type, .. } => *payload_type,
        }
    }

    /// Whether this is an SK or SKF payload.
    pub fn is_encrypted(&self) -> bool {
        matches!(self, Self::Sk(_) | Self::Skf(_))
    }

    /// Decodes the body of one payload found in a chain.
    pub(super) fn from_raw(raw: &RawPayload<'_>) -> Result<Self, ParseError> {
        let body = raw.body;
        Ok(match raw.payload_type {
            PayloadType::SecurityAssociation => Self::Sa(SaPayload::parse(body)?),
            PayloadType::KeyExchange => Self::Ke(KePayload::parse(body)?),
            PayloadType::IdentificationInitiator => Self::IdI(Identification::parse(body)?),
            PayloadType::IdentificationResponder => Self::IdR(Identification::parse(body)?),
            PayloadType::Certificate => Self::Cert(CertPayload::parse(body)?),
            PayloadType::CertificateRequest => Self::CertReq(CertReqPayload::parse(body)?),
            PayloadType::Authentication => Self::Auth(AuthPayload::parse(body)?),
            PayloadType::Nonce => Self::Nonce(Nonce::parse(body)?),
            PayloadType::Notify => Self::Notify(NotifyPayload::parse(body)?),
            PayloadType::Delete => Self::Delete(DeletePayload::parse(body)?),
            PayloadType::VendorId => Self::VendorId(body.to_vec()),
            PayloadType::TrafficSelectorInitiator => Self::TsI(TsPayload::parse(body)?),
            PayloadType::TrafficSelectorResponder => Self::TsR(TsPayload::parse(body)?),
            PayloadType::Encrypted => Self::Sk(EncryptedPayload::parse(raw.next_payload, body)),
            PayloadType::Configuration => Self::Cp(ConfigPayload::parse(body)?),
            PayloadType::ExtensibleAuthentication => Self::Eap(body.to_vec()),
            PayloadType::EncryptedFragment => {
                Self::Skf(EncryptedFragment::parse(raw.next_payload, body)?)
            }
            payload_type => {
                if raw.critical {
                    return Err(ParseError::UnsupportedCriticalPayload(payload_type));
                }
                Self::Unknown {
                    payload_type,
                    critical: false,
                    body: body.to_vec(),
                }
            }
        })
    }

    /// Appends the payload body (after the generic payload header).
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            Self::Sa(p) => p.emit(out),
            Self::Ke(p) => p.emit(out),
            Self::IdI(p) | Self::IdR(p) => p.emit(out),
            Self::Cert(p) => p.emit(out),
            Self::CertReq(p) => p.emit(out),
            Self::Auth(p) => p.emit(out),
            Self::Nonce(p) => p.emit(out),
            Self::Notify(p) => p.emit(out),
            Self::Delete(p) => p.emit(out),
            Self::VendorId(b) | Self::Eap(b) | Self::Unknown { body: b, .. } => {
                out.extend_from_slice(b);
            }
            Self::TsI(p) | Self::TsR(p) => p.emit(out),
            Self::Sk(p) => p.emit(out),
            Self::Cp(p) => p.emit(out),
            Self::Skf(p) => p.emit(out),
        }
    }
}

/// One payload found by [`walk`], body not yet decoded.
pub(super) struct RawPayload<'a> {
    /// The type named by the previous Next Payload field.
    pub(super) payload_type: PayloadType,
    /// This payload's Next Payload field; for SK and SKF, the first inner payload.
    pub(super) next_payload: PayloadType,
    /// The critical bit.
    pub(super) critical: bool,
    /// Offset of the generic payload header within the walked octets.
    pub(super) offset: usize,
    /// The body after the generic payload header.
    pub(super) body: &'a [u8],
}

/// Walks a payload chain starting with type `first`, calling `visit` for each payload.
///
/// The chain ends at Next Payload 0, or at an SK or SKF payload, which must end `bytes`.
pub(super) fn walk<'a>(
    first: PayloadType,
    bytes: &'a [u8],
    mut visit: impl FnMut(RawPayload<'a>) -> Result<(), ParseError>,
) -> Result<(), ParseError> {
    let mut r = Reader::new(bytes, "generic payload header");
    let mut payload_type = first;
    while payload_type != PayloadType::NoNextPayload {
        let offset = r.position();
        let next_payload = PayloadType::from(r.u8()?);
        let critical = r.u8()? & CRITICAL_BIT != 0;
        let length = usize::from(r.u16()?);
        let body_len = length
            .checked_sub(GENERIC_HEADER_LEN)
            .ok_or(ParseError::InvalidLength {
                what: "payload length",
            })?;
        let body = r
            .take(body_len)
            .map_err(|_| ParseError::Truncated { what: "payload" })?;
        let encrypted = matches!(
            payload_type,
            PayloadType::Encrypted | PayloadType::EncryptedFragment
        );
        if encrypted && !r.is_empty() {
            return Err(ParseError::EncryptedNotLast);
        }
        visit(RawPayload {
            payload_type,
            next_payload,
            critical,
            offset,
            body,
        })?;
        if encrypted {
            return Ok(());
        }
        payload_type = next_payload;
    }
    if r.is_empty() {
        Ok(())
    } else {
        Err(ParseError::TrailingData {
            what: "last payload",
        })
    }
}

/// Parses a chain of payloads, such as the decrypted contents of an SK payload.
///
/// `first` is the type of the first payload (the SK payload's Next Payload field). `bytes`
/// must end exactly with the last payload.
///
/// # Errors
///
/// - [`ParseError::NestedEncrypted`] if the chain contains an SK or SKF payload.
/// - [`ParseError::UnsupportedCriticalPayload`] for an unknown type with the critical bit.
/// - Any other [`ParseError`] for a malformed generic header or body, or octets after the
///   payload with Next Payload 0.
pub fn parse_payloads(first: PayloadType, bytes: &[u8]) -> Result<Vec<Payload>, ParseError> {
    let mut payloads = Vec::new();
    walk(first, bytes, |raw| {
        if matches!(
            raw.payload_type,
            PayloadType::Encrypted | PayloadType::EncryptedFragment
        ) {
            return Err(ParseError::NestedEncrypted);
        }
        payloads.push(Payload::from_raw(&raw)?);
        Ok(())
    })?;
    Ok(payloads)
}

/// Appends `payloads` as a chain and returns the type of the first (or NO_NEXT_PAYLOAD).
///
/// Every Next Payload and Payload Length field is computed; an SK or SKF payload's Next
/// Payload is its `next_inner`, so one must only appear last.
pub fn emit_payloads(payloads: &[Payload], out: &mut Vec<u8>) -> PayloadType {
    emit_chain(payloads, PayloadType::NoNextPayload, out)
}

/// Appends `payloads` as a chain whose last Next Payload field (unless SK or SKF) is
/// `then`; returns the type of the first payload, or `then` if there is none.
pub(super) fn emit_chain(
    payloads: &[Payload],
    then: PayloadType,
    out: &mut Vec<u8>,
) -> PayloadType {
    for (i, p) in payloads.iter().enumerate() {
        let next = match p {
            Payload::Sk(sk) => sk.next_inner,
            Payload::Skf(skf) => skf.next_inner,
            _ => payloads.get(i + 1).map_or(then, Payload::payload_type),
        };
        let critical = match p {
            Payload::Unknown { critical: true, .. } => CRITICAL_BIT,
            _ => 0,
        };
        let start = out.len();
        out.extend_from_slice(&[next.value(), critical, 0, 0]);
        p.emit_body(out);
        close_len16(out, start + 2, start);
    }
    payloads.first().map_or(then, Payload::payload_type)
}

/// A whole IKE message: header and payloads ([RFC 7296 §3]).
///
/// [RFC 7296 §3]: https://www.rfc-editor.org/rfc/rfc7296#section-3
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    /// The IKE header; [`emit`](Self::emit) computes its Next Payload and Length fields.
    pub header: Header,
    /// The payloads in order; an SK or SKF payload can only be last.
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Builds a message whose header's `next_payload` and `length` match `payloads`, so that
    /// it equals the result of parsing its own emission.
    pub fn new(header: Header, payloads: Vec<Payload>) -> Self {
        let mut message = Self { header, payloads };
        let bytes = message.emit();
        message.header.next_payload = message
            .payloads
            .first()
            .map_or(PayloadType::NoNextPayload, Payload::payload_type);
        message.header.length = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        message
    }

    /// Parses an IKE message: the UDP payload, without any non-ESP marker.
    ///
    /// The Length field must equal `datagram.len()`: octets after the message are an error,
    /// since nothing would authenticate them. SK and SKF payloads are kept encrypted; use
    /// [`locate_encrypted`](super::locate_encrypted) to decrypt in place.
    ///
    /// # Errors
    ///
    /// - [`ParseError::InvalidMajorVersion`] if the major version is not 2.
    /// - [`ParseError::UnsupportedCriticalPayload`] for an unknown type with the critical bit.
    /// - [`ParseError::EncryptedNotLast`] if an SK or SKF payload is followed by octets.
    /// - Any other [`ParseError`] for a malformed header, payload or length.
    pub fn parse(datagram: &[u8]) -> Result<Self, ParseError> {
        let header = Header::parse(datagram)?;
        let payload_bytes = checked_payload_bytes(&header, datagram)?;
        let mut payloads = Vec::new();
        walk(header.next_payload, payload_bytes, |raw| {
            payloads.push(Payload::from_raw(&raw)?);
            Ok(())
        })?;
        Ok(Self { header, payloads })
    }

    /// Emits the message, computing the header's Next Payload and Length and every
    /// payload's Next Payload and Payload Length.
    ///
    /// Fields too small for what they count saturate, which the parser then rejects.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.header.emit(&mut out);
        let first = emit_payloads(&self.payloads, &mut out);
        patch_u8(&mut out, Header::NEXT_PAYLOAD_OFFSET, first.value());
        let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
        patch_u32(&mut out, Header::LENGTH_OFFSET, len);
        out
    }
}

/// The octets after the header, once the Length field is known to cover the datagram
/// exactly.
pub(super) fn checked_payload_bytes<'a>(
    header: &Header,
    datagram: &'a [u8],
) -> Result<&'a [u8], ParseError> {
    if usize::try_from(header.length).ok() != Some(datagram.len()) {
        return Err(ParseError::TrailingData {
            what: "IKE message",
        });
    }
    datagram
        .get(Header::LEN..)
        .ok_or(ParseError::Truncated { what: "IKE header" })
}

#[cfg(test)]
mod tests;
