//! ESP seal+open throughput next to the raw AEAD of the same backend on same-sized buffers.
//!
//! `cargo bench -p pqvpn-core --bench esp`. Per cipher and inner packet size:
//! - `esp`: [`OutboundSa::seal`] into a datagram buffer, then [`InboundSa::open`] into a TUN
//!   buffer (one copy each way, the plain API);
//! - `esp_in_place`: [`OutboundSa::seal_in_place`] then [`InboundSa::open_in_place`] on one
//!   buffer (the zero-copy API);
//! - `raw_aead`: [`AeadKey::seal`] then [`AeadKey::open`] on a buffer of the inner size with an
//!   8-octet AAD and a fresh IV per packet: the floor ESP framing is measured against;
//! - `raw_aead_ct_len`: the same on a buffer of the ESP ciphertext length (inner packet,
//!   padding, Pad Length, Next Header), which separates the AEAD's cost for the 2 to 5 extra
//!   octets from the framing's own cost.
//!
//! Throughput counts inner packet octets in both cases. Results: `docs/benchmarks.md`.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "benchmark harness: fixed, valid inputs"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pqvpn_core::crypto::{AeadAlgorithm, AeadKey, RustCrypto, SecretBytes, TAG_LEN};
use pqvpn_core::esp::{
    EspSpi, Inbound, InboundSa, OutboundSa, PAYLOAD_OFFSET, SaConfig, sealed_len,
};

const SIZES: [usize; 4] = [64, 512, 1400, 8000];
const SPI: EspSpi = EspSpi(0x0102_0304);

/// An IPv4 packet of `len` octets whose Total Length field matches.
fn ipv4(len: usize) -> Vec<u8> {
    let mut p = vec![0x5a; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    p
}

fn sa_pair(algorithm: AeadAlgorithm) -> (OutboundSa, InboundSa) {
    let provider = RustCrypto::new();
    let config = SaConfig::new(algorithm);
    let keymat = SecretBytes::new(vec![0x42; algorithm.keymat_len()]);
    (
        OutboundSa::new(&provider, &config, SPI, &keymat).unwrap(),
        InboundSa::new(&provider, &config, SPI, &keymat).unwrap(),
    )
}

fn bench_esp(c: &mut Criterion) {
    for algorithm in [AeadAlgorithm::Aes256Gcm16, AeadAlgorithm::ChaCha20Poly1305] {
        let mut group = c.benchmark_group(format!("esp_seal_open/{algorithm}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let packet = ipv4(size);

            let (mut tx, mut rx) = sa_pair(algorithm);
            let mut datagram = vec![0u8; sealed_len(size)];
            let mut tun = vec![0u8; sealed_len(size)];
            group.bench_with_input(BenchmarkId::new("esp", size), &packet, |b, packet| {
                b.iter(|| {
                    let n = tx.seal(black_box(packet), &mut datagram).unwrap();
                    match rx.open(black_box(&datagram[..n]), &mut tun).unwrap() {
                        Inbound::Ipv4(p) => black_box(p.len()),
                        _ => unreachable!(),
                    }
                });
            });

            let (mut tx, mut rx) = sa_pair(algorithm);
            let mut buf = vec![0u8; sealed_len(size)];
            buf[PAYLOAD_OFFSET..][..size].copy_from_slice(&packet);
            group.bench_function(BenchmarkId::new("esp_in_place", size), |b| {
                b.iter(|| {
                    // Opening leaves the inner packet at PAYLOAD_OFFSET again.
                    let n = tx.seal_in_place(black_box(&mut buf), size).unwrap();
                    match rx.open_in_place(black_box(&mut buf[..n])).unwrap() {
                        Inbound::Ipv4(p) => black_box(p.len()),
                        _ => unreachable!(),
                    }
                });
            });

            let key = AeadKey::new(
                &RustCrypto::new(),
                algorithm,
                &vec![0x42; algorithm.keymat_len()],
            )
            .unwrap();
            // The inner size, and the ESP ciphertext size (inner + padding + 2-octet trailer).
            let ct_len = sealed_len(size) - PAYLOAD_OFFSET - TAG_LEN;
            for (name, len) in [("raw_aead", size), ("raw_aead_ct_len", ct_len)] {
                let mut raw = vec![0x5a; len];
                let mut counter = 0u64;
                group.bench_function(BenchmarkId::new(name, size), |b| {
                    b.iter(|| {
                        counter += 1;
                        let iv = counter.to_be_bytes();
                        let aad = [0x01, 0x02, 0x03, 0x04, iv[4], iv[5], iv[6], iv[7]];
                        let tag = key.seal(&iv, &aad, black_box(&mut raw)).unwrap();
                        key.open(&iv, &aad, black_box(&mut raw), &tag).unwrap();
                    });
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench_esp);
criterion_main!(benches);
