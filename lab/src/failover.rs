//! A cluster to fail over, for real: a primary and four replicas (one of
//! them behind another, a chain), one central remora watching all five,
//! and a HAProxy with `haproxy/haproxy-fleet.cfg`'s reader and writer
//! backends, one server line per server. A writer writes a sequence
//! through HAProxy, each row saying which server it landed on; readers
//! read through it. What tests/topology.rs drives.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::Remora;
use crate::engine::Engine;
use crate::haproxy::{Haproxy, Release, Targets, fleet_config, show_stat};
use crate::server::{Server, root_through};
use crate::topology::Topology;

/// The targets, in the order the topology starts them: `db-a` the
/// primary, then its replicas (`db-d` is moved behind `db-c`).
pub const NAMES: [&str; 5] = ["db-a", "db-b", "db-c", "db-d", "db-e"];

/// How often the central remora polls each server.
pub const POLL: Duration = Duration::from_millis(500);

/// The central remora's configuration, less its targets: reads ask `main`
/// (and `backup`), writes `writer`; no heartbeat, so only replica status
/// and the topology speak; a better verdict is believed at once.
const POOLS: &str = "mysql: {user: remora, password_env: REMORA_MYSQL_PASSWORD, connect_timeout: 1s, query_timeout: 1s}
poll: {interval: 500ms, stale_after: 5s}
lag: {source: replica_status}
pools:
  main: {drain_at: 10s, down_at: 30s, recover_after: 1}
  backup: {drain_at: 1h, down_at: 2h}
  writer: {role: primary, recover_after: 1}
";

/// Five servers, the remora watching them and the HAProxy in front.
#[derive(Debug)]
pub struct Cluster {
    pub topology: Topology,
    pub remora: Remora,
    pub haproxy: Haproxy,
    _config: tempfile::TempDir,
}

impl Cluster {
    /// Starts it all: `db-a` writable, `db-b`, `db-c`, `db-e` following it,
    /// `db-d` following `db-c`; returns once HAProxy has `db-a` alone in
    /// its writer backend and every server in its reader backend.
    pub async fn start(engine: Engine, release: Release, remora_bin: &Path) -> Result<Cluster> {
        let topology = Topology::start_on(engine, NAMES.len() - 1).await?;
        topology.replicas[2].repoint(&topology.replicas[1]).await?;
        topology
            .primary
            .exec(&[
                "CREATE TABLE lab.writes (seq BIGINT PRIMARY KEY, origin INT NOT NULL, \
                 at DATETIME(6) NOT NULL)",
                "CREATE TABLE IF NOT EXISTS lab.beat (id INT PRIMARY KEY, ts DATETIME(6) NOT NULL)",
                "INSERT IGNORE INTO lab.beat VALUES (1, UTC_TIMESTAMP(6))",
            ])
            .await?;
        topology.wait_caught_up(Duration::from_secs(20)).await?;
        let servers: Vec<&Server> = std::iter::once(&topology.primary)
            .chain(&topology.replicas)
            .collect();
        let targets: String = (NAMES.iter().zip(&servers))
            .map(|(name, server)| {
                format!(
                    "  {name}: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n",
                    server.port
                )
            })
            .collect();
        let remora = Remora::start(remora_bin, &format!("{POOLS}targets:\n{targets}")).await?;
        let config = tempfile::tempdir()?;
        let path = config.path().join("haproxy.cfg");
        let lines: Vec<(&str, SocketAddr)> = (NAMES.iter().zip(&servers))
            .map(|(name, server)| (*name, SocketAddr::from(([127, 0, 0, 1], server.port))))
            .collect();
        std::fs::write(&path, fleet_config_for(&lines)?)?;
        let at = |server: &Server| SocketAddr::from(([127, 0, 0, 1], server.port));
        let env = Targets {
            primary: at(servers[0]),
            primary_agent: remora.agent,
            replica: at(servers[1]),
            replica_agent: remora.agent,
            main_min_servers: 1,
        };
        let haproxy = Haproxy::start_config_on(release, &path, &env).await?;
        let cluster = Cluster {
            topology,
            remora,
            haproxy,
            _config: config,
        };
        cluster
            .wait_writers(&["db-a"], Duration::from_secs(30))
            .await?;
        for name in NAMES {
            (cluster.haproxy)
                .watch_server("mysql_main", name, Duration::from_secs(30), |s| {
                    s.status == "UP"
                })
                .await?;
        }
        Ok(cluster)
    }

