//! The samples kept, packed: a central remora keeps an hour of polls for
//! each of a thousand targets, so a sample must be a few dozen bytes, not a
//! few hundred.
//!
//! - Each poll is 32 bytes: both clocks, the lag, the errno, and the five
//!   small kinds (lag source, estimated, thread states, error kind) in 16
//!   bits.
//! - Each pool adds 2 bytes: its target and published states, a byte each
//!   (a weight 0–100, or drain, down, maint).
//! - A published reason is kept only when it changes, with the number of
//!   the sample it starts at. A healthy server's reasons never change, and
//!   cost nothing per poll.
//!
//! Samples are decoded into [`Sample`]s as they are read.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Inputs, PoolSample, Sample, StateSample};
use crate::answer::Reported;
use crate::health::LagFrom;
use crate::probe::{ErrorKind, ThreadState};

/// One poll, packed.
#[derive(Debug, Clone, Copy)]
struct Packed {
    at_ms: u64,
    mono_ms: u64,
    /// NaN while unknown.
    lag: f64,
    /// 0 for none: MySQL's error numbers start at 1.
    errno: u32,
    kinds: u16,
}

/// A pool's published reason from sample `from` on.
#[derive(Debug, Clone)]
struct Change {
    from: u64,
    pool: usize,
    reason: Arc<str>,
}

/// The ring of samples of one generation (one list of pools).
#[derive(Debug, Default)]
pub(super) struct Ring {
    polls: VecDeque<Packed>,
    /// Two bytes per pool per poll (target, published), in pool order.
    states: VecDeque<u8>,
    pools: usize,
    /// The number of the oldest sample.
    first: u64,
    /// Each pool's reason at the oldest sample.
    base: Vec<Arc<str>>,
    /// Reason changes after the oldest sample, oldest first.
    changes: VecDeque<Change>,
    /// Each pool's newest reason.
    latest: Vec<Arc<str>>,
}

impl Ring {
    /// An empty ring for `pools` pools, its samples numbered from `first`.
    pub(super) fn new(pools: usize, first: u64, capacity: usize) -> Ring {
        Ring {
            polls: VecDeque::with_capacity(capacity),
            states: VecDeque::with_capacity(capacity.saturating_mul(2 * pools)),
            pools,
            first,
            base: vec![Arc::from(""); pools],
            changes: VecDeque::new(),
            latest: vec![Arc::from(""); pools],
        }
    }

    pub(super) fn len(&self) -> usize {
        self.polls.len()
    }

    /// The first index whose sample is at or after `since_ms`.
    pub(super) fn index_at(&self, since_ms: u64) -> usize {
        self.polls.partition_point(|poll| poll.at_ms < since_ms)
    }

    /// Adds the newest sample; `pools` has one entry per pool.
    pub(super) fn push(
        &mut self,
        at_ms: u64,
        mono_ms: u64,
        inputs: &Inputs,
        pools: &[(StateSample, StateSample, &str)],
    ) {
        let number = self.first + self.polls.len() as u64;
        self.polls.push_back(Packed {
            at_ms,
            mono_ms,
            lag: inputs.lag.unwrap_or(f64::NAN),
            errno: inputs.errno.unwrap_or(0),
            kinds: pack_kinds(inputs),
        });
        for (pool, (target, published, reason)) in pools.iter().enumerate() {
            self.states.push_back(pack_state(*target));
            self.states.push_back(pack_state(*published));
            if *self.latest[pool] != **reason {
                let reason: Arc<str> = Arc::from(*reason);
                self.latest[pool] = Arc::clone(&reason);
                if self.polls.len() == 1 {
                    self.base[pool] = reason;
                } else {
                    self.changes.push_back(Change {
                        from: number,
                        pool,
                        reason,
                    });
                }
            }
        }
    }

    /// Drops the oldest sample.
    pub(super) fn pop(&mut self) {
        if self.polls.pop_front().is_none() {
            return;
        }
        self.states.drain(..2 * self.pools);
        self.first += 1;
        while let Some(change) = self.changes.front().filter(|c| c.from <= self.first) {
            self.base[change.pool] = Arc::clone(&change.reason);
            self.changes.pop_front();
        }
    }

    /// Samples at `indexes` (ascending), decoded.
    pub(super) fn read(&self, indexes: impl Iterator<Item = usize>) -> Vec<Sample> {
        let mut reasons = self.base.clone();
        let mut changes = self.changes.iter().peekable();
        let mut read = Vec::new();
        for index in indexes {
            let number = self.first + index as u64;
            while let Some(change) = changes.next_if(|change| change.from <= number) {
                reasons[change.pool] = Arc::clone(&change.reason);
            }
            read.push(self.sample(index, &reasons));
        }
        read
    }

    fn sample(&self, index: usize, reasons: &[Arc<str>]) -> Sample {
        let poll = self.polls[index];
        let states = (2 * self.pools * index)..(2 * self.pools * (index + 1));
        let states: Vec<u8> = self.states.range(states).copied().collect();
        Sample {
            at_ms: poll.at_ms,
            mono_ms: poll.mono_ms,
            inputs: unpack_inputs(&poll),
            pools: (0..self.pools)
                .map(|pool| PoolSample {
                    target: unpack_state(states[2 * pool]),
                    published: unpack_state(states[2 * pool + 1]),
                    reason: Arc::clone(&reasons[pool]),
                })
                .collect(),
        }
    }

