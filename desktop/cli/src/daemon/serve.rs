//! The control socket: JSON lines (`pqvpn_control`), many requests per connection, each
//! checked against the caller's credentials. A line longer than
//! [`MAX_REQUEST_LINE`](pqvpn_control::MAX_REQUEST_LINE) is refused unread and the connection
//! closed; garbage gets `bad_request` and the connection stays; a client that says nothing
//! for [`IDLE`] is dropped. Each connection has its own task: a slow or hostile client holds
//! up nobody else, and never a tunnel.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pqvpn_control::{
    ErrorCode, ErrorReply, Event, MAX_REQUEST_LINE, RekeyedSa, Reply, Request, TunnelStatus,
    VERSION,
};
use pqvpn_core::crypto::SecretBytes;
use pqvpn_core::driver::State;
use pqvpn_core::driver::supervisor::Command;
use pqvpn_core::ike::Mode;
use pqvpn_core::profile::check_psk_strength;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::auth::Caller;
use super::{Registry, Tunnel, wire_status};

/// How long a connection may stay silent between requests.
const IDLE: Duration = Duration::from_secs(60);
/// How long a reply or event may take to be taken; a client that does not read is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the socket at `path`: mode 0660, group `group` (root only, 0600, without a group or
/// when it does not exist). Its directory is made mode 0755: what is inside guards itself.
pub(crate) fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| format!("Failed to create {}: {e}", dir.display()))?;
        // An older `pqvpn up` made it 0700, which would lock the group out.
        if group.is_some() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("Failed to open up {}: {e}", dir.display()))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!("something already answers at {}", path.display()));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("Failed to bind {}: {e}", path.display()))?;
    let gid = group.and_then(|group| {
        nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .map(|g| (group, g.gid))
    });
    let mode = if let Some((group, gid)) = gid {
        std::os::unix::fs::chown(path, None, Some(gid.as_raw()))
            .map_err(|e| format!("Failed to give {} to group {group}: {e}", path.display()))?;
        0o660
    } else {
        if let Some(group) = group {
            eprintln!(
                "pqvpn: warning: no group {group}, so only root can use {}; create it with \
                 `groupadd --system {group}`",
                path.display()
            );
        }
        0o600
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("Failed to restrict {}: {e}", path.display()))?;
    Ok(listener)
}

/// Serves connections until the listener fails.
pub(crate) async fn accept(listener: UnixListener, registry: Arc<Registry>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let registry = registry.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, registry).await {
                        tracing::debug!(error = %e, "control connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A request line, or why there is none.
enum Line {
    Request(String),
    /// The client closed the connection.
    Closed,
    /// Too long: refused unread, and the connection is closed.
    TooLong,
}

/// Reads one line of at most [`MAX_REQUEST_LINE`] octets.
async fn read_line(read: &mut BufReader<impl AsyncRead + Unpin>) -> std::io::Result<Line> {
    let limit = u64::try_from(MAX_REQUEST_LINE).unwrap_or(u64::MAX);
    // A line may carry a credential: one buffer that never grows (no copy left behind), wiped
    // when dropped.
    let mut line = zeroize::Zeroizing::new(Vec::with_capacity(MAX_REQUEST_LINE));
    (&mut *read)
        .take(limit)
        .read_until(b'\n', &mut line)
        .await?;
    if line.is_empty() {
        return Ok(Line::Closed);
    }
    if line.last() != Some(&b'\n') {
        return Ok(if line.len() >= MAX_REQUEST_LINE {
            Line::TooLong
        } else {
            // The client hung up in the middle of a line: nothing is done with it.
            Line::Closed
        });
    }
    Ok(Line::Request(String::from_utf8_lossy(&line).into_owned()))
}

async fn send(write: &mut OwnedWriteHalf, value: &impl serde::Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_string(value).map_err(std::io::Error::other)?;
    line.push('\n');
    tokio::time::timeout(WRITE_TIMEOUT, write.write_all(line.as_bytes()))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

fn error(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(code, message)
}

async fn connection(stream: UnixStream, registry: Arc<Registry>) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let caller = Caller::new(cred.uid(), cred.gid(), registry.group.as_deref());
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let line = match tokio::time::timeout(IDLE, read_line(&mut read)).await {
            Ok(line) => line?,
            Err(_) => {
                let reply = error(
                    ErrorCode::Timeout,
                    format!("nothing for {} s; closing", IDLE.as_secs()),
                );
                return send(&mut write, &Reply::Error(reply)).await;
            }
        };
        let line = match line {
            // It may carry a credential: wiped once parsed.
            Line::Request(line) => zeroize::Zeroizing::new(line),
            Line::Closed => return Ok(()),
            Line::TooLong => {
                let reply = error(
                    ErrorCode::TooLarge,
                    format!(
                        "request line longer than {MAX_REQUEST_LINE} octets; nothing done, closing"
                    ),
                );
                return send(&mut write, &Reply::Error(reply)).await;
            }
        };
        let request = match serde_json::from_str::<Request>(&line) {
            Ok(request) => request,
            Err(e) => {
                send(
                    &mut write,
                    &Reply::Error(error(ErrorCode::BadRequest, format!("not a request: {e}"))),
                )
                .await?;
                continue;
            }
        };
        if !caller.authorized && !matches!(request, Request::Hello { .. }) {
            tracing::info!(
                uid = caller.uid,
                gid = caller.gid,
                "control request refused"
            );
            send(
                &mut write,
                &Reply::Error(error(
                    ErrorCode::NotAuthorized,
                    caller.refusal(registry.group.as_deref()),
                )),
            )
            .await?;
            continue;
        }
        if let Request::Subscribe { profile } = request {
            return subscribe(read, write, &registry, profile.as_deref()).await;
        }
        let reply = handle(&registry, &caller, request).await;
        send(&mut write, &reply).await?;
    }
}

/// The tunnel `name`, or the only one (the only active one when `active`) without a name.
fn find<'a>(
    registry: &'a Registry,
    name: Option<&str>,
    active: bool,
) -> Result<&'a Tunnel, ErrorReply> {
    if let Some(name) = name {
        return registry.tunnels.get(name).ok_or_else(|| {
            let known: Vec<&str> = registry.tunnels.keys().map(String::as_str).collect();
            error(
                ErrorCode::UnknownProfile,
                format!("no profile {name:?}; the daemon has: {}", known.join(", ")),
            )
        });
    }
    let candidates: Vec<&Tunnel> = registry
        .tunnels
        .values()
        .filter(|t| !active || t.status.borrow().state != State::Disconnected)
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one),
        [] if active => Err(error(ErrorCode::UnknownProfile, "no tunnel is connected")),
        [] => Err(error(
            ErrorCode::UnknownProfile,
            "the daemon has no profiles",
        )),
        _ => Err(error(
            ErrorCode::UnknownProfile,
            "several profiles; name one",
        )),
    }
}

