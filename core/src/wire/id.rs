//! The Identification payloads IDi and IDr ([RFC 7296 §3.5]).
//!
//! [RFC 7296 §3.5]: https://www.rfc-editor.org/rfc/rfc7296#section-3.5

use std::net::{Ipv4Addr, Ipv6Addr};

use super::enums::IdType;
use super::error::ParseError;
use super::reader::Reader;

/// The body of an IDi or IDr payload ([RFC 7296 §3.5]).
///
/// Kept as received; [`parsed`](Self::parsed) gives the typed view.
///
/// [RFC 7296 §3.5]: https://www.rfc-editor.org/rfc/rfc7296#section-3.5
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identification {
    /// The ID Type.
    pub id_type: IdType,
    /// The Identification Data.
    pub data: Vec<u8>,
}

/// A typed identity, the view of an [`Identification`] ([RFC 7296 §3.5], [RFC 7619]).
///
/// [RFC 7296 §3.5]: https://www.rfc-editor.org/rfc/rfc7296#section-3.5
/// [RFC 7619]: https://www.rfc-editor.org/rfc/rfc7619
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IkeId {
    /// ID_IPV4_ADDR: four octets.
    Ipv4(Ipv4Addr),
    /// ID_IPV6_ADDR: sixteen octets.
    Ipv6(Ipv6Addr),
    /// ID_FQDN: a fully-qualified domain name, e.g. `vpn.example.com`.
    Fqdn(String),
    /// ID_RFC822_ADDR: an email address, e.g. `jsmith@example.com`.
    Rfc822(String),
    /// ID_KEY_ID: opaque octets, commonly used with pre-shared keys.
    KeyId(Vec<u8>),
    /// ID_DER_ASN1_DN: a DER-encoded X.500 Distinguished Name.
    DerAsn1Dn(Vec<u8>),
    /// ID_DER_ASN1_GN: a DER-encoded X.509 GeneralName.
    DerAsn1Gn(Vec<u8>),
    /// ID_NULL ([RFC 7619]): no identity; any data received with it is ignored.
    ///
    /// [RFC 7619]: https://www.rfc-editor.org/rfc/rfc7619
    Null,
    /// Any other ID Type, with its data as received.
    Other {
        /// The ID Type.
        id_type: IdType,
        /// The Identification Data.
        data: Vec<u8>,
    },
}

impl IkeId {
    /// The ID Type that carries this identity.
    pub fn id_type(&self) -> IdType {
        match self {
            Self::Ipv4(_) => IdType::Ipv4Addr,
            Self::Ipv6(_) => IdType::Ipv6Addr,
            Self::Fqdn(_) => IdType::Fqdn,
            Self::Rfc822(_) => IdType::Rfc822Addr,
            Self::KeyId(_) => IdType::KeyId,
            Self::DerAsn1Dn(_) => IdType::DerAsn1Dn,
            Self::DerAsn1Gn(_) => IdType::DerAsn1Gn,
            Self::Null => IdType::Null,
            Self::Other { id_type, .. } => *id_type,
        }
    }
}

impl From<IkeId> for Identification {
    fn from(id: IkeId) -> Self {
        let id_type = id.id_type();
        let data = match id {
            IkeId::Ipv4(a) => a.octets().to_vec(),
            IkeId::Ipv6(a) => a.octets().to_vec(),
            IkeId::Fqdn(s) | IkeId::Rfc822(s) => s.into_bytes(),
            IkeId::KeyId(d) | IkeId::DerAsn1Dn(d) | IkeId::DerAsn1Gn(d) => d,
            IkeId::Null => Vec::new(),
            IkeId::Other { data, .. } => data,
        };
        Self { id_type, data }
    }
}

impl Identification {
    /// The Identification payload body carrying `id`.
    pub fn new(id: IkeId) -> Self {
        id.into()
    }

    /// The typed view of this identity.
    ///
    /// # Errors
    ///
    /// - [`ParseError::InvalidLength`] if an ID_IPV4_ADDR is not 4 octets or an ID_IPV6_ADDR
    ///   not 16.
    /// - [`ParseError::InvalidValue`] if an ID_FQDN or ID_RFC822_ADDR is not UTF-8.
    pub fn parsed(&self) -> Result<IkeId, ParseError> {
        let data = self.data.as_slice();
        Ok(match self.id_type {
            IdType::Ipv4Addr => {
                IkeId::Ipv4(Ipv4Addr::from(<[u8; 4]>::try_from(data).map_err(|_| {
                    ParseError::InvalidLength {
                        what: "ID_IPV4_ADDR",
                    }
                })?))
            }
            IdType::Ipv6Addr => IkeId::Ipv6(Ipv6Addr::from(<[u8; 16]>::try_from(data).map_err(
                |_| ParseError::InvalidLength {
                    what: "ID_IPV6_ADDR",
                },
            )?)),
            IdType::Fqdn => IkeId::Fqdn(
                String::from_utf8(self.data.clone())
                    .map_err(|_| ParseError::InvalidValue { what: "ID_FQDN" })?,
            ),
            IdType::Rfc822Addr => {
                IkeId::Rfc822(String::from_utf8(self.data.clone()).map_err(|_| {
                    ParseError::InvalidValue {
                        what: "ID_RFC822_ADDR",
                    }
                })?)
            }
            IdType::KeyId => IkeId::KeyId(self.data.clone()),
            IdType::DerAsn1Dn => IkeId::DerAsn1Dn(self.data.clone()),
            IdType::DerAsn1Gn => IkeId::DerAsn1Gn(self.data.clone()),
            IdType::Null => IkeId::Null,
            id_type => IkeId::Other {
                id_type,
                data: self.data.clone(),
            },
        })
    }

