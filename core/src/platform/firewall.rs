//! The kill switch: a firewall table of our own that lets only the tunnel, the tunnel's own
//! IKE/ESP to the gateway and the underlay's housekeeping (DHCP, neighbour discovery) through,
//! and keeps DNS from leaving outside the tunnel.
//!
//! | item | what |
//! | --- | --- |
//! | [`Policy`] | what one tunnel needs let through |
//! | [`Ruleset`] | the table for a set of policies (pure; `Display` prints it in `nft` syntax) |
//! | [`Firewall`] | the installed table, replaced atomically on each change and journaled |
//! | [`unblock`] | lifts a table a crashed run left (`pqvpn recover --unblock`) |
//!
//! Linux: one nftables table, `inet pqvpn`, with `input`, `output` and `forward` base chains
//! (priority 0), written in one netlink batch (one nf_tables transaction: the old table goes
//! and the new one comes atomically, so no packet ever sees a half-built ruleset). Other
//! systems return [`Error::Unsupported`] (their WFP and pf come
//! with their platform).
//!
//! ## Fail closed
//!
//! The table is not bound to the process (no `NFT_TABLE_F_OWNER`): a crash or `SIGKILL` leaves
//! it in the kernel, so traffic stays blocked until a pqvpn process decides. The journal
//! (`STATE_DIR/firewall.netns-<inode>.journal`, mode 0600, written before each change) records
//! which policies the table holds; the next [`Firewall`] in the namespace adopts them, and
//! [`unblock`] lifts them by hand. Two live processes never share the table: a [`Firewall`]
//! holds an `flock` on `STATE_DIR/firewall.netns-<inode>.lock` for its lifetime (the kernel
//! drops it when the process dies), and a second [`Firewall::open`] fails with
//! [`Error::FirewallHeld`].
//!
//! ## What each policy lets through
//!
//! With `block` (the kill switch) the chains drop by default, and allow only: loopback; the
//! tunnel interface; UDP to the gateway's IKE and NAT-T ports **from a socket carrying
//! [`FWMARK`](super::FWMARK)** (the driver's), and the replies from those ports; DHCPv4,
//! DHCPv6 and ICMPv6 router/neighbour discovery on the underlay, ICMP "unreachable" and
//! ICMPv6 "packet too big" in (path MTU discovery for ESP); and, with `allow_lan`, the
//! private and link-local ranges (never what the network's DHCP calls its LAN: TunnelCrack
//! LocalNet). Forwarded traffic (containers, VMs) may only use the tunnel.
//!
//! With pushed DNS servers ([`Policy::dns`]) DNS (TCP and UDP 53, DoT 853) is dropped unless it
//! leaves through a tunnel, whether or not `block` is set: a split tunnel's queries cannot go
//! to the network's resolver.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;
use super::state;

mod ruleset;
pub use ruleset::{Chain, Hook, Match, Protocol, Rule, Ruleset, Verdict};

/// The table's name (family `inet`).
pub const TABLE: &str = "pqvpn";

/// Format version of the journal.
const VERSION: u32 = 1;

/// What one tunnel needs let through, and whether everything else is blocked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The TUN interface once it exists; everything through it is allowed.
    pub tun_name: Option<String>,
    /// The gateway's addresses.
    pub gateways: Vec<IpAddr>,
    /// The gateway's IKE and NAT-T ports.
    pub ports: Vec<u16>,
    /// The kill switch: drop everything the policies do not allow.
    pub block: bool,
    /// With `block`: let the private and link-local ranges through.
    pub allow_lan: bool,
    /// DNS servers pushed by the gateway: DNS leaves only through the tunnel. Which server a
    /// query through the tunnel goes to is the gateway's business (it carries it); what the
    /// lock prevents is a query leaving outside the tunnel, to any address.
    pub dns: Vec<IpAddr>,
}

impl Policy {
    /// Whether the policy needs any rule at all.
    pub fn needs_rules(&self) -> bool {
        self.block || !self.dns.is_empty()
    }
}

/// What the journal holds: the policies the table was built from, and whose they are.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Journal {
    version: u32,
    /// The process that installed the table.
    owner_pid: u32,
    /// Policy by key (the profile name).
    policies: BTreeMap<String, Policy>,
}

