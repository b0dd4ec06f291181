//! In-memory protocol tests: both ends of a tunnel in one process on a virtual clock, with a
//! seeded crypto provider (quinn-proto's `Pair`).

mod gateway_addresses;
mod half_open;
mod hostile_cfg_reply;
mod ike_handshake;
mod ike_lifecycle;
mod pair;
mod pre_icv;
mod tunnel_pair;
