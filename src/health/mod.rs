//! Reading an observation: is the server reachable, a replica or not, how far
//! behind, measured how. Pure apart from a small memory carried between polls
//! (the last measured lag per channel, the heartbeat's last movement); no I/O.
//!
//! Lag comes from the pt-heartbeat table when configured and trustworthy,
//! else from `Seconds_Behind_Master`. That column is NULL whenever a
//! replication thread is stopped or connecting; NULL is never read as 0:
//! remora estimates the lag as the last measured lag plus the time since that
//! measurement, so a replica whose IO thread dies fades out along the
//! policy's curve instead of serving ever staler data at full weight.
//!
//! A heartbeat only proves lag while its writer runs. A dead writer would make
//! every replica look lagged, so remora checks it: with `lag.primary`, by the
//! age of the primary's own row; without, by noticing the replica apply events
//! while the heartbeat row stands still. Either way it then falls back to
//! replica status and says so.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

mod mysql8;

use crate::config::{LagConfig, LagSource};
use crate::probe::{
    ChannelStatus, ErrorKind, GaleraStatus, GroupRead, GroupStatus, HeartbeatRead, Observation,
    PollError, ServerStatus, ThreadState,
};

/// Everything a poll says, interpreted.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub health: Health,
    /// What the heartbeat said, whether or not it decided the lag.
    pub heartbeat: Option<HeartbeatReport>,
    /// Set on a Galera node.
    pub galera: Option<GaleraStatus>,
    /// Set on a Group Replication member.
    pub group: Option<GroupStatus>,
    /// Set when `load` is configured.
    pub load: Option<Load>,
}

impl Assessment {
    /// Just a health, with nothing else read (no heartbeat, Galera, group or load).
    pub fn of(health: Health) -> Assessment {
        Assessment {
            health,
            heartbeat: None,
            galera: None,
            group: None,
            load: None,
        }
    }

    fn unreachable(err: &PollError) -> Assessment {
        Assessment::of(Health::Unreachable {
            kind: err.kind(),
            phrase: err.phrase(),
        })
    }
}

/// Replication health: role, lag, breakage.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// The poll failed: nothing is known about the server.
    Unreachable { kind: ErrorKind, phrase: String },
    /// Reachable and not a replica.
    Primary { read_only: bool },
    /// Reachable, read-only (`read_only`, `super_read_only` or
    /// `innodb_read_only`) and replicating from nowhere: its data never
    /// changes. Not said of a Galera node, which has rules of its own.
    ReadOnlyStandalone,
    /// A replica; `lag` is what decides its verdict.
    Replica { lag: Lag, read_only: bool },
    /// A replica that is down whatever its lag: an SQL thread stopped on an
    /// error, a channel that matters is missing, or lag unknown with nothing
    /// to estimate from.
    Broken { reason: Broken, read_only: bool },
    /// A Group Replication member: the group's rules (state, majority,
    /// queue) are in [`Assessment::group`]; `lag` is a secondary's
    /// applier-timestamp lag, when it could be read.
    GroupMember { primary: bool, lag: Option<Lag> },
}

impl Health {
    /// The lag remora reports and where it came from: a primary's is 0.
    pub fn reported_lag(&self) -> Option<(Duration, LagFrom, bool)> {
        match self {
            Health::Primary { .. } => Some((Duration::ZERO, LagFrom::Primary, false)),
            health => (health.lag()).map(|lag| (lag.value, lag.origin.into(), lag.is_estimated())),
        }
    }

    pub fn lag(&self) -> Option<&Lag> {
        match self {
            Health::Replica { lag, .. } => Some(lag),
            Health::GroupMember { lag, .. } => lag.as_ref(),
            _ => None,
        }
    }

    pub fn role(&self) -> &'static str {
        match self {
            Health::Unreachable { .. } => "unknown",
            Health::Primary { .. } => "primary",
            Health::ReadOnlyStandalone => "standalone",
            Health::Replica { .. } | Health::Broken { .. } => "replica",
            Health::GroupMember { primary: true, .. } => "group primary",
            Health::GroupMember { primary: false, .. } => "group secondary",
        }
    }
}

crate::labelled! {
    /// Where a lag figure came from.
    pub enum LagOrigin {
        Heartbeat => "heartbeat",
        ReplicaStatus => "replica_status",
        /// MySQL 8's original commit timestamps (performance_schema).
        Applier => "applier",
        /// Aurora's `replica_host_status`.
        Aurora => "aurora",
    }
}

crate::labelled! {
    /// Where the lag remora reports came from: a replica's [`LagOrigin`],
    /// or a primary's (lag 0). `/status`'s `lag.source`, the metrics'
    /// `remora_lag_source`, the trace's `source`.
    pub enum LagFrom {
        Heartbeat => "heartbeat",
        ReplicaStatus => "replica_status",
        Applier => "applier",
        Aurora => "aurora",
        /// Not a replica: nothing to lag behind.
        Primary => "primary",
    }
}

impl From<LagOrigin> for LagFrom {
    fn from(origin: LagOrigin) -> LagFrom {
        match origin {
            LagOrigin::Heartbeat => LagFrom::Heartbeat,
            LagOrigin::ReplicaStatus => LagFrom::ReplicaStatus,
            LagOrigin::Applier => LagFrom::Applier,
            LagOrigin::Aurora => LagFrom::Aurora,
        }
    }
}

impl LagFrom {
    /// A replica's origin; `None` for a primary.
    pub fn origin(self) -> Option<LagOrigin> {
        LagOrigin::ALL
            .iter()
            .copied()
            .find(|origin| LagFrom::from(*origin) == self)
    }
}

/// How far a replica is behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lag {
    pub value: Duration,
    /// The replication channel this lag belongs to (`""`: the default one,
    /// or the whole server when the heartbeat measured it).
    pub channel: String,
    /// `None` when measured this poll; otherwise why it could not be measured.
    pub estimated: Option<String>,
    pub origin: LagOrigin,
    /// Why replica status decided although a heartbeat was wanted.
    pub fallback: Option<String>,
}

