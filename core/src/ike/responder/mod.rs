//! The IKE responder: the project's own gateway (`pqvpn gateway`, the demo, the tests).
//!
//! It answers hybrid, PQ-only and classical initiators as its policies allow, asks for its
//! preferred group with INVALID_KE_PAYLOAD, demands a COOKIE above a half-open threshold
//! ([RFC 7296 §2.6]), runs the IKE_INTERMEDIATE rounds ([RFC 9242], [RFC 9370]), checks PSK
//! AUTH, assigns virtual addresses and DNS from its pool ([RFC 7296 §3.15]) and narrows traffic
//! selectors. Retransmitted requests get the cached response ([RFC 7296 §2.1]).
//!
//! [RFC 7296 §2.1]: https://www.rfc-editor.org/rfc/rfc7296#section-2.1
//! [RFC 7296 §2.6]: https://www.rfc-editor.org/rfc/rfc7296#section-2.6
//! [RFC 7296 §3.15]: https://www.rfc-editor.org/rfc/rfc7296#section-3.15
//! [RFC 9242]: https://www.rfc-editor.org/rfc/rfc9242
//! [RFC 9370]: https://www.rfc-editor.org/rfc/rfc9370

mod ike_auth;
mod pool;
mod sa_init;
mod states;

use core::time::Duration;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::crypto::CryptoProvider;
use crate::ike::Error;
use crate::ike::config::{MAX_IKE_SA_INIT, ResponderConfig};
use crate::ike::cookie::CookieSecrets;
use crate::ike::protect::Reassembly;
use crate::ike::sa::{ChildSaEstablished, Event, IKE_PORT, Outbox, Transmit};
use crate::ike::session::{Session, Status};
use crate::wire::EspSpi;
use crate::wire::{ExchangeType, Header, IkeSpi, MessageId};

use states::State;

/// How long a half-open IKE SA (IKE_SA_INIT answered, not yet authenticated) is kept.
const HALF_OPEN_LIFETIME: Duration = Duration::from_secs(30);

/// Many IKE SAs as responder, demultiplexed by SPI.
pub struct Responder {
    provider: Arc<dyn CryptoProvider>,
    config: ResponderConfig,
    /// IKE SAs by the SPIr they were created with: their id in events, stable across rekeys.
    sas: HashMap<u64, ResponderSa>,
    /// Our SPI of every IKE SA held by an established tunnel (after rekeys) to its id.
    routes: HashMap<IkeSpi, u64>,
    /// `(initiator address, SPIi)` of half-open SAs, to answer retransmitted IKE_SA_INIT.
    by_initiator: HashMap<(SocketAddr, IkeSpi), u64>,
    cookies: CookieSecrets,
    /// Half-open SAs in all and by the source address of their IKE_SA_INIT (finding 5).
    half_open: usize,
    half_open_by_ip: HashMap<IpAddr, usize>,
    /// Every SA's next deadline, earliest first, so that no call scans all SAs (finding 5).
    timers: BTreeSet<(Instant, u64)>,
    /// Our (inbound) ESP SPI of every Child SA up, so a new one never repeats one (finding L4).
    esp_spis: HashSet<EspSpi>,
    stats: ResponderStats,
    leases_v4: BTreeSet<u32>,
    /// Indexes into the IPv6 pool that are leased, each to one client.
    leases_v6: BTreeSet<u32>,
    outbox: Outbox,
    events: VecDeque<(u64, Event)>,
    /// Test-only misbehaviour: send an ML-KEM ciphertext one octet short.
    #[cfg(test)]
    pub(crate) fault_short_ciphertext: bool,
    /// Test-only misbehaviour: accept the initiator but send a wrong AUTH value.
    #[cfg(test)]
    pub(crate) fault_wrong_auth: bool,
}

/// What the responder refused or asked of unauthenticated sources, for logs and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponderStats {
    /// Half-open IKE SAs held now.
    pub half_open: usize,
    /// IKE_SA_INIT answered with a COOKIE request.
    pub cookies_sent: u64,
    /// IKE_SA_INIT dropped: larger than [`MAX_IKE_SA_INIT`].
    pub dropped_oversized: u64,
    /// IKE_SA_INIT dropped: its source already held
    /// [`half_open_per_ip`](ResponderConfig::half_open_per_ip) half-open SAs.
    pub dropped_per_ip: u64,
    /// IKE_SA_INIT dropped: [`half_open_limit`](ResponderConfig::half_open_limit) reached.
    pub dropped_limit: u64,
    /// IKE_SA_INIT asked to use X25519 instead of a costlier group while under load.
    pub cheaper_ke_requested: u64,
}

impl core::fmt::Debug for Responder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Responder")
            .field("sas", &self.sas.len())
            .finish_non_exhaustive()
    }
}

