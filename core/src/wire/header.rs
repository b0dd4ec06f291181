//! The IKE header ([RFC 7296 §3.1]).
//!
//! [RFC 7296 §3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.1

use super::enums::{ExchangeType, PayloadType};
use super::error::ParseError;
use super::reader::Reader;

/// An IKE SA's SPI, as the initiator or the responder chose it ([RFC 7296 §3.1]). Zero only
/// as SPIr of a first IKE_SA_INIT request.
///
/// [RFC 7296 §3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.1
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IkeSpi(pub u64);

impl IkeSpi {
    /// SPIr before the responder chose one.
    pub const ZERO: Self = Self(0);
}

impl core::fmt::Debug for IkeSpi {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl core::fmt::Display for IkeSpi {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A Message ID: requests are numbered from zero in each direction and a response carries
/// its request's ([RFC 7296 §2.2]).
///
/// [RFC 7296 §2.2]: https://www.rfc-editor.org/rfc/rfc7296#section-2.2
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageId(pub u32);

impl MessageId {
    /// The ID of IKE_SA_INIT.
    pub const ZERO: Self = Self(0);

    /// The ID after this one (wrapping; an SA rekeys long before, RFC 7296 §2.2).
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0.wrapping_add(1))
    }

    /// The ID after this one, `None` once all 2^32 are spent.
    #[must_use]
    pub fn checked_next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl core::fmt::Display for MessageId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

/// The IKE header flags octet ([RFC 7296 §3.1]).
///
/// Only the three defined bits are kept; the others must be sent as zero and are ignored on
/// receipt.
///
/// [RFC 7296 §3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.1
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags {
    /// I: set in messages sent by the original initiator of the IKE SA.
    pub initiator: bool,
    /// V: the sender can speak a higher major version; IKEv2 senders leave it clear.
    pub version: bool,
    /// R: set in responses.
    pub response: bool,
}

impl Flags {
    /// The bit of the Initiator flag.
    pub const INITIATOR_BIT: u8 = 0x08;
    /// The bit of the Version flag.
    pub const VERSION_BIT: u8 = 0x10;
    /// The bit of the Response flag.
    pub const RESPONSE_BIT: u8 = 0x20;

    /// The flags of a request sent by the original initiator.
    pub const fn initiator_request() -> Self {
        Self {
            initiator: true,
            version: false,
            response: false,
        }
    }

    /// Decodes the flags octet, ignoring the reserved bits.
    pub const fn from_octet(octet: u8) -> Self {
        Self {
            initiator: octet & Self::INITIATOR_BIT != 0,
            version: octet & Self::VERSION_BIT != 0,
            response: octet & Self::RESPONSE_BIT != 0,
        }
    }

    /// Encodes the flags octet with the reserved bits clear.
    pub const fn to_octet(self) -> u8 {
        let mut octet = 0;
        if self.initiator {
            octet |= Self::INITIATOR_BIT;
        }
        if self.version {
            octet |= Self::VERSION_BIT;
        }
        if self.response {
            octet |= Self::RESPONSE_BIT;
        }
        octet
    }
}

/// The 28-octet IKE header that starts every IKE message ([RFC 7296 §3.1]).
///
/// [`Message::emit`](super::Message::emit) fills in `next_payload` and `length`; set them by
/// hand only when emitting a header alone.
///
/// [RFC 7296 §3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.1
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// IKE SA Initiator's SPI.
    pub spi_i: IkeSpi,
    /// IKE SA Responder's SPI; zero in the first IKE_SA_INIT request.
    pub spi_r: IkeSpi,
    /// The type of the first payload.
    pub next_payload: PayloadType,
    /// Major version, always [`Header::MAJOR_VERSION`] after a successful parse.
    pub major_version: u8,
    /// Minor version: sent as zero, ignored on receipt.
    pub minor_version: u8,
    /// The exchange this message belongs to.
    pub exchange_type: ExchangeType,
    /// The I, V and R flags.
    pub flags: Flags,
    /// Message ID, matching requests to responses.
    pub message_id: MessageId,
    /// Length of the whole message, header included, in octets.
    pub length: u32,
}

impl Header {
    /// Length of the IKE header in octets.
    pub const LEN: usize = 28;
    /// The major version of IKEv2.
    pub const MAJOR_VERSION: u8 = 2;

    /// Creates an IKEv2 header with version 2.0; `next_payload` and `length` are left for
    /// [`Message::emit`](super::Message::emit) to fill in.
    pub fn new(
        spi_i: IkeSpi,
        spi_r: IkeSpi,
        exchange_type: ExchangeType,
        flags: Flags,
        message_id: MessageId,
    ) -> Self {
        Self {
            spi_i,
            spi_r,
            next_payload: PayloadType::NoNextPayload,
            major_version: Self::MAJOR_VERSION,
            minor_version: 0,
            exchange_type,
            flags,
            message_id,
            length: 0,
        }
    }

