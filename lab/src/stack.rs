//! The whole thing on loopback: a MySQL or MariaDB pair, a remora beside
//! each server, and HAProxy running the shipped config in front of them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio::time::timeout;

use crate::haproxy::{Haproxy, Release, Targets, shipped_config};
use crate::server::root_through;
use crate::{Engine, Pair, Remora};

#[derive(Debug)]
pub struct Stack {
    pub pair: Pair,
    pub on_primary: Remora,
    pub on_replica: Remora,
    pub haproxy: Haproxy,
}

impl Stack {
    /// Starts everything on Debian 12's MariaDB and HAProxy. Both remoras
    /// get the same `remora_yaml` (everything but `mysql`, `agent` and
    /// `http`: poll, policy, pools).
    pub async fn start(
        remora_bin: &Path,
        remora_yaml: &str,
        main_min_servers: u32,
    ) -> Result<Stack> {
        let on = (Engine::MariaDb, Release::Debian);
        Stack::start_on(on, remora_bin, remora_yaml, main_min_servers).await
    }

    /// Starts everything on `engine`'s servers behind `release`'s HAProxy.
    pub async fn start_on(
        (engine, release): (Engine, Release),
        remora_bin: &Path,
        remora_yaml: &str,
        main_min_servers: u32,
    ) -> Result<Stack> {
        let pair = Pair::start_on(engine).await?;
        let mysql = |port: u16| {
            format!(
                "mysql:\n  port: {port}\n  user: remora\n  password_env: REMORA_MYSQL_PASSWORD\n{remora_yaml}"
            )
        };
        let on_primary = Remora::start(remora_bin, &mysql(pair.primary.port)).await?;
        let on_replica = Remora::start(remora_bin, &mysql(pair.replica.port)).await?;
        let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let targets = Targets {
            primary: loopback(pair.primary.port),
            primary_agent: on_primary.agent,
            replica: loopback(pair.replica.port),
            replica_agent: on_replica.agent,
            main_min_servers,
        };
        let haproxy = Haproxy::start_config_on(release, &shipped_config(), &targets).await?;
        let stack = Stack {
            pair,
            on_primary,
            on_replica,
            haproxy,
        };
        // Until their first agent reply, servers sit at the configured weight:
        // wait until HAProxy has heard from every agent.
        for backend in ["mysql_main", "mysql_backup", "mysql_writer"] {
            for server in ["primary", "replica"] {
                stack
                    .haproxy
                    .watch_server(backend, server, Duration::from_secs(10), |s| {
                        !s.agent_status.is_empty() && s.agent_status != "INI"
                    })
                    .await?;
            }
        }
        Ok(stack)
    }

    /// A MySQL session through HAProxy's read frontend (`mysql_main`/`mysql_backup`).
    pub async fn connect_reads(&self) -> Result<Conn> {
        connect(self.haproxy.binds.mysql).await
    }

    /// A MySQL session through HAProxy's writer frontend.
    pub async fn connect_writes(&self) -> Result<Conn> {
        connect(self.haproxy.binds.writer).await
    }

    /// Which lab server a session landed on: "primary" or "replica".
    pub async fn server_of(&self, conn: &mut Conn) -> Result<&'static str> {
        let port: Option<u16> = conn.query_first("SELECT @@port").await?;
        match port {
            Some(port) if port == self.pair.primary.port => Ok("primary"),
            Some(port) if port == self.pair.replica.port => Ok("replica"),
            other => Err(anyhow!("session on an unexpected server: port {other:?}")),
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<Conn> {
    let opts = root_through(addr);
    timeout(Duration::from_secs(5), Conn::new(opts))
        .await
        .map_err(|_| anyhow!("connecting through haproxy {addr}: timed out"))?
        .with_context(|| format!("connecting through haproxy {addr}"))
}
