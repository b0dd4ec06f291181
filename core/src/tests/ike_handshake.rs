//! Initial exchanges between our initiator and our responder: every mode, COOKIE,
//! INVALID_KE_PAYLOAD, fragmentation, loss, duplication, reordering, tampering, a downgrade
//! attempt, bad ML-KEM values and wrong PSKs.

use std::net::{IpAddr, Ipv4Addr};

use super::pair::{Pair, client_config, gateway_config, rng};
use crate::crypto::{InvalidPeerValue, SecretBytes};
use crate::ike::{ChildSaEstablished, ConfigReceived, CryptoPolicy, Error, Event, Mode, Suite};
use crate::wire::{
    ExchangeType, Header, KeyExchangeMethod, Message, NotifyType, Payload, TransformType,
};

/// The events of a successful handshake on both sides, checked to agree.
fn established(pair: &Pair) -> (Suite, ChildSaEstablished, Option<ConfigReceived>) {
    let mut suite_i = None;
    let mut child_i = None;
    let mut config = None;
    for e in &pair.initiator_events {
        match e {
            Event::IkeSaEstablished { suite } => suite_i = Some(suite.clone()),
            Event::ChildSaEstablished(c) => child_i = Some((**c).clone()),
            Event::ConfigReceived(c) => config = Some(c.clone()),
            other => panic!("unexpected initiator event {other:?}"),
        }
    }
    let mut suite_r = None;
    let mut child_r = None;
    for e in &pair.responder_events {
        match e {
            Event::IkeSaEstablished { suite } => suite_r = Some(suite.clone()),
            Event::ChildSaEstablished(c) => child_r = Some((**c).clone()),
            other => panic!("unexpected responder event {other:?}"),
        }
    }
    let suite = suite_i.expect("initiator established");
    assert_eq!(
        Some(&suite),
        suite_r.as_ref(),
        "both sides report the same suite"
    );
    let child = child_i.expect("initiator child SA");
    assert_eq!(
        Some(&child),
        child_r.as_ref(),
        "both sides derive the same child SA"
    );
    assert!(pair.initiator.is_established());
    (suite, child, config)
}

fn failure(events: &[Event]) -> Option<&Error> {
    events.iter().find_map(|e| match e {
        Event::Failed(e) => Some(e),
        _ => None,
    })
}

#[test]
fn hybrid_x25519_mlkem768_happy_path() {
    let mut pair = Pair::mode(1, Mode::Hybrid);
    pair.drive();
    let (suite, child, config) = established(&pair);
    assert_eq!(suite.ke, KeyExchangeMethod::Curve25519);
    assert_eq!(suite.addke, [KeyExchangeMethod::MlKem768]);
    assert!(suite.quantum_safe);
    assert_eq!(suite.to_string(), "X25519 + ML-KEM-768, AES-GCM-256");
    assert_eq!(child.keys.encr_i.len(), 36);
    assert_ne!(child.keys.encr_i, child.keys.encr_r);
    let config = config.expect("CFG_REPLY");
    assert_eq!(
        config.virtual_ips,
        [(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 10)), 32)]
    );
    assert_eq!(config.dns, [IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1))]);
    // TSi narrowed to the virtual address.
    assert_eq!(child.ts_i.len(), 1);
    // UDP encapsulation is forced, so everything after IKE_SA_INIT went to port 4500.
    assert!(pair.initiator.is_nat_t());
    assert_eq!(pair.initiator.remote().port(), 4500);
    // Requests on the wire: IKE_SA_INIT, IKE_INTERMEDIATE in two RFC 7383 fragments (its
    // 1249 octets plus UDP, IP and the non-ESP marker exceed 1280, as with strongSwan), then
    // IKE_AUTH.
    let requests: Vec<(ExchangeType, u8)> = pair
        .log
        .iter()
        .filter(|(to_responder, _)| *to_responder)
        .map(|(_, m)| (Header::parse(m).unwrap().exchange_type, m[16]))
        .collect();
    assert_eq!(
        requests,
        [
            (ExchangeType::IkeSaInit, 33),
            (ExchangeType::IkeIntermediate, 53),
            (ExchangeType::IkeIntermediate, 53),
            (ExchangeType::IkeAuth, 46),
        ]
    );
}

#[test]
fn hybrid_mlkem1024_is_selectable() {
    let policy = CryptoPolicy::hybrid(KeyExchangeMethod::MlKem1024);
    let mut client = client_config(Mode::Hybrid);
    client.policy = policy.clone();
    let mut pair = Pair::new(2, client, gateway_config(vec![policy]));
    pair.drive();
    let (suite, _, _) = established(&pair);
    assert_eq!(suite.addke, [KeyExchangeMethod::MlKem1024]);
}

