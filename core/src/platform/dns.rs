//! DNS on Linux: systemd-resolved over D-Bus when it runs, else a replaced resolv.conf.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use super::Error;
use super::state::{Change, ResolvConfOriginal, StateFile, temporary_path, write_atomically};

const RESOLVE1: &str = "org.freedesktop.resolve1";
const RESOLVE1_PATH: &str = "/org/freedesktop/resolve1";
const RESOLVE1_MANAGER: &str = "org.freedesktop.resolve1.Manager";
/// `AF_INET` and `AF_INET6` as systemd-resolved expects them in `SetLinkDNS`.
const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;

/// Checks that a pushed search domain cannot inject anything into resolv.conf or D-Bus calls.
pub(super) fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'))
}

/// Returns whether systemd-resolved owns its name on the system bus.
pub(super) fn resolved_running() -> bool {
    on_own_thread(|| {
        let connection = zbus::blocking::Connection::system()?;
        resolved_has_owner(&connection)
    })
    .unwrap_or(false)
}

/// Gives the link its DNS servers and search domains; for a full tunnel also the `~.` routing
/// domain and the default DNS route, so every query goes through the tunnel.
pub(super) fn resolved_set_link(
    ifindex: u32,
    servers: &[IpAddr],
    domains: &[String],
    full_tunnel: bool,
) -> Result<(), Error> {
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| Error::InvalidConfig(format!("interface index {ifindex} out of range")))?;
    let servers: Vec<(i32, Vec<u8>)> = servers
        .iter()
        .map(|server| match server {
            IpAddr::V4(v4) => (AF_INET, v4.octets().to_vec()),
            IpAddr::V6(v6) => (AF_INET6, v6.octets().to_vec()),
        })
        .collect();
    let mut link_domains: Vec<(String, bool)> = domains
        .iter()
        .map(|domain| (domain.clone(), false))
        .collect();
    if full_tunnel {
        link_domains.push((".".to_owned(), true));
    }
    on_own_thread(move || {
        let connection = zbus::blocking::Connection::system()?;
        call(&connection, "SetLinkDNS", &(ifindex, servers))?;
        call(&connection, "SetLinkDomains", &(ifindex, link_domains))?;
        if full_tunnel {
            call(&connection, "SetLinkDefaultRoute", &(ifindex, true))?;
        }
        Ok(())
    })
    .map_err(|source| Error::Resolved("set the tunnel's DNS", source))
}

/// Drops the link's DNS settings (`RevertLink`); a link or resolved that is gone counts as done.
pub(super) fn resolved_revert(ifindex: u32) -> Result<(), Error> {
    let Ok(ifindex) = i32::try_from(ifindex) else {
        return Ok(());
    };
    on_own_thread(move || {
        let connection = zbus::blocking::Connection::system()?;
        if !resolved_has_owner(&connection)? {
            return Ok(());
        }
        match call(&connection, "RevertLink", &(ifindex,)) {
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str().ends_with("NoSuchLink") => {
                Ok(())
            }
            other => other.map(drop),
        }
    })
    .map_err(|source| Error::Resolved("revert the tunnel's DNS", source))
}

fn resolved_has_owner(connection: &zbus::blocking::Connection) -> zbus::Result<bool> {
    connection
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "NameHasOwner",
            &(RESOLVE1,),
        )?
        .body()
        .deserialize::<bool>()
}

fn call<B>(
    connection: &zbus::blocking::Connection,
    method: &'static str,
    body: &B,
) -> zbus::Result<zbus::Message>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    connection.call_method(
        Some(RESOLVE1),
        RESOLVE1_PATH,
        Some(RESOLVE1_MANAGER),
        method,
        body,
    )
}

/// Runs blocking D-Bus work on a thread of its own: zbus's blocking API drives a runtime of its
/// own, which must not be entered from inside the driver's tokio runtime (or from `Drop` there).
fn on_own_thread<T: Send>(
    work: impl FnOnce() -> zbus::Result<T> + Send,
) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
    std::thread::scope(|scope| match scope.spawn(work).join() {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err("the D-Bus thread panicked".into()),
    })
}

