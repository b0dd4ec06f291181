//! Linux tests. The ones named `netns_*` need root and `/dev/net/tun`: each runs in a network
//! namespace of its own (created with `unshare(CLONE_NEWNET)` on a fresh thread, gone when the
//! thread ends) and prints why it is skipped otherwise. The rest need no privileges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::super::tests::TempDir;
use super::super::{
    Applied, DnsBackend, FWMARK, NetworkConfig, ROUTE_TABLE, Tun, TunConfig, apply, recover,
};
use super::*;

fn config(tun: &str, index: u32, full_tunnel: bool) -> NetworkConfig {
    NetworkConfig {
        tun_name: tun.to_owned(),
        tun_index: index,
        gateway: "192.0.2.10:500".parse().unwrap(),
        ike_port: 500,
        nat_t_port: 4500,
        full_tunnel,
        block_lan: false,
        routes: Vec::new(),
        dns_servers: Vec::new(),
        dns_domains: Vec::new(),
        dns_backend: DnsBackend::None,
    }
}

fn plan_text(config: &NetworkConfig) -> Vec<String> {
    plan_routing(config)
        .iter()
        .map(|change| match change {
            Change::Route(route) => route.to_string(),
            Change::Rule(rule) => rule.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn full_tunnel_plan_puts_the_diverting_rules_last() {
    assert_eq!(
        plan_text(&config("pqt0", 9, true)),
        [
            "0.0.0.0/0 dev #9 table 51888",
            "::/0 dev #9 table 51888",
            "-4 priority 32759 to 192.0.2.10/32 ipproto udp dport 500 lookup 254",
            "-4 priority 32759 to 192.0.2.10/32 ipproto udp dport 4500 lookup 254",
            "-4 priority 32760 suppress_prefixlength 0 lookup 254",
            "-6 priority 32760 suppress_prefixlength 0 lookup 254",
            "-4 priority 32761 not fwmark 0xcab0 lookup 51888",
            "-6 priority 32761 not fwmark 0xcab0 lookup 51888",
        ]
    );
}

/// Security review finding 6 (TunnelCrack ServerIP, CVE-2023-36673): the full tunnel's
/// gateway exemption covers UDP to the IKE and NAT-T ports only, not every protocol to the
/// gateway's address (which a spoofed DNS answer for the gateway's name could point anywhere).
#[test]
fn finding6_server_ip_gateway_rule_exempts_only_udp_ike_and_nat_t() {
    let gateway_rules = |config: &NetworkConfig| -> Vec<String> {
        plan_text(config)
            .into_iter()
            .filter(|rule| rule.contains("priority 32759"))
            .collect()
    };
    assert_eq!(
        gateway_rules(&config("pqt0", 9, true)),
        [
            "-4 priority 32759 to 192.0.2.10/32 ipproto udp dport 500 lookup 254",
            "-4 priority 32759 to 192.0.2.10/32 ipproto udp dport 4500 lookup 254",
        ]
    );
    // Other ports come from the configuration; one rule when IKE starts on 4500 already.
    let mut config = config("pqt0", 9, true);
    config.gateway = "[2001:db8::a]:4500".parse().unwrap();
    config.ike_port = 4500;
    assert_eq!(
        gateway_rules(&config),
        ["-6 priority 32759 to 2001:db8::a/128 ipproto udp dport 4500 lookup 254"]
    );
    config.ike_port = 10500;
    config.nat_t_port = 14500;
    assert_eq!(gateway_rules(&config).len(), 2);
}

/// The netlink encoding of the gateway rule: FRA_IP_PROTO (22) = IPPROTO_UDP and
/// FRA_DPORT_RANGE (24) = `struct fib_rule_port_range { start, end }` in host byte order.
#[test]
fn finding6_server_ip_gateway_rule_message_carries_ipproto_and_dport() {
    use netlink_packet_core::Emitable as _;
    let rule = RuleSpec {
        ipv6: false,
        priority: 32759,
        table: 254,
        selector: RuleSelector::ToUdpPort {
            destination: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            prefix: 32,
            port: 4500,
        },
    };
    let message = super::super::netlink::rule_message(&rule);
    assert_eq!(message.header.dst_len, 32);
    let mut bytes = vec![0; message.buffer_len()];
    message.emit(&mut bytes);
    // The attributes follow the 12-octet `struct fib_rule_hdr`: (len u16, type u16, value).
    let mut attributes = Vec::new();
    let mut rest = &bytes[12..];
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]);
        attributes.push((kind, rest[4..len].to_vec()));
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    let value = |kind: u16| {
        attributes
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        value(22),
        Some(vec![17]),
        "FRA_IP_PROTO udp: {attributes:?}"
    );
    let port = 4500u16.to_ne_bytes();
    assert_eq!(
        value(24),
        Some(vec![port[0], port[1], port[0], port[1]]),
        "FRA_DPORT_RANGE 4500-4500: {attributes:?}"
    );
    assert_eq!(value(1), Some(vec![192, 0, 2, 10]), "FRA_DST");
}

/// Security review finding 6 (TunnelCrack LocalNet, CVE-2023-36672): with `block_lan` the full
/// tunnel has no `suppress_prefixlength 0` rule, so no main-table route wins over it.
#[test]
fn finding6_local_net_block_lan_plan_has_no_suppress_rule() {
    let mut config = config("pqt0", 9, true);
    config.block_lan = true;
    let text = plan_text(&config);
    assert!(
        !text
            .iter()
            .any(|rule| rule.contains("suppress_prefixlength")),
        "{text:?}"
    );
    assert_eq!(
        text.last().unwrap(),
        "-6 priority 32761 not fwmark 0xcab0 lookup 51888"
    );
    assert_eq!(text.len(), 6, "{text:?}");
}

/// Security review finding 6: in a split tunnel (no fwmark rules), a route that covers the
/// gateway would send the tunnel's own ESP and IKE into the TUN; it is refused, naming both.
#[test]
fn finding6_split_route_covering_the_gateway_is_refused() {
    let dir = TempDir::new("covers-gateway");
    for (route, prefix) in [
        (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 24),
        (IpAddr::V4(Ipv4Addr::new(128, 0, 0, 0)), 1),
        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 32),
    ] {
        let mut bad = config("pqt0", 4, false);
        bad.routes = vec![
            (IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 16),
            (route, prefix),
        ];
        match apply(&bad, &dir.0) {
            Err(Error::InvalidConfig(text)) => {
                let network = network(route, prefix);
                assert!(
                    text.contains(&format!("{network}/{prefix}")) && text.contains("192.0.2.10"),
                    "{text}"
                );
            }
            other => panic!("{route}/{prefix}: {other:?}"),
        }
    }
    // Other families and neighbours are fine (plan only: no root needed).
    let mut good = config("pqt0", 4, false);
    good.routes = vec![
        (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 29),
        (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    ];
    assert!(validate(&good).is_ok());
    // IPv6 gateway.
    let mut bad = config("pqt0", 4, false);
    bad.gateway = "[2001:db8::a]:500".parse().unwrap();
    bad.routes = vec![("2001:db8::".parse().unwrap(), 32)];
    assert!(matches!(validate(&bad), Err(Error::InvalidConfig(_))));
    // A full tunnel ignores `routes`.
    let mut full = config("pqt0", 4, true);
    full.routes = vec![(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)];
    assert!(validate(&full).is_ok());
    assert!(StateFile::list(&dir.0).unwrap().is_empty());
}

#[test]
fn split_tunnel_plan_routes_only_the_subnets() {
    let mut config = config("pqt0", 4, false);
    config.routes = vec![
        (IpAddr::V4(Ipv4Addr::new(10, 99, 3, 4)), 16),
        ("fd99::1".parse().unwrap(), 48),
        (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), 32),
        // The same networks again, as a gateway's INTERNAL_IP4_SUBNET may push them.
        (IpAddr::V4(Ipv4Addr::new(10, 99, 0, 0)), 16),
        ("fd99::".parse().unwrap(), 48),
        (IpAddr::V4(Ipv4Addr::new(10, 99, 0, 0)), 24),
    ];
    let plan = plan_routing(&config);
    let text: Vec<String> = plan
        .iter()
        .map(|change| match change {
            Change::Route(route) => route.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        text,
        [
            "10.99.0.0/16 dev #4 table 254",
            "fd99::/48 dev #4 table 254",
            "203.0.113.7/32 dev #4 table 254",
            "10.99.0.0/24 dev #4 table 254",
        ]
    );
}

#[test]
fn network_clears_host_bits() {
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    assert_eq!(network(v4, 0), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!(network(v4, 8), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)));
    assert_eq!(network(v4, 32), v4);
    let v6: IpAddr = "2001:db8:1:2::5".parse().unwrap();
    assert_eq!(network(v6, 32), "2001:db8::".parse::<IpAddr>().unwrap());
    assert_eq!(network(v6, 128), v6);
    assert_eq!(network(v6, 0), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
}

#[test]
fn bad_domains_and_routes_are_refused() {
    let dir = TempDir::new("refuse");
    let mut bad = config("pqt0", 4, false);
    bad.dns_domains = vec!["corp.example\nnameserver 6.6.6.6".into()];
    assert!(matches!(apply(&bad, &dir.0), Err(Error::InvalidConfig(_))));
    let mut bad = config("pqt0", 4, false);
    bad.routes = vec![(IpAddr::V4(Ipv4Addr::LOCALHOST), 33)];
    assert!(matches!(apply(&bad, &dir.0), Err(Error::InvalidConfig(_))));
    assert!(StateFile::list(&dir.0).unwrap().is_empty());
}

fn dns_config(resolv_conf: &Path) -> NetworkConfig {
    let mut config = config("pqt0", 4, false);
    config.dns_servers = vec![
        IpAddr::V4(Ipv4Addr::new(10, 99, 0, 53)),
        "fd99::53".parse().unwrap(),
    ];
    config.dns_domains = vec!["corp.example".into(), "lab.corp.example".into()];
    config.dns_backend = DnsBackend::ResolvConf(resolv_conf.to_owned());
    config
}

const PUSHED: &str = "# Written by pqvpn for pqt0; the original returns when the tunnel goes down.\n\
                      nameserver 10.99.0.53\nnameserver fd99::53\n\
                      search corp.example lab.corp.example\n";

#[test]
fn resolv_conf_file_is_restored_byte_for_byte() {
    let dir = TempDir::new("resolv-file");
    let resolv = dir.0.join("resolv.conf");
    // Not UTF-8, no trailing newline, unusual mode: all of it must come back.
    let original = b"nameserver 192.0.2.53\n# caf\xe9\noptions edns0".to_vec();
    std::fs::write(&resolv, &original).unwrap();
    std::fs::set_permissions(&resolv, std::fs::Permissions::from_mode(0o640)).unwrap();
    let state_dir = dir.0.join("state");

    let applied = apply(&dns_config(&resolv), &state_dir).unwrap();
    assert_eq!(std::fs::read_to_string(&resolv).unwrap(), PUSHED);
    assert_eq!(
        std::fs::read(
            super::super::state::path_for(&state_dir, "pqt0")
                .unwrap()
                .with_extension("resolv.conf")
        )
        .unwrap(),
        original
    );
    applied.restore().unwrap();

    assert_eq!(std::fs::read(&resolv).unwrap(), original);
    let mode = std::fs::metadata(&resolv).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    // Backup and state file are gone; only the (empty) state directory is left.
    assert_eq!(std::fs::read_dir(&state_dir).unwrap().count(), 0);
}

#[test]
fn resolv_conf_symlink_is_replaced_not_written_through() {
    let dir = TempDir::new("resolv-link");
    let target = dir.0.join("stub-resolv.conf");
    std::fs::write(&target, "nameserver 127.0.0.53\n").unwrap();
    let resolv = dir.0.join("resolv.conf");
    std::os::unix::fs::symlink("stub-resolv.conf", &resolv).unwrap();

    let applied = apply(&dns_config(&resolv), &dir.0.join("state")).unwrap();
    assert!(
        !std::fs::symlink_metadata(&resolv)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&resolv).unwrap(), PUSHED);
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "nameserver 127.0.0.53\n"
    );
    drop(applied); // Drop restores too.

    assert_eq!(
        std::fs::read_link(&resolv).unwrap(),
        Path::new("stub-resolv.conf")
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "nameserver 127.0.0.53\n"
    );
}

