//! One Child SA's ESP state: sealing (outbound) and opening (inbound) in tunnel mode.

use crate::crypto::{AeadAlgorithm, AeadKey, CryptoProvider, IV_LEN, SecretBytes, TAG_LEN};

use super::replay::{DEFAULT_REPLAY_WINDOW, ReplayWindow};
use super::{
    Error, EspSpi, HEADER_LEN, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6, NEXT_HEADER_NO_NEXT,
    PAYLOAD_OFFSET,
};

/// Octets of Pad Length and Next Header.
const TRAILER_LEN: usize = 2;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;

/// Whether and how an inbound SA rejects replayed packets ([RFC 4303 §3.4.3]).
///
/// [RFC 4303 §3.4.3]: https://www.rfc-editor.org/rfc/rfc4303#section-3.4.3
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayProtection {
    /// A sliding window of this many packets (32 to 4096).
    Window(u32),
    /// No replay check at all: for gateways behind anycast, where packets of one SA may reach
    /// different servers (Cloudflare lets customers turn anti-replay off for this reason).
    ///
    /// With ESN the highest authenticated number is still tracked to infer the high-order bits
    /// (RFC 4303 Appendix A2, with W = 64), so a packet more than 64 behind it is taken to be
    /// from the next 2^32 block and fails the ICV. Such gateways run without ESN.
    Disabled,
}

impl Default for ReplayProtection {
    fn default() -> Self {
        Self::Window(DEFAULT_REPLAY_WINDOW)
    }
}

/// The negotiated parameters of a Child SA, shared by both directions.
///
/// Construct with [`SaConfig::new`] and adjust the public fields.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaConfig {
    /// The AEAD transform.
    pub algorithm: AeadAlgorithm,
    /// Extended Sequence Numbers were negotiated (Transform Type 5, `ESN`, [RFC 4303 §2.2.1]).
    ///
    /// [RFC 4303 §2.2.1]: https://www.rfc-editor.org/rfc/rfc4303#section-2.2.1
    pub esn: bool,
    /// Anti-replay for the inbound direction.
    pub replay: ReplayProtection,
    /// After this many outbound packets [`OutboundSa::needs_rekey`] turns true. `None`: 7/8 of
    /// the hard limit.
    pub soft_limit: Option<u64>,
    /// The outbound SA refuses to seal more than this many packets. Capped at (and by default)
    /// 2^32 - 1, or 2^64 - 1 with ESN, so the counter never cycles ([RFC 4303 §3.3.3]).
    ///
    /// [RFC 4303 §3.3.3]: https://www.rfc-editor.org/rfc/rfc4303#section-3.3.3
    pub hard_limit: Option<u64>,
}

impl SaConfig {
    /// Parameters for `algorithm` with the defaults: no ESN, a 64-packet replay window, sequence
    /// limits derived from the counter width.
    pub fn new(algorithm: AeadAlgorithm) -> Self {
        Self {
            algorithm,
            esn: false,
            replay: ReplayProtection::default(),
            soft_limit: None,
            hard_limit: None,
        }
    }

    /// The `(soft, hard)` sequence number limits after defaults and caps.
    fn limits(&self) -> (u64, u64) {
        let max = if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        let hard = self.hard_limit.map_or(max, |h| h.min(max));
        let soft = self.soft_limit.unwrap_or(hard - hard / 8).min(hard);
        (soft, hard)
    }
}

/// The length of the datagram [`OutboundSa::seal`] makes from an `inner_len`-octet packet.
///
/// Saturates at `usize::MAX` instead of overflowing.
pub const fn sealed_len(inner_len: usize) -> usize {
    PAYLOAD_OFFSET
        .saturating_add(padded_len(inner_len))
        .saturating_add(TAG_LEN)
}

/// Ciphertext length: payload, padding to a 4-octet boundary, Pad Length and Next Header
/// ([RFC 4303 §2.4]; RFC 4106 §3.2 and RFC 7634 §3 keep the 4-octet rule).
///
/// [RFC 4303 §2.4]: https://www.rfc-editor.org/rfc/rfc4303#section-2.4
const fn padded_len(payload_len: usize) -> usize {
    payload_len.saturating_add(TRAILER_LEN + 3) & !3
}

