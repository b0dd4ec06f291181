//! Known-answer tests for ML-KEM-512/768/1024 (FIPS 203) from the NIST ACVP-Server
//! `ML-KEM-keyGen-FIPS203` and `ML-KEM-encapDecap-FIPS203` internal projections: key generation
//! from `(d, z)`, encapsulation with fixed `m`, decapsulation (valid and modified ciphertext,
//! i.e. implicit rejection), and the encapsulation and decapsulation key checks (FIPS 203 §7.2,
//! §7.3). Vector: `vectors/mlkem-acvp.json` (its `source` names the release, files, tgIds and
//! tcIds).
//!
//! Key generation and encapsulation run through pqvpn's key exchange with a [`ReplayProvider`]:
//! the initiator's key generation draws the 64 octets `d | z` (FIPS 203 ML-KEM.KeyGen_internal),
//! the responder's encapsulation the 32 octets `m` (ML-KEM.Encaps_internal). ACVP gives
//! decapsulation keys only in the expanded encoding, which pqvpn never holds (its keys come from
//! seeds), so those vectors go through the test-only [`mlkem_decapsulate_expanded`].

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "known-answer test: any mismatch must abort loudly"
)]

mod common;

use common::{hex, load};
use pqvpn_core::crypto::{
    CryptoProvider, Error, InvalidPeerValue, ReplayProvider, mlkem_ciphertext_len,
    mlkem_decapsulate_expanded, public_value_len,
};
use pqvpn_core::wire::KeyExchangeMethod;
use serde_json::Value;

const VECTOR: &str = "mlkem-acvp.json";
/// Fixed encapsulation randomness for the checks that need a ciphertext of their own.
const M: [u8; 32] = [0x42; 32];

/// One group of vectors (`keygen`, `encapsulation`, ...) with a name for messages.
fn vectors<'a>(json: &'a Value, group: &str) -> Vec<(String, KeyExchangeMethod, &'a Value)> {
    let vectors = json[group].as_array().unwrap();
    assert_eq!(vectors.len(), 6, "{group}: two vectors per parameter set");
    vectors
        .iter()
        .map(|v| {
            let set = v["parameter_set"].as_str().unwrap();
            let method = match set {
                "ML-KEM-512" => KeyExchangeMethod::MlKem512,
                "ML-KEM-768" => KeyExchangeMethod::MlKem768,
                "ML-KEM-1024" => KeyExchangeMethod::MlKem1024,
                other => panic!("unknown parameter set {other}"),
            };
            let name = format!("{group} {set} tgId {} tcId {}", v["tg_id"], v["tc_id"]);
            (name, method, v)
        })
        .collect()
}

/// Where the encapsulation key sits in an expanded decapsulation key
/// `dk_pke (384k) | ek (384k + 32) | H(ek) (32) | z (32)` (FIPS 203 Algorithm 16).
fn ek_range(method: KeyExchangeMethod) -> core::ops::Range<usize> {
    let ek_len = public_value_len(method).unwrap();
    let dk_pke_len = ek_len - 32;
    dk_pke_len..dk_pke_len + ek_len
}

/// Encapsulates to `ek` through the responder's path with `m`; returns (ciphertext, secret).
fn encapsulate(method: KeyExchangeMethod, ek: &[u8], m: &[u8], name: &str) -> (Vec<u8>, Vec<u8>) {
    let provider = ReplayProvider::new(m);
    let response = provider
        .respond_key_exchange(method, ek)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        provider.remaining(),
        0,
        "{name}: encapsulation draws 32 octets"
    );
    (
        response.public_value,
        response.shared_secret.expose().to_vec(),
    )
}

#[test]
fn keygen_from_d_and_z_gives_the_acvp_encapsulation_key() {
    let json = load(VECTOR);
    for (name, method, v) in vectors(&json, "keygen") {
        let seed = [hex(&v["d"]), hex(&v["z"])].concat();
        let provider = ReplayProvider::new(&seed);
        let kex = provider.start_key_exchange(method).unwrap();
        assert_eq!(
            provider.remaining(),
            0,
            "{name}: key generation draws d | z"
        );
        assert_eq!(kex.public_value(), hex(&v["ek"]).as_slice(), "{name}: ek");
    }
}

