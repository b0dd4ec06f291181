//! Where a PSK comes from, and how long it must be (security review finding 7).
//!
//! Parsing only says where the PSK is: reading a file (and checking its owner and mode) or a
//! keyring entry is the front end's work, which then calls [`PskSpec::check`].

use core::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use toml::Spanned;
use zeroize::Zeroizing;

use super::Doc;
use super::error::{ProfileError, ProfileErrorKind};
use crate::crypto::SecretBytes;

/// Fewest characters a PSK may have without `allow_weak_psk = true`. Whoever answers as the
/// gateway receives the client's AUTH and can test PSK guesses against it offline
/// ([RFC 7296 §2.15]), so a PSK must be long and random.
///
/// [RFC 7296 §2.15]: https://www.rfc-editor.org/rfc/rfc7296#section-2.15
pub const MIN_PSK_CHARS: usize = 20;

/// Where a PSK is. `Debug` never shows an inline PSK.
#[derive(Clone, PartialEq, Eq)]
pub enum PskSource {
    /// Written in the profile (`psk = "…"`): only acceptable in a profile nobody else can read,
    /// which the front end checks.
    Inline(SecretBytes),
    /// In a file of its own (`psk_file`), which must not be readable by group or others.
    File(PathBuf),
    /// In the OS keyring (`psk_keyring = true`) under this user name, `LOCAL_ID@ENDPOINT`
    /// (the service is pqvpn's).
    Keyring {
        /// The entry's user name.
        user: String,
    },
    /// Each user hands the daemon their own (`user_credentials = true`, client profiles
    /// only): the profile holds none. The daemon keeps each one under the keyring user
    /// `uid-UID/LOCAL_ID@ENDPOINT`.
    PerUser {
        /// The profile's keyring user, `LOCAL_ID@ENDPOINT`.
        user: String,
    },
}

impl fmt::Debug for PskSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Keyring { user } => f.debug_struct("Keyring").field("user", user).finish(),
            Self::PerUser { user } => f.debug_struct("PerUser").field("user", user).finish(),
        }
    }
}

/// A PSK's source and policy, under the table `key` (`auth`, `clients[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PskSpec {
    /// The table, for messages.
    pub key: String,
    /// Where the PSK is.
    pub source: PskSource,
    /// `allow_weak_psk`: accept one shorter than [`MIN_PSK_CHARS`].
    pub allow_weak: bool,
}

impl PskSpec {
    /// Refuses a PSK shorter than [`MIN_PSK_CHARS`] characters (octets when it is not UTF-8)
    /// unless the table allows weak ones, and an empty one always.
    pub fn check(&self, psk: &SecretBytes) -> Result<(), ProfileError> {
        check_psk_strength(&self.key, psk, self.allow_weak)
    }
}

/// See [`PskSpec::check`]; `key` names the table in the error.
pub fn check_psk_strength(
    key: &str,
    psk: &SecretBytes,
    allow_weak: bool,
) -> Result<(), ProfileError> {
    if psk.is_empty() {
        return Err(ProfileError::new(
            ProfileErrorKind::Invalid,
            key,
            format!("{key}: the PSK is empty"),
        ));
    }
    let chars = std::str::from_utf8(psk.expose()).map_or(psk.len(), |s| s.chars().count());
    if chars < MIN_PSK_CHARS && !allow_weak {
        return Err(ProfileError::new(
            ProfileErrorKind::WeakPsk,
            key,
            format!(
                "{key}: the PSK is shorter than {MIN_PSK_CHARS} characters; whoever answers as \
                 the gateway can guess a short PSK offline from one AUTH, so use a long random \
                 one (e.g. `openssl rand -base64 32`), or set {key}.allow_weak_psk = true to \
                 accept it"
            ),
        ));
    }
    Ok(())
}

/// A PSK written inline in a profile: wiped on drop, never printed.
pub(super) struct InlinePsk(Zeroizing<String>);

impl<'de> Deserialize<'de> for InlinePsk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| Self(Zeroizing::new(s)))
    }
}

impl fmt::Debug for InlinePsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InlinePsk(<redacted>)")
    }
}

/// `[auth]` as written, in client profiles and as a gateway's group PSK.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthFile {
    /// Only `psk` for now.
    method: Option<Spanned<String>>,
    psk: Option<Spanned<InlinePsk>>,
    psk_file: Option<PathBuf>,
    #[serde(default)]
    psk_keyring: bool,
    /// Each user gives the daemon their own PSK (client profiles).
    #[serde(default)]
    user_credentials: bool,
    #[serde(default)]
    allow_weak_psk: bool,
}

