//! The gateway: the project's own responder on a thread of its own, and the ESP SAs of its
//! clients on the task that owns the packet device.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::DriverError;
use super::device::PacketDevice;
use super::outbound::Outbound;
use super::socket::bind_udp;
use super::status::GatewayStatus;
use crate::crypto::CryptoProvider;
use crate::esp::{self, Demux, EspSpi, Inbound, Received, ReplayProtection};
use crate::ike::{IKE_PORT, NAT_T_PORT, Responder, ResponderConfig};
use crate::wire::TrafficSelector;

mod ike;

const BUF_LEN: usize = 65_536 + 256;

/// How often the IKE thread hears that a client's ESP is alive (for DPD, RFC 7296 §2.4).
const TRAFFIC_NOTE_INTERVAL: Duration = Duration::from_secs(1);

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

/// One connected client.
struct Client {
    /// Every inbound SA of the client (two while a rekey completes).
    inbound_spis: Vec<EspSpi>,
    outbound: Outbound,
    rekey_requested: bool,
    /// Where its ESP comes from (updated from authenticated packets, RFC 3948 NAT float).
    address: SocketAddr,
    virtual_ips: Vec<IpAddr>,
    /// The Child SA's TSi: the inner sources it may send from (RFC 4301 §5.2).
    ts_i: Vec<TrafficSelector>,
    /// Authentic packets dropped because their inner source lies outside `ts_i`.
    selector_drops: u64,
    /// When the IKE thread last heard of this client's authentic ESP.
    traffic_noted: Option<Instant>,
}

/// Single-address selectors of the client side: its virtual addresses.
fn hosts(ts: &[TrafficSelector]) -> Vec<IpAddr> {
    ts.iter()
        .filter_map(|t| match t {
            TrafficSelector::Ipv4 {
                start_addr,
                end_addr,
                ..
            } if start_addr == end_addr => Some(IpAddr::V4(*start_addr)),
            TrafficSelector::Ipv6 {
                start_addr,
                end_addr,
                ..
            } if start_addr == end_addr => Some(IpAddr::V6(*start_addr)),
            _ => None,
        })
        .collect()
}

/// The destination address of an IP packet.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
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
        esp_replay: options.esp_replay,
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

/// The data plane: the ESP SAs of every connected client, found by inbound SPI and by virtual
/// address in maps (no per-packet scans).
struct EspLoop {
    demux: Demux,
    /// By IKE SA (the responder's SPI).
    clients: HashMap<u64, Client>,
    /// Inbound ESP SPI to IKE SA.
    by_spi: HashMap<EspSpi, u64>,
    /// Virtual address (the client's lease) to IKE SA: where packets from the device go.
    by_address: HashMap<IpAddr, u64>,
    to_ike: mpsc::Sender<ike::IkeInput>,
    to_ike_datagrams: mpsc::Sender<ike::IkeDatagram>,
    /// IKE datagrams from port 4500 dropped because the IKE thread was behind.
    dropped_ike: u64,
}

impl EspLoop {
    fn new(
        to_ike: mpsc::Sender<ike::IkeInput>,
        to_ike_datagrams: mpsc::Sender<ike::IkeDatagram>,
    ) -> Self {
        Self {
            demux: Demux::new(),
            clients: HashMap::new(),
            by_spi: HashMap::new(),
            by_address: HashMap::new(),
            to_ike,
            to_ike_datagrams,
            dropped_ike: 0,
        }
    }

    /// Applies an update of the IKE thread, and the counts to `status`.
    fn update(&mut self, update: ike::EspUpdate, status: &watch::Sender<GatewayStatus>) {
        if let ike::EspUpdate::Counts {
            ike_sas,
            authenticated,
            stats,
        } = update
        {
            status.send_modify(|s| {
                s.ike_sas = ike_sas;
                s.authenticated = authenticated;
                s.responder = stats;
            });
            return;
        }
        self.apply(update);
        let clients = self.clients.len();
        status.send_if_modified(|s| std::mem::replace(&mut s.clients, clients) != clients);
    }

