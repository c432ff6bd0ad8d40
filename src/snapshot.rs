//! What the one writer publishes and every reader reads: one poll's
//! observation, assessment and every pool's verdict and answer, immutable,
//! behind an `Arc` on a `watch` channel. The answer to a request (a pool
//! looked up, failing closed; staleness; maintenance) is worked out here,
//! from the snapshot alone: readers never wait on MySQL nor import the
//! poller.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::answer::{Answer, Reported};
use crate::checks::Checks;
use crate::config::{Config, ErrorText, MAX_POOL_NAME, PoolName, Role, Thresholds, Unnamed};
use crate::health::Assessment;
use crate::history::{Poll, Published, SharedHistory};
use crate::judge::answer_under;
use crate::maintenance::Maintenance;
use crate::policy::{Decision, State, Verdict};
use crate::probe::{ErrorKind, Observation};
use crate::reason::Reason;
use crate::topology::Placed;
use crate::trend::LagTrendNow;

/// When the last successful poll finished, and how long it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollTime {
    pub at: Instant,
    pub wall: SystemTime,
    pub duration: Duration,
}

/// Polls so far, and failed ones by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollCounters {
    pub polls: u64,
    pub errors: BTreeMap<ErrorKind, u64>,
}

/// One pool's verdict, and what HAProxy is told for it.
#[derive(Debug, Clone)]
pub struct PoolVerdict {
    pub name: PoolName,
    pub role: Role,
    /// What this poll alone called for, before flap damping and the warm-up.
    pub target: Verdict,
    pub decision: Decision,
    /// The verdict's answer, or the maintenance switch's while it is on.
    pub answer: Answer,
    pub checks: Arc<Checks>,
}

impl PoolVerdict {
    /// The pool's name in metrics and logs: `default` for the top-level policy.
    pub fn label(&self) -> &str {
        self.name.label()
    }

    /// The same verdict under another maintenance state.
    fn under(&self, maintenance: Option<&Maintenance>) -> PoolVerdict {
        PoolVerdict {
            answer: answer_under(maintenance, &self.decision.verdict),
            ..self.clone()
        }
    }
}

/// Everything one poll concluded, published as a whole.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub observation: Observation,
    pub assessment: Assessment,
    /// The top-level policy: what a check naming no pool gets.
    pub default: PoolVerdict,
    /// Each configured pool, by name.
    pub pools: Vec<PoolVerdict>,
    pub last_success: Option<PollTime>,
    /// How the readers answer, as configured: shared by every snapshot of
    /// one configuration, not part of what was observed.
    pub settings: Arc<ReaderSettings>,
    /// An operator's switch; beats every measurement.
    pub maintenance: Option<Maintenance>,
    pub polls: PollCounters,
    /// Checks that named a pool that does not exist.
    pub unknown_checks: Arc<Checks>,
    /// Every poll and verdict change, for `/history` and `/events` (never
    /// read by the agent).
    pub history: SharedHistory,
    /// Whether the replica is catching up, for the default policy.
    pub trend: Option<LagTrendNow>,
    /// Its cluster and place there, with targets (a sidecar cannot know).
    pub placed: Option<Placed>,
}

/// The configuration the readers (agent, HTTP) answer by: set at start
/// and on every reload, never by a poll.
#[derive(Debug, Clone, PartialEq)]
pub struct ReaderSettings {
    /// `poll.stale_after`: no successful poll for this long is down.
    pub stale_after: Duration,
    /// What is told then, instead of anything better than down.
    pub stale: Answer,
    /// `agent.request_timeout`: how long the agent waits for a pool name,
    /// when pools are configured.
    pub request_timeout: Duration,
    /// `agent.unnamed`: who answers an exchange that names no pool.
    pub unnamed: Unnamed,
    /// `agent.max_connections`.
    pub max_connections: usize,
    /// `http.admin_token_file`: the token the maintenance switch asks for.
    pub admin_token_file: Option<std::path::PathBuf>,
    /// `http.error_text`: whether HTTP answers carry server error texts.
    pub error_text: ErrorText,
    /// `maintenance.state_file`: where the HTTP switch is kept.
    pub state_file: Option<std::path::PathBuf>,
    /// The default policy's lag thresholds, drawn on the page's chart.
    pub thresholds: Thresholds,
}

