//! The operator's switch: while it is on, the agent answers `up drain` (or
//! `up maint`) whatever the measurements say. Two ways to turn it on: a file
//! (`maintenance.file`, survives restarts, checked every poll) and
//! `POST /maintenance` on the HTTP listener (from loopback only; lasts until
//! `DELETE /maintenance`, and across restarts when `maintenance.state_file`
//! keeps it). The HTTP switch wins over the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::files::OneAtATime;

/// Longest maintenance text read, from the file or an HTTP body.
pub const MAX_TEXT: usize = 4096;

/// Longest a maintenance file read may take: a hung network mount or FUSE
/// file must not hold up the poll.
pub const READ_DEADLINE: Duration = Duration::from_millis(500);

crate::labelled! {
    /// What HAProxy should do with the server meanwhile.
    pub enum Mode {
        /// No new connections; established ones continue.
        Drain => "drain",
        /// None at all; HAProxy also pauses its regular check.
        Maint => "maint",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Http,
    /// Set over HTTP before a restart, read back from `maintenance.state_file`.
    Kept(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Http => f.write_str("POST /maintenance"),
            Source::Kept(path) => write!(f, "POST /maintenance, kept in {}", path.display()),
        }
    }
}

/// An operator's intent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    pub mode: Mode,
    pub reason: String,
    pub source: Source,
    /// What the agent line says before the reason: `maintenance`, or
    /// `maintenance file unreadable` when the file's text could not be had.
    headline: &'static str,
}

impl Maintenance {
    /// `"maint kernel upgrade"` → maint with that reason; `"drain"` or any
    /// other first word → drain, the rest (or all of it) as the reason.
    pub fn parse(text: &str, source: Source) -> Maintenance {
        let first_line = text.lines().next().unwrap_or("").trim();
        let (word, rest) = first_line
            .split_once(char::is_whitespace)
            .unwrap_or((first_line, ""));
        let (mode, reason) = if word.eq_ignore_ascii_case("maint") {
            (Mode::Maint, rest.trim())
        } else if word.eq_ignore_ascii_case("drain") {
            (Mode::Drain, rest.trim())
        } else {
            (Mode::Drain, first_line)
        };
        Maintenance {
            mode,
            reason: reason.to_owned(),
            source,
            headline: "maintenance",
        }
    }

    /// A maintenance file that exists but cannot be read: the operator wants
    /// the server out, only the reason is lost. Drain, saying why.
    pub fn unreadable(path: &Path, why: impl Into<String>) -> Maintenance {
        Maintenance {
            mode: Mode::Drain,
            reason: why.into(),
            source: Source::File(path.to_owned()),
            headline: "maintenance file unreadable",
        }
    }

    /// Reads the maintenance file, blocking: `None` when it does not exist.
    /// Only a regular file is read, at most [`MAX_TEXT`] bytes of it (see
    /// [`crate::files`]); otherwise why it cannot be read.
    pub fn from_file(path: &Path) -> Result<Option<Maintenance>, String> {
        match crate::files::read_regular(path, MAX_TEXT) {
            Ok((bytes, _)) => Ok(Some(Maintenance::parse(
                &String::from_utf8_lossy(&bytes),
                Source::File(path.to_owned()),
            ))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(crate::files::phrase(&err)),
        }
    }

    /// The switch kept in `maintenance.state_file`, blocking: `None` when
    /// there is none. A state file that cannot be read, or does not say
    /// `drain` or `maint` first, drains saying why: it was written by a
    /// switch, so an operator wanted the server out.
    pub fn from_state_file(path: &Path) -> Option<Maintenance> {
        let unreadable = |why: String| Maintenance::state_unreadable(path, why);
        let bytes = match crate::files::read_regular(path, MAX_TEXT) {
            Ok((bytes, _)) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => return Some(unreadable(crate::files::phrase(&err))),
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Some(unreadable("not UTF-8 text".to_owned()));
        };
        let first = text.split_whitespace().next().unwrap_or("");
        if !["drain", "maint"].contains(&first) {
            return Some(unreadable(format!(
                "starts with {first:?}, not drain or maint"
            )));
        }
        Some(Maintenance::parse(text, Source::Kept(path.to_owned())))
    }

    /// A state file that could not be read: drain, saying why.
    pub fn state_unreadable(path: &Path, why: String) -> Maintenance {
        Maintenance {
            mode: Mode::Drain,
            reason: why,
            source: Source::Kept(path.to_owned()),
            headline: "maintenance state unreadable",
        }
    }

    /// Keeps the HTTP switch in `path` (`None`: switched off, the file
    /// removed), blocking: written whole to a file beside it, readable by
    /// remora's user only, then renamed over it, so a crash leaves the old
    /// state or the new one, never half of one.
    pub fn keep(path: &Path, switch: Option<&Maintenance>) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let Some(switch) = switch else {
            return match std::fs::remove_file(path) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(err) => Err(err),
                Ok(()) => sync_directory_of(path),
            };
        };
        // `~`, which no target name holds: `switch.r1`'s partial file is
        // never `switch.r1.new`, another target's state file.
        let mut partial = path.as_os_str().to_owned();
        partial.push("~");
        let partial = PathBuf::from(partial);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&partial)?;
        writeln!(file, "{} {}", switch.mode.as_str(), switch.reason)?;
        file.sync_all()?;
        std::fs::rename(&partial, path)?;
        sync_directory_of(path)
    }

    /// What the agent line says after `#`: the headline, then the reason.
    pub fn text(&self) -> String {
        if self.reason.is_empty() {
            self.headline.to_owned()
        } else {
            format!("{}: {}", self.headline, self.reason)
        }
    }
}

