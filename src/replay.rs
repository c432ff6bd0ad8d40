//! `remora --config FILE --replay TRACE [--svg OUT.svg]`: the pure policy
//! code (targets, flap damping, the warm-up) run offline over a trace under
//! a configuration, to try new thresholds against last night's incident.
//!
//! A trace is the CSV `GET /history?format=csv` exports, as it is, or one
//! written by hand: a header with `t` (seconds from the start) and `lag`
//! (seconds; empty: unknown), then optionally the export's other input
//! columns (`source`, `estimated`, `io_thread`, `sql_thread`, `errno`,
//! `error`). Any other column is ignored. What the trace does not hold
//! (Galera state, load, the server's uptime) plays no part in a replay.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use crate::answer::{Answer, Reported};
use crate::config::Config;
use crate::health::{Assessment, Broken, Health, Lag, LagFrom, LagOrigin};
use crate::history::trace::Row;
use crate::history::{Event, Inputs, PoolSample, Sample, StateSample};
use crate::judge::{Judge, Moment};
use crate::probe::ThreadState;

/// What a replay decided.
#[derive(Debug, Clone)]
pub struct Replay {
    /// `default`, then each pool.
    pub pools: Vec<String>,
    /// One per trace row, as `/history` holds them.
    pub samples: Vec<Sample>,
    /// Published-verdict changes, oldest first.
    pub changes: Vec<Event>,
}

/// Runs every policy of `config` over `rows`.
pub fn run(config: &Config, rows: &[Row]) -> Replay {
    let mut judge = Judge::for_replay(config);
    let start = Instant::now();
    let pools: Vec<String> = (config.policies().iter())
        .map(|(name, _)| name.label().to_owned())
        .collect();
    let mut samples = Vec::with_capacity(rows.len());
    let mut changes = Vec::new();
    let mut last: Vec<Option<Answer>> = vec![None; pools.len()];
    for row in rows {
        let moment = Moment {
            at: start + Duration::from_secs_f64(row.t),
            uptime: None,
            maintenance: None,
            place: None,
        };
        let judged = judge.judge(&assessment_of(&row.inputs), moment);
        let at_ms = (row.t * 1e3) as u64;
        let mut pool_samples = Vec::with_capacity(pools.len());
        for (i, judgement) in judged.pools.into_iter().enumerate() {
            let published = judgement.answer;
            if let Some(before) = &last[i]
                && before.is_news(&published)
            {
                changes.push(Event {
                    at_ms,
                    pool: pools[i].clone(),
                    from: before.text().to_owned(),
                    to: published.text().to_owned(),
                    reason: published.reason.clone(),
                    inputs: row.inputs.clone(),
                });
            }
            pool_samples.push(PoolSample {
                target: StateSample::of(&Answer::of(&judgement.target)),
                published: StateSample::of(&published),
                reason: published.reason.as_str().into(),
            });
            last[i] = Some(published);
        }
        samples.push(Sample {
            at_ms,
            mono_ms: at_ms,
            inputs: row.inputs.clone(),
            pools: pool_samples.into_boxed_slice(),
        });
    }
    Replay {
        pools,
        samples,
        changes,
    }
}

/// What a trace row says of the server, for the policy code.
fn assessment_of(inputs: &Inputs) -> Assessment {
    let health = if let Some(kind) = inputs.error {
        Health::Unreachable {
            kind,
            phrase: format!("poll failed ({kind})"),
        }
    } else if inputs.source == Some(LagFrom::Primary) {
        Health::Primary { read_only: false }
    } else if let Some(lag) = inputs.lag {
        Health::Replica {
            lag: Lag {
                value: Duration::from_secs_f64(lag),
                channel: String::new(),
                estimated: inputs
                    .estimated
                    .then(|| "estimated when recorded".to_owned()),
                origin: (inputs.source)
                    .and_then(LagFrom::origin)
                    .unwrap_or(LagOrigin::ReplicaStatus),
                fallback: None,
            },
            read_only: true,
        }
    } else {
        let reason = match (inputs.errno, inputs.sql_thread) {
            (Some(errno), Some(state)) if state != ThreadState::Yes => Broken::SqlThreadError {
                errno,
                channel: String::new(),
            },
            (None, Some(ThreadState::No)) => Broken::SqlThreadStopped {
                channel: String::new(),
            },
            _ => Broken::LagUnknown {
                channel: String::new(),
                why: None,
            },
        };
        Health::Broken {
            reason,
            read_only: true,
        }
    };
    Assessment::of(health)
}

