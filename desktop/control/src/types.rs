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
    /// Hands the daemon the caller's own PSK for a profile with `user_credentials = true`;
    /// kept across reboots, used when this user connects the profile. Refused for a profile
    /// whose PSK is the administrator's.
    SetCredential {
        /// The profile's name.
        profile: String,
        /// The PSK.
        secret: Secret,
    },
    /// Forgets the caller's own PSK for a profile.
    DeleteCredential {
        /// The profile's name.
        profile: String,
    },
}

/// A secret in a request: wiped when dropped, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: String) -> Self {
        Self(text)
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
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

/// A key exchange method (the names are those of draft-ietf-ipsecme-ikev2-mlkem and the
/// IANA registry's usual short forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyExchange {
    /// Curve25519 (RFC 8031).
    #[serde(rename = "X25519")]
    X25519,
    /// Curve448 (RFC 8031).
    #[serde(rename = "X448")]
    X448,
    /// NIST P-256 (RFC 5903).
    #[serde(rename = "P-256")]
    P256,
    /// NIST P-384 (RFC 5903).
    #[serde(rename = "P-384")]
    P384,
    /// NIST P-521 (RFC 5903).
    #[serde(rename = "P-521")]
    P521,
    /// ML-KEM-512 (FIPS 203).
    #[serde(rename = "ML-KEM-512")]
    MlKem512,
    /// ML-KEM-768 (FIPS 203).
    #[serde(rename = "ML-KEM-768")]
    MlKem768,
    /// ML-KEM-1024 (FIPS 203).
    #[serde(rename = "ML-KEM-1024")]
    MlKem1024,
    /// One this client does not know (a newer daemon).
    #[serde(other)]
    Other,
}

impl KeyExchange {
    /// Post-quantum (a KEM of FIPS 203).
    pub fn is_post_quantum(self) -> bool {
        matches!(self, Self::MlKem512 | Self::MlKem768 | Self::MlKem1024)
    }

    /// The name on the wire, e.g. `ML-KEM-768`.
    pub fn name(self) -> &'static str {
        match self {
            Self::X25519 => "X25519",
            Self::X448 => "X448",
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
            Self::MlKem512 => "ML-KEM-512",
            Self::MlKem768 => "ML-KEM-768",
            Self::MlKem1024 => "ML-KEM-1024",
            Self::Other => "other",
        }
    }
}

/// An AEAD cipher of the IKE SA or the ESP SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cipher {
    /// AES-GCM with a 128-bit key and 16-octet ICV (RFC 4106, RFC 5282).
    #[serde(rename = "AES-GCM-128")]
    Aes128Gcm,
    /// AES-GCM with a 256-bit key and 16-octet ICV.
    #[serde(rename = "AES-GCM-256")]
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 7634).
    #[serde(rename = "ChaCha20-Poly1305")]
    ChaCha20Poly1305,
    /// One this client does not know.
    #[serde(other)]
    Other,
}

impl Cipher {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aes128Gcm => "AES-GCM-128",
            Self::Aes256Gcm => "AES-GCM-256",
            Self::ChaCha20Poly1305 => "ChaCha20-Poly1305",
            Self::Other => "other",
        }
    }
}

/// The IKE SA's pseudorandom function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Prf {
    /// HMAC-SHA2-256 (RFC 4868).
    #[serde(rename = "HMAC-SHA2-256")]
    HmacSha256,
    /// HMAC-SHA2-384.
    #[serde(rename = "HMAC-SHA2-384")]
    HmacSha384,
    /// HMAC-SHA2-512.
    #[serde(rename = "HMAC-SHA2-512")]
    HmacSha512,
    /// One this client does not know.
    #[serde(other)]
    Other,
}

impl Prf {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::HmacSha256 => "HMAC-SHA2-256",
            Self::HmacSha384 => "HMAC-SHA2-384",
            Self::HmacSha512 => "HMAC-SHA2-512",
            Self::Other => "other",
        }
    }
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
    /// IKE key exchanges, in order (`X25519`, `ML-KEM-768`); empty before the first session.
    pub key_exchanges: Vec<KeyExchange>,
    /// The IKE SA's cipher.
    #[serde(default)]
    pub ike_cipher: Option<Cipher>,
    /// The IKE SA's PRF.
    #[serde(default)]
    pub prf: Option<Prf>,
    /// The ESP cipher.
    #[serde(default)]
    pub esp_cipher: Option<Cipher>,
    /// Milliseconds from the first IKE_SA_INIT to the established Child SA.
    #[serde(default)]
    pub handshake_ms: Option<f64>,
    /// Child SA rekeys since the tunnel came up (each with the IKE SA's key exchanges).
    #[serde(default)]
    pub child_sa_rekeys: u64,
    /// IKE SA rekeys since the tunnel came up.
    #[serde(default)]
    pub ike_sa_rekeys: u64,
    /// Child SAs the gateway deleted and a new one replaced on the same IKE SA.
    #[serde(default)]
    pub child_sa_recreates: u64,
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
    /// The kill switch is up: nothing leaves outside the tunnel but its IKE/ESP (also while
    /// connecting, reconnecting, and failed after being up).
    #[serde(default)]
    pub kill_switch: bool,
}

