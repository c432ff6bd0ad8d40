//! Lag the way MySQL 8, Group Replication and Aurora tell it.
//!
//! Applier timestamps: a worker applying a transaction shows its original
//! commit time, so `now - that` is the lag, however many workers there are.
//! No worker applying is either idle (everything received is applied, and
//! the source has been heard from lately: lag 0) or stalled (transactions
//! received and none applying: the lag grows from the last measurement, and
//! is never more than the age of the newest transaction applied). The
//! timestamps come from the original source's clock: a skewed clock adds
//! its skew to the lag, one to one.

use std::time::Duration;

use tokio::time::Instant;

use super::{Assessor, Health, Lag, LagOrigin, MAX_PLAUSIBLE_LAG, on};
use crate::config::LagSource;
use crate::probe::{ApplierChannel, ApplierRead, AuroraStatus, ChannelStatus, GroupStatus};
use crate::probe::ServerStatus;

/// An idle receiver proves it is caught up only if it heard from its
/// source this recently: twice MySQL's default heartbeat period
/// (`replica_net_timeout` 60 s / 2).
pub const SOURCE_SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// The channel a Group Replication member applies the group's transactions on.
pub const GROUP_APPLIER: &str = "group_replication_applier";

/// An Aurora row not updated for this long describes an instance that is
/// gone or renamed (ProxySQL keeps rows updated in the last 180 s).
pub const AURORA_STALE_AFTER: Duration = Duration::from_secs(180);

/// Aurora lag beyond this is a glitch, not a reader (ProxySQL accepts
/// 0–600,000 ms; Aurora 1.23 has reported 18446744949882880).
pub const AURORA_MAX_LAG_MS: f64 = 600_000.0;

impl Assessor {
    /// Applier-timestamp lag of the worst considered channel; `None` when
    /// another source decides (`auto` on a server without the tables).
    pub(super) fn applier_lag(
        &mut self,
        considered: &[&ChannelStatus],
        status: &ServerStatus,
        now: Instant,
    ) -> Option<Result<Lag, String>> {
        if !self.lag.reads_applier() {
            return None;
        }
        let wanted = self.lag.source == LagSource::Applier;
        let channels = match &status.applier {
            Some(ApplierRead::Channels(channels)) => channels,
            Some(ApplierRead::Unavailable { code }) => {
                return wanted.then(|| Err(format!("applier timestamps unreadable (error {code})")));
            }
            None => {
                return wanted.then(|| Err("applier timestamps need MySQL 8.0.22 or later".into()));
            }
        };
        let mut worst: Option<Lag> = None;
        for channel in considered {
            let Some(applier) = channels.iter().find(|a| a.name == channel.name) else {
                let missing = format!("applier timestamps missing{}", on(&channel.name));
                return wanted.then_some(Err(missing));
            };
            let lag = match self.applier_channel_lag(applier, true, now) {
                Ok(lag) => lag,
                Err(reason) => return Some(Err(reason)),
            };
            if worst.as_ref().is_none_or(|worst| lag.value > worst.value) {
                worst = Some(lag);
            }
        }
        worst.map(Ok)
    }

    /// One channel's lag from its workers' timestamps. `check_source`: an
    /// idle channel counts as caught up only if it heard from its source
    /// lately (not asked of Group Replication's applier, whose source is
    /// the group itself).
    fn applier_channel_lag(
        &mut self,
        applier: &ApplierChannel,
        check_source: bool,
        now: Instant,
    ) -> Result<Lag, String> {
        let name = applier.name.as_str();
        let origin = LagOrigin::Applier;
        if let Some(applying) = applier.applying {
            if applying > MAX_PLAUSIBLE_LAG {
                let why = format!("implausible commit timestamp ({}s old)", applying.as_secs());
                return self.estimated(name, why, origin, now);
            }
            return Ok(self.measured(name, applying, origin, now));
        }
        let heard =
            !check_source || applier.source_silent.is_some_and(|s| s <= SOURCE_SILENCE_LIMIT);
        match applier.caught_up {
            Some(true) if applier.receiving && heard => {
                Ok(self.measured(name, Duration::ZERO, origin, now))
            }
            Some(false) => self.stalled(applier, now),
            _ => {
                let why = if !applier.receiving {
                    "receiver not running".to_owned()
                } else if let Some(silent) = applier.source_silent.filter(|_| !heard) {
                    format!("no word from the source for {}s", silent.as_secs())
                } else {
                    "received transactions unknown".to_owned()
                };
                self.estimated(name, why, origin, now)
            }
        }
    }

    /// Transactions received and none applying: the lag grows from the last
    /// measurement, bounded by the age of the newest transaction applied.
    fn stalled(&mut self, applier: &ApplierChannel, now: Instant) -> Result<Lag, String> {
        let why = "applier stalled: transactions received, none applying".to_owned();
        let bound = applier.last_applied;
        let estimate = self.estimated(&applier.name, why.clone(), LagOrigin::Applier, now);
        match (estimate, bound) {
            (Ok(mut lag), Some(bound)) => {
                lag.value = lag.value.min(bound);
                Ok(lag)
            }
            (Ok(lag), None) => Ok(lag),
            (Err(_), Some(bound)) => Ok(Lag {
                value: bound,
                channel: applier.name.clone(),
                estimated: Some(why),
                origin: LagOrigin::Applier,
                fallback: None,
            }),
            (Err(reason), None) => Err(reason),
        }
    }

    /// A Group Replication member: a secondary's lag is its applier
    /// channel's; the group's own rules are judged by the policy.
    pub(super) fn member_health(
        &mut self,
        group: &GroupStatus,
        status: &ServerStatus,
        now: Instant,
    ) -> Health {
        let applier = match &status.applier {
            Some(ApplierRead::Channels(channels)) => {
                channels.iter().find(|a| a.name == GROUP_APPLIER)
            }
            _ => None,
        };
        let lag = match applier {
            Some(applier) if !group.primary => self.applier_channel_lag(applier, false, now).ok(),
            _ => None,
        };
        Health::GroupMember {
            primary: group.primary,
            lag,
        }
    }

    /// Aurora: the writer has `innodb_read_only` off; a reader's lag is its
    /// own fresh row of `replica_host_status`.
    pub(super) fn aurora_health(
        &mut self,
        aurora: &AuroraStatus,
        read_only: bool,
        now: Instant,
    ) -> Health {
        if !read_only {
            return Health::Primary { read_only };
        }
        let broken = |reason: String| Health::Broken {
            reason,
            read_only,
        };
        let own = (aurora.rows.iter())
            .filter(|row| row.server_id == aurora.server_id)
            .filter(|row| row.updated.is_some_and(|age| age <= AURORA_STALE_AFTER))
            .min_by_key(|row| row.updated);
        let origin = LagOrigin::Aurora;
        let lag = match own.map(|row| row.lag_ms) {
            Some(Some(ms)) if (0.0..=AURORA_MAX_LAG_MS).contains(&ms) => {
                let lag = Duration::from_secs_f64(ms / 1000.0);
                Ok(self.measured("", lag, origin, now))
            }
            Some(Some(ms)) => {
                self.estimated("", format!("implausible aurora lag ({ms:.0} ms)"), origin, now)
            }
            Some(None) => self.estimated("", "aurora lag not reported".into(), origin, now),
            None => {
                let why = format!("no fresh replica_host_status row for {}", aurora.server_id);
                self.estimated("", why, origin, now)
            }
        };
        match lag {
            Ok(lag) => Health::Replica { lag, read_only },
            Err(reason) => broken(reason),
        }
    }
}
