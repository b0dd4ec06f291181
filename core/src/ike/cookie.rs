//! Stateless COOKIEs for IKE_SA_INIT ([RFC 7296 §2.6]): what the responder asks a source to
//! echo before it spends a key exchange or any state on it.
//!
//! `Cookie = <VersionIDofSecret> | HMAC-SHA-256(secret, Ni | IPi | SPIi)`. The secret is
//! replaced every [`SECRET_LIFETIME`]; cookies made with the previous one are still accepted,
//! so a cookie stays good for one to two lifetimes. Cookies are compared in constant time.
//!
//! [RFC 7296 §2.6]: https://www.rfc-editor.org/rfc/rfc7296#section-2.6

use core::time::Duration;
use std::net::IpAddr;
use std::time::Instant;

use subtle::ConstantTimeEq;

use crate::crypto::{CryptoProvider, SecretBytes};
use crate::ike::Error;
use crate::ike::sa::random_bytes;
use crate::wire::{IkeSpi, PrfAlgorithm};

/// How long one cookie secret is used to make cookies.
pub(crate) const SECRET_LIFETIME: Duration = Duration::from_secs(60);

/// The current and the previous cookie secret, each with its version octet.
pub(crate) struct CookieSecrets {
    current: (u8, SecretBytes),
    previous: Option<(u8, SecretBytes)>,
    /// When `current` began to be used; set at its first use (the constructor has no clock).
    since: Option<Instant>,
}

impl CookieSecrets {
    /// A first secret drawn from `provider`.
    pub(crate) fn new(provider: &dyn CryptoProvider) -> Result<Self, Error> {
        Ok(Self {
            current: (1, SecretBytes::new(random_bytes(provider, 32)?)),
            previous: None,
            since: None,
        })
    }

    /// Replaces the secret once it has been in use for [`SECRET_LIFETIME`].
    fn rotate(&mut self, provider: &dyn CryptoProvider, now: Instant) -> Result<(), Error> {
        match self.since {
            None => self.since = Some(now),
            Some(since) if now.saturating_duration_since(since) >= SECRET_LIFETIME => {
                let fresh = SecretBytes::new(random_bytes(provider, 32)?);
                let version = self.current.0.wrapping_add(1);
                self.previous = Some(core::mem::replace(&mut self.current, (version, fresh)));
                self.since = Some(now);
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// The cookie to send to `ip` for an IKE_SA_INIT with `nonce_i` and `spi_i`.
    pub(crate) fn make(
        &mut self,
        provider: &dyn CryptoProvider,
        now: Instant,
        nonce_i: &[u8],
        ip: IpAddr,
        spi_i: IkeSpi,
    ) -> Result<Vec<u8>, Error> {
        self.rotate(provider, now)?;
        let (version, secret) = &self.current;
        compute(provider, *version, secret, nonce_i, ip, spi_i)
    }

    /// Whether `presented` is a cookie we made, with the current or the previous secret, for
    /// this `nonce_i`, `ip` and `spi_i`.
    pub(crate) fn verify(
        &mut self,
        provider: &dyn CryptoProvider,
        now: Instant,
        presented: &[u8],
        nonce_i: &[u8],
        ip: IpAddr,
        spi_i: IkeSpi,
    ) -> Result<bool, Error> {
        self.rotate(provider, now)?;
        let Some(&version) = presented.first() else {
            return Ok(false);
        };
        let secret = if version == self.current.0 {
            &self.current.1
        } else {
            match &self.previous {
                Some((v, s)) if *v == version => s,
                _ => return Ok(false),
            }
        };
        let expected = compute(provider, version, secret, nonce_i, ip, spi_i)?;
        Ok(bool::from(expected.as_slice().ct_eq(presented)))
    }
}

fn compute(
    provider: &dyn CryptoProvider,
    version: u8,
    secret: &SecretBytes,
    nonce_i: &[u8],
    ip: IpAddr,
    spi_i: IkeSpi,
) -> Result<Vec<u8>, Error> {
    let prf = provider.prf(PrfAlgorithm::HmacSha2_256)?;
    let ip = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mac = prf.prf(secret.expose(), &[nonce_i, &ip, &spi_i.0.to_be_bytes()]);
    let mut cookie = Vec::with_capacity(1 + mac.expose().len());
    cookie.push(version);
    cookie.extend_from_slice(mac.expose());
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::crypto::DeterministicProvider;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));

    #[test]
    fn cookie_binds_nonce_address_and_spi_and_outlives_one_rotation_only() {
        let p = DeterministicProvider::new(3);
        let mut c = CookieSecrets::new(&p).unwrap();
        let t0 = Instant::now();
        let cookie = c.make(&p, t0, b"nonce", IP, IkeSpi(7)).unwrap();
        assert!(c.verify(&p, t0, &cookie, b"nonce", IP, IkeSpi(7)).unwrap());
        assert!(!c.verify(&p, t0, &cookie, b"other", IP, IkeSpi(7)).unwrap());
        assert!(!c.verify(&p, t0, &cookie, b"nonce", IP, IkeSpi(8)).unwrap());
        let other_ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));
        assert!(
            !c.verify(&p, t0, &cookie, b"nonce", other_ip, IkeSpi(7))
                .unwrap()
        );
        let mut flipped = cookie.clone();
        flipped[5] ^= 1;
        assert!(!c.verify(&p, t0, &flipped, b"nonce", IP, IkeSpi(7)).unwrap());
        assert!(!c.verify(&p, t0, &[], b"nonce", IP, IkeSpi(7)).unwrap());

        // One rotation: the old cookie still passes, new cookies carry the next version.
        let t1 = t0 + SECRET_LIFETIME;
        assert!(c.verify(&p, t1, &cookie, b"nonce", IP, IkeSpi(7)).unwrap());
        let newer = c.make(&p, t1, b"nonce", IP, IkeSpi(7)).unwrap();
        assert_ne!(newer, cookie);
        assert_eq!(newer[0], cookie[0].wrapping_add(1));
        // Two rotations: the first secret is gone.
        let t2 = t1 + SECRET_LIFETIME;
        assert!(!c.verify(&p, t2, &cookie, b"nonce", IP, IkeSpi(7)).unwrap());
        assert!(c.verify(&p, t2, &newer, b"nonce", IP, IkeSpi(7)).unwrap());
    }
}
