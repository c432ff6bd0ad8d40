//! Why a verdict is what it is, as data. Each reason is built where it is
//! found (health, policy, the damper, the warm-up, the trend, the answer)
//! and rendered once, by [`Display`](fmt::Display), into the agent line that
//! `/status`, `/events`, the logs and the page all show. What counts as the
//! same kind of reason (for the transition log and `/events`) is read from
//! the type, not from the text.

use std::fmt;
use std::mem::discriminant;
use std::time::Duration;

use crate::health::{Broken, Lag};
use crate::probe::{ClusterStatus, ErrorKind, LocalState, MemberState, RejectQueries};
use crate::topology::Place;

/// What happened, in enough detail to say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Nothing to say: a healthy server at full weight.
    None,
    /// The poll failed: its kind, and the short phrase (errno included).
    Unreachable {
        kind: ErrorKind,
        phrase: String,
    },
    /// Replication is down whatever the lag.
    Broken(Broken),
    /// The server is not what the pool's role asks for.
    Role(Mismatch),
    /// The lag that set the weight and, when it costs weight and is
    /// measured, which way it is going.
    Lag {
        lag: Lag,
        direction: Option<Direction>,
    },
    Galera(GaleraReason),
    Group(GroupReason),
    Load(LoadReason),
    /// Held at a worse state until `needed` polls in a row qualify for
    /// better; `now` is what the latest poll alone would say.
    Recovering {
        polls: u32,
        needed: u32,
        now: Box<Reason>,
    },
    /// The weight is capped while a recovered server warms up; `then` is
    /// the reason the verdict had before the cap.
    Warming {
        elapsed: Duration,
        length: Duration,
        then: Box<Reason>,
    },
    /// No poll has succeeded for `poll.stale_after`.
    Stale(Duration),
    /// The operator's switch: its own words (`maintenance: kernel upgrade`).
    Maintenance(String),
    /// A request that matched no pool got this answer, strictest pool's
    /// reason first, then why (`no pool named`, `unknown pool x`).
    Unmatched {
        then: Box<Reason>,
        why: String,
    },
    /// A check to a remora watching many servers that names none of them.
    Addressed(Addressed),
    /// Its lag alone would take it out, and the pool's `keep_up` keeps it
    /// in: `out` of the pool's `of` members would be out otherwise.
    KeptUp {
        lag: Duration,
        out: usize,
        of: usize,
    },
    /// Its place in its cluster takes it out: another server is the
    /// writer, none can be told to be, or it follows a server that is not
    /// the writer.
    Cluster(Place),
}

/// Why a check to a fleet names no target that is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressed {
    /// `TARGET` not watched here (cut to 64 characters).
    UnknownTarget(String),
    /// No request line: with targets, HAProxy must say `TARGET/POOL`.
    NoTarget,
    /// Bytes that cannot be a target's name.
    Garbled,
}

crate::labelled! {
    /// Where a lag is heading, said while it costs weight.
    pub enum Direction {
        FallingBehind => "falling behind",
        CatchingUp => "catching up",
    }
}

crate::labelled! {
    /// A server that is not what a pool's `role` asks for.
    pub enum Mismatch {
        ReadOnly => "not writable: read_only is on",
        Replica => "not writable: a replica",
        GroupSecondary => "not writable: group replication secondary",
        NotReplica => "not a replica",
        GroupPrimary => "not a replica: group replication primary",
        /// Read-only and replicating from nowhere: its data never changes.
        Standalone => "read-only but not replicating",
    }
}

/// Galera's own reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GaleraReason {
    NotReady,
    Cluster(ClusterStatus),
    Desynced,
    RejectsQueries(RejectQueries),
    Donor,
    NotSynced { state: LocalState, comment: String },
    RecvQueue(u64),
}

/// Group Replication's own reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupReason {
    Member(MemberState),
    Minority { reachable: usize, members: usize },
    ApplierQueue(u64),
}

/// A load limit that cost weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadReason {
    ThreadsRunning(u64),
    Connections { connected: u64, max: u64 },
}

impl Reason {
    pub fn is_none(&self) -> bool {
        matches!(self, Reason::None)
    }

