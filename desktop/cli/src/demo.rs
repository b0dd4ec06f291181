//! `pqvpn demo`: the main job on an embedded default.
//!
//! As root (and with network namespaces available) it runs the full demo: two namespaces, a
//! veth pair, `pqvpn gateway` in one and `pqvpn up` in the other, ping and TCP through the
//! tunnel. Without root it runs what needs no privileges: our gateway and our client on
//! loopback UDP, with in-memory packet devices, a hybrid handshake and packets moved through
//! ESP both ways. Every figure printed is measured in this run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pqvpn_core::crypto::{CryptoProvider, RustCrypto, SecretBytes};
use pqvpn_core::driver::{
    ClientOptions, DeviceFactory, DriverError, GatewayOptions, GatewayStatus, MemoryDevice, State,
    Status, TunnelUp, memory_device_pair, run_client, run_gateway,
};
use pqvpn_core::ike::{CryptoPolicy, InitiatorConfig, Mode, NAT_T_PORT, ResponderConfig};
use pqvpn_core::wire::IkeId;
use tokio::sync::watch;

/// Inner packets of this size are moved through the tunnel.
const PACKET: usize = 1400;
/// Packets in flight at once.
const WINDOW: usize = 256;

pub(crate) async fn run(loopback: bool, megabytes: u64) -> Result<(), String> {
    if !loopback {
        match crate::netns::available() {
            Ok(()) => return crate::netns::demo(megabytes).await,
            Err(why) => eprintln!("pqvpn demo: {why}; running the unprivileged part instead\n"),
        }
    }
    loopback_demo(megabytes).await
}

/// Hands the client driver its in-memory device.
struct MemoryFactory(Option<MemoryDevice>);

impl DeviceFactory for MemoryFactory {
    type Device = MemoryDevice;

    async fn create(&mut self, _up: &TunnelUp) -> Result<MemoryDevice, DriverError> {
        self.0
            .take()
            .ok_or_else(|| DriverError::Device("device already taken".into()))
    }

    async fn teardown(&mut self) {}
}

/// A minimal IPv4/UDP packet of `len` octets (at least 36) from `src` to `dst` carrying `seq`.
fn packet(src: Ipv4Addr, dst: Ipv4Addr, len: usize, seq: u64) -> Vec<u8> {
    let len = len.max(36);
    let total = u16::try_from(len).unwrap_or(u16::MAX);
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0; 8]); // UDP header
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(len, 0);
    p
}

/// Swaps the source and destination addresses of an IPv4 packet in place.
fn reflect(p: &mut [u8]) {
    if let Some(addresses) = p.get_mut(12..20) {
        let (src, dst) = addresses.split_at_mut(4);
        src.swap_with_slice(dst);
    }
}

