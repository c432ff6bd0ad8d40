//! The one writer. Polls MySQL once per interval, whatever the check rate,
//! turns each observation into verdicts (one per pool) and publishes an
//! immutable [`Snapshot`] on a `watch` channel. Readers (agent, HTTP) clone
//! the `Arc` and never wait on MySQL.
//!
//! Besides polling, the poller republishes at once when an operator flips the
//! HTTP maintenance switch, and applies a reloaded configuration between
//! polls, keeping what history still applies.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use log::{debug, info, trace, warn};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::answer::Answer;
use crate::budget::Boards;
use crate::checks::Checks;
use crate::clusters::Clusters;
use crate::config::{Config, PoolName, Role, Secrets};
use crate::health::{Assessment, Assessor};
use crate::history::{History, SharedHistory};
use crate::judge::{Judge, Judgement, Moment};
use crate::maintenance::{FileWatch, Maintenance};
use crate::passwords::PasswordFile;
use crate::policy::{State, Verdict};
use crate::probe::{
    AuroraReplica, AuroraStatus, HeartbeatQuery, HeartbeatRead, Observation, PollError, Probe,
};
use crate::reload::ReloadPlan;
use crate::snapshot::{PollCounters, PollTime, PoolVerdict, ReaderSettings, Snapshot};
use crate::topology::{Facts, SourcesSeen};

/// Commands for the running poller.
#[derive(Debug)]
pub enum Command {
    /// Apply a new, already validated configuration by its plan, poll at
    /// once, publish, then report on the sender: from then on every reader
    /// sees it.
    Reconfigure(Box<(Config, Secrets)>, ReloadPlan, oneshot::Sender<()>),
}

/// Owns the probes and all history; the only code that produces verdicts.
#[derive(Debug)]
pub struct Poller {
    config: Config,
    secrets: Secrets,
    probe: Probe,
    /// `lag.primary`: reads the heartbeat writer's own row on the primary.
    primary: Option<Probe>,
    assessor: Assessor,
    /// The decision pipeline and its memory (dampers, warm-ups, the trend).
    judge: Judge,
    /// What the readers answer by, for every snapshot of this configuration.
    settings: Arc<ReaderSettings>,
    last_success: Option<PollTime>,
    polls: PollCounters,
    /// Per pool, so counts survive reloads.
    checks: HashMap<PoolName, Arc<Checks>>,
    unknown_checks: Arc<Checks>,
    /// `mysql.password_file` and `lag.primary.password_file`, watched for rotation.
    password_files: PasswordFiles,
    /// `maintenance.file`, read each poll.
    maintenance_file: Option<FileWatch>,
    /// The last file-based maintenance seen, to log changes once.
    file_maintenance: Option<Maintenance>,
    /// Every published snapshot, recorded; shared with the readers.
    history: SharedHistory,
    /// With targets: this target's name, the pools' depool budgets, and the
    /// pools `member_of` lists.
    budget: Option<(String, Arc<Boards>, Vec<String>)>,
    /// With targets: this target's name, and the Aurora writers' copies of
    /// `replica_host_status` that the targets share.
    aurora: Option<(String, Arc<AuroraCopies>)>,
    /// With targets: this target's name, and the board of the fleet's
    /// clusters it publishes to and takes its place from.
    clusters: Option<(String, Arc<Clusters>)>,
    /// Where the replication channels pointed when last connected.
    sources_seen: SourcesSeen,
}

/// One poll's reading of the server, before any verdict.
#[derive(Debug)]
pub struct Looked {
    observation: Observation,
    assessment: Assessment,
    maintenance: Option<Maintenance>,
}

/// The copies of Aurora's `replica_host_status` that writer targets read,
/// by target. A lagging reader's own copy of the table can lag with it;
/// the writer's does not, so a reader whose cluster's writer is a target
/// too is judged from the writer's copy.
#[derive(Debug, Default)]
pub struct AuroraCopies {
    writers: std::sync::Mutex<BTreeMap<String, (Instant, AuroraStatus)>>,
}