/// The Associated Data: `SPI | seq` or, with ESN, `SPI | seq_high | seq_low` ([RFC 4106 §5],
/// [RFC 7634 §2.1]). The high bits are authenticated but never sent.
///
/// [RFC 4106 §5]: https://www.rfc-editor.org/rfc/rfc4106#section-5
/// [RFC 7634 §2.1]: https://www.rfc-editor.org/rfc/rfc7634#section-2.1
fn aad(spi: EspSpi, seq: u64, esn: bool, buf: &mut [u8; 12]) -> &[u8] {
    let [s0, s1, s2, s3] = spi.to_be_bytes();
    let [h0, h1, h2, h3, l0, l1, l2, l3] = seq.to_be_bytes();
    if esn {
        *buf = [s0, s1, s2, s3, h0, h1, h2, h3, l0, l1, l2, l3];
        buf
    } else {
        *buf = [s0, s1, s2, s3, l0, l1, l2, l3, 0, 0, 0, 0];
        let (aad, _) = buf.split_at(8);
        aad
    }
}

/// The length of the inner IP packet at the start of `payload`, from its own header.
///
/// Octets after it are TFC padding ([RFC 4303 §2.7]). An IPv6 Payload Length of 0 (a
/// jumbogram, which cannot fit in ESP over UDP) reads as a bare header.
///
/// [RFC 4303 §2.7]: https://www.rfc-editor.org/rfc/rfc4303#section-2.7
fn inner_packet_len(next_header: u8, payload: &[u8]) -> Result<usize, Error> {
    let version = payload.first().map(|b| b >> 4);
    let field = |at: usize| {
        payload
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 2]| usize::from(u16::from_be_bytes(b)))
    };
    let len = match next_header {
        NEXT_HEADER_IPV4 => {
            if version != Some(4) {
                return Err(Error::InvalidInnerPacket("Next Header 4 without IPv4"));
            }
            let total = field(2).ok_or(Error::InvalidInnerPacket("IPv4 header truncated"))?;
            if payload.len() < IPV4_HEADER_LEN || total < IPV4_HEADER_LEN {
                return Err(Error::InvalidInnerPacket("IPv4 header truncated"));
            }
            total
        }
        NEXT_HEADER_IPV6 => {
            if version != Some(6) {
                return Err(Error::InvalidInnerPacket("Next Header 41 without IPv6"));
            }
            if payload.len() < IPV6_HEADER_LEN {
                return Err(Error::InvalidInnerPacket("IPv6 header truncated"));
            }
            let plen = field(4).ok_or(Error::InvalidInnerPacket("IPv6 header truncated"))?;
            IPV6_HEADER_LEN + plen
        }
        other => return Err(Error::UnsupportedNextHeader(other)),
    };
    if len > payload.len() {
        return Err(Error::InvalidInnerPacket(
            "length field exceeds the available octets",
        ));
    }
    Ok(len)
}

/// The Next Header for an inner packet, from its version nibble.
fn next_header_for(inner: &[u8]) -> Result<u8, Error> {
    match inner.first().map(|b| b >> 4) {
        Some(4) => Ok(NEXT_HEADER_IPV4),
        Some(6) => Ok(NEXT_HEADER_IPV6),
        Some(_) => Err(Error::InvalidInnerPacket("IP version is neither 4 nor 6")),
        None => Err(Error::InvalidInnerPacket("empty packet")),
    }
}

/// Counters of the outbound direction.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundStats {
    /// IP packets sealed.
    pub packets: u64,
    /// Octets of those inner IP packets (without ESP overhead).
    pub bytes: u64,
    /// TFC dummy packets sealed ([`OutboundSa::seal_dummy`]).
    pub dummy_packets: u64,
}

/// Counters of the inbound direction. Each dropped datagram is counted once, by its error.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundStats {
    /// IP packets opened and handed to the caller.
    pub packets: u64,
    /// Octets of those inner IP packets.
    pub bytes: u64,
    /// Authenticated TFC dummy packets, dropped as RFC 4303 §2.6 requires.
    pub dummy_packets: u64,
    /// Drops for [`Error::Replay`] or [`Error::TooOld`].
    pub replay_drops: u64,
    /// Drops for [`Error::AuthenticationFailed`].
    pub auth_failures: u64,
    /// Drops for [`Error::BadPadding`].
    pub padding_errors: u64,
    /// Drops for [`Error::UnsupportedNextHeader`].
    pub unsupported_next_header: u64,
    /// Drops for [`Error::Truncated`], [`Error::Misaligned`] or [`Error::InvalidInnerPacket`].
    pub malformed: u64,
}

