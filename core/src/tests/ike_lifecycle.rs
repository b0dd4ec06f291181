//! The established IKE SA over hours of virtual time: Child SA and IKE SA rekeys in every mode
//! (by either side), collisions, TEMPORARY_FAILURE, loss, liveness checks, Delete,
//! IKE_FOLLOWUP_KE links, STATE_NOT_FOUND and INVALID_KE_PAYLOAD in CREATE_CHILD_SA.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use super::pair::{ChildTable, Pair, client_config, gateway_config, rng};
use crate::crypto::SecretBytes;
use crate::ike::{
    ChildSaEstablished, CryptoPolicy, Error, Event, InitiatorConfig, Lifetime, Mode,
    ResponderConfig,
};
use crate::wire::{EspSpi, ExchangeType, Header, IkeSpi, KeyExchangeMethod, NotifyType, Payload};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn configs(
    mode: Mode,
    client_child: Duration,
    client_ike: Duration,
    gateway_child: Duration,
    gateway_ike: Duration,
) -> (InitiatorConfig, ResponderConfig) {
    let mut client = client_config(mode);
    client.child_lifetime = Lifetime::new(client_child);
    client.ike_lifetime = Lifetime::new(client_ike);
    let mut gateway = gateway_config(vec![CryptoPolicy::for_mode(mode)]);
    gateway.child_lifetime = Lifetime::new(gateway_child);
    gateway.ike_lifetime = Lifetime::new(gateway_ike);
    (client, gateway)
}

fn established_pair(seed: u64, client: InitiatorConfig, gateway: ResponderConfig) -> Pair {
    let mut pair = Pair::new(seed, client, gateway);
    pair.drive();
    pair.settle();
    assert!(
        pair.initiator.is_established(),
        "{:?}",
        pair.initiator_events
    );
    pair
}

fn failures(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::Failed(_) | Event::ChildSaFailed(_)))
        .collect()
}

/// Both sides agree on the Child SAs up and on every rekey; each rekey made new keys.
fn assert_children_agree(pair: &Pair) -> (ChildTable, ChildTable) {
    let ti = ChildTable::from_events(&pair.initiator_events);
    let tr = ChildTable::from_events(&pair.responder_events);
    assert_eq!(ti.up, tr.up, "both sides hold the same Child SAs");
    let ours: BTreeSet<_> = pair
        .initiator
        .child_sas()
        .iter()
        .map(|c| (c.spi_i, c.spi_r))
        .collect();
    assert_eq!(
        ours,
        ti.up.keys().copied().collect(),
        "events match the SA's table"
    );
    let mut all: HashMap<(EspSpi, EspSpi), ChildSaEstablished> = HashMap::new();
    for e in &pair.initiator_events {
        if let Event::ChildSaEstablished(c) = e {
            all.insert((c.spi_i, c.spi_r), (**c).clone());
        }
    }
    for (old, new) in &ti.rekeys {
        let previous = all.get(old).expect("the old SA was announced before");
        assert_ne!(previous.keys, new.keys, "a rekey makes new keys");
        assert_ne!(previous.keys.encr_i, new.keys.encr_i);
        assert_ne!(previous.keys.encr_r, new.keys.encr_r);
        all.insert((new.spi_i, new.spi_r), new.clone());
    }
    let keys: HashSet<Vec<u8>> = all
        .values()
        .map(|c| c.keys.encr_i.expose().to_vec())
        .collect();
    assert_eq!(keys.len(), all.len(), "no two Child SAs share a key");
    (ti, tr)
}

/// The plaintext messages `side` protected, grouped: (exchange, response, message ID, SPIs).
fn sent(pair: &mut Pair, initiator: bool) -> Vec<(Header, Vec<Payload>)> {
    if initiator {
        pair.initiator
            .established_mut()
            .map(|e| e.faults.sent.clone())
            .unwrap_or_default()
    } else {
        let id = pair.gateway_sa();
        pair.responder
            .established_mut(id)
            .map(|e| e.faults.sent.clone())
            .unwrap_or_default()
    }
}

fn sk_d_pair(pair: &mut Pair) -> (SecretBytes, SecretBytes) {
    let i = pair
        .initiator
        .established_mut()
        .and_then(|e| e.current_sk_d().cloned())
        .unwrap();
    let id = pair.gateway_sa();
    let r = pair
        .responder
        .established_mut(id)
        .and_then(|e| e.current_sk_d().cloned())
        .unwrap();
    (i, r)
}

/// The key exchange data sizes of every request of `exchange` a side sent.
fn ke_sizes(messages: &[(Header, Vec<Payload>)], exchange: ExchangeType) -> Vec<usize> {
    messages
        .iter()
        .filter(|(h, _)| h.exchange_type == exchange && !h.flags.response)
        .filter_map(|(_, p)| {
            p.iter().find_map(|x| match x {
                Payload::Ke(k) => Some(k.data.len()),
                _ => None,
            })
        })
        .collect()
}

