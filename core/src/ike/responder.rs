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

use core::time::Duration;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::crypto::{CryptoProvider, Prf, SecretBytes};
use crate::ike::config::{MAX_IKE_SA_INIT, ResponderConfig};
use crate::ike::cookie::CookieSecrets;
use crate::ike::established::{EstablishedSa, IkeSa, IkeSaParts, Settings, Status};
use crate::ike::keys::{
    ChildSaKeys, IkeSaKeys, IntAuth, maced_id, psk_auth, signed_octets, skeyseed,
    skeyseed_additional,
};
use crate::ike::proposal::{IkeChoice, IkeSelection, esp_answer, narrow, select_esp, select_ike};
use crate::ike::protect::{Reassembly, SkCipher, Unprotected, resend_identical, unprotect};
use crate::ike::sa::{
    ChildSaEstablished, Event, IKE_PORT, Outbox, Transmit, find_notify, nat_detection_hash,
    random_bytes, random_esp_spi, random_spi,
};
use crate::ike::{Error, Mode};
use crate::wire::{
    AuthMethod, AuthPayload, CfgType, ConfigAttribute, ConfigPayload, ExchangeType, Flags, Header,
    Identification, KePayload, KeyExchangeMethod, Message, Nonce, NotifyPayload, NotifyType,
    Payload, Proposal, SaPayload, TrafficSelector, TsPayload, locate_encrypted,
};

/// How long a half-open IKE SA (IKE_SA_INIT answered, not yet authenticated) is kept.
const HALF_OPEN_LIFETIME: Duration = Duration::from_secs(30);

/// Many IKE SAs as responder, demultiplexed by SPI.
pub struct Responder {
    provider: Arc<dyn CryptoProvider>,
    config: ResponderConfig,
    /// IKE SAs by the SPIr they were created with: their id in events, stable across rekeys.
    sas: HashMap<u64, ResponderSa>,
    /// Our SPI of every IKE SA held by an established tunnel (after rekeys) to its id.
    routes: HashMap<u64, u64>,
    /// `(initiator address, SPIi)` of half-open SAs, to answer retransmitted IKE_SA_INIT.
    by_initiator: HashMap<(SocketAddr, u64), u64>,
    cookies: CookieSecrets,
    /// Half-open SAs in all and by the source address of their IKE_SA_INIT (finding 5).
    half_open: usize,
    half_open_by_ip: HashMap<IpAddr, usize>,
    /// Every SA's next deadline, earliest first, so that no call scans all SAs (finding 5).
    timers: BTreeSet<(Instant, u64)>,
    /// Our (inbound) ESP SPI of every Child SA up, so a new one never repeats one (finding L4).
    esp_spis: HashSet<u32>,
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
    routed: Vec<u64>,
    remote: SocketAddr,
    nat_t: bool,
    spi_i: u64,
    state: State,
    /// The last response, for retransmitted requests.
    last_response: Option<(u32, Vec<Vec<u8>>)>,
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

impl State {
    /// The IKE_SA_INIT request while the SA is half-open.
    fn init_request(&self) -> Option<&[u8]> {
        match self {
            Self::ExpectIntermediateRequest { keyed, .. } | Self::ExpectAuthRequest { keyed } => {
                Some(&keyed.real_message_1)
            }
            Self::Established(_) | Self::Dead => None,
        }
    }
}

enum State {
    ExpectIntermediateRequest { keyed: Box<Keyed>, round: usize },
    ExpectAuthRequest { keyed: Box<Keyed> },
    Established(Box<EstablishedSa>),
    Dead,
}

struct Keyed {
    choice: IkeChoice,
    mode: Mode,
    prf: Box<dyn Prf>,
    nonce_i: Vec<u8>,
    nonce_r: Vec<u8>,
    keys: IkeSaKeys,
    cipher: SkCipher,
    real_message_1: Vec<u8>,
    real_message_2: Vec<u8>,
    peer_fragmentation: bool,
    int_auth: IntAuth,
    expected_message_id: u32,
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

    /// Returns the SA's pool addresses to the pool.
    fn release(&mut self, sa: &ResponderSa) {
        if let Some(lease) = sa.lease_v4 {
            self.leases_v4.remove(&lease);
        }
        if let Some(lease) = sa.lease_v6 {
            self.leases_v6.remove(&lease);
        }
    }

