//! Real MySQL and MariaDB servers on loopback, each a separate server
//! process with its own datadir, and a GTID primary/replica pair: Debian
//! 12's MariaDB by default, sid's MariaDB 11 or MySQL 9 on request (what
//! differs between them is in [`crate::engine`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use tokio::time::{sleep, timeout};

use crate::engine::Engine;
use crate::process::{Lifetime, Process};
use crate::wait_until;

pub use crate::accounts::*;

/// The lab's root account through `addr` (a HAProxy frontend, say), over TCP.
pub fn root_through(addr: std::net::SocketAddr) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some("root"))
        .pass(Some(ROOT_PASSWORD))
        .prefer_socket(false)
}

const READY_LIMIT: Duration = Duration::from_secs(30);
const SQL_LIMIT: Duration = Duration::from_secs(10);

/// One MySQL or MariaDB server.
#[derive(Debug)]
pub struct Server {
    pub name: String,
    pub engine: Engine,
    pub port: u16,
    pub server_id: u32,
    /// Its directory (a host path; under the sid root for sid's servers).
    pub dir: PathBuf,
    lifetime: Lifetime,
    /// More server options (`--gtid-domain-id=2`, wsrep or Group
    /// Replication settings, ...).
    extra_args: Vec<String>,
    process: Option<Process>,
}

impl Server {
    /// Initializes `dir` if it is new, starts the server on `port`, waits until
    /// it accepts connections and makes sure the lab users exist.
    pub async fn start(
        name: &str,
        server_id: u32,
        dir: &Path,
        port: u16,
        lifetime: Lifetime,
    ) -> Result<Server> {
        Server::start_with(name, server_id, dir, port, lifetime, &[]).await
    }

    /// Like [`Server::start`], with more `mariadbd` options.
    pub async fn start_with(
        name: &str,
        server_id: u32,
        dir: &Path,
        port: u16,
        lifetime: Lifetime,
        extra_args: &[String],
    ) -> Result<Server> {
        let engine = Engine::MariaDb;
        Server::start_as(engine, name, server_id, dir, (port, lifetime), extra_args).await
    }