/// The decapsulation key pqvpn derives from `d | z` behaves exactly like ACVP's expanded `dk`:
/// same secret for a valid ciphertext and the same implicit-rejection secret J(z | c) for a
/// modified one (which also shows that z was taken from the second half of the seed).
#[test]
fn keygen_from_d_and_z_decapsulates_like_the_acvp_decapsulation_key() {
    let json = load(VECTOR);
    for (name, method, v) in vectors(&json, "keygen") {
        let seed = [hex(&v["d"]), hex(&v["z"])].concat();
        let (ek, dk) = (hex(&v["ek"]), hex(&v["dk"]));
        assert_eq!(dk[ek_range(method)], ek, "{name}: dk embeds ek");
        assert_eq!(dk[dk.len() - 32..], hex(&v["z"]), "{name}: dk ends with z");

        let (ct, secret) = encapsulate(method, &ek, &M, &name);
        let mut modified = ct.clone();
        modified[0] ^= 1;
        for (c, what) in [
            (&ct, "valid ciphertext"),
            (&modified, "modified ciphertext"),
        ] {
            let expected = mlkem_decapsulate_expanded(method, &dk, c)
                .unwrap_or_else(|e| panic!("{name}: ACVP dk: {e}"));
            let kex = ReplayProvider::new(&seed)
                .start_key_exchange(method)
                .unwrap();
            let ours = kex.complete(c).unwrap();
            assert_eq!(ours, expected, "{name}: {what}");
            assert_eq!(
                ours.expose() == secret.as_slice(),
                c == &ct,
                "{name}: {what} agrees with the encapsulator iff unmodified"
            );
        }
    }
}

#[test]
fn encapsulation_with_m_gives_the_acvp_ciphertext_and_key() {
    let json = load(VECTOR);
    for (name, method, v) in vectors(&json, "encapsulation") {
        let (c, k) = encapsulate(method, &hex(&v["ek"]), &hex(&v["m"]), &name);
        assert_eq!(c, hex(&v["c"]), "{name}: c");
        assert_eq!(k, hex(&v["k"]), "{name}: k");
    }
}

#[test]
fn decapsulation_with_expanded_keys_gives_the_acvp_key() {
    let json = load(VECTOR);
    for (name, method, v) in vectors(&json, "decapsulation") {
        let reason = v["reason"].as_str().unwrap();
        assert!(
            ["valid decapsulation", "modified ciphertext"].contains(&reason),
            "{name}: {reason}"
        );
        let k = mlkem_decapsulate_expanded(method, &hex(&v["dk"]), &hex(&v["c"]))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // For a modified ciphertext the expected k is the implicit-rejection key J(z | c).
        assert_eq!(k.expose(), hex(&v["k"]).as_slice(), "{name} ({reason})");
    }
}

/// FIPS 203 §7.2. The ACVP keys that fail the check are all 416 octets too long (see the
/// vector file's notes), so they stop at the type (length) check; a key of the right length
/// that fails could only fail the modulus check (covered by `kat_mlkem_wycheproof`).
#[test]
fn encapsulation_key_check() {
    let json = load(VECTOR);
    for (name, method, v) in vectors(&json, "encapsulation_key_check") {
        let ek = hex(&v["ek"]);
        let expected_len = public_value_len(method).unwrap();
        let result = ReplayProvider::new(&M).respond_key_exchange(method, &ek);
        if v["test_passed"].as_bool().unwrap() {
            let response = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                Some(response.public_value.len()),
                mlkem_ciphertext_len(method),
                "{name}"
            );
        } else {
            let reason = if ek.len() == expected_len {
                InvalidPeerValue::ModulusCheckFailed
            } else {
                InvalidPeerValue::WrongLength {
                    expected: expected_len,
                    got: ek.len(),
                }
            };
            assert_eq!(
                result.unwrap_err(),
                Error::InvalidPeerValue { method, reason },
                "{name} ({})",
                v["reason"]
            );
        }
    }
}

/// FIPS 203 §7.3 has no counterpart in pqvpn's own key exchange: it never imports a
/// decapsulation key, it derives one from a fresh seed, so H(ek) is computed rather than
/// trusted. What is checked here is what these keys mean in use: a valid `dk` decapsulates what
/// was encapsulated to the `ek` inside it, and a `dk` whose stored H(ek) is wrong ("modified H")
/// is refused by the expanded-key import (ml-kem checks H(ek) there; the test-only helper
/// reports every refused key as [`InvalidPeerValue::ModulusCheckFailed`]).
#[test]
fn decapsulation_key_check() {
    let json = load(VECTOR);
    for (name, method, v) in vectors(&json, "decapsulation_key_check") {
        let dk = hex(&v["dk"]);
        let (ct, secret) = encapsulate(method, &dk[ek_range(method)], &M, &name);
        let result = mlkem_decapsulate_expanded(method, &dk, &ct);
        if v["test_passed"].as_bool().unwrap() {
            assert_eq!(
                result.unwrap_or_else(|e| panic!("{name}: {e}")).expose(),
                secret.as_slice(),
                "{name}: valid dk decapsulates"
            );
        } else {
            assert_eq!(v["reason"], "modified H", "{name}");
            assert_eq!(
                result.unwrap_err(),
                Error::InvalidPeerValue {
                    method,
                    reason: InvalidPeerValue::ModulusCheckFailed
                },
                "{name}: modified H"
            );
        }
    }
}
