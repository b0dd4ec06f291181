//! The kill switch's table, pure: [`Ruleset::of`] builds the chains that give a set of
//! [`Policy`]s what they need; `Display` prints them in `nft` syntax.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::super::FWMARK;
use super::{Policy, TABLE};

/// DNS ports locked to the tunnel: DNS and DNS over TLS (TCP and UDP).
const DNS_PORTS: [u16; 2] = [53, 853];

/// Private and link-local ranges `allow_lan` opens (after Mullvad's list): RFC 1918,
/// link-local, local multicast, SSDP/mDNS-style site multicast, limited broadcast.
const LAN_V4: [(Ipv4Addr, u8); 7] = [
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(224, 0, 0, 0), 24),
    (Ipv4Addr::new(239, 255, 255, 250), 32),
    (Ipv4Addr::new(255, 255, 255, 255), 32),
];
/// Link-local, unique local, link-local multicast.
const LAN_V6: [(Ipv6Addr, u8); 3] = [
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0), 16),
];

/// Where the container/VM networks a forwarded reply may go back to live: RFC 1918 and
/// unique local addresses.
const PRIVATE: [(IpAddr, u8); 4] = [
    (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8),
    (IpAddr::V4(Ipv4Addr::new(172, 16, 0, 0)), 12),
    (IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)), 16),
    (IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)), 7),
];
/// Link-local unicast and multicast: where the underlay's housekeeping goes.
const LINK_LOCAL_V6: [(Ipv6Addr, u8); 2] = [
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0), 16),
];
/// The IPv4 limited broadcast (a DHCPv4 client's DISCOVER, REQUEST and REBIND).
const BROADCAST: Ipv4Addr = Ipv4Addr::BROADCAST;
/// `All_DHCP_Relay_Agents_and_Servers` (RFC 8415 §7.1).
const ALL_DHCP_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// ICMPv6 types (RFC 4443, RFC 4861, RFC 3810).
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const MLD_QUERY: u8 = 130;
const MLD_V1_REPORT: u8 = 131;
const MLD_V1_DONE: u8 = 132;
const MLD_V2_REPORT: u8 = 143;
const ND_ROUTER_SOLICIT: u8 = 133;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// ICMP destination unreachable (with "fragmentation needed").
const ICMP_DEST_UNREACH: u8 = 3;

/// A verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let the packet through (this table).
    Accept,
    /// Drop it (a local sender gets `EPERM`).
    Drop,
}

/// A transport protocol a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// ICMP (IPv4).
    Icmp,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMPv6.
    Icmpv6,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Icmp => 1,
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Icmpv6 => 58,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Icmp => "icmp",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmpv6 => "icmpv6",
        }
    }
}

/// One condition of a rule; a rule matches when all of its conditions do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// The output interface's name.
    Oifname(String),
    /// The input interface's name.
    Iifname(String),
    /// The destination address is in `address/prefix` (and of its family).
    Daddr(IpAddr, u8),
    /// The source address is in `address/prefix` (and of its family).
    Saddr(IpAddr, u8),
    /// The transport protocol.
    Protocol(Protocol),
    /// The transport destination port (after [`Match::Protocol`] TCP or UDP).
    Dport(u16),
    /// The transport source port (after [`Match::Protocol`] TCP or UDP).
    Sport(u16),
    /// The packet's mark (`SO_MARK` of the sending socket).
    Mark(u32),
    /// The ICMP or ICMPv6 type (after [`Match::Protocol`] ICMP or ICMPv6).
    IcmpType(u8),
    /// Connection tracking: a reply to, or an error about, traffic that was let out
    /// (`ct state established,related`).
    Established,
}

/// A rule: conditions, an optional counter, a verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// All must hold.
    pub matches: Vec<Match>,
    /// Count the packets (and bytes) the rule takes.
    pub counter: bool,
    /// What happens to them.
    pub verdict: Verdict,
}

impl Rule {
    fn accept(matches: Vec<Match>) -> Self {
        Self {
            matches,
            counter: false,
            verdict: Verdict::Accept,
        }
    }

    fn counted_drop(matches: Vec<Match>) -> Self {
        Self {
            matches,
            counter: true,
            verdict: Verdict::Drop,
        }
    }
}

/// Where a base chain hooks in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Packets for this host.
    Input,
    /// Packets this host sends.
    Output,
    /// Packets this host routes (containers, VMs).
    Forward,
}

impl Hook {
    /// The chain's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
            Self::Forward => "forward",
        }
    }
}

/// A base chain of the table (priority 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Its hook (and name).
    pub hook: Hook,
    /// What happens to packets no rule takes.
    pub policy: Verdict,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

/// The table for a set of policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    /// The base chains.
    pub chains: Vec<Chain>,
}

