//! Security review finding 5 (half-open DoS) and 7 (one PSK for all): what an IKE_SA_INIT
//! flood can make the gateway hold or compute, and that each client authenticates with its own
//! key.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pair::{CLIENT, GATEWAY, Pair, client_config, gateway_config};
use crate::crypto::{DeterministicProvider, SecretBytes};
use crate::ike::{
    CryptoPolicy, Error, Event, Initiator, MAX_IKE_SA_INIT, Mode, Responder, ResponderConfig,
};
use crate::wire::{EspSpi, ExchangeType, Header, IkeId, KeyExchangeMethod, NotifyType};

fn attacker(i: u32) -> SocketAddr {
    let [_, b, c, d] = i.to_be_bytes();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(100, b, c, d)), 500)
}

fn responder(config: ResponderConfig) -> Responder {
    Responder::new(Arc::new(DeterministicProvider::new(77)), config).unwrap()
}

/// What the responder sent, as (destination, IKE octets).
fn sent(responder: &mut Responder, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::new();
    while let Some(t) = responder.poll_transmit(now, &mut buf) {
        let skip = if t.nat_t { 4 } else { 0 };
        out.push((t.destination, buf[skip..t.size].to_vec()));
    }
    out
}

/// The first IKE_SA_INIT of a fresh hybrid initiator.
fn sa_init(seed: u64, now: Instant) -> Vec<u8> {
    let mut i = initiator(seed, client_config(Mode::Hybrid), CLIENT, now);
    let mut buf = vec![0u8; 65_536];
    let t = i.poll_transmit(now, &mut buf).unwrap();
    buf[..t.size].to_vec()
}

fn initiator(
    seed: u64,
    config: crate::ike::InitiatorConfig,
    from: SocketAddr,
    now: Instant,
) -> Initiator {
    Initiator::new(
        Arc::new(DeterministicProvider::new(seed)),
        config,
        now,
        from,
        GATEWAY,
    )
    .unwrap()
}

/// Runs an initiator at `from` through IKE_SA_INIT only, as a flooder that answers COOKIE and
/// INVALID_KE_PAYLOAD but never authenticates. Returns whether the gateway answered with its
/// own SA (a half-open SA now exists).
fn half_open_from(responder: &mut Responder, seed: u64, from: SocketAddr, now: Instant) -> bool {
    let mut i = initiator(seed, client_config(Mode::Hybrid), from, now);
    let mut buf = vec![0u8; 65_536];
    for _ in 0..4 {
        let Some(t) = i.poll_transmit(now, &mut buf) else {
            return false;
        };
        let skip = if t.nat_t { 4 } else { 0 };
        let bytes = buf[skip..t.size].to_vec();
        if Header::parse(&bytes).unwrap().exchange_type != ExchangeType::IkeSaInit {
            return true;
        }
        responder.handle_datagram(now, GATEWAY, from, &bytes);
        for (to, reply) in sent(responder, now) {
            assert_eq!(to, from);
            i.handle_datagram(now, GATEWAY, &reply);
        }
    }
    false
}

#[test]
fn sa_init_flood_from_one_cookie_echoing_address_holds_only_its_share() {
    let now = Instant::now();
    let config = gateway_config(vec![CryptoPolicy::default()]);
    let per_ip = config.half_open_per_ip;
    let mut r = responder(config);
    let flooder = attacker(1);
    let opened = (0..100)
        .filter(|&seed| half_open_from(&mut r, 1000 + seed, flooder, now))
        .count();
    assert_eq!(opened, per_ip);
    assert_eq!(r.sa_count(), per_ip);
    let stats = r.stats();
    assert_eq!(stats.half_open, per_ip);
    assert_eq!(stats.dropped_per_ip, 100 - per_ip as u64);
    // The COOKIE came into play from the third half-open SA of that address on.
    assert!(stats.cookies_sent >= 100 - 3, "{stats:?}");
    // An honest client elsewhere is not held back.
    assert!(half_open_from(&mut r, 7, attacker(2), now));
}

#[test]
fn spoofed_sa_init_flood_is_held_at_the_cookie_threshold() {
    let now = Instant::now();
    let config = gateway_config(vec![CryptoPolicy::default()]);
    let threshold = config.cookie_threshold;
    let mut r = responder(config);
    let request = sa_init(5, now);
    // Spoofed sources never see the COOKIE, so they cannot echo it.
    for i in 0..1000 {
        r.handle_datagram(now, GATEWAY, attacker(i), &request);
        for (_, reply) in sent(&mut r, now) {
            let _ = reply;
        }
    }
    assert_eq!(r.sa_count(), threshold);
    assert_eq!(r.stats().cookies_sent, 1000 - threshold as u64);
    // A real client answers the COOKIE and gets through.
    assert!(half_open_from(&mut r, 8, attacker(5000), now));
}

