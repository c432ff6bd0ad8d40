//! Aurora MySQL, which cannot run here, through the wire-protocol fixture:
//! a reader judged by its own fresh row of `replica_host_status`, a proxy
//! that makes a plain replica look like Aurora, and the fixture's own
//! Aurora and MySQL 5.7 tables. The fixture replays their real columns,
//! zero dates, NULLs and error codes (lab/src/fixture/tables.rs names the
//! source of each); MySQL 8.4+ and Group Replication run here for real
//! (`tests/mysql.rs`, `tests/group_replication.rs`, `tests/contract.rs`).

mod common;

use std::time::{Duration, SystemTime};

use anyhow::Result;
use common::remora_on_fixture as remora_with;
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

const ME: &str = "8a94f357-aab4-11df-86ab-c80aa9429562";

fn member(id: &str, state: &'static str, role: &'static str) -> Member {
    Member {
        id: id.into(),
        port: 3306,
        state,
        role,
    }
}

/// Two pools, and the default policy for checks that name none (`expect`).
const POOLS: &str = "pools:\n  writer: {role: primary}\n  readers: {role: replica}\n\
                     agent: {unnamed: default}\n";

async fn pool_reply(remora: &Remora, pool: &str) -> Result<String> {
    let reply = agent_request(remora.agent, format!("{pool}\n").as_bytes()).await?;
    Ok(reply.trim_end().to_owned())
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
