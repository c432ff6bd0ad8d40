//! `remora-lab`: the native lab behind the Makefile (`make up`, `make down`,
//! `make start-lag`, ...) and `make demo`. Lab-only credentials: root/secret.
// The lab runs and times real processes: the wall clock, on purpose.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use remora_lab::Engine;
use remora_lab::haproxy::{Binds, Haproxy, Release, Targets};
use remora_lab::process::{kill_recorded, pid_is_running};
use remora_lab::remora::{
    agent_reply, agent_request, binary_beside_me, bound_ports, launch, set_keys,
};
use remora_lab::{Lifetime, Pair};

#[derive(Debug, Parser)]
#[command(
    about = "remora's native lab: a MySQL or MariaDB primary + replica and a remora beside each, on loopback"
)]
struct Cli {
    /// Where a lab started by `up` keeps its datadirs, logs and state.
    #[arg(long, env = "LAB_DIR", default_value_os_t = default_dir())]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// What `up` runs, and where it listens.
#[derive(Debug, Args)]
struct UpArgs {
    /// The servers: mariadb (Debian 12's 10.11), mariadb-lts (sid's 11.x)
    /// or mysql (sid's 9.x); the sid ones come from `make deps`'s root.
    #[arg(long, env = "SERVER", default_value = "mariadb", value_parser = Engine::from_label)]
    server: Engine,
    /// The HAProxy: debian (2.6) or sid (3.x).
    #[arg(long, env = "HAPROXY", default_value = "debian", value_parser = release_of)]
    haproxy: Release,
    #[arg(long, env = "PRIMARY_PORT", default_value_t = 3306)]
    primary_port: u16,
    #[arg(long, env = "REPLICA_PORT", default_value_t = 3307)]
    replica_port: u16,
    /// remora beside the primary: agent port; its HTTP port is this + 1
    /// (0: any free ports, as remora reports them).
    #[arg(long, env = "PRIMARY_AGENT_PORT", default_value_t = 9258)]
    primary_agent_port: u16,
    /// remora beside the replica: agent port; its HTTP port is this + 1
    /// (0: any free ports, as remora reports them).
    #[arg(long, env = "REPLICA_AGENT_PORT", default_value_t = 9358)]
    replica_agent_port: u16,
    /// HAProxy's read frontend.
    #[arg(long, env = "HAPROXY_MYSQL_BIND", default_value = "127.0.0.1:3310")]
    haproxy_mysql: SocketAddr,
    /// HAProxy's writer frontend.
    #[arg(long, env = "HAPROXY_WRITER_BIND", default_value = "127.0.0.1:3311")]
    haproxy_writer: SocketAddr,
    /// HAProxy's stats page.
    #[arg(long, env = "HAPROXY_STATS_BIND", default_value = "127.0.0.1:8404")]
    haproxy_stats: SocketAddr,
}

fn release_of(label: &str) -> Result<Release> {
    match label {
        "debian" => Ok(Release::Debian),
        "sid" => Ok(Release::Sid),
        other => bail!("no HAProxy {other:?}: debian (2.6) or sid (3.x)"),
    }
}

impl UpArgs {
    /// The ports, with HAProxy's admin socket in its folder.
    fn ports(self, dir: &Path) -> Result<Ports> {
        let socket = haproxy_dir(self.haproxy, dir)?.join("haproxy.sock");
        Ok(Ports {
            server: self.server,
            release: self.haproxy,
            primary: self.primary_port,
            replica: self.replica_port,
            primary_agent: self.primary_agent_port,
            replica_agent: self.replica_agent_port,
            haproxy: Binds {
                mysql: self.haproxy_mysql,
                writer: self.haproxy_writer,
                stats: self.haproxy_stats,
                socket,
            },
        })
    }
}

/// Where `release`'s HAProxy keeps its files: the lab's folder, or for
/// sid's a folder of the sid root, the lab's own.
fn haproxy_dir(release: Release, lab_dir: &Path) -> Result<PathBuf> {
    Ok(match release.root()? {
        Some(root) => root.path.join("srv").join(in_root(lab_dir, "haproxy")),
        None => lab_dir.to_owned(),
    })
}

/// A folder name in the sid root for the lab in `lab_dir`: two labs in
/// two folders (a clone's and a test's) never share one.
fn in_root(lab_dir: &Path, what: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    lab_dir.hash(&mut hasher);
    format!("remora-lab-{:016x}-{what}", hasher.finish())
}

/// What `demo` runs on.
#[derive(Debug, Args)]
struct DemoArgs {
    /// The servers: mariadb (Debian 12's 10.11), mariadb-lts (sid's 11.x)
    /// or mysql (sid's 9.x).
    #[arg(long, env = "SERVER", default_value = "mariadb", value_parser = Engine::from_label)]
    server: Engine,
    /// The HAProxy: debian (2.6) or sid (3.x).
    #[arg(long, env = "HAPROXY", default_value = "debian", value_parser = release_of)]
    haproxy: Release,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start primary and replica (replication configured), a remora beside
    /// each (examples/remora-pools.yaml) and HAProxy (haproxy/haproxy.cfg).
    Up(UpArgs),
    /// Stop everything `up` started and delete its data.
    Down,
    /// What runs, and what each remora answers.
    Status,
    /// Delay replication on the replica by SECONDS (MASTER_DELAY, at most
    /// 2147483647).
    StartLag {
        #[arg(env = "LAG", default_value_t = 300,
              value_parser = clap::value_parser!(u64).range(0..=MAX_MASTER_DELAY))]
        seconds: u64,
    },
    /// Remove the replication delay.
    StopLag,
    /// Show the replica's Seconds_Behind_Master.
    SlaveLag,
    /// Create and drop a database, with some writes, on the primary.
    Stuff,
    /// Run the scripted story on a fresh, temporary lab, then clean up.
    Demo(DemoArgs),
    /// Fail if any test password appears in the output a test run collected
    /// (`REMORA_OUTPUT_DIR`).
    CheckOutput { dir: std::path::PathBuf },
}

