//! What an IKE SA negotiates and with whom: the crypto policy per mode, identities, the PSK,
//! and the initiator's and responder's knobs.

use core::fmt;
use core::str::FromStr;
use core::time::Duration;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::crypto::{AeadAlgorithm, SecretBytes};
use crate::wire::{
    EsnMode, EspSpi, IkeId, KeyExchangeMethod, PrfAlgorithm, Proposal, ProtocolId, TrafficSelector,
    Transform,
};

/// The product's three constructions. Each is one proposal, never a negotiation playground.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Classical (EC)DH in IKE_SA_INIT plus ML-KEM as ADDKE1 in IKE_INTERMEDIATE (RFC 9370).
    /// ML-KEM is required: a responder that drops it is refused.
    Hybrid,
    /// ML-KEM alone in IKE_SA_INIT, no classical group (draft-ietf-ipsecme-ikev2-mlkem §2.1).
    PqOnly,
    /// Classical (EC)DH only, for legacy gateways a profile names explicitly. Not quantum-safe.
    Classical,
}

impl Mode {
    /// The name profiles and status output use: `hybrid`, `pq-only`, `classical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hybrid => "hybrid",
            Self::PqOnly => "pq-only",
            Self::Classical => "classical",
        }
    }
}

/// A mode name that is none of `hybrid`, `pq-only`, `classical`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMode(pub String);

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mode = \"{}\": expected \"hybrid\", \"pq-only\" or \"classical\"",
            self.0
        )
    }
}

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hybrid" => Ok(Self::Hybrid),
            "pq-only" => Ok(Self::PqOnly),
            "classical" => Ok(Self::Classical),
            other => Err(UnknownMode(other.to_owned())),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one IKE proposal a mode makes: which algorithms, in which roles.
///
/// The first entry of `ke` goes into KEi; the others are accepted if the responder asks for
/// them with INVALID_KE_PAYLOAD (e.g. a gateway that only takes P-384, as Cloudflare's does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoPolicy {
    /// The construction.
    pub mode: Mode,
    /// Encryption of the SK payload (an AEAD).
    pub encr: AeadAlgorithm,
    /// The PRF.
    pub prf: PrfAlgorithm,
    /// Transform Type 4 methods, preferred first.
    pub ke: Vec<KeyExchangeMethod>,
    /// ADDKE1..n methods, in round order; each round has exactly one method (no `NONE`).
    pub addke: Vec<KeyExchangeMethod>,
}

impl CryptoPolicy {
    /// `hybrid`: AES-GCM-16-256, HMAC-SHA2-384, KE {X25519, P-384}, ADDKE1 `mlkem`
    /// (ML-KEM-768 by default, ML-KEM-1024 selectable).
    pub fn hybrid(mlkem: KeyExchangeMethod) -> Self {
        Self {
            mode: Mode::Hybrid,
            encr: AeadAlgorithm::Aes256Gcm16,
            prf: PrfAlgorithm::HmacSha2_384,
            ke: vec![KeyExchangeMethod::Curve25519, KeyExchangeMethod::Ecp384],
            addke: vec![mlkem],
        }
    }

    /// `pq-only`: AES-GCM-16-256, HMAC-SHA2-384, KE {`mlkem`}, no additional exchange.
    pub fn pq_only(mlkem: KeyExchangeMethod) -> Self {
        Self {
            mode: Mode::PqOnly,
            encr: AeadAlgorithm::Aes256Gcm16,
            prf: PrfAlgorithm::HmacSha2_384,
            ke: vec![mlkem],
            addke: Vec::new(),
        }
    }

    /// `classical`: AES-GCM-16-256, HMAC-SHA2-384, KE {X25519, P-384}. Not quantum-safe.
    pub fn classical() -> Self {
        Self {
            mode: Mode::Classical,
            encr: AeadAlgorithm::Aes256Gcm16,
            prf: PrfAlgorithm::HmacSha2_384,
            ke: vec![KeyExchangeMethod::Curve25519, KeyExchangeMethod::Ecp384],
            addke: Vec::new(),
        }
    }

