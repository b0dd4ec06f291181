//! Known-answer tests for X25519 from RFC 7748 "Elliptic Curves for Security": the two §5.2
//! scalar-multiplication vectors, the §5.2 iterated test (1 and 1,000 iterations) and the §6.1
//! Curve25519 Diffie-Hellman example. Vector: `vectors/rfc7748-x25519.json` (its `source` names
//! the copy of the RFC the values were taken from).
//!
//! Everything runs through pqvpn's key exchange for group 31 (`CryptoProvider::
//! start_key_exchange` / `respond_key_exchange` with [`KeyExchangeMethod::Curve25519`]): a
//! [`ReplayProvider`] hands out the vector's scalar as the 32 random octets of key generation,
//! which the production code clamps (decodeScalar25519, RFC 7748 §5), and the u-coordinate goes
//! in as the peer's public value (decodeUCoordinate masks its top bit).

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "known-answer test: any mismatch must abort loudly"
)]

mod common;

use common::{hex, load};
use pqvpn_core::crypto::{CryptoProvider, ReplayProvider};
use pqvpn_core::wire::KeyExchangeMethod;

const VECTOR: &str = "rfc7748-x25519.json";
const X25519: KeyExchangeMethod = KeyExchangeMethod::Curve25519;

/// X25519(`scalar`, `u`) as the initiator computes it: `scalar` is the key-generation randomness,
/// `u` the responder's public value. Checks that exactly the 32 scalar octets were drawn.
fn x25519(scalar: &[u8], u: &[u8]) -> Vec<u8> {
    let provider = ReplayProvider::new(scalar);
    let kex = provider.start_key_exchange(X25519).unwrap();
    assert_eq!(
        provider.remaining(),
        0,
        "X25519 key generation draws 32 octets"
    );
    kex.complete(u).unwrap().expose().to_vec()
}

/// The public value pqvpn sends for the private key drawn from `random`.
fn public_value(random: &[u8]) -> Vec<u8> {
    let provider = ReplayProvider::new(random);
    let kex = provider.start_key_exchange(X25519).unwrap();
    assert_eq!(
        provider.remaining(),
        0,
        "X25519 key generation draws 32 octets"
    );
    kex.public_value().to_vec()
}

#[test]
fn scalar_multiplication_vectors_of_section_5_2() {
    let json = load(VECTOR);
    let vectors = json["scalar_mult"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let (scalar, u, output) = (hex(&v["scalar"]), hex(&v["u"]), hex(&v["output"]));

        // Initiator's side: our key pair from the scalar, completed with u.
        assert_eq!(x25519(&scalar, &u), output, "{name}: complete");

        // Responder's side: the same scalar answers u.
        let provider = ReplayProvider::new(&scalar);
        let response = provider.respond_key_exchange(X25519, &u).unwrap();
        assert_eq!(provider.remaining(), 0, "{name}: 32 octets drawn");
        assert_eq!(
            response.shared_secret.expose(),
            output.as_slice(),
            "{name}: respond"
        );
        assert_eq!(
            response.public_value,
            public_value(&scalar),
            "{name}: responder's public value"
        );
    }
}

/// RFC 7748 §5.2, second test type: k = u = 9; each iteration sets k = X25519(k, u), u = old k.
fn iterate(iterations: usize) -> Vec<u8> {
    let json = load(VECTOR);
    let mut k = hex(&json["iterated"]["initial_k_and_u"]);
    let mut u = k.clone();
    for _ in 0..iterations {
        let next = x25519(&k, &u);
        u = core::mem::replace(&mut k, next);
    }
    k
}

#[test]
fn iterated_test_after_1_and_1000_iterations() {
    let json = load(VECTOR);
    let iterated = &json["iterated"];
    assert_eq!(
        iterate(1),
        hex(&iterated["after_1_iteration"]),
        "§5.2 after 1 iteration"
    );
    assert_eq!(
        iterate(1000),
        hex(&iterated["after_1000_iterations"]),
        "§5.2 after 1,000 iterations"
    );
}

/// The 1,000,000-iteration value of §5.2 (`after_1000000_iterations`): two million scalar
/// multiplications through the provider, about 90 s in a debug build, so it is skipped in the
/// default run (the 1,000-iteration test above exercises the same path). Run it with
/// `cargo test -p pqvpn-core --test kat_rfc7748_x25519 -- --ignored`.
#[test]
#[ignore = "2,000,000 scalar multiplications: about 90 s in a debug build"]
fn iterated_test_after_1000000_iterations() {
    let json = load(VECTOR);
    assert_eq!(
        iterate(1_000_000),
        hex(&json["iterated"]["after_1000000_iterations"]),
        "§5.2 after 1,000,000 iterations"
    );
}

#[test]
fn diffie_hellman_example_of_section_6_1_both_ways() {
    let json = load(VECTOR);
    let dh = &json["dh"];
    let (alice_private, alice_public) = (hex(&dh["alice_private"]), hex(&dh["alice_public"]));
    let (bob_private, bob_public) = (hex(&dh["bob_private"]), hex(&dh["bob_public"]));
    let shared = hex(&dh["shared_secret"]);

    assert_eq!(
        public_value(&alice_private),
        alice_public,
        "§6.1 Alice's public key"
    );
    assert_eq!(
        public_value(&bob_private),
        bob_public,
        "§6.1 Bob's public key"
    );

    // Alice initiates, Bob responds.
    let alice = ReplayProvider::new(&alice_private);
    let alice_kex = alice.start_key_exchange(X25519).unwrap();
    assert_eq!(
        alice_kex.public_value(),
        alice_public.as_slice(),
        "§6.1 Alice's public key"
    );
    let bob = ReplayProvider::new(&bob_private);
    let bob_response = bob.respond_key_exchange(X25519, &alice_public).unwrap();
    assert_eq!(
        bob_response.public_value, bob_public,
        "§6.1 Bob's public key (respond)"
    );
    assert_eq!(
        bob_response.shared_secret.expose(),
        shared.as_slice(),
        "§6.1 K at Bob"
    );
    assert_eq!(
        alice_kex
            .complete(&bob_response.public_value)
            .unwrap()
            .expose(),
        shared.as_slice(),
        "§6.1 K at Alice"
    );
    assert_eq!((alice.remaining(), bob.remaining()), (0, 0));

    // Bob initiates, Alice responds.
    let bob = ReplayProvider::new(&bob_private);
    let bob_kex = bob.start_key_exchange(X25519).unwrap();
    let alice = ReplayProvider::new(&alice_private);
    let alice_response = alice
        .respond_key_exchange(X25519, bob_kex.public_value())
        .unwrap();
    assert_eq!(
        alice_response.public_value, alice_public,
        "§6.1 Alice's public key (respond)"
    );
    assert_eq!(
        alice_response.shared_secret.expose(),
        shared.as_slice(),
        "§6.1 K at Alice"
    );
    assert_eq!(
        bob_kex.complete(&alice_public).unwrap().expose(),
        shared.as_slice(),
        "§6.1 K at Bob"
    );
    assert_eq!((alice.remaining(), bob.remaining()), (0, 0));
}
