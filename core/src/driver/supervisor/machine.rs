//! The tunnel's lifecycle as one explicit state machine, after talpid's tunnel state machine:
//! each state is a type whose `handle(self, …)` returns the next state and queues
//! [`Action`]s. No clock, socket or task here: time and randomness come in with each input,
//! so the tests run it on a virtual clock.
//!
//! - A tunnel that was up and dies (dead peer, retransmit timeout, the gateway closing the
//!   IKE SA or deleting the Child SA, a network change) goes to [`Reconnecting`] and retries
//!   with jittered exponential backoff, 1 s doubling to a 30 s cap, each time with a fresh IKE
//!   SA in the **same** mode: a retry never weakens the construction.
//! - A failure no retry can fix (authentication, a gateway that refuses ML-KEM or every
//!   proposal, a refused configuration) goes to [`Failed`] with its reason: no retry storm.
//! - While reconnecting or failed after having been connected, the device and its routes
//!   stay in place ([`Failed::blocking`]): traffic is not silently sent in clear. Only
//!   [`Input::Disconnect`] lifts them, and it always asks for the teardown.

use core::time::Duration;
use std::time::Instant;

use crate::ike::Mode;

/// The reason a resumed tunnel shows until it is up.
const RESUMED: &str = "the tunnel was up when pqvpn stopped";

/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One run of the tunnel (one IKE SA and its Child SAs), numbered so that the events of a
/// session the supervisor already stopped are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// Why a session ended, as the supervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// Worth retrying: the gateway stopped answering, closed the SA, the network failed.
    Lost(String),
    /// Not worth retrying until something changes: authentication, policy, configuration.
    Refused(String),
    /// The gateway accepted none of our proposals (NO_PROPOSAL_CHOSEN). On a first connect
    /// that is final, like [`Refused`](Self::Refused); while reconnecting to a gateway that
    /// took the same proposal before it is retried like [`Lost`](Self::Lost): a restarting
    /// gateway answers so until its configuration is loaded.
    Rejected(String),
}

/// What the supervisor is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Bring the tunnel up (again, at once, from any state but connected), in `mode` if it is
    /// at least as strict as the profile's, else in the profile's.
    Connect {
        /// A stricter mode than the profile's, e.g. pq-only (the tray's toggle).
        mode: Option<Mode>,
    },
    /// Bring up a tunnel that was up when the process that ran it stopped (crashed): its kill
    /// switch is still in place, so this starts as a reconnect of a tunnel that was up
    /// ([`Failed::blocking`] if it fails for good), not as a first connect. In any state but
    /// disconnected it is a [`Connect`](Self::Connect).
    Resume {
        /// As for [`Connect`](Self::Connect).
        mode: Option<Mode>,
    },
    /// Take the tunnel down and lift its routes.
    Disconnect,
    /// Session `0` is up: the Child SA carries traffic.
    SessionUp(SessionId),
    /// Session `0` ended.
    SessionEnded(SessionId, SessionEnd),
    /// The reconnect delay passed ([`Supervisor::poll_timeout`]).
    Timeout,
    /// The OS reported another network (address, default route, interface).
    NetworkChanged,
    /// The machine is going to sleep.
    Suspend,
    /// The machine woke up.
    Wake,
}

/// What the supervisor asks its driver to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a session in `mode` (stopping any other first).
    Start(SessionId, Mode),
    /// Stop the session (a Delete to the gateway); its end is not reported back.
    Stop(SessionId),
    /// Check that the session's gateway is still there (a DPD now, answered within
    /// [`WAKE_PROBE`](crate::tunnel::WAKE_PROBE), or the session ends as lost).
    Probe(SessionId),
    /// Remove the tunnel device, its routes and DNS.
    Teardown,
}

/// Disconnected: nothing runs, nothing is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnected;

/// The first session after a connect is being set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connecting {
    /// The session.
    pub session: SessionId,
    /// Its mode.
    pub mode: Mode,
}

/// Traffic flows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// The session.
    pub session: SessionId,
    /// Its mode.
    pub mode: Mode,
    /// When it came up.
    pub since: Instant,
}

/// The tunnel was lost; the device and routes stay while new sessions are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnecting {
    /// Attempts so far, 1 for the first retry.
    pub attempt: u32,
    /// The delay before this attempt.
    pub backoff: Duration,
    /// What is happening now.
    pub phase: Phase,
    /// The mode every attempt uses.
    pub mode: Mode,
    /// Why the tunnel was lost, or why the last attempt failed.
    pub reason: String,
    /// Whether the device and routes are installed (the tunnel had been up).
    installed: bool,
}

/// Where a [`Reconnecting`] state is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the backoff to pass.
    Waiting {
        /// When the next attempt starts.
        until: Instant,
    },
    /// A session is being set up.
    Trying(SessionId),
    /// Asleep until [`Input::Wake`].
    Suspended,
}

