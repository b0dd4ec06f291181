//! IKE_FOLLOWUP_KE ([RFC 9370 §2.2.4]): the additional key exchanges of a rekey after its
//! CREATE_CHILD_SA, linked by the ADDITIONAL_KEY_EXCHANGE notify. Our rounds continue in
//! `rekey_child.rs`/`rekey_ike.rs`; the peer's rounds are held here as a [`PeerRekey`].
//!
//! [RFC 9370 §2.2.4]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.4

use std::collections::VecDeque;
use std::time::Instant;

use crate::crypto::{KeyExchange, SharedSecret};
use crate::ike::Error;
use crate::ike::proposal::IkeChoice;
use crate::ike::sa::{find_notify, random_bytes};
use crate::wire::{IkeSpi, KePayload, KeyExchangeMethod, NotifyPayload, NotifyType, Payload};

use super::exchange::After;
use super::ike_sa::IkeSa;
use super::rekey_child::ChildParts;
use super::{Session, ke_payload, payload_ke};

/// Octets of the opaque link of ADDITIONAL_KEY_EXCHANGE we hand out.
pub(super) const LINK_LEN: usize = 16;

/// The key exchange rounds of one rekey: KE in CREATE_CHILD_SA, then each ADDKE in an
/// IKE_FOLLOWUP_KE (RFC 9370 §2.2.4).
pub(super) struct Rounds {
    /// Methods of the rounds still to run after the current one.
    pub(super) remaining: VecDeque<KeyExchangeMethod>,
    /// `SK(0)`, `SK(1)`, … so far.
    pub(super) shared: Vec<SharedSecret>,
}

impl Rounds {
    pub(super) fn secrets(&self) -> Vec<&SharedSecret> {
        self.shared.iter().collect()
    }
}

/// The link to remember and the IKE_FOLLOWUP_KE request of our next round.
pub(super) type NextRound = (Vec<u8>, [Payload; 2]);

/// A rekey the peer started whose IKE_FOLLOWUP_KE rounds are still to come.
pub(super) struct PeerRekey {
    /// The IKE SA it runs on (our SPI).
    pub(super) on: IkeSpi,
    /// When its CREATE_CHILD_SA arrived: the state is dropped a while after.
    pub(super) since: Instant,
    /// The link we gave in our last response.
    pub(super) link: Vec<u8>,
    pub(super) nonce_i: Vec<u8>,
    pub(super) nonce_r: Vec<u8>,
    pub(super) rounds: Rounds,
    pub(super) kind: PeerRekeyKind,
}

pub(super) enum PeerRekeyKind {
    Child(ChildParts),
    Ike {
        new_spi_i: IkeSpi,
        new_spi_r: IkeSpi,
        choice: IkeChoice,
    },
}

/// The methods of a construction's rounds: the negotiated KE first, then each ADDKE.
pub(super) fn rounds_after(choice: &IkeChoice) -> VecDeque<KeyExchangeMethod> {
    choice.addke.iter().copied().collect()
}

pub(super) fn link_of(payloads: &[Payload]) -> Option<Vec<u8>> {
    find_notify(payloads, NotifyType::AdditionalKeyExchange).map(|n| n.data.clone())
}

pub(super) fn link_notify(link: Vec<u8>) -> Payload {
    Payload::Notify(NotifyPayload::status(
        NotifyType::AdditionalKeyExchange,
        link,
    ))
}

impl Session {
    /// Our rekey's next IKE_FOLLOWUP_KE round, if one remains: a fresh key exchange in `ke`
    /// and the request's payloads, with the link the peer's response must carry (RFC 9370
    /// §2.2.4), which is returned to be remembered.
    pub(super) fn next_round(
        &self,
        rounds: &mut Rounds,
        ke: &mut Box<dyn KeyExchange>,
        payloads: &[Payload],
    ) -> Result<Option<NextRound>, Error> {
        let Some(method) = rounds.remaining.pop_front() else {
            return Ok(None);
        };
        let link = link_of(payloads).ok_or(Error::MissingPayload("ADDITIONAL_KEY_EXCHANGE"))?;
        *ke = self.provider.start_key_exchange(method)?;
        let inner = [link_notify(link.clone()), ke_payload(&**ke)];
        Ok(Some((link, inner)))
    }

