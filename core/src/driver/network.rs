//! Tells a supervisor when the network under its tunnel changed, so that it reconnects at
//! once instead of waiting for dead-peer detection: another interface, source address or next
//! hop for the driver's packets to the gateway ([`path_to`]), or the
//! gateway becoming unreachable or reachable again. Link, address and route events only make
//! it look; a change that leaves the path as it was (the tunnel's own routes, an address on
//! another interface, a link flapping back with the same address) sends nothing.
//!
//! It also notices a wake: the monotonic clock does not advance while the machine sleeps and
//! the wall clock does, and a frozen process (`SIGSTOP`) sees its ticks come late. Either sends
//! [`Command::Wake`]: the supervisor has the session check its gateway at once (a DPD that must
//! be answered within [`WAKE_PROBE`](crate::tunnel::WAKE_PROBE)) instead of waiting for the
//! next DPD interval. A wall clock stepped by NTP can look like a wake; that costs one DPD.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::supervisor::Command;
use super::{State, Status};
use crate::platform::monitor::{Monitor, Path, path_to};

/// How often the clocks are compared to notice a sleep.
const TICK: Duration = Duration::from_secs(1);
/// A tick this much later than due (a frozen process), or a wall clock this much ahead of the
/// monotonic one (which stops while the machine sleeps), is a wake.
const WAKE_GAP: Duration = Duration::from_secs(4);

/// Events closer together than this are one change.
const SETTLE: Duration = Duration::from_millis(250);
/// A stream of events is looked at after this long at the latest.
const SETTLE_MAX: Duration = Duration::from_secs(2);

