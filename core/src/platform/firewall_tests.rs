//! The kill switch's rules (pure) and its journal; `netns_*` tests install the table in a
//! network namespace of their own (root; skipped with a message otherwise).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use super::super::FWMARK;
use super::super::tests::TempDir;
use super::*;

fn gateway() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))
}

fn full_tunnel() -> Policy {
    Policy {
        tun_name: Some("pqvpn0".into()),
        gateways: vec![gateway()],
        ports: vec![500, 4500],
        block: true,
        allow_lan: false,
        dns: vec!["10.9.0.1".parse().unwrap()],
    }
}

fn text(policies: &[Policy]) -> String {
    Ruleset::of(policies)
        .map(|r| r.to_string())
        .unwrap_or_default()
}

#[test]
fn kill_switch_allows_only_the_tunnel_ike_esp_and_housekeeping() {
    assert_eq!(
        text(&[full_tunnel()]),
        "table inet pqvpn {
\tchain output {
\t\ttype filter hook output priority filter; policy drop;
\t\toifname \"lo\" accept
\t\toifname \"pqvpn0\" accept
\t\tmeta l4proto udp th dport 53 meta mark 0x0000cab0 accept
\t\tmeta l4proto tcp th dport 53 meta mark 0x0000cab0 accept
\t\tmeta l4proto udp th dport 53 counter drop
\t\tmeta l4proto tcp th dport 53 counter drop
\t\tmeta l4proto udp th dport 853 counter drop
\t\tmeta l4proto tcp th dport 853 counter drop
\t\tip daddr 192.0.2.10 meta l4proto udp th dport 500 meta mark 0x0000cab0 accept
\t\tip daddr 192.0.2.10 meta l4proto udp th dport 4500 meta mark 0x0000cab0 accept
\t\tip daddr 255.255.255.255 meta l4proto udp th sport 68 th dport 67 accept
\t\tip6 daddr ff02::1:2 meta l4proto udp th sport 546 th dport 547 accept
\t\tip6 daddr fe80::/10 meta l4proto icmpv6 @th,0,8 133 accept
\t\tip6 daddr fe80::/10 meta l4proto icmpv6 @th,0,8 135 accept
\t\tip6 daddr fe80::/10 meta l4proto icmpv6 @th,0,8 136 accept
\t\tip6 daddr ff02::/16 meta l4proto icmpv6 @th,0,8 133 accept
\t\tip6 daddr ff02::/16 meta l4proto icmpv6 @th,0,8 135 accept
\t\tip6 daddr ff02::/16 meta l4proto icmpv6 @th,0,8 136 accept
\t\tip6 daddr ff02::/16 meta l4proto icmpv6 @th,0,8 131 accept
\t\tip6 daddr ff02::/16 meta l4proto icmpv6 @th,0,8 132 accept
\t\tip6 daddr ff02::/16 meta l4proto icmpv6 @th,0,8 143 accept
\t\tcounter drop
\t}
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
\t\tiifname \"lo\" accept
\t\tiifname \"pqvpn0\" accept
\t\tct state established,related accept
\t\tip saddr 192.0.2.10 meta l4proto udp th sport 500 accept
\t\tip saddr 192.0.2.10 meta l4proto udp th sport 4500 accept
\t\tmeta l4proto udp th sport 67 th dport 68 accept
\t\tmeta l4proto udp th sport 547 th dport 546 accept
\t\tmeta l4proto icmpv6 @th,0,8 2 accept
\t\tmeta l4proto icmpv6 @th,0,8 130 accept
\t\tmeta l4proto icmpv6 @th,0,8 134 accept
\t\tmeta l4proto icmpv6 @th,0,8 135 accept
\t\tmeta l4proto icmpv6 @th,0,8 136 accept
\t\tmeta l4proto icmp @th,0,8 3 accept
\t\tcounter drop
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy drop;
\t\toifname \"pqvpn0\" accept
\t\tmeta l4proto udp th dport 53 counter drop
\t\tmeta l4proto tcp th dport 53 counter drop
\t\tmeta l4proto udp th dport 853 counter drop
\t\tmeta l4proto tcp th dport 853 counter drop
\t\tiifname \"pqvpn0\" ip daddr 10.0.0.0/8 ct state established,related accept
\t\tiifname \"pqvpn0\" ip daddr 172.16.0.0/12 ct state established,related accept
\t\tiifname \"pqvpn0\" ip daddr 192.168.0.0/16 ct state established,related accept
\t\tiifname \"pqvpn0\" ip6 daddr fc00::/7 ct state established,related accept
\t\tcounter drop
\t}
}
"
    );
}

