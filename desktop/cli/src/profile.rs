//! Profiles from files: [`pqvpn_core::profile`] parses and checks the text; this module reads
//! the files, checks their owners and modes, reads the PSKs and resolves the gateway's name.
//! No error message ever contains a PSK.
//!
//! # Files and secrets (security review finding 7, L1, L5)
//!
//! Profiles and PSK files are opened with `O_NOFOLLOW` (a path whose last component is a
//! symbolic link is refused) and checked on the opened descriptor (`fstat`, so nothing can be
//! swapped between the check and the read): each must be a regular file owned by root or by the
//! user running pqvpn. A PSK
//! file must not carry any group or other permission bit; an inline `psk` is refused in a
//! profile that does; a profile writable by group or others is refused. Every PSK, from
//! wherever it comes, must have at least [`MIN_PSK_CHARS`](spec::MIN_PSK_CHARS) characters unless its table says
//! `allow_weak_psk = true`. The profile text and every PSK copy are wiped when dropped, and
//! `Debug` never prints a PSK.

use std::fs;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use pqvpn_core::crypto::SecretBytes;
use pqvpn_core::ike::{InitiatorConfig, ResponderConfig};
use pqvpn_core::profile::{self as spec, ClientProfile, Endpoint, Host, PskSource, PskSpec};
use zeroize::Zeroizing;

use crate::secret::Keyring;

/// Largest profile read, in octets.
const MAX_PROFILE_LEN: u64 = spec::MAX_PROFILE_LEN as u64;

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

/// Reads the PSK `spec` names and checks its length. An inline PSK is refused in a profile that
/// group or others may read; `keyring` opens the store, only for `psk_keyring = true`.
fn resolve_psk(
    spec: &PskSpec,
    origin: Origin<'_>,
    keyring: impl FnOnce() -> Result<Keyring, String>,
) -> Result<SecretBytes, String> {
    let key = &spec.key;
    let psk = match &spec.source {
        PskSource::Inline(psk) => {
            if origin.mode & 0o077 != 0 {
                return Err(format!(
                    "{key}.psk is written in {}, which group or others may read (mode {:o}): \
                     move the PSK to a psk_file (mode 600) or the OS keyring (psk_keyring), or \
                     chmod 600 the profile",
                    origin.path,
                    origin.mode & 0o777
                ));
            }
            psk.clone()
        }
        PskSource::File(path) => read_psk_file(key, path)?,
        PskSource::Keyring { user } => keyring()?.get_psk(user, origin.path)?,
        PskSource::PerUser { .. } => {
            return Err(format!(
                "{key}.user_credentials = true: each user gives the daemon their own PSK for \
                 this profile, so it runs only under `pqvpn daemon`: store yours with `pqvpn \
                 credential set NAME`, then `pqvpn connect NAME`"
            ));
        }
    };
    spec.check(&psk).map_err(|e| e.to_string())?;
    Ok(psk)
}

