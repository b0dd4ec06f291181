//! Authenticated CREATE_CHILD_SA, IKE_FOLLOWUP_KE and INFORMATIONAL messages, sealed with the
//! real SK keys, fed to the client's and the gateway's established IKE SA. Nothing may panic;
//! see `pqvpn_core::fuzzing::ike_session`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pqvpn_core::fuzzing::ike_session(data);
});
