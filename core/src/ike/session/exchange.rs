//! Requests and responses on the session's IKE SAs: protecting and sending them (fragmented
//! when the peer supports it, [RFC 7383]), the window-1 start of queued intents ([RFC 7296
//! §2.3]), and dispatching what arrives after its integrity check: responses to our request,
//! the peer's new requests, retransmissions answered from the cache ([RFC 7296 §2.1]).
//!
//! [RFC 7383]: https://www.rfc-editor.org/rfc/rfc7383
//! [RFC 7296 §2.1]: https://www.rfc-editor.org/rfc/rfc7296#section-2.1
//! [RFC 7296 §2.3]: https://www.rfc-editor.org/rfc/rfc7296#section-2.3

use core::time::Duration;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::ike::Error;
use crate::ike::protect::{Unprotected, resend_allowed, unprotect};
use crate::ike::sa::{Event, Outstanding, find_notify};
use crate::wire::{
    DeletePayload, EspSpi, ExchangeType, Header, MessageId, NotifyPayload, NotifyType, Payload,
    ProtocolId, locate_encrypted,
};

use super::child::ChildState;
use super::followup::PeerRekey;
use super::ike_sa::IkeSa;
use super::{Exchange, Intent, RETIRED_IKE_SA_LINGER, Session, Status, payload_nonce, payload_sa};

/// What follows our response to a peer's request.
pub(super) enum After {
    Nothing,
    /// The peer deleted the IKE SA the request came on.
    DropSa,
    /// The peer's rekey is complete.
    Complete(Box<PeerRekey>),
}

impl Session {
    pub(super) fn max_message(&self, sa: &IkeSa) -> Option<usize> {
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

    pub(super) fn send_request(
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
            .checked_next()
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

    pub(super) fn send_response(
        &mut self,
        sa: &mut IkeSa,
        exchange_type: ExchangeType,
        message_id: MessageId,
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
    pub(super) fn start_next(&mut self, now: Instant) {
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
                && matches!(
                    intent,
                    Intent::RekeyChildSa(_) | Intent::CreateChildSa | Intent::RekeyIkeSa
                )
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

    pub(super) fn start(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        intent: Intent,
    ) -> Result<(), Error> {
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
                let inbound: Vec<EspSpi> =
                    pairs.iter().map(|&p| self.view.ours_theirs(p).0).collect();
                for &p in &pairs {
                    if let Some(c) = self.children.get_mut(p) {
                        c.state = ChildState::Deleting;
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
            Intent::CreateChildSa => self.start_child_create(now, sa, None, 0),
            Intent::RekeyIkeSa => self.start_ike_rekey(now, sa, None, 0),
        }
    }

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

    pub(super) fn decrypt(
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
    pub(super) fn on_response(
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
        self.last_answer = self.last_answer.max(now);
        let Some((_, exchange)) = sa.active.take() else {
            return true;
        };
        let payloads = &message.payloads;
        let creating = matches!(&exchange, Exchange::RekeyChildSa(x) if x.old.is_none());
        let result = match exchange {
            Exchange::Dpd => Ok(()),
            Exchange::DeleteChildSa(pairs) => {
                for pair in pairs {
                    self.remove_child(now, pair);
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
            Err(e) if creating => {
                self.child_create_failed(now, e);
                true
            }
            Err(e) => {
                self.events.push_back(Event::ChildSaFailed(e));
                true
            }
        }
    }

    /// Returns whether `sa` stays.
    pub(super) fn on_request(
        &mut self,
        now: Instant,
        from: Option<(SocketAddr, bool)>,
        sa: &mut IkeSa,
        header: &Header,
        datagram: &[u8],
    ) -> bool {
        let mid = header.message_id;
        if mid.next() == sa.expected_request_id
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
                    sa.expected_request_id = mid.next();
                }
                return true;
            }
        };
        self.last_inbound = self.last_inbound.max(now);
        sa.expected_request_id = mid.next();
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
                // Our own failure (RNG, key schedule) blames nothing of the request.
                let n = e.notify_payload().unwrap_or_else(|| {
                    NotifyPayload::status(NotifyType::TemporaryFailure, Vec::new())
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

    /// CREATE_CHILD_SA from the peer: a Child SA rekey (REKEY_SA), an IKE SA rekey (an IKE
    /// proposal), or a new Child SA, taken only in place of a lost one (`create_child.rs`).
    pub(super) fn on_create_child_sa(
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
        let Some(rekey) = find_notify(payloads, NotifyType::RekeySa) else {
            return self.on_child_create_request(now, sa, sa_payload, nonce_i, payloads);
        };
        let spi = <[u8; 4]>::try_from(rekey.spi.as_slice())
            .map(|b| EspSpi(u32::from_be_bytes(b)))
            .map_err(|_| Error::PeerMisbehaved("REKEY_SA without a 4-octet SPI"))?;
        self.on_child_rekey_request(now, sa, spi, sa_payload, nonce_i, payloads)
    }
}
