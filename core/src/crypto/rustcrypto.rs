//! The default provider: pure-Rust RustCrypto crates, randomness from the operating system.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use sha1::Digest;

use super::aead::{AeadAlgorithm, AeadCipher, TAG_LEN};
use super::kex::{Ecp384, MlKem512, MlKem768, MlKem1024, X25519};
use super::prf::HmacPrf;
use super::{CryptoProvider, Error, KeyExchange, KeyExchangeResponse, Prf};
use crate::wire::{KeyExchangeMethod, PrfAlgorithm};

/// The default [`CryptoProvider`]: RustCrypto's `x25519-dalek`, `p384`, `ml-kem`, `hmac`/`sha2`,
/// `aes-gcm` and `chacha20poly1305`, with the operating system's CSPRNG (`getrandom`).
#[derive(Debug, Default, Clone, Copy)]
#[non_exhaustive]
pub struct RustCrypto;

impl RustCrypto {
    /// The provider.
    pub const fn new() -> Self {
        Self
    }
}

/// Key exchange dispatch shared by every provider that uses these implementations; only the
/// randomness differs.
pub(super) fn start_key_exchange(
    provider: &dyn CryptoProvider,
    method: KeyExchangeMethod,
) -> Result<Box<dyn KeyExchange>, Error> {
    Ok(match method {
        KeyExchangeMethod::Curve25519 => Box::new(X25519::generate(provider)?),
        KeyExchangeMethod::Ecp384 => Box::new(Ecp384::generate(provider)?),
        KeyExchangeMethod::MlKem512 => Box::new(MlKem512::generate(provider)?),
        KeyExchangeMethod::MlKem768 => Box::new(MlKem768::generate(provider)?),
        KeyExchangeMethod::MlKem1024 => Box::new(MlKem1024::generate(provider)?),
        other => return Err(Error::UnsupportedKeyExchange(other)),
    })
}

pub(super) fn respond_key_exchange(
    provider: &dyn CryptoProvider,
    method: KeyExchangeMethod,
    peer_value: &[u8],
) -> Result<KeyExchangeResponse, Error> {
    match method {
        KeyExchangeMethod::Curve25519 => X25519::respond(provider, peer_value),
        KeyExchangeMethod::Ecp384 => Ecp384::respond(provider, peer_value),
        KeyExchangeMethod::MlKem512 => MlKem512::respond(provider, peer_value),
        KeyExchangeMethod::MlKem768 => MlKem768::respond(provider, peer_value),
        KeyExchangeMethod::MlKem1024 => MlKem1024::respond(provider, peer_value),
        other => Err(Error::UnsupportedKeyExchange(other)),
    }
}

pub(super) fn supports_key_exchange(method: KeyExchangeMethod) -> bool {
    matches!(
        method,
        KeyExchangeMethod::Curve25519
            | KeyExchangeMethod::Ecp384
            | KeyExchangeMethod::MlKem512
            | KeyExchangeMethod::MlKem768
            | KeyExchangeMethod::MlKem1024
    )
}

pub(super) fn prf(algorithm: PrfAlgorithm) -> Result<Box<dyn Prf>, Error> {
    Ok(match algorithm {
        PrfAlgorithm::HmacSha2_256 => Box::new(HmacPrf::<sha2::Sha256>::new(algorithm)),
        PrfAlgorithm::HmacSha2_384 => Box::new(HmacPrf::<sha2::Sha384>::new(algorithm)),
        PrfAlgorithm::HmacSha2_512 => Box::new(HmacPrf::<sha2::Sha512>::new(algorithm)),
        other => return Err(Error::UnsupportedPrf(other)),
    })
}

pub(super) fn aead(algorithm: AeadAlgorithm, key: &[u8]) -> Result<Box<dyn AeadCipher>, Error> {
    let bad_length = Error::InvalidKeyLength {
        algorithm,
        expected: algorithm.key_len(),
        got: key.len(),
    };
    Ok(match algorithm {
        AeadAlgorithm::Aes128Gcm16 => Box::new(RustCryptoAead {
            algorithm,
            cipher: Aes128Gcm::new_from_slice(key).map_err(|_| bad_length)?,
        }),
        AeadAlgorithm::Aes256Gcm16 => Box::new(RustCryptoAead {
            algorithm,
            cipher: Aes256Gcm::new_from_slice(key).map_err(|_| bad_length)?,
        }),
        AeadAlgorithm::ChaCha20Poly1305 => Box::new(RustCryptoAead {
            algorithm,
            cipher: ChaCha20Poly1305::new_from_slice(key).map_err(|_| bad_length)?,
        }),
    })
}

pub(super) fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut hash = sha1::Sha1::new();
    for part in parts {
        hash.update(part);
    }
    hash.finalize().into()
}

impl CryptoProvider for RustCrypto {
    fn fill_random(&self, dest: &mut [u8]) -> Result<(), Error> {
        getrandom::fill(dest).map_err(|_| Error::RandomFailed)
    }

    fn supports_key_exchange(&self, method: KeyExchangeMethod) -> bool {
        supports_key_exchange(method)
    }

    fn start_key_exchange(&self, method: KeyExchangeMethod) -> Result<Box<dyn KeyExchange>, Error> {
        start_key_exchange(self, method)
    }

    fn respond_key_exchange(
        &self,
        method: KeyExchangeMethod,
        peer_value: &[u8],
    ) -> Result<KeyExchangeResponse, Error> {
        respond_key_exchange(self, method, peer_value)
    }

    fn prf(&self, algorithm: PrfAlgorithm) -> Result<Box<dyn Prf>, Error> {
        prf(algorithm)
    }

    fn aead(&self, algorithm: AeadAlgorithm, key: &[u8]) -> Result<Box<dyn AeadCipher>, Error> {
        aead(algorithm, key)
    }

    fn sha1(&self, parts: &[&[u8]]) -> [u8; 20] {
        sha1(parts)
    }
}

/// A RustCrypto AEAD with a 12-octet nonce and 16-octet tag.
struct RustCryptoAead<C> {
    algorithm: AeadAlgorithm,
    cipher: C,
}

impl<C> AeadCipher for RustCryptoAead<C>
where
    C: AeadInOut<NonceSize = aes_gcm::aead::consts::U12, TagSize = aes_gcm::aead::consts::U16>
        + Send
        + Sync,
{
    fn algorithm(&self) -> AeadAlgorithm {
        self.algorithm
    }

    fn seal_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        let tag = self
            .cipher
            .encrypt_inout_detached(nonce.into(), aad, buf.into())
            .map_err(|_| Error::AeadInputTooLong)?;
        Ok(tag.into())
    }

    fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error> {
        self.cipher
            .decrypt_inout_detached(nonce.into(), aad, buf.into(), tag.into())
            .map_err(|_| Error::DecryptFailed)
    }
}
