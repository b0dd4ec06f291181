//! The gateway's name looked up from a socket carrying [`FWMARK`]: the one DNS the kill
//! switch lets out (see [`firewall`](super::firewall)), so that a reconnect under it still
//! finds a gateway whose address changed.
//!
//! `/etc/hosts` first, then A and AAAA queries over UDP (RFC 1035 §4) to the `nameserver`s of
//! `/etc/resolv.conf`, or, when that names only systemd-resolved's stub (127.0.0.53, whose own
//! upstream queries the kill switch drops), to the upstream servers resolved lists in
//! `/run/systemd/resolve/resolv.conf`. IPv4 addresses come first. No search domains, no TCP
//! retry of a truncated answer: callers fall back to the system resolver (`getaddrinfo`) when
//! this fails, which works whenever the kill switch is not up.
//!
//! A reply is taken only from the server asked (a connected socket), with the query's random
//! id and question; anything else is ignored. Parsing is bounds-checked and never panics.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::FWMARK;

/// DNS record types (RFC 1035 §3.2.2, RFC 3596).
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
/// The systemd-resolved stub listener.
const RESOLVED_STUB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53));
/// How many servers are asked, one after the other.
const MAX_SERVERS: usize = 3;

/// Looks up `name`'s addresses: `/etc/hosts`, then DNS from a marked socket, each server
/// waited for up to `timeout`. Servers in `avoid` are not asked: the tunnel's pushed servers,
/// which the system's configuration names while the tunnel is up or reconnecting, and which a
/// marked query would reach outside the tunnel.
///
/// # Errors
///
/// When `name` is not a valid DNS name, no server is configured, or none answered with an
/// address (the last server's reason).
pub fn lookup(name: &str, timeout: Duration, avoid: &[IpAddr]) -> io::Result<Vec<IpAddr>> {
    let name = name.trim_end_matches('.');
    if let Ok(text) = fs::read_to_string("/etc/hosts") {
        let found = hosts(&text, name);
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let servers = servers_to_ask(
        &fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        || fs::read_to_string("/run/systemd/resolve/resolv.conf").ok(),
        avoid,
    );
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no DNS server outside the tunnel");
    for server in servers.into_iter().take(MAX_SERVERS) {
        match ask(SocketAddr::new(server, 53), name, timeout) {
            Ok(found) if !found.is_empty() => return Ok(found),
            Ok(_) => {
                last = io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{server} knows no address for {name}"),
                );
            }
            Err(error) => last = io::Error::new(error.kind(), format!("{server}: {error}")),
        }
    }
    Err(last)
}

/// Asks `server` for `name`'s A and AAAA records.
fn ask(server: SocketAddr, name: &str, timeout: Duration) -> io::Result<Vec<IpAddr>> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    #[cfg(target_os = "linux")]
    socket2::SockRef::from(&socket).set_mark(FWMARK)?;
    #[cfg(not(target_os = "linux"))]
    let _ = FWMARK;
    socket.connect(server)?;
    let mut ids = [0u8; 4];
    getrandom::fill(&mut ids).map_err(|e| io::Error::other(e.to_string()))?;
    let [a, b, c, d] = ids;
    let mut pending = vec![
        (u16::from_be_bytes([a, b]), TYPE_A),
        (u16::from_be_bytes([c, d]), TYPE_AAAA),
    ];
    for &(id, qtype) in &pending {
        socket.send(&query(id, name, qtype)?)?;
    }
    let deadline = Instant::now() + timeout;
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    let mut failure = None;
    let mut buffer = [0u8; 1500];
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left))?;
        let length = match socket.recv(&mut buffer) {
            Ok(length) => length,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            // An ICMP error for our query (the server's port is closed).
            Err(e) => return Err(e),
        };
        let response = buffer.get(..length).unwrap_or_default();
        // The pending query this answers, with what it says (parsed once).
        let Some((at, qtype, answer)) =
            pending.iter().enumerate().find_map(|(at, &(id, qtype))| {
                match answers(id, name, qtype, response) {
                    Ok(Some(answer)) => Some((at, qtype, answer)),
                    _ => None,
                }
            })
        else {
            continue;
        };
        pending.swap_remove(at);
        match answer {
            Ok(found) if qtype == TYPE_A => v4 = found,
            Ok(found) => v6 = found,
            Err(reason) => failure = Some(reason),
        }
    }
    v4.extend(v6);
    if v4.is_empty() {
        if let Some(reason) = failure {
            return Err(io::Error::new(io::ErrorKind::NotFound, reason));
        }
        if !pending.is_empty() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer"));
        }
    }
    Ok(v4)
}

