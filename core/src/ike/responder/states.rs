//! The responder's handshake states after IKE_SA_INIT, and the protected requests that move
//! an SA between them: each IKE_INTERMEDIATE round ([RFC 9242], [RFC 9370 §2.2.2]), then
//! IKE_AUTH (in `ike_auth`). Retransmitted requests get the cached response
//! ([RFC 7296 §2.1]).
//!
//! A request is checked (message ID, exchange, integrity) while the state is only borrowed;
//! the state is taken only for the transition, which returns the next one.
//!
//! [RFC 7296 §2.1]: https://www.rfc-editor.org/rfc/rfc7296#section-2.1
//! [RFC 9242]: https://www.rfc-editor.org/rfc/rfc9242
//! [RFC 9370 §2.2.2]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.2

use std::net::SocketAddr;
use std::time::Instant;

use super::{Responder, ResponderSa};
use crate::ike::handshake::{Keyed, max_message};
use crate::ike::protect::{Protected, Unprotected, resend_identical, unprotect};
use crate::ike::sa::Event;
use crate::ike::session::Session;
use crate::ike::{Error, Mode};
use crate::wire::{ExchangeType, Flags, Header, KePayload, MessageId, Payload, locate_encrypted};

/// Where one responder SA stands.
pub(super) enum State {
    ExpectIntermediateRequest(ExpectIntermediateRequest),
    ExpectAuthRequest(ExpectAuthRequest),
    Established(Box<Session>),
    /// Failed; removed once the call that failed it returns.
    Dead,
}

/// IKE_SA_INIT answered with additional key exchanges chosen: round `round` of them next.
pub(super) struct ExpectIntermediateRequest {
    pub(super) keyed: Box<Keyed>,
    pub(super) mode: Mode,
    /// Index into `choice.addke`.
    pub(super) round: usize,
}

/// Every key exchange done: IKE_AUTH next.
pub(super) struct ExpectAuthRequest {
    pub(super) keyed: Box<Keyed>,
    /// The policy's mode the SA was accepted under.
    pub(super) mode: Mode,
}

impl State {
    /// The keys of a half-open SA and the exchange its next request must be.
    fn handshake(&self) -> Option<(&Keyed, ExchangeType)> {
        match self {
            Self::ExpectIntermediateRequest(s) => Some((&s.keyed, ExchangeType::IkeIntermediate)),
            Self::ExpectAuthRequest(s) => Some((&s.keyed, ExchangeType::IkeAuth)),
            Self::Established(_) | Self::Dead => None,
        }
    }

    /// The IKE_SA_INIT request while the SA is half-open.
    pub(super) fn init_request(&self) -> Option<&[u8]> {
        self.handshake().map(|(k, _)| k.real_message_1.as_slice())
    }

    /// After IKE_SA_INIT or an IKE_INTERMEDIATE round: the next round, or IKE_AUTH.
    fn after_key_update(keyed: Box<Keyed>, mode: Mode, round: usize) -> Self {
        if round < keyed.choice.addke.len() {
            Self::ExpectIntermediateRequest(ExpectIntermediateRequest { keyed, mode, round })
        } else {
            Self::ExpectAuthRequest(ExpectAuthRequest { keyed, mode })
        }
    }

    /// The state after IKE_SA_INIT.
    pub(super) fn after_sa_init(keyed: Box<Keyed>, mode: Mode) -> Self {
        Self::after_key_update(keyed, mode, 0)
    }
}

impl Responder {
    /// `from` (address, NAT-T) becomes the SA's peer only once the request authenticates:
    /// requests move to port 4500 after IKE_SA_INIT ([RFC 7296 §2.23]), but a forged datagram
    /// must not move them (finding 4).
    ///
    /// [RFC 7296 §2.23]: https://www.rfc-editor.org/rfc/rfc7296#section-2.23
    pub(super) fn on_request(
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
        let Some((keyed, exchange)) = sa.state.handshake() else {
            return;
        };
        if header.message_id != keyed.message_id || header.exchange_type != exchange {
            return;
        }
        let Ok(Some(view)) = locate_encrypted(datagram) else {
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
            Ok(None) | Err(Error::IntegrityCheckFailed) => return,
            Err(e) => {
                sa.state = State::Dead;
                self.events.push_back((spi_r, Event::Failed(e)));
                return;
            }
        };
        let next = match core::mem::replace(&mut sa.state, State::Dead) {
            State::ExpectIntermediateRequest(s) => self.on_intermediate(sa, s, request),
            State::ExpectAuthRequest(s) => self.on_auth(now, spi_r, sa, s, request),
            done @ (State::Established(_) | State::Dead) => Ok(done),
        };
        match next {
            Ok(state) => sa.state = state,
            Err(e) => self.events.push_back((spi_r, Event::Failed(e))),
        }
    }

    /// Sends a protected response to request `message_id` and caches it for retransmissions.
    pub(super) fn respond(
        &mut self,
        sa: &mut ResponderSa,
        keyed: &mut Keyed,
        exchange: ExchangeType,
        message_id: MessageId,
        inner: &[Payload],
    ) -> Result<Protected, Error> {
        let header = Header::new(
            keyed.spis.spi_i,
            keyed.spis.spi_r,
            exchange,
            Flags::from_octet(Flags::RESPONSE_BIT),
            message_id,
        );
        let max = max_message(
            keyed.peer_fragmentation,
            self.config.fragment_size,
            sa.remote,
            sa.nat_t,
        );
        let protected = keyed.cipher.protect(&header, inner, max)?;
        for d in &protected.datagrams {
            self.outbox.push(sa.remote, sa.nat_t, d.clone());
        }
        sa.last_response = Some((message_id, protected.datagrams.clone()));
        keyed.message_id = message_id.next();
        Ok(protected)
    }

    /// One IKE_INTERMEDIATE round: KEr(n) for the initiator's KEi(n), then the key update.
    fn on_intermediate(
        &mut self,
        sa: &mut ResponderSa,
        s: ExpectIntermediateRequest,
        request: Unprotected,
    ) -> Result<State, Error> {
        let ExpectIntermediateRequest {
            mut keyed,
            mode,
            round,
        } = s;
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
                    self.respond(sa, &mut keyed, ExchangeType::IkeIntermediate, mid, &inner)?;
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
        let sent = self.respond(sa, &mut keyed, ExchangeType::IkeIntermediate, mid, &inner)?;
        keyed.after_intermediate(
            &*self.provider,
            &response.shared_secret,
            (&request.int_auth_a, &request.plaintext),
            (&sent.int_auth_a, &sent.plaintext),
        )?;
        Ok(State::after_key_update(keyed, mode, round + 1))
    }
}
