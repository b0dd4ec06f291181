//! Key exchange methods: X25519 ([RFC 8031]), ECP-384 ([RFC 5903]) and ML-KEM (FIPS 203,
//! draft-ietf-ipsecme-ikev2-mlkem), behind one interface that treats a KEM like a DH.
//!
//! The side that sends first (the IKE initiator, [`KeyExchange`]) publishes a DH public value or
//! an ML-KEM encapsulation key; the other side answers with its DH public value or an ML-KEM
//! ciphertext ([`KeyExchangeResponse`]); both end up with the same [`SharedSecret`].
//!
//! [RFC 8031]: https://www.rfc-editor.org/rfc/rfc8031
//! [RFC 5903]: https://www.rfc-editor.org/rfc/rfc5903

use ml_kem::kem::{Decapsulate, KeyExport};
use ml_kem::{B32, Seed};
use p384::elliptic_curve::sec1::ToSec1Point;
use subtle::ConstantTimeEq;

use super::{CryptoProvider, Error, InvalidPeerValue, SharedSecret};
use crate::wire::KeyExchangeMethod;

/// A key exchange in progress on the side that sent its public value first.
///
/// Dropping it wipes the private key. Completing does not consume it, so a forged answer
/// (IKE_SA_INIT is unauthenticated) does not cost the exchange; the genuine one can follow.
pub trait KeyExchange: Send {
    /// The method.
    fn method(&self) -> KeyExchangeMethod;

    /// The Key Exchange Data to send (RFC 7296 §3.4): a DH public value or an ML-KEM
    /// encapsulation key.
    fn public_value(&self) -> &[u8];

    /// Completes the exchange with the peer's answer: its DH public value, or the ML-KEM
    /// ciphertext, which first gets the FIPS 203 §7.3 type (length) check.
    fn complete(&self, peer_value: &[u8]) -> Result<SharedSecret, Error>;
}

/// The responder's side of a finished key exchange.
#[derive(Debug)]
pub struct KeyExchangeResponse {
    /// The Key Exchange Data to send back: a DH public value or an ML-KEM ciphertext.
    pub public_value: Vec<u8>,
    /// The shared secret.
    pub shared_secret: SharedSecret,
}

/// Length of the initiator's Key Exchange Data for `method` (draft-ietf-ipsecme-ikev2-mlkem
/// §2.1 for ML-KEM), or `None` if unknown.
pub fn public_value_len(method: KeyExchangeMethod) -> Option<usize> {
    match method {
        KeyExchangeMethod::Curve25519 => Some(32),
        KeyExchangeMethod::Ecp384 => Some(96),
        KeyExchangeMethod::MlKem512 => Some(800),
        KeyExchangeMethod::MlKem768 => Some(1184),
        KeyExchangeMethod::MlKem1024 => Some(1568),
        _ => None,
    }
}

/// Length of the ML-KEM ciphertext the responder sends for `method`, or `None` if `method` is
/// not ML-KEM.
pub fn mlkem_ciphertext_len(method: KeyExchangeMethod) -> Option<usize> {
    match method {
        KeyExchangeMethod::MlKem512 => Some(768),
        KeyExchangeMethod::MlKem768 => Some(1088),
        KeyExchangeMethod::MlKem1024 => Some(1568),
        _ => None,
    }
}

fn wrong_length(method: KeyExchangeMethod, expected: usize, got: usize) -> Error {
    Error::InvalidPeerValue {
        method,
        reason: InvalidPeerValue::WrongLength { expected, got },
    }
}

fn random_array<const N: usize>(provider: &dyn CryptoProvider) -> Result<[u8; N], Error> {
    let mut out = [0u8; N];
    provider.fill_random(&mut out)?;
    Ok(out)
}

/// The responding side of a Diffie-Hellman exchange: our fresh key pair `ours`, agreed with
/// the peer's public value; our public value goes back in KEr.
fn respond_dh(ours: &dyn KeyExchange, peer_value: &[u8]) -> Result<KeyExchangeResponse, Error> {
    let shared_secret = ours.complete(peer_value)?;
    Ok(KeyExchangeResponse {
        public_value: ours.public_value().to_vec(),
        shared_secret,
    })
}

// ----------------------------------------------------------------------------- X25519

/// X25519 as IKEv2 group 31 (RFC 8031 §2): 32-octet public values, 32-octet shared secret.
pub(super) struct X25519 {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl X25519 {
    pub(super) fn generate(provider: &dyn CryptoProvider) -> Result<Self, Error> {
        let mut seed = zeroize::Zeroizing::new(random_array::<32>(provider)?);
        let secret = x25519_dalek::StaticSecret::from(core::mem::take(&mut *seed));
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ok(Self { secret, public })
    }