impl AuthFile {
    /// The PSK's spec; `at` is the `[auth]` table, `keyring_user` its keyring entry;
    /// `client`: `user_credentials` is allowed (a gateway's group PSK is its own).
    pub(super) fn check(
        &self,
        doc: &Doc<'_>,
        at: &Spanned<Self>,
        keyring_user: String,
        client: bool,
    ) -> Result<PskSpec, ProfileError> {
        if let Some(method) = self.method.as_ref().filter(|m| m.get_ref() != "psk") {
            return Err(doc.error(
                ProfileErrorKind::Unsupported,
                "auth.method",
                method,
                format!(
                    "auth.method = \"{}\" is not supported (only \"psk\" for now)",
                    method.get_ref()
                ),
            ));
        }
        if self.user_credentials && !client {
            return Err(doc.error(
                ProfileErrorKind::Unsupported,
                "auth.user_credentials",
                at,
                "auth.user_credentials is for client profiles; a gateway's PSKs are its own".into(),
            ));
        }
        let sources = usize::from(self.psk.is_some())
            + usize::from(self.psk_file.is_some())
            + usize::from(self.psk_keyring)
            + usize::from(self.user_credentials);
        if sources != 1 {
            let which = if client {
                "psk, psk_file, psk_keyring, user_credentials"
            } else {
                "psk, psk_file, psk_keyring"
            };
            return Err(doc.error(
                ProfileErrorKind::Conflict,
                "auth",
                at,
                format!("auth: give exactly one of {which}"),
            ));
        }
        let source = if self.psk_keyring {
            PskSource::Keyring { user: keyring_user }
        } else if self.user_credentials {
            PskSource::PerUser { user: keyring_user }
        } else {
            one_source(doc, "auth", self.psk.as_ref(), self.psk_file.as_ref())?
        };
        spec(doc, "auth", source, self.allow_weak_psk, self.psk.as_ref())
    }
}

/// The inline or file source of the table `key`; exactly one of them is given.
pub(super) fn one_source(
    doc: &Doc<'_>,
    key: &str,
    inline: Option<&Spanned<InlinePsk>>,
    file: Option<&PathBuf>,
) -> Result<PskSource, ProfileError> {
    match (inline, file) {
        (Some(psk), _) => {
            if psk.get_ref().0.is_empty() {
                return Err(doc.invalid(&format!("{key}.psk"), psk, format!("{key}.psk is empty")));
            }
            Ok(PskSource::Inline(SecretBytes::from_slice(
                psk.get_ref().0.as_bytes(),
            )))
        }
        (None, Some(path)) => Ok(PskSource::File(path.clone())),
        (None, None) => Err(ProfileError::new(
            ProfileErrorKind::Missing,
            key,
            format!("{key}: no PSK"),
        )),
    }
}

/// The spec of a PSK; an inline one is checked for strength at once.
pub(super) fn spec(
    doc: &Doc<'_>,
    key: &str,
    source: PskSource,
    allow_weak: bool,
    inline: Option<&Spanned<InlinePsk>>,
) -> Result<PskSpec, ProfileError> {
    let spec = PskSpec {
        key: key.to_owned(),
        source,
        allow_weak,
    };
    if let (PskSource::Inline(psk), Some(at)) = (&spec.source, inline) {
        spec.check(psk).map_err(|e| e.at(doc.text, at.span()))?;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_an_inline_psk() {
        let source = PskSource::Inline(SecretBytes::from_slice(b"hunter2-hunter2-hunter2"));
        let spec = PskSpec {
            key: "auth".into(),
            source,
            allow_weak: false,
        };
        let shown = format!("{spec:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("Inline(<redacted>)"), "{shown}");
    }

    #[test]
    fn strength_counts_characters_and_honours_allow_weak() {
        let short = SecretBytes::from_slice("é".repeat(MIN_PSK_CHARS - 1).as_bytes());
        let e = check_psk_strength("auth", &short, false).unwrap_err();
        assert_eq!(e.kind(), ProfileErrorKind::WeakPsk);
        assert!(e.to_string().contains("shorter than 20"), "{e}");
        check_psk_strength("auth", &short, true).unwrap();
        let long = SecretBytes::from_slice("é".repeat(MIN_PSK_CHARS).as_bytes());
        check_psk_strength("auth", &long, false).unwrap();
        let empty = SecretBytes::default();
        assert!(check_psk_strength("clients[0]", &empty, true).is_err());
    }
}
