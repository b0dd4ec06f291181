//! Profiles: the client's `PROFILE.toml` and the gateway's `GATEWAY.toml` (documented in the
//! README). Unknown keys and bad values are errors naming the key and line; no error message
//! ever contains a PSK.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pqvpn_core::crypto::{AeadAlgorithm, SecretBytes};
use pqvpn_core::ike::{
    CryptoPolicy, InitiatorConfig, Lifetime, Mode, ResponderConfig, RetransmitConfig,
};
use pqvpn_core::wire::{IkeId, KeyExchangeMethod, TrafficSelector};
use serde::Deserialize;

use crate::secret::{self, Keyring};

/// Reads and parses a TOML file, naming the file (and, from the parser, key and line) in errors.
fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("Failed to read {}: {e}", path.display()))?;
    parse_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn parse_toml<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| {
        // The parser's message is "TOML parse error at line L, column C", a source excerpt and
        // the reason; keep the first and last lines so the error fits on one line.
        let text = e.to_string();
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let first = lines.first().copied().unwrap_or_default();
        let reason = lines
            .last()
            .copied()
            .unwrap_or_default()
            .trim_start_matches(['|', '^', ' ']);
        let source = lines.iter().find_map(|l| {
            let (number, rest) = l.split_once(" | ")?;
            number.trim().parse::<u32>().ok().map(|_| rest.trim())
        });
        match source {
            Some(source) => format!("{first}: {reason} (in `{source}`)"),
            None => format!("{first}: {reason}"),
        }
    })
}

/// `[auth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Auth {
    /// Only `psk` for now.
    #[serde(default = "default_method")]
    method: String,
    /// The PSK inline (tests and demos).
    psk: Option<String>,
    /// A file holding the PSK; must not be readable by group or others.
    psk_file: Option<PathBuf>,
    /// The PSK is in the OS keyring (`pqvpn secret set PROFILE`).
    #[serde(default)]
    psk_keyring: bool,
}

fn default_method() -> String {
    "psk".into()
}

impl Auth {
    /// The PSK. `keyring_user` names the entry (`LOCAL_ID@ENDPOINT`, see `secret`) and
    /// `profile` the file for the "store it with `pqvpn secret set`" hint; `keyring` opens the
    /// store, only when `psk_keyring = true`.
    fn psk(
        &self,
        keyring_user: &str,
        profile: &str,
        keyring: impl FnOnce() -> Result<Keyring, String>,
    ) -> Result<SecretBytes, String> {
        if self.method != "psk" {
            return Err(format!(
                "auth.method = \"{}\" is not supported (only \"psk\" for now)",
                self.method
            ));
        }
        let sources = usize::from(self.psk.is_some())
            + usize::from(self.psk_file.is_some())
            + usize::from(self.psk_keyring);
        if sources != 1 {
            return Err("auth: give exactly one of psk, psk_file, psk_keyring".into());
        }
        if self.psk_keyring {
            return keyring()?.get_psk(keyring_user, profile);
        }
        if let Some(psk) = &self.psk {
            if psk.is_empty() {
                return Err("auth.psk is empty".into());
            }
            return Ok(SecretBytes::from_slice(psk.as_bytes()));
        }
        let path = self.psk_file.as_ref().ok_or("auth: no PSK")?;
        let meta =
            fs::metadata(path).map_err(|e| format!("auth.psk_file {}: {e}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "auth.psk_file {} is readable by group or others (mode {:o}); chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        let mut bytes =
            fs::read(path).map_err(|e| format!("auth.psk_file {}: {e}", path.display()))?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(format!("auth.psk_file {} is empty", path.display()));
        }
        Ok(SecretBytes::new(bytes))
    }
}

/// Parses an identity: an IP address, `user@domain` (RFC822), `keyid:…`, or an FQDN.
pub(crate) fn parse_id(key: &str, s: &str) -> Result<IkeId, String> {
    if s.is_empty() {
        return Err(format!("{key} is empty"));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(a) => IkeId::Ipv4(a),
            IpAddr::V6(a) => IkeId::Ipv6(a),
        });
    }
    if let Some(k) = s.strip_prefix("keyid:") {
        return Ok(IkeId::KeyId(k.as_bytes().to_vec()));
    }
    if s.contains('@') {
        return Ok(IkeId::Rfc822(s.into()));
    }
    Ok(IkeId::Fqdn(s.into()))
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "hybrid" => Ok(Mode::Hybrid),
        "pq-only" => Ok(Mode::PqOnly),
        "classical" => Ok(Mode::Classical),
        other => Err(format!(
            "mode = \"{other}\": expected \"hybrid\", \"pq-only\" or \"classical\""
        )),
    }
}

