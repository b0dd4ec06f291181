//! The Traffic Selector payloads TSi and TSr ([RFC 7296 §3.13]).
//!
//! [RFC 7296 §3.13]: https://www.rfc-editor.org/rfc/rfc7296#section-3.13

use std::net::{Ipv4Addr, Ipv6Addr};

use super::emit::{close_len16, count8};
use super::enums::TsType;
use super::error::ParseError;
use super::reader::Reader;

/// The body of a TSi or TSr payload ([RFC 7296 §3.13]).
///
/// [RFC 7296 §3.13]: https://www.rfc-editor.org/rfc/rfc7296#section-3.13
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TsPayload {
    /// The traffic selectors; at most 255.
    pub selectors: Vec<TrafficSelector>,
}

/// One traffic selector ([RFC 7296 §3.13.1]).
///
/// Ranges are inclusive. IP Protocol ID 0 means any protocol; ports 0..=65535 mean any port.
///
/// [RFC 7296 §3.13.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.13.1
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TrafficSelector {
    /// TS_IPV4_ADDR_RANGE, 16 octets on the wire.
    Ipv4 {
        /// IP Protocol ID, e.g. 6 for TCP, or 0 for any.
        ip_protocol: u8,
        /// Start Port.
        start_port: u16,
        /// End Port.
        end_port: u16,
        /// Starting Address.
        start_addr: Ipv4Addr,
        /// Ending Address.
        end_addr: Ipv4Addr,
    },
    /// TS_IPV6_ADDR_RANGE, 40 octets on the wire.
    Ipv6 {
        /// IP Protocol ID, e.g. 6 for TCP, or 0 for any.
        ip_protocol: u8,
        /// Start Port.
        start_port: u16,
        /// End Port.
        end_port: u16,
        /// Starting Address.
        start_addr: Ipv6Addr,
        /// Ending Address.
        end_addr: Ipv6Addr,
    },
    /// Any other TS Type, kept as received so that it round-trips.
    Other {
        /// The TS Type.
        ts_type: TsType,
        /// The octet after TS Type (IP Protocol ID for the address-range types).
        second_octet: u8,
        /// The octets after the Selector Length field; at most 65531.
        data: Vec<u8>,
    },
}

impl TrafficSelector {
    const IPV4_LEN: usize = 16;
    const IPV6_LEN: usize = 40;

    /// The selector for all IPv4 traffic: every address, protocol and port.
    pub fn ipv4_any() -> Self {
        Self::Ipv4 {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start_addr: Ipv4Addr::UNSPECIFIED,
            end_addr: Ipv4Addr::BROADCAST,
        }
    }

    /// The selector for all IPv6 traffic: every address, protocol and port.
    pub fn ipv6_any() -> Self {
        Self::Ipv6 {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start_addr: Ipv6Addr::UNSPECIFIED,
            end_addr: Ipv6Addr::from(u128::MAX),
        }
    }

    /// The TS Type of this selector.
    pub fn ts_type(&self) -> TsType {
        match self {
            Self::Ipv4 { .. } => TsType::Ipv4AddrRange,
            Self::Ipv6 { .. } => TsType::Ipv6AddrRange,
            Self::Other { ts_type, .. } => *ts_type,
        }
    }

    fn parse(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let ts_type = TsType::from(r.u8()?);
        let second_octet = r.u8()?;
        let length = usize::from(r.u16()?);
        let body_len = length.checked_sub(4).ok_or(ParseError::InvalidLength {
            what: "traffic selector",
        })?;
        let mut body = r.sub(body_len, "traffic selector")?;
        match ts_type {
            TsType::Ipv4AddrRange => {
                if length != Self::IPV4_LEN {
                    return Err(ParseError::InvalidLength {
                        what: "TS_IPV4_ADDR_RANGE",
                    });
                }
                Ok(Self::Ipv4 {
                    ip_protocol: second_octet,
                    start_port: body.u16()?,
                    end_port: body.u16()?,
                    start_addr: Ipv4Addr::from(body.array::<4>()?),
                    end_addr: Ipv4Addr::from(body.array::<4>()?),
                })
            }
            TsType::Ipv6AddrRange => {
                if length != Self::IPV6_LEN {
                    return Err(ParseError::InvalidLength {
                        what: "TS_IPV6_ADDR_RANGE",
                    });
                }
                Ok(Self::Ipv6 {
                    ip_protocol: second_octet,
                    start_port: body.u16()?,
                    end_port: body.u16()?,
                    start_addr: Ipv6Addr::from(body.array::<16>()?),
                    end_addr: Ipv6Addr::from(body.array::<16>()?),
                })
            }
            _ => Ok(Self::Other {
                ts_type,
                second_octet,
                data: body.rest().to_vec(),
            }),
        }
    }

    fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            Self::Ipv4 {
                ip_protocol,
                start_port,
                end_port,
                start_addr,
                end_addr,
            } => {
                out.extend_from_slice(&[TsType::Ipv4AddrRange.value(), *ip_protocol, 0, 0]);
                out.extend_from_slice(&start_port.to_be_bytes());
                out.extend_from_slice(&end_port.to_be_bytes());
                out.extend_from_slice(&start_addr.octets());
                out.extend_from_slice(&end_addr.octets());
            }
            Self::Ipv6 {
                ip_protocol,
                start_port,
                end_port,
                start_addr,
                end_addr,
            } => {
                out.extend_from_slice(&[TsType::Ipv6AddrRange.value(), *ip_protocol, 0, 0]);
                out.extend_from_slice(&start_port.to_be_bytes());
                out.extend_from_slice(&end_port.to_be_bytes());
                out.extend_from_slice(&start_addr.octets());
                out.extend_from_slice(&end_addr.octets());
            }
            Self::Other {
                ts_type,
                second_octet,
                data,
            } => {
                out.extend_from_slice(&[ts_type.value(), *second_octet, 0, 0]);
                out.extend_from_slice(data);
            }
        }
        close_len16(out, start + 2, start);
    }
}

