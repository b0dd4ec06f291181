//! Rekeying the IKE SA with CREATE_CHILD_SA ([RFC 7296 §1.3.2], [RFC 7296 §2.18]), both
//! sides, with every key exchange of the construction again ([RFC 9370 §2.2.2]).
//!
//! [RFC 7296 §1.3.2]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.2
//! [RFC 7296 §2.18]: https://www.rfc-editor.org/rfc/rfc7296#section-2.18
//! [RFC 9370 §2.2.2]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.2

use std::time::Instant;

use crate::crypto::{KeyExchange, SharedSecret};
use crate::ike::Error;
use crate::ike::config::CryptoPolicy;
use crate::ike::handshake::new_nonce;
use crate::ike::keys::{IkeSaKeys, skeyseed_rekey};
use crate::ike::proposal::{IkeChoice, IkeSelection, check_ike_choice, select_ike};
use crate::ike::protect::SkCipher;
use crate::ike::sa::{find_notify, first_error_notify, random_spi};
use crate::wire::{
    ExchangeType, IkeSpi, KePayload, KeyExchangeMethod, MessageId, NotifyPayload, NotifyType,
    Payload, ProtocolId, SaPayload,
};

use super::collision::{Collision, min_nonce};
use super::exchange::After;
use super::followup::{PeerRekeyKind, Rounds, rounds_after};
use super::ike_sa::{IkeSa, IkeSaParts};
use super::{
    Exchange, Intent, MAX_INVALID_KE_RETRIES, Session, ke_payload, nonce_payload, payload_ke,
    payload_nonce, payload_sa,
};

/// Our CREATE_CHILD_SA rekeying the IKE SA ([RFC 7296 §1.3.2]).
///
/// [RFC 7296 §1.3.2]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.2
pub(super) struct RekeyIkeSa {
    pub(super) new_spi_i: IkeSpi,
    pub(super) nonce_i: Vec<u8>,
    pub(super) ke: Box<dyn KeyExchange>,
    pub(super) answer: Option<IkeAnswer>,
    pub(super) rounds: Rounds,
    pub(super) invalid_ke_retries: u8,
}

/// What the responder answered to our IKE SA rekey.
pub(super) struct IkeAnswer {
    pub(super) nonce_r: Vec<u8>,
    pub(super) new_spi_r: IkeSpi,
    pub(super) choice: IkeChoice,
    pub(super) link: Option<Vec<u8>>,
}

impl Session {
    pub(super) fn start_ike_rekey(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        method: Option<KeyExchangeMethod>,
        invalid_ke_retries: u8,
    ) -> Result<(), Error> {
        // RFC 7296 §2.25.2: not while Child SAs are being rekeyed; the queue holds it.
        let choice = sa.choice.clone();
        let ke_method = method.unwrap_or(choice.ke);
        let ke = self.provider.start_key_exchange(ke_method)?;
        let new_spi_i = random_spi(&*self.provider)?;
        let nonce_i = new_nonce(&*self.provider, self.settings.nonce_len)?;
        let mut proposal = self.rekey_policy(&choice, ke_method).ike_proposal();
        proposal.spi = new_spi_i.0.to_be_bytes().to_vec();
        let inner = [
            Payload::Sa(SaPayload {
                proposals: vec![proposal],
            }),
            nonce_payload(&nonce_i)?,
            ke_payload(&*ke),
        ];
        self.ike_collision = None;
        let exchange = RekeyIkeSa {
            new_spi_i,
            nonce_i,
            ke,
            answer: None,
            rounds: Rounds {
                remaining: rounds_after(&choice),
                shared: Vec::new(),
            },
            invalid_ke_retries,
        };
        self.send_request(
            now,
            sa,
            ExchangeType::CreateChildSa,
            &inner,
            Exchange::RekeyIkeSa(Box::new(exchange)),
        )
    }

    /// The policy an IKE SA rekey proposes and accepts: the SA's algorithms, `first` then the
    /// other allowed KE methods, the SA's ADDKE rounds.
    pub(super) fn rekey_policy(
        &self,
        choice: &IkeChoice,
        first: KeyExchangeMethod,
    ) -> CryptoPolicy {
        let mut ke = vec![first];
        ke.extend(
            self.settings
                .policy
                .ke
                .iter()
                .copied()
                .filter(|&m| m != first),
        );
        CryptoPolicy {
            mode: self.settings.policy.mode,
            encr: choice.encr,
            prf: choice.prf,
            ke,
            addke: choice.addke.clone(),
        }
    }

