//! The inbound selector check of [RFC 4301 §5.2]: after an ESP packet authenticates, its inner
//! header must match the Child SA's selectors, or the packet is dropped (and counted). Without
//! it, a client could send with another client's source address, and a gateway could inject
//! packets from anywhere into a split tunnel (security review finding 2).
//!
//! Addresses and the IP protocol are checked; a selector's port range is checked for TCP, UDP
//! and SCTP when the packet carries the whole transport header (an IPv4 first fragment or an
//! unfragmented packet; IPv6 only when no extension header precedes it), and a selector
//! narrower than all ports refuses packets whose ports it cannot see ([RFC 4301 §4.4.1.1]).
//!
//! [RFC 4301 §5.2]: https://www.rfc-editor.org/rfc/rfc4301#section-5.2
//! [RFC 4301 §4.4.1.1]: https://www.rfc-editor.org/rfc/rfc4301#section-4.4.1.1

use std::net::IpAddr;

use crate::wire::TrafficSelector;

/// Which end of the inner packet the selectors are matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The packet's source and source port: inbound traffic, checked against the peer's side
    /// of the Child SA (TSi at the gateway, TSr at the client).
    Source,
    /// The packet's destination and destination port.
    Destination,
}

/// The fields of an inner IP packet that selectors look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inner {
    address: IpAddr,
    protocol: u8,
    port: Option<u16>,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

fn inner(packet: &[u8], direction: Direction) -> Option<Inner> {
    let (address, protocol, transport) = match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet.first()? & 0x0f) * 4;
            let range = match direction {
                Direction::Source => 12..16,
                Direction::Destination => 16..20,
            };
            let b: [u8; 4] = packet.get(range)?.try_into().ok()?;
            let flags_offset = u16::from_be_bytes(packet.get(6..8)?.try_into().ok()?);
            // Only the first fragment (offset 0) carries the transport header.
            let first = flags_offset & 0x1fff == 0;
            (
                IpAddr::from(b),
                *packet.get(9)?,
                first.then(|| packet.get(ihl..)).flatten(),
            )
        }
        6 => {
            let range = match direction {
                Direction::Source => 8..24,
                Direction::Destination => 24..40,
            };
            let b: [u8; 16] = packet.get(range)?.try_into().ok()?;
            (IpAddr::from(b), *packet.get(6)?, packet.get(40..))
        }
        _ => return None,
    };
    let port = match protocol {
        TCP | UDP | SCTP => {
            let at = match direction {
                Direction::Source => 0..2,
                Direction::Destination => 2..4,
            };
            transport
                .and_then(|t| t.get(at))
                .and_then(|p| p.try_into().ok())
                .map(u16::from_be_bytes)
        }
        _ => None,
    };
    Some(Inner {
        address,
        protocol,
        port,
    })
}

fn matches(ts: &TrafficSelector, p: &Inner) -> bool {
    let (protocol, start_port, end_port, in_range) = match (ts, p.address) {
        (
            TrafficSelector::Ipv4 {
                ip_protocol,
                start_port,
                end_port,
                start_addr,
                end_addr,
            },
            IpAddr::V4(a),
        ) => (
            *ip_protocol,
            *start_port,
            *end_port,
            (*start_addr..=*end_addr).contains(&a),
        ),
        (
            TrafficSelector::Ipv6 {
                ip_protocol,
                start_port,
                end_port,
                start_addr,
                end_addr,
            },
            IpAddr::V6(a),
        ) => (
            *ip_protocol,
            *start_port,
            *end_port,
            (*start_addr..=*end_addr).contains(&a),
        ),
        _ => return false,
    };
    if !in_range || (protocol != 0 && protocol != p.protocol) {
        return false;
    }
    if start_port == 0 && end_port == u16::MAX {
        return true;
    }
    p.port
        .is_some_and(|port| (start_port..=end_port).contains(&port))
}

/// Whether the inner IP `packet` lies inside one of `selectors` at its `direction` end.
/// A packet too short to read is outside.
pub fn selectors_allow(selectors: &[TrafficSelector], packet: &[u8], direction: Direction) -> bool {
    inner(packet, direction).is_some_and(|p| selectors.iter().any(|ts| matches(ts, &p)))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4(src: [u8; 4], protocol: u8, sport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[9] = protocol;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&[10, 0, 0, 1]);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p
    }

    fn host4(a: [u8; 4]) -> TrafficSelector {
        TrafficSelector::Ipv4 {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start_addr: Ipv4Addr::from(a),
            end_addr: Ipv4Addr::from(a),
        }
    }

    #[test]
    fn source_outside_the_selectors_is_refused() {
        let ts = [host4([10, 7, 0, 2])];
        assert!(selectors_allow(
            &ts,
            &v4([10, 7, 0, 2], 1, 0),
            Direction::Source
        ));
        assert!(!selectors_allow(
            &ts,
            &v4([10, 7, 0, 9], 1, 0),
            Direction::Source
        ));
        assert!(!selectors_allow(
            &ts,
            &v4([192, 0, 2, 66], 6, 80),
            Direction::Source
        ));
        // The destination end is a different field.
        assert!(!selectors_allow(
            &ts,
            &v4([10, 7, 0, 2], 1, 0),
            Direction::Destination
        ));
        assert!(!selectors_allow(&ts, &[0x45, 0, 0], Direction::Source));
        assert!(!selectors_allow(&ts, &[], Direction::Source));
    }

    #[test]
    fn protocol_and_ports_narrow_a_selector() {
        let ts = [TrafficSelector::Ipv4 {
            ip_protocol: UDP,
            start_port: 53,
            end_port: 53,
            start_addr: Ipv4Addr::new(10, 0, 0, 0),
            end_addr: Ipv4Addr::new(10, 0, 0, 255),
        }];
        assert!(selectors_allow(
            &ts,
            &v4([10, 0, 0, 5], UDP, 53),
            Direction::Source
        ));
        assert!(!selectors_allow(
            &ts,
            &v4([10, 0, 0, 5], UDP, 54),
            Direction::Source
        ));
        assert!(!selectors_allow(
            &ts,
            &v4([10, 0, 0, 5], TCP, 53),
            Direction::Source
        ));
        // A later fragment has no ports to show: refused by a port-narrowed selector.
        let mut frag = v4([10, 0, 0, 5], UDP, 53);
        frag[7] = 1;
        assert!(!selectors_allow(&ts, &frag, Direction::Source));
    }

    #[test]
    fn ipv6_source_is_matched_against_ipv6_selectors_only() {
        let a = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 1);
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[6] = 58;
        p[8..24].copy_from_slice(&a.octets());
        let ts6 = [TrafficSelector::Ipv6 {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start_addr: a,
            end_addr: a,
        }];
        assert!(selectors_allow(&ts6, &p, Direction::Source));
        assert!(!selectors_allow(
            &[host4([10, 0, 0, 1])],
            &p,
            Direction::Source
        ));
        p[23] = 2;
        assert!(!selectors_allow(&ts6, &p, Direction::Source));
    }
}
