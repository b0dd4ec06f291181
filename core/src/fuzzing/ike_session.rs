//! The `ike_session` target: the inner payloads of an established SA's exchanges.

use super::*;

/// Feeds authenticated inner payloads to an established IKE SA, the client's or the
/// gateway's: the fuzzer explores the session logic (rekeys, collisions, liveness checks,
/// Delete, IKE_FOLLOWUP_KE) rather than the ICV.
///
/// `data[0]` picks the exchange:
/// - bit 0: the gateway receives (else the client);
/// - bit 1: the forged message is a response to the receiver's request (else a request);
/// - bits 2-3: what the requester starts: a Child SA rekey, an IKE SA rekey, a Delete of the
///   IKE SA, or a liveness check (the clock runs past the DPD interval);
/// - bits 4-5: the Exchange Type of the forged header: the genuine one, CREATE_CHILD_SA,
///   INFORMATIONAL or IKE_FOLLOWUP_KE;
/// - bit 6: the message after the first exchange (the IKE_FOLLOWUP_KE of a hybrid rekey, the
///   Delete that ends a Child SA rekey);
/// - bit 7: the SA is hybrid (X25519 + ML-KEM-768; else classical).
///
/// `data[1]`: bit 0 shifts the Message ID by one, bit 1 withholds the genuine message, bits
/// 2-3 split the forged one into that many more RFC 7383 fragments. `data[2]` is the type of
/// the first inner payload and the rest the inner payload octets, sealed under the genuine
/// message's header with the sender's real SK key. The genuine message follows (unless
/// withheld), then both ends run until quiet and the clock runs. Nothing may panic.
pub fn ike_session(data: &[u8]) {
    let _ = session_run(data, 16);
}

/// [`ike_session`] with `timer_steps` timer deadlines at the end, returning both ends for
/// tests to look at.
pub(super) fn session_run(data: &[u8], timer_steps: usize) -> Option<Net> {
    let (Some(&scenario), Some(&variant), Some(&first)) = (data.first(), data.get(1), data.get(2))
    else {
        return None;
    };
    let input = data.get(3..).unwrap_or_default();
    let (mut net, to_gateway, genuine) = session_exchange(scenario)?;
    let forged = genuine
        .first()
        .and_then(|template| {
            let key = net.keys.key_for(&template.bytes)?;
            let mut header = Header::parse(&template.bytes).ok()?;
            header.exchange_type = match (scenario >> 4) & 3 {
                1 => ExchangeType::CreateChildSa,
                2 => ExchangeType::Informational,
                3 => ExchangeType::IkeFollowupKe,
                _ => header.exchange_type,
            };
            if variant & 1 != 0 {
                header.message_id = header.message_id.next();
            }
            let pieces = 1 + usize::from((variant >> 2) & 3);
            let sealed = seal_pieces(&key, &header, PayloadType::from(first), input, pieces);
            Some((sealed, template.nat_t))
        })
        .unwrap_or_default();
    let deliver = |net: &mut Net, d: &Datagram| {
        if to_gateway {
            net.send_to_gateway(d);
        } else {
            net.send_to_client(d);
        }
    };
    for bytes in forged.0 {
        deliver(
            &mut net,
            &Datagram {
                bytes,
                nat_t: forged.1,
            },
        );
    }
    if variant & 2 == 0 {
        for d in &genuine {
            deliver(&mut net, d);
        }
    }
    net.settle(8);
    net.run_timers(timer_steps);
    Some(net)
}

/// An established pair and the genuine message of the exchange `scenario` names (see
/// [`ike_session`]), not delivered yet, with whether the gateway is its receiver.
pub(super) fn session_exchange(scenario: u8) -> Option<(Net, bool, Vec<Datagram>)> {
    let mode = if scenario & 0x80 != 0 {
        Mode::Hybrid
    } else {
        Mode::Classical
    };
    let mut net = Net::new(client_config(mode), gateway_config())?;
    net.settle(8);
    while net.initiator.poll_event().is_some() {}
    while net.responder.poll_event().is_some() {}
    let id = net.responder.established_ids().first().copied()?;
    let to_gateway = scenario & 1 != 0;
    let response = scenario & 2 != 0;
    let gateway_asks = to_gateway == response;
    let now = net.now;
    match (scenario >> 2) & 3 {
        0 if gateway_asks => {
            let spi = net.responder.child_sas(id).first()?.spi_r;
            net.responder.rekey_child_sa(now, id, spi).ok()?;
        }
        0 => {
            let spi = net.initiator.child_sas().first()?.spi_i;
            net.initiator.rekey_child_sa(now, spi).ok()?;
        }
        1 if gateway_asks => net.responder.rekey_ike_sa(now, id),
        1 => net.initiator.rekey_ike_sa(now),
        2 if gateway_asks => net.responder.close(now, id),
        2 => net.initiator.close(now),
        _ => {
            net.now = now + DEFAULT_DPD_INTERVAL + Duration::from_secs(1);
            if gateway_asks {
                net.responder.handle_timeout(net.now);
            } else {
                net.initiator.handle_timeout(net.now);
            }
        }
    }
    let mut request = if gateway_asks {
        net.gateway_sent()
    } else {
        net.client_sent()
    };
    let answer = |net: &mut Net, request: &[Datagram]| {
        for d in request {
            if gateway_asks {
                net.send_to_client(d);
            } else {
                net.send_to_gateway(d);
            }
        }
        if gateway_asks {
            net.client_sent()
        } else {
            net.gateway_sent()
        }
    };
    if scenario & 0x40 != 0 {
        let reply = answer(&mut net, &request);
        for d in &reply {
            if gateway_asks {
                net.send_to_gateway(d);
            } else {
                net.send_to_client(d);
            }
        }
        request = if gateway_asks {
            net.gateway_sent()
        } else {
            net.client_sent()
        };
    }
    let genuine = if response {
        answer(&mut net, &request)
    } else {
        request
    };
    Some((net, to_gateway, genuine))
}
