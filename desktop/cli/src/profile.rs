//! Profiles: the client's `PROFILE.toml` and the gateway's `GATEWAY.toml` (documented in the
//! README). Unknown keys and bad values are errors naming the key and line; no error message
//! ever contains a PSK.
//!
//! # Files and secrets (security review finding 7, L1, L5)
//!
//! Profiles and PSK files are opened with `O_NOFOLLOW` (a path whose last component is a
//! symbolic link is refused) and checked on the opened descriptor (`fstat`, so nothing can be
//! swapped between the check and the read): each must be a regular file owned by root or by the
//! user running pqvpn. A PSK
//! file must not carry any group or other permission bit; an inline `psk` is refused in a
//! profile that does; a profile writable by group or others is refused. Every PSK, from
//! wherever it comes, must have at least [`MIN_PSK_CHARS`] characters unless its table says
//! `allow_weak_psk = true`. The profile text and every PSK copy are wiped when dropped, and
//! `Debug` never prints a PSK.

use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pqvpn_core::crypto::{AeadAlgorithm, SecretBytes};
use pqvpn_core::ike::{
    CryptoPolicy, InitiatorConfig, Lifetime, Mode, ResponderConfig, RetransmitConfig,
};
use pqvpn_core::wire::{IkeId, KeyExchangeMethod, TrafficSelector};
use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

use crate::secret::{self, Keyring};

/// Fewest characters a PSK may have without `allow_weak_psk = true`. Whoever answers as the
/// gateway receives the client's AUTH and can test PSK guesses against it offline
/// ([RFC 7296 §2.15]), so a PSK must be long and random (security review finding 7).
///
/// [RFC 7296 §2.15]: https://www.rfc-editor.org/rfc/rfc7296#section-2.15
pub(crate) const MIN_PSK_CHARS: usize = 20;

/// Largest profile read, in octets.
const MAX_PROFILE_LEN: u64 = 1 << 20;

/// Largest PSK file read, in octets (one line, or a binary key).
const MAX_PSK_FILE_LEN: u64 = 4096;

/// A file opened for reading with its descriptor's metadata.
struct CheckedFile {
    file: fs::File,
    /// Permission bits (`st_mode & 0o7777`).
    mode: u32,
    len: u64,
}

/// Opens `path` for reading without following a symbolic link and checks the opened file:
/// a regular file owned by root or the effective uid. `key` names the file in errors
/// (`profile`, `auth.psk_file`).
#[cfg(unix)]
fn open_checked(path: &Path, key: &str) -> Result<CheckedFile, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

    // O_NONBLOCK: opening a FIFO must not hang; it is refused below. Regular files ignore it.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                format!(
                    "{key} {} is a symbolic link, which pqvpn does not follow (whoever can \
                     change the link could choose the file); give the path of the file itself",
                    path.display()
                )
            } else {
                format!("Failed to open {key} {}: {e}", path.display())
            }
        })?;
    // fstat(2) on the descriptor: the file checked is the file read.
    let meta = file
        .metadata()
        .map_err(|e| format!("Failed to stat {key} {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{key} {} is not a regular file", path.display()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(format!(
            "{key} {} belongs to uid {}: it must belong to root or to the user running pqvpn \
             (uid {euid}), or its owner can choose what pqvpn uses",
            path.display(),
            meta.uid()
        ));
    }
    Ok(CheckedFile {
        file,
        mode: meta.mode() & 0o7777,
        len: meta.len(),
    })
}

