//! Where inner IP packets come from and go to.

use std::future::Future;
use std::io;

use tokio::sync::mpsc;

/// A source and sink of inner IP packets: a TUN device, an OS-provided TUN fd, or memory.
pub trait PacketDevice: Send {
    /// Receives one IP packet into `buf`, returning its length.
    fn recv(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
    /// Sends one IP packet.
    fn send(&mut self, packet: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}

/// One end of an in-memory packet link (tests, the unprivileged demo).
#[derive(Debug)]
pub struct MemoryDevice {
    tx: mpsc::Sender<Vec<u8>>,
    rx: mpsc::Receiver<Vec<u8>>,
}

/// A driver-side device and the application-side end that talks to it: what the application
/// sends comes out of the driver's `recv`, and the reverse.
pub fn memory_device_pair(capacity: usize) -> (MemoryDevice, MemoryDevice) {
    let (a_tx, a_rx) = mpsc::channel(capacity);
    let (b_tx, b_rx) = mpsc::channel(capacity);
    (
        MemoryDevice { tx: a_tx, rx: b_rx },
        MemoryDevice { tx: b_tx, rx: a_rx },
    )
}

impl MemoryDevice {
    /// The sending and receiving halves, for an application that reads and writes from
    /// different tasks.
    pub fn split(self) -> (mpsc::Sender<Vec<u8>>, mpsc::Receiver<Vec<u8>>) {
        (self.tx, self.rx)
    }
}

impl PacketDevice for MemoryDevice {
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let packet = self
            .rx
            .recv()
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "device closed"))?;
        let out = buf
            .get_mut(..packet.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "packet too large"))?;
        out.copy_from_slice(&packet);
        Ok(packet.len())
    }

    async fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.tx
            .send(packet.to_vec())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "device closed"))
    }
}