/// Counters of both directions of a [`ChildSa`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// The outbound direction.
    pub outbound: OutboundStats,
    /// The inbound direction.
    pub inbound: InboundStats,
}

/// The sending half of a Child SA: turns inner IP packets into ESP datagrams.
#[derive(Debug)]
pub struct OutboundSa {
    spi: EspSpi,
    key: AeadKey,
    esn: bool,
    /// The last sequence number used; 0 before the first packet.
    seq: u64,
    soft_limit: u64,
    hard_limit: u64,
    stats: OutboundStats,
}

impl OutboundSa {
    /// Keys the outbound SA. `spi` is the peer's inbound SPI; `keymat` is this direction's
    /// `key | salt` from KEYMAT ([RFC 7296 §2.17]).
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if `keymat` has the wrong length for the algorithm or the provider
    /// cannot key it.
    ///
    /// [RFC 7296 §2.17]: https://www.rfc-editor.org/rfc/rfc7296#section-2.17
    pub fn new(
        provider: &dyn CryptoProvider,
        config: &SaConfig,
        spi: EspSpi,
        keymat: &SecretBytes,
    ) -> Result<Self, Error> {
        let key =
            AeadKey::new(provider, config.algorithm, keymat.expose()).map_err(Error::Crypto)?;
        let (soft_limit, hard_limit) = config.limits();
        Ok(Self {
            spi,
            key,
            esn: config.esn,
            seq: 0,
            soft_limit,
            hard_limit,
            stats: OutboundStats::default(),
        })
    }

    /// The SPI written into every datagram.
    pub fn spi(&self) -> EspSpi {
        self.spi
    }

    /// The last sequence number used, 0 before the first packet.
    pub fn sequence_number(&self) -> u64 {
        self.seq
    }

    /// Whether the soft sequence number limit is reached: the IKE SA should rekey this Child
    /// SA now, before [`Error::SequenceExhausted`] stops it.
    pub fn needs_rekey(&self) -> bool {
        self.seq >= self.soft_limit
    }

    /// The counters.
    pub fn stats(&self) -> OutboundStats {
        self.stats
    }

    /// Seals `inner_ip_packet` into `out` and returns the datagram's length.
    ///
    /// The Next Header (4 or 41) comes from the packet's version nibble; the datagram is
    /// [`sealed_len`]`(inner_ip_packet.len())` octets. Copies the packet once; use
    /// [`seal_in_place`](Self::seal_in_place) to avoid that.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInnerPacket`] unless the packet is IPv4 or IPv6 whose length field
    /// matches its length, [`Error::BufferTooSmall`], and [`Error::SequenceExhausted`] at the
    /// hard limit. No sequence number is used up on error.
    pub fn seal(&mut self, inner_ip_packet: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let next_header = check_outbound_packet(inner_ip_packet)?;
        let len = inner_ip_packet.len();
        let needed = sealed_len(len);
        if out.len() < needed {
            return Err(Error::BufferTooSmall { needed });
        }
        out.get_mut(PAYLOAD_OFFSET..PAYLOAD_OFFSET.saturating_add(len))
            .ok_or(Error::BufferTooSmall { needed })?
            .copy_from_slice(inner_ip_packet);
        self.seal_payload(out, len, next_header)
    }

    /// Seals the inner packet already at `buf[PAYLOAD_OFFSET..PAYLOAD_OFFSET + inner_len]`
    /// around itself and returns the datagram's length.
    ///
    /// `buf` must hold [`sealed_len`]`(inner_len)` octets; octets outside the packet are
    /// overwritten.
    ///
    /// # Errors
    ///
    /// As [`seal`](Self::seal).
    pub fn seal_in_place(&mut self, buf: &mut [u8], inner_len: usize) -> Result<usize, Error> {
        let inner = buf
            .get(PAYLOAD_OFFSET..PAYLOAD_OFFSET.saturating_add(inner_len))
            .ok_or_else(|| Error::BufferTooSmall {
                needed: sealed_len(inner_len),
            })?;
        let next_header = check_outbound_packet(inner)?;
        self.seal_payload(buf, inner_len, next_header)
    }

