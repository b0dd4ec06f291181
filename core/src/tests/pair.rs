//! `Pair`: an [`Initiator`] and a [`Responder`] joined by two in-memory links with a virtual
//! clock. Faults are edits to the links: loss, reordering, duplication, tampering.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::crypto::{DeterministicProvider, SecretBytes};
use crate::ike::{
    CryptoPolicy, Event, Initiator, InitiatorConfig, Mode, Responder, ResponderConfig,
};
use crate::wire::{EspSpi, IkeId, NON_ESP_MARKER};

pub(crate) const CLIENT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 40_000);
pub(crate) const GATEWAY: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 500);
pub(crate) const PSK: &[u8] = b"pair-test-psk-not-a-secret";

/// One datagram in flight: IKE bytes (marker stripped) and where it goes.
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    pub(crate) to: SocketAddr,
    pub(crate) bytes: Vec<u8>,
}

pub(crate) struct Pair {
    pub(crate) now: Instant,
    pub(crate) initiator: Initiator,
    pub(crate) responder: Responder,
    /// Initiator to responder.
    pub(crate) to_responder: VecDeque<InFlight>,
    /// Responder to initiator.
    pub(crate) to_initiator: VecDeque<InFlight>,
    pub(crate) initiator_events: Vec<Event>,
    pub(crate) responder_events: Vec<Event>,
    /// Every datagram sent, in order, with `true` for initiator-to-responder.
    pub(crate) log: Vec<(bool, Vec<u8>)>,
}

pub(crate) fn client_config(mode: Mode) -> InitiatorConfig {
    InitiatorConfig::new(
        mode,
        SecretBytes::from_slice(PSK),
        IkeId::Fqdn("client.test".into()),
        Some(IkeId::Fqdn("gw.test".into())),
    )
}

pub(crate) fn gateway_config(policies: Vec<CryptoPolicy>) -> ResponderConfig {
    let mut c = ResponderConfig::new(
        policies,
        SecretBytes::from_slice(PSK),
        IkeId::Fqdn("gw.test".into()),
    );
    c.pool_v4 = Some((Ipv4Addr::new(10, 99, 0, 10), Ipv4Addr::new(10, 99, 0, 20)));
    c.dns = vec![IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1))];
    c
}

impl Pair {
    pub(crate) fn new(seed: u64, client: InitiatorConfig, gateway: ResponderConfig) -> Self {
        let now = Instant::now();
        let initiator = Initiator::new(
            Arc::new(DeterministicProvider::new(seed)),
            client,
            now,
            CLIENT,
            GATEWAY,
        )
        .expect("initiator starts");
        let responder = Responder::new(
            Arc::new(DeterministicProvider::new(seed ^ 0xdead_beef)),
            gateway,
        )
        .expect("responder starts");
        let mut pair = Self {
            now,
            initiator,
            responder,
            to_responder: VecDeque::new(),
            to_initiator: VecDeque::new(),
            initiator_events: Vec::new(),
            responder_events: Vec::new(),
            log: Vec::new(),
        };
        pair.collect();
        pair
    }

    pub(crate) fn mode(seed: u64, mode: Mode) -> Self {
        Self::new(
            seed,
            client_config(mode),
            gateway_config(vec![CryptoPolicy::for_mode(mode)]),
        )
    }

    /// Moves what both sides want to send onto the links, and their events into the logs.
    pub(crate) fn collect(&mut self) {
        let mut buf = vec![0u8; 65_536];
        while let Some(t) = self.initiator.poll_transmit(self.now, &mut buf) {
            let mut bytes = buf[..t.size].to_vec();
            if t.nat_t {
                assert_eq!(bytes[..4], NON_ESP_MARKER, "NAT-T datagram without marker");
                bytes.drain(..4);
            }
            self.log.push((true, bytes.clone()));
            self.to_responder.push_back(InFlight {
                to: t.destination,
                bytes,
            });
        }
        while let Some(t) = self.responder.poll_transmit(self.now, &mut buf) {
            let mut bytes = buf[..t.size].to_vec();
            if t.nat_t {
                assert_eq!(bytes[..4], NON_ESP_MARKER, "NAT-T datagram without marker");
                bytes.drain(..4);
            }
            assert_eq!(t.destination.ip(), CLIENT.ip());
            self.log.push((false, bytes.clone()));
            self.to_initiator.push_back(InFlight {
                to: t.destination,
                bytes,
            });
        }
        while let Some(e) = self.initiator.poll_event() {
            self.initiator_events.push(e);
        }
        while let Some((_, e)) = self.responder.poll_event() {
            self.responder_events.push(e);
        }
    }

    pub(crate) fn deliver_to_responder(&mut self, d: InFlight) {
        let from = if d.to.port() == crate::ike::NAT_T_PORT {
            SocketAddr::new(CLIENT.ip(), 4500)
        } else {
            CLIENT
        };
        self.responder
            .handle_datagram(self.now, d.to, from, &d.bytes);
    }

    pub(crate) fn deliver_to_initiator(&mut self, d: InFlight) {
        let from = SocketAddr::new(
            GATEWAY.ip(),
            if d.to.port() == CLIENT.port() {
                500
            } else {
                4500
            },
        );
        self.initiator.handle_datagram(self.now, from, &d.bytes);
    }

    /// Delivers everything in flight, both ways, once. Returns whether anything moved.
    pub(crate) fn step(&mut self) -> bool {
        let mut moved = false;
        while let Some(d) = self.to_responder.pop_front() {
            self.deliver_to_responder(d);
            moved = true;
        }
        self.collect();
        while let Some(d) = self.to_initiator.pop_front() {
            self.deliver_to_initiator(d);
            moved = true;
        }
        self.collect();
        moved
    }

