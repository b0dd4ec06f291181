//! Known-answer tests for AES-GCM with a 16-octet ICV (ENCR_AES_GCM_16, 128- and 256-bit keys):
//! McGrew & Viega GCM specification Appendix B test cases 2, 3, 4, 14, 15 and 16, and four
//! RFC 4106-framed ESP cases of draft-mcgrew-gcm-test-01 (32-bit and extended sequence numbers).
//! Vector: `vectors/gcm-vectors.json` (its `source` names where each set was copied from).
//!
//! The AEAD is keyed through [`AeadKey`] as the SK payload and ESP use it: keying material
//! key | 4-octet salt and the 8-octet explicit IV, with nonce = salt | IV (RFC 4106 §4,
//! RFC 5282 §4). For the specification's 12-octet nonces the salt is nonce[0..4] and the IV
//! nonce[4..12]. The ESP cases are checked as raw AEAD with their AAD (SPI | sequence number)
//! and opened from the IV, ciphertext and ICV found in their ESP packet; the ESP framing itself
//! belongs to the ESP module.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "known-answer test: any mismatch must abort loudly"
)]

mod common;

use common::{hex, load};
use pqvpn_core::crypto::{AeadAlgorithm, AeadKey, Error, IV_LEN, RustCrypto, SALT_LEN, TAG_LEN};
use serde_json::Value;

const VECTOR: &str = "gcm-vectors.json";

fn algorithm(v: &Value) -> AeadAlgorithm {
    match v["key_bits"].as_u64().unwrap() {
        128 => AeadAlgorithm::Aes128Gcm16,
        256 => AeadAlgorithm::Aes256Gcm16,
        other => panic!("{}: {other}-bit key", v["name"]),
    }
}

/// Seals `plaintext` and opens `ciphertext | tag` under `keymat` and `iv` and checks both
/// against the vector; then checks that a changed ciphertext, tag, AAD or IV makes opening fail.
fn check_aead(
    algorithm: AeadAlgorithm,
    keymat: &[u8],
    iv: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    sealed: (&[u8], &[u8]),
    name: &str,
) {
    let (ciphertext, tag) = sealed;
    let key = AeadKey::new(&RustCrypto::new(), algorithm, keymat).unwrap();
    let iv: [u8; IV_LEN] = iv.try_into().unwrap();
    let tag: [u8; TAG_LEN] = tag.try_into().unwrap();

    let mut buf = plaintext.to_vec();
    let got_tag = key.seal(&iv, aad, &mut buf).unwrap();
    assert_eq!(buf, ciphertext, "{name}: ciphertext");
    assert_eq!(got_tag, tag, "{name}: tag");

    let mut buf = ciphertext.to_vec();
    key.open(&iv, aad, &mut buf, &tag).unwrap();
    assert_eq!(buf, plaintext, "{name}: plaintext");

    let open = |iv: &[u8; IV_LEN], aad: &[u8], ciphertext: &[u8], tag: &[u8; TAG_LEN]| {
        key.open(iv, aad, &mut ciphertext.to_vec(), tag)
    };
    let flip = |bytes: &[u8], i: usize| {
        let mut v = bytes.to_vec();
        v[i] ^= 0x01;
        v
    };
    let flipped_tag: [u8; TAG_LEN] = flip(&tag, 0).try_into().unwrap();
    let flipped_iv: [u8; IV_LEN] = flip(&iv, IV_LEN - 1).try_into().unwrap();
    // Several vectors have no AAD: there, one extra octet of AAD must make opening fail.
    let changed_aad = if aad.is_empty() {
        vec![0]
    } else {
        flip(aad, 0)
    };
    for (result, what) in [
        (
            open(&iv, aad, &flip(ciphertext, ciphertext.len() - 1), &tag),
            "ciphertext",
        ),
        (open(&iv, aad, ciphertext, &flipped_tag), "tag"),
        (open(&iv, &changed_aad, ciphertext, &tag), "AAD"),
        (open(&flipped_iv, aad, ciphertext, &tag), "IV"),
    ] {
        assert_eq!(result, Err(Error::DecryptFailed), "{name}: changed {what}");
    }
}

