//! The messages.

use serde::{Deserialize, Serialize};

/// A request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Says which protocol version the client speaks; answered with [`Reply::Hello`].
    Hello {
        /// [`VERSION`](crate::VERSION).
        version: u32,
    },
    /// The profiles the daemon knows; answered with [`Reply::Profiles`].
    Profiles,
    /// One profile's tunnel (the only profile when `profile` is absent).
    Status {
        /// The profile's name (its file stem).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
    /// Connects a profile (or retries now). `pq_only` sets the profile's switch first.
    Connect {
        /// The profile's name.
        profile: String,
        /// Turn PQ-only on (or off) for this and later connects.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pq_only: Option<bool>,
    },
    /// Disconnects a profile (the only connected one when `profile` is absent).
    Disconnect {
        /// The profile's name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
    /// Sets a profile's PQ-only switch (persisted). On a connected tunnel it reconnects in the
    /// new mode at once. Refused for a profile whose mode is pq-only already (off would loosen
    /// it) and for a classical profile.
    SetPqOnly {
        /// The profile's name.
        profile: String,
        /// The switch.
        on: bool,
    },
    /// Streams [`Event`]s (of one profile, or all) on this connection until it closes.
    Subscribe {
        /// The profile's name; all when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The daemon's version and protocol.
    Hello {
        /// The protocol version the daemon speaks.
        version: u32,
        /// The daemon's software version.
        daemon: String,
    },
    /// Every profile, by name.
    Profiles(Vec<ProfileInfo>),
    /// One tunnel.
    Status(TunnelStatus),
    /// Done.
    Done,
    /// Subscribed: events follow.
    Subscribed,
    /// Refused or failed.
    Error(ErrorReply),
}

/// A stable error code (for programs) with a message (for people).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub code: ErrorCode,
    /// The same, for people.
    pub message: String,
}

/// What went wrong with a request. Codes are never renamed within a protocol version.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a request: not JSON, not UTF-8, an unknown command or field.
    BadRequest,
    /// The request line is longer than [`MAX_REQUEST_LINE`](crate::MAX_REQUEST_LINE).
    TooLarge,
    /// The daemon does not speak the client's protocol version.
    UnsupportedVersion,
    /// No profile of that name (or several, and none named).
    UnknownProfile,
    /// The caller may not do this (not root, not in group `pqvpn`).
    NotAuthorized,
    /// Not allowed for this profile: a weaker mode than the profile's, a broken profile.
    Refused,
    /// The client said nothing in time.
    Timeout,
    /// The daemon failed.
    Internal,
}

/// One profile, as `profiles` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileInfo {
    /// The name (file stem).
    pub name: String,
    /// The gateway, as written.
    pub gateway: String,
    /// The profile's mode.
    pub mode: Mode,
    /// The PQ-only switch.
    pub pq_only: bool,
    /// The tunnel's state.
    pub state: State,
}

/// A tunnel's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Nothing runs.
    #[default]
    Disconnected,
    /// The first handshake.
    Connecting,
    /// Traffic flows.
    Connected,
    /// Lost the tunnel; retrying, routes kept.
    Reconnecting,
    /// Stopped on a failure no retry fixes.
    Error,
}

/// The constructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// X25519 or P-384 plus ML-KEM.
    Hybrid,
    /// ML-KEM alone.
    PqOnly,
    /// Not quantum-safe.
    Classical,
}

/// One tunnel's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TunnelStatus {
    /// The profile.
    pub profile: String,
    /// The state.
    pub state: State,
    /// The mode of the current or last session.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Whether every key depends on ML-KEM.
    pub quantum_safe: bool,
    /// IKE key exchanges, in order (`X25519`, `ML-KEM-768`).
    pub key_exchanges: Vec<String>,
    /// The IKE SA's cipher.
    pub ike_cipher: String,
    /// The ESP cipher.
    pub esp_cipher: String,
    /// The gateway, `ip:port`.
    pub gateway: String,
    /// Virtual addresses with prefix.
    pub virtual_ips: Vec<String>,
    /// DNS servers from the gateway.
    pub dns: Vec<String>,
    /// Inner octets received.
    pub bytes_in: u64,
    /// Inner octets sent.
    pub bytes_out: u64,
    /// Seconds since the tunnel came up.
    pub uptime_s: u64,
    /// Reconnect attempt (0 unless reconnecting).
    pub attempt: u32,
    /// Times the tunnel came back after being lost.
    pub reconnects: u64,
    /// Why it is reconnecting, or failed.
    pub reason: Option<String>,
}

