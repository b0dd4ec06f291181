//! The gateway's address pool: one IPv4 and one IPv6 address per client, leased in
//! IKE_AUTH's CFG_REPLY ([RFC 7296 §3.15.1]) and returned when the IKE SA goes.
//!
//! [RFC 7296 §3.15.1]: https://www.rfc-editor.org/rfc/rfc7296#section-3.15.1

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Responder, ResponderSa};
use crate::wire::TrafficSelector;

impl Responder {
    /// Returns the SA's pool addresses to the pool.
    pub(super) fn release(&mut self, sa: &ResponderSa) {
        if let Some(lease) = sa.lease_v4 {
            self.leases_v4.remove(&lease);
        }
        if let Some(lease) = sa.lease_v6 {
            self.leases_v6.remove(&lease);
        }
    }

    /// Leases the lowest free IPv4 address of the pool to `sa`.
    pub(super) fn lease_v4(&mut self, sa: &mut ResponderSa) -> Option<Ipv4Addr> {
        let (first, last) = self.config.pool_v4?;
        let (first, last) = (u32::from(first), u32::from(last));
        if let Some(index) = sa.lease_v4 {
            return Some(Ipv4Addr::from(first.checked_add(index)?));
        }
        let size = last.checked_sub(first)?.checked_add(1)?;
        let index = (0..size).find(|i| !self.leases_v4.contains(i))?;
        self.leases_v4.insert(index);
        sa.lease_v4 = Some(index);
        Some(Ipv4Addr::from(first.checked_add(index)?))
    }

    /// Leases the lowest free IPv6 address of the pool to `sa`: base + 1 + index, one per
    /// client, at most [`MAX_V6_LEASES`] of them.
    pub(super) fn lease_v6(&mut self, sa: &mut ResponderSa) -> Option<(Ipv6Addr, u8)> {
        let (base, len) = self.config.pool_v6?;
        let host_bits = 128u32.checked_sub(u32::from(len))?;
        // Addresses base+1 ..= base + 2^host_bits - 1, capped.
        let size = if host_bits >= 32 {
            MAX_V6_LEASES
        } else {
            ((1u32 << host_bits).saturating_sub(1)).min(MAX_V6_LEASES)
        };
        let index = match sa.lease_v6 {
            Some(index) => index,
            None => {
                let index = (0..size).find(|i| !self.leases_v6.contains(i))?;
                self.leases_v6.insert(index);
                sa.lease_v6 = Some(index);
                index
            }
        };
        let ip = u128::from(base).checked_add(u128::from(index) + 1)?;
        Some((Ipv6Addr::from(ip), len))
    }
}

/// The most IPv6 addresses one gateway leases at once.
const MAX_V6_LEASES: u32 = 1 << 16;

/// A selector for exactly one address, all protocols and ports.
pub(super) fn host_ts(ip: IpAddr) -> TrafficSelector {
    match ip {
        IpAddr::V4(a) => TrafficSelector::Ipv4 {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start_addr: a,
            end_addr: a,
        },
        IpAddr::V6(a) => TrafficSelector::Ipv6 {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start_addr: a,
            end_addr: a,
        },
    }
}
