//! `pqvpn up` and `pqvpn gateway` on Linux: a TUN device, routes and DNS from
//! `pqvpn_core::platform`, the control socket, and signal handling.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pqvpn_core::crypto::{RustCrypto, SecretBytes};
use pqvpn_core::driver::supervisor::{Command, Connector, Lifetime, SessionEnd, run_supervisor};
use pqvpn_core::driver::{
    ClientOptions, DeviceFactory, DriverError, GatewayOptions, GatewayStatus, PacketDevice, State,
    Status, TunnelUp, run_client, run_gateway,
};
use pqvpn_core::ike::{ConfigReceived, Mode, NAT_T_PORT};
use pqvpn_core::platform::firewall::{Firewall, Policy};
use pqvpn_core::platform::{self, Applied, DnsBackend, NetworkConfig, Tun, TunConfig};
use pqvpn_core::profile::ClientProfile;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::control;
use crate::profile::{GatewayProfile, Profile, StoredProfile};
use crate::secret::Keyring;

/// Where platform state files live, so a crashed run is undone at the next start.
pub(crate) fn state_dir() -> PathBuf {
    Path::new(control::RUN_DIR).join("state")
}

/// A TUN device as the driver's packet device.
pub(crate) struct TunDevice(Arc<Tun>);

impl PacketDevice for TunDevice {
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf).await
    }

    async fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.0.send(packet).await.map(|_| ())
    }
}

/// The kill switch of this network namespace, shared by the tunnels of one process (the
/// daemon's profiles, or `pqvpn up`'s one): opened at first use, adopting what a crashed run
/// left.
#[derive(Clone, Default)]
pub(crate) struct SharedFirewall(Arc<std::sync::Mutex<Option<Firewall>>>);

impl SharedFirewall {
    /// Runs `f` on the firewall, opening it first if needed.
    pub(crate) fn with<R>(
        &self,
        f: impl FnOnce(&mut Firewall) -> Result<R, platform::Error>,
    ) -> Result<R, String> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| "internal error: the firewall lock is poisoned".to_owned())?;
        let firewall = match guard.as_mut() {
            Some(firewall) => firewall,
            None => guard.insert(
                Firewall::open(&state_dir()).map_err(|e| platform::DisplayChain(&e).to_string())?,
            ),
        };
        f(firewall).map_err(|e| platform::DisplayChain(&e).to_string())
    }

    /// [`with`](Self::with) on a blocking thread: a netlink transaction may wait seconds for
    /// the kernel, and the daemon's other tunnels must not wait with it.
    pub(crate) async fn with_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Firewall) -> Result<R, platform::Error> + Send + 'static,
    ) -> Result<R, String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.with(f))
            .await
            .map_err(|e| format!("internal error: the firewall task failed: {e}"))?
    }
}

/// Creates the TUN device with the virtual addresses and installs routes and DNS; restores
/// everything on teardown. Holds the profile's kill switch from the connect to the
/// disconnect ([`DeviceFactory::block`]).
pub(crate) struct TunFactory {
    interface: Option<String>,
    mtu: u16,
    full_tunnel: bool,
    block_lan: bool,
    /// The gateway's IKE port; with NAT-T's 4500, the only UDP that bypasses a full tunnel.
    ike_port: u16,
    routes: Vec<(std::net::IpAddr, u8)>,
    dns: bool,
    tun: Option<Arc<Tun>>,
    applied: Option<Applied>,
    /// What the device and routes were made for: a reconnect that gets the same keeps them.
    installed: Option<(std::net::SocketAddr, ConfigReceived)>,
    /// The profile's name: its policy's key in the firewall.
    key: String,
    /// `network.kill_switch` resolved for this profile.
    kill_switch: bool,
    allow_lan: bool,
    firewall: SharedFirewall,
    /// The policy installed now (`block` to `unblock`), or adopted from a crashed run.
    policy: Option<Policy>,
    /// Whether a device was ever created (the tunnel came up).
    came_up: bool,
    /// The DNS servers the gateway pushed and this factory installed: the gateway lookup
    /// must not ask them ([`UpConnector::avoid`]).
    pushed_dns: SharedDns,
}

/// DNS servers shared between a profile's factory (which installs them) and its connector.
pub(crate) type SharedDns = Arc<std::sync::Mutex<Vec<std::net::IpAddr>>>;

