//! A real `remora` process on free ports, and small clients for its agent
//! and HTTP listeners.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::process::{Lifetime, Process};
use crate::server::REMORA_PASSWORD;
use crate::wait_until;

/// Environment variable the lab's remora configs name in `password_env`.
pub const PASSWORD_ENV: &str = "REMORA_MYSQL_PASSWORD";

const START_LIMIT: Duration = Duration::from_secs(20);
const CLIENT_LIMIT: Duration = Duration::from_secs(3);

/// The remora binary next to the running executable (`target/<profile>/remora`),
/// or `$REMORA_BIN`.
pub fn binary_beside_me() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("REMORA_BIN") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe().context("locating this executable")?;
    let dir = me.parent().context("executable has no directory")?;
    for candidate in [dir.join("remora"), dir.join("../remora")] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "no remora binary beside {}; build it first (cargo build) or set REMORA_BIN",
        me.display()
    )
}

/// One running remora.
#[derive(Debug)]
pub struct Remora {
    pub agent: SocketAddr,
    pub http: SocketAddr,
    pub config_path: PathBuf,
    binary: PathBuf,
    pending_listeners: Option<(SocketAddr, SocketAddr)>,
    process: Process,
    _scratch: Option<tempfile::TempDir>,
}

impl Drop for Remora {
    /// Keeps what this remora printed for the end-of-run password scan.
    fn drop(&mut self) {
        crate::record_output("remora", &self.log());
    }
}

/// How a [`Remora`] is started: [`Remora::start`] for the usual case,
/// [`Remora::builder`] for the rest.
#[derive(Debug, Clone)]
pub struct Builder {
    binary: PathBuf,
    yaml: String,
    env: Vec<(String, String)>,
    listeners: Option<(SocketAddr, SocketAddr)>,
    run_as: Option<(u32, u32)>,
}

impl Builder {
    /// Run remora as this OS user and group (the lab runs as root): its
    /// configuration is then made readable to it.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Builder {
        self.run_as = Some((uid, gid));
        self
    }

    /// An environment variable for remora (applied last, so it can override
    /// `RUST_LOG` or the password).
    pub fn env(mut self, key: &str, value: &str) -> Builder {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Listen here instead of on free loopback ports.
    pub fn listening(mut self, agent: SocketAddr, http: SocketAddr) -> Builder {
        self.listeners = Some((agent, http));
        self
    }

    /// Starts remora and waits until the agent answers (which remora does
    /// only after its first poll).
    pub async fn start(self) -> Result<Remora> {
        let mut remora = self.spawn()?;
        remora.wait_answering().await?;
        Ok(remora)
    }

    /// Starts remora without waiting for it to answer: a temporary
    /// directory, killed on drop. Without [`Builder::listening`], remora
    /// binds port 0 for both listeners and the ports it reports are used:
    /// no port is guessed free.
    pub fn spawn(self) -> Result<Remora> {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let reported = self.listeners.is_none();
        let (agent, http) = self.listeners.unwrap_or((any_port, any_port));
        let scratch = tempfile::Builder::new()
            .prefix("remora-run-")
            .tempdir()
            .context("creating a temporary directory")?;
        let env: Vec<(&str, &str)> = (self.env.iter())
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let (process, config_path) = launch_as(
            &self.binary,
            &self.yaml,
            (agent, http),
            scratch.path(),
            Lifetime::Tied,
            &env,
            self.run_as,
        )?;
        let mut remora = Remora {
            agent,
            http,
            config_path,
            binary: self.binary,
            pending_listeners: None,
            process,
            _scratch: Some(scratch),
        };
        if reported {
            remora.read_bound_ports()?;
        }
        Ok(remora)
    }
}

impl Remora {
    /// Starts `binary` with `yaml` plus `agent:` and `http:` sections on free
    /// ports, the lab's remora password in `$REMORA_MYSQL_PASSWORD`, and waits
    /// until the agent answers.
    pub async fn start(binary: &Path, yaml: &str) -> Result<Remora> {
        Remora::builder(binary, yaml).start().await
    }

