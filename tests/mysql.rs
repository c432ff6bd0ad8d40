//! What only MySQL tells, on a real MySQL 9 primary and replica from the sid
//! root (GTID auto-position, the default four applier workers): lag by the
//! applier's commit timestamps, the grants it needs, `caching_sha2_password`
//! over plain TCP, over TLS verified against the server's own CA, and over
//! the unix socket. `tests/same_state.rs` holds MySQL's answers to the
//! states MariaDB shares; `tests/group_replication.rs` the group's.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{mysql_section, remora_bin, weight};
use mysql_async::prelude::Queryable;
use remora_lab::server::{REMORA_PASSWORD, REMORA_USER};
use remora_lab::{Engine, Pair, Remora};

const POLICY: &str = "poll: {interval: 200ms}\npolicy: {recover_after: 1}\n";

async fn remora_on(port: u16, extra: &str) -> Result<Remora> {
    Remora::start(
        remora_bin(),
        &format!("{}{POLICY}{extra}", mysql_section(port)),
    )
    .await
}

#[tokio::test]
#[ignore = "needs MySQL from the sid root: `make test` builds it and runs this"]
async fn a_worker_held_back_lags_by_its_commit_timestamp_and_catches_up() -> Result<()> {
    let pair = Pair::start_on(Engine::MySql).await?;
    let workers = pair
        .replica
        .value("SELECT COUNT(*) FROM performance_schema.replication_applier_status_by_worker")
        .await?;
    assert_eq!(
        workers.as_deref(),
        Some("4"),
        "MySQL's default four workers"
    );
    let remora = remora_on(pair.replica.port, "").await?;
    remora
        .wait_reply(Duration::from_secs(10), |r| r == "up ready 100%")
        .await?;
    assert_eq!(remora.status().await?["lag"]["source"], "applier");

    // A session on the replica holds the table a worker must write: the
    // worker waits with its transaction in hand, committed ever longer ago.
    let mut holder = pair.replica.conn().await?;
    holder.query_drop("LOCK TABLES lab.ticks READ").await?;
    let writes = pair.keep_writing(Duration::from_millis(500));
    let seen = remora
        .replies_until(Duration::from_secs(30), |r| {
            weight(r).is_some_and(|w| w <= 75)
        })
        .await?;
    let reply = seen.last().context("a reply")?;
    ensure!(
        reply.contains("#lag ") && !reply.contains('~'),
        "measured, not guessed: {reply} ({seen:?})"
    );
    let status = remora.status().await?;
    assert_eq!(status["lag"]["source"], "applier", "{status}");
    let weights: Vec<u32> = seen.iter().filter_map(|r| weight(r)).collect();
    ensure!(
        weights.windows(2).all(|w| w[1] <= w[0]),
        "the weight falls as the worker waits: {seen:?}"
    );

    holder.query_drop("UNLOCK TABLES").await?;
    drop(writes);
    remora
        .wait_reply(Duration::from_secs(15), |r| r == "up ready 100%")
        .await?;
    holder.disconnect().await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs MySQL from the sid root: `make test` builds it and runs this"]
async fn without_the_performance_schema_grant_auto_falls_back_and_applier_says_why() -> Result<()> {
    let pair = Pair::start_on(Engine::MySql).await?;
    // REPLICATION CLIENT alone: SHOW REPLICA STATUS, not the applier tables.
    let user = "remora_no_ps";
    pair.replica
        .exec(&[
            "SET SESSION sql_log_bin = 0",
            &format!("CREATE USER {user}@'%' IDENTIFIED BY '{REMORA_PASSWORD}'"),
            &format!("GRANT REPLICATION CLIENT ON *.* TO {user}@'%'"),
        ])
        .await?;
    let section = mysql_section(pair.replica.port).replace(REMORA_USER, user);
    let auto = Remora::start(remora_bin(), &format!("{section}{POLICY}")).await?;
    let applier = Remora::start(
        remora_bin(),
        &format!("{section}{POLICY}lag: {{source: applier}}\n"),
    )
    .await?;
    auto.wait_reply(Duration::from_secs(10), |r| r == "up ready 100%")
        .await?;
    assert_eq!(auto.status().await?["lag"]["source"], "replica_status");
    applier
        .wait_reply(Duration::from_secs(10), |r| {
            r == "down #applier timestamps unreadable (error 1142)"
        })
        .await?;
    Ok(())
}

/// `remora --once` against `config`; its first line.
async fn once(config: &str) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("remora.yaml");
    std::fs::write(&path, config)?;
    let out = tokio::process::Command::new(remora_bin())
        .arg("--config")
        .arg(&path)
        .arg("--once")
        .env("REMORA_MYSQL_PASSWORD", REMORA_PASSWORD)
        .output()
        .await?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    remora_lab::record_output("mysql-once", &said);
    ensure!(!said.contains(REMORA_PASSWORD), "password shown");
    Ok(said.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
#[ignore = "needs MySQL from the sid root: `make test` builds it and runs this"]
async fn caching_sha2_password_over_tcp_over_tls_verified_and_over_the_socket() -> Result<()> {
    let pair = Pair::start_on(Engine::MySql).await?;
    let plugin = pair
        .replica
        .value(&format!(
            "SELECT plugin FROM mysql.user WHERE user = '{REMORA_USER}'"
        ))
        .await?;
    assert_eq!(plugin.as_deref(), Some("caching_sha2_password"));
    let base = mysql_section(pair.replica.port);

    // Plain TCP: the password's full exchange needs the server's RSA key,
    // which remora asks for.
    assert_eq!(once(&base).await?, "up ready 100%", "over TCP");

    // TLS, the certificate verified against the CA MySQL made itself at
    // --initialize (in its datadir); the primary's CA is another one.
    let ca = |server: &remora_lab::Server| server.dir.join("data/ca.pem");
    let verified = format!(
        "{base}  tls: {{mode: verify_ca, ca_file: {}}}\n",
        ca(&pair.replica).display()
    );
    assert_eq!(once(&verified).await?, "up ready 100%", "verify_ca");
    let wrong_ca = format!(
        "{base}  tls: {{mode: verify_ca, ca_file: {}}}\n",
        ca(&pair.primary).display()
    );
    let refused = once(&wrong_ca).await?;
    ensure!(refused.starts_with("down #"), "another CA: {refused}");
    ensure!(refused.contains("tls"), "says it was TLS: {refused}");

    // The unix socket, as a sidecar in the same pod reaches mysqld.
    let socket = format!(
        "mysql:\n  socket: {}\n  user: {REMORA_USER}\n  password_env: REMORA_MYSQL_PASSWORD\n",
        pair.replica.socket().display()
    );
    assert_eq!(once(&socket).await?, "up ready 100%", "over the socket");
    let sessions: Vec<String> = pair
        .replica
        .rows(&format!(
            "SELECT CONNECTION_TYPE FROM performance_schema.threads \
             WHERE PROCESSLIST_USER = '{REMORA_USER}'"
        ))
        .await?
        .iter()
        .filter_map(|row| row.get::<Option<String>, _>(0).flatten())
        .collect();
    ensure!(
        sessions.is_empty(),
        "--once closed its sessions: {sessions:?}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs MySQL from the sid root: `make test` builds it and runs this"]
async fn the_primary_is_up_for_writes_and_the_replica_is_not() -> Result<()> {
    let pair = Pair::start_on(Engine::MySql).await?;
    let pools = "pools: {writer: {role: primary}, readers: {role: replica}}\n";
    let on_primary = remora_on(pair.primary.port, pools).await?;
    let on_replica = remora_on(pair.replica.port, pools).await?;
    let ask = async |remora: &Remora, pool: &str| -> Result<String> {
        let reply = remora_lab::agent_request(remora.agent, format!("{pool}\n").as_bytes()).await?;
        Ok(reply.trim_end().to_owned())
    };
    assert_eq!(ask(&on_primary, "writer").await?, "up ready 100%");
    assert_eq!(ask(&on_primary, "readers").await?, "down #not a replica");
    assert_eq!(
        ask(&on_replica, "writer").await?,
        "down #not writable: a replica"
    );
    assert_eq!(ask(&on_replica, "readers").await?, "up ready 100%");
    let status = on_replica.status().await?;
    let channel = &status["replication"][0];
    assert_eq!(channel["source_server_id"], 1, "{status}");
    let source_uuid = pair.primary.value("SELECT @@server_uuid").await?;
    assert_eq!(
        channel["source_uuid"].as_str(),
        source_uuid.as_deref(),
        "{status}"
    );
    assert_eq!(status["dialect"], "mysql", "{status}");
    let version = status["server_version"]
        .as_str()
        .context("server_version")?;
    ensure!(
        version.starts_with('9') || version.starts_with("8.4"),
        "{version}"
    );
    Ok(())
}
