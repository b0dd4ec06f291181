//! The supervisor's driver: runs each session as a task, feeds its progress and end to the
//! [`Supervisor`], carries out the actions, and publishes one status that front ends read.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::machine::{Action, Input, SessionEnd, SessionId, Supervisor, TunnelState};
use crate::crypto::CryptoProvider;
use crate::driver::DriverError;
use crate::driver::client::{ClientOptions, DeviceFactory, run_session, sleep_until};
use crate::driver::status::{State, Status};
use crate::ike::{Error as IkeError, Mode};
use crate::wire::NotifyType;

/// Builds the options of each new session: resolves the gateway again (its address may have
/// changed) and reads the secret.
pub trait Connector: Send + 'static {
    /// The options of a session in `mode`; an error ends the attempt as a lost or refused
    /// session.
    fn options(
        &mut self,
        mode: Mode,
    ) -> impl Future<Output = Result<ClientOptions, SessionEnd>> + Send;
}

/// What front ends tell a running supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Connect (or retry now), in a mode at least as strict as the profile's.
    Connect {
        /// A stricter mode, e.g. pq-only.
        mode: Option<Mode>,
    },
    /// Reconnect a tunnel whose kill switch a crashed run left up ([`Input::Resume`]): the
    /// factory holds that block, and a failure keeps it.
    Resume {
        /// A stricter mode, e.g. pq-only.
        mode: Option<Mode>,
    },
    /// Disconnect and lift the routes.
    Disconnect,
    /// The network changed: reconnect on the new one.
    NetworkChanged,
    /// The machine is going to sleep.
    Suspend,
    /// The machine woke up.
    Wake,
}

impl From<Command> for Input {
    fn from(command: Command) -> Self {
        match command {
            Command::Connect { mode } => Self::Connect { mode },
            Command::Resume { mode } => Self::Resume { mode },
            Command::Disconnect => Self::Disconnect,
            Command::NetworkChanged => Self::NetworkChanged,
            Command::Suspend => Self::Suspend,
            Command::Wake => Self::Wake,
        }
    }
}

/// When [`run_supervisor`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// A foreground tunnel (`pqvpn up`): once disconnected, or on an error no retry fixes
    /// (after lifting the routes), or when the command channel closes.
    UntilStopped,
    /// A daemon's tunnel: only when the command channel closes (after disconnecting). Errors
    /// wait for the next command.
    UntilClosed,
}

/// A session task and its controls.
struct Running<F> {
    id: SessionId,
    stop: watch::Sender<bool>,
    /// Bumped to ask the session for a liveness check ([`Action::Probe`]).
    wake: watch::Sender<u64>,
    status: watch::Receiver<Status>,
    task: JoinHandle<(F, Result<(), DriverError>)>,
    up: bool,
}

impl<F: DeviceFactory + 'static> Running<F> {
    fn spawn(
        id: SessionId,
        mut options: ClientOptions,
        provider: Arc<dyn CryptoProvider>,
        mut factory: F,
    ) -> Self {
        let (stop, mut stop_rx) = watch::channel(false);
        let (wake, wake_rx) = watch::channel(0);
        options.wake = Some(wake_rx);
        let (status_tx, status) = watch::channel(Status::default());
        let task = tokio::spawn(async move {
            let result =
                run_session(options, provider, &mut factory, &status_tx, &mut stop_rx).await;
            (factory, result)
        });
        Self {
            id,
            stop,
            wake,
            status,
            task,
            up: false,
        }
    }

    /// Stops the session (a Delete to the gateway, bounded by the tunnel's close deadline)
    /// and gives the factory back; `None` if the task panicked.
    async fn stop(self) -> Option<F> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok((factory, _)) => Some(factory),
            Err(e) => {
                tracing::error!(error = %e, "a tunnel session task failed");
                None
            }
        }
    }
}

/// How a session's end counts: worth a retry, or not until something changes.
pub fn session_end(result: &Result<(), DriverError>) -> SessionEnd {
    let error = match result {
        Ok(()) => return SessionEnd::Lost("the tunnel closed".into()),
        Err(e) => e,
    };
    if let DriverError::Ike(IkeError::NoProposalChosen | IkeError::GatewayRejectedProposal(_)) =
        error
    {
        return SessionEnd::Rejected(error.to_string());
    }
    let refused = match error {
        DriverError::Ike(e) | DriverError::ChildSa(e) => matches!(
            e,
            IkeError::AuthenticationFailed
                | IkeError::IdentityMismatch
                | IkeError::NotifyReceived(NotifyType::AuthenticationFailed)
                | IkeError::NoProposalChosen
                | IkeError::GatewayRejectedProposal(_)
                | IkeError::GatewayRefusedMlKem
                | IkeError::UnacceptableKeyExchange(_)
                | IkeError::ProposalMismatch(_)
                | IkeError::TsUnacceptable
                | IkeError::CpRequired
                | IkeError::ConfigReplyRefused(_)
        ),
        DriverError::Device(_) => true,
        _ => false,
    };
    if refused {
        SessionEnd::Refused(error.to_string())
    } else {
        SessionEnd::Lost(error.to_string())
    }
}