/// Reviewer: the underlay's housekeeping goes to the link only (no DHCP or neighbour
/// discovery to an arbitrary address), and the tunnel's traffic is never forwarded out to the
/// underlay in clear: only replies go back to the private networks behind this host.
#[test]
fn housekeeping_stays_on_the_link_and_the_tunnel_never_forwards_out() {
    let ruleset = Ruleset::of(&[full_tunnel()]).unwrap();
    for chain in &ruleset.chains {
        for rule in &chain.rules {
            let from_tun = rule.matches.contains(&Match::Iifname("pqvpn0".into()));
            if chain.hook == Hook::Forward && from_tun {
                assert!(rule.matches.contains(&Match::Established), "{rule}");
                assert!(
                    rule.matches.iter().any(|m| matches!(m, Match::Daddr(..))),
                    "{rule}"
                );
            }
            let housekeeping = rule
                .matches
                .iter()
                .any(|m| matches!(m, Match::IcmpType(_) | Match::Sport(68 | 546)));
            if chain.hook == Hook::Output && housekeeping {
                let on_link = rule.matches.iter().any(|m| match m {
                    Match::Daddr(IpAddr::V6(a), _) => {
                        a.segments()[0] == 0xff02 || a.segments()[0] & 0xffc0 == 0xfe80
                    }
                    Match::Daddr(IpAddr::V4(a), 32) => a.is_broadcast(),
                    _ => false,
                });
                assert!(on_link, "{rule}");
            }
        }
    }
}

/// An on-link IPv6 gateway's neighbour entry is kept: ND to its address passes.
#[test]
fn an_ipv6_gateway_gets_ike_and_neighbour_discovery() {
    let policy = Policy {
        gateways: vec!["2001:db8::10".parse().unwrap()],
        ..full_tunnel()
    };
    let text = text(&[policy]);
    for line in [
        "ip6 daddr 2001:db8::10 meta l4proto udp th dport 500 meta mark 0x0000cab0 accept",
        "ip6 daddr 2001:db8::10 meta l4proto icmpv6 @th,0,8 135 accept",
        "ip6 saddr 2001:db8::10 meta l4proto udp th sport 4500 accept",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
}

/// Security review finding 6: while the tunnel is down nothing but the driver's own marked
/// IKE/ESP reaches the gateway's address; no other protocol or port, and no unmarked socket.
#[test]
fn finding6_gateway_exemption_is_udp_ike_esp_from_the_marked_socket_only() {
    let ruleset = Ruleset::of(&[full_tunnel()]).unwrap();
    let output = ruleset
        .chains
        .iter()
        .find(|c| c.hook == Hook::Output)
        .unwrap();
    let to_gateway: Vec<&Rule> = output
        .rules
        .iter()
        .filter(|r| r.matches.contains(&Match::Daddr(gateway(), 32)))
        .collect();
    assert_eq!(to_gateway.len(), 2);
    for rule in to_gateway {
        assert!(rule.matches.contains(&Match::Mark(FWMARK)), "{rule}");
        assert!(
            rule.matches.contains(&Match::Protocol(Protocol::Udp)),
            "{rule}"
        );
        assert_eq!(rule.verdict, Verdict::Accept);
    }
    assert_eq!(output.policy, Verdict::Drop);
    assert_eq!(output.rules.last().unwrap().verdict, Verdict::Drop);
}

#[test]
fn nothing_is_installed_without_a_kill_switch_or_pushed_dns() {
    let policy = Policy {
        block: false,
        dns: Vec::new(),
        ..full_tunnel()
    };
    assert_eq!(Ruleset::of(&[policy]), None);
    assert_eq!(Ruleset::of(&[]), None);
}

#[test]
fn split_tunnel_with_pushed_dns_locks_only_dns() {
    let policy = Policy {
        block: false,
        ..full_tunnel()
    };
    assert_eq!(
        text(&[policy]),
        "table inet pqvpn {
\tchain output {
\t\ttype filter hook output priority filter; policy accept;
\t\toifname \"lo\" accept
\t\toifname \"pqvpn0\" accept
\t\tmeta l4proto udp th dport 53 meta mark 0x0000cab0 accept
\t\tmeta l4proto tcp th dport 53 meta mark 0x0000cab0 accept
\t\tmeta l4proto udp th dport 53 counter drop
\t\tmeta l4proto tcp th dport 53 counter drop
\t\tmeta l4proto udp th dport 853 counter drop
\t\tmeta l4proto tcp th dport 853 counter drop
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\toifname \"pqvpn0\" accept
\t\tmeta l4proto udp th dport 53 counter drop
\t\tmeta l4proto tcp th dport 53 counter drop
\t\tmeta l4proto udp th dport 853 counter drop
\t\tmeta l4proto tcp th dport 853 counter drop
\t}
}
"
    );
}