/// Applies a PQ-only switch: refused where it would loosen the profile; persisted; a running
/// tunnel reconnects in the new mode at once.
async fn set_pq_only(registry: &Registry, tunnel: &Tunnel, on: bool) -> Result<(), ErrorReply> {
    if !tunnel.restartable {
        return Err(error(
            ErrorCode::Refused,
            format!(
                "{} runs one session (pqvpn up --no-reconnect), which cannot change its mode; \
                 start it again with mode = \"pq-only\" in the profile",
                tunnel.name
            ),
        ));
    }
    if !on && tunnel.floor == Mode::PqOnly {
        return Err(error(
            ErrorCode::Refused,
            format!(
                "profile {} is pq-only; PQ-only cannot be turned off for it (only its profile \
                 can loosen the mode)",
                tunnel.name
            ),
        ));
    }
    let changed = {
        let mut settings = registry
            .settings
            .lock()
            .map_err(|_| error(ErrorCode::Internal, "settings lock poisoned"))?;
        let before = settings.pq_only.get(&tunnel.name).copied().unwrap_or(false);
        if on {
            settings.pq_only.insert(tunnel.name.clone(), true);
        } else {
            settings.pq_only.remove(&tunnel.name);
        }
        if let Some(dir) = &registry.state_dir {
            settings
                .save(dir)
                .map_err(|e| error(ErrorCode::Internal, e))?;
        }
        before != on
    };
    let active = !matches!(
        tunnel.status.borrow().state,
        State::Disconnected | State::Error
    );
    if changed && active {
        let mode = Some(registry.mode_of(tunnel));
        let _ = tunnel.commands.send(Command::Connect { mode }).await;
    }
    Ok(())
}

