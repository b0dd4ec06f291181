//! `TunnelPair`: a [`ClientTunnel`] and a gateway ([`Responder`] + [`GatewayTunnel`]) joined by
//! in-memory UDP links on a virtual clock, carrying IKE and ESP both ways and inner packets
//! in and out of both "devices". Link faults: loss, duplication, reordering, cuts.
//!
//! The driver runs exactly these state machines; these tests prove the tunnel's data-plane
//! policy (make-before-break, rekeys under traffic, the sequence-number limit, forged packets,
//! dead peers) without sockets or real time.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::Rng;

use super::pair::{CLIENT, client_config, gateway_config, rng};
use crate::crypto::{CryptoProvider, DeterministicProvider};
use crate::esp;
use crate::ike::{CryptoPolicy, InitiatorConfig, Lifetime, Mode, Responder, ResponderConfig};
use crate::tunnel::{
    ClientTunnel, DownReason, DropReason, EspOptions, GatewayRequest, GatewayResult, GatewayTunnel,
    TunnelEvent, TunnelResult,
};

const GATEWAY_IKE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 500);
const GATEWAY_NAT_T: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 4500);
const BUF: usize = 65_536;

/// A UDP datagram in flight.
#[derive(Debug, Clone)]
struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// What happens to datagrams on the links.
#[derive(Default)]
struct Faults {
    rng: Option<ChaCha20Rng>,
    loss: f64,
    duplicate: f64,
    reorder: bool,
    /// Everything towards the client is dropped (a dead gateway, a cut cable).
    cut: bool,
    /// Deliver what goes to the client before what goes to the gateway.
    client_first: bool,
}

struct TunnelPair {
    now: Instant,
    client: ClientTunnel,
    responder: Responder,
    gateway: GatewayTunnel,
    gateway_provider: Arc<dyn CryptoProvider>,
    gateway_esp: EspOptions,
    to_gateway: VecDeque<Datagram>,
    to_client: VecDeque<Datagram>,
    /// Inner packets written to the client's device.
    client_rx: Vec<Vec<u8>>,
    /// Inner packets written to the gateway's device.
    gateway_rx: Vec<Vec<u8>>,
    client_events: Vec<TunnelEvent>,
    faults: Faults,
}

/// An IPv4/UDP packet from `src` to `dst` whose payload is `id`.
fn packet(src: Ipv4Addr, dst: Ipv4Addr, id: u32) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 12, 0, 0]);
    p.extend_from_slice(&id.to_be_bytes());
    p
}

fn id_of(p: &[u8]) -> u32 {
    u32::from_be_bytes(p[28..32].try_into().unwrap())
}

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

impl TunnelPair {
    fn new(
        seed: u64,
        client: InitiatorConfig,
        client_esp: EspOptions,
        gw: ResponderConfig,
    ) -> Self {
        let now = Instant::now();
        let client = ClientTunnel::new(
            Arc::new(DeterministicProvider::new(seed)),
            client,
            client_esp,
            now,
            CLIENT,
            GATEWAY_IKE,
        )
        .expect("client starts");
        let gateway_provider: Arc<dyn CryptoProvider> =
            Arc::new(DeterministicProvider::new(seed ^ 0x5eed));
        let responder = Responder::new(gateway_provider.clone(), gw).expect("responder starts");
        let mut pair = Self {
            now,
            client,
            responder,
            gateway: GatewayTunnel::new(),
            gateway_provider,
            gateway_esp: EspOptions::default(),
            to_gateway: VecDeque::new(),
            to_client: VecDeque::new(),
            client_rx: Vec::new(),
            gateway_rx: Vec::new(),
            client_events: Vec::new(),
            faults: Faults::default(),
        };
        pair.collect();
        pair
    }

    /// A hybrid tunnel with `client_lifetime` for the client's Child SAs (the gateway's are
    /// twice as long, so the client rekeys) and `ike_lifetime` for its IKE SA.
    fn with_lifetimes(seed: u64, child: Duration, ike: Duration, esp: EspOptions) -> Self {
        let mut c = client_config(Mode::Hybrid);
        c.force_udp_encapsulation = true;
        c.child_lifetime = Lifetime::new(child);
        c.ike_lifetime = Lifetime::new(ike);
        c.dpd_interval = Some(Duration::from_secs(30));
        let mut g = gateway_config(vec![CryptoPolicy::for_mode(Mode::Hybrid)]);
        g.child_lifetime = Lifetime::new(child * 2);
        g.ike_lifetime = Lifetime::new(ike * 2);
        Self::new(seed, c, esp, g)
    }