async fn loopback_demo(megabytes: u64) -> Result<(), String> {
    println!("pqvpn demo: unprivileged part (loopback UDP, in-memory packet devices)");
    let provider: Arc<dyn CryptoProvider> = Arc::new(RustCrypto::new());
    let mut psk = vec![0u8; 32];
    provider.fill_random(&mut psk).map_err(|e| e.to_string())?;
    let psk = SecretBytes::new(psk);

    // The gateway: our responder on 127.0.0.1:4500, reflecting every packet it receives. The
    // client has a PSK of its own (no group PSK, security review finding 7).
    let mut gateway_config = ResponderConfig::new(
        vec![CryptoPolicy::default()],
        SecretBytes::default(),
        IkeId::Fqdn("gateway.demo".into()),
    );
    gateway_config.group_psk = None;
    gateway_config
        .client_psks
        .insert(IkeId::Fqdn("client.demo".into()), psk.clone());
    gateway_config.pool_v4 = Some((Ipv4Addr::new(10, 99, 0, 10), Ipv4Addr::new(10, 99, 0, 20)));
    gateway_config.dns = vec![IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1))];
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut options = GatewayOptions::new(gateway_config, localhost);
    options.ike_port = 0; // port 500 needs root; the client starts on 4500 directly
    let (gw_device, gw_app) = memory_device_pair(4 * WINDOW);
    let (gw_tx, mut gw_rx) = gw_app.split();
    tokio::spawn(async move {
        while let Some(mut p) = gw_rx.recv().await {
            reflect(&mut p);
            if gw_tx.send(p).await.is_err() {
                break;
            }
        }
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (clients_tx, _) = watch::channel(GatewayStatus::default());
    let gateway_provider = provider.clone();
    let gateway = tokio::spawn(async move {
        run_gateway(options, gateway_provider, gw_device, &clients_tx, stop_rx).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    if gateway.is_finished() {
        return match gateway.await {
            Ok(Err(e)) => Err(format!(
                "the demo gateway could not start: {e} (is UDP port 4500 on 127.0.0.1 in use?)"
            )),
            _ => Err("the demo gateway stopped".into()),
        };
    }

    // The client: a hybrid X25519 + ML-KEM-768 initiator.
    let initiator = InitiatorConfig::new(
        Mode::Hybrid,
        psk,
        IkeId::Fqdn("client.demo".into()),
        Some(IkeId::Fqdn("gateway.demo".into())),
    );
    let client_options = ClientOptions::new(initiator, SocketAddr::new(localhost, NAT_T_PORT));
    let (cl_device, cl_app) = memory_device_pair(4 * WINDOW);
    let (cl_tx, mut cl_rx) = cl_app.split();
    let (status_tx, mut status_rx) = watch::channel(Status::default());
    let (client_stop_tx, client_stop_rx) = watch::channel(false);
    let client_provider = provider.clone();
    let client = tokio::spawn(async move {
        let mut factory = MemoryFactory(Some(cl_device));
        run_client(
            client_options,
            client_provider,
            &mut factory,
            &status_tx,
            client_stop_rx,
        )
        .await
    });

    let status = loop {
        status_rx
            .changed()
            .await
            .map_err(|_| "the client stopped".to_string())?;
        let s = status_rx.borrow().clone();
        match s.state {
            State::Connected => break s,
            State::Error | State::Disconnected => {
                return Err(s.last_error.unwrap_or_else(|| "the client stopped".into()));
            }
            _ => {}
        }
    };
    let mut ke = status.ike.ke.clone();
    for a in &status.ike.addke {
        ke.push_str(" + ");
        ke.push_str(a);
    }
    let safe = if status.quantum_safe {
        "quantum-safe"
    } else {
        "NOT quantum-safe"
    };
    println!(
        "  negotiated:  {ke}, {} ({}, {safe}); ESP {}",
        status.ike.encr, status.mode, status.esp.encr
    );
    println!(
        "  handshake:   {:.2} ms (IKE_SA_INIT, IKE_INTERMEDIATE with ML-KEM, IKE_AUTH) over 127.0.0.1",
        status.handshake_ms.unwrap_or(0.0)
    );
    println!(
        "  address:     {} from the gateway's pool",
        status.virtual_ips.join(", ")
    );

    let me = status
        .virtual_ips
        .first()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse::<Ipv4Addr>().ok())
        .ok_or("no virtual IPv4 address assigned")?;
    let peer = Ipv4Addr::new(10, 99, 0, 1);

    // Round trips: one packet at a time.
    let mut rtts = Vec::new();
    for seq in 0..20u64 {
        let t = Instant::now();
        cl_tx
            .send(packet(me, peer, 64, seq))
            .await
            .map_err(|_| "client device closed")?;
        tokio::time::timeout(Duration::from_secs(2), cl_rx.recv())
            .await
            .map_err(|_| "a packet through the tunnel was lost")?
            .ok_or("client device closed")?;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let median = rtts.get(rtts.len() / 2).copied().unwrap_or_default();
    println!(
        "  round trip:  {:.3} ms median of 20 packets through the tunnel and back",
        median.as_secs_f64() * 1e3
    );

    // Throughput: `megabytes` through the tunnel, reflected back, WINDOW packets in flight.
    let total = usize::try_from(megabytes.saturating_mul(1 << 20) / PACKET as u64)
        .unwrap_or(0)
        .max(1);
    let start = Instant::now();
    let (mut sent, mut received, mut lost) = (0usize, 0usize, 0usize);
    while received + lost < total {
        while sent < total && sent - received - lost < WINDOW {
            cl_tx
                .send(packet(me, peer, PACKET, sent as u64))
                .await
                .map_err(|_| "client device closed")?;
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_millis(500), cl_rx.recv()).await {
            Ok(Some(_)) => received += 1,
            Ok(None) => return Err("client device closed".into()),
            // UDP on loopback can drop under load: count what is still in flight as lost.
            Err(_) => lost += sent - received - lost,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let moved = (received * PACKET) as f64;
    println!(
        "  throughput:  {:.1} MiB each way in {secs:.2} s = {:.0} Mbit/s each way ({PACKET}-octet packets, both ends on this machine); {lost} of {total} packets lost",
        moved / f64::from(1 << 20),
        moved * 8.0 / secs / 1e6
    );
    let _ = client_stop_tx.send(true);
    let _ = stop_tx.send(true);
    let final_status = match client.await {
        Ok(Ok(())) => status_rx.borrow().refreshed(),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(e) => return Err(e.to_string()),
    };
    let _ = gateway.await;
    println!(
        "  counters:    {} B out, {} B in through ESP",
        final_status.bytes_out, final_status.bytes_in
    );
    println!(
        "\nThe full demo (TUN devices, routes, network namespaces, ping and TCP) runs as root: sudo pqvpn demo"
    );
    Ok(())
}
