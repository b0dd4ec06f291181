//! Hostile traffic against a real `pqvpn gateway` and `pqvpn up` in network namespaces (security
//! review findings 3, 4 and 5; issue 12), black box: forged unauthenticated IKE fragments at an
//! established tunnel, and an IKE_SA_INIT flood while a client moves data. As non-root every
//! test says it is skipped and why.
//!
//! The namespace harness, `tests/common/mod.rs`, is shared with `tests/tunnel.rs`; the extra
//! namespaces of the flood test are added here. Threads that send or capture enter a namespace
//! with `setns(2)`, which moves only the calling thread; sockets keep the namespace they were
//! made in.

#![cfg(target_os = "linux")]
#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "test")]

#[expect(dead_code, reason = "the shared harness: this file does not ping")]
mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pqvpn_core::crypto::{RustCrypto, SecretBytes};
use pqvpn_core::ike::{Initiator, InitiatorConfig, Mode};
use pqvpn_core::wire::{IkeId, KeyExchangeMethod};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use common::{Net, PSK, Transfer, ip, root};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// IPv4 Identification of every forged datagram, so the capture can tell them from the
/// client's own.
const FORGED_IP_ID: u16 = 0x5151;

// ------------------------------------------------------------------------------ harness

/// The gateway's PSK: one group PSK for every client.
fn group_psk() -> String {
    format!("[auth]\npsk = \"{PSK}\"\n")
}

/// More namespaces, each on a veth of its own to the gateway (198.18.N.0/24).
impl Net {
    /// A namespace `role` behind the gateway: veth 198.18.`subnet`.1 (gateway) to
    /// 198.18.`subnet`.2, default route via the gateway.
    fn attach(&mut self, role: char, subnet: u8) -> String {
        let ns = format!("pqt-{role}-{}", self.tag);
        Self::add_ns(&ns);
        self.extra.push(ns.clone());
        let (vg, vn) = (
            format!("{role}g{}", self.tag),
            format!("{role}n{}", self.tag),
        );
        assert!(
            ip(&[
                "link", "add", &vg, "netns", &self.gw, "type", "veth", "peer", "name", &vn,
                "netns", &ns
            ])
            .status
            .success()
        );
        ip(&[
            "-n",
            &self.gw,
            "addr",
            "add",
            &format!("198.18.{subnet}.1/24"),
            "dev",
            &vg,
        ]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("198.18.{subnet}.2/24"),
            "dev",
            &vn,
        ]);
        ip(&["-n", &self.gw, "link", "set", &vg, "up"]);
        ip(&["-n", &ns, "link", "set", &vn, "up"]);
        let via = format!("198.18.{subnet}.1");
        assert!(
            ip(&["-n", &ns, "route", "add", "default", "via", &via])
                .status
                .success()
        );
        ns
    }

    /// Whether child `index` still runs.
    fn alive(&mut self, index: usize) -> bool {
        matches!(self.children[index].try_wait(), Ok(None))
    }
}

