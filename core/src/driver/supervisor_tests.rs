//! The supervisor over real sockets: a gateway that dies and comes back is reconnected to with
//! the device and routes kept in place; a refusal stops without retrying.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc, watch};

use super::supervisor::{Command, Connector, Lifetime, SessionEnd, run_supervisor};
use super::tests::{client_config, gateway_config, packet, spawn_gateway};
use super::*;
use crate::crypto::{DeterministicProvider, SecretBytes};
use crate::ike::{InitiatorConfig, Mode, NAT_T_PORT, RetransmitConfig};

/// A packet device that survives its sessions: the application end stays open while the
/// supervisor reconnects, as a TUN device does.
struct SharedDevice {
    tx: mpsc::Sender<Vec<u8>>,
    rx: Arc<Mutex<mpsc::Receiver<Vec<u8>>>>,
}

impl PacketDevice for SharedDevice {
    async fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let packet =
            self.rx.lock().await.recv().await.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "device closed")
            })?;
        let out = buf.get_mut(..packet.len()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "packet too large")
        })?;
        out.copy_from_slice(&packet);
        Ok(packet.len())
    }

    async fn send(&mut self, packet: &[u8]) -> std::io::Result<()> {
        self.tx
            .send(packet.to_vec())
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "device closed"))
    }
}

/// Counts what the supervisor asked of its device.
#[derive(Clone, Default)]
struct Counts {
    creates: Arc<AtomicUsize>,
    teardowns: Arc<AtomicUsize>,
    blocks: Arc<AtomicUsize>,
    /// Whether the kill switch is up (blocked and not lifted since).
    blocked: Arc<AtomicBool>,
}

impl Counts {
    fn blocking(&self) -> bool {
        self.blocked.load(Ordering::SeqCst)
    }
}

struct SharedFactory {
    tx: mpsc::Sender<Vec<u8>>,
    rx: Arc<Mutex<mpsc::Receiver<Vec<u8>>>>,
    counts: Counts,
    /// The kill switch cannot be installed.
    refuse_block: bool,
}

impl DeviceFactory for SharedFactory {
    type Device = SharedDevice;

    async fn create(&mut self, _up: &TunnelUp) -> Result<SharedDevice, DriverError> {
        self.counts.creates.fetch_add(1, Ordering::SeqCst);
        Ok(SharedDevice {
            tx: self.tx.clone(),
            rx: self.rx.clone(),
        })
    }

    async fn teardown(&mut self) {
        self.counts.teardowns.fetch_add(1, Ordering::SeqCst);
    }

    async fn block(&mut self, _gateway: Option<SocketAddr>) -> Result<bool, DriverError> {
        if self.refuse_block {
            return Err(DriverError::Device("nf_tables is not available".into()));
        }
        self.counts.blocks.fetch_add(1, Ordering::SeqCst);
        self.counts.blocked.store(true, Ordering::SeqCst);
        Ok(true)
    }

    async fn unblock(&mut self) -> Result<(), DriverError> {
        self.counts.blocked.store(false, Ordering::SeqCst);
        Ok(())
    }
}

/// A factory and the application's ends of its device.
fn shared_factory() -> (
    SharedFactory,
    mpsc::Sender<Vec<u8>>,
    mpsc::Receiver<Vec<u8>>,
    Counts,
) {
    let (to_driver, from_app) = mpsc::channel(1024);
    let (to_app, from_driver) = mpsc::channel(1024);
    let counts = Counts::default();
    let factory = SharedFactory {
        tx: to_app,
        rx: Arc::new(Mutex::new(from_app)),
        counts: counts.clone(),
        refuse_block: false,
    };
    (factory, to_driver, from_driver, counts)
}

/// Options for each session against `ip`:4500; counts the sessions it was asked for.
struct TestConnector {
    gateway: SocketAddr,
    config: InitiatorConfig,
    calls: Arc<AtomicUsize>,
}

