//! The client tunnel task.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::DriverError;
use super::device::PacketDevice;
use super::outbound::Outbound;
use super::socket::{SocketHook, bind_udp};
use super::status::{EspStatus, IkeStatus, State, Status};
use crate::crypto::CryptoProvider;
use crate::esp::{self, ChildSa, Demux, EspSpi, Inbound, Received, ReplayProtection, SaConfig};
use crate::ike::{
    ChildSaEstablished, ConfigReceived, Event, Initiator, InitiatorConfig, NAT_T_PORT, Suite,
};

/// How often a NAT keepalive is sent when UDP-encapsulated (strongSwan's default, RFC 3948).
const NAT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
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
        }
    }
}

/// What the gateway assigned, handed to the [`DeviceFactory`] once the tunnel is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelUp {
    /// The negotiated algorithms.
    pub suite: Suite,
    /// The gateway's address (outer).
    pub gateway: SocketAddr,
    /// Virtual addresses, DNS and split subnets from CFG_REPLY.
    pub config: ConfigReceived,
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
    fn teardown(&mut self) -> impl Future<Output = ()> + Send;
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
}

/// Sends everything the IKE SA queued.
async fn flush(
    ike: &mut Initiator,
    socket: &UdpSocket,
    buf: &mut [u8],
    now: Instant,
) -> Result<(), DriverError> {
    while let Some(t) = ike.poll_transmit(now, buf) {
        let datagram = buf.get(..t.size).unwrap_or_default();
        // A send error (e.g. no route yet) is a lost datagram; retransmission covers it.
        if let Err(e) = socket.send_to(datagram, t.destination).await {
            tracing::debug!(error = %e, "IKE datagram not sent");
        }
    }
    Ok(())
}

