//! `make bench`, second part: what an application reading through HAProxy
//! gets, side by side with the checks people run today. A primary writing
//! a heartbeat row every 100 ms, two MariaDB replicas, one HAProxy per
//! configuration (a TCP check, `option mysql-check`, a lag threshold
//! script in clustercheck's manner, remora as shipped, remora as shipped
//! before this measurement), and short and pooled clients reading through
//! each while `replica1` lags (0 → 90 s and back), breaks (its SQL thread,
//! 20 s) and freezes (SIGSTOP, 20 s). One run: every configuration sees the
//! same replicas at the same moments.
//!
//! Writes its section of benches/BENCHMARKS.md (`## What the application
//! reads`; the agent bench keeps it) and the picture of the lag ramp,
//! docs/reads.svg. `BENCH_READS_RAMP` (seconds) shortens the ramp.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use remora_lab::readers::Client;
use remora_lab::staleness::report::{markdown, summaries};
use remora_lab::staleness::{Bench, Configuration, Scenario, picture};

/// The section this bench owns in benches/BENCHMARKS.md.
const HEADING: &str = "What the application reads";
/// Clients of each kind per configuration, and how often each reads.
const CLIENTS: usize = 4;
const EVERY: Duration = Duration::from_millis(50);
/// remora's shipped `drain_at` and `down_at` for reads, and one poll.
const DRAIN_AT: Duration = Duration::from_secs(10);
const DOWN_AT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_secs(1);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ramp = std::env::var("BENCH_READS_RAMP")
        .ok()
        .and_then(|seconds| seconds.parse().ok())
        .map_or(Duration::from_secs(90), Duration::from_secs);
    let scenarios = [
        Scenario::LagRamp { to: ramp },
        Scenario::Broken {
            for_: Duration::from_secs(20),
        },
        Scenario::Frozen {
            for_: Duration::from_secs(20),
        },
    ];
    eprintln!("starting a primary, two replicas, two remoras and a HAProxy per configuration...");
    let mut bench =
        Bench::start(Path::new(env!("CARGO_BIN_EXE_remora")), &Configuration::ALL).await?;
    let mut runs = Vec::new();
    for scenario in scenarios {
        eprintln!("{}...", scenario.label());
        runs.push(bench.run(scenario, CLIENTS, EVERY).await?);
    }
    let svg = root.join("docs/reads.svg");
    picture::draw(&runs[0], &svg)?;
    let section = section(&runs);
    print!("{section}");
    let path = root.join("benches/BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let new = remora_lab::bench::with_section(&old, HEADING, &section);
    std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("written to {} and {}", path.display(), svg.display());
    Ok(())
}

fn section(runs: &[remora_lab::staleness::Run]) -> String {
    let mut out = format!(
        "## {HEADING}\n\n\
         Written by `make bench` (`cargo bench --bench reads`) on {}.\n\n\
         A primary writes a heartbeat row every 100 ms; two MariaDB 10.11 replicas sit behind \
         one HAProxy 2.6 per configuration, each with a backend for short connections (one per \
         read) and one for pooled ones (kept until cut); {CLIENTS} clients of each kind read \
         the row through each every {} ms. Staleness is the reader's clock minus the row's \
         time (one host, one clock). remora runs beside each replica with \
         examples/remora-pools.yaml (reads ask pool `main`: weight falls from 2 s of lag, \
         drain at {} s, down at {} s, polled every {} s); the lag threshold script answers 503 \
         from {} s of lag, as clustercheck-style scripts do at their threshold. `cliff` is the \
         largest rise of the healthy replica's share of new connections in one second. \
         The picture of the lag ramp: [docs/reads.svg](../docs/reads.svg).\n\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        EVERY.as_millis(),
        DRAIN_AT.as_secs(),
        DOWN_AT.as_secs(),
        POLL.as_secs(),
        remora_lab::staleness::THRESHOLD.as_secs(),
    );
    out.push_str(&markdown(runs));
    out.push_str(&goals(&runs[0]));
    out
}

/// The goals remora's shipped setup is held to, on the lag ramp.
fn goals(ramp: &remora_lab::staleness::Run) -> String {
    let short = summaries(ramp, Client::Short);
    let pooled = summaries(ramp, Client::Pooled);
    let shipped = Configuration::RemoraShipped;
    let cliff = |configuration| remora_lab::staleness::report::cliff(ramp, configuration);
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let mut out = String::from("Goals for remora's shipped setup, on the lag ramp:\n\n");
    let stalest_short = short[&shipped].stalest;
    out.push_str(&format!(
        "- {}: short connections read nothing staler than drain_at plus one poll ({} s; stalest {:.1} s)\n",
        verdict(stalest_short <= DRAIN_AT + POLL),
        (DRAIN_AT + POLL).as_secs(),
        stalest_short.as_secs_f64()
    ));
    let stalest_pooled = pooled[&shipped].stalest;
    out.push_str(&format!(
        "- {}: pooled connections read nothing staler than down_at plus one poll ({} s; stalest {:.1} s)\n",
        verdict(stalest_pooled <= DOWN_AT + POLL),
        (DOWN_AT + POLL).as_secs(),
        stalest_pooled.as_secs_f64()
    ));
    let healthy_errors = remora_lab::staleness::report::healthy_errors(ramp, shipped);
    out.push_str(&format!(
        "- {}: the healthy replica's clients see no error ({healthy_errors})\n",
        verdict(healthy_errors == 0)
    ));
    let (gentle, steep) = (cliff(shipped), cliff(Configuration::LagThreshold));
    out.push_str(&format!(
        "- {}: the healthy replica's share rises more gently than the threshold script's (cliff {:.0}% against {:.0}%)\n\n",
        verdict(gentle < steep),
        gentle * 100.0,
        steep * 100.0
    ));
    out
}