    /// The client's virtual address, once up.
    fn virtual_ip(&self) -> Ipv4Addr {
        self.client_events
            .iter()
            .find_map(|e| match e {
                TunnelEvent::Up(up) => up.config.virtual_ips.iter().find_map(|(ip, _)| match ip {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                }),
                _ => None,
            })
            .expect("the tunnel is up with a virtual IPv4 address")
    }

    fn roll(&mut self, p: f64) -> bool {
        match self.faults.rng.as_mut() {
            Some(rng) if p > 0.0 => f64::from(rng.next_u32()) / f64::from(u32::MAX) < p,
            _ => false,
        }
    }

    /// Puts a datagram on a link, through the faults.
    fn send(&mut self, d: Datagram) {
        let towards_client = d.to.ip() == CLIENT.ip();
        if (towards_client && self.faults.cut) || self.roll(self.faults.loss) {
            return;
        }
        let copies = if self.roll(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if towards_client {
                self.to_client.push_back(d.clone());
            } else {
                self.to_gateway.push_back(d.clone());
            }
        }
    }

    /// Moves what every side queued onto the links, and between responder and data plane.
    fn collect(&mut self) {
        let mut buf = vec![0u8; BUF];
        loop {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit(self.now, &mut buf) {
                moved = true;
                let d = Datagram {
                    from: CLIENT,
                    to: t.destination,
                    bytes: buf[..t.size].to_vec(),
                };
                self.send(d);
            }
            // Events first, as the driver does: the data plane has a Child SA's keys before the
            // response that lets the client use it leaves.
            while let Some((spi_r, event)) = self.responder.poll_event() {
                moved = true;
                let update = GatewayTunnel::esp_update(
                    &*self.gateway_provider,
                    &self.gateway_esp,
                    &self.responder,
                    spi_r,
                    &event,
                )
                .expect("ESP SAs keyed");
                if let Some(update) = update {
                    self.gateway.apply(update);
                }
            }
            while let Some(request) = self.gateway.poll_request() {
                moved = true;
                match request {
                    GatewayRequest::Traffic { spi_r, at } => {
                        self.responder.handle_inbound_traffic(at, spi_r);
                    }
                    GatewayRequest::RekeyChild { spi_r, spi } => {
                        let _ = self.responder.rekey_child_sa(self.now, spi_r, spi);
                    }
                    GatewayRequest::Close { spi_r } => self.responder.close(self.now, spi_r),
                }
            }
            while let Some(t) = self.responder.poll_transmit(self.now, &mut buf) {
                moved = true;
                let from = if t.nat_t { GATEWAY_NAT_T } else { GATEWAY_IKE };
                let d = Datagram {
                    from,
                    to: t.destination,
                    bytes: buf[..t.size].to_vec(),
                };
                self.send(d);
            }
            while let Some(e) = self.client.poll_event() {
                moved = true;
                self.client_events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    fn deliver_to_gateway(&mut self, d: &Datagram) {
        let mut out = vec![0u8; BUF];
        if d.to.port() == GATEWAY_IKE.port() {
            self.responder
                .handle_datagram(self.now, GATEWAY_IKE, d.from, &d.bytes);
            return;
        }
        match self
            .gateway
            .handle_udp(self.now, d.from, &d.bytes, &mut out)
        {
            GatewayResult::Ike(m) => {
                let m = m.to_vec();
                self.responder
                    .handle_datagram(self.now, GATEWAY_NAT_T, d.from, &m);
            }
            GatewayResult::WriteToTun(p) => self.gateway_rx.push(p.to_vec()),
            GatewayResult::Done | GatewayResult::Dropped(_) => {}
        }
    }

    fn deliver_to_client(&mut self, d: &Datagram) -> TunnelResult<'static> {
        let mut out = vec![0u8; BUF];
        match self.client.handle_udp(self.now, d.from, &d.bytes, &mut out) {
            TunnelResult::WriteToTun(p) => {
                self.client_rx.push(p.to_vec());
                TunnelResult::Done
            }
            TunnelResult::Done => TunnelResult::Done,
            TunnelResult::Dropped(r) => TunnelResult::Dropped(r),
        }
    }

    /// Delivers what is in flight (shuffled when reordering) until the links are empty.
    fn settle(&mut self) {
        self.collect();
        for _ in 0..10_000 {
            if self.to_gateway.is_empty() && self.to_client.is_empty() {
                return;
            }
            let order = if self.faults.client_first {
                [true, false]
            } else {
                [false, true]
            };
            for towards_client in order {
                let link = if towards_client {
                    &mut self.to_client
                } else {
                    &mut self.to_gateway
                };
                let mut batch: Vec<Datagram> = link.drain(..).collect();
                if self.faults.reorder
                    && let Some(rng) = self.faults.rng.as_mut()
                {
                    for i in (1..batch.len()).rev() {
                        let j = usize::try_from(rng.next_u64() % (i as u64 + 1)).unwrap();
                        batch.swap(i, j);
                    }
                }
                for d in &batch {
                    if towards_client {
                        let _ = self.deliver_to_client(d);
                    } else {
                        self.deliver_to_gateway(d);
                    }
                    self.collect();
                }
            }
        }
        panic!("links did not settle");
    }

    /// Fires every timer up to `until`, settling the links after each; the clock ends at
    /// `until`.
    fn run_until(&mut self, until: Instant) {
        self.settle();
        for _ in 0..100_000 {
            let next = [self.client.poll_timeout(), self.responder.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.client.handle_timeout(self.now);
                    self.responder.handle_timeout(self.now);
                    self.settle();
                }
                _ => {
                    self.now = self.now.max(until);
                    return;
                }
            }
        }
        panic!("timers did not settle");
    }

    /// Runs until the tunnel is up.
    fn connect(&mut self) {
        let deadline = self.now + Duration::from_secs(60);
        while !self.client.is_up() {
            assert!(self.now < deadline, "no tunnel: {:?}", self.client_events);
            let step = self.now + Duration::from_millis(100);
            self.run_until(step);
        }
    }

    /// One inner packet from the client's device into the tunnel.
    fn client_sends(&mut self, id: u32) {
        let p = packet(self.virtual_ip(), SERVER, id);
        let mut out = vec![0u8; BUF];
        if let Some(t) = self.client.handle_tun_packet(self.now, &p, &mut out) {
            let d = Datagram {
                from: CLIENT,
                to: t.destination,
                bytes: out[..t.size].to_vec(),
            };
            self.send(d);
        }
        self.collect();
    }

    /// One inner packet from the gateway's device, to the client; the datagram if sealed.
    fn gateway_sends(&mut self, id: u32) -> Option<Datagram> {
        let p = packet(SERVER, self.virtual_ip(), id);
        let mut out = vec![0u8; BUF];
        let t = self.gateway.handle_tun_packet(self.now, &p, &mut out)?;
        let d = Datagram {
            from: GATEWAY_NAT_T,
            to: t.destination,
            bytes: out[..t.size].to_vec(),
        };
        self.send(d.clone());
        self.collect();
        Some(d)
    }

    /// Sends one packet each way every `every` until `until`; returns how many went each way.
    fn traffic_until(&mut self, until: Instant, every: Duration) -> u32 {
        let mut id = 0;
        while self.now < until {
            self.client_sends(id);
            self.gateway_sends(id);
            id += 1;
            let next = self.now + every;
            self.run_until(next);
        }
        self.settle();
        id
    }

    fn down_reason(&self) -> Option<&DownReason> {
        self.client_events.iter().find_map(|e| match e {
            TunnelEvent::Down(r) => Some(r),
            _ => None,
        })
    }
}

fn ids(packets: &[Vec<u8>]) -> Vec<u32> {
    packets.iter().map(|p| id_of(p)).collect()
}

/// Lost packets (ids sent but never received), and whether any arrived twice.
fn losses(sent: u32, received: &[Vec<u8>]) -> (u32, bool) {
    let mut seen = vec![0u8; sent as usize];
    for id in ids(received) {
        seen[id as usize] += 1;
    }
    let lost = seen.iter().filter(|&&n| n == 0).count();
    (u32::try_from(lost).unwrap(), seen.iter().any(|&n| n > 1))
}

/// Four hours of virtual time with Child SAs rekeyed every ~10 minutes and the IKE SA every
/// ~hour, one packet each way every second: the tunnel never goes down, every rekey repeats
/// X25519 + ML-KEM, and make-before-break loses at most one packet per rekey (none, on a
/// lossless link), each way.
#[test]
fn four_hours_of_rekeys_under_traffic_both_ways_lose_at_most_one_packet_per_rekey() {
    let mut pair = TunnelPair::with_lifetimes(
        1,
        Duration::from_secs(600),
        Duration::from_secs(3600),
        EspOptions::default(),
    );
    pair.connect();
    let start = pair.now;
    let sent = pair.traffic_until(
        start + Duration::from_secs(4 * 3600),
        Duration::from_secs(1),
    );
    let stats = pair.client.stats();
    assert!(stats.child_sa_rekeys >= 20, "{stats:?}");
    assert!(stats.ike_sa_rekeys >= 3, "{stats:?}");
    assert_eq!(pair.down_reason(), None);
    assert!(pair.client.is_up());
    let rekeys = u32::try_from(stats.child_sa_rekeys).unwrap();
    for (way, received) in [("up", &pair.gateway_rx), ("down", &pair.client_rx)] {
        let (lost, duplicated) = losses(sent, received);
        assert!(
            lost <= rekeys,
            "{way}: {lost} of {sent} packets lost across {rekeys} rekeys"
        );
        assert!(!duplicated, "{way}: a packet arrived twice");
    }
    // Every rekey repeated the hybrid key exchange: the suite stayed quantum-safe.
    for e in &pair.client_events {
        if let TunnelEvent::IkeSaRekeyed { suite } = e {
            assert!(suite.quantum_safe, "{suite}");
        }
    }
    // No SA piles up: the data plane holds the current Child SA (two while one is replaced).
    assert_eq!(pair.gateway.clients(), 1);
}

/// 10 % of all datagrams lost, both ways, IKE and ESP alike, for two virtual hours of rekeys:
/// retransmissions carry every exchange through, the tunnel stays up, and about nine in ten
/// packets arrive.
#[test]
fn ten_percent_loss_the_tunnel_stays_up_through_rekeys() {
    let mut pair = TunnelPair::with_lifetimes(
        2,
        Duration::from_secs(600),
        Duration::from_secs(3600),
        EspOptions::default(),
    );
    pair.connect();
    pair.faults = Faults {
        rng: Some(rng(22)),
        loss: 0.10,
        duplicate: 0.02,
        reorder: true,
        ..Faults::default()
    };
    let start = pair.now;
    let sent = pair.traffic_until(
        start + Duration::from_secs(2 * 3600),
        Duration::from_secs(1),
    );
    let stats = pair.client.stats();
    assert_eq!(pair.down_reason(), None, "{stats:?}");
    assert!(stats.child_sa_rekeys >= 10, "{stats:?}");
    assert!(stats.ike_sa_rekeys >= 1, "{stats:?}");
    for (way, received) in [("up", &pair.gateway_rx), ("down", &pair.client_rx)] {
        let (lost, duplicated) = losses(sent, received);
        let delivered = f64::from(sent - lost) / f64::from(sent);
        assert!(
            (0.80..0.97).contains(&delivered),
            "{way}: {delivered:.3} of {sent} delivered"
        );
        // Duplicated datagrams are caught by anti-replay, never delivered twice.
        assert!(!duplicated, "{way}: a packet arrived twice");
    }
}

/// Make-before-break: a packet sealed on the old SA that arrives after the rekey completed is
/// still accepted, until the old SA's Delete; then the same SPI is unknown.
#[test]
fn the_old_sa_keeps_receiving_until_its_delete() {
    let mut pair = TunnelPair::with_lifetimes(
        3,
        Duration::from_secs(3600),
        Duration::from_secs(7200),
        EspOptions::default(),
    );
    pair.connect();
    // Sealed on the first SA, held back in the network.
    let late = pair.gateway_sends(1).expect("sealed");
    pair.to_client.clear();
    pair.client.rekey_child_sa(pair.now).unwrap();
    pair.collect();
    // Deliver one datagram at a time until the client switched to the new SA.
    let rekeyed = |pair: &TunnelPair| {
        pair.client_events
            .iter()
            .any(|e| matches!(e, TunnelEvent::ChildSaRekeyed { .. }))
    };
    for _ in 0..100 {
        if rekeyed(&pair) {
            break;
        }
        if let Some(d) = pair.to_gateway.pop_front() {
            pair.deliver_to_gateway(&d);
        } else if let Some(d) = pair.to_client.pop_front() {
            let _ = pair.deliver_to_client(&d);
        }
        pair.collect();
    }
    assert!(rekeyed(&pair), "{:?}", pair.client_events);
    // New packets already go out on the new SA ...
    assert!(pair.gateway_sends(2).is_some());
    // ... and the late one on the old SA still opens.
    assert_eq!(pair.deliver_to_client(&late), TunnelResult::Done);
    assert_eq!(ids(&pair.client_rx), vec![1]);
    // The Delete of the old SA completes; a copy of the late packet is now refused (and
    // changes nothing).
    pair.settle();
    assert_eq!(ids(&pair.client_rx), vec![1, 2]);
    let before = pair.client.stats();
    assert!(matches!(
        pair.deliver_to_client(&late),
        TunnelResult::Dropped(DropReason::Esp(esp::Error::UnknownSpi(_)))
    ));
    assert_eq!(pair.client.stats().packets_in, before.packets_in);
    pair.client_sends(3);
    pair.settle();
    assert_eq!(ids(&pair.gateway_rx), vec![3]);
}

/// A packet that fails its integrity check changes no state: its sequence number is not
/// marked seen, the replay window does not move, the ESP destination does not float to the
/// forger's address, and the genuine packets still arrive.
#[test]
fn a_forged_esp_packet_changes_no_state() {
    let mut pair = TunnelPair::with_lifetimes(
        4,
        Duration::from_secs(3600),
        Duration::from_secs(7200),
        EspOptions::default(),
    );
    pair.connect();
    let genuine: Vec<Datagram> = (0..3).map(|id| pair.gateway_sends(id).unwrap()).collect();
    pair.to_client.clear();
    let destination = pair.client.esp_destination();
    let forger = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 4500);
    for (i, d) in genuine.iter().enumerate() {
        // The same SPI and sequence number, one ciphertext bit flipped; and one far ahead of
        // the window.
        let mut flipped = d.clone();
        flipped.from = forger;
        let last = flipped.bytes.len() - 1;
        flipped.bytes[last] ^= 1;
        let mut ahead = flipped.clone();
        ahead.bytes[4..8].copy_from_slice(&(1_000_000 + i as u32).to_be_bytes());
        for forged in [&flipped, &ahead] {
            assert_eq!(
                pair.deliver_to_client(forged),
                TunnelResult::Dropped(DropReason::Esp(esp::Error::AuthenticationFailed))
            );
        }
    }
    assert_eq!(pair.client.esp_destination(), destination);
    assert_eq!(pair.client.stats().esp_drops, 6);
    // The genuine packets, in reverse order, all within the untouched window.
    for d in genuine.iter().rev() {
        assert_eq!(pair.deliver_to_client(d), TunnelResult::Done);
    }
    assert_eq!(ids(&pair.client_rx), vec![2, 1, 0]);
    // And a true replay is refused.
    assert!(matches!(
        pair.deliver_to_client(&genuine[0]),
        TunnelResult::Dropped(DropReason::Esp(esp::Error::Replay(_)))
    ));
}