/// Runs a client tunnel until `shutdown` turns true or the IKE SA fails.
///
/// Phase 1 handshakes (IKE_SA_INIT, IKE_INTERMEDIATE, IKE_AUTH); phase 2 creates the device
/// through `factory` and moves packets. `status` is updated throughout; on return its state is
/// `disconnected` or `error` with `last_error` set.
pub async fn run_client<F: DeviceFactory>(
    options: ClientOptions,
    provider: Arc<dyn CryptoProvider>,
    factory: &mut F,
    status: &watch::Sender<Status>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DriverError> {
    let result = run(options, provider, factory, status, &mut shutdown).await;
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

async fn run<F: DeviceFactory>(
    options: ClientOptions,
    provider: Arc<dyn CryptoProvider>,
    factory: &mut F,
    status: &watch::Sender<Status>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), DriverError> {
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
    let started = Instant::now();
    status.send_modify(|s| {
        s.state = State::Connecting;
        s.gateway = options.gateway.to_string();
        s.mode = options.initiator.policy.mode.as_str().into();
    });
    let mut ike = Initiator::new(
        provider.clone(),
        options.initiator.clone(),
        started,
        local,
        options.gateway,
    )?;
    let mut buf = vec![0u8; BUF_LEN];
    let mut out = vec![0u8; BUF_LEN];

    // ---- phase 1: handshake
    let mut suite = None;
    let mut config = ConfigReceived::default();
    let child: ChildSaEstablished = loop {
        flush(&mut ike, &socket, &mut buf, Instant::now()).await?;
        let mut child = None;
        let mut child_failed = None;
        while let Some(event) = ike.poll_event() {
            match event {
                Event::IkeSaEstablished { suite: s } => suite = Some(s),
                Event::ConfigReceived(c) => config = c,
                Event::ChildSaEstablished(c) => child = Some(*c),
                Event::ChildSaFailed(e) => child_failed = Some(e),
                Event::Failed(e) => return Err(DriverError::Ike(e)),
                _ => {}
            }
        }
        if let Some(e) = child_failed {
            // The IKE SA is up but carries no tunnel: delete it rather than leave the gateway
            // a half-dead IKE SA that it keeps alive and rekeys (RFC 7296 §1.4.1).
            close(&mut ike, &socket, &mut buf).await;
            return Err(DriverError::ChildSa(e));
        }
        if let Some(child) = child {
            break child;
        }
        let deadline = ike.poll_timeout();
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r.map_err(DriverError::io("receive from the gateway"))?;
                handle_ike(&mut ike, from, buf.get(..n).unwrap_or_default());
            }
            () = sleep_until(deadline) => ike.handle_timeout(Instant::now()),
            _ = shutdown.changed() => return Ok(()),
        }
    };
    let suite = suite.ok_or_else(|| DriverError::Device("Child SA without IKE SA".into()))?;
    let handshake = started.elapsed();
    tracing::info!(suite = %suite, handshake_ms = handshake.as_millis(), "tunnel up");

    // ---- phase 2: the tunnel
    if !ike.is_nat_t() {
        return Err(DriverError::Device(
            "the IKE SA did not switch to UDP encapsulation (port 4500), which pqvpn's userspace \
             ESP needs; enable force_udp_encapsulation"
                .into(),
        ));
    }
    let up = TunnelUp {
        suite: suite.clone(),
        gateway: ike.remote(),
        config: config.clone(),
    };
    let mut device = factory.create(&up).await?;
    let mut sa_config = SaConfig::new(child.encr);
    sa_config.esn = child.esn;
    sa_config.replay = options.esp_replay;
    let (outbound, inbound) = client_sas(&*provider, &sa_config, &child)?;
    let mut outbound = Outbound::new(outbound);
    let mut demux = Demux::new();
    demux.insert(inbound);
    let mut rekey_requested = false;
    // RFC 4301 §5.2: inbound packets come only from the gateway's side of the Child SA.
    let mut ts_r = child.ts_r.clone();
    let mut selector_drops = 0u64;
    let esp_destination = SocketAddr::new(options.gateway.ip(), NAT_T_PORT);
    let connected_at = Instant::now();
    status.send_modify(|s| {
        s.state = State::Connected;
        to_status_suite(s, &suite);
        s.esp = EspStatus {
            encr: child.encr.display_name().into(),
        };
        s.virtual_ips = config
            .virtual_ips
            .iter()
            .map(|(ip, len)| format!("{ip}/{len}"))
            .collect();
        s.dns = config.dns.clone();
        s.handshake_ms = Some(handshake.as_secs_f64() * 1e3);
    });

    let mut tun_buf = vec![0u8; BUF_LEN];
    let mut next_keepalive = Instant::now() + NAT_KEEPALIVE_INTERVAL;
    let mut next_status = Instant::now() + STATUS_INTERVAL;
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    loop {
        flush(&mut ike, &socket, &mut buf, Instant::now()).await?;
        while let Some(event) = ike.poll_event() {
            match event {
                Event::Failed(e) => return Err(DriverError::Ike(e)),
                Event::Closed => return Err(DriverError::Closed),
                // Make-before-break: send on the new SA at once, keep receiving on the old one
                // until the IKE SA deletes it.
                Event::ChildSaRekeyed { new, .. } => {
                    let mut config = sa_config;
                    config.algorithm = new.encr;
                    config.esn = new.esn;
                    let (out_sa, in_sa) = client_sas(&*provider, &config, &new)?;
                    demux.insert(in_sa);
                    outbound.rekeyed(out_sa);
                    ts_r.clone_from(&new.ts_r);
                    rekey_requested = false;
                    status.send_modify(|s| s.child_sa_rekeys += 1);
                    tracing::info!(spi_in = new.spi_i, spi_out = new.spi_r, "Child SA rekeyed");
                }
                Event::ChildSaDeleted { spi_i, spi_r } => {
                    demux.remove(EspSpi(spi_i));
                    if outbound.deleted(EspSpi(spi_r)).is_err() {
                        // No SA is left to send on: the tunnel carries nothing any more. Say
                        // goodbye to the gateway.
                        tracing::warn!(spi_out = spi_r, "the tunnel's Child SA is gone");
                        close(&mut ike, &socket, &mut buf).await;
                        return Err(DriverError::ChildSaGone);
                    }
                }
                Event::IkeSaRekeyed { suite } => {
                    status.send_modify(|s| s.ike_sa_rekeys += 1);
                    tracing::info!(suite = %suite, "IKE SA rekeyed");
                }
                _ => {}
            }
        }
        if outbound.current().needs_rekey() && !rekey_requested {
            let spi = outbound.current().spi().0;
            rekey_requested = ike.rekey_child_sa(Instant::now(), spi).is_ok();
            // Send the request now, not at the next wake-up.
            flush(&mut ike, &socket, &mut buf, Instant::now()).await?;
        }
        let deadline = [ike.poll_timeout(), Some(next_keepalive), Some(next_status)]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            r = device.recv(&mut tun_buf) => {
                let n = r.map_err(DriverError::io("read from the tunnel device"))?;
                let packet = tun_buf.get(..n).unwrap_or_default();
                match outbound.current().seal(packet, &mut out) {
                    Ok(len) => {
                        bytes_out += n as u64;
                        let datagram = out.get(..len).unwrap_or_default();
                        if let Err(e) = socket.send_to(datagram, esp_destination).await {
                            tracing::trace!(error = %e, "ESP datagram not sent");
                        }
                    }
                    Err(esp::Error::SequenceExhausted) => {
                        return Err(DriverError::Esp(esp::Error::SequenceExhausted));
                    }
                    Err(e) => tracing::trace!(error = %e, "outbound packet dropped"),
                }
            }
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r.map_err(DriverError::io("receive from the gateway"))?;
                let datagram = buf.get(..n).unwrap_or_default();
                if from.port() != NAT_T_PORT {
                    ike.handle_datagram(Instant::now(), from, datagram);
                    continue;
                }
                match demux.handle_udp4500(datagram, &mut out) {
                    Ok(Received::Ike(message)) => ike.handle_datagram(Instant::now(), from, message),
                    Ok(Received::Esp { packet: Inbound::Ipv4(p) | Inbound::Ipv6(p), .. }) => {
                        ike.handle_inbound_traffic(Instant::now());
                        if !esp::selectors_allow(&ts_r, p, esp::Direction::Source) {
                            selector_drops += 1;
                            tracing::debug!(drops = selector_drops, "inner source outside the Child SA's TSr; dropped");
                            continue;
                        }
                        bytes_in += p.len() as u64;
                        device.send(p).await.map_err(DriverError::io("write to the tunnel device"))?;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::trace!(error = %e, "inbound datagram dropped"),
                }
            }
            () = sleep_until(deadline) => {
                let now = Instant::now();
                ike.handle_timeout(now);
                if now >= next_keepalive {
                    next_keepalive = now + NAT_KEEPALIVE_INTERVAL;
                    if ike.is_nat_t() {
                        let _ = socket.send_to(&crate::wire::NAT_KEEPALIVE, esp_destination).await;
                    }
                }
                if now >= next_status {
                    next_status = now + STATUS_INTERVAL;
                    status.send_modify(|s| {
                        s.bytes_in = bytes_in;
                        s.bytes_out = bytes_out;
                        s.uptime_s = connected_at.elapsed().as_secs();
                    });
                }
            }
            _ = shutdown.changed() => {
                status.send_modify(|s| {
                    s.bytes_in = bytes_in;
                    s.bytes_out = bytes_out;
                });
                close(&mut ike, &socket, &mut buf).await;
                return Ok(());
            }
        }
    }
}

