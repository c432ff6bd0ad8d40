//! A real HAProxy (Debian's `haproxy`, 2.6) running the shipped
//! `haproxy/haproxy.cfg`, with every address supplied through the environment
//! variables the file reads, and a client for its admin stats socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::timeout;

use crate::process::{Lifetime, Process};
use crate::wait_until;

/// The configuration the project ships.
pub fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../haproxy/haproxy.cfg")
}

/// `haproxy/haproxy-fleet.cfg`: every server's agent is one central remora,
/// asked `TARGET/POOL`.
pub fn fleet_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../haproxy/haproxy-fleet.cfg")
}

/// The servers behind HAProxy and their remora agents.
#[derive(Debug, Clone, Copy)]
pub struct Targets {
    pub primary: SocketAddr,
    pub primary_agent: SocketAddr,
    pub replica: SocketAddr,
    pub replica_agent: SocketAddr,
    /// Below this many usable servers in `mysql_main`, reads go to `mysql_backup`.
    pub main_min_servers: u32,
}

/// Where HAProxy listens.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Binds {
    pub mysql: SocketAddr,
    pub writer: SocketAddr,
    pub stats: SocketAddr,
    pub socket: PathBuf,
}

impl Binds {
    /// Free loopback ports, the stats socket in `dir`.
    pub fn free(dir: &Path) -> Result<Binds> {
        let port = || -> Result<SocketAddr> {
            Ok(SocketAddr::from(([127, 0, 0, 1], crate::free_port()?)))
        };
        Ok(Binds {
            mysql: port()?,
            writer: port()?,
            stats: port()?,
            socket: dir.join("haproxy.sock"),
        })
    }
}

