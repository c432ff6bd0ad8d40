//! The wire-protocol fixture stays only for what cannot run here (Aurora,
//! RDS, the `SLAVE` syntax of MySQL 5.7 and 8.0); this holds it to what
//! MySQL really sends. One scenario, a new replica, then caught up, then its
//! SQL thread stopped, runs on a real MySQL 9 replica and on the fixture
//! (MySQL 8.4) put in the same states. remora polls the fixture, and every
//! statement it sent is asked of both: their columns, types, NULLs, empty
//! strings, zero dates and zeros must agree, value for value (the values
//! themselves, uuids and times, may differ).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};
use common::remora_bin;
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Value};
use remora_lab::fixture::{Channel, Flavor, MysqlFixture, Receiver, State, Worker};
use remora_lab::server::{REMORA_PASSWORD, REMORA_USER};
use remora_lab::{Engine, Pair};

/// What a value is, its figures left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Empty,
    ZeroDate,
    Zero,
    Value,
}

fn kind(value: &Value) -> Kind {
    match value {
        Value::NULL => Kind::Null,
        Value::Bytes(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            match text.trim() {
                "" => Kind::Empty,
                "0" => Kind::Zero,
                zero if zero.starts_with("0000-00-00") => Kind::ZeroDate,
                _ => Kind::Value,
            }
        }
        Value::Int(0) | Value::UInt(0) => Kind::Zero,
        _ => Kind::Value,
    }
}

/// A statement's answer as the contract compares it.
#[derive(Debug, PartialEq)]
enum Shape {
    Rows {
        columns: Vec<(String, ColumnType)>,
        rows: Vec<Vec<Kind>>,
    },
    Error(u16),
}

async fn shape(conn: &mut Conn, statement: &str) -> Result<Shape> {
    let mut result = match conn.query_iter(statement).await {
        Ok(result) => result,
        Err(mysql_async::Error::Server(err)) => return Ok(Shape::Error(err.code)),
        Err(err) => return Err(err).context(statement.to_owned()),
    };
    let columns = (result.columns_ref().iter())
        .map(|column| (column.name_str().into_owned(), column.column_type()))
        .collect();
    let rows: Vec<mysql_async::Row> = result.collect().await?;
    let rows = (rows.into_iter())
        .map(|row| row.unwrap().iter().map(kind).collect())
        .collect();
    Ok(Shape::Rows { columns, rows })
}

async fn connect(port: u16) -> Result<Conn> {
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(REMORA_USER))
        .pass(Some(REMORA_PASSWORD))
        .prefer_socket(false);
    Ok(tokio::time::timeout(Duration::from_secs(5), Conn::new(opts)).await??)
}

/// The statements remora sends to a MySQL 8+ replica in `state`: what it
/// sent the fixture during `remora --once`.
async fn statements_remora_sends(fixture: &MysqlFixture) -> Result<BTreeSet<String>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("remora.yaml");
    std::fs::write(
        &config,
        format!(
            "mysql: {{port: {}, user: {REMORA_USER}}}\n",
            fixture.addr.port()
        ),
    )?;
    fixture.set(|s| s.statements.clear());
    let out = tokio::process::Command::new(remora_bin())
        .arg("--config")
        .arg(&config)
        .arg("--once")
        .output()
        .await?;
    remora_lab::record_output("contract", &String::from_utf8_lossy(&out.stdout));
    Ok(fixture
        .statements()
        .into_iter()
        .filter(|s| {
            let s = s.trim_start().to_ascii_uppercase();
            s.starts_with("SELECT") || s.starts_with("SHOW")
        })
        .collect())
}

/// The fixture in the state a real MySQL replica with `workers` applier
/// workers shows: new (nothing received), caught up, or SQL thread stopped.
fn as_real(s: &mut State, step: Step, workers: u64) {
    let ago = |seconds: u64| SystemTime::now().checked_sub(Duration::from_secs(seconds));
    s.read_only = false;
    // The lab's seed makes the heartbeat database, with no table in it.
    s.heartbeat_database = step != Step::New;
    let received = match step {
        Step::New => 0,
        Step::CaughtUp | Step::Stopped => 5,
    };
    let mut channel = Channel::running("", 0);
    if step == Step::Stopped {
        channel.sql_running = "No";
        channel.seconds_behind = None;
    }
    s.channels = vec![channel];
    s.gtid_executed = received;
    let mut receiver = Receiver::on("", received);
    receiver.last_heartbeat = None;
    receiver.last_queued_end = (received > 0).then(|| ago(1)).flatten();
    s.receivers = vec![receiver];
    s.workers = (1..=workers)
        .map(|id| {
            let applied = (received > 0 && id == 1).then(|| ago(1)).flatten();
            Worker::idle("", id, applied)
        })
        .collect();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    New,
    CaughtUp,
    Stopped,
}

#[tokio::test]
#[ignore = "needs MySQL from the sid root: `make test` builds it and runs this"]
async fn the_fixture_answers_remoras_statements_as_a_real_mysql_does() -> Result<()> {
    let pair = Pair::replicating(Engine::MySql).await?;
    let fixture = MysqlFixture::start(Flavor::MySql84).await?;
    let mut differences = Vec::new();
    for step in [Step::New, Step::CaughtUp, Step::Stopped] {
        match step {
            Step::New => {}
            Step::CaughtUp => pair.seed().await?,
            Step::Stopped => pair.replica.exec(&["STOP REPLICA SQL_THREAD"]).await?,
        }
        fixture.set(|s| as_real(s, step, 4));
        let statements = statements_remora_sends(&fixture).await?;
        ensure!(!statements.is_empty(), "remora sent the fixture nothing");
        let (mut real, mut replayed) = (
            connect(pair.replica.port).await?,
            connect(fixture.addr.port()).await?,
        );
        for statement in &statements {
            let (on_mysql, on_fixture) = (
                shape(&mut real, statement).await?,
                shape(&mut replayed, statement).await?,
            );
            if on_mysql != on_fixture {
                differences.push(format!(
                    "{step:?}: {statement}\n  MySQL:   {on_mysql:?}\n  fixture: {on_fixture:?}"
                ));
            }
        }
        real.disconnect().await?;
        replayed.disconnect().await?;
    }
    ensure!(
        differences.is_empty(),
        "the fixture differs from MySQL {}:\n{}",
        pair.replica
            .value("SELECT @@version")
            .await?
            .unwrap_or_default(),
        differences.join("\n")
    );
    Ok(())
}
