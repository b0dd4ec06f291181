//! What an IKE SA does once IKE_AUTH completed, the same for both roles: CREATE_CHILD_SA to
//! rekey Child SAs and the IKE SA with a fresh key exchange each time ([RFC 7296 §1.3],
//! [RFC 7296 §2.8], [RFC 7296 §2.18]), IKE_FOLLOWUP_KE for the additional key exchanges
//! ([RFC 9370 §2.2.4]), collisions ([RFC 7296 §2.8.1], [RFC 7296 §2.25]), liveness checks
//! ([RFC 7296 §2.4]) and Delete ([RFC 7296 §1.4.1]), all with window size 1 ([RFC 7296 §2.3]).
//!
//! [`Session`] owns every IKE SA of one tunnel (the current one, plus old or redundant ones
//! still finishing their Delete after a rekey) and its Child SAs. Which side started the very
//! first IKE SA only matters for naming Child SA fields ([`ChildSaEstablished`]); the
//! "original initiator" of each IKE SA is whoever started that SA's exchange, so it changes
//! hands when the gateway rekeys the IKE SA.
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | the [`Session`], its inputs and the window-1 queue of intents |
//! | `ike_sa.rs` | one IKE SA: SPIs, keys, message IDs, the outstanding request |
//! | `child.rs` | the Child SAs and their `_i`/`_r` views |
//! | `exchange.rs` | sending requests and responses, dispatching what arrives |
//! | `timers.rs` | lifetimes, retransmissions, liveness checks, retries |
//! | `rekey_child.rs` | Child SA rekeys, ours and the peer's ([RFC 7296 §1.3.3]) |
//! | `create_child.rs` | a new Child SA in place of a lost one ([RFC 7296 §1.3.1]) |
//! | `rekey_ike.rs` | IKE SA rekeys, ours and the peer's ([RFC 7296 §1.3.2]) |
//! | `followup.rs` | IKE_FOLLOWUP_KE rounds of either ([RFC 9370 §2.2.4]) |
//! | `collision.rs` | simultaneous rekeys ([RFC 7296 §2.8.1], [RFC 7296 §2.8.2]) |
//! | `informational.rs` | the peer's INFORMATIONAL: liveness, Delete ([RFC 7296 §1.4]) |
//! | `pfs.rs` | how much key exchange a Child SA rekey repeats ([RFC 9370 §2.2.1]) |
//!
//! [RFC 7296 §1.3]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3
//! [RFC 7296 §1.3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.1
//! [RFC 7296 §1.3.2]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.2
//! [RFC 7296 §1.3.3]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.3
//! [RFC 7296 §1.4]: https://www.rfc-editor.org/rfc/rfc7296#section-1.4
//! [RFC 7296 §1.4.1]: https://www.rfc-editor.org/rfc/rfc7296#section-1.4.1
//! [RFC 7296 §2.3]: https://www.rfc-editor.org/rfc/rfc7296#section-2.3
//! [RFC 7296 §2.4]: https://www.rfc-editor.org/rfc/rfc7296#section-2.4
//! [RFC 7296 §2.8]: https://www.rfc-editor.org/rfc/rfc7296#section-2.8
//! [RFC 7296 §2.8.1]: https://www.rfc-editor.org/rfc/rfc7296#section-2.8.1
//! [RFC 7296 §2.8.2]: https://www.rfc-editor.org/rfc/rfc7296#section-2.8.2
//! [RFC 7296 §2.18]: https://www.rfc-editor.org/rfc/rfc7296#section-2.18
//! [RFC 7296 §2.25]: https://www.rfc-editor.org/rfc/rfc7296#section-2.25
//! [RFC 9370 §2.2.1]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.1
//! [RFC 9370 §2.2.4]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.4

use core::time::Duration;
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::crypto::{AeadAlgorithm, CryptoProvider, KeyExchange};
use crate::ike::Error;
use crate::ike::config::{CryptoPolicy, Lifetime, RetransmitConfig};
use crate::ike::sa::{ChildSaEstablished, ChildSaId, Event, Outbox, Suite};
use crate::wire::EspSpi;
use crate::wire::{IkeSpi, KePayload, Nonce, Payload, SaPayload, TsPayload};
#[cfg(test)]
use crate::{crypto::SecretBytes, wire::Header, wire::KeyExchangeMethod};