    /// Seals a TFC dummy packet (Next Header 59, [RFC 4303 §2.6]) of `len` zero octets into
    /// `out`; the peer authenticates and discards it.
    ///
    /// # Errors
    ///
    /// [`Error::BufferTooSmall`] and [`Error::SequenceExhausted`].
    ///
    /// [RFC 4303 §2.6]: https://www.rfc-editor.org/rfc/rfc4303#section-2.6
    pub fn seal_dummy(&mut self, len: usize, out: &mut [u8]) -> Result<usize, Error> {
        let needed = sealed_len(len);
        if out.len() < needed {
            return Err(Error::BufferTooSmall { needed });
        }
        out.get_mut(PAYLOAD_OFFSET..PAYLOAD_OFFSET.saturating_add(len))
            .ok_or(Error::BufferTooSmall { needed })?
            .fill(0);
        self.seal_payload(out, len, NEXT_HEADER_NO_NEXT)
    }

    /// Takes the next sequence number and seals the payload at `PAYLOAD_OFFSET` in `buf`.
    fn seal_payload(
        &mut self,
        buf: &mut [u8],
        payload_len: usize,
        next_header: u8,
    ) -> Result<usize, Error> {
        let needed = sealed_len(payload_len);
        if buf.len() < needed {
            return Err(Error::BufferTooSmall { needed });
        }
        let seq = self
            .seq
            .checked_add(1)
            .filter(|&s| s <= self.hard_limit)
            .ok_or(Error::SequenceExhausted)?;
        let len = self.write(buf, payload_len, next_header, seq, seq.to_be_bytes())?;
        self.seq = seq;
        if next_header == NEXT_HEADER_NO_NEXT {
            self.stats.dummy_packets += 1;
        } else {
            self.stats.packets += 1;
            self.stats.bytes += payload_len as u64;
        }
        Ok(len)
    }

