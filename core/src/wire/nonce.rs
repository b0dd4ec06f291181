//! The Nonce payload ([RFC 7296 §3.9]).
//!
//! [RFC 7296 §3.9]: https://www.rfc-editor.org/rfc/rfc7296#section-3.9

use super::error::ParseError;

/// The body of a Nonce payload, Ni or Nr: 16 to 256 random octets ([RFC 7296 §3.9]).
///
/// The length is checked on construction, so every `Nonce` is valid on the wire.
///
/// [RFC 7296 §3.9]: https://www.rfc-editor.org/rfc/rfc7296#section-3.9
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nonce(Vec<u8>);

impl Nonce {
    /// The shortest nonce allowed, in octets.
    pub const MIN_LEN: usize = 16;
    /// The longest nonce allowed, in octets.
    pub const MAX_LEN: usize = 256;

    /// Wraps nonce data.
    ///
    /// # Errors
    ///
    /// [`ParseError::InvalidLength`] unless `data` is 16 to 256 octets long.
    pub fn new(data: Vec<u8>) -> Result<Self, ParseError> {
        if (Self::MIN_LEN..=Self::MAX_LEN).contains(&data.len()) {
            Ok(Self(data))
        } else {
            Err(ParseError::InvalidLength { what: "nonce" })
        }
    }

    /// The nonce data.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The nonce data, by value.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }

    /// Parses the body of a Nonce payload (after the generic payload header).
    ///
    /// # Errors
    ///
    /// [`ParseError::InvalidLength`] unless the body is 16 to 256 octets long.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        Self::new(body.to_vec())
    }

    /// Appends the body of the Nonce payload.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl AsRef<[u8]> for Nonce {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::arb_nonce;

    #[test]
    fn accepts_16_to_256_octets() {
        for n in [16, 32, 256] {
            let body = vec![0xab; n];
            let nonce = Nonce::parse(&body).unwrap();
            assert_eq!(nonce.as_bytes(), body.as_slice());
            let mut out = Vec::new();
            nonce.emit(&mut out);
            assert_eq!(out, body);
            assert_eq!(nonce.into_vec(), body);
        }
        for n in [0, 1, 15, 257, 1000] {
            assert_eq!(
                Nonce::parse(&vec![0; n]),
                Err(ParseError::InvalidLength { what: "nonce" })
            );
        }
    }

    proptest! {
        #[test]
        fn nonce_round_trips(n in arb_nonce()) {
            let mut out = Vec::new();
            n.emit(&mut out);
            prop_assert_eq!(Nonce::parse(&out), Ok(n));
        }
    }
}
