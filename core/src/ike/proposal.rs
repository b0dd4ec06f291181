//! Choosing proposals (responder) and checking the choice (initiator), RFC 7296 §2.7 and
//! RFC 9370 §2.2.1; traffic selector narrowing (RFC 7296 §2.9).

use crate::crypto::AeadAlgorithm;
use crate::ike::Error;
use crate::ike::config::{CryptoPolicy, Mode};
use crate::wire::EspSpi;
use crate::wire::{
    EsnMode, KeyExchangeMethod, Proposal, ProtocolId, TrafficSelector, Transform, TransformType,
};

/// What an IKE proposal settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IkeChoice {
    pub(crate) encr: AeadAlgorithm,
    pub(crate) prf: crate::wire::PrfAlgorithm,
    pub(crate) ke: KeyExchangeMethod,
    pub(crate) addke: Vec<KeyExchangeMethod>,
}

impl IkeChoice {
    /// Octets of each SK_* key for this choice: PRF-sized SK_d/SK_p, no SK_a with an AEAD,
    /// key plus salt for SK_e (RFC 7296 §2.14, RFC 5282 §7).
    pub(crate) fn key_lengths(
        &self,
        prf: &dyn crate::crypto::Prf,
    ) -> crate::ike::keys::IkeKeyLengths {
        crate::ike::keys::IkeKeyLengths {
            prf: prf.output_len(),
            integ: 0,
            encr: self.encr.keymat_len(),
        }
    }

    /// The summary UIs show for this choice under `mode`: quantum-safe only if a
    /// post-quantum method contributed and the mode is not `classical`.
    pub(crate) fn suite(&self, mode: Mode) -> crate::ike::Suite {
        crate::ike::Suite {
            mode,
            ke: self.ke,
            addke: self.addke.clone(),
            encr: self.encr,
            prf: self.prf,
            quantum_safe: mode != Mode::Classical
                && (self.ke.is_post_quantum() || self.addke.iter().any(|m| m.is_post_quantum())),
        }
    }

    /// The single-transform-per-type proposal that reports this choice (RFC 7296 §3.3).
    pub(crate) fn to_proposal(&self, number: u8) -> Proposal {
        let (encr, bits) = self.encr.transform();
        let mut transforms = vec![
            Transform::encryption(encr, bits),
            Transform::prf(self.prf),
            Transform::key_exchange(self.ke),
        ];
        for (round, &m) in (1u8..).zip(&self.addke) {
            transforms.extend(Transform::additional_key_exchange(round, m));
        }
        Proposal {
            number,
            protocol_id: ProtocolId::Ike,
            spi: Vec::new(),
            transforms,
        }
    }
}

