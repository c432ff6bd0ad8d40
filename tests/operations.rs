//! Running remora: load-aware weight, the maintenance switch, Prometheus
//! metrics and configuration reload on SIGHUP, against real MariaDB servers.
// This times real processes with the wall clock, on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{mysql_section, remora_bin, weight};
use mysql_async::prelude::Queryable;
use remora_lab::{Pair, Remora, agent_request, free_port, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn busy_sessions_lower_the_weight_and_it_recovers_when_they_finish() -> Result<()> {
    let pair = Pair::start().await?;
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}
policy: {{recover_after: 2}}
load: {{threads_running_full_below: 3, threads_running_min_at: 13}}
",
            mysql_section(pair.replica.port)
        ),
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");

    // Ten sessions busy for four seconds each.
    let mut sleepers = Vec::new();
    for _ in 0..10 {
        let mut conn = pair.replica.conn().await?;
        sleepers.push(tokio::spawn(async move {
            let _: Option<u64> = conn.query_first("SELECT SLEEP(4)").await?;
            conn.disconnect().await?;
            anyhow::Ok(())
        }));
    }
    let (reply, _) = remora
        .wait_reply(Duration::from_secs(3), |r| {
            weight(r).is_some_and(|w| w < 50)
        })
        .await?;
    assert!(reply.contains("threads running"), "{reply}");
    for sleeper in sleepers {
        sleeper.await??;
    }
    remora
        .wait_reply(Duration::from_secs(5), |r| r == "up ready 100%")
        .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn a_maintenance_file_beats_measured_health_until_it_is_removed() -> Result<()> {
    let pair = Pair::start().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("maintenance");
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\nmaintenance: {{file: {}}}\n",
            mysql_section(pair.replica.port),
            file.display()
        ),
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");

    std::fs::write(&file, "maint kernel upgrade\n")?;
    remora
        .wait_reply(Duration::from_secs(3), |r| {
            r == "up maint #maintenance: kernel upgrade"
        })
        .await?;
    let (_, body) = remora.get("/status").await?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(status["verdict"], "maint");
    assert_eq!(status["maintenance"]["mode"], "maint");
    assert!(
        status["maintenance"]["source"]
            .as_str()
            .unwrap_or("")
            .starts_with("file ")
    );
    assert_eq!(
        status["measured"]["verdict"], "up",
        "measured health is still shown"
    );
    assert_eq!(remora.get("/health").await?.0, 404);

    // Even a broken replica answers the operator's way.
    pair.break_replication(5).await?;
    let polled = remora.polls().await?;
    remora.wait_until_polls(polled + 2).await?;
    assert_eq!(
        remora.reply().await?,
        "up maint #maintenance: kernel upgrade"
    );
    pair.fix_replication(5).await?;

    std::fs::write(&file, "drain\n")?;
    remora
        .wait_reply(Duration::from_secs(3), |r| r == "up drain #maintenance")
        .await?;
    std::fs::remove_file(&file)?;
    remora
        .wait_reply(Duration::from_secs(5), |r| r == "up ready 100%")
        .await?;
    assert!(remora.log().contains("maintenance off"), "{}", remora.log());
    Ok(())
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn http_maintenance_applies_at_once_and_only_from_loopback() -> Result<()> {
    let pair = Pair::start().await?;
    // Polls are slow on purpose: the switch must not wait for one. HTTP
    // listens on every address, so a non-loopback client can try too (and
    // so the switch needs a token).
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("admin-token");
    std::fs::write(
        &token_file,
        format!("{}\n", remora_lab::server::ADMIN_TOKEN),
    )?;
    let remora = Remora::builder(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 10s, stale_after: 30s}}\nhttp: {{admin_token_file: {}}}\n",
            mysql_section(pair.replica.port),
            token_file.display()
        ),
    )
    .listening(
        SocketAddr::from(([127, 0, 0, 1], free_port()?)),
        SocketAddr::from(([0, 0, 0, 0], port)),
    )
    .start()
    .await?;
    let http = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(remora.reply().await?, "up ready 100%");

    let switched = Instant::now();
    let (code, body) = post(http, "drain moving racks").await?;
    assert_eq!(
        (code, body.as_str()),
        (200, "up drain #maintenance: moving racks\n")
    );
    remora
        .wait_reply(Duration::from_secs(2), |r| {
            r == "up drain #maintenance: moving racks"
        })
        .await?;
    assert!(
        switched.elapsed() < Duration::from_secs(2),
        "no poll awaited"
    );
    // Pools and unknown pool names alike.
    assert_eq!(
        agent_request(remora.agent, b"anything\n").await?,
        "up drain #maintenance: moving racks\n"
    );

    let bearer = format!("Bearer {}", remora_lab::server::ADMIN_TOKEN);
    let auth = [("Authorization", bearer.as_str())];
    let (code, _) = remora_lab::http_exchange(http, "DELETE", "/maintenance", &auth, "").await?;
    assert_eq!(code, 200);
    remora
        .wait_reply(Duration::from_secs(2), |r| r == "up ready 100%")
        .await?;

    // From another address of this machine: refused.
    let outside = SocketAddr::from((remora_lab::non_loopback_ipv4()?, http.port()));
    let (code, body) = post(outside, "maint nope").await?;
    assert_eq!(code, 403, "{body}");
    assert_eq!(remora.reply().await?, "up ready 100%");
    Ok(())
}

/// POST /maintenance with `body` and the lab's admin token.
async fn post(addr: SocketAddr, body: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "POST /maintenance HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        remora_lab::server::ADMIN_TOKEN,
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await?;
    let (head, body) = raw.split_once("\r\n\r\n").context("response")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("status")?;
    Ok((code, body.to_owned()))
}

