//! `make demo`: the real thing end to end. A MariaDB primary and replica, a
//! remora beside each, HAProxy running the shipped config in front, and a
//! scripted story printed once a second: the replica's lag, what remora
//! answers HAProxy's main pool, and what HAProxy actually applied.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use tokio::time::{Instant, sleep};

use crate::haproxy::{Release, ServerStat};
use crate::{Engine, Stack, agent_request};

/// remora's configuration for the demo: the production shape, compressed in
/// time, with the three pools `haproxy/haproxy.cfg` asks for.
const DEMO_REMORA: &str = "poll: {interval: 500ms, stale_after: 5s}
policy:
  full_weight_below: 2s
  min_weight_at: 8s
  min_weight: 10%
  drain_at: 12s
  down_at: 16s
  recover_after: 3
pools:
  main: {}
  backup: {drain_at: 1h, down_at: 2h}
  writer: {role: primary}
";

#[derive(Debug, Clone, Copy)]
enum Action {
    Nothing,
    /// The intended delay (`MASTER_DELAY`, `SOURCE_DELAY`), in seconds: with steady writes the
    /// replica's lag climbs to it (and steps down when it is lowered).
    Delay(u64),
    Break,
    Fix,
}

struct Phase {
    title: &'static str,
    action: Action,
    /// The phase ends once it has lasted `at_least` and HAProxy shows this...
    until: fn(&ServerStat) -> bool,
    at_least: Duration,
    /// ...or after `at_most`, whatever it shows.
    at_most: Duration,
}

const CONFLICT_ID: u32 = 4242;

fn phases() -> Vec<Phase> {
    let anything = |_: &ServerStat| true;
    let full = |s: &ServerStat| s.status == "UP" && s.weight == 100;
    let seconds = Duration::from_secs;
    vec![
        Phase {
            title: "healthy",
            action: Action::Nothing,
            until: anything,
            at_least: seconds(3),
            at_most: seconds(3),
        },
        Phase {
            title: "lag grows (delay 120s)",
            action: Action::Delay(120),
            until: |s| s.status.starts_with("DOWN"),
            at_least: seconds(1),
            at_most: seconds(40),
        },
        Phase {
            title: "catching up (delay 10s)",
            action: Action::Delay(10),
            until: anything,
            at_least: seconds(4),
            at_most: seconds(4),
        },
        Phase {
            title: "catching up (delay 5s)",
            action: Action::Delay(5),
            until: anything,
            at_least: seconds(4),
            at_most: seconds(4),
        },
        Phase {
            title: "caught up (delay 0)",
            action: Action::Delay(0),
            until: full,
            at_least: seconds(2),
            at_most: seconds(20),
        },
        Phase {
            title: "replication broken (dup row)",
            action: Action::Break,
            until: |s| s.status.starts_with("DOWN"),
            at_least: seconds(2),
            at_most: seconds(20),
        },
        Phase {
            title: "replication fixed",
            action: Action::Fix,
            until: full,
            at_least: seconds(2),
            at_most: seconds(30),
        },
    ]
}

/// Runs the story; everything it started is stopped when it returns, and on
/// Ctrl-C (the caller drops this future).
pub async fn run(remora_bin: &Path, on: (Engine, Release)) -> Result<()> {
    println!(
        "starting a {} primary and replica, a remora beside each, and HAProxy {} \
         (haproxy/haproxy.cfg), all on 127.0.0.1; lab credentials root/secret...",
        on.0.label(),
        on.1.version().unwrap_or_else(|err| format!("({err:#})"))
    );
    let stack = Stack::start_on(on, remora_bin, DEMO_REMORA, 2).await?;
    let (pair, haproxy) = (&stack.pair, &stack.haproxy);
    println!(
        "primary 127.0.0.1:{} (remora {}), replica 127.0.0.1:{} (remora {})",
        pair.primary.port, stack.on_primary.agent, pair.replica.port, stack.on_replica.agent
    );
    println!(
        "HAProxy: reads {}, writes {}, stats http://{}/\n",
        haproxy.binds.mysql, haproxy.binds.writer, haproxy.binds.stats
    );
    println!(
        "policy: 100% below 2s of lag, falling to 10% at 8s, drain at 12s, down at 16s;\n\
         a better verdict needs 3 consecutive polls (every 500ms); HAProxy asks every 1s\n"
    );
    println!(
        "{:>5}  {:<30} {:>6}  {:<40} HAProxy mysql_main/replica",
        "time", "phase", "lag", "remora (main pool)"
    );

    let _writes = pair.keep_writing(Duration::from_millis(100));
    let started = Instant::now();
    for phase in phases() {
        match phase.action {
            Action::Nothing => {}
            Action::Delay(seconds) => pair.start_lag(seconds).await?,
            Action::Break => pair.break_replication(CONFLICT_ID).await?,
            Action::Fix => pair.fix_replication(CONFLICT_ID).await?,
        }
        let phase_started = Instant::now();
        loop {
            let reply = agent_request(stack.on_replica.agent, b"main\n").await?;
            let reply = reply.trim_end();
            let lag = pair
                .replica_status()
                .await?
                .seconds_behind
                .map_or("NULL".to_owned(), |s| format!("{s}s"));
            let applied = haproxy.server("mysql_main", "replica").await?;
            println!(
                "{:>4}s  {:<30} {:>6}  {:<40} {} weight {}",
                started.elapsed().as_secs(),
                phase.title,
                lag,
                reply,
                applied.status,
                applied.weight,
            );
            let elapsed = phase_started.elapsed();
            if (elapsed >= phase.at_least && (phase.until)(&applied)) || elapsed >= phase.at_most {
                break;
            }
            sleep(Duration::from_secs(1)).await;
        }
    }
    println!("\ndone; stopping HAProxy, both remoras and both servers.");
    Ok(())
}