/// Initiator: checks the responder's SA payload against `policy` (the only proposal we sent)
/// and the KE method we sent. The responder must pick exactly one of each offered type and
/// nothing else (RFC 7296 §3.3.6); in hybrid mode a choice without ML-KEM is refused.
pub(crate) fn check_ike_choice(
    policy: &CryptoPolicy,
    sent_ke: KeyExchangeMethod,
    proposals: &[Proposal],
) -> Result<IkeChoice, Error> {
    let [proposal] = proposals else {
        return Err(Error::ProposalMismatch(
            "the SA payload must hold one proposal",
        ));
    };
    if proposal.protocol_id != ProtocolId::Ike || !proposal.spi.is_empty() || proposal.number != 1 {
        return Err(Error::ProposalMismatch("proposal number, protocol or SPI"));
    }
    let of_type = |t: TransformType| -> Vec<&Transform> {
        proposal
            .transforms
            .iter()
            .filter(|x| x.transform_type == t)
            .collect()
    };
    for t in &proposal.transforms {
        let known = matches!(
            t.transform_type,
            TransformType::Encryption
                | TransformType::PseudoRandomFunction
                | TransformType::KeyExchange
        ) || t.transform_type.additional_key_exchange_round().is_some();
        if !known {
            return Err(Error::ProposalMismatch("a transform type we did not offer"));
        }
    }
    let [encr] = of_type(TransformType::Encryption)[..] else {
        return Err(Error::ProposalMismatch("encryption"));
    };
    let encr = encr
        .encryption_algorithm()
        .and_then(|e| AeadAlgorithm::from_transform(e, encr.key_length()))
        .filter(|&e| e == policy.encr)
        .ok_or(Error::ProposalMismatch("encryption"))?;
    let [prf] = of_type(TransformType::PseudoRandomFunction)[..] else {
        return Err(Error::ProposalMismatch("PRF"));
    };
    let prf = prf
        .prf_algorithm()
        .filter(|&p| p == policy.prf)
        .ok_or(Error::ProposalMismatch("PRF"))?;
    let [ke] = of_type(TransformType::KeyExchange)[..] else {
        return Err(Error::ProposalMismatch("key exchange"));
    };
    let ke = ke
        .key_exchange_method()
        .filter(|&m| m == sent_ke)
        .ok_or(Error::ProposalMismatch(
            "key exchange other than the one in KEi",
        ))?;
    let mut addke = Vec::new();
    for (index, &offered) in policy.addke.iter().enumerate() {
        let round = u8::try_from(index + 1).unwrap_or(u8::MAX);
        let t = TransformType::additional_key_exchange(round)
            .ok_or(Error::ProposalMismatch("additional key exchange round"))?;
        match of_type(t)[..] {
            [] => break,
            [chosen] if chosen.key_exchange_method() == Some(offered) => addke.push(offered),
            _ => return Err(Error::ProposalMismatch("additional key exchange")),
        }
    }
    let chosen_rounds = proposal
        .transforms
        .iter()
        .filter(|t| t.transform_type.additional_key_exchange_round().is_some())
        .count();
    if chosen_rounds != addke.len() {
        return Err(Error::ProposalMismatch(
            "additional key exchange round we did not offer",
        ));
    }
    if policy.mode == Mode::Hybrid && addke.len() != policy.addke.len() {
        return Err(Error::GatewayRefusedMlKem);
    }
    Ok(IkeChoice {
        encr,
        prf,
        ke,
        addke,
    })
}

/// Whether `proposal` offers transform `t`'s type and ID (and key length).
fn offers(proposal: &Proposal, wanted: &Transform) -> bool {
    proposal.transforms.iter().any(|t| {
        t.transform_type == wanted.transform_type
            && t.id == wanted.id
            && t.key_length() == wanted.key_length()
    })
}

/// Whether `proposal` allows skipping round `t` (offers no ADDKE of that round, or NONE).
fn allows_no(proposal: &Proposal, t: TransformType) -> bool {
    let mut of_type = proposal
        .transforms
        .iter()
        .filter(|x| x.transform_type == t)
        .peekable();
    of_type.peek().is_none() || of_type.any(|x| x.id == 0)
}

/// Responder's decision on an IKE_SA_INIT proposal list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IkeSelection {
    /// Accept `choice`, answering with proposal number `number`.
    Accept { number: u8, choice: IkeChoice },
    /// Acceptable, but KEi must use this method (INVALID_KE_PAYLOAD, RFC 7296 §1.2).
    WrongKe(KeyExchangeMethod),
}

/// Responder: picks the first of our `policies` (preferred first) that one of the initiator's
/// proposals allows; within it the first KE method of ours the initiator offers. `kei` is the
/// method of the initiator's KE payload.
pub(crate) fn select_ike(
    policies: &[CryptoPolicy],
    proposals: &[Proposal],
    kei: KeyExchangeMethod,
    intermediate_supported: bool,
) -> Result<IkeSelection, Error> {
    for policy in policies {
        if !policy.addke.is_empty() && !intermediate_supported {
            continue; // RFC 9370 §2.2.1: ADDKE needs IKE_INTERMEDIATE.
        }
        let ours = policy.ike_proposal();
        for theirs in proposals {
            if theirs.protocol_id != ProtocolId::Ike {
                continue;
            }
            let needed = ours
                .transforms
                .iter()
                .filter(|t| !matches!(t.transform_type, TransformType::KeyExchange));
            if !needed.clone().all(|t| offers(theirs, t)) {
                continue;
            }
            // Rounds we do not run must be optional for them.
            let rounds_ok = (policy.addke.len() + 1..=7).all(|round| {
                u8::try_from(round)
                    .ok()
                    .and_then(TransformType::additional_key_exchange)
                    .is_none_or(|t| allows_no(theirs, t))
            });
            if !rounds_ok {
                continue;
            }
            let Some(&ke) = policy
                .ke
                .iter()
                .find(|&&m| offers(theirs, &Transform::key_exchange(m)))
            else {
                continue;
            };
            if ke != kei {
                // Accept their KEi if it is any method this policy allows; otherwise ask for
                // our preferred one.
                if !policy.ke.contains(&kei) || !offers(theirs, &Transform::key_exchange(kei)) {
                    return Ok(IkeSelection::WrongKe(ke));
                }
            }
            return Ok(IkeSelection::Accept {
                number: theirs.number,
                choice: IkeChoice {
                    encr: policy.encr,
                    prf: policy.prf,
                    ke: kei,
                    addke: policy.addke.clone(),
                },
            });
        }
    }
    Err(Error::NoProposalChosen)
}