#[test]
fn hybrid_p384_after_invalid_ke_payload() {
    // A gateway that takes only P-384 with ML-KEM, as Cloudflare's does.
    let gateway_policy = CryptoPolicy {
        ke: vec![KeyExchangeMethod::Ecp384],
        ..CryptoPolicy::default()
    };
    let mut pair = Pair::new(
        3,
        client_config(Mode::Hybrid),
        gateway_config(vec![gateway_policy]),
    );
    pair.drive();
    let (suite, _, _) = established(&pair);
    assert_eq!(suite.ke, KeyExchangeMethod::Ecp384);
    assert_eq!(suite.to_string(), "P-384 + ML-KEM-768, AES-GCM-256");
    let inits: Vec<&Vec<u8>> = pair
        .log
        .iter()
        .filter(|(_, m)| Header::parse(m).unwrap().exchange_type == ExchangeType::IkeSaInit)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        inits.len(),
        4,
        "request, INVALID_KE_PAYLOAD, request, response"
    );
    let answer = Message::parse(inits[1]).unwrap();
    assert!(matches!(&answer.payloads[..], [Payload::Notify(n)]
        if n.invalid_ke_payload_method() == Some(KeyExchangeMethod::Ecp384)));
}

#[test]
fn pq_only_768_and_1024() {
    for (seed, method) in [
        (4, KeyExchangeMethod::MlKem768),
        (5, KeyExchangeMethod::MlKem1024),
    ] {
        let policy = CryptoPolicy::pq_only(method);
        let mut client = client_config(Mode::PqOnly);
        client.policy = policy.clone();
        let mut pair = Pair::new(seed, client, gateway_config(vec![policy]));
        pair.drive();
        let (suite, _, _) = established(&pair);
        assert_eq!(suite.ke, method);
        assert!(suite.addke.is_empty());
        assert!(suite.quantum_safe);
        let exchanges = pair.log.iter().filter(|(i, _)| *i).count();
        assert_eq!(exchanges, 2, "no IKE_INTERMEDIATE in pq-only");
    }
}

#[test]
fn classical_is_marked_not_quantum_safe_and_signs_without_intauth() {
    let mut pair = Pair::mode(6, Mode::Classical);
    pair.drive();
    // AUTH verified on both sides although no IKE_INTERMEDIATE ran: IntAuth was left out.
    let (suite, _, _) = established(&pair);
    assert!(!suite.quantum_safe);
    assert_eq!(suite.mode, Mode::Classical);
    assert!(suite.addke.is_empty());
}

#[test]
fn gateway_accepting_several_modes_answers_each_client_in_its_mode() {
    let policies = vec![
        CryptoPolicy::default(),
        CryptoPolicy::for_mode(Mode::PqOnly),
        CryptoPolicy::classical(),
    ];
    for (seed, mode) in [(7, Mode::Hybrid), (8, Mode::PqOnly), (9, Mode::Classical)] {
        let mut pair = Pair::new(seed, client_config(mode), gateway_config(policies.clone()));
        pair.drive();
        let (suite, _, _) = established(&pair);
        assert_eq!(suite.mode, mode);
    }
}

#[test]
fn cookie_restart() {
    let mut gateway = gateway_config(vec![CryptoPolicy::default()]);
    gateway.cookie_threshold = 0;
    let mut pair = Pair::new(10, client_config(Mode::Hybrid), gateway);
    pair.drive();
    established(&pair);
    let first_reply = pair.log.iter().find(|(i, _)| !*i).unwrap();
    let reply = Message::parse(&first_reply.1).unwrap();
    assert!(
        matches!(&reply.payloads[..], [Payload::Notify(n)] if n.notify_type == NotifyType::Cookie)
    );
    // The retried request carries the cookie first.
    let retry = pair.log.iter().filter(|(i, _)| *i).nth(1).unwrap();
    let retry = Message::parse(&retry.1).unwrap();
    assert!(
        matches!(&retry.payloads[0], Payload::Notify(n) if n.notify_type == NotifyType::Cookie)
    );
}

#[test]
fn hybrid_refuses_a_gateway_without_mlkem() {
    let mut pair = Pair::new(
        11,
        client_config(Mode::Hybrid),
        gateway_config(vec![CryptoPolicy::classical()]),
    );
    pair.drive();
    assert_eq!(
        failure(&pair.initiator_events),
        Some(&Error::GatewayRejectedProposal(Mode::Hybrid))
    );
    assert!(
        failure(&pair.initiator_events)
            .unwrap()
            .to_string()
            .contains("ML-KEM")
    );
}

