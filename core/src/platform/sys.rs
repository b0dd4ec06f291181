//! The only `unsafe` code of the platform layer.

/// Wraps an owned TUN file descriptor in a tokio-driven [`tun_rs::AsyncDevice`].
#[cfg(unix)]
#[expect(
    unsafe_code,
    reason = "tun-rs takes ownership of a raw file descriptor"
)]
pub(super) fn async_device_from_fd(
    fd: std::os::fd::OwnedFd,
) -> std::io::Result<tun_rs::AsyncDevice> {
    use std::os::fd::IntoRawFd as _;
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` comes from an `OwnedFd`, so it is open and valid, and `into_raw_fd` hands its
    // ownership to the device, which closes it exactly once (also when this call fails). The
    // caller's documented contract (`Tun::from_fd`) is that it is a TUN device without
    // packet-information framing or IFF_VNET_HDR, as tun-rs requires.
    unsafe { tun_rs::AsyncDevice::from_fd(raw) }
}

/// Registers a netlink socket with the tokio reactor.
#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "tokio's I/O-safe registration of a file descriptor is unsafe"
)]
pub(super) fn async_netlink(
    socket: netlink_sys::Socket,
) -> std::io::Result<tokio::io::unix::AsyncFd<netlink_sys::Socket>> {
    // SAFETY: the `Socket` owns its descriptor (it closes it on drop, and only then), and moves
    // into the `AsyncFd`, which owns it from here on: the descriptor stays open and the same for
    // the `AsyncFd`'s whole lifetime, and `as_raw_fd` always returns it.
    unsafe { tokio::io::unix::AsyncFd::register(socket) }.map_err(std::io::Error::from)
}