impl Connector for TestConnector {
    async fn options(&mut self, mode: Mode) -> Result<ClientOptions, SessionEnd> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut config = self.config.clone();
        config.policy = crate::ike::CryptoPolicy::for_mode(mode);
        Ok(ClientOptions::new(config, self.gateway))
    }
}

/// A client that notices a dead gateway within a few seconds: DPD after 1 s of silence,
/// three transmissions 250 ms apart, doubling.
fn quick_client() -> InitiatorConfig {
    let mut config = client_config(Mode::Hybrid);
    config.dpd_interval = Some(Duration::from_secs(1));
    config.retransmit = RetransmitConfig {
        initial: Duration::from_millis(250),
        factor: 2.0,
        attempts: 3,
    };
    config
}

async fn wait_state(
    status: &mut watch::Receiver<Status>,
    state: State,
    within: Duration,
) -> Status {
    let waited = tokio::time::timeout(within, status.wait_for(|s| s.state == state))
        .await
        .map(|r| r.map(|s| s.clone()));
    match waited {
        Ok(Ok(s)) => s,
        _ => panic!("not {state:?} within {within:?}: {:?}", status.borrow()),
    }
}

/// Sends packets until one comes back (the gateway reflects them); panics after `within`.
async fn ping(tx: &mpsc::Sender<Vec<u8>>, rx: &mut mpsc::Receiver<Vec<u8>>, me: Ipv4Addr) {
    for seq in 0..50 {
        tx.send(packet(me, Ipv4Addr::new(10, 7, 0, 1), seq))
            .await
            .unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            return;
        }
    }
    panic!("no packet came back through the tunnel");
}

