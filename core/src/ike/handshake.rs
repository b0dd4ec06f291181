//! What both sides of the IKE handshake hold between IKE_SA_INIT and IKE_AUTH, and the key
//! updates that change it: after IKE_SA_INIT ([RFC 7296 §2.14]) and after each
//! IKE_INTERMEDIATE exchange with an additional key exchange ([RFC 9370 §2.2.2]), together
//! with the running IntAuth ([RFC 9242 §3.3.2]).
//!
//! The initiator and the responder compute the same values and differ only in which of
//! `SK_ei`/`SK_er` they send with; [`Role`] decides that here and nowhere else.
//!
//! [RFC 7296 §2.14]: https://www.rfc-editor.org/rfc/rfc7296#section-2.14
//! [RFC 9242 §3.3.2]: https://www.rfc-editor.org/rfc/rfc9242#section-3.3.2
//! [RFC 9370 §2.2.2]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.2

use std::net::SocketAddr;

use crate::crypto::{CryptoProvider, Prf, SecretBytes};
use crate::ike::Error;
use crate::ike::keys::{ChildSaKeys, IkeSaKeys, IntAuth, skeyseed, skeyseed_additional};
use crate::ike::proposal::IkeChoice;
use crate::ike::protect::SkCipher;
use crate::ike::session::{IkeSa, IkeSaParts};
use crate::wire::{IkeSpi, MessageId};

/// Which side of the handshake this is: the original initiator (the client) or responder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Initiator,
    Responder,
}

/// The two IKE SA SPIs, `SPIi` and `SPIr` ([RFC 7296 §3.1]).
///
/// [RFC 7296 §3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.1
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spis {
    pub(crate) spi_i: IkeSpi,
    pub(crate) spi_r: IkeSpi,
}

/// The IKE_SA_INIT exchange as both sides saw it: the input of the first key update and of
/// both AUTH payloads.
pub(crate) struct SaInit {
    pub(crate) choice: IkeChoice,
    pub(crate) spis: Spis,
    pub(crate) nonce_i: Vec<u8>,
    pub(crate) nonce_r: Vec<u8>,
    /// The request as sent and answered (after any COOKIE or INVALID_KE_PAYLOAD restart).
    pub(crate) real_message_1: Vec<u8>,
    /// The response.
    pub(crate) real_message_2: Vec<u8>,
    /// The peer sent IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383 §2.3).
    pub(crate) peer_fragmentation: bool,
}

/// An IKE SA keyed but not yet authenticated.
pub(crate) struct Keyed {
    pub(crate) role: Role,
    pub(crate) choice: IkeChoice,
    pub(crate) spis: Spis,
    pub(crate) prf: Box<dyn Prf>,
    pub(crate) nonce_i: Vec<u8>,
    pub(crate) nonce_r: Vec<u8>,
    pub(crate) keys: IkeSaKeys,
    pub(crate) cipher: SkCipher,
    pub(crate) real_message_1: Vec<u8>,
    pub(crate) real_message_2: Vec<u8>,
    pub(crate) peer_fragmentation: bool,
    pub(crate) int_auth: IntAuth,
    /// The initiator's next request, which is the responder's next expected request: both
    /// sides count the handshake's requests the same way (RFC 7296 §2.2).
    pub(crate) message_id: MessageId,
}

impl Keyed {
    /// Keys the SA from IKE_SA_INIT's shared secret:
    /// `SKEYSEED = prf(Ni | Nr, g^ir)` ([RFC 7296 §2.14]).
    ///
    /// [RFC 7296 §2.14]: https://www.rfc-editor.org/rfc/rfc7296#section-2.14
    pub(crate) fn after_sa_init(
        provider: &dyn CryptoProvider,
        role: Role,
        init: SaInit,
        shared: &SecretBytes,
    ) -> Result<Self, Error> {
        let prf = provider.prf(init.choice.prf)?;
        let seed = skeyseed(&*prf, &init.nonce_i, &init.nonce_r, shared);
        let keys = derive(&*prf, &init, &seed)?;
        let cipher = cipher(provider, role, &init.choice, &keys)?;
        Ok(Self {
            role,
            choice: init.choice,
            spis: init.spis,
            prf,
            nonce_i: init.nonce_i,
            nonce_r: init.nonce_r,
            keys,
            cipher,
            real_message_1: init.real_message_1,
            real_message_2: init.real_message_2,
            peer_fragmentation: init.peer_fragmentation,
            int_auth: IntAuth::new(),
            message_id: MessageId(1),
        })
    }

