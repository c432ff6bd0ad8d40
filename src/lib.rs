//! remora: a sidecar that tells HAProxy how much traffic a MySQL or MariaDB
//! server should get, from its replication health and lag.
//!
//! # Layout
//!
//! Data flows one way, from MySQL to HAProxy:
//!
//! ```text
//!  MySQL ──probe──▶ Observation ──health──▶ Assessment ──policy──▶ Verdict ──▶ Answer
//!                                                                               │
//!                     poller: one writer, one poll per interval                 ▼
//!                                                         watch<Arc<Snapshot>>
//!                                                          │                │
//!                                        agent (HAProxy agent-check)   http (/status, /health, /metrics)
//! ```
//!
//! The modules, from the bottom up. Each uses only modules listed before
//! it, never one after (`tests/layers.rs` holds the code to this list):
//!
//! - [`kinds`]: enums that list their values (`labelled!`); [`os`]: the few
//!   calls into the operating system, the crate's only `unsafe` code.
//! - [`files`]: operator files read without hanging; [`units`]: time as
//!   remora writes it; [`logs`]: throttled log lines, foreign text escaped.
//! - [`connections`]: the open-connection cap; [`threads`]: a listener on a
//!   thread and runtime of its own.
//! - [`config`]: YAML → [`config::Config`], validated, every error naming its
//!   key; `mysql`, `policy` (with [`config::Thresholds`]), `secrets` and the
//!   smaller `sections` each in their own file. Secrets are masked.
//! - [`passwords`]: password files re-read on rotation.
//! - [`maintenance`]: the operator's switch, which beats every measurement:
//!   the file, and the state file that keeps the HTTP switch.
//! - [`probe`]: the only code that talks to MySQL. One poll, every wait under a
//!   deadline, becomes one [`probe::Observation`]; failures are data. Its
//!   files: the observation types, poll errors, TLS, the queries, row decoding.
//! - [`health`]: observation → [`health::Assessment`]: role, lag from the
//!   heartbeat or replica status, measured or estimated (a NULL lag is never
//!   0), broken replication, Galera state, load.
//! - [`reason`]: why a verdict is what it is, typed ([`reason::Reason`]) and
//!   rendered once for every reader.
//! - [`policy`]: pure. Assessment + policy → target verdict, the flap damper
//!   that lets worse verdicts through at once and better ones only after
//!   `recover_after` qualifying polls, and the warm-up ramp.
//! - [`trend`]: the lag's slope and the time until it is back under
//!   `full_weight_below`.
//! - [`answer`]: what HAProxy is told (up / drain / down / maint, weight,
//!   reason, the agent line), computed once per snapshot and pool.
//! - [`checks`]: the agent checks answered per pool, and the HAProxy peers
//!   that sent them (who asks, how often, when last, what they were told).
//! - [`judge`]: the one decision pipeline (targets → damping → warm-up →
//!   the lag's direction → answer), called by the poller, `--replay` and the
//!   property tests alike.
//! - [`history`]: every poll and verdict change of the last `history.keep`,
//!   written by the poller, read by `/history` and `/events`, and
//!   [`history::trace`], the trace format `/history?format=csv` writes and
//!   `--replay` reads.
//! - [`snapshot`]: what the poller publishes and readers read: one poll's
//!   verdicts and answers, and the answer to a request (a pool looked up,
//!   failing closed; staleness; maintenance), from the snapshot alone.
//! - [`reload`]: a reloaded configuration's [`reload::ReloadPlan`], worked
//!   out purely.
//! - [`poller`]: the loop that owns probes and history and publishes
//!   [`snapshot::Snapshot`]s, applying each reload by its plan.
//! - [`replay`]: the policy code over a trace, offline.
//! - [`agent`] and [`http`]: readers. They answer from the latest snapshot in
//!   memory, never wait on MySQL, and never share a thread with the poller.
//!   `http` routes and guards the maintenance switch; `/status`, `/metrics`,
//!   the page and the history render in their own files.
//!
//! [`run`] wires these together on listeners the caller has already bound, so
//! tests can bind port 0.

#![deny(unsafe_code)]

pub mod agent;
pub mod answer;
pub mod checks;
pub mod config;
pub mod connections;
pub mod files;
pub mod health;
pub mod history;
pub mod http;
pub mod judge;
#[macro_use]
pub mod kinds;
pub mod logs;
pub mod maintenance;
pub mod os;
pub mod passwords;
pub mod policy;
pub mod poller;
pub mod probe;
pub mod reason;
pub mod reload;
pub mod replay;
pub mod snapshot;
pub mod threads;
pub mod trend;
pub mod units;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use log::{error, info};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secrets};
use crate::maintenance::Maintenance;
use crate::poller::{Command, Poller};
use crate::reload::ReloadPlan;
use crate::snapshot::Snapshot;