fn parse_mlkem(s: &str) -> Result<KeyExchangeMethod, String> {
    match s {
        "ml-kem-768" => Ok(KeyExchangeMethod::MlKem768),
        "ml-kem-1024" => Ok(KeyExchangeMethod::MlKem1024),
        other => Err(format!(
            "crypto.mlkem = \"{other}\": expected \"ml-kem-768\" or \"ml-kem-1024\""
        )),
    }
}

pub(crate) fn parse_prefix(key: &str, s: &str) -> Result<(IpAddr, u8), String> {
    let (ip, len) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{key}: \"{s}\" is not an IP address or prefix"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if len.is_empty() {
        max
    } else {
        len.parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{key}: bad prefix length in \"{s}\""))?
    };
    Ok((ip, len))
}

/// `[crypto]` of a client profile.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Crypto {
    /// `ml-kem-768` (default) or `ml-kem-1024`.
    mlkem: Option<String>,
}

/// `[network]` of a client profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Network {
    /// Route everything through the tunnel (default), or only `routes` (and the gateway's
    /// INTERNAL_IP4_SUBNET with `accept_pushed_routes`).
    #[serde(default = "yes")]
    pub(crate) full_tunnel: bool,
    /// Extra networks to route through the tunnel (split tunnel).
    #[serde(default)]
    pub(crate) routes: Vec<String>,
    /// Use the DNS servers the gateway pushes.
    #[serde(default = "yes")]
    pub(crate) dns: bool,
    /// TUN MTU; the default leaves room for ESP, UDP and IP on a 1500-octet path.
    #[serde(default = "default_mtu")]
    pub(crate) mtu: u16,
    /// TUN device name.
    pub(crate) interface: Option<String>,
    /// Full tunnel: no main-table route (the LAN, a hostile DHCP's 0.0.0.0/1) bypasses the
    /// tunnel; the LAN is then unreachable (TunnelCrack LocalNet).
    #[serde(default)]
    pub(crate) block_lan: bool,
    /// Route the networks the gateway pushes (INTERNAL_IP4/6_SUBNET) through the tunnel.
    #[serde(default)]
    pub(crate) accept_pushed_routes: bool,
    /// Accept a public (globally routable) virtual address from the gateway.
    #[serde(default)]
    pub(crate) allow_public_virtual_ip: bool,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            full_tunnel: true,
            routes: Vec::new(),
            dns: true,
            mtu: default_mtu(),
            interface: None,
            block_lan: false,
            accept_pushed_routes: false,
            allow_public_virtual_ip: false,
        }
    }
}

fn yes() -> bool {
    true
}

/// 1500 - 20 (IPv4) - 8 (UDP) - 37 (ESP worst case) - 35 of headroom for IPv6 paths.
fn default_mtu() -> u16 {
    1400
}

/// `[ike]` of a client profile.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Ike {
    /// Send a NAT-D hash that makes the gateway switch to UDP 4500 (default true; userspace
    /// ESP needs it).
    force_udp_encapsulation: Option<bool>,
    /// Largest IP datagram for fragmented IKE messages.
    fragment_size: Option<usize>,
    /// Rekey the IKE SA after this long (strongSwan's `rekey_time`, default 4 h).
    rekey_time: Option<DurationValue>,
    /// Rekey each Child SA after this long (strongSwan's `children.<name>.rekey_time`, 1 h).
    child_rekey_time: Option<DurationValue>,
    /// Liveness check after this long without traffic from the gateway; 0 disables (30 s).
    dpd_delay: Option<DurationValue>,
    /// Transmissions of one request before the gateway counts as gone (1 s, doubling; 6).
    retransmit_tries: Option<u32>,
    /// Refuse Child SA rekeys that do not repeat every key exchange (default false: accepted
    /// from gateways configured without PFS; ours always offer it first).
    require_child_pfs: Option<bool>,
}

