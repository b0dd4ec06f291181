//! The kill switch: a firewall table of our own that lets only the tunnel, the tunnel's own
//! IKE/ESP to the gateway and the underlay's housekeeping (DHCP, neighbour discovery) through,
//! and keeps DNS from leaving outside the tunnel.
//!
//! | item | what |
//! | --- | --- |
//! | [`Policy`] | what one tunnel needs let through |
//! | [`Ruleset`] | the table for a set of policies (pure; `Display` prints it in `nft` syntax) |
//! | [`Firewall`] | the installed table, replaced atomically on each change and journaled |
//! | [`unblock`] | lifts a table a crashed run left (`pqvpn recover --unblock`) |
//!
//! Linux: one nftables table, `inet pqvpn`, with `input`, `output` and `forward` base chains
//! (priority 0), written in one netlink batch (one nf_tables transaction: the old table goes
//! and the new one comes atomically, so no packet ever sees a half-built ruleset). Other
//! systems return [`Error::Unsupported`] (their WFP and pf come
//! with their platform).
//!
//! ## Fail closed
//!
//! The table is not bound to the process (no `NFT_TABLE_F_OWNER`): a crash or `SIGKILL` leaves
//! it in the kernel, so traffic stays blocked until a pqvpn process decides. The journal
//! (`STATE_DIR/firewall.netns-<inode>.journal`, mode 0600, written before each change) records
//! which policies the table holds; the next [`Firewall`] in the namespace adopts them, and
//! [`unblock`] lifts them by hand. Two live processes never share the table: a [`Firewall`]
//! holds an `flock` on `STATE_DIR/firewall.netns-<inode>.lock` for its lifetime (the kernel
//! drops it when the process dies), and a second [`Firewall::open`] fails with
//! [`Error::FirewallHeld`].
//!
//! ## What each policy lets through
//!
//! With `block` (the kill switch) the chains drop by default, and allow only: loopback; the
//! tunnel interface; UDP to the gateway's IKE and NAT-T ports **from a socket carrying
//! [`FWMARK`]** (the driver's), and the replies from those ports; DHCPv4,
//! DHCPv6 and ICMPv6 router/neighbour discovery on the underlay, ICMP "unreachable" and
//! ICMPv6 "packet too big" in (path MTU discovery for ESP); and, with `allow_lan`, the
//! private and link-local ranges (never what the network's DHCP calls its LAN: TunnelCrack
//! LocalNet). Forwarded traffic (containers, VMs) may only use the tunnel.
//!
//! With pushed DNS servers ([`Policy::dns`]) DNS (TCP and UDP 53, DoT 853) is dropped unless it
//! leaves through a tunnel, whether or not `block` is set: a split tunnel's queries cannot go
//! to the network's resolver.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;
use super::FWMARK;
use super::state;

/// The table's name (family `inet`).
pub const TABLE: &str = "pqvpn";

/// Format version of the journal.
const VERSION: u32 = 1;

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

/// What one tunnel needs let through, and whether everything else is blocked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The TUN interface once it exists; everything through it is allowed.
    pub tun_name: Option<String>,
    /// The gateway's addresses.
    pub gateways: Vec<IpAddr>,
    /// The gateway's IKE and NAT-T ports.
    pub ports: Vec<u16>,
    /// The kill switch: drop everything the policies do not allow.
    pub block: bool,
    /// With `block`: let the private and link-local ranges through.
    pub allow_lan: bool,
    /// DNS servers pushed by the gateway: DNS leaves only through the tunnel. Which server a
    /// query through the tunnel goes to is the gateway's business (it carries it); what the
    /// lock prevents is a query leaving outside the tunnel, to any address.
    pub dns: Vec<IpAddr>,
}

impl Policy {
    /// Whether the policy needs any rule at all.
    pub fn needs_rules(&self) -> bool {
        self.block || !self.dns.is_empty()
    }
}

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

/// What the journal holds: the policies the table was built from, and whose they are.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Journal {
    version: u32,
    /// The process that installed the table.
    owner_pid: u32,
    /// Policy by key (the profile name).
    policies: BTreeMap<String, Policy>,
}

/// The kill-switch table of this network namespace, held by one process.
///
/// Each change rebuilds the whole table from the policies and replaces it in one transaction.
/// Dropping the value leaves the table as it is (fail closed); [`clear`](Self::clear) lifts it.
#[derive(Debug)]
pub struct Firewall {
    /// The `flock`ed lock file: held for the value's lifetime, released by the kernel when the
    /// process dies, so a crash never leaves the table "held".
    _lock: fs::File,
    journal_path: PathBuf,
    policies: BTreeMap<String, Policy>,
    /// Whether our table may be in the kernel (we installed it, or a crashed run did).
    installed: bool,
}

