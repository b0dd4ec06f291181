//! The `ike_responder` target: client-side datagrams to a gateway.

use super::*;

/// Feeds client-side bytes to a gateway: as the first datagram it sees (the half-open path),
/// or in place of one request of a genuine handshake.
///
/// `data[0] % 4` picks the request: none (the input is the gateway's very first datagram, on
/// port 4500 if `data[2]` is odd), IKE_SA_INIT, IKE_INTERMEDIATE or IKE_AUTH (in a
/// construction without IKE_INTERMEDIATE, stage 2 is IKE_AUTH too). `data[1]` sets up the
/// handshake and says how the input is used:
///
/// - bits 0-1: the input is the whole datagram (0), spliced over the genuine one at the
///   offset in its first two octets (1), the body after the genuine header with the Length
///   fixed (2), or (3) a payload chain `first type | octets` appended to the first
///   `data[2] & 15` genuine payloads, the whole sealed with the SA's real keys for
///   IKE_INTERMEDIATE and IKE_AUTH (keeping IDi and AUTH, the gateway gets past the PSK check
///   to the SA, TS and CP it parses) and split into as many fragments as the genuine request;
/// - bit 2: the gateway demands a COOKIE for every IKE_SA_INIT;
/// - bit 3: the gateway only takes P-384, so the client is sent INVALID_KE_PAYLOAD first;
/// - bit 4: both ends fragment above 300 octets (RFC 7383);
/// - bits 5-6: hybrid (0, 1), classical (2) or PQ-only (3);
/// - bit 7: the genuine request is withheld, the forged one replaces it.
///
/// `data[2] >> 4` picks which datagram of a fragmented request is replaced. The forged
/// datagrams go first, then the genuine ones, every answer to the client; then the clock runs
/// (retransmissions, half-open expiry, liveness checks). Nothing may panic.
pub fn ike_responder(data: &[u8]) {
    let _ = responder_run(data);
}

/// [`ike_responder`], returning both ends for tests to look at.
pub(super) fn responder_run(data: &[u8]) -> Option<Net> {
    let (Some(&stage), Some(&how), Some(&sel)) = (data.first(), data.get(1), data.get(2)) else {
        return None;
    };
    let input = data.get(3..).unwrap_or_default();
    let mut net = responder_net(how)?;
    let mut target = match stage % 4 {
        0 => {
            net.send_to_gateway(&Datagram {
                bytes: input.to_vec(),
                nat_t: sel & 1 != 0,
            });
            for d in net.gateway_sent() {
                net.send_to_client(&d);
            }
            None
        }
        1 => Some(ExchangeType::IkeSaInit),
        2 => Some(ExchangeType::IkeIntermediate),
        _ => Some(ExchangeType::IkeAuth),
    };
    for _ in 0..8 {
        let requests = net.client_sent();
        let Some(exchange) = requests
            .first()
            .and_then(|d| Header::parse(&d.bytes).ok())
            .map(|h| h.exchange_type)
        else {
            break;
        };
        let hit = target == Some(exchange)
            || (target == Some(ExchangeType::IkeIntermediate) && exchange == ExchangeType::IkeAuth);
        if hit {
            target = None;
            for forged in forge_request(&net.keys, &requests, how & 3, sel, input) {
                net.send_to_gateway(&forged);
            }
        }
        if !hit || how & 0x80 == 0 {
            for d in &requests {
                net.send_to_gateway(d);
            }
        }
        for d in net.gateway_sent() {
            net.send_to_client(&d);
        }
    }
    net.run_timers(16);
    Some(net)
}

/// The two ends of [`ike_responder`], set up as `how` says.
pub(super) fn responder_net(how: u8) -> Option<Net> {
    let mode = match (how >> 5) & 3 {
        2 => Mode::Classical,
        3 => Mode::PqOnly,
        _ => Mode::Hybrid,
    };
    let mut client = client_config(mode);
    let mut gateway = gateway_config();
    if how & 4 != 0 {
        gateway.cookie_threshold = 0;
    }
    if how & 8 != 0 {
        for p in &mut gateway.policies {
            if p.mode != Mode::PqOnly {
                p.ke = vec![KeyExchangeMethod::Ecp384];
            }
        }
    }
    if how & 16 != 0 {
        client.fragment_size = 300;
        gateway.fragment_size = 300;
    }
    Net::new(client, gateway)
}

/// The datagrams [`ike_responder`] sends instead of (before) the genuine `requests`.
fn forge_request(
    keys: &KeyLog,
    requests: &[Datagram],
    how: u8,
    sel: u8,
    input: &[u8],
) -> Vec<Datagram> {
    let Some(template) = requests.get(usize::from(sel >> 4) % requests.len().max(1)) else {
        return Vec::new();
    };
    let nat_t = template.nat_t;
    let one = |bytes: Vec<u8>| vec![Datagram { bytes, nat_t }];
    match how {
        0 => one(input.to_vec()),
        1 => {
            let mut d = template.bytes.clone();
            let (at, patch) = match input.split_first_chunk::<2>() {
                Some((at, patch)) => (usize::from(u16::from_be_bytes(*at)), patch),
                None => (0, input),
            };
            let at = at % d.len().max(1);
            for (x, b) in d.iter_mut().skip(at).zip(patch) {
                *x = *b;
            }
            one(d)
        }
        2 => {
            let mut d = template
                .bytes
                .get(..Header::LEN)
                .unwrap_or_default()
                .to_vec();
            d.extend_from_slice(input);
            let len = u32::try_from(d.len()).unwrap_or(u32::MAX);
            if let Some(field) = d.get_mut(24..Header::LEN) {
                field.copy_from_slice(&len.to_be_bytes());
            }
            one(d)
        }
        _ => {
            let keep = usize::from(sel & 15);
            let (tail_first, tail) = match input.split_first() {
                Some((t, rest)) => (PayloadType::from(*t), rest),
                None => (PayloadType::NoNextPayload, input),
            };
            let Ok(mut header) = Header::parse(&template.bytes) else {
                return Vec::new();
            };
            if header.exchange_type == ExchangeType::IkeSaInit {
                let Ok(message) = crate::wire::Message::parse(&template.bytes) else {
                    return Vec::new();
                };
                let (first, chain) = genuine_then(&message.payloads, keep, tail_first, tail);
                header.next_payload = first;
                header.length = u32::try_from(Header::LEN + chain.len()).unwrap_or(u32::MAX);
                let mut d = Vec::new();
                header.emit(&mut d);
                d.extend_from_slice(&chain);
                return one(d);
            }
            let Some(key) = keys.key_for(&template.bytes) else {
                return Vec::new();
            };
            let Some((first, plain)) = plaintext_of(&key, requests) else {
                return Vec::new();
            };
            let payloads = parse_payloads(first, &plain).unwrap_or_default();
            let (first, chain) = genuine_then(&payloads, keep, tail_first, tail);
            seal_pieces(&key, &header, first, &chain, requests.len())
                .into_iter()
                .map(|bytes| Datagram { bytes, nat_t })
                .collect()
        }
    }
}