    /// A remora to start with `yaml`, set up further before it starts.
    pub fn builder(binary: &Path, yaml: &str) -> Builder {
        Builder {
            binary: binary.to_owned(),
            yaml: yaml.to_owned(),
            env: Vec::new(),
            listeners: None,
            run_as: None,
        }
    }

    pub async fn wait_answering(&mut self) -> Result<()> {
        let agent = self.agent;
        let process = &mut self.process;
        let waited = wait_until("remora to answer", START_LIMIT, async || {
            if let Ok(line) = agent_reply(agent).await
                && !line.is_empty()
            {
                return Ok(Some(()));
            }
            ensure!(process.is_running(), "remora exited during start-up");
            Ok(None)
        })
        .await;
        waited.with_context(|| self.log())
    }

    /// Everything remora has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// SIGTERM and wait up to `grace`; the exit status, if it exited.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.process.terminate(grace)
    }

    /// Replaces the configuration file with `yaml` plus the current (or the
    /// given) listen addresses. Takes effect on [`Remora::reload`].
    pub fn rewrite_config(
        &mut self,
        yaml: &str,
        agent: Option<SocketAddr>,
        http: Option<SocketAddr>,
    ) -> Result<()> {
        // An address not given stays as the file has it (port 0 stays 0:
        // the running remora keeps the port it bound).
        let current: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(&self.config_path).context("reading remora.yaml")?,
        )?;
        let listen = |given: Option<SocketAddr>, section: &str| -> serde_yaml::Value {
            match given {
                Some(addr) => addr.to_string().into(),
                None => current[section]["listen"].clone(),
            }
        };
        let keys = [
            ("agent", "listen", listen(agent, "agent")),
            ("http", "listen", listen(http, "http")),
        ];
        std::fs::write(&self.config_path, set_keys(yaml, &keys)?)
            .context("rewriting remora.yaml")?;
        self.pending_listeners = Some((agent.unwrap_or(self.agent), http.unwrap_or(self.http)));
        Ok(())
    }

    /// SIGHUP: remora re-reads its configuration. Listen addresses written
    /// by [`Remora::rewrite_config`] are adopted here.
    pub fn reload(&mut self) -> Result<()> {
        self.process.signal(libc::SIGHUP)?;
        if let Some((agent, http)) = self.pending_listeners.take() {
            self.agent = agent;
            self.http = http;
        }
        Ok(())
    }

    /// The addresses remora says it bound (`agent on …, http on …`, logged
    /// before its first poll), waited for at most [`START_LIMIT`].
    fn read_bound_ports(&mut self) -> Result<()> {
        (self.agent, self.http) = bound_ports(&mut self.process)?;
        Ok(())
    }

    /// Stops remora (SIGTERM) and starts it again with the same configuration
    /// and ports; waits until it answers.
    pub async fn restart(&mut self) -> Result<()> {
        self.process.terminate(Duration::from_secs(3));
        // The ports it had, not port 0 again: whoever points at them
        // (HAProxy, the test) finds the new process there.
        let yaml = std::fs::read_to_string(&self.config_path).context("reading remora.yaml")?;
        std::fs::write(
            &self.config_path,
            with_listeners(&yaml, self.agent, self.http)?,
        )
        .context("rewriting remora.yaml")?;
        let dir = self
            .config_path
            .parent()
            .context("config has a directory")?;
        let command = remora_command(&self.binary, &self.config_path);
        self.process = Process::spawn("remora", command, &dir.join("remora.log"), Lifetime::Tied)?;
        self.wait_answering().await
    }

    /// SIGTERM and wait up to `grace` (then SIGKILL), for a stop that is
    /// meant to last: the agent stops answering.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.process.terminate(Duration::from_secs(3))
    }

    /// Waits up to `limit` for remora to exit; its status if it did.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(limit).await
    }

    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        self.process.signal(signal)
    }

    /// The agent's current reply, without the newline.
    pub async fn reply(&self) -> Result<String> {
        Ok(agent_reply(self.agent).await?.trim_end().to_owned())
    }

    /// Polls the agent until its reply satisfies `condition`; returns the
    /// reply and how long it took.
    pub async fn wait_reply(
        &self,
        limit: Duration,
        condition: impl Fn(&str) -> bool,
    ) -> Result<(String, Duration)> {
        let started = Instant::now();
        let mut last = String::new();
        let waited = wait_until("the agent reply wanted", limit, async || {
            last = self.reply().await?;
            Ok(condition(&last).then(|| (last.clone(), started.elapsed())))
        })
        .await;
        waited.with_context(|| format!("agent reply still {last:?}; remora log:\n{}", self.log()))
    }

    /// Samples the agent every 20 ms until `done` accepts a reply or `limit`
    /// passes; returns the distinct replies in order (consecutive repeats
    /// collapsed), the last being the accepted one.
    pub async fn replies_until(
        &self,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        let mut seen: Vec<String> = Vec::new();
        let waited = wait_until("an accepted agent reply", limit, async || {
            let reply = self.reply().await?;
            let accepted = done(&reply);
            if seen.last() != Some(&reply) {
                seen.push(reply);
            }
            Ok(accepted.then_some(()))
        })
        .await;
        match waited {
            Ok(()) => Ok(seen),
            Err(err) => Err(err.context(format!("saw {seen:#?}\nremora log:\n{}", self.log()))),
        }
    }

    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.http, path).await
    }

    /// `/status`, parsed.
    pub async fn status(&self) -> Result<serde_json::Value> {
        self.json("/status").await
    }

    /// `path`'s JSON, which must come with 200.
    pub async fn json(&self, path: &str) -> Result<serde_json::Value> {
        let (code, body) = self.get(path).await?;
        anyhow::ensure!(code == 200, "{path} answered {code}: {body}");
        serde_json::from_str(&body).with_context(|| format!("{path} is JSON"))
    }

    /// Waits until remora has made `polls` polls in all (at most a minute:
    /// a poll that never comes is a failure of its own).
    pub async fn wait_until_polls(&self, polls: u64) -> Result<()> {
        let what = format!("remora's poll number {polls}");
        let waited = wait_until(&what, Duration::from_secs(60), async || {
            Ok((self.polls().await? >= polls).then_some(()))
        })
        .await;
        waited.with_context(|| self.log())
    }

    /// Agent checks remora has answered for `pool` (`default`, `unknown` or
    /// a pool's name), whatever it reported: `remora_agent_checks_total`.
    pub async fn checks_answered(&self, pool: &str) -> Result<u64> {
        let (code, metrics) = self.get("/metrics").await?;
        anyhow::ensure!(code == 200, "/metrics answered {code}");
        let series = format!("remora_agent_checks_total{{pool=\"{pool}\",");
        Ok(metrics
            .lines()
            .filter(|line| line.starts_with(&series))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum())
    }

    /// Polls remora has made so far (`polls.total` in `/status`): the clock
    /// that bounds in polls are measured with.
    pub async fn polls(&self) -> Result<u64> {
        let status = self.status().await?;
        status["polls"]["total"]
            .as_u64()
            .with_context(|| format!("no polls.total in {status}"))
    }
}

