//! The responder's IKE_SA_INIT ([RFC 7296 §1.2]): the defences in front of any work for an
//! unauthenticated source (COOKIE, [RFC 7296 §2.6]; per-source and total half-open limits;
//! the cheaper group under load), proposal selection with INVALID_KE_PAYLOAD
//! ([RFC 7296 §1.3]), NAT detection ([RFC 7296 §2.23]) and the first key update.
//!
//! [RFC 7296 §1.2]: https://www.rfc-editor.org/rfc/rfc7296#section-1.2
//! [RFC 7296 §1.3]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3
//! [RFC 7296 §2.6]: https://www.rfc-editor.org/rfc/rfc7296#section-2.6
//! [RFC 7296 §2.23]: https://www.rfc-editor.org/rfc/rfc7296#section-2.23

use std::net::SocketAddr;
use std::time::Instant;

use super::states::State;
use super::{HALF_OPEN_LIFETIME, Responder, ResponderSa};
use crate::ike::handshake::{Keyed, Role, SaInit, Spis, new_nonce};
use crate::ike::proposal::{IkeSelection, select_ike};
use crate::ike::protect::{Reassembly, resend_identical};
use crate::ike::sa::{find_notify, nat_detection_hash, random_spi};
use crate::ike::{CryptoPolicy, Error, Mode};
use crate::wire::{
    ExchangeType, Flags, Header, IkeSpi, KePayload, KeyExchangeMethod, Message, MessageId, Nonce,
    NotifyPayload, NotifyType, Payload, Proposal, SaPayload,
};

impl Responder {
    /// Answers an unprotected IKE_SA_INIT with a lone Notify (SPIr zero, no state kept).
    fn reply_notify(&mut self, remote: SocketAddr, nat_t: bool, header: &Header, n: NotifyPayload) {
        let reply = Header::new(
            header.spi_i,
            IkeSpi::ZERO,
            ExchangeType::IkeSaInit,
            Flags::from_octet(Flags::RESPONSE_BIT),
            MessageId::ZERO,
        );
        let message = Message::new(reply, vec![Payload::Notify(n)]).emit();
        self.outbox.push(remote, nat_t, message);
    }

    pub(super) fn on_sa_init(
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
        if let Some(&id) = self.by_initiator.get(&(remote, header.spi_i)) {
            if let Some(sa) = self.sas.get_mut(&id)
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
        let nonce_r = new_nonce(&*self.provider, self.config.nonce_len)?;
        let p = &*self.provider;
        let peer_behind_nat = find_notify(payloads, NotifyType::NatDetectionSourceIp)
            .is_some_and(|n| n.data != nat_detection_hash(p, header.spi_i, IkeSpi::ZERO, remote));
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
            MessageId::ZERO,
        );
        let response_bytes = Message::new(reply, out).emit();

        let init = SaInit {
            choice,
            spis: Spis {
                spi_i: header.spi_i,
                spi_r,
            },
            nonce_i,
            nonce_r,
            real_message_1: datagram.to_vec(),
            real_message_2: response_bytes.clone(),
            peer_fragmentation,
        };
        let keyed = Keyed::after_sa_init(
            &*self.provider,
            Role::Responder,
            init,
            &response.shared_secret,
        )?;
        let state = State::after_sa_init(Box::new(keyed), mode);
        self.outbox.push(remote, nat_t, response_bytes.clone());
        // The SA's id: the SPIr it was created with, stable across rekeys.
        let id = spi_r.0;
        self.by_initiator.insert((remote, header.spi_i), id);
        self.half_open += 1;
        *self.half_open_by_ip.entry(ip).or_default() += 1;
        self.sas.insert(
            id,
            ResponderSa {
                origin: remote,
                timer: None,
                routed: Vec::new(),
                remote,
                nat_t: nat_t || peer_behind_nat,
                spi_i: header.spi_i,
                state,
                last_response: Some((MessageId::ZERO, vec![response_bytes])),
                last_resend: None,
                pending_first: None,
                request_first: None,
                reassembly: Reassembly::default(),
                lease_v4: None,
                lease_v6: None,
                expires: Some(now + HALF_OPEN_LIFETIME),
            },
        );
        self.schedule(id);
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
            .map(|p| CryptoPolicy {
                ke: vec![KeyExchangeMethod::Curve25519],
                ..p.clone()
            })
            .collect();
        match select_ike(&cheap, proposals, kei, intermediate) {
            Ok(IkeSelection::WrongKe(method)) => Some(method),
            _ => None,
        }
    }
}
