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

use pqvpn_control::{
    Cipher, KeyExchange, Mode as WireMode, Prf, ProfileInfo, State as WireState, TunnelStatus,
};
use pqvpn_core::crypto::AeadAlgorithm;
use pqvpn_core::crypto::{RustCrypto, SecretBytes};
use pqvpn_core::driver::supervisor::{Command, Lifetime, run_supervisor};
use pqvpn_core::driver::{State, Status};
use pqvpn_core::ike::Mode;
use pqvpn_core::platform;
use pqvpn_core::platform::firewall::Policy;
use pqvpn_core::profile::PskSource;
use pqvpn_core::wire::{KeyExchangeMethod, PrfAlgorithm};
use tokio::sync::{mpsc, watch};

use crate::linux::{
    SessionPsk, SharedFirewall, TunFactory, UpConnector, on_signals, require_root, state_dir,
};
use crate::profile::StoredProfile;
use crate::secret::Keyring;
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
    /// For `user_credentials = true`: whose credential its sessions use.
    pub(crate) per_user: Option<PerUser>,
    /// Whether a new session can start (false for `pqvpn up --no-reconnect`: one session).
    pub(crate) restartable: bool,
}

/// The credentials of a `user_credentials = true` profile.
pub(crate) struct PerUser {
    /// The profile's keyring user, `LOCAL_ID@ENDPOINT`.
    pub(crate) user: String,
    /// `auth.allow_weak_psk`.
    pub(crate) allow_weak: bool,
    /// The credential its sessions use, and whose it is: the user who connected it.
    pub(crate) slot: Arc<Mutex<Option<(u32, SecretBytes)>>>,
}

impl PerUser {
    /// The store entry of `uid`'s credential (service [`crate::secret::USER_SERVICE`], apart
    /// from the administrator's entries).
    pub(crate) fn entry(&self, uid: u32) -> String {
        format!("uid-{uid}/{}", self.user)
    }

    /// Whose credential the tunnel uses now.
    pub(crate) fn owner(&self) -> Option<u32> {
        self.slot
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|(uid, _)| *uid))
    }

    /// Forgets the credential in use if it is `uid`'s (or anyone's, for `None`).
    pub(crate) fn forget(&self, uid: Option<u32>) {
        if let Ok(mut slot) = self.slot.lock()
            && slot
                .as_ref()
                .is_some_and(|(owner, _)| uid.is_none_or(|u| u == *owner))
        {
            *slot = None;
        }
    }
}

/// Every tunnel, and the settings users change.
pub(crate) struct Registry {
    pub(crate) tunnels: BTreeMap<String, Tunnel>,
    pub(crate) settings: Mutex<Settings>,
    /// Users' own credentials (`user_credentials = true`).
    pub(crate) secrets: Keyring,
    /// Where the settings are kept; `None`: in memory only (`pqvpn up`).
    pub(crate) state_dir: Option<PathBuf>,
    /// The control group; `None`: root only (`pqvpn up`'s socket).
    pub(crate) group: Option<String>,
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

fn wire_ke(m: KeyExchangeMethod) -> KeyExchange {
    match m {
        KeyExchangeMethod::Curve25519 => KeyExchange::X25519,
        KeyExchangeMethod::Curve448 => KeyExchange::X448,
        KeyExchangeMethod::Ecp256 => KeyExchange::P256,
        KeyExchangeMethod::Ecp384 => KeyExchange::P384,
        KeyExchangeMethod::Ecp521 => KeyExchange::P521,
        KeyExchangeMethod::MlKem512 => KeyExchange::MlKem512,
        KeyExchangeMethod::MlKem768 => KeyExchange::MlKem768,
        KeyExchangeMethod::MlKem1024 => KeyExchange::MlKem1024,
        _ => KeyExchange::Other,
    }
}

fn wire_cipher(a: AeadAlgorithm) -> Cipher {
    match a {
        AeadAlgorithm::Aes128Gcm16 => Cipher::Aes128Gcm,
        AeadAlgorithm::Aes256Gcm16 => Cipher::Aes256Gcm,
        AeadAlgorithm::ChaCha20Poly1305 => Cipher::ChaCha20Poly1305,
        _ => Cipher::Other,
    }
}

fn wire_prf(p: PrfAlgorithm) -> Prf {
    match p {
        PrfAlgorithm::HmacSha2_256 => Prf::HmacSha256,
        PrfAlgorithm::HmacSha2_384 => Prf::HmacSha384,
        PrfAlgorithm::HmacSha2_512 => Prf::HmacSha512,
        _ => Prf::Other,
    }
}

/// The protocol's view of a tunnel's status.
pub(crate) fn wire_status(name: &str, s: &Status) -> TunnelStatus {
    let s = s.refreshed();
    let a = s.algorithms.as_ref();
    TunnelStatus {
        profile: name.to_owned(),
        state: wire_state(s.state),
        mode: s.mode.parse::<Mode>().ok().map(wire_mode),
        quantum_safe: s.quantum_safe,
        key_exchanges: a
            .map(|a| {
                std::iter::once(a.ke)
                    .chain(a.addke.iter().copied())
                    .map(wire_ke)
                    .collect()
            })
            .unwrap_or_default(),
        ike_cipher: a.map(|a| wire_cipher(a.ike_encr)),
        prf: a.map(|a| wire_prf(a.prf)),
        esp_cipher: a.and_then(|a| a.esp_encr).map(wire_cipher),
        handshake_ms: s.handshake_ms,
        child_sa_rekeys: s.child_sa_rekeys,
        ike_sa_rekeys: s.ike_sa_rekeys,
        child_sa_recreates: s.child_sa_recreates,
        gateway: s.gateway.clone(),
        virtual_ips: s.virtual_ips.clone(),
        dns: s.dns.iter().map(ToString::to_string).collect(),
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        uptime_s: s.uptime_s,
        attempt: s.attempt,
        reconnects: s.reconnects,
        reason: s.last_error.clone(),
        kill_switch: s.kill_switch,
    }
}

/// The profiles in `dir` (`*.toml`, by name); a broken one is reported and skipped.
fn load_profiles(dir: &Path) -> Result<Vec<StoredProfile>, String> {
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
        match StoredProfile::load(&path) {
            Ok(profile) => profiles.push(profile),
            Err(e) => eprintln!("pqvpn: skipped a broken profile: {e}"),
        }
    }
    Ok(profiles)
}

