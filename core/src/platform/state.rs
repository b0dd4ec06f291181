//! The state file: every change [`apply`](super::apply) makes, written down before it is made.

use std::fs;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;

/// Format version of the state file.
const VERSION: u32 = 1;

/// One change to the OS network configuration, with what is needed to undo it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Change {
    /// A route we added.
    Route(RouteSpec),
    /// A policy routing rule we added.
    Rule(RuleSpec),
    /// Link DNS settings we gave systemd-resolved (undone with `RevertLink`).
    ResolvedLink {
        /// The TUN's ifindex.
        ifindex: u32,
    },
    /// A resolv.conf we replaced.
    ResolvConf {
        /// The file we replaced.
        path: PathBuf,
        /// What was there before.
        original: ResolvConfOriginal,
    },
}

/// A route through the TUN device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RouteSpec {
    /// Destination network address.
    pub(super) destination: IpAddr,
    /// Destination prefix length.
    pub(super) prefix: u8,
    /// Routing table.
    pub(super) table: u32,
    /// Output interface index.
    pub(super) oif: u32,
}

/// A policy routing rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RuleSpec {
    /// IPv6 (else IPv4) rule list.
    pub(super) ipv6: bool,
    /// Rule priority.
    pub(super) priority: u32,
    /// Table to look up.
    pub(super) table: u32,
    /// Which packets the rule selects.
    pub(super) selector: RuleSelector,
}

/// The selector part of a [`RuleSpec`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum RuleSelector {
    /// `not fwmark MARK`.
    NotFwmark {
        /// The mark.
        mark: u32,
    },
    /// All packets, with `suppress_prefixlength LEN`.
    SuppressPrefixLength {
        /// Routes with this prefix length or shorter are ignored.
        length: u32,
    },
    /// `to DESTINATION/PREFIX`, any protocol. No longer installed (the full tunnel's gateway
    /// rule is [`RuleSelector::ToUdpPort`] now), kept so that state files of earlier versions
    /// can still be undone.
    To {
        /// Destination address.
        destination: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// `to DESTINATION/PREFIX ipproto udp dport PORT`.
    ToUdpPort {
        /// Destination address.
        destination: IpAddr,
        /// Its prefix length.
        prefix: u8,
        /// Destination UDP port.
        port: u16,
    },
}

/// What a replaced resolv.conf was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum ResolvConfOriginal {
    /// A regular file, copied byte for byte to `backup`.
    File {
        /// The copy in the state directory.
        backup: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A symbolic link (systemd-resolved's stub, resolvconf, ...).
    Symlink {
        /// Where it pointed.
        target: PathBuf,
    },
    /// No file.
    Absent,
}

impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} dev #{} table {}",
            self.destination, self.prefix, self.oif, self.table
        )
    }
}

impl std::fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let family = if self.ipv6 { "-6" } else { "-4" };
        write!(f, "{family} priority {} ", self.priority)?;
        match &self.selector {
            RuleSelector::NotFwmark { mark } => write!(f, "not fwmark {mark:#x}")?,
            RuleSelector::SuppressPrefixLength { length } => {
                write!(f, "suppress_prefixlength {length}")?;
            }
            RuleSelector::To {
                destination,
                prefix,
            } => write!(f, "to {destination}/{prefix}")?,
            RuleSelector::ToUdpPort {
                destination,
                prefix,
                port,
            } => write!(f, "to {destination}/{prefix} ipproto udp dport {port}")?,
        }
        write!(f, " lookup {}", self.table)
    }
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Document {
    version: u32,
    tun_name: String,
    /// The process that made the changes; a state file of a live process is not stale.
    #[serde(default)]
    owner_pid: u32,
    /// The network namespace the changes were made in (inode of `/proc/self/ns/net`): only a
    /// process in the same namespace can undo them.
    #[serde(default)]
    netns: u64,
    changes: Vec<Change>,
}

/// The on-disk record of one tunnel's changes.
#[derive(Debug)]
pub(super) struct StateFile {
    path: PathBuf,
    document: Document,
}

impl StateFile {
    /// Creates (or replaces) the empty state file for `tun_name` in `state_dir`, creating the
    /// directory with mode 0700.
    pub(super) fn create(state_dir: &Path, tun_name: &str) -> Result<Self, Error> {
        let path = path_for(state_dir, tun_name)?;
        create_dir(state_dir)?;
        let state = Self {
            path,
            document: Document {
                version: VERSION,
                tun_name: tun_name.to_owned(),
                owner_pid: std::process::id(),
                netns: current_netns(),
                changes: Vec::new(),
            },
        };
        state.write()?;
        Ok(state)
    }

    /// Returns the state file path for `tun_name` when it exists.
    pub(super) fn existing(state_dir: &Path, tun_name: &str) -> Result<Option<PathBuf>, Error> {
        let path = path_for(state_dir, tun_name)?;
        Ok(path.exists().then_some(path))
    }