    /// Applies what an authenticated IKE exchange decided.
    fn apply(&mut self, update: ike::EspUpdate) {
        match update {
            ike::EspUpdate::Connected {
                spi_r,
                address,
                inbound,
                outbound,
                ts_i,
            } => {
                self.remove(spi_r);
                let virtual_ips = hosts(&ts_i);
                // The responder leases each address once; should two clients still claim one,
                // the first keeps it and the second gets no tunnel (finding 1).
                if let Some(taken) = virtual_ips
                    .iter()
                    .find(|ip| self.by_address.get(ip).is_some_and(|&o| o != spi_r))
                {
                    tracing::warn!(client = %address, virtual_ip = %taken, "virtual address already routed to another client; closing");
                    let _ = self.to_ike.try_send(ike::IkeInput::Close { spi_r });
                    return;
                }
                for ip in &virtual_ips {
                    self.by_address.insert(*ip, spi_r);
                }
                tracing::info!(client = %address, ?virtual_ips, "client connected");
                self.by_spi.insert(inbound.spi(), spi_r);
                self.clients.insert(
                    spi_r,
                    Client {
                        inbound_spis: vec![inbound.spi()],
                        outbound: Outbound::new(outbound),
                        rekey_requested: false,
                        address,
                        virtual_ips,
                        ts_i,
                        selector_drops: 0,
                        traffic_noted: None,
                    },
                );
                self.demux.insert(inbound);
            }
            ike::EspUpdate::Rekeyed {
                spi_r,
                inbound,
                outbound,
                ts_i,
            } => {
                let Some(client) = self.clients.get_mut(&spi_r) else {
                    return;
                };
                client.inbound_spis.push(inbound.spi());
                client.outbound.rekeyed(outbound);
                client.ts_i = ts_i;
                client.rekey_requested = false;
                self.by_spi.insert(inbound.spi(), spi_r);
                self.demux.insert(inbound);
            }
            ike::EspUpdate::RekeyRefused { spi_r } => {
                if let Some(client) = self.clients.get_mut(&spi_r) {
                    client.rekey_requested = false;
                }
            }
            ike::EspUpdate::ChildDeleted {
                spi_r,
                outbound,
                inbound,
            } => {
                let Some(client) = self.clients.get_mut(&spi_r) else {
                    return;
                };
                // Only this client's own SAs: another IKE SA cannot delete them.
                if client.inbound_spis.contains(&inbound) {
                    self.demux.remove(inbound);
                    self.by_spi.remove(&inbound);
                    client.inbound_spis.retain(|s| *s != inbound);
                }
                if client.outbound.deleted(outbound).is_err() {
                    // No SA is left to send to this client on: an IKE SA without a tunnel only
                    // holds the address lease. Close it (the queue has room for one close per
                    // client; if not, DPD or the SA's lifetime ends it).
                    let _ = self.to_ike.try_send(ike::IkeInput::Close { spi_r });
                }
            }
            ike::EspUpdate::Gone { spi_r } => self.remove(spi_r),
            ike::EspUpdate::Counts { .. } => {}
        }
    }

