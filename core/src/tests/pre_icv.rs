//! Security review findings 3 and 4: nothing that arrives before the integrity check changes
//! any state. A forged SKF fragment whose Total Fragments exceeds the limit is dropped like any
//! other forgery (half-open, handshaking and established SAs), and a forged or replayed request
//! neither moves the gateway's idea of its peer nor reflects the cached response elsewhere.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::pair::{ChildTable, GATEWAY, InFlight, Pair};
use crate::ike::{Event, Mode};
use crate::wire::{ExchangeType, Flags, Header, MessageId, PayloadType};

const ATTACKER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66)), 4500);

/// A forged SKF fragment `1/total` of the message `like` names (SPIs, exchange, message ID),
/// with the R and I flags given and random-looking octets where IV, ciphertext and ICV go.
fn forged_skf(like: &Header, response: bool, initiator: bool, total: u16) -> Vec<u8> {
    let body = [0x5a_u8; 8 + 32 + 16];
    let skf_len = 4 + 4 + body.len();
    let mut header = Header::new(
        like.spi_i,
        like.spi_r,
        like.exchange_type,
        Flags {
            initiator,
            response,
            ..Flags::default()
        },
        like.message_id,
    );
    header.next_payload = PayloadType::EncryptedFragment;
    header.length = u32::try_from(Header::LEN + skf_len).unwrap();
    let mut out = Vec::new();
    header.emit(&mut out);
    out.push(PayloadType::Notify.value()); // first inner payload, as fragment 1 names it
    out.push(0);
    out.extend_from_slice(&u16::try_from(skf_len).unwrap().to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn failed(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::Failed(_)))
}

/// Neither side reported a failure.
fn assert_no_failure(pair: &Pair) {
    assert!(
        !failed(&pair.initiator_events),
        "{:?}",
        pair.initiator_events
    );
    assert!(
        !failed(&pair.responder_events),
        "{:?}",
        pair.responder_events
    );
}

fn header(d: &InFlight) -> Header {
    Header::parse(&d.bytes).unwrap()
}

#[test]
fn forged_skf_total_129_leaves_a_half_open_sa_alive() {
    let mut pair = Pair::mode(31, Mode::Hybrid);
    pair.step();
    let request = pair.to_responder.front().map(header).unwrap();
    assert_eq!(request.exchange_type, ExchangeType::IkeIntermediate);
    for total in [128, 129, u16::MAX] {
        let forged = forged_skf(&request, false, true, total);
        pair.deliver_to_responder(InFlight {
            to: GATEWAY,
            bytes: forged,
        });
    }
    pair.collect();
    assert_no_failure(&pair);
    pair.drive();
    assert!(
        pair.initiator.is_established(),
        "{:?}",
        pair.initiator_events
    );
    assert_no_failure(&pair);
}

#[test]
fn forged_skf_total_129_does_not_abort_the_clients_handshake() {
    let mut pair = Pair::mode(32, Mode::Hybrid);
    pair.step();
    let request = pair.to_responder.front().map(header).unwrap();
    // A forged "response" to the IKE_INTERMEDIATE request in flight.
    let forged = forged_skf(&request, true, false, 129);
    let to = pair.to_responder.front().unwrap().to;
    let client = SocketAddr::new(super::pair::CLIENT.ip(), to.port());
    pair.deliver_to_initiator(InFlight {
        to: client,
        bytes: forged,
    });
    pair.collect();
    assert_no_failure(&pair);
    pair.drive();
    assert!(
        pair.initiator.is_established(),
        "{:?}",
        pair.initiator_events
    );
}

