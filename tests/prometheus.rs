//! remora and Prometheus for real: the shipped alerts pass their unit tests
//! under `promtool`, `/metrics` passes `promtool check metrics`, a real
//! Prometheus scrapes a remora and answers queries on what it scraped, and
//! the shipped alerts and Grafana dashboard name only series remora exports.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{mysql_section, remora_bin};
use remora_lab::prometheus::Prometheus;
use remora_lab::{Pair, Remora, wait_until};

fn shipped(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn promtool(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (Debian's prometheus package)")?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Ok(text)
}

/// The metric families remora's `/metrics` declares (`# TYPE` lines).
fn families(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every `remora_…` name a shipped file uses.
fn remora_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("remora_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

async fn remora_on(pair: &Pair) -> Result<Remora> {
    Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\npools:\n  main: {{drain_at: 10s, down_at: 30s}}\n",
            mysql_section(pair.replica.port)
        ),
    )
    .await
}

#[test]
#[ignore = "needs MariaDB, Prometheus and promtool: `make test` installs it and runs this"]
fn the_shipped_alerts_pass_their_unit_tests() -> Result<()> {
    let rules = shipped("examples/prometheus/alerts.yml");
    let tests = shipped("examples/prometheus/alerts_test.yml");
    promtool(&["check", "rules", &rules.display().to_string()], None)?;
    let out = promtool(&["test", "rules", &tests.display().to_string()], None)?;
    ensure!(out.contains("SUCCESS"), "{out}");
    Ok(())
}

#[tokio::test]
#[ignore = "needs MariaDB, Prometheus and promtool: `make test` installs it and runs this"]
async fn metrics_pass_promtool_and_a_real_prometheus_scrapes_them() -> Result<()> {
    let pair = Pair::start().await?;
    let remora = remora_on(&pair).await?;
    let (code, metrics) = remora.get("/metrics").await?;
    assert_eq!(code, 200);
    // Lint findings are printed and fail the check.
    promtool(&["check", "metrics"], Some(&metrics))?;

    let alerts = shipped("examples/prometheus/alerts.yml");
    let shipped_rules = std::fs::read_to_string(&alerts)?
        .matches("- alert:")
        .count();
    let prometheus = Prometheus::start(&[remora.http], &[&alerts]).await?;
    let weights = wait_until(
        "Prometheus to have scraped remora_weight_percent",
        Duration::from_secs(30),
        async || {
            let found = prometheus.query("remora_weight_percent").await?;
            Ok((found.len() >= 2).then_some(found))
        },
    )
    .await
    .with_context(|| prometheus.log())?;
    let pools: BTreeSet<&str> = weights
        .iter()
        .filter_map(|series| series["metric"]["pool"].as_str())
        .collect();
    assert_eq!(pools, BTreeSet::from(["default", "main"]), "{weights:?}");
    for series in &weights {
        assert_eq!(series["value"][1], "100", "{series}");
        assert_eq!(series["metric"]["job"], "remora", "{series}");
    }
    // The lag is one series, and the shipped alerts load and evaluate.
    let lag = prometheus.query("remora_lag_seconds").await?;
    assert_eq!(lag.len(), 1, "{lag:?}");
    let rules = wait_until(
        "Prometheus to evaluate the shipped alerts",
        Duration::from_secs(30),
        async || {
            let rules = prometheus.rules().await?;
            Ok(
                (rules.len() == shipped_rules && rules.iter().all(|(_, health)| health == "ok"))
                    .then_some(rules),
            )
        },
    )
    .await
    .with_context(|| prometheus.log())?;
    assert!(
        rules
            .iter()
            .any(|(name, _)| name == "RemoraServerOutOfEveryPool"),
        "{rules:?}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs MariaDB, Prometheus and promtool: `make test` installs it and runs this"]
async fn the_shipped_alerts_and_dashboard_use_only_series_remora_exports() -> Result<()> {
    let pair = Pair::start().await?;
    let remora = remora_on(&pair).await?;
    let mut exported = families(&remora.get("/metrics").await?.1);
    // The clusters' series come from a remora watching targets.
    let fixtures = remora_lab::bench::fleet_fixtures(2).await?;
    let central = Remora::start(remora_bin(), &remora_lab::bench::fleet_yaml(&fixtures)).await?;
    exported.extend(families(&central.get("/metrics").await?.1));
    for file in [
        "examples/prometheus/alerts.yml",
        "examples/grafana/remora.json",
    ] {
        let text = std::fs::read_to_string(shipped(file))?;
        let used = remora_names(&text);
        ensure!(!used.is_empty(), "{file} names no remora series");
        let unknown: Vec<_> = used.difference(&exported).collect();
        ensure!(
            unknown.is_empty(),
            "{file} uses {unknown:?}, not in /metrics"
        );
    }
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(shipped(
        "examples/grafana/remora.json",
    ))?)?;
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 6));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs promtool (Debian's prometheus): `make test` installs it and runs this"]
async fn a_fleets_metrics_pass_promtool_with_a_target_label_on_every_server_series() -> Result<()> {
    let fixtures = remora_lab::bench::fleet_fixtures(3).await?;
    let central = Remora::start(remora_bin(), &remora_lab::bench::fleet_yaml(&fixtures)).await?;
    // A check of each, so the peers' series have something to say.
    for target in ["t0/main\n", "t1/main\n", "t2\n"] {
        remora_lab::agent_request(central.agent, target.as_bytes()).await?;
    }
    let (code, metrics) = central.get("/metrics").await?;
    assert_eq!(code, 200);
    promtool(&["check", "metrics"], Some(&metrics))?;
    for line in metrics.lines().filter(|line| !line.starts_with('#')) {
        let fleet_wide = [
            "remora_build_info",
            "remora_targets",
            "remora_cluster_writable",
            "remora_cluster_writers",
        ];
        let fleet_wide = fleet_wide.iter().any(|name| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        });
        assert!(
            fleet_wide || line.contains("target=\"t"),
            "no target label: {line}"
        );
    }
    assert_eq!(metrics.matches("# TYPE remora_mysql_up gauge").count(), 1);
    assert_eq!(metrics.matches("remora_mysql_up{target=").count(), 3);
    // Three servers that follow a source remora does not watch: three
    // clusters, none writable.
    assert_eq!(
        metrics.matches("remora_cluster_writable{cluster=").count(),
        3
    );
    assert!(
        metrics.contains("remora_cluster_place{target=\"t1\",cluster=\"t1\",place=\"aside\"} 1"),
        "{metrics}"
    );
    Ok(())
}