struct ResponderSa {
    /// Where its IKE_SA_INIT came from: the key of `by_initiator` and `half_open_by_ip`.
    origin: SocketAddr,
    /// Its entry in `timers`.
    timer: Option<Instant>,
    /// Our SPIs it holds in `routes`.
    routed: Vec<IkeSpi>,
    remote: SocketAddr,
    nat_t: bool,
    spi_i: IkeSpi,
    state: State,
    /// The last response, for retransmitted requests.
    last_response: Option<(MessageId, Vec<Vec<u8>>)>,
    /// When the cached response was last resent (see [`resend_identical`]).
    last_resend: Option<Instant>,
    /// The first (or only) datagram of the request being received, once it authenticated.
    pending_first: Option<Vec<u8>>,
    /// The first datagram of the request the cached response answers.
    request_first: Option<Vec<u8>>,
    reassembly: Reassembly,
    lease_v4: Option<u32>,
    lease_v6: Option<u32>,
    expires: Option<Instant>,
}

impl Responder {
    /// A responder with `config`. Draws its cookie secret from `provider`.
    pub fn new(provider: Arc<dyn CryptoProvider>, config: ResponderConfig) -> Result<Self, Error> {
        let cookies = CookieSecrets::new(&*provider)?;
        Ok(Self {
            provider,
            config,
            sas: HashMap::new(),
            routes: HashMap::new(),
            by_initiator: HashMap::new(),
            cookies,
            half_open: 0,
            half_open_by_ip: HashMap::new(),
            timers: BTreeSet::new(),
            esp_spis: HashSet::new(),
            stats: ResponderStats::default(),
            leases_v4: BTreeSet::new(),
            leases_v6: BTreeSet::new(),
            outbox: Outbox::default(),
            events: VecDeque::new(),
            #[cfg(test)]
            fault_short_ciphertext: false,
            #[cfg(test)]
            fault_wrong_auth: false,
        })
    }

    /// Number of IKE SAs held (half-open and established).
    pub fn sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Counters of what unauthenticated sources were refused or asked.
    pub fn stats(&self) -> ResponderStats {
        ResponderStats {
            half_open: self.half_open,
            ..self.stats
        }
    }

