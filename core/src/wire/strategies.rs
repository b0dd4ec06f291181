//! Proptest strategies for every wire type, shared by the tests of each file.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// Small opaque octet strings.
pub(super) fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

fn string(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

prop_compose! {
    pub(super) fn arb_header()(
        spi_i in any::<u64>(),
        spi_r in any::<u64>(),
        next_payload in any::<u8>(),
        minor_version in 0u8..16,
        exchange_type in any::<u8>(),
        flags in any::<u8>(),
        message_id in any::<u32>(),
        length in 28u32..512,
    ) -> Header {
        Header {
            spi_i: IkeSpi(spi_i),
            spi_r: IkeSpi(spi_r),
            next_payload: next_payload.into(),
            major_version: 2,
            minor_version,
            exchange_type: exchange_type.into(),
            flags: Flags::from_octet(flags),
            message_id: MessageId(message_id),
            length,
        }
    }
}

fn arb_transform_attribute() -> impl Strategy<Value = TransformAttribute> {
    prop_oneof![
        (0u16..0x8000, any::<u16>()).prop_map(|(t, value)| TransformAttribute::Tv {
            attr_type: t.into(),
            value
        }),
        (0u16..0x8000, bytes(8)).prop_map(|(t, value)| TransformAttribute::Tlv {
            attr_type: t.into(),
            value
        }),
    ]
}

prop_compose! {
    fn arb_transform()(
        transform_type in any::<u8>(),
        id in any::<u16>(),
        attributes in vec(arb_transform_attribute(), 0..3),
    ) -> Transform {
        Transform { transform_type: transform_type.into(), id, attributes }
    }
}

prop_compose! {
    fn arb_proposal()(
        number in any::<u8>(),
        protocol_id in any::<u8>(),
        spi in bytes(8),
        transforms in vec(arb_transform(), 0..5),
    ) -> Proposal {
        Proposal { number, protocol_id: protocol_id.into(), spi, transforms }
    }
}

prop_compose! {
    pub(super) fn arb_sa()(proposals in vec(arb_proposal(), 1..4)) -> SaPayload {
        SaPayload { proposals }
    }
}

prop_compose! {
    pub(super) fn arb_ke()(method in any::<u16>(), data in bytes(64)) -> KePayload {
        KePayload { method: method.into(), data }
    }
}

prop_compose! {
    pub(super) fn arb_identification()(id_type in any::<u8>(), data in bytes(32)) -> Identification {
        Identification { id_type: id_type.into(), data }
    }
}

pub(super) fn arb_ike_id() -> impl Strategy<Value = IkeId> {
    prop_oneof![
        ipv4().prop_map(IkeId::Ipv4),
        ipv6().prop_map(IkeId::Ipv6),
        string(16).prop_map(IkeId::Fqdn),
        string(16).prop_map(IkeId::Rfc822),
        bytes(16).prop_map(IkeId::KeyId),
        bytes(16).prop_map(IkeId::DerAsn1Dn),
        bytes(16).prop_map(IkeId::DerAsn1Gn),
        Just(IkeId::Null),
        (any::<u8>(), bytes(16))
            .prop_filter("typed ID types have variants", |(t, _)| {
                !matches!(t, 1 | 2 | 3 | 5 | 9 | 10 | 11 | 13)
            })
            .prop_map(|(t, data)| IkeId::Other {
                id_type: t.into(),
                data
            }),
    ]
}

prop_compose! {
    pub(super) fn arb_auth()(method in any::<u8>(), data in bytes(48)) -> AuthPayload {
        AuthPayload { method: method.into(), data }
    }
}

prop_compose! {
    pub(super) fn arb_cert()(encoding in any::<u8>(), data in bytes(48)) -> CertPayload {
        CertPayload { encoding: encoding.into(), data }
    }
}

prop_compose! {
    pub(super) fn arb_certreq()(encoding in any::<u8>(), data in bytes(40)) -> CertReqPayload {
        CertReqPayload { encoding: encoding.into(), data }
    }
}

pub(super) fn arb_nonce() -> impl Strategy<Value = Nonce> {
    vec(any::<u8>(), Nonce::MIN_LEN..=Nonce::MAX_LEN)
        .prop_filter_map("nonce length", |v| Nonce::new(v).ok())
}

prop_compose! {
    pub(super) fn arb_notify()(
        protocol_id in any::<u8>(),
        spi in bytes(8),
        notify_type in any::<u16>(),
        data in bytes(24),
    ) -> NotifyPayload {
        NotifyPayload { protocol_id: protocol_id.into(), spi, notify_type: notify_type.into(), data }
    }
}

pub(super) fn arb_delete() -> impl Strategy<Value = DeletePayload> {
    prop_oneof![
        any::<u8>().prop_map(|p| DeletePayload {
            protocol_id: p.into(),
            spi_size: 0,
            spis: Vec::new()
        }),
        (any::<u8>(), 1u8..=8, 0usize..4).prop_flat_map(|(p, size, n)| {
            vec(vec(any::<u8>(), usize::from(size)), n).prop_map(move |spis| DeletePayload {
                protocol_id: p.into(),
                spi_size: size,
                spis,
            })
        }),
    ]
}

fn arb_traffic_selector() -> impl Strategy<Value = TrafficSelector> {
    prop_oneof![
        (any::<u8>(), any::<u16>(), any::<u16>(), ipv4(), ipv4()).prop_map(
            |(ip_protocol, start_port, end_port, start_addr, end_addr)| TrafficSelector::Ipv4 {
                ip_protocol,
                start_port,
                end_port,
                start_addr,
                end_addr
            }
        ),
        (any::<u8>(), any::<u16>(), any::<u16>(), ipv6(), ipv6()).prop_map(
            |(ip_protocol, start_port, end_port, start_addr, end_addr)| TrafficSelector::Ipv6 {
                ip_protocol,
                start_port,
                end_port,
                start_addr,
                end_addr
            }
        ),
        (any::<u8>(), any::<u8>(), bytes(24))
            .prop_filter("address ranges have variants", |(t, _, _)| !matches!(
                t,
                7 | 8
            ))
            .prop_map(|(t, second_octet, data)| TrafficSelector::Other {
                ts_type: t.into(),
                second_octet,
                data
            }),
    ]
}

prop_compose! {
    pub(super) fn arb_ts()(selectors in vec(arb_traffic_selector(), 0..4)) -> TsPayload {
        TsPayload { selectors }
    }
}

fn arb_config_attribute() -> impl Strategy<Value = ConfigAttribute> {
    prop_oneof![
        proptest::option::of(ipv4()).prop_map(ConfigAttribute::InternalIp4Address),
        proptest::option::of(ipv4()).prop_map(ConfigAttribute::InternalIp4Netmask),
        proptest::option::of(ipv4()).prop_map(ConfigAttribute::InternalIp4Dns),
        proptest::option::of((ipv4(), ipv4())).prop_map(ConfigAttribute::InternalIp4Subnet),
        proptest::option::of((ipv6(), any::<u8>())).prop_map(ConfigAttribute::InternalIp6Address),
        proptest::option::of(ipv6()).prop_map(ConfigAttribute::InternalIp6Dns),
        proptest::option::of((ipv6(), any::<u8>())).prop_map(ConfigAttribute::InternalIp6Subnet),
        proptest::option::of(string(16).prop_filter("empty is None", |s| !s.is_empty()))
            .prop_map(ConfigAttribute::InternalDnsDomain),
        (0u16..0x8000, bytes(16))
            .prop_filter("typed attributes have variants", |(t, _)| {
                !matches!(t, 1 | 2 | 3 | 8 | 10 | 13 | 15 | 25)
            })
            .prop_map(|(t, value)| ConfigAttribute::Other {
                attr_type: t.into(),
                value
            }),
    ]
}

prop_compose! {
    pub(super) fn arb_cp()(
        cfg_type in any::<u8>(),
        attributes in vec(arb_config_attribute(), 0..5),
    ) -> ConfigPayload {
        ConfigPayload { cfg_type: cfg_type.into(), attributes }
    }
}

prop_compose! {
    pub(super) fn arb_sk()(next_inner in any::<u8>(), data in bytes(64)) -> EncryptedPayload {
        EncryptedPayload { next_inner: next_inner.into(), data }
    }
}

prop_compose! {
    pub(super) fn arb_skf()(
        next_inner in any::<u8>(),
        (fragment_number, total_fragments) in (1u16..=u16::MAX)
            .prop_flat_map(|total| (1..=total, Just(total))),
        data in bytes(64),
    ) -> EncryptedFragment {
        EncryptedFragment { next_inner: next_inner.into(), fragment_number, total_fragments, data }
    }
}

/// Payload types without a typed variant.
pub(super) fn unknown_payload_type() -> impl Strategy<Value = PayloadType> {
    prop_oneof![1u8..=32, 49u8..=52, 54u8..=255].prop_map(PayloadType::from)
}

/// Any payload except SK and SKF, as allowed inside SK.
pub(super) fn arb_inner_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        arb_sa().prop_map(Payload::Sa),
        arb_ke().prop_map(Payload::Ke),
        arb_identification().prop_map(Payload::IdI),
        arb_identification().prop_map(Payload::IdR),
        arb_cert().prop_map(Payload::Cert),
        arb_certreq().prop_map(Payload::CertReq),
        arb_auth().prop_map(Payload::Auth),
        arb_nonce().prop_map(Payload::Nonce),
        arb_notify().prop_map(Payload::Notify),
        arb_delete().prop_map(Payload::Delete),
        bytes(24).prop_map(Payload::VendorId),
        arb_ts().prop_map(Payload::TsI),
        arb_ts().prop_map(Payload::TsR),
        arb_cp().prop_map(Payload::Cp),
        bytes(24).prop_map(Payload::Eap),
        (unknown_payload_type(), bytes(24)).prop_map(|(payload_type, body)| Payload::Unknown {
            payload_type,
            critical: false,
            body
        }),
    ]
}

/// A payload chain as found inside SK.
pub(super) fn arb_inner_payloads() -> impl Strategy<Value = Vec<Payload>> {
    vec(arb_inner_payload(), 0..6)
}

/// A whole message: clear payloads, then perhaps SK or SKF.
pub(super) fn arb_message() -> impl Strategy<Value = Message> {
    let last = prop_oneof![
        Just(None),
        arb_sk().prop_map(|p| Some(Payload::Sk(p))),
        arb_skf().prop_map(|p| Some(Payload::Skf(p))),
    ];
    (arb_header(), arb_inner_payloads(), last).prop_map(|(header, mut payloads, last)| {
        payloads.extend(last);
        Message::new(header, payloads)
    })
}
