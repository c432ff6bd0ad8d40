//! Why remora did what it did: `/events` lists each change of what the agent
//! answered with the inputs behind it, `/history` every poll, as JSON and
//! CSV, and `/status` whether the lag is growing. On the real pair, with lag
//! induced on the replica.

mod common;

use anyhow::{Context, Result};
use common::drained_replica;
use remora_lab::Pair;
use serde_json::Value;

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn events_say_what_changed_and_why_and_history_keeps_every_poll() -> Result<()> {
    let pair = Pair::start().await?;
    let (remora, _writes) = drained_replica(&pair).await?;
    let (_, body) = remora.get("/events").await?;
    let events: Value = serde_json::from_str(&body)?;
    let main: Vec<&Value> = events["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter(|e| e["pool"] == "main")
        .collect();
    // Newest first: the drain, then the weights it fell through, from 100%.
    assert!(
        main[0]["to"]
            .as_str()
            .is_some_and(|to| to.starts_with("up drain")),
        "{main:#?}"
    );
    let oldest = main.last().context("an event")?;
    assert_eq!(oldest["from"], "up ready 100%", "{main:#?}");
    assert!(main.len() >= 3, "fell through weights: {main:#?}");
    let times: Vec<&str> = main.iter().filter_map(|e| e["at"].as_str()).collect();
    assert_eq!(times.len(), main.len(), "every event has its time");
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let drain = main[0];
    let lag = drain["inputs"]["lag"]
        .as_f64()
        .context("the lag behind the drain")?;
    assert!(lag >= 6.0, "{drain}");
    assert_eq!(drain["inputs"]["source"], "replica_status", "{drain}");
    assert_eq!(drain["inputs"]["io_thread"], "Yes", "{drain}");
    assert_eq!(
        drain["reason"],
        format!("lag {lag:.1}s; falling behind"),
        "{drain}"
    );

    // The lag grows a second per second under MASTER_DELAY with writes
    // flowing: falling behind, and no way back to announce.
    let status = remora.status().await?;
    let rate = status["lag"]["rate"].as_f64().context("a lag rate")?;
    assert!((0.5..1.5).contains(&rate), "{status}");
    assert_eq!(status["lag"]["eta_seconds"], Value::Null, "{status}");
    let (_, metrics) = remora.get("/metrics").await?;
    assert!(metrics.contains("\nremora_lag_rate "), "{metrics}");
    assert!(!metrics.contains("\nremora_lag_eta_seconds "), "{metrics}");

    // Every poll is in the history, with target and published verdicts.
    let polls = remora.polls().await?;
    let (_, body) = remora.get("/history").await?;
    let history: Value = serde_json::from_str(&body)?;
    let samples = history["samples"].as_array().context("samples")?;
    assert!(
        samples.len() as u64 + 2 >= polls,
        "{} samples, {polls} polls",
        samples.len()
    );
    assert_eq!(history["pools"], serde_json::json!(["default", "main"]));
    let (code, csv) = remora.get("/history?format=csv").await?;
    assert_eq!(code, 200);
    let mut lines = csv.lines();
    let header = lines.next().context("a header")?;
    assert!(header.starts_with("t,lag,source,"), "{header}");
    assert!(
        header.ends_with(",main_target,main_verdict,main_weight,main_reason"),
        "{header}"
    );
    let verdict_column = header
        .split(',')
        .position(|c| c == "main_verdict")
        .context("column")?;
    let verdicts: Vec<&str> = lines
        .filter_map(|line| line.split(',').nth(verdict_column))
        .collect();
    assert_eq!(verdicts.first(), Some(&"up"), "{csv}");
    assert!(verdicts.contains(&"drain"), "{csv}");
    assert_eq!(remora.get("/history?format=xml").await?.0, 400);
    Ok(())
}
