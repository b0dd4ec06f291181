//! The values profiles are made of: identities, prefixes, gateway endpoints, durations, modes.
//! Each parses from the profile's spelling and prints back to it.

use core::fmt;
use core::str::FromStr;
use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Serialize, Serializer};

use crate::ike::Mode;
use crate::wire::{IkeId, KeyExchangeMethod, TrafficSelector};

/// The IKE port a gateway endpoint without one uses ([RFC 7296 §2]).
///
/// [RFC 7296 §2]: https://www.rfc-editor.org/rfc/rfc7296#section-2
pub const IKE_PORT: u16 = 500;

/// Parses an identity by its shape: an IP address, `keyid:…`, `user@domain` (RFC822), or
/// else an FQDN. The error is a message naming `key`.
pub fn parse_id(key: &str, s: &str) -> Result<IkeId, String> {
    if s.is_empty() {
        return Err(format!("{key} is empty"));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(a) => IkeId::Ipv4(a),
            IpAddr::V6(a) => IkeId::Ipv6(a),
        });
    }
    if let Some(k) = s.strip_prefix("keyid:") {
        return Ok(IkeId::KeyId(k.as_bytes().to_vec()));
    }
    if s.contains('@') {
        return Ok(IkeId::Rfc822(s.into()));
    }
    Ok(IkeId::Fqdn(s.into()))
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// `ml-kem-768` or `ml-kem-1024`.
pub(crate) fn parse_mlkem(s: &str) -> Result<KeyExchangeMethod, String> {
    match s {
        "ml-kem-768" => Ok(KeyExchangeMethod::MlKem768),
        "ml-kem-1024" => Ok(KeyExchangeMethod::MlKem1024),
        other => Err(format!(
            "crypto.mlkem = \"{other}\": expected \"ml-kem-768\" or \"ml-kem-1024\""
        )),
    }
}

/// An IP prefix, `10.0.0.0/8` or `2001:db8::/32`; a bare address is a host prefix. Host bits
/// are kept as written (a gateway's `address = "10.99.0.1/24"` names its own address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length, at most 32 (IPv4) or 128 (IPv6).
    pub len: u8,
}

impl Prefix {
    /// The traffic selector covering this prefix, all protocols and ports.
    pub fn traffic_selector(self) -> TrafficSelector {
        match self.addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                TrafficSelector::Ipv4 {
                    ip_protocol: 0,
                    start_port: 0,
                    end_port: 65535,
                    start_addr: Ipv4Addr::from(bits & mask),
                    end_addr: Ipv4Addr::from(bits | !mask),
                }
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                TrafficSelector::Ipv6 {
                    ip_protocol: 0,
                    start_port: 0,
                    end_port: 65535,
                    start_addr: (bits & mask).into(),
                    end_addr: (bits | !mask).into(),
                }
            }
        }
    }
}

/// Why a [`Prefix`] did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixError {
    /// The part before `/` is not an IP address.
    NotAnAddress,
    /// The length is not a number up to 32 or 128.
    BadLength,
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAnAddress => "is not an IP address or prefix",
            Self::BadLength => "has a bad prefix length",
        })
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = addr.parse().map_err(|_| PrefixError::NotAnAddress)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = if len.is_empty() {
            max
        } else {
            len.parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or(PrefixError::BadLength)?
        };
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Where the gateway is: an address, or a name resolved only when connecting (so a profile
/// parses offline and a changed DNS answer is seen on the next connect).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP address.
    Ip(IpAddr),
    /// A DNS name, as written.
    Name(String),
}

/// A gateway endpoint: `host`, `host:port`, `ip`, `ip:port` or `[ipv6]:port`; port
/// [`IKE_PORT`] unless given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The host.
    pub host: Host,
    /// The UDP port of IKE_SA_INIT.
    pub port: u16,
}

/// Why an [`Endpoint`] did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadEndpoint;

impl fmt::Display for BadEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected HOST, HOST:PORT, IP, IP:PORT or [IPV6]:PORT")
    }
}

