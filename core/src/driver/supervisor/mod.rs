//! The tunnel supervisor: owns one profile's tunnel lifecycle and keeps it up.

mod machine;
#[cfg(test)]
mod machine_tests;
mod run;

pub use machine::{
    Action, BACKOFF_MAX, BACKOFF_MIN, Connected, Connecting, Disconnected, Failed, Input, Phase,
    Reconnecting, SessionEnd, SessionId, Supervisor, TunnelState, at_least, backoff,
};
pub use run::{Command, Connector, Lifetime, run_supervisor, session_end};
