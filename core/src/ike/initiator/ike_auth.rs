//! The initiator's IKE_AUTH ([RFC 7296 §1.2]): IDi, AUTH, the configuration request
//! ([RFC 7296 §3.15]) and the first Child SA out; the responder's AUTH checked before anything
//! it sent is used, then the CFG_REPLY and the Child SA ([RFC 7296 §2.9]).
//!
//! [RFC 7296 §1.2]: https://www.rfc-editor.org/rfc/rfc7296#section-1.2
//! [RFC 7296 §2.9]: https://www.rfc-editor.org/rfc/rfc7296#section-2.9
//! [RFC 7296 §3.15]: https://www.rfc-editor.org/rfc/rfc7296#section-3.15

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{ExpectAuthResponse, Initiator, State};
use crate::ike::Error;
use crate::ike::auth::names;
use crate::ike::config::{InitiatorConfig, esp_proposals};
use crate::ike::config_reply;
use crate::ike::handshake::{Keyed, Role};
use crate::ike::proposal::{check_esp_choice, is_narrowing};
use crate::ike::sa::{
    ChildSaEstablished, ConfigReceived, Event, first_error_notify, random_esp_spi,
};
use crate::ike::session::{Session, Settings};
use crate::wire::EspSpi;
use crate::wire::{
    CfgType, ConfigAttribute, ConfigPayload, ExchangeType, Flags, Header, Identification,
    NotifyPayload, NotifyType, Payload, SaPayload, TsPayload,
};

impl Initiator {
    pub(super) fn send_auth(&mut self, now: Instant, mut keyed: Keyed) -> Result<State, Error> {
        let message_id = keyed.take_message_id();
        let int_auth = keyed.int_auth.octets(message_id);
        let id_i = Identification::new(self.config.local_id.clone());
        let auth = self
            .local_auth
            .sign(&keyed, Role::Initiator, &id_i, int_auth.as_deref());
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
        inner.push(Payload::Auth(auth));
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
            keyed.spis.spi_i,
            keyed.spis.spi_r,
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

    pub(super) fn on_auth_response(
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
            && !names(id_r, expected)
        {
            return Err(Error::IdentityMismatch);
        }
        // Verify the responder before anything is established (RFC 7296 §2.15).
        let keyed = s.keyed;
        self.peer_auth
            .verify(&keyed, Role::Responder, id_r, auth, s.int_auth.as_deref())?;
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
        let ike = keyed.into_ike_sa(None);
        Ok(State::Established(Box::new(Session::new(
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
        child_spi_i: EspSpi,
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
        let keys = keyed.first_child_keys(esp.encr.keymat_len())?;
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
