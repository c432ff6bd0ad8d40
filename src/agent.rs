//! HAProxy's agent-check listener: on accept, write one line from the latest
//! snapshot and close. Never reads MySQL. Without pools it never waits for a
//! request; with pools it waits at most `agent.request_timeout` for the line
//! HAProxy's `agent-send` writes, naming the pool.
//!
//! Closing a socket with unread input makes the kernel send a reset, which can
//! destroy the reply before the client reads it (seen with
//! `printf 'x\n' | nc`). So after writing, the write side is shut down and
//! whatever the peer sends is discarded until it closes or [`LINGER`] passes.
//! With pools, a client that sent its whole request line and nothing after
//! it has nothing left to be reset: it is closed right after the reply
//! (HAProxy's `agent-send` exchange, at the reference's cost).
//! Each connection is its own task: a client that lingers holds nothing but
//! its own task, and new checks are answered at once however many linger.
//!
//! At most `agent.max_connections` connections are open at once; beyond
//! that a new one closes the oldest (see [`crate::connections`]).

use std::collections::HashSet;
use std::io::{self, Write as _};
use std::net::{IpAddr, Shutdown};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{debug, trace, warn};
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::answer::Answer;
use crate::connections::{Connections, Slot, lock};
use crate::fleet::{Choice, Fleet, Watched};
use crate::policy::{State, Verdict};
use crate::reason::{Addressed, Reason};
use crate::snapshot::{Asked, Lookup, Unmatched};
use crate::threads::Priority;

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
    fleet: watch::Receiver<Arc<Fleet>>,
    /// `pools.NAME.listen`: this listener answers for that pool alone.
    pool: Option<String>,
    unknown_logged: Mutex<HashSet<String>>,
    shutdown: CancellationToken,
}

/// Runs [`serve`] on a thread of its own, on a current-thread runtime: the
/// cheapest way to answer a check (no work stealing, no cross-thread
/// wake-ups), and no HTTP render or poll ever shares its thread.
pub fn spawn(
    listener: TcpListener,
    fleet: watch::Receiver<Arc<Fleet>>,
    pool: Option<String>,
    shutdown: CancellationToken,
) -> io::Result<tokio::task::JoinHandle<()>> {
    crate::threads::serve_on_own_thread("agent", Priority::Normal, listener, move |listener| {
        serve(listener, fleet, pool, shutdown)
    })
}

/// Answers agent checks on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    fleet: watch::Receiver<Arc<Fleet>>,
    pool: Option<String>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        fleet,
        pool,
        unknown_logged: Mutex::new(HashSet::new()),
        shutdown: shutdown.clone(),
    });
    let tasks = TaskTracker::new();
    let mut last_warning: Option<Instant> = None;
    let connections = Connections::new("agent");
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => (socket, peer.ip()),
                Err(err) => {
                    accept_failed(&err, &mut last_warning).await;
                    continue;
                }
            },
        };
        let cap = shared.fleet.borrow().settings.max_connections;
        let slot = connections
            .admit(cap, "agent.max_connections")
            .make_room()
            .await;
        tasks.spawn(answer(socket, peer, Arc::clone(&shared), slot));
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
async fn answer(socket: TcpStream, peer: IpAddr, shared: Arc<Shared>, slot: Slot) {
    tokio::select! {
        _ = reply(socket, peer, &shared) => {}
        _ = slot.closed() => trace!("agent: connection closed to make room"),
    }
}

async fn reply(mut socket: TcpStream, peer: IpAddr, shared: &Shared) {
    let mut buffer = [0u8; MAX_REQUEST];
    // Clone the Arc and release the borrow at once: the writer is never held up.
    let fleet = Arc::clone(&shared.fleet.borrow());
    let (watched, asked, said_all) = if fleet.named {
        let limit = fleet.settings.request_timeout;
        let request = read_request(&mut socket, &mut buffer, limit).await;
        let said_all = request.said_all;
        match addressed(&fleet, request.asked) {
            Ok((watched, asked)) => (watched, asked, said_all),
            Err(reason) => {
                let answer = Answer::of(&Verdict::new(State::Down, reason));
                trace!("agent: unaddressed -> {}", answer.text());
                if write_line(&mut socket, answer.line().as_bytes()).await {
                    finish(socket, buffer, said_all, shared).await;
                }
                return;
            }
        }
    } else {
        let Choice::Target(single) = fleet.choose(None) else {
            return;
        };
        let wait_for_name = {
            let snapshot = single.snapshots.borrow();
            (snapshot.has_pools() && shared.pool.is_none())
                .then_some(snapshot.settings.request_timeout)
        };
        let (asked, said_all) = match (&shared.pool, wait_for_name) {
            (Some(pool), _) => (Asked::Pool(pool), false),
            (None, Some(limit)) => {
                let request = read_request(&mut socket, &mut buffer, limit).await;
                (request.asked, request.said_all)
            }
            (None, None) => (Asked::Nothing, false),
        };
        (single, asked, said_all)
    };
    let snapshot = Arc::clone(&watched.snapshots.borrow());
    let lookup = snapshot.lookup(asked);
    if let Lookup::Strictest(_, Unmatched::Unknown(name)) = lookup {
        log_unknown_once(shared, name);
    }
    let answer = snapshot.check(Instant::now(), lookup, Some(peer));
    trace!("agent: {asked:?} -> {}", answer.text());
    if !write_line(&mut socket, answer.line().as_bytes()).await {
        return;
    }
    drop(answer);
    drop(snapshot);
    finish(socket, buffer, said_all, shared).await;
}