    /// A server of `engine`, with more options; `dir` must be a
    /// directory it can reach (see [`Engine::scratch`]).
    pub async fn start_as(
        engine: Engine,
        name: &str,
        server_id: u32,
        dir: &Path,
        (port, lifetime): (u16, Lifetime),
        extra_args: &[String],
    ) -> Result<Server> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let fresh = !dir.join("data").join("mysql").exists();
        if fresh {
            install_datadir(engine, dir)?;
        }
        let mut server = Server {
            name: name.to_owned(),
            engine,
            port,
            server_id,
            dir: dir.to_owned(),
            lifetime,
            extra_args: extra_args.to_vec(),
            process: None,
        };
        server.spawn()?;
        server.wait_ready(fresh).await?;
        if server.extra_args.iter().any(|arg| arg == "--wsrep-on=ON") {
            // A Galera node accepts connections before it may run statements.
            server.wait_wsrep_ready(fresh).await?;
        }
        if fresh {
            server.create_users().await?;
        }
        Ok(server)
    }

    /// A handle on a server started earlier (by `make up`), for running SQL.
    pub fn attach(engine: Engine, name: &str, server_id: u32, dir: &Path, port: u16) -> Server {
        Server {
            name: name.to_owned(),
            engine,
            port,
            server_id,
            dir: dir.to_owned(),
            lifetime: Lifetime::Detached,
            extra_args: Vec::new(),
            process: None,
        }
    }

    fn spawn(&mut self) -> Result<()> {
        let dir = self.engine.path(&self.dir)?;
        let mut command = self.engine.server()?;
        command
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--server-id={}", self.server_id))
            .args(&self.extra_args);
        let process = Process::spawn(
            &self.name,
            command,
            &self.dir.join("server.out"),
            self.lifetime,
        )?;
        self.process = Some(process);
        Ok(())
    }

    async fn wait_ready(&mut self, fresh: bool) -> Result<()> {
        let opts = self.root_opts(fresh);
        let (name, error_log) = (self.name.clone(), self.dir.join("error.log"));
        let process = self.process.as_mut().expect("spawned before waiting");
        let what = format!("{name} to accept connections");
        wait_until(&what, READY_LIMIT, async || {
            if let Ok(Ok(conn)) = timeout(Duration::from_secs(2), Conn::new(opts.clone())).await {
                let _ = conn.disconnect().await;
                return Ok(Some(()));
            }
            ensure!(process.is_running(), "{name} exited during start-up");
            Ok(None)
        })
        .await
        .with_context(|| crate::process::log_tail(&error_log, 20))
    }

    async fn wait_wsrep_ready(&self, fresh: bool) -> Result<()> {
        let password = if fresh { "" } else { ROOT_PASSWORD };
        let what = format!("{}'s wsrep_ready to be ON", self.name);
        wait_until(&what, READY_LIMIT, async || {
            let Ok(Ok(mut conn)) = timeout(
                Duration::from_secs(2),
                Conn::new(self.opts("root", password)),
            )
            .await
            else {
                return Ok(None);
            };
            let ready: Option<(String, String)> = conn
                .query_first("SHOW GLOBAL STATUS LIKE 'wsrep_ready'")
                .await
                .unwrap_or(None);
            let _ = conn.disconnect().await;
            Ok(ready.is_some_and(|(_, value)| value == "ON").then_some(()))
        })
        .await
    }

    /// How root reaches the server: a fresh one as the engine first
    /// allows it (no password yet), later with the lab's password over TCP.
    fn root_opts(&self, fresh: bool) -> OptsBuilder {
        if !fresh {
            return self.opts("root", ROOT_PASSWORD);
        }
        let opts = self.opts("root", "");
        if self.engine.first_over_socket() {
            opts.socket(Some(self.socket().display().to_string()))
                .prefer_socket(true)
        } else {
            opts
        }
    }

    /// Its unix socket (a host path).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    async fn create_users(&self) -> Result<()> {
        let mut conn = timeout(SQL_LIMIT, Conn::new(self.root_opts(true)))
            .await
            .context("connecting as root")??;
        // Users are local to each server: the engine keeps them out of the
        // binlog.
        for statement in self.engine.accounts() {
            conn.query_drop(&statement)
                .await
                .with_context(|| format!("{}: {statement}", self.name))?;
        }
        conn.disconnect().await?;
        Ok(())
    }

    /// Over TCP, or over the socket when the server has no TCP listener.
    fn opts(&self, user: &str, password: &str) -> OptsBuilder {
        let no_tcp = self.extra_args.iter().any(|arg| arg == "--skip-networking");
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .socket(no_tcp.then(|| self.socket().display().to_string()))
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false)
    }

    /// A root connection (fresh each time: servers get killed and restarted).
    pub async fn conn(&self) -> Result<Conn> {
        timeout(SQL_LIMIT, Conn::new(self.opts("root", ROOT_PASSWORD)))
            .await
            .map_err(|_| anyhow!("{}: connect timed out", self.name))?
            .with_context(|| format!("{}: connecting as root", self.name))
    }

    /// Runs statements in order on one connection.
    pub async fn exec(&self, statements: &[&str]) -> Result<()> {
        let mut conn = self.conn().await?;
        for statement in statements {
            timeout(SQL_LIMIT, conn.query_drop(*statement))
                .await
                .map_err(|_| anyhow!("{}: timed out: {statement}", self.name))?
                .with_context(|| format!("{}: {statement}", self.name))?;
        }
        conn.disconnect().await?;
        Ok(())
    }

    pub async fn rows(&self, statement: &str) -> Result<Vec<Row>> {
        let mut conn = self.conn().await?;
        let rows = timeout(SQL_LIMIT, conn.query(statement))
            .await
            .map_err(|_| anyhow!("{}: timed out: {statement}", self.name))?
            .with_context(|| format!("{}: {statement}", self.name))?;
        conn.disconnect().await?;
        Ok(rows)
    }

    /// Kills every session of `user`, as an operator's `KILL` would; a
    /// session that ends on its own meanwhile is no error.
    pub async fn kill_sessions(&self, user: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let ids: Vec<u64> = timeout(
            SQL_LIMIT,
            conn.query(format!(
                "SELECT id FROM information_schema.processlist WHERE user = '{user}'"
            )),
        )
        .await
        .map_err(|_| anyhow!("{}: listing sessions timed out", self.name))??;
        for id in ids {
            let _ = timeout(SQL_LIMIT, conn.query_drop(format!("KILL {id}"))).await;
        }
        conn.disconnect().await?;
        Ok(())
    }

    /// The first column of the first row, as text.
    pub async fn value(&self, statement: &str) -> Result<Option<String>> {
        let rows = self.rows(statement).await?;
        Ok(rows
            .first()
            .and_then(|row| row.get_opt::<Option<String>, _>(0))
            .and_then(|value| value.ok())
            .flatten())
    }

    /// The end of its error log, for a failure's context.
    pub fn error_log_tail(&self) -> String {
        crate::process::log_tail(&self.dir.join("error.log"), 20)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Runs `statement` every `every` until the returned handle is dropped,
    /// reconnecting as needed (the server may be killed and restarted).
    pub fn keep_writing(&self, statement: &str, every: Duration) -> Writer {
        let opts = self.opts("root", ROOT_PASSWORD);
        let statement = statement.to_owned();
        let task = tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            loop {
                if conn.is_none() {
                    conn = timeout(SQL_LIMIT, Conn::new(opts.clone()))
                        .await
                        .ok()
                        .and_then(Result::ok);
                }
                if let Some(c) = conn.as_mut() {
                    let wrote = timeout(SQL_LIMIT, c.query_drop(statement.as_str())).await;
                    if !matches!(wrote, Ok(Ok(()))) {
                        conn = None;
                    }
                }
                sleep(every).await;
            }
        });
        Writer { task }
    }

    /// Waits until replication connection `connection` (`""`: the default
    /// one) satisfies `condition`.
    pub async fn wait_for(
        &self,
        connection: &str,
        limit: Duration,
        what: &str,
        condition: impl Fn(&ReplicaStatus) -> bool,
    ) -> Result<ReplicaStatus> {
        let mut last = None;
        let what = format!("{} '{connection}' to be {what}", self.name);
        let waited = wait_until(&what, limit, async || {
            let status = self.replica_status(connection).await?;
            let met = condition(&status);
            last = Some(status.clone());
            Ok(met.then_some(status))
        })
        .await;
        waited.with_context(|| format!("last seen: {last:?}"))
    }

    /// Replication connection `connection`'s status (`""`: the default
    /// one), in the engine's own statement.
    pub async fn replica_status(&self, connection: &str) -> Result<ReplicaStatus> {
        let rows = self.rows(&self.engine.replica_status(connection)).await?;
        let row = rows
            .first()
            .with_context(|| format!("{}: no replication connection '{connection}'", self.name))?;
        let text = |name: &str| -> Option<String> {
            row.get_opt::<Option<String>, _>(self.engine.column(name).as_str())
                .and_then(|value| value.ok())
                .flatten()
        };
        let number = |name: &str| -> Option<u64> { text(name)?.parse().ok() };
        Ok(ReplicaStatus {
            io_running: text("Slave_IO_Running").unwrap_or_default(),
            sql_running: text("Slave_SQL_Running").unwrap_or_default(),
            seconds_behind: number("Seconds_Behind_Master"),
            sql_delay: number("SQL_Delay").unwrap_or(0),
            last_sql_errno: number("Last_SQL_Errno").unwrap_or(0) as u32,
            last_io_errno: number("Last_IO_Errno").unwrap_or(0) as u32,
        })
    }

    /// Replicates from `source`, GTID-positioned, both threads running.
    pub async fn follow(&self, source: &Server) -> Result<()> {
        let engine = self.engine;
        let position = (source.value(engine.position()).await?).unwrap_or_default();
        let mut statements: Vec<String> = engine.start_at(&position).into_iter().collect();
        statements.push(engine.follow(source.port));
        statements.push(engine.start_replica(""));
        self.replicate_after(&statements).await
    }

    /// Runs `statements`, then waits until both replication threads run.
    async fn replicate_after(&self, statements: &[String]) -> Result<()> {
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        self.exec(&statements).await?;
        self.wait_for("", Duration::from_secs(20), "both threads running", |s| {
            s.io_running == "Yes" && s.sql_running == "Yes"
        })
        .await?;
        Ok(())
    }

    /// Follows `source` instead of the server it follows now, from where
    /// it is (GTID auto-position): a replica re-pointed in a switchover.
    pub async fn repoint(&self, source: &Server) -> Result<()> {
        let engine = self.engine;
        let statements = [
            engine.stop_replica(""),
            engine.follow(source.port),
            engine.start_replica(""),
        ];
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        self.exec(&statements).await?;
        let connected = self
            .wait_for("", Duration::from_secs(20), "connected or refused", |s| {
                (s.io_running == "Yes" && s.sql_running == "Yes") || s.last_io_errno == DIVERGED
            })
            .await?;
        if connected.last_io_errno == DIVERGED {
            self.start_where_the_source_is(source).await?;
        }
        Ok(())
    }

    /// MariaDB refuses a replica that holds transactions its new source
    /// lacks (error 1236: the writes the old primary took after the new one
    /// was promoted). The operator's way on: start from the new source's
    /// position, the diverged rows kept here alone. MySQL's auto-position
    /// sends what is missing and never needs this.
    async fn start_where_the_source_is(&self, source: &Server) -> Result<()> {
        let engine = self.engine;
        let position = (source.value(engine.position()).await?).unwrap_or_default();
        let start_at = engine.start_at(&position).context("MariaDB only")?;
        let statements = [engine.stop_replica(""), start_at, engine.start_replica("")];
        self.replicate_after(&statements).await
    }

    /// The lab's tables (ticks, a table to break replication on, the
    /// heartbeat's database), on a primary.
    pub async fn create_lab_tables(&self) -> Result<()> {
        self.exec(&[
            "CREATE DATABASE IF NOT EXISTS lab",
            "CREATE TABLE IF NOT EXISTS lab.ticks (
                id BIGINT AUTO_INCREMENT PRIMARY KEY,
                at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
            "CREATE TABLE IF NOT EXISTS lab.conflict (id INT PRIMARY KEY)",
            &format!("CREATE DATABASE IF NOT EXISTS {HEARTBEAT_DATABASE}"),
        ])
        .await
    }

    /// Stops replicating, forgets its source and takes writes: a replica
    /// promoted to primary.
    pub async fn promote(&self) -> Result<()> {
        self.exec(&self.engine.promote()).await
    }

    /// Stops replicating and forgets its source, read-only: a server left
    /// out of the topology, following nobody.
    pub async fn stand_alone(&self) -> Result<()> {
        let [stop, reset, _] = self.engine.promote();
        self.exec(&[stop, reset, self.engine.read_only(true)]).await
    }

    /// `read_only` on or off (with `super_read_only` on MySQL).
    pub async fn set_read_only(&self, on: bool) -> Result<()> {
        self.exec(&[self.engine.read_only(on)]).await
    }

    /// Waits until this replica has applied everything `source` had
    /// written when this was called (later writes may still be in flight).
    pub async fn wait_applied(&self, source: &Server, limit: Duration) -> Result<()> {
        let engine = self.engine;
        let target = (source.value(engine.position()).await?).unwrap_or_default();
        if target.is_empty() {
            return Ok(());
        }
        // 0 once applied; -1 (MariaDB) or 1 (MySQL) on timeout.
        let mut conn = self.conn().await?;
        let wait = engine.wait_for(&target, limit.as_secs_f64());
        let reached: Option<i64> = timeout(limit + SQL_LIMIT, conn.query_first(&wait))
            .await
            .map_err(|_| anyhow!("{}: {wait} did not return", self.name))??;
        conn.disconnect().await?;
        if reached != Some(0) {
            let applied = self.value(engine.position()).await?;
            bail!(
                "{} at {applied:?}, not yet at {}'s {target:?} after {limit:?}",
                self.name,
                source.name
            );
        }
        Ok(())
    }

    /// The intended delay (`MASTER_DELAY`, `SOURCE_DELAY`) of `seconds`.
    /// Replication is started again even if the change fails: a failed lab
    /// command leaves replication running as it was.
    pub async fn delay(&self, seconds: u64) -> Result<()> {
        let [stop, change, start] = self.engine.delay(seconds);
        self.exec(&[&stop]).await?;
        let changed = self.exec(&[&change]).await;
        self.exec(&[&start]).await?;
        changed
    }

    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Process::is_running)
    }

    /// SIGKILL: the server vanishes mid-flight, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again on the same port and datadir.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_ready(false).await
    }

    /// Starts the server again with `--skip-networking`: no TCP listener,
    /// only its unix socket (`mysqld.sock` in its folder).
    pub async fn restart_without_tcp(&mut self) -> Result<()> {
        self.kill();
        self.extra_args.push("--skip-networking".to_owned());
        self.spawn()?;
        self.wait_ready(false).await
    }

    /// SIGSTOP: the kernel still completes TCP handshakes, the server never answers.
    pub fn freeze(&self) -> Result<()> {
        self.process.as_ref().context("not running")?.freeze()
    }

    pub fn thaw(&self) -> Result<()> {
        self.process.as_ref().context("not running")?.thaw()
    }

    /// Stops tracking the server so it outlives this process; returns its pid.
    pub fn detach(&mut self) -> Option<u32> {
        self.process.take().map(Process::detach)
    }
}

