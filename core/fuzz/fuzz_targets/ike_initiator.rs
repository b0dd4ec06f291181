//! Responder-side bytes fed to an IKE initiator in each handshake state (before the
//! IKE_SA_INIT, IKE_INTERMEDIATE and IKE_AUTH responses): raw, spliced over the genuine
//! response, or after its header. Nothing may panic; see `pqvpn_core::fuzzing::ike_initiator`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pqvpn_core::fuzzing::ike_initiator(data);
});