/// Makes a rename or removal in `path`'s directory outlive a power cut, not
/// only a crash of remora.
fn sync_directory_of(path: &Path) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(directory)?.sync_all()
}

/// Reads `maintenance.file` off the async workers, under [`READ_DEADLINE`],
/// one read at a time ([`OneAtATime`]): until a hung read finishes the
/// file counts as unreadable.
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    reads: OneAtATime<Result<Option<Maintenance>, String>>,
}

impl FileWatch {
    pub fn new(path: PathBuf) -> FileWatch {
        FileWatch {
            path,
            reads: OneAtATime::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file says now: `None` when it does not exist; a drain
    /// saying why when it exists but cannot be read in time.
    pub async fn read(&mut self) -> Option<Maintenance> {
        let path = self.path.clone();
        let outcome = self
            .reads
            .run(READ_DEADLINE, move || Maintenance::from_file(&path))
            .await
            .unwrap_or_else(|| {
                Err(format!(
                    "not read within {}",
                    humantime::format_duration(READ_DEADLINE)
                ))
            });
        match outcome {
            Ok(found) => found,
            Err(why) => Some(Maintenance::unreadable(&self.path, why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        let cases = [
            ("", Mode::Drain, "", "up drain #maintenance\n"),
            ("drain\n", Mode::Drain, "", "up drain #maintenance\n"),
            (
                "maint kernel upgrade\nignored second line",
                Mode::Maint,
                "kernel upgrade",
                "up maint #maintenance: kernel upgrade\n",
            ),
            (
                "DRAIN  moving racks ",
                Mode::Drain,
                "moving racks",
                "up drain #maintenance: moving racks\n",
            ),
            (
                "backup running",
                Mode::Drain,
                "backup running",
                "up drain #maintenance: backup running\n",
            ),
        ];
        for (text, mode, reason, line) in cases {
            let m = Maintenance::parse(text, Source::Http);
            assert_eq!((m.mode, m.reason.as_str()), (mode, reason), "{text:?}");
            assert_eq!(
                crate::answer::Answer::maintenance(&m).line(),
                line,
                "{text:?}"
            );
        }
    }

    #[test]
    fn files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("maintenance");
        assert_eq!(Maintenance::from_file(&path), Ok(None));
        std::fs::write(&path, format!("maint {}", "x".repeat(10_000))).expect("write");
        let m = Maintenance::from_file(&path)
            .expect("readable")
            .expect("present");
        assert_eq!(m.mode, Mode::Maint);
        assert!(m.reason.len() < MAX_TEXT);
        assert!(crate::answer::Answer::maintenance(&m).line().len() <= crate::answer::MAX_LINE);
    }

    #[test]
    fn a_kept_switch_reads_back_as_it_was_set() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("switch");
        assert_eq!(Maintenance::from_state_file(&path), None);
        let set = Maintenance::parse("maint swapping a disk", Source::Http);
        Maintenance::keep(&path, Some(&set)).expect("kept");
        let mode = std::fs::metadata(&path).expect("there").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let back = Maintenance::from_state_file(&path).expect("kept");
        assert_eq!(
            crate::answer::Answer::maintenance(&back),
            crate::answer::Answer::maintenance(&set)
        );
        assert_eq!(back.source, Source::Kept(path.clone()));
        Maintenance::keep(&path, None).expect("removed");
        assert_eq!(Maintenance::from_state_file(&path), None);
        Maintenance::keep(&path, None).expect("removing nothing is fine");
    }

    #[test]
    fn a_malformed_or_unreadable_state_file_drains_saying_why() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("switch");
        for (content, line) in [
            (
                &b"garbage"[..],
                "up drain #maintenance state unreadable: starts with \"garbage\", not drain or maint\n",
            ),
            (
                b"",
                "up drain #maintenance state unreadable: starts with \"\", not drain or maint\n",
            ),
            (
                b"\xff\xfe",
                "up drain #maintenance state unreadable: not UTF-8 text\n",
            ),
        ] {
            std::fs::write(&path, content).expect("write");
            let found = Maintenance::from_state_file(&path).expect("drains");
            assert_eq!(crate::answer::Answer::maintenance(&found).line(), line);
        }
        let found = Maintenance::from_state_file(dir.path()).expect("drains");
        assert_eq!(
            crate::answer::Answer::maintenance(&found).line(),
            "up drain #maintenance state unreadable: not a regular file\n"
        );
    }

    #[tokio::test]
    async fn what_is_not_a_regular_file_drains_without_hanging() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        // Opening a FIFO for reading waits for a writer, unless told not to;
        // a read that hung would answer "read timed out" instead.
        let mut watch = FileWatch::new(fifo);
        let found = watch.read().await.expect("a FIFO is there");
        assert_eq!(
            crate::answer::Answer::maintenance(&found).line(),
            "up drain #maintenance file unreadable: not a regular file\n"
        );
        let mut watch = FileWatch::new(dir.path().to_owned());
        assert_eq!(
            crate::answer::Answer::maintenance(&watch.read().await.expect("there")).line(),
            "up drain #maintenance file unreadable: not a regular file\n"
        );
    }
}