/// Hours of virtual time with short client lifetimes, in slices; returns the distinct `SK_d`
/// values seen (both sides agreeing at each slice end).
fn run_hours(pair: &mut Pair, hours: u32) -> Vec<SecretBytes> {
    let mut sk_ds = Vec::new();
    let end = pair.now + HOUR * hours;
    while pair.now < end {
        let next = pair.now + 5 * MINUTE;
        pair.run_until(next, None);
        assert!(
            failures(&pair.initiator_events).is_empty(),
            "{:?}",
            failures(&pair.initiator_events)
        );
        assert!(failures(&pair.responder_events).is_empty());
        let (i, r) = sk_d_pair(pair);
        assert_eq!(i, r, "both sides hold the same IKE SA keys");
        if sk_ds.last() != Some(&i) {
            sk_ds.push(i);
        }
    }
    sk_ds
}

fn long_run(mode: Mode, seed: u64) {
    let (client, gateway) = configs(mode, 10 * MINUTE, 30 * MINUTE, 10 * HOUR, 20 * HOUR);
    let mut pair = established_pair(seed, client, gateway);
    let sk_ds = run_hours(&mut pair, 4);
    let (ti, tr) = assert_children_agree(&pair);
    assert!(ti.rekeys.len() >= 10, "{} Child SA rekeys", ti.rekeys.len());
    assert_eq!(ti.rekeys, tr.rekeys, "both sides saw the same rekeys");
    assert_eq!(ti.up.len(), 1, "one Child SA at the end");
    assert!(ti.ike_rekeys >= 5, "{} IKE SA rekeys", ti.ike_rekeys);
    assert_eq!(ti.ike_rekeys, tr.ike_rekeys);
    let distinct: HashSet<&[u8]> = sk_ds.iter().map(SecretBytes::expose).collect();
    assert_eq!(distinct.len(), sk_ds.len(), "every IKE SA has new keys");
    assert!(
        sk_ds.len() > ti.ike_rekeys.min(6),
        "SK_d changed with each IKE rekey"
    );
    // Every rekey ran a fresh key exchange of the mode, visible in the requests' KE payloads:
    // hybrid X25519 then ML-KEM-768 in IKE_FOLLOWUP_KE, pq-only ML-KEM-768, classical X25519.
    let messages = sent(&mut pair, true);
    let create = ke_sizes(&messages, ExchangeType::CreateChildSa);
    let followup = ke_sizes(&messages, ExchangeType::IkeFollowupKe);
    assert!(create.len() >= ti.rekeys.len() + ti.ike_rekeys);
    match mode {
        Mode::Hybrid => {
            assert!(create.iter().all(|&n| n == 32), "X25519 in CREATE_CHILD_SA");
            assert_eq!(
                followup.len(),
                create.len(),
                "one IKE_FOLLOWUP_KE per rekey"
            );
            assert!(followup.iter().all(|&n| n == 1184), "ML-KEM-768 ek");
        }
        Mode::PqOnly => {
            assert!(create.iter().all(|&n| n == 1184), "ML-KEM-768 ek");
            assert!(followup.is_empty());
        }
        _ => {
            assert!(create.iter().all(|&n| n == 32));
            assert!(followup.is_empty());
        }
    }
    println!(
        "{mode:?}: {} Child SA rekeys, {} IKE SA rekeys in 4 h",
        ti.rekeys.len(),
        ti.ike_rekeys
    );
}

#[test]
fn four_hours_of_rekeys_hybrid() {
    long_run(Mode::Hybrid, 200);
}

#[test]
fn four_hours_of_rekeys_pq_only() {
    long_run(Mode::PqOnly, 201);
}

#[test]
fn four_hours_of_rekeys_classical() {
    long_run(Mode::Classical, 202);
}