/// An ESP proposal settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EspChoice {
    pub(crate) encr: AeadAlgorithm,
    pub(crate) esn: bool,
    /// The peer's SPI (the one it receives on).
    pub(crate) peer_spi: EspSpi,
}

fn esp_of(proposal: &Proposal) -> Option<(AeadAlgorithm, bool, EspSpi)> {
    if proposal.protocol_id != ProtocolId::Esp {
        return None;
    }
    let spi = EspSpi(u32::from_be_bytes(proposal.spi.as_slice().try_into().ok()?));
    let mut encr = None;
    let mut esn = None;
    for t in &proposal.transforms {
        match t.transform_type {
            TransformType::Encryption => {
                let a = t
                    .encryption_algorithm()
                    .and_then(|e| AeadAlgorithm::from_transform(e, t.key_length()))?;
                encr.get_or_insert(a);
            }
            TransformType::ExtendedSequenceNumbers => {
                esn.get_or_insert(t.esn_mode()? == EsnMode::Esn);
            }
            // An AEAD needs no integrity transform; INTEG NONE is tolerated.
            TransformType::Integrity if t.id == 0 => {}
            // KE in the IKE_AUTH Child SA is ignored (RFC 7296 §1.2).
            TransformType::KeyExchange => {}
            t if t.additional_key_exchange_round().is_some() => {}
            _ => return None,
        }
    }
    Some((encr?, esn.unwrap_or(false), spi))
}

/// Initiator: checks the responder's ESP choice against what we offered.
pub(crate) fn check_esp_choice(
    offered: &[AeadAlgorithm],
    proposals: &[Proposal],
) -> Result<EspChoice, Error> {
    let [proposal] = proposals else {
        return Err(Error::ProposalMismatch(
            "the Child SA payload must hold one proposal",
        ));
    };
    let (encr, esn, peer_spi) =
        esp_of(proposal).ok_or(Error::ProposalMismatch("ESP transforms"))?;
    if !offered.contains(&encr) || esn || peer_spi.0 < EspSpi::MIN_ASSIGNABLE {
        return Err(Error::ProposalMismatch("ESP cipher, ESN or SPI"));
    }
    Ok(EspChoice {
        encr,
        esn,
        peer_spi,
    })
}

/// Responder: the first of our ESP ciphers the initiator offers without ESN, with the
/// initiator's proposal number.
pub(crate) fn select_esp(
    ours: &[AeadAlgorithm],
    proposals: &[Proposal],
) -> Result<(u8, EspChoice), Error> {
    for &wanted in ours {
        for p in proposals {
            // Offers of several ciphers in one proposal are read one cipher at a time.
            let Some((_, _, spi)) = esp_of(p) else {
                continue;
            };
            let (encr, bits) = wanted.transform();
            let cipher_offered = offers(p, &Transform::encryption(encr, bits));
            let no_esn_ok = allows_no_esn(p);
            if cipher_offered && no_esn_ok && spi.0 >= EspSpi::MIN_ASSIGNABLE {
                return Ok((
                    p.number,
                    EspChoice {
                        encr: wanted,
                        esn: false,
                        peer_spi: spi,
                    },
                ));
            }
        }
    }
    Err(Error::NoProposalChosen)
}

