//! The Configuration payload ([RFC 7296 §3.15]).
//!
//! [RFC 7296 §3.15]: https://www.rfc-editor.org/rfc/rfc7296#section-3.15

use std::net::{Ipv4Addr, Ipv6Addr};

use super::emit::{len16, patch_u16};
use super::enums::{CfgType, ConfigAttributeType};
use super::error::ParseError;
use super::reader::Reader;

/// The R bit above the 15-bit Attribute Type ([RFC 7296 §3.15.1]).
///
/// [RFC 7296 §3.15.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.15.1
const RESERVED_BIT: u16 = 0x8000;

/// The body of a CP payload ([RFC 7296 §3.15]).
///
/// [RFC 7296 §3.15]: https://www.rfc-editor.org/rfc/rfc7296#section-3.15
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigPayload {
    /// CFG_REQUEST, CFG_REPLY, CFG_SET or CFG_ACK.
    pub cfg_type: CfgType,
    /// The configuration attributes.
    pub attributes: Vec<ConfigAttribute>,
}

/// One configuration attribute ([RFC 7296 §3.15.1], [RFC 8598 §3]).
///
/// `None` is the empty value a CFG_REQUEST sends to ask for an attribute. The R bit is sent
/// as zero and ignored on receipt. Attribute types without a typed variant are kept in
/// [`Other`](Self::Other); building `Other` with a type that has a typed variant yields a
/// payload that parses back into the typed variant.
///
/// [RFC 7296 §3.15.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.15.1
/// [RFC 8598 §3]: https://www.rfc-editor.org/rfc/rfc8598#section-3
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfigAttribute {
    /// INTERNAL_IP4_ADDRESS: 0 or 4 octets.
    InternalIp4Address(Option<Ipv4Addr>),
    /// INTERNAL_IP4_NETMASK: 0 or 4 octets.
    InternalIp4Netmask(Option<Ipv4Addr>),
    /// INTERNAL_IP4_DNS: 0 or 4 octets.
    InternalIp4Dns(Option<Ipv4Addr>),
    /// INTERNAL_IP4_SUBNET: 0 or 8 octets, address then netmask.
    InternalIp4Subnet(Option<(Ipv4Addr, Ipv4Addr)>),
    /// INTERNAL_IP6_ADDRESS: 0 or 17 octets, address then prefix length.
    InternalIp6Address(Option<(Ipv6Addr, u8)>),
    /// INTERNAL_IP6_DNS: 0 or 16 octets.
    InternalIp6Dns(Option<Ipv6Addr>),
    /// INTERNAL_IP6_SUBNET: 0 or 17 octets, address then prefix length.
    InternalIp6Subnet(Option<(Ipv6Addr, u8)>),
    /// INTERNAL_DNS_DOMAIN ([RFC 8598]): a domain name for split DNS, or empty.
    ///
    /// [RFC 8598]: https://www.rfc-editor.org/rfc/rfc8598
    InternalDnsDomain(Option<String>),
    /// Any other attribute, kept as received.
    Other {
        /// The Attribute Type; below 0x8000.
        attr_type: ConfigAttributeType,
        /// The value; at most 65535 octets.
        value: Vec<u8>,
    },
}

/// Decodes an optional fixed-size value: empty, or exactly `N` octets.
fn fixed<const N: usize>(value: &[u8], what: &'static str) -> Result<Option<[u8; N]>, ParseError> {
    if value.is_empty() {
        Ok(None)
    } else {
        <[u8; N]>::try_from(value)
            .map(Some)
            .map_err(|_| ParseError::InvalidLength { what })
    }
}

/// Splits a 17-octet IPv6 address and prefix length.
fn ip6_prefix(b: [u8; 17]) -> (Ipv6Addr, u8) {
    let mut addr = [0; 16];
    let (head, tail) = b.split_at(16);
    addr.copy_from_slice(head);
    (Ipv6Addr::from(addr), tail.first().copied().unwrap_or(0))
}