impl AuroraCopies {
    /// Target `name` was polled: keep its copy if it is a writer, or give it
    /// a writer's fresh copy that lists it if it is a reader.
    pub fn share(&self, name: &str, observation: &mut Observation, fresh_within: Duration) {
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        let Ok(status) = &mut observation.result else {
            return;
        };
        let Some(aurora) = &mut status.aurora else {
            writers.remove(name);
            return;
        };
        if !status.read_only {
            writers.insert(name.to_owned(), (observation.at, aurora.clone()));
            return;
        }
        writers.remove(name);
        let own = aurora.server_id.as_str();
        let copy = (writers.iter())
            .filter(|(_, (at, _))| observation.at.saturating_duration_since(*at) <= fresh_within)
            .find(|(_, (_, copy))| copy.rows.iter().any(|row| row.server_id == own));
        if let Some((writer, (at, copy))) = copy {
            // Ages were taken when the writer was read: older by now.
            let since = observation.at.saturating_duration_since(*at);
            aurora.rows = (copy.rows.iter())
                .map(|row| AuroraReplica {
                    updated: row.updated.map(|age| age + since),
                    ..row.clone()
                })
                .collect();
            aurora.copy_of = Some(writer.clone());
        }
    }

    /// Target `name` is no longer watched.
    pub fn forget(&self, name: &str) {
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        writers.remove(name);
    }
}

impl Poller {
    pub fn new(config: &Config, secrets: &Secrets) -> Poller {
        Poller {
            config: config.clone(),
            secrets: secrets.clone(),
            probe: build_probe(config, secrets),
            primary: build_primary_probe(config, secrets),
            assessor: Assessor::new(&config.lag),
            judge: Judge::new(config),
            settings: Arc::new(ReaderSettings::of(config)),
            last_success: None,
            polls: PollCounters::default(),
            checks: HashMap::new(),
            unknown_checks: Arc::default(),
            password_files: PasswordFiles::of(config),
            maintenance_file: config.maintenance.file.clone().map(FileWatch::new),
            file_maintenance: None,
            history: History::shared(config.history.keep, config.poll.interval),
            budget: None,
            aurora: None,
            clusters: None,
            sources_seen: SourcesSeen::default(),
        }
    }

    /// Makes this poller target `name` of a fleet whose clusters `clusters`
    /// works out: it publishes its server there, and takes its place.
    pub fn join_clusters(&mut self, name: &str, clusters: Arc<Clusters>) {
        self.clusters = Some((name.to_owned(), clusters));
    }

    /// Makes this poller target `name` of a fleet that shares Aurora
    /// writers' copies of `replica_host_status`.
    pub fn share_aurora(&mut self, name: &str, copies: Arc<AuroraCopies>) {
        self.aurora = Some((name.to_owned(), copies));
    }

    /// Makes this poller target `name` of a fleet whose pools may have a
    /// depool budget (`keep_up`); `member_of` lists the pools it belongs to
    /// whether HAProxy asks or not.
    pub fn join_budget(&mut self, name: &str, boards: Arc<Boards>, member_of: Vec<String>) {
        self.budget = Some((name.to_owned(), boards, member_of));
    }

    /// Each pool's answer under its budget, if it has one: a target that
    /// lag alone would take out may be kept up.
    fn apply_budget(&self, pools: &mut [PoolVerdict], now: Instant) {
        let Some((name, boards, member_of)) = &self.budget else {
            return;
        };
        for pool in pools {
            let PoolName::Named(pool_name) = &pool.name else {
                continue;
            };
            if !boards.has(pool_name) {
                continue;
            }
            let asked = (pool.checks.peers(now).iter()).any(|peer| !peer.is_silent(now));
            let member = asked || member_of.contains(pool_name);
            let standing = (now, self.config.poll.stale_after);
            if let Some(kept) = boards.publish(pool_name, (name, member), &pool.answer, standing) {
                pool.answer = kept;
            }
        }
    }

    /// `user@host:port` of the watched server.
    pub fn target(&self) -> &str {
        self.probe.target()
    }

    /// Polls once and decides, for the default policy and every pool.
    /// Bounded by the probes' timeouts.
    pub async fn poll(&mut self, http_maintenance: Option<&Maintenance>) -> Snapshot {
        let looked = self.look(http_maintenance).await;
        self.decide(looked)
    }

