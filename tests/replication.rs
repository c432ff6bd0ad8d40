//! remora against a real MariaDB 10.11 primary/replica pair: each test starts
//! its own pair and its own remora process on free ports.
// This test times a real process with the wall clock, on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::{latency_kept, mysql_section, remora_bin, weight};
use remora_lab::measure::Latency;
use remora_lab::{Engine, Pair, Remora};

async fn remora_for(port: u16, rest: &str) -> Result<Remora> {
    Remora::start(remora_bin(), &format!("{}{rest}", mysql_section(port))).await
}

on_servers!(healthy_replica_and_primary_both_get_full_weight);
async fn healthy_replica_and_primary_both_get_full_weight(engine: Engine) -> Result<()> {
    let pair = Pair::start_on(engine).await?;
    let on_replica = remora_for(pair.replica.port, "poll: {interval: 200ms}\n").await?;
    let on_primary = remora_for(pair.primary.port, "poll: {interval: 200ms}\n").await?;

    assert_eq!(on_replica.reply().await?, "up ready 100%");
    assert_eq!(on_primary.reply().await?, "up ready 100%");

    let (code, body) = on_replica.get("/status").await?;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(status["verdict"], "up");
    assert_eq!(status["weight"], 100);
    assert_eq!(status["role"], "replica");
    assert_eq!(status["lag"]["estimated"], false);
    assert_eq!(status["lag"]["seconds"], 0.0);
    assert_eq!(status["replication"][0]["io_thread"], "Yes");
    assert_eq!(status["replication"][0]["sql_thread"], "Yes");
    assert!(
        status["server_version"]
            .as_str()
            .is_some_and(|v| v.contains("MariaDB")),
        "{status}"
    );
    assert_eq!(status["last_poll"]["ok"], true);

    let (code, body) = on_primary.get("/status").await?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(code, 200);
    assert_eq!(status["role"], "primary");
    assert_eq!(status["lag"]["source"], "primary");
    assert_eq!(
        on_primary.get("/health").await?,
        (200, "up ready 100%\n".into())
    );
    Ok(())
}

