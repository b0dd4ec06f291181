//! What the client accepts from the gateway's CFG_REPLY (RFC 7296 §3.15) before it reports it
//! (security review L6).
//!
//! A gateway, or whoever impersonates it, chooses the client's virtual addresses and may push
//! networks (INTERNAL_IP4_SUBNET, INTERNAL_IP6_SUBNET). Taken as they come, a virtual address
//! becomes a local address of the client's host and a pushed network a route, so:
//!
//! | item | refused |
//! | --- | --- |
//! | virtual address | unspecified or "this network" (`0.0.0.0/8`, `::`), loopback, multicast, broadcast (`255.255.255.255`), reserved (`240.0.0.0/4`), link-local (`169.254.0.0/16`, `fe80::/10`), IPv4-mapped or -compatible IPv6, the gateway's own address; a public (globally routable) address unless [`InitiatorConfig::allow_public_virtual_ip`] |
//! | pushed network | ignored unless [`InitiatorConfig::accept_pushed_routes`]; then refused if it is `/0` or `/1` (a default route in disguise) or covers the gateway's address (a routing loop, TunnelCrack ServerIP) |
//!
//! Private, for this check: RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), shared address space
//! (`100.64/10`, RFC 6598), benchmarking (`198.18/15`, RFC 2544) and unique local IPv6
//! (`fc00::/7`, RFC 4193). A refusal fails the Child SA of IKE_AUTH with
//! [`Error::ConfigReplyRefused`](super::Error::ConfigReplyRefused); the driver then deletes
//! the IKE SA.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::config::InitiatorConfig;
use super::sa::ConfigReceived;

/// Why a CFG_REPLY was refused.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigRefusal {
    /// A virtual address that cannot be a host's own address.
    #[error("virtual address {address} is {kind}")]
    VirtualIpReserved {
        /// The address.
        address: IpAddr,
        /// What it is: `"loopback"`, `"multicast"`, `"link-local"`, ...
        kind: &'static str,
    },
    /// A virtual address equal to the gateway's own (outer) address.
    #[error("virtual address {0} is the gateway's own address")]
    VirtualIpIsGateway(IpAddr),
    /// A public (globally routable) virtual address, and the configuration does not allow one.
    #[error(
        "virtual address {0} is public (globally routable); set allow_public_virtual_ip to \
         accept it"
    )]
    VirtualIpPublic(IpAddr),
    /// An address or network whose prefix length exceeds the address size.
    #[error("{address}/{prefix} has an invalid prefix length")]
    InvalidPrefix {
        /// The address.
        address: IpAddr,
        /// The prefix length.
        prefix: u8,
    },
    /// A pushed network of prefix length 0 or 1: a default route.
    #[error("pushed route {address}/{prefix} is a default route")]
    SubnetTooWide {
        /// The network.
        address: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// A pushed network that contains the gateway's (outer) address.
    #[error("pushed route {address}/{prefix} covers the gateway {gateway}")]
    SubnetCoversGateway {
        /// The network.
        address: IpAddr,
        /// Its prefix length.
        prefix: u8,
        /// The gateway's address.
        gateway: IpAddr,
    },
}

/// Checks what a CFG_REPLY assigned, from the gateway at `gateway`; returns it with the pushed
/// networks removed unless `config` accepts them.
///
/// # Errors
///
/// The first [`ConfigRefusal`] found.
pub(crate) fn check(
    mut reply: ConfigReceived,
    gateway: IpAddr,
    config: &InitiatorConfig,
) -> Result<ConfigReceived, ConfigRefusal> {
    let gateway = gateway.to_canonical();
    for &(address, prefix) in &reply.virtual_ips {
        check_prefix(address, prefix)?;
        if let Some(kind) = reserved(address) {
            return Err(ConfigRefusal::VirtualIpReserved { address, kind });
        }
        if address == gateway {
            return Err(ConfigRefusal::VirtualIpIsGateway(address));
        }
        if !private(address) && !config.allow_public_virtual_ip {
            return Err(ConfigRefusal::VirtualIpPublic(address));
        }
    }
    if !config.accept_pushed_routes {
        reply.subnets.clear();
    }
    for &(address, prefix) in &reply.subnets {
        check_prefix(address, prefix)?;
        if prefix <= 1 {
            return Err(ConfigRefusal::SubnetTooWide { address, prefix });
        }
        if address.is_ipv4() == gateway.is_ipv4()
            && network(address, prefix) == network(gateway, prefix)
        {
            return Err(ConfigRefusal::SubnetCoversGateway {
                address,
                prefix,
                gateway,
            });
        }
    }
    Ok(reply)
}

fn check_prefix(address: IpAddr, prefix: u8) -> Result<(), ConfigRefusal> {
    let max = if address.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(ConfigRefusal::InvalidPrefix { address, prefix });
    }
    Ok(())
}

/// What kind of non-host address `address` is, if it is one.
fn reserved(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(a) => {
            let o = a.octets();
            if o[0] == 0 {
                Some("unspecified (0.0.0.0/8)")
            } else if a.is_loopback() {
                Some("loopback")
            } else if a.is_multicast() {
                Some("multicast")
            } else if a.is_broadcast() {
                Some("the broadcast address")
            } else if o[0] >= 240 {
                Some("reserved (240.0.0.0/4)")
            } else if a.is_link_local() {
                Some("link-local")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            if a.is_unspecified() {
                Some("unspecified")
            } else if a.is_loopback() {
                Some("loopback")
            } else if a.is_multicast() {
                Some("multicast")
            } else if a.is_unicast_link_local() {
                Some("link-local")
            } else if a.to_ipv4_mapped().is_some() {
                Some("IPv4-mapped")
            } else if u128::from(a) >> 32 == 0 {
                Some("IPv4-compatible (deprecated, ::/96)")
            } else {
                None
            }
        }
    }
}