    /// Reads the server once and publishes what it is to the fleet's
    /// clusters: everything a poll does but the verdicts. Bounded by the
    /// probes' timeouts.
    pub async fn look(&mut self, http_maintenance: Option<&Maintenance>) -> Looked {
        self.rotate_passwords().await;
        let (mut observation, primary) = self.observe().await;
        if let Some((name, copies)) = &self.aurora {
            // A writer read within two intervals (and a second) is fresh.
            let fresh_within = self.config.poll.interval * 2 + Duration::from_secs(1);
            copies.share(name, &mut observation, fresh_within);
        }
        self.count(&observation);
        let assessment = self.assessor.assess(&observation, primary.as_ref());
        let from_file = self.read_maintenance_file().await;
        let maintenance = http_maintenance.cloned().or(from_file);
        if let Some(writer_checks) = self.clusters.is_some().then(|| self.writer_checks())
            && let Some((name, clusters)) = &self.clusters
        {
            let facts = Facts::of(&observation, &assessment, &mut self.sources_seen);
            let cluster = self.config.cluster.as_deref();
            let standing = (observation.at, self.config.poll.stale_after);
            clusters.publish(name, cluster, facts, writer_checks, standing);
        }
        Looked {
            observation,
            assessment,
            maintenance,
        }
    }

    /// The checks of the pools that take writes (`role: primary`): the
    /// clusters' board reads from them who was told what.
    fn writer_checks(&mut self) -> Vec<Arc<Checks>> {
        (self.config.policies().into_iter())
            .filter(|(_, policy)| policy.role == Role::Primary)
            .map(|(name, _)| Arc::clone(self.checks.entry(name).or_default()))
            .collect()
    }

    /// Every pool's verdict for what `look` read, with the target's place
    /// in its cluster as it stands now.
    pub fn decide(&mut self, looked: Looked) -> Snapshot {
        let Looked {
            observation,
            assessment,
            maintenance,
        } = looked;
        let placed = (self.clusters.as_ref())
            .and_then(|(name, clusters)| clusters.place(name, Instant::now()));
        let moment = Moment {
            at: observation.at,
            uptime: (observation.result.as_ref().ok()).and_then(|status| status.uptime),
            maintenance: maintenance.as_ref(),
            place: placed.as_ref().map(|placed| &placed.place),
        };
        let judged = self.judge.judge(&assessment, moment);
        let trend = judged.trend;
        let mut pools: Vec<PoolVerdict> = (judged.pools.into_iter())
            .map(|judgement| self.pool_verdict(judgement))
            .collect();
        self.apply_budget(&mut pools, observation.at);
        let default = pools.remove(0);
        debug!(
            "poll took {:?}: {} -> {}",
            observation.duration,
            match &observation.result {
                Ok(status) => format!("{} channel(s)", status.channels.len()),
                Err(err) => crate::logs::escaped(&err.to_string()),
            },
            default.decision.verdict
        );
        trace!("observation {observation:?}; assessment {assessment:?}");
        Snapshot {
            maintenance,
            observation,
            assessment,
            default,
            pools,
            last_success: self.last_success,
            settings: Arc::clone(&self.settings),
            polls: self.polls.clone(),
            unknown_checks: Arc::clone(&self.unknown_checks),
            history: Arc::clone(&self.history),
            trend,
            placed,
        }
    }

    /// Reads the watched server, and the primary's heartbeat row alongside
    /// when `lag.primary` is set.
    async fn observe(&mut self) -> (Observation, Option<Result<HeartbeatRead, PollError>>) {
        match self.primary.as_mut() {
            Some(primary) => {
                let (observation, primary) =
                    tokio::join!(self.probe.poll(), primary.poll_heartbeat());
                if let Err(err) = &primary {
                    debug!("lag.primary: {}", crate::logs::escaped(&err.to_string()));
                }
                (observation, Some(primary))
            }
            None => (self.probe.poll().await, None),
        }
    }

    /// Counts the poll, and remembers it if it succeeded.
    fn count(&mut self, observation: &Observation) {
        self.polls.polls += 1;
        match &observation.result {
            Ok(_) => {
                self.last_success = Some(PollTime {
                    at: observation.at,
                    wall: observation.wall,
                    duration: observation.duration,
                });
            }
            Err(err) => *self.polls.errors.entry(err.kind()).or_default() += 1,
        }
    }

    /// A pool's judgement, with the counter of the checks it answers.
    fn pool_verdict(&mut self, judgement: Judgement) -> PoolVerdict {
        let checks = Arc::clone(self.checks.entry(judgement.name.clone()).or_default());
        PoolVerdict {
            name: judgement.name,
            role: judgement.role,
            target: judgement.target,
            decision: judgement.decision,
            answer: judgement.answer,
            checks,
        }
    }

    /// The maintenance file, if configured and present. A file that exists
    /// but cannot be read still means maintenance: the operator's intent is
    /// clear, only the reason is lost.
    async fn read_maintenance_file(&mut self) -> Option<Maintenance> {
        let watch = self.maintenance_file.as_mut()?;
        let found = watch.read().await;
        if found != self.file_maintenance {
            match &found {
                Some(m) => info!(
                    "maintenance on ({}): {}",
                    m.source,
                    Answer::maintenance(m).text()
                ),
                None => info!("maintenance off: {} removed", watch.path().display()),
            }
            self.file_maintenance = found.clone();
        }
        found
    }