fn virtual_ip(status: &Status) -> Ipv4Addr {
    status.virtual_ips[0]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A supervisor (as a daemon runs it) over `factory`, against `connector`; its task, status
/// and command channel.
fn spawn_supervisor(
    connector: TestConnector,
    factory: SharedFactory,
    seed: u64,
) -> (
    tokio::task::JoinHandle<Result<(), String>>,
    watch::Receiver<Status>,
    mpsc::Sender<Command>,
) {
    let (status_tx, status) = watch::channel(Status::default());
    let (commands, commands_rx) = mpsc::channel(8);
    let supervisor = tokio::spawn(async move {
        run_supervisor(
            Mode::Hybrid,
            Lifetime::UntilClosed,
            connector,
            Arc::new(DeterministicProvider::new(seed)),
            factory,
            &status_tx,
            commands_rx,
        )
        .await
    });
    (supervisor, status, commands)
}

/// Issue 19: the gateway is killed (no Delete), the client goes to `reconnecting` with the
/// reason and keeps its device; the gateway returns and the tunnel is back, pings resume.
#[tokio::test]
async fn the_tunnel_comes_back_after_the_gateway_dies_and_returns() {
    let ip = Ipv4Addr::new(127, 0, 0, 8);
    let (gateway, _stop, _count) = spawn_gateway(ip, gateway_config(Mode::Hybrid)).await;
    let (factory, app_tx, mut app_rx, counts) = shared_factory();
    let calls = Arc::new(AtomicUsize::new(0));
    let connector = TestConnector {
        gateway: SocketAddr::new(IpAddr::V4(ip), NAT_T_PORT),
        config: quick_client(),
        calls: calls.clone(),
    };
    let (supervisor, mut status, commands) = spawn_supervisor(connector, factory, 9);
    commands
        .send(Command::Connect { mode: None })
        .await
        .unwrap();
    let up = wait_state(&mut status, State::Connected, Duration::from_secs(5)).await;
    assert!(up.quantum_safe && up.mode == "hybrid", "{up:?}");
    ping(&app_tx, &mut app_rx, virtual_ip(&up)).await;

    gateway.abort();
    let _ = gateway.await;
    let lost = wait_state(&mut status, State::Reconnecting, Duration::from_secs(15)).await;
    let reason = lost.last_error.clone().unwrap_or_default();
    assert!(reason.contains("dead peer"), "{lost:?}");
    assert!(lost.attempt >= 1, "{lost:?}");
    assert_eq!(
        counts.teardowns.load(Ordering::SeqCst),
        0,
        "the routes stay"
    );
    assert!(
        counts.blocking(),
        "the kill switch stays up while reconnecting"
    );

    let (gateway, stop, _count) = spawn_gateway(ip, gateway_config(Mode::Hybrid)).await;
    let back_at = Instant::now();
    let back = wait_state(&mut status, State::Connected, Duration::from_secs(40)).await;
    println!(
        "reconnected {:.1} s after the gateway returned",
        back_at.elapsed().as_secs_f64()
    );
    assert_eq!(back.reconnects, 1, "{back:?}");
    assert_eq!(back.mode, "hybrid", "never a weaker mode");
    ping(&app_tx, &mut app_rx, virtual_ip(&back)).await;
    assert_eq!(counts.creates.load(Ordering::SeqCst), 2);
    assert_eq!(counts.teardowns.load(Ordering::SeqCst), 0);
    assert!(calls.load(Ordering::SeqCst) >= 2);

    commands.send(Command::Disconnect).await.unwrap();
    wait_state(&mut status, State::Disconnected, Duration::from_secs(5)).await;
    assert_eq!(
        counts.teardowns.load(Ordering::SeqCst),
        1,
        "disconnect lifts the routes"
    );
    assert!(!counts.blocking(), "and the kill switch");
    assert!(!status.borrow().kill_switch);
    assert!(
        counts.blocks.load(Ordering::SeqCst) >= 2,
        "one block per session"
    );
    drop(commands);
    supervisor.await.unwrap().unwrap();
    stop.send(true).unwrap();
    gateway.await.unwrap().unwrap();
}

/// A wrong PSK is not retried: one session, `error` with the reason, and a foreground
/// supervisor returns it.
#[tokio::test]
async fn an_authentication_failure_stops_without_retrying() {
    let ip = Ipv4Addr::new(127, 0, 0, 9);
    let (gateway, stop, _count) = spawn_gateway(ip, gateway_config(Mode::Hybrid)).await;
    let (factory, _app_tx, _app_rx, counts) = shared_factory();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut config = quick_client();
    config.psk = SecretBytes::from_slice(b"not-the-gateways-psk");
    let connector = TestConnector {
        gateway: SocketAddr::new(IpAddr::V4(ip), NAT_T_PORT),
        config,
        calls: calls.clone(),
    };
    let (status_tx, status) = watch::channel(Status::default());
    let (commands, commands_rx) = mpsc::channel(8);
    commands
        .send(Command::Connect { mode: None })
        .await
        .unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        run_supervisor(
            Mode::Hybrid,
            Lifetime::UntilStopped,
            connector,
            Arc::new(DeterministicProvider::new(10)),
            factory,
            &status_tx,
            commands_rx,
        ),
    )
    .await
    .expect("the supervisor gave up within 10 s");
    let reason = result.unwrap_err();
    assert!(reason.contains("AUTHENTICATION_FAILED"), "{reason}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no retry");
    assert_eq!(counts.creates.load(Ordering::SeqCst), 0);
    // Before the gateway's name is looked up, and with its address.
    assert_eq!(counts.blocks.load(Ordering::SeqCst), 2);
    assert!(
        !counts.blocking(),
        "a first connect that failed for good lifts the block"
    );
    let last = status.borrow().clone();
    assert_eq!(last.state, State::Error);
    assert_eq!(last.last_error.as_deref(), Some(reason.as_str()));
    stop.send(true).unwrap();
    gateway.await.unwrap().unwrap();
}

