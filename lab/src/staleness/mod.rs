//! What an application reading through HAProxy gets, measured: a primary
//! writing a heartbeat row every 100 ms, two MariaDB replicas behind one
//! HAProxy per configuration (the checks people run today beside remora's),
//! and applications reading through each ([`crate::readers`]), while one
//! replica (`replica1`) lags, breaks or freezes. Every configuration sees the
//! same replicas at the same moments: one run, side by side.

pub mod picture;
pub mod report;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

use crate::haproxy::{Haproxy, Release, Targets, shipped_config};
use crate::readers::{self, Load, Read};
use crate::remora::set_keys;
use crate::server::{REMORA_PASSWORD, Server};
use crate::topology::Topology;
use crate::{Engine, Remora};

/// How HAProxy is told which replica serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Configuration {
    /// `check`: a TCP connect, the most common setup.
    TcpCheck,
    /// `option mysql-check`: a MySQL handshake.
    MysqlCheck,
    /// An HTTP check of a script that answers 503 past a lag threshold, the
    /// way clustercheck and GitHub's xinetd check do: a cliff.
    LagThreshold,
    /// remora's agent, with `haproxy/haproxy.cfg`'s reader backend as shipped.
    RemoraShipped,
    /// remora's agent with the reader backend as it was shipped before this
    /// measurement: `balance leastconn`, sessions kept when a server goes down.
    RemoraBefore,
}

impl Configuration {
    pub const ALL: [Configuration; 5] = [
        Configuration::TcpCheck,
        Configuration::MysqlCheck,
        Configuration::LagThreshold,
        Configuration::RemoraShipped,
        Configuration::RemoraBefore,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Configuration::TcpCheck => "TCP check",
            Configuration::MysqlCheck => "mysql-check",
            Configuration::LagThreshold => "lag threshold script",
            Configuration::RemoraShipped => "remora (shipped)",
            Configuration::RemoraBefore => "remora (leastconn, sessions kept)",
        }
    }
}

/// The lag at which the threshold script answers 503: remora's shipped
/// `drain_at` for reads, so both take a replica out at the same lag.
pub const THRESHOLD: Duration = Duration::from_secs(10);

/// What runs: the servers, a remora beside each replica, the threshold
/// scripts, and a HAProxy per configuration.
pub struct Bench {
    pub topology: Topology,
    pub remoras: Vec<Remora>,
    scripts: Vec<JoinHandle<()>>,
    pub haproxies: BTreeMap<Configuration, Haproxy>,
    _beat: crate::Writer,
}

impl Drop for Bench {
    fn drop(&mut self) {
        for script in &self.scripts {
            script.abort();
        }
    }
}

/// What one scenario did to `replica1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Its lag ramps from 0 to `to` (an intended delay while the heartbeat
    /// is written), then it catches up at once.
    LagRamp { to: Duration },
    /// Its SQL thread stops on a duplicate row, for `for_`, then is mended.
    Broken { for_: Duration },
    /// SIGSTOP for `for_`, then SIGCONT.
    Frozen { for_: Duration },
}

impl Scenario {
    pub fn label(self) -> String {
        match self {
            Scenario::LagRamp { to } => format!("lag ramp 0 → {} s and back", to.as_secs()),
            Scenario::Broken { for_ } => format!("SQL thread broken for {} s", for_.as_secs()),
            Scenario::Frozen { for_ } => format!("frozen (SIGSTOP) for {} s", for_.as_secs()),
        }
    }
}

/// A scenario's reads, per configuration, and `replica1`'s lag as sampled
/// beside them.
#[derive(Debug)]
pub struct Run {
    pub scenario: Scenario,
    pub reads: BTreeMap<Configuration, Vec<Read>>,
    /// (time since the start, `replica1`'s staleness) every 250 ms.
    pub lag: Vec<(Duration, Duration)>,
    /// `replica1`'s `@@server_id`.
    pub lagging: u32,
    pub length: Duration,
}