/// The target and pool a fleet's request line names (`TARGET/POOL`, or
/// `TARGET` for its default policy); why not, when it names none that is
/// watched: that check is answered down (fail closed).
fn addressed<'f>(fleet: &'f Fleet, asked: Asked<'f>) -> Result<(&'f Watched, Asked<'f>), Reason> {
    let line = match asked {
        Asked::Pool(line) if !line.is_empty() => line,
        Asked::Pool(_) | Asked::Nothing | Asked::Default => {
            return Err(Reason::Addressed(Addressed::NoTarget));
        }
        Asked::Garbled => return Err(Reason::Addressed(Addressed::Garbled)),
    };
    let (target, pool) = match line.split_once('/') {
        Some((target, pool)) => (target, Asked::Pool(pool)),
        None => (line, Asked::Default),
    };
    match fleet.choose(Some(target)) {
        Choice::Target(watched) => Ok((watched, pool)),
        Choice::NoneNamed | Choice::Unknown => {
            let shown: String = target.chars().take(64).collect();
            Err(Reason::Addressed(Addressed::UnknownTarget(shown)))
        }
    }
}

/// After the reply: our FIN, then (unless the client said all it will)
/// whatever it still sends is read and dropped for a while.
async fn finish(socket: TcpStream, request: [u8; MAX_REQUEST], said_all: bool, shared: &Shared) {
    // Our FIN follows the line; the peer may now read to EOF.
    if SockRef::from(&socket).shutdown(Shutdown::Write).is_err() || said_all {
        // A client that sent its whole request (a line, and nothing after
        // it) has nothing left for the kernel to answer with a reset.
        return;
    }
    discard_until_closed(socket, request, shared).await;
}

/// Writes the reply. A fresh connection's send buffer takes one short line
/// whole, so it is sent at once, without waiting for the runtime to report
/// the socket writable; only a partial send waits, under [`WRITE_DEADLINE`].
async fn write_line(socket: &mut TcpStream, line: &[u8]) -> bool {
    let sent = match (&*SockRef::from(&*socket)).write(line) {
        Ok(sent) => sent,
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
        Err(err) => {
            debug!("agent: reply not written: {err}");
            return false;
        }
    };
    if sent == line.len() {
        return true;
    }
    match timeout(WRITE_DEADLINE, socket.write_all(&line[sent..])).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            debug!("agent: reply not written: {err}");
            false
        }
        Err(_) => {
            debug!("agent: reply not written within {WRITE_DEADLINE:?}");
            false
        }
    }
}

/// After the reply: whatever the peer still sends is read and dropped until
/// it closes, [`MAX_DISCARD`] bytes or [`LINGER`] pass, so that closing
/// never leaves unread input for the kernel to answer with a reset.
async fn discard_until_closed(mut socket: TcpStream, request: [u8; MAX_REQUEST], shared: &Shared) {
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

/// What a client sent before the reply.
struct Request<'a> {
    /// The pool its first line names, or why it names none.
    asked: Asked<'a>,
    /// It sent one whole line and nothing after it, or closed its side:
    /// it will send nothing more.
    said_all: bool,
}

/// The pool named by the first line the client sends, if a line arrives
/// within `limit`: trimmed, at most [`MAX_REQUEST`] bytes, UTF-8. Nothing
/// at all by then (or a close with nothing sent) names no pool; anything
/// else (a line cut off by the deadline, too long, binary) is garbled.
async fn read_request<'a>(
    socket: &mut TcpStream,
    buffer: &'a mut [u8; MAX_REQUEST],
    limit: Duration,
) -> Request<'a> {
    let unread = |filled: usize| Request {
        asked: if filled == 0 {
            Asked::Nothing
        } else {
            Asked::Garbled
        },
        said_all: false,
    };
    let deadline = Instant::now() + limit;
    let mut filled = 0;
    let (end, said_all) = loop {
        if filled == buffer.len() {
            return unread(filled);
        }
        match timeout_at(deadline, socket.read(&mut buffer[filled..])).await {
            // The client closed its side: what it sent is the line.
            Ok(Ok(0)) => break (filled, true),
            Ok(Ok(n)) => {
                let read = &buffer[filled..filled + n];
                if let Some(at) = read.iter().position(|b| matches!(b, b'\n' | b'\r')) {
                    // Only the line's own end after it: `\n`, `\r` or `\r\n`.
                    let rest = &read[at..];
                    let said_all =
                        rest.len() <= 2 && rest.iter().all(|b| matches!(b, b'\n' | b'\r'));
                    break (filled + at, said_all);
                }
                filled += n;
            }
            Ok(Err(_)) | Err(_) => return unread(filled),
        }
    };
    Request {
        asked: parse_pool(&buffer[..end]),
        said_all,
    }
}

/// What a request line asks for: a pool, as trimmed UTF-8 without control
/// characters; nothing, for a blank line; garbled otherwise.
pub fn parse_pool(line: &[u8]) -> Asked<'_> {
    match std::str::from_utf8(line).map(str::trim) {
        Ok("") => Asked::Nothing,
        Ok(name) if !name.contains(|c: char| c.is_control()) => Asked::Pool(name),
        _ => Asked::Garbled,
    }
}

fn log_unknown_once(shared: &Shared, name: &str) {
    let mut logged = lock(&shared.unknown_logged);
    if logged.len() < MAX_LOGGED_UNKNOWN && logged.insert(name.to_owned()) {
        let shown: String = name.chars().take(64).collect();
        warn!("agent: request for unknown pool {shown:?}; answering as the strictest pool");
        if logged.len() == MAX_LOGGED_UNKNOWN {
            warn!("agent: {MAX_LOGGED_UNKNOWN} unknown pool names logged; not logging more");
        }
    }
}
