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
//! - [`budget`]: `keep_up`, a pool-wide depool budget: whether a target
//!   that lag alone would take out stays up, decided as it publishes.
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
//! - [`fleet`]: every server watched: one target for a sidecar, many with
//!   `targets`/`targets_file`, each with its own poller; the readers' view
//!   of them, and how a changed target set is applied.
//! - [`replay`]: the policy code over a trace, offline.
//! - [`cli`]: the command line's definition (the binary parses it; man
//!   pages and completions are generated from it).
//! - [`ctl`]: `remora ctl`, a client of the admin switch that can wait
//!   until every HAProxy asking has been answered the switch.
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
pub mod budget;
pub mod checks;
pub mod cli;
pub mod config;
pub mod connections;
pub mod ctl;
pub mod files;
pub mod fleet;
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

use crate::config::{Config, ConfigError, Secrets};
use crate::fleet::Fleet;
use crate::poller::Poller;
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

/// Starts serving tasks: each reads the published fleet and stops with
/// its own child of the shutdown token.
struct Spawner {
    fleet: watch::Receiver<Arc<Fleet>>,
    stop: CancellationToken,
}

impl Spawner {
    /// An agent, on its own thread and runtime ([`agent::spawn`]); `pool`
    /// for a pool's own port.
    fn agent(&self, listener: TcpListener, pool: Option<String>) -> std::io::Result<Serving> {
        let stop = self.stop.child_token();
        let task = agent::spawn(listener, self.fleet.clone(), pool, stop.clone())?;
        Ok(Serving { stop, task })
    }