    /// Whether `other` says the same kind of thing: lag 3.1s and lag 40.0s
    /// are alike, a refused connection and a connect timeout are not, nor
    /// are an SQL thread error and an unknown lag. A change of kind in a
    /// down is news for the log and `/events`; a changing figure is not.
    pub fn same_kind(&self, other: &Reason) -> bool {
        match (self, other) {
            (Reason::Unreachable { kind: a, .. }, Reason::Unreachable { kind: b, .. }) => a == b,
            (Reason::Broken(a), Reason::Broken(b)) => a.same_kind(b),
            (Reason::Role(a), Reason::Role(b)) => a == b,
            (Reason::Galera(a), Reason::Galera(b)) => discriminant(a) == discriminant(b),
            (Reason::Group(GroupReason::Member(a)), Reason::Group(GroupReason::Member(b))) => {
                a == b
            }
            (Reason::Group(a), Reason::Group(b)) => discriminant(a) == discriminant(b),
            (Reason::Load(a), Reason::Load(b)) => discriminant(a) == discriminant(b),
            (Reason::Unmatched { then: a, .. }, Reason::Unmatched { then: b, .. }) => {
                a.same_kind(b)
            }
            (a, b) => discriminant(a) == discriminant(b),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::None => Ok(()),
            Reason::Unreachable { phrase, .. } => f.write_str(phrase),
            Reason::Broken(broken) => broken.fmt(f),
            Reason::Role(mismatch) => f.write_str(mismatch.as_str()),
            Reason::Lag { lag, direction } => {
                write!(f, "{lag}")?;
                match direction {
                    Some(direction) => write!(f, "; {direction}"),
                    None => Ok(()),
                }
            }
            Reason::Galera(galera) => galera.fmt(f),
            Reason::Group(group) => group.fmt(f),
            Reason::Load(load) => load.fmt(f),
            Reason::Recovering { polls, needed, now } => {
                write!(f, "recovering {polls}/{needed}: now ")?;
                match now.as_ref() {
                    Reason::None => f.write_str("healthy"),
                    now => now.fmt(f),
                }
            }
            Reason::Warming {
                elapsed,
                length,
                then,
            } => {
                write!(f, "warming up {}s/{}s", elapsed.as_secs(), length.as_secs())?;
                match then.as_ref() {
                    Reason::None => Ok(()),
                    then => write!(f, "; {then}"),
                }
            }
            Reason::Stale(after) => {
                write!(f, "no successful poll for {}", crate::config::show(*after))
            }
            Reason::Maintenance(text) => f.write_str(text),
            Reason::Unmatched { then, why } => match then.as_ref() {
                Reason::None => f.write_str(why),
                then => write!(f, "{then}; {why}"),
            },
            Reason::Addressed(Addressed::UnknownTarget(name)) => {
                write!(f, "unknown target {name}")
            }
            Reason::Addressed(Addressed::NoTarget) => f.write_str("no target named"),
            Reason::Addressed(Addressed::Garbled) => f.write_str("unreadable target name"),
            Reason::Cluster(place) => place.fmt(f),
            Reason::KeptUp { lag, out, of } => write!(
                f,
                "kept up: lag {:.1}s ({out} of {of} would be out)",
                lag.as_secs_f64()
            ),
        }
    }
}

impl fmt::Display for GaleraReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GaleraReason::NotReady => f.write_str("galera not ready (wsrep_ready OFF)"),
            GaleraReason::Cluster(status) => write!(f, "galera cluster status {status}"),
            GaleraReason::Desynced => f.write_str("galera desynced (wsrep_desync ON)"),
            GaleraReason::RejectsQueries(how) => write!(f, "galera rejects queries ({how})"),
            GaleraReason::Donor => f.write_str("galera donor"),
            GaleraReason::NotSynced { state, comment } => {
                write!(f, "galera not synced (state {} {comment})", state.number())
            }
            GaleraReason::RecvQueue(queue) => write!(f, "galera recv queue {queue}"),
        }
    }
}

impl fmt::Display for GroupReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupReason::Member(MemberState::Recovering) => {
                f.write_str("group replication member recovering")
            }
            GroupReason::Member(MemberState::Offline) => {
                f.write_str("group replication member offline")
            }
            GroupReason::Member(MemberState::Error) => {
                f.write_str("group replication member in error state")
            }
            GroupReason::Member(state) => write!(f, "group replication member state {state}"),
            GroupReason::Minority { reachable, members } => write!(
                f,
                "group replication minority partition ({reachable} of {members} members reachable)"
            ),
            GroupReason::ApplierQueue(queue) => {
                write!(f, "group replication applier queue {queue}")
            }
        }
    }
}

