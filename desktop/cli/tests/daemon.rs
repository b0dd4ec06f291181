//! `pqvpn daemon` as root in network namespaces, black box through its control socket: an
//! unprivileged member of the control group lists, connects, watches, toggles PQ-only (the
//! tunnel reconnects in pq-only at once and says so) and disconnects; loosening a pq-only
//! profile is refused; a user outside the group cannot even reach the socket; garbage, a
//! 10 MB line and a wrong version get their errors while the tunnel carries on; a broken
//! profile is reported by name and skipped. As non-root every test says it is skipped.

#![cfg(target_os = "linux")]
#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "test")]

#[expect(
    dead_code,
    reason = "the shared harness: this file uses the namespaces, not the transfers"
)]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Net, PSK, root};

/// `pqvpn --socket SOCKET args` as uid 65534 with primary group `gid` and no other groups.
fn as_nobody(gid: u32, socket: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            &format!("--regid={gid}"),
            "--clear-groups",
            env!("CARGO_BIN_EXE_pqvpn"),
            "--socket",
            socket.to_str().unwrap(),
        ])
        .args(args)
        .output()
        .unwrap()
}

/// The group the daemon trusts in these tests: 65534 (`nogroup` on Debian).
const GROUP_GID: u32 = 65534;

fn group_name() -> String {
    String::from_utf8(
        Command::new("getent")
            .args(["group", &GROUP_GID.to_string()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split(':')
    .next()
    .unwrap()
    .to_owned()
}

/// `status --json NAME` as a group member, parsed.
fn status(socket: &Path, name: &str) -> serde_json::Value {
    let out = as_nobody(GROUP_GID, socket, &["status", "--json", name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls the status until `done` holds; panics with the last one and the daemon's log.
fn wait_for(
    net: &Net,
    daemon: usize,
    socket: &Path,
    name: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(socket, name);
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "not {what} within 30 s: {s}\ndaemon log:\n{}",
            net.log(daemon)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One raw request line on `stream`, its reply parsed.
fn raw(stream: &mut BufReader<UnixStream>, line: &str) -> serde_json::Value {
    stream.get_mut().write_all(line.as_bytes()).unwrap();
    stream.get_mut().write_all(b"\n").unwrap();
    let mut reply = String::new();
    stream.read_line(&mut reply).unwrap();
    serde_json::from_str(&reply)
        .map_err(|e| format!("{e}: {reply:?}"))
        .unwrap()
}

/// `pqvpn -v daemon` in the client namespace with these directories, trusting the test group;
/// returns once its socket answers.
fn start_daemon(net: &mut Net, socket: &Path, profiles: &Path, state: &Path) -> usize {
    let cl = net.cl.clone();
    let group = group_name();
    let daemon = net.spawn(
        &cl,
        &[
            "-v",
            "--socket",
            socket.to_str().unwrap(),
            "daemon",
            "--profiles",
            profiles.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--group",
            &group,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "no socket; log:\n{}",
            net.log(daemon)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon
}

#[test]
fn a_group_member_drives_the_daemon_and_hostile_clients_change_nothing() {
    if !root() {
        return;
    }
    let mut net = Net::new("dmn");
    net.gateway(&format!(
        "[[clients]]\nid = \"client.test\"\npsk = \"{PSK}\"\n"
    ));
    let profiles = net.dir.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    let tag = net.tag.clone();
    let profile = |mode: &str| {
        format!(
            "gateway = \"198.18.0.1\"\nlocal_id = \"client.test\"\nremote_id = \"gw.test\"\n\
             mode = \"{mode}\"\n[auth]\npsk = \"{PSK}\"\n[network]\ninterface = \"pq{tag}\"\n"
        )
    };
    for (name, text) in [
        ("work", profile("hybrid")),
        ("strict", profile("pq-only")),
        ("broken", "gateway = 5\n".to_owned()),
    ] {
        std::fs::rename(
            net.write(&format!("{name}.toml"), &text),
            profiles.join(format!("{name}.toml")),
        )
        .unwrap();
    }
    let socket: PathBuf = net.dir.join("run/control.sock");
    let state = net.dir.join("state");
    let daemon = start_daemon(&mut net, &socket, &profiles, &state);
    let log = net.log(daemon);
    assert!(
        log.contains("skipped a broken profile") && log.contains("broken.toml"),
        "{log}"
    );

    // A member of the group lists the profiles (the broken one is not among them).
    let out = as_nobody(GROUP_GID, &socket, &["profiles", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["strict", "work"]);
    assert_eq!(listed[1]["state"], "disconnected");

    // ...connects, and the tunnel carries traffic.
    let out = as_nobody(GROUP_GID, &socket, &["connect", "work"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let up = wait_for(&net, daemon, &socket, "work", "connected", |s| {
        s["state"] == "connected"
    });
    assert_eq!(
        (up["mode"].as_str(), up["quantum_safe"].as_bool()),
        (Some("hybrid"), Some(true)),
        "{up}"
    );
    assert!(net.ping(), "no ping through the daemon's tunnel");

    // ...watches it: the stream starts with the current status.
    let mut watcher = Command::new("setpriv")
        .args([
            "--reuid=65534",
            &format!("--regid={GROUP_GID}"),
            "--clear-groups",
        ])
        .arg(env!("CARGO_BIN_EXE_pqvpn"))
        .args([
            "--socket",
            socket.to_str().unwrap(),
            "status",
            "--watch",
            "--json",
            "work",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(watcher.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["state"], "connected", "{first}");

    // ...turns PQ-only on: the tunnel reconnects in pq-only at once, and it is remembered.
    let out = as_nobody(GROUP_GID, &socket, &["pq-only", "work", "on"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("reconnects in the new mode"));
    let pq = wait_for(&net, daemon, &socket, "work", "pq-only", |s| {
        s["state"] == "connected" && s["mode"] == "pq-only"
    });
    assert_eq!(pq["key_exchanges"][0], "ML-KEM-768", "{pq}");
    let settings = std::fs::read_to_string(state.join("settings.json")).unwrap();
    assert!(settings.contains("\"work\": true"), "{settings}");
    assert!(net.ping(), "no ping after the switch to pq-only");

    // A pq-only profile cannot be loosened.
    let out = as_nobody(GROUP_GID, &socket, &["pq-only", "strict", "off"]);
    assert!(!out.status.success());
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert!(refusal.contains("cannot be turned off"), "{refusal}");

    // Someone outside the group cannot reach the socket.
    let out = as_nobody(1, &socket, &["profiles"]);
    assert!(!out.status.success());
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert!(
        refusal.contains("only root and members of group"),
        "{refusal}"
    );

    // Hostile clients: garbage, a wrong version, a line cut short, a 10 MB line.
    let mut stream = BufReader::new(UnixStream::connect(&socket).unwrap());
    let garbage = raw(&mut stream, "garbage");
    assert_eq!(garbage["error"]["code"], "bad_request", "{garbage}");
    assert_eq!(
        raw(&mut stream, r#"{"cmd":"reboot"}"#)["error"]["code"],
        "bad_request"
    );
    assert_eq!(
        raw(&mut stream, r#"{"cmd":"hello","version":99}"#)["error"]["code"],
        "unsupported_version"
    );
    assert_eq!(
        raw(&mut stream, r#"{"cmd":"status","profile":"nope"}"#)["error"]["code"],
        "unknown_profile"
    );
    let hello = raw(&mut stream, r#"{"cmd":"hello","version":1}"#);
    assert_eq!(hello["hello"]["version"], 1, "{hello}");
    let mut cut = UnixStream::connect(&socket).unwrap();
    cut.write_all(br#"{"cmd":"disconnect","prof"#).unwrap();
    drop(cut);
    let mut big = UnixStream::connect(&socket).unwrap();
    let _ = big.write_all(&vec![b'x'; 10 << 20]);
    let mut reply = String::new();
    BufReader::new(&big).read_line(&mut reply).unwrap();
    assert!(reply.contains("too_large"), "{reply}");
    drop(big);
    let still = status(&socket, "work");
    assert_eq!(
        (still["state"].as_str(), still["mode"].as_str()),
        (Some("connected"), Some("pq-only")),
        "{still}"
    );
    assert!(net.ping(), "the tunnel suffered from hostile clients");

    // Disconnect: the watcher saw it all, the network is restored.
    let out = as_nobody(GROUP_GID, &socket, &["disconnect", "work"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(&net, daemon, &socket, "work", "disconnected", |s| {
        s["state"] == "disconnected"
    });
    assert!(
        !common::ip(&["-n", &net.cl, "link", "show", &format!("pq{}", net.tag)])
            .status
            .success(),
        "the TUN device is gone"
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
    Command::new("kill")
        .arg(net.pid(daemon).to_string())
        .status()
        .unwrap();
    assert!(
        net.wait_exit(daemon, Duration::from_secs(20)).success(),
        "{}",
        net.log(daemon)
    );
}

/// `pqvpn --socket SOCKET args` as `uid`/`gid` (no other groups) with `input` on stdin.
fn as_user_with_input(uid: u32, gid: u32, socket: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            env!("CARGO_BIN_EXE_pqvpn"),
            "--socket",
            socket.to_str().unwrap(),
        ])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Issue 19: the daemon reads a profile's PSK at each connect from a store that survives a
/// restart (and a reboot: sealed files, not the kernel keyring), so a PSK stored after it
/// started is found; and a profile with `user_credentials = true` uses each user's own PSK,
/// handed over the socket.
#[test]
fn stored_secrets_survive_a_restart_and_users_bring_their_own() {
    if !root() {
        return;
    }
    const CAROL: &str = "carol-own-psk-not-a-secret-0123456789";
    let mut net = Net::new("dsc");
    let secrets = net.dir.join("secrets");
    net.env
        .push(("PQVPN_SECRETS_DIR".into(), secrets.to_str().unwrap().into()));
    net.gateway(&format!(
        "[[clients]]\nid = \"client.test\"\npsk = \"{PSK}\"\n\
         [[clients]]\nid = \"carol.test\"\npsk = \"{CAROL}\"\n"
    ));
    let profiles = net.dir.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    let tag = net.tag.clone();
    for (name, id, auth) in [
        ("stored", "client.test", "psk_keyring = true"),
        ("mine", "carol.test", "user_credentials = true"),
    ] {
        let text = format!(
            "gateway = \"198.18.0.1\"\nlocal_id = \"{id}\"\nremote_id = \"gw.test\"\n\
             [auth]\n{auth}\n[network]\ninterface = \"pq{tag}\"\n"
        );
        std::fs::rename(
            net.write(&format!("{name}.toml"), &text),
            profiles.join(format!("{name}.toml")),
        )
        .unwrap();
    }
    let socket: PathBuf = net.dir.join("run/control.sock");
    let state = net.dir.join("state");
    let start = |net: &mut Net| start_daemon(net, &socket, &profiles, &state);
    let stop = |net: &mut Net, daemon: usize| {
        Command::new("kill")
            .arg(net.pid(daemon).to_string())
            .status()
            .unwrap();
        assert!(net.wait_exit(daemon, Duration::from_secs(20)).success());
    };
    let connect = |name: &str| as_nobody(GROUP_GID, &socket, &["connect", name]);

    // No PSK stored yet: the profile is listed all the same; connecting says what to do.
    let daemon = start(&mut net);
    let out = as_nobody(GROUP_GID, &socket, &["profiles", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(connect("stored").status.success());
    let failed = wait_for(&net, daemon, &socket, "stored", "error", |s| {
        s["state"] == "error"
    });
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("pqvpn secret set"), "{failed}");

    // Root stores it: sealed on disk, found at the next connect without a restart.
    let out = Command::new(env!("CARGO_BIN_EXE_pqvpn"))
        .args([
            "secret",
            "set",
            profiles.join("stored.toml").to_str().unwrap(),
        ])
        .env("PQVPN_SECRETS_DIR", &secrets)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(format!("{PSK}\n").as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("survives reboots"),
        "{}",
        stderr(&out)
    );
    let files: Vec<_> = std::fs::read_dir(&secrets).unwrap().collect();
    assert_eq!(files.len(), 1);
    let sealed = std::fs::read(files[0].as_ref().unwrap().path()).unwrap();
    assert!(
        !sealed.windows(PSK.len()).any(|w| w == PSK.as_bytes()),
        "the PSK is on disk in clear"
    );
    assert!(connect("stored").status.success());
    wait_for(&net, daemon, &socket, "stored", "connected", |s| {
        s["state"] == "connected"
    });
    assert!(net.ping(), "no ping with the stored PSK");

    // A new daemon process (as after a reboot) finds it again.
    stop(&mut net, daemon);
    let daemon = start(&mut net);
    assert!(connect("stored").status.success());
    wait_for(
        &net,
        daemon,
        &socket,
        "stored",
        "connected after a restart",
        |s| s["state"] == "connected",
    );
    assert!(
        as_nobody(GROUP_GID, &socket, &["disconnect", "stored"])
            .status
            .success()
    );
    wait_for(&net, daemon, &socket, "stored", "disconnected", |s| {
        s["state"] == "disconnected"
    });

    // `user_credentials = true`: without one of your own, connecting is refused, saying so.
    let out = connect("mine");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("have stored none"),
        "{}",
        stderr(&out)
    );
    // Outsiders cannot hand one over; the administrator's PSK is not a user's to set; a
    // weak one is refused.
    let set = |uid, gid, name: &str, psk: &str| {
        as_user_with_input(
            uid,
            gid,
            &socket,
            &["credential", "set", name],
            &format!("{psk}\n"),
        )
    };
    let out = set(65534, 1, "mine", CAROL);
    assert!(
        stderr(&out).contains("only root and members of group"),
        "{}",
        stderr(&out)
    );
    let out = set(65534, GROUP_GID, "stored", CAROL);
    assert!(
        stderr(&out).contains("administrator's PSK"),
        "{}",
        stderr(&out)
    );
    let out = set(65534, GROUP_GID, "mine", "short");
    assert!(stderr(&out).contains("shorter than"), "{}", stderr(&out));
    // Carol's own: the gateway knows carol.test by it.
    let out = set(65534, GROUP_GID, "mine", CAROL);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(connect("mine").status.success());
    let up = wait_for(&net, daemon, &socket, "mine", "connected", |s| {
        s["state"] == "connected"
    });
    assert_eq!(up["quantum_safe"], true, "{up}");
    assert!(net.ping(), "no ping with the user's own PSK");
    // Another user (root) cannot take over Carol's session, and has no credential of their own.
    let root_connect = || {
        Command::new(env!("CARGO_BIN_EXE_pqvpn"))
            .args(["--socket", socket.to_str().unwrap(), "connect", "mine"])
            .output()
            .unwrap()
    };
    let out = root_connect();
    assert!(
        stderr(&out).contains("connected with the credential of uid 65534"),
        "{}",
        stderr(&out)
    );
    assert!(
        as_nobody(GROUP_GID, &socket, &["disconnect", "mine"])
            .status
            .success()
    );
    wait_for(&net, daemon, &socket, "mine", "disconnected", |s| {
        s["state"] == "disconnected"
    });
    let out = root_connect();
    assert!(
        stderr(&out).contains("have stored none"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&secrets).unwrap().count(), 2);
    let out = as_user_with_input(
        65534,
        GROUP_GID,
        &socket,
        &["credential", "delete", "mine"],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(&secrets).unwrap().count(), 1);
    stop(&mut net, daemon);
}

/// `cmd args` in namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap()
}

/// Whether the client namespace blocks a datagram to an outside address (the kill switch
/// answers `EPERM`; without it the packet would leave on the uplink, or, while a full tunnel
/// is up, go into the tunnel).
fn outside_blocked(ns: &str) -> bool {
    let out = in_ns(
        ns,
        &[
            "python3",
            "-c",
            "import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\
             .sendto(b'x', ('203.0.113.1', 9))\n    print('sent')\nexcept PermissionError:\n    \
             print('blocked')",
        ],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("sent") || said.contains("blocked"), "{out:?}");
    said.contains("blocked")
}

/// A daemon with one full-tunnel profile, `work` (its kill switch on), and that tunnel
/// connected by a group member.
struct Connected {
    profiles: PathBuf,
    /// The profile's text.
    text: String,
    socket: PathBuf,
    state: PathBuf,
    daemon: usize,
    status: serde_json::Value,
}

fn daemon_connected(net: &mut Net) -> Connected {
    let profiles = net.dir.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    let tag = net.tag.clone();
    let text = format!(
        "gateway = \"198.18.0.1\"\nlocal_id = \"client.test\"\nremote_id = \"gw.test\"\n\
         [auth]\npsk = \"{PSK}\"\n[network]\ninterface = \"pq{tag}\"\n"
    );
    std::fs::rename(net.write("work.toml", &text), profiles.join("work.toml")).unwrap();
    let socket: PathBuf = net.dir.join("run/control.sock");
    let state = net.dir.join("state");
    let daemon = start_daemon(net, &socket, &profiles, &state);
    assert!(
        as_nobody(GROUP_GID, &socket, &["connect", "work"])
            .status
            .success()
    );
    let status = wait_for(net, daemon, &socket, "work", "connected", |s| {
        s["state"] == "connected"
    });
    Connected {
        profiles,
        text,
        socket,
        state,
        daemon,
        status,
    }
}

/// Issue 15: the daemon holds a full tunnel's kill switch. When the daemon is SIGKILLed the
/// TUN and its routes vanish but the kill switch stays (fail closed: nothing leaves on the
/// uplink); the restarted daemon connects the tunnel that was up again under it, and a
/// disconnect lifts it, leaving the ruleset as it was.
#[test]
fn the_kill_switch_survives_a_daemon_crash_and_the_restart_reconnects() {
    if !root() {
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        println!("skipped: the `nft` tool (nftables) is needed to inspect the kill switch");
        return;
    }
    let mut net = Net::new("dks");
    net.gateway(&format!(
        "[[clients]]\nid = \"client.test\"\npsk = \"{PSK}\"\n"
    ));
    // A way out that bypasses the tunnel: what would leak without the kill switch.
    assert!(
        common::ip(&[
            "-n",
            &net.cl,
            "route",
            "add",
            "default",
            "via",
            "198.18.0.1"
        ])
        .status
        .success()
    );
    let before = in_ns(&net.cl, &["nft", "list", "ruleset"]).stdout;
    assert!(!outside_blocked(&net.cl));
    let Connected {
        profiles,
        text,
        socket,
        state,
        daemon,
        status: up,
    } = daemon_connected(&mut net);
    assert_eq!(up["kill_switch"], true, "{up}");
    assert!(net.ping());

    Command::new("kill")
        .args(["-KILL", &net.pid(daemon).to_string()])
        .status()
        .unwrap();
    let _ = net.wait_exit(daemon, Duration::from_secs(10));
    assert!(
        !common::ip(&["-n", &net.cl, "link", "show", &format!("pq{}", net.tag)])
            .status
            .success(),
        "the TUN died with the daemon"
    );
    assert!(outside_blocked(&net.cl), "fail closed after the crash");

    let _ = std::fs::remove_file(&socket);
    let daemon = start_daemon(&mut net, &socket, &profiles, &state);
    let back = wait_for(&net, daemon, &socket, "work", "connected again", |s| {
        s["state"] == "connected"
    });
    assert!(
        net.log(daemon).contains("was up when the daemon stopped"),
        "{}",
        net.log(daemon)
    );
    assert_eq!(back["kill_switch"], true, "{back}");
    assert!(net.ping(), "the tunnel carries traffic again");

    assert!(
        as_nobody(GROUP_GID, &socket, &["disconnect", "work"])
            .status
            .success()
    );
    let down = wait_for(&net, daemon, &socket, "work", "disconnected", |s| {
        s["state"] == "disconnected"
    });
    assert_eq!(down["kill_switch"], false, "{down}");
    assert!(
        !outside_blocked(&net.cl),
        "disconnect lifts the kill switch"
    );
    assert_eq!(
        String::from_utf8_lossy(&in_ns(&net.cl, &["nft", "list", "ruleset"]).stdout),
        String::from_utf8_lossy(&before),
        "the ruleset is what it was"
    );

    // Crash again, and come back with a profile the gateway now refuses: the resumed tunnel
    // fails for good, and still blocks (it had been up) until the user disconnects.
    assert!(
        as_nobody(GROUP_GID, &socket, &["connect", "work"])
            .status
            .success()
    );
    wait_for(&net, daemon, &socket, "work", "connected", |s| {
        s["state"] == "connected"
    });
    Command::new("kill")
        .args(["-KILL", &net.pid(daemon).to_string()])
        .status()
        .unwrap();
    let _ = net.wait_exit(daemon, Duration::from_secs(10));
    let _ = std::fs::remove_file(&socket);
    let wrong = text.replace(PSK, "a-psk-the-gateway-does-not-know-at-all");
    std::fs::rename(net.write("work.toml", &wrong), profiles.join("work.toml")).unwrap();
    let daemon = start_daemon(&mut net, &socket, &profiles, &state);
    let refused = wait_for(&net, daemon, &socket, "work", "refused", |s| {
        s["state"] == "error"
    });
    assert_eq!(refused["kill_switch"], true, "{refused}");
    assert!(outside_blocked(&net.cl), "a refused resume keeps the block");
    assert!(
        as_nobody(GROUP_GID, &socket, &["disconnect", "work"])
            .status
            .success()
    );
    wait_for(&net, daemon, &socket, "work", "disconnected", |s| {
        s["state"] == "disconnected"
    });
    assert!(
        !outside_blocked(&net.cl),
        "disconnect lifts the adopted block"
    );
    assert_eq!(
        String::from_utf8_lossy(&in_ns(&net.cl, &["nft", "list", "ruleset"]).stdout),
        String::from_utf8_lossy(&before),
    );
    Command::new("kill")
        .arg(net.pid(daemon).to_string())
        .status()
        .unwrap();
    assert!(
        net.wait_exit(daemon, Duration::from_secs(20)).success(),
        "{}",
        net.log(daemon)
    );
}

/// Issue 15: a daemon frozen for 60 s (`SIGSTOP`, as a laptop's sleep looks to it) while the
/// gateway restarted is connected again within seconds of `SIGCONT`: it notices the gap,
/// probes the gateway with one DPD round instead of waiting for the next DPD interval and its
/// retransmissions (half a minute and more), and reconnects.
#[test]
fn a_frozen_daemon_is_connected_again_within_seconds_of_waking() {
    if !root() {
        return;
    }
    let mut net = Net::new("dwk");
    let clients = format!("[[clients]]\nid = \"client.test\"\npsk = \"{PSK}\"\n");
    let gateway = net.gateway(&clients);
    let Connected {
        socket,
        daemon,
        status: up,
        ..
    } = daemon_connected(&mut net);
    assert_eq!(up["reconnects"], 0, "{up}");
    assert!(net.ping());

    let pid = net.pid(daemon).to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_secs(30));
    // Meanwhile the gateway restarts: the tunnel the daemon wakes up with is stale.
    Command::new("kill")
        .arg(net.pid(gateway).to_string())
        .status()
        .unwrap();
    let _ = net.wait_exit(gateway, Duration::from_secs(10));
    net.gateway(&clients);
    std::thread::sleep(Duration::from_secs(30));
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let woke = Instant::now();
    let back = wait_for(&net, daemon, &socket, "work", "connected again", |s| {
        s["state"] == "connected" && s["reconnects"].as_u64().is_some_and(|n| n >= 1)
    });
    println!(
        "connected again {:.2} s after SIGCONT (60 s frozen)",
        woke.elapsed().as_secs_f64()
    );
    assert!(net.ping(), "{back}");
    // Found by the probe, not by the DPD interval and its retransmissions.
    let log = net.log(daemon);
    assert!(
        log.contains("woke up") && log.contains("checking the gateway after a wake"),
        "{log}"
    );
    assert!(
        as_nobody(GROUP_GID, &socket, &["disconnect", "work"])
            .status
            .success()
    );
    Command::new("kill").arg(&pid).status().unwrap();
    assert!(
        net.wait_exit(daemon, Duration::from_secs(20)).success(),
        "{}",
        net.log(daemon)
    );
}
