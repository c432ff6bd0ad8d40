//! Pure decisions: health + policy + recent history → verdict. No I/O, no clock.
//!
//! [`target`] is what one poll's health deserves on its own: the lag curve,
//! drain, down. [`Damper`] turns the sequence of targets into the published
//! verdict: a worse target applies at once; a better one only once the last
//! `recover_after` targets all qualify for it. Equivalently, the published
//! verdict is the worst of the last `recover_after` targets, so a replica
//! catching up climbs back smoothly, one qualifying window at a time.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{
    Config, DonorVerdict, GaleraConfig, GroupReplicationConfig, LoadConfig, Percent, Policy, Role,
    StandaloneVerdict,
};
use crate::health::{Assessment, Health, Lag, Load};
use crate::probe::{
    ClusterStatus, GaleraStatus, GroupStatus, LocalState, MemberState, RejectQueries,
};
use crate::reason::{GaleraReason, GroupReason, LoadReason, Mismatch, Reason};
use crate::topology::Place;

/// HAProxy's view of a server: ordered from worst to best, so `min` is "worse".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Down,
    Drain,
    /// Serving, at this percentage of the configured weight (1–100).
    Up(u8),
}

impl State {
    /// Percentage of the configured weight that new connections get.
    pub fn weight(self) -> u8 {
        match self {
            State::Up(weight) => weight,
            State::Drain | State::Down => 0,
        }
    }

    /// Which of the three it is, weight aside.
    pub fn kind(self) -> StateKind {
        match self {
            State::Up(_) => StateKind::Up,
            State::Drain => StateKind::Drain,
            State::Down => StateKind::Down,
        }
    }

    /// Its label: `up`, `drain` or `down`.
    pub fn as_str(self) -> &'static str {
        self.kind().as_str()
    }
}

crate::labelled! {
    /// A [`State`] without its weight: what `/status` and the metrics name.
    pub enum StateKind {
        Up => "up",
        Drain => "drain",
        Down => "down",
    }
}

/// A state and, when there is anything to say, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub state: State,
    /// Free of row data; [`Reason::None`] for a healthy server at full weight.
    pub reason: Reason,
}

impl Verdict {
    pub fn new(state: State, reason: Reason) -> Verdict {
        Verdict { state, reason }
    }

    /// Full weight, nothing to say.
    pub fn healthy() -> Verdict {
        Verdict::new(State::Up(100), Reason::None)
    }
}

/// The state a lag deserves under `policy`: full weight, a linear fall to
/// `min_weight`, then drain, then down.
pub fn state_for_lag(lag: Duration, policy: &Policy) -> State {
    if lag >= policy.thresholds.down_at {
        return State::Down;
    }
    if lag >= policy.thresholds.drain_at {
        return State::Drain;
    }
    State::Up(linear_weight(
        lag.as_secs_f64(),
        policy.thresholds.full_weight_below.as_secs_f64(),
        policy.thresholds.min_weight_at.as_secs_f64(),
        policy.min_weight,
    ))
}

/// 100% below `full_below`, `min` at and above `min_at`, a straight line
/// between (rounded to a whole percent).
pub fn linear_weight(value: f64, full_below: f64, min_at: f64, min: Percent) -> u8 {
    let min = f64::from(min.0.clamp(1, 100));
    if value < full_below {
        return 100;
    }
    if value >= min_at {
        return min as u8;
    }
    // full_below <= value < min_at, so the span is not zero.
    let weight = 100.0 - (100.0 - min) * (value - full_below) / (min_at - full_below);
    weight.round().clamp(min, 100.0) as u8
}

/// Settings that apply to every pool alike.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    pub galera: GaleraConfig,
    pub group_replication: GroupReplicationConfig,
    pub load: Option<LoadConfig>,
}

impl Rules {
    pub fn of(config: &Config) -> Rules {
        Rules {
            galera: config.galera.clone(),
            group_replication: config.group_replication.clone(),
            load: config.load.clone(),
        }
    }
}

/// What one poll deserves under `policy`, before flap damping: the worst of
/// what replication, Galera and load each call for.
pub fn target(
    assessment: &Assessment,
    place: Option<&Place>,
    policy: &Policy,
    rules: &Rules,
) -> Verdict {
    let mut verdict = health_target(&assessment.health, policy);
    // On a tie the place speaks: it is a fault, which keep_up never
    // keeps up, where lag alone might be kept.
    if let Some(place) = place {
        verdict = worse(place_target(place, policy.role), verdict);
    }
    if let Some(galera) = &assessment.galera {
        verdict = worse(verdict, galera_target(galera, policy, &rules.galera));
    }
    if let Some(group) = &assessment.group {
        verdict = worse(
            verdict,
            group_target(group, policy, &rules.group_replication),
        );
    }
    if let (Some(config), Some(load)) = (&rules.load, &assessment.load) {
        verdict = worse(verdict, load_target(load, policy, config));
    }
    verdict
}

/// What a target's place in its cluster allows in a pool of `role`: a
/// server that takes writes and is not the writer is out of every pool; a
/// writer pool has nobody up while the topology cannot tell who the
/// writer is, nor while the writer waits for the last one to be out; a
/// replica whose chain does not lead to the writer is out for reads.
fn place_target(place: &Place, role: Role) -> Verdict {
    let out = matches!(
        (place, role),
        (Place::NotTheWriter { .. }, _)
            | (Place::NoWriter { .. } | Place::Waiting(_), Role::Primary)
            | (Place::FollowsElsewhere { .. }, Role::Any | Role::Replica)
    );
    if out {
        Verdict::new(State::Down, Reason::Cluster(place.clone()))
    } else {
        Verdict::healthy()
    }
}