/// The sockets remora serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    pub agent: TcpListener,
    pub http: TcpListener,
    /// `pools.NAME.listen`: an agent port answered by that pool alone.
    pub pools: BTreeMap<String, TcpListener>,
}

impl Listeners {
    /// Binds every address `config` listens on.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let at = |key: String, addr: SocketAddr| async move {
            bind(addr)
                .await
                .with_context(|| format!("cannot listen on {key} {addr}"))
        };
        let mut pools = BTreeMap::new();
        for (name, addr) in config.pool_listeners() {
            let listener = at(format!("pools.{name}.listen"), addr).await?;
            pools.insert(name, listener);
        }
        Ok(Listeners {
            agent: at("agent.listen".into(), config.agent.listen).await?,
            http: at("http.listen".into(), config.http.listen).await?,
            pools,
        })
    }
}

/// Pending connections the kernel may queue before remora accepts them: a
/// burst of checks from many HAProxies must not find the queue full (a
/// dropped SYN costs the client a one-second retransmission).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener the way remora serves: SO_REUSEADDR (a restart rebinds
/// at once) and a deep accept queue.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

pub use os::raise_fd_limit;

/// File descriptors remora needs beside agent connections: listeners, HTTP
/// connections, MySQL connections, the runtime's own.
pub const SPARE_FDS: usize = 320;

/// A validated configuration, with its secrets, to switch to (SIGHUP).
pub type Reload = (Config, Secrets);

/// How long tasks get to finish after shutdown before they are abandoned.
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(1500);

/// One listener's serving task, stoppable on its own when its address changes.
struct Serving {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts serving tasks: each reads the published snapshots and stops with
/// its own child of the shutdown token.
struct Spawner {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    switch: http::Switch,
    stop: CancellationToken,
}

impl Spawner {
    /// An agent, on its own thread and runtime ([`agent::spawn`]); `pool`
    /// for a pool's own port.
    fn agent(&self, listener: TcpListener, pool: Option<String>) -> std::io::Result<Serving> {
        let stop = self.stop.child_token();
        let task = agent::spawn(listener, self.snapshots.clone(), pool, stop.clone())?;
        Ok(Serving { stop, task })
    }

    /// HTTP, on its own thread and runtime ([`http::spawn`]).
    fn http(&self, listener: TcpListener) -> std::io::Result<Serving> {
        let stop = self.stop.child_token();
        let switch = Arc::clone(&self.switch);
        let task = http::spawn(listener, self.snapshots.clone(), switch, stop.clone())?;
        Ok(Serving { stop, task })
    }

    /// Every pool's own agent port.
    fn pool_agents(
        &self,
        config: &Config,
        listeners: BTreeMap<String, TcpListener>,
    ) -> std::io::Result<BTreeMap<String, (SocketAddr, Serving)>> {
        let wanted = config.pool_listeners();
        let mut serving = BTreeMap::new();
        for (name, listener) in listeners {
            let addr = wanted.get(&name).copied().unwrap_or(listener.local_addr()?);
            log_pool_port(&name, &listener);
            let agent = self.agent(listener, Some(name.clone()))?;
            serving.insert(name, (addr, agent));
        }
        Ok(serving)
    }
}

fn log_pool_port(name: &str, listener: &TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        info!("pool {name}: agent listening on {addr}");
    }
}

/// What `run` serves, and the configuration in force.
struct Service {
    current: Reload,
    agent: Serving,
    http: Serving,
    /// Each pool's own agent port, by pool name, with its configured address.
    pool_agents: BTreeMap<String, (SocketAddr, Serving)>,
    /// Tasks of listeners a reload replaced, finishing their connections.
    retired: Vec<JoinHandle<()>>,
    spawner: Spawner,
    commands: mpsc::Sender<Command>,
}

/// How a reload ended.
enum Reloaded {
    Applied,
    Rejected,
    ShuttingDown,
}