    /// Moves the counter, so tests can reach the limits without 2^32 packets.
    #[cfg(test)]
    pub(super) fn set_sequence_number(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// Writes header, IV and trailer around the payload at `PAYLOAD_OFFSET`, encrypts and
    /// appends the ICV. `iv` is separate from `seq` only so tests can replay published vectors.
    pub(super) fn write(
        &self,
        buf: &mut [u8],
        payload_len: usize,
        next_header: u8,
        seq: u64,
        iv: [u8; IV_LEN],
    ) -> Result<usize, Error> {
        let ct_len = padded_len(payload_len);
        let needed = sealed_len(payload_len);
        let too_small = || Error::BufferTooSmall { needed };
        let datagram = buf.get_mut(..needed).ok_or_else(too_small)?;
        let (header, rest) = datagram
            .split_at_mut_checked(HEADER_LEN)
            .ok_or_else(too_small)?;
        let (iv_field, rest) = rest.split_at_mut_checked(IV_LEN).ok_or_else(too_small)?;
        let (ciphertext, icv) = rest.split_at_mut_checked(ct_len).ok_or_else(too_small)?;

        let [s0, s1, s2, s3] = self.spi.to_be_bytes();
        let [l0, l1, l2, l3] = (seq as u32).to_be_bytes();
        header.copy_from_slice(&[s0, s1, s2, s3, l0, l1, l2, l3]);
        iv_field.copy_from_slice(&iv);

        let (_, tail) = ciphertext
            .split_at_mut_checked(payload_len)
            .ok_or_else(too_small)?;
        let pad_len = tail.len().saturating_sub(TRAILER_LEN);
        for (i, b) in tail.iter_mut().enumerate() {
            // Padding 1, 2, 3, … then Pad Length and Next Header (RFC 4303 §2.4).
            *b = match i.checked_sub(pad_len) {
                None => (i + 1) as u8,
                Some(0) => pad_len as u8,
                Some(_) => next_header,
            };
        }

        let mut aad_buf = [0u8; 12];
        let aad = aad(self.spi, seq, self.esn, &mut aad_buf);
        let tag = self.key.seal(&iv, aad, ciphertext).map_err(Error::Crypto)?;
        icv.copy_from_slice(&tag);
        Ok(needed)
    }
}

fn check_outbound_packet(inner: &[u8]) -> Result<u8, Error> {
    let next_header = next_header_for(inner)?;
    if inner_packet_len(next_header, inner)? != inner.len() {
        return Err(Error::InvalidInnerPacket(
            "length field does not match the packet length",
        ));
    }
    Ok(next_header)
}

/// What to do with an opened datagram.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Write this IPv4 packet to the TUN device.
    Ipv4(&'a mut [u8]),
    /// Write this IPv6 packet to the TUN device.
    Ipv6(&'a mut [u8]),
    /// An authenticated TFC dummy packet (Next Header 59); it was counted and is dropped.
    Dummy,
}

/// The parts of a datagram read before decryption.
struct Header {
    seq: u64,
    iv: [u8; IV_LEN],
    icv: [u8; TAG_LEN],
    ct_len: usize,
}

/// The receiving half of a Child SA: checks, decrypts and unwraps ESP datagrams.
#[derive(Debug)]
pub struct InboundSa {
    spi: EspSpi,
    key: AeadKey,
    esn: bool,
    anti_replay: bool,
    window: ReplayWindow,
    stats: InboundStats,
}

impl InboundSa {
    /// Keys the inbound SA. `spi` is the SPI this side chose; `keymat` is the peer's
    /// direction's `key | salt` from KEYMAT ([RFC 7296 §2.17]).
    ///
    /// # Errors
    ///
    /// [`Error::ApiMisuse`] for an SPI below 256 or a replay window outside 32..=4096;
    /// [`Error::Crypto`] as for [`OutboundSa::new`].
    ///
    /// [RFC 7296 §2.17]: https://www.rfc-editor.org/rfc/rfc7296#section-2.17
    pub fn new(
        provider: &dyn CryptoProvider,
        config: &SaConfig,
        spi: EspSpi,
        keymat: &SecretBytes,
    ) -> Result<Self, Error> {
        if spi.0 < EspSpi::MIN_ASSIGNABLE {
            return Err(Error::ApiMisuse("SPIs 0 to 255 are reserved"));
        }
        let (anti_replay, size) = match config.replay {
            ReplayProtection::Window(size) => (true, size),
            ReplayProtection::Disabled => (false, DEFAULT_REPLAY_WINDOW),
        };
        let window = ReplayWindow::new(size)?;
        let key =
            AeadKey::new(provider, config.algorithm, keymat.expose()).map_err(Error::Crypto)?;
        Ok(Self {
            spi,
            key,
            esn: config.esn,
            anti_replay,
            window,
            stats: InboundStats::default(),
        })
    }

    /// The SPI this SA receives on.
    pub fn spi(&self) -> EspSpi {
        self.spi
    }

    /// The highest authenticated sequence number so far, 0 before the first packet.
    pub fn sequence_number(&self) -> u64 {
        self.window.top()
    }

    /// The counters.
    pub fn stats(&self) -> InboundStats {
        self.stats
    }

    /// The replay window, so tests can place it where a published vector needs it.
    #[cfg(test)]
    pub(super) fn window_mut(&mut self) -> &mut ReplayWindow {
        &mut self.window
    }

    /// Opens `datagram` (a UDP payload after demultiplexing) into `out`.
    ///
    /// Order of checks ([RFC 4303 §3.4]): lengths and SPI, the replay window, the ICV, then
    /// the window update, then padding and the inner packet. A datagram that fails the ICV
    /// leaves the window untouched; one that passes it but is malformed inside still uses up
    /// its sequence number. `out` needs `datagram.len() - 32` octets; the returned packet is a
    /// prefix of `out` (TFC padding after the inner packet is dropped, [RFC 4303 §2.7]).
    ///
    /// # Errors
    ///
    /// Each [`Error`] variant about received data; all are counted in [`stats`](Self::stats)
    /// except [`Error::UnknownSpi`] and [`Error::BufferTooSmall`].
    ///
    /// [RFC 4303 §3.4]: https://www.rfc-editor.org/rfc/rfc4303#section-3.4
    /// [RFC 4303 §2.7]: https://www.rfc-editor.org/rfc/rfc4303#section-2.7
    pub fn open<'a>(&mut self, datagram: &[u8], out: &'a mut [u8]) -> Result<Inbound<'a>, Error> {
        let result = self.parse(datagram).and_then(|header| {
            let ct = datagram
                .get(PAYLOAD_OFFSET..PAYLOAD_OFFSET + header.ct_len)
                .ok_or(Error::Truncated)?;
            let out = out.get_mut(..header.ct_len).ok_or(Error::BufferTooSmall {
                needed: header.ct_len,
            })?;
            out.copy_from_slice(ct);
            self.decrypt(&header, out)
        });
        self.count(result)
    }

