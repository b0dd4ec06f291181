//! The OS facade of the driver: the TUN device, routes and DNS, with every change recorded so it
//! can be undone.
//!
//! | item | what |
//! | --- | --- |
//! | [`Tun`] | an async TUN device (one IP packet per `recv`/`send`, no packet-info header) |
//! | [`apply`] | installs routes (full or split tunnel) and DNS for a TUN, returns [`Applied`] |
//! | [`Applied::restore`] | undoes everything `apply` changed, in reverse order |
//! | [`recover`] | undoes what a stale state file from a crashed run lists |
//!
//! Every change [`apply`] makes is first written to `STATE_DIR/<tun_name>.netns-<inode>.json`
//! (one file per TUN name and network namespace; fsync'd, mode 0600), then made. A crash therefore leaves a file that [`recover`] reads at the next start to
//! put the routing tables, rules and DNS back; undoing tolerates things that are already gone.
//!
//! Only Linux has an implementation (netlink for addresses, routes and rules; systemd-resolved
//! over D-Bus or `/etc/resolv.conf` for DNS). On other systems every entry point returns
//! [`Error::Unsupported`]; [`Tun::from_fd`] works on every Unix, since there the OS (Android
//! `VpnService`, iOS `NEPacketTunnelProvider`) owns routes and DNS.
//!
//! ## Full tunnel without a routing loop
//!
//! As in `wg-quick`: a default route through the TUN lives in its own table ([`ROUTE_TABLE`]),
//! and policy rules send everything there except packets carrying [`FWMARK`], which the driver
//! sets on its UDP sockets (`SO_MARK`), so ESP and IKE keep using the main table:
//!
//! ```text
//! 32759: from all to GATEWAY ipproto udp dport 500 lookup main    (reverse-path check, below)
//! 32759: from all to GATEWAY ipproto udp dport 4500 lookup main
//! 32760: from all lookup main suppress_prefixlength 0    (LAN and more specific routes win;
//!                                                         left out with `block_lan`)
//! 32761: not from all fwmark 0xcab0 lookup 51888          (table 51888: default dev TUN)
//! ```
//!
//! | rule | why |
//! | --- | --- |
//! | 32759, per gateway port ([`NetworkConfig::ike_port`], [`NetworkConfig::nat_t_port`]) | strict reverse-path filtering (`rp_filter=1`) checks the gateway's unmarked replies with a lookup of the reversed flow; without the rule it would point into the TUN. Since the rule names ports, the kernel dissects the flow and swaps the ports for that lookup (`fib4_rules_early_flow_dissect`), so replies *from* 500/4500 match it |
//! | 32760, unless [`NetworkConfig::block_lan`] | routes of the main table more specific than a default route (the LAN, a VPN-unaware static route) win over the tunnel |
//! | 32761 | everything unmarked goes to table 51888, whose default route is the TUN |
//!
//! Only IKE and ESP (UDP to the gateway's two ports) leave outside the tunnel; TCP, ICMP and
//! other UDP to the gateway's address go through it. A wider rule (`to GATEWAY`, any protocol)
//! would let whoever controls the gateway name's DNS answer pull arbitrary traffic out of the
//! tunnel (TunnelCrack ServerIP, CVE-2023-36673). Rule 32760 is the LocalNet risk
//! (CVE-2023-36672): a hostile network's DHCP can hand out a "LAN" such as `0.0.0.0/1`;
//! `block_lan` closes it at the price of reaching nothing on the LAN.
//!
//! The same rules (except the gateway rules, which exist only for the gateway's family) and
//! table are installed for IPv4 and IPv6, so a v4-only tunnel does not leak IPv6.
//!
//! ## Split tunnel
//!
//! Only the configured networks are routed (main table, through the TUN); no policy rules.
//! A network that covers the gateway's address is refused with [`Error::InvalidConfig`]: the
//! tunnel's own ESP and IKE packets would be routed into it (a loop, and TunnelCrack's
//! ServerIP case for a gateway-pushed route).
//!
//! All functions here block (netlink, D-Bus and file I/O); from async code call them through
//! `tokio::task::spawn_blocking`. [`Tun::create`] and [`Tun::from_fd`] must run inside a tokio
//! runtime.

#![cfg_attr(
    not(target_os = "linux"),
    expect(
        dead_code,
        reason = "the state machinery is only driven by the Linux implementation"
    )
)]

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub mod firewall;
pub mod monitor;
pub mod resolve;
mod state;
mod sys;