#[test]
fn the_gateway_rekeys_child_and_ike_sas() {
    for (seed, mode) in [
        (210, Mode::Hybrid),
        (211, Mode::PqOnly),
        (212, Mode::Classical),
    ] {
        let (client, gateway) = configs(mode, 10 * HOUR, 20 * HOUR, 10 * MINUTE, 30 * MINUTE);
        let mut pair = established_pair(seed, client, gateway);
        let spi_i = pair.initiator.spi_i();
        run_hours(&mut pair, 2);
        let (ti, _) = assert_children_agree(&pair);
        assert!(ti.rekeys.len() >= 10, "{} rekeys", ti.rekeys.len());
        assert!(ti.ike_rekeys >= 3, "{} IKE rekeys", ti.ike_rekeys);
        // The gateway started them: its requests on the wire, and it is now the original
        // initiator of the IKE SA.
        let gateway_requests = sent(&mut pair, false)
            .iter()
            .filter(|(h, _)| h.exchange_type == ExchangeType::CreateChildSa && !h.flags.response)
            .count();
        assert!(gateway_requests >= ti.rekeys.len() + ti.ike_rekeys);
        let client_requests = sent(&mut pair, true)
            .iter()
            .filter(|(h, _)| h.exchange_type == ExchangeType::CreateChildSa && !h.flags.response)
            .count();
        assert_eq!(client_requests, 0, "the client rekeyed nothing itself");
        assert_ne!(pair.initiator.spi_i(), spi_i);
        // The client can still rekey over the IKE SA the gateway made.
        let child = pair.initiator.child_sas()[0].clone();
        pair.initiator
            .rekey_child_sa(pair.now, child.spi_i)
            .unwrap();
        pair.settle();
        let (ti, _) = assert_children_agree(&pair);
        assert_eq!(ti.rekeys.last().unwrap().0, (child.spi_i, child.spi_r));
        pair.initiator.rekey_ike_sa(pair.now);
        pair.settle();
        let (i, r) = sk_d_pair(&mut pair);
        assert_eq!(i, r);
        assert!(failures(&pair.initiator_events).is_empty());
    }
}

/// Both sides start a rekey at the same moment; returns whether the initiator's won.
fn collide(pair: &mut Pair, child: bool, initiator_first: bool) -> bool {
    let now = pair.now;
    let id = pair.gateway_sa();
    let c = pair.initiator.child_sas()[0].clone();
    let before_i = ChildTable::from_events(&pair.initiator_events).rekeys.len();
    let before_r = ChildTable::from_events(&pair.responder_events).rekeys.len();
    for initiator_side in [initiator_first, !initiator_first] {
        match (child, initiator_side) {
            (true, true) => pair.initiator.rekey_child_sa(now, c.spi_i).unwrap(),
            (true, false) => pair.responder.rekey_child_sa(now, id, c.spi_r).unwrap(),
            (false, true) => pair.initiator.rekey_ike_sa(now),
            (false, false) => pair.responder.rekey_ike_sa(now, id),
        }
    }
    pair.collect();
    assert!(
        !pair.to_responder.is_empty() && !pair.to_initiator.is_empty(),
        "both requests in flight at once"
    );
    pair.settle();
    assert!(failures(&pair.initiator_events).is_empty());
    assert!(failures(&pair.responder_events).is_empty());
    if child {
        let (ti, tr) = assert_children_agree(pair);
        assert_eq!(ti.up.len(), 1, "the redundant SA and the old one are gone");
        assert!(!ti.up.contains_key(&(c.spi_i, c.spi_r)));
        // Each side announces the peer's SA and, if it won, its own.
        let i_new = ti.rekeys.len() - before_i;
        let r_new = tr.rekeys.len() - before_r;
        assert_eq!(i_new + r_new, 3, "{i_new} + {r_new}");
        i_new == 2
    } else {
        let (i, r) = sk_d_pair(pair);
        assert_eq!(i, r, "both sides ended on the same IKE SA");
        let spis = pair.initiator.established_mut().unwrap().spis();
        assert_eq!(spis, pair.responder.established_mut(id).unwrap().spis());
        // Whoever is the original initiator of the surviving SA won.
        let i_spi = pair.initiator.spi_i();
        let initiator_won = pair
            .initiator
            .established_mut()
            .unwrap()
            .local_spis()
            .contains(&i_spi);
        // And the tunnel still works: a Child SA rekey over the survivor.
        pair.initiator.rekey_child_sa(pair.now, c.spi_i).unwrap();
        pair.settle();
        assert_children_agree(pair);
        initiator_won
    }
}

#[test]
fn child_sa_rekey_collisions_keep_one_sa_whoever_wins() {
    for (mode, base) in [(Mode::Hybrid, 300), (Mode::Classical, 320)] {
        let mut outcomes = HashSet::new();
        for seed in 0..8u64 {
            let mut pair = Pair::mode(base + seed, mode);
            pair.drive();
            pair.settle();
            outcomes.insert(collide(&mut pair, true, seed % 2 == 0));
            // A second collision on the survivor.
            outcomes.insert(collide(&mut pair, true, seed % 2 == 1));
        }
        assert_eq!(
            outcomes.len(),
            2,
            "{mode:?}: both sides won some collisions"
        );
    }
}

#[test]
fn ike_sa_rekey_collisions_keep_one_sa_whoever_wins() {
    for (mode, base) in [(Mode::Hybrid, 400), (Mode::PqOnly, 420)] {
        let mut outcomes = HashSet::new();
        for seed in 0..8u64 {
            let mut pair = Pair::mode(base + seed, mode);
            pair.drive();
            pair.settle();
            outcomes.insert(collide(&mut pair, false, seed % 2 == 0));
            // The retired SAs go once their Delete completed or they lingered.
            pair.run_until(pair.now + 2 * MINUTE, None);
            let e = pair.initiator.established_mut().unwrap();
            assert_eq!(
                e.local_spis().len(),
                1,
                "old and redundant IKE SAs are gone"
            );
        }
        assert_eq!(
            outcomes.len(),
            2,
            "{mode:?}: both sides won some collisions"
        );
    }
}