    /// Picks up a rotated password file: a new password gets a new pool,
    /// so the next login uses it.
    async fn rotate_passwords(&mut self) {
        if let Some(file) = self.password_files.mysql.as_mut()
            && let Some(password) = file
                .rotated(self.secrets.mysql.as_ref(), self.probe.password_rejected())
                .await
        {
            self.secrets.mysql = Some(password);
            let old = std::mem::replace(&mut self.probe, build_probe(&self.config, &self.secrets));
            tokio::spawn(old.disconnect(Duration::from_secs(1)));
        }
        let primary_rejected = self.primary.as_ref().is_some_and(Probe::password_rejected);
        if let Some(file) = self.password_files.primary.as_mut()
            && let Some(password) = file
                .rotated(self.secrets.primary.as_ref(), primary_rejected)
                .await
        {
            self.secrets.primary = Some(password);
            if let Some(old) = std::mem::replace(
                &mut self.primary,
                build_primary_probe(&self.config, &self.secrets),
            ) {
                tokio::spawn(old.disconnect(Duration::from_secs(1)));
            }
        }
    }

    /// Applies a new configuration, keeping the history that still applies:
    /// what `plan` says changed is rebuilt, nothing else.
    fn reconfigure(&mut self, config: Config, secrets: Secrets, plan: ReloadPlan) {
        self.config = config;
        self.secrets = secrets;
        let (config, secrets) = (&self.config, &self.secrets);
        if plan.new_probe() {
            let old = std::mem::replace(&mut self.probe, build_probe(config, secrets));
            tokio::spawn(old.disconnect(Duration::from_secs(1)));
        }
        if plan.primary
            && let Some(old) =
                std::mem::replace(&mut self.primary, build_primary_probe(config, secrets))
        {
            tokio::spawn(old.disconnect(Duration::from_secs(1)));
        }
        if plan.forgets_lag() {
            self.assessor = Assessor::new(&config.lag);
        }
        if plan.target {
            self.last_success = None;
        }
        if plan.history {
            let mut history = self
                .history
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            history.resize(config.history.keep, config.poll.interval);
        }
        if plan.maintenance_file {
            self.maintenance_file = config.maintenance.file.clone().map(FileWatch::new);
        }
        self.password_files = PasswordFiles::of(config);
        self.judge.reconfigure(config, plan.forgets_lag());
        self.settings = Arc::new(ReaderSettings::of(config));
        info!(
            "configuration reloaded: watching {}, pools [{}]",
            self.probe.target(),
            self.config
                .pools
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    /// Polls every interval and publishes each snapshot until `shutdown`,
    /// then closes the MySQL pools. Republishes at once when the HTTP
    /// maintenance switch changes, and re-polls at once after a reload.
    pub async fn run(
        mut self,
        publish: watch::Sender<Arc<Snapshot>>,
        mut maintenance: watch::Receiver<Option<Maintenance>>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
        phase: Duration,
    ) {
        let mut ticker = poll_ticker(self.config.poll.interval, phase);
        let mut switch_open = true;
        loop {
            // A snapshot to publish, and whom to tell once it is published.
            let (snapshot, applied) = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    let switch = maintenance.borrow().clone();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        snapshot = self.poll(switch.as_ref()) => (snapshot, None),
                    }
                }
                changed = maintenance.changed(), if switch_open => {
                    if changed.is_err() {
                        // The switch's sender is gone (shutting down): stop listening.
                        switch_open = false;
                        continue;
                    }
                    let switch = maintenance.borrow_and_update().clone();
                    match &switch {
                        Some(m) => info!("maintenance on ({}): {}", m.source, Answer::maintenance(m).text()),
                        None => info!("maintenance off (DELETE /maintenance)"),
                    }
                    let file = self.file_maintenance.clone();
                    match switch.or(file) {
                        Some(on) => (publish.borrow().with_maintenance(Some(on)), None),
                        // Back to the measured verdict: poll for it, so that a
                        // warm-up (ramp_up) starts now rather than at the next tick.
                        None => tokio::select! {
                            _ = shutdown.cancelled() => break,
                            snapshot = self.poll(None) => (snapshot, None),
                        },
                    }
                }
                Some(command) = commands.recv() => {
                    let Command::Reconfigure(boxed, plan, applied) = command;
                    let (config, secrets) = *boxed;
                    self.reconfigure(config, secrets, plan);
                    ticker = poll_ticker(self.config.poll.interval, phase);
                    let switch = maintenance.borrow().clone();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        snapshot = self.poll(switch.as_ref()) => (snapshot, Some(applied)),
                    }
                }
            };
            log_transitions(&publish.borrow(), &snapshot);
            self.record(Some(&publish.borrow()), &snapshot);
            publish.send_replace(Arc::new(snapshot));
            if let Some(applied) = applied {
                // The reload waits for this before opening new listeners.
                let _ = applied.send(());
            }
        }
        self.close().await;
    }

    /// Keeps `snapshot` in the history, with the verdict changes since `old`.
    pub fn record(&self, old: Option<&Snapshot>, snapshot: &Snapshot) {
        // Poisoned only by a panic while recording: the history is still whole.
        let mut history = self
            .history
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        history.record(old.map(Snapshot::as_poll).as_ref(), &snapshot.as_poll());
    }

    /// Closes the MySQL pools, waiting at most half a second.
    pub async fn close(self) {
        let limit = Duration::from_millis(500);
        match self.primary {
            Some(primary) => {
                tokio::join!(self.probe.disconnect(limit), primary.disconnect(limit));
            }
            None => self.probe.disconnect(limit).await,
        }
    }
}