    /// The default policy of `mode`, with ML-KEM-768 where ML-KEM is used.
    pub fn for_mode(mode: Mode) -> Self {
        match mode {
            Mode::Hybrid => Self::hybrid(KeyExchangeMethod::MlKem768),
            Mode::PqOnly => Self::pq_only(KeyExchangeMethod::MlKem768),
            Mode::Classical => Self::classical(),
        }
    }

    /// Whether every key this policy derives depends on a post-quantum key exchange.
    pub fn quantum_safe(&self) -> bool {
        self.ke
            .iter()
            .chain(&self.addke)
            .any(|m| m.is_post_quantum())
            && (self.mode != Mode::Classical)
    }

    /// The IKE SA proposal (RFC 7296 §3.3, RFC 9370 §2.2.1). AEAD, so no INTEG transform.
    pub fn ike_proposal(&self) -> Proposal {
        let (encr, bits) = self.encr.transform();
        let mut transforms = vec![Transform::encryption(encr, bits), Transform::prf(self.prf)];
        transforms.extend(self.ke.iter().map(|&m| Transform::key_exchange(m)));
        for (round, &method) in (1u8..).zip(&self.addke) {
            transforms.extend(Transform::additional_key_exchange(round, method));
        }
        Proposal {
            number: 1,
            protocol_id: ProtocolId::Ike,
            spi: Vec::new(),
            transforms,
        }
    }
}

impl Default for CryptoPolicy {
    fn default() -> Self {
        Self::for_mode(Mode::Hybrid)
    }
}

/// The ESP proposals for the Child SA created in IKE_AUTH, preferred first. No KE transforms:
/// the first Child SA takes its keys from the IKE SA (RFC 7296 §1.2).
pub(crate) fn esp_proposals(ciphers: &[AeadAlgorithm], spi: EspSpi) -> Vec<Proposal> {
    (1u8..)
        .zip(ciphers)
        .map(|(number, cipher)| {
            let (encr, bits) = cipher.transform();
            Proposal {
                number,
                protocol_id: ProtocolId::Esp,
                spi: spi.to_be_bytes().to_vec(),
                transforms: vec![
                    Transform::encryption(encr, bits),
                    Transform::esn(EsnMode::NoEsn),
                ],
            }
        })
        .collect()
}

/// Retransmission of requests (RFC 7296 §2.1): the first retransmission after `initial`, each
/// next one after `factor` times the previous wait, at most `attempts` transmissions in all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetransmitConfig {
    /// Wait before the first retransmission.
    pub initial: Duration,
    /// Growth of the wait per retransmission.
    pub factor: f64,
    /// Total transmissions of one request, the first included.
    pub attempts: u32,
}

impl Default for RetransmitConfig {
    /// 1 s, doubling, 6 transmissions: a dead gateway is reported after 63 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            factor: 2.0,
            attempts: 6,
        }
    }
}

impl RetransmitConfig {
    /// The wait after transmission number `sent` (1-based): before the next retransmission,
    /// or, after the last one, before giving up. `None` past the last transmission.
    pub(crate) fn wait_after(&self, sent: u32) -> Option<Duration> {
        if sent == 0 || sent > self.attempts {
            return None;
        }
        let exponent = i32::try_from(sent.saturating_sub(1)).unwrap_or(i32::MAX);
        Some(self.initial.mul_f64(self.factor.powi(exponent)))
    }
}

/// How long an SA lives before it is rekeyed, and when it dies if rekeying fails
/// ([RFC 7296 §2.8]).
///
/// The rekey time is `rekey` minus a random part of `jitter` drawn from the provider, so the two
/// peers rarely start rekeying the same SA at the same moment; `hard` counts from creation.
///
/// [RFC 7296 §2.8]: https://www.rfc-editor.org/rfc/rfc7296#section-2.8
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Soft lifetime: rekey after this long, minus jitter.
    pub rekey: Duration,
    /// At most this much is subtracted at random from `rekey`.
    pub jitter: Duration,
    /// Hard lifetime: a Child SA that was not rekeyed by then is deleted; an IKE SA fails.
    pub hard: Duration,
}

