//! Cryptographic provider interface and its default implementation.
//!
//! Everything the protocol modules need from cryptography goes through [`CryptoProvider`], in
//! the spirit of rustls' `CryptoProvider`: key exchange (X25519, P-384, ML-KEM), the IKEv2 PRFs,
//! the AEADs used by the SK payload and by ESP, SHA-1 for NAT detection, and randomness. Nothing
//! here reads a global RNG behind the caller's back: every random byte comes from
//! [`CryptoProvider::fill_random`], so tests can swap in a seeded provider and replay a whole
//! handshake.
//!
//! [`RustCrypto`] is the default provider. A deterministic provider for tests
//! (`DeterministicProvider`) exists only under `cfg(test)` or the `test-provider` feature and
//! provides no security.

#![forbid(unsafe_code)]

mod aead;
mod kex;
mod prf;
mod rustcrypto;
mod secret;
#[cfg(any(test, feature = "test-provider"))]
mod test_provider;

use core::fmt;

pub use aead::{AeadAlgorithm, AeadCipher, AeadKey, IV_LEN, SALT_LEN, TAG_LEN};
pub use kex::{KeyExchange, KeyExchangeResponse, mlkem_ciphertext_len, public_value_len};
pub use prf::Prf;
pub use rustcrypto::RustCrypto;
pub use secret::{SecretBytes, SharedSecret};
#[cfg(any(test, feature = "test-provider"))]
pub use test_provider::{DeterministicProvider, ReplayProvider, mlkem_decapsulate_expanded};

use crate::wire::{KeyExchangeMethod, PrfAlgorithm};

/// The cryptography an IKE SA and its Child SAs use.
///
/// Implementations must be usable from several tunnels at once (`Send + Sync`). Every key
/// exchange uses fresh ephemeral keys drawn from [`fill_random`](Self::fill_random), so ML-KEM
/// and (EC)DH keys never share a seed (draft-ietf-ipsecme-ikev2-mlkem §3).
pub trait CryptoProvider: Send + Sync + fmt::Debug {
    /// Fills `dest` with cryptographically secure random bytes (SPIs, nonces, key generation).
    fn fill_random(&self, dest: &mut [u8]) -> Result<(), Error>;

    /// Whether [`start_key_exchange`](Self::start_key_exchange) supports `method`.
    fn supports_key_exchange(&self, method: KeyExchangeMethod) -> bool;

    /// Starts a key exchange as the side that sends first (the IKE initiator): generates a fresh
    /// ephemeral key pair whose public value goes into the KE payload.
    fn start_key_exchange(&self, method: KeyExchangeMethod) -> Result<Box<dyn KeyExchange>, Error>;

    /// Answers a key exchange as the side that receives first (the IKE responder).
    ///
    /// Validates the peer's value before using it: ECP points are checked to lie on the curve
    /// ([RFC 6989]), ML-KEM encapsulation keys get the FIPS 203 §7.2 type and modulus checks.
    /// For (EC)DH this generates a fresh key pair; for ML-KEM it encapsulates to the peer's key.
    ///
    /// [RFC 6989]: https://www.rfc-editor.org/rfc/rfc6989
    fn respond_key_exchange(
        &self,
        method: KeyExchangeMethod,
        peer_value: &[u8],
    ) -> Result<KeyExchangeResponse, Error>;

    /// The PRF for Transform Type 2 algorithm `algorithm`.
    fn prf(&self, algorithm: PrfAlgorithm) -> Result<Box<dyn Prf>, Error>;

    /// An AEAD instance keyed with `key` (the key only, without the salt).
    fn aead(&self, algorithm: AeadAlgorithm, key: &[u8]) -> Result<Box<dyn AeadCipher>, Error>;

    /// SHA-1 over the concatenation of `parts` (NAT_DETECTION_*_IP, RFC 7296 §2.23; CERTREQ).
    fn sha1(&self, parts: &[&[u8]]) -> [u8; 20];
}

/// Why a cryptographic operation failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The provider does not implement this key exchange method.
    #[error("unsupported key exchange method {0}")]
    UnsupportedKeyExchange(KeyExchangeMethod),
    /// The provider does not implement this PRF.
    #[error("unsupported PRF {0}")]
    UnsupportedPrf(PrfAlgorithm),
    /// A key of the wrong length was given to an AEAD.
    #[error("AEAD key has {got} bytes, {algorithm} needs {expected}")]
    InvalidKeyLength {
        /// The algorithm.
        algorithm: AeadAlgorithm,
        /// The length it needs.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The peer's key exchange data is malformed or fails validation.
    #[error("invalid {method} key exchange data: {reason}")]
    InvalidPeerValue {
        /// The method the value was for.
        method: KeyExchangeMethod,
        /// What is wrong with it.
        reason: InvalidPeerValue,
    },
    /// AEAD decryption failed: the ICV does not match (tampering, wrong key or wrong nonce).
    #[error("integrity check failed")]
    DecryptFailed,
    /// The data is too long for the AEAD.
    #[error("AEAD input too long")]
    AeadInputTooLong,
    /// The operating system's random source failed.
    #[error("random source failed")]
    RandomFailed,
}