impl Firewall {
    /// The firewall of this network namespace, journaled in `state_dir`. A journal left by a
    /// run that crashed is adopted: its policies stay in force until they are replaced,
    /// removed, or [`clear`](Self::clear)ed.
    ///
    /// # Errors
    ///
    /// [`Error::FirewallHeld`] when another live process holds the table (its lock);
    /// [`Error::StateFile`]/[`Error::StateParse`] when the journal cannot be read or adopted.
    pub fn open(state_dir: &Path) -> Result<Self, Error> {
        let lock = lock(state_dir)?;
        let journal_path = journal_path(state_dir);
        let (policies, installed) = match read_journal(&journal_path)? {
            // Nobody holds the lock: whoever wrote the journal is gone. Adopt it, as ours.
            Some(journal) => {
                write_journal(
                    &journal_path,
                    &Journal {
                        version: VERSION,
                        owner_pid: std::process::id(),
                        policies: journal.policies.clone(),
                    },
                )?;
                (journal.policies, true)
            }
            None => (BTreeMap::new(), false),
        };
        Ok(Self {
            _lock: lock,
            journal_path,
            policies,
            installed,
        })
    }

    /// The policy installed under `key`, if any (after [`open`](Self::open): the crashed
    /// run's).
    pub fn policy(&self, key: &str) -> Option<&Policy> {
        self.policies.get(key)
    }

    /// The keys of the installed policies.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }

    /// Whether the table blocks traffic now.
    pub fn blocking(&self) -> bool {
        self.policies.values().any(|p| p.block)
    }

    /// The table as it is (or would be) installed.
    pub fn ruleset(&self) -> Option<Ruleset> {
        Ruleset::of(self.policies.values())
    }

    /// Installs `policy` under `key` (replacing the one there) and the table with it.
    ///
    /// # Errors
    ///
    /// [`Error::Firewall`] when the kernel refuses the table (the previous one then stays);
    /// [`Error::StateFile`] when the journal cannot be written.
    pub fn set(&mut self, key: &str, policy: Policy) -> Result<(), Error> {
        if self.policies.get(key) == Some(&policy) && self.installed {
            return Ok(());
        }
        self.change(|policies| {
            policies.insert(key.to_owned(), policy);
        })
    }

    /// Removes `key`'s policy; the table shrinks, or goes when no policy is left.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set).
    pub fn remove(&mut self, key: &str) -> Result<(), Error> {
        if !self.policies.contains_key(key) && !self.installed {
            return Ok(());
        }
        self.change(|policies| {
            policies.remove(key);
        })
    }

    /// Keeps only the policies whose key `keep` accepts (after adopting a crashed run's:
    /// those of tunnels that are not coming back).
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) -> Result<(), Error> {
        if self.policies.keys().all(|key| keep(key)) {
            return Ok(());
        }
        self.change(|policies| policies.retain(|key, _| keep(key)))
    }

    /// Removes every policy and the table.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set).
    pub fn clear(&mut self) -> Result<(), Error> {
        self.change(BTreeMap::clear)
    }

    /// Applies `edit` to the policies and commits them; when that fails the policies, and the
    /// journal, are what they were (the kernel keeps the table it had: a refused transaction
    /// changes nothing).
    fn change(&mut self, edit: impl FnOnce(&mut BTreeMap<String, Policy>)) -> Result<(), Error> {
        let before = self.policies.clone();
        edit(&mut self.policies);
        let result = self.commit();
        if result.is_err() {
            self.policies = before;
            let journal = Journal {
                version: VERSION,
                owner_pid: std::process::id(),
                policies: self.policies.clone(),
            };
            let restored = if self.installed {
                write_journal(&self.journal_path, &journal)
            } else {
                remove_journal(&self.journal_path)
            };
            if let Err(error) = restored {
                tracing::warn!(%error, "the kill switch's journal could not be restored");
            }
        }
        result
    }

    /// Journals the policies, then installs their table (or deletes it when none is needed).
    fn commit(&mut self) -> Result<(), Error> {
        match Ruleset::of(self.policies.values()) {
            Some(ruleset) => {
                write_journal(
                    &self.journal_path,
                    &Journal {
                        version: VERSION,
                        owner_pid: std::process::id(),
                        policies: self.policies.clone(),
                    },
                )?;
                // One transaction: refused, the kernel keeps the table it had (or none).
                imp::replace(&ruleset).map_err(|source| Error::Firewall("install", source))?;
                self.installed = true;
                Ok(())
            }
            None => {
                if self.installed {
                    imp::delete().map_err(|source| Error::Firewall("remove", source))?;
                    self.installed = false;
                }
                // The table is gone: that stands even if its journal cannot be deleted (the
                // next run adopting it deletes a table that is not there, harmlessly).
                if let Err(error) = remove_journal(&self.journal_path) {
                    tracing::warn!(error = %super::DisplayChain(&error), "the kill switch's journal stays");
                }
                Ok(())
            }
        }
    }
}