/// An outbound SA near its sequence-number limit asks for a rekey before it runs out: with a
/// soft limit of 100 and a hard limit of 150 packets, 1000 packets go through several Child SAs
/// with none refused for exhausted sequence numbers.
#[test]
fn the_sequence_number_limit_rekeys_before_the_sa_runs_out() {
    let esp = EspOptions {
        soft_limit: Some(100),
        hard_limit: Some(150),
        ..EspOptions::default()
    };
    let mut pair =
        TunnelPair::with_lifetimes(5, Duration::from_secs(3600), Duration::from_secs(7200), esp);
    pair.connect();
    let start = pair.now;
    let sent = 1000;
    for id in 0..sent {
        pair.client_sends(id);
        let next = pair.now + Duration::from_millis(10);
        pair.run_until(next);
    }
    pair.settle();
    let stats = pair.client.stats();
    assert!(stats.child_sa_rekeys >= 6, "{stats:?}");
    assert_eq!(pair.down_reason(), None);
    assert_eq!(stats.packets_out, u64::from(sent), "{stats:?}");
    let (lost, _) = losses(sent, &pair.gateway_rx);
    assert!(
        lost <= u32::try_from(stats.child_sa_rekeys).unwrap(),
        "{lost} lost"
    );
    assert!(pair.now - start < Duration::from_secs(60));
}

