//! `make bench`: what one agent check costs, measured against the floor.
//!
//! In one run on one machine: a real MariaDB replica (the lab's), remora
//! (release build) beside it with and without pools, the reference responder
//! (writes a fixed line and closes: the floor no agent can beat) and a
//! fork-per-check responder (socat + a mariadb client per check, like the
//! xinetd/clustercheck scripts operators run today). Each is driven in turn
//! by a closed-loop check generator at 1, 8, 64 and 256 concurrent clients,
//! alternating the order between rounds so drift cancels. Then fault
//! detection: an SQL thread error and a frozen (SIGSTOP) replica, timed from
//! the fault to the first changed agent reply.
//!
//! Prints a markdown report and writes it to benches/BENCHMARKS.md (or
//! $BENCH_OUT). $BENCH_SECONDS sets the length of each run (default 2).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use mysql_async::prelude::Queryable;
use remora_lab::bench::{self, ForkResponder, HEALTHY, Load, Reference};
use remora_lab::mariadb::{REMORA_PASSWORD, REMORA_USER};
use remora_lab::{Pair, Remora, agent_reply, measure};
use tokio::time::Instant;

const CONCURRENCY: [usize; 4] = [1, 8, 64, 256];
/// The fork responder forks a shell and a client per check: at higher
/// concurrency it only measures how fast this machine can fork.
const FORK_CONCURRENCY: [usize; 2] = [1, 8];
const DETECTION_TRIALS: u32 = 5;
/// remora's runtime workers (src/main.rs); the references get as many.
const WORKERS: usize = 2;
/// remora's defaults, which the detection target is expressed in.
const INTERVAL: Duration = Duration::from_secs(1);
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Reference,
    Remora,
    /// The reference, reading the client's line first: the floor for the
    /// exchange HAProxy has with `agent-send`.
    ReferenceSend,
    Pools,
}

impl Target {
    const ALL: [Target; 4] = [
        Target::Reference,
        Target::Remora,
        Target::ReferenceSend,
        Target::Pools,
    ];

    fn name(self) -> &'static str {
        match self {
            Target::Reference => "reference",
            Target::Remora => "remora",
            Target::ReferenceSend => "reference, agent-send",
            Target::Pools => "remora + pools, agent-send",
        }
    }

    /// What this target is measured against.
    fn baseline(self) -> Target {
        match self {
            Target::Reference | Target::Remora => Target::Reference,
            Target::ReferenceSend | Target::Pools => Target::ReferenceSend,
        }
    }

    fn sends(self) -> Option<&'static [u8]> {
        match self {
            Target::Reference | Target::Remora => None,
            Target::ReferenceSend | Target::Pools => Some(b"main\n"),
        }
    }
}

struct Stats {
    load: Load,
    p50: Duration,
    p99: Duration,
}

impl Stats {
    fn of(mut load: Load) -> Stats {
        let (p50, p99) = (load.percentile(50.0), load.percentile(99.0));
        Stats { load, p50, p99 }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

async fn questions(conn: &mut mysql_async::Conn) -> Result<u64> {
    let row: Option<(String, u64)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Questions'")
        .await?;
    Ok(row.context("Questions")?.1)
}

async fn polls(remora: &Remora) -> Result<u64> {
    let (_, body) = remora.get("/status").await?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    status["polls"]["total"].as_u64().context("polls.total")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let run = Duration::from_secs_f64(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    );
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches/BENCHMARKS.md")
            .display()
            .to_string()
    });
    let binary = Path::new(env!("CARGO_BIN_EXE_remora"));
    eprintln!("starting a MariaDB primary and replica...");
    let pair = Pair::start().await?;
    let mysql = format!(
        "mysql: {{port: {}, user: {REMORA_USER}, password_env: REMORA_MYSQL_PASSWORD}}\n",
        pair.replica.port
    );
    let remora = Remora::start(binary, &mysql).await?;
    let pools = Remora::start(
        binary,
        &format!("{mysql}pools: {{main: {{drain_at: 10s, down_at: 30s}}, backup: {{drain_at: 1h, down_at: 2h}}, writer: {{role: primary}}}}\n"),
    )
    .await?;
    let reference = Reference::start(WORKERS, false)?;
    let reference_send = Reference::start(WORKERS, true)?;
    let fork = ForkResponder::start(
        pair.replica.port,
        REMORA_USER,
        REMORA_PASSWORD,
        &pair.replica.dir,
    )
    .await?;
    let mut monitor = pair.replica.conn().await?;

