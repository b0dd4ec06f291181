//! Known-answer test from a real exchange: a hybrid X25519 + ML-KEM-768 IKEv2 handshake with
//! PSK authentication between two strongSwan 6.1.0 instances, keys logged at level 4.
//! Vector: `vectors/strongswan-6.1-hybrid-x25519-mlkem768-psk.json` (its `source` and `notes`
//! say how it was captured); `*.verify.py` next to it re-derives it independently in Python.
//!
//! Everything downstream of the two logged shared secrets is recomputed here with our key
//! schedule: SKEYSEED(0), the SK_*(0), decryption of both IKE_INTERMEDIATE messages, the IntAuth
//! chain from the raw messages, SKEYSEED(1) and SK_*(1) (RFC 9370 §2.2.2), decryption of both
//! IKE_AUTH messages, MACedIDs, signed octets, PSK AUTH values and the first Child SA's KEYMAT.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "known-answer test: any mismatch must abort loudly"
)]

mod common;

use common::{hex, load};
use pqvpn_core::crypto::{
    AeadAlgorithm, AeadKey, CryptoProvider, IV_LEN, Prf, RustCrypto, SecretBytes, TAG_LEN,
};
use pqvpn_core::ike::keys::{
    ChildSaKeys, IkeKeyLengths, IkeSaKeys, IntAuth, int_auth_a, maced_id, psk_auth, signed_octets,
    skeyseed, skeyseed_additional,
};
use pqvpn_core::wire::{IkeSpi, MessageId, PrfAlgorithm};
use serde_json::Value;

const VECTOR: &str = "strongswan-6.1-hybrid-x25519-mlkem768-psk.json";
/// IKE header + Encrypted payload header.
const AAD_LEN: usize = 28 + 4;

struct Vector {
    json: Value,
    prf: Box<dyn Prf>,
    nonce_i: Vec<u8>,
    nonce_r: Vec<u8>,
    spi_i: u64,
    spi_r: u64,
}

impl Vector {
    fn load() -> Self {
        let json = load(VECTOR);
        assert_eq!(json["prf"], "PRF_HMAC_SHA2_384");
        let spi = |k: &str| u64::from_be_bytes(hex(&json[k]).try_into().unwrap());
        Self {
            prf: RustCrypto::new().prf(PrfAlgorithm::HmacSha2_384).unwrap(),
            nonce_i: hex(&json["nonce_i"]),
            nonce_r: hex(&json["nonce_r"]),
            spi_i: spi("spi_i"),
            spi_r: spi("spi_r"),
            json,
        }
    }

    fn secret(&self, path: &[&str]) -> SecretBytes {
        let v = path.iter().fold(&self.json, |v, k| &v[*k]);
        SecretBytes::new(hex(v))
    }

    fn lengths(&self) -> IkeKeyLengths {
        IkeKeyLengths {
            prf: 48,
            integ: 0,
            encr: AeadAlgorithm::Aes256Gcm16.keymat_len(),
        }
    }

    fn assert_keys(&self, keys: &IkeSaKeys, name: &str) {
        for (field, got) in [
            ("sk_d", &keys.sk_d),
            ("sk_ai", &keys.sk_ai),
            ("sk_ar", &keys.sk_ar),
            ("sk_ei", &keys.sk_ei),
            ("sk_er", &keys.sk_er),
            ("sk_pi", &keys.sk_pi),
            ("sk_pr", &keys.sk_pr),
        ] {
            assert_eq!(got, &self.secret(&[name, field]), "{name}.{field}");
        }
    }

    /// SKEYSEED(0) and SK_*(0) from the logged X25519 g^ir.
    fn keys0(&self) -> IkeSaKeys {
        let g_ir = self.secret(&["ke0", "g_ir"]);
        let skeyseed0 = skeyseed(&*self.prf, &self.nonce_i, &self.nonce_r, &g_ir);
        assert_eq!(skeyseed0, self.secret(&["skeyseed0"]), "SKEYSEED(0)");
        IkeSaKeys::derive(
            &*self.prf,
            &skeyseed0,
            &self.nonce_i,
            &self.nonce_r,
            IkeSpi(self.spi_i),
            IkeSpi(self.spi_r),
            self.lengths(),
        )
        .unwrap()
    }

    /// SKEYSEED(1) = prf(SK_d(0), SK(1) | Ni | Nr) and SK_*(1), from the logged ML-KEM ss.
    fn keys1(&self, keys0: &IkeSaKeys) -> IkeSaKeys {
        let ss = self.secret(&["ke1", "ss"]);
        let skeyseed1 =
            skeyseed_additional(&*self.prf, &keys0.sk_d, &ss, &self.nonce_i, &self.nonce_r);
        assert_eq!(skeyseed1, self.secret(&["skeyseed1"]), "SKEYSEED(1)");
        IkeSaKeys::derive(
            &*self.prf,
            &skeyseed1,
            &self.nonce_i,
            &self.nonce_r,
            IkeSpi(self.spi_i),
            IkeSpi(self.spi_r),
            self.lengths(),
        )
        .unwrap()
    }