/// The `[ike]` settings both roles have, borrowed from an `InitiatorConfig` or a
/// `ResponderConfig`.
struct IkeKnobs<'a> {
    fragment_size: &'a mut usize,
    ike_lifetime: &'a mut Lifetime,
    child_lifetime: &'a mut Lifetime,
    dpd_interval: &'a mut Option<Duration>,
    retransmit: &'a mut RetransmitConfig,
    require_child_pfs: &'a mut bool,
}

impl Ike {
    /// Checks the settings that are present and writes them into `knobs`.
    fn apply(&self, knobs: &mut IkeKnobs<'_>) -> Result<(), String> {
        if let Some(size) = self.fragment_size {
            if !(576..=9000).contains(&size) {
                return Err(format!("ike.fragment_size = {size}: expected 576..=9000"));
            }
            *knobs.fragment_size = size;
        }
        if let Some(v) = &self.rekey_time {
            *knobs.ike_lifetime = Lifetime::new(rekey_time("ike.rekey_time", v)?);
        }
        if let Some(v) = &self.child_rekey_time {
            *knobs.child_lifetime = Lifetime::new(rekey_time("ike.child_rekey_time", v)?);
        }
        if let Some(v) = &self.dpd_delay {
            let d = v.parse("ike.dpd_delay")?;
            *knobs.dpd_interval = match d.as_secs() {
                0 => None,
                1..=3600 => Some(d),
                s => return Err(format!("ike.dpd_delay = {s}s: expected 0 (off) or 1s..=1h")),
            };
        }
        if let Some(tries) = self.retransmit_tries {
            if !(1..=10).contains(&tries) {
                return Err(format!("ike.retransmit_tries = {tries}: expected 1..=10"));
            }
            knobs.retransmit.attempts = tries;
        }
        if let Some(require) = self.require_child_pfs {
            *knobs.require_child_pfs = require;
        }
        Ok(())
    }
}

/// A duration in a profile: seconds as an integer, or a string with a unit, `"90s"`, `"30m"`,
/// `"4h"`, `"1d"`.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    fn parse(&self, key: &str) -> Result<Duration, String> {
        let text = match self {
            Self::Seconds(s) => return Ok(Duration::from_secs(*s)),
            Self::Text(t) => t.trim(),
        };
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit_secs = match unit.trim() {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => 0,
        };
        number
            .parse::<u64>()
            .ok()
            .filter(|_| unit_secs > 0)
            .and_then(|n| n.checked_mul(unit_secs))
            .map(Duration::from_secs)
            .ok_or_else(|| {
                format!("{key} = \"{text}\": expected a duration like \"90s\", \"30m\", \"4h\" or \"1d\"")
            })
    }
}

/// Shortest rekey time a profile may set: shorter ones would keep the gateway busy rekeying.
const MIN_REKEY_TIME: Duration = Duration::from_secs(10);
/// Longest rekey time a profile may set (RFC 7296 §2.8 leaves it to policy; strongSwan's
/// defaults are hours).
const MAX_REKEY_TIME: Duration = Duration::from_secs(30 * 86_400);

fn rekey_time(key: &str, value: &DurationValue) -> Result<Duration, String> {
    let d = value.parse(key)?;
    if !(MIN_REKEY_TIME..=MAX_REKEY_TIME).contains(&d) {
        return Err(format!("{key} = {}s: expected 10s..=30d", d.as_secs()));
    }
    Ok(d)
}

/// A client profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    gateway: String,
    local_id: String,
    remote_id: Option<String>,
    #[serde(default = "default_mode")]
    mode: String,
    auth: Auth,
    #[serde(default)]
    crypto: Crypto,
    #[serde(default)]
    network: Network,
    #[serde(default)]
    ike: Ike,
}

fn default_mode() -> String {
    "hybrid".into()
}

/// A client profile, checked and resolved. `Debug` never shows the PSK.
#[derive(Debug)]
pub(crate) struct Profile {
    pub(crate) name: String,
    pub(crate) gateway: SocketAddr,
    pub(crate) initiator: InitiatorConfig,
    pub(crate) network: Network,
    pub(crate) routes: Vec<(IpAddr, u8)>,
}

impl Profile {
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let file: ProfileFile = read_toml(path)?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("pqvpn")
            .to_owned();
        Self::from_file(name, file, &path.display().to_string(), Keyring::os)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    #[cfg(test)]
    pub(crate) fn parse(name: &str, text: &str) -> Result<Self, String> {
        Self::from_file(name.into(), parse_toml(text)?, "PROFILE.toml", Keyring::os)
    }

