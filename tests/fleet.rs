//! One remora, many servers, in this process: `remora::run` with `targets`
//! on listeners the test bound (port 0, kept open), watching the lab's
//! MySQL wire-protocol fixtures, and a server that accepts connections and
//! never greets. Plain `cargo test` runs it: no MariaDB, no root.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::central::{Central, fleet_yaml, hung_server, metric, write};
use common::running::replica;
use remora::config::Config;
use remora_lab::fixture::{Channel, Flavor, MysqlFixture};
use remora_lab::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_target_is_judged_alone_and_asked_for_by_name() -> Result<()> {
    let (caught_up, lagging) = (replica(0).await?, replica(16).await?);
    let hung = hung_server()?;
    let central = Central::start(&fleet_yaml(&format!(
        "targets:\n  r1: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n  r2: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n  \
         stuck: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n",
        caught_up.addr.port(),
        lagging.addr.port(),
        hung.local_addr()?.port(),
    )))
    .await?;

    // HAProxy's agent-send "TARGET/POOL\n", or "TARGET\n" for its default policy.
    assert_eq!(central.reply("r1/main\n").await?, "up ready 100%");
    assert_eq!(central.reply("r2/main\n").await?, "up ready 55% #lag 16.0s");
    assert_eq!(central.reply("r2\n").await?, "up ready 55% #lag 16.0s");
    assert_eq!(
        central.reply("r2/writer\n").await?,
        "down #not writable: a replica"
    );
    assert_eq!(
        central.reply("r2/wirter\n").await?,
        "down #not writable: a replica; unknown pool wirter",
        "an unknown pool fails closed, as for a single server"
    );
    // Fail closed: a target not watched here, or none named.
    assert_eq!(central.reply("r9/main\n").await?, "down #unknown target r9");
    assert_eq!(central.reply("").await?, "down #no target named");
    assert_eq!(
        central.reply("stuck/main\n").await?,
        "down #mysql connect timeout (300ms)"
    );

    // A server that never answers delays nobody: r1 and r2 poll at their
    // own pace meanwhile, alike.
    let polls = async |name: &str| -> Result<u64> {
        let status = central.json(&format!("/status?target={name}")).await?;
        status["polls"]["total"].as_u64().context("polls.total")
    };
    let before = (
        polls("r1").await?,
        polls("r2").await?,
        polls("stuck").await?,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = (
        polls("r1").await?,
        polls("r2").await?,
        polls("stuck").await?,
    );
    let (one, two, stuck) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    eprintln!("polls in 2 s: r1 {one}, r2 {two}, stuck {stuck}");
    ensure!(
        one.abs_diff(two) * 4 <= one.max(two),
        "r1 {one} and r2 {two} polls"
    );
    ensure!(
        stuck * 2 < one,
        "the hung target polls less: {stuck} vs {one}"
    );

    // HTTP: one target's own documents, or every target's.
    let r2 = central.json("/status?target=r2").await?;
    assert_eq!(r2["weight"], 55, "{r2}");
    assert_eq!(r2["pools"]["main"]["weight"], 55, "{r2}");
    let all = central.json("/status").await?;
    assert_eq!(
        all["targets"]["r1"]["agent_reply"], "up ready 100%",
        "{all}"
    );
    assert!(
        (all["targets"]["stuck"]["server"].as_str()).is_some_and(|s| s.contains(":")),
        "{all}"
    );
    assert_eq!(central.get("/health?target=r2&pool=writer").await?.0, 503);
    assert_eq!(central.get("/health?target=r1&pool=main").await?.0, 200);
    let (code, body) = central.get("/health").await?;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("?target=NAME"), "{body}");
    assert_eq!(central.get("/status?target=r9").await?.0, 404);
    assert_eq!(central.get("/events?target=r2").await?.0, 200);
    let (code, csv) = central.get("/history?target=r2&format=csv").await?;
    assert_eq!(code, 200);
    assert!(csv.lines().count() > 2, "{csv}");

    let (_, metrics) = central.get("/metrics").await?;
    assert_eq!(
        metric(
            &metrics,
            "remora_weight_percent{target=\"r2\",pool=\"main\"}"
        ),
        Some(55.0)
    );
    assert_eq!(
        metric(&metrics, "remora_mysql_up{target=\"stuck\"}"),
        Some(0.0)
    );
    assert_eq!(metric(&metrics, "remora_targets"), Some(3.0));
    assert_eq!(
        metrics.matches("# TYPE remora_weight_percent ").count(),
        1,
        "one header per family"
    );

    let (code, overview) = central.get("/").await?;
    assert_eq!(code, 200);
    for name in ["r1", "r2", "stuck"] {
        assert!(
            overview.contains(&format!("href=\"/?target={name}\"")),
            "{overview}"
        );
    }
    let (_, page) = central.get("/?target=r2").await?;
    assert!(
        page.contains(&format!("127.0.0.1:{}", lagging.addr.port())),
        "names its server"
    );
    assert!(
        page.contains("/history?format=csv&amp;target=r2"),
        "links stay on r2"
    );
    central.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targets_file_adds_removes_changes_and_a_broken_one_keeps_the_old_set() -> Result<()> {
    let (a, b, c) = (replica(0).await?, replica(16).await?, replica(40).await?);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("targets.yaml");
    write(
        &file,
        &format!(
            "r1: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n",
            a.addr.port()
        ),
    )?;
    // Removals apply at once here (tests/fleet_edges.rs holds them back).
    let central = Central::start(&fleet_yaml(&format!(
        "targets_file: {}\nfleet: {{max_removed: 100%}}\n\
         targets: {{fixed: {{mysql: {{host: 127.0.0.1, port: {}}}}}}}\n",
        file.display(),
        c.addr.port()
    )))
    .await?;
    assert_eq!(central.targets().await?, ["fixed", "r1"]);
    assert_eq!(central.reply("r1/main\n").await?, "up ready 100%");

    // Added: polled, and answered for.
    write(
        &file,
        &format!(
            "r1: {{mysql: {{host: 127.0.0.1, port: {}}}}}\nr2: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n",
            a.addr.port(),
            b.addr.port()
        ),
    )?;
    central.wait_for_targets(&["fixed", "r1", "r2"]).await?;
    assert_eq!(central.reply("r2/main\n").await?, "up ready 55% #lag 16.0s");

    // Changed: r1 now watches the server b was (reconnects to it).
    write(
        &file,
        &format!(
            "r1: {{mysql: {{host: 127.0.0.1, port: {}}}}}\nr2: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n",
            b.addr.port(),
            b.addr.port()
        ),
    )?;
    wait_until(
        "r1 to watch the other server",
        Duration::from_secs(10),
        async || Ok((central.reply("r1/main\n").await? == "up ready 55% #lag 16.0s").then_some(())),
    )
    .await?;

    // Broken: the old set stays, and says so.
    write(&file, "r1: {mysql: {hots: nowhere}}\n")?;
    wait_until(
        "the broken file to be noticed",
        Duration::from_secs(10),
        async || {
            let (_, metrics) = central.get("/metrics").await?;
            Ok((metric(&metrics, "remora_targets_file_ok") == Some(0.0)).then_some(()))
        },
    )
    .await?;
    assert_eq!(central.targets().await?, ["fixed", "r1", "r2"]);
    let status = central.json("/status").await?;
    let why = status["targets_file"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("hots"), "{status}");

    // Removed, in Prometheus's file_sd form: r2 and r1 go, db-a comes.
    write(
        &file,
        &format!(
            r#"[{{"targets": ["127.0.0.1:{}"], "labels": {{"name": "db-a", "env": "prod"}}}}]"#,
            a.addr.port()
        ),
    )?;
    central.wait_for_targets(&["db-a", "fixed"]).await?;
    let (_, metrics) = central.get("/metrics").await?;
    assert_eq!(metric(&metrics, "remora_targets_file_ok"), Some(1.0));
    assert_eq!(central.reply("r2/main\n").await?, "down #unknown target r2");
    assert_eq!(central.reply("db-a\n").await?, "up ready 100%");
    central.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_targets_a_remora_is_the_single_server_one() -> Result<()> {
    let one = replica(16).await?;
    let central = Central::start(&format!(
        "mysql: {{host: 127.0.0.1, port: {}, user: remora}}\npoll: {{interval: 50ms}}\npools: {{main: {{}}}}\n",
        one.addr.port()
    ))
    .await?;
    assert_eq!(central.reply("main\n").await?, "up ready 55% #lag 16.0s");
    let status = central.json("/status").await?;
    assert!(
        status.get("targets").is_none(),
        "today's document: {status}"
    );
    assert_eq!(status["weight"], 55);
    let (_, metrics) = central.get("/metrics").await?;
    assert!(!metrics.contains("target="), "no target label");
    assert!(metric(&metrics, "remora_weight_percent{pool=\"main\"}") == Some(55.0));
    central.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_a_new_target_set_and_rejects_an_unreadable_one() -> Result<()> {
    let (a, b) = (replica(0).await?, replica(16).await?);
    let one = format!(
        "targets: {{r1: {{mysql: {{host: 127.0.0.1, port: {}}}}}}}\n",
        a.addr.port()
    );
    let central = Central::start(&fleet_yaml(&one)).await?;
    let two = format!(
        "targets: {{r1: {{mysql: {{host: 127.0.0.1, port: {}}}}}, r2: {{mysql: {{host: 127.0.0.1, port: {}}}}}}}\n",
        a.addr.port(),
        b.addr.port()
    );
    let reload = async |yaml: &str| -> Result<()> {
        let config = Config::from_yaml(&fleet_yaml(yaml))?;
        let secrets = config.secrets()?;
        central.reloads.send((config, secrets)).await?;
        Ok(())
    };
    reload(&two).await?;
    central.wait_for_targets(&["r1", "r2"]).await?;
    assert_eq!(central.reply("r2/main\n").await?, "up ready 55% #lag 16.0s");
    // A targets file that cannot be read: the reload is refused whole.
    reload("targets_file: /nonexistent/targets.yaml\n").await?;
    wait_until("the refusal to show", Duration::from_secs(10), async || {
        let status = central.json("/status").await?;
        Ok(status["targets_file"]["ok"]
            .as_bool()
            .is_some_and(|ok| !ok)
            .then_some(status))
    })
    .await?;
    assert_eq!(central.targets().await?, ["r1", "r2"]);
    assert_eq!(central.reply("r1/main\n").await?, "up ready 100%");
    central.stop().await
}

/// A replica `seconds` behind, as the fixture reports it.
fn lag_to(fixture: &MysqlFixture, seconds: u64) {
    fixture.set(|s| s.channels = vec![Channel::running("", seconds)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_up_keeps_the_least_lagged_in_and_never_overrides_a_fault() -> Result<()> {
    let (r1, r2, r3) = (replica(0).await?, replica(0).await?, replica(0).await?);
    let member = |fixture: &MysqlFixture| {
        format!(
            "{{mysql: {{host: 127.0.0.1, port: {}}}, member_of: [main]}}",
            fixture.addr.port()
        )
    };
    let central = Central::start(&format!(
        "mysql: {{user: remora}}\npoll: {{interval: 50ms}}\n\
         pools: {{main: {{drain_at: 30s, down_at: 300s, min_weight: 20%, recover_after: 1, keep_up: 2}}}}\n\
         targets: {{r1: {}, r2: {}, r3: {}}}\n",
        member(&r1),
        member(&r2),
        member(&r3)
    ))
    .await?;
    // Read from /status, not asked as HAProxy would: member_of alone makes
    // them members of main.
    let answer = async |name: &str| -> Result<String> {
        let status = central.json(&format!("/status?target={name}")).await?;
        let reply = status["pools"]["main"]["agent_reply"].as_str();
        Ok(reply.context("agent_reply")?.to_owned())
    };
    let answers = async || -> Result<[String; 3]> {
        Ok([
            answer("r1").await?,
            answer("r2").await?,
            answer("r3").await?,
        ])
    };
    let settle = async |wanted: [&str; 3]| -> Result<()> {
        let mut last = [String::new(), String::new(), String::new()];
        wait_until(
            &format!("{wanted:?}"),
            Duration::from_secs(10),
            async || {
                last = answers().await?;
                Ok((last == wanted).then_some(()))
            },
        )
        .await
        .with_context(|| format!("last answers {last:?}"))
    };
    settle(["up ready 100%", "up ready 100%", "up ready 100%"]).await?;

    // Two of three fall past drain_at: one may go, the less lagged stays.
    lag_to(&r1, 41);
    lag_to(&r2, 70);
    settle([
        "up ready 20% #kept up: lag 41.0s (2 of 3 would be out)",
        "up drain #lag 70.0s",
        "up ready 100%",
    ])
    .await?;
    // Every reader shows the same answer.
    assert_eq!(
        central.reply("r1/main\n").await?,
        "up ready 20% #kept up: lag 41.0s (2 of 3 would be out)"
    );
    let status = central.json("/status?target=r1").await?;
    assert_eq!(status["pools"]["main"]["weight"], 20, "{status}");
    assert_eq!(
        status["measured"]["verdict"], "up",
        "the default policy is not budgeted"
    );
    assert_eq!(central.get("/health?target=r1&pool=main").await?.0, 200);

    // r3 breaks: a fault is never overridden, and both laggards stay in.
    r3.set(|s| {
        let mut broken = Channel::running("", 0);
        broken.sql_running = "No";
        broken.seconds_behind = None;
        broken.last_sql_errno = 1062;
        broken.last_sql_error = "Duplicate entry".into();
        s.channels = vec![broken];
    });
    settle([
        "up ready 20% #kept up: lag 41.0s (3 of 3 would be out)",
        "up ready 20% #kept up: lag 70.0s (3 of 3 would be out)",
        "down #sql thread error 1062",
    ])
    .await?;

    // All caught up: nobody needs keeping.
    for fixture in [&r1, &r2, &r3] {
        lag_to(fixture, 0);
    }
    settle(["up ready 100%", "up ready 100%", "up ready 100%"]).await?;
    central.stop().await
}

/// An Aurora instance of cluster `writer-1`/`reader-1`: `id` is this one's
/// server id, `rows` its copy of `replica_host_status` (server id, lag in
/// ms, seconds since its last update).
fn aurora(fixture: &MysqlFixture, id: &str, rows: &[(&str, f64, u64)]) {
    use remora_lab::fixture::{Aurora, AuroraRow};
    let rows = (rows.iter())
        .map(|(server, lag_ms, ago)| AuroraRow {
            server_id: (*server).into(),
            session_id: if server.starts_with("writer") {
                "MASTER_SESSION_ID".into()
            } else {
                "2b6a1c3e".into()
            },
            lag_ms: *lag_ms,
            updated: std::time::SystemTime::now() - Duration::from_secs(*ago),
        })
        .collect();
    fixture.set(|s| {
        s.innodb_read_only = id.starts_with("reader");
        s.aurora = Some(Aurora {
            version: "3.05.2",
            server_id: id.into(),
            rows,
        });
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aurora_reader_is_judged_from_its_writers_copy_when_the_writer_is_a_target() -> Result<()>
{
    let (writer, reader) = (
        MysqlFixture::start(Flavor::MySql80).await?,
        MysqlFixture::start(Flavor::MySql80).await?,
    );
    // The reader's own copy is behind with it: it still shows 0.5 s of lag.
    // The writer's copy has it 16 s behind.
    aurora(
        &writer,
        "writer-1",
        &[("writer-1", 0.0, 0), ("reader-1", 16_000.0, 0)],
    );
    aurora(
        &reader,
        "reader-1",
        &[("writer-1", 0.0, 0), ("reader-1", 500.0, 0)],
    );
    let alone = Central::start(&fleet_yaml(&format!(
        "targets: {{r1: {{mysql: {{host: 127.0.0.1, port: {}}}}}}}\n",
        reader.addr.port()
    )))
    .await?;
    assert_eq!(
        alone.reply("r1/main\n").await?,
        "up ready 100%",
        "its own copy"
    );
    let status = alone.json("/status?target=r1").await?;
    assert_eq!(
        status["aurora"]["replica_host_status_from"], "own",
        "{status}"
    );
    alone.stop().await?;

    let central = Central::start(&fleet_yaml(&format!(
        "targets: {{w1: {{mysql: {{host: 127.0.0.1, port: {}}}}}, r1: {{mysql: {{host: 127.0.0.1, port: {}}}}}}}\n",
        writer.addr.port(),
        reader.addr.port()
    )))
    .await?;
    wait_until(
        "r1 judged from w1's copy",
        Duration::from_secs(10),
        async || Ok((central.reply("r1/main\n").await? == "up ready 55% #lag 16.0s").then_some(())),
    )
    .await?;
    let status = central.json("/status?target=r1").await?;
    assert_eq!(status["aurora"]["server_id"], "reader-1", "{status}");
    assert_eq!(
        status["aurora"]["replica_host_status_from"], "w1",
        "{status}"
    );
    assert_eq!(central.reply("w1/writer\n").await?, "up ready 100%");
    central.stop().await
}
