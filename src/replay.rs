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

use std::fmt::{self, Write as _};
use std::time::Duration;

use tokio::time::Instant;

use crate::answer::{Answer, Reported};
use crate::config::Config;
use crate::health::{Assessment, Health, Lag, LagOrigin, PRIMARY_SOURCE, lag_sources};
use crate::history::{Event, Inputs, PoolSample, Sample, StateSample, is_news};
use crate::policy::{self, Damper, Decision, Ramp, Rules};
use crate::probe::{ErrorKind, ThreadState};

/// A trace that cannot be read: the line and the column say where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError(String);

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

/// One row of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Seconds from the start.
    pub t: f64,
    pub inputs: Inputs,
}

/// Latest `t` a trace may have, in seconds (some 31 years): beyond it a
/// time no longer fits the clock replay runs on.
pub const MAX_T: f64 = 1e9;

/// Reads a trace.
pub fn parse(text: &str) -> Result<Vec<Row>, TraceError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| TraceError("line 1: no header (t,lag,...)".into()))?;
    let names: Vec<String> = cells(header)
        .into_iter()
        .map(|n| n.trim().to_owned())
        .collect();
    let at = |name: &str| names.iter().position(|n| n == name);
    let (Some(t_at), Some(lag_at)) = (at("t"), at("lag")) else {
        return Err(TraceError(format!(
            "line 1: the header needs columns t and lag, got {header:?}"
        )));
    };
    let columns = Columns {
        t: t_at,
        lag: lag_at,
        source: at("source"),
        estimated: at("estimated"),
        io_thread: at("io_thread"),
        sql_thread: at("sql_thread"),
        errno: at("errno"),
        error: at("error"),
    };
    let mut rows: Vec<Row> = Vec::new();
    for (index, line) in lines {
        let row = columns.row(index + 1, &names, &cells(line))?;
        if let Some(last) = rows.last()
            && row.t < last.t
        {
            return Err(TraceError(format!(
                "line {}, column {} (t): {} is before the previous row's {}",
                index + 1,
                t_at + 1,
                row.t,
                last.t
            )));
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(TraceError("line 2: the trace has no rows".into()));
    }
    Ok(rows)
}

/// Where each input is, by column.
struct Columns {
    t: usize,
    lag: usize,
    source: Option<usize>,
    estimated: Option<usize>,
    io_thread: Option<usize>,
    sql_thread: Option<usize>,
    errno: Option<usize>,
    error: Option<usize>,
}

impl Columns {
    fn row(&self, line: usize, names: &[String], cells: &[String]) -> Result<Row, TraceError> {
        let bad = |column: usize, why: String| {
            TraceError(format!(
                "line {line}, column {} ({}): {why}",
                column + 1,
                names[column]
            ))
        };
        let cell = |column: usize| cells.get(column).map_or("", |c| c.trim());
        let optional = |column: Option<usize>| column.map(cell).filter(|c| !c.is_empty());
        let t: f64 = cell(self.t)
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite() && (0.0..=MAX_T).contains(t))
            .ok_or_else(|| {
                bad(
                    self.t,
                    format!(
                        "{:?} is not a number of seconds from 0 to {MAX_T}",
                        cell(self.t)
                    ),
                )
            })?;
        let lag = match cell(self.lag) {
            "" => None,
            text => Some(
                text.parse::<f64>()
                    .ok()
                    .filter(|lag| {
                        lag.is_finite()
                            && (0.0..=crate::health::MAX_PLAUSIBLE_LAG.as_secs_f64()).contains(lag)
                    })
                    .ok_or_else(|| bad(self.lag, format!("{text:?} is not a lag in seconds")))?,
            ),
        };
        let label = |column: Option<usize>,
                     all: &[&'static str]|
         -> Result<Option<&'static str>, TraceError> {
            match optional(column) {
                None => Ok(None),
                Some(text) => all
                    .iter()
                    .find(|label| **label == text)
                    .copied()
                    .map(Some)
                    .ok_or_else(|| {
                        bad(
                            column.expect("a cell"),
                            format!("{text:?} is not one of {}", all.join(", ")),
                        )
                    }),
            }
        };
        let threads: Vec<&'static str> = ThreadState::ALL.iter().map(|s| s.as_str()).collect();
        let kinds: Vec<&'static str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        let sources: Vec<&'static str> = lag_sources().collect();
        let thread = |column| -> Result<Option<ThreadState>, TraceError> {
            Ok(label(column, &threads)?.and_then(ThreadState::from_label))
        };
        Ok(Row {
            t,
            inputs: Inputs {
                lag,
                source: label(self.source, &sources)?,
                estimated: label(self.estimated, &["true", "false"])? == Some("true"),
                io_thread: thread(self.io_thread)?,
                sql_thread: thread(self.sql_thread)?,
                errno: match optional(self.errno) {
                    None => None,
                    Some(text) => Some(text.parse().map_err(|_| {
                        bad(
                            self.errno.expect("a cell"),
                            format!("{text:?} is not an error number"),
                        )
                    })?),
                },
                error: label(self.error, &kinds)?.and_then(ErrorKind::from_label),
            },
        })
    }
}

