//! Measuring a process and a set of latencies: used by the benchmark and
//! by the tests that bound memory, descriptors and latency.

use std::time::Duration;

use anyhow::{Context, Result};

/// The `p`-th percentile (0–100) of `sorted`, nearest rank; `None` when empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((p / 100.0) * last as f64).round() as usize])
}

/// Latency percentiles of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    /// Panics on no samples: a measurement without any is a broken test.
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        let at = |p| percentile(&samples, p).expect("latency of no samples");
        Latency {
            p50: at(50.0),
            p99: at(99.0),
            max: at(100.0),
        }
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3
        )
    }
}

/// How many file descriptors process `pid` has open (0 if it is gone).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// CPU time a process has used, all threads, in nanoseconds
/// (`/proc/<pid>/task/*/schedstat`: nanosecond resolution).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).context("reading /proc tasks")? {
        let path = task?.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(Duration::from_nanos(total))
}

/// CPU time one thread of this process has used (`/proc/self/task/<tid>/schedstat`).
pub fn thread_cpu_time(tid: u32) -> Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .with_context(|| format!("reading thread {tid}'s schedstat"))?;
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|ns| ns.parse::<u64>().ok())
        .context("schedstat's first field")?;
    Ok(Duration::from_nanos(ns))
}

/// `VmRSS` (now) and `VmHWM` (peak) of a process, in KiB.
pub fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading status")?;
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(51));
        assert_eq!(percentile(&sorted, 99.0), Some(99));
        assert_eq!(percentile(&sorted, 100.0), Some(100));
        assert_eq!(percentile(&sorted, 0.0), Some(1));
        assert_eq!(percentile::<u32>(&[], 50.0), None);
        let ms = Duration::from_millis;
        let latency = Latency::of(vec![ms(3), ms(1), ms(2)]);
        assert_eq!(
            (latency.p50, latency.p99, latency.max),
            (ms(2), ms(3), ms(3))
        );
    }

    #[test]
    fn this_process_has_descriptors_memory_and_cpu_time() {
        let me = std::process::id();
        assert!(open_fds(me) > 2);
        let (rss, peak) = memory_kib(me).expect("readable");
        assert!(rss > 0 && peak >= rss);
        assert!(cpu_time(me).expect("readable") > Duration::ZERO);
    }
}
