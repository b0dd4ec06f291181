//! The client's `PROFILE.toml`.

use serde::Deserialize;
use toml::Spanned;

use super::Doc;
use super::error::{ProfileError, ProfileErrorKind};
use super::ike::{IkeFile, IkeKnobs, IkeSpec};
use super::psk::{AuthFile, PskSpec};
use super::value::{Endpoint, Prefix, parse_id, parse_mlkem};
use crate::crypto::{AeadAlgorithm, SecretBytes};
use crate::ike::{CryptoPolicy, InitiatorConfig, Mode};
use crate::wire::{IkeId, KeyExchangeMethod, TrafficSelector};

/// A client profile as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    gateway: Spanned<String>,
    local_id: Spanned<String>,
    /// The identity the gateway must prove (IDr). Required: an `Option` only so that its
    /// absence gets our error rather than serde's.
    remote_id: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    auth: Spanned<AuthFile>,
    #[serde(default)]
    crypto: CryptoFile,
    #[serde(default)]
    network: NetworkFile,
    #[serde(default)]
    ike: IkeFile,
}

/// `[crypto]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CryptoFile {
    /// `ml-kem-768` (default) or `ml-kem-1024`.
    mlkem: Option<Spanned<String>>,
}

/// `[network]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    full_tunnel: Option<bool>,
    #[serde(default)]
    routes: Vec<Spanned<String>>,
    dns: Option<bool>,
    mtu: Option<Spanned<i64>>,
    interface: Option<String>,
    block_lan: Option<Spanned<bool>>,
    kill_switch: Option<Spanned<String>>,
    allow_lan: Option<Spanned<bool>>,
    #[serde(default)]
    accept_pushed_routes: bool,
    #[serde(default)]
    allow_public_virtual_ip: bool,
}

/// TUN MTU by default: 1500 - 20 (IPv4) - 8 (UDP) - 37 (ESP worst case) - 35 of headroom for
/// IPv6 paths.
pub(super) const DEFAULT_MTU: u16 = 1400;

/// `[network]` of a client profile, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Route everything through the tunnel (default), or only `routes` (and the gateway's
    /// INTERNAL_IP4_SUBNET with `accept_pushed_routes`).
    pub full_tunnel: bool,
    /// Networks to route through the tunnel in a split tunnel.
    pub routes: Vec<Prefix>,
    /// Use the DNS servers the gateway pushes.
    pub dns: bool,
    /// TUN MTU, 576..=9000.
    pub mtu: u16,
    /// TUN device name.
    pub interface: Option<String>,
    /// Full tunnel: no main-table route (the LAN, a hostile DHCP's 0.0.0.0/1) bypasses the
    /// tunnel; the LAN is then unreachable (TunnelCrack LocalNet).
    pub block_lan: bool,
    /// Route the networks the gateway pushes (INTERNAL_IP4/6_SUBNET) through the tunnel.
    pub accept_pushed_routes: bool,
    /// Accept a public (globally routable) virtual address from the gateway.
    pub allow_public_virtual_ip: bool,
    /// When the firewall blocks everything outside the tunnel.
    pub kill_switch: KillSwitch,
    /// With the kill switch: let the private and link-local ranges through.
    pub allow_lan: bool,
}

impl NetworkSpec {
    /// Whether the kill switch is on for this profile.
    pub fn kill_switch_on(&self) -> bool {
        match self.kill_switch {
            KillSwitch::Always => true,
            KillSwitch::Auto => self.full_tunnel,
            KillSwitch::Off => false,
        }
    }
}

/// `network.kill_switch`: when nothing may leave outside the tunnel (connecting,
/// reconnecting, failed after being up, and connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KillSwitch {
    /// On for a full tunnel, off for a split tunnel (the default).
    #[default]
    Auto,
    /// On for split tunnels too.
    Always,
    /// Off: traffic may leave in clear while the tunnel is down.
    Off,
}

impl KillSwitch {
    /// The profile's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Always => "always",
            Self::Off => "off",
        }
    }
}