    pub(super) fn on_ike_rekey_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        mut x: Box<RekeyIkeSa>,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        if let Some(error) = first_error_notify(payloads) {
            return self.ike_rekey_refused(now, sa, &x, error, payloads);
        }
        let ker = payload_ke(payloads).ok_or(Error::MissingPayload("KE"))?;
        if ker.method != x.ke.method() {
            return Err(Error::WrongKeyExchangeMethod {
                expected: x.ke.method(),
                got: ker.method,
            });
        }
        if x.answer.is_none() {
            let sa_payload = payload_sa(payloads).ok_or(Error::MissingPayload("SA"))?;
            let [proposal] = &sa_payload.proposals[..] else {
                return Err(Error::ProposalMismatch(
                    "the SA payload must hold one proposal",
                ));
            };
            let new_spi_r = <[u8; 8]>::try_from(proposal.spi.as_slice())
                .map(|b| IkeSpi(u64::from_be_bytes(b)))
                .ok()
                .filter(|&s| s != IkeSpi::ZERO)
                .ok_or(Error::ProposalMismatch(
                    "IKE SA rekey without an 8-octet SPI",
                ))?;
            let mut cleared = proposal.clone();
            cleared.spi.clear();
            let policy = self.rekey_policy(&sa.choice, x.ke.method());
            let choice = check_ike_choice(&policy, x.ke.method(), &[cleared])?;
            if choice.addke != sa.choice.addke {
                return Err(Error::ProposalMismatch("additional key exchange"));
            }
            let nonce_r = payload_nonce(payloads).ok_or(Error::MissingPayload("Nonce"))?;
            let nonce_r = nonce_r.as_bytes().to_vec();
            if let Some(c) = self.ike_collision.as_mut() {
                c.ours = Some(min_nonce(&x.nonce_i, &nonce_r));
            }
            x.answer = Some(IkeAnswer {
                nonce_r,
                new_spi_r,
                choice,
                link: None,
            });
        }
        x.rounds.shared.push(x.ke.complete(&ker.data)?);
        if let Some((link, inner)) = self.next_round(&mut x.rounds, &mut x.ke, payloads)? {
            if let Some(a) = x.answer.as_mut() {
                a.link = Some(link);
            }
            return self.send_request(
                now,
                sa,
                ExchangeType::IkeFollowupKe,
                &inner,
                Exchange::RekeyIkeSa(x),
            );
        }
        let answer = x
            .answer
            .take()
            .ok_or(Error::ApiMisuse("rekey without answer"))?;
        let secrets = x.rounds.secrets();
        let new = self.derive_ike_sa(
            sa,
            true,
            x.new_spi_i,
            answer.new_spi_r,
            answer.choice,
            &x.nonce_i,
            &answer.nonce_r,
            &secrets,
        )?;
        self.install_ike_sa(now, sa, new, true)
    }

    pub(super) fn ike_rekey_refused(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        x: &RekeyIkeSa,
        error: NotifyType,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        if let Some(c) = self.ike_collision.as_mut() {
            c.ours = None;
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
                        self.start_ike_rekey(now, sa, Some(m), x.invalid_ke_retries + 1)
                    }
                    _ => Err(Error::NotifyReceived(NotifyType::InvalidKePayload)),
                }
            }
            NotifyType::TemporaryFailure | NotifyType::StateNotFound => {
                let at = now + self.retry_delay();
                self.retries.push((at, Intent::RekeyIkeSa));
                self.settle_held(now);
                Ok(())
            }
            // Any other answer leaves the IKE SA as it was; it is retried at the next soft
            // lifetime and fails at the hard one.
            _ => {
                self.ike_rekey_at = now + self.retry_delay();
                self.settle_held(now);
                Ok(())
            }
        }
    }

    /// The new IKE SA of a rekey: `SKEYSEED = prf(SK_d(old), SK(0) | Ni | Nr | SK(1) | …)`, keys
    /// expanded with the **new** SPIs ([RFC 7296 §2.18], [RFC 9370 §2.2.4]).
    ///
    /// [RFC 7296 §2.18]: https://www.rfc-editor.org/rfc/rfc7296#section-2.18
    /// [RFC 9370 §2.2.4]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.4
    #[expect(
        clippy::too_many_arguments,
        reason = "the whole outcome of the exchange"
    )]
    pub(super) fn derive_ike_sa(
        &self,
        old: &IkeSa,
        we_initiated: bool,
        new_spi_i: IkeSpi,
        new_spi_r: IkeSpi,
        choice: IkeChoice,
        nonce_i: &[u8],
        nonce_r: &[u8],
        shared: &[&SharedSecret],
    ) -> Result<IkeSa, Error> {
        let seed = skeyseed_rekey(&*old.prf, &old.sk_d, shared, nonce_i, nonce_r);
        let prf = self.provider.prf(choice.prf)?;
        let lengths = choice.key_lengths(&*prf);
        let keys = IkeSaKeys::derive(
            &*prf, &seed, nonce_i, nonce_r, new_spi_i, new_spi_r, lengths,
        )?;
        let (send, recv) = if we_initiated {
            (&keys.sk_ei, &keys.sk_er)
        } else {
            (&keys.sk_er, &keys.sk_ei)
        };
        let cipher = SkCipher::new(&*self.provider, choice.encr, send, recv)?;
        Ok(IkeSa::new(IkeSaParts {
            spi_i: new_spi_i,
            spi_r: new_spi_r,
            original_initiator: we_initiated,
            choice,
            prf,
            sk_d: keys.sk_d,
            cipher,
            peer_fragmentation: old.peer_fragmentation,
            next_request_id: MessageId::ZERO,
            expected_request_id: MessageId::ZERO,
            last_response: None,
        }))
    }

    pub(super) fn on_ike_rekey_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        sa_payload: &SaPayload,
        nonce_i: Vec<u8>,
        payloads: &[Payload],
    ) -> Result<(Vec<Payload>, After), Error> {
        // RFC 7296 §2.25.2: not while a Child SA of it is being rekeyed or deleted.
        if matches!(
            sa.active,
            Some((_, Exchange::RekeyChildSa(_) | Exchange::DeleteChildSa(_)))
        ) {
            return Err(Error::ExchangeInProgress);
        }
        let kei = payload_ke(payloads).ok_or(Error::MissingPayload("KE"))?;
        let mut spis = Vec::new();
        let mut cleared = Vec::new();
        for p in &sa_payload.proposals {
            if p.protocol_id != ProtocolId::Ike {
                continue;
            }
            let Ok(spi) = <[u8; 8]>::try_from(p.spi.as_slice()) else {
                continue;
            };
            spis.push((p.number, IkeSpi(u64::from_be_bytes(spi))));
            let mut c = p.clone();
            c.spi.clear();
            cleared.push(c);
        }
        let policy = self.rekey_policy(&sa.choice, sa.choice.ke);
        let (number, choice) = match select_ike(&[policy], &cleared, kei.method, true)? {
            IkeSelection::Accept { number, choice } => (number, choice),
            IkeSelection::WrongKe(expected) => {
                return Err(Error::WrongKeyExchangeMethod {
                    expected,
                    got: kei.method,
                });
            }
        };
        if choice.addke != sa.choice.addke {
            return Err(Error::NoProposalChosen);
        }
        let new_spi_i = spis
            .iter()
            .find(|(n, _)| *n == number)
            .map(|&(_, s)| s)
            .filter(|&s| s != IkeSpi::ZERO)
            .ok_or(Error::PeerMisbehaved("IKE SA rekey without an SPI"))?;
        let response = self.provider.respond_key_exchange(choice.ke, &kei.data)?;
        let new_spi_r = random_spi(&*self.provider)?;
        let nonce_r = new_nonce(&*self.provider, self.settings.nonce_len)?;
        // A collision with our own IKE SA rekey (RFC 7296 §2.8.2): answer as usual.
        if let Some((_, Exchange::RekeyIkeSa(x))) = &sa.active {
            self.ike_collision = Some(Collision {
                ours: x.answer.as_ref().map(|a| min_nonce(&x.nonce_i, &a.nonce_r)),
                theirs: Some(min_nonce(&nonce_i, &nonce_r)),
            });
        } else {
            self.ike_collision = None;
        }
        let mut proposal = choice.to_proposal(number);
        proposal.spi = new_spi_r.0.to_be_bytes().to_vec();
        let mut inner = vec![
            Payload::Sa(SaPayload {
                proposals: vec![proposal],
            }),
            nonce_payload(&nonce_r)?,
            Payload::Ke(KePayload {
                method: choice.ke,
                data: response.public_value,
            }),
        ];
        let rounds = Rounds {
            remaining: rounds_after(&choice),
            shared: vec![response.shared_secret],
        };
        let kind = PeerRekeyKind::Ike {
            new_spi_i,
            new_spi_r,
            choice,
        };
        self.after_first_round(now, sa, nonce_i, nonce_r, rounds, kind, &mut inner)
    }
}
