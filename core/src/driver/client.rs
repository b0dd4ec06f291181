//! The client tunnel task.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::DriverError;
use super::device::PacketDevice;
use super::socket::{SocketHook, bind_udp};
use super::status::{Algorithms, EspStatus, IkeStatus, State, Status};
use crate::crypto::CryptoProvider;
use crate::esp::ReplayProtection;
use crate::ike::{InitiatorConfig, Suite};
use crate::tunnel::{
    ClientTunnel, DownReason, EspOptions, TunnelEvent, TunnelResult, TunnelStats, TunnelUp,
};
/// How often counters are published.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Large enough for any UDP datagram.
const BUF_LEN: usize = 65_536 + 256;

/// What the client tunnel needs besides the IKE configuration.
#[derive(Clone)]
pub struct ClientOptions {
    /// The IKE SA's configuration.
    pub initiator: InitiatorConfig,
    /// The gateway's IKE address (port 500, or 4500 to start there).
    pub gateway: SocketAddr,
    /// Where to bind the UDP socket; the unspecified address and an ephemeral port by default.
    pub bind: Option<SocketAddr>,
    /// Anti-replay of the inbound ESP SA.
    pub esp_replay: ReplayProtection,
    /// `SO_MARK` of the UDP socket, matching the platform's policy routing.
    pub fwmark: Option<u32>,
    /// Android `protect()`.
    pub socket_hook: Option<SocketHook>,
    /// Each change: the machine woke up (or the process was frozen), so check the gateway
    /// now ([`ClientTunnel::probe`](crate::tunnel::ClientTunnel::probe)). The supervisor sets
    /// it.
    pub wake: Option<watch::Receiver<u64>>,
}

impl core::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

impl ClientOptions {
    /// Options for `initiator` against `gateway`, everything else at its default.
    pub fn new(initiator: InitiatorConfig, gateway: SocketAddr) -> Self {
        Self {
            initiator,
            gateway,
            bind: None,
            esp_replay: ReplayProtection::default(),
            fwmark: None,
            socket_hook: None,
            wake: None,
        }
    }
}

/// Creates the packet device once addresses are known, and undoes what it configured.
pub trait DeviceFactory: Send {
    /// The device.
    type Device: PacketDevice;
    /// Creates the device for a tunnel that just came up (TUN with the virtual addresses,
    /// routes, DNS).
    fn create(
        &mut self,
        up: &TunnelUp,
    ) -> impl Future<Output = Result<Self::Device, DriverError>> + Send;
    /// Restores what `create` changed. Called once when the tunnel ends, whatever the reason.
    ///
    /// Under the [supervisor](super::supervisor), `create` is called again for each session
    /// that comes up after a lost one, without `teardown` in between: the device and routes
    /// stay while it reconnects. It should then return the device it has when `up` asks for
    /// the same addresses, and reconfigure otherwise.
    fn teardown(&mut self) -> impl Future<Output = ()> + Send;

    /// Called by the [supervisor](super::supervisor) before each session starts (connecting
    /// and reconnecting): first with `None` (the gateway's name is being resolved), then with
    /// the gateway that session uses. From then until [`unblock`](Self::unblock) the
    /// platform's kill switch, if it has one, lets nothing leave but the tunnel, the
    /// driver's marked lookups of the gateway's name, and its IKE/ESP to the gateways given
    /// so far. An error keeps the session from starting (fail closed). Returns whether
    /// traffic outside the tunnel is now blocked (false: the profile has no kill switch).
    /// Does nothing by default.
    fn block(
        &mut self,
        gateway: Option<SocketAddr>,
    ) -> impl Future<Output = Result<bool, DriverError>> + Send {
        let _ = gateway;
        async { Ok(false) }
    }

    /// Lifts what [`block`](Self::block) installed: the user disconnected, or a first connect
    /// failed for good. Not called while reconnecting, nor on a failure after the tunnel was
    /// up (the block stays until the user acts). An error means traffic is still blocked;
    /// the supervisor tries again at its next event. Does nothing by default.
    fn unblock(&mut self) -> impl Future<Output = Result<(), DriverError>> + Send {
        async { Ok(()) }
    }
}