    /// Runs `f` on the established SA `id`, then moves its output to the shared queues and
    /// drops it if it ended.
    fn with_established<T>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut EstablishedSa) -> T,
    ) -> Option<T> {
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
                Event::ChildSaEstablished(child) | Event::ChildSaRekeyed { new: child, .. } => {
                    self.esp_spis.insert(child.spi_r);
                }
                Event::ChildSaDeleted { spi_r, .. } => {
                    self.esp_spis.remove(spi_r);
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
    pub fn rekey_child_sa(&mut self, now: Instant, id: u64, spi: u32) -> Result<(), Error> {
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
    pub(crate) fn established_mut(&mut self, id: u64) -> Option<&mut EstablishedSa> {
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
        if header.exchange_type == ExchangeType::IkeSaInit && header.spi_r == 0 {
            if datagram.len() > MAX_IKE_SA_INIT {
                self.stats.dropped_oversized += 1;
            } else if header.message_id == 0 {
                self.on_sa_init(now, local, remote, nat_t, &header, datagram);
            }
            return;
        }
        let spi_r = header.spi_r;
        let Some(mut sa) = self.sas.remove(&spi_r) else {
            return;
        };
        if sa.spi_i == header.spi_i {
            self.on_request(now, spi_r, &mut sa, &header, datagram, (remote, nat_t));
        }
        let dead = matches!(sa.state, State::Dead);
        self.sas.insert(spi_r, sa);
        if dead {
            self.remove(spi_r);
        } else {
            self.schedule(spi_r);
        }
    }

    // ----------------------------------------------------------------------- IKE_SA_INIT

    /// Answers an unprotected IKE_SA_INIT with a lone Notify (SPIr zero, no state kept).
    fn reply_notify(&mut self, remote: SocketAddr, nat_t: bool, header: &Header, n: NotifyPayload) {
        let reply = Header::new(
            header.spi_i,
            0,
            ExchangeType::IkeSaInit,
            Flags::from_octet(Flags::RESPONSE_BIT),
            0,
        );
        let message = Message::new(reply, vec![Payload::Notify(n)]).emit();
        self.outbox.push(remote, nat_t, message);
    }

    fn on_sa_init(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        nat_t: bool,
        header: &Header,
        datagram: &[u8],
    ) {
        // A retransmitted request gets the same response: only for a byte-identical copy,
        // rate-limited, so a forged one reflects nothing (RFC 7296 §2.1).
        if let Some(&spi_r) = self.by_initiator.get(&(remote, header.spi_i)) {
            if let Some(sa) = self.sas.get_mut(&spi_r)
                && let Some((_, datagrams)) = &sa.last_response
                && resend_identical(sa.state.init_request(), datagram, &mut sa.last_resend, now)
            {
                for d in datagrams.clone() {
                    self.outbox.push(remote, nat_t, d);
                }
            }
            return;
        }
        let message = match Message::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                self.reply_notify(remote, nat_t, header, e.to_notify());
                return;
            }
        };
        // The Notify with its data (UNSUPPORTED_CRITICAL_PAYLOAD names the payload type,
        // RFC 7296 §3.10.1); our own failures are not answered.
        if let Err(e) = self.answer_sa_init(now, local, remote, nat_t, &message, datagram)
            && let Some(n) = e.notify_payload()
        {
            self.reply_notify(remote, nat_t, header, n);
        }
    }

    fn answer_sa_init(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        nat_t: bool,
        message: &Message,
        datagram: &[u8],
    ) -> Result<(), Error> {
        let header = &message.header;
        let payloads = &message.payloads;
        let mut sa = None;
        let mut kei = None;
        let mut nonce_i = None;
        for p in payloads {
            match p {
                Payload::Sa(x) => sa = sa.or(Some(x)),
                Payload::Ke(x) => kei = kei.or(Some(x)),
                Payload::Nonce(x) => nonce_i = nonce_i.or(Some(x)),
                _ => {}
            }
        }
        let sa = sa.ok_or(Error::MissingPayload("SA"))?;
        let kei = kei.ok_or(Error::MissingPayload("KE"))?;
        let nonce_i = nonce_i
            .ok_or(Error::MissingPayload("Nonce"))?
            .as_bytes()
            .to_vec();

        // Finding 5. Under load, or from a source that already holds half-open SAs, the
        // source must first prove it receives at its address (RFC 7296 §2.6); a proven source
        // holds at most `half_open_per_ip` half-open SAs, and all of them `half_open_limit`.
        let ip = remote.ip();
        let from_ip = self.half_open_by_ip.get(&ip).copied().unwrap_or(0);
        let loaded = self.half_open >= self.config.cookie_threshold;
        if loaded || from_ip >= self.config.cookie_threshold_ip {
            let p = &*self.provider;
            let presented = match payloads.first() {
                Some(Payload::Notify(n)) if n.notify_type == NotifyType::Cookie => Some(&n.data),
                _ => None,
            };
            let proven = match presented {
                Some(c) => self.cookies.verify(p, now, c, &nonce_i, ip, header.spi_i)?,
                None => false,
            };
            if !proven {
                let cookie = self.cookies.make(p, now, &nonce_i, ip, header.spi_i)?;
                self.stats.cookies_sent += 1;
                self.reply_notify(
                    remote,
                    nat_t,
                    header,
                    NotifyPayload::status(NotifyType::Cookie, cookie),
                );
                return Ok(());
            }
        }
        if from_ip >= self.config.half_open_per_ip {
            self.stats.dropped_per_ip += 1;
            return Ok(());
        }
        if self.half_open >= self.config.half_open_limit {
            self.stats.dropped_limit += 1;
            return Ok(());
        }
        let intermediate =
            find_notify(payloads, NotifyType::IntermediateExchangeSupported).is_some();
        let (number, choice, mode) = match select_ike(
            &self.config.policies,
            &sa.proposals,
            kei.method,
            intermediate,
        )? {
            IkeSelection::WrongKe(method) => {
                self.reply_notify(
                    remote,
                    nat_t,
                    header,
                    NotifyPayload::invalid_ke_payload(method),
                );
                return Ok(());
            }
            IkeSelection::Accept { number, choice } => {
                let mode = self
                    .config
                    .policies
                    .iter()
                    .find(|p| p.addke == choice.addke && p.ke.contains(&choice.ke))
                    .map_or(Mode::Classical, |p| p.mode);
                (number, choice, mode)
            }
        };
        if loaded
            && choice.ke != KeyExchangeMethod::Curve25519
            && let Some(method) = self.cheaper_ke(&sa.proposals, kei.method, intermediate)
        {
            // Under load a costlier group (P-384 costs about 20 times X25519) is answered with
            // INVALID_KE_PAYLOAD for X25519 where the initiator offered it and a policy allows
            // it, so a flood cannot buy expensive work (finding 5).
            self.stats.cheaper_ke_requested += 1;
            self.reply_notify(
                remote,
                nat_t,
                header,
                NotifyPayload::invalid_ke_payload(method),
            );
            return Ok(());
        }
        let response = self.provider.respond_key_exchange(choice.ke, &kei.data)?;
        let spi_r = random_spi(&*self.provider)?;
        let nonce_r = random_bytes(&*self.provider, self.config.nonce_len.clamp(16, 256))?;
        let p = &*self.provider;
        let peer_behind_nat = find_notify(payloads, NotifyType::NatDetectionSourceIp)
            .is_some_and(|n| n.data != nat_detection_hash(p, header.spi_i, 0, remote));
        let peer_fragmentation =
            find_notify(payloads, NotifyType::Ikev2FragmentationSupported).is_some();

        let mut out = vec![
            Payload::Sa(SaPayload {
                proposals: vec![choice.to_proposal(number)],
            }),
            Payload::Ke(KePayload {
                method: choice.ke,
                data: response.public_value.clone(),
            }),
        ];
        if let Ok(n) = Nonce::new(nonce_r.clone()) {
            out.push(Payload::Nonce(n));
        }
        out.push(Payload::Notify(NotifyPayload::status(
            NotifyType::NatDetectionSourceIp,
            nat_detection_hash(p, header.spi_i, spi_r, local).to_vec(),
        )));
        out.push(Payload::Notify(NotifyPayload::status(
            NotifyType::NatDetectionDestinationIp,
            nat_detection_hash(p, header.spi_i, spi_r, remote).to_vec(),
        )));
        if peer_fragmentation {
            out.push(Payload::Notify(NotifyPayload::status(
                NotifyType::Ikev2FragmentationSupported,
                Vec::new(),
            )));
        }
        if !choice.addke.is_empty() {
            out.push(Payload::Notify(NotifyPayload::status(
                NotifyType::IntermediateExchangeSupported,
                Vec::new(),
            )));
        }
        let reply = Header::new(
            header.spi_i,
            spi_r,
            ExchangeType::IkeSaInit,
            Flags::from_octet(Flags::RESPONSE_BIT),
            0,
        );
        let response_bytes = Message::new(reply, out).emit();

        let prf = self.provider.prf(choice.prf)?;
        let seed = skeyseed(&*prf, &nonce_i, &nonce_r, &response.shared_secret);
        let keys = derive(
            &*prf,
            &choice,
            &seed,
            &nonce_i,
            &nonce_r,
            header.spi_i,
            spi_r,
        )?;
        let cipher = SkCipher::new(&*self.provider, choice.encr, &keys.sk_er, &keys.sk_ei)?;
        let keyed = Box::new(Keyed {
            mode,
            prf,
            nonce_i,
            nonce_r,
            keys,
            cipher,
            real_message_1: datagram.to_vec(),
            real_message_2: response_bytes.clone(),
            peer_fragmentation,
            int_auth: IntAuth::new(),
            expected_message_id: 1,
            choice,
        });
        let state = if keyed.choice.addke.is_empty() {
            State::ExpectAuthRequest { keyed }
        } else {
            State::ExpectIntermediateRequest { keyed, round: 0 }
        };
        self.outbox.push(remote, nat_t, response_bytes.clone());
        self.by_initiator.insert((remote, header.spi_i), spi_r);
        self.half_open += 1;
        *self.half_open_by_ip.entry(ip).or_default() += 1;
        self.sas.insert(
            spi_r,
            ResponderSa {
                origin: remote,
                timer: None,
                routed: Vec::new(),
                remote,
                nat_t: nat_t || peer_behind_nat,
                spi_i: header.spi_i,
                state,
                last_response: Some((0, vec![response_bytes])),
                last_resend: None,
                pending_first: None,
                request_first: None,
                reassembly: Reassembly::default(),
                lease_v4: None,
                lease_v6: None,
                expires: Some(now + HALF_OPEN_LIFETIME),
            },
        );
        self.schedule(spi_r);
        Ok(())
    }

    /// X25519, if a policy allows it and the initiator offered it for a proposal we accept.
    fn cheaper_ke(
        &self,
        proposals: &[Proposal],
        kei: KeyExchangeMethod,
        intermediate: bool,
    ) -> Option<KeyExchangeMethod> {
        let cheap: Vec<_> = self
            .config
            .policies
            .iter()
            .filter(|p| p.ke.contains(&KeyExchangeMethod::Curve25519))
            .map(|p| crate::ike::CryptoPolicy {
                ke: vec![KeyExchangeMethod::Curve25519],
                ..p.clone()
            })
            .collect();
        match select_ike(&cheap, proposals, kei, intermediate) {
            Ok(IkeSelection::WrongKe(method)) => Some(method),
            _ => None,
        }
    }

    // ----------------------------------------------------------------------- protected requests

    /// `from` (address, NAT-T) becomes the SA's peer only once the request authenticates:
    /// requests move to port 4500 after IKE_SA_INIT ([RFC 7296 §2.23]), but a forged datagram
    /// must not move them (finding 4).
    ///
    /// [RFC 7296 §2.23]: https://www.rfc-editor.org/rfc/rfc7296#section-2.23
    fn on_request(
        &mut self,
        now: Instant,
        spi_r: u64,
        sa: &mut ResponderSa,
        header: &Header,
        datagram: &[u8],
        from: (SocketAddr, bool),
    ) {
        if let Some((mid, datagrams)) = &sa.last_response
            && *mid == header.message_id
        {
            // A retransmission: the cached response, to the address we know, only for a copy
            // of the request's first datagram, rate-limited (RFC 7296 §2.1, RFC 7383 §2.6.1).
            // The keys may have changed since (IKE_INTERMEDIATE), so compare octets.
            if resend_identical(
                sa.request_first.as_deref(),
                datagram,
                &mut sa.last_resend,
                now,
            ) {
                for d in datagrams.clone() {
                    self.outbox.push(sa.remote, sa.nat_t, d);
                }
            }
            return;
        }
        let state = core::mem::replace(&mut sa.state, State::Dead);
        let keyed = match &state {
            State::ExpectIntermediateRequest { keyed, .. } | State::ExpectAuthRequest { keyed } => {
                keyed
            }
            State::Established(_) | State::Dead => {
                sa.state = state;
                return;
            }
        };
        if header.message_id != keyed.expected_message_id {
            sa.state = state;
            return;
        }
        let Ok(Some(view)) = locate_encrypted(datagram) else {
            sa.state = state;
            return;
        };
        let first = view.fragment().is_none_or(|f| f.fragment_number == 1);
        let result = unprotect(&keyed.cipher, &mut sa.reassembly, &view);
        if first && result.is_ok() && sa.pending_first.is_none() {
            sa.pending_first = Some(datagram.to_vec());
        }
        let request = match result {
            Ok(Some(u)) => {
                (sa.remote, sa.nat_t) = from;
                sa.request_first = sa.pending_first.take();
                u
            }
            // Forged, or more fragments to come: nothing changes.
            Ok(None) | Err(Error::IntegrityCheckFailed) => {
                sa.state = state;
                return;
            }
            Err(e) => {
                self.events.push_back((spi_r, Event::Failed(e)));
                return;
            }
        };
        let result = match (state, header.exchange_type) {
            (State::ExpectIntermediateRequest { keyed, round }, ExchangeType::IkeIntermediate) => {
                self.on_intermediate(now, spi_r, sa, keyed, round, request)
            }
            (State::ExpectAuthRequest { keyed }, ExchangeType::IkeAuth) => {
                self.on_auth(now, spi_r, sa, keyed, request)
            }
            (other, _) => {
                sa.state = other;
                return;
            }
        };
        if let Err(e) = result {
            sa.state = State::Dead;
            self.events.push_back((spi_r, Event::Failed(e)));
        }
    }

    /// Sends a protected response and caches it for retransmissions.
    fn respond(
        &mut self,
        spi_r: u64,
        sa: &mut ResponderSa,
        keyed: &mut Keyed,
        exchange: ExchangeType,
        message_id: u32,
        inner: &[Payload],
    ) -> Result<crate::ike::protect::Protected, Error> {
        let header = Header::new(
            sa.spi_i,
            spi_r,
            exchange,
            Flags::from_octet(Flags::RESPONSE_BIT),
            message_id,
        );
        let max = keyed.peer_fragmentation.then(|| {
            let ip_udp = if sa.remote.is_ipv4() { 28 } else { 48 };
            let marker = if sa.nat_t { 4 } else { 0 };
            self.config.fragment_size.saturating_sub(ip_udp + marker)
        });
        let protected = keyed.cipher.protect(&header, inner, max)?;
        for d in &protected.datagrams {
            self.outbox.push(sa.remote, sa.nat_t, d.clone());
        }
        sa.last_response = Some((message_id, protected.datagrams.clone()));
        keyed.expected_message_id = message_id.wrapping_add(1);
        Ok(protected)
    }

    fn on_intermediate(
        &mut self,
        _now: Instant,
        spi_r: u64,
        sa: &mut ResponderSa,
        mut keyed: Box<Keyed>,
        round: usize,
        request: Unprotected,
    ) -> Result<(), Error> {
        let mid = request.header.message_id;
        let method = *keyed.choice.addke.get(round).ok_or(Error::PeerMisbehaved(
            "IKE_INTERMEDIATE after the last round",
        ))?;
        let kei = request.payloads.iter().find_map(|p| match p {
            Payload::Ke(k) => Some(k),
            _ => None,
        });
        let outcome = match kei {
            None => Err(Error::MissingPayload("KE")),
            Some(k) if k.method != method => Err(Error::WrongKeyExchangeMethod {
                expected: method,
                got: k.method,
            }),
            // FIPS 203 §7.2 checks on the encapsulation key; INVALID_SYNTAX on failure
            // (draft-ietf-ipsecme-ikev2-mlkem §2.2).
            Some(k) => self
                .provider
                .respond_key_exchange(method, &k.data)
                .map_err(Error::from),
        };
        let response = match outcome {
            Ok(r) => r,
            Err(e) => {
                if let Some(n) = e.notify_payload() {
                    let inner = [Payload::Notify(n)];
                    self.respond(
                        spi_r,
                        sa,
                        &mut keyed,
                        ExchangeType::IkeIntermediate,
                        mid,
                        &inner,
                    )?;
                }
                return Err(e);
            }
        };
        #[cfg_attr(not(test), expect(unused_mut, reason = "altered by test faults"))]
        let mut data = response.public_value.clone();
        #[cfg(test)]
        if self.fault_short_ciphertext {
            data.pop();
        }
        let inner = [Payload::Ke(KePayload { method, data })];
        let sent = self.respond(
            spi_r,
            sa,
            &mut keyed,
            ExchangeType::IkeIntermediate,
            mid,
            &inner,
        )?;
        let prf = &*keyed.prf;
        keyed.int_auth.update_initiator(
            prf,
            &keyed.keys.sk_pi,
            &request.int_auth_a,
            &request.plaintext,
        );
        keyed
            .int_auth
            .update_responder(prf, &keyed.keys.sk_pr, &sent.int_auth_a, &sent.plaintext);
        let seed = skeyseed_additional(
            prf,
            &keyed.keys.sk_d,
            &response.shared_secret,
            &keyed.nonce_i,
            &keyed.nonce_r,
        );
        keyed.keys = derive(
            prf,
            &keyed.choice,
            &seed,
            &keyed.nonce_i,
            &keyed.nonce_r,
            sa.spi_i,
            spi_r,
        )?;
        keyed.cipher = SkCipher::new(
            &*self.provider,
            keyed.choice.encr,
            &keyed.keys.sk_er,
            &keyed.keys.sk_ei,
        )?;
        sa.state = if round + 1 < keyed.choice.addke.len() {
            State::ExpectIntermediateRequest {
                keyed,
                round: round + 1,
            }
        } else {
            State::ExpectAuthRequest { keyed }
        };
        Ok(())
    }

    fn on_auth(
        &mut self,
        now: Instant,
        spi_r: u64,
        sa: &mut ResponderSa,
        mut keyed: Box<Keyed>,
        request: Unprotected,
    ) -> Result<(), Error> {
        let mid = request.header.message_id;
        let payloads = &request.payloads;
        let mut id_i = None;
        let mut id_r = None;
        let mut auth = None;
        for p in payloads {
            match p {
                Payload::IdI(x) => id_i = id_i.or(Some(x)),
                Payload::IdR(x) => id_r = id_r.or(Some(x)),
                Payload::Auth(x) => auth = auth.or(Some(x)),
                _ => {}
            }
        }
        let int_auth = keyed.int_auth.octets(mid);
        let verified = (|| {
            let id_i = id_i.ok_or(Error::MissingPayload("IDi"))?;
            // The key of this IDi (finding 7); an IDi without one fails like a wrong AUTH.
            let psk = id_i
                .parsed()
                .ok()
                .and_then(|id| self.config.psk_for(&id))
                .ok_or(Error::AuthenticationFailed)?
                .clone();
            let auth = auth.ok_or(Error::MissingPayload("AUTH"))?;
            if let Some(id_r) = id_r
                && id_r.parsed().ok().as_ref() != Some(&self.config.local_id)
            {
                return Err(Error::IdentityMismatch);
            }
            if auth.method != AuthMethod::SharedKeyMessageIntegrityCode {
                return Err(Error::AuthenticationFailed);
            }
            let prf = &*keyed.prf;
            let maced = maced_id(prf, &keyed.keys.sk_pi, &id_i.body_bytes());
            let octets = signed_octets(
                &keyed.real_message_1,
                &keyed.nonce_r,
                &maced,
                int_auth.as_deref(),
            );
            if psk_auth(prf, &psk, &octets) != SecretBytes::from_slice(&auth.data) {
                return Err(Error::AuthenticationFailed);
            }
            Ok(psk)
        })();
        let psk = match verified {
            Ok(psk) => psk,
            Err(e) => {
                if let Some(n) = e.notify_payload() {
                    let inner = [Payload::Notify(n)];
                    self.respond(spi_r, sa, &mut keyed, ExchangeType::IkeAuth, mid, &inner)?;
                }
                return Err(e);
            }
        };

        let id_r = Identification::new(self.config.local_id.clone());
        let prf = &*keyed.prf;
        let maced = maced_id(prf, &keyed.keys.sk_pr, &id_r.body_bytes());
        let octets = signed_octets(
            &keyed.real_message_2,
            &keyed.nonce_i,
            &maced,
            int_auth.as_deref(),
        );
        #[cfg_attr(not(test), expect(unused_mut, reason = "altered by test faults"))]
        let mut auth_r = psk_auth(prf, &psk, &octets);
        #[cfg(test)]
        if self.fault_wrong_auth {
            auth_r = psk_auth(prf, &SecretBytes::from_slice(b"wrong"), &octets);
        }
        let mut inner = vec![
            Payload::IdR(id_r),
            Payload::Auth(AuthPayload {
                method: AuthMethod::SharedKeyMessageIntegrityCode,
                data: auth_r.expose().to_vec(),
            }),
        ];
        let child = self.child_sa(sa, &keyed, payloads);
        match &child {
            Ok((child, reply, answer)) => {
                if let Some(cp) = reply {
                    inner.push(Payload::Cp(cp.clone()));
                }
                inner.push(Payload::Sa(SaPayload {
                    proposals: vec![answer.clone()],
                }));
                inner.push(Payload::TsI(TsPayload {
                    selectors: child.ts_i.clone(),
                }));
                inner.push(Payload::TsR(TsPayload {
                    selectors: child.ts_r.clone(),
                }));
            }
            Err(e) => {
                // A local failure is not the proposal's fault: "try again later".
                let n = e.notify_payload().unwrap_or_else(|| {
                    NotifyPayload::status(NotifyType::TemporaryFailure, Vec::new())
                });
                inner.push(Payload::Notify(n));
            }
        }
        self.respond(spi_r, sa, &mut keyed, ExchangeType::IkeAuth, mid, &inner)?;
        self.settle(sa);
        let suite = keyed.choice.suite(keyed.mode);
        self.events.push_back((
            spi_r,
            Event::IkeSaEstablished {
                suite: suite.clone(),
            },
        ));
        let child = match child {
            Ok((child, _, _)) => {
                self.esp_spis.insert(child.spi_r);
                self.events
                    .push_back((spi_r, Event::ChildSaEstablished(Box::new(child.clone()))));
                Some(child)
            }
            Err(e) => {
                self.events.push_back((spi_r, Event::ChildSaFailed(e)));
                None
            }
        };
        let c = &self.config;
        let policy = c
            .policies
            .iter()
            .find(|p| {
                p.mode == keyed.mode
                    && p.addke == keyed.choice.addke
                    && p.ke.contains(&keyed.choice.ke)
            })
            .cloned()
            .unwrap_or_else(|| crate::ike::CryptoPolicy {
                mode: keyed.mode,
                encr: keyed.choice.encr,
                prf: keyed.choice.prf,
                ke: vec![keyed.choice.ke],
                addke: keyed.choice.addke.clone(),
            });
        let settings = Settings {
            policy,
            esp: c.esp.clone(),
            retransmit: c.retransmit,
            fragment_size: c.fragment_size,
            nonce_len: c.nonce_len,
            ike_lifetime: c.ike_lifetime,
            child_lifetime: c.child_lifetime,
            dpd_interval: c.dpd_interval,
            require_child_pfs: c.require_child_pfs,
        };
        let keyed = *keyed;
        let ike = IkeSa::new(IkeSaParts {
            spi_i: sa.spi_i,
            spi_r,
            original_initiator: false,
            choice: keyed.choice,
            prf: keyed.prf,
            sk_d: keyed.keys.sk_d,
            cipher: keyed.cipher,
            peer_fragmentation: keyed.peer_fragmentation,
            next_request_id: 0,
            expected_request_id: keyed.expected_message_id,
            last_response: sa.last_response.take(),
        });
        sa.state = State::Established(Box::new(EstablishedSa::new(
            Arc::clone(&self.provider),
            settings,
            false,
            now,
            sa.remote,
            sa.nat_t,
            ike,
            suite,
            child,
        )));
        self.routes.insert(spi_r, spi_r);
        sa.routed = vec![spi_r];
        Ok(())
    }

    /// The Child SA of IKE_AUTH: ESP proposal, virtual address, traffic selectors, KEYMAT.
    fn child_sa(
        &mut self,
        sa: &mut ResponderSa,
        keyed: &Keyed,
        payloads: &[Payload],
    ) -> Result<(ChildSaEstablished, Option<ConfigPayload>, Proposal), Error> {
        let mut proposals = None;
        let mut ts_i = None;
        let mut ts_r = None;
        let mut cp = None;
        for p in payloads {
            match p {
                Payload::Sa(x) => proposals = proposals.or(Some(&x.proposals)),
                Payload::TsI(x) => ts_i = ts_i.or(Some(&x.selectors)),
                Payload::TsR(x) => ts_r = ts_r.or(Some(&x.selectors)),
                Payload::Cp(x) if x.cfg_type == CfgType::Request => cp = cp.or(Some(x)),
                _ => {}
            }
        }
        let proposals = proposals.ok_or(Error::MissingPayload("SA"))?;
        let ts_i = ts_i.ok_or(Error::MissingPayload("TSi"))?;
        let ts_r = ts_r.ok_or(Error::MissingPayload("TSr"))?;
        let (number, esp) = select_esp(&self.config.esp, proposals)?;

        let mut reply = Vec::new();
        let mut assigned: Vec<TrafficSelector> = Vec::new();
        if let Some(cp) = cp {
            let wants = |f: fn(&ConfigAttribute) -> bool| cp.attributes.iter().any(f);
            if wants(|a| matches!(a, ConfigAttribute::InternalIp4Address(_)))
                && let Some(ip) = self.lease_v4(sa)
            {
                reply.push(ConfigAttribute::InternalIp4Address(Some(ip)));
                assigned.push(host_ts(IpAddr::V4(ip)));
            }
            if wants(|a| matches!(a, ConfigAttribute::InternalIp6Address(_)))
                && let Some((ip, len)) = self.lease_v6(sa)
            {
                reply.push(ConfigAttribute::InternalIp6Address(Some((ip, len))));
                assigned.push(host_ts(IpAddr::V6(ip)));
            }
            if assigned.is_empty()
                && (self.config.pool_v4.is_some() || self.config.pool_v6.is_some())
            {
                return Err(Error::InternalAddressFailure);
            }
            for dns in &self.config.dns {
                reply.push(match dns {
                    IpAddr::V4(a) => ConfigAttribute::InternalIp4Dns(Some(*a)),
                    IpAddr::V6(a) => ConfigAttribute::InternalIp6Dns(Some(*a)),
                });
            }
            for (net, mask) in &self.config.subnets_v4 {
                reply.push(ConfigAttribute::InternalIp4Subnet(Some((*net, *mask))));
            }
        }
        // With a pool, TSi is the lease and nothing else: a client that asked for no address
        // may not pick its own, for example another client's (security review finding 1).
        let pool = self.config.pool_v4.is_some() || self.config.pool_v6.is_some();
        if pool && assigned.is_empty() {
            return Err(Error::CpRequired);
        }
        let ts_i_ours: &[TrafficSelector] = if assigned.is_empty() { ts_i } else { &assigned };
        let ts_i = narrow(ts_i_ours, ts_i);
        let ts_r = narrow(&self.config.local_ts, ts_r);
        if ts_i.is_empty() || ts_r.is_empty() {
            return Err(Error::TsUnacceptable);
        }
        let our_spi = random_esp_spi(&*self.provider, |spi| self.esp_spis.contains(&spi))?;
        let keys = ChildSaKeys::derive(
            &*keyed.prf,
            &keyed.keys.sk_d,
            &[],
            &keyed.nonce_i,
            &keyed.nonce_r,
            esp.encr.keymat_len(),
            0,
        )?;
        let reply = (!reply.is_empty()).then_some(ConfigPayload {
            cfg_type: CfgType::Reply,
            attributes: reply,
        });
        Ok((
            ChildSaEstablished {
                spi_i: esp.peer_spi,
                spi_r: our_spi,
                encr: esp.encr,
                esn: esp.esn,
                keys,
                ts_i,
                ts_r,
            },
            reply,
            esp_answer(number, &esp, our_spi),
        ))
    }

    /// Leases the lowest free IPv4 address of the pool to `sa`.
    fn lease_v4(&mut self, sa: &mut ResponderSa) -> Option<Ipv4Addr> {
        let (first, last) = self.config.pool_v4?;
        let (first, last) = (u32::from(first), u32::from(last));
        if let Some(index) = sa.lease_v4 {
            return Some(Ipv4Addr::from(first.checked_add(index)?));
        }
        let size = last.checked_sub(first)?.checked_add(1)?;
        let index = (0..size).find(|i| !self.leases_v4.contains(i))?;
        self.leases_v4.insert(index);
        sa.lease_v4 = Some(index);
        Some(Ipv4Addr::from(first.checked_add(index)?))
    }

    /// Leases the lowest free IPv6 address of the pool to `sa`: base + 1 + index, one per
    /// client, at most [`MAX_V6_LEASES`] of them.
    fn lease_v6(&mut self, sa: &mut ResponderSa) -> Option<(Ipv6Addr, u8)> {
        let (base, len) = self.config.pool_v6?;
        let host_bits = 128u32.checked_sub(u32::from(len))?;
        // Addresses base+1 ..= base + 2^host_bits - 1, capped.
        let size = if host_bits >= 32 {
            MAX_V6_LEASES
        } else {
            ((1u32 << host_bits).saturating_sub(1)).min(MAX_V6_LEASES)
        };
        let index = match sa.lease_v6 {
            Some(index) => index,
            None => {
                let index = (0..size).find(|i| !self.leases_v6.contains(i))?;
                self.leases_v6.insert(index);
                sa.lease_v6 = Some(index);
                index
            }
        };
        let ip = u128::from(base).checked_add(u128::from(index) + 1)?;
        Some((Ipv6Addr::from(ip), len))
    }
}

/// The most IPv6 addresses one gateway leases at once.
const MAX_V6_LEASES: u32 = 1 << 16;

/// A selector for exactly one address, all protocols and ports.
fn host_ts(ip: IpAddr) -> TrafficSelector {
    match ip {
        IpAddr::V4(a) => TrafficSelector::Ipv4 {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start_addr: a,
            end_addr: a,
        },
        IpAddr::V6(a) => TrafficSelector::Ipv6 {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start_addr: a,
            end_addr: a,
        },
    }
}

fn derive(
    prf: &dyn Prf,
    choice: &IkeChoice,
    seed: &SecretBytes,
    nonce_i: &[u8],
    nonce_r: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> Result<IkeSaKeys, Error> {
    let lengths = choice.key_lengths(prf);
    Ok(IkeSaKeys::derive(
        prf, seed, nonce_i, nonce_r, spi_i, spi_r, lengths,
    )?)
}