    /// Bytes this ring holds on the heap, about: what a target's history
    /// costs.
    pub(super) fn heap_bytes(&self) -> usize {
        let reasons = (self.changes.iter())
            .map(|change| std::mem::size_of::<Change>() + 16 + change.reason.len())
            .sum::<usize>();
        self.polls.capacity() * std::mem::size_of::<Packed>() + self.states.capacity() + reasons
    }
}

/// A state and weight in a byte: 0–100 up at that weight, then drain,
/// down, maint.
fn pack_state(state: StateSample) -> u8 {
    match state.state {
        Reported::Up => state.weight.min(100),
        Reported::Drain => 101,
        Reported::Down => 102,
        Reported::Maint => 103,
    }
}

fn unpack_state(byte: u8) -> StateSample {
    let (state, weight) = match byte {
        0..=100 => (Reported::Up, byte),
        101 => (Reported::Drain, 0),
        102 => (Reported::Down, 0),
        _ => (Reported::Maint, 0),
    };
    StateSample { state, weight }
}

/// A kind's place in its `ALL`, plus one; 0 for none.
fn place<T: PartialEq>(all: &[T], value: Option<&T>) -> u16 {
    value
        .and_then(|value| all.iter().position(|v| v == value))
        .map_or(0, |at| at as u16 + 1)
}

fn nth<T: Copy>(all: &[T], place: u16) -> Option<T> {
    (place as usize)
        .checked_sub(1)
        .and_then(|at| all.get(at).copied())
}

/// Lag source, estimated, IO and SQL thread states and the error kind, in
/// 3 + 1 + 3 + 3 + 4 bits.
fn pack_kinds(inputs: &Inputs) -> u16 {
    place(LagFrom::ALL, inputs.source.as_ref())
        | u16::from(inputs.estimated) << 3
        | place(ThreadState::ALL, inputs.io_thread.as_ref()) << 4
        | place(ThreadState::ALL, inputs.sql_thread.as_ref()) << 7
        | place(ErrorKind::ALL, inputs.error.as_ref()) << 10
}

fn unpack_inputs(poll: &Packed) -> Inputs {
    let kinds = poll.kinds;
    Inputs {
        lag: (!poll.lag.is_nan()).then_some(poll.lag),
        source: nth(LagFrom::ALL, kinds & 0b111),
        estimated: kinds >> 3 & 1 == 1,
        io_thread: nth(ThreadState::ALL, kinds >> 4 & 0b111),
        sql_thread: nth(ThreadState::ALL, kinds >> 7 & 0b111),
        errno: (poll.errno != 0).then_some(poll.errno),
        error: nth(ErrorKind::ALL, kinds >> 10 & 0b1111),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_fits_its_bits() {
        assert!(LagFrom::ALL.len() < 8);
        assert!(ThreadState::ALL.len() < 8);
        assert!(ErrorKind::ALL.len() < 16);
        assert!(std::mem::size_of::<Packed>() <= 32);
    }

    #[test]
    fn what_is_packed_reads_back_the_same() {
        let mut ring = Ring::new(2, 7, 4);
        let mut written = Vec::new();
        for i in 0..6u64 {
            let inputs = Inputs {
                lag: (i % 3 != 0).then_some(i as f64 * 1.25),
                source: LagFrom::ALL.get(i as usize % LagFrom::ALL.len()).copied(),
                estimated: i % 2 == 0,
                io_thread: ThreadState::ALL.get(i as usize % 5).copied(),
                sql_thread: Some(ThreadState::ALL[i as usize % ThreadState::ALL.len()]),
                errno: (i == 4).then_some(1062),
                error: ErrorKind::ALL.get(i as usize).copied(),
            };
            let states = [
                (
                    StateSample {
                        state: Reported::Up,
                        weight: 55 + i as u8,
                    },
                    StateSample {
                        state: Reported::Drain,
                        weight: 0,
                    },
                    if i < 3 { "lag" } else { "other" },
                ),
                (
                    StateSample {
                        state: Reported::Down,
                        weight: 0,
                    },
                    StateSample {
                        state: Reported::Maint,
                        weight: 0,
                    },
                    "",
                ),
            ];
            ring.push(1000 + i, i, &inputs, &states);
            written.push((inputs, states.map(|(t, p, r)| (t, p, r.to_owned()))));
            if ring.len() > 4 {
                ring.pop();
            }
        }
        let read = ring.read(0..ring.len());
        assert_eq!(read.len(), 4);
        for (sample, (inputs, states)) in read.iter().zip(&written[2..]) {
            assert_eq!(&sample.inputs, inputs);
            for (pool, (target, published, reason)) in sample.pools.iter().zip(states) {
                assert_eq!((pool.target, pool.published), (*target, *published));
                assert_eq!(&*pool.reason, reason.as_str());
            }
        }
        assert_eq!(ring.index_at(1004), 2);
        assert_eq!(ring.read([1, 3].into_iter())[1].at_ms, 1005);
    }
}