/// Both sides rekey the same Child SA at once (RFC 7296 §2.8.1): the collision resolves, the
/// redundant SA is deleted, and traffic keeps flowing both ways on the survivor.
#[test]
fn a_rekey_collision_under_traffic_keeps_the_tunnel() {
    let mut pair = TunnelPair::with_lifetimes(
        6,
        Duration::from_secs(3600),
        Duration::from_secs(7200),
        EspOptions::default(),
    );
    pair.connect();
    // Reordering lets a Delete overtake a response: then a side may hear that the SA it just
    // switched to is redundant before its own rekey completes, and must fall back.
    pair.faults.rng = Some(rng(66));
    pair.faults.reorder = true;
    let rounds = 16;
    for round in 0..rounds {
        // Both orders of arrival: who hears of the other's rekey first decides which SA a side
        // sends on while the collision resolves.
        pair.faults.client_first = round % 2 == 1;
        let spi_r = pair.responder.established_ids()[0];
        let spi = pair.responder.child_sas(spi_r)[0].spi_r;
        pair.client.rekey_child_sa(pair.now).unwrap();
        pair.responder.rekey_child_sa(pair.now, spi_r, spi).unwrap();
        pair.collect();
        let until = pair.now + Duration::from_secs(30);
        pair.traffic_until(until, Duration::from_secs(1));
        assert_eq!(pair.down_reason(), None, "round {round}");
    }
    let before = (pair.client_rx.len(), pair.gateway_rx.len());
    pair.client_sends(1_000);
    pair.gateway_sends(1_000);
    pair.settle();
    assert_eq!(pair.client_rx.len(), before.0 + 1);
    assert_eq!(pair.gateway_rx.len(), before.1 + 1);
    assert!(pair.client.stats().child_sa_rekeys >= rounds);
}

