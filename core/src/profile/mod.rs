//! Profiles, sans-IO: the client's `PROFILE.toml` and the gateway's `GATEWAY.toml` (the keys
//! are documented in the README) parsed and checked into typed specs. Unknown keys and bad
//! values are [`ProfileError`]s naming the key and line; no error message ever contains a PSK.
//!
//! Parsing reads nothing but the text: no file modes, keyring entries or DNS. A profile says
//! *where* its PSK is ([`PskSource`]) and *which* gateway it talks to ([`Endpoint`], a name
//! resolved when connecting). Front ends (CLI, daemon, tray, FFI) read the secret, check the
//! files' owners and modes, resolve the name, and build the IKE configuration with
//! [`ClientProfile::initiator_config`].

mod client;
mod error;
#[cfg(feature = "gateway")]
mod gateway;
mod ike;
mod psk;
#[cfg(test)]
#[cfg(feature = "gateway")]
mod tests;
mod value;

use core::ops::Range;

pub use client::{ClientProfile, KillSwitch, NetworkSpec};
pub use error::{ProfileError, ProfileErrorKind};
#[cfg(feature = "gateway")]
pub use gateway::{ClientPsk, GatewayProfile};
pub use ike::IkeSpec;
pub use psk::{MIN_PSK_CHARS, PskSource, PskSpec, check_psk_strength};
pub use value::{BadEndpoint, Endpoint, Host, IKE_PORT, Prefix, PrefixError, parse_id};

/// Largest profile text parsed, in octets.
pub const MAX_PROFILE_LEN: usize = 1 << 20;

/// The text being parsed, for placing errors on their lines.
pub(crate) struct Doc<'a> {
    text: &'a str,
}

impl<'a> Doc<'a> {
    /// Parses `text` as TOML into `T`, refusing oversized texts.
    fn parse<T: serde::de::DeserializeOwned>(text: &'a str) -> Result<(Self, T), ProfileError> {
        if text.len() > MAX_PROFILE_LEN {
            return Err(ProfileError::new(
                ProfileErrorKind::Invalid,
                "",
                format!("the profile is larger than {MAX_PROFILE_LEN} octets"),
            ));
        }
        let value = toml::from_str(text).map_err(|e| ProfileError::from_toml(text, &e))?;
        Ok((Self { text }, value))
    }

    /// An error of `kind` about `key`, on the line of `at`.
    fn error<T>(
        &self,
        kind: ProfileErrorKind,
        key: &str,
        at: &toml::Spanned<T>,
        message: String,
    ) -> ProfileError {
        self.error_at(kind, key, at.span(), message)
    }

    fn error_at(
        &self,
        kind: ProfileErrorKind,
        key: &str,
        span: Range<usize>,
        message: String,
    ) -> ProfileError {
        ProfileError::new(kind, key, message).at(self.text, span)
    }

    /// [`ProfileErrorKind::Invalid`] about `key`, on the line of `at`.
    fn invalid<T>(&self, key: &str, at: &toml::Spanned<T>, message: String) -> ProfileError {
        self.error(ProfileErrorKind::Invalid, key, at, message)
    }
}