impl TsPayload {
    /// Parses the body of a TSi or TSr payload (after the generic payload header).
    ///
    /// # Errors
    ///
    /// - [`ParseError::Truncated`] if the body or a selector is cut short.
    /// - [`ParseError::InvalidLength`] if a Selector Length is below 4, or not 16 for
    ///   TS_IPV4_ADDR_RANGE or 40 for TS_IPV6_ADDR_RANGE.
    /// - [`ParseError::CountMismatch`] if Number of TSs disagrees with the selectors present.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(body, "TS payload");
        let count = usize::from(r.u8()?);
        let _reserved = r.take(3)?;
        let mut selectors = Vec::new();
        let mut rest = Reader::new(r.rest(), "traffic selector");
        while !rest.is_empty() {
            selectors.push(TrafficSelector::parse(&mut rest)?);
        }
        if selectors.len() != count {
            return Err(ParseError::CountMismatch {
                what: "traffic selectors",
            });
        }
        Ok(Self { selectors })
    }

    /// Appends the body of the TSi or TSr payload.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(count8(self.selectors.len()));
        out.extend_from_slice(&[0, 0, 0]);
        for ts in &self.selectors {
            ts.emit(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::arb_ts;

    const TS_BODY: [u8; 60] = hex!(
        "02 000000"                          // 2 TSs, RESERVED
        "07 00 0010 0000 ffff"               // TS_IPV4_ADDR_RANGE, any proto, len 16, ports 0-65535
        "00000000 ffffffff"                  //   0.0.0.0 - 255.255.255.255
        "08 06 0028 0050 0050"               // TS_IPV6_ADDR_RANGE, TCP, len 40, port 80
        "20010db8000000000000000000000000"   //   2001:db8::
        "20010db8ffffffffffffffffffffffff"   //   2001:db8:ffff:ffff:ffff:ffff:ffff:ffff
    );

    fn ts_payload() -> TsPayload {
        TsPayload {
            selectors: vec![
                TrafficSelector::ipv4_any(),
                TrafficSelector::Ipv6 {
                    ip_protocol: 6,
                    start_port: 80,
                    end_port: 80,
                    start_addr: "2001:db8::".parse().unwrap(),
                    end_addr: "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
                },
            ],
        }
    }

    #[test]
    fn parses_and_emits_ts() {
        let ts = TsPayload::parse(&TS_BODY).unwrap();
        assert_eq!(ts, ts_payload());
        assert_eq!(ts.selectors[0].ts_type(), TsType::Ipv4AddrRange);
        assert_eq!(ts.selectors[1].ts_type(), TsType::Ipv6AddrRange);
        let mut out = Vec::new();
        ts.emit(&mut out);
        assert_eq!(out, TS_BODY);
        assert_eq!(
            TrafficSelector::ipv6_any(),
            TrafficSelector::Ipv6 {
                ip_protocol: 0,
                start_port: 0,
                end_port: 65535,
                start_addr: "::".parse().unwrap(),
                end_addr: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            }
        );
    }

    #[test]
    fn unknown_ts_type_round_trips() {
        let bytes = hex!("01 000000 09 00 0008 aabbccdd");
        let ts = TsPayload::parse(&bytes).unwrap();
        assert_eq!(
            ts.selectors,
            vec![TrafficSelector::Other {
                ts_type: TsType::FcAddrRange,
                second_octet: 0,
                data: hex!("aabbccdd").to_vec(),
            }]
        );
        let mut out = Vec::new();
        ts.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn rejects_every_truncation() {
        for n in 0..TS_BODY.len() {
            assert!(TsPayload::parse(&TS_BODY[..n]).is_err(), "prefix {n}");
        }
        assert_eq!(
            TsPayload::parse(&TS_BODY[..3]),
            Err(ParseError::Truncated { what: "TS payload" })
        );
        assert_eq!(
            TsPayload::parse(&TS_BODY[..10]),
            Err(ParseError::Truncated {
                what: "traffic selector"
            })
        );
    }

    #[test]
    fn rejects_bad_lengths_and_counts() {
        let mut b = TS_BODY;
        b[0] = 3;
        assert_eq!(
            TsPayload::parse(&b),
            Err(ParseError::CountMismatch {
                what: "traffic selectors"
            })
        );
        let mut b = TS_BODY;
        b[7] = 3;
        assert_eq!(
            TsPayload::parse(&b),
            Err(ParseError::InvalidLength {
                what: "traffic selector"
            })
        );
        // IPv4 range with a 20-octet selector length (taking 4 octets of the next one).
        let mut b = TS_BODY;
        b[7] = 20;
        assert_eq!(
            TsPayload::parse(&b),
            Err(ParseError::InvalidLength {
                what: "TS_IPV4_ADDR_RANGE"
            })
        );
        let mut b = TS_BODY;
        b[23] = 36;
        assert_eq!(
            TsPayload::parse(&b),
            Err(ParseError::InvalidLength {
                what: "TS_IPV6_ADDR_RANGE"
            })
        );
    }

    proptest! {
        #[test]
        fn ts_round_trips(ts in arb_ts()) {
            let mut out = Vec::new();
            ts.emit(&mut out);
            prop_assert_eq!(TsPayload::parse(&out), Ok(ts));
        }
    }
}
