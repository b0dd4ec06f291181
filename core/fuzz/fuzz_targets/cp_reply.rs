//! Configuration payload bodies: parsed and round-tripped, and delivered to a client as the CP
//! of its sealed IKE_AUTH response; see `pqvpn_core::fuzzing::cp_reply`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pqvpn_core::fuzzing::cp_reply(data);
});
