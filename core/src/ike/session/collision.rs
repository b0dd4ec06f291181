//! Simultaneous rekeys ([RFC 7296 §2.8.1] for Child SAs, [RFC 7296 §2.8.2] for the IKE SA):
//! the exchange whose nonces hold the lowest of the four made the redundant SA, and its
//! initiator deletes it. Also where a finished rekey installs its SA.
//!
//! [RFC 7296 §2.8.1]: https://www.rfc-editor.org/rfc/rfc7296#section-2.8.1
//! [RFC 7296 §2.8.2]: https://www.rfc-editor.org/rfc/rfc7296#section-2.8.2

use std::time::Instant;

use crate::crypto::SharedSecret;
use crate::ike::Error;
use crate::ike::keys::ChildSaKeys;
use crate::ike::sa::{ChildSaEstablished, ChildSaId, Event};
use crate::wire::{DeletePayload, ExchangeType, Payload};

use super::child::ChildState;
use super::ike_sa::IkeSa;
use super::rekey_child::ChildParts;
use super::{Exchange, Intent, RETIRED_IKE_SA_LINGER, Session};

/// Where the two rekeys of a collision stand (RFC 7296 §2.8.1): the lowest nonce of each
/// exchange, once known. The exchange holding the lowest of the four nonces made the redundant
/// SA.
#[derive(Debug, Default)]
pub(super) struct Collision {
    pub(super) ours: Option<Vec<u8>>,
    pub(super) theirs: Option<Vec<u8>>,
}

impl Collision {
    /// `Some(true)` if our exchange made the redundant SA, once both are known.
    pub(super) fn we_lost(&self) -> Option<bool> {
        Some(self.ours.as_ref()? < self.theirs.as_ref()?)
    }
}

/// The lower of two nonces, compared as octet strings.
pub(super) fn min_nonce(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.min(b).to_vec()
}

impl Session {
    /// Our rekey of `id` ended without a new SA: it is just active again.
    pub(super) fn child_rekey_ended(&mut self, id: ChildSaId) {
        if let Some(c) = self.children.get_mut(id)
            && matches!(c.state, ChildState::Rekeying)
        {
            c.state = ChildState::Active;
        }
    }

