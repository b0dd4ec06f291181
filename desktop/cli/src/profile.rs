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
use pqvpn_core::profile::{
    self as spec, ClientProfile, Endpoint, Host, NetworkSpec, PskSource, PskSpec,
};
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

/// The gateway's first address: an IP as is, a name through the system resolver.
pub(crate) fn resolve_gateway(endpoint: &Endpoint) -> Result<SocketAddr, String> {
    let name = match &endpoint.host {
        Host::Ip(ip) => return Ok(SocketAddr::new(*ip, endpoint.port)),
        Host::Name(name) => name,
    };
    (name.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|e| format!("gateway = \"{endpoint}\": cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("gateway = \"{endpoint}\": no address"))
}

/// A client profile, checked and resolved. `Debug` never shows the PSK.
#[derive(Debug)]
pub(crate) struct Profile {
    pub(crate) name: String,
    pub(crate) gateway: SocketAddr,
    pub(crate) initiator: InitiatorConfig,
    pub(crate) network: NetworkSpec,
    pub(crate) routes: Vec<(IpAddr, u8)>,
    /// The checked profile, for building each reconnect's configuration.
    pub(crate) spec: ClientProfile,
    /// The PSK it names, read once.
    pub(crate) psk: SecretBytes,
}

impl Profile {
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let profile = read_profile(path)?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("pqvpn")
            .to_owned();
        let shown = path.display().to_string();
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
        let gateway = resolve_gateway(&spec.gateway)?;
        let psk = resolve_psk(&spec.psk, origin, keyring)?;
        Ok(Self {
            name,
            gateway,
            initiator: spec.initiator_config(psk.clone()),
            routes: spec
                .network
                .routes
                .iter()
                .map(|p| (p.addr, p.len))
                .collect(),
            network: spec.network.clone(),
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
mod tests {
    use std::net::Ipv4Addr;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::time::Duration;

    use pqvpn_core::ike::{Lifetime, Mode};
    use pqvpn_core::profile::MIN_PSK_CHARS;
    use pqvpn_core::wire::IkeId;

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
            Profile::from_text(
                "work".into(),
                &text,
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
        let e = Profile::from_text("w".into(), &both, origin, || Ok(keyring.clone())).unwrap_err();
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
        let e = Profile::from_text("t".into(), &text, origin, || Ok(keyring.clone())).unwrap_err();
        assert!(e.contains("shorter than 20"), "{e}");
        let text = text.replace("[auth]\n", "[auth]\nallow_weak_psk = true\n");
        Profile::from_text("t".into(), &text, origin, || Ok(keyring.clone())).unwrap();

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
        let gateway = GatewayProfile::parse(&text).unwrap();
        let shown = format!("{gateway:?}");
        assert!(
            !shown.contains(secret) && !shown.contains("alice-psk"),
            "{shown}"
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