impl Ruleset {
    /// The table that gives every policy what it needs; `None` when no policy needs a rule.
    ///
    /// Several policies (several tunnels) are merged: the table allows the union of what they
    /// allow, and blocks when any of them blocks.
    pub fn of<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Option<Self> {
        // A tunnel that needs no rule of its own still needs its traffic let through when
        // another one blocks.
        let policies: Vec<&Policy> = policies.into_iter().collect();
        if !policies.iter().any(|p| p.needs_rules()) {
            return None;
        }
        let block = policies.iter().any(|p| p.block);
        let allow_lan = policies.iter().any(|p| p.block && p.allow_lan);
        let lock_dns = policies.iter().any(|p| !p.dns.is_empty());
        let mut tuns: Vec<&str> = policies
            .iter()
            .filter_map(|p| p.tun_name.as_deref())
            .collect();
        tuns.sort_unstable();
        tuns.dedup();
        let mut gateways: Vec<(IpAddr, u16)> = policies
            .iter()
            .flat_map(|p| {
                p.gateways
                    .iter()
                    .flat_map(|&g| p.ports.iter().map(move |&port| (g.to_canonical(), port)))
            })
            .collect();
        gateways.sort_unstable();
        gateways.dedup();
        let verdict = if block {
            Verdict::Drop
        } else {
            Verdict::Accept
        };

        let dns_drops = || {
            DNS_PORTS.into_iter().flat_map(|port| {
                [Protocol::Udp, Protocol::Tcp].map(|protocol| {
                    Rule::counted_drop(vec![Match::Protocol(protocol), Match::Dport(port)])
                })
            })
        };

        let mut output = vec![Rule::accept(vec![Match::Oifname("lo".into())])];
        output.extend(
            tuns.iter()
                .map(|tun| Rule::accept(vec![Match::Oifname((*tun).into())])),
        );
        // The driver's own lookups of the gateway's name (`platform::resolve`, marked like its
        // IKE socket): the one DNS that may leave outside the tunnel, so that a reconnect under
        // the kill switch finds a gateway that moved.
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            output.push(Rule::accept(vec![
                Match::Protocol(protocol),
                Match::Dport(53),
                Match::Mark(FWMARK),
            ]));
        }
        if lock_dns {
            output.extend(dns_drops());
        }
        if block {
            output.extend(gateways.iter().map(|&(gateway, port)| {
                Rule::accept(vec![
                    host(Match::Daddr, gateway),
                    Match::Protocol(Protocol::Udp),
                    Match::Dport(port),
                    Match::Mark(FWMARK),
                ])
            }));
            // DHCPv4 by broadcast (a renewal that cannot be unicast rebinds by broadcast),
            // DHCPv6 to its servers' multicast group.
            output.push(with(
                udp_ports(68, 67),
                host(Match::Daddr, IpAddr::V4(BROADCAST)),
            ));
            output.push(with(
                udp_ports(546, 547),
                host(Match::Daddr, IpAddr::V6(ALL_DHCP_SERVERS)),
            ));
            // Router and neighbour discovery and MLD reports, on the link only (and to an
            // on-link IPv6 gateway, whose neighbour entry must be kept fresh).
            let on_link: Vec<Match> = LINK_LOCAL_V6
                .iter()
                .map(|&(a, p)| Match::Daddr(IpAddr::V6(a), p))
                .chain(
                    gateways
                        .iter()
                        .map(|&(g, _)| g)
                        .filter(IpAddr::is_ipv6)
                        .map(|g| host(Match::Daddr, g)),
                )
                .collect();
            let mut seen = Vec::new();
            for destination in on_link {
                if seen.contains(&destination) {
                    continue;
                }
                for kind in [ND_ROUTER_SOLICIT, ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT] {
                    output.push(with(icmp(Protocol::Icmpv6, kind), destination.clone()));
                }
                seen.push(destination);
            }
            for kind in [MLD_V1_REPORT, MLD_V1_DONE, MLD_V2_REPORT] {
                output.push(with(
                    icmp(Protocol::Icmpv6, kind),
                    Match::Daddr(IpAddr::V6(LINK_LOCAL_V6[1].0), LINK_LOCAL_V6[1].1),
                ));
            }
            if allow_lan {
                output.extend(lan(Match::Daddr));
            }
            output.push(Rule::counted_drop(Vec::new()));
        }
        let mut chains = vec![Chain {
            hook: Hook::Output,
            policy: verdict,
            rules: output,
        }];
        if block {
            let mut input = vec![Rule::accept(vec![Match::Iifname("lo".into())])];
            input.extend(
                tuns.iter()
                    .map(|tun| Rule::accept(vec![Match::Iifname((*tun).into())])),
            );
            // Replies to what the output chain let out (the driver's DNS, DHCP), and the
            // ICMP errors about it (path MTU discovery for ESP).
            input.push(Rule::accept(vec![Match::Established]));
            input.extend(gateways.iter().map(|&(gateway, port)| {
                Rule::accept(vec![
                    host(Match::Saddr, gateway),
                    Match::Protocol(Protocol::Udp),
                    Match::Sport(port),
                ])
            }));
            input.push(udp_ports(67, 68));
            input.push(udp_ports(547, 546));
            for kind in [
                ICMPV6_PACKET_TOO_BIG,
                MLD_QUERY,
                ND_ROUTER_ADVERT,
                ND_NEIGHBOR_SOLICIT,
                ND_NEIGHBOR_ADVERT,
            ] {
                input.push(icmp(Protocol::Icmpv6, kind));
            }
            input.push(icmp(Protocol::Icmp, ICMP_DEST_UNREACH));
            if allow_lan {
                input.extend(lan(Match::Saddr));
            }
            input.push(Rule::counted_drop(Vec::new()));
            chains.push(Chain {
                hook: Hook::Input,
                policy: Verdict::Drop,
                rules: input,
            });
        }
        if block || lock_dns {
            // Containers and VMs behind this host: into the tunnel, and its replies back to
            // their private networks; never from the tunnel out to the underlay in clear.
            let mut forward: Vec<Rule> = tuns
                .iter()
                .map(|tun| Rule::accept(vec![Match::Oifname((*tun).into())]))
                .collect();
            if lock_dns {
                forward.extend(dns_drops());
            }
            if block {
                for tun in &tuns {
                    for &(network, prefix) in &PRIVATE {
                        forward.push(Rule::accept(vec![
                            Match::Iifname((*tun).into()),
                            Match::Daddr(network, prefix),
                            Match::Established,
                        ]));
                    }
                }
                if allow_lan {
                    forward.extend(lan(Match::Daddr));
                }
                forward.push(Rule::counted_drop(Vec::new()));
            }
            chains.push(Chain {
                hook: Hook::Forward,
                policy: verdict,
                rules: forward,
            });
        }
        Some(Self { chains })
    }
}

