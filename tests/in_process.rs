//! The fast tier: `remora::run` in this process, on listeners the test bound
//! itself (port 0, kept open), watching the lab's MySQL wire-protocol
//! fixture. No MariaDB, no root, no Debian package: plain `cargo test` runs
//! these in seconds. The agent exchange, pools, every HTTP endpoint, the
//! admin switch, a reload, replay and shutdown.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::running::{Running, replica};
use remora::config::Config;
use remora_lab::fixture::MysqlFixture;
use remora_lab::{agent_request, http_exchange, wait_until};

/// A remora running in this process, watching one fixture.
struct InProcess {
    remora: Running,
    fixture_port: u16,
}

impl std::ops::Deref for InProcess {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.remora
    }
}

/// The configuration every test starts from: the fixture, polled every
/// 50 ms, and `yaml` after it.
fn config(fixture_port: u16, yaml: &str) -> Result<Config> {
    let text =
        format!("mysql: {{port: {fixture_port}, user: remora}}\npoll: {{interval: 50ms}}\n{yaml}");
    Ok(Config::from_yaml(&text)?)
}

impl InProcess {
    /// Binds both listeners on port 0 and runs remora on them.
    async fn start(fixture: &MysqlFixture, yaml: &str) -> Result<InProcess> {
        let fixture_port = fixture.addr.port();
        let remora = Running::start(config(fixture_port, yaml)?).await?;
        Ok(InProcess {
            remora,
            fixture_port,
        })
    }

    /// Waits until the answer to `request` is `wanted`.
    async fn expect(&self, request: &str, wanted: &str) -> Result<()> {
        let what = format!("{request:?} to be answered {wanted:?}");
        let mut last = String::new();
        wait_until(&what, Duration::from_secs(5), async || {
            last = self.reply(request).await?;
            Ok((last == wanted).then_some(()))
        })
        .await
        .with_context(|| format!("last answer {last:?}"))
    }

    async fn status(&self) -> Result<serde_json::Value> {
        self.json("/status").await
    }

    /// Applies `yaml` as SIGHUP would.
    async fn reload(&self, yaml: &str) -> Result<()> {
        self.remora.reload(config(self.fixture_port, yaml)?).await
    }