/// TunnelCrack LocalNet: `allow_lan` opens the private ranges, never a "LAN" the network
/// hands out (such as `0.0.0.0/1`), and never forwarding from the LAN to elsewhere.
#[test]
fn allow_lan_opens_only_private_and_link_local_ranges() {
    let policy = Policy {
        allow_lan: true,
        ..full_tunnel()
    };
    let text = text(&[policy]);
    for range in [
        "ip daddr 10.0.0.0/8 accept",
        "ip daddr 172.16.0.0/12 accept",
        "ip daddr 192.168.0.0/16 accept",
        "ip daddr 169.254.0.0/16 accept",
        "ip6 daddr fe80::/10 accept",
        "ip6 daddr fc00::/7 accept",
        "ip saddr 192.168.0.0/16 accept",
    ] {
        assert!(text.contains(range), "{range} missing from\n{text}");
    }
    assert!(!text.contains(" 0.0.0.0/"), "{text}");
    let forward = text.split("chain forward").nth(1).unwrap();
    assert!(!forward.contains("saddr"), "{forward}");
    // DNS to the LAN's resolver stays blocked: the DNS drops come before the LAN.
    let output = text.split("chain input").next().unwrap();
    assert!(output.find("dport 53 counter drop").unwrap() < output.find("10.0.0.0/8").unwrap());
    assert!(
        forward.find("dport 53 counter drop").unwrap()
            < forward.find("ip daddr 10.0.0.0/8 accept").unwrap(),
        "{forward}"
    );
}

#[test]
fn several_tunnels_get_the_union_and_any_blocks() {
    let other = Policy {
        tun_name: Some("pqvpn1".into()),
        gateways: vec!["2001:db8::10".parse().unwrap()],
        ports: vec![4500],
        block: false,
        allow_lan: true,
        dns: Vec::new(),
    };
    let text = text(&[full_tunnel(), other]);
    assert!(text.contains("policy drop"));
    assert!(text.contains("oifname \"pqvpn1\" accept"));
    assert!(text.contains("ip6 daddr 2001:db8::10 meta l4proto udp th dport 4500"));
    // Only a blocking policy's allow_lan counts.
    assert!(!text.contains("ip daddr 10.0.0.0/8 accept"));
}