impl TunFactory {
    /// The factory of `profile`'s device, routes, DNS and kill switch; nothing is created yet.
    pub(crate) fn new(profile: &Profile, firewall: SharedFirewall) -> Self {
        Self::of(&profile.name, &profile.spec, firewall)
    }

    /// The same from the checked profile alone.
    pub(crate) fn of(name: &str, spec: &ClientProfile, firewall: SharedFirewall) -> Self {
        Self {
            interface: spec.network.interface.clone(),
            mtu: spec.network.mtu,
            full_tunnel: spec.network.full_tunnel,
            block_lan: spec.network.block_lan,
            ike_port: spec.gateway.port,
            routes: spec
                .network
                .routes
                .iter()
                .map(|p| (p.addr, p.len))
                .collect(),
            dns: spec.network.dns,
            tun: None,
            applied: None,
            installed: None,
            key: name.to_owned(),
            kill_switch: spec.network.kill_switch_on(),
            allow_lan: spec.network.allow_lan,
            firewall,
            policy: None,
            came_up: false,
            pushed_dns: SharedDns::default(),
        }
    }

    /// The pushed DNS servers this factory installs, for the connector's lookups.
    pub(crate) fn pushed_dns(&self) -> SharedDns {
        self.pushed_dns.clone()
    }

    /// Takes over `policy`, which a crashed run of this profile left installed: it is this
    /// factory's to replace, and to lift on [`unblock`](DeviceFactory::unblock).
    pub(crate) fn adopt(&mut self, policy: Policy) {
        self.policy = Some(policy);
    }

    /// Whether the tunnel came up (a device was created) at least once.
    pub(crate) fn came_up(&self) -> bool {
        self.came_up
    }

    /// Whether the policy it holds blocks traffic outside the tunnel (a kill switch, not only
    /// a DNS lock).
    pub(crate) fn blocking(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| p.block)
    }

    /// Installs `policy` as this profile's. A policy that needs no rule of its own (no kill
    /// switch, no pushed DNS) cannot fail the tunnel: it only lets the tunnel through another
    /// profile's kill switch.
    /// Returns whether the policy blocks traffic outside the tunnel.
    async fn install(&mut self, policy: Policy) -> Result<bool, DriverError> {
        let needs_rules = policy.needs_rules();
        let blocks = policy.block;
        let (key, wanted) = (self.key.clone(), policy.clone());
        match self
            .firewall
            .with_blocking(move |firewall| firewall.set(&key, wanted))
            .await
        {
            Ok(()) => {
                self.policy = Some(policy);
                Ok(blocks)
            }
            Err(e) if !needs_rules => {
                tracing::debug!(error = %e, "no firewall policy for a tunnel without kill switch");
                Ok(false)
            }
            Err(e) => Err(DriverError::Device(e)),
        }
    }
}

impl DeviceFactory for TunFactory {
    type Device = TunDevice;

