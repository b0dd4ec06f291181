//! The gateway task: the project's own responder with its ESP SAs and a packet device.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::DriverError;
use super::client::sleep_until;
use super::device::PacketDevice;
use super::outbound::Outbound;
use super::socket::bind_udp;
use crate::crypto::CryptoProvider;
use crate::esp::{
    self, Demux, EspSpi, Inbound, InboundSa, OutboundSa, Received, ReplayProtection, SaConfig,
};
use crate::ike::{Event, IKE_PORT, NAT_T_PORT, Responder, ResponderConfig};
use crate::wire::TrafficSelector;

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

/// One connected client.
struct Client {
    ike_spi_r: u64,
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

/// Runs the gateway until `shutdown` turns true. `clients` is kept at the number of connected
/// clients.
pub async fn run_gateway<D: PacketDevice>(
    options: GatewayOptions,
    provider: Arc<dyn CryptoProvider>,
    mut device: D,
    clients_count: &watch::Sender<usize>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DriverError> {
    let ike_local = SocketAddr::new(options.listen, options.ike_port);
    let nat_t_local = SocketAddr::new(options.listen, options.nat_t_port);
    let ike_socket = bind_udp(ike_local, None, None)?;
    let nat_t_socket = bind_udp(nat_t_local, None, None)?;
    let ike_local = ike_socket
        .local_addr()
        .map_err(DriverError::io("read the local address"))?;
    let nat_t_local = nat_t_socket
        .local_addr()
        .map_err(DriverError::io("read the local address"))?;
    let mut responder = Responder::new(provider.clone(), options.responder.clone())?;
    let mut demux = Demux::new();
    let mut clients: Vec<Client> = Vec::new();
    let mut buf = vec![0u8; BUF_LEN];
    let mut nat_t_buf = vec![0u8; BUF_LEN];
    let mut out = vec![0u8; BUF_LEN];
    let mut tun_buf = vec![0u8; BUF_LEN];
    tracing::info!(%ike_local, %nat_t_local, "gateway listening");
    loop {
        send_queued(&mut responder, &ike_socket, &nat_t_socket, &mut buf).await;
        while let Some((spi_r, event)) = responder.poll_event() {
            match event {
                Event::ChildSaEstablished(child) => {
                    let Some(address) = responder.remote(spi_r) else {
                        continue;
                    };
                    let mut config = SaConfig::new(child.encr);
                    config.esn = child.esn;
                    config.replay = options.esp_replay;
                    let (inbound, outbound) = gateway_sas(&*provider, &config, &child)?;
                    let virtual_ips = hosts(&child.ts_i);
                    tracing::info!(client = %address, ?virtual_ips, "client connected");
                    if let Some(i) = clients.iter().position(|c| c.ike_spi_r == spi_r) {
                        for spi in clients.swap_remove(i).inbound_spis {
                            demux.remove(spi);
                        }
                    }
                    clients.push(Client {
                        ike_spi_r: spi_r,
                        inbound_spis: vec![inbound.spi()],
                        outbound: Outbound::new(outbound),
                        rekey_requested: false,
                        // Where its IKE_AUTH came from: after the float to 4500 (and through any
                        // NAT) that is where its ESP comes from too (RFC 3948 §2.1).
                        address,
                        virtual_ips,
                        ts_i: child.ts_i.clone(),
                        selector_drops: 0,
                    });
                    demux.insert(inbound);
                    clients_count.send_replace(clients.len());
                }
                Event::ChildSaRekeyed { new, .. } => {
                    let Some(client) = clients.iter_mut().find(|c| c.ike_spi_r == spi_r) else {
                        continue;
                    };
                    let mut config = SaConfig::new(new.encr);
                    config.esn = new.esn;
                    config.replay = options.esp_replay;
                    let (inbound, outbound) = gateway_sas(&*provider, &config, &new)?;
                    client.inbound_spis.push(inbound.spi());
                    client.outbound.rekeyed(outbound);
                    client.ts_i.clone_from(&new.ts_i);
                    client.rekey_requested = false;
                    demux.insert(inbound);
                    tracing::info!(client = %client.address, spi_in = new.spi_r, spi_out = new.spi_i, "Child SA rekeyed");
                }
                Event::IkeSaRekeyed { suite } => {
                    tracing::info!(client = ?responder.remote(spi_r), suite = %suite, "IKE SA rekeyed");
                }
                Event::ChildSaDeleted {
                    spi_i: outbound,
                    spi_r: inbound,
                } => {
                    demux.remove(EspSpi(inbound));
                    if let Some(client) = clients.iter_mut().find(|c| c.ike_spi_r == spi_r) {
                        client.inbound_spis.retain(|s| s.0 != inbound);
                        if client.outbound.deleted(EspSpi(outbound)).is_err() {
                            // No SA is left to send to this client on: an IKE SA without a
                            // tunnel only holds the address lease. Close it.
                            tracing::info!(client = %client.address, "the client's Child SA is gone; closing its IKE SA");
                            responder.close(Instant::now(), spi_r);
                        }
                    }
                }
                Event::Failed(_) | Event::Closed => {
                    match &event {
                        Event::Failed(e) => tracing::info!(error = %e, "IKE SA failed"),
                        _ => tracing::info!("client disconnected"),
                    }
                    if let Some(i) = clients.iter().position(|c| c.ike_spi_r == spi_r) {
                        for spi in clients.swap_remove(i).inbound_spis {
                            demux.remove(spi);
                        }
                        clients_count.send_replace(clients.len());
                    }
                }
                _ => {}
            }
        }
        // What handling the events queued (a Delete, a rekey) goes out now, not at the next
        // wake-up.
        send_queued(&mut responder, &ike_socket, &nat_t_socket, &mut buf).await;
        tokio::select! {
            r = ike_socket.recv_from(&mut buf) => {
                let (n, from) = r.map_err(DriverError::io("receive on the IKE port"))?;
                let datagram = buf.get(..n).unwrap_or_default();
                responder.handle_datagram(Instant::now(), ike_local, from, datagram);
            }
            r = nat_t_socket.recv_from(&mut nat_t_buf) => {
                let (n, from) = r.map_err(DriverError::io("receive on the NAT-T port"))?;
                match demux.handle_udp4500(nat_t_buf.get(..n).unwrap_or_default(), &mut out) {
                    Ok(Received::Ike(message)) => {
                        responder.handle_datagram(Instant::now(), nat_t_local, from, message);
                    }
                    Ok(Received::Esp { spi, packet: Inbound::Ipv4(p) | Inbound::Ipv6(p) }) => {
                        let Some(c) = clients.iter_mut().find(|c| c.inbound_spis.contains(&spi)) else {
                            continue;
                        };
                        c.address = from;
                        responder.handle_inbound_traffic(Instant::now(), c.ike_spi_r);
                        // RFC 4301 §5.2: a client sends only from the addresses it was given.
                        if !esp::selectors_allow(&c.ts_i, p, esp::Direction::Source) {
                            c.selector_drops += 1;
                            tracing::debug!(client = %c.address, drops = c.selector_drops, "inner source outside the Child SA's TSi; dropped");
                            continue;
                        }
                        if let Err(e) = device.send(p).await {
                            tracing::debug!(error = %e, "packet not written to the device");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::trace!(error = %e, "inbound datagram dropped"),
                }
            }
            r = device.recv(&mut tun_buf) => {
                let n = r.map_err(DriverError::io("read from the tunnel device"))?;
                let packet = tun_buf.get(..n).unwrap_or_default();
                let Some(dst) = destination(packet) else { continue };
                let Some(client) = clients.iter_mut().find(|c| c.virtual_ips.contains(&dst)) else {
                    continue;
                };
                let outbound = client.outbound.current();
                if outbound.needs_rekey() && !client.rekey_requested {
                    client.rekey_requested = responder
                        .rekey_child_sa(Instant::now(), client.ike_spi_r, outbound.spi().0)
                        .is_ok();
                }
                match outbound.seal(packet, &mut out) {
                    Ok(len) => {
                        let datagram = out.get(..len).unwrap_or_default();
                        if let Err(e) = nat_t_socket.send_to(datagram, client.address).await {
                            tracing::trace!(error = %e, "ESP datagram not sent");
                        }
                    }
                    Err(esp::Error::SequenceExhausted) => {
                        tracing::warn!(client = %client.address, "ESP sequence numbers exhausted");
                    }
                    Err(e) => tracing::trace!(error = %e, "outbound packet dropped"),
                }
            }
            () = sleep_until(responder.poll_timeout()) => responder.handle_timeout(Instant::now()),
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Sends what the responder queued, from the socket of the port it names.
async fn send_queued(
    responder: &mut Responder,
    ike_socket: &UdpSocket,
    nat_t_socket: &UdpSocket,
    buf: &mut [u8],
) {
    while let Some(t) = responder.poll_transmit(Instant::now(), buf) {
        let socket = if t.nat_t { nat_t_socket } else { ike_socket };
        let datagram = buf.get(..t.size).unwrap_or_default();
        if let Err(e) = socket.send_to(datagram, t.destination).await {
            tracing::debug!(error = %e, "IKE datagram not sent");
        }
    }
}

/// The gateway's inbound and outbound ESP SAs of a Child SA: it receives on its own SPI with the
/// initiator-to-responder keys (RFC 7296 §2.17).
fn gateway_sas(
    provider: &dyn CryptoProvider,
    config: &SaConfig,
    child: &crate::ike::ChildSaEstablished,
) -> Result<(InboundSa, OutboundSa), DriverError> {
    Ok((
        InboundSa::new(provider, config, EspSpi(child.spi_r), &child.keys.encr_i)?,
        OutboundSa::new(provider, config, EspSpi(child.spi_i), &child.keys.encr_r)?,
    ))
}