/// Opens `path` for reading (no owner or mode on this platform: the checks are unix-only).
#[cfg(not(unix))]
fn open_checked(path: &Path, key: &str) -> Result<CheckedFile, String> {
    let file = fs::File::open(path)
        .map_err(|e| format!("Failed to open {key} {}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("Failed to stat {key} {}: {e}", path.display()))?
        .len();
    Ok(CheckedFile {
        file,
        mode: 0o600,
        len,
    })
}

impl CheckedFile {
    /// Reads the whole file, at most `max` octets, into a buffer wiped on drop. The buffer is
    /// sized from `fstat` first so that reading does not reallocate (and leave copies behind).
    fn read_all(mut self, key: &str, path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>, String> {
        if self.len > max {
            return Err(format!(
                "{key} {} is larger than {max} octets",
                path.display()
            ));
        }
        let capacity = usize::try_from(self.len.saturating_add(1)).unwrap_or(0);
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        (&mut self.file)
            .take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| format!("Failed to read {key} {}: {e}", path.display()))?;
        if bytes.len() as u64 > max {
            return Err(format!(
                "{key} {} is larger than {max} octets",
                path.display()
            ));
        }
        Ok(bytes)
    }
}

/// A profile's text, wiped on drop, and the permission bits of its file.
pub(crate) struct ProfileText {
    pub(crate) text: Zeroizing<String>,
    pub(crate) mode: u32,
}

/// Reads a profile through [`open_checked`]; a profile writable by group or others is refused
/// (they could point the tunnel elsewhere).
pub(crate) fn read_profile(path: &Path) -> Result<ProfileText, String> {
    let file = open_checked(path, "profile")?;
    let mode = file.mode;
    if mode & 0o022 != 0 {
        return Err(format!(
            "profile {} is writable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        ));
    }
    let mut bytes = file.read_all("profile", path, MAX_PROFILE_LEN)?;
    // Moves the buffer (no copy); on error the bytes come back and are wiped.
    let text = String::from_utf8(std::mem::take(&mut *bytes)).map_err(|e| {
        drop(Zeroizing::new(e.into_bytes()));
        format!("profile {} is not UTF-8 text", path.display())
    })?;
    Ok(ProfileText {
        text: Zeroizing::new(text),
        mode,
    })
}

/// Where a profile came from: the path for messages and its file's permission bits.
#[derive(Clone, Copy)]
struct Origin<'a> {
    path: &'a str,
    mode: u32,
}

/// Reads and parses a profile, naming the file (and, from the parser, key and line) in errors.
fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<(T, u32), String> {
    let profile = read_profile(path)?;
    let value = parse_toml(&profile.text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((value, profile.mode))
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
            // The excerpt, and the reason ("invalid type: integer `…`"), may quote the PSK.
            Some(source) if is_psk_line(source) => {
                format!("{first}: bad psk value (not shown: it may be the secret)")
            }
            Some(source) => format!("{first}: {reason} (in `{source}`)"),
            None => format!("{first}: {reason}"),
        }
    })
}

/// Whether a profile line sets an inline PSK (`psk = …`, also in a `[[clients]]` table).
fn is_psk_line(line: &str) -> bool {
    line.trim_start()
        .strip_prefix("psk")
        .is_some_and(|rest| rest.trim_start().starts_with('=') || rest.trim_start().is_empty())
}

/// A PSK written inline in a profile: wiped on drop, never printed.
pub(crate) struct InlinePsk(Zeroizing<String>);

impl<'de> Deserialize<'de> for InlinePsk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| Self(Zeroizing::new(s)))
    }
}

impl std::fmt::Debug for InlinePsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlinePsk(<redacted>)")
    }
}

/// `[auth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Auth {
    /// Only `psk` for now.
    #[serde(default = "default_method")]
    method: String,
    /// The PSK inline (tests and demos); only in a profile without group or other permissions.
    psk: Option<InlinePsk>,
    /// A file holding the PSK; must not be readable by group or others.
    psk_file: Option<PathBuf>,
    /// The PSK is in the OS keyring (`pqvpn secret set PROFILE`).
    #[serde(default)]
    psk_keyring: bool,
    /// Accept a PSK shorter than [`MIN_PSK_CHARS`] characters.
    #[serde(default)]
    allow_weak_psk: bool,
}

fn default_method() -> String {
    "psk".into()
}

impl Auth {
    /// The PSK. `keyring_user` names the entry (`LOCAL_ID@ENDPOINT`, see `secret`) and
    /// `origin` the profile (for the "store it with `pqvpn secret set`" hint and the inline-PSK
    /// mode check); `keyring` opens the store, only when `psk_keyring = true`.
    fn psk(
        &self,
        keyring_user: &str,
        origin: Origin<'_>,
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
        let psk = if self.psk_keyring {
            keyring()?.get_psk(keyring_user, origin.path)?
        } else {
            resolve_psk("auth", self.psk.as_ref(), self.psk_file.as_deref(), origin)?
        };
        check_psk_strength("auth", &psk, self.allow_weak_psk)?;
        Ok(psk)
    }
}