/// A CSV line's cells: commas split, double quotes quote (`""` is a quote).
fn cells(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().expect("a cell").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(String::new()),
            (c, _) => out.last_mut().expect("a cell").push(c),
        }
    }
    out
}

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
    let policies = config.policies();
    let mut judges: Vec<(Damper, Ramp)> = policies.iter().map(|_| Default::default()).collect();
    let start = Instant::now();
    // A trace records lag, not load: the load rules have nothing to read.
    let rules = Rules {
        load: None,
        ..Rules::of(config)
    };
    let pools: Vec<String> = policies
        .iter()
        .map(|(name, _)| {
            if name.is_empty() {
                "default".to_owned()
            } else {
                name.clone()
            }
        })
        .collect();
    let mut samples = Vec::with_capacity(rows.len());
    let mut changes = Vec::new();
    let mut last: Vec<Option<Answer>> = vec![None; policies.len()];
    for row in rows {
        let at = start + Duration::from_secs_f64(row.t);
        let assessment = assessment_of(&row.inputs);
        let at_ms = (row.t * 1e3) as u64;
        let mut pool_samples = Vec::with_capacity(policies.len());
        for (i, (_, policy)) in policies.iter().enumerate() {
            let (damper, ramp) = &mut judges[i];
            let target = policy::target(&assessment, policy, &rules);
            let damped: Decision = damper.apply(target.clone(), policy.recover_after);
            let decision = ramp.apply(damped, true, at, None, policy);
            let published = Answer::of(&decision.verdict);
            if let Some(before) = &last[i]
                && is_news(before, &published)
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
                target: StateSample::of(&Answer::of(&target)),
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
            reason: format!("poll failed ({kind})"),
        }
    } else if inputs.source == Some(PRIMARY_SOURCE) {
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
                    .and_then(LagOrigin::from_label)
                    .unwrap_or(LagOrigin::ReplicaStatus),
                fallback: None,
            },
            read_only: true,
        }
    } else {
        let reason = match (inputs.errno, inputs.sql_thread) {
            (Some(errno), Some(state)) if state != ThreadState::Yes => {
                format!("sql thread error {errno}")
            }
            _ => "lag unknown".to_owned(),
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
            [
                "up ready 78% #lag 3.0s",
                "up ready 55% #lag 4.0s",
                "up ready 33% #lag 5.0s",
                "up ready 10% #lag 6.0s",
                "up drain #lag 7.0s",
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
        for (t, source) in lag_sources().enumerate() {
            let lag = if source == PRIMARY_SOURCE { 0 } else { 16 };
            let _ = writeln!(text, "{t},{lag},{source}");
        }
        let rows = parse(&text).expect("every source /history writes");
        let replay = run(&config("policy: {recover_after: 1}\n"), &rows);
        // 16 s behind by every replica source alike, then a primary.
        let changes: Vec<(&str, &str, u64)> = (replay.changes.iter())
            .map(|c| (c.from.as_str(), c.to.as_str(), c.at_ms))
            .collect();
        let primary_at = 1000 * (lag_sources().count() as u64 - 1);
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
    fn a_malformed_trace_names_the_line_and_the_column() {
        let cases = [
            ("", "line 1"),
            (
                "time,delay\n0,1\n",
                "line 1: the header needs columns t and lag",
            ),
            ("t,lag\n", "no rows"),
            ("t,lag\n0,1\nsoon,2\n", "line 3, column 1 (t)"),
            ("t,lag\n0,1\n1,lots\n", "line 3, column 2 (lag)"),
            ("t,lag\n0,-4\n", "line 2, column 2 (lag)"),
            ("t,lag\n2,1\n1,1\n", "line 3, column 1 (t): 1 is before"),
            (
                "t,lag,io_thread\n0,1,Maybe\n",
                "line 2, column 3 (io_thread): \"Maybe\" is not one of",
            ),
            ("t,lag,errno\n0,1,x\n", "line 2, column 3 (errno)"),
        ];
        for (text, wanted) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_absurd_time_is_refused_naming_the_line_not_a_panic() {
        for t in ["1e20", "1000000001", "-1", "inf", "NaN"] {
            let err = parse(&format!("t,lag\n0,1\n{t},2\n"))
                .expect_err(t)
                .to_string();
            assert!(err.starts_with("line 3, column 1 (t)"), "{t}: {err}");
        }
        let rows = parse("t,lag\n0,1\n1000000000,2\n").expect("the latest t");
        let replayed = run(&Config::default(), &rows);
        assert_eq!(replayed.samples.len(), 2);
    }

    #[test]
    fn quoted_cells_hold_commas_and_quotes() {
        assert_eq!(
            cells("a,\"b,c\",\"say \"\"hi\"\"\""),
            ["a", "b,c", "say \"hi\""]
        );
    }
}
