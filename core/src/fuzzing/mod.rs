//! Entry points for the cargo-fuzz targets in `core/fuzz`, compiled with the `test-provider`
//! feature so that ordinary tests exercise them too.
//!
//! | entry point | what the fuzzer controls |
//! | --- | --- |
//! | [`ike_initiator`] | responder-side datagrams to a client in each handshake state |
//! | [`ike_responder`] | the gateway's first datagram, and each request of a genuine handshake |
//! | [`ike_session`] | the inner payloads of CREATE_CHILD_SA, IKE_FOLLOWUP_KE and INFORMATIONAL |
//! | [`reassembly`] | RFC 7383 fragment sequences, authentic and forged |
//! | [`cp_reply`] | the Configuration payload of the IKE_AUTH response |
//!
//! The stateful targets run both ends with [`DeterministicProvider`]s on a virtual clock. The
//! providers log every AEAD key they hand out with the salt it is first used with, so the
//! harness can find the SK key that opens a genuine message and seal fuzz bytes under it: the
//! fuzzer then reaches what lies behind the integrity check, which it can never forge.
//!
//! Their key exchanges are the production X25519, P-384 and ML-KEM code, memoized per process
//! (`KexMemo`): each exchange draws its private randomness from the provider and runs on
//! exactly those octets, so the genuine handshake every input repeats is computed once, while a
//! forged peer value still goes through the real checks and maths. In a `perf` profile of
//! `ike_session` the key-exchange code is then under 3 % of the time; what remains is the
//! handshake's PRF and AEAD work and libFuzzer's own bookkeeping.

mod cp_reply;
mod ike_initiator;
mod ike_responder;
mod ike_session;
mod reassembly;
#[cfg(test)]
mod tests;

pub use cp_reply::cp_reply;
pub use ike_initiator::ike_initiator;
pub use ike_responder::ike_responder;
pub use ike_session::ike_session;
pub use reassembly::reassembly;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::crypto::{
    AeadAlgorithm, AeadCipher, AeadKey, CryptoProvider, DeterministicProvider,
    Error as CryptoError, IV_LEN, KeyExchange, KeyExchangeResponse, Prf, ReplayProvider, SALT_LEN,
    SecretBytes, SharedSecret, TAG_LEN,
};
use crate::ike::protect::{Reassembly, SkCipher};
use crate::ike::{
    CryptoPolicy, DEFAULT_DPD_INTERVAL, Event, Initiator, InitiatorConfig, Mode, NAT_T_PORT,
    Responder, ResponderConfig,
};
use crate::wire::{
    ConfigAttribute, ConfigPayload, EncryptedView, EspSpi, ExchangeType, Flags, FragmentNumbers,
    Header, IkeId, IkeSpi, KeyExchangeMethod, MessageId, Payload, PayloadType, PrfAlgorithm,
    emit_payloads, emit_protected, locate_encrypted, parse_payloads,
};

const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 40_000);
const GATEWAY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 500);

// ------------------------------------------------------------------ shared harness

/// First IV of the messages the harness seals; the SAs count theirs up from zero.
const FORGED_IV: u64 = 1 << 63;
/// Octets of the Pad Length field (RFC 7296 §3.14); the harness never pads.
const PAD_LENGTH_LEN: usize = 1;

/// The AEAD keys the providers of one test handed out, each with the salt it was first used
/// with: a provider sees only the key, the salt arrives in the nonce.
#[derive(Clone, Default)]
struct KeyLog(Arc<Mutex<Vec<LoggedKey>>>);

struct LoggedKey {
    algorithm: AeadAlgorithm,
    key: SecretBytes,
    salt: Option<[u8; SALT_LEN]>,
}

