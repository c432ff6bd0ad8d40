//! What remora serves, and the loop that keeps it served: the agent, HTTP
//! and every pool's own agent port on listeners the caller bound, each on a
//! thread and runtime of its own, reading what the [`Targets`] publish;
//! reloads (SIGHUP) and reads of the targets file applied in turn, neither
//! ever holding up a shutdown; a bounded stop.

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

use crate::config::Config;
use crate::fleet::{self, FileReads, Fleet, Reload, Targets};
use crate::reload::ReloadPlan;
use crate::{agent, http};

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

/// What `run` serves, and the configuration in force.
pub struct Service {
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
    pub fn start(
        current: Reload,
        targets: Targets,
        listeners: Listeners,
    ) -> anyhow::Result<Service> {
        let spawner = Spawner {
            fleet: targets.subscribe(),
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

    /// Until shutdown: applies reloads and reads of the targets file; an
    /// error if a poller died (a supervisor should restart remora rather
    /// than let it serve a frozen verdict). A read being applied (first
    /// polls of new targets under way) never holds up a shutdown, and a
    /// reload arriving meanwhile supersedes it (it reads the file anew).
    pub async fn serve(
        &mut self,
        mut shutdown: impl Future<Output = ()> + Unpin,
        died: &CancellationToken,
        mut reloads: mpsc::Receiver<Reload>,
        mut file_reads: FileReads,
    ) -> anyhow::Result<()> {
        loop {
            let hold_ends = self.targets.hold_ends(&self.current.0);
            let read = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = died.cancelled() => {
                    return Err(anyhow::anyhow!("a poller stopped unexpectedly"));
                }
                Some(next) = reloads.recv() => {
                    if let Reloaded::ShuttingDown = self.reload(next, &mut shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
                Some(read) = file_reads.recv() => Some(read),
                _ = sleep_until_some(hold_ends) => None,
            };
            let config = &self.current.0;
            let admitted = async {
                match read {
                    Some(read) => self.targets.file_changed(read, config).await,
                    None => self.targets.admit_held(config).await,
                }
            };
            tokio::select! {
                () = admitted => {}
                _ = &mut shutdown => return Ok(()),
                Some(next) = reloads.recv() => {
                    if let Reloaded::ShuttingDown = self.reload(next, &mut shutdown).await {
                        return Ok(());
                    }
                }
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
        self.targets.reload(targets, &next).await;
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
    pub async fn stop(self) {
        self.spawner.stop.cancel();
        let targets = self.targets.stop();
        let drained = tokio::time::timeout(SHUTDOWN_LIMIT, async {
            let _ = self.agent.task.await;
            let _ = self.http.task.await;
            for (_, (_, serving)) in self.pool_agents {
                let _ = serving.task.await;
            }
            for task in self.retired {
                let _ = task.await;
            }
            for task in targets {
                let _ = task.await;
            }
        })
        .await;
        if drained.is_err() {
            info!("shutdown limit reached; abandoning remaining work");
        }
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

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
