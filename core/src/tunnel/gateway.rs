//! [`GatewayTunnel`]: the gateway's data plane, the ESP SAs of every connected client.
//!
//! It hears from the [`Responder`] only what authenticated exchanges decided ([`EspUpdate`],
//! made by [`GatewayTunnel::esp_update`]) and asks it for little ([`GatewayRequest`]): a
//! liveness note, a rekey at the sequence-number limit, a close. Clients are found by inbound
//! SPI and by virtual address in maps, never by a scan.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::outbound::Outbound;
use super::{DropReason, EspOptions, Transmit, TunnelStats};
use crate::crypto::CryptoProvider;
use crate::esp::{self, Demux, EspSpi, Inbound, InboundSa, OutboundSa, Received};
use crate::ike::{ChildSaEstablished, Event, Responder};
use crate::wire::TrafficSelector;

/// How often the responder hears that a client's ESP is alive (for DPD, RFC 7296 §2.4).
const TRAFFIC_NOTE_INTERVAL: Duration = Duration::from_secs(1);

/// Requests queued for the responder at most; more are dropped (the data plane never waits).
const MAX_REQUESTS: usize = 4096;

/// What the data plane learns from the responder; only what authenticated exchanges decided.
pub enum EspUpdate {
    /// A client's first Child SA.
    Connected {
        /// Its IKE SA (the responder's SPI).
        spi_r: u64,
        /// Where its IKE_AUTH came from: after the float to 4500 (and through any NAT) that is
        /// where its ESP comes from too (RFC 3948 §2.1).
        address: SocketAddr,
        /// Keys of the new Child SA.
        inbound: InboundSa,
        /// Keys of the new Child SA.
        outbound: OutboundSa,
        /// The Child SA's TSi: the inner sources the client may send from (RFC 4301 §5.2).
        ts_i: Vec<TrafficSelector>,
    },
    /// A Child SA rekeyed (RFC 7296 §2.8): both SAs kept until the old one is deleted.
    Rekeyed {
        /// Its IKE SA.
        spi_r: u64,
        /// Keys of the new Child SA.
        inbound: InboundSa,
        /// Keys of the new Child SA.
        outbound: OutboundSa,
        /// The new Child SA's TSi.
        ts_i: Vec<TrafficSelector>,
    },
    /// A [`GatewayRequest::RekeyChild`] was not started (an exchange is in progress, the SA is
    /// gone, the queue was full): ask again later.
    RekeyRefused {
        /// Its IKE SA.
        spi_r: u64,
    },
    /// A Child SA was deleted.
    ChildDeleted {
        /// Its IKE SA.
        spi_r: u64,
        /// Our outbound SPI (the client's).
        outbound: EspSpi,
        /// Our inbound SPI.
        inbound: EspSpi,
    },
    /// The IKE SA failed or was closed: its client and all its SAs are gone.
    Gone {
        /// The IKE SA.
        spi_r: u64,
    },
}

/// What [`GatewayTunnel::apply`] changed that the operator is told about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// A client's tunnel is up.
    Connected {
        /// Its IKE SA.
        spi_r: u64,
        /// Where its ESP comes from.
        address: SocketAddr,
        /// The addresses it may send from (its leases).
        virtual_ips: Vec<IpAddr>,
    },
    /// Refused: `virtual_ip` is routed to another client; this client's IKE SA is closed.
    AddressTaken {
        /// Its IKE SA.
        spi_r: u64,
        /// Where it came from.
        address: SocketAddr,
        /// The address another client holds.
        virtual_ip: IpAddr,
    },
    /// The client and all its SAs are gone.
    Disconnected {
        /// Its IKE SA.
        spi_r: u64,
        /// Where its ESP came from.
        address: SocketAddr,
    },
}

/// What the data plane asks of the responder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayRequest {
    /// Authentic ESP arrived for the client whose IKE SA is `spi_r` (liveness for DPD).
    Traffic {
        /// The IKE SA.
        spi_r: u64,
        /// When.
        at: Instant,
    },
    /// The outbound SA `spi` reached its soft limit: rekey its Child SA (RFC 7296 §2.8).
    RekeyChild {
        /// The IKE SA.
        spi_r: u64,
        /// An SPI of the Child SA.
        spi: EspSpi,
    },
    /// The client has no Child SA left to send on (or claims a routed address): close its
    /// IKE SA.
    Close {
        /// The IKE SA.
        spi_r: u64,
    },
}