impl core::fmt::Debug for KeyLog {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyLog")
            .field("keys", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl KeyLog {
    fn lock(&self) -> MutexGuard<'_, Vec<LoggedKey>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, algorithm: AeadAlgorithm, key: &[u8]) -> usize {
        let mut keys = self.lock();
        keys.push(LoggedKey {
            algorithm,
            key: SecretBytes::from_slice(key),
            salt: None,
        });
        keys.len() - 1
    }

    fn note_salt(&self, index: usize, nonce: &[u8; 12]) {
        if let Some(k) = self.lock().get_mut(index)
            && k.salt.is_none()
        {
            k.salt = nonce.first_chunk::<SALT_LEN>().copied();
        }
    }

    /// The SK key that authenticates the SK or SKF payload of `datagram`: the sender's
    /// sending key, for sealing more messages as that sender.
    fn key_for(&self, datagram: &[u8]) -> Option<AeadKey> {
        let view = locate_encrypted(datagram).ok()??;
        let provider = DeterministicProvider::new(0);
        let keys = self.lock();
        keys.iter().find_map(|k| {
            let mut keymat = k.key.expose().to_vec();
            keymat.extend_from_slice(&k.salt?);
            let key = AeadKey::new(&provider, k.algorithm, &keymat).ok()?;
            open_sk(&key, &view).map(|_| key)
        })
    }
}

/// Octets of randomness each memoized key exchange draws: more than any method consumes
/// (ML-KEM key generation takes 64, P-384 rejection sampling rarely more than 96).
const KEX_SEED_LEN: usize = 256;
/// Most results [`KexMemo`] keeps; later ones are computed every time. The genuine handshakes
/// of the seeds come first and stay.
const KEX_MEMO_LIMIT: usize = 8192;

/// A key exchange's method, the randomness that made our private value and the peer's value.
type KexInput = (KeyExchangeMethod, Vec<u8>, Vec<u8>);

/// Results of real key exchanges: our public value by method and randomness, the shared
/// secret (and our answer, on the responding side) by [`KexInput`].
#[derive(Default)]
struct KexMemo {
    publics: HashMap<(KeyExchangeMethod, Vec<u8>), Vec<u8>>,
    completed: HashMap<KexInput, SharedSecret>,
    responses: HashMap<KexInput, (Vec<u8>, SharedSecret)>,
}

impl KexMemo {
    fn len(&self) -> usize {
        self.publics.len() + self.completed.len() + self.responses.len()
    }
}

static KEX_MEMO: Mutex<Option<KexMemo>> = Mutex::new(None);

fn with_memo<T>(f: impl FnOnce(&mut KexMemo) -> T) -> T {
    let mut memo = KEX_MEMO.lock().unwrap_or_else(PoisonError::into_inner);
    f(memo.get_or_insert_with(KexMemo::default))
}

/// The production key exchange of `method` on the private randomness `seed`.
fn real_kex(method: KeyExchangeMethod, seed: &[u8]) -> Result<Box<dyn KeyExchange>, CryptoError> {
    ReplayProvider::new(seed).start_key_exchange(method)
}

/// A [`KeyExchange`] whose results come from [`KexMemo`] when the same randomness met the
/// same peer value before.
struct MemoKex {
    method: KeyExchangeMethod,
    seed: Vec<u8>,
    public: Vec<u8>,
    real: Mutex<Option<Box<dyn KeyExchange>>>,
}

impl MemoKex {
    fn start(method: KeyExchangeMethod, seed: Vec<u8>) -> Result<Self, CryptoError> {
        let key = (method, seed);
        let known = with_memo(|m| m.publics.get(&key).cloned());
        let (method, seed) = key;
        let (public, real) = match known {
            Some(public) => (public, None),
            None => {
                let real = real_kex(method, &seed)?;
                let public = real.public_value().to_vec();
                with_memo(|m| {
                    if m.len() < KEX_MEMO_LIMIT {
                        m.publics.insert((method, seed.clone()), public.clone());
                    }
                });
                (public, Some(real))
            }
        };
        Ok(Self {
            method,
            seed,
            public,
            real: Mutex::new(real),
        })
    }
}

impl KeyExchange for MemoKex {
    fn method(&self) -> KeyExchangeMethod {
        self.method
    }

    fn public_value(&self) -> &[u8] {
        &self.public
    }

    fn complete(&self, peer_value: &[u8]) -> Result<SharedSecret, CryptoError> {
        let key = (self.method, self.seed.clone(), peer_value.to_vec());
        if let Some(shared) = with_memo(|m| m.completed.get(&key).cloned()) {
            return Ok(shared);
        }
        let mut real = self.real.lock().unwrap_or_else(PoisonError::into_inner);
        if real.is_none() {
            *real = Some(real_kex(self.method, &self.seed)?);
        }
        let shared = real
            .as_ref()
            .ok_or(CryptoError::RandomFailed)?
            .complete(peer_value)?;
        with_memo(|m| {
            if m.len() < KEX_MEMO_LIMIT {
                m.completed.insert(key, shared.clone());
            }
        });
        Ok(shared)
    }
}

/// A [`DeterministicProvider`] whose AEAD keys land in a [`KeyLog`].
#[derive(Debug)]
struct LoggingProvider {
    inner: DeterministicProvider,
    log: KeyLog,
}

impl LoggingProvider {
    fn new(seed: u64, log: &KeyLog) -> Self {
        Self {
            inner: DeterministicProvider::new(seed),
            log: log.clone(),
        }
    }
}

impl CryptoProvider for LoggingProvider {
    fn fill_random(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        self.inner.fill_random(dest)
    }

