//! Known-answer tests for ChaCha20-Poly1305 in IKEv2 and ESP from RFC 7634: the raw AEAD of the
//! Appendix A ESP example (KEYMAT, IV, AAD = SPI | sequence number, plaintext → ciphertext and
//! tag) and the whole Appendix B IKEv2 example (an INFORMATIONAL request whose Encrypted payload
//! carries a SET_WINDOW_SIZE notify). Vector: `vectors/rfc7634-chacha20poly1305.json` (its
//! `source` names the RFC copy).
//!
//! The ESP packet framing of Appendix A is tested with the ESP module, not here. The one-time
//! Poly1305 key and the Poly1305 input of the examples are internal to the AEAD and have no
//! counterpart in pqvpn's interface; they are checked only through the tag they produce.
//!
//! The AEAD is keyed through [`AeadKey`] from KEYMAT = key | 4-octet salt and takes the 8-octet
//! explicit IV, as the SK payload and ESP use it (RFC 7634 §2: nonce = salt | IV).

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "known-answer test: any mismatch must abort loudly"
)]

mod common;

use common::{hex, load};
use pqvpn_core::crypto::{AeadAlgorithm, AeadKey, Error, IV_LEN, RustCrypto, TAG_LEN};
use pqvpn_core::wire::{
    EncryptedPayload, ExchangeType, Flags, Header, IkeSpi, Message, MessageId, NotifyPayload,
    NotifyType, Payload, PayloadType, ProtocolId, locate_encrypted, parse_payloads,
};

const VECTOR: &str = "rfc7634-chacha20poly1305.json";
const CHACHA: AeadAlgorithm = AeadAlgorithm::ChaCha20Poly1305;

/// Seals `plaintext` and opens `ciphertext | tag` under `keymat` and `iv` and checks both
/// against the vector; then checks that a flipped bit in the ciphertext, tag, AAD or IV makes
/// opening fail.
fn check_aead(
    keymat: &[u8],
    iv: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    sealed: (&[u8], &[u8]),
    name: &str,
) {
    let (ciphertext, tag) = sealed;
    let key = AeadKey::new(&RustCrypto::new(), CHACHA, keymat).unwrap();
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
    let flipped_tag: [u8; TAG_LEN] = flip(&tag, TAG_LEN - 1).try_into().unwrap();
    let flipped_iv: [u8; IV_LEN] = flip(&iv, 0).try_into().unwrap();
    for (result, what) in [
        (open(&iv, aad, &flip(ciphertext, 0), &tag), "ciphertext"),
        (open(&iv, aad, ciphertext, &flipped_tag), "tag"),
        (
            open(&iv, &flip(aad, aad.len() - 1), ciphertext, &tag),
            "AAD",
        ),
        (open(&flipped_iv, aad, ciphertext, &tag), "IV"),
    ] {
        assert_eq!(
            result,
            Err(Error::DecryptFailed),
            "{name}: flipped {what} bit"
        );
    }
}

#[test]
fn appendix_a_esp_example_raw_aead() {
    let json = load(VECTOR);
    let v = &json["esp_example_appendix_a"];
    let (keymat, key, salt) = (hex(&v["keymat"]), hex(&v["key"]), hex(&v["salt"]));
    let iv = hex(&v["iv"]);
    assert_eq!(
        keymat,
        [key, salt.clone()].concat(),
        "Appendix A: KEYMAT = key | salt"
    );
    assert_eq!(
        hex(&v["nonce"]),
        [salt, iv.clone()].concat(),
        "Appendix A: nonce = salt | IV"
    );
    // AAD = SPI | 32-bit sequence number (no ESN).
    let sequence = u32::try_from(v["sequence_number"].as_u64().unwrap()).unwrap();
    let aad = hex(&v["aad"]);
    assert_eq!(
        aad,
        [hex(&v["spi"]), sequence.to_be_bytes().to_vec()].concat(),
        "Appendix A: AAD"
    );
    check_aead(
        &keymat,
        &iv,
        &aad,
        &hex(&v["plaintext"]),
        (&hex(&v["ciphertext"]), &hex(&v["tag"])),
        "Appendix A",
    );
}

