//! The driver end to end on loopback UDP with in-memory devices: our client and our gateway,
//! traffic through ESP, rekeys under traffic.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::*;
use crate::crypto::{DeterministicProvider, SecretBytes};
use crate::ike::config::Lifetime;
use crate::ike::{CryptoPolicy, InitiatorConfig, Mode, NAT_T_PORT, ResponderConfig};
use crate::wire::IkeId;

struct Memory(Option<MemoryDevice>);

impl DeviceFactory for Memory {
    type Device = MemoryDevice;

    async fn create(&mut self, _up: &TunnelUp) -> Result<MemoryDevice, DriverError> {
        self.0.take().ok_or(DriverError::Closed)
    }

    async fn teardown(&mut self) {}
}

pub(super) fn packet(src: Ipv4Addr, dst: Ipv4Addr, seq: u32) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 64, 0, 0, 0, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(64, 0);
    p
}

pub(super) const PSK: &[u8] = b"driver-test";

/// A gateway config for `mode` with a small pool and 1 h Child SAs.
pub(super) fn gateway_config(mode: Mode) -> ResponderConfig {
    let mut gateway = ResponderConfig::new(
        vec![CryptoPolicy::for_mode(mode)],
        SecretBytes::from_slice(PSK),
        IkeId::Fqdn("gw".into()),
    );
    gateway.pool_v4 = Some((Ipv4Addr::new(10, 7, 0, 2), Ipv4Addr::new(10, 7, 0, 9)));
    gateway.child_lifetime = Lifetime::new(Duration::from_secs(3600));
    gateway
}

pub(super) fn client_config(mode: Mode) -> InitiatorConfig {
    InitiatorConfig::new(
        mode,
        SecretBytes::from_slice(PSK),
        IkeId::Fqdn("c".into()),
        Some(IkeId::Fqdn("gw".into())),
    )
}

pub(super) type Task = tokio::task::JoinHandle<Result<(), DriverError>>;

