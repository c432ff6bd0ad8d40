//! Shared by the integration tests: where the binary is, and reading replies.
#![allow(dead_code)]
// each test crate uses a different subset
// Tests time real processes with the wall clock, on purpose.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

pub mod central;
pub mod running;

/// The remora binary cargo built for these tests.
pub fn remora_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_remora"))
}

/// The weight in an `up ready N%` reply.
pub fn weight(reply: &str) -> Option<u32> {
    reply
        .strip_prefix("up ready ")?
        .split('%')
        .next()?
        .parse()
        .ok()
}

/// The mysql section every lab remora uses: the lab's remora user, with its
/// password from the environment.
pub fn mysql_section(port: u16) -> String {
    format!(
        "mysql:\n  port: {port}\n  user: remora\n  password_env: REMORA_MYSQL_PASSWORD\n  \
         connect_timeout: 1s\n  query_timeout: 1s\n"
    )
}

/// remora watching the wire-protocol fixture every 100 ms, with `policy`
/// (flow-style keys) and more YAML after it.
pub async fn remora_on_fixture(
    fixture: &remora_lab::fixture::MysqlFixture,
    policy: &str,
    extra: &str,
) -> anyhow::Result<remora_lab::Remora> {
    remora_lab::Remora::start(
        remora_bin(),
        &format!(
            "mysql: {{port: {}, user: remora}}\npoll: {{interval: 100ms}}\npolicy: {{{policy}}}\n{extra}",
            fixture.addr.port()
        ),
    )
    .await
}

/// Resident memory of process `pid`, in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    remora_lab::measure::memory_kib(pid).map_or(0, |(rss, _)| rss)
}

/// `count` agent checks, one after another `gap` apart; each must read
/// `expected` to EOF. Returns their latencies.
pub async fn timed_checks(
    agent: std::net::SocketAddr,
    request: &[u8],
    expected: &str,
    count: usize,
    gap: std::time::Duration,
) -> anyhow::Result<Latency> {
    Ok(Latency::of(
        check_latencies(agent, request, expected, count, gap).await?,
    ))
}

/// The latency of each of `count` agent checks, one after another `gap`
/// apart; each must read `expected` to EOF.
pub async fn check_latencies(
    agent: std::net::SocketAddr,
    request: &[u8],
    expected: &str,
    count: usize,
    gap: std::time::Duration,
) -> anyhow::Result<Vec<std::time::Duration>> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let asked = std::time::Instant::now();
        let reply = remora_lab::agent_request(agent, request).await?;
        samples.push(asked.elapsed());
        anyhow::ensure!(
            reply == expected,
            "check answered {reply:?}, expected {expected:?}"
        );
        tokio::time::sleep(gap).await;
    }
    Ok(samples)
}

/// A legitimate check's latency has been kept through an attack: its p99 is
/// within `factor` of the quiet p99 measured in the same run, floored at
/// 10 ms: loopback noise, and on two cores, right after a fresh build, the
/// bursts of closing the oldest of thousands of idle connections (fresh
/// clones saw p99 3.7 ms and 11.5 ms there, with the reference at 0.4 and
/// 2.8 ms). A stalled listener misses by far more: it waits out a request
/// timeout (100 ms), a linger (1 s) or a full backlog (a 1 s SYN
/// retransmission) on most checks, not on one in a hundred.
pub fn latency_kept(quiet: Latency, during: Latency, factor: u32) -> bool {
    let floor = quiet.p99.max(std::time::Duration::from_millis(10));
    during.p99 <= floor * factor
}

use std::net::SocketAddr;

use remora_lab::measure::Latency;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio_util::sync::CancellationToken;

pub struct Sample {
    at: Instant,
    latency: Duration,
    reply: String,
}

/// Agent checks at a steady rate for as long as it lives, each recorded.
pub struct Checker {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
}