#[test]
fn half_open_limit_caps_cookie_proven_sources_too() {
    let now = Instant::now();
    let mut config = gateway_config(vec![CryptoPolicy::default()]);
    config.half_open_limit = 10;
    let mut r = responder(config);
    let opened = (0..25)
        .filter(|&i| half_open_from(&mut r, 2000 + u64::from(i), attacker(i), now))
        .count();
    assert_eq!(opened, 10);
    assert_eq!(r.stats().dropped_limit, 15);
}

#[test]
fn half_open_counts_are_released_on_expiry_and_on_authentication() {
    let mut now = Instant::now();
    let config = gateway_config(vec![CryptoPolicy::default()]);
    let per_ip = config.half_open_per_ip;
    let mut r = responder(config);
    for seed in 0..per_ip as u64 {
        assert!(half_open_from(&mut r, 3000 + seed, attacker(1), now));
    }
    assert!(!half_open_from(&mut r, 3999, attacker(1), now));
    // The index names the first expiry; at it every half-open SA goes, with its count.
    let expiry = r.poll_timeout().unwrap();
    assert_eq!(expiry, now + Duration::from_secs(30));
    now = expiry;
    r.handle_timeout(now);
    assert_eq!(r.sa_count(), 0);
    assert_eq!(r.stats().half_open, 0);
    assert_eq!(r.poll_timeout(), None);
    assert!(half_open_from(&mut r, 4000, attacker(1), now));

    // A completed handshake leaves the half-open count too.
    let mut pair = Pair::mode(9, Mode::Hybrid);
    pair.drive();
    assert!(pair.initiator.is_established());
    assert_eq!(pair.responder.stats().half_open, 0);
}

#[test]
fn oversized_sa_init_is_dropped_unanswered() {
    let now = Instant::now();
    let mut r = responder(gateway_config(vec![CryptoPolicy::default()]));
    let mut request = sa_init(6, now);
    // A Vendor ID payload makes it larger than the limit (still a well-formed message).
    let pad = MAX_IKE_SA_INIT + 1 - request.len() - 4;
    let first = request[16];
    request[16] = 43; // Vendor ID goes first
    let mut vid = vec![first, 0];
    vid.extend_from_slice(&u16::try_from(4 + pad).unwrap().to_be_bytes());
    vid.extend(core::iter::repeat_n(0x41, pad));
    request.splice(28..28, vid);
    let len = u32::try_from(request.len()).unwrap();
    request[24..28].copy_from_slice(&len.to_be_bytes());
    assert_eq!(request.len(), MAX_IKE_SA_INIT + 1);
    r.handle_datagram(now, GATEWAY, CLIENT, &request);
    assert!(sent(&mut r, now).is_empty());
    assert_eq!(r.sa_count(), 0);
    assert_eq!(r.stats().dropped_oversized, 1);
}

#[test]
fn retransmitted_sa_init_is_answered_only_for_identical_octets_and_rate_limited() {
    let now = Instant::now();
    let mut r = responder(gateway_config(vec![CryptoPolicy::default()]));
    let request = sa_init(10, now);
    r.handle_datagram(now, GATEWAY, CLIENT, &request);
    assert_eq!(sent(&mut r, now).len(), 1);
    // Same SPIi and address, other octets: a forgery, nothing reflected.
    let mut forged = request.clone();
    *forged.last_mut().unwrap() ^= 1;
    r.handle_datagram(now, GATEWAY, CLIENT, &forged);
    assert!(sent(&mut r, now).is_empty());
    // The real retransmission is answered, then not again within the interval.
    let later = now + Duration::from_secs(1);
    r.handle_datagram(later, GATEWAY, CLIENT, &request);
    assert_eq!(sent(&mut r, later).len(), 1);
    r.handle_datagram(later, GATEWAY, CLIENT, &request);
    assert!(sent(&mut r, later).is_empty());
    assert_eq!(r.sa_count(), 1);
}

