//! What a tunnel reports to its front ends: the `status --json` schema.

use std::net::IpAddr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Lifecycle of a tunnel.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Handshaking.
    #[default]
    Connecting,
    /// Traffic flows.
    Connected,
    /// Lost the gateway; reconnecting.
    Reconnecting,
    /// Stopped on request.
    Disconnected,
    /// Stopped on an error ([`Status::last_error`]).
    Error,
}

/// The IKE SA's algorithms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IkeStatus {
    /// Key exchange of IKE_SA_INIT, e.g. `X25519`.
    pub ke: String,
    /// Additional key exchanges, e.g. `["ML-KEM-768"]`.
    pub addke: Vec<String>,
    /// SK payload cipher.
    pub encr: String,
    /// PRF.
    pub prf: String,
}

/// The ESP SA's algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EspStatus {
    /// ESP cipher.
    pub encr: String,
}

/// The negotiated algorithms as the core's types: front ends map these (exhaustively) to
/// their own, never parse [`IkeStatus`]'s names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Algorithms {
    /// Key exchange of IKE_SA_INIT.
    pub ke: crate::wire::KeyExchangeMethod,
    /// Additional key exchanges (RFC 9370).
    pub addke: Vec<crate::wire::KeyExchangeMethod>,
    /// SK payload cipher.
    pub ike_encr: crate::crypto::AeadAlgorithm,
    /// PRF.
    pub prf: crate::wire::PrfAlgorithm,
    /// ESP cipher, once the Child SA is up.
    pub esp_encr: Option<crate::crypto::AeadAlgorithm>,
}

/// A snapshot of one tunnel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Status {
    /// Lifecycle state.
    pub state: State,
    /// `hybrid`, `pq-only` or `classical`.
    pub mode: String,
    /// Whether the tunnel's keys depend on ML-KEM. False until connected.
    pub quantum_safe: bool,
    /// IKE algorithms.
    pub ike: IkeStatus,
    /// ESP algorithm.
    pub esp: EspStatus,
    /// `ike` and `esp` as types (not in the JSON, which has their names).
    #[serde(skip)]
    pub algorithms: Option<Algorithms>,
    /// Virtual addresses with prefix, e.g. `10.99.0.10/32`.
    pub virtual_ips: Vec<String>,
    /// DNS servers pushed by the gateway.
    pub dns: Vec<IpAddr>,
    /// Inner octets received through the tunnel.
    pub bytes_in: u64,
    /// Inner octets sent through the tunnel.
    pub bytes_out: u64,
    /// Child SA rekeys since the tunnel came up (each with a fresh key exchange).
    pub child_sa_rekeys: u64,
    /// Child SAs the gateway deleted and a new one replaced on the same IKE SA (a hard
    /// lifetime, RFC 7296 §1.3.1), since the tunnel came up.
    #[serde(default)]
    pub child_sa_recreates: u64,
    /// IKE SA rekeys since the tunnel came up.
    pub ike_sa_rekeys: u64,
    /// Seconds since the tunnel came up, as of the last [`Status::refreshed`].
    pub uptime_s: u64,
    /// When the tunnel came up; `uptime_s` is computed from it when the status is read.
    #[serde(skip)]
    pub connected_since: Option<Instant>,
    /// The gateway, as `ip:port`.
    pub gateway: String,
    /// Milliseconds from the first IKE_SA_INIT to the established Child SA.
    pub handshake_ms: Option<f64>,
    /// Why the tunnel stopped, is reconnecting, or last failed.
    pub last_error: Option<String>,
    /// Reconnect attempts since the tunnel was lost (0 unless `reconnecting`).
    #[serde(default)]
    pub attempt: u32,
    /// Times the tunnel came back after being lost, since the user connected.
    #[serde(default)]
    pub reconnects: u64,
    /// The kill switch is up: nothing leaves outside the tunnel but its own IKE/ESP (also
    /// while connecting and reconnecting).
    #[serde(default)]
    pub kill_switch: bool,
}

impl Status {
    /// This snapshot with `uptime_s` brought up to date: the driver publishes counters once a
    /// second, a reader should not see an uptime up to a second stale.
    #[must_use]
    pub fn refreshed(&self) -> Self {
        let mut s = self.clone();
        if let Some(at) = s.connected_since {
            s.uptime_s = at.elapsed().as_secs();
        }
        s
    }
}

#[cfg(feature = "gateway")]
/// What a gateway reports: its clients and what its responder holds and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GatewayStatus {
    /// Clients with a tunnel (a Child SA).
    pub clients: usize,
    /// IKE SAs, half-open and established.
    pub ike_sas: usize,
    /// IKE SAs authenticated since the gateway started.
    pub authenticated: u64,
    /// Half-open SAs, cookies and refusals of unauthenticated sources.
    pub responder: crate::ike::ResponderStats,
}
