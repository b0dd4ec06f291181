//! Client-side bytes fed to the gateway: as its first datagram (the half-open path) or in
//! place of a request of a genuine handshake, raw, spliced or sealed with the real SA keys.
//! Nothing may panic; see `pqvpn_core::fuzzing::ike_responder`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pqvpn_core::fuzzing::ike_responder(data);
});