/// The worse of two verdicts; on a tie, the first, unless it says only that
/// the server is not what the pool's role asks for and the second says what
/// is wrong with it (a group member out of the group is that, whatever the
/// pool: not `a secondary`).
fn worse(a: Verdict, b: Verdict) -> Verdict {
    let only_role = |verdict: &Verdict| matches!(verdict.reason, Reason::Role(_));
    let b_says_more = b.state == a.state && only_role(&a) && !only_role(&b);
    if b.state < a.state || b_says_more {
        b
    } else {
        a
    }
}

/// A Galera node serves only when ready, in the primary component and
/// synced; an operator's desync or reject_queries drains it.
fn galera_target(galera: &GaleraStatus, policy: &Policy, config: &GaleraConfig) -> Verdict {
    if !galera.ready {
        return galera_verdict(State::Down, GaleraReason::NotReady);
    }
    if galera.cluster_status != ClusterStatus::Primary {
        return galera_verdict(State::Down, GaleraReason::Cluster(galera.cluster_status));
    }
    if galera.desync {
        return galera_verdict(State::Drain, GaleraReason::Desynced);
    }
    if galera.reject_queries != RejectQueries::None {
        let rejects = GaleraReason::RejectsQueries(galera.reject_queries);
        return galera_verdict(State::Drain, rejects);
    }
    match galera.local_state {
        LocalState::Synced => {}
        LocalState::DonorDesynced => {
            let state = match config.donor {
                DonorVerdict::Drain => State::Drain,
                DonorVerdict::Down => State::Down,
            };
            return galera_verdict(state, GaleraReason::Donor);
        }
        state => {
            let not_synced = GaleraReason::NotSynced {
                state,
                comment: galera.local_state_comment.clone(),
            };
            return galera_verdict(State::Down, not_synced);
        }
    }
    if let (Some(full_below), Some(min_at)) =
        (config.recv_queue_full_below, config.recv_queue_min_at)
    {
        let weight = linear_weight(
            galera.recv_queue as f64,
            full_below as f64,
            min_at as f64,
            policy.min_weight,
        );
        if weight < 100 {
            return galera_verdict(
                State::Up(weight),
                GaleraReason::RecvQueue(galera.recv_queue),
            );
        }
    }
    Verdict::healthy()
}

fn galera_verdict(state: State, reason: GaleraReason) -> Verdict {
    Verdict::new(state, Reason::Galera(reason))
}

/// The lower of the configured load weights.
fn load_target(load: &Load, policy: &Policy, config: &LoadConfig) -> Verdict {
    let mut verdict = Verdict::healthy();
    if let (Some(full_below), Some(min_at)) = (
        config.threads_running_full_below,
        config.threads_running_min_at,
    ) {
        let weight = linear_weight(
            load.threads_running as f64,
            full_below as f64,
            min_at as f64,
            policy.min_weight,
        );
        verdict = worse(
            verdict,
            Verdict::new(
                State::Up(weight),
                Reason::Load(LoadReason::ThreadsRunning(load.threads_running)),
            ),
        );
    }
    if let (Some(full_below), Some(min_at), Some(max)) = (
        config.connections_full_below,
        config.connections_min_at,
        load.max_connections.filter(|max| *max > 0),
    ) {
        let used = 100.0 * load.threads_connected as f64 / max as f64;
        let weight = linear_weight(
            used,
            f64::from(full_below.0),
            f64::from(min_at.0),
            policy.min_weight,
        );
        verdict = worse(
            verdict,
            Verdict::new(
                State::Up(weight),
                Reason::Load(LoadReason::Connections {
                    connected: load.threads_connected,
                    max,
                }),
            ),
        );
    }
    if verdict.state == State::Up(100) {
        verdict.reason = Reason::None;
    }
    verdict
}

/// What replication health alone deserves under `policy`.
pub fn health_target(health: &Health, policy: &Policy) -> Verdict {
    match (health, policy.role) {
        (Health::Unreachable { kind, phrase }, _) => Verdict::new(
            State::Down,
            Reason::Unreachable {
                kind: *kind,
                phrase: phrase.clone(),
            },
        ),
        // A writer pool asks one question: can this server take writes now?
        (Health::Primary { read_only: false }, Role::Primary) => Verdict::healthy(),
        (Health::Primary { read_only: true }, Role::Primary) => mismatch(Mismatch::ReadOnly),
        (Health::Replica { .. } | Health::Broken { .. }, Role::Primary) => {
            mismatch(Mismatch::Replica)
        }
        (Health::Primary { .. }, Role::Replica) => mismatch(Mismatch::NotReplica),
        (Health::Broken { reason, .. }, _) => {
            Verdict::new(State::Down, Reason::Broken(reason.clone()))
        }
        (Health::Primary { .. }, Role::Any) => Verdict::healthy(),
        (Health::ReadOnlyStandalone, Role::Primary) => mismatch(Mismatch::ReadOnly),
        (Health::ReadOnlyStandalone, Role::Replica) => mismatch(Mismatch::NotReplica),
        (Health::ReadOnlyStandalone, Role::Any) => {
            let state = match policy.standalone_read_only {
                StandaloneVerdict::Up => State::Up(100),
                StandaloneVerdict::Drain => State::Drain,
                StandaloneVerdict::Down => State::Down,
            };
            Verdict::new(state, Reason::Role(Mismatch::Standalone))
        }
        (Health::GroupMember { primary: true, .. }, Role::Primary) => Verdict::healthy(),
        (Health::GroupMember { primary: false, .. }, Role::Primary) => {
            mismatch(Mismatch::GroupSecondary)
        }
        (Health::GroupMember { primary: true, .. }, Role::Replica) => {
            mismatch(Mismatch::GroupPrimary)
        }
        (Health::GroupMember { lag: None, .. }, Role::Any | Role::Replica) => Verdict::healthy(),
        (
            Health::Replica { lag, .. } | Health::GroupMember { lag: Some(lag), .. },
            Role::Any | Role::Replica,
        ) => lag_target(lag, policy),
    }
}

