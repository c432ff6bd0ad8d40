//! HAProxy's agent-check listener: on accept, write one line from the latest
//! snapshot and close. Never reads MySQL. Without pools it never waits for a
//! request; with pools it waits at most `agent.request_timeout` for the line
//! HAProxy's `agent-send` writes, naming the pool.
//!
//! Closing a socket with unread input makes the kernel send a reset, which can
//! destroy the reply before the client reads it (seen with
//! `printf 'x\n' | nc`). So after writing, the write side is shut down and
//! whatever the peer sends is discarded until it closes or [`LINGER`] passes.
//! Each connection is its own task: a client that lingers holds nothing but
//! its own task, and new checks are answered at once however many linger.
//!
//! At most `agent.max_connections` connections are open at once; beyond
//! that a new one closes the oldest (see [`crate::connections`]).

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{debug, trace, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connections::{Connections, Slot, lock};
use crate::poller::{Lookup, Snapshot};

/// Longest time a reply may take to write: it is one short line.
const WRITE_DEADLINE: Duration = Duration::from_secs(1);
/// Longest time spent discarding a peer's input after replying.
const LINGER: Duration = Duration::from_secs(1);
/// Most input discarded after a reply; a client still sending after this
/// much is cut off.
const MAX_DISCARD: usize = 16 * 1024;
/// Read size once a client has shown it sends more than a request line.
const DISCARD_CHUNK: usize = 4096;
/// How long in-flight replies get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Longest request line read; the rest of a longer one is ignored.
pub const MAX_REQUEST: usize = 256;
/// Distinct unknown pool names logged; garbage must not grow memory.
const MAX_LOGGED_UNKNOWN: usize = 100;

/// What every connection task shares.
struct Shared {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    unknown_logged: Mutex<HashSet<String>>,
    shutdown: CancellationToken,
}

/// Answers agent checks on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        snapshots,
        unknown_logged: Mutex::new(HashSet::new()),
        shutdown: shutdown.clone(),
    });
    let tasks = TaskTracker::new();
    let mut last_warning: Option<Instant> = None;
    let connections = Connections::new("agent");
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
        let cap = shared.snapshots.borrow().max_connections;
        let slot = connections
            .admit(cap, "agent.max_connections")
            .make_room()
            .await;
        tasks.spawn(answer(socket, Arc::clone(&shared), slot));
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

/// Serves one connection until it is done or closed to make room.
async fn answer(socket: TcpStream, shared: Arc<Shared>, slot: Slot) {
    tokio::select! {
        _ = reply(socket, &shared) => {}
        _ = slot.closed() => trace!("agent: connection closed to make room"),
    }
}

async fn reply(mut socket: TcpStream, shared: &Shared) {
    let mut request = [0u8; MAX_REQUEST];
    let wait_for_name = {
        let snapshot = shared.snapshots.borrow();
        snapshot.has_pools().then_some(snapshot.request_timeout)
    };
    let pool = match wait_for_name {
        Some(limit) => read_request(&mut socket, &mut request, limit).await,
        None => None,
    };
    // Clone the Arc and release the borrow at once: the writer is never held up.
    let snapshot = Arc::clone(&shared.snapshots.borrow());
    let lookup = snapshot.lookup(pool);
    if let Lookup::Unknown(_, name) = lookup {
        log_unknown_once(shared, name);
    }
    let answer = snapshot.check(Instant::now(), lookup);
    trace!("agent: pool {pool:?} -> {}", answer.text());
    match timeout(WRITE_DEADLINE, socket.write_all(answer.line().as_bytes())).await {
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
    drop(answer);
    drop(snapshot);
    // Our FIN follows the line; the peer may now read to EOF.
    if socket.shutdown().await.is_err() {
        return;
    }
    // A real client sends at most one short line, which the request buffer
    // holds; a bigger one in every task would cost every check. A client
    // that fills it is sending garbage: read that in bigger bites, with a
    // buffer allocated only then.
    let mut small = request;
    let mut big: Option<Box<[u8]>> = None;
    let drain = async {
        let mut discarded = 0;
        loop {
            let buffer = match big.as_deref_mut() {
                Some(big) => big,
                None => &mut small[..],
            };
            let filled = buffer.len();
            match socket.read(buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    discarded += n;
                    if discarded > MAX_DISCARD {
                        break;
                    }
                    if n == filled && big.is_none() {
                        big = Some(vec![0; DISCARD_CHUNK].into_boxed_slice());
                    }
                }
            }
        }
    };
    // At shutdown, replies in flight finish; lingering ends at once.
    tokio::select! {
        _ = timeout(LINGER, drain) => {}
        _ = shared.shutdown.cancelled() => {}
    }
}

/// The pool named by the first line the client sends, if a line arrives
/// within `limit`: trimmed, at most [`MAX_REQUEST`] bytes, UTF-8. Anything
/// else (no line in time, too long, binary) means "no pool named".
async fn read_request<'a>(
    socket: &mut TcpStream,
    buffer: &'a mut [u8; MAX_REQUEST],
    limit: Duration,
) -> Option<&'a str> {
    let deadline = Instant::now() + limit;
    let mut filled = 0;
    let end = loop {
        if filled == buffer.len() {
            return None;
        }
        match timeout_at(deadline, socket.read(&mut buffer[filled..])).await {
            // The client closed its side: what it sent is the line.
            Ok(Ok(0)) => break filled,
            Ok(Ok(n)) => {
                if let Some(at) = buffer[filled..filled + n]
                    .iter()
                    .position(|b| matches!(b, b'\n' | b'\r'))
                {
                    break filled + at;
                }
                filled += n;
            }
            Ok(Err(_)) | Err(_) => return None,
        }
    };
    parse_pool(&buffer[..end])
}

/// The pool a request line names: trimmed UTF-8, not empty. Anything else
/// (binary, control characters only, blank) names no pool.
pub fn parse_pool(line: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(line).ok()?.trim();
    (!name.is_empty() && !name.contains(|c: char| c.is_control())).then_some(name)
}

fn log_unknown_once(shared: &Shared, name: &str) {
    let mut logged = lock(&shared.unknown_logged);
    if logged.len() < MAX_LOGGED_UNKNOWN && logged.insert(name.to_owned()) {
        let shown: String = name.chars().take(64).collect();
        warn!("agent: request for unknown pool {shown:?}; answering with the default policy");
        if logged.len() == MAX_LOGGED_UNKNOWN {
            warn!("agent: {MAX_LOGGED_UNKNOWN} unknown pool names logged; not logging more");
        }
    }
}
