//! IKEv2 (RFC 7296) with additional key exchanges (RFC 9370) over IKE_INTERMEDIATE (RFC 9242).

pub mod keys;