/// A replica's verdict by its lag. A healthy replica gets a bare
/// `up ready 100%`; anything else, an estimate or a heartbeat fallback
/// included, says which lag drove it.
fn lag_target(lag: &Lag, policy: &Policy) -> Verdict {
    let state = state_for_lag(lag.value, policy);
    if state == State::Up(100) && lag.is_plain() {
        Verdict::healthy()
    } else {
        let lag = Reason::Lag {
            lag: lag.clone(),
            direction: None,
        };
        Verdict::new(state, lag)
    }
}

/// Down: not what the pool's role asks for.
fn mismatch(mismatch: Mismatch) -> Verdict {
    Verdict::new(State::Down, Reason::Role(mismatch))
}

/// A Group Replication member serves only when `ONLINE` in a partition
/// that holds the majority; its weight falls as its applier queue grows.
fn group_target(group: &GroupStatus, policy: &Policy, config: &GroupReplicationConfig) -> Verdict {
    let down = |reason: GroupReason| Verdict::new(State::Down, Reason::Group(reason));
    if group.state != MemberState::Online {
        return down(GroupReason::Member(group.state));
    }
    if !group.has_majority() {
        return down(GroupReason::Minority {
            reachable: group.reachable,
            members: group.members,
        });
    }
    let queue = group.applier_queue.unwrap_or(0);
    let weight = linear_weight(
        queue as f64,
        config.applier_queue_full_below as f64,
        config.applier_queue_min_at as f64,
        policy.min_weight,
    );
    if weight < 100 {
        return Verdict::new(
            State::Up(weight),
            Reason::Group(GroupReason::ApplierQueue(queue)),
        );
    }
    Verdict::healthy()
}

/// A published verdict and, when it is held below the latest target, how far
/// recovery has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub recovering: Option<Recovery>,
    /// Set while the weight is capped by the warm-up after a recovery.
    pub warming: Option<Warming>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Consecutive recent polls that qualify for something better.
    pub polls: u32,
    /// Polls needed (`recover_after`).
    pub needed: u32,
    /// The state the latest poll alone would justify.
    pub towards: State,
}

/// Flap damping: remembers the last `recover_after` targets and publishes the
/// worst of them.
#[derive(Debug, Default, Clone)]
pub struct Damper {
    recent: VecDeque<Verdict>,
}

impl Damper {
    pub fn apply(&mut self, target: Verdict, recover_after: u32) -> Decision {
        let window = recover_after.max(1) as usize;
        self.recent.push_back(target);
        while self.recent.len() > window {
            self.recent.pop_front();
        }
        let latest = self.recent.back().expect("just pushed");
        // The worst recent target; among equals the most recent, for a fresh reason.
        let worst = self
            .recent
            .iter()
            .rev()
            .min_by_key(|verdict| verdict.state)
            .expect("not empty");
        if worst.state == latest.state {
            return Decision {
                verdict: latest.clone(),
                recovering: None,
                warming: None,
            };
        }
        let polls = self
            .recent
            .iter()
            .rev()
            .take_while(|verdict| verdict.state > worst.state)
            .count() as u32;
        let recovering = Reason::Recovering {
            polls,
            needed: recover_after,
            now: Box::new(latest.reason.clone()),
        };
        Decision {
            verdict: Verdict::new(worst.state, recovering),
            recovering: Some(Recovery {
                polls,
                needed: recover_after,
                towards: latest.state,
            }),
            warming: None,
        }
    }
}

/// How far a warm-up has got: the weight may be at most `ceiling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warming {
    /// Time warm so far: since the recovery, or the server's own uptime,
    /// whichever is shorter.
    pub elapsed: Duration,
    /// `ramp_up`.
    pub length: Duration,
    pub ceiling: u8,
}

/// Warm-up after recovery (`ramp_up`): a server that comes back has a cold
/// buffer pool, and full traffic at once hurts it. After a published verdict
/// goes from down, drain or maintenance to up, the weight's ceiling rises
/// linearly from `min_weight` to 100% over `ramp_up`; lag and load can only
/// lower the weight further. The same holds while the server's own uptime
/// is below `ramp_up` (a mysqld restarted behind remora's back). A worse
/// verdict ends the ramp; the next recovery starts it again.
///
/// Pure: the caller passes the time and the server's uptime.
#[derive(Debug, Clone, Default)]
pub struct Ramp {
    /// When the current warm-up began.
    since: Option<Instant>,
    /// Whether the last answer served traffic: `None` before the first.
    was_serving: Option<bool>,
}