#[test]
fn resolv_conf_absent_is_removed_again_and_recover_is_idempotent() {
    let dir = TempDir::new("resolv-absent");
    let resolv = dir.0.join("resolv.conf");
    let state_dir = dir.0.join("state");
    let applied = apply(&dns_config(&resolv), &state_dir).unwrap();
    assert_eq!(std::fs::read_to_string(&resolv).unwrap(), PUSHED);
    std::mem::forget(applied); // A crash.

    assert_eq!(recover(&state_dir).unwrap(), vec!["pqt0".to_owned()]);
    assert!(!resolv.exists());
    assert_eq!(recover(&state_dir).unwrap(), Vec::<String>::new());
}

// ---- Tests in a network namespace of their own (root) ----

/// Runs `test` on a new thread inside a new network namespace with `lo` up and a current-thread
/// tokio runtime entered (and passed, to `block_on` async parts). Returns without running it (printing why) when that is not possible.
fn in_netns(name: &str, test: impl FnOnce(&tokio::runtime::Runtime) + Send) {
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            if let Err(error) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                println!(
                    "skipped {name}: cannot create a network namespace ({error}); run as root"
                );
                return;
            }
            if !Path::new("/dev/net/tun").exists() {
                println!("skipped {name}: /dev/net/tun does not exist");
                return;
            }
            if Command::new("ip").arg("-V").output().is_err() {
                println!("skipped {name}: the `ip` tool (iproute2) is needed to inspect results");
                return;
            }
            ip(&["link", "set", "lo", "up"]);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _guard = runtime.enter();
            test(&runtime);
        });
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
    });
}

