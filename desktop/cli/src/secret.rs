//! The OS keyring for `[auth] psk_keyring = true`, and `pqvpn secret set|delete PROFILE.toml`.
//!
//! # Entry naming
//!
//! Service `pqvpn`, user `LOCAL_ID@ENDPOINT` with the strings as written in the profile:
//! ENDPOINT is `gateway` for a client profile and `listen` (default `0.0.0.0`) for a gateway
//! profile, e.g. `alice@corp.example@vpn.corp.example:4500`. A PSK belongs to the pair "this
//! identity, that IKE peer", not to a file name: renaming or moving a profile keeps its secret,
//! and two profiles for the same identity and gateway share one entry. The string is
//! unambiguous because an endpoint (host, IP, `host:port`) never contains `@`; the part before
//! the last `@` is the identity.
//!
//! # Stores
//!
//! keyring 4 is a thin wrapper over `keyring-core` (the API) and one crate per platform store;
//! its own docs ask applications that choose their stores to link those crates directly, which
//! is what this crate does (no Secret Service or database code is pulled in):
//!
//! * **Linux, root: pqvpn's persistent store** ([`crate::vault`]: files sealed with
//!   `systemd-creds` in `/var/lib/pqvpn/secrets`), which survives reboots, so the daemon
//!   finds its profiles' PSKs at boot. The kernel keyring below is still read when the store
//!   has no entry: older versions stored PSKs there.
//! * **Linux, other users: the kernel key retention service** (keyutils; a small keyring-core store in
//!   [`kernel`] rather than `linux-keyutils-keyring-store`, see there why). `pqvpn up`
//!   runs as root (sudo, systemd): a desktop user's Secret Service (gnome-keyring, KWallet)
//!   lives on that user's D-Bus session bus, which root's process normally cannot reach (sudo
//!   strips `DBUS_SESSION_BUS_ADDRESS`, the bus only accepts its own uid, and headless machines
//!   have no session bus at all). The kernel keyring needs no daemon: the key goes into the
//!   caller's **persistent keyring** (`persistent-keyring(7)`), which belongs to the uid and
//!   outlives sessions, so `sudo pqvpn secret set` in one terminal and `sudo pqvpn up` later
//!   (another session, or a systemd unit) find it. Limits, stated in errors and
//!   the README: the kernel keeps keys in memory only, so the entry is **gone after a reboot**,
//!   and the persistent keyring expires after `/proc/sys/kernel/keys/persistent_keyring_expiry`
//!   seconds (3 days by default) without use (every `pqvpn up` renews it). For a PSK that must
//!   survive reboots use `psk_file` (root-owned, mode 600). Keys are per uid: store the secret
//!   as the user that runs `pqvpn up` (root).
//! * **macOS: the login Keychain**; **Windows: the Credential Manager**, through their stores.
//! * Other platforms: a one-line "not supported" error.
//!
//! No function here logs or formats a secret; errors name `auth.psk_keyring` and the entry.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use keyring_core::{CredentialStore, Entry, Error};
use pqvpn_core::crypto::SecretBytes;
use pqvpn_core::profile::{ClientProfile, GatewayProfile, PskSource, check_psk_strength};
use zeroize::Zeroizing;

/// The keyring service of every pqvpn entry.
pub(crate) const SERVICE: &str = "pqvpn";

/// The service of users' own credentials (`user_credentials = true`): apart from the
/// administrator's entries, whatever a profile's `local_id` says.
pub(crate) const USER_SERVICE: &str = "pqvpn-user";

/// The keyring user of a profile: `LOCAL_ID@ENDPOINT` (see the module docs), as
/// `ClientProfile::keyring_user` makes it.
#[cfg(test)]
fn entry_user(local_id: &str, endpoint: &str) -> String {
    format!("{local_id}@{endpoint}")
}

/// A credential store holding pqvpn PSKs, and for reading only, an older one it replaced.
#[derive(Clone)]
pub(crate) struct Keyring {
    store: Arc<CredentialStore>,
    /// Searched when `store` has no entry: root's kernel keyring, where `pqvpn secret set`
    /// stored PSKs before the persistent store existed.
    fallback: Option<Arc<CredentialStore>>,
}