/// Stopped on a failure no retry fixes; waits for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The reason, for people.
    pub reason: String,
    /// The mode that failed, kept for the next connect.
    pub mode: Mode,
    /// The device and routes are still installed and block traffic (the tunnel had been up):
    /// nothing leaves in clear until the user disconnects or connects again.
    pub blocking: bool,
}

/// The supervisor's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelState {
    /// See [`Disconnected`].
    Disconnected(Disconnected),
    /// See [`Connecting`].
    Connecting(Connecting),
    /// See [`Connected`].
    Connected(Connected),
    /// See [`Reconnecting`].
    Reconnecting(Reconnecting),
    /// See [`Failed`].
    Error(Failed),
}

impl TunnelState {
    /// Whether traffic outside the tunnel is to be blocked (by the kill switch, where the
    /// profile has one): from the connect until the user disconnects, except after a first
    /// connect that failed for good (nothing was ever up to protect).
    pub fn blocks_traffic(&self) -> bool {
        match self {
            Self::Disconnected(_) => false,
            Self::Connecting(_) | Self::Connected(_) | Self::Reconnecting(_) => true,
            Self::Error(failed) => failed.blocking,
        }
    }
}

/// Context of one transition: the time, a random value for jitter, the profile's mode floor,
/// the session counter and the queued actions.
#[derive(Debug)]
pub struct Supervisor {
    state: TunnelState,
    /// The profile's mode: the weakest any session may use.
    floor: Mode,
    next_session: u64,
    /// Times a lost tunnel came back ([`Reconnecting`] to [`Connected`]).
    reconnects: u64,
    actions: Vec<Action>,
}

/// How strict a mode is: classical < hybrid < pq-only.
fn strictness(mode: Mode) -> u8 {
    match mode {
        Mode::Classical => 0,
        Mode::Hybrid => 1,
        _ => 2,
    }
}

/// Whether `mode` is at least as strict as `floor` (a user may tighten, never loosen).
pub fn at_least(mode: Mode, floor: Mode) -> bool {
    strictness(mode) >= strictness(floor)
}

/// The delay before reconnect attempt `attempt` (1-based): 1 s doubling to 30 s, then minus
/// up to a quarter at random (`random` is uniform over `u32`), so that clients of one gateway
/// that lost it together do not come back in lockstep.
pub fn backoff(attempt: u32, random: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(5);
    let base = (BACKOFF_MIN * (1u32 << doublings)).min(BACKOFF_MAX);
    let quarter = base / 4;
    let jitter = quarter.mul_f64(f64::from(random) / f64::from(u32::MAX));
    base - jitter
}

/// The inputs of one transition besides the input itself.
struct Step<'a> {
    now: Instant,
    random: u32,
    floor: Mode,
    next_session: &'a mut u64,
    actions: &'a mut Vec<Action>,
}

impl Step<'_> {
    fn start(&mut self, mode: Mode) -> SessionId {
        let id = SessionId(*self.next_session);
        *self.next_session += 1;
        self.actions.push(Action::Start(id, mode));
        id
    }

    /// The mode a connect asks for, never below the floor.
    fn mode(&self, requested: Option<Mode>, current: Mode) -> Mode {
        match requested {
            Some(mode) if at_least(mode, self.floor) => mode,
            Some(_) => self.floor,
            None => current,
        }
    }

    fn connecting(&mut self, mode: Mode) -> TunnelState {
        TunnelState::Connecting(Connecting {
            session: self.start(mode),
            mode,
        })
    }

    /// Lost the tunnel (or an attempt): wait for attempt `attempt`.
    fn reconnecting(
        &mut self,
        attempt: u32,
        mode: Mode,
        reason: String,
        installed: bool,
    ) -> TunnelState {
        let backoff = backoff(attempt, self.random);
        TunnelState::Reconnecting(Reconnecting {
            attempt,
            backoff,
            phase: Phase::Waiting {
                until: self.now + backoff,
            },
            mode,
            reason,
            installed,
        })
    }

    /// A session started at once in `mode` after the tunnel was lost or changed: attempt 1,
    /// no backoff.
    fn trying(&mut self, mode: Mode, reason: &str, installed: bool) -> TunnelState {
        let session = self.start(mode);
        TunnelState::Reconnecting(Reconnecting {
            attempt: 1,
            backoff: Duration::ZERO,
            phase: Phase::Trying(session),
            mode,
            reason: reason.into(),
            installed,
        })
    }

    /// Asleep: `session` stopped, nothing retried until [`Input::Wake`].
    fn suspended(&mut self, session: SessionId, mode: Mode, installed: bool) -> TunnelState {
        self.actions.push(Action::Stop(session));
        TunnelState::Reconnecting(Reconnecting {
            attempt: 0,
            backoff: Duration::ZERO,
            phase: Phase::Suspended,
            mode,
            reason: "the machine went to sleep".into(),
            installed,
        })
    }

    /// Stops `stop` and lifts whatever the sessions installed. The teardown is asked for even
    /// when no session came up as far as the supervisor knows: one may have created its device
    /// just before it was stopped, and a teardown of nothing does nothing.
    fn disconnected(&mut self, stop: Option<SessionId>) -> TunnelState {
        if let Some(session) = stop {
            self.actions.push(Action::Stop(session));
        }
        self.actions.push(Action::Teardown);
        TunnelState::Disconnected(Disconnected)
    }

    fn failed(&mut self, reason: String, mode: Mode, installed: bool) -> TunnelState {
        TunnelState::Error(Failed {
            reason,
            mode,
            blocking: installed,
        })
    }
}

