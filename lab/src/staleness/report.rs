//! What a run's reads say, per configuration and client kind: how stale
//! the data served was, how the lagging replica's share of new connections
//! followed its lag, how steeply the healthy replica's share rose (the
//! cliff), and the errors clients saw.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::{Configuration, Run};
use crate::readers::{Client, Failure, Read};

/// One configuration's reads of one kind, summed up.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub reads: usize,
    /// Of the reads served: the share staler than 1 s, 5 s and 30 s.
    pub staler_than: [f64; 3],
    pub stalest: Duration,
    pub failures: BTreeMap<Failure, usize>,
}

/// The staleness marks [`Summary::staler_than`] counts.
pub const MARKS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

/// The lag buckets the lagging replica's share is read by, in seconds.
pub const LAG_BUCKETS: [(u64, u64); 7] = [
    (0, 2),
    (2, 5),
    (5, 10),
    (10, 20),
    (20, 30),
    (30, 60),
    (60, u64::MAX),
];

impl Summary {
    pub fn of<'a>(reads: impl Iterator<Item = &'a Read>) -> Summary {
        let mut summary = Summary {
            reads: 0,
            staler_than: [0.0; 3],
            stalest: Duration::ZERO,
            failures: BTreeMap::new(),
        };
        let mut served = 0usize;
        let mut staler = [0usize; 3];
        for read in reads {
            summary.reads += 1;
            match &read.outcome {
                Ok(read) => {
                    served += 1;
                    summary.stalest = summary.stalest.max(read.staleness);
                    for (count, mark) in staler.iter_mut().zip(MARKS) {
                        *count += usize::from(read.staleness > mark);
                    }
                }
                Err(failure) => *summary.failures.entry(*failure).or_default() += 1,
            }
        }
        for (share, count) in summary.staler_than.iter_mut().zip(staler) {
            *share = count as f64 / served.max(1) as f64;
        }
        summary
    }

    pub fn failed(&self, failure: Failure) -> usize {
        self.failures.get(&failure).copied().unwrap_or(0)
    }
}

/// Each configuration's reads of `client`, summed up.
pub fn summaries(run: &Run, client: Client) -> BTreeMap<Configuration, Summary> {
    (run.reads.iter())
        .map(|(configuration, reads)| {
            let of_kind = reads.iter().filter(|read| read.client == client);
            (*configuration, Summary::of(of_kind))
        })
        .collect()
}

/// The lagging replica's lag at `at`: the last sample before it.
pub fn lag_at(run: &Run, at: Duration) -> Option<Duration> {
    let after = run.lag.partition_point(|(sampled, _)| *sampled <= at);
    run.lag.get(after.checked_sub(1)?).map(|(_, lag)| *lag)
}

/// The share of `client` reads served by the lagging replica, per second of
/// the run (seconds without a served read left out).
pub fn lagging_share(run: &Run, configuration: Configuration, client: Client) -> Vec<(u64, f64)> {
    let mut seconds: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    let reads = run.reads.get(&configuration).into_iter().flatten();
    for read in reads.filter(|read| read.client == client) {
        if let Ok(served) = &read.outcome {
            let second = seconds.entry(read.at.as_secs()).or_default();
            second.1 += 1;
            second.0 += usize::from(served.server_id == run.lagging);
        }
    }
    (seconds.into_iter())
        .map(|(second, (lagging, all))| (second, lagging as f64 / all as f64))
        .collect()
}

/// The lagging replica's share of new connections (short reads) in each
/// of [`LAG_BUCKETS`] of its lag; `None` where no read fell in it.
pub fn share_by_lag(run: &Run, configuration: Configuration) -> Vec<Option<f64>> {
    let mut buckets = vec![(0usize, 0usize); LAG_BUCKETS.len()];
    let reads = run.reads.get(&configuration).into_iter().flatten();
    for read in reads.filter(|read| read.client == Client::Short) {
        let (Ok(served), Some(lag)) = (&read.outcome, lag_at(run, read.at)) else {
            continue;
        };
        let lag = lag.as_secs();
        if let Some(bucket) = (LAG_BUCKETS.iter()).position(|(from, to)| lag >= *from && lag < *to)
        {
            buckets[bucket].1 += 1;
            buckets[bucket].0 += usize::from(served.server_id == run.lagging);
        }
    }
    (buckets.into_iter())
        .map(|(lagging, all)| (all > 0).then(|| lagging as f64 / all as f64))
        .collect()
}

/// Errors the healthy replica's clients saw: a pooled client's error counts
/// for the server its connection last read from; a short read's for
/// whichever server it would have gone to, so every one counts.
pub fn healthy_errors(run: &Run, configuration: Configuration) -> usize {
    let mut last: BTreeMap<usize, u32> = BTreeMap::new();
    let mut errors = 0;
    for read in run.reads.get(&configuration).into_iter().flatten() {
        match (&read.outcome, read.client) {
            (Ok(served), _) => {
                last.insert(read.by, served.server_id);
            }
            (Err(_), Client::Short) => errors += 1,
            (Err(_), Client::Pooled) => {
                errors += usize::from(last.get(&read.by).is_none_or(|id| *id != run.lagging));
            }
        }
    }
    errors
}

