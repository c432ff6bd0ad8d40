//! `make bench`: what one agent check costs, measured against the floor,
//! with error bars.
//!
//! In one run on one machine: a real MariaDB replica (the lab's), remora
//! (release build) beside it with and without pools, and the reference
//! responder: one current-thread tokio runtime that writes a fixed line and
//! closes (the cheapest responder there is; with agent-send it reads the
//! line first). Each cell (a number of concurrent clients) drives its
//! targets in `BENCH_ROUNDS` alternating rounds (A B A B, the order swapped
//! every round) of `BENCH_SECONDS` each, and reports per-round ratios
//! against the reference: the median, which targets are judged on, and the
//! min–max spread. CPU per check comes from each one's own CPU time over its
//! runs (remora's process, the reference's threads).
//!
//! Then: cost as work grows (1 to 64 pools; 5,000 idle connections beside
//! the load; `/metrics` and `/status` with 64 pools and 16 channels), a
//! fork-per-check responder like the xinetd/clustercheck scripts operators
//! run today, and fault detection (an SQL thread error, a frozen replica).
//!
//! Prints a markdown report and writes it to benches/BENCHMARKS.md (or
//! `$BENCH_OUT`). `$BENCH_REMORA` measures another remora binary.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use mysql_async::prelude::Queryable;
use remora_lab::bench::{self, ForkResponder, HEALTHY, Load, Reference, Shape, naming, pools_yaml};
use remora_lab::server::{REMORA_PASSWORD, REMORA_USER};
use remora_lab::{Pair, Remora, agent_reply, http_get, measure};
use tokio::net::TcpStream;
use tokio::time::Instant;

const CONCURRENCY: [usize; 4] = [1, 8, 64, 256];
/// Clients for the cost-as-work-grows cells.
const SCALING_CLIENTS: usize = 64;
const POOL_COUNTS: [usize; 4] = [1, 4, 16, 64];
const IDLE_CONNECTIONS: usize = 5000;
/// The fork responder forks a shell and a client per check: at higher
/// concurrency it only measures how fast this machine can fork.
const FORK_CONCURRENCY: [usize; 2] = [1, 8];
/// Targets one remora watches, for the fleet's cells.
const FLEET_SIZES: [usize; 4] = [1, 10, 100, 1000];
/// How long a fleet at rest, and with a hung target, is watched.
const FLEET_WINDOW: Duration = Duration::from_secs(10);
const DETECTION_TRIALS: u32 = 5;
const RENDERS: usize = 40;
/// remora's defaults, which the detection target is expressed in.
const INTERVAL: Duration = Duration::from_secs(1);
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// `BENCH_ROUNDS` and `BENCH_SECONDS`.
#[derive(Debug, Clone, Copy)]
struct Settings {
    rounds: usize,
    seconds: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let number = |key: &str, default: f64| {
            std::env::var(key)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|n| *n > 0.0)
                .unwrap_or(default)
        };
        Settings {
            rounds: number("BENCH_ROUNDS", 5.0).round().max(1.0) as usize,
            seconds: Duration::from_secs_f64(number("BENCH_SECONDS", 2.0)),
        }
    }
}

/// Whose CPU time a target spends.
#[derive(Clone, Copy)]
enum Cpu<'a> {
    Process(u32),
    Threads(&'a Reference),
    /// A process's CPU time beyond what it spends at rest (`rate` CPU
    /// seconds a second, counted from `since`): a fleet's polling left out.
    Beyond {
        pid: u32,
        rate: f64,
        since: Instant,
    },
}

impl Cpu<'_> {
    fn now(self) -> Duration {
        match self {
            Cpu::Process(pid) => measure::cpu_time(pid).unwrap_or_default(),
            Cpu::Threads(reference) => reference.cpu_time(),
            Cpu::Beyond { pid, rate, since } => {
                let at_rest = Duration::from_secs_f64(rate * since.elapsed().as_secs_f64());
                (measure::cpu_time(pid).unwrap_or_default()).saturating_sub(at_rest)
            }
        }
    }
}

/// One thing driven with checks.
#[derive(Clone, Copy)]
struct Target<'a> {
    name: &'static str,
    addr: SocketAddr,
    request: Option<&'static [u8]>,
    cpu: Cpu<'a>,
}

/// One run of one target.
#[derive(Debug, Clone, Default)]
struct Run {
    load: Load,
    cpu: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.load.rate()
    }

    fn p99(&self) -> f64 {
        self.load.clone().percentile(99.0).as_secs_f64()
    }

    fn cpu_per_check(&self) -> f64 {
        self.cpu.as_secs_f64() / self.load.checks.max(1) as f64
    }
}

/// Drives every target `settings.rounds` times at `clients`, alternating
/// the order each round; `[target][round]`.
async fn rounds(targets: &[Target<'_>], clients: usize, settings: Settings) -> Vec<Vec<Run>> {
    let mut runs = vec![Vec::new(); targets.len()];
    for round in 0..settings.rounds {
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let target = targets[index];
            eprintln!(
                "{} at {clients} clients, round {}...",
                target.name,
                round + 1
            );
            let before = target.cpu.now();
            let load = bench::drive(
                target.addr,
                clients,
                settings.seconds,
                target.request,
                HEALTHY,
            )
            .await;
            let cpu = target.cpu.now().saturating_sub(before);
            runs[index].push(Run { load, cpu });
        }
    }
    runs
}