    fn from_file(
        name: String,
        file: ProfileFile,
        path: &str,
        keyring: impl FnOnce() -> Result<Keyring, String>,
    ) -> Result<Self, String> {
        let mode = parse_mode(&file.mode)?;
        let mlkem = parse_mlkem(file.crypto.mlkem.as_deref().unwrap_or("ml-kem-768"))?;
        let gateway = resolve_gateway(&file.gateway)?;
        let psk = file.auth.psk(
            &secret::entry_user(&file.local_id, &file.gateway),
            path,
            keyring,
        )?;
        let local_id = parse_id("local_id", &file.local_id)?;
        let remote_id = file
            .remote_id
            .as_deref()
            .map(|s| parse_id("remote_id", s))
            .transpose()?;
        let mut initiator = InitiatorConfig::new(mode, psk, local_id, remote_id);
        initiator.policy = match mode {
            Mode::Hybrid => CryptoPolicy::hybrid(mlkem),
            Mode::PqOnly => CryptoPolicy::pq_only(mlkem),
            _ => CryptoPolicy::classical(),
        };
        if let Some(force) = file.ike.force_udp_encapsulation {
            initiator.force_udp_encapsulation = force;
        }
        file.ike.apply(&mut IkeKnobs {
            fragment_size: &mut initiator.fragment_size,
            ike_lifetime: &mut initiator.ike_lifetime,
            child_lifetime: &mut initiator.child_lifetime,
            dpd_interval: &mut initiator.dpd_interval,
            retransmit: &mut initiator.retransmit,
            require_child_pfs: &mut initiator.require_child_pfs,
        })?;
        if !(576..=9000).contains(&file.network.mtu) {
            return Err(format!(
                "network.mtu = {}: expected 576..=9000",
                file.network.mtu
            ));
        }
        let routes = file
            .network
            .routes
            .iter()
            .map(|r| parse_prefix("network.routes", r))
            .collect::<Result<Vec<_>, _>>()?;
        if file.network.block_lan && !file.network.full_tunnel {
            return Err("network.block_lan = true needs full_tunnel = true".into());
        }
        initiator.accept_pushed_routes = file.network.accept_pushed_routes;
        initiator.allow_public_virtual_ip = file.network.allow_public_virtual_ip;
        if !file.network.full_tunnel && routes.is_empty() {
            // The gateway's INTERNAL_IP4_SUBNET may still provide routes.
        }
        if !file.network.full_tunnel {
            initiator.ts_r = routes.iter().map(|&(ip, len)| prefix_ts(ip, len)).collect();
            if initiator.ts_r.is_empty() {
                initiator.ts_r = vec![TrafficSelector::ipv4_any(), TrafficSelector::ipv6_any()];
            }
        }
        initiator.esp = vec![AeadAlgorithm::Aes256Gcm16, AeadAlgorithm::ChaCha20Poly1305];
        Ok(Self {
            name,
            gateway,
            initiator,
            network: file.network,
            routes,
        })
    }
}

/// A selector covering the prefix `ip/len`, all protocols and ports.
pub(crate) fn prefix_ts(ip: IpAddr, len: u8) -> TrafficSelector {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            TrafficSelector::Ipv4 {
                ip_protocol: 0,
                start_port: 0,
                end_port: 65535,
                start_addr: Ipv4Addr::from(bits & mask),
                end_addr: Ipv4Addr::from(bits | !mask),
            }
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            TrafficSelector::Ipv6 {
                ip_protocol: 0,
                start_port: 0,
                end_port: 65535,
                start_addr: (bits & mask).into(),
                end_addr: (bits | !mask).into(),
            }
        }
    }
}

/// `host`, `host:port`, `ip`, `ip:port` or `[ipv6]:port`; port 500 by default.
fn resolve_gateway(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 500));
    }
    let with_port = if s
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        s.to_owned()
    } else {
        format!("{s}:500")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("gateway = \"{s}\": cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("gateway = \"{s}\": no address"))
}

/// `[pool]` of a gateway profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pool {
    /// `first-last`, e.g. `10.99.0.10-10.99.0.200`.
    ipv4: String,
}

