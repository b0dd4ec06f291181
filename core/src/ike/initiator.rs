//! The IKE initiator (the VPN client): IKE_SA_INIT, IKE_INTERMEDIATE rounds for additional key
//! exchanges, IKE_AUTH with PSK and the first Child SA ([RFC 7296 §1.2], [RFC 9242],
//! [RFC 9370]).
//!
//! Each handshake state is a type that holds exactly what it needs and is consumed by the
//! transition out of it. Nothing here reads a clock or the OS: time comes in as `now`,
//! randomness from the [`CryptoProvider`].
//!
//! [RFC 7296 §1.2]: https://www.rfc-editor.org/rfc/rfc7296#section-1.2
//! [RFC 9242]: https://www.rfc-editor.org/rfc/rfc9242
//! [RFC 9370]: https://www.rfc-editor.org/rfc/rfc9370

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::crypto::{CryptoProvider, KeyExchange, Prf, SecretBytes};
use crate::ike::Error;
use crate::ike::config::{InitiatorConfig, esp_proposals};
use crate::ike::config_reply;
use crate::ike::established::{EstablishedSa, IkeSa, IkeSaParts, Settings, Status};
use crate::ike::keys::{
    ChildSaKeys, IkeSaKeys, IntAuth, maced_id, psk_auth, signed_octets, skeyseed,
    skeyseed_additional,
};
use crate::ike::proposal::{IkeChoice, check_esp_choice, check_ike_choice, is_narrowing};
use crate::ike::protect::{Reassembly, SkCipher, Unprotected, unprotect};
use crate::ike::sa::{
    ChildSaEstablished, ConfigReceived, Event, NAT_T_PORT, Outbox, Outstanding, Suite, Transmit,
    fake_nat_source, find_notify, first_error_notify, nat_detection_hash, random_bytes,
    random_esp_spi, random_spi,
};
use crate::wire::{
    AuthMethod, AuthPayload, CfgType, ConfigAttribute, ConfigPayload, ExchangeType, Flags,
    HashAlgorithm, Header, Identification, KePayload, Message, Nonce, NotifyPayload, NotifyType,
    Payload, SaPayload, TsPayload, locate_encrypted,
};

/// At most this many COOKIE restarts of IKE_SA_INIT (RFC 7296 §2.6) before giving up.
const MAX_COOKIE_RESTARTS: u8 = 3;

/// An IKE SA as initiator.
///
/// Feed it every IKE message from the responder ([`handle_datagram`](Self::handle_datagram),
/// non-ESP marker already stripped) and every timeout; send what
/// [`poll_transmit`](Self::poll_transmit) writes; act on [`poll_event`](Self::poll_event).
pub struct Initiator {
    provider: Arc<dyn CryptoProvider>,
    config: InitiatorConfig,
    local: SocketAddr,
    remote: SocketAddr,
    nat_t: bool,
    spi_i: u64,
    spi_r: u64,
    state: State,
    outbox: Outbox,
    events: VecDeque<Event>,
    outstanding: Option<Outstanding>,
    reassembly: Reassembly,
    /// Test-only misbehaviour: send an ML-KEM encapsulation key failing the modulus check.
    #[cfg(test)]
    pub(crate) fault_bad_encapsulation_key: bool,
}

impl core::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Initiator")
            .field("remote", &self.remote)
            .field("spi_i", &format_args!("{:016x}", self.spi_i))
            .field("spi_r", &format_args!("{:016x}", self.spi_r))
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

enum State {
    ExpectSaInitResponse(ExpectSaInitResponse),
    ExpectIntermediateResponse(ExpectIntermediateResponse),
    ExpectAuthResponse(ExpectAuthResponse),
    Established(Box<EstablishedSa>),
    Closed,
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::ExpectSaInitResponse(_) => "ExpectSaInitResponse",
            Self::ExpectIntermediateResponse(_) => "ExpectIntermediateResponse",
            Self::ExpectAuthResponse(_) => "ExpectAuthResponse",
            Self::Established(_) => "Established",
            Self::Closed => "Closed",
            Self::Failed => "Failed",
        }
    }
}

/// IKE_SA_INIT sent; waiting for the responder's SA, KE and nonce.
struct ExpectSaInitResponse {
    ke: Box<dyn KeyExchange>,
    nonce_i: Vec<u8>,
    cookie: Option<Vec<u8>>,
    cookie_restarts: u8,
    /// The request as sent: RealMessage1 if it is the one answered.
    request: Vec<u8>,
}

/// Everything an IKE SA holds once IKE_SA_INIT completed.
struct Keyed {
    choice: IkeChoice,
    prf: Box<dyn Prf>,
    nonce_i: Vec<u8>,
    nonce_r: Vec<u8>,
    keys: IkeSaKeys,
    cipher: SkCipher,
    real_message_1: Vec<u8>,
    real_message_2: Vec<u8>,
    peer_fragmentation: bool,
    int_auth: IntAuth,
    next_message_id: u32,
}