/// The median and min–max of a set of per-round figures.
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Spread {
        values.sort_by(f64::total_cmp);
        let at = |p| measure::percentile(&values, p).unwrap_or(f64::NAN);
        Spread {
            median: at(50.0),
            min: at(0.0),
            max: at(100.0),
        }
    }

    /// Per-round ratios `figure(a) / figure(b)`, round by round.
    fn ratio(a: &[Run], b: &[Run], figure: fn(&Run) -> f64) -> Spread {
        Spread::of(
            a.iter()
                .zip(b)
                .map(|(a, b)| figure(a) / figure(b).max(1e-12))
                .collect(),
        )
    }

    fn across(runs: &[Run], figure: fn(&Run) -> f64) -> Spread {
        Spread::of(runs.iter().map(figure).collect())
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} [{:.2}–{:.2}]", self.median, self.min, self.max)
    }
}

/// Targets met and missed.
#[derive(Debug, Default)]
struct Verdicts {
    met: Vec<String>,
    missed: Vec<String>,
}

impl Verdicts {
    fn judge(&mut self, ok: bool, line: String) {
        if ok {
            self.met.push(line);
        } else {
            self.missed.push(line);
        }
    }
}

fn ms(seconds: f64) -> String {
    format!("{:.3}", seconds * 1e3)
}

fn micros(seconds: f64) -> String {
    format!("{:.1}", seconds * 1e6)
}

async fn questions(conn: &mut mysql_async::Conn) -> Result<u64> {
    let row: Option<(String, u64)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Questions'")
        .await?;
    Ok(row.context("Questions")?.1)
}

async fn polls(remora: &Remora) -> Result<u64> {
    let status = remora.status().await?;
    status["polls"]["total"].as_u64().context("polls.total")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let settings = Settings::from_env();
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches/BENCHMARKS.md")
            .display()
            .to_string()
    });
    remora::raise_fd_limit()?;
    // `BENCH_REMORA`: another build to measure (comparing two builds in one run's conditions).
    let chosen =
        std::env::var("BENCH_REMORA").unwrap_or_else(|_| env!("CARGO_BIN_EXE_remora").into());
    let binary = Path::new(&chosen);
    // `BENCH_ONLY=fleet`: just the fleet's cells, printed, nothing written.
    if std::env::var("BENCH_ONLY").as_deref() == Ok("fleet") {
        let reference_send = Reference::shaped(Shape::CurrentThread, true)?;
        let fleet = fleet_costs(binary, &reference_send, settings).await?;
        let (mut md, mut verdicts) = (String::new(), Verdicts::default());
        fleet_section(&mut md, &mut verdicts, &fleet);
        print!("{md}");
        for line in verdicts.met {
            println!("- met: {line}");
        }
        for line in verdicts.missed {
            println!("- **missed**: {line}");
        }
        return Ok(());
    }
    eprintln!("starting a MariaDB primary and replica...");
    let pair = Pair::start().await?;
    let mysql = format!(
        "mysql: {{port: {}, user: {REMORA_USER}, password_env: REMORA_MYSQL_PASSWORD}}\n",
        pair.replica.port
    );
    let remora = Remora::start(binary, &mysql).await?;
    let pools = Remora::start(
        binary,
        &format!("{mysql}pools: {{main: {{drain_at: 10s, down_at: 30s}}, backup: {{drain_at: 1h, down_at: 2h}}, writer: {{role: primary}}}}\n"),
    )
    .await?;
    let reference = Reference::shaped(Shape::CurrentThread, false)?;
    let reference_send = Reference::shaped(Shape::CurrentThread, true)?;
    let mut monitor = pair.replica.conn().await?;
    let idle = idle_cost(&remora, &pools, &mut monitor).await?;

    let main_targets = [
        Target {
            name: "reference",
            addr: reference.addr,
            request: None,
            cpu: Cpu::Threads(&reference),
        },
        Target {
            name: "remora",
            addr: remora.agent,
            request: None,
            cpu: Cpu::Process(remora.pid()),
        },
        Target {
            name: "reference, agent-send",
            addr: reference_send.addr,
            request: Some(b"main\n"),
            cpu: Cpu::Threads(&reference_send),
        },
        Target {
            name: "remora + pools, agent-send",
            addr: pools.agent,
            request: Some(b"main\n"),
            cpu: Cpu::Process(pools.pid()),
        },
    ];
    let mut cells = Vec::new();
    // `BENCH_ONLY=checks`: just the checks table, printed, nothing written.
    if std::env::var("BENCH_ONLY").as_deref() == Ok("checks") {
        for clients in CONCURRENCY {
            cells.push((clients, rounds(&main_targets, clients, settings).await));
        }
        let (mut md, mut verdicts) = (String::new(), Verdicts::default());
        checks(&mut md, &mut verdicts, &cells);
        print!("{md}");
        return Ok(());
    }
    let (mut checks_during, mut questions_during, mut expected_during) = (0u64, 0u64, 0f64);
    for clients in CONCURRENCY {
        let q = questions(&mut monitor).await?;
        let started = Instant::now();
        let runs = rounds(&main_targets, clients, settings).await;
        // Our own SHOW GLOBAL STATUS counts once.
        questions_during += questions(&mut monitor).await? - q - 1;
        expected_during += idle.poller_rate * started.elapsed().as_secs_f64();
        checks_during += runs[1]
            .iter()
            .chain(&runs[3])
            .map(|r| r.load.checks)
            .sum::<u64>();
        cells.push((clients, runs));
    }
    let (_, rss_peak) = measure::memory_kib(remora.pid())?;

    let scaling = pools_scaling(binary, &mysql, &reference_send, settings).await?;
    let idle_connections = idle_connections(binary, &mysql, settings).await?;
    let renders = renders(binary).await?;
    let fleet = fleet_costs(binary, &reference_send, settings).await?;
    let fork = fork_runs(&pair, settings).await?;
    drop(monitor);
    let detection = detection(&pair, &remora).await?;

    let report = report(Report {
        settings,
        cells,
        rss_peak,
        idle,
        checks_during,
        questions_during,
        expected_during,
        scaling,
        idle_connections,
        renders,
        fleet,
        fork,
        detection,
    });
    print!("{report}");
    // benches/reads.rs writes its own section: kept as it was.
    let old = std::fs::read_to_string(&out).unwrap_or_default();
    let reads = "What the application reads";
    let report = match bench::section_of(&old, reads) {
        Some(section) => bench::with_section(&report, reads, &section),
        None => report,
    };
    std::fs::write(&out, &report).with_context(|| format!("writing {out}"))?;
    eprintln!("written to {out}");
    Ok(())
}

