//! Initiator CPU per full handshake, per mode: IKE_SA_INIT (+ IKE_INTERMEDIATE) + IKE_AUTH
//! between our initiator and our responder in memory.
//!
//! Only the initiator's calls are timed (`iter_custom` sums them); the responder's work runs
//! in the same loop but outside the measured spans, so the figure is what a client spends.
//! Run: `cargo bench -p pqvpn-core --bench ike_handshake`.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "benchmark harness: a broken handshake must abort the run"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pqvpn_core::crypto::{CryptoProvider, RustCrypto, SecretBytes};
use pqvpn_core::ike::{
    CryptoPolicy, Initiator, InitiatorConfig, Mode, NAT_T_PORT, Responder, ResponderConfig,
};
use pqvpn_core::wire::{IkeId, KeyExchangeMethod};

const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 40_000);
const GATEWAY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 500);

/// One handshake; returns the time spent inside initiator calls.
fn handshake(
    provider: &Arc<dyn CryptoProvider>,
    client: &InitiatorConfig,
    gateway: &ResponderConfig,
) -> Duration {
    let mut buf = vec![0u8; 65_536];
    let now = Instant::now();
    let mut responder = Responder::new(provider.clone(), gateway.clone()).expect("responder");
    let mut spent = Duration::ZERO;
    let t = Instant::now();
    let mut initiator =
        Initiator::new(provider.clone(), client.clone(), now, CLIENT, GATEWAY).expect("initiator");
    spent += t.elapsed();
    for _ in 0..16 {
        let mut to_responder = Vec::new();
        let t = Instant::now();
        while let Some(tx) = initiator.poll_transmit(now, &mut buf) {
            let skip = if tx.nat_t { 4 } else { 0 };
            to_responder.push((tx.destination, buf[skip..tx.size].to_vec()));
        }
        spent += t.elapsed();
        let mut to_initiator = Vec::new();
        for (to, bytes) in to_responder {
            let from = if to.port() == NAT_T_PORT {
                SocketAddr::new(CLIENT.ip(), 4500)
            } else {
                CLIENT
            };
            responder.handle_datagram(now, to, from, &bytes);
        }
        while let Some(tx) = responder.poll_transmit(now, &mut buf) {
            let skip = if tx.nat_t { 4 } else { 0 };
            to_initiator.push(buf[skip..tx.size].to_vec());
        }
        let t = Instant::now();
        for bytes in to_initiator {
            initiator.handle_datagram(now, GATEWAY, &bytes);
        }
        let done = initiator.is_established();
        spent += t.elapsed();
        if done {
            return spent;
        }
    }
    panic!("handshake did not complete");
}

fn bench(c: &mut Criterion) {
    let provider: Arc<dyn CryptoProvider> = Arc::new(RustCrypto::new());
    let psk = SecretBytes::from_slice(b"bench-psk");
    let cases = [
        (
            "hybrid_x25519_mlkem768",
            CryptoPolicy::default(),
            CryptoPolicy::default(),
        ),
        (
            "hybrid_p384_mlkem768",
            CryptoPolicy {
                ke: vec![KeyExchangeMethod::Ecp384],
                ..CryptoPolicy::default()
            },
            CryptoPolicy {
                ke: vec![KeyExchangeMethod::Ecp384],
                ..CryptoPolicy::default()
            },
        ),
        (
            "pq_only_mlkem768",
            CryptoPolicy::for_mode(Mode::PqOnly),
            CryptoPolicy::for_mode(Mode::PqOnly),
        ),
        (
            "classical_x25519",
            CryptoPolicy::classical(),
            CryptoPolicy::classical(),
        ),
    ];
    let mut group = c.benchmark_group("ike_handshake_initiator_cpu");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));
    for (name, client_policy, gateway_policy) in cases {
        let mut client = InitiatorConfig::new(
            client_policy.mode,
            psk.clone(),
            IkeId::Fqdn("client.bench".into()),
            None,
        );
        client.policy = client_policy;
        let mut gateway = ResponderConfig::new(
            vec![gateway_policy],
            psk.clone(),
            IkeId::Fqdn("gw.bench".into()),
        );
        gateway.pool_v4 = Some((Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 255, 254)));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| handshake(&provider, &client, &gateway))
                    .sum()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
