//! The supervisor on a virtual clock: backoff bounds, no weaker mode on retry, `Error` without
//! retries on refusals, routes kept while reconnecting, suspend and wake, stale sessions.

use core::time::Duration;
use std::time::Instant;

use super::machine::*;
use crate::ike::Mode;

/// A supervisor with a virtual clock.
struct Harness {
    sup: Supervisor,
    now: Instant,
    random: u32,
}

impl Harness {
    fn new(floor: Mode) -> Self {
        Self {
            sup: Supervisor::new(floor),
            now: Instant::now(),
            random: u32::MAX / 2,
        }
    }

    fn feed(&mut self, input: Input) -> Vec<Action> {
        self.sup.handle(self.now, self.random, input);
        core::iter::from_fn(|| self.sup.poll_action()).collect()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn reconnecting(&self) -> &Reconnecting {
        match self.sup.state() {
            TunnelState::Reconnecting(r) => r,
            other => panic!("not reconnecting: {other:?}"),
        }
    }

    /// Connects and brings session 1 up.
    fn connected(floor: Mode) -> Self {
        let mut h = Self::new(floor);
        assert_eq!(
            h.feed(Input::Connect { mode: None }),
            [Action::Start(SessionId(1), floor)]
        );
        assert_eq!(h.feed(Input::SessionUp(SessionId(1))), []);
        assert!(matches!(h.sup.state(), TunnelState::Connected(_)));
        h
    }
}

fn lost(reason: &str) -> SessionEnd {
    SessionEnd::Lost(reason.into())
}

#[test]
fn backoff_doubles_from_one_second_to_thirty_with_at_most_a_quarter_off() {
    let mut previous = Duration::ZERO;
    for attempt in 1..=40 {
        let base = (BACKOFF_MIN * 2u32.pow((attempt - 1).min(5))).min(BACKOFF_MAX);
        let longest = backoff(attempt, 0);
        let shortest = backoff(attempt, u32::MAX);
        assert_eq!(longest, base, "attempt {attempt}");
        assert_eq!(shortest, base - base / 4, "attempt {attempt}");
        let middle = backoff(attempt, u32::MAX / 2);
        assert!(shortest < middle && middle < longest, "attempt {attempt}");
        assert!(longest >= previous && longest <= BACKOFF_MAX);
        previous = longest;
    }
    assert_eq!(backoff(1, 0), Duration::from_secs(1));
    assert_eq!(backoff(6, 0), Duration::from_secs(30));
    assert_eq!(backoff(u32::MAX, 0), Duration::from_secs(30));
}

#[test]
fn a_lost_tunnel_reconnects_in_the_same_mode_keeping_its_routes() {
    let mut h = Harness::connected(Mode::Hybrid);
    // The gateway stops answering: no Teardown, the routes stay.
    assert_eq!(
        h.feed(Input::SessionEnded(SessionId(1), lost("dead peer"))),
        []
    );
    let mut session = 1;
    for attempt in 1..=8u32 {
        let r = h.reconnecting().clone();
        assert_eq!((r.attempt, r.mode), (attempt, Mode::Hybrid));
        assert_eq!(r.backoff, backoff(attempt, h.random));
        let Phase::Waiting { until } = r.phase else {
            panic!("{r:?}")
        };
        assert_eq!(h.sup.poll_timeout(), Some(until));
        // Early timeouts start nothing.
        h.advance(r.backoff - Duration::from_millis(1));
        assert_eq!(h.feed(Input::Timeout), []);
        h.advance(Duration::from_millis(1));
        session += 1;
        assert_eq!(
            h.feed(Input::Timeout),
            [Action::Start(SessionId(session), Mode::Hybrid)]
        );
        assert_eq!(h.reconnecting().phase, Phase::Trying(SessionId(session)));
        assert_eq!(h.sup.poll_timeout(), None);
        h.advance(Duration::from_secs(7));
        assert_eq!(
            h.feed(Input::SessionEnded(SessionId(session), lost("timeout"))),
            []
        );
    }
    assert_eq!(h.reconnecting().backoff, backoff(9, h.random));
    assert!(h.reconnecting().backoff <= BACKOFF_MAX);
    // The gateway is back.
    h.advance(BACKOFF_MAX);
    session += 1;
    assert_eq!(
        h.feed(Input::Timeout),
        [Action::Start(SessionId(session), Mode::Hybrid)]
    );
    assert_eq!(h.feed(Input::SessionUp(SessionId(session))), []);
    let TunnelState::Connected(c) = h.sup.state() else {
        panic!()
    };
    assert_eq!(
        (c.session, c.mode, c.since),
        (SessionId(session), Mode::Hybrid, h.now)
    );
    assert_eq!(h.sup.reconnects(), 1);
    // The next loss starts again at attempt 1.
    h.feed(Input::SessionEnded(SessionId(session), lost("closed")));
    assert_eq!(h.reconnecting().attempt, 1);
}

#[test]
fn no_connect_or_retry_goes_below_the_profiles_mode() {
    for (floor, asked, used) in [
        (Mode::Hybrid, Some(Mode::Classical), Mode::Hybrid),
        (Mode::Hybrid, Some(Mode::PqOnly), Mode::PqOnly),
        (Mode::PqOnly, Some(Mode::Hybrid), Mode::PqOnly),
        (Mode::PqOnly, Some(Mode::Classical), Mode::PqOnly),
        (Mode::Classical, Some(Mode::Hybrid), Mode::Hybrid),
        (Mode::Classical, None, Mode::Classical),
    ] {
        let mut h = Harness::new(floor);
        assert_eq!(
            h.feed(Input::Connect { mode: asked }),
            [Action::Start(SessionId(1), used)],
            "{floor:?} {asked:?}"
        );
        h.feed(Input::SessionUp(SessionId(1)));
        h.feed(Input::SessionEnded(SessionId(1), lost("dead peer")));
        h.advance(BACKOFF_MAX);
        assert_eq!(h.feed(Input::Timeout), [Action::Start(SessionId(2), used)]);
        // Asking for classical while reconnecting goes no lower than the profile's mode.
        let weaker = Some(Mode::Classical);
        assert_eq!(
            h.feed(Input::Connect { mode: weaker }),
            [
                Action::Stop(SessionId(2)),
                Action::Start(SessionId(3), floor)
            ]
        );
    }
    assert!(at_least(Mode::PqOnly, Mode::Hybrid) && !at_least(Mode::Hybrid, Mode::PqOnly));
}

#[test]
fn refusals_stop_without_retrying_and_block_only_after_having_been_up() {
    let mut h = Harness::new(Mode::Hybrid);
    h.feed(Input::Connect { mode: None });
    let refused = SessionEnd::Refused("authentication of the peer failed".into());
    assert_eq!(h.feed(Input::SessionEnded(SessionId(1), refused)), []);
    let TunnelState::Error(failed) = h.sup.state().clone() else {
        panic!()
    };
    assert!(!failed.blocking && failed.reason.contains("authentication"));
    // No retry storm: no timer, and time passing starts nothing.
    assert_eq!(h.sup.poll_timeout(), None);
    h.advance(Duration::from_secs(3600));
    assert_eq!(h.feed(Input::Timeout), []);
    assert_eq!(h.feed(Input::NetworkChanged), []);
    assert_eq!(h.feed(Input::Disconnect), [Action::Teardown]);

    // A refusal on a reconnect (the gateway's ML-KEM was turned off): the routes stay and
    // block until the user decides.
    let mut h = Harness::connected(Mode::Hybrid);
    h.feed(Input::SessionEnded(SessionId(1), lost("dead peer")));
    h.advance(BACKOFF_MAX);
    h.feed(Input::Timeout);
    let refused = SessionEnd::Refused("the gateway refused ML-KEM".into());
    assert_eq!(h.feed(Input::SessionEnded(SessionId(2), refused)), []);
    let TunnelState::Error(failed) = h.sup.state().clone() else {
        panic!()
    };
    assert!(failed.blocking && failed.mode == Mode::Hybrid);
    assert_eq!(
        h.feed(Input::Connect { mode: None }),
        [Action::Start(SessionId(3), Mode::Hybrid)]
    );
    h.feed(Input::Disconnect);
    assert!(matches!(h.sup.state(), TunnelState::Disconnected(_)));
}

#[test]
fn no_proposal_chosen_is_final_at_first_but_retried_while_reconnecting() {
    let rejected = || SessionEnd::Rejected("NO_PROPOSAL_CHOSEN".into());
    let mut h = Harness::new(Mode::Hybrid);
    h.feed(Input::Connect { mode: None });
    h.feed(Input::SessionEnded(SessionId(1), rejected()));
    assert!(matches!(h.sup.state(), TunnelState::Error(f) if !f.blocking));
    // A gateway that took the proposal before and restarts answers so until its
    // configuration is loaded.
    let mut h = Harness::connected(Mode::Hybrid);
    h.feed(Input::SessionEnded(SessionId(1), lost("dead peer")));
    h.advance(BACKOFF_MAX);
    h.feed(Input::Timeout);
    assert_eq!(h.feed(Input::SessionEnded(SessionId(2), rejected())), []);
    assert_eq!(h.reconnecting().attempt, 2);
    assert_eq!(h.reconnecting().mode, Mode::Hybrid);
    let mut h = Harness::connected(Mode::Hybrid);
    h.feed(Input::SessionEnded(SessionId(1), rejected()));
    assert_eq!(h.reconnecting().attempt, 1);
}

#[test]
fn disconnect_stops_the_session_and_always_lifts_the_routes() {
    // Even while connecting: the session may have created its device just before.
    let mut h = Harness::new(Mode::Hybrid);
    h.feed(Input::Connect { mode: None });
    assert_eq!(
        h.feed(Input::Disconnect),
        [Action::Stop(SessionId(1)), Action::Teardown]
    );
    let mut h = Harness::connected(Mode::Hybrid);
    assert_eq!(
        h.feed(Input::Disconnect),
        [Action::Stop(SessionId(1)), Action::Teardown]
    );
    // The stopped session's end is not news.
    assert_eq!(
        h.feed(Input::SessionEnded(
            SessionId(1),
            SessionEnd::Lost("closed".into())
        )),
        []
    );
    assert!(matches!(h.sup.state(), TunnelState::Disconnected(_)));
    assert_eq!(h.feed(Input::Disconnect), [], "already disconnected");
    let mut h = Harness::connected(Mode::Hybrid);
    h.feed(Input::SessionEnded(SessionId(1), lost("dead peer")));
    assert_eq!(h.feed(Input::Disconnect), [Action::Teardown]);
}

#[test]
fn events_of_stopped_sessions_are_ignored() {
    let mut h = Harness::connected(Mode::Hybrid);
    assert_eq!(
        h.feed(Input::NetworkChanged),
        [
            Action::Stop(SessionId(1)),
            Action::Start(SessionId(2), Mode::Hybrid)
        ]
    );
    assert_eq!(h.reconnecting().reason, "the network changed");
    assert_eq!(
        h.feed(Input::SessionEnded(SessionId(1), lost("stopped"))),
        []
    );
    assert_eq!(h.feed(Input::SessionUp(SessionId(1))), []);
    assert_eq!(h.reconnecting().phase, Phase::Trying(SessionId(2)));
    h.feed(Input::SessionUp(SessionId(2)));
    assert!(matches!(h.sup.state(), TunnelState::Connected(c) if c.session == SessionId(2)));
}

#[test]
fn pq_only_switch_on_a_connected_tunnel_reconnects_at_once() {
    let mut h = Harness::connected(Mode::Hybrid);
    assert_eq!(
        h.feed(Input::Connect { mode: None }),
        [],
        "already connected"
    );
    assert_eq!(
        h.feed(Input::Connect {
            mode: Some(Mode::PqOnly)
        }),
        [
            Action::Stop(SessionId(1)),
            Action::Start(SessionId(2), Mode::PqOnly)
        ]
    );
    assert_eq!(h.reconnecting().reason, "switching to pq-only");
    h.feed(Input::SessionUp(SessionId(2)));
    let TunnelState::Connected(c) = h.sup.state() else {
        panic!()
    };
    assert_eq!(c.mode, Mode::PqOnly);
}

#[test]
fn suspend_stops_the_session_and_wake_reconnects_at_once() {
    let mut h = Harness::connected(Mode::Hybrid);
    assert_eq!(h.feed(Input::Suspend), [Action::Stop(SessionId(1))]);
    assert_eq!(h.reconnecting().phase, Phase::Suspended);
    assert_eq!(h.sup.poll_timeout(), None);
    h.advance(Duration::from_secs(8 * 3600));
    assert_eq!(h.feed(Input::Timeout), []);
    assert_eq!(h.feed(Input::NetworkChanged), [], "asleep");
    assert_eq!(
        h.feed(Input::Wake),
        [Action::Start(SessionId(2), Mode::Hybrid)]
    );
    assert_eq!(h.reconnecting().reason, "the machine woke up");
    // Suspended while waiting for a retry, too.
    h.feed(Input::SessionEnded(SessionId(2), lost("timeout")));
    assert_eq!(h.feed(Input::Suspend), []);
    assert_eq!(
        h.feed(Input::Wake),
        [Action::Start(SessionId(3), Mode::Hybrid)]
    );
    assert_eq!(h.feed(Input::Wake), [], "awake already");
}

/// Issue 15: the kill switch holds from the connect to the user's disconnect, through
/// reconnects and a refusal after the tunnel was up; a first connect refused for good lifts
/// it (nothing was ever up to protect).
#[test]
fn traffic_is_blocked_from_connect_to_disconnect() {
    let mut h = Harness::new(Mode::Hybrid);
    assert!(!h.sup.state().blocks_traffic());
    h.feed(Input::Connect { mode: None });
    assert!(h.sup.state().blocks_traffic(), "connecting");
    h.feed(Input::SessionEnded(SessionId(1), lost("timeout")));
    assert!(
        h.sup.state().blocks_traffic(),
        "reconnecting before the first up"
    );
    h.feed(Input::Disconnect);
    assert!(!h.sup.state().blocks_traffic());
    h.feed(Input::Connect { mode: None });
    h.feed(Input::SessionEnded(
        SessionId(2),
        SessionEnd::Refused("AUTHENTICATION_FAILED".into()),
    ));
    assert!(matches!(h.sup.state(), TunnelState::Error(_)));
    assert!(!h.sup.state().blocks_traffic(), "a first connect refused");

    let mut h = Harness::connected(Mode::Hybrid);
    assert!(h.sup.state().blocks_traffic(), "connected");
    h.feed(Input::SessionEnded(SessionId(1), lost("dead peer")));
    assert!(h.sup.state().blocks_traffic(), "reconnecting");
    h.advance(Duration::from_secs(2));
    h.feed(Input::Timeout);
    h.feed(Input::SessionEnded(
        SessionId(2),
        SessionEnd::Refused("AUTHENTICATION_FAILED".into()),
    ));
    assert!(matches!(h.sup.state(), TunnelState::Error(_)));
    assert!(h.sup.state().blocks_traffic(), "failed after being up");
    h.feed(Input::Disconnect);
    assert!(!h.sup.state().blocks_traffic(), "disconnected");
}

/// Reviewer (issue 15): a tunnel whose kill switch a crashed run left resumes as a tunnel
/// that was up: at once, and a refusal keeps the block until the user disconnects.
#[test]
fn a_resumed_tunnel_keeps_its_block_through_a_refusal() {
    let mut h = Harness::new(Mode::Hybrid);
    assert_eq!(
        h.feed(Input::Resume { mode: None }),
        [Action::Start(SessionId(1), Mode::Hybrid)]
    );
    assert_eq!(h.reconnecting().attempt, 1);
    assert!(h.sup.state().blocks_traffic());
    h.feed(Input::SessionEnded(
        SessionId(1),
        SessionEnd::Refused("AUTHENTICATION_FAILED".into()),
    ));
    assert!(
        matches!(h.sup.state(), TunnelState::Error(f) if f.blocking),
        "{:?}",
        h.sup.state()
    );
    h.feed(Input::Disconnect);
    assert!(!h.sup.state().blocks_traffic());

    // Anywhere else it is a connect: a connected tunnel in a stricter mode switches.
    let mut h = Harness::connected(Mode::Hybrid);
    assert_eq!(
        h.feed(Input::Resume {
            mode: Some(Mode::PqOnly)
        }),
        [
            Action::Stop(SessionId(1)),
            Action::Start(SessionId(2), Mode::PqOnly)
        ]
    );
}

/// Issue 15: a wake nobody announced (lid closed, process frozen) probes a connected tunnel
/// at once, and retries a waiting reconnect at once.
#[test]
fn an_unannounced_wake_probes_a_connected_tunnel_and_retries_a_waiting_one() {
    let mut h = Harness::connected(Mode::Hybrid);
    assert_eq!(h.feed(Input::Wake), [Action::Probe(SessionId(1))]);
    assert!(matches!(h.sup.state(), TunnelState::Connected(_)));
    h.feed(Input::SessionEnded(SessionId(1), lost("dead peer")));
    assert!(matches!(h.reconnecting().phase, Phase::Waiting { .. }));
    assert_eq!(
        h.feed(Input::Wake),
        [Action::Start(SessionId(2), Mode::Hybrid)]
    );
    assert_eq!(h.reconnecting().phase, Phase::Trying(SessionId(2)));
}

/// Reviewer (issue 15): a resume that arrives while connecting, or after a first connect
/// failed, still adopts the crashed run's block: its failure keeps blocking.
#[test]
fn a_resume_in_any_state_keeps_the_adopted_block_through_a_refusal() {
    let refused = || SessionEnd::Refused("AUTHENTICATION_FAILED".into());
    let mut h = Harness::new(Mode::Hybrid);
    h.feed(Input::Connect { mode: None });
    assert_eq!(
        h.feed(Input::Resume { mode: None }),
        [
            Action::Stop(SessionId(1)),
            Action::Start(SessionId(2), Mode::Hybrid)
        ]
    );
    h.feed(Input::SessionEnded(SessionId(2), refused()));
    assert!(matches!(h.sup.state(), TunnelState::Error(f) if f.blocking));

    let mut h = Harness::new(Mode::Hybrid);
    h.feed(Input::Connect { mode: None });
    h.feed(Input::SessionEnded(SessionId(1), refused()));
    assert!(!h.sup.state().blocks_traffic());
    h.feed(Input::Resume { mode: None });
    h.feed(Input::SessionEnded(SessionId(2), refused()));
    assert!(matches!(h.sup.state(), TunnelState::Error(f) if f.blocking));

    // Reconnecting before the first up: the resume marks it as a tunnel that was up.
    let mut h = Harness::new(Mode::Hybrid);
    h.feed(Input::Connect { mode: None });
    h.feed(Input::SessionEnded(SessionId(1), lost("timeout")));
    h.feed(Input::Resume { mode: None });
    h.feed(Input::SessionEnded(SessionId(2), refused()));
    assert!(matches!(h.sup.state(), TunnelState::Error(f) if f.blocking));
}