use child::{ChildSaTable, View};
use collision::Collision;
use followup::PeerRekey;
use rekey_child::RekeyChildSa;
use rekey_ike::RekeyIkeSa;

mod child;
mod collision;
mod create_child;
mod exchange;
mod followup;
mod ike_sa;
mod informational;
mod pfs;
mod rekey_child;
mod rekey_ike;
mod timers;

pub(crate) use ike_sa::{IkeSa, IkeSaParts};
#[cfg(test)]
pub(crate) use pfs::Pfs;

/// How long an old or redundant IKE SA waits for the peer's Delete before it is dropped.
const RETIRED_IKE_SA_LINGER: Duration = Duration::from_secs(60);

/// Shortest wait before retrying after TEMPORARY_FAILURE or STATE_NOT_FOUND (RFC 7296 §2.25:
/// "MUST NOT immediately retry"); up to the same again is added at random.
const RETRY_DELAY: Duration = Duration::from_secs(2);

/// How long an IKE SA without a Child SA waits for a new one (ours or the peer's, with
/// retransmissions) before it is deleted. The client's tunnel gives up sooner (15 s) and
/// reconnects; this bounds the gateway's side, where the client may be re-creating one.
const ORPHANED_LIMIT: Duration = Duration::from_secs(20);

/// INVALID_KE_PAYLOAD answers followed per exchange before giving up.
const MAX_INVALID_KE_RETRIES: u8 = 2;

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

/// One of our requests and the state it needs for the response.
enum Exchange {
    /// An empty INFORMATIONAL: a liveness check (RFC 7296 §2.4).
    Dpd,
    /// INFORMATIONAL Delete of these Child SAs (normalized SPI pairs).
    DeleteChildSa(Vec<ChildSaId>),
    /// INFORMATIONAL Delete of the IKE SA it is sent on.
    DeleteIkeSa,
    /// CREATE_CHILD_SA with REKEY_SA (or, for a new Child SA, without), then IKE_FOLLOWUP_KE
    /// rounds.
    RekeyChildSa(Box<RekeyChildSa>),
    /// CREATE_CHILD_SA rekeying the IKE SA, then IKE_FOLLOWUP_KE rounds.
    RekeyIkeSa(Box<RekeyIkeSa>),
}

/// Things we want to send, each started when the window is free.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Intent {
    /// Rekey the Child SA with this normalized SPI pair.
    RekeyChildSa(ChildSaId),
    /// A new Child SA in place of the lost one.
    CreateChildSa,
    RekeyIkeSa,
    Dpd,
    DeleteChildSa(Vec<ChildSaId>),
    DeleteIkeSa,
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
    /// Delete a Child SA at its hard lifetime without creating the next one (a peer that
    /// leaves it to the other side).
    pub(crate) no_recreate: bool,
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

fn ke_payload(ke: &dyn KeyExchange) -> Payload {
    Payload::Ke(KePayload {
        method: ke.method(),
        data: ke.public_value().to_vec(),
    })
}

fn nonce_payload(nonce: &[u8]) -> Result<Payload, Error> {
    Ok(Payload::Nonce(Nonce::new(nonce.to_vec())?))
}

