//! The tunnel, sans-IO: the IKE SA and the ESP SAs of one VPN connection joined into one state
//! machine that a driver feeds with datagrams, packets and the time, and polls for datagrams,
//! timeouts and events (the quinn-proto / boringtun shape).
//!
//! - [`ClientTunnel`] is the client: the [`Initiator`](crate::ike::Initiator), its Child SAs'
//!   ESP SAs (make-before-break on rekeys, the fallback after a collision's redundant SA,
//!   rekeys at the sequence-number limit), NAT keepalives ([RFC 3948 §2.3]) and the ESP
//!   destination (the IKE SA's current remote, [RFC 3948 §2.1]).
//! - [`GatewayTunnel`] is the gateway's data plane: the ESP SAs of every connected client, found
//!   by SPI and by virtual address. The [`Responder`](crate::ike::Responder) stays apart (the
//!   driver runs it on a thread of its own so an IKE_SA_INIT flood delays no client's ESP);
//!   [`GatewayTunnel::esp_update`] turns its events into the data plane's [`EspUpdate`]s.
//!   Behind the `gateway` feature, so the phone build carries no responder.
//!
//! Nothing here reads a clock, opens a socket or draws randomness but from the
//! [`CryptoProvider`](crate::crypto::CryptoProvider).
//!
//! [RFC 3948 §2.1]: https://www.rfc-editor.org/rfc/rfc3948#section-2.1
//! [RFC 3948 §2.3]: https://www.rfc-editor.org/rfc/rfc3948#section-2.3

use core::time::Duration;
use std::net::SocketAddr;

use crate::esp;
use crate::ike::{self, ConfigReceived, Suite};

mod client;
#[cfg(feature = "gateway")]
mod gateway;
mod outbound;

pub use client::{ClientTunnel, WAKE_PROBE};
#[cfg(feature = "gateway")]
pub use gateway::{Applied, EspUpdate, GatewayRequest, GatewayResult, GatewayTunnel};
pub use ike::Transmit;

/// How the tunnel's ESP SAs behave, whatever cipher each Child SA negotiates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EspOptions {
    /// Anti-replay of inbound SAs.
    pub replay: esp::ReplayProtection,
    /// Packets after which an outbound SA asks for a rekey (`None`: 7/8 of the hard limit).
    pub soft_limit: Option<u64>,
    /// Packets after which an outbound SA refuses to seal (`None`: the counter's width).
    pub hard_limit: Option<u64>,
}

impl EspOptions {
    /// The ESP SA configuration of `child`.
    pub(crate) fn sa_config(&self, child: &ike::ChildSaEstablished) -> esp::SaConfig {
        let mut config = esp::SaConfig::new(child.encr);
        config.esn = child.esn;
        config.replay = self.replay;
        config.soft_limit = self.soft_limit;
        config.hard_limit = self.hard_limit;
        config
    }
}

/// What the gateway assigned, reported once the tunnel is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelUp {
    /// The negotiated IKE algorithms.
    pub suite: Suite,
    /// The Child SA's ESP cipher.
    pub esp: crate::crypto::AeadAlgorithm,
    /// The gateway's address (outer), where ESP goes.
    pub gateway: SocketAddr,
    /// Virtual addresses, DNS and split subnets from CFG_REPLY.
    pub config: ConfigReceived,
    /// From the first IKE_SA_INIT to the Child SA.
    pub handshake: Duration,
}

/// What a [`ClientTunnel`] tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelEvent {
    /// The Child SA is up: create the packet device from `config` and start moving packets.
    Up(Box<TunnelUp>),
    /// A Child SA rekey completed ([RFC 7296 §2.8]); packets go out on the new SA.
    ///
    /// [RFC 7296 §2.8]: https://www.rfc-editor.org/rfc/rfc7296#section-2.8
    ChildSaRekeyed {
        /// The new inbound SPI.
        spi_in: esp::EspSpi,
        /// The new outbound SPI.
        spi_out: esp::EspSpi,
    },
    /// The gateway deleted the only Child SA: nothing is sent until a new one comes
    /// ([`TunnelEvent::ChildSaRecreated`]), or the tunnel goes down with
    /// [`DownReason::ChildSaGone`] within seconds. The IKE SA stays.
    ChildSaLost,
    /// A new Child SA replaced the lost one (CREATE_CHILD_SA without REKEY_SA, [RFC 7296
    /// §1.3.1], from the gateway or from us); packets flow again.
    ///
    /// [RFC 7296 §1.3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.1
    ChildSaRecreated {
        /// The new inbound SPI.
        spi_in: esp::EspSpi,
        /// The new outbound SPI.
        spi_out: esp::EspSpi,
    },
    /// The IKE SA was rekeyed ([RFC 7296 §2.18]).
    ///
    /// [RFC 7296 §2.18]: https://www.rfc-editor.org/rfc/rfc7296#section-2.18
    IkeSaRekeyed {
        /// The algorithms, unchanged.
        suite: Suite,
    },
    /// The tunnel is over; nothing more is sent. The last event.
    Down(DownReason),
}

