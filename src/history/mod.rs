//! What remora saw and decided, poll by poll, kept in memory for
//! `history.keep`: a bounded ring of samples (`GET /history`) and of the
//! verdict changes among them (`GET /events`, newest first).
//!
//! The poller is the only writer, once per poll; HTTP readers copy what
//! they render under a short lock. The agent never touches it.

mod packed;
pub mod trace;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::answer::{Answer, Reported};
use crate::config::{MAX_SAMPLES, samples_for};
use crate::health::{Assessment, LagFrom};
use crate::policy::Verdict;
use crate::probe::{ErrorKind, Observation, ThreadState};

/// Most verdict changes kept, whatever `history.keep` says.
pub const MAX_EVENTS: usize = 1000;

/// A published poll, as the history reads it: what was observed and
/// assessed, and each pool's outcome, the default policy first.
#[derive(Debug)]
pub struct Poll<'a> {
    pub observation: &'a Observation,
    pub assessment: &'a Assessment,
    pub pools: Vec<Published<'a>>,
}

/// One pool's outcome in a published poll.
#[derive(Debug)]
pub struct Published<'a> {
    /// `default` for the top-level policy, else the pool's name.
    pub label: &'a str,
    /// What this poll alone called for.
    pub target: &'a Verdict,
    /// What HAProxy was told.
    pub answer: &'a Answer,
}

/// The history, shared by the poller (writer) and HTTP (readers).
pub type SharedHistory = Arc<Mutex<History>>;

/// The inputs behind a verdict, as one poll saw them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inputs {
    /// Lag in seconds; `None` while unknown (broken, unreachable).
    pub lag: Option<f64>,
    /// Where the lag came from (`primary`: lag 0).
    pub source: Option<LagFrom>,
    pub estimated: bool,
    /// The channel's IO and SQL threads (the channel the lag is from, else the first).
    pub io_thread: Option<ThreadState>,
    pub sql_thread: Option<ThreadState>,
    /// The replication error, if a thread stopped on one.
    pub errno: Option<u32>,
    /// Why the poll failed, if it did.
    pub error: Option<ErrorKind>,
}

/// One pool in one poll: what the latest poll alone called for, and what
/// was published (after flap damping and the warm-up).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolSample {
    pub target: StateSample,
    pub published: StateSample,
    /// The published reason, shared with the previous sample when unchanged.
    #[serde(serialize_with = "shared_str")]
    pub reason: Arc<str>,
}

/// A state and its weight, two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StateSample {
    pub state: Reported,
    pub weight: u8,
}

impl StateSample {
    pub(crate) fn of(answer: &Answer) -> StateSample {
        StateSample {
            state: answer.reported,
            weight: answer.weight,
        }
    }
}

/// One poll.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Milliseconds since 1970 (0 for a clock set before it); RFC 3339 in JSON.
    #[serde(rename = "at", serialize_with = "rfc3339")]
    pub at_ms: u64,
    /// Milliseconds since the history began, from the monotonic clock: a
    /// wall clock stepped back (NTP) leaves it in order. The trace's `t`.
    #[serde(skip)]
    pub mono_ms: u64,
    pub inputs: Inputs,
    /// The default policy first, then each pool, as in [`History::pools`].
    pub pools: Box<[PoolSample]>,
}

/// A published verdict change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    #[serde(rename = "at", serialize_with = "rfc3339")]
    pub at_ms: u64,
    pub pool: String,
    /// The agent lines before and after.
    pub from: String,
    pub to: String,
    pub reason: String,
    pub inputs: Inputs,
}

/// The ring of samples and the ring of events.
#[derive(Debug)]
pub struct History {
    samples: packed::Ring,
    events: VecDeque<Event>,
    capacity: usize,
    /// Pool labels, in sample order; a reload that changes them starts afresh.
    pools: Vec<String>,
    keep: Duration,
    /// The number of the next sample recorded: samples are numbered from 0
    /// as they come, so a reader streaming them a piece at a time knows
    /// where it stopped even as the oldest are dropped.
    next: u64,
    /// Changes whenever the samples start afresh (new pools): a reader
    /// streaming the old ones stops there.
    generation: u64,
    /// Where `mono_ms` counts from.
    began: tokio::time::Instant,
}

/// Which samples a `/history` request wants: from the first at or after
/// `since_ms` (wall clock), at most the newest `limit` of those.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    pub since_ms: Option<u64>,
    pub limit: Option<usize>,
}

/// Samples numbered `from..until` of one generation: what a stream reads,
/// a piece at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from: u64,
    pub until: u64,
    pub generation: u64,
}

impl History {
    /// A history holding `keep` worth of polls `interval` apart (at most
    /// [`MAX_SAMPLES`]; the configuration refuses more).
    pub fn new(keep: Duration, interval: Duration) -> History {
        History {
            samples: packed::Ring::default(),
            events: VecDeque::new(),
            capacity: samples_for(keep, interval).min(MAX_SAMPLES),
            pools: Vec::new(),
            keep,
            next: 0,
            generation: 0,
            began: tokio::time::Instant::now(),
        }
    }