/// A client profile, checked. Nothing in it is resolved yet: the PSK is a [`PskSpec`] and the
/// gateway an [`Endpoint`]. `Debug` never shows a PSK.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientProfile {
    /// The gateway, as written (a name is resolved when connecting).
    pub gateway: Endpoint,
    /// IDi.
    pub local_id: IkeId,
    /// The IDr the gateway must prove.
    pub remote_id: IkeId,
    /// The construction (`hybrid` by default).
    pub mode: Mode,
    /// The ML-KEM parameter set of `hybrid` and `pq-only`.
    pub mlkem: KeyExchangeMethod,
    /// Where the PSK is.
    pub psk: PskSpec,
    /// Routes, DNS and the TUN.
    pub network: NetworkSpec,
    /// Timers and fragments.
    pub ike: IkeSpec,
    /// Make the gateway switch to UDP 4500 at once (default true; userspace ESP needs it).
    pub force_udp_encapsulation: bool,
    /// The keyring entry's user, `LOCAL_ID@GATEWAY` as written.
    keyring_user: String,
}

impl ClientProfile {
    /// Parses and checks a profile's text.
    pub fn parse(text: &str) -> Result<Self, ProfileError> {
        let (doc, file): (_, ClientFile) = Doc::parse(text)?;
        Self::check(&doc, file)
    }

    fn check(doc: &Doc<'_>, file: ClientFile) -> Result<Self, ProfileError> {
        let mode = match &file.mode {
            Some(mode) => mode
                .get_ref()
                .parse()
                .map_err(|e| doc.invalid("mode", mode, format!("{e}")))?,
            None => Mode::Hybrid,
        };
        let mlkem = match &file.crypto.mlkem {
            Some(mlkem) => {
                parse_mlkem(mlkem.get_ref()).map_err(|e| doc.invalid("crypto.mlkem", mlkem, e))?
            }
            None => KeyExchangeMethod::MlKem768,
        };
        // Without IDr the client would accept any identity from whoever holds the PSK
        // (security review finding 7).
        let remote_id = file.remote_id.as_ref().ok_or_else(|| {
            ProfileError::new(
                ProfileErrorKind::Missing,
                "remote_id",
                "remote_id is missing: set it to the gateway's identity (its local_id); \
                 without it the client accepts any identity, so anyone holding the PSK \
                 (another client, for a group PSK) can impersonate the gateway",
            )
        })?;
        let remote_id = parse_id("remote_id", remote_id.get_ref())
            .map_err(|e| doc.invalid("remote_id", remote_id, e))?;
        let gateway = file.gateway.get_ref().parse::<Endpoint>().map_err(|e| {
            doc.invalid(
                "gateway",
                &file.gateway,
                format!("gateway = \"{}\": {e}", file.gateway.get_ref()),
            )
        })?;
        let local_id = parse_id("local_id", file.local_id.get_ref())
            .map_err(|e| doc.invalid("local_id", &file.local_id, e))?;
        let keyring_user = format!("{}@{}", file.local_id.get_ref(), file.gateway.get_ref());
        let psk = file
            .auth
            .get_ref()
            .check(doc, &file.auth, keyring_user.clone(), true)?;
        let ike = file.ike.check(doc)?;
        let network = check_network(doc, file.network)?;
        Ok(Self {
            gateway,
            local_id,
            remote_id,
            mode,
            mlkem,
            psk,
            network,
            ike,
            force_udp_encapsulation: file
                .ike
                .force_udp_encapsulation
                .is_none_or(|force| *force.get_ref()),
            keyring_user,
        })
    }

    /// The user name of this profile's keyring entry, `LOCAL_ID@GATEWAY` as written (whether
    /// or not the profile sets `psk_keyring`: `pqvpn secret set` stores under it).
    pub fn keyring_user(&self) -> &str {
        &self.keyring_user
    }

    /// The one proposal of `mode` with this profile's ML-KEM parameter set.
    pub fn policy(&self, mode: Mode) -> CryptoPolicy {
        match mode {
            Mode::Hybrid => CryptoPolicy::hybrid(self.mlkem),
            Mode::PqOnly => CryptoPolicy::pq_only(self.mlkem),
            _ => CryptoPolicy::classical(),
        }
    }

    /// The initiator's configuration in the profile's mode, with `psk` (resolved from
    /// [`psk`](Self::psk) by the front end).
    pub fn initiator_config(&self, psk: SecretBytes) -> InitiatorConfig {
        self.initiator_config_in(self.mode, psk)
    }

