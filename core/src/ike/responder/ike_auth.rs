//! The responder's IKE_AUTH ([RFC 7296 §1.2]): the initiator's AUTH checked with the key of
//! its IDi, our IDr and AUTH back, and the first Child SA: ESP proposal, virtual address and
//! DNS from the pool ([RFC 7296 §3.15]), narrowed traffic selectors ([RFC 7296 §2.9]).
//!
//! [RFC 7296 §1.2]: https://www.rfc-editor.org/rfc/rfc7296#section-1.2
//! [RFC 7296 §2.9]: https://www.rfc-editor.org/rfc/rfc7296#section-2.9
//! [RFC 7296 §3.15]: https://www.rfc-editor.org/rfc/rfc7296#section-3.15

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::pool::host_ts;
use super::states::{ExpectAuthRequest, State};
use super::{Responder, ResponderSa};
#[cfg(test)]
use crate::crypto::SecretBytes;
use crate::ike::Error;
use crate::ike::auth::{LocalAuth, PeerAuth, names};
use crate::ike::handshake::{Keyed, Role};
use crate::ike::proposal::{esp_answer, narrow, select_esp};
use crate::ike::protect::Unprotected;
use crate::ike::sa::{ChildSaEstablished, Event, random_esp_spi};
use crate::ike::session::{Session, Settings};
use crate::wire::{
    CfgType, ConfigAttribute, ConfigPayload, ExchangeType, Identification, NotifyPayload,
    NotifyType, Payload, Proposal, SaPayload, TrafficSelector, TsPayload,
};

impl Responder {
    /// IKE_AUTH: the initiator's AUTH checked against the key of its IDi, ours and the
    /// first Child SA back; the SA is established even if the Child SA is refused
    /// (RFC 7296 §2.21.2).
    pub(super) fn on_auth(
        &mut self,
        now: Instant,
        spi_r: u64,
        sa: &mut ResponderSa,
        s: ExpectAuthRequest,
        request: Unprotected,
    ) -> Result<State, Error> {
        let ExpectAuthRequest { mut keyed, mode } = s;
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
                && !names(id_r, &self.config.local_id)
            {
                return Err(Error::IdentityMismatch);
            }
            PeerAuth::Psk(psk.clone()).verify(
                &keyed,
                Role::Initiator,
                id_i,
                auth,
                int_auth.as_deref(),
            )?;
            Ok(LocalAuth::Psk(psk))
        })();
        let local_auth = match verified {
            Ok(local) => local,
            Err(e) => {
                if let Some(n) = e.notify_payload() {
                    let inner = [Payload::Notify(n)];
                    self.respond(sa, &mut keyed, ExchangeType::IkeAuth, mid, &inner)?;
                }
                return Err(e);
            }
        };

        let id_r = Identification::new(self.config.local_id.clone());
        #[cfg(test)]
        let local_auth = if self.fault_wrong_auth {
            LocalAuth::Psk(SecretBytes::from_slice(b"wrong"))
        } else {
            local_auth
        };
        let auth_r = local_auth.sign(&keyed, Role::Responder, &id_r, int_auth.as_deref());
        let mut inner = vec![Payload::IdR(id_r), Payload::Auth(auth_r)];
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
        self.respond(sa, &mut keyed, ExchangeType::IkeAuth, mid, &inner)?;
        self.settle(sa);
        let suite = keyed.choice.suite(mode);
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
                p.mode == mode && p.addke == keyed.choice.addke && p.ke.contains(&keyed.choice.ke)
            })
            .cloned()
            .unwrap_or_else(|| crate::ike::CryptoPolicy {
                mode,
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
        let ours = keyed.spis.spi_r;
        let ike = keyed.into_ike_sa(sa.last_response.take());
        let session = Session::new(
            Arc::clone(&self.provider),
            settings,
            false,
            now,
            sa.remote,
            sa.nat_t,
            ike,
            suite,
            child,
        );
        self.routes.insert(ours, spi_r);
        sa.routed = vec![ours];
        Ok(State::Established(Box::new(session)))
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
        let keys = keyed.first_child_keys(esp.encr.keymat_len())?;
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
}
