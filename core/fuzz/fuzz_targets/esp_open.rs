//! Feeds arbitrary octets to an inbound ESP SA and to the port 4500 demultiplexer: nothing may
//! panic, and nothing unauthenticated may be accepted.
//!
//! The first octet picks the SA parameters (cipher, ESN, anti-replay) and the mode:
//! - raw: the rest is one UDP payload, opened with `open`, `open_in_place` and `Demux`;
//! - forged: the rest is a list of records `seq_low (4) | len (1) | plaintext (len)`, each
//!   sealed with the SA's own key and the right AAD and opened in turn, so the fuzzer reaches
//!   the padding, Next Header and inner-packet checks and moves the replay window, which a raw
//!   datagram (it cannot guess the ICV) never does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pqvpn_core::crypto::{AeadAlgorithm, AeadKey, RustCrypto, SecretBytes};
use pqvpn_core::esp::{Demux, EspSpi, Inbound, InboundSa, ReplayProtection, SaConfig};

const SPI: EspSpi = EspSpi(0x0102_0304);

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let algorithm = match flags & 3 {
        0 => AeadAlgorithm::Aes128Gcm16,
        1 => AeadAlgorithm::Aes256Gcm16,
        _ => AeadAlgorithm::ChaCha20Poly1305,
    };
    let mut config = SaConfig::new(algorithm);
    config.esn = flags & 4 != 0;
    config.replay = match (flags >> 3) & 3 {
        0 => ReplayProtection::Window(64),
        1 => ReplayProtection::Window(32),
        2 => ReplayProtection::Window(4096),
        _ => ReplayProtection::Disabled,
    };
    let provider = RustCrypto::new();
    let keymat = SecretBytes::new((0..algorithm.keymat_len()).map(|i| i as u8).collect());
    let mut sa = InboundSa::new(&provider, &config, SPI, &keymat).expect("valid SA");

    if flags & 0x20 == 0 {
        let mut out = vec![0u8; rest.len()];
        assert!(sa.open(rest, &mut out).is_err(), "forgery accepted");
        assert!(
            sa.open_in_place(&mut rest.to_vec()).is_err(),
            "forgery accepted"
        );
        let mut demux = Demux::new();
        demux.insert(sa);
        if let Ok(pqvpn_core::esp::Received::Esp { .. }) = demux.handle_udp4500(rest, &mut out) {
            panic!("forgery accepted");
        }
        return;
    }

    let key = AeadKey::new(&provider, algorithm, keymat.expose()).expect("valid key");
    let mut records = rest;
    while let Some((seq_low, tail)) = records.split_first_chunk::<4>() {
        let Some((&len, tail)) = tail.split_first() else {
            break;
        };
        let (plaintext, tail) = tail.split_at(usize::from(len).min(tail.len()));
        records = tail;

        // With ESN the sender claims the receiver's current 2^32 block; where the receiver
        // infers another one, the ICV fails, which is counted like any other drop.
        let seq_low = u32::from_be_bytes(*seq_low);
        let high = if config.esn {
            sa.sequence_number() >> 32
        } else {
            0
        };
        let seq = (high << 32) | u64::from(seq_low);
        let mut aad = SPI.0.to_be_bytes().to_vec();
        if config.esn {
            aad.extend_from_slice(&((seq >> 32) as u32).to_be_bytes());
        }
        aad.extend_from_slice(&seq_low.to_be_bytes());
        let iv = seq.to_be_bytes();
        let mut ct = plaintext.to_vec();
        let tag = key.seal(&iv, &aad, &mut ct).expect("seal");
        let mut datagram = SPI.0.to_be_bytes().to_vec();
        datagram.extend_from_slice(&seq_low.to_be_bytes());
        datagram.extend_from_slice(&iv);
        datagram.extend_from_slice(&ct);
        datagram.extend_from_slice(&tag);

        let before = sa.stats();
        let mut out = vec![0u8; datagram.len()];
        match sa.open(&datagram, &mut out) {
            Ok(Inbound::Ipv4(p) | Inbound::Ipv6(p)) => {
                assert!(!p.is_empty() && p.len() <= plaintext.len());
                assert_eq!(p, &plaintext[..p.len()]);
                assert_eq!(sa.stats().packets, before.packets + 1);
            }
            Ok(Inbound::Dummy) => assert_eq!(sa.stats().dummy_packets, before.dummy_packets + 1),
            Err(e) => assert_ne!(sa.stats(), before, "drop not counted: {e}"),
        }
    }
});
