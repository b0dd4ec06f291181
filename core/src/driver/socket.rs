//! The tunnel's UDP socket: marked so it bypasses the tunnel's own routes, and "protected" on
//! Android before use.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use tokio::net::UdpSocket;

use super::DriverError;

/// Called with the raw fd of every UDP socket the driver opens, before it sends anything:
/// Android's `VpnService.protect()` so the socket bypasses the VPN. Returning `false` aborts.
pub type SocketHook = Arc<dyn Fn(RawFd) -> bool + Send + Sync>;

/// Binds a non-blocking UDP socket at `local`, sets `fwmark` (Linux `SO_MARK`, so policy
/// routing sends it outside the tunnel) and runs `hook`. Receive and send buffers are raised to
/// 4 MiB where the kernel allows it.
pub fn bind_udp(
    local: SocketAddr,
    fwmark: Option<u32>,
    hook: Option<&SocketHook>,
) -> Result<UdpSocket, DriverError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if local.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(DriverError::io("create the UDP socket"))?;
    // Larger buffers absorb bursts (performance notes: default 208 KiB drops under load).
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(mark) = fwmark {
        socket
            .set_mark(mark)
            .map_err(DriverError::io("set SO_MARK on the UDP socket"))?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = fwmark;
    if let Some(hook) = hook
        && !hook(socket.as_raw_fd())
    {
        return Err(DriverError::Device(
            "protect() refused the UDP socket".into(),
        ));
    }
    socket
        .set_nonblocking(true)
        .map_err(DriverError::io("make the UDP socket non-blocking"))?;
    socket
        .bind(&local.into())
        .map_err(DriverError::io("bind the UDP socket"))?;
    UdpSocket::from_std(socket.into()).map_err(DriverError::io("register the UDP socket"))
}
