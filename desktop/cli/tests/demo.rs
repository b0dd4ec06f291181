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

#[test]
fn bad_profiles_give_one_line_reasons() {
    let dir = std::env::temp_dir().join(format!("pqvpn-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "gateway = \"198.18.0.1\"\nlocal_id = \"c\"\nmode = \"quantum\"\n[auth]\npsk = \"x\"\n",
    )
    .unwrap();
    let (ok, out) = pqvpn(&["up", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("mode = \"quantum\""), "{out}");
    let unknown = dir.join("unknown.toml");
    std::fs::write(
        &unknown,
        "gateway = \"198.18.0.1\"\nlocal_id = \"c\"\ncolour = 1\n[auth]\npsk = \"x\"\n",
    )
    .unwrap();
    let (ok, out) = pqvpn(&["up", unknown.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("colour") && out.contains("line 3"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
