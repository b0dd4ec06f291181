//! In-memory protocol tests: both ends of a tunnel in one process on a virtual clock, with a
//! seeded crypto provider (quinn-proto's `Pair`).

mod ike_handshake;
mod ike_lifecycle;
mod pair;