/// The servers to ask, in order: `resolv.conf`'s (`resolv_conf`), or systemd-resolved's
/// upstream list (`upstream`, read only then) when it names only the stub; never one of
/// `avoid`.
fn servers_to_ask(
    resolv_conf: &str,
    upstream: impl FnOnce() -> Option<String>,
    avoid: &[IpAddr],
) -> Vec<IpAddr> {
    let mut servers = nameservers(resolv_conf);
    if servers.iter().all(|&s| s == RESOLVED_STUB)
        && let Some(text) = upstream()
    {
        servers = nameservers(&text);
    }
    servers.retain(|server| !avoid.contains(server));
    servers
}

/// The addresses `/etc/hosts` (its text) gives `name`, IPv4 first.
fn hosts(text: &str, name: &str) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = text
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let address: IpAddr = fields.next()?.parse().ok()?;
            fields
                .any(|alias| alias.trim_end_matches('.').eq_ignore_ascii_case(name))
                .then_some(address)
        })
        .collect();
    found.sort_by_key(IpAddr::is_ipv6);
    found.dedup();
    found
}

/// The `nameserver` addresses of a `resolv.conf` text, in order (a scope suffix such as
/// `%eth0` is dropped).
fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next()? == "nameserver").then_some(())?;
            let address = fields.next()?;
            address.split('%').next()?.parse().ok()
        })
        .collect()
}

/// A recursive query for `name`'s `qtype` records (RFC 1035 §4.1).
fn query(id: u16, name: &str, qtype: u16) -> io::Result<Vec<u8>> {
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a valid DNS name"),
        )
    };
    if name.is_empty() || name.len() > 253 {
        return Err(invalid());
    }
    let mut message = Vec::with_capacity(18 + name.len());
    message.extend_from_slice(&id.to_be_bytes());
    // RD; one question.
    message.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        let length = u8::try_from(label.len()).map_err(|_| invalid())?;
        if length == 0 || length > 63 {
            return Err(invalid());
        }
        message.push(length);
        message.extend_from_slice(label.as_bytes());
    }
    message.push(0);
    message.extend_from_slice(&qtype.to_be_bytes());
    message.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(message)
}

/// What `response` says about the query `(id, name, qtype)`: `None` when it is not the
/// answer to it (another id, not a response, another question), `Some(Err)` for a server's
/// refusal or failure, else the addresses of type `qtype` in its answer section (following a
/// CNAME chain the server resolved is implicit: every A/AAAA of the section counts).
fn answers(
    id: u16,
    name: &str,
    qtype: u16,
    response: &[u8],
) -> Result<Option<Result<Vec<IpAddr>, String>>, Malformed> {
    let mut reader = Reader {
        bytes: response,
        at: 0,
    };
    if reader.u16()? != id {
        return Ok(None);
    }
    let flags = reader.u16()?;
    let (qdcount, ancount) = (reader.u16()?, reader.u16()?);
    reader.skip(4)?;
    // QR set, a standard query.
    if flags & 0x8000 == 0 || flags & 0x7800 != 0 || qdcount != 1 {
        return Ok(None);
    }
    if !reader.name_is(name)? || reader.u16()? != qtype || reader.u16()? != CLASS_IN {
        return Ok(None);
    }
    match flags & 0x000f {
        0 => {}
        3 => return Ok(Some(Err(format!("no such name: {name}")))),
        code => return Ok(Some(Err(format!("the DNS server failed (RCODE {code})")))),
    }
    if flags & 0x0200 != 0 && ancount == 0 {
        return Ok(Some(Err("the DNS answer was truncated".into())));
    }
    let mut found = Vec::new();
    for _ in 0..ancount {
        reader.skip_name()?;
        let (rtype, class) = (reader.u16()?, reader.u16()?);
        reader.skip(4)?;
        let length = usize::from(reader.u16()?);
        let data = reader.take(length)?;
        if class != CLASS_IN || rtype != qtype {
            continue;
        }
        let address = match (rtype, data) {
            (TYPE_A, &[a, b, c, d]) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            (TYPE_AAAA, data) => match <[u8; 16]>::try_from(data) {
                Ok(octets) => IpAddr::V6(Ipv6Addr::from(octets)),
                Err(_) => return Err(Malformed),
            },
            _ => return Err(Malformed),
        };
        if !found.contains(&address) {
            found.push(address);
        }
    }
    Ok(Some(Ok(found)))
}