impl Disconnected {
    fn handle(self, step: &mut Step<'_>, input: Input) -> TunnelState {
        match input {
            Input::Connect { mode } => {
                let mode = step.mode(mode, step.floor);
                step.connecting(mode)
            }
            Input::Resume { mode } => {
                let mode = step.mode(mode, step.floor);
                step.trying(mode, RESUMED, true)
            }
            _ => TunnelState::Disconnected(self),
        }
    }
}

impl Connecting {
    fn handle(self, step: &mut Step<'_>, input: Input) -> TunnelState {
        match input {
            Input::SessionUp(id) if id == self.session => TunnelState::Connected(Connected {
                session: self.session,
                mode: self.mode,
                since: step.now,
            }),
            Input::SessionEnded(id, end) if id == self.session => match end {
                SessionEnd::Lost(reason) => step.reconnecting(1, self.mode, reason, false),
                SessionEnd::Refused(reason) | SessionEnd::Rejected(reason) => {
                    step.failed(reason, self.mode, false)
                }
            },
            Input::Disconnect => step.disconnected(Some(self.session)),
            // The block of a crashed run was adopted: from now on this is a tunnel that was up.
            Input::Resume { mode } => {
                step.actions.push(Action::Stop(self.session));
                let mode = step.mode(mode, self.mode);
                step.trying(mode, RESUMED, true)
            }
            Input::Connect { mode } if step.mode(mode, self.mode) != self.mode => {
                step.actions.push(Action::Stop(self.session));
                let mode = step.mode(mode, self.mode);
                step.connecting(mode)
            }
            Input::NetworkChanged => {
                step.actions.push(Action::Stop(self.session));
                step.connecting(self.mode)
            }
            Input::Suspend => step.suspended(self.session, self.mode, false),
            _ => TunnelState::Connecting(self),
        }
    }
}

impl Connected {
    fn handle(self, step: &mut Step<'_>, input: Input) -> TunnelState {
        match input {
            Input::SessionEnded(id, end) if id == self.session => match end {
                SessionEnd::Lost(reason) | SessionEnd::Rejected(reason) => {
                    step.reconnecting(1, self.mode, reason, true)
                }
                SessionEnd::Refused(reason) => step.failed(reason, self.mode, true),
            },
            Input::Disconnect => step.disconnected(Some(self.session)),
            // A stricter mode reconnects at once in it (the tray's PQ-only switch).
            Input::Connect { mode } if step.mode(mode, self.mode) != self.mode => {
                step.actions.push(Action::Stop(self.session));
                let mode = step.mode(mode, self.mode);
                step.trying(mode, &format!("switching to {mode}"), true)
            }
            Input::NetworkChanged => {
                step.actions.push(Action::Stop(self.session));
                step.trying(self.mode, "the network changed", true)
            }
            Input::Suspend => step.suspended(self.session, self.mode, true),
            // Awake again without having been told of the sleep (a laptop's lid, a frozen
            // process): the tunnel may be stale. One DPD round says.
            Input::Wake => {
                step.actions.push(Action::Probe(self.session));
                TunnelState::Connected(self)
            }
            _ => TunnelState::Connected(self),
        }
    }
}