    /// The initiator's configuration in `mode` (the supervisor's, never weaker than the
    /// profile's), with `psk`.
    pub fn initiator_config_in(&self, mode: Mode, psk: SecretBytes) -> InitiatorConfig {
        let mut initiator = InitiatorConfig::new(
            mode,
            psk,
            self.local_id.clone(),
            Some(self.remote_id.clone()),
        );
        initiator.policy = self.policy(mode);
        initiator.force_udp_encapsulation = self.force_udp_encapsulation;
        self.ike.apply(IkeKnobs {
            fragment_size: &mut initiator.fragment_size,
            ike_lifetime: &mut initiator.ike_lifetime,
            child_lifetime: &mut initiator.child_lifetime,
            dpd_interval: &mut initiator.dpd_interval,
            retransmit: &mut initiator.retransmit,
            require_child_pfs: &mut initiator.require_child_pfs,
        });
        initiator.accept_pushed_routes = self.network.accept_pushed_routes;
        initiator.allow_public_virtual_ip = self.network.allow_public_virtual_ip;
        if !self.network.full_tunnel {
            initiator.ts_r = self
                .network
                .routes
                .iter()
                .map(|p| p.traffic_selector())
                .collect();
            if initiator.ts_r.is_empty() {
                // The gateway narrows; its INTERNAL_IP4_SUBNET may still provide routes.
                initiator.ts_r = vec![TrafficSelector::ipv4_any(), TrafficSelector::ipv6_any()];
            }
        }
        initiator.esp = vec![AeadAlgorithm::Aes256Gcm16, AeadAlgorithm::ChaCha20Poly1305];
        initiator
    }
}

fn check_network(doc: &Doc<'_>, file: NetworkFile) -> Result<NetworkSpec, ProfileError> {
    let mtu = match &file.mtu {
        Some(mtu) => u16::try_from(*mtu.get_ref())
            .ok()
            .filter(|m| (576..=9000).contains(m))
            .ok_or_else(|| {
                doc.invalid(
                    "network.mtu",
                    mtu,
                    format!("network.mtu = {}: expected 576..=9000", mtu.get_ref()),
                )
            })?,
        None => DEFAULT_MTU,
    };
    let routes = file
        .routes
        .iter()
        .map(|r| {
            r.get_ref().parse::<Prefix>().map_err(|e| {
                doc.invalid(
                    "network.routes",
                    r,
                    format!("network.routes: \"{}\" {e}", r.get_ref()),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let full_tunnel = file.full_tunnel.unwrap_or(true);
    let block_lan = file.block_lan.as_ref().is_some_and(|b| *b.get_ref());
    if let Some(at) = file
        .block_lan
        .as_ref()
        .filter(|_| block_lan && !full_tunnel)
    {
        return Err(doc.error(
            ProfileErrorKind::Conflict,
            "network.block_lan",
            at,
            "network.block_lan = true needs full_tunnel = true".into(),
        ));
    }
    let kill_switch = match &file.kill_switch {
        None => KillSwitch::Auto,
        Some(value) => match value.get_ref().as_str() {
            "auto" => KillSwitch::Auto,
            "always" => KillSwitch::Always,
            "off" => KillSwitch::Off,
            other => {
                return Err(doc.invalid(
                    "network.kill_switch",
                    value,
                    format!("network.kill_switch = \"{other}\": expected auto, always or off"),
                ));
            }
        },
    };
    let allow_lan = file.allow_lan.as_ref().is_some_and(|b| *b.get_ref());
    if let Some(at) = file.allow_lan.as_ref().filter(|_| allow_lan && block_lan) {
        return Err(doc.error(
            ProfileErrorKind::Conflict,
            "network.allow_lan",
            at,
            "network.allow_lan = true contradicts block_lan = true".into(),
        ));
    }
    Ok(NetworkSpec {
        full_tunnel,
        routes,
        dns: file.dns.unwrap_or(true),
        mtu,
        interface: file.interface,
        block_lan,
        accept_pushed_routes: file.accept_pushed_routes,
        allow_public_virtual_ip: file.allow_public_virtual_ip,
        kill_switch,
        allow_lan,
    })
}
