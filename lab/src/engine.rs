//! Which server a lab server runs, and what differs between them: how it
//! is started and initialized, its accounts, and the replication
//! statements each speaks.
//!
//! Facts this relies on:
//! - Debian 12's MariaDB (10.11) runs from the host; as root, `mariadbd`
//!   needs `--user=root`; `mariadb-install-db` creates `root@127.0.0.1` with
//!   an empty password; remora needs exactly `SLAVE MONITOR`
//!   (`REPLICATION CLIENT` is not enough for `SHOW ALL SLAVES STATUS` on
//!   10.5+, ERROR 1227); `CHANGE MASTER TO MASTER_DELAY` needs both
//!   replication threads stopped.
//! - sid's MariaDB (11.x, the current LTS) and MySQL (9.x) run in the sid
//!   root ([`crate::sid`]); paths they are given are paths inside it.
//! - MySQL (`../shared/reference/real-servers.md`): `--initialize-insecure`
//!   leaves `root@localhost` without a password, reached over the socket;
//!   without `--secure-file-priv=` the server stops; the default account
//!   plugin is `caching_sha2_password`, so a replica without TLS asks for
//!   the source's public key (`GET_SOURCE_PUBLIC_KEY=1`); remora needs
//!   `REPLICATION CLIENT` and `SELECT ON performance_schema.*`;
//!   `SOURCE_DELAY` needs the SQL thread stopped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::accounts::{
    HEARTBEAT_DATABASE, REMORA_PASSWORD, REMORA_USER, REPL_PASSWORD, REPL_USER, ROOT_PASSWORD,
};
use crate::sid::Root;

