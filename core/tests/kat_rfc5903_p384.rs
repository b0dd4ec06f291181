//! Known-answer tests for ECP-384 in IKEv2 (group 20): the RFC 5903 §8.2 test vector in both
//! directions, and Wycheproof `ecdh_secp384r1_ecpoint_test.json` vectors (valid points, a
//! compressed point, a zero x-coordinate shared secret, points off the curve, an empty and an
//! invalid compressed encoding). Vector: `vectors/rfc5903-p384-ecdh.json` (its `source` names
//! the RFC copy and the Wycheproof commit and tcIds).
//!
//! Everything runs through pqvpn's key exchange with a [`ReplayProvider`] that hands out the
//! private key as the 48 random octets of key generation (a big-endian scalar). The KE payload
//! data is `x | y` (96 octets) and the shared secret the x coordinate only (48 octets),
//! RFC 5903 §7 and §9.
//!
//! Wycheproof gives public keys as SEC1 point encodings. Uncompressed points (`04 | x | y`) map
//! to IKEv2 KE data by dropping the `04`. The other encodings cannot occur in IKEv2 and are
//! mapped as follows: the empty encoding (tcId 789) is empty KE data, a wrong length; a
//! compressed point (tcIds 2, 790) sent as its bare x coordinate is 48 octets, a wrong length;
//! and since tcId 790's x has no point on the curve at all, any `x | y` built from it must fail
//! the on-curve check.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "known-answer test: any mismatch must abort loudly"
)]

mod common;

use common::{hex, load};
use pqvpn_core::crypto::{CryptoProvider, Error, InvalidPeerValue, ReplayProvider};
use pqvpn_core::wire::{KePayload, KeyExchangeMethod};
use serde_json::Value;

const VECTOR: &str = "rfc5903-p384-ecdh.json";
const ECP384: KeyExchangeMethod = KeyExchangeMethod::Ecp384;

fn invalid(reason: InvalidPeerValue) -> Error {
    Error::InvalidPeerValue {
        method: ECP384,
        reason,
    }
}

/// The KE payload data of a complete Key Exchange payload as printed in the RFC (generic payload
/// header, then the body parsed by our codec); checks that it is for group 20.
fn ke_data(payload: &[u8], name: &str) -> Vec<u8> {
    let length = usize::from(u16::from_be_bytes([payload[2], payload[3]]));
    assert_eq!(length, payload.len(), "{name}: Payload Length");
    let ke = KePayload::parse(&payload[4..]).unwrap();
    assert_eq!(ke.method, ECP384, "{name}: DH Group Num");
    ke.data
}

/// A Wycheproof private key as the 48-octet scalar (it may carry a leading zero octet).
fn scalar(v: &Value) -> Vec<u8> {
    let mut private = hex(&v["private"]);
    if private.len() == 49 {
        assert_eq!(private.remove(0), 0, "tcId {}: leading octet", v["tc_id"]);
    }
    assert_eq!(private.len(), 48, "tcId {}", v["tc_id"]);
    private
}

/// The Wycheproof vector with `tc_id`.
fn wycheproof(json: &Value, tc_id: u64) -> &Value {
    json["wycheproof"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["tc_id"] == tc_id)
        .unwrap()
}

/// Runs the exchange with our private key `scalar` against the peer's KE data `peer`, as
/// responder and as initiator, and returns both results (errors included). Whether a rejected
/// value is rejected before or after the responder draws its key is left open.
fn both_sides(scalar: &[u8], peer: &[u8], name: &str) -> [Result<Vec<u8>, Error>; 2] {
    let responder = ReplayProvider::new(scalar);
    let respond = responder
        .respond_key_exchange(ECP384, peer)
        .map(|r| r.shared_secret.expose().to_vec());
    if respond.is_ok() {
        assert_eq!(responder.remaining(), 0, "{name}: respond draws 48 octets");
    }

    let initiator = ReplayProvider::new(scalar);
    let kex = initiator.start_key_exchange(ECP384).unwrap();
    assert_eq!(
        initiator.remaining(),
        0,
        "{name}: key generation draws 48 octets"
    );
    let complete = kex.complete(peer).map(|s| s.expose().to_vec());
    [respond, complete]
}

#[test]
fn rfc5903_section_8_2_both_directions() {
    let json = load(VECTOR);
    let v = &json["rfc5903_8_2"];
    assert_eq!(v["dh_group"], u64::from(ECP384.value()), "group 20");
    let (i, r) = (hex(&v["i"]), hex(&v["r"]));
    let kei = ke_data(&hex(&v["kei_payload"]), "§8.2 KEi");
    let ker = ke_data(&hex(&v["ker_payload"]), "§8.2 KEr");
    assert_eq!(
        kei,
        [hex(&v["gix"]), hex(&v["giy"])].concat(),
        "§8.2 KEi = gix | giy"
    );
    assert_eq!(
        ker,
        [hex(&v["grx"]), hex(&v["gry"])].concat(),
        "§8.2 KEr = grx | gry"
    );
    let girx = hex(&v["girx"]);
    assert_eq!(
        hex(&v["shared_secret"]),
        girx,
        "§8.2: the shared secret is girx"
    );

    // Initiator: i gives KEi; completing with KEr gives girx (x only, 48 octets).
    let initiator = ReplayProvider::new(&i);
    let kex = initiator.start_key_exchange(ECP384).unwrap();
    assert_eq!(initiator.remaining(), 0, "§8.2: 48 octets drawn");
    assert_eq!(kex.public_value(), kei.as_slice(), "§8.2 g^i = KEi data");
    let secret = kex.complete(&ker).unwrap();
    assert_eq!(
        secret.expose(),
        girx.as_slice(),
        "§8.2 g^ir at the initiator"
    );

    // Responder: r answers KEi with KEr and gets the same girx.
    let responder = ReplayProvider::new(&r);
    let response = responder.respond_key_exchange(ECP384, &kei).unwrap();
    assert_eq!(responder.remaining(), 0, "§8.2: 48 octets drawn");
    assert_eq!(response.public_value, ker, "§8.2 g^r = KEr data");
    assert_eq!(
        response.shared_secret.expose(),
        girx.as_slice(),
        "§8.2 g^ir at the responder"
    );
    assert_ne!(
        response.shared_secret.expose(),
        hex(&v["giry"]).as_slice(),
        "§8.2: giry is not part of g^ir"
    );
}

