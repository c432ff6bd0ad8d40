//! Applications reading through HAProxy, the two ways they connect: short
//! connections (one per read: PHP, scripts, serverless) and pooled ones
//! (kept open for the whole run, reconnecting only when cut: HikariCP, Go's
//! `database/sql`, SQLAlchemy). Each read records when it was made, which
//! server answered (`@@server_id`), how stale its data was (the reader's
//! clock minus the heartbeat row's timestamp: one host, one clock), or the
//! failure the client saw. Bounded in time (until stopped) and in count.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::Writer;
use crate::server::{Server, root_through};

/// How often the heartbeat row is written on the primary.
pub const BEAT_EVERY: Duration = Duration::from_millis(100);
/// An application's connect and query timeouts.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most reads one client makes, whatever the run's length.
const MAX_READS: usize = 100_000;

/// Writes the heartbeat row (`lab.beat`, one row, the primary's UTC time)
/// every [`BEAT_EVERY`] until dropped.
pub async fn beat(primary: &Server) -> Result<Writer> {
    primary
        .exec(&[
            "CREATE TABLE IF NOT EXISTS lab.beat (id INT PRIMARY KEY, ts DATETIME(6) NOT NULL)",
            "INSERT IGNORE INTO lab.beat VALUES (1, UTC_TIMESTAMP(6))",
        ])
        .await?;
    Ok(primary.keep_writing(
        "UPDATE lab.beat SET ts = UTC_TIMESTAMP(6) WHERE id = 1",
        BEAT_EVERY,
    ))
}

/// The read every client makes: who answers, and the row's time.
const READ: &str =
    "SELECT @@server_id, DATE_FORMAT(ts, '%Y-%m-%d %H:%i:%s.%f') FROM lab.beat WHERE id = 1";

/// How an application connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Client {
    /// A connection per read.
    Short,
    /// One connection, kept until cut.
    Pooled,
}

impl Client {
    pub const ALL: [Client; 2] = [Client::Short, Client::Pooled];

    pub fn label(self) -> &'static str {
        match self {
            Client::Short => "short",
            Client::Pooled => "pooled",
        }
    }
}

/// What went wrong, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    /// The connection was refused (nothing accepted it).
    Refused,
    /// The connection was accepted, then closed before it was usable.
    Reset,
    /// A connection in use was cut under a query.
    CutOff,
    /// No answer within [`CLIENT_TIMEOUT`].
    TimedOut,
}

impl Failure {
    pub const ALL: [Failure; 4] = [
        Failure::Refused,
        Failure::Reset,
        Failure::CutOff,
        Failure::TimedOut,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Reset => "reset",
            Failure::CutOff => "cut off",
            Failure::TimedOut => "timed out",
        }
    }
}

/// One read.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// When it was made, since the load started.
    pub at: Duration,
    pub client: Client,
    /// Which client of the load made it.
    pub by: usize,
    /// What it read, or why not.
    pub outcome: Result<Served, Failure>,
}

/// A read that came back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    pub server_id: u32,
    pub staleness: Duration,
}

/// Clients reading through one address until stopped.
#[derive(Debug)]
pub struct Load {
    stop: CancellationToken,
    clients: Vec<JoinHandle<Vec<Read>>>,
}

impl Load {
    /// `each` clients of each kind reading every `every`, short ones
    /// through `short`, pooled ones through `pooled` (a backend of their
    /// own: a balancer counting connections must not see the pooled ones
    /// when it places the short), times counted from `start`.
    pub fn start(
        (short, pooled): (SocketAddr, SocketAddr),
        each: usize,
        every: Duration,
        start: Instant,
    ) -> Load {
        let stop = CancellationToken::new();
        let clients = (Client::ALL.iter())
            .flat_map(|client| std::iter::repeat_n(*client, each))
            .enumerate()
            .map(|(by, client)| {
                let stop = stop.clone();
                let addr = match client {
                    Client::Short => short,
                    Client::Pooled => pooled,
                };
                tokio::spawn(reader(addr, (client, by), every, start, stop))
            })
            .collect();
        Load { stop, clients }
    }

    /// Stops every client and gathers their reads, in time order.
    pub async fn finish(self) -> Vec<Read> {
        self.stop.cancel();
        let mut reads = Vec::new();
        for client in self.clients {
            reads.extend(client.await.unwrap_or_default());
        }
        reads.sort_by_key(|read| read.at);
        reads
    }
}

async fn reader(
    addr: SocketAddr,
    (client, by): (Client, usize),
    every: Duration,
    start: Instant,
    stop: CancellationToken,
) -> Vec<Read> {
    let mut reads = Vec::new();
    let mut pooled: Option<Conn> = None;
    while !stop.is_cancelled() && reads.len() < MAX_READS {
        let at = start.elapsed();
        let outcome = match client {
            Client::Short => short_read(addr).await,
            Client::Pooled => pooled_read(addr, &mut pooled).await,
        };
        reads.push(Read {
            at,
            client,
            by,
            outcome,
        });
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => {}
        }
    }
    if let Some(conn) = pooled {
        let _ = timeout(CLIENT_TIMEOUT, conn.disconnect()).await;
    }
    reads
}

async fn short_read(addr: SocketAddr) -> Result<Served, Failure> {
    let mut conn = connect(addr).await?;
    let read = query(&mut conn).await;
    let _ = timeout(CLIENT_TIMEOUT, conn.disconnect()).await;
    read
}

/// A read on the pool's connection, opened when there is none; a failed
/// one is dropped, and the next read opens another.
async fn pooled_read(addr: SocketAddr, pooled: &mut Option<Conn>) -> Result<Served, Failure> {
    let conn = match pooled {
        Some(conn) => conn,
        None => pooled.insert(connect(addr).await?),
    };
    let read = query(conn).await;
    if read.is_err() {
        *pooled = None;
    }
    read
}

async fn connect(addr: SocketAddr) -> Result<Conn, Failure> {
    let opts = root_through(addr);
    match timeout(CLIENT_TIMEOUT, Conn::new(opts)).await {
        Err(_) => Err(Failure::TimedOut),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(err)) if refused(&err) => Err(Failure::Refused),
        Ok(Err(_)) => Err(Failure::Reset),
    }
}

async fn query(conn: &mut Conn) -> Result<Served, Failure> {
    let row: Option<(u32, String)> = match timeout(CLIENT_TIMEOUT, conn.query_first(READ)).await {
        Err(_) => return Err(Failure::TimedOut),
        Ok(Err(_)) => return Err(Failure::CutOff),
        Ok(Ok(row)) => row,
    };
    let (server_id, stamp) = row.ok_or(Failure::CutOff)?;
    let written = humantime::parse_rfc3339_weak(&stamp).map_err(|_| Failure::CutOff)?;
    let staleness = SystemTime::now()
        .duration_since(written)
        .unwrap_or(Duration::ZERO);
    Ok(Served {
        server_id,
        staleness,
    })
}

fn refused(err: &mysql_async::Error) -> bool {
    match err {
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => {
            io.kind() == std::io::ErrorKind::ConnectionRefused
        }
        _ => false,
    }
}
