//! Security review L6: a hostile gateway's CFG_REPLY (our own responder with a hostile pool or
//! pushed networks) is checked before the client reports it. A refused reply fails the Child
//! SA of IKE_AUTH with a precise [`Error::ConfigReplyRefused`]; the client then deletes the IKE
//! SA (the driver does, as for every Child SA failure after IKE_AUTH).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::pair::{GATEWAY, Pair, client_config, gateway_config};
use crate::ike::{
    ConfigReceived, ConfigRefusal, CryptoPolicy, Error, Event, InitiatorConfig, Mode,
    ResponderConfig,
};

fn hostile_gateway(pool: Ipv4Addr) -> ResponderConfig {
    let mut gateway = gateway_config(vec![CryptoPolicy::for_mode(Mode::Hybrid)]);
    gateway.pool_v4 = Some((pool, pool));
    gateway
}

/// Runs the handshake; returns the configuration reported, or the Child SA failure.
fn connect(
    seed: u64,
    client: InitiatorConfig,
    gateway: ResponderConfig,
) -> (Pair, Result<ConfigReceived, Error>) {
    let mut pair = Pair::new(seed, client, gateway);
    pair.drive();
    pair.settle();
    let mut config = None;
    let mut failure = None;
    for event in &pair.initiator_events {
        match event {
            Event::ConfigReceived(c) => config = Some(c.clone()),
            Event::ChildSaFailed(e) => failure = Some(e.clone()),
            _ => {}
        }
    }
    let result = match (config, failure) {
        (Some(config), None) => Ok(config),
        (None, Some(error)) => {
            assert!(
                pair.initiator.child_sas().is_empty(),
                "no Child SA after a refusal"
            );
            assert!(
                !pair
                    .initiator_events
                    .iter()
                    .any(|e| matches!(e, Event::ChildSaEstablished(_))),
                "{:?}",
                pair.initiator_events
            );
            Err(error)
        }
        other => panic!("{other:?}: {:?}", pair.initiator_events),
    };
    (pair, result)
}

#[test]
fn hostile_cfg_reply_public_virtual_ip_is_refused() {
    let public = Ipv4Addr::new(8, 8, 8, 8);
    let (_, result) = connect(61, client_config(Mode::Hybrid), hostile_gateway(public));
    assert_eq!(
        result,
        Err(Error::ConfigReplyRefused(ConfigRefusal::VirtualIpPublic(
            IpAddr::V4(public)
        )))
    );
    // The profile can allow it.
    let mut client = client_config(Mode::Hybrid);
    client.allow_public_virtual_ip = true;
    let (pair, result) = connect(62, client, hostile_gateway(public));
    assert_eq!(result.unwrap().virtual_ips, [(IpAddr::V4(public), 32)]);
    assert_eq!(pair.initiator.child_sas().len(), 1);
}

#[test]
fn hostile_cfg_reply_loopback_or_gateway_address_is_refused() {
    let mut client = client_config(Mode::Hybrid);
    // Even with public addresses allowed.
    client.allow_public_virtual_ip = true;
    let IpAddr::V4(gateway_ip) = GATEWAY.ip() else {
        unreachable!("the pair's gateway is IPv4")
    };
    for (seed, pool) in [
        (63, Ipv4Addr::LOCALHOST),
        (64, Ipv4Addr::UNSPECIFIED),
        (65, Ipv4Addr::new(0, 0, 0, 7)),
        (66, Ipv4Addr::BROADCAST),
        (67, Ipv4Addr::new(224, 0, 0, 251)),
        (68, Ipv4Addr::new(169, 254, 10, 20)),
        (69, gateway_ip),
    ] {
        let (_, result) = connect(seed, client.clone(), hostile_gateway(pool));
        let expected = if pool == gateway_ip {
            ConfigRefusal::VirtualIpIsGateway(IpAddr::V4(pool))
        } else {
            match result {
                Err(Error::ConfigReplyRefused(ConfigRefusal::VirtualIpReserved {
                    address,
                    kind,
                })) => ConfigRefusal::VirtualIpReserved { address, kind },
                ref other => panic!("{pool}: {other:?}"),
            }
        };
        assert_eq!(result, Err(Error::ConfigReplyRefused(expected)), "{pool}");
        if let ConfigRefusal::VirtualIpReserved { address, .. } = expected {
            assert_eq!(address, IpAddr::V4(pool));
        }
    }
    // IPv6: loopback, link-local and multicast virtual addresses (the lease is the pool's
    // first address plus one).
    for (seed, base) in [
        (70, Ipv6Addr::UNSPECIFIED),
        (71, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
        (72, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0)),
    ] {
        let mut client = client.clone();
        client.request_ipv4 = false;
        let mut gateway = hostile_gateway(Ipv4Addr::new(10, 99, 0, 10));
        gateway.pool_v4 = None;
        gateway.pool_v6 = Some((base, 64));
        let (_, result) = connect(seed, client, gateway);
        assert!(
            matches!(
                result,
                Err(Error::ConfigReplyRefused(
                    ConfigRefusal::VirtualIpReserved { .. }
                ))
            ),
            "{base}: {result:?}"
        );
    }
}

