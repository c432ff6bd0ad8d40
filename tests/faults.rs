//! Faults on a real MariaDB primary/replica pair, one after another, under a
//! remora that reads lag from pt-heartbeat. For each: the verdict changes
//! within a bound derived from the configuration, legitimate agent checks
//! (100 a second throughout) keep their latency, and once the fault is
//! undone the same remora process returns to `up ready 100%`. The primary
//! takes a write every 100 ms throughout, as a live one would. The measured
//! detection and recovery times are printed as a table.
// This times real processes with the wall clock, on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{Checker, latency_kept, mysql_section, remora_bin, weight};
use mysql_async::prelude::Queryable;
use remora_lab::heartbeat::PtHeartbeat;
use remora_lab::measure::Latency;
use remora_lab::server::{CHANGED_PASSWORD, REMORA_GRANT, REMORA_PASSWORD, REMORA_USER};
use remora_lab::{Pair, Remora};

const INTERVAL: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
const FULL_WEIGHT_BELOW: Duration = Duration::from_secs(2);
const WRITER_TIMEOUT: Duration = Duration::from_secs(2);
/// pt-heartbeat writes once a second: the newest row is up to this old.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);
/// How far a fault may stretch a legitimate check's p99 (see `latency_kept`).
const LATENCY_FACTOR: u32 = 25;
/// Longest wait for a recovery to show.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

fn config(replica: u16) -> String {
    format!(
        "{}poll: {{interval: {}ms, stale_after: 3s}}
lag: {{source: auto, heartbeat_timezone: utc, heartbeat_writer_timeout: {}s}}
policy:
  full_weight_below: {}s
  min_weight_at: 10s
  drain_at: 30s
  down_at: 60s
  recover_after: 2
",
        mysql_section(replica),
        INTERVAL.as_millis(),
        WRITER_TIMEOUT.as_secs(),
        FULL_WEIGHT_BELOW.as_secs()
    )
}

/// One fault's measurements.
struct Measured {
    name: &'static str,
    detected: Duration,
    bound: Duration,
    reply: String,
    latency: Latency,
}

struct Faults {
    checker: Checker,
    quiet: Latency,
    rows: Vec<Measured>,
}

/// A fault detected, not yet recovered from.
struct Detection {
    name: &'static str,
    started: Instant,
    detected: Duration,
    bound: Duration,
    reply: String,
}