    /// Parses the header at the start of `datagram`, the UDP payload with any non-ESP marker
    /// already removed.
    ///
    /// The major version is checked before the Length field, so a header from a later major
    /// version is reported as such. Octets past the Length field are not looked at here;
    /// [`Message::parse`](super::Message::parse) rejects them.
    ///
    /// # Errors
    ///
    /// - [`ParseError::Truncated`] if `datagram` is shorter than 28 octets, or shorter than
    ///   the Length field says.
    /// - [`ParseError::InvalidMajorVersion`] if the major version is not 2.
    /// - [`ParseError::InvalidLength`] if the Length field is below 28.
    pub fn parse(datagram: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(datagram, "IKE header");
        let spi_i = IkeSpi(r.u64()?);
        let spi_r = IkeSpi(r.u64()?);
        let next_payload = PayloadType::from(r.u8()?);
        let version = r.u8()?;
        let exchange_type = ExchangeType::from(r.u8()?);
        let flags = Flags::from_octet(r.u8()?);
        let message_id = MessageId(r.u32()?);
        let length = r.u32()?;
        let major_version = version >> 4;
        if major_version != Self::MAJOR_VERSION {
            return Err(ParseError::InvalidMajorVersion(major_version));
        }
        let total = usize::try_from(length).unwrap_or(usize::MAX);
        if total < Self::LEN {
            return Err(ParseError::InvalidLength {
                what: "IKE message length",
            });
        }
        if total > datagram.len() {
            return Err(ParseError::Truncated {
                what: "IKE message",
            });
        }
        Ok(Self {
            spi_i,
            spi_r,
            next_payload,
            major_version,
            minor_version: version & 0x0f,
            exchange_type,
            flags,
            message_id,
            length,
        })
    }

    /// Appends the 28 header octets exactly as the fields say.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.0.to_be_bytes());
        out.extend_from_slice(&self.spi_r.0.to_be_bytes());
        out.push(self.next_payload.value());
        out.push((self.major_version << 4) | (self.minor_version & 0x0f));
        out.push(self.exchange_type.value());
        out.push(self.flags.to_octet());
        out.extend_from_slice(&self.message_id.0.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }

    /// Offset of the Next Payload field within the header.
    pub(super) const NEXT_PAYLOAD_OFFSET: usize = 16;
    /// Offset of the Length field within the header.
    pub(super) const LENGTH_OFFSET: usize = 24;
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::arb_header;

    const SA_INIT_REQUEST_HEADER: [u8; 28] = hex!(
        "0102030405060708" // SPIi
        "0000000000000000" // SPIr
        "21"               // Next Payload: SA (33)
        "20"               // MjVer 2, MnVer 0
        "22"               // Exchange Type: IKE_SA_INIT (34)
        "08"               // Flags: I
        "00000000"         // Message ID
        "0000001c"         // Length: 28
    );

    fn sa_init_request_header() -> Header {
        Header {
            next_payload: PayloadType::SecurityAssociation,
            length: 28,
            ..Header::new(
                IkeSpi(0x0102_0304_0506_0708),
                IkeSpi::ZERO,
                ExchangeType::IkeSaInit,
                Flags::initiator_request(),
                MessageId::ZERO,
            )
        }
    }

    #[test]
    fn parses_and_emits_sa_init_header() {
        let h = Header::parse(&SA_INIT_REQUEST_HEADER).unwrap();
        assert_eq!(h, sa_init_request_header());
        let mut out = Vec::new();
        h.emit(&mut out);
        assert_eq!(out, SA_INIT_REQUEST_HEADER);
    }

    #[test]
    fn flags_bits() {
        assert_eq!(Flags::from_octet(0x08), Flags::initiator_request());
        let all = Flags::from_octet(0xff);
        assert!(all.initiator && all.version && all.response);
        assert_eq!(all.to_octet(), 0x38);
        assert_eq!(Flags::default().to_octet(), 0);
        let resp = Flags {
            response: true,
            ..Flags::default()
        };
        assert_eq!(resp.to_octet(), 0x20);
    }

    #[test]
    fn reserved_flag_bits_and_minor_version_survive_as_specified() {
        let mut bytes = SA_INIT_REQUEST_HEADER;
        bytes[19] = 0xc7 | 0x20; // reserved bits + R
        bytes[17] = 0x2f; // minor version 15
        let h = Header::parse(&bytes).unwrap();
        assert_eq!(h.flags, Flags::from_octet(0x20));
        assert_eq!(h.minor_version, 15);
    }

    #[test]
    fn rejects_truncated_header_at_every_length() {
        for n in 0..Header::LEN {
            assert_eq!(
                Header::parse(&SA_INIT_REQUEST_HEADER[..n]),
                Err(ParseError::Truncated { what: "IKE header" })
            );
        }
    }

    #[test]
    fn rejects_other_major_versions() {
        for (octet, major) in [(0x10, 1), (0x30, 3), (0x00, 0), (0xf2, 15)] {
            let mut bytes = SA_INIT_REQUEST_HEADER;
            bytes[17] = octet;
            assert_eq!(
                Header::parse(&bytes),
                Err(ParseError::InvalidMajorVersion(major))
            );
        }
    }

    #[test]
    fn checks_length_field_against_datagram() {
        let mut bytes = SA_INIT_REQUEST_HEADER;
        bytes[27] = 27;
        assert_eq!(
            Header::parse(&bytes),
            Err(ParseError::InvalidLength {
                what: "IKE message length"
            })
        );
        bytes[27] = 29;
        assert_eq!(
            Header::parse(&bytes),
            Err(ParseError::Truncated {
                what: "IKE message"
            })
        );
        bytes[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            Header::parse(&bytes),
            Err(ParseError::Truncated {
                what: "IKE message"
            })
        );
        let mut longer = SA_INIT_REQUEST_HEADER.to_vec();
        longer.push(0);
        longer[27] = 29;
        assert_eq!(Header::parse(&longer).unwrap().length, 29);
    }

    proptest! {
        #[test]
        fn header_round_trips(h in arb_header()) {
            let mut out = Vec::new();
            h.emit(&mut out);
            prop_assert_eq!(out.len(), Header::LEN);
            let mut datagram = out.clone();
            datagram.resize(usize::try_from(h.length).unwrap().max(Header::LEN), 0);
            prop_assert_eq!(Header::parse(&datagram), Ok(h));
        }
    }
}