fn host(kind: fn(IpAddr, u8) -> Match, address: IpAddr) -> Match {
    let prefix = if address.is_ipv4() { 32 } else { 128 };
    kind(address, prefix)
}

fn udp_ports(sport: u16, dport: u16) -> Rule {
    Rule::accept(vec![
        Match::Protocol(Protocol::Udp),
        Match::Sport(sport),
        Match::Dport(dport),
    ])
}

/// `rule` with one more condition, tested first.
fn with(mut rule: Rule, condition: Match) -> Rule {
    rule.matches.insert(0, condition);
    rule
}

fn icmp(protocol: Protocol, kind: u8) -> Rule {
    Rule::accept(vec![Match::Protocol(protocol), Match::IcmpType(kind)])
}

fn lan(kind: fn(IpAddr, u8) -> Match) -> impl Iterator<Item = Rule> {
    let v4 = LAN_V4.iter().map(|&(a, p)| (IpAddr::V4(a), p));
    let v6 = LAN_V6.iter().map(|&(a, p)| (IpAddr::V6(a), p));
    v4.chain(v6)
        .map(move |(address, prefix)| Rule::accept(vec![kind(address, prefix)]))
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = |a: &IpAddr| if a.is_ipv4() { "ip" } else { "ip6" };
        let full = |a: &IpAddr, p: u8| (a.is_ipv4() && p == 32) || (a.is_ipv6() && p == 128);
        match self {
            Self::Oifname(name) => write!(f, "oifname \"{name}\""),
            Self::Iifname(name) => write!(f, "iifname \"{name}\""),
            Self::Daddr(a, p) if full(a, *p) => write!(f, "{} daddr {a}", family(a)),
            Self::Daddr(a, p) => write!(f, "{} daddr {a}/{p}", family(a)),
            Self::Saddr(a, p) if full(a, *p) => write!(f, "{} saddr {a}", family(a)),
            Self::Saddr(a, p) => write!(f, "{} saddr {a}/{p}", family(a)),
            Self::Protocol(protocol) => write!(f, "meta l4proto {}", protocol.name()),
            Self::Dport(port) => write!(f, "th dport {port}"),
            Self::Sport(port) => write!(f, "th sport {port}"),
            Self::Mark(mark) => write!(f, "meta mark {mark:#010x}"),
            Self::IcmpType(kind) => write!(f, "@th,0,8 {kind}"),
            Self::Established => f.write_str("ct state established,related"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        if self.counter {
            f.write_str("counter ")?;
        }
        f.write_str(match self.verdict {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
        })
    }
}

impl fmt::Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table inet {TABLE} {{")?;
        for chain in &self.chains {
            let policy = match chain.policy {
                Verdict::Accept => "accept",
                Verdict::Drop => "drop",
            };
            writeln!(f, "\tchain {} {{", chain.hook.name())?;
            writeln!(
                f,
                "\t\ttype filter hook {} priority filter; policy {policy};",
                chain.hook.name()
            )?;
            for rule in &chain.rules {
                writeln!(f, "\t\t{rule}")?;
            }
            writeln!(f, "\t}}")?;
        }
        writeln!(f, "}}")
    }
}