impl ReaderSettings {
    pub fn of(config: &Config) -> ReaderSettings {
        ReaderSettings {
            stale_after: config.poll.stale_after,
            stale: Answer::of(&Verdict::new(
                State::Down,
                Reason::Stale(config.poll.stale_after),
            )),
            request_timeout: config.agent.request_timeout,
            unnamed: config.agent.unnamed,
            max_connections: config.agent.max_connections,
            admin_token_file: config.http.admin_token_file.clone(),
            error_text: config.http.error_text,
            state_file: config.maintenance.state_file.clone(),
            thresholds: config.policy.thresholds,
        }
    }
}

/// What an agent exchange (or `/health?pool=`) asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked<'a> {
    /// A line naming this pool.
    Pool(&'a str),
    /// No line: none came within `agent.request_timeout`, or the client
    /// closed without one (a backend without `agent-send`), or the request
    /// named none (`/health` without `?pool=`).
    Nothing,
    /// Bytes that cannot be a pool name: not UTF-8, longer than a request
    /// line may be, or a line cut off by the request timeout.
    Garbled,
    /// The default policy, asked for on purpose (a fleet's `TARGET` alone).
    Default,
}

/// Which verdict a request gets.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// The default policy (no pool named, where that is allowed) or the
    /// named, configured pool.
    Found(&'a PoolVerdict),
    /// No pool that exists was named: the strictest pool answers (fail
    /// closed), saying why.
    Strictest(&'a PoolVerdict, Unmatched<'a>),
}

/// Why a request matched no pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched<'a> {
    Unknown(&'a str),
    Unnamed,
    Garbled,
}

impl Unmatched<'_> {
    /// What the answer adds to its reason. An unknown name is echoed only
    /// as far as a pool name may go: the client chose these bytes.
    fn phrase(self) -> String {
        match self {
            Unmatched::Unknown(name) => {
                let name: String = name
                    .chars()
                    .filter(char::is_ascii_graphic)
                    .take(MAX_POOL_NAME)
                    .collect();
                format!("unknown pool {name}")
            }
            Unmatched::Unnamed => "no pool named".to_owned(),
            Unmatched::Garbled => "unreadable pool name".to_owned(),
        }
    }
}

impl<'a> Lookup<'a> {
    pub fn verdict(self) -> &'a PoolVerdict {
        match self {
            Lookup::Found(pool) | Lookup::Strictest(pool, _) => pool,
        }
    }
}

/// How permissive an answer is, for picking the strictest: down, then drain
/// and maint, then up by weight.
fn permissiveness(answer: &Answer) -> (u8, u8) {
    let rank = match answer.reported {
        Reported::Down => 0,
        Reported::Drain | Reported::Maint => 1,
        Reported::Up => 2,
    };
    (rank, answer.weight)
}

impl Snapshot {
    /// Whether pools are configured: then the agent reads a pool name.
    pub fn has_pools(&self) -> bool {
        !self.pools.is_empty()
    }

    /// The default policy, then every configured pool.
    pub fn every_pool(&self) -> impl Iterator<Item = &PoolVerdict> {
        std::iter::once(&self.default).chain(&self.pools)
    }

    /// The verdict for a request. With pools configured, a request that
    /// names no pool that exists is answered by the strictest of them, never
    /// by something more permissive than the pool it was meant for; only a
    /// nameless one under `agent.unnamed: default` gets the default policy.
    pub fn lookup<'a>(&'a self, asked: Asked<'a>) -> Lookup<'a> {
        let unmatched = match asked {
            Asked::Pool("") | Asked::Nothing => Unmatched::Unnamed,
            Asked::Pool(name) => match self.pools.iter().find(|p| p.name.is(name)) {
                Some(found) => return Lookup::Found(found),
                None => Unmatched::Unknown(name),
            },
            Asked::Garbled => Unmatched::Garbled,
            Asked::Default => return Lookup::Found(&self.default),
        };
        let nameless_allowed = self.settings.unnamed == Unnamed::Default || !self.has_pools();
        if unmatched == Unmatched::Unnamed && nameless_allowed {
            return Lookup::Found(&self.default);
        }
        Lookup::Strictest(self.strictest(), unmatched)
    }

    /// The configured pool whose answer is the least permissive (the
    /// default policy when there are no pools).
    fn strictest(&self) -> &PoolVerdict {
        (self.pools.iter())
            .min_by_key(|pool| permissiveness(&pool.answer))
            .unwrap_or(&self.default)
    }