/// Starts remora with `yaml` plus `agent:`/`http:` sections for the given
/// addresses; its config (`remora.yaml`) and log (`remora.log`) go in `dir`.
pub fn launch(
    binary: &Path,
    yaml: &str,
    agent: SocketAddr,
    http: SocketAddr,
    dir: &Path,
    lifetime: Lifetime,
    env: &[(&str, &str)],
) -> Result<(Process, PathBuf)> {
    launch_as(binary, yaml, (agent, http), dir, lifetime, env, None)
}

/// [`launch`], as OS user and group `run_as` when given.
fn launch_as(
    binary: &Path,
    yaml: &str,
    (agent, http): (SocketAddr, SocketAddr),
    dir: &Path,
    lifetime: Lifetime,
    env: &[(&str, &str)],
    run_as: Option<(u32, u32)>,
) -> Result<(Process, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config_path = dir.join("remora.yaml");
    std::fs::write(&config_path, with_listeners(yaml, agent, http)?)
        .context("writing remora.yaml")?;
    let mut command = remora_command(binary, &config_path);
    for (key, value) in env {
        command.env(key, value);
    }
    if let Some((uid, gid)) = run_as {
        for (path, mode) in [(dir, 0o755), (config_path.as_path(), 0o644)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {}", path.display()))?;
        }
        command.uid(uid).gid(gid);
    }
    let process = Process::spawn("remora", command, &dir.join("remora.log"), lifetime)?;
    Ok((process, config_path))
}