impl Replay {
    /// Per pool, each published-verdict change, then a summary: time spent
    /// up, drain and down, the transitions, the lowest weight.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for (i, pool) in self.pools.iter().enumerate() {
            let _ = writeln!(out, "pool {pool}:");
            let first = self.samples.first().map(|s| &s.pools[i]);
            if let Some(first) = first {
                let _ = writeln!(
                    out,
                    "  {:>9.3}s  {}",
                    0.0,
                    describe(first.published, &first.reason)
                );
            }
            for change in self.changes.iter().filter(|c| &c.pool == pool) {
                let _ = writeln!(
                    out,
                    "  {:>9.3}s  {} -> {}",
                    change.at_ms as f64 / 1e3,
                    change.from,
                    change.to
                );
            }
        }
        out.push_str("\nsummary:\n");
        let _ = writeln!(
            out,
            "  {:<16} {:>10} {:>10} {:>10} {:>12} {:>14}",
            "pool", "up", "drain", "down", "transitions", "lowest weight"
        );
        for (i, pool) in self.pools.iter().enumerate() {
            let summary = self.summary(i);
            let _ = writeln!(
                out,
                "  {:<16} {:>9.1}s {:>9.1}s {:>9.1}s {:>12} {:>13}%",
                pool,
                summary.up,
                summary.drain,
                summary.down,
                self.changes.iter().filter(|c| &c.pool == pool).count(),
                summary.lowest_weight
            );
        }
        out
    }

    /// Seconds in each state for pool `i` (each row lasts until the next),
    /// and its lowest published weight.
    pub fn summary(&self, i: usize) -> Summary {
        let mut summary = Summary {
            up: 0.0,
            drain: 0.0,
            down: 0.0,
            lowest_weight: 100,
        };
        for pair in self.samples.windows(2) {
            let held = (pair[1].at_ms - pair[0].at_ms) as f64 / 1e3;
            match pair[0].pools[i].published.state {
                Reported::Up => summary.up += held,
                Reported::Drain | Reported::Maint => summary.drain += held,
                Reported::Down => summary.down += held,
            }
        }
        summary.lowest_weight = (self.samples.iter())
            .map(|s| s.pools[i].published.weight)
            .min()
            .unwrap_or(100);
        summary
    }
}

/// Time spent per state, and the lowest weight, of one pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub up: f64,
    pub drain: f64,
    pub down: f64,
    pub lowest_weight: u8,
}