#[cfg(target_os = "linux")]
mod dns;
#[cfg(target_os = "linux")]
mod netlink;
#[cfg(target_os = "linux")]
mod nftables;

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod imp;
#[cfg(not(target_os = "linux"))]
#[path = "fallback.rs"]
mod imp;

#[cfg(test)]
mod tests;

/// The firewall mark the driver sets (`SO_MARK`) on its UDP sockets so that ESP and IKE packets
/// bypass the tunnel's policy routing in a full tunnel.
pub const FWMARK: u32 = 0xcab0;

/// The routing table that holds the full tunnel's default routes.
pub const ROUTE_TABLE: u32 = 51888;

/// Priority of the rules that send UDP to the gateway's IKE and NAT-T ports to the main table.
pub const RULE_PRIORITY_GATEWAY: u32 = 32759;
/// Priority of the `lookup main suppress_prefixlength 0` rule.
pub const RULE_PRIORITY_SUPPRESS: u32 = 32760;
/// Priority of the `not fwmark FWMARK lookup ROUTE_TABLE` rule.
pub const RULE_PRIORITY_TUNNEL: u32 = 32761;

/// What can go wrong while creating a TUN device or changing routes and DNS.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This operation has no implementation on this operating system.
    #[error("Failed to {0}: not supported on this platform")]
    Unsupported(&'static str),
    /// The configuration cannot be applied as given.
    #[error("Failed to apply the network configuration: {0}")]
    InvalidConfig(String),
    /// The TUN device could not be created.
    #[error("Failed to create the TUN device")]
    CreateTun(#[source] io::Error),
    /// The OS-provided TUN file descriptor could not be adopted.
    #[error("Failed to adopt the TUN file descriptor")]
    AdoptTun(#[source] io::Error),
    /// The TUN device's name or index could not be read.
    #[error("Failed to query the TUN device")]
    QueryTun(#[source] io::Error),
    /// No netlink socket could be opened.
    #[error("Failed to open a netlink socket")]
    Netlink(#[source] io::Error),
    /// An address could not be added to the TUN device.
    #[error("Failed to add address {address}/{prefix} to the TUN device")]
    AddAddress {
        /// The address.
        address: IpAddr,
        /// Its prefix length.
        prefix: u8,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The TUN link could not be brought up.
    #[error("Failed to bring the TUN link up")]
    LinkUp(#[source] io::Error),
    /// A route could not be added.
    #[error("Failed to add the route {0}")]
    AddRoute(String, #[source] io::Error),
    /// A route could not be removed.
    #[error("Failed to remove the route {0}")]
    DeleteRoute(String, #[source] io::Error),
    /// A policy routing rule could not be added.
    #[error("Failed to add the routing rule {0}")]
    AddRule(String, #[source] io::Error),
    /// A policy routing rule could not be removed.
    #[error("Failed to remove the routing rule {0}")]
    DeleteRule(String, #[source] io::Error),
    /// systemd-resolved refused or could not be reached.
    #[error("Failed to {0} through systemd-resolved")]
    Resolved(
        &'static str,
        #[source] Box<dyn std::error::Error + Send + Sync + 'static>,
    ),
    /// A resolv.conf file (or its backup) could not be read or written.
    #[error("Failed to {what} {}", path.display())]
    ResolvConf {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The state file or its directory could not be read or written.
    #[error("Failed to {what} {}", path.display())]
    StateFile {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The state file is not valid.
    #[error("Failed to parse the state file {}", path.display())]
    StateParse {
        /// The file.
        path: PathBuf,
        /// The parser error.
        #[source]
        source: serde_json::Error,
    },
    /// The kernel refused to install or remove the kill switch's firewall table.
    #[error("Failed to {0} the kill switch's firewall table (nftables)")]
    Firewall(&'static str, #[source] io::Error),
    /// Another running pqvpn process holds the kill switch of this network namespace.
    #[error(
        "the kill switch of this network namespace is held by another pqvpn process (pid {pid}); \
         connect through it (the daemon) or stop it first"
    )]
    FirewallHeld {
        /// That process.
        pid: u32,
    },
    /// Some changes could not be undone; the first failure is the source.
    #[error("Failed to undo {failed} of {total} network changes")]
    Restore {
        /// How many changes failed to be undone.
        failed: usize,
        /// How many changes there were.
        total: usize,
        /// The first failure.
        #[source]
        first: Box<Self>,
    },
}

/// How to create a TUN device with [`Tun::create`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name; the kernel picks one (`tunN`) when `None`.
    pub name: Option<String>,
    /// Link MTU; leave room for the ESP, UDP and outer IP overhead.
    pub mtu: u16,
    /// Addresses (virtual IPs from the config payload) with their prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
}

/// An async TUN device: each [`recv`](Self::recv) returns one IP packet, each
/// [`send`](Self::send) writes one (no packet-information header).
///
/// The device disappears, with its addresses and the routes through it, when this value is
/// dropped (unless the OS owns it, as with [`from_fd`](Self::from_fd) on mobile systems).
pub struct Tun {
    device: tun_rs::AsyncDevice,
    name: String,
    index: u32,
    mtu: u16,
}

impl fmt::Debug for Tun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

impl Tun {
    /// Creates a TUN device and brings it up with the configured addresses and MTU.
    ///
    /// IPv6 addresses are added without duplicate address detection and the device gets no
    /// link-local address (so the kernel sends no router solicitations into the tunnel).
    /// Needs `CAP_NET_ADMIN`, `/dev/net/tun` and a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::CreateTun`], [`Error::AddAddress`] or [`Error::LinkUp`] when the OS refuses;
    /// [`Error::Unsupported`] on systems other than Linux.
    pub fn create(config: &TunConfig) -> Result<Self, Error> {
        imp::create_tun(config)
    }

    /// Adopts a TUN file descriptor the OS opened for us (Android `VpnService.establish()`, the
    /// iOS utun fd), taking ownership of it; `mtu` is what the OS configured.
    ///
    /// The descriptor must be a TUN device without packet-information framing and without
    /// `IFF_VNET_HDR`. Needs a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::AdoptTun`] when the descriptor is not a usable TUN device.
    #[cfg(unix)]
    pub fn from_fd(fd: std::os::fd::OwnedFd, mtu: u16) -> Result<Self, Error> {
        let device = sys::async_device_from_fd(fd).map_err(Error::AdoptTun)?;
        let name = device.name().map_err(Error::AdoptTun)?;
        let index = device.if_index().map_err(Error::AdoptTun)?;
        Ok(Self {
            device,
            name,
            index,
            mtu,
        })
    }

    fn from_parts(device: tun_rs::AsyncDevice, name: String, index: u32, mtu: u16) -> Self {
        Self {
            device,
            name,
            index,
            mtu,
        }
    }

    /// Receives one IP packet into `buf` and returns its length.
    ///
    /// A packet longer than `buf` is truncated, so `buf` should hold [`mtu`](Self::mtu) bytes.
    ///
    /// # Errors
    ///
    /// The OS error of the read.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.device.recv(buf).await
    }

    /// Sends one IP packet and returns how many bytes were written.
    ///
    /// # Errors
    ///
    /// The OS error of the write (`EINVAL` for something that is not an IP packet).
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.device.send(packet).await
    }

    /// Returns the interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the interface index (ifindex).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Returns the link MTU.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }
}

/// Where DNS settings go; [`DnsBackend::Auto`] is what a product wants.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DnsBackend {
    /// systemd-resolved when it runs, else `/etc/resolv.conf`.
    #[default]
    Auto,
    /// systemd-resolved over D-Bus, failing if it does not run.
    Resolved,
    /// A resolv.conf-format file at this path, backed up and restored byte for byte (tests use
    /// a temporary path here).
    ResolvConf(PathBuf),
    /// Leave DNS alone.
    None,
}

/// The routes and DNS to install for a tunnel with [`apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Name of the TUN device ([`Tun::name`]); also names the state file.
    pub tun_name: String,
    /// Index of the TUN device ([`Tun::index`]).
    pub tun_index: u32,
    /// The outer IKE/ESP peer (its port is not used; see `ike_port` and `nat_t_port`).
    pub gateway: SocketAddr,
    /// The gateway's IKE port (500, or the port the profile names): in a full tunnel, UDP to
    /// it bypasses the tunnel.
    pub ike_port: u16,
    /// The gateway's NAT-T port ([`NAT_T_PORT`](crate::ike::NAT_T_PORT)), which carries ESP and
    /// IKE once UDP-encapsulated: in a full tunnel, UDP to it bypasses the tunnel.
    pub nat_t_port: u16,
    /// Send all traffic (IPv4 and IPv6) through the tunnel; `routes` are then not needed.
    pub full_tunnel: bool,
    /// Full tunnel only: leave out the `suppress_prefixlength 0` rules, so that no route of
    /// the main table (the LAN, or a hostile DHCP server's `0.0.0.0/1`) takes traffic out of
    /// the tunnel (TunnelCrack LocalNet). The LAN is then unreachable.
    pub block_lan: bool,
    /// Split-tunnel subnets routed through the TUN (ignored for a full tunnel).
    pub routes: Vec<(IpAddr, u8)>,
    /// DNS servers pushed by the gateway; DNS is left alone when empty.
    pub dns_servers: Vec<IpAddr>,
    /// Search domains pushed by the gateway.
    pub dns_domains: Vec<String>,
    /// Where DNS settings go.
    pub dns_backend: DnsBackend,
}

/// The changes [`apply`] made; [`restore`](Self::restore) (or dropping it) undoes them.
#[must_use = "dropping Applied restores the routes and DNS at once"]
pub struct Applied {
    state: Option<state::StateFile>,
}

impl fmt::Debug for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Applied")
            .field("state", &self.state)
            .finish()
    }
}

impl Applied {
    /// Undoes every change, newest first, then deletes the state file.
    ///
    /// Undoing continues past failures; the state file is deleted only when everything was
    /// undone, so that [`recover`] can try again.
    ///
    /// # Errors
    ///
    /// [`Error::Restore`] with the first failure when some change could not be undone.
    pub fn restore(mut self) -> Result<(), Error> {
        match self.state.take() {
            Some(state) => imp::restore(state),
            None => Ok(()),
        }
    }

    /// Returns the path of the state file that records the changes.
    pub fn state_path(&self) -> Option<&Path> {
        self.state.as_ref().map(state::StateFile::path)
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        if let Some(state) = self.state.take()
            && let Err(error) = imp::restore(state)
        {
            tracing::warn!(error = %DisplayChain(&error), "restoring the network configuration failed");
        }
    }
}

/// Installs the routes and DNS of `config`, recording each change in
/// `state_dir/<tun_name>.netns-<inode>.json` before making it.
///
/// A stale state file for the same TUN name in this network namespace is [`recover`]ed first. When a step fails, the
/// changes made so far are undone before the error is returned.
///
/// # Errors
///
/// The error of the failing step ([`Error::AddRoute`], [`Error::AddRule`], [`Error::Resolved`],
/// [`Error::ResolvConf`], [`Error::StateFile`], ...); [`Error::Unsupported`] outside Linux.
pub fn apply(config: &NetworkConfig, state_dir: &Path) -> Result<Applied, Error> {
    imp::apply(config, state_dir).map(|state| Applied { state: Some(state) })
}

/// Undoes what every state file in `state_dir` lists (left behind by a run that crashed) and
/// deletes the files; returns the TUN names that were recovered. State files of tunnels whose
/// process still runs, or that were made in another network namespace, are left alone.
///
/// Idempotent: things that are already gone (deleted routes, a vanished TUN device) count as
/// undone, and a missing `state_dir` means nothing to do.
///
/// # Errors
///
/// [`Error::Restore`] when some change could not be undone (that state file is kept);
/// [`Error::StateFile`]/[`Error::StateParse`] when a state file cannot be read.
pub fn recover(state_dir: &Path) -> Result<Vec<String>, Error> {
    let mut recovered = Vec::new();
    let mut first_error = None;
    for path in state::StateFile::list(state_dir)? {
        let loaded = match state::StateFile::load(&path) {
            // Its owner (another namespace's tunnel) restored and removed it meanwhile.
            Err(Error::StateFile { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                continue;
            }
            loaded => loaded,
        };
        let result = loaded.and_then(|state| {
            if state.owner_alive() || state.other_netns() {
                return Ok(None);
            }
            let name = state.tun_name().to_owned();
            imp::restore(state).map(|()| Some(name))
        });
        match result {
            Ok(Some(name)) => recovered.push(name),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %DisplayChain(&error), "recovering a stale state file failed");
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(recovered),
    }
}

/// Displays an error with its `source()` chain: `outer: inner: innermost`.
#[derive(Debug)]
pub struct DisplayChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