    fn supports_key_exchange(&self, method: KeyExchangeMethod) -> bool {
        self.inner.supports_key_exchange(method)
    }

    fn start_key_exchange(
        &self,
        method: KeyExchangeMethod,
    ) -> Result<Box<dyn KeyExchange>, CryptoError> {
        let mut seed = vec![0; KEX_SEED_LEN];
        self.inner.fill_random(&mut seed)?;
        Ok(Box::new(MemoKex::start(method, seed)?))
    }

    fn respond_key_exchange(
        &self,
        method: KeyExchangeMethod,
        peer_value: &[u8],
    ) -> Result<KeyExchangeResponse, CryptoError> {
        let mut seed = vec![0; KEX_SEED_LEN];
        self.inner.fill_random(&mut seed)?;
        let key = (method, seed, peer_value.to_vec());
        if let Some((public_value, shared_secret)) = with_memo(|m| m.responses.get(&key).cloned()) {
            return Ok(KeyExchangeResponse {
                public_value,
                shared_secret,
            });
        }
        let response = ReplayProvider::new(&key.1).respond_key_exchange(method, peer_value)?;
        with_memo(|m| {
            if m.len() < KEX_MEMO_LIMIT {
                let value = (
                    response.public_value.clone(),
                    response.shared_secret.clone(),
                );
                m.responses.insert(key, value);
            }
        });
        Ok(response)
    }

    fn prf(&self, algorithm: PrfAlgorithm) -> Result<Box<dyn Prf>, CryptoError> {
        self.inner.prf(algorithm)
    }

    fn aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        let inner = self.inner.aead(algorithm, key)?;
        let index = self.log.add(algorithm, key);
        Ok(Box::new(LoggingCipher {
            inner,
            log: self.log.clone(),
            index,
        }))
    }

    fn sha1(&self, parts: &[&[u8]]) -> [u8; 20] {
        self.inner.sha1(parts)
    }
}

/// An AEAD that notes its salt in the [`KeyLog`] on first use.
struct LoggingCipher {
    inner: Box<dyn AeadCipher>,
    log: KeyLog,
    index: usize,
}

impl AeadCipher for LoggingCipher {
    fn algorithm(&self) -> AeadAlgorithm {
        self.inner.algorithm()
    }

    fn seal_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        self.log.note_salt(self.index, nonce);
        self.inner.seal_in_place(nonce, aad, buf)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        self.inner.open_in_place(nonce, aad, buf, tag)
    }
}

/// The inner octets of one SK or SKF payload, without padding and Pad Length.
fn open_sk(key: &AeadKey, view: &EncryptedView<'_>) -> Option<Vec<u8>> {
    let (iv, rest) = view.body().split_first_chunk::<IV_LEN>()?;
    let (ciphertext, tag) = rest.split_last_chunk::<TAG_LEN>()?;
    let mut plain = ciphertext.to_vec();
    key.open(iv, view.aad(), &mut plain, tag).ok()?;
    let pad = usize::from(*plain.last()?);
    plain.truncate(plain.len().checked_sub(PAD_LENGTH_LEN + pad)?);
    Some(plain)
}

/// Protects `plaintext`, inner payloads starting with `first`, under `header` with `key`: one
/// SK payload, or with `fragment` one SKF payload (RFC 7296 §3.14, RFC 7383 §2.5).
fn seal(
    key: &AeadKey,
    header: &Header,
    first: PayloadType,
    fragment: Option<FragmentNumbers>,
    plaintext: &[u8],
    iv: u64,
) -> Vec<u8> {
    let body_len = IV_LEN + plaintext.len() + PAD_LENGTH_LEN + TAG_LEN;
    let mut message = emit_protected(header, &[], first, fragment, body_len);
    let iv = iv.to_be_bytes();
    let (aad, body) = message.split_mut();
    let Some((iv_field, rest)) = body.split_first_chunk_mut::<IV_LEN>() else {
        return Vec::new();
    };
    *iv_field = iv;
    let Some((plain, tag_field)) = rest.split_last_chunk_mut::<TAG_LEN>() else {
        return Vec::new();
    };
    if let Some(data) = plain.get_mut(..plaintext.len()) {
        data.copy_from_slice(plaintext);
    }
    if let Ok(tag) = key.seal(&iv, aad, plain) {
        *tag_field = tag;
    }
    message.into_bytes()
}

