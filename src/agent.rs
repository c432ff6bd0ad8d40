//! HAProxy's agent-check listener: on accept, write one line from the latest
//! snapshot and close. Never reads MySQL, never waits for a request.
//!
//! Closing a socket with unread input makes the kernel send a reset, which can
//! destroy the reply before the client reads it (seen with
//! `printf 'x\n' | nc`). So after writing, the write side is shut down and
//! whatever the peer sends is discarded until it closes or [`LINGER`] passes.
//! Each connection is its own task: a client that lingers holds nothing but
//! its own task, and new checks are answered at once however many linger.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::poller::Snapshot;

/// Longest time a reply may take to write: it is one short line.
const WRITE_DEADLINE: Duration = Duration::from_secs(1);
/// Longest time spent discarding a peer's input after replying.
const LINGER: Duration = Duration::from_secs(1);
/// Connections allowed to linger at once. Beyond this a reply is written and
/// the socket closed at once: every check is still answered, and a flood of
/// idle clients cannot exhaust file descriptors or memory.
const MAX_LINGERING: usize = 4096;
/// How long in-flight replies get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Answers agent checks on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    shutdown: CancellationToken,
) {
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
    let tasks = TaskTracker::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        let socket = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _peer)) => socket,
                Err(err) => {
                    accept_failed(&err, &mut last_warning).await;
                    continue;
                }
            },
        };
        // Clone the Arc and release the borrow at once: the writer is never held up.
        let snapshot = Arc::clone(&snapshots.borrow());
        tasks.spawn(answer(
            socket,
            snapshot,
            Arc::clone(&lingering),
            shutdown.clone(),
        ));
    }
    drop(listener);
    tasks.close();
    if timeout(SHUTDOWN_GRACE, tasks.wait()).await.is_err() {
        debug!("agent: {} connections still open at shutdown", tasks.len());
    }
}

/// Per-connection errors are the peer's business; running out of file
/// descriptors or memory is ours: warn (at most every 10 s) and back off
/// briefly instead of spinning.
async fn accept_failed(err: &io::Error, last_warning: &mut Option<Instant>) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) {
        return;
    }
    let now = Instant::now();
    if last_warning.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10)) {
        warn!("agent: accept failed: {err}");
        *last_warning = Some(now);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

async fn answer(
    mut socket: TcpStream,
    snapshot: Arc<Snapshot>,
    lingering: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let line = snapshot.agent_line(Instant::now());
    match timeout(WRITE_DEADLINE, socket.write_all(line.as_bytes())).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            debug!("agent: reply not written: {err}");
            return;
        }
        Err(_) => {
            debug!("agent: reply not written within {WRITE_DEADLINE:?}");
            return;
        }
    }
    // Our FIN follows the line; the peer may now read to EOF.
    if socket.shutdown().await.is_err() {
        return;
    }
    drop(snapshot);
    let Ok(_permit) = lingering.try_acquire() else {
        return;
    };
    let mut discard = [0u8; 256];
    let drain = async {
        while let Ok(n) = socket.read(&mut discard).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = timeout(LINGER, drain) => {}
        _ = shutdown.cancelled() => {}
    }
}