    /// A Child SA rekey completed on either side: derive KEYMAT ([RFC 9370 §2.2.4]), announce
    /// the new SA and arrange the Delete of the old or the redundant one (§2.8.1).
    ///
    /// [RFC 9370 §2.2.4]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.4
    #[expect(
        clippy::too_many_arguments,
        reason = "the whole outcome of the exchange"
    )]
    pub(super) fn complete_child_rekey(
        &mut self,
        now: Instant,
        sa: &IkeSa,
        we_initiated: bool,
        parts: ChildParts,
        nonce_i: &[u8],
        nonce_r: &[u8],
        shared: &[&SharedSecret],
    ) -> Result<(), Error> {
        let collision = if we_initiated { parts.collision } else { None };
        let keys = ChildSaKeys::derive(
            &*sa.prf,
            &sa.sk_d,
            shared,
            nonce_i,
            nonce_r,
            parts.encr.keymat_len(),
            0,
        )?;
        let exchange_view = ChildSaEstablished {
            spi_i: parts.spi_i,
            spi_r: parts.spi_r,
            encr: parts.encr,
            esn: parts.esn,
            keys,
            ts_i: parts.ts_i,
            ts_r: parts.ts_r,
        };
        // The client's view: `_i` is the client whoever initiated this exchange.
        let new = self.view.to_client_view(we_initiated, exchange_view);
        let new_pair = new.id();
        let Some(old) = parts.old else {
            self.child_created(now, we_initiated, new);
            return Ok(());
        };
        if we_initiated && collision.as_ref().and_then(Collision::we_lost) == Some(true) {
            // Our SA is the redundant one: we made it, we delete it (RFC 7296 §2.8.1). It was
            // never announced or installed; the peer's SA replaces the old one.
            self.enqueue(Intent::DeleteChildSa(vec![new_pair]));
            return Ok(());
        }
        self.events.push_back(Event::ChildSaRekeyed {
            old,
            new: Box::new(new.clone()),
        });
        self.add_child(now, new);
        if let Some(c) = self.children.get_mut(old) {
            c.state = ChildState::Replaced;
        }
        self.queue.retain(|i| *i != Intent::RekeyChildSa(old));
        self.retries
            .retain(|(_, i)| *i != Intent::RekeyChildSa(old));
        if we_initiated {
            // The new SA is up on both sides: now the old one goes (make-before-break).
            self.enqueue(Intent::DeleteChildSa(vec![old]));
        }
        Ok(())
    }

    /// Puts a new IKE SA in place, or aside if a collision made it redundant (RFC 7296
    /// §2.8.2). `old` is the SA the rekey ran on, taken out of `sas`.
    pub(super) fn install_ike_sa(
        &mut self,
        now: Instant,
        old: &mut IkeSa,
        mut new: IkeSa,
        we_initiated: bool,
    ) -> Result<(), Error> {
        let outcome = self.ike_collision.as_ref().map(Collision::we_lost);
        let redundant = match (we_initiated, outcome) {
            (_, None) => false,
            (true, Some(lost)) => lost == Some(true),
            (false, Some(Some(we_lost))) => !we_lost,
            // Ours is still running: wait for its nonces before choosing.
            (false, Some(None)) => {
                if self.own_ike_rekey_running(old) {
                    new.expires = Some(now + RETIRED_IKE_SA_LINGER);
                    self.held_successor = Some(new.spis());
                    self.sas.push(new);
                    return Ok(());
                }
                false
            }
        };
        if redundant {
            if we_initiated {
                // We made it, we delete it, over itself.
                self.send_request(
                    now,
                    &mut new,
                    ExchangeType::Informational,
                    &[Payload::Delete(DeletePayload::ike())],
                    Exchange::DeleteIkeSa,
                )?;
                new.expires = Some(now + RETIRED_IKE_SA_LINGER);
            } else {
                new.expires = Some(now + RETIRED_IKE_SA_LINGER);
            }
            self.sas.push(new);
            if we_initiated {
                self.ike_collision = None;
                self.settle_held(now);
            }
            return Ok(());
        }
        let is_current = old.spis() == self.current;
        self.current = new.spis();
        self.sas.push(new);
        if we_initiated {
            // The Delete is the last request on the old SA (RFC 7296 §2.18).
            if is_current || old.active.is_none() {
                self.send_request(
                    now,
                    old,
                    ExchangeType::Informational,
                    &[Payload::Delete(DeletePayload::ike())],
                    Exchange::DeleteIkeSa,
                )?;
            }
            if let Some(held) = self.held_successor.take()
                && let Some(h) = self.sas.iter_mut().find(|s| s.spis() == held)
            {
                h.expires = Some(now + RETIRED_IKE_SA_LINGER);
            }
            self.ike_collision = None;
        }
        old.expires = Some(now + RETIRED_IKE_SA_LINGER);
        self.reset_ike_timers(now);
        self.queue.retain(|i| *i != Intent::RekeyIkeSa);
        self.retries.retain(|(_, i)| *i != Intent::RekeyIkeSa);
        self.events.push_back(Event::IkeSaRekeyed {
            suite: self.suite.clone(),
        });
        Ok(())
    }

    pub(super) fn own_ike_rekey_running(&self, taken_out: &IkeSa) -> bool {
        self.sas
            .iter()
            .chain(core::iter::once(taken_out))
            .any(|s| matches!(s.active, Some((_, Exchange::RekeyIkeSa(_)))))
    }

    /// Our IKE rekey ended without a new SA: a held successor from the peer takes over.
    pub(super) fn settle_held(&mut self, now: Instant) {
        let Some(held) = self.held_successor.take() else {
            return;
        };
        if !self.sas.iter().any(|s| s.spis() == held) {
            return;
        }
        let old = self.current;
        self.current = held;
        for s in &mut self.sas {
            if s.spis() == held {
                s.expires = None;
            }
        }
        // The old SA waits for the peer's Delete.
        for s in &mut self.sas {
            if s.spis() == old {
                s.expires = Some(now + RETIRED_IKE_SA_LINGER);
            }
        }
        self.reset_ike_timers(now);
        self.ike_collision = None;
        self.events.push_back(Event::IkeSaRekeyed {
            suite: self.suite.clone(),
        });
    }
}
