//! Known-answer tests for Curve25519 in IKEv2 (group 31): the RFC 8031 Appendix A numerical
//! example, and Wycheproof `x25519_test.json` vectors for low-order public keys (all-zero shared
//! secret) and non-canonical public keys. Vector: `vectors/rfc8031-curve25519-ikev2.json` (its
//! `source` names the RFC copy and the Wycheproof commit and tcIds).
//!
//! Everything runs through pqvpn's key exchange with a [`ReplayProvider`] that hands out the
//! vector's private key as the 32 random octets of key generation.
//!
//! pqvpn rejects an all-zero X25519 result as policy (RFC 7748 §6.1 allows the check; RFC 8031
//! does not require it), so every Wycheproof zero-shared-secret vector, "acceptable" in
//! Wycheproof's terms, must fail with [`InvalidPeerValue::AllZeroSharedSecret`] on both sides.
//! Non-canonical public keys must be accepted (RFC 8031 §3.2: mask the top bit, accept values
//! >= p) and give Wycheproof's shared secret.

#![expect(
    clippy::unwrap_used,
    reason = "known-answer test: any mismatch must abort loudly"
)]

mod common;

use common::{hex, load};
use pqvpn_core::crypto::{CryptoProvider, Error, InvalidPeerValue, ReplayProvider};
use pqvpn_core::wire::KeyExchangeMethod;
use serde_json::Value;

const VECTOR: &str = "rfc8031-curve25519-ikev2.json";
const X25519: KeyExchangeMethod = KeyExchangeMethod::Curve25519;

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

/// The Wycheproof vectors of `group`, each with its tcId.
fn wycheproof(json: &Value, group: &str) -> Vec<(u64, Value)> {
    json[group]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["tc_id"].as_u64().unwrap(), v.clone()))
        .collect()
}

#[test]
fn rfc8031_appendix_a_example() {
    let json = load(VECTOR);
    let v = &json["rfc8031_example"];
    assert_eq!(v["dh_group"], u64::from(X25519.value()), "group 31");
    let (random_i, random_r) = (hex(&v["random_i"]), hex(&v["random_r"]));
    let (pub_i, pub_r) = (hex(&v["pub_i"]), hex(&v["pub_r"]));
    let shared = hex(&v["shared_secret"]);

    // The initiator draws random_i and sends pub_i.
    let initiator = ReplayProvider::new(&random_i);
    let kex_i = initiator.start_key_exchange(X25519).unwrap();
    assert_eq!(
        kex_i.public_value(),
        pub_i.as_slice(),
        "Appendix A: public key i"
    );

    // The responder draws random_r, answers with pub_r and gets SHARED_SECRET.
    let responder = ReplayProvider::new(&random_r);
    let response = responder.respond_key_exchange(X25519, &pub_i).unwrap();
    assert_eq!(response.public_value, pub_r, "Appendix A: public key r");
    assert_eq!(
        response.shared_secret.expose(),
        shared.as_slice(),
        "Appendix A: SHARED_SECRET at r"
    );
    assert_eq!(
        kex_i.complete(&pub_r).unwrap().expose(),
        shared.as_slice(),
        "Appendix A: SHARED_SECRET at i"
    );
    assert_eq!((initiator.remaining(), responder.remaining()), (0, 0));
}

#[test]
fn rfc8031_appendix_a_private_keys_are_clamped() {
    let json = load(VECTOR);
    let v = &json["rfc8031_example"];
    for side in ["i", "r"] {
        let random = hex(&v[&format!("random_{side}")]);
        let fixed = hex(&v[&format!("fixed_{side}")]);
        let mut big_endian = hex(&v[&format!("d_{side}_big_endian")]);
        big_endian.reverse();
        assert_eq!(
            big_endian, fixed,
            "Appendix A: d_{side} is fixed_{side} byte-reversed"
        );
        assert_ne!(random, fixed, "Appendix A: random_{side} needs clamping");
        // The random octets and their clamped form are the same private key: our key
        // generation clamps what it draws.
        assert_eq!(
            public_value(&random),
            public_value(&fixed),
            "Appendix A: random_{side} and fixed_{side}"
        );
        assert_eq!(
            public_value(&fixed),
            hex(&v[&format!("pub_{side}")]),
            "Appendix A: pub_{side} from fixed_{side}"
        );
    }
}

#[test]
fn wycheproof_low_order_public_keys_are_rejected_as_all_zero() {
    let json = load(VECTOR);
    let vectors = wycheproof(&json, "wycheproof_zero_shared_secret");
    assert_eq!(
        vectors.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [32, 33, 63, 64, 65, 66, 69, 74, 76, 83]
    );
    let expected = Error::InvalidPeerValue {
        method: X25519,
        reason: InvalidPeerValue::AllZeroSharedSecret,
    };
    for (tc_id, v) in vectors {
        assert_eq!(
            hex(&v["shared"]),
            [0; 32],
            "tcId {tc_id}: the vector's K is zero"
        );
        assert!(
            v["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "ZeroSharedSecret"),
            "tcId {tc_id}: flagged ZeroSharedSecret"
        );
        let (private, public) = (hex(&v["private"]), hex(&v["public"]));

        let responder = ReplayProvider::new(&private);
        assert_eq!(
            responder.respond_key_exchange(X25519, &public).unwrap_err(),
            expected,
            "tcId {tc_id}: respond"
        );
        assert_eq!(responder.remaining(), 0, "tcId {tc_id}");

        let initiator = ReplayProvider::new(&private);
        let kex = initiator.start_key_exchange(X25519).unwrap();
        assert_eq!(
            kex.complete(&public).unwrap_err(),
            expected,
            "tcId {tc_id}: complete"
        );
        assert_eq!(initiator.remaining(), 0, "tcId {tc_id}");
    }
}

#[test]
fn wycheproof_non_canonical_public_keys_are_accepted() {
    let json = load(VECTOR);
    let vectors = wycheproof(&json, "wycheproof_non_canonical_public");
    assert_eq!(
        vectors.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [90, 91, 99]
    );
    for (tc_id, v) in vectors {
        let (private, public, shared) = (hex(&v["private"]), hex(&v["public"]), hex(&v["shared"]));
        assert_eq!(v["result"], "acceptable", "tcId {tc_id}");

        let responder = ReplayProvider::new(&private);
        let response = responder.respond_key_exchange(X25519, &public).unwrap();
        assert_eq!(
            response.shared_secret.expose(),
            shared.as_slice(),
            "tcId {tc_id}: respond"
        );
        assert_eq!(responder.remaining(), 0, "tcId {tc_id}");

        let initiator = ReplayProvider::new(&private);
        let kex = initiator.start_key_exchange(X25519).unwrap();
        assert_eq!(
            kex.complete(&public).unwrap().expose(),
            shared.as_slice(),
            "tcId {tc_id}: complete"
        );
        assert_eq!(initiator.remaining(), 0, "tcId {tc_id}");
    }
}