impl Lag {
    pub fn is_estimated(&self) -> bool {
        self.estimated.is_some()
    }

    /// True when the lag is a plain measurement the operator need not hear about.
    pub fn is_plain(&self) -> bool {
        self.estimated.is_none() && self.fallback.is_none()
    }
}

/// `lag 14.2s`; `lag ~14.2s: io thread connecting (error 2003)` when
/// estimated; `lag 0.0s (replica status: heartbeat writer stale 12.0s)` after
/// a fallback.
impl fmt::Display for Lag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let channel = if self.channel.is_empty() {
            String::new()
        } else {
            format!(" on {}", self.channel)
        };
        let seconds = self.value.as_secs_f64();
        match &self.estimated {
            None => write!(f, "lag {seconds:.1}s{channel}")?,
            Some(why) => write!(f, "lag ~{seconds:.1}s{channel}: {why}")?,
        }
        if let Some(why) = &self.fallback {
            write!(f, " (replica status: {why})")?;
        }
        Ok(())
    }
}

/// The heartbeat as `/status` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatReport {
    /// Age of the newest row on the watched server, before any `SQL_Delay`
    /// subtraction; `None` when there is no row.
    pub age: Option<Duration>,
    pub ts: Option<String>,
    pub state: HeartbeatState,
    /// Age of the primary's own row, when `lag.primary` is configured and answered.
    pub primary_age: Option<Duration>,
}

impl HeartbeatReport {
    /// What a heartbeat read says, before it is known whether it decides.
    fn of(read: &HeartbeatRead, primary_age: Option<Duration>) -> HeartbeatReport {
        let (age, ts, state) = match read {
            HeartbeatRead::Row { ts, age } if *age > MAX_PLAUSIBLE_LAG => {
                (None, Some(ts.clone()), HeartbeatState::Implausible)
            }
            HeartbeatRead::Row { ts, age } => (Some(*age), Some(ts.clone()), HeartbeatState::Used),
            HeartbeatRead::Empty => (None, None, HeartbeatState::Unavailable(None)),
            HeartbeatRead::Unavailable { code, .. } => {
                (None, None, HeartbeatState::Unavailable(Some(*code)))
            }
        };
        HeartbeatReport {
            age,
            ts,
            state,
            primary_age,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatState {
    /// It decided the lag.
    Used,
    /// Read, but replica status decided: its writer is dead.
    WriterStale,
    /// Read on a server that is not a replica.
    NotReplica,
    /// The table could not be read (error code) or had no row (`None`).
    Unavailable(Option<u16>),
    /// The row's age is beyond [`MAX_PLAUSIBLE_LAG`]: a wrong clock or a
    /// garbage row, not a measurement.
    Implausible,
}

impl HeartbeatState {
    pub fn describe(&self) -> String {
        match self {
            HeartbeatState::Used => "used".into(),
            HeartbeatState::WriterStale => "writer stale".into(),
            HeartbeatState::NotReplica => "not a replica".into(),
            HeartbeatState::Unavailable(Some(code)) => format!("unavailable: error {code}"),
            HeartbeatState::Unavailable(None) => "unavailable: no row".into(),
            HeartbeatState::Implausible => "implausible age".into(),
        }
    }
}

/// What the heartbeat says about the lag.
#[derive(Debug)]
enum HeartbeatLag {
    /// Its row's age is the lag.
    Decides(Lag),
    /// Its writer is dead: replica status decides, saying why.
    WriterStale(String),
    /// `lag.source: heartbeat` and no usable row: broken, saying why
    /// (`None`: the heartbeat was not read).
    Missing(Option<HeartbeatState>),
    /// Not asked for, or (`auto`) not there: replica status decides.
    NotUsed,
}

/// Why a replica is down whatever its lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// An SQL thread stopped on an error (`channel` empty: the default one).
    SqlThreadError { errno: u32, channel: String },
    /// An SQL thread stopped without an error (`STOP REPLICA SQL_THREAD`):
    /// nothing is applied, whatever the lag was.
    SqlThreadStopped { channel: String },
    /// A channel `lag.channels` names is not there.
    ChannelMissing(String),
    /// Replica status lists no channel to measure.
    NoChannel,
    /// No lag could be measured, and none was measured before to estimate
    /// from; `why` is `None` when a trace did not record it.
    LagUnknown {
        channel: String,
        why: Option<String>,
    },
    /// `lag.source: heartbeat` and no usable row (`None`: not read).
    Heartbeat(Option<HeartbeatState>),
    /// `lag.source: applier` and the timestamps could not be read.
    Applier(ApplierProblem),
    /// Group Replication's tables refused us (the error code) on a server
    /// with its channels.
    GroupUnreadable(u16),
    /// Replica status could not say either, after the heartbeat writer stopped.
    WriterStale { then: Box<Broken>, why: String },
}

/// Why MySQL 8's applier timestamps could not give a lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplierProblem {
    /// performance_schema refused (the error code).
    Unreadable(u16),
    /// A server older than MySQL 8.0.22 has no such timestamps.
    TooOld,
    /// A channel has no row of its own.
    Missing { channel: String },
}

impl Broken {
    /// The same kind of breakage, figures aside: another errno or channel is
    /// not news, another cause is.
    pub fn same_kind(&self, other: &Broken) -> bool {
        use std::mem::discriminant;
        match (self, other) {
            (Broken::WriterStale { then: a, .. }, Broken::WriterStale { then: b, .. }) => {
                a.same_kind(b)
            }
            (Broken::Applier(a), Broken::Applier(b)) => discriminant(a) == discriminant(b),
            (a, b) => discriminant(a) == discriminant(b),
        }
    }
}

/// `sql thread error 1062 on b`, `lag unknown: io thread stopped`, …
impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::SqlThreadError { errno, channel } => {
                write!(f, "sql thread error {errno}{}", on(channel))
            }
            Broken::SqlThreadStopped { channel } => {
                write!(f, "sql thread stopped{}", on(channel))
            }
            Broken::ChannelMissing(name) => write!(f, "channel {name} missing"),
            Broken::NoChannel => f.write_str("no replication channel"),
            Broken::LagUnknown { channel, why } => {
                write!(f, "lag unknown{}", on(channel))?;
                match why {
                    Some(why) => write!(f, ": {why}"),
                    None => Ok(()),
                }
            }
            Broken::Heartbeat(None) => f.write_str("heartbeat not read"),
            Broken::Heartbeat(Some(state)) => write!(f, "heartbeat {}", state.describe()),
            Broken::Applier(ApplierProblem::Unreadable(code)) => {
                write!(f, "applier timestamps unreadable (error {code})")
            }
            Broken::Applier(ApplierProblem::TooOld) => {
                f.write_str("applier timestamps need MySQL 8.0.22 or later")
            }
            Broken::Applier(ApplierProblem::Missing { channel }) => {
                write!(f, "applier timestamps missing{}", on(channel))
            }
            Broken::GroupUnreadable(code) => {
                write!(f, "group replication status unreadable (error {code})")
            }
            Broken::WriterStale { then, why } => write!(f, "{then}; {why}"),
        }
    }
}