/// `yaml` with `agent.listen` and `http.listen` set, other keys kept.
fn with_listeners(yaml: &str, agent: SocketAddr, http: SocketAddr) -> Result<String> {
    set_keys(
        yaml,
        &[
            ("agent", "listen", agent.to_string().into()),
            ("http", "listen", http.to_string().into()),
        ],
    )
}

/// `yaml` with each `section.key` set to its value, every other key kept.
pub fn set_keys(yaml: &str, keys: &[(&str, &str, serde_yaml::Value)]) -> Result<String> {
    use serde_yaml::{Mapping, Value};
    let mut document: Value = if yaml.trim().is_empty() {
        Value::Mapping(Mapping::new())
    } else {
        serde_yaml::from_str(yaml).context("remora YAML")?
    };
    let root = document
        .as_mapping_mut()
        .context("remora YAML must be a mapping")?;
    for (section, key, value) in keys {
        let entry = root
            .entry(Value::from(*section))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        entry
            .as_mapping_mut()
            .with_context(|| format!("{section} must be a mapping"))?
            .insert(Value::from(*key), value.clone());
    }
    Ok(serde_yaml::to_string(&document)?)
}

/// `remora --config <config>` with the lab's password and log level.
fn remora_command(binary: &Path, config: &Path) -> Command {
    let mut command = Command::new(binary);
    command.arg("--config").arg(config);
    command.env(
        "RUST_LOG",
        std::env::var("LAB_RUST_LOG").unwrap_or_else(|_| "info".into()),
    );
    command.env(PASSWORD_ENV, REMORA_PASSWORD);
    command
}

/// Connects, reads the agent's reply to EOF, closes.
pub async fn agent_reply(addr: SocketAddr) -> Result<String> {
    agent_request(addr, b"").await
}

/// Connects, sends `request` (HAProxy's `agent-send`), reads to EOF.
pub async fn agent_request(addr: SocketAddr, request: &[u8]) -> Result<String> {
    timeout(CLIENT_LIMIT, async {
        let mut stream = TcpStream::connect(addr).await?;
        if !request.is_empty() {
            stream.write_all(request).await?;
        }
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        anyhow::Ok(String::from_utf8_lossy(&reply).into_owned())
    })
    .await
    .map_err(|_| anyhow!("agent {addr}: no reply within {CLIENT_LIMIT:?}"))?
}

/// A one-shot HTTP/1.0 GET; returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    http_request(addr, "GET", path).await
}

pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String)> {
    http_exchange(addr, method, path, &[], "").await
}

/// A one-shot HTTP/1.0 request with `headers` and `body`; returns the
/// status code and body.
pub async fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    let raw = timeout(CLIENT_LIMIT, async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    })
    .await
    .map_err(|_| anyhow!("http {addr}{path}: no reply within {CLIENT_LIMIT:?}"))??;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .with_context(|| format!("http {addr}{path}: malformed response {raw:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("http {addr}{path}: no status in {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// The agent and HTTP addresses a starting remora reports having bound
/// (port 0 becomes a port), read from its log; waited for at most
/// [`START_LIMIT`].
pub fn bound_ports(process: &mut Process) -> Result<(SocketAddr, SocketAddr)> {
    let started = std::time::Instant::now();
    loop {
        let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
        let bound = log.lines().find_map(|line| {
            let (_, rest) = line.split_once("; agent on ")?;
            let (agent, http) = rest.split_once(", http on ")?;
            Some((agent.trim().parse().ok()?, http.trim().parse().ok()?))
        });
        if let Some(bound) = bound {
            return Ok(bound);
        }
        ensure!(
            process.is_running(),
            "remora exited before it listened:\n{log}"
        );
        ensure!(
            started.elapsed() < START_LIMIT,
            "remora never said where it listens:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
