//! The Child SAs of a session. They are kept in the client's view (`_i` is the client,
//! whoever started the exchange that made them, [RFC 7296 §2.17]); the peer names one by its
//! inbound SPI in REKEY_SA and Delete ([RFC 7296 §3.10.1], [RFC 7296 §3.11]). [`View`] is the
//! one place that turns an exchange's `_i`/`_r` into the client's and back.
//!
//! [RFC 7296 §2.17]: https://www.rfc-editor.org/rfc/rfc7296#section-2.17
//! [RFC 7296 §3.10.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.10.1
//! [RFC 7296 §3.11]: https://www.rfc-editor.org/rfc/rfc7296#section-3.11

use std::time::Instant;

use crate::crypto::AeadAlgorithm;
use crate::ike::keys::ChildSaKeys;
use crate::ike::sa::{ChildSaEstablished, ChildSaId, Event};
use crate::wire::EspSpi;
use crate::wire::TrafficSelector;

use super::Session;

/// Where a Child SA stands.
#[derive(Debug)]
pub(super) enum ChildState {
    /// Carrying traffic.
    Active,
    /// Carrying traffic while our rekey of it runs (a collision with the peer's is tracked by
    /// that exchange, `RekeyChildSa::collision`).
    Rekeying,
    /// A completed rekey replaced it; the Delete is on its way.
    Replaced,
    /// We sent a Delete for it.
    Deleting,
}

/// A Child SA and its timers.
pub(super) struct ChildSa {
    pub(super) sa: ChildSaEstablished,
    pub(super) rekey_at: Instant,
    pub(super) expire_at: Instant,
    pub(super) state: ChildState,
}

impl ChildSa {
    /// Neither replaced nor being deleted: it may be rekeyed.
    pub(super) fn is_live(&self) -> bool {
        matches!(self.state, ChildState::Active | ChildState::Rekeying)
    }
}

/// The Child SAs of a session, by [`ChildSaId`].
#[derive(Default)]
pub(super) struct ChildSaTable {
    children: Vec<ChildSa>,
    /// The newest Child SA's cipher and selectors: what a re-created one carries.
    last: Option<LastChild>,
}

/// What a new Child SA that replaces a lost one inherits from it: its cipher and its traffic
/// selectors in the client's view (a re-created SA stays within what this IKE SA agreed,
/// [RFC 7296 §2.9]).
///
/// [RFC 7296 §2.9]: https://www.rfc-editor.org/rfc/rfc7296#section-2.9
#[derive(Debug, Clone)]
pub(super) struct LastChild {
    pub(super) encr: AeadAlgorithm,
    pub(super) ts_i: Vec<TrafficSelector>,
    pub(super) ts_r: Vec<TrafficSelector>,
}

impl ChildSaTable {
    pub(super) fn get(&self, id: ChildSaId) -> Option<&ChildSa> {
        self.children.iter().find(|c| c.sa.id() == id)
    }

    pub(super) fn get_mut(&mut self, id: ChildSaId) -> Option<&mut ChildSa> {
        self.children.iter_mut().find(|c| c.sa.id() == id)
    }

    /// The Child SA whose peer-inbound SPI is `spi` (what the peer names in REKEY_SA and
    /// Delete).
    pub(super) fn by_peer_spi(&self, view: View, spi: EspSpi) -> Option<&ChildSa> {
        self.children
            .iter()
            .find(|c| view.ours_theirs(c.sa.id()).1 == spi)
    }

    pub(super) fn insert(&mut self, child: ChildSa) {
        self.last = Some(LastChild {
            encr: child.sa.encr,
            ts_i: child.sa.ts_i.clone(),
            ts_r: child.sa.ts_r.clone(),
        });
        self.children.push(child);
    }

    /// Whether one Child SA still carries traffic or is being rekeyed.
    pub(super) fn any_live(&self) -> bool {
        self.children.iter().any(ChildSa::is_live)
    }

    /// The newest Child SA's cipher and selectors, deleted or not.
    pub(super) fn last(&self) -> Option<&LastChild> {
        self.last.as_ref()
    }