/// A response that is cut short or inconsistent.
#[derive(Debug, PartialEq, Eq)]
struct Malformed;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], Malformed> {
        let end = self.at.checked_add(length).ok_or(Malformed)?;
        let taken = self.bytes.get(self.at..end).ok_or(Malformed)?;
        self.at = end;
        Ok(taken)
    }

    fn skip(&mut self, length: usize) -> Result<(), Malformed> {
        self.take(length).map(|_| ())
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        match self.take(2)? {
            &[a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(Malformed),
        }
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        self.take(1)?.first().copied().ok_or(Malformed)
    }

    /// Skips a name: labels up to a zero, or up to a compression pointer (RFC 1035 §4.1.4).
    fn skip_name(&mut self) -> Result<(), Malformed> {
        for _ in 0..128 {
            match self.u8()? {
                0 => return Ok(()),
                length if length & 0xc0 == 0xc0 => return self.skip(1),
                length if length & 0xc0 == 0 => self.skip(usize::from(length))?,
                _ => return Err(Malformed),
            }
        }
        Err(Malformed)
    }

    /// Reads the question's name (uncompressed, as we sent it) and compares it with `name`,
    /// ignoring ASCII case.
    fn name_is(&mut self, name: &str) -> Result<bool, Malformed> {
        let mut labels = name.split('.');
        let mut same = true;
        for _ in 0..128 {
            let length = self.u8()?;
            if length == 0 {
                return Ok(same && labels.next().is_none());
            }
            if length & 0xc0 != 0 {
                return Err(Malformed);
            }
            let label = self.take(usize::from(length))?;
            same &= labels
                .next()
                .is_some_and(|expected| expected.as_bytes().eq_ignore_ascii_case(label));
        }
        Err(Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `query(id, name, qtype)` with `answers` (type, rdata), the answers'
    /// owner compressed to the question.
    fn response(id: u16, name: &str, qtype: u16, rcode: u8, answers: &[(u16, &[u8])]) -> Vec<u8> {
        let mut message = query(id, name, qtype).unwrap();
        message[2] = 0x81;
        message[3] = 0x80 | rcode;
        message[7] = u8::try_from(answers.len()).unwrap();
        for (rtype, data) in answers {
            message.extend_from_slice(&[0xc0, 12]);
            message.extend_from_slice(&rtype.to_be_bytes());
            message.extend_from_slice(&CLASS_IN.to_be_bytes());
            message.extend_from_slice(&300u32.to_be_bytes());
            message.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            message.extend_from_slice(data);
        }
        message
    }

    #[test]
    fn queries_are_rfc1035_messages() {
        assert_eq!(
            query(0xabcd, "vpn.example", TYPE_A).unwrap(),
            b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03vpn\x07example\x00\x00\x01\x00\x01"
        );
        assert!(query(1, "a..b", TYPE_A).is_err());
        assert!(query(1, &"x".repeat(64), TYPE_A).is_err());
        assert!(query(1, "", TYPE_A).is_err());
    }

    #[test]
    fn answers_take_addresses_of_the_asked_type_through_a_cname() {
        let cname: &[u8] = b"\x02gw\xc0\x0c";
        let reply = response(
            7,
            "vpn.example",
            TYPE_A,
            0,
            &[
                (5, cname),
                (TYPE_A, &[192, 0, 2, 1]),
                (TYPE_A, &[192, 0, 2, 2]),
            ],
        );
        assert_eq!(
            answers(7, "VPN.example", TYPE_A, &reply),
            Ok(Some(Ok(vec![
                "192.0.2.1".parse().unwrap(),
                "192.0.2.2".parse().unwrap()
            ])))
        );
        let v6 = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        let reply = response(8, "vpn.example", TYPE_AAAA, 0, &[(TYPE_AAAA, &v6)]);
        assert_eq!(
            answers(8, "vpn.example", TYPE_AAAA, &reply),
            Ok(Some(Ok(vec!["2001:db8::1".parse().unwrap()])))
        );
    }

    #[test]
    fn replies_to_something_else_are_ignored_and_failures_reported() {
        let reply = response(7, "vpn.example", TYPE_A, 0, &[(TYPE_A, &[192, 0, 2, 1])]);
        assert_eq!(answers(8, "vpn.example", TYPE_A, &reply), Ok(None));
        assert_eq!(answers(7, "other.example", TYPE_A, &reply), Ok(None));
        assert_eq!(answers(7, "vpn.example", TYPE_AAAA, &reply), Ok(None));
        // Our own query echoed back (QR clear) is not an answer.
        let echoed = query(7, "vpn.example", TYPE_A).unwrap();
        assert_eq!(answers(7, "vpn.example", TYPE_A, &echoed), Ok(None));
        let nxdomain = response(7, "vpn.example", TYPE_A, 3, &[]);
        assert!(matches!(
            answers(7, "vpn.example", TYPE_A, &nxdomain),
            Ok(Some(Err(reason))) if reason.contains("no such name")
        ));
    }

    /// Network input: every truncation and every byte flipped is an error or an answer,
    /// never a panic.
    #[test]
    fn malformed_replies_never_panic() {
        let reply = response(
            7,
            "vpn.example",
            TYPE_A,
            0,
            &[(TYPE_A, &[192, 0, 2, 1]), (TYPE_A, &[1, 2, 3])],
        );
        assert_eq!(answers(7, "vpn.example", TYPE_A, &reply), Err(Malformed));
        for cut in 0..reply.len() {
            let _ = answers(7, "vpn.example", TYPE_A, &reply[..cut]);
        }
        for at in 0..reply.len() {
            for value in [0x00, 0x3f, 0xc0, 0xff] {
                let mut bent = reply.clone();
                bent[at] = value;
                let _ = answers(7, "vpn.example", TYPE_A, &bent);
            }
        }
    }

    #[test]
    fn hosts_and_resolv_conf_are_read_like_the_c_library() {
        let text = "127.0.0.1 localhost\n2001:db8::5 vpn.example\n# 10.0.0.1 vpn.example\n\
                    192.0.2.5\tgw vpn.example. # office\n";
        assert_eq!(
            hosts(text, "VPN.example"),
            vec![
                "192.0.2.5".parse::<IpAddr>().unwrap(),
                "2001:db8::5".parse().unwrap()
            ]
        );
        assert!(hosts(text, "example").is_empty());
        let conf = "# generated\nsearch corp.example\nnameserver 10.0.0.53\n\
                    nameserver fe80::1%eth0\nnameserver bogus\noptions edns0\n";
        assert_eq!(
            nameservers(conf),
            vec![
                "10.0.0.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }

    /// Reviewer (issue 15): while the tunnel is up or reconnecting, the system's resolvers
    /// include the tunnel's pushed ones; a marked query to them would leave outside the
    /// tunnel, so they are skipped. systemd-resolved's stub is replaced by its upstreams.
    #[test]
    fn the_tunnels_own_servers_are_never_asked() {
        let pushed: IpAddr = "10.99.0.1".parse().unwrap();
        let ours = "nameserver 10.99.0.1\nnameserver 192.168.1.1\n";
        assert_eq!(
            servers_to_ask(ours, || None, &[pushed]),
            vec!["192.168.1.1".parse::<IpAddr>().unwrap()]
        );
        let stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\n";
        let upstream = || Some("nameserver 10.99.0.1\nnameserver 9.9.9.9\n".to_owned());
        assert_eq!(
            servers_to_ask(stub, upstream, &[pushed]),
            vec!["9.9.9.9".parse::<IpAddr>().unwrap()]
        );
        assert!(servers_to_ask("nameserver 10.99.0.1\n", || None, &[pushed]).is_empty());
    }

    /// A real exchange with a server on loopback: the marked socket's query is answered.
    #[test]
    fn ask_gets_both_families_from_a_server() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let serve = std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            for _ in 0..2 {
                let (length, from) = server.recv_from(&mut buffer).unwrap();
                let question = &buffer[..length];
                let id = u16::from_be_bytes([question[0], question[1]]);
                let qtype = u16::from_be_bytes([question[length - 4], question[length - 3]]);
                let reply = if qtype == TYPE_A {
                    response(id, "vpn.example", TYPE_A, 0, &[(TYPE_A, &[198, 18, 0, 1])])
                } else {
                    response(id, "vpn.example", TYPE_AAAA, 0, &[])
                };
                server.send_to(&reply, from).unwrap();
            }
        });
        match ask(address, "vpn.example", Duration::from_secs(5)) {
            Ok(found) => assert_eq!(found, vec!["198.18.0.1".parse::<IpAddr>().unwrap()]),
            // Setting SO_MARK needs CAP_NET_ADMIN.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                println!("skipped: cannot set SO_MARK ({e})");
                return;
            }
            Err(e) => panic!("{e}"),
        }
        serve.join().unwrap();
    }
}
