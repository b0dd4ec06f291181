//! What an IKE SA hands to its driver: datagrams to send, events, timers; and the pieces both
//! roles share (NAT detection, retransmission of the outstanding request, payload lookup).

use core::time::Duration;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use crate::crypto::{AeadAlgorithm, CryptoProvider};
use crate::ike::Error;
use crate::ike::config::{Mode, RetransmitConfig};
use crate::ike::keys::ChildSaKeys;
use crate::wire::{
    EspSpi, IkeSpi, KeyExchangeMethod, MessageId, NON_ESP_MARKER, NotifyPayload, NotifyType,
    Payload, PrfAlgorithm, TrafficSelector,
};

/// The IKE port (RFC 7296 §2).
pub const IKE_PORT: u16 = 500;
/// The NAT traversal port (RFC 3948, RFC 7296 §2.23).
pub const NAT_T_PORT: u16 = 4500;

/// A datagram [`poll_transmit`](crate::ike::Initiator::poll_transmit) wrote into the caller's
/// buffer.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Octets written at the start of the buffer.
    pub size: usize,
    /// Whether the datagram is UDP-encapsulated: it starts with the non-ESP marker and must
    /// leave from the socket that carries ESP too (RFC 3948).
    pub nat_t: bool,
}

/// The algorithms an IKE SA negotiated, for status output. `quantum_safe` is what UIs show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    /// The construction.
    pub mode: Mode,
    /// The key exchange of IKE_SA_INIT.
    pub ke: KeyExchangeMethod,
    /// The additional key exchanges, in round order.
    pub addke: Vec<KeyExchangeMethod>,
    /// SK payload encryption.
    pub encr: AeadAlgorithm,
    /// The PRF.
    pub prf: PrfAlgorithm,
    /// Whether every key of the SA depends on a post-quantum key exchange.
    pub quantum_safe: bool,
}

impl core::fmt::Display for Suite {
    /// E.g. `X25519 + ML-KEM-768, AES-GCM-256`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.ke.display_name())?;
        for m in &self.addke {
            write!(f, " + {}", m.display_name())?;
        }
        write!(f, ", {}", self.encr)
    }
}

/// A Child SA ready for the ESP data plane.
///
/// `_i` always names the side that initiated the first IKE SA (the client) and `_r` the
/// gateway, whichever side ran the exchange that created this Child SA (a rekey started by the
/// gateway included), so the driver never has to know who rekeyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSaEstablished {
    /// SPI the client receives on (chosen by the client).
    pub spi_i: EspSpi,
    /// SPI the gateway receives on (chosen by the gateway).
    pub spi_r: EspSpi,
    /// The ESP cipher.
    pub encr: AeadAlgorithm,
    /// Whether extended sequence numbers were negotiated.
    pub esn: bool,
    /// KEYMAT, with `encr_i`/`integ_i` protecting client-to-gateway traffic (RFC 7296 §2.17).
    pub keys: ChildSaKeys,
    /// Traffic selectors of the client's side.
    pub ts_i: Vec<TrafficSelector>,
    /// Traffic selectors of the gateway's side.
    pub ts_r: Vec<TrafficSelector>,
}

impl ChildSaEstablished {
    /// The SA's name in events.
    pub fn id(&self) -> ChildSaId {
        ChildSaId {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
        }
    }
}

/// A Child SA's name: its two ESP SPIs in the client's view (`spi_i` the client receives on,
/// `spi_r` the gateway receives on; RFC 7296 §2.17), whoever created it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildSaId {
    /// SPI the client receives on.
    pub spi_i: EspSpi,
    /// SPI the gateway receives on.
    pub spi_r: EspSpi,
}

impl core::fmt::Debug for ChildSaId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ChildSaId({}/{})", self.spi_i, self.spi_r)
    }
}

/// Configuration the responder assigned in CFG_REPLY (RFC 7296 §3.15).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigReceived {
    /// Virtual addresses with their prefix length.
    pub virtual_ips: Vec<(IpAddr, u8)>,
    /// DNS servers.
    pub dns: Vec<IpAddr>,
    /// Networks behind the gateway (INTERNAL_IP4/6_SUBNET): split tunnel when non-empty.
    pub subnets: Vec<(IpAddr, u8)>,
}

