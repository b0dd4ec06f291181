//! The network-namespace harness of `tests/tunnel.rs` and `tests/hostile.rs`: namespaces and
//! veths, a gateway and client profiles, the processes run in them and their logs, polling
//! `status --json`, and TCP transfers through the tunnel. Each test file adds methods only it
//! needs in an `impl Net` block of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const PSK: &str = "netns-test-psk-not-a-secret";

/// Whether the tests can run (root, a TUN device); says why not when they cannot.
pub(crate) fn root() -> bool {
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

/// `ip args`, run to completion.
pub(crate) fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().unwrap()
}

/// A gateway namespace and a client namespace joined by a veth (198.18.0.1 and 198.18.0.2 on
/// 198.18.0.0/24), and any namespaces a test adds to `extra`; removed on drop with whatever
/// runs in them.
pub(crate) struct Net {
    /// Part of every name: the test's tag (unique across the test files) and the process id.
    pub(crate) tag: String,
    pub(crate) gw: String,
    pub(crate) cl: String,
    pub(crate) extra: Vec<String>,
    /// Profiles and the children's logs.
    pub(crate) dir: PathBuf,
    pub(crate) children: Vec<Child>,
    /// Environment of every pqvpn this starts, e.g. `PQVPN_SECRETS_DIR`.
    pub(crate) env: Vec<(String, String)>,
}

impl Net {
    pub(crate) fn new(tag: &str) -> Self {
        let tag = format!("{tag}{}", std::process::id() % 100_000);
        let (gw, cl) = (format!("pqt-gw-{tag}"), format!("pqt-cl-{tag}"));
        let dir = std::env::temp_dir().join(format!("pqvpn-netns-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for ns in [&gw, &cl] {
            Self::add_ns(ns);
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
            extra: Vec::new(),
            dir,
            children: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Namespace `ns` (a leftover of the same name removed first) with its own resolv.conf
    /// and the loopback up.
    pub(crate) fn add_ns(ns: &str) {
        let _ = ip(&["netns", "del", ns]);
        assert!(ip(&["netns", "add", ns]).status.success());
        std::fs::create_dir_all(format!("/etc/netns/{ns}")).unwrap();
        std::fs::write(
            format!("/etc/netns/{ns}/resolv.conf"),
            "nameserver 192.0.2.53\n",
        )
        .unwrap();
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    /// Writes `text` to the mode-600 file `name` in the test's directory.
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// Starts `pqvpn args` in namespace `ns`, stdout and stderr to its log; returns its child
    /// index.
    pub(crate) fn spawn(&mut self, ns: &str, args: &[&str]) -> usize {
        let log =
            std::fs::File::create(self.dir.join(format!("{}.log", self.children.len()))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_pqvpn")])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// The output of child `index` so far.
    pub(crate) fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("{index}.log"))).unwrap_or_default()
    }

    /// The pid of child `index`: `ip netns exec` execs pqvpn, so it is pqvpn's.
    pub(crate) fn pid(&self, index: usize) -> u32 {
        self.children[index].id()
    }

    /// Starts `pqvpn -v gateway` (all three modes, pool 10.99.0.10-20) with `extra` after the
    /// top-level keys of its profile: its PSKs (`[auth]` or `[[clients]]` tables), after any
    /// more top-level keys; returns its child index.
    pub(crate) fn gateway(&mut self, extra: &str) -> usize {
        let config = self.write(
            "gateway.toml",
            &format!(
                "listen = \"198.18.0.1\"\nlocal_id = \"gw.test\"\nmodes = [\"hybrid\", \"pq-only\", \"classical\"]\n\
                 address = \"10.99.0.1/24\"\ndns = [\"10.99.0.1\"]\ninterface = \"pqgw{}\"\n{extra}\
                 [pool]\nipv4 = \"10.99.0.10-10.99.0.20\"\n",
                self.tag
            ),
        );
        let gw = self.gw.clone();
        let index = self.spawn(&gw, &["-v", "gateway", config.to_str().unwrap()]);
        std::thread::sleep(Duration::from_millis(300));
        index
    }

    /// A client profile `name` in `mode` with the PSK `PSK`; `ike` is the body of its `[ike]`
    /// table.
    pub(crate) fn profile(&self, name: &str, mode: &str, ike: &str) -> PathBuf {
        self.write(
            &format!("{name}.toml"),
            &format!(
                "gateway = \"198.18.0.1\"\nlocal_id = \"client.test\"\nremote_id = \"gw.test\"\nmode = \"{mode}\"\n\
                 [auth]\npsk = \"{PSK}\"\n[network]\ninterface = \"pq{}\"\n[ike]\n{ike}",
                self.tag
            ),
        )
    }

    /// Runs `pqvpn args` here (the control socket is not namespaced).
    pub(crate) fn pqvpn(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pqvpn"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }

    /// `status --json` of tunnel `name`; `None` if the command fails.
    pub(crate) fn status(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.pqvpn(&["status", "--json", name]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Polls `status --json` until connected; `None` after `timeout`.
    pub(crate) fn wait_connected(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(v) = self.status(name)
                && v["state"] == "connected"
            {
                return Some(v);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `status --json` of tunnel `name` once connected, within 20 s or a panic with the log of
    /// child `client`.
    pub(crate) fn connected(&self, name: &str, client: usize) -> serde_json::Value {
        let status = self.wait_connected(name, Duration::from_secs(20));
        assert!(
            status.is_some(),
            "not connected; client log:\n{}",
            self.log(client)
        );
        status.unwrap()
    }

    /// Whether the client reaches the gateway's tunnel address (two pings).
    pub(crate) fn ping(&self) -> bool {
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

    /// The exit status of child `index`, within `timeout` or a panic with its log.
    pub(crate) fn wait_exit(&mut self, index: usize, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
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
        for ns in [&self.gw, &self.cl].into_iter().chain(&self.extra) {
            let _ = ip(&["netns", "del", ns]);
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `bytes` over TCP from namespace `from` to a sink (`pqvpn __tcp-sink`) at `addr` in namespace
/// `to`, through the tunnel.
pub(crate) struct Transfer {
    sink: usize,
    source: Child,
    bytes: u64,
}

impl Transfer {
    pub(crate) fn start(net: &mut Net, from: &str, to: &str, addr: &str, bytes: u64) -> Self {
        let sink = net.spawn(to, &["__tcp-sink", addr]);
        std::thread::sleep(Duration::from_millis(300));
        let source = Command::new("ip")
            .args([
                "netns",
                "exec",
                from,
                env!("CARGO_BIN_EXE_pqvpn"),
                "__tcp-source",
            ])
            .args([addr, &bytes.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self {
            sink,
            source,
            bytes,
        }
    }

    /// The seconds the transfer took, after checking octet count and checksum; `None` (both
    /// ends killed) if it has not finished by `deadline`.
    pub(crate) fn finish(mut self, net: &mut Net, deadline: Instant) -> Option<f64> {
        while matches!(self.source.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                let _ = self.source.kill();
                let _ = self.source.wait();
                let _ = net.children[self.sink].kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = self.source.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        net.wait_exit(self.sink, Duration::from_secs(10));
        let source = String::from_utf8_lossy(&out.stdout).into_owned();
        let sink_out = net.log(self.sink);
        let (secs, sent_sum) = source.trim().split_once(' ').unwrap();
        let (received, received_sum) = sink_out.trim().split_once(' ').unwrap();
        assert_eq!(
            received,
            self.bytes.to_string(),
            "octets through the tunnel"
        );
        assert_eq!(received_sum, sent_sum, "checksum of the stream");
        Some(secs.parse().unwrap())
    }
}