    async fn create(&mut self, up: &TunnelUp) -> Result<TunDevice, DriverError> {
        let wanted = (up.gateway, up.config.clone());
        if let Some(tun) = self
            .tun
            .as_ref()
            .filter(|_| self.installed.as_ref() == Some(&wanted))
        {
            return Ok(TunDevice(tun.clone()));
        }
        // Another address, gateway or DNS after a reconnect: configure afresh.
        self.teardown().await;
        let tun = Tun::create(&TunConfig {
            name: self.interface.clone(),
            mtu: self.mtu,
            addresses: up.config.virtual_ips.clone(),
        })
        .map_err(|e| DriverError::Device(platform::DisplayChain(&e).to_string()))?;
        let tun = Arc::new(tun);
        // Pushed subnets are there only with `accept_pushed_routes` (the core drops them
        // otherwise); routes covering the gateway are refused by `platform::apply`.
        let mut routes = self.routes.clone();
        routes.extend(up.config.subnets.iter().copied());
        // A split tunnel reaches the pushed DNS servers through the tunnel too: their queries
        // must not leave in clear (and the kill switch's DNS lock drops them outside it).
        if !self.full_tunnel && self.dns {
            routes.extend(
                up.config
                    .dns
                    .iter()
                    .filter(|&&dns| dns != up.gateway.ip())
                    .map(|&dns| (dns, if dns.is_ipv4() { 32 } else { 128 })),
            );
        }
        let config = NetworkConfig {
            tun_name: tun.name().to_owned(),
            tun_index: tun.index(),
            gateway: up.gateway,
            ike_port: self.ike_port,
            nat_t_port: NAT_T_PORT,
            full_tunnel: self.full_tunnel,
            block_lan: self.block_lan,
            routes,
            dns_servers: if self.dns {
                up.config.dns.clone()
            } else {
                Vec::new()
            },
            dns_domains: Vec::new(),
            dns_backend: if self.dns {
                DnsBackend::Auto
            } else {
                DnsBackend::None
            },
        };
        if let Ok(mut pushed) = self.pushed_dns.lock() {
            pushed.clone_from(&config.dns_servers);
        }
        let applied = platform::apply(&config, &state_dir())
            .map_err(|e| DriverError::Device(platform::DisplayChain(&e).to_string()))?;
        self.applied = Some(applied);
        self.tun = Some(tun.clone());
        self.installed = Some(wanted);
        // The tunnel interface and its DNS join the policy `block` installed.
        let mut policy = self
            .policy
            .clone()
            .unwrap_or_else(|| self.policy_for(Some(up.gateway)));
        policy.tun_name = Some(tun.name().to_owned());
        policy.dns = if self.dns {
            up.config.dns.clone()
        } else {
            Vec::new()
        };
        self.install(policy).await?;
        self.came_up = true;
        Ok(TunDevice(tun))
    }

    async fn block(&mut self, gateway: Option<std::net::SocketAddr>) -> Result<bool, DriverError> {
        let mut policy = self.policy_for(gateway);
        // While reconnecting the tunnel interface, DNS lock and known gateways stay as they
        // were (a gateway that moved is let through at both addresses until connected).
        if let Some(current) = &self.policy {
            policy.tun_name.clone_from(&current.tun_name);
            policy.dns.clone_from(&current.dns);
            for known in &current.gateways {
                if !policy.gateways.contains(known) {
                    policy.gateways.push(*known);
                }
            }
        }
        self.install(policy).await
    }

    async fn unblock(&mut self) -> Result<(), DriverError> {
        if self.policy.is_none() {
            return Ok(());
        }
        let key = self.key.clone();
        self.firewall
            .with_blocking(move |firewall| firewall.remove(&key))
            .await
            .map_err(DriverError::Device)?;
        self.policy = None;
        Ok(())
    }

    async fn teardown(&mut self) {
        if let Some(applied) = self.applied.take()
            && let Err(e) = applied.restore()
        {
            tracing::error!(
                "Failed to restore the network: {}",
                platform::DisplayChain(&e)
            );
        }
        self.tun = None;
        self.installed = None;
        if let Ok(mut pushed) = self.pushed_dns.lock() {
            pushed.clear();
        }
    }
}

impl TunFactory {
    /// The policy of a session to `gateway` (none yet: its name is being resolved): its IKE
    /// and NAT-T ports, the profile's switches.
    fn policy_for(&self, gateway: Option<std::net::SocketAddr>) -> Policy {
        let mut ports = vec![self.ike_port, NAT_T_PORT];
        ports.dedup();
        Policy {
            tun_name: None,
            gateways: gateway.map(|g| g.ip().to_canonical()).into_iter().collect(),
            ports,
            block: self.kill_switch,
            allow_lan: self.allow_lan,
            dns: Vec::new(),
        }
    }
}

/// `pqvpn recover [--unblock]`: undoes the routes and DNS of runs that crashed, and reports
/// (or with `unblock` lifts) the kill switch one left.
pub(crate) fn recover(unblock: bool) -> Result<(), String> {
    require_root("pqvpn recover")?;
    let dir = state_dir();
    for undone in platform::recover(&dir).map_err(|e| platform::DisplayChain(&e).to_string())? {
        eprintln!("pqvpn: undid the routes and DNS a crashed run left on {undone}");
    }
    let stale =
        platform::firewall::stale(&dir).map_err(|e| platform::DisplayChain(&e).to_string())?;
    let names = stale.keys().cloned().collect::<Vec<_>>().join(", ");
    if unblock {
        let lifted = platform::firewall::unblock(&dir)
            .map_err(|e| platform::DisplayChain(&e).to_string())?;
        if lifted {
            eprintln!(
                "pqvpn: lifted the kill switch left by {names}; traffic flows in clear again"
            );
        } else {
            eprintln!("pqvpn: no kill switch was left up");
        }
    } else if stale.values().any(|p| p.block) {
        eprintln!(
            "pqvpn: the kill switch of {names} still blocks all traffic outside the tunnel \
             (fail closed); connect again, or lift it with `pqvpn recover --unblock`"
        );
    }
    Ok(())
}

