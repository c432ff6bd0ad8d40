//! Every server remora watches, and how the readers find one.
//!
//! A sidecar watches one server: its [`Fleet`] holds one target, and
//! requests name pools, as they always have. With `targets` (or
//! `targets_file`), remora watches many, each with its own poller, MySQL
//! connection, history and verdicts, and requests name `TARGET/POOL`. The
//! readers (agent, HTTP) hold a `watch` of the fleet and, through it, each
//! target's own `watch` of snapshots: one writer per target, many readers.
//!
//! This room owns the targets from the configuration to the readers:
//! [`resolve`] reads them (the targets file too, capped at
//! `fleet.max_targets`), [`running`] runs their pollers, [`file`] watches
//! the targets file and holds a sharp shrink back, and [`Targets`] owns
//! them all and publishes the [`Fleet`] the readers read.

mod file;
mod running;
mod targets;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::clusters::Clusters;
use crate::config::{Config, ConfigError, Secrets, TargetSections, read_targets_file};
use crate::maintenance::Maintenance;
use crate::snapshot::{ReaderSettings, Snapshot};

pub use file::{Admission, TARGETS_FILE_CHECK, admit};
pub use running::{Changes, Pollers, Running, Starting, phase, start_all};
pub use targets::{FileReads, Targets};

/// The one target of a single-server remora.
pub const SINGLE: &str = "";

/// What the readers read.
#[derive(Debug)]
pub struct Fleet {
    /// Set with `targets`: requests name `TARGET/POOL`. Unset: a single
    /// server, and requests name pools.
    pub named: bool,
    pub targets: BTreeMap<String, Watched>,
    /// The top level's reader settings (listeners, token, timeouts).
    pub settings: Arc<ReaderSettings>,
    /// How the last read of `targets_file` went.
    pub targets_file: Option<FileState>,
    /// With targets: the clusters they make.
    pub clusters: Option<Arc<Clusters>>,
}

/// One target as the readers see it.
#[derive(Debug, Clone)]
pub struct Watched {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Its HTTP maintenance switch.
    pub switch: Arc<watch::Sender<Option<Maintenance>>>,
    /// `user@host:port` of the server it watches.
    pub server: String,
}

/// The last read of `targets_file`.
#[derive(Debug, Clone, PartialEq)]
pub struct FileState {
    pub path: PathBuf,
    /// `None` when it was read and used; otherwise why not (the old set stays).
    pub error: Option<String>,
    /// Read, and held back: why the targets before it stay for now.
    pub held: Option<String>,
    pub at: SystemTime,
}

/// Which target a request is about.
#[derive(Debug, Clone, Copy)]
pub enum Choice<'a> {
    Target(&'a Watched),
    /// A fleet, and the request named no target.
    NoneNamed,
    Unknown,
}

impl Fleet {
    /// The target `name` (or, for a single server, the one whatever is named).
    pub fn choose(&self, name: Option<&str>) -> Choice<'_> {
        if !self.named {
            return (self.targets.get(SINGLE)).map_or(Choice::Unknown, Choice::Target);
        }
        match name {
            None => Choice::NoneNamed,
            Some(name) => self
                .targets
                .get(name)
                .map_or(Choice::Unknown, Choice::Target),
        }
    }
}

/// A target's configuration, with its secrets.
pub type Reload = (Config, Secrets);

/// Every target `config` names, with its secrets: the inline `targets` and
/// `targets_file`'s, no more than `fleet.max_targets`. Blocking (files are
/// read): call it off the runtime.
pub fn resolve(
    config: &Config,
    secrets: &Secrets,
) -> Result<BTreeMap<String, Reload>, ConfigError> {
    if !config.has_targets() {
        let single = (config.clone(), secrets.clone());
        return Ok(BTreeMap::from([(SINGLE.to_owned(), single)]));
    }
    let from_file = match &config.targets_file {
        Some(path) => read_targets_file(path)?,
        None => TargetSections::new(),
    };
    if let Some(path) = &config.targets_file {
        let count = config.targets.len() + from_file.len();
        let source = format!("targets_file {}", path.display());
        config.within_max_targets(count, &source)?;
    }
    let mut all = BTreeMap::new();
    for (name, target) in config.target_configs(&from_file)? {
        let secrets = target
            .secrets()
            .map_err(|err| ConfigError::new(format!("targets.{name}: {err}")))?;
        all.insert(name, (target, secrets));
    }
    Ok(all)
}

/// Longest reading every target (the targets file, password files) may take.
pub const RESOLVE_LIMIT: Duration = Duration::from_secs(5);

/// [`resolve`] off the runtime, under [`RESOLVE_LIMIT`].
pub async fn resolve_within(
    config: &Config,
    secrets: &Secrets,
) -> Result<BTreeMap<String, Reload>, ConfigError> {
    let (config, secrets) = (config.clone(), secrets.clone());
    crate::files::blocking_within(RESOLVE_LIMIT, move || resolve(&config, &secrets))
        .await
        .unwrap_or_else(|| {
            Err(ConfigError::new(format!(
                "targets not read within {}",
                crate::config::show(RESOLVE_LIMIT)
            )))
        })
}

/// The readers' view of `running`, started by `pollers`.
pub fn view(
    running: &BTreeMap<String, Running>,
    pollers: &Pollers,
    settings: Arc<ReaderSettings>,
    targets_file: Option<FileState>,
) -> Fleet {
    Fleet {
        named: pollers.named,
        targets: (running.iter())
            .map(|(name, running)| (name.clone(), running.watched.clone()))
            .collect(),
        settings,
        targets_file,
        clusters: pollers.named.then(|| Arc::clone(&pollers.clusters)),
    }
}

/// A target's name as logs show it.
pub fn shown(name: &str) -> String {
    if name == SINGLE {
        "the server".to_owned()
    } else {
        name.to_owned()
    }
}