#[test]
fn gcm_spec_test_cases() {
    let json = load(VECTOR);
    let vectors = json["gcm_spec"].as_array().unwrap();
    let names: Vec<_> = vectors
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [2, 3, 4, 14, 15, 16].map(|n| format!("GCM spec Test Case {n}")),
    );
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let algorithm = algorithm(v);
        let (key, nonce) = (hex(&v["key"]), hex(&v["nonce"]));
        assert_eq!(key.len(), algorithm.key_len(), "{name}: key length");
        let (salt, iv) = nonce.split_at(SALT_LEN);
        assert_eq!(
            salt,
            hex(&v["salt"]).as_slice(),
            "{name}: salt = nonce[0..4]"
        );
        assert_eq!(iv, hex(&v["iv"]).as_slice(), "{name}: IV = nonce[4..12]");
        let aad = hex(&v["aad"]);
        assert_eq!(v["has_aad"].as_bool(), Some(!aad.is_empty()), "{name}");
        check_aead(
            algorithm,
            &[key.as_slice(), salt].concat(),
            iv,
            &aad,
            &hex(&v["plaintext"]),
            (&hex(&v["ciphertext"]), &hex(&v["tag"])),
            name,
        );
    }
}

#[test]
fn rfc4106_esp_test_cases() {
    let json = load(VECTOR);
    let vectors = json["rfc4106_esp"].as_array().unwrap();
    assert_eq!(vectors.len(), 4);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let algorithm = algorithm(v);
        let keymat = hex(&v["keymat"]);
        assert_eq!(
            keymat,
            [hex(&v["key"]), hex(&v["salt"])].concat(),
            "{name}: KEYMAT = key | salt"
        );
        assert_eq!(
            hex(&v["nonce"]),
            [hex(&v["salt"]), hex(&v["iv"])].concat(),
            "{name}: nonce = salt | IV"
        );

        // AAD = SPI | sequence number: 32 bits, or the 64-bit ESN (RFC 4106 §5).
        let (spi, sequence) = (hex(&v["spi"]), hex(&v["sequence_number"]));
        let esn = v["extended_sequence_numbers"].as_bool().unwrap();
        assert_eq!(
            sequence.len(),
            if esn { 8 } else { 4 },
            "{name}: sequence number"
        );
        let aad = hex(&v["aad"]);
        assert_eq!(aad, [spi.as_slice(), &sequence].concat(), "{name}: AAD");

        let (plaintext, ciphertext, tag) =
            (hex(&v["plaintext"]), hex(&v["ciphertext"]), hex(&v["tag"]));
        check_aead(
            algorithm,
            &keymat,
            &hex(&v["iv"]),
            &aad,
            &plaintext,
            (&ciphertext, &tag),
            name,
        );

        // The packet carries SPI | low 32 bits of the sequence number | IV | ciphertext | ICV;
        // open what it carries.
        let packet = hex(&v["esp_packet"]);
        assert_eq!(packet[..4], spi, "{name}: packet SPI");
        assert_eq!(
            packet[4..8],
            sequence[sequence.len() - 4..],
            "{name}: packet sequence"
        );
        let (iv, rest) = packet[8..].split_at(IV_LEN);
        let (body, icv) = rest.split_at(rest.len() - TAG_LEN);
        let key = AeadKey::new(&RustCrypto::new(), algorithm, &keymat).unwrap();
        let mut buf = body.to_vec();
        key.open(
            iv.try_into().unwrap(),
            &aad,
            &mut buf,
            icv.try_into().unwrap(),
        )
        .unwrap_or_else(|e| panic!("{name}: ESP packet: {e}"));
        assert_eq!(buf, plaintext, "{name}: plaintext from the ESP packet");
    }
}