impl Bench {
    /// Starts everything on Debian 12's MariaDB and HAProxy for `configurations`,
    /// remora from `remora_bin`.
    pub async fn start(remora_bin: &Path, configurations: &[Configuration]) -> Result<Bench> {
        let topology = Topology::start_on(Engine::MariaDb, 2).await?;
        let beat = readers::beat(&topology.primary).await?;
        for replica in &topology.replicas {
            // mysql-check logs in with a password-less account.
            replica
                .exec(&[
                    "SET SESSION sql_log_bin = 0",
                    "CREATE USER IF NOT EXISTS haproxy@'%'",
                ])
                .await?;
        }
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/remora-pools.yaml"),
        )?;
        let mut remoras = Vec::new();
        for replica in &topology.replicas {
            // The example, at this replica; its HTTP on loopback needs no token.
            let yaml = set_keys(
                &example,
                &[
                    ("mysql", "port", u64::from(replica.port).into()),
                    ("http", "admin_token_file", serde_yaml::Value::Null),
                ],
            )?;
            remoras.push(Remora::start(remora_bin, &yaml).await?);
        }
        let mut scripts = Vec::new();
        let mut script_ports = Vec::new();
        for replica in &topology.replicas {
            let (port, task) = lag_script(replica.port, THRESHOLD).await?;
            script_ports.push(port);
            scripts.push(task);
        }
        let mut haproxies = BTreeMap::new();
        let dir = tempfile::tempdir()?;
        for configuration in configurations {
            let backend = backend(*configuration, &topology, &remoras, &script_ports)?;
            let path = dir.path().join(format!("{configuration:?}.cfg"));
            std::fs::write(&path, haproxy_config(&backend))?;
            let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
            let targets = Targets {
                primary: at(topology.replicas[0].port),
                primary_agent: remoras[0].agent,
                replica: at(topology.replicas[1].port),
                replica_agent: remoras[1].agent,
                main_min_servers: 1,
            };
            let haproxy = Haproxy::start_config_on(Release::Debian, &path, &targets).await?;
            haproxies.insert(*configuration, haproxy);
        }
        let bench = Bench {
            topology,
            remoras,
            scripts,
            haproxies,
            _beat: beat,
        };
        bench.wait_all_up().await?;
        Ok(bench)
    }

    fn lagging(&self) -> &Server {
        &self.topology.replicas[0]
    }

    /// Until every HAProxy has both replicas UP at full weight.
    async fn wait_all_up(&self) -> Result<()> {
        for (configuration, haproxy) in &self.haproxies {
            for (backend, server) in BACKENDS.iter().flat_map(|b| [(b, "r1"), (b, "r2")]) {
                haproxy
                    .watch_server(backend, server, Duration::from_secs(30), |s| {
                        s.status == "UP" && s.weight == 100
                    })
                    .await
                    .with_context(|| format!("{configuration:?}: {backend}/{server} up"))?;
            }
        }
        Ok(())
    }

    /// Runs `scenario` with `each` clients of each kind reading every
    /// `every` through every HAProxy; returns once the lagging replica is
    /// back and every HAProxy has both servers up again.
    pub async fn run(&mut self, scenario: Scenario, each: usize, every: Duration) -> Result<Run> {
        let start = Instant::now();
        let loads: BTreeMap<Configuration, Load> = (self.haproxies.iter())
            .map(|(configuration, haproxy)| {
                let frontends = (haproxy.binds.mysql, haproxy.binds.writer);
                (*configuration, Load::start(frontends, each, every, start))
            })
            .collect();
        let sampler = Sampler::start(self.lagging().port, start);
        let settle = Duration::from_secs(5);
        sleep(settle).await;
        let acted = self.act(scenario).await;
        sleep(Duration::from_secs(15)).await;
        let waited = self.wait_all_up().await;
        sleep(settle).await;
        let mut reads = BTreeMap::new();
        for (configuration, load) in loads {
            reads.insert(configuration, load.finish().await);
        }
        let lag = sampler.finish().await;
        acted?;
        waited?;
        let lagging = self
            .lagging()
            .value("SELECT @@server_id")
            .await?
            .and_then(|id| id.parse().ok())
            .context("@@server_id")?;
        Ok(Run {
            scenario,
            reads,
            lag,
            lagging,
            length: start.elapsed(),
        })
    }

    async fn act(&mut self, scenario: Scenario) -> Result<()> {
        let primary = &self.topology.primary;
        match scenario {
            Scenario::LagRamp { to } => {
                let lagging = &self.topology.replicas[0];
                lagging.delay(to.as_secs() + 30).await?;
                crate::wait_until("the lag ramp", to + Duration::from_secs(30), async || {
                    Ok((staleness(lagging.port).await? >= to).then_some(()))
                })
                .await?;
                lagging.delay(0).await?;
                lagging.wait_applied(primary, Duration::from_secs(30)).await
            }
            Scenario::Broken { for_ } => {
                let lagging = &self.topology.replicas[0];
                lagging
                    .exec(&[
                        "SET SESSION sql_log_bin = 0",
                        "INSERT INTO lab.conflict (id) VALUES (42)",
                    ])
                    .await?;
                primary
                    .exec(&["INSERT INTO lab.conflict (id) VALUES (42)"])
                    .await?;
                sleep(for_).await;
                lagging
                    .exec(&[
                        "SET SESSION sql_log_bin = 0",
                        "DELETE FROM lab.conflict WHERE id = 42",
                        "START SLAVE",
                    ])
                    .await?;
                primary
                    .exec(&["DELETE FROM lab.conflict WHERE id = 42"])
                    .await?;
                lagging.wait_applied(primary, Duration::from_secs(30)).await
            }
            Scenario::Frozen { for_ } => {
                let lagging = &self.topology.replicas[0];
                lagging.freeze()?;
                sleep(for_).await;
                lagging.thaw()?;
                Ok(())
            }
        }
    }
}

