//! Profile errors: what is wrong, under which key, on which line. No message quotes a PSK.

use core::fmt;
use core::ops::Range;

/// What kind of mistake a [`ProfileError`] reports, for front ends that act on it (the control
/// protocol's error code, a form field to highlight).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileErrorKind {
    /// Not TOML, an unknown key, a missing key or a value of the wrong type.
    Syntax,
    /// A required key that only validation can ask for (e.g. `remote_id`).
    Missing,
    /// A value out of range or of the wrong shape.
    Invalid,
    /// Keys that contradict each other (two PSK sources, `block_lan` in a split tunnel).
    Conflict,
    /// A PSK shorter than [`MIN_PSK_CHARS`](super::MIN_PSK_CHARS) without `allow_weak_psk`.
    WeakPsk,
    /// A setting this version does not implement.
    Unsupported,
}

/// A profile that cannot be used: its kind, the key (`network.mtu`, `clients[1].id`) and the
/// 1-based line when known, and a message for people. `Display` is `line N: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    kind: ProfileErrorKind,
    key: Option<String>,
    line: Option<u32>,
    message: String,
}

impl ProfileError {
    /// An error about `key`, without a line.
    pub(crate) fn new(kind: ProfileErrorKind, key: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            key: (!key.is_empty()).then(|| key.to_owned()),
            line: None,
            message: message.into(),
        }
    }

    /// The same error, placed on the line of `span` in `text` (unless it already has one).
    pub(crate) fn at(mut self, text: &str, span: Range<usize>) -> Self {
        if self.line.is_none() {
            self.line = Some(line_of(text, span.start));
        }
        self
    }

    /// The TOML parser's error: line from its span, the reason, and the offending line unless
    /// it may hold a PSK.
    pub(crate) fn from_toml(text: &str, error: &toml::de::Error) -> Self {
        let line = error.span().map(|span| line_of(text, span.start));
        let source = line
            .and_then(|l| text.lines().nth(usize::try_from(l).ok()?.checked_sub(1)?))
            .map(str::trim);
        let reason = error.message().trim();
        let message = match source {
            // The excerpt, and the reason ("invalid type: integer `…`"), may quote the PSK.
            Some(source) if is_psk_line(source) => {
                "bad psk value (not shown: it may be the secret)".to_owned()
            }
            // A missing key is reported at its table, whose first line says nothing.
            Some(source) if !source.is_empty() && !reason.starts_with("missing field") => {
                format!("{reason} (in `{source}`)")
            }
            _ => reason.to_owned(),
        };
        Self {
            kind: ProfileErrorKind::Syntax,
            key: None,
            line,
            message,
        }
    }

    /// What kind of mistake this is.
    pub fn kind(&self) -> ProfileErrorKind {
        self.kind
    }

    /// The key, dotted (`ike.dpd_delay`), when the mistake is under one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The 1-based line, when known.
    pub fn line(&self) -> Option<u32> {
        self.line
    }

    /// The message, without the line.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl core::error::Error for ProfileError {}

/// The 1-based line holding octet `offset` of `text`.
fn line_of(text: &str, offset: usize) -> u32 {
    let before = text.get(..offset).unwrap_or(text);
    u32::try_from(before.matches('\n').count())
        .unwrap_or(u32::MAX - 1)
        .saturating_add(1)
}

/// Whether a profile line sets an inline PSK (`psk = …`, also in a `[[clients]]` table).
fn is_psk_line(line: &str) -> bool {
    line.trim_start()
        .strip_prefix("psk")
        .is_some_and(|rest| rest.trim_start().starts_with('=') || rest.trim_start().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        let text = "a = 1\nb = 2\n\nc = 3";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 6), 2);
        assert_eq!(line_of(text, text.find('c').unwrap()), 4);
        assert_eq!(line_of(text, 999), 4);
    }

    #[test]
    fn psk_lines_are_recognised() {
        assert!(is_psk_line("psk = 3"));
        assert!(is_psk_line("  psk=\"x\""));
        assert!(!is_psk_line("psk_file = \"/x\""));
        assert!(!is_psk_line("allow_weak_psk = true"));
    }
}
