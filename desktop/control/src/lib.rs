//! pqvpn's control protocol, version [`VERSION`]: how front ends (the CLI, the tray, scripts)
//! talk to the daemon. Documented with examples in `docs/control-protocol.md`.
//!
//! - **Framing**: JSON lines over a Unix socket (`/run/pqvpn/control.sock`): one request per
//!   line, one reply line per request; after [`Request::Subscribe`] the daemon sends
//!   [`Event`] lines until the client hangs up. A request line is at most
//!   [`MAX_REQUEST_LINE`] octets, newline included; anything longer is refused unread.
//! - **Versions**: the first request should be [`Request::Hello`]; a daemon that does not
//!   speak the client's version answers [`ErrorCode::UnsupportedVersion`]. New fields may be
//!   added to replies within a version; clients ignore fields they do not know.
//! - **Errors**: a stable [`ErrorCode`] for programs and a message for people.
//!
//! This crate has no async runtime and no tunnel code: [`Client`] is a small blocking client.

mod client;
mod types;

pub use client::{Client, ClientError};
pub use types::*;

/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;

/// Longest request line, in octets, its newline included.
pub const MAX_REQUEST_LINE: usize = 4096;

/// Longest reply or event line a client reads, in octets.
pub const MAX_REPLY_LINE: usize = 1 << 20;

/// The daemon's socket.
pub const DEFAULT_SOCKET: &str = "/run/pqvpn/control.sock";

/// The group whose members may control tunnels (besides root).
pub const CONTROL_GROUP: &str = "pqvpn";