impl FromStr for Endpoint {
    type Err = BadEndpoint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<std::net::SocketAddr>() {
            return Ok(Self {
                host: Host::Ip(addr.ip()),
                port: addr.port(),
            });
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self {
                host: Host::Ip(ip),
                port: IKE_PORT,
            });
        }
        let (name, port) = match s.rsplit_once(':') {
            Some((name, port)) => (name, port.parse::<u16>().map_err(|_| BadEndpoint)?),
            None => (s, IKE_PORT),
        };
        // A DNS name (RFC 1123 labels); anything else (spaces, an IPv6 address without
        // brackets and a port, "[x]") is refused here rather than by the resolver later.
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid || port == 0 {
            return Err(BadEndpoint);
        }
        Ok(Self {
            host: Host::Name(name.to_owned()),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.port),
            Host::Ip(a) => write!(f, "{a}:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A duration: seconds as an integer, or digits with a unit, `"90s"`, `"30m"`, `"4h"`, `"1d"`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_secs = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    number
        .parse::<u64>()
        .ok()?
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_by_shape() {
        assert_eq!(
            parse_id("k", "10.0.0.1").unwrap(),
            IkeId::Ipv4("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_id("k", "2001:db8::1").unwrap(),
            IkeId::Ipv6("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_id("k", "alice@corp.test").unwrap(),
            IkeId::Rfc822("alice@corp.test".into())
        );
        assert_eq!(
            parse_id("k", "keyid:abc").unwrap(),
            IkeId::KeyId(b"abc".to_vec())
        );
        assert_eq!(
            parse_id("k", "vpn.corp.test").unwrap(),
            IkeId::Fqdn("vpn.corp.test".into())
        );
        assert_eq!(parse_id("remote_id", "").unwrap_err(), "remote_id is empty");
    }

    #[test]
    fn modes_round_trip_through_their_spelling() {
        for mode in [Mode::Hybrid, Mode::PqOnly, Mode::Classical] {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
        }
        let e = "quantum".parse::<Mode>().unwrap_err().to_string();
        assert!(e.contains("quantum") && e.contains("pq-only"), "{e}");
    }

    #[test]
    fn prefixes_parse_print_and_refuse_nonsense() {
        let p: Prefix = "10.1.2.3/8".parse().unwrap();
        assert_eq!(p.to_string(), "10.1.2.3/8");
        assert_eq!(
            p.traffic_selector(),
            TrafficSelector::Ipv4 {
                ip_protocol: 0,
                start_port: 0,
                end_port: 65535,
                start_addr: Ipv4Addr::new(10, 0, 0, 0),
                end_addr: Ipv4Addr::new(10, 255, 255, 255),
            }
        );
        assert_eq!("2001:db8::1".parse::<Prefix>().unwrap().len, 128);
        assert_eq!("0.0.0.0/0".parse::<Prefix>().unwrap().len, 0);
        assert_eq!("10.0.0.0/33".parse::<Prefix>(), Err(PrefixError::BadLength));
        assert_eq!("::/129".parse::<Prefix>(), Err(PrefixError::BadLength));
        assert_eq!("10.0.0.0/x".parse::<Prefix>(), Err(PrefixError::BadLength));
        assert_eq!("ten/8".parse::<Prefix>(), Err(PrefixError::NotAnAddress));
    }

    #[test]
    fn endpoints_keep_names_unresolved_and_default_to_port_500() {
        let cases = [
            ("198.18.0.1", Host::Ip("198.18.0.1".parse().unwrap()), 500),
            (
                "198.18.0.1:4500",
                Host::Ip("198.18.0.1".parse().unwrap()),
                4500,
            ),
            (
                "[2001:db8::1]:501",
                Host::Ip("2001:db8::1".parse().unwrap()),
                501,
            ),
            ("2001:db8::1", Host::Ip("2001:db8::1".parse().unwrap()), 500),
            ("vpn.corp.test", Host::Name("vpn.corp.test".into()), 500),
            (
                "vpn.corp.test:4500",
                Host::Name("vpn.corp.test".into()),
                4500,
            ),
        ];
        for (text, host, port) in cases {
            let endpoint: Endpoint = text.parse().unwrap();
            assert_eq!(endpoint, Endpoint { host, port }, "{text}");
            assert_eq!(endpoint.to_string().parse::<Endpoint>(), Ok(endpoint));
        }
        for bad in [
            "",
            "vpn corp",
            "vpn.corp.test:x",
            "host:0",
            "-a.test",
            "a..b",
            "[::1]",
        ] {
            assert_eq!(bad.parse::<Endpoint>(), Err(BadEndpoint), "{bad}");
        }
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration(" 4h "), Some(Duration::from_secs(14_400)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        for bad in ["", "h", "1w", "1.5h", "-1s", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