#[test]
fn appendix_b_ikev2_message_parses() {
    let json = load(VECTOR);
    let v = &json["ikev2_example_appendix_b"];
    let bytes = hex(&v["ike_message"]);
    let message = Message::parse(&bytes).unwrap();
    let spi = |k: &str| IkeSpi(u64::from_be_bytes(hex(&v[k]).try_into().unwrap()));
    let message_id = MessageId(u32::try_from(v["message_id"].as_u64().unwrap()).unwrap());
    assert_eq!(
        message.header,
        Header {
            spi_i: spi("initiator_spi"),
            spi_r: spi("responder_spi"),
            next_payload: PayloadType::Encrypted,
            major_version: 2,
            minor_version: 0,
            exchange_type: ExchangeType::Informational,
            flags: Flags::default(),
            message_id,
            length: u32::try_from(bytes.len()).unwrap(),
        },
        "Appendix B: IKE header"
    );
    // The SK body (IV | ciphertext | ICV) stays opaque to the parser.
    let encrypted = hex(&v["encrypted_payload"]);
    assert_eq!(
        bytes[Header::LEN..],
        encrypted,
        "Appendix B: Encrypted payload"
    );
    assert_eq!(
        message.payloads,
        [Payload::Sk(EncryptedPayload {
            next_inner: PayloadType::Notify,
            data: encrypted[4..].to_vec(),
        })],
        "Appendix B: one SK payload"
    );
    assert_eq!(
        encrypted[4..],
        [hex(&v["iv"]), hex(&v["ciphertext"]), hex(&v["tag"])].concat(),
        "Appendix B: SK body = IV | ciphertext | ICV"
    );
}

#[test]
fn appendix_b_ikev2_sk_payload_seals_and_opens() {
    let json = load(VECTOR);
    let v = &json["ikev2_example_appendix_b"];
    let keymat = [hex(&v["key"]), hex(&v["salt"])].concat();
    assert_eq!(
        hex(&v["nonce"]),
        [hex(&v["salt"]), hex(&v["iv"])].concat(),
        "Appendix B: nonce = salt | IV"
    );
    let plaintext = hex(&v["plaintext"]);
    let (ciphertext, tag) = (hex(&v["ciphertext"]), hex(&v["tag"]));

    // The AAD and body come from the message as the IKE SA finds them.
    let bytes = hex(&v["ike_message"]);
    let view = locate_encrypted(&bytes).unwrap().unwrap();
    assert_eq!(
        view.aad(),
        hex(&v["aad"]).as_slice(),
        "Appendix B: AAD = IKE header | SK header"
    );
    assert_eq!(
        view.next_inner(),
        PayloadType::Notify,
        "Appendix B: SK Next Payload"
    );
    let (iv, rest) = view.body().split_at(IV_LEN);
    let (body_ciphertext, icv) = rest.split_at(rest.len() - TAG_LEN);
    assert_eq!(iv, hex(&v["iv"]).as_slice(), "Appendix B: IV");
    assert_eq!(
        body_ciphertext,
        ciphertext.as_slice(),
        "Appendix B: ciphertext"
    );
    assert_eq!(icv, tag.as_slice(), "Appendix B: ICV");

    check_aead(
        &keymat,
        iv,
        view.aad(),
        &plaintext,
        (&ciphertext, &tag),
        "Appendix B",
    );

    // Inside: the Notify payload, no padding, Pad Length 0 (RFC 7296 §3.14).
    let (pad_length, inner) = plaintext.split_last().unwrap();
    assert_eq!(*pad_length, 0, "Appendix B: Pad Length");
    assert_eq!(inner, hex(&v["notify_payload"]).as_slice());
    assert_eq!(
        parse_payloads(view.next_inner(), inner).unwrap(),
        [Payload::Notify(NotifyPayload {
            protocol_id: ProtocolId::from(0),
            spi: Vec::new(),
            notify_type: NotifyType::SetWindowSize,
            data: 10u32.to_be_bytes().to_vec(),
        })],
        "Appendix B: SET_WINDOW_SIZE 10"
    );
}