/// MariaDB's largest MASTER_DELAY; a larger one fails with error 1729
/// after the replica threads were already stopped.
const MAX_MASTER_DELAY: u64 = 2_147_483_647;

/// What `up` started, so that later commands can find it.
#[derive(Debug, Serialize, Deserialize)]
struct LabState {
    /// `mariadb`, `mariadb-lts` or `mysql`.
    server: String,
    /// Where the servers keep their data (under the sid root for sid's).
    servers_dir: PathBuf,
    primary_port: u16,
    replica_port: u16,
    processes: Vec<Recorded>,
    remoras: Vec<RecordedRemora>,
    haproxy: Binds,
}

#[derive(Debug, Serialize, Deserialize)]
struct Recorded {
    name: String,
    pid: u32,
    /// A word of its command line: a recycled pid running something else is left alone.
    program: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct RecordedRemora {
    beside: String,
    agent: SocketAddr,
    http: SocketAddr,
}

fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/remora-pools.yaml")
}

fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lab")
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo(args) => {
            tokio::select! {
                outcome = demo(args) => outcome,
                _ = tokio::signal::ctrl_c() => {
                    // Dropping the demo's future kills what it started.
                    eprintln!("\ninterrupted; stopping everything the demo started");
                    return ExitCode::from(130);
                }
            }
        }
        command => run(command, &cli.dir).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("remora-lab: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: DemoArgs) -> Result<()> {
    remora_lab::demo::run(&binary_beside_me()?, (args.server, args.haproxy)).await
}

async fn run(command: Command, dir: &Path) -> Result<()> {
    let lab = Lab::in_dir(dir);
    match command {
        Command::Up(args) => lab.up(args.ports(dir)?).await,
        Command::Down => lab.down(),
        Command::Status => status(&lab.state()?).await,
        Command::CheckOutput { dir } => check_output(&dir),
        Command::StartLag { seconds } => start_lag(&lab.pair()?, seconds).await,
        Command::StopLag => stop_lag(&lab.pair()?).await,
        Command::SlaveLag => slave_lag(&lab.pair()?).await,
        Command::Stuff => stuff(&lab.pair()?).await,
        Command::Demo(_) => unreachable!("handled in main"),
    }
}

