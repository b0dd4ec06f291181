//! The Key Exchange payload ([RFC 7296 §3.4]).
//!
//! [RFC 7296 §3.4]: https://www.rfc-editor.org/rfc/rfc7296#section-3.4

use super::enums::KeyExchangeMethod;
use super::error::ParseError;
use super::reader::Reader;

/// The body of a Key Exchange payload: a method and its public value or ciphertext
/// ([RFC 7296 §3.4]).
///
/// The length of `data` is not checked here; it depends on the method (32 octets for
/// Curve25519, 1184 for an ML-KEM-768 encapsulation key) and is the key exchange's to check.
///
/// [RFC 7296 §3.4]: https://www.rfc-editor.org/rfc/rfc7296#section-3.4
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KePayload {
    /// The key exchange method (the "Diffie-Hellman Group Num" of RFC 7296).
    pub method: KeyExchangeMethod,
    /// The public value, encapsulation key or ciphertext.
    pub data: Vec<u8>,
}

impl KePayload {
    /// Parses the body of a KE payload (after the generic payload header).
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if the body is shorter than its 4-octet fixed part.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(body, "KE payload");
        let method = KeyExchangeMethod::from(r.u16()?);
        let _reserved = r.u16()?;
        Ok(Self {
            method,
            data: r.rest().to_vec(),
        })
    }

    /// Appends the body of the KE payload.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.method.value().to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::arb_ke;

    #[test]
    fn parses_and_emits_ke() {
        let bytes = hex!("0024 0000 deadbeef");
        let ke = KePayload::parse(&bytes).unwrap();
        assert_eq!(
            ke,
            KePayload {
                method: KeyExchangeMethod::MlKem768,
                data: hex!("deadbeef").to_vec()
            }
        );
        let mut out = Vec::new();
        ke.emit(&mut out);
        assert_eq!(out, bytes);
        // The RESERVED field is ignored on receipt.
        assert_eq!(KePayload::parse(&hex!("0024 ffff deadbeef")), Ok(ke));
    }

    #[test]
    fn rejects_truncated_ke() {
        for n in 0..4 {
            assert_eq!(
                KePayload::parse(&hex!("001f0000")[..n]),
                Err(ParseError::Truncated { what: "KE payload" })
            );
        }
        assert_eq!(KePayload::parse(&hex!("001f0000")).unwrap().data, b"");
    }

    proptest! {
        #[test]
        fn ke_round_trips(ke in arb_ke()) {
            let mut out = Vec::new();
            ke.emit(&mut out);
            prop_assert_eq!(KePayload::parse(&out), Ok(ke));
        }
    }
}