/// `ER_MASTER_FATAL_ERROR_READING_BINLOG`: on a re-point, the replica has
/// transactions the source's binary log lacks.
const DIVERGED: u32 = 1236;

/// Replication state of one connection, as the lab reports it (MariaDB's
/// `Seconds_Behind_Master`, MySQL's `Seconds_Behind_Source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub io_running: String,
    pub sql_running: String,
    pub seconds_behind: Option<u64>,
    pub sql_delay: u64,
    pub last_sql_errno: u32,
    pub last_io_errno: u32,
}

/// A GTID primary and its replica.
#[derive(Debug)]
pub struct Pair {
    pub primary: Server,
    pub replica: Server,
    /// Holds the temporary directory for a tied pair; removed on drop.
    _scratch: Option<tempfile::TempDir>,
}

impl Pair {
    /// A MariaDB 10.11 pair on free ports in a temporary directory, killed
    /// and removed on drop.
    pub async fn start() -> Result<Pair> {
        Pair::start_on(Engine::MariaDb).await
    }

    /// A pair of `engine` on free ports in a temporary directory, killed
    /// and removed on drop, with the lab's tables written and replicated.
    pub async fn start_on(engine: Engine) -> Result<Pair> {
        let pair = Pair::replicating(engine).await?;
        pair.seed().await?;
        Ok(pair)
    }

