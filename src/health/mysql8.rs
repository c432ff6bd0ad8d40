//! Lag the way MySQL 8, Group Replication and Aurora tell it.
//!
//! Applier timestamps: a worker applying a transaction shows its original
//! commit time, so `now - that` is the lag, however many workers there are.
//! No worker applying is either idle (everything received is applied, and
//! the source has been heard from lately, or never yet: lag 0) or stalled
//! (transactions received and none applying for [`STALL_AFTER`]: the lag
//! grows from the last measurement, and is never more than the age of the
//! newest transaction applied). A transaction between the relay log and a
//! worker, for a moment, is no stall. A channel delayed on purpose
//! (`SOURCE_DELAY`) holds its transactions back before any worker sees
//! them: its lag is replica status's, the delay included, as on MariaDB.
//! The timestamps come from the original source's clock: a skewed clock
//! adds its skew to the lag, one to one.

use std::time::Duration;

use tokio::time::Instant;

use super::{ApplierProblem, Assessor, Broken, Health, Lag, LagOrigin, MAX_PLAUSIBLE_LAG};
use crate::config::LagSource;
use crate::probe::ServerStatus;
use crate::probe::{ApplierChannel, ApplierRead, AuroraStatus, ChannelStatus, GroupStatus};

/// An idle receiver proves it is caught up only if it heard from its
/// source this recently: twice MySQL's default heartbeat period
/// (`replica_net_timeout` 60 s / 2).
pub const SOURCE_SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// Transactions received and none applying for this long is a stall: under
/// steady writes a transaction waits between the relay log and a worker
/// for a moment (seen on a healthy MySQL 9.7 replica, one poll at a time).
pub const STALL_AFTER: Duration = Duration::from_secs(1);

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
    ) -> Option<Result<Lag, Broken>> {
        if !self.lag.reads_applier() {
            return None;
        }
        let wanted = self.lag.source == LagSource::Applier;
        let channels = match &status.applier {
            Some(ApplierRead::Channels(channels)) => channels,
            Some(ApplierRead::Unavailable { code }) => {
                return wanted.then_some(Err(Broken::Applier(ApplierProblem::Unreadable(*code))));
            }
            None => {
                return wanted.then_some(Err(Broken::Applier(ApplierProblem::TooOld)));
            }
        };
        let mut worst: Option<Lag> = None;
        for channel in considered {
            if channel.sql_delay.is_some_and(|delay| delay > 0) {
                let lag = match self.channel_lag(channel, now) {
                    Ok(lag) => lag,
                    Err(reason) => return Some(Err(reason)),
                };
                if worst.as_ref().is_none_or(|worst| lag.value > worst.value) {
                    worst = Some(lag);
                }
                continue;
            }
            let Some(applier) = channels.iter().find(|a| a.name == channel.name) else {
                let missing = ApplierProblem::Missing {
                    channel: channel.name.clone(),
                };
                return wanted.then_some(Err(Broken::Applier(missing)));
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
    ) -> Result<Lag, Broken> {
        let name = applier.name.as_str();
        let origin = LagOrigin::Applier;
        let waiting = applier.applying.is_none() && applier.caught_up == Some(false);
        if !waiting {
            self.stalled_since.remove(name);
        }
        if let Some(applying) = applier.applying {
            if applying > MAX_PLAUSIBLE_LAG {
                let why = format!("implausible commit timestamp ({}s old)", applying.as_secs());
                return self.estimated(name, why, origin, now);
            }
            return Ok(self.measured(name, applying, origin, now));
        }
        // Heard lately, or never yet: a new replica has heard nothing, and
        // received nothing to apply.
        let heard = !check_source
            || applier
                .source_silent
                .is_none_or(|s| s <= SOURCE_SILENCE_LIMIT);
        match applier.caught_up {
            Some(true) if applier.receiving && heard => {
                Ok(self.measured(name, Duration::ZERO, origin, now))
            }
            Some(false) => {
                let since = *self.stalled_since.entry(name.to_owned()).or_insert(now);
                if now.saturating_duration_since(since) < STALL_AFTER {
                    return Ok(self.as_last_seen(applier));
                }
                self.stalled(applier, now)
            }
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

    /// Transactions received and none applying for a moment: the lag as last
    /// measured (else the age of the newest transaction applied), neither
    /// remembered as a measurement nor told as a guess.
    fn as_last_seen(&self, applier: &ApplierChannel) -> Lag {
        let last = self
            .last_measured
            .get(&(LagOrigin::Applier, applier.name.clone()));
        let value = last
            .map(|measured| measured.lag)
            .or(applier.last_applied)
            .unwrap_or(Duration::ZERO);
        Lag {
            value,
            channel: applier.name.clone(),
            estimated: None,
            origin: LagOrigin::Applier,
            fallback: None,
        }
    }

    /// Transactions received and none applying: the lag grows from the last
    /// measurement, bounded by the age of the newest transaction applied.
    fn stalled(&mut self, applier: &ApplierChannel, now: Instant) -> Result<Lag, Broken> {
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
        let broken = |reason: Broken| Health::Broken { reason, read_only };
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
            Some(Some(ms)) => self.estimated(
                "",
                format!("implausible aurora lag ({ms:.0} ms)"),
                origin,
                now,
            ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LagConfig;
    use crate::probe::{
        AuroraReplica, Dialect, GroupRead, MemberState, Observation, ServerStatus, ThreadState,
    };
    use std::time::SystemTime;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn replica_channel() -> ChannelStatus {
        ChannelStatus {
            io_thread: ThreadState::Yes,
            sql_thread: ThreadState::Yes,
            seconds_behind: Some(0),
            ..ChannelStatus::default()
        }
    }

    /// A receiver that heard from its source a second ago.
    fn receiver(name: &str) -> ApplierChannel {
        ApplierChannel {
            name: name.into(),
            receiving: true,
            caught_up: Some(true),
            source_silent: Some(secs(1.0)),
            applying: None,
            last_applied: Some(secs(30.0)),
        }
    }

    fn observed(at: Instant, status: ServerStatus) -> Observation {
        Observation {
            at,
            wall: SystemTime::now(),
            duration: Duration::from_millis(2),
            result: Ok(status),
            tls: Default::default(),
        }
    }

    fn mysql8(applier: Vec<ApplierChannel>) -> ServerStatus {
        ServerStatus {
            version: "8.4.3".into(),
            dialect: Dialect::MySql,
            read_only: true,
            channels: vec![replica_channel()],
            applier: Some(ApplierRead::Channels(applier)),
            ..ServerStatus::default()
        }
    }

    fn applier_source() -> Assessor {
        Assessor::new(&LagConfig {
            source: LagSource::Applier,
            ..LagConfig::default()
        })
    }

    fn lag_of(health: &Health) -> (f64, bool) {
        let lag = health.lag().expect("a lag");
        (lag.value.as_secs_f64(), lag.is_estimated())
    }

    #[test]
    fn a_worker_applying_an_old_transaction_is_the_lag() {
        let mut assessor = applier_source();
        let now = Instant::now();
        let channel = ApplierChannel {
            applying: Some(secs(7.25)),
            caught_up: Some(false),
            ..receiver("")
        };
        let health = assessor
            .assess(&observed(now, mysql8(vec![channel])), None)
            .health;
        assert_eq!(lag_of(&health), (7.25, false));
        assert_eq!(health.lag().unwrap().origin, LagOrigin::Applier);
    }

    #[test]
    fn idle_and_caught_up_is_zero_but_only_while_the_source_is_heard_from() {
        let mut assessor = applier_source();
        let now = Instant::now();
        let idle = assessor.assess(&observed(now, mysql8(vec![receiver("")])), None);
        assert_eq!(lag_of(&idle.health), (0.0, false));
        let silent = ApplierChannel {
            source_silent: Some(secs(300.0)),
            ..receiver("")
        };
        let later = now + secs(4.0);
        let health = assessor
            .assess(&observed(later, mysql8(vec![silent])), None)
            .health;
        assert_eq!(
            lag_of(&health),
            (4.0, true),
            "grows from the last measurement"
        );
        assert!(
            health
                .lag()
                .unwrap()
                .to_string()
                .contains("no word from the source for 300s"),
            "{health:?}"
        );
    }

    #[test]
    fn stalled_grows_from_the_last_measurement_up_to_the_newest_applied() {
        let mut assessor = applier_source();
        let now = Instant::now();
        assessor.assess(&observed(now, mysql8(vec![receiver("")])), None);
        let stalled = ApplierChannel {
            caught_up: Some(false),
            last_applied: Some(secs(12.0)),
            ..receiver("")
        };
        let at = |s: f64| now + secs(s);
        let mut assess = |s: f64, channel: &ApplierChannel| {
            let health = assessor.assess(&observed(at(s), mysql8(vec![channel.clone()])), None);
            (lag_of(&health.health), format!("{:?}", health.health))
        };
        // A transaction between the relay log and a worker, for a moment.
        let (lag, _) = assess(5.0, &stalled);
        assert_eq!(lag, (0.0, false), "a moment is no stall");
        assert_eq!(assess(5.5, &stalled).0, (0.0, false));
        // It lasts: a stall, growing from the last measurement.
        let (lag, said) = assess(5.0 + STALL_AFTER.as_secs_f64(), &stalled);
        assert_eq!(lag, (6.0, true));
        assert!(said.contains("applier stalled"), "{said}");
        assert_eq!(
            assess(40.0, &stalled).0,
            (12.0, true),
            "never beyond the newest applied"
        );
        // Applying again: the next wait is a new moment.
        assert_eq!(assess(41.0, &receiver("")).0, (0.0, false));
        assert_eq!(assess(42.0, &stalled).0, (0.0, false));

        let mut fresh = applier_source();
        let first = fresh.assess(&observed(now, mysql8(vec![stalled.clone()])), None);
        assert_eq!(
            lag_of(&first.health),
            (12.0, false),
            "no memory: the newest applied"
        );
        let later = fresh.assess(&observed(at(2.0), mysql8(vec![stalled])), None);
        assert_eq!(lag_of(&later.health), (12.0, true), "then the bound itself");
    }

    #[test]
    fn a_new_replica_that_has_heard_nothing_yet_is_caught_up() {
        // Both threads running, nothing replicated yet: every stamp unset.
        let new = ApplierChannel {
            source_silent: None,
            last_applied: None,
            ..receiver("")
        };
        let health = applier_source()
            .assess(&observed(Instant::now(), mysql8(vec![new])), None)
            .health;
        assert_eq!(lag_of(&health), (0.0, false));
    }

    #[test]
    fn a_channel_delayed_on_purpose_lags_by_replica_status_as_on_mariadb() {
        // SOURCE_DELAY=20: the coordinator holds what arrived; no worker
        // sees it, and Seconds_Behind_Source counts the delay.
        let mut status = mysql8(vec![ApplierChannel {
            caught_up: Some(false),
            ..receiver("")
        }]);
        status.channels[0].sql_delay = Some(20);
        status.channels[0].seconds_behind = Some(12);
        let health = applier_source()
            .assess(&observed(Instant::now(), status), None)
            .health;
        assert_eq!(lag_of(&health), (12.0, false));
        assert_eq!(
            health.lag().map(|lag| lag.origin),
            Some(LagOrigin::ReplicaStatus)
        );
    }

    #[test]
    fn the_worst_channel_decides_and_a_missing_table_is_down_only_when_asked_for() {
        let mut status = mysql8(vec![
            ApplierChannel {
                applying: Some(secs(2.0)),
                ..receiver("eu")
            },
            ApplierChannel {
                applying: Some(secs(9.0)),
                ..receiver("us")
            },
        ]);
        status.channels = ["eu", "us"]
            .map(|name| ChannelStatus {
                name: name.into(),
                ..replica_channel()
            })
            .to_vec();
        let now = Instant::now();
        let health = applier_source()
            .assess(&observed(now, status.clone()), None)
            .health;
        assert_eq!(health.lag().unwrap().channel, "us");
        assert_eq!(lag_of(&health), (9.0, false));

        status.applier = Some(ApplierRead::Unavailable { code: 1142 });
        let health = applier_source()
            .assess(&observed(now, status.clone()), None)
            .health;
        assert_eq!(
            health,
            Health::Broken {
                reason: Broken::Applier(ApplierProblem::Unreadable(1142)),
                read_only: true
            }
        );
        let mut auto = Assessor::new(&LagConfig::default());
        let health = auto.assess(&observed(now, status), None).health;
        assert_eq!(
            health.lag().unwrap().origin,
            LagOrigin::ReplicaStatus,
            "auto falls back"
        );
    }

    fn member(state: MemberState, primary: bool) -> GroupStatus {
        GroupStatus {
            state,
            primary,
            reachable: 3,
            members: 3,
            applier_queue: Some(0),
        }
    }

    #[test]
    fn a_group_member_is_not_an_async_replica() {
        let mut status = mysql8(vec![ApplierChannel {
            applying: Some(secs(3.0)),
            ..receiver(GROUP_APPLIER)
        }]);
        // SHOW REPLICA STATUS lists the idle recovery channel, both threads No.
        status.channels = vec![ChannelStatus {
            name: "group_replication_recovery".into(),
            io_thread: ThreadState::No,
            sql_thread: ThreadState::No,
            seconds_behind: None,
            ..ChannelStatus::default()
        }];
        status.group = Some(GroupRead::Member(member(MemberState::Online, false)));
        let assessment = Assessor::new(&LagConfig::default())
            .assess(&observed(Instant::now(), status.clone()), None);
        assert_eq!(lag_of(&assessment.health), (3.0, false));
        assert_eq!(assessment.health.role(), "group secondary");
        assert_eq!(assessment.group, Some(member(MemberState::Online, false)));

        status.group = Some(GroupRead::Unavailable { code: 1142 });
        let health = Assessor::new(&LagConfig::default())
            .assess(&observed(Instant::now(), status), None)
            .health;
        assert_eq!(
            health,
            Health::Broken {
                reason: Broken::GroupUnreadable(1142),
                read_only: true
            }
        );
    }

    fn aurora(rows: Vec<AuroraReplica>, read_only: bool) -> ServerStatus {
        ServerStatus {
            version: "8.0.32".into(),
            dialect: Dialect::MySql,
            read_only,
            aurora: Some(AuroraStatus {
                server_id: "reader-1".into(),
                rows,
                copy_of: None,
            }),
            ..ServerStatus::default()
        }
    }

    fn row(server_id: &str, lag_ms: f64, updated: f64) -> AuroraReplica {
        AuroraReplica {
            server_id: server_id.into(),
            session_id: "b1f3b0c4".into(),
            lag_ms: Some(lag_ms),
            updated: Some(secs(updated)),
        }
    }

    #[test]
    fn an_aurora_reader_lags_by_its_own_fresh_row() {
        let now = Instant::now();
        let mut assessor = Assessor::new(&LagConfig::default());
        let writer = aurora(vec![row("writer", 0.0, 0.1)], false);
        assert_eq!(
            assessor.assess(&observed(now, writer), None).health,
            Health::Primary { read_only: false }
        );
        let rows = vec![
            row("writer", 0.0, 0.1),
            row("reader-1", 90_000.0, 900.0), // a stale copy from a clone
            row("reader-1", 1_500.0, 0.5),
        ];
        let health = assessor
            .assess(&observed(now, aurora(rows, true)), None)
            .health;
        assert_eq!(lag_of(&health), (1.5, false));
        assert_eq!(health.lag().unwrap().origin, LagOrigin::Aurora);

        let absurd = vec![row("reader-1", 18_446_744_949_882_880.0, 0.5)];
        let later = now + secs(2.0);
        let health = assessor
            .assess(&observed(later, aurora(absurd, true)), None)
            .health;
        assert_eq!(
            lag_of(&health),
            (3.5, true),
            "unknown: estimated from 1.5 s"
        );
        assert!(
            format!("{health:?}").contains("implausible aurora lag"),
            "{health:?}"
        );

        let only_stale = vec![row("reader-1", 100.0, 900.0)];
        let health = Assessor::new(&LagConfig::default())
            .assess(&observed(now, aurora(only_stale, true)), None)
            .health;
        assert_eq!(
            health,
            Health::Broken {
                reason: Broken::LagUnknown {
                    channel: String::new(),
                    why: Some("no fresh replica_host_status row for reader-1".into()),
                },
                read_only: true
            }
        );
    }
}
