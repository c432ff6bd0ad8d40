//! Reading the files an operator points remora at (configuration, password,
//! token, maintenance) so that no file can hang or exhaust it: only regular
//! files, opened without blocking (a FIFO would otherwise wait for a writer
//! forever), and at most a bounded number of bytes.

use std::io::{self, Read};
use std::path::Path;

/// Reads up to `limit` bytes of the regular file at `path`. Returns what was
/// read and whether the file holds more.
pub fn read_regular(path: &Path, limit: usize) -> io::Result<(Vec<u8>, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    let more = bytes.len() > limit;
    bytes.truncate(limit);
    Ok((bytes, more))
}

/// A few words for why a file could not be read, without the path (the
/// caller names it where that is safe to show).
pub fn phrase(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => "no such file".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::InvalidInput => "not a regular file".to_owned(),
        _ => match err.raw_os_error() {
            Some(libc::ELOOP) => "a symlink loop".to_owned(),
            _ => err.kind().to_string(),
        },
    }
}

/// Runs `work` (blocking file work: a read, or the state file's write) on
/// the blocking pool and waits at most `limit` for it. `None` when it did
/// not finish in time (it is left to finish in the background) or failed
/// outright; the async workers never block on a file.
pub async fn blocking_within<T: Send + 'static>(
    limit: std::time::Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    tokio::time::timeout(limit, tokio::task::spawn_blocking(work))
        .await
        .ok()?
        .ok()
}

/// Blocking file work repeated over time (a file read every poll) that runs
/// one at a time: a read still hung from an earlier turn is waited for
/// again instead of starting another, so a hung mount holds one blocking
/// thread, not one more per poll.
#[derive(Debug)]
pub struct OneAtATime<T> {
    pending: Option<tokio::task::JoinHandle<T>>,
}

impl<T> Default for OneAtATime<T> {
    fn default() -> Self {
        OneAtATime { pending: None }
    }
}

impl<T: Send + 'static> OneAtATime<T> {
    /// `read`'s outcome within `limit` (or a hung earlier read's, should it
    /// finish now); `None` when nothing finished in time.
    pub async fn run(
        &mut self,
        limit: std::time::Duration,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let mut task = self
            .pending
            .take()
            .unwrap_or_else(|| tokio::task::spawn_blocking(read));
        match tokio::time::timeout(limit, &mut task).await {
            Ok(done) => done.ok(),
            Err(_) => {
                self.pending = Some(task);
                None
            }
        }
    }
}

/// What a file is now, without reading it: a file replaced (an atomic
/// rename, a symlink swapped the way Kubernetes updates a Secret) or
/// rewritten shows a different fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

/// The fingerprint of the file `path` leads to (symlinks followed), or
/// `None` when there is none.
pub fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        device: metadata.dev(),
        inode: metadata.ino(),
        len: metadata.len(),
        modified: metadata.modified().ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read_and_only_so_much() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("file");
        std::fs::write(&file, "abcdef").expect("write");
        assert_eq!(
            read_regular(&file, 6).expect("read"),
            (b"abcdef".to_vec(), false)
        );
        assert_eq!(
            read_regular(&file, 4).expect("read"),
            (b"abcd".to_vec(), true)
        );
        let err = read_regular(dir.path(), 4).expect_err("a directory");
        assert_eq!(phrase(&err), "not a regular file");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.expect("mkfifo runs").success());
        // Without O_NONBLOCK this open would wait for a writer forever.
        let err = read_regular(&fifo, 4).expect_err("a FIFO");
        assert_eq!(phrase(&err), "not a regular file");
        let err = read_regular(&dir.path().join("absent"), 4).expect_err("absent");
        assert_eq!(phrase(&err), "no such file");
    }

    #[tokio::test]
    async fn a_hung_read_is_waited_for_again_not_started_twice() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let started = Arc::new(AtomicUsize::new(0));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let mut reads = OneAtATime::default();
        let limit = std::time::Duration::from_millis(20);
        let counter = Arc::clone(&started);
        let first = reads.run(limit, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            hold.recv().ok();
            "first"
        });
        assert_eq!(first.await, None, "still hung");
        let counter = Arc::clone(&started);
        let second = reads.run(limit, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            "second"
        });
        assert_eq!(second.await, None, "waits for the hung read again");
        release.send(()).expect("the read waits");
        let third = reads
            .run(std::time::Duration::from_secs(10), || "third")
            .await;
        assert_eq!(third, Some("first"), "the hung read's own outcome");
        assert_eq!(started.load(Ordering::SeqCst), 1, "never two at once");
        assert_eq!(reads.run(limit, || "fourth").await, Some("fourth"));
    }

    #[test]
    fn a_swapped_symlink_or_a_rewrite_changes_the_fingerprint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (first, second, link) = (
            dir.path().join("first"),
            dir.path().join("second"),
            dir.path().join("link"),
        );
        std::fs::write(&first, "one").expect("write");
        std::fs::write(&second, "two").expect("write");
        std::os::unix::fs::symlink(&first, &link).expect("symlink");
        let before = fingerprint(&link).expect("there");
        assert_eq!(fingerprint(&link), Some(before), "nothing changed");
        let swap = dir.path().join("swap");
        std::os::unix::fs::symlink(&second, &swap).expect("symlink");
        std::fs::rename(&swap, &link).expect("atomic swap");
        let swapped = fingerprint(&link).expect("there");
        assert_ne!(swapped, before);
        std::fs::write(&second, "three").expect("rewrite");
        assert_ne!(fingerprint(&link), Some(swapped));
        assert_eq!(fingerprint(&dir.path().join("absent")), None);
    }
}