impl Ramp {
    /// `decision` under the warm-up at `now`. `serving`: the answer is the
    /// measured verdict (no maintenance switch holds it).
    pub fn apply(
        &mut self,
        mut decision: Decision,
        serving: bool,
        now: Instant,
        uptime: Option<Duration>,
        policy: &Policy,
    ) -> Decision {
        let up = serving && matches!(decision.verdict.state, State::Up(_));
        let recovered = up && self.was_serving == Some(false);
        self.was_serving = Some(up);
        if !up || policy.ramp_up.is_zero() {
            self.since = None;
            return decision;
        }
        if recovered {
            self.since = Some(now);
        }
        let since_recovery = self.since.map(|since| now.saturating_duration_since(since));
        let warm = match (since_recovery, uptime) {
            (Some(a), Some(b)) => a.min(b),
            (one, other) => match one.or(other) {
                Some(warm) => warm,
                None => return decision,
            },
        };
        if warm >= policy.ramp_up {
            self.since = None;
            return decision;
        }
        let ceiling = ramp_ceiling(warm, policy.ramp_up, policy.min_weight);
        decision.warming = Some(Warming {
            elapsed: warm,
            length: policy.ramp_up,
            ceiling,
        });
        if decision.verdict.state.weight() > ceiling {
            let reason = Reason::Warming {
                elapsed: warm,
                length: policy.ramp_up,
                then: Box::new(std::mem::replace(
                    &mut decision.verdict.reason,
                    Reason::None,
                )),
            };
            decision.verdict = Verdict::new(State::Up(ceiling), reason);
        }
        decision
    }
}

