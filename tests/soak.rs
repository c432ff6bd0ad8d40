//! Soak: a real pair with pt-heartbeat and traffic, lag rising and falling in
//! cycles (the SQL thread stopped for a while, then started), a fault in
//! every cycle, 200 agent checks a second throughout. At the end remora's
//! RSS and open descriptors must be where they were after the first cycle,
//! every check must have been answered, and every cycle must have shown the
//! lag or fault and then returned to full weight (no verdict stuck).
//!
//! `make soak` runs it for ten minutes (`SOAK_SECONDS`); `make test` runs a
//! short one so it cannot rot.
// This times real processes with the wall clock, on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::{Checker, mysql_section, remora_bin, rss_kib, weight};
use remora_lab::heartbeat::PtHeartbeat;
use remora_lab::measure::open_fds;
use remora_lab::server::REMORA_USER;
use remora_lab::{Pair, Remora};

/// Cycle: the replica's applier waits on a table lock for `LAG_FOR` (the
/// heartbeat's lag grows past the point the weight falls; a stopped SQL
/// thread would be a fault, not lag), then one fault, then a settled pause.
const LAG_FOR: Duration = Duration::from_secs(4);
const FAULT_FOR: Duration = Duration::from_secs(2);
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
const CHECKS_PER_SECOND: u32 = 200;

#[derive(Debug, Clone, Copy)]
enum Fault {
    Freeze,
    KillSessions,
    LockHeartbeat,
    BreakReplication,
}

const FAULTS: [Fault; 4] = [
    Fault::Freeze,
    Fault::KillSessions,
    Fault::LockHeartbeat,
    Fault::BreakReplication,
];

async fn inject(pair: &Pair, fault: Fault, cycle: u32) -> Result<()> {
    match fault {
        Fault::Freeze => {
            pair.replica.freeze()?;
            tokio::time::sleep(FAULT_FOR).await;
            pair.replica.thaw()?;
        }
        Fault::KillSessions => pair.replica.kill_sessions(REMORA_USER).await?,
        Fault::LockHeartbeat => {
            use mysql_async::prelude::Queryable;
            let mut locker = pair.replica.conn().await?;
            locker
                .query_drop("LOCK TABLES heartbeat.heartbeat WRITE")
                .await?;
            tokio::time::sleep(FAULT_FOR).await;
            locker.query_drop("UNLOCK TABLES").await?;
            locker.disconnect().await?;
        }
        Fault::BreakReplication => {
            pair.break_replication(1000 + cycle).await?;
            tokio::time::sleep(FAULT_FOR).await;
            pair.fix_replication(1000 + cycle).await?;
        }
    }
    Ok(())
}

/// Holds a write lock on the table the traffic writes, on the replica: the
/// applier waits behind it, so the heartbeat falls behind for `hold`.
async fn hold_the_applier(pair: &Pair, hold: Duration) -> Result<()> {
    use mysql_async::prelude::Queryable;
    let mut locker = pair.replica.conn().await?;
    locker.query_drop("LOCK TABLES lab.ticks WRITE").await?;
    tokio::time::sleep(hold).await;
    locker.query_drop("UNLOCK TABLES").await?;
    locker.disconnect().await?;
    Ok(())
}

async fn soak(length: Duration) -> Result<()> {
    let pair = Pair::start().await?;
    let _writer = PtHeartbeat::start(&pair.primary, &pair.primary.dir).await?;
    let _traffic = pair.keep_writing(Duration::from_millis(100));
    let mut remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 250ms, stale_after: 3s}}
lag: {{heartbeat_timezone: utc, heartbeat_writer_timeout: 3s}}
policy: {{full_weight_below: 1500ms, min_weight_at: 6s, drain_at: 20s, down_at: 40s, recover_after: 2}}
",
            mysql_section(pair.replica.port)
        ),
    )
    .await?;
    let pid = remora.pid();
    let checker = Checker::start(remora.agent, CHECKS_PER_SECOND);
    let began = Instant::now();
    let mut baseline: Option<(usize, u64)> = None;
    let mut cycle = 0u32;
    let mut stuck = Vec::new();
    while began.elapsed() < length || cycle < 2 {
        cycle += 1;
        // Lag up, then down.
        let lag_from = Instant::now();
        hold_the_applier(&pair, LAG_FOR).await?;
        let lowered = checker
            .wait_for(lag_from, LAG_FOR * 2, "a lowered weight", |r| {
                weight(r).is_some_and(|w| w < 100)
            })
            .await;
        let back = checker
            .wait_for(Instant::now(), RECOVERY_LIMIT, "full weight", |r| {
                r == "up ready 100%"
            })
            .await;
        if lowered.is_err() || back.is_err() {
            stuck.push(format!("cycle {cycle}, lag: {lowered:?} {back:?}"));
        }

        // A fault, then back to full weight.
        let fault = FAULTS[cycle as usize % FAULTS.len()];
        let fault_from = Instant::now();
        inject(&pair, fault, cycle).await?;
        // Killed sessions are reconnected within a poll and may never show.
        let seen = match fault {
            Fault::KillSessions => Ok((String::new(), Duration::ZERO)),
            _ => {
                checker
                    .wait_for(fault_from, RECOVERY_LIMIT, "the fault", |r| {
                        r != "up ready 100%"
                    })
                    .await
            }
        };
        let back = checker
            .wait_for(Instant::now(), RECOVERY_LIMIT, "full weight", |r| {
                r == "up ready 100%"
            })
            .await;
        if seen.is_err() || back.is_err() {
            stuck.push(format!("cycle {cycle}, {fault:?}: {seen:?} {back:?}"));
        }

        let usage = (open_fds(pid), rss_kib(pid));
        println!(
            "{:>5.0}s cycle {cycle:>3} ({fault:?}): {} checks, {} fds, {} KiB",
            began.elapsed().as_secs_f64(),
            checker.count(),
            usage.0,
            usage.1
        );
        baseline.get_or_insert(usage);
    }
    let (start_fds, start_rss) = baseline.expect("at least one cycle");
    let (end_fds, end_rss) = (open_fds(pid), rss_kib(pid));
    let checks = checker.count();
    let failures = checker.failures();
    let latency = checker.latency(began, Instant::now());
    println!(
        "soak: {:.0}s, {cycle} cycles, {checks} checks ({latency}); fds {start_fds} -> {end_fds}, \
         RSS {start_rss} -> {end_rss} KiB",
        began.elapsed().as_secs_f64()
    );
    ensure!(
        remora.is_running() && remora.pid() == pid,
        "remora restarted or died"
    );
    ensure!(stuck.is_empty(), "verdicts stuck: {stuck:#?}");
    ensure!(
        failures.is_empty(),
        "{} checks unanswered: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    ensure!(
        end_fds <= start_fds + 2,
        "descriptors grew: {start_fds} -> {end_fds}"
    );
    ensure!(
        end_rss <= start_rss + (start_rss / 5).max(2048),
        "RSS grew: {start_rss} -> {end_rss} KiB"
    );
    Ok(())
}

/// `make soak`: ten minutes unless `SOAK_SECONDS` says otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: make soak"]
async fn soak_for_ten_minutes() -> Result<()> {
    let seconds = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    soak(Duration::from_secs(seconds)).await
}

/// Two cycles, so the soak itself is exercised by `make test`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MariaDB and pt-heartbeat (percona-toolkit): `make test` installs it and runs this"]
async fn soak_smoke() -> Result<()> {
    soak(Duration::ZERO).await
}
