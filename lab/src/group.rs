//! A MySQL Group Replication group of three, single-primary, from the sid
//! root, on 127.0.0.1 (`../shared/reference/real-servers.md`: 17 s to
//! ONLINE there, about 400 MiB a member, so start one only where needed).

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::engine::Engine;
use crate::process::Lifetime;
use crate::server::{REPL_PASSWORD, REPL_USER, Server};
use crate::wait_until;

/// The group's name: any UUID, the same on every member.
const GROUP_NAME: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
/// Long enough for a member to join by distributed recovery on this machine.
const ONLINE_LIMIT: Duration = Duration::from_secs(90);

/// Three members; the first bootstrapped the group and was its primary.
#[derive(Debug)]
pub struct Group {
    pub members: Vec<Server>,
    _scratch: tempfile::TempDir,
}

/// A member as `performance_schema.replication_group_members` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub port: u16,
    pub state: String,
    pub role: String,
}

impl Group {
    /// Starts three members and forms the group; returns once all three
    /// are ONLINE.
    pub async fn start() -> Result<Group> {
        let engine = Engine::MySql;
        let scratch = engine.scratch()?;
        let ports: Vec<u16> = (0..3).map(|_| crate::free_port()).collect::<Result<_>>()?;
        let xcom: Vec<u16> = (0..3).map(|_| crate::free_port()).collect::<Result<_>>()?;
        let seeds: Vec<String> = xcom
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let member = |i: usize| {
            let (port, local) = (ports[i], xcom[i]);
            let args = vec![
                "--plugin-load-add=group_replication.so".to_owned(),
                format!("--group-replication-group-name={GROUP_NAME}"),
                format!("--group-replication-local-address=127.0.0.1:{local}"),
                format!("--group-replication-group-seeds={}", seeds.join(",")),
                "--group-replication-start-on-boot=OFF".to_owned(),
                "--group-replication-recovery-get-public-key=ON".to_owned(),
                "--group-replication-ip-allowlist=127.0.0.1".to_owned(),
                "--report-host=127.0.0.1".to_owned(),
                format!("--report-port={port}"),
            ];
            let dir = scratch.path().join(format!("member{}", i + 1));
            let name = format!("member{}", i + 1);
            let id = 11 + i as u32;
            async move { Server::start_as(engine, &name, id, &dir, (port, Lifetime::Tied), &args).await }
        };
        let (one, two, three) = tokio::try_join!(member(0), member(1), member(2))?;
        let group = Group {
            members: vec![one, two, three],
            _scratch: scratch,
        };
        let account = recovery_account();
        let account: Vec<&str> = account.iter().map(String::as_str).collect();
        for member in &group.members {
            member.exec(&account).await?;
        }
        group.members[0]
            .exec(&[
                "SET GLOBAL group_replication_bootstrap_group = ON",
                "START GROUP_REPLICATION",
                "SET GLOBAL group_replication_bootstrap_group = OFF",
            ])
            .await?;
        group.wait_state(0, "ONLINE").await?;
        for i in 1..group.members.len() {
            group.members[i].exec(&["START GROUP_REPLICATION"]).await?;
        }
        for i in 0..group.members.len() {
            group.wait_state(i, "ONLINE").await?;
        }
        group.members[0]
            .exec(&[
                "CREATE DATABASE IF NOT EXISTS lab",
                "CREATE TABLE IF NOT EXISTS lab.ticks (
                    id BIGINT AUTO_INCREMENT PRIMARY KEY,
                    at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
            ])
            .await?;
        Ok(group)
    }

    /// Every member as member `i` sees the group.
    pub async fn members_seen_by(&self, i: usize) -> Result<Vec<Member>> {
        let rows = self.members[i]
            .rows(
                "SELECT MEMBER_PORT, MEMBER_STATE, MEMBER_ROLE \
                 FROM performance_schema.replication_group_members",
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Member {
                port: row.get::<Option<u16>, _>(0).flatten().unwrap_or(0),
                state: row
                    .get::<Option<String>, _>(1)
                    .flatten()
                    .unwrap_or_default(),
                role: row
                    .get::<Option<String>, _>(2)
                    .flatten()
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// Member `i`'s own state, as it sees itself.
    pub async fn state_of(&self, i: usize) -> Result<String> {
        let port = self.members[i].port;
        let seen = self.members_seen_by(i).await?;
        Ok(seen
            .into_iter()
            .find(|member| member.port == port)
            .map_or_else(|| "OFFLINE".to_owned(), |member| member.state))
    }

    /// Waits until member `i` sees itself in `state`.
    pub async fn wait_state(&self, i: usize, state: &str) -> Result<()> {
        let name = &self.members[i].name;
        wait_until(&format!("{name} to be {state}"), ONLINE_LIMIT, async || {
            Ok((self.state_of(i).await? == state).then_some(()))
        })
        .await
        .with_context(|| self.members[i].error_log_tail())
    }

    /// Which member is the primary, as member `seen_by` sees the group.
    pub async fn primary(&self, seen_by: usize) -> Result<usize> {
        let seen = self.members_seen_by(seen_by).await?;
        let Some(primary) = seen.iter().find(|member| member.role == "PRIMARY") else {
            bail!("no PRIMARY among {seen:?}");
        };
        (self.members.iter())
            .position(|member| member.port == primary.port)
            .context("the primary is not one of ours")
    }

    /// Makes member `i` the primary (`group_replication_set_as_primary`).
    pub async fn set_primary(&self, i: usize) -> Result<()> {
        let uuid = self.members[i]
            .value("SELECT @@server_uuid")
            .await?
            .context("@@server_uuid")?;
        let current = self.primary(i).await?;
        self.members[current]
            .exec(&[&format!(
                "SELECT group_replication_set_as_primary('{uuid}')"
            )])
            .await
    }
}

/// The account distributed recovery uses, on every member and out of the
/// binary log (each member has its own).
fn recovery_account() -> [String; 3] {
    [
        "SET SESSION sql_log_bin = 0".to_owned(),
        format!(
            "GRANT BACKUP_ADMIN, GROUP_REPLICATION_STREAM, CONNECTION_ADMIN ON *.* TO {REPL_USER}@'%'"
        ),
        format!(
            "CHANGE REPLICATION SOURCE TO SOURCE_USER='{REPL_USER}', \
             SOURCE_PASSWORD='{REPL_PASSWORD}' FOR CHANNEL 'group_replication_recovery'"
        ),
    ]
}
