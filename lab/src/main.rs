//! `remora-lab`: the native lab behind the Makefile (`make up`, `make down`,
//! `make start-lag`, ...) and `make demo`. Lab-only credentials: root/secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

use remora_lab::haproxy::{Binds, Haproxy, Targets};
use remora_lab::process::{kill_recorded, pid_is_running};
use remora_lab::remora::{agent_reply, agent_request, binary_beside_me, launch, set_keys};
use remora_lab::{Lifetime, Pair};

#[derive(Debug, Parser)]
#[command(
    about = "remora's native lab: MariaDB primary + replica and a remora beside each, on loopback"
)]
struct Cli {
    /// Where a lab started by `up` keeps its datadirs, logs and state.
    #[arg(long, env = "LAB_DIR", default_value_os_t = default_dir())]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start primary and replica (replication configured), a remora beside
    /// each (examples/remora-pools.yaml) and HAProxy (haproxy/haproxy.cfg).
    Up {
        #[arg(long, env = "PRIMARY_PORT", default_value_t = 3306)]
        primary_port: u16,
        #[arg(long, env = "REPLICA_PORT", default_value_t = 3307)]
        replica_port: u16,
        /// remora beside the primary: agent port; its HTTP port is this + 1.
        #[arg(long, env = "PRIMARY_AGENT_PORT", default_value_t = 9258)]
        primary_agent_port: u16,
        /// remora beside the replica: agent port; its HTTP port is this + 1.
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
    },
    /// Stop everything `up` started and delete its data.
    Down,
    /// What runs, and what each remora answers.
    Status,
    /// Delay replication on the replica by SECONDS (MASTER_DELAY).
    StartLag {
        #[arg(env = "LAG", default_value_t = 300)]
        seconds: u64,
    },
    /// Remove the replication delay.
    StopLag,
    /// Show the replica's Seconds_Behind_Master.
    SlaveLag,
    /// Create and drop a database, with some writes, on the primary.
    Stuff,
    /// Run the scripted story on a fresh, temporary lab, then clean up.
    Demo,
    /// Fail if any test password appears in the output a test run collected
    /// (`REMORA_OUTPUT_DIR`).
    CheckOutput { dir: std::path::PathBuf },
}

/// What `up` started, so that later commands can find it.
#[derive(Debug, Serialize, Deserialize)]
struct LabState {
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
        Command::Demo => {
            tokio::select! {
                outcome = demo() => outcome,
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

async fn demo() -> Result<()> {
    remora_lab::demo::run(&binary_beside_me()?).await
}

async fn run(command: Command, dir: &Path) -> Result<()> {
    let state_file = dir.join("lab.json");
    match command {
        Command::Up {
            primary_port,
            replica_port,
            primary_agent_port,
            replica_agent_port,
            haproxy_mysql,
            haproxy_writer,
            haproxy_stats,
        } => {
            if let Ok(state) = read_state(&state_file)
                && state.processes.iter().any(|p| pid_is_running(p.pid))
            {
                println!("the lab is already up:");
                return status(&state).await;
            }
            let remora = binary_beside_me()?;
            let mut pair = Pair::start_in(dir, primary_port, replica_port, Lifetime::Detached)
                .await
                .context("starting the pair")?;
            let mut state = LabState {
                primary_port,
                replica_port,
                processes: Vec::new(),
                remoras: Vec::new(),
                haproxy: Binds {
                    mysql: haproxy_mysql,
                    writer: haproxy_writer,
                    stats: haproxy_stats,
                    socket: dir.join("haproxy.sock"),
                },
            };
            let example = std::fs::read_to_string(example_config())
                .context("reading examples/remora-pools.yaml")?;
            let (primary_pid, replica_pid) = pair.detach();
            for (name, pid) in [("primary", primary_pid), ("replica", replica_pid)] {
                let pid = pid.context("server not running")?;
                state.processes.push(Recorded {
                    name: name.into(),
                    pid,
                    program: "mariadbd".into(),
                });
            }
            for (beside, port, agent_port) in [
                ("primary", primary_port, primary_agent_port),
                ("replica", replica_port, replica_agent_port),
            ] {
                let agent = SocketAddr::from(([127, 0, 0, 1], agent_port));
                let http = SocketAddr::from(([127, 0, 0, 1], agent_port + 1));
                // The shipped example, pointed at this server.
                let yaml = set_keys(&example, &[("mysql", "port", port.into())])?;
                let (process, _) = launch(
                    &remora,
                    &yaml,
                    agent,
                    http,
                    &dir.join(format!("remora-{beside}")),
                    Lifetime::Detached,
                    &[],
                )?;
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
            }
            wait_for_remoras(&state).await;
            let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
            let haproxy = Haproxy::start_in(
                dir,
                &Targets {
                    primary: loopback(primary_port),
                    primary_agent: state.remoras[0].agent,
                    replica: loopback(replica_port),
                    replica_agent: state.remoras[1].agent,
                    main_min_servers: 2,
                },
                state.haproxy.clone(),
                Lifetime::Detached,
            )
            .await
            .context("starting haproxy")?;
            state.processes.push(Recorded {
                name: "haproxy".into(),
                pid: haproxy.detach(),
                program: "haproxy".into(),
            });
            std::fs::write(&state_file, serde_json::to_string_pretty(&state)?)
                .context("writing the lab state")?;
            status(&state).await
        }
        Command::Down => {
            let Ok(state) = read_state(&state_file) else {
                println!("no lab recorded in {}", dir.display());
                return Ok(());
            };
            for process in &state.processes {
                if kill_recorded(process.pid, &process.program) {
                    println!("stopped {} (pid {})", process.name, process.pid);
                }
            }
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
            Ok(())
        }
        Command::Status => status(&read_state(&state_file)?).await,
        Command::CheckOutput { dir } => {
            let (scanned, found) = remora_lab::find_passwords(&dir)?;
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
        Command::StartLag { seconds } => {
            attach(dir, &state_file)?.start_lag(seconds).await?;
            println!(
                "replica delayed by {seconds}s; lag shows while the primary is written to (make stuff)"
            );
            Ok(())
        }
        Command::StopLag => {
            attach(dir, &state_file)?.stop_lag().await?;
            println!("replica delay removed");
            Ok(())
        }
        Command::SlaveLag => {
            let status = attach(dir, &state_file)?.slave_status().await?;
            println!(
                "Seconds_Behind_Master: {}  SQL_Delay: {}  Slave_IO_Running: {}  Slave_SQL_Running: {}  Last_SQL_Errno: {}",
                status
                    .seconds_behind_master
                    .map_or("NULL".to_owned(), |s| s.to_string()),
                status.sql_delay,
                status.io_running,
                status.sql_running,
                status.last_sql_errno
            );
            Ok(())
        }
        Command::Stuff => {
            attach(dir, &state_file)?.stuff().await?;
            println!("created and dropped database `stuff` on the primary, with writes");
            Ok(())
        }
        Command::Demo => unreachable!("handled in main"),
    }
}

fn read_state(path: &Path) -> Result<LabState> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("no lab is up ({} missing); run `make up`", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
}

fn attach(dir: &Path, state_file: &Path) -> Result<Pair> {
    let state = read_state(state_file)?;
    if !state.processes.iter().any(|p| pid_is_running(p.pid)) {
        bail!("the lab in {} is not running; run `make up`", dir.display());
    }
    Ok(Pair::attach(dir, state.primary_port, state.replica_port))
}

async fn wait_for_remoras(state: &LabState) {
    for remora in &state.remoras {
        for _ in 0..100 {
            if agent_reply(remora.agent).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
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
