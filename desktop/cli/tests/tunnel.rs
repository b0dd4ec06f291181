//! `pqvpn up`, `status --json`, `down` and `gateway` as root in network namespaces that each
//! test creates and removes: the JSON while up, exact restoration of routes, rules, addresses
//! and DNS after `down`, SIGTERM and a crash, and the error for an unreachable gateway.
//! As non-root every test says it is skipped and why.

#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "test")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PSK: &str = "tunnel-test-psk-not-a-secret";

fn root() -> bool {
    let ok = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0")
        && Path::new("/dev/net/tun").exists();
    if !ok {
        eprintln!("skipped: needs root and /dev/net/tun (network namespaces, TUN devices)");
    }
    ok
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().unwrap()
}

/// Two namespaces joined by a veth pair; removed on drop with whatever runs in them.
struct Net {
    tag: String,
    gw: String,
    cl: String,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Net {
    fn new(tag: &str) -> Self {
        let tag = format!("{tag}{}", std::process::id() % 100_000);
        let (gw, cl) = (format!("pqt-gw-{tag}"), format!("pqt-cl-{tag}"));
        let dir = std::env::temp_dir().join(format!("pqvpn-tunnel-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for ns in [&gw, &cl] {
            assert!(ip(&["netns", "add", ns]).status.success());
            std::fs::create_dir_all(format!("/etc/netns/{ns}")).unwrap();
            std::fs::write(
                format!("/etc/netns/{ns}/resolv.conf"),
                "nameserver 192.0.2.53\n",
            )
            .unwrap();
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let (vg, vc) = (format!("g{tag}"), format!("c{tag}"));
        assert!(
            ip(&[
                "link", "add", &vg, "netns", &gw, "type", "veth", "peer", "name", &vc, "netns", &cl
            ])
            .status
            .success()
        );
        ip(&["-n", &gw, "addr", "add", "198.18.0.1/24", "dev", &vg]);
        ip(&["-n", &cl, "addr", "add", "198.18.0.2/24", "dev", &vc]);
        ip(&["-n", &gw, "link", "set", &vg, "up"]);
        ip(&["-n", &cl, "link", "set", &vc, "up"]);
        Self {
            tag,
            gw,
            cl,
            dir,
            children: Vec::new(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn spawn(&mut self, ns: &str, args: &[&str]) -> usize {
        let log =
            std::fs::File::create(self.dir.join(format!("{}.log", self.children.len()))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_pqvpn")])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("{index}.log"))).unwrap_or_default()
    }

    fn gateway(&mut self) {
        let config = self.write(
            "gateway.toml",
            &format!(
                "listen = \"198.18.0.1\"\nlocal_id = \"gw.test\"\nmodes = [\"hybrid\", \"pq-only\", \"classical\"]\n\
                 address = \"10.99.0.1/24\"\ndns = [\"10.99.0.1\"]\ninterface = \"pqgw{}\"\n\
                 [pool]\nipv4 = \"10.99.0.10-10.99.0.20\"\n\
                 [[clients]]\nid = \"client.test\"\npsk = \"{PSK}\"\n\
                 [[clients]]\nid = \"other.test\"\npsk = \"other-client-psk-not-a-secret\"\n",
                self.tag
            ),
        );
        let gw = self.gw.clone();
        self.spawn(&gw, &["gateway", config.to_str().unwrap()]);
        std::thread::sleep(Duration::from_millis(300));
    }

    fn profile(&self, name: &str, mode: &str) -> PathBuf {
        self.write(
            &format!("{name}.toml"),
            &format!(
                "gateway = \"198.18.0.1\"\nlocal_id = \"client.test\"\nremote_id = \"gw.test\"\nmode = \"{mode}\"\n\
                 [auth]\npsk = \"{PSK}\"\n[network]\ninterface = \"pq{}\"\n",
                self.tag
            ),
        )
    }

    /// Routes, rules, addresses and resolv.conf of the client namespace.
    fn snapshot(&self) -> String {
        let mut s = String::new();
        for args in [
            vec!["-n", &self.cl, "-j", "-4", "route", "show", "table", "all"],
            vec!["-n", &self.cl, "-j", "-6", "route", "show", "table", "all"],
            vec!["-n", &self.cl, "-j", "-4", "rule"],
            vec!["-n", &self.cl, "-j", "-6", "rule"],
            vec!["-n", &self.cl, "-j", "addr"],
        ] {
            s.push_str(&String::from_utf8_lossy(&ip(&args).stdout));
        }
        s.push_str(
            &std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", self.cl))
                .unwrap_or_default(),
        );
        // IPv6 duplicate address detection finishes on its own schedule on the veth.
        s.replace("\"tentative\":true,", "")
    }

    /// A snapshot once the kernel has finished setting up the veth (IPv6 link-local routes and
    /// duplicate address detection come a little after the link goes up).
    fn stable_snapshot(&self) -> String {
        let mut last = self.snapshot();
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.snapshot();
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    fn pqvpn(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pqvpn"))
            .args(args)
            .output()
            .unwrap()
    }

    fn wait_connected(&self, name: &str, client: usize) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.pqvpn(&["status", "--json", name]);
            if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                if v["state"] == "connected" {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "not connected; client log:\n{}",
                self.log(client)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_exit(&mut self, index: usize) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.children[index].try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pqvpn did not exit; log:\n{}",
                self.log(index)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ping(&self) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.cl,
                "ping",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "2",
                "10.99.0.1",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = Command::new("kill")
                .arg(c.id().to_string())
                .stderr(Stdio::null())
                .status();
        }
        for c in &mut self.children {
            for _ in 0..30 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.gw, &self.cl] {
            let _ = ip(&["netns", "del", ns]);
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn up_status_down_in_each_mode_restores_the_network_exactly() {
    if !root() {
        return;
    }
    for (mode, ke, addke, safe) in [
        ("hybrid", "X25519", vec!["ML-KEM-768"], true),
        ("pq-only", "ML-KEM-768", vec![], true),
        ("classical", "X25519", vec![], false),
    ] {
        let mut net = Net::new(&format!("u{}", &mode[..2]));
        net.gateway();
        let before = net.stable_snapshot();
        let name = format!("t-{}", net.tag);
        let profile = net.profile(&name, mode);
        let cl = net.cl.clone();
        let client = net.spawn(&cl, &["-v", "up", profile.to_str().unwrap()]);
        let status = net.wait_connected(&name, client);
        assert_eq!(status["mode"], mode);
        assert_eq!(status["quantum_safe"], safe);
        assert_eq!(status["ike"]["ke"], ke);
        assert_eq!(status["ike"]["addke"], serde_json::json!(addke));
        assert_eq!(status["ike"]["encr"], "AES-GCM-256");
        assert_eq!(status["ike"]["prf"], "PRF_HMAC_SHA2_384");
        assert_eq!(status["esp"]["encr"], "AES-GCM-256");
        assert_eq!(status["virtual_ips"], serde_json::json!(["10.99.0.10/32"]));
        assert_eq!(status["dns"], serde_json::json!(["10.99.0.1"]));
        assert!(status["last_error"].is_null());
        assert!(
            net.ping(),
            "ping through the {mode} tunnel; log:\n{}",
            net.log(client)
        );
        let resolv = std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", net.cl)).unwrap();
        assert!(resolv.contains("10.99.0.1"), "pushed DNS in use: {resolv}");
        assert_ne!(net.snapshot(), before, "the tunnel changed routes");
        assert!(net.pqvpn(&["down", &name]).status.success());
        assert!(net.wait_exit(client).success(), "{}", net.log(client));
        assert_eq!(
            net.snapshot(),
            before,
            "{mode}: routes, rules, addresses and DNS restored; log:\n{}",
            net.log(client)
        );
    }
}

/// Sends `bytes` over TCP from namespace `from` to a sink at `addr` in namespace `to`, through
/// the tunnel; returns the seconds it took, after checking octet count and checksum.
fn tcp(net: &mut Net, from: &str, to: &str, addr: &str, bytes: u64) -> f64 {
    let to = to.to_owned();
    let sink = net.spawn(&to, &["__tcp-sink", addr]);
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            from,
            env!("CARGO_BIN_EXE_pqvpn"),
            "__tcp-source",
            addr,
            &bytes.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    net.wait_exit(sink);
    let source = String::from_utf8_lossy(&out.stdout).into_owned();
    let sink_out = net.log(sink);
    let (secs, sent_sum) = source.trim().split_once(' ').unwrap();
    let (received, received_sum) = sink_out.trim().split_once(' ').unwrap();
    assert_eq!(received, bytes.to_string(), "octets through the tunnel");
    assert_eq!(received_sum, sent_sum, "checksum of the stream");
    secs.parse().unwrap()
}

#[test]
fn hundred_megabytes_both_ways_and_ping_both_ways() {
    if !root() {
        return;
    }
    let mut net = Net::new("tcp");
    net.gateway();
    let name = format!("t-{}", net.tag);
    let profile = net.profile(&name, "hybrid");
    let (cl, gw) = (net.cl.clone(), net.gw.clone());
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    net.wait_connected(&name, client);
    assert!(net.ping(), "client -> gateway");
    let back = Command::new("ip")
        .args([
            "netns",
            "exec",
            &gw,
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            "10.99.0.10",
        ])
        .output()
        .unwrap();
    assert!(
        back.status.success(),
        "gateway -> client: {}",
        String::from_utf8_lossy(&back.stdout)
    );
    let bytes = 100 << 20;
    let up = tcp(&mut net, &cl, &gw, "10.99.0.1:5301", bytes);
    let down = tcp(&mut net, &gw, &cl, "10.99.0.10:5302", bytes);
    eprintln!("100 MiB up in {up:.2} s, down in {down:.2} s");
    let status: serde_json::Value =
        serde_json::from_slice(&net.pqvpn(&["status", "--json", &name]).stdout).unwrap();
    assert_eq!(status["state"], "connected");
    assert!(net.pqvpn(&["down", &name]).status.success());
    net.wait_exit(client);
}

#[test]
fn sigterm_restores_and_a_crash_is_undone_at_the_next_start() {
    if !root() {
        return;
    }
    let mut net = Net::new("sig");
    net.gateway();
    let before = net.stable_snapshot();
    let name = format!("t-{}", net.tag);
    let profile = net.profile(&name, "hybrid");
    let cl = net.cl.clone();

    // SIGTERM.
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    net.wait_connected(&name, client);
    let pid = net.children[client].id().to_string();
    // `ip netns exec` execs pqvpn, so this is pqvpn's pid.
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    net.wait_exit(client);
    assert_eq!(net.snapshot(), before, "SIGTERM restored everything");

    // SIGKILL leaves the routes and DNS behind; the next start undoes them.
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    net.wait_connected(&name, client);
    net.children[client].kill().unwrap();
    net.wait_exit(client);
    assert_ne!(net.snapshot(), before, "a crash leaves state behind");
    let _ = std::fs::remove_file(format!("/run/pqvpn/{name}.sock"));
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    net.wait_connected(&name, client);
    assert!(
        net.log(client).contains("undid leftovers of a crashed run"),
        "{}",
        net.log(client)
    );
    assert!(net.pqvpn(&["down", &name]).status.success());
    net.wait_exit(client);
    assert_eq!(
        net.snapshot(),
        before,
        "after recovery and down, everything is as before"
    );
}

#[test]
fn unreachable_gateway_gives_the_timeout_error() {
    if !root() {
        return;
    }
    let mut net = Net::new("unr");
    let name = format!("t-{}", net.tag);
    let profile = net.profile(&name, "hybrid");
    let cl = net.cl.clone();
    let start = Instant::now();
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    let status = net.wait_exit(client);
    // 6 transmissions: 1 + 2 + 4 + 8 + 16 + 32 s.
    let waited = start.elapsed();
    assert!(!status.success());
    let log = net.log(client);
    assert!(
        log.contains("the gateway did not answer (timeout)"),
        "{log}"
    );
    assert_eq!(
        log.lines().filter(|l| l.starts_with("pqvpn: ")).count(),
        1,
        "one line: {log}"
    );
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(75),
        "{waited:?}"
    );
}