/// Runs `ip ARGS` (in the calling thread's namespace) and returns stdout; panics on failure.
fn ip(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Everything routing-related in the namespace, as `ip -j` prints it.
///
/// Waits first until the kernel's link watcher has caught up (see [`links_settled`]): a veth's
/// or TUN's carrier is reported at once, but its operstate and the `linkdown` flag of its IPv4
/// routes follow up to a second later on a busy machine, which would make two snapshots of one
/// configuration differ.
fn snapshot() -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !links_settled() {
        assert!(
            std::time::Instant::now() < deadline,
            "links did not settle within 10 s: {}",
            ip(&["-d", "link"])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    vec![
        ip(&["-j", "-4", "route", "show", "table", "all"]),
        ip(&["-j", "-6", "route", "show", "table", "all"]),
        ip(&["-j", "-4", "rule"]),
        ip(&["-j", "-6", "rule"]),
        ip(&["-j", "address"]),
    ]
}

/// Whether every link that is up reports an operstate that agrees with its carrier, and no
/// IPv4 route on a link with carrier is still flagged `linkdown`.
fn links_settled() -> bool {
    let links: serde_json::Value = serde_json::from_str(&ip(&["-j", "link"])).unwrap();
    let mut carrier = std::collections::HashMap::new();
    for link in links.as_array().into_iter().flatten() {
        let flags = link["flags"].as_array().into_iter().flatten();
        let flags: Vec<&str> = flags.filter_map(serde_json::Value::as_str).collect();
        if !flags.contains(&"UP") {
            continue;
        }
        let lower_up = flags.contains(&"LOWER_UP");
        let operstate_down = matches!(
            link["operstate"].as_str(),
            Some("DOWN" | "LOWERLAYERDOWN" | "NOTPRESENT")
        );
        if lower_up == operstate_down {
            return false;
        }
        if let Some(name) = link["ifname"].as_str() {
            carrier.insert(name.to_owned(), lower_up);
        }
    }
    let routes: serde_json::Value =
        serde_json::from_str(&ip(&["-j", "-4", "route", "show", "table", "all"])).unwrap();
    routes.as_array().into_iter().flatten().all(|route| {
        let linkdown = route["flags"]
            .as_array()
            .is_some_and(|flags| flags.iter().any(|flag| flag == "linkdown"));
        // Only a stale flag from before the carrier came up is waited for.
        !(linkdown && route["dev"].as_str().and_then(|dev| carrier.get(dev)) == Some(&true))
    })
}

/// A LAN uplink: `eth9` (a veth) with 192.0.2.1/24 and 2001:db8::1/64 and default routes.
fn add_uplink() {
    ip(&[
        "link", "add", "eth9", "type", "veth", "peer", "name", "eth9p",
    ]);
    for link in ["eth9", "eth9p"] {
        ip(&["link", "set", link, "addrgenmode", "none"]);
        ip(&["link", "set", link, "up"]);
    }
    ip(&["address", "add", "192.0.2.1/24", "dev", "eth9"]);
    ip(&["address", "add", "2001:db8::1/64", "dev", "eth9", "nodad"]);
    ip(&["route", "add", "default", "via", "192.0.2.254"]);
    ip(&["-6", "route", "add", "default", "via", "2001:db8::fe"]);
}

/// The output device of `ip route get ARGS`.
fn route_dev(args: &[&str]) -> String {
    let mut full = vec!["-j", "route", "get"];
    full.extend_from_slice(args);
    let json: serde_json::Value = serde_json::from_str(&ip(&full)).unwrap();
    json[0]["dev"].as_str().unwrap().to_owned()
}

fn tun_config() -> TunConfig {
    TunConfig {
        name: Some("pqt0".into()),
        mtu: 1380,
        addresses: vec![
            (IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)), 24),
            ("fd77::1".parse().unwrap(), 64),
        ],
    }
}