/// `uid`'s own credential for `tunnel`, when its profile takes users' credentials: put where
/// its sessions find it. Refused when that user stored none.
async fn take_credential(registry: &Registry, tunnel: &Tunnel, uid: u32) -> Result<(), ErrorReply> {
    let Some(per_user) = &tunnel.per_user else {
        return Ok(());
    };
    // One user's session at a time: another's would go on with the first one's PSK.
    let active = !matches!(
        tunnel.status.borrow().state,
        State::Disconnected | State::Error
    );
    if let Some(owner) = per_user.owner().filter(|&o| o != uid && active) {
        return Err(error(
            ErrorCode::Refused,
            format!(
                "profile {} is connected with the credential of uid {owner}; it must disconnect \
                 first",
                tunnel.name
            ),
        ));
    }
    let secrets = registry.secrets.clone();
    let entry = per_user.entry(uid);
    let found = tokio::task::spawn_blocking(move || secrets.get_user_secret(&entry))
        .await
        .map_err(|e| error(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| error(ErrorCode::Internal, e))?;
    let Some(psk) = found else {
        return Err(error(
            ErrorCode::Refused,
            format!(
                "profile {} takes each user's own PSK (user_credentials = true) and you (uid \
                 {uid}) have stored none: run `pqvpn credential set {}`",
                tunnel.name, tunnel.name
            ),
        ));
    };
    *per_user
        .slot
        .lock()
        .map_err(|_| error(ErrorCode::Internal, "credential lock poisoned"))? = Some((uid, psk));
    Ok(())
}

/// Stores (`Some`) or deletes the caller's own credential for `tunnel`.
async fn set_credential(
    registry: &Registry,
    tunnel: &Tunnel,
    uid: u32,
    secret: Option<pqvpn_control::Secret>,
) -> Result<(), ErrorReply> {
    let Some(per_user) = &tunnel.per_user else {
        return Err(error(
            ErrorCode::Refused,
            format!(
                "profile {} uses the administrator's PSK, not users' own (no user_credentials \
                 = true); only root changes it, with `pqvpn secret set`",
                tunnel.name
            ),
        ));
    };
    let secrets = registry.secrets.clone();
    let entry = per_user.entry(uid);
    let result = match secret {
        Some(secret) => {
            let psk = SecretBytes::from_slice(secret.expose().as_bytes());
            drop(secret);
            check_psk_strength("credential", &psk, per_user.allow_weak)
                .map_err(|e| error(ErrorCode::Refused, e.to_string()))?;
            tokio::task::spawn_blocking(move || secrets.set_user_psk(&entry, psk.expose())).await
        }
        None => tokio::task::spawn_blocking(move || secrets.delete_user_psk(&entry)).await,
    };
    result
        .map_err(|e| error(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| error(ErrorCode::Refused, e))?;
    // A rotated or deleted credential is not used again: the next connect reads it anew.
    per_user.forget(Some(uid));
    if !crate::vault::Store::seals() {
        tracing::warn!(
            profile = tunnel.name,
            uid,
            "systemd-creds is not installed: the credential is kept unsealed (root only)"
        );
    }
    Ok(())
}

async fn handle(registry: &Registry, caller: &Caller, request: Request) -> Reply {
    let result = match request {
        Request::Hello { version } if version == VERSION => Ok(Reply::Hello {
            version: VERSION,
            daemon: format!("pqvpn {}", env!("CARGO_PKG_VERSION")),
        }),
        Request::Hello { version } => Err(error(
            ErrorCode::UnsupportedVersion,
            format!("this daemon speaks control protocol {VERSION}, not {version}"),
        )),
        Request::Profiles => Ok(Reply::Profiles(
            registry
                .tunnels
                .values()
                .map(|t| registry.info(t))
                .collect(),
        )),
        Request::Status { profile } => find(registry, profile.as_deref(), false)
            .map(|t| Reply::Status(wire_status(&t.name, &t.status.borrow()))),
        Request::Connect { profile, pq_only } => match find(registry, Some(&profile), false) {
            Ok(tunnel) => {
                async {
                    take_credential(registry, tunnel, caller.uid).await?;
                    if let Some(on) = pq_only {
                        set_pq_only(registry, tunnel, on).await?;
                    }
                    let mode = Some(registry.mode_of(tunnel));
                    tunnel
                        .commands
                        .send(Command::Connect { mode })
                        .await
                        .map_err(|_| {
                            error(ErrorCode::Internal, "the tunnel's supervisor is gone")
                        })?;
                    Ok(Reply::Done)
                }
                .await
            }
            Err(e) => Err(e),
        },
        Request::Disconnect { profile } => match find(registry, profile.as_deref(), true) {
            Ok(tunnel) => {
                // The user's credential is not kept in memory past their session.
                if let Some(per_user) = &tunnel.per_user {
                    per_user.forget(None);
                }
                tunnel
                    .commands
                    .send(Command::Disconnect)
                    .await
                    .map(|()| Reply::Done)
                    .map_err(|_| error(ErrorCode::Internal, "the tunnel's supervisor is gone"))
            }
            Err(e) => Err(e),
        },
        Request::SetPqOnly { profile, on } => match find(registry, Some(&profile), false) {
            Ok(tunnel) => set_pq_only(registry, tunnel, on)
                .await
                .map(|()| Reply::Done),
            Err(e) => Err(e),
        },
        Request::SetCredential { profile, secret } => match find(registry, Some(&profile), false) {
            Ok(tunnel) => set_credential(registry, tunnel, caller.uid, Some(secret))
                .await
                .map(|()| Reply::Done),
            Err(e) => Err(e),
        },
        Request::DeleteCredential { profile } => match find(registry, Some(&profile), false) {
            Ok(tunnel) => set_credential(registry, tunnel, caller.uid, None)
                .await
                .map(|()| Reply::Done),
            Err(e) => Err(e),
        },
        Request::Subscribe { .. } => Err(error(ErrorCode::Internal, "subscribe is handled above")),
    };
    result.unwrap_or_else(Reply::Error)
}

/// Streams status events of one tunnel (or all) until the client hangs up or stops reading.
async fn subscribe(
    mut read: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut write: OwnedWriteHalf,
    registry: &Registry,
    profile: Option<&str>,
) -> std::io::Result<()> {
    let tunnels: Vec<&Tunnel> = match profile {
        Some(name) => match find(registry, Some(name), false) {
            Ok(t) => vec![t],
            Err(e) => return send(&mut write, &Reply::Error(e)).await,
        },
        None => registry.tunnels.values().collect(),
    };
    send(&mut write, &Reply::Subscribed).await?;
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let mut forwarders = Vec::new();
    for tunnel in &tunnels {
        let mut status = tunnel.status.clone();
        let name = tunnel.name.clone();
        let tx = tx.clone();
        let mut last = wire_status(&name, &status.borrow_and_update());
        let _ = tx.send(Event::Status(last.clone())).await;
        forwarders.push(tokio::spawn(async move {
            while status.changed().await.is_ok() {
                let now = wire_status(&name, &status.borrow_and_update());
                for event in changes(&last, &now) {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                if tx.send(Event::Status(now.clone())).await.is_err() {
                    break;
                }
                last = now;
            }
        }));
    }
    drop(tx);
    let mut sink = [0u8; 256];
    let result = loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(event) => {
                    if let Err(e) = send(&mut write, &event).await {
                        break Err(e);
                    }
                }
                None => break Ok(()),
            },
            // Anything the client sends now is ignored; its hang-up ends the stream.
            n = read.read(&mut sink) => match n {
                Ok(0) | Err(_) => break Ok(()),
                Ok(_) => {}
            },
        }
    };
    for forwarder in forwarders {
        forwarder.abort();
    }
    result
}

