//! The targets file, which something else writes: looked at every
//! [`TARGETS_FILE_CHECK`] (its fingerprint, one look at a time, so a hung
//! mount holds one thread), read whole when it changed, and then admitted
//! or held back ([`admit`]): a read that would take out more targets than
//! `fleet.max_removed` waits until the file has read the same for
//! `fleet.removal_hold`, and a file that lists no target at all waits for
//! the operator's reload. A template engine caught writing in place, or a
//! half-copied file, never empties the fleet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::{info, warn};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Reload, resolve_within};
use crate::config::{Config, ConfigError, FleetConfig, Secrets};
use crate::files::{Fingerprint, OneAtATime, fingerprint};

/// How often `targets_file` is looked at for a change.
pub const TARGETS_FILE_CHECK: Duration = Duration::from_secs(2);

/// Longest one look at the file's fingerprint may take.
const LOOK_LIMIT: Duration = Duration::from_secs(1);

/// What a read of the targets file found: every target it leads to (the
/// configuration's own `targets` included), or why it cannot be used.
pub type FileRead = Result<BTreeMap<String, Reload>, ConfigError>;

/// Watches `config`'s `targets_file` and sends what it reads whenever the
/// file changes (renamed over, rewritten, removed).
pub async fn watch(
    config: Config,
    secrets: Secrets,
    changed: mpsc::Sender<FileRead>,
    stop: CancellationToken,
) {
    let Some(path) = config.targets_file.clone() else {
        return;
    };
    let mut looks = Looks::new(path.clone(), fingerprint);
    let mut last = looks.look().await.flatten();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TARGETS_FILE_CHECK) => {}
        }
        let Some(now) = looks.look().await else {
            warn!(
                "targets_file {}: not answering within {LOOK_LIMIT:?}; the targets stay",
                path.display()
            );
            continue;
        };
        if now == last {
            continue;
        }
        last = now;
        info!("targets_file {} changed: reading it", path.display());
        let read = resolve_within(&config, &secrets).await;
        if changed.send(read).await.is_err() {
            return;
        }
    }
}

/// Looks at a file's fingerprint off the runtime, under [`LOOK_LIMIT`],
/// one look at a time: a look hung on a dead mount is waited for again
/// rather than joined by another thread every [`TARGETS_FILE_CHECK`].
struct Looks<F> {
    path: PathBuf,
    at: F,
    pending: OneAtATime<Option<Fingerprint>>,
}

impl<F: Fn(&Path) -> Option<Fingerprint> + Clone + Send + 'static> Looks<F> {
    fn new(path: PathBuf, at: F) -> Looks<F> {
        Looks {
            path,
            at,
            pending: OneAtATime::default(),
        }
    }

    /// The fingerprint (`None` inside: no file); `None` when the look did
    /// not finish in time.
    async fn look(&mut self) -> Option<Option<Fingerprint>> {
        let (path, at) = (self.path.clone(), self.at.clone());
        self.pending.run(LOOK_LIMIT, move || at(&path)).await
    }
}

/// What becomes of a read of the targets file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Apply,
    /// Held back: the running targets stay, for this reason.
    Hold(String),
}

/// Whether `read` replaces the targets `running` now, the file having read
/// the same for `unchanged_for`; `inline` of its targets are the
/// configuration's own (`targets`), the rest the file's.
pub fn admit<'a>(
    running: impl ExactSizeIterator<Item = &'a String>,
    read: &BTreeMap<String, Reload>,
    inline: usize,
    fleet: &FleetConfig,
    unchanged_for: Duration,
) -> Admission {
    let count = running.len();
    let removed = running.filter(|name| !read.contains_key(*name)).count();
    if removed == 0 {
        return Admission::Apply;
    }
    let would = format!("would remove {removed} of {count} targets");
    if read.len() <= inline {
        return Admission::Hold(format!(
            "{would}: the file lists none; they stay until a reload (SIGHUP) confirms it"
        ));
    }
    if removed > fleet.removable(count) && unchanged_for < fleet.removal_hold {
        return Admission::Hold(format!(
            "{would}, more than fleet.max_removed ({}): they stay until the file has read the same for {}",
            fleet.max_removed,
            crate::config::show(fleet.removal_hold)
        ));
    }
    Admission::Apply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Share;

    fn targets(names: &[&str]) -> BTreeMap<String, Reload> {
        (names.iter())
            .map(|name| (name.to_string(), Reload::default()))
            .collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn a_read_that_removes_few_is_applied_at_once_and_a_sharp_shrink_waits() {
        let fleet = FleetConfig {
            max_removed: Share::Count(1),
            removal_hold: Duration::from_secs(10),
            ..FleetConfig::default()
        };
        let running = names(&["fixed", "r1", "r2", "r3"]);
        let at = |read: &[&str], unchanged: u64| {
            admit(
                running.iter(),
                &targets(read),
                1,
                &fleet,
                Duration::from_secs(unchanged),
            )
        };
        assert_eq!(
            at(&["fixed", "r1", "r2", "r3", "r4"], 0),
            Admission::Apply,
            "added"
        );
        assert_eq!(
            at(&["fixed", "r1", "r2"], 0),
            Admission::Apply,
            "one removed"
        );
        let Admission::Hold(why) = at(&["fixed", "r1"], 0) else {
            panic!("two removed at once");
        };
        assert!(
            why.starts_with("would remove 2 of 4 targets, more than fleet.max_removed (1)"),
            "{why}"
        );
        assert_eq!(at(&["fixed", "r1"], 9), at(&["fixed", "r1"], 0));
        assert_eq!(
            at(&["fixed", "r1"], 10),
            Admission::Apply,
            "read the same for 10s"
        );
        // A file that lists nothing waits for the operator, however long.
        let Admission::Hold(why) = at(&["fixed"], 3600) else {
            panic!("emptied");
        };
        assert!(why.contains("the file lists none"), "{why}");
        assert!(why.starts_with("would remove 3 of 4 targets"), "{why}");
    }

    #[tokio::test]
    async fn a_look_hung_on_a_dead_mount_holds_one_thread_not_one_a_check() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Barrier};
        let started = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Barrier::new(2));
        let hung = {
            let (started, release) = (Arc::clone(&started), Arc::clone(&release));
            move |_: &Path| {
                started.fetch_add(1, Ordering::SeqCst);
                release.wait();
                None
            }
        };
        let mut looks = Looks::new(PathBuf::from("/mnt/dead/targets.yaml"), hung);
        // Three checks (each waits LOOK_LIMIT for it).
        for _ in 0..3 {
            assert_eq!(looks.look().await, None, "not answering");
        }
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "one thread, waited for again"
        );
        release.wait();
        assert_eq!(looks.look().await, Some(None), "its answer, once it comes");
    }

    #[test]
    fn a_share_counts_the_targets_running() {
        let fleet = FleetConfig::default();
        assert_eq!(fleet.max_removed, Share::Percent(10));
        let running: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
        let keep = |n: usize| {
            let kept: Vec<&str> = running[..n].iter().map(String::as_str).collect();
            admit(running.iter(), &targets(&kept), 0, &fleet, Duration::ZERO)
        };
        assert_eq!(keep(36), Admission::Apply, "4 of 40 is 10%");
        assert!(matches!(keep(35), Admission::Hold(_)), "5 of 40 is more");
        // Nothing running yet: nothing to remove.
        assert_eq!(
            admit([].iter(), &targets(&[]), 0, &fleet, Duration::ZERO),
            Admission::Apply
        );
    }
}