/// The cliff: the largest rise of the healthy replica's share of new
/// connections from one second to the next.
pub fn cliff(run: &Run, configuration: Configuration) -> f64 {
    let shares = lagging_share(run, configuration, Client::Short);
    (shares.windows(2))
        .filter(|pair| pair[1].0 == pair[0].0 + 1)
        .map(|pair| pair[0].1 - pair[1].1)
        .fold(0.0, f64::max)
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// The report's tables for `runs`, in markdown.
pub fn markdown(runs: &[Run]) -> String {
    let mut out = String::new();
    for run in runs {
        let _ = writeln!(
            out,
            "### {}\n\n{} s; `replica1` is the one that {}.\n",
            run.scenario.label(),
            run.length.as_secs(),
            match run.scenario {
                super::Scenario::LagRamp { .. } => "lags",
                super::Scenario::Broken { .. } => "breaks",
                super::Scenario::Frozen { .. } => "freezes",
            }
        );
        out.push_str(
            "| configuration | clients | reads | staler than 1 s | 5 s | 30 s | stalest | cliff | refused | reset | cut off | timed out |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for client in Client::ALL {
            for (configuration, summary) in summaries(run, client) {
                let cliff = match client {
                    Client::Short => percent(cliff(run, configuration)),
                    Client::Pooled => String::new(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {:.1} s | {cliff} | {} | {} | {} | {} |",
                    configuration.label(),
                    client.label(),
                    summary.reads,
                    percent(summary.staler_than[0]),
                    percent(summary.staler_than[1]),
                    percent(summary.staler_than[2]),
                    summary.stalest.as_secs_f64(),
                    summary.failed(Failure::Refused),
                    summary.failed(Failure::Reset),
                    summary.failed(Failure::CutOff),
                    summary.failed(Failure::TimedOut),
                );
            }
        }
        if let super::Scenario::LagRamp { .. } = run.scenario {
            out.push_str("\nThe lagging replica's share of new connections, by its lag:\n\n| configuration |");
            for (from, to) in LAG_BUCKETS {
                let to = if to == u64::MAX {
                    "…".to_owned()
                } else {
                    format!("{to}")
                };
                let _ = write!(out, " {from}–{to} s |");
            }
            out.push_str("\n|---|");
            out.push_str(&"---:|".repeat(LAG_BUCKETS.len()));
            out.push('\n');
            for configuration in run.reads.keys() {
                let _ = write!(out, "| {} |", configuration.label());
                for share in share_by_lag(run, *configuration) {
                    let _ = write!(out, " {} |", share.map_or("".into(), percent));
                }
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readers::Served;

    fn served(at: u64, server_id: u32, stale: u64) -> Read {
        Read {
            at: Duration::from_millis(at),
            client: Client::Short,
            by: 0,
            outcome: Ok(Served {
                server_id,
                staleness: Duration::from_millis(stale),
            }),
        }
    }

    #[test]
    fn shares_marks_and_the_cliff_are_read_from_the_reads() {
        let mut reads = Vec::new();
        // Second 0: half on the lagging replica (1); second 1: all on 2.
        for i in 0..10 {
            reads.push(served(i * 100, if i % 2 == 0 { 1 } else { 2 }, 6_000));
        }
        for i in 10..20 {
            reads.push(served(i * 100, 2, 100));
        }
        reads.push(Read {
            at: Duration::from_millis(1_500),
            client: Client::Short,
            by: 0,
            outcome: Err(Failure::Reset),
        });
        let run = Run {
            scenario: super::super::Scenario::Frozen {
                for_: Duration::from_secs(1),
            },
            reads: BTreeMap::from([(Configuration::TcpCheck, reads)]),
            lag: vec![(Duration::ZERO, Duration::from_secs(3))],
            lagging: 1,
            length: Duration::from_secs(2),
        };
        let summary = &summaries(&run, Client::Short)[&Configuration::TcpCheck];
        assert_eq!(summary.reads, 21);
        assert_eq!(summary.staler_than, [0.5, 0.5, 0.0]);
        assert_eq!(summary.stalest, Duration::from_secs(6));
        assert_eq!(summary.failed(Failure::Reset), 1);
        assert_eq!(cliff(&run, Configuration::TcpCheck), 0.5);
        let by_lag = share_by_lag(&run, Configuration::TcpCheck);
        assert_eq!(by_lag[1], Some(0.25), "all 20 reads at a lag of 3 s");
        assert!(markdown(&[run]).contains(
            "| TCP check | short | 21 | 50.0% | 50.0% | 0.0% | 6.0 s | 50.0% | 0 | 1 | 0 | 0 |"
        ));
    }
}