/// The PSK given inline or in a file under the table `key` (`auth`, `clients[0]`), checked for
/// file safety but not yet for length.
fn resolve_psk(
    key: &str,
    inline: Option<&InlinePsk>,
    file: Option<&Path>,
    origin: Origin<'_>,
) -> Result<SecretBytes, String> {
    if let Some(psk) = inline {
        if origin.mode & 0o077 != 0 {
            return Err(format!(
                "{key}.psk is written in {}, which group or others may read (mode {:o}): move \
                 the PSK to a psk_file (mode 600) or the OS keyring (psk_keyring), or chmod 600 \
                 the profile",
                origin.path,
                origin.mode & 0o777
            ));
        }
        if psk.0.is_empty() {
            return Err(format!("{key}.psk is empty"));
        }
        return Ok(SecretBytes::from_slice(psk.0.as_bytes()));
    }
    let path = file.ok_or_else(|| format!("{key}: no PSK"))?;
    let what = format!("{key}.psk_file");
    let checked = open_checked(path, &what)?;
    if checked.mode & 0o077 != 0 {
        return Err(format!(
            "{what} {} is accessible to group or others (mode {:o}); chmod 600 it",
            path.display(),
            checked.mode & 0o777
        ));
    }
    let mut bytes = checked.read_all(&what, path, MAX_PSK_FILE_LEN)?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(format!("{what} {} is empty", path.display()));
    }
    // Moves the buffer into the secret (no copy).
    Ok(SecretBytes::new(std::mem::take(&mut *bytes)))
}

