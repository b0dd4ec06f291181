//! The initiator's IKE_SA_INIT ([RFC 7296 §1.2]): the request, COOKIE ([RFC 7296 §2.6]) and
//! INVALID_KE_PAYLOAD ([RFC 7296 §1.3]) restarts, the response's checks, NAT detection
//! ([RFC 7296 §2.23]) and the first key update.
//!
//! [RFC 7296 §1.2]: https://www.rfc-editor.org/rfc/rfc7296#section-1.2
//! [RFC 7296 §1.3]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3
//! [RFC 7296 §2.6]: https://www.rfc-editor.org/rfc/rfc7296#section-2.6
//! [RFC 7296 §2.23]: https://www.rfc-editor.org/rfc/rfc7296#section-2.23

use std::net::SocketAddr;
use std::time::Instant;

use super::{ExpectSaInitResponse, Initiator, MAX_COOKIE_RESTARTS, State};
use crate::crypto::SecretBytes;
use crate::ike::Error;
use crate::ike::handshake::{Keyed, Role, SaInit, Spis};
use crate::ike::proposal::{IkeChoice, check_ike_choice};
use crate::ike::sa::{
    NAT_T_PORT, fake_nat_source, find_notify, first_error_notify, nat_detection_hash,
};
use crate::wire::{
    ExchangeType, Flags, HashAlgorithm, Header, IkeSpi, KePayload, Message, MessageId, Nonce,
    NotifyPayload, NotifyType, Payload, SaPayload,
};

impl Initiator {
    pub(super) fn send_sa_init(
        &mut self,
        now: Instant,
        mut s: ExpectSaInitResponse,
    ) -> ExpectSaInitResponse {
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
            nat_detection_hash(p, self.spi_i, IkeSpi::ZERO, source).to_vec(),
        )));
        payloads.push(Payload::Notify(NotifyPayload::status(
            NotifyType::NatDetectionDestinationIp,
            nat_detection_hash(p, self.spi_i, IkeSpi::ZERO, self.remote).to_vec(),
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
            IkeSpi::ZERO,
            ExchangeType::IkeSaInit,
            Flags::initiator_request(),
            MessageId::ZERO,
        );
        s.request = Message::new(header, payloads).emit();
        self.send_request(now, MessageId::ZERO, vec![s.request.clone()]);
        s
    }

    pub(super) fn on_sa_init_response(
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

        self.outstanding = None;
        let init = SaInit {
            choice,
            spis: Spis {
                spi_i: self.spi_i,
                spi_r: self.spi_r,
            },
            nonce_i: s.nonce_i,
            nonce_r: nonce_r.into_vec(),
            real_message_1: s.request,
            real_message_2: datagram.to_vec(),
            peer_fragmentation: find_notify(payloads, NotifyType::Ikev2FragmentationSupported)
                .is_some(),
        };
        let keyed = Keyed::after_sa_init(&*self.provider, Role::Initiator, init, &shared)?;
        self.next_after_keys(now, keyed, 0)
    }

    /// Validates an IKE_SA_INIT response and completes the key exchange, changing nothing.
    fn check_sa_init_response(
        &self,
        s: &ExpectSaInitResponse,
        message: &Message,
    ) -> Result<(IkeChoice, SecretBytes, Nonce), Error> {
        let payloads = &message.payloads;
        if message.header.spi_r == IkeSpi::ZERO {
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
}
