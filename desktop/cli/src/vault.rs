//! The daemon's secret store that survives reboots: one file per entry in
//! `/var/lib/pqvpn/secrets` (directory 0700, files 0600, root), each sealed with
//! `systemd-creds encrypt` (AES-256-GCM under the host key `/var/lib/systemd/credential.secret`,
//! and the TPM2 as well where there is one). A copied disk image or backup without that key, or
//! without the machine's TPM, does not yield the PSK; the credential's embedded name binds
//! each file to its entry, so a file renamed onto another entry is refused.
//!
//! Why not the kernel keyring (the store of `pqvpn up` before this one): it forgets everything
//! at reboot, and a daemon started at boot must find its profiles' PSKs. Why files and
//! `systemd-creds` rather than a keyring daemon: root's services have no Secret Service, and
//! `systemd-creds` is the OS's own tool for service secrets at rest (no key material in pqvpn).
//!
//! Where `systemd-creds` is missing (a container without systemd), entries are kept as plain
//! root-only files, as strongSwan keeps `swanctl.conf` secrets, and every write says so.
//!
//! Entries are `service`/`user` as in every keyring-core store; a user's own credential for a
//! `user_credentials = true` profile is the entry `uid-UID/LOCAL_ID@ENDPOINT`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use keyring_core::api::{CredentialApi, CredentialPersistence, CredentialStoreApi};
use keyring_core::{Credential, Entry, Error, Result};
use zeroize::Zeroizing;

/// Where the daemon's secrets live.
pub(crate) const SECRETS_DIR: &str = "/var/lib/pqvpn/secrets";

/// Where `systemd-creds` is looked for: Debian's place first, then the other usual ones.
const SYSTEMD_CREDS: [&str; 4] = [
    "/usr/bin/systemd-creds",
    "/bin/systemd-creds",
    "/usr/local/bin/systemd-creds",
    "/run/current-system/sw/bin/systemd-creds",
];

/// The first line of an entry kept without `systemd-creds`.
const PLAIN_HEADER: &[u8] = b"pqvpn-plain-v1\n";

/// The store: a directory of entries.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (created on the first write).
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The store of this machine: [`SECRETS_DIR`], or `PQVPN_SECRETS_DIR` (tests, a second
    /// daemon instance).
    pub(crate) fn system() -> Self {
        Self::new(
            std::env::var_os("PQVPN_SECRETS_DIR").map_or_else(|| SECRETS_DIR.into(), PathBuf::from),
        )
    }

    /// Whether entries are sealed with `systemd-creds`.
    pub(crate) fn seals() -> bool {
        systemd_creds().is_some()
    }
}

impl CredentialStoreApi for Store {
    fn vendor(&self) -> String {
        "pqvpn persistent store (systemd-creds)".into()
    }

    fn id(&self) -> String {
        format!("pqvpn-vault:{}", self.dir.display())
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
        let name = escape(&format!("{service}/{user}"));
        if name.len() > 200 {
            return Err(Error::TooLong("user".into(), 200));
        }
        let cred: Arc<Credential> = Arc::new(Cred {
            dir: self.dir.clone(),
            name,
            specifiers: (service.into(), user.into()),
        });
        Ok(Entry::new_with_credential(cred))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn persistence(&self) -> CredentialPersistence {
        CredentialPersistence::UntilDelete
    }
}

/// One entry: the file `DIR/NAME.cred`, sealed under the credential name `NAME`.
#[derive(Debug)]
struct Cred {
    dir: PathBuf,
    /// The escaped `service/user`: a valid file and credential name.
    name: String,
    specifiers: (String, String),
}

/// `service/user` as a file and credential name: ASCII letters, digits and `._@-` stay, every
/// other octet becomes `%XX` (`/`, and `:` which credential names refuse).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._@-".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `systemd-creds` binary, if there is one (a fixed list of root-owned places, never
/// `PATH`: the daemon is root).
fn systemd_creds() -> Option<&'static str> {
    SYSTEMD_CREDS.into_iter().find(|p| Path::new(p).is_file())
}

fn io(e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NoEntry,
        std::io::ErrorKind::PermissionDenied => Error::NoStorageAccess(Box::new(e)),
        _ => Error::PlatformFailure(Box::new(e)),
    }
}

fn failure(what: String) -> Error {
    Error::PlatformFailure(Box::new(std::io::Error::other(what)))
}