/// Every IKE SA and Child SA of one tunnel after IKE_AUTH, and the exchanges between them.
pub(crate) struct Session {
    provider: Arc<dyn CryptoProvider>,
    settings: Settings,
    /// Whether we started the first IKE SA (the client): fixes the `_i`/`_r` naming of Child
    /// SAs in events.
    view: View,
    pub(crate) remote: SocketAddr,
    pub(crate) nat_t: bool,
    /// All IKE SAs; `current` names the one new requests go on.
    sas: Vec<IkeSa>,
    current: (IkeSpi, IkeSpi),
    suite: Suite,
    ike_rekey_at: Instant,
    ike_expire_at: Instant,
    /// A collision of IKE SA rekeys (RFC 7296 §2.8.2).
    ike_collision: Option<Collision>,
    /// The SPIs of a new IKE SA the peer made while our own IKE rekey had not settled yet.
    held_successor: Option<(IkeSpi, IkeSpi)>,
    children: ChildSaTable,
    queue: VecDeque<Intent>,
    retries: Vec<(Instant, Intent)>,
    peer_rekey: Option<PeerRekey>,
    /// Since when no Child SA is live (the last was deleted): a new one may come for
    /// [`ORPHANED_LIMIT`], then the IKE SA, which carries nothing, is deleted.
    orphaned_since: Option<Instant>,
    last_inbound: Instant,
    /// When a response to one of our requests last came: what a [`probe`](Self::probe)
    /// counts (datagrams queued while the machine slept prove nothing).
    last_answer: Instant,
    last_probe: Instant,
    /// A liveness check asked for ([`probe`](Self::probe)): since when, and by when the peer
    /// must have been heard from.
    probe: Option<(Instant, Instant)>,
    status: Status,
    pub(crate) outbox: Outbox,
    pub(crate) events: VecDeque<Event>,
    /// Inbound ESP SPIs of the other IKE SAs' Child SAs, lent by the responder for each call so
    /// that a new Child SA never takes one (security review L4); empty for the client.
    pub(crate) spis_in_use: HashSet<EspSpi>,
    #[cfg(test)]
    pub(crate) faults: Faults,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("current", &self.current)
            .field("sas", &self.sas.len())
            .field("children", &self.children.len())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Session {
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
            view: View { client: is_client },
            remote,
            nat_t,
            current: ike.spis(),
            sas: vec![ike],
            suite,
            ike_rekey_at: now,
            ike_expire_at: now,
            ike_collision: None,
            held_successor: None,
            children: ChildSaTable::default(),
            queue: VecDeque::new(),
            retries: Vec::new(),
            peer_rekey: None,
            orphaned_since: None,
            last_inbound: now,
            last_answer: now,
            last_probe: now,
            probe: None,
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
    pub(crate) fn spis(&self) -> (IkeSpi, IkeSpi) {
        self.current
    }

    /// Our SPI of every IKE SA held, for demultiplexing.
    #[cfg(feature = "gateway")]
    pub(crate) fn local_spis(&self) -> Vec<IkeSpi> {
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

    /// Checks now that the peer is still there (after the machine woke up, or the process was
    /// frozen): a DPD (RFC 7296 §2.4) unless a request is already on its way, whose answer
    /// proves the same. Unless an authentic response to a request comes within `within` (not
    /// any message or ESP packet: those the socket queued while the machine slept prove
    /// nothing), the IKE SA fails with [`Error::DeadPeer`], without waiting for the whole
    /// retransmission schedule.
    pub(crate) fn probe(&mut self, now: Instant, within: Duration) {
        if self.status != Status::Up {
            return;
        }
        self.probe = Some((now, now + within));
        self.last_probe = now;
        let busy = self
            .current_index()
            .and_then(|i| self.sas.get(i))
            .is_some_and(|s| s.active.is_some());
        // First in line: queued rekeys may wait (a peer's rekey in progress), this must not.
        if !busy {
            self.queue.retain(|intent| *intent != Intent::Dpd);
            self.queue.push_front(Intent::Dpd);
        }
        self.start_next(now);
    }

    /// The driver saw an authentic ESP packet from the peer: it is alive.
    pub(crate) fn handle_inbound_traffic(&mut self, now: Instant) {
        self.last_inbound = self.last_inbound.max(now);
    }

    /// Queues a rekey of the Child SA one of whose SPIs is `spi` (the ESP layer's soft limit).
    pub(crate) fn rekey_child_sa(&mut self, now: Instant, spi: EspSpi) -> Result<(), Error> {
        let pair = self
            .children
            .iter()
            .find(|c| c.sa.spi_i == spi || c.sa.spi_r == spi)
            .map(|c| c.sa.id())
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
}

#[cfg(test)]
impl Session {
    /// `SK_d` of the current IKE SA.
    pub(crate) fn current_sk_d(&self) -> Option<&SecretBytes> {
        self.current_index()
            .and_then(|i| self.sas.get(i))
            .map(|s| &s.sk_d)
    }
}