/// Watches the network for the tunnel whose status is `status`, sending
/// [`Command::NetworkChanged`] to `commands` on each change of its path; returns when the
/// supervisor is gone (its status sender dropped, or its command channel closed: the watcher
/// holds only a weak sender, so it never keeps a supervisor alive), or (logged) when the
/// network cannot be watched.
pub async fn watch_network(
    mut status: watch::Receiver<Status>,
    commands: mpsc::WeakSender<Command>,
) {
    let mut monitor = match Monitor::open() {
        Ok(monitor) => monitor,
        Err(error) => {
            tracing::warn!(%error, "network changes will be noticed by dead-peer detection only");
            return;
        }
    };
    let mut known: Option<(SocketAddr, Option<Path>)> = None;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut clocks = (std::time::Instant::now(), std::time::SystemTime::now());
    loop {
        let event = tokio::select! {
            _ = ticks.tick() => {
                let now = (std::time::Instant::now(), std::time::SystemTime::now());
                let monotonic = now.0.duration_since(clocks.0);
                let wall = now.1.duration_since(clocks.1).unwrap_or_default();
                clocks = now;
                if monotonic > TICK + WAKE_GAP || wall > monotonic + WAKE_GAP {
                    tracing::info!(?monotonic, ?wall, "woke up: checking the tunnel");
                    let Some(commands) = commands.upgrade() else {
                        return;
                    };
                    if commands.send(Command::Wake).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            changed = monitor.changed() => {
                if let Err(error) = changed {
                    tracing::warn!(%error, "the network monitor failed");
                    return;
                }
                settle(&mut monitor).await;
                true
            }
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
        };
        let gateway = {
            let status = status.borrow();
            let active = matches!(
                status.state,
                State::Connecting | State::Connected | State::Reconnecting
            );
            // Between reconnect attempts no session shows the gateway: keep watching the
            // one known, so a network that comes back cuts the backoff short.
            active
                .then(|| {
                    status
                        .gateway
                        .parse::<SocketAddr>()
                        .ok()
                        .or_else(|| known.as_ref().map(|(g, _)| *g))
                })
                .flatten()
        };
        let Some(gateway) = gateway else {
            known = None;
            continue;
        };
        if !event && known.as_ref().is_some_and(|(g, _)| *g == gateway) {
            continue;
        }
        let path = match tokio::task::spawn_blocking(move || path_to(gateway.ip())).await {
            Ok(Ok(path)) => path,
            Ok(Err(error)) => {
                tracing::debug!(%error, "no path to the gateway");
                continue;
            }
            Err(_) => return,
        };
        let moved = matches!(&known, Some((g, p)) if *g == gateway && *p != path);
        if moved {
            tracing::info!(?path, %gateway, "the network changed");
            let Some(commands) = commands.upgrade() else {
                return;
            };
            if commands.send(Command::NetworkChanged).await.is_err() {
                return;
            }
        }
        known = Some((gateway, path));
    }
}

/// Waits until the events stop for [`SETTLE`] (or [`SETTLE_MAX`] passed).
async fn settle(monitor: &mut Monitor) {
    let until = tokio::time::Instant::now() + SETTLE_MAX;
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout(SETTLE, monitor.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use std::process::Command as Process;

    use super::*;

    /// Whether nothing arrives within a second.
    async fn quiet(received: &mut mpsc::Receiver<Command>) -> bool {
        tokio::time::timeout(Duration::from_secs(1), received.recv())
            .await
            .is_err()
    }

    fn run(args: &[&str]) {
        let (program, args) = args.split_first().unwrap();
        let output = Process::new(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// In a network namespace of its own: the path follows address and route changes, the
    /// watcher sends one `NetworkChanged` for a change of the path and none for a change
    /// elsewhere (another interface's address, the tunnel's own kind of route).
    #[test]
    fn netns_network_changes_of_the_path_and_only_those_reach_the_supervisor() {
        std::thread::spawn(|| {
            if let Err(error) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                println!("skipped: cannot create a network namespace ({error})");
                return;
            }
            run(&["ip", "link", "set", "lo", "up"]);
            for (name, peer) in [("up0", "up0p"), ("up1", "up1p")] {
                run(&[
                    "ip", "link", "add", name, "type", "veth", "peer", "name", peer,
                ]);
                run(&["ip", "link", "set", name, "up"]);
                run(&["ip", "link", "set", peer, "up"]);
            }
            run(&["ip", "address", "add", "192.0.2.1/24", "dev", "up0"]);
            run(&["ip", "address", "add", "198.51.100.1/24", "dev", "up1"]);
            run(&["ip", "route", "add", "default", "via", "192.0.2.254"]);
            let gateway: SocketAddr = "203.0.113.10:4500".parse().unwrap();

            let first = path_to(gateway.ip()).unwrap().unwrap();
            assert_eq!(first.via, Some("192.0.2.254".parse().unwrap()));
            assert_eq!(first.source, Some("192.0.2.1".parse().unwrap()));

            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (status_tx, status) = watch::channel(Status {
                    state: State::Connected,
                    gateway: gateway.to_string(),
                    ..Status::default()
                });
                let (commands, mut received) = mpsc::channel(8);
                let watcher = tokio::spawn(watch_network(status, commands.downgrade()));
                // The baseline is taken on the first status.
                status_tx.send_modify(|s| s.bytes_in = 1);
                tokio::time::sleep(Duration::from_millis(200)).await;

                // Elsewhere: another interface's address, a route in another table.
                run(&["ip", "address", "add", "198.51.100.2/24", "dev", "up1"]);
                run(&[
                    "ip", "route", "add", "default", "dev", "up1", "table", "51820",
                ]);
                assert!(quiet(&mut received).await, "no change of the path");

                // The default route moves to the other uplink.
                run(&["ip", "route", "replace", "default", "via", "198.51.100.254"]);
                let command = tokio::time::timeout(Duration::from_secs(5), received.recv())
                    .await
                    .expect("the change reached the supervisor");
                assert_eq!(command, Some(Command::NetworkChanged));
                assert!(quiet(&mut received).await, "one change, one command");

                // Unreachable, then back.
                run(&["ip", "route", "del", "default"]);
                let command = tokio::time::timeout(Duration::from_secs(5), received.recv()).await;
                assert_eq!(command.ok().flatten(), Some(Command::NetworkChanged));
                assert_eq!(path_to(gateway.ip()).unwrap(), None);
                run(&["ip", "route", "add", "default", "via", "192.0.2.254"]);
                let command = tokio::time::timeout(Duration::from_secs(5), received.recv()).await;
                assert_eq!(command.ok().flatten(), Some(Command::NetworkChanged));

                // Between reconnect attempts no session shows the gateway: still watched.
                status_tx.send_modify(|s| {
                    s.state = State::Reconnecting;
                    s.gateway.clear();
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
                run(&["ip", "route", "replace", "default", "via", "198.51.100.254"]);
                let command = tokio::time::timeout(Duration::from_secs(5), received.recv()).await;
                assert_eq!(command.ok().flatten(), Some(Command::NetworkChanged));

                // Disconnected: nothing is watched.
                status_tx.send_modify(|s| s.state = State::Disconnected);
                tokio::time::sleep(Duration::from_millis(100)).await;
                run(&["ip", "route", "replace", "default", "via", "192.0.2.254"]);
                assert!(quiet(&mut received).await, "not while disconnected");

                drop(received);
                drop(status_tx);
                tokio::time::timeout(Duration::from_secs(5), watcher)
                    .await
                    .expect("the watcher ends with its channels")
                    .unwrap();
            });
        })
        .join()
        .unwrap();
    }
}