/// What `up` is asked to run, and where to listen.
struct Ports {
    server: Engine,
    release: Release,
    primary: u16,
    replica: u16,
    primary_agent: u16,
    replica_agent: u16,
    haproxy: Binds,
}

/// The native lab in its folder, with the state file that records every
/// process it starts, as it starts it.
struct Lab {
    dir: PathBuf,
    state_file: PathBuf,
}

impl Lab {
    fn in_dir(dir: &Path) -> Lab {
        Lab {
            dir: dir.to_owned(),
            state_file: dir.join("lab.json"),
        }
    }

    fn state(&self) -> Result<LabState> {
        read_state(&self.state_file)
    }

    /// Handles on the running pair.
    fn pair(&self) -> Result<Pair> {
        let state = self.state()?;
        if !state.processes.iter().any(|p| pid_is_running(p.pid)) {
            bail!(
                "the lab in {} is not running; run `make up`",
                self.dir.display()
            );
        }
        let engine = Engine::from_label(&state.server)?;
        Ok(Pair::attach(
            engine,
            &state.servers_dir,
            state.primary_port,
            state.replica_port,
        ))
    }

    /// Starts everything; on any failure stops what it had started and
    /// removes the folder, so the next `up` starts clean.
    async fn up(&self, ports: Ports) -> Result<()> {
        if let Ok(state) = self.state()
            && state.processes.iter().any(|p| pid_is_running(p.pid))
        {
            println!("the lab is already up:");
            return status(&state).await;
        }
        self.refuse_leftovers(&ports)?;
        let mut state = LabState {
            server: ports.server.label().to_owned(),
            servers_dir: self.servers_dir(ports.server)?,
            primary_port: ports.primary,
            replica_port: ports.replica,
            processes: Vec::new(),
            remoras: Vec::new(),
            haproxy: ports.haproxy.clone(),
        };
        match self.start_everything(&ports, &mut state).await {
            Ok(()) => status(&state).await,
            Err(err) => {
                eprintln!("remora-lab: up failed; stopping what it started");
                self.stop(&state);
                self.remove(&state.servers_dir);
                Err(err)
            }
        }
    }

    /// Where `engine`'s servers keep their data: in the lab's folder, or
    /// for sid's servers in a folder of the sid root that HAProxy from sid
    /// shares.
    fn servers_dir(&self, engine: Engine) -> Result<PathBuf> {
        Ok(match engine.root()? {
            Some(root) => root.path.join("srv").join(in_root(&self.dir, "servers")),
            None => self.dir.clone(),
        })
    }

    /// A folder left by a run that did not finish (or an older lab) holds
    /// datadirs whose passwords and replication do not match a new lab.
    fn refuse_leftovers(&self, ports: &Ports) -> Result<()> {
        let servers = self.servers_dir(ports.server)?;
        let leftovers: Vec<String> = ["primary", "replica"]
            .into_iter()
            .map(|name| servers.join(name))
            .filter(|path| path.exists())
            .map(|path| path.display().to_string())
            .collect();
        if !leftovers.is_empty() {
            bail!(
                "{} left by an earlier lab that is not running; `make down` removes it",
                leftovers.join(" and ")
            );
        }
        Ok(())
    }