    /// The payload body: ID Type, three RESERVED octets, Identification Data.
    ///
    /// This is the octet string that MACedIDForI and MACedIDForR are computed over
    /// ([RFC 7296 §2.15]).
    ///
    /// [RFC 7296 §2.15]: https://www.rfc-editor.org/rfc/rfc7296#section-2.15
    pub fn body_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit(&mut out);
        out
    }

    /// Parses the body of an IDi or IDr payload (after the generic payload header).
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if the body is shorter than its 4-octet fixed part.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(body, "identification payload");
        let id_type = IdType::from(r.u8()?);
        let _reserved = r.take(3)?;
        Ok(Self {
            id_type,
            data: r.rest().to_vec(),
        })
    }

    /// Appends the body of the IDi or IDr payload.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.id_type.value());
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::{arb_identification, arb_ike_id};

    #[test]
    fn parses_and_emits_each_id_type() {
        let cases: [(&[u8], IkeId); 8] = [
            (
                &hex!("01 000000 c0000201"),
                IkeId::Ipv4(Ipv4Addr::new(192, 0, 2, 1)),
            ),
            (
                &hex!("05 000000 20010db8000000000000000000000001"),
                IkeId::Ipv6("2001:db8::1".parse().unwrap()),
            ),
            (
                &hex!("02 000000 76706e2e6578616d706c652e636f6d"),
                IkeId::Fqdn("vpn.example.com".into()),
            ),
            (
                &hex!("03 000000 6a406578616d706c652e636f6d"),
                IkeId::Rfc822("j@example.com".into()),
            ),
            (&hex!("0b 000000 0102"), IkeId::KeyId(vec![1, 2])),
            (&hex!("09 000000 3000"), IkeId::DerAsn1Dn(vec![0x30, 0])),
            (&hex!("0a 000000 8200"), IkeId::DerAsn1Gn(vec![0x82, 0])),
            (&hex!("0d 000000"), IkeId::Null),
        ];
        for (bytes, id) in cases {
            let parsed = Identification::parse(bytes).unwrap();
            assert_eq!(parsed.parsed(), Ok(id.clone()));
            assert_eq!(Identification::new(id), parsed);
            assert_eq!(parsed.body_bytes(), bytes);
        }
    }

    #[test]
    fn other_id_types_round_trip() {
        let bytes = hex!("0c 000000 aabb");
        let id = Identification::parse(&bytes).unwrap();
        assert_eq!(
            id.parsed(),
            Ok(IkeId::Other {
                id_type: IdType::FcName,
                data: vec![0xaa, 0xbb]
            })
        );
        assert_eq!(id.body_bytes(), bytes);
        // ID_NULL ignores data.
        let id = Identification::parse(&hex!("0d 000000 01")).unwrap();
        assert_eq!(id.parsed(), Ok(IkeId::Null));
    }

    #[test]
    fn rejects_bad_typed_views() {
        let id = Identification::parse(&hex!("01 000000 c00002")).unwrap();
        assert_eq!(
            id.parsed(),
            Err(ParseError::InvalidLength {
                what: "ID_IPV4_ADDR"
            })
        );
        let id = Identification::parse(&hex!("05 000000 c0000201")).unwrap();
        assert_eq!(
            id.parsed(),
            Err(ParseError::InvalidLength {
                what: "ID_IPV6_ADDR"
            })
        );
        let id = Identification::parse(&hex!("02 000000 ff")).unwrap();
        assert_eq!(
            id.parsed(),
            Err(ParseError::InvalidValue { what: "ID_FQDN" })
        );
        let id = Identification::parse(&hex!("03 000000 c0")).unwrap();
        assert_eq!(
            id.parsed(),
            Err(ParseError::InvalidValue {
                what: "ID_RFC822_ADDR"
            })
        );
    }

    #[test]
    fn rejects_truncated_identification() {
        for n in 0..4 {
            assert_eq!(
                Identification::parse(&hex!("02000000")[..n]),
                Err(ParseError::Truncated {
                    what: "identification payload"
                })
            );
        }
    }

    proptest! {
        #[test]
        fn identification_round_trips(id in arb_identification()) {
            prop_assert_eq!(Identification::parse(&id.body_bytes()), Ok(id));
        }

        #[test]
        fn typed_id_round_trips(id in arb_ike_id()) {
            let body = Identification::new(id.clone());
            prop_assert_eq!(body.parsed(), Ok(id));
        }
    }
}