impl Keyring {
    /// The platform's store (see the module docs for the choice). On Linux, root (the daemon,
    /// `pqvpn up`, `sudo pqvpn secret set`) uses the persistent store of [`crate::vault`],
    /// reading the kernel keyring as well; other users the kernel keyring.
    pub(crate) fn os() -> Result<Self, String> {
        let opened = |e: Error| {
            format!(
                "auth.psk_keyring: cannot open the OS keyring: {}",
                one_line(&e)
            )
        };
        let store = os_store().map_err(opened)?;
        #[cfg(target_os = "linux")]
        if is_root() {
            return Ok(Self {
                store: Arc::new(crate::vault::Store::system()),
                fallback: Some(store),
            });
        }
        Ok(Self {
            store,
            fallback: None,
        })
    }

    /// An in-memory store (`keyring_core::mock`) for tests.
    #[cfg(test)]
    pub(crate) fn mock() -> Self {
        let store = keyring_core::mock::Store::new().expect("mock store");
        Self {
            store,
            fallback: None,
        }
    }

    /// The store is the kernel keyring (its content is lost on reboot).
    fn is_kernel(&self) -> bool {
        self.store.vendor().contains("keyutils")
    }

    /// The store is the persistent one of [`crate::vault`].
    fn is_vault(&self) -> bool {
        self.store.id().starts_with("pqvpn-vault:")
    }

    /// A short name of the store for messages.
    fn describe(&self) -> String {
        if self.is_vault() {
            let dir = self
                .store
                .id()
                .trim_start_matches("pqvpn-vault:")
                .to_owned();
            let how = if crate::vault::Store::seals() {
                "sealed with systemd-creds"
            } else {
                "plain root-only files: systemd-creds is not installed"
            };
            format!("pqvpn's store in {dir} ({how})")
        } else if cfg!(test) && self.store.vendor().starts_with("Mock") {
            "the test keyring".into()
        } else if cfg!(target_os = "linux") {
            "the kernel persistent keyring of this user".into()
        } else if cfg!(target_os = "macos") {
            "the macOS Keychain".into()
        } else if cfg!(windows) {
            "the Windows Credential Manager".into()
        } else {
            "the OS keyring".into()
        }
    }

    fn entry(&self, user: &str) -> Result<Entry, String> {
        self.entry_in(SERVICE, user)
    }

    fn entry_in(&self, service: &str, user: &str) -> Result<Entry, String> {
        Entry::new_in_store(&self.store, service, user).map_err(|e| {
            format!(
                "auth.psk_keyring: cannot open {} for {user}: {}",
                self.describe(),
                one_line(&e)
            )
        })
    }

    /// The PSK stored for `user`; `profile` is the path to name in the "how to store it" hint.
    pub(crate) fn get_psk(&self, user: &str, profile: &str) -> Result<SecretBytes, String> {
        let entry = self.entry(user)?;
        let mut found = entry.get_secret();
        if matches!(found, Err(Error::NoEntry))
            && let Some(fallback) = &self.fallback
            && let Ok(old) = Entry::new_in_store(fallback, SERVICE, user)
        {
            found = old.get_secret();
        }
        match found {
            Ok(bytes) if bytes.is_empty() => Err(format!(
                "auth.psk_keyring: the PSK stored for {user} (service {SERVICE}) is empty; \
                 store one with `pqvpn secret set {profile}`"
            )),
            Ok(bytes) => Ok(SecretBytes::new(bytes)),
            Err(Error::NoEntry) => {
                let reboot = if self.is_kernel() {
                    " (the kernel keyring is emptied by a reboot)"
                } else {
                    ""
                };
                Err(format!(
                    "auth.psk_keyring: no PSK for {user} (service {SERVICE}) in {}{reboot}; \
                     store it with `pqvpn secret set {profile}` as the user that runs `pqvpn up`",
                    self.describe()
                ))
            }
            Err(e) => Err(format!(
                "auth.psk_keyring: cannot read the PSK for {user} from {}: {}",
                self.describe(),
                one_line(&e)
            )),
        }
    }