#[test]
fn hostile_cfg_reply_pushed_routes_are_ignored_unless_accepted() {
    let mut gateway = gateway_config(vec![CryptoPolicy::for_mode(Mode::Hybrid)]);
    gateway.subnets_v4 = vec![(Ipv4Addr::new(10, 1, 0, 0), Ipv4Addr::new(255, 255, 0, 0))];
    let (_, result) = connect(73, client_config(Mode::Hybrid), gateway.clone());
    let config = result.unwrap();
    assert!(config.subnets.is_empty(), "{config:?}");
    assert_eq!(config.virtual_ips.len(), 1);

    let mut client = client_config(Mode::Hybrid);
    client.accept_pushed_routes = true;
    let (_, result) = connect(74, client, gateway);
    assert_eq!(
        result.unwrap().subnets,
        [(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 16)]
    );
}

#[test]
fn hostile_cfg_reply_pushed_default_or_gateway_route_is_refused() {
    let mut client = client_config(Mode::Hybrid);
    client.accept_pushed_routes = true;
    let cases = [
        (
            75,
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
            ConfigRefusal::SubnetTooWide {
                address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                prefix: 0,
            },
        ),
        (
            76,
            (Ipv4Addr::new(128, 0, 0, 0), Ipv4Addr::new(128, 0, 0, 0)),
            ConfigRefusal::SubnetTooWide {
                address: IpAddr::V4(Ipv4Addr::new(128, 0, 0, 0)),
                prefix: 1,
            },
        ),
        (
            77,
            (Ipv4Addr::new(198, 18, 0, 0), Ipv4Addr::new(255, 255, 0, 0)),
            ConfigRefusal::SubnetCoversGateway {
                address: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)),
                prefix: 16,
                gateway: GATEWAY.ip(),
            },
        ),
    ];
    for (seed, subnet, refusal) in cases {
        let mut gateway = gateway_config(vec![CryptoPolicy::for_mode(Mode::Hybrid)]);
        gateway.subnets_v4 = vec![
            (Ipv4Addr::new(10, 1, 0, 0), Ipv4Addr::new(255, 255, 0, 0)),
            subnet,
        ];
        let (_, result) = connect(seed, client.clone(), gateway);
        assert_eq!(result, Err(Error::ConfigReplyRefused(refusal)));
    }
}

/// The error says what was refused, for the user.
#[test]
fn hostile_cfg_reply_errors_name_the_address() {
    let error = Error::ConfigReplyRefused(ConfigRefusal::VirtualIpPublic(IpAddr::V4(
        Ipv4Addr::new(8, 8, 8, 8),
    )));
    assert_eq!(
        error.to_string(),
        "the gateway's configuration reply was refused: virtual address 8.8.8.8 is public \
         (globally routable); set allow_public_virtual_ip to accept it"
    );
    let error = Error::ConfigReplyRefused(ConfigRefusal::SubnetCoversGateway {
        address: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)),
        prefix: 16,
        gateway: GATEWAY.ip(),
    });
    assert!(
        error
            .to_string()
            .ends_with("pushed route 198.18.0.0/16 covers the gateway 198.18.0.1")
    );
}