    pub fn shared(keep: Duration, interval: Duration) -> SharedHistory {
        Arc::new(Mutex::new(History::new(keep, interval)))
    }

    /// Records one published poll, and the verdict changes since `old`.
    pub fn record(&mut self, old: Option<&Poll>, new: &Poll) {
        let inputs = Inputs::of(new.assessment, new.observation);
        let labels: Vec<String> = new.pools.iter().map(|p| p.label.to_owned()).collect();
        if labels != self.pools || self.generation == 0 {
            self.samples = packed::Ring::new(labels.len(), self.next, self.capacity);
            self.pools = labels;
            self.generation += 1;
        }
        let pools: Vec<(StateSample, StateSample, &str)> = (new.pools.iter())
            .map(|pool| {
                let target = StateSample::of(&Answer::of(pool.target));
                (
                    target,
                    StateSample::of(pool.answer),
                    pool.answer.reason.as_str(),
                )
            })
            .collect();
        let at_ms = crate::units::millis_since_epoch(new.observation.wall);
        let mono_ms = (new.observation.at)
            .saturating_duration_since(self.began)
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX);
        if let Some(old) = old {
            self.note_changes(old, new, at_ms, &inputs);
        }
        if self.capacity == 0 {
            return;
        }
        if self.samples.len() == self.capacity {
            self.samples.pop();
        }
        self.samples.push(at_ms, mono_ms, &inputs, &pools);
        self.next += 1;
    }

    fn note_changes(&mut self, old: &Poll, new: &Poll, at_ms: u64, inputs: &Inputs) {
        for after in &new.pools {
            let Some(before) = old.pools.iter().find(|p| p.label == after.label) else {
                continue;
            };
            if !before.answer.is_news(after.answer) {
                continue;
            }
            if self.events.len() == MAX_EVENTS {
                self.events.pop_back();
            }
            self.events.push_front(Event {
                at_ms,
                pool: after.label.to_owned(),
                from: before.answer.text().to_owned(),
                to: after.answer.text().to_owned(),
                reason: after.answer.reason.clone(),
                inputs: inputs.clone(),
            });
        }
    }

    /// The newest verdict change, if any.
    pub fn last_event(&self) -> Option<&Event> {
        self.events.front()
    }

    /// Verdict changes, newest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.iter().cloned().collect()
    }

    /// The samples, oldest first, and the pool labels they are in.
    pub fn samples(&self) -> (Vec<String>, Vec<Sample>) {
        (self.pools.clone(), self.samples.read(0..self.samples.len()))
    }

    /// Bytes the samples hold on the heap, about.
    pub fn heap_bytes(&self) -> usize {
        self.samples.heap_bytes()
    }

    /// The pool labels, in sample order.
    pub fn pools(&self) -> &[String] {
        &self.pools
    }

    /// The number of the oldest sample kept.
    fn first(&self) -> u64 {
        self.next - self.samples.len() as u64
    }

    /// The samples `selection` wants, as numbers to read them by.
    pub fn span(&self, selection: Selection) -> Span {
        let skipped = selection
            .since_ms
            .map_or(0, |since| self.samples.index_at(since));
        let mut from = self.first() + skipped as u64;
        if let Some(limit) = selection.limit {
            from = from.max(self.next.saturating_sub(limit as u64));
        }
        Span {
            from,
            until: self.next,
            generation: self.generation,
        }
    }

    /// Up to `at_most` samples of `span` from its start, cloned, and the span
    /// left after them; samples dropped meanwhile are skipped, and a history
    /// started afresh (another generation), or a span dropped whole, has
    /// nothing more for it.
    pub fn read(&self, span: Span, at_most: usize) -> (Vec<Sample>, Span) {
        // Another generation, or a stream that fell so far behind that
        // even its last sample was dropped: nothing more for it.
        if span.generation != self.generation || span.until <= self.first() {
            return (
                Vec::new(),
                Span {
                    from: span.until,
                    ..span
                },
            );
        }
        let from = span.from.max(self.first());
        let until = span.until.min(self.next).min(from + at_most as u64);
        let start = (from - self.first()) as usize;
        let read = self.samples.read(start..start + (until - from) as usize);
        (
            read,
            Span {
                from: until,
                ..span
            },
        )
    }

    /// The samples at or after `since_ms`, oldest first, thinned to at most
    /// `at_most` (every n-th, always ending with the newest): what a chart
    /// `at_most` points wide shows, without copying the rest.
    pub fn recent(&self, since_ms: u64, at_most: usize) -> Vec<Sample> {
        let len = self.samples.len();
        let skipped = self.samples.index_at(since_ms);
        let wanted = len - skipped;
        let step = wanted.div_ceil(at_most.max(1)).max(1);
        let mut indexes: Vec<usize> = (skipped..len).rev().step_by(step).collect();
        indexes.reverse();
        self.samples.read(indexes.into_iter())
    }

    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// Keeps `keep` worth of polls `interval` apart from now on (a reload),
    /// dropping the oldest samples if that is fewer.
    pub fn resize(&mut self, keep: Duration, interval: Duration) {
        let resized = History::new(keep, interval);
        self.capacity = resized.capacity;
        self.keep = keep;
        while self.samples.len() > self.capacity {
            self.samples.pop();
        }
    }
}

