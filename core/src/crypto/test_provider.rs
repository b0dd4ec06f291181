//! A seeded provider for deterministic tests and fuzzing. **It provides no security.**

use std::sync::Mutex;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::aead::{AeadAlgorithm, AeadCipher};
use super::{CryptoProvider, Error, KeyExchange, KeyExchangeResponse, Prf, rustcrypto};
use crate::wire::{KeyExchangeMethod, PrfAlgorithm};

/// The RustCrypto algorithms with a ChaCha20 stream seeded from a `u64` as the only source of
/// randomness, so a test replays the same SPIs, nonces and keys on every run.
///
/// Only compiled with `cfg(test)` or the `test-provider` feature; never in a release binary.
#[derive(Debug)]
pub struct DeterministicProvider {
    rng: Mutex<ChaCha20Rng>,
}

impl DeterministicProvider {
    /// A provider whose random stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Mutex::new(ChaCha20Rng::seed_from_u64(seed)),
        }
    }
}

impl CryptoProvider for DeterministicProvider {
    fn fill_random(&self, dest: &mut [u8]) -> Result<(), Error> {
        let mut rng = self.rng.lock().map_err(|_| Error::RandomFailed)?;
        rng.fill_bytes(dest);
        Ok(())
    }

    fn supports_key_exchange(&self, method: KeyExchangeMethod) -> bool {
        rustcrypto::supports_key_exchange(method)
    }

    fn start_key_exchange(&self, method: KeyExchangeMethod) -> Result<Box<dyn KeyExchange>, Error> {
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
}
