//! Tests of the ESP module as a whole: published vectors, round trips, replay, tampering,
//! malformed input and limits. Every test name contains `esp` (`cargo test -p pqvpn-core esp`).

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::crypto::{AeadAlgorithm, AeadKey, RustCrypto, SALT_LEN, SecretBytes};
use crate::wire;

const ALGORITHMS: [AeadAlgorithm; 3] = [
    AeadAlgorithm::Aes128Gcm16,
    AeadAlgorithm::Aes256Gcm16,
    AeadAlgorithm::ChaCha20Poly1305,
];
const SPI: EspSpi = EspSpi(0x1234_5678);

fn keymat(algorithm: AeadAlgorithm, byte: u8) -> SecretBytes {
    SecretBytes::new(
        (0..algorithm.keymat_len())
            .map(|i| byte ^ i as u8)
            .collect(),
    )
}

fn config(algorithm: AeadAlgorithm, esn: bool) -> SaConfig {
    let mut config = SaConfig::new(algorithm);
    config.esn = esn;
    config
}

/// A sender and a receiver of the same SA (the two ends of one direction).
fn pair_with(config: &SaConfig) -> (OutboundSa, InboundSa) {
    let provider = RustCrypto::new();
    let km = keymat(config.algorithm, 0x42);
    (
        OutboundSa::new(&provider, config, SPI, &km).unwrap(),
        InboundSa::new(&provider, config, SPI, &km).unwrap(),
    )
}

fn pair(algorithm: AeadAlgorithm, esn: bool) -> (OutboundSa, InboundSa) {
    pair_with(&config(algorithm, esn))
}

/// An IPv4 packet of `len` (>= 20) octets whose Total Length says so.
fn ipv4(len: usize, fill: u8) -> Vec<u8> {
    assert!((20..=65535).contains(&len));
    let mut p = vec![fill; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

/// An IPv6 packet of `len` (>= 40) octets whose Payload Length says so.
fn ipv6(len: usize, fill: u8) -> Vec<u8> {
    assert!((40..=65535 + 40).contains(&len));
    let mut p = vec![fill; len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    p
}

fn seal(sa: &mut OutboundSa, packet: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; sealed_len(packet.len())];
    let n = sa.seal(packet, &mut out).unwrap();
    assert_eq!(n, out.len());
    out
}

/// Opens `datagram` and returns the inner packet, or the error.
fn open(sa: &mut InboundSa, datagram: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; datagram.len()];
    match sa.open(datagram, &mut out)? {
        Inbound::Ipv4(p) | Inbound::Ipv6(p) => Ok(p.to_vec()),
        Inbound::Dummy => Ok(Vec::new()),
    }
}

/// An authentic datagram around an arbitrary `plaintext` (payload, padding and trailer chosen
/// by the test), sealed with the raw AEAD: the way to make packets `seal` would never make.
fn forge(config: &SaConfig, km: &SecretBytes, seq: u64, plaintext: &[u8]) -> Vec<u8> {
    let key = AeadKey::new(&RustCrypto::new(), config.algorithm, km.expose()).unwrap();
    let mut aad = SPI.to_be_bytes().to_vec();
    if config.esn {
        aad.extend_from_slice(&((seq >> 32) as u32).to_be_bytes());
    }
    aad.extend_from_slice(&(seq as u32).to_be_bytes());
    let iv = seq.to_be_bytes();
    let mut ct = plaintext.to_vec();
    let tag = key.seal(&iv, &aad, &mut ct).unwrap();
    let mut d = SPI.to_be_bytes().to_vec();
    d.extend_from_slice(&(seq as u32).to_be_bytes());
    d.extend_from_slice(&iv);
    d.extend_from_slice(&ct);
    d.extend_from_slice(&tag);
    d
}

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(json["source"].as_str().is_some_and(|s| !s.is_empty()));
    json
}

fn hex(v: &Value) -> Vec<u8> {
    ::hex::decode(v.as_str().unwrap()).unwrap()
}

fn u64_hex(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap(), 16).unwrap()
}

/// One published ESP vector: SA parameters, the datagram and what is inside it.
struct Vector {
    name: String,
    config: SaConfig,
    keymat: SecretBytes,
    spi: EspSpi,
    seq: u64,
    iv: [u8; 8],
    plaintext: Vec<u8>,
    datagram: Vec<u8>,
}

fn rfc7634_vector() -> Vector {
    let v = &load("rfc7634-chacha20poly1305.json")["esp_example_appendix_a"];
    Vector {
        name: "RFC 7634 Appendix A".into(),
        config: config(AeadAlgorithm::ChaCha20Poly1305, false),
        keymat: SecretBytes::new(hex(&v["keymat"])),
        spi: EspSpi(u64_hex(&v["spi"]) as u32),
        seq: v["sequence_number"].as_u64().unwrap(),
        iv: hex(&v["iv"]).try_into().unwrap(),
        plaintext: hex(&v["plaintext"]),
        // The published packet starts with a 20-octet outer IPv4 header.
        datagram: hex(&v["esp_packet"])[20..].to_vec(),
    }
}

fn gcm_vectors() -> Vec<Vector> {
    let json = load("gcm-vectors.json");
    json["rfc4106_esp"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let algorithm = match v["key_bits"].as_u64().unwrap() {
                128 => AeadAlgorithm::Aes128Gcm16,
                256 => AeadAlgorithm::Aes256Gcm16,
                other => panic!("{other}-bit key"),
            };
            let esn = v["extended_sequence_numbers"].as_bool().unwrap();
            Vector {
                name: v["name"].as_str().unwrap().into(),
                config: config(algorithm, esn),
                keymat: SecretBytes::new(hex(&v["keymat"])),
                spi: EspSpi(u64_hex(&v["spi"]) as u32),
                seq: u64_hex(&v["sequence_number"]),
                iv: hex(&v["iv"]).try_into().unwrap(),
                plaintext: hex(&v["plaintext"]),
                datagram: hex(&v["esp_packet"]),
            }
        })
        .collect()
}