/// What a subscription streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A tunnel's status changed (state, counters once a second while connected).
    Status(TunnelStatus),
}

impl ErrorReply {
    /// An error reply.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines `docs/control-protocol.md` shows are what the types read and write.
    #[test]
    fn the_documented_lines_parse_and_print_as_documented() {
        let requests = [
            (
                r#"{"cmd":"hello","version":1}"#,
                Request::Hello { version: 1 },
            ),
            (r#"{"cmd":"profiles"}"#, Request::Profiles),
            (
                r#"{"cmd":"status","profile":"work"}"#,
                Request::Status {
                    profile: Some("work".into()),
                },
            ),
            (r#"{"cmd":"status"}"#, Request::Status { profile: None }),
            (
                r#"{"cmd":"connect","profile":"work","pq_only":true}"#,
                Request::Connect {
                    profile: "work".into(),
                    pq_only: Some(true),
                },
            ),
            (
                r#"{"cmd":"disconnect"}"#,
                Request::Disconnect { profile: None },
            ),
            (
                r#"{"cmd":"set_pq_only","profile":"work","on":false}"#,
                Request::SetPqOnly {
                    profile: "work".into(),
                    on: false,
                },
            ),
            (
                r#"{"cmd":"subscribe"}"#,
                Request::Subscribe { profile: None },
            ),
        ];
        for (line, request) in requests {
            assert_eq!(
                serde_json::from_str::<Request>(line).unwrap(),
                request,
                "{line}"
            );
            assert_eq!(serde_json::to_string(&request).unwrap(), line);
        }
        let replies = [
            (r#""done""#, Reply::Done),
            (r#""subscribed""#, Reply::Subscribed),
            (
                r#"{"hello":{"version":1,"daemon":"pqvpn 0.1.0"}}"#,
                Reply::Hello {
                    version: 1,
                    daemon: "pqvpn 0.1.0".into(),
                },
            ),
            (
                r#"{"error":{"code":"not_authorized","message":"no"}}"#,
                Reply::Error(ErrorReply::new(ErrorCode::NotAuthorized, "no")),
            ),
        ];
        for (line, reply) in replies {
            assert_eq!(
                serde_json::from_str::<Reply>(line).unwrap(),
                reply,
                "{line}"
            );
            assert_eq!(serde_json::to_string(&reply).unwrap(), line);
        }
        let info = ProfileInfo {
            name: "work".into(),
            gateway: "vpn.example.com".into(),
            mode: Mode::PqOnly,
            pq_only: true,
            state: State::Reconnecting,
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"name":"work","gateway":"vpn.example.com","mode":"pq-only","pq_only":true,"state":"reconnecting"}"#
        );
        let event = Event::Status(TunnelStatus {
            profile: "work".into(),
            ..TunnelStatus::default()
        });
        let line = serde_json::to_string(&event).unwrap();
        assert!(
            line.starts_with(r#"{"event":"status","profile":"work","state":"disconnected""#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), event);
    }

    #[test]
    fn unknown_commands_and_fields_are_not_requests() {
        for line in [
            r#"{"cmd":"reboot"}"#,
            r#"{"cmd":"status","profile":"work","sudo":true}"#,
            r#"{"cmd":"connect"}"#,
            r#"{"cmd":"hello","version":"1"}"#,
            "not json",
            "",
        ] {
            assert!(serde_json::from_str::<Request>(line).is_err(), "{line}");
        }
    }
}