    /// The next datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.outbox.poll(buf)
    }

    /// The next event, with the id of the IKE SA it concerns: the SPIr it was created with,
    /// which stays its id across IKE SA rekeys.
    pub fn poll_event(&mut self) -> Option<(u64, Event)> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called: the expiry of the
    /// oldest half-open SA, or the next timer of an established one.
    ///
    /// Constant time: the deadlines are kept in an index.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Forgets half-open SAs that were not authenticated in time; runs the timers of the
    /// established ones (retransmissions, rekeying, liveness checks). Only SAs with a deadline
    /// due are visited.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .timers
            .range(..=(now, u64::MAX))
            .map(|&(_, id)| id)
            .collect();
        for id in due {
            let Some(sa) = self.sas.get(&id) else {
                continue;
            };
            if sa.expires.is_some_and(|e| e <= now) {
                self.remove(id);
            } else if self
                .with_established(id, |e| e.handle_timeout(now))
                .is_none()
            {
                self.schedule(id);
            }
        }
    }

    /// Files SA `id` in `timers` under its next deadline.
    fn schedule(&mut self, id: u64) {
        let Some(sa) = self.sas.get_mut(&id) else {
            return;
        };
        let next = match &sa.state {
            State::Established(e) => e.poll_timeout(),
            _ => sa.expires,
        };
        if next != sa.timer {
            if let Some(at) = sa.timer {
                self.timers.remove(&(at, id));
            }
            if let Some(at) = next {
                self.timers.insert((at, id));
            }
            sa.timer = next;
        }
    }

    /// Counts `sa` out of the half-open SAs, once: it authenticated or it is going.
    fn settle(&mut self, sa: &mut ResponderSa) {
        if sa.expires.take().is_none() {
            return;
        }
        self.half_open = self.half_open.saturating_sub(1);
        let ip = sa.origin.ip();
        if let Some(n) = self.half_open_by_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.half_open_by_ip.remove(&ip);
            }
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(mut sa) = self.sas.remove(&id) else {
            return;
        };
        self.by_initiator.remove(&(sa.origin, sa.spi_i));
        for spi in &sa.routed {
            self.routes.remove(spi);
        }
        if let Some(at) = sa.timer {
            self.timers.remove(&(at, id));
        }
        if let State::Established(e) = &sa.state {
            for child in e.child_sas() {
                self.esp_spis.remove(&child.spi_r);
            }
        }
        self.settle(&mut sa);
        self.release(&sa);
    }

    /// Runs `f` on the established SA `id`, then moves its output to the shared queues and
    /// drops it if it ended.
    fn with_established<T>(&mut self, id: u64, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
        let sa = self.sas.get_mut(&id)?;
        let State::Established(e) = &mut sa.state else {
            return None;
        };
        // Lent for the call: the SPIs a new Child SA of this IKE SA must not take.
        e.spis_in_use = core::mem::take(&mut self.esp_spis);
        let out = f(e);
        self.esp_spis = core::mem::take(&mut e.spis_in_use);
        self.outbox.append(&mut e.outbox);
        for event in e.events.drain(..) {
            match &event {
                Event::ChildSaEstablished(child)
                | Event::ChildSaCreated(child)
                | Event::ChildSaRekeyed { new: child, .. } => {
                    self.esp_spis.insert(child.spi_r);
                }
                Event::ChildSaDeleted(child) => {
                    self.esp_spis.remove(&child.spi_r);
                }
                _ => {}
            }
            self.events.push_back((id, event));
        }
        sa.remote = e.remote;
        sa.nat_t = e.nat_t;
        if e.status() != Status::Up {
            self.remove(id);
            return Some(out);
        }
        let spis = e.local_spis();
        for spi in &sa.routed {
            if !spis.contains(spi) {
                self.routes.remove(spi);
            }
        }
        for &spi in &spis {
            self.routes.insert(spi, id);
        }
        sa.routed = spis;
        self.schedule(id);
        Some(out)
    }

    /// Reports an authentic ESP packet from the client of IKE SA `id` (see
    /// [`Initiator::handle_inbound_traffic`](crate::ike::Initiator::handle_inbound_traffic)).
    pub fn handle_inbound_traffic(&mut self, now: Instant, id: u64) {
        self.with_established(id, |e| e.handle_inbound_traffic(now));
    }

    /// Rekeys the Child SA with `spi` of IKE SA `id` now (the gateway as rekey initiator).
    ///
    /// # Errors
    ///
    /// [`Error::ApiMisuse`] if there is no such established SA or Child SA.
    pub fn rekey_child_sa(&mut self, now: Instant, id: u64, spi: EspSpi) -> Result<(), Error> {
        self.with_established(id, |e| e.rekey_child_sa(now, spi))
            .unwrap_or(Err(Error::ApiMisuse("no established IKE SA with this id")))
    }

    /// Rekeys IKE SA `id` now; the gateway becomes the new SA's original initiator.
    pub fn rekey_ike_sa(&mut self, now: Instant, id: u64) {
        self.with_established(id, |e| e.rekey_ike_sa(now));
    }

    /// Deletes IKE SA `id` ([RFC 7296 §1.4.1]); [`Event::Closed`] follows.
    ///
    /// [RFC 7296 §1.4.1]: https://www.rfc-editor.org/rfc/rfc7296#section-1.4.1
    pub fn close(&mut self, now: Instant, id: u64) {
        self.with_established(id, |e| e.close(now));
    }

    /// The Child SAs of IKE SA `id`, `_i` being the client.
    pub fn child_sas(&self, id: u64) -> Vec<ChildSaEstablished> {
        match self.sas.get(&id).map(|s| &s.state) {
            Some(State::Established(e)) => e.child_sas().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Where the peer of IKE SA `id` sends from: the source of its latest request
    /// ([RFC 7296 §2.11]); `None` for an unknown id.
    ///
    /// [RFC 7296 §2.11]: https://www.rfc-editor.org/rfc/rfc7296#section-2.11
    pub fn remote(&self, id: u64) -> Option<SocketAddr> {
        self.sas.get(&id).map(|sa| sa.remote)
    }

    /// Ids of the established IKE SAs.
    pub fn established_ids(&self) -> Vec<u64> {
        self.sas
            .iter()
            .filter(|(_, s)| matches!(s.state, State::Established(_)))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Test access to an established SA.
    #[cfg(test)]
    pub(crate) fn established_mut(&mut self, id: u64) -> Option<&mut Session> {
        match &mut self.sas.get_mut(&id)?.state {
            State::Established(e) => Some(e),
            _ => None,
        }
    }

    /// Processes one IKE message (non-ESP marker stripped) that arrived at `local` from
    /// `remote`. `local` decides the NAT detection hash and, on port 4500, the marker of
    /// replies.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
    ) {
        let Ok(header) = Header::parse(datagram) else {
            return;
        };
        let nat_t = local.port() != IKE_PORT;
        // Our SPI: SPIr in messages from the original initiator, SPIi otherwise (after a rekey
        // we started).
        let ours = if header.flags.initiator {
            header.spi_r
        } else {
            header.spi_i
        };
        if let Some(&id) = self.routes.get(&ours) {
            // Responses go where an authentic new request came from (RFC 7296 §2.11, §2.23);
            // the established SA decides that after the integrity check.
            self.with_established(id, |e| {
                e.handle_datagram(now, Some((remote, nat_t)), &header, datagram);
            });
            return;
        }
        if header.flags.response || !header.flags.initiator {
            return;
        }
        if header.exchange_type == ExchangeType::IkeSaInit && header.spi_r == IkeSpi::ZERO {
            if datagram.len() > MAX_IKE_SA_INIT {
                self.stats.dropped_oversized += 1;
            } else if header.message_id == MessageId::ZERO {
                self.on_sa_init(now, local, remote, nat_t, &header, datagram);
            }
            return;
        }
        // A half-open SA: its id is still its SPIr.
        let id = header.spi_r.0;
        let Some(mut sa) = self.sas.remove(&id) else {
            return;
        };
        if sa.spi_i == header.spi_i {
            self.on_request(now, id, &mut sa, &header, datagram, (remote, nat_t));
        }
        let dead = matches!(sa.state, State::Dead);
        self.sas.insert(id, sa);
        if dead {
            self.remove(id);
        } else {
            self.schedule(id);
        }
    }
}