#[test]
fn hybrid_refuses_a_man_in_the_middle_that_strips_addke() {
    let mut pair = Pair::mode(12, Mode::Hybrid);
    // Deliver the request, then rewrite the response's SA without ADDKE1.
    let d = pair.to_responder.pop_front().unwrap();
    pair.deliver_to_responder(d);
    pair.collect();
    let mut response = pair.to_initiator.pop_front().unwrap();
    let mut message = Message::parse(&response.bytes).unwrap();
    for p in &mut message.payloads {
        if let Payload::Sa(sa) = p {
            sa.proposals[0]
                .transforms
                .retain(|t| t.transform_type != TransformType::AdditionalKeyExchange1);
        }
    }
    response.bytes = message.emit();
    pair.deliver_to_initiator(response);
    pair.collect();
    assert_eq!(
        failure(&pair.initiator_events),
        Some(&Error::GatewayRefusedMlKem)
    );
    assert!(
        pair.initiator.poll_timeout().is_none(),
        "nothing left to send"
    );
}

/// Runs until the initiator's IKE_INTERMEDIATE request is in flight.
fn up_to_intermediate(pair: &mut Pair) {
    pair.step();
    assert!(
        pair.to_responder.iter().any(
            |d| Header::parse(&d.bytes).unwrap().exchange_type == ExchangeType::IkeIntermediate
        )
    );
}

#[test]
fn wrong_psk_on_either_side_fails_authentication() {
    let mut client = client_config(Mode::Hybrid);
    client.psk = SecretBytes::from_slice(b"not the gateway's psk");
    let mut pair = Pair::new(13, client, gateway_config(vec![CryptoPolicy::default()]));
    pair.drive();
    assert_eq!(
        failure(&pair.initiator_events),
        Some(&Error::NotifyReceived(NotifyType::AuthenticationFailed))
    );
    assert_eq!(
        failure(&pair.responder_events),
        Some(&Error::AuthenticationFailed)
    );

    // A gateway that accepts us but proves its side with another PSK is refused by the
    // initiator before anything is established.
    let mut pair = Pair::mode(14, Mode::Hybrid);
    pair.responder.fault_wrong_auth = true;
    pair.drive();
    assert_eq!(
        failure(&pair.initiator_events),
        Some(&Error::AuthenticationFailed)
    );
    assert!(!pair.initiator.is_established());
    assert!(
        !pair.initiator_events.iter().any(|e| matches!(
            e,
            Event::IkeSaEstablished { .. } | Event::ChildSaEstablished(_)
        )),
        "nothing established on a bad AUTH"
    );
}

#[test]
fn disjoint_traffic_selectors_give_ts_unacceptable() {
    let mut client = client_config(Mode::Hybrid);
    client.ts_r = vec![crate::wire::TrafficSelector::ipv6_any()];
    let mut gateway = gateway_config(vec![CryptoPolicy::default()]);
    gateway.local_ts = vec![crate::wire::TrafficSelector::ipv4_any()];
    let mut pair = Pair::new(35, client, gateway);
    pair.drive();
    assert!(pair.initiator.is_established());
    assert!(pair.initiator_events.iter().any(|e| matches!(
        e,
        Event::ChildSaFailed(Error::NotifyReceived(NotifyType::TsUnacceptable))
    )));
}

#[test]
fn fragmented_intermediate_and_auth_reassemble_out_of_order() {
    let mut client = client_config(Mode::Hybrid);
    client.fragment_size = 576;
    let mut gateway = gateway_config(vec![CryptoPolicy::default()]);
    gateway.fragment_size = 576;
    let mut pair = Pair::new(15, client, gateway);
    up_to_intermediate(&mut pair);
    let fragments = pair.to_responder.len();
    assert!(fragments >= 3, "ML-KEM-768 KE in {fragments} fragments");
    // Reverse the fragments and send the second one twice.
    let mut reversed: Vec<_> = pair.to_responder.drain(..).rev().collect();
    reversed.insert(1, reversed[1].clone());
    pair.to_responder.extend(reversed);
    pair.drive();
    established(&pair);
    let skf = pair.log.iter().filter(|(_, m)| m[16] == 53).count();
    assert!(
        skf > fragments,
        "responses were fragmented too ({skf} SKF datagrams)"
    );
}

#[test]
fn lost_fragments_are_retransmitted() {
    let mut client = client_config(Mode::Hybrid);
    client.fragment_size = 576;
    let mut gateway = gateway_config(vec![CryptoPolicy::default()]);
    gateway.fragment_size = 576;
    let mut pair = Pair::new(16, client, gateway);
    up_to_intermediate(&mut pair);
    pair.to_responder.remove(1);
    pair.drive();
    established(&pair);
}

