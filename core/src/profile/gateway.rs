//! The gateway's `GATEWAY.toml` (the project's own responder).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::Doc;
use super::client::DEFAULT_MTU;
use super::error::{ProfileError, ProfileErrorKind};
use super::ike::{IkeFile, IkeKnobs, IkeSpec};
use super::psk::{AuthFile, InlinePsk, PskSpec, one_source, spec};
use super::value::{Prefix, parse_id};
use crate::crypto::SecretBytes;
use crate::ike::{CryptoPolicy, Mode, ResponderConfig};
use crate::wire::IkeId;

/// A gateway profile as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    listen: Option<Spanned<String>>,
    local_id: Spanned<String>,
    modes: Option<Spanned<Vec<Spanned<String>>>>,
    auth: Option<Spanned<AuthFile>>,
    #[serde(default)]
    clients: Vec<Spanned<ClientEntry>>,
    address: Spanned<String>,
    pool: PoolFile,
    #[serde(default)]
    dns: Vec<Spanned<String>>,
    #[serde(default)]
    subnets: Vec<Spanned<String>>,
    mtu: Option<Spanned<i64>>,
    interface: Option<String>,
    #[serde(default)]
    ike: IkeFile,
}

/// `[pool]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    /// `first-last`, e.g. `10.99.0.10-10.99.0.200`.
    ipv4: Spanned<String>,
}

/// One `[[clients]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    id: Spanned<String>,
    psk: Option<Spanned<InlinePsk>>,
    psk_file: Option<PathBuf>,
    #[serde(default)]
    allow_weak_psk: bool,
}

/// One client identity of a gateway and where its own PSK is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPsk {
    /// The client's IDi.
    pub id: IkeId,
    /// Its PSK.
    pub psk: PskSpec,
}

/// A gateway profile, checked; PSKs not yet read. `Debug` never shows a PSK.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayProfile {
    /// The address IKE listens on (default `0.0.0.0`).
    pub listen: IpAddr,
    /// IDr.
    pub local_id: IkeId,
    /// Accepted constructions, preferred first (default hybrid, pq-only).
    pub modes: Vec<Mode>,
    /// The group PSK (`[auth]`), for every client not in `clients`.
    pub group_psk: Option<PskSpec>,
    /// One PSK per client identity (`[[clients]]`).
    pub clients: Vec<ClientPsk>,
    /// The gateway's own tunnel address and prefix.
    pub address: Prefix,
    /// The IPv4 address pool, first and last.
    pub pool_v4: (Ipv4Addr, Ipv4Addr),
    /// DNS servers pushed to clients.
    pub dns: Vec<IpAddr>,
    /// Networks behind the gateway (INTERNAL_IP4_SUBNET and the traffic selectors).
    pub subnets: Vec<Prefix>,
    /// TUN MTU.
    pub mtu: u16,
    /// TUN device name.
    pub interface: Option<String>,
    /// Timers and fragments.
    pub ike: IkeSpec,
    /// The keyring entry's user, `LOCAL_ID@LISTEN` as written.
    keyring_user: String,
}

impl GatewayProfile {
    /// Parses and checks a gateway profile's text.
    pub fn parse(text: &str) -> Result<Self, ProfileError> {
        let (doc, file): (_, GatewayFile) = Doc::parse(text)?;
        Self::check(&doc, file)
    }

