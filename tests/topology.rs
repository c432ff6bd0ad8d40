//! One writer, and replicas that follow it, on real servers: a primary and
//! four replicas (one behind another), one central remora watching all
//! five, a real HAProxy with the shipped fleet configuration's reader and
//! writer backends. An application writes a sequence through HAProxy
//! (each row records the server it landed on) and reads through it, and
//! HAProxy's writer backend is sampled every 100 ms, while the cluster
//! goes through what operators do to it:
//!
//! 1. a chain (a replica of a replica) serves reads;
//! 2. a planned switchover: a replica promoted, another re-pointed, the old
//!    primary made read-only, and one replica forgotten on the old primary
//!    (the replicas split between two writable servers until then);
//! 3. a failover: the writer killed, a replica promoted, the others
//!    re-pointed, the old writer restarted writable;
//! 4. two writable servers that nobody follows.
//!
//! On MariaDB 10.11 behind HAProxy 2.6, and MySQL 9.7 behind HAProxy 3.2.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};
use common::{chromium, remora_bin};
use remora_lab::Engine;
use remora_lab::failover::{Change, Cluster, POLL, Write, WriterSamples, Writes, writers_up};
use remora_lab::haproxy::Release;
use remora_lab::readers::Load;
use tokio::time::{Instant, sleep};