/// The typed events between two statuses of one tunnel: a state change, new keys.
fn changes(last: &TunnelStatus, now: &TunnelStatus) -> Vec<Event> {
    let mut events = Vec::new();
    if now.state != last.state {
        events.push(Event::StateChanged {
            profile: now.profile.clone(),
            state: now.state,
            reason: now.reason.clone(),
        });
    }
    // Counters start again with each new tunnel: only an increase is a rekey.
    for (sa, before, after) in [
        (RekeyedSa::IkeSa, last.ike_sa_rekeys, now.ike_sa_rekeys),
        (
            RekeyedSa::ChildSa,
            last.child_sa_rekeys,
            now.child_sa_rekeys,
        ),
        (
            RekeyedSa::ChildSaRecreated,
            last.child_sa_recreates,
            now.child_sa_recreates,
        ),
    ] {
        if after > before {
            events.push(Event::Rekeyed {
                profile: now.profile.clone(),
                sa,
                count: after,
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use pqvpn_control::State as WireState;

    use super::*;

    #[test]
    fn state_changes_and_rekeys_become_events() {
        let connected = TunnelStatus {
            profile: "work".into(),
            state: WireState::Connected,
            ..TunnelStatus::default()
        };
        // Counters only: no event (the status itself follows).
        let mut counted = connected.clone();
        counted.bytes_in = 100;
        assert!(changes(&connected, &counted).is_empty());
        let mut rekeyed = counted.clone();
        rekeyed.child_sa_rekeys = 1;
        rekeyed.ike_sa_rekeys = 1;
        assert_eq!(
            changes(&counted, &rekeyed),
            [
                Event::Rekeyed {
                    profile: "work".into(),
                    sa: RekeyedSa::IkeSa,
                    count: 1
                },
                Event::Rekeyed {
                    profile: "work".into(),
                    sa: RekeyedSa::ChildSa,
                    count: 1
                },
            ]
        );
        let mut lost = rekeyed.clone();
        lost.state = WireState::Reconnecting;
        lost.reason = Some("the gateway stopped answering (dead peer)".into());
        // A new tunnel counts from 0 again: that is no rekey.
        lost.child_sa_rekeys = 0;
        assert_eq!(
            changes(&rekeyed, &lost),
            [Event::StateChanged {
                profile: "work".into(),
                state: WireState::Reconnecting,
                reason: Some("the gateway stopped answering (dead peer)".into()),
            }]
        );
    }
}