impl fmt::Display for LoadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadReason::ThreadsRunning(running) => write!(f, "load: {running} threads running"),
            LoadReason::Connections { connected, max } => {
                write!(f, "load: {connected} of {max} connections")
            }
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::health::LagOrigin;

    /// A measured replica-status lag of `seconds`.
    pub fn lag(seconds: f64) -> Reason {
        lag_of(seconds, None)
    }

    /// A lag of `seconds` that is estimated (`why`) or measured (`None`).
    pub fn lag_of(seconds: f64, estimated: Option<&str>) -> Reason {
        Reason::Lag {
            lag: Lag {
                value: Duration::from_secs_f64(seconds),
                channel: String::new(),
                estimated: estimated.map(str::to_owned),
                origin: LagOrigin::ReplicaStatus,
                fallback: None,
            },
            direction: None,
        }
    }

    fn unreachable(kind: ErrorKind, phrase: &str) -> Reason {
        Reason::Unreachable {
            kind,
            phrase: phrase.to_owned(),
        }
    }

    #[test]
    fn each_reason_says_what_happened() {
        let mut falling = lag(16.0);
        if let Reason::Lag { direction, .. } = &mut falling {
            *direction = Some(Direction::FallingBehind);
        }
        let cases = [
            (Reason::None, ""),
            (lag(14.2), "lag 14.2s"),
            (falling, "lag 16.0s; falling behind"),
            (
                lag_of(3.0, Some("io thread stopped")),
                "lag ~3.0s: io thread stopped",
            ),
            (
                Reason::Broken(Broken::SqlThreadError {
                    errno: 1062,
                    channel: "b".into(),
                }),
                "sql thread error 1062 on b",
            ),
            (
                Reason::Role(Mismatch::ReadOnly),
                "not writable: read_only is on",
            ),
            (
                Reason::Galera(GaleraReason::NotSynced {
                    state: LocalState::Joining,
                    comment: "Joining".into(),
                }),
                "galera not synced (state 1 Joining)",
            ),
            (
                Reason::Group(GroupReason::Minority {
                    reachable: 2,
                    members: 5,
                }),
                "group replication minority partition (2 of 5 members reachable)",
            ),
            (
                Reason::Load(LoadReason::Connections {
                    connected: 90,
                    max: 100,
                }),
                "load: 90 of 100 connections",
            ),
            (
                Reason::Recovering {
                    polls: 1,
                    needed: 3,
                    now: Box::new(Reason::None),
                },
                "recovering 1/3: now healthy",
            ),
            (
                Reason::Warming {
                    elapsed: Duration::from_secs(5),
                    length: Duration::from_secs(60),
                    then: Box::new(lag(3.0)),
                },
                "warming up 5s/60s; lag 3.0s",
            ),
            (
                Reason::Stale(Duration::from_secs(5)),
                "no successful poll for 5s",
            ),
            (
                Reason::Unmatched {
                    then: Box::new(Reason::None),
                    why: "no pool named".into(),
                },
                "no pool named",
            ),
        ];
        for (reason, said) in cases {
            assert_eq!(reason.to_string(), said, "{reason:?}");
        }
    }

    #[test]
    fn a_changing_figure_is_the_same_kind_and_a_changing_cause_is_not() {
        assert!(lag(3.1).same_kind(&lag_of(40.0, Some("io thread stopped"))));
        let sql = |errno| {
            Reason::Broken(Broken::SqlThreadError {
                errno,
                channel: String::new(),
            })
        };
        assert!(sql(1062).same_kind(&sql(1146)));
        let unknown = Reason::Broken(Broken::LagUnknown {
            channel: String::new(),
            why: Some("io thread stopped".into()),
        });
        assert!(!sql(1062).same_kind(&unknown));
        assert!(
            !unreachable(
                ErrorKind::Unreachable,
                "mysql unreachable: connection refused"
            )
            .same_kind(&unreachable(
                ErrorKind::ConnectTimeout,
                "mysql connect timeout (1s)"
            ))
        );
        let member = |state| Reason::Group(GroupReason::Member(state));
        assert!(!member(MemberState::Offline).same_kind(&member(MemberState::Error)));
        assert!(!Reason::None.same_kind(&lag(3.0)));
    }
}