/// One remora watching a fleet of fixtures, at rest.
struct FleetAtRest {
    targets: usize,
    rss_kib: u64,
    /// Percent of one core.
    cpu_share: f64,
    polls_per_second: f64,
}

/// What a fleet costs as it grows, and whether its polls bunch up.
struct FleetCosts {
    at_rest: Vec<FleetAtRest>,
    /// `[size][round]`, then the reference's; CPU beyond polling.
    runs: Vec<Vec<Run>>,
    /// Share of the largest fleet's poll starts in the busiest tenth of the
    /// interval (0.1 when even), and its most polls in flight at once.
    busiest_tenth: f64,
    in_flight: usize,
    /// The longest wait between two polls of one target: at rest, and
    /// while one target hangs (the others' only).
    gap_at_rest: Duration,
    gap_with_hung: Duration,
    /// A full hour of history for one target with two policies, and the
    /// part of it already kept when the memory was read.
    history_hour: usize,
    history_kept: usize,
}

async fn fleet_costs(
    binary: &Path,
    reference_send: &Reference,
    settings: Settings,
) -> Result<FleetCosts> {
    let mut fleets = Vec::new();
    let first_started = Instant::now();
    for size in FLEET_SIZES {
        eprintln!("starting a remora watching {size} fixture targets...");
        let fixtures = bench::fleet_fixtures(size).await?;
        let remora = Remora::start(binary, &bench::fleet_yaml(&fixtures)).await?;
        fleets.push((size, fixtures, remora));
    }
    // Every target has polled a few times.
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!("fleets at rest...");
    let started = Instant::now();
    let since = Instant::now().into_std();
    let cpu_before: Vec<Duration> = (fleets.iter())
        .map(|(_, _, remora)| measure::cpu_time(remora.pid()).unwrap_or_default())
        .collect();
    tokio::time::sleep(FLEET_WINDOW).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut at_rest = Vec::new();
    let mut largest_spans = Vec::new();
    for ((size, fixtures, remora), before) in fleets.iter().zip(cpu_before) {
        let cpu = measure::cpu_time(remora.pid())?
            .saturating_sub(before)
            .as_secs_f64();
        let spans: Vec<_> = (fixtures.iter())
            .map(|fixture| bench::poll_spans(&fixture.arrivals(), since))
            .collect();
        let polls = spans.iter().map(Vec::len).sum::<usize>();
        at_rest.push(FleetAtRest {
            targets: *size,
            rss_kib: measure::memory_kib(remora.pid())?.0,
            cpu_share: 100.0 * cpu / elapsed,
            polls_per_second: polls as f64 / elapsed,
        });
        largest_spans = spans;
    }
    let (busiest_tenth, in_flight) = bench::poll_spread(&largest_spans, INTERVAL);
    let gap_at_rest = bench::longest_gap(&largest_spans);

    let now = Instant::now();
    let mut targets: Vec<Target> = (fleets.iter().zip(&at_rest))
        .map(|((size, _, remora), rest)| Target {
            name: Box::leak(format!("remora, {size} targets").into_boxed_str()),
            addr: remora.agent,
            request: Some(Box::leak(
                format!("t{}/main\n", size - 1)
                    .into_bytes()
                    .into_boxed_slice(),
            )),
            cpu: Cpu::Beyond {
                pid: remora.pid(),
                rate: rest.cpu_share / 100.0,
                since: now,
            },
        })
        .collect();
    targets.push(Target {
        name: "reference, agent-send",
        addr: reference_send.addr,
        request: Some(b"t999/main\n"),
        cpu: Cpu::Threads(reference_send),
    });
    let runs = rounds(&targets, SCALING_CLIENTS, settings).await;
    for (rest, (_, _, remora)) in at_rest.iter_mut().zip(&fleets) {
        rest.rss_kib = rest.rss_kib.max(measure::memory_kib(remora.pid())?.0);
    }
    let polls_kept = (first_started.elapsed().as_secs() as usize).min(3600);

    eprintln!("one target of the largest fleet hangs...");
    let (_, fixtures, _) = fleets.last().context("a fleet")?;
    fixtures[0].set(|s| s.hung = true);
    let since = Instant::now().into_std();
    tokio::time::sleep(FLEET_WINDOW).await;
    let others: Vec<_> = (fixtures[1..].iter())
        .map(|fixture| bench::poll_spans(&fixture.arrivals(), since))
        .collect();
    let gap_with_hung = bench::longest_gap(&others);
    Ok(FleetCosts {
        at_rest,
        runs,
        busiest_tenth,
        in_flight,
        gap_at_rest,
        gap_with_hung,
        history_hour: 3600 * (32 + 2 * 2),
        history_kept: polls_kept * (32 + 2 * 2),
    })
}