/// A gateway that stops answering: liveness checks and their retransmissions run out and the
/// tunnel goes down with a reason (for the supervisor to reconnect), in bounded time.
#[test]
fn a_dead_gateway_takes_the_tunnel_down() {
    let mut pair = TunnelPair::with_lifetimes(
        7,
        Duration::from_secs(3600),
        Duration::from_secs(7200),
        EspOptions::default(),
    );
    pair.connect();
    pair.faults.cut = true;
    let start = pair.now;
    while pair.down_reason().is_none() && pair.now - start < Duration::from_secs(3600) {
        pair.client_sends(0);
        let next = pair.now + Duration::from_secs(5);
        pair.run_until(next);
    }
    assert!(
        matches!(pair.down_reason(), Some(DownReason::Ike(_))),
        "{:?}",
        pair.down_reason()
    );
    assert!(pair.client.is_down());
    assert!(
        pair.now - start < Duration::from_secs(600),
        "{:?}",
        pair.now - start
    );
    // Down is final: nothing more is sent or reported.
    let events = pair.client_events.len();
    pair.faults.cut = false;
    pair.client_sends(1);
    pair.run_until(pair.now + Duration::from_secs(600));
    assert_eq!(pair.client_events.len(), events);
    assert!(pair.to_gateway.is_empty());
}