    /// A user's own credential stored as `user` ([`USER_SERVICE`]), if any.
    pub(crate) fn get_user_secret(&self, user: &str) -> Result<Option<SecretBytes>, String> {
        match self.entry_in(USER_SERVICE, user)?.get_secret() {
            Ok(bytes) if bytes.is_empty() => Ok(None),
            Ok(bytes) => Ok(Some(SecretBytes::new(bytes))),
            Err(Error::NoEntry) => Ok(None),
            Err(e) => Err(format!(
                "cannot read the credential for {user} from {}: {}",
                self.describe(),
                one_line(&e)
            )),
        }
    }

    /// Stores (or replaces) a user's own credential as `user` ([`USER_SERVICE`]).
    pub(crate) fn set_user_psk(&self, user: &str, psk: &[u8]) -> Result<(), String> {
        self.entry_in(USER_SERVICE, user)?
            .set_secret(psk)
            .map_err(|e| format!("cannot store the credential: {}", one_line(&e)))
    }

    /// Deletes a user's own credential stored as `user`.
    pub(crate) fn delete_user_psk(&self, user: &str) -> Result<(), String> {
        match self.entry_in(USER_SERVICE, user)?.delete_credential() {
            Ok(()) => Ok(()),
            Err(Error::NoEntry) => Err("you have stored no credential for it".into()),
            Err(e) => Err(format!("cannot delete the credential: {}", one_line(&e))),
        }
    }

    /// Stores (or replaces) the PSK for `user`.
    pub(crate) fn set_psk(&self, user: &str, psk: &[u8]) -> Result<(), String> {
        if psk.is_empty() {
            return Err("the PSK is empty; nothing stored".into());
        }
        self.entry(user)?.set_secret(psk).map_err(|e| {
            format!(
                "auth.psk_keyring: cannot store the PSK for {user} in {}: {}",
                self.describe(),
                one_line(&e)
            )
        })
    }

    /// Removes the PSK for `user` (from the older store too).
    pub(crate) fn delete_psk(&self, user: &str) -> Result<(), String> {
        let old = self
            .fallback
            .as_ref()
            .and_then(|f| Entry::new_in_store(f, SERVICE, user).ok())
            .is_some_and(|e| e.delete_credential().is_ok());
        match self.entry(user)?.delete_credential() {
            Ok(()) => Ok(()),
            Err(Error::NoEntry) if old => Ok(()),
            Err(Error::NoEntry) => Err(format!(
                "auth.psk_keyring: no PSK for {user} (service {SERVICE}) in {}; nothing deleted",
                self.describe()
            )),
            Err(e) => Err(format!(
                "auth.psk_keyring: cannot delete the PSK for {user} from {}: {}",
                self.describe(),
                one_line(&e)
            )),
        }
    }
}

#[cfg(target_os = "linux")]
fn os_store() -> keyring_core::Result<Arc<CredentialStore>> {
    Ok(Arc::new(kernel::Store))
}

/// A keyring-core store on the calling user's **persistent keyring**, reached through the
/// process keyring.
///
/// Why not `linux-keyutils-keyring-store`: it adds keys to the *session* keyring and links them
/// into the persistent one from there. What the session keyring is depends on how root was
/// reached (sudo with or without `pam_keyinit`, a systemd unit, a container without a login
/// session): with the implicit user-session keyring, linking into the persistent keyring is
/// refused (`AccessDenied`, seen on the build machine; it works only under `keyctl session -`),
/// and with an inherited desktop session the key would also sit in that user's session. Going
/// through the process keyring (private to this process, created on demand) makes the
/// persistent keyring possessed, so the key is added straight into it and found by the next
/// `pqvpn up`, whatever its session. Descriptions are the stock store's
/// (`keyring:USER@SERVICE`, a `user` key), so `keyctl show %:_persistent.0` lists them.
#[cfg(target_os = "linux")]
mod kernel {
    use std::collections::HashMap;
    use std::sync::Arc;

    use keyring_core::api::{CredentialApi, CredentialPersistence, CredentialStoreApi};
    use keyring_core::{Credential, Entry, Error, Result};
    use linux_keyutils::{KeyError, KeyRing, KeyRingIdentifier};

    #[derive(Debug)]
    pub(super) struct Store;

    impl CredentialStoreApi for Store {
        fn vendor(&self) -> String {
            "pqvpn kernel persistent keyring (keyutils)".into()
        }

