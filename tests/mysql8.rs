//! MySQL 8 applier-timestamp lag, Group Replication and Aurora, through the
//! wire-protocol fixture (none of them installs on Debian 12). The fixture
//! replays their tables' real columns, zero dates, NULLs and error codes;
//! see lab/src/fixture/tables.rs for the source of each.

mod common;

use std::time::{Duration, SystemTime};

use anyhow::Result;
use common::{remora_on_fixture as remora_with, weight};
use remora_lab::fixture::{
    Aurora, AuroraRow, Channel, Flavor, Member, MysqlFixture, Receiver, State, Worker,
};
use remora_lab::{Remora, agent_request};

async fn remora_on(fixture: &MysqlFixture, extra: &str) -> Result<Remora> {
    remora_with(fixture, "recover_after: 1", extra).await
}

async fn expect(remora: &Remora, reply: &str) -> Result<()> {
    remora
        .wait_reply(Duration::from_secs(5), |r| r == reply)
        .await
        .map(drop)
}

fn ago(seconds: f64) -> Option<SystemTime> {
    SystemTime::now().checked_sub(Duration::from_secs_f64(seconds))
}

/// An async replica on the default channel, `received` transactions in,
/// every one applied, its one worker idle.
fn caught_up_replica(s: &mut State, received: u64) {
    s.read_only = true;
    s.channels = vec![Channel {
        seconds_behind: Some(0),
        ..Channel::running("", 0)
    }];
    s.receivers = vec![Receiver::on("", received)];
    s.gtid_executed = received;
    s.workers = vec![Worker::idle("", 0, ago(60.0))];
}

/// The worker takes a transaction committed `seconds` ago on the source.
fn applying_from(s: &mut State, seconds: f64) {
    s.receivers[0].received = s.gtid_executed + 5;
    s.workers[0].applying = ago(seconds);
}

#[tokio::test]
async fn an_applier_lag_replica_falls_behind_and_catches_up_by_commit_timestamps() -> Result<()> {
    let fixture = MysqlFixture::start(Flavor::MySql84).await?;
    fixture.set(|s| caught_up_replica(s, 100));
    let remora = remora_on(&fixture, "lag: {source: applier}\n").await?;
    expect(&remora, "up ready 100%").await?;

    // Seconds_Behind_Source says 0 (multi-threaded replication); the worker
    // in hand holds a transaction committed 16 s ago.
    fixture.set(|s| applying_from(s, 16.0));
    let (reply, _) = remora
        .wait_reply(Duration::from_secs(5), |r| r.starts_with("up ready 5"))
        .await?;
    let w = weight(&reply).unwrap_or(0);
    assert!((50..=56).contains(&w), "lag of about 16 s: {reply}");
    assert!(reply.contains("#lag 16."), "{reply}");

    let status = remora.status().await?;
    assert_eq!(status["lag"]["source"], "applier", "{status}");
    let (_, metrics) = remora.get("/metrics").await?;
    assert!(
        metrics.contains("remora_lag_source{source=\"applier\"} 1"),
        "{metrics}"
    );

    // Falling further behind: the transaction in hand is older still.
    fixture.set(|s| applying_from(s, 40.0));
    remora
        .wait_reply(Duration::from_secs(5), |r| {
            r.starts_with("up ready 10% #lag 40.")
        })
        .await?;

    // Caught up: the worker is idle and everything received is applied.
    fixture.set(|s| caught_up_replica(s, 200));
    expect(&remora, "up ready 100%").await?;
    Ok(())
}