#[test]
fn rekeying_the_ike_sa_while_a_child_sa_is_rekeyed_gets_temporary_failure() {
    let mut pair = Pair::mode(500, Mode::Hybrid);
    pair.drive();
    pair.settle();
    let id = pair.gateway_sa();
    let c = pair.initiator.child_sas()[0].clone();
    pair.initiator.rekey_child_sa(pair.now, c.spi_i).unwrap();
    pair.responder.rekey_ike_sa(pair.now, id);
    pair.collect();
    pair.settle();
    let temporary = |m: &[(Header, Vec<Payload>)]| {
        m.iter().any(|(h, p)| {
            h.flags.response
                && matches!(&p[..], [Payload::Notify(n)] if n.notify_type == NotifyType::TemporaryFailure)
        })
    };
    assert!(
        temporary(&sent(&mut pair, true)),
        "the client refused the IKE rekey"
    );
    assert!(
        temporary(&sent(&mut pair, false)),
        "the gateway refused the Child SA rekey"
    );
    // Both retry after a wait and succeed.
    pair.run_until(pair.now + MINUTE, None);
    let (ti, tr) = assert_children_agree(&pair);
    assert_eq!(ti.rekeys.len(), 1);
    assert_eq!(ti.ike_rekeys, 1);
    assert_eq!(tr.ike_rekeys, 1);
    let (i, r) = sk_d_pair(&mut pair);
    assert_eq!(i, r);
}

#[test]
fn rekeys_survive_loss() {
    for seed in 0..4u64 {
        let (client, gateway) = configs(Mode::Hybrid, 10 * MINUTE, 30 * MINUTE, 15 * MINUTE, HOUR);
        let mut pair = established_pair(600 + seed, client, gateway);
        let mut r = rng(seed);
        let end = pair.now + 2 * HOUR;
        pair.run_until(end, Some((&mut r, 0.1)));
        // Quiesce without loss, then both sides agree.
        pair.run_until(pair.now + 5 * MINUTE, None);
        assert!(
            failures(&pair.initiator_events).is_empty(),
            "seed {seed}: {:?}",
            failures(&pair.initiator_events)
        );
        let (ti, _) = assert_children_agree(&pair);
        assert!(
            ti.rekeys.len() >= 8,
            "seed {seed}: {} rekeys",
            ti.rekeys.len()
        );
        assert!(ti.ike_rekeys >= 2, "seed {seed}");
        let (i, r) = sk_d_pair(&mut pair);
        assert_eq!(i, r, "seed {seed}");
    }
}

#[test]
fn dead_peer_detection_fails_the_sa_and_inbound_traffic_defers_it() {
    let mut pair = Pair::mode(700, Mode::Hybrid);
    pair.drive();
    pair.settle();
    let start = pair.now;
    // ESP keeps arriving for 100 s: no liveness check meanwhile.
    for s in (10..=100).step_by(10) {
        pair.now = start + Duration::from_secs(s);
        pair.initiator.handle_inbound_traffic(pair.now);
        pair.initiator.handle_timeout(pair.now);
        pair.collect();
        assert!(pair.to_responder.is_empty(), "no probe at {s} s");
    }
    assert_eq!(
        pair.initiator
            .poll_timeout()
            .map(|t| t.min(start + 1000 * MINUTE)),
        Some(start + Duration::from_secs(130)),
        "the next probe is 30 s after the last packet"
    );
    // Then the gateway goes silent.
    let silent_from = pair.now;
    let mut probes = 0;
    while !pair.initiator.is_failed() {
        probes += pair.to_responder.len();
        pair.to_responder.clear();
        let next = pair.initiator.poll_timeout().expect("a timer while up");
        pair.now = next;
        pair.initiator.handle_timeout(pair.now);
        pair.collect();
        assert!(pair.now - silent_from < 10 * MINUTE);
    }
    assert_eq!(probes, 6, "one probe, five retransmissions");
    assert_eq!(
        pair.initiator_events.last(),
        Some(&Event::Failed(Error::DeadPeer))
    );
    assert_eq!(
        pair.now - silent_from,
        Duration::from_secs(30 + 1 + 2 + 4 + 8 + 16 + 32)
    );
}

