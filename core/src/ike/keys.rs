//! The IKEv2 key schedule: `prf+`, SKEYSEED and the seven SK_* keys ([RFC 7296 §2.13–2.14]),
//! their update after each additional key exchange ([RFC 9370 §2.2.2]), the IntAuth chain over
//! IKE_INTERMEDIATE messages ([RFC 9242 §3.3.2]), PSK authentication ([RFC 7296 §2.15]), Child SA
//! KEYMAT ([RFC 7296 §2.17], [RFC 9370 §2.2.4]) and IKE SA rekeying ([RFC 7296 §2.18]).
//!
//! Every function is pure: keys in, keys out, through the provider's [`Prf`].
//!
//! [RFC 7296 §2.13–2.14]: https://www.rfc-editor.org/rfc/rfc7296#section-2.13
//! [RFC 7296 §2.15]: https://www.rfc-editor.org/rfc/rfc7296#section-2.15
//! [RFC 7296 §2.17]: https://www.rfc-editor.org/rfc/rfc7296#section-2.17
//! [RFC 7296 §2.18]: https://www.rfc-editor.org/rfc/rfc7296#section-2.18
//! [RFC 9370 §2.2.2]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.2
//! [RFC 9370 §2.2.4]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.4
//! [RFC 9242 §3.3.2]: https://www.rfc-editor.org/rfc/rfc9242#section-3.3.2

use crate::crypto::{Prf, SecretBytes, SharedSecret};
use crate::wire::{IkeSpi, MessageId};

/// The pad string of the PSK authentication key (RFC 7296 §2.15).
pub const KEY_PAD_FOR_IKEV2: &[u8] = b"Key Pad for IKEv2";

/// Octets of an IKE header (RFC 7296 §3.1).
const IKE_HEADER_LEN: usize = 28;
/// Octets of a generic payload header (RFC 7296 §3.2).
const GENERIC_HEADER_LEN: usize = 4;

/// Why a key-schedule computation was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyScheduleError {
    /// `prf+` can produce at most 255 PRF outputs (RFC 7296 §2.13).
    #[error("prf+ asked for {requested} octets, at most {max} are possible")]
    PrfPlusTooLong {
        /// Octets asked for.
        requested: usize,
        /// The limit for this PRF.
        max: usize,
    },
    /// The message prefix given for IntAuth is shorter than an IKE header plus an SK header.
    #[error("IntAuth message prefix too short")]
    IntAuthPrefixTooShort,
    /// The adjusted IKE or SK payload length does not fit its field.
    #[error("IntAuth message too long")]
    IntAuthMessageTooLong,
}