/// [`seal`] as `pieces` RFC 7383 fragments (one piece: unfragmented).
fn seal_pieces(
    key: &AeadKey,
    header: &Header,
    first: PayloadType,
    plaintext: &[u8],
    pieces: usize,
) -> Vec<Vec<u8>> {
    let pieces = pieces.clamp(1, 128);
    if pieces == 1 {
        return vec![seal(key, header, first, None, plaintext, FORGED_IV)];
    }
    let chunk = plaintext.len().div_ceil(pieces).max(1);
    let chunks: Vec<&[u8]> = plaintext.chunks(chunk).collect();
    let total = u16::try_from(chunks.len().max(1)).unwrap_or(u16::MAX);
    let mut out = Vec::new();
    for (number, iv) in (1..=total).zip(FORGED_IV..) {
        let next = if number == 1 {
            first
        } else {
            PayloadType::NoNextPayload
        };
        let piece = chunks
            .get(usize::from(number - 1))
            .copied()
            .unwrap_or_default();
        if let Ok(numbers) = FragmentNumbers::new(number, total) {
            out.push(seal(key, header, next, Some(numbers), piece, iv));
        }
    }
    out
}

/// The first inner payload type and the inner octets of a genuine message, its fragments (if
/// any) reassembled in order.
fn plaintext_of(key: &AeadKey, datagrams: &[Datagram]) -> Option<(PayloadType, Vec<u8>)> {
    let mut parts = Vec::new();
    let mut first = None;
    for d in datagrams {
        let view = locate_encrypted(&d.bytes).ok()??;
        let plain = open_sk(key, &view)?;
        match view.fragment() {
            None => return Some((view.next_inner(), plain)),
            Some(n) => {
                if n.fragment_number == 1 {
                    first = Some(view.next_inner());
                }
                parts.push((n.fragment_number, plain));
            }
        }
    }
    parts.sort_by_key(|(n, _)| *n);
    Some((first?, parts.into_iter().flat_map(|(_, p)| p).collect()))
}

/// One payload as on the wire (generic header first), with its own type.
fn encoded(payload: &Payload) -> (PayloadType, Vec<u8>) {
    let mut out = Vec::new();
    let t = emit_payloads(core::slice::from_ref(payload), &mut out);
    (t, out)
}

/// A payload of type `t` whose body is `body` as given.
fn raw_payload(t: PayloadType, body: &[u8]) -> (PayloadType, Vec<u8>) {
    let len = u16::try_from(body.len() + 4).unwrap_or(u16::MAX);
    let mut out = vec![0, 0];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    (t, out)
}

/// Links encoded payloads into one chain whose last Next Payload is `then`; returns the type
/// of the first (`then` if there is none) and the octets.
fn link(parts: &[(PayloadType, Vec<u8>)], then: PayloadType) -> (PayloadType, Vec<u8>) {
    let mut out = Vec::new();
    for (i, (_, bytes)) in parts.iter().enumerate() {
        let next = parts.get(i + 1).map_or(then, |(t, _)| *t);
        let at = out.len();
        out.extend_from_slice(bytes);
        if let Some(b) = out.get_mut(at) {
            *b = next.value();
        }
    }
    (parts.first().map_or(then, |(t, _)| *t), out)
}

/// The first `keep` genuine payloads, then the fuzz chain `tail` that starts with `tail_first`.
fn genuine_then(
    payloads: &[Payload],
    keep: usize,
    tail_first: PayloadType,
    tail: &[u8],
) -> (PayloadType, Vec<u8>) {
    let parts: Vec<_> = payloads.iter().take(keep).map(encoded).collect();
    let (first, mut chain) = link(&parts, tail_first);
    chain.extend_from_slice(tail);
    (first, chain)
}

/// An IKE message in flight (no non-ESP marker) and whether it travels on port 4500.
#[derive(Debug, Clone)]
struct Datagram {
    bytes: Vec<u8>,
    nat_t: bool,
}

fn with_port(addr: SocketAddr, port: u16) -> SocketAddr {
    SocketAddr::new(addr.ip(), port)
}

/// The client of every stateful target: `mode`, asking for IPv4 and IPv6 configuration.
fn client_config(mode: Mode) -> InitiatorConfig {
    InitiatorConfig::new(
        mode,
        SecretBytes::from_slice(b"fuzz"),
        IkeId::Fqdn("c".into()),
        None,
    )
}