/// What became of a datagram on the NAT-T port.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum GatewayResult<'a> {
    /// Consumed (a keepalive, a dummy packet).
    Done,
    /// An IKE message (non-ESP marker removed): hand it to the responder.
    Ike(&'a [u8]),
    /// An authentic inner packet from a client: write it to the device.
    WriteToTun(&'a mut [u8]),
    /// Dropped, and why; no state changed.
    Dropped(DropReason),
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
    /// When the responder last heard of this client's authentic ESP.
    traffic_noted: Option<Instant>,
}

/// The ESP SAs of every connected client.
#[derive(Default)]
pub struct GatewayTunnel {
    demux: Demux,
    /// By IKE SA (the responder's SPI).
    clients: HashMap<u64, Client>,
    /// Inbound ESP SPI to IKE SA.
    by_spi: HashMap<EspSpi, u64>,
    /// Virtual address (the client's lease) to IKE SA: where packets from the device go.
    by_address: HashMap<IpAddr, u64>,
    requests: VecDeque<GatewayRequest>,
    stats: TunnelStats,
}

impl GatewayTunnel {
    /// No clients yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// The counters, over all clients.
    pub fn stats(&self) -> TunnelStats {
        self.stats
    }

    /// The next request for the responder.
    pub fn poll_request(&mut self) -> Option<GatewayRequest> {
        self.requests.pop_front()
    }

    fn request(&mut self, request: GatewayRequest) -> bool {
        if self.requests.len() >= MAX_REQUESTS {
            return false;
        }
        self.requests.push_back(request);
        true
    }

    /// The data plane's update for the responder's `event` on the IKE SA `spi_r`, if it has
    /// one; [`Event::IkeSaEstablished`] and the like concern only the IKE side.
    ///
    /// # Errors
    ///
    /// The ESP SAs of a new Child SA could not be keyed.
    pub fn esp_update(
        provider: &dyn CryptoProvider,
        esp: &EspOptions,
        responder: &Responder,
        spi_r: u64,
        event: &Event,
    ) -> Result<Option<EspUpdate>, esp::Error> {
        Ok(Some(match event {
            Event::ChildSaEstablished(child) => {
                let Some(address) = responder.remote(spi_r) else {
                    return Ok(None);
                };
                let (inbound, outbound) = gateway_sas(provider, esp, child)?;
                EspUpdate::Connected {
                    spi_r,
                    address,
                    inbound,
                    outbound,
                    ts_i: child.ts_i.clone(),
                }
            }
            // A re-created Child SA stays within the selectors of the one it replaces
            // (`ike::session::create_child`), so the client's leases are unchanged.
            Event::ChildSaRekeyed { new, .. } | Event::ChildSaCreated(new) => {
                let (inbound, outbound) = gateway_sas(provider, esp, new)?;
                EspUpdate::Rekeyed {
                    spi_r,
                    inbound,
                    outbound,
                    ts_i: new.ts_i.clone(),
                }
            }
            Event::ChildSaDeleted(child) => EspUpdate::ChildDeleted {
                spi_r,
                outbound: child.spi_i,
                inbound: child.spi_r,
            },
            Event::Failed(_) | Event::Closed => EspUpdate::Gone { spi_r },
            _ => return Ok(None),
        }))
    }

    /// Applies what an authenticated IKE exchange decided; says what a log should report.
    pub fn apply(&mut self, update: EspUpdate) -> Option<Applied> {
        match update {
            EspUpdate::Connected {
                spi_r,
                address,
                inbound,
                outbound,
                ts_i,
            } => {
                self.remove(spi_r);
                let virtual_ips = hosts(&ts_i);
                // The responder leases each address once; should two clients still claim one,
                // the first keeps it and the second gets no tunnel.
                if let Some(&virtual_ip) = virtual_ips
                    .iter()
                    .find(|ip| self.by_address.get(ip).is_some_and(|&o| o != spi_r))
                {
                    self.request(GatewayRequest::Close { spi_r });
                    return Some(Applied::AddressTaken {
                        spi_r,
                        address,
                        virtual_ip,
                    });
                }
                for ip in &virtual_ips {
                    self.by_address.insert(*ip, spi_r);
                }
                self.by_spi.insert(inbound.spi(), spi_r);
                self.clients.insert(
                    spi_r,
                    Client {
                        inbound_spis: vec![inbound.spi()],
                        outbound: Outbound::new(outbound),
                        rekey_requested: false,
                        address,
                        virtual_ips: virtual_ips.clone(),
                        ts_i,
                        traffic_noted: None,
                    },
                );
                self.demux.insert(inbound);
                return Some(Applied::Connected {
                    spi_r,
                    address,
                    virtual_ips,
                });
            }
            EspUpdate::Rekeyed {
                spi_r,
                inbound,
                outbound,
                ts_i,
            } => {
                let client = self.clients.get_mut(&spi_r)?;
                client.inbound_spis.push(inbound.spi());
                client.outbound.rekeyed(outbound);
                client.ts_i = ts_i;
                client.rekey_requested = false;
                self.stats.child_sa_rekeys += 1;
                self.by_spi.insert(inbound.spi(), spi_r);
                self.demux.insert(inbound);
            }
            EspUpdate::RekeyRefused { spi_r } => {
                if let Some(client) = self.clients.get_mut(&spi_r) {
                    client.rekey_requested = false;
                }
            }
            EspUpdate::ChildDeleted {
                spi_r,
                outbound,
                inbound,
            } => {
                let client = self.clients.get_mut(&spi_r)?;
                // Only this client's own SAs: another IKE SA cannot delete them.
                if client.inbound_spis.contains(&inbound) {
                    self.demux.remove(inbound);
                    self.by_spi.remove(&inbound);
                    client.inbound_spis.retain(|s| *s != inbound);
                }
                // The last one gone leaves nothing to send on until a new Child SA comes (we
                // or the client re-create it); the IKE SA deletes itself if none does (20 s).
                let _ = client.outbound.deleted(outbound);
            }
            EspUpdate::Gone { spi_r } => {
                return self
                    .remove(spi_r)
                    .map(|address| Applied::Disconnected { spi_r, address });
            }
        }
        None
    }

    /// Forgets client `spi_r`; returns where it was.
    fn remove(&mut self, spi_r: u64) -> Option<SocketAddr> {
        let client = self.clients.remove(&spi_r)?;
        let address = client.address;
        for spi in client.inbound_spis {
            self.demux.remove(spi);
            self.by_spi.remove(&spi);
        }
        for ip in client.virtual_ips {
            if self.by_address.get(&ip) == Some(&spi_r) {
                self.by_address.remove(&ip);
            }
        }
        Some(address)
    }

    /// A datagram from the NAT-T port. The result borrows `out` for an inner packet.
    pub fn handle_udp<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
        out: &'a mut [u8],
    ) -> GatewayResult<'a> {
        let result = self.receive(now, from, datagram, out);
        if let GatewayResult::Dropped(reason) = &result {
            self.stats.count_drop(reason);
        }
        result
    }

    fn receive<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
        out: &'a mut [u8],
    ) -> GatewayResult<'a> {
        let (spi, p) = match self.demux.handle_udp4500(datagram, out) {
            Ok(Received::Ike(message)) => return GatewayResult::Ike(message),
            Ok(Received::Esp {
                spi,
                packet: Inbound::Ipv4(p) | Inbound::Ipv6(p),
            }) => (spi, p),
            Ok(Received::Esp { .. } | Received::NatKeepalive) => return GatewayResult::Done,
            Err(e) => return GatewayResult::Dropped(DropReason::Esp(e)),
        };
        let Some(&spi_r) = self.by_spi.get(&spi) else {
            return GatewayResult::Dropped(DropReason::NotUp);
        };
        let Some(c) = self.clients.get_mut(&spi_r) else {
            return GatewayResult::Dropped(DropReason::NotUp);
        };
        // Authentic: the client may have moved behind its NAT (RFC 3948 §2.1).
        c.address = from;
        let note = c
            .traffic_noted
            .is_none_or(|t| now.saturating_duration_since(t) >= TRAFFIC_NOTE_INTERVAL);
        // RFC 4301 §5.2: a client sends only from the addresses it was given.
        let allowed = esp::selectors_allow(&c.ts_i, p, esp::Direction::Source);
        if note
            && self.request(GatewayRequest::Traffic { spi_r, at: now })
            && let Some(c) = self.clients.get_mut(&spi_r)
        {
            c.traffic_noted = Some(now);
        }
        if !allowed {
            return GatewayResult::Dropped(DropReason::Selector);
        }
        self.stats.bytes_in += p.len() as u64;
        self.stats.packets_in += 1;
        GatewayResult::WriteToTun(p)
    }

    /// A packet from the device, sealed into `out` for the client whose virtual address it is
    /// sent to; `None` (counted) when no client has that address or it cannot be sealed.
    pub fn handle_tun_packet(
        &mut self,
        _now: Instant,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        let Some(spi_r) = destination(packet).and_then(|ip| self.by_address.get(&ip).copied())
        else {
            self.stats.count_drop(&DropReason::NotUp);
            return None;
        };
        let client = self.clients.get_mut(&spi_r)?;
        let address = client.address;
        let Some(outbound) = client.outbound.current() else {
            // Its Child SA is being re-created.
            self.stats.count_drop(&DropReason::NotUp);
            return None;
        };
        let sealed = outbound.seal(packet, out);
        let rekey = (outbound.needs_rekey() && !client.rekey_requested).then(|| outbound.spi());
        if let Some(spi) = rekey {
            client.rekey_requested = true;
            if !self.request(GatewayRequest::RekeyChild { spi_r, spi })
                && let Some(c) = self.clients.get_mut(&spi_r)
            {
                c.rekey_requested = false;
            }
        }
        match sealed {
            Ok(size) => {
                self.stats.bytes_out += packet.len() as u64;
                self.stats.packets_out += 1;
                Some(Transmit {
                    destination: address,
                    size,
                    nat_t: true,
                })
            }
            Err(e) => {
                self.stats.count_drop(&DropReason::Esp(e));
                None
            }
        }
    }

    /// Where the client of IKE SA `spi_r` sends ESP from.
    pub fn client_address(&self, spi_r: u64) -> Option<SocketAddr> {
        self.clients.get(&spi_r).map(|c| c.address)
    }
}