#[tokio::test]
async fn idle_is_caught_up_but_a_stalled_applier_fades_out() -> Result<()> {
    let fixture = MysqlFixture::start(Flavor::MySql80).await?;
    // Idle for a minute: no worker applying, nothing new received.
    fixture.set(|s| caught_up_replica(s, 100));
    let remora = remora_with(
        &fixture,
        "full_weight_below: 1s, min_weight_at: 4s, recover_after: 1",
        "lag: {source: applier}\n",
    )
    .await?;
    expect(&remora, "up ready 100%").await?;
    assert_eq!(remora.status().await?["lag"]["seconds"], 0.0);

    // Stalled: transactions received, none applying, none applied.
    fixture.set(|s| s.receivers[0].received = 130);
    let seen = remora
        .replies_until(Duration::from_secs(10), |r| r.starts_with("up ready 10%"))
        .await?;
    assert!(
        seen.iter().any(|r| r.contains("applier stalled")),
        "the reason says why: {seen:?}"
    );
    assert!(
        seen.iter()
            .filter_map(|r| weight(r))
            .collect::<Vec<_>>()
            .windows(2)
            .all(|w| w[1] <= w[0]),
        "fades, never bounces: {seen:?}"
    );
    // Applied again: back.
    fixture.set(|s| s.gtid_executed = 130);
    expect(&remora, "up ready 100%").await?;

    // A receiver that has not heard from its source for minutes proves nothing.
    fixture.set(|s| s.receivers[0].last_heartbeat = ago(600.0));
    remora
        .wait_reply(Duration::from_secs(5), |r| {
            r.contains("no word from the source for 600s")
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn applier_tables_without_the_grant_are_down_when_asked_for_and_skipped_by_auto() -> Result<()>
{
    let fixture = MysqlFixture::start(Flavor::MySql84).await?;
    fixture.set(|s| {
        caught_up_replica(s, 100);
        s.channels[0].seconds_behind = Some(16);
        s.performance_schema_denied = true;
    });
    let applier = remora_on(&fixture, "lag: {source: applier}\n").await?;
    let auto = remora_on(&fixture, "").await?;
    expect(&applier, "down #applier timestamps unreadable (error 1142)").await?;
    expect(&auto, "up ready 55% #lag 16.0s").await?;
    assert_eq!(auto.status().await?["lag"]["source"], "replica_status");
    // MySQL 5.7 is never asked: its tables lack the columns (1054).
    let old = MysqlFixture::start(Flavor::MySql57).await?;
    old.set(|s| caught_up_replica(s, 100));
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

const ME: &str = "8a94f357-aab4-11df-86ab-c80aa9429562";

fn member(id: &str, state: &'static str, role: &'static str) -> Member {
    Member {
        id: id.into(),
        port: 3306,
        state,
        role,
    }
}

/// A healthy three-member single-primary group; this server is a secondary.
fn group_of_three(s: &mut State) {
    s.read_only = true; // super_read_only on a secondary
    s.members = vec![
        member("0b1c-primary", "ONLINE", "PRIMARY"),
        member(ME, "ONLINE", "SECONDARY"),
        member("0b1c-other", "ONLINE", "SECONDARY"),
    ];
    // SHOW REPLICA STATUS lists the idle recovery channel, both threads No.
    s.channels = vec![Channel {
        io_running: "No",
        sql_running: "No",
        seconds_behind: None,
        last_io_errno: 2061,
        ..Channel::running("group_replication_recovery", 0)
    }];
    s.receivers = vec![
        Receiver::on("group_replication_applier", 500),
        Receiver {
            service_state: "OFF",
            ..Receiver::on("group_replication_recovery", 0)
        },
    ];
    s.gtid_executed = 500;
    s.workers = vec![Worker::idle("group_replication_applier", 0, ago(2.0))];
}

/// Two pools, and the default policy for checks that name none (`expect`).
const POOLS: &str = "pools:\n  writer: {role: primary}\n  readers: {role: replica}\n\
                     agent: {unnamed: default}\n";

async fn pool_reply(remora: &Remora, pool: &str) -> Result<String> {
    let reply = agent_request(remora.agent, format!("{pool}\n").as_bytes()).await?;
    Ok(reply.trim_end().to_owned())
}

#[tokio::test]
async fn a_group_secondary_serves_by_its_queue_and_its_applier_lag() -> Result<()> {
    let fixture = MysqlFixture::start(Flavor::MySql84).await?;
    fixture.set(group_of_three);
    let remora = remora_on(
        &fixture,
        "group_replication: {applier_queue_full_below: 100, applier_queue_min_at: 1000}\n",
    )
    .await?;
    // Not `down #lag unknown on group_replication_recovery: io thread stopped`.
    expect(&remora, "up ready 100%").await?;
    let status = remora.status().await?;
    assert_eq!(status["role"], "group secondary", "{status}");
    assert_eq!(status["group_replication"]["state"], "ONLINE", "{status}");
    assert_eq!(status["group_replication"]["members"], 3);

    let mut weights = Vec::new();
    for queue in [300, 550, 1200] {
        fixture.set(|s| s.applier_queue = queue);
        let (reply, _) = remora
            .wait_reply(Duration::from_secs(5), |r| {
                r.ends_with(&format!("#group replication applier queue {queue}"))
            })
            .await?;
        weights.push(weight(&reply).unwrap_or(0));
    }
    assert_eq!(weights, [80, 55, 10], "the queue drains the weight");
    let (_, metrics) = remora.get("/metrics").await?;
    assert!(
        metrics.contains("remora_group_replication_applier_queue 1200"),
        "{metrics}"
    );
    assert!(
        metrics.contains("remora_group_replication_member_state{state=\"ONLINE\"} 1"),
        "{metrics}"
    );

    // The applier in hand is 16 s behind: lag as for any replica.
    fixture.set(|s| {
        s.applier_queue = 0;
        s.receivers[0].received = 510;
        s.workers[0].applying = ago(16.0);
    });
    let (reply, _) = remora
        .wait_reply(Duration::from_secs(5), |r| r.contains("#lag 16."))
        .await?;
    assert!(reply.contains("on group_replication_applier"), "{reply}");
    Ok(())
}

#[tokio::test]
async fn a_member_recovering_or_in_a_minority_is_down() -> Result<()> {
    let fixture = MysqlFixture::start(Flavor::MySql84).await?;
    fixture.set(group_of_three);
    let remora = remora_on(&fixture, POOLS).await?;
    expect(&remora, "up ready 100%").await?;

    fixture.set(|s| s.members[1] = member(ME, "RECOVERING", "SECONDARY"));
    expect(&remora, "down #group replication member recovering").await?;

    // Two of five members reachable from here: the other side has the majority.
    fixture.set(|s| {
        s.members = vec![
            member("0b1c-a", "UNREACHABLE", "PRIMARY"),
            member(ME, "ONLINE", "SECONDARY"),
            member("0b1c-b", "ONLINE", "SECONDARY"),
            member("0b1c-c", "UNREACHABLE", "SECONDARY"),
            member("0b1c-d", "UNREACHABLE", "SECONDARY"),
        ]
    });
    expect(
        &remora,
        "down #group replication minority partition (2 of 5 members reachable)",
    )
    .await?;
    let readers = pool_reply(&remora, "readers").await?;
    assert_eq!(
        readers,
        "down #group replication minority partition (2 of 5 members reachable)"
    );

    // Left the group: its own row only, OFFLINE.
    fixture.set(|s| s.members = vec![member(ME, "OFFLINE", "")]);
    expect(&remora, "down #group replication member offline").await?;
    Ok(())
}

#[tokio::test]
async fn writer_pools_follow_a_primary_switch() -> Result<()> {
    let fixture = MysqlFixture::start(Flavor::MySql80).await?;
    fixture.set(group_of_three);
    let remora = remora_on(&fixture, POOLS).await?;
    expect(&remora, "up ready 100%").await?;
    let wait_pool = async |pool: &str, wanted: &str| -> Result<()> {
        remora_lab::wait::wait_until("the pool's reply", Duration::from_secs(5), async || {
            Ok((pool_reply(&remora, pool).await? == wanted).then_some(()))
        })
        .await
    };
    wait_pool("writer", "down #not writable: group replication secondary").await?;
    wait_pool("readers", "up ready 100%").await?;

    // The primary fails over to this member.
    fixture.set(|s| {
        s.read_only = false;
        s.members[0] = member("0b1c-primary", "UNREACHABLE", "");
        s.members[1] = member(ME, "ONLINE", "PRIMARY");
    });
    wait_pool("writer", "up ready 100%").await?;
    wait_pool("readers", "down #not a replica: group replication primary").await?;
    assert_eq!(remora.status().await?["role"], "group primary");

    // Multi-primary: every member is PRIMARY, and takes writes.
    fixture.set(|s| {
        s.members = vec![
            member("0b1c-primary", "ONLINE", "PRIMARY"),
            member(ME, "ONLINE", "PRIMARY"),
            member("0b1c-other", "ONLINE", "PRIMARY"),
        ]
    });
    wait_pool("writer", "up ready 100%").await?;
    Ok(())
}

fn aurora_reader(s: &mut State, rows: Vec<AuroraRow>) {
    s.innodb_read_only = true; // read_only stays 0 on an Aurora reader
    s.aurora = Some(Aurora {
        version: "3.05.2",
        server_id: "reader-1".into(),
        rows,
    });
}

fn aurora_row(server_id: &str, session_id: &str, lag_ms: f64, updated_ago: f64) -> AuroraRow {
    AuroraRow {
        server_id: server_id.into(),
        session_id: session_id.into(),
        lag_ms,
        updated: ago(updated_ago).unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

#[tokio::test]
async fn an_aurora_reader_lags_by_its_own_fresh_row() -> Result<()> {
    let fixture = MysqlFixture::start(Flavor::MySql80).await?;
    let writer_row = || aurora_row("writer-1", "MASTER_SESSION_ID", 0.0, 0.1);
    fixture.set(|s| {
        aurora_reader(
            s,
            vec![writer_row(), aurora_row("reader-1", "2b6a1c3e", 20.0, 0.2)],
        )
    });
    // Empty replica status, yet not a primary and not a frozen copy.
    let remora = remora_on(&fixture, POOLS).await?;
    expect(&remora, "up ready 100%").await?;
    assert_eq!(
        pool_reply(&remora, "writer").await?,
        "down #not writable: a replica"
    );
    let status = remora.status().await?;
    assert_eq!(status["lag"]["source"], "aurora", "{status}");

    fixture.set(|s| {
        aurora_reader(
            s,
            vec![
                writer_row(),
                // A stale row left by an old clone of this instance.
                aurora_row("reader-1", "0f0f0f0f", 1.0, 900.0),
                aurora_row("reader-1", "2b6a1c3e", 16_000.0, 0.2),
            ],
        )
    });
    expect(&remora, "up ready 55% #lag 16.0s").await?;

    // 2^64-ish milliseconds: a glitch, estimated from the last real figure.
    fixture.set(|s| aurora_reader(s, vec![aurora_row("reader-1", "2b6a1c3e", 1.8e16, 0.2)]));
    remora
        .wait_reply(Duration::from_secs(5), |r| {
            r.contains("#lag ~") && r.contains("implausible aurora lag")
        })
        .await?;

    // Only a stale row: nothing known.
    fixture.set(|s| aurora_reader(s, vec![aurora_row("reader-1", "2b6a1c3e", 5.0, 900.0)]));
    remora
        .wait_reply(Duration::from_secs(5), |r| {
            r.contains("no fresh replica_host_status row for reader-1")
        })
        .await?;

    // The writer: innodb_read_only off.
    fixture.set(|s| {
        aurora_reader(s, vec![writer_row()]);
        s.innodb_read_only = false;
    });
    expect(&remora, "up ready 100%").await?;
    assert_eq!(pool_reply(&remora, "writer").await?, "up ready 100%");
    Ok(())
}

/// A proxy in front of a plain MySQL 8 replica answers `@@aurora_version`
/// with NULL or '' instead of 1193: that is no Aurora version, so the
/// server is judged by its replica status, not by an Aurora table it lacks.
#[tokio::test]
async fn a_proxy_answering_an_empty_aurora_version_does_not_make_aurora() -> Result<()> {
    for answer in [None, Some("")] {
        let fixture = MysqlFixture::start(Flavor::MySql80).await?;
        fixture.set(|s| {
            caught_up_replica(s, 100);
            s.proxy_unknown_variables = Some(answer);
        });
        let remora = remora_on(&fixture, "").await?;
        expect(&remora, "up ready 100%").await?;
        let status = remora.status().await?;
        assert_ne!(status["lag"]["source"], "aurora", "{answer:?}: {status}");
        let asked_aurora = fixture
            .statements()
            .iter()
            .any(|s| s.contains("replica_host_status"));
        assert!(!asked_aurora, "{answer:?}: read Aurora's table");
    }
    Ok(())
}

#[tokio::test]
async fn the_fixture_replays_the_tables_as_mysql_and_aurora_send_them() -> Result<()> {
    use mysql_async::prelude::Queryable;
    use mysql_async::{Row, Value};
    let fixture = MysqlFixture::start(Flavor::MySql84).await?;
    fixture.set(|s| {
        caught_up_replica(s, 3);
        s.members = vec![Member {
            port: 0,
            ..member(ME, "OFFLINE", "")
        }];
    });
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(fixture.addr.port())
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts).await?;

    // An idle worker's APPLYING stamp is the zero date and its GTID is ''.
    let rows: Vec<Row> = conn
        .query(
            "SELECT APPLYING_TRANSACTION, APPLYING_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP \
             FROM performance_schema.replication_applier_status_by_worker",
        )
        .await?;
    assert_eq!(rows[0].as_ref(0), Some(&Value::Bytes(b"".to_vec())));
    assert_eq!(
        rows[0].as_ref(1),
        Some(&Value::Bytes(b"0000-00-00 00:00:00.000000".to_vec()))
    );
    let rows: Vec<Row> = conn
        .query(
            "SELECT RECEIVED_TRANSACTION_SET FROM performance_schema.replication_connection_status",
        )
        .await?;
    assert_eq!(
        rows[0].as_ref(0),
        Some(&Value::Bytes(
            b"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-3".to_vec()
        ))
    );
    // MEMBER_PORT 0 is NULL.
    let rows: Vec<Row> = conn
        .query("SELECT MEMBER_PORT, MEMBER_STATE FROM performance_schema.replication_group_members")
        .await?;
    assert_eq!(rows[0].as_ref(0), Some(&Value::NULL));
    // A column the table does not have, off-Aurora tables and variables.
    for (statement, code) in [
        (
            "SELECT NO_SUCH FROM performance_schema.replication_group_members",
            "1054",
        ),
        (
            "SELECT SERVER_ID FROM information_schema.replica_host_status",
            "1109",
        ),
        ("SELECT @@aurora_version", "1193"),
    ] {
        let err = conn.query_drop(statement).await.expect_err(statement);
        assert!(err.to_string().contains(code), "{statement}: {err}");
    }
    // No plugin: zero rows, and the column definitions still come.
    fixture.set(|s| s.members.clear());
    let result = conn
        .query_iter("SELECT MEMBER_ID FROM performance_schema.replication_group_members")
        .await?;
    assert_eq!(result.columns_ref().len(), 1);
    drop(result);
    conn.disconnect().await?;

    // MySQL 5.7's group members have five columns: no MEMBER_ROLE.
    let old = MysqlFixture::start(Flavor::MySql57).await?;
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(old.addr.port())
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts).await?;
    let err = conn
        .query_drop("SELECT MEMBER_ROLE FROM performance_schema.replication_group_members")
        .await
        .expect_err("5.7 has no MEMBER_ROLE");
    assert!(err.to_string().contains("1054"), "{err}");
    conn.disconnect().await?;
    Ok(())
}