/// Refuses a PSK shorter than [`MIN_PSK_CHARS`] characters (octets when it is not UTF-8)
/// unless `allow_weak` (the table's `allow_weak_psk`). `key` names the table in the error.
pub(crate) fn check_psk_strength(
    key: &str,
    psk: &SecretBytes,
    allow_weak: bool,
) -> Result<(), String> {
    let chars = std::str::from_utf8(psk.expose()).map_or(psk.len(), |s| s.chars().count());
    if chars < MIN_PSK_CHARS && !allow_weak {
        return Err(format!(
            "{key}: the PSK is shorter than {MIN_PSK_CHARS} characters; whoever answers as the \
             gateway can guess a short PSK offline from one AUTH, so use a long random one \
             (e.g. `openssl rand -base64 32`), or set {key}.allow_weak_psk = true to accept it"
        ));
    }
    Ok(())
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
    /// The identity the gateway must prove (IDr). Required: an `Option` only so that its
    /// absence gets our error rather than serde's.
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
        let (file, mode): (ProfileFile, u32) = read_toml(path)?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("pqvpn")
            .to_owned();
        let shown = path.display().to_string();
        let origin = Origin { path: &shown, mode };
        Self::from_file(name, file, origin, Keyring::os).map_err(|e| format!("{shown}: {e}"))
    }

    /// Parses a profile text as if read from a mode-600 file.
    #[cfg(test)]
    pub(crate) fn parse(name: &str, text: &str) -> Result<Self, String> {
        let origin = Origin {
            path: "PROFILE.toml",
            mode: 0o600,
        };
        Self::from_file(name.into(), parse_toml(text)?, origin, Keyring::os)
    }

    fn from_file(
        name: String,
        file: ProfileFile,
        origin: Origin<'_>,
        keyring: impl FnOnce() -> Result<Keyring, String>,
    ) -> Result<Self, String> {
        let mode = parse_mode(&file.mode)?;
        let mlkem = parse_mlkem(file.crypto.mlkem.as_deref().unwrap_or("ml-kem-768"))?;
        // Without IDr the client would accept any identity from whoever holds the PSK
        // (security review finding 7).
        let remote_id = file.remote_id.as_deref().ok_or(
            "remote_id is missing: set it to the gateway's identity (its local_id); without it \
             the client accepts any identity, so anyone holding the PSK (another client, \
             for a group PSK) can impersonate the gateway",
        )?;
        let remote_id = parse_id("remote_id", remote_id)?;
        let gateway = resolve_gateway(&file.gateway)?;
        let psk = file.auth.psk(
            &secret::entry_user(&file.local_id, &file.gateway),
            origin,
            keyring,
        )?;
        let local_id = parse_id("local_id", &file.local_id)?;
        let mut initiator = InitiatorConfig::new(mode, psk, local_id, Some(remote_id));
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

/// One `[[clients]]` table of a gateway profile: a client identity and its own PSK.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    /// The client's IDi, as in its profile's `local_id`.
    id: String,
    /// The PSK inline; only in a profile without group or other permissions.
    psk: Option<InlinePsk>,
    /// A file holding the PSK; must not be readable by group or others.
    psk_file: Option<PathBuf>,
    /// Accept a PSK shorter than [`MIN_PSK_CHARS`] characters.
    #[serde(default)]
    allow_weak_psk: bool,
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
    /// The group PSK, for every client not in `clients`. Any client holding it can
    /// impersonate the gateway to every other client holding it (PSK AUTH is symmetric), so
    /// prefer `clients`.
    auth: Option<Auth>,
    /// One PSK per client identity (`ResponderConfig::client_psks`): a client can then only
    /// prove its own identity, and the gateway answers it with that client's key.
    #[serde(default)]
    clients: Vec<ClientEntry>,
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
        let (file, mode): (GatewayFile, u32) = read_toml(path)?;
        let shown = path.display().to_string();
        let origin = Origin { path: &shown, mode };
        let profile = Self::from_file(file, origin).map_err(|e| format!("{shown}: {e}"))?;
        if profile.responder.group_psk.is_some() {
            tracing::warn!(
                "{shown}: [auth] sets a group PSK: any client holding it can impersonate this \
                 gateway to the others; prefer one PSK per client ([[clients]])"
            );
        }
        Ok(profile)
    }

    /// Parses a gateway profile text as if read from a mode-600 file.
    #[cfg(test)]
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let origin = Origin {
            path: "GATEWAY.toml",
            mode: 0o600,
        };
        Self::from_file(parse_toml(text)?, origin)
    }

    fn from_file(file: GatewayFile, origin: Origin<'_>) -> Result<Self, String> {
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
        let group_psk = file
            .auth
            .as_ref()
            .map(|auth| {
                auth.psk(
                    &secret::entry_user(&file.local_id, &file.listen),
                    origin,
                    Keyring::os,
                )
            })
            .transpose()?;
        if group_psk.is_none() && file.clients.is_empty() {
            return Err(
                "no PSK: add a [[clients]] table (id and psk_file) for each client, or \
                 [auth] for one group PSK shared by all clients"
                    .into(),
            );
        }
        let mut responder = ResponderConfig::new(
            policies,
            SecretBytes::default(),
            parse_id("local_id", &file.local_id)?,
        );
        responder.group_psk = group_psk;
        for (i, client) in file.clients.iter().enumerate() {
            let key = format!("clients[{i}]");
            let id = parse_id(&format!("{key}.id"), &client.id)?;
            let sources =
                usize::from(client.psk.is_some()) + usize::from(client.psk_file.is_some());
            if sources != 1 {
                return Err(format!(
                    "{key} ({}): give exactly one of psk, psk_file",
                    client.id
                ));
            }
            let psk = resolve_psk(
                &key,
                client.psk.as_ref(),
                client.psk_file.as_deref(),
                origin,
            )?;
            check_psk_strength(&key, &psk, client.allow_weak_psk)?;
            if responder.client_psks.insert(id, psk).is_some() {
                return Err(format!("{key}.id = \"{}\" is listed twice", client.id));
            }
        }
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
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const GOOD: &str = r#"
gateway = "198.18.0.1"
local_id = "client.test"
remote_id = "gw.test"
[auth]
psk = "a-test-psk-not-a-secret"
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
            "psk = \"a-test-psk-not-a-secret\"",
            "psk = \"a-test-psk-not-a-secret\"\npsk_file = \"/x\"",
        );
        let e = Profile::parse("t", &text).unwrap_err();
        assert!(!e.contains("a-test-psk-not-a-secret"), "{e}");
        assert!(e.contains("exactly one"), "{e}");
        // Parse errors on the PSK's line quote neither the line nor the value.
        for bad in [
            "psk = 123456789012345678901",
            "psk = \"a-test-psk-not-a-secret\" trailing",
            "psk = \"a-test-psk-not-a-secret\\q\"",
        ] {
            let text = GOOD.replace("psk = \"a-test-psk-not-a-secret\"", bad);
            let e = Profile::parse("t", &text).unwrap_err();
            assert!(
                e.contains("line 6") && !e.contains("a-test-psk") && !e.contains("12345678901"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn psk_keyring_reads_the_entry_of_local_id_at_gateway() {
        let text = GOOD.replace("psk = \"a-test-psk-not-a-secret\"", "psk_keyring = true");
        let keyring = Keyring::mock();
        let load = |keyring: &Keyring| {
            Profile::from_file(
                "work".into(),
                parse_toml(&text).unwrap(),
                Origin {
                    path: "/etc/pqvpn/work.toml",
                    mode: 0o600,
                },
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
            .set_psk("client.test@198.18.0.1", b"kr-secret-of-twenty-plus")
            .unwrap();
        let p = load(&keyring).unwrap();
        assert_eq!(p.initiator.psk.expose(), b"kr-secret-of-twenty-plus");
        // Still exactly one source, and the secret never shows up in an error.
        let both = text.replace(
            "psk_keyring = true",
            "psk_keyring = true\npsk = \"kr-secret-of-twenty-plus\"",
        );
        let origin = Origin {
            path: "p",
            mode: 0o600,
        };
        let e = Profile::from_file("w".into(), parse_toml(&both).unwrap(), origin, || {
            Ok(keyring.clone())
        })
        .unwrap_err();
        assert!(
            e.contains("exactly one") && !e.contains("kr-secret-of-twenty-plus"),
            "{e}"
        );
    }

    /// A directory of its own under the temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("pqvpn-profile-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        /// Writes `name` with `text` and then sets `mode` (whatever the umask).
        fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn with_psk_file(path: &Path) -> String {
        GOOD.replace(
            "psk = \"a-test-psk-not-a-secret\"",
            &format!("psk_file = \"{}\"", path.display()),
        )
    }

    #[test]
    fn group_readable_psk_file_is_refused() {
        let dir = TempDir::new("group");
        let path = dir.write("psk", "file-secret-of-twenty-plus\n", 0o640);
        let text = with_psk_file(&path);
        let e = Profile::parse("t", &text).unwrap_err();
        assert!(
            e.contains("auth.psk_file") && e.contains("group or others") && e.contains("chmod 600"),
            "{e}"
        );
        for mode in [0o604, 0o620, 0o601] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let e = Profile::parse("t", &text).unwrap_err();
            assert!(e.contains("chmod 600"), "{mode:o}: {e}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let p = Profile::parse("t", &text).unwrap();
        assert_eq!(p.initiator.psk.expose(), b"file-secret-of-twenty-plus");
    }

    #[test]
    fn symlinked_psk_file_is_refused() {
        let dir = TempDir::new("link");
        let target = dir.write("psk", "file-secret-of-twenty-plus\n", 0o600);
        let link = dir.0.join("psk-link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = Profile::parse("t", &with_psk_file(&link)).unwrap_err();
        assert!(
            e.contains("auth.psk_file") && e.contains("symbolic link") && e.contains("psk-link"),
            "{e}"
        );
        assert!(!e.contains("file-secret"), "{e}");
        // The file itself is fine.
        Profile::parse("t", &with_psk_file(&target)).unwrap();
    }

    #[test]
    fn symlinked_profile_is_refused() {
        let dir = TempDir::new("plink");
        let target = dir.write("work.toml", GOOD, 0o600);
        let link = dir.0.join("link.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = Profile::load(&link).unwrap_err();
        assert!(e.contains("profile") && e.contains("symbolic link"), "{e}");
        let e = GatewayProfile::load(&link).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        Profile::load(&target).unwrap();
    }

    #[test]
    fn psk_file_that_is_not_a_regular_file_is_refused_without_blocking() {
        let dir = TempDir::new("fifo");
        let fifo = dir.0.join("psk");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        fs::set_permissions(&fifo, fs::Permissions::from_mode(0o600)).unwrap();
        let e = Profile::parse("t", &with_psk_file(&fifo)).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let e = Profile::parse("t", &with_psk_file(&dir.0)).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }

    /// The owner check needs a file owned by someone else, which only root can make.
    #[test]
    fn psk_file_or_profile_owned_by_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: needs root to give a file to another user");
            return;
        }
        let dir = TempDir::new("owner");
        let path = dir.write("psk", "file-secret-of-twenty-plus\n", 0o600);
        std::os::unix::fs::chown(&path, Some(1000), Some(1000)).unwrap();
        let e = Profile::parse("t", &with_psk_file(&path)).unwrap_err();
        assert!(
            e.contains("auth.psk_file") && e.contains("belongs to uid 1000") && e.contains("root"),
            "{e}"
        );
        let profile = dir.write("work.toml", GOOD, 0o600);
        std::os::unix::fs::chown(&profile, Some(1000), None).unwrap();
        let e = Profile::load(&profile).unwrap_err();
        assert!(
            e.contains("profile") && e.contains("belongs to uid 1000"),
            "{e}"
        );
        std::os::unix::fs::chown(&profile, Some(0), None).unwrap();
        Profile::load(&profile).unwrap();
    }

    #[test]
    fn inline_psk_in_world_readable_profile_is_refused() {
        let dir = TempDir::new("inline");
        for mode in [0o644, 0o640, 0o604] {
            let path = dir.write("work.toml", GOOD, mode);
            let e = Profile::load(&path).unwrap_err();
            assert!(
                e.contains("auth.psk")
                    && e.contains("psk_file")
                    && e.contains("keyring")
                    && e.contains("chmod 600"),
                "{mode:o}: {e}"
            );
            assert!(!e.contains("a-test-psk"), "{e}");
        }
        let path = dir.write("work.toml", GOOD, 0o600);
        Profile::load(&path).unwrap();
        // Without an inline PSK the profile may be world-readable.
        let psk = dir.write("psk", "file-secret-of-twenty-plus\n", 0o600);
        let path = dir.write("shared.toml", &with_psk_file(&psk), 0o644);
        let p = Profile::load(&path).unwrap();
        assert_eq!(p.initiator.psk.expose(), b"file-secret-of-twenty-plus");
        // Nobody but the owner may write one, though.
        for mode in [0o664, 0o646] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let e = Profile::load(&path).unwrap_err();
            assert!(e.contains("writable by group or others"), "{mode:o}: {e}");
        }
        // The gateway's inline PSKs follow the same rule.
        let gateway = dir.write(
            "gw.toml",
            &format!(
                "{GATEWAY_BASE}[[clients]]\nid = \"alice.test\"\npsk = \"alice-psk-not-a-secret\"\n"
            ),
            0o644,
        );
        let e = GatewayProfile::load(&gateway).unwrap_err();
        assert!(
            e.contains("clients[0].psk") && e.contains("chmod 600"),
            "{e}"
        );
    }

    #[test]
    fn profile_without_remote_id_is_refused() {
        let text = GOOD.replace("remote_id = \"gw.test\"\n", "");
        let e = Profile::parse("t", &text).unwrap_err();
        assert!(
            e.starts_with("remote_id is missing") && e.contains("impersonate"),
            "{e}"
        );
        let dir = TempDir::new("noid");
        let path = dir.write("work.toml", &text, 0o600);
        let e = Profile::load(&path).unwrap_err();
        assert!(e.contains("work.toml: remote_id is missing"), "{e}");
        let e = Profile::parse("t", &GOOD.replace("\"gw.test\"", "\"\"")).unwrap_err();
        assert!(e.contains("remote_id is empty"), "{e}");
    }

    #[test]
    fn short_psk_is_refused_unless_allow_weak_psk() {
        let short = "nineteen-characters";
        assert_eq!(short.len(), MIN_PSK_CHARS - 1);
        let weak = GOOD.replace("a-test-psk-not-a-secret", short);
        let e = Profile::parse("t", &weak).unwrap_err();
        assert!(
            e.contains("shorter than 20 characters") && e.contains("auth.allow_weak_psk = true"),
            "{e}"
        );
        assert!(!e.contains(short), "{e}");
        let allowed = weak.replace("[auth]\n", "[auth]\nallow_weak_psk = true\n");
        let p = Profile::parse("t", &allowed).unwrap();
        assert_eq!(p.initiator.psk.expose(), short.as_bytes());
        // Characters, not octets: 19 two-octet characters are still too short.
        let e = Profile::parse(
            "t",
            &GOOD.replace("a-test-psk-not-a-secret", &"é".repeat(19)),
        )
        .unwrap_err();
        assert!(e.contains("shorter than 20"), "{e}");
        Profile::parse(
            "t",
            &GOOD.replace("a-test-psk-not-a-secret", &"é".repeat(20)),
        )
        .unwrap();

        // The same after a psk_file is read (the newline does not count)...
        let dir = TempDir::new("short");
        let path = dir.write("psk", &format!("{short}\n"), 0o600);
        let e = Profile::parse("t", &with_psk_file(&path)).unwrap_err();
        assert!(e.contains("shorter than 20"), "{e}");
        let text = with_psk_file(&path).replace("[auth]\n", "[auth]\nallow_weak_psk = true\n");
        Profile::parse("t", &text).unwrap();

        // ...and after the keyring is read.
        let keyring = Keyring::mock();
        keyring
            .set_psk("client.test@198.18.0.1", short.as_bytes())
            .unwrap();
        let origin = Origin {
            path: "p",
            mode: 0o600,
        };
        let text = GOOD.replace("psk = \"a-test-psk-not-a-secret\"", "psk_keyring = true");
        let e = Profile::from_file("t".into(), parse_toml(&text).unwrap(), origin, || {
            Ok(keyring.clone())
        })
        .unwrap_err();
        assert!(e.contains("shorter than 20"), "{e}");
        let text = text.replace("[auth]\n", "[auth]\nallow_weak_psk = true\n");
        Profile::from_file("t".into(), parse_toml(&text).unwrap(), origin, || {
            Ok(keyring.clone())
        })
        .unwrap();

        // A gateway's group and per-client PSKs too.
        let e = GatewayProfile::parse(
            &GATEWAY_BASE.replace("[pool]", &format!("[auth]\npsk = \"{short}\"\n[pool]")),
        )
        .unwrap_err();
        assert!(e.contains("auth: the PSK is shorter than 20"), "{e}");
        let client = format!("[[clients]]\nid = \"alice.test\"\npsk = \"{short}\"\n");
        let e = GatewayProfile::parse(&format!("{GATEWAY_BASE}{client}")).unwrap_err();
        assert!(
            e.contains("clients[0]: the PSK is shorter than 20")
                && e.contains("clients[0].allow_weak_psk = true"),
            "{e}"
        );
        GatewayProfile::parse(&format!("{GATEWAY_BASE}{client}allow_weak_psk = true\n")).unwrap();
    }

    const GATEWAY_BASE: &str = r#"
local_id = "gw.test"
address = "10.99.0.1/24"
[pool]
ipv4 = "10.99.0.10-10.99.0.20"
"#;

    #[test]
    fn gateway_clients_get_their_own_psk() {
        let dir = TempDir::new("clients");
        let bob_psk = dir.write("bob.psk", "bob-psk-from-a-file-not-a-secret\n", 0o600);
        let text = format!(
            "{GATEWAY_BASE}[[clients]]\nid = \"alice@corp.test\"\npsk = \"alice-psk-not-a-secret\"\n\
             [[clients]]\nid = \"10.0.0.7\"\npsk_file = \"{}\"\n",
            bob_psk.display()
        );
        let path = dir.write("gw.toml", &text, 0o600);
        let g = GatewayProfile::load(&path).unwrap();
        let psks = &g.responder.client_psks;
        assert_eq!(psks.len(), 2);
        assert_eq!(
            psks[&IkeId::Rfc822("alice@corp.test".into())].expose(),
            b"alice-psk-not-a-secret"
        );
        assert_eq!(
            psks[&IkeId::Ipv4(Ipv4Addr::new(10, 0, 0, 7))].expose(),
            b"bob-psk-from-a-file-not-a-secret"
        );
        // No [auth]: no group key, so an IDi not listed has no key at all.
        assert!(g.responder.group_psk.is_none());

        // [auth] with [[clients]]: the group key is for everyone else.
        let both = text.replace(
            "[pool]",
            "[auth]\npsk = \"gateway-group-psk-not-a-secret\"\n[pool]",
        );
        let g = GatewayProfile::parse(&both).unwrap();
        assert_eq!(g.responder.client_psks.len(), 2);
        assert_eq!(
            g.responder.group_psk.as_ref().unwrap().expose(),
            b"gateway-group-psk-not-a-secret"
        );

        // Mistakes name the table.
        let e = GatewayProfile::parse(GATEWAY_BASE).unwrap_err();
        assert!(e.contains("no PSK") && e.contains("[[clients]]"), "{e}");
        let twice = format!(
            "{GATEWAY_BASE}[[clients]]\nid = \"a.test\"\npsk = \"alice-psk-not-a-secret\"\n\
             [[clients]]\nid = \"a.test\"\npsk = \"other-psk-not-a-secret\"\n"
        );
        let e = GatewayProfile::parse(&twice).unwrap_err();
        assert!(
            e.contains("clients[1].id = \"a.test\" is listed twice"),
            "{e}"
        );
        let e = GatewayProfile::parse(&format!("{GATEWAY_BASE}[[clients]]\nid = \"a.test\"\n"))
            .unwrap_err();
        assert!(e.contains("clients[0] (a.test): give exactly one"), "{e}");
        let e = GatewayProfile::parse(&format!(
            "{GATEWAY_BASE}[[clients]]\nid = \"a.test\"\npsk_keyring = true\n"
        ))
        .unwrap_err();
        assert!(e.contains("psk_keyring"), "{e}");
        let link = dir.0.join("link.psk");
        std::os::unix::fs::symlink(&bob_psk, &link).unwrap();
        let e = GatewayProfile::parse(&format!(
            "{GATEWAY_BASE}[[clients]]\nid = \"b.test\"\npsk_file = \"{}\"\n",
            link.display()
        ))
        .unwrap_err();
        assert!(
            e.contains("clients[0].psk_file") && e.contains("symbolic link"),
            "{e}"
        );
    }

    #[test]
    fn psk_debug_output_is_redacted() {
        let secret = "a-test-psk-not-a-secret";
        let file: ProfileFile = parse_toml(GOOD).unwrap();
        let shown = format!("{file:?}");
        assert!(
            shown.contains("redacted") && !shown.contains(secret),
            "{shown}"
        );
        let profile = Profile::parse("t", GOOD).unwrap();
        let shown = format!("{profile:?}");
        assert!(
            !shown.contains(secret) && !shown.contains("116, 101, 115, 116"),
            "{shown}"
        );
        let text = format!(
            "{GATEWAY_BASE}[auth]\npsk = \"{secret}\"\n[[clients]]\nid = \"a.test\"\n\
             psk = \"alice-psk-not-a-secret\"\n"
        );
        let file: GatewayFile = parse_toml(&text).unwrap();
        let shown = format!("{file:?}");
        assert!(
            !shown.contains(secret) && !shown.contains("alice-psk"),
            "{shown}"
        );
        let gateway = GatewayProfile::parse(&text).unwrap();
        let shown = format!("{gateway:?}");
        assert!(
            !shown.contains(secret) && !shown.contains("alice-psk"),
            "{shown}"
        );
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
psk = "gateway-group-psk-not-a-secret"
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
psk = "gateway-group-psk-not-a-secret"
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
