//! The Certificate, Certificate Request and Authentication payloads ([RFC 7296 §3.6],
//! [RFC 7296 §3.7], [RFC 7296 §3.8]).
//!
//! [RFC 7296 §3.6]: https://www.rfc-editor.org/rfc/rfc7296#section-3.6
//! [RFC 7296 §3.7]: https://www.rfc-editor.org/rfc/rfc7296#section-3.7
//! [RFC 7296 §3.8]: https://www.rfc-editor.org/rfc/rfc7296#section-3.8

use super::enums::{AuthMethod, CertificateEncoding};
use super::error::ParseError;
use super::reader::Reader;

/// The body of an AUTH payload ([RFC 7296 §3.8]).
///
/// [RFC 7296 §3.8]: https://www.rfc-editor.org/rfc/rfc7296#section-3.8
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthPayload {
    /// The Auth Method.
    pub method: AuthMethod,
    /// The Authentication Data: a MAC for shared keys, a signature otherwise.
    pub data: Vec<u8>,
}

impl AuthPayload {
    /// Parses the body of an AUTH payload (after the generic payload header).
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if the body is shorter than its 4-octet fixed part.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(body, "AUTH payload");
        let method = AuthMethod::from(r.u8()?);
        let _reserved = r.take(3)?;
        Ok(Self {
            method,
            data: r.rest().to_vec(),
        })
    }

    /// Appends the body of the AUTH payload.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.method.value());
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&self.data);
    }
}

/// The body of a CERT payload ([RFC 7296 §3.6]).
///
/// [RFC 7296 §3.6]: https://www.rfc-editor.org/rfc/rfc7296#section-3.6
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertPayload {
    /// The Cert Encoding.
    pub encoding: CertificateEncoding,
    /// The Certificate Data, e.g. a DER X.509 certificate.
    pub data: Vec<u8>,
}

/// The body of a CERTREQ payload ([RFC 7296 §3.7]).
///
/// [RFC 7296 §3.7]: https://www.rfc-editor.org/rfc/rfc7296#section-3.7
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertReqPayload {
    /// The Cert Encoding requested.
    pub encoding: CertificateEncoding,
    /// The Certification Authority field: for X.509, concatenated 20-octet SHA-1 hashes of
    /// trusted CAs' public keys.
    pub data: Vec<u8>,
}

/// Parses `Encoding (1) | data` for CERT and CERTREQ.
fn parse_encoded(
    body: &[u8],
    what: &'static str,
) -> Result<(CertificateEncoding, Vec<u8>), ParseError> {
    let mut r = Reader::new(body, what);
    let encoding = CertificateEncoding::from(r.u8()?);
    Ok((encoding, r.rest().to_vec()))
}

impl CertPayload {
    /// Parses the body of a CERT payload (after the generic payload header).
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if the body is empty.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let (encoding, data) = parse_encoded(body, "CERT payload")?;
        Ok(Self { encoding, data })
    }

    /// Appends the body of the CERT payload.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.encoding.value());
        out.extend_from_slice(&self.data);
    }
}

impl CertReqPayload {
    /// Parses the body of a CERTREQ payload (after the generic payload header).
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if the body is empty.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let (encoding, data) = parse_encoded(body, "CERTREQ payload")?;
        Ok(Self { encoding, data })
    }

    /// Appends the body of the CERTREQ payload.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.encoding.value());
        out.extend_from_slice(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::{arb_auth, arb_cert, arb_certreq};

    #[test]
    fn parses_and_emits_auth() {
        let bytes = hex!("02 000000 0011223344");
        let auth = AuthPayload::parse(&bytes).unwrap();
        assert_eq!(auth.method, AuthMethod::SharedKeyMessageIntegrityCode);
        assert_eq!(auth.data, hex!("0011223344"));
        let mut out = Vec::new();
        auth.emit(&mut out);
        assert_eq!(out, bytes);
        for n in 0..4 {
            assert_eq!(
                AuthPayload::parse(&bytes[..n]),
                Err(ParseError::Truncated {
                    what: "AUTH payload"
                })
            );
        }
    }

    #[test]
    fn parses_and_emits_cert_and_certreq() {
        let bytes = hex!("04 3082");
        let cert = CertPayload::parse(&bytes).unwrap();
        assert_eq!(cert.encoding, CertificateEncoding::X509Signature);
        assert_eq!(cert.data, hex!("3082"));
        let mut out = Vec::new();
        cert.emit(&mut out);
        assert_eq!(out, bytes);

        let bytes = hex!("04 0102030405060708090a0b0c0d0e0f1011121314");
        let req = CertReqPayload::parse(&bytes).unwrap();
        assert_eq!(req.encoding, CertificateEncoding::X509Signature);
        assert_eq!(req.data.len(), 20);
        let mut out = Vec::new();
        req.emit(&mut out);
        assert_eq!(out, bytes);

        assert_eq!(
            CertPayload::parse(&[]),
            Err(ParseError::Truncated {
                what: "CERT payload"
            })
        );
        assert_eq!(
            CertReqPayload::parse(&[]),
            Err(ParseError::Truncated {
                what: "CERTREQ payload"
            })
        );
    }

    proptest! {
        #[test]
        fn auth_round_trips(p in arb_auth()) {
            let mut out = Vec::new();
            p.emit(&mut out);
            prop_assert_eq!(AuthPayload::parse(&out), Ok(p));
        }

        #[test]
        fn cert_round_trips(p in arb_cert()) {
            let mut out = Vec::new();
            p.emit(&mut out);
            prop_assert_eq!(CertPayload::parse(&out), Ok(p));
        }

        #[test]
        fn certreq_round_trips(p in arb_certreq()) {
            let mut out = Vec::new();
            p.emit(&mut out);
            prop_assert_eq!(CertReqPayload::parse(&out), Ok(p));
        }
    }
}