    fn agree(&self, peer_value: &[u8]) -> Result<SharedSecret, Error> {
        let method = KeyExchangeMethod::Curve25519;
        let peer: [u8; 32] = peer_value
            .try_into()
            .map_err(|_| wrong_length(method, 32, peer_value.len()))?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // Reject the all-zero output of a low-order point, in constant time: RFC 7748 §6.1 allows
        // the check and pqvpn makes it policy, as TLS 1.3 does (RFC 8446 §7.4.2).
        if bool::from(shared.as_bytes().ct_eq(&[0u8; 32])) {
            return Err(Error::InvalidPeerValue {
                method,
                reason: InvalidPeerValue::AllZeroSharedSecret,
            });
        }
        Ok(SharedSecret::from_slice(shared.as_bytes()))
    }

    pub(super) fn respond(
        provider: &dyn CryptoProvider,
        peer_value: &[u8],
    ) -> Result<KeyExchangeResponse, Error> {
        respond_dh(&Self::generate(provider)?, peer_value)
    }
}

impl KeyExchange for X25519 {
    fn method(&self) -> KeyExchangeMethod {
        KeyExchangeMethod::Curve25519
    }

    fn public_value(&self) -> &[u8] {
        &self.public
    }

    fn complete(&self, peer_value: &[u8]) -> Result<SharedSecret, Error> {
        self.agree(peer_value)
    }
}

// ----------------------------------------------------------------------------- ECP-384

/// ECP-384 as IKEv2 group 20 (RFC 5903 §7): the public value is `x | y` (96 octets), the
/// shared secret the x coordinate of the product (48 octets).
pub(super) struct Ecp384 {
    secret: p384::SecretKey,
    public: [u8; 96],
}

impl Ecp384 {
    pub(super) fn generate(provider: &dyn CryptoProvider) -> Result<Self, Error> {
        // Rejection sampling: a 48-octet string is a valid scalar unless it is zero or >= n,
        // which happens with probability about 2^-190 per draw.
        for _ in 0..64 {
            let bytes = zeroize::Zeroizing::new(random_array::<48>(provider)?);
            if let Ok(secret) = p384::SecretKey::from_slice(bytes.as_slice()) {
                let point = secret.public_key().to_sec1_point(false);
                // SEC1 uncompressed encoding: 0x04 | x | y.
                let public: [u8; 96] = point
                    .as_bytes()
                    .get(1..)
                    .and_then(|xy| xy.try_into().ok())
                    .ok_or(Error::RandomFailed)?;
                return Ok(Self { secret, public });
            }
        }
        Err(Error::RandomFailed)
    }

    fn agree(&self, peer_value: &[u8]) -> Result<SharedSecret, Error> {
        let method = KeyExchangeMethod::Ecp384;
        if peer_value.len() != 96 {
            return Err(wrong_length(method, 96, peer_value.len()));
        }
        let mut sec1 = [0u8; 97];
        let (tag, xy) = sec1.split_at_mut(1);
        tag.copy_from_slice(&[0x04]);
        xy.copy_from_slice(peer_value);
        // from_sec1_bytes checks that the point lies on the curve and is not the identity
        // (RFC 6989 §2.3 tests for ECP groups).
        let peer =
            p384::PublicKey::from_sec1_bytes(&sec1).map_err(|_| Error::InvalidPeerValue {
                method,
                reason: InvalidPeerValue::PointNotOnCurve,
            })?;
        let shared = self.secret.diffie_hellman(&peer);
        Ok(SharedSecret::from_slice(
            shared.raw_secret_bytes().as_slice(),
        ))
    }

    pub(super) fn respond(
        provider: &dyn CryptoProvider,
        peer_value: &[u8],
    ) -> Result<KeyExchangeResponse, Error> {
        respond_dh(&Self::generate(provider)?, peer_value)
    }
}

impl KeyExchange for Ecp384 {
    fn method(&self) -> KeyExchangeMethod {
        KeyExchangeMethod::Ecp384
    }

    fn public_value(&self) -> &[u8] {
        &self.public
    }