    fn check(doc: &Doc<'_>, file: GatewayFile) -> Result<Self, ProfileError> {
        let listen_text = file.listen.as_ref().map_or("0.0.0.0", |l| l.get_ref());
        let listen: IpAddr = match &file.listen {
            Some(l) => l.get_ref().parse().map_err(|_| {
                doc.invalid(
                    "listen",
                    l,
                    format!("listen = \"{}\" is not an IP address", l.get_ref()),
                )
            })?,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let modes = match &file.modes {
            Some(modes) => {
                let parsed = modes
                    .get_ref()
                    .iter()
                    .map(|m| {
                        m.get_ref()
                            .parse::<Mode>()
                            .map_err(|e| doc.invalid("modes", m, format!("{e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if parsed.is_empty() {
                    return Err(doc.invalid("modes", modes, "modes is empty".into()));
                }
                parsed
            }
            None => vec![Mode::Hybrid, Mode::PqOnly],
        };
        let local_id = parse_id("local_id", file.local_id.get_ref())
            .map_err(|e| doc.invalid("local_id", &file.local_id, e))?;
        let group_psk = file
            .auth
            .as_ref()
            .map(|auth| {
                let user = format!("{}@{listen_text}", file.local_id.get_ref());
                auth.get_ref().check(doc, auth, user, false)
            })
            .transpose()?;
        if group_psk.is_none() && file.clients.is_empty() {
            return Err(ProfileError::new(
                ProfileErrorKind::Missing,
                "clients",
                "no PSK: add a [[clients]] table (id and psk_file) for each client, or [auth] \
                 for one group PSK shared by all clients",
            ));
        }
        let mut clients: Vec<ClientPsk> = Vec::with_capacity(file.clients.len());
        for (i, entry) in file.clients.iter().enumerate() {
            let key = format!("clients[{i}]");
            let client = entry.get_ref();
            let id = parse_id(&format!("{key}.id"), client.id.get_ref())
                .map_err(|e| doc.invalid(&format!("{key}.id"), &client.id, e))?;
            if client.psk.is_some() == client.psk_file.is_some() {
                return Err(doc.error(
                    ProfileErrorKind::Conflict,
                    &key,
                    entry,
                    format!(
                        "{key} ({}): give exactly one of psk, psk_file",
                        client.id.get_ref()
                    ),
                ));
            }
            let source = one_source(doc, &key, client.psk.as_ref(), client.psk_file.as_ref())?;
            let psk = spec(
                doc,
                &key,
                source,
                client.allow_weak_psk,
                client.psk.as_ref(),
            )?;
            if clients.iter().any(|c| c.id == id) {
                return Err(doc.error(
                    ProfileErrorKind::Conflict,
                    &format!("{key}.id"),
                    &client.id,
                    format!("{key}.id = \"{}\" is listed twice", client.id.get_ref()),
                ));
            }
            clients.push(ClientPsk { id, psk });
        }
        let pool = &file.pool.ipv4;
        let bad = |what: &str| {
            doc.invalid(
                "pool.ipv4",
                pool,
                format!("pool.ipv4 = \"{}\": {what}", pool.get_ref()),
            )
        };
        let (first, last) = pool
            .get_ref()
            .split_once('-')
            .ok_or_else(|| bad("expected FIRST-LAST"))?;
        let first: Ipv4Addr = first.trim().parse().map_err(|_| bad("bad address"))?;
        let last: Ipv4Addr = last.trim().parse().map_err(|_| bad("bad address"))?;
        if first > last {
            return Err(bad("first > last"));
        }
        let dns = file
            .dns
            .iter()
            .map(|d| {
                d.get_ref().parse().map_err(|_| {
                    doc.invalid(
                        "dns",
                        d,
                        format!("dns: \"{}\" is not an IP address", d.get_ref()),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let prefix = |key: &str, s: &Spanned<String>| {
            s.get_ref()
                .parse::<Prefix>()
                .map_err(|e| doc.invalid(key, s, format!("{key}: \"{}\" {e}", s.get_ref())))
        };
        let subnets = file
            .subnets
            .iter()
            .map(|s| prefix("subnets", s))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(force) = &file.ike.force_udp_encapsulation {
            return Err(doc.invalid(
                "ike.force_udp_encapsulation",
                force,
                "ike.force_udp_encapsulation is a client setting".into(),
            ));
        }
        let ike = file.ike.check(doc)?;
        let address = prefix("address", &file.address)?;
        let mtu = match &file.mtu {
            Some(mtu) => u16::try_from(*mtu.get_ref())
                .ok()
                .filter(|m| (576..=9000).contains(m))
                .ok_or_else(|| {
                    doc.invalid(
                        "mtu",
                        mtu,
                        format!("mtu = {}: expected 576..=9000", mtu.get_ref()),
                    )
                })?,
            None => DEFAULT_MTU,
        };
        Ok(Self {
            listen,
            local_id,
            modes,
            group_psk,
            clients,
            address,
            pool_v4: (first, last),
            dns,
            subnets,
            mtu,
            interface: file.interface,
            ike,
            keyring_user: format!("{}@{listen_text}", file.local_id.get_ref()),
        })
    }

    /// The user name of the group PSK's keyring entry, `LOCAL_ID@LISTEN` as written.
    pub fn keyring_user(&self) -> &str {
        &self.keyring_user
    }

    /// The responder's configuration, with the PSKs the front end read: `group_psk` for
    /// [`group_psk`](Self::group_psk) and one per entry of [`clients`](Self::clients), in
    /// order.
    pub fn responder_config(
        &self,
        group_psk: Option<SecretBytes>,
        client_psks: Vec<SecretBytes>,
    ) -> ResponderConfig {
        let policies = self
            .modes
            .iter()
            .map(|&m| CryptoPolicy::for_mode(m))
            .collect();
        let mut responder =
            ResponderConfig::new(policies, SecretBytes::default(), self.local_id.clone());
        responder.group_psk = group_psk;
        for (client, psk) in self.clients.iter().zip(client_psks) {
            responder.client_psks.insert(client.id.clone(), psk);
        }
        responder.pool_v4 = Some(self.pool_v4);
        responder.dns.clone_from(&self.dns);
        for subnet in &self.subnets {
            if let IpAddr::V4(a) = subnet.addr {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(subnet.len))
                    .unwrap_or(0);
                responder
                    .subnets_v4
                    .push((Ipv4Addr::from(u32::from(a) & mask), Ipv4Addr::from(mask)));
            }
        }
        if !self.subnets.is_empty() {
            responder.local_ts = self.subnets.iter().map(|p| p.traffic_selector()).collect();
        }
        self.ike.apply(IkeKnobs {
            fragment_size: &mut responder.fragment_size,
            ike_lifetime: &mut responder.ike_lifetime,
            child_lifetime: &mut responder.child_lifetime,
            dpd_interval: &mut responder.dpd_interval,
            retransmit: &mut responder.retransmit,
            require_child_pfs: &mut responder.require_child_pfs,
        });
        responder
    }
}