#[test]
fn thirty_percent_loss_with_reordering_and_duplicates() {
    let mut completed = 0;
    for seed in 0..40 {
        let mut pair = Pair::mode(100 + seed, Mode::Hybrid);
        let mut r = rng(seed);
        pair.drive_lossy(&mut r, 0.3, 0.1);
        if pair.initiator.is_established() {
            established(&pair);
            completed += 1;
        } else {
            // Otherwise it must have given up cleanly.
            assert_eq!(
                failure(&pair.initiator_events),
                Some(&Error::Timeout),
                "seed {seed}"
            );
        }
    }
    // With 6 attempts per request the chance to fail at 30 % loss is small.
    assert!(completed >= 36, "{completed}/40 handshakes completed");
}

#[test]
fn tampered_bytes_are_dropped_and_the_handshake_recovers_or_fails_cleanly() {
    // For every message of a clean run, flip bytes at several positions in flight.
    let mut clean = Pair::mode(20, Mode::Hybrid);
    clean.drive();
    established(&clean);
    let messages = clean.log.len();
    for index in 0..messages {
        let len = clean.log[index].1.len();
        for pos in [0, 17, 18, 24, 28, 40, len / 2, len - 17, len - 1] {
            let mut pair = Pair::mode(20, Mode::Hybrid);
            let mut sent = 0;
            let mut tampered = false;
            for _ in 0..1000 {
                if pair.initiator.is_established() || pair.initiator.is_failed() {
                    break;
                }
                let mut moved = false;
                for towards_responder in [true, false] {
                    let link = if towards_responder {
                        &mut pair.to_responder
                    } else {
                        &mut pair.to_initiator
                    };
                    let batch: Vec<_> = link.drain(..).collect();
                    for mut d in batch {
                        if sent == index && !tampered {
                            d.bytes[pos] ^= 0x20;
                            tampered = true;
                        }
                        sent += 1;
                        moved = true;
                        if towards_responder {
                            pair.deliver_to_responder(d);
                        } else {
                            pair.deliver_to_initiator(d);
                        }
                    }
                    pair.collect();
                }
                if !moved && !pair.advance() {
                    break;
                }
            }
            let ok = pair.initiator.is_established();
            let clean_failure = matches!(
                failure(&pair.initiator_events),
                Some(Error::AuthenticationFailed | Error::NotifyReceived(_) | Error::Timeout)
            );
            assert!(
                ok || clean_failure,
                "message {index} byte {pos}: {:?}",
                pair.initiator_events
            );
            if ok {
                established(&pair);
            }
        }
    }
}

#[test]
fn corrupted_intermediate_response_is_dropped_without_state_change() {
    let mut pair = Pair::mode(21, Mode::Hybrid);
    up_to_intermediate(&mut pair);
    while let Some(d) = pair.to_responder.pop_front() {
        pair.deliver_to_responder(d);
    }
    pair.collect();
    let mut response = pair.to_initiator.pop_front().unwrap();
    let last = response.bytes.len() - 1;
    response.bytes[last] ^= 1;
    pair.deliver_to_initiator(response);
    pair.collect();
    assert!(!pair.initiator.is_failed());
    assert!(pair.initiator_events.is_empty());
    // The retransmitted request gets the cached (intact) response and the handshake ends.
    pair.drive();
    established(&pair);
}

#[test]
fn short_mlkem_ciphertext_aborts_before_ike_auth() {
    let mut pair = Pair::mode(22, Mode::Hybrid);
    pair.responder.fault_short_ciphertext = true;
    pair.drive();
    assert_eq!(
        failure(&pair.initiator_events),
        Some(&Error::Crypto(crate::crypto::Error::InvalidPeerValue {
            method: KeyExchangeMethod::MlKem768,
            reason: InvalidPeerValue::WrongLength {
                expected: 1088,
                got: 1087
            }
        }))
    );
    let auth_sent = pair
        .log
        .iter()
        .any(|(_, m)| Header::parse(m).unwrap().exchange_type == ExchangeType::IkeAuth);
    assert!(!auth_sent, "no IKE_AUTH after a bad ciphertext");
}

#[test]
fn invalid_encapsulation_key_gets_invalid_syntax() {
    let mut pair = Pair::mode(23, Mode::Hybrid);
    pair.initiator.fault_bad_encapsulation_key = true;
    pair.drive();
    assert_eq!(
        failure(&pair.initiator_events),
        Some(&Error::NotifyReceived(NotifyType::InvalidSyntax))
    );
    assert_eq!(
        failure(&pair.responder_events),
        Some(&Error::Crypto(crate::crypto::Error::InvalidPeerValue {
            method: KeyExchangeMethod::MlKem768,
            reason: InvalidPeerValue::ModulusCheckFailed
        }))
    );
    assert_eq!(pair.responder.sa_count(), 0, "the responder dropped the SA");
}