impl Reconnecting {
    fn handle(self, step: &mut Step<'_>, input: Input) -> TunnelState {
        let trying = match self.phase {
            Phase::Trying(id) => Some(id),
            _ => None,
        };
        match input {
            Input::Timeout => match self.phase {
                Phase::Waiting { until } if step.now >= until => {
                    let session = step.start(self.mode);
                    TunnelState::Reconnecting(Self {
                        phase: Phase::Trying(session),
                        ..self
                    })
                }
                _ => TunnelState::Reconnecting(self),
            },
            Input::SessionUp(id) if Some(id) == trying => TunnelState::Connected(Connected {
                session: id,
                mode: self.mode,
                since: step.now,
            }),
            Input::SessionEnded(id, end) if Some(id) == trying => match end {
                SessionEnd::Lost(reason) | SessionEnd::Rejected(reason) => step.reconnecting(
                    self.attempt.saturating_add(1),
                    self.mode,
                    reason,
                    self.installed,
                ),
                SessionEnd::Refused(reason) => step.failed(reason, self.mode, self.installed),
            },
            Input::Disconnect => step.disconnected(trying),
            Input::Resume { mode } => Self {
                installed: true,
                ..self
            }
            .handle(step, Input::Connect { mode }),
            // Retry now: the user asked, the network changed, or the machine woke up.
            Input::Connect { mode } => {
                if let Some(id) = trying {
                    step.actions.push(Action::Stop(id));
                }
                let mode = step.mode(mode, self.mode);
                let session = step.start(mode);
                TunnelState::Reconnecting(Self {
                    phase: Phase::Trying(session),
                    mode,
                    ..self
                })
            }
            // A new network: the attempt in flight may use the old one, so start afresh.
            Input::NetworkChanged if self.phase != Phase::Suspended => {
                if let Some(id) = trying {
                    step.actions.push(Action::Stop(id));
                }
                let session = step.start(self.mode);
                TunnelState::Reconnecting(Self {
                    attempt: self.attempt.max(1),
                    phase: Phase::Trying(session),
                    reason: "the network changed".into(),
                    ..self
                })
            }
            Input::Wake if matches!(self.phase, Phase::Suspended | Phase::Waiting { .. }) => {
                let session = step.start(self.mode);
                TunnelState::Reconnecting(Self {
                    attempt: self.attempt.max(1),
                    phase: Phase::Trying(session),
                    reason: "the machine woke up".into(),
                    ..self
                })
            }
            Input::Suspend => {
                if let Some(id) = trying {
                    step.actions.push(Action::Stop(id));
                }
                TunnelState::Reconnecting(Self {
                    phase: Phase::Suspended,
                    ..self
                })
            }
            _ => TunnelState::Reconnecting(self),
        }
    }
}

impl Failed {
    fn handle(self, step: &mut Step<'_>, input: Input) -> TunnelState {
        match input {
            Input::Resume { mode } => {
                let mode = step.mode(mode, self.mode);
                step.trying(mode, RESUMED, true)
            }
            Input::Connect { mode } => {
                let mode = step.mode(mode, self.mode);
                if self.blocking {
                    step.trying(mode, &self.reason, true)
                } else {
                    step.connecting(mode)
                }
            }
            Input::Disconnect => step.disconnected(None),
            _ => TunnelState::Error(self),
        }
    }
}

impl Supervisor {
    /// A disconnected supervisor for a profile in mode `floor`.
    pub fn new(floor: Mode) -> Self {
        Self {
            state: TunnelState::Disconnected(Disconnected),
            floor,
            next_session: 1,
            reconnects: 0,
            actions: Vec::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> &TunnelState {
        &self.state
    }

    /// The profile's mode, below which no session goes.
    pub fn floor(&self) -> Mode {
        self.floor
    }

    /// Feeds `input` at `now`; `random` is a fresh uniform value for the backoff's jitter.
    pub fn handle(&mut self, now: Instant, random: u32, input: Input) {
        let state = core::mem::replace(&mut self.state, TunnelState::Disconnected(Disconnected));
        let mut step = Step {
            now,
            random,
            floor: self.floor,
            next_session: &mut self.next_session,
            actions: &mut self.actions,
        };
        let was_reconnecting = matches!(state, TunnelState::Reconnecting(_));
        // Connected, a resume is a connect (a stricter mode switches).
        let input = match input {
            Input::Resume { mode } if matches!(state, TunnelState::Connected(_)) => {
                Input::Connect { mode }
            }
            input => input,
        };
        self.state = match state {
            TunnelState::Disconnected(s) => s.handle(&mut step, input),
            TunnelState::Connecting(s) => s.handle(&mut step, input),
            TunnelState::Connected(s) => s.handle(&mut step, input),
            TunnelState::Reconnecting(s) => s.handle(&mut step, input),
            TunnelState::Error(s) => s.handle(&mut step, input),
        };
        if was_reconnecting && matches!(self.state, TunnelState::Connected(_)) {
            self.reconnects += 1;
        }
    }

    /// Times a lost tunnel came back since this supervisor started.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        (!self.actions.is_empty()).then(|| self.actions.remove(0))
    }

    /// When to feed [`Input::Timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            TunnelState::Reconnecting(Reconnecting {
                phase: Phase::Waiting { until },
                ..
            }) => Some(*until),
            _ => None,
        }
    }
}
