//! Protection of IKE messages after IKE_SA_INIT: the SK payload with an AEAD ([RFC 5282]),
//! RFC 7383 fragmentation into SKF payloads, and bounded reassembly.
//!
//! [RFC 5282]: https://www.rfc-editor.org/rfc/rfc5282

use std::time::{Duration, Instant};

use crate::crypto::{AeadKey, CryptoProvider, IV_LEN, SecretBytes, TAG_LEN};
use crate::ike::Error;
use crate::ike::keys::int_auth_a;
use crate::wire::{
    EncryptedView, FragmentNumbers, Header, MessageId, Payload, PayloadType, emit_payloads,
    emit_protected,
};

/// Octets of the generic header plus the fragment fields of SKF (RFC 7383 §2.5).
const SKF_HEADER_LEN: usize = 8;
/// Largest reassembled plaintext: more than any IKE message we exchange, small enough that a
/// hostile peer cannot make us hold much.
const MAX_REASSEMBLED: usize = 64 * 1024;
/// Most fragments per message we accept.
const MAX_FRAGMENTS: u16 = 128;
/// Octets of the Pad Length field; we never pad (the AEADs need no block alignment).
const PAD_LENGTH_LEN: usize = 1;

/// A message as protected for sending: its datagrams (one, or one per fragment) and the
/// octets the IntAuth chain needs.
#[derive(Debug)]
pub(crate) struct Protected {
    /// IKE messages to send, without the non-ESP marker.
    pub(crate) datagrams: Vec<Vec<u8>>,
    /// `IntAuth_A` of the message as if unfragmented (RFC 9242 §3.3.2).
    pub(crate) int_auth_a: Vec<u8>,
    /// `IntAuth_P`: the inner payloads in clear.
    pub(crate) plaintext: Vec<u8>,
}

/// A received message after decryption (and reassembly).
#[derive(Debug)]
pub(crate) struct Unprotected {
    /// The header (of the first fragment, for a fragmented message).
    #[cfg_attr(
        not(feature = "gateway"),
        expect(dead_code, reason = "only the responder reads it")
    )]
    pub(crate) header: Header,
    /// The decrypted inner payloads.
    pub(crate) payloads: Vec<Payload>,
    /// `IntAuth_A` as if unfragmented.
    pub(crate) int_auth_a: Vec<u8>,
    /// `IntAuth_P`.
    pub(crate) plaintext: Vec<u8>,
}

/// The SK keys of one IKE SA, from this side's point of view.
pub(crate) struct SkCipher {
    send: AeadKey,
    recv: AeadKey,
    /// IV of the next message we encrypt: a counter, so it never repeats under `send`.
    next_iv: u64,
}

impl core::fmt::Debug for SkCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SkCipher").finish_non_exhaustive()
    }
}

/// `IntAuth_A` for a message carrying `plaintext_len` octets of inner payloads starting with
/// `first_inner`, laid out as unfragmented whatever the wire did (RFC 9242 §3.3.2).
pub(crate) fn unfragmented_int_auth_a(
    header: &Header,
    first_inner: PayloadType,
    plaintext_len: usize,
) -> Result<Vec<u8>, Error> {
    let mut unfragmented = *header;
    unfragmented.next_payload = PayloadType::Encrypted;
    let mut prefix = Vec::with_capacity(Header::LEN + 4);
    unfragmented.emit(&mut prefix);
    prefix.truncate(Header::LEN);
    prefix.extend_from_slice(&[first_inner.value(), 0, 0, 0]);
    Ok(int_auth_a(&prefix, plaintext_len)?)
}

impl SkCipher {
    /// Keys both directions: `send` and `recv` are SK_ei/SK_er in the order this side uses them.
    pub(crate) fn new(
        provider: &dyn CryptoProvider,
        algorithm: crate::crypto::AeadAlgorithm,
        send: &SecretBytes,
        recv: &SecretBytes,
    ) -> Result<Self, Error> {
        Ok(Self {
            send: AeadKey::new(provider, algorithm, send.expose())?,
            recv: AeadKey::new(provider, algorithm, recv.expose())?,
            next_iv: 0,
        })
    }

    fn seal_one(
        &mut self,
        header: &Header,
        next_inner: PayloadType,
        fragment: Option<FragmentNumbers>,
        chunk: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let body_len = IV_LEN + chunk.len() + PAD_LENGTH_LEN + TAG_LEN;
        let mut message = emit_protected(header, &[], next_inner, fragment, body_len);
        let iv = self.next_iv.to_be_bytes();
        self.next_iv = self
            .next_iv
            .checked_add(1)
            .ok_or(Error::ApiMisuse("IKE SA sent 2^64 messages"))?;
        let (aad, body) = message.split_mut();
        let (iv_field, rest) = body
            .split_at_mut_checked(IV_LEN)
            .ok_or(Error::ApiMisuse("SK body layout"))?;
        iv_field.copy_from_slice(&iv);
        let (plain, tag_field) = rest
            .split_at_mut_checked(chunk.len() + PAD_LENGTH_LEN)
            .ok_or(Error::ApiMisuse("SK body layout"))?;
        let (data, pad_length) = plain.split_at_mut(chunk.len());
        data.copy_from_slice(chunk);
        pad_length.fill(0);
        let tag = self.send.seal(&iv, aad, plain)?;
        tag_field.copy_from_slice(&tag);
        Ok(message.into_bytes())
    }