    // Idle: one poll a second, nothing else.
    eprintln!("idle...");
    let idle_window = Duration::from_secs(5);
    let (rss_idle, _) = measure::memory_kib(remora.pid())?;
    let cpu_before = measure::cpu_time(remora.pid())?;
    let q_before = questions(&mut monitor).await?;
    let polls_before = polls(&remora).await? + polls(&pools).await?;
    let idle_started = Instant::now();
    tokio::time::sleep(idle_window).await;
    let idle_elapsed = idle_started.elapsed();
    let idle_cpu = measure::cpu_time(remora.pid())? - cpu_before;
    let polls_idle = polls(&remora).await? + polls(&pools).await? - polls_before;
    // Our own SHOW GLOBAL STATUS counts once.
    let q_idle = questions(&mut monitor).await? - q_before - 1;
    let poller_rate = q_idle as f64 / idle_elapsed.as_secs_f64();
    let per_poll = q_idle as f64 / polls_idle.max(1) as f64;

    let mut results: Vec<(usize, Target, Stats)> = Vec::new();
    let mut fork_results: Vec<(usize, Stats)> = Vec::new();
    let (mut remora_cpu, mut remora_checks) = (Duration::ZERO, 0u64);
    let (mut checks_during, mut questions_during, mut expected_during) = (0u64, 0u64, 0f64);
    for concurrency in CONCURRENCY {
        let mut totals = [
            Load::default(),
            Load::default(),
            Load::default(),
            Load::default(),
        ];
        for round in 0..2 {
            let mut order = Target::ALL;
            if round % 2 == 1 {
                order.reverse();
            }
            for target in order {
                eprintln!(
                    "{} at {concurrency} concurrent, round {}...",
                    target.name(),
                    round + 1
                );
                let addr = match target {
                    Target::Reference => reference.addr,
                    Target::ReferenceSend => reference_send.addr,
                    Target::Remora => remora.agent,
                    Target::Pools => pools.agent,
                };
                let request = target.sends();
                let cpu = measure::cpu_time(remora.pid())?;
                let q = questions(&mut monitor).await?;
                let load = bench::drive(addr, concurrency, run, request, HEALTHY).await;
                if matches!(target, Target::Remora | Target::Pools) {
                    checks_during += load.checks;
                    questions_during += questions(&mut monitor).await? - q - 1;
                    expected_during += poller_rate * load.elapsed.as_secs_f64();
                }
                if target == Target::Remora {
                    remora_cpu += measure::cpu_time(remora.pid())? - cpu;
                    remora_checks += load.checks;
                }
                totals[target as usize].merge(load);
            }
        }
        for (target, load) in Target::ALL.into_iter().zip(totals) {
            results.push((concurrency, target, Stats::of(load)));
        }
        if FORK_CONCURRENCY.contains(&concurrency) {
            eprintln!("fork-per-check at {concurrency} concurrent...");
            let load = bench::drive(fork.addr, concurrency, run * 2, None, HEALTHY).await;
            fork_results.push((concurrency, Stats::of(load)));
        }
    }
    let (_, rss_peak) = measure::memory_kib(remora.pid())?;

    // Detection: fault to first changed reply.
    // Each trial waits for remora to recover, which it sees right after a
    // poll; spread the faults over the poll cycle so the trials sample it
    // instead of always hitting the same point.
    let phase =
        |trial: u32| Duration::from_millis(u64::from(trial) * 1000 / u64::from(DETECTION_TRIALS));
    eprintln!("detection: sql thread error...");
    let mut sql_error = Vec::new();
    for trial in 0..DETECTION_TRIALS {
        tokio::time::sleep(phase(trial)).await;
        let id = 900 + trial;
        pair.replica
            .exec(&[
                "SET SESSION sql_log_bin = 0",
                &format!("INSERT INTO lab.conflict (id) VALUES ({id})"),
            ])
            .await?;
        let fault = Instant::now();
        pair.primary
            .exec(&[&format!("INSERT INTO lab.conflict (id) VALUES ({id})")])
            .await?;
        sql_error.push(first_change(&remora, fault).await?);
        pair.fix_replication(id).await?;
        remora
            .wait_reply(Duration::from_secs(15), |r| r == "up ready 100%")
            .await?;
    }
    eprintln!("detection: frozen replica...");
    drop(monitor);
    let mut frozen = Vec::new();
    for trial in 0..DETECTION_TRIALS {
        tokio::time::sleep(phase(trial)).await;
        let fault = Instant::now();
        pair.replica.freeze()?;
        let took = first_change(&remora, fault).await;
        pair.replica.thaw()?;
        frozen.push(took?);
        remora
            .wait_reply(Duration::from_secs(15), |r| r == "up ready 100%")
            .await?;
    }

