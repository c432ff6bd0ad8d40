//! The real `pt-heartbeat` from Debian's percona-toolkit, writing on a lab
//! primary and checked on a replica.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::Server;
use crate::process::{Lifetime, Process};
use crate::server::{HEARTBEAT_DATABASE, ROOT_PASSWORD};
use crate::wait_until;

/// `pt-heartbeat --update` against a server, killed on drop.
#[derive(Debug)]
pub struct PtHeartbeat {
    process: Process,
}

impl PtHeartbeat {
    /// Starts writing `heartbeat.heartbeat` on `primary` once a second, in UTC
    /// (`--utc`), creating the table; waits until the first row is there.
    pub async fn start(primary: &Server, log_dir: &Path) -> Result<PtHeartbeat> {
        let mut command = Command::new("pt-heartbeat");
        command
            .arg("--update")
            .arg("--create-table")
            .arg("--utc")
            .arg("--interval=1")
            .arg(format!("--database={HEARTBEAT_DATABASE}"))
            .args(connection_args(primary.port));
        let mut process = Process::spawn(
            "pt-heartbeat",
            command,
            &log_dir.join("pt-heartbeat.log"),
            Lifetime::Tied,
        )?;
        let waited = wait_until(
            "pt-heartbeat's first row",
            Duration::from_secs(15),
            async || {
                let rows = primary
                    .value(&format!(
                        "SELECT COUNT(*) FROM {HEARTBEAT_DATABASE}.heartbeat"
                    ))
                    .await;
                if rows.ok().flatten().is_some_and(|n| n != "0") {
                    return Ok(Some(()));
                }
                ensure!(process.is_running(), "pt-heartbeat exited");
                Ok(None)
            },
        )
        .await;
        match waited {
            Ok(()) => Ok(PtHeartbeat { process }),
            Err(err) => Err(err.context(process.log_tail(20))),
        }
    }

    /// Kills the writer: the heartbeat stops, replication goes on.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

fn connection_args(port: u16) -> Vec<String> {
    vec![
        "--host=127.0.0.1".into(),
        format!("--port={port}"),
        "--user=root".into(),
        format!("--password={ROOT_PASSWORD}"),
    ]
}

/// `pt-heartbeat --check` on a replica: the lag it prints, in seconds
/// (percona-toolkit 3.2 prints whole seconds).
pub fn check(replica: &Server, master_server_id: u32) -> Result<f64> {
    let output = Command::new("pt-heartbeat")
        .arg("--check")
        .arg("--utc")
        .arg(format!("--database={HEARTBEAT_DATABASE}"))
        .arg(format!("--master-server-id={master_server_id}"))
        .args(connection_args(replica.port))
        .output()
        .context("running pt-heartbeat --check (percona-toolkit)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pt-heartbeat --check failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    text.trim()
        .parse()
        .with_context(|| format!("pt-heartbeat --check printed {text:?}"))
}
