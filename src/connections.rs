//! A cap on open connections that never makes a newcomer wait: at the cap, a
//! new connection closes the oldest open one. A real check or scrape is over
//! within milliseconds of connecting, so the oldest connection is one that
//! sat idle, lingered, or never finished its request. A flood of idle or
//! hostile clients so costs neither file descriptors nor memory, and a check
//! arriving in the middle of it is answered at once.
//!
//! Admission never waits: the accept loop waits on `accept` and nothing else.
//! An evicted connection's task is told to close; the accept loop then yields
//! once ([`Admission::make_room`]) so that task runs, lets go of its socket,
//! and descriptors stay within the cap plus a few. A yield is no wait: it
//! returns as soon as the tasks already ready have had their turn.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use log::warn;
use tokio::sync::Notify;
use tokio::time::Instant;

/// At most one warning about evictions per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The open connections of one listener.
#[derive(Debug)]
pub struct Connections {
    /// For logs: `agent`, `http`.
    name: &'static str,
    /// Open connections by arrival number, each with its way to be closed.
    open: Mutex<BTreeMap<u64, Arc<Notify>>>,
    arrivals: AtomicU64,
    /// Connections closed to make room since the last warning.
    evicted: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

/// One open connection's place under the cap, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    connections: Arc<Connections>,
    id: u64,
    /// Notified when the connection must close to make room for a newer one.
    close: Arc<Notify>,
}

impl Connections {
    pub fn new(name: &'static str) -> Arc<Connections> {
        Arc::new(Connections {
            name,
            open: Mutex::new(BTreeMap::new()),
            arrivals: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        })
    }

    /// A slot for a new connection, telling the oldest open one to close
    /// when `cap` are open. Never waits; with the slot comes whether a
    /// connection was told to close.
    pub fn admit(self: &Arc<Self>, cap: usize, setting: &str) -> Admission {
        let id = self.arrivals.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let oldest = {
            let mut open = lock(&self.open);
            let oldest = if open.len() >= cap {
                open.pop_first()
            } else {
                None
            };
            open.insert(id, Arc::clone(&close));
            oldest
        };
        let evicted = oldest.is_some();
        if let Some((_, oldest)) = oldest {
            // A stored permit: the connection closes even if not yet waiting.
            oldest.notify_one();
            self.evicted.fetch_add(1, Ordering::Relaxed);
            self.warn(cap, setting);
        }
        Admission {
            slot: Slot {
                connections: Arc::clone(self),
                id,
                close,
            },
            evicted,
        }
    }

    fn warn(&self, cap: usize, setting: &str) {
        let now = Instant::now();
        let mut last = lock(&self.last_warning);
        if last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            let count = self.evicted.swap(0, Ordering::Relaxed);
            warn!(
                "{}: {count} connections closed to stay within {setting} ({cap}); \
                 idle or flooding clients?",
                self.name
            );
            *last = Some(now);
        }
    }
}

/// A new connection's slot, and whether making room closed another.
#[derive(Debug)]
pub struct Admission {
    pub slot: Slot,
    evicted: bool,
}

impl Admission {
    /// The slot, once the connection closed to make room (if any) has had
    /// its turn to let go of its socket: the accept loop yields once. An
    /// accept loop that never yields under a flood would run through its
    /// whole budget first, and descriptors would pile up past the cap.
    pub async fn make_room(self) -> Slot {
        if self.evicted {
            tokio::task::yield_now().await;
        }
        self.slot
    }
}

impl Slot {
    /// Resolves when this connection must close to make room.
    pub async fn closed(&self) {
        self.close.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // An evicted slot was already taken out when it was told to close.
        lock(&self.connections.open).remove(&self.id);
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().expect("no panics while holding this lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_is_closed_to_make_room() {
        let connections = Connections::new("test");
        let first = connections.admit(2, "cap").slot;
        let second = connections.admit(2, "cap").slot;
        assert_eq!(lock(&connections.open).len(), 2);
        let third = connections.admit(2, "cap").slot;
        async fn closes(slot: &Slot) -> bool {
            tokio::time::timeout(Duration::from_millis(1), slot.closed())
                .await
                .is_ok()
        }
        assert!(closes(&first).await, "the oldest is told to close");
        assert!(!closes(&second).await && !closes(&third).await);
        assert_eq!(lock(&connections.open).len(), 2);
        drop(first);
        assert_eq!(
            lock(&connections.open).len(),
            2,
            "an evicted slot is not counted twice"
        );
        drop(second);
        assert_eq!(lock(&connections.open).len(), 1);
        drop(third);
        assert!(lock(&connections.open).is_empty());
    }
}
