//! `GET /events` (verdict changes, newest first, JSON) and
//! `GET /history[?format=json|csv][&since=…][&limit=N]` (the polls kept,
//! oldest first), streamed: the body is made a few hundred samples at a
//! time, each piece copied under a short lock, and only as fast as the
//! client reads it. A client that never reads holds one piece, not the
//! whole history.

use std::fmt::Write as _;
use std::sync::Mutex;

use hyper::body::Bytes;
use serde::Serialize;

use crate::history::{Event, History, Sample, Selection, SharedHistory, Span, trace};

/// Samples rendered per piece of a streamed body.
const PIECE: usize = 256;

/// The history's lock, poisoned or not: a panic while recording leaves
/// whole samples behind.
fn read<T>(history: &Mutex<History>, view: impl FnOnce(&History) -> T) -> T {
    let history = history.lock().unwrap_or_else(|poison| poison.into_inner());
    view(&history)
}

#[derive(Serialize)]
struct Events {
    events: Vec<Event>,
}

/// `/events`.
pub fn events(history: &Mutex<History>) -> String {
    let events = read(history, History::events);
    let mut body = serde_json::to_string_pretty(&Events { events }).expect("events serialize");
    body.push('\n');
    body
}

/// How `/history` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    /// The trace format ([`crate::history::trace`]), `t` counting from the
    /// first sample sent.
    Csv,
}

/// Where a streamed body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    Samples,
    Tail,
    Done,
}

/// A `/history` body being made.
#[derive(Debug)]
pub struct Samples {
    history: SharedHistory,
    format: Format,
    span: Span,
    stage: Stage,
    /// The monotonic time of the first sample sent: `t` counts from it.
    first_ms: Option<u64>,
    /// Samples sent so far.
    sent: u64,
}

impl Samples {
    pub fn new(history: SharedHistory, format: Format, selection: Selection) -> Samples {
        let span = read(&history, |h| h.span(selection));
        Samples {
            history,
            format,
            span,
            stage: Stage::Head,
            first_ms: None,
            sent: 0,
        }
    }

    /// The next piece of the body; `None` once it is all sent.
    pub fn next_piece(&mut self) -> Option<Bytes> {
        let mut out = String::new();
        match self.stage {
            Stage::Head => {
                read(&self.history, |h| self.head(h, &mut out));
                self.stage = Stage::Samples;
            }
            Stage::Samples => {
                let (samples, rest) = read(&self.history, |h| h.read(self.span, PIECE));
                if samples.is_empty() {
                    self.stage = Stage::Tail;
                    return self.next_piece();
                }
                self.span = rest;
                for sample in &samples {
                    self.sample(sample, &mut out);
                }
            }
            Stage::Tail => {
                if self.format == Format::Json {
                    out.push_str("\n]}\n");
                }
                self.stage = Stage::Done;
            }
            Stage::Done => return None,
        }
        if out.is_empty() {
            return self.next_piece();
        }
        Some(Bytes::from(out))
    }

    fn head(&self, history: &History, out: &mut String) {
        match self.format {
            Format::Json => {
                let pools = serde_json::to_string(history.pools()).expect("labels serialize");
                let _ = write!(
                    out,
                    "{{\"keep_seconds\":{},\"pools\":{pools},\"samples\":[",
                    history.keep().as_secs_f64()
                );
            }
            Format::Csv => trace::write_header(history.pools(), out),
        }
    }

    fn sample(&mut self, sample: &Sample, out: &mut String) {
        let first_ms = *self.first_ms.get_or_insert(sample.mono_ms);
        match self.format {
            Format::Json => {
                out.push_str(if self.sent == 0 { "\n" } else { ",\n" });
                out.push_str(&serde_json::to_string(sample).expect("samples serialize"));
            }
            Format::Csv => trace::write_row(sample, first_ms, out),
        }
        self.sent += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::State;
    use crate::snapshot::Snapshot;
    use crate::snapshot::tests::{pool, snapshot};
    use std::sync::Arc;
    use std::time::Duration;

    /// The whole body of a `/history` stream.
    fn body(samples: &mut Samples) -> String {
        let mut text = String::new();
        while let Some(piece) = samples.next_piece() {
            text.push_str(std::str::from_utf8(&piece).expect("UTF-8"));
        }
        text
    }

    /// NTP steps the wall clock back an hour between two polls: `t` still
    /// counts forward (it is monotonic), the wall time keeps its own column,
    /// and the trace replays.
    #[test]
    fn a_clock_stepped_back_leaves_the_trace_in_order_and_replayable() {
        let history = History::shared(Duration::from_secs(60), Duration::from_secs(1));
        let first = snapshot(
            vec![pool("", State::Up(100), crate::reason::Reason::None)],
            None,
        );
        let mut second = first.clone();
        second.observation.at += Duration::from_secs(1);
        second.observation.wall -= Duration::from_secs(3600);
        for (old, new) in [(None, &first), (Some(&first), &second)] {
            let old = old.map(Snapshot::as_poll);
            history
                .lock()
                .expect("lock")
                .record(old.as_ref(), &new.as_poll());
        }
        let mut csv = Samples::new(Arc::clone(&history), Format::Csv, Selection::default());
        let text = body(&mut csv);
        let rows = crate::history::trace::parse(&text).expect("replayable");
        let times: Vec<f64> = rows.iter().map(|row| row.t).collect();
        assert_eq!(times, [0.0, 1.0], "{text}");
    }

    /// Records the poll a second after `last`, and returns it.
    fn poll_after(history: &SharedHistory, last: &Snapshot) -> Snapshot {
        let mut next = last.clone();
        next.observation.at += Duration::from_secs(1);
        let mut history = history.lock().expect("lock");
        history.record(Some(&last.as_poll()), &next.as_poll());
        next
    }

    /// A stream reads the samples a piece at a time, from where it stopped,
    /// even as the oldest are dropped under it; JSON comes out whole.
    #[test]
    fn a_stream_resumes_where_it_stopped_and_skips_what_was_dropped() {
        let history = History::shared(Duration::from_secs(600), Duration::from_secs(1));
        let mut last = snapshot(
            vec![pool("", State::Up(100), crate::reason::Reason::None)],
            None,
        );
        history.lock().expect("lock").record(None, &last.as_poll());
        for _ in 1..(PIECE * 2) {
            last = poll_after(&history, &last);
        }
        let mut json = Samples::new(Arc::clone(&history), Format::Json, Selection::default());
        let mut text = String::new();
        // The head and one piece (samples 0-255), then 400 more polls drop
        // the oldest 312 of the 600 kept.
        for _ in 0..2 {
            let piece = json.next_piece().expect("a piece");
            text.push_str(std::str::from_utf8(&piece).expect("UTF-8"));
        }
        for _ in 0..400 {
            last = poll_after(&history, &last);
        }
        text.push_str(&body(&mut json));
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("whole JSON");
        // What was there when it began (0-511), less 256-311, dropped
        // before they were sent; nothing recorded after it began.
        let sent = parsed["samples"].as_array().expect("samples").len();
        assert_eq!(sent, 256 + 200, "{sent}");
        let limited = Selection {
            since_ms: None,
            limit: Some(7),
        };
        let mut newest = Samples::new(Arc::clone(&history), Format::Json, limited);
        let parsed: serde_json::Value = serde_json::from_str(&body(&mut newest)).expect("JSON");
        assert_eq!(parsed["samples"].as_array().expect("samples").len(), 7);
    }
}
