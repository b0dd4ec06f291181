//! The gateway's IKE thread: the responder, port 500 and every key exchange, on an OS thread of
//! its own, so that a flood of IKE_SA_INIT (X25519, P-384, ML-KEM work for unauthenticated
//! peers) never delays the ESP loop that moves the connected clients' packets.
//!
//! The ESP loop hands it what arrives on port 4500 with a non-ESP marker ([`IkeDatagram`],
//! through a bounded queue that drops when full, as a socket would) and, on a queue of their
//! own, the data plane's few requests ([`GatewayRequest`]). It answers only with authenticated
//! outcomes ([`EspUpdate`]): the keys of a new or rekeyed Child SA, a deleted SA, a client gone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::super::DriverError;
use super::super::client::sleep_until;
use crate::crypto::CryptoProvider;
use crate::ike::{Event, Responder, ResponderStats};
use crate::tunnel::{EspOptions, EspUpdate, GatewayRequest, GatewayTunnel};

use super::BUF_LEN;

/// Datagrams from port 4500 that may wait for the IKE thread; more are dropped. A flood fills
/// this queue, never the ESP loop.
pub(super) const DATAGRAM_QUEUE: usize = 256;
/// Requests of the data plane that may wait for the IKE thread (one per client at most per
/// second, plus rekeys and closes).
pub(super) const INPUT_QUEUE: usize = 4096;
/// Outcomes that may wait for the ESP loop; the IKE thread waits when it is full.
pub(super) const UPDATE_QUEUE: usize = 1024;

/// An IKE message received on the NAT-T port (the non-ESP marker already removed).
#[derive(Debug)]
pub(super) struct IkeDatagram {
    /// Its source.
    pub(super) from: SocketAddr,
    /// Its octets.
    pub(super) octets: Vec<u8>,
}

/// What the IKE thread tells the ESP loop.
pub(super) enum IkeUpdate {
    /// What an authenticated exchange decided.
    Esp(Box<EspUpdate>),
    /// What the responder holds now (sent when the number of SAs changes, and at most every
    /// [`COUNTS_INTERVAL`] otherwise).
    Counts {
        /// IKE SAs, half-open and established.
        ike_sas: usize,
        /// IKE SAs authenticated since the start.
        authenticated: u64,
        /// Half-open SAs and refusals.
        stats: ResponderStats,
    },
}

/// How often [`IkeUpdate::Counts`] reports changed statistics alone.
const COUNTS_INTERVAL: Duration = Duration::from_millis(250);

/// Everything the IKE thread owns.
pub(super) struct IkeThread {
    pub(super) responder: Responder,
    pub(super) provider: Arc<dyn CryptoProvider>,
    pub(super) esp: EspOptions,
    pub(super) ike_local: SocketAddr,
    pub(super) nat_t_local: SocketAddr,
    pub(super) input: mpsc::Receiver<GatewayRequest>,
    pub(super) datagrams: mpsc::Receiver<IkeDatagram>,
    pub(super) updates: mpsc::Sender<IkeUpdate>,
    pub(super) shutdown: watch::Receiver<bool>,
    /// IKE SAs authenticated since the start.
    pub(super) authenticated: u64,
}