/// Whether `address` is in a private range (see the module documentation).
fn private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(a) => {
            let in_net =
                |net: Ipv4Addr, prefix: u8| network(IpAddr::V4(a), prefix) == IpAddr::V4(net);
            a.is_private()
                || in_net(Ipv4Addr::new(100, 64, 0, 0), 10)
                || in_net(Ipv4Addr::new(198, 18, 0, 0), 15)
        }
        IpAddr::V6(a) => {
            network(IpAddr::V6(a), 7) == IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0))
        }
    }
}

/// Clears the host bits of `address` beyond `prefix`.
fn network(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretBytes;
    use crate::ike::Mode;
    use crate::wire::IkeId;

    const GATEWAY: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));

    fn config() -> InitiatorConfig {
        InitiatorConfig::new(
            Mode::Hybrid,
            SecretBytes::from_slice(b"k"),
            IkeId::Fqdn("c".into()),
            None,
        )
    }

    fn virtual_ip(address: &str, prefix: u8) -> ConfigReceived {
        ConfigReceived {
            virtual_ips: vec![(address.parse().unwrap(), prefix)],
            ..ConfigReceived::default()
        }
    }

    #[test]
    fn l6_private_virtual_ips_pass_at_the_range_edges() {
        for address in [
            "10.0.0.1",
            "10.255.255.254",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "198.18.0.1",
            "198.19.255.254",
        ] {
            assert!(
                check(virtual_ip(address, 32), GATEWAY, &config()).is_ok(),
                "{address}"
            );
        }
        for address in ["fd00::1", "fc00::1", "fdff:ffff::1"] {
            assert!(
                check(virtual_ip(address, 64), GATEWAY, &config()).is_ok(),
                "{address}"
            );
        }
    }

    #[test]
    fn l6_public_virtual_ips_need_the_option() {
        for address in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
            "192.0.2.1",
            "2001:db8::1",
            "fe00::1",
        ] {
            let ip: IpAddr = address.parse().unwrap();
            assert_eq!(
                check(virtual_ip(address, 32), GATEWAY, &config()),
                Err(ConfigRefusal::VirtualIpPublic(ip)),
                "{address}"
            );
            let mut allow = config();
            allow.allow_public_virtual_ip = true;
            assert!(check(virtual_ip(address, 32), GATEWAY, &allow).is_ok());
        }
    }

    #[test]
    fn l6_non_host_virtual_ips_are_refused_even_when_public_is_allowed() {
        let mut allow = config();
        allow.allow_public_virtual_ip = true;
        for address in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "224.0.0.1",
            "239.255.255.255",
            "255.255.255.255",
            "240.0.0.1",
            "169.254.1.1",
            "::",
            "::1",
            "ff02::1",
            "fe80::1",
            "febf::1",
            "::ffff:10.0.0.1",
            "::2",
            "::10.0.0.1",
        ] {
            let result = check(virtual_ip(address, 32), GATEWAY, &allow);
            assert!(
                matches!(result, Err(ConfigRefusal::VirtualIpReserved { .. })),
                "{address}: {result:?}"
            );
        }
        assert_eq!(
            check(virtual_ip("203.0.113.1", 32), GATEWAY, &allow),
            Err(ConfigRefusal::VirtualIpIsGateway(GATEWAY))
        );
        assert!(matches!(
            check(virtual_ip("fd00::1", 129), GATEWAY, &allow),
            Err(ConfigRefusal::InvalidPrefix { prefix: 129, .. })
        ));
    }

    #[test]
    fn l6_pushed_routes_are_dropped_unless_accepted_then_checked() {
        let reply = |subnets: &[(&str, u8)]| ConfigReceived {
            subnets: subnets
                .iter()
                .map(|&(a, p)| (a.parse().unwrap(), p))
                .collect(),
            ..virtual_ip("10.99.0.10", 32)
        };
        let routes = [("10.1.0.0", 16), ("fd01::", 48), ("203.0.112.0", 24)];
        let accepted = check(reply(&routes), GATEWAY, &config()).unwrap();
        assert!(accepted.subnets.is_empty());
        assert_eq!(accepted.virtual_ips, reply(&[]).virtual_ips);
        // Even a hostile one is only dropped when not accepted.
        assert!(check(reply(&[("0.0.0.0", 0)]), GATEWAY, &config()).is_ok());

        let mut accept = config();
        accept.accept_pushed_routes = true;
        assert_eq!(
            check(reply(&routes), GATEWAY, &accept).unwrap(),
            reply(&routes)
        );
        for (address, prefix) in [("0.0.0.0", 0), ("128.0.0.0", 1), ("::", 0), ("8000::", 1)] {
            assert_eq!(
                check(reply(&[(address, prefix)]), GATEWAY, &accept),
                Err(ConfigRefusal::SubnetTooWide {
                    address: address.parse().unwrap(),
                    prefix
                })
            );
        }
        assert_eq!(
            check(reply(&[("203.0.0.0", 8)]), GATEWAY, &accept),
            Err(ConfigRefusal::SubnetCoversGateway {
                address: "203.0.0.0".parse().unwrap(),
                prefix: 8,
                gateway: GATEWAY
            })
        );
        // An IPv4-mapped IPv6 gateway is compared as IPv4.
        let mapped: IpAddr = "::ffff:203.0.113.1".parse().unwrap();
        assert!(matches!(
            check(reply(&[("203.0.113.0", 24)]), mapped, &accept),
            Err(ConfigRefusal::SubnetCoversGateway { .. })
        ));
    }
}