fn to_status_suite(status: &mut Status, suite: &Suite) {
    status.mode = suite.mode.as_str().into();
    status.quantum_safe = suite.quantum_safe;
    status.ike = IkeStatus {
        ke: suite.ke.display_name().into(),
        addke: suite
            .addke
            .iter()
            .map(|m| m.display_name().into())
            .collect(),
        encr: suite.encr.display_name().into(),
        prf: suite.prf.to_string(),
    };
    let esp_encr = status.algorithms.as_ref().and_then(|a| a.esp_encr);
    status.algorithms = Some(Algorithms {
        ke: suite.ke,
        addke: suite.addke.clone(),
        ike_encr: suite.encr,
        prf: suite.prf,
        esp_encr,
    });
}

fn to_status_counts(status: &mut Status, stats: &TunnelStats) {
    status.bytes_in = stats.bytes_in;
    status.bytes_out = stats.bytes_out;
    status.child_sa_rekeys = stats.child_sa_rekeys;
    status.child_sa_recreates = stats.child_sa_recreates;
    status.ike_sa_rekeys = stats.ike_sa_rekeys;
}

/// Runs a client tunnel until `shutdown` turns true or the tunnel goes down.
///
/// A thin loop over one UDP socket, the packet device (created through `factory` once the
/// Child SA is up) and one timer, around the sans-IO [`ClientTunnel`]. `status` is updated
/// throughout; on return its state is `disconnected` or `error` with `last_error` set.
pub async fn run_client<F: DeviceFactory>(
    options: ClientOptions,
    provider: Arc<dyn CryptoProvider>,
    factory: &mut F,
    status: &watch::Sender<Status>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DriverError> {
    let result = run_session(options, provider, factory, status, &mut shutdown).await;
    factory.teardown().await;
    status.send_modify(|s| match &result {
        Ok(()) => s.state = State::Disconnected,
        Err(e) => {
            s.state = State::Error;
            s.last_error = Some(e.to_string());
        }
    });
    result
}

/// One session: one IKE SA from IKE_SA_INIT to its end, without the teardown. `status` shows
/// `connecting` and then `connected`.
pub(super) async fn run_session<F: DeviceFactory>(
    options: ClientOptions,
    provider: Arc<dyn CryptoProvider>,
    factory: &mut F,
    status: &watch::Sender<Status>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), DriverError> {
    let mut wake = options.wake.clone();
    let unspecified = if options.gateway.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    let socket = bind_udp(
        options
            .bind
            .unwrap_or_else(|| SocketAddr::new(unspecified, 0)),
        options.fwmark,
        options.socket_hook.as_ref(),
    )?;
    let local = socket
        .local_addr()
        .map_err(DriverError::io("read the local address"))?;
    status.send_modify(|s| {
        s.state = State::Connecting;
        s.gateway = options.gateway.to_string();
        s.mode = options.initiator.policy.mode.as_str().into();
    });
    let esp = EspOptions {
        replay: options.esp_replay,
        ..EspOptions::default()
    };
    let mut tunnel = ClientTunnel::new(
        provider,
        options.initiator.clone(),
        esp,
        Instant::now(),
        local,
        options.gateway,
    )?;
    let mut buf = vec![0u8; BUF_LEN];
    let mut out = vec![0u8; BUF_LEN];
    let mut tun_buf = vec![0u8; BUF_LEN];
    let mut device: Option<F::Device> = None;
    let mut next_status = Instant::now() + STATUS_INTERVAL;
    let mut closing = false;
    loop {
        let now = Instant::now();
        // Counters every second, even while datagrams keep every other branch busy.
        if now >= next_status {
            next_status = now + STATUS_INTERVAL;
            status.send_modify(|s| {
                to_status_counts(s, &tunnel.stats());
                if let Some(at) = s.connected_since {
                    s.uptime_s = at.elapsed().as_secs();
                }
            });
        }
        while let Some(t) = tunnel.poll_transmit(now, &mut buf) {
            let datagram = buf.get(..t.size).unwrap_or_default();
            // A send error (e.g. no route yet) is a lost datagram; retransmission covers it.
            if let Err(e) = socket.send_to(datagram, t.destination).await {
                tracing::debug!(error = %e, "datagram not sent");
            }
        }
        while let Some(event) = tunnel.poll_event() {
            match event {
                TunnelEvent::Up(up) => {
                    tracing::info!(suite = %up.suite, handshake_ms = up.handshake.as_millis(), "tunnel up");
                    let since = Instant::now();
                    device = Some(factory.create(&up).await?);
                    status.send_modify(|s| {
                        connected_status(s, &up);
                        s.connected_since = Some(since);
                    });
                }
                TunnelEvent::ChildSaRekeyed { spi_in, spi_out } => {
                    tracing::info!(%spi_in, %spi_out, "Child SA rekeyed");
                    status.send_modify(|s| to_status_counts(s, &tunnel.stats()));
                }
                TunnelEvent::ChildSaLost => {
                    tracing::warn!("the gateway deleted the Child SA; waiting for a new one");
                }
                TunnelEvent::ChildSaRecreated { spi_in, spi_out } => {
                    tracing::info!(%spi_in, %spi_out, "Child SA re-created");
                    status.send_modify(|s| to_status_counts(s, &tunnel.stats()));
                }
                TunnelEvent::IkeSaRekeyed { suite } => {
                    tracing::info!(suite = %suite, "IKE SA rekeyed");
                    status.send_modify(|s| to_status_counts(s, &tunnel.stats()));
                }
                TunnelEvent::Down(reason) => {
                    status.send_modify(|s| {
                        to_status_counts(s, &tunnel.stats());
                        *s = s.refreshed();
                        s.connected_since = None;
                    });
                    return down_result(reason);
                }
            }
        }
        let deadline = [tunnel.poll_timeout(), Some(next_status)]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            r = recv_device(device.as_mut(), &mut tun_buf) => {
                let n = r.map_err(DriverError::io("read from the tunnel device"))?;
                let packet = tun_buf.get(..n).unwrap_or_default();
                if let Some(t) = tunnel.handle_tun_packet(Instant::now(), packet, &mut out) {
                    let datagram = out.get(..t.size).unwrap_or_default();
                    if let Err(e) = socket.send_to(datagram, t.destination).await {
                        tracing::trace!(error = %e, "ESP datagram not sent");
                    }
                }
            }
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r.map_err(DriverError::io("receive from the gateway"))?;
                let datagram = buf.get(..n).unwrap_or_default();
                match tunnel.handle_udp(Instant::now(), from, datagram, &mut out) {
                    TunnelResult::WriteToTun(p) => {
                        if let Some(device) = device.as_mut() {
                            device.send(p).await.map_err(DriverError::io("write to the tunnel device"))?;
                        }
                    }
                    TunnelResult::Dropped(reason) => tracing::trace!(?reason, "datagram dropped"),
                    TunnelResult::Done => {}
                }
            }
            () = sleep_until(deadline) => {
                let now = Instant::now();
                tunnel.handle_timeout(now);
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                tunnel.close(Instant::now());
            }
            () = woken(wake.as_mut()) => {
                tracing::info!("checking the gateway after a wake");
                tunnel.probe(Instant::now());
            }
        }
    }
}

