//! One remora watching many servers, in this process: `remora::run` with
//! `targets` on listeners the test bound (port 0, kept open).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use remora::config::Config;
use remora_lab::wait_until;

use super::running::Running;

/// A remora watching targets, in this process.
pub struct Central(pub Running);

impl std::ops::Deref for Central {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.0
    }
}

impl Central {
    pub async fn start(yaml: &str) -> Result<Central> {
        Ok(Central(Running::start(Config::from_yaml(yaml)?).await?))
    }

    /// The targets `/status` lists, by name.
    pub async fn targets(&self) -> Result<Vec<String>> {
        let status = self.json("/status").await?;
        let targets = status["targets"].as_object().context("targets listed")?;
        Ok(targets.keys().cloned().collect())
    }

    pub async fn wait_for_targets(&self, wanted: &[&str]) -> Result<()> {
        wait_until(
            &format!("targets {wanted:?}"),
            Duration::from_secs(10),
            async || Ok((self.targets().await? == wanted).then_some(())),
        )
        .await
    }

    /// `/status`'s `targets_file` once it reports a read after `after`
    /// (its `read_at`): the watcher has looked at a change.
    pub async fn next_file_read(&self, after: &serde_json::Value) -> Result<serde_json::Value> {
        wait_until(
            "the targets file to be read again",
            Duration::from_secs(10),
            async || {
                let state = self.json("/status").await?["targets_file"].clone();
                Ok((state["read_at"] != *after).then_some(state))
            },
        )
        .await
    }

    pub async fn stop(self) -> Result<()> {
        self.0.stop().await
    }
}

/// A server that takes connections and never says a word: the kernel
/// completes the handshake from the backlog, nobody ever greets.
pub fn hung_server() -> Result<std::net::TcpListener> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?)
}

/// A fleet's top level (fast polls, a reader pool and a writer pool) with
/// `targets` after it.
pub fn fleet_yaml(targets: &str) -> String {
    format!(
        "mysql: {{user: remora, connect_timeout: 300ms, query_timeout: 300ms}}\n\
         poll: {{interval: 50ms}}\n\
         pools: {{main: {{drain_at: 60s, down_at: 300s}}, writer: {{role: primary}}}}\n\
         {targets}"
    )
}

/// A target entry watching the server on loopback `port`.
pub fn on_port(port: u16) -> String {
    format!("{{mysql: {{host: 127.0.0.1, port: {port}}}}}")
}

/// The value of `series` (name and labels, as written) in a metrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    (text.lines())
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// Writes `text` to `path` as consul-template would: whole, then renamed over.
pub fn write(path: &Path, text: &str) -> Result<()> {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text)?;
    std::fs::rename(&staged, path)?;
    Ok(())
}
