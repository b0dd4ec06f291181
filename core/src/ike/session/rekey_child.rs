//! Rekeying a Child SA with CREATE_CHILD_SA and REKEY_SA ([RFC 7296 §1.3.3]), both sides:
//! our request and its answer, the peer's request and our answer. Each repeats the IKE SA's
//! key exchanges for PFS as far as the peer allows ([RFC 9370 §2.2.1], see `pfs.rs`).
//!
//! [RFC 7296 §1.3.3]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.3
//! [RFC 9370 §2.2.1]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.1

use std::time::Instant;

use crate::crypto::{AeadAlgorithm, KeyExchange};
use crate::ike::Error;
use crate::ike::handshake::new_nonce;
use crate::ike::proposal::{check_esp_choice, esp_answer, is_narrowing, select_esp};
use crate::ike::sa::{ChildSaId, Event, find_notify, first_error_notify, random_esp_spi};
use crate::wire::EspSpi;
use crate::wire::{
    ExchangeType, KePayload, KeyExchangeMethod, NotifyPayload, NotifyType, Payload, Proposal,
    ProtocolId, SaPayload, TrafficSelector, TsPayload,
};

use super::child::ChildState;
use super::collision::{Collision, min_nonce};
use super::exchange::After;
use super::followup::{PeerRekeyKind, Rounds, rounds_after};
use super::ike_sa::IkeSa;
use super::pfs::{Pfs, check_pfs_answer, pfs_answer, pfs_of, select_pfs};
use super::{
    Exchange, Intent, MAX_INVALID_KE_RETRIES, Session, ke_payload, nonce_payload, payload_ke,
    payload_nonce, payload_sa, payload_ts,
};

/// Our CREATE_CHILD_SA rekeying a Child SA ([RFC 7296 §1.3.3]) or, without `old`, creating
/// one that replaces a lost one ([RFC 7296 §1.3.1], `create_child.rs`).
///
/// [RFC 7296 §1.3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.1
/// [RFC 7296 §1.3.3]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.3
pub(super) struct RekeyChildSa {
    /// The Child SA rekeyed (normalized SPI pair); `None` for a new one.
    pub(super) old: Option<ChildSaId>,
    pub(super) encr: AeadAlgorithm,
    /// Our inbound SPI of the new SA.
    pub(super) new_spi: EspSpi,
    pub(super) nonce_i: Vec<u8>,
    pub(super) ke: Box<dyn KeyExchange>,
    /// TSi and TSr as proposed (the exchange's view).
    pub(super) ts_i: Vec<TrafficSelector>,
    pub(super) ts_r: Vec<TrafficSelector>,
    pub(super) answer: Option<ChildAnswer>,
    pub(super) rounds: Rounds,
    pub(super) invalid_ke_retries: u8,
    /// The peer rekeys the same Child SA at the same time (RFC 7296 §2.8.1).
    pub(super) collision: Option<Collision>,
}

/// What our CREATE_CHILD_SA for a Child SA asks for.
pub(super) struct ChildRequest {
    /// The Child SA rekeyed; `None` for a new one.
    pub(super) old: Option<ChildSaId>,
    pub(super) encr: AeadAlgorithm,
    /// TSi and TSr in the exchange's view (TSi is ours: we initiate).
    pub(super) ts: (Vec<TrafficSelector>, Vec<TrafficSelector>),
    /// The REKEY_SA notify of a rekey.
    pub(super) rekey_sa: Option<Payload>,
}

/// What the responder answered to our Child SA rekey.
pub(super) struct ChildAnswer {
    pub(super) nonce_r: Vec<u8>,
    pub(super) peer_spi: EspSpi,
    pub(super) esn: bool,
    pub(super) ts_i: Vec<TrafficSelector>,
    pub(super) ts_r: Vec<TrafficSelector>,
    pub(super) link: Option<Vec<u8>>,
}