/// Replaces the resolv.conf at `path` with one listing `servers` and `domains`, after backing
/// up the original next to the state file and recording the change.
pub(super) fn replace_resolv_conf(
    state: &mut StateFile,
    path: &Path,
    servers: &[IpAddr],
    domains: &[String],
) -> Result<(), Error> {
    let resolv_error = |what| {
        move |source| Error::ResolvConf {
            what,
            path: path.to_owned(),
            source,
        }
    };
    let original = match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_symlink() => ResolvConfOriginal::Symlink {
            target: fs::read_link(path).map_err(resolv_error("read the symlink"))?,
        },
        Ok(metadata) => {
            let bytes = fs::read(path).map_err(resolv_error("read"))?;
            let backup = state.path().with_extension("resolv.conf");
            write_atomically(&backup, &bytes, 0o600).map_err(|source| Error::ResolvConf {
                what: "back up resolv.conf to",
                path: backup.clone(),
                source,
            })?;
            ResolvConfOriginal::File {
                backup,
                mode: permission_bits(&metadata),
            }
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => ResolvConfOriginal::Absent,
        Err(source) => return Err(resolv_error("inspect")(source)),
    };
    state.record(Change::ResolvConf {
        path: path.to_owned(),
        original: original.clone(),
    })?;
    let tunnel = state.tun_name().to_owned();
    if let Err(source) = write_resolv_conf(path, &render(&tunnel, servers, domains), 0o644) {
        state.forget_last()?;
        if let ResolvConfOriginal::File { backup, .. } = original {
            let _ = fs::remove_file(backup);
        }
        return Err(resolv_error("write")(source));
    }
    Ok(())
}

/// Puts back what [`replace_resolv_conf`] replaced; a backup that is already gone means an
/// earlier restore finished.
pub(super) fn restore_resolv_conf(path: &Path, original: &ResolvConfOriginal) -> Result<(), Error> {
    let resolv_error = |what| {
        move |source| Error::ResolvConf {
            what,
            path: path.to_owned(),
            source,
        }
    };
    match original {
        ResolvConfOriginal::File { backup, mode } => {
            let bytes = match fs::read(backup) {
                Ok(bytes) => bytes,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    tracing::warn!(backup = %backup.display(), "resolv.conf backup already gone");
                    return Ok(());
                }
                Err(source) => {
                    return Err(Error::ResolvConf {
                        what: "read the resolv.conf backup",
                        path: backup.clone(),
                        source,
                    });
                }
            };
            write_resolv_conf(path, &bytes, *mode).map_err(resolv_error("restore"))?;
            fs::remove_file(backup).map_err(|source| Error::ResolvConf {
                what: "delete the resolv.conf backup",
                path: backup.clone(),
                source,
            })
        }
        ResolvConfOriginal::Symlink { target } => {
            let temporary = temporary_path(path);
            let _ = fs::remove_file(&temporary);
            std::os::unix::fs::symlink(target, &temporary)
                .and_then(|()| fs::rename(&temporary, path))
                .map_err(resolv_error("restore the symlink"))
        }
        ResolvConfOriginal::Absent => match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(resolv_error("delete")(source)),
        },
    }
}

/// Writes resolv.conf atomically (temporary file and rename) or, when the file is a bind mount
/// (`ip netns exec` mounts `/etc/netns/NS/resolv.conf` over it, and container runtimes do the
/// same) and so cannot be renamed over (`EBUSY`), in place.
fn write_resolv_conf(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    match write_atomically(path, bytes, mode) {
        Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
            use std::io::Write as _;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)?;
            file.write_all(bytes)?;
            file.sync_all()
        }
        other => other,
    }
}

fn permission_bits(metadata: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    metadata.permissions().mode() & 0o7777
}

/// The resolv.conf text for the tunnel.
pub(super) fn render(tunnel: &str, servers: &[IpAddr], domains: &[String]) -> Vec<u8> {
    let mut text = format!(
        "# Written by pqvpn for {tunnel}; the original returns when the tunnel goes down.\n"
    );
    for server in servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !domains.is_empty() {
        text.push_str(&format!("search {}\n", domains.join(" ")));
    }
    text.into_bytes()
}