/// What is wrong with a peer's key exchange data. Each variant names the check that failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidPeerValue {
    /// The value has the wrong length for the method (for ML-KEM, the FIPS 203 §7.2 / §7.3 type
    /// check).
    WrongLength {
        /// The length the method requires.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// An ML-KEM encapsulation key failed the FIPS 203 §7.2 modulus check.
    ModulusCheckFailed,
    /// An ECP public value is not a valid point on the curve (RFC 6989 §2.3).
    PointNotOnCurve,
    /// An X25519 exchange produced the all-zero value: the peer sent a low-order point
    /// (RFC 7748 §6.1; rejecting it is pqvpn policy, as RFC 8446 §7.4.2 makes it for TLS).
    AllZeroSharedSecret,
}

impl fmt::Display for InvalidPeerValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongLength { expected, got } => {
                write!(f, "{got} bytes where {expected} are required")
            }
            Self::ModulusCheckFailed => f.write_str("encapsulation key fails the modulus check"),
            Self::PointNotOnCurve => f.write_str("point is not on the curve"),
            Self::AllZeroSharedSecret => f.write_str("low-order point gives an all-zero secret"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METHODS: [KeyExchangeMethod; 5] = [
        KeyExchangeMethod::Curve25519,
        KeyExchangeMethod::Ecp384,
        KeyExchangeMethod::MlKem512,
        KeyExchangeMethod::MlKem768,
        KeyExchangeMethod::MlKem1024,
    ];

    #[test]
    fn both_sides_agree_for_every_method() {
        let provider = RustCrypto::new();
        for method in METHODS {
            let initiator = provider.start_key_exchange(method).unwrap();
            assert_eq!(initiator.method(), method);
            assert_eq!(
                Some(initiator.public_value().len()),
                public_value_len(method)
            );
            let response = provider
                .respond_key_exchange(method, initiator.public_value())
                .unwrap();
            if let Some(ct_len) = mlkem_ciphertext_len(method) {
                assert_eq!(response.public_value.len(), ct_len);
            }
            let secret = initiator.complete(&response.public_value).unwrap();
            assert_eq!(secret, response.shared_secret, "{method}");
            let expected_len = if method == KeyExchangeMethod::Ecp384 {
                48
            } else {
                32
            };
            assert_eq!(secret.len(), expected_len);
        }
    }

    #[test]
    fn every_exchange_uses_fresh_keys() {
        let provider = RustCrypto::new();
        for method in METHODS {
            let a = provider.start_key_exchange(method).unwrap();
            let b = provider.start_key_exchange(method).unwrap();
            assert_ne!(a.public_value(), b.public_value(), "{method}");
        }
    }

    #[test]
    fn wrong_lengths_are_rejected_with_the_expected_length() {
        let provider = RustCrypto::new();
        for method in METHODS {
            let expected = public_value_len(method).unwrap();
            let short = vec![1u8; expected - 1];
            assert_eq!(
                provider.respond_key_exchange(method, &short).unwrap_err(),
                Error::InvalidPeerValue {
                    method,
                    reason: InvalidPeerValue::WrongLength {
                        expected,
                        got: expected - 1
                    }
                }
            );
            // The initiator's side: FIPS 203 §7.3 type check on the ciphertext.
            let initiator = provider.start_key_exchange(method).unwrap();
            let reply_len = mlkem_ciphertext_len(method).unwrap_or(expected);
            let err = initiator.complete(&vec![1u8; reply_len + 1]).unwrap_err();
            assert!(matches!(
                err,
                Error::InvalidPeerValue {
                    reason: InvalidPeerValue::WrongLength { .. },
                    ..
                }
            ));
        }
    }

    #[test]
    fn x25519_low_order_point_is_rejected() {
        let provider = RustCrypto::new();
        // u = 0 and u = 1 are low-order points: the result is all zero (RFC 7748 §6.1).
        for u in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            assert_eq!(
                provider
                    .respond_key_exchange(KeyExchangeMethod::Curve25519, &u)
                    .unwrap_err(),
                Error::InvalidPeerValue {
                    method: KeyExchangeMethod::Curve25519,
                    reason: InvalidPeerValue::AllZeroSharedSecret
                }
            );
        }
    }

    #[test]
    fn ecp384_point_off_the_curve_is_rejected() {
        let provider = RustCrypto::new();
        let initiator = provider
            .start_key_exchange(KeyExchangeMethod::Ecp384)
            .unwrap();
        let mut point = initiator.public_value().to_vec();
        point[95] ^= 1; // y no longer matches x
        assert_eq!(
            provider
                .respond_key_exchange(KeyExchangeMethod::Ecp384, &point)
                .unwrap_err(),
            Error::InvalidPeerValue {
                method: KeyExchangeMethod::Ecp384,
                reason: InvalidPeerValue::PointNotOnCurve
            }
        );
    }

    #[test]
    fn mlkem_key_failing_the_modulus_check_is_rejected() {
        let provider = RustCrypto::new();
        let initiator = provider
            .start_key_exchange(KeyExchangeMethod::MlKem768)
            .unwrap();
        let mut ek = initiator.public_value().to_vec();
        // The first 12-bit coefficient becomes 0xFFF >= q = 3329.
        ek[0] = 0xff;
        ek[1] |= 0x0f;
        assert_eq!(
            provider
                .respond_key_exchange(KeyExchangeMethod::MlKem768, &ek)
                .unwrap_err(),
            Error::InvalidPeerValue {
                method: KeyExchangeMethod::MlKem768,
                reason: InvalidPeerValue::ModulusCheckFailed
            }
        );
    }

    #[test]
    fn mlkem_tampered_ciphertext_gives_an_unrelated_secret() {
        let provider = RustCrypto::new();
        let initiator = provider
            .start_key_exchange(KeyExchangeMethod::MlKem768)
            .unwrap();
        let mut response = provider
            .respond_key_exchange(KeyExchangeMethod::MlKem768, initiator.public_value())
            .unwrap();
        response.public_value[0] ^= 1;
        let secret = initiator.complete(&response.public_value).unwrap();
        assert_ne!(secret, response.shared_secret);
    }

    #[test]
    fn unsupported_algorithms_are_named() {
        let provider = RustCrypto::new();
        assert!(!provider.supports_key_exchange(KeyExchangeMethod::Modp2048));
        assert_eq!(
            provider
                .start_key_exchange(KeyExchangeMethod::Modp2048)
                .err()
                .map(|e| e.to_string()),
            Some("unsupported key exchange method MODP_2048".into())
        );
        assert!(provider.prf(PrfAlgorithm::HmacSha1).is_err());
    }

    #[test]
    fn deterministic_provider_replays_and_seeds_differ() {
        let run = |seed| {
            let provider = DeterministicProvider::new(seed);
            let x = provider
                .start_key_exchange(KeyExchangeMethod::Curve25519)
                .unwrap();
            let m = provider
                .start_key_exchange(KeyExchangeMethod::MlKem768)
                .unwrap();
            (x.public_value().to_vec(), m.public_value().to_vec())
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn aead_round_trips_and_detects_tampering() {
        let provider = RustCrypto::new();
        for algorithm in [
            AeadAlgorithm::Aes128Gcm16,
            AeadAlgorithm::Aes256Gcm16,
            AeadAlgorithm::ChaCha20Poly1305,
        ] {
            let keymat = vec![0x42; algorithm.keymat_len()];
            let key = AeadKey::new(&provider, algorithm, &keymat).unwrap();
            let iv = [1, 2, 3, 4, 5, 6, 7, 8];
            let mut buf = *b"attack at dawn";
            let tag = key.seal(&iv, b"aad", &mut buf).unwrap();
            assert_ne!(&buf, b"attack at dawn");
            let sealed = buf;
            key.open(&iv, b"aad", &mut buf, &tag).unwrap();
            assert_eq!(&buf, b"attack at dawn");

            let mut forged = sealed;
            forged[0] ^= 1;
            assert_eq!(
                key.open(&iv, b"aad", &mut forged, &tag),
                Err(Error::DecryptFailed)
            );
            let mut again = sealed;
            assert_eq!(
                key.open(&iv, b"aaD", &mut again, &tag),
                Err(Error::DecryptFailed)
            );
            let mut again = sealed;
            let other_iv = [0; 8];
            assert_eq!(
                key.open(&other_iv, b"aad", &mut again, &tag),
                Err(Error::DecryptFailed)
            );

            assert_eq!(
                AeadKey::new(&provider, algorithm, &keymat[1..]).unwrap_err(),
                Error::InvalidKeyLength {
                    algorithm,
                    expected: algorithm.keymat_len(),
                    got: algorithm.keymat_len() - 1
                }
            );
        }
    }

    #[test]
    fn aead_transforms_map_both_ways() {
        use crate::wire::EncryptionAlgorithm;
        for algorithm in [
            AeadAlgorithm::Aes128Gcm16,
            AeadAlgorithm::Aes256Gcm16,
            AeadAlgorithm::ChaCha20Poly1305,
        ] {
            let (encr, bits) = algorithm.transform();
            assert_eq!(AeadAlgorithm::from_transform(encr, bits), Some(algorithm));
        }
        assert_eq!(
            AeadAlgorithm::from_transform(EncryptionAlgorithm::AesGcm16, Some(192)),
            None
        );
        assert_eq!(
            AeadAlgorithm::from_transform(EncryptionAlgorithm::AesGcm16, None),
            None
        );
        assert_eq!(
            AeadAlgorithm::from_transform(EncryptionAlgorithm::ChaCha20Poly1305, Some(256)),
            None
        );
    }
}