/// The environment `haproxy/haproxy.cfg` reads.
pub fn environment(targets: &Targets, binds: &Binds) -> Vec<(String, String)> {
    [
        ("HAPROXY_MYSQL_BIND", binds.mysql.to_string()),
        ("HAPROXY_WRITER_BIND", binds.writer.to_string()),
        ("HAPROXY_STATS_BIND", binds.stats.to_string()),
        ("HAPROXY_STATS_SOCKET", binds.socket.display().to_string()),
        ("MAIN_MIN_SERVERS", targets.main_min_servers.to_string()),
        ("PRIMARY_ADDR", targets.primary.to_string()),
        ("PRIMARY_AGENT_HOST", targets.primary_agent.ip().to_string()),
        (
            "PRIMARY_AGENT_PORT",
            targets.primary_agent.port().to_string(),
        ),
        // haproxy-fleet.cfg: one remora answers for both (the primary's).
        ("REMORA_AGENT_HOST", targets.primary_agent.ip().to_string()),
        (
            "REMORA_AGENT_PORT",
            targets.primary_agent.port().to_string(),
        ),
        ("REPLICA_ADDR", targets.replica.to_string()),
        ("REPLICA_AGENT_HOST", targets.replica_agent.ip().to_string()),
        (
            "REPLICA_AGENT_PORT",
            targets.replica_agent.port().to_string(),
        ),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

/// `haproxy -c`: validates `config` under `env`; the checker's output on failure.
pub fn check(config: &Path, env: &[(String, String)]) -> Result<()> {
    let output = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(config)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .context("running haproxy -c (is haproxy installed? `make deps`)")?;
    if !output.status.success() {
        bail!(
            "haproxy -c -f {} failed:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// One server as `show stat` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    /// `UP`, `DOWN`, `DRAIN`, `MAINT`, … (HAProxy may add a suffix such as `(agent)`).
    pub status: String,
    /// Effective weight.
    pub weight: u32,
    pub agent_status: String,
    pub agent_desc: String,
    /// Sessions handled since start.
    pub sessions: u64,
}

#[derive(Debug)]
pub struct Haproxy {
    pub binds: Binds,
    process: Process,
    dir: PathBuf,
    _scratch: Option<tempfile::TempDir>,
}

impl Haproxy {
    /// The shipped config on free ports in a temporary directory, killed on drop.
    pub async fn start(targets: &Targets) -> Result<Haproxy> {
        let scratch = tempfile::Builder::new()
            .prefix("remora-haproxy-")
            .tempdir()
            .context("creating a temporary directory")?;
        let binds = Binds::free(scratch.path())?;
        let mut haproxy = Haproxy::start_in(scratch.path(), targets, binds, Lifetime::Tied).await?;
        haproxy._scratch = Some(scratch);
        Ok(haproxy)
    }

    /// `config` (one of `haproxy/*.cfg`) on free ports in a temporary
    /// directory, killed on drop.
    pub async fn start_config(config: &Path, targets: &Targets) -> Result<Haproxy> {
        let scratch = tempfile::Builder::new()
            .prefix("remora-haproxy-")
            .tempdir()
            .context("creating a temporary directory")?;
        let binds = Binds::free(scratch.path())?;
        let mut haproxy =
            Haproxy::start_with(scratch.path(), config, targets, binds, Lifetime::Tied).await?;
        haproxy._scratch = Some(scratch);
        Ok(haproxy)
    }

    /// The shipped config with `binds`, logging into `dir`.
    pub async fn start_in(
        dir: &Path,
        targets: &Targets,
        binds: Binds,
        lifetime: Lifetime,
    ) -> Result<Haproxy> {
        Haproxy::start_with(dir, &shipped_config(), targets, binds, lifetime).await
    }

    async fn start_with(
        dir: &Path,
        config: &Path,
        targets: &Targets,
        binds: Binds,
        lifetime: Lifetime,
    ) -> Result<Haproxy> {
        let env = environment(targets, &binds);
        check(config, &env)?;
        let mut command = Command::new("haproxy");
        // -db: stay in the foreground, so the pid we hold is HAProxy's.
        command.arg("-db").arg("-f").arg(config);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let process = Process::spawn("haproxy", command, &dir.join("haproxy.log"), lifetime)?;
        let mut haproxy = Haproxy {
            binds,
            process,
            dir: dir.to_owned(),
            _scratch: None,
        };
        haproxy.wait_ready().await?;
        Ok(haproxy)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let waited = wait_until(
            "haproxy's stats socket to answer",
            Duration::from_secs(10),
            async || {
                if self.command("show info").await.is_ok() {
                    return Ok(Some(()));
                }
                ensure!(self.process.is_running(), "haproxy exited during start-up");
                Ok(None)
            },
        )
        .await;
        waited.with_context(|| self.log())
    }

    pub fn log(&self) -> String {
        crate::process::log_tail(&self.dir.join("haproxy.log"), 40)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops HAProxy (SIGTERM, then SIGKILL after a second), as a dead
    /// load balancer would: nobody asks the agents any more.
    pub fn stop(&mut self) {
        self.process.terminate(Duration::from_secs(1));
    }

    /// Stops tracking HAProxy so it outlives this process; returns its pid.
    pub fn detach(self) -> u32 {
        self.process.detach()
    }

    /// One command on the admin stats socket; its whole answer.
    pub async fn command(&self, command: &str) -> Result<String> {
        timeout(Duration::from_secs(3), async {
            let mut socket = UnixStream::connect(&self.binds.socket).await?;
            socket.write_all(format!("{command}\n").as_bytes()).await?;
            let mut answer = String::new();
            socket.read_to_string(&mut answer).await?;
            anyhow::Ok(answer)
        })
        .await
        .map_err(|_| anyhow!("stats socket: {command:?} timed out"))?
    }

    /// `show stat`, one map of column → value per proxy/server line.
    pub async fn stats(&self) -> Result<Vec<HashMap<String, String>>> {
        let csv = self.command("show stat").await?;
        let mut lines = csv.lines();
        let header = lines
            .next()
            .and_then(|line| line.strip_prefix("# "))
            .context("show stat: no header")?;
        let columns: Vec<&str> = header.split(',').collect();
        Ok(lines
            .filter(|line| !line.is_empty())
            .map(|line| {
                columns
                    .iter()
                    .zip(line.split(','))
                    .map(|(column, value)| (column.to_string(), value.to_string()))
                    .collect()
            })
            .collect())
    }

    /// One server of one backend (`server` may be `BACKEND` for the backend's own line).
    pub async fn server(&self, backend: &str, server: &str) -> Result<ServerStat> {
        let row = self
            .stats()
            .await?
            .into_iter()
            .find(|row| {
                row.get("pxname").map(String::as_str) == Some(backend)
                    && row.get("svname").map(String::as_str) == Some(server)
            })
            .with_context(|| format!("show stat has no {backend}/{server}"))?;
        let field = |name: &str| row.get(name).cloned().unwrap_or_default();
        Ok(ServerStat {
            status: field("status"),
            weight: field("weight").parse().unwrap_or(0),
            agent_status: field("agent_status"),
            agent_desc: field("agent_desc"),
            sessions: field("stot").parse().unwrap_or(0),
        })
    }

    /// `show servers state <backend>`, the named server's columns.
    pub async fn server_state(
        &self,
        backend: &str,
        server: &str,
    ) -> Result<HashMap<String, String>> {
        let answer = self
            .command(&format!("show servers state {backend}"))
            .await?;
        let mut lines = answer.lines().skip(1);
        let header = lines
            .next()
            .and_then(|line| line.strip_prefix("# "))
            .context("show servers state: no header")?;
        let columns: Vec<&str> = header.split_whitespace().collect();
        lines
            .map(|line| -> HashMap<String, String> {
                columns
                    .iter()
                    .zip(line.split_whitespace())
                    .map(|(column, value)| (column.to_string(), value.to_string()))
                    .collect()
            })
            .find(|row| row.get("srv_name").map(String::as_str) == Some(server))
            .with_context(|| format!("show servers state has no {backend}/{server}"))
    }

    /// Polls `show stat` until `backend/server` satisfies `condition`; returns
    /// the distinct (status, weight) pairs seen, in order.
    pub async fn watch_server(
        &self,
        backend: &str,
        server: &str,
        limit: Duration,
        condition: impl Fn(&ServerStat) -> bool,
    ) -> Result<Vec<ServerStat>> {
        let mut seen: Vec<ServerStat> = Vec::new();
        let what = format!("{backend}/{server} to satisfy the condition");
        let waited = wait_until(&what, limit, async || {
            let stat = self.server(backend, server).await?;
            let done = condition(&stat);
            if seen
                .last()
                .is_none_or(|last| (&last.status, last.weight) != (&stat.status, stat.weight))
            {
                seen.push(stat);
            }
            Ok(done.then_some(()))
        })
        .await;
        match waited {
            Ok(()) => Ok(seen),
            Err(err) => Err(err.context(format!("saw {seen:#?}"))),
        }
    }
}
