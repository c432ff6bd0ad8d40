//! remora: a sidecar that tells HAProxy how much traffic a MySQL or MariaDB
//! server should get, from its replication health and lag.
//!
//! # Layout
//!
//! Data flows one way, from MySQL to HAProxy:
//!
//! ```text
//!  MySQL ──probe──▶ Observation ──health──▶ Health ──policy──▶ Verdict
//!                                                                │
//!                   poller: one writer, one poll per interval    ▼
//!                                              watch<Arc<Snapshot>>
//!                                                 │            │
//!                                   agent (HAProxy agent-check) http (/status, /health)
//! ```
//!
//! - [`config`]: YAML → [`config::Config`], validated; secrets masked.
//! - [`probe`]: the only code that talks to MySQL. One poll, every wait under a
//!   deadline, becomes one [`probe::Observation`]; failures are data.
//! - [`health`]: observation → [`health::Assessment`]: role, lag from the
//!   heartbeat or replica status, measured or estimated (a NULL lag is never
//!   0), broken replication, Galera state, load.
//! - [`policy`]: pure. Assessment + policy → target verdict, and the flap
//!   damper that lets worse verdicts through at once and better ones only
//!   after `recover_after` qualifying polls.
//! - [`maintenance`]: the operator's switch, which beats every measurement.
//! - [`poller`]: the loop that owns probes and history and publishes
//!   [`poller::Snapshot`]s; it also applies reloaded configuration.
//! - [`agent`] and [`http`]: readers. They answer from the latest snapshot in
//!   memory and never wait on MySQL. `http` also serves `/metrics` and the
//!   maintenance switch.
//!
//! [`run`] wires these together on listeners the caller has already bound, so
//! tests can bind port 0.

pub mod agent;
pub mod answer;
pub mod config;
pub mod connections;
pub mod files;
pub mod health;
pub mod http;
#[macro_use]
pub mod kinds;
pub mod maintenance;
pub mod passwords;
pub mod policy;
pub mod poller;
pub mod probe;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{error, info};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secrets};
use crate::maintenance::Maintenance;
use crate::poller::{Command, Poller, Snapshot};

/// The sockets remora serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    pub agent: TcpListener,
    pub http: TcpListener,
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

/// Raises the soft limit on open files to the hard limit, as servers do (the
/// usual soft default, 1024, is near `agent.max_connections`), and returns
/// the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Ok(limit.rlim_cur)
}

/// File descriptors remora needs beside agent connections: listeners, HTTP
/// connections, MySQL connections, the runtime's own.
pub const SPARE_FDS: usize = 320;

/// A validated configuration, with its secrets, to switch to (SIGHUP).
pub type Reload = (Config, Secrets);

/// How long tasks get to finish after shutdown before they are abandoned.
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(1500);

/// One listener's serving task, stoppable on its own when its address changes.
struct Serving {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Serving {
    fn replace(&mut self, next: Serving) -> JoinHandle<()> {
        self.stop.cancel();
        let old = std::mem::replace(self, next);
        old.task
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
    info!(
        "watching {} every {}; agent on {}, http on {}",
        poller.target(),
        config::show(config.poll.interval),
        config.agent.listen,
        config.http.listen
    );

    let first = tokio::select! {
        snapshot = poller.poll(None) => snapshot,
        _ = &mut shutdown => return Ok(()),
    };
    for pool in first.every_pool() {
        info!(
            "first verdict for {}: {}",
            pool.label(),
            pool.decision.verdict
        );
    }
    if let Err(err) = &first.observation.result {
        info!("first poll failed: {err}");
    }
    let (publish, snapshots) = watch::channel(Arc::new(first));
    let (switch, switch_changes) = watch::channel::<Option<Maintenance>>(None);
    let switch = Arc::new(switch);
    let (commands, command_queue) = mpsc::channel(4);

    let stop = CancellationToken::new();
    let mut poller_task =
        tokio::spawn(poller.run(publish, switch_changes, command_queue, stop.clone()));
    let serve_agent = |listener: TcpListener, addr| {
        let token = stop.child_token();
        Serving {
            addr,
            stop: token.clone(),
            task: tokio::spawn(agent::serve(listener, snapshots.clone(), token)),
        }
    };
    let serve_http = |listener: TcpListener, addr| {
        let token = stop.child_token();
        Serving {
            addr,
            stop: token.clone(),
            task: tokio::spawn(http::serve(
                listener,
                snapshots.clone(),
                Arc::clone(&switch),
                token,
            )),
        }
    };
    let mut agent = serve_agent(listeners.agent, config.agent.listen);
    let mut http = serve_http(listeners.http, config.http.listen);
    let mut retired = Vec::new();

    let outcome = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            ended = &mut poller_task => {
                // The poller never returns before shutdown; if it did (a panic),
                // exit so a supervisor restarts us rather than serve a frozen verdict.
                error!("the poller stopped unexpectedly: {ended:?}");
                break Err(anyhow::anyhow!("the poller stopped unexpectedly"));
            }
            Some((config, secrets)) = reloads.recv() => {
                // Bind first: a reload whose new addresses cannot be bound is
                // rejected whole, and the old configuration keeps running.
                let agent_listener = match rebind("agent.listen", agent.addr, config.agent.listen).await {
                    Ok(listener) => listener,
                    Err(()) => continue,
                };
                let http_listener = match rebind("http.listen", http.addr, config.http.listen).await {
                    Ok(listener) => listener,
                    Err(()) => continue,
                };
                let (agent_addr, http_addr) = (config.agent.listen, config.http.listen);
                // The new listeners open only once the poller has published a
                // snapshot under the new configuration.
                let (applied, published) = tokio::sync::oneshot::channel();
                let sent = commands
                    .send(Command::Reconfigure(Box::new((config, secrets)), applied))
                    .await;
                let applied = sent.is_ok() && tokio::select! {
                    done = published => done.is_ok(),
                    _ = &mut shutdown => break Ok(()),
                };
                if !applied {
                    error!("configuration not applied: the poller is gone");
                    continue;
                }
                if let Some(listener) = agent_listener {
                    retired.push(agent.replace(serve_agent(listener, agent_addr)));
                    info!("agent now listening on {agent_addr}");
                }
                if let Some(listener) = http_listener {
                    retired.push(http.replace(serve_http(listener, http_addr)));
                    info!("http now listening on {http_addr}");
                }
            }
        }
    };

    stop.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_LIMIT, async {
        let _ = agent.task.await;
        let _ = http.task.await;
        for task in retired {
            let _ = task.await;
        }
        if !poller_task.is_finished() {
            let _ = poller_task.await;
        }
    })
    .await;
    if drained.is_err() {
        info!("shutdown limit reached; abandoning remaining work");
    }
    outcome
}

/// A new listener when `key` changed from `old` to `new`; `Err` (logged) if
/// it cannot be bound.
async fn rebind(key: &str, old: SocketAddr, new: SocketAddr) -> Result<Option<TcpListener>, ()> {
    if old == new {
        return Ok(None);
    }
    match bind(new).await {
        Ok(listener) => Ok(Some(listener)),
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