    let report = report(Report {
        run,
        results,
        fork_results,
        rss_idle,
        rss_peak,
        idle_cpu,
        idle_elapsed,
        remora_cpu,
        remora_checks,
        checks_during,
        questions_during,
        expected_during,
        per_poll,
        sql_error,
        frozen,
    });
    print!("{report}");
    std::fs::write(&out, &report).with_context(|| format!("writing {out}"))?;
    eprintln!("written to {out}");
    Ok(())
}

/// Polls the agent every 2 ms from `fault` until its reply is no longer healthy.
async fn first_change(remora: &Remora, fault: Instant) -> Result<Duration> {
    loop {
        let reply = agent_reply(remora.agent).await?;
        if reply != HEALTHY {
            return Ok(fault.elapsed());
        }
        if fault.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("no change within 10s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct Report {
    run: Duration,
    results: Vec<(usize, Target, Stats)>,
    fork_results: Vec<(usize, Stats)>,
    rss_idle: u64,
    rss_peak: u64,
    idle_cpu: Duration,
    idle_elapsed: Duration,
    remora_cpu: Duration,
    remora_checks: u64,
    checks_during: u64,
    questions_during: u64,
    expected_during: f64,
    per_poll: f64,
    sql_error: Vec<Duration>,
    frozen: Vec<Duration>,
}

fn report(r: Report) -> String {
    let mut md = String::new();
    let when = humantime::format_rfc3339_seconds(SystemTime::now());
    let _ = writeln!(md, "# remora benchmark\n");
    let _ = writeln!(
        md,
        "Written by `make bench` (`cargo bench --bench agent`) on {when}; do not edit by hand.\n"
    );
    let _ = writeln!(md, "- machine: {}", bench::machine());
    let _ = writeln!(
        md,
        "- each target: 2 runs of {:.1}s per concurrency, order alternated between runs; closed loop \
         (connect, [send `main\\n`], read to EOF, close); latency = connect to EOF",
        r.run.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "- remora: release build, defaults (poll every 1s), against a real MariaDB 10.11 replica; \
         reference: a tokio listener writing `up ready 100%` and closing, on its own runtime with as \
         many workers as remora ({WORKERS}); fork-per-check: socat forking a shell and a `mariadb` \
         client per check\n"
    );

    let _ = writeln!(md, "## Checks\n");
    let _ = writeln!(
        md,
        "Ratios compare each agent with the reference doing the same exchange: remora with the \
         reference, remora with pools (HAProxy sends `main\\n`) with the reference that reads the \
         line first.\n"
    );
    let _ = writeln!(
        md,
        "| clients | target | checks/s | p50 ms | p99 ms | max ms | errors | rate vs reference | p99 vs reference |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut misses: Vec<String> = Vec::new();
    let mut met: Vec<String> = Vec::new();
    for concurrency in CONCURRENCY {
        let of = |target: Target| {
            r.results
                .iter()
                .find(|(c, t, _)| *c == concurrency && *t == target)
                .map(|(_, _, s)| s)
                .expect("every target ran at every concurrency")
        };
        for target in Target::ALL {
            let stats = of(target);
            let baseline = of(target.baseline());
            let rate_ratio = stats.load.rate() / baseline.load.rate().max(1e-9);
            let p99_ratio = stats.p99.as_secs_f64() / baseline.p99.as_secs_f64().max(1e-9);
            let _ = writeln!(
                md,
                "| {concurrency} | {} | {:.0} | {} | {} | {} | {} | {rate_ratio:.2} | {p99_ratio:.2} |",
                target.name(),
                stats.load.rate(),
                ms(stats.p50),
                ms(stats.p99),
                ms(stats.load.max()),
                stats.load.errors + stats.load.wrong,
            );
            if concurrency < 8 {
                continue;
            }
            // With pools and agent-send: within 10% of the same targets.
            let (rate_goal, p99_goal, what) = match target {
                Target::Remora => (0.95, 1.5, "remora"),
                Target::Pools => (0.95 * 0.9, 1.5 * 1.1, "remora + pools"),
                _ => continue,
            };
            judge(
                &mut met,
                &mut misses,
                rate_ratio >= rate_goal,
                format!(
                    "{concurrency} clients, {what}: checks/s ≥ {rate_goal:.3} × reference (got {rate_ratio:.2})"
                ),
            );
            judge(
                &mut met,
                &mut misses,
                p99_ratio <= p99_goal,
                format!(
                    "{concurrency} clients, {what}: p99 ≤ {p99_goal:.2} × reference (got {p99_ratio:.2})"
                ),
            );
        }
    }

    let _ = writeln!(
        md,
        "\n## Fork-per-check responder (socat + mariadb client per check)\n"
    );
    let _ = writeln!(
        md,
        "| clients | checks/s | p50 ms | p99 ms | errors | remora vs fork |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    for (concurrency, stats) in &r.fork_results {
        let remora = r
            .results
            .iter()
            .find(|(c, t, _)| c == concurrency && *t == Target::Remora)
            .map(|(_, _, s)| s.load.rate())
            .unwrap_or(0.0);
        let times = remora / stats.load.rate().max(1e-9);
        let _ = writeln!(
            md,
            "| {concurrency} | {:.0} | {} | {} | {} | {times:.0}× |",
            stats.load.rate(),
            ms(stats.p50),
            ms(stats.p99),
            stats.load.errors + stats.load.wrong
        );
        judge(
            &mut met,
            &mut misses,
            times >= 50.0,
            format!("{concurrency} clients: ≥ 50 × the fork-per-check responder (got {times:.0}×)"),
        );
    }

    let idle_cpu = 100.0 * r.idle_cpu.as_secs_f64() / r.idle_elapsed.as_secs_f64();
    let cpu_per_100k = r.remora_cpu.as_secs_f64() * 100_000.0 / r.remora_checks.max(1) as f64;
    let caused = r.questions_during as f64 - r.expected_during;
    let _ = writeln!(md, "\n## Cost\n");
    let _ = writeln!(md, "| measure | value |");
    let _ = writeln!(md, "|---|---:|");
    let _ = writeln!(
        md,
        "| remora RSS idle | {:.1} MiB |",
        r.rss_idle as f64 / 1024.0
    );
    let _ = writeln!(
        md,
        "| remora RSS peak (after 256 clients) | {:.1} MiB |",
        r.rss_peak as f64 / 1024.0
    );
    let _ = writeln!(
        md,
        "| remora idle CPU (1 poll/s) | {idle_cpu:.3}% of a core |"
    );
    let _ = writeln!(md, "| remora CPU per 100k checks | {cpu_per_100k:.2} s |");
    let _ = writeln!(md, "| statements per poll | {:.1} |", r.per_poll);
    let _ = writeln!(
        md,
        "| replica `Questions` during remora runs | {} for {} checks (pollers alone: {:.0}; caused by checks: {}) |",
        r.questions_during,
        r.checks_during,
        r.expected_during,
        caused.round() as i64
    );
    judge(
        &mut met,
        &mut misses,
        r.rss_peak <= 16 * 1024,
        format!(
            "RSS ≤ 16 MiB at 256 clients (got {:.1} MiB)",
            r.rss_peak as f64 / 1024.0
        ),
    );
    judge(
        &mut met,
        &mut misses,
        idle_cpu < 0.5,
        format!("idle CPU < 0.5% of a core (got {idle_cpu:.3}%)"),
    );
    // Pollers' own statements vary by a poll or two over a run's edges.
    judge(
        &mut met,
        &mut misses,
        caused.abs() <= 2.0 * r.per_poll.max(1.0) * 4.0,
        format!(
            "MySQL statements caused by checks ≈ 0 (got {} over {} checks)",
            caused.round() as i64,
            r.checks_during
        ),
    );

    let limit = INTERVAL + QUERY_TIMEOUT + Duration::from_millis(50);
    let _ = writeln!(md, "\n## Detection (fault → first changed reply)\n");
    let _ = writeln!(md, "| fault | trials | min | median | max | limit |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for (name, mut times) in [
        ("SQL thread error (1062)", r.sql_error),
        ("replica frozen (SIGSTOP)", r.frozen),
    ] {
        times.sort();
        let (min, median, max) = (times[0], times[times.len() / 2], times[times.len() - 1]);
        let _ = writeln!(
            md,
            "| {name} | {} | {} s | {} s | {} s | {} s |",
            times.len(),
            secs(min),
            secs(median),
            secs(max),
            secs(limit)
        );
        judge(
            &mut met,
            &mut misses,
            max <= limit,
            format!(
                "{name}: detection ≤ interval + query timeout + 50 ms (worst {} s)",
                secs(max)
            ),
        );
    }

    let _ = writeln!(md, "\n## Targets\n");
    for line in &met {
        let _ = writeln!(md, "- met: {line}");
    }
    for line in &misses {
        let _ = writeln!(md, "- **missed**: {line}");
    }
    if misses.is_empty() {
        let _ = writeln!(md, "\nEvery target met in this run.");
    }
    md
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn judge(met: &mut Vec<String>, misses: &mut Vec<String>, ok: bool, line: String) {
    if ok {
        met.push(line);
    } else {
        misses.push(line);
    }
}