impl Faults {
    /// Waits for the verdict `wanted` accepts after a fault injected at
    /// `started`; it must come within `bound` (checked in `verify`).
    async fn detect(
        &self,
        name: &'static str,
        started: Instant,
        bound: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Detection> {
        let (reply, detected) = self
            .checker
            .wait_for(started, bound * 4, name, wanted)
            .await?;
        Ok(Detection {
            name,
            started,
            detected,
            bound,
            reply,
        })
    }

    /// Waits for full weight after the fault was undone at `undone`.
    async fn recover(&mut self, fault: Detection, undone: Instant) -> Result<()> {
        let (_, recovered) = self
            .checker
            .wait_for(undone, RECOVERY_LIMIT, "full weight", |r| {
                r == "up ready 100%"
            })
            .await
            .with_context(|| format!("recovering from {}", fault.name))?;
        let latency = self.checker.latency(fault.started, Instant::now());
        println!(
            "{:<38} detected in {:>5.2}s (bound {:.2}s), recovered in {:>5.2}s; checks {latency}\n    {}",
            fault.name,
            fault.detected.as_secs_f64(),
            fault.bound.as_secs_f64(),
            recovered.as_secs_f64(),
            fault.reply
        );
        self.rows.push(Measured {
            name: fault.name,
            detected: fault.detected,
            bound: fault.bound,
            reply: fault.reply,
            latency,
        });
        Ok(())
    }

    fn verify(&self) -> Result<()> {
        println!("quiet checks: {}", self.quiet);
        for row in &self.rows {
            ensure!(
                row.detected <= row.bound,
                "{}: detected after {:?}, bound {:?} ({})",
                row.name,
                row.detected,
                row.bound,
                row.reply
            );
            ensure!(
                latency_kept(self.quiet, row.latency, LATENCY_FACTOR),
                "{}: checks slowed from {} to {}",
                row.name,
                self.quiet,
                row.latency
            );
        }
        // Error numbers only: the server's error text can hold row data
        // (`Duplicate entry '7' for key 'PRIMARY'`).
        let leaked = self
            .checker
            .any_reply(|r| r.contains("Duplicate") || r.contains("entry") || r.contains('\''));
        ensure!(leaked.is_none(), "server error text in a reply: {leaked:?}");
        let failures = self.checker.failures();
        ensure!(
            failures.is_empty(),
            "checks that got no answer: {failures:?}"
        );
        Ok(())
    }
}

fn not_full(reply: &str) -> bool {
    weight(reply).is_none_or(|w| w < 100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn every_fault_is_detected_in_bound_served_fast_and_recovered_without_a_restart() -> Result<()>
{
    let mut pair = Pair::start().await?;
    let mut writer = Some(PtHeartbeat::start(&pair.primary, &pair.primary.dir).await?);
    // Traffic on the primary, as in production: replication positions move.
    let _traffic = pair.keep_writing(Duration::from_millis(100));
    let mut remora = Remora::start(remora_bin(), &config(pair.replica.port)).await?;
    let pid = remora.pid();
    let checker = Checker::start(remora.agent, 100);
    checker
        .wait_for(Instant::now(), RECOVERY_LIMIT, "full weight", |r| {
            r == "up ready 100%"
        })
        .await?;
    let quiet_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet = checker.latency(quiet_from, Instant::now());
    let mut faults = Faults {
        checker,
        quiet,
        rows: Vec::new(),
    };
    let one_poll = INTERVAL + QUERY_TIMEOUT;
    let lag_shows = HEARTBEAT_PERIOD + FULL_WEIGHT_BELOW + INTERVAL + QUERY_TIMEOUT;
    let unreachable = INTERVAL + CONNECT_TIMEOUT + QUERY_TIMEOUT;

    let started = Instant::now();
    pair.replica.kill();
    let fault = faults
        .detect(
            "replica killed (SIGKILL), restarted",
            started,
            unreachable,
            |r| r.starts_with("down #mysql unreachable"),
        )
        .await?;
    let undone = Instant::now();
    pair.replica.restart().await?;
    faults.recover(fault, undone).await?;

    let started = Instant::now();
    pair.replica.freeze()?;
    let fault = faults
        .detect(
            "replica frozen (SIGSTOP), thawed",
            started,
            unreachable,
            |r| r.starts_with("down #mysql") && r.contains("timeout"),
        )
        .await?;
    let undone = Instant::now();
    pair.replica.thaw()?;
    faults.recover(fault, undone).await?;

    // break_replication returns once the SQL thread has stopped.
    pair.break_replication(7).await?;
    let started = Instant::now();
    let fault = faults
        .detect(
            "SQL thread error (conflicting row)",
            started,
            one_poll,
            |r| r.starts_with("down #") && r.contains("1062"),
        )
        .await?;
    let undone = Instant::now();
    pair.fix_replication(7).await?;
    faults.recover(fault, undone).await?;

    let started = Instant::now();
    pair.replica.exec(&["STOP SLAVE IO_THREAD"]).await?;
    let fault = faults
        .detect("IO thread stopped", started, lag_shows, not_full)
        .await?;
    let undone = Instant::now();
    pair.replica.exec(&["START SLAVE IO_THREAD"]).await?;
    faults.recover(fault, undone).await?;

    // The primary dies: the replica's IO thread keeps `Connecting`.
    let started = Instant::now();
    pair.primary.kill();
    writer.take();
    let fault = faults
        .detect(
            "primary killed (IO thread Connecting)",
            started,
            lag_shows,
            not_full,
        )
        .await?;
    let io = pair.replica_status().await?.io_running;
    ensure!(io == "Connecting", "IO thread {io}");
    let undone = Instant::now();
    pair.primary.restart().await?;
    writer = Some(PtHeartbeat::start(&pair.primary, &pair.primary.dir).await?);
    faults.recover(fault, undone).await?;

    // Privileges are fixed at login: the sessions are killed to make remora
    // log in again, as any reconnect would.
    let alter = |password: &str| format!("ALTER USER {REMORA_USER}@'%' IDENTIFIED BY '{password}'");
    let started = Instant::now();
    pair.replica.exec(&[&alter(CHANGED_PASSWORD)]).await?;
    pair.replica.kill_sessions(REMORA_USER).await?;
    let fault = faults
        .detect(
            "password changed",
            started,
            one_poll + CONNECT_TIMEOUT,
            |r| r == "down #mysql auth failed (error 1045)",
        )
        .await?;
    let undone = Instant::now();
    pair.replica.exec(&[&alter(REMORA_PASSWORD)]).await?;
    faults.recover(fault, undone).await?;

    let started = Instant::now();
    pair.replica
        .exec(&[&format!(
            "REVOKE {REMORA_GRANT} ON *.* FROM {REMORA_USER}@'%'"
        )])
        .await?;
    pair.replica.kill_sessions(REMORA_USER).await?;
    let fault = faults
        .detect("grant revoked", started, one_poll + CONNECT_TIMEOUT, |r| {
            r.starts_with("down #mysql error 1227")
        })
        .await?;
    let undone = Instant::now();
    pair.replica
        .exec(&[&format!("GRANT {REMORA_GRANT} ON *.* TO {REMORA_USER}@'%'")])
        .await?;
    faults.recover(fault, undone).await?;

    // A poll that hangs after connecting: another session write-locks the
    // heartbeat table the poll reads.
    let mut locker = pair.replica.conn().await?;
    let started = Instant::now();
    locker
        .query_drop("LOCK TABLES heartbeat.heartbeat WRITE")
        .await?;
    let fault = faults
        .detect(
            "poll hangs (heartbeat table locked)",
            started,
            unreachable,
            |r| r.starts_with("down #mysql") && r.contains("timeout"),
        )
        .await?;
    let undone = Instant::now();
    locker.query_drop("UNLOCK TABLES").await?;
    locker.disconnect().await?;
    faults.recover(fault, undone).await?;

    let started = Instant::now();
    writer.take();
    let fault = faults
        .detect(
            "heartbeat writer dead",
            started,
            HEARTBEAT_PERIOD + WRITER_TIMEOUT + one_poll,
            |r| r.contains("heartbeat writer stale"),
        )
        .await?;
    let undone = Instant::now();
    writer = Some(PtHeartbeat::start(&pair.primary, &pair.primary.dir).await?);
    faults.recover(fault, undone).await?;
    drop(writer);

    ensure!(remora.is_running(), "remora exited:\n{}", remora.log());
    ensure!(remora.pid() == pid, "the same remora process throughout");
    faults.verify()
}