impl Lifetime {
    /// Rekey after `rekey` minus up to 10 % jitter; hard lifetime 10 % after `rekey`.
    pub fn new(rekey: Duration) -> Self {
        Self {
            rekey,
            jitter: rekey / 10,
            hard: rekey + rekey / 10,
        }
    }

    /// The default IKE SA lifetime: rekey after 4 h (strongSwan's default).
    pub fn ike_default() -> Self {
        Self::new(Duration::from_secs(4 * 3600))
    }

    /// The default Child SA lifetime: rekey after 1 h (strongSwan's default).
    pub fn child_default() -> Self {
        Self::new(Duration::from_secs(3600))
    }
}

/// Default interval of liveness checks (RFC 7296 §2.4) when nothing arrived from the peer.
pub const DEFAULT_DPD_INTERVAL: Duration = Duration::from_secs(30);

/// Default largest IP datagram for IKE fragments (RFC 7383 §2.5.1), strongSwan's default.
pub const DEFAULT_FRAGMENT_SIZE: usize = 1280;

/// What the initiator (the client) negotiates.
#[derive(Debug, Clone)]
pub struct InitiatorConfig {
    /// The IKE proposal.
    pub policy: CryptoPolicy,
    /// The pre-shared key (RFC 7296 §2.15).
    pub psk: SecretBytes,
    /// IDi.
    pub local_id: IkeId,
    /// The identity the gateway must prove; also sent as IDr. `None` accepts any IDr.
    pub remote_id: Option<IkeId>,
    /// ESP ciphers for the Child SA, preferred first.
    pub esp: Vec<AeadAlgorithm>,
    /// TSi proposed; narrowed by the responder.
    pub ts_i: Vec<TrafficSelector>,
    /// TSr proposed; narrowed by the responder.
    pub ts_r: Vec<TrafficSelector>,
    /// Ask for an IPv4 virtual address and DNS servers (CP, RFC 7296 §3.15).
    pub request_ipv4: bool,
    /// Ask for an IPv6 virtual address and DNS servers.
    pub request_ipv6: bool,
    /// Make the responder see a NAT so ESP goes over UDP 4500 (a non-matching
    /// NAT_DETECTION_SOURCE_IP, as strongSwan's `encap = yes` does). Our ESP is userspace and
    /// always UDP-encapsulated, so this is on by default.
    pub force_udp_encapsulation: bool,
    /// Largest IP datagram for fragmented messages (RFC 7383).
    pub fragment_size: usize,
    /// Retransmission of requests.
    pub retransmit: RetransmitConfig,
    /// Octets of Ni (RFC 7296 §2.10: at least half the PRF key size, at least 16).
    pub nonce_len: usize,
    /// Lifetime of each IKE SA.
    pub ike_lifetime: Lifetime,
    /// Lifetime of each Child SA.
    pub child_lifetime: Lifetime,
    /// Send a liveness check (an empty INFORMATIONAL, RFC 7296 §2.4) after this long without
    /// any IKE message or reported ESP packet from the peer; `None` disables it.
    pub dpd_interval: Option<Duration>,
    /// Refuse Child SA rekeys without a key exchange. Either way ours offer PFS first, with
    /// every key exchange of the IKE SA (hybrid: X25519 + ML-KEM, RFC 9370 §2.2.1). Off, a
    /// gateway configured without PFS (strongSwan's `esp_proposals = aes256gcm16`, a common
    /// setup) can still rekey: the new keys then come from `SK_d` alone (RFC 7296 §2.17), which
    /// the IKE SA's key exchanges, ML-KEM included, made; only forward secrecy between Child
    /// SAs of one IKE SA is lost, and each IKE SA rekey (always with every key exchange)
    /// restores it.
    pub require_child_pfs: bool,
    /// Accept a public (globally routable) virtual address from the gateway's CFG_REPLY; by
    /// default only private ones are ([`config_reply`](super::config_reply)).
    pub allow_public_virtual_ip: bool,
    /// Report the networks the gateway pushes (INTERNAL_IP4_SUBNET, INTERNAL_IP6_SUBNET) in
    /// [`ConfigReceived::subnets`](super::ConfigReceived::subnets), for the platform to route;
    /// by default they are dropped. Accepted ones are still refused if they are a default
    /// route (`/0`, `/1`) or cover the gateway.
    pub accept_pushed_routes: bool,
}