/// `min` at the start of a warm-up, 100% at its end, a straight line
/// between (rounded down: a warm-up never overshoots).
fn ramp_ceiling(warm: Duration, length: Duration, min: Percent) -> u8 {
    let min = f64::from(min.0.clamp(1, 100));
    let done = (warm.as_secs_f64() / length.as_secs_f64().max(1e-9)).clamp(0.0, 1.0);
    (min + (100.0 - min) * done).floor().clamp(min, 100.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Thresholds;
    use crate::health::{Broken, Lag, LagOrigin};
    use crate::probe::ErrorKind;
    use crate::reason::tests::lag as lag_reason;

    fn sql_error() -> Reason {
        Reason::Broken(broken_sql())
    }

    fn broken_sql() -> Broken {
        Broken::SqlThreadError {
            errno: 1062,
            channel: String::new(),
        }
    }

    fn unreachable(kind: ErrorKind, phrase: &str) -> Health {
        Health::Unreachable {
            kind,
            phrase: phrase.into(),
        }
    }

    /// The defaults: 100% below 2s, 10% at 30s, drain at 60s, down at 300s.
    fn policy() -> Policy {
        Policy::default()
    }

    fn replica(seconds: f64) -> Health {
        Health::Replica {
            lag: Lag {
                value: Duration::from_secs_f64(seconds),
                channel: String::new(),
                estimated: None,
                origin: LagOrigin::ReplicaStatus,
                fallback: None,
            },
            read_only: true,
        }
    }

    #[test]
    fn the_curve() {
        let cases = [
            (0.0, State::Up(100)),
            (1.999, State::Up(100)),
            (2.0, State::Up(100)),
            (3.0, State::Up(97)),
            (16.0, State::Up(55)),
            (29.9, State::Up(10)),
            (30.0, State::Up(10)),
            (59.999, State::Up(10)),
            (60.0, State::Drain),
            (299.0, State::Drain),
            (300.0, State::Down),
            (86400.0, State::Down),
        ];
        for (seconds, expected) in cases {
            assert_eq!(
                state_for_lag(Duration::from_secs_f64(seconds), &policy()),
                expected,
                "lag {seconds}s"
            );
        }
    }

    #[test]
    fn the_curve_is_monotonic() {
        let policy = policy();
        let mut previous = State::Up(100);
        for tenth in 0..4000 {
            let state = state_for_lag(Duration::from_millis(tenth * 100), &policy);
            assert!(state <= previous, "{state:?} after {previous:?} at {tenth}");
            previous = state;
        }
    }

    #[test]
    fn degenerate_thresholds_step_instead_of_dividing_by_zero() {
        let five = Duration::from_secs(5);
        let policy = Policy {
            thresholds: Thresholds {
                full_weight_below: five,
                min_weight_at: five,
                drain_at: five,
                down_at: five,
            },
            ..policy()
        };
        assert_eq!(
            state_for_lag(Duration::from_secs(4), &policy),
            State::Up(100)
        );
        assert_eq!(state_for_lag(Duration::from_secs(5), &policy), State::Down);
        let mut policy = super::tests::policy();
        policy.thresholds.min_weight_at = Duration::from_secs(2);
        assert_eq!(
            state_for_lag(Duration::from_secs(2), &policy),
            State::Up(10)
        );
    }

    #[test]
    fn min_weight_of_100_means_no_curve() {
        let policy = Policy {
            min_weight: Percent(100),
            ..policy()
        };
        assert_eq!(
            state_for_lag(Duration::from_secs(20), &policy),
            State::Up(100)
        );
    }

    #[test]
    fn targets_by_health() {
        let policy = policy();
        let cases = [
            (
                unreachable(
                    ErrorKind::Unreachable,
                    "mysql unreachable: connection refused",
                ),
                "down #mysql unreachable: connection refused\n",
            ),
            (
                Health::Broken {
                    reason: broken_sql(),
                    read_only: true,
                },
                "down #sql thread error 1062\n",
            ),
            (Health::Primary { read_only: false }, "up ready 100%\n"),
            (replica(0.0), "up ready 100%\n"),
            (replica(16.0), "up ready 55% #lag 16.0s\n"),
            (replica(75.5), "up drain #lag 75.5s\n"),
            (replica(301.0), "down #lag 301.0s\n"),
            (
                Health::Replica {
                    lag: Lag {
                        value: Duration::from_millis(1200),
                        channel: String::new(),
                        estimated: Some("sql thread stopped".into()),
                        origin: LagOrigin::ReplicaStatus,
                        fallback: None,
                    },
                    read_only: true,
                },
                "up ready 100% #lag ~1.2s: sql thread stopped\n",
            ),
        ];
        for (health, line) in cases {
            assert_eq!(
                health_target(&health, &policy).agent_line(),
                line,
                "{health:?}"
            );
        }
    }

    #[test]
    fn a_read_only_server_that_replicates_from_nowhere_is_out_unless_told_otherwise() {
        let cases = [
            (
                Role::Any,
                StandaloneVerdict::Down,
                "down #read-only but not replicating\n",
            ),
            (
                Role::Any,
                StandaloneVerdict::Drain,
                "up drain #read-only but not replicating\n",
            ),
            (
                Role::Any,
                StandaloneVerdict::Up,
                "up ready 100% #read-only but not replicating\n",
            ),
            (
                Role::Primary,
                StandaloneVerdict::Up,
                "down #not writable: read_only is on\n",
            ),
            (
                Role::Replica,
                StandaloneVerdict::Up,
                "down #not a replica\n",
            ),
        ];
        for (role, standalone_read_only, line) in cases {
            let policy = Policy {
                role,
                standalone_read_only,
                ..policy()
            };
            assert_eq!(
                health_target(&Health::ReadOnlyStandalone, &policy).agent_line(),
                line,
                "{role:?} {standalone_read_only:?}"
            );
        }
    }

    #[test]
    fn roles() {
        let primary = |read_only| Health::Primary { read_only };
        let broken = Health::Broken {
            reason: broken_sql(),
            read_only: true,
        };
        let unreachable = unreachable(ErrorKind::ConnectTimeout, "mysql connect timeout (1s)");
        let cases = [
            (Role::Primary, primary(false), "up ready 100%\n"),
            (
                Role::Primary,
                primary(true),
                "down #not writable: read_only is on\n",
            ),
            (
                Role::Primary,
                replica(0.0),
                "down #not writable: a replica\n",
            ),
            (
                Role::Primary,
                broken.clone(),
                "down #not writable: a replica\n",
            ),
            (
                Role::Primary,
                unreachable.clone(),
                "down #mysql connect timeout (1s)\n",
            ),
            (Role::Replica, primary(false), "down #not a replica\n"),
            (Role::Replica, replica(16.0), "up ready 55% #lag 16.0s\n"),
            (
                Role::Replica,
                broken.clone(),
                "down #sql thread error 1062\n",
            ),
            (Role::Any, primary(true), "up ready 100%\n"),
            (Role::Any, broken, "down #sql thread error 1062\n"),
            (Role::Any, unreachable, "down #mysql connect timeout (1s)\n"),
        ];
        for (role, health, line) in cases {
            let policy = Policy { role, ..policy() };
            assert_eq!(
                health_target(&health, &policy).agent_line(),
                line,
                "{role:?} {health:?}"
            );
        }
    }

    fn assessment(health: Health) -> Assessment {
        Assessment::of(health)
    }

    /// Each place in each role: a writer that is not the one is out
    /// everywhere; no writer, or one waiting, is out for writes only; a
    /// replica that follows elsewhere is out for reads only.
    #[test]
    fn a_place_in_the_cluster_takes_a_server_out_of_the_pools_it_would_harm() {
        let writable = Health::Primary { read_only: false };
        let frozen = replica(0.0);
        let not_the_writer = Place::NotTheWriter {
            writer: "db-2".into(),
        };
        let no_writer = Place::NoWriter {
            writable: vec!["db-1".into(), "db-2".into()],
            why: crate::topology::NoWriter::Split,
        };
        let waiting = Place::Waiting("db-1".into());
        let elsewhere = Place::FollowsElsewhere {
            source: "db-1".into(),
            through: None,
            writer: "db-2".into(),
        };
        let (out_for_reads, for_writes) = (
            "down #follows db-1, not the writer db-2\n",
            "down #not writable: a replica\n",
        );
        let cases = [
            (
                &writable,
                Place::Writer,
                [
                    "up ready 100%\n",
                    "up ready 100%\n",
                    "down #not a replica\n",
                ],
            ),
            (
                &writable,
                not_the_writer,
                ["down #not the writer: replicas follow db-2\n"; 3],
            ),
            (
                &writable,
                no_writer,
                [
                    "up ready 100%\n",
                    "down #no writer: db-1 and db-2 are writable and the replicas are split \
                     between them\n",
                    "down #not a replica\n",
                ],
            ),
            (
                &writable,
                waiting,
                [
                    "up ready 100%\n",
                    "down #the writer once db-1 is out of the writer pool everywhere\n",
                    "down #not a replica\n",
                ],
            ),
            (
                &frozen,
                elsewhere,
                [out_for_reads, for_writes, out_for_reads],
            ),
        ];
        // Down by lag too: the place is the reason, a fault.
        let lagging = replica(400.0);
        let cases = cases.into_iter().chain([(
            &lagging,
            Place::FollowsElsewhere {
                source: "db-1".into(),
                through: None,
                writer: "db-2".into(),
            },
            [out_for_reads, for_writes, out_for_reads],
        )]);
        for (health, place, lines) in cases {
            for (role, line) in [Role::Any, Role::Primary, Role::Replica].iter().zip(lines) {
                let policy = Policy {
                    role: *role,
                    ..policy()
                };
                let verdict = target(
                    &assessment(health.clone()),
                    Some(&place),
                    &policy,
                    &Rules::default(),
                );
                assert_eq!(verdict.agent_line(), line, "{place:?} in {role:?}");
            }
        }
    }

    /// Values no server sends (a lying server, a proxy) are kinds of their
    /// own, never taken for the good ones.
    #[test]
    fn galera_values_no_server_sends_are_never_taken_for_good_ones() {
        let policy = Policy::default();
        let config = GaleraConfig::default();
        let lying = GaleraStatus {
            cluster_status: ClusterStatus::from_label("Primaryish").unwrap_or_default(),
            ..synced()
        };
        assert_eq!(
            galera_target(&lying, &policy, &config).agent_line(),
            "down #galera cluster status unknown\n"
        );
        let rejecting = GaleraStatus {
            reject_queries: RejectQueries::Unknown,
            ..synced()
        };
        assert_eq!(
            galera_target(&rejecting, &policy, &config).state,
            State::Drain
        );
        assert_eq!(LocalState::of(17), LocalState::Unknown);
        for state in LocalState::ALL {
            if *state != LocalState::Unknown {
                assert_eq!(LocalState::of(state.number()), *state);
            }
        }
    }

    fn synced() -> GaleraStatus {
        GaleraStatus {
            ready: true,
            cluster_status: ClusterStatus::Primary,
            local_state: LocalState::of(4),
            local_state_comment: "Synced".into(),
            recv_queue: 0,
            desync: false,
            reject_queries: RejectQueries::None,
        }
    }

    #[test]
    fn galera_states() {
        let policy = policy();
        let rules = Rules {
            galera: GaleraConfig {
                donor: DonorVerdict::Drain,
                recv_queue_full_below: Some(10),
                recv_queue_min_at: Some(100),
            },
            ..Rules::default()
        };
        let cases = [
            (synced(), "up ready 100%\n"),
            (
                GaleraStatus {
                    ready: false,
                    ..synced()
                },
                "down #galera not ready (wsrep_ready OFF)\n",
            ),
            (
                GaleraStatus {
                    cluster_status: ClusterStatus::NonPrimary,
                    ..synced()
                },
                "down #galera cluster status non-Primary\n",
            ),
            (
                GaleraStatus {
                    desync: true,
                    local_state: LocalState::of(2),
                    ..synced()
                },
                "up drain #galera desynced (wsrep_desync ON)\n",
            ),
            (
                GaleraStatus {
                    reject_queries: RejectQueries::All,
                    ..synced()
                },
                "up drain #galera rejects queries (ALL)\n",
            ),
            (
                GaleraStatus {
                    local_state: LocalState::of(2),
                    ..synced()
                },
                "up drain #galera donor\n",
            ),
            (
                GaleraStatus {
                    local_state: LocalState::of(1),
                    local_state_comment: "Joining".into(),
                    ..synced()
                },
                "down #galera not synced (state 1 Joining)\n",
            ),
            (
                GaleraStatus {
                    recv_queue: 55,
                    ..synced()
                },
                "up ready 55% #galera recv queue 55\n",
            ),
        ];
        for (galera, line) in cases {
            let mut a = assessment(Health::Primary { read_only: false });
            a.galera = Some(galera.clone());
            assert_eq!(
                target(&a, None, &policy, &rules).agent_line(),
                line,
                "{galera:?}"
            );
        }
        let down_donors = Rules {
            galera: GaleraConfig {
                donor: DonorVerdict::Down,
                ..GaleraConfig::default()
            },
            ..Rules::default()
        };
        let mut a = assessment(Health::Primary { read_only: false });
        a.galera = Some(GaleraStatus {
            local_state: LocalState::of(2),
            ..synced()
        });
        assert_eq!(
            target(&a, None, &policy, &down_donors).agent_line(),
            "down #galera donor\n"
        );
    }

    #[test]
    fn load_lowers_the_weight_but_never_raises_it() {
        let policy = policy();
        let rules = Rules {
            load: Some(LoadConfig {
                threads_running_full_below: Some(16),
                threads_running_min_at: Some(64),
                connections_full_below: Some(Percent(80)),
                connections_min_at: Some(Percent(100)),
            }),
            ..Rules::default()
        };
        let with_load = |health, running, connected| {
            let mut a = assessment(health);
            a.load = Some(Load {
                threads_running: running,
                threads_connected: connected,
                max_connections: Some(100),
            });
            target(&a, None, &policy, &rules).agent_line()
        };
        assert_eq!(with_load(replica(0.0), 3, 10), "up ready 100%\n");
        assert_eq!(
            with_load(replica(0.0), 40, 10),
            "up ready 55% #load: 40 threads running\n"
        );
        assert_eq!(
            with_load(replica(0.0), 3, 90),
            "up ready 55% #load: 90 of 100 connections\n"
        );
        // The lower of lag and load wins, with its reason.
        assert_eq!(
            with_load(replica(23.0), 40, 10),
            "up ready 33% #lag 23.0s\n"
        );
        // Load never lifts a drained or down server.
        assert_eq!(with_load(replica(75.0), 0, 0), "up drain #lag 75.0s\n");
    }

    fn run(damper: &mut Damper, states: &[State], recover_after: u32) -> Vec<State> {
        states
            .iter()
            .map(|state| {
                damper
                    .apply(Verdict::new(*state, Reason::None), recover_after)
                    .verdict
                    .state
            })
            .collect()
    }

    #[test]
    fn hysteresis() {
        use State::*;
        // (targets, recover_after, published)
        let cases: &[(&[State], u32, &[State])] = &[
            // The first verdict applies at once, whatever it is.
            (&[Down], 3, &[Down]),
            (&[Up(100)], 3, &[Up(100)]),
            // Worse applies at once.
            (
                &[Up(100), Up(40), Drain, Down],
                3,
                &[Up(100), Up(40), Drain, Down],
            ),
            // Better waits for three qualifying polls.
            (
                &[Down, Up(100), Up(100), Up(100)],
                3,
                &[Down, Down, Down, Up(100)],
            ),
            // One bad poll in the streak starts it again: no flapping.
            (
                &[Down, Up(100), Up(100), Down, Up(100), Up(100), Up(100)],
                3,
                &[Down, Down, Down, Down, Down, Down, Up(100)],
            ),
            // Alternating good and bad never comes back up.
            (
                &[Up(100), Down, Up(100), Down, Up(100), Down],
                3,
                &[Up(100), Down, Down, Down, Down, Down],
            ),
            // A rise goes only as high as every poll in the window justifies.
            (
                &[Up(10), Up(50), Up(80), Up(100), Up(100), Up(100)],
                3,
                &[Up(10), Up(10), Up(10), Up(50), Up(80), Up(100)],
            ),
            // Drain to up needs the window too.
            (
                &[Drain, Up(30), Up(30), Up(30)],
                3,
                &[Drain, Drain, Drain, Up(30)],
            ),
            // recover_after 1: every target applies at once.
            (
                &[Down, Up(100), Drain, Up(50)],
                1,
                &[Down, Up(100), Drain, Up(50)],
            ),
        ];
        for (targets, recover_after, published) in cases {
            let mut damper = Damper::default();
            assert_eq!(
                run(&mut damper, targets, *recover_after),
                *published,
                "targets {targets:?}, recover_after {recover_after}"
            );
        }
    }

    #[test]
    fn held_verdicts_say_they_are_recovering() {
        let mut damper = Damper::default();
        damper.apply(Verdict::new(State::Down, sql_error()), 3);
        let held = damper.apply(Verdict::new(State::Up(100), Reason::None), 3);
        assert_eq!(
            held.verdict.agent_line(),
            "down #recovering 1/3: now healthy\n"
        );
        assert_eq!(
            held.recovering,
            Some(Recovery {
                polls: 1,
                needed: 3,
                towards: State::Up(100)
            })
        );
        let held = damper.apply(Verdict::new(State::Up(90), lag_reason(3.0)), 3);
        assert_eq!(
            held.verdict.agent_line(),
            "down #recovering 2/3: now lag 3.0s\n"
        );
        // The window now holds down-free targets: up at the worst of them, 90%.
        let partly = damper.apply(Verdict::new(State::Up(100), Reason::None), 3);
        assert_eq!(
            partly.verdict.agent_line(),
            "up ready 90% #recovering 1/3: now healthy\n"
        );
        damper.apply(Verdict::new(State::Up(100), Reason::None), 3);
        let up = damper.apply(Verdict::new(State::Up(100), Reason::None), 3);
        assert_eq!(up.verdict.agent_line(), "up ready 100%\n");
        assert_eq!(up.recovering, None);
    }

    #[test]
    fn equal_state_updates_the_reason_at_once() {
        let mut damper = Damper::default();
        damper.apply(
            Verdict::new(
                State::Down,
                Reason::Unreachable {
                    kind: ErrorKind::Unreachable,
                    phrase: "mysql unreachable: connection refused".into(),
                },
            ),
            3,
        );
        let next = damper.apply(Verdict::new(State::Down, sql_error()), 3);
        assert_eq!(next.verdict.reason, sql_error());
        assert_eq!(next.recovering, None);
    }

    fn up(weight: u8, reason: Reason) -> Decision {
        Decision {
            verdict: Verdict::new(State::Up(weight), reason),
            recovering: None,
            warming: None,
        }
    }

    fn ramping(seconds: u64) -> Policy {
        Policy {
            ramp_up: Duration::from_secs(seconds),
            ..Policy::default()
        }
    }

    #[test]
    fn after_a_recovery_the_weight_climbs_from_min_weight_over_ramp_up() {
        let policy = ramping(30);
        let mut ramp = Ramp::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let long = Some(Duration::from_secs(86400));
        // Serving from the start: no ramp.
        assert_eq!(
            ramp.apply(up(100, Reason::None), true, at(0), long, &policy),
            up(100, Reason::None)
        );
        let down = Decision {
            verdict: Verdict::new(State::Down, sql_error()),
            ..up(100, Reason::None)
        };
        assert_eq!(ramp.apply(down.clone(), true, at(1), long, &policy), down);
        let lines: Vec<String> = [2, 8, 14, 32, 33]
            .map(|s| {
                ramp.apply(up(100, Reason::None), true, at(s), long, &policy)
                    .verdict
                    .agent_line()
            })
            .into_iter()
            .collect();
        assert_eq!(
            lines,
            [
                "up ready 10% #warming up 0s/30s\n",
                "up ready 28% #warming up 6s/30s\n",
                "up ready 46% #warming up 12s/30s\n",
                "up ready 100%\n",
                "up ready 100%\n",
            ]
        );
    }

    #[test]
    fn lag_and_load_only_lower_a_warming_weight_and_a_worse_verdict_ends_the_ramp() {
        let policy = ramping(10);
        let mut ramp = Ramp::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        ramp.apply(up(100, Reason::None), false, at(0), None, &policy); // in maintenance
        let first = ramp.apply(up(100, Reason::None), true, at(0), None, &policy);
        assert_eq!(
            first.verdict.state,
            State::Up(10),
            "maintenance off starts it"
        );
        let lagging = ramp.apply(up(20, lag_reason(20.0)), true, at(5), None, &policy);
        assert_eq!(
            lagging.verdict,
            Verdict::new(State::Up(20), lag_reason(20.0))
        );
        assert_eq!(lagging.warming.map(|w| w.ceiling), Some(55));
        let capped = ramp.apply(up(90, lag_reason(3.0)), true, at(5), None, &policy);
        assert_eq!(
            capped.verdict.agent_line(),
            "up ready 55% #warming up 5s/10s; lag 3.0s\n"
        );
        let drained = Decision {
            verdict: Verdict::new(State::Drain, lag_reason(70.0)),
            ..up(0, Reason::None)
        };
        ramp.apply(drained, true, at(6), None, &policy);
        let again = ramp.apply(up(100, Reason::None), true, at(7), None, &policy);
        assert_eq!(
            again.verdict.state,
            State::Up(10),
            "the next recovery starts over"
        );
    }

    #[test]
    fn a_freshly_started_server_warms_up_by_its_own_uptime() {
        let policy = ramping(60);
        let mut ramp = Ramp::default();
        let now = Instant::now();
        let fresh = ramp.apply(
            up(100, Reason::None),
            true,
            now,
            Some(Duration::from_secs(30)),
            &policy,
        );
        assert_eq!(
            fresh.verdict.agent_line(),
            "up ready 55% #warming up 30s/60s\n"
        );
        let warm = ramp.apply(
            up(100, Reason::None),
            true,
            now,
            Some(Duration::from_secs(60)),
            &policy,
        );
        assert_eq!(warm, up(100, Reason::None));
        let off = Policy::default();
        let ignored = ramp.apply(up(100, Reason::None), true, now, Some(Duration::ZERO), &off);
        assert_eq!(ignored, up(100, Reason::None), "ramp_up 0s is off");
    }

    fn member(state: MemberState, reachable: usize, members: usize, queue: u64) -> GroupStatus {
        GroupStatus {
            state,
            primary: false,
            reachable,
            members,
            applier_queue: Some(queue),
        }
    }

    #[test]
    fn a_group_member_serves_only_online_in_the_majority_and_weighs_its_queue() {
        let secondary = |lag: f64| {
            let Health::Replica { lag, .. } = replica(lag) else {
                unreachable!()
            };
            Health::GroupMember {
                primary: false,
                lag: Some(lag),
            }
        };
        let cases = [
            (member(MemberState::Online, 3, 3, 0), 0.0, "up ready 100%\n"),
            (
                member(MemberState::Recovering, 3, 3, 0),
                0.0,
                "down #group replication member recovering\n",
            ),
            (
                member(MemberState::Offline, 1, 1, 0),
                0.0,
                "down #group replication member offline\n",
            ),
            (
                member(MemberState::Error, 1, 3, 0),
                0.0,
                "down #group replication member in error state\n",
            ),
            (
                member(MemberState::Online, 2, 5, 0),
                0.0,
                "down #group replication minority partition (2 of 5 members reachable)\n",
            ),
            (
                member(MemberState::Online, 2, 4, 0),
                0.0,
                "down #group replication minority partition (2 of 4 members reachable)\n",
            ),
            (member(MemberState::Online, 3, 5, 0), 0.0, "up ready 100%\n"),
            (
                member(MemberState::Online, 3, 3, 12_550),
                0.0,
                "up ready 55% #group replication applier queue 12550\n",
            ),
            (
                member(MemberState::Online, 3, 3, 30_000),
                0.0,
                "up ready 10% #group replication applier queue 30000\n",
            ),
            (
                member(MemberState::Online, 3, 3, 50),
                30.0,
                "up ready 10% #lag 30.0s\n",
            ),
        ];
        for (group, lag, line) in cases {
            let mut a = assessment(secondary(lag));
            a.group = Some(group.clone());
            let verdict = target(&a, None, &policy(), &Rules::default());
            assert_eq!(verdict.agent_line(), line, "{group:?} lag {lag}");
        }
    }

    #[test]
    fn a_member_out_of_the_group_says_so_in_every_pool() {
        // Seen on a real MySQL 9.7 group: after STOP GROUP_REPLICATION the
        // writer pool said `not writable: group replication secondary`.
        let mut a = assessment(Health::GroupMember {
            primary: false,
            lag: None,
        });
        a.group = Some(member(MemberState::Offline, 1, 1, 0));
        for role in [Role::Primary, Role::Replica, Role::Any] {
            let writer = Policy { role, ..policy() };
            let verdict = target(&a, None, &writer, &Rules::default());
            assert_eq!(
                verdict.agent_line(),
                "down #group replication member offline\n",
                "{role:?}"
            );
        }
    }

    #[test]
    fn writer_pools_follow_the_member_role() {
        let primary = Health::GroupMember {
            primary: true,
            lag: None,
        };
        let secondary = Health::GroupMember {
            primary: false,
            lag: None,
        };
        let cases = [
            (&primary, Role::Primary, "up ready 100%\n"),
            (&primary, Role::Any, "up ready 100%\n"),
            (
                &primary,
                Role::Replica,
                "down #not a replica: group replication primary\n",
            ),
            (
                &secondary,
                Role::Primary,
                "down #not writable: group replication secondary\n",
            ),
            (&secondary, Role::Any, "up ready 100%\n"),
            (&secondary, Role::Replica, "up ready 100%\n"),
        ];
        for (health, role, line) in cases {
            let policy = Policy { role, ..policy() };
            assert_eq!(
                health_target(health, &policy).agent_line(),
                line,
                "{health:?} {role:?}"
            );
        }
    }
}