/// Issue 15: after a wake, one DPD right away; a gateway that answers keeps the SA, a silent
/// one fails it within the probe's deadline, not after the whole retransmission schedule.
#[test]
fn a_probe_after_wake_is_one_dpd_round_answered_or_dead_within_its_deadline() {
    let within = Duration::from_secs(3);
    let mut pair = Pair::mode(702, Mode::Hybrid);
    pair.drive();
    pair.settle();
    pair.now += Duration::from_secs(5);
    pair.initiator.probe(pair.now, within);
    pair.collect();
    assert_eq!(pair.to_responder.len(), 1, "a DPD at once, not 25 s later");
    pair.now += Duration::from_millis(20);
    pair.drive();
    pair.run_until(pair.now + 2 * within, None);
    assert!(!pair.initiator.is_failed(), "answered: the SA stays");

    let mut pair = Pair::mode(703, Mode::Hybrid);
    pair.drive();
    pair.settle();
    pair.now += Duration::from_secs(5);
    let woke = pair.now;
    pair.initiator.probe(pair.now, within);
    // ESP the socket queued while asleep, read after the wake, is no answer.
    pair.initiator
        .handle_inbound_traffic(pair.now + Duration::from_millis(1));
    while !pair.initiator.is_failed() {
        pair.collect();
        pair.to_responder.clear();
        pair.now = pair.initiator.poll_timeout().expect("a timer while up");
        pair.initiator.handle_timeout(pair.now);
        assert!(
            pair.now - woke <= within,
            "failed late: {:?}",
            pair.now - woke
        );
    }
    assert_eq!(pair.now - woke, within);
    pair.collect();
    assert_eq!(
        pair.initiator_events.last(),
        Some(&Event::Failed(Error::DeadPeer))
    );
}

#[test]
fn liveness_checks_are_answered_and_keep_the_sa_up() {
    let mut pair = Pair::mode(701, Mode::Classical);
    pair.drive();
    pair.settle();
    pair.run_until(pair.now + 10 * MINUTE, None);
    let probes = sent(&mut pair, true)
        .iter()
        .filter(|(h, p)| h.exchange_type == ExchangeType::Informational && p.is_empty())
        .count();
    assert!(probes >= 10, "{probes} empty INFORMATIONAL exchanges");
    assert!(failures(&pair.initiator_events).is_empty());
}

#[test]
fn deleting_the_ike_sa_closes_both_sides() {
    // The gateway deletes it.
    let mut pair = Pair::mode(800, Mode::Hybrid);
    pair.drive();
    pair.settle();
    let id = pair.gateway_sa();
    pair.responder.close(pair.now, id);
    pair.collect();
    pair.settle();
    assert_eq!(pair.initiator_events.last(), Some(&Event::Closed));
    assert!(pair.initiator.is_closed());
    assert!(pair.initiator.poll_timeout().is_none());
    assert_eq!(pair.responder_events.last(), Some(&Event::Closed));
    assert_eq!(pair.responder.sa_count(), 0);
    // The client deletes it.
    let mut pair = Pair::mode(801, Mode::PqOnly);
    pair.drive();
    pair.settle();
    pair.initiator.close(pair.now);
    pair.collect();
    pair.settle();
    assert_eq!(pair.initiator_events.last(), Some(&Event::Closed));
    assert_eq!(pair.responder_events.last(), Some(&Event::Closed));
    assert_eq!(pair.responder.sa_count(), 0);
}

#[test]
fn deleting_a_child_sa_is_answered_with_the_other_half() {
    let mut pair = Pair::mode(802, Mode::Classical);
    pair.drive();
    pair.settle();
    let c = pair.initiator.child_sas()[0].clone();
    pair.initiator.rekey_child_sa(pair.now, c.spi_i).unwrap();
    pair.settle();
    assert!(pair.initiator_events.iter().any(|e| matches!(
        e,
        Event::ChildSaRekeyed { old, .. } if *old == c.id()
    )));
    // The old SA was deleted by the client with its half; the gateway answered with its own.
    let answered = sent(&mut pair, false)
        .into_iter()
        .filter(|(h, p)| {
            h.flags.response
                && matches!(&p[..], [Payload::Delete(d)] if d.spis == [c.spi_r.to_be_bytes()])
        })
        .count();
    assert_eq!(answered, 1, "the gateway's Delete names its inbound SPI");
    assert!(
        pair.responder_events
            .contains(&Event::ChildSaDeleted(c.id()))
    );
    assert_children_agree(&pair);
}