    /// Like [`Pair::start_on`], with nothing written yet: a new replica
    /// that has received nothing, both threads running.
    pub async fn replicating(engine: Engine) -> Result<Pair> {
        let scratch = engine.scratch()?;
        let ports = (crate::free_port()?, crate::free_port()?);
        let (dir, lifetime) = (scratch.path(), Lifetime::Tied);
        let mut pair = Pair::start_servers(engine, dir, ports, lifetime).await?;
        pair._scratch = Some(scratch);
        pair.configure_replication().await?;
        Ok(pair)
    }

    /// A pair of `engine` in `dir` on the given ports; reuses existing
    /// datadirs.
    pub async fn start_in(
        engine: Engine,
        dir: &Path,
        ports: (u16, u16),
        lifetime: Lifetime,
    ) -> Result<Pair> {
        let replica_is_new = !dir.join("replica/data/mysql").exists();
        let pair = Pair::start_servers(engine, dir, ports, lifetime).await?;
        if replica_is_new {
            pair.configure_replication().await?;
            pair.seed().await?;
        }
        Ok(pair)
    }

    async fn start_servers(
        engine: Engine,
        dir: &Path,
        (primary_port, replica_port): (u16, u16),
        lifetime: Lifetime,
    ) -> Result<Pair> {
        let primary_dir = dir.join("primary");
        let replica_dir = dir.join("replica");
        let (primary, replica) = tokio::try_join!(
            Server::start_as(
                engine,
                "primary",
                1,
                &primary_dir,
                (primary_port, lifetime),
                &[]
            ),
            Server::start_as(
                engine,
                "replica",
                2,
                &replica_dir,
                (replica_port, lifetime),
                &[]
            ),
        )?;
        Ok(Pair {
            primary,
            replica,
            _scratch: None,
        })
    }