/// The kill-switch table of this network namespace, held by one process.
///
/// Each change rebuilds the whole table from the policies and replaces it in one transaction.
/// Dropping the value leaves the table as it is (fail closed); [`clear`](Self::clear) lifts it.
#[derive(Debug)]
pub struct Firewall {
    /// The `flock`ed lock file: held for the value's lifetime, released by the kernel when the
    /// process dies, so a crash never leaves the table "held".
    _lock: fs::File,
    journal_path: PathBuf,
    policies: BTreeMap<String, Policy>,
    /// Whether our table may be in the kernel (we installed it, or a crashed run did).
    installed: bool,
}

impl Firewall {
    /// The firewall of this network namespace, journaled in `state_dir`. A journal left by a
    /// run that crashed is adopted: its policies stay in force until they are replaced,
    /// removed, or [`clear`](Self::clear)ed.
    ///
    /// # Errors
    ///
    /// [`Error::FirewallHeld`] when another live process holds the table (its lock);
    /// [`Error::StateFile`]/[`Error::StateParse`] when the journal cannot be read or adopted.
    pub fn open(state_dir: &Path) -> Result<Self, Error> {
        let lock = lock(state_dir)?;
        let journal_path = journal_path(state_dir);
        let (policies, installed) = match read_journal(&journal_path)? {
            // Nobody holds the lock: whoever wrote the journal is gone. Adopt it, as ours.
            Some(journal) => {
                write_journal(
                    &journal_path,
                    &Journal {
                        version: VERSION,
                        owner_pid: std::process::id(),
                        policies: journal.policies.clone(),
                    },
                )?;
                (journal.policies, true)
            }
            None => (BTreeMap::new(), false),
        };
        Ok(Self {
            _lock: lock,
            journal_path,
            policies,
            installed,
        })
    }

    /// The policy installed under `key`, if any (after [`open`](Self::open): the crashed
    /// run's).
    pub fn policy(&self, key: &str) -> Option<&Policy> {
        self.policies.get(key)
    }

    /// The keys of the installed policies.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }

    /// Whether the table blocks traffic now.
    pub fn blocking(&self) -> bool {
        self.policies.values().any(|p| p.block)
    }

    /// The table as it is (or would be) installed.
    pub fn ruleset(&self) -> Option<Ruleset> {
        Ruleset::of(self.policies.values())
    }

    /// Installs `policy` under `key` (replacing the one there) and the table with it.
    ///
    /// # Errors
    ///
    /// [`Error::Firewall`] when the kernel refuses the table (the previous one then stays);
    /// [`Error::StateFile`] when the journal cannot be written.
    pub fn set(&mut self, key: &str, policy: Policy) -> Result<(), Error> {
        if self.policies.get(key) == Some(&policy) && self.installed {
            return Ok(());
        }
        self.change(|policies| {
            policies.insert(key.to_owned(), policy);
        })
    }

    /// Removes `key`'s policy; the table shrinks, or goes when no policy is left.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set).
    pub fn remove(&mut self, key: &str) -> Result<(), Error> {
        if !self.policies.contains_key(key) && !self.installed {
            return Ok(());
        }
        self.change(|policies| {
            policies.remove(key);
        })
    }

    /// Keeps only the policies whose key `keep` accepts (after adopting a crashed run's:
    /// those of tunnels that are not coming back).
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) -> Result<(), Error> {
        if self.policies.keys().all(|key| keep(key)) {
            return Ok(());
        }
        self.change(|policies| policies.retain(|key, _| keep(key)))
    }

    /// Removes every policy and the table.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set).
    pub fn clear(&mut self) -> Result<(), Error> {
        self.change(BTreeMap::clear)
    }

    /// Applies `edit` to the policies and commits them; when that fails the policies, and the
    /// journal, are what they were (the kernel keeps the table it had: a refused transaction
    /// changes nothing).
    fn change(&mut self, edit: impl FnOnce(&mut BTreeMap<String, Policy>)) -> Result<(), Error> {
        let before = self.policies.clone();
        edit(&mut self.policies);
        let result = self.commit();
        if result.is_err() {
            self.policies = before;
            let journal = Journal {
                version: VERSION,
                owner_pid: std::process::id(),
                policies: self.policies.clone(),
            };
            let restored = if self.installed {
                write_journal(&self.journal_path, &journal)
            } else {
                remove_journal(&self.journal_path)
            };
            if let Err(error) = restored {
                tracing::warn!(%error, "the kill switch's journal could not be restored");
            }
        }
        result
    }

    /// Journals the policies, then installs their table (or deletes it when none is needed).
    fn commit(&mut self) -> Result<(), Error> {
        match Ruleset::of(self.policies.values()) {
            Some(ruleset) => {
                write_journal(
                    &self.journal_path,
                    &Journal {
                        version: VERSION,
                        owner_pid: std::process::id(),
                        policies: self.policies.clone(),
                    },
                )?;
                // One transaction: refused, the kernel keeps the table it had (or none).
                imp::replace(&ruleset).map_err(|source| Error::Firewall("install", source))?;
                self.installed = true;
                Ok(())
            }
            None => {
                if self.installed {
                    imp::delete().map_err(|source| Error::Firewall("remove", source))?;
                    self.installed = false;
                }
                // The table is gone: that stands even if its journal cannot be deleted (the
                // next run adopting it deletes a table that is not there, harmlessly).
                if let Err(error) = remove_journal(&self.journal_path) {
                    tracing::warn!(error = %super::DisplayChain(&error), "the kill switch's journal stays");
                }
                Ok(())
            }
        }
    }
}