/// A considered channel whose SQL thread stopped on an error.
fn sql_thread_error(considered: &[&ChannelStatus]) -> Option<Broken> {
    considered.iter().find_map(|channel| {
        let err = channel.sql_error.as_ref()?;
        (channel.sql_thread != ThreadState::Yes).then(|| Broken::SqlThreadError {
            errno: err.errno,
            channel: channel.name.clone(),
        })
    })
}

/// An SQL thread stopped without an error for this long is down, whatever
/// the lag says, the same on MySQL and MariaDB. Changing the intended
/// delay stops it for a moment (`STOP SLAVE; CHANGE MASTER TO
/// MASTER_DELAY …; START SLAVE`): that moment is not.
pub const STOPPED_AFTER: Duration = Duration::from_secs(1);

/// Load counters with the limit they are measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Load {
    pub threads_running: u64,
    pub threads_connected: u64,
    pub max_connections: Option<u64>,
}

/// The last lag measured on a channel, and when.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Measured {
    lag: Duration,
    at: Instant,
}

/// Watches the heartbeat row and the replication positions move.
#[derive(Debug, Default)]
struct HeartbeatTracker {
    ts: Option<String>,
    /// When `ts` was first seen with its current value.
    ts_since: Option<Instant>,
    positions: Vec<(String, String, u64)>,
    /// When the replication positions last moved.
    moved_at: Option<Instant>,
}

impl HeartbeatTracker {
    fn observe(&mut self, ts: Option<&str>, positions: Vec<(String, String, u64)>, now: Instant) {
        if ts != self.ts.as_deref() {
            self.ts = ts.map(str::to_owned);
            self.ts_since = Some(now);
        }
        if positions != self.positions {
            if !self.positions.is_empty() {
                self.moved_at = Some(now);
            }
            self.positions = positions;
        }
    }

    /// How long the heartbeat row has stood still while replication applied
    /// other events, if that is at least `limit`: its writer is dead.
    fn writer_silent(&self, now: Instant, limit: Duration) -> Option<Duration> {
        let since = self.ts_since?;
        let still = now.saturating_duration_since(since);
        (still >= limit && self.moved_at.is_some_and(|moved| moved > since)).then_some(still)
    }
}

/// Lag beyond this is no measurement but a glitch (MySQL has reported
/// 18446744073709551615): it is treated as unknown, and the reason says so.
pub const MAX_PLAUSIBLE_LAG: Duration = Duration::from_secs(10 * 365 * 86400);

/// Turns observations into [`Assessment`]s, remembering what it needs.
#[derive(Debug)]
pub struct Assessor {
    lag: LagConfig,
    /// By source and channel: each source remembers its own measurements.
    last_measured: HashMap<(LagOrigin, String), Measured>,
    heartbeat: HeartbeatTracker,
    /// By channel: since when its applier has had transactions received
    /// and none applying (a stall, once it lasts).
    stalled_since: HashMap<String, Instant>,
    /// By channel: since when its SQL thread has been stopped.
    stopped_since: HashMap<String, Instant>,
}

impl Assessor {
    pub fn new(lag: &LagConfig) -> Assessor {
        Assessor {
            lag: lag.clone(),
            last_measured: HashMap::new(),
            heartbeat: HeartbeatTracker::default(),
            stalled_since: HashMap::new(),
            stopped_since: HashMap::new(),
        }
    }

    /// `primary` is the primary's own heartbeat row, when `lag.primary` is
    /// configured.
    pub fn assess(
        &mut self,
        observation: &Observation,
        primary: Option<&Result<HeartbeatRead, PollError>>,
    ) -> Assessment {
        let status = match &observation.result {
            Err(err) => return Assessment::unreachable(err),
            Ok(status) => status,
        };
        let now = observation.at;
        let read_only = status.read_only;
        let mut assessment = Assessment {
            health: Health::Primary { read_only },
            heartbeat: None,
            galera: status.galera.clone(),
            group: None,
            load: status.load.map(|load| Load {
                threads_running: load.threads_running,
                threads_connected: load.threads_connected,
                max_connections: status.max_connections,
            }),
        };
        let primary_age = match primary {
            Some(Ok(HeartbeatRead::Row { age, .. })) => Some(*age),
            _ => None,
        };
        let mut report =
            (status.heartbeat.as_ref()).map(|read| HeartbeatReport::of(read, primary_age));

        if let Some(health) = self.topology_health(status, now) {
            assessment.health = health;
            assessment.heartbeat = report;
            if let Some(GroupRead::Member(group)) = &status.group {
                assessment.group = Some(group.clone());
            }
            return assessment;
        }
        if async_channels(status).next().is_none() {
            self.last_measured.clear();
            self.heartbeat = HeartbeatTracker::default();
            if let Some(report) = report.as_mut()
                && report.age.is_some()
            {
                report.state = HeartbeatState::NotReplica;
            }
            assessment.heartbeat = report;
            if read_only && assessment.galera.is_none() {
                assessment.health = Health::ReadOnlyStandalone;
            }
            return assessment;
        }
        // A channel that vanished (RESET SLAVE ALL) must not leave an old
        // measurement to be reused if a channel of that name comes back later.
        self.last_measured
            .retain(|(_, name), _| async_channels(status).any(|c| &c.name == name));

        let (health, report) = self.replica_health(status, now, report);
        assessment.health = health;
        assessment.heartbeat = report;
        assessment
    }