/// `prf+(K, S) = T1 | T2 | ...` truncated to `len` octets, with `T1 = prf(K, S | 0x01)` and
/// `Tn = prf(K, Tn-1 | S | n)` (RFC 7296 §2.13). `seed` is `S` in pieces, concatenated.
pub fn prf_plus(
    prf: &dyn Prf,
    key: &[u8],
    seed: &[&[u8]],
    len: usize,
) -> Result<SecretBytes, KeyScheduleError> {
    let max = prf.output_len() * 255;
    if len > max {
        return Err(KeyScheduleError::PrfPlusTooLong {
            requested: len,
            max,
        });
    }
    let mut out = Vec::with_capacity(len + prf.output_len());
    let mut previous = SecretBytes::default();
    let mut counter: u8 = 1;
    while out.len() < len {
        let counter_octet = [counter];
        let mut parts: Vec<&[u8]> = Vec::with_capacity(seed.len() + 2);
        parts.push(previous.expose());
        parts.extend_from_slice(seed);
        parts.push(&counter_octet);
        previous = prf.prf(key, &parts);
        out.extend_from_slice(previous.expose());
        // At most 255 rounds: `len <= 255 * output_len` was checked above.
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    Ok(SecretBytes::new(out))
}

/// `SKEYSEED = prf(Ni | Nr, g^ir)` (RFC 7296 §2.14), for the key exchange of IKE_SA_INIT.
///
/// With ML-KEM alone in IKE_SA_INIT, `g^ir` is the ML-KEM shared secret
/// (draft-ietf-ipsecme-ikev2-mlkem §2).
pub fn skeyseed(
    prf: &dyn Prf,
    nonce_i: &[u8],
    nonce_r: &[u8],
    shared: &SharedSecret,
) -> SecretBytes {
    let key = [nonce_i, nonce_r].concat();
    prf.prf(&key, &[shared.expose()])
}

/// `SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr)` after additional key exchange `n` in
/// IKE_INTERMEDIATE (RFC 9370 §2.2.2). The nonces are those of IKE_SA_INIT.
pub fn skeyseed_additional(
    prf: &dyn Prf,
    sk_d_previous: &SecretBytes,
    shared: &SharedSecret,
    nonce_i: &[u8],
    nonce_r: &[u8],
) -> SecretBytes {
    prf.prf(sk_d_previous.expose(), &[shared.expose(), nonce_i, nonce_r])
}

/// SKEYSEED of a new IKE SA made by rekeying (CREATE_CHILD_SA, then IKE_FOLLOWUP_KE rounds):
/// `prf(SK_d(old), SK(0) | Ni | Nr | SK(1) | ... | SK(n))` (RFC 7296 §2.18, RFC 9370 §2.2.4),
/// computed with the **old** IKE SA's PRF. `shared` holds `SK(0)` (the KE of CREATE_CHILD_SA,
/// mandatory for IKE SA rekeying) followed by the secrets of each IKE_FOLLOWUP_KE; the nonces
/// are the CREATE_CHILD_SA nonces.
///
/// Expand the result with [`IkeSaKeys::derive`] using the **new** SPIs.
pub fn skeyseed_rekey(
    prf_old: &dyn Prf,
    sk_d_old: &SecretBytes,
    shared: &[&SharedSecret],
    nonce_i: &[u8],
    nonce_r: &[u8],
) -> SecretBytes {
    let parts = secrets_around_nonces(shared, nonce_i, nonce_r);
    prf_old.prf(sk_d_old.expose(), &parts)
}

/// `SK(0) | Ni | Nr | SK(1) | ... | SK(n)`, or just `Ni | Nr` without secrets.
fn secrets_around_nonces<'a>(
    shared: &[&'a SharedSecret],
    nonce_i: &'a [u8],
    nonce_r: &'a [u8],
) -> Vec<&'a [u8]> {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(shared.len() + 2);
    let mut rest = shared.iter();
    if let Some(first) = rest.next() {
        parts.push(first.expose());
    }
    parts.push(nonce_i);
    parts.push(nonce_r);
    parts.extend(rest.map(|s| s.expose()));
    parts
}

/// Octets of each IKE SA key (RFC 7296 §2.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeKeyLengths {
    /// SK_d, SK_pi and SK_pr: the PRF's preferred key length, its output length for HMAC.
    pub prf: usize,
    /// SK_ai and SK_ar: the integrity key length, 0 with an AEAD (RFC 5282 §7).
    pub integ: usize,
    /// SK_ei and SK_er: the encryption key length, including the 4-octet salt with an AEAD.
    pub encr: usize,
}

/// The seven keys of an IKE SA ([RFC 7296 §2.14]).
///
/// `Debug` prints lengths only.
///
/// [RFC 7296 §2.14]: https://www.rfc-editor.org/rfc/rfc7296#section-2.14
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSaKeys {
    /// Derives Child SA keys and the next SKEYSEED.
    pub sk_d: SecretBytes,
    /// Integrity key for messages from the initiator (empty with an AEAD).
    pub sk_ai: SecretBytes,
    /// Integrity key for messages from the responder (empty with an AEAD).
    pub sk_ar: SecretBytes,
    /// Encryption key (and salt) for messages from the initiator.
    pub sk_ei: SecretBytes,
    /// Encryption key (and salt) for messages from the responder.
    pub sk_er: SecretBytes,
    /// Key for the initiator's AUTH payload and IntAuth chain.
    pub sk_pi: SecretBytes,
    /// Key for the responder's AUTH payload and IntAuth chain.
    pub sk_pr: SecretBytes,
}