/// The gateway on `ip`:4500 (IKE on an ephemeral port) reflecting every packet back to its
/// sender. Returns its task, its stop switch and its client count.
pub(super) async fn spawn_gateway(
    ip: Ipv4Addr,
    config: ResponderConfig,
) -> (Task, watch::Sender<bool>, watch::Receiver<GatewayStatus>) {
    let mut options = GatewayOptions::new(config, IpAddr::V4(ip));
    options.ike_port = 0;
    let (gw_dev, gw_app) = memory_device_pair(1024);
    let (gw_tx, mut gw_rx) = gw_app.split();
    tokio::spawn(async move {
        while let Some(mut p) = gw_rx.recv().await {
            if let Some(a) = p.get_mut(12..20) {
                let (s, d) = a.split_at_mut(4);
                s.swap_with_slice(d);
            }
            if gw_tx.send(p).await.is_err() {
                break;
            }
        }
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (count_tx, count_rx) = watch::channel(GatewayStatus::default());
    let task = tokio::spawn(async move {
        run_gateway(
            options,
            Arc::new(DeterministicProvider::new(7)),
            gw_dev,
            &count_tx,
            stop_rx,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    (task, stop_tx, count_rx)
}

struct Client {
    task: Task,
    stop: watch::Sender<bool>,
    status: watch::Receiver<Status>,
    app: MemoryDevice,
}

/// The client against `ip`:4500, connected (panics after 5 s).
async fn spawn_client(ip: Ipv4Addr, config: InitiatorConfig) -> Client {
    let options = ClientOptions::new(config, SocketAddr::new(IpAddr::V4(ip), NAT_T_PORT));
    let (cl_dev, app) = memory_device_pair(1024);
    let (status_tx, mut status) = watch::channel(Status::default());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut factory = Memory(Some(cl_dev));
        run_client(
            options,
            Arc::new(DeterministicProvider::new(8)),
            &mut factory,
            &status_tx,
            stop_rx,
        )
        .await
    });
    while status.borrow_and_update().state != State::Connected {
        tokio::time::timeout(Duration::from_secs(5), status.changed())
            .await
            .unwrap()
            .unwrap();
    }
    Client {
        task,
        stop,
        status,
        app,
    }
}

impl Client {
    /// The client's first virtual IPv4 address, from its status.
    fn virtual_ip(&self) -> Ipv4Addr {
        self.status.borrow().virtual_ips[0]
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// Client and gateway on `ip`:4500 with the given Child SA lifetime; packets flow for
/// `duration`, reflected by the gateway. Returns (sent, received, final client status).
async fn run_tunnel(
    ip: Ipv4Addr,
    mode: Mode,
    child_rekey: Duration,
    duration: Duration,
) -> (u32, u32, Status) {
    let (gateway_task, stop_tx, _count) = spawn_gateway(ip, gateway_config(mode)).await;
    let mut initiator = client_config(mode);
    initiator.child_lifetime = Lifetime::new(child_rekey);
    let client = spawn_client(ip, initiator).await;
    let me = client.virtual_ip();
    let (cl_tx, mut cl_rx) = client.app.split();
    let (mut sent, mut received) = (0u32, 0u32);
    let end = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < end {
        cl_tx
            .send(packet(me, Ipv4Addr::new(10, 7, 0, 1), sent))
            .await
            .unwrap();
        sent += 1;
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), cl_rx.recv()).await {
            received += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client.stop.send(true).unwrap();
    client.task.await.unwrap().unwrap();
    stop_tx.send(true).unwrap();
    gateway_task.await.unwrap().unwrap();
    let status = client.status.borrow().clone();
    (sent, received, status)
}

/// The driver loops end to end over real sockets: the tunnel comes up, packets flow both
/// ways, `shutdown` ends it cleanly. (Rekeys under traffic, loss and the rest of the tunnel's
/// policy are proven on the virtual clock in `tests::tunnel_pair`.)
#[tokio::test]
async fn traffic_flows_through_the_driver() {
    let (sent, received, status) = run_tunnel(
        Ipv4Addr::new(127, 0, 0, 3),
        Mode::Hybrid,
        Duration::from_secs(3600),
        Duration::from_secs(1),
    )
    .await;
    assert!(status.quantum_safe);
    assert!(sent >= 10, "{sent} packets sent");
    assert!(
        received + 1 >= sent,
        "{received} of {sent} packets came back"
    );
    assert_eq!(status.state, State::Disconnected);
    assert!(status.bytes_out >= u64::from(sent) * 64 - 64);
}

/// A gateway whose Child SAs die (hard lifetime) before anyone rekeys them deletes the
/// client's only Child SA and creates a new one on the same IKE SA, as strongSwan does
/// ("CHILD_SA recreate after hard expire", CREATE_CHILD_SA without REKEY_SA). The client takes
/// it: the tunnel stays connected through each, with no new handshake, and packets pass after
/// each re-creation.
#[tokio::test]
async fn a_child_sa_at_its_hard_lifetime_is_recreated_on_the_same_ike_sa() {
    let ip = Ipv4Addr::new(127, 0, 0, 4);
    let mut gateway = gateway_config(Mode::Hybrid);
    gateway.child_lifetime = Lifetime {
        rekey: Duration::from_secs(3600),
        jitter: Duration::ZERO,
        hard: Duration::from_millis(700),
    };
    let (gateway_task, stop_tx, mut count) = spawn_gateway(ip, gateway).await;
    let mut client = spawn_client(ip, client_config(Mode::Hybrid)).await;
    let me = client.virtual_ip();
    let (cl_tx, mut cl_rx) = client.app.split();
    let mut seq = 0;
    for round in 1..=3u64 {
        tokio::time::timeout(
            Duration::from_secs(5),
            client.status.wait_for(|s| s.child_sa_recreates >= round),
        )
        .await
        .expect("the gateway re-created the Child SA")
        .unwrap();
        // A packet through the new Child SA comes back (the first may meet the next gap).
        let mut echoed = false;
        for _ in 0..20 {
            seq += 1;
            cl_tx
                .send(packet(me, Ipv4Addr::new(10, 7, 0, 1), seq))
                .await
                .unwrap();
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(100), cl_rx.recv()).await
            {
                echoed = true;
                break;
            }
        }
        assert!(echoed, "round {round}: no packet came back");
    }
    let status = client.status.borrow().clone();
    assert_eq!(status.state, State::Connected);
    // `run_client` runs one IKE SA and returns when it ends: still running, no new handshake.
    assert!(!client.task.is_finished(), "the tunnel never went down");
    assert_eq!(count.borrow_and_update().clients, 1);
    client.stop.send(true).unwrap();
    client.task.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(5), count.wait_for(|s| s.clients == 0))
        .await
        .expect("the gateway dropped the client")
        .unwrap();
    stop_tx.send(true).unwrap();
    gateway_task.await.unwrap().unwrap();
}

/// Security review finding 2 (RFC 4301 §5.2): the gateway writes a client's decrypted packet to
/// its device only if the inner source is the client's own address; spoofed sources (another
/// client's address, an address on the gateway's LAN) are dropped.
#[tokio::test]
async fn gateway_drops_inner_sources_outside_the_clients_tsi() {
    let ip = Ipv4Addr::new(127, 0, 0, 5);
    let (gateway_task, stop_tx, _count) = spawn_gateway(ip, gateway_config(Mode::Hybrid)).await;
    let client = spawn_client(ip, client_config(Mode::Hybrid)).await;
    let me = client.virtual_ip();
    let (cl_tx, mut cl_rx) = client.app.split();
    let gateway_side = Ipv4Addr::new(10, 7, 0, 1);
    for (src, seq) in [
        (Ipv4Addr::new(10, 7, 0, 9), 1),
        (Ipv4Addr::new(192, 0, 2, 66), 2),
        (me, 3),
    ] {
        cl_tx.send(packet(src, gateway_side, seq)).await.unwrap();
    }
    // Only the genuine packet is reflected back; the spoofed ones never reached the device.
    let back = tokio::time::timeout(Duration::from_secs(2), cl_rx.recv())
        .await
        .expect("the genuine packet came back")
        .unwrap();
    assert_eq!(back.get(20..24), Some(&3u32.to_be_bytes()[..]));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), cl_rx.recv())
            .await
            .is_err(),
        "a spoofed packet was forwarded"
    );
    client.stop.send(true).unwrap();
    client.task.await.unwrap().unwrap();
    stop_tx.send(true).unwrap();
    gateway_task.await.unwrap().unwrap();
}