    /// Aurora instances and Group Replication members are judged by their
    /// own rules, never as async replicas or frozen copies; `None` for any
    /// other server.
    fn topology_health(&mut self, status: &ServerStatus, now: Instant) -> Option<Health> {
        let read_only = status.read_only;
        if let Some(aurora) = &status.aurora {
            return Some(self.aurora_health(aurora, read_only, now));
        }
        match &status.group {
            Some(GroupRead::Member(group)) => Some(self.member_health(group, status, now)),
            Some(GroupRead::Unavailable { code })
                if status.channels.iter().any(is_group_channel) =>
            {
                Some(Health::Broken {
                    reason: Broken::GroupUnreadable(*code),
                    read_only,
                })
            }
            _ => None,
        }
    }

    /// A replica's health: broken replication first, then the heartbeat's
    /// lag when it decides, else the worst replica-status lag.
    fn replica_health(
        &mut self,
        status: &ServerStatus,
        now: Instant,
        mut report: Option<HeartbeatReport>,
    ) -> (Health, Option<HeartbeatReport>) {
        let read_only = status.read_only;
        let broken = |reason: Broken| Health::Broken { reason, read_only };
        let considered = match self.channels_considered(status) {
            Ok(considered) => considered,
            Err(reason) => return (broken(reason), report),
        };
        if let Some(reason) = sql_thread_error(&considered) {
            return (broken(reason), report);
        }
        if let Some(reason) = self.sql_thread_stopped(&considered, now) {
            return (broken(reason), report);
        }
        // Always computed, so the memory behind estimates stays current.
        let by_status = self.worst_status_lag(&considered, now);
        self.watch_heartbeat(&considered, report.as_ref(), now);
        let health = match self.heartbeat_lag(&considered, &mut report, now) {
            HeartbeatLag::Decides(lag) => Health::Replica { lag, read_only },
            HeartbeatLag::Missing(state) => broken(Broken::Heartbeat(state)),
            HeartbeatLag::WriterStale(why) => match by_status {
                Ok(mut lag) => {
                    lag.fallback = Some(why);
                    Health::Replica { lag, read_only }
                }
                Err(reason) => broken(Broken::WriterStale {
                    then: Box::new(reason),
                    why,
                }),
            },
            HeartbeatLag::NotUsed => match self.applier_lag(&considered, status, now) {
                Some(Ok(lag)) => Health::Replica { lag, read_only },
                Some(Err(reason)) => broken(reason),
                None => match by_status {
                    Ok(lag) => Health::Replica { lag, read_only },
                    Err(reason) => broken(reason),
                },
            },
        };
        (health, report)
    }

    /// A considered channel whose SQL thread has been stopped (without an
    /// error) for [`STOPPED_AFTER`]; until then its lag speaks.
    fn sql_thread_stopped(
        &mut self,
        considered: &[&ChannelStatus],
        now: Instant,
    ) -> Option<Broken> {
        let stopped = |channel: &&&ChannelStatus| channel.sql_thread == ThreadState::No;
        self.stopped_since
            .retain(|name, _| considered.iter().filter(stopped).any(|c| &c.name == name));
        let mut longest: Option<(&str, Duration)> = None;
        for channel in considered.iter().filter(stopped) {
            let since = *self
                .stopped_since
                .entry(channel.name.clone())
                .or_insert(now);
            let stopped_for = now.saturating_duration_since(since);
            if longest.is_none_or(|(_, longest)| stopped_for > longest) {
                longest = Some((&channel.name, stopped_for));
            }
        }
        let (name, stopped_for) = longest?;
        (stopped_for >= STOPPED_AFTER).then(|| Broken::SqlThreadStopped {
            channel: name.to_owned(),
        })
    }

