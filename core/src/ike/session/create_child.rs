//! A new Child SA with CREATE_CHILD_SA without REKEY_SA ([RFC 7296 §1.3.1]), both sides,
//! only to replace a Child SA that is gone: one hit its hard lifetime without a rekey, or the
//! peer deleted it. strongSwan does this at a hard lifetime ("CHILD_SA recreate after hard
//! expire"): Delete, then a fresh CREATE_CHILD_SA on the same IKE SA. The new SA inherits the
//! lost one's cipher and selectors; a peer asking for more is refused, and a second Child SA
//! next to a live one is refused with NO_ADDITIONAL_SAS (one tunnel, one Child SA).
//!
//! [RFC 7296 §1.3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.1

use std::time::Instant;

use crate::ike::Error;
use crate::ike::proposal::is_narrowing;
use crate::ike::sa::{ChildSaEstablished, Event};
use crate::wire::{KeyExchangeMethod, Payload, SaPayload, TrafficSelector};

use super::exchange::After;
use super::followup::PeerRekeyKind;
use super::ike_sa::IkeSa;
use super::rekey_child::ChildRequest;
use super::{Exchange, Intent, Session, payload_ts};

impl Session {
    /// Queues a new Child SA in place of the lost one (the tunnel has none left). Nothing
    /// happens while one is live or if there never was one.
    pub(crate) fn create_child_sa(&mut self, now: Instant) {
        if self.children.any_live() || self.children.last().is_none() || self.creating_child_sa() {
            return;
        }
        self.enqueue(Intent::CreateChildSa);
        self.start_next(now);
    }

    /// Whether a new Child SA is queued or being negotiated, by us or by the peer.
    pub(crate) fn creating_child_sa(&self) -> bool {
        self.queue.contains(&Intent::CreateChildSa)
            || self
                .retries
                .iter()
                .any(|(_, i)| *i == Intent::CreateChildSa)
            || self.sas.iter().any(
                |s| matches!(&s.active, Some((_, Exchange::RekeyChildSa(x))) if x.old.is_none()),
            )
            || self
                .peer_rekey
                .as_ref()
                .is_some_and(|p| matches!(&p.kind, PeerRekeyKind::Child(c) if c.old.is_none()))
    }

    /// Our re-creation failed: an IKE SA without a Child SA carries nothing, so it is deleted
    /// (RFC 7296 §1.4.1), unless one came from the peer meanwhile (then nothing is reported).
    pub(super) fn child_create_failed(&mut self, now: Instant, error: Error) {
        // The peer's (made meanwhile) serves: ours is not missed.
        if self.children.any_live() {
            return;
        }
        self.events.push_back(Event::ChildSaFailed(error));
        self.close(now);
    }

    /// Our CREATE_CHILD_SA for a new Child SA with the lost one's cipher and selectors.
    pub(super) fn start_child_create(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        method: Option<KeyExchangeMethod>,
        invalid_ke_retries: u8,
    ) -> Result<(), Error> {
        if self.children.any_live() {
            return Ok(()); // the peer made one meanwhile
        }
        let Some(last) = self.children.last() else {
            return Ok(());
        };
        let request = ChildRequest {
            old: None,
            encr: last.encr,
            ts: self.view.exchange_pair(true, (&last.ts_i, &last.ts_r)),
            rekey_sa: None,
        };
        self.send_child_request(now, sa, request, method, invalid_ke_retries)
    }

    /// The peer's CREATE_CHILD_SA without REKEY_SA (and without an IKE proposal).
    pub(super) fn on_child_create_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        sa_payload: &SaPayload,
        nonce_i: Vec<u8>,
        payloads: &[Payload],
    ) -> Result<(Vec<Payload>, After), Error> {
        if self.children.any_live() {
            return Err(Error::NoAdditionalSas);
        }
        let Some(last) = self.children.last() else {
            return Err(Error::NoAdditionalSas);
        };
        // Not while the IKE SA is rekeyed (RFC 7296 §2.25.2), nor while our own re-creation
        // runs: both would make one, and each side would keep the other's. TEMPORARY_FAILURE
        // makes the peer retry later, when ours is up and its own is refused
        // (NO_ADDITIONAL_SAS).
        if matches!(&sa.active, Some((_, Exchange::RekeyIkeSa(_))))
            || matches!(&sa.active, Some((_, Exchange::RekeyChildSa(x))) if x.old.is_none())
        {
            return Err(Error::ExchangeInProgress);
        }
        let (ts_i, ts_r) = payload_ts(payloads);
        let offered_i = &ts_i.ok_or(Error::MissingPayload("TSi"))?.selectors;
        let offered_r = &ts_r.ok_or(Error::MissingPayload("TSr"))?.selectors;
        let (ours_i, ours_r) = self.view.exchange_pair(false, (&last.ts_i, &last.ts_r));
        let ts = (
            within(&ours_i, offered_i).ok_or(Error::TsUnacceptable)?,
            within(&ours_r, offered_r).ok_or(Error::TsUnacceptable)?,
        );
        self.answer_child_request(now, sa, None, ts, sa_payload, nonce_i, payloads)
    }

    /// A new Child SA is keyed (client's view). Ours is redundant if the peer made one
    /// meanwhile: it was never announced, so it is only deleted.
    pub(super) fn child_created(
        &mut self,
        now: Instant,
        we_initiated: bool,
        new: ChildSaEstablished,
    ) {
        if we_initiated && self.children.any_live() {
            self.enqueue(Intent::DeleteChildSa(vec![new.id()]));
            return;
        }
        self.events
            .push_back(Event::ChildSaCreated(Box::new(new.clone())));
        self.add_child(now, new);
    }
}

/// The selectors of one side for a re-created Child SA: ours when the peer offers at least
/// those, the peer's when they are narrower than ours, otherwise none (TS_UNACCEPTABLE).
fn within(ours: &[TrafficSelector], offered: &[TrafficSelector]) -> Option<Vec<TrafficSelector>> {
    if is_narrowing(offered, ours) {
        Some(ours.to_vec())
    } else if is_narrowing(ours, offered) {
        Some(offered.to_vec())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ts(from: [u8; 4], to: [u8; 4]) -> TrafficSelector {
        TrafficSelector::Ipv4 {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start_addr: Ipv4Addr::from(from),
            end_addr: Ipv4Addr::from(to),
        }
    }

    #[test]
    fn a_recreated_child_sa_gets_no_more_than_the_lost_one_had() {
        let vip = vec![ts([10, 7, 0, 2], [10, 7, 0, 2])];
        let all = vec![ts([0, 0, 0, 0], [255, 255, 255, 255])];
        // The peer offers at least ours: ours.
        assert_eq!(within(&vip, &all), Some(vip.clone()));
        assert_eq!(within(&vip, &vip), Some(vip.clone()));
        // Narrower than ours: the peer's.
        let lan = vec![ts([10, 0, 0, 0], [10, 255, 255, 255])];
        assert_eq!(within(&all, &lan), Some(lan.clone()));
        // Another address, or one that only overlaps: refused (TS_UNACCEPTABLE).
        let other = vec![ts([10, 7, 0, 3], [10, 7, 0, 3])];
        assert_eq!(within(&vip, &other), None);
        let overlap = vec![ts([10, 7, 0, 2], [10, 7, 0, 3])];
        assert_eq!(within(&lan[..], &[ts([9, 0, 0, 0], [10, 0, 0, 5])]), None);
        assert_eq!(within(&vip, &overlap), Some(vip.clone()));
    }
}