/// Turns SIGINT and SIGTERM into `shutdown`.
pub(crate) fn on_signals(shutdown: watch::Sender<bool>) -> Result<(), String> {
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        let _ = shutdown.send(true);
    });
    Ok(())
}

pub(crate) fn require_root(what: &str) -> Result<(), String> {
    // /proc/self/status avoids unsafe libc calls in the binary.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if euid == "0" {
        Ok(())
    } else {
        Err(format!(
            "{what} needs root (CAP_NET_ADMIN for the TUN device, routes and DNS); run it with sudo"
        ))
    }
}

/// Where a session's PSK comes from.
pub(crate) enum SessionPsk {
    /// Read once at start (`pqvpn up`).
    Fixed(SecretBytes),
    /// Read from the profile, its file or the store at each connect (the daemon).
    Stored(Arc<StoredProfile>),
    /// The credential of the user who connected it (`user_credentials = true`).
    User(Arc<std::sync::Mutex<Option<(u32, SecretBytes)>>>),
}

/// Each session's options: the gateway's name resolved again (its address may have changed),
/// the PSK as [`SessionPsk`] says.
pub(crate) struct UpConnector {
    pub(crate) spec: ClientProfile,
    pub(crate) psk: SessionPsk,
    /// The address the gateway's name had last: used when it cannot be resolved (under the
    /// kill switch DNS only works through the tunnel, which is down while reconnecting).
    pub(crate) last_gateway: Option<std::net::SocketAddr>,
    /// The tunnel's pushed DNS servers (its factory's [`TunFactory::pushed_dns`]), which the
    /// gateway lookup skips.
    pub(crate) avoid: SharedDns,
}

impl UpConnector {
    async fn psk(&self) -> Result<SecretBytes, SessionEnd> {
        match &self.psk {
            SessionPsk::Fixed(psk) => Ok(psk.clone()),
            // A missing or unreadable PSK is not fixed by retrying: `error` with the reason.
            SessionPsk::Stored(profile) => {
                let profile = profile.clone();
                tokio::task::spawn_blocking(move || profile.psk(Keyring::os))
                    .await
                    .map_err(|e| SessionEnd::Refused(e.to_string()))?
                    .map_err(SessionEnd::Refused)
            }
            SessionPsk::User(slot) => slot
                .lock()
                .ok()
                .and_then(|s| s.as_ref().map(|(_, psk)| psk.clone()))
                .ok_or_else(|| {
                    SessionEnd::Refused(
                        "no user credential for this profile; store yours with `pqvpn credential \
                     set NAME`"
                            .into(),
                    )
                }),
        }
    }
}

impl Connector for UpConnector {
    async fn options(&mut self, mode: Mode) -> Result<ClientOptions, SessionEnd> {
        let psk = self.psk().await?;
        let endpoint = self.spec.gateway.clone();
        let avoid = self.avoid.lock().map(|a| a.clone()).unwrap_or_default();
        let resolved =
            tokio::task::spawn_blocking(move || crate::profile::resolve_gateway(&endpoint, &avoid))
                .await
                .map_err(|e| SessionEnd::Lost(e.to_string()))?;
        let gateway = match (resolved, self.last_gateway) {
            (Ok(gateway), _) => gateway,
            (Err(e), Some(last)) => {
                tracing::info!(error = %e, %last, "using the gateway's last known address");
                last
            }
            (Err(e), None) => return Err(SessionEnd::Lost(e)),
        };
        self.last_gateway = Some(gateway);
        let mut options = ClientOptions::new(self.spec.initiator_config_in(mode, psk), gateway);
        // The full tunnel's policy rules need the mark; in a split tunnel it changes nothing
        // (no rules match it) but keeps the socket's packets identifiable, as in a full tunnel.
        options.fwmark = Some(platform::FWMARK);
        Ok(options)
    }
}