/// The PSK in `path` (`KEY.psk_file`): a regular file of root or ours, no group or other
/// permission bits, one line (the newline does not count) or a binary key.
fn read_psk_file(key: &str, path: &Path) -> Result<SecretBytes, String> {
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

/// The gateway's first address: an IP as is; a name from `/etc/hosts` or DNS asked from the
/// driver's marked socket (`platform::resolve`: the one lookup the kill switch lets out),
/// else through the system resolver. The servers in `avoid` (the tunnel's own) are not asked.
pub(crate) fn resolve_gateway(endpoint: &Endpoint, avoid: &[IpAddr]) -> Result<SocketAddr, String> {
    let name = match &endpoint.host {
        Host::Ip(ip) => return Ok(SocketAddr::new(*ip, endpoint.port)),
        Host::Name(name) => name,
    };
    let marked = match pqvpn_core::platform::resolve::lookup(name, LOOKUP_TIMEOUT, avoid) {
        Ok(found) => match found.first() {
            Some(&ip) => return Ok(SocketAddr::new(ip, endpoint.port)),
            None => "no address".to_owned(),
        },
        Err(e) => e.to_string(),
    };
    tracing::debug!(reason = %marked, "falling back to the system resolver");
    (name.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|e| format!("gateway = \"{endpoint}\": cannot resolve: {marked}; {e}"))?
        .next()
        .ok_or_else(|| format!("gateway = \"{endpoint}\": no address"))
}

/// How long each DNS server is waited for (three at most): the lookup runs inside the
/// supervisor's start of a session.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A profile's name (its file stem) and its path for messages.
fn names(path: &Path) -> (String, String) {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("pqvpn")
        .to_owned();
    (name, path.display().to_string())
}

/// A client profile as the daemon keeps it: its file and schema checked, nothing resolved.
/// Its PSK is read (from the profile, its file or the store) and its gateway looked up at each
/// connect, so a PSK stored, or a DNS server that comes up, after the daemon started is found.
#[derive(Debug)]
pub(crate) struct StoredProfile {
    pub(crate) name: String,
    /// The file, for messages.
    pub(crate) path: String,
    /// The file's permission bits (an inline PSK needs 0600).
    mode: u32,
    pub(crate) spec: ClientProfile,
}

impl StoredProfile {
    /// Reads and checks the profile at `path`; an inline PSK in a file others may read is
    /// refused now.
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let profile = read_profile(path)?;
        let (name, shown) = names(path);
        let spec = ClientProfile::parse(&profile.text).map_err(|e| format!("{shown}: {e}"))?;
        let stored = Self {
            name,
            path: shown,
            mode: profile.mode,
            spec,
        };
        if matches!(stored.spec.psk.source, PskSource::Inline(_)) {
            stored.psk(Keyring::os)?;
        }
        Ok(stored)
    }

    /// The profile's PSK, read now; `keyring` opens the store for `psk_keyring = true`.
    pub(crate) fn psk(
        &self,
        keyring: impl FnOnce() -> Result<Keyring, String>,
    ) -> Result<SecretBytes, String> {
        let origin = Origin {
            path: &self.path,
            mode: self.mode,
        };
        resolve_psk(&self.spec.psk, origin, keyring).map_err(|e| format!("{}: {e}", self.path))
    }
}

/// A client profile, checked and resolved. `Debug` never shows the PSK.
#[derive(Debug)]
pub(crate) struct Profile {
    pub(crate) name: String,
    pub(crate) gateway: SocketAddr,
    pub(crate) initiator: InitiatorConfig,
    /// The checked profile, for building each reconnect's configuration.
    pub(crate) spec: ClientProfile,
    /// The PSK it names, read once.
    pub(crate) psk: SecretBytes,
}

impl Profile {
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let profile = read_profile(path)?;
        let (name, shown) = names(path);
        let origin = Origin {
            path: &shown,
            mode: profile.mode,
        };
        Self::from_text(name, &profile.text, origin, Keyring::os)
            .map_err(|e| format!("{shown}: {e}"))
    }

    /// Parses and resolves a profile text as if read from a mode-600 file.
    #[cfg(test)]
    pub(crate) fn parse(name: &str, text: &str) -> Result<Self, String> {
        let origin = Origin {
            path: "PROFILE.toml",
            mode: 0o600,
        };
        Self::from_text(name.into(), text, origin, Keyring::os)
    }

    fn from_text(
        name: String,
        text: &str,
        origin: Origin<'_>,
        keyring: impl FnOnce() -> Result<Keyring, String>,
    ) -> Result<Self, String> {
        let spec = ClientProfile::parse(text).map_err(|e| e.to_string())?;
        let gateway = resolve_gateway(&spec.gateway, &[])?;
        let psk = resolve_psk(&spec.psk, origin, keyring)?;
        Ok(Self {
            name,
            gateway,
            initiator: spec.initiator_config(psk.clone()),
            spec,
            psk,
        })
    }
}

/// A gateway profile, checked, its PSKs read.
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
        let text = read_profile(path)?;
        let shown = path.display().to_string();
        let origin = Origin {
            path: &shown,
            mode: text.mode,
        };
        let profile = Self::from_text(&text.text, origin).map_err(|e| format!("{shown}: {e}"))?;
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
        Self::from_text(text, origin)
    }

    fn from_text(text: &str, origin: Origin<'_>) -> Result<Self, String> {
        let spec = spec::GatewayProfile::parse(text).map_err(|e| e.to_string())?;
        let group_psk = spec
            .group_psk
            .as_ref()
            .map(|psk| resolve_psk(psk, origin, Keyring::os))
            .transpose()?;
        let client_psks = spec
            .clients
            .iter()
            .map(|client| resolve_psk(&client.psk, origin, Keyring::os))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            listen: spec.listen,
            responder: spec.responder_config(group_psk, client_psks),
            address: (spec.address.addr, spec.address.len),
            mtu: spec.mtu,
            interface: spec.interface,
        })
    }
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
