//! The decision pipeline, in one place: what every pool answers for one
//! assessment.
//!
//! Assessment (and the target's place in its cluster) → each pool's target
//! → flap damping → warm-up → the lag's direction → what HAProxy is told
//! (the operator's switch first). The
//! poller calls it once per poll, `--replay` once per trace row and the
//! property tests with whatever they generate: the same inputs give the
//! same answer line, reason included, live and offline.

use std::time::Duration;

use tokio::time::Instant;

use crate::answer::Answer;
use crate::config::{Config, Policy, PoolName, Role};
use crate::health::Assessment;
use crate::maintenance::Maintenance;
use crate::policy::{self, Damper, Decision, Ramp, Rules, Verdict};
use crate::topology::Place;
use crate::trend::{LagTrend, LagTrendNow, with_direction};

/// The pipeline's memory: each pool's damper and warm-up, and the lag's
/// recent course.
#[derive(Debug)]
pub struct Judge {
    pools: Vec<PoolJudge>,
    rules: Rules,
    trend: LagTrend,
    /// The default policy's: the trend's way back is measured to it.
    full_weight_below: Duration,
}

/// One pool's policy and memory.
#[derive(Debug)]
struct PoolJudge {
    name: PoolName,
    policy: Policy,
    damper: Damper,
    ramp: Ramp,
}

/// What one poll, besides its assessment, brings to the judge.
#[derive(Debug, Clone, Copy)]
pub struct Moment<'a> {
    pub at: Instant,
    /// The server's uptime, for the warm-up after a restart.
    pub uptime: Option<Duration>,
    /// The operator's switch, if on: it beats every verdict.
    pub maintenance: Option<&'a Maintenance>,
    /// The target's place in its cluster, when it is placed in one.
    pub place: Option<&'a Place>,
}

/// Every pool's outcome of one poll, the default policy first.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The lag's trend, for `/status` and `/metrics`.
    pub trend: Option<LagTrendNow>,
    pub pools: Vec<Judgement>,
}

/// One pool's outcome.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub name: PoolName,
    pub role: Role,
    /// What this poll alone called for, before damping and the warm-up.
    pub target: Verdict,
    pub decision: Decision,
    /// What HAProxy is told: the switch's answer while it is on.
    pub answer: Answer,
}

impl Judge {
    /// A judge for every policy of `config`, with no memory yet.
    pub fn new(config: &Config) -> Judge {
        let mut judge = Judge {
            pools: Vec::new(),
            rules: Rules::of(config),
            trend: LagTrend::default(),
            full_weight_below: config.policy.thresholds.full_weight_below,
        };
        judge.reconfigure(config, true);
        judge
    }

    /// A judge for replaying a trace under `config`: a trace records lag,
    /// not load, so the load rules have nothing to read.
    pub fn for_replay(config: &Config) -> Judge {
        let mut judge = Judge::new(config);
        judge.rules.load = None;
        judge
    }

    /// Takes `config`'s policies, keeping the damper and warm-up of pools
    /// that still exist under the same name; `forget_lag` starts the trend
    /// afresh (another server, another lag source).
    pub fn reconfigure(&mut self, config: &Config, forget_lag: bool) {
        let mut old = std::mem::take(&mut self.pools);
        self.pools = (config.policies().into_iter())
            .map(|(name, policy)| {
                let (damper, ramp) = (old.iter().position(|judge| judge.name == name))
                    .map(|at| {
                        let judge = old.swap_remove(at);
                        (judge.damper, judge.ramp)
                    })
                    .unwrap_or_default();
                PoolJudge {
                    name,
                    policy,
                    damper,
                    ramp,
                }
            })
            .collect();
        self.rules = Rules::of(config);
        if forget_lag {
            self.trend = LagTrend::default();
        }
        self.full_weight_below = config.policy.thresholds.full_weight_below;
    }

    /// Every pool's outcome of one poll.
    pub fn judge(&mut self, assessment: &Assessment, moment: Moment) -> Judged {
        let lag = assessment.health.lag();
        let trend = (self.trend.observe(moment.at, lag))
            .zip(lag)
            .map(|(trend, lag)| LagTrendNow::of(trend, lag, self.full_weight_below));
        let pools = (self.pools.iter_mut())
            .map(|judge| judge.judge(assessment, moment, &self.rules, trend))
            .collect();
        Judged { trend, pools }
    }
}

impl PoolJudge {
    fn judge(
        &mut self,
        assessment: &Assessment,
        moment: Moment,
        rules: &Rules,
        trend: Option<LagTrendNow>,
    ) -> Judgement {
        let policy = &self.policy;
        let target = policy::target(assessment, moment.place, policy, rules);
        let damped = self.damper.apply(target.clone(), policy.recover_after);
        let warming = moment.maintenance.is_none();
        let mut decision = (self.ramp).apply(damped, warming, moment.at, moment.uptime, policy);
        decision.verdict = with_direction(decision.verdict, trend);
        Judgement {
            name: self.name.clone(),
            role: policy.role,
            target,
            answer: answer_under(moment.maintenance, &decision.verdict),
            decision,
        }
    }
}

/// What HAProxy is told for `verdict`: the operator's switch beats it.
pub fn answer_under(maintenance: Option<&Maintenance>, verdict: &Verdict) -> Answer {
    maintenance.map_or_else(|| Answer::of(verdict), Answer::maintenance)
}