    /// True when `pool`'s verdict would say more than down although no poll
    /// has succeeded for `stale_after`: a wedged poller must not freeze an `up`.
    pub fn is_stale(&self, now: Instant, pool: &PoolVerdict) -> bool {
        pool.decision.verdict.state != State::Down
            && self.last_success.is_none_or(|success| {
                now.saturating_duration_since(success.at) >= self.settings.stale_after
            })
    }

    /// The measured state at `now` (maintenance aside).
    pub fn measured(&self, now: Instant, pool: &PoolVerdict) -> State {
        if self.is_stale(now, pool) {
            State::Down
        } else {
            pool.decision.verdict.state
        }
    }

    /// What HAProxy is told for `pool` at `now`: maintenance first, then
    /// staleness, then the verdict.
    pub fn answer<'a>(&'a self, now: Instant, pool: &'a PoolVerdict) -> &'a Answer {
        if self.maintenance.is_none() && self.is_stale(now, pool) {
            &self.settings.stale
        } else {
            &pool.answer
        }
    }

    /// The answer to a request: when it matched no pool, the strictest
    /// pool's, saying why (maintenance says only itself). Borrowed (no
    /// allocation) for the default policy and every configured pool.
    pub fn answer_to<'a>(&'a self, now: Instant, lookup: Lookup<'a>) -> Cow<'a, Answer> {
        let answer = self.answer(now, lookup.verdict());
        match lookup {
            Lookup::Strictest(_, why) if self.maintenance.is_none() => {
                Cow::Owned(answer.unmatched(why.phrase()))
            }
            _ => Cow::Borrowed(answer),
        }
    }