/// The server a lab server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    /// Debian 12's MariaDB (10.11), from the host.
    MariaDb,
    /// sid's MariaDB (11.x, the current LTS), from the sid root.
    MariaDbLts,
    /// sid's MySQL (9.x, with Group Replication), from the sid root.
    MySql,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::MariaDb, Engine::MariaDbLts, Engine::MySql];
    /// The MariaDB releases: what replication, heartbeat, multi-source and
    /// read-only tests run against.
    pub const MARIADB: [Engine; 2] = [Engine::MariaDb, Engine::MariaDbLts];

    /// As `make up SERVER=…` names it.
    pub fn label(self) -> &'static str {
        match self {
            Engine::MariaDb => "mariadb",
            Engine::MariaDbLts => "mariadb-lts",
            Engine::MySql => "mysql",
        }
    }

    pub fn from_label(label: &str) -> Result<Engine> {
        Engine::ALL
            .into_iter()
            .find(|engine| engine.label() == label)
            .with_context(|| {
                let known: Vec<&str> = Engine::ALL.iter().map(|e| e.label()).collect();
                format!("no server {label:?}: one of {}", known.join(", "))
            })
    }

    pub fn is_mysql(self) -> bool {
        self == Engine::MySql
    }

    /// The sid root, for the engines that run from it.
    pub fn root(self) -> Result<Option<&'static Root>> {
        match self {
            Engine::MariaDb => Ok(None),
            Engine::MariaDbLts | Engine::MySql => Root::find().map(Some),
        }
    }

    /// Where a lab keeps this engine's data: under the sid root for the
    /// engines that run from it.
    pub fn scratch(self) -> Result<tempfile::TempDir> {
        match self.root()? {
            Some(root) => root.tempdir("remora-lab-"),
            None => tempfile::Builder::new()
                .prefix("remora-lab-")
                .tempdir()
                .context("creating a temporary directory"),
        }
    }

    /// `host` as the server sees it.
    pub fn path(self, host: &Path) -> Result<PathBuf> {
        match self.root()? {
            Some(root) => root.inside(host),
            None => Ok(host.to_owned()),
        }
    }

    /// The server program, with the options every lab server of this
    /// engine takes (paths still to come).
    pub fn server(self) -> Result<Command> {
        Ok(match self {
            Engine::MariaDb => {
                let mut command = Command::new("mariadbd");
                command.args(MARIADB_ARGS);
                command
            }
            Engine::MariaDbLts => {
                // `--no-defaults` first: it is refused anywhere else.
                let mut command = Root::find()?.command("/opt/mariadb/usr/sbin/mariadbd");
                command
                    .args(MARIADB_ARGS)
                    .arg("--basedir=/opt/mariadb/usr")
                    .arg("--lc-messages-dir=/opt/mariadb/usr/share/mariadb");
                command
            }
            Engine::MySql => {
                let mut command = Root::find()?.command("mysqld");
                command.args(MYSQL_ARGS);
                command
            }
        })
    }

    /// Initializes a data directory at `data` (a host path), with `tmp`
    /// for its temporary files.
    pub fn install(self, data: &Path, tmp: &Path) -> Result<()> {
        let (data, tmp) = (self.path(data)?, self.path(tmp)?);
        let mut command = match self {
            Engine::MariaDb => Command::new("mariadb-install-db"),
            Engine::MariaDbLts => Root::find()?.command("/opt/mariadb/usr/bin/mariadb-install-db"),
            Engine::MySql => Root::find()?.command("mysqld"),
        };
        // `--no-defaults` first: it is refused anywhere else.
        command
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()));
        match self {
            Engine::MariaDb => {
                command
                    .arg("--auth-root-authentication-method=normal")
                    .arg("--skip-test-db");
            }
            // The root resolves no host name: `--skip-name-resolve`, and
            // `--force` past the check that asks for one.
            Engine::MariaDbLts => {
                command
                    .arg("--basedir=/opt/mariadb/usr")
                    .arg("--force")
                    .arg("--auth-root-authentication-method=normal")
                    .arg("--skip-test-db")
                    .arg("--skip-name-resolve");
            }
            Engine::MySql => {
                command
                    .arg("--initialize-insecure")
                    .arg("--secure-file-priv=");
            }
        }
        let output = command
            .output()
            .with_context(|| format!("initializing {self:?} (is it installed? `make deps`)"))?;
        if !output.status.success() {
            bail!(
                "initializing {self:?} failed: {}\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// How a fresh server is first reached as root: over TCP on MariaDB
    /// (`root@127.0.0.1`), over the socket on MySQL (`root@localhost`).
    pub fn first_over_socket(self) -> bool {
        self.is_mysql()
    }

    /// The lab's accounts, kept out of the binary log (each server has its
    /// own): root with a password, the replication account, and remora's
    /// with exactly the grants the README gives.
    pub fn accounts(self) -> Vec<String> {
        let mut statements = vec!["SET SESSION sql_log_bin = 0".to_owned()];
        match self {
            Engine::MariaDb | Engine::MariaDbLts => statements.extend([
                format!("ALTER USER root@'127.0.0.1' IDENTIFIED BY '{ROOT_PASSWORD}'"),
                format!("ALTER USER root@'localhost' IDENTIFIED BY '{ROOT_PASSWORD}'"),
            ]),
            Engine::MySql => statements.push(format!(
                "ALTER USER root@'localhost' IDENTIFIED BY '{ROOT_PASSWORD}'"
            )),
        }
        statements.extend([
            format!("CREATE USER root@'%' IDENTIFIED BY '{ROOT_PASSWORD}'"),
            "GRANT ALL PRIVILEGES ON *.* TO root@'%' WITH GRANT OPTION".to_owned(),
            format!("CREATE USER {REPL_USER}@'%' IDENTIFIED BY '{REPL_PASSWORD}'"),
            format!("GRANT REPLICATION SLAVE ON *.* TO {REPL_USER}@'%'"),
            format!("CREATE USER {REMORA_USER}@'%' IDENTIFIED BY '{REMORA_PASSWORD}'"),
        ]);
        statements.extend(
            self.remora_grants()
                .iter()
                .map(|grant| format!("GRANT {grant} TO {REMORA_USER}@'%'")),
        );
        statements
    }

    /// What remora is granted (the README's grants), `PRIVILEGE ON OBJECT`.
    pub fn remora_grants(self) -> Vec<String> {
        let heartbeat = format!("SELECT ON {HEARTBEAT_DATABASE}.*");
        match self {
            Engine::MariaDb | Engine::MariaDbLts => vec!["SLAVE MONITOR ON *.*".into(), heartbeat],
            Engine::MySql => vec![
                "REPLICATION CLIENT ON *.*".into(),
                "SELECT ON performance_schema.*".into(),
                heartbeat,
            ],
        }
    }

    /// Points a fresh replica at the source on `port`, GTID-positioned.
    pub fn follow(self, port: u16) -> String {
        self.follow_on("", port)
    }

    /// [`Engine::follow`] on connection (channel) `channel`.
    pub fn follow_on(self, channel: &str, port: u16) -> String {
        match self {
            Engine::MariaDb | Engine::MariaDbLts => format!(
                "CHANGE MASTER '{channel}' TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, \
                 MASTER_USER='{REPL_USER}', MASTER_PASSWORD='{REPL_PASSWORD}', \
                 MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos"
            ),
            Engine::MySql => format!(
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT={port}, \
                 SOURCE_USER='{REPL_USER}', SOURCE_PASSWORD='{REPL_PASSWORD}', \
                 SOURCE_CONNECT_RETRY=1, SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1 \
                 FOR CHANNEL '{channel}'"
            ),
        }
    }

    /// Before [`Engine::follow`]: a MariaDB replica starts at the source's
    /// position; MySQL's auto-position needs nothing.
    pub fn start_at(self, position: &str) -> Option<String> {
        match self {
            Engine::MariaDb | Engine::MariaDbLts => {
                Some(format!("SET GLOBAL gtid_slave_pos = '{position}'"))
            }
            Engine::MySql => None,
        }
    }

    /// The source's position, as [`Engine::start_at`] and
    /// [`Engine::wait_for`] take it.
    pub fn position(self) -> &'static str {
        match self {
            Engine::MariaDb | Engine::MariaDbLts => "SELECT @@gtid_binlog_pos",
            Engine::MySql => "SELECT @@GLOBAL.gtid_executed",
        }
    }

    /// Waits up to `seconds` until a replica has applied `position`: 0 once
    /// applied (MariaDB's `MASTER_GTID_WAIT`, MySQL's
    /// `WAIT_FOR_EXECUTED_GTID_SET`), else -1 or 1.
    pub fn wait_for(self, position: &str, seconds: f64) -> String {
        match self {
            Engine::MariaDb | Engine::MariaDbLts => {
                format!("SELECT MASTER_GTID_WAIT('{position}', {seconds})")
            }
            Engine::MySql => format!("SELECT WAIT_FOR_EXECUTED_GTID_SET('{position}', {seconds})"),
        }
    }

    /// Makes a replica a primary: replication stopped and forgotten, and
    /// writable (on MySQL, `super_read_only` too).
    pub fn promote(self) -> [&'static str; 3] {
        match self {
            Engine::MariaDb | Engine::MariaDbLts => [
                "STOP SLAVE",
                "RESET SLAVE ALL",
                "SET GLOBAL read_only = OFF",
            ],
            Engine::MySql => [
                "STOP REPLICA",
                "RESET REPLICA ALL",
                "SET GLOBAL super_read_only = OFF, GLOBAL read_only = OFF",
            ],
        }
    }

    /// `read_only` on or off (on MySQL, `super_read_only` with it).
    pub fn read_only(self, on: bool) -> &'static str {
        match (self, on) {
            (Engine::MariaDb | Engine::MariaDbLts, true) => "SET GLOBAL read_only = ON",
            (Engine::MariaDb | Engine::MariaDbLts, false) => "SET GLOBAL read_only = OFF",
            (Engine::MySql, true) => "SET GLOBAL super_read_only = ON",
            (Engine::MySql, false) => "SET GLOBAL super_read_only = OFF, GLOBAL read_only = OFF",
        }
    }

    pub fn start_replica(self, channel: &str) -> String {
        self.on_channel(["START SLAVE", "START REPLICA"], channel)
    }

    pub fn stop_replica(self, channel: &str) -> String {
        self.on_channel(["STOP SLAVE", "STOP REPLICA"], channel)
    }

    pub fn stop_sql_thread(self) -> &'static str {
        match self {
            Engine::MariaDb | Engine::MariaDbLts => "STOP SLAVE SQL_THREAD",
            Engine::MySql => "STOP REPLICA SQL_THREAD",
        }
    }

    /// The statements that set the intended delay: MariaDB needs both
    /// threads stopped, MySQL the SQL thread.
    pub fn delay(self, seconds: u64) -> [String; 3] {
        self.delay_on("", seconds)
    }

    /// [`Engine::delay`] on connection (channel) `channel`.
    pub fn delay_on(self, channel: &str, seconds: u64) -> [String; 3] {
        match self {
            Engine::MariaDb | Engine::MariaDbLts => [
                self.stop_replica(channel),
                format!("CHANGE MASTER '{channel}' TO MASTER_DELAY = {seconds}"),
                self.start_replica(channel),
            ],
            Engine::MySql => [
                format!("STOP REPLICA SQL_THREAD FOR CHANNEL '{channel}'"),
                format!(
                    "CHANGE REPLICATION SOURCE TO SOURCE_DELAY = {seconds} FOR CHANNEL '{channel}'"
                ),
                format!("START REPLICA SQL_THREAD FOR CHANNEL '{channel}'"),
            ],
        }
    }

    /// `SHOW … STATUS` of one connection (`""`: the default one).
    pub fn replica_status(self, channel: &str) -> String {
        match self {
            Engine::MariaDb | Engine::MariaDbLts => format!("SHOW SLAVE '{channel}' STATUS"),
            Engine::MySql if channel.is_empty() => "SHOW REPLICA STATUS".into(),
            Engine::MySql => format!("SHOW REPLICA STATUS FOR CHANNEL '{channel}'"),
        }
    }

    /// A column of [`Engine::replica_status`] by its MariaDB name
    /// (`Slave_IO_Running`, `Seconds_Behind_Master`), as this engine
    /// names it.
    pub fn column(self, mariadb_name: &str) -> String {
        match self {
            Engine::MariaDb | Engine::MariaDbLts => mariadb_name.to_owned(),
            Engine::MySql => mariadb_name
                .replace("Slave", "Replica")
                .replace("Master", "Source"),
        }
    }

    fn on_channel(self, [mariadb, mysql]: [&str; 2], channel: &str) -> String {
        match (self, channel) {
            (Engine::MariaDb | Engine::MariaDbLts, "") => mariadb.to_owned(),
            (Engine::MariaDb | Engine::MariaDbLts, channel) => {
                let (verb, noun) = mariadb.split_once(' ').unwrap_or((mariadb, ""));
                format!("{verb} {noun} '{channel}'")
            }
            (Engine::MySql, "") => mysql.to_owned(),
            (Engine::MySql, channel) => format!("{mysql} FOR CHANNEL '{channel}'"),
        }
    }
}