fn allows_no_esn(p: &Proposal) -> bool {
    let mut esn = p
        .transforms
        .iter()
        .filter(|t| t.transform_type == TransformType::ExtendedSequenceNumbers)
        .peekable();
    esn.peek().is_none() || esn.any(|t| t.esn_mode() == Some(EsnMode::NoEsn))
}

/// The ESP proposal a responder answers with.
pub(crate) fn esp_answer(number: u8, choice: &EspChoice, our_spi: EspSpi) -> Proposal {
    let (encr, bits) = choice.encr.transform();
    Proposal {
        number,
        protocol_id: ProtocolId::Esp,
        spi: our_spi.to_be_bytes().to_vec(),
        transforms: vec![
            Transform::encryption(encr, bits),
            Transform::esn(EsnMode::NoEsn),
        ],
    }
}

/// The intersection of two traffic selectors (RFC 7296 §2.9), if not empty.
pub(crate) fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    fn proto(a: u8, b: u8) -> Option<u8> {
        match (a, b) {
            (0, x) | (x, 0) => Some(x),
            (x, y) if x == y => Some(x),
            _ => None,
        }
    }
    fn range<T: Ord + Copy>(a: (T, T), b: (T, T)) -> Option<(T, T)> {
        let (lo, hi) = (a.0.max(b.0), a.1.min(b.1));
        (lo <= hi).then_some((lo, hi))
    }
    match (a, b) {
        (
            TrafficSelector::Ipv4 {
                ip_protocol: pa,
                start_port: sa,
                end_port: ea,
                start_addr: la,
                end_addr: ha,
            },
            TrafficSelector::Ipv4 {
                ip_protocol: pb,
                start_port: sb,
                end_port: eb,
                start_addr: lb,
                end_addr: hb,
            },
        ) => {
            let ip_protocol = proto(*pa, *pb)?;
            let (start_port, end_port) = range((*sa, *ea), (*sb, *eb))?;
            let (start_addr, end_addr) = range((*la, *ha), (*lb, *hb))?;
            Some(TrafficSelector::Ipv4 {
                ip_protocol,
                start_port,
                end_port,
                start_addr,
                end_addr,
            })
        }
        (
            TrafficSelector::Ipv6 {
                ip_protocol: pa,
                start_port: sa,
                end_port: ea,
                start_addr: la,
                end_addr: ha,
            },
            TrafficSelector::Ipv6 {
                ip_protocol: pb,
                start_port: sb,
                end_port: eb,
                start_addr: lb,
                end_addr: hb,
            },
        ) => {
            let ip_protocol = proto(*pa, *pb)?;
            let (start_port, end_port) = range((*sa, *ea), (*sb, *eb))?;
            let (start_addr, end_addr) = range((*la, *ha), (*lb, *hb))?;
            Some(TrafficSelector::Ipv6 {
                ip_protocol,
                start_port,
                end_port,
                start_addr,
                end_addr,
            })
        }
        _ => None,
    }
}

/// Every non-empty pairwise intersection of `ours` and `theirs`.
#[cfg(feature = "gateway")]
pub(crate) fn narrow(ours: &[TrafficSelector], theirs: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for a in ours {
        for b in theirs {
            if let Some(ts) = intersect(a, b)
                && !out.contains(&ts)
            {
                out.push(ts);
            }
        }
    }
    out
}