/// Issue 19: a gateway that ends the tunnel from its side: it drops the IKE SA at its hard
/// lifetime (silently: DPD finds out). The client reconnects with a fresh IKE SA, saying why.
/// At a Child SA's hard lifetime the gateway re-creates it instead: the supervisor stays
/// `connected` throughout (no reconnect), and pings pass.
#[tokio::test]
async fn the_tunnel_comes_back_after_the_gateway_deletes_it() {
    for (ip, child, reason) in [
        (Ipv4Addr::new(127, 0, 0, 10), false, "dead peer"),
        (Ipv4Addr::new(127, 0, 0, 11), true, ""),
    ] {
        let mut gateway = gateway_config(Mode::Hybrid);
        let short = crate::ike::Lifetime {
            rekey: Duration::from_secs(3600),
            jitter: Duration::ZERO,
            hard: Duration::from_millis(1500),
        };
        if child {
            gateway.child_lifetime = short;
        } else {
            gateway.ike_lifetime = short;
        }
        let (task, stop, _count) = spawn_gateway(ip, gateway).await;
        let (factory, app_tx, mut app_rx, counts) = shared_factory();
        let connector = TestConnector {
            gateway: SocketAddr::new(IpAddr::V4(ip), NAT_T_PORT),
            config: quick_client(),
            calls: Arc::new(AtomicUsize::new(0)),
        };
        let (supervisor, mut status, commands) = spawn_supervisor(connector, factory, 11);
        commands
            .send(Command::Connect { mode: None })
            .await
            .unwrap();
        let up = wait_state(&mut status, State::Connected, Duration::from_secs(5)).await;
        if child {
            tokio::time::timeout(
                Duration::from_secs(10),
                status.wait_for(|s| s.child_sa_recreates >= 2),
            )
            .await
            .expect("two Child SAs re-created")
            .unwrap();
            let now = status.borrow().clone();
            assert_eq!(now.state, State::Connected);
            assert_eq!(now.reconnects, 0, "{now:?}");
            assert_eq!(now.connected_since, up.connected_since, "the same tunnel");
            ping(&app_tx, &mut app_rx, virtual_ip(&now)).await;
            drop(commands);
            supervisor.await.unwrap().unwrap();
            stop.send(true).unwrap();
            task.await.unwrap().unwrap();
            continue;
        }
        let lost = wait_state(&mut status, State::Reconnecting, Duration::from_secs(10)).await;
        let why = lost.last_error.clone().unwrap_or_default();
        assert!(why.contains(reason), "{why}");
        let back = wait_state(&mut status, State::Connected, Duration::from_secs(10)).await;
        assert!(back.reconnects >= 1, "{back:?}");
        ping(&app_tx, &mut app_rx, virtual_ip(&back)).await;
        assert_eq!(
            counts.teardowns.load(Ordering::SeqCst),
            0,
            "routes kept throughout"
        );
        drop(commands);
        supervisor.await.unwrap().unwrap();
        assert_eq!(counts.teardowns.load(Ordering::SeqCst), 1);
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
    }
}