/// A replica's staleness now: its heartbeat row's age (one host, one clock).
async fn staleness(port: u16) -> Result<Duration> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .pass(Some(crate::server::ROOT_PASSWORD))
        .prefer_socket(false);
    let read = async {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::new(opts).await?;
        let stamp: Option<String> = conn
            .query_first("SELECT DATE_FORMAT(ts, '%Y-%m-%d %H:%i:%s.%f') FROM lab.beat")
            .await?;
        conn.disconnect().await?;
        anyhow::Ok(stamp)
    };
    let stamp = tokio::time::timeout(Duration::from_secs(1), read)
        .await
        .context("the replica answers")??
        .context("a heartbeat row")?;
    let written = humantime::parse_rfc3339_weak(&stamp)?;
    Ok(std::time::SystemTime::now()
        .duration_since(written)
        .unwrap_or_default())
}

/// A replica's staleness, sampled every 250 ms until finished.
struct Sampler {
    stop: tokio_util::sync::CancellationToken,
    task: JoinHandle<Vec<(Duration, Duration)>>,
}

impl Sampler {
    fn start(port: u16, start: Instant) -> Sampler {
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stopped.is_cancelled() {
                // A frozen replica answers nothing: no sample then.
                if let Ok(lag) = staleness(port).await {
                    samples.push((start.elapsed(), lag));
                }
                sleep(Duration::from_millis(250)).await;
            }
            samples
        });
        Sampler { stop, task }
    }

    async fn finish(self) -> Vec<(Duration, Duration)> {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// The threshold script: an HTTP check per replica that, like clustercheck
/// (a shell script under xinetd), opens a new MySQL connection for every
/// check and answers 200 while replication runs and `Seconds_Behind_Master`
/// is below `threshold`, 503 otherwise. Its port, and its task.
async fn lag_script(replica: u16, threshold: Duration) -> Result<(u16, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.read(&mut request)).await;
                let healthy = lag_below(replica, threshold).await.unwrap_or(false);
                let (status, body) = if healthy {
                    ("200 OK", "replica in sync\r\n")
                } else {
                    ("503 Service Unavailable", "replica lagging or broken\r\n")
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nConnection: close\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    Ok((port, task))
}

/// What the threshold script asks: both threads running, lag below it.
async fn lag_below(port: u16, threshold: Duration) -> Result<bool> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(crate::server::REMORA_USER))
        .pass(Some(REMORA_PASSWORD))
        .prefer_socket(false);
    let check = async {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::new(opts).await?;
        let row: Option<mysql_async::Row> = conn.query_first("SHOW SLAVE STATUS").await?;
        conn.disconnect().await?;
        let Some(row) = row else {
            return anyhow::Ok(false);
        };
        let text = |name: &str| {
            row.get_opt::<Option<String>, _>(name)
                .and_then(Result::ok)
                .flatten()
        };
        let running = text("Slave_IO_Running").as_deref() == Some("Yes")
            && text("Slave_SQL_Running").as_deref() == Some("Yes");
        let lag = text("Seconds_Behind_Master").and_then(|s| s.parse::<u64>().ok());
        Ok(running && lag.is_some_and(|lag| Duration::from_secs(lag) < threshold))
    };
    tokio::time::timeout(Duration::from_secs(1), check).await?
}

