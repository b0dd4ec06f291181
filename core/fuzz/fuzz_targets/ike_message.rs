//! Parses arbitrary octets as an IKE message, a payload chain and a UDP-4500 datagram.
//!
//! Whatever parses must re-emit to octets that parse to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pqvpn_core::wire::{
    Message, PayloadType, classify_udp4500, emit_payloads, locate_encrypted, parse_payloads,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::parse(data) {
        let emitted = message.emit();
        assert_eq!(Message::parse(&emitted).as_ref(), Ok(&message));
        assert_eq!(emitted.len(), data.len());
    }
    if let Ok(Some(view)) = locate_encrypted(data) {
        assert_eq!(view.aad().len() + view.body().len(), data.len());
    }
    let _ = classify_udp4500(data);
    if let Some((first, rest)) = data.split_first() {
        if let Ok(payloads) = parse_payloads(PayloadType::from(*first), rest) {
            let mut out = Vec::new();
            let first = emit_payloads(&payloads, &mut out);
            assert_eq!(parse_payloads(first, &out).as_ref(), Ok(&payloads));
        }
    }
});