#[test]
fn the_last_ike_followup_ke_response_carries_no_link() {
    // Two additional key exchanges, so one IKE_FOLLOWUP_KE response links on and one ends.
    let policy = CryptoPolicy {
        addke: vec![KeyExchangeMethod::MlKem768, KeyExchangeMethod::MlKem512],
        ..CryptoPolicy::default()
    };
    let mut client = client_config(Mode::Hybrid);
    client.policy = policy.clone();
    let mut pair = established_pair(900, client, gateway_config(vec![policy]));
    let c = pair.initiator.child_sas()[0].clone();
    pair.initiator.rekey_child_sa(pair.now, c.spi_i).unwrap();
    pair.settle();
    pair.initiator.rekey_ike_sa(pair.now);
    pair.settle();
    let (ti, _) = assert_children_agree(&pair);
    assert_eq!(ti.rekeys.len(), 1);
    assert_eq!(ti.ike_rekeys, 1);
    let links = |p: &[Payload]| {
        p.iter()
            .filter(|x| matches!(x, Payload::Notify(n) if n.notify_type == NotifyType::AdditionalKeyExchange))
            .count()
    };
    // The gateway's responses, per rekey: CREATE_CHILD_SA (link), IKE_FOLLOWUP_KE (link),
    // IKE_FOLLOWUP_KE (none).
    let responses: Vec<(ExchangeType, usize)> = sent(&mut pair, false)
        .iter()
        .filter(|(h, _)| {
            h.flags.response
                && matches!(
                    h.exchange_type,
                    ExchangeType::CreateChildSa | ExchangeType::IkeFollowupKe
                )
        })
        .map(|(h, p)| (h.exchange_type, links(p)))
        .collect();
    let one = [
        (ExchangeType::CreateChildSa, 1),
        (ExchangeType::IkeFollowupKe, 1),
        (ExchangeType::IkeFollowupKe, 0),
    ];
    assert_eq!(responses, [one, one].concat());
    // Every IKE_FOLLOWUP_KE request carries the link it was given, with the right method.
    let requests: Vec<usize> = sent(&mut pair, true)
        .iter()
        .filter(|(h, _)| h.exchange_type == ExchangeType::IkeFollowupKe && !h.flags.response)
        .map(|(_, p)| links(p))
        .collect();
    assert_eq!(requests, [1, 1, 1, 1]);
    let kes = ke_sizes(&sent(&mut pair, true), ExchangeType::IkeFollowupKe);
    assert_eq!(kes, [1184, 800, 1184, 800], "ML-KEM-768, then ML-KEM-512");
}

#[test]
fn state_not_found_voids_the_exchange_and_it_is_retried() {
    let mut pair = Pair::mode(910, Mode::Hybrid);
    pair.drive();
    pair.settle();
    let id = pair.gateway_sa();
    let c = pair.initiator.child_sas()[0].clone();
    pair.responder
        .established_mut(id)
        .unwrap()
        .faults
        .forget_followup_state = true;
    pair.initiator.rekey_child_sa(pair.now, c.spi_i).unwrap();
    pair.settle();
    let refused = sent(&mut pair, false).iter().any(|(h, p)| {
        h.exchange_type == ExchangeType::IkeFollowupKe
            && matches!(&p[..], [Payload::Notify(n)] if n.notify_type == NotifyType::StateNotFound)
    });
    assert!(refused, "the gateway answered STATE_NOT_FOUND");
    assert!(
        ChildTable::from_events(&pair.initiator_events)
            .rekeys
            .is_empty()
    );
    // The client waits, then runs the whole rekey again.
    pair.run_until(pair.now + Duration::from_secs(10), None);
    let (ti, _) = assert_children_agree(&pair);
    assert_eq!(ti.rekeys.len(), 1);
    assert!(failures(&pair.initiator_events).is_empty());
}

#[test]
fn invalid_ke_payload_in_create_child_sa_is_followed() {
    let mut client = client_config(Mode::Hybrid);
    client.policy.ke = vec![KeyExchangeMethod::Curve25519, KeyExchangeMethod::Ecp384];
    let gateway_policy = CryptoPolicy {
        ke: vec![KeyExchangeMethod::Curve25519],
        ..CryptoPolicy::default()
    };
    let mut pair = established_pair(920, client, gateway_config(vec![gateway_policy]));
    let c = pair.initiator.child_sas()[0].clone();
    // The client sends KEi for P-384, which the gateway does not allow.
    pair.initiator
        .established_mut()
        .unwrap()
        .faults
        .child_rekey_ke = Some(KeyExchangeMethod::Ecp384);
    pair.initiator.rekey_child_sa(pair.now, c.spi_i).unwrap();
    pair.settle();
    let answer = sent(&mut pair, false)
        .into_iter()
        .find_map(|(h, p)| match &p[..] {
            [Payload::Notify(n)] if h.exchange_type == ExchangeType::CreateChildSa => {
                n.invalid_ke_payload_method()
            }
            _ => None,
        });
    assert_eq!(answer, Some(KeyExchangeMethod::Curve25519));
    let kes = ke_sizes(&sent(&mut pair, true), ExchangeType::CreateChildSa);
    assert_eq!(kes, [96, 32], "P-384, then X25519 as asked");
    let (ti, _) = assert_children_agree(&pair);
    assert_eq!(ti.rekeys.len(), 1);
}

