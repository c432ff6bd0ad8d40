//! `policy` and `pools`: how lag maps to a verdict, and how cautiously a
//! better verdict is believed.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ConfigError, Section, duration, show};

crate::labelled! {
    /// What kind of server a pool wants.
    #[derive(Default)]
    pub enum Role {
        /// Any server, judged by its lag (a primary has none).
        #[default]
        Any => "any",
        /// Only a writable primary: not a replica, `read_only` off.
        Primary => "primary",
        /// Only a replica, judged by its lag.
        Replica => "replica",
    }
}

/// How lag maps to a verdict, and how cautiously a better verdict is believed.
///
/// Written as [`PoolConfig`]'s keys: the top-level `policy` takes the
/// defaults for the keys it leaves out, a pool takes `policy`'s.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(from = "PoolConfig", into = "PoolConfig")]
pub struct Policy {
    /// Which servers may be up at all.
    pub role: Role,
    pub thresholds: Thresholds,
    /// The weight at `min_weight_at` and beyond, until `drain_at`.
    pub min_weight: Percent,
    /// Consecutive polls that must all qualify before a better verdict applies.
    pub recover_after: u32,
    /// Warm-up after recovery: the weight's ceiling rises from `min_weight`
    /// to 100% over this long after down, drain or maintenance ends, and
    /// while the server's uptime is shorter. `0s`: off.
    pub ramp_up: Duration,
    /// What a read-only server that replicates from nowhere gets: its data
    /// never changes. Galera nodes are judged by their own rules.
    pub standalone_read_only: StandaloneVerdict,
}

/// `policy.standalone_read_only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StandaloneVerdict {
    /// Serve the frozen copy at full weight (saying so).
    Up,
    /// No new connections.
    Drain,
    /// Out.
    #[default]
    Down,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            role: Role::Any,
            thresholds: Thresholds {
                full_weight_below: Duration::from_secs(2),
                min_weight_at: Duration::from_secs(30),
                drain_at: Duration::from_secs(60),
                down_at: Duration::from_secs(300),
            },
            min_weight: Percent(10),
            recover_after: 3,
            ramp_up: Duration::ZERO,
            standalone_read_only: StandaloneVerdict::Down,
        }
    }
}

/// The lag thresholds, in the order they must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Lag below this serves at full weight.
    pub full_weight_below: Duration,
    /// Weight falls linearly from 100% at `full_weight_below` to `min_weight` here.
    pub min_weight_at: Duration,
    /// Lag at or above this: drain (no new connections).
    pub drain_at: Duration,
    /// Lag at or above this: down.
    pub down_at: Duration,
}

impl Thresholds {
    /// The thresholds' keys, in their order.
    pub const KEYS: [&'static str; 4] =
        ["full_weight_below", "min_weight_at", "drain_at", "down_at"];

    fn values(self) -> [Duration; 4] {
        [
            self.full_weight_below,
            self.min_weight_at,
            self.drain_at,
            self.down_at,
        ]
    }

    fn from_values([full_weight_below, min_weight_at, drain_at, down_at]: [Duration; 4]) -> Self {
        Thresholds {
            full_weight_below,
            min_weight_at,
            drain_at,
            down_at,
        }
    }

    /// The ones `set`, and for each left out the one in `inherited`, moved
    /// to the nearest set one if it would break their order.
    fn fitted(set: [Option<Duration>; 4], inherited: Thresholds) -> Thresholds {
        let inherited = inherited.values();
        Thresholds::from_values(std::array::from_fn(|i| match set[i] {
            Some(value) => value,
            None => {
                let floor = set[..i].iter().flatten().max().copied();
                let ceiling = set[i + 1..].iter().flatten().min().copied();
                inherited[i]
                    .max(floor.unwrap_or(Duration::ZERO))
                    .min(ceiling.unwrap_or(Duration::MAX))
            }
        }))
    }
}

/// Policy keys as written, each optional: the top-level `policy`, and each
/// pool, which overrides the top-level `policy`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub full_weight_below: Option<Duration>,
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_weight_at: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_weight: Option<Percent>,
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub drain_at: Option<Duration>,
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub down_at: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_after: Option<u32>,
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ramp_up: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standalone_read_only: Option<StandaloneVerdict>,
    /// An agent port of this pool's own: every exchange on it is answered
    /// by this pool, with no name read (for backends without `agent-send`).
    #[serde(
        default,
        deserialize_with = "super::sections::some_listen_address",
        skip_serializing_if = "Option::is_none"
    )]
    pub listen: Option<std::net::SocketAddr>,
    /// With targets: lag alone may take a target of this pool out only
    /// while at least this many of the pool's targets stay up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_up: Option<usize>,
}

impl PoolConfig {
    /// The thresholds set here, in [`Thresholds::KEYS`] order.
    fn thresholds(&self) -> [Option<Duration>; 4] {
        [
            self.full_weight_below,
            self.min_weight_at,
            self.drain_at,
            self.down_at,
        ]
    }

