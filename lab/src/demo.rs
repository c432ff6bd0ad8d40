//! `make demo`: the real thing end to end. A MariaDB primary and replica, a
//! remora beside the replica, and a scripted story told through what remora
//! answers, printed once a second.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use tokio::time::{Instant, sleep};

use crate::{Pair, Remora};

/// remora's policy for the demo: the production shape, compressed in time.
const DEMO_POLICY: &str = "poll: {interval: 500ms, stale_after: 5s}
policy:
  full_weight_below: 2s
  min_weight_at: 8s
  min_weight: 10%
  drain_at: 12s
  down_at: 16s
  recover_after: 3
";

#[derive(Debug, Clone, Copy)]
enum Action {
    Nothing,
    StartLag,
    StopLag,
    Break,
    Fix,
}

struct Phase {
    title: &'static str,
    action: Action,
    /// The phase ends when remora's reply satisfies this...
    until: fn(&str) -> bool,
    /// ...and has lasted at least this long.
    at_least: Duration,
    at_most: Duration,
}

const CONFLICT_ID: u32 = 4242;

fn phases() -> Vec<Phase> {
    vec![
        Phase {
            title: "healthy",
            action: Action::Nothing,
            until: |_| true,
            at_least: Duration::from_secs(3),
            at_most: Duration::from_secs(3),
        },
        Phase {
            title: "lag grows (MASTER_DELAY=120)",
            action: Action::StartLag,
            until: |reply| reply.starts_with("down"),
            at_least: Duration::from_secs(1),
            at_most: Duration::from_secs(40),
        },
        Phase {
            title: "lag cleared (MASTER_DELAY=0)",
            action: Action::StopLag,
            until: |reply| reply == "up ready 100%",
            at_least: Duration::from_secs(2),
            at_most: Duration::from_secs(40),
        },
        Phase {
            title: "replication broken (dup row)",
            action: Action::Break,
            until: |reply| reply.starts_with("down #sql thread error"),
            at_least: Duration::from_secs(3),
            at_most: Duration::from_secs(20),
        },
        Phase {
            title: "replication fixed",
            action: Action::Fix,
            until: |reply| reply == "up ready 100%",
            at_least: Duration::from_secs(3),
            at_most: Duration::from_secs(30),
        },
    ]
}

/// Runs the story; everything it started is stopped when it returns, and on
/// Ctrl-C (the caller drops this future).
pub async fn run(remora_bin: &Path) -> Result<()> {
    println!("starting a MariaDB primary and replica on loopback (lab credentials root/secret)...");
    let pair = Pair::start().await?;
    println!(
        "primary 127.0.0.1:{}, replica 127.0.0.1:{}; starting remora beside the replica...",
        pair.primary.port, pair.replica.port
    );
    let mysql = format!(
        "mysql:\n  port: {}\n  user: remora\n  password_env: REMORA_MYSQL_PASSWORD\n",
        pair.replica.port
    );
    let remora = Remora::start(remora_bin, &format!("{mysql}{DEMO_POLICY}")).await?;
    println!(
        "remora agent on {} (try: nc {} {}), http on {}\n",
        remora.agent,
        remora.agent.ip(),
        remora.agent.port(),
        remora.http
    );
    println!(
        "policy: 100% below 2s of lag, falling to 10% at 8s, drain at 12s, down at 16s;\n\
         a better verdict needs 3 consecutive polls (every 500ms)\n"
    );
    println!(
        "{:>5}  {:<30} {:>8} {:>7}  remora's reply",
        "time", "phase", "lag", "delay"
    );

    let _writes = pair.keep_writing(Duration::from_millis(100));
    let started = Instant::now();
    for phase in phases() {
        match phase.action {
            Action::Nothing => {}
            Action::StartLag => pair.start_lag(120).await?,
            Action::StopLag => pair.stop_lag().await?,
            Action::Break => pair.break_replication(CONFLICT_ID).await?,
            Action::Fix => pair.fix_replication(CONFLICT_ID).await?,
        }
        let phase_started = Instant::now();
        loop {
            let reply = remora.reply().await?;
            let status = pair.slave_status().await?;
            let lag = status
                .seconds_behind_master
                .map_or("NULL".to_owned(), |s| format!("{s}s"));
            println!(
                "{:>4}s  {:<30} {:>8} {:>7}  {reply}",
                started.elapsed().as_secs(),
                phase.title,
                lag,
                format!("{}s", status.sql_delay),
            );
            let elapsed = phase_started.elapsed();
            if (elapsed >= phase.at_least && (phase.until)(&reply)) || elapsed >= phase.at_most {
                break;
            }
            sleep(Duration::from_secs(1)).await;
        }
    }
    println!("\ndone; stopping remora and both servers.");
    Ok(())
}
