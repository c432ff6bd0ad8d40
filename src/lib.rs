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
//! - [`topology`]: pure. Who follows whom and which server is the writer:
//!   the fleet's targets grouped into clusters by their servers' identities,
//!   each target's place in its cluster ([`topology::Topology::of`]).
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
//! - [`clusters`]: the fleet's clusters as every poller last saw them: the
//!   topology they make, each target's place, and the writer's place
//!   handed over only once every HAProxy was told the last writer is out.
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
//!   `targets`/`targets_file`, each with its own poller; the one owner of
//!   them ([`fleet::Targets`]: read, capped, a shrinking file held back,
//!   applied), and the readers' view of them.
//! - [`replay`]: the policy code over a trace, offline.
//! - [`cli`]: the command line's definition (the binary parses it; man
//!   pages and completions are generated from it).
//! - [`ctl`]: `remora ctl`, a client of the admin switch that can wait
//!   until every HAProxy asking has been answered the switch.
//! - [`agent`] and [`http`]: readers. They answer from the latest snapshot in
//!   memory, never wait on MySQL, and never share a thread with the poller.
//!   `http` routes and guards the maintenance switch; `/status`, `/metrics`,
//!   the page and the history render in their own files.
//! - [`service`]: what is served and the loop that keeps it served:
//!   listeners, reloads and targets file reads, a bounded stop.
//!
//! [`run`] wires these together on listeners the caller has already bound, so
//! tests can bind port 0.

#![deny(unsafe_code)]

pub mod agent;
pub mod answer;
pub mod budget;
pub mod checks;
pub mod cli;
pub mod clusters;
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
pub mod service;
pub mod snapshot;
pub mod threads;
pub mod topology;
pub mod trend;
pub mod units;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use log::info;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secrets};
use crate::fleet::Targets;
use crate::poller::Poller;
use crate::service::Service;
use crate::snapshot::Snapshot;

pub use fleet::Reload;
pub use os::raise_fd_limit;
pub use service::{LISTEN_BACKLOG, Listeners, bind};

/// File descriptors remora needs beside agent connections: listeners, HTTP
/// connections, MySQL connections, the runtime's own.
pub const SPARE_FDS: usize = 320;

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
        clusters: Arc::default(),
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
    let (targets, file_reads) = Targets::start(running, pollers, &current);
    let mut service = Service::start(current, targets, listeners)?;
    let outcome = service
        .serve(&mut shutdown, &died, reloads, file_reads)
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