/// IKE_INTERMEDIATE request with KEi(n) sent (RFC 9370 §2.2.2).
struct ExpectIntermediateResponse {
    keyed: Keyed,
    /// Index into `choice.addke` of this round.
    round: usize,
    ke: Box<dyn KeyExchange>,
    request_a: Vec<u8>,
    request_p: Vec<u8>,
}

/// IKE_AUTH request sent.
struct ExpectAuthResponse {
    keyed: Keyed,
    child_spi_i: u32,
    int_auth: Option<Vec<u8>>,
}

impl Initiator {
    /// Starts an IKE SA from `local` to the gateway at `remote` and queues IKE_SA_INIT.
    ///
    /// `remote` is normally port 500; the SA floats to 4500 after IKE_SA_INIT when a NAT is
    /// detected or UDP encapsulation is forced (RFC 7296 §2.23). A `remote` on port 4500 starts
    /// there directly, with the non-ESP marker.
    pub fn new(
        provider: Arc<dyn CryptoProvider>,
        config: InitiatorConfig,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<Self, Error> {
        let spi_i = random_spi(&*provider)?;
        let method = *config
            .policy
            .ke
            .first()
            .ok_or(Error::ApiMisuse("policy has no key exchange method"))?;
        let ke = provider.start_key_exchange(method)?;
        let nonce_i = random_bytes(&*provider, config.nonce_len.clamp(16, 256))?;
        let mut this = Self {
            nat_t: remote.port() == NAT_T_PORT,
            provider,
            config,
            local,
            remote,
            spi_i,
            spi_r: 0,
            state: State::Failed,
            outbox: Outbox::default(),
            events: VecDeque::new(),
            outstanding: None,
            reassembly: Reassembly::default(),
            #[cfg(test)]
            fault_bad_encapsulation_key: false,
        };
        let pending = ExpectSaInitResponse {
            ke,
            nonce_i,
            cookie: None,
            cookie_restarts: 0,
            request: Vec::new(),
        };
        this.state = State::ExpectSaInitResponse(this.send_sa_init(now, pending));
        Ok(this)
    }

    /// The initiator's SPI of the current IKE SA (after a rekey the gateway started, the
    /// gateway's).
    pub fn spi_i(&self) -> u64 {
        match &self.state {
            State::Established(e) => e.spis().0,
            _ => self.spi_i,
        }
    }

    /// The responder's SPI of the current IKE SA (0 until IKE_SA_INIT completed).
    pub fn spi_r(&self) -> u64 {
        match &self.state {
            State::Established(e) => e.spis().1,
            _ => self.spi_r,
        }
    }

    /// The gateway's address as currently used (port 4500 once floated).
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Whether IKE and ESP use UDP encapsulation on port 4500.
    pub fn is_nat_t(&self) -> bool {
        self.nat_t
    }

    /// Whether the IKE SA is authenticated.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// The negotiated algorithms, once established.
    pub fn suite(&self) -> Option<&Suite> {
        match &self.state {
            State::Established(e) => Some(e.suite()),
            _ => None,
        }
    }

    /// Whether the SA failed (a [`Event::Failed`] was queued).
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// Whether the IKE SA was deleted in an orderly way (an [`Event::Closed`] was queued).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The Child SAs up, `_i` being this side (the client).
    pub fn child_sas(&self) -> Vec<ChildSaEstablished> {
        match &self.state {
            State::Established(e) => e.child_sas().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Reports that an authentic ESP packet arrived at `now`: the gateway is alive, so no
    /// liveness check is needed until `dpd_interval` after it ([RFC 7296 §2.4]).
    ///
    /// [RFC 7296 §2.4]: https://www.rfc-editor.org/rfc/rfc7296#section-2.4
    pub fn handle_inbound_traffic(&mut self, now: Instant) {
        if let State::Established(e) = &mut self.state {
            e.handle_inbound_traffic(now);
        }
    }

    /// Rekeys the Child SA with `spi` (either of its SPIs) now, e.g. when the ESP layer nears
    /// its sequence number limit ([RFC 4303 §3.3.3]). Queued if another exchange is running.
    ///
    /// # Errors
    ///
    /// [`Error::ApiMisuse`] if the SA is not established or has no such Child SA.
    ///
    /// [RFC 4303 §3.3.3]: https://www.rfc-editor.org/rfc/rfc4303#section-3.3.3
    pub fn rekey_child_sa(&mut self, now: Instant, spi: u32) -> Result<(), Error> {
        let State::Established(e) = &mut self.state else {
            return Err(Error::ApiMisuse("the IKE SA is not established"));
        };
        let result = e.rekey_child_sa(now, spi);
        self.drain();
        result
    }

    /// Rekeys the IKE SA now ([RFC 7296 §2.18]), as its soft lifetime would.
    ///
    /// [RFC 7296 §2.18]: https://www.rfc-editor.org/rfc/rfc7296#section-2.18
    pub fn rekey_ike_sa(&mut self, now: Instant) {
        if let State::Established(e) = &mut self.state {
            e.rekey_ike_sa(now);
            self.drain();
        }
    }

    /// Deletes the IKE SA and its Child SAs ([RFC 7296 §1.4.1]); [`Event::Closed`] follows once
    /// the gateway answered or stopped answering. Before establishment the SA is just dropped.
    ///
    /// [RFC 7296 §1.4.1]: https://www.rfc-editor.org/rfc/rfc7296#section-1.4.1
    pub fn close(&mut self, now: Instant) {
        match &mut self.state {
            State::Established(e) => {
                e.close(now);
                self.drain();
            }
            State::Closed | State::Failed => {}
            _ => {
                self.state = State::Closed;
                self.outstanding = None;
                self.outbox.clear();
                self.events.push_back(Event::Closed);
            }
        }
    }

    /// Moves what the established SA produced to this side's queues.
    fn drain(&mut self) {
        let State::Established(e) = &mut self.state else {
            return;
        };
        self.outbox.append(&mut e.outbox);
        self.events.extend(e.events.drain(..));
        self.remote = e.remote;
        match e.status() {
            Status::Up => {}
            Status::Closed => self.state = State::Closed,
            Status::Failed => self.state = State::Failed,
        }
    }

    /// Test access to the established SA.
    #[cfg(test)]
    pub(crate) fn established_mut(&mut self) -> Option<&mut EstablishedSa> {
        match &mut self.state {
            State::Established(e) => Some(e),
            _ => None,
        }
    }

    /// The next datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.outbox.poll(buf)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Established(e) => e.poll_timeout(),
            _ => self.outstanding.as_ref().map(Outstanding::deadline),
        }
    }

    /// Retransmits the outstanding request when due, or fails the SA with
    /// [`Error::Timeout`] once every attempt is spent (RFC 7296 §2.1). Once established: rekeys
    /// at the soft lifetimes, liveness checks, and [`Error::DeadPeer`] when a request of the
    /// established SA goes unanswered.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::Established(e) = &mut self.state {
            e.handle_timeout(now);
            self.drain();
            return;
        }
        let Some(outstanding) = self.outstanding.as_mut() else {
            return;
        };
        match outstanding.on_timeout(now, &self.config.retransmit) {
            Ok(None) => {}
            Ok(Some(datagrams)) => {
                for d in datagrams.iter().cloned() {
                    self.outbox.push(self.remote, self.nat_t, d);
                }
            }
            Err(e) => self.fail(e),
        }
    }

    /// Processes one IKE message from the responder (without the non-ESP marker).
    ///
    /// Messages that do not belong to this SA, are not the response to the outstanding
    /// request, or fail their integrity check are dropped and change nothing
    /// ([RFC 7296 §2.21]).
    ///
    /// [RFC 7296 §2.21]: https://www.rfc-editor.org/rfc/rfc7296#section-2.21
    pub fn handle_datagram(&mut self, now: Instant, remote: SocketAddr, datagram: &[u8]) {
        let Ok(header) = Header::parse(datagram) else {
            return;
        };
        if let State::Established(e) = &mut self.state {
            e.handle_datagram(now, None, &header, datagram);
            self.drain();
            return;
        }
        if header.spi_i != self.spi_i || !header.flags.response || header.flags.initiator {
            return;
        }
        let Some(message_id) = self.outstanding.as_ref().map(|o| o.message_id) else {
            return;
        };
        if header.message_id != message_id {
            return;
        }
        let state = core::mem::replace(&mut self.state, State::Failed);
        let result = match state {
            State::ExpectSaInitResponse(s) => self.on_sa_init_response(now, remote, s, datagram),
            State::ExpectIntermediateResponse(s) => self.on_intermediate_response(now, s, datagram),
            State::ExpectAuthResponse(s) => self.on_auth_response(now, s, datagram),
            other => Ok(other),
        };
        match result {
            Ok(next) => self.state = next,
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, error: Error) {
        self.state = State::Failed;
        self.outstanding = None;
        self.outbox.clear();
        self.reassembly.clear();
        self.events.push_back(Event::Failed(error));
    }

    fn send_request(&mut self, now: Instant, message_id: u32, datagrams: Vec<Vec<u8>>) {
        for d in &datagrams {
            self.outbox.push(self.remote, self.nat_t, d.clone());
        }
        self.outstanding = Some(Outstanding::new(
            now,
            &self.config.retransmit,
            message_id,
            datagrams,
        ));
    }

    /// Largest IKE message before RFC 7383 fragmentation, if the peer supports it.
    fn max_message(&self, keyed: &Keyed) -> Option<usize> {
        if !keyed.peer_fragmentation {
            return None;
        }
        let ip_udp = match self.remote.ip() {
            IpAddr::V4(_) => 20 + 8,
            IpAddr::V6(_) => 40 + 8,
        };
        let marker = if self.nat_t { 4 } else { 0 };
        Some(self.config.fragment_size.saturating_sub(ip_udp + marker))
    }

    // ----------------------------------------------------------------------- IKE_SA_INIT

    fn send_sa_init(&mut self, now: Instant, mut s: ExpectSaInitResponse) -> ExpectSaInitResponse {
        let policy = &self.config.policy;
        let mut payloads = Vec::new();
        if let Some(cookie) = &s.cookie {
            // The cookie goes first (RFC 7296 §2.6).
            payloads.push(Payload::Notify(NotifyPayload::status(
                NotifyType::Cookie,
                cookie.clone(),
            )));
        }
        payloads.push(Payload::Sa(SaPayload {
            proposals: vec![policy.ike_proposal()],
        }));
        payloads.push(Payload::Ke(KePayload {
            method: s.ke.method(),
            data: s.ke.public_value().to_vec(),
        }));
        if let Ok(nonce) = Nonce::new(s.nonce_i.clone()) {
            payloads.push(Payload::Nonce(nonce));
        }
        let source = if self.config.force_udp_encapsulation {
            fake_nat_source(self.local)
        } else {
            self.local
        };
        let p = &*self.provider;
        payloads.push(Payload::Notify(NotifyPayload::status(
            NotifyType::NatDetectionSourceIp,
            nat_detection_hash(p, self.spi_i, 0, source).to_vec(),
        )));
        payloads.push(Payload::Notify(NotifyPayload::status(
            NotifyType::NatDetectionDestinationIp,
            nat_detection_hash(p, self.spi_i, 0, self.remote).to_vec(),
        )));
        payloads.push(Payload::Notify(NotifyPayload::status(
            NotifyType::Ikev2FragmentationSupported,
            Vec::new(),
        )));
        if !policy.addke.is_empty() {
            payloads.push(Payload::Notify(NotifyPayload::status(
                NotifyType::IntermediateExchangeSupported,
                Vec::new(),
            )));
        }
        payloads.push(Payload::Notify(NotifyPayload::signature_hash_algorithms(
            &[
                HashAlgorithm::Sha2_256,
                HashAlgorithm::Sha2_384,
                HashAlgorithm::Sha2_512,
            ],
        )));
        let header = Header::new(
            self.spi_i,
            0,
            ExchangeType::IkeSaInit,
            Flags::initiator_request(),
            0,
        );
        s.request = Message::new(header, payloads).emit();
        self.send_request(now, 0, vec![s.request.clone()]);
        s
    }

    fn on_sa_init_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        mut s: ExpectSaInitResponse,
        datagram: &[u8],
    ) -> Result<State, Error> {
        // IKE_SA_INIT is unprotected: a response that does not parse is dropped, and the
        // request is retransmitted as if it had been lost.
        let Ok(message) = Message::parse(datagram) else {
            return Ok(State::ExpectSaInitResponse(s));
        };
        let payloads = &message.payloads;
        if let Some(cookie) = find_notify(payloads, NotifyType::Cookie) {
            if s.cookie_restarts >= MAX_COOKIE_RESTARTS || cookie.data.is_empty() {
                return Err(Error::PeerMisbehaved("COOKIE loop"));
            }
            s.cookie_restarts += 1;
            s.cookie = Some(cookie.data.clone());
            return Ok(State::ExpectSaInitResponse(self.send_sa_init(now, s)));
        }
        if let Some(n) = find_notify(payloads, NotifyType::InvalidKePayload) {
            let method = n
                .invalid_ke_payload_method()
                .ok_or(Error::PeerMisbehaved("INVALID_KE_PAYLOAD without a method"))?;
            // Retry only with a method the policy offers and that differs from the one sent
            // (RFC 7296 §1.2); a new ephemeral key, same SPI and nonce.
            if method == s.ke.method() || !self.config.policy.ke.contains(&method) {
                return Err(Error::UnacceptableKeyExchange(method));
            }
            s.ke = self.provider.start_key_exchange(method)?;
            return Ok(State::ExpectSaInitResponse(self.send_sa_init(now, s)));
        }
        if let Some(error) = first_error_notify(payloads) {
            return Err(if error == NotifyType::NoProposalChosen {
                Error::GatewayRejectedProposal(self.config.policy.mode)
            } else {
                Error::NotifyReceived(error)
            });
        }
        // Everything below is checked before any state changes. A response that is malformed
        // or carries unusable key exchange data may be forged (IKE_SA_INIT is not protected):
        // it is dropped and the genuine response can still arrive. A well-formed choice we
        // cannot accept is the responder's answer and ends the SA.
        let checked = self.check_sa_init_response(&s, &message);
        let (choice, shared, nonce_r) = match checked {
            Ok(c) => c,
            Err(e @ (Error::GatewayRefusedMlKem | Error::ProposalMismatch(_))) => return Err(e),
            Err(_) => return Ok(State::ExpectSaInitResponse(s)),
        };
        self.spi_r = message.header.spi_r;

        // NAT detection (RFC 7296 §2.23): float to 4500 if either side is behind a NAT, or
        // when UDP encapsulation is forced.
        let p = &*self.provider;
        let nat_behind_us = find_notify(payloads, NotifyType::NatDetectionDestinationIp)
            .is_some_and(|n| n.data != nat_detection_hash(p, self.spi_i, self.spi_r, self.local));
        let nat_behind_them = find_notify(payloads, NotifyType::NatDetectionSourceIp)
            .is_some_and(|n| n.data != nat_detection_hash(p, self.spi_i, self.spi_r, from));
        if self.config.force_udp_encapsulation || nat_behind_us || nat_behind_them {
            self.nat_t = true;
            if self.remote.port() != NAT_T_PORT {
                self.remote.set_port(NAT_T_PORT);
            }
        }

        let prf = self.provider.prf(choice.prf)?;
        let nonce_r = nonce_r.into_vec();
        let seed = skeyseed(&*prf, &s.nonce_i, &nonce_r, &shared);
        let keys = self.derive_keys(&*prf, &choice, &seed, &s.nonce_i, &nonce_r)?;
        let cipher = SkCipher::new(&*self.provider, choice.encr, &keys.sk_ei, &keys.sk_er)?;
        self.outstanding = None;
        let keyed = Keyed {
            choice,
            prf,
            nonce_i: s.nonce_i,
            nonce_r,
            keys,
            cipher,
            real_message_1: s.request,
            real_message_2: datagram.to_vec(),
            peer_fragmentation: find_notify(payloads, NotifyType::Ikev2FragmentationSupported)
                .is_some(),
            int_auth: IntAuth::new(),
            next_message_id: 1,
        };
        self.next_after_keys(now, keyed, 0)
    }

    /// Validates an IKE_SA_INIT response and completes the key exchange, changing nothing.
    fn check_sa_init_response(
        &self,
        s: &ExpectSaInitResponse,
        message: &Message,
    ) -> Result<(IkeChoice, SecretBytes, Nonce), Error> {
        let payloads = &message.payloads;
        if message.header.spi_r == 0 {
            return Err(Error::PeerMisbehaved("IKE_SA_INIT response without SPIr"));
        }
        let mut sa = None;
        let mut ker = None;
        let mut nonce_r = None;
        for p in payloads {
            match p {
                Payload::Sa(x) => sa = sa.or(Some(x)),
                Payload::Ke(x) => ker = ker.or(Some(x)),
                Payload::Nonce(x) => nonce_r = nonce_r.or(Some(x)),
                _ => {}
            }
        }
        let sa = sa.ok_or(Error::MissingPayload("SA"))?;
        let ker = ker.ok_or(Error::MissingPayload("KE"))?;
        let nonce_r = nonce_r.ok_or(Error::MissingPayload("Nonce"))?;
        let choice = check_ike_choice(&self.config.policy, s.ke.method(), &sa.proposals)?;
        if !choice.addke.is_empty()
            && find_notify(payloads, NotifyType::IntermediateExchangeSupported).is_none()
        {
            return Err(Error::PeerMisbehaved(
                "additional key exchange chosen without IKE_INTERMEDIATE support",
            ));
        }
        if ker.method != choice.ke {
            return Err(Error::WrongKeyExchangeMethod {
                expected: choice.ke,
                got: ker.method,
            });
        }
        let shared = s.ke.complete(&ker.data)?;
        Ok((choice, shared, nonce_r.clone()))
    }

    fn derive_keys(
        &self,
        prf: &dyn Prf,
        choice: &IkeChoice,
        seed: &SecretBytes,
        nonce_i: &[u8],
        nonce_r: &[u8],
    ) -> Result<IkeSaKeys, Error> {
        let lengths = choice.key_lengths(prf);
        Ok(IkeSaKeys::derive(
            prf, seed, nonce_i, nonce_r, self.spi_i, self.spi_r, lengths,
        )?)
    }

    /// After a key update: the next IKE_INTERMEDIATE round, or IKE_AUTH.
    fn next_after_keys(
        &mut self,
        now: Instant,
        keyed: Keyed,
        round: usize,
    ) -> Result<State, Error> {
        match keyed.choice.addke.get(round) {
            Some(&method) => self.send_intermediate(now, keyed, round, method),
            None => self.send_auth(now, keyed),
        }
    }

    // ----------------------------------------------------------------------- IKE_INTERMEDIATE

    fn send_intermediate(
        &mut self,
        now: Instant,
        mut keyed: Keyed,
        round: usize,
        method: crate::wire::KeyExchangeMethod,
    ) -> Result<State, Error> {
        let ke = self.provider.start_key_exchange(method)?;
        let message_id = keyed.next_message_id;
        keyed.next_message_id += 1;
        let header = Header::new(
            self.spi_i,
            self.spi_r,
            ExchangeType::IkeIntermediate,
            Flags::initiator_request(),
            message_id,
        );
        #[cfg_attr(not(test), expect(unused_mut, reason = "altered by test faults"))]
        let mut data = ke.public_value().to_vec();
        #[cfg(test)]
        if self.fault_bad_encapsulation_key {
            // The first 12-bit coefficient becomes 0xFFF, above q = 3329.
            data[0] = 0xff;
            data[1] |= 0x0f;
        }
        let inner = [Payload::Ke(KePayload { method, data })];
        let max = self.max_message(&keyed);
        let protected = keyed.cipher.protect(&header, &inner, max)?;
        self.send_request(now, message_id, protected.datagrams);
        Ok(State::ExpectIntermediateResponse(
            ExpectIntermediateResponse {
                keyed,
                round,
                ke,
                request_a: protected.int_auth_a,
                request_p: protected.plaintext,
            },
        ))
    }

    /// Decrypts a response. `Ok(None)`: dropped (bad integrity) or more fragments awaited;
    /// the state stays as it was.
    fn open(&mut self, keyed: &Keyed, datagram: &[u8]) -> Result<Option<Unprotected>, Error> {
        let Ok(Some(view)) = locate_encrypted(datagram) else {
            return Ok(None);
        };
        match unprotect(&keyed.cipher, &mut self.reassembly, &view) {
            Ok(u) => Ok(u),
            Err(Error::IntegrityCheckFailed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn on_intermediate_response(
        &mut self,
        now: Instant,
        s: ExpectIntermediateResponse,
        datagram: &[u8],
    ) -> Result<State, Error> {
        let Some(response) = self.open(&s.keyed, datagram)? else {
            return Ok(State::ExpectIntermediateResponse(s));
        };
        let ExpectIntermediateResponse {
            mut keyed,
            round,
            ke,
            request_a,
            request_p,
        } = s;
        if let Some(error) = first_error_notify(&response.payloads) {
            return Err(Error::NotifyReceived(error));
        }
        let ker = response
            .payloads
            .iter()
            .find_map(|p| match p {
                Payload::Ke(k) => Some(k),
                _ => None,
            })
            .ok_or(Error::MissingPayload("KE"))?;
        if ker.method != ke.method() {
            return Err(Error::WrongKeyExchangeMethod {
                expected: ke.method(),
                got: ker.method,
            });
        }
        // FIPS 203 §7.3 ciphertext check inside `complete`; failure aborts the SA before
        // IKE_AUTH (draft-ietf-ipsecme-ikev2-mlkem §2.2).
        let shared = ke.complete(&ker.data)?;
        self.outstanding = None;
        // Both IntAuth values use the keys that protected the exchange (RFC 9242 §3.3.2).
        let prf = &*keyed.prf;
        keyed
            .int_auth
            .update_initiator(prf, &keyed.keys.sk_pi, &request_a, &request_p);
        keyed.int_auth.update_responder(
            prf,
            &keyed.keys.sk_pr,
            &response.int_auth_a,
            &response.plaintext,
        );
        let seed = skeyseed_additional(
            prf,
            &keyed.keys.sk_d,
            &shared,
            &keyed.nonce_i,
            &keyed.nonce_r,
        );
        keyed.keys = self.derive_keys(prf, &keyed.choice, &seed, &keyed.nonce_i, &keyed.nonce_r)?;
        keyed.cipher = SkCipher::new(
            &*self.provider,
            keyed.choice.encr,
            &keyed.keys.sk_ei,
            &keyed.keys.sk_er,
        )?;
        self.next_after_keys(now, keyed, round + 1)
    }

    // ----------------------------------------------------------------------- IKE_AUTH

    fn send_auth(&mut self, now: Instant, mut keyed: Keyed) -> Result<State, Error> {
        let message_id = keyed.next_message_id;
        keyed.next_message_id += 1;
        let int_auth = keyed.int_auth.octets(message_id);
        let id_i = Identification::new(self.config.local_id.clone());
        let prf = &*keyed.prf;
        let maced = maced_id(prf, &keyed.keys.sk_pi, &id_i.body_bytes());
        let octets = signed_octets(
            &keyed.real_message_1,
            &keyed.nonce_r,
            &maced,
            int_auth.as_deref(),
        );
        let auth = psk_auth(prf, &self.config.psk, &octets);
        // The first Child SA: no other SPI of ours exists yet.
        let child_spi_i = random_esp_spi(&*self.provider, |_| false)?;

        let mut inner = vec![Payload::IdI(id_i)];
        inner.push(Payload::Notify(NotifyPayload::status(
            NotifyType::InitialContact,
            Vec::new(),
        )));
        if let Some(id_r) = &self.config.remote_id {
            inner.push(Payload::IdR(Identification::new(id_r.clone())));
        }
        inner.push(Payload::Auth(AuthPayload {
            method: AuthMethod::SharedKeyMessageIntegrityCode,
            data: auth.expose().to_vec(),
        }));
        let mut attributes = Vec::new();
        if self.config.request_ipv4 {
            attributes.push(ConfigAttribute::InternalIp4Address(None));
            attributes.push(ConfigAttribute::InternalIp4Dns(None));
        }
        if self.config.request_ipv6 {
            attributes.push(ConfigAttribute::InternalIp6Address(None));
            attributes.push(ConfigAttribute::InternalIp6Dns(None));
        }
        if !attributes.is_empty() {
            inner.push(Payload::Cp(ConfigPayload {
                cfg_type: CfgType::Request,
                attributes,
            }));
        }
        inner.push(Payload::Sa(SaPayload {
            proposals: esp_proposals(&self.config.esp, child_spi_i),
        }));
        inner.push(Payload::TsI(TsPayload {
            selectors: self.config.ts_i.clone(),
        }));
        inner.push(Payload::TsR(TsPayload {
            selectors: self.config.ts_r.clone(),
        }));
        let header = Header::new(
            self.spi_i,
            self.spi_r,
            ExchangeType::IkeAuth,
            Flags::initiator_request(),
            message_id,
        );
        let max = self.max_message(&keyed);
        let protected = keyed.cipher.protect(&header, &inner, max)?;
        self.send_request(now, message_id, protected.datagrams);
        Ok(State::ExpectAuthResponse(ExpectAuthResponse {
            keyed,
            child_spi_i,
            int_auth,
        }))
    }

    fn on_auth_response(
        &mut self,
        now: Instant,
        s: ExpectAuthResponse,
        datagram: &[u8],
    ) -> Result<State, Error> {
        let Some(response) = self.open(&s.keyed, datagram)? else {
            return Ok(State::ExpectAuthResponse(s));
        };
        self.outstanding = None;
        let payloads = &response.payloads;
        let mut id_r = None;
        let mut auth = None;
        for p in payloads {
            match p {
                Payload::IdR(x) => id_r = id_r.or(Some(x)),
                Payload::Auth(x) => auth = auth.or(Some(x)),
                _ => {}
            }
        }
        let Some(auth) = auth else {
            // Without AUTH the IKE SA failed; the Notify says why (RFC 7296 §2.21.2).
            return Err(match first_error_notify(payloads) {
                Some(t) => Error::NotifyReceived(t),
                None => Error::MissingPayload("AUTH"),
            });
        };
        let id_r = id_r.ok_or(Error::MissingPayload("IDr"))?;
        if let Some(expected) = &self.config.remote_id
            && id_r.parsed().ok().as_ref() != Some(expected)
        {
            return Err(Error::IdentityMismatch);
        }
        // Verify the responder before anything is established (RFC 7296 §2.15).
        let keyed = s.keyed;
        let prf = &*keyed.prf;
        if auth.method != AuthMethod::SharedKeyMessageIntegrityCode {
            return Err(Error::AuthenticationFailed);
        }
        let maced = maced_id(prf, &keyed.keys.sk_pr, &id_r.body_bytes());
        let octets = signed_octets(
            &keyed.real_message_2,
            &keyed.nonce_i,
            &maced,
            s.int_auth.as_deref(),
        );
        let expected = psk_auth(prf, &self.config.psk, &octets);
        if expected != SecretBytes::from_slice(&auth.data) {
            return Err(Error::AuthenticationFailed);
        }
        let suite = keyed.choice.suite(self.config.policy.mode);
        self.events.push_back(Event::IkeSaEstablished {
            suite: suite.clone(),
        });
        let child = match self.child_sa(&keyed, s.child_spi_i, payloads) {
            Ok((child, config)) => {
                if let Some(config) = config {
                    self.events.push_back(Event::ConfigReceived(config));
                }
                self.events
                    .push_back(Event::ChildSaEstablished(Box::new(child.clone())));
                Some(child)
            }
            Err(e) => {
                self.events.push_back(Event::ChildSaFailed(e));
                None
            }
        };
        let c = &self.config;
        let settings = Settings {
            policy: c.policy.clone(),
            esp: c.esp.clone(),
            retransmit: c.retransmit,
            fragment_size: c.fragment_size,
            nonce_len: c.nonce_len,
            ike_lifetime: c.ike_lifetime,
            child_lifetime: c.child_lifetime,
            dpd_interval: c.dpd_interval,
            require_child_pfs: c.require_child_pfs,
        };
        let ike = IkeSa::new(IkeSaParts {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            original_initiator: true,
            choice: keyed.choice,
            prf: keyed.prf,
            sk_d: keyed.keys.sk_d,
            cipher: keyed.cipher,
            peer_fragmentation: keyed.peer_fragmentation,
            next_request_id: keyed.next_message_id,
            expected_request_id: 0,
            last_response: None,
        });
        Ok(State::Established(Box::new(EstablishedSa::new(
            Arc::clone(&self.provider),
            settings,
            true,
            now,
            self.remote,
            self.nat_t,
            ike,
            suite,
            child,
        ))))
    }

    /// The Child SA part of the IKE_AUTH response (RFC 7296 §1.2, §2.9, §2.17, §3.15).
    fn child_sa(
        &self,
        keyed: &Keyed,
        child_spi_i: u32,
        payloads: &[Payload],
    ) -> Result<(ChildSaEstablished, Option<ConfigReceived>), Error> {
        if let Some(error) = first_error_notify(payloads) {
            return Err(Error::NotifyReceived(error));
        }
        let mut sa = None;
        let mut ts_i = None;
        let mut ts_r = None;
        let mut cp = None;
        for p in payloads {
            match p {
                Payload::Sa(x) => sa = sa.or(Some(x)),
                Payload::TsI(x) => ts_i = ts_i.or(Some(x)),
                Payload::TsR(x) => ts_r = ts_r.or(Some(x)),
                Payload::Cp(x) if x.cfg_type == CfgType::Reply => cp = cp.or(Some(x)),
                _ => {}
            }
        }
        let sa = sa.ok_or(Error::MissingPayload("SA"))?;
        let ts_i = ts_i.ok_or(Error::MissingPayload("TSi"))?;
        let ts_r = ts_r.ok_or(Error::MissingPayload("TSr"))?;
        let esp = check_esp_choice(&self.config.esp, &sa.proposals)?;
        if !is_narrowing(&self.config.ts_i, &ts_i.selectors)
            || !is_narrowing(&self.config.ts_r, &ts_r.selectors)
        {
            return Err(Error::TsUnacceptable);
        }
        let keys = ChildSaKeys::derive(
            &*keyed.prf,
            &keyed.keys.sk_d,
            &[],
            &keyed.nonce_i,
            &keyed.nonce_r,
            esp.encr.keymat_len(),
            0,
        )?;
        let config = cp
            .map(|cp| config_received(cp, self.remote.ip(), &self.config))
            .transpose()?;
        Ok((
            ChildSaEstablished {
                spi_i: child_spi_i,
                spi_r: esp.peer_spi,
                encr: esp.encr,
                esn: esp.esn,
                keys,
                ts_i: ts_i.selectors.clone(),
                ts_r: ts_r.selectors.clone(),
            },
            config,
        ))
    }
}

/// Collects what a CFG_REPLY from `gateway` assigns, checked by [`config_reply::check`].
fn config_received(
    cp: &ConfigPayload,
    gateway: IpAddr,
    config: &InitiatorConfig,
) -> Result<ConfigReceived, Error> {
    let mut out = ConfigReceived::default();
    for a in &cp.attributes {
        match a {
            ConfigAttribute::InternalIp4Address(Some(ip)) => {
                out.virtual_ips.push((IpAddr::V4(*ip), 32));
            }
            ConfigAttribute::InternalIp6Address(Some((ip, len))) => {
                out.virtual_ips.push((IpAddr::V6(*ip), *len));
            }
            ConfigAttribute::InternalIp4Dns(Some(ip)) => out.dns.push(IpAddr::V4(*ip)),
            ConfigAttribute::InternalIp6Dns(Some(ip)) => out.dns.push(IpAddr::V6(*ip)),
            ConfigAttribute::InternalIp4Subnet(Some((ip, mask))) => {
                let len = u8::try_from(u32::from(*mask).leading_ones()).unwrap_or(32);
                out.subnets.push((IpAddr::V4(*ip), len));
            }
            ConfigAttribute::InternalIp6Subnet(Some((ip, len))) => {
                out.subnets.push((IpAddr::V6(*ip), *len));
            }
            _ => {}
        }
    }
    config_reply::check(out, gateway, config).map_err(Error::ConfigReplyRefused)
}
