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
//! - [`health`]: observation → [`health::Health`]: role, lag measured or
//!   estimated (a NULL lag is never 0), broken replication.
//! - [`policy`]: pure. Health + policy → target verdict, and the flap damper
//!   that lets worse verdicts through at once and better ones only after
//!   `recover_after` qualifying polls.
//! - [`poller`]: the loop that owns probe and history and publishes
//!   [`poller::Snapshot`]s.
//! - [`agent`] and [`http`]: readers. They answer from the latest snapshot in
//!   memory and never wait on MySQL.
//!
//! [`run`] wires these together on listeners the caller has already bound, so
//! tests can bind port 0.

pub mod agent;
pub mod config;
pub mod health;
pub mod http;
pub mod policy;
pub mod poller;
pub mod probe;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use log::{error, info};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secret};
use crate::poller::{Poller, Snapshot};

/// The sockets remora serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    pub agent: TcpListener,
    pub http: TcpListener,
}

/// How long tasks get to finish after shutdown before they are abandoned.
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(1500);

/// Runs remora until `shutdown` resolves.
///
/// Nothing is served until the first poll has finished (or timed out): a
/// restart never answers from nothing. Connections arriving meanwhile wait in
/// the listen backlog.
pub async fn run(
    config: Config,
    password: Option<Secret>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut poller = Poller::new(&config, password.as_ref());
    info!(
        "watching {} every {}; agent on {}, http on {}",
        poller.target(),
        config::show(config.poll.interval),
        config.agent.listen,
        config.http.listen
    );

    let first = tokio::select! {
        snapshot = poller.poll() => snapshot,
        _ = &mut shutdown => return Ok(()),
    };
    for pool in &first.pools {
        let which = if pool.name.is_empty() {
            "first verdict:".to_owned()
        } else {
            format!("pool {}:", pool.name)
        };
        info!("{which} {}", pool.decision.verdict);
    }
    if let Err(err) = &first.observation.result {
        info!("first poll failed: {err}");
    }
    let (publish, snapshots) = watch::channel(Arc::new(first));

    let stop = CancellationToken::new();
    let mut poller_task = tokio::spawn(poller.run(publish, stop.clone()));
    // Without pools the agent never waits for a request.
    let request_timeout = (!config.pools.is_empty()).then_some(config.agent.request_timeout);
    let agent_task = tokio::spawn(agent::serve(
        listeners.agent,
        snapshots.clone(),
        request_timeout,
        stop.clone(),
    ));
    let http_task = tokio::spawn(http::serve(listeners.http, snapshots, stop.clone()));

    let outcome = tokio::select! {
        _ = &mut shutdown => Ok(()),
        ended = &mut poller_task => {
            // The poller never returns before shutdown; if it did (a panic),
            // exit so a supervisor restarts us rather than serve a frozen verdict.
            error!("the poller stopped unexpectedly: {ended:?}");
            Err(anyhow::anyhow!("the poller stopped unexpectedly"))
        }
    };

    stop.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_LIMIT, async {
        let _ = agent_task.await;
        let _ = http_task.await;
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

/// Polls once and returns the snapshot: `remora --once`.
pub async fn poll_once(config: &Config, password: Option<Secret>) -> Snapshot {
    let mut poller = Poller::new(config, password.as_ref());
    let snapshot = poller.poll().await;
    poller.close().await;
    snapshot
}
