//! What an IKE SA does once IKE_AUTH completed, the same for both roles: CREATE_CHILD_SA to
//! rekey Child SAs and the IKE SA with a fresh key exchange each time ([RFC 7296 §1.3],
//! [RFC 7296 §2.8], [RFC 7296 §2.18]), IKE_FOLLOWUP_KE for the additional key exchanges
//! ([RFC 9370 §2.2.4]), collisions ([RFC 7296 §2.8.1], [RFC 7296 §2.25]), liveness checks
//! ([RFC 7296 §2.4]) and Delete ([RFC 7296 §1.4.1]), all with window size 1 ([RFC 7296 §2.3]).
//!
//! [`EstablishedSa`] owns every IKE SA of one tunnel (the current one, plus old or redundant
//! ones still finishing their Delete after a rekey) and its Child SAs. Which side started the
//! very first IKE SA only matters for naming Child SA fields ([`ChildSaEstablished`]); the
//! "original initiator" of each IKE SA is whoever started that SA's exchange, so it changes
//! hands when the gateway rekeys the IKE SA.
//!
//! [RFC 7296 §1.3]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3
//! [RFC 7296 §1.4.1]: https://www.rfc-editor.org/rfc/rfc7296#section-1.4.1
//! [RFC 7296 §2.3]: https://www.rfc-editor.org/rfc/rfc7296#section-2.3
//! [RFC 7296 §2.4]: https://www.rfc-editor.org/rfc/rfc7296#section-2.4
//! [RFC 7296 §2.8]: https://www.rfc-editor.org/rfc/rfc7296#section-2.8
//! [RFC 7296 §2.8.1]: https://www.rfc-editor.org/rfc/rfc7296#section-2.8.1
//! [RFC 7296 §2.18]: https://www.rfc-editor.org/rfc/rfc7296#section-2.18
//! [RFC 7296 §2.25]: https://www.rfc-editor.org/rfc/rfc7296#section-2.25
//! [RFC 9370 §2.2.4]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.4

use core::time::Duration;
use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::crypto::{AeadAlgorithm, CryptoProvider, KeyExchange, Prf, SecretBytes, SharedSecret};
use crate::ike::Error;
use crate::ike::config::{CryptoPolicy, Lifetime, RetransmitConfig};
use crate::ike::keys::{ChildSaKeys, IkeSaKeys, skeyseed_rekey};
use crate::ike::proposal::{
    IkeChoice, IkeSelection, check_esp_choice, check_ike_choice, esp_answer, is_narrowing,
    select_esp, select_ike,
};
use crate::ike::protect::{Reassembly, SkCipher, Unprotected, resend_allowed, unprotect};
use crate::ike::sa::{
    ChildSaEstablished, Event, Outbox, Outstanding, Suite, find_notify, first_error_notify,
    random_bytes, random_esp_spi, random_spi,
};
use crate::wire::{
    DeletePayload, EsnMode, ExchangeType, Flags, Header, KePayload, KeyExchangeMethod, Nonce,
    NotifyPayload, NotifyType, Payload, Proposal, ProtocolId, SaPayload, TrafficSelector,
    Transform, TransformType, TsPayload, locate_encrypted,
};

/// How long an old or redundant IKE SA waits for the peer's Delete before it is dropped.
const RETIRED_IKE_SA_LINGER: Duration = Duration::from_secs(60);
/// Shortest wait before retrying after TEMPORARY_FAILURE or STATE_NOT_FOUND (RFC 7296 §2.25:
/// "MUST NOT immediately retry"); up to the same again is added at random.
const RETRY_DELAY: Duration = Duration::from_secs(2);
/// INVALID_KE_PAYLOAD answers followed per exchange before giving up.
const MAX_INVALID_KE_RETRIES: u8 = 2;
/// Octets of the opaque link of ADDITIONAL_KEY_EXCHANGE we hand out.
const LINK_LEN: usize = 16;

/// What both roles configure for an established SA.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The construction and allowed methods: rekeys repeat every key exchange of it.
    pub(crate) policy: CryptoPolicy,
    /// ESP ciphers accepted when the peer rekeys a Child SA.
    pub(crate) esp: Vec<AeadAlgorithm>,
    pub(crate) retransmit: RetransmitConfig,
    pub(crate) fragment_size: usize,
    pub(crate) nonce_len: usize,
    pub(crate) ike_lifetime: Lifetime,
    pub(crate) child_lifetime: Lifetime,
    pub(crate) dpd_interval: Option<Duration>,
    /// Refuse Child SA rekeys without a key exchange (see `InitiatorConfig::require_child_pfs`).
    pub(crate) require_child_pfs: bool,
}

/// The keys and message ID state of one IKE SA.
pub(crate) struct IkeSa {
    pub(crate) spi_i: u64,
    pub(crate) spi_r: u64,
    /// Whether we are the original initiator of this IKE SA (RFC 7296 §2.18: the initiator of
    /// the rekey is the original initiator of the new SA).
    pub(crate) original_initiator: bool,
    pub(crate) choice: IkeChoice,
    pub(crate) prf: Box<dyn Prf>,
    pub(crate) sk_d: SecretBytes,
    pub(crate) cipher: SkCipher,
    pub(crate) peer_fragmentation: bool,
    /// Message ID of our next request.
    pub(crate) next_request_id: u32,
    /// Message ID of the peer's next request.
    pub(crate) expected_request_id: u32,
    /// Our last response, resent for a retransmitted request (RFC 7296 §2.1).
    pub(crate) last_response: Option<(u32, Vec<Vec<u8>>)>,
    /// When the cached response was last resent (see [`resend_allowed`]).
    last_resend: Option<Instant>,
    requests: Reassembly,
    responses: Reassembly,
    /// Our one outstanding request and what it is (window size 1).
    active: Option<(Outstanding, Exchange)>,
    /// When a retired SA is dropped even without a Delete.
    expires: Option<Instant>,
}

impl IkeSa {
    /// An IKE SA after IKE_AUTH.
    #[expect(clippy::too_many_arguments, reason = "every field of a fresh IKE SA")]
    pub(crate) fn new(
        spi_i: u64,
        spi_r: u64,
        original_initiator: bool,
        choice: IkeChoice,
        prf: Box<dyn Prf>,
        sk_d: SecretBytes,
        cipher: SkCipher,
        peer_fragmentation: bool,
        next_request_id: u32,
        expected_request_id: u32,
        last_response: Option<(u32, Vec<Vec<u8>>)>,
    ) -> Self {
        Self {
            spi_i,
            spi_r,
            original_initiator,
            choice,
            prf,
            sk_d,
            cipher,
            peer_fragmentation,
            next_request_id,
            expected_request_id,
            last_response,
            last_resend: None,
            requests: Reassembly::default(),
            responses: Reassembly::default(),
            active: None,
            expires: None,
        }
    }

