//! The targets' pollers, running: each target its own poller on a task of
//! its own, started (first polls in parallel, spread over the interval),
//! reconfigured by its reload plan, or stopped; and how a new target set
//! is applied to them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use log::{error, info, warn};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::{Reload, SINGLE, Watched, shown};
use crate::budget::Boards;
use crate::clusters::Clusters;
use crate::config::Config;
use crate::maintenance::Maintenance;
use crate::poller::{AuroraCopies, Command, Looked, Poller};
use crate::reload::ReloadPlan;
use crate::snapshot::Snapshot;

/// What every target's poller shares.
#[derive(Debug, Clone)]
pub struct Pollers {
    /// The parent of every poller's stop token.
    pub stop: CancellationToken,
    /// Cancelled if a poller stops on its own.
    pub died: CancellationToken,
    /// The pools' depool budgets (`keep_up`).
    pub boards: Arc<Boards>,
    /// Aurora writers' copies of `replica_host_status`, for their readers.
    pub aurora: Arc<AuroraCopies>,
    /// The fleet's clusters, which every target publishes to and takes its
    /// place from.
    pub clusters: Arc<Clusters>,
    /// Whether requests name targets (budgets apply only then).
    pub named: bool,
}

/// One target's poller, running.
#[derive(Debug)]
pub struct Running {
    pub current: Reload,
    pub watched: Watched,
    commands: mpsc::Sender<Command>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// A target whose server has been read once, and whose verdicts are not
/// decided yet: every target starting together is read before any
/// decides, so that the first places are taken from the whole topology.
#[derive(Debug)]
pub struct Starting {
    name: String,
    reload: Reload,
    poller: Poller,
    looked: Looked,
    kept: Option<Maintenance>,
    phase: Duration,
}

impl Starting {
    /// Reads `name`'s server once (and the HTTP switch it kept).
    pub async fn look(
        name: String,
        (config, secrets): Reload,
        pollers: &Pollers,
        phase: Duration,
    ) -> Starting {
        let mut poller = Poller::new(&config, &secrets);
        if pollers.named {
            poller.join_budget(&name, Arc::clone(&pollers.boards), config.member_of.clone());
            poller.share_aurora(&name, Arc::clone(&pollers.aurora));
            poller.join_clusters(&name, Arc::clone(&pollers.clusters));
        }
        let kept = kept_switch(&config).await;
        let looked = poller.look(kept.as_ref()).await;
        Starting {
            name,
            reload: (config, secrets),
            poller,
            looked,
            kept,
            phase,
        }
    }
}

impl Running {
    /// Decides `starting`'s first verdicts and publishes them, then keeps
    /// polling it on a task of its own. `died` is cancelled if the poller
    /// ever stops before `stop`.
    pub fn start(starting: Starting, pollers: &Pollers) -> Running {
        let Starting {
            name,
            reload: (config, secrets),
            mut poller,
            looked,
            kept,
            phase,
        } = starting;
        let (stop, died) = (pollers.stop.child_token(), pollers.died.clone());
        let server = poller.target().to_owned();
        let first = poller.decide(looked);
        log_first(&name, &first);
        poller.record(None, &first);
        let (publish, snapshots) = watch::channel(Arc::new(first));
        let (switch, switch_changes) = watch::channel::<Option<Maintenance>>(kept);
        let (commands, queue) = mpsc::channel(4);
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let _alarm = Alarm {
                    stop: stop.clone(),
                    died,
                    name,
                };
                poller
                    .run(publish, switch_changes, queue, stop, phase)
                    .await;
            })
        };
        Running {
            current: (config, secrets),
            watched: Watched {
                snapshots,
                switch: Arc::new(switch),
                server,
            },
            commands,
            stop,
            task,
        }
    }

    /// Has the poller apply `next` by its plan, poll and publish; `false`
    /// if the poller is gone or `shutdown` came first.
    pub async fn reconfigure(&mut self, next: Reload, shutdown: &CancellationToken) -> bool {
        let plan = ReloadPlan::between((&self.current.0, &self.current.1), (&next.0, &next.1));
        self.current = next.clone();
        let (applied, published) = oneshot::channel();
        let command = Command::Reconfigure(Box::new(next), plan, applied);
        self.commands.send(command).await.is_ok()
            && tokio::select! {
                done = published => done.is_ok(),
                _ = shutdown.cancelled() => false,
            }
    }

    /// Stops the poller (which closes its connection); its task to wait on.
    pub fn stop(self) -> JoinHandle<()> {
        self.stop.cancel();
        self.task
    }
}

/// Cancels `died` when a poller's task ends (or panics) before `stop`.
struct Alarm {
    stop: CancellationToken,
    died: CancellationToken,
    name: String,
}