/// Runs the supervisor for one profile whose mode is `floor`, starting disconnected: send
/// [`Command::Connect`] to bring it up. `status` always shows the supervisor's state (with the
/// attempt and reason while reconnecting) over the current session's details.
///
/// Returns `Ok` once disconnected and `Err(reason)` on an error no retry fixes, as `lifetime`
/// says. The device and routes are torn down, and the factory's kill switch lifted, before it
/// returns. The kill switch goes up before each session starts and stays while the state
/// [blocks traffic](TunnelState::blocks_traffic).
pub async fn run_supervisor<F, C>(
    floor: Mode,
    lifetime: Lifetime,
    mut connector: C,
    provider: Arc<dyn CryptoProvider>,
    factory: F,
    status: &watch::Sender<Status>,
    mut commands: mpsc::Receiver<Command>,
) -> Result<(), String>
where
    F: DeviceFactory + 'static,
    C: Connector,
{
    let mut machine = Supervisor::new(floor);
    let mut factory = Some(factory);
    let mut session: Option<Running<F>> = None;
    let mut closing = false;
    let mut started = false;
    // Whether `DeviceFactory::block` was called (and not undone), and whether it blocks.
    let mut blocked = false;
    let mut kill_switch = false;
    let random = |provider: &Arc<dyn CryptoProvider>| {
        let mut octets = [0u8; 4];
        // No randomness: no jitter; the backoff itself still holds.
        let _ = provider.fill_random(&mut octets);
        u32::from_ne_bytes(octets)
    };
    loop {
        while let Some(action) = machine.poll_action() {
            match action {
                Action::Start(id, mode) => {
                    started = true;
                    if let Some(old) = session.take() {
                        factory = old.stop().await;
                    }
                    let Some(mut f) = factory.take() else {
                        return Err("internal error: the tunnel device was lost".into());
                    };
                    // Fail closed from the first moment: the block goes up before the
                    // gateway's name is resolved (letting the driver's marked lookups out),
                    // then again with the address the session uses.
                    let refused = |e: DriverError| {
                        SessionEnd::Refused(format!("the kill switch could not be installed: {e}"))
                    };
                    let started = match f.block(None).await {
                        Ok(blocks) => {
                            blocked = true;
                            kill_switch = blocks;
                            match connector.options(mode).await {
                                Ok(options) => match f.block(Some(options.gateway)).await {
                                    Ok(blocks) => {
                                        kill_switch = blocks;
                                        Ok(options)
                                    }
                                    Err(e) => Err(refused(e)),
                                },
                                Err(end) => Err(end),
                            }
                        }
                        Err(e) => Err(refused(e)),
                    };
                    match started {
                        Ok(options) => {
                            session = Some(Running::spawn(id, options, provider.clone(), f));
                        }
                        Err(end) => {
                            factory = Some(f);
                            machine.handle(
                                Instant::now(),
                                random(&provider),
                                Input::SessionEnded(id, end),
                            );
                        }
                    }
                }
                Action::Stop(id) => {
                    if let Some(old) = session.take_if(|s| s.id == id) {
                        factory = old.stop().await;
                    }
                }
                Action::Probe(id) => {
                    if let Some(running) = session.as_ref().filter(|s| s.id == id) {
                        running.wake.send_modify(|n| *n = n.wrapping_add(1));
                    }
                }
                Action::Teardown => {
                    if let Some(f) = factory.as_mut() {
                        f.teardown().await;
                    }
                }
            }
        }
        if blocked
            && !machine.state().blocks_traffic()
            && let Some(f) = factory.as_mut()
        {
            match f.unblock().await {
                Ok(()) => {
                    blocked = false;
                    kill_switch = false;
                }
                // Still blocking, and said so; tried again at the next event.
                Err(e) => tracing::error!(error = %e, "the kill switch could not be lifted"),
            }
        }
        publish(
            status,
            machine.state(),
            session.as_ref(),
            machine.reconnects(),
            kill_switch,
        );
        match machine.state() {
            TunnelState::Disconnected(_)
                if closing || (started && lifetime == Lifetime::UntilStopped) =>
            {
                return Ok(());
            }
            TunnelState::Error(failed) if lifetime == Lifetime::UntilStopped || closing => {
                let reason = failed.reason.clone();
                // Only a block that blocks stays: a DNS lock alone would keep the host's DNS
                // dropped with no tunnel to carry it.
                let keep = failed.blocking && !closing && kill_switch;
                if let Some(f) = factory.as_mut() {
                    f.teardown().await;
                    if blocked
                        && !keep
                        && let Err(e) = f.unblock().await
                    {
                        tracing::error!(error = %e, "the kill switch could not be lifted");
                    }
                }
                // The tunnel was up and is gone for good: its kill switch stays (fail closed)
                // until the next run of the profile, or `pqvpn recover --unblock`.
                if keep {
                    return Err(format!(
                        "{reason}; the kill switch stays up (fail closed): connect again, or \
                         lift it with `pqvpn recover --unblock`"
                    ));
                }
                return Err(reason);
            }
            _ => {}
        }
        let (task, session_status) = match session.as_mut() {
            Some(s) => (Some(&mut s.task), Some(&mut s.status)),
            None => (None, None),
        };
        tokio::select! {
            joined = join(task) => {
                let Some(ended) = session.take() else { continue };
                let (f, result) = match joined {
                    Ok(done) => done,
                    Err(e) => return Err(format!("internal error: a tunnel session failed: {e}")),
                };
                factory = Some(f);
                if let Err(e) = &result {
                    tracing::info!(error = %e, "tunnel session ended");
                }
                // A session that came up and ended before its `connected` was seen: it did
                // install its device, so the supervisor must know it was up.
                if !ended.up && ended.status.borrow().state == State::Connected {
                    machine.handle(Instant::now(), random(&provider), Input::SessionUp(ended.id));
                }
                let input = Input::SessionEnded(ended.id, session_end(&result));
                machine.handle(Instant::now(), random(&provider), input);
            }
            () = changed(session_status) => {
                let Some(s) = session.as_mut() else { continue };
                if !s.up && s.status.borrow().state == State::Connected {
                    s.up = true;
                    machine.handle(Instant::now(), random(&provider), Input::SessionUp(s.id));
                }
            }
            command = commands.recv(), if !closing => {
                // The factory holds the block a crashed run left: lift it like our own.
                if matches!(command, Some(Command::Resume { .. })) {
                    blocked = true;
                }
                let input = command.map_or_else(
                    || {
                        closing = true;
                        Input::Disconnect
                    },
                    Input::from,
                );
                machine.handle(Instant::now(), random(&provider), input);
            }
            () = sleep_until(machine.poll_timeout()) => {
                machine.handle(Instant::now(), random(&provider), Input::Timeout);
            }
        }
    }
}

