//! Known-answer tests for the IKEv2 PRFs PRF_HMAC_SHA2_256/384/512 from RFC 4868 §2.7.1, test
//! cases PRF-1 to PRF-6 (all of that section; keys shorter than, equal to and longer than the
//! block size). Vector: `vectors/rfc4868-hmac-sha2.json` (its `source` names the RFC copy).
//!
//! The PRFs come from the provider ([`CryptoProvider::prf`]) as the IKE key schedule gets them.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "known-answer test: any mismatch must abort loudly"
)]

mod common;

use common::{hex, load};
use pqvpn_core::crypto::{CryptoProvider, RustCrypto};
use pqvpn_core::wire::PrfAlgorithm;

const VECTOR: &str = "rfc4868-hmac-sha2.json";

/// Checks `algorithm` (output length `output_len`, RFC 4868 §2.4: no truncation) against
/// PRF-1 … PRF-6, whose expected outputs are in `field`.
fn check(algorithm: PrfAlgorithm, output_len: usize, field: &str) {
    let json = load(VECTOR);
    let vectors = json["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 6, "PRF-1 … PRF-6");
    let prf = RustCrypto::new().prf(algorithm).unwrap();
    assert_eq!(prf.algorithm(), algorithm);
    assert_eq!(prf.output_len(), output_len, "{algorithm} output length");
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let (key, data) = (hex(&v["key"]), hex(&v["data"]));
        let expected = hex(&v[field]);
        assert_eq!(expected.len(), output_len, "{name} {field}");
        assert_eq!(
            prf.prf(&key, &[&data]).expose(),
            expected.as_slice(),
            "{name} {algorithm}"
        );
        // The key schedule passes its inputs in parts (e.g. Ni | Nr); the split must not
        // matter.
        let (head, tail) = data.split_at(data.len() / 2);
        assert_eq!(
            prf.prf(&key, &[head, &[], tail]).expose(),
            expected.as_slice(),
            "{name} {algorithm} in parts"
        );
    }
}

#[test]
fn prf_hmac_sha2_256_test_cases_1_to_6() {
    check(PrfAlgorithm::HmacSha2_256, 32, "prf_hmac_sha_256");
}

#[test]
fn prf_hmac_sha2_384_test_cases_1_to_6() {
    check(PrfAlgorithm::HmacSha2_384, 48, "prf_hmac_sha_384");
}

#[test]
fn prf_hmac_sha2_512_test_cases_1_to_6() {
    check(PrfAlgorithm::HmacSha2_512, 64, "prf_hmac_sha_512");
}