    /// Folds one finished IKE_INTERMEDIATE exchange into IntAuth, with the keys that
    /// protected it, then rekeys from its shared secret:
    /// `SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr)` ([RFC 9370 §2.2.2]).
    ///
    /// `request` and `response` are each the message's `(A, P)` octets of RFC 9242 §3.3.2.
    ///
    /// [RFC 9370 §2.2.2]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.2
    pub(crate) fn after_intermediate(
        &mut self,
        provider: &dyn CryptoProvider,
        shared: &SecretBytes,
        request: (&[u8], &[u8]),
        response: (&[u8], &[u8]),
    ) -> Result<(), Error> {
        let prf = &*self.prf;
        self.int_auth
            .update_initiator(prf, &self.keys.sk_pi, request.0, request.1);
        self.int_auth
            .update_responder(prf, &self.keys.sk_pr, response.0, response.1);
        let seed = skeyseed_additional(prf, &self.keys.sk_d, shared, &self.nonce_i, &self.nonce_r);
        let keys = IkeSaKeys::derive(
            prf,
            &seed,
            &self.nonce_i,
            &self.nonce_r,
            self.spis.spi_i,
            self.spis.spi_r,
            self.choice.key_lengths(prf),
        )?;
        self.cipher = cipher(provider, self.role, &self.choice, &keys)?;
        self.keys = keys;
        Ok(())
    }

    /// Takes the next handshake message ID (the initiator's next request; the responder's
    /// answer to the request it expected).
    pub(crate) fn take_message_id(&mut self) -> MessageId {
        let id = self.message_id;
        self.message_id = id.next();
        id
    }

    /// KEYMAT of the Child SA that IKE_AUTH creates: `prf+(SK_d, Ni | Nr)`, without a key
    /// exchange of its own ([RFC 7296 §2.17]).
    ///
    /// [RFC 7296 §2.17]: https://www.rfc-editor.org/rfc/rfc7296#section-2.17
    pub(crate) fn first_child_keys(&self, keymat_len: usize) -> Result<ChildSaKeys, Error> {
        Ok(ChildSaKeys::derive(
            &*self.prf,
            &self.keys.sk_d,
            &[],
            &self.nonce_i,
            &self.nonce_r,
            keymat_len,
            0,
        )?)
    }

    /// The authenticated IKE SA. `last_response` is the responder's IKE_AUTH response, kept
    /// for a retransmitted request (RFC 7296 §2.1).
    pub(crate) fn into_ike_sa(self, last_response: Option<(MessageId, Vec<Vec<u8>>)>) -> IkeSa {
        let initiator = self.role == Role::Initiator;
        IkeSa::new(IkeSaParts {
            spi_i: self.spis.spi_i,
            spi_r: self.spis.spi_r,
            original_initiator: initiator,
            choice: self.choice,
            prf: self.prf,
            sk_d: self.keys.sk_d,
            cipher: self.cipher,
            peer_fragmentation: self.peer_fragmentation,
            next_request_id: if initiator {
                self.message_id
            } else {
                MessageId::ZERO
            },
            expected_request_id: if initiator {
                MessageId::ZERO
            } else {
                self.message_id
            },
            last_response,
        })
    }
}

fn derive(prf: &dyn Prf, init: &SaInit, seed: &SecretBytes) -> Result<IkeSaKeys, Error> {
    Ok(IkeSaKeys::derive(
        prf,
        seed,
        &init.nonce_i,
        &init.nonce_r,
        init.spis.spi_i,
        init.spis.spi_r,
        init.choice.key_lengths(prf),
    )?)
}

/// The SK payload cipher: the initiator sends with `SK_ei`, the responder with `SK_er`.
fn cipher(
    provider: &dyn CryptoProvider,
    role: Role,
    choice: &IkeChoice,
    keys: &IkeSaKeys,
) -> Result<SkCipher, Error> {
    let (send, recv) = match role {
        Role::Initiator => (&keys.sk_ei, &keys.sk_er),
        Role::Responder => (&keys.sk_er, &keys.sk_ei),
    };
    SkCipher::new(provider, choice.encr, send, recv)
}

/// The largest IKE message to `remote` before RFC 7383 fragmentation, when the peer supports
/// it: `fragment_size` less the IP and UDP headers and the non-ESP marker (RFC 7383 §2.5.1).
pub(crate) fn max_message(
    peer_fragmentation: bool,
    fragment_size: usize,
    remote: SocketAddr,
    nat_t: bool,
) -> Option<usize> {
    if !peer_fragmentation {
        return None;
    }
    let ip_udp = if remote.is_ipv4() { 20 + 8 } else { 40 + 8 };
    let marker = if nat_t { 4 } else { 0 };
    Some(fragment_size.saturating_sub(ip_udp + marker))
}

/// A fresh Nonce Data of `len` octets, clamped to the 16..=256 of [RFC 7296 §3.9].
///
/// [RFC 7296 §3.9]: https://www.rfc-editor.org/rfc/rfc7296#section-3.9
pub(crate) fn new_nonce(provider: &dyn CryptoProvider, len: usize) -> Result<Vec<u8>, Error> {
    crate::ike::sa::random_bytes(provider, len.clamp(16, 256))
}
