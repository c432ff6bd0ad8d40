//! Heartbeat lag with the real pt-heartbeat (percona-toolkit) writing on a real
//! MariaDB primary: sub-second lag, a dead writer noticed, a frozen primary
//! seen where `Seconds_Behind_Master` shows nothing.
// This test times a real process with the wall clock, on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use common::{mysql_section, remora_bin, weight};
use remora_lab::heartbeat::{self, PtHeartbeat};
use remora_lab::{Engine, Pair, Remora, wait_until};
use serde_json::Value;

const LATEST_ROW: &str = "SELECT ts FROM heartbeat.heartbeat ORDER BY ts DESC LIMIT 1";

async fn status(remora: &Remora) -> Result<Value> {
    Ok(serde_json::from_str(&remora.get("/status").await?.1)?)
}

/// `2026-11-25T16:25:20.000740` (pt-heartbeat `--utc`) or an RFC 3339 time.
fn parse_time(text: &str) -> Result<SystemTime> {
    let text = if text.ends_with('Z') {
        text.to_owned()
    } else {
        format!("{text}Z")
    };
    humantime::parse_rfc3339_weak(&text).with_context(|| format!("time {text:?}"))
}

on_servers!(heartbeat_lag_is_sub_second_and_agrees_with_pt_heartbeat);
async fn heartbeat_lag_is_sub_second_and_agrees_with_pt_heartbeat(engine: Engine) -> Result<()> {
    let pair = Pair::start_on(engine).await?;
    let _writer = PtHeartbeat::start(&pair.primary, &pair.primary.dir).await?;
    // A delayed replica: the heartbeat row it has applied is about 3s old.
    pair.start_lag(3).await?;
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\nlag: {{source: heartbeat, heartbeat_timezone: utc}}\n",
            mysql_section(pair.replica.port)
        ),
    )
    .await?;
    let deducting = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\nlag: {{heartbeat_timezone: utc, subtract_sql_delay: true}}\n",
            mysql_section(pair.replica.port)
        ),
    )
    .await?;
    pair.wait_for(Duration::from_secs(20), "delayed and applying", |s| {
        s.sql_delay == 3 && s.seconds_behind.is_some_and(|lag| lag >= 2)
    })
    .await?;
    // The delay may hold back the first row's insert after the table
    // exists: wait until both remoras have polled a row.
    for watching in [&remora, &deducting] {
        wait_until(
            "remora to decide the lag by the heartbeat",
            Duration::from_secs(20),
            async || {
                Ok((status(watching).await?["heartbeat"]["decided_lag"] == true).then_some(()))
            },
        )
        .await?;
    }

    let mut compared = 0;
    let mut worst = Duration::ZERO;
    for _ in 0..30 {
        let status = status(&remora).await?;
        // The row the replica holds right now, read by the test itself.
        let ts = pair
            .replica
            .value(LATEST_ROW)
            .await?
            .context("a heartbeat row on the replica")?;
        assert_eq!(status["lag"]["source"], "heartbeat", "{status}");
        assert_eq!(status["heartbeat"]["decided_lag"], true, "{status}");
        // Compare only when remora's poll saw the same row.
        if status["heartbeat"]["ts"] == ts.as_str() {
            let polled = parse_time(status["last_poll"]["at"].as_str().context("poll time")?)?;
            let truth = polled.duration_since(parse_time(&ts)?)?;
            let reported =
                Duration::from_secs_f64(status["lag"]["seconds"].as_f64().context("lag")?);
            // The row's age is read during the poll and the poll's time
            // taken at its end: they may differ by the poll's own length.
            let poll = Duration::from_secs_f64(
                status["last_poll"]["duration_ms"]
                    .as_f64()
                    .context("poll duration")?
                    / 1e3,
            );
            let off = reported.abs_diff(truth).saturating_sub(poll);
            worst = worst.max(off);
            compared += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    eprintln!("heartbeat lag vs the row's age: worst difference {worst:?} over {compared} samples");
    assert!(compared >= 5, "only {compared} comparable samples");
    assert!(worst <= Duration::from_millis(50), "off by {worst:?}");

    // pt-heartbeat's own --check on the same replica, bracketed by two
    // reads of remora's lag. The true lag rises at most a second per second
    // and drops only when a row applies, so between the reads --check can
    // differ from them by at most the time the bracket took, plus a poll
    // interval (remora's figure is from its last poll) and --check's
    // rounding to hundredths.
    let lag_now = async || -> Result<f64> {
        status(&remora).await?["lag"]["seconds"]
            .as_f64()
            .context("lag")
    };
    let bracket = std::time::Instant::now();
    let before = lag_now().await?;
    let checked = heartbeat::check(&pair.replica, 1)?;
    let after = lag_now().await?;
    let window = bracket.elapsed().as_secs_f64() + 0.2 + 0.05;
    assert!(
        after - window <= checked && checked <= before + window,
        "pt-heartbeat --check {checked}s, remora {before}s before and {after}s after, \
         {window:.2}s apart at most"
    );
    let lag = after;
    assert!(lag > 2.0, "the intended 3s delay shows: {lag}");
    // The same replica with its intended delay subtracted is nearly current.
    let deducted = status(&deducting).await?;
    let lag = deducted["lag"]["seconds"].as_f64().context("lag")?;
    assert!(lag < 1.5, "{deducted}");
    assert_eq!(deducting.reply().await?, "up ready 100%");
    Ok(())
}

on_servers!(a_dead_heartbeat_writer_falls_back_to_replica_status_and_says_so);
async fn a_dead_heartbeat_writer_falls_back_to_replica_status_and_says_so(
    engine: Engine,
) -> Result<()> {
    let pair = Pair::start_on(engine).await?;
    let mut writer = PtHeartbeat::start(&pair.primary, &pair.primary.dir).await?;
    let _writes = pair.keep_writing(Duration::from_millis(100));
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\nlag: {{heartbeat_timezone: utc, heartbeat_writer_timeout: 2s}}\n",
            mysql_section(pair.replica.port)
        ),
    )
    .await?;
    assert_eq!(status(&remora).await?["lag"]["source"], "heartbeat");
    assert_eq!(remora.reply().await?, "up ready 100%");

    // Replication goes on (the writes), the heartbeat row stops moving.
    writer.kill();
    let (reply, took) = remora
        .wait_reply(Duration::from_secs(10), |r| {
            r.contains("heartbeat writer stale")
        })
        .await?;
    eprintln!("dead writer noticed after {took:?}: {reply}");
    assert!(
        reply.starts_with("up ready 100% #lag 0.0s (replica status: heartbeat writer stale"),
        "every replica would look lagged; remora falls back instead: {reply}"
    );
    let status = status(&remora).await?;
    assert_eq!(status["lag"]["source"], "replica_status");
    assert_eq!(status["heartbeat"]["state"], "writer stale");
    Ok(())
}