#[test]
fn child_sa_failure_keeps_the_ike_sa() {
    // The gateway only takes ChaCha20-Poly1305 for ESP; the client only offers AES-GCM.
    let mut client = client_config(Mode::Hybrid);
    client.esp = vec![crate::crypto::AeadAlgorithm::Aes256Gcm16];
    let mut gateway = gateway_config(vec![CryptoPolicy::default()]);
    gateway.esp = vec![crate::crypto::AeadAlgorithm::ChaCha20Poly1305];
    let mut pair = Pair::new(30, client, gateway);
    pair.drive();
    assert!(pair.initiator.is_established(), "IKE SA up");
    assert!(matches!(
        &pair.initiator_events[..],
        [
            Event::IkeSaEstablished { .. },
            Event::ChildSaFailed(Error::NotifyReceived(NotifyType::NoProposalChosen))
        ]
    ));
    assert!(matches!(
        &pair.responder_events[..],
        [
            Event::IkeSaEstablished { .. },
            Event::ChildSaFailed(Error::NoProposalChosen)
        ]
    ));
}

#[test]
fn exhausted_address_pool_gives_internal_address_failure() {
    let mut gateway = gateway_config(vec![CryptoPolicy::default()]);
    gateway.pool_v4 = Some((Ipv4Addr::new(10, 99, 0, 10), Ipv4Addr::new(10, 99, 0, 10)));
    let mut first = Pair::new(31, client_config(Mode::Hybrid), gateway);
    first.drive();
    established(&first);
    // A second client against the same responder: its one address is taken.
    let mut responder = first.responder;
    let mut second = Pair::mode(32, Mode::Hybrid);
    core::mem::swap(&mut second.responder, &mut responder);
    second.drive();
    assert!(second.initiator.is_established());
    assert!(second.initiator_events.iter().any(|e| matches!(
        e,
        Event::ChildSaFailed(Error::NotifyReceived(NotifyType::InternalAddressFailure))
    )));
}

#[test]
fn unreachable_gateway_times_out_after_every_retransmission() {
    let mut pair = Pair::mode(33, Mode::Hybrid);
    let start = pair.now;
    let mut sent = 0;
    while !pair.initiator.is_failed() {
        sent += pair.to_responder.len();
        pair.to_responder.clear();
        assert!(pair.advance(), "a timer stays armed until the SA fails");
    }
    assert_eq!(sent, 6, "six transmissions of IKE_SA_INIT");
    assert_eq!(failure(&pair.initiator_events), Some(&Error::Timeout));
    assert_eq!(
        pair.now - start,
        std::time::Duration::from_secs(1 + 2 + 4 + 8 + 16 + 32)
    );
    assert!(pair.initiator.poll_timeout().is_none());
}

#[test]
fn without_nat_or_forcing_the_sa_stays_on_port_500() {
    let mut client = client_config(Mode::Hybrid);
    client.force_udp_encapsulation = false;
    let mut pair = Pair::new(34, client, gateway_config(vec![CryptoPolicy::default()]));
    pair.drive();
    established(&pair);
    assert!(!pair.initiator.is_nat_t());
    assert_eq!(pair.initiator.remote().port(), 500);
}

#[test]
fn every_identity_type_authenticates() {
    use crate::wire::IkeId;
    for (seed, id) in [
        (40, IkeId::Rfc822("alice@example.test".into())),
        (41, IkeId::KeyId(b"account_tunnel".to_vec())),
        (42, IkeId::Ipv4(Ipv4Addr::new(192, 0, 2, 7))),
        (43, IkeId::Ipv6("2001:db8::7".parse().unwrap())),
    ] {
        let mut client = client_config(Mode::Hybrid);
        client.local_id = id;
        let mut pair = Pair::new(seed, client, gateway_config(vec![CryptoPolicy::default()]));
        pair.drive();
        established(&pair);
    }
    // A gateway proving another identity than the configured one is refused.
    let mut client = client_config(Mode::Hybrid);
    client.remote_id = Some(IkeId::Fqdn("other.test".into()));
    let mut pair = Pair::new(44, client, gateway_config(vec![CryptoPolicy::default()]));
    pair.drive();
    assert_eq!(
        failure(&pair.responder_events),
        Some(&Error::IdentityMismatch),
        "the responder refuses an IDr that is not its own"
    );
}
