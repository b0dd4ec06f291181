//! The gateway: the project's own responder on a thread of its own, and the ESP SAs of its
//! clients on the task that owns the packet device.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::DriverError;
use super::device::PacketDevice;
use super::socket::bind_udp;
use super::status::GatewayStatus;
use crate::crypto::CryptoProvider;
use crate::esp::ReplayProtection;
use crate::ike::{IKE_PORT, NAT_T_PORT, Responder, ResponderConfig};
use crate::tunnel::{Applied, EspOptions, EspUpdate, GatewayRequest, GatewayResult, GatewayTunnel};

mod ike;

const BUF_LEN: usize = 65_536 + 256;

/// What the gateway listens on and how its ESP SAs behave.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The responder's configuration (policies, PSK, pool, DNS).
    pub responder: ResponderConfig,
    /// Address to listen on; ports 500 and 4500.
    pub listen: IpAddr,
    /// IKE port (500).
    pub ike_port: u16,
    /// NAT traversal port (4500).
    pub nat_t_port: u16,
    /// Anti-replay of inbound ESP SAs.
    pub esp_replay: ReplayProtection,
}

impl GatewayOptions {
    /// Listen on `listen`:500 and :4500.
    pub fn new(responder: ResponderConfig, listen: IpAddr) -> Self {
        Self {
            responder,
            listen,
            ike_port: IKE_PORT,
            nat_t_port: NAT_T_PORT,
            esp_replay: ReplayProtection::default(),
        }
    }
}

/// Runs the gateway until `shutdown` turns true, keeping `status` up to date.
///
/// Two loops: this task moves ESP between the NAT-T socket and `device`; the responder, port
/// 500 and every key exchange run on a thread of their own (`gateway::ike`), so a flood of
/// IKE_SA_INIT delays no connected client's packets.
pub async fn run_gateway<D: PacketDevice>(
    options: GatewayOptions,
    provider: Arc<dyn CryptoProvider>,
    mut device: D,
    status: &watch::Sender<GatewayStatus>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DriverError> {
    let ike_local = SocketAddr::new(options.listen, options.ike_port);
    let nat_t_local = SocketAddr::new(options.listen, options.nat_t_port);
    let ike_socket = into_std(bind_udp(ike_local, None, None)?)?;
    let nat_t_socket = into_std(bind_udp(nat_t_local, None, None)?)?;
    let ike_local = ike_socket
        .local_addr()
        .map_err(DriverError::io("read the local address"))?;
    let nat_t_local = nat_t_socket
        .local_addr()
        .map_err(DriverError::io("read the local address"))?;
    let nat_t_sender = nat_t_socket
        .try_clone()
        .map_err(DriverError::io("duplicate the NAT-T socket"))?;
    let nat_t_socket =
        UdpSocket::from_std(nat_t_socket).map_err(DriverError::io("register the UDP socket"))?;
    let responder = Responder::new(provider.clone(), options.responder.clone())?;
    let (to_ike, input) = mpsc::channel(ike::INPUT_QUEUE);
    let (to_ike_datagrams, datagrams) = mpsc::channel(ike::DATAGRAM_QUEUE);
    let (updates_tx, mut updates) = mpsc::channel(ike::UPDATE_QUEUE);
    let thread = ike::IkeThread {
        responder,
        provider,
        esp: EspOptions {
            replay: options.esp_replay,
            ..EspOptions::default()
        },
        ike_local,
        nat_t_local,
        input,
        datagrams,
        updates: updates_tx,
        shutdown: shutdown.clone(),
        authenticated: 0,
    }
    .spawn(ike_socket, nat_t_sender)?;
    tracing::info!(%ike_local, %nat_t_local, "gateway listening");
    let mut esp = EspLoop::new(to_ike, to_ike_datagrams);
    let mut nat_t_buf = vec![0u8; BUF_LEN];
    let mut out = vec![0u8; BUF_LEN];
    let mut tun_buf = vec![0u8; BUF_LEN];
    let result = loop {
        tokio::select! {
            update = updates.recv() => match update {
                Some(update) => esp.update(update, status),
                // The IKE thread stopped: its result says why.
                None => break Ok(()),
            },
            r = nat_t_socket.recv_from(&mut nat_t_buf) => {
                let (n, from) = match r {
                    Ok(r) => r,
                    Err(e) => break Err(DriverError::io("receive on the NAT-T port")(e)),
                };
                // The keys of a Child SA whose response just left are already queued: take
                // them before its first ESP packet.
                while let Ok(update) = updates.try_recv() {
                    esp.update(update, status);
                }
                let datagram = nat_t_buf.get(..n).unwrap_or_default();
                if let Some(p) = esp.inbound(from, datagram, &mut out)
                    && let Err(e) = device.send(p).await
                {
                    tracing::debug!(error = %e, "packet not written to the device");
                }
            }
            r = device.recv(&mut tun_buf) => {
                let n = match r {
                    Ok(n) => n,
                    Err(e) => break Err(DriverError::io("read from the tunnel device")(e)),
                };
                let packet = tun_buf.get(..n).unwrap_or_default();
                while let Ok(update) = updates.try_recv() {
                    esp.update(update, status);
                }
                if let Some((len, to)) = esp.outbound(packet, &mut out)
                    && let Err(e) = nat_t_socket.send_to(out.get(..len).unwrap_or_default(), to).await
                {
                    tracing::trace!(error = %e, "ESP datagram not sent");
                }
            }
            _ = shutdown.changed() => break Ok(()),
        }
    };
    // Closing the queues stops the IKE thread if shutdown did not.
    drop(esp);
    drop(updates);
    let joined = tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| DriverError::Device(format!("the IKE thread could not be joined: {e}")))?;
    let ike_result = joined.map_err(|_| DriverError::Device("the IKE thread panicked".into()))?;
    result.and(ike_result)
}