/// Held by each test of this file for its whole run: a spray or a flood competing for the
/// same two cores would turn the flood test's throughput ratio into noise.
static ALONE: Mutex<()> = Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `f` on a new thread inside namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// A small PRNG (splitmix64) for SPIs, nonces and junk: no key material, no crate needed.
struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Self((t as u64) ^ salt.rotate_left(17))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_be_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Sends `rate` calls of `send` per second until `stop` or `until`; returns the calls made.
fn paced(rate: u64, until: Instant, stop: &AtomicBool, mut send: impl FnMut(u64)) -> u64 {
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        // At most 50 ms worth at once, so a stall is not followed by a burst.
        let due = due.min(sent + rate / 20 + 1);
        while sent < due {
            send(sent);
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    sent
}

// ------------------------------------------------------------------------------ raw IPv4

/// An IPv4 + UDP datagram from `src` to `dst` for a raw `IPPROTO_RAW` socket (the kernel fills
/// in the IP checksum; UDP checksum 0 means none, RFC 768).
fn udp_datagram(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&FORGED_IP_ID.to_be_bytes());
    p.extend_from_slice(&[0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

fn raw_sender() -> Socket {
    // IPPROTO_RAW implies IP_HDRINCL: we write the IP header, source address included.
    Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).unwrap()
}

/// One IKE message seen arriving at the gateway's ports.
#[derive(Debug, Clone, Copy)]
struct Seen {
    src: SocketAddrV4,
    dst_port: u16,
    spi_i: u64,
    spi_r: u64,
    exchange: u8,
}

/// Captures, in namespace `ns`, every genuine (not forged by us) IKE message to 198.18.0.1:500
/// or :4500 (after the non-ESP marker), until `stop`.
fn capture_ike(ns: &str, stop: Arc<AtomicBool>) -> (JoinHandle<()>, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = in_ns(ns, move || {
        // A raw IPPROTO_UDP socket gets a copy of every UDP datagram the namespace receives.
        let mut sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Ordering::Relaxed) {
            let Ok(n) = sock.read(&mut buf) else {
                continue;
            };
            let p = &buf[..n];
            if n < 28 || p[9] != 17 {
                continue;
            }
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let id = u16::from_be_bytes([p[4], p[5]]);
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            if id == FORGED_IP_ID || dst != GATEWAY || n < ihl + 8 {
                continue;
            }
            let src = SocketAddrV4::new(
                Ipv4Addr::new(p[12], p[13], p[14], p[15]),
                u16::from_be_bytes([p[ihl], p[ihl + 1]]),
            );
            let dst_port = u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]);
            let mut ike = &p[ihl + 8..];
            match dst_port {
                500 => {}
                4500 if ike.len() >= 4 && ike[..4] == [0; 4] => ike = &ike[4..],
                _ => continue,
            }
            if ike.len() < 28 {
                continue;
            }
            out.lock().unwrap().push(Seen {
                src,
                dst_port,
                spi_i: u64::from_be_bytes(ike[0..8].try_into().unwrap()),
                spi_r: u64::from_be_bytes(ike[8..16].try_into().unwrap()),
                exchange: ike[18],
            });
        }
    });
    ready_rx.recv().unwrap();
    (handle, seen)
}