fn describe(state: StateSample, reason: &str) -> String {
    let head = match state.state {
        Reported::Up => format!("up ready {}%", state.weight),
        Reported::Drain => "up drain".to_owned(),
        Reported::Maint => "up maint".to_owned(),
        Reported::Down => "down".to_owned(),
    };
    if reason.is_empty() {
        head
    } else {
        format!("{head} #{reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::trace::parse;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml).expect("a valid configuration")
    }

    #[test]
    fn a_hand_written_trace_gives_the_predicted_timeline() {
        // Lag climbs 1 s a second to 8 s, stays, then is gone at once.
        let mut text = String::from("t,lag\n");
        for t in 0..=20 {
            let lag = if t <= 8 {
                t
            } else if t <= 14 {
                8
            } else {
                0
            };
            let _ = writeln!(text, "{t},{lag}");
        }
        let rows = parse(&text).expect("a trace");
        let policy = "policy: {full_weight_below: 2s, min_weight_at: 6s, min_weight: 10%, \
                      drain_at: 7s, down_at: 60s, recover_after: 2}\n";
        let replay = run(&config(policy), &rows);
        let to: Vec<&str> = replay.changes.iter().map(|c| c.to.as_str()).collect();
        assert_eq!(
            to,
            // As live: the lag climbs a second a second, falling behind.
            [
                "up ready 78% #lag 3.0s; falling behind",
                "up ready 55% #lag 4.0s; falling behind",
                "up ready 33% #lag 5.0s; falling behind",
                "up ready 10% #lag 6.0s; falling behind",
                "up drain #lag 7.0s; falling behind",
                // Caught up at 15 s; better verdicts wait for 2 qualifying polls.
                "up ready 100%",
            ],
            "{}",
            replay.report()
        );
        assert_eq!(replay.changes.last().map(|c| c.at_ms), Some(16_000));
        let summary = replay.summary(0);
        assert_eq!(summary.lowest_weight, 0);
        assert!((summary.drain - 9.0).abs() < 1e-9, "{summary:?}");
        assert!((summary.up - 11.0).abs() < 1e-9, "{summary:?}");
    }

    #[test]
    fn relaxed_thresholds_keep_the_server_in() {
        let rows = parse("t,lag\n0,0\n1,20\n2,40\n3,50\n4,0\n").expect("a trace");
        let strict = run(&config("policy: {recover_after: 1}\n"), &rows);
        let relaxed = run(
            &config("policy: {drain_at: 1h, down_at: 2h, recover_after: 1}\n"),
            &rows,
        );
        assert_eq!(strict.summary(0).lowest_weight, 10);
        assert_eq!(relaxed.summary(0).lowest_weight, 10);
        let strict = run(
            &config("policy: {drain_at: 30s, recover_after: 1}\n"),
            &rows,
        );
        assert!(strict.changes.iter().any(|c| c.to.starts_with("up drain")));
        assert!(!relaxed.changes.iter().any(|c| c.to.starts_with("up drain")));
    }

    #[test]
    fn every_lag_source_history_records_replays() {
        let mut text = String::from("t,lag,source\n");
        for (t, source) in LagFrom::ALL.iter().enumerate() {
            let lag = if *source == LagFrom::Primary { 0 } else { 16 };
            let _ = writeln!(text, "{t},{lag},{source}");
        }
        let rows = parse(&text).expect("every source /history writes");
        let replay = run(&config("policy: {recover_after: 1}\n"), &rows);
        // 16 s behind by every replica source alike, then a primary.
        let changes: Vec<(&str, &str, u64)> = (replay.changes.iter())
            .map(|c| (c.from.as_str(), c.to.as_str(), c.at_ms))
            .collect();
        let primary_at = 1000 * (LagFrom::ALL.len() as u64 - 1);
        assert_eq!(
            changes,
            [("up ready 55% #lag 16.0s", "up ready 100%", primary_at)]
        );
        assert!(parse("t,lag,source\n0,1,gossip\n").is_err());
    }

    #[test]
    fn unknown_lag_and_poll_errors_are_down() {
        let rows =
            parse("t,lag,sql_thread,errno,error\n0,0,Yes,,\n1,,No,1062,\n2,,,,connect_timeout\n")
                .expect("a trace");
        let replay = run(&config("policy: {recover_after: 1}\n"), &rows);
        let to: Vec<&str> = replay.changes.iter().map(|c| c.to.as_str()).collect();
        assert_eq!(
            to,
            [
                "down #sql thread error 1062",
                "down #poll failed (connect_timeout)"
            ]
        );
    }

    #[test]
    fn the_latest_time_a_trace_may_hold_replays() {
        let rows = parse("t,lag\n0,1\n1000000000,2\n").expect("the latest t");
        let replayed = run(&Config::default(), &rows);
        assert_eq!(replayed.samples.len(), 2);
    }
}