/// Reads packets from the TUN until one is a UDP datagram carrying `payload` (other traffic,
/// should any appear, is skipped).
async fn recv_udp(tun: &Tun, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0; usize::from(tun.mtu())];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = tun.recv(&mut buf).await.unwrap();
            let packet = &buf[..n];
            if packet.ends_with(payload) {
                return packet.to_vec();
            }
        }
    })
    .await
    .expect("no packet from the TUN within 5 s")
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn netns_tun_carries_ipv4_and_ipv6_packets() {
    in_netns("netns_tun_carries_ipv4_and_ipv6_packets", |runtime| {
        let tun = Tun::create(&tun_config()).unwrap();
        assert_eq!((tun.name(), tun.mtu()), ("pqt0", 1380));
        assert!(tun.index() > 0);
        let link: serde_json::Value =
            serde_json::from_str(&ip(&["-j", "address", "show", "dev", "pqt0"])).unwrap();
        let link = &link[0];
        assert_eq!(link["ifindex"].as_u64(), Some(u64::from(tun.index())));
        assert_eq!(link["mtu"].as_u64(), Some(1380));
        assert!(link["flags"].as_array().unwrap().contains(&"UP".into()));
        let addresses: Vec<String> = link["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .map(|info| format!("{}/{}", info["local"].as_str().unwrap(), info["prefixlen"]))
            .collect();
        // No link-local address: nothing but ours.
        assert_eq!(addresses, ["10.77.0.1/24", "fd77::1/64"]);

        runtime.block_on(async {
            // Host → TUN, IPv4: the kernel routes 10.77.0.2 into the TUN.
            let socket = tokio::net::UdpSocket::bind("10.77.0.1:0").await.unwrap();
            socket.send_to(b"pqvpn-v4", "10.77.0.2:4500").await.unwrap();
            let packet = recv_udp(&tun, b"pqvpn-v4").await;
            assert_eq!(
                packet[0] >> 4,
                4,
                "no packet-info header: IPv4 version nibble first"
            );
            assert_eq!(packet[9], 17);
            assert_eq!(&packet[16..20], &[10, 77, 0, 2]);

            // IPv6 (usable at once: no duplicate address detection).
            let socket6 = tokio::net::UdpSocket::bind("[fd77::1]:0").await.unwrap();
            socket6
                .send_to(b"pqvpn-v6", "[fd77::2]:4500")
                .await
                .unwrap();
            let packet = recv_udp(&tun, b"pqvpn-v6").await;
            assert_eq!(packet[0] >> 4, 6);
            assert_eq!(packet[6], 17);

            // TUN → host: a hand-made IPv4/UDP datagram from 10.77.0.2 to our socket.
            let port = socket.local_addr().unwrap().port();
            let payload = b"from-the-tunnel";
            let total = 20 + 8 + payload.len();
            let mut datagram = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
            datagram[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            datagram.extend_from_slice(&[10, 77, 0, 2, 10, 77, 0, 1]);
            let checksum = ipv4_checksum(&datagram);
            datagram[10..12].copy_from_slice(&checksum.to_be_bytes());
            datagram.extend_from_slice(&4500u16.to_be_bytes());
            datagram.extend_from_slice(&port.to_be_bytes());
            datagram.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            datagram.extend_from_slice(&[0, 0]); // No UDP checksum (allowed for IPv4).
            datagram.extend_from_slice(payload);
            assert_eq!(tun.send(&datagram).await.unwrap(), total);
            let mut buf = [0; 64];
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
                    .await
                    .expect("the datagram written to the TUN did not arrive")
                    .unwrap();
            assert_eq!(&buf[..n], payload);
            assert_eq!(from, "10.77.0.2:4500".parse::<SocketAddr>().unwrap());
        });
    });
}

#[test]
fn netns_full_tunnel_applies_and_restores_exactly() {
    in_netns("netns_full_tunnel_applies_and_restores_exactly", |_| {
        add_uplink();
        let tun = Tun::create(&tun_config()).unwrap();
        let before = snapshot();
        assert_eq!(route_dev(&["198.51.100.1"]), "eth9");

        let dir = TempDir::new("full");
        let applied = apply(&config("pqt0", tun.index(), true), &dir.0).unwrap();
        assert!(
            super::super::state::path_for(&dir.0, "pqt0")
                .unwrap()
                .exists()
        );

        // Everything goes into the tunnel, IPv4 and IPv6 ...
        assert_eq!(route_dev(&["198.51.100.1"]), "pqt0");
        assert_eq!(route_dev(&["2001:db8:77::1"]), "pqt0");
        // ... except marked packets (ESP/IKE), the gateway and the LAN.
        let mark = FWMARK.to_string();
        assert_eq!(route_dev(&["198.51.100.1", "mark", &mark]), "eth9");
        assert_eq!(route_dev(&["2001:db8:77::1", "mark", &mark]), "eth9");
        assert_eq!(
            route_dev(&["192.0.2.10", "ipproto", "udp", "dport", "4500"]),
            "eth9"
        );
        assert_eq!(route_dev(&["192.0.2.99"]), "eth9");
        let table = ROUTE_TABLE.to_string();
        assert!(ip(&["route", "show", "table", &table]).contains("default dev pqt0"));
        assert!(ip(&["-6", "route", "show", "table", &table]).contains("default dev pqt0"));
        let rules = ip(&["rule"]);
        assert!(
            rules.contains("32761:\tnot from all fwmark 0xcab0 lookup 51888"),
            "{rules}"
        );
        assert!(
            rules.contains("32760:\tfrom all lookup main suppress_prefixlength 0"),
            "{rules}"
        );
        assert!(
            rules.contains("32759:\tfrom all to 192.0.2.10 ipproto udp dport 4500 lookup main"),
            "{rules}"
        );
        assert!(ip(&["-6", "rule"]).contains("not from all fwmark 0xcab0 lookup 51888"));

        applied.restore().unwrap();
        assert_eq!(snapshot(), before);
        assert!(
            !super::super::state::path_for(&dir.0, "pqt0")
                .unwrap()
                .exists()
        );
        drop(tun);
    });
}

#[test]
fn netns_split_tunnel_routes_only_its_subnets() {
    in_netns("netns_split_tunnel_routes_only_its_subnets", |_| {
        add_uplink();
        let tun = Tun::create(&tun_config()).unwrap();
        let before = snapshot();
        let mut config = config("pqt0", tun.index(), false);
        config.routes = vec![
            (IpAddr::V4(Ipv4Addr::new(10, 99, 5, 5)), 16),
            ("fd99::".parse().unwrap(), 48),
        ];
        let dir = TempDir::new("split");
        let applied = apply(&config, &dir.0).unwrap();
        assert_eq!(route_dev(&["10.99.200.1"]), "pqt0");
        assert_eq!(route_dev(&["fd99::1234"]), "pqt0");
        assert_eq!(route_dev(&["198.51.100.1"]), "eth9");
        assert_eq!(route_dev(&["2001:db8:77::1"]), "eth9");
        // No policy rules in split mode.
        assert_eq!(ip(&["-j", "-4", "rule"]), before[2]);
        assert_eq!(ip(&["-j", "-6", "rule"]), before[3]);

        drop(applied);
        assert_eq!(snapshot(), before);
    });
}

#[test]
fn netns_recover_after_a_crash_restores_everything() {
    in_netns("netns_recover_after_a_crash_restores_everything", |_| {
        add_uplink();
        let dir = TempDir::new("crash");
        let resolv = dir.0.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 192.0.2.53\n").unwrap();
        let state_dir = dir.0.join("state");
        let before = snapshot();

        let tun = Tun::create(&tun_config()).unwrap();
        let mut config = dns_config(&resolv);
        config.tun_index = tun.index();
        config.full_tunnel = true;
        let applied: Applied = apply(&config, &state_dir).unwrap();
        assert_eq!(route_dev(&["198.51.100.1"]), "pqt0");
        assert_eq!(std::fs::read_to_string(&resolv).unwrap(), PUSHED);

        // The process dies: nothing is restored, the TUN (and its routes) vanish with the fd.
        std::mem::forget(applied);
        drop(tun);
        assert_ne!(snapshot(), before, "the policy rules outlive the process");

        assert_eq!(recover(&state_dir).unwrap(), vec!["pqt0".to_owned()]);
        assert_eq!(snapshot(), before);
        assert_eq!(
            std::fs::read_to_string(&resolv).unwrap(),
            "nameserver 192.0.2.53\n"
        );
        assert!(StateFile::list(&state_dir).unwrap().is_empty());
        // Idempotent.
        assert!(recover(&state_dir).unwrap().is_empty());
    });
}

#[test]
fn netns_state_files_of_one_tun_name_are_per_namespace() {
    let dir = TempDir::new("per-netns");
    let outer = StateFile::create(&dir.0, "pqt0").unwrap();
    let outer_path = outer.path().to_owned();
    in_netns(
        "netns_state_files_of_one_tun_name_are_per_namespace",
        |_| {
            // Another namespace's tunnel of the same name is not a stale file of ours.
            assert_eq!(StateFile::existing(&dir.0, "pqt0").unwrap(), None);
            let inner = StateFile::create(&dir.0, "pqt0").unwrap();
            assert_ne!(inner.path(), outer_path);
            assert_eq!(StateFile::list(&dir.0).unwrap().len(), 2);
            // recover() in this namespace leaves the outer file alone.
            drop(inner);
            recover(&dir.0).unwrap();
            assert!(outer_path.exists());
        },
    );
    assert_eq!(
        StateFile::existing(&dir.0, "pqt0").unwrap(),
        Some(outer_path)
    );
}

#[test]
fn netns_apply_undoes_a_stale_state_file_and_a_partial_apply() {
    in_netns(
        "netns_apply_undoes_a_stale_state_file_and_a_partial_apply",
        |_| {
            add_uplink();
            let tun = Tun::create(&tun_config()).unwrap();
            let before = snapshot();
            let dir = TempDir::new("stale");

            // A stale state file for the same TUN is undone before applying again.
            let applied = apply(&config("pqt0", tun.index(), true), &dir.0).unwrap();
            std::mem::forget(applied);
            let applied = apply(&config("pqt0", tun.index(), true), &dir.0).unwrap();
            applied.restore().unwrap();
            assert_eq!(snapshot(), before);

            // A step that fails (a route that already exists) undoes the earlier ones.
            ip(&[
                "route",
                "add",
                "10.99.0.0/16",
                "dev",
                "pqt0",
                "proto",
                "static",
            ]);
            let with_route = snapshot();
            let mut config = config("pqt0", tun.index(), false);
            config.routes = vec![
                (IpAddr::V4(Ipv4Addr::new(10, 98, 0, 0)), 16),
                (IpAddr::V4(Ipv4Addr::new(10, 99, 0, 0)), 16),
            ];
            let error = apply(&config, &dir.0).unwrap_err();
            assert!(matches!(error, Error::AddRoute(..)), "{error:?}");
            assert_eq!(
                snapshot(),
                with_route,
                "the pre-existing route stays, ours are gone"
            );
            assert!(StateFile::list(&dir.0).unwrap().is_empty());
        },
    );
}

/// Runs `peer` on a new thread in a network namespace of its own, into which `eth9p` (the far
/// end of [`add_uplink`]'s veth) is moved first; `peer` gets a channel to report to the test.
fn with_peer_netns<T: Send>(
    peer: impl FnOnce(std::sync::mpsc::Sender<T>) + Send,
    test: impl FnOnce(&std::sync::mpsc::Receiver<T>),
) {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (moved_tx, moved_rx) = std::sync::mpsc::channel::<()>();
    let (report_tx, report_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            // `/proc/thread-self` links to `PID/task/TID`.
            let link = std::fs::read_link("/proc/thread-self").unwrap();
            tid_tx
                .send(link.file_name().unwrap().to_string_lossy().into_owned())
                .unwrap();
            moved_rx.recv().unwrap();
            peer(report_tx);
        });
        let tid: String = tid_rx.recv().unwrap();
        // `netns PID` takes any task id: the peer thread's namespace.
        ip(&["link", "set", "eth9p", "netns", &tid]);
        moved_tx.send(()).unwrap();
        test(&report_rx);
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
    });
}