/// `pqvpn up PROFILE.toml`: the foreground tunnel, reconnecting when it is lost unless
/// `reconnect` is false (then it ends, non-zero, when the tunnel does).
pub(crate) async fn up(path: &Path, reconnect: bool) -> Result<(), String> {
    let profile = Profile::load(path)?;
    require_root("pqvpn up")?;
    for undone in
        platform::recover(&state_dir()).map_err(|e| platform::DisplayChain(&e).to_string())?
    {
        eprintln!("pqvpn: undid leftovers of a crashed run: {undone}");
    }
    let (status_tx, status_rx) = watch::channel(Status::default());
    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
    on_signals(shutdown_tx.clone())?;
    if profile.name == "control" {
        return Err(
            "a profile named control would take the daemon's socket (/run/pqvpn/control.sock); \
             rename the file"
                .into(),
        );
    }
    // The control socket takes the daemon's commands; `disconnect` (`pqvpn down`) and the
    // signals end the run.
    let (commands, mut commands_rx) = mpsc::channel(8);
    let socket = control::socket_path(Path::new(control::RUN_DIR), &profile.name);
    let server = crate::daemon::serve_one(
        &socket,
        crate::daemon::Tunnel {
            name: profile.name.clone(),
            gateway: profile.spec.gateway.to_string(),
            floor: profile.spec.mode,
            commands: commands.clone(),
            status: status_rx.clone(),
            per_user: None,
            restartable: reconnect,
        },
    )
    .map_err(|e| {
        if e.starts_with("something already answers") {
            format!("a tunnel named {} is already running ({e})", profile.name)
        } else {
            e
        }
    })?;
    // A kill switch a crashed run of this profile left stays up until this run's replaces it;
    // its gateway address lets the first connect work without DNS. Other stale policies go.
    let firewall = SharedFirewall::default();
    let stale = firewall
        .with(|firewall| {
            let ours = firewall.policy(&profile.name).cloned();
            firewall.retain(|key| key == profile.name)?;
            Ok(ours)
        })
        .unwrap_or_else(|e| {
            tracing::info!("kill switch: {e}");
            None
        });
    if stale.as_ref().is_some_and(|p| p.block) {
        eprintln!("pqvpn: the kill switch of an earlier run is still up; it stays until connected");
    }
    let last_gateway = stale
        .as_ref()
        .and_then(|p| p.gateways.first().copied())
        .map(|ip| std::net::SocketAddr::new(ip, profile.spec.gateway.port));
    let mut factory = TunFactory::new(&profile, firewall);
    let resumed = stale.is_some();
    if let Some(stale) = stale {
        factory.adopt(stale);
    }
    let reporter = tokio::spawn(report(status_rx.clone()));
    let provider = Arc::new(RustCrypto::new());
    let result = if reconnect {
        // A run that crashed left its block: resume under it (a failure keeps it).
        let first = if resumed {
            Command::Resume { mode: None }
        } else {
            Command::Connect { mode: None }
        };
        let _ = commands.send(first).await;
        tokio::spawn(pqvpn_core::driver::network::watch_network(
            status_rx.clone(),
            commands.downgrade(),
        ));
        // SIGINT and SIGTERM disconnect; the supervisor then returns.
        tokio::spawn(async move {
            if shutdown_rx.wait_for(|stop| *stop).await.is_ok() {
                let _ = commands.send(Command::Disconnect).await;
            }
        });
        let connector = UpConnector {
            spec: profile.spec.clone(),
            psk: SessionPsk::Fixed(profile.psk.clone()),
            last_gateway,
            avoid: factory.pushed_dns(),
        };
        run_supervisor(
            profile.spec.mode,
            Lifetime::UntilStopped,
            connector,
            provider,
            factory,
            &status_tx,
            commands_rx,
        )
        .await
    } else {
        drop(commands);
        // One session: a disconnect ends it; a connect (a PQ-only switch) cannot restart it.
        let stopped = shutdown_rx.clone();
        tokio::spawn(async move {
            while let Some(command) = commands_rx.recv().await {
                if matches!(command, Command::Disconnect) {
                    let _ = shutdown_tx.send(true);
                }
            }
        });
        let mut options = ClientOptions::new(profile.initiator.clone(), profile.gateway);
        options.fwmark = Some(platform::FWMARK);
        once(
            options,
            provider,
            &mut factory,
            &status_tx,
            (shutdown_rx, &stopped),
            resumed,
        )
        .await
    };
    reporter.abort();
    server.abort();
    let _ = std::fs::remove_file(&socket);
    result
}