/// Small and fast: a lab server holds a few rows.
const MARIADB_ARGS: &[&str] = &[
    "--no-defaults",
    "--user=root",
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--log-bin=mariadb-bin",
    // A replica's binary log holds what it applied, so that a replica
    // promoted in a failover serves the others from where they are.
    "--log-slave-updates=ON",
    "--relay-log=relay-bin",
    "--binlog-format=ROW",
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
    "--performance-schema=OFF",
    "--max-connections=500",
];

/// MySQL with GTIDs (auto-position) and performance_schema (the applier
/// tables remora reads); the X plugin off, as the lab has no use for it.
const MYSQL_ARGS: &[&str] = &[
    "--no-defaults",
    "--user=root",
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--mysqlx=OFF",
    "--secure-file-priv=",
    "--log-bin=binlog",
    "--relay-log=relay-bin",
    "--gtid-mode=ON",
    "--enforce-gtid-consistency=ON",
    "--innodb-buffer-pool-size=32M",
    "--innodb-redo-log-capacity=16M",
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
    "--max-connections=500",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_engine_speaks_its_own_replication_statements() {
        assert_eq!(Engine::MariaDb.start_replica("east"), "START SLAVE 'east'");
        assert_eq!(Engine::MariaDbLts.stop_replica(""), "STOP SLAVE");
        assert_eq!(
            Engine::MySql.start_replica("east"),
            "START REPLICA FOR CHANNEL 'east'"
        );
        assert_eq!(
            Engine::MySql.column("Slave_SQL_Running"),
            "Replica_SQL_Running"
        );
        assert_eq!(
            Engine::MySql.column("Seconds_Behind_Master"),
            "Seconds_Behind_Source"
        );
        assert_eq!(
            Engine::MariaDbLts.column("Seconds_Behind_Master"),
            "Seconds_Behind_Master"
        );
        for engine in Engine::ALL {
            assert_eq!(Engine::from_label(engine.label()).expect("known"), engine);
        }
        assert!(Engine::from_label("oracle").is_err());
    }
}
