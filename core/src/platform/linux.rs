//! Linux: tun-rs for the device, rtnetlink for addresses, routes and rules, systemd-resolved or
//! resolv.conf for DNS.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::dns;
use super::netlink::{Netlink, TABLE_MAIN};
use super::state::{Change, RouteSpec, RuleSelector, RuleSpec, StateFile, undo_all};
use super::{
    DisplayChain, DnsBackend, Error, FWMARK, NetworkConfig, ROUTE_TABLE, RULE_PRIORITY_GATEWAY,
    RULE_PRIORITY_SUPPRESS, RULE_PRIORITY_TUNNEL, Tun, TunConfig,
};

/// errno values the undo path treats as "already gone".
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
/// IPv6 disabled in the kernel.
const EAFNOSUPPORT: i32 = 97;

/// The default resolv.conf.
const RESOLV_CONF: &str = "/etc/resolv.conf";

pub(super) fn create_tun(config: &TunConfig) -> Result<Tun, Error> {
    let mut builder = tun_rs::DeviceBuilder::new()
        .mtu(config.mtu)
        .packet_information(false)
        .enable(false);
    if let Some(name) = &config.name {
        builder = builder.name(name.clone());
    }
    let device = builder.build_async().map_err(Error::CreateTun)?;
    let name = device.name().map_err(Error::QueryTun)?;
    let index = device.if_index().map_err(Error::QueryTun)?;

    let mut netlink = Netlink::open().map_err(Error::Netlink)?;
    // Before the link goes up, so it never gets a link-local address and sends no router
    // solicitations or MLD reports into the tunnel. Fails only when IPv6 is disabled.
    if let Err(error) = netlink.disable_ipv6_link_local(index) {
        tracing::debug!(%error, "could not disable IPv6 link-local addressing on the TUN");
    }
    for &(address, prefix) in &config.addresses {
        netlink
            .add_address(index, address, prefix)
            .map_err(|source| Error::AddAddress {
                address,
                prefix,
                source,
            })?;
    }
    netlink.set_link_up(index).map_err(Error::LinkUp)?;
    Ok(Tun::from_parts(device, name, index, config.mtu))
}

pub(super) fn apply(config: &NetworkConfig, state_dir: &Path) -> Result<StateFile, Error> {
    validate(config)?;
    if let Some(path) = StateFile::existing(state_dir, &config.tun_name)? {
        tracing::warn!(path = %path.display(), "undoing a stale state file first");
        restore(StateFile::load(&path)?)?;
    }
    let mut state = StateFile::create(state_dir, &config.tun_name)?;
    let mut netlink = Netlink::open().map_err(Error::Netlink)?;
    match install(config, &mut state, &mut netlink) {
        Ok(()) => Ok(state),
        Err(error) => {
            if let Err(restore_error) = restore(state) {
                tracing::warn!(
                    error = %DisplayChain(&restore_error),
                    "undoing a partly applied network configuration failed"
                );
            }
            Err(error)
        }
    }
}

/// Undoes the recorded changes newest first; deletes the state file when all succeeded, else
/// keeps only the changes still to undo.
pub(super) fn restore(mut state: StateFile) -> Result<(), Error> {
    let total = state.changes().len();
    let mut netlink = None;
    let (failed, first) = undo_all(state.changes(), |change| undo(change, &mut netlink));
    match first {
        None => state.remove(),
        Some(first) => {
            let count = failed.len();
            if let Err(error) = state.set_changes(failed) {
                tracing::warn!(error = %DisplayChain(&error), "could not update the state file");
            }
            Err(Error::Restore {
                failed: count,
                total,
                first: Box::new(first),
            })
        }
    }
}