    /// Server `name`.
    pub fn server(&self, name: &str) -> &Server {
        self.server_at(index(name))
    }

    pub fn server_mut(&mut self, name: &str) -> &mut Server {
        match index(name) {
            0 => &mut self.topology.primary,
            at => &mut self.topology.replicas[at - 1],
        }
    }

    fn server_at(&self, at: usize) -> &Server {
        match at {
            0 => &self.topology.primary,
            at => &self.topology.replicas[at - 1],
        }
    }

    /// `@@server_id` of server `name`: the lab numbers them from 1.
    pub fn server_id(name: &str) -> u32 {
        index(name) as u32 + 1
    }

    /// Until HAProxy's writer backend has exactly `names` up.
    pub async fn wait_writers(&self, names: &[&str], limit: Duration) -> Result<()> {
        let socket = self.haproxy.binds.socket.clone();
        let what = format!("HAProxy's writer backend to hold {names:?}");
        crate::wait_until(&what, limit, async || {
            let up = writers_up(&socket).await?;
            Ok((up == names).then_some(()))
        })
        .await
    }

    /// The sequence numbers of the writes that landed on `name`, read on
    /// `name` itself (each row says where it was written).
    pub async fn landed_on(&self, name: &str) -> Result<Vec<u64>> {
        let rows = self
            .server(name)
            .rows(&format!(
                "SELECT seq FROM lab.writes WHERE origin = {} ORDER BY seq",
                Cluster::server_id(name)
            ))
            .await?;
        Ok(rows.into_iter().filter_map(|row| row.get(0)).collect())
    }

    /// The central remora's changes of what target `name` answers `pool`:
    /// (when, the new agent line, its reason), oldest first.
    pub async fn changes(&self, name: &str, pool: &str) -> Result<Vec<Change>> {
        let events = self.remora.json(&format!("/events?target={name}")).await?;
        let mut changes: Vec<Change> = (events["events"].as_array().into_iter().flatten())
            .filter(|event| event["pool"] == pool)
            .filter_map(|event| {
                Some(Change {
                    at: humantime::parse_rfc3339_weak(event["at"].as_str()?).ok()?,
                    to: event["to"].as_str()?.to_owned(),
                    reason: event["reason"].as_str().unwrap_or_default().to_owned(),
                })
            })
            .collect();
        changes.sort_by_key(|change| change.at);
        Ok(changes)
    }

    /// When the central remora polled target `name`, oldest first.
    pub async fn polls(&self, name: &str) -> Result<Vec<SystemTime>> {
        let (code, csv) = (self.remora)
            .get(&format!("/history?target={name}&format=csv"))
            .await?;
        if code != 200 {
            bail!("/history?target={name}: {code}");
        }
        let mut lines = csv.lines().filter(|line| !line.starts_with('#'));
        let header: Vec<&str> = lines.next().context("no header")?.split(',').collect();
        let at = (header.iter())
            .position(|column| *column == "at")
            .context("no at column")?;
        Ok(lines
            .filter_map(|line| line.split(',').nth(at)?.parse::<u64>().ok())
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
            .collect())
    }

    /// Where HAProxy takes writes and reads.
    pub fn frontends(&self) -> (SocketAddr, SocketAddr) {
        (self.haproxy.binds.writer, self.haproxy.binds.mysql)
    }

    pub fn stats_socket(&self) -> PathBuf {
        self.haproxy.binds.socket.clone()
    }
}

fn index(name: &str) -> usize {
    NAMES
        .iter()
        .position(|known| *known == name)
        .unwrap_or_else(|| panic!("no server {name}"))
}

/// One change of what remora answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub at: SystemTime,
    pub to: String,
    pub reason: String,
}

