//! End-to-end: the `pqvpn` binary's demo, unprivileged on loopback and, as root, in network
//! namespaces with TUN devices, routes, ping and TCP. Each asserts on what the demo measured.

#![expect(clippy::unwrap_used, reason = "test")]

use std::process::Command;

fn pqvpn(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pqvpn"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0")
}

#[test]
fn loopback_demo_negotiates_hybrid_and_moves_traffic() {
    let (ok, out) = pqvpn(&["demo", "--loopback", "--megabytes", "2"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("X25519 + ML-KEM-768, AES-GCM-256 (hybrid, quantum-safe)"),
        "{out}"
    );
    assert!(out.contains("2.0 MiB each way"), "{out}");
    assert!(out.contains("10.99.0.10/32"), "{out}");
}

#[test]
fn netns_demo_pings_and_moves_tcp_through_the_tunnel() {
    if !is_root() || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("skipped: needs root and /dev/net/tun (network namespaces, TUN devices)");
        return;
    }
    let before = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap()
        .stdout;
    let (ok, out) = pqvpn(&["demo", "--megabytes", "8"]);
    assert!(ok, "{out}");
    assert!(out.contains("quantum-safe"), "{out}");
    assert!(out.contains("5/5 replies from 10.99.0.1"), "{out}");
    assert!(out.contains("8 MiB client -> gateway"), "{out}");
    let after = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(before, after, "the demo removed its namespaces");
}

/// Writes a mode-600 profile (inline PSKs are refused in anything wider).
fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

const PROFILE_START: &str =
    "gateway = \"198.18.0.1\"\nlocal_id = \"c.test\"\nremote_id = \"gw.test\"\n";

#[test]
fn bad_profiles_give_one_line_reasons() {
    let dir = std::env::temp_dir().join(format!("pqvpn-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    write_private(
        &bad,
        &format!(
            "{PROFILE_START}mode = \"quantum\"\n[auth]\npsk = \"demo-test-psk-not-a-secret\"\n"
        ),
    );
    let (ok, out) = pqvpn(&["up", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("mode = \"quantum\""), "{out}");
    let unknown = dir.join("unknown.toml");
    write_private(
        &unknown,
        &format!("{PROFILE_START}colour = 1\n[auth]\npsk = \"demo-test-psk-not-a-secret\"\n"),
    );
    let (ok, out) = pqvpn(&["up", unknown.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("colour") && out.contains("line 4"), "{out}");
    let no_id = dir.join("no-id.toml");
    write_private(
        &no_id,
        "gateway = \"198.18.0.1\"\nlocal_id = \"c.test\"\n[auth]\npsk = \"demo-test-psk-not-a-secret\"\n",
    );
    let (ok, out) = pqvpn(&["up", no_id.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("no-id.toml: remote_id is missing") && out.lines().count() == 1,
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `pqvpn secret set` checks the PSK read from stdin like `pqvpn up` checks the others, before
/// anything reaches the keyring.
#[test]
fn short_psk_on_stdin_is_refused_unless_allow_weak_psk() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("pqvpn-cli-stdin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let profile = dir.join("kr.toml");
    write_private(
        &profile,
        "gateway = \"198.18.0.1\"\nlocal_id = \"stdin-test\"\nremote_id = \"gw.test\"\n\
         [auth]\npsk_keyring = true\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_pqvpn"))
        .args(["secret", "set", profile.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"short-stdin-psk\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("shorter than 20 characters") && err.contains("auth.allow_weak_psk = true"),
        "{err}"
    );
    assert!(!err.contains("short-stdin-psk"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