impl IkeSaKeys {
    /// `{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi |
    /// SPIr)` (RFC 7296 §2.14).
    ///
    /// After an additional key exchange the nonces and SPIs stay those of IKE_SA_INIT
    /// (RFC 9370 §2.2.2); after an IKE SA rekey they are the CREATE_CHILD_SA nonces and the new
    /// SPIs (RFC 7296 §2.18).
    pub fn derive(
        prf: &dyn Prf,
        skeyseed: &SecretBytes,
        nonce_i: &[u8],
        nonce_r: &[u8],
        spi_i: IkeSpi,
        spi_r: IkeSpi,
        lengths: IkeKeyLengths,
    ) -> Result<Self, KeyScheduleError> {
        let total = 3 * lengths.prf + 2 * lengths.integ + 2 * lengths.encr;
        let (spi_i, spi_r) = (spi_i.0.to_be_bytes(), spi_r.0.to_be_bytes());
        let stream = prf_plus(
            prf,
            skeyseed.expose(),
            &[nonce_i, nonce_r, &spi_i, &spi_r],
            total,
        )?;
        let mut pieces = Pieces::new(&stream);
        Ok(Self {
            sk_d: pieces.take(lengths.prf),
            sk_ai: pieces.take(lengths.integ),
            sk_ar: pieces.take(lengths.integ),
            sk_ei: pieces.take(lengths.encr),
            sk_er: pieces.take(lengths.encr),
            sk_pi: pieces.take(lengths.prf),
            sk_pr: pieces.take(lengths.prf),
        })
    }
}

/// Cuts consecutive pieces off a key stream that is known to be long enough.
struct Pieces<'a> {
    rest: &'a [u8],
}

impl<'a> Pieces<'a> {
    fn new(stream: &'a SecretBytes) -> Self {
        Self {
            rest: stream.expose(),
        }
    }

    /// The next `n` octets. Every caller asks prf+ for exactly the sum of its pieces, so the
    /// stream never runs short; if it did, the piece would come out short, never a panic.
    fn take(&mut self, n: usize) -> SecretBytes {
        let n = n.min(self.rest.len());
        let (piece, rest) = self.rest.split_at(n);
        self.rest = rest;
        SecretBytes::from_slice(piece)
    }
}

/// The keys of one Child SA, in the order KEYMAT yields them (RFC 7296 §2.17): the
/// initiator-to-responder SA first, encryption before integrity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSaKeys {
    /// Encryption key (and salt, with an AEAD) for traffic from the initiator.
    pub encr_i: SecretBytes,
    /// Integrity key for traffic from the initiator (empty with an AEAD).
    pub integ_i: SecretBytes,
    /// Encryption key (and salt) for traffic from the responder.
    pub encr_r: SecretBytes,
    /// Integrity key for traffic from the responder (empty with an AEAD).
    pub integ_r: SecretBytes,
}

impl ChildSaKeys {
    /// Derives Child SA keys from `KEYMAT = prf+(SK_d, [SK(0) |] Ni | Nr [| SK(1) | ... | SK(n)])`.
    ///
    /// `shared` is empty for the Child SA created in IKE_AUTH and for CREATE_CHILD_SA without
    /// PFS (then `Ni`/`Nr` are the IKE_SA_INIT or CREATE_CHILD_SA nonces, RFC 7296 §2.17); with
    /// PFS it holds `g^ir` of CREATE_CHILD_SA followed by the secrets of each IKE_FOLLOWUP_KE
    /// (RFC 9370 §2.2.4).
    pub fn derive(
        prf: &dyn Prf,
        sk_d: &SecretBytes,
        shared: &[&SharedSecret],
        nonce_i: &[u8],
        nonce_r: &[u8],
        encr_len: usize,
        integ_len: usize,
    ) -> Result<Self, KeyScheduleError> {
        let parts = secrets_around_nonces(shared, nonce_i, nonce_r);
        let keymat = prf_plus(prf, sk_d.expose(), &parts, 2 * (encr_len + integ_len))?;
        let mut pieces = Pieces::new(&keymat);
        Ok(Self {
            encr_i: pieces.take(encr_len),
            integ_i: pieces.take(integ_len),
            encr_r: pieces.take(encr_len),
            integ_r: pieces.take(integ_len),
        })
    }
}

