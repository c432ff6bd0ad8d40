//! The `SLAVE` syntax of MySQL 5.7 and 8.0, which cannot be installed here,
//! through the wire-protocol fixture replaying the exact column sets those
//! versions send (see lab/src/fixture/ for where each list comes from, and
//! `tests/contract.rs`, which holds the fixture to a real MySQL 9). MySQL
//! 8.4+ and MariaDB run here for real: every other test.

mod common;

use std::time::Duration;

use anyhow::Result;
use remora_lab::Remora;
use remora_lab::fixture::{Channel, Flavor, MysqlFixture};

async fn remora_on(fixture: &MysqlFixture, extra: &str) -> Result<Remora> {
    common::remora_on_fixture(fixture, "recover_after: 1", extra).await
}

async fn expect(remora: &Remora, reply: &str) -> Result<()> {
    remora
        .wait_reply(Duration::from_secs(5), |r| r == reply)
        .await
        .map(drop)
}

async fn every_verdict_reads_the_same_on(flavor: Flavor) -> Result<()> {
    let fixture = MysqlFixture::start(flavor).await?;
    fixture.set(|s| s.channels = vec![Channel::running("", 0)]);
    let remora = remora_on(&fixture, "").await?;
    expect(&remora, "up ready 100%").await?;

    let (_, body) = remora.get("/status").await?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    let dialect = if flavor == Flavor::MySql57 {
        "mysql-legacy"
    } else {
        "mysql"
    };
    assert_eq!(status["dialect"], dialect, "{status}");
    assert_eq!(status["server_version"], flavor.version());
    assert_eq!(status["replication"][0]["io_thread"], "Yes");

    // Lag by Seconds_Behind_Source / Seconds_Behind_Master.
    fixture.set(|s| s.channels[0].seconds_behind = Some(16));
    expect(&remora, "up ready 55% #lag 16.0s").await?;
    // NULL is never 0: estimated from the last measurement.
    fixture.set(|s| {
        let channel = &mut s.channels[0];
        channel.io_running = "Connecting";
        channel.last_io_errno = 2003;
        channel.seconds_behind = None;
    });
    let (reply, _) = remora
        .wait_reply(Duration::from_secs(5), |r| {
            r.contains("#lag ~") && r.ends_with("io thread connecting (error 2003)")
        })
        .await?;
    let estimated = common::weight(&reply).unwrap_or(0);
    assert!(
        (40..=55).contains(&estimated),
        "grows from the last 16s: {reply}"
    );
    // An applier error.
    fixture.set(|s| {
        s.channels[0] = Channel {
            sql_running: "No",
            last_sql_errno: 1062,
            last_sql_error: "Could not execute Write_rows event on table t.x; Duplicate entry '42'"
                .into(),
            ..Channel::running("", 0)
        }
    });
    expect(&remora, "down #sql thread error 1062").await?;
    // Multi-channel: the worst channel decides...
    fixture.set(|s| {
        s.channels = vec![Channel::running("eu", 2), Channel::running("us", 40)];
    });
    expect(&remora, "up ready 10% #lag 40.0s on us").await?;
    // ...unless only some channels matter.
    let only_eu = remora_on(&fixture, "lag: {channels: [eu]}\n").await?;
    expect(&only_eu, "up ready 100%").await?;
    // Not a replica.
    fixture.set(|s| s.channels.clear());
    expect(&remora, "up ready 100%").await?;

    let statements = fixture.statements();
    let (used, never) = match flavor {
        Flavor::MySql57 => ("SHOW SLAVE STATUS", "SHOW REPLICA STATUS"),
        Flavor::MySql80 | Flavor::MySql84 => ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS"),
    };
    assert!(statements.iter().any(|s| s == used), "{statements:?}");
    assert!(!statements.iter().any(|s| s == never), "{statements:?}");
    assert!(
        !statements.iter().any(|s| s.contains("wsrep")),
        "no MariaDB-only variables asked of MySQL: {statements:?}"
    );
    Ok(())
}

#[tokio::test]
async fn mysql_5_7_show_slave_status() -> Result<()> {
    every_verdict_reads_the_same_on(Flavor::MySql57).await
}

#[tokio::test]
async fn mysql_8_0_show_replica_status() -> Result<()> {
    every_verdict_reads_the_same_on(Flavor::MySql80).await
}

/// MySQL 5.7's applier tables lack the commit timestamps (1054): it is
/// never asked for them, and `lag.source: applier` says why it cannot be.
#[tokio::test]
async fn mysql_5_7_is_never_asked_for_applier_timestamps() -> Result<()> {
    let old = MysqlFixture::start(Flavor::MySql57).await?;
    old.set(|s| s.channels = vec![Channel::running("", 0)]);
    let on_57 = remora_on(&old, "lag: {source: applier}\n").await?;
    expect(
        &on_57,
        "down #applier timestamps need MySQL 8.0.22 or later",
    )
    .await?;
    assert!(
        !old.statements()
            .iter()
            .any(|s| s.contains("performance_schema")),
        "{:?}",
        old.statements()
    );
    Ok(())
}

#[tokio::test]
async fn the_fixture_answers_like_the_versions_it_replays() -> Result<()> {
    // Guard the fixture itself: 8.4 rejects the removed statement, 5.7 the new one.
    use mysql_async::prelude::Queryable;
    for (flavor, rejected) in [
        (Flavor::MySql84, "SHOW SLAVE STATUS"),
        (Flavor::MySql57, "SHOW REPLICA STATUS"),
    ] {
        let fixture = MysqlFixture::start(flavor).await?;
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(fixture.addr.port())
            .prefer_socket(false);
        let mut conn = mysql_async::Conn::new(opts).await?;
        let err = conn
            .query_drop(rejected)
            .await
            .expect_err("the statement does not exist in this version");
        assert!(err.to_string().contains("1064"), "{err}");
        let rows: Vec<mysql_async::Row> = conn
            .query(if flavor == Flavor::MySql57 {
                "SHOW SLAVE STATUS"
            } else {
                "SHOW REPLICA STATUS"
            })
            .await?;
        assert!(rows.is_empty());
        conn.disconnect().await?;
    }
    Ok(())
}
