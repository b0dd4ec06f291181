//! Security review finding 1 and L3: with a pool, a client's inner address is the one the
//! gateway leased to it, and each client gets its own, IPv4 and IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::pair::{CLIENT, GATEWAY, Pair, client_config, gateway_config};
use crate::crypto::DeterministicProvider;
use crate::ike::{CryptoPolicy, Error, Event, Initiator, Mode};
use crate::wire::{NotifyType, TrafficSelector};

fn host(ip: Ipv4Addr) -> TrafficSelector {
    TrafficSelector::Ipv4 {
        ip_protocol: 0,
        start_port: 0,
        end_port: 65535,
        start_addr: ip,
        end_addr: ip,
    }
}

#[test]
fn client_without_cp_cannot_claim_another_clients_address() {
    let mut client = client_config(Mode::Hybrid);
    client.request_ipv4 = false;
    client.request_ipv6 = false;
    client.ts_i = vec![host(Ipv4Addr::new(10, 99, 0, 10))];
    let mut pair = Pair::new(
        41,
        client,
        gateway_config(vec![CryptoPolicy::for_mode(Mode::Hybrid)]),
    );
    pair.drive();
    pair.settle();
    assert!(
        pair.initiator_events.iter().any(|e| matches!(
            e,
            Event::ChildSaFailed(Error::NotifyReceived(NotifyType::FailedCpRequired))
        )),
        "{:?}",
        pair.initiator_events
    );
    assert!(pair.initiator.child_sas().is_empty());
    assert!(pair.responder.child_sas(pair.gateway_sa()).is_empty());
}

/// The virtual addresses the initiator was given.
fn virtual_ips(events: &[Event]) -> Vec<(IpAddr, u8)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ConfigReceived(c) => Some(c.virtual_ips.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn ipv6_only_clients_get_distinct_addresses() {
    let mut client = client_config(Mode::Hybrid);
    client.request_ipv4 = false;
    client.request_ipv6 = true;
    let mut gateway = gateway_config(vec![CryptoPolicy::for_mode(Mode::Hybrid)]);
    gateway.pool_v4 = None;
    let base = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 0);
    gateway.pool_v6 = Some((base, 64));
    let mut pair = Pair::new(42, client.clone(), gateway);
    pair.drive();
    pair.settle();
    let first = virtual_ips(&pair.initiator_events);
    // A second client against the same gateway.
    pair.initiator = Initiator::new(
        Arc::new(DeterministicProvider::new(4242)),
        client,
        pair.now,
        CLIENT,
        GATEWAY,
    )
    .unwrap();
    pair.initiator_events.clear();
    pair.collect();
    pair.drive();
    pair.settle();
    let second = virtual_ips(&pair.initiator_events);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second);
    for (ip, len) in first.iter().chain(&second) {
        assert_eq!(*len, 64);
        let IpAddr::V6(v6) = ip else {
            panic!("not IPv6: {ip}")
        };
        assert_eq!(v6.segments()[..4], base.segments()[..4]);
        assert_ne!(*v6, base);
    }
    assert_eq!(pair.responder.established_ids().len(), 2);
}
