//! `pqvpn up`, `status --json`, `down` and `gateway` as root in network namespaces that each
//! test creates and removes: the JSON while up, exact restoration of routes, rules, addresses
//! and DNS after `down`, SIGTERM and a crash, and the error for an unreachable gateway.
//! As non-root every test says it is skipped and why.

#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "test")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Net, PSK, Transfer, ip, root};

/// How long `pqvpn` may take to exit after `down`, a signal or giving up.
const EXIT: Duration = Duration::from_secs(90);

/// The gateway's PSKs: one for each client identity (the tests connect as `client.test`).
fn clients() -> String {
    format!(
        "[[clients]]\nid = \"client.test\"\npsk = \"{PSK}\"\n\
         [[clients]]\nid = \"other.test\"\npsk = \"other-client-psk-not-a-secret\"\n"
    )
}

impl Net {
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
        net.gateway(&clients());
        let before = net.stable_snapshot();
        let name = format!("t-{}", net.tag);
        let profile = net.profile(&name, mode, "");
        let cl = net.cl.clone();
        let client = net.spawn(&cl, &["-v", "up", profile.to_str().unwrap()]);
        let status = net.connected(&name, client);
        assert_eq!(status["mode"], mode);
        assert_eq!(status["quantum_safe"], safe);
        let mut kes = vec![ke];
        kes.extend(addke);
        assert_eq!(status["key_exchanges"], serde_json::json!(kes));
        assert_eq!(status["ike_cipher"], "AES-GCM-256");
        assert_eq!(status["prf"], "HMAC-SHA2-384");
        assert_eq!(status["esp_cipher"], "AES-GCM-256");
        assert!(status["handshake_ms"].as_f64().is_some_and(|ms| ms > 0.0));
        assert_eq!(status["virtual_ips"], serde_json::json!(["10.99.0.10/32"]));
        assert_eq!(status["dns"], serde_json::json!(["10.99.0.1"]));
        assert!(status["reason"].is_null());
        assert!(
            net.ping(),
            "ping through the {mode} tunnel; log:\n{}",
            net.log(client)
        );
        let resolv = std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", net.cl)).unwrap();
        assert!(resolv.contains("10.99.0.1"), "pushed DNS in use: {resolv}");
        assert_ne!(net.snapshot(), before, "the tunnel changed routes");
        assert!(net.pqvpn(&["down", &name]).status.success());
        assert!(net.wait_exit(client, EXIT).success(), "{}", net.log(client));
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
    let secs = Transfer::start(net, from, to, addr, bytes)
        .finish(net, Instant::now() + Duration::from_secs(300));
    assert!(
        secs.is_some(),
        "{bytes} octets to {addr} not through in 300 s"
    );
    secs.unwrap()
}

#[test]
fn hundred_megabytes_both_ways_and_ping_both_ways() {
    if !root() {
        return;
    }
    let mut net = Net::new("tcp");
    net.gateway(&clients());
    let name = format!("t-{}", net.tag);
    let profile = net.profile(&name, "hybrid", "");
    let (cl, gw) = (net.cl.clone(), net.gw.clone());
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    net.connected(&name, client);
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
    let status = net.status(&name).unwrap();
    assert_eq!(status["state"], "connected");
    assert!(net.pqvpn(&["down", &name]).status.success());
    net.wait_exit(client, EXIT);
}