    /// Opens `datagram` in place; the returned packet lies inside it.
    ///
    /// Saves the copy [`open`](Self::open) makes. On error `datagram` holds unspecified bytes.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open), without [`Error::BufferTooSmall`].
    pub fn open_in_place<'a>(&mut self, datagram: &'a mut [u8]) -> Result<Inbound<'a>, Error> {
        let result = self.parse(datagram).and_then(|header| {
            let ct = datagram
                .get_mut(PAYLOAD_OFFSET..PAYLOAD_OFFSET + header.ct_len)
                .ok_or(Error::Truncated)?;
            self.decrypt(&header, ct)
        });
        self.count(result)
    }

    /// Checks lengths, the SPI and the replay window; reads seq, IV and ICV.
    fn parse(&self, datagram: &[u8]) -> Result<Header, Error> {
        let (header, rest) = datagram
            .split_at_checked(HEADER_LEN)
            .ok_or(Error::Truncated)?;
        let (spi, seq_low) = header.split_at_checked(4).ok_or(Error::Truncated)?;
        let spi = EspSpi(u32::from_be_bytes(
            spi.try_into().map_err(|_| Error::Truncated)?,
        ));
        if spi != self.spi {
            return Err(Error::UnknownSpi(spi));
        }
        let seq_low = u32::from_be_bytes(seq_low.try_into().map_err(|_| Error::Truncated)?);
        let (iv, rest) = rest.split_at_checked(IV_LEN).ok_or(Error::Truncated)?;
        let ct_len = rest
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&n| n >= 4)
            .ok_or(Error::Truncated)?;
        if ct_len % 4 != 0 {
            return Err(Error::Misaligned(ct_len));
        }
        let (_, icv) = rest.split_at_checked(ct_len).ok_or(Error::Truncated)?;
        let seq = if self.esn {
            self.window.infer_esn(seq_low)
        } else {
            u64::from(seq_low)
        };
        if self.anti_replay {
            self.window.check(seq)?;
        }
        Ok(Header {
            seq,
            iv: iv.try_into().map_err(|_| Error::Truncated)?,
            icv: icv.try_into().map_err(|_| Error::Truncated)?,
            ct_len,
        })
    }

    /// Verifies and decrypts `ct` in place, updates the window, and unwraps the payload.
    fn decrypt<'a>(&mut self, header: &Header, ct: &'a mut [u8]) -> Result<Inbound<'a>, Error> {
        let mut aad_buf = [0u8; 12];
        let aad = aad(self.spi, header.seq, self.esn, &mut aad_buf);
        self.key
            .open(&header.iv, aad, ct, &header.icv)
            .map_err(|_| Error::AuthenticationFailed)?;
        // Authentic: the sequence number is spent whatever the payload holds.
        self.window.update(header.seq);

        let body_len = ct.len().checked_sub(TRAILER_LEN).ok_or(Error::Truncated)?;
        let (body, trailer) = ct.split_at_mut_checked(body_len).ok_or(Error::Truncated)?;
        let (pad_len, next_header) = match *trailer {
            [pad_len, next_header] => (usize::from(pad_len), next_header),
            _ => return Err(Error::Truncated),
        };
        let payload_len = body_len.checked_sub(pad_len).ok_or(Error::BadPadding)?;
        let (payload, padding) = body
            .split_at_mut_checked(payload_len)
            .ok_or(Error::BadPadding)?;
        // RFC 4303 §2.4: the receiver SHOULD check the default padding 1, 2, 3, …
        if !padding
            .iter()
            .enumerate()
            .all(|(i, &b)| usize::from(b) == i + 1)
        {
            return Err(Error::BadPadding);
        }
        if next_header == NEXT_HEADER_NO_NEXT {
            return Ok(Inbound::Dummy);
        }
        let len = inner_packet_len(next_header, payload)?;
        let (packet, _tfc_padding) =
            payload
                .split_at_mut_checked(len)
                .ok_or(Error::InvalidInnerPacket(
                    "length field exceeds the payload",
                ))?;
        Ok(if next_header == NEXT_HEADER_IPV4 {
            Inbound::Ipv4(packet)
        } else {
            Inbound::Ipv6(packet)
        })
    }

    /// Updates the counters for one datagram's outcome.
    fn count<'a>(&mut self, result: Result<Inbound<'a>, Error>) -> Result<Inbound<'a>, Error> {
        let s = &mut self.stats;
        match &result {
            Ok(Inbound::Ipv4(p) | Inbound::Ipv6(p)) => {
                s.packets += 1;
                s.bytes += p.len() as u64;
            }
            Ok(Inbound::Dummy) => s.dummy_packets += 1,
            Err(Error::Replay(_) | Error::TooOld(_)) => s.replay_drops += 1,
            Err(Error::AuthenticationFailed) => s.auth_failures += 1,
            Err(Error::BadPadding) => s.padding_errors += 1,
            Err(Error::UnsupportedNextHeader(_)) => s.unsupported_next_header += 1,
            Err(Error::Truncated | Error::Misaligned(_) | Error::InvalidInnerPacket(_)) => {
                s.malformed += 1;
            }
            Err(_) => {}
        }
        result
    }
}