impl Service {
    /// Applies one reload by its [`ReloadPlan`]: binds the moved listeners
    /// first (a reload whose addresses cannot be bound is rejected whole and
    /// the old configuration keeps running), has the poller publish under
    /// the new configuration, and only then opens the new listeners.
    async fn reload(&mut self, next: Reload, shutdown: impl Future<Output = ()>) -> Reloaded {
        let plan = ReloadPlan::between((&self.current.0, &self.current.1), (&next.0, &next.1));
        let old = (self.current.0.agent.listen, self.current.0.http.listen);
        let Ok(agent) = rebind("agent.listen", old.0, plan.agent_listen).await else {
            return Reloaded::Rejected;
        };
        let Ok(http) = rebind("http.listen", old.1, plan.http_listen).await else {
            return Reloaded::Rejected;
        };
        let Ok(pools) = self.rebind_pools(&next.0).await else {
            return Reloaded::Rejected;
        };
        self.current = next.clone();
        let (applied, published) = tokio::sync::oneshot::channel();
        let command = Command::Reconfigure(Box::new(next), plan, applied);
        let applied = self.commands.send(command).await.is_ok()
            && tokio::select! {
                done = published => done.is_ok(),
                _ = shutdown => return Reloaded::ShuttingDown,
            };
        if !applied {
            error!("configuration not applied: the poller is gone");
            return Reloaded::Rejected;
        }
        if let Some((listener, addr)) = agent {
            let next = self.spawner.agent(listener, None);
            self.move_to("agent", |service| &mut service.agent, next, (old.0, addr));
        }
        if let Some((listener, addr)) = http {
            let next = self.spawner.http(listener);
            self.move_to("http", |service| &mut service.http, next, (old.1, addr));
        }
        self.move_pool_agents(pools);
        Reloaded::Applied
    }

    /// Listeners for the pool ports `next` adds or moves; `Err` (logged)
    /// if one cannot be bound.
    async fn rebind_pools(
        &self,
        next: &Config,
    ) -> Result<BTreeMap<String, (TcpListener, SocketAddr)>, ()> {
        let mut bound = BTreeMap::new();
        for (name, addr) in next.pool_listeners() {
            let old = self.pool_agents.get(&name).map(|(old, _)| *old);
            if old == Some(addr) {
                continue;
            }
            let key = format!("pools.{name}.listen");
            match bind(addr).await {
                Ok(listener) => {
                    bound.insert(name, (listener, addr));
                }
                Err(err) => {
                    error!("reload rejected: cannot listen on {key} {addr}: {err}");
                    return Err(());
                }
            }
        }
        Ok(bound)
    }

    /// Serves the pool ports just bound, and stops those of pools that no
    /// longer have one (or have another).
    fn move_pool_agents(&mut self, mut bound: BTreeMap<String, (TcpListener, SocketAddr)>) {
        let wanted = self.current.0.pool_listeners();
        let gone: Vec<String> = (self.pool_agents.keys())
            .filter(|name| !wanted.contains_key(*name) || bound.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some((addr, old)) = self.pool_agents.remove(&name) {
                old.stop.cancel();
                self.retired.push(old.task);
                info!("pool {name}: agent no longer listening on {addr}");
            }
        }
        for (name, (listener, addr)) in std::mem::take(&mut bound) {
            log_pool_port(&name, &listener);
            match self.spawner.agent(listener, Some(name.clone())) {
                Ok(serving) => {
                    self.pool_agents.insert(name, (addr, serving));
                }
                Err(err) => error!("pools.{name}.listen {addr} not served: {err}"),
            }
        }
    }

    /// Serves `name` (`agent`, `http`) on its new address in place of the
    /// old, or keeps the old if the new one could not be served.
    fn move_to(
        &mut self,
        name: &str,
        which: fn(&mut Service) -> &mut Serving,
        next: std::io::Result<Serving>,
        (old, new): (SocketAddr, SocketAddr),
    ) {
        match next {
            Ok(next) => {
                self.retire(which, next);
                info!("{name} now listening on {new}");
            }
            Err(err) => error!("{name}.listen {new} not served: {err}; still serving on {old}"),
        }
    }

    /// Replaces a listener's task; the old one stops accepting and finishes.
    fn retire(&mut self, which: fn(&mut Service) -> &mut Serving, next: Serving) {
        let old = std::mem::replace(which(self), next);
        old.stop.cancel();
        self.retired.push(old.task);
    }

    /// Stops every task and waits for them, at most [`SHUTDOWN_LIMIT`].
    async fn stop(self, poller: JoinHandle<()>) {
        self.spawner.stop.cancel();
        let drained = tokio::time::timeout(SHUTDOWN_LIMIT, async {
            let _ = self.agent.task.await;
            let _ = self.http.task.await;
            for (_, (_, serving)) in self.pool_agents {
                let _ = serving.task.await;
            }
            for task in self.retired {
                let _ = task.await;
            }
            if !poller.is_finished() {
                let _ = poller.await;
            }
        })
        .await;
        if drained.is_err() {
            info!("shutdown limit reached; abandoning remaining work");
        }
    }
}

