//! A real Prometheus (Debian's `prometheus`) scraping remoras, on a free
//! loopback port with its storage in a temporary directory, killed on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::process::{Lifetime, Process};
use crate::{http_get, wait_until};

#[derive(Debug)]
pub struct Prometheus {
    pub addr: SocketAddr,
    process: Process,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes each of `targets` (remora HTTP listeners) every second as job
    /// `remora`, evaluating `rules` (rule files) every second too; waits
    /// until it is ready.
    pub async fn start(targets: &[SocketAddr], rules: &[&Path]) -> Result<Prometheus> {
        let dir = tempfile::Builder::new()
            .prefix("remora-prometheus-")
            .tempdir()?;
        let config = dir.path().join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(SocketAddr::to_string).collect();
        let rules: Vec<String> = rules
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        let document = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rules,
            "scrape_configs": [{"job_name": "remora", "static_configs": [{"targets": targets}]}],
        });
        // JSON is YAML.
        std::fs::write(&config, document.to_string())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::free_port()?));
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        let mut process = Process::spawn(
            "prometheus",
            command,
            &dir.path().join("prometheus.log"),
            Lifetime::Tied,
        )?;
        let ready = wait_until(
            "Prometheus to be ready",
            Duration::from_secs(30),
            async || {
                ensure!(process.is_running(), "prometheus exited");
                Ok(http_get(addr, "/-/ready")
                    .await
                    .ok()
                    .filter(|(code, _)| *code == 200))
            },
        )
        .await;
        if let Err(err) = ready {
            return Err(err.context(process.log_tail(20)));
        }
        Ok(Prometheus {
            addr,
            process,
            _dir: dir,
        })
    }

    /// The result vector of an instant query (`/api/v1/query`).
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (code, body) = http_get(self.addr, &path).await?;
        ensure!(code == 200, "query {promql:?} answered {code}: {body}");
        let answer: Value = serde_json::from_str(&body).context("Prometheus answers JSON")?;
        ensure!(answer["status"] == "success", "query {promql:?}: {answer}");
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The rules Prometheus loaded, by name, with their health.
    pub async fn rules(&self) -> Result<Vec<(String, String)>> {
        let (code, body) = http_get(self.addr, "/api/v1/rules").await?;
        ensure!(code == 200, "/api/v1/rules answered {code}: {body}");
        let answer: Value = serde_json::from_str(&body)?;
        let groups = answer["data"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(groups
            .iter()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .map(|rule| {
                let text = |key: &str| rule[key].as_str().unwrap_or_default().to_owned();
                (text("name"), text("health"))
            })
            .collect())
    }

    pub fn log(&self) -> String {
        self.process.log_tail(40)
    }
}

/// A query string value, percent-encoded (everything but unreserved bytes).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
