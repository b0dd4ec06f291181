//! The session's clock-driven side: retransmissions ([RFC 7296 §2.1]), soft and hard
//! lifetimes of the IKE SA and Child SAs ([RFC 7296 §2.8]), liveness checks ([RFC 7296 §2.4])
//! and retries after TEMPORARY_FAILURE ([RFC 7296 §2.25]).
//!
//! [RFC 7296 §2.1]: https://www.rfc-editor.org/rfc/rfc7296#section-2.1
//! [RFC 7296 §2.4]: https://www.rfc-editor.org/rfc/rfc7296#section-2.4
//! [RFC 7296 §2.8]: https://www.rfc-editor.org/rfc/rfc7296#section-2.8
//! [RFC 7296 §2.25]: https://www.rfc-editor.org/rfc/rfc7296#section-2.25

use std::time::Instant;

use crate::ike::Error;
use crate::ike::config::Lifetime;
use crate::ike::sa::ChildSaId;

use super::followup::PeerRekeyKind;
use super::{Exchange, Intent, ORPHANED_LIMIT, RETIRED_IKE_SA_LINGER, Session, Status};

/// The earliest of the instants pushed, without allocating (`poll_timeout` runs often).
#[derive(Default)]
pub(super) struct Earliest(Option<Instant>);

impl Earliest {
    pub(super) fn push(&mut self, at: Instant) {
        self.0 = Some(self.0.map_or(at, |e| e.min(at)));
    }

    pub(super) fn extend(&mut self, all: impl IntoIterator<Item = Instant>) {
        for at in all {
            self.push(at);
        }
    }
}

impl Session {
    /// A point `lifetime.rekey` minus random jitter after `now`.
    pub(super) fn rekey_time(&self, now: Instant, lifetime: &Lifetime) -> Instant {
        let mut b = [0u8; 4];
        // Without randomness, no jitter: rekeying still happens.
        let fraction = match self.provider.fill_random(&mut b) {
            Ok(()) => f64::from(u32::from_be_bytes(b)) / f64::from(u32::MAX),
            Err(_) => 0.0,
        };
        now + lifetime
            .rekey
            .saturating_sub(lifetime.jitter.mul_f64(fraction))
    }

    pub(super) fn reset_ike_timers(&mut self, now: Instant) {
        let lifetime = self.settings.ike_lifetime;
        self.ike_rekey_at = self.rekey_time(now, &lifetime);
        self.ike_expire_at = now + lifetime.hard;
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next run.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.status != Status::Up {
            return None;
        }
        let mut next = Earliest::default();
        for sa in &self.sas {
            next.extend(sa.active.as_ref().map(|(o, _)| o.deadline()));
            next.extend(sa.expires);
        }
        if self.ike_rekey_at < self.ike_expire_at {
            next.push(self.ike_rekey_at);
        }
        next.push(self.ike_expire_at);
        // A hard lifetime waits while the SA's rekey is in flight; that exchange's own timers
        // are in `next`, so an expiry postponed by it is not reported as due over and over.
        let rekeying = self.rekeys_in_flight();
        for c in self.children.iter() {
            if c.is_live() && c.rekey_at < c.expire_at {
                next.push(c.rekey_at);
            }
            if !rekeying.contains(&c.sa.id()) {
                next.push(c.expire_at);
            }
        }
        next.extend(self.retries.iter().map(|(t, _)| *t));
        next.extend(
            self.peer_rekey
                .as_ref()
                .map(|p| p.since + RETIRED_IKE_SA_LINGER),
        );
        if let Some(interval) = self.settings.dpd_interval {
            next.push(self.last_inbound.max(self.last_probe) + interval);
        }
        next.extend(self.orphaned_since.map(|t| t + ORPHANED_LIMIT));
        next.extend(self.probe.map(|(_, by)| by));
        next.0
    }