#[test]
fn wycheproof_valid_uncompressed_points() {
    let json = load(VECTOR);
    for tc_id in [1, 3] {
        let v = wycheproof(&json, tc_id);
        assert_eq!(v["result"], "valid", "tcId {tc_id}");
        let public = hex(&v["public"]);
        assert_eq!(
            (public.len(), public[0]),
            (97, 0x04),
            "tcId {tc_id}: uncompressed"
        );
        let shared = hex(&v["shared"]);
        for got in both_sides(&scalar(v), &public[1..], &format!("tcId {tc_id}")) {
            assert_eq!(got.unwrap(), shared, "tcId {tc_id} ({})", v["comment"]);
        }
    }
    // tcId 3's shared x coordinate is zero: P-384 has no all-zero check, it must be accepted.
    assert_eq!(hex(&wycheproof(&json, 3)["shared"]), [0; 48]);
}

#[test]
fn wycheproof_compressed_point_is_a_wrong_length_in_ikev2() {
    let json = load(VECTOR);
    let v = wycheproof(&json, 2);
    let compressed = hex(&v["public"]);
    assert_eq!(
        (compressed.len(), compressed[0]),
        (49, 0x02),
        "tcId 2: compressed"
    );
    // The same point and private key as tcId 1, so the point itself is covered there.
    let normal = wycheproof(&json, 1);
    assert_eq!(
        compressed[1..],
        hex(&normal["public"])[1..49],
        "tcId 2: x of tcId 1"
    );
    assert_eq!(v["shared"], normal["shared"], "tcId 2: shared of tcId 1");

    for (data, what) in [
        (&compressed[1..], "bare x"),
        (&compressed[..], "SEC1 encoding"),
    ] {
        for got in both_sides(&scalar(v), data, "tcId 2") {
            assert_eq!(
                got.unwrap_err(),
                invalid(InvalidPeerValue::WrongLength {
                    expected: 96,
                    got: data.len()
                }),
                "tcId 2 ({what})"
            );
        }
    }
}

#[test]
fn wycheproof_points_not_on_the_curve_are_rejected() {
    let json = load(VECTOR);
    for tc_id in [773, 774, 775] {
        let v = wycheproof(&json, tc_id);
        assert_eq!(v["result"], "invalid", "tcId {tc_id}");
        assert_eq!(v["shared"], "", "tcId {tc_id}");
        let public = hex(&v["public"]);
        assert_eq!(
            (public.len(), public[0]),
            (97, 0x04),
            "tcId {tc_id}: uncompressed"
        );
        for got in both_sides(&scalar(v), &public[1..], &format!("tcId {tc_id}")) {
            assert_eq!(
                got.unwrap_err(),
                invalid(InvalidPeerValue::PointNotOnCurve),
                "tcId {tc_id} ({})",
                v["comment"]
            );
        }
    }
}

#[test]
fn wycheproof_empty_encoding_is_a_wrong_length() {
    let json = load(VECTOR);
    let v = wycheproof(&json, 789);
    assert_eq!(
        (v["result"].as_str(), v["public"].as_str()),
        (Some("invalid"), Some(""))
    );
    for got in both_sides(&scalar(v), &[], "tcId 789") {
        assert_eq!(
            got.unwrap_err(),
            invalid(InvalidPeerValue::WrongLength {
                expected: 96,
                got: 0
            }),
            "tcId 789"
        );
    }
}

#[test]
fn wycheproof_invalid_compressed_point_is_rejected() {
    let json = load(VECTOR);
    let v = wycheproof(&json, 790);
    assert_eq!(v["result"], "invalid", "tcId 790");
    let compressed = hex(&v["public"]);
    assert_eq!(
        (compressed.len(), compressed[0]),
        (49, 0x02),
        "tcId 790: compressed"
    );
    let x = &compressed[1..];

    // As a bare x coordinate or the raw SEC1 encoding: a wrong length.
    for data in [x, &compressed[..]] {
        for got in both_sides(&scalar(v), data, "tcId 790") {
            assert_eq!(
                got.unwrap_err(),
                invalid(InvalidPeerValue::WrongLength {
                    expected: 96,
                    got: data.len()
                }),
                "tcId 790 ({} octets)",
                data.len()
            );
        }
    }
    // x^3 - 3x + b is not a square for this x, so no y puts x | y on the curve.
    for y in [[0u8; 48], [0x01; 48]] {
        let data = [x, &y].concat();
        for got in both_sides(&scalar(v), &data, "tcId 790") {
            assert_eq!(
                got.unwrap_err(),
                invalid(InvalidPeerValue::PointNotOnCurve),
                "tcId 790 (x | {:02x}..)",
                y[0]
            );
        }
    }
}
