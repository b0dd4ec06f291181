use hex_literal::hex;
use proptest::prelude::*;

use super::*;
use crate::wire::strategies::{
    arb_header, arb_inner_payloads, arb_message, bytes, unknown_payload_type,
};
use crate::wire::*;

/// IKE_SA_INIT request: SA{ENCR_AES_GCM_16/256, PRF_HMAC_SHA2_384, KE CURVE_25519, ADDKE1
/// ML_KEM_768}, KE, Ni, and the notifies a PQ initiator sends.
const SA_INIT_REQUEST: [u8; 238] = hex!(
    "0102030405060708"                // IKE SPIi
    "0000000000000000"                // IKE SPIr
    "21 20 22 08"                     // Next SA, v2.0, IKE_SA_INIT, flags I
    "00000000"                        // Message ID 0
    "000000ee"                        // Length 238
    "22 00 0030"                      // SA: next KE, length 48
    "00 00 002c 01 01 00 04"          //   Proposal: last, length 44, #1, IKE, no SPI, 4 transforms
    "03 00 000c 01 00 0014 800e 0100" //     ENCR_AES_GCM_16, Key Length 256
    "03 00 0008 02 00 0006"           //     PRF_HMAC_SHA2_384
    "03 00 0008 04 00 001f"           //     KE CURVE_25519
    "00 00 0008 06 00 0024"           //     ADDKE1 ML_KEM_768
    "28 00 0028 001f 0000"            // KE: next Nonce, length 40, CURVE_25519
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "29 00 0024"                      // Nonce: next N, length 36
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "29 00 001c 00 00 4004"           // N: NAT_DETECTION_SOURCE_IP
    "1111111111111111111111111111111111111111"
    "29 00 001c 00 00 4005"           // N: NAT_DETECTION_DESTINATION_IP
    "2222222222222222222222222222222222222222"
    "29 00 0008 00 00 402e"           // N: IKEV2_FRAGMENTATION_SUPPORTED
    "29 00 0008 00 00 4036"           // N: INTERMEDIATE_EXCHANGE_SUPPORTED
    "00 00 000e 00 00 402f"           // N: SIGNATURE_HASH_ALGORITHMS, last
    "0002 0003 0004"                  //   SHA2_256, SHA2_384, SHA2_512
);

/// Offsets of the generic payload headers in [`SA_INIT_REQUEST`].
const PAYLOAD_OFFSETS: [usize; 9] = [28, 76, 116, 152, 180, 208, 216, 224, 238];

fn sa_init_request() -> Message {
    let header = Header::new(
        IkeSpi(0x0102_0304_0506_0708),
        IkeSpi::ZERO,
        ExchangeType::IkeSaInit,
        Flags::initiator_request(),
        MessageId::ZERO,
    );
    let sa = SaPayload {
        proposals: vec![Proposal {
            number: 1,
            protocol_id: ProtocolId::Ike,
            spi: Vec::new(),
            transforms: vec![
                Transform::encryption(EncryptionAlgorithm::AesGcm16, Some(256)),
                Transform::prf(PrfAlgorithm::HmacSha2_384),
                Transform::key_exchange(KeyExchangeMethod::Curve25519),
                Transform::additional_key_exchange(1, KeyExchangeMethod::MlKem768).unwrap(),
            ],
        }],
    };
    let payloads = vec![
        Payload::Sa(sa),
        Payload::Ke(KePayload {
            method: KeyExchangeMethod::Curve25519,
            data: (0x20..0x40).collect(),
        }),
        Payload::Nonce(Nonce::new((0x80..0xa0).collect()).unwrap()),
        Payload::Notify(NotifyPayload::status(
            NotifyType::NatDetectionSourceIp,
            vec![0x11; 20],
        )),
        Payload::Notify(NotifyPayload::status(
            NotifyType::NatDetectionDestinationIp,
            vec![0x22; 20],
        )),
        Payload::Notify(NotifyPayload::status(
            NotifyType::Ikev2FragmentationSupported,
            Vec::new(),
        )),
        Payload::Notify(NotifyPayload::status(
            NotifyType::IntermediateExchangeSupported,
            Vec::new(),
        )),
        Payload::Notify(NotifyPayload::signature_hash_algorithms(&[
            HashAlgorithm::Sha2_256,
            HashAlgorithm::Sha2_384,
            HashAlgorithm::Sha2_512,
        ])),
    ];
    Message::new(header, payloads)
}

