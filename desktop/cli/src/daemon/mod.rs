//! `pqvpn daemon`: runs a tunnel supervisor for each profile in a directory and serves the
//! control protocol (`pqvpn_control`) on a Unix socket to root and the control group.
//!
//! A broken profile is reported by name and skipped; the others run. Tunnels start
//! disconnected; front ends connect them. On SIGTERM every tunnel is disconnected (its routes
//! and DNS restored) before the daemon exits; after a crash the next start undoes what was
//! left (`platform::recover`).

mod auth;
mod serve;
mod settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pqvpn_control::{Mode as WireMode, ProfileInfo, State as WireState, TunnelStatus};
use pqvpn_core::crypto::RustCrypto;
use pqvpn_core::driver::supervisor::{Command, Lifetime, run_supervisor};
use pqvpn_core::driver::{State, Status};
use pqvpn_core::ike::Mode;
use pqvpn_core::platform;
use tokio::sync::{mpsc, watch};

use crate::linux::{TunFactory, UpConnector, on_signals, require_root, state_dir};
use crate::profile::Profile;
use settings::Settings;

/// Where the daemon looks by default.
pub(crate) const PROFILES_DIR: &str = "/etc/pqvpn/profiles";
/// Where the daemon keeps what users changed (the PQ-only switches).
pub(crate) const STATE_DIR: &str = "/var/lib/pqvpn";

/// `pqvpn daemon`'s options.
#[derive(Debug, Clone)]
pub(crate) struct DaemonOptions {
    pub(crate) profiles: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) group: String,
}

/// One profile's running supervisor.
pub(crate) struct Tunnel {
    pub(crate) name: String,
    pub(crate) gateway: String,
    /// The profile's mode: the weakest any session may use.
    pub(crate) floor: Mode,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) status: watch::Receiver<Status>,
}

/// Every tunnel, and the settings users change.
pub(crate) struct Registry {
    pub(crate) tunnels: BTreeMap<String, Tunnel>,
    pub(crate) settings: Mutex<Settings>,
    pub(crate) state_dir: PathBuf,
    pub(crate) group: String,
}

impl Registry {
    /// Whether `name`'s PQ-only switch is on.
    pub(crate) fn pq_only(&self, name: &str) -> bool {
        self.settings
            .lock()
            .map(|s| s.pq_only.get(name).copied().unwrap_or(false))
            .unwrap_or(false)
    }

    /// The mode `tunnel` connects in: pq-only when its switch is on, else the profile's.
    pub(crate) fn mode_of(&self, tunnel: &Tunnel) -> Mode {
        if self.pq_only(&tunnel.name) {
            Mode::PqOnly
        } else {
            tunnel.floor
        }
    }

    pub(crate) fn info(&self, tunnel: &Tunnel) -> ProfileInfo {
        ProfileInfo {
            name: tunnel.name.clone(),
            gateway: tunnel.gateway.clone(),
            mode: wire_mode(tunnel.floor),
            pq_only: self.pq_only(&tunnel.name),
            state: wire_state(tunnel.status.borrow().state),
        }
    }
}

pub(crate) fn wire_mode(mode: Mode) -> WireMode {
    match mode {
        Mode::Hybrid => WireMode::Hybrid,
        Mode::PqOnly => WireMode::PqOnly,
        _ => WireMode::Classical,
    }
}

pub(crate) fn wire_state(state: State) -> WireState {
    match state {
        State::Connecting => WireState::Connecting,
        State::Connected => WireState::Connected,
        State::Reconnecting => WireState::Reconnecting,
        State::Error => WireState::Error,
        _ => WireState::Disconnected,
    }
}

/// The protocol's view of a tunnel's status.
pub(crate) fn wire_status(name: &str, s: &Status) -> TunnelStatus {
    let s = s.refreshed();
    let mut key_exchanges = Vec::new();
    if !s.ike.ke.is_empty() {
        key_exchanges.push(s.ike.ke.clone());
    }
    key_exchanges.extend(s.ike.addke.iter().cloned());
    TunnelStatus {
        profile: name.to_owned(),
        state: wire_state(s.state),
        mode: s.mode.parse::<Mode>().ok().map(wire_mode),
        quantum_safe: s.quantum_safe,
        key_exchanges,
        ike_cipher: s.ike.encr.clone(),
        esp_cipher: s.esp.encr.clone(),
        gateway: s.gateway.clone(),
        virtual_ips: s.virtual_ips.clone(),
        dns: s.dns.iter().map(ToString::to_string).collect(),
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        uptime_s: s.uptime_s,
        attempt: s.attempt,
        reconnects: s.reconnects,
        reason: s.last_error.clone(),
    }
}