fn validate(config: &NetworkConfig) -> Result<(), Error> {
    for &(address, prefix) in &config.routes {
        if prefix > max_prefix(address) {
            return Err(Error::InvalidConfig(format!(
                "{address}/{prefix} is not a valid route"
            )));
        }
    }
    if !config.full_tunnel {
        // The tunnel's own ESP and IKE would follow such a route into the TUN (no fwmark rules
        // in a split tunnel): a loop, or with a gateway-pushed route TunnelCrack's ServerIP.
        let gateway = config.gateway.ip().to_canonical();
        if let Some(&(address, prefix)) = config
            .routes
            .iter()
            .find(|&&(address, prefix)| covers(address, prefix, gateway))
        {
            return Err(Error::InvalidConfig(format!(
                "the split-tunnel route {}/{prefix} covers the gateway {gateway}, so the \
                 tunnel's own IKE and ESP packets would be routed into the tunnel; remove or \
                 narrow the route",
                network(address, prefix)
            )));
        }
    }
    if let Some(domain) = config
        .dns_domains
        .iter()
        .find(|domain| !dns::valid_domain(domain))
    {
        return Err(Error::InvalidConfig(format!(
            "{domain:?} is not a valid DNS domain"
        )));
    }
    Ok(())
}

fn install(
    config: &NetworkConfig,
    state: &mut StateFile,
    netlink: &mut Netlink,
) -> Result<(), Error> {
    for change in plan_routing(config) {
        state.record(change.clone())?;
        if let Err(error) = make(netlink, &change) {
            state.forget_last()?;
            if ipv6_unavailable(&change, &error) {
                tracing::info!(?change, "IPv6 is disabled; skipping its tunnel routing");
                continue;
            }
            return Err(error);
        }
    }
    if config.dns_servers.is_empty() {
        return Ok(());
    }
    let resolv_conf = match &config.dns_backend {
        DnsBackend::None => return Ok(()),
        DnsBackend::Auto if dns::resolved_running() => None,
        DnsBackend::Auto => Some(Path::new(RESOLV_CONF)),
        DnsBackend::Resolved => None,
        DnsBackend::ResolvConf(path) => Some(path.as_path()),
    };
    match resolv_conf {
        Some(path) => {
            dns::replace_resolv_conf(state, path, &config.dns_servers, &config.dns_domains)
        }
        None => {
            // Kept even when the call fails halfway: reverting is harmless.
            state.record(Change::ResolvedLink {
                ifindex: config.tun_index,
            })?;
            dns::resolved_set_link(
                config.tun_index,
                &config.dns_servers,
                &config.dns_domains,
                config.full_tunnel,
            )
        }
    }
}

/// The routes and rules for `config`, in the order they are installed (the rule that diverts
/// traffic into the tunnel comes last, so it is also the first to go).
fn plan_routing(config: &NetworkConfig) -> Vec<Change> {
    let oif = config.tun_index;
    if !config.full_tunnel {
        // The profile's routes and the gateway's INTERNAL_IP4_SUBNETs may name the same network
        // (a second RTM_NEWROUTE would fail with EEXIST): one route per network, first kept.
        let mut changes: Vec<Change> = Vec::with_capacity(config.routes.len());
        for &(address, prefix) in &config.routes {
            let route = Change::Route(RouteSpec {
                destination: network(address, prefix),
                prefix,
                table: TABLE_MAIN,
                oif,
            });
            if !changes.contains(&route) {
                changes.push(route);
            }
        }
        return changes;
    }
    let unspecified = [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ];
    let mut changes: Vec<Change> = unspecified
        .iter()
        .map(|&destination| {
            Change::Route(RouteSpec {
                destination,
                prefix: 0,
                table: ROUTE_TABLE,
                oif,
            })
        })
        .collect();
    // Only IKE and ESP to the gateway bypass the tunnel, not every protocol (TunnelCrack
    // ServerIP); both ports, or one when the IKE port is the NAT-T port.
    let gateway = config.gateway.ip().to_canonical();
    let mut ports = vec![config.ike_port, config.nat_t_port];
    ports.dedup();
    for port in ports {
        changes.push(Change::Rule(RuleSpec {
            ipv6: gateway.is_ipv6(),
            priority: RULE_PRIORITY_GATEWAY,
            table: TABLE_MAIN,
            selector: RuleSelector::ToUdpPort {
                destination: gateway,
                prefix: max_prefix(gateway),
                port,
            },
        }));
    }
    // Without these no main-table route (the LAN, or a hostile DHCP's 0.0.0.0/1) wins over
    // the tunnel's default route (TunnelCrack LocalNet).
    if !config.block_lan {
        for ipv6 in [false, true] {
            changes.push(Change::Rule(RuleSpec {
                ipv6,
                priority: RULE_PRIORITY_SUPPRESS,
                table: TABLE_MAIN,
                selector: RuleSelector::SuppressPrefixLength { length: 0 },
            }));
        }
    }
    for ipv6 in [false, true] {
        changes.push(Change::Rule(RuleSpec {
            ipv6,
            priority: RULE_PRIORITY_TUNNEL,
            table: ROUTE_TABLE,
            selector: RuleSelector::NotFwmark { mark: FWMARK },
        }));
    }
    changes
}

