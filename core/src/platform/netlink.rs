//! A small blocking rtnetlink client: link, address, route and rule requests with ACKs.
//!
//! Blocking on purpose: restoring runs from `Drop` and from `recover` before any runtime
//! exists, and each request is one round trip to the kernel.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute, LinkFlags, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{
    RuleAction, RuleAttribute, RuleFlags, RuleMessage, RulePortRange,
};
use netlink_packet_route::{AddressFamily, IpProtocol, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::state::{RouteSpec, RuleSelector, RuleSpec};

/// `RT_TABLE_UNSPEC`: the header's 8-bit table field when the table is in an attribute.
const TABLE_UNSPEC: u8 = 0;
/// `RT_TABLE_MAIN`.
pub(super) const TABLE_MAIN: u32 = 254;

/// A connected `NETLINK_ROUTE` socket.
pub(super) struct Netlink {
    socket: Socket,
    sequence: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub(super) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// Disables IPv6 link-local address generation on a link (`addrgenmode none`).
    pub(super) fn disable_ipv6_link_local(&mut self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message
            .attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]));
        self.request(RouteNetlinkMessage::SetLink(message), 0)
    }

    /// Sets a link administratively up.
    pub(super) fn set_link_up(&mut self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(message), 0)
    }

    /// Adds `address/prefix` to a link (IPv6 without duplicate address detection).
    pub(super) fn add_address(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix: u8,
    ) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = family(address);
        message.header.prefix_len = prefix;
        message.header.index = index;
        if address.is_ipv6() {
            message.header.flags = AddressHeaderFlags::Nodad;
        }
        message.attributes.push(AddressAttribute::Local(address));
        message.attributes.push(AddressAttribute::Address(address));
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Adds a route; fails with `EEXIST` when it is already there.
    pub(super) fn add_route(&mut self, route: &RouteSpec) -> io::Result<()> {
        let message = route_message(route, false);
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Deletes a route.
    pub(super) fn delete_route(&mut self, route: &RouteSpec) -> io::Result<()> {
        let message = route_message(route, true);
        self.request(RouteNetlinkMessage::DelRoute(message), 0)
    }

    /// Adds a rule; fails with `EEXIST` when an identical rule is there.
    pub(super) fn add_rule(&mut self, rule: &RuleSpec) -> io::Result<()> {
        self.request(
            RouteNetlinkMessage::NewRule(rule_message(rule)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Deletes a rule.
    pub(super) fn delete_rule(&mut self, rule: &RuleSpec) -> io::Result<()> {
        self.request(RouteNetlinkMessage::DelRule(rule_message(rule)), 0)
    }

    /// Sends one request and waits for its ACK (or error).
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.exchange(message, NLM_F_ACK | flags).map(|_| ())
    }

    /// The route the kernel picks for a packet to `destination` carrying `mark`
    /// (`RTM_GETROUTE`, as `ip route get ADDRESS mark MARK`); an error such as
    /// `ENETUNREACH` when there is none.
    pub(super) fn route_to(&mut self, destination: IpAddr, mark: u32) -> io::Result<RouteMessage> {
        let mut message = RouteMessage::default();
        message.header.address_family = family(destination);
        message.header.destination_prefix_length = if destination.is_ipv4() { 32 } else { 128 };
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(destination)));
        message.attributes.push(RouteAttribute::Mark(mark));
        match self.exchange(RouteNetlinkMessage::GetRoute(message), 0)? {
            Some(RouteNetlinkMessage::NewRoute(route)) => Ok(route),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "RTM_GETROUTE answered without a route",
            )),
        }
    }

    /// Sends one request; returns the first message answering it, or `None` for a bare ACK
    /// (or the end of a dump), or the kernel's error.
    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Option<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = sequence;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        request.finalize();
        let mut buffer = vec![0; request.buffer_len()];
        request.serialize(&mut buffer);
        self.socket.send(&buffer, 0)?;

        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            let mut rest = datagram.as_slice();
            while !rest.is_empty() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                let length = usize::try_from(reply.header.length).unwrap_or(usize::MAX);
                rest = rest.get(length.max(1)..).unwrap_or_default();
                if reply.header.sequence_number != sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(error) if error.code.is_none() => return Ok(None),
                    NetlinkPayload::Error(error) => return Err(error.to_io()),
                    NetlinkPayload::Done(_) => return Ok(None),
                    NetlinkPayload::InnerMessage(inner) => return Ok(Some(inner)),
                    _ => {}
                }
            }
        }
    }
}

fn family(address: IpAddr) -> AddressFamily {
    match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn table_header(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(TABLE_UNSPEC)
}

fn route_message(route: &RouteSpec, delete: bool) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = family(route.destination);
    message.header.destination_prefix_length = route.prefix;
    message.header.table = table_header(route.table);
    message.header.protocol = RouteProtocol::Static;
    message.header.kind = RouteType::Unicast;
    message.header.scope = match (delete, route.destination) {
        // "Any scope", as `ip route del` sends.
        (true, _) => RouteScope::NoWhere,
        (false, IpAddr::V4(_)) => RouteScope::Link,
        (false, IpAddr::V6(_)) => RouteScope::Universe,
    };
    if route.prefix > 0 {
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                route.destination,
            )));
    }
    message.attributes.push(RouteAttribute::Oif(route.oif));
    message.attributes.push(RouteAttribute::Table(route.table));
    message
}

pub(super) fn rule_message(rule: &RuleSpec) -> RuleMessage {
    let mut message = RuleMessage::default();
    message.header.family = if rule.ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    message.header.action = RuleAction::ToTable;
    message.header.table = table_header(rule.table);
    message
        .attributes
        .push(RuleAttribute::Priority(rule.priority));
    message.attributes.push(RuleAttribute::Table(rule.table));
    match &rule.selector {
        RuleSelector::NotFwmark { mark } => {
            message.header.flags = RuleFlags::Invert;
            message.attributes.push(RuleAttribute::FwMark(*mark));
            message.attributes.push(RuleAttribute::FwMask(u32::MAX));
        }
        RuleSelector::SuppressPrefixLength { length } => {
            message
                .attributes
                .push(RuleAttribute::SuppressPrefixLen(*length));
        }
        RuleSelector::To {
            destination,
            prefix,
        } => {
            message.header.dst_len = *prefix;
            message
                .attributes
                .push(RuleAttribute::Destination(*destination));
        }
        RuleSelector::ToUdpPort {
            destination,
            prefix,
            port,
        } => {
            message.header.dst_len = *prefix;
            message
                .attributes
                .push(RuleAttribute::Destination(*destination));
            // FRA_IP_PROTO and FRA_DPORT_RANGE (`struct fib_rule_port_range`, host order).
            message
                .attributes
                .push(RuleAttribute::IpProtocol(IpProtocol::Udp));
            message
                .attributes
                .push(RuleAttribute::DestinationPortRange(RulePortRange {
                    start: *port,
                    end: *port,
                }));
        }
    }
    message
}