fn set_rp_filter_strict(link: &str) {
    for conf in ["all", link] {
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{conf}/rp_filter"), "1").unwrap();
    }
}

/// Security review finding 6 (TunnelCrack ServerIP, CVE-2023-36673), in a namespace with a
/// real gateway reached through the default route (so no LAN route hides the question):
/// only UDP to the gateway's IKE and NAT-T ports leaves outside the tunnel, TCP, ICMP and other
/// UDP to its address go into the TUN. And with `rp_filter=1` the gateway's replies from
/// 500/4500 still arrive (the kernel swaps the ports for the reverse-path lookup of a rule
/// with ports), while a datagram from another port of the gateway is dropped.
#[test]
fn netns_finding6_server_ip_only_ike_and_esp_bypass_and_pass_rp_filter() {
    const GATEWAY: &str = "203.0.113.10";
    in_netns(
        "netns_finding6_server_ip_only_ike_and_esp_bypass_and_pass_rp_filter",
        |_| {
            add_uplink();
            set_rp_filter_strict("eth9");
            let tun = Tun::create(&tun_config()).unwrap();
            let before = snapshot();
            let mut config = config("pqt0", tun.index(), true);
            config.gateway = SocketAddr::new(GATEWAY.parse().unwrap(), 500);
            let dir = TempDir::new("server-ip");
            let applied = apply(&config, &dir.0).unwrap();

            for port in ["500", "4500"] {
                assert_eq!(
                    route_dev(&[GATEWAY, "ipproto", "udp", "dport", port]),
                    "eth9"
                );
            }
            assert_eq!(
                route_dev(&[GATEWAY, "ipproto", "tcp", "dport", "80"]),
                "pqt0"
            );
            assert_eq!(
                route_dev(&[GATEWAY, "ipproto", "tcp", "dport", "4500"]),
                "pqt0"
            );
            assert_eq!(
                route_dev(&[GATEWAY, "ipproto", "udp", "dport", "53"]),
                "pqt0"
            );
            assert_eq!(route_dev(&[GATEWAY, "ipproto", "icmp"]), "pqt0");
            assert_eq!(route_dev(&[GATEWAY]), "pqt0");

            // The gateway: the veth's far end in a namespace of its own, as the LAN router
            // 192.0.2.254 that also owns GATEWAY.
            with_peer_netns(
                |report: std::sync::mpsc::Sender<Result<(), String>>| {
                    ip(&["link", "set", "lo", "up"]);
                    ip(&["address", "add", "192.0.2.254/24", "dev", "eth9p"]);
                    ip(&["address", "add", &format!("{GATEWAY}/32"), "dev", "eth9p"]);
                    ip(&["link", "set", "eth9p", "up"]);
                    let sockets: Vec<std::net::UdpSocket> = [500u16, 4500, 53]
                        .iter()
                        .map(|port| std::net::UdpSocket::bind((GATEWAY, *port)).unwrap())
                        .collect();
                    for socket in &sockets {
                        socket
                            .set_read_timeout(Some(Duration::from_secs(5)))
                            .unwrap();
                    }
                    report.send(Ok(())).unwrap();
                    // Each of IKE and NAT-T: answer the client's datagram from the same port,
                    // then send one from port 53 to the same client port.
                    for socket in &sockets[..2] {
                        let mut buf = [0; 64];
                        let result = socket
                            .recv_from(&mut buf)
                            .map_err(|e| format!("nothing reached the gateway: {e}"))
                            .map(|(n, from)| {
                                socket.send_to(&buf[..n], from).unwrap();
                                sockets[2].send_to(b"not-ike", from).unwrap();
                            });
                        report.send(result).unwrap();
                    }
                },
                |report| {
                    report.recv().unwrap().unwrap();
                    for port in [500u16, 4500] {
                        let client = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                        client
                            .set_read_timeout(Some(Duration::from_secs(5)))
                            .unwrap();
                        // Unmarked on purpose: the gateway rule alone keeps it off the TUN.
                        client.send_to(b"ike-or-esp", (GATEWAY, port)).unwrap();
                        report.recv().unwrap().unwrap();
                        let mut buf = [0; 64];
                        let (n, from) = client.recv_from(&mut buf).unwrap_or_else(|e| {
                            panic!("the gateway's reply from {port} was dropped (rp_filter?): {e}")
                        });
                        assert_eq!(&buf[..n], b"ike-or-esp");
                        assert_eq!(from, SocketAddr::new(GATEWAY.parse().unwrap(), port));
                        // The gateway's port-53 datagram fails the reverse-path check (its
                        // reverse route is the TUN) and never arrives.
                        client
                            .set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        let stray = client.recv_from(&mut buf);
                        assert!(
                            stray.is_err(),
                            "a datagram from {:?} passed",
                            stray.map(|r| r.1)
                        );
                    }
                },
            );

            applied.restore().unwrap();
            // eth9p moved away, which the snapshot shows as a changed peer link.
            let after = snapshot();
            assert_eq!(after[2..4], before[2..4], "rules restored");
            drop(tun);
        },
    );
}