    fn complete(&self, peer_value: &[u8]) -> Result<SharedSecret, Error> {
        self.agree(peer_value)
    }
}

// ----------------------------------------------------------------------------- ML-KEM

/// Defines one ML-KEM parameter set (FIPS 203) as an IKEv2 key exchange
/// (draft-ietf-ipsecme-ikev2-mlkem §2). `ml_kem`'s parameter trait is not public, so each set
/// gets its own concrete type.
macro_rules! mlkem_kex {
    ($name:ident, $module:ident, $method:ident) => {
        /// An ML-KEM key pair for one exchange (the initiator's side).
        pub(super) struct $name {
            dk: ml_kem::$module::DecapsulationKey,
            ek: Vec<u8>,
        }

        impl $name {
            const METHOD: KeyExchangeMethod = KeyExchangeMethod::$method;

            /// Builds the key pair from the 64-octet seed `d | z` (FIPS 203 §6.1
            /// ML-KEM.KeyGen_internal).
            pub(super) fn from_seed(seed: &[u8; 64]) -> Self {
                let dk = ml_kem::$module::DecapsulationKey::from_seed(Seed::from(*seed));
                let ek = dk.encapsulation_key().to_bytes().to_vec();
                Self { dk, ek }
            }

            pub(super) fn generate(provider: &dyn CryptoProvider) -> Result<Self, Error> {
                // A fresh 64-octet seed per exchange, drawn separately from any DH key
                // (draft-ietf-ipsecme-ikev2-mlkem §3).
                let seed = zeroize::Zeroizing::new(random_array::<64>(provider)?);
                Ok(Self::from_seed(&seed))
            }

            /// Encapsulates to `ek_bytes` with the 32-octet randomness `m` (FIPS 203 §6.2
            /// ML-KEM.Encaps_internal), after the §7.2 input checks.
            pub(super) fn encapsulate(
                ek_bytes: &[u8],
                m: &[u8; 32],
            ) -> Result<KeyExchangeResponse, Error> {
                let method = Self::METHOD;
                // §7.2 type check: the length must be exactly 384k + 32.
                let key = ek_bytes.try_into().map_err(|_| {
                    wrong_length(
                        method,
                        public_value_len(method).unwrap_or(0),
                        ek_bytes.len(),
                    )
                })?;
                // §7.2 modulus check: `new` re-encodes the decoded key and compares.
                let ek = ml_kem::$module::EncapsulationKey::new(key).map_err(|_| {
                    Error::InvalidPeerValue {
                        method,
                        reason: InvalidPeerValue::ModulusCheckFailed,
                    }
                })?;
                let (ct, mut ss) = ek.encapsulate_deterministic(&B32::from(*m));
                let shared_secret = SharedSecret::from_slice(ss.as_slice());
                // The stack copy goes too (security review L5).
                zeroize::Zeroize::zeroize(ss.as_mut_slice());
                Ok(KeyExchangeResponse {
                    public_value: ct.to_vec(),
                    shared_secret,
                })
            }

            pub(super) fn respond(
                provider: &dyn CryptoProvider,
                peer_value: &[u8],
            ) -> Result<KeyExchangeResponse, Error> {
                let m = zeroize::Zeroizing::new(random_array::<32>(provider)?);
                Self::encapsulate(peer_value, &m)
            }

            /// Decapsulates `ct` after the FIPS 203 §7.3 ciphertext type check. A well-formed
            /// but wrong ciphertext yields an unrelated key (implicit rejection), which the next
            /// integrity check catches.
            pub(super) fn decapsulate(&self, ct: &[u8]) -> Result<SharedSecret, Error> {
                let method = Self::METHOD;
                let expected = mlkem_ciphertext_len(method).unwrap_or(0);
                let mut ss = self
                    .dk
                    .decapsulate_slice(ct)
                    .map_err(|_| wrong_length(method, expected, ct.len()))?;
                let shared_secret = SharedSecret::from_slice(ss.as_slice());
                zeroize::Zeroize::zeroize(ss.as_mut_slice());
                Ok(shared_secret)
            }
        }

        impl KeyExchange for $name {
            fn method(&self) -> KeyExchangeMethod {
                Self::METHOD
            }

            fn public_value(&self) -> &[u8] {
                &self.ek
            }

            fn complete(&self, peer_value: &[u8]) -> Result<SharedSecret, Error> {
                self.decapsulate(peer_value)
            }
        }
    };
}

/// Decapsulation with a key in the FIPS 203 expanded encoding, for known-answer tests.
#[cfg(any(test, feature = "test-provider"))]
#[expect(
    deprecated,
    reason = "ACVP decapsulation vectors give keys only in the expanded encoding"
)]
pub(super) fn decapsulate_expanded(
    method: KeyExchangeMethod,
    dk: &[u8],
    ct: &[u8],
) -> Result<SharedSecret, Error> {
    use ml_kem::ExpandedKeyEncoding;
    let invalid = Error::InvalidPeerValue {
        method,
        reason: InvalidPeerValue::ModulusCheckFailed,
    };
    macro_rules! expanded {
        ($module:ident) => {{
            let dk = ml_kem::$module::DecapsulationKey::from_expanded_bytes(
                dk.try_into().map_err(|_| invalid.clone())?,
            )
            .map_err(|_| invalid.clone())?;
            let mut ss = dk.decapsulate_slice(ct).map_err(|_| {
                wrong_length(method, mlkem_ciphertext_len(method).unwrap_or(0), ct.len())
            })?;
            let shared_secret = SharedSecret::from_slice(ss.as_slice());
            zeroize::Zeroize::zeroize(ss.as_mut_slice());
            Ok(shared_secret)
        }};
    }
    match method {
        KeyExchangeMethod::MlKem512 => expanded!(ml_kem_512),
        KeyExchangeMethod::MlKem768 => expanded!(ml_kem_768),
        KeyExchangeMethod::MlKem1024 => expanded!(ml_kem_1024),
        other => Err(Error::UnsupportedKeyExchange(other)),
    }
}

mlkem_kex!(MlKem512, ml_kem_512, MlKem512);
mlkem_kex!(MlKem768, ml_kem_768, MlKem768);
mlkem_kex!(MlKem1024, ml_kem_1024, MlKem1024);