/// How often the application writes.
const WRITE_EVERY: Duration = Duration::from_millis(20);
/// Long enough for anything remora and HAProxy do here (polls of 500 ms,
/// agent checks every second): only ever a bound on waiting, never a
/// measurement.
const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MariaDB and HAProxy: `make test` installs them and runs this"]
async fn mariadb_10_11_behind_haproxy_2_6() -> Result<()> {
    operators_at_work(Engine::MariaDb, Release::Debian).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MySQL 9 and HAProxy 3 from the sid root: `make test` builds it and runs this"]
async fn mysql_9_behind_haproxy_3() -> Result<()> {
    operators_at_work(Engine::MySql, Release::Sid).await
}

/// What the switchover left to check once every write is in.
struct Switchover {
    repointed: SystemTime,
    /// When remora's writer answer for the old writer changed.
    answer_changed: SystemTime,
    /// When HAProxy was first told so, at its next agent check.
    haproxy_told: SystemTime,
    /// When HAProxy's writer backend was first seen without it.
    haproxy_out: SystemTime,
    /// When HAProxy was first seen without the replica left behind.
    left_out: SystemTime,
    /// The writes that landed on the old writer.
    landed: Vec<u64>,
}

/// What the failover left to check.
struct Failover {
    /// When `db-e`, left on the old writer, was re-pointed to the new one.
    rejoined: SystemTime,
    restarted: SystemTime,
    /// The writes that landed on the old writer, come back.
    landed: Vec<u64>,
}

async fn operators_at_work(engine: Engine, release: Release) -> Result<()> {
    let mut cluster = Cluster::start(engine, release, remora_bin()).await?;
    let samples = WriterSamples::start(cluster.stats_socket());
    let (writes_at, reads_at) = cluster.frontends();
    let writes = Writes::start(writes_at, WRITE_EVERY);
    let (start, start_wall) = (Instant::now(), SystemTime::now());
    let reads = Load::start((reads_at, reads_at), 1, Duration::from_millis(50), start);
    let story = async {
        a_chain_serves_reads(&cluster).await?;
        let switchover = a_planned_switchover(&cluster).await?;
        let failover = a_failover_with_the_old_writer_back_writable(&mut cluster).await?;
        two_writable_servers_that_nobody_follows(&cluster).await?;
        anyhow::Ok((switchover, failover))
    };
    let told = story.await;
    let writes = writes.finish().await;
    let reads = reads.finish().await;
    let samples = samples.finish().await;
    let (switchover, failover) =
        told.with_context(|| format!("remora's log:\n{}", cluster.remora.log()))?;
    let both = samples.iter().find(|(_, up)| up.len() > 1);
    ensure!(
        both.is_none(),
        "HAProxy had two writers UP at once: {both:?}"
    );
    let sent: BTreeMap<u64, &Write> = writes.iter().map(|write| (write.seq, write)).collect();
    let sent_after = |landed: &[u64], after: SystemTime| {
        (landed.iter())
            .filter(|seq| sent.get(seq).is_some_and(|write| write.sent > after))
            .count()
    };
    // Switchover: no write on the old writer once HAProxy had it out. Those
    // between remora's new verdict and HAProxy's next check, and in the
    // moment between remora's reply and HAProxy acting on it, are said.
    let after_out = sent_after(&switchover.landed, switchover.haproxy_out);
    let after_told = sent_after(&switchover.landed, switchover.haproxy_told);
    let after_verdict = sent_after(&switchover.landed, switchover.answer_changed);
    let last_after_told = (switchover.landed.iter())
        .filter_map(|seq| sent.get(seq))
        .filter_map(|write| write.sent.duration_since(switchover.haproxy_told).ok())
        .max();
    eprintln!(
        "{engine:?} switchover: writes on the old writer sent after remora's verdict changed: \
         {after_verdict} (HAProxy asked and was told {} ms later, and was seen with it out {} ms \
         after that); sent after HAProxy was told: {after_told} (the last {last_after_told:?} \
         after); sent after HAProxy was seen with it out: {after_out}",
        millis(switchover.answer_changed, switchover.haproxy_told),
        millis(switchover.haproxy_told, switchover.haproxy_out),
    );
    ensure!(
        after_out == 0,
        "{after_out} writes landed on db-a after HAProxy had it out of the writer backend"
    );
    ensure!(
        switchover.repointed <= switchover.answer_changed,
        "db-a left the writer pool before db-c was re-pointed"
    );
    // Failover: not one write on the old writer back from the dead.
    let on_returned = sent_after(&failover.landed, failover.restarted);
    eprintln!("{engine:?} failover: writes on db-b after it came back: {on_returned}");
    ensure!(
        on_returned == 0,
        "{on_returned} writes landed on db-b after it came back"
    );
    // The replica left behind: no read served by it once HAProxy had it
    // out, until it was re-pointed to the writer.
    let left_out = switchover.left_out.duration_since(start_wall)?;
    let rejoined = failover.rejoined.duration_since(start_wall)?;
    let frozen_reads: Vec<_> = (reads.iter())
        .filter(|read| read.at > left_out && read.at < rejoined)
        .filter(|read| {
            read.outcome
                .as_ref()
                .is_ok_and(|served| served.server_id == Cluster::server_id("db-e"))
        })
        .collect();
    ensure!(
        frozen_reads.is_empty(),
        "{} reads served by db-e once it was out ({left_out:?} to {rejoined:?}): {frozen_reads:?}",
        frozen_reads.len()
    );
    let failed = writes.iter().filter(|write| !write.ok).count();
    eprintln!(
        "{engine:?}: {} writes ({failed} refused or cut), {} reads, {} samples of the writer \
         backend, never two writers UP",
        writes.len(),
        reads.len(),
        samples.len()
    );
    Ok(())
}

/// `db-d` follows `db-c`, which follows the writer `db-a`: it serves reads.
async fn a_chain_serves_reads(cluster: &Cluster) -> Result<()> {
    let status = cluster.remora.json("/status?target=db-d").await?;
    ensure!(
        status["cluster"]["place"] == "follows_writer",
        "db-d behind db-c: {status:#}"
    );
    let stat = cluster.haproxy.server("mysql_main", "db-d").await?;
    ensure!(stat.status == "UP", "db-d in the reader backend: {stat:?}");
    // /status names the writer and who follows whom, and a real browser
    // draws it on the overview: a box per server, an arrow per link.
    let status = cluster.remora.json("/status").await?;
    let found = &status["clusters"]["clusters"][0];
    ensure!(
        found["writer"] == "db-a" && found["members"].as_array().map(Vec::len) == Some(5),
        "/status clusters: {:#}",
        status["clusters"]
    );
    let follows = found["follows"].as_array().cloned().unwrap_or_default();
    ensure!(
        follows.contains(&serde_json::json!(["db-d", "db-c"])),
        "db-d follows db-c: {follows:?}"
    );
    let dom = chromium(&["--dump-dom"], &format!("http://{}/", cluster.remora.http))?;
    for drawn in [
        r#"data-target="db-a" data-place="writer""#,
        r#"data-target="db-d" data-place="follows_writer""#,
        r#"data-replica="db-d" data-source="db-c""#,
        r#"data-replica="db-e" data-source="db-a""#,
    ] {
        ensure!(dom.contains(drawn), "the overview draws no {drawn}: {dom}");
    }
    Ok(())
}

/// `db-b` promoted, `db-c` re-pointed to it, `db-a` made read-only, in
/// that order, and `db-e` forgotten on `db-a`. Until `db-a` is read-only
/// the replicas are split between two writable servers, and nobody is up
/// for writes; then `db-b` is the only one, and the writer.
async fn a_planned_switchover(cluster: &Cluster) -> Result<Switchover> {
    let (old, new) = (cluster.server("db-a"), cluster.server("db-b"));
    sleep(Duration::from_secs(1)).await;
    new.promote().await?;
    // From the moment db-c is told to follow db-b (a poll that started
    // before the statements returned may already see it).
    let repointed = SystemTime::now();
    cluster.server("db-c").repoint(new).await?;
    let socket = cluster.stats_socket();
    let haproxy_out = remora_lab::wait_until("HAProxy to take db-a out", PATIENCE, async || {
        let up = writers_up(&socket).await?;
        Ok((!up.iter().any(|name| name == "db-a")).then(SystemTime::now))
    })
    .await?;
    let haproxy_told = told_down(cluster, "db-a", "writer").await?;
    // db-a out of the writer pool at one of its next two polls.
    let out = first_change(cluster, "db-a", "writer", repointed, "down").await?;
    let polls = polls_between(cluster, "db-a", repointed, out.at).await?;
    ensure!(
        out.reason
            == "no writer: db-a and db-b are writable and the replicas are split between them",
        "db-a's reason: {out:?}"
    );
    ensure!(
        polls <= 2,
        "db-a left the writer pool {polls} polls after db-c was re-pointed: {out:?}"
    );
    let settled = SystemTime::now();
    old.set_read_only(true).await?;
    cluster.wait_writers(&["db-b"], PATIENCE).await?;
    let haproxy_in = SystemTime::now();
    // db-b in the writer pool at one of its next two polls.
    let up = first_change(cluster, "db-b", "writer", settled, "up").await?;
    let polls_in = polls_between(cluster, "db-b", settled, up.at).await?;
    ensure!(
        polls_in <= 2,
        "db-b joined the writer pool {polls_in} polls after db-a was made read-only: {up:?}"
    );
    eprintln!(
        "switchover: db-a out of the writer pool {} ms after db-c was re-pointed ({polls} of its \
         polls), out of HAProxy's by {} ms; db-a made read-only {} ms after the re-point, db-b \
         in the writer pool {} ms after that ({polls_in} of its polls), in HAProxy's by {} ms",
        millis(repointed, out.at),
        millis(repointed, haproxy_out),
        millis(repointed, settled),
        millis(settled, up.at),
        millis(settled, haproxy_in),
    );
    // db-e, left on db-a: its lag is 0 (db-a takes no writes), its copy
    // frozen: out for reads, the reason naming both servers.
    let left = first_change(cluster, "db-e", "main", settled, "down").await?;
    let polls = polls_between(cluster, "db-e", settled, left.at).await?;
    ensure!(
        left.reason == "follows db-a, not the writer db-b",
        "db-e's reason: {left:?}"
    );
    ensure!(
        polls <= 2,
        "db-e left the reader pool {polls} polls after db-b became the writer: {left:?}"
    );
    // Out of both reader backends: the frontend reads from the backup
    // one while the main one has too few servers up.
    for backend in ["mysql_main", "mysql_backup"] {
        (cluster.haproxy)
            .watch_server(backend, "db-e", PATIENCE, |s| s.status != "UP")
            .await?;
    }
    let left_out = SystemTime::now();
    let lag = cluster.remora.json("/status?target=db-e").await?["lag"].clone();
    eprintln!(
        "replica left behind: db-e out for reads {} ms after db-b became the only writable \
         server ({polls} of its polls), its lag {lag}",
        millis(settled, left.at)
    );
    // db-d, behind db-c, now follows the writer through it.
    let status = cluster.remora.json("/status?target=db-d").await?;
    ensure!(
        status["cluster"]["place"] == "follows_writer",
        "db-d: {status:#}"
    );
    Ok(Switchover {
        repointed,
        answer_changed: out.at,
        haproxy_told,
        haproxy_out,
        left_out,
        landed: cluster.landed_on("db-a").await?,
    })
}

/// The writer `db-b` killed; `db-c` promoted; `db-e` (left on `db-a`)
/// re-pointed to it (`db-d` follows it already); `db-b` restarted writable.
async fn a_failover_with_the_old_writer_back_writable(cluster: &mut Cluster) -> Result<Failover> {
    let killed = SystemTime::now();
    cluster.server_mut("db-b").kill();
    cluster.wait_writers(&[], PATIENCE).await?;
    cluster.server("db-c").promote().await?;
    let promoted = SystemTime::now();
    let rejoined = SystemTime::now();
    (cluster.server("db-e"))
        .repoint(cluster.server("db-c"))
        .await?;
    cluster.wait_writers(&["db-c"], PATIENCE).await?;
    let db_c_in = SystemTime::now();
    cluster.server_mut("db-b").restart().await?;
    let restarted = SystemTime::now();
    let read_only = cluster.server("db-b").value("SELECT @@read_only").await?;
    ensure!(
        read_only.as_deref() == Some("0"),
        "db-b came back read-only ({read_only:?}): not this scenario"
    );
    let answer = wait_for_reason(cluster, "db-b", "not the writer: replicas follow db-c").await?;
    sleep(POLL * 4).await;
    // Not one answer up since it came back.
    let changes = cluster.changes("db-b", "writer").await?;
    let up = (changes.iter()).find(|change| change.at >= restarted && change.to.starts_with("up"));
    ensure!(
        up.is_none(),
        "db-b was up for writes after it came back: {up:?}"
    );
    eprintln!(
        "failover: no writer in HAProxy from the kill until db-c, {} ms later ({} ms after its \
         promotion); db-b back writable answers {answer}",
        millis(killed, db_c_in),
        millis(promoted, db_c_in),
    );
    Ok(Failover {
        rejoined,
        restarted,
        landed: cluster.landed_on("db-b").await?,
    })
}

/// `db-b` made read-only, `db-d` and `db-e` taken out of replication,
/// `db-a` writable again: `db-a` and `db-c` take writes and nobody
/// follows either.
async fn two_writable_servers_that_nobody_follows(cluster: &Cluster) -> Result<()> {
    cluster.server("db-b").set_read_only(true).await?;
    for name in ["db-d", "db-e"] {
        cluster.server(name).stand_alone().await?;
    }
    cluster.server("db-a").set_read_only(false).await?;
    cluster.wait_writers(&[], PATIENCE).await?;
    for name in ["db-a", "db-c"] {
        wait_for_reason(
            cluster,
            name,
            "no writer: db-a and db-c are writable and no replica follows either",
        )
        .await?;
    }
    // And it stays so.
    sleep(POLL * 4).await;
    let up = writers_up(&cluster.stats_socket()).await?;
    ensure!(
        up.is_empty(),
        "a writer came back with nobody following: {up:?}"
    );
    Ok(())
}

/// The first change of `name`'s `pool` at or after `since` to an answer
/// starting with `to`.
async fn first_change(
    cluster: &Cluster,
    name: &str,
    pool: &str,
    since: SystemTime,
    to: &str,
) -> Result<Change> {
    let what = format!("{name}'s {pool} answer to become {to}");
    let found = remora_lab::wait_until(&what, PATIENCE, async || {
        let changes = cluster.changes(name, pool).await?;
        Ok(changes
            .into_iter()
            .find(|change| change.at >= since && change.to.starts_with(to)))
    })
    .await;
    match found {
        Ok(change) => Ok(change),
        Err(err) => {
            let events = cluster
                .remora
                .json(&format!("/events?target={name}"))
                .await?;
            Err(err.context(format!("since {since:?}; {name}'s events: {events:#}")))
        }
    }
}

/// When the HAProxy asking for `name`'s `pool` was first told `down`, as
/// remora's record of who asked says.
async fn told_down(cluster: &Cluster, name: &str, pool: &str) -> Result<SystemTime> {
    let status = cluster
        .remora
        .json(&format!("/status?target={name}"))
        .await?;
    let peers = status["pools"][pool]["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut told = Vec::new();
    for peer in peers.iter().filter(|peer| peer["last_verdict"] == "down") {
        let since = peer["last_verdict_since"].as_str().unwrap_or_default();
        told.push(humantime::parse_rfc3339(since).with_context(|| format!("{peer}"))?);
    }
    (told.into_iter().min()).with_context(|| format!("nobody was told {name} is down: {peers:#?}"))
}

/// Until target `name`'s writer answer says `reason`; its agent line.
async fn wait_for_reason(cluster: &Cluster, name: &str, reason: &str) -> Result<String> {
    let what = format!("{name} to answer {reason:?}");
    remora_lab::wait_until(&what, PATIENCE, async || {
        let status = cluster
            .remora
            .json(&format!("/status?target={name}"))
            .await?;
        let writer = &status["pools"]["writer"];
        Ok((writer["reason"] == reason).then(|| writer["agent_reply"].to_string()))
    })
    .await
}

/// How many of `name`'s polls came after `from`, up to `to` included.
async fn polls_between(
    cluster: &Cluster,
    name: &str,
    from: SystemTime,
    to: SystemTime,
) -> Result<usize> {
    let polls = cluster.polls(name).await?;
    Ok(polls.iter().filter(|at| **at > from && **at <= to).count())
}

fn millis(from: SystemTime, to: SystemTime) -> u128 {
    to.duration_since(from).unwrap_or_default().as_millis()
}
