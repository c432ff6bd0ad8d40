//! End to end with a real HAProxy, Debian 12's 2.6 and sid's 3.x, each test
//! on both, running the shipped `haproxy/haproxy.cfg`:
//! a MariaDB pair, a remora beside each server answering three pools, and
//! HAProxy in front. Proven by HAProxy's own stats socket and by real MySQL
//! sessions through its frontends (`SELECT @@port` says which server answered).
// This test times a real process with the wall clock, on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::remora_bin;
use remora_lab::haproxy::{self, Binds, Release, ServerStat, Targets};
use remora_lab::{Engine, Stack, wait_until};

/// The pools the shipped HAProxy config asks for, with a strict main pool
/// compressed in time so a test sees every stage within seconds.
const POOLS: &str = "poll: {interval: 200ms}
pools:
  main: {full_weight_below: 1s, min_weight_at: 5s, min_weight: 10%, drain_at: 7s, down_at: 9s, recover_after: 3}
  backup: {drain_at: 1h, down_at: 2h}
  writer: {role: primary}
";

fn statuses(seen: &[ServerStat]) -> Vec<String> {
    seen.iter()
        .map(|s| format!("{} {}", s.status, s.weight))
        .collect()
}

#[test]
#[ignore = "needs MariaDB and HAProxy: `make test` installs it and runs this"]
fn every_shipped_config_passes_haproxy_check() -> Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("haproxy");
    let scratch = tempfile::tempdir()?;
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let env = haproxy::environment(
        &Targets {
            primary: loopback(3306),
            primary_agent: loopback(9258),
            replica: loopback(3307),
            replica_agent: loopback(9358),
            main_min_servers: 2,
        },
        &Binds::free(scratch.path())?,
    );
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "cfg") {
            // As the tests and compose run it, and with nothing set (the lab's defaults).
            for release in Release::ALL {
                haproxy::check_on(release, &path, &env)?;
                haproxy::check_on(release, &path, &[])?;
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no haproxy/*.cfg");
    Ok(())
}

/// POOLS with a longer curve for pool main: lag grows a second per second
/// and HAProxy asks every second, so 1s to 13s gives it about a dozen
/// chances to apply a weight between 100% and 10%, where 1s to 5s gave four
/// (a loaded machine saw only two applied).
const LONG_CURVE: &str = "poll: {interval: 200ms}
pools:
  main: {full_weight_below: 1s, min_weight_at: 13s, min_weight: 10%, drain_at: 15s, down_at: 17s, recover_after: 3}
  backup: {drain_at: 1h, down_at: 2h}
  writer: {role: primary}
";

on_each_haproxy!(haproxy_weights_follow_lag_step_by_step_then_drain_down_and_full_recovery);
async fn haproxy_weights_follow_lag_step_by_step_then_drain_down_and_full_recovery(
    release: Release,
) -> Result<()> {
    let stack = Stack::start_on((Engine::MariaDb, release), remora_bin(), LONG_CURVE, 2).await?;
    let haproxy = &stack.haproxy;
    let _writes = stack.pair.keep_writing(Duration::from_millis(100));
    stack.pair.start_lag(120).await?;

    let falling = haproxy
        .watch_server("mysql_main", "replica", Duration::from_secs(45), |s| {
            s.status.starts_with("DOWN")
        })
        .await?;
    let shown = statuses(&falling);
    let ups: Vec<u32> = falling
        .iter()
        .filter(|s| s.status == "UP")
        .map(|s| s.weight)
        .collect();
    assert_eq!(ups.first(), Some(&100), "{shown:#?}");
    assert!(
        ups.windows(2).all(|w| w[1] < w[0]),
        "weights only fall: {shown:#?}"
    );
    assert!(
        ups.iter().filter(|w| (11..100).contains(*w)).count() >= 3,
        "HAProxy applied at least three intermediate weights: {shown:#?}"
    );
    let drain = falling.iter().position(|s| s.status == "DRAIN (agent)");
    let down = falling.iter().position(|s| s.status == "DOWN (agent)");
    assert!(
        matches!((drain, down), (Some(d), Some(n)) if d < n),
        "DRAIN, then DOWN, both from the agent: {shown:#?}"
    );
    let state = haproxy.server_state("mysql_main", "replica").await?;
    assert_eq!(state["srv_op_state"], "0", "stopped: {state:?}");
    // The relaxed pool, same server, same moment: still serving.
    let backup = haproxy.server("mysql_backup", "replica").await?;
    assert_eq!(backup.status, "UP", "{backup:?}");

    stack.pair.stop_lag().await?;
    let rising = haproxy
        .watch_server("mysql_main", "replica", Duration::from_secs(30), |s| {
            s.status == "UP" && s.weight == 100
        })
        .await?;
    let state = haproxy.server_state("mysql_main", "replica").await?;
    assert_eq!(
        (
            state["srv_op_state"].as_str(),
            state["srv_admin_state"].as_str(),
            state["srv_uweight"].as_str()
        ),
        ("2", "0", "100"),
        "running, ready (drain cleared), full weight: {state:?}; saw {:#?}",
        statuses(&rising)
    );
    Ok(())
}

on_each_haproxy!(sessions_through_the_main_backend_split_by_weight);
async fn sessions_through_the_main_backend_split_by_weight(release: Release) -> Result<()> {
    // Lag held at about 5s (MASTER_DELAY=5 with steady writes) maps to 25%.
    let pools = "poll: {interval: 200ms}
pools:
  main: {full_weight_below: 1s, min_weight_at: 2s, min_weight: 25%, drain_at: 60s, down_at: 120s}
  backup: {drain_at: 1h, down_at: 2h}
  writer: {role: primary}
";
    let stack = Stack::start_on((Engine::MariaDb, release), remora_bin(), pools, 2).await?;
    let _writes = stack.pair.keep_writing(Duration::from_millis(50));
    stack.pair.start_lag(5).await?;
    stack
        .haproxy
        .watch_server("mysql_main", "replica", Duration::from_secs(20), |s| {
            s.status == "UP" && s.weight == 25
        })
        .await?;
    assert_eq!(
        stack.haproxy.server("mysql_main", "primary").await?.weight,
        100
    );

    // Application sessions are long-lived: open 300 and keep them open.
    // roundrobin hands new connections out in proportion to the weights, 100:25.
    let mut sessions = Vec::new();
    let mut landed: HashMap<&str, u32> = HashMap::new();
    for _ in 0..300 {
        let mut conn = stack.connect_reads().await?;
        *landed.entry(stack.server_of(&mut conn).await?).or_default() += 1;
        sessions.push(conn);
    }
    let replica = landed.get("replica").copied().unwrap_or(0);
    let primary = landed.get("primary").copied().unwrap_or(0);
    let share = f64::from(replica) / 300.0;
    eprintln!("weights 100:25 -> sessions {primary}:{replica}");
    assert!(
        (0.15..=0.25).contains(&share),
        "replica at 25% of the primary's weight got {replica} of 300 sessions ({primary} on the primary)"
    );
    for conn in sessions {
        let _ = conn.disconnect().await;
    }
    Ok(())
}

on_each_haproxy!(
    reads_fall_back_to_the_backup_pool_when_main_is_too_thin_and_return_after_recovery
);
async fn reads_fall_back_to_the_backup_pool_when_main_is_too_thin_and_return_after_recovery(
    release: Release,
) -> Result<()> {
    let pools = "poll: {interval: 200ms}
pools:
  main: {full_weight_below: 1s, min_weight_at: 2s, drain_at: 3s, down_at: 60s, recover_after: 2}
  backup: {drain_at: 1h, down_at: 2h}
  writer: {role: primary}
";
    let stack = Stack::start_on((Engine::MariaDb, release), remora_bin(), pools, 2).await?;
    let haproxy = &stack.haproxy;
    let sessions = |backend| async move {
        Ok::<u64, anyhow::Error>(haproxy.server(backend, "BACKEND").await?.sessions)
    };
    let open_and_close = |count| open_and_close(&stack, count);

    // Healthy: both servers usable in main, reads go to main.
    let (main0, backup0) = (
        sessions("mysql_main").await?,
        sessions("mysql_backup").await?,
    );
    open_and_close(10).await?;
    assert_eq!(sessions("mysql_main").await? - main0, 10);
    assert_eq!(sessions("mysql_backup").await?, backup0);

    // The replica drains in main (lag >= 3s): main has 1 usable server < 2.
    let _writes = stack.pair.keep_writing(Duration::from_millis(100));
    stack.pair.start_lag(60).await?;
    haproxy
        .watch_server("mysql_main", "replica", Duration::from_secs(20), |s| {
            s.status.starts_with("DRAIN")
        })
        .await?;
    let backup_replica = haproxy.server("mysql_backup", "replica").await?;
    assert_eq!(
        backup_replica.status, "UP",
        "backup still serves the lagging replica"
    );
    let (main1, backup1) = (
        sessions("mysql_main").await?,
        sessions("mysql_backup").await?,
    );
    open_and_close(10).await?;
    assert_eq!(sessions("mysql_main").await?, main1, "nothing new on main");
    assert_eq!(
        sessions("mysql_backup").await? - backup1,
        10,
        "every new session on backup"
    );

    // Caught up: back in main, reads return to main.
    stack.pair.stop_lag().await?;
    haproxy
        .watch_server("mysql_main", "replica", Duration::from_secs(20), |s| {
            s.status == "UP" && s.weight == 100
        })
        .await?;
    let (main2, backup2) = (
        sessions("mysql_main").await?,
        sessions("mysql_backup").await?,
    );
    open_and_close(10).await?;
    assert_eq!(sessions("mysql_main").await? - main2, 10);
    assert_eq!(sessions("mysql_backup").await?, backup2);
    Ok(())
}

/// Opens `count` read sessions through HAProxy, one after another.
async fn open_and_close(stack: &Stack, count: usize) -> Result<()> {
    for _ in 0..count {
        let conn = stack.connect_reads().await?;
        conn.disconnect().await?;
    }
    Ok(())
}

on_each_haproxy!(the_writer_backend_routes_only_to_the_writable_primary_and_follows_read_only);
async fn the_writer_backend_routes_only_to_the_writable_primary_and_follows_read_only(
    release: Release,
) -> Result<()> {
    let stack = Stack::start_on((Engine::MariaDb, release), remora_bin(), POOLS, 2).await?;
    let haproxy = &stack.haproxy;
    // The replica's first agent answer in the writer backend may lag the
    // others' on a loaded machine: wait for it rather than read it once.
    haproxy
        .watch_server("mysql_writer", "replica", Duration::from_secs(5), |s| {
            s.status.starts_with("DOWN")
        })
        .await?;
    for _ in 0..20 {
        let mut conn = stack.connect_writes().await?;
        assert_eq!(stack.server_of(&mut conn).await?, "primary");
        conn.disconnect().await?;
    }

    // The primary stops being writable: out of the writer pool within one
    // agent interval (1s) plus one poll.
    stack
        .pair
        .primary
        .exec(&["SET GLOBAL read_only = ON"])
        .await?;
    let asked = Instant::now();
    let seen = haproxy
        .watch_server("mysql_writer", "primary", Duration::from_secs(5), |s| {
            s.status.starts_with("DOWN")
        })
        .await?;
    let took = asked.elapsed();
    eprintln!("read_only=ON -> writer DOWN in HAProxy after {took:?}");
    assert!(
        took < Duration::from_millis(1800),
        "out after {took:?}: {:#?}",
        statuses(&seen)
    );
    assert!(
        stack.connect_writes().await.is_err(),
        "no writable server: HAProxy refuses the session"
    );

    // Promote the replica: writes follow, with no change to HAProxy's config.
    stack
        .pair
        .replica
        .exec(&[
            "STOP SLAVE",
            "RESET SLAVE ALL",
            "SET GLOBAL read_only = OFF",
        ])
        .await?;
    haproxy
        .watch_server("mysql_writer", "replica", Duration::from_secs(5), |s| {
            s.status == "UP"
        })
        .await?;
    let mut conn = stack.connect_writes().await?;
    assert_eq!(stack.server_of(&mut conn).await?, "replica");
    conn.disconnect().await?;
    Ok(())
}

on_each_haproxy!(
    a_stopped_remora_freezes_its_last_state_and_a_restarted_one_relearns_within_an_interval
);
async fn a_stopped_remora_freezes_its_last_state_and_a_restarted_one_relearns_within_an_interval(
    release: Release,
) -> Result<()> {
    let mut stack = Stack::start_on((Engine::MariaDb, release), remora_bin(), POOLS, 2).await?;
    let _writes = stack.pair.keep_writing(Duration::from_millis(100));
    stack.pair.start_lag(120).await?;
    stack
        .haproxy
        .watch_server("mysql_main", "replica", Duration::from_secs(20), |s| {
            s.status.starts_with("DRAIN")
        })
        .await?;

    // remora gone: HAProxy ignores the failing agent and keeps DRAIN, even
    // after the replica has caught up. This is why remora must not die, and
    // why the regular check sits beside the agent.
    stack.on_replica.stop();
    stack.pair.stop_lag().await?;
    stack.pair.wait_caught_up(Duration::from_secs(20)).await?;
    // HAProxy asks both servers' agents on the same schedule: three more
    // checks answered beside the primary mean three failed ones beside the
    // replica, and HAProxy still keeps DRAIN.
    let asked = stack.on_primary.checks_answered("main").await?;
    wait_until(
        "three more agent checks of pool main",
        Duration::from_secs(20),
        async || Ok((stack.on_primary.checks_answered("main").await? >= asked + 3).then_some(())),
    )
    .await?;
    let frozen = stack.haproxy.server("mysql_main", "replica").await?;
    assert!(frozen.status.starts_with("DRAIN"), "{frozen:?}");
    assert_eq!(
        frozen.agent_status, "L4CON",
        "the agent check fails: {frozen:?}"
    );

    let restarted = Instant::now();
    stack.on_replica.restart().await?;
    stack
        .haproxy
        .watch_server("mysql_main", "replica", Duration::from_secs(5), |s| {
            s.status == "UP" && s.weight == 100
        })
        .await?;
    // One agent interval (1s) after remora answers again, plus its first poll.
    let took = restarted.elapsed();
    eprintln!("remora restarted -> HAProxy UP 100 after {took:?}");
    assert!(
        took < Duration::from_millis(2500),
        "relearned after {took:?}"
    );
    Ok(())
}

/// The value of one `/metrics` sample, `series` being its name and labels.
async fn metric(remora: &remora_lab::Remora, series: &str) -> Result<f64> {
    let (code, text) = remora.get("/metrics").await?;
    anyhow::ensure!(code == 200, "/metrics answered {code}");
    let line = (text.lines())
        .find(|line| line.starts_with(&format!("{series} ")))
        .ok_or_else(|| anyhow::anyhow!("{series} missing from /metrics"))?;
    Ok(line.rsplit(' ').next().unwrap_or("").parse()?)
}

on_each_haproxy!(remora_sees_which_haproxy_asks_and_notices_when_it_stops);
async fn remora_sees_which_haproxy_asks_and_notices_when_it_stops(release: Release) -> Result<()> {
    let mut stack = Stack::start_on((Engine::MariaDb, release), remora_bin(), POOLS, 2).await?;
    let remora = &stack.on_replica;
    let peers = "remora_agent_peers{pool=\"main\"}";
    let silent = "remora_agent_peers_silent{pool=\"main\"}";
    let last = "remora_agent_last_check_timestamp_seconds{pool=\"main\"}";
    wait_until(
        "HAProxy's checks of pool main",
        Duration::from_secs(20),
        async || {
            let status = remora.status().await?;
            let peer = &status["pools"]["main"]["peers"][0];
            Ok((peer["checks"].as_u64() >= Some(3)).then(|| peer.clone()))
        },
    )
    .await
    .map(|peer| {
        assert_eq!(peer["address"], "127.0.0.1", "{peer}");
        assert_eq!(peer["silent"], false, "{peer}");
        assert_eq!(peer["last_verdict"], "up", "{peer}");
        // The shipped config asks every second.
        let interval = peer["interval_seconds"].as_f64().unwrap_or(0.0);
        assert!((0.5..2.0).contains(&interval), "{peer}");
    })?;
    assert_eq!(metric(remora, peers).await?, 1.0);
    assert_eq!(metric(remora, silent).await?, 0.0);
    let asked_at = metric(remora, last).await?;
    assert!(asked_at > 1.7e9, "a Unix time: {asked_at}");

    // HAProxy dies: the alert's inputs go stale. The peer is still
    // remembered (ten minutes), now silent, and its last check stands still.
    stack.haproxy.stop();
    wait_until(
        "the peer to fall silent",
        Duration::from_secs(20),
        async || Ok((metric(remora, silent).await? == 1.0).then_some(())),
    )
    .await?;
    let frozen = metric(remora, last).await?;
    assert_eq!(metric(remora, peers).await?, 1.0);
    let status = remora.status().await?;
    let peer = &status["pools"]["main"]["peers"][0];
    assert_eq!(peer["silent"], true, "{peer}");
    assert!(
        peer["seconds_since_last_check"].as_f64() > Some(2.0),
        "{peer}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric(remora, last).await?, frozen, "no check came since");
    Ok(())
}

on_each_haproxy!(after_maintenance_ends_haproxy_weights_climb_step_by_step_over_ramp_up);
async fn after_maintenance_ends_haproxy_weights_climb_step_by_step_over_ramp_up(
    release: Release,
) -> Result<()> {
    let yaml = format!("{POOLS}policy: {{ramp_up: 8s}}\n");
    let stack = Stack::start_on((Engine::MariaDb, release), remora_bin(), &yaml, 2).await?;
    let replica = "replica";
    stack
        .haproxy
        .watch_server("mysql_main", replica, Duration::from_secs(10), |s| {
            s.status == "UP" && s.weight == 100
        })
        .await?;
    let http = stack.on_replica.http;
    let (code, _) =
        remora_lab::remora::http_exchange(http, "POST", "/maintenance", &[], "drain").await?;
    assert_eq!(code, 200);
    stack
        .haproxy
        .watch_server("mysql_main", replica, Duration::from_secs(5), |s| {
            s.status.starts_with("DRAIN")
        })
        .await?;

    let (code, _) =
        remora_lab::remora::http_exchange(http, "DELETE", "/maintenance", &[], "").await?;
    assert_eq!(code, 200);
    let seen = stack
        .haproxy
        .watch_server("mysql_main", replica, Duration::from_secs(20), |s| {
            s.status == "UP" && s.weight == 100
        })
        .await?;
    let weights: Vec<u32> = seen
        .iter()
        .filter(|s| s.status == "UP")
        .map(|s| s.weight)
        .collect();
    eprintln!(
        "HAProxy weights after maintenance ended: {:?}",
        statuses(&seen)
    );
    // The main pool's min_weight is 10%: the climb starts there (HAProxy
    // asks once a second, so it first sees a step or two later) and rises in
    // steps, never back down, until full weight.
    assert!(
        weights.first().is_some_and(|w| *w <= 50),
        "started low: {weights:?}"
    );
    assert!(
        weights.windows(2).all(|pair| pair[0] < pair[1]),
        "rises monotonically: {weights:?}"
    );
    assert!(
        weights.len() >= 4,
        "climbs step by step, not in one jump: {weights:?}"
    );
    Ok(())
}

on_each_haproxy!(one_central_remora_weights_each_server_behind_haproxy_by_target_and_pool);
async fn one_central_remora_weights_each_server_behind_haproxy_by_target_and_pool(
    release: Release,
) -> Result<()> {
    let pair = remora_lab::Pair::start().await?;
    // examples/remora-fleet.yaml's shape, on the lab's pair, compressed in time.
    let central = remora_lab::Remora::start(
        remora_bin(),
        &format!(
            "mysql: {{user: remora, password_env: REMORA_MYSQL_PASSWORD}}\n{POOLS}\
             targets:\n  primary: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n  replica: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n",
            pair.primary.port, pair.replica.port
        ),
    )
    .await?;
    let loopback = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let haproxy = remora_lab::Haproxy::start_config_on(
        release,
        &haproxy::fleet_config(),
        &Targets {
            primary: loopback(pair.primary.port),
            primary_agent: central.agent,
            replica: loopback(pair.replica.port),
            replica_agent: central.agent,
            main_min_servers: 1,
        },
    )
    .await?;
    for server in ["primary", "replica"] {
        haproxy
            .watch_server("mysql_main", server, Duration::from_secs(10), |s| {
                s.status == "UP" && s.weight == 100
            })
            .await?;
    }
    // The writer pool of the same remora: the replica is not writable.
    haproxy
        .watch_server("mysql_writer", "replica", Duration::from_secs(10), |s| {
            s.status.starts_with("DOWN")
        })
        .await?;
    haproxy
        .watch_server("mysql_writer", "primary", Duration::from_secs(10), |s| {
            s.status == "UP" && s.weight == 100
        })
        .await?;

    // Lag on the replica: its weight falls, the primary's stays at 100.
    let _writes = pair.keep_writing(Duration::from_millis(100));
    pair.start_lag(120).await?;
    let lowered = haproxy
        .watch_server("mysql_main", "replica", Duration::from_secs(20), |s| {
            s.status == "UP" && (1..100).contains(&s.weight)
        })
        .await?;
    eprintln!("replica under lag: {lowered:?}");
    let primary = haproxy.server("mysql_main", "primary").await?;
    assert_eq!(
        (primary.status.as_str(), primary.weight),
        ("UP", 100),
        "{primary:?}"
    );
    haproxy
        .watch_server("mysql_main", "replica", Duration::from_secs(20), |s| {
            s.status.starts_with("DRAIN")
        })
        .await?;
    let (_, status) = central.get("/status?target=replica").await?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    let peers = &status["pools"]["main"]["peers"];
    assert_eq!(
        peers[0]["address"], "127.0.0.1",
        "HAProxy is seen asking: {status}"
    );

    pair.stop_lag().await?;
    pair.wait_caught_up(Duration::from_secs(30)).await?;
    haproxy
        .watch_server("mysql_main", "replica", Duration::from_secs(20), |s| {
            s.status == "UP" && s.weight == 100
        })
        .await?;
    Ok(())
}

/// `remora ctl` as an operator runs it: the same config file as the
/// remora it talks to (here with the address that remora bound).
fn ctl(remora: &remora_lab::Remora, args: &[&str]) -> Result<std::process::Output> {
    let yaml = std::fs::read_to_string(&remora.config_path)?;
    let yaml =
        remora_lab::remora::set_keys(&yaml, &[("http", "listen", remora.http.to_string().into())])?;
    let config = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    std::fs::write(config.path(), yaml)?;
    let config = config.path().display().to_string();
    let mut words = vec!["ctl", "--config", &config];
    words.extend_from_slice(args);
    Ok(common::run_remora(&words)?)
}

on_each_haproxy!(ctl_drain_wait_returns_once_haproxy_has_the_server_in_drain_and_names_a_dead_one);
async fn ctl_drain_wait_returns_once_haproxy_has_the_server_in_drain_and_names_a_dead_one(
    release: Release,
) -> Result<()> {
    let mut stack = Stack::start_on((Engine::MariaDb, release), remora_bin(), POOLS, 2).await?;
    let remora = &stack.on_replica;
    wait_until(
        "HAProxy asking about pool main",
        Duration::from_secs(20),
        async || {
            let status = remora.status().await?;
            Ok((status["pools"]["main"]["peers"][0]["checks"].as_u64() >= Some(2)).then_some(()))
        },
    )
    .await?;

    let out = tokio::task::block_in_place(|| {
        ctl(
            remora,
            &["drain", "deploy", "42", "--wait", "--timeout", "20s"],
        )
    })?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("acknowledged"), "{said}");
    // The moment it returns, HAProxy already has the server in DRAIN.
    for backend in ["mysql_main", "mysql_backup"] {
        let seen = stack.haproxy.server(backend, "replica").await?;
        assert!(seen.status.starts_with("DRAIN"), "{backend}: {seen:?}");
    }
    let status = tokio::task::block_in_place(|| ctl(remora, &["status"]))?;
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("main: up drain #maintenance: deploy 42"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let ready = tokio::task::block_in_place(|| ctl(remora, &["ready"]))?;
    assert_eq!(ready.status.code(), Some(0));
    stack
        .haproxy
        .watch_server("mysql_main", "replica", Duration::from_secs(10), |s| {
            s.status == "UP"
        })
        .await?;

    // HAProxy dies: nobody will ever ask again, and ctl says who it waited for.
    stack.haproxy.stop();
    let out = tokio::task::block_in_place(|| {
        ctl(&stack.on_replica, &["drain", "--wait", "--timeout", "2s"])
    })?;
    let why = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{why}");
    assert!(why.contains("not acknowledged"), "{why}");
    assert!(why.contains("127.0.0.1 (pool main)"), "{why}");
    Ok(())
}
