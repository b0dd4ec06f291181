//! AEADs for the SK payload ([RFC 5282]) and ESP ([RFC 4106], [RFC 7634]).
//!
//! All three use a 4-octet salt taken from the end of the key material, an 8-octet explicit IV
//! on the wire, the 12-octet nonce `salt | IV`, and a 16-octet ICV.
//!
//! [RFC 5282]: https://www.rfc-editor.org/rfc/rfc5282
//! [RFC 4106]: https://www.rfc-editor.org/rfc/rfc4106
//! [RFC 7634]: https://www.rfc-editor.org/rfc/rfc7634

use core::fmt;

use super::{CryptoProvider, Error};
use crate::wire::EncryptionAlgorithm;

/// Octets of salt at the end of the keying material (RFC 4106 §8.1, RFC 7634 §2).
pub const SALT_LEN: usize = 4;
/// Octets of explicit IV carried in each packet (RFC 4106 §3.1, RFC 7634 §2).
pub const IV_LEN: usize = 8;
/// Octets of ICV: AES-GCM with a 16-octet ICV (ENCR_AES_GCM_16) and ChaCha20-Poly1305.
pub const TAG_LEN: usize = 16;

/// The AEAD transforms pqvpn negotiates.
#[non_exhaustive]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum AeadAlgorithm {
    /// ENCR_AES_GCM_16 with a 128-bit key.
    Aes128Gcm16,
    /// ENCR_AES_GCM_16 with a 256-bit key.
    Aes256Gcm16,
    /// ENCR_CHACHA20_POLY1305 (256-bit key, RFC 7634).
    ChaCha20Poly1305,
}

impl AeadAlgorithm {
    /// Maps an ENCR transform and its Key Length attribute (in bits) to an algorithm.
    ///
    /// ChaCha20-Poly1305 must come without a Key Length attribute (RFC 7634 §3); AES-GCM must
    /// carry one (RFC 5282 §8).
    pub fn from_transform(encr: EncryptionAlgorithm, key_bits: Option<u16>) -> Option<Self> {
        match (encr, key_bits) {
            (EncryptionAlgorithm::AesGcm16, Some(128)) => Some(Self::Aes128Gcm16),
            (EncryptionAlgorithm::AesGcm16, Some(256)) => Some(Self::Aes256Gcm16),
            (EncryptionAlgorithm::ChaCha20Poly1305, None) => Some(Self::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The ENCR transform ID and Key Length attribute (bits) that negotiate this algorithm.
    pub fn transform(self) -> (EncryptionAlgorithm, Option<u16>) {
        match self {
            Self::Aes128Gcm16 => (EncryptionAlgorithm::AesGcm16, Some(128)),
            Self::Aes256Gcm16 => (EncryptionAlgorithm::AesGcm16, Some(256)),
            Self::ChaCha20Poly1305 => (EncryptionAlgorithm::ChaCha20Poly1305, None),
        }
    }

    /// Key length in octets, without the salt.
    pub fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm16 => 16,
            Self::Aes256Gcm16 | Self::ChaCha20Poly1305 => 32,
        }
    }

    /// Octets of keying material taken from KEYMAT or prf+: key then salt.
    pub fn keymat_len(self) -> usize {
        self.key_len() + SALT_LEN
    }

    /// Human name for status output.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Aes128Gcm16 => "AES-GCM-128",
            Self::Aes256Gcm16 => "AES-GCM-256",
            Self::ChaCha20Poly1305 => "ChaCha20-Poly1305",
        }
    }
}

impl fmt::Debug for AeadAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

impl fmt::Display for AeadAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

/// A raw AEAD keyed with one key: 12-octet nonce, 16-octet detached tag, in-place operation.
pub trait AeadCipher: Send + Sync {
    /// The algorithm.
    fn algorithm(&self) -> AeadAlgorithm;

    /// Encrypts `buf` in place and returns the ICV.
    fn seal_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error>;

    /// Verifies `tag` and decrypts `buf` in place. On failure `buf` holds unspecified bytes.
    fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error>;
}

/// An AEAD keyed from IKE/ESP keying material `key | salt`, taking the 8-octet explicit IV.
///
/// The nonce is `salt | iv` (RFC 4106 §4, RFC 5282 §4, RFC 7634 §2). The caller guarantees
/// that an IV is never used twice under one key (ESP uses the sequence number, the SK payload a
/// per-message counter).
pub struct AeadKey {
    cipher: Box<dyn AeadCipher>,
    salt: [u8; SALT_LEN],
}

impl AeadKey {
    /// Splits `keymat` into key and salt and keys the cipher through `provider`.
    pub fn new(
        provider: &dyn CryptoProvider,
        algorithm: AeadAlgorithm,
        keymat: &[u8],
    ) -> Result<Self, Error> {
        let bad_length = Error::InvalidKeyLength {
            algorithm,
            expected: algorithm.keymat_len(),
            got: keymat.len(),
        };
        if keymat.len() != algorithm.keymat_len() {
            return Err(bad_length);
        }
        let (key, salt) = keymat.split_at(algorithm.key_len());
        let salt: [u8; SALT_LEN] = salt.try_into().map_err(|_| bad_length)?;
        Ok(Self {
            cipher: provider.aead(algorithm, key)?,
            salt,
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> AeadAlgorithm {
        self.cipher.algorithm()
    }

    fn nonce(&self, iv: &[u8; IV_LEN]) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        let (s, i) = nonce.split_at_mut(SALT_LEN);
        s.copy_from_slice(&self.salt);
        i.copy_from_slice(iv);
        nonce
    }

    /// Encrypts `buf` in place under the nonce `salt | iv` and returns the ICV.
    pub fn seal(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        self.cipher.seal_in_place(&self.nonce(iv), aad, buf)
    }

    /// Verifies `tag` and decrypts `buf` in place under the nonce `salt | iv`.
    pub fn open(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error> {
        self.cipher.open_in_place(&self.nonce(iv), aad, buf, tag)
    }
}

impl Drop for AeadKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.salt);
    }
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadKey")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}