impl Checker {
    /// Starts `per_second` checks a second, each in its own task, so a slow
    /// one never lowers the rate.
    pub fn start(agent: SocketAddr, per_second: u32) -> Checker {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let stop = CancellationToken::new();
        let (record, stopped) = (Arc::clone(&samples), stop.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stopped.is_cancelled() {
                ticks.tick().await;
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let asked = Instant::now();
                    let reply = match remora_lab::agent_reply(agent).await {
                        Ok(reply) => reply.trim_end().to_owned(),
                        Err(err) => format!("no reply: {err}"),
                    };
                    let sample = Sample {
                        at: asked,
                        latency: asked.elapsed(),
                        reply,
                    };
                    record.lock().expect("not poisoned").push(sample);
                });
            }
        });
        Checker { samples, stop }
    }

    /// Checks recorded so far.
    pub fn count(&self) -> usize {
        self.samples.lock().expect("not poisoned").len()
    }

    /// The first reply after `since` that `wanted` accepts, and how long
    /// after `since` it was asked.
    pub async fn wait_for(
        &self,
        since: Instant,
        limit: Duration,
        what: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<(String, Duration)> {
        loop {
            {
                let samples = self.samples.lock().expect("not poisoned");
                // Checks finish out of order: the earliest asked wins.
                if let Some(found) = samples
                    .iter()
                    .filter(|s| s.at >= since && wanted(&s.reply))
                    .min_by_key(|s| s.at)
                {
                    return Ok((found.reply.clone(), found.at - since));
                }
                if since.elapsed() > limit {
                    let last = samples.last().map(|s| s.reply.as_str()).unwrap_or("none");
                    anyhow::bail!("no {what} within {limit:?}; last reply: {last}");
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn latency(&self, from: Instant, to: Instant) -> Latency {
        let samples = self.samples.lock().expect("not poisoned");
        Latency::of(
            samples
                .iter()
                .filter(|s| s.at >= from && s.at <= to)
                .map(|s| s.latency)
                .collect(),
        )
    }

    /// The first reply `matches` accepts, if any.
    pub fn any_reply(&self, matches: impl Fn(&str) -> bool) -> Option<String> {
        let samples = self.samples.lock().expect("not poisoned");
        samples
            .iter()
            .find(|s| matches(&s.reply))
            .map(|s| s.reply.clone())
    }

    /// Replies that were not answers at all.
    pub fn failures(&self) -> Vec<String> {
        let samples = self.samples.lock().expect("not poisoned");
        samples
            .iter()
            .filter(|s| s.reply.starts_with("no reply"))
            .map(|s| s.reply.clone())
            .collect()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Pool `main` on a short curve: full weight below 1 s, 10% at 4 s, drain
/// at 6 s, and two polls to recover.
pub const SHORT_CURVE: &str = "pools:\n  main: {full_weight_below: 1s, min_weight_at: 4s, \
                               min_weight: 10%, drain_at: 6s, down_at: 60s, recover_after: 2}\n";

/// A remora polling `pair`'s replica every 200 ms with [`SHORT_CURVE`], once
/// the replica has fallen behind (MASTER_DELAY 30 with writes flowing) far
/// enough for pool `main` to drain. Keep the writer: the lag grows while it lives.
pub async fn drained_replica(
    pair: &remora_lab::Pair,
) -> Result<(remora_lab::Remora, remora_lab::Writer)> {
    let remora = remora_lab::Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\n{SHORT_CURVE}",
            mysql_section(pair.replica.port)
        ),
    )
    .await?;
    let writes = pair.keep_writing(Duration::from_millis(100));
    pair.start_lag(30).await?;
    remora_lab::wait_until("pool main to drain", Duration::from_secs(30), async || {
        let reply = remora_lab::agent_request(remora.agent, b"main\n").await?;
        Ok(reply.starts_with("up drain").then_some(()))
    })
    .await?;
    Ok((remora, writes))
}

/// The words of a shell command, quotes removed, up to the first `|`, `&`,
/// `;`, `>`, `<` or comment.
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (None, '|' | '&' | ';' | '>' | '<' | '#') => break,
            (None, c) if c.is_whitespace() => {
                if started || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            (None, c) => word.push(c),
        }
    }
    if started || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Runs the remora binary with `args` (a `remora ctl` command, say), keeps
/// what it printed for the password scan, and returns how it ended.
pub fn run_remora<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::io::Result<std::process::Output> {
    let output = std::process::Command::new(remora_bin())
        .args(args)
        .output()?;
    remora_lab::record_output("remora", &said(&output));
    Ok(output)
}

/// What a finished process printed, stdout then stderr.
pub fn said(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A test for each MariaDB release of `scenario(engine)`, in a module named
/// after it: `scenario::mariadb_10_11` (Debian 12's) and
/// `scenario::mariadb_11` (sid's, the current LTS); with `mysql`, also
/// `scenario::mysql_9` (sid's MySQL).
#[macro_export]
macro_rules! on_servers {
    ($scenario:ident) => {
        mod $scenario {
            $crate::on_servers!(@mariadb $scenario);
        }
    };
    ($scenario:ident, mysql) => {
        mod $scenario {
            $crate::on_servers!(@mariadb $scenario);

            #[tokio::test]
            #[ignore = "needs MySQL from the sid root: `make test` builds it and runs this"]
            async fn mysql_9() -> anyhow::Result<()> {
                super::$scenario(remora_lab::Engine::MySql).await
            }
        }
    };
    (@mariadb $scenario:ident) => {
        #[tokio::test]
        #[ignore = "needs MariaDB: `make test` installs it and runs this"]
        async fn mariadb_10_11() -> anyhow::Result<()> {
            super::$scenario(remora_lab::Engine::MariaDb).await
        }

        #[tokio::test]
        #[ignore = "needs MariaDB 11 from the sid root: `make test` builds it and runs this"]
        async fn mariadb_11() -> anyhow::Result<()> {
            super::$scenario(remora_lab::Engine::MariaDbLts).await
        }
    };
}

/// A test for each HAProxy release of `scenario(release)`, in a module
/// named after it: `scenario::haproxy_2_6` (Debian 12's) and
/// `scenario::haproxy_3` (sid's, what new deployments run).
#[macro_export]
macro_rules! on_each_haproxy {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs MariaDB and HAProxy: `make test` installs them and runs this"]
            async fn haproxy_2_6() -> anyhow::Result<()> {
                super::$scenario(remora_lab::haproxy::Release::Debian).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs MariaDB and HAProxy 3 from the sid root: `make test` builds it and runs this"]
            async fn haproxy_3() -> anyhow::Result<()> {
                super::$scenario(remora_lab::haproxy::Release::Sid).await
            }
        }
    };
}

/// chromium, headless, as root needs it; `--dump-dom` prints the DOM after
/// the page loaded, `--screenshot` writes a PNG.
pub fn chromium(args: &[&str], url: &str) -> Result<String> {
    use anyhow::{Context, ensure};
    use std::process::Command;
    let profile = tempfile::tempdir()?;
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
        ])
        .args(args)
        .arg(url)
        .output()
        .context("running chromium (Debian's chromium package)")?;
    ensure!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
