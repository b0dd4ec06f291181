//! IKE_AUTH authentication ([RFC 7296 §2.15]): what each side signs, how this side proves
//! its identity ([`LocalAuth`]) and how the peer's proof is checked ([`PeerAuth`]).
//!
//! Both sides sign `RealMessage | NonceData | MACedID [| IntAuth]` ([RFC 9242 §3.3.2]); only
//! the method differs. Pre-shared keys are the method today; certificates and EAP become
//! further variants of these two types.
//!
//! [RFC 7296 §2.15]: https://www.rfc-editor.org/rfc/rfc7296#section-2.15
//! [RFC 9242 §3.3.2]: https://www.rfc-editor.org/rfc/rfc9242#section-3.3.2

use crate::crypto::SecretBytes;
use crate::ike::Error;
use crate::ike::handshake::{Keyed, Role};
use crate::ike::keys::{maced_id, psk_auth, signed_octets};
use crate::wire::{AuthMethod, AuthPayload, Identification, IkeId};

/// How this side authenticates itself.
pub(crate) enum LocalAuth {
    /// AUTH = prf(prf(PSK, "Key Pad for IKEv2"), SignedOctets).
    Psk(SecretBytes),
}

/// How the peer must authenticate.
pub(crate) enum PeerAuth {
    /// The peer's PSK, the same key as ours (the gateway looks it up by IDi).
    Psk(SecretBytes),
}

impl LocalAuth {
    /// This side's AUTH payload over its identity `id`, `role` being this side.
    pub(crate) fn sign(
        &self,
        keyed: &Keyed,
        role: Role,
        id: &Identification,
        int_auth: Option<&[u8]>,
    ) -> AuthPayload {
        match self {
            Self::Psk(psk) => AuthPayload {
                method: AuthMethod::SharedKeyMessageIntegrityCode,
                data: psk_auth(&*keyed.prf, psk, &octets(keyed, role, id, int_auth))
                    .expose()
                    .to_vec(),
            },
        }
    }
}

impl PeerAuth {
    /// Checks the peer's AUTH over its identity `id`, `role` being the peer's.
    ///
    /// # Errors
    ///
    /// [`Error::AuthenticationFailed`] for another method or a wrong value.
    pub(crate) fn verify(
        &self,
        keyed: &Keyed,
        role: Role,
        id: &Identification,
        auth: &AuthPayload,
        int_auth: Option<&[u8]>,
    ) -> Result<(), Error> {
        match self {
            Self::Psk(psk) => {
                if auth.method != AuthMethod::SharedKeyMessageIntegrityCode {
                    return Err(Error::AuthenticationFailed);
                }
                let expected = psk_auth(&*keyed.prf, psk, &octets(keyed, role, id, int_auth));
                // `SecretBytes` compares in constant time.
                if expected != SecretBytes::from_slice(&auth.data) {
                    return Err(Error::AuthenticationFailed);
                }
                Ok(())
            }
        }
    }
}

/// The octets `signer` signs: its own first message, the other side's nonce and its MACedID
/// under its `SK_p` (RFC 7296 §2.15), then IntAuth if IKE_INTERMEDIATE ran.
fn octets(keyed: &Keyed, signer: Role, id: &Identification, int_auth: Option<&[u8]>) -> Vec<u8> {
    let (message, peer_nonce, sk_p) = match signer {
        Role::Initiator => (&keyed.real_message_1, &keyed.nonce_r, &keyed.keys.sk_pi),
        Role::Responder => (&keyed.real_message_2, &keyed.nonce_i, &keyed.keys.sk_pr),
    };
    let maced = maced_id(&*keyed.prf, sk_p, &id.body_bytes());
    signed_octets(message, peer_nonce, &maced, int_auth)
}

/// Whether the peer's ID payload names `expected` ([RFC 7296 §2.15]: the identity AUTH
/// covers is the one the policy asked for).
///
/// [RFC 7296 §2.15]: https://www.rfc-editor.org/rfc/rfc7296#section-2.15
pub(crate) fn names(id: &Identification, expected: &IkeId) -> bool {
    id.parsed().ok().as_ref() == Some(expected)
}
