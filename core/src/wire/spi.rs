//! The ESP SPI ([RFC 4303 §2.1]): the name IKE negotiates a Child SA under and ESP carries.
//!
//! [RFC 4303 §2.1]: https://www.rfc-editor.org/rfc/rfc4303#section-2.1

/// An ESP Security Parameters Index ([RFC 4303 §2.1]).
///
/// Values 1 to 255 are reserved by IANA and 0 marks a non-ESP packet on port 4500, so a local
/// SPI is always at least 256. `Debug` and `Display` print it in hex, as `ip xfrm` does.
///
/// [RFC 4303 §2.1]: https://www.rfc-editor.org/rfc/rfc4303#section-2.1
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EspSpi(pub u32);

impl EspSpi {
    /// The lowest SPI that is neither reserved nor the non-ESP marker.
    pub const MIN_ASSIGNABLE: u32 = 256;

    /// The SPI in network byte order.
    pub fn to_be_bytes(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }
}

impl core::fmt::Debug for EspSpi {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "EspSpi({:#010x})", self.0)
    }
}

impl core::fmt::Display for EspSpi {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}