/// `SA_INIT_REQUEST` with its Length field set to `len` and cut to `len` octets.
fn cut(len: usize) -> Vec<u8> {
    let mut b = SA_INIT_REQUEST[..len].to_vec();
    b[24..28].copy_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
    b
}

#[test]
fn parses_and_emits_sa_init_request() {
    let m = Message::parse(&SA_INIT_REQUEST).unwrap();
    assert_eq!(m, sa_init_request());
    assert_eq!(m.header.next_payload, PayloadType::SecurityAssociation);
    assert_eq!(m.header.length, 238);
    assert_eq!(m.emit(), SA_INIT_REQUEST);
    assert_eq!(sa_init_request().emit(), SA_INIT_REQUEST);
    let types: Vec<_> = m.payloads.iter().map(Payload::payload_type).collect();
    assert_eq!(
        types,
        [
            PayloadType::SecurityAssociation,
            PayloadType::KeyExchange,
            PayloadType::Nonce,
            PayloadType::Notify,
            PayloadType::Notify,
            PayloadType::Notify,
            PayloadType::Notify,
            PayloadType::Notify,
        ]
    );
}

#[test]
fn code_points_on_the_wire() {
    let b = SA_INIT_REQUEST;
    assert_eq!(b[16], PayloadType::SecurityAssociation.value());
    assert_eq!(b[17], 0x20);
    assert_eq!(b[18], ExchangeType::IkeSaInit.value());
    assert_eq!(b[19], Flags::INITIATOR_BIT);
    assert_eq!(b[28], PayloadType::KeyExchange.value());
    assert_eq!(b[37], ProtocolId::Ike.value());
    assert_eq!(b[44], TransformType::Encryption.value());
    assert_eq!(b[47], EncryptionAlgorithm::AesGcm16.value() as u8);
    assert_eq!(b[48..52], hex!("800e 0100"));
    assert_eq!(b[56], TransformType::PseudoRandomFunction.value());
    assert_eq!(b[59], PrfAlgorithm::HmacSha2_384.value() as u8);
    assert_eq!(b[64], TransformType::KeyExchange.value());
    assert_eq!(b[67], KeyExchangeMethod::Curve25519.value() as u8);
    assert_eq!(b[72], TransformType::AdditionalKeyExchange1.value());
    assert_eq!(b[75], KeyExchangeMethod::MlKem768.value() as u8);
    assert_eq!(b[76], PayloadType::Nonce.value());
    assert_eq!(b[81], 31);
    assert_eq!(b[116], PayloadType::Notify.value());
    assert_eq!(b[158..160], 16388u16.to_be_bytes());
    assert_eq!(b[186..188], 16389u16.to_be_bytes());
    assert_eq!(b[214..216], 16430u16.to_be_bytes());
    assert_eq!(b[222..224], 16438u16.to_be_bytes());
    assert_eq!(b[224], PayloadType::NoNextPayload.value());
    assert_eq!(b[230..232], 16431u16.to_be_bytes());
}

#[test]
fn rejects_every_truncation() {
    for n in 0..Header::LEN {
        assert_eq!(
            Message::parse(&SA_INIT_REQUEST[..n]),
            Err(ParseError::Truncated { what: "IKE header" })
        );
    }
    for n in Header::LEN..SA_INIT_REQUEST.len() {
        assert_eq!(
            Message::parse(&SA_INIT_REQUEST[..n]),
            Err(ParseError::Truncated {
                what: "IKE message"
            }),
            "cut at {n} with the original Length"
        );
        let err = Message::parse(&cut(n)).unwrap_err();
        let expected = if PAYLOAD_OFFSETS.contains(&n) {
            // A payload ends here but its Next Payload names another.
            ParseError::Truncated {
                what: "generic payload header",
            }
        } else if PAYLOAD_OFFSETS.iter().any(|o| n > *o && n < o + 4) {
            ParseError::Truncated {
                what: "generic payload header",
            }
        } else {
            ParseError::Truncated { what: "payload" }
        };
        assert_eq!(err, expected, "cut at {n} with Length {n}");
    }
}