/// ICMP echo from namespace `ns` to `dst` every `interval` until `stop`; returns (sent,
/// answered within 1 s).
fn pinger(
    ns: &str,
    dst: Ipv4Addr,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(u32, u32)> {
    in_ns(ns, move || {
        let mut sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
        let to = SockAddr::from(SocketAddrV4::new(dst, 0));
        let id = (std::process::id() & 0xffff) as u16;
        let (mut sent, mut answered) = (0u32, 0u32);
        let mut buf = vec![0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let tick = Instant::now();
            let seq = sent as u16;
            let mut echo = vec![8, 0, 0, 0];
            echo.extend_from_slice(&id.to_be_bytes());
            echo.extend_from_slice(&seq.to_be_bytes());
            echo.extend_from_slice(&[0xa5; 32]);
            let sum = internet_checksum(&echo);
            echo[2..4].copy_from_slice(&sum.to_be_bytes());
            sent += 1;
            if sock.send_to(&echo, &to).is_ok() {
                let deadline = tick + Duration::from_secs(1);
                while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                    sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                        .unwrap();
                    let Ok(n) = sock.read(&mut buf) else {
                        break;
                    };
                    let ihl = usize::from(buf[0] & 0x0f) * 4;
                    if n >= ihl + 8
                        && buf[ihl] == 0
                        && buf[ihl + 4..ihl + 6] == id.to_be_bytes()
                        && buf[ihl + 6..ihl + 8] == seq.to_be_bytes()
                    {
                        answered += 1;
                        break;
                    }
                }
            }
            if let Some(rest) = interval.checked_sub(tick.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        (sent, answered)
    })
}

fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let hi = u32::from(pair[0]) << 8;
        sum += hi | pair.get(1).copied().map_or(0, u32::from);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// ------------------------------------------------------------------------------ IKE octets

/// Payload types (RFC 7296 §3.2, RFC 7383 §2.5).
const NOTIFY: u8 = 41;
const NONCE: u8 = 40;
const VENDOR_ID: u8 = 43;
const ENCRYPTED_FRAGMENT: u8 = 53;
/// Notify Message Type COOKIE (RFC 7296 §3.10.1).
const COOKIE: u16 = 16390;

/// A forged IKEv2 message with one SKF payload (RFC 7383 §2.5): the real SPIs, `flags`
/// (I and R bits), `exchange`, `message_id`, Fragment Number `number` of Total Fragments 129,
/// and junk where IV, ciphertext and ICV go. No key is needed to make it.
fn forged_skf(
    spis: (u64, u64),
    flags: u8,
    exchange: u8,
    message_id: u32,
    number: u16,
    rng: &mut Rng,
) -> Vec<u8> {
    let mut junk = [0u8; 8 + 32 + 16];
    rng.fill(&mut junk);
    let skf_len = 4 + 4 + junk.len();
    let total = 28 + skf_len;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&spis.0.to_be_bytes());
    m.extend_from_slice(&spis.1.to_be_bytes());
    m.extend_from_slice(&[ENCRYPTED_FRAGMENT, 0x20, exchange, flags]);
    m.extend_from_slice(&message_id.to_be_bytes());
    m.extend_from_slice(&(total as u32).to_be_bytes());
    // Next Payload is the first inner payload's type in fragment 1 only (33 = SA), else 0.
    let next = if number == 1 { 33 } else { 0 };
    m.extend_from_slice(&[next, 0]);
    m.extend_from_slice(&(skf_len as u16).to_be_bytes());
    m.extend_from_slice(&number.to_be_bytes());
    m.extend_from_slice(&129u16.to_be_bytes());
    m.extend_from_slice(&junk);
    m
}

/// (offset, type) of each payload of an unprotected IKE message.
fn payloads(m: &[u8]) -> Vec<(usize, u8)> {
    let mut out = Vec::new();
    let (mut next, mut at) = (m[16], 28);
    while next != 0 && at + 4 <= m.len() {
        out.push((at, next));
        let len = usize::from(u16::from_be_bytes([m[at + 2], m[at + 3]]));
        next = m[at];
        if len < 4 {
            break;
        }
        at += len;
    }
    out
}

fn set_length(m: &mut [u8]) {
    let len = m.len() as u32;
    m[24..28].copy_from_slice(&len.to_be_bytes());
}

/// A genuine first IKE_SA_INIT request of pqvpn's own initiator (hybrid; KEi `ke`), with a
/// Vendor ID payload of `vendor_id` octets appended if nonzero.
fn sa_init_template(ke: KeyExchangeMethod, vendor_id: usize) -> Vec<u8> {
    let mut config = InitiatorConfig::new(
        Mode::Hybrid,
        SecretBytes::from_slice(b"flood"),
        IkeId::Fqdn("flood.test".into()),
        None,
    );
    config.policy.ke = vec![ke];
    let now = Instant::now();
    let local = SocketAddr::new(Ipv4Addr::new(198, 18, 2, 2).into(), 500);
    let remote = SocketAddr::new(GATEWAY.into(), 500);
    let mut initiator =
        Initiator::new(Arc::new(RustCrypto::new()), config, now, local, remote).unwrap();
    let mut buf = vec![0u8; 65_536];
    let t = initiator.poll_transmit(now, &mut buf).unwrap();
    assert!(!t.nat_t);
    let mut m = buf[..t.size].to_vec();
    assert_eq!(m[18], 34, "IKE_SA_INIT");
    if vendor_id > 0 {
        let (last, _) = *payloads(&m).last().unwrap();
        m[last] = VENDOR_ID;
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&((4 + vendor_id) as u16).to_be_bytes());
        m.extend(std::iter::repeat_n(0x56, vendor_id));
        set_length(&mut m);
    }
    m
}

