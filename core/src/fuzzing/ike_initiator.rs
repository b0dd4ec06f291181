//! The `ike_initiator` target: responder-side datagrams to a client in each handshake state.

use super::*;

/// Feeds responder-side bytes to an initiator in each handshake state.
///
/// `data[0]` picks the state (before the IKE_SA_INIT, IKE_INTERMEDIATE or IKE_AUTH response, or
/// established), `data[1]` how the input is used: as the whole datagram, spliced over the
/// genuine message at an offset, or as the body after the genuine message's header. In the
/// established state the genuine message is a request of the gateway (a Child SA rekey, an IKE
/// SA rekey or a liveness check, by `data[1] / 3`) or the answer to one of the client's. The
/// genuine messages are delivered afterwards, and the clock runs for hours so rekeys, liveness
/// checks and retransmissions fire. Nothing may panic.
pub fn ike_initiator(data: &[u8]) {
    let (Some(&depth), Some(&how)) = (data.first(), data.get(1)) else {
        return;
    };
    let input = data.get(2..).unwrap_or_default();
    let psk = SecretBytes::from_slice(b"fuzz");
    let client = InitiatorConfig::new(Mode::Hybrid, psk.clone(), IkeId::Fqdn("c".into()), None);
    let mut gateway =
        ResponderConfig::new(vec![CryptoPolicy::default()], psk, IkeId::Fqdn("g".into()));
    gateway.pool_v4 = Some((Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 9)));
    let now = Instant::now();
    let Ok(mut initiator) = Initiator::new(
        Arc::new(DeterministicProvider::new(1)),
        client,
        now,
        CLIENT,
        GATEWAY,
    ) else {
        return;
    };
    let Ok(mut responder) = Responder::new(Arc::new(DeterministicProvider::new(2)), gateway) else {
        return;
    };
    let mut buf = vec![0u8; 65_536];
    let mut exchange = |initiator: &mut Initiator, responder: &mut Responder| -> Vec<Vec<u8>> {
        while let Some(t) = initiator.poll_transmit(now, &mut buf) {
            let skip = if t.nat_t { 4 } else { 0 };
            let bytes = buf.get(skip..t.size).unwrap_or_default().to_vec();
            let from = if t.destination.port() == NAT_T_PORT {
                SocketAddr::new(CLIENT.ip(), NAT_T_PORT)
            } else {
                CLIENT
            };
            responder.handle_datagram(now, t.destination, from, &bytes);
        }
        let mut out = Vec::new();
        while let Some(t) = responder.poll_transmit(now, &mut buf) {
            let skip = if t.nat_t { 4 } else { 0 };
            out.push(buf.get(skip..t.size).unwrap_or_default().to_vec());
        }
        out
    };
    let established = depth % 4 == 3;
    for _ in 0..if established { 3 } else { depth % 4 } {
        for response in exchange(&mut initiator, &mut responder) {
            initiator.handle_datagram(now, GATEWAY, &response);
        }
    }
    let genuine = if established {
        let id = responder
            .established_ids()
            .first()
            .copied()
            .unwrap_or_default();
        match (how / 3) % 4 {
            0 => {
                let spi = initiator.child_sas().first().map_or(EspSpi(0), |c| c.spi_r);
                let _ = responder.rekey_child_sa(now, id, spi);
            }
            1 => responder.rekey_ike_sa(now, id),
            2 => responder.close(now, id),
            _ => initiator.rekey_ike_sa(now),
        }
        exchange(&mut initiator, &mut responder)
    } else {
        exchange(&mut initiator, &mut responder)
    };
    let first = genuine.first().cloned().unwrap_or_default();
    let forged = match how % 3 {
        0 => input.to_vec(),
        1 => {
            let mut d = first;
            let at = usize::from(input.first().copied().unwrap_or(0)) % d.len().max(1);
            for (i, b) in input.iter().skip(1).enumerate() {
                if let Some(x) = d.get_mut(at + i) {
                    *x = *b;
                }
            }
            d
        }
        _ => {
            let mut d = first.get(..28).unwrap_or_default().to_vec();
            d.extend_from_slice(input);
            d
        }
    };
    initiator.handle_datagram(now, GATEWAY, &forged);
    initiator.handle_timeout(now);
    for response in genuine {
        initiator.handle_datagram(now, GATEWAY, &response);
    }
    if established {
        // Answer what the client sent, then let hours pass with the gateway silent.
        for response in exchange(&mut initiator, &mut responder) {
            initiator.handle_datagram(now, GATEWAY, &response);
        }
        let mut t = now;
        for _ in 0..64 {
            let Some(next) = initiator.poll_timeout() else {
                break;
            };
            t = t.max(next);
            initiator.handle_timeout(t);
            while initiator.poll_transmit(t, &mut buf).is_some() {}
        }
    }
    while initiator.poll_event().is_some() {}
    while initiator.poll_transmit(now, &mut buf).is_some() {}
}
