//! The tokio driver: one task per tunnel that owns the UDP socket, the packet device and a
//! single timer, and drives the sans-IO [`Initiator`](crate::ike::Initiator) /
//! [`Responder`](crate::ike::Responder) and the ESP SAs.
//!
//! TUN → [`seal`](crate::esp::OutboundSa::seal) → UDP, UDP → demux →
//! [`open`](crate::esp::InboundSa::open) → TUN; IKE datagrams and timeouts go to the IKE SA.
//! Front ends (CLI, tray, mobile shells) never see packets: they get [`Status`] snapshots over
//! a `watch` channel and stop the task through a shutdown signal.
//!
//! The packet device is a trait ([`PacketDevice`]) so the same loop runs over a Linux TUN, an
//! OS-provided TUN file descriptor (Android `VpnService`, iOS `NEPacketTunnelProvider`) or an
//! in-memory device ([`memory_device_pair`]) for tests and the unprivileged demo. Android's
//! `protect()` is the [`SocketHook`].

pub(crate) mod client;
mod device;
#[cfg(feature = "gateway")]
mod gateway;
pub mod network;
mod socket;
mod status;
pub mod supervisor;
#[cfg(test)]
#[cfg(feature = "gateway")]
mod supervisor_tests;
#[cfg(test)]
#[cfg(feature = "gateway")]
mod tests;

pub use crate::tunnel::TunnelUp;
pub use client::{ClientOptions, DeviceFactory, run_client};
pub use device::{MemoryDevice, PacketDevice, memory_device_pair};
#[cfg(feature = "gateway")]
pub use gateway::{GatewayOptions, run_gateway};
pub use socket::{SocketHook, bind_udp};
#[cfg(feature = "gateway")]
pub use status::GatewayStatus;
pub use status::{Algorithms, EspStatus, IkeStatus, State, Status};

/// Why a tunnel task stopped.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The IKE SA failed: unreachable gateway, authentication, refused ML-KEM, ...
    #[error("{0}")]
    Ike(#[from] crate::ike::Error),
    /// The gateway authenticated but the tunnel (Child SA) could not be set up.
    #[error("the gateway refused the tunnel: {0}")]
    ChildSa(crate::ike::Error),
    /// The gateway deleted the IKE SA (an orderly close from its side).
    #[error("the gateway closed the connection")]
    Closed,
    /// The Child SA the tunnel sends on is gone without a successor: the gateway deleted it, or
    /// it reached its hard lifetime without a rekey. The IKE SA is closed too.
    #[error("the gateway deleted the tunnel (its Child SA), or it expired without a rekey")]
    ChildSaGone,
    /// An ESP SA could not be keyed.
    #[error("Failed to set up ESP: {0}")]
    Esp(#[from] crate::esp::Error),
    /// A socket operation failed.
    #[error("Failed to {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The packet device could not be created or configured.
    #[error("Failed to set up the tunnel device: {0}")]
    Device(String),
}

impl DriverError {
    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { what, source }
    }
}