#[test]
fn sigterm_restores_and_a_crash_is_undone_at_the_next_start() {
    if !root() {
        return;
    }
    let mut net = Net::new("sig");
    net.gateway(&clients());
    let before = net.stable_snapshot();
    let name = format!("t-{}", net.tag);
    let profile = net.profile(&name, "hybrid", "");
    let cl = net.cl.clone();

    // SIGTERM.
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    net.connected(&name, client);
    let pid = net.pid(client).to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    net.wait_exit(client, EXIT);
    assert_eq!(net.snapshot(), before, "SIGTERM restored everything");

    // SIGKILL leaves the routes and DNS behind; the next start undoes them.
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    net.connected(&name, client);
    net.children[client].kill().unwrap();
    net.wait_exit(client, EXIT);
    assert_ne!(net.snapshot(), before, "a crash leaves state behind");
    let _ = std::fs::remove_file(format!("/run/pqvpn/{name}.sock"));
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    net.connected(&name, client);
    assert!(
        net.log(client).contains("undid leftovers of a crashed run"),
        "{}",
        net.log(client)
    );
    assert!(net.pqvpn(&["down", &name]).status.success());
    net.wait_exit(client, EXIT);
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
    let profile = net.profile(&name, "hybrid", "");
    let cl = net.cl.clone();
    let start = Instant::now();
    let client = net.spawn(&cl, &["up", "--no-reconnect", profile.to_str().unwrap()]);
    let status = net.wait_exit(client, EXIT);
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

/// Issue 19: without `--no-reconnect`, `pqvpn up` keeps trying an unreachable gateway: the
/// status says `reconnecting`, with the attempt and the reason, until `pqvpn down`, which ends
/// it cleanly.
#[test]
fn up_keeps_retrying_an_unreachable_gateway_until_down() {
    if !root() {
        return;
    }
    let mut net = Net::new("rcn");
    let name = format!("t-{}", net.tag);
    // Two transmissions (1 s apart, then 2 s): each attempt gives up after 3 s.
    let profile = net.profile(&name, "hybrid", "retransmit_tries = 2\n");
    let cl = net.cl.clone();
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = net.status(&name);
        if let Some(s) = status.as_ref().filter(|s| s["attempt"].as_u64() >= Some(2)) {
            break s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no second attempt: {status:?}\n{}",
            net.log(client)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["state"], "reconnecting", "{status}");
    assert_eq!(status["mode"], "hybrid", "{status}");
    assert!(
        status["reason"]
            .as_str()
            .is_some_and(|e| e.contains("did not answer")),
        "{status}"
    );
    let text = net.pqvpn(&["status", &name]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("reconnecting (attempt") && text.contains("reason:"),
        "{text}"
    );
    assert!(net.pqvpn(&["down", &name]).status.success());
    let exit = net.wait_exit(client, Duration::from_secs(10));
    assert!(exit.success(), "{}", net.log(client));
    assert!(net.log(client).contains("pqvpn: reconnecting (attempt 1)"));
}

/// Issue 15: a new uplink address (a laptop moving networks) and a link that goes down and
/// comes back reconnect at once: the network monitor sees the path to the gateway change and
/// the supervisor starts a new IKE SA, long before dead-peer detection (a minute here) would
/// notice anything. Ten of each; the recovery times are printed (median and max), not
/// asserted.
#[test]
fn a_new_uplink_address_or_a_link_flap_reconnects_at_once() {
    if !root() {
        return;
    }
    let mut net = Net::new("nch");
    net.gateway(&clients());
    let name = format!("t-{}", net.tag);
    let profile = net.profile(&name, "hybrid", "dpd_delay = \"60s\"\n");
    let cl = net.cl.clone();
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    let up = net.connected(&name, client);
    assert_eq!(up["reconnects"], 0, "{up}");
    assert!(net.ping());

    let veth = format!("c{}", net.tag);
    let ip_ok = |args: &[&str]| assert!(ip(args).status.success(), "ip {args:?}");
    // Waits for the `n`th reconnect; the time since `from`.
    let reconnected = |n: u64, from: Instant| reconnected(&net, &name, client, n, from);
    let mut reconnects = 0;
    let mut moves = Vec::new();
    for round in 0..10 {
        let (old, new) = if round % 2 == 0 {
            ("198.18.0.2/24", "198.18.0.3/24")
        } else {
            ("198.18.0.3/24", "198.18.0.2/24")
        };
        let moved = Instant::now();
        ip_ok(&["-n", &cl, "addr", "del", old, "dev", &veth]);
        ip_ok(&["-n", &cl, "addr", "add", new, "dev", &veth]);
        reconnects += 1;
        moves.push(reconnected(reconnects, moved));
        assert!(net.ping(), "traffic flows from {new}");
    }
    summary("new uplink address", moves);
    let mut flaps = Vec::new();
    for _ in 0..10 {
        // Counted before the flap: the reconnect may be done before the next status.
        reconnects = net.status(&name).unwrap()["reconnects"].as_u64().unwrap() + 1;
        ip_ok(&["-n", &cl, "link", "set", &veth, "down"]);
        std::thread::sleep(Duration::from_millis(500));
        let back = Instant::now();
        ip_ok(&["-n", &cl, "link", "set", &veth, "up"]);
        flaps.push(reconnected(reconnects, back));
        assert!(net.ping(), "traffic flows after the link came back");
    }
    summary("link down 0.5 s and up", flaps);
    assert!(
        net.log(client).contains("the network changed"),
        "{}",
        net.log(client)
    );
    assert!(net.pqvpn(&["down", &name]).status.success());
    assert!(net.wait_exit(client, EXIT).success(), "{}", net.log(client));
}

/// Waits until tunnel `name` (run by child `client`) has reconnected `n` times in all and is
/// connected; the seconds since `from`.
fn reconnected(net: &Net, name: &str, client: usize, n: u64, from: Instant) -> f64 {
    let deadline = from + Duration::from_secs(20);
    loop {
        if net.status(name).is_some_and(|s| {
            s["state"] == "connected" && s["reconnects"].as_u64().is_some_and(|r| r >= n)
        }) {
            return from.elapsed().as_secs_f64();
        }
        assert!(
            Instant::now() < deadline,
            "no reconnect {n}: {:?}\n{}",
            net.status(name),
            net.log(client)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Prints the median and the maximum of recovery times.
fn summary(what: &str, mut times: Vec<f64>) {
    times.sort_by(f64::total_cmp);
    println!(
        "{what}: reconnected after median {:.2} s, max {:.2} s (n = {})",
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
}

/// Issue 15: the default route moving to another uplink (the gateway is off both links, on
/// its loopback)
/// reconnects at once; ten moves, the recovery times printed, not asserted.
#[test]
fn a_default_route_change_reconnects_at_once() {
    if !root() {
        return;
    }
    let mut net = Net::new("drc");
    let (gw, cl) = (net.gw.clone(), net.cl.clone());
    let (g2, c2, first) = (
        format!("h{}", net.tag),
        format!("d{}", net.tag),
        format!("c{}", net.tag),
    );
    for args in [
        vec![
            "link", "add", &g2, "netns", &gw, "type", "veth", "peer", "name", &c2, "netns", &cl,
        ],
        vec!["-n", &gw, "addr", "add", "198.19.0.1/24", "dev", &g2],
        vec!["-n", &cl, "addr", "add", "198.19.0.2/24", "dev", &c2],
        vec!["-n", &gw, "link", "set", &g2, "up"],
        vec!["-n", &cl, "link", "set", &c2, "up"],
        vec!["-n", &gw, "addr", "add", "203.0.113.1/32", "dev", "lo"],
        vec!["-n", &gw, "link", "set", "lo", "up"],
        vec!["-n", &cl, "route", "add", "default", "via", "198.18.0.1"],
    ] {
        assert!(ip(&args).status.success(), "ip {args:?}");
    }
    let gateway = net.write(
        "gateway-off-link.toml",
        &format!(
            "listen = \"203.0.113.1\"\nlocal_id = \"gw.test\"\naddress = \"10.99.0.1/24\"\n\
             interface = \"pqgw{}\"\n{}[pool]\nipv4 = \"10.99.0.10-10.99.0.20\"\n",
            net.tag,
            clients()
        ),
    );
    net.spawn(&gw, &["-v", "gateway", gateway.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(300));
    let name = format!("t-{}", net.tag);
    let profile = net.write(
        &format!("{name}.toml"),
        &format!(
            "gateway = \"203.0.113.1\"\nlocal_id = \"client.test\"\nremote_id = \"gw.test\"\n\
             [auth]\npsk = \"{PSK}\"\n[network]\ninterface = \"pq{}\"\n[ike]\ndpd_delay = \"60s\"\n",
            net.tag
        ),
    );
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    net.connected(&name, client);
    assert!(net.ping());
    let mut times = Vec::new();
    for round in 0..10u64 {
        let (via, dev) = if round % 2 == 0 {
            ("198.19.0.1", &c2)
        } else {
            ("198.18.0.1", &first)
        };
        let moved = Instant::now();
        let args = [
            "-n", &cl, "route", "replace", "default", "via", via, "dev", dev,
        ];
        assert!(ip(&args).status.success(), "ip {args:?}");
        times.push(reconnected(&net, &name, client, round + 1, moved));
        assert!(net.ping(), "traffic flows via {via}");
    }
    summary("default route to the other uplink", times);
    assert!(net.pqvpn(&["down", &name]).status.success());
    assert!(net.wait_exit(client, EXIT).success(), "{}", net.log(client));
}

/// Whether one UDP datagram to `to` (`ip:port`) leaves the client namespace, or the kill
/// switch's table refuses it (`EPERM`).
fn udp_sent(net: &Net, to: &str) -> bool {
    let (host, port) = to.rsplit_once(':').unwrap();
    Command::new("ip")
        .args(["netns", "exec", &net.cl, "bash", "-c"])
        .arg(format!("echo probe > /dev/udp/{host}/{port}"))
        .output()
        .unwrap()
        .status
        .success()
}

/// Issue 15: with pushed DNS, DNS leaves only through the tunnel. A split tunnel (no kill
/// switch) reaches the pushed server through the tunnel and cannot query any other resolver
/// (the network's, a public one), while its other traffic still goes outside; a full tunnel
/// carries all DNS. After `down` everything is as before.
#[test]
fn dns_leaves_only_through_the_tunnel_split_and_full() {
    if !root() {
        return;
    }
    let mut net = Net::new("dns");
    net.gateway(&clients());
    let name = format!("t-{}", net.tag);
    let cl = net.cl.clone();
    let outside_dns = ["198.18.0.1:53", "203.0.113.53:53", "203.0.113.53:853"];
    // The split tunnel's route sends nothing but its subnet in; outside DNS goes via the veth.
    assert!(
        ip(&["-n", &cl, "route", "add", "default", "via", "198.18.0.1"])
            .status
            .success()
    );
    for dns in outside_dns {
        assert!(udp_sent(&net, dns), "before: {dns}");
    }

    for full in [false, true] {
        let profile = net.write(
            &format!("{name}.toml"),
            &format!(
                "gateway = \"198.18.0.1\"\nlocal_id = \"client.test\"\nremote_id = \"gw.test\"\n\
                 [auth]\npsk = \"{PSK}\"\n[network]\ninterface = \"pq{}\"\nfull_tunnel = {full}\n\
                 dns = true\n{}",
                net.tag,
                if full {
                    ""
                } else {
                    "routes = [\"10.99.0.0/24\"]\nkill_switch = \"auto\"\n"
                }
            ),
        );
        let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
        let up = net.connected(&name, client);
        assert_eq!(up["kill_switch"], full, "{up}");
        assert_eq!(up["dns"][0], "10.99.0.1", "{up}");
        let via = String::from_utf8_lossy(&ip(&["-n", &cl, "route", "get", "10.99.0.1"]).stdout)
            .into_owned();
        assert!(via.contains(&format!("dev pq{}", net.tag)), "{via}");
        assert!(
            udp_sent(&net, "10.99.0.1:53"),
            "the pushed server, through the tunnel"
        );
        if full {
            // Public resolvers are reached through the tunnel (the kill switch drops anything
            // else: a send that succeeds left through the TUN); the uplink's own subnet stays
            // outside the tunnel (LAN routes), where the kill switch drops it: no leak either.
            for dns in ["203.0.113.53:53", "203.0.113.53:853"] {
                assert!(udp_sent(&net, dns), "full tunnel: {dns} through the tunnel");
            }
            assert!(
                !udp_sent(&net, "198.18.0.1:53"),
                "the LAN's resolver is blocked"
            );
        } else {
            for dns in outside_dns {
                assert!(!udp_sent(&net, dns), "split tunnel: {dns} must be blocked");
            }
            assert!(
                udp_sent(&net, "203.0.113.53:9"),
                "other traffic stays outside"
            );
        }
        assert!(net.pqvpn(&["down", &name]).status.success());
        assert!(net.wait_exit(client, EXIT).success(), "{}", net.log(client));
        for dns in outside_dns {
            assert!(udp_sent(&net, dns), "after down: {dns}");
        }
    }
}

/// Issue 15: the kill switch over an IPv6 uplink. The gateway is reached at `fd18::1`; while
/// it is gone IPv6 and IPv4 go into the tunnel and wait; it comes back and the tunnel
/// reconnects; after a crash neither family leaves; the next run takes over, and `down`
/// leaves no rule behind.
#[test]
fn the_kill_switch_holds_over_an_ipv6_uplink() {
    if !root() {
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        println!("skipped: the `nft` tool (nftables) is needed to inspect the kill switch");
        return;
    }
    let mut net = Net::new("ks6");
    let (gw, cl) = (net.gw.clone(), net.cl.clone());
    let (vg, vc) = (format!("g{}", net.tag), format!("c{}", net.tag));
    for args in [
        vec!["-n", &gw, "addr", "add", "fd18::1/64", "dev", &vg, "nodad"],
        vec!["-n", &cl, "addr", "add", "fd18::2/64", "dev", &vc, "nodad"],
        vec!["-n", &cl, "route", "add", "default", "via", "198.18.0.1"],
        vec!["-n", &cl, "-6", "route", "add", "default", "via", "fd18::1"],
    ] {
        assert!(ip(&args).status.success(), "ip {args:?}");
    }
    let (outside4, outside6) = ("203.0.113.1:9", "2001:db8::1:9");
    assert!(udp_sent(&net, outside4) && udp_sent(&net, outside6));
    let before = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "exec", &cl, "nft", "list", "ruleset"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    let gateway_toml = net.write(
        "gateway6.toml",
        &format!(
            "listen = \"fd18::1\"\nlocal_id = \"gw.test\"\naddress = \"10.99.0.1/24\"\n\
             interface = \"pqgw{}\"\n{}[pool]\nipv4 = \"10.99.0.10-10.99.0.20\"\n",
            net.tag,
            clients()
        ),
    );
    let gateway = net.spawn(&gw, &["-v", "gateway", gateway_toml.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(300));
    let name = format!("t-{}", net.tag);
    let profile = net.write(
        &format!("{name}.toml"),
        &format!(
            "gateway = \"fd18::1\"\nlocal_id = \"client.test\"\nremote_id = \"gw.test\"\n\
             [auth]\npsk = \"{PSK}\"\n[network]\ninterface = \"pq{}\"\n\
             [ike]\ndpd_delay = \"1s\"\nretransmit_tries = 2\n",
            net.tag
        ),
    );
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    let up = net.connected(&name, client);
    assert_eq!(up["kill_switch"], true, "{up}");
    assert!(net.ping());
    let table = String::from_utf8_lossy(
        &Command::new("ip")
            .args([
                "netns", "exec", &cl, "nft", "list", "table", "inet", "pqvpn",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        table.contains("ip6 daddr fd18::1 udp dport 500 meta mark 0x0000cab0 accept"),
        "{table}"
    );

    Command::new("kill")
        .arg(net.pid(gateway).to_string())
        .status()
        .unwrap();
    let _ = net.wait_exit(gateway, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(30);
    while net.status(&name).is_some_and(|s| s["state"] == "connected") {
        assert!(Instant::now() < deadline, "the lost gateway went unnoticed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Reconnecting: the TUN and its routes stay, so traffic goes into the tunnel (and waits),
    // not out of the uplink.
    let tun = format!("dev pq{}", net.tag);
    for (family, to) in [("-4", "203.0.113.1"), ("-6", "2001:db8::1")] {
        let route = ip(&["-n", &cl, family, "route", "get", to]);
        let route = String::from_utf8_lossy(&route.stdout).into_owned();
        assert!(route.contains(&tun), "{to} while reconnecting: {route}");
    }

    let _gateway = net.spawn(&gw, &["-v", "gateway", gateway_toml.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(40);
    while !net.status(&name).is_some_and(|s| {
        s["state"] == "connected" && s["reconnects"].as_u64().is_some_and(|n| n >= 1)
    }) {
        assert!(
            Instant::now() < deadline,
            "no reconnect: {:?}\n{}",
            net.status(&name),
            net.log(client)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(net.ping());

    // A crash: the TUN and its routes go, the kill switch stays, for both families.
    Command::new("kill")
        .args(["-KILL", &net.pid(client).to_string()])
        .status()
        .unwrap();
    let _ = net.wait_exit(client, EXIT);
    assert!(!udp_sent(&net, outside6), "IPv6 blocked after the crash");
    assert!(!udp_sent(&net, outside4), "IPv4 blocked after the crash");
    // The next run takes the block over; `down` lifts it, leaving nothing behind.
    let client = net.spawn(&cl, &["up", profile.to_str().unwrap()]);
    net.connected(&name, client);
    assert!(
        net.log(client).contains("kill switch of an earlier run"),
        "{}",
        net.log(client)
    );
    assert!(net.pqvpn(&["down", &name]).status.success());
    assert!(net.wait_exit(client, EXIT).success(), "{}", net.log(client));
    assert!(udp_sent(&net, outside4) && udp_sent(&net, outside6));
    let after = Command::new("ip")
        .args(["netns", "exec", &cl, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&after.stdout), before);
}