/// `close` deletes the IKE SA at the gateway and ends with `Closed`; the gateway's data plane
/// forgets the client.
#[test]
fn close_deletes_the_sa_at_the_gateway() {
    let mut pair = TunnelPair::with_lifetimes(
        8,
        Duration::from_secs(3600),
        Duration::from_secs(7200),
        EspOptions::default(),
    );
    pair.connect();
    assert_eq!(pair.gateway.clients(), 1);
    pair.client.close(pair.now);
    pair.settle();
    assert_eq!(pair.down_reason(), Some(&DownReason::Closed));
    assert_eq!(pair.gateway.clients(), 0);
    assert!(pair.responder.established_ids().is_empty());
}

/// A Child SA lifetime that ends before any rekey: hard after 10 minutes, rekey after two hours.
const NO_REKEY: Lifetime = Lifetime {
    rekey: Duration::from_secs(7200),
    jitter: Duration::ZERO,
    hard: Duration::from_secs(600),
};

/// A connected hybrid pair whose client's and/or gateway's Child SAs reach their hard
/// lifetime without a rekey ([`NO_REKEY`]); the others' rekey after an hour.
fn hard_lifetimes(seed: u64, client_hard: bool, gateway_hard: bool) -> TunnelPair {
    let lifetime = |hard| {
        if hard {
            NO_REKEY
        } else {
            Lifetime::new(Duration::from_secs(3600))
        }
    };
    let mut c = client_config(Mode::Hybrid);
    c.force_udp_encapsulation = true;
    c.child_lifetime = lifetime(client_hard);
    c.ike_lifetime = Lifetime::new(Duration::from_secs(6 * 3600));
    let mut g = gateway_config(vec![CryptoPolicy::for_mode(Mode::Hybrid)]);
    g.child_lifetime = lifetime(gateway_hard);
    g.ike_lifetime = Lifetime::new(Duration::from_secs(12 * 3600));
    let mut pair = TunnelPair::new(seed, c, EspOptions::default(), g);
    pair.connect();
    pair
}