    async fn start_everything(&self, ports: &Ports, state: &mut LabState) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        self.record(state)?;
        self.start_servers(ports, state).await?;
        self.start_remoras(ports, state)?;
        wait_for_remoras(state, &self.dir).await?;
        self.start_haproxy(ports, state).await
    }

    /// The pair, replication running.
    async fn start_servers(&self, ports: &Ports, state: &mut LabState) -> Result<()> {
        let dir = &state.servers_dir;
        let addresses = (ports.primary, ports.replica);
        let mut pair = Pair::start_in(ports.server, dir, addresses, Lifetime::Detached)
            .await
            .context("starting the pair")?;
        let program = match ports.server {
            Engine::MySql => "mysqld",
            Engine::MariaDb | Engine::MariaDbLts => "mariadbd",
        };
        let (primary_pid, replica_pid) = pair.detach();
        for (name, pid) in [("primary", primary_pid), ("replica", replica_pid)] {
            let pid = pid.context("server not running")?;
            state.processes.push(Recorded {
                name: name.into(),
                pid,
                program: program.into(),
            });
        }
        self.record(state)
    }

    /// A remora beside each server: the shipped example, pointed at it.
    fn start_remoras(&self, ports: &Ports, state: &mut LabState) -> Result<()> {
        let remora = binary_beside_me()?;
        let example = std::fs::read_to_string(example_config())
            .context("reading examples/remora-pools.yaml")?;
        for (beside, port, agent_port) in [
            ("primary", ports.primary, ports.primary_agent),
            ("replica", ports.replica, ports.replica_agent),
        ] {
            let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
            let (agent, http) = match agent_port {
                0 => (at(0), at(0)),
                port => (at(port), at(port + 1)),
            };
            // The example's token file is a mounted secret; the lab's is here.
            let token_file = self.dir.join("admin-token");
            write_private(
                &token_file,
                &format!("{}\n", remora_lab::server::ADMIN_TOKEN),
            )?;
            let yaml = set_keys(
                &example,
                &[
                    ("mysql", "port", port.into()),
                    (
                        "http",
                        "admin_token_file",
                        token_file.display().to_string().into(),
                    ),
                ],
            )?;
            let (mut process, _) = launch(
                &remora,
                &yaml,
                agent,
                http,
                &self.dir.join(format!("remora-{beside}")),
                Lifetime::Detached,
                &[],
            )?;
            let (agent, http) = match agent_port {
                0 => bound_ports(&mut process)?,
                _ => (agent, http),
            };
            state.processes.push(Recorded {
                name: format!("remora beside the {beside}"),
                pid: process.detach(),
                program: "remora".into(),
            });
            state.remoras.push(RecordedRemora {
                beside: beside.into(),
                agent,
                http,
            });
            self.record(state)?;
        }
        Ok(())
    }

    /// HAProxy, asking both remoras; sid's keeps its files in the sid root.
    async fn start_haproxy(&self, ports: &Ports, state: &mut LabState) -> Result<()> {
        let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let dir = haproxy_dir(ports.release, &self.dir)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let haproxy = Haproxy::start_in(
            ports.release,
            &dir,
            &Targets {
                primary: loopback(ports.primary),
                primary_agent: state.remoras[0].agent,
                replica: loopback(ports.replica),
                replica_agent: state.remoras[1].agent,
                main_min_servers: 2,
            },
            (state.haproxy.clone(), Lifetime::Detached),
        )
        .await
        .context("starting haproxy")?;
        state.processes.push(Recorded {
            name: "haproxy".into(),
            pid: haproxy.detach(),
            program: "haproxy".into(),
        });
        self.record(state)
    }

    /// Writes what has been started so far: `down` finds it even if `up`
    /// dies half way.
    fn record(&self, state: &LabState) -> Result<()> {
        std::fs::write(&self.state_file, serde_json::to_string_pretty(state)?)
            .context("writing the lab state")
    }

    /// Stops every recorded process that is still the program recorded.
    fn stop(&self, state: &LabState) {
        for process in &state.processes {
            if kill_recorded(process.pid, &process.program) {
                println!("stopped {} (pid {})", process.name, process.pid);
            }
        }
    }

    /// Removes the lab's folder and the servers' (when elsewhere).
    fn remove(&self, servers_dir: &Path) {
        for dir in [&self.dir, servers_dir] {
            if dir.exists()
                && let Err(err) = std::fs::remove_dir_all(dir)
            {
                eprintln!("remora-lab: cannot remove {}: {err}", dir.display());
            }
        }
    }

    /// Stops what `up` recorded and deletes the folder, whatever state a
    /// failed `up` left it in.
    fn down(&self) -> Result<()> {
        let mut elsewhere = Vec::new();
        match self.state() {
            Ok(state) => {
                self.stop(&state);
                elsewhere.push(state.servers_dir);
                if let Some(haproxy) = state.haproxy.socket.parent() {
                    elsewhere.push(haproxy.to_owned());
                }
            }
            Err(_) if self.dir.exists() => {
                println!("no processes recorded in {}", self.dir.display());
            }
            Err(_) => {
                println!("no lab in {}", self.dir.display());
                return Ok(());
            }
        }
        for dir in std::iter::once(&self.dir).chain(&elsewhere) {
            if dir.exists() {
                std::fs::remove_dir_all(dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
                println!("removed {}", dir.display());
            }
        }
        Ok(())
    }
}