#[test]
fn length_field_must_match_datagram() {
    let mut longer = SA_INIT_REQUEST.to_vec();
    longer.push(0);
    assert_eq!(
        Message::parse(&longer),
        Err(ParseError::TrailingData {
            what: "IKE message"
        })
    );
    longer[27] = 239;
    assert_eq!(
        Message::parse(&longer),
        Err(ParseError::TrailingData {
            what: "last payload"
        })
    );
    let mut b = SA_INIT_REQUEST;
    b[27] = 27;
    assert_eq!(
        Message::parse(&b),
        Err(ParseError::InvalidLength {
            what: "IKE message length"
        })
    );
}

#[test]
fn rejects_bad_payload_lengths() {
    for len in 0..4u8 {
        let mut b = SA_INIT_REQUEST;
        b[31] = len;
        assert_eq!(
            Message::parse(&b),
            Err(ParseError::InvalidLength {
                what: "payload length"
            })
        );
    }
    let mut b = SA_INIT_REQUEST;
    b[226..228].copy_from_slice(&[0, 15]); // last notify claims one octet more
    assert_eq!(
        Message::parse(&b),
        Err(ParseError::Truncated { what: "payload" })
    );
    let mut b = SA_INIT_REQUEST;
    b[226..228].copy_from_slice(&[0, 13]); // last notify claims one octet less
    assert_eq!(
        Message::parse(&b),
        Err(ParseError::TrailingData {
            what: "last payload"
        })
    );
}

#[test]
fn rejects_bad_major_version() {
    let mut b = SA_INIT_REQUEST;
    b[17] = 0x30;
    let err = Message::parse(&b).unwrap_err();
    assert_eq!(err, ParseError::InvalidMajorVersion(3));
    assert_eq!(err.notify_type(), NotifyType::InvalidMajorVersion);
}

#[test]
fn nonce_length_is_checked_in_messages() {
    let mut b = SA_INIT_REQUEST;
    b[119] = 4 + 15;
    // Keep the chain consistent: the Nonce shrinks, the rest moves up.
    let mut v = b[..116 + 19].to_vec();
    v.extend_from_slice(&SA_INIT_REQUEST[152..]);
    let len = u32::try_from(v.len()).unwrap();
    v[24..28].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        Message::parse(&v),
        Err(ParseError::InvalidLength { what: "nonce" })
    );
}

#[test]
fn unknown_payloads_follow_the_critical_bit() {
    let header = Header::new(
        IkeSpi(1),
        IkeSpi(2),
        ExchangeType::Informational,
        Flags::default(),
        MessageId(7),
    );
    let unknown = |critical| Payload::Unknown {
        payload_type: PayloadType::from(99),
        critical,
        body: vec![1, 2, 3],
    };
    let kept = Message::new(header, vec![unknown(false), Payload::VendorId(vec![9])]);
    let bytes = kept.emit();
    assert_eq!(bytes[16], 99);
    assert_eq!(bytes[28..35], hex!("2b 00 0007 010203"));
    assert_eq!(Message::parse(&bytes), Ok(kept));

    let critical = Message::new(header, vec![Payload::VendorId(vec![9]), unknown(true)]);
    let bytes = critical.emit();
    assert_eq!(bytes[33..37], hex!("00 80 0007"));
    let err = Message::parse(&bytes).unwrap_err();
    assert_eq!(
        err,
        ParseError::UnsupportedCriticalPayload(PayloadType::from(99))
    );
    assert_eq!(err.notify_type(), NotifyType::UnsupportedCriticalPayload);
    assert_eq!(err.to_notify().data, vec![99]);
}

#[test]
fn critical_bit_of_known_payloads_is_ignored() {
    let mut b = SA_INIT_REQUEST;
    b[29] = 0x80;
    b[153] = 0xff; // critical plus reserved bits
    let m = Message::parse(&b).unwrap();
    assert_eq!(m, sa_init_request());
    assert_eq!(m.emit(), SA_INIT_REQUEST);
}

fn sk(next_inner: PayloadType, data: &[u8]) -> Payload {
    Payload::Sk(EncryptedPayload {
        next_inner,
        data: data.to_vec(),
    })
}

