//! The one writer. Polls MySQL once per interval, whatever the check rate,
//! turns each observation into a verdict and publishes an immutable
//! [`Snapshot`] on a `watch` channel. Readers (agent, HTTP) clone the `Arc`
//! and never wait on MySQL.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use log::{debug, info, trace, warn};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Policy, Secret, show};
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

/// Everything one poll concluded, published as a whole.
#[derive(Debug)]
pub struct Snapshot {
    pub observation: Observation,
    pub health: Health,
    pub decision: Decision,
    pub last_success: Option<PollTime>,
    pub stale_after: Duration,
    /// The agent reply, formatted once here rather than once per check.
    line: String,
    stale_line: String,
}

impl Snapshot {
    fn new(
        observation: Observation,
        health: Health,
        decision: Decision,
        last_success: Option<PollTime>,
        stale_after: Duration,
    ) -> Snapshot {
        let line = decision.verdict.agent_line();
        let stale_line = Verdict::new(
            State::Down,
            format!("no successful poll for {}", show(stale_after)),
        )
        .agent_line();
        Snapshot {
            observation,
            health,
            decision,
            last_success,
            stale_after,
            line,
            stale_line,
        }
    }

    /// True when the verdict would say more than down although no poll has
    /// succeeded for `stale_after`: a wedged poller must not freeze an `up`.
    pub fn is_stale(&self, now: Instant) -> bool {
        self.decision.verdict.state != State::Down
            && self
                .last_success
                .is_none_or(|success| now.saturating_duration_since(success.at) >= self.stale_after)
    }

    /// The state to report at `now`.
    pub fn state(&self, now: Instant) -> State {
        if self.is_stale(now) {
            State::Down
        } else {
            self.decision.verdict.state
        }
    }

    /// The agent reply at `now`, newline included.
    pub fn agent_line(&self, now: Instant) -> &str {
        if self.is_stale(now) {
            &self.stale_line
        } else {
            &self.line
        }
    }
}

/// Owns the probe and all history; the only code that produces verdicts.
#[derive(Debug)]
pub struct Poller {
    probe: Probe,
    memory: LagMemory,
    policy: Policy,
    damper: Damper,
    interval: Duration,
    stale_after: Duration,
    last_success: Option<PollTime>,
}

impl Poller {
    pub fn new(config: &Config, password: Option<&Secret>) -> Poller {
        Poller {
            probe: Probe::new(&config.mysql, password),
            memory: LagMemory::default(),
            policy: config.policy.clone(),
            damper: Damper::default(),
            interval: config.poll.interval,
            stale_after: config.poll.stale_after,
            last_success: None,
        }
    }

    /// `user@host:port` of the watched server.
    pub fn target(&self) -> &str {
        self.probe.target()
    }

    /// Polls once and decides. Bounded by the probe's timeouts.
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
        let target = policy::target(&health, &self.policy);
        let decision = self.damper.apply(target, self.policy.recover_after);
        debug!(
            "poll took {:?}: {} -> {}",
            observation.duration,
            match &observation.result {
                Ok(status) => format!("{} channel(s)", status.channels.len()),
                Err(err) => err.to_string(),
            },
            decision.verdict
        );
        trace!("observation {observation:?}; health {health:?}");
        Snapshot::new(
            observation,
            health,
            decision,
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
            log_transition(&publish.borrow().decision.verdict, &snapshot);
            publish.send_replace(Arc::new(snapshot));
        }
        self.close().await;
    }

    /// Closes the MySQL pool, waiting at most half a second.
    pub async fn close(self) {
        self.probe.disconnect(Duration::from_millis(500)).await;
    }
}

/// Logs a verdict change once: a new state or weight, or a down whose kind of
/// reason changed. Lag figures and recovery counts changing are not news.
pub fn log_transition(old: &Verdict, new: &Snapshot) {
    let verdict = &new.decision.verdict;
    let news = old.state != verdict.state
        || (verdict.state == State::Down
            && reason_kind(&old.reason) != reason_kind(&verdict.reason));
    if !news {
        return;
    }
    let detail = match &new.observation.result {
        Err(err) => format!(" ({err})"),
        Ok(_) => String::new(),
    };
    if verdict.state < old.state {
        warn!("verdict {old} -> {verdict}{detail}");
    } else {
        info!("verdict {old} -> {verdict}{detail}");
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

    fn snapshot(state: State, last_success: Option<Instant>) -> Snapshot {
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
            Decision {
                verdict: Verdict::new(state, ""),
                recovering: None,
            },
            last_success.map(|at| PollTime {
                at,
                wall: SystemTime::now(),
                duration: Duration::from_millis(1),
            }),
            Duration::from_secs(5),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn an_up_verdict_goes_stale_after_stale_after() {
        let snapshot = snapshot(State::Up(100), Some(Instant::now()));
        assert_eq!(snapshot.agent_line(Instant::now()), "up ready 100%\n");
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert_eq!(snapshot.state(Instant::now()), State::Up(100));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            snapshot.agent_line(Instant::now()),
            "down #no successful poll for 5s\n"
        );
        assert_eq!(snapshot.state(Instant::now()), State::Down);
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_verdict_keeps_its_own_reason_when_stale() {
        let snapshot = snapshot(State::Down, None);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!snapshot.is_stale(Instant::now()));
        assert_eq!(snapshot.agent_line(Instant::now()), "down\n");
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
