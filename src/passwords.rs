//! Password rotation without a restart. Kubernetes rotates a Secret by
//! swapping the file under the mount (a symlink replaced atomically) and
//! sends no signal, so each poll looks at `password_file`: when the file
//! changed, or the server rejected the password at the last login, it is
//! read again, and a new password gets a new connection pool.
//!
//! Reading happens off the async workers under [`READ_LIMIT`], one read at
//! a time ([`OneAtATime`]): a password file on a hung mount delays nothing.

use std::path::PathBuf;
use std::time::Duration;

use log::{info, warn};

use crate::config::{ConfigError, Secret, read_secret, secret_file};
use crate::files::{Fingerprint, OneAtATime, fingerprint};

/// Longest a look at a password file may take.
const READ_LIMIT: Duration = Duration::from_millis(500);

/// One `password_file`, as last seen.
#[derive(Debug)]
pub struct PasswordFile {
    /// The key that names it: `mysql.password_file`, `lag.primary.password_file`.
    key: &'static str,
    path: PathBuf,
    seen: Option<Fingerprint>,
    reads: OneAtATime<Look>,
}

/// What one look at the file found: its fingerprint, whether it changed,
/// and the password when it was read.
type Look = (
    Option<Fingerprint>,
    bool,
    Option<Result<Secret, ConfigError>>,
);

impl PasswordFile {
    /// Starts watching `path`, whose password was just read.
    pub fn new(key: &'static str, path: PathBuf) -> PasswordFile {
        let seen = fingerprint(&path);
        PasswordFile {
            key,
            path,
            seen,
            reads: OneAtATime::default(),
        }
    }

    /// The password now in the file, if it differs from `current` and the
    /// file changed since last seen (or `rejected`: the server refused
    /// `current`, so the file is read whatever its fingerprint says). An
    /// unchanged file is not read at all, and warned about only when it
    /// changed.
    pub async fn rotated(&mut self, current: Option<&Secret>, rejected: bool) -> Option<Secret> {
        let (key, path, seen) = (self.key, self.path.clone(), self.seen);
        let look = self.reads.run(READ_LIMIT, move || {
            let now = fingerprint(&path);
            let changed = now != seen;
            let read = (changed || rejected).then(|| {
                // The mode was warned about when the file was first read.
                if changed {
                    secret_file(key, &path)
                } else {
                    read_secret(key, &path)
                }
            });
            (now, changed, read)
        });
        let Some((now, changed, read)) = look.await else {
            warn!(
                "{}: not read within {READ_LIMIT:?}; keeping the password",
                self.key
            );
            return None;
        };
        self.seen = now;
        match read? {
            Ok(new) if Some(&new) != current => {
                info!("{} changed: logging in with the new password", self.key);
                Some(new)
            }
            Ok(_) => None,
            Err(err) => {
                if changed {
                    warn!("{err}; keeping the password read before");
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rotated_file_yields_the_new_password_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("password");
        std::fs::write(&path, "first\n").expect("write");
        let first = Secret::new("first");
        let mut file = PasswordFile::new("mysql.password_file", path.clone());
        assert_eq!(file.rotated(Some(&first), false).await, None, "unchanged");
        assert_eq!(
            file.rotated(Some(&first), true).await,
            None,
            "same password"
        );

        // The Kubernetes way: a new file, then an atomic swap.
        let next = dir.path().join("next");
        std::fs::write(&next, "second\n").expect("write");
        std::fs::rename(&next, &path).expect("swap");
        let second = file.rotated(Some(&first), false).await;
        assert_eq!(second, Some(Secret::new("second")));
        assert_eq!(file.rotated(second.as_ref(), false).await, None, "once");

        // An emptied file is an error: the old password stays.
        std::fs::write(&path, "").expect("write");
        assert_eq!(file.rotated(second.as_ref(), true).await, None);
    }
}