    /// Jumps the clock to the next timer and fires it. Returns false if no timer is armed.
    pub(crate) fn advance(&mut self) -> bool {
        let next = [self.initiator.poll_timeout(), self.responder.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else {
            return false;
        };
        self.now = self.now.max(next);
        self.initiator.handle_timeout(self.now);
        self.responder.handle_timeout(self.now);
        self.collect();
        true
    }

    /// Runs until the initiator is established or failed, or nothing is left to do.
    pub(crate) fn drive(&mut self) {
        for _ in 0..10_000 {
            if self.initiator.is_established() || self.initiator.is_failed() {
                // Let the last response reach nobody: the handshake is over.
                return;
            }
            if !self.step() && !self.advance() {
                return;
            }
        }
        panic!("handshake did not settle");
    }

    /// Like [`drive`](Self::drive), but each datagram is lost with probability `loss`,
    /// duplicated with probability `dup` and the links are shuffled, from `rng`.
    pub(crate) fn drive_lossy(&mut self, rng: &mut ChaCha20Rng, loss: f64, dup: f64) {
        let roll = |rng: &mut ChaCha20Rng| f64::from(rng.next_u32()) / f64::from(u32::MAX);
        for _ in 0..10_000 {
            if self.initiator.is_established() || self.initiator.is_failed() {
                return;
            }
            let mut moved = false;
            for towards_responder in [true, false] {
                let link = if towards_responder {
                    &mut self.to_responder
                } else {
                    &mut self.to_initiator
                };
                let mut batch: Vec<InFlight> = link.drain(..).collect();
                // Reorder: a seeded Fisher-Yates shuffle.
                for i in (1..batch.len()).rev() {
                    let j = usize::try_from(rng.next_u64() % (i as u64 + 1)).unwrap();
                    batch.swap(i, j);
                }
                for d in batch {
                    if roll(rng) < loss {
                        continue;
                    }
                    let copies = if roll(rng) < dup { 2 } else { 1 };
                    for _ in 0..copies {
                        moved = true;
                        if towards_responder {
                            self.deliver_to_responder(d.clone());
                        } else {
                            self.deliver_to_initiator(d.clone());
                        }
                    }
                }
                self.collect();
            }
            if !moved && !self.advance() {
                return;
            }
        }
        panic!("handshake did not settle");
    }
}

/// The Child SAs one side has announced and not deleted, from its events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ChildTable {
    pub(crate) up: std::collections::BTreeMap<(EspSpi, EspSpi), crate::ike::ChildSaEstablished>,
    /// Every `ChildSaRekeyed`, in order.
    pub(crate) rekeys: Vec<((EspSpi, EspSpi), crate::ike::ChildSaEstablished)>,
    pub(crate) ike_rekeys: usize,
}

impl ChildTable {
    pub(crate) fn apply(&mut self, e: &Event) {
        match e {
            Event::ChildSaEstablished(c) | Event::ChildSaCreated(c) => {
                self.up.insert((c.spi_i, c.spi_r), (**c).clone());
            }
            Event::ChildSaRekeyed { old, new } => {
                self.up.insert((new.spi_i, new.spi_r), (**new).clone());
                self.rekeys.push(((old.spi_i, old.spi_r), (**new).clone()));
            }
            Event::ChildSaDeleted(id) => {
                self.up.remove(&(id.spi_i, id.spi_r));
            }
            Event::IkeSaRekeyed { .. } => self.ike_rekeys += 1,
            _ => {}
        }
    }

    pub(crate) fn from_events(events: &[Event]) -> Self {
        let mut t = Self::default();
        for e in events {
            t.apply(e);
        }
        t
    }
}

impl Pair {
    /// The id of the responder's only established IKE SA.
    pub(crate) fn gateway_sa(&self) -> u64 {
        let ids = self.responder.established_ids();
        assert_eq!(ids.len(), 1, "one established IKE SA at the gateway");
        ids[0]
    }

    /// Runs both sides on the virtual clock until `until`, delivering everything, with each
    /// datagram lost with probability `loss` (from `rng`).
    pub(crate) fn run_until(&mut self, until: Instant, mut lossy: Option<(&mut ChaCha20Rng, f64)>) {
        let roll = |rng: &mut ChaCha20Rng| f64::from(rng.next_u32()) / f64::from(u32::MAX);
        for _ in 0..1_000_000 {
            let mut moved = false;
            for towards_responder in [true, false] {
                let link = if towards_responder {
                    &mut self.to_responder
                } else {
                    &mut self.to_initiator
                };
                let batch: Vec<InFlight> = link.drain(..).collect();
                for d in batch {
                    if let Some((rng, loss)) = lossy.as_mut()
                        && roll(rng) < *loss
                    {
                        continue;
                    }
                    moved = true;
                    if towards_responder {
                        self.deliver_to_responder(d);
                    } else {
                        self.deliver_to_initiator(d);
                    }
                }
                self.collect();
            }
            if moved {
                continue;
            }
            let next = [self.initiator.poll_timeout(), self.responder.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.initiator.handle_timeout(self.now);
                    self.responder.handle_timeout(self.now);
                    self.collect();
                }
                _ => {
                    self.now = self.now.max(until);
                    return;
                }
            }
        }
        panic!("run_until did not settle");
    }

    /// Delivers what is in flight until both links are empty, without moving the clock.
    pub(crate) fn settle(&mut self) {
        self.collect();
        for _ in 0..1000 {
            if !self.step() {
                return;
            }
        }
        panic!("links did not settle");
    }
}

pub(crate) fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}
