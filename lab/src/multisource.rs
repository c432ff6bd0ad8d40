//! Multi-source replication: one replica with two named connections (MySQL's
//! channels), `a` and `b`, to two primaries (in different GTID domains on
//! MariaDB).

use std::time::Duration;

use anyhow::Result;

use crate::process::Lifetime;
use crate::server::ReplicaStatus;
use crate::{Engine, Server, Writer};

#[derive(Debug)]
pub struct MultiSource {
    pub a: Server,
    pub b: Server,
    pub replica: Server,
    _scratch: tempfile::TempDir,
}

impl MultiSource {
    /// Three servers of `engine` on free ports in a temporary directory,
    /// killed on drop.
    pub async fn start(engine: Engine) -> Result<MultiSource> {
        let scratch = engine.scratch()?;
        let dir = scratch.path();
        let args = |domain: u32| match engine {
            Engine::MySql => vec![],
            Engine::MariaDb | Engine::MariaDbLts => vec![format!("--gtid-domain-id={domain}")],
        };
        let server = |name: &'static str, id: u32, domain: u32| {
            let (dir, args) = (dir.join(name), args(domain));
            async move {
                let at = (crate::free_port()?, Lifetime::Tied);
                Server::start_as(engine, name, id, &dir, at, &args).await
            }
        };
        let (a, b, replica) = tokio::try_join!(
            server("a", 1, 1),
            server("b", 3, 2),
            server("replica", 2, 9)
        )?;
        let mut statements = Vec::new();
        if let Some(start) = engine.start_at("") {
            statements.push(start);
        }
        for (name, port) in [("a", a.port), ("b", b.port)] {
            statements.push(engine.follow_on(name, port));
        }
        statements.extend(["a", "b"].map(|name| engine.start_replica(name)));
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        replica.exec(&statements).await?;
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

    /// The intended delay on one connection only.
    pub async fn delay(&self, connection: &str, seconds: u64) -> Result<()> {
        let statements = self.replica.engine.delay_on(connection, seconds);
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        self.replica.exec(&statements).await
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