    /// Protects `inner` under `header` (RFC 7296 §3.14). If `max_message` is given and the
    /// message would be larger, it is split into RFC 7383 fragments of at most that many octets
    /// of IKE message each.
    pub(crate) fn protect(
        &mut self,
        header: &Header,
        inner: &[Payload],
        max_message: Option<usize>,
    ) -> Result<Protected, Error> {
        let mut plaintext = Vec::new();
        let first_inner = emit_payloads(inner, &mut plaintext);
        let int_auth_a = unfragmented_int_auth_a(header, first_inner, plaintext.len())?;
        let whole_len = Header::LEN + 4 + IV_LEN + plaintext.len() + PAD_LENGTH_LEN + TAG_LEN;
        let datagrams = match max_message {
            Some(max) if whole_len > max => {
                let overhead = Header::LEN + SKF_HEADER_LEN + IV_LEN + PAD_LENGTH_LEN + TAG_LEN;
                let chunk_len = max
                    .checked_sub(overhead)
                    .filter(|&n| n > 0)
                    .ok_or(Error::ApiMisuse("fragment size below the IKE overhead"))?;
                let chunks: Vec<&[u8]> = plaintext.chunks(chunk_len).collect();
                let total = u16::try_from(chunks.len())
                    .ok()
                    .filter(|&t| t <= MAX_FRAGMENTS)
                    .ok_or(Error::FragmentTooLarge)?;
                let mut datagrams = Vec::with_capacity(chunks.len());
                for (number, chunk) in (1u16..).zip(chunks) {
                    // Only the first fragment names the first inner payload (RFC 7383 §2.5).
                    let next = if number == 1 {
                        first_inner
                    } else {
                        PayloadType::NoNextPayload
                    };
                    let numbers = FragmentNumbers::new(number, total)?;
                    datagrams.push(self.seal_one(header, next, Some(numbers), chunk)?);
                }
                datagrams
            }
            _ => vec![self.seal_one(header, first_inner, None, &plaintext)?],
        };
        Ok(Protected {
            datagrams,
            int_auth_a,
            plaintext,
        })
    }

    /// Verifies and decrypts one SK or SKF payload, returning the inner octets without the
    /// padding and Pad Length.
    pub(crate) fn open(&self, view: &EncryptedView<'_>) -> Result<Vec<u8>, Error> {
        let body = view.body();
        let (iv, rest) = body
            .split_at_checked(IV_LEN)
            .ok_or(Error::IntegrityCheckFailed)?;
        let (ciphertext, tag) = rest
            .split_at_checked(rest.len().saturating_sub(TAG_LEN))
            .ok_or(Error::IntegrityCheckFailed)?;
        let iv: &[u8; IV_LEN] = iv.try_into().map_err(|_| Error::IntegrityCheckFailed)?;
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| Error::IntegrityCheckFailed)?;
        let mut plain = ciphertext.to_vec();
        self.recv
            .open(iv, view.aad(), &mut plain, tag)
            .map_err(|_| Error::IntegrityCheckFailed)?;
        // RFC 7296 §3.14: Padding, then Pad Length; padding contents are not checked.
        let pad_len = usize::from(*plain.last().ok_or(Error::PeerMisbehaved("empty SK"))?);
        let keep = plain
            .len()
            .checked_sub(PAD_LENGTH_LEN + pad_len)
            .ok_or(Error::PeerMisbehaved("SK pad length exceeds the plaintext"))?;
        plain.truncate(keep);
        Ok(plain)
    }
}

/// RFC 7383 reassembly of one fragmented message, fragments authenticated one by one.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    /// Message ID, flags and total of the message being reassembled.
    key: Option<(MessageId, bool, u16)>,
    header: Option<Header>,
    first_inner: Option<PayloadType>,
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

