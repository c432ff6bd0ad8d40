//! Hostile clients on the agent port of a real remora process. Each attack
//! runs while legitimate checks are timed; every check must get the right
//! line, remora's open file descriptors must stay under
//! `agent.max_connections` plus its own few, and remora must survive.
//!
//! Latency is judged against the reference responder (`remora_lab::bench`:
//! accept, write a line, close) under the same attack in the same run: on
//! two cores the attack generator and the target share the machine, and
//! only the same attack on the cheapest responder shows what is left of it.
//!
//! remora watches a port nothing listens on: the verdict is a steady
//! `down #…`, and what is under test is how it is served.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{latency_kept, mysql_section, remora_bin, rss_kib};
use remora_lab::bench::{HEALTHY, Reference};
use remora_lab::measure::{Latency, open_fds};
use remora_lab::{Remora, agent_request, free_port, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The cap the attacks are measured against.
const CAP: usize = 400;
/// remora's own descriptors beside agent connections: stdio, listeners, the
/// runtime's epoll and wakers, a few HTTP and MySQL sockets.
const OWN_FDS: usize = 48;
/// Legitimate checks timed per attack and target, and their spacing.
const CHECKS: usize = 100;
const GAP: Duration = Duration::from_millis(5);
/// Each attack runs this many times against remora and the reference,
/// alternating which goes first, so drift on the machine falls on both.
const ROUNDS: usize = 2;
/// How far remora's p99 under an attack may exceed the reference
/// responder's p99 under the same attack (see `latency_kept`).
const LATENCY_FACTOR: u32 = 3;

async fn remora(pools: bool) -> Result<Remora> {
    let pools = if pools {
        "pools:\n  main: {role: replica}\n"
    } else {
        ""
    };
    Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\nagent: {{max_connections: {CAP}}}\n{pools}",
            mysql_section(free_port()?)
        ),
    )
    .await
}

/// A running attack: its tasks stop when `stop` is cancelled.
struct Attack {
    /// The attackers' own runtime: their busy loops must not starve the
    /// client timing the legitimate checks, only compete for the machine.
    on: tokio::runtime::Handle,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    /// Connections it opened, and replies it saw that were not the verdict.
    opened: Arc<AtomicUsize>,
    wrong: Arc<AtomicUsize>,
}

impl Attack {
    fn new(on: &tokio::runtime::Handle) -> Attack {
        Attack {
            on: on.clone(),
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
            opened: Arc::default(),
            wrong: Arc::default(),
        }
    }

    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn_on(task, &self.on);
    }

    /// Waits until the attack has opened a few dozen connections, so the
    /// checks timed next run while it is in stride.
    async fn under_way(&self, name: &str) -> Result<()> {
        let what = format!("{name} to open 50 connections");
        wait_until(&what, Duration::from_secs(10), async || {
            Ok((self.opened.load(Ordering::Relaxed) >= 50).then_some(()))
        })
        .await
    }

    async fn end(mut self) -> (usize, usize) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        (
            self.opened.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
        )
    }
}

/// `count` connections that never read, write or close, held until stopped.
async fn idle(on: &tokio::runtime::Handle, agent: SocketAddr, count: usize) -> Result<Attack> {
    let attack = Attack::new(on);
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        held.push(TcpStream::connect(agent).await?);
    }
    attack.opened.fetch_add(count, Ordering::Relaxed);
    let stop = attack.stop.clone();
    let mut attack = attack;
    attack.spawn(async move {
        stop.cancelled().await;
        drop(held);
    });
    Ok(attack)
}