    /// Retransmissions, lifetimes, liveness checks and retries that are due.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.status != Status::Up {
            return;
        }
        if let Some((since, by)) = self.probe {
            if self.last_answer > since {
                self.probe = None;
            } else if now >= by {
                self.probe = None;
                self.fail(Error::DeadPeer);
                return;
            }
        }
        // Retransmissions (RFC 7296 §2.1); an unanswered request on the current SA means the
        // peer is gone (§2.4), on an old one only that SA goes.
        let mut index = 0;
        while let Some(sa) = self.sas.get_mut(index) {
            let current = sa.spis() == self.current;
            let outcome = match sa.active.as_mut() {
                Some((o, _)) => o.on_timeout(now, &self.settings.retransmit),
                None => Ok(None),
            };
            match outcome {
                Ok(Some(datagrams)) => {
                    for d in datagrams.iter().cloned() {
                        self.outbox.push(self.remote, self.nat_t, d);
                    }
                }
                Ok(None) => {}
                Err(_) if current => {
                    if matches!(sa.active, Some((_, Exchange::DeleteIkeSa))) {
                        self.closed();
                    } else {
                        self.fail(Error::DeadPeer);
                    }
                    return;
                }
                Err(_) => {
                    sa.active = None;
                    sa.expires = Some(now);
                }
            }
            index += 1;
        }
        let before = self.sas.len();
        self.sas
            .retain(|s| s.spis() == self.current || s.expires.is_none_or(|t| t > now));
        if self.sas.len() != before {
            self.settle_held(now);
        }
        if now >= self.ike_expire_at {
            self.fail(Error::IkeSaExpired);
            return;
        }
        if now >= self.ike_rekey_at {
            // Fires once; a refused rekey sets a new time, the hard lifetime ends it.
            self.ike_rekey_at = self.ike_expire_at;
            self.enqueue(Intent::RekeyIkeSa);
        }
        if self
            .peer_rekey
            .as_ref()
            .is_some_and(|p| now >= p.since + RETIRED_IKE_SA_LINGER)
        {
            // The peer never sent its next IKE_FOLLOWUP_KE.
            self.peer_rekey = None;
        }
        let mut expired = Vec::new();
        let mut lost_live = false;
        let mut due = Vec::new();
        let rekeying: Vec<ChildSaId> = self.rekeys_in_flight();
        for c in self.children.iter_mut() {
            if now >= c.expire_at && !rekeying.contains(&c.sa.id()) {
                expired.push(c.sa.id());
                lost_live |= c.is_live();
            } else if now >= c.rekey_at && c.is_live() {
                c.rekey_at = c.expire_at;
                due.push(c.sa.id());
            }
        }
        for pair in due {
            self.enqueue(Intent::RekeyChildSa(pair));
        }
        if !expired.is_empty() {
            // Hard lifetime: the SA is unusable; tell the driver now, the peer with a Delete.
            for &pair in &expired {
                self.remove_child(now, pair);
            }
            self.queue.retain(|i| match i {
                Intent::RekeyChildSa(p) => !expired.contains(p),
                _ => true,
            });
            self.enqueue(Intent::DeleteChildSa(expired));
            // One that carried traffic expired without a successor: a new one takes its place
            // after the Delete, on the same IKE SA (what strongSwan does, "CHILD_SA recreate
            // after hard expire").
            #[cfg(test)]
            let lost_live = lost_live && !self.faults.no_recreate;
            if lost_live && !self.children.any_live() {
                self.enqueue(Intent::CreateChildSa);
            }
        }
        if self
            .orphaned_since
            .is_some_and(|t| now >= t + ORPHANED_LIMIT)
        {
            // No Child SA came back: the IKE SA carries nothing (RFC 7296 §1.4.1).
            self.orphaned_since = None;
            self.close(now);
            return;
        }
        let (retry_now, later): (Vec<_>, Vec<_>) =
            self.retries.drain(..).partition(|(t, _)| *t <= now);
        self.retries = later;
        for (_, intent) in retry_now {
            self.enqueue(intent);
        }
        if let Some(interval) = self.settings.dpd_interval
            && now >= self.last_inbound.max(self.last_probe) + interval
        {
            let busy = self
                .current_index()
                .and_then(|i| self.sas.get(i))
                .is_some_and(|s| s.active.is_some());
            self.last_probe = now;
            if !busy && self.queue.is_empty() {
                self.enqueue(Intent::Dpd);
            }
        }
        self.start_next(now);
    }

    /// The Child SAs (normalized pairs) whose rekey is under way, by us or by the peer. Their
    /// hard lifetime waits for the exchange to end: it either replaces them, or fails within the
    /// retransmission time and lets them expire. Expiring one mid-rekey would cut the tunnel
    /// for the seconds the successor is late.
    pub(super) fn rekeys_in_flight(&self) -> Vec<ChildSaId> {
        let ours = self.sas.iter().filter_map(|s| match &s.active {
            Some((_, Exchange::RekeyChildSa(x))) => x.old,
            _ => None,
        });
        let theirs = self.peer_rekey.iter().filter_map(|p| match &p.kind {
            PeerRekeyKind::Child(parts) => parts.old,
            PeerRekeyKind::Ike { .. } => None,
        });
        ours.chain(theirs).collect()
    }
}