    fn spis(&self) -> (u64, u64) {
        (self.spi_i, self.spi_r)
    }

    fn local_spi(&self) -> u64 {
        if self.original_initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    fn flags(&self, response: bool) -> Flags {
        Flags {
            initiator: self.original_initiator,
            version: false,
            response,
        }
    }

    fn header(&self, exchange: ExchangeType, response: bool, message_id: u32) -> Header {
        Header::new(
            self.spi_i,
            self.spi_r,
            exchange,
            self.flags(response),
            message_id,
        )
    }
}

/// One of our requests and the state it needs for the response.
enum Exchange {
    /// An empty INFORMATIONAL: a liveness check (RFC 7296 §2.4).
    Dpd,
    /// INFORMATIONAL Delete of these Child SAs (normalized SPI pairs).
    DeleteChildSa(Vec<(u32, u32)>),
    /// INFORMATIONAL Delete of the IKE SA it is sent on.
    DeleteIkeSa,
    /// CREATE_CHILD_SA with REKEY_SA, then IKE_FOLLOWUP_KE rounds.
    RekeyChildSa(Box<RekeyChildSa>),
    /// CREATE_CHILD_SA rekeying the IKE SA, then IKE_FOLLOWUP_KE rounds.
    RekeyIkeSa(Box<RekeyIkeSa>),
}

/// Things we want to send, each started when the window is free.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Intent {
    /// Rekey the Child SA with this normalized SPI pair.
    RekeyChildSa((u32, u32)),
    RekeyIkeSa,
    Dpd,
    DeleteChildSa(Vec<(u32, u32)>),
    DeleteIkeSa,
}

/// The key exchange rounds of one rekey: KE in CREATE_CHILD_SA, then each ADDKE in an
/// IKE_FOLLOWUP_KE (RFC 9370 §2.2.4).
struct Rounds {
    /// Methods of the rounds still to run after the current one.
    remaining: VecDeque<KeyExchangeMethod>,
    /// `SK(0)`, `SK(1)`, … so far.
    shared: Vec<SharedSecret>,
}

impl Rounds {
    fn secrets(&self) -> Vec<&SharedSecret> {
        self.shared.iter().collect()
    }
}

/// Our CREATE_CHILD_SA rekeying a Child SA ([RFC 7296 §1.3.3]).
///
/// [RFC 7296 §1.3.3]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.3
struct RekeyChildSa {
    /// The Child SA rekeyed (normalized SPI pair).
    old: (u32, u32),
    encr: AeadAlgorithm,
    /// Our inbound SPI of the new SA.
    new_spi: u32,
    nonce_i: Vec<u8>,
    ke: Box<dyn KeyExchange>,
    /// TSi and TSr as proposed (the exchange's view).
    ts_i: Vec<TrafficSelector>,
    ts_r: Vec<TrafficSelector>,
    answer: Option<ChildAnswer>,
    rounds: Rounds,
    invalid_ke_retries: u8,
}

/// What the responder answered to our Child SA rekey.
struct ChildAnswer {
    nonce_r: Vec<u8>,
    peer_spi: u32,
    esn: bool,
    ts_i: Vec<TrafficSelector>,
    ts_r: Vec<TrafficSelector>,
    link: Option<Vec<u8>>,
}

/// Our CREATE_CHILD_SA rekeying the IKE SA ([RFC 7296 §1.3.2]).
///
/// [RFC 7296 §1.3.2]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.2
struct RekeyIkeSa {
    new_spi_i: u64,
    nonce_i: Vec<u8>,
    ke: Box<dyn KeyExchange>,
    answer: Option<IkeAnswer>,
    rounds: Rounds,
    invalid_ke_retries: u8,
}

/// What the responder answered to our IKE SA rekey.
struct IkeAnswer {
    nonce_r: Vec<u8>,
    new_spi_r: u64,
    choice: IkeChoice,
    link: Option<Vec<u8>>,
}

/// A rekey the peer started whose IKE_FOLLOWUP_KE rounds are still to come.
struct PeerRekey {
    /// The IKE SA it runs on (our SPI).
    on: u64,
    /// When its CREATE_CHILD_SA arrived: the state is dropped a while after.
    since: Instant,
    /// The link we gave in our last response.
    link: Vec<u8>,
    nonce_i: Vec<u8>,
    nonce_r: Vec<u8>,
    rounds: Rounds,
    kind: PeerRekeyKind,
}

enum PeerRekeyKind {
    Child(ChildParts),
    Ike {
        new_spi_i: u64,
        new_spi_r: u64,
        choice: IkeChoice,
    },
}

/// A Child SA negotiated by a rekey, in the exchange's view (`_i` = exchange initiator).
struct ChildParts {
    old: (u32, u32),
    encr: AeadAlgorithm,
    esn: bool,
    spi_i: u32,
    spi_r: u32,
    ts_i: Vec<TrafficSelector>,
    ts_r: Vec<TrafficSelector>,
}

/// Where the two rekeys of a collision stand (RFC 7296 §2.8.1): the lowest nonce of each
/// exchange, once known. The exchange holding the lowest of the four nonces made the redundant
/// SA.
#[derive(Debug, Default)]
struct Collision {
    ours: Option<Vec<u8>>,
    theirs: Option<Vec<u8>>,
}

impl Collision {
    /// `Some(true)` if our exchange made the redundant SA, once both are known.
    fn we_lost(&self) -> Option<bool> {
        Some(self.ours.as_ref()? < self.theirs.as_ref()?)
    }
}

/// A Child SA and its timers.
struct ChildSa {
    sa: ChildSaEstablished,
    rekey_at: Instant,
    expire_at: Instant,
    /// A completed rekey replaced it; the Delete is on its way.
    replaced: bool,
    /// We sent a Delete for it.
    deleting: bool,
    /// A rekey collision with the peer, while ours runs.
    collision: Option<Collision>,
}

/// How an established tunnel stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Up,
    Closed,
    Failed,
}

/// Test-only misbehaviour.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Every message this side protected: header and inner payloads in clear.
    pub(crate) sent: Vec<(Header, Vec<Payload>)>,
    /// Forget the state of a peer's rekey before its next IKE_FOLLOWUP_KE (answer
    /// STATE_NOT_FOUND).
    pub(crate) forget_followup_state: bool,
    /// Send KEi of the next Child SA rekey with this method (after INVALID_KE_PAYLOAD the
    /// right one is used).
    pub(crate) child_rekey_ke: Option<KeyExchangeMethod>,
    /// Answer every CREATE_CHILD_SA request with NO_PROPOSAL_CHOSEN (a peer that will not
    /// rekey).
    pub(crate) refuse_create_child_sa: bool,
    /// Offer only this PFS level in our Child SA rekeys (a peer configured that way).
    pub(crate) child_rekey_offer: Option<Pfs>,
}