impl Inputs {
    fn of(assessment: &Assessment, observation: &Observation) -> Inputs {
        let lag = assessment.health.lag();
        let reported = assessment.health.reported_lag();
        let status = observation.result.as_ref();
        let channel = status.ok().and_then(|status| {
            let wanted = lag.map(|lag| lag.channel.as_str());
            (status.channels.iter())
                .find(|c| Some(c.name.as_str()) == wanted)
                .or(status.channels.first())
        });
        Inputs {
            lag: reported.map(|(value, ..)| value.as_secs_f64()),
            source: reported.map(|(_, from, _)| from),
            estimated: reported.is_some_and(|(.., estimated)| estimated),
            io_thread: channel.map(|c| c.io_thread),
            sql_thread: channel.map(|c| c.sql_thread),
            errno: channel.and_then(|c| {
                (c.sql_error.as_ref())
                    .or(c.io_error.as_ref())
                    .map(|err| err.errno)
            }),
            error: status.err().map(|err| err.kind()),
        }
    }
}

fn shared_str<S: serde::Serializer>(text: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(text)
}

fn rfc3339<S: serde::Serializer>(at_ms: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_some(&crate::units::rfc3339_ms(*at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_a_healthy_server_with_three_pools_is_kept_in_40_bytes_a_poll() {
        use crate::health::{Assessment, Health};
        use crate::policy::Verdict;
        use crate::probe::PollError;
        let mut history = History::new(Duration::from_secs(3600), Duration::from_secs(1));
        let observation = Observation {
            at: tokio::time::Instant::now(),
            wall: std::time::SystemTime::now(),
            duration: Duration::from_millis(1),
            result: Err(PollError::Unreachable("refused".into())),
            tls: Default::default(),
        };
        let assessment = Assessment::of(Health::Primary { read_only: false });
        let verdict = Verdict::healthy();
        let answer = Answer::of(&verdict);
        let poll = Poll {
            observation: &observation,
            assessment: &assessment,
            pools: ["default", "main", "backup", "writer"]
                .map(|label| Published {
                    label,
                    target: &verdict,
                    answer: &answer,
                })
                .into(),
        };
        for _ in 0..4000 {
            history.record(Some(&poll), &poll);
        }
        let bytes = history.heap_bytes();
        // 32 bytes a poll, 2 a pool (four with the default policy); the
        // reasons never changed, so they cost nothing per poll.
        assert!(bytes <= 3600 * (32 + 2 * 4), "{bytes} bytes");
        assert_eq!(history.samples().1.len(), 3600);
    }

    #[test]
    fn a_stream_that_fell_behind_everything_kept_reads_nothing_more() {
        use crate::health::{Assessment, Health};
        use crate::policy::Verdict;
        use crate::probe::PollError;
        let mut history = History::new(Duration::from_secs(10), Duration::from_secs(1));
        let observation = Observation {
            at: tokio::time::Instant::now(),
            wall: std::time::SystemTime::now(),
            duration: Duration::from_millis(1),
            result: Err(PollError::Unreachable("refused".into())),
            tls: Default::default(),
        };
        let assessment = Assessment::of(Health::Primary { read_only: false });
        let verdict = Verdict::healthy();
        let answer = Answer::of(&verdict);
        let poll = Poll {
            observation: &observation,
            assessment: &assessment,
            pools: vec![Published {
                label: "default",
                target: &verdict,
                answer: &answer,
            }],
        };
        for _ in 0..5 {
            history.record(Some(&poll), &poll);
        }
        // A /history stream took the span of those five, then stalled...
        let stalled = history.span(Selection::default());
        // ...while the poller went on, dropping every sample it had taken.
        for _ in 0..30 {
            history.record(Some(&poll), &poll);
        }
        let (read, left) = history.read(stalled, 100);
        assert!(read.is_empty(), "its samples are gone: {}", read.len());
        assert_eq!(left.from, left.until, "and nothing is left for it");
    }

    #[test]
    fn an_hour_at_a_second_is_3600_samples_and_absurd_keeps_are_bounded() {
        let second = Duration::from_secs(1);
        assert_eq!(samples_for(Duration::from_secs(3600), second), 3600);
        assert_eq!(samples_for(Duration::ZERO, second), 0);
        assert_eq!(
            samples_for(Duration::MAX, Duration::from_millis(1)),
            usize::MAX
        );
        let huge = History::new(Duration::MAX, Duration::from_millis(1));
        assert_eq!(huge.capacity, MAX_SAMPLES);
    }
}