#[test]
fn message_ids_count_up_independently_in_both_directions() {
    let (client, gateway) = configs(Mode::PqOnly, 10 * MINUTE, 10 * HOUR, 12 * MINUTE, 10 * HOUR);
    let mut pair = established_pair(930, client, gateway);
    pair.run_until(pair.now + HOUR, None);
    let mut checked = 0;
    for initiator in [true, false] {
        let messages = sent(&mut pair, initiator);
        let sas: BTreeSet<(IkeSpi, IkeSpi)> =
            messages.iter().map(|(h, _)| (h.spi_i, h.spi_r)).collect();
        for spis in sas {
            for response in [false, true] {
                let ids: Vec<u32> = messages
                    .iter()
                    .filter(|(h, _)| (h.spi_i, h.spi_r) == spis && h.flags.response == response)
                    .map(|(h, _)| h.message_id.0)
                    .collect();
                assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
                checked += ids.len();
            }
        }
    }
    assert!(checked > 50, "{checked} messages checked");
}

/// A gateway that refuses every rekey: the Child SA dies at its hard lifetime (deleted on both
/// sides, the tunnel's driver then ends it) and the IKE SA fails at its own (RFC 7296 §2.8).
#[test]
fn refused_rekeys_end_at_the_hard_lifetimes() {
    let (client, gateway) = configs(Mode::Hybrid, 10 * MINUTE, HOUR, 10 * HOUR, 10 * HOUR);
    let mut pair = established_pair(940, client, gateway);
    let id = pair.gateway_sa();
    let first = pair.initiator.child_sas()[0].clone();
    pair.responder
        .established_mut(id)
        .unwrap()
        .faults
        .refuse_create_child_sa = true;
    let start = pair.now;

    // Soft lifetime (10 min minus jitter): refused. Hard lifetime (11 min): gone.
    pair.run_until(start + 10 * MINUTE + MINUTE / 2, None);
    assert!(
        pair.initiator_events.iter().any(|e| matches!(
            e,
            Event::ChildSaFailed(Error::NotifyReceived(NotifyType::NoProposalChosen))
        )),
        "{:?}",
        pair.initiator_events
    );
    assert_eq!(
        pair.initiator.child_sas().len(),
        1,
        "still usable before the hard lifetime"
    );
    pair.run_until(start + 11 * MINUTE + MINUTE / 2, None);
    let deleted = |events: &[Event]| {
        events
            .iter()
            .any(|e| matches!(e, Event::ChildSaDeleted(id) if *id == first.id()))
    };
    assert!(deleted(&pair.initiator_events), "client deleted it");
    assert!(
        deleted(&pair.responder_events),
        "the gateway heard the Delete"
    );
    assert!(pair.initiator.child_sas().is_empty());
    assert!(pair.responder.child_sas(id).is_empty());
    // A new Child SA in its place is refused as well: an IKE SA without one carries nothing,
    // so the client deletes it.
    assert!(
        pair.initiator_events.iter().any(|e| matches!(
            e,
            Event::ChildSaFailed(Error::NotifyReceived(NotifyType::NoProposalChosen))
        )),
        "{:?}",
        pair.initiator_events
    );
    assert!(pair.initiator.is_closed(), "{:?}", pair.initiator_events);
    assert_eq!(pair.responder.sa_count(), 0);

    // The IKE SA: refused at 1 h minus jitter, failed at its hard lifetime of 66 min.
    let (client, gateway) = configs(Mode::Hybrid, 10 * HOUR, HOUR, 20 * HOUR, 10 * HOUR);
    let mut pair = established_pair(941, client, gateway);
    let id = pair.gateway_sa();
    pair.responder
        .established_mut(id)
        .unwrap()
        .faults
        .refuse_create_child_sa = true;
    let start = pair.now;
    pair.run_until(start + 65 * MINUTE, None);
    assert!(!pair.initiator.is_failed());
    pair.run_until(start + 67 * MINUTE, None);
    assert!(
        pair.initiator_events
            .iter()
            .any(|e| matches!(e, Event::Failed(Error::IkeSaExpired))),
        "{:?}",
        failures(&pair.initiator_events)
    );
}