/// The earliest of the instants pushed, without allocating (`poll_timeout` runs often).
#[derive(Default)]
struct Earliest(Option<Instant>);

impl Earliest {
    fn push(&mut self, at: Instant) {
        self.0 = Some(self.0.map_or(at, |e| e.min(at)));
    }

    fn extend(&mut self, all: impl IntoIterator<Item = Instant>) {
        for at in all {
            self.push(at);
        }
    }
}

/// Every IKE SA and Child SA of one tunnel after IKE_AUTH, and the exchanges between them.
pub(crate) struct EstablishedSa {
    provider: Arc<dyn CryptoProvider>,
    settings: Settings,
    /// Whether we started the first IKE SA (the client): fixes the `_i`/`_r` naming of Child
    /// SAs in events.
    is_client: bool,
    pub(crate) remote: SocketAddr,
    pub(crate) nat_t: bool,
    /// All IKE SAs; `current` names the one new requests go on.
    sas: Vec<IkeSa>,
    current: (u64, u64),
    suite: Suite,
    ike_rekey_at: Instant,
    ike_expire_at: Instant,
    /// A collision of IKE SA rekeys (RFC 7296 §2.8.2).
    ike_collision: Option<Collision>,
    /// The SPIs of a new IKE SA the peer made while our own IKE rekey had not settled yet.
    held_successor: Option<(u64, u64)>,
    children: Vec<ChildSa>,
    queue: VecDeque<Intent>,
    retries: Vec<(Instant, Intent)>,
    peer_rekey: Option<PeerRekey>,
    last_inbound: Instant,
    last_probe: Instant,
    status: Status,
    pub(crate) outbox: Outbox,
    pub(crate) events: VecDeque<Event>,
    /// Inbound ESP SPIs of the other IKE SAs' Child SAs, lent by the responder for each call so
    /// that a new Child SA never takes one (security review L4); empty for the client.
    pub(crate) spis_in_use: HashSet<u32>,
    #[cfg(test)]
    pub(crate) faults: Faults,
}

impl core::fmt::Debug for EstablishedSa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EstablishedSa")
            .field("current", &self.current)
            .field("sas", &self.sas.len())
            .field("children", &self.children.len())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// The methods of a construction's rounds: the negotiated KE first, then each ADDKE.
fn rounds_after(choice: &IkeChoice) -> VecDeque<KeyExchangeMethod> {
    choice.addke.iter().copied().collect()
}