/// What happened, for the driver and UIs.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The IKE SA is authenticated.
    IkeSaEstablished {
        /// The negotiated algorithms.
        suite: Suite,
    },
    /// The responder's configuration reply.
    ConfigReceived(ConfigReceived),
    /// The Child SA of IKE_AUTH is up.
    ChildSaEstablished(Box<ChildSaEstablished>),
    /// The Child SA of IKE_AUTH failed; the IKE SA stays up.
    ChildSaFailed(Error),
    /// The IKE SA failed; it is dead and sends nothing more.
    Failed(Error),
    /// A Child SA was rekeyed ([RFC 7296 §2.8]): install `new` for both directions and send on
    /// it; keep accepting packets on `old` until [`Event::ChildSaDeleted`] names it
    /// (make-before-break). After a rekey collision (§2.8.1) the same `old` can be followed by
    /// two `ChildSaRekeyed`; send on the newest, the redundant one is deleted shortly after. It
    /// may be the newest: then send on the one it replaced again, until the survivor arrives.
    ///
    /// [RFC 7296 §2.8]: https://www.rfc-editor.org/rfc/rfc7296#section-2.8
    ChildSaRekeyed {
        /// The Child SA replaced.
        old: ChildSaId,
        /// The new Child SA.
        new: Box<ChildSaEstablished>,
    },
    /// A Child SA was deleted (by either side, after a rekey or at its hard lifetime): remove
    /// both directions from the data plane.
    ChildSaDeleted(ChildSaId),
    /// A new Child SA replaces one deleted without a successor: CREATE_CHILD_SA without
    /// REKEY_SA ([RFC 7296 §1.3.1]), as a gateway sends after a Child SA's hard lifetime.
    /// Install it like [`Event::ChildSaEstablished`]; the IKE SA is unchanged.
    ///
    /// [RFC 7296 §1.3.1]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.1
    ChildSaCreated(Box<ChildSaEstablished>),
    /// The IKE SA was rekeyed ([RFC 7296 §2.18]): new SPIs and keys, the same algorithms; its
    /// Child SAs are unchanged.
    ///
    /// [RFC 7296 §2.18]: https://www.rfc-editor.org/rfc/rfc7296#section-2.18
    IkeSaRekeyed {
        /// The negotiated algorithms.
        suite: Suite,
    },
    /// The IKE SA was deleted in an orderly way, by the peer or by a local `close`; its Child
    /// SAs are gone too (RFC 7296 §1.4.1). Nothing more is sent.
    Closed,
}

/// Outgoing datagrams, in order.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: VecDeque<(SocketAddr, bool, Vec<u8>)>,
}

impl Outbox {
    pub(crate) fn push(&mut self, destination: SocketAddr, nat_t: bool, message: Vec<u8>) {
        self.queue.push_back((destination, nat_t, message));
    }

    /// Writes the next datagram into `buf` (with the non-ESP marker when `nat_t`). A datagram
    /// that does not fit is dropped rather than truncated.
    pub(crate) fn poll(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((destination, nat_t, message)) = self.queue.pop_front() {
            let marker: &[u8] = if nat_t { &NON_ESP_MARKER } else { &[] };
            let size = marker.len() + message.len();
            let Some(out) = buf.get_mut(..size) else {
                continue;
            };
            let (m, rest) = out.split_at_mut(marker.len());
            m.copy_from_slice(marker);
            rest.copy_from_slice(&message);
            return Some(Transmit {
                destination,
                size,
                nat_t,
            });
        }
        None
    }

    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }

    /// Moves every datagram of `other` to the end of this queue.
    pub(crate) fn append(&mut self, other: &mut Self) {
        self.queue.append(&mut other.queue);
    }
}

/// The one outstanding request of an SA (window size 1, RFC 7296 §2.3) and its retransmission
/// schedule (RFC 7296 §2.1).
#[derive(Debug)]
pub(crate) struct Outstanding {
    pub(crate) message_id: MessageId,
    datagrams: Vec<Vec<u8>>,
    sent: u32,
    deadline: Instant,
}

