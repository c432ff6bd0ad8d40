//! A real HAProxy running the shipped `haproxy/haproxy.cfg`, with every
//! address supplied through the environment variables the file reads, and a
//! client for its admin stats socket: Debian 12's (2.6), or sid's (3.x,
//! from the sid root, [`crate::sid`]), which new deployments run.

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
use crate::sid::Root;
use crate::wait_until;

/// Which HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Debian 12's HAProxy (2.6), from the host.
    Debian,
    /// sid's HAProxy (3.x), from the sid root: what new deployments run.
    Sid,
}

impl Release {
    pub const ALL: [Release; 2] = [Release::Debian, Release::Sid];

    pub fn root(self) -> Result<Option<&'static Root>> {
        match self {
            Release::Debian => Ok(None),
            Release::Sid => Root::find().map(Some),
        }
    }

    /// `haproxy`, run where this release lives.
    fn command(self) -> Result<Command> {
        Ok(match self.root()? {
            Some(root) => root.command("haproxy"),
            None => Command::new("haproxy"),
        })
    }

    /// A directory this release can read and write (under the sid root
    /// for sid's), removed on drop.
    pub fn scratch(self) -> Result<tempfile::TempDir> {
        match self.root()? {
            Some(root) => root.tempdir("remora-haproxy-"),
            None => tempfile::Builder::new()
                .prefix("remora-haproxy-")
                .tempdir()
                .context("creating a temporary directory"),
        }
    }

    /// `host` as this release's HAProxy sees it.
    fn path(self, host: &Path) -> Result<PathBuf> {
        match self.root()? {
            Some(root) => root.inside(host),
            None => Ok(host.to_owned()),
        }
    }

    /// `config` where this release can read it: copied into `dir` (under
    /// the sid root) for sid's; its path as HAProxy sees it.
    fn config(self, config: &Path, dir: &Path) -> Result<PathBuf> {
        match self {
            Release::Debian => Ok(config.to_owned()),
            Release::Sid => {
                let name = config.file_name().context("a config file name")?;
                let copy = dir.join(name);
                std::fs::copy(config, &copy)
                    .with_context(|| format!("copying {} into the sid root", config.display()))?;
                self.path(&copy)
            }
        }
    }

    /// What `haproxy -v` says of itself.
    pub fn version(self) -> Result<String> {
        let output = self
            .command()?
            .arg("-v")
            .output()
            .context("running haproxy -v")?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text.lines().next().unwrap_or_default().trim().to_owned())
    }
}

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

/// `haproxy -c` on Debian 12's HAProxy: see [`check_on`].
pub fn check(config: &Path, env: &[(String, String)]) -> Result<()> {
    check_on(Release::Debian, config, env)
}

/// `haproxy -c` on `release`: validates `config` under `env`, warnings
/// included (a warning today is an error in a later release); the
/// checker's output on failure.
pub fn check_on(release: Release, config: &Path, env: &[(String, String)]) -> Result<()> {
    let scratch = release.scratch()?;
    let seen = release.config(config, scratch.path())?;
    let output = release
        .command()?
        .arg("-c")
        .arg("-f")
        .arg(&seen)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .context("running haproxy -c (is haproxy installed? `make deps`)")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() || said.contains("[WARNING]") {
        bail!(
            "haproxy -c -f {} ({release:?}) {}:\n{said}",
            config.display(),
            if output.status.success() {
                "warned"
            } else {
                "failed"
            }
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
    pub release: Release,
    process: Process,
    dir: PathBuf,
    _scratch: Option<tempfile::TempDir>,
}

impl Haproxy {
    /// Debian 12's HAProxy running the shipped config on free ports in a
    /// temporary directory, killed on drop.
    pub async fn start(targets: &Targets) -> Result<Haproxy> {
        Haproxy::start_config_on(Release::Debian, &shipped_config(), targets).await
    }

    /// Debian 12's HAProxy running `config` (one of `haproxy/*.cfg`): see
    /// [`Haproxy::start_config_on`].
    pub async fn start_config(config: &Path, targets: &Targets) -> Result<Haproxy> {
        Haproxy::start_config_on(Release::Debian, config, targets).await
    }

    /// `release` running `config` on free ports in a temporary directory,
    /// killed on drop.
    pub async fn start_config_on(
        release: Release,
        config: &Path,
        targets: &Targets,
    ) -> Result<Haproxy> {
        let scratch = release.scratch()?;
        let binds = Binds::free(scratch.path())?;
        let dir = scratch.path();
        let mut haproxy =
            Haproxy::start_with(release, (dir, config), targets, binds, Lifetime::Tied).await?;
        haproxy._scratch = Some(scratch);
        Ok(haproxy)
    }

    /// `release` running the shipped config with `binds`, logging into
    /// `dir` (which it must reach: see [`Release::scratch`]).
    pub async fn start_in(
        release: Release,
        dir: &Path,
        targets: &Targets,
        (binds, lifetime): (Binds, Lifetime),
    ) -> Result<Haproxy> {
        Haproxy::start_with(release, (dir, &shipped_config()), targets, binds, lifetime).await
    }

    async fn start_with(
        release: Release,
        (dir, config): (&Path, &Path),
        targets: &Targets,
        binds: Binds,
        lifetime: Lifetime,
    ) -> Result<Haproxy> {
        // HAProxy opens its stats socket where it sees the path.
        let seen = Binds {
            socket: release.path(&binds.socket)?,
            ..binds.clone()
        };
        let env = environment(targets, &seen);
        check_on(release, config, &env)?;
        let mut command = release.command()?;
        // -db: stay in the foreground, so the pid we hold is HAProxy's.
        command
            .arg("-db")
            .arg("-f")
            .arg(release.config(config, dir)?);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let process = Process::spawn("haproxy", command, &dir.join("haproxy.log"), lifetime)?;
        let mut haproxy = Haproxy {
            binds,
            release,
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
        command_on(&self.binds.socket, command).await
    }

    /// `show stat`, one map of column → value per proxy/server line.
    pub async fn stats(&self) -> Result<Vec<HashMap<String, String>>> {
        show_stat(&self.binds.socket).await
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

/// One command on the admin stats socket at `socket`; its whole answer.
pub async fn command_on(socket: &Path, command: &str) -> Result<String> {
    timeout(Duration::from_secs(3), async {
        let mut socket = UnixStream::connect(socket).await?;
        socket.write_all(format!("{command}\n").as_bytes()).await?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await?;
        anyhow::Ok(answer)
    })
    .await
    .map_err(|_| anyhow!("stats socket: {command:?} timed out"))?
}

/// `show stat` on the stats socket at `socket`, one map of column → value
/// per proxy/server line.
pub async fn show_stat(socket: &Path) -> Result<Vec<HashMap<String, String>>> {
    let csv = command_on(socket, "show stat").await?;
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