fn check_output(dir: &Path) -> Result<()> {
    let (scanned, found) = remora_lab::find_passwords(dir)?;
    for (path, password) in &found {
        eprintln!(
            "{}: contains the test password {password:?}",
            path.display()
        );
    }
    anyhow::ensure!(found.is_empty(), "remora printed a password");
    anyhow::ensure!(scanned > 0, "no output collected in {}", dir.display());
    println!("no password in anything remora printed ({scanned} outputs scanned)");
    Ok(())
}

async fn start_lag(pair: &Pair, seconds: u64) -> Result<()> {
    pair.start_lag(seconds).await?;
    println!(
        "replica delayed by {seconds}s; lag shows while the primary is written to (make stuff)"
    );
    Ok(())
}

async fn stop_lag(pair: &Pair) -> Result<()> {
    pair.stop_lag().await?;
    println!("replica delay removed");
    Ok(())
}

async fn stuff(pair: &Pair) -> Result<()> {
    pair.stuff().await?;
    println!("created and dropped database `stuff` on the primary, with writes");
    Ok(())
}

async fn slave_lag(pair: &Pair) -> Result<()> {
    let status = pair.replica_status().await?;
    let name = |column: &str| pair.engine().column(column);
    println!(
        "{}: {}  SQL_Delay: {}  {}: {}  {}: {}  Last_SQL_Errno: {}",
        name("Seconds_Behind_Master"),
        status
            .seconds_behind
            .map_or("NULL".to_owned(), |s| s.to_string()),
        status.sql_delay,
        name("Slave_IO_Running"),
        status.io_running,
        name("Slave_SQL_Running"),
        status.sql_running,
        status.last_sql_errno
    );
    Ok(())
}

fn read_state(path: &Path) -> Result<LabState> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("no lab is up ({} missing); run `make up`", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
}

/// Waits until both remoras answer: a remora that never does failed to
/// start, and the end of its log (in `dir`) says why.
async fn wait_for_remoras(state: &LabState, dir: &Path) -> Result<()> {
    for remora in &state.remoras {
        let mut answered = false;
        for _ in 0..200 {
            if agent_reply(remora.agent).await.is_ok() {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !answered {
            let log = dir
                .join(format!("remora-{}", remora.beside))
                .join("remora.log");
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = said.lines().rev().take(5).collect();
            bail!(
                "remora beside the {} does not answer on {}; its log ends:\n{}",
                remora.beside,
                remora.agent,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    Ok(())
}

async fn status(state: &LabState) -> Result<()> {
    for process in &state.processes {
        let running = if pid_is_running(process.pid) {
            "running"
        } else {
            "NOT running"
        };
        println!("  {:<24} pid {:<8} {running}", process.name, process.pid);
    }
    println!(
        "  primary 127.0.0.1:{}, replica 127.0.0.1:{} (lab-only: root/secret)",
        state.primary_port, state.replica_port
    );
    for remora in &state.remoras {
        let mut replies = Vec::new();
        for pool in ["main", "backup", "writer"] {
            let reply = agent_request(remora.agent, format!("{pool}\n").as_bytes())
                .await
                .map(|reply| reply.trim_end().to_owned())
                .unwrap_or_else(|err| format!("no answer: {err}"));
            replies.push(format!("{pool}: {reply}"));
        }
        println!(
            "  remora beside the {} (agent {}, http://{}/status)\n      {}",
            remora.beside,
            remora.agent,
            remora.http,
            replies.join("\n      ")
        );
    }
    let haproxy = &state.haproxy;
    println!(
        "  haproxy: reads {}, writes {}, stats http://{}/, admin socket {}",
        haproxy.mysql,
        haproxy.writer,
        haproxy.stats,
        haproxy.socket.display()
    );
    Ok(())
}

/// Writes `text` to `path`, readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
