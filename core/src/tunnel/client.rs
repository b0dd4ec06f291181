//! [`ClientTunnel`]: the client's IKE SA and ESP SAs as one sans-IO state machine.

use core::time::Duration;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::outbound::Outbound;
use super::{
    DownReason, DropReason, EspOptions, Transmit, TunnelEvent, TunnelResult, TunnelStats, TunnelUp,
};
use crate::crypto::CryptoProvider;
use crate::esp::{self, ChildSa, Demux, Inbound, Received, SaConfig};
use crate::ike::{
    self, ChildSaEstablished, ChildSaId, ConfigReceived, Event, Initiator, InitiatorConfig,
    NAT_T_PORT, Suite,
};
use crate::wire::{self, TrafficSelector, Udp4500};

/// How often a NAT keepalive is sent when UDP-encapsulated (strongSwan's default,
/// RFC 3948 §2.3).
const NAT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// How long a close waits for the gateway's answer to our Delete before the tunnel is down
/// anyway: an orderly goodbye frees our address at the gateway at once, but must not hold up
/// the user.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the gateway has to answer the DPD sent after a wake ([`ClientTunnel::probe`]):
/// the first transmission and its first retransmission (1 s later by default). A gateway that
/// is merely slow costs a reconnect, a dead one no more than this.
pub const WAKE_PROBE: Duration = Duration::from_secs(2);

/// How long the tunnel waits, after the gateway deleted its only Child SA, for the gateway to
/// create the next one (strongSwan does at a hard lifetime, right after its Delete) before it
/// asks for one itself.
const CHILD_RECREATE_WAIT: Duration = Duration::from_secs(2);

/// How long a lost Child SA may take to come back (ours or the gateway's CREATE_CHILD_SA, with
/// retransmissions) before the tunnel is given up and the supervisor reconnects.
const CHILD_RECREATE_DEADLINE: Duration = Duration::from_secs(15);

/// The client's side of a VPN tunnel: IKE_SA_INIT to the gateway on creation, then (once the
/// Child SA is up, [`TunnelEvent::Up`]) packets both ways.
///
/// Drive it like quinn-proto's `Connection`: after every `handle_*` call, send what
/// [`poll_transmit`](Self::poll_transmit) gives, act on [`poll_event`](Self::poll_event), and
/// arm one timer at [`poll_timeout`](Self::poll_timeout).
pub struct ClientTunnel {
    provider: Arc<dyn CryptoProvider>,
    ike: Initiator,
    esp: EspOptions,
    started: Instant,
    phase: Phase,
    events: VecDeque<TunnelEvent>,
    /// A NAT keepalive is due on the next `poll_transmit`.
    keepalive_due: bool,
    stats: TunnelStats,
}

enum Phase {
    /// IKE_SA_INIT, IKE_INTERMEDIATE, IKE_AUTH: what arrived so far.
    Handshake {
        suite: Option<Suite>,
        config: ConfigReceived,
    },
    Up(Box<DataPlane>),
    /// Our Delete of the IKE SA is out; `reason` is reported when it is answered or at
    /// `deadline`.
    Closing {
        reason: DownReason,
        deadline: Instant,
    },
    Down,
}

/// The ESP side of an established tunnel.
struct DataPlane {
    outbound: Outbound,
    demux: Demux,
    /// The gateway's side of the current Child SA: the inner sources it may send from
    /// (RFC 4301 §5.2).
    ts_r: Vec<TrafficSelector>,
    /// A rekey at the sequence-number limit is in progress.
    rekey_requested: bool,
    next_keepalive: Instant,
    /// The only Child SA is gone and a new one is awaited.
    lost: Option<LostChild>,
}

/// Since when the tunnel has no Child SA, and what it does next.
struct LostChild {
    /// Ask for a new Child SA ourselves if the gateway has not made one by then.
    create_at: Option<Instant>,
    /// Give up and end the tunnel.
    deadline: Instant,
}