/// A Child SA negotiated by a rekey (or a re-creation), in the exchange's view (`_i` =
/// exchange initiator).
pub(super) struct ChildParts {
    /// The Child SA it replaces by a rekey; `None` for a new one.
    pub(super) old: Option<ChildSaId>,
    pub(super) encr: AeadAlgorithm,
    pub(super) esn: bool,
    pub(super) spi_i: EspSpi,
    pub(super) spi_r: EspSpi,
    pub(super) ts_i: Vec<TrafficSelector>,
    pub(super) ts_r: Vec<TrafficSelector>,
    /// Of our rekey: the collision with the peer's, if any.
    pub(super) collision: Option<Collision>,
}

impl Session {
    pub(super) fn start_child_rekey(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        pair: ChildSaId,
        method: Option<KeyExchangeMethod>,
        invalid_ke_retries: u8,
    ) -> Result<(), Error> {
        let Some(child) = self.children.get(pair) else {
            return Ok(()); // deleted meanwhile
        };
        if !child.is_live() {
            return Ok(());
        }
        let (encr, old_in) = (child.sa.encr, self.view.ours_theirs(pair).0);
        // TSi is the exchange initiator's side.
        let ts = self.view.exchange_ts(true, &child.sa);
        let rekey_sa = Payload::Notify(NotifyPayload {
            protocol_id: ProtocolId::Esp,
            spi: old_in.to_be_bytes().to_vec(),
            notify_type: NotifyType::RekeySa,
            data: Vec::new(),
        });
        if let Some(c) = self.children.get_mut(pair)
            && matches!(c.state, ChildState::Active)
        {
            c.state = ChildState::Rekeying;
        }
        let request = ChildRequest {
            old: Some(pair),
            encr,
            ts,
            rekey_sa: Some(rekey_sa),
        };
        self.send_child_request(now, sa, request, method, invalid_ke_retries)
    }