/// The reader backend of `configuration`, servers `r1` (the replica that
/// will lag) and `r2`.
fn backend(
    configuration: Configuration,
    topology: &Topology,
    remoras: &[Remora],
    script_ports: &[u16],
) -> Result<String> {
    let addr = |i: usize| format!("127.0.0.1:{}", topology.replicas[i].port);
    let plain = |options: &str| {
        format!(
            "    balance roundrobin\n{options}    default-server weight 100 check inter 2s\n\
             server r1 {}\n    server r2 {}\n",
            addr(0),
            addr(1)
        )
    };
    Ok(match configuration {
        Configuration::TcpCheck => plain(""),
        Configuration::MysqlCheck => plain("    option mysql-check user haproxy\n"),
        Configuration::LagThreshold => format!(
            "    balance roundrobin\n    option httpchk GET /\n    http-check expect status 200\n\
             \x20   default-server weight 100 check inter 2s\n    server r1 {} port {}\n    server r2 {} port {}\n",
            addr(0),
            script_ports[0],
            addr(1),
            script_ports[1]
        ),
        Configuration::RemoraShipped | Configuration::RemoraBefore => {
            let (balance, defaults) = shipped_reader_backend()?;
            let (balance, defaults) = match configuration {
                Configuration::RemoraBefore => (
                    "balance leastconn".to_owned(),
                    defaults.replace(" on-marked-down shutdown-sessions", ""),
                ),
                _ => (balance, defaults),
            };
            let agent = |i: usize| {
                format!(
                    "agent-addr 127.0.0.1 agent-port {}",
                    remoras[i].agent.port()
                )
            };
            format!(
                "    {balance}\n    {defaults}\n    server r1 {} {}\n    server r2 {} {}\n",
                addr(0),
                agent(0),
                addr(1),
                agent(1)
            )
        }
    })
}

/// The `balance` and `default-server` lines of the shipped reader backend
/// (`mysql_main` in `haproxy/haproxy.cfg`), as shipped.
fn shipped_reader_backend() -> Result<(String, String)> {
    let text = std::fs::read_to_string(shipped_config())?;
    let block: Vec<&str> = (text.lines())
        .skip_while(|line| line.trim() != "backend mysql_main")
        .skip(1)
        .take_while(|line| !line.starts_with("backend ") && !line.starts_with("frontend "))
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .collect();
    let find = |word: &str| {
        (block.iter())
            .find(|line| line.starts_with(word))
            .map(|line| (*line).to_owned())
    };
    match (find("balance"), find("default-server")) {
        (Some(balance), Some(defaults)) => Ok((balance, defaults)),
        _ => bail!("haproxy/haproxy.cfg's mysql_main has no balance or default-server line"),
    }
}

/// A HAProxy with a frontend for short connections (the lab's read bind)
/// and one for pooled ones (its writer bind), each to its own `backend`.
fn haproxy_config(backend: &str) -> String {
    let mut config = "global\n    stats socket \"${HAPROXY_STATS_SOCKET}\" mode 600 level admin\n\
         \x20   maxconn 4096\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    timeout server 1h\n\
         \x20   timeout check 1s\n"
        .to_owned();
    for (name, bind) in BACKENDS
        .iter()
        .zip(["HAPROXY_MYSQL_BIND", "HAPROXY_WRITER_BIND"])
    {
        config.push_str(&format!(
            "frontend {name}_reads\n    bind \"${{{bind}}}\"\n    default_backend {name}\n\
             backend {name}\n{backend}"
        ));
    }
    config
}

/// The two reader backends of every configuration, alike: one for short
/// connections, one for pooled ones (a balancer counting connections must
/// not see the pooled ones when it places the short).
const BACKENDS: [&str; 2] = ["short", "pooled"];
