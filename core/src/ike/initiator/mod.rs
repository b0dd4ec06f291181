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

mod ike_auth;
mod intermediate;
mod sa_init;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::crypto::{CryptoProvider, KeyExchange};
use crate::ike::Error;
use crate::ike::auth::{LocalAuth, PeerAuth};
use crate::ike::config::InitiatorConfig;
use crate::ike::handshake::{Keyed, max_message, new_nonce};
use crate::ike::protect::{Reassembly, Unprotected, unprotect};
use crate::ike::sa::{
    ChildSaEstablished, Event, NAT_T_PORT, Outbox, Outstanding, Suite, Transmit, random_spi,
};
use crate::ike::session::{Session, Status};
use crate::wire::EspSpi;
use crate::wire::{Header, IkeSpi, MessageId, locate_encrypted};

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
    spi_i: IkeSpi,
    spi_r: IkeSpi,
    state: State,
    outbox: Outbox,
    events: VecDeque<Event>,
    outstanding: Option<Outstanding>,
    reassembly: Reassembly,
    /// How we prove our identity in IKE_AUTH, and how the gateway must prove its own.
    local_auth: LocalAuth,
    peer_auth: PeerAuth,
    /// Test-only misbehaviour: send an ML-KEM encapsulation key failing the modulus check.
    #[cfg(test)]
    pub(crate) fault_bad_encapsulation_key: bool,
}

impl core::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Initiator")
            .field("remote", &self.remote)
            .field("spi_i", &self.spi_i)
            .field("spi_r", &self.spi_r)
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

enum State {
    ExpectSaInitResponse(ExpectSaInitResponse),
    ExpectIntermediateResponse(ExpectIntermediateResponse),
    ExpectAuthResponse(ExpectAuthResponse),
    Established(Box<Session>),
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
    child_spi_i: EspSpi,
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
        let nonce_i = new_nonce(&*provider, config.nonce_len)?;
        let mut this = Self {
            nat_t: remote.port() == NAT_T_PORT,
            local_auth: LocalAuth::Psk(config.psk.clone()),
            peer_auth: PeerAuth::Psk(config.psk.clone()),
            provider,
            config,
            local,
            remote,
            spi_i,
            spi_r: IkeSpi::ZERO,
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
    pub fn spi_i(&self) -> IkeSpi {
        match &self.state {
            State::Established(e) => e.spis().0,
            _ => self.spi_i,
        }
    }

    /// The responder's SPI of the current IKE SA (0 until IKE_SA_INIT completed).
    pub fn spi_r(&self) -> IkeSpi {
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
    pub fn rekey_child_sa(&mut self, now: Instant, spi: EspSpi) -> Result<(), Error> {
        let State::Established(e) = &mut self.state else {
            return Err(Error::ApiMisuse("the IKE SA is not established"));
        };
        let result = e.rekey_child_sa(now, spi);
        self.drain();
        result
    }

    /// Checks that the gateway is still there, now (the machine woke up): a DPD, and the IKE SA
    /// fails with [`Error::DeadPeer`] unless the gateway is heard from within `within`
    /// ([RFC 7296 §2.4]). Nothing happens before the SA is established.
    ///
    /// [RFC 7296 §2.4]: https://www.rfc-editor.org/rfc/rfc7296#section-2.4
    pub fn probe(&mut self, now: Instant, within: core::time::Duration) {
        if let State::Established(e) = &mut self.state {
            e.probe(now, within);
            self.drain();
        }
    }

    /// Creates a new Child SA in place of the lost one (CREATE_CHILD_SA without REKEY_SA,
    /// [RFC 7296 §1.3.1]) with its cipher and selectors, unless one is live or already on its
    /// way. [`ChildSaCreated`](crate::ike::Event::ChildSaCreated) follows, or
    /// [`ChildSaFailed`](crate::ike::Event::ChildSaFailed) and the IKE SA's Delete.
    ///
    /// [RFC 7296 §1.3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.1
    pub fn create_child_sa(&mut self, now: Instant) {
        if let State::Established(e) = &mut self.state {
            e.create_child_sa(now);
            self.drain();
        }
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
    pub(crate) fn established_mut(&mut self) -> Option<&mut Session> {
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

    fn send_request(&mut self, now: Instant, message_id: MessageId, datagrams: Vec<Vec<u8>>) {
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
        max_message(
            keyed.peer_fragmentation,
            self.config.fragment_size,
            self.remote,
            self.nat_t,
        )
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
}
