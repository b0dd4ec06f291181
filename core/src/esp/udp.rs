//! UDP encapsulation of ESP ([RFC 3948]): port 4500 demultiplexing and NAT keepalives.
//!
//! **UDP checksum.** This module never builds UDP headers; the socket does. Over IPv4 the
//! sender may transmit a zero UDP checksum for UDP-encapsulated ESP and the receiver must not
//! depend on it, because ESP's ICV protects the payload ([RFC 3948 §2.1]); over IPv6 a zero
//! checksum is not allowed, so the kernel computes it as for any UDP socket. Either way the
//! driver uses an ordinary UDP socket and nothing here depends on the checksum.
//!
//! [RFC 3948]: https://www.rfc-editor.org/rfc/rfc3948
//! [RFC 3948 §2.1]: https://www.rfc-editor.org/rfc/rfc3948#section-2.1

use super::sa::{Inbound, InboundSa};
use super::{Error, EspSpi};
use crate::wire::{self, NAT_KEEPALIVE, Udp4500};

/// The UDP port shared by IKE after NAT detection and UDP-encapsulated ESP.
pub const UDP_ENCAPSULATION_PORT: u16 = 4500;

/// Writes a NAT-keepalive payload ([`wire::NAT_KEEPALIVE`]) into `out` and returns its length, 1.
///
/// The driver sends it from port 4500 to the peer's port 4500 when nothing else was sent for a
/// while (strongSwan's default is 20 s), to keep the NAT mapping alive ([RFC 3948 §2.3]).
///
/// # Errors
///
/// [`Error::BufferTooSmall`] if `out` is empty.
///
/// [RFC 3948 §2.3]: https://www.rfc-editor.org/rfc/rfc3948#section-2.3
pub fn nat_keepalive(out: &mut [u8]) -> Result<usize, Error> {
    let first = out.first_mut().ok_or(Error::BufferTooSmall { needed: 1 })?;
    *first = NAT_KEEPALIVE[0];
    Ok(NAT_KEEPALIVE.len())
}

/// What a port 4500 datagram turned out to be.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// An IKE message, non-ESP marker removed: hand it to the IKE SA.
    Ike(&'a [u8]),
    /// A NAT keepalive; receivers ignore it ([RFC 3948 §2.3]).
    ///
    /// [RFC 3948 §2.3]: https://www.rfc-editor.org/rfc/rfc3948#section-2.3
    NatKeepalive,
    /// An ESP packet for the inbound SA `spi`, opened.
    Esp {
        /// The SA that opened it.
        spi: EspSpi,
        /// What to do with its content.
        packet: Inbound<'a>,
    },
}

/// The inbound SAs of one peer, keyed by SPI, and the demultiplexer for port 4500 in front of
/// them ([RFC 3948 §2.2]).
///
/// A client has one Child SA per tunnel, two while rekeying, so the table is a short vector
/// searched linearly; only [`insert`](Self::insert) allocates.
///
/// [RFC 3948 §2.2]: https://www.rfc-editor.org/rfc/rfc3948#section-2.2
#[derive(Debug, Default)]
pub struct Demux {
    sas: Vec<InboundSa>,
    unknown_spi: u64,
}

impl Demux {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `sa`, returning the SA it replaces if one had the same SPI.
    pub fn insert(&mut self, sa: InboundSa) -> Option<InboundSa> {
        match self.sas.iter_mut().find(|s| s.spi() == sa.spi()) {
            Some(slot) => Some(core::mem::replace(slot, sa)),
            None => {
                self.sas.push(sa);
                None
            }
        }
    }

    /// Removes and returns the SA for `spi` (after a Delete or a completed rekey).
    pub fn remove(&mut self, spi: EspSpi) -> Option<InboundSa> {
        let at = self.sas.iter().position(|s| s.spi() == spi)?;
        Some(self.sas.swap_remove(at))
    }

    /// The SA for `spi`.
    pub fn get(&self, spi: EspSpi) -> Option<&InboundSa> {
        self.sas.iter().find(|s| s.spi() == spi)
    }

    /// The SA for `spi`, mutably (e.g. to call [`InboundSa::open_in_place`]).
    pub fn get_mut(&mut self, spi: EspSpi) -> Option<&mut InboundSa> {
        self.sas.iter_mut().find(|s| s.spi() == spi)
    }

    /// The SAs in the table.
    pub fn iter(&self) -> impl Iterator<Item = &InboundSa> {
        self.sas.iter()
    }

    /// Number of SAs.
    pub fn len(&self) -> usize {
        self.sas.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.sas.is_empty()
    }

    /// ESP packets dropped because no SA had their SPI.
    pub fn unknown_spi_drops(&self) -> u64 {
        self.unknown_spi
    }

    /// Classifies one UDP payload received on port 4500 with [`wire::classify_udp4500`] and, if
    /// it is ESP, opens it into `out` with the SA its SPI names ([`InboundSa::open`]).
    ///
    /// A single 0xFF octet is a NAT keepalive, four zero octets start an IKE message, anything
    /// else of at least 8 octets is ESP ([RFC 3948 §2.2], §2.3).
    ///
    /// # Errors
    ///
    /// [`Error::NotUdp4500`] for a payload that is none of these, [`Error::UnknownSpi`]
    /// (counted in [`unknown_spi_drops`](Self::unknown_spi_drops)), and the errors of
    /// [`InboundSa::open`].
    ///
    /// [RFC 3948 §2.2]: https://www.rfc-editor.org/rfc/rfc3948#section-2.2
    pub fn handle_udp4500<'a>(
        &mut self,
        payload: &'a [u8],
        out: &'a mut [u8],
    ) -> Result<Received<'a>, Error> {
        let esp = match wire::classify_udp4500(payload).map_err(Error::NotUdp4500)? {
            Udp4500::Ike(message) => return Ok(Received::Ike(message)),
            Udp4500::NatKeepalive => return Ok(Received::NatKeepalive),
            Udp4500::Esp(esp) => esp,
        };
        let spi = esp
            .first_chunk::<4>()
            .map(|spi| EspSpi(u32::from_be_bytes(*spi)))
            .ok_or(Error::Truncated)?;
        let Some(sa) = self.get_mut(spi) else {
            self.unknown_spi += 1;
            return Err(Error::UnknownSpi(spi));
        };
        let packet = sa.open(esp, out)?;
        Ok(Received::Esp { spi, packet })
    }
}
