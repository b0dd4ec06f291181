//! The Child SAs of a session. They are kept in the client's view (`_i` is the client,
//! whoever started the exchange that made them, [RFC 7296 §2.17]); the peer names one by its
//! inbound SPI in REKEY_SA and Delete ([RFC 7296 §3.10.1], [RFC 7296 §3.11]).
//!
//! [RFC 7296 §2.17]: https://www.rfc-editor.org/rfc/rfc7296#section-2.17
//! [RFC 7296 §3.10.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.10.1
//! [RFC 7296 §3.11]: https://www.rfc-editor.org/rfc/rfc7296#section-3.11

use std::time::Instant;

use crate::ike::keys::ChildSaKeys;
use crate::ike::sa::{ChildSaEstablished, Event};

use super::Session;
use super::collision::Collision;

/// A Child SA and its timers.
pub(super) struct ChildSa {
    pub(super) sa: ChildSaEstablished,
    pub(super) rekey_at: Instant,
    pub(super) expire_at: Instant,
    /// A completed rekey replaced it; the Delete is on its way.
    pub(super) replaced: bool,
    /// We sent a Delete for it.
    pub(super) deleting: bool,
    /// A rekey collision with the peer, while ours runs.
    pub(super) collision: Option<Collision>,
}

/// `(spi, ...)` with the `_i` and `_r` halves swapped: between the exchange's view and the
/// client's view of a Child SA.
pub(super) fn swap_view(sa: ChildSaEstablished) -> ChildSaEstablished {
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
    pub(super) fn esp_spi_taken(&self, spi: u32) -> bool {
        self.spis_in_use.contains(&spi)
            || self.children.iter().any(|c| {
                let ours = if self.is_client {
                    c.sa.spi_i
                } else {
                    c.sa.spi_r
                };
                ours == spi
            })
    }

    pub(super) fn add_child(&mut self, now: Instant, sa: ChildSaEstablished) {
        let lifetime = self.settings.child_lifetime;
        let rekey_at = self.rekey_time(now, &lifetime);
        self.children.push(ChildSa {
            sa,
            rekey_at,
            expire_at: now + lifetime.hard,
            replaced: false,
            deleting: false,
            collision: None,
        });
    }

    pub(super) fn pair(sa: &ChildSaEstablished) -> (u32, u32) {
        (sa.spi_i, sa.spi_r)
    }

    /// Our inbound and the peer's inbound SPI of a normalized pair.
    pub(super) fn in_out(&self, pair: (u32, u32)) -> (u32, u32) {
        if self.is_client {
            pair
        } else {
            (pair.1, pair.0)
        }
    }

    pub(super) fn child_index(&self, pair: (u32, u32)) -> Option<usize> {
        self.children.iter().position(|c| Self::pair(&c.sa) == pair)
    }

    /// The Child SA whose peer-inbound SPI is `spi` (what the peer names in REKEY_SA and
    /// Delete).
    pub(super) fn child_by_peer_spi(&self, spi: u32) -> Option<usize> {
        self.children
            .iter()
            .position(|c| self.in_out(Self::pair(&c.sa)).1 == spi)
    }

    pub(super) fn remove_child(&mut self, pair: (u32, u32)) -> bool {
        let Some(i) = self.child_index(pair) else {
            return false;
        };
        self.children.remove(i);
        self.events.push_back(Event::ChildSaDeleted {
            spi_i: pair.0,
            spi_r: pair.1,
        });
        true
    }
}