impl ClientTunnel {
    /// Starts the IKE SA from `local` to the gateway at `gateway` (port 500, or 4500 to start
    /// there) and queues IKE_SA_INIT.
    ///
    /// # Errors
    ///
    /// What [`Initiator::new`] refuses: a policy without key exchange, a provider failure.
    pub fn new(
        provider: Arc<dyn CryptoProvider>,
        config: InitiatorConfig,
        esp: EspOptions,
        now: Instant,
        local: SocketAddr,
        gateway: SocketAddr,
    ) -> Result<Self, ike::Error> {
        let ike = Initiator::new(provider.clone(), config, now, local, gateway)?;
        Ok(Self {
            provider,
            ike,
            esp,
            started: now,
            phase: Phase::Handshake {
                suite: None,
                config: ConfigReceived::default(),
            },
            events: VecDeque::new(),
            keepalive_due: false,
            stats: TunnelStats::default(),
        })
    }

    /// The IKE SA (for status: SPIs, the suite, the current remote).
    pub fn ike(&self) -> &Initiator {
        &self.ike
    }

    /// Whether packets flow.
    pub fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Up(_))
    }

    /// Whether [`TunnelEvent::Down`] was reported: nothing more happens.
    pub fn is_down(&self) -> bool {
        matches!(self.phase, Phase::Down)
    }

    /// The counters.
    pub fn stats(&self) -> TunnelStats {
        self.stats
    }

    /// Where ESP goes: the IKE SA's current remote (RFC 3948 §2.1: the same address and port
    /// as the UDP-encapsulated IKE SA, which may have moved).
    pub fn esp_destination(&self) -> SocketAddr {
        self.ike.remote()
    }

    /// A datagram from the network. The result borrows `out` for an inner packet.
    pub fn handle_udp<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
        out: &'a mut [u8],
    ) -> TunnelResult<'a> {
        let result = self.receive(now, from, datagram, out);
        if let TunnelResult::Dropped(reason) = &result {
            self.stats.count_drop(reason);
        }
        self.process(now);
        result
    }

    fn receive<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
        out: &'a mut [u8],
    ) -> TunnelResult<'a> {
        if from.port() != NAT_T_PORT {
            self.ike.handle_datagram(now, from, datagram);
            return TunnelResult::Done;
        }
        let Phase::Up(dp) = &mut self.phase else {
            return match wire::classify_udp4500(datagram) {
                Ok(Udp4500::Ike(message)) => {
                    self.ike.handle_datagram(now, from, message);
                    TunnelResult::Done
                }
                Ok(Udp4500::NatKeepalive) => TunnelResult::Done,
                Ok(Udp4500::Esp(_)) => TunnelResult::Dropped(DropReason::NotUp),
                Err(_) => TunnelResult::Dropped(DropReason::Malformed),
            };
        };
        match dp.demux.handle_udp4500(datagram, out) {
            Ok(Received::Ike(message)) => {
                self.ike.handle_datagram(now, from, message);
                TunnelResult::Done
            }
            Ok(Received::Esp {
                packet: Inbound::Ipv4(p) | Inbound::Ipv6(p),
                ..
            }) => {
                self.ike.handle_inbound_traffic(now);
                if !esp::selectors_allow(&dp.ts_r, p, esp::Direction::Source) {
                    return TunnelResult::Dropped(DropReason::Selector);
                }
                self.stats.bytes_in += p.len() as u64;
                self.stats.packets_in += 1;
                TunnelResult::WriteToTun(p)
            }
            Ok(Received::Esp { .. } | Received::NatKeepalive) => {
                self.ike.handle_inbound_traffic(now);
                TunnelResult::Done
            }
            Err(e) => TunnelResult::Dropped(DropReason::Esp(e)),
        }
    }

    /// An inner packet from the device: the ESP datagram sealed into `out`, or `None` when it
    /// was dropped (counted: the tunnel is not up, or the packet cannot be sealed).
    pub fn handle_tun_packet(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        let destination = self.ike.remote();
        let Phase::Up(dp) = &mut self.phase else {
            self.stats.count_drop(&DropReason::NotUp);
            return None;
        };
        let Some(current) = dp.outbound.current() else {
            // The Child SA is being re-created: the packet waits for no one.
            self.stats.count_drop(&DropReason::NotUp);
            return None;
        };
        let sealed = current.seal(packet, out);
        if current.needs_rekey() && !dp.rekey_requested {
            let spi = current.spi();
            dp.rekey_requested = self.ike.rekey_child_sa(now, spi).is_ok();
        }
        let transmit = match sealed {
            Ok(size) => {
                self.stats.bytes_out += packet.len() as u64;
                self.stats.packets_out += 1;
                Some(Transmit {
                    destination,
                    size,
                    nat_t: true,
                })
            }
            Err(esp::Error::SequenceExhausted) => {
                self.close_with(now, DownReason::Esp(esp::Error::SequenceExhausted));
                None
            }
            Err(e) => {
                self.stats.count_drop(&DropReason::Esp(e));
                None
            }
        };
        self.process(now);
        transmit
    }

    /// The timer armed at [`poll_timeout`](Self::poll_timeout) fired (early calls are
    /// harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.ike.handle_timeout(now);
        match &mut self.phase {
            Phase::Up(dp) => {
                if now >= dp.next_keepalive {
                    dp.next_keepalive = now + NAT_KEEPALIVE_INTERVAL;
                    self.keepalive_due = self.ike.is_nat_t();
                }
                if let Some(lost) = &mut dp.lost {
                    if now >= lost.deadline {
                        self.close_with(now, DownReason::ChildSaGone);
                    } else if lost.create_at.is_some_and(|t| now >= t) {
                        lost.create_at = None;
                        self.ike.create_child_sa(now);
                    }
                }
            }
            Phase::Closing { deadline, .. } if now >= *deadline => {
                let Phase::Closing { reason, .. } =
                    core::mem::replace(&mut self.phase, Phase::Down)
                else {
                    return;
                };
                self.down(reason);
            }
            _ => {}
        }
        self.process(now);
    }

    /// Rekeys the Child SA now (RFC 7296 §2.8), as its lifetime or sequence numbers would.
    ///
    /// # Errors
    ///
    /// [`ike::Error::ApiMisuse`] when the tunnel is not up. A rekey while another exchange runs
    /// is queued.
    pub fn rekey_child_sa(&mut self, now: Instant) -> Result<(), ike::Error> {
        let Phase::Up(dp) = &mut self.phase else {
            return Err(ike::Error::ApiMisuse("the tunnel is not up"));
        };
        let Some(current) = dp.outbound.current() else {
            return Err(ike::Error::ApiMisuse("the Child SA is being re-created"));
        };
        let spi = current.spi();
        let result = self.ike.rekey_child_sa(now, spi);
        self.process(now);
        result
    }

    /// The machine woke up (or the process was frozen): the gateway must answer a DPD within
    /// [`WAKE_PROBE`], or the tunnel goes down as a dead peer and the supervisor reconnects.
    pub fn probe(&mut self, now: Instant) {
        self.ike.probe(now, WAKE_PROBE);
        self.process(now);
    }

    /// Deletes the IKE SA (and its Child SAs) at the gateway; [`DownReason::Closed`] follows
    /// when it answers, or after a second.
    pub fn close(&mut self, now: Instant) {
        self.close_with(now, DownReason::Closed);
        self.process(now);
    }

    /// The next datagram to send, written into `buf`: IKE first, then a NAT keepalive.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(t) = self.ike.poll_transmit(now, buf) {
            return Some(t);
        }
        if core::mem::take(&mut self.keepalive_due) && self.is_up() {
            let size = esp::nat_keepalive(buf).ok()?;
            return Some(Transmit {
                destination: self.ike.remote(),
                size,
                nat_t: true,
            });
        }
        None
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = match &self.phase {
            Phase::Up(dp) => Some(match &dp.lost {
                Some(lost) => [Some(dp.next_keepalive), Some(lost.deadline), lost.create_at]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(dp.next_keepalive),
                None => dp.next_keepalive,
            }),
            Phase::Closing { deadline, .. } => Some(*deadline),
            Phase::Handshake { .. } => None,
            Phase::Down => return None,
        };
        [self.ike.poll_timeout(), own].into_iter().flatten().min()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TunnelEvent> {
        self.events.pop_front()
    }

    /// Acts on what the IKE SA reported.
    fn process(&mut self, now: Instant) {
        while let Some(event) = self.ike.poll_event() {
            if matches!(self.phase, Phase::Down) {
                continue;
            }
            match event {
                Event::Failed(e) => self.end(DownReason::Ike(e)),
                Event::Closed => self.end(DownReason::ClosedByPeer),
                Event::IkeSaEstablished { suite } => {
                    if let Phase::Handshake { suite: s, .. } = &mut self.phase {
                        *s = Some(suite);
                    }
                }
                Event::ConfigReceived(c) => {
                    if let Phase::Handshake { config, .. } = &mut self.phase {
                        *config = c;
                    }
                }
                Event::ChildSaEstablished(child) => self.bring_up(now, *child),
                // The IKE SA is up but carries no tunnel: delete it rather than leave the
                // gateway a half-dead IKE SA that it keeps alive and rekeys (RFC 7296 §1.4.1).
                Event::ChildSaFailed(e) => {
                    let reason = match &self.phase {
                        // The lost Child SA could not be re-created: not a refusal of the
                        // tunnel, a reconnect may well succeed.
                        Phase::Up(dp) if dp.lost.is_some() => DownReason::ChildSaGone,
                        _ => DownReason::ChildSaRefused(e),
                    };
                    self.close_with(now, reason);
                }
                Event::ChildSaRekeyed { new, .. } => self.rekeyed(now, &new),
                Event::ChildSaDeleted(ChildSaId { spi_i, spi_r }) => {
                    let Phase::Up(dp) = &mut self.phase else {
                        continue;
                    };
                    dp.demux.remove(spi_i);
                    if dp.outbound.deleted(spi_r).is_err() && dp.lost.is_none() {
                        // Nothing is left to send on. The gateway may be re-creating it (after
                        // a hard lifetime); otherwise we ask for one, and only then give up.
                        dp.lost = Some(LostChild {
                            create_at: Some(now + CHILD_RECREATE_WAIT),
                            deadline: now + CHILD_RECREATE_DEADLINE,
                        });
                        self.events.push_back(TunnelEvent::ChildSaLost);
                    }
                }
                Event::ChildSaCreated(child) => self.recreated(now, &child),
                Event::IkeSaRekeyed { suite } => {
                    self.stats.ike_sa_rekeys += 1;
                    self.events.push_back(TunnelEvent::IkeSaRekeyed { suite });
                }
            }
        }
    }

    fn bring_up(&mut self, now: Instant, child: ChildSaEstablished) {
        let Phase::Handshake { suite, config } = &mut self.phase else {
            return;
        };
        let Some(suite) = suite.take() else {
            self.close_with(
                now,
                DownReason::Ike(ike::Error::ApiMisuse("Child SA without IKE SA")),
            );
            return;
        };
        let config = core::mem::take(config);
        if !self.ike.is_nat_t() {
            self.close_with(now, DownReason::NotUdpEncapsulated);
            return;
        }
        let sa_config = self.esp.sa_config(&child);
        let (outbound, inbound) = match client_sas(&*self.provider, &sa_config, &child) {
            Ok(sas) => sas,
            Err(e) => {
                self.close_with(now, DownReason::Esp(e));
                return;
            }
        };
        let mut demux = Demux::new();
        demux.insert(inbound);
        self.phase = Phase::Up(Box::new(DataPlane {
            outbound: Outbound::new(outbound),
            demux,
            ts_r: child.ts_r,
            rekey_requested: false,
            next_keepalive: now + NAT_KEEPALIVE_INTERVAL,
            lost: None,
        }));
        self.events.push_back(TunnelEvent::Up(Box::new(TunnelUp {
            suite,
            esp: child.encr,
            gateway: self.ike.remote(),
            config,
            handshake: now.saturating_duration_since(self.started),
        })));
    }

    /// Make-before-break: send on the new SA at once, keep receiving on the old one until the
    /// IKE SA deletes it.
    fn rekeyed(&mut self, now: Instant, new: &ChildSaEstablished) {
        if self.install(now, new) {
            self.stats.child_sa_rekeys += 1;
            self.events.push_back(TunnelEvent::ChildSaRekeyed {
                spi_in: new.spi_i,
                spi_out: new.spi_r,
            });
        }
    }

    /// A new Child SA replaced the lost one: packets flow again, the IKE SA unchanged.
    fn recreated(&mut self, now: Instant, new: &ChildSaEstablished) {
        if self.install(now, new) {
            self.stats.child_sa_recreates += 1;
            self.events.push_back(TunnelEvent::ChildSaRecreated {
                spi_in: new.spi_i,
                spi_out: new.spi_r,
            });
        }
    }

    /// Puts the ESP SAs of `new` in place and sends on it; whether it was (a keying failure
    /// ends the tunnel).
    fn install(&mut self, now: Instant, new: &ChildSaEstablished) -> bool {
        let Phase::Up(dp) = &mut self.phase else {
            return false;
        };
        let config = self.esp.sa_config(new);
        match client_sas(&*self.provider, &config, new) {
            Ok((out_sa, in_sa)) => {
                dp.demux.insert(in_sa);
                dp.outbound.rekeyed(out_sa);
                dp.ts_r.clone_from(&new.ts_r);
                dp.rekey_requested = false;
                dp.lost = None;
                true
            }
            Err(e) => {
                self.close_with(now, DownReason::Esp(e));
                false
            }
        }
    }

    /// Deletes the IKE SA at the gateway, then reports `reason`.
    fn close_with(&mut self, now: Instant, reason: DownReason) {
        if matches!(self.phase, Phase::Closing { .. } | Phase::Down) {
            return;
        }
        self.phase = Phase::Closing {
            reason,
            deadline: now + CLOSE_TIMEOUT,
        };
        self.ike.close(now);
    }

    /// The IKE SA ended (`reason` unless we were closing it ourselves).
    fn end(&mut self, reason: DownReason) {
        let reason = match core::mem::replace(&mut self.phase, Phase::Down) {
            Phase::Closing { reason, .. } => reason,
            _ => reason,
        };
        self.down(reason);
    }

    fn down(&mut self, reason: DownReason) {
        self.phase = Phase::Down;
        self.keepalive_due = false;
        self.events.push_back(TunnelEvent::Down(reason));
    }
}

impl core::fmt::Debug for ClientTunnel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let phase = match self.phase {
            Phase::Handshake { .. } => "handshake",
            Phase::Up(_) => "up",
            Phase::Closing { .. } => "closing",
            Phase::Down => "down",
        };
        f.debug_struct("ClientTunnel")
            .field("phase", &phase)
            .field("remote", &self.ike.remote())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The outbound and inbound ESP SAs of a Child SA, from the client's side: it sends with the
/// initiator-to-responder keys to the gateway's SPI (RFC 7296 §2.17).
fn client_sas(
    provider: &dyn CryptoProvider,
    config: &SaConfig,
    child: &ChildSaEstablished,
) -> Result<(esp::OutboundSa, esp::InboundSa), esp::Error> {
    let sa = ChildSa::new(
        provider,
        config,
        child.spi_r,
        &child.keys.encr_i,
        child.spi_i,
        &child.keys.encr_r,
    )?;
    Ok(sa.split())
}
