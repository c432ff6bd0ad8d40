//! Benchmark parts: a closed-loop check generator, the reference responder
//! (the floor no agent can beat), a fork-per-check responder like the
//! xinetd/clustercheck scripts operators run today, and readings of a
//! process's CPU time and memory from /proc.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::process::{Lifetime, Process};
use crate::wait_until;

/// What the reference responder and a healthy agent answer.
pub const HEALTHY: &str = "up ready 100%\n";

/// `pools:` with `count` pools named `p1` … `pN`.
pub fn pools_yaml(count: usize) -> String {
    let names: Vec<String> = (1..=count).map(|n| format!("p{n}: {{}}")).collect();
    format!("pools: {{{}}}\n", names.join(", "))
}

/// The agent-send line naming pool `pN`, for the life of the process
/// ([`drive`] takes a `'static` request).
pub fn naming(count: usize) -> &'static [u8] {
    Box::leak(format!("p{count}\n").into_bytes().into_boxed_slice())
}

/// A MySQL 8.4 replica (the wire fixture) with 16 replication channels:
/// what `/status` and `/metrics` render at their biggest.
pub async fn sixteen_channel_replica() -> Result<crate::fixture::MysqlFixture> {
    use crate::fixture::{Channel, Flavor, MysqlFixture};
    let fixture = MysqlFixture::start(Flavor::MySql84).await?;
    fixture.set(|s| {
        s.read_only = true;
        s.channels = (0..16)
            .map(|n| Channel::running(&format!("c{n}"), n))
            .collect();
    });
    Ok(fixture)
}

/// One load run against one target.
#[derive(Debug, Clone, Default)]
pub struct Load {
    /// Checks answered with the expected line.
    pub checks: u64,
    /// Connect or read failures, and timeouts.
    pub errors: u64,
    /// Answers that were not the expected line.
    pub wrong: u64,
    pub elapsed: Duration,
    /// Latency of every good check, in microseconds (connect to EOF).
    pub latencies: Vec<u32>,
}

impl Load {
    pub fn merge(&mut self, other: Load) {
        self.checks += other.checks;
        self.errors += other.errors;
        self.wrong += other.wrong;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }

    pub fn rate(&self) -> f64 {
        self.checks as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency (0–100).
    pub fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let micros = crate::measure::percentile(&self.latencies, p).unwrap_or(0);
        Duration::from_micros(u64::from(micros))
    }

    pub fn max(&self) -> Duration {
        Duration::from_micros(u64::from(self.latencies.iter().copied().max().unwrap_or(0)))
    }
}

/// Drives `addr` with `concurrency` clients for `duration`, each in a closed
/// loop: connect, send `request` (HAProxy's agent-send) if any, read to EOF,
/// close, check the answer is `expect`.
pub async fn drive(
    addr: SocketAddr,
    concurrency: usize,
    duration: Duration,
    request: Option<&'static [u8]>,
    expect: &'static str,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut load = Load::default();
                let mut reply = Vec::with_capacity(128);
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    reply.clear();
                    match timeout(Duration::from_secs(5), check(addr, request, &mut reply)).await {
                        Ok(Ok(())) if reply == expect.as_bytes() => {
                            load.checks += 1;
                            let micros = asked.elapsed().as_micros();
                            load.latencies
                                .push(u32::try_from(micros).unwrap_or(u32::MAX));
                        }
                        Ok(Ok(())) => load.wrong += 1,
                        Ok(Err(_)) | Err(_) => load.errors += 1,
                    }
                }
                load
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Load::default();
    for client in clients {
        if let Ok(load) = client.await {
            total.merge(load);
        }
    }
    total.elapsed = started.elapsed();
    total
}

async fn check(
    addr: SocketAddr,
    request: Option<&[u8]>,
    reply: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    if let Some(request) = request {
        stream.write_all(request).await?;
    }
    stream.read_to_end(reply).await?;
    Ok(())
}

/// How the reference responder's runtime is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One current-thread runtime: the cheapest responder there is.
    CurrentThread,
    /// A work-stealing runtime with this many workers.
    Workers(usize),
}

/// The reference responder: accept, write the healthy line, close. On a
/// runtime of its own (see [`Shape`]), so the comparison is between two
/// programs doing the same exchange. With `reads_request`, it first reads
/// the client's line (HAProxy's agent-send), the floor for a pool-aware
/// exchange. Its threads' CPU time is its own ([`Reference::cpu_time`]).
/// Stops when dropped.
#[derive(Debug)]
pub struct Reference {
    pub addr: SocketAddr,
    threads: Arc<std::sync::Mutex<Vec<u32>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// This thread's kernel id.
fn thread_id() -> u32 {
    // SAFETY: gettid has no preconditions.
    u32::try_from(unsafe { libc::gettid() }).unwrap_or(0)
}

impl Reference {
    /// The reference on a `workers`-thread work-stealing runtime.
    pub fn start(workers: usize, reads_request: bool) -> Result<Reference> {
        Reference::shaped(Shape::Workers(workers), reads_request)
    }