/// One tick per interval; a slow poll delays the next one instead of
/// bunching polls up after it. The first tick comes after one interval.
/// Ticks every `interval`, the first `phase` later than that: a fleet's
/// targets poll at their own places in the interval, not all at once.
fn poll_ticker(interval: Duration, phase: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval + phase, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

/// The password files a configuration reads.
#[derive(Debug)]
struct PasswordFiles {
    mysql: Option<PasswordFile>,
    primary: Option<PasswordFile>,
}

impl PasswordFiles {
    fn of(config: &Config) -> PasswordFiles {
        PasswordFiles {
            mysql: config
                .mysql
                .password_file
                .clone()
                .map(|path| PasswordFile::new("mysql.password_file", path)),
            primary: config
                .lag
                .primary
                .as_ref()
                .and_then(|primary| primary.password_file.clone())
                .map(|path| PasswordFile::new("lag.primary.password_file", path)),
        }
    }
}

fn build_probe(config: &Config, secrets: &Secrets) -> Probe {
    Probe::new(&config.mysql, secrets.mysql.as_ref())
        .with_uptime(crate::reload::warms_up(config))
        .with_heartbeat(
            config
                .lag
                .reads_heartbeat()
                .then(|| HeartbeatQuery::new(&config.lag)),
        )
        .with_load(config.load.is_some())
        .with_applier(config.lag.reads_applier())
}

fn build_primary_probe(config: &Config, secrets: &Secrets) -> Option<Probe> {
    let primary = config.lag.primary.as_ref()?;
    Some(
        Probe::new(primary, secrets.primary.as_ref())
            .with_heartbeat(Some(HeartbeatQuery::new(&config.lag))),
    )
}

/// Logs each pool's verdict changes once.
fn log_transitions(old: &Snapshot, new: &Snapshot) {
    for after in new.every_pool() {
        if let Some(before) = old.every_pool().find(|p| p.name == after.name) {
            log_transition(
                &before.name,
                &before.decision.verdict,
                after,
                &new.observation,
            );
        }
    }
}

/// Logs a verdict change once: a new state or weight, or a down whose kind of
/// reason changed. Lag figures and recovery counts changing are not news.
fn log_transition(pool: &PoolName, old: &Verdict, new: &PoolVerdict, observation: &Observation) {
    let verdict = &new.decision.verdict;
    let news = old.state != verdict.state
        || (verdict.state == State::Down && !old.reason.same_kind(&verdict.reason));
    if !news {
        return;
    }
    // The error's text is the server's or the driver's: escaped, so a
    // newline in it cannot forge a log line.
    let detail = match &observation.result {
        Err(err) => format!(" ({})", crate::logs::escaped(&err.to_string())),
        Ok(_) => String::new(),
    };
    let which = match pool {
        PoolName::Default => "verdict".to_owned(),
        PoolName::Named(name) => format!("pool {name}:"),
    };
    if verdict.state < old.state {
        warn!("{which} {old} -> {verdict}{detail}");
    } else {
        info!("{which} {old} -> {verdict}{detail}");
    }
}