/// The gateway of every stateful target: all three constructions, IPv4 and IPv6 pools, DNS
/// and a split-tunnel subnet, so that CFG_REPLY carries every attribute kind we send.
fn gateway_config() -> ResponderConfig {
    let mut gateway = ResponderConfig::new(
        vec![
            CryptoPolicy::for_mode(Mode::Hybrid),
            CryptoPolicy::for_mode(Mode::PqOnly),
            CryptoPolicy::for_mode(Mode::Classical),
        ],
        SecretBytes::from_slice(b"fuzz"),
        IkeId::Fqdn("g".into()),
    );
    gateway.pool_v4 = Some((Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 9)));
    gateway.pool_v6 = Some((Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2), 64));
    gateway.dns = vec![
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
    ];
    gateway.subnets_v4 = vec![(Ipv4Addr::new(10, 1, 0, 0), Ipv4Addr::new(255, 255, 0, 0))];
    gateway
}

/// A client and a gateway on a virtual clock, the datagrams between them in the harness's
/// hands.
struct Net {
    initiator: Initiator,
    responder: Responder,
    now: Instant,
    keys: KeyLog,
    buf: Vec<u8>,
}

impl Net {
    fn new(client: InitiatorConfig, gateway: ResponderConfig) -> Option<Self> {
        let keys = KeyLog::default();
        let now = Instant::now();
        let initiator = Initiator::new(
            Arc::new(LoggingProvider::new(1, &keys)),
            client,
            now,
            CLIENT,
            GATEWAY,
        )
        .ok()?;
        let responder = Responder::new(Arc::new(LoggingProvider::new(2, &keys)), gateway).ok()?;
        Some(Self {
            initiator,
            responder,
            now,
            keys,
            buf: vec![0; 65_536],
        })
    }

    /// What the client sent.
    fn client_sent(&mut self) -> Vec<Datagram> {
        let mut out = Vec::new();
        while let Some(t) = self.initiator.poll_transmit(self.now, &mut self.buf) {
            let skip = if t.nat_t { 4 } else { 0 };
            out.push(Datagram {
                bytes: self.buf.get(skip..t.size).unwrap_or_default().to_vec(),
                nat_t: t.destination.port() == NAT_T_PORT,
            });
        }
        out
    }

    /// What the gateway sent.
    fn gateway_sent(&mut self) -> Vec<Datagram> {
        let mut out = Vec::new();
        while let Some(t) = self.responder.poll_transmit(self.now, &mut self.buf) {
            let skip = if t.nat_t { 4 } else { 0 };
            out.push(Datagram {
                bytes: self.buf.get(skip..t.size).unwrap_or_default().to_vec(),
                nat_t: t.nat_t,
            });
        }
        out
    }

    fn send_to_gateway(&mut self, d: &Datagram) {
        let (local, remote) = if d.nat_t {
            (
                with_port(GATEWAY, NAT_T_PORT),
                with_port(CLIENT, NAT_T_PORT),
            )
        } else {
            (GATEWAY, CLIENT)
        };
        self.responder
            .handle_datagram(self.now, local, remote, &d.bytes);
    }

    fn send_to_client(&mut self, d: &Datagram) {
        let remote = if d.nat_t {
            with_port(GATEWAY, NAT_T_PORT)
        } else {
            GATEWAY
        };
        self.initiator.handle_datagram(self.now, remote, &d.bytes);
    }

    /// Delivers what both ends queued, back and forth, until both are quiet (at most
    /// `rounds` round trips).
    fn settle(&mut self, rounds: usize) {
        for _ in 0..rounds {
            let requests = self.client_sent();
            for d in &requests {
                self.send_to_gateway(d);
            }
            let responses = self.gateway_sent();
            for d in &responses {
                self.send_to_client(d);
            }
            if requests.is_empty() && responses.is_empty() {
                break;
            }
        }
    }

    /// Lets time pass: up to `steps` timer deadlines of either end, each followed by
    /// [`settle`](Self::settle).
    fn run_timers(&mut self, steps: usize) {
        for _ in 0..steps {
            let next = match (self.initiator.poll_timeout(), self.responder.poll_timeout()) {
                (Some(a), Some(b)) => a.min(b),
                (Some(t), None) | (None, Some(t)) => t,
                (None, None) => break,
            };
            self.now = self.now.max(next);
            self.initiator.handle_timeout(self.now);
            self.responder.handle_timeout(self.now);
            self.settle(8);
        }
    }
}