    /// The thresholds this pool sets must be in order among themselves
    /// (inherited ones are moved to fit them; see [`PoolConfig::policy`]).
    pub(super) fn validate_order(&self, section: &str) -> Result<(), ConfigError> {
        let set: Vec<(&str, Duration)> = (Thresholds::KEYS.into_iter())
            .zip(self.thresholds())
            .filter_map(|(key, value)| Some((key, value?)))
            .collect();
        check_order(section, &set)
    }

    /// `base` with this pool's overrides applied.
    ///
    /// An inherited threshold that would break the order of the ones the
    /// pool sets is moved to the nearest of them: `main: {drain_at: 10s}`
    /// under the default `min_weight_at: 30s` gets `min_weight_at: 10s`.
    /// Only thresholds the pool sets itself can conflict.
    pub fn policy(&self, base: &Policy) -> Policy {
        Policy {
            thresholds: Thresholds::fitted(self.thresholds(), base.thresholds),
            ..self.over(base)
        }
    }

    /// `base` with the keys set here replaced, thresholds as they are.
    fn over(&self, base: &Policy) -> Policy {
        let set = self.thresholds();
        let inherited = base.thresholds.values();
        Policy {
            role: self.role.unwrap_or(base.role),
            thresholds: Thresholds::from_values(std::array::from_fn(|i| {
                set[i].unwrap_or(inherited[i])
            })),
            min_weight: self.min_weight.unwrap_or(base.min_weight),
            recover_after: self.recover_after.unwrap_or(base.recover_after),
            ramp_up: self.ramp_up.unwrap_or(base.ramp_up),
            standalone_read_only: (self.standalone_read_only).unwrap_or(base.standalone_read_only),
        }
    }
}

/// The top-level `policy`: the defaults for what it leaves out. Its
/// thresholds are not moved to fit: [`Policy::validate`] says what is out
/// of order.
impl From<PoolConfig> for Policy {
    fn from(keys: PoolConfig) -> Policy {
        keys.over(&Policy::default())
    }
}

/// Every key, for the effective configuration (`--check-config`).
impl From<Policy> for PoolConfig {
    fn from(policy: Policy) -> PoolConfig {
        let [full_weight_below, min_weight_at, drain_at, down_at] =
            policy.thresholds.values().map(Some);
        PoolConfig {
            role: Some(policy.role),
            full_weight_below,
            min_weight_at,
            min_weight: Some(policy.min_weight),
            drain_at,
            down_at,
            recover_after: Some(policy.recover_after),
            ramp_up: Some(policy.ramp_up),
            standalone_read_only: Some(policy.standalone_read_only),
            listen: None,
            keep_up: None,
        }
    }
}

/// Most polls a better verdict may have to wait for: the damper remembers
/// that many verdicts per pool.
pub const MAX_RECOVER_AFTER: u32 = 10_000;

/// Longest pool name; HAProxy sends it as the agent request line.
pub const MAX_POOL_NAME: usize = 64;

/// A whole percentage, written `10%` (a bare `10` is accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Percent(pub u32);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Percent;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole percentage like \"10%\"")
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Percent, E> {
                u32::try_from(n)
                    .map(Percent)
                    .map_err(|_| E::custom(format!("percentage {n} is out of range")))
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Percent, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("percentage {n} is negative")))
                    .and_then(|n| self.visit_u64(n))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Percent, E> {
                let digits = text.trim();
                let digits = digits.strip_suffix('%').unwrap_or(digits).trim();
                digits.parse().map(Percent).map_err(|_| {
                    E::custom(format!(
                        "invalid percentage {text:?}, expected a whole number like \"10%\""
                    ))
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Policy {
    /// Validates thresholds; `section` prefixes key names in errors.
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let ordered: Vec<(&str, Duration)> = (Thresholds::KEYS.into_iter())
            .zip(self.thresholds.values())
            .collect();
        check_order(section, &ordered)?;
        if self.thresholds.down_at.is_zero() {
            return Err(Section(section).invalid("down_at", "must be greater than 0"));
        }
        if !(1..=100).contains(&self.min_weight.0) {
            return Err(Section(section).invalid(
                "min_weight",
                format!("must be between 1% and 100%, got {}", self.min_weight),
            ));
        }
        if self.recover_after == 0 {
            return Err(Section(section).invalid(
                "recover_after",
                "must be at least 1 (1 means a better verdict applies at once)",
            ));
        }
        if self.recover_after > MAX_RECOVER_AFTER {
            return Err(Section(section).invalid(
                "recover_after",
                format!(
                    "must be at most {MAX_RECOVER_AFTER} polls, got {}",
                    self.recover_after
                ),
            ));
        }
        Ok(())
    }
}

/// Each threshold must be at least the one before it.
fn check_order(section: &str, thresholds: &[(&str, Duration)]) -> Result<(), ConfigError> {
    for pair in thresholds.windows(2) {
        let ((lower_key, lower), (key, value)) = (pair[0], pair[1]);
        if value < lower {
            return Err(Section(section).invalid(
                key,
                format!(
                    "must be at least {section}.{lower_key} ({}), got {}",
                    show(lower),
                    show(value)
                ),
            ));
        }
    }
    Ok(())
}