    /// After answering the CREATE_CHILD_SA of a peer's rekey: done, or a link for the
    /// IKE_FOLLOWUP_KE rounds.
    #[expect(clippy::too_many_arguments, reason = "the whole first round")]
    pub(super) fn after_first_round(
        &mut self,
        now: Instant,
        sa: &IkeSa,
        nonce_i: Vec<u8>,
        nonce_r: Vec<u8>,
        rounds: Rounds,
        kind: PeerRekeyKind,
        inner: &mut Vec<Payload>,
    ) -> Result<(Vec<Payload>, After), Error> {
        let done = PeerRekey {
            on: sa.local_spi(),
            since: now,
            link: Vec::new(),
            nonce_i,
            nonce_r,
            rounds,
            kind,
        };
        if done.rounds.remaining.is_empty() {
            return Ok((core::mem::take(inner), After::Complete(Box::new(done))));
        }
        let link = random_bytes(&*self.provider, LINK_LEN)?;
        inner.push(link_notify(link.clone()));
        self.peer_rekey = Some(PeerRekey { link, ..done });
        Ok((core::mem::take(inner), After::Nothing))
    }

    /// IKE_FOLLOWUP_KE from the peer: the next round of its rekey, found by the link
    /// (RFC 9370 §2.2.4). The last response carries no link.
    pub(super) fn on_followup_ke(
        &mut self,
        _now: Instant,
        sa: &mut IkeSa,
        payloads: &[Payload],
    ) -> Result<(Vec<Payload>, After), Error> {
        #[cfg(test)]
        if core::mem::take(&mut self.faults.forget_followup_state) {
            self.peer_rekey = None;
        }
        let link = link_of(payloads).ok_or(Error::MissingPayload("ADDITIONAL_KEY_EXCHANGE"))?;
        let matches = self
            .peer_rekey
            .as_ref()
            .is_some_and(|p| p.link == link && p.on == sa.local_spi());
        if !matches {
            return Err(Error::StateNotFound);
        }
        let Some(mut state) = self.peer_rekey.take() else {
            return Err(Error::StateNotFound);
        };
        let method = state
            .rounds
            .remaining
            .pop_front()
            .ok_or(Error::StateNotFound)?;
        let kei = payload_ke(payloads).ok_or(Error::MissingPayload("KE"))?;
        if kei.method != method {
            return Err(Error::WrongKeyExchangeMethod {
                expected: method,
                got: kei.method,
            });
        }
        let response = self.provider.respond_key_exchange(method, &kei.data)?;
        state.rounds.shared.push(response.shared_secret);
        let mut inner = vec![Payload::Ke(KePayload {
            method,
            data: response.public_value,
        })];
        if state.rounds.remaining.is_empty() {
            return Ok((inner, After::Complete(Box::new(state))));
        }
        let link = random_bytes(&*self.provider, LINK_LEN)?;
        inner.push(link_notify(link.clone()));
        state.link = link;
        self.peer_rekey = Some(state);
        Ok((inner, After::Nothing))
    }

    /// The peer's rekey has all its key exchanges: create the SA.
    pub(super) fn complete_peer_rekey(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        done: PeerRekey,
    ) -> Result<(), Error> {
        let secrets = done.rounds.secrets();
        match done.kind {
            PeerRekeyKind::Child(parts) => self.complete_child_rekey(
                now,
                sa,
                false,
                parts,
                &done.nonce_i,
                &done.nonce_r,
                &secrets,
            ),
            PeerRekeyKind::Ike {
                new_spi_i,
                new_spi_r,
                choice,
            } => {
                let new = self.derive_ike_sa(
                    sa,
                    false,
                    new_spi_i,
                    new_spi_r,
                    choice,
                    &done.nonce_i,
                    &done.nonce_r,
                    &secrets,
                )?;
                self.install_ike_sa(now, sa, new, false)
            }
        }
    }
}