    /// The channels that matter: all, or the ones `lag.channels` names
    /// (`Err` names one that is missing).
    fn channels_considered<'s>(
        &self,
        status: &'s ServerStatus,
    ) -> Result<Vec<&'s ChannelStatus>, Broken> {
        if self.lag.channels.is_empty() {
            return Ok(async_channels(status).collect());
        }
        (self.lag.channels.iter())
            .map(|name| {
                async_channels(status)
                    .find(|c| &c.name == name)
                    .ok_or_else(|| Broken::ChannelMissing(name.clone()))
            })
            .collect()
    }

    /// The largest replica-status lag among `considered`; `Err` says why
    /// replication is broken (the first channel that is).
    fn worst_status_lag(
        &mut self,
        considered: &[&ChannelStatus],
        now: Instant,
    ) -> Result<Lag, Broken> {
        let mut worst: Option<Lag> = None;
        for channel in considered {
            let lag = self.channel_lag(channel, now)?;
            if worst.as_ref().is_none_or(|worst| lag.value > worst.value) {
                worst = Some(lag);
            }
        }
        worst.ok_or(Broken::NoChannel)
    }

    /// Feeds the heartbeat row and the applier positions to the tracker
    /// that notices a dead writer.
    fn watch_heartbeat(
        &mut self,
        considered: &[&ChannelStatus],
        report: Option<&HeartbeatReport>,
        now: Instant,
    ) {
        let positions = considered
            .iter()
            .filter_map(|c| {
                let (file, pos) = c.exec_position.clone()?;
                Some((c.name.clone(), file, pos))
            })
            .collect();
        let ts = report.and_then(|r| r.ts.as_deref());
        self.heartbeat.observe(ts, positions, now);
    }

    /// What the heartbeat says about the lag under `lag.source`.
    fn heartbeat_lag(
        &self,
        considered: &[&ChannelStatus],
        report: &mut Option<HeartbeatReport>,
        now: Instant,
    ) -> HeartbeatLag {
        if !self.lag.reads_heartbeat() {
            return HeartbeatLag::NotUsed;
        }
        let Some(age) = report.as_ref().and_then(|r| r.age) else {
            if self.lag.source == LagSource::Heartbeat {
                return HeartbeatLag::Missing(report.as_ref().map(|r| r.state.clone()));
            }
            // `auto` with no usable table: replica status decides.
            return HeartbeatLag::NotUsed;
        };
        let primary_age = report.as_ref().and_then(|r| r.primary_age);
        if let Some(stale) = self.writer_stale(now, primary_age) {
            if let Some(report) = report.as_mut() {
                report.state = HeartbeatState::WriterStale;
            }
            return HeartbeatLag::WriterStale(format!(
                "heartbeat writer stale {:.1}s",
                stale.as_secs_f64()
            ));
        }
        let delay = self.delay_of(considered.iter().copied());
        HeartbeatLag::Decides(Lag {
            value: age.saturating_sub(delay),
            channel: String::new(),
            estimated: None,
            origin: LagOrigin::Heartbeat,
            fallback: None,
        })
    }

    /// Dead heartbeat writer: by the primary's own row when it answered,
    /// else by the heartbeat standing still while replication moves.
    fn writer_stale(&self, now: Instant, primary_age: Option<Duration>) -> Option<Duration> {
        let limit = self.lag.heartbeat_writer_timeout;
        match primary_age {
            Some(age) => (age >= limit).then_some(age),
            None => self.heartbeat.writer_silent(now, limit),
        }
    }

    /// The intended delay to subtract, if configured: the largest `SQL_Delay`.
    fn delay_of<'a>(&self, channels: impl Iterator<Item = &'a ChannelStatus>) -> Duration {
        if !self.lag.subtract_sql_delay {
            return Duration::ZERO;
        }
        channels
            .filter_map(|c| c.sql_delay)
            .max()
            .map_or(Duration::ZERO, Duration::from_secs)
    }

    fn channel_lag(&mut self, channel: &ChannelStatus, now: Instant) -> Result<Lag, Broken> {
        let running =
            channel.io_thread == ThreadState::Yes && channel.sql_thread == ThreadState::Yes;
        let delay = self.delay_of(std::iter::once(channel));
        let reported = channel.seconds_behind.map(Duration::from_secs);
        if let (true, Some(lag)) = (running, reported.filter(|lag| *lag <= MAX_PLAUSIBLE_LAG)) {
            let lag = lag.saturating_sub(delay);
            return Ok(self.measured(&channel.name, lag, LagOrigin::ReplicaStatus, now));
        }

        let why = match reported {
            // MySQL has been seen to report 2^64-1 for a moment (a known
            // glitch): a figure no replica can have is no measurement.
            Some(absurd) if running && absurd > MAX_PLAUSIBLE_LAG => {
                format!("implausible lag reported ({}s)", absurd.as_secs())
            }
            _ => unknown_because(channel),
        };
        self.estimated(&channel.name, why, LagOrigin::ReplicaStatus, now)
    }

    /// A lag measured this poll, remembered for estimates.
    fn measured(&mut self, channel: &str, lag: Duration, origin: LagOrigin, now: Instant) -> Lag {
        self.last_measured
            .insert((origin, channel.to_owned()), Measured { lag, at: now });
        Lag {
            value: lag,
            channel: channel.to_owned(),
            estimated: None,
            origin,
            fallback: None,
        }
    }

    /// A lag that could not be measured (`why`): the last measured lag plus
    /// the time since, or unknown when nothing was ever measured.
    fn estimated(
        &self,
        channel: &str,
        why: String,
        origin: LagOrigin,
        now: Instant,
    ) -> Result<Lag, Broken> {
        match self.last_measured.get(&(origin, channel.to_owned())) {
            // Unknown since just after `at`: it has grown by at most the time since.
            Some(measured) => Ok(Lag {
                value: measured
                    .lag
                    .saturating_add(now.saturating_duration_since(measured.at)),
                channel: channel.to_owned(),
                estimated: Some(why),
                origin,
                fallback: None,
            }),
            None => Err(Broken::LagUnknown {
                channel: channel.to_owned(),
                why: Some(why),
            }),
        }
    }
}

/// Group Replication's own channels (`group_replication_applier`,
/// `group_replication_recovery`) are not async replication.
fn is_group_channel(channel: &ChannelStatus) -> bool {
    channel.name.starts_with("group_replication_")
}

/// The async replication channels, GR's own left out.
pub fn async_channels(status: &ServerStatus) -> impl Iterator<Item = &ChannelStatus> {
    status.channels.iter().filter(|c| !is_group_channel(c))
}

fn on(channel: &str) -> String {
    if channel.is_empty() {
        String::new()
    } else {
        format!(" on {channel}")
    }
}