/// Deregisters a socket from this runtime, for the IKE thread's (or a second handle).
fn into_std(socket: UdpSocket) -> Result<std::net::UdpSocket, DriverError> {
    socket
        .into_std()
        .map_err(DriverError::io("deregister the UDP socket"))
}

/// The ESP loop's side: the sans-IO data plane and the queues to the IKE thread.
struct EspLoop {
    tunnel: GatewayTunnel,
    to_ike: mpsc::Sender<GatewayRequest>,
    to_ike_datagrams: mpsc::Sender<ike::IkeDatagram>,
    /// IKE datagrams from port 4500 dropped because the IKE thread was behind.
    dropped_ike: u64,
}

impl EspLoop {
    fn new(
        to_ike: mpsc::Sender<GatewayRequest>,
        to_ike_datagrams: mpsc::Sender<ike::IkeDatagram>,
    ) -> Self {
        Self {
            tunnel: GatewayTunnel::new(),
            to_ike,
            to_ike_datagrams,
            dropped_ike: 0,
        }
    }

    /// Applies an update of the IKE thread, and the counts to `status`.
    fn update(&mut self, update: ike::IkeUpdate, status: &watch::Sender<GatewayStatus>) {
        match update {
            ike::IkeUpdate::Counts {
                ike_sas,
                authenticated,
                stats,
            } => status.send_modify(|s| {
                s.ike_sas = ike_sas;
                s.authenticated = authenticated;
                s.responder = stats;
            }),
            ike::IkeUpdate::Esp(update) => {
                match self.tunnel.apply(*update) {
                    Some(Applied::Connected {
                        address,
                        virtual_ips,
                        ..
                    }) => tracing::info!(client = %address, ?virtual_ips, "client connected"),
                    Some(Applied::AddressTaken {
                        address,
                        virtual_ip,
                        ..
                    }) => tracing::warn!(
                        client = %address,
                        %virtual_ip,
                        "virtual address already routed to another client; closing"
                    ),
                    Some(Applied::Disconnected { address, .. }) => {
                        tracing::info!(client = %address, "client disconnected");
                    }
                    _ => {}
                }
                self.forward_requests();
                let clients = self.tunnel.clients();
                status.send_if_modified(|s| std::mem::replace(&mut s.clients, clients) != clients);
            }
        }
    }

    /// Hands the data plane's requests to the IKE thread; a full queue refuses a rekey, which
    /// the data plane asks for again.
    fn forward_requests(&mut self) {
        while let Some(request) = self.tunnel.poll_request() {
            if let GatewayRequest::Close { spi_r } = request {
                tracing::info!(client = ?self.tunnel.client_address(spi_r), "closing the client's IKE SA");
            }
            if self.to_ike.try_send(request).is_err()
                && let GatewayRequest::RekeyChild { spi_r, .. } = request
            {
                let _ = self.tunnel.apply(EspUpdate::RekeyRefused { spi_r });
            }
        }
    }

    /// A datagram from port 4500: an authentic ESP packet's inner packet, for the device; IKE
    /// goes to the IKE thread.
    fn inbound<'a>(
        &mut self,
        from: SocketAddr,
        datagram: &'a [u8],
        out: &'a mut [u8],
    ) -> Option<&'a [u8]> {
        let result = self.tunnel.handle_udp(Instant::now(), from, datagram, out);
        let packet = match result {
            GatewayResult::Ike(message) => {
                let input = ike::IkeDatagram {
                    from,
                    octets: message.to_vec(),
                };
                if self.to_ike_datagrams.try_send(input).is_err() {
                    self.dropped_ike += 1;
                    tracing::trace!(
                        dropped = self.dropped_ike,
                        "IKE thread behind; datagram dropped"
                    );
                }
                None
            }
            GatewayResult::WriteToTun(p) => Some(&*p),
            GatewayResult::Dropped(reason) => {
                tracing::trace!(?reason, "inbound datagram dropped");
                None
            }
            GatewayResult::Done => None,
        };
        self.forward_requests();
        packet
    }

    /// A packet from the device, sealed for the client whose virtual address it is sent to:
    /// the datagram's length in `out` and where it goes.
    fn outbound(&mut self, packet: &[u8], out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let t = self.tunnel.handle_tun_packet(Instant::now(), packet, out);
        self.forward_requests();
        t.map(|t| (t.size, t.destination))
    }
}
