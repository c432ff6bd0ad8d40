//! MariaDB multi-source replication: one replica with two named connections,
//! `a` and `b`, to two primaries in different GTID domains.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::Lifetime;
use crate::server::{REPL_PASSWORD, REPL_USER, ReplicaStatus};
use crate::{Server, Writer};

#[derive(Debug)]
pub struct MultiSource {
    pub a: Server,
    pub b: Server,
    pub replica: Server,
    _scratch: tempfile::TempDir,
}

impl MultiSource {
    /// Three servers on free ports in a temporary directory, killed on drop.
    pub async fn start() -> Result<MultiSource> {
        let scratch = tempfile::Builder::new()
            .prefix("remora-lab-multi-")
            .tempdir()
            .context("creating a temporary directory")?;
        let dir = scratch.path();
        let domain = |id: u32| vec![format!("--gtid-domain-id={id}")];
        let (dirs, domains) = (
            [dir.join("a"), dir.join("b"), dir.join("replica")],
            [domain(1), domain(2), domain(9)],
        );
        let (a, b, replica) = tokio::try_join!(
            Server::start_with(
                "a",
                1,
                &dirs[0],
                crate::free_port()?,
                Lifetime::Tied,
                &domains[0]
            ),
            Server::start_with(
                "b",
                3,
                &dirs[1],
                crate::free_port()?,
                Lifetime::Tied,
                &domains[1]
            ),
            Server::start_with(
                "replica",
                2,
                &dirs[2],
                crate::free_port()?,
                Lifetime::Tied,
                &domains[2]
            ),
        )?;
        let change = |name: &str, port: u16| {
            format!(
                "CHANGE MASTER '{name}' TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, \
                 MASTER_USER='{REPL_USER}', MASTER_PASSWORD='{REPL_PASSWORD}', \
                 MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos"
            )
        };
        replica
            .exec(&[
                "SET GLOBAL gtid_slave_pos = ''",
                &change("a", a.port),
                &change("b", b.port),
                "START ALL SLAVES",
            ])
            .await?;
        let multi = MultiSource {
            a,
            b,
            replica,
            _scratch: scratch,
        };
        for (server, database) in [(&multi.a, "lab_a"), (&multi.b, "lab_b")] {
            server
                .exec(&[
                    &format!("CREATE DATABASE {database}"),
                    &format!(
                        "CREATE TABLE {database}.ticks (id BIGINT AUTO_INCREMENT PRIMARY KEY)"
                    ),
                    &format!("CREATE TABLE {database}.conflict (id INT PRIMARY KEY)"),
                ])
                .await?;
        }
        for name in ["a", "b"] {
            multi
                .wait_for(name, Duration::from_secs(20), "running", |s| {
                    s.io_running == "Yes" && s.sql_running == "Yes"
                })
                .await?;
        }
        Ok(multi)
    }

    fn source(&self, connection: &str) -> (&Server, &'static str) {
        if connection == "a" {
            (&self.a, "lab_a")
        } else {
            (&self.b, "lab_b")
        }
    }

    /// Waits until connection `connection` of the replica satisfies `condition`.
    pub async fn wait_for(
        &self,
        connection: &str,
        limit: Duration,
        what: &str,
        condition: impl Fn(&ReplicaStatus) -> bool,
    ) -> Result<ReplicaStatus> {
        self.replica
            .wait_for(connection, limit, what, condition)
            .await
    }

    /// `MASTER_DELAY` on one connection only.
    pub async fn delay(&self, connection: &str, seconds: u64) -> Result<()> {
        self.replica
            .exec(&[
                &format!("STOP SLAVE '{connection}'"),
                &format!("CHANGE MASTER '{connection}' TO MASTER_DELAY = {seconds}"),
                &format!("START SLAVE '{connection}'"),
            ])
            .await
    }

    /// Writes on one source until the handle is dropped.
    pub fn keep_writing(&self, connection: &str, every: Duration) -> Writer {
        let (server, database) = self.source(connection);
        server.keep_writing(&format!("INSERT INTO {database}.ticks () VALUES ()"), every)
    }

    /// A conflicting row on one connection: its SQL thread stops with 1062.
    pub async fn break_connection(&self, connection: &str, id: u32) -> Result<()> {
        let (server, database) = self.source(connection);
        self.replica
            .exec(&[
                "SET SESSION sql_log_bin = 0",
                &format!("INSERT INTO {database}.conflict (id) VALUES ({id})"),
            ])
            .await?;
        server
            .exec(&[&format!(
                "INSERT INTO {database}.conflict (id) VALUES ({id})"
            )])
            .await?;
        self.wait_for(
            connection,
            Duration::from_secs(20),
            "stopped on 1062",
            |s| s.last_sql_errno == 1062,
        )
        .await?;
        Ok(())
    }
}