/// Fail closed: when the kill switch cannot be installed no session starts (no device, no
/// tunnel) and the reason says why.
#[tokio::test]
async fn no_session_starts_without_its_kill_switch() {
    let ip = Ipv4Addr::new(127, 0, 0, 12);
    let (gateway, stop, _status) = spawn_gateway(ip, gateway_config(Mode::Hybrid)).await;
    let (mut factory, _app_tx, _app_rx, counts) = shared_factory();
    factory.refuse_block = true;
    let connector = TestConnector {
        gateway: SocketAddr::new(IpAddr::V4(ip), NAT_T_PORT),
        config: quick_client(),
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let (supervisor, mut status, commands) = spawn_supervisor(connector, factory, 12);
    commands
        .send(Command::Connect { mode: None })
        .await
        .unwrap();
    let failed = wait_state(&mut status, State::Error, Duration::from_secs(5)).await;
    let reason = failed.last_error.unwrap_or_default();
    assert!(reason.contains("kill switch"), "{reason}");
    assert_eq!(counts.creates.load(Ordering::SeqCst), 0);
    drop(commands);
    supervisor.await.unwrap().unwrap();
    stop.send(true).unwrap();
    gateway.await.unwrap().unwrap();
}

/// Ends every session before it starts with `end` (a gateway whose name does not resolve, a
/// missing credential).
struct FailingConnector {
    end: SessionEnd,
}

impl Connector for FailingConnector {
    async fn options(&mut self, _mode: Mode) -> Result<ClientOptions, SessionEnd> {
        Err(self.end.clone())
    }
}

/// Reviewer (issue 15): the block goes up before the gateway's name is resolved, so a first
/// connect that cannot resolve it waits for the retry blocked, not in clear.
#[tokio::test]
async fn the_kill_switch_is_up_while_the_gateway_cannot_be_resolved() {
    let (factory, _app_tx, _app_rx, counts) = shared_factory();
    let (status_tx, mut status) = watch::channel(Status::default());
    let (commands, commands_rx) = mpsc::channel(8);
    let connector = FailingConnector {
        end: SessionEnd::Lost("gateway = \"vpn.example\": cannot resolve".into()),
    };
    let supervisor = tokio::spawn(async move {
        run_supervisor(
            Mode::Hybrid,
            Lifetime::UntilClosed,
            connector,
            Arc::new(DeterministicProvider::new(21)),
            factory,
            &status_tx,
            commands_rx,
        )
        .await
    });
    commands
        .send(Command::Connect { mode: None })
        .await
        .unwrap();
    let reconnecting = wait_state(&mut status, State::Reconnecting, Duration::from_secs(5)).await;
    assert!(reconnecting.kill_switch, "{reconnecting:?}");
    assert!(counts.blocking());
    commands.send(Command::Disconnect).await.unwrap();
    let disconnected = wait_state(&mut status, State::Disconnected, Duration::from_secs(5)).await;
    assert!(!disconnected.kill_switch);
    assert!(!counts.blocking());
    drop(commands);
    supervisor.await.unwrap().unwrap();
}

/// Reviewer (issue 15): a tunnel resumed under the block a crashed run left is one that was
/// up: refused for good, the block stays (daemon) until the user disconnects, and a
/// foreground run ends with the block still up and says how to lift it.
#[tokio::test]
async fn a_resumed_tunnel_refused_for_good_keeps_the_block() {
    let refused = || FailingConnector {
        end: SessionEnd::Refused("no PSK stored for this profile".into()),
    };
    // The daemon: Error, blocking, until Disconnect.
    let (factory, _app_tx, _app_rx, counts) = shared_factory();
    let (status_tx, mut status) = watch::channel(Status::default());
    let (commands, commands_rx) = mpsc::channel(8);
    let connector = refused();
    let supervisor = tokio::spawn(async move {
        run_supervisor(
            Mode::Hybrid,
            Lifetime::UntilClosed,
            connector,
            Arc::new(DeterministicProvider::new(22)),
            factory,
            &status_tx,
            commands_rx,
        )
        .await
    });
    commands.send(Command::Resume { mode: None }).await.unwrap();
    let failed = wait_state(&mut status, State::Error, Duration::from_secs(5)).await;
    assert!(failed.kill_switch, "{failed:?}");
    assert!(counts.blocking());
    commands.send(Command::Disconnect).await.unwrap();
    wait_state(&mut status, State::Disconnected, Duration::from_secs(5)).await;
    assert!(!counts.blocking());
    drop(commands);
    supervisor.await.unwrap().unwrap();

    // `pqvpn up`: the run ends, the block does not.
    let (factory, _app_tx, _app_rx, counts) = shared_factory();
    let (status_tx, _status) = watch::channel(Status::default());
    let (commands, commands_rx) = mpsc::channel(8);
    commands.send(Command::Resume { mode: None }).await.unwrap();
    let result = run_supervisor(
        Mode::Hybrid,
        Lifetime::UntilStopped,
        refused(),
        Arc::new(DeterministicProvider::new(23)),
        factory,
        &status_tx,
        commands_rx,
    )
    .await;
    let reason = result.unwrap_err();
    assert!(reason.contains("recover --unblock"), "{reason}");
    assert!(counts.blocking(), "fail closed");
    assert!(counts.teardowns.load(Ordering::SeqCst) >= 1);
}
