//! The benchmark's parts, for a second each, so `make bench` cannot rot:
//! the references (current-thread and work-stealing), remora (plain, with
//! pools, with 64 pools named by the last, with idle connections held open)
//! and the fork-per-check responder all answer every check correctly under
//! concurrent load, each one's CPU time is measurable, and `/metrics` and
//! `/status` render with 64 pools and 16 channels.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{mysql_section, remora_bin};
use remora_lab::bench::{self, ForkResponder, HEALTHY, Reference, Shape, naming, pools_yaml};
use remora_lab::server::{REMORA_PASSWORD, REMORA_USER};
use remora_lab::{Pair, Remora, measure};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn every_benchmark_target_answers_correctly() -> Result<()> {
    let pair = Pair::start().await?;
    let remora = Remora::start(remora_bin(), &mysql_section(pair.replica.port)).await?;
    let pools = Remora::start(
        remora_bin(),
        &format!(
            "{}pools: {{main: {{}}}}\n",
            mysql_section(pair.replica.port)
        ),
    )
    .await?;
    let reference = Reference::shaped(Shape::CurrentThread, false)?;
    let reference_send = Reference::shaped(Shape::CurrentThread, true)?;
    let workers = Reference::start(2, false)?;
    let many = Remora::start(
        remora_bin(),
        &format!("{}{}", mysql_section(pair.replica.port), pools_yaml(64)),
    )
    .await?;
    let fork = ForkResponder::start(
        pair.replica.port,
        REMORA_USER,
        REMORA_PASSWORD,
        &pair.replica.dir,
    )
    .await?;

    for (name, addr, request) in [
        ("reference", reference.addr, None),
        (
            "reference, agent-send",
            reference_send.addr,
            Some(&b"main\n"[..]),
        ),
        ("remora", remora.agent, None),
        ("remora + pools", pools.agent, Some(&b"main\n"[..])),
        ("remora, 64 pools", many.agent, Some(naming(64))),
        ("reference, 2 workers", workers.addr, None),
        ("fork-per-check", fork.addr, None),
    ] {
        let mut load = bench::drive(addr, 4, Duration::from_secs(1), request, HEALTHY).await;
        assert!(load.checks > 0, "{name}: no check answered");
        assert_eq!(
            (load.errors, load.wrong),
            (0, 0),
            "{name}: errors and wrong answers"
        );
        assert!(load.percentile(99.0) > Duration::ZERO);
    }
    let (rss, peak) = measure::memory_kib(remora.pid())?;
    assert!(rss > 0 && peak >= rss);
    assert!(measure::cpu_time(remora.pid())? > Duration::ZERO);
    for reference in [&reference, &reference_send, &workers] {
        assert!(
            reference.cpu_time() > Duration::ZERO,
            "the reference's own CPU time"
        );
    }
    assert!(
        many.checks_answered("p64").await? > 0,
        "checks named the last pool"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn checks_are_answered_beside_idle_connections_held_open() -> Result<()> {
    remora::raise_fd_limit()?;
    let pair = Pair::start().await?;
    let yaml = format!("{}{}", mysql_section(pair.replica.port), pools_yaml(3));
    let mut remora = Remora::start(remora_bin(), &yaml).await?;
    // As the benchmark does: reloaded to wait a minute for a pool name.
    let waiting = format!("{yaml}agent: {{request_timeout: 60s, max_connections: 6000}}\n");
    remora.rewrite_config(&waiting, None, None)?;
    remora.reload()?;
    remora.wait_until_polls(remora.polls().await? + 2).await?;
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(tokio::net::TcpStream::connect(remora.agent).await?);
    }
    let load = bench::drive(
        remora.agent,
        4,
        Duration::from_secs(1),
        Some(naming(3)),
        HEALTHY,
    )
    .await;
    assert!(load.checks > 0 && load.errors + load.wrong == 0, "{load:?}");
    assert!(
        measure::open_fds(remora.pid()) >= 500,
        "the idle ones are held"
    );
    drop(idle);
    Ok(())
}

#[tokio::test]
#[ignore = "slow (seconds of load on every core): `make test` runs this"]
async fn metrics_and_status_render_with_64_pools_and_16_channels() -> Result<()> {
    let fixture = bench::sixteen_channel_replica().await?;
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "mysql: {{port: {}, user: remora}}\n{}",
            fixture.addr.port(),
            pools_yaml(64)
        ),
    )
    .await?;
    let (_, metrics) = remora.get("/metrics").await?;
    assert!(metrics.contains("pool=\"p64\""), "{metrics}");
    let status = remora.status().await?;
    assert_eq!(status["replication"].as_array().map(Vec::len), Some(16));
    assert_eq!(status["pools"].as_object().map(|p| p.len()), Some(64));
    Ok(())
}

/// The fleet's cells, small: a remora watching fixture targets answers
/// `tN/main` correctly under load, the fixtures see its polls, and the
/// readings of spread, polls in flight and gaps come out sane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_cells_work_on_a_small_fleet() -> Result<()> {
    let fixtures = bench::fleet_fixtures(8).await?;
    let since = tokio::time::Instant::now().into_std();
    let remora = Remora::start(remora_bin(), &bench::fleet_yaml(&fixtures)).await?;
    let mut load = bench::drive(
        remora.agent,
        4,
        Duration::from_secs(1),
        Some(b"t7/main\n"),
        HEALTHY,
    )
    .await;
    assert!(
        load.checks > 0 && load.errors == 0 && load.wrong == 0,
        "{load:?}"
    );
    assert!(load.percentile(99.0) < Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let spans: Vec<_> = (fixtures.iter())
        .map(|fixture| bench::poll_spans(&fixture.arrivals(), since))
        .collect();
    assert!(spans.iter().all(|polls| polls.len() >= 2), "{spans:?}");
    let (busiest, in_flight) = bench::poll_spread(&spans, Duration::from_secs(1));
    assert!((0.1..=1.0).contains(&busiest), "{busiest}");
    assert!((1..=8).contains(&in_flight), "{in_flight}");
    let gap = bench::longest_gap(&spans);
    assert!(
        gap >= Duration::from_millis(500) && gap < Duration::from_secs(3),
        "{gap:?}"
    );
    assert!(measure::cpu_time(remora.pid())? > Duration::ZERO);
    Ok(())
}
