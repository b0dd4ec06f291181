//! The IKEv2 pseudorandom function ([RFC 7296 §2.13]).
//!
//! [RFC 7296 §2.13]: https://www.rfc-editor.org/rfc/rfc7296#section-2.13

use hmac::{KeyInit, Mac};

use super::SecretBytes;
use crate::wire::PrfAlgorithm;

/// One IKEv2 PRF: `prf(key, data)` with a fixed output length.
pub trait Prf: Send + Sync {
    /// The Transform Type 2 algorithm this implements.
    fn algorithm(&self) -> PrfAlgorithm;

    /// Output length in bytes; also the preferred key length for SK_d, SK_pi and SK_pr
    /// (RFC 7296 §2.14).
    fn output_len(&self) -> usize;

    /// Computes `prf(key, parts[0] | parts[1] | ...)`. Keys of any length are accepted (HMAC).
    fn prf(&self, key: &[u8], parts: &[&[u8]]) -> SecretBytes;
}

/// HMAC-SHA2 as an IKEv2 PRF ([RFC 4868]).
///
/// [RFC 4868]: https://www.rfc-editor.org/rfc/rfc4868
pub(super) struct HmacPrf<D> {
    algorithm: PrfAlgorithm,
    _digest: core::marker::PhantomData<fn() -> D>,
}

impl<D> HmacPrf<D> {
    pub(super) const fn new(algorithm: PrfAlgorithm) -> Self {
        Self {
            algorithm,
            _digest: core::marker::PhantomData,
        }
    }
}

impl<D> Prf for HmacPrf<D>
where
    D: hmac::EagerHash + 'static,
    hmac::Hmac<D>: KeyInit + Mac,
{
    fn algorithm(&self) -> PrfAlgorithm {
        self.algorithm
    }

    fn output_len(&self) -> usize {
        <hmac::Hmac<D> as hmac::digest::OutputSizeUser>::output_size()
    }

    fn prf(&self, key: &[u8], parts: &[&[u8]]) -> SecretBytes {
        // HMAC accepts keys of every length (RFC 2104 §2), so this cannot fail.
        let Ok(mut mac) = <hmac::Hmac<D> as KeyInit>::new_from_slice(key) else {
            unreachable!("HMAC takes keys of any length")
        };
        for part in parts {
            mac.update(part);
        }
        let mut out = mac.finalize().into_bytes();
        let secret = SecretBytes::from_slice(&out);
        // The stack copy goes too (security review L5).
        zeroize::Zeroize::zeroize(out.as_mut_slice());
        secret
    }
}