#[test]
fn a_crashed_runs_journal_is_adopted_and_stale() {
    let dir = TempDir::new("fw-journal");
    let mut policies = BTreeMap::new();
    policies.insert("office".to_owned(), full_tunnel());
    let journal = Journal {
        version: VERSION,
        // No such process.
        owner_pid: u32::MAX - 1,
        policies: policies.clone(),
    };
    write_journal(&journal_path(&dir.0), &journal).unwrap();
    let mode = fs::metadata(journal_path(&dir.0)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    assert_eq!(stale(&dir.0).unwrap(), policies);
    let firewall = Firewall::open(&dir.0).unwrap();
    assert_eq!(firewall.policy("office"), Some(&full_tunnel()));
    assert!(firewall.blocking());
    // Not a route state file: `recover` leaves it alone.
    assert_eq!(super::super::recover(&dir.0).unwrap(), Vec::<String>::new());
    assert!(journal_path(&dir.0).exists());
}

#[test]
fn a_broken_journal_is_an_error_not_a_silent_unblock() {
    let dir = TempDir::new("fw-broken");
    fs::write(journal_path(&dir.0), b"{not json").unwrap();
    assert!(matches!(
        Firewall::open(&dir.0),
        Err(Error::StateParse { .. })
    ));
    // `recover --unblock` lifts such a table anyway: see `netns_unblock_lifts_a_broken_journals_table`.
}

#[test]
fn a_second_firewall_in_the_namespace_is_refused_until_the_first_is_gone() {
    let dir = TempDir::new("fw-lock");
    let first = Firewall::open(&dir.0).unwrap();
    match Firewall::open(&dir.0) {
        Err(Error::FirewallHeld { pid }) => assert_eq!(pid, std::process::id()),
        other => panic!("{other:?}"),
    }
    assert!(matches!(unblock(&dir.0), Err(Error::FirewallHeld { .. })));
    // Held by a live process: nothing is stale.
    assert!(stale(&dir.0).unwrap().is_empty());
    drop(first);
    drop(Firewall::open(&dir.0).unwrap());
}

/// A journal whose owner is gone is adopted and rewritten as the adopter's.
#[test]
fn an_adopted_journal_names_its_new_owner() {
    let dir = TempDir::new("fw-adopt");
    let mut policies = BTreeMap::new();
    policies.insert("office".to_owned(), full_tunnel());
    let journal = Journal {
        version: VERSION,
        owner_pid: u32::MAX - 1,
        policies,
    };
    write_journal(&journal_path(&dir.0), &journal).unwrap();
    let _firewall = Firewall::open(&dir.0).unwrap();
    let adopted = read_journal(&journal_path(&dir.0)).unwrap().unwrap();
    assert_eq!(adopted.owner_pid, std::process::id());
    assert_eq!(adopted.policies, journal.policies);
}

#[cfg(target_os = "linux")]
mod netns {
    use std::process::Command;

    use super::*;

    /// Runs `test` in a fresh network namespace on its own thread (gone when it ends).
    fn in_netns(name: &str, test: impl FnOnce() + Send) {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                if let Err(error) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                    println!("skipped {name}: cannot create a network namespace ({error})");
                    return;
                }
                if Command::new("nft").arg("--version").output().is_err() {
                    println!("skipped {name}: the `nft` tool (nftables) is needed to inspect");
                    return;
                }
                run(&["ip", "link", "set", "lo", "up"]);
                run(&[
                    "ip", "link", "add", "eth9", "type", "veth", "peer", "name", "eth9p",
                ]);
                // No IPv6 link-local address: no router solicitations or MLD reports to count.
                run(&["ip", "link", "set", "eth9", "addrgenmode", "none"]);
                run(&["ip", "link", "set", "eth9", "up"]);
                run(&["ip", "link", "set", "eth9p", "up"]);
                run(&["ip", "address", "add", "192.0.2.1/24", "dev", "eth9"]);
                run(&["ip", "route", "add", "default", "via", "192.0.2.254"]);
                test();
            });
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        });
    }

    fn run(args: &[&str]) -> String {
        let (program, args) = args.split_first().unwrap();
        let output = Command::new(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Sends one UDP datagram to `to` from a socket with `mark`; the kernel's answer.
    fn send(to: SocketAddr, mark: Option<u32>) -> io::Result<usize> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        if let Some(mark) = mark {
            socket2::SockRef::from(&socket).set_mark(mark)?;
        }
        socket.send_to(b"probe", to)
    }

    fn blocked(result: io::Result<usize>) -> bool {
        matches!(result, Err(e) if e.kind() == io::ErrorKind::PermissionDenied)
    }

    #[test]
    fn netns_kill_switch_blocks_all_but_marked_ike_and_lifts_exactly() {
        in_netns(
            "netns_kill_switch_blocks_all_but_marked_ike_and_lifts_exactly",
            || {
                let dir = TempDir::new("fw-netns");
                let before = run(&["nft", "list", "ruleset"]);
                let gateway_ike = SocketAddr::new(gateway(), 500);
                let outside_dns: SocketAddr = "198.51.100.1:53".parse().unwrap();
                let outside: SocketAddr = "198.51.100.1:9".parse().unwrap();
                assert!(!blocked(send(outside, None)));

                let mut firewall = Firewall::open(&dir.0).unwrap();
                firewall.set("office", full_tunnel()).unwrap();
                let listed = run(&["nft", "list", "table", "inet", TABLE]);
                for line in [
                    "policy drop",
                    "oifname \"pqvpn0\" accept",
                    "udp dport 53 counter packets 0 bytes 0 drop",
                    "ip daddr 192.0.2.10 udp dport 500 meta mark 0x0000cab0 accept",
                    "iifname \"lo\" accept",
                    "ct state established,related accept",
                    "iifname \"pqvpn0\" ip daddr 10.0.0.0/8 ct state established,related accept",
                    "ip6 daddr ff02::/16 icmpv6 type nd-neighbor-solicit accept",
                    "udp dport 53 meta mark 0x0000cab0 accept",
                ] {
                    assert!(listed.contains(line), "{line:?} missing from\n{listed}");
                }
                assert!(blocked(send(outside, None)));
                assert!(blocked(send(outside_dns, None)), "DNS outside the tunnel");
                assert!(
                    !blocked(send(outside_dns, Some(FWMARK))),
                    "the driver's own lookup of the gateway's name"
                );
                assert!(
                    blocked(send("198.51.100.1:853".parse().unwrap(), Some(FWMARK))),
                    "only plain DNS is the resolver's"
                );
                assert!(
                    blocked(send(gateway_ike, None)),
                    "unmarked IKE must not pass"
                );
                assert!(
                    !blocked(send(SocketAddr::new(gateway(), 4500), Some(FWMARK))),
                    "the driver's ESP must pass"
                );
                assert!(!blocked(send(gateway_ike, Some(FWMARK))));
                let dropped = run(&["nft", "list", "chain", "inet", TABLE, "output"]);
                assert!(
                    dropped.contains("udp dport 53 counter packets 1 bytes 33 drop"),
                    "{dropped}"
                );

                // A second run in the namespace adopts the table; a new policy replaces it whole.
                drop(firewall);
                let mut firewall = Firewall::open(&dir.0).unwrap();
                assert!(
                    blocked(send(outside, None)),
                    "dropping the handle must not unblock"
                );
                let split = Policy {
                    block: false,
                    ..full_tunnel()
                };
                firewall.set("office", split).unwrap();
                assert!(!blocked(send(outside, None)));
                assert!(blocked(send(outside_dns, None)), "DNS stays locked");
                firewall.clear().unwrap();
                assert!(!blocked(send(outside_dns, None)));
                assert_eq!(run(&["nft", "list", "ruleset"]), before);
                assert!(!journal_path(&dir.0).exists());
            },
        );
    }

    #[test]
    fn netns_unblock_lifts_a_crashed_runs_table() {
        in_netns("netns_unblock_lifts_a_crashed_runs_table", || {
            let dir = TempDir::new("fw-unblock");
            let before = run(&["nft", "list", "ruleset"]);
            let outside: SocketAddr = "198.51.100.1:9".parse().unwrap();
            let mut firewall = Firewall::open(&dir.0).unwrap();
            firewall.set("office", full_tunnel()).unwrap();
            // The process "crashes": the journal names a pid that no longer runs.
            let mut journal = read_journal(&journal_path(&dir.0)).unwrap().unwrap();
            journal.owner_pid = u32::MAX - 1;
            write_journal(&journal_path(&dir.0), &journal).unwrap();
            drop(firewall);
            assert!(blocked(send(outside, None)), "fail closed after a crash");
            assert!(unblock(&dir.0).unwrap());
            assert!(!blocked(send(outside, None)));
            assert_eq!(run(&["nft", "list", "ruleset"]), before);
            // Idempotent.
            assert!(!unblock(&dir.0).unwrap());
        });
    }

    #[test]
    fn netns_unblock_lifts_a_broken_journals_table() {
        in_netns("netns_unblock_lifts_a_broken_journals_table", || {
            let dir = TempDir::new("fw-unblock-broken");
            let outside: SocketAddr = "198.51.100.1:9".parse().unwrap();
            let mut firewall = Firewall::open(&dir.0).unwrap();
            firewall.set("office", full_tunnel()).unwrap();
            drop(firewall);
            fs::write(journal_path(&dir.0), b"{torn").unwrap();
            assert!(blocked(send(outside, None)));
            assert!(unblock(&dir.0).unwrap());
            assert!(!blocked(send(outside, None)));
            assert!(!journal_path(&dir.0).exists());
        });
    }

    /// A change that cannot be made (here an interface name Linux cannot have, refused before
    /// the batch is sent; a batch the kernel refuses is one aborted transaction) leaves both
    /// the table and the journal as they were.
    #[test]
    fn netns_a_refused_change_keeps_the_table_and_the_journal() {
        in_netns(
            "netns_a_refused_change_keeps_the_table_and_the_journal",
            || {
                let dir = TempDir::new("fw-refused");
                let mut firewall = Firewall::open(&dir.0).unwrap();
                firewall.set("office", full_tunnel()).unwrap();
                let journal = fs::read(journal_path(&dir.0)).unwrap();
                let table = run(&["nft", "list", "table", "inet", TABLE]);
                let bad = Policy {
                    tun_name: Some("a-name-far-too-long-for-linux".into()),
                    ..full_tunnel()
                };
                assert!(matches!(
                    firewall.set("home", bad),
                    Err(Error::Firewall(..))
                ));
                assert_eq!(fs::read(journal_path(&dir.0)).unwrap(), journal);
                assert_eq!(run(&["nft", "list", "table", "inet", TABLE]), table);
                assert_eq!(firewall.keys().collect::<Vec<_>>(), ["office"]);
                firewall.clear().unwrap();
            },
        );
    }
}