impl ConfigAttribute {
    /// The Attribute Type of this attribute.
    pub fn attr_type(&self) -> ConfigAttributeType {
        match self {
            Self::InternalIp4Address(_) => ConfigAttributeType::InternalIp4Address,
            Self::InternalIp4Netmask(_) => ConfigAttributeType::InternalIp4Netmask,
            Self::InternalIp4Dns(_) => ConfigAttributeType::InternalIp4Dns,
            Self::InternalIp4Subnet(_) => ConfigAttributeType::InternalIp4Subnet,
            Self::InternalIp6Address(_) => ConfigAttributeType::InternalIp6Address,
            Self::InternalIp6Dns(_) => ConfigAttributeType::InternalIp6Dns,
            Self::InternalIp6Subnet(_) => ConfigAttributeType::InternalIp6Subnet,
            Self::InternalDnsDomain(_) => ConfigAttributeType::InternalDnsDomain,
            Self::Other { attr_type, .. } => *attr_type,
        }
    }

    /// Decodes one attribute value by type.
    fn from_value(attr_type: ConfigAttributeType, value: &[u8]) -> Result<Self, ParseError> {
        type T = ConfigAttributeType;
        Ok(match attr_type {
            T::InternalIp4Address => Self::InternalIp4Address(
                fixed::<4>(value, "INTERNAL_IP4_ADDRESS")?.map(Ipv4Addr::from),
            ),
            T::InternalIp4Netmask => Self::InternalIp4Netmask(
                fixed::<4>(value, "INTERNAL_IP4_NETMASK")?.map(Ipv4Addr::from),
            ),
            T::InternalIp4Dns => {
                Self::InternalIp4Dns(fixed::<4>(value, "INTERNAL_IP4_DNS")?.map(Ipv4Addr::from))
            }
            T::InternalIp4Subnet => {
                Self::InternalIp4Subnet(fixed::<8>(value, "INTERNAL_IP4_SUBNET")?.map(|b| {
                    let [a0, a1, a2, a3, m0, m1, m2, m3] = b;
                    (Ipv4Addr::new(a0, a1, a2, a3), Ipv4Addr::new(m0, m1, m2, m3))
                }))
            }
            T::InternalIp6Address => Self::InternalIp6Address(
                fixed::<17>(value, "INTERNAL_IP6_ADDRESS")?.map(ip6_prefix),
            ),
            T::InternalIp6Dns => {
                Self::InternalIp6Dns(fixed::<16>(value, "INTERNAL_IP6_DNS")?.map(Ipv6Addr::from))
            }
            T::InternalIp6Subnet => {
                Self::InternalIp6Subnet(fixed::<17>(value, "INTERNAL_IP6_SUBNET")?.map(ip6_prefix))
            }
            T::InternalDnsDomain => Self::InternalDnsDomain(if value.is_empty() {
                None
            } else {
                Some(
                    String::from_utf8(value.to_vec()).map_err(|_| ParseError::InvalidValue {
                        what: "INTERNAL_DNS_DOMAIN",
                    })?,
                )
            }),
            attr_type => Self::Other {
                attr_type,
                value: value.to_vec(),
            },
        })
    }

    fn parse(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let attr_type = ConfigAttributeType::from(r.u16()? & !RESERVED_BIT);
        let length = r.u16()?;
        let value = r.take(usize::from(length))?;
        Self::from_value(attr_type, value)
    }

    fn emit_value(&self, out: &mut Vec<u8>) {
        match self {
            Self::InternalIp4Address(a) | Self::InternalIp4Netmask(a) | Self::InternalIp4Dns(a) => {
                if let Some(a) = a {
                    out.extend_from_slice(&a.octets());
                }
            }
            Self::InternalIp4Subnet(s) => {
                if let Some((a, m)) = s {
                    out.extend_from_slice(&a.octets());
                    out.extend_from_slice(&m.octets());
                }
            }
            Self::InternalIp6Address(p) | Self::InternalIp6Subnet(p) => {
                if let Some((a, len)) = p {
                    out.extend_from_slice(&a.octets());
                    out.push(*len);
                }
            }
            Self::InternalIp6Dns(a) => {
                if let Some(a) = a {
                    out.extend_from_slice(&a.octets());
                }
            }
            Self::InternalDnsDomain(d) => {
                if let Some(d) = d {
                    out.extend_from_slice(d.as_bytes());
                }
            }
            Self::Other { value, .. } => out.extend_from_slice(value),
        }
    }

    fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&(self.attr_type().value() & !RESERVED_BIT).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        self.emit_value(out);
        let len = len16(out.len().saturating_sub(start + 4));
        patch_u16(out, start + 2, len);
    }
}

impl ConfigPayload {
    /// Parses the body of a CP payload (after the generic payload header).
    ///
    /// # Errors
    ///
    /// - [`ParseError::Truncated`] if the body or an attribute is cut short.
    /// - [`ParseError::InvalidLength`] if a typed attribute's value has a length other than 0
    ///   or the one its type defines.
    /// - [`ParseError::InvalidValue`] if INTERNAL_DNS_DOMAIN is not UTF-8.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(body, "CP payload");
        let cfg_type = CfgType::from(r.u8()?);
        let _reserved = r.take(3)?;
        let mut attributes = Vec::new();
        let mut rest = Reader::new(r.rest(), "configuration attribute");
        while !rest.is_empty() {
            attributes.push(ConfigAttribute::parse(&mut rest)?);
        }
        Ok(Self {
            cfg_type,
            attributes,
        })
    }

    /// Appends the body of the CP payload.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.cfg_type.value());
        out.extend_from_slice(&[0, 0, 0]);
        for a in &self.attributes {
            a.emit(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::arb_cp;

    #[test]
    fn parses_and_emits_cfg_request() {
        let bytes = hex!(
            "01 000000" // CFG_REQUEST
            "0001 0000" // INTERNAL_IP4_ADDRESS, empty
            "0003 0000" // INTERNAL_IP4_DNS, empty
            "0008 0000" // INTERNAL_IP6_ADDRESS, empty
            "000a 0000" // INTERNAL_IP6_DNS, empty
            "0019 0000" // INTERNAL_DNS_DOMAIN, empty
        );
        let cp = ConfigPayload::parse(&bytes).unwrap();
        assert_eq!(
            cp,
            ConfigPayload {
                cfg_type: CfgType::Request,
                attributes: vec![
                    ConfigAttribute::InternalIp4Address(None),
                    ConfigAttribute::InternalIp4Dns(None),
                    ConfigAttribute::InternalIp6Address(None),
                    ConfigAttribute::InternalIp6Dns(None),
                    ConfigAttribute::InternalDnsDomain(None),
                ],
            }
        );
        let mut out = Vec::new();
        cp.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn parses_and_emits_cfg_reply() {
        let bytes = hex!(
            "02 000000"                                 // CFG_REPLY
            "0001 0004 0a000002"                        // INTERNAL_IP4_ADDRESS 10.0.0.2
            "0002 0004 ffffff00"                        // INTERNAL_IP4_NETMASK 255.255.255.0
            "0003 0004 01010101"                        // INTERNAL_IP4_DNS 1.1.1.1
            "000d 0008 0a000000 ffffff00"               // INTERNAL_IP4_SUBNET 10.0.0.0/24
            "0008 0011 fd000000000000000000000000000002 40" // INTERNAL_IP6_ADDRESS fd00::2/64
            "000a 0010 26064700470000000000000000001111"    // INTERNAL_IP6_DNS
            "000f 0011 fd000000000000000000000000000000 30" // INTERNAL_IP6_SUBNET fd00::/48
            "0019 000b 6578616d706c652e636f6d"          // INTERNAL_DNS_DOMAIN example.com
            "0007 0002 7071"                            // APPLICATION_VERSION "pq"
        );
        let cp = ConfigPayload::parse(&bytes).unwrap();
        let fd00: Ipv6Addr = "fd00::".parse().unwrap();
        assert_eq!(
            cp.attributes,
            vec![
                ConfigAttribute::InternalIp4Address(Some(Ipv4Addr::new(10, 0, 0, 2))),
                ConfigAttribute::InternalIp4Netmask(Some(Ipv4Addr::new(255, 255, 255, 0))),
                ConfigAttribute::InternalIp4Dns(Some(Ipv4Addr::new(1, 1, 1, 1))),
                ConfigAttribute::InternalIp4Subnet(Some((
                    Ipv4Addr::new(10, 0, 0, 0),
                    Ipv4Addr::new(255, 255, 255, 0)
                ))),
                ConfigAttribute::InternalIp6Address(Some(("fd00::2".parse().unwrap(), 64))),
                ConfigAttribute::InternalIp6Dns(Some("2606:4700:4700::1111".parse().unwrap())),
                ConfigAttribute::InternalIp6Subnet(Some((fd00, 48))),
                ConfigAttribute::InternalDnsDomain(Some("example.com".into())),
                ConfigAttribute::Other {
                    attr_type: ConfigAttributeType::ApplicationVersion,
                    value: b"pq".to_vec()
                },
            ]
        );
        assert_eq!(cp.cfg_type, CfgType::Reply);
        let mut out = Vec::new();
        cp.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn ignores_reserved_bit_on_receipt() {
        let cp = ConfigPayload::parse(&hex!("02 000000 8001 0004 0a000002")).unwrap();
        assert_eq!(
            cp.attributes,
            vec![ConfigAttribute::InternalIp4Address(Some(Ipv4Addr::new(
                10, 0, 0, 2
            )))]
        );
        let mut out = Vec::new();
        cp.emit(&mut out);
        assert_eq!(out, hex!("02 000000 0001 0004 0a000002"));
    }

    #[test]
    fn rejects_wrong_value_lengths() {
        let cases: [(&[u8], &str); 8] = [
            (&hex!("0001 0003 0a0000"), "INTERNAL_IP4_ADDRESS"),
            (&hex!("0002 0005 ffffff0000"), "INTERNAL_IP4_NETMASK"),
            (
                &hex!("0003 0010 00000000000000000000000000000000"),
                "INTERNAL_IP4_DNS",
            ),
            (&hex!("000d 0004 0a000000"), "INTERNAL_IP4_SUBNET"),
            (
                &hex!("0008 0010 00000000000000000000000000000000"),
                "INTERNAL_IP6_ADDRESS",
            ),
            (&hex!("000a 0004 00000000"), "INTERNAL_IP6_DNS"),
            (
                &hex!("000f 0010 00000000000000000000000000000000"),
                "INTERNAL_IP6_SUBNET",
            ),
            (&hex!("0001 0001 00"), "INTERNAL_IP4_ADDRESS"),
        ];
        for (attr, what) in cases {
            let mut body = hex!("02 000000").to_vec();
            body.extend_from_slice(attr);
            assert_eq!(
                ConfigPayload::parse(&body),
                Err(ParseError::InvalidLength { what }),
                "{what}"
            );
        }
        assert_eq!(
            ConfigPayload::parse(&hex!("02 000000 0019 0001 ff")),
            Err(ParseError::InvalidValue {
                what: "INTERNAL_DNS_DOMAIN"
            })
        );
    }

    #[test]
    fn rejects_truncation() {
        let bytes = hex!("02 000000 0001 0004 0a000002");
        for n in 0..4 {
            assert_eq!(
                ConfigPayload::parse(&bytes[..n]),
                Err(ParseError::Truncated { what: "CP payload" })
            );
        }
        for n in 5..bytes.len() {
            assert_eq!(
                ConfigPayload::parse(&bytes[..n]),
                Err(ParseError::Truncated {
                    what: "configuration attribute"
                })
            );
        }
    }

    proptest! {
        #[test]
        fn cp_round_trips(cp in arb_cp()) {
            let mut out = Vec::new();
            cp.emit(&mut out);
            prop_assert_eq!(ConfigPayload::parse(&out), Ok(cp));
        }
    }
}