/// `MACedIDForI/R = prf(SK_pi/SK_pr, IDType | RESERVED | InitIDData)` (RFC 7296 §2.15), where
/// `id_body` is the ID payload body after the generic payload header.
pub fn maced_id(prf: &dyn Prf, sk_p: &SecretBytes, id_body: &[u8]) -> SecretBytes {
    prf.prf(sk_p.expose(), &[id_body])
}

/// The octets an AUTH payload signs or MACs (RFC 7296 §2.15, RFC 9242 §3.3.2):
/// `RealMessage | NonceData | MACedID [| IntAuth]`.
///
/// `real_message` is this side's first message as sent (for the initiator, the IKE_SA_INIT
/// request that was answered, after any COOKIE or INVALID_KE_PAYLOAD restart); `peer_nonce` is
/// the other side's Nonce Data; `int_auth` is [`IntAuth::octets`], present **only if**
/// IKE_INTERMEDIATE exchanges ran.
pub fn signed_octets(
    real_message: &[u8],
    peer_nonce: &[u8],
    maced_id: &SecretBytes,
    int_auth: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        real_message.len() + peer_nonce.len() + maced_id.len() + int_auth.map_or(0, <[u8]>::len),
    );
    out.extend_from_slice(real_message);
    out.extend_from_slice(peer_nonce);
    out.extend_from_slice(maced_id.expose());
    if let Some(int_auth) = int_auth {
        out.extend_from_slice(int_auth);
    }
    out
}

/// `AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)` (RFC 7296 §2.15).
pub fn psk_auth(prf: &dyn Prf, psk: &SecretBytes, signed_octets: &[u8]) -> SecretBytes {
    let key = prf.prf(psk.expose(), &[KEY_PAD_FOR_IKEV2]);
    prf.prf(key.expose(), &[signed_octets])
}

/// The running IntAuth values over IKE_INTERMEDIATE exchanges ([RFC 9242 §3.3.2]).
///
/// Feed every IKE_INTERMEDIATE request to [`update_initiator`](Self::update_initiator) and every
/// response to [`update_responder`](Self::update_responder), each with the SK_pi / SK_pr that
/// was in force when the message was protected (keys change only after the exchange, RFC 9370
/// §2.2.2). Both sides compute the same chain.
///
/// [RFC 9242 §3.3.2]: https://www.rfc-editor.org/rfc/rfc9242#section-3.3.2
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntAuth {
    initiator: Option<SecretBytes>,
    responder: Option<SecretBytes>,
}

impl IntAuth {
    /// An empty chain: no IKE_INTERMEDIATE exchange yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `IntAuth_iN = prf(SK_piN, IntAuth_iN-1 | IntAuth_iN_A | IntAuth_iN_P)` for a message the
    /// initiator sent. `a` comes from [`int_auth_a`]; `p` is the plaintext of the inner payloads.
    pub fn update_initiator(&mut self, prf: &dyn Prf, sk_pi: &SecretBytes, a: &[u8], p: &[u8]) {
        Self::update(&mut self.initiator, prf, sk_pi, a, p);
    }

    /// `IntAuth_rN = prf(SK_prN, IntAuth_rN-1 | IntAuth_rN_A | IntAuth_rN_P)` for a message the
    /// responder sent.
    pub fn update_responder(&mut self, prf: &dyn Prf, sk_pr: &SecretBytes, a: &[u8], p: &[u8]) {
        Self::update(&mut self.responder, prf, sk_pr, a, p);
    }

