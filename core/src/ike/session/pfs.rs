//! Perfect forward secrecy of Child SA rekeys: which key exchanges a proposal repeats, what
//! we offer and accept ([RFC 7296 §1.3.1], [RFC 9370 §2.2.1]).
//!
//! [RFC 7296 §1.3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.1
//! [RFC 9370 §2.2.1]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.1

use crate::crypto::AeadAlgorithm;
use crate::ike::Error;
use crate::ike::proposal::esp_answer;
use crate::wire::EspSpi;
use crate::wire::{EsnMode, KeyExchangeMethod, Proposal, ProtocolId, Transform, TransformType};

use super::Session;

/// The ESP proposal of a Child SA rekey: the old SA's cipher, no ESN, and the key exchange of
/// every round for PFS (RFC 7296 §1.3.3, RFC 9370 §2.2.1).
pub(super) fn esp_rekey_proposal(
    encr: AeadAlgorithm,
    spi: EspSpi,
    ke: &[KeyExchangeMethod],
    addke: &[KeyExchangeMethod],
) -> Proposal {
    let (e, bits) = encr.transform();
    let mut transforms = vec![Transform::encryption(e, bits)];
    transforms.extend(ke.iter().map(|&m| Transform::key_exchange(m)));
    for (round, &m) in (1u8..).zip(addke) {
        transforms.extend(Transform::additional_key_exchange(round, m));
    }
    transforms.push(Transform::esn(EsnMode::NoEsn));
    Proposal {
        number: 1,
        protocol_id: ProtocolId::Esp,
        spi: spi.to_be_bytes().to_vec(),
        transforms,
    }
}

pub(super) fn offers_method(proposal: &Proposal, t: TransformType, m: KeyExchangeMethod) -> bool {
    proposal
        .transforms
        .iter()
        .any(|x| x.transform_type == t && x.key_exchange_method() == Some(m))
}

/// How much of the IKE SA's key exchange a Child SA rekey proposal repeats (RFC 7296 §1.3.1,
/// RFC 9370 §2.2.1), strongest first in preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Pfs {
    /// No key exchange: KEYMAT from `SK_d` and the nonces alone.
    None,
    /// The KE method without the additional ones (a gateway with a classical PFS group).
    KeOnly,
    /// Every key exchange of the IKE SA.
    Full,
}

impl Pfs {
    /// The additional key exchanges this level runs, of the IKE SA's `addke`.
    pub(super) fn addke(self, addke: &[KeyExchangeMethod]) -> &[KeyExchangeMethod] {
        if self == Self::Full { addke } else { &[] }
    }
}

/// The PFS level a proposal asks for, `None` when it is none of ours (some but not all of our
/// additional key exchanges, or additional ones without a KE).
pub(super) fn pfs_of(proposal: &Proposal, addke: &[KeyExchangeMethod]) -> Option<Pfs> {
    let real = |t: &&Transform| {
        t.key_exchange_method()
            .is_some_and(|m| m != KeyExchangeMethod::None)
    };
    let ke = proposal
        .transforms
        .iter()
        .filter(real)
        .any(|t| t.transform_type == TransformType::KeyExchange);
    let rounds = proposal
        .transforms
        .iter()
        .filter(real)
        .any(|t| t.transform_type.additional_key_exchange_round().is_some());
    let all_rounds = (1u8..).zip(addke).all(|(round, &m)| {
        TransformType::additional_key_exchange(round).is_some_and(|t| offers_method(proposal, t, m))
    });
    match (ke, rounds) {
        (false, false) => Some(Pfs::None),
        (true, _) if all_rounds && (rounds || addke.is_empty()) => Some(Pfs::Full),
        (true, false) => Some(Pfs::KeOnly),
        _ => None,
    }
}