/// A client that is expected to give up: runs it to its end (at most 10 s) and returns its
/// result, whether it left its device uncreated, and its last status.
async fn run_failing_client(
    ip: Ipv4Addr,
    config: InitiatorConfig,
) -> (Result<(), DriverError>, bool, Status) {
    let options = ClientOptions::new(config, SocketAddr::new(IpAddr::V4(ip), NAT_T_PORT));
    let (status_tx, status) = watch::channel(Status::default());
    let (_stop, stop_rx) = watch::channel(false);
    let (cl_dev, _app) = memory_device_pair(16);
    let mut factory = Memory(Some(cl_dev));
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        run_client(
            options,
            Arc::new(DeterministicProvider::new(8)),
            &mut factory,
            &status_tx,
            stop_rx,
        ),
    )
    .await
    .expect("the client gave up within 10 s");
    let last = status.borrow().clone();
    (result, factory.0.is_some(), last)
}

/// Waits until the gateway has authenticated one IKE SA and holds none: the client deleted
/// it (without its Delete the gateway keeps it until it expires).
async fn wait_deleted(mut gateway_status: watch::Receiver<GatewayStatus>) {
    tokio::time::timeout(
        Duration::from_secs(5),
        gateway_status.wait_for(|s| s.authenticated == 1 && s.ike_sas == 0),
    )
    .await
    .expect("the gateway deleted the client's IKE SA after its Delete")
    .unwrap();
}

/// Security review item 8: when the gateway authenticates the client but refuses its Child SA
/// (here NO_PROPOSAL_CHOSEN for ESP), the client deletes the IKE SA before it gives up, so the
/// gateway holds no half-dead IKE SA (and no address lease) for it.
#[tokio::test]
async fn a_refused_child_sa_deletes_the_ike_sa_before_the_client_exits() {
    let ip = Ipv4Addr::new(127, 0, 0, 6);
    let mut gateway = gateway_config(Mode::Hybrid);
    gateway.esp = vec![crate::crypto::AeadAlgorithm::ChaCha20Poly1305];
    let (gateway_task, stop_tx, gateway_status) = spawn_gateway(ip, gateway).await;
    let mut client = client_config(Mode::Hybrid);
    client.esp = vec![crate::crypto::AeadAlgorithm::Aes256Gcm16];
    let (result, no_device, _) = run_failing_client(ip, client).await;
    assert!(matches!(result, Err(DriverError::ChildSa(_))), "{result:?}");
    assert!(no_device);
    assert_eq!(gateway_status.borrow().clients, 0);
    wait_deleted(gateway_status).await;
    stop_tx.send(true).unwrap();
    gateway_task.await.unwrap().unwrap();
}

/// Security review L6: a gateway that assigns a public virtual address (without
/// `allow_public_virtual_ip`) gets no tunnel: the client ends with the precise refusal, never
/// creates its device, and deletes the IKE SA, so the gateway drops it.
#[tokio::test]
async fn hostile_cfg_reply_ends_the_tunnel_and_deletes_the_ike_sa() {
    let ip = Ipv4Addr::new(127, 0, 0, 7);
    let mut gateway = gateway_config(Mode::Hybrid);
    let public = Ipv4Addr::new(8, 8, 8, 8);
    gateway.pool_v4 = Some((public, public));
    let (gateway_task, stop_tx, gateway_status) = spawn_gateway(ip, gateway).await;
    let (result, no_device, status) = run_failing_client(ip, client_config(Mode::Hybrid)).await;
    assert!(
        matches!(
            result,
            Err(DriverError::ChildSa(crate::ike::Error::ConfigReplyRefused(
                crate::ike::ConfigRefusal::VirtualIpPublic(IpAddr::V4(a))
            ))) if a == public
        ),
        "{result:?}"
    );
    assert!(no_device, "no device was created");
    assert_eq!(status.state, State::Error);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("virtual address 8.8.8.8 is public")),
        "{:?}",
        status.last_error
    );
    wait_deleted(gateway_status).await;
    stop_tx.send(true).unwrap();
    gateway_task.await.unwrap().unwrap();
}
