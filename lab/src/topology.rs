//! A primary and several replicas following it: what traffic needs
//! somewhere to go (two replicas behind one HAProxy) and what a failover
//! moves (a replica promoted, the others re-pointed, the old primary back).

use std::time::Duration;

use anyhow::{Context, Result};

use crate::engine::Engine;
use crate::process::Lifetime;
use crate::server::Server;

/// A GTID primary and its replicas, named `primary`, `replica1`, …; killed
/// and removed on drop.
#[derive(Debug)]
pub struct Topology {
    pub primary: Server,
    pub replicas: Vec<Server>,
    _scratch: tempfile::TempDir,
}

impl Topology {
    /// A primary and `replicas` replicas of `engine` on free ports, every
    /// replica following the primary, with the lab's tables written and
    /// applied everywhere.
    pub async fn start_on(engine: Engine, replicas: usize) -> Result<Topology> {
        let scratch = engine.scratch()?;
        let dir = scratch.path();
        // Every server starts at once.
        let starting = (1..=1 + replicas as u32).map(|id| {
            let name = match id {
                1 => "primary".to_owned(),
                id => format!("replica{}", id - 1),
            };
            async move {
                let at = (crate::free_port()?, Lifetime::Tied);
                Server::start_as(engine, &name, id, &dir.join(&name), at, &[]).await
            }
        });
        let servers = futures_util::future::try_join_all(starting).await?;
        let mut servers = servers.into_iter();
        let primary = servers.next().context("the primary")?;
        let replicas: Vec<Server> = servers.collect();
        for replica in &replicas {
            replica.follow(&primary).await?;
        }
        let topology = Topology {
            primary,
            replicas,
            _scratch: scratch,
        };
        topology.primary.create_lab_tables().await?;
        topology.wait_caught_up(Duration::from_secs(20)).await?;
        Ok(topology)
    }

    /// Waits until every replica has applied what the primary had written.
    pub async fn wait_caught_up(&self, limit: Duration) -> Result<()> {
        for replica in &self.replicas {
            replica
                .wait_applied(&self.primary, limit)
                .await
                .with_context(|| format!("{} catching up", replica.name))?;
        }
        Ok(())
    }
}
