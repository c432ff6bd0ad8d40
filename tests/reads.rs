//! What an application reads through HAProxy, for real: a primary writing a
//! heartbeat row every 100 ms, two MariaDB replicas behind HAProxy, and
//! applications reading through it (short connections and pooled ones)
//! while one replica's lag ramps up and back. Side by side in one run: a
//! plain TCP check, and remora as shipped. `make bench` runs the long
//! version against every configuration (benches/BENCHMARKS.md).

mod common;

use std::time::Duration;

use anyhow::Result;
use common::remora_bin;
use remora_lab::readers::Client;
use remora_lab::staleness::report::{markdown, summaries};
use remora_lab::staleness::{Bench, Configuration, Scenario};

/// remora's shipped `drain_at` for reads (`pools.main` in
/// examples/remora-pools.yaml), one poll (1 s), one agent check (1 s), and
/// two more for reads already on their way.
const DRAIN_AT: Duration = Duration::from_secs(10);
const MARGIN: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MariaDB and HAProxy: `make test` installs them and runs this"]
async fn short_connections_through_remora_never_read_what_a_tcp_check_serves() -> Result<()> {
    let configurations = [
        Configuration::TcpCheck,
        Configuration::RemoraShipped,
        Configuration::RemoraBefore,
    ];
    let mut bench = Bench::start(remora_bin(), &configurations).await?;
    let ramp = Scenario::LagRamp {
        to: Duration::from_secs(25),
    };
    let run = bench.run(ramp, 2, Duration::from_millis(100)).await?;
    println!("{}", markdown(std::slice::from_ref(&run)));
    let short = summaries(&run, Client::Short);
    let (plain, remora) = (
        &short[&Configuration::TcpCheck],
        &short[&Configuration::RemoraShipped],
    );
    assert!(
        remora.stalest * 2 < plain.stalest,
        "remora's stalest short read {:?}, the TCP check's {:?}",
        remora.stalest,
        plain.stalest
    );
    assert!(
        remora.stalest <= DRAIN_AT + MARGIN,
        "remora's stalest short read {:?}: past drain_at {DRAIN_AT:?} and a margin",
        remora.stalest
    );
    assert!(
        plain.stalest >= Duration::from_secs(20),
        "the lag was served where nothing stopped it: {:?}",
        plain.stalest
    );
    Ok(())
}