/// The outbound and inbound ESP SAs of a Child SA, from the client's side: it sends with the
/// initiator-to-responder keys to the gateway's SPI (RFC 7296 §2.17).
fn client_sas(
    provider: &dyn CryptoProvider,
    config: &SaConfig,
    child: &ChildSaEstablished,
) -> Result<(esp::OutboundSa, esp::InboundSa), DriverError> {
    let sa = ChildSa::new(
        provider,
        config,
        EspSpi(child.spi_r),
        &child.keys.encr_i,
        EspSpi(child.spi_i),
        &child.keys.encr_r,
    )?;
    Ok(sa.split())
}

/// Deletes the IKE SA (and so its Child SAs) at the gateway, waiting up to a second for the
/// answer: an orderly goodbye, so the gateway frees our address at once.
async fn close(ike: &mut Initiator, socket: &UdpSocket, buf: &mut [u8]) {
    ike.close(Instant::now());
    let deadline = Instant::now() + Duration::from_secs(1);
    while !ike.is_closed() && !ike.is_failed() && Instant::now() < deadline {
        let _ = flush(ike, socket, buf, Instant::now()).await;
        let wait = ike.poll_timeout().map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            r = socket.recv_from(buf) => {
                if let Ok((n, from)) = r {
                    let datagram = buf.get(..n).unwrap_or_default().to_vec();
                    handle_ike(ike, from, &datagram);
                }
            }
            () = sleep_until(Some(wait)) => ike.handle_timeout(Instant::now()),
        }
    }
}

fn handle_ike(ike: &mut Initiator, from: SocketAddr, datagram: &[u8]) {
    if from.port() == NAT_T_PORT {
        if let Ok(crate::wire::Udp4500::Ike(message)) = crate::wire::classify_udp4500(datagram) {
            ike.handle_datagram(Instant::now(), from, message);
        }
    } else {
        ike.handle_datagram(Instant::now(), from, datagram);
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
