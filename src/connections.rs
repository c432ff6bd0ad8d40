//! A cap on open connections that never makes a newcomer wait: at the cap, a
//! new connection closes the oldest open one. A real check or scrape is over
//! within milliseconds of connecting, so the oldest connection is one that
//! sat idle, lingered, or never finished its request. A flood of idle or
//! hostile clients so costs neither file descriptors nor memory, and a check
//! arriving in the middle of it is answered at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use log::warn;
use tokio::sync::Notify;
use tokio::time::{Instant, timeout};

/// Evicted connections allowed to be still closing when the next is accepted.
const MAX_CLOSING: usize = 16;
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
    /// Evicted connections whose tasks have not yet let go of their socket.
    closing: AtomicUsize,
    closed: Notify,
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
            closing: AtomicUsize::new(0),
            closed: Notify::new(),
        })
    }

    /// A slot for a new connection, closing the oldest open one when `cap`
    /// are open. Before returning, waits (briefly) for evicted connections
    /// to let go of their sockets, so descriptors stay within the cap plus a
    /// few; call it from the accept loop.
    pub async fn admit(self: &Arc<Self>, cap: usize, setting: &str) -> Slot {
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
        if let Some((_, oldest)) = oldest {
            self.closing.fetch_add(1, Ordering::AcqRel);
            // A stored permit: the connection closes even if not yet waiting.
            oldest.notify_one();
            self.evicted.fetch_add(1, Ordering::Relaxed);
            self.warn(cap, setting);
        }
        // Evicted tasks close within a scheduler pass; never wait long.
        for _ in 0..10 {
            if self.closing.load(Ordering::Acquire) <= MAX_CLOSING {
                break;
            }
            let _ = timeout(Duration::from_millis(10), self.closed.notified()).await;
        }
        Slot {
            connections: Arc::clone(self),
            id,
            close,
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

impl Slot {
    /// Resolves when this connection must close to make room.
    pub async fn closed(&self) {
        self.close.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let evicted = lock(&self.connections.open).remove(&self.id).is_none();
        if evicted {
            self.connections.closing.fetch_sub(1, Ordering::AcqRel);
            self.connections.closed.notify_one();
        }
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
        let first = connections.admit(2, "cap").await;
        let second = connections.admit(2, "cap").await;
        assert_eq!(lock(&connections.open).len(), 2);
        let third = connections.admit(2, "cap").await;
        async fn closes(slot: &Slot) -> bool {
            tokio::time::timeout(Duration::from_millis(1), slot.closed())
                .await
                .is_ok()
        }
        assert!(closes(&first).await, "the oldest is told to close");
        assert!(!closes(&second).await && !closes(&third).await);
        assert_eq!(lock(&connections.open).len(), 2);
        assert_eq!(connections.closing.load(Ordering::Acquire), 1);
        drop(first);
        assert_eq!(connections.closing.load(Ordering::Acquire), 0);
        drop(second);
        assert_eq!(lock(&connections.open).len(), 1);
        drop(third);
        assert!(lock(&connections.open).is_empty());
    }
}