/// Starts `profile`'s supervisor, disconnected. `stale` is the kill-switch policy a crashed
/// daemon left for it: the factory takes it over, and its gateway address is the fallback
/// when the name cannot be resolved under it.
fn start(
    profile: StoredProfile,
    firewall: SharedFirewall,
    stale: Option<Policy>,
) -> (Tunnel, tokio::task::JoinHandle<Result<(), String>>) {
    let profile = Arc::new(profile);
    let (commands, commands_rx) = mpsc::channel(16);
    let (status_tx, status) = watch::channel(Status {
        state: State::Disconnected,
        ..Status::default()
    });
    let floor = profile.spec.mode;
    let last_gateway = stale.as_ref().and_then(|policy| {
        let ip = policy.gateways.first()?;
        Some(std::net::SocketAddr::new(*ip, profile.spec.gateway.port))
    });
    let mut factory = TunFactory::of(&profile.name, &profile.spec, firewall);
    if let Some(stale) = stale {
        factory.adopt(stale);
    }
    let (psk, per_user) = match &profile.spec.psk.source {
        PskSource::PerUser { user } => {
            let slot = Arc::new(Mutex::new(None));
            let per_user = PerUser {
                user: user.clone(),
                allow_weak: profile.spec.psk.allow_weak,
                slot: slot.clone(),
            };
            (SessionPsk::User(slot), Some(per_user))
        }
        _ => (SessionPsk::Stored(profile.clone()), None),
    };
    let connector = UpConnector {
        spec: profile.spec.clone(),
        psk,
        last_gateway,
        avoid: factory.pushed_dns(),
    };
    // Network changes reconnect at once (or move nothing when the path stays).
    tokio::spawn(pqvpn_core::driver::network::watch_network(
        status.clone(),
        commands.downgrade(),
    ));
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
        per_user,
        restartable: true,
    };
    (tunnel, task)
}

/// Serves the control protocol for the one tunnel of `pqvpn up` at `socket` (root only, mode
/// 0600; PQ-only switches kept in memory), the same protocol as the daemon's, so `pqvpn status`
/// and `pqvpn down`, scripts and the tray read one schema.
pub(crate) fn serve_one(
    socket: &Path,
    tunnel: Tunnel,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = serve::bind(socket, None)?;
    let registry = Arc::new(Registry {
        tunnels: BTreeMap::from([(tunnel.name.clone(), tunnel)]),
        settings: Mutex::new(Settings::default()),
        secrets: Keyring::os()?,
        state_dir: None,
        group: None,
    });
    Ok(tokio::spawn(serve::accept(listener, registry)))
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
    // The kill switch a crash left (fail closed) names the tunnels that were up: they are
    // connected again under it; the rest of it is lifted.
    let firewall = SharedFirewall::default();
    let stale = firewall
        .with(|firewall| {
            Ok(firewall
                .keys()
                .filter_map(|key| Some((key.to_owned(), firewall.policy(key)?.clone())))
                .collect::<BTreeMap<_, _>>())
        })
        .map_err(|e| format!("the kill switch: {e}"))?;
    let mut tunnels = BTreeMap::new();
    let mut tasks = Vec::new();
    for profile in profiles {
        let policy = stale.get(&profile.name).cloned();
        let (tunnel, task) = start(profile, firewall.clone(), policy);
        tasks.push((tunnel.name.clone(), task));
        tunnels.insert(tunnel.name.clone(), tunnel);
    }
    firewall
        .with(|firewall| firewall.retain(|key| tunnels.contains_key(key)))
        .map_err(|e| format!("the kill switch: {e}"))?;
    eprintln!(
        "pqvpn: daemon with {} profile(s) from {}, control socket {}",
        tunnels.len(),
        options.profiles.display(),
        options.socket.display()
    );
    let registry = Arc::new(Registry {
        tunnels,
        settings: Mutex::new(Settings::load(&options.state)),
        secrets: Keyring::os()?,
        state_dir: Some(options.state.clone()),
        group: Some(options.group.clone()),
    });
    for (name, tunnel) in &registry.tunnels {
        if stale.contains_key(name) {
            eprintln!("pqvpn: {name} was up when the daemon stopped; connecting it again");
            let mode = Some(registry.mode_of(tunnel));
            let _ = tunnel.commands.send(Command::Resume { mode }).await;
        }
    }
    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
    on_signals(shutdown_tx)?;
    let listener = serve::bind(&options.socket, Some(&options.group))?;
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
