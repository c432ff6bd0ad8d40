//! Log lines that a client or a server can cause: throttled, so a flood of
//! them cannot flood the log, and with foreign text escaped, so a newline
//! in a server's message cannot forge a log line of its own.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// At most `per_window` lines per `window`; the lines held back are counted
/// and the count logged with the next line let through.
#[derive(Debug)]
pub struct Throttle {
    per_window: u32,
    window: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug)]
struct ThrottleState {
    began: Option<Instant>,
    logged: u32,
    held_back: u64,
}

impl Throttle {
    pub fn new(per_window: u32, window: Duration) -> Throttle {
        Throttle {
            per_window,
            window,
            state: Mutex::new(ThrottleState {
                began: None,
                logged: 0,
                held_back: 0,
            }),
        }
    }

    /// Logs `line()` at info, unless this window's lines are spent.
    pub fn info(&self, line: impl FnOnce() -> String) {
        if let Some(line) = self.admit(Instant::now(), line) {
            log::info!("{line}");
        }
    }

    /// The line to log now, with the count held back before it, or `None`.
    fn admit(&self, now: Instant, line: impl FnOnce() -> String) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state
            .began
            .is_none_or(|began| now.saturating_duration_since(began) >= self.window)
        {
            state.began = Some(now);
            state.logged = 0;
        }
        if state.logged >= self.per_window {
            state.held_back += 1;
            return None;
        }
        state.logged += 1;
        let held_back = std::mem::take(&mut state.held_back);
        Some(match held_back {
            0 => line(),
            n => format!("{} ({n} like it not logged)", line()),
        })
    }
}

/// `text` with control characters (a newline, an escape sequence) written
/// as escapes: safe to put in one log line.
pub fn escaped(text: &str) -> String {
    text.chars()
        .flat_map(char::escape_default)
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_a_few_lines_then_says_how_many_were_held_back() {
        let throttle = Throttle::new(2, Duration::from_secs(10));
        let start = Instant::now();
        let logged: Vec<Option<String>> = (0..1000)
            .map(|i| throttle.admit(start, || format!("refused {i}")))
            .collect();
        assert_eq!(logged.iter().flatten().count(), 2);
        let later = start + Duration::from_secs(10);
        assert_eq!(
            throttle.admit(later, || "refused again".into()).as_deref(),
            Some("refused again (998 like it not logged)")
        );
    }

    #[test]
    fn a_newline_in_foreign_text_cannot_start_a_log_line() {
        let forged = "Duplicate entry\n[2026-12-04T00:00:00Z INFO remora] maintenance off";
        let shown = escaped(forged);
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.contains("\\n[2026"), "{shown}");
        assert_eq!(escaped("lag 3.0s"), "lag 3.0s");
    }
}
