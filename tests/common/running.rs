//! `remora::run` in the test's own process, on listeners the test bound
//! itself (port 0, kept open): the fast tier's remora.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, ensure};
use remora::config::Config;
use remora::{Listeners, Reload};
use remora_lab::fixture::{Channel, Flavor, MysqlFixture};
use remora_lab::{agent_request, http_get};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A remora running in this process.
pub struct Running {
    pub agent: SocketAddr,
    pub http: SocketAddr,
    /// Where a reload goes, as SIGHUP would send it.
    pub reloads: mpsc::Sender<Reload>,
    stop: CancellationToken,
    task: JoinHandle<Result<()>>,
}

impl Running {
    /// Binds both listeners on port 0 and runs remora on them under
    /// `config`; returns once it answers (after its first polls).
    pub async fn start(config: Config) -> Result<Running> {
        let secrets = config.secrets()?;
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let listeners = Listeners {
            agent: remora::bind(any_port).await?,
            http: remora::bind(any_port).await?,
            pools: BTreeMap::new(),
        };
        let (agent, http) = (listeners.agent.local_addr()?, listeners.http.local_addr()?);
        let (reloads, queue) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let shutdown = {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        };
        let task = tokio::spawn(remora::run(config, secrets, listeners, shutdown, queue));
        let running = Running {
            agent,
            http,
            reloads,
            stop,
            task,
        };
        // Nothing is served before the first poll: the backlog holds us.
        running.reply("").await?;
        Ok(running)
    }

    /// The agent's answer to `request`, without its newline.
    pub async fn reply(&self, request: &str) -> Result<String> {
        let reply = agent_request(self.agent, request.as_bytes()).await?;
        Ok(reply.trim_end().to_owned())
    }

    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.http, path).await
    }

    /// `path`'s JSON, which must come with 200.
    pub async fn json(&self, path: &str) -> Result<serde_json::Value> {
        let (code, body) = self.get(path).await?;
        ensure!(code == 200, "{path}: {code} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// Applies a configuration as SIGHUP would.
    pub async fn reload(&self, config: Config) -> Result<()> {
        let secrets = config.secrets()?;
        self.reloads.send((config, secrets)).await?;
        Ok(())
    }

    /// Shuts remora down and waits for `run` to return.
    pub async fn stop(self) -> Result<()> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task).await???;
        Ok(())
    }
}

/// A MySQL 5.7 replica `lag` seconds behind.
pub async fn replica(lag: u64) -> Result<MysqlFixture> {
    let fixture = MysqlFixture::start(Flavor::MySql57).await?;
    fixture.set(|s| {
        s.read_only = true;
        s.channels = vec![Channel::running("", lag)];
    });
    Ok(fixture)
}
