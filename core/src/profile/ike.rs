//! `[ike]`: timers and fragments, the same keys in client and gateway profiles.

use core::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Doc;
use super::error::ProfileError;
use super::value::parse_duration;
use crate::ike::{DEFAULT_DPD_INTERVAL, DEFAULT_FRAGMENT_SIZE, Lifetime, RetransmitConfig};

/// Shortest rekey time a profile may set: shorter ones would keep the gateway busy rekeying.
const MIN_REKEY_TIME: Duration = Duration::from_secs(10);
/// Longest rekey time a profile may set (RFC 7296 §2.8 leaves it to policy; strongSwan's
/// defaults are hours).
const MAX_REKEY_TIME: Duration = Duration::from_secs(30 * 86_400);

/// A duration as written: seconds as an integer, or a string with a unit.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum DurationValue {
    Seconds(u64),
    Text(String),
}

/// `[ike]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct IkeFile {
    /// Client only: send a NAT-D hash that makes the gateway switch to UDP 4500.
    pub(super) force_udp_encapsulation: Option<Spanned<bool>>,
    fragment_size: Option<Spanned<i64>>,
    rekey_time: Option<Spanned<DurationValue>>,
    child_rekey_time: Option<Spanned<DurationValue>>,
    dpd_delay: Option<Spanned<DurationValue>>,
    retransmit_tries: Option<Spanned<i64>>,
    require_child_pfs: Option<bool>,
}

/// The `[ike]` settings of either role, checked, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct IkeSpec {
    /// Largest IP datagram for fragmented IKE messages (RFC 7383), 576..=9000.
    pub fragment_size: usize,
    /// Rekey the IKE SA after this long (`rekey_time`, default 4 h).
    pub ike_lifetime: Lifetime,
    /// Rekey each Child SA after this long (`child_rekey_time`, default 1 h).
    pub child_lifetime: Lifetime,
    /// Liveness check after this long without traffic from the peer (`dpd_delay`, 30 s;
    /// `None` when 0).
    pub dpd_interval: Option<Duration>,
    /// Transmissions of one request before the peer counts as gone (1 s, doubling; 6).
    pub retransmit: RetransmitConfig,
    /// Refuse Child SA rekeys that do not repeat every key exchange (default false).
    pub require_child_pfs: bool,
}

impl Default for IkeSpec {
    fn default() -> Self {
        Self {
            fragment_size: DEFAULT_FRAGMENT_SIZE,
            ike_lifetime: Lifetime::ike_default(),
            child_lifetime: Lifetime::child_default(),
            dpd_interval: Some(DEFAULT_DPD_INTERVAL),
            retransmit: RetransmitConfig::default(),
            require_child_pfs: false,
        }
    }
}

impl IkeFile {
    pub(super) fn check(&self, doc: &Doc<'_>) -> Result<IkeSpec, ProfileError> {
        let mut spec = IkeSpec::default();
        if let Some(size) = &self.fragment_size {
            spec.fragment_size = usize::try_from(*size.get_ref())
                .ok()
                .filter(|s| (576..=9000).contains(s))
                .ok_or_else(|| {
                    doc.invalid(
                        "ike.fragment_size",
                        size,
                        format!(
                            "ike.fragment_size = {}: expected 576..=9000",
                            size.get_ref()
                        ),
                    )
                })?;
        }
        if let Some(v) = &self.rekey_time {
            spec.ike_lifetime = Lifetime::new(rekey_time(doc, "ike.rekey_time", v)?);
        }
        if let Some(v) = &self.child_rekey_time {
            spec.child_lifetime = Lifetime::new(rekey_time(doc, "ike.child_rekey_time", v)?);
        }
        if let Some(v) = &self.dpd_delay {
            let d = duration(doc, "ike.dpd_delay", v)?;
            spec.dpd_interval = match d.as_secs() {
                0 => None,
                1..=3600 => Some(d),
                s => {
                    return Err(doc.invalid(
                        "ike.dpd_delay",
                        v,
                        format!("ike.dpd_delay = {s}s: expected 0 (off) or 1s..=1h"),
                    ));
                }
            };
        }
        if let Some(tries) = &self.retransmit_tries {
            spec.retransmit.attempts = u32::try_from(*tries.get_ref())
                .ok()
                .filter(|t| (1..=10).contains(t))
                .ok_or_else(|| {
                    doc.invalid(
                        "ike.retransmit_tries",
                        tries,
                        format!(
                            "ike.retransmit_tries = {}: expected 1..=10",
                            tries.get_ref()
                        ),
                    )
                })?;
        }
        if let Some(require) = self.require_child_pfs {
            spec.require_child_pfs = require;
        }
        Ok(spec)
    }
}

fn duration(
    doc: &Doc<'_>,
    key: &str,
    value: &Spanned<DurationValue>,
) -> Result<Duration, ProfileError> {
    match value.get_ref() {
        DurationValue::Seconds(s) => Ok(Duration::from_secs(*s)),
        DurationValue::Text(text) => parse_duration(text).ok_or_else(|| {
            doc.invalid(
                key,
                value,
                format!(
                    "{key} = \"{text}\": expected a duration like \"90s\", \"30m\", \"4h\" or \
                     \"1d\""
                ),
            )
        }),
    }
}

fn rekey_time(
    doc: &Doc<'_>,
    key: &str,
    value: &Spanned<DurationValue>,
) -> Result<Duration, ProfileError> {
    let d = duration(doc, key, value)?;
    if !(MIN_REKEY_TIME..=MAX_REKEY_TIME).contains(&d) {
        return Err(doc.invalid(
            key,
            value,
            format!("{key} = {}s: expected 10s..=30d", d.as_secs()),
        ));
    }
    Ok(d)
}

impl IkeSpec {
    /// Writes the settings into the knobs both roles' configs have.
    pub(super) fn apply(&self, knobs: IkeKnobs<'_>) {
        *knobs.fragment_size = self.fragment_size;
        *knobs.ike_lifetime = self.ike_lifetime;
        *knobs.child_lifetime = self.child_lifetime;
        *knobs.dpd_interval = self.dpd_interval;
        *knobs.retransmit = self.retransmit;
        *knobs.require_child_pfs = self.require_child_pfs;
    }
}

/// The `[ike]` settings both roles have, borrowed from an `InitiatorConfig` or a
/// `ResponderConfig`.
pub(super) struct IkeKnobs<'a> {
    pub(super) fragment_size: &'a mut usize,
    pub(super) ike_lifetime: &'a mut Lifetime,
    pub(super) child_lifetime: &'a mut Lifetime,
    pub(super) dpd_interval: &'a mut Option<Duration>,
    pub(super) retransmit: &'a mut RetransmitConfig,
    pub(super) require_child_pfs: &'a mut bool,
}