    /// Lists the state files in `state_dir` (none when it does not exist).
    pub(super) fn list(state_dir: &Path) -> Result<Vec<PathBuf>, Error> {
        let entries = match fs::read_dir(state_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(state_error("read the state directory", state_dir, source)),
        };
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|source| state_error("read the state directory", state_dir, source))?;
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|extension| extension == "json")
            {
                paths.push(path);
            }
        }
        paths.sort();
        Ok(paths)
    }

    /// Reads a state file.
    pub(super) fn load(path: &Path) -> Result<Self, Error> {
        let bytes = fs::read(path).map_err(|source| state_error("read", path, source))?;
        let document: Document =
            serde_json::from_slice(&bytes).map_err(|source| Error::StateParse {
                path: path.to_owned(),
                source,
            })?;
        if document.version != VERSION {
            return Err(Error::StateParse {
                path: path.to_owned(),
                source: serde::de::Error::custom(format!(
                    "unknown state file version {}",
                    document.version
                )),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            document,
        })
    }

    /// Returns the file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file belongs to another network namespace than ours (then its routes and
    /// rules are not ours to undo).
    pub(super) fn other_netns(&self) -> bool {
        self.document.netns != 0 && self.document.netns != current_netns()
    }

    /// Whether the process that wrote the file still runs (another tunnel of this program, whose
    /// changes must not be undone): its pid exists and runs the same executable name as us.
    pub(super) fn owner_alive(&self) -> bool {
        process_alive(self.document.owner_pid)
    }

    /// Returns the TUN name the file belongs to.
    pub(super) fn tun_name(&self) -> &str {
        &self.document.tun_name
    }

    /// Returns the recorded changes, oldest first.
    pub(super) fn changes(&self) -> &[Change] {
        &self.document.changes
    }

    /// Records `change` durably; call this before making the change.
    pub(super) fn record(&mut self, change: Change) -> Result<(), Error> {
        self.document.changes.push(change);
        self.write()
    }

    /// Forgets the newest change (it failed, so there is nothing to undo).
    pub(super) fn forget_last(&mut self) -> Result<(), Error> {
        self.document.changes.pop();
        self.write()
    }

    /// Replaces the recorded changes (after a partial restore: those still to undo).
    pub(super) fn set_changes(&mut self, changes: Vec<Change>) -> Result<(), Error> {
        self.document.changes = changes;
        self.write()
    }

    /// Deletes the file.
    pub(super) fn remove(self) -> Result<(), Error> {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(state_error("delete", &self.path, source)),
        }
        sync_parent(&self.path);
        Ok(())
    }

    /// Writes the document to a temporary file (mode 0600), fsyncs it and renames it over the
    /// state file, then fsyncs the directory.
    fn write(&self) -> Result<(), Error> {
        let bytes =
            serde_json::to_vec_pretty(&self.document).map_err(|source| Error::StateParse {
                path: self.path.clone(),
                source,
            })?;
        write_atomically(&self.path, &bytes, 0o600)
            .map_err(|source| state_error("write", &self.path, source))
    }
}

/// Undoes `changes` newest first, continuing past failures.
///
/// Returns the changes that could not be undone (oldest first) and the first error.
pub(super) fn undo_all(
    changes: &[Change],
    mut undo: impl FnMut(&Change) -> Result<(), Error>,
) -> (Vec<Change>, Option<Error>) {
    let mut failed = Vec::new();
    let mut first_error = None;
    for change in changes.iter().rev() {
        if let Err(error) = undo(change) {
            tracing::warn!(
                error = %super::DisplayChain(&error),
                ?change,
                "failed to undo a network change"
            );
            failed.push(change.clone());
            first_error.get_or_insert(error);
        }
    }
    failed.reverse();
    (failed, first_error)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// the file is never half-written and a symlink at `path` is replaced rather than followed.
pub(super) fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let temporary = temporary_path(path);
    let result = (|| {
        let mut file = open_new(&temporary, mode)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result?;
    sync_parent(path);
    Ok(())
}

/// Whether `pid` is another live process running this program (same executable name).
pub(super) fn process_alive(pid: u32) -> bool {
    if pid == 0 || pid == std::process::id() {
        return false;
    }
    let theirs = fs::read_to_string(format!("/proc/{pid}/comm"));
    let ours = fs::read_to_string("/proc/self/comm");
    matches!((theirs, ours), (Ok(t), Ok(o)) if t == o)
}

/// The inode of the calling thread's network namespace, 0 if unknown.
pub(super) fn current_netns() -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino())
}

/// Returns `path` with `.pqvpn-tmp-<pid>` appended to its file name (per process, so two
/// tunnels never share a temporary file).
pub(super) fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".pqvpn-tmp-{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(unix)]
fn open_new(path: &Path, mode: u32) -> io::Result<fs::File> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    // The umask may have removed bits from `mode`; a leftover file may have had other bits.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(file)
}

#[cfg(not(unix))]
fn open_new(path: &Path, _mode: u32) -> io::Result<fs::File> {
    fs::File::create(path)
}

/// Fsyncs the directory holding `path` so a rename or delete survives a crash (best effort).
fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent()
        && let Ok(directory) = fs::File::open(parent)
    {
        let _ = directory.sync_all();
    }
}

pub(super) fn create_dir(state_dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(state_dir)
        .map_err(|source| state_error("create the state directory", state_dir, source))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(state_dir, fs::Permissions::from_mode(0o700))
            .map_err(|source| state_error("restrict the state directory", state_dir, source))?;
    }
    Ok(())
}

/// The state file of `tun_name` in this network namespace.
pub(super) fn path_for(state_dir: &Path, tun_name: &str) -> Result<PathBuf, Error> {
    let valid = !tun_name.is_empty()
        && tun_name.len() < 16
        && tun_name != "."
        && tun_name != ".."
        && !tun_name.contains(['/', '\0']);
    if !valid {
        return Err(Error::InvalidConfig(format!(
            "{tun_name:?} is not a valid interface name"
        )));
    }
    // One file per TUN name and network namespace: the same name in two namespaces (containers,
    // the test namespaces) is two tunnels, and one must never undo the other's changes.
    Ok(match current_netns() {
        0 => state_dir.join(format!("{tun_name}.json")),
        netns => state_dir.join(format!("{tun_name}.netns-{netns}.json")),
    })
}

fn state_error(what: &'static str, path: &Path, source: io::Error) -> Error {
    Error::StateFile {
        what,
        path: path.to_owned(),
        source,
    }
}