on_servers!(with_a_primary_connection_a_dead_writer_is_noticed_even_when_nothing_else_is_written);
async fn with_a_primary_connection_a_dead_writer_is_noticed_even_when_nothing_else_is_written(
    engine: Engine,
) -> Result<()> {
    let pair = Pair::start_on(engine).await?;
    let mut writer = PtHeartbeat::start(&pair.primary, &pair.primary.dir).await?;
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}
lag:
  heartbeat_timezone: utc
  heartbeat_writer_timeout: 2s
  primary: {{port: {}, user: remora, password_env: REMORA_MYSQL_PASSWORD}}
",
            mysql_section(pair.replica.port),
            pair.primary.port
        ),
    )
    .await?;
    let before = status(&remora).await?;
    assert_eq!(before["lag"]["source"], "heartbeat", "{before}");
    assert!(
        before["heartbeat"]["primary_seconds"].as_f64().is_some(),
        "{before}"
    );

    writer.kill();
    let (reply, took) = remora
        .wait_reply(Duration::from_secs(10), |r| {
            r.contains("heartbeat writer stale")
        })
        .await?;
    eprintln!("dead writer noticed via the primary after {took:?}: {reply}");
    assert_eq!(status(&remora).await?["lag"]["source"], "replica_status");
    Ok(())
}

on_servers!(a_frozen_primary_shows_as_growing_heartbeat_lag_while_replica_status_says_zero);
async fn a_frozen_primary_shows_as_growing_heartbeat_lag_while_replica_status_says_zero(
    engine: Engine,
) -> Result<()> {
    let pair = Pair::start_on(engine).await?;
    let _writer = PtHeartbeat::start(&pair.primary, &pair.primary.dir).await?;
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}
lag: {{heartbeat_timezone: utc, heartbeat_writer_timeout: 2s}}
policy: {{full_weight_below: 1s, min_weight_at: 6s, drain_at: 20s, down_at: 40s}}
",
            mysql_section(pair.replica.port)
        ),
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");

    pair.primary.freeze()?;
    let outcome = remora
        .wait_reply(Duration::from_secs(15), |r| {
            weight(r).is_some_and(|w| w < 50)
        })
        .await;
    let replica_says = pair.replica_status().await;
    pair.primary.thaw()?;
    let (reply, _) = outcome?;
    let replica_says = replica_says?;
    assert!(reply.contains("#lag "), "{reply}");
    assert_eq!(
        (
            replica_says.io_running.as_str(),
            replica_says.sql_running.as_str(),
            replica_says.seconds_behind
        ),
        ("Yes", "Yes", Some(0)),
        "replica status sees nothing wrong"
    );
    Ok(())
}