    fn remove(&mut self, spi_r: u64) {
        let Some(client) = self.clients.remove(&spi_r) else {
            return;
        };
        for spi in client.inbound_spis {
            self.demux.remove(spi);
            self.by_spi.remove(&spi);
        }
        for ip in client.virtual_ips {
            if self.by_address.get(&ip) == Some(&spi_r) {
                self.by_address.remove(&ip);
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
        match self.demux.handle_udp4500(datagram, out) {
            Ok(Received::Ike(message)) => {
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
            Ok(Received::Esp {
                spi,
                packet: Inbound::Ipv4(p) | Inbound::Ipv6(p),
            }) => {
                let spi_r = *self.by_spi.get(&spi)?;
                let c = self.clients.get_mut(&spi_r)?;
                c.address = from;
                let now = Instant::now();
                if c.traffic_noted
                    .is_none_or(|t| now.duration_since(t) >= TRAFFIC_NOTE_INTERVAL)
                    && self
                        .to_ike
                        .try_send(ike::IkeInput::Traffic { spi_r, at: now })
                        .is_ok()
                {
                    c.traffic_noted = Some(now);
                }
                // RFC 4301 §5.2: a client sends only from the addresses it was given.
                if !esp::selectors_allow(&c.ts_i, p, esp::Direction::Source) {
                    c.selector_drops += 1;
                    tracing::debug!(client = %c.address, drops = c.selector_drops, "inner source outside the Child SA's TSi; dropped");
                    return None;
                }
                Some(p)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::trace!(error = %e, "inbound datagram dropped");
                None
            }
        }
    }

    /// A packet from the device, sealed for the client whose virtual address it is sent to:
    /// the datagram's length in `out` and where it goes.
    fn outbound(&mut self, packet: &[u8], out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let spi_r = *self.by_address.get(&destination(packet)?)?;
        let client = self.clients.get_mut(&spi_r)?;
        let outbound = client.outbound.current();
        if outbound.needs_rekey() && !client.rekey_requested {
            client.rekey_requested = self
                .to_ike
                .try_send(ike::IkeInput::RekeyChild {
                    spi_r,
                    spi: outbound.spi().0,
                })
                .is_ok();
        }
        match outbound.seal(packet, out) {
            Ok(len) => Some((len, client.address)),
            Err(esp::Error::SequenceExhausted) => {
                tracing::warn!(client = %client.address, "ESP sequence numbers exhausted");
                None
            }
            Err(e) => {
                tracing::trace!(error = %e, "outbound packet dropped");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::crypto::{AeadAlgorithm, DeterministicProvider, SecretBytes};
    use crate::esp::{InboundSa, OutboundSa, SaConfig};

    fn connected(spi_r: u64, spi: u32, virtual_ip: Ipv4Addr) -> ike::EspUpdate {
        let provider = DeterministicProvider::new(1);
        let config = SaConfig::new(AeadAlgorithm::Aes256Gcm16);
        let keys = SecretBytes::from_slice(&[7; 36]);
        ike::EspUpdate::Connected {
            spi_r,
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 4500),
            inbound: InboundSa::new(&provider, &config, EspSpi(spi), &keys).unwrap(),
            outbound: OutboundSa::new(&provider, &config, EspSpi(spi + 1), &keys).unwrap(),
            ts_i: vec![TrafficSelector::Ipv4 {
                ip_protocol: 0,
                start_port: 0,
                end_port: u16::MAX,
                start_addr: virtual_ip,
                end_addr: virtual_ip,
            }],
        }
    }

    fn ipv4_packet(dst: Ipv4Addr) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1];
        p.extend_from_slice(&dst.octets());
        p
    }

    /// Finding 1: packets for a virtual address go to the client that leased it, found through
    /// the address map; a second IKE SA claiming an address already routed gets no route and
    /// is closed, and the first client keeps receiving.
    #[test]
    fn a_second_client_claiming_a_routed_address_gets_no_route() {
        let (to_ike, mut input) = mpsc::channel(8);
        let (to_ike_datagrams, _datagrams) = mpsc::channel(8);
        let mut esp = EspLoop::new(to_ike, to_ike_datagrams);
        let lease = Ipv4Addr::new(10, 99, 0, 10);
        esp.apply(connected(1, 0x1000, lease));
        esp.apply(connected(2, 0x2000, lease));
        assert!(matches!(
            input.try_recv(),
            Ok(ike::IkeInput::Close { spi_r: 2 })
        ));
        assert_eq!(esp.clients.len(), 1);
        assert!(!esp.by_spi.contains_key(&EspSpi(0x2000)));
        let mut out = vec![0; 256];
        let (_, to) = esp.outbound(&ipv4_packet(lease), &mut out).unwrap();
        assert_eq!(to, esp.clients[&1].address);
        assert!(
            esp.outbound(&ipv4_packet(Ipv4Addr::new(10, 99, 0, 11)), &mut out)
                .is_none()
        );
        // Once the first client is gone the address routes nowhere, and can be leased again.
        esp.apply(ike::EspUpdate::Gone { spi_r: 1 });
        assert!(esp.outbound(&ipv4_packet(lease), &mut out).is_none());
        esp.apply(connected(3, 0x3000, lease));
        assert!(esp.outbound(&ipv4_packet(lease), &mut out).is_some());
        assert!(input.try_recv().is_err());
    }
}
