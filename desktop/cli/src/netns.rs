//! The full demo in two network namespaces: `pqvpn gateway` in one, `pqvpn up` in the other,
//! joined by a veth pair; ping and TCP through the tunnel; everything removed afterwards, also
//! on Ctrl-C.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pqvpn_control::{Cipher, State as WireState, TunnelStatus};
use pqvpn_core::crypto::{CryptoProvider, RustCrypto};
use zeroize::Zeroizing;

use crate::control;

/// Whether the full demo can run here, or why not.
pub(crate) fn available() -> Result<(), String> {
    crate::linux::require_root("the full demo")?;
    if !Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("the `ip` tool (iproute2) is missing".into()),
    }
}

/// What the demo created, removed on drop (also after an error or Ctrl-C).
struct Scene {
    id: String,
    dir: PathBuf,
    children: Vec<Child>,
    namespaces: Vec<String>,
}

impl Scene {
    fn ns(&self, side: &str) -> String {
        format!("pqvpn-demo-{side}-{}", self.id)
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("Failed to run ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        for child in &mut self.children {
            // SIGTERM lets `pqvpn up` restore routes; the namespaces go away right after.
            let _ = Command::new("kill")
                .arg(child.id().to_string())
                .stderr(Stdio::null())
                .status();
        }
        for child in &mut self.children {
            for _ in 0..50 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("Failed to create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("Failed to write {}: {e}", path.display()))
}

pub(crate) async fn demo(megabytes: u64) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("Failed to find pqvpn itself: {e}"))?;
    let id = std::process::id().to_string();
    let dir = std::env::temp_dir().join(format!("pqvpn-demo-{id}"));
    std::fs::create_dir(&dir).map_err(|e| format!("Failed to create {}: {e}", dir.display()))?;
    let mut scene = Scene {
        id,
        dir,
        children: Vec::new(),
        namespaces: Vec::new(),
    };
    let result = tokio::select! {
        r = run(&mut scene, &exe, megabytes) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted; cleaning up".into()),
    };
    drop(scene);
    result
}

async fn run(scene: &mut Scene, exe: &Path, megabytes: u64) -> Result<(), String> {
    let (gw, cl) = (scene.ns("gw"), scene.ns("cl"));
    println!(
        "pqvpn demo: namespaces {gw} (gateway) and {cl} (client), veth 198.18.0.1 <-> 198.18.0.2"
    );
    for ns in [&gw, &cl] {
        scene.ip(&["netns", "add", ns])?;
        scene.namespaces.push(ns.clone());
        // `ip netns exec` bind-mounts this over /etc/resolv.conf: the client's DNS change
        // stays inside its namespace.
        let etc = format!("/etc/netns/{ns}");
        std::fs::create_dir_all(&etc).map_err(|e| format!("Failed to create {etc}: {e}"))?;
        std::fs::write(format!("{etc}/resolv.conf"), "nameserver 127.0.0.53\n")
            .map_err(|e| format!("Failed to write {etc}/resolv.conf: {e}"))?;
        scene.ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    let (veth_gw, veth_cl) = (format!("pqg{}", scene.id), format!("pqc{}", scene.id));
    scene.ip(&[
        "link", "add", &veth_gw, "netns", &gw, "type", "veth", "peer", "name", &veth_cl, "netns",
        &cl,
    ])?;
    scene.ip(&["-n", &gw, "addr", "add", "198.18.0.1/24", "dev", &veth_gw])?;
    scene.ip(&["-n", &cl, "addr", "add", "198.18.0.2/24", "dev", &veth_cl])?;
    scene.ip(&["-n", &gw, "link", "set", &veth_gw, "up"])?;
    scene.ip(&["-n", &cl, "link", "set", &veth_cl, "up"])?;

    // The PSK and the profile texts holding it are wiped when dropped.
    let mut raw = Zeroizing::new([0u8; 24]);
    RustCrypto::new()
        .fill_random(&mut *raw)
        .map_err(|e| e.to_string())?;
    let mut psk = Zeroizing::new(String::with_capacity(2 * raw.len()));
    for b in raw.iter() {
        let _ = write!(psk, "{b:02x}");
    }
    let psk = &*psk;
    let gateway_toml = scene.dir.join("gateway.toml");
    write_private(
        &gateway_toml,
        &Zeroizing::new(format!(
            "listen = \"198.18.0.1\"\nlocal_id = \"gateway.demo\"\nmodes = [\"hybrid\"]\n\
             address = \"10.99.0.1/24\"\ndns = [\"10.99.0.1\"]\ninterface = \"pqvpn-gw\"\n\
             [pool]\nipv4 = \"10.99.0.10-10.99.0.20\"\n\
             [[clients]]\nid = \"client.demo\"\npsk = \"{psk}\"\n"
        )),
    )?;
    let name = format!("pqvpn-demo-{}", scene.id);
    // DNS would go to the host's systemd-resolved when it runs (it does not know the namespace's
    // links), so the demo applies pushed DNS only where the namespace's own resolv.conf is used.
    let dns = !Path::new("/run/systemd/resolve").exists();
    let client_toml = scene.dir.join(format!("{name}.toml"));
    write_private(
        &client_toml,
        &Zeroizing::new(format!(
            "gateway = \"198.18.0.1\"\nlocal_id = \"client.demo\"\nremote_id = \"gateway.demo\"\n\
             mode = \"hybrid\"\n[auth]\npsk = \"{psk}\"\n[network]\nfull_tunnel = true\n\
             interface = \"pqvpn-demo\"\ndns = {dns}\n"
        )),
    )?;
    let spawn = |ns: &str, args: &[&str], log: &Path| -> Result<Child, String> {
        let log = std::fs::File::create(log)
            .map_err(|e| format!("Failed to create {}: {e}", log.display()))?;
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("Failed to start pqvpn in {ns}: {e}"))
    };
    let gw_log = scene.dir.join("gateway.log");
    let cl_log = scene.dir.join("client.log");
    scene.children.push(spawn(
        &gw,
        &["-v", "gateway", &gateway_toml.to_string_lossy()],
        &gw_log,
    )?);
    tokio::time::sleep(Duration::from_millis(300)).await;
    scene.children.push(spawn(
        &cl,
        &["-v", "up", &client_toml.to_string_lossy()],
        &cl_log,
    )?);

    // Wait for the tunnel.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status: TunnelStatus = loop {
        if let Ok(s) = control_status(&name).await
            && s.state == WireState::Connected
        {
            break s;
        }
        let client_exited = scene
            .children
            .last_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if client_exited || Instant::now() > deadline {
            let log = std::fs::read_to_string(&cl_log).unwrap_or_default();
            return Err(format!("the tunnel did not come up; client log:\n{log}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let safe = if status.quantum_safe {
        "quantum-safe"
    } else {
        "NOT quantum-safe"
    };
    let kes: Vec<&str> = status.key_exchanges.iter().map(|k| k.name()).collect();
    let mode = status
        .mode
        .map(|m| serde_json::to_string(&m).unwrap_or_default())
        .unwrap_or_default();
    println!(
        "  negotiated:  {}, {} ({}, {safe}); ESP {}",
        kes.join(" + "),
        status.ike_cipher.map_or("-", Cipher::name),
        mode.trim_matches('"'),
        status.esp_cipher.map_or("-", Cipher::name)
    );
    println!(
        "  handshake:   {:.2} ms, client address {}",
        status.handshake_ms.unwrap_or(0.0),
        status.virtual_ips.join(", ")
    );

    // Ping through the tunnel (full tunnel: the route to 10.99.0.1 is the TUN).
    let have_ping = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("ping").is_file()));
    let ping = if have_ping {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &cl,
                "ping",
                "-c",
                "5",
                "-i",
                "0.2",
                "-W",
                "2",
                "10.99.0.1",
            ])
            .output()
    } else {
        Err(std::io::Error::from(std::io::ErrorKind::NotFound))
    };
    match ping {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let summary = text
                .lines()
                .find(|l| l.contains("min/avg/max"))
                .unwrap_or("");
            let avg = summary
                .split('=')
                .nth(1)
                .and_then(|v| v.split('/').nth(1))
                .unwrap_or("?");
            println!("  ping:        5/5 replies from 10.99.0.1 through the tunnel, avg {avg} ms");
        }
        Ok(out) => {
            return Err(format!(
                "ping through the tunnel failed: {}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(_) => println!("  ping:        skipped (no ping binary; install iputils-ping)"),
    }

    // TCP through the tunnel: a sink in the gateway namespace, a source in the client's.
    let bytes = megabytes.saturating_mul(1 << 20);
    let sink_log = scene.dir.join("sink.log");
    let mut sink = spawn(&gw, &["__tcp-sink", "10.99.0.1:5201"], &sink_log)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = Command::new("ip")
        .args(["netns", "exec", &cl])
        .arg(exe)
        .args(["__tcp-source", "10.99.0.1:5201", &bytes.to_string()])
        .output()
        .map_err(|e| format!("Failed to run the TCP source: {e}"))?;
    let _ = sink.wait();
    let sink_out = std::fs::read_to_string(&sink_log).unwrap_or_default();
    if !out.status.success() {
        return Err(format!(
            "TCP through the tunnel failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // The source prints "<seconds> <checksum>", the sink "<octets> <checksum>".
    let source_out = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut source_fields = source_out.split_whitespace();
    let secs: f64 = source_fields
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    let sent_sum = source_fields.next().unwrap_or("-");
    let mut sink_fields = sink_out.split_whitespace();
    let received: u64 = sink_fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let received_sum = sink_fields.next().unwrap_or("?");
    if received != bytes || sent_sum != received_sum {
        return Err(format!(
            "the TCP sink received {received} of {bytes} octets (checksum {received_sum}, sent {sent_sum})"
        ));
    }
    println!(
        "  TCP:         {} MiB client -> gateway in {secs:.2} s = {:.0} Mbit/s, checksum verified (one stream, both ends on this machine)",
        bytes >> 20,
        bytes as f64 * 8.0 / secs / 1e6
    );
    // Counters are published once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let status = control_status(&name).await.unwrap_or_default();
    println!(
        "  counters:    {} B out, {} B in through ESP",
        status.bytes_out, status.bytes_in
    );
    control_down(&name).await;
    println!("  cleanup:     tunnel down, namespaces and files removed");
    Ok(())
}

async fn control_status(name: &str) -> Result<TunnelStatus, String> {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || control::tunnel_status(Some(&name)))
        .await
        .map_err(|e| e.to_string())?
}

async fn control_down(name: &str) {
    let name = name.to_owned();
    let _ = tokio::task::spawn_blocking(move || control::down(Some(&name))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// FNV-1a, 64 bits: a checksum both ends of a test transfer compute over the same stream.
fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// `pqvpn __tcp-sink ADDR`: accepts one connection, reads to the end, prints
/// `<octets> <checksum>`.
pub(crate) fn tcp_sink(addr: SocketAddr) -> Result<(), String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("Failed to listen on {addr}: {e}"))?;
    let (mut stream, _) = listener.accept().map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 16];
    let (mut total, mut hash) = (0u64, FNV_OFFSET);
    loop {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        let data = buf.get(..n).unwrap_or_default();
        fnv1a(&mut hash, data);
        total += n as u64;
    }
    println!("{total} {hash:016x}");
    Ok(())
}

/// `pqvpn __tcp-source ADDR BYTES`: sends BYTES of a pseudo-random stream, prints
/// `<seconds> <checksum>`.
pub(crate) fn tcp_source(addr: SocketAddr, bytes: u64) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("Failed to connect to {addr}: {e}"))?;
    let mut chunk = vec![0u8; 1 << 16];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let (mut left, mut hash) = (bytes, FNV_OFFSET);
    let start = Instant::now();
    while left > 0 {
        for b in chunk.iter_mut() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            *b = (state >> 56) as u8;
        }
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        let data = chunk.get(..n).unwrap_or_default();
        fnv1a(&mut hash, data);
        stream.write_all(data).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    println!("{:.6} {hash:016x}", start.elapsed().as_secs_f64());
    Ok(())
}