    /// Decrypts the SK payload of raw message `name` (IKE header, SK header, IV, ciphertext,
    /// ICV, as strongSwan sends it) and checks it against `<name>_plain`.
    fn decrypt(&self, name: &str, sk_e: &SecretBytes) -> Vec<u8> {
        let message = hex(&self.json[name]);
        let key = AeadKey::new(
            &RustCrypto::new(),
            AeadAlgorithm::Aes256Gcm16,
            sk_e.expose(),
        )
        .unwrap();
        let (aad, rest) = message.split_at(AAD_LEN);
        let (iv, rest) = rest.split_at(IV_LEN);
        let (ciphertext, icv) = rest.split_at(rest.len() - TAG_LEN);
        let mut plain = ciphertext.to_vec();
        key.open(
            iv.try_into().unwrap(),
            aad,
            &mut plain,
            icv.try_into().unwrap(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        // RFC 7296 §3.14: Padding then the Pad Length octet close the plaintext.
        let pad_len = usize::from(*plain.last().unwrap());
        plain.truncate(plain.len() - 1 - pad_len);
        assert_eq!(plain, hex(&self.json[&format!("{name}_plain")]), "{name}");
        plain
    }
}

#[test]
fn skeyseed0_and_sk0_match_strongswan() {
    let v = Vector::load();
    let keys0 = v.keys0();
    v.assert_keys(&keys0, "sk0");
    assert!(
        keys0.sk_ai.is_empty() && keys0.sk_ar.is_empty(),
        "AEAD: no SK_a"
    );
}

#[test]
fn skeyseed1_and_sk1_match_strongswan_after_the_mlkem_round() {
    let v = Vector::load();
    let keys1 = v.keys1(&v.keys0());
    v.assert_keys(&keys1, "sk1");
}

#[test]
fn intermediate_messages_decrypt_with_sk0_and_carry_the_mlkem_values() {
    let v = Vector::load();
    let keys0 = v.keys0();
    let request = v.decrypt("ike_intermediate_i", &keys0.sk_ei);
    let response = v.decrypt("ike_intermediate_r", &keys0.sk_er);
    // KE payload: 4-octet generic header, method (2), reserved (2), data.
    assert_eq!(request[4..6], 36u16.to_be_bytes(), "ML-KEM-768 in KEi(1)");
    assert_eq!(request[8..], hex(&v.json["ke1"]["ke_i"]));
    assert_eq!(response[8..], hex(&v.json["ke1"]["ke_r"]));
}

#[test]
fn int_auth_chain_matches_strongswan() {
    let v = Vector::load();
    let keys0 = v.keys0();
    let mut chain = IntAuth::new();
    for (name, key, expected_ap) in [
        ("ike_intermediate_i", &keys0.sk_pi, "int_auth_ap_i"),
        ("ike_intermediate_r", &keys0.sk_pr, "int_auth_ap_r"),
    ] {
        let message = hex(&v.json[name]);
        let p = hex(&v.json[&format!("{name}_plain")]);
        let a = int_auth_a(&message[..AAD_LEN], p.len()).unwrap();
        assert_eq!(
            [a.as_slice(), &p].concat(),
            hex(&v.json[expected_ap]),
            "{expected_ap}"
        );
        if name.ends_with("_i") {
            chain.update_initiator(&*v.prf, key, &a, &p);
        } else {
            chain.update_responder(&*v.prf, key, &a, &p);
        }
    }
    let mid = u32::try_from(v.json["ike_auth_mid"].as_u64().unwrap()).unwrap();
    let octets = chain.octets(MessageId(mid)).unwrap();
    assert_eq!(octets[..48], hex(&v.json["int_auth_i"]));
    assert_eq!(octets[48..96], hex(&v.json["int_auth_r"]));
    assert_eq!(octets, hex(&v.json["int_auth"]));
}

#[test]
fn psk_auth_of_both_sides_matches_strongswan() {
    let v = Vector::load();
    let keys1 = v.keys1(&v.keys0());
    let psk = v.secret(&["psk"]);
    let int_auth = hex(&v.json["int_auth"]);
    for (side, sk_p, real_message, peer_nonce) in [
        ("i", &keys1.sk_pi, "ike_sa_init_i", &v.nonce_r),
        ("r", &keys1.sk_pr, "ike_sa_init_r", &v.nonce_i),
    ] {
        let id_body = hex(&v.json[&format!("id_{side}_prime")]);
        let maced = maced_id(&*v.prf, sk_p, &id_body);
        assert_eq!(
            maced,
            v.secret(&[&format!("maced_id_{side}")]),
            "MACedID {side}"
        );
        let octets = signed_octets(
            &hex(&v.json[real_message]),
            peer_nonce,
            &maced,
            Some(&int_auth),
        );
        assert_eq!(
            octets,
            hex(&v.json[&format!("signed_octets_{side}")]),
            "octets {side}"
        );
        let auth = psk_auth(&*v.prf, &psk, &octets);
        assert_eq!(auth, v.secret(&[&format!("auth_{side}")]), "AUTH {side}");
        // Leaving IntAuth out (a known interop bug when IKE_INTERMEDIATE ran) breaks AUTH.
        let without = signed_octets(&hex(&v.json[real_message]), peer_nonce, &maced, None);
        assert_ne!(psk_auth(&*v.prf, &psk, &without), auth);
    }
}

#[test]
fn ike_auth_messages_decrypt_with_sk1_and_carry_the_auth_values() {
    let v = Vector::load();
    let keys1 = v.keys1(&v.keys0());
    let request = v.decrypt("ike_auth_i", &keys1.sk_ei);
    let response = v.decrypt("ike_auth_r", &keys1.sk_er);
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&request, &hex(&v.json["auth_i"])));
    assert!(contains(&response, &hex(&v.json["auth_r"])));
    assert!(contains(&request, &hex(&v.json["id_i_prime"])));
}

#[test]
fn first_child_sa_keymat_matches_strongswan() {
    let v = Vector::load();
    let keys1 = v.keys1(&v.keys0());
    let child = ChildSaKeys::derive(
        &*v.prf,
        &keys1.sk_d,
        &[],
        &v.nonce_i,
        &v.nonce_r,
        AeadAlgorithm::Aes256Gcm16.keymat_len(),
        0,
    )
    .unwrap();
    assert_eq!(child.encr_i, v.secret(&["child_encr_i"]));
    assert_eq!(child.encr_r, v.secret(&["child_encr_r"]));
}