/// The servers UP in HAProxy's writer backend now.
pub async fn writers_up(socket: &Path) -> Result<Vec<String>> {
    let stats = show_stat(socket).await?;
    Ok((stats.iter())
        .filter(|row| row.get("pxname").map(String::as_str) == Some("mysql_writer"))
        .filter(|row| {
            row.get("svname")
                .is_some_and(|name| name != "BACKEND" && name != "FRONTEND")
        })
        .filter(|row| {
            row.get("status")
                .is_some_and(|status| status.starts_with("UP"))
        })
        .filter_map(|row| row.get("svname").cloned())
        .collect())
}

/// `haproxy/haproxy-fleet.cfg` with a server line per `servers` entry in
/// each backend, asking the central remora `NAME/POOL` as the shipped
/// lines do.
pub fn fleet_config_for(servers: &[(&str, SocketAddr)]) -> Result<String> {
    let shipped = std::fs::read_to_string(fleet_config())?;
    let mut config = String::new();
    for line in shipped.lines() {
        let Some(server) = line.trim_start().strip_prefix("server ") else {
            config.push_str(line);
            config.push('\n');
            continue;
        };
        // `server primary "${PRIMARY_ADDR-…}" agent-send "primary/POOL\n"`:
        // the first line of a backend gives its pool; the others go.
        let Some(pool) = server
            .strip_prefix("primary ")
            .and_then(|rest| rest.split("agent-send \"primary/").nth(1))
            .and_then(|rest| rest.split('\\').next())
        else {
            continue;
        };
        for (name, addr) in servers {
            config.push_str(&format!(
                "    server {name} {addr} agent-send \"{name}/{pool}\\n\"\n"
            ));
        }
    }
    Ok(config)
}

/// HAProxy's writer backend sampled every 100 ms: when, and who was UP.
#[derive(Debug)]
pub struct WriterSamples {
    stop: CancellationToken,
    task: JoinHandle<Vec<(SystemTime, Vec<String>)>>,
}

impl WriterSamples {
    pub fn start(socket: PathBuf) -> WriterSamples {
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut samples = Vec::new();
                while !stop.is_cancelled() {
                    if let Ok(up) = writers_up(&socket).await {
                        samples.push((SystemTime::now(), up));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.cancelled() => {}
                    }
                }
                samples
            }
        });
        WriterSamples { stop, task }
    }

    pub async fn finish(self) -> Vec<(SystemTime, Vec<String>)> {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// One write: its sequence number, when it was sent, and whether the
/// client saw it succeed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Write {
    pub seq: u64,
    pub sent: SystemTime,
    pub ok: bool,
}

/// An application writing through HAProxy: one pooled connection,
/// reopened when cut; every `every` a row (`seq`, the server it lands on)
/// and the heartbeat row readers read.
#[derive(Debug)]
pub struct Writes {
    stop: CancellationToken,
    task: JoinHandle<Vec<Write>>,
}

/// An application's connect and query timeouts.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

impl Writes {
    pub fn start(addr: SocketAddr, every: Duration) -> Writes {
        let stop = CancellationToken::new();
        let task = tokio::spawn(write_until(addr, every, stop.clone()));
        Writes { stop, task }
    }

    /// Stops writing; every write made, in order.
    pub async fn finish(self) -> Vec<Write> {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

async fn write_until(addr: SocketAddr, every: Duration, stop: CancellationToken) -> Vec<Write> {
    let opts = root_through(addr);
    let mut writes = Vec::new();
    let mut conn: Option<Conn> = None;
    while !stop.is_cancelled() && writes.len() < 100_000 {
        let seq = writes.len() as u64 + 1;
        let sent = SystemTime::now();
        if conn.is_none() {
            conn = timeout(CLIENT_TIMEOUT, Conn::new(opts.clone()))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let ok = match conn.as_mut() {
            None => false,
            Some(c) => {
                let statements = format!(
                    "INSERT INTO lab.writes VALUES ({seq}, @@server_id, UTC_TIMESTAMP(6)); \
                     UPDATE lab.beat SET ts = UTC_TIMESTAMP(6) WHERE id = 1"
                );
                matches!(
                    timeout(CLIENT_TIMEOUT, c.query_drop(statements)).await,
                    Ok(Ok(()))
                )
            }
        };
        if !ok {
            conn = None;
        }
        writes.push(Write { seq, sent, ok });
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => {}
        }
    }
    writes
}
