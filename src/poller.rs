//! The one writer. Polls MySQL once per interval, whatever the check rate,
//! turns each observation into a verdict and publishes an immutable
//! [`Snapshot`] on a `watch` channel. Readers (agent, HTTP) clone the `Arc`
//! and never wait on MySQL.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use log::{debug, info, trace, warn};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MAX_POOL_NAME, Policy, Role, Secret, show};
use crate::health::{Health, LagMemory};
use crate::policy::{self, Damper, Decision, State, Verdict};
use crate::probe::{Observation, Probe};

/// When the last successful poll finished, and how long it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollTime {
    pub at: Instant,
    pub wall: SystemTime,
    pub duration: Duration,
}

/// One pool's verdict. The default policy is the pool named `""`.
#[derive(Debug)]
pub struct PoolVerdict {
    pub name: String,
    pub role: Role,
    pub decision: Decision,
    /// The agent reply, formatted once here rather than once per check.
    line: String,
}

/// Everything one poll concluded, published as a whole.
#[derive(Debug)]
pub struct Snapshot {
    pub observation: Observation,
    pub health: Health,
    /// The default policy first, then each configured pool by name.
    pub pools: Vec<PoolVerdict>,
    pub last_success: Option<PollTime>,
    pub stale_after: Duration,
    stale_line: String,
}

/// Which verdict a request gets.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// The default policy (no pool named) or the named, configured pool.
    Found(&'a PoolVerdict),
    /// A name no pool has: the default policy answers, saying so.
    Unknown(&'a PoolVerdict, &'a str),
}

impl Lookup<'_> {
    pub fn verdict(&self) -> &PoolVerdict {
        match self {
            Lookup::Found(pool) | Lookup::Unknown(pool, _) => pool,
        }
    }
}

impl Snapshot {
    fn new(
        observation: Observation,
        health: Health,
        pools: Vec<PoolVerdict>,
        last_success: Option<PollTime>,
        stale_after: Duration,
    ) -> Snapshot {
        let stale_line = Verdict::new(
            State::Down,
            format!("no successful poll for {}", show(stale_after)),
        )
        .agent_line();
        Snapshot {
            observation,
            health,
            pools,
            last_success,
            stale_after,
            stale_line,
        }
    }

    /// The default policy's verdict.
    pub fn default_pool(&self) -> &PoolVerdict {
        &self.pools[0]
    }

    /// The verdict for a request naming `pool` (`None` or `""`: the default).
    pub fn lookup<'a>(&'a self, pool: Option<&'a str>) -> Lookup<'a> {
        match pool.filter(|name| !name.is_empty()) {
            None => Lookup::Found(self.default_pool()),
            Some(name) => match self.pools.iter().find(|p| p.name == name) {
                Some(found) => Lookup::Found(found),
                None => Lookup::Unknown(self.default_pool(), name),
            },
        }
    }

    /// True when `pool`'s verdict would say more than down although no poll
    /// has succeeded for `stale_after`: a wedged poller must not freeze an `up`.
    pub fn is_stale(&self, now: Instant, pool: &PoolVerdict) -> bool {
        pool.decision.verdict.state != State::Down
            && self
                .last_success
                .is_none_or(|success| now.saturating_duration_since(success.at) >= self.stale_after)
    }

    /// The state to report at `now`.
    pub fn state(&self, now: Instant, pool: &PoolVerdict) -> State {
        if self.is_stale(now, pool) {
            State::Down
        } else {
            pool.decision.verdict.state
        }
    }

    /// The agent reply at `now`, newline included. Borrowed (no allocation)
    /// for the default policy and every configured pool.
    pub fn agent_line<'a>(&'a self, now: Instant, lookup: Lookup<'a>) -> Cow<'a, str> {
        let pool = lookup.verdict();
        if self.is_stale(now, pool) {
            return Cow::Borrowed(&self.stale_line);
        }
        match lookup {
            Lookup::Found(pool) => Cow::Borrowed(&pool.line),
            Lookup::Unknown(pool, name) => {
                Cow::Owned(unknown_pool_line(&pool.decision.verdict, name))
            }
        }
    }
}

