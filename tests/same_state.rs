//! One state, one verdict, on every server: the same replication state gets
//! the same answer, for the same reason, from a real MariaDB 10.11 (Debian
//! 12's), MariaDB 11 and MySQL 9 (sid's), each a primary and a replica with
//! a remora beside the replica, all three stories at once.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{mysql_section, remora_bin, weight};
use remora_lab::{Engine, Pair, Remora};

/// Fast polls, and a verdict that recovers at its first good poll.
const POLICY: &str = "poll: {interval: 200ms}\npolicy: {recover_after: 1}\n";

/// What remora answered at each step of the story.
type Said = Vec<(&'static str, String)>;

async fn expect(remora: &Remora, wanted: &str) -> Result<String> {
    let (reply, _) = remora
        .wait_reply(Duration::from_secs(20), |reply| reply == wanted)
        .await?;
    Ok(reply)
}

/// A replica's life on `engine`, from new to broken and mended.
async fn story(engine: Engine) -> Result<Said> {
    let pair = Pair::replicating(engine).await?;
    let config = format!("{}{POLICY}", mysql_section(pair.replica.port));
    let remora = Remora::start(remora_bin(), &config).await?;
    let mut said = Said::new();

    // New: both threads running, nothing received yet.
    said.push(("a new replica", expect(&remora, "up ready 100%").await?));
    pair.seed().await?;
    said.push(("caught up", expect(&remora, "up ready 100%").await?));

    // Stopped by an operator, nothing pending; then a write arrives.
    let stopped = "down #sql thread stopped";
    pair.replica.exec(&[engine.stop_sql_thread()]).await?;
    said.push(("sql thread stopped", expect(&remora, stopped).await?));
    pair.tick().await?;
    remora.wait_until_polls(remora.polls().await? + 3).await?;
    said.push(("stopped, a write waiting", remora.reply().await?));
    pair.replica.exec(&[&engine.start_replica("")]).await?;
    said.push(("started again", expect(&remora, "up ready 100%").await?));

    // An intended delay, written to every 1.5 s: lag, weighed like any.
    pair.start_lag(20).await?;
    let writes = pair.keep_writing(Duration::from_millis(1500));
    let (delayed, _) = remora
        .wait_reply(Duration::from_secs(30), |reply| {
            weight(reply).is_some_and(|w| w < 90) && reply.contains("#lag ")
        })
        .await?;
    said.push(("delayed 20 s", delayed));
    drop(writes);
    pair.stop_lag().await?;
    said.push(("delay removed", expect(&remora, "up ready 100%").await?));

    // A duplicate row stops the SQL thread on an error.
    pair.break_replication(7).await?;
    let error = "down #sql thread error 1062";
    said.push(("duplicate row", expect(&remora, error).await?));
    pair.fix_replication(7).await?;
    said.push(("mended", expect(&remora, "up ready 100%").await?));
    Ok(said)
}

/// The reason's kind and figures' shape: `lag 12.0s` and `lag 9.5s` alike.
fn kind(reply: &str) -> String {
    let reason = reply.split_once('#').map_or("", |(_, reason)| reason);
    let verdict = reply.split_whitespace().next().unwrap_or_default();
    let words: Vec<&str> = reason
        .split_whitespace()
        .filter(|word| !word.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    format!("{verdict} {}", words.join(" "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MariaDB and the sid root's MariaDB 11 and MySQL: `make test` builds them and runs this"]
async fn every_server_gives_one_state_one_verdict() -> Result<()> {
    let (mariadb, lts, mysql) = tokio::join!(
        story(Engine::MariaDb),
        story(Engine::MariaDbLts),
        story(Engine::MySql)
    );
    let mariadb = mariadb.context("MariaDB 10.11")?;
    let lts = lts.context("MariaDB 11")?;
    let mysql = mysql.context("MySQL 9")?;
    for ((step, on_mariadb), ((_, on_lts), (_, on_mysql))) in
        mariadb.iter().zip(lts.iter().zip(&mysql))
    {
        println!("{step:<26} {on_mariadb:<32} {on_lts:<32} {on_mysql}");
        ensure!(
            kind(on_mariadb) == kind(on_lts) && kind(on_lts) == kind(on_mysql),
            "{step}: MariaDB 10.11 {on_mariadb:?}, MariaDB 11 {on_lts:?}, MySQL {on_mysql:?}"
        );
    }
    let (_, waiting) = &mysql[3];
    ensure!(
        waiting == "down #sql thread stopped",
        "stopped, not stalled: {waiting}"
    );
    let (_, delayed) = &mysql[5];
    ensure!(
        !delayed.contains('~') && !delayed.contains("stalled"),
        "a delay is measured lag: {delayed}"
    );
    Ok(())
}