on_servers!(lag_lowers_the_weight_step_by_step_then_drains_then_downs_and_recovers_gradually);
async fn lag_lowers_the_weight_step_by_step_then_drains_then_downs_and_recovers_gradually(
    engine: Engine,
) -> Result<()> {
    let pair = Pair::start_on(engine).await?;
    let remora = remora_for(
        pair.replica.port,
        "poll: {interval: 200ms}
policy:
  full_weight_below: 1s
  min_weight_at: 5s
  min_weight: 10%
  drain_at: 7s
  down_at: 9s
  recover_after: 3
",
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");

    // MASTER_DELAY holds every event back; with writes flowing the replica's
    // lag climbs one second per second.
    let _writes = pair.keep_writing(Duration::from_millis(100));
    pair.start_lag(120).await?;

    let falling = remora
        .replies_until(Duration::from_secs(30), |r| r.starts_with("up drain"))
        .await?;
    assert_eq!(
        remora.get("/health").await?.0,
        404,
        "drained is 404 for disable-on-404"
    );
    let weights: Vec<u32> = falling.iter().filter_map(|r| weight(r)).collect();
    assert_eq!(weights.first(), Some(&100), "{falling:#?}");
    assert!(
        weights.windows(2).all(|w| w[1] <= w[0]),
        "weights only fall while lag grows: {falling:#?}"
    );
    let partial = weights.iter().filter(|w| (11..100).contains(*w)).count();
    assert!(
        partial >= 3,
        "at least three steps between 100% and 10%: {falling:#?}"
    );
    assert!(
        weights.contains(&10),
        "bottoms out at min_weight: {falling:#?}"
    );
    assert!(falling.last().is_some_and(|r| r.starts_with("up drain #lag 7.")
        || r.starts_with("up drain #lag 8.")), "{falling:#?}");

    let down = remora
        .replies_until(Duration::from_secs(10), |r| r.starts_with("down"))
        .await?;
    assert!(
        down.last().is_some_and(|r| r.starts_with("down #lag")),
        "{down:#?}"
    );
    assert_eq!(remora.get("/health").await?.0, 503);

    // Clear the delay: the backlog applies and lag drops to zero, but the
    // way back up is damped: every step waits for three qualifying polls.
    pair.stop_lag().await?;
    let rising = remora
        .replies_until(Duration::from_secs(30), |r| r == "up ready 100%")
        .await?;
    assert!(
        rising.iter().any(|r| r.contains("recovering 2/3")),
        "recovery is held for recover_after polls: {rising:#?}"
    );
    let up_at = rising.iter().position(|r| r.starts_with("up")).unwrap_or(0);
    assert!(
        rising[..up_at].iter().all(|r| !r.starts_with("up ready")),
        "never up before the window qualifies: {rising:#?}"
    );
    Ok(())
}

on_servers!(broken_replication_is_down_naming_the_errno_and_returns_only_after_recover_after_polls);
async fn broken_replication_is_down_naming_the_errno_and_returns_only_after_recover_after_polls(
    engine: Engine,
) -> Result<()> {
    let pair = Pair::start_on(engine).await?;
    let remora = remora_for(
        pair.replica.port,
        "poll: {interval: 300ms}\npolicy: {recover_after: 3}\n",
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");

    let polls_before = remora.polls().await?;
    pair.break_replication(42).await?;
    let (reply, _) = remora
        .wait_reply(Duration::from_secs(5), |r| r.starts_with("down"))
        .await?;
    assert_eq!(reply, "down #sql thread error 1062");
    // Reported within two polls of the SQL thread stopping (counted in polls,
    // not seconds: a loaded machine stretches both alike). One more may have
    // finished between the reply and this count.
    let polls = remora.polls().await? - polls_before;
    assert!(polls <= 3, "down after {polls} polls");

    let (_, body) = remora.get("/status").await?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(status["replication"][0]["last_sql_error"]["errno"], 1062);
    assert_eq!(status["replication"][0]["sql_thread"], "No");

    pair.fix_replication(42).await?;
    let fixed_at = Instant::now();
    let back = remora
        .replies_until(Duration::from_secs(10), |r| r == "up ready 100%")
        .await?;
    let held = fixed_at.elapsed();
    let one = back.iter().position(|r| r.contains("recovering 1/3"));
    let two = back.iter().position(|r| r.contains("recovering 2/3"));
    assert!(
        matches!((one, two), (Some(a), Some(b)) if a < b),
        "held down through 1/3 and 2/3: {back:#?}"
    );
    assert!(
        back[..back.len() - 1].iter().all(|r| r.starts_with("down")),
        "stays down until it is up at full weight: {back:#?}"
    );
    // Two further polls at 300 ms after the first good one, at the very least.
    assert!(
        held >= Duration::from_millis(550),
        "came back after {held:?}"
    );
    Ok(())
}

on_servers!(io_thread_stopped_makes_an_estimated_lag_grow_and_the_weight_fall);
async fn io_thread_stopped_makes_an_estimated_lag_grow_and_the_weight_fall(
    engine: Engine,
) -> Result<()> {
    let pair = Pair::start_on(engine).await?;
    let remora = remora_for(
        pair.replica.port,
        "poll: {interval: 200ms}
policy:
  full_weight_below: 1s
  min_weight_at: 6s
  min_weight: 10%
  drain_at: 20s
  down_at: 40s
  recover_after: 2
",
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");

    pair.replica.exec(&["STOP SLAVE IO_THREAD"]).await?;
    let status = pair.replica_status().await?;
    ensure!(
        status.seconds_behind.is_none(),
        "MariaDB reports NULL lag with the IO thread stopped: {status:?}"
    );

    let fading = remora
        .replies_until(Duration::from_secs(15), |r| {
            weight(r).is_some_and(|w| w <= 60)
        })
        .await?;
    let estimated = &fading[1..];
    assert!(
        estimated
            .iter()
            .all(|r| r.contains("#lag ~") && r.ends_with("io thread stopped")),
        "NULL lag is estimated, never read as 0: {fading:#?}"
    );
    let weights: Vec<u32> = estimated.iter().filter_map(|r| weight(r)).collect();
    assert!(weights.windows(2).all(|w| w[1] <= w[0]), "{fading:#?}");
    assert!(
        weights.iter().filter(|w| **w < 100).count() >= 3,
        "{fading:#?}"
    );

    let (_, body) = remora.get("/status").await?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(status["lag"]["estimated"], true);
    assert_eq!(status["lag"]["estimated_because"], "io thread stopped");
    assert!(
        status["lag"]["seconds"].as_f64().unwrap_or(0.0) > 2.0,
        "{status}"
    );

    pair.replica.exec(&["START SLAVE IO_THREAD"]).await?;
    remora
        .wait_reply(Duration::from_secs(10), |r| r == "up ready 100%")
        .await?;
    Ok(())
}

on_servers!(killed_replica_is_down_within_connect_timeout_plus_interval_and_back_after_restart);
async fn killed_replica_is_down_within_connect_timeout_plus_interval_and_back_after_restart(
    engine: Engine,
) -> Result<()> {
    let mut pair = Pair::start_on(engine).await?;
    let mut remora = remora_for(
        pair.replica.port,
        "poll: {interval: 500ms, stale_after: 5s}\npolicy: {recover_after: 2}\n",
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");
    let pid = remora.pid();

    let polls_before = remora.polls().await?;
    pair.replica.kill();
    let (reply, _) = remora
        .wait_reply(Duration::from_secs(5), |r| r.starts_with("down"))
        .await?;
    assert!(reply.starts_with("down #mysql unreachable"), "{reply}");
    // A refused connection fails the very next poll (each bounded by
    // connect_timeout); one more may finish between the reply and the count.
    let polls = remora.polls().await? - polls_before;
    assert!(polls <= 2, "down after {polls} polls");

    pair.replica.restart().await?;
    remora
        .wait_reply(Duration::from_secs(15), |r| r == "up ready 100%")
        .await?;
    assert!(remora.is_running());
    assert_eq!(remora.pid(), pid, "the same remora process reconnected");
    Ok(())
}

on_servers!(frozen_replica_is_down_within_stale_after_while_the_agent_answers_in_milliseconds);
async fn frozen_replica_is_down_within_stale_after_while_the_agent_answers_in_milliseconds(
    engine: Engine,
) -> Result<()> {
    let pair = Pair::start_on(engine).await?;
    let remora = remora_for(
        pair.replica.port,
        "poll: {interval: 500ms, stale_after: 3s}\npolicy: {recover_after: 2}\n",
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");
    let quiet = common::timed_checks(
        remora.agent,
        b"",
        "up ready 100%\n",
        100,
        Duration::from_millis(10),
    )
    .await?;

    pair.replica.freeze()?;
    let frozen_at = Instant::now();
    let mut latencies = Vec::new();
    let mut down_after = None;
    // Keep checking through the freeze: the agent must never wait on MySQL.
    while frozen_at.elapsed() < Duration::from_secs(5) {
        let asked = Instant::now();
        let reply = remora.reply().await?;
        latencies.push(asked.elapsed());
        if down_after.is_none() && reply.starts_with("down") {
            assert!(reply.contains("timeout"), "{reply}");
            down_after = Some(frozen_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pair.replica.thaw()?;

    let down_after = down_after.expect("down while frozen");
    assert!(
        down_after <= Duration::from_secs(3),
        "down after {down_after:?}"
    );
    let frozen = Latency::of(latencies);
    assert!(
        latency_kept(quiet, frozen, 25),
        "agent replies while MySQL hangs: {frozen}, quiet {quiet}"
    );

    remora
        .wait_reply(Duration::from_secs(15), |r| r == "up ready 100%")
        .await?;
    Ok(())
}