impl Vector {
    fn inbound(&self) -> InboundSa {
        let mut sa =
            InboundSa::new(&RustCrypto::new(), &self.config, self.spi, &self.keymat).unwrap();
        // Place the window just below the vector's number, so ESN infers its high half.
        sa.window_mut().update(self.seq - 1);
        sa
    }

    fn outbound(&self) -> OutboundSa {
        OutboundSa::new(&RustCrypto::new(), &self.config, self.spi, &self.keymat).unwrap()
    }

    /// Payload length and Next Header from the published plaintext's trailer.
    fn payload(&self) -> (&[u8], u8) {
        let n = self.plaintext.len();
        let pad = usize::from(self.plaintext[n - 2]);
        (&self.plaintext[..n - 2 - pad], self.plaintext[n - 1])
    }
}

// ---------------------------------------------------------------------------------------------
// Known answers
// ---------------------------------------------------------------------------------------------

#[test]
fn esp_rfc7634_example_opens_to_the_source_packet() {
    let v = rfc7634_vector();
    let source =
        hex(&load("rfc7634-chacha20poly1305.json")["esp_example_appendix_a"]["source_packet"]);
    let mut sa = v.inbound();
    let mut out = vec![0u8; 200];
    match sa.open(&v.datagram, &mut out).unwrap() {
        Inbound::Ipv4(p) => assert_eq!(p, &source[..]),
        other => panic!("{other:?}"),
    }
    assert_eq!(sa.sequence_number(), v.seq);
    assert_eq!(sa.stats().packets, 1);
    assert_eq!(sa.stats().bytes, source.len() as u64);

    // The same datagram in place.
    let mut sa = v.inbound();
    let mut datagram = v.datagram.clone();
    match sa.open_in_place(&mut datagram).unwrap() {
        Inbound::Ipv4(p) => assert_eq!(p, &source[..]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn esp_rfc7634_example_seals_byte_for_byte() {
    let v = rfc7634_vector();
    let (payload, next_header) = v.payload();
    assert_eq!(next_header, NEXT_HEADER_IPV4);
    let sa = v.outbound();
    let mut buf = vec![0u8; sealed_len(payload.len())];
    buf[PAYLOAD_OFFSET..][..payload.len()].copy_from_slice(payload);
    let n = sa
        .write(&mut buf, payload.len(), next_header, v.seq, v.iv)
        .unwrap();
    assert_eq!(&buf[..n], &v.datagram[..]);
}

/// draft-mcgrew-gcm-test-01: RFC 4106 framing with and without ESN. The drafts' packets carry
/// Next Header 1, so a correct implementation authenticates and decrypts them and then refuses
/// the payload; the decrypted bytes must equal the published plaintext.
#[test]
fn esp_gcm_draft_vectors_authenticate_and_decrypt() {
    let vectors = gcm_vectors();
    assert_eq!(vectors.len(), 4);
    assert!(vectors.iter().any(|v| v.config.esn));
    assert!(vectors.iter().any(|v| !v.config.esn));
    for v in &vectors {
        let mut sa = v.inbound();
        let mut out = vec![0u8; v.datagram.len()];
        let (_, next_header) = v.payload();
        assert_eq!(
            sa.open(&v.datagram, &mut out),
            Err(Error::UnsupportedNextHeader(next_header)),
            "{}",
            v.name
        );
        assert_eq!(&out[..v.plaintext.len()], &v.plaintext[..], "{}", v.name);
        // The ICV passed, so the number is spent.
        assert_eq!(sa.sequence_number(), v.seq, "{}", v.name);
        assert_eq!(sa.stats().unsupported_next_header, 1);
        assert_eq!(sa.stats().auth_failures, 0);
        assert_eq!(
            sa.open(&v.datagram, &mut out),
            Err(Error::Replay(v.seq)),
            "{}",
            v.name
        );
    }
}

#[test]
fn esp_gcm_draft_vectors_seal_byte_for_byte() {
    for v in gcm_vectors() {
        let (payload, next_header) = v.payload();
        let sa = v.outbound();
        let mut buf = vec![0u8; sealed_len(payload.len())];
        buf[PAYLOAD_OFFSET..][..payload.len()].copy_from_slice(payload);
        let n = sa
            .write(&mut buf, payload.len(), next_header, v.seq, v.iv)
            .unwrap();
        assert_eq!(&buf[..n], &v.datagram[..], "{}", v.name);
    }
}

#[test]
fn esp_esn_high_bits_are_authenticated_but_not_sent() {
    // The ESN vector opened with the wrong high half (window not moved) must fail the ICV.
    let v = gcm_vectors()
        .into_iter()
        .find(|v| v.config.esn && v.seq as u32 != 0)
        .unwrap();
    let mut sa = InboundSa::new(&RustCrypto::new(), &v.config, v.spi, &v.keymat).unwrap();
    let mut out = vec![0u8; v.datagram.len()];
    assert_eq!(
        sa.open(&v.datagram, &mut out),
        Err(Error::AuthenticationFailed)
    );
    assert_eq!(sa.sequence_number(), 0);
}

/// The framing checked with the raw AEAD: IV = sequence number, nonce = salt | IV, AAD = SPI |
/// seq (| high bits with ESN), padding 1, 2, …, Pad Length, Next Header.
#[test]
fn esp_seal_matches_an_independent_construction() {
    for algorithm in ALGORITHMS {
        for esn in [false, true] {
            let config = config(algorithm, esn);
            let km = keymat(algorithm, 0x42);
            let (mut tx, _) = pair_with(&config);
            let seq = if esn { (7 << 32) | 3 } else { 3 };
            tx.set_sequence_number(seq - 1);
            let packet = ipv4(45, 0xab);
            let datagram = seal(&mut tx, &packet);
            let mut plaintext = packet.clone();
            plaintext.extend_from_slice(&[1, 1, 4]);
            assert_eq!(
                datagram,
                forge(&config, &km, seq, &plaintext),
                "{algorithm:?}"
            );
            assert_eq!(&datagram[8..16], &seq.to_be_bytes());
            let salt = &km.expose()[algorithm.key_len()..];
            assert_eq!(salt.len(), SALT_LEN);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any inner size 0..65535: IPv4 from 20 octets, IPv6 from 40, TFC dummies below.
    #[test]
    fn esp_round_trip_any_size(
        alg in 0usize..3,
        esn in any::<bool>(),
        len in 0usize..=65535,
        v6 in any::<bool>(),
        fill in any::<u8>(),
        start in prop_oneof![Just(0u64), 0u64..(1 << 40)],
    ) {
        let algorithm = ALGORITHMS[alg];
        let (mut tx, mut rx) = pair(algorithm, esn);
        let start = if esn { start } else { start % (1 << 31) };
        tx.set_sequence_number(start);
        rx.window_mut().update(start);
        let mut out = vec![0u8; sealed_len(len) + 7];
        let n = if (v6 && len >= 40) || (!v6 && len >= 20) {
            let packet = if v6 { ipv6(len, fill) } else { ipv4(len, fill) };
            let n = tx.seal(&packet, &mut out).unwrap();
            let mut plain = vec![0u8; n];
            match rx.open(&out[..n], &mut plain).unwrap() {
                Inbound::Ipv4(p) => { prop_assert!(!v6); prop_assert_eq!(&*p, &packet[..]); }
                Inbound::Ipv6(p) => { prop_assert!(v6); prop_assert_eq!(&*p, &packet[..]); }
                Inbound::Dummy => prop_assert!(false, "dummy"),
            }
            prop_assert_eq!(rx.stats().bytes, len as u64);
            n
        } else {
            let n = tx.seal_dummy(len, &mut out).unwrap();
            prop_assert_eq!(rx.open_in_place(&mut out[..n]), Ok(Inbound::Dummy));
            prop_assert_eq!(rx.stats().dummy_packets, 1);
            n
        };
        prop_assert_eq!(n, sealed_len(len));
        prop_assert_eq!(n % 4, 0);
        prop_assert!(n - len <= MAX_OVERHEAD);
        prop_assert_eq!(tx.sequence_number(), start + 1);
        prop_assert_eq!(rx.sequence_number(), start + 1);
    }

    /// Many packets through one SA, delivered in a shuffled order within the window, each
    /// accepted exactly once.
    #[test]
    fn esp_reordered_stream_is_accepted_once(
        alg in 0usize..3,
        esn in any::<bool>(),
        lens in proptest::collection::vec(20usize..300, 1..40),
        order in any::<u64>(),
    ) {
        let (mut tx, mut rx) = pair(ALGORITHMS[alg], esn);
        let packets: Vec<Vec<u8>> =
            lens.iter().enumerate().map(|(i, &l)| ipv4(l, i as u8)).collect();
        let mut datagrams: Vec<(usize, Vec<u8>)> =
            packets.iter().map(|p| seal(&mut tx, p)).enumerate().collect();
        // A deterministic shuffle driven by `order`.
        let mut state = order | 1;
        for i in (1..datagrams.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            datagrams.swap(i, (state % (i as u64 + 1)) as usize);
        }
        for (i, d) in &datagrams {
            prop_assert_eq!(open(&mut rx, d), Ok(packets[*i].clone()));
        }
        for (i, d) in &datagrams {
            prop_assert_eq!(open(&mut rx, d), Err(Error::Replay(*i as u64 + 1)));
        }
        prop_assert_eq!(rx.stats().packets, packets.len() as u64);
        prop_assert_eq!(rx.stats().replay_drops, packets.len() as u64);
    }

    /// Arbitrary bytes, with or without a matching SPI, never panic and never count as
    /// accepted.
    #[test]
    fn esp_open_rejects_garbage_without_panicking(
        esn in any::<bool>(),
        with_spi in any::<bool>(),
        mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
        out_len in 0usize..200,
    ) {
        let (_, mut rx) = pair(AeadAlgorithm::ChaCha20Poly1305, esn);
        if with_spi && bytes.len() >= 4 {
            bytes[..4].copy_from_slice(&SPI.to_be_bytes());
        }
        let mut out = vec![0u8; out_len];
        prop_assert!(rx.open(&bytes, &mut out).is_err());
        prop_assert!(rx.open_in_place(&mut bytes).is_err());
        prop_assert_eq!(rx.sequence_number(), 0);
        prop_assert_eq!(rx.stats().packets + rx.stats().dummy_packets, 0);
    }
}

#[test]
fn esp_seal_in_place_equals_seal() {
    for algorithm in ALGORITHMS {
        let (mut a, _) = pair(algorithm, false);
        let (mut b, _) = pair(algorithm, false);
        for len in [20, 21, 22, 23, 24, 1400] {
            let packet = ipv4(len, 7);
            let sealed = seal(&mut a, &packet);
            let mut buf = vec![0xeeu8; sealed_len(len)];
            buf[PAYLOAD_OFFSET..][..len].copy_from_slice(&packet);
            let n = b.seal_in_place(&mut buf, len).unwrap();
            assert_eq!(&buf[..n], &sealed[..]);
        }
    }
}

#[test]
fn esp_child_sas_talk_both_ways() {
    let provider = RustCrypto::new();
    let config = config(AeadAlgorithm::Aes256Gcm16, true);
    let (spi_i, spi_r) = (EspSpi(0xc000_0001), EspSpi(0xd000_0002));
    let (encr_i, encr_r) = (keymat(config.algorithm, 1), keymat(config.algorithm, 2));
    // The initiator sends with encr_i to the responder's SPI and receives on its own.
    let mut initiator = ChildSa::new(&provider, &config, spi_r, &encr_i, spi_i, &encr_r).unwrap();
    let mut responder = ChildSa::new(&provider, &config, spi_i, &encr_r, spi_r, &encr_i).unwrap();
    let mut wire = vec![0u8; 2000];
    let mut tun = vec![0u8; 2000];
    for i in 0..5 {
        let request = ipv4(100 + i, 1);
        let n = initiator.seal(&request, &mut wire).unwrap();
        assert_eq!(&wire[..4], &spi_r.to_be_bytes());
        match responder.open(&wire[..n], &mut tun).unwrap() {
            Inbound::Ipv4(p) => assert_eq!(p, &request[..]),
            other => panic!("{other:?}"),
        }
        let reply = ipv6(200 + i, 2);
        let n = responder.seal(&reply, &mut wire).unwrap();
        match initiator.open(&wire[..n], &mut tun).unwrap() {
            Inbound::Ipv6(p) => assert_eq!(p, &reply[..]),
            other => panic!("{other:?}"),
        }
    }
    // A packet to oneself: wrong SPI.
    let n = initiator.seal(&ipv4(20, 0), &mut wire).unwrap();
    assert_eq!(
        initiator.open(&wire[..n], &mut tun),
        Err(Error::UnknownSpi(spi_r))
    );
    let stats = initiator.stats();
    assert_eq!(stats.outbound.packets, 6);
    assert_eq!(stats.outbound.bytes, (100..105).sum::<u64>() + 20);
    assert_eq!(stats.inbound.packets, 5);
    assert_eq!(stats.inbound.bytes, (200..205).sum::<u64>());
    assert!(!initiator.needs_rekey());
    let (tx, rx) = initiator.split();
    assert_eq!((tx.spi(), rx.spi()), (spi_r, spi_i));
}

// ---------------------------------------------------------------------------------------------
// Anti-replay and ESN
// ---------------------------------------------------------------------------------------------

#[test]
fn esp_duplicates_and_old_packets_are_dropped_and_counted() {
    let (mut tx, mut rx) = pair(AeadAlgorithm::Aes128Gcm16, false);
    let datagrams: Vec<_> = (0..100).map(|i| seal(&mut tx, &ipv4(20 + i, 0))).collect();
    // 100 arrives first: 37..=100 are in the window, 1..=36 are too old.
    assert!(open(&mut rx, &datagrams[99]).is_ok());
    assert_eq!(open(&mut rx, &datagrams[99]), Err(Error::Replay(100)));
    assert_eq!(open(&mut rx, &datagrams[35]), Err(Error::TooOld(36)));
    assert!(open(&mut rx, &datagrams[36]).is_ok());
    assert_eq!(open(&mut rx, &datagrams[36]), Err(Error::Replay(37)));
    assert_eq!(rx.stats().replay_drops, 3);
    assert_eq!(rx.stats().packets, 2);
    assert_eq!(rx.sequence_number(), 100);
}

#[test]
fn esp_configured_window_sizes_apply() {
    for size in [32, 1000, 4096] {
        let mut cfg = config(AeadAlgorithm::ChaCha20Poly1305, false);
        cfg.replay = ReplayProtection::Window(size);
        let (mut tx, mut rx) = pair_with(&cfg);
        tx.set_sequence_number(9999);
        let newest = seal(&mut tx, &ipv4(20, 0));
        let top = 10_000u64;
        let lowest = top - u64::from(size) + 1;
        tx.set_sequence_number(lowest - 2);
        let too_old = seal(&mut tx, &ipv4(20, 0));
        let oldest = seal(&mut tx, &ipv4(20, 0));
        assert!(open(&mut rx, &newest).is_ok());
        assert_eq!(
            open(&mut rx, &too_old),
            Err(Error::TooOld(lowest - 1)),
            "W={size}"
        );
        assert!(open(&mut rx, &oldest).is_ok(), "W={size}");
    }
    let mut cfg = config(AeadAlgorithm::ChaCha20Poly1305, false);
    cfg.replay = ReplayProtection::Window(16);
    let km = keymat(cfg.algorithm, 0);
    assert!(matches!(
        InboundSa::new(&RustCrypto::new(), &cfg, SPI, &km),
        Err(Error::ApiMisuse(_))
    ));
}

#[test]
fn esp_disabled_anti_replay_accepts_duplicates() {
    for esn in [false, true] {
        let mut cfg = config(AeadAlgorithm::Aes256Gcm16, esn);
        cfg.replay = ReplayProtection::Disabled;
        let (mut tx, mut rx) = pair_with(&cfg);
        let first = seal(&mut tx, &ipv4(20, 0));
        tx.set_sequence_number(40);
        let near = seal(&mut tx, &ipv4(20, 0));
        tx.set_sequence_number(5000);
        let far = seal(&mut tx, &ipv4(20, 0));
        for d in [&first, &near, &first, &near, &far, &far] {
            assert!(open(&mut rx, d).is_ok(), "esn {esn}");
        }
        assert_eq!(rx.stats().replay_drops, 0);
        assert_eq!(rx.stats().packets, 6);
        // More than W behind the highest number: without ESN still accepted; with ESN the
        // high half is inferred as the next block (RFC 4303 Appendix A2), so the ICV fails.
        let expected = if esn {
            Err(Error::AuthenticationFailed)
        } else {
            Ok(ipv4(20, 0))
        };
        assert_eq!(open(&mut rx, &first), expected, "esn {esn}");
    }
    // With ESN the high half is still tracked across the wrap.
    let mut cfg = config(AeadAlgorithm::Aes256Gcm16, true);
    cfg.replay = ReplayProtection::Disabled;
    let (mut tx, mut rx) = pair_with(&cfg);
    tx.set_sequence_number(u64::from(u32::MAX) - 2);
    for _ in 0..6 {
        assert!(open(&mut rx, &seal(&mut tx, &ipv4(20, 0))).is_ok());
    }
    assert_eq!(rx.sequence_number(), (1 << 32) + 3);
}

#[test]
fn esp_esn_wrap_across_two_to_the_32() {
    for algorithm in ALGORITHMS {
        let (mut tx, mut rx) = pair(algorithm, true);
        let start = (1u64 << 32) - 10;
        tx.set_sequence_number(start);
        let datagrams: Vec<_> = (0..20).map(|i| seal(&mut tx, &ipv4(20 + i, 0))).collect();
        let seq = |i: usize| start + 1 + i as u64;
        // Low halves on the wire: ..., 0xffffffff, 0x00000000, 0x00000001, ...
        assert_eq!(&datagrams[8][4..8], &[0xff; 4]);
        assert_eq!(&datagrams[9][4..8], &[0; 4]);
        // Before the wrap, then after it, then late ones from before it, then duplicates.
        for i in [0, 5, 12, 19, 9, 8, 1, 18] {
            assert_eq!(open(&mut rx, &datagrams[i]), Ok(ipv4(20 + i, 0)), "{i}");
        }
        assert_eq!(rx.sequence_number(), seq(19));
        for i in [9, 8, 0, 19] {
            assert_eq!(
                open(&mut rx, &datagrams[i]),
                Err(Error::Replay(seq(i))),
                "{i}"
            );
        }
        for i in [2, 3, 4, 6, 7, 10, 11, 13, 14, 15, 16, 17] {
            assert_eq!(open(&mut rx, &datagrams[i]), Ok(ipv4(20 + i, 0)), "{i}");
        }
        assert_eq!(rx.stats().packets, 20);
        assert_eq!(rx.stats().auth_failures, 0);
    }
}

#[test]
fn esp_without_esn_the_counter_never_wraps() {
    let (mut tx, mut rx) = pair(AeadAlgorithm::ChaCha20Poly1305, false);
    tx.set_sequence_number(u64::from(u32::MAX) - 1);
    let last = seal(&mut tx, &ipv4(20, 0));
    assert_eq!(&last[4..8], &[0xff; 4]);
    assert!(tx.needs_rekey());
    let mut out = [0u8; 100];
    assert_eq!(
        tx.seal(&ipv4(20, 0), &mut out),
        Err(Error::SequenceExhausted)
    );
    assert_eq!(tx.sequence_number(), u64::from(u32::MAX));
    assert!(open(&mut rx, &last).is_ok());
}

#[test]
fn esp_with_esn_the_counter_stops_at_two_to_the_64() {
    let (mut tx, mut rx) = pair(AeadAlgorithm::Aes128Gcm16, true);
    tx.set_sequence_number(u64::MAX - 1);
    rx.window_mut().update(u64::MAX - 2);
    let last = seal(&mut tx, &ipv4(20, 0));
    assert!(open(&mut rx, &last).is_ok());
    assert_eq!(rx.sequence_number(), u64::MAX);
    let mut out = [0u8; 100];
    assert_eq!(tx.seal_dummy(0, &mut out), Err(Error::SequenceExhausted));
}

#[test]
fn esp_soft_and_hard_limits() {
    let mut cfg = config(AeadAlgorithm::Aes256Gcm16, false);
    cfg.soft_limit = Some(3);
    cfg.hard_limit = Some(5);
    let (mut tx, _) = pair_with(&cfg);
    let mut out = [0u8; 100];
    for seq in 1..=5 {
        assert_eq!(tx.needs_rekey(), seq > 3, "before {seq}");
        tx.seal(&ipv4(20, 0), &mut out).unwrap();
    }
    assert!(tx.needs_rekey());
    assert_eq!(
        tx.seal(&ipv4(20, 0), &mut out),
        Err(Error::SequenceExhausted)
    );
    assert_eq!(tx.sequence_number(), 5);
    assert_eq!(tx.stats().packets, 5);

    // Defaults: 7/8 of the counter; a hard limit above the counter width is capped.
    let mut cfg = config(AeadAlgorithm::Aes256Gcm16, false);
    cfg.hard_limit = Some(u64::MAX);
    let (mut tx, _) = pair_with(&cfg);
    let soft = u64::from(u32::MAX) - u64::from(u32::MAX) / 8;
    tx.set_sequence_number(soft - 1);
    assert!(!tx.needs_rekey());
    tx.seal(&ipv4(20, 0), &mut out).unwrap();
    assert!(tx.needs_rekey());
    tx.set_sequence_number(u64::from(u32::MAX));
    assert_eq!(
        tx.seal(&ipv4(20, 0), &mut out),
        Err(Error::SequenceExhausted)
    );
    // A soft limit above the hard one is clamped to it.
    let mut cfg = config(AeadAlgorithm::Aes256Gcm16, true);
    cfg.soft_limit = Some(100);
    cfg.hard_limit = Some(10);
    let (mut tx, _) = pair_with(&cfg);
    tx.set_sequence_number(9);
    assert!(!tx.needs_rekey());
    tx.seal(&ipv4(20, 0), &mut out).unwrap();
    assert!(tx.needs_rekey());
}

// ---------------------------------------------------------------------------------------------
// Tampering and malformed datagrams
// ---------------------------------------------------------------------------------------------

#[test]
fn esp_tampered_bytes_anywhere_are_rejected_and_counted() {
    for algorithm in ALGORITHMS {
        for esn in [false, true] {
            let (mut tx, mut rx) = pair(algorithm, esn);
            tx.set_sequence_number(0x100);
            let datagram = seal(&mut tx, &ipv4(61, 0x5a));
            let mut auth_failures = 0;
            for i in 0..datagram.len() {
                for bit in [0x01u8, 0x80] {
                    let mut forged = datagram.clone();
                    forged[i] ^= bit;
                    let expected = if i < 4 {
                        let spi = u32::from_be_bytes(forged[..4].try_into().unwrap());
                        Err(Error::UnknownSpi(EspSpi(spi)))
                    } else {
                        auth_failures += 1;
                        Err(Error::AuthenticationFailed)
                    };
                    assert_eq!(open(&mut rx, &forged), expected, "{algorithm:?} byte {i}");
                    assert_eq!(rx.sequence_number(), 0, "window moved");
                }
            }
            let stats = rx.stats();
            assert_eq!(stats.auth_failures, auth_failures);
            assert_eq!(stats.packets, 0);
            // The untouched datagram still opens: nothing above consumed its number.
            assert_eq!(open(&mut rx, &datagram), Ok(ipv4(61, 0x5a)));
        }
    }
}

#[test]
fn esp_forged_packet_cannot_move_the_window() {
    let (mut tx, mut rx) = pair(AeadAlgorithm::ChaCha20Poly1305, false);
    let genuine = seal(&mut tx, &ipv4(20, 0));
    // A forgery claiming a far-ahead number would, if it moved the window, make `genuine`
    // too old.
    let mut forged = genuine.clone();
    forged[4..8].copy_from_slice(&1_000_000u32.to_be_bytes());
    assert_eq!(open(&mut rx, &forged), Err(Error::AuthenticationFailed));
    assert_eq!(open(&mut rx, &genuine), Ok(ipv4(20, 0)));
}

#[test]
fn esp_bad_padding_is_rejected_after_authentication() {
    let cfg = config(AeadAlgorithm::Aes128Gcm16, false);
    let km = keymat(cfg.algorithm, 0x42);
    let packet = ipv4(24, 1);
    let cases: [&[u8]; 5] = [
        &[1, 3, 2, 4],   // not 1, 2
        &[0, 0, 2, 4],   // zeros
        &[2, 1, 2, 4],   // reversed
        &[1, 2, 200, 4], // Pad Length beyond the payload
        &[1, 2, 255, 4], // Pad Length 255
    ];
    for (i, trailer) in cases.iter().enumerate() {
        let (_, mut rx) = pair_with(&cfg);
        let mut plaintext = packet.clone();
        plaintext.extend_from_slice(trailer);
        let seq = 10 + i as u64;
        let d = forge(&cfg, &km, seq, &plaintext);
        assert_eq!(open(&mut rx, &d), Err(Error::BadPadding), "case {i}");
        assert_eq!(rx.stats().padding_errors, 1);
        // Authentic, so the number is spent.
        assert_eq!(open(&mut rx, &d), Err(Error::Replay(seq)));
    }
    // Correct padding through the same forge path is accepted (the forge itself is sound).
    let (_, mut rx) = pair_with(&cfg);
    let mut plaintext = packet.clone();
    plaintext.extend_from_slice(&[1, 2, 2, 4]);
    assert_eq!(open(&mut rx, &forge(&cfg, &km, 1, &plaintext)), Ok(packet));
    // Longer padding than seal uses (up to 255 octets) is valid.
    let (_, mut rx) = pair_with(&cfg);
    let mut plaintext = ipv4(20, 1);
    plaintext.extend((1..=254u8).chain([254, 4]));
    assert_eq!(
        open(&mut rx, &forge(&cfg, &km, 1, &plaintext)),
        Ok(ipv4(20, 1))
    );
}

#[test]
fn esp_next_headers_and_inner_packets() {
    let cfg = config(AeadAlgorithm::ChaCha20Poly1305, true);
    let km = keymat(cfg.algorithm, 0x42);
    let with_trailer = |payload: &[u8], nh: u8| {
        let mut p = payload.to_vec();
        let pad = (4 - (p.len() + 2) % 4) % 4;
        p.extend((1..=pad as u8).chain([pad as u8, nh]));
        p
    };
    type Case = (Vec<u8>, Result<Vec<u8>, Error>);
    let cases: Vec<Case> = vec![
        // Unknown Next Headers: UDP, ESP-in-ESP, 255.
        (
            with_trailer(&ipv4(20, 0), 17),
            Err(Error::UnsupportedNextHeader(17)),
        ),
        (
            with_trailer(&ipv4(20, 0), 50),
            Err(Error::UnsupportedNextHeader(50)),
        ),
        (
            with_trailer(&[], 255),
            Err(Error::UnsupportedNextHeader(255)),
        ),
        // Version nibble and Next Header disagree.
        (
            with_trailer(&ipv6(40, 0), NEXT_HEADER_IPV4),
            Err(Error::InvalidInnerPacket("Next Header 4 without IPv4")),
        ),
        (
            with_trailer(&ipv4(40, 0), NEXT_HEADER_IPV6),
            Err(Error::InvalidInnerPacket("Next Header 41 without IPv6")),
        ),
        (
            with_trailer(&[], NEXT_HEADER_IPV4),
            Err(Error::InvalidInnerPacket("Next Header 4 without IPv4")),
        ),
        // Headers cut short, length fields beyond the payload.
        (
            with_trailer(&ipv4(20, 0)[..19], NEXT_HEADER_IPV4),
            Err(Error::InvalidInnerPacket("IPv4 header truncated")),
        ),
        (
            with_trailer(&ipv6(40, 0)[..39], NEXT_HEADER_IPV6),
            Err(Error::InvalidInnerPacket("IPv6 header truncated")),
        ),
        (
            with_trailer(&ipv4(60, 0)[..59], NEXT_HEADER_IPV4),
            Err(Error::InvalidInnerPacket(
                "length field exceeds the available octets",
            )),
        ),
        (
            with_trailer(&ipv6(60, 0)[..59], NEXT_HEADER_IPV6),
            Err(Error::InvalidInnerPacket(
                "length field exceeds the available octets",
            )),
        ),
        // TFC padding after the inner packet is stripped (RFC 4303 §2.7).
        (
            with_trailer(&[ipv4(28, 3), vec![0; 100]].concat(), NEXT_HEADER_IPV4),
            Ok(ipv4(28, 3)),
        ),
        (
            with_trailer(&[ipv6(48, 3), vec![9; 7]].concat(), NEXT_HEADER_IPV6),
            Ok(ipv6(48, 3)),
        ),
        // A dummy packet with content.
        (
            with_trailer(&[0xaa; 33], NEXT_HEADER_NO_NEXT),
            Ok(Vec::new()),
        ),
    ];
    for (i, (plaintext, expected)) in cases.into_iter().enumerate() {
        let (_, mut rx) = pair_with(&cfg);
        let d = forge(&cfg, &km, 1, &plaintext);
        assert_eq!(open(&mut rx, &d), expected, "case {i}");
        let s = rx.stats();
        match expected {
            Err(Error::UnsupportedNextHeader(_)) => assert_eq!(s.unsupported_next_header, 1),
            Err(Error::InvalidInnerPacket(_)) => assert_eq!(s.malformed, 1),
            Ok(p) if p.is_empty() => assert_eq!(s.dummy_packets, 1),
            Ok(_) => assert_eq!(s.packets, 1),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn esp_truncated_and_misaligned_datagrams() {
    let (mut tx, mut rx) = pair(AeadAlgorithm::Aes256Gcm16, false);
    let datagram = seal(&mut tx, &ipv4(20, 0));
    // A dummy with an empty payload is the shortest datagram.
    let mut shortest = [0u8; MIN_DATAGRAM_LEN];
    assert_eq!(tx.seal_dummy(0, &mut shortest), Ok(MIN_DATAGRAM_LEN));
    let mut counted = 0;
    for len in 0..MIN_DATAGRAM_LEN {
        assert_eq!(
            open(&mut rx, &shortest[..len]),
            Err(Error::Truncated),
            "len {len}"
        );
        assert_eq!(
            rx.open_in_place(&mut { shortest }[..len]),
            Err(Error::Truncated),
            "len {len}"
        );
        counted += 2;
    }
    assert_eq!(rx.stats().malformed, counted);
    assert_eq!(open(&mut rx, &shortest), Ok(Vec::new()));
    // Ciphertext lengths that are not a multiple of 4.
    for extra in 1..4 {
        let mut longer = datagram.clone();
        longer.extend(std::iter::repeat_n(0, extra));
        let ct_len = longer.len() - PAYLOAD_OFFSET - TAG_LEN;
        assert_eq!(open(&mut rx, &longer), Err(Error::Misaligned(ct_len)));
    }
    for cut in 1..4 {
        let shorter = &datagram[..datagram.len() - cut];
        let ct_len = shorter.len() - PAYLOAD_OFFSET - TAG_LEN;
        assert_eq!(open(&mut rx, shorter), Err(Error::Misaligned(ct_len)));
    }
    // Four octets more or less keeps the alignment; the ICV then fails.
    assert_eq!(
        open(&mut rx, &datagram[..datagram.len() - 4]),
        Err(Error::AuthenticationFailed)
    );
    assert_eq!(rx.sequence_number(), 2);
    assert_eq!(open(&mut rx, &datagram), Ok(ipv4(20, 0)));
}

#[test]
fn esp_buffers_too_small_use_up_nothing() {
    let (mut tx, mut rx) = pair(AeadAlgorithm::ChaCha20Poly1305, false);
    let packet = ipv4(100, 0);
    let needed = sealed_len(100);
    assert_eq!(needed, 16 + 104 + 16);
    let mut out = vec![0u8; needed - 1];
    assert_eq!(
        tx.seal(&packet, &mut out),
        Err(Error::BufferTooSmall { needed })
    );
    assert_eq!(
        tx.seal_dummy(100, &mut out),
        Err(Error::BufferTooSmall { needed })
    );
    let mut buf = vec![0u8; needed - 1];
    buf[PAYLOAD_OFFSET..][..100].copy_from_slice(&packet);
    assert_eq!(
        tx.seal_in_place(&mut buf, 100),
        Err(Error::BufferTooSmall { needed })
    );
    assert_eq!(
        tx.seal_in_place(&mut buf, 200),
        Err(Error::BufferTooSmall {
            needed: sealed_len(200)
        })
    );
    assert_eq!(tx.sequence_number(), 0);
    let datagram = seal(&mut tx, &packet);
    assert_eq!(tx.sequence_number(), 1);

    let mut small = vec![0u8; 103];
    assert_eq!(
        rx.open(&datagram, &mut small),
        Err(Error::BufferTooSmall { needed: 104 })
    );
    assert_eq!(rx.stats(), InboundStats::default());
    let mut exact = vec![0u8; 104];
    assert!(rx.open(&datagram, &mut exact).is_ok());
    assert_eq!(
        nat_keepalive(&mut []),
        Err(Error::BufferTooSmall { needed: 1 })
    );
}

#[test]
fn esp_seal_refuses_what_is_not_an_ip_packet() {
    let (mut tx, _) = pair(AeadAlgorithm::Aes128Gcm16, false);
    let mut out = vec![0u8; 200];
    let mut wrong_len = ipv4(40, 0);
    wrong_len[3] = 41;
    let mut short_len = ipv4(40, 0);
    short_len[3] = 39;
    let cases: [(&[u8], &str); 6] = [
        (&[], "empty packet"),
        (&[0x50; 40], "IP version is neither 4 nor 6"),
        (&ipv4(20, 0)[..19], "IPv4 header truncated"),
        (&ipv6(40, 0)[..39], "IPv6 header truncated"),
        (&wrong_len, "length field exceeds the available octets"),
        (&short_len, "length field does not match the packet length"),
    ];
    for (packet, reason) in cases {
        assert_eq!(
            tx.seal(packet, &mut out),
            Err(Error::InvalidInnerPacket(reason))
        );
    }
    assert_eq!(tx.sequence_number(), 0);
    assert_eq!(tx.stats(), OutboundStats::default());
}

#[test]
fn esp_constructor_errors() {
    let provider = RustCrypto::new();
    let cfg = config(AeadAlgorithm::Aes256Gcm16, false);
    let km = keymat(cfg.algorithm, 0);
    for spi in [0, 1, 255] {
        assert!(matches!(
            InboundSa::new(&provider, &cfg, EspSpi(spi), &km),
            Err(Error::ApiMisuse(_))
        ));
    }
    assert!(InboundSa::new(&provider, &cfg, EspSpi(256), &km).is_ok());
    let short = SecretBytes::from_slice(&km.expose()[1..]);
    assert_eq!(
        OutboundSa::new(&provider, &cfg, SPI, &short).unwrap_err(),
        Error::Crypto(crypto::Error::InvalidKeyLength {
            algorithm: cfg.algorithm,
            expected: 36,
            got: 35
        })
    );
    // Keys of another algorithm's length: AES-128 keymat for AES-256.
    let wrong = keymat(AeadAlgorithm::Aes128Gcm16, 0);
    assert!(matches!(
        InboundSa::new(&provider, &cfg, SPI, &wrong),
        Err(Error::Crypto(_))
    ));
}

#[test]
fn esp_keys_and_directions_do_not_mix() {
    let provider = RustCrypto::new();
    let cfg = config(AeadAlgorithm::Aes128Gcm16, false);
    let mut tx = OutboundSa::new(&provider, &cfg, SPI, &keymat(cfg.algorithm, 1)).unwrap();
    let mut rx = InboundSa::new(&provider, &cfg, SPI, &keymat(cfg.algorithm, 2)).unwrap();
    let d = seal(&mut tx, &ipv4(20, 0));
    assert_eq!(open(&mut rx, &d), Err(Error::AuthenticationFailed));
    // ESN on one side only: the AAD differs.
    let (mut tx, _) = pair(AeadAlgorithm::Aes128Gcm16, true);
    let (_, mut rx) = pair(AeadAlgorithm::Aes128Gcm16, false);
    assert_eq!(
        open(&mut rx, &seal(&mut tx, &ipv4(20, 0))),
        Err(Error::AuthenticationFailed)
    );
}

// ---------------------------------------------------------------------------------------------
// RFC 3948 demultiplexing
// ---------------------------------------------------------------------------------------------

#[test]
fn esp_demux_routes_port_4500_payloads() {
    let provider = RustCrypto::new();
    let cfg = config(AeadAlgorithm::ChaCha20Poly1305, false);
    let (old_spi, new_spi) = (EspSpi(0x1000), EspSpi(0x2000));
    let (old_km, new_km) = (keymat(cfg.algorithm, 1), keymat(cfg.algorithm, 2));
    let mut demux = Demux::new();
    assert!(demux.is_empty());
    assert!(
        demux
            .insert(InboundSa::new(&provider, &cfg, old_spi, &old_km).unwrap())
            .is_none()
    );
    assert!(
        demux
            .insert(InboundSa::new(&provider, &cfg, new_spi, &new_km).unwrap())
            .is_none()
    );
    assert_eq!(demux.len(), 2);
    let mut old_tx = OutboundSa::new(&provider, &cfg, old_spi, &old_km).unwrap();
    let mut new_tx = OutboundSa::new(&provider, &cfg, new_spi, &new_km).unwrap();
    let mut out = vec![0u8; 2000];

    assert_eq!(
        demux.handle_udp4500(&wire::NAT_KEEPALIVE, &mut out),
        Ok(Received::NatKeepalive)
    );
    let mut keepalive = [0u8; 4];
    assert_eq!(nat_keepalive(&mut keepalive), Ok(1));
    assert_eq!(
        demux.handle_udp4500(&keepalive[..1], &mut out),
        Ok(Received::NatKeepalive)
    );
    let ike = [0, 0, 0, 0, 0xaa, 0xbb];
    assert_eq!(
        demux.handle_udp4500(&ike, &mut out),
        Ok(Received::Ike(&[0xaa, 0xbb][..]))
    );
    assert!(matches!(
        demux.handle_udp4500(&[0x42], &mut out),
        Err(Error::NotUdp4500(_))
    ));
    assert!(matches!(
        demux.handle_udp4500(&[1, 2, 3, 4, 5], &mut out),
        Err(Error::NotUdp4500(_))
    ));

    let new_d = seal(&mut new_tx, &ipv4(30, 2));
    let old_d = seal(&mut old_tx, &ipv4(20, 1));
    match demux.handle_udp4500(&new_d, &mut out) {
        Ok(Received::Esp {
            spi,
            packet: Inbound::Ipv4(p),
        }) => {
            assert_eq!(spi, new_spi);
            assert_eq!(p, &ipv4(30, 2)[..]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        demux.handle_udp4500(&old_d, &mut out),
        Ok(Received::Esp { spi, .. }) if spi == old_spi
    ));
    assert_eq!(demux.get(old_spi).unwrap().stats().packets, 1);
    assert_eq!(demux.get(new_spi).unwrap().stats().packets, 1);

    // Rekey done: the old SA goes, its packets become unknown.
    assert!(demux.remove(old_spi).is_some());
    assert!(demux.remove(old_spi).is_none());
    let late = seal(&mut old_tx, &ipv4(20, 1));
    assert_eq!(
        demux.handle_udp4500(&late, &mut out),
        Err(Error::UnknownSpi(old_spi))
    );
    assert_eq!(demux.unknown_spi_drops(), 1);
    // Errors of the SA are passed through.
    assert_eq!(
        demux.handle_udp4500(&new_d, &mut out),
        Err(Error::Replay(1))
    );
    // Replacing an SA with the same SPI returns the old one.
    let replaced = demux.insert(InboundSa::new(&provider, &cfg, new_spi, &new_km).unwrap());
    assert_eq!(replaced.unwrap().stats().replay_drops, 1);
    assert_eq!(demux.len(), 1);
    assert_eq!(demux.iter().count(), 1);
    assert!(demux.get_mut(new_spi).is_some());
}

#[test]
fn esp_errors_and_spis_print_usefully() {
    assert_eq!(EspSpi(0xc0ffee).to_string(), "0x00c0ffee");
    assert_eq!(format!("{:?}", EspSpi(1)), "EspSpi(0x00000001)");
    assert_eq!(
        Error::UnknownSpi(EspSpi(0x1234)).to_string(),
        "no SA for SPI 0x00001234"
    );
    assert_eq!(
        Error::BufferTooSmall { needed: 36 }.to_string(),
        "output buffer too small, 36 octets needed"
    );
    assert_eq!(Error::Replay(7).to_string(), "replayed sequence number 7");
    let e = Error::Crypto(crypto::Error::DecryptFailed);
    assert_eq!(e.clone(), e);
    // Key material never appears in Debug output.
    let (tx, rx) = pair(AeadAlgorithm::Aes128Gcm16, false);
    let printed = format!("{tx:?}{rx:?}");
    assert!(!printed.contains("66, 67"), "{printed}");
}
