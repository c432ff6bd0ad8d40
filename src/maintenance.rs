//! The operator's switch: while it is on, the agent answers `up drain` (or
//! `up maint`) whatever the measurements say. Two ways to turn it on: a file
//! (`maintenance.file`, survives restarts, checked every poll) and
//! `POST /maintenance` on the HTTP listener (from loopback only; lasts until
//! `DELETE /maintenance` or a restart). The HTTP switch wins over the file.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::policy::{State, Verdict};

/// Longest maintenance text read, from the file or an HTTP body.
pub const MAX_TEXT: usize = 4096;

/// What HAProxy should do with the server meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No new connections; established ones continue.
    Drain,
    /// None at all; HAProxy also pauses its regular check.
    Maint,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Drain => "drain",
            Mode::Maint => "maint",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Http,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Http => f.write_str("POST /maintenance"),
        }
    }
}

/// An operator's intent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    pub mode: Mode,
    pub reason: String,
    pub source: Source,
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
        }
    }

    /// Reads the maintenance file: `None` when it does not exist.
    pub fn from_file(path: &Path) -> std::io::Result<Option<Maintenance>> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let mut text = String::new();
        file.take(MAX_TEXT as u64).read_to_string(&mut text)?;
        Ok(Some(Maintenance::parse(
            &text,
            Source::File(path.to_owned()),
        )))
    }

    /// The agent line, the whole state as always.
    pub fn agent_line(&self) -> String {
        let reason = if self.reason.is_empty() {
            "maintenance".to_owned()
        } else {
            format!("maintenance: {}", self.reason)
        };
        let line = Verdict::new(State::Drain, reason).agent_line();
        match self.mode {
            Mode::Drain => line,
            // Verdict has no maint state: it is never a measured outcome.
            Mode::Maint => line.replacen("up drain", "up maint", 1),
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
            assert_eq!(m.agent_line(), line, "{text:?}");
        }
    }

    #[test]
    fn files() {
        let dir = std::env::temp_dir().join(format!("remora-maint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("maintenance");
        assert_eq!(Maintenance::from_file(&path).expect("absent is fine"), None);
        std::fs::write(&path, format!("maint {}", "x".repeat(10_000))).expect("write");
        let m = Maintenance::from_file(&path)
            .expect("readable")
            .expect("present");
        assert_eq!(m.mode, Mode::Maint);
        assert!(m.reason.len() < MAX_TEXT);
        assert!(m.agent_line().len() <= crate::policy::MAX_LINE);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