/// The gateway's inbound and outbound ESP SAs of a Child SA: it receives on its own SPI with
/// the initiator-to-responder keys (RFC 7296 §2.17).
fn gateway_sas(
    provider: &dyn CryptoProvider,
    esp: &EspOptions,
    child: &ChildSaEstablished,
) -> Result<(InboundSa, OutboundSa), esp::Error> {
    let config = esp.sa_config(child);
    Ok((
        InboundSa::new(provider, &config, child.spi_r, &child.keys.encr_i)?,
        OutboundSa::new(provider, &config, child.spi_i, &child.keys.encr_r)?,
    ))
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::crypto::{AeadAlgorithm, DeterministicProvider, SecretBytes};
    use crate::esp::SaConfig;

    fn connected(spi_r: u64, spi: u32, virtual_ip: Ipv4Addr) -> EspUpdate {
        let provider = DeterministicProvider::new(1);
        let config = SaConfig::new(AeadAlgorithm::Aes256Gcm16);
        let keys = SecretBytes::from_slice(&[7; 36]);
        EspUpdate::Connected {
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

    /// Security review finding 1: packets for a virtual address go to the client that leased
    /// it, found through the address map; a second IKE SA claiming an address already routed
    /// gets no route and is closed, and the first client keeps receiving.
    #[test]
    fn a_second_client_claiming_a_routed_address_gets_no_route() {
        let now = Instant::now();
        let mut gw = GatewayTunnel::new();
        let lease = Ipv4Addr::new(10, 99, 0, 10);
        let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 4500);
        // Each outcome is reported, for the operator's log.
        assert_eq!(
            gw.apply(connected(1, 0x1000, lease)),
            Some(Applied::Connected {
                spi_r: 1,
                address: client,
                virtual_ips: vec![IpAddr::V4(lease)],
            })
        );
        assert_eq!(
            gw.apply(connected(2, 0x2000, lease)),
            Some(Applied::AddressTaken {
                spi_r: 2,
                address: client,
                virtual_ip: IpAddr::V4(lease),
            })
        );
        assert_eq!(gw.poll_request(), Some(GatewayRequest::Close { spi_r: 2 }));
        assert_eq!(gw.clients(), 1);
        assert!(!gw.by_spi.contains_key(&EspSpi(0x2000)));
        let mut out = vec![0; 256];
        let t = gw
            .handle_tun_packet(now, &ipv4_packet(lease), &mut out)
            .unwrap();
        assert_eq!(Some(t.destination), gw.client_address(1));
        let other = ipv4_packet(Ipv4Addr::new(10, 99, 0, 11));
        assert!(gw.handle_tun_packet(now, &other, &mut out).is_none());
        assert_eq!(gw.stats().not_up_drops, 1);
        // Once the first client is gone the address routes nowhere, and can be leased again.
        assert_eq!(
            gw.apply(EspUpdate::Gone { spi_r: 1 }),
            Some(Applied::Disconnected {
                spi_r: 1,
                address: client,
            })
        );
        assert_eq!(gw.apply(EspUpdate::Gone { spi_r: 1 }), None);
        assert!(
            gw.handle_tun_packet(now, &ipv4_packet(lease), &mut out)
                .is_none()
        );
        gw.apply(connected(3, 0x3000, lease));
        assert!(
            gw.handle_tun_packet(now, &ipv4_packet(lease), &mut out)
                .is_some()
        );
        assert_eq!(gw.poll_request(), None);
    }
}
