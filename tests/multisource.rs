//! Multi-source replication, for real: one replica with named connections
//! (MySQL's channels) `a` and `b` to two primaries, on MariaDB 10.11,
//! MariaDB 11 and MySQL 9. By default the worst channel decides;
//! `lag.channels` names the ones that matter.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{mysql_section, remora_bin, weight};
use remora_lab::multisource::MultiSource;
use remora_lab::{Engine, Remora};

const POLICY: &str = "poll: {interval: 200ms}
policy: {full_weight_below: 1s, min_weight_at: 5s, drain_at: 30s, down_at: 60s, recover_after: 2}
";

on_servers!(
    the_worst_channel_decides_unless_channels_names_the_ones_that_matter,
    mysql
);
async fn the_worst_channel_decides_unless_channels_names_the_ones_that_matter(
    engine: Engine,
) -> Result<()> {
    let multi = MultiSource::start(engine).await?;
    let all = Remora::start(
        remora_bin(),
        &format!("{}{POLICY}", mysql_section(multi.replica.port)),
    )
    .await?;
    let only_a = Remora::start(
        remora_bin(),
        &format!(
            "{}{POLICY}lag: {{channels: [a]}}\n",
            mysql_section(multi.replica.port)
        ),
    )
    .await?;
    assert_eq!(all.reply().await?, "up ready 100%");
    let (_, body) = all.get("/status").await?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    let channels: Vec<&str> = status["replication"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["channel"].as_str())
        .collect();
    assert_eq!(channels, ["a", "b"], "one row per named connection");

    // Only connection b falls behind.
    let _writes = multi.keep_writing("b", Duration::from_millis(100));
    multi.delay("b", 60).await?;
    let (reply, _) = all
        .wait_reply(Duration::from_secs(15), |r| {
            weight(r).is_some_and(|w| w < 80)
        })
        .await?;
    // `lag 2.0s on b`, and which way it goes when that is known.
    let reason = reply.split("; ").next().unwrap_or_default();
    assert!(
        reason.ends_with(" on b"),
        "the lagging channel is named: {reply}"
    );
    assert_eq!(
        only_a.reply().await?,
        "up ready 100%",
        "b does not matter here"
    );

    // Channel b breaks: down by default, still up where only a matters.
    multi.delay("b", 0).await?;
    multi.break_connection("b", 7).await?;
    all.wait_reply(Duration::from_secs(5), |r| {
        r == "down #sql thread error 1062 on b"
    })
    .await?;
    assert_eq!(only_a.reply().await?, "up ready 100%");
    Ok(())
}