/// Both directions of one Child SA, created together from the negotiated parameters.
///
/// The halves share nothing at run time, so a driver can [`split`](Self::split) them: the TUN
/// reader owns the [`OutboundSa`], the UDP reader puts the [`InboundSa`] into a
/// [`Demux`](super::Demux), and neither needs a lock. Rekeying also replaces the halves at
/// different moments (the new inbound SA first, the old one kept briefly for packets in
/// flight).
#[derive(Debug)]
pub struct ChildSa {
    outbound: OutboundSa,
    inbound: InboundSa,
}

impl ChildSa {
    /// Keys both directions. As the IKE initiator, the outbound keymat is KEYMAT's first
    /// (initiator-to-responder) piece and `outbound_spi` the responder's SPI
    /// ([RFC 7296 §2.17]).
    ///
    /// # Errors
    ///
    /// As [`OutboundSa::new`] and [`InboundSa::new`].
    ///
    /// [RFC 7296 §2.17]: https://www.rfc-editor.org/rfc/rfc7296#section-2.17
    pub fn new(
        provider: &dyn CryptoProvider,
        config: &SaConfig,
        outbound_spi: EspSpi,
        outbound_keymat: &SecretBytes,
        inbound_spi: EspSpi,
        inbound_keymat: &SecretBytes,
    ) -> Result<Self, Error> {
        Ok(Self {
            outbound: OutboundSa::new(provider, config, outbound_spi, outbound_keymat)?,
            inbound: InboundSa::new(provider, config, inbound_spi, inbound_keymat)?,
        })
    }

    /// Seals an inner IP packet; see [`OutboundSa::seal`].
    ///
    /// # Errors
    ///
    /// As [`OutboundSa::seal`].
    pub fn seal(&mut self, inner_ip_packet: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        self.outbound.seal(inner_ip_packet, out)
    }

    /// Opens a received datagram; see [`InboundSa::open`].
    ///
    /// # Errors
    ///
    /// As [`InboundSa::open`].
    pub fn open<'a>(&mut self, datagram: &[u8], out: &'a mut [u8]) -> Result<Inbound<'a>, Error> {
        self.inbound.open(datagram, out)
    }

    /// Whether the outbound direction reached its soft limit; see [`OutboundSa::needs_rekey`].
    pub fn needs_rekey(&self) -> bool {
        self.outbound.needs_rekey()
    }

    /// The counters of both directions.
    pub fn stats(&self) -> Stats {
        Stats {
            outbound: self.outbound.stats(),
            inbound: self.inbound.stats(),
        }
    }

    /// The outbound half.
    pub fn outbound(&mut self) -> &mut OutboundSa {
        &mut self.outbound
    }

    /// The inbound half.
    pub fn inbound(&mut self) -> &mut InboundSa {
        &mut self.inbound
    }

    /// Splits the SA into its independent halves.
    pub fn split(self) -> (OutboundSa, InboundSa) {
        (self.outbound, self.inbound)
    }
}