/// Returns at the next wake; never without a wake channel (or once it is gone).
async fn woken(wake: Option<&mut watch::Receiver<u64>>) {
    let Some(wake) = wake else {
        return std::future::pending().await;
    };
    if wake.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn connected_status(s: &mut Status, up: &TunnelUp) {
    s.state = State::Connected;
    to_status_suite(s, &up.suite);
    s.esp = EspStatus {
        encr: up.esp.display_name().into(),
    };
    if let Some(a) = s.algorithms.as_mut() {
        a.esp_encr = Some(up.esp);
    }
    s.virtual_ips = up
        .config
        .virtual_ips
        .iter()
        .map(|(ip, len)| format!("{ip}/{len}"))
        .collect();
    s.dns = up.config.dns.clone();
    s.handshake_ms = Some(up.handshake.as_secs_f64() * 1e3);
}

/// How the run ends for a tunnel that went down for `reason`.
fn down_result(reason: DownReason) -> Result<(), DriverError> {
    Err(match reason {
        DownReason::Closed => return Ok(()),
        DownReason::ClosedByPeer => DriverError::Closed,
        DownReason::Ike(e) => DriverError::Ike(e),
        DownReason::ChildSaRefused(e) => DriverError::ChildSa(e),
        DownReason::ChildSaGone => DriverError::ChildSaGone,
        DownReason::Esp(e) => DriverError::Esp(e),
        reason @ DownReason::NotUdpEncapsulated => DriverError::Device(reason.to_string()),
    })
}

/// Reads a packet from the device, or waits forever before there is one.
async fn recv_device<D: PacketDevice>(
    device: Option<&mut D>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match device {
        Some(d) => d.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