/// Lifts the table a crashed run left in this network namespace (`pqvpn recover --unblock`)
/// and deletes its journal; returns whether there was one. The table is deleted even without
/// a journal, or with one that cannot be read.
///
/// # Errors
///
/// [`Error::FirewallHeld`] when a live process holds the table (disconnect it instead);
/// [`Error::Firewall`] when the kernel refuses.
pub fn unblock(state_dir: &Path) -> Result<bool, Error> {
    let _lock = lock(state_dir)?;
    let path = journal_path(state_dir);
    let had_journal = match read_journal(&path) {
        Ok(journal) => journal.is_some(),
        Err(error) => {
            tracing::warn!(error = %super::DisplayChain(&error), "lifting the kill switch anyway");
            true
        }
    };
    imp::delete().map_err(|source| Error::Firewall("remove", source))?;
    remove_journal(&path)?;
    Ok(had_journal)
}

/// The policies a run that is no longer alive left blocking in this namespace, by key; empty
/// when there is no stale table, or a live process holds it.
///
/// # Errors
///
/// When the journal cannot be read.
pub fn stale(state_dir: &Path) -> Result<BTreeMap<String, Policy>, Error> {
    match lock(state_dir) {
        Ok(_lock) => Ok(read_journal(&journal_path(state_dir))?
            .map(|journal| journal.policies)
            .unwrap_or_default()),
        Err(Error::FirewallHeld { .. }) => Ok(BTreeMap::new()),
        Err(error) => Err(error),
    }
}

/// Takes this namespace's firewall lock (`flock`, not blocking) and writes our pid in it.
fn lock(state_dir: &Path) -> Result<fs::File, Error> {
    use std::io::{Read as _, Seek as _, Write as _};

    let path = journal_path(state_dir).with_extension("lock");
    let error = |what, source| Error::StateFile {
        what,
        path: path.clone(),
        source,
    };
    state::create_dir(state_dir)?;
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|source| error("open", source))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(Error::FirewallHeld {
                pid: pid.trim().parse().unwrap_or(0),
            });
        }
        Err(fs::TryLockError::Error(source)) => return Err(error("lock", source)),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()))
        .map_err(|source| error("write", source))?;
    Ok(file)
}

fn journal_path(state_dir: &Path) -> PathBuf {
    // Not `.json`: the route state files' `recover` must not read it.
    match state::current_netns() {
        0 => state_dir.join("firewall.journal"),
        netns => state_dir.join(format!("firewall.netns-{netns}.journal")),
    }
}

fn read_journal(path: &Path) -> Result<Option<Journal>, Error> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::StateFile {
                what: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let journal: Journal = serde_json::from_slice(&bytes).map_err(|source| Error::StateParse {
        path: path.to_owned(),
        source,
    })?;
    if journal.version != VERSION {
        return Err(Error::StateParse {
            path: path.to_owned(),
            source: serde::de::Error::custom(format!(
                "unknown journal version {}",
                journal.version
            )),
        });
    }
    Ok(Some(journal))
}

fn write_journal(path: &Path, journal: &Journal) -> Result<(), Error> {
    let error = |source| Error::StateFile {
        what: "write",
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        state::create_dir(parent)?;
    }
    let bytes = serde_json::to_vec_pretty(journal).map_err(|source| Error::StateParse {
        path: path.to_owned(),
        source,
    })?;
    state::write_atomically(path, &bytes, 0o600).map_err(error)
}

fn remove_journal(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::StateFile {
            what: "delete",
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(target_os = "linux")]
use super::nftables as imp;

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    use super::Ruleset;

    pub(super) fn replace(_: &Ruleset) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no firewall implementation on this platform yet",
        ))
    }

    pub(super) fn delete() -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[path = "firewall_tests.rs"]
mod tests;