    /// The lab's tables on the primary, applied on the replica.
    pub async fn seed(&self) -> Result<()> {
        self.primary.create_lab_tables().await?;
        self.wait_caught_up(Duration::from_secs(20)).await
    }

    /// Handles on a pair of `engine` started earlier in `dir` (by `make up`).
    pub fn attach(engine: Engine, dir: &Path, primary_port: u16, replica_port: u16) -> Pair {
        let at = |name: &str, id, port| Server::attach(engine, name, id, &dir.join(name), port);
        Pair {
            primary: at("primary", 1, primary_port),
            replica: at("replica", 2, replica_port),
            _scratch: None,
        }
    }

    pub fn engine(&self) -> Engine {
        self.replica.engine
    }

    async fn configure_replication(&self) -> Result<()> {
        self.replica.follow(&self.primary).await
    }

    /// The replica's status, the fields the lab cares about.
    pub async fn replica_status(&self) -> Result<ReplicaStatus> {
        self.replica.replica_status("").await
    }

    /// Waits until the replica's status satisfies `condition`.
    pub async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        condition: impl Fn(&ReplicaStatus) -> bool,
    ) -> Result<ReplicaStatus> {
        self.replica.wait_for("", limit, what, condition).await
    }

    /// Waits until the replica has applied everything the primary had written
    /// when this was called (later writes may still be in flight).
    pub async fn wait_caught_up(&self, limit: Duration) -> Result<()> {
        self.replica.wait_applied(&self.primary, limit).await
    }

    /// The intended delay (`MASTER_DELAY`, `SOURCE_DELAY`) of `seconds`.
    pub async fn start_lag(&self, seconds: u64) -> Result<()> {
        self.replica.delay(seconds).await
    }

    pub async fn stop_lag(&self) -> Result<()> {
        self.start_lag(0).await
    }

    /// One write on the primary; under MASTER_DELAY lag shows only while writes flow.
    pub async fn tick(&self) -> Result<()> {
        self.primary
            .exec(&["INSERT INTO lab.ticks () VALUES ()"])
            .await
    }

    /// Writes on the primary every `every` until the returned handle is dropped.
    pub fn keep_writing(&self, every: Duration) -> Writer {
        self.primary
            .keep_writing("INSERT INTO lab.ticks () VALUES ()", every)
    }

    /// The seed's `make stuff`: create and drop a database, with writes between.
    pub async fn stuff(&self) -> Result<()> {
        self.primary
            .exec(&[
                "CREATE DATABASE IF NOT EXISTS stuff",
                "CREATE TABLE stuff.things (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(32))",
                "INSERT INTO stuff.things (name) VALUES ('a'), ('b'), ('c')",
                "UPDATE stuff.things SET name = CONCAT(name, '!')",
                "INSERT INTO lab.ticks () VALUES (), (), ()",
                "DROP DATABASE stuff",
            ])
            .await
    }

    /// Breaks replication with a conflicting row: the replica gets id `id`
    /// locally, then the primary inserts the same id. The SQL thread stops
    /// with `Last_SQL_Errno = 1062`.
    pub async fn break_replication(&self, id: u32) -> Result<()> {
        self.replica
            .exec(&[
                "SET SESSION sql_log_bin = 0",
                &format!("INSERT INTO lab.conflict (id) VALUES ({id})"),
            ])
            .await?;
        self.primary
            .exec(&[&format!("INSERT INTO lab.conflict (id) VALUES ({id})")])
            .await?;
        self.wait_for(Duration::from_secs(20), "stopped on error 1062", |s| {
            s.last_sql_errno == 1062
        })
        .await?;
        Ok(())
    }

    /// Removes the replica's conflicting row and restarts the SQL thread, which
    /// then applies the primary's row.
    pub async fn fix_replication(&self, id: u32) -> Result<()> {
        self.replica
            .exec(&[
                "SET SESSION sql_log_bin = 0",
                &format!("DELETE FROM lab.conflict WHERE id = {id}"),
                &self.engine().start_replica(""),
            ])
            .await?;
        self.wait_for(Duration::from_secs(20), "running again", |s| {
            s.io_running == "Yes" && s.sql_running == "Yes" && s.last_sql_errno == 0
        })
        .await?;
        Ok(())
    }

    /// Stops tracking both servers so they outlive this process.
    pub fn detach(&mut self) -> (Option<u32>, Option<u32>) {
        (self.primary.detach(), self.replica.detach())
    }
}

/// A background writer on the primary; stops when dropped.
#[derive(Debug)]
pub struct Writer {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn install_datadir(engine: Engine, dir: &Path) -> Result<()> {
    // Concurrent installs sharing /tmp collide on temporary table names.
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    engine.install(&dir.join("data"), &tmp)
}