    fn update(
        chain: &mut Option<SecretBytes>,
        prf: &dyn Prf,
        sk_p: &SecretBytes,
        a: &[u8],
        p: &[u8],
    ) {
        let previous = chain.as_ref().map_or(&[][..], SecretBytes::expose);
        *chain = Some(prf.prf(sk_p.expose(), &[previous, a, p]));
    }

    /// `IntAuth = IntAuth_iN | IntAuth_rN | IKE_AUTH_MID`, the octets appended to both sides'
    /// signed octets; `None` if no IKE_INTERMEDIATE exchange completed, in which case nothing
    /// is appended (a known interop bug is to append it anyway).
    pub fn octets(&self, ike_auth_message_id: MessageId) -> Option<Vec<u8>> {
        let (i, r) = (self.initiator.as_ref()?, self.responder.as_ref()?);
        let mut out = Vec::with_capacity(i.len() + r.len() + 4);
        out.extend_from_slice(i.expose());
        out.extend_from_slice(r.expose());
        out.extend_from_slice(&ike_auth_message_id.0.to_be_bytes());
        Some(out)
    }
}

/// Builds `IntAuth_*_A` (RFC 9242 §3.3.2) from the start of an IKE_INTERMEDIATE message.
///
/// `prefix` is the message from the IKE header through the 4-octet Encrypted payload header,
/// laid out **as if unfragmented**: for a message sent in SKF fragments, the caller rebuilds the
/// header with Next Payload = SK (46) and an SK header whose Next Payload is the first inner
/// payload. `plaintext_len` is the length of the inner payloads. The IKE header's Length and the
/// SK header's Payload Length are rewritten to exclude the IV, padding, Pad Length and ICV.
pub fn int_auth_a(prefix: &[u8], plaintext_len: usize) -> Result<Vec<u8>, KeyScheduleError> {
    if prefix.len() < IKE_HEADER_LEN + GENERIC_HEADER_LEN {
        return Err(KeyScheduleError::IntAuthPrefixTooShort);
    }
    let ike_len = u32::try_from(prefix.len() + plaintext_len)
        .map_err(|_| KeyScheduleError::IntAuthMessageTooLong)?;
    let sk_len = u16::try_from(GENERIC_HEADER_LEN + plaintext_len)
        .map_err(|_| KeyScheduleError::IntAuthMessageTooLong)?;
    let mut a = prefix.to_vec();
    let sk_len_at = a.len() - 2;
    if let Some(field) = a.get_mut(24..28) {
        field.copy_from_slice(&ike_len.to_be_bytes());
    }
    if let Some(field) = a.get_mut(sk_len_at..) {
        field.copy_from_slice(&sk_len.to_be_bytes());
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;

    use super::*;
    use crate::crypto::{CryptoProvider, RustCrypto};
    use crate::wire::PrfAlgorithm;

    fn sha256() -> Box<dyn Prf> {
        RustCrypto.prf(PrfAlgorithm::HmacSha2_256).unwrap()
    }

    /// prf+ written out by hand for two blocks: T1 = prf(K, S|1), T2 = prf(K, T1|S|2).
    #[test]
    fn prf_plus_chains_blocks_as_rfc_7296_says() {
        let prf = sha256();
        let (k, s) = (b"key".as_slice(), b"seed".as_slice());
        let t1 = prf.prf(k, &[s, &[1]]);
        let t2 = prf.prf(k, &[t1.expose(), s, &[2]]);
        let out = prf_plus(&*prf, k, &[b"se", b"ed"], 40).unwrap();
        assert_eq!(out.expose()[..32], *t1.expose());
        assert_eq!(out.expose()[32..], t2.expose()[..8]);
    }

    #[test]
    fn prf_plus_refuses_more_than_255_blocks() {
        let prf = sha256();
        assert!(prf_plus(&*prf, b"k", &[b"s"], 255 * 32).is_ok());
        assert_eq!(
            prf_plus(&*prf, b"k", &[b"s"], 255 * 32 + 1),
            Err(KeyScheduleError::PrfPlusTooLong {
                requested: 255 * 32 + 1,
                max: 255 * 32
            })
        );
    }

    #[test]
    fn secrets_wrap_the_nonces() {
        let (a, b, c) = (
            SecretBytes::from_slice(b"A"),
            SecretBytes::from_slice(b"B"),
            SecretBytes::from_slice(b"C"),
        );
        assert_eq!(
            secrets_around_nonces(&[&a, &b, &c], b"i", b"r").concat(),
            b"AirBC"
        );
        assert_eq!(secrets_around_nonces(&[], b"i", b"r").concat(), b"ir");
    }

    #[test]
    fn int_auth_a_rewrites_both_lengths() {
        let mut prefix = vec![0u8; 32];
        prefix[24..28].copy_from_slice(&1249u32.to_be_bytes());
        prefix[28] = 34; // SK header: next payload KE
        prefix[30..32].copy_from_slice(&1221u16.to_be_bytes());
        let a = int_auth_a(&prefix, 1192).unwrap();
        assert_eq!(a[24..28], (32u32 + 1192).to_be_bytes());
        assert_eq!(a[30..32], (4u16 + 1192).to_be_bytes());
        assert_eq!(a[28], 34);
        assert_eq!(
            int_auth_a(&prefix[..31], 0),
            Err(KeyScheduleError::IntAuthPrefixTooShort)
        );
        assert_eq!(
            int_auth_a(&prefix, 70_000),
            Err(KeyScheduleError::IntAuthMessageTooLong)
        );
    }

    #[test]
    fn int_auth_is_absent_until_an_exchange_completed() {
        let prf = sha256();
        let key = SecretBytes::from_slice(&[7; 32]);
        let mut chain = IntAuth::new();
        assert_eq!(chain.octets(MessageId(2)), None);
        chain.update_initiator(&*prf, &key, b"a1", b"p1");
        assert_eq!(chain.octets(MessageId(2)), None);
        chain.update_responder(&*prf, &key, b"a2", b"p2");
        let first = chain.octets(MessageId(2)).unwrap();
        assert_eq!(first.len(), 32 + 32 + 4);
        assert_eq!(first[64..], hex!("00000002"));
        assert_eq!(first[..32], *prf.prf(key.expose(), &[b"a1p1"]).expose());
        // The second round chains the first value in.
        chain.update_initiator(&*prf, &key, b"a3", b"p3");
        let i1 = prf.prf(key.expose(), &[b"a1p1"]);
        let i2 = prf.prf(key.expose(), &[i1.expose(), b"a3", b"p3"]);
        assert_eq!(chain.octets(MessageId(3)).unwrap()[..32], *i2.expose());
    }

    #[test]
    fn psk_auth_uses_the_key_pad() {
        let prf = sha256();
        let psk = SecretBytes::from_slice(b"secret");
        let pad_key = prf.prf(b"secret", &[b"Key Pad for IKEv2"]);
        let expect = prf.prf(pad_key.expose(), &[b"octets"]);
        assert_eq!(psk_auth(&*prf, &psk, b"octets"), expect);
    }

    #[test]
    fn child_keymat_splits_in_rfc_order() {
        let prf = sha256();
        let sk_d = SecretBytes::from_slice(&[1; 32]);
        let keys = ChildSaKeys::derive(&*prf, &sk_d, &[], b"ni", b"nr", 36, 0).unwrap();
        let keymat = prf_plus(&*prf, sk_d.expose(), &[b"ninr"], 72).unwrap();
        assert_eq!(keys.encr_i.expose(), &keymat.expose()[..36]);
        assert_eq!(keys.encr_r.expose(), &keymat.expose()[36..]);
        assert!(keys.integ_i.is_empty() && keys.integ_r.is_empty());
    }
}