/// Lifts the table a crashed run left in this network namespace (`pqvpn recover --unblock`)
/// and deletes its journal; returns whether there was one. The table is deleted even without
/// a journal, or with one that cannot be read.
///
/// # Errors
///
/// [`Error::FirewallHeld`] when a live process holds the table (disconnect it instead);
/// [`Error::Firewall`] when the kernel refuses.
pub fn unblock(state_dir: &Path) -> Result<bool, Error> {
    let _lock = lock(state_dir)?;
    let path = journal_path(state_dir);
    let had_journal = match read_journal(&path) {
        Ok(journal) => journal.is_some(),
        Err(error) => {
            tracing::warn!(error = %super::DisplayChain(&error), "lifting the kill switch anyway");
            true
        }
    };
    imp::delete().map_err(|source| Error::Firewall("remove", source))?;
    remove_journal(&path)?;
    Ok(had_journal)
}

/// The policies a run that is no longer alive left blocking in this namespace, by key; empty
/// when there is no stale table, or a live process holds it.
///
/// # Errors
///
/// When the journal cannot be read.
pub fn stale(state_dir: &Path) -> Result<BTreeMap<String, Policy>, Error> {
    match lock(state_dir) {
        Ok(_lock) => Ok(read_journal(&journal_path(state_dir))?
            .map(|journal| journal.policies)
            .unwrap_or_default()),
        Err(Error::FirewallHeld { .. }) => Ok(BTreeMap::new()),
        Err(error) => Err(error),
    }
}

/// Takes this namespace's firewall lock (`flock`, not blocking) and writes our pid in it.
fn lock(state_dir: &Path) -> Result<fs::File, Error> {
    use std::io::{Read as _, Seek as _, Write as _};

    let path = journal_path(state_dir).with_extension("lock");
    let error = |what, source| Error::StateFile {
        what,
        path: path.clone(),
        source,
    };
    state::create_dir(state_dir)?;
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|source| error("open", source))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(Error::FirewallHeld {
                pid: pid.trim().parse().unwrap_or(0),
            });
        }
        Err(fs::TryLockError::Error(source)) => return Err(error("lock", source)),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()))
        .map_err(|source| error("write", source))?;
    Ok(file)
}

fn journal_path(state_dir: &Path) -> PathBuf {
    // Not `.json`: the route state files' `recover` must not read it.
    match state::current_netns() {
        0 => state_dir.join("firewall.journal"),
        netns => state_dir.join(format!("firewall.netns-{netns}.journal")),
    }
}

fn read_journal(path: &Path) -> Result<Option<Journal>, Error> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::StateFile {
                what: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let journal: Journal = serde_json::from_slice(&bytes).map_err(|source| Error::StateParse {
        path: path.to_owned(),
        source,
    })?;
    if journal.version != VERSION {
        return Err(Error::StateParse {
            path: path.to_owned(),
            source: serde::de::Error::custom(format!(
                "unknown journal version {}",
                journal.version
            )),
        });
    }
    Ok(Some(journal))
}

fn write_journal(path: &Path, journal: &Journal) -> Result<(), Error> {
    let error = |source| Error::StateFile {
        what: "write",
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        state::create_dir(parent)?;
    }
    let bytes = serde_json::to_vec_pretty(journal).map_err(|source| Error::StateParse {
        path: path.to_owned(),
        source,
    })?;
    state::write_atomically(path, &bytes, 0o600).map_err(error)
}

fn remove_journal(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::StateFile {
            what: "delete",
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(target_os = "linux")]
use super::nftables as imp;

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    use super::Ruleset;

    pub(super) fn replace(_: &Ruleset) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no firewall implementation on this platform yet",
        ))
    }

    pub(super) fn delete() -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[path = "firewall_tests.rs"]
mod tests;