/// Why a tunnel went down.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// [`ClientTunnel::close`] was called and the IKE SA is deleted (or the gateway stopped
    /// answering the Delete).
    Closed,
    /// The gateway deleted the IKE SA.
    ClosedByPeer,
    /// The IKE SA failed: unreachable gateway, authentication, refused ML-KEM, ...
    Ike(ike::Error),
    /// The gateway authenticated but refused the Child SA; the IKE SA was deleted.
    ChildSaRefused(ike::Error),
    /// The Child SA the tunnel sends on is gone without a successor (deleted by the gateway, or
    /// expired without a rekey) and no new one came in time; the IKE SA was deleted.
    ChildSaGone,
    /// The IKE SA did not float to port 4500; userspace ESP needs UDP encapsulation
    /// ([RFC 3948]).
    ///
    /// [RFC 3948]: https://www.rfc-editor.org/rfc/rfc3948
    NotUdpEncapsulated,
    /// An ESP SA could not be keyed, or its sequence numbers ran out before a rekey.
    Esp(esp::Error),
}

impl core::fmt::Display for DownReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Closed => f.write_str("disconnected"),
            Self::ClosedByPeer => f.write_str("the gateway closed the connection"),
            Self::Ike(e) => write!(f, "{e}"),
            Self::ChildSaRefused(e) => write!(f, "the gateway refused the tunnel: {e}"),
            Self::ChildSaGone => f.write_str(
                "the gateway deleted the tunnel (its Child SA), or it expired without a rekey",
            ),
            Self::NotUdpEncapsulated => f.write_str(
                "the IKE SA did not switch to UDP encapsulation (port 4500), which pqvpn's \
                 userspace ESP needs; enable force_udp_encapsulation",
            ),
            Self::Esp(e) => write!(f, "ESP failed: {e}"),
        }
    }
}

/// What became of a datagram from the network.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum TunnelResult<'a> {
    /// Consumed (IKE, a keepalive, a dummy packet); poll for datagrams and events.
    Done,
    /// An authentic inner packet: write it to the packet device.
    WriteToTun(&'a mut [u8]),
    /// Dropped, and why; no state changed.
    Dropped(DropReason),
}

/// Why a datagram or packet was dropped. Each is counted in [`TunnelStats`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// ESP before the tunnel is up, or after it went down.
    NotUp,
    /// The ESP layer refused it: unknown SPI, replay, failed integrity check, bad padding, ...
    Esp(esp::Error),
    /// Authentic, but its inner source lies outside the Child SA's traffic selectors
    /// ([RFC 4301 §5.2]).
    ///
    /// [RFC 4301 §5.2]: https://www.rfc-editor.org/rfc/rfc4301#section-5.2
    Selector,
    /// Not an IKE message, keepalive or ESP packet.
    Malformed,
}

/// Counters of a tunnel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Inner octets written to the device.
    pub bytes_in: u64,
    /// Inner octets sealed and sent.
    pub bytes_out: u64,
    /// Inner packets written to the device.
    pub packets_in: u64,
    /// Inner packets sealed and sent.
    pub packets_out: u64,
    /// Datagrams the ESP layer refused (unknown SPI, replay, integrity, ...).
    pub esp_drops: u64,
    /// Authentic packets outside the traffic selectors.
    pub selector_drops: u64,
    /// Datagrams and packets that arrived while the tunnel was not up.
    pub not_up_drops: u64,
    /// Child SA rekeys completed.
    pub child_sa_rekeys: u64,
    /// Child SAs re-created after the gateway deleted the only one.
    pub child_sa_recreates: u64,
    /// IKE SA rekeys completed.
    pub ike_sa_rekeys: u64,
}

impl TunnelStats {
    pub(crate) fn count_drop(&mut self, reason: &DropReason) {
        match reason {
            DropReason::NotUp => self.not_up_drops += 1,
            DropReason::Esp(_) | DropReason::Malformed => self.esp_drops += 1,
            DropReason::Selector => self.selector_drops += 1,
        }
    }
}