/// Checks every line of a text exposition: comments, or `name{labels} value`.
fn parse_exposition(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP remora_") || comment.starts_with("TYPE remora_"),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().unwrap_or_else(|_| panic!("value in {line}")),
        };
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.starts_with("remora_")
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
            "{line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "{line}");
        }
        samples.push((series.to_owned(), value));
    }
    samples
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn metrics_describe_the_verdict_and_count_checks_by_pool() -> Result<()> {
    let pair = Pair::start().await?;
    let remora = Remora::start(
        remora_bin(),
        &format!(
            // Nameless checks (waiting for remora to answer) count as the
            // default policy's, so the one unknown name counts alone.
            "{}poll: {{interval: 200ms}}\nagent: {{unnamed: default}}\n\
             pools: {{main: {{}}, writer: {{role: primary}}}}\n",
            mysql_section(pair.replica.port)
        ),
    )
    .await?;
    for _ in 0..5 {
        agent_request(remora.agent, b"main\n").await?;
    }
    agent_request(remora.agent, b"writer\n").await?;
    agent_request(remora.agent, b"nope\n").await?;

    let (code, text) = remora.get("/metrics").await?;
    assert_eq!(code, 200);
    let samples = parse_exposition(&text);
    let value = |series: &str| {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
    };
    assert_eq!(
        value(r#"remora_agent_checks_total{pool="main",verdict="up"}"#),
        5.0
    );
    assert_eq!(
        value(r#"remora_agent_checks_total{pool="writer",verdict="down"}"#),
        1.0
    );
    // An unknown name is answered as the strictest pool, writer: down.
    assert_eq!(
        value(r#"remora_agent_checks_total{pool="unknown",verdict="down"}"#),
        1.0
    );
    assert_eq!(value(r#"remora_verdict{pool="default",verdict="up"}"#), 1.0);
    assert_eq!(
        value(r#"remora_verdict{pool="writer",verdict="down"}"#),
        1.0
    );
    assert_eq!(value(r#"remora_weight_percent{pool="main"}"#), 100.0);
    assert_eq!(value("remora_mysql_up"), 1.0);
    assert_eq!(
        value(r#"remora_replica_io_thread{channel="",state="Yes"}"#),
        1.0
    );
    assert_eq!(
        value(r#"remora_replica_sql_thread{channel="",state="No"}"#),
        0.0
    );
    assert_eq!(value(r#"remora_replica_seconds_behind{channel=""}"#), 0.0);
    assert_eq!(value("remora_lag_seconds"), 0.0);
    assert_eq!(value("remora_lag_estimated"), 0.0);
    assert_eq!(value(r#"remora_lag_source{source="replica_status"}"#), 1.0);
    assert_eq!(value(r#"remora_lag_source{source="heartbeat"}"#), 0.0);
    assert_eq!(
        value(r#"remora_poll_errors_total{kind="connect_timeout"}"#),
        0.0
    );
    assert!(value("remora_polls_total") >= 1.0);
    assert_eq!(
        value(&format!(
            r#"remora_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn sighup_reloads_a_valid_configuration_and_keeps_the_old_one_when_invalid() -> Result<()> {
    let pair = Pair::start().await?;
    let _writes = pair.keep_writing(Duration::from_millis(50));
    pair.start_lag(5).await?;
    let base = |policy: &str, port: u16| {
        format!("{}poll: {{interval: 200ms}}\n{policy}", mysql_section(port))
    };
    let strict =
        "policy: {full_weight_below: 1s, min_weight_at: 3s, min_weight: 20%, recover_after: 1}\n";
    let mut remora = Remora::start(remora_bin(), &base(strict, pair.replica.port)).await?;
    remora
        .wait_reply(Duration::from_secs(15), |r| {
            r.starts_with("up ready 20% #lag")
        })
        .await?;
    let pid = remora.pid();

    // A relaxed policy: the same lag is now full weight.
    let relaxed = "policy: {full_weight_below: 30s, recover_after: 1}\n";
    remora.rewrite_config(&base(relaxed, pair.replica.port), None, None)?;
    remora.reload()?;
    remora
        .wait_reply(Duration::from_secs(5), |r| r == "up ready 100%")
        .await?;

    // An invalid file is refused; the running configuration stays.
    remora.rewrite_config(
        &base("policy: {min_weight: 0%}\n", pair.replica.port),
        None,
        None,
    )?;
    remora.reload()?;
    wait_until(
        "the reload to be rejected",
        Duration::from_secs(5),
        async || Ok(remora.log().contains("reload rejected").then_some(())),
    )
    .await
    .with_context(|| remora.log())?;
    assert!(
        remora.log().contains("policy.min_weight"),
        "{}",
        remora.log()
    );
    assert_eq!(remora.reply().await?, "up ready 100%");

    // New listeners, pools and another server, all at once.
    let old_agent = remora.agent;
    let new_agent = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let new_http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    remora.rewrite_config(
        &format!(
            "{}pools: {{writer: {{role: primary}}}}\n",
            base(relaxed, pair.primary.port)
        ),
        Some(new_agent),
        Some(new_http),
    )?;
    remora.reload()?;
    let reply = wait_until(
        "the new agent listener",
        Duration::from_secs(5),
        async || Ok(agent_request(new_agent, b"writer\n").await.ok()),
    )
    .await
    .with_context(|| remora.log())?;
    assert_eq!(reply, "up ready 100%\n", "the primary is writable");
    let (_, body) = remora.get("/status").await?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(
        status["role"],
        "primary",
        "now watching the primary: {status}\n{}",
        remora.log()
    );
    assert!(
        TcpStream::connect(old_agent).await.is_err(),
        "the old agent address is closed"
    );
    assert_eq!(remora.pid(), pid, "one process throughout");
    Ok(())
}