fn fleet_section(md: &mut String, verdicts: &mut Verdicts, fleet: &FleetCosts) {
    let _ = writeln!(
        md,
        "\n## One remora, many targets (the wire fixture, a poll a second each)\n"
    );
    let _ = writeln!(
        md,
        "| targets | polls/s | CPU at rest, % of a core | µs per target-poll | RSS MiB | RSS per target KiB (vs 1 target) |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    let one = &fleet.at_rest[0];
    for rest in &fleet.at_rest {
        let per_target = (rest.rss_kib.saturating_sub(one.rss_kib)) as f64
            / (rest.targets.saturating_sub(one.targets)).max(1) as f64;
        let per_poll = 1e6 * rest.cpu_share / 100.0 / rest.polls_per_second.max(1e-9);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.2} | {:.0} | {:.1} | {} |",
            rest.targets,
            rest.polls_per_second,
            rest.cpu_share,
            per_poll,
            rest.rss_kib as f64 / 1024.0,
            if rest.targets == one.targets {
                "".to_owned()
            } else {
                format!("{per_target:.0}")
            },
        );
    }
    let _ = writeln!(
        md,
        "\nAgent checks beside the polling ({SCALING_CLIENTS} clients, agent-send `tN/main`; CPU per check counts only what is beyond each remora's CPU at rest):\n"
    );
    let _ = writeln!(
        md,
        "| target | checks/s | CPU µs/check | CPU vs 1 target | CPU vs reference |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    let reference = fleet.runs.last().map(Vec::as_slice).unwrap_or_default();
    let base = &fleet.runs[0];
    let ratio = |runs: &[Run], against: &[Run]| {
        Spread::of(
            (runs.iter().zip(against))
                .map(|(a, b)| a.cpu_per_check() / b.cpu_per_check().max(1e-12))
                .collect(),
        )
    };
    for (i, runs) in fleet.runs.iter().enumerate() {
        let name = if i < fleet.at_rest.len() {
            format!("remora, {} targets", fleet.at_rest[i].targets)
        } else {
            "reference".to_owned()
        };
        let rate = runs.iter().map(Run::rate).sum::<f64>() / runs.len().max(1) as f64;
        let cpu = Spread::of(runs.iter().map(|r| 1e6 * r.cpu_per_check()).collect());
        let vs_one = ratio(runs, base);
        let vs_reference = ratio(runs, reference);
        let _ = writeln!(
            md,
            "| {name} | {rate:.0} | {:.1} | {vs_one} | {vs_reference} |",
            cpu.median
        );
    }
    let largest = fleet.at_rest.last().map_or(0, |r| r.targets);
    let flat = ratio(&fleet.runs[fleet.at_rest.len() - 1], base);
    verdicts.judge(
        (0.9..=1.1).contains(&flat.median),
        format!("agent CPU per check flat (±10%) from 1 to {largest} targets (got {flat})"),
    );
    let biggest = &fleet.at_rest[fleet.at_rest.len() - 1];
    let per_poll = 1e6 * biggest.cpu_share / 100.0 / biggest.polls_per_second.max(1e-9);
    verdicts.judge(
        biggest.cpu_share < 25.0,
        format!(
            "{largest} targets polled every second under 25% of a core (got {:.1}%, {per_poll:.0} µs per target-poll)",
            biggest.cpu_share
        ),
    );
    let per_target = (biggest.rss_kib.saturating_sub(one.rss_kib)) as f64
        / (largest.saturating_sub(1)).max(1) as f64;
    let with_history =
        per_target + (fleet.history_hour.saturating_sub(fleet.history_kept)) as f64 / 1024.0;
    let _ = writeln!(
        md,
        "\nMemory per target: {per_target:.0} KiB measured ({} s of history), {with_history:.0} KiB with a full hour of history \
         (history is packed: 32 bytes a poll and 2 a pool, reasons kept only when they change; an hour with two policies is {} KiB).",
        fleet.history_kept / 36,
        fleet.history_hour / 1024
    );
    verdicts.judge(
        with_history <= 256.0,
        format!("at most 256 KiB per target with an hour of history (got {with_history:.0} KiB)"),
    );
    let _ = writeln!(
        md,
        "\nPolls of the {largest} targets: {:.0}% of poll starts in the busiest tenth of the interval (10% when even), at most {} in flight at once. \
         The longest wait between two polls of one target: {:.2} s at rest, {:.2} s while one target hangs (its fixture stops answering).",
        100.0 * fleet.busiest_tenth,
        fleet.in_flight,
        fleet.gap_at_rest.as_secs_f64(),
        fleet.gap_with_hung.as_secs_f64()
    );
    verdicts.judge(
        fleet.busiest_tenth <= 0.2,
        format!(
            "no burst: at most 20% of poll starts in any tenth of the interval (got {:.0}%)",
            100.0 * fleet.busiest_tenth
        ),
    );
    verdicts.judge(
        fleet.gap_with_hung.as_secs_f64() <= 1.5 * fleet.gap_at_rest.as_secs_f64().max(1.0),
        format!(
            "a hung target costs no other a late poll (longest wait {:.2} s with it, {:.2} s without)",
            fleet.gap_with_hung.as_secs_f64(),
            fleet.gap_at_rest.as_secs_f64()
        ),
    );
}

/// remora at rest: one poll a second, nothing else.
struct Idle {
    rss: u64,
    cpu_share: f64,
    poller_rate: f64,
    per_poll: f64,
}