/// The session task's result, or never without a session.
async fn join<F>(
    task: Option<&mut JoinHandle<(F, Result<(), DriverError>)>>,
) -> Result<(F, Result<(), DriverError>), tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// Returns when the session's status changes (or its sender is gone); never without one.
async fn changed(status: Option<&mut watch::Receiver<Status>>) {
    match status {
        Some(status) => {
            if status.changed().await.is_err() {
                // The session is ending; its task's result follows.
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Publishes the session's details under the supervisor's state.
fn publish<F>(
    status: &watch::Sender<Status>,
    state: &TunnelState,
    session: Option<&Running<F>>,
    reconnects: u64,
    kill_switch: bool,
) {
    let mut next = session
        .map(|s| s.status.borrow().clone())
        .unwrap_or_default();
    next.reconnects = reconnects;
    next.kill_switch = kill_switch;
    match state {
        TunnelState::Disconnected(_) => {
            next = Status {
                state: State::Disconnected,
                reconnects,
                kill_switch,
                ..Status::default()
            };
        }
        TunnelState::Connecting(_) => next.state = State::Connecting,
        TunnelState::Connected(_) => next.state = State::Connected,
        TunnelState::Reconnecting(r) => {
            next.state = State::Reconnecting;
            next.attempt = r.attempt;
            next.last_error = Some(r.reason.clone());
        }
        TunnelState::Error(failed) => {
            next.state = State::Error;
            next.last_error = Some(failed.reason.clone());
        }
    }
    if next.mode.is_empty() {
        next.mode = match state {
            TunnelState::Connecting(c) => c.mode.to_string(),
            TunnelState::Connected(c) => c.mode.to_string(),
            TunnelState::Reconnecting(r) => r.mode.to_string(),
            TunnelState::Error(f) => f.mode.to_string(),
            TunnelState::Disconnected(_) => String::new(),
        };
    }
    status.send_if_modified(|current| {
        if *current == next {
            false
        } else {
            *current = next;
            true
        }
    });
}