impl InitiatorConfig {
    /// A configuration for `mode` with the PSK and identities given and everything else at its
    /// default: full tunnel (all IPv4 and IPv6 traffic), IPv4 and IPv6 addresses requested,
    /// AES-GCM-256 then ChaCha20-Poly1305 for ESP.
    pub fn new(mode: Mode, psk: SecretBytes, local_id: IkeId, remote_id: Option<IkeId>) -> Self {
        Self {
            policy: CryptoPolicy::for_mode(mode),
            psk,
            local_id,
            remote_id,
            esp: vec![AeadAlgorithm::Aes256Gcm16, AeadAlgorithm::ChaCha20Poly1305],
            ts_i: vec![TrafficSelector::ipv4_any(), TrafficSelector::ipv6_any()],
            ts_r: vec![TrafficSelector::ipv4_any(), TrafficSelector::ipv6_any()],
            request_ipv4: true,
            request_ipv6: true,
            force_udp_encapsulation: true,
            fragment_size: DEFAULT_FRAGMENT_SIZE,
            retransmit: RetransmitConfig::default(),
            nonce_len: 32,
            ike_lifetime: Lifetime::ike_default(),
            child_lifetime: Lifetime::child_default(),
            dpd_interval: Some(DEFAULT_DPD_INTERVAL),
            require_child_pfs: false,
            allow_public_virtual_ip: false,
            accept_pushed_routes: false,
        }
    }
}

/// What the responder (the project's own gateway) accepts and hands out.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    /// Accepted IKE proposals, preferred first; each is a whole construction.
    pub policies: Vec<CryptoPolicy>,
    /// Per-client pre-shared keys by IDi ([RFC 7296 §2.15]): a client whose IDi is here must
    /// authenticate with its own key, and the gateway answers it with that key, so no client
    /// can impersonate the gateway to another (security review finding 7).
    ///
    /// [RFC 7296 §2.15]: https://www.rfc-editor.org/rfc/rfc7296#section-2.15
    pub client_psks: HashMap<IkeId, SecretBytes>,
    /// The key of every IDi not in `client_psks`, if any. A group key is shared: any holder
    /// can impersonate the gateway to every other holder (and read their traffic), so prefer
    /// one key per client.
    pub group_psk: Option<SecretBytes>,
    /// IDr.
    pub local_id: IkeId,
    /// ESP ciphers accepted, preferred first.
    pub esp: Vec<AeadAlgorithm>,
    /// Traffic the gateway protects (TSr it accepts); the client's virtual address narrows TSi.
    pub local_ts: Vec<TrafficSelector>,
    /// IPv4 addresses handed out, first to last inclusive.
    pub pool_v4: Option<(Ipv4Addr, Ipv4Addr)>,
    /// IPv6 address handed out with its prefix length (one per client, the pool's first
    /// address plus the client's index).
    pub pool_v6: Option<(Ipv6Addr, u8)>,
    /// DNS servers pushed in CFG_REPLY.
    pub dns: Vec<std::net::IpAddr>,
    /// Split-tunnel subnets pushed as INTERNAL_IP4_SUBNET (address, netmask).
    pub subnets_v4: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Half-open IKE SAs above which every IKE_SA_INIT must carry a COOKIE (RFC 7296 §2.6);
    /// strongSwan's `cookie_threshold`.
    pub cookie_threshold: usize,
    /// Half-open IKE SAs of one source address above which its IKE_SA_INIT must carry a
    /// COOKIE; strongSwan's `cookie_threshold_ip`.
    pub cookie_threshold_ip: usize,
    /// Half-open IKE SAs one (cookie-proven) source address may hold; more are dropped
    /// unanswered. strongSwan's `block_threshold`.
    pub half_open_per_ip: usize,
    /// Half-open IKE SAs held in all; more are dropped unanswered. Each holds at most
    /// [`MAX_IKE_SA_INIT`] octets of request plus its response and keys, so this bounds the
    /// memory an IKE_SA_INIT flood can take. strongSwan's `init_limit_half_open`.
    pub half_open_limit: usize,
    /// Largest IP datagram for fragmented messages (RFC 7383).
    pub fragment_size: usize,
    /// Octets of Nr.
    pub nonce_len: usize,
    /// Retransmission of the requests the responder sends (rekeying, liveness, Delete).
    pub retransmit: RetransmitConfig,
    /// Lifetime of each IKE SA.
    pub ike_lifetime: Lifetime,
    /// Lifetime of each Child SA.
    pub child_lifetime: Lifetime,
    /// Liveness check interval, as for the initiator; `None` disables it.
    pub dpd_interval: Option<Duration>,
    /// Refuse Child SA rekeys without a key exchange, as for the initiator.
    pub require_child_pfs: bool,
}

