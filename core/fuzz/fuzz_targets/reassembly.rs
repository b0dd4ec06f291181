//! RFC 7383 fragment sequences, authentic and forged, fed to IKE reassembly: no panic, forged
//! fragments change nothing, completion only with every fragment, bounded memory; see
//! `pqvpn_core::fuzzing::reassembly`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pqvpn_core::fuzzing::reassembly(data);
});