/// `(spi, ...)` with the `_i` and `_r` halves swapped: between the exchange's view and the
/// client's view of a Child SA.
fn swap_view(sa: ChildSaEstablished) -> ChildSaEstablished {
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

fn payload_ke(payloads: &[Payload]) -> Option<&KePayload> {
    payloads.iter().find_map(|p| match p {
        Payload::Ke(k) => Some(k),
        _ => None,
    })
}

fn payload_nonce(payloads: &[Payload]) -> Option<&Nonce> {
    payloads.iter().find_map(|p| match p {
        Payload::Nonce(n) => Some(n),
        _ => None,
    })
}

fn payload_sa(payloads: &[Payload]) -> Option<&SaPayload> {
    payloads.iter().find_map(|p| match p {
        Payload::Sa(s) => Some(s),
        _ => None,
    })
}

fn payload_ts(payloads: &[Payload]) -> (Option<&TsPayload>, Option<&TsPayload>) {
    let ts_i = payloads.iter().find_map(|p| match p {
        Payload::TsI(t) => Some(t),
        _ => None,
    });
    let ts_r = payloads.iter().find_map(|p| match p {
        Payload::TsR(t) => Some(t),
        _ => None,
    });
    (ts_i, ts_r)
}

fn link_of(payloads: &[Payload]) -> Option<Vec<u8>> {
    find_notify(payloads, NotifyType::AdditionalKeyExchange).map(|n| n.data.clone())
}

fn link_notify(link: Vec<u8>) -> Payload {
    Payload::Notify(NotifyPayload::status(
        NotifyType::AdditionalKeyExchange,
        link,
    ))
}

fn ke_payload(ke: &dyn KeyExchange) -> Payload {
    Payload::Ke(KePayload {
        method: ke.method(),
        data: ke.public_value().to_vec(),
    })
}

fn nonce_payload(nonce: &[u8]) -> Result<Payload, Error> {
    Ok(Payload::Nonce(Nonce::new(nonce.to_vec())?))
}

/// The lower of two nonces, compared as octet strings.
fn min_nonce(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.min(b).to_vec()
}

/// The ESP proposal of a Child SA rekey: the old SA's cipher, no ESN, and the key exchange of
/// every round for PFS (RFC 7296 §1.3.3, RFC 9370 §2.2.1).
fn esp_rekey_proposal(
    encr: AeadAlgorithm,
    spi: u32,
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

fn offers_method(proposal: &Proposal, t: TransformType, m: KeyExchangeMethod) -> bool {
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
    fn addke(self, addke: &[KeyExchangeMethod]) -> &[KeyExchangeMethod] {
        if self == Self::Full { addke } else { &[] }
    }
}

/// The PFS level a proposal asks for, `None` when it is none of ours (some but not all of our
/// additional key exchanges, or additional ones without a KE).
fn pfs_of(proposal: &Proposal, addke: &[KeyExchangeMethod]) -> Option<Pfs> {
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
fn select_pfs(
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
fn check_pfs_answer(
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

impl EstablishedSa {
    /// Takes over an IKE SA that just completed IKE_AUTH, with the Child SA it created.
    #[expect(clippy::too_many_arguments, reason = "the whole outcome of IKE_AUTH")]
    pub(crate) fn new(
        provider: Arc<dyn CryptoProvider>,
        settings: Settings,
        is_client: bool,
        now: Instant,
        remote: SocketAddr,
        nat_t: bool,
        ike: IkeSa,
        suite: Suite,
        child: Option<ChildSaEstablished>,
    ) -> Self {
        let mut this = Self {
            provider,
            is_client,
            remote,
            nat_t,
            current: ike.spis(),
            sas: vec![ike],
            suite,
            ike_rekey_at: now,
            ike_expire_at: now,
            ike_collision: None,
            held_successor: None,
            children: Vec::new(),
            queue: VecDeque::new(),
            retries: Vec::new(),
            peer_rekey: None,
            last_inbound: now,
            last_probe: now,
            status: Status::Up,
            outbox: Outbox::default(),
            events: VecDeque::new(),
            spis_in_use: HashSet::new(),
            settings,
            #[cfg(test)]
            faults: Faults::default(),
        };
        this.reset_ike_timers(now);
        if let Some(child) = child {
            this.add_child(now, child);
        }
        this
    }

    pub(crate) fn status(&self) -> Status {
        self.status
    }

    /// The SPIs of the current IKE SA.
    pub(crate) fn spis(&self) -> (u64, u64) {
        self.current
    }

    /// Whether `spi` is our inbound SPI of a Child SA, of this IKE SA or (lent) another.
    fn esp_spi_taken(&self, spi: u32) -> bool {
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

    /// Our SPI of every IKE SA held, for demultiplexing.
    pub(crate) fn local_spis(&self) -> Vec<u64> {
        self.sas.iter().map(IkeSa::local_spi).collect()
    }

    /// The negotiated algorithms.
    pub(crate) fn suite(&self) -> &Suite {
        &self.suite
    }

    /// The Child SAs up, in the client's view.
    pub(crate) fn child_sas(&self) -> impl Iterator<Item = &ChildSaEstablished> {
        self.children.iter().map(|c| &c.sa)
    }

    /// A point `lifetime.rekey` minus random jitter after `now`.
    fn rekey_time(&self, now: Instant, lifetime: &Lifetime) -> Instant {
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

    fn reset_ike_timers(&mut self, now: Instant) {
        let lifetime = self.settings.ike_lifetime;
        self.ike_rekey_at = self.rekey_time(now, &lifetime);
        self.ike_expire_at = now + lifetime.hard;
    }

    fn add_child(&mut self, now: Instant, sa: ChildSaEstablished) {
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

    fn pair(sa: &ChildSaEstablished) -> (u32, u32) {
        (sa.spi_i, sa.spi_r)
    }

    /// Our inbound and the peer's inbound SPI of a normalized pair.
    fn in_out(&self, pair: (u32, u32)) -> (u32, u32) {
        if self.is_client {
            pair
        } else {
            (pair.1, pair.0)
        }
    }

    fn child_index(&self, pair: (u32, u32)) -> Option<usize> {
        self.children.iter().position(|c| Self::pair(&c.sa) == pair)
    }

    /// The Child SA whose peer-inbound SPI is `spi` (what the peer names in REKEY_SA and
    /// Delete).
    fn child_by_peer_spi(&self, spi: u32) -> Option<usize> {
        self.children
            .iter()
            .position(|c| self.in_out(Self::pair(&c.sa)).1 == spi)
    }

    fn current_index(&self) -> Option<usize> {
        self.sas.iter().position(|s| s.spis() == self.current)
    }

    fn fail(&mut self, error: Error) {
        if self.status != Status::Up {
            return;
        }
        self.status = Status::Failed;
        self.sas.clear();
        self.queue.clear();
        self.retries.clear();
        self.outbox.clear();
        self.events.push_back(Event::Failed(error));
    }

    fn closed(&mut self) {
        if self.status != Status::Up {
            return;
        }
        self.status = Status::Closed;
        self.sas.clear();
        self.queue.clear();
        self.retries.clear();
        self.events.push_back(Event::Closed);
    }

    fn retry_delay(&self) -> Duration {
        let mut b = [0u8; 2];
        let fraction = match self.provider.fill_random(&mut b) {
            Ok(()) => f64::from(u16::from_be_bytes(b)) / f64::from(u16::MAX),
            Err(_) => 0.5,
        };
        RETRY_DELAY + RETRY_DELAY.mul_f64(fraction)
    }

    fn enqueue(&mut self, intent: Intent) {
        if !self.queue.contains(&intent) {
            self.queue.push_back(intent);
        }
    }

    // ------------------------------------------------------------------ inputs

    /// The driver saw an authentic ESP packet from the peer: it is alive.
    pub(crate) fn handle_inbound_traffic(&mut self, now: Instant) {
        self.last_inbound = self.last_inbound.max(now);
    }

    /// Queues a rekey of the Child SA one of whose SPIs is `spi` (the ESP layer's soft limit).
    pub(crate) fn rekey_child_sa(&mut self, now: Instant, spi: u32) -> Result<(), Error> {
        let pair = self
            .children
            .iter()
            .find(|c| c.sa.spi_i == spi || c.sa.spi_r == spi)
            .map(|c| Self::pair(&c.sa))
            .ok_or(Error::ApiMisuse("no Child SA with this SPI"))?;
        self.enqueue(Intent::RekeyChildSa(pair));
        self.start_next(now);
        Ok(())
    }

    /// Queues a rekey of the IKE SA.
    pub(crate) fn rekey_ike_sa(&mut self, now: Instant) {
        self.enqueue(Intent::RekeyIkeSa);
        self.start_next(now);
    }

    /// Deletes the IKE SA (and with it every Child SA); [`Event::Closed`] follows the peer's
    /// answer or the last retransmission.
    pub(crate) fn close(&mut self, now: Instant) {
        if self.status != Status::Up {
            return;
        }
        self.queue.clear();
        self.retries.clear();
        self.queue.push_front(Intent::DeleteIkeSa);
        self.start_next(now);
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
        for c in &self.children {
            if !c.replaced && !c.deleting && c.rekey_at < c.expire_at {
                next.push(c.rekey_at);
            }
            if !rekeying.contains(&Self::pair(&c.sa)) {
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
        next.0
    }

    /// Retransmissions, lifetimes, liveness checks and retries that are due.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.status != Status::Up {
            return;
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
        let mut due = Vec::new();
        let rekeying: Vec<(u32, u32)> = self.rekeys_in_flight();
        for c in &mut self.children {
            if now >= c.expire_at && !rekeying.contains(&Self::pair(&c.sa)) {
                expired.push(Self::pair(&c.sa));
            } else if now >= c.rekey_at && !c.replaced && !c.deleting {
                c.rekey_at = c.expire_at;
                due.push(Self::pair(&c.sa));
            }
        }
        for pair in due {
            self.enqueue(Intent::RekeyChildSa(pair));
        }
        if !expired.is_empty() {
            // Hard lifetime: the SA is unusable; tell the driver now, the peer with a Delete.
            for &pair in &expired {
                self.remove_child(pair);
            }
            self.queue.retain(|i| match i {
                Intent::RekeyChildSa(p) => !expired.contains(p),
                _ => true,
            });
            self.enqueue(Intent::DeleteChildSa(expired));
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
    fn rekeys_in_flight(&self) -> Vec<(u32, u32)> {
        let ours = self.sas.iter().filter_map(|s| match &s.active {
            Some((_, Exchange::RekeyChildSa(x))) => Some(x.old),
            _ => None,
        });
        let theirs = self.peer_rekey.iter().filter_map(|p| match &p.kind {
            PeerRekeyKind::Child(parts) => Some(parts.old),
            PeerRekeyKind::Ike { .. } => None,
        });
        ours.chain(theirs).collect()
    }

    fn remove_child(&mut self, pair: (u32, u32)) -> bool {
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

    // ------------------------------------------------------------------ sending

    fn max_message(&self, sa: &IkeSa) -> Option<usize> {
        if !sa.peer_fragmentation {
            return None;
        }
        let ip_udp = match self.remote.ip() {
            IpAddr::V4(_) => 20 + 8,
            IpAddr::V6(_) => 40 + 8,
        };
        let marker = if self.nat_t { 4 } else { 0 };
        Some(self.settings.fragment_size.saturating_sub(ip_udp + marker))
    }

    fn send_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        exchange_type: ExchangeType,
        inner: &[Payload],
        exchange: Exchange,
    ) -> Result<(), Error> {
        let message_id = sa.next_request_id;
        let header = sa.header(exchange_type, false, message_id);
        #[cfg(test)]
        self.faults.sent.push((header, inner.to_vec()));
        let max = self.max_message(sa);
        let protected = sa.cipher.protect(&header, inner, max)?;
        sa.next_request_id = message_id
            .checked_add(1)
            .ok_or(Error::ApiMisuse("message IDs exhausted"))?;
        for d in &protected.datagrams {
            self.outbox.push(self.remote, self.nat_t, d.clone());
        }
        let outstanding = Outstanding::new(
            now,
            &self.settings.retransmit,
            message_id,
            protected.datagrams,
        );
        sa.active = Some((outstanding, exchange));
        Ok(())
    }

    fn send_response(
        &mut self,
        sa: &mut IkeSa,
        exchange_type: ExchangeType,
        message_id: u32,
        inner: &[Payload],
    ) -> Result<(), Error> {
        let header = sa.header(exchange_type, true, message_id);
        #[cfg(test)]
        self.faults.sent.push((header, inner.to_vec()));
        let max = self.max_message(sa);
        let protected = sa.cipher.protect(&header, inner, max)?;
        for d in &protected.datagrams {
            self.outbox.push(self.remote, self.nat_t, d.clone());
        }
        sa.last_response = Some((message_id, protected.datagrams));
        Ok(())
    }

    /// Starts queued requests while the current SA's window is free.
    fn start_next(&mut self, now: Instant) {
        while self.status == Status::Up {
            let Some(i) = self.current_index() else {
                return;
            };
            let free = self.sas.get(i).is_some_and(|s| s.active.is_none());
            // A rekey the peer runs with IKE_FOLLOWUP_KE blocks our rekeys (TEMPORARY_FAILURE
            // would only bounce them).
            if !free {
                return;
            }
            let Some(intent) = self.queue.pop_front() else {
                return;
            };
            if self.peer_rekey.is_some()
                && matches!(intent, Intent::RekeyChildSa(_) | Intent::RekeyIkeSa)
            {
                self.queue.push_front(intent);
                return;
            }
            let mut sa = self.sas.swap_remove(i);
            let result = self.start(now, &mut sa, intent);
            self.sas.push(sa);
            if let Err(e) = result {
                self.fail(e);
            }
        }
    }

    fn start(&mut self, now: Instant, sa: &mut IkeSa, intent: Intent) -> Result<(), Error> {
        match intent {
            Intent::Dpd => {
                self.last_probe = now;
                self.send_request(now, sa, ExchangeType::Informational, &[], Exchange::Dpd)
            }
            Intent::DeleteIkeSa => self.send_request(
                now,
                sa,
                ExchangeType::Informational,
                &[Payload::Delete(DeletePayload::ike())],
                Exchange::DeleteIkeSa,
            ),
            Intent::DeleteChildSa(pairs) => {
                let inbound: Vec<u32> = pairs.iter().map(|&p| self.in_out(p).0).collect();
                for &p in &pairs {
                    if let Some(i) = self.child_index(p)
                        && let Some(c) = self.children.get_mut(i)
                    {
                        c.deleting = true;
                    }
                }
                self.send_request(
                    now,
                    sa,
                    ExchangeType::Informational,
                    &[Payload::Delete(DeletePayload::esp(&inbound))],
                    Exchange::DeleteChildSa(pairs),
                )
            }
            Intent::RekeyChildSa(pair) => self.start_child_rekey(now, sa, pair, None, 0),
            Intent::RekeyIkeSa => self.start_ike_rekey(now, sa, None, 0),
        }
    }

    // ------------------------------------------------------------------ Child SA rekey, ours

    fn start_child_rekey(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        pair: (u32, u32),
        method: Option<KeyExchangeMethod>,
        invalid_ke_retries: u8,
    ) -> Result<(), Error> {
        let Some(child) = self.child_index(pair).and_then(|i| self.children.get(i)) else {
            return Ok(()); // deleted meanwhile
        };
        if child.replaced || child.deleting {
            return Ok(());
        }
        let (encr, old_in) = (child.sa.encr, self.in_out(pair).0);
        // TSi is the exchange initiator's side.
        let (ts_i, ts_r) = if self.is_client {
            (child.sa.ts_i.clone(), child.sa.ts_r.clone())
        } else {
            (child.sa.ts_r.clone(), child.sa.ts_i.clone())
        };
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
        let nonce_i = random_bytes(&*self.provider, self.settings.nonce_len.clamp(16, 256))?;
        let proposals = self.child_rekey_proposals(encr, new_spi, &offered, &choice.addke);
        // KEi goes with offers that have a KE (RFC 7296 §1.3.1).
        let with_ke = proposals
            .iter()
            .any(|p| pfs_of(p, &choice.addke).is_some_and(|l| l != Pfs::None));
        let mut inner = vec![
            Payload::Notify(NotifyPayload {
                protocol_id: ProtocolId::Esp,
                spi: old_in.to_be_bytes().to_vec(),
                notify_type: NotifyType::RekeySa,
                data: Vec::new(),
            }),
            Payload::Sa(SaPayload { proposals }),
            nonce_payload(&nonce_i)?,
        ];
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
            old: pair,
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
        };
        self.send_request(
            now,
            sa,
            ExchangeType::CreateChildSa,
            &inner,
            Exchange::RekeyChildSa(Box::new(exchange)),
        )
    }

    /// Our Child SA rekey offers: every key exchange of the IKE SA first; unless PFS is
    /// required, then the KE alone (a gateway with a classical PFS group) and none (a gateway
    /// configured without PFS). KEi goes with the first two (RFC 7296 §1.3.1).
    fn child_rekey_proposals(
        &self,
        encr: AeadAlgorithm,
        spi: u32,
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

    /// A response to our Child SA rekey (CREATE_CHILD_SA or IKE_FOLLOWUP_KE).
    fn on_child_rekey_response(
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
            if let Some(c) = self
                .child_index(x.old)
                .and_then(|i| self.children.get_mut(i))
                && let Some(collision) = c.collision.as_mut()
                && let Some(a) = &x.answer
            {
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
        let link = link_of(payloads);
        if let Some(method) = x.rounds.remaining.pop_front() {
            // Another round: the response must carry the link (RFC 9370 §2.2.4).
            let link = link.ok_or(Error::MissingPayload("ADDITIONAL_KEY_EXCHANGE"))?;
            x.ke = self.provider.start_key_exchange(method)?;
            let inner = [link_notify(link.clone()), ke_payload(&*x.ke)];
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
        };
        let secrets = x.rounds.secrets();
        self.complete_child_rekey(now, sa, true, parts, &x.nonce_i, &answer.nonce_r, &secrets)
    }

    /// The peer answered our Child SA rekey with an error Notify.
    fn child_rekey_refused(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        x: &RekeyChildSa,
        error: NotifyType,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        self.clear_child_collision(x.old);
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
                        self.start_child_rekey(now, sa, x.old, Some(m), x.invalid_ke_retries + 1)
                    }
                    _ => {
                        self.events
                            .push_back(Event::ChildSaFailed(Error::NotifyReceived(
                                NotifyType::InvalidKePayload,
                            )));
                        Ok(())
                    }
                }
            }
            // Someone else is rekeying or deleting: try again later (RFC 7296 §2.25); after
            // STATE_NOT_FOUND the exchange is void and is run again (RFC 9370 §2.2.4).
            NotifyType::TemporaryFailure | NotifyType::StateNotFound => {
                let at = now + self.retry_delay();
                self.retries.push((at, Intent::RekeyChildSa(x.old)));
                Ok(())
            }
            // The peer no longer has it (RFC 7296 §2.25).
            NotifyType::ChildSaNotFound => {
                self.remove_child(x.old);
                Ok(())
            }
            other => {
                self.events
                    .push_back(Event::ChildSaFailed(Error::NotifyReceived(other)));
                Ok(())
            }
        }
    }

    fn clear_child_collision(&mut self, pair: (u32, u32)) {
        if let Some(c) = self
            .child_index(pair)
            .and_then(|i| self.children.get_mut(i))
        {
            c.collision = None;
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
    fn complete_child_rekey(
        &mut self,
        now: Instant,
        sa: &IkeSa,
        we_initiated: bool,
        parts: ChildParts,
        nonce_i: &[u8],
        nonce_r: &[u8],
        shared: &[&SharedSecret],
    ) -> Result<(), Error> {
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
        let new = if we_initiated == self.is_client {
            exchange_view
        } else {
            swap_view(exchange_view)
        };
        let new_pair = Self::pair(&new);
        let old = parts.old;
        let collision = self
            .child_index(old)
            .and_then(|i| self.children.get_mut(i))
            .and_then(|c| {
                if we_initiated {
                    c.collision.take()
                } else {
                    None
                }
            });
        if we_initiated && collision.as_ref().and_then(Collision::we_lost) == Some(true) {
            // Our SA is the redundant one: we made it, we delete it (RFC 7296 §2.8.1). It was
            // never announced; the peer's SA replaces the old one.
            self.add_child(now, new);
            if let Some(c) = self
                .child_index(new_pair)
                .and_then(|i| self.children.get_mut(i))
            {
                c.replaced = true;
            }
            self.enqueue(Intent::DeleteChildSa(vec![new_pair]));
            self.children.retain(|c| Self::pair(&c.sa) != new_pair);
            return Ok(());
        }
        self.events.push_back(Event::ChildSaRekeyed {
            old,
            new: Box::new(new.clone()),
        });
        self.add_child(now, new);
        if let Some(c) = self.child_index(old).and_then(|i| self.children.get_mut(i)) {
            c.replaced = true;
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

    // ------------------------------------------------------------------ IKE SA rekey, ours

    fn start_ike_rekey(
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
        let nonce_i = random_bytes(&*self.provider, self.settings.nonce_len.clamp(16, 256))?;
        let mut proposal = self.rekey_policy(&choice, ke_method).ike_proposal();
        proposal.spi = new_spi_i.to_be_bytes().to_vec();
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
    fn rekey_policy(&self, choice: &IkeChoice, first: KeyExchangeMethod) -> CryptoPolicy {
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

    fn on_ike_rekey_response(
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
                .map(u64::from_be_bytes)
                .ok()
                .filter(|&s| s != 0)
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
        if let Some(method) = x.rounds.remaining.pop_front() {
            let link = link_of(payloads).ok_or(Error::MissingPayload("ADDITIONAL_KEY_EXCHANGE"))?;
            x.ke = self.provider.start_key_exchange(method)?;
            let inner = [link_notify(link.clone()), ke_payload(&*x.ke)];
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

    fn ike_rekey_refused(
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
    fn derive_ike_sa(
        &self,
        old: &IkeSa,
        we_initiated: bool,
        new_spi_i: u64,
        new_spi_r: u64,
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
        Ok(IkeSa::new(
            new_spi_i,
            new_spi_r,
            we_initiated,
            choice,
            prf,
            keys.sk_d,
            cipher,
            old.peer_fragmentation,
            0,
            0,
            None,
        ))
    }

    /// Puts a new IKE SA in place, or aside if a collision made it redundant (RFC 7296
    /// §2.8.2). `old` is the SA the rekey ran on, taken out of `sas`.
    fn install_ike_sa(
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

    fn own_ike_rekey_running(&self, taken_out: &IkeSa) -> bool {
        self.sas
            .iter()
            .chain(core::iter::once(taken_out))
            .any(|s| matches!(s.active, Some((_, Exchange::RekeyIkeSa(_)))))
    }

    /// Our IKE rekey ended without a new SA: a held successor from the peer takes over.
    fn settle_held(&mut self, now: Instant) {
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

    // ------------------------------------------------------------------ receiving

    /// Processes a protected message for one of our IKE SAs. Returns `false` if it belongs to
    /// none of them. `from` is where it came from (address, NAT-T) when a new authentic request
    /// may move the peer ([RFC 7296 §2.23]): it is taken only after the integrity check, never
    /// from a retransmission or a forgery; `None` keeps the peer where it is.
    ///
    /// [RFC 7296 §2.23]: https://www.rfc-editor.org/rfc/rfc7296#section-2.23
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: Option<(SocketAddr, bool)>,
        header: &Header,
        datagram: &[u8],
    ) -> bool {
        if self.status != Status::Up {
            return false;
        }
        // The I flag says who sent it: its original initiator, so we are the responder.
        let we_original_initiator = !header.flags.initiator;
        let Some(i) = self.sas.iter().position(|s| {
            s.spis() == (header.spi_i, header.spi_r)
                && s.original_initiator == we_original_initiator
        }) else {
            return false;
        };
        let mut sa = self.sas.swap_remove(i);
        let keep = if header.flags.response {
            self.on_response(now, &mut sa, header, datagram)
        } else {
            self.on_request(now, from, &mut sa, header, datagram)
        };
        if keep && self.status == Status::Up {
            self.sas.push(sa);
        }
        self.start_next(now);
        true
    }

    fn decrypt(
        sa: &mut IkeSa,
        response: bool,
        datagram: &[u8],
    ) -> Result<Option<Unprotected>, Error> {
        let Ok(Some(view)) = locate_encrypted(datagram) else {
            return Ok(None);
        };
        let reassembly = if response {
            &mut sa.responses
        } else {
            &mut sa.requests
        };
        match unprotect(&sa.cipher, reassembly, &view) {
            Ok(u) => Ok(u),
            Err(Error::IntegrityCheckFailed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Returns whether `sa` stays.
    fn on_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        header: &Header,
        datagram: &[u8],
    ) -> bool {
        if sa.active.as_ref().map(|(o, _)| o.message_id) != Some(header.message_id) {
            return true;
        }
        let message = match Self::decrypt(sa, true, datagram) {
            Ok(Some(m)) => m,
            Ok(None) => return true,
            Err(e) => {
                self.fail(e);
                return false;
            }
        };
        self.last_inbound = self.last_inbound.max(now);
        let Some((_, exchange)) = sa.active.take() else {
            return true;
        };
        let payloads = &message.payloads;
        let result = match exchange {
            Exchange::Dpd => Ok(()),
            Exchange::DeleteChildSa(pairs) => {
                for pair in pairs {
                    self.remove_child(pair);
                }
                Ok(())
            }
            Exchange::DeleteIkeSa => {
                if sa.spis() == self.current {
                    self.closed();
                }
                return false;
            }
            Exchange::RekeyChildSa(x) => self.on_child_rekey_response(now, sa, x, payloads),
            Exchange::RekeyIkeSa(x) => self.on_ike_rekey_response(now, sa, x, payloads),
        };
        match result {
            Ok(()) => true,
            // draft-ietf-ipsecme-ikev2-mlkem §2.2 and RFC 7296 §2.21.3: a failed key exchange
            // or malformed answer in CREATE_CHILD_SA/IKE_FOLLOWUP_KE ends the IKE SA, with a
            // Delete.
            Err(e @ (Error::Crypto(_) | Error::Malformed(_) | Error::KeySchedule(_))) => {
                let _ = self.send_request(
                    now,
                    sa,
                    ExchangeType::Informational,
                    &[Payload::Delete(DeletePayload::ike())],
                    Exchange::DeleteIkeSa,
                );
                let pending = core::mem::take(&mut self.outbox);
                self.fail(e);
                self.outbox = pending;
                false
            }
            Err(e) => {
                self.events.push_back(Event::ChildSaFailed(e));
                true
            }
        }
    }

    /// Returns whether `sa` stays.
    fn on_request(
        &mut self,
        now: Instant,
        from: Option<(SocketAddr, bool)>,
        sa: &mut IkeSa,
        header: &Header,
        datagram: &[u8],
    ) -> bool {
        let mid = header.message_id;
        if mid.wrapping_add(1) == sa.expected_request_id
            && let Some((cached, datagrams)) = &sa.last_response
            && *cached == mid
        {
            // A retransmission: the cached response, to the address we know, once per
            // authentic request and rate-limited (RFC 7296 §2.1, RFC 7383 §2.6.1).
            if resend_allowed(&sa.cipher, datagram, &mut sa.last_resend, now) {
                for d in datagrams.clone() {
                    self.outbox.push(self.remote, self.nat_t, d);
                }
            }
            return true;
        }
        if mid != sa.expected_request_id {
            return true;
        }
        let message = match Self::decrypt(sa, false, datagram) {
            Ok(Some(m)) => m,
            Ok(None) => return true,
            Err(e) => {
                // Authentic but unparsable: answer with the error, keep the SA.
                if let Some(n) = e.notify_payload() {
                    let _ =
                        self.send_response(sa, header.exchange_type, mid, &[Payload::Notify(n)]);
                    sa.expected_request_id = mid.wrapping_add(1);
                }
                return true;
            }
        };
        self.last_inbound = self.last_inbound.max(now);
        sa.expected_request_id = mid.wrapping_add(1);
        if let Some((remote, nat_t)) = from {
            // Authentic and new: responses go where it came from (RFC 7296 §2.11, §2.23).
            self.remote = remote;
            self.nat_t = nat_t;
        }
        let payloads = &message.payloads;
        let answer = match header.exchange_type {
            ExchangeType::Informational => self.on_informational(now, sa, payloads),
            ExchangeType::CreateChildSa => self.on_create_child_sa(now, sa, payloads),
            ExchangeType::IkeFollowupKe => self.on_followup_ke(now, sa, payloads),
            _ => Err(Error::PeerMisbehaved(
                "unexpected exchange on an established IKE SA",
            )),
        };
        let (inner, after) = match answer {
            Ok(a) => a,
            Err(e) => {
                let n = e.notify_payload().unwrap_or_else(|| {
                    NotifyPayload::status(NotifyType::InvalidSyntax, Vec::new())
                });
                (vec![Payload::Notify(n)], After::Nothing)
            }
        };
        if let Err(e) = self.send_response(sa, header.exchange_type, mid, &inner) {
            self.fail(e);
            return false;
        }
        match after {
            After::Nothing => true,
            After::DropSa => {
                if sa.spis() == self.current {
                    if self.held_successor.is_some() {
                        self.settle_held(now);
                    } else {
                        self.closed();
                    }
                }
                if matches!(sa.active, Some((_, Exchange::RekeyIkeSa(_)))) {
                    self.settle_held(now);
                }
                // Keep it briefly to answer a retransmitted Delete.
                sa.active = None;
                sa.expires = Some(now + RETIRED_IKE_SA_LINGER.min(Duration::from_secs(10)));
                sa.spis() != self.current || self.status == Status::Up
            }
            After::Complete(done) => match self.complete_peer_rekey(now, sa, *done) {
                Ok(()) => true,
                Err(e) => {
                    self.fail(e);
                    false
                }
            },
        }
    }

    // ------------------------------------------------------------------ peer's requests

    /// INFORMATIONAL: liveness checks get an empty answer; Delete of Child SAs is answered
    /// with the Delete of our halves; Delete of the IKE SA ends it (RFC 7296 §1.4.1).
    fn on_informational(
        &mut self,
        _now: Instant,
        sa: &mut IkeSa,
        payloads: &[Payload],
    ) -> Result<(Vec<Payload>, After), Error> {
        let mut ours = Vec::new();
        for p in payloads {
            let Payload::Delete(d) = p else {
                continue;
            };
            match d.protocol_id {
                ProtocolId::Ike => return Ok((Vec::new(), After::DropSa)),
                ProtocolId::Esp => {
                    for spi in &d.spis {
                        let Ok(spi) = <[u8; 4]>::try_from(spi.as_slice()) else {
                            continue;
                        };
                        let Some(i) = self.child_by_peer_spi(u32::from_be_bytes(spi)) else {
                            continue;
                        };
                        let Some(c) = self.children.get(i) else {
                            continue;
                        };
                        let pair = Self::pair(&c.sa);
                        // If we are deleting it too, our request carries our half already.
                        if !c.deleting {
                            ours.push(self.in_out(pair).0);
                        }
                        self.remove_child(pair);
                    }
                }
                _ => {}
            }
        }
        let _ = sa;
        let inner = if ours.is_empty() {
            Vec::new()
        } else {
            vec![Payload::Delete(DeletePayload::esp(&ours))]
        };
        Ok((inner, After::Nothing))
    }

    /// CREATE_CHILD_SA from the peer: a Child SA rekey (REKEY_SA) or an IKE SA rekey (an IKE
    /// proposal). New Child SAs are refused with NO_ADDITIONAL_SAS.
    fn on_create_child_sa(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        payloads: &[Payload],
    ) -> Result<(Vec<Payload>, After), Error> {
        let sa_payload = payload_sa(payloads).ok_or(Error::MissingPayload("SA"))?;
        let nonce_i = payload_nonce(payloads)
            .ok_or(Error::MissingPayload("Nonce"))?
            .as_bytes()
            .to_vec();
        if sa.spis() != self.current || self.peer_rekey.is_some() {
            return Err(Error::ExchangeInProgress);
        }
        #[cfg(test)]
        if self.faults.refuse_create_child_sa {
            return Err(Error::NoProposalChosen);
        }
        if sa_payload
            .proposals
            .iter()
            .any(|p| p.protocol_id == ProtocolId::Ike)
        {
            return self.on_ike_rekey_request(now, sa, sa_payload, nonce_i, payloads);
        }
        let rekey = find_notify(payloads, NotifyType::RekeySa).ok_or(Error::NoAdditionalSas)?;
        let spi = <[u8; 4]>::try_from(rekey.spi.as_slice())
            .map(u32::from_be_bytes)
            .map_err(|_| Error::PeerMisbehaved("REKEY_SA without a 4-octet SPI"))?;
        self.on_child_rekey_request(now, sa, spi, sa_payload, nonce_i, payloads)
    }

    fn on_child_rekey_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        peer_spi_of_old: u32,
        sa_payload: &SaPayload,
        nonce_i: Vec<u8>,
        payloads: &[Payload],
    ) -> Result<(Vec<Payload>, After), Error> {
        let i = self
            .child_by_peer_spi(peer_spi_of_old)
            .ok_or(Error::ChildSaNotFound)?;
        let child = self.children.get(i).ok_or(Error::ChildSaNotFound)?;
        let old = Self::pair(&child.sa);
        // RFC 7296 §2.25.1: rekeying one we are closing, or already replaced → later; §2.25.2:
        // not while the IKE SA is being rekeyed.
        if child.deleting
            || child.replaced
            || matches!(sa.active, Some((_, Exchange::RekeyIkeSa(_))))
        {
            return Err(Error::ExchangeInProgress);
        }
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
        let (ts_i, ts_r) = payload_ts(payloads);
        ts_i.ok_or(Error::MissingPayload("TSi"))?;
        ts_r.ok_or(Error::MissingPayload("TSr"))?;
        // The rekeyed SA keeps the old one's selectors (RFC 7296 §2.8), in the exchange's view.
        let (ts_i, ts_r) = if self.is_client {
            (child.sa.ts_r.clone(), child.sa.ts_i.clone())
        } else {
            (child.sa.ts_i.clone(), child.sa.ts_r.clone())
        };
        let our_spi = random_esp_spi(&*self.provider, |spi| self.esp_spi_taken(spi))?;
        let nonce_r = random_bytes(&*self.provider, self.settings.nonce_len.clamp(16, 256))?;
        // A collision with our own rekey of the same SA (RFC 7296 §2.8.1): answer as usual and
        // remember the peer's nonces.
        let ours_running = match &sa.active {
            Some((_, Exchange::RekeyChildSa(x))) if x.old == old => {
                Some(x.answer.as_ref().map(|a| min_nonce(&x.nonce_i, &a.nonce_r)))
            }
            _ => None,
        };
        if let Some(ours) = ours_running
            && let Some(c) = self.children.get_mut(i)
        {
            c.collision = Some(Collision {
                ours,
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

    /// After answering the CREATE_CHILD_SA of a peer's rekey: done, or a link for the
    /// IKE_FOLLOWUP_KE rounds.
    #[expect(clippy::too_many_arguments, reason = "the whole first round")]
    fn after_first_round(
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

    fn on_ike_rekey_request(
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
            spis.push((p.number, u64::from_be_bytes(spi)));
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
            .filter(|&s| s != 0)
            .ok_or(Error::PeerMisbehaved("IKE SA rekey without an SPI"))?;
        let response = self.provider.respond_key_exchange(choice.ke, &kei.data)?;
        let new_spi_r = random_spi(&*self.provider)?;
        let nonce_r = random_bytes(&*self.provider, self.settings.nonce_len.clamp(16, 256))?;
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
        proposal.spi = new_spi_r.to_be_bytes().to_vec();
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

    /// IKE_FOLLOWUP_KE from the peer: the next round of its rekey, found by the link
    /// (RFC 9370 §2.2.4). The last response carries no link.
    fn on_followup_ke(
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
    fn complete_peer_rekey(
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

/// What follows our response to a peer's request.
enum After {
    Nothing,
    /// The peer deleted the IKE SA the request came on.
    DropSa,
    /// The peer's rekey is complete.
    Complete(Box<PeerRekey>),
}

/// The ESP answer to a rekey: the chosen cipher and the KE and ADDKE methods used.
fn pfs_answer(
    number: u8,
    esp: &crate::ike::proposal::EspChoice,
    our_spi: u32,
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

#[cfg(test)]
impl EstablishedSa {
    /// `SK_d` of the current IKE SA.
    pub(crate) fn current_sk_d(&self) -> Option<&SecretBytes> {
        self.current_index()
            .and_then(|i| self.sas.get(i))
            .map(|s| &s.sk_d)
    }
}
