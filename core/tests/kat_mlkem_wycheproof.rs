//! Known-answer tests for invalid ML-KEM-512/768/1024 inputs (FIPS 203 §7.2, §7.3) from
//! Wycheproof: encapsulation keys failing the modulus check (flag ModulusOverflow, "Public key
//! not reduced") or of the wrong length, ciphertexts of the wrong length, and an expanded
//! decapsulation key with a corrupted H(ek). Vector: `vectors/mlkem-wycheproof.json` (its
//! `source` names the Wycheproof commit, files and tcIds).
//!
//! Encapsulation runs through pqvpn's responder path ([`CryptoProvider::respond_key_exchange`],
//! with the vector's `m` from a [`ReplayProvider`]), decapsulation through the initiator's
//! ([`KeyExchange::complete`](pqvpn_core::crypto::KeyExchange::complete) on a key generated
//! from the vector's `d | z` seed). The semi-expanded decapsulation vectors give only an
//! expanded `dk`, which pqvpn never holds, so they go through the test-only
//! [`mlkem_decapsulate_expanded`].

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
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

const VECTOR: &str = "mlkem-wycheproof.json";

const SETS: [(&str, KeyExchangeMethod); 3] = [
    ("ML-KEM-512", KeyExchangeMethod::MlKem512),
    ("ML-KEM-768", KeyExchangeMethod::MlKem768),
    ("ML-KEM-1024", KeyExchangeMethod::MlKem1024),
];

/// The vectors of `group` for every parameter set, each with a name for messages.
fn vectors(json: &Value, group: &str) -> Vec<(String, KeyExchangeMethod, Value)> {
    let mut out = Vec::new();
    for (set, method) in SETS {
        for v in json["parameter_sets"][set][group].as_array().unwrap() {
            assert_eq!(v["result"], "invalid", "{set} {group}");
            let name = format!("{set} {group} tcId {} ({})", v["tc_id"], v["comment"]);
            out.push((name, method, v.clone()));
        }
    }
    out
}

fn invalid(method: KeyExchangeMethod, reason: InvalidPeerValue) -> Error {
    Error::InvalidPeerValue { method, reason }
}

/// Encapsulation to the vector's `ek` with its `m`, through the responder's path.
fn encapsulate(method: KeyExchangeMethod, v: &Value) -> Result<Vec<u8>, Error> {
    ReplayProvider::new(&hex(&v["m"]))
        .respond_key_exchange(method, &hex(&v["ek"]))
        .map(|r| r.public_value)
}

fn has_flag(v: &Value, flag: &str) -> bool {
    v["flags"].as_array().unwrap().iter().any(|f| f == flag)
}

#[test]
fn encapsulation_keys_failing_the_modulus_check_are_rejected() {
    let json = load(VECTOR);
    let mut count = 0;
    for (name, method, v) in vectors(&json, "encaps_invalid") {
        if !(has_flag(&v, "ModulusOverflow") || v["comment"] == "Public key not reduced") {
            continue;
        }
        count += 1;
        let ek = hex(&v["ek"]);
        assert_eq!(
            Some(ek.len()),
            public_value_len(method),
            "{name}: right length"
        );
        assert_eq!(
            encapsulate(method, &v).unwrap_err(),
            invalid(method, InvalidPeerValue::ModulusCheckFailed),
            "{name}"
        );
    }
    assert_eq!(count, 9, "tcIds 2, 3 and 110/114/118 of each parameter set");
}

#[test]
fn encapsulation_keys_of_the_wrong_length_are_rejected() {
    let json = load(VECTOR);
    let mut count = 0;
    for (name, method, v) in vectors(&json, "encaps_invalid") {
        let comment = v["comment"].as_str().unwrap();
        if !comment.starts_with("Public key is too") {
            continue;
        }
        count += 1;
        let (expected, got) = (public_value_len(method).unwrap(), hex(&v["ek"]).len());
        assert_eq!(
            got < expected,
            comment == "Public key is too short",
            "{name}: {got} octets"
        );
        assert_eq!(
            encapsulate(method, &v).unwrap_err(),
            invalid(method, InvalidPeerValue::WrongLength { expected, got }),
            "{name}"
        );
    }
    assert_eq!(count, 6, "tcIds 21x and 22x of each parameter set");
}

#[test]
fn ciphertexts_of_the_wrong_length_are_rejected_not_implicitly() {
    let json = load(VECTOR);
    let all = vectors(&json, "decaps_wrong_ciphertext_length");
    assert_eq!(all.len(), 6);
    for (name, method, v) in all {
        let seed = hex(&v["seed"]);
        let provider = ReplayProvider::new(&seed);
        let kex = provider.start_key_exchange(method).unwrap();
        assert_eq!(
            provider.remaining(),
            0,
            "{name}: key generation draws d | z"
        );
        assert_eq!(kex.public_value(), hex(&v["ek"]).as_slice(), "{name}: ek");
        let (expected, got) = (mlkem_ciphertext_len(method).unwrap(), hex(&v["c"]).len());
        assert_ne!(expected, got, "{name}");
        assert_eq!(
            kex.complete(&hex(&v["c"])).unwrap_err(),
            invalid(method, InvalidPeerValue::WrongLength { expected, got }),
            "{name}"
        );
    }
}

#[test]
fn semi_expanded_decapsulation_invalid_inputs_are_rejected() {
    let json = load(VECTOR);
    let all = vectors(&json, "semi_expanded_decaps_invalid");
    assert_eq!(all.len(), 6);
    for (name, method, v) in all {
        let (dk, c) = (hex(&v["dk"]), hex(&v["c"]));
        let result = mlkem_decapsulate_expanded(method, &dk, &c);
        if has_flag(&v, "IncorrectCiphertextLength") {
            let expected = mlkem_ciphertext_len(method).unwrap();
            assert_eq!(
                result.unwrap_err(),
                invalid(
                    method,
                    InvalidPeerValue::WrongLength {
                        expected,
                        got: c.len()
                    }
                ),
                "{name}"
            );
        } else if has_flag(&v, "InvalidDecapsulationKey") {
            // The stored H(ek) is wrong (FIPS 203 §7.3 hash check). pqvpn derives its keys
            // from seeds and never imports one; the test-only helper reports every refused
            // key as ModulusCheckFailed.
            assert_eq!(Some(c.len()), mlkem_ciphertext_len(method), "{name}");
            assert_eq!(
                result.unwrap_err(),
                invalid(method, InvalidPeerValue::ModulusCheckFailed),
                "{name}"
            );
            // The ek inside the key is itself fine: pqvpn's responder encapsulates to it.
            assert!(
                ReplayProvider::new(&[0x42; 32])
                    .respond_key_exchange(method, &hex(&v["ek"]))
                    .is_ok(),
                "{name}: ek"
            );
        } else {
            panic!("{name}: unexpected flags {}", v["flags"]);
        }
    }
}