/// The Child SA's hard lifetime passes while its rekey is still being retransmitted: the SA
/// stays until the rekey completes, so the tunnel never goes without one.
#[test]
fn the_hard_lifetime_waits_for_a_rekey_in_flight() {
    let (mut client, gateway) = configs(Mode::Hybrid, 10 * MINUTE, 10 * HOUR, 10 * HOUR, 10 * HOUR);
    let second = Duration::from_secs(1);
    client.child_lifetime = Lifetime {
        rekey: 10 * MINUTE,
        jitter: Duration::ZERO,
        hard: 10 * MINUTE + 20 * second,
    };
    let mut pair = established_pair(950, client, gateway);
    let first = pair.initiator.child_sas()[0].clone();
    let start = pair.now;
    pair.run_until(start + 10 * MINUTE - second, None);
    // The client's requests vanish for 30 s: transmissions at +0, +1, +3, +7 and +15 s are
    // lost, the one at +31 s gets through, 11 s after the hard lifetime.
    let black_hole_until = start + 10 * MINUTE + 30 * second;
    let mut timers = 0;
    while let Some(t) = pair
        .initiator
        .poll_timeout()
        .filter(|&t| t < black_hole_until)
    {
        // A timer that stays due after firing would spin the driver.
        timers += 1;
        assert!(
            timers < 100,
            "the client's timer does not move on from {t:?}"
        );
        pair.now = pair.now.max(t);
        pair.initiator.handle_timeout(pair.now);
        pair.responder.handle_timeout(pair.now);
        pair.collect();
        pair.to_responder.clear();
    }
    assert_eq!(
        pair.initiator.child_sas().len(),
        1,
        "the SA outlived its hard lifetime while the rekey was in flight"
    );
    pair.run_until(start + 12 * MINUTE, None);
    let position = |f: &dyn Fn(&Event) -> bool| pair.initiator_events.iter().position(f);
    let rekeyed =
        position(&|e| matches!(e, Event::ChildSaRekeyed { old, .. } if old.spi_i == first.spi_i))
            .expect("the rekey completed");
    let deleted = position(&|e| matches!(e, Event::ChildSaDeleted(id) if id.spi_i == first.spi_i))
        .expect("the old SA was deleted");
    assert!(rekeyed < deleted, "{:?}", pair.initiator_events);
    assert!(failures(&pair.initiator_events).is_empty());
    assert_children_agree(&pair);
}

/// Gateways configured without PFS (strongSwan's `esp_proposals = aes256gcm16`) or with only a
/// classical group rekey Child SAs with less than every key exchange: accepted unless PFS is
/// required, with KEYMAT from `SK_d` (and the one KE), and no IKE_FOLLOWUP_KE.
#[test]
fn child_sa_rekeys_with_less_pfs_are_accepted_unless_required() {
    use crate::ike::Pfs;
    for (seed, level, ke_sizes_expected) in
        [(960, Pfs::None, &[][..]), (961, Pfs::KeOnly, &[32, 32][..])]
    {
        let mut pair = established_pair(
            seed,
            client_config(Mode::Hybrid),
            gateway_config(vec![CryptoPolicy::default()]),
        );
        let c = pair.initiator.child_sas()[0].clone();
        pair.initiator
            .established_mut()
            .unwrap()
            .faults
            .child_rekey_offer = Some(level);
        pair.initiator.rekey_child_sa(pair.now, c.spi_i).unwrap();
        pair.settle();
        let (ti, _) = assert_children_agree(&pair);
        assert_eq!(ti.rekeys.len(), 1, "{level:?}");
        assert!(failures(&pair.initiator_events).is_empty(), "{level:?}");
        let mut kes = ke_sizes(&sent(&mut pair, true), ExchangeType::CreateChildSa);
        // KEr: in the gateway's CREATE_CHILD_SA responses.
        kes.extend(sent(&mut pair, false).iter().filter_map(|(h, p)| {
            (h.exchange_type == ExchangeType::CreateChildSa && h.flags.response)
                .then(|| {
                    p.iter().find_map(|x| match x {
                        Payload::Ke(k) => Some(k.data.len()),
                        _ => None,
                    })
                })
                .flatten()
        }));
        let expected: Vec<usize> = match level {
            // The client sends KEi only with an offer that has a KE.
            Pfs::None => Vec::new(),
            _ => ke_sizes_expected.to_vec(),
        };
        assert_eq!(kes, expected, "{level:?}: KEi and KEr");
        let followups = pair
            .log
            .iter()
            .filter(|(_, d)| {
                Header::parse(d).is_ok_and(|h| h.exchange_type == ExchangeType::IkeFollowupKe)
            })
            .count();
        assert_eq!(followups, 0, "{level:?}: no ML-KEM round");
    }

    // A gateway that requires PFS refuses an offer without it.
    let mut gateway = gateway_config(vec![CryptoPolicy::default()]);
    gateway.require_child_pfs = true;
    let mut pair = established_pair(962, client_config(Mode::Hybrid), gateway);
    let c = pair.initiator.child_sas()[0].clone();
    pair.initiator
        .established_mut()
        .unwrap()
        .faults
        .child_rekey_offer = Some(Pfs::None);
    pair.initiator.rekey_child_sa(pair.now, c.spi_i).unwrap();
    pair.settle();
    assert!(pair.initiator_events.iter().any(|e| matches!(
        e,
        Event::ChildSaFailed(Error::NotifyReceived(NotifyType::NoProposalChosen))
    )));
}