    /// Answers one agent check from `peer`, counted under the pool asked for.
    pub fn check<'a>(
        &'a self,
        now: Instant,
        lookup: Lookup<'a>,
        peer: Option<IpAddr>,
    ) -> Cow<'a, Answer> {
        let answer = self.answer_to(now, lookup);
        let checks = match lookup {
            Lookup::Found(pool) => &pool.checks,
            Lookup::Strictest(..) => &self.unknown_checks,
        };
        checks.record(answer.reported, peer, now);
        answer
    }

    /// This snapshot as the history records it.
    pub fn as_poll(&self) -> Poll<'_> {
        Poll {
            observation: &self.observation,
            assessment: &self.assessment,
            pools: (self.every_pool())
                .map(|pool| Published {
                    label: pool.label(),
                    target: &pool.target,
                    answer: &pool.answer,
                })
                .collect(),
        }
    }

    /// The same snapshot under another maintenance state.
    pub(crate) fn with_maintenance(&self, maintenance: Option<Maintenance>) -> Snapshot {
        Snapshot {
            default: self.default.under(maintenance.as_ref()),
            pools: self
                .pools
                .iter()
                .map(|pool| pool.under(maintenance.as_ref()))
                .collect(),
            maintenance,
            ..self.clone()
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::config::Policy;
    use crate::health::Broken;
    use crate::health::Health;
    use crate::history::History;
    use crate::judge::{Judge, Moment};
    use crate::maintenance::Source;
    use crate::probe::PollError;
    use crate::reason::Mismatch;
    use crate::reason::tests::lag;

    pub fn pool(name: &str, state: State, reason: Reason) -> PoolVerdict {
        let verdict = Verdict::new(state, reason);
        PoolVerdict {
            name: match name {
                "" => PoolName::Default,
                name => PoolName::Named(name.to_owned()),
            },
            role: Role::Any,
            target: verdict.clone(),
            answer: Answer::of(&verdict),
            decision: Decision {
                verdict,
                recovering: None,
                warming: None,
            },
            checks: Arc::default(),
        }
    }

    /// A snapshot of `pools`, the default policy first.
    pub fn snapshot(mut pools: Vec<PoolVerdict>, last_success: Option<Instant>) -> Snapshot {
        let at = Instant::now();
        let default = pools.remove(0);
        Snapshot {
            observation: Observation {
                at,
                wall: SystemTime::now(),
                duration: Duration::from_millis(1),
                result: Err(PollError::Unreachable("test".into())),
                tls: Default::default(),
            },
            assessment: Assessment::of(Health::Unreachable {
                kind: ErrorKind::Unreachable,
                phrase: "test".into(),
            }),
            default,
            pools,
            last_success: last_success.map(|at| PollTime {
                at,
                wall: SystemTime::now(),
                duration: Duration::from_millis(1),
            }),
            settings: Arc::new(ReaderSettings::of(&Config::default())),
            maintenance: None,
            polls: PollCounters::default(),
            unknown_checks: Arc::default(),
            history: History::shared(Duration::from_secs(60), Duration::from_secs(1)),
            trend: None,
            placed: None,
        }
    }

    fn line(snapshot: &Snapshot, pool: Option<&str>) -> String {
        asked_line(snapshot, pool.map_or(Asked::Nothing, Asked::Pool))
    }

    fn asked_line(snapshot: &Snapshot, asked: Asked) -> String {
        let answer = snapshot.answer_to(Instant::now(), snapshot.lookup(asked));
        answer.line().to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn an_up_verdict_goes_stale_after_stale_after() {
        let snapshot = snapshot(
            vec![pool("", State::Up(100), Reason::None)],
            Some(Instant::now()),
        );
        assert_eq!(line(&snapshot, None), "up ready 100%\n");
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert_eq!(
            snapshot.measured(Instant::now(), &snapshot.default),
            State::Up(100)
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(line(&snapshot, None), "down #no successful poll for 5s\n");
        assert_eq!(
            snapshot.measured(Instant::now(), &snapshot.default),
            State::Down
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_verdict_keeps_its_own_reason_when_stale() {
        let snapshot = snapshot(vec![pool("", State::Down, Reason::None)], None);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!snapshot.is_stale(Instant::now(), &snapshot.default));
        assert_eq!(line(&snapshot, None), "down\n");
    }

    #[tokio::test(start_paused = true)]
    async fn pools_are_looked_up_by_name_and_anything_else_gets_the_strictest_pool() {
        let mut snapshot = snapshot(
            vec![
                pool("", State::Up(100), Reason::None),
                pool("backup", State::Up(40), lag(20.0)),
                pool("writer", State::Down, Reason::Role(Mismatch::Replica)),
            ],
            Some(Instant::now()),
        );
        let cases = [
            (Asked::Pool("writer"), "down #not writable: a replica\n"),
            (Asked::Pool("backup"), "up ready 40% #lag 20.0s\n"),
            (
                Asked::Pool("writter"),
                "down #not writable: a replica; unknown pool writter\n",
            ),
            (
                Asked::Nothing,
                "down #not writable: a replica; no pool named\n",
            ),
            (
                Asked::Pool(""),
                "down #not writable: a replica; no pool named\n",
            ),
            (
                Asked::Garbled,
                "down #not writable: a replica; unreadable pool name\n",
            ),
        ];
        for (asked, expected) in cases {
            assert_eq!(asked_line(&snapshot, asked), expected, "{asked:?}");
        }
        // Every configured pool's line is served without formatting.
        assert!(matches!(
            snapshot.answer_to(Instant::now(), snapshot.lookup(Asked::Pool("writer"))),
            Cow::Borrowed(_)
        ));
        // An operator whose nameless backends want the default says so; a
        // garbled or unknown name still fails closed.
        snapshot.settings = Arc::new(ReaderSettings {
            unnamed: Unnamed::Default,
            ..ReaderSettings::of(&Config::default())
        });
        assert_eq!(asked_line(&snapshot, Asked::Nothing), "up ready 100%\n");
        assert_eq!(
            asked_line(&snapshot, Asked::Garbled),
            "down #not writable: a replica; unreadable pool name\n"
        );
        assert_eq!(
            asked_line(&snapshot, Asked::Pool("nope")),
            "down #not writable: a replica; unknown pool nope\n"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            line(&snapshot, Some("backup")),
            "down #no successful poll for 5s\n"
        );
    }

    #[test]
    fn the_strictest_pool_is_down_then_drained_then_the_lightest() {
        let now = Some(Instant::now());
        let pools = |states: &[State]| {
            let mut all = vec![pool("", State::Up(100), Reason::None)];
            all.extend(
                (states.iter().enumerate()).map(|(i, s)| pool(&format!("p{i}"), *s, Reason::None)),
            );
            all
        };
        for (states, strictest) in [
            (&[State::Up(100), State::Up(30), State::Up(60)][..], "p1"),
            (&[State::Up(1), State::Drain, State::Up(60)], "p1"),
            (&[State::Drain, State::Down, State::Up(60)], "p1"),
            (&[State::Up(100)], "p0"),
        ] {
            let built = snapshot(pools(states), now);
            assert_eq!(built.strictest().label(), strictest, "{states:?}");
        }
        let alone = snapshot(vec![pool("", State::Up(70), Reason::None)], now);
        assert_eq!(
            line(&alone, Some("any")),
            "up ready 70% #unknown pool any\n"
        );
        assert_eq!(line(&alone, None), "up ready 70%\n");
    }

    #[tokio::test(start_paused = true)]
    async fn maintenance_beats_measurements_and_staleness() {
        let sql_error = Reason::Broken(Broken::SqlThreadError {
            errno: 1062,
            channel: String::new(),
        });
        let measured = snapshot(vec![pool("", State::Down, sql_error)], None);
        let switched = measured.with_maintenance(Some(Maintenance::parse(
            "maint kernel upgrade",
            Source::Http,
        )));
        assert_eq!(
            line(&switched, None),
            "up maint #maintenance: kernel upgrade\n"
        );
        assert_eq!(
            line(&switched, Some("any")),
            "up maint #maintenance: kernel upgrade\n"
        );
        let answer = switched.answer(Instant::now(), &switched.default);
        assert_eq!((answer.reported, answer.weight), (Reported::Maint, 0));
        // The measured verdict is still there for /status.
        assert_eq!(
            switched.measured(Instant::now(), &switched.default),
            State::Down
        );
        let cleared = switched.with_maintenance(None);
        assert_eq!(line(&cleared, None), "down #sql thread error 1062\n");
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_counted_by_pool_and_what_was_reported() {
        let snapshot = snapshot(
            vec![
                pool("", State::Up(100), Reason::None),
                pool("main", State::Drain, lag(70.0)),
            ],
            Some(Instant::now()),
        );
        for asked in [
            Asked::Pool("main"),
            Asked::Pool("main"),
            Asked::Pool("nope"),
        ] {
            snapshot.check(Instant::now(), snapshot.lookup(asked), None);
        }
        assert_eq!(snapshot.pools[0].checks.get(Reported::Drain), 2);
        assert_eq!(snapshot.unknown_checks.get(Reported::Drain), 1);
    }

    #[test]
    fn metrics_export_every_poll_error_kind_and_status_counts_them() {
        use crate::http::{Audience, Status, metrics};
        let now = Instant::now();
        let mut built = snapshot(vec![pool("", State::Up(100), Reason::None)], Some(now));
        built.polls.errors.insert(ErrorKind::TlsFailed, 2);
        let text = metrics(&built, now);
        for kind in ErrorKind::ALL {
            let series = format!("remora_poll_errors_total{{kind=\"{kind}\"}} ");
            assert!(text.contains(&series), "{series} missing from\n{text}");
        }
        assert!(text.contains("remora_poll_errors_total{kind=\"tls_failed\"} 2\n"));
        let status =
            serde_json::to_value(Status::of(&built, now, Audience::Loopback)).expect("serializes");
        assert_eq!(status["polls"]["errors"]["tls_failed"], 2, "{status}");
    }

    #[test]
    fn unknown_pool_names_are_bounded() {
        let long = "x".repeat(500);
        let answer = Answer::of(&Verdict::healthy()).unmatched(Unmatched::Unknown(&long).phrase());
        assert!(answer.line().len() <= crate::answer::MAX_LINE);
    }

    /// Extreme observations (0, 2^64-1, NULLs everywhere, clocks going
    /// backwards, wall clocks before 1970 or after 9999) go through health,
    /// policy, the warm-up and every rendering without a panic.
    mod extremes {
        use super::*;
        use crate::config::LagConfig;
        use crate::health::Assessor;
        use crate::http::{Audience, Status, metrics};
        use crate::probe::{ChannelStatus, HeartbeatRead, ServerStatus, ThreadError, ThreadState};
        use proptest::prelude::*;

        fn number() -> impl Strategy<Value = Option<u64>> {
            prop_oneof![
                Just(None),
                Just(Some(0)),
                Just(Some(u64::MAX)),
                Just(Some(u64::MAX / 2)),
                (0u64..1_000_000).prop_map(Some),
                any::<u64>().prop_map(Some),
            ]
        }

        fn thread() -> impl Strategy<Value = ThreadState> {
            prop_oneof![
                3 => Just(ThreadState::Yes),
                1 => Just(ThreadState::No),
                1 => Just(ThreadState::Connecting),
                1 => Just(ThreadState::Unknown),
            ]
        }

        prop_compose! {
            fn channel()(
                name in prop_oneof![4 => Just(String::new()), 1 => "[a-z]{1,8}"],
                io in thread(),
                sql in thread(),
                seconds_behind in number(),
                sql_delay in number(),
                errno in prop_oneof![Just(None), any::<u32>().prop_map(Some)],
                position in number(),
            ) -> ChannelStatus {
                ChannelStatus {
                    name,
                    source_host: None,
                    io_thread: io,
                    sql_thread: sql,
                    seconds_behind,
                    sql_delay,
                    io_error: errno.map(|errno| ThreadError { errno, message: "x".repeat(600) }),
                    sql_error: errno.map(|errno| ThreadError { errno, message: String::new() }),
                    exec_position: position.map(|pos| ("binlog.000001".to_owned(), pos)),
                    ..ChannelStatus::default()
                }
            }
        }

        prop_compose! {
            /// One poll: its channels, the heartbeat's age in microseconds,
            /// the server's uptime, how far the clock moved (negative:
            /// backwards) and the wall clock, in seconds from 1970.
            fn poll()(
                channels in prop::collection::vec(channel(), 0..=2),
                heartbeat in number(),
                uptime in number(),
                step_ms in any::<i32>(),
                wall in prop_oneof![Just(i64::MIN), Just(-1i64), Just(0i64), Just(253_402_300_800i64), Just(i64::MAX), any::<i64>()],
                failed in any::<bool>(),
            ) -> (Vec<ChannelStatus>, Option<u64>, Option<u64>, i32, i64, bool) {
                (channels, heartbeat, uptime, step_ms, wall, failed)
            }
        }

        fn wall_clock(seconds: i64) -> SystemTime {
            let offset = Duration::from_secs(seconds.unsigned_abs());
            let epoch = std::time::UNIX_EPOCH;
            let moved = if seconds < 0 {
                epoch.checked_sub(offset)
            } else {
                epoch.checked_add(offset)
            };
            moved.unwrap_or(epoch)
        }

        proptest! {
            // Seeds of past failures live beside this file (src/proptest-regressions),
            // not at the top of the repository.
            #![proptest_config(ProptestConfig {
                failure_persistence: Some(Box::new(
                    prop::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
                )),
                ..ProptestConfig::default()
            })]
            #[test]
            fn no_observation_panics_anything(polls in prop::collection::vec(poll(), 1..12)) {
                let config = Config {
                    policy: Policy { ramp_up: Duration::from_secs(30), ..Policy::default() },
                    lag: LagConfig { subtract_sql_delay: true, ..LagConfig::default() },
                    ..Config::default()
                };
                let mut assessor = Assessor::new(&config.lag);
                let mut judge = Judge::new(&config);
                let mut at = Instant::now();
                for (channels, heartbeat, uptime, step_ms, wall, failed) in polls {
                    let step = Duration::from_millis(u64::from(step_ms.unsigned_abs()));
                    at = if step_ms < 0 { at.checked_sub(step) } else { at.checked_add(step) }
                        .unwrap_or(at);
                    let result = if failed {
                        Err(PollError::Unreachable("refused".into()))
                    } else {
                        Ok(ServerStatus {
                            version: "10.11.19-MariaDB".into(),
                            channels,
                            heartbeat: heartbeat.map(|micros| HeartbeatRead::Row {
                                ts: "2026-12-01 00:00:00.000000".into(),
                                age: Duration::from_micros(micros),
                            }),
                            uptime: uptime.map(Duration::from_secs),
                            ..ServerStatus::default()
                        })
                    };
                    let observation = Observation {
                        at,
                        wall: wall_clock(wall),
                        duration: Duration::from_millis(1),
                        result,
                        tls: Default::default(),
                    };
                    let assessment = assessor.assess(&observation, None);
                    let moment = Moment { at, uptime: uptime.map(Duration::from_secs), maintenance: None, place: None };
                    let judged = judge.judge(&assessment, moment).pools.remove(0);
                    let decision = judged.decision;
                    let line = judged.answer.line().to_owned();
                    prop_assert!(line.len() <= crate::answer::MAX_LINE && line.ends_with('\n'), "{line:?}");
                    let mut built = snapshot(vec![pool("", State::Up(100), Reason::None)], Some(at));
                    built.default.answer = Answer::of(&decision.verdict);
                    built.default.decision = decision;
                    built.observation = observation;
                    built.assessment = assessment;
                    let later = at.checked_add(Duration::from_secs(3600)).unwrap_or(at);
                    for now in [at, later] {
                        let _ = serde_json::to_string(&Status::of(&built, now, Audience::Loopback));
                        let _ = serde_json::to_string(&Status::of(&built, now, Audience::Remote));
                        let _ = metrics(&built, now);
                        let _ = built.answer_to(now, built.lookup(Asked::Pool("nope")));
                    }
                }
            }
        }
    }
}