        fn id(&self) -> String {
            "pqvpn-keyutils-persistent".into()
        }

        fn build(
            &self,
            service: &str,
            user: &str,
            modifiers: Option<&HashMap<&str, &str>>,
        ) -> Result<Entry> {
            if modifiers.is_some_and(|m| !m.is_empty()) {
                return Err(Error::NotSupportedByStore("modifiers".into()));
            }
            let cred: Arc<Credential> = Arc::new(Cred {
                service: service.into(),
                user: user.into(),
            });
            Ok(Entry::new_with_credential(cred))
        }

        fn as_any(&self) -> &dyn std::any::Any {
            self
        }

        fn persistence(&self) -> CredentialPersistence {
            CredentialPersistence::UntilReboot
        }
    }

    #[derive(Debug)]
    struct Cred {
        service: String,
        user: String,
    }

    fn map(e: KeyError) -> Error {
        match e {
            KeyError::KeyDoesNotExist | KeyError::KeyRevoked | KeyError::KeyExpired => {
                Error::NoEntry
            }
            KeyError::AccessDenied => Error::NoStorageAccess(Box::new(e)),
            other => Error::PlatformFailure(Box::new(other)),
        }
    }

    impl Cred {
        fn description(&self) -> String {
            format!("keyring:{}@{}", self.user, self.service)
        }

        /// The process keyring (searched) and the persistent keyring linked into it (written).
        fn rings() -> Result<(KeyRing, KeyRing)> {
            let process = KeyRing::from_special_id(KeyRingIdentifier::Process, true)
                .map_err(|e| Error::NoStorageAccess(Box::new(e)))?;
            // Also renews the persistent keyring's expiry timer.
            let persistent = KeyRing::get_persistent(KeyRingIdentifier::Process)
                .map_err(|e| Error::NoStorageAccess(Box::new(e)))?;
            Ok((process, persistent))
        }
    }

    impl CredentialApi for Cred {
        fn set_secret(&self, secret: &[u8]) -> Result<()> {
            if secret.is_empty() {
                return Err(Error::Invalid("secret".into(), "cannot be empty".into()));
            }
            let (_, persistent) = Self::rings()?;
            persistent
                .add_key(&self.description(), secret)
                .map(|_| ())
                .map_err(map)
        }

        fn get_secret(&self) -> Result<Vec<u8>> {
            let (process, _) = Self::rings()?;
            let key = process.search(&self.description()).map_err(map)?;
            key.read_to_vec().map_err(map)
        }

        fn delete_credential(&self) -> Result<()> {
            let (process, _) = Self::rings()?;
            let key = process.search(&self.description()).map_err(map)?;
            key.invalidate().map_err(map)
        }

        fn get_credential(&self) -> Result<Option<Arc<Credential>>> {
            let (process, _) = Self::rings()?;
            process.search(&self.description()).map_err(map)?;
            Ok(None)
        }

        fn get_specifiers(&self) -> Option<(String, String)> {
            Some((self.service.clone(), self.user.clone()))
        }

        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }
}

#[cfg(target_os = "macos")]
fn os_store() -> keyring_core::Result<Arc<CredentialStore>> {
    Ok(apple_native_keyring_store::keychain::Store::new()?)
}

