//! A seeded provider for deterministic tests and fuzzing. **It provides no security.**

use std::sync::Mutex;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::aead::{AeadAlgorithm, AeadCipher};

/// Every `CryptoProvider` method except `fill_random`, delegated to the RustCrypto
/// implementations: the test providers differ from the real one only in their randomness.
macro_rules! rustcrypto_algorithms {
    () => {
        fn supports_key_exchange(&self, method: KeyExchangeMethod) -> bool {
            rustcrypto::supports_key_exchange(method)
        }

        fn start_key_exchange(
            &self,
            method: KeyExchangeMethod,
        ) -> Result<Box<dyn KeyExchange>, Error> {
            rustcrypto::start_key_exchange(self, method)
        }

        fn respond_key_exchange(
            &self,
            method: KeyExchangeMethod,
            peer_value: &[u8],
        ) -> Result<KeyExchangeResponse, Error> {
            rustcrypto::respond_key_exchange(self, method, peer_value)
        }

        fn prf(&self, algorithm: PrfAlgorithm) -> Result<Box<dyn Prf>, Error> {
            rustcrypto::prf(algorithm)
        }

        fn aead(&self, algorithm: AeadAlgorithm, key: &[u8]) -> Result<Box<dyn AeadCipher>, Error> {
            rustcrypto::aead(algorithm, key)
        }

        fn sha1(&self, parts: &[&[u8]]) -> [u8; 20] {
            rustcrypto::sha1(parts)
        }
    };
}
use super::{CryptoProvider, Error, KeyExchange, KeyExchangeResponse, Prf, rustcrypto};
use crate::wire::{KeyExchangeMethod, PrfAlgorithm};

/// The RustCrypto algorithms with a ChaCha20 stream seeded from a `u64` as the only source of
/// randomness, so a test replays the same SPIs, nonces and keys on every run.
///
/// Only compiled with `cfg(test)` or the `test-provider` feature; never in a release binary.
#[derive(Debug)]
pub struct DeterministicProvider {
    rng: Mutex<ChaCha20Rng>,
    /// Answers to the next 4-octet draws (ESP SPIs), before the stream takes over.
    scripted_u32: Mutex<Vec<u32>>,
}

impl DeterministicProvider {
    /// A provider whose random stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self::with_scripted_spis(seed, Vec::new())
    }

    /// As [`new`](Self::new), but the first 4-octet draws (ESP SPIs are the only ones) return
    /// `spis` in order: tests force SPI collisions with it.
    pub fn with_scripted_spis(seed: u64, mut spis: Vec<u32>) -> Self {
        spis.reverse();
        Self {
            rng: Mutex::new(ChaCha20Rng::seed_from_u64(seed)),
            scripted_u32: Mutex::new(spis),
        }
    }
}

impl CryptoProvider for DeterministicProvider {
    fn fill_random(&self, dest: &mut [u8]) -> Result<(), Error> {
        if dest.len() == 4
            && let Some(v) = self
                .scripted_u32
                .lock()
                .map_err(|_| Error::RandomFailed)?
                .pop()
        {
            dest.copy_from_slice(&v.to_be_bytes());
            return Ok(());
        }
        let mut rng = self.rng.lock().map_err(|_| Error::RandomFailed)?;
        rng.fill_bytes(dest);
        Ok(())
    }

    rustcrypto_algorithms!();
}

/// A provider whose randomness is a fixed byte string, consumed in order: known-answer tests
/// feed it the private values of a vector (an X25519 scalar, a P-384 scalar, ML-KEM `d | z` or
/// `m`) and the production key-exchange code then runs on exactly those values.
///
/// Asking for more bytes than remain fails with [`Error::RandomFailed`].
#[derive(Debug)]
pub struct ReplayProvider {
    bytes: Mutex<std::collections::VecDeque<u8>>,
}

impl ReplayProvider {
    /// A provider that hands out `bytes`, then fails.
    pub fn new(bytes: &[u8]) -> Self {
        Self {
            bytes: Mutex::new(bytes.iter().copied().collect()),
        }
    }

    /// Octets not consumed yet.
    pub fn remaining(&self) -> usize {
        self.bytes.lock().map_or(0, |b| b.len())
    }
}

impl CryptoProvider for ReplayProvider {
    fn fill_random(&self, dest: &mut [u8]) -> Result<(), Error> {
        let mut bytes = self.bytes.lock().map_err(|_| Error::RandomFailed)?;
        if bytes.len() < dest.len() {
            return Err(Error::RandomFailed);
        }
        let n = dest.len();
        for (d, b) in dest.iter_mut().zip(bytes.drain(..n)) {
            *d = b;
        }
        Ok(())
    }

    rustcrypto_algorithms!();
}

/// Decapsulates `ct` with an ML-KEM decapsulation key in the FIPS 203 expanded encoding
/// (`dk`, 1632/2400/3168 octets), for the ACVP decapsulation vectors, which give keys in that
/// form. Test-only: pqvpn itself only holds seed-generated keys.
pub fn mlkem_decapsulate_expanded(
    method: KeyExchangeMethod,
    dk: &[u8],
    ct: &[u8],
) -> Result<super::SharedSecret, Error> {
    super::kex::decapsulate_expanded(method, dk, ct)
}