async fn idle_cost(
    remora: &Remora,
    pools: &Remora,
    monitor: &mut mysql_async::Conn,
) -> Result<Idle> {
    eprintln!("idle...");
    let window = Duration::from_secs(5);
    let (rss, _) = measure::memory_kib(remora.pid())?;
    let cpu_before = measure::cpu_time(remora.pid())?;
    let q_before = questions(monitor).await?;
    let polls_before = polls(remora).await? + polls(pools).await?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (measure::cpu_time(remora.pid())? - cpu_before).as_secs_f64();
    let polled = polls(remora).await? + polls(pools).await? - polls_before;
    let q = questions(monitor).await? - q_before - 1;
    Ok(Idle {
        rss,
        cpu_share: 100.0 * cpu / elapsed,
        poller_rate: q as f64 / elapsed,
        per_poll: q as f64 / polled.max(1) as f64,
    })
}

/// remora with 1, 4, 16 and 64 pools, agent-send naming the last one.
struct Scaling {
    /// `[pools][round]`, then the reference's rounds last.
    runs: Vec<Vec<Run>>,
}

async fn pools_scaling(
    binary: &Path,
    mysql: &str,
    reference_send: &Reference,
    settings: Settings,
) -> Result<Scaling> {
    let mut remoras = Vec::new();
    for count in POOL_COUNTS {
        remoras.push(Remora::start(binary, &format!("{mysql}{}", pools_yaml(count))).await?);
    }
    let mut targets: Vec<Target> = (POOL_COUNTS.iter().zip(&remoras))
        .map(|(count, remora)| Target {
            name: Box::leak(format!("remora, {count} pools").into_boxed_str()),
            addr: remora.agent,
            request: Some(naming(*count)),
            cpu: Cpu::Process(remora.pid()),
        })
        .collect();
    targets.push(Target {
        name: "reference, agent-send",
        addr: reference_send.addr,
        request: Some(b"p64\n"),
        cpu: Cpu::Threads(reference_send),
    });
    Ok(Scaling {
        runs: rounds(&targets, SCALING_CLIENTS, settings).await,
    })
}

/// The same checks with and without 5,000 idle connections held open on
/// the agent (an agent that waits 60 s for a pool name holds them).
struct IdleConnections {
    /// Without, then with.
    runs: Vec<Vec<Run>>,
    bytes_each: f64,
}

async fn idle_connections(
    binary: &Path,
    mysql: &str,
    settings: Settings,
) -> Result<IdleConnections> {
    // Started with the default request timeout (the lab checks the agent
    // answers a bare connection), then reloaded to wait a minute for a name.
    let start = |yaml: String| async move {
        let mut remora = Remora::start(binary, &yaml).await?;
        let waiting = format!("{yaml}agent: {{request_timeout: 60s, max_connections: 6000}}\n");
        remora.rewrite_config(&waiting, None, None)?;
        remora.reload()?;
        remora.wait_until_polls(remora.polls().await? + 2).await?;
        anyhow::Ok(remora)
    };
    let quiet = start(format!("{mysql}{}", pools_yaml(3))).await?;
    let held = start(format!("{mysql}{}", pools_yaml(3))).await?;
    eprintln!("opening {IDLE_CONNECTIONS} idle connections...");
    let (before, _) = measure::memory_kib(held.pid())?;
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(TcpStream::connect(held.agent).await?);
    }
    // Every one accepted: the agent holds them all.
    remora_lab::wait::wait_until(
        "the idle connections to be accepted",
        Duration::from_secs(10),
        async || Ok((measure::open_fds(held.pid()) >= IDLE_CONNECTIONS).then_some(())),
    )
    .await?;
    let (after, _) = measure::memory_kib(held.pid())?;
    let targets = [
        Target {
            name: "remora + pools",
            addr: quiet.agent,
            request: Some(b"p3\n"),
            cpu: Cpu::Process(quiet.pid()),
        },
        Target {
            name: "remora + pools, 5000 idle connections open",
            addr: held.agent,
            request: Some(b"p3\n"),
            cpu: Cpu::Process(held.pid()),
        },
    ];
    let runs = rounds(&targets, SCALING_CLIENTS, settings).await;
    drop(idle);
    Ok(IdleConnections {
        runs,
        bytes_each: (after.saturating_sub(before) * 1024) as f64 / IDLE_CONNECTIONS as f64,
    })
}

/// One HTTP page's render time (median of [`RENDERS`]) and size.
struct Render {
    path: &'static str,
    median: Duration,
    bytes: usize,
}

/// `/metrics` and `/status` of remora with 64 pools watching a server with
/// 16 replication channels (the MySQL 8.4 fixture), `/health` as the floor.
async fn renders(binary: &Path) -> Result<Vec<Render>> {
    eprintln!("renders with 64 pools and 16 channels...");
    let fixture = bench::sixteen_channel_replica().await?;
    let remora = Remora::start(
        binary,
        &format!(
            "mysql: {{port: {}, user: remora}}\n{}",
            fixture.addr.port(),
            pools_yaml(64)
        ),
    )
    .await?;
    let mut renders = Vec::new();
    for path in ["/health", "/metrics", "/status"] {
        let mut times = Vec::with_capacity(RENDERS);
        let mut bytes = 0;
        for _ in 0..RENDERS {
            let started = Instant::now();
            let (_, body) = http_get(remora.http, path).await?;
            times.push(started.elapsed());
            bytes = body.len();
        }
        times.sort();
        renders.push(Render {
            path,
            median: times[times.len() / 2],
            bytes,
        });
    }
    Ok(renders)
}