/// `clients` connections at a time, each sending `payload` over and over
/// (never a newline unless the payload has one) without reading.
fn garbage(
    on: &tokio::runtime::Handle,
    agent: SocketAddr,
    clients: usize,
    payload: Arc<Vec<u8>>,
) -> Attack {
    let mut attack = Attack::new(on);
    for _ in 0..clients {
        let (stop, payload, opened) = (
            attack.stop.clone(),
            Arc::clone(&payload),
            Arc::clone(&attack.opened),
        );
        attack.spawn(async move {
            while !stop.is_cancelled() {
                let Ok(mut stream) = TcpStream::connect(agent).await else {
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                // remora stops reading after a bounded amount and closes.
                tokio::select! {
                    _ = stream.write_all(&payload) => {}
                    _ = stop.cancelled() => {}
                }
            }
        });
    }
    attack
}

/// Clients sending one odd request each and reading the reply: it must be
/// `expected` (or nothing: a clean close).
fn odd_requests(
    on: &tokio::runtime::Handle,
    agent: SocketAddr,
    clients: usize,
    expected: &str,
) -> Attack {
    let requests: Arc<Vec<&'static [u8]>> = Arc::new(vec![
        b"\xff\xfe\xfd\n",
        b"\0\0\0\0\n",
        b"main\0\n",
        b"no newline at all",
        b"\r\n",
        b"\x1b[2J\x07\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ]);
    let mut attack = Attack::new(on);
    for client in 0..clients {
        let (stop, requests, opened, wrong) = (
            attack.stop.clone(),
            Arc::clone(&requests),
            Arc::clone(&attack.opened),
            Arc::clone(&attack.wrong),
        );
        let expected = expected.to_owned();
        attack.spawn(async move {
            let mut turn = client;
            while !stop.is_cancelled() {
                turn += 1;
                let request = requests[turn % requests.len()];
                opened.fetch_add(1, Ordering::Relaxed);
                match agent_request(agent, request).await {
                    Ok(reply) if answers(&reply, &expected) => {}
                    _ => {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    attack
}

/// Whether a hostile client got a clean answer: the verdict, the verdict
/// saying why no pool matched (with pools, garbage names an unknown one, an
/// unreadable one or none, and fails closed to the strictest pool: here the
/// only one), or a clean close.
fn answers(reply: &str, expected: &str) -> bool {
    let unmatched = [
        "; unknown pool",
        "; unreadable pool name",
        "; no pool named",
    ];
    reply == expected
        || reply.is_empty()
        || reply.strip_prefix(expected.trim_end()).is_some_and(|rest| {
            unmatched.iter().any(|why| rest.starts_with(why)) && rest.ends_with('\n')
        })
}

/// `clients` connections open at all times: each task connects, holds the
/// connection for a moment without reading, drops it (every other task with
/// a reset, SO_LINGER 0) and connects again. Twice the cap means remora must
/// keep closing the oldest to make room.
fn flood(on: &tokio::runtime::Handle, agent: SocketAddr, clients: usize) -> Attack {
    let mut attack = Attack::new(on);
    for client in 0..clients {
        let (stop, opened) = (attack.stop.clone(), Arc::clone(&attack.opened));
        attack.spawn(async move {
            while !stop.is_cancelled() {
                let Ok(stream) = TcpStream::connect(agent).await else {
                    tokio::task::yield_now().await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                if client % 2 == 0 {
                    #[allow(deprecated)]
                    let _ = stream.set_linger(Some(Duration::ZERO));
                }
                drop(stream);
            }
        });
    }
    attack
}

/// Clients that half-close at once; half of them never read the reply.
fn half_closed(
    on: &tokio::runtime::Handle,
    agent: SocketAddr,
    clients: usize,
    expected: &str,
) -> Attack {
    let mut attack = Attack::new(on);
    for client in 0..clients {
        let (stop, opened, wrong) = (
            attack.stop.clone(),
            Arc::clone(&attack.opened),
            Arc::clone(&attack.wrong),
        );
        let expected = expected.to_owned();
        attack.spawn(async move {
            let mut held = Vec::new();
            while !stop.is_cancelled() {
                let Ok(mut stream) = TcpStream::connect(agent).await else {
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                if stream.shutdown().await.is_err() {
                    continue;
                }
                if client % 2 == 0 {
                    let mut reply = String::new();
                    let read = tokio::time::timeout(
                        Duration::from_secs(5),
                        stream.read_to_string(&mut reply),
                    )
                    .await;
                    if !matches!(read, Ok(Ok(_))) || !answers(&reply, &expected) {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    held.push(stream);
                    if held.len() > 20 {
                        held.remove(0);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
    }
    attack
}

/// Highest descriptor count and RSS of `pid` until `stop`.
fn watch_usage(pid: u32, stop: CancellationToken) -> tokio::task::JoinHandle<(usize, u64)> {
    tokio::spawn(async move {
        let (mut fds, mut rss) = (0, 0);
        while !stop.is_cancelled() {
            fds = fds.max(open_fds(pid));
            rss = rss.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (fds, rss)
    })
}

/// The attackers' runtime, shut down without blocking however the test ends.
struct Attackers(Option<tokio::runtime::Runtime>);

impl Drop for Attackers {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What the legitimate checks are sent to, and what each must answer.
#[derive(Clone, Copy)]
struct Responder<'a> {
    addr: SocketAddr,
    request: &'a [u8],
    expected: &'a str,
}

impl Responder<'_> {
    async fn timed(&self) -> Result<Vec<Duration>> {
        common::check_latencies(self.addr, self.request, self.expected, CHECKS, GAP).await
    }
}

const ATTACKS: [&str; 5] = [
    "5000 idle connections",
    "1 MiB garbage, 8 clients",
    "invalid UTF-8, NUL, no newline",
    "connection flood, 2x the cap",
    "half-closed sockets",
];

/// Starts the attack `name` on `target`, and waits until it is in stride.
async fn launch(
    name: &str,
    on: &tokio::runtime::Handle,
    target: Responder<'_>,
    megabyte: &Arc<Vec<u8>>,
) -> Result<Attack> {
    let (addr, expected) = (target.addr, target.expected);
    let attack = match name {
        "5000 idle connections" => idle(on, addr, 5000).await?,
        "1 MiB garbage, 8 clients" => garbage(on, addr, 8, Arc::clone(megabyte)),
        "invalid UTF-8, NUL, no newline" => odd_requests(on, addr, 16, expected),
        "connection flood, 2x the cap" => flood(on, addr, 2 * CAP),
        _ => half_closed(on, addr, 64, expected),
    };
    attack.under_way(name).await?;
    Ok(attack)
}

/// Legitimate checks under one attack, remora's and the reference's.
struct Under {
    remora: Vec<Duration>,
    reference: Vec<Duration>,
    /// remora's peak descriptors and RSS while attacked.
    fds: usize,
    rss: u64,
}

/// Runs the attack `name` against remora and against the reference in turn,
/// [`ROUNDS`] times each, alternating which goes first, and times the
/// legitimate checks each gets meanwhile.
async fn under_attack(
    name: &str,
    on: &tokio::runtime::Handle,
    remora: &Remora,
    targets: [Responder<'_>; 2],
    megabyte: &Arc<Vec<u8>>,
) -> Result<Under> {
    let [at_remora, at_reference] = targets;
    let mut under = Under {
        remora: Vec::new(),
        reference: Vec::new(),
        fds: 0,
        rss: 0,
    };
    for round in 0..ROUNDS {
        for remora_turn in [round % 2 == 0, round % 2 == 1] {
            let target = if remora_turn { at_remora } else { at_reference };
            let attack = launch(name, on, target, megabyte).await?;
            let watching = CancellationToken::new();
            let usage = watch_usage(remora.pid(), watching.clone());
            let timed = target.timed().await;
            watching.cancel();
            let (fds, rss) = usage.await?;
            let (_opened, wrong) = attack.end().await;
            let who = if remora_turn {
                "remora"
            } else {
                "the reference"
            };
            let timed = timed.with_context(|| format!("{who} during {name}"))?;
            // The reference closes without reading, so its hostile clients
            // may see resets; only remora owes them a clean answer.
            ensure!(
                !remora_turn || wrong == 0,
                "{name}: {wrong} hostile clients of remora got a wrong reply"
            );
            if remora_turn {
                under.remora.extend(timed);
                under.fds = under.fds.max(fds);
                under.rss = under.rss.max(rss);
            } else {
                under.reference.extend(timed);
            }
        }
    }
    Ok(under)
}

/// Runs every attack against one remora and checks what each leaves.
async fn survive_every_attack(pools: bool) -> Result<()> {
    let limit = remora::raise_fd_limit()?;
    ensure!(
        limit >= 12000,
        "the tests need 12000 open files, the limit is {limit}"
    );
    let attackers = Attackers(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?,
    ));
    let on = attackers.0.as_ref().expect("running").handle();
    let mut remora = remora(pools).await?;
    // The cheapest responder there is, on as many workers as remora, in
    // this process: what the machine can do under the same attack.
    let reference = Reference::start(2, pools)?;
    let pid = remora.pid();
    let request: &[u8] = if pools { b"main\n" } else { b"" };
    let expected = agent_request(remora.agent, request).await?;
    ensure!(expected.starts_with("down #"), "{expected}");
    let at_remora = Responder {
        addr: remora.agent,
        request,
        expected: &expected,
    };
    let at_reference = Responder {
        addr: reference.addr,
        request,
        expected: HEALTHY,
    };

    let quiet = Latency::of(at_remora.timed().await?);
    let (quiet_fds, quiet_rss) = (open_fds(pid), rss_kib(pid));
    println!(
        "remora {} pools, max_connections {CAP}: quiet checks {quiet}; {quiet_fds} fds, {quiet_rss} KiB",
        if pools { "with" } else { "without" }
    );

    let megabyte: Arc<Vec<u8>> = Arc::new(
        (0..1_048_576u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .map(|b| if b == b'\n' || b == b'\r' { b'x' } else { b })
            .collect(),
    );
    for name in ATTACKS {
        let under = under_attack(name, on, &remora, [at_remora, at_reference], &megabyte).await?;
        let (during, floor) = (Latency::of(under.remora), Latency::of(under.reference));
        println!(
            "  {name:<32} remora {during}\n  {:<32} reference {floor}; remora peak {} fds, {} KiB",
            "", under.fds, under.rss
        );
        ensure!(
            remora.is_running(),
            "remora died during {name}:\n{}",
            remora.log()
        );
        ensure!(
            latency_kept(floor, during, LATENCY_FACTOR),
            "{name}: remora's checks took {during}, the reference's {floor}"
        );
        ensure!(
            under.fds <= CAP + OWN_FDS,
            "{name}: remora had {} descriptors open (cap {CAP} + {OWN_FDS})",
            under.fds
        );
        ensure!(
            under.rss <= quiet_rss + 64 * 1024,
            "{name}: remora grew from {quiet_rss} KiB to {} KiB",
            under.rss
        );
    }
    // Everything hostile is gone: descriptors are back where they were.
    let settled = tokio::time::Instant::now() + Duration::from_secs(5);
    while open_fds(pid) > quiet_fds + 4 && tokio::time::Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        open_fds(pid) <= quiet_fds + 4,
        "descriptors not released: {} now, {quiet_fds} before",
        open_fds(pid)
    );
    let after = Latency::of(at_remora.timed().await?);
    println!(
        "  after every attack: checks {after}; {} fds",
        open_fds(pid)
    );
    Ok(())
}

/// One test, both ways in turn: two attacks at once would measure each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow (seconds of load on every core): `make test` runs this"]
async fn the_agent_survives_hostile_clients_with_and_without_pools() -> Result<()> {
    survive_every_attack(false).await?;
    survive_every_attack(true).await
}