    /// Sends our CREATE_CHILD_SA for a Child SA: a rekey with REKEY_SA or a new one, with a
    /// key exchange for each round of the IKE SA's construction.
    pub(super) fn send_child_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        request: ChildRequest,
        method: Option<KeyExchangeMethod>,
        invalid_ke_retries: u8,
    ) -> Result<(), Error> {
        let ChildRequest {
            old,
            encr,
            ts: (ts_i, ts_r),
            rekey_sa,
        } = request;
        let choice = sa.choice.clone();
        #[cfg_attr(not(test), expect(unused_mut, reason = "altered by test faults"))]
        let mut ke_method = method.unwrap_or(choice.ke);
        #[cfg(test)]
        if let Some(m) = self.faults.child_rekey_ke.take() {
            ke_method = m;
        }
        let mut offered = vec![choice.ke];
        offered.extend(
            self.settings
                .policy
                .ke
                .iter()
                .copied()
                .filter(|&m| m != choice.ke),
        );
        if !offered.contains(&ke_method) {
            offered.insert(0, ke_method);
        } else {
            // KEi's method first (RFC 7296 §1.3: the KE payload uses the first group proposed).
            offered.retain(|&m| m != ke_method);
            offered.insert(0, ke_method);
        }
        let ke = self.provider.start_key_exchange(ke_method)?;
        let new_spi = random_esp_spi(&*self.provider, |spi| self.esp_spi_taken(spi))?;
        let nonce_i = new_nonce(&*self.provider, self.settings.nonce_len)?;
        let proposals = self.child_rekey_proposals(encr, new_spi, &offered, &choice.addke);
        // KEi goes with offers that have a KE (RFC 7296 §1.3.1).
        let with_ke = proposals
            .iter()
            .any(|p| pfs_of(p, &choice.addke).is_some_and(|l| l != Pfs::None));
        let mut inner: Vec<Payload> = rekey_sa.into_iter().collect();
        inner.push(Payload::Sa(SaPayload { proposals }));
        inner.push(nonce_payload(&nonce_i)?);
        if with_ke {
            inner.push(ke_payload(&*ke));
        }
        inner.push(Payload::TsI(TsPayload {
            selectors: ts_i.clone(),
        }));
        inner.push(Payload::TsR(TsPayload {
            selectors: ts_r.clone(),
        }));
        let exchange = RekeyChildSa {
            old,
            encr,
            new_spi,
            nonce_i,
            ke,
            ts_i,
            ts_r,
            answer: None,
            rounds: Rounds {
                remaining: rounds_after(&choice),
                shared: Vec::new(),
            },
            invalid_ke_retries,
            collision: None,
        };
        self.send_request(
            now,
            sa,
            ExchangeType::CreateChildSa,
            &inner,
            Exchange::RekeyChildSa(Box::new(exchange)),
        )
    }

    /// A response to our Child SA rekey (CREATE_CHILD_SA or IKE_FOLLOWUP_KE).
    pub(super) fn on_child_rekey_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        mut x: Box<RekeyChildSa>,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        if let Some(error) = first_error_notify(payloads) {
            return self.child_rekey_refused(now, sa, &x, error, payloads);
        }
        let mut pfs = Pfs::Full;
        if x.answer.is_none() {
            let sa_payload = payload_sa(payloads).ok_or(Error::MissingPayload("SA"))?;
            let esp = check_esp_choice(&[x.encr], &sa_payload.proposals)?;
            if let [p] = &sa_payload.proposals[..] {
                pfs = pfs_of(p, &sa.choice.addke).ok_or(Error::ProposalMismatch(
                    "key exchanges of the Child SA rekey",
                ))?;
                if self.settings.require_child_pfs && pfs != Pfs::Full {
                    return Err(Error::ProposalMismatch(
                        "the Child SA rekey without every key exchange (PFS is required)",
                    ));
                }
                if pfs != Pfs::None {
                    check_pfs_answer(p, x.ke.method(), pfs.addke(&sa.choice.addke))?;
                }
                if pfs != Pfs::Full {
                    x.rounds.remaining.clear();
                }
            }
            let nonce_r = payload_nonce(payloads).ok_or(Error::MissingPayload("Nonce"))?;
            let (ts_i, ts_r) = payload_ts(payloads);
            let ts_i = ts_i.ok_or(Error::MissingPayload("TSi"))?;
            let ts_r = ts_r.ok_or(Error::MissingPayload("TSr"))?;
            if !is_narrowing(&x.ts_i, &ts_i.selectors) || !is_narrowing(&x.ts_r, &ts_r.selectors) {
                return Err(Error::TsUnacceptable);
            }
            x.answer = Some(ChildAnswer {
                nonce_r: nonce_r.as_bytes().to_vec(),
                peer_spi: esp.peer_spi,
                esn: esp.esn,
                ts_i: ts_i.selectors.clone(),
                ts_r: ts_r.selectors.clone(),
                link: None,
            });
            if let (Some(collision), Some(a)) = (x.collision.as_mut(), &x.answer) {
                collision.ours = Some(min_nonce(&x.nonce_i, &a.nonce_r));
            }
        }
        if pfs != Pfs::None {
            let ker = payload_ke(payloads).ok_or(Error::MissingPayload("KE"))?;
            if ker.method != x.ke.method() {
                return Err(Error::WrongKeyExchangeMethod {
                    expected: x.ke.method(),
                    got: ker.method,
                });
            }
            x.rounds.shared.push(x.ke.complete(&ker.data)?);
        }
        if let Some((link, inner)) = self.next_round(&mut x.rounds, &mut x.ke, payloads)? {
            if let Some(a) = x.answer.as_mut() {
                a.link = Some(link);
            }
            return self.send_request(
                now,
                sa,
                ExchangeType::IkeFollowupKe,
                &inner,
                Exchange::RekeyChildSa(x),
            );
        }
        let answer = x
            .answer
            .take()
            .ok_or(Error::ApiMisuse("rekey without answer"))?;
        let parts = ChildParts {
            old: x.old,
            encr: x.encr,
            esn: answer.esn,
            spi_i: x.new_spi,
            spi_r: answer.peer_spi,
            ts_i: answer.ts_i,
            ts_r: answer.ts_r,
            collision: x.collision.take(),
        };
        let secrets = x.rounds.secrets();
        self.complete_child_rekey(now, sa, true, parts, &x.nonce_i, &answer.nonce_r, &secrets)
    }

    /// The peer answered our Child SA rekey with an error Notify.
    pub(super) fn child_rekey_refused(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        x: &RekeyChildSa,
        error: NotifyType,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        if let Some(old) = x.old {
            self.child_rekey_ended(old);
        }
        match error {
            NotifyType::InvalidKePayload if x.answer.is_none() => {
                let method = find_notify(payloads, NotifyType::InvalidKePayload)
                    .and_then(NotifyPayload::invalid_ke_payload_method);
                match method {
                    Some(m)
                        if m != x.ke.method()
                            && self.settings.policy.ke.contains(&m)
                            && x.invalid_ke_retries < MAX_INVALID_KE_RETRIES =>
                    {
                        let retries = x.invalid_ke_retries + 1;
                        match x.old {
                            Some(old) => self.start_child_rekey(now, sa, old, Some(m), retries),
                            None => self.start_child_create(now, sa, Some(m), retries),
                        }
                    }
                    _ => {
                        let e = Error::NotifyReceived(NotifyType::InvalidKePayload);
                        self.child_request_failed(now, x, e);
                        Ok(())
                    }
                }
            }
            // Someone else is rekeying or deleting: try again later (RFC 7296 §2.25); after
            // STATE_NOT_FOUND the exchange is void and is run again (RFC 9370 §2.2.4).
            NotifyType::TemporaryFailure | NotifyType::StateNotFound => {
                let at = now + self.retry_delay();
                let intent = x.old.map_or(Intent::CreateChildSa, Intent::RekeyChildSa);
                self.retries.push((at, intent));
                Ok(())
            }
            // The peer no longer has it (RFC 7296 §2.25).
            NotifyType::ChildSaNotFound if x.old.is_some() => {
                if let Some(old) = x.old {
                    self.remove_child(now, old);
                }
                Ok(())
            }
            other => {
                self.child_request_failed(now, x, Error::NotifyReceived(other));
                Ok(())
            }
        }
    }

    /// Our CREATE_CHILD_SA for a Child SA failed: a rekey leaves the old SA in place, a
    /// re-creation leaves none.
    pub(super) fn child_request_failed(&mut self, now: Instant, x: &RekeyChildSa, error: Error) {
        if x.old.is_none() {
            self.child_create_failed(now, error);
        } else {
            self.events.push_back(Event::ChildSaFailed(error));
        }
    }

    pub(super) fn on_child_rekey_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        peer_spi_of_old: EspSpi,
        sa_payload: &SaPayload,
        nonce_i: Vec<u8>,
        payloads: &[Payload],
    ) -> Result<(Vec<Payload>, After), Error> {
        let child = self
            .children
            .by_peer_spi(self.view, peer_spi_of_old)
            .ok_or(Error::ChildSaNotFound)?;
        let old = child.sa.id();
        // RFC 7296 §2.25.1: rekeying one we are closing, or already replaced → later; §2.25.2:
        // not while the IKE SA is being rekeyed.
        if !child.is_live() || matches!(sa.active, Some((_, Exchange::RekeyIkeSa(_)))) {
            return Err(Error::ExchangeInProgress);
        }
        let (ts_i, ts_r) = payload_ts(payloads);
        ts_i.ok_or(Error::MissingPayload("TSi"))?;
        ts_r.ok_or(Error::MissingPayload("TSr"))?;
        // The rekeyed SA keeps the old one's selectors (RFC 7296 §2.8), in the exchange's view.
        let ts = self.view.exchange_ts(false, &child.sa);
        self.answer_child_request(now, sa, Some(old), ts, sa_payload, nonce_i, payloads)
    }

    /// Answers the peer's CREATE_CHILD_SA for a Child SA (a rekey of `old`, or a new one) with
    /// the selectors `ts` (exchange's view): the strongest PFS offered, our cipher, the first
    /// round's KE; then the IKE_FOLLOWUP_KE rounds, if any.
    #[expect(clippy::too_many_arguments, reason = "the whole request")]
    pub(super) fn answer_child_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        old: Option<ChildSaId>,
        (ts_i, ts_r): (Vec<TrafficSelector>, Vec<TrafficSelector>),
        sa_payload: &SaPayload,
        nonce_i: Vec<u8>,
        payloads: &[Payload],
    ) -> Result<(Vec<Payload>, After), Error> {
        // The strongest PFS offered wins, then our cipher preference (RFC 7296 §1.3.1 leaves
        // PFS to policy: a gateway configured without it still rekeys, see
        // `InitiatorConfig::require_child_pfs`).
        let weakest = if self.settings.require_child_pfs {
            Pfs::Full
        } else {
            Pfs::None
        };
        let (number, esp, pfs) = [Pfs::Full, Pfs::KeOnly, Pfs::None]
            .into_iter()
            .filter(|&level| level >= weakest)
            .find_map(|level| {
                let offers: Vec<Proposal> = sa_payload
                    .proposals
                    .iter()
                    .filter(|p| pfs_of(p, &sa.choice.addke) == Some(level))
                    .cloned()
                    .collect();
                select_esp(&self.settings.esp, &offers)
                    .ok()
                    .map(|(number, esp)| (number, esp, level))
            })
            .ok_or(Error::NoProposalChosen)?;
        let proposal = sa_payload
            .proposals
            .iter()
            .find(|p| p.number == number && p.protocol_id == ProtocolId::Esp)
            .ok_or(Error::NoProposalChosen)?;
        let addke = pfs.addke(&sa.choice.addke).to_vec();
        let mut allowed = vec![sa.choice.ke];
        allowed.extend(
            self.settings
                .policy
                .ke
                .iter()
                .copied()
                .filter(|&m| m != sa.choice.ke),
        );
        // Without PFS a KEi is ignored (RFC 7296 §1.3.1: it goes with the offers that have KE).
        let exchange = match pfs {
            Pfs::None => None,
            Pfs::KeOnly | Pfs::Full => {
                let kei = payload_ke(payloads);
                let method = select_pfs(proposal, &allowed, &addke, kei.map(|k| k.method))?;
                let kei = kei.ok_or(Error::MissingPayload("KE"))?;
                Some((
                    method,
                    self.provider.respond_key_exchange(method, &kei.data)?,
                ))
            }
        };
        let our_spi = random_esp_spi(&*self.provider, |spi| self.esp_spi_taken(spi))?;
        let nonce_r = new_nonce(&*self.provider, self.settings.nonce_len)?;
        // A collision with our own rekey of the same SA (RFC 7296 §2.8.1): answer as usual and
        // remember the peer's nonces.
        if let Some(old) = old
            && let Some((_, Exchange::RekeyChildSa(x))) = &mut sa.active
            && x.old == Some(old)
        {
            x.collision = Some(Collision {
                ours: x.answer.as_ref().map(|a| min_nonce(&x.nonce_i, &a.nonce_r)),
                theirs: Some(min_nonce(&nonce_i, &nonce_r)),
            });
        }
        let (answer, shared) = match exchange {
            Some((method, response)) => (
                (
                    pfs_answer(number, &esp, our_spi, method, &addke),
                    Some(Payload::Ke(KePayload {
                        method,
                        data: response.public_value,
                    })),
                ),
                vec![response.shared_secret],
            ),
            None => ((esp_answer(number, &esp, our_spi), None), Vec::new()),
        };
        let mut inner = vec![
            Payload::Sa(SaPayload {
                proposals: vec![answer.0],
            }),
            nonce_payload(&nonce_r)?,
        ];
        inner.extend(answer.1);
        inner.push(Payload::TsI(TsPayload {
            selectors: ts_i.clone(),
        }));
        inner.push(Payload::TsR(TsPayload {
            selectors: ts_r.clone(),
        }));
        let parts = ChildParts {
            old,
            encr: esp.encr,
            esn: esp.esn,
            spi_i: esp.peer_spi,
            spi_r: our_spi,
            ts_i,
            ts_r,
            collision: None,
        };
        let rounds = Rounds {
            remaining: addke.iter().copied().collect(),
            shared,
        };
        self.after_first_round(
            now,
            sa,
            nonce_i,
            nonce_r,
            rounds,
            PeerRekeyKind::Child(parts),
            &mut inner,
        )
    }
}