/// Security review finding 6 (TunnelCrack LocalNet, CVE-2023-36672): a hostile network's
/// DHCP server adds a main-table "LAN" route of 0.0.0.0/1. Without `block_lan` it takes
/// 8.8.8.8 out of the tunnel (the documented default, LAN reachable); with it, everything but
/// IKE/ESP to the gateway stays in the tunnel, the LAN too.
#[test]
fn netns_finding6_local_net_block_lan_keeps_a_hostile_lan_route_out() {
    in_netns(
        "netns_finding6_local_net_block_lan_keeps_a_hostile_lan_route_out",
        |_| {
            add_uplink();
            ip(&["route", "add", "0.0.0.0/1", "via", "192.0.2.254"]);
            ip(&["-6", "route", "add", "::/1", "via", "2001:db8::fe"]);
            let tun = Tun::create(&tun_config()).unwrap();
            let before = snapshot();
            let dir = TempDir::new("local-net");

            let applied = apply(&config("pqt0", tun.index(), true), &dir.0).unwrap();
            assert_eq!(route_dev(&["8.8.8.8"]), "eth9", "LAN routes win by default");
            applied.restore().unwrap();
            assert_eq!(snapshot(), before);

            let mut config = config("pqt0", tun.index(), true);
            config.block_lan = true;
            let applied = apply(&config, &dir.0).unwrap();
            assert_eq!(route_dev(&["8.8.8.8"]), "pqt0");
            assert_eq!(route_dev(&["2001:4860::8888"]), "pqt0");
            assert_eq!(route_dev(&["192.0.2.99"]), "pqt0", "the LAN is blocked too");
            assert_eq!(route_dev(&["198.51.100.1"]), "pqt0");
            // IKE/ESP to the gateway (on the LAN here) and marked packets still go out.
            assert_eq!(
                route_dev(&["192.0.2.10", "ipproto", "udp", "dport", "4500"]),
                "eth9"
            );
            let mark = FWMARK.to_string();
            assert_eq!(route_dev(&["8.8.8.8", "mark", &mark]), "eth9");
            let rules = ip(&["rule"]);
            assert!(!rules.contains("suppress_prefixlength"), "{rules}");
            applied.restore().unwrap();
            assert_eq!(snapshot(), before);
            drop(tun);
        },
    );
}
