//! The `cp_reply` target: the Configuration payload of the IKE_AUTH response.

use super::*;

/// Feeds a Configuration payload body to the CP parser and to a client as the CP of its
/// genuine IKE_AUTH response.
///
/// `data[0]` bit 0 keeps the gateway's own CFG_REPLY ahead of the forged CP (else the forged
/// one replaces it); the rest is the CP body. Invariants:
/// - the parser is total; what parses re-emits to as many octets and parses back to itself;
/// - the response, sealed with the gateway's real SK key and carrying its genuine IDr, AUTH,
///   SA and TS, yields [`Event::ConfigReceived`] only from a CFG_REPLY, only with addresses,
///   DNS servers and subnets that one of the message's CFG_REPLY payloads carries, and no
///   Child SA at all if the forged CP does not parse.
pub fn cp_reply(data: &[u8]) {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let parsed = ConfigPayload::parse(body);
    if let Ok(cp) = &parsed {
        let mut out = Vec::new();
        cp.emit(&mut out);
        assert_eq!(out.len(), body.len(), "CP re-emitted to another length");
        assert_eq!(
            ConfigPayload::parse(&out).as_ref(),
            Ok(cp),
            "CP does not round-trip"
        );
    }
    if body.len() > usize::from(u16::MAX) - 4 {
        return;
    }
    let Some((mut net, response)) = auth_response() else {
        return;
    };
    let Some(template) = response.first() else {
        return;
    };
    let Some(key) = net.keys.key_for(&template.bytes) else {
        return;
    };
    let Some((first, plain)) = plaintext_of(&key, &response) else {
        return;
    };
    let payloads = parse_payloads(first, &plain).unwrap_or_default();
    let forged_cp = raw_payload(PayloadType::Configuration, body);
    let mut parts = Vec::new();
    let mut replies: Vec<ConfigPayload> = parsed.iter().cloned().collect();
    let mut placed = false;
    for p in &payloads {
        if let (Payload::Cp(cp), false) = (p, placed) {
            if flags & 1 != 0 {
                parts.push(encoded(p));
                replies.push(cp.clone());
            }
            parts.push(forged_cp.clone());
            placed = true;
        } else {
            parts.push(encoded(p));
        }
    }
    if !placed {
        parts.push(forged_cp);
    }
    replies.retain(|cp| cp.cfg_type == crate::wire::CfgType::Reply);
    let (first, chain) = link(&parts, PayloadType::NoNextPayload);
    let Ok(header) = Header::parse(&template.bytes) else {
        return;
    };
    let bytes = seal(&key, &header, first, None, &chain, FORGED_IV);
    net.send_to_client(&Datagram {
        bytes,
        nat_t: template.nat_t,
    });
    let mut child = false;
    while let Some(event) = net.initiator.poll_event() {
        match event {
            Event::ConfigReceived(config) => check_config(&config, &replies),
            Event::ChildSaEstablished(_) => child = true,
            _ => {}
        }
    }
    assert!(
        parsed.is_ok() || !child,
        "Child SA from a response whose CP does not parse"
    );
}

/// A classical pair run up to the gateway's IKE_AUTH response, which is returned undelivered.
pub(super) fn auth_response() -> Option<(Net, Vec<Datagram>)> {
    let mut net = Net::new(client_config(Mode::Classical), gateway_config())?;
    for _ in 0..4 {
        for d in net.client_sent() {
            net.send_to_gateway(&d);
        }
        let responses = net.gateway_sent();
        let exchange = responses
            .first()
            .and_then(|d| Header::parse(&d.bytes).ok())
            .map(|h| h.exchange_type);
        if exchange == Some(ExchangeType::IkeAuth) {
            return Some((net, responses));
        }
        for d in &responses {
            net.send_to_client(d);
        }
    }
    None
}

/// [`cp_reply`]'s invariant: what the client took is in one of the CFG_REPLY payloads.
fn check_config(config: &crate::ike::ConfigReceived, replies: &[ConfigPayload]) {
    assert!(!replies.is_empty(), "configuration without a CFG_REPLY");
    let has = |want: &dyn Fn(&ConfigAttribute) -> bool| {
        replies.iter().any(|cp| cp.attributes.iter().any(want))
    };
    for &(ip, _) in &config.virtual_ips {
        assert!(
            has(&|a| matches!(
                (a, ip),
                (ConfigAttribute::InternalIp4Address(Some(x)), IpAddr::V4(y)) if *x == y
            ) || matches!(
                (a, ip),
                (ConfigAttribute::InternalIp6Address(Some((x, _))), IpAddr::V6(y)) if *x == y
            )),
            "virtual address {ip} not assigned"
        );
    }
    for &ip in &config.dns {
        assert!(
            has(&|a| matches!(
                (a, ip),
                (ConfigAttribute::InternalIp4Dns(Some(x)), IpAddr::V4(y)) if *x == y
            ) || matches!(
                (a, ip),
                (ConfigAttribute::InternalIp6Dns(Some(x)), IpAddr::V6(y)) if *x == y
            )),
            "DNS server {ip} not assigned"
        );
    }
    for &(ip, _) in &config.subnets {
        assert!(
            has(&|a| matches!(
                (a, ip),
                (ConfigAttribute::InternalIp4Subnet(Some((x, _))), IpAddr::V4(y)) if *x == y
            ) || matches!(
                (a, ip),
                (ConfigAttribute::InternalIp6Subnet(Some((x, _))), IpAddr::V6(y)) if *x == y
            )),
            "subnet {ip} not assigned"
        );
    }
}
