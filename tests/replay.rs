//! Replay: a trace recorded from a live remora (the real pair, lag induced
//! and removed) replayed under the same configuration gives the verdicts it
//! published, poll by poll; under relaxed thresholds the difference one
//! would predict; and `remora --replay` prints the timeline, writes the
//! chart, and names the line and column of a malformed trace.

mod common;

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use common::{drained_replica, remora_bin};
use remora::config::Config;
use remora::replay;
use remora_lab::{Pair, wait_until};

/// Per row of the CSV export: each pool's published (verdict, weight).
fn published(csv: &str) -> Result<Vec<Vec<(String, u8)>>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().context("a header")?.split(',').collect();
    let verdicts: Vec<usize> = (header.iter().enumerate())
        .filter(|(_, name)| name.ends_with("_verdict"))
        .map(|(at, _)| at)
        .collect();
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            verdicts
                .iter()
                .map(|&at| Ok((cells[at].to_owned(), cells[at + 1].parse()?)))
                .collect()
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn a_recorded_incident_replays_to_the_verdicts_remora_published() -> Result<()> {
    let pair = Pair::start().await?;
    let (remora, _writes) = drained_replica(&pair).await?;
    let ask = async |pool: &[u8]| remora_lab::agent_request(remora.agent, pool).await;
    pair.stop_lag().await?;
    wait_until(
        "pool main back at full weight",
        Duration::from_secs(30),
        async || Ok((ask(b"main\n").await? == "up ready 100%\n").then_some(())),
    )
    .await?;
    let (_, csv) = remora.get("/history?format=csv").await?;
    let live = published(&csv)?;

    // The same configuration, offline: the same verdict at every poll.
    let config = Config::load(&remora.config_path)?;
    let rows = remora::history::trace::parse(&csv)?;
    assert_eq!(rows.len(), live.len());
    let replayed = replay::run(&config, &rows);
    for (i, (sample, recorded)) in replayed.samples.iter().zip(&live).enumerate() {
        let got: Vec<(String, u8)> = (sample.pools.iter())
            .map(|pool| (pool.published.state.to_string(), pool.published.weight))
            .collect();
        assert_eq!(&got, recorded, "row {i}:\n{}", replayed.report());
    }
    // And the same answer lines, reasons included: every change /events
    // recorded live comes out of the replay verbatim, one pipeline for both.
    let (_, events) = remora.get("/events").await?;
    let events: serde_json::Value = serde_json::from_str(&events)?;
    let live_changes: Vec<(String, String, String)> = (events["events"].as_array())
        .context("events")?
        .iter()
        .rev()
        .map(|e| {
            let text = |key: &str| e[key].as_str().unwrap_or_default().to_owned();
            (text("pool"), text("from"), text("to"))
        })
        .collect();
    let replayed_changes: Vec<(String, String, String)> = (replayed.changes.iter())
        .map(|c| (c.pool.clone(), c.from.clone(), c.to.clone()))
        .collect();
    assert!(
        live_changes
            .iter()
            .any(|(_, _, to)| to.contains("; falling behind")),
        "the live run said which way the lag went: {live_changes:#?}"
    );
    assert_eq!(replayed_changes, live_changes, "{}", replayed.report());
    let main = replayed
        .pools
        .iter()
        .position(|p| p == "main")
        .context("pool main")?;
    assert!(replayed.summary(main).drain > 0.0, "{}", replayed.report());

    // Relaxed: drain only at an hour. The same incident never drains main.
    let relaxed = Config::from_yaml(
        "pools:\n  main: {full_weight_below: 1s, min_weight_at: 4s, min_weight: 10%, \
         drain_at: 1h, down_at: 2h, recover_after: 2}\n",
    )?;
    let what_if = replay::run(&relaxed, &rows);
    let summary = what_if.summary(main);
    assert_eq!(summary.drain, 0.0, "{}", what_if.report());
    assert_eq!(summary.lowest_weight, 10, "{}", what_if.report());

    // The command line: the timeline, a summary, and the chart.
    let dir = tempfile::tempdir()?;
    let trace = dir.path().join("incident.csv");
    std::fs::write(&trace, &csv)?;
    let svg = dir.path().join("incident.svg");
    let out = Command::new(remora_bin())
        .arg("--config")
        .arg(&remora.config_path)
        .arg("--replay")
        .arg(&trace)
        .arg("--svg")
        .arg(&svg)
        .output()?;
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("pool main:") && report.contains("-> up drain #lag"),
        "{report}"
    );
    assert!(report.contains("summary:"), "{report}");
    let drawn = std::fs::read_to_string(&svg)?;
    assert!(
        drawn.contains("<svg") && drawn.contains("class=\"lag\""),
        "{drawn}"
    );

    // A malformed trace: exit 2, naming the line and the column.
    std::fs::write(&trace, "t,lag\n0,1\n1,lots\n")?;
    let out = Command::new(remora_bin())
        .arg("--config")
        .arg(&remora.config_path)
        .arg("--replay")
        .arg(&trace)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3, column 2 (lag)"), "{err}");
    Ok(())
}