#[test]
fn forged_skf_total_129_does_not_kill_an_established_sa_waiting_for_a_response() {
    let mut pair = Pair::mode(33, Mode::Hybrid);
    pair.drive();
    pair.settle();
    assert!(pair.initiator.is_established());
    let id = pair.gateway_sa();

    // The gateway starts an IKE SA rekey; its response is forged before the client answers.
    pair.responder.rekey_ike_sa(pair.now, id);
    pair.collect();
    let request = pair.to_initiator.front().map(header).unwrap();
    assert_eq!(request.exchange_type, ExchangeType::CreateChildSa);
    let client = pair.to_initiator.front().unwrap().to;
    let forged = forged_skf(&request, true, !request.flags.initiator, 129);
    pair.deliver_to_responder(InFlight {
        to: SocketAddr::new(GATEWAY.ip(), client.port()),
        bytes: forged,
    });
    pair.collect();
    assert_no_failure(&pair);
    pair.settle();
    let gateway = ChildTable::from_events(&pair.responder_events);
    assert_eq!(gateway.ike_rekeys, 1, "{:?}", pair.responder_events);

    // The client's own request (a Child SA rekey) gets a forged response too.
    let spi = pair.initiator.child_sas()[0].spi_i;
    pair.initiator.rekey_child_sa(pair.now, spi).unwrap();
    pair.collect();
    let mine = pair.to_responder.front().map(header).unwrap();
    assert_eq!(mine.exchange_type, ExchangeType::CreateChildSa);
    let forged = forged_skf(&mine, true, !mine.flags.initiator, 129);
    pair.deliver_to_initiator(InFlight {
        to: client,
        bytes: forged,
    });
    pair.collect();
    assert_no_failure(&pair);
    pair.settle();
    assert_no_failure(&pair);
    let client_side = ChildTable::from_events(&pair.initiator_events);
    assert_eq!(client_side.rekeys.len(), 1, "{:?}", pair.initiator_events);
    assert!(pair.initiator.is_established());
}

/// Counts what the responder wants to send, and where.
fn drain_responder(pair: &mut Pair) -> Vec<SocketAddr> {
    let mut buf = vec![0u8; 65_536];
    let mut to = Vec::new();
    while let Some(t) = pair.responder.poll_transmit(pair.now, &mut buf) {
        to.push(t.destination);
    }
    to
}

#[test]
fn forged_or_replayed_requests_neither_move_the_peer_nor_reflect_the_cached_response() {
    let mut pair = Pair::mode(34, Mode::Hybrid);
    pair.drive();
    pair.settle();
    let id = pair.gateway_sa();
    let peer = pair.responder.remote(id).unwrap();
    let local = SocketAddr::new(GATEWAY.ip(), peer.port());
    // The client's last request (IKE_AUTH), as it went on the wire.
    let (_, auth) = pair
        .log
        .iter()
        .rev()
        .find(|(to_gateway, b)| {
            *to_gateway && Header::parse(b).unwrap().exchange_type == ExchangeType::IkeAuth
        })
        .cloned()
        .unwrap();
    let h = Header::parse(&auth).unwrap();

    // A bare 28-octet header with the cached message ID, and one with a new message ID.
    for mid in [h.message_id, MessageId(0x7777_7777)] {
        let mut bare = Header::new(h.spi_i, h.spi_r, ExchangeType::Informational, h.flags, mid);
        bare.length = u32::try_from(Header::LEN).unwrap();
        let mut bytes = Vec::new();
        bare.emit(&mut bytes);
        pair.responder
            .handle_datagram(pair.now, local, ATTACKER, &bytes);
        assert_eq!(
            drain_responder(&mut pair),
            Vec::<SocketAddr>::new(),
            "mid {mid}"
        );
        assert_eq!(pair.responder.remote(id), Some(peer), "mid {mid}");
    }

    // The genuine IKE_AUTH request replayed from elsewhere: one resend, to the client.
    pair.responder
        .handle_datagram(pair.now, local, ATTACKER, &auth);
    let sent = drain_responder(&mut pair);
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|&to| to == peer), "{sent:?}");
    assert_eq!(pair.responder.remote(id), Some(peer));
    // Replayed again at once: rate-limited.
    pair.responder
        .handle_datagram(pair.now, local, ATTACKER, &auth);
    assert_eq!(drain_responder(&mut pair), Vec::<SocketAddr>::new());
    pair.now += Duration::from_secs(1);
    pair.responder
        .handle_datagram(pair.now, local, ATTACKER, &auth);
    assert!(drain_responder(&mut pair).iter().all(|&to| to == peer));
    assert_no_failure(&pair);
}