async fn fork_runs(pair: &Pair, settings: Settings) -> Result<Vec<(usize, Load)>> {
    let fork = ForkResponder::start(
        pair.replica.port,
        REMORA_USER,
        REMORA_PASSWORD,
        &pair.replica.dir,
    )
    .await?;
    let mut runs = Vec::new();
    for clients in FORK_CONCURRENCY {
        eprintln!("fork-per-check at {clients} clients...");
        let load = bench::drive(fork.addr, clients, settings.seconds * 2, None, HEALTHY).await;
        runs.push((clients, load));
    }
    Ok(runs)
}

/// Fault to first changed reply, for an SQL thread error and a frozen replica.
struct Detection {
    sql_error: Vec<Duration>,
    frozen: Vec<Duration>,
}

async fn detection(pair: &Pair, remora: &Remora) -> Result<Detection> {
    // Each trial waits for remora to recover, which it sees right after a
    // poll; spread the faults over the poll cycle so the trials sample it
    // instead of always hitting the same point.
    let phase =
        |trial: u32| Duration::from_millis(u64::from(trial) * 1000 / u64::from(DETECTION_TRIALS));
    eprintln!("detection: sql thread error...");
    let mut sql_error = Vec::new();
    for trial in 0..DETECTION_TRIALS {
        tokio::time::sleep(phase(trial)).await;
        let id = 900 + trial;
        pair.replica
            .exec(&[
                "SET SESSION sql_log_bin = 0",
                &format!("INSERT INTO lab.conflict (id) VALUES ({id})"),
            ])
            .await?;
        let fault = Instant::now();
        pair.primary
            .exec(&[&format!("INSERT INTO lab.conflict (id) VALUES ({id})")])
            .await?;
        sql_error.push(first_change(remora, fault).await?);
        pair.fix_replication(id).await?;
        remora
            .wait_reply(Duration::from_secs(15), |r| r == "up ready 100%")
            .await?;
    }
    eprintln!("detection: frozen replica...");
    let mut frozen = Vec::new();
    for trial in 0..DETECTION_TRIALS {
        tokio::time::sleep(phase(trial)).await;
        let fault = Instant::now();
        pair.replica.freeze()?;
        let took = first_change(remora, fault).await;
        pair.replica.thaw()?;
        frozen.push(took?);
        remora
            .wait_reply(Duration::from_secs(15), |r| r == "up ready 100%")
            .await?;
    }
    Ok(Detection { sql_error, frozen })
}