/// Runs remora until `shutdown` resolves, applying each configuration that
/// arrives on `reloads`.
///
/// Nothing is served until the first poll has finished (or timed out): a
/// restart never answers from nothing. Connections arriving meanwhile wait in
/// the listen backlog.
pub async fn run(
    config: Config,
    secrets: Secrets,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<Reload>,
) -> anyhow::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut poller = Poller::new(&config, &secrets);
    // The addresses bound, not the configured ones: port 0 becomes a port.
    let bound = |listener: &TcpListener| {
        listener
            .local_addr()
            .map_or_else(|err| format!("? ({err})"), |addr| addr.to_string())
    };
    info!(
        "watching {} every {}; agent on {}, http on {}",
        poller.target(),
        config::show(config.poll.interval),
        bound(&listeners.agent),
        bound(&listeners.http)
    );
    let kept = kept_switch(&config).await;
    let first = tokio::select! {
        snapshot = poller.poll(kept.as_ref()) => snapshot,
        _ = &mut shutdown => return Ok(()),
    };
    log_first(&first);
    poller.record(None, &first);
    let (publish, snapshots) = watch::channel(Arc::new(first));
    let (switch, switch_changes) = watch::channel::<Option<Maintenance>>(kept);
    let (commands, command_queue) = mpsc::channel(4);
    let stop = CancellationToken::new();
    let mut poller_task =
        tokio::spawn(poller.run(publish, switch_changes, command_queue, stop.clone()));
    let spawner = Spawner {
        snapshots,
        switch: Arc::new(switch),
        stop,
    };
    let agent = spawner.agent(listeners.agent, None)?;
    let http = spawner.http(listeners.http)?;
    let pool_agents = spawner.pool_agents(&config, listeners.pools)?;
    let mut service = Service {
        current: (config, secrets),
        agent,
        http,
        pool_agents,
        retired: Vec::new(),
        spawner,
        commands,
    };
    let outcome = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            ended = &mut poller_task => {
                // The poller never returns before shutdown; if it did (a panic),
                // exit so a supervisor restarts us rather than serve a frozen verdict.
                error!("the poller stopped unexpectedly: {ended:?}");
                break Err(anyhow::anyhow!("the poller stopped unexpectedly"));
            }
            Some(next) = reloads.recv() => {
                if let Reloaded::ShuttingDown = service.reload(next, &mut shutdown).await {
                    break Ok(());
                }
            }
        }
    };
    service.stop(poller_task).await;
    outcome
}

/// Longest the state file may take to read at start.
const STATE_READ_LIMIT: Duration = Duration::from_secs(1);

/// The HTTP switch as it was before a restart (`maintenance.state_file`).
async fn kept_switch(config: &Config) -> Option<Maintenance> {
    let path = config.maintenance.state_file.clone()?;
    let reading = {
        let path = path.clone();
        move || Maintenance::from_state_file(&path)
    };
    let kept = files::blocking_within(STATE_READ_LIMIT, reading)
        .await
        .unwrap_or_else(|| {
            Some(Maintenance::state_unreadable(
                &path,
                format!("not read within {}", config::show(STATE_READ_LIMIT)),
            ))
        });
    if let Some(on) = &kept {
        info!(
            "maintenance on ({}): {}",
            on.source,
            answer::Answer::maintenance(on).text()
        );
    }
    kept
}

fn log_first(first: &Snapshot) {
    for pool in first.every_pool() {
        info!(
            "first verdict for {}: {}",
            pool.label(),
            pool.decision.verdict
        );
    }
    if let Err(err) = &first.observation.result {
        info!("first poll failed: {}", logs::escaped(&err.to_string()));
    }
}

/// A new listener (and its address) when `key` moved to `new`; `Err`
/// (logged) if it cannot be bound.
async fn rebind(
    key: &str,
    old: SocketAddr,
    new: Option<SocketAddr>,
) -> Result<Option<(TcpListener, SocketAddr)>, ()> {
    let Some(new) = new else {
        return Ok(None);
    };
    match bind(new).await {
        Ok(listener) => Ok(Some((listener, new))),
        Err(err) => {
            error!("reload rejected: cannot listen on {key} {new}: {err}; still serving on {old}");
            Err(())
        }
    }
}

/// Polls once and returns the snapshot: `remora --once`.
pub async fn poll_once(config: &Config, secrets: &Secrets) -> Snapshot {
    let mut poller = Poller::new(config, secrets);
    let snapshot = poller.poll(None).await;
    poller.close().await;
    snapshot
}
