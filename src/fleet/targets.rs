//! The targets watched, owned in one place: started, published to the
//! readers, changed by a reload or by the targets file (admitted or held
//! back, see [`super::file`]), and stopped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use log::{error, info};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::file::{Admission, FileRead, admit};
use super::running::{Pollers, Running, apply};
use super::{FileState, Fleet, Reload, view};
use crate::config::{Config, ConfigError};
use crate::snapshot::ReaderSettings;

/// The targets watched, and what the readers are shown of them.
pub struct Targets {
    running: BTreeMap<String, Running>,
    publish: watch::Sender<Arc<Fleet>>,
    /// How the last read of `targets_file` went.
    file: Option<FileState>,
    pollers: Pollers,
    /// Watches `targets_file`, when there is one.
    watcher: Option<(CancellationToken, JoinHandle<()>)>,
    changes: mpsc::Sender<FileRead>,
    /// A read of the targets file held back, and since when the file has
    /// read the same.
    held: Option<(BTreeMap<String, Reload>, Instant)>,
}

/// Reads of the targets file, as the watcher sends them.
pub type FileReads = mpsc::Receiver<FileRead>;

impl Targets {
    /// The targets `running` under `current`, published, with the targets
    /// file watched; the receiver gets each read of that file.
    pub fn start(
        running: BTreeMap<String, Running>,
        pollers: Pollers,
        current: &Reload,
    ) -> (Targets, FileReads) {
        let config = &current.0;
        let (publish, _) = watch::channel(Arc::new(view(
            &running,
            &pollers,
            Arc::new(ReaderSettings::of(config)),
            None,
        )));
        let (changes, reads) = mpsc::channel(1);
        let mut targets = Targets {
            running,
            publish,
            file: None,
            pollers,
            watcher: None,
            changes,
            held: None,
        };
        targets.file_read(config, None, None);
        targets.publish(config);
        targets.watch_file(current);
        (targets, reads)
    }

    /// What the readers read, from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Fleet>> {
        self.publish.subscribe()
    }

    /// Shows the readers the targets running now under `config`.
    fn publish(&self, config: &Config) {
        let settings = Arc::new(ReaderSettings::of(config));
        let fleet = view(&self.running, &self.pollers, settings, self.file.clone());
        self.publish.send_replace(Arc::new(fleet));
    }

    /// Runs `next` (a reload, or an admitted read of the targets file);
    /// stopped pollers are left to finish on their own. Cancel-safe: a
    /// target dropped half-started is simply not running.
    pub async fn apply(&mut self, next: BTreeMap<String, Reload>, config: &Config) {
        self.pollers.named = config.has_targets();
        self.pollers.boards.configure(config);
        let stopped = apply(&mut self.running, next, &self.pollers).await;
        self.publish(config);
        drop(stopped);
    }

    /// A reload: `next`'s targets, read by the operator's word, so nothing
    /// is held back; `config`'s targets file watched from now on.
    pub async fn reload(&mut self, next: BTreeMap<String, Reload>, current: &Reload) {
        self.held = None;
        self.file_read(&current.0, None, None);
        self.apply(next, &current.0).await;
        self.watch_file(current);
    }

    /// Targets that cannot be read (`wanted`'s): the old set stays under
    /// `current`, and says so.
    pub fn refuse(&mut self, err: &ConfigError, wanted: &Config, current: &Config) {
        error!(
            "targets not changed, still watching {}: {err}",
            self.running.len()
        );
        self.file_read(wanted, Some(err.to_string()), None);
        self.publish(current);
    }

    /// A read of the targets file: applied, held back, or refused.
    pub async fn file_changed(&mut self, read: FileRead, config: &Config) {
        match read {
            Ok(targets) => {
                self.held = Some((targets, Instant::now()));
                self.admit_held(config).await;
            }
            Err(err) => {
                self.held = None;
                self.refuse(&err, config, config);
            }
        }
    }

    /// When a read held back may be admitted, the file having read the
    /// same since: `None` while nothing is held.
    pub fn hold_ends(&self, config: &Config) -> Option<Instant> {
        let (_, since) = self.held.as_ref()?;
        Some(*since + config.fleet.removal_hold)
    }

    /// Looks again at the read held back (the file has not changed since).
    pub async fn admit_held(&mut self, config: &Config) {
        let Some((read, since)) = self.held.take() else {
            return;
        };
        let admission = admit(
            self.running.keys(),
            &read,
            config.targets.len(),
            &config.fleet,
            since.elapsed(),
        );
        match admission {
            Admission::Apply => {
                self.file_read(config, None, None);
                self.apply(read, config).await;
            }
            Admission::Hold(why) => {
                info!("targets_file held back: {why}");
                self.file_read(config, None, Some(why));
                self.publish(config);
                // Nothing changes by waiting for a file that lists none.
                if read.len() > config.targets.len() {
                    self.held = Some((read, since));
                }
            }
        }
    }

    fn file_read(&mut self, config: &Config, error: Option<String>, held: Option<String>) {
        self.file = config.targets_file.clone().map(|path| FileState {
            path,
            error,
            held,
            at: SystemTime::now(),
        });
    }

    /// Watches `config`'s targets file, in place of any earlier watcher.
    pub fn watch_file(&mut self, (config, secrets): &Reload) {
        if let Some((stop, _)) = self.watcher.take() {
            stop.cancel();
        }
        if config.targets_file.is_none() {
            return;
        }
        let stop = self.pollers.stop.child_token();
        let task = tokio::spawn(super::file::watch(
            config.clone(),
            secrets.clone(),
            self.changes.clone(),
            stop.clone(),
        ));
        self.watcher = Some((stop, task));
    }

    /// Stops every poller and the watcher; the tasks to wait on.
    pub fn stop(self) -> Vec<JoinHandle<()>> {
        self.pollers.stop.cancel();
        let watcher = self.watcher.map(|(_, task)| task);
        (self.running.into_values())
            .map(Running::stop)
            .chain(watcher)
            .collect()
    }
}
