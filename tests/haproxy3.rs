//! What HAProxy 3.1 and later add beside remora, as `docs/haproxy.md`
//! claims it, checked on sid's HAProxy 3.2 (and 2.6 where the claim is
//! about it): `init-state fully-down` keeps a server out until its checks
//! have spoken, the agent's `weight:` reply form (which 2.6 ignores), and
//! the agent's state in HAProxy's own Prometheus exporter.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use remora_lab::haproxy::{Haproxy, Release, Targets};
use remora_lab::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend of two servers, each a listener the test holds (so the TCP
/// check passes) with an agent answering what the test says: `a` starts
/// `init-state fully-down`; the exporter answers on the stats bind.
const CONFIG: &str = r#"global
    stats socket "${HAPROXY_STATS_SOCKET}" mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout check 1s
frontend reads
    bind "${HAPROXY_MYSQL_BIND}"
    default_backend servers
frontend metrics
    mode http
    bind "${HAPROXY_STATS_BIND}"
    http-request use-service prometheus-exporter if { path /metrics }
backend servers
    default-server weight 100 check inter 1s agent-check agent-inter 1s
    server a "${PRIMARY_ADDR}" agent-addr "${PRIMARY_AGENT_HOST}" agent-port "${PRIMARY_AGENT_PORT}" init-state fully-down
    server b "${REPLICA_ADDR}" agent-addr "${REPLICA_AGENT_HOST}" agent-port "${REPLICA_AGENT_PORT}"
"#;

/// A listener on a free loopback port, kept open.
fn listener() -> Result<TcpListener> {
    Ok(TcpListener::bind("127.0.0.1:0")?)
}

/// An agent answering `reply` to every check until dropped, and whether it
/// answers yet (it holds its tongue until `speak` is set).
struct Agent {
    addr: SocketAddr,
    speak: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    async fn start(reply: &'static str, speaking: bool) -> Result<Agent> {
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let (speak, heard) = tokio::sync::watch::channel(speaking);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = socket.accept().await {
                let heard = heard.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buffer))
                            .await;
                    if *heard.borrow() {
                        let _ = stream.write_all(reply.as_bytes()).await;
                    }
                });
            }
        });
        Ok(Agent { addr, speak, task })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(release: Release, agents: (&Agent, &Agent)) -> Result<(Haproxy, [TcpListener; 2])> {
    let servers = [listener()?, listener()?];
    let scratch = tempfile::tempdir()?;
    let config = scratch.path().join("haproxy.cfg");
    // 2.6 knows no init-state (3.1+).
    let text = match release {
        Release::Sid => CONFIG.to_owned(),
        Release::Debian => CONFIG.replace(" init-state fully-down", ""),
    };
    std::fs::write(&config, text)?;
    let targets = Targets {
        primary: servers[0].local_addr()?,
        primary_agent: agents.0.addr,
        replica: servers[1].local_addr()?,
        replica_agent: agents.1.addr,
        main_min_servers: 1,
    };
    let haproxy = Haproxy::start_config_on(release, &config, &targets).await?;
    Ok((haproxy, servers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3 from the sid root: `make test` builds it and runs this"]
async fn init_state_fully_down_keeps_a_server_out_until_its_checks_have_spoken() -> Result<()> {
    // a's agent says nothing yet: with fully-down, a is out from the start.
    let (a, b) = (
        Agent::start("up ready 100%\n", false).await?,
        Agent::start("up ready 100%\n", true).await?,
    );
    let (haproxy, _servers) = start(Release::Sid, (&a, &b)).await?;
    let first = haproxy.server("servers", "a").await?;
    ensure!(first.status.starts_with("DOWN"), "a at start: {first:?}");
    // Its agent speaks: a comes in.
    a.speak.send_replace(true);
    haproxy
        .watch_server("servers", "a", Duration::from_secs(10), |s| {
            s.status == "UP" && s.weight == 100
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 2.6 and 3 (the sid root): `make test` builds it and runs this"]
async fn the_weight_reply_form_sets_a_weight_on_3_and_is_not_understood_on_2_6() -> Result<()> {
    let (plain, weight) = (
        Agent::start("up ready 40%\n", true).await?,
        Agent::start("up weight:40%\n", true).await?,
    );
    for release in Release::ALL {
        let (haproxy, _servers) = start(release, (&plain, &weight)).await?;
        // remora's form: 40% on every version.
        haproxy
            .watch_server("servers", "a", Duration::from_secs(10), |s| s.weight == 40)
            .await
            .with_context(|| format!("{release:?}: up ready 40%"))?;
        let formed = async |wanted: u32| {
            haproxy
                .watch_server("servers", "b", Duration::from_secs(10), |s| {
                    s.weight == wanted && !s.agent_status.is_empty() && s.agent_status != "INI"
                })
                .await
        };
        match release {
            Release::Sid => formed(40).await.map(drop)?,
            // 2.6 does not know the word: the weight stays as configured.
            Release::Debian => {
                formed(100).await?;
                let stat = haproxy.server("servers", "b").await?;
                ensure!(stat.weight == 100, "2.6 took weight:40%: {stat:?}");
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3 from the sid root: `make test` builds it and runs this"]
async fn haproxys_own_exporter_shows_each_agent_checks_state() -> Result<()> {
    let (up, silent) = (
        Agent::start("up ready 100%\n", true).await?,
        Agent::start("up ready 100%\n", false).await?,
    );
    let (haproxy, _servers) = start(Release::Sid, (&up, &silent)).await?;
    let metrics = wait_until("the agent metrics", Duration::from_secs(15), async || {
        let (code, body) = remora_lab::http_get(haproxy.binds.stats, "/metrics").await?;
        ensure!(code == 200, "{code}: {body}");
        let said = |server: &str| {
            body.lines()
                .filter(|line| line.starts_with("haproxy_server_agent_status{"))
                .filter(|line| line.contains(&format!("server=\"{server}\"")))
                .filter(|line| line.ends_with(" 1"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let (a, b) = (said("a"), said("b"));
        Ok((!a.is_empty() && !b.is_empty() && a != b).then_some((a, b, body)))
    })
    .await?;
    let (a, b, body) = metrics;
    ensure!(
        a.iter().any(|line| line.contains("state=\"L7OK\"")),
        "the answering agent: {a:?}"
    );
    ensure!(
        !b.iter().any(|line| line.contains("state=\"L7OK\"")),
        "the silent one: {b:?}"
    );
    for family in [
        "haproxy_server_agent_code",
        "haproxy_server_agent_duration_seconds",
    ] {
        ensure!(body.contains(family), "{family} missing");
    }
    Ok(())
}