/// What a subscription streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A tunnel's status changed (state, counters once a second while connected).
    Status(TunnelStatus),
    /// A tunnel entered another state; sent before the [`Event::Status`] that shows it.
    StateChanged {
        /// The profile.
        profile: String,
        /// The new state.
        state: State,
        /// Why (reconnecting, error), in words.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// New keys: an SA was rekeyed or re-created; sent before the [`Event::Status`] that
    /// counts it.
    Rekeyed {
        /// The profile.
        profile: String,
        /// Which SA.
        sa: RekeyedSa,
        /// How many of that kind since the tunnel came up.
        count: u64,
    },
}

/// Which SA got new keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RekeyedSa {
    /// The IKE SA (RFC 7296 §2.18).
    IkeSa,
    /// The Child SA (RFC 7296 §2.8).
    ChildSa,
    /// The gateway deleted the Child SA and a new one replaced it (RFC 7296 §1.3.1).
    ChildSaRecreated,
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
            (
                r#"{"cmd":"set_credential","profile":"work","secret":"correct horse battery staple"}"#,
                Request::SetCredential {
                    profile: "work".into(),
                    secret: Secret::new("correct horse battery staple".into()),
                },
            ),
            (
                r#"{"cmd":"delete_credential","profile":"work"}"#,
                Request::DeleteCredential {
                    profile: "work".into(),
                },
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
        let events = [
            (
                r#"{"event":"state_changed","profile":"work","state":"reconnecting","reason":"the gateway stopped answering (dead peer)"}"#,
                Event::StateChanged {
                    profile: "work".into(),
                    state: State::Reconnecting,
                    reason: Some("the gateway stopped answering (dead peer)".into()),
                },
            ),
            (
                r#"{"event":"rekeyed","profile":"work","sa":"child_sa","count":3}"#,
                Event::Rekeyed {
                    profile: "work".into(),
                    sa: RekeyedSa::ChildSa,
                    count: 3,
                },
            ),
        ];
        for (line, event) in events {
            assert_eq!(
                serde_json::from_str::<Event>(line).unwrap(),
                event,
                "{line}"
            );
            assert_eq!(serde_json::to_string(&event).unwrap(), line);
        }
    }

    /// Algorithms are enums with the names front ends show; one a newer daemon adds reads as
    /// `Other` instead of failing the whole status.
    #[test]
    fn algorithms_are_typed_and_tolerate_new_ones() {
        let status: TunnelStatus = serde_json::from_str(
            r#"{"profile":"work","state":"connected","mode":"hybrid","quantum_safe":true,
               "key_exchanges":["X25519","ML-KEM-768","FrodoKEM-976"],
               "ike_cipher":"AES-GCM-256","prf":"HMAC-SHA2-384","esp_cipher":"ChaCha20-Poly1305",
               "gateway":"192.0.2.1:4500","virtual_ips":[],"dns":[],"bytes_in":0,"bytes_out":0,
               "uptime_s":0,"attempt":0,"reconnects":0,"reason":null}"#,
        )
        .unwrap();
        assert_eq!(
            status.key_exchanges,
            [
                KeyExchange::X25519,
                KeyExchange::MlKem768,
                KeyExchange::Other
            ]
        );
        assert!(status.key_exchanges[1].is_post_quantum());
        assert!(!status.key_exchanges[0].is_post_quantum());
        assert_eq!(status.ike_cipher, Some(Cipher::Aes256Gcm));
        assert_eq!(status.prf, Some(Prf::HmacSha384));
        assert_eq!(status.esp_cipher, Some(Cipher::ChaCha20Poly1305));
        assert_eq!(status.handshake_ms, None);
        for k in [KeyExchange::P384, KeyExchange::MlKem1024] {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.name())
            );
        }
    }

    /// A credential never shows in `Debug` (a log line of a request).
    #[test]
    fn secrets_are_redacted() {
        let request = Request::SetCredential {
            profile: "work".into(),
            secret: Secret::new("correct horse battery staple".into()),
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("horse"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
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