/// `pqvpn up --no-reconnect`'s one session under the kill switch. The block is lifted when the
/// user ends the run, or when the tunnel never came up (and was not resumed under a crashed
/// run's block); a tunnel lost after it was up leaves it in place (fail closed: nothing would
/// reconnect it, and traffic must not go out in clear because a script chose not to retry).
/// `stop` is the shutdown signal and a view of it, to tell the user's stop from a loss.
async fn once(
    options: ClientOptions,
    provider: Arc<RustCrypto>,
    factory: &mut TunFactory,
    status: &watch::Sender<Status>,
    stop: (watch::Receiver<bool>, &watch::Receiver<bool>),
    resumed: bool,
) -> Result<(), String> {
    let (shutdown, stopped) = stop;
    let gateway = options.gateway;
    let blocks = factory
        .block(Some(gateway))
        .await
        .map_err(|e| format!("the kill switch could not be installed: {e}"))?;
    status.send_modify(|s| s.kill_switch = blocks);
    let result = run_client(options, provider, &mut *factory, status, shutdown)
        .await
        .map_err(|e| e.to_string());
    let by_user = *stopped.borrow();
    let keep = !by_user && (factory.came_up() || resumed) && factory.blocking();
    match result {
        Err(e) if keep => Err(format!(
            "{e}; the kill switch stays up (fail closed): connect again, or lift it with \
             `pqvpn recover --unblock`"
        )),
        result => {
            factory
                .unblock()
                .await
                .map_err(|e| format!("the kill switch could not be lifted: {e}"))?;
            status.send_modify(|s| s.kill_switch = false);
            result
        }
    }
}

/// Reports the tunnel's progress on stderr: each connect, with its algorithms, and each
/// reconnect attempt with its reason.
async fn report(mut status: watch::Receiver<Status>) {
    let mut last = (State::Disconnected, 0);
    while status.changed().await.is_ok() {
        let s = status.borrow_and_update().clone();
        if (s.state, s.attempt) == last {
            continue;
        }
        last = (s.state, s.attempt);
        match s.state {
            State::Connected if !s.ike.ke.is_empty() => {
                let mut ke = s.ike.ke.clone();
                for a in &s.ike.addke {
                    ke.push_str(" + ");
                    ke.push_str(a);
                }
                let safe = if s.quantum_safe {
                    "quantum-safe"
                } else {
                    "NOT quantum-safe"
                };
                eprintln!(
                    "pqvpn: connected to {} ({ke}, {}; {safe}), address {}",
                    s.gateway,
                    s.ike.encr,
                    s.virtual_ips.join(", ")
                );
            }
            State::Reconnecting => eprintln!(
                "pqvpn: reconnecting (attempt {}): {}",
                s.attempt,
                s.last_error.as_deref().unwrap_or("the tunnel was lost")
            ),
            _ => {}
        }
    }
}

/// `pqvpn gateway GATEWAY.toml`.
pub(crate) async fn gateway(path: &Path) -> Result<(), String> {
    let profile = GatewayProfile::load(path)?;
    require_root("pqvpn gateway")?;
    let tun = Tun::create(&TunConfig {
        name: profile.interface.clone(),
        mtu: profile.mtu,
        addresses: vec![profile.address],
    })
    .map_err(|e| platform::DisplayChain(&e).to_string())?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    on_signals(shutdown_tx)?;
    let (clients_tx, _clients_rx) = watch::channel(GatewayStatus::default());
    let options = GatewayOptions::new(profile.responder, profile.listen);
    eprintln!(
        "pqvpn: gateway on {} (IKE 500, NAT-T 4500), tunnel address {}/{}",
        profile.listen, profile.address.0, profile.address.1
    );
    run_gateway(
        options,
        Arc::new(RustCrypto::new()),
        TunDevice(Arc::new(tun)),
        &clients_tx,
        shutdown_rx,
    )
    .await
    .map_err(|e| e.to_string())
}