/// A pair whose gateway lets Child SAs reach their hard lifetime, with `faults` on the
/// gateway's IKE SA.
fn expiring_children(seed: u64, faults: impl FnOnce(&mut crate::ike::Faults)) -> TunnelPair {
    let mut pair = hard_lifetimes(seed, false, true);
    let id = pair.responder.established_ids()[0];
    faults(&mut pair.responder.established_mut(id).unwrap().faults);
    pair
}

fn count(events: &[TunnelEvent], f: impl Fn(&TunnelEvent) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

/// Issue 19, strongSwan's "CHILD_SA recreate after hard expire": at the hard lifetime the
/// gateway deletes the only Child SA and creates a new one with CREATE_CHILD_SA (no REKEY_SA).
/// The client takes it on the same IKE SA: the tunnel never goes down, each new SA has new
/// SPIs (and keys from a fresh X25519 + ML-KEM exchange), and traffic both ways loses at most
/// a packet each way per re-creation.
#[test]
fn a_child_sa_recreated_by_the_gateway_keeps_the_ike_sa_and_the_traffic() {
    let mut pair = expiring_children(20, |_| {});
    let (spi_i, spi_r) = (pair.client.ike().spi_i(), pair.client.ike().spi_r());
    let first = pair.client.ike().child_sas()[0].clone();
    let end = pair.now + Duration::from_secs(35 * 60);
    let sent = pair.traffic_until(end, Duration::from_secs(1));
    assert_eq!(pair.down_reason(), None, "{:?}", pair.client_events);
    let recreated: Vec<_> = pair
        .client_events
        .iter()
        .filter_map(|e| match e {
            TunnelEvent::ChildSaRecreated { spi_in, .. } => Some(*spi_in),
            _ => None,
        })
        .collect();
    assert_eq!(recreated.len(), 3, "{:?}", pair.client_events);
    assert_eq!(
        count(&pair.client_events, |e| matches!(
            e,
            TunnelEvent::ChildSaLost
        )),
        3
    );
    assert_eq!(pair.client.stats().child_sa_recreates, 3);
    assert_eq!(pair.client.stats().child_sa_rekeys, 0);
    assert!(!recreated.contains(&first.spi_i));
    let now = pair.client.ike().child_sas();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].keys.encr_i.expose(), first.keys.encr_i.expose());
    assert_eq!(now[0].ts_i, first.ts_i, "the same selectors");
    assert_eq!(
        (pair.client.ike().spi_i(), pair.client.ike().spi_r()),
        (spi_i, spi_r),
        "the same IKE SA"
    );
    assert_eq!(pair.gateway.clients(), 1);
    for (side, received) in [("client", &pair.client_rx), ("gateway", &pair.gateway_rx)] {
        let (lost, dup) = losses(sent, received);
        assert!(lost <= 3, "{side}: {lost} of {sent} lost");
        assert!(!dup, "{side}: a packet arrived twice");
    }
}

/// A gateway that deletes the only Child SA and leaves the next one to the client (keeping
/// the IKE SA, as ours does for 20 s): after a short wait the client creates one itself, with
/// the same selectors, on the same IKE SA; traffic resumes.
#[test]
fn a_gateway_that_only_deletes_the_child_sa_gets_asked_for_a_new_one() {
    let mut pair = expiring_children(21, |f| f.no_recreate = true);
    let spi_i = pair.client.ike().spi_i();
    pair.run_until(pair.now + Duration::from_secs(601));
    assert_eq!(
        count(&pair.client_events, |e| matches!(
            e,
            TunnelEvent::ChildSaLost
        )),
        1
    );
    assert!(pair.client.ike().child_sas().is_empty());
    // Nothing is sealed meanwhile, and nothing leaks: the packet is dropped.
    let drops = pair.client.stats().not_up_drops;
    pair.client_sends(1);
    assert_eq!(pair.client.stats().not_up_drops, drops + 1);
    pair.run_until(pair.now + Duration::from_secs(3));
    assert_eq!(
        count(&pair.client_events, |e| matches!(
            e,
            TunnelEvent::ChildSaRecreated { .. }
        )),
        1,
        "{:?}",
        pair.client_events
    );
    assert_eq!(pair.client.ike().spi_i(), spi_i);
    let before = (pair.client_rx.len(), pair.gateway_rx.len());
    pair.client_sends(2);
    pair.gateway_sends(3);
    pair.settle();
    assert_eq!(
        (pair.client_rx.len(), pair.gateway_rx.len()),
        (before.0 + 1, before.1 + 1)
    );
    assert_eq!(pair.down_reason(), None);
}