/// Whether every selector of `narrowed` lies inside some selector of `proposed`: what an
/// initiator checks of the responder's TSi/TSr (RFC 7296 §2.9 allows narrowing only).
pub(crate) fn is_narrowing(proposed: &[TrafficSelector], narrowed: &[TrafficSelector]) -> bool {
    !narrowed.is_empty()
        && narrowed
            .iter()
            .all(|n| proposed.iter().any(|p| intersect(p, n).as_ref() == Some(n)))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn hybrid() -> CryptoPolicy {
        CryptoPolicy::default()
    }

    #[test]
    fn initiator_accepts_the_full_hybrid_choice() {
        let answer = IkeChoice {
            encr: AeadAlgorithm::Aes256Gcm16,
            prf: crate::wire::PrfAlgorithm::HmacSha2_384,
            ke: KeyExchangeMethod::Curve25519,
            addke: vec![KeyExchangeMethod::MlKem768],
        };
        let got = check_ike_choice(
            &hybrid(),
            KeyExchangeMethod::Curve25519,
            &[answer.to_proposal(1)],
        );
        assert_eq!(got, Ok(answer));
    }

    #[test]
    fn hybrid_initiator_refuses_a_choice_without_mlkem() {
        let stripped = IkeChoice {
            encr: AeadAlgorithm::Aes256Gcm16,
            prf: crate::wire::PrfAlgorithm::HmacSha2_384,
            ke: KeyExchangeMethod::Curve25519,
            addke: vec![],
        };
        assert_eq!(
            check_ike_choice(
                &hybrid(),
                KeyExchangeMethod::Curve25519,
                &[stripped.to_proposal(1)]
            ),
            Err(Error::GatewayRefusedMlKem)
        );
    }

    #[test]
    fn initiator_refuses_what_it_did_not_offer() {
        let mut p = IkeChoice {
            encr: AeadAlgorithm::Aes128Gcm16,
            prf: crate::wire::PrfAlgorithm::HmacSha2_384,
            ke: KeyExchangeMethod::Curve25519,
            addke: vec![KeyExchangeMethod::MlKem768],
        }
        .to_proposal(1);
        assert!(matches!(
            check_ike_choice(&hybrid(), KeyExchangeMethod::Curve25519, &[p.clone()]),
            Err(Error::ProposalMismatch(_))
        ));
        p.transforms[0] =
            Transform::encryption(crate::wire::EncryptionAlgorithm::AesGcm16, Some(256));
        p.transforms.push(Transform::integrity(
            crate::wire::IntegrityAlgorithm::HmacSha2_256_128,
        ));
        assert!(matches!(
            check_ike_choice(&hybrid(), KeyExchangeMethod::Curve25519, &[p]),
            Err(Error::ProposalMismatch(_))
        ));
    }

    #[test]
    fn responder_asks_for_its_preferred_group_only_when_kei_is_not_acceptable() {
        let proposal = hybrid().ike_proposal();
        let p384_only = CryptoPolicy {
            ke: vec![KeyExchangeMethod::Ecp384],
            ..hybrid()
        };
        assert_eq!(
            select_ike(
                &[p384_only],
                std::slice::from_ref(&proposal),
                KeyExchangeMethod::Curve25519,
                true
            ),
            Ok(IkeSelection::WrongKe(KeyExchangeMethod::Ecp384))
        );
        assert!(matches!(
            select_ike(
                &[hybrid()],
                std::slice::from_ref(&proposal),
                KeyExchangeMethod::Curve25519,
                true
            ),
            Ok(IkeSelection::Accept { number: 1, .. })
        ));
        // Without INTERMEDIATE_EXCHANGE_SUPPORTED the hybrid policy cannot be chosen.
        assert_eq!(
            select_ike(
                &[hybrid()],
                &[proposal],
                KeyExchangeMethod::Curve25519,
                false
            ),
            Err(Error::NoProposalChosen)
        );
    }

    #[test]
    fn responder_does_not_pick_classical_for_a_hybrid_only_initiator() {
        let proposal = hybrid().ike_proposal();
        assert_eq!(
            select_ike(
                &[CryptoPolicy::classical()],
                &[proposal],
                KeyExchangeMethod::Curve25519,
                true
            ),
            Err(Error::NoProposalChosen)
        );
    }

    #[test]
    fn traffic_selectors_narrow_to_the_intersection() {
        let host = TrafficSelector::Ipv4 {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start_addr: Ipv4Addr::new(10, 0, 0, 5),
            end_addr: Ipv4Addr::new(10, 0, 0, 5),
        };
        assert_eq!(
            narrow(&[TrafficSelector::ipv4_any()], std::slice::from_ref(&host)),
            vec![host.clone()]
        );
        assert!(is_narrowing(
            &[TrafficSelector::ipv4_any()],
            std::slice::from_ref(&host)
        ));
        assert!(!is_narrowing(&[host], &[TrafficSelector::ipv4_any()]));
        assert!(
            narrow(
                &[TrafficSelector::ipv4_any()],
                &[TrafficSelector::ipv6_any()]
            )
            .is_empty()
        );
    }
}