    pub fn shaped(shape: Shape, reads_request: bool) -> Result<Reference> {
        // The same accept queue as remora's (remora::LISTEN_BACKLOG): std's
        // default of 128 would drop SYNs at 256 clients.
        let socket = tokio::net::TcpSocket::new_v4().context("reference socket")?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(4096).context("binding the reference")?;
        let addr = listener.local_addr()?;
        let listener = listener.into_std()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let threads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&threads);
        let record_thread = move || record.lock().expect("thread list").push(thread_id());
        let mut builder = match shape {
            Shape::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Shape::Workers(workers) => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(workers);
                builder
            }
        };
        let runtime = builder
            .enable_all()
            .on_thread_start(record_thread.clone())
            .build()
            .context("reference runtime")?;
        let thread = std::thread::spawn(move || {
            record_thread();
            runtime.block_on(async move {
                // Invariant: a listener taken from a tokio socket converts back.
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                let serve = async {
                    loop {
                        let Ok((mut socket, _)) = listener.accept().await else {
                            continue;
                        };
                        tokio::spawn(async move {
                            if reads_request {
                                let mut request = [0u8; 64];
                                let _ = socket.read(&mut request).await;
                            }
                            let _ = socket.write_all(HEALTHY.as_bytes()).await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(Reference {
            addr,
            threads,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// CPU time the reference's own threads have used.
    pub fn cpu_time(&self) -> Duration {
        let threads = self.threads.lock().expect("thread list").clone();
        threads
            .into_iter()
            .map(|tid| crate::measure::thread_cpu_time(tid).unwrap_or_default())
            .sum()
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A fork-per-check responder, as operators run today with xinetd or socat
/// and a clustercheck-style script: every check forks a shell and a `mariadb`
/// client that queries the server, then prints the line.
#[derive(Debug)]
pub struct ForkResponder {
    pub addr: SocketAddr,
    _process: Process,
}

impl ForkResponder {
    /// Listens on a free port; the check script and socat's log go in `dir`.
    pub async fn start(
        mysql_port: u16,
        user: &str,
        password: &str,
        dir: &std::path::Path,
    ) -> Result<ForkResponder> {
        use std::os::unix::fs::PermissionsExt;
        let port = crate::free_port()?;
        let script = dir.join("check.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 # One check, the clustercheck way: a fresh client and connection per check.\n\
                 if mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P{mysql_port} -u{user} -p'{password}' \
                 -N -B -e 'SHOW SLAVE STATUS' >/dev/null 2>&1; then\n\
                 printf 'up ready 100%%\\n'\nelse\n  printf 'down #mysql\\n'\nfi\n"
            ),
        )
        .context("writing the check script")?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))?;
        let mut command = Command::new("socat");
        command
            .arg(format!(
                "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,backlog=4096"
            ))
            .arg(format!("EXEC:{}", script.display()));
        let process = Process::spawn("socat", command, &dir.join("socat.log"), Lifetime::Tied)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let waited = wait_until("socat to answer", Duration::from_secs(10), async || {
            let mut reply = Vec::new();
            if check(addr, None, &mut reply).await.is_err() || reply.is_empty() {
                return Ok(None);
            }
            ensure!(
                reply == HEALTHY.as_bytes(),
                "fork responder answered {:?}",
                String::from_utf8_lossy(&reply)
            );
            Ok(Some(()))
        })
        .await;
        match waited {
            Ok(()) => Ok(ForkResponder {
                addr,
                _process: process,
            }),
            Err(err) => Err(err.context(process.log_tail(10))),
        }
    }
}

/// A one-line description of this machine, for the report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .next()
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or("? GiB".into(), |kib| format!("{} GiB", kib / 1024 / 1024));
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {memory}, Linux {kernel}")
}

/// `count` healthy MySQL 5.7 replicas (the wire fixture), for one remora to
/// watch as targets `t0` … `tN`.
pub async fn fleet_fixtures(count: usize) -> Result<Vec<crate::fixture::MysqlFixture>> {
    use crate::fixture::{Channel, Flavor, MysqlFixture};
    let mut fixtures = Vec::with_capacity(count);
    for i in 0..count {
        let fixture = MysqlFixture::start(Flavor::MySql57).await?;
        fixture.set(|s| {
            s.read_only = true;
            s.channels = vec![Channel::running("", 0)];
            // Each a server of its own, all replicas of one source.
            s.server_id = 10 + i as u64;
            s.server_uuid = format!("8a94f357-aab4-11df-86ab-{:012x}", 10 + i);
        });
        fixtures.push(fixture);
    }
    Ok(fixtures)
}

/// A remora configuration watching `fixtures` as targets `t0` … `tN`, every
/// second, with pool `main`; defaults otherwise (an hour of history).
pub fn fleet_yaml(fixtures: &[crate::fixture::MysqlFixture]) -> String {
    let targets: Vec<String> = (fixtures.iter().enumerate())
        .map(|(i, fixture)| {
            format!(
                "  t{i}: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n",
                fixture.addr.port()
            )
        })
        .collect();
    format!(
        "mysql: {{user: remora}}\npools: {{main: {{}}}}\nagent: {{max_connections: 4000}}\ntargets:\n{}",
        targets.concat()
    )
}

/// One fixture's polls since `since`, as (first, last) statement times: a
/// poll's statements come within milliseconds, polls a second apart.
pub fn poll_spans(
    arrivals: &[std::time::Instant],
    since: std::time::Instant,
) -> Vec<(std::time::Instant, std::time::Instant)> {
    let mut spans: Vec<(std::time::Instant, std::time::Instant)> = Vec::new();
    for at in arrivals.iter().copied().filter(|at| *at >= since) {
        match spans.last_mut() {
            Some((_, last)) if at.duration_since(*last) < Duration::from_millis(200) => *last = at,
            _ => spans.push((at, at)),
        }
    }
    spans
}

/// How polls spread over the interval: the share of poll starts in the
/// busiest tenth of it (0.1 when even), and the most polls in flight at once.
pub fn poll_spread(
    spans: &[Vec<(std::time::Instant, std::time::Instant)>],
    interval: Duration,
) -> (f64, usize) {
    let Some(origin) = spans.iter().flatten().map(|(start, _)| *start).min() else {
        return (0.0, 0);
    };
    let tenth = interval.as_secs_f64() / 10.0;
    let mut buckets = [0usize; 10];
    let mut edges: Vec<(std::time::Instant, i32)> = Vec::new();
    for (start, end) in spans.iter().flatten() {
        let offset = start.duration_since(origin).as_secs_f64() % interval.as_secs_f64();
        buckets[((offset / tenth) as usize).min(9)] += 1;
        edges.push((*start, 1));
        edges.push((*end + Duration::from_micros(1), -1));
    }
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    let total = buckets.iter().sum::<usize>().max(1);
    let busiest = *buckets.iter().max().unwrap_or(&0) as f64 / total as f64;
    (busiest, most.max(0) as usize)
}

/// The longest wait between two polls of one fixture, over `spans` (each
/// fixture's polls).
pub fn longest_gap(spans: &[Vec<(std::time::Instant, std::time::Instant)>]) -> Duration {
    (spans.iter())
        .flat_map(|polls| {
            polls
                .windows(2)
                .map(|pair| pair[1].0.duration_since(pair[0].0))
        })
        .max()
        .unwrap_or_default()
}

/// The section of `document` under `## heading`, heading included, up to
/// the next `## ` heading; `None` when it has none.
pub fn section_of(document: &str, heading: &str) -> Option<String> {
    let start = document.find(&format!("\n## {heading}\n"))? + 1;
    let rest = &document[start + 3..];
    let end = rest
        .find("\n## ")
        .map_or(document.len(), |at| start + 3 + at + 1);
    Some(document[start..end].to_owned())
}

/// `document` with its section `## heading` replaced by `section` (which
/// starts with that heading), or `section` appended when it had none. Two
/// benches write benches/BENCHMARKS.md, each its own sections.
pub fn with_section(document: &str, heading: &str, section: &str) -> String {
    let section = section.trim_end();
    match section_of(document, heading) {
        Some(old) => document.replacen(old.trim_end(), section, 1),
        None => format!("{}\n\n{section}\n", document.trim_end()),
    }
}

#[cfg(test)]
mod sections {
    use super::*;

    #[test]
    fn a_section_is_replaced_in_place_or_appended() {
        let document = "# title\n\n## Checks\n\na\n\n## Reads\n\nold\n\n## Last\n\nz\n";
        assert_eq!(
            section_of(document, "Reads").as_deref(),
            Some("## Reads\n\nold\n\n")
        );
        let replaced = with_section(document, "Reads", "## Reads\n\nnew\n");
        assert_eq!(
            replaced,
            "# title\n\n## Checks\n\na\n\n## Reads\n\nnew\n\n## Last\n\nz\n"
        );
        let appended = with_section("# title\n\n## Checks\n\na\n", "Reads", "## Reads\n\nnew");
        assert_eq!(appended, "# title\n\n## Checks\n\na\n\n## Reads\n\nnew\n");
        assert_eq!(
            section_of("## Reads\n\nat the top\n", "Reads"),
            None,
            "a heading after a newline"
        );
    }
}