#[cfg(windows)]
fn os_store() -> keyring_core::Result<Arc<CredentialStore>> {
    Ok(windows_native_keyring_store::Store::new()?)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn os_store() -> keyring_core::Result<Arc<CredentialStore>> {
    Err(Error::NotSupportedByStore(
        "no OS keyring on this platform; use psk_file".into(),
    ))
}

/// Formats a keyring error on one line. Only `Display` is used: the `Debug` form of some
/// variants (`BadEncoding`, `BadDataFormat`) carries the stored bytes.
fn one_line(e: &Error) -> String {
    let text = match e {
        Error::BadEncoding(_) | Error::BadDataFormat(..) => "the stored data is malformed".into(),
        Error::Ambiguous(items) => format!("{} entries match", items.len()),
        other => other.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What `secret set|delete` needs from a profile.
#[derive(Debug, PartialEq)]
struct EntryOf {
    /// The keyring user (`LOCAL_ID@ENDPOINT`).
    user: String,
    /// The profile sets `auth.psk_keyring = true`.
    uses_keyring: bool,
    /// The profile sets `auth.allow_weak_psk = true`.
    allow_weak_psk: bool,
}

/// The keyring entry of the profile at `path`, read like `pqvpn up` reads it (no symbolic
/// link, owner root or the caller; see `profile`) and checked whole.
fn entry_of(path: &Path) -> Result<EntryOf, String> {
    let profile = crate::profile::read_profile(path)?;
    let shown = path.display();
    // A client profile names its gateway; a gateway profile does not.
    let is_client = toml::from_str::<toml::Table>(&profile.text)
        .map_or(true, |table| table.contains_key("gateway"));
    let (user, psk) = if is_client {
        let p = ClientProfile::parse(&profile.text).map_err(|e| format!("{shown}: {e}"))?;
        (p.keyring_user().to_owned(), Some(p.psk))
    } else {
        let g = GatewayProfile::parse(&profile.text).map_err(|e| format!("{shown}: {e}"))?;
        (g.keyring_user().to_owned(), g.group_psk)
    };
    Ok(EntryOf {
        user,
        uses_keyring: psk
            .as_ref()
            .is_some_and(|p| matches!(p.source, PskSource::Keyring { .. })),
        allow_weak_psk: psk.as_ref().is_some_and(|p| p.allow_weak),
    })
}

/// `pqvpn secret set PROFILE.toml`: reads the PSK from stdin (hidden when it is a terminal) and
/// stores it in the OS keyring.
pub(crate) async fn set(profile: &Path) -> Result<(), String> {
    let EntryOf {
        user,
        uses_keyring,
        allow_weak_psk,
    } = entry_of(profile)?;
    let keyring = Keyring::os()?;
    let psk = if std::io::stdin().is_terminal() {
        read_hidden_twice(&user).await?
    } else {
        read_psk_line(&mut std::io::stdin().lock())?
    };
    check_psk_strength("auth", &psk, allow_weak_psk).map_err(|e| e.to_string())?;
    keyring.set_psk(&user, psk.expose())?;
    eprintln!(
        "pqvpn: stored the PSK for {user} (service {SERVICE}) in {}",
        keyring.describe()
    );
    if keyring.is_vault() {
        eprintln!("pqvpn: it survives reboots; the daemon reads it at each connect");
    }
    if keyring.is_kernel() {
        eprintln!(
            "pqvpn: the kernel keyring keeps it until reboot, or {} of non-use; use psk_file \
             for a PSK that must survive reboots",
            persistent_expiry()
        );
        if !is_root() {
            eprintln!(
                "pqvpn: warning: this is the keyring of your user, but `pqvpn up` runs as root \
                 and reads root's: run `sudo pqvpn secret set {}`",
                profile.display()
            );
        }
    }
    if !uses_keyring {
        eprintln!(
            "pqvpn: note: {} does not set auth.psk_keyring = true yet, so it does not use this PSK",
            profile.display()
        );
    }
    Ok(())
}

/// `pqvpn secret delete PROFILE.toml`.
pub(crate) fn delete(profile: &Path) -> Result<(), String> {
    let user = entry_of(profile)?.user;
    let keyring = Keyring::os()?;
    keyring.delete_psk(&user)?;
    eprintln!(
        "pqvpn: deleted the PSK for {user} (service {SERVICE}) from {}",
        keyring.describe()
    );
    Ok(())
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\n', '\r'])
}

/// Room for a PSK line, reserved up front so that reading does not reallocate (and leave
/// unwiped copies behind).
const LINE_CAPACITY: usize = 1024;

/// Reads one PSK line; the line is wiped when dropped.
pub(crate) fn read_psk_line(input: &mut impl BufRead) -> Result<SecretBytes, String> {
    let mut line = Zeroizing::new(String::with_capacity(LINE_CAPACITY));
    input
        .read_line(&mut line)
        .map_err(|e| format!("Failed to read the PSK from stdin: {e}"))?;
    Ok(SecretBytes::from_slice(trim_newline(&line).as_bytes()))
}

/// Prompts on stderr and reads the PSK twice from the terminal with echo off.
pub(crate) async fn read_hidden_twice(user: &str) -> Result<SecretBytes, String> {
    let first = read_hidden(&format!("PSK for {user}: ")).await?;
    let second = read_hidden("Repeat the PSK: ").await?;
    if first.expose() != second.expose() {
        return Err("the two entries differ; nothing stored".into());
    }
    Ok(first)
}

/// Reads one line from the terminal with echo turned off by `stty` (no terminal crate and no
/// `unsafe`); if `stty` is unavailable the input is visible and the prompt says so. Ctrl-C
/// restores echo before exiting.
async fn read_hidden(prompt: &str) -> Result<SecretBytes, String> {
    let hidden = stty("-echo");
    let mut err = std::io::stderr();
    let note = if hidden {
        ""
    } else {
        "(warning: input is visible) "
    };
    let _ = write!(err, "{note}{prompt}");
    let _ = err.flush();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A plain thread, not spawn_blocking: after Ctrl-C the process exits without waiting for
    // the blocked read.
    std::thread::spawn(move || {
        let _ = tx.send(read_psk_line(&mut std::io::stdin().lock()));
    });
    let result = tokio::select! {
        r = rx => r.map_err(|_| "Failed to read the PSK".to_owned()),
        _ = tokio::signal::ctrl_c() => Err("interrupted; nothing stored".to_owned()),
    };
    if hidden {
        stty("echo");
    }
    let _ = writeln!(err);
    result?
}

/// Runs `stty ARG` on the terminal (stdin); true if it worked.
fn stty(arg: &str) -> bool {
    cfg!(unix)
        && std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

#[cfg(unix)]
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[cfg(not(unix))]
fn is_root() -> bool {
    true
}

/// The persistent keyring's idle expiry, for the message after `secret set`.
fn persistent_expiry() -> String {
    std::fs::read_to_string("/proc/sys/kernel/keys/persistent_keyring_expiry")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or_else(
            || "a few days".into(),
            |s| {
                if s % 86_400 == 0 {
                    format!("{} days", s / 86_400)
                } else {
                    format!("{s} s")
                }
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_store_round_trip_and_absent_entry() {
        let keyring = Keyring::mock();
        let user = entry_user("alice@corp.example", "vpn.corp.example");
        assert_eq!(user, "alice@corp.example@vpn.corp.example");
        let e = keyring.get_psk(&user, "work.toml").unwrap_err();
        assert!(e.starts_with("auth.psk_keyring: no PSK for"), "{e}");
        assert!(e.contains("pqvpn secret set work.toml"), "{e}");
        assert!(!e.contains('\n'));
        keyring.set_psk(&user, b"first-secret").unwrap();
        keyring.set_psk(&user, b"s3cret-psk").unwrap();
        assert_eq!(keyring.get_psk(&user, "p").unwrap().expose(), b"s3cret-psk");
        // Another identity or gateway is another entry.
        assert!(keyring.get_psk("bob@vpn.corp.example", "p").is_err());
        keyring.delete_psk(&user).unwrap();
        assert!(keyring.get_psk(&user, "p").is_err());
        let e = keyring.delete_psk(&user).unwrap_err();
        assert!(e.contains("nothing deleted"), "{e}");
        assert!(keyring.set_psk(&user, b"").is_err());
    }

    #[test]
    fn store_errors_are_one_line_without_the_secret() {
        let keyring = Keyring::mock();
        keyring.set_psk("u@g", b"s3cret-psk").unwrap();
        let entry = keyring.entry("u@g").unwrap();
        let mock: &keyring_core::mock::Cred = entry.as_any().downcast_ref().unwrap();
        mock.set_error(Error::BadEncoding(b"s3cret-psk".to_vec()));
        let e = keyring.get_psk("u@g", "p").unwrap_err();
        assert!(e.starts_with("auth.psk_keyring: "), "{e}");
        assert!(!e.contains("s3cret") && !e.contains('\n'), "{e}");
        mock.set_error(Error::PlatformFailure("locked\nkeychain".into()));
        let e = keyring.get_psk("u@g", "p").unwrap_err();
        assert!(e.contains("locked keychain") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn entry_names_come_from_the_profile() {
        let dir = std::env::temp_dir().join(format!("pqvpn-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let client = dir.join("work.toml");
        std::fs::write(
            &client,
            "gateway = \"vpn.example:4500\"\nlocal_id = \"me@example\"\n\
             remote_id = \"vpn.example\"\n[auth]\npsk_keyring = true\n[network]\nmtu = 1400\n",
        )
        .unwrap();
        assert_eq!(
            entry_of(&client).unwrap(),
            EntryOf {
                user: "me@example@vpn.example:4500".into(),
                uses_keyring: true,
                allow_weak_psk: false,
            }
        );
        let gateway = dir.join("gw.toml");
        std::fs::write(
            &gateway,
            "local_id = \"gw.test\"\naddress = \"10.99.0.1/24\"\n[auth]\npsk = \"x\"\n\
             allow_weak_psk = true\n[pool]\nipv4 = \"10.99.0.10-10.99.0.20\"\n",
        )
        .unwrap();
        assert_eq!(
            entry_of(&gateway).unwrap(),
            EntryOf {
                user: "gw.test@0.0.0.0".into(),
                uses_keyring: false,
                allow_weak_psk: true,
            }
        );
        // A broken profile is reported with its line, never half-used.
        std::fs::write(&client, "gateway = \"vpn.example\"\nlocal_id = 7\n").unwrap();
        let e = entry_of(&client).unwrap_err();
        assert!(
            e.contains("work.toml: line 2") && e.contains("local_id"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The real Linux store: root's persistent kernel keyring. Skipped without root or when the
    /// kernel denies keyrings (e.g. a seccomp profile blocking `add_key`).
    #[cfg(target_os = "linux")]
    /// Root's store: the persistent one first, the kernel keyring (where older versions
    /// stored PSKs) still read; new PSKs go to the persistent store.
    #[test]
    fn the_persistent_store_comes_first_and_the_old_one_is_still_read() {
        if !is_root() {
            println!("skipped: the persistent store is root's (systemd-creds' host key)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("pqvpn-secret-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let old = Keyring::mock();
        old.set_psk("old@gw", b"an-old-psk-not-a-secret-0123")
            .unwrap();
        let keyring = Keyring {
            store: Arc::new(crate::vault::Store::new(&dir)),
            fallback: Some(old.store.clone()),
        };
        assert_eq!(
            keyring.get_psk("old@gw", "p").unwrap().expose(),
            b"an-old-psk-not-a-secret-0123"
        );
        keyring
            .set_psk("new@gw", b"a-new-psk-not-a-secret-01234")
            .unwrap();
        assert_eq!(
            keyring.get_psk("new@gw", "p").unwrap().expose(),
            b"a-new-psk-not-a-secret-01234"
        );
        assert!(old.get_psk("new@gw", "p").is_err(), "not in the old store");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // Deleting removes it from both.
        keyring.delete_psk("old@gw").unwrap();
        assert!(keyring.get_psk("old@gw", "p").is_err());
        assert!(keyring.describe().contains(&dir.display().to_string()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kernel_keyring_round_trip_as_root() {
        if !is_root() {
            println!("skipped: needs root (the kernel keyring of the user that runs pqvpn up)");
            return;
        }
        // The kernel store itself (as root, `Keyring::os` puts the persistent one first).
        let keyring = Keyring {
            store: os_store().unwrap(),
            fallback: None,
        };
        let user = entry_user(
            &format!("test-{}", std::process::id()),
            "kernel-keyring.test",
        );
        if let Err(e) = keyring.set_psk(&user, b"kernel-psk") {
            println!("skipped: the kernel keyring is not writable here ({e})");
            return;
        }
        assert_eq!(keyring.get_psk(&user, "p").unwrap().expose(), b"kernel-psk");
        keyring.delete_psk(&user).unwrap();
        // keyutils invalidates asynchronously: the same process may still see the key for a
        // few milliseconds.
        let mut result = keyring.get_psk(&user, "p");
        for _ in 0..50 {
            if result.is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            result = keyring.get_psk(&user, "p");
        }
        let e = result.err().unwrap();
        assert!(e.contains("no PSK for") && e.contains("reboot"), "{e}");
    }
}