/// Largest IKE_SA_INIT request the responder takes, in octets; larger ones are dropped unread.
/// Each half-open SA keeps its request (AUTH signs it, RFC 7296 §2.15), so this bounds what a
/// flood can make it hold. strongSwan's `max_packet` default.
pub const MAX_IKE_SA_INIT: usize = 10_000;

impl ResponderConfig {
    /// The PSK a client with `id_i` authenticates with: its own, else the group key.
    #[cfg(feature = "gateway")]
    pub(crate) fn psk_for(&self, id_i: &IkeId) -> Option<&SecretBytes> {
        self.client_psks.get(id_i).or(self.group_psk.as_ref())
    }

    /// A gateway accepting `policies` with `psk` as the group key (see
    /// [`group_psk`](Self::group_psk)), no address pool and the usual defaults.
    pub fn new(policies: Vec<CryptoPolicy>, psk: SecretBytes, local_id: IkeId) -> Self {
        Self {
            policies,
            client_psks: HashMap::new(),
            group_psk: Some(psk),
            local_id,
            esp: vec![AeadAlgorithm::Aes256Gcm16, AeadAlgorithm::ChaCha20Poly1305],
            local_ts: vec![TrafficSelector::ipv4_any(), TrafficSelector::ipv6_any()],
            pool_v4: None,
            pool_v6: None,
            dns: Vec::new(),
            subnets_v4: Vec::new(),
            cookie_threshold: 30,
            cookie_threshold_ip: 3,
            half_open_per_ip: 5,
            half_open_limit: 4096,
            fragment_size: DEFAULT_FRAGMENT_SIZE,
            nonce_len: 32,
            retransmit: RetransmitConfig::default(),
            ike_lifetime: Lifetime::ike_default(),
            child_lifetime: Lifetime::child_default(),
            dpd_interval: Some(DEFAULT_DPD_INTERVAL),
            require_child_pfs: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TransformType;

    #[test]
    fn hybrid_proposal_has_ke_and_addke1() {
        let p = CryptoPolicy::default().ike_proposal();
        let types: Vec<_> = p
            .transforms
            .iter()
            .map(|t| (t.transform_type, t.id))
            .collect();
        assert_eq!(
            types,
            [
                (TransformType::Encryption, 20),
                (TransformType::PseudoRandomFunction, 6),
                (TransformType::KeyExchange, 31),
                (TransformType::KeyExchange, 20),
                (TransformType::AdditionalKeyExchange1, 36),
            ]
        );
        assert_eq!(p.transforms[0].key_length(), Some(256));
        assert!(CryptoPolicy::default().quantum_safe());
        assert!(CryptoPolicy::for_mode(Mode::PqOnly).quantum_safe());
        assert!(!CryptoPolicy::classical().quantum_safe());
    }

    #[test]
    fn retransmit_backs_off_and_gives_up() {
        let r = RetransmitConfig::default();
        let waits: Vec<_> = (1..=7).map(|n| r.wait_after(n)).collect();
        assert_eq!(
            waits,
            [1, 2, 4, 8, 16, 32]
                .map(|s| Some(Duration::from_secs(s)))
                .into_iter()
                .chain([None])
                .collect::<Vec<_>>()
        );
    }
}
