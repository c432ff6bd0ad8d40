//! The benchmark's parts, for a second each, so `make bench` cannot rot:
//! the reference, remora (plain and with pools) and the fork-per-check
//! responder all answer every check correctly under concurrent load.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{mysql_section, remora_bin};
use remora_lab::bench::{self, ForkResponder, HEALTHY, Reference};
use remora_lab::mariadb::{REMORA_PASSWORD, REMORA_USER};
use remora_lab::{Pair, Remora, measure};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    let reference = Reference::start(2, false)?;
    let reference_send = Reference::start(2, true)?;
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
    Ok(())
}