/// The client's own CREATE_CHILD_SA is refused: the tunnel ends with `ChildSaGone` (the
/// supervisor reconnects), not as a refusal that would stop it for good.
#[test]
fn a_refused_recreation_ends_the_tunnel_for_a_reconnect() {
    let mut pair = expiring_children(22, |f| {
        f.no_recreate = true;
        f.refuse_create_child_sa = true;
    });
    pair.run_until(pair.now + Duration::from_secs(601));
    assert!(pair.client.ike().child_sas().is_empty());
    let lost = pair.now;
    while pair.down_reason().is_none() && pair.now - lost < Duration::from_secs(60) {
        let next = pair.now + Duration::from_millis(250);
        pair.run_until(next);
    }
    assert_eq!(pair.down_reason(), Some(&DownReason::ChildSaGone));
    // Asked after 2 s, refused at once, the IKE SA's Delete answered.
    assert!(
        pair.now - lost <= Duration::from_secs(3),
        "{:?}",
        pair.now - lost
    );
}

/// A gateway that deletes the only Child SA and never answers a new one: the tunnel gives up
/// within the re-creation deadline with `ChildSaGone`.
#[test]
fn a_lost_child_sa_that_never_returns_ends_the_tunnel() {
    let mut pair = expiring_children(23, |f| f.no_recreate = true);
    pair.run_until(pair.now + Duration::from_secs(601));
    assert!(pair.client.ike().child_sas().is_empty());
    pair.faults.cut = true;
    let lost = pair.now;
    while pair.down_reason().is_none() && pair.now - lost < Duration::from_secs(60) {
        let next = pair.now + Duration::from_secs(1);
        pair.run_until(next);
    }
    assert_eq!(pair.down_reason(), Some(&DownReason::ChildSaGone));
    assert!(
        pair.now - lost <= Duration::from_secs(16),
        "{:?}",
        pair.now - lost
    );
}

/// Review finding: the client's own Child SA reaches its hard lifetime (its rekeys never ran):
/// it deletes it and creates the next one at once; the gateway keeps the client meanwhile
/// and takes the new one. The tunnel never goes down.
#[test]
fn the_clients_own_hard_lifetime_recreates_the_child_sa() {
    let mut pair = hard_lifetimes(24, true, false);
    let spi_i = pair.client.ike().spi_i();
    let end = pair.now + Duration::from_secs(25 * 60);
    let sent = pair.traffic_until(end, Duration::from_secs(1));
    assert_eq!(pair.down_reason(), None, "{:?}", pair.client_events);
    assert_eq!(pair.client.stats().child_sa_recreates, 2);
    assert_eq!(pair.client.ike().spi_i(), spi_i);
    assert_eq!(pair.gateway.clients(), 1);
    for received in [&pair.client_rx, &pair.gateway_rx] {
        let (lost, _) = losses(sent, received);
        assert!(lost <= 2, "{lost} of {sent} lost");
    }
}

/// Review finding: both sides hit the Child SA's hard lifetime at the same instant, so both
/// delete it and both ask for the next one. Each answers the other's request with
/// TEMPORARY_FAILURE while its own runs (RFC 7296 §2.25); the retries, at random delays, leave
/// exactly one Child SA, known to both, and the tunnel up.
#[test]
fn simultaneous_recreations_leave_one_child_sa() {
    let mut pair = hard_lifetimes(25, true, true);
    pair.run_until(pair.now + Duration::from_secs(630));
    assert_eq!(pair.down_reason(), None, "{:?}", pair.client_events);
    // One gap, one new SA: no second SA made and then deleted again as redundant.
    assert_eq!(
        count(&pair.client_events, |e| matches!(
            e,
            TunnelEvent::ChildSaLost
        )),
        1,
        "{:?}",
        pair.client_events
    );
    assert_eq!(pair.client.stats().child_sa_recreates, 1);
    let client = pair.client.ike().child_sas();
    assert_eq!(client.len(), 1, "{client:?}");
    let id = pair.responder.established_ids()[0];
    let gateway = pair.responder.child_sas(id);
    assert_eq!(gateway.len(), 1);
    assert_eq!(
        gateway[0].id(),
        client[0].id(),
        "the same Child SA on both sides"
    );
    let before = (pair.client_rx.len(), pair.gateway_rx.len());
    pair.client_sends(1);
    pair.gateway_sends(2);
    pair.settle();
    assert_eq!(
        (pair.client_rx.len(), pair.gateway_rx.len()),
        (before.0 + 1, before.1 + 1)
    );
}