    /// Shuts remora down and waits for `run` to return.
    async fn stop(self) -> Result<()> {
        self.remora.stop().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_is_weighted_and_every_endpoint_says_so() -> Result<()> {
    let fixture = replica(0).await?;
    let remora = InProcess::start(&fixture, "policy: {recover_after: 1}\n").await?;
    remora.expect("", "up ready 100%").await?;
    fixture.set(|s| s.channels[0].seconds_behind = Some(16));
    remora.expect("", "up ready 55% #lag 16.0s").await?;

    let status = remora.status().await?;
    assert_eq!(status["verdict"], "up", "{status}");
    assert_eq!(status["weight"], 55, "{status}");
    assert_eq!(status["lag"]["seconds"], 16.0, "{status}");
    assert_eq!(status["lag"]["source"], "replica_status", "{status}");
    assert_eq!(
        remora.get("/health").await?,
        (200, "up ready 55% #lag 16.0s\n".into())
    );
    let (code, metrics) = remora.get("/metrics").await?;
    assert_eq!(code, 200);
    assert!(metrics.contains("\nremora_lag_seconds 16\n"), "{metrics}");
    assert!(metrics.contains("remora_lag_source{source=\"replica_status\"} 1"));
    let (code, events) = remora.get("/events").await?;
    assert_eq!(code, 200);
    assert!(
        events.contains("\"to\": \"up ready 55% #lag 16.0s\""),
        "{events}"
    );
    let (code, history) = remora.get("/history?limit=1").await?;
    assert_eq!(code, 200);
    let history: serde_json::Value = serde_json::from_str(&history)?;
    let newest = history["samples"].as_array().context("samples")?;
    assert_eq!(newest.len(), 1, "{history}");
    assert_eq!(newest[0]["inputs"]["lag"], 16.0, "{history}");
    let (code, csv) = remora.get("/history?format=csv").await?;
    assert_eq!(code, 200);
    assert!(csv.starts_with("t,lag,source,"), "{csv}");
    let (code, page) = remora.get("/").await?;
    assert_eq!(code, 200);
    assert!(page.contains("<svg"), "the page draws its chart");
    assert_eq!(remora.get("/maintenance").await?, (200, "off\n".into()));
    assert_eq!(remora.get("/nope").await?.0, 404);
    assert_eq!(
        http_exchange(remora.http, "PUT", "/status", &[], "")
            .await?
            .0,
        405
    );
    assert_eq!(remora.get("/history?limit=0").await?.0, 400);

    // Broken replication: down, with the errno only.
    fixture.set(|s| {
        let channel = &mut s.channels[0];
        channel.sql_running = "No";
        channel.last_sql_errno = 1062;
        channel.last_sql_error = "Duplicate entry 'alice@example.com' for key 'PRIMARY'".into();
        channel.seconds_behind = None;
    });
    remora.expect("", "down #sql thread error 1062").await?;
    let (_, status) = remora.get("/status").await?;
    assert!(!status.contains("alice@example.com"), "{status}");
    assert_eq!(remora.get("/health").await?.0, 503);
    remora.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_answer_their_own_questions_and_fail_closed() -> Result<()> {
    let fixture = replica(0).await?;
    let remora = InProcess::start(
        &fixture,
        "agent: {request_timeout: 100ms}\npools: {main: {}, writer: {role: primary}}\n",
    )
    .await?;
    assert_eq!(remora.reply("main\n").await?, "up ready 100%");
    let writer = "down #not writable: a replica";
    assert_eq!(remora.reply("writer\n").await?, writer);
    assert_eq!(
        remora.reply("writter\n").await?,
        format!("{writer}; unknown pool writter")
    );
    assert_eq!(remora.reply("").await?, format!("{writer}; no pool named"));
    let garbled = agent_request(remora.agent, b"\xffwriter\n").await?;
    assert_eq!(garbled, format!("{writer}; unreadable pool name\n"));
    assert_eq!(remora.get("/health?pool=writer").await?.0, 503);
    assert_eq!(remora.get("/health?pool=main").await?.0, 200);

    // Who asked is remembered per pool, with what it was told last; the
    // checks that matched no pool are kept apart.
    let status = remora.status().await?;
    let writer_peers = &status["pools"]["writer"]["peers"];
    assert_eq!(writer_peers[0]["address"], "127.0.0.1", "{status}");
    assert_eq!(writer_peers[0]["checks"], 1, "{status}");
    assert_eq!(writer_peers[0]["last_verdict"], "down", "{status}");
    // Three here, and the one start-up sent to wait for the first poll.
    assert_eq!(status["unmatched_peers"][0]["checks"], 4, "{status}");
    assert_eq!(
        status["peers"],
        serde_json::json!([]),
        "nobody asked for the default"
    );
    let (_, metrics) = remora.get("/metrics").await?;
    for series in [
        "remora_agent_peers{pool=\"writer\"} 1\n",
        "remora_agent_peers{pool=\"default\"} 0\n",
        "remora_agent_peers_silent{pool=\"main\"} 0\n",
        "remora_agent_last_check_timestamp_seconds{pool=\"default\"} 0\n",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
    remora.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_switch_drains_at_once_and_only_for_its_token() -> Result<()> {
    let fixture = replica(0).await?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "in-process-token\n")?;
    let state_file = dir.path().join("switch");
    let remora = InProcess::start(
        &fixture,
        &format!(
            "http: {{admin_token_file: {}}}\nmaintenance: {{state_file: {}}}\n",
            token_file.display(),
            state_file.display()
        ),
    )
    .await?;
    let switch = async |method: &str, token: &str, body: &str| {
        let bearer = format!("Bearer {token}");
        http_exchange(
            remora.http,
            method,
            "/maintenance",
            &[("Authorization", &bearer)],
            body,
        )
        .await
    };
    assert_eq!(switch("POST", "wrong", "drain").await?.0, 403);
    assert_eq!(remora.reply("").await?, "up ready 100%");
    let (code, body) = switch("POST", "in-process-token", "drain swapping disks").await?;
    assert_eq!(
        (code, body.as_str()),
        (200, "up drain #maintenance: swapping disks\n")
    );
    remora
        .expect("", "up drain #maintenance: swapping disks")
        .await?;
    assert_eq!(
        std::fs::read_to_string(&state_file)?,
        "drain swapping disks\n"
    );
    assert_eq!(switch("DELETE", "in-process-token", "").await?.0, 200);
    remora.expect("", "up ready 100%").await?;
    assert!(!state_file.exists());
    remora.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_pools_without_a_restart() -> Result<()> {
    let fixture = replica(0).await?;
    let remora = InProcess::start(&fixture, "pools: {main: {}}\n").await?;
    assert_eq!(remora.reply("main\n").await?, "up ready 100%");
    assert!(
        remora
            .reply("writer\n")
            .await?
            .contains("unknown pool writer")
    );
    remora
        .reload("pools: {main: {}, writer: {role: primary}}\n")
        .await?;
    remora
        .expect("writer\n", "down #not writable: a replica")
        .await?;
    let status = remora.status().await?;
    assert_eq!(status["pools"]["writer"]["role"], "primary", "{status}");
    remora.stop().await
}

/// The poller and `--replay` share one pipeline: a history recorded here,
/// replayed under the same configuration, gives every change `/events`
/// recorded, verbatim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_history_replays_to_the_same_answers() -> Result<()> {
    let fixture = replica(0).await?;
    let yaml =
        "policy: {full_weight_below: 2s, min_weight_at: 10s, drain_at: 12s, recover_after: 2}\n";
    let remora = InProcess::start(&fixture, yaml).await?;
    // Each lag held until a published poll has judged it.
    for lag in [0, 4, 8, 13, 6, 0] {
        fixture.set(|s| s.channels[0].seconds_behind = Some(lag));
        wait_until("the lag to be judged", Duration::from_secs(5), async || {
            let seen = remora.status().await?["lag"]["seconds"].as_f64();
            Ok((seen == Some(lag as f64)).then_some(()))
        })
        .await?;
    }
    remora.expect("", "up ready 100%").await?;
    let (_, csv) = remora.get("/history?format=csv").await?;
    let (_, events) = remora.get("/events").await?;
    let events: serde_json::Value = serde_json::from_str(&events)?;
    let live: Vec<String> = (events["events"].as_array().context("events")?.iter().rev())
        .map(|e| e["to"].as_str().unwrap_or_default().to_owned())
        .collect();
    ensure!(live.iter().any(|to| to.starts_with("up drain")), "{live:?}");

    let rows = remora::history::trace::parse(&csv)?;
    let replayed = remora::replay::run(&config(remora.fixture_port, yaml)?, &rows);
    let offline: Vec<String> = replayed.changes.iter().map(|c| c.to.clone()).collect();
    assert_eq!(offline, live, "{}", replayed.report());
    remora.stop().await
}