/// The default verdict, with `unknown pool <name>` added to its reason.
fn unknown_pool_line(verdict: &Verdict, name: &str) -> String {
    let name: String = name.chars().take(MAX_POOL_NAME).collect();
    let reason = if verdict.reason.is_empty() {
        format!("unknown pool {name}")
    } else {
        format!("{}; unknown pool {name}", verdict.reason)
    };
    Verdict::new(verdict.state, reason).agent_line()
}

/// One policy and its flap damper.
#[derive(Debug)]
struct Judge {
    name: String,
    policy: Policy,
    damper: Damper,
}

/// Owns the probe and all history; the only code that produces verdicts.
#[derive(Debug)]
pub struct Poller {
    probe: Probe,
    memory: LagMemory,
    judges: Vec<Judge>,
    interval: Duration,
    stale_after: Duration,
    last_success: Option<PollTime>,
}

impl Poller {
    pub fn new(config: &Config, password: Option<&Secret>) -> Poller {
        Poller {
            probe: Probe::new(&config.mysql, password),
            memory: LagMemory::default(),
            judges: config
                .policies()
                .into_iter()
                .map(|(name, policy)| Judge {
                    name,
                    policy,
                    damper: Damper::default(),
                })
                .collect(),
            interval: config.poll.interval,
            stale_after: config.poll.stale_after,
            last_success: None,
        }
    }

    /// `user@host:port` of the watched server.
    pub fn target(&self) -> &str {
        self.probe.target()
    }

    /// Polls once and decides, for the default policy and every pool.
    /// Bounded by the probe's timeouts.
    pub async fn poll(&mut self) -> Snapshot {
        let observation = self.probe.poll().await;
        if observation.result.is_ok() {
            self.last_success = Some(PollTime {
                at: observation.at,
                wall: observation.wall,
                duration: observation.duration,
            });
        }
        let health = self.memory.assess(&observation);
        let pools: Vec<PoolVerdict> = self
            .judges
            .iter_mut()
            .map(|judge| {
                let target = policy::target(&health, &judge.policy);
                let decision = judge.damper.apply(target, judge.policy.recover_after);
                PoolVerdict {
                    name: judge.name.clone(),
                    role: judge.policy.role,
                    line: decision.verdict.agent_line(),
                    decision,
                }
            })
            .collect();
        debug!(
            "poll took {:?}: {} -> {}",
            observation.duration,
            match &observation.result {
                Ok(status) => format!("{} channel(s)", status.channels.len()),
                Err(err) => err.to_string(),
            },
            pools[0].decision.verdict
        );
        trace!("observation {observation:?}; health {health:?}");
        Snapshot::new(
            observation,
            health,
            pools,
            self.last_success,
            self.stale_after,
        )
    }

    /// Polls every interval and publishes each snapshot until `shutdown`,
    /// then closes the MySQL pool.
    pub async fn run(mut self, publish: watch::Sender<Arc<Snapshot>>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        // A slow poll delays the next one instead of bunching polls up after it.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let snapshot = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    snapshot = self.poll() => snapshot,
                },
            };
            log_transitions(&publish.borrow(), &snapshot);
            publish.send_replace(Arc::new(snapshot));
        }
        self.close().await;
    }

    /// Closes the MySQL pool, waiting at most half a second.
    pub async fn close(self) {
        self.probe.disconnect(Duration::from_millis(500)).await;
    }
}

/// Logs each pool's verdict changes once.
fn log_transitions(old: &Snapshot, new: &Snapshot) {
    for (before, after) in old.pools.iter().zip(&new.pools) {
        log_transition(
            &before.name,
            &before.decision.verdict,
            after,
            &new.observation,
        );
    }
}

/// Logs a verdict change once: a new state or weight, or a down whose kind of
/// reason changed. Lag figures and recovery counts changing are not news.
fn log_transition(pool: &str, old: &Verdict, new: &PoolVerdict, observation: &Observation) {
    let verdict = &new.decision.verdict;
    let news = old.state != verdict.state
        || (verdict.state == State::Down
            && reason_kind(&old.reason) != reason_kind(&verdict.reason));
    if !news {
        return;
    }
    let detail = match &observation.result {
        Err(err) => format!(" ({err})"),
        Ok(_) => String::new(),
    };
    let which = if pool.is_empty() {
        "verdict".to_owned()
    } else {
        format!("pool {pool}:")
    };
    if verdict.state < old.state {
        warn!("{which} {old} -> {verdict}{detail}");
    } else {
        info!("{which} {old} -> {verdict}{detail}");
    }
}