/// A gateway profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    #[serde(default = "default_listen")]
    listen: String,
    local_id: String,
    #[serde(default = "default_modes")]
    modes: Vec<String>,
    auth: Auth,
    /// The gateway's own tunnel address, e.g. `10.99.0.1/24`.
    address: String,
    pool: Pool,
    #[serde(default)]
    dns: Vec<String>,
    #[serde(default)]
    subnets: Vec<String>,
    #[serde(default = "default_mtu")]
    mtu: u16,
    interface: Option<String>,
    /// Timers and fragments, as in a client profile (`force_udp_encapsulation` is the client's).
    #[serde(default)]
    ike: Ike,
}

pub(crate) fn default_listen() -> String {
    "0.0.0.0".into()
}

fn default_modes() -> Vec<String> {
    vec!["hybrid".into(), "pq-only".into()]
}

/// A gateway profile, checked.
#[derive(Debug)]
pub(crate) struct GatewayProfile {
    pub(crate) listen: IpAddr,
    pub(crate) responder: ResponderConfig,
    pub(crate) address: (IpAddr, u8),
    pub(crate) mtu: u16,
    pub(crate) interface: Option<String>,
}

impl GatewayProfile {
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let file: GatewayFile = read_toml(path)?;
        Self::from_file(file, &path.display().to_string())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    #[cfg(test)]
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        Self::from_file(parse_toml(text)?, "GATEWAY.toml")
    }

    fn from_file(file: GatewayFile, path: &str) -> Result<Self, String> {
        let listen: IpAddr = file
            .listen
            .parse()
            .map_err(|_| format!("listen = \"{}\" is not an IP address", file.listen))?;
        let policies = file
            .modes
            .iter()
            .map(|m| parse_mode(m).map(CryptoPolicy::for_mode))
            .collect::<Result<Vec<_>, _>>()?;
        if policies.is_empty() {
            return Err("modes is empty".into());
        }
        let mut responder = ResponderConfig::new(
            policies,
            file.auth.psk(
                &secret::entry_user(&file.local_id, &file.listen),
                path,
                Keyring::os,
            )?,
            parse_id("local_id", &file.local_id)?,
        );
        let (first, last) =
            file.pool.ipv4.split_once('-').ok_or_else(|| {
                format!("pool.ipv4 = \"{}\": expected FIRST-LAST", file.pool.ipv4)
            })?;
        let bad = || format!("pool.ipv4 = \"{}\": bad address", file.pool.ipv4);
        let first: Ipv4Addr = first.trim().parse().map_err(|_| bad())?;
        let last: Ipv4Addr = last.trim().parse().map_err(|_| bad())?;
        if first > last {
            return Err(format!("pool.ipv4 = \"{}\": first > last", file.pool.ipv4));
        }
        responder.pool_v4 = Some((first, last));
        responder.dns = file
            .dns
            .iter()
            .map(|d| {
                d.parse()
                    .map_err(|_| format!("dns: \"{d}\" is not an IP address"))
            })
            .collect::<Result<_, _>>()?;
        let subnets = file
            .subnets
            .iter()
            .map(|s| parse_prefix("subnets", s))
            .collect::<Result<Vec<_>, _>>()?;
        for (ip, len) in &subnets {
            if let IpAddr::V4(a) = ip {
                let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                responder
                    .subnets_v4
                    .push((Ipv4Addr::from(u32::from(*a) & mask), Ipv4Addr::from(mask)));
            }
        }
        if !subnets.is_empty() {
            responder.local_ts = subnets
                .iter()
                .map(|&(ip, len)| prefix_ts(ip, len))
                .collect();
        }
        if file.ike.force_udp_encapsulation.is_some() {
            return Err("ike.force_udp_encapsulation is a client setting".into());
        }
        file.ike.apply(&mut IkeKnobs {
            fragment_size: &mut responder.fragment_size,
            ike_lifetime: &mut responder.ike_lifetime,
            child_lifetime: &mut responder.child_lifetime,
            dpd_interval: &mut responder.dpd_interval,
            retransmit: &mut responder.retransmit,
            require_child_pfs: &mut responder.require_child_pfs,
        })?;
        let address = parse_prefix("address", &file.address)?;
        Ok(Self {
            listen,
            responder,
            address,
            mtu: file.mtu,
            interface: file.interface,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
gateway = "198.18.0.1"
local_id = "client.test"
remote_id = "gw.test"
[auth]
psk = "a-test-psk"
"#;

    #[test]
    fn minimal_profile_defaults_to_hybrid_full_tunnel() {
        let p = Profile::parse("t", GOOD).unwrap();
        assert_eq!(p.gateway, "198.18.0.1:500".parse().unwrap());
        assert_eq!(p.initiator.policy.mode, Mode::Hybrid);
        assert!(p.network.full_tunnel);
        assert_eq!(p.initiator.remote_id, Some(IkeId::Fqdn("gw.test".into())));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_line() {
        let e = Profile::parse("t", &format!("{GOOD}\n[network]\nmtuu = 1400\n")).unwrap_err();
        assert!(e.contains("mtuu") && e.contains("line 9"), "{e}");
        let e = Profile::parse("t", &GOOD.replace("gateway", "mode = \"quantum\"\ngateway"))
            .unwrap_err();
        assert!(e.contains("mode") && e.contains("quantum"), "{e}");
        let e = Profile::parse("t", "gateway = 5\n").unwrap_err();
        assert!(e.contains("gateway") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn ike_timers_take_durations_with_units_and_refuse_nonsense() {
        let p = Profile::parse("t", GOOD).unwrap();
        assert_eq!(p.initiator.ike_lifetime, Lifetime::ike_default());
        assert_eq!(p.initiator.child_lifetime, Lifetime::child_default());
        assert_eq!(p.initiator.dpd_interval, Some(Duration::from_secs(30)));
        assert_eq!(p.initiator.retransmit.attempts, 6);
        let text = format!(
            "{GOOD}[ike]\nrekey_time = \"2h\"\nchild_rekey_time = 900\ndpd_delay = \"5s\"\n\
             retransmit_tries = 3\n"
        );
        let p = Profile::parse("t", &text).unwrap();
        assert_eq!(
            p.initiator.ike_lifetime,
            Lifetime::new(Duration::from_secs(7200))
        );
        assert_eq!(
            p.initiator.child_lifetime,
            Lifetime::new(Duration::from_secs(900))
        );
        assert_eq!(p.initiator.dpd_interval, Some(Duration::from_secs(5)));
        assert_eq!(p.initiator.retransmit.attempts, 3);
        assert!(!p.initiator.require_child_pfs);
        let p = Profile::parse(
            "t",
            &format!("{GOOD}[ike]\ndpd_delay = 0\nrequire_child_pfs = true\n"),
        )
        .unwrap();
        assert_eq!(p.initiator.dpd_interval, None);
        assert!(p.initiator.require_child_pfs);
        for (line, key) in [
            ("rekey_time = \"5s\"", "ike.rekey_time"),
            ("rekey_time = \"31d\"", "ike.rekey_time"),
            ("child_rekey_time = \"1 fortnight\"", "ike.child_rekey_time"),
            ("child_rekey_time = \"h\"", "ike.child_rekey_time"),
            ("dpd_delay = \"2h\"", "ike.dpd_delay"),
            ("rekey_time = \"99999999999999999999d\"", "ike.rekey_time"),
            ("retransmit_tries = 0", "ike.retransmit_tries"),
            ("retransmit_tries = 11", "ike.retransmit_tries"),
        ] {
            let e = Profile::parse("t", &format!("{GOOD}[ike]\n{line}\n")).unwrap_err();
            assert!(e.contains(key), "{line}: {e}");
        }
    }

    #[test]
    fn psk_never_appears_in_errors() {
        let text = GOOD.replace(
            "psk = \"a-test-psk\"",
            "psk = \"a-test-psk\"\npsk_file = \"/x\"",
        );
        let e = Profile::parse("t", &text).unwrap_err();
        assert!(!e.contains("a-test-psk"), "{e}");
        assert!(e.contains("exactly one"), "{e}");
    }

    #[test]
    fn psk_keyring_reads_the_entry_of_local_id_at_gateway() {
        let text = GOOD.replace("psk = \"a-test-psk\"", "psk_keyring = true");
        let keyring = Keyring::mock();
        let load = |keyring: &Keyring| {
            Profile::from_file(
                "work".into(),
                parse_toml(&text).unwrap(),
                "/etc/pqvpn/work.toml",
                || Ok(keyring.clone()),
            )
        };
        let e = load(&keyring).unwrap_err();
        assert!(
            e.starts_with("auth.psk_keyring: no PSK for client.test@198.18.0.1 (service pqvpn)"),
            "{e}"
        );
        assert!(
            e.contains("`pqvpn secret set /etc/pqvpn/work.toml`") && !e.contains('\n'),
            "{e}"
        );
        keyring
            .set_psk("client.test@198.18.0.1", b"kr-secret")
            .unwrap();
        let p = load(&keyring).unwrap();
        assert_eq!(p.initiator.psk.expose(), b"kr-secret");
        // Still exactly one source, and the secret never shows up in an error.
        let both = text.replace(
            "psk_keyring = true",
            "psk_keyring = true\npsk = \"kr-secret\"",
        );
        let e = Profile::from_file("w".into(), parse_toml(&both).unwrap(), "p", || {
            Ok(keyring.clone())
        })
        .unwrap_err();
        assert!(e.contains("exactly one") && !e.contains("kr-secret"), "{e}");
    }

    #[test]
    fn world_readable_psk_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("pqvpn-psk-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("psk");
        fs::write(&path, "secret\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let text = GOOD.replace(
            "psk = \"a-test-psk\"",
            &format!("psk_file = \"{}\"", path.display()),
        );
        let e = Profile::parse("t", &text).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let p = Profile::parse("t", &text).unwrap();
        assert_eq!(p.initiator.psk.expose(), b"secret");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn identities_parse_by_shape() {
        assert_eq!(
            parse_id("k", "10.0.0.1").unwrap(),
            IkeId::Ipv4(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(
            parse_id("k", "a@b.c").unwrap(),
            IkeId::Rfc822("a@b.c".into())
        );
        assert_eq!(
            parse_id("k", "keyid:acct_tun").unwrap(),
            IkeId::KeyId(b"acct_tun".to_vec())
        );
        assert_eq!(
            parse_id("k", "vpn.example").unwrap(),
            IkeId::Fqdn("vpn.example".into())
        );
    }

    #[test]
    fn gateway_profile_parses() {
        let g = GatewayProfile::parse(
            r#"
local_id = "gw.test"
address = "10.99.0.1/24"
dns = ["10.99.0.1"]
[auth]
psk = "x"
[pool]
ipv4 = "10.99.0.10-10.99.0.20"
"#,
        )
        .unwrap();
        assert_eq!(g.responder.policies.len(), 2);
        assert_eq!(g.address, (IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1)), 24));
        assert!(GatewayProfile::parse("local_id = \"g\"\n").is_err());
    }

    #[test]
    fn gateway_profile_takes_the_ike_timers_but_not_client_settings() {
        let base = r#"
local_id = "gw.test"
address = "10.99.0.1/24"
[auth]
psk = "x"
[pool]
ipv4 = "10.99.0.10-10.99.0.20"
[ike]
"#;
        let g = GatewayProfile::parse(&format!(
            "{base}rekey_time = \"1h\"\nchild_rekey_time = \"20m\"\ndpd_delay = 0\nfragment_size = 1400\n"
        ))
        .unwrap();
        assert_eq!(
            g.responder.ike_lifetime,
            Lifetime::new(Duration::from_secs(3600))
        );
        assert_eq!(
            g.responder.child_lifetime,
            Lifetime::new(Duration::from_secs(1200))
        );
        assert_eq!(g.responder.dpd_interval, None);
        assert_eq!(g.responder.fragment_size, 1400);
        let e =
            GatewayProfile::parse(&format!("{base}force_udp_encapsulation = true\n")).unwrap_err();
        assert!(e.contains("client setting"), "{e}");
        let e = GatewayProfile::parse(&format!("{base}rekey_time = \"1s\"\n")).unwrap_err();
        assert!(e.contains("ike.rekey_time"), "{e}");
    }

    #[test]
    fn tunnelcrack_network_options_default_off_and_reach_the_configs() {
        let p = Profile::parse("t", GOOD).unwrap();
        assert!(!p.network.block_lan);
        assert!(!p.initiator.accept_pushed_routes);
        assert!(!p.initiator.allow_public_virtual_ip);
        let p = Profile::parse(
            "t",
            &format!(
                "{GOOD}[network]\nblock_lan = true\naccept_pushed_routes = true\n\
                 allow_public_virtual_ip = true\n"
            ),
        )
        .unwrap();
        assert!(p.network.block_lan);
        assert!(p.initiator.accept_pushed_routes);
        assert!(p.initiator.allow_public_virtual_ip);
        let e = Profile::parse(
            "t",
            &format!("{GOOD}[network]\nfull_tunnel = false\nblock_lan = true\n"),
        )
        .unwrap_err();
        assert!(e.contains("block_lan"), "{e}");
    }
}