    /// HTTP, on its own thread and runtime ([`http::spawn`]).
    fn http(&self, listener: TcpListener) -> std::io::Result<Serving> {
        let stop = self.stop.child_token();
        let task = http::spawn(listener, self.fleet.clone(), stop.clone())?;
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

/// What the targets file watcher sends: the targets read, or why not.
type TargetsFileRead = Result<BTreeMap<String, fleet::Reload>, ConfigError>;
type TargetsFileChanges = mpsc::Receiver<TargetsFileRead>;

/// The targets watched, and what the readers are shown of them.
struct Targets {
    running: BTreeMap<String, fleet::Running>,
    publish: watch::Sender<Arc<Fleet>>,
    /// How the last read of `targets_file` went.
    file: Option<fleet::FileState>,
    pollers: fleet::Pollers,
    /// Watches `targets_file`, when there is one.
    watcher: Option<Serving>,
    changes: mpsc::Sender<TargetsFileRead>,
}

impl Targets {
    /// The targets `running` under `current`, published, with the targets
    /// file watched; the receiver gets each change read from that file.
    fn start(
        running: BTreeMap<String, fleet::Running>,
        pollers: fleet::Pollers,
        current: &Reload,
    ) -> (Targets, TargetsFileChanges) {
        let config = &current.0;
        let (publish, _) = watch::channel(Arc::new(fleet::view(
            &running,
            config.has_targets(),
            Arc::new(snapshot::ReaderSettings::of(config)),
            None,
        )));
        let (changes, file_changes) = mpsc::channel(1);
        let mut targets = Targets {
            running,
            publish,
            file: None,
            pollers,
            watcher: None,
            changes,
        };
        targets.file_read(config, None);
        targets.publish(config);
        targets.watch_file(current);
        (targets, file_changes)
    }

    /// Shows the readers the targets running now under `config`.
    fn publish(&self, config: &Config) {
        let settings = Arc::new(snapshot::ReaderSettings::of(config));
        let view = fleet::view(
            &self.running,
            config.has_targets(),
            settings,
            self.file.clone(),
        );
        self.publish.send_replace(Arc::new(view));
    }

    /// Runs `next` (a reload or a changed targets file); stopped pollers
    /// are left to finish on their own.
    async fn apply(&mut self, next: BTreeMap<String, fleet::Reload>, config: &Config) {
        self.pollers.named = config.has_targets();
        self.pollers.boards.configure(config);
        let stopped = fleet::apply(&mut self.running, next, &self.pollers).await;
        self.publish(config);
        drop(stopped);
    }

    /// Targets that cannot be read (`wanted`'s): the old set stays under
    /// `current`, and says so.
    fn refuse(&mut self, err: &ConfigError, wanted: &Config, current: &Config) {
        error!(
            "targets not changed, still watching {}: {err}",
            self.running.len()
        );
        self.file_read(wanted, Some(err.to_string()));
        self.publish(current);
    }

    fn file_read(&mut self, config: &Config, error: Option<String>) {
        self.file = config.targets_file.clone().map(|path| fleet::FileState {
            path,
            error,
            at: std::time::SystemTime::now(),
        });
    }

    /// Watches `config`'s targets file, in place of any earlier watcher.
    fn watch_file(&mut self, (config, secrets): &Reload) {
        if let Some(old) = self.watcher.take() {
            old.stop.cancel();
        }
        if config.targets_file.is_none() {
            return;
        }
        let stop = self.pollers.stop.child_token();
        let task = tokio::spawn(fleet::watch_targets_file(
            config.clone(),
            secrets.clone(),
            self.changes.clone(),
            stop.clone(),
        ));
        self.watcher = Some(Serving { stop, task });
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
    targets: Targets,
}

/// How a reload ended.
enum Reloaded {
    Applied,
    Rejected,
    ShuttingDown,
}

impl Service {
    /// Serves the agent, HTTP and every pool's own agent port on
    /// `listeners`, from what `targets` publishes.
    fn start(current: Reload, targets: Targets, listeners: Listeners) -> anyhow::Result<Service> {
        let spawner = Spawner {
            fleet: targets.publish.subscribe(),
            stop: CancellationToken::new(),
        };
        Ok(Service {
            agent: spawner.agent(listeners.agent, None)?,
            http: spawner.http(listeners.http)?,
            pool_agents: spawner.pool_agents(&current.0, listeners.pools)?,
            current,
            retired: Vec::new(),
            spawner,
            targets,
        })
    }

    /// Until shutdown: applies reloads and targets file changes; an error
    /// if a poller died (a supervisor should restart remora rather than
    /// let it serve a frozen verdict).
    async fn serve(
        &mut self,
        mut shutdown: impl Future<Output = ()> + Unpin,
        died: &CancellationToken,
        mut reloads: mpsc::Receiver<Reload>,
        mut file_changes: TargetsFileChanges,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = died.cancelled() => {
                    return Err(anyhow::anyhow!("a poller stopped unexpectedly"));
                }
                Some(next) = reloads.recv() => {
                    if let Reloaded::ShuttingDown = self.reload(next, &mut shutdown).await {
                        return Ok(());
                    }
                }
                Some(read) = file_changes.recv() => self.targets_file_changed(read).await,
            }
        }
    }

    /// Applies one reload by its [`ReloadPlan`]: binds the moved listeners
    /// first (a reload whose addresses cannot be bound, or whose targets
    /// cannot be read, is rejected whole and the old configuration keeps
    /// running), has every target publish under the new configuration,
    /// and only then opens the new listeners.
    async fn reload(&mut self, next: Reload, shutdown: impl Future<Output = ()>) -> Reloaded {
        tokio::select! {
            reloaded = self.apply_reload(next) => reloaded,
            _ = shutdown => Reloaded::ShuttingDown,
        }
    }

    async fn apply_reload(&mut self, next: Reload) -> Reloaded {
        let plan = ReloadPlan::between((&self.current.0, &self.current.1), (&next.0, &next.1));
        let old = (self.current.0.agent.listen, self.current.0.http.listen);
        let targets = match fleet::resolve_within(&next.0, &next.1).await {
            Ok(targets) => targets,
            Err(err) => {
                error!("reload rejected, still running the previous configuration: {err}");
                self.targets.refuse(&err, &next.0, &self.current.0);
                return Reloaded::Rejected;
            }
        };
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
        self.targets.file_read(&next.0, None);
        self.targets.apply(targets, &next.0).await;
        self.targets.watch_file(&next);
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

    /// A changed targets file: its targets, or why it was not used.
    async fn targets_file_changed(&mut self, read: TargetsFileRead) {
        match read {
            Ok(targets) => {
                self.targets.file_read(&self.current.0, None);
                self.targets.apply(targets, &self.current.0).await;
            }
            Err(err) => self.targets.refuse(&err, &self.current.0, &self.current.0),
        }
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
    async fn stop(self) {
        self.spawner.stop.cancel();
        self.targets.pollers.stop.cancel();
        let drained = tokio::time::timeout(SHUTDOWN_LIMIT, async {
            let _ = self.agent.task.await;
            let _ = self.http.task.await;
            for (_, (_, serving)) in self.pool_agents {
                let _ = serving.task.await;
            }
            for task in self.retired {
                let _ = task.await;
            }
            for (_, running) in self.targets.running {
                let _ = running.stop().await;
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
/// Nothing is served until every target's first poll has finished (or
/// timed out): a restart never answers from nothing. Connections arriving
/// meanwhile wait in the listen backlog.
pub async fn run(
    config: Config,
    secrets: Secrets,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    reloads: mpsc::Receiver<Reload>,
) -> anyhow::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    let resolved = fleet::resolve_within(&config, &secrets).await?;
    announce(&config, &resolved, &listeners);
    let died = CancellationToken::new();
    let pollers = fleet::Pollers {
        stop: CancellationToken::new(),
        died: died.clone(),
        boards: Arc::new(budget::Boards::of(&config)),
        aurora: Arc::default(),
        named: config.has_targets(),
    };
    let running = tokio::select! {
        running = fleet::start_all(resolved, &pollers) => running,
        _ = &mut shutdown => {
            pollers.stop.cancel();
            return Ok(());
        }
    };
    let current = (config, secrets);
    let (targets, file_changes) = Targets::start(running, pollers, &current);
    let mut service = Service::start(current, targets, listeners)?;
    let outcome = service
        .serve(&mut shutdown, &died, reloads, file_changes)
        .await;
    service.stop().await;
    outcome
}

/// Logs what remora watches and where it listens: the addresses bound, not
/// the configured ones (port 0 becomes a port).
fn announce(
    config: &Config,
    resolved: &BTreeMap<String, (Config, Secrets)>,
    listeners: &Listeners,
) {
    let bound = |listener: &TcpListener| {
        listener
            .local_addr()
            .map_or_else(|err| format!("? ({err})"), |addr| addr.to_string())
    };
    let watching = match resolved.get(fleet::SINGLE) {
        Some((single, single_secrets)) => Poller::new(single, single_secrets).target().to_owned(),
        None => format!("{} targets", resolved.len()),
    };
    info!(
        "watching {watching} every {}; agent on {}, http on {}",
        config::show(config.poll.interval),
        bound(&listeners.agent),
        bound(&listeners.http)
    );
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

/// Polls every target once, all at once: `remora --once` with targets.
pub async fn poll_each(targets: BTreeMap<String, fleet::Reload>) -> BTreeMap<String, Snapshot> {
    let mut polling = tokio::task::JoinSet::new();
    for (name, (config, secrets)) in targets {
        polling.spawn(async move { (name, poll_once(&config, &secrets).await) });
    }
    let mut polled = BTreeMap::new();
    while let Some(done) = polling.join_next().await {
        if let Ok((name, snapshot)) = done {
            polled.insert(name, snapshot);
        }
    }
    polled
}

/// Polls once and returns the snapshot: `remora --once`.
pub async fn poll_once(config: &Config, secrets: &Secrets) -> Snapshot {
    let mut poller = Poller::new(config, secrets);
    let snapshot = poller.poll(None).await;
    poller.close().await;
    snapshot
}