impl Reassembly {
    /// Adds one SKF fragment (already known to belong to the expected message ID). Returns the
    /// whole plaintext once every fragment has arrived. Duplicates are ignored; a fragment of a
    /// different total restarts reassembly only if it authenticates.
    pub(crate) fn add(
        &mut self,
        cipher: &SkCipher,
        view: &EncryptedView<'_>,
    ) -> Result<Option<Unprotected>, Error> {
        let Some(numbers) = view.fragment() else {
            return Err(Error::ApiMisuse("not a fragment"));
        };
        let header = *view.header();
        let key = (
            header.message_id,
            header.flags.response,
            numbers.total_fragments,
        );
        let index = usize::from(numbers.fragment_number - 1);
        if self.key == Some(key) && self.parts.get(index).is_some_and(Option::is_some) {
            return Ok(None); // duplicate
        }
        // Authenticate before it can change any state, and before any check whose failure the
        // caller treats as the peer's: Total Fragments travels in clear, so a forged fragment
        // with a total above the limit must be dropped like any other forgery (finding 3).
        let chunk = cipher.open(view)?;
        if numbers.total_fragments > MAX_FRAGMENTS {
            return Err(Error::FragmentTooLarge);
        }
        if self.key != Some(key) {
            *self = Self {
                key: Some(key),
                parts: vec![None; usize::from(numbers.total_fragments)],
                ..Self::default()
            };
        }
        self.bytes += chunk.len();
        if self.bytes > MAX_REASSEMBLED {
            *self = Self::default();
            return Err(Error::FragmentTooLarge);
        }
        if numbers.fragment_number == 1 {
            self.header = Some(header);
            self.first_inner = Some(view.next_inner());
        }
        if let Some(slot) = self.parts.get_mut(index) {
            *slot = Some(chunk);
        }
        if self.parts.iter().any(Option::is_none) {
            return Ok(None);
        }
        let (Some(header), Some(first_inner)) = (self.header, self.first_inner) else {
            return Ok(None);
        };
        let plaintext: Vec<u8> = self.parts.iter().flatten().flatten().copied().collect();
        *self = Self::default();
        let payloads = crate::wire::parse_payloads(first_inner, &plaintext)?;
        let int_auth_a = unfragmented_int_auth_a(&header, first_inner, plaintext.len())?;
        Ok(Some(Unprotected {
            header,
            payloads,
            int_auth_a,
            plaintext,
        }))
    }

    /// Forgets a partial message (after its exchange completed or failed).
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Minimum spacing of cached responses resent for one request (RFC 7296 §2.1 lets a
/// responder ignore extra retransmissions); bounds what replayed requests can make us send.
pub(crate) const RESEND_INTERVAL: Duration = Duration::from_millis(500);

/// Whether a repeat of the request that our cached response answers earns a resend
/// ([RFC 7296 §2.1], [RFC 7383 §2.6.1]): it must be the first fragment (or unfragmented),
/// authenticate under the SA's keys, and come at least [`RESEND_INTERVAL`] after the last
/// resend. A forged bare header no longer reflects the cached response (finding 4).
///
/// [RFC 7296 §2.1]: https://www.rfc-editor.org/rfc/rfc7296#section-2.1
/// [RFC 7383 §2.6.1]: https://www.rfc-editor.org/rfc/rfc7383#section-2.6.1
pub(crate) fn resend_allowed(
    cipher: &SkCipher,
    datagram: &[u8],
    last_resend: &mut Option<Instant>,
    now: Instant,
) -> bool {
    let Ok(Some(view)) = crate::wire::locate_encrypted(datagram) else {
        return false;
    };
    if view.fragment().is_some_and(|f| f.fragment_number != 1) {
        return false;
    }
    if last_resend.is_some_and(|t| now < t + RESEND_INTERVAL) {
        return false;
    }
    if cipher.open(&view).is_err() {
        return false;
    }
    *last_resend = Some(now);
    true
}

#[cfg(feature = "gateway")]
/// [`resend_allowed`] for a responder whose keys changed since the request (after an
/// IKE_INTERMEDIATE key update, RFC 9370 §2.2.2): the retransmission must be byte-identical to
/// the first datagram of the request, which it kept.
pub(crate) fn resend_identical(
    request_first: Option<&[u8]>,
    datagram: &[u8],
    last_resend: &mut Option<Instant>,
    now: Instant,
) -> bool {
    if request_first != Some(datagram) || last_resend.is_some_and(|t| now < t + RESEND_INTERVAL) {
        return false;
    }
    *last_resend = Some(now);
    true
}

/// Decrypts a received protected message: SK directly, SKF through `reassembly`.
/// `Ok(None)` means a fragment was stored and more are awaited.
pub(crate) fn unprotect(
    cipher: &SkCipher,
    reassembly: &mut Reassembly,
    view: &EncryptedView<'_>,
) -> Result<Option<Unprotected>, Error> {
    if view.fragment().is_some() {
        return reassembly.add(cipher, view);
    }
    let plaintext = cipher.open(view)?;
    let header = *view.header();
    let payloads = crate::wire::parse_payloads(view.next_inner(), &plaintext)?;
    let int_auth_a = unfragmented_int_auth_a(&header, view.next_inner(), plaintext.len())?;
    Ok(Some(Unprotected {
        header,
        payloads,
        int_auth_a,
        plaintext,
    }))
}
