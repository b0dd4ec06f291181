//! Network changes, as the driver needs them: which way the driver's own (marked) packets to
//! the gateway leave ([`path_to`]), and a stream of "something in the routing state changed"
//! ([`Monitor`]) after which that is asked again.
//!
//! Linux: `RTM_GETROUTE` for the gateway with [`FWMARK`] (the packets bypass the tunnel's
//! table, so the tunnel's own routes never count as a change), and a `NETLINK_ROUTE` socket
//! subscribed to link, address and route events. Other systems: not yet
//! ([`io::ErrorKind::Unsupported`]); their monitor comes with their platform.

use std::io;
use std::net::IpAddr;

#[cfg(target_os = "linux")]
use super::FWMARK;

/// How the driver's packets to the gateway leave this host: the route the kernel picks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// The outgoing interface's index.
    pub interface: u32,
    /// The source address the kernel picks (the one the gateway sees, before any NAT).
    pub source: Option<IpAddr>,
    /// The next hop, when not on-link.
    pub via: Option<IpAddr>,
}

/// The path to `gateway` now, `None` when it is unreachable (no route: the link is down, or
/// the network has no default route).
///
/// # Errors
///
/// When the kernel cannot be asked.
pub fn path_to(gateway: IpAddr) -> io::Result<Option<Path>> {
    imp::path_to(gateway)
}

/// Link, address and route events of this network namespace.
pub struct Monitor {
    inner: imp::Monitor,
}

impl Monitor {
    /// Subscribes to the events (in the calling thread's network namespace; inside a tokio
    /// runtime).
    ///
    /// # Errors
    ///
    /// When the socket cannot be made or subscribed.
    pub fn open() -> io::Result<Self> {
        imp::Monitor::open().map(|inner| Self { inner })
    }

    /// Returns once at least one event arrived, having read every event queued so far (a
    /// burst is one change). An overrun (`ENOBUFS`: events were lost) counts as a change.
    ///
    /// # Errors
    ///
    /// When the socket fails.
    pub async fn changed(&mut self) -> io::Result<()> {
        self.inner.changed().await
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::net::IpAddr;

    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
    use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
    use tokio::io::unix::AsyncFd;

    use super::super::netlink::Netlink;
    use super::{FWMARK, Path};

    /// `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV4_ROUTE`, `RTNLGRP_IPV6_IFADDR`,
    /// `RTNLGRP_IPV6_ROUTE`.
    const GROUPS: [u32; 5] = [1, 5, 7, 9, 11];
    /// `ENETUNREACH`, `EHOSTUNREACH`: no route.
    const ENETUNREACH: i32 = 101;
    const EHOSTUNREACH: i32 = 113;
    /// `ENOBUFS`: the kernel dropped events for us.
    const ENOBUFS: i32 = 105;

    pub(super) fn path_to(gateway: IpAddr) -> io::Result<Option<Path>> {
        match Netlink::open()?.route_to(gateway, FWMARK) {
            Ok(route) => Ok(Some(path(&route))),
            Err(e) if matches!(e.raw_os_error(), Some(ENETUNREACH | EHOSTUNREACH)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn path(route: &RouteMessage) -> Path {
        let address = |a: &RouteAddress| match a {
            RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
            RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
            _ => None,
        };
        let mut path = Path {
            interface: 0,
            source: None,
            via: None,
        };
        for attribute in &route.attributes {
            match attribute {
                RouteAttribute::Oif(index) => path.interface = *index,
                RouteAttribute::PrefSource(a) => path.source = address(a),
                RouteAttribute::Gateway(a) => path.via = address(a),
                _ => {}
            }
        }
        path
    }

    pub(super) struct Monitor {
        socket: AsyncFd<Socket>,
    }

    impl Monitor {
        pub(super) fn open() -> io::Result<Self> {
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind_auto()?;
            for group in GROUPS {
                socket.add_membership(group)?;
            }
            socket.set_non_blocking(true)?;
            Ok(Self {
                socket: super::super::sys::async_netlink(socket)?,
            })
        }

        pub(super) async fn changed(&mut self) -> io::Result<()> {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let mut ready = self.socket.readable().await?;
                let mut got = false;
                loop {
                    match ready.get_inner().recv(&mut buffer.as_mut_slice(), 0) {
                        Ok(_) => got = true,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.raw_os_error() == Some(ENOBUFS) => got = true,
                        Err(e) => return Err(e),
                    }
                }
                ready.clear_ready();
                if got {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::net::IpAddr;

    use super::Path;

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "no network monitor on this platform yet",
        )
    }

    pub(super) fn path_to(_: IpAddr) -> io::Result<Option<Path>> {
        Err(unsupported())
    }

    pub(super) struct Monitor;

    impl Monitor {
        pub(super) fn open() -> io::Result<Self> {
            Err(unsupported())
        }

        pub(super) async fn changed(&mut self) -> io::Result<()> {
            Err(unsupported())
        }
    }
}