impl IkeThread {
    /// Starts the thread with its own single-threaded runtime. It receives and sends on
    /// `ike_socket` (port 500) and only sends on `nat_t_socket`, a second handle of the socket
    /// the ESP loop receives on.
    pub(super) fn spawn(
        self,
        ike_socket: std::net::UdpSocket,
        nat_t_socket: std::net::UdpSocket,
    ) -> Result<std::thread::JoinHandle<Result<(), DriverError>>, DriverError> {
        std::thread::Builder::new()
            .name("pqvpn-ike".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(DriverError::io("start the IKE thread's runtime"))?;
                runtime.block_on(self.run(ike_socket, nat_t_socket))
            })
            .map_err(DriverError::io("start the IKE thread"))
    }

    /// Runs until shutdown, or until the ESP loop is gone (its queues closed).
    async fn run(
        mut self,
        ike_socket: std::net::UdpSocket,
        nat_t_socket: std::net::UdpSocket,
    ) -> Result<(), DriverError> {
        let ike_socket =
            UdpSocket::from_std(ike_socket).map_err(DriverError::io("register the IKE socket"))?;
        let nat_t_socket = UdpSocket::from_std(nat_t_socket)
            .map_err(DriverError::io("register the NAT-T socket"))?;
        let mut buf = vec![0u8; BUF_LEN];
        let mut reported: Option<(usize, u64, ResponderStats, Instant)> = None;
        loop {
            // Events first: the ESP loop has a new Child SA's keys before the IKE_AUTH or
            // CREATE_CHILD_SA response that lets the client send on it leaves.
            if !self.forward_events().await? {
                return Ok(());
            }
            self.report_counts(&mut reported);
            self.send_queued(&ike_socket, &nat_t_socket, &mut buf).await;
            tokio::select! {
                r = ike_socket.recv_from(&mut buf) => {
                    let (n, from) = r.map_err(DriverError::io("receive on the IKE port"))?;
                    let datagram = buf.get(..n).unwrap_or_default();
                    self.responder.handle_datagram(Instant::now(), self.ike_local, from, datagram);
                }
                input = self.input.recv() => match input {
                    Some(input) => self.handle_input(input).await,
                    None => return Ok(()),
                },
                datagram = self.datagrams.recv() => match datagram {
                    Some(d) => {
                        self.responder.handle_datagram(Instant::now(), self.nat_t_local, d.from, &d.octets);
                    }
                    None => return Ok(()),
                },
                () = sleep_until(self.responder.poll_timeout()) => {
                    self.responder.handle_timeout(Instant::now());
                }
                _ = self.shutdown.changed() => return Ok(()),
            }
        }
    }

    async fn handle_input(&mut self, input: GatewayRequest) {
        let now = Instant::now();
        match input {
            GatewayRequest::Traffic { spi_r, at } => {
                self.responder.handle_inbound_traffic(at, spi_r);
            }
            GatewayRequest::RekeyChild { spi_r, spi } => {
                if self.responder.rekey_child_sa(now, spi_r, spi).is_err() {
                    let refused = IkeUpdate::Esp(Box::new(EspUpdate::RekeyRefused { spi_r }));
                    let _ = self.updates.send(refused).await;
                }
            }
            GatewayRequest::Close { spi_r } => {
                tracing::info!(client = ?self.responder.remote(spi_r), "the client's Child SA is gone; closing its IKE SA");
                self.responder.close(now, spi_r);
            }
        }
    }

    /// Sends [`EspUpdate::Counts`] if they changed: at once for the number of SAs, at most
    /// every [`COUNTS_INTERVAL`] for the statistics alone (a flood changes them per packet).
    fn report_counts(&self, reported: &mut Option<(usize, u64, ResponderStats, Instant)>) {
        let now = Instant::now();
        let ike_sas = self.responder.sa_count();
        let authenticated = self.authenticated;
        let stats = self.responder.stats();
        let due = match reported {
            None => true,
            Some((n, a, s, at)) => {
                *n != ike_sas
                    || *a != authenticated
                    || (*s != stats && now.duration_since(*at) >= COUNTS_INTERVAL)
            }
        };
        let counts = IkeUpdate::Counts {
            ike_sas,
            authenticated,
            stats,
        };
        if due && self.updates.try_send(counts).is_ok() {
            *reported = Some((ike_sas, authenticated, stats, now));
        }
    }

    /// Turns the responder's events into [`EspUpdate`]s. `false` once the ESP loop is gone.
    async fn forward_events(&mut self) -> Result<bool, DriverError> {
        while let Some((spi_r, event)) = self.responder.poll_event() {
            let client = self.responder.remote(spi_r);
            match &event {
                Event::IkeSaEstablished { .. } => self.authenticated += 1,
                Event::IkeSaRekeyed { suite } => {
                    tracing::info!(?client, suite = %suite, "IKE SA rekeyed");
                }
                Event::ChildSaRekeyed { new, .. } => {
                    tracing::info!(
                        ?client,
                        spi_in = %new.spi_r,
                        spi_out = %new.spi_i,
                        "Child SA rekeyed"
                    );
                }
                Event::Failed(e) => tracing::info!(?client, error = %e, "IKE SA failed"),
                Event::Closed => tracing::info!(ike_sa = spi_r, "IKE SA closed"),
                _ => {}
            }
            let update = GatewayTunnel::esp_update(
                &*self.provider,
                &self.esp,
                &self.responder,
                spi_r,
                &event,
            )?;
            if let Some(update) = update
                && self
                    .updates
                    .send(IkeUpdate::Esp(Box::new(update)))
                    .await
                    .is_err()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends what the responder queued, from the socket of the port it names.
    async fn send_queued(&mut self, ike: &UdpSocket, nat_t: &UdpSocket, buf: &mut [u8]) {
        while let Some(t) = self.responder.poll_transmit(Instant::now(), buf) {
            let socket = if t.nat_t { nat_t } else { ike };
            let datagram = buf.get(..t.size).unwrap_or_default();
            if let Err(e) = socket.send_to(datagram, t.destination).await {
                tracing::debug!(error = %e, "IKE datagram not sent");
            }
        }
    }
}
