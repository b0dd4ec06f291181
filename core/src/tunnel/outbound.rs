//! The ESP SA a tunnel sends on, and the ones it replaced that still exist.
//!
//! A rekey switches sending to the new SA at once (make-before-break). Usually the old SA is
//! deleted next. But in a rekey collision (RFC 7296 §2.8.1) the winner first hears of the peer's
//! SA, switches to it, and then the peer deletes it as the redundant one; sending must fall back
//! to the SA it replaced, with its sequence numbers intact, until the surviving rekey completes.
//! When no SA is left the tunnel carries nothing until a new Child SA is created in its place
//! (RFC 7296 §1.3.1), or the tunnel ends.

use crate::esp::{EspSpi, OutboundSa};

/// Replaced SAs kept at most (normally one lives until its Delete; collisions add one).
const MAX_REPLACED: usize = 4;

/// The current outbound SA (none after the last was deleted) and those it replaced, newest
/// last.
pub(crate) struct Outbound {
    current: Option<OutboundSa>,
    replaced: Vec<OutboundSa>,
}

/// The current outbound SA was deleted and nothing is left to send on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NoOutboundSa;

impl Outbound {
    pub(crate) fn new(current: OutboundSa) -> Self {
        Self {
            current: Some(current),
            replaced: Vec::new(),
        }
    }

    /// The SA to send on; `None` while a deleted one awaits its re-creation.
    pub(crate) fn current(&mut self) -> Option<&mut OutboundSa> {
        self.current.as_mut()
    }

    /// A rekey (or a re-creation) made `new`: send on it from now on.
    pub(crate) fn rekeyed(&mut self, new: OutboundSa) {
        let Some(old) = self.current.replace(new) else {
            return;
        };
        if self.replaced.len() == MAX_REPLACED {
            self.replaced.remove(0);
        }
        self.replaced.push(old);
    }

    /// The SA with (outbound) `spi` was deleted. When it was the current one, the newest
    /// replaced SA takes over.
    ///
    /// # Errors
    ///
    /// [`NoOutboundSa`] when the current SA was deleted and none is left (then nothing is sent
    /// until [`rekeyed`](Self::rekeyed) brings one).
    pub(crate) fn deleted(&mut self, spi: EspSpi) -> Result<(), NoOutboundSa> {
        self.replaced.retain(|sa| sa.spi() != spi);
        match &self.current {
            Some(sa) if sa.spi() != spi => return Ok(()),
            None => return Err(NoOutboundSa),
            Some(_) => {}
        }
        self.current = self.replaced.pop();
        self.current.as_ref().map(|_| ()).ok_or(NoOutboundSa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{AeadAlgorithm, DeterministicProvider, SecretBytes};
    use crate::esp::SaConfig;

    fn sa(spi: u32) -> OutboundSa {
        let keymat = SecretBytes::from_slice(&[spi as u8; 36]);
        OutboundSa::new(
            &DeterministicProvider::new(1),
            &SaConfig::new(AeadAlgorithm::Aes256Gcm16),
            EspSpi(spi),
            &keymat,
        )
        .unwrap()
    }

    fn seal(out: &mut Outbound) -> (u32, u32) {
        let mut buf = [0u8; 256];
        let mut packet = [0u8; 40];
        packet[..4].copy_from_slice(&[0x45, 0, 0, 40]);
        out.current().unwrap().seal(&packet, &mut buf).unwrap();
        let spi = u32::from_be_bytes(buf[0..4].try_into().unwrap());
        let seq = u32::from_be_bytes(buf[4..8].try_into().unwrap());
        (spi, seq)
    }

    #[test]
    fn a_rekey_then_the_old_sas_delete_keeps_the_new_one() {
        let mut out = Outbound::new(sa(1));
        assert_eq!(seal(&mut out), (1, 1));
        out.rekeyed(sa(2));
        assert_eq!(seal(&mut out), (2, 1));
        assert_eq!(out.deleted(EspSpi(1)), Ok(()));
        assert_eq!(seal(&mut out), (2, 2));
        // A Delete of an SA we never sent on changes nothing.
        assert_eq!(out.deleted(EspSpi(99)), Ok(()));
        assert_eq!(seal(&mut out), (2, 3));
    }

    #[test]
    fn a_deleted_redundant_sa_falls_back_with_its_sequence_numbers() {
        let mut out = Outbound::new(sa(1));
        assert_eq!(seal(&mut out), (1, 1));
        assert_eq!(seal(&mut out), (1, 2));
        // The peer's SA of a collision arrives first, then the peer deletes it.
        out.rekeyed(sa(2));
        assert_eq!(seal(&mut out), (2, 1));
        assert_eq!(out.deleted(EspSpi(2)), Ok(()));
        // Back on SA 1, continuing its sequence (no replay at the peer).
        assert_eq!(seal(&mut out), (1, 3));
        // Our rekey completes; then SA 1 goes.
        out.rekeyed(sa(3));
        assert_eq!(out.deleted(EspSpi(1)), Ok(()));
        assert_eq!(seal(&mut out), (3, 1));
    }

    #[test]
    fn deleting_the_last_sa_leaves_nothing_to_send_on() {
        let mut out = Outbound::new(sa(1));
        out.rekeyed(sa(2));
        assert_eq!(out.deleted(EspSpi(1)), Ok(()));
        assert_eq!(out.deleted(EspSpi(2)), Err(NoOutboundSa));
        assert!(out.current().is_none());
        // A re-created Child SA: sending starts again on it, at sequence number 1.
        out.rekeyed(sa(3));
        assert_eq!(seal(&mut out), (3, 1));
        assert!(out.replaced.is_empty());
    }

    #[test]
    fn replaced_sas_are_bounded() {
        let mut out = Outbound::new(sa(1));
        for spi in 2..=10 {
            out.rekeyed(sa(spi));
        }
        assert_eq!(out.replaced.len(), MAX_REPLACED);
        assert_eq!(out.replaced.first().map(OutboundSa::spi), Some(EspSpi(6)));
    }
}