/// Polls the agent every 2 ms from `fault` until its reply is no longer healthy.
async fn first_change(remora: &Remora, fault: Instant) -> Result<Duration> {
    loop {
        let reply = agent_reply(remora.agent).await?;
        if reply != HEALTHY {
            return Ok(fault.elapsed());
        }
        if fault.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("no change within 10s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct Report {
    fleet: FleetCosts,
    settings: Settings,
    /// Per concurrency: `[target][round]` for the four main targets.
    cells: Vec<(usize, Vec<Vec<Run>>)>,
    rss_peak: u64,
    idle: Idle,
    checks_during: u64,
    questions_during: u64,
    expected_during: f64,
    scaling: Scaling,
    idle_connections: IdleConnections,
    renders: Vec<Render>,
    fork: Vec<(usize, Load)>,
    detection: Detection,
}

const MAIN_NAMES: [&str; 4] = [
    "reference",
    "remora",
    "reference, agent-send",
    "remora + pools, agent-send",
];

fn report(r: Report) -> String {
    let mut md = String::new();
    let mut verdicts = Verdicts::default();
    header(&mut md, r.settings);
    checks(&mut md, &mut verdicts, &r.cells);
    scaling(&mut md, &mut verdicts, &r.scaling);
    idle_connections_section(&mut md, &mut verdicts, &r.idle_connections);
    renders_section(&mut md, &r.renders);
    fleet_section(&mut md, &mut verdicts, &r.fleet);
    fork_section(&mut md, &mut verdicts, &r.fork, &r.cells);
    cost(&mut md, &mut verdicts, &r);
    detection_section(&mut md, &mut verdicts, r.detection);
    let _ = writeln!(md, "\n## Targets\n");
    for line in &verdicts.met {
        let _ = writeln!(md, "- met: {line}");
    }
    for line in &verdicts.missed {
        let _ = writeln!(md, "- **missed**: {line}");
    }
    if verdicts.missed.is_empty() {
        let _ = writeln!(md, "\nEvery target met in this run, on the median.");
    } else {
        why_missed(&mut md);
    }
    md
}

/// What was measured about the known misses while the agent was tuned
/// (3 rounds of 1 s each, same machine), so a reader knows why.
fn why_missed(md: &mut String) {
    let _ = writeln!(md, "\n## Why targets are missed\n");
    let _ = writeln!(
        md,
        "- **remora without pools lingers.** After its reply it shuts its side down and reads \
         until the client closes (at most 1 s), so that a client that sent something remora \
         never read (HAProxy with `agent-send` against a remora without pools, \
         `printf x | nc`) gets no reset, which can destroy the reply before it is read. \
         The reference just closes. Measured variants of the same agent: closing right after \
         the reply 1.02–1.09× the reference's CPU per check, shutting down then closing \
         1.11–1.18×, lingering until the client closes 1.16–1.39×. With pools remora has \
         read the client's whole line, so it closes at once: 1.05–1.16×."
    );
    let _ = writeln!(
        md,
        "- **One agent thread.** Checks are answered on a current-thread runtime of their own: \
         the same agent on 2 workers cost 1.50–1.69× the reference's CPU per check. At 64 \
         and 256 clients a single thread that also lingers answers 0.88–0.95× the \
         reference's checks/s.\n\
         - **1 client** is latency-bound: a fork-per-check responder takes about 17 ms per \
         check, so remora is 30–40× faster there, not 50×; at 8 clients it is over 100×."
    );
}

fn header(md: &mut String, settings: Settings) {
    let when = humantime::format_rfc3339_seconds(SystemTime::now());
    let _ = writeln!(md, "# remora benchmark\n");
    let _ = writeln!(
        md,
        "Written by `make bench` (`cargo bench --bench agent`) on {when}; do not edit by hand.\n"
    );
    let _ = writeln!(md, "- machine: {}", bench::machine());
    let _ = writeln!(
        md,
        "- each cell: {} rounds of {:.1}s per target (`BENCH_ROUNDS`, `BENCH_SECONDS`), the order \
         swapped every round (A B, B A, …); closed loop (connect, [send `main\\n`], read to EOF, \
         close); latency = connect to EOF",
        settings.rounds,
        settings.seconds.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "- ratios are per round (a target against the reference of the same round), shown as \
         **median [min–max]**; targets are judged on the median"
    );
    let _ = writeln!(
        md,
        "- remora: release build, defaults (poll every 1s), against a real MariaDB 10.11 replica; \
         the reference: one current-thread tokio runtime writing `up ready 100%` and closing \
         (with agent-send: reading the line first), the cheapest responder there is; CPU per \
         check: remora's process, the reference's own threads, over their runs\n"
    );
}

fn checks(md: &mut String, verdicts: &mut Verdicts, cells: &[(usize, Vec<Vec<Run>>)]) {
    let _ = writeln!(md, "## Checks\n");
    let _ = writeln!(
        md,
        "| clients | target | checks/s | p50 ms | p99 ms | errors | CPU µs/check | rate vs reference | p99 vs reference | CPU vs reference |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (clients, runs) in cells {
        for (index, name) in MAIN_NAMES.iter().enumerate() {
            let mine = &runs[index];
            let baseline = &runs[index / 2 * 2];
            let mut all = Load::default();
            for run in mine {
                all.merge(run.load.clone());
            }
            let rate = Spread::ratio(mine, baseline, Run::rate);
            let p99 = Spread::ratio(mine, baseline, Run::p99);
            let cpu = Spread::ratio(mine, baseline, Run::cpu_per_check);
            let is_baseline = index % 2 == 0;
            let shown = |spread: Spread| {
                if is_baseline {
                    "1.00".to_owned()
                } else {
                    spread.to_string()
                }
            };
            let _ = writeln!(
                md,
                "| {clients} | {name} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                Spread::across(mine, Run::rate).median,
                ms(all.percentile(50.0).as_secs_f64()),
                ms(Spread::across(mine, Run::p99).median),
                all.errors + all.wrong,
                micros(Spread::across(mine, Run::cpu_per_check).median),
                shown(rate),
                shown(p99),
                shown(cpu),
            );
            if is_baseline || *clients < 8 {
                continue;
            }
            let what = if index == 1 {
                "remora"
            } else {
                "remora + pools"
            };
            verdicts.judge(
                rate.median >= 0.95,
                format!("{clients} clients, {what}: checks/s ≥ 0.95 × reference (median {rate})"),
            );
            verdicts.judge(
                p99.median <= 1.5,
                format!("{clients} clients, {what}: p99 ≤ 1.5 × reference (median {p99})"),
            );
            let cpu_goal = if index == 1 { 1.15 } else { 1.25 };
            verdicts.judge(
                cpu.median <= cpu_goal,
                format!(
                    "{clients} clients, {what}: CPU per check ≤ {cpu_goal:.2} × the current-thread reference (median {cpu})"
                ),
            );
        }
    }
}

fn scaling(md: &mut String, verdicts: &mut Verdicts, scaling: &Scaling) {
    let _ = writeln!(
        md,
        "\n## Cost as pools grow ({SCALING_CLIENTS} clients, agent-send naming the last pool)\n"
    );
    let _ = writeln!(
        md,
        "| pools | checks/s | CPU µs/check | CPU vs 1 pool | CPU vs reference |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|");
    let one = &scaling.runs[0];
    let reference = scaling.runs.last().expect("the reference ran");
    for (count, runs) in POOL_COUNTS.iter().zip(&scaling.runs) {
        let _ = writeln!(
            md,
            "| {count} | {:.0} | {} | {} | {} |",
            Spread::across(runs, Run::rate).median,
            micros(Spread::across(runs, Run::cpu_per_check).median),
            Spread::ratio(runs, one, Run::cpu_per_check),
            Spread::ratio(runs, reference, Run::cpu_per_check),
        );
    }
    let _ = writeln!(
        md,
        "| reference | {:.0} | {} | | 1.00 |",
        Spread::across(reference, Run::rate).median,
        micros(Spread::across(reference, Run::cpu_per_check).median),
    );
    let last = &scaling.runs[POOL_COUNTS.len() - 1];
    let growth = Spread::ratio(last, one, Run::cpu_per_check);
    verdicts.judge(
        growth.median <= 1.10,
        format!("CPU per check with 64 pools within 10% of 1 pool (median {growth})"),
    );
}

fn idle_connections_section(md: &mut String, verdicts: &mut Verdicts, idle: &IdleConnections) {
    let _ = writeln!(
        md,
        "\n## {IDLE_CONNECTIONS} idle connections beside the load ({SCALING_CLIENTS} clients)\n"
    );
    let _ = writeln!(
        md,
        "| agent | checks/s | p99 ms | CPU µs/check | CPU vs without |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    let without = &idle.runs[0];
    for (name, runs) in ["without", "with 5000 idle connections open"]
        .iter()
        .zip(&idle.runs)
    {
        let _ = writeln!(
            md,
            "| {name} | {:.0} | {} | {} | {} |",
            Spread::across(runs, Run::rate).median,
            ms(Spread::across(runs, Run::p99).median),
            micros(Spread::across(runs, Run::cpu_per_check).median),
            Spread::ratio(runs, without, Run::cpu_per_check),
        );
    }
    let _ = writeln!(
        md,
        "\nMemory: {:.0} bytes per idle connection (RSS before and after opening them).",
        idle.bytes_each
    );
    let cost = Spread::ratio(&idle.runs[1], without, Run::cpu_per_check);
    verdicts.judge(
        cost.median <= 1.10,
        format!("{IDLE_CONNECTIONS} idle connections cost nothing per check: CPU within 10% (median {cost})"),
    );
}

fn renders_section(md: &mut String, renders: &[Render]) {
    let _ = writeln!(
        md,
        "\n## HTTP renders with 64 pools and 16 replication channels\n"
    );
    let _ = writeln!(
        md,
        "| page | median ms (request to body, {RENDERS} requests) | bytes |"
    );
    let _ = writeln!(md, "|---|---:|---:|");
    for render in renders {
        let _ = writeln!(
            md,
            "| `{}` | {} | {} |",
            render.path,
            ms(render.median.as_secs_f64()),
            render.bytes
        );
    }
}

fn fork_section(
    md: &mut String,
    verdicts: &mut Verdicts,
    fork: &[(usize, Load)],
    cells: &[(usize, Vec<Vec<Run>>)],
) {
    let _ = writeln!(
        md,
        "\n## Fork-per-check responder (socat + mariadb client per check)\n"
    );
    let _ = writeln!(
        md,
        "| clients | checks/s | p50 ms | p99 ms | errors | remora vs fork |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    for (clients, load) in fork {
        let remora = cells
            .iter()
            .find(|(c, _)| c == clients)
            .map(|(_, runs)| Spread::across(&runs[1], Run::rate).median)
            .unwrap_or(0.0);
        let times = remora / load.rate().max(1e-9);
        let mut load = load.clone();
        let _ = writeln!(
            md,
            "| {clients} | {:.0} | {} | {} | {} | {times:.0}× |",
            load.rate(),
            ms(load.percentile(50.0).as_secs_f64()),
            ms(load.percentile(99.0).as_secs_f64()),
            load.errors + load.wrong
        );
        verdicts.judge(
            times >= 50.0,
            format!("{clients} clients: ≥ 50 × the fork-per-check responder (got {times:.0}×)"),
        );
    }
}

fn cost(md: &mut String, verdicts: &mut Verdicts, r: &Report) {
    let caused = r.questions_during as f64 - r.expected_during;
    let _ = writeln!(md, "\n## Cost\n");
    let _ = writeln!(md, "| measure | value |");
    let _ = writeln!(md, "|---|---:|");
    let _ = writeln!(
        md,
        "| remora RSS idle | {:.1} MiB |",
        r.idle.rss as f64 / 1024.0
    );
    let _ = writeln!(
        md,
        "| remora RSS peak (after 256 clients) | {:.1} MiB |",
        r.rss_peak as f64 / 1024.0
    );
    let _ = writeln!(
        md,
        "| remora idle CPU (1 poll/s) | {:.3}% of a core |",
        r.idle.cpu_share
    );
    let _ = writeln!(md, "| statements per poll | {:.1} |", r.idle.per_poll);
    let _ = writeln!(
        md,
        "| replica `Questions` during remora runs | {} for {} checks (pollers alone: {:.0}; caused by checks: {}) |",
        r.questions_during,
        r.checks_during,
        r.expected_during,
        caused.round() as i64
    );
    verdicts.judge(
        r.rss_peak <= 16 * 1024,
        format!(
            "RSS ≤ 16 MiB at 256 clients (got {:.1} MiB)",
            r.rss_peak as f64 / 1024.0
        ),
    );
    verdicts.judge(
        r.idle.cpu_share < 0.5,
        format!("idle CPU < 0.5% of a core (got {:.3}%)", r.idle.cpu_share),
    );
    // Pollers' own statements vary by a poll or two over a run's edges.
    verdicts.judge(
        caused.abs() <= 2.0 * r.idle.per_poll.max(1.0) * 4.0 * r.cells.len() as f64,
        format!(
            "MySQL statements caused by checks ≈ 0 (got {} over {} checks)",
            caused.round() as i64,
            r.checks_during
        ),
    );
}

fn detection_section(md: &mut String, verdicts: &mut Verdicts, detection: Detection) {
    let limit = INTERVAL + QUERY_TIMEOUT + Duration::from_millis(50);
    let _ = writeln!(md, "\n## Detection (fault → first changed reply)\n");
    let _ = writeln!(md, "| fault | trials | min | median | max | limit |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for (name, mut times) in [
        ("SQL thread error (1062)", detection.sql_error),
        ("replica frozen (SIGSTOP)", detection.frozen),
    ] {
        times.sort();
        let (min, median, max) = (times[0], times[times.len() / 2], times[times.len() - 1]);
        let secs = |d: Duration| format!("{:.3}", d.as_secs_f64());
        let _ = writeln!(
            md,
            "| {name} | {} | {} s | {} s | {} s | {} s |",
            times.len(),
            secs(min),
            secs(median),
            secs(max),
            secs(limit)
        );
        verdicts.judge(
            max <= limit,
            format!(
                "{name}: detection ≤ interval + query timeout + 50 ms (worst {} s)",
                secs(max)
            ),
        );
    }
}