impl Outstanding {
    pub(crate) fn new(
        now: Instant,
        config: &RetransmitConfig,
        message_id: MessageId,
        datagrams: Vec<Vec<u8>>,
    ) -> Self {
        Self {
            message_id,
            datagrams,
            sent: 1,
            deadline: now + config.wait_after(1).unwrap_or(Duration::ZERO),
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// On a timeout: `Ok(Some(datagrams))` to send again, `Ok(None)` if not due yet,
    /// `Err(Timeout)` when every attempt is spent.
    pub(crate) fn on_timeout(
        &mut self,
        now: Instant,
        config: &RetransmitConfig,
    ) -> Result<Option<&[Vec<u8>]>, Error> {
        if now < self.deadline {
            return Ok(None);
        }
        if self.sent >= config.attempts {
            return Err(Error::Timeout);
        }
        self.sent += 1;
        self.deadline = now + config.wait_after(self.sent).unwrap_or(Duration::ZERO);
        Ok(Some(&self.datagrams))
    }
}

/// `NAT_DETECTION_*_IP` data: `SHA-1(SPIi | SPIr | IP | Port)` (RFC 7296 §2.23).
pub(crate) fn nat_detection_hash(
    provider: &dyn CryptoProvider,
    spi_i: IkeSpi,
    spi_r: IkeSpi,
    addr: SocketAddr,
) -> [u8; 20] {
    let ip: Vec<u8> = match addr.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    provider.sha1(&[
        &spi_i.0.to_be_bytes(),
        &spi_r.0.to_be_bytes(),
        &ip,
        &addr.port().to_be_bytes(),
    ])
}

/// An address no real endpoint has, hashed into NAT_DETECTION_SOURCE_IP to make the peer
/// believe we are behind a NAT and so switch to UDP encapsulation (strongSwan's `encap = yes`).
pub(crate) fn fake_nat_source(real: SocketAddr) -> SocketAddr {
    match real {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// The first Notify of `notify_type` among `payloads`.
pub(crate) fn find_notify(payloads: &[Payload], notify_type: NotifyType) -> Option<&NotifyPayload> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.notify_type == notify_type => Some(n),
        _ => None,
    })
}

/// The first error Notify among `payloads`, if any (RFC 7296 §3.10.1: types below 16384).
pub(crate) fn first_error_notify(payloads: &[Payload]) -> Option<NotifyType> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.notify_type.is_error() => Some(n.notify_type),
        _ => None,
    })
}

/// `len` random octets from the provider.
pub(crate) fn random_bytes(provider: &dyn CryptoProvider, len: usize) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; len];
    provider.fill_random(&mut out)?;
    Ok(out)
}

/// A random non-zero SPI (RFC 7296 §2.6: an IKE SPI of zero means "not yet known").
pub(crate) fn random_spi(provider: &dyn CryptoProvider) -> Result<IkeSpi, Error> {
    loop {
        let mut b = [0u8; 8];
        provider.fill_random(&mut b)?;
        let spi = u64::from_be_bytes(b);
        if spi != 0 {
            return Ok(IkeSpi(spi));
        }
    }
}

/// A random ESP SPI above 255 (RFC 4303 §2.1 reserves 1..=255, 0 means none) that `in_use`
/// does not name: an inbound SPI identifies one SA (RFC 4301 §4.1; security review L4).
pub(crate) fn random_esp_spi(
    provider: &dyn CryptoProvider,
    in_use: impl Fn(EspSpi) -> bool,
) -> Result<EspSpi, Error> {
    // With fewer than 2^31 SPIs in use, 64 draws all failing means the source is broken.
    for _ in 0..64 {
        let mut b = [0u8; 4];
        provider.fill_random(&mut b)?;
        let spi = EspSpi(u32::from_be_bytes(b));
        if spi.0 >= EspSpi::MIN_ASSIGNABLE && !in_use(spi) {
            return Ok(spi);
        }
    }
    Err(Error::Crypto(crate::crypto::Error::RandomFailed))
}