/// `template` with initiator SPI `spi` and Ni `nonce`: a new half-open SA to the gateway.
fn sa_init(template: &[u8], spi: u64, nonce: &[u8; 32]) -> Vec<u8> {
    let mut m = template.to_vec();
    m[..8].copy_from_slice(&spi.to_be_bytes());
    let (at, _) = *payloads(&m).iter().find(|(_, t)| *t == NONCE).unwrap();
    let body = &mut m[at + 4..at + 4 + 32];
    body.copy_from_slice(nonce);
    m
}

/// `request` with N(COOKIE) `cookie` as its first payload (RFC 7296 §2.6).
fn with_cookie(request: &[u8], cookie: &[u8]) -> Vec<u8> {
    let mut m = request[..28].to_vec();
    let first = m[16];
    m[16] = NOTIFY;
    m.extend_from_slice(&[first, 0]);
    m.extend_from_slice(&((8 + cookie.len()) as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&COOKIE.to_be_bytes());
    m.extend_from_slice(cookie);
    m.extend_from_slice(&request[28..]);
    set_length(&mut m);
    m
}

/// The Notify type and data of a response that is a lone Notify with SPIr 0.
fn lone_notify(m: &[u8]) -> Option<(u16, &[u8])> {
    if m.len() < 36 || m[8..16] != [0; 8] || m[16] != NOTIFY {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([m[30], m[31]]));
    let spi_size = usize::from(m[33]);
    let kind = u16::from_be_bytes([m[34], m[35]]);
    m.get(36 + spi_size..28 + len).map(|data| (kind, data))
}

// ------------------------------------------------------------------------------ tests

/// Finding 3 (and 4) end to end: forged SKF fragments with Total Fragments 129 and the
/// established SA's real SPIs, every flag and message ID 0..8, both ports, both directions, for
/// 11 s around the client's first Child SA rekey (so each side has a request or a response
/// outstanding at some point). No key is needed to make them; none may end anything.
#[test]
fn forged_fragment_spray_kills_nothing() {
    if !root() {
        return;
    }
    let _alone = alone();
    let mut net = Net::new("spr");
    let gateway = net.gateway(&group_psk());
    let (cl, gw) = (net.cl.clone(), net.gw.clone());
    let stop_capture = Arc::new(AtomicBool::new(false));
    let (capture, seen) = capture_ike(&gw, stop_capture.clone());
    let name = format!("h-{}", net.tag);
    // A Child SA rekey 9-10 s after the tunnel comes up (10 s minus jitter), inside the spray.
    let profile = net.profile(&name, "hybrid", "child_rekey_time = \"10s\"\n");
    let client = net.spawn(&cl, &["-v", "up", profile.to_str().unwrap()]);
    net.connected(&name, client);

    // The IKE SA's SPIs and the client's port: `status --json` has no SPIs, so read them from
    // the IKE_AUTH request the client sent (header in clear, RFC 7296 §3.1).
    let auth = seen
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|s| s.exchange == 35 && s.spi_r != 0)
        .copied()
        .unwrap();
    let spis = (auth.spi_i, auth.spi_r);
    let client_port = auth.src.port();
    assert_eq!(*auth.src.ip(), CLIENT);
    eprintln!(
        "IKE SA {:016x}_i {:016x}_r, client at {}, IKE_AUTH to port {}",
        spis.0, spis.1, auth.src, auth.dst_port
    );

    let spray = Duration::from_secs(11);
    let until = Instant::now() + spray;
    let stop = Arc::new(AtomicBool::new(false));
    let ping = pinger(
        &cl,
        Ipv4Addr::new(10, 99, 0, 1),
        Duration::from_millis(100),
        stop.clone(),
    );
    // Each direction comes from the namespace, address and port the receiver expects its peer
    // at; a raw socket writes that source, as the real socket already holds the port.
    let mut sprayers = Vec::new();
    for (ns, from_gateway) in [(cl.clone(), false), (gw, true)] {
        let stop = stop.clone();
        sprayers.push(in_ns(&ns, move || {
            let sock = raw_sender();
            let mut rng = Rng::new(u64::from(from_gateway));
            let mut errors = 0u64;
            let sent = paced(10_000, until, &stop, |i| {
                let message_id = (i % 8) as u32;
                let response = (i / 8) % 2 == 1;
                let nat_t = (i / 16) % 2 == 0;
                let exchange = [36u8, 37, 44][((i / 32) % 3) as usize];
                let number = (i % 129) as u16 + 1;
                // Messages of the original initiator (the client) carry I; responses carry R.
                let flags = if from_gateway { 0 } else { 0x08 } | if response { 0x20 } else { 0 };
                let ike = forged_skf(spis, flags, exchange, message_id, number, &mut rng);
                let mut udp = if nat_t { vec![0; 4] } else { Vec::new() };
                udp.extend_from_slice(&ike);
                let port = if nat_t { 4500 } else { 500 };
                let (src, dst) = if from_gateway {
                    (
                        SocketAddrV4::new(GATEWAY, port),
                        SocketAddrV4::new(CLIENT, client_port),
                    )
                } else {
                    (
                        SocketAddrV4::new(CLIENT, client_port),
                        SocketAddrV4::new(GATEWAY, port),
                    )
                };
                let to = SockAddr::from(SocketAddrV4::new(*dst.ip(), 0));
                if sock.send_to(&udp_datagram(src, dst, &udp), &to).is_err() {
                    errors += 1;
                }
            });
            (sent, errors)
        }));
    }
    let mut sent = Vec::new();
    for s in sprayers {
        sent.push(s.join().unwrap());
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (pings, answered) = ping.join().unwrap();
    stop_capture.store(true, Ordering::Relaxed);
    capture.join().unwrap();
    eprintln!(
        "spray: {} forged to the gateway, {} to the client in {spray:?} ({} + {} send errors); \
         ping {answered}/{pings}",
        sent[0].0, sent[1].0, sent[0].1, sent[1].1
    );

    let client_alive = net.alive(client);
    let gateway_alive = net.alive(gateway);
    let status = net.status(&name);
    eprintln!("status after: {status:?}");
    let seen = seen.lock().unwrap().clone();
    let other_sas: Vec<_> = seen
        .iter()
        .filter(|s| (s.spi_i, s.spi_r) != spis && !(s.spi_i == spis.0 && s.spi_r == 0))
        .collect();
    let after_auth = seen
        .iter()
        .filter(|s| (s.spi_i, s.spi_r) == spis && s.exchange != 34 && s.exchange != 35)
        .count();
    eprintln!("client IKE messages on the SA after IKE_AUTH: {after_auth}; others: {other_sas:?}");
    assert!(client_alive, "client exited; log:\n{}", net.log(client));
    assert!(gateway_alive, "gateway exited; log:\n{}", net.log(gateway));
    let status = status.unwrap();
    assert_eq!(status["state"], "connected", "{}", net.log(client));
    assert!(status["reason"].is_null(), "{status}");
    assert!(
        status["uptime_s"].as_u64().unwrap() >= spray.as_secs(),
        "the tunnel was up all along: {status}"
    );
    assert!(
        other_sas.is_empty(),
        "the client made a new IKE SA: {other_sas:?}; log:\n{}",
        net.log(client)
    );
    assert_eq!(
        status["ike_sa_rekeys"], 0,
        "same IKE SA, same SPIs: {status}"
    );
    assert!(
        status["child_sa_rekeys"].as_u64().unwrap() >= 1,
        "the Child SA rekey ran during the spray: {status}; log:\n{}",
        net.log(client)
    );
    assert!(
        u64::from(answered) * 10 >= u64::from(pings) * 9,
        "ping through the tunnel during the spray: {answered}/{pings}; client log:\n{}\ngateway log:\n{}",
        net.log(client),
        net.log(gateway)
    );
    assert!(net.pqvpn(&["down", &name]).status.success());
    net.wait_exit(client, Duration::from_secs(10));
}

/// VmRSS and VmHWM of process `pid`, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User plus system CPU seconds of process `pid` (/proc/<pid>/stat, clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / 100.0
}