fn skf(number: u16, total: u16) -> Payload {
    Payload::Skf(EncryptedFragment {
        next_inner: PayloadType::NoNextPayload,
        fragment_number: number,
        total_fragments: total,
        data: vec![0xee; 4],
    })
}

#[test]
fn sk_is_last_and_names_inner_payload() {
    let header = Header::new(
        IkeSpi(1),
        IkeSpi(2),
        ExchangeType::IkeAuth,
        Flags::initiator_request(),
        MessageId(1),
    );
    let m = Message::new(
        header,
        vec![sk(PayloadType::IdentificationInitiator, &[0xaa; 8])],
    );
    let bytes = m.emit();
    assert_eq!(bytes[16], PayloadType::Encrypted.value());
    assert_eq!(bytes[28..], hex!("23 00 000c aaaaaaaaaaaaaaaa"));
    assert_eq!(Message::parse(&bytes), Ok(m));

    for enc in [sk(PayloadType::Notify, &[1]), skf(1, 2)] {
        let m = Message::new(header, vec![enc, Payload::VendorId(vec![1])]);
        assert_eq!(Message::parse(&m.emit()), Err(ParseError::EncryptedNotLast));
    }
}

#[test]
fn skf_numbering_is_checked() {
    let header = Header::new(
        IkeSpi(1),
        IkeSpi(2),
        ExchangeType::IkeAuth,
        Flags::initiator_request(),
        MessageId(1),
    );
    let ok = Message::new(header, vec![skf(2, 2)]);
    assert_eq!(Message::parse(&ok.emit()), Ok(ok));
    for (number, total) in [(0, 0), (0, 3), (1, 0), (4, 3)] {
        let m = Message::new(header, vec![skf(number, total)]);
        assert_eq!(
            Message::parse(&m.emit()),
            Err(ParseError::InvalidFragmentNumber { number, total })
        );
    }
    let mut short = Message::new(header, vec![skf(1, 1)]).emit();
    short.truncate(Header::LEN + 4 + 3);
    short[27] = 35;
    short[31] = 7;
    assert_eq!(
        Message::parse(&short),
        Err(ParseError::Truncated {
            what: "SKF payload"
        })
    );
}

/// IKE_AUTH request contents: IDi, AUTH, CP, SA, TSi, TSr, N(INITIAL_CONTACT).
const IKE_AUTH_INNER: [u8; 154] = hex!(
    "27 00 0016 02 000000"             // IDi: next AUTH, ID_FQDN
    "636c69656e742e6578616d706c65"     //   client.example
    "2f 00 000c 02 000000 a1a2a3a4"    // AUTH: next CP, Shared Key MIC
    "21 00 0014 01 000000"             // CP: next SA, CFG_REQUEST
    "0001 0000 0008 0000 0003 0000"    //   IP4 address, IP6 address, IP4 DNS
    "2c 00 002c"                       // SA: next TSi
    "00 00 0028 01 03 04 03 c0ffee01"  //   Proposal 1, ESP, SPI, 3 transforms
    "03 00 000c 01 00 0014 800e 0100"  //     ENCR_AES_GCM_16/256
    "03 00 0008 05 00 0000"            //     No ESN
    "00 00 0008 04 00 0000"            //     KE NONE
    "2d 00 0018 01 000000"             // TSi: next TSr, 1 TS
    "07 00 0010 0000 ffff 00000000 ffffffff"
    "29 00 0018 01 000000"             // TSr: next N, 1 TS
    "07 00 0010 0000 ffff 00000000 ffffffff"
    "00 00 0008 00 00 4000"            // N: INITIAL_CONTACT
);

#[test]
fn parses_and_emits_inner_payloads() {
    let payloads = parse_payloads(PayloadType::IdentificationInitiator, &IKE_AUTH_INNER).unwrap();
    assert_eq!(payloads.len(), 7);
    let Payload::IdI(id) = &payloads[0] else {
        panic!("IDi expected")
    };
    assert_eq!(id.parsed(), Ok(IkeId::Fqdn("client.example".into())));
    let Payload::Sa(sa) = &payloads[3] else {
        panic!("SA expected")
    };
    assert_eq!(sa.proposals[0].spi, hex!("c0ffee01"));
    assert_eq!(
        payloads[4],
        Payload::TsI(TsPayload {
            selectors: vec![TrafficSelector::ipv4_any()]
        })
    );
    let mut out = Vec::new();
    let first = emit_payloads(&payloads, &mut out);
    assert_eq!(first, PayloadType::IdentificationInitiator);
    assert_eq!(out, IKE_AUTH_INNER);
}