/// The words of a reason before its first figure: `lag 3.1s` and `lag 4.0s`
/// are the same kind, `lag` and `sql thread error` are not.
fn reason_kind(reason: &str) -> &str {
    let end = reason
        .find(|c: char| c.is_ascii_digit() || c == '~')
        .unwrap_or(reason.len());
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::PollError;

    fn pool(name: &str, state: State, reason: &str) -> PoolVerdict {
        let verdict = Verdict::new(state, reason);
        PoolVerdict {
            name: name.into(),
            role: Role::Any,
            line: verdict.agent_line(),
            decision: Decision {
                verdict,
                recovering: None,
            },
        }
    }

    fn snapshot(pools: Vec<PoolVerdict>, last_success: Option<Instant>) -> Snapshot {
        let at = Instant::now();
        Snapshot::new(
            Observation {
                at,
                wall: SystemTime::now(),
                duration: Duration::from_millis(1),
                result: Err(PollError::Unreachable("test".into())),
            },
            Health::Unreachable {
                reason: "test".into(),
            },
            pools,
            last_success.map(|at| PollTime {
                at,
                wall: SystemTime::now(),
                duration: Duration::from_millis(1),
            }),
            Duration::from_secs(5),
        )
    }

    fn line(snapshot: &Snapshot, pool: Option<&str>) -> String {
        snapshot
            .agent_line(Instant::now(), snapshot.lookup(pool))
            .into_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn an_up_verdict_goes_stale_after_stale_after() {
        let snapshot = snapshot(vec![pool("", State::Up(100), "")], Some(Instant::now()));
        assert_eq!(line(&snapshot, None), "up ready 100%\n");
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert_eq!(
            snapshot.state(Instant::now(), snapshot.default_pool()),
            State::Up(100)
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(line(&snapshot, None), "down #no successful poll for 5s\n");
        assert_eq!(
            snapshot.state(Instant::now(), snapshot.default_pool()),
            State::Down
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_verdict_keeps_its_own_reason_when_stale() {
        let snapshot = snapshot(vec![pool("", State::Down, "")], None);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!snapshot.is_stale(Instant::now(), snapshot.default_pool()));
        assert_eq!(line(&snapshot, None), "down\n");
    }

    #[tokio::test(start_paused = true)]
    async fn pools_are_looked_up_by_name_and_unknown_names_get_the_default() {
        let snapshot = snapshot(
            vec![
                pool("", State::Up(40), "lag 20.0s"),
                pool("backup", State::Up(100), ""),
                pool("main", State::Drain, "lag 20.0s"),
            ],
            Some(Instant::now()),
        );
        assert_eq!(line(&snapshot, None), "up ready 40% #lag 20.0s\n");
        assert_eq!(line(&snapshot, Some("")), "up ready 40% #lag 20.0s\n");
        assert_eq!(line(&snapshot, Some("main")), "up drain #lag 20.0s\n");
        assert_eq!(line(&snapshot, Some("backup")), "up ready 100%\n");
        assert_eq!(
            line(&snapshot, Some("mian")),
            "up ready 40% #lag 20.0s; unknown pool mian\n"
        );
        // Every configured pool's line is served without formatting.
        assert!(matches!(
            snapshot.agent_line(Instant::now(), snapshot.lookup(Some("main"))),
            Cow::Borrowed(_)
        ));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            line(&snapshot, Some("backup")),
            "down #no successful poll for 5s\n"
        );
    }

    #[test]
    fn unknown_pool_names_are_bounded() {
        let long = "x".repeat(500);
        let line = unknown_pool_line(&Verdict::new(State::Up(100), ""), &long);
        assert!(line.len() <= crate::policy::MAX_LINE);
    }

    #[test]
    fn reason_kinds() {
        assert_eq!(reason_kind("lag 3.1s"), reason_kind("lag 40.0s"));
        assert_eq!(reason_kind("lag ~3.1s: io thread stopped"), "lag ");
        assert_eq!(reason_kind("sql thread error 1062"), "sql thread error ");
        assert_ne!(
            reason_kind("mysql unreachable: connection refused"),
            reason_kind("mysql connect timeout (1s)")
        );
    }
}