/// SPIi -> (variant, Ni) of the requests that await an answer.
type Pending = HashMap<u64, (usize, [u8; 32])>;

/// What one flood variant sent and what came back.
#[derive(Default)]
struct Counters {
    /// New IKE_SA_INIT requests (fresh SPIi and Ni).
    sent: AtomicU64,
    /// Requests resent with the gateway's COOKIE.
    echoed: AtomicU64,
    /// COOKIE notifies received.
    cookies: AtomicU64,
    /// Full IKE_SA_INIT responses: a half-open SA the gateway keeps.
    half_open: AtomicU64,
    /// Other lone notifies (refusals).
    refused: AtomicU64,
    send_errors: AtomicU64,
}

struct Variant {
    name: &'static str,
    template: Vec<u8>,
    rate: u64,
    /// From the one address that answers COOKIEs (else from the 200 that never do).
    echoes: bool,
    counters: Counters,
}

/// Finding 5 end to end: while a client moves TCP through the gateway, IKE_SA_INIT floods from
/// one address that echoes COOKIEs (RFC 7296 §2.6), X25519, P-384 and with a 16 KiB Vendor ID,
/// and from 200 addresses that never do (X25519 and P-384). Each request is pqvpn's own
/// genuine IKE_SA_INIT with a fresh SPIi and Ni. The transfer must complete, a new client must
/// connect during the flood, the gateway's peak RSS must stay under 32 MiB, and the throughput
/// under flood must be at least half the throughput without (issue 12; a ratio of two
/// transfers in the same run, not a speed). The other test of this file does not run
/// meanwhile ([`ALONE`]).
#[test]
fn ike_sa_init_flood_leaves_connected_clients_working() {
    const BYTES: u64 = 8 << 20;
    // The idle gateway peaks at about 10 MiB. With a per-address half-open limit and the
    // COOKIE threshold stopping the sources that do not echo, the flood can hold only about a
    // thousand small half-open SAs; three times the idle peak is plenty for that.
    const HWM_BOUND_KIB: u64 = 32 << 10;
    if !root() {
        return;
    }
    let _alone = alone();
    let mut net = Net::new("fld");
    let atk = net.attach('a', 2);
    let honest = net.attach('h', 3);
    // The attacker's 200 extra addresses, one UDP socket each.
    let spoofed: Vec<Ipv4Addr> = (10..210).map(|i| Ipv4Addr::new(198, 18, 2, i)).collect();
    let batch = net.write(
        "addrs.batch",
        &spoofed
            .iter()
            .map(|a| format!("addr add {a}/24 dev an{}\n", net.tag))
            .collect::<String>(),
    );
    assert!(
        ip(&["-n", &atk, "-batch", batch.to_str().unwrap()])
            .status
            .success()
    );
    let gateway = net.gateway(&group_psk());
    let (cl, gw) = (net.cl.clone(), net.gw.clone());
    let name = format!("h-{}", net.tag);
    let profile = net.profile(&name, "hybrid", "");
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    net.connected(&name, client);

    let unflooded = Transfer::start(&mut net, &cl, &gw, "10.99.0.1:5301", BYTES)
        .finish(&mut net, Instant::now() + Duration::from_secs(30))
        .unwrap();
    let gw_pid = net.pid(gateway);
    let before = memory(gw_pid);

    let variants = Arc::new(vec![
        Variant {
            name: "one address, echoes COOKIEs, X25519",
            template: sa_init_template(KeyExchangeMethod::Curve25519, 0),
            rate: 1000,
            echoes: true,
            counters: Counters::default(),
        },
        Variant {
            name: "one address, echoes COOKIEs, P-384",
            template: sa_init_template(KeyExchangeMethod::Ecp384, 0),
            rate: 150,
            echoes: true,
            counters: Counters::default(),
        },
        Variant {
            name: "one address, echoes COOKIEs, X25519 + 16 KiB Vendor ID",
            template: sa_init_template(KeyExchangeMethod::Curve25519, 16 << 10),
            rate: 200,
            echoes: true,
            counters: Counters::default(),
        },
        Variant {
            name: "200 addresses, no COOKIE echo, X25519",
            template: sa_init_template(KeyExchangeMethod::Curve25519, 0),
            rate: 500,
            echoes: false,
            counters: Counters::default(),
        },
        Variant {
            name: "200 addresses, no COOKIE echo, P-384",
            template: sa_init_template(KeyExchangeMethod::Ecp384, 0),
            rate: 100,
            echoes: false,
            counters: Counters::default(),
        },
    ]);
    let to_gateway = SocketAddr::new(GATEWAY.into(), 500);
    let (echo_socket, spoofed_sockets) = in_ns(&atk, move || {
        let echo = UdpSocket::bind("198.18.2.2:0").unwrap();
        echo.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let spoofed: Vec<UdpSocket> = spoofed
            .iter()
            .map(|a| UdpSocket::bind(SocketAddrV4::new(*a, 0)).unwrap())
            .collect();
        (echo, spoofed)
    })
    .join()
    .unwrap();
    let echo_socket = Arc::new(echo_socket);
    let spoofed_sockets = Arc::new(spoofed_sockets);
    // SPIi -> (variant, Ni) of the echoing attacker's requests, to answer COOKIEs.
    let pending: Arc<Mutex<Pending>> = Arc::default();
    let refusals: Arc<Mutex<HashMap<u16, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let flood_start = Instant::now();
    let cpu_before = cpu_seconds(gw_pid);
    let flood_until = flood_start + Duration::from_secs(30);
    let mut threads = Vec::new();
    for index in 0..variants.len() {
        let (variants, stop, pending) = (variants.clone(), stop.clone(), pending.clone());
        let (echo_socket, spoofed_sockets) = (echo_socket.clone(), spoofed_sockets.clone());
        threads.push(std::thread::spawn(move || {
            let v = &variants[index];
            let mut rng = Rng::new(index as u64);
            paced(v.rate, flood_until, &stop, |i| {
                let spi = rng.next() | 1;
                let mut nonce = [0u8; 32];
                rng.fill(&mut nonce);
                let request = sa_init(&v.template, spi, &nonce);
                let sent = if v.echoes {
                    let mut p = pending.lock().unwrap();
                    if p.len() > 1_000_000 {
                        p.clear();
                    }
                    p.insert(spi, (index, nonce));
                    drop(p);
                    echo_socket.send_to(&request, to_gateway)
                } else {
                    let s = &spoofed_sockets[(i as usize) % spoofed_sockets.len()];
                    s.send_to(&request, to_gateway)
                };
                v.counters.sent.fetch_add(1, Ordering::Relaxed);
                if sent.is_err() {
                    v.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            });
        }));
    }
    let echoer = {
        let (variants, stop, refusals) = (variants.clone(), stop.clone(), refusals.clone());
        let socket = echo_socket;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, _)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let m = &buf[..n];
                if n < 28 || m[18] != 34 {
                    continue;
                }
                let spi = u64::from_be_bytes(m[..8].try_into().unwrap());
                let Some(&(index, nonce)) = pending.lock().unwrap().get(&spi) else {
                    continue;
                };
                let v = &variants[index];
                match lone_notify(m) {
                    Some((COOKIE, cookie)) => {
                        v.counters.cookies.fetch_add(1, Ordering::Relaxed);
                        let request = with_cookie(&sa_init(&v.template, spi, &nonce), cookie);
                        if socket.send_to(&request, to_gateway).is_ok() {
                            v.counters.echoed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some((kind, _)) => {
                        v.counters.refused.fetch_add(1, Ordering::Relaxed);
                        *refusals.lock().unwrap().entry(kind).or_default() += 1;
                        pending.lock().unwrap().remove(&spi);
                    }
                    None => {
                        v.counters.half_open.fetch_add(1, Ordering::Relaxed);
                        pending.lock().unwrap().remove(&spi);
                    }
                }
            }
        })
    };
    let peak = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(memory(gw_pid).0);
                std::thread::sleep(Duration::from_millis(200));
            }
            peak
        })
    };

    // Let the half-open SAs pile up past the COOKIE threshold, then move data and connect.
    std::thread::sleep(Duration::from_secs(3));
    let transfer = Transfer::start(&mut net, &cl, &gw, "10.99.0.1:5302", BYTES);
    let name2 = format!("h2-{}", net.tag);
    let profile2 = net.profile(&name2, "hybrid", "");
    let connect_start = Instant::now();
    let client2 = net.spawn(&honest, &["up", profile2.to_str().unwrap()]);
    let second = net.wait_connected(&name2, Duration::from_secs(20));
    let connect_time = connect_start.elapsed();
    let flooded = transfer.finish(&mut net, flood_until);
    let flood_time = flood_start.elapsed();
    let cpu = cpu_seconds(gw_pid) - cpu_before;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    echoer.join().unwrap();
    let peak_rss = peak.join().unwrap();
    let after = memory(gw_pid);
    let gateway_alive = net.alive(gateway);
    let client_alive = net.alive(client);

    let secs = flood_time.as_secs_f64();
    eprintln!(
        "flood for {secs:.1} s, gateway CPU {:.0} % of one core:",
        cpu / secs * 100.0
    );
    for v in variants.iter() {
        let c = &v.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        eprintln!(
            "  {}: {:.0} new IKE_SA_INIT/s (target {}), {} sent, {} send errors{}",
            v.name,
            get(&c.sent) as f64 / secs,
            v.rate,
            get(&c.sent),
            get(&c.send_errors),
            if v.echoes {
                format!(
                    "; answers: {} half-open SAs, {} COOKIEs ({} echoed), {} refusals",
                    get(&c.half_open),
                    get(&c.cookies),
                    get(&c.echoed),
                    get(&c.refused)
                )
            } else {
                String::new()
            }
        );
    }
    eprintln!("  refusals by Notify type: {:?}", refusals.lock().unwrap());
    let unflooded_rate = BYTES as f64 / unflooded / 1e6;
    let flooded_rate = flooded.map(|s| BYTES as f64 / s / 1e6);
    // Unfinished, the transfer had from its start to the end of the flood.
    let waited = (flood_time.as_secs_f64() - 3.0).max(0.1);
    eprintln!(
        "TCP {} MiB: unflooded {unflooded:.2} s ({unflooded_rate:.2} MB/s), flooded {} -> ratio {}",
        BYTES >> 20,
        flooded.map_or_else(
            || format!("not finished after {waited:.1} s"),
            |s| format!("{s:.2} s ({:.2} MB/s)", BYTES as f64 / s / 1e6)
        ),
        flooded_rate.map_or_else(
            || format!("< {:.2}", unflooded / waited),
            |r| format!("{:.2}", r / unflooded_rate)
        ),
    );
    eprintln!(
        "gateway VmRSS/VmHWM KiB: before {}/{}, peak RSS {peak_rss}, after {}/{} (bound {HWM_BOUND_KIB})",
        before.0, before.1, after.0, after.1
    );
    eprintln!(
        "second client: {} after {:.2} s (handshake_ms {})",
        if second.is_some() {
            "connected"
        } else {
            "NOT connected"
        },
        connect_time.as_secs_f64(),
        second
            .as_ref()
            .map_or_else(|| "-".into(), |s| s["handshake_ms"].to_string())
    );

    assert!(gateway_alive, "gateway exited; log:\n{}", net.log(gateway));
    assert!(client_alive, "client exited; log:\n{}", net.log(client));
    assert!(
        flooded.is_some(),
        "the transfer did not finish during the flood; client log:\n{}",
        net.log(client)
    );
    let flooded = flooded.unwrap();
    assert!(
        second.is_some(),
        "a new client could not connect during the flood; its log:\n{}",
        net.log(client2)
    );
    assert!(
        after.1 < HWM_BOUND_KIB,
        "gateway VmHWM {} KiB >= {HWM_BOUND_KIB} KiB",
        after.1
    );
    let ratio = unflooded / flooded;
    assert!(
        ratio >= 0.5,
        "throughput under flood {ratio:.2} of the unflooded"
    );
}