/// Why `Seconds_Behind_Master` cannot be trusted this poll, in a few words.
fn unknown_because(channel: &ChannelStatus) -> String {
    if channel.io_thread != ThreadState::Yes {
        let mut why = format!("io thread {}", channel.io_thread.describe());
        if let Some(err) = &channel.io_error {
            why.push_str(&format!(" (error {})", err.errno));
        }
        why
    } else if channel.sql_thread != ThreadState::Yes {
        format!("sql thread {}", channel.sql_thread.describe())
    } else {
        "lag not reported".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Dialect, ServerStatus, ThreadError};
    use std::time::SystemTime;

    fn observe_with(
        at: Instant,
        channels: Vec<ChannelStatus>,
        heartbeat: Option<HeartbeatRead>,
    ) -> Observation {
        Observation {
            at,
            wall: SystemTime::now(),
            duration: Duration::from_millis(2),
            result: Ok(ServerStatus {
                version: "10.11.19-MariaDB".into(),
                dialect: Dialect::MariaDb,
                read_only: true,
                channels,
                heartbeat,
                ..ServerStatus::default()
            }),
            tls: Default::default(),
        }
    }

    fn observe(at: Instant, channels: Vec<ChannelStatus>) -> Observation {
        observe_with(at, channels, None)
    }

    fn by_status() -> Assessor {
        Assessor::new(&LagConfig {
            source: LagSource::ReplicaStatus,
            ..LagConfig::default()
        })
    }

    fn running(seconds: Option<u64>) -> ChannelStatus {
        ChannelStatus {
            io_thread: ThreadState::Yes,
            sql_thread: ThreadState::Yes,
            seconds_behind: seconds,
            exec_position: Some(("mariadb-bin.000001".into(), 100)),
            ..ChannelStatus::default()
        }
    }

    fn at_position(mut channel: ChannelStatus, pos: u64) -> ChannelStatus {
        channel.exec_position = Some(("mariadb-bin.000001".into(), pos));
        channel
    }

    fn io_connecting() -> ChannelStatus {
        ChannelStatus {
            io_thread: ThreadState::Connecting,
            sql_thread: ThreadState::Yes,
            io_error: Some(ThreadError {
                errno: 2003,
                message: "error reconnecting to master".into(),
            }),
            ..ChannelStatus::default()
        }
    }

    fn heartbeat_row(ts: &str, age_ms: u64) -> Option<HeartbeatRead> {
        Some(HeartbeatRead::Row {
            ts: ts.into(),
            age: Duration::from_millis(age_ms),
        })
    }

    #[test]
    fn no_channels_is_a_primary_or_when_read_only_a_standalone_copy() {
        let mut observation = observe(Instant::now(), vec![]);
        let health = by_status().assess(&observation, None).health;
        assert_eq!(health, Health::ReadOnlyStandalone);
        if let Ok(status) = observation.result.as_mut() {
            status.read_only = false;
        }
        let health = by_status().assess(&observation, None).health;
        assert_eq!(health, Health::Primary { read_only: false });
        // A Galera node is judged by its own rules.
        if let Ok(status) = observation.result.as_mut() {
            status.read_only = true;
            status.galera = Some(Default::default());
        }
        let health = by_status().assess(&observation, None).health;
        assert_eq!(health, Health::Primary { read_only: true });
    }

    #[test]
    fn failed_poll_is_unreachable_with_its_phrase() {
        let observation = Observation {
            at: Instant::now(),
            wall: SystemTime::now(),
            duration: Duration::from_secs(1),
            result: Err(PollError::ConnectTimeout(Duration::from_secs(1))),
            tls: Default::default(),
        };
        let health = by_status().assess(&observation, None).health;
        assert_eq!(
            health,
            Health::Unreachable {
                kind: ErrorKind::ConnectTimeout,
                phrase: "mysql connect timeout (1s)".into()
            }
        );
    }

    #[test]
    fn measured_lag_is_read_as_is() {
        let health = by_status()
            .assess(&observe(Instant::now(), vec![running(Some(7))]), None)
            .health;
        let lag = health.lag().expect("replica");
        assert_eq!(lag.value, Duration::from_secs(7));
        assert!(lag.is_plain());
        assert_eq!(lag.origin, LagOrigin::ReplicaStatus);
        assert_eq!(lag.to_string(), "lag 7.0s");
    }

    #[test]
    fn unknown_lag_grows_from_the_last_measurement() {
        let mut assessor = by_status();
        let t0 = Instant::now();
        assessor.assess(&observe(t0, vec![running(Some(3))]), None);
        let later = t0 + Duration::from_millis(4500);
        let health = assessor
            .assess(&observe(later, vec![io_connecting()]), None)
            .health;
        let lag = health.lag().expect("estimated, not broken");
        assert_eq!(lag.value, Duration::from_millis(7500));
        assert_eq!(
            lag.to_string(),
            "lag ~7.5s: io thread connecting (error 2003)"
        );
    }

    #[test]
    fn null_lag_with_both_threads_running_is_not_zero() {
        let mut assessor = by_status();
        let t0 = Instant::now();
        assessor.assess(&observe(t0, vec![running(Some(1))]), None);
        let health = assessor
            .assess(
                &observe(t0 + Duration::from_secs(2), vec![running(None)]),
                None,
            )
            .health;
        let lag = health.lag().expect("estimated");
        assert_eq!(lag.value, Duration::from_secs(3));
        assert_eq!(lag.estimated.as_deref(), Some("lag not reported"));
    }

    #[test]
    fn unknown_lag_without_history_is_broken() {
        let connecting = ChannelStatus {
            io_thread: ThreadState::Connecting,
            sql_thread: ThreadState::Yes,
            ..ChannelStatus::default()
        };
        let health = by_status()
            .assess(&observe(Instant::now(), vec![connecting]), None)
            .health;
        assert_eq!(
            health,
            Health::Broken {
                reason: Broken::LagUnknown {
                    channel: String::new(),
                    why: Some("io thread connecting".into()),
                },
                read_only: true
            }
        );
    }

    #[test]
    fn a_stopped_sql_thread_is_down_saying_so_whatever_was_measured_before() {
        let mut assessor = by_status();
        let t0 = Instant::now();
        assessor.assess(&observe(t0, vec![running(Some(0))]), None);
        let stopped = ChannelStatus {
            io_thread: ThreadState::Yes,
            sql_thread: ThreadState::No,
            seconds_behind: None,
            ..ChannelStatus::default()
        };
        let mut at = |seconds: f64| {
            let now = t0 + Duration::from_secs_f64(seconds);
            assessor
                .assess(&observe(now, vec![stopped.clone()]), None)
                .health
        };
        // Stopped for a moment (a delay being changed): the lag speaks.
        let moment = at(1.0);
        let lag = moment.lag().expect("estimated for a moment");
        assert_eq!(lag.estimated.as_deref(), Some("sql thread stopped"));
        // Stopped for STOPPED_AFTER: down, saying so.
        let health = at(1.0 + STOPPED_AFTER.as_secs_f64());
        assert_eq!(
            health,
            Health::Broken {
                reason: Broken::SqlThreadStopped {
                    channel: String::new()
                },
                read_only: true
            }
        );
        let on_east = Broken::SqlThreadStopped {
            channel: "east".into(),
        };
        assert_eq!(on_east.to_string(), "sql thread stopped on east");
    }

    #[test]
    fn sql_error_is_broken_and_names_the_errno() {
        let mut assessor = by_status();
        let t0 = Instant::now();
        assessor.assess(&observe(t0, vec![running(Some(0))]), None);
        let failed = ChannelStatus {
            io_thread: ThreadState::Yes,
            sql_thread: ThreadState::No,
            sql_error: Some(ThreadError {
                errno: 1062,
                message: "Duplicate entry '42' for key 'PRIMARY'".into(),
            }),
            ..ChannelStatus::default()
        };
        let health = assessor
            .assess(&observe(t0 + Duration::from_secs(1), vec![failed]), None)
            .health;
        assert_eq!(
            health,
            Health::Broken {
                reason: Broken::SqlThreadError {
                    errno: 1062,
                    channel: String::new(),
                },
                read_only: true
            }
        );
    }

    #[test]
    fn stale_error_text_on_a_running_sql_thread_is_ignored() {
        let mut channel = running(Some(2));
        channel.sql_error = Some(ThreadError {
            errno: 1062,
            message: "old".into(),
        });
        let health = by_status()
            .assess(&observe(Instant::now(), vec![channel]), None)
            .health;
        assert_eq!(health.lag().map(|l| l.value), Some(Duration::from_secs(2)));
    }

    fn named(mut channel: ChannelStatus, name: &str) -> ChannelStatus {
        channel.name = name.into();
        channel
    }

    #[test]
    fn worst_channel_wins() {
        let channels = vec![named(running(Some(1)), "a"), named(running(Some(9)), "b")];
        let health = by_status()
            .assess(&observe(Instant::now(), channels), None)
            .health;
        let lag = health.lag().expect("replica");
        assert_eq!(lag.channel, "b");
        assert_eq!(lag.to_string(), "lag 9.0s on b");
    }

    fn broken_channel(name: &str) -> ChannelStatus {
        named(
            ChannelStatus {
                sql_thread: ThreadState::No,
                sql_error: Some(ThreadError {
                    errno: 1146,
                    message: String::new(),
                }),
                ..running(None)
            },
            name,
        )
    }

    #[test]
    fn a_broken_channel_breaks_the_replica() {
        let channels = vec![named(running(Some(0)), "a"), broken_channel("b")];
        let health = by_status()
            .assess(&observe(Instant::now(), channels), None)
            .health;
        assert_eq!(
            health,
            Health::Broken {
                reason: Broken::SqlThreadError {
                    errno: 1146,
                    channel: "b".into(),
                },
                read_only: true
            }
        );
    }

    #[test]
    fn only_the_named_channels_matter() {
        let mut assessor = Assessor::new(&LagConfig {
            source: LagSource::ReplicaStatus,
            channels: vec!["a".into()],
            ..LagConfig::default()
        });
        let channels = vec![named(running(Some(3)), "a"), broken_channel("b")];
        let health = assessor
            .assess(&observe(Instant::now(), channels), None)
            .health;
        assert_eq!(
            health.lag().map(|l| l.to_string()),
            Some("lag 3.0s on a".into())
        );

        let health = assessor
            .assess(
                &observe(Instant::now(), vec![named(running(Some(0)), "b")]),
                None,
            )
            .health;
        assert_eq!(
            health,
            Health::Broken {
                reason: Broken::ChannelMissing("a".into()),
                read_only: true
            }
        );
    }

    #[test]
    fn an_intended_delay_can_be_subtracted() {
        let mut assessor = Assessor::new(&LagConfig {
            source: LagSource::ReplicaStatus,
            subtract_sql_delay: true,
            ..LagConfig::default()
        });
        let mut delayed = running(Some(3605));
        delayed.sql_delay = Some(3600);
        let health = assessor
            .assess(&observe(Instant::now(), vec![delayed]), None)
            .health;
        assert_eq!(health.lag().map(|l| l.value), Some(Duration::from_secs(5)));
    }

    #[test]
    fn an_unreachable_poll_keeps_the_memory() {
        let mut assessor = by_status();
        let t0 = Instant::now();
        assessor.assess(&observe(t0, vec![running(Some(2))]), None);
        assessor.assess(
            &Observation {
                at: t0 + Duration::from_secs(1),
                wall: SystemTime::now(),
                duration: Duration::from_secs(1),
                result: Err(PollError::Unreachable("connection refused".into())),
                tls: Default::default(),
            },
            None,
        );
        let health = assessor
            .assess(
                &observe(t0 + Duration::from_secs(5), vec![io_connecting()]),
                None,
            )
            .health;
        assert_eq!(health.lag().map(|l| l.value), Some(Duration::from_secs(7)));
    }

    #[test]
    fn becoming_a_primary_forgets_old_measurements() {
        let mut assessor = by_status();
        let t0 = Instant::now();
        assessor.assess(&observe(t0, vec![running(Some(2))]), None);
        assessor.assess(&observe(t0, vec![]), None);
        let health = assessor
            .assess(
                &observe(t0 + Duration::from_secs(1), vec![io_connecting()]),
                None,
            )
            .health;
        assert!(matches!(health, Health::Broken { .. }), "{health:?}");
    }

    #[test]
    fn the_heartbeat_decides_when_readable() {
        let mut assessor = Assessor::new(&LagConfig::default());
        // Replica status says 0 (it lies: the IO thread may be silently stuck).
        let assessment = assessor.assess(
            &observe_with(
                Instant::now(),
                vec![running(Some(0))],
                heartbeat_row("2026-11-25T16:25:20.000740", 12_345),
            ),
            None,
        );
        let lag = assessment.health.lag().expect("replica");
        assert_eq!(lag.value, Duration::from_millis(12_345));
        assert_eq!(lag.origin, LagOrigin::Heartbeat);
        assert_eq!(lag.to_string(), "lag 12.3s");
        let report = assessment.heartbeat.expect("reported");
        assert_eq!(report.state, HeartbeatState::Used);
    }

    #[test]
    fn auto_falls_back_to_replica_status_without_a_table_and_heartbeat_mode_does_not() {
        let missing = Some(HeartbeatRead::Unavailable {
            code: 1146,
            message: "Table 'heartbeat.heartbeat' doesn't exist".into(),
        });
        let observation = observe_with(Instant::now(), vec![running(Some(4))], missing);
        let assessment = Assessor::new(&LagConfig::default()).assess(&observation, None);
        let lag = assessment.health.lag().expect("replica status decided");
        assert_eq!(
            (lag.origin, lag.value),
            (LagOrigin::ReplicaStatus, Duration::from_secs(4))
        );
        assert_eq!(
            assessment.heartbeat.map(|r| r.state.describe()),
            Some("unavailable: error 1146".into())
        );

        let strict = Assessor::new(&LagConfig {
            source: LagSource::Heartbeat,
            ..LagConfig::default()
        })
        .assess(&observation, None);
        assert_eq!(
            strict.health,
            Health::Broken {
                reason: Broken::Heartbeat(Some(HeartbeatState::Unavailable(Some(1146)))),
                read_only: true
            }
        );
    }

    #[test]
    fn a_stale_writer_on_the_primary_sends_lag_back_to_replica_status() {
        let mut assessor = Assessor::new(&LagConfig::default());
        let observation = observe_with(
            Instant::now(),
            vec![running(Some(0))],
            heartbeat_row("2026-11-25T16:25:20.000740", 30_000),
        );
        let primary_row = Ok(HeartbeatRead::Row {
            ts: "2026-11-25T16:25:20.000740".into(),
            age: Duration::from_secs(30),
        });
        let assessment = assessor.assess(&observation, Some(&primary_row));
        let lag = assessment.health.lag().expect("replica");
        assert_eq!(lag.origin, LagOrigin::ReplicaStatus);
        assert_eq!(
            lag.to_string(),
            "lag 0.0s (replica status: heartbeat writer stale 30.0s)"
        );
        assert_eq!(
            assessment.heartbeat.map(|r| r.state),
            Some(HeartbeatState::WriterStale)
        );

        // A fresh row on the primary: the replica's old row is real lag.
        let fresh = Ok(HeartbeatRead::Row {
            ts: "2026-11-25T16:25:50.000740".into(),
            age: Duration::from_millis(300),
        });
        let lag = assessor.assess(&observation, Some(&fresh)).health;
        assert_eq!(lag.lag().map(|l| l.origin), Some(LagOrigin::Heartbeat));
    }

    #[test]
    fn a_heartbeat_standing_still_while_events_apply_means_a_dead_writer() {
        let mut assessor = Assessor::new(&LagConfig::default());
        let t0 = Instant::now();
        let ts = "2026-11-25T16:25:20.000740";
        let mut last = None;
        for second in 0..=6u64 {
            let channel = at_position(running(Some(0)), 100 + second * 50);
            let observation = observe_with(
                t0 + Duration::from_secs(second),
                vec![channel],
                heartbeat_row(ts, 1_000 * second),
            );
            last = Some(assessor.assess(&observation, None));
        }
        let last = last.expect("polled");
        let lag = last.health.lag().expect("replica");
        assert_eq!(lag.origin, LagOrigin::ReplicaStatus, "{lag}");
        assert!(lag.to_string().contains("heartbeat writer stale"), "{lag}");
    }

    #[test]
    fn a_heartbeat_standing_still_with_nothing_applied_is_lag() {
        // A frozen primary: the replica sees nothing new at all; only the
        // heartbeat's age shows how stale its data is.
        let mut assessor = Assessor::new(&LagConfig::default());
        let t0 = Instant::now();
        let mut last = None;
        for second in 0..=8u64 {
            let observation = observe_with(
                t0 + Duration::from_secs(second),
                vec![running(Some(0))],
                heartbeat_row("2026-11-25T16:25:20.000740", 1_000 * second),
            );
            last = Some(assessor.assess(&observation, None));
        }
        let lag = last.expect("polled").health;
        let lag = lag.lag().expect("replica");
        assert_eq!(
            (lag.origin, lag.value),
            (LagOrigin::Heartbeat, Duration::from_secs(8))
        );
    }

    #[test]
    fn a_delayed_replica_heartbeat_minus_its_intended_delay() {
        let mut assessor = Assessor::new(&LagConfig {
            subtract_sql_delay: true,
            ..LagConfig::default()
        });
        let mut delayed = running(Some(3600));
        delayed.sql_delay = Some(3600);
        let observation = observe_with(
            Instant::now(),
            vec![delayed],
            heartbeat_row("2026-11-25T16:25:20.000740", 3_600_700),
        );
        let lag = assessor.assess(&observation, None).health;
        assert_eq!(lag.lag().map(|l| l.value), Some(Duration::from_millis(700)));
    }
}