fn make(netlink: &mut Netlink, change: &Change) -> Result<(), Error> {
    match change {
        Change::Route(route) => netlink
            .add_route(route)
            .map_err(|source| Error::AddRoute(route.to_string(), source)),
        Change::Rule(rule) => netlink
            .add_rule(rule)
            .map_err(|source| Error::AddRule(rule.to_string(), source)),
        Change::ResolvedLink { .. } | Change::ResolvConf { .. } => Ok(()),
    }
}

fn undo(change: &Change, netlink: &mut Option<Netlink>) -> Result<(), Error> {
    let netlink = match (change, netlink.as_mut()) {
        (Change::Route(_) | Change::Rule(_), Some(netlink)) => Some(netlink),
        (Change::Route(_) | Change::Rule(_), None) => {
            Some(netlink.insert(Netlink::open().map_err(Error::Netlink)?))
        }
        _ => None,
    };
    match (change, netlink) {
        (Change::Route(route), Some(netlink)) => match netlink.delete_route(route) {
            Err(error) if !already_gone(&error) => {
                Err(Error::DeleteRoute(route.to_string(), error))
            }
            _ => Ok(()),
        },
        (Change::Rule(rule), Some(netlink)) => match netlink.delete_rule(rule) {
            Err(error) if !already_gone(&error) => Err(Error::DeleteRule(rule.to_string(), error)),
            _ => Ok(()),
        },
        (Change::ResolvedLink { ifindex }, _) => dns::resolved_revert(*ifindex),
        (Change::ResolvConf { path, original }, _) => dns::restore_resolv_conf(path, original),
        (Change::Route(_) | Change::Rule(_), None) => Ok(()),
    }
}

fn already_gone(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(ENOENT | ESRCH | ENODEV | EAFNOSUPPORT)
    )
}

fn ipv6_unavailable(change: &Change, error: &Error) -> bool {
    let is_ipv6 = match change {
        Change::Route(route) => route.destination.is_ipv6(),
        Change::Rule(rule) => rule.ipv6,
        Change::ResolvedLink { .. } | Change::ResolvConf { .. } => false,
    };
    let source = match error {
        Error::AddRoute(_, source) | Error::AddRule(_, source) => Some(source),
        _ => None,
    };
    is_ipv6 && source.is_some_and(|source| source.raw_os_error() == Some(EAFNOSUPPORT))
}

fn max_prefix(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Whether the network `address/prefix` contains `ip` (same address family only).
fn covers(address: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    address.is_ipv4() == ip.is_ipv4() && network(address, prefix) == network(ip, prefix)
}

/// Clears the host bits of `address` (the kernel refuses routes with host bits set).
fn network(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
#[path = "linux_tests.rs"]
mod tests;