#[test]
fn p384_under_load_is_asked_for_x25519() {
    let mut client = client_config(Mode::Hybrid);
    client.policy.ke = vec![KeyExchangeMethod::Ecp384, KeyExchangeMethod::Curve25519];
    let mut gateway = gateway_config(vec![CryptoPolicy::default()]);
    gateway.cookie_threshold = 0; // under load from the first request on
    let mut pair = Pair::new(11, client.clone(), gateway);
    pair.drive();
    assert!(
        pair.initiator.is_established(),
        "{:?}",
        pair.initiator_events
    );
    let suite = pair.initiator.suite().unwrap();
    assert_eq!(suite.ke, KeyExchangeMethod::Curve25519);
    assert_eq!(pair.responder.stats().cheaper_ke_requested, 1);

    // Not under load, the initiator's P-384 is taken as it is.
    let mut pair = Pair::new(11, client, gateway_config(vec![CryptoPolicy::default()]));
    pair.drive();
    assert_eq!(
        pair.initiator.suite().unwrap().ke,
        KeyExchangeMethod::Ecp384
    );
}

/// A gateway with one key per client and no group key.
fn per_client_gateway() -> ResponderConfig {
    let mut gateway = gateway_config(vec![CryptoPolicy::default()]);
    gateway.group_psk = None;
    gateway.client_psks = HashMap::from([
        (
            IkeId::Fqdn("alice.test".into()),
            SecretBytes::from_slice(b"alice-key-0123456789-abcdef"),
        ),
        (
            IkeId::Fqdn("bob.test".into()),
            SecretBytes::from_slice(b"bob-key-0123456789-abcdefgh"),
        ),
    ]);
    gateway
}

fn client(id: &str, psk: &[u8]) -> crate::ike::InitiatorConfig {
    let mut c = client_config(Mode::Hybrid);
    c.local_id = IkeId::Fqdn(id.into());
    c.psk = SecretBytes::from_slice(psk);
    c
}

#[test]
fn each_client_authenticates_with_its_own_psk() {
    let mut pair = Pair::new(
        12,
        client("alice.test", b"alice-key-0123456789-abcdef"),
        per_client_gateway(),
    );
    pair.drive();
    assert!(
        pair.initiator.is_established(),
        "{:?}",
        pair.initiator_events
    );

    // Bob holding Alice's key, and an IDi the gateway has no key for, are refused.
    for (id, psk) in [
        ("bob.test", &b"alice-key-0123456789-abcdef"[..]),
        ("mallory.test", b"alice-key-0123456789-abcdef"),
    ] {
        let mut pair = Pair::new(13, client(id, psk), per_client_gateway());
        pair.drive();
        assert!(!pair.initiator.is_established());
        assert!(
            pair.initiator_events.iter().any(|e| matches!(
                e,
                Event::Failed(Error::NotifyReceived(NotifyType::AuthenticationFailed))
            )),
            "{id}: {:?}",
            pair.initiator_events
        );
    }
}

#[test]
fn the_per_address_count_is_by_ip_not_port() {
    // The per-address count is by IP: moving to another source port does not escape it.
    let now = Instant::now();
    let config = gateway_config(vec![CryptoPolicy::default()]);
    let per_ip = config.half_open_per_ip;
    let mut r = responder(config);
    let opened = (0..20u16)
        .filter(|&p| {
            let from = SocketAddr::new(attacker(3).ip(), 10_000 + p);
            half_open_from(&mut r, 5000 + u64::from(p), from, now)
        })
        .count();
    assert_eq!(opened, per_ip);
}

/// Security review L4: an inbound ESP SPI names one SA; a random draw that repeats one in use
/// is drawn again.
#[test]
fn esp_spi_collisions_are_drawn_again() {
    const TAKEN: u32 = 0x1234_5678;
    const NEXT: u32 = 0x0bad_cafe;
    let mut pair = Pair::mode(15, Mode::Hybrid);
    pair.responder = Responder::new(
        Arc::new(DeterministicProvider::with_scripted_spis(
            16,
            // The first client's SPI, then the rekey jitter draws of its SAs (two) and the
            // second client's draws: TAKEN again, then NEXT.
            vec![TAKEN, TAKEN, TAKEN, TAKEN, NEXT],
        )),
        gateway_config(vec![CryptoPolicy::default()]),
    )
    .unwrap();
    pair.drive();
    pair.settle();
    let first = pair.initiator.child_sas()[0].spi_r;
    assert_eq!(first, EspSpi(TAKEN));
    // A second client: the gateway's next draw repeats the first client's SPI.
    pair.initiator = initiator(17, client_config(Mode::Hybrid), CLIENT, pair.now);
    pair.initiator_events.clear();
    pair.collect();
    pair.drive();
    pair.settle();
    let second = pair.initiator.child_sas()[0].spi_r;
    assert_eq!(second, EspSpi(NEXT));
    assert_eq!(pair.responder.established_ids().len(), 2);
}