    pub(super) fn remove(&mut self, id: ChildSaId) -> Option<ChildSa> {
        let i = self.children.iter().position(|c| c.sa.id() == id)?;
        Some(self.children.remove(i))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &ChildSa> {
        self.children.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut ChildSa> {
        self.children.iter_mut()
    }

    pub(super) fn len(&self) -> usize {
        self.children.len()
    }
}

/// Which way round the `_i`/`_r` names are: Child SAs are stored in the client's view, an
/// exchange names them by who started it (RFC 7296 §2.17). Client vs gateway × who initiated
/// is decided here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct View {
    /// We are the client (the initiator of the first IKE SA).
    pub(super) client: bool,
}

impl View {
    /// Our inbound and the peer's inbound SPI of a Child SA.
    pub(super) fn ours_theirs(self, id: ChildSaId) -> (EspSpi, EspSpi) {
        if self.client {
            (id.spi_i, id.spi_r)
        } else {
            (id.spi_r, id.spi_i)
        }
    }

    /// A Child SA an exchange made (`we_initiated` it or the peer did), in the client's view.
    pub(super) fn to_client_view(
        self,
        we_initiated: bool,
        sa: ChildSaEstablished,
    ) -> ChildSaEstablished {
        if we_initiated == self.client {
            sa
        } else {
            swap(sa)
        }
    }

    /// TSi and TSr of a stored Child SA as an exchange names them (TSi is the exchange
    /// initiator's side), for an exchange `we_initiate` or the peer does.
    pub(super) fn exchange_ts(
        self,
        we_initiate: bool,
        sa: &ChildSaEstablished,
    ) -> (Vec<TrafficSelector>, Vec<TrafficSelector>) {
        self.exchange_pair(we_initiate, (&sa.ts_i, &sa.ts_r))
    }

    /// A client's-view pair (`_i`, `_r`) as an exchange `we_initiate` (or the peer does) names
    /// it; the same swap turns an exchange's pair back into the client's view.
    pub(super) fn exchange_pair<T: Clone>(self, we_initiate: bool, (i, r): (&T, &T)) -> (T, T) {
        if we_initiate == self.client {
            (i.clone(), r.clone())
        } else {
            (r.clone(), i.clone())
        }
    }
}

/// `(spi, ...)` with the `_i` and `_r` halves swapped.
fn swap(sa: ChildSaEstablished) -> ChildSaEstablished {
    ChildSaEstablished {
        spi_i: sa.spi_r,
        spi_r: sa.spi_i,
        encr: sa.encr,
        esn: sa.esn,
        keys: ChildSaKeys {
            encr_i: sa.keys.encr_r,
            integ_i: sa.keys.integ_r,
            encr_r: sa.keys.encr_i,
            integ_r: sa.keys.integ_i,
        },
        ts_i: sa.ts_r,
        ts_r: sa.ts_i,
    }
}

impl Session {
    /// Whether `spi` is our inbound SPI of a Child SA, of this IKE SA or (lent) another.
    pub(super) fn esp_spi_taken(&self, spi: EspSpi) -> bool {
        self.spis_in_use.contains(&spi)
            || self
                .children
                .iter()
                .any(|c| self.view.ours_theirs(c.sa.id()).0 == spi)
    }

    pub(super) fn add_child(&mut self, now: Instant, sa: ChildSaEstablished) {
        let lifetime = self.settings.child_lifetime;
        let rekey_at = self.rekey_time(now, &lifetime);
        self.children.insert(ChildSa {
            sa,
            rekey_at,
            expire_at: now + lifetime.hard,
            state: ChildState::Active,
        });
        self.orphaned_since = None;
    }

    pub(super) fn remove_child(&mut self, now: Instant, id: ChildSaId) -> bool {
        if self.children.remove(id).is_none() {
            return false;
        }
        self.events.push_back(Event::ChildSaDeleted(id));
        if !self.children.any_live() {
            self.orphaned_since.get_or_insert(now);
        }
        true
    }
}