/// The profiles in `dir` (`*.toml`, by name); a broken one is reported and skipped.
fn load_profiles(dir: &Path) -> Result<Vec<Profile>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("Failed to read the profiles in {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut profiles = Vec::new();
    for path in paths {
        match Profile::load(&path) {
            Ok(profile) => profiles.push(profile),
            Err(e) => eprintln!("pqvpn: skipped a broken profile: {e}"),
        }
    }
    Ok(profiles)
}

fn start(profile: Profile) -> (Tunnel, tokio::task::JoinHandle<Result<(), String>>) {
    let (commands, commands_rx) = mpsc::channel(16);
    let (status_tx, status) = watch::channel(Status {
        state: State::Disconnected,
        ..Status::default()
    });
    let floor = profile.spec.mode;
    let factory = TunFactory::new(&profile);
    let connector = UpConnector {
        spec: profile.spec.clone(),
        psk: profile.psk.clone(),
    };
    let task = tokio::spawn(async move {
        run_supervisor(
            floor,
            Lifetime::UntilClosed,
            connector,
            Arc::new(RustCrypto::new()),
            factory,
            &status_tx,
            commands_rx,
        )
        .await
    });
    let tunnel = Tunnel {
        name: profile.name.clone(),
        gateway: profile.spec.gateway.to_string(),
        floor,
        commands,
        status,
    };
    (tunnel, task)
}

/// `pqvpn daemon`.
pub(crate) async fn run(options: DaemonOptions) -> Result<(), String> {
    require_root("pqvpn daemon")?;
    for undone in
        platform::recover(&state_dir()).map_err(|e| platform::DisplayChain(&e).to_string())?
    {
        eprintln!("pqvpn: undid leftovers of a crashed run: {undone}");
    }
    let profiles = load_profiles(&options.profiles)?;
    let mut tunnels = BTreeMap::new();
    let mut tasks = Vec::new();
    for profile in profiles {
        let (tunnel, task) = start(profile);
        tasks.push((tunnel.name.clone(), task));
        tunnels.insert(tunnel.name.clone(), tunnel);
    }
    eprintln!(
        "pqvpn: daemon with {} profile(s) from {}, control socket {}",
        tunnels.len(),
        options.profiles.display(),
        options.socket.display()
    );
    let registry = Arc::new(Registry {
        tunnels,
        settings: Mutex::new(Settings::load(&options.state)),
        state_dir: options.state.clone(),
        group: options.group.clone(),
    });
    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
    on_signals(shutdown_tx)?;
    let listener = serve::bind(&options.socket, &options.group)?;
    let server = tokio::spawn(serve::accept(listener, registry.clone()));
    let _ = shutdown_rx.wait_for(|stop| *stop).await;
    server.abort();
    let _ = std::fs::remove_file(&options.socket);
    // Disconnect everything (routes and DNS restored) before exiting.
    for tunnel in registry.tunnels.values() {
        let _ = tunnel.commands.send(Command::Disconnect).await;
    }
    for tunnel in registry.tunnels.values() {
        let mut status = tunnel.status.clone();
        let stopped = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            status.wait_for(|s| matches!(s.state, State::Disconnected)),
        )
        .await;
        if !matches!(stopped, Ok(Ok(_))) {
            eprintln!("pqvpn: {} did not disconnect within 10 s", tunnel.name);
        }
    }
    for (name, task) in tasks {
        if task.is_finished() {
            match task.await {
                Ok(Err(e)) => eprintln!("pqvpn: {name}: {e}"),
                Err(e) => eprintln!("pqvpn: {name}: {e}"),
                Ok(Ok(())) => {}
            }
        }
    }
    Ok(())
}