#[test]
fn inner_payloads_reject_encrypted_and_empty_chains_work() {
    let mut out = Vec::new();
    let first = emit_payloads(&[sk(PayloadType::Notify, &[1])], &mut out);
    assert_eq!(
        parse_payloads(first, &out),
        Err(ParseError::NestedEncrypted)
    );
    let mut out = Vec::new();
    assert_eq!(emit_payloads(&[], &mut out), PayloadType::NoNextPayload);
    assert!(out.is_empty());
    assert_eq!(parse_payloads(PayloadType::NoNextPayload, &[]), Ok(vec![]));
    assert_eq!(
        parse_payloads(PayloadType::NoNextPayload, &[0]),
        Err(ParseError::TrailingData {
            what: "last payload"
        })
    );
    assert_eq!(
        parse_payloads(PayloadType::Notify, &[]),
        Err(ParseError::Truncated {
            what: "generic payload header"
        })
    );
}

#[test]
fn empty_message_round_trips() {
    let m = Message::new(
        Header::new(
            IkeSpi(5),
            IkeSpi(6),
            ExchangeType::Informational,
            Flags::default(),
            MessageId(3),
        ),
        Vec::new(),
    );
    let bytes = m.emit();
    assert_eq!(bytes.len(), Header::LEN);
    assert_eq!(bytes[16], 0);
    assert_eq!(Message::parse(&bytes), Ok(m));
}

proptest! {
    #[test]
    fn message_round_trips(m in arb_message()) {
        let bytes = m.emit();
        prop_assert_eq!(Message::parse(&bytes), Ok(m));
    }

    #[test]
    fn inner_payloads_round_trip(payloads in arb_inner_payloads()) {
        let mut out = Vec::new();
        let first = emit_payloads(&payloads, &mut out);
        prop_assert_eq!(parse_payloads(first, &out), Ok(payloads));
    }

    #[test]
    fn critical_unknown_payloads_are_rejected(
        payload_type in unknown_payload_type(),
        body in bytes(16),
        before in arb_inner_payloads(),
    ) {
        let mut payloads = before;
        payloads.push(Payload::Unknown { payload_type, critical: true, body });
        let mut out = Vec::new();
        let first = emit_payloads(&payloads, &mut out);
        prop_assert_eq!(
            parse_payloads(first, &out),
            Err(ParseError::UnsupportedCriticalPayload(payload_type))
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in bytes(300), first in any::<u8>()) {
        if let Ok(m) = Message::parse(&bytes) {
            prop_assert_eq!(Message::parse(&m.emit()), Ok(m));
        }
        if let Ok(p) = parse_payloads(first.into(), &bytes) {
            let mut out = Vec::new();
            let t = emit_payloads(&p, &mut out);
            prop_assert_eq!(parse_payloads(t, &out), Ok(p));
        }
        let _ = locate_encrypted(&bytes);
        let _ = classify_udp4500(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header_never_panic(
        header in arb_header(),
        body in bytes(300),
    ) {
        let mut v = Vec::new();
        header.emit(&mut v);
        v.extend_from_slice(&body);
        let len = u32::try_from(v.len()).unwrap();
        v[24..28].copy_from_slice(&len.to_be_bytes());
        if let Ok(m) = Message::parse(&v) {
            prop_assert_eq!(Message::parse(&m.emit()), Ok(m));
        }
        let _ = locate_encrypted(&v);
    }

    #[test]
    fn mutated_messages_never_panic(
        m in arb_message(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = m.emit();
        for (i, v) in edits {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(m) = Message::parse(&bytes) {
            prop_assert_eq!(Message::parse(&m.emit()), Ok(m));
        }
        let _ = locate_encrypted(&bytes);
    }
}