/// Responder: the PFS method of a Child SA rekey. Every ADDKE round of our construction must be
/// offered; KEi may use any allowed method the proposal offers, else INVALID_KE_PAYLOAD names
/// our preferred one (RFC 7296 §1.3).
pub(super) fn select_pfs(
    proposal: &Proposal,
    allowed: &[KeyExchangeMethod],
    addke: &[KeyExchangeMethod],
    kei: Option<KeyExchangeMethod>,
) -> Result<KeyExchangeMethod, Error> {
    for (round, &m) in (1u8..).zip(addke) {
        let t = TransformType::additional_key_exchange(round).ok_or(Error::NoProposalChosen)?;
        if !offers_method(proposal, t, m) {
            return Err(Error::NoProposalChosen);
        }
    }
    let &ours = allowed
        .iter()
        .find(|&&m| offers_method(proposal, TransformType::KeyExchange, m))
        .ok_or(Error::NoProposalChosen)?;
    let kei = kei.ok_or(Error::MissingPayload("KE"))?;
    if allowed.contains(&kei) && offers_method(proposal, TransformType::KeyExchange, kei) {
        Ok(kei)
    } else {
        Err(Error::WrongKeyExchangeMethod {
            expected: ours,
            got: kei,
        })
    }
}

/// Initiator: the responder's Child SA answer must name exactly our KE and ADDKE methods.
pub(super) fn check_pfs_answer(
    proposal: &Proposal,
    sent: KeyExchangeMethod,
    addke: &[KeyExchangeMethod],
) -> Result<(), Error> {
    let kes: Vec<_> = proposal
        .transforms
        .iter()
        .filter(|t| t.transform_type == TransformType::KeyExchange)
        .collect();
    if !matches!(kes[..], [t] if t.key_exchange_method() == Some(sent)) {
        return Err(Error::ProposalMismatch(
            "key exchange of the Child SA rekey",
        ));
    }
    let rounds = proposal
        .transforms
        .iter()
        .filter(|t| t.transform_type.additional_key_exchange_round().is_some())
        .count();
    let all_offered = (1u8..).zip(addke).all(|(round, &m)| {
        TransformType::additional_key_exchange(round).is_some_and(|t| offers_method(proposal, t, m))
    });
    if rounds != addke.len() || !all_offered {
        return Err(Error::ProposalMismatch(
            "additional key exchange of the Child SA rekey",
        ));
    }
    Ok(())
}

/// The ESP answer to a rekey: the chosen cipher and the KE and ADDKE methods used.
pub(super) fn pfs_answer(
    number: u8,
    esp: &crate::ike::proposal::EspChoice,
    our_spi: EspSpi,
    method: KeyExchangeMethod,
    addke: &[KeyExchangeMethod],
) -> Proposal {
    let mut p = esp_answer(number, esp, our_spi);
    p.transforms.push(Transform::key_exchange(method));
    for (round, &m) in (1u8..).zip(addke) {
        p.transforms
            .extend(Transform::additional_key_exchange(round, m));
    }
    p
}

impl Session {
    /// Our Child SA rekey offers: every key exchange of the IKE SA first; unless PFS is
    /// required, then the KE alone (a gateway with a classical PFS group) and none (a gateway
    /// configured without PFS). KEi goes with the first two (RFC 7296 §1.3.1).
    pub(super) fn child_rekey_proposals(
        &self,
        encr: AeadAlgorithm,
        spi: EspSpi,
        ke: &[KeyExchangeMethod],
        addke: &[KeyExchangeMethod],
    ) -> Vec<Proposal> {
        let mut levels = vec![(ke, addke)];
        if !self.settings.require_child_pfs {
            if !addke.is_empty() {
                levels.push((ke, &[]));
            }
            levels.push((&[], &[]));
        }
        #[cfg(test)]
        if let Some(only) = self.faults.child_rekey_offer {
            levels = match only {
                Pfs::Full => vec![(ke, addke)],
                Pfs::KeOnly => vec![(ke, &[])],
                Pfs::None => vec![(&[], &[])],
            };
        }
        (1u8..)
            .zip(levels)
            .map(|(number, (ke, addke))| Proposal {
                number,
                ..esp_rekey_proposal(encr, spi, ke, addke)
            })
            .collect()
    }
}