impl Cred {
    fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.cred", self.name))
    }

    /// Runs `systemd-creds ARGS` with `input` on stdin; its stdout, wiped on drop.
    fn systemd_creds(args: &[&str], input: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let tool =
            systemd_creds().ok_or_else(|| failure("systemd-creds is not installed".into()))?;
        let mut child = Command::new(tool)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input).map_err(io)?;
        }
        let out = child.wait_with_output().map_err(io)?;
        let stdout = Zeroizing::new(out.stdout);
        if !out.status.success() {
            // systemd-creds' own message (it never prints the secret).
            let why = String::from_utf8_lossy(&out.stderr);
            let why = why.lines().last().unwrap_or("failed").trim().to_owned();
            let what = args.first().copied().unwrap_or_default();
            return Err(failure(format!("systemd-creds {what}: {why}")));
        }
        Ok(stdout)
    }

    fn ensure_dir(&self) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io)?;
        // An existing directory may have been created looser.
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
    }
}

impl CredentialApi for Cred {
    fn set_secret(&self, secret: &[u8]) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        if secret.is_empty() {
            return Err(Error::Invalid("secret".into(), "cannot be empty".into()));
        }
        self.ensure_dir()?;
        let sealed = if Store::seals() {
            let name = format!("--name={}", self.name);
            Self::systemd_creds(&["encrypt", &name, "-", "-"], secret)?
        } else {
            let mut plain = Zeroizing::new(PLAIN_HEADER.to_vec());
            plain.extend_from_slice(secret);
            plain
        };
        // Written whole under a name of its own (two writers never share one), then renamed:
        // never a half-written entry, and the last writer wins whole.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{}.{}.{n}.tmp", self.name, std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let written = file
            .write_all(&sealed)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&tmp, self.path()));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        // The rename itself survives a crash once the directory is on disk.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    fn get_secret(&self) -> Result<Vec<u8>> {
        let path = self.path();
        let data = Zeroizing::new(std::fs::read(&path).map_err(io)?);
        if let Some(plain) = data.strip_prefix(PLAIN_HEADER) {
            return Ok(plain.to_vec());
        }
        if !Store::seals() {
            return Err(failure(format!(
                "{} is sealed with systemd-creds, which is not installed",
                path.display()
            )));
        }
        let name = format!("--name={}", self.name);
        let path_arg = path.to_string_lossy();
        Self::systemd_creds(&["decrypt", &name, &path_arg, "-"], &[]).map(|s| s.to_vec())
    }

    fn delete_credential(&self) -> Result<()> {
        std::fs::remove_file(self.path()).map_err(io)
    }

    fn get_credential(&self) -> Result<Option<Arc<Credential>>> {
        std::fs::metadata(self.path()).map_err(io)?;
        Ok(None)
    }

    fn get_specifiers(&self) -> Option<(String, String)> {
        Some(self.specifiers.clone())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Arc<keyring_core::CredentialStore>, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "pqvpn-vault-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        (Arc::new(Store::new(&dir)), dir)
    }

    #[test]
    fn names_are_safe_file_and_credential_names() {
        assert_eq!(
            escape("pqvpn/alice@corp.example@vpn.corp.example:4500"),
            "pqvpn%2Falice@corp.example@vpn.corp.example%3A4500"
        );
        assert_eq!(escape("../x y"), "..%2Fx%20y");
        assert!(!escape("a/../../etc/passwd").contains('/'));
    }

    /// As root (CI): the entry is sealed (the PSK is nowhere in the file), 0600 in a 0700
    /// directory, read back by a fresh store (a new process after a reboot sees only the
    /// files), bound to its name, and deleted.
    #[test]
    fn entries_persist_sealed_and_bound_to_their_name() {
        if !nix::unistd::geteuid().is_root() || !Store::seals() {
            eprintln!("skipped: needs root and systemd-creds");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let (store, dir) = store();
        let psk = b"a-vault-test-psk-not-a-secret-0123456789";
        let entry = Entry::new_in_store(&store, "pqvpn", "alice@gw.test:4500").unwrap();
        assert!(matches!(entry.get_secret(), Err(Error::NoEntry)));
        entry.set_secret(psk).unwrap();
        let file = dir.join("pqvpn%2Falice@gw.test%3A4500.cred");
        let on_disk = std::fs::read(&file).unwrap();
        assert!(
            !on_disk.windows(psk.len()).any(|w| w == psk),
            "the PSK is in the file in clear"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // A fresh store on the same directory, as after a reboot.
        let again: Arc<keyring_core::CredentialStore> = Arc::new(Store::new(&dir));
        let entry2 = Entry::new_in_store(&again, "pqvpn", "alice@gw.test:4500").unwrap();
        assert_eq!(entry2.get_secret().unwrap(), psk);
        // Another entry's name on this file: refused.
        let bob = Entry::new_in_store(&again, "pqvpn", "bob@gw.test:4500").unwrap();
        std::fs::copy(&file, dir.join("pqvpn%2Fbob@gw.test%3A4500.cred")).unwrap();
        assert!(bob.get_secret().is_err());
        entry2.delete_credential().unwrap();
        assert!(matches!(entry.get_secret(), Err(Error::NoEntry)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