impl Drop for Alarm {
    fn drop(&mut self) {
        if !self.stop.is_cancelled() {
            error!("the poller of {} stopped unexpectedly", shown(&self.name));
            self.died.cancel();
        }
    }
}

/// Where a target's first poll starts within the interval: spread by the
/// target's place among `count`, so a thousand pollers do not all poll at
/// the same instant.
pub fn phase(place: usize, count: usize, interval: Duration) -> Duration {
    if count <= 1 {
        return Duration::ZERO;
    }
    interval.mul_f64(place as f64 / count as f64)
}

/// Starts every target of `targets` at once: every server read in
/// parallel, then each target's first verdicts decided from all of them.
pub async fn start_all(
    targets: BTreeMap<String, Reload>,
    pollers: &Pollers,
) -> BTreeMap<String, Running> {
    let count = targets.len();
    let mut looking = JoinSet::new();
    for (place, (name, reload)) in targets.into_iter().enumerate() {
        let phase = phase(place, count, reload.0.poll.interval);
        let pollers = pollers.clone();
        looking.spawn(async move { Starting::look(name, reload, &pollers, phase).await });
    }
    let mut read = Vec::with_capacity(count);
    while let Some(done) = looking.join_next().await {
        match done {
            Ok(starting) => read.push(starting),
            Err(err) => error!("a target failed to start: {err}"),
        }
    }
    (read.into_iter())
        .map(|starting| (starting.name.clone(), Running::start(starting, pollers)))
        .collect()
}

/// What changes between two target sets.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    pub fn between(old: &BTreeMap<String, Running>, new: &BTreeMap<String, Reload>) -> Changes {
        let mut changes = Changes::default();
        for (name, next) in new {
            match old.get(name) {
                None => changes.added.push(name.clone()),
                Some(running) if running.current != *next => changes.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        changes.removed = (old.keys())
            .filter(|name| !new.contains_key(*name))
            .cloned()
            .collect();
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Applies `next` to the running targets: removed ones stop (closing their
/// connection), changed ones reconfigure (a new server reconnects), added
/// ones start. Returns the stopped pollers' tasks.
pub async fn apply(
    running: &mut BTreeMap<String, Running>,
    mut next: BTreeMap<String, Reload>,
    pollers: &Pollers,
) -> Vec<JoinHandle<()>> {
    let changes = Changes::between(running, &next);
    if !changes.is_empty() {
        info!(
            "targets: {} added, {} removed, {} changed",
            changes.added.len(),
            changes.removed.len(),
            changes.changed.len()
        );
    }
    let mut stopped = Vec::new();
    for name in &changes.removed {
        if let Some(gone) = running.remove(name) {
            info!("target {}: no longer watched", shown(name));
            stopped.push(gone.stop());
            pollers.boards.forget(name);
            pollers.aurora.forget(name);
            pollers.clusters.forget(name);
        }
    }
    for name in &changes.changed {
        let (Some(target), Some(reload)) = (running.get_mut(name), next.remove(name)) else {
            continue;
        };
        if !target.reconfigure(reload, &pollers.stop).await {
            warn!("target {}: new configuration not applied", shown(name));
        }
    }
    let added: BTreeMap<String, Reload> = (changes.added.iter())
        .filter_map(|name| Some((name.clone(), next.remove(name)?)))
        .collect();
    for name in added.keys() {
        info!("target {}: now watched", shown(name));
    }
    running.extend(start_all(added, pollers).await);
    stopped
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
    let kept = crate::files::blocking_within(STATE_READ_LIMIT, reading)
        .await
        .unwrap_or_else(|| {
            Some(Maintenance::state_unreadable(
                &path,
                format!("not read within {}", crate::config::show(STATE_READ_LIMIT)),
            ))
        });
    if let Some(on) = &kept {
        info!(
            "maintenance on ({}): {}",
            on.source,
            crate::answer::Answer::maintenance(on).text()
        );
    }
    kept
}

fn log_first(name: &str, first: &Snapshot) {
    let of = match name {
        SINGLE => String::new(),
        name => format!("{name} "),
    };
    for pool in first.every_pool() {
        info!(
            "first verdict for {of}{}: {}",
            pool.label(),
            pool.decision.verdict
        );
    }
    if let Err(err) = &first.observation.result {
        info!(
            "first poll of {} failed: {}",
            shown(name),
            crate::logs::escaped(&err.to_string())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_polls_are_spread_over_the_interval() {
        let interval = Duration::from_secs(1);
        assert_eq!(phase(0, 1, interval), Duration::ZERO);
        let phases: Vec<Duration> = (0..4).map(|i| phase(i, 4, interval)).collect();
        assert_eq!(
            phases,
            [0, 250, 500, 750].map(Duration::from_millis).to_vec()
        );
        assert!(phase(999, 1000, interval) < interval);
    }
}
