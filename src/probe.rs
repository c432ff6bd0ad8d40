//! The only code that talks to MySQL: one poll becomes one [`Observation`].
//!
//! A poll takes a connection from a long-lived pool (under `connect_timeout`)
//! and runs, each under `query_timeout`:
//!
//! 1. `SELECT @@version, @@read_only, @@max_connections` (on MariaDB also the
//!    `wsrep_*` switches);
//! 2. the replica-status statement of the server's dialect, every channel's
//!    row read by column name;
//! 3. only when needed: `SHOW GLOBAL STATUS` for Galera and load counters,
//!    and the newest pt-heartbeat row.
//!
//! The dialect is remembered between polls, so a steady poll is two to four
//! statements. Any failure, including a timeout, is part of the observation,
//! never an error for the caller: an unreachable database is data.

use std::fmt;
use std::io;
use std::time::{Duration, SystemTime};

use log::warn;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, SslOpts, Value};
use tokio::time::{Instant, timeout};

use crate::config::{HeartbeatTimezone, LagConfig, MysqlConfig, Secret, TlsConfig, TlsMode};

/// What one poll saw.
#[derive(Debug, Clone)]
pub struct Observation {
    /// When the poll finished (tokio's clock, so paused test time governs it).
    pub at: Instant,
    /// The same moment on the wall clock, for operators.
    pub wall: SystemTime,
    pub duration: Duration,
    pub result: Result<ServerStatus, PollError>,
    /// How the connection to the server is protected.
    pub tls: TlsState,
}

crate::labelled! {
    /// Whether remora's connection to the server is encrypted.
    #[derive(Default)]
    pub enum TlsState {
        /// `mysql.tls.mode: disabled`.
        #[default]
        Off => "off",
        /// TLS as configured.
        On => "on",
        /// `preferred`, and the server offers no TLS: plaintext, password included.
        PlaintextFallback => "plaintext fallback",
    }
}

/// A server that answered.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerStatus {
    pub version: String,
    pub dialect: Dialect,
    pub read_only: bool,
    pub max_connections: Option<u64>,
    /// One entry per replication channel; empty when the server is not a replica.
    pub channels: Vec<ChannelStatus>,
    /// Set when the server is a Galera node with `wsrep_on`.
    pub galera: Option<GaleraStatus>,
    /// Set when `load` is configured.
    pub load: Option<LoadStatus>,
    /// Set when the heartbeat is read (`lag.source` auto or heartbeat).
    pub heartbeat: Option<HeartbeatRead>,
    /// The server's `Uptime`, when a warm-up (`ramp_up`) needs it.
    pub uptime: Option<Duration>,
}

/// A Galera node's state (`SHOW GLOBAL STATUS LIKE 'wsrep%'` and variables).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct GaleraStatus {
    /// `wsrep_ready`
    pub ready: bool,
    /// `wsrep_cluster_status`: `Primary`, `non-Primary`, `Disconnected`.
    pub cluster_status: String,
    /// `wsrep_local_state`: 1 joining, 2 donor/desynced, 3 joined, 4 synced.
    pub local_state: u64,
    pub local_state_comment: String,
    /// `wsrep_local_recv_queue`: write-sets received but not yet applied.
    pub recv_queue: u64,
    /// `@@wsrep_desync`: an operator took the node out of flow control.
    pub desync: bool,
    /// `@@wsrep_reject_queries`: `NONE`, `ALL`, `ALL_KILL`.
    pub reject_queries: String,
}

/// Load counters from `SHOW GLOBAL STATUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadStatus {
    pub threads_running: u64,
    pub threads_connected: u64,
}

/// The newest pt-heartbeat row as the watched server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatRead {
    /// `ts` as written, and how long ago that was by the server's clock
    /// (negative ages, from clock skew, read as zero).
    Row { ts: String, age: Duration },
    /// The table is there but holds no (matching) row.
    Empty,
    /// The table cannot be read: missing, no privilege, ...
    Unavailable { code: u16, message: String },
}

/// How the heartbeat row is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatQuery {
    /// `SELECT ts, age FROM ...`, built from validated configuration.
    sql: String,
}

impl HeartbeatQuery {
    pub fn new(lag: &LagConfig) -> HeartbeatQuery {
        let now = match lag.heartbeat_timezone {
            HeartbeatTimezone::Utc => "UTC_TIMESTAMP(6)",
            HeartbeatTimezone::Local => "NOW(6)",
        };
        let filter = lag
            .heartbeat_server_id
            .map(|id| format!(" WHERE server_id = {id}"))
            .unwrap_or_default();
        HeartbeatQuery {
            sql: format!(
                "SELECT ts, TIMESTAMPDIFF(MICROSECOND, ts, {now}) FROM {}{filter} ORDER BY ts DESC LIMIT 1",
                lag.heartbeat_table_sql()
            ),
        }
    }
}

/// One row of `SHOW ALL SLAVES STATUS` / `SHOW REPLICA STATUS`, by meaning
/// rather than by whatever the server calls its columns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelStatus {
    /// `Connection_name` (MariaDB) or `Channel_Name` (MySQL); `""` is the default channel.
    pub name: String,
    pub source_host: Option<String>,
    pub io_thread: ThreadState,
    pub sql_thread: ThreadState,
    /// `Seconds_Behind_Master` / `Seconds_Behind_Source`; `None` is NULL.
    pub seconds_behind: Option<u64>,
    /// `SQL_Delay`: the intended delay of a delayed replica.
    pub sql_delay: Option<u64>,
    pub io_error: Option<ThreadError>,
    pub sql_error: Option<ThreadError>,
    /// Where the SQL thread is, in the source's binlog
    /// (`Relay_Master_Log_File`, `Exec_Master_Log_Pos`): moves as events apply.
    pub exec_position: Option<(String, u64)>,
}

crate::labelled! {
    /// `Slave_IO_Running` / `Replica_SQL_Running` and friends, labelled as
    /// the server writes them.
    #[derive(Default)]
    pub enum ThreadState {
        Yes => "Yes",
        No => "No",
        Connecting => "Connecting",
        /// Missing column or a value this version of remora does not know.
        #[default]
        Unknown => "unknown",
    }
}

impl ThreadState {
    fn parse(text: Option<&str>) -> ThreadState {
        match text.map(str::trim) {
            Some(t) if t.eq_ignore_ascii_case("yes") => ThreadState::Yes,
            Some(t) if t.eq_ignore_ascii_case("no") => ThreadState::No,
            Some(t) if t.eq_ignore_ascii_case("connecting") => ThreadState::Connecting,
            _ => ThreadState::Unknown,
        }
    }

    /// In an operator's words: `running`, `stopped`, `connecting`.
    pub fn describe(self) -> &'static str {
        match self {
            ThreadState::Yes => "running",
            ThreadState::No => "stopped",
            ThreadState::Connecting => "connecting",
            ThreadState::Unknown => "in an unknown state",
        }
    }
}

/// `Last_IO_Errno`/`Last_IO_Error` or `Last_SQL_Errno`/`Last_SQL_Error`.
/// The message can quote row data: it goes to `/status`, never into an agent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadError {
    pub errno: u32,
    pub message: String,
}

crate::labelled! {
    /// Which statement and column names a server speaks.
    #[derive(Default)]
    pub enum Dialect {
        /// MariaDB: `SHOW ALL SLAVES STATUS`, one row per named connection, old column names.
        #[default]
        MariaDb => "mariadb",
        /// MySQL 5.7 – 8.0.21: `SHOW SLAVE STATUS`, `Slave_*` / `*_Master` columns.
        MySqlLegacy => "mysql-legacy",
        /// MySQL 8.0.22+ (8.4 has nothing else): `SHOW REPLICA STATUS`, `Replica_*` / `*_Source` columns.
        MySql => "mysql",
    }
}

impl Dialect {
    /// Detects the dialect from `@@version`.
    pub fn detect(version: &str) -> Dialect {
        if version.to_ascii_lowercase().contains("mariadb") {
            return Dialect::MariaDb;
        }
        let mut numbers = version
            .split(|c: char| !c.is_ascii_digit())
            .map(|part| part.parse::<u32>().unwrap_or(0));
        let triple = (
            numbers.next().unwrap_or(0),
            numbers.next().unwrap_or(0),
            numbers.next().unwrap_or(0),
        );
        if triple >= (8, 0, 22) {
            Dialect::MySql
        } else {
            Dialect::MySqlLegacy
        }
    }

    pub fn replica_status_statement(self) -> &'static str {
        match self {
            Dialect::MariaDb => "SHOW ALL SLAVES STATUS",
            Dialect::MySqlLegacy => "SHOW SLAVE STATUS",
            Dialect::MySql => "SHOW REPLICA STATUS",
        }
    }
}

crate::labelled! {
    /// What kind of failure a [`PollError`] is: one per variant, listed by the
    /// type ([`ErrorKind::ALL`]) so `/metrics` exports every kind.
    pub enum ErrorKind {
        ConnectTimeout => "connect_timeout",
        QueryTimeout => "query_timeout",
        Unreachable => "unreachable",
        AuthFailed => "auth_failed",
        ServerError => "server_error",
        TlsFailed => "tls_failed",
        DriverError => "driver_error",
    }
}

/// Why a poll did not produce a [`ServerStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollError {
    /// No connection within `connect_timeout` (includes a frozen server that
    /// accepts TCP but never greets).
    ConnectTimeout(Duration),
    /// A status query did not finish within `query_timeout`.
    QueryTimeout(Duration),
    /// The network said no: refused, reset, closed.
    Unreachable(String),
    /// The server rejected our credentials (1045) or our host (1130).
    AuthFailed(u16),
    /// The server answered a statement with an error, e.g. 1227 for a missing privilege.
    Server {
        code: u16,
        message: String,
        /// A short name for the statement (`SHOW ALL SLAVES STATUS`).
        statement: &'static str,
    },
    /// TLS was configured and could not be set up: the server offers none,
    /// or its certificate was rejected.
    Tls(String),
    /// Anything else the driver reported.
    Driver(String),
}

impl PollError {
    /// A short, ASCII, row-data-free phrase for the agent line.
    pub fn phrase(&self) -> String {
        match self {
            PollError::ConnectTimeout(limit) => {
                format!("mysql connect timeout ({})", crate::config::show(*limit))
            }
            PollError::QueryTimeout(limit) => {
                format!("mysql query timeout ({})", crate::config::show(*limit))
            }
            PollError::Unreachable(why) => format!("mysql unreachable: {why}"),
            PollError::AuthFailed(code) => format!("mysql auth failed (error {code})"),
            PollError::Server {
                code, statement, ..
            } => format!("mysql error {code} on {statement}"),
            PollError::Tls(_) => "mysql tls failed".to_owned(),
            PollError::Driver(_) => "mysql driver error".to_owned(),
        }
    }

    /// Its kind, for metrics and `/status`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PollError::ConnectTimeout(_) => ErrorKind::ConnectTimeout,
            PollError::QueryTimeout(_) => ErrorKind::QueryTimeout,
            PollError::Unreachable(_) => ErrorKind::Unreachable,
            PollError::AuthFailed(_) => ErrorKind::AuthFailed,
            PollError::Server { .. } => ErrorKind::ServerError,
            PollError::Tls(_) => ErrorKind::TlsFailed,
            PollError::Driver(_) => ErrorKind::DriverError,
        }
    }

    /// `handshake`: whether the error can come from a TLS handshake (a
    /// connection attempt with TLS configured), where rustls reports a
    /// rejected certificate as invalid data.
    fn from_driver(
        err: mysql_async::Error,
        statement: Option<&'static str>,
        handshake: bool,
    ) -> PollError {
        use mysql_async::{DriverError, Error, IoError};
        match err {
            Error::Driver(DriverError::NoClientSslFlagFromServer) => {
                PollError::Tls("the server offers no TLS".to_owned())
            }
            Error::Io(IoError::Tls(err)) => PollError::Tls(err.to_string()),
            Error::Io(IoError::Io(io)) if handshake && io.kind() == io::ErrorKind::InvalidData => {
                PollError::Tls(io.to_string())
            }
            Error::Server(server) if matches!(server.code, 1045 | 1130 | 1698) => {
                PollError::AuthFailed(server.code)
            }
            Error::Server(server) => PollError::Server {
                code: server.code,
                message: server.message,
                statement: statement.unwrap_or("connect"),
            },
            Error::Io(IoError::Io(io)) => PollError::Unreachable(io_phrase(&io)),
            Error::Driver(DriverError::ConnectionClosed) => {
                PollError::Unreachable("connection closed".to_owned())
            }
            other => PollError::Driver(other.to_string()),
        }
    }
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PollError::Server { message, .. } => write!(f, "{}: {message}", self.phrase()),
            PollError::Driver(message) | PollError::Tls(message) => {
                write!(f, "{}: {message}", self.phrase())
            }
            _ => f.write_str(&self.phrase()),
        }
    }
}

fn io_phrase(err: &io::Error) -> String {
    // A failed name lookup comes as an uncategorized error with getaddrinfo's text.
    if err.to_string().contains("failed to lookup address") {
        return RESOLVE_FAILED.to_owned();
    }
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
        io::ErrorKind::UnexpectedEof => "connection closed".to_owned(),
        io::ErrorKind::BrokenPipe => "connection closed".to_owned(),
        kind => kind.to_string(),
    }
}

/// What [`io_phrase`] says of a failed name lookup; [`Probe::connect`]
/// adds the name.
const RESOLVE_FAILED: &str = "cannot resolve host";

/// Server errors for a missing privilege: access denied to a database (1044),
/// a privilege (1227), a table or column (1142, 1143), a routine (1370).
const PRIVILEGE_ERRORS: [u16; 5] = [1044, 1142, 1143, 1227, 1370];

/// What the first statement of a poll reads, by what is known of the server.
const BASICS: &str = "SELECT @@version, @@read_only, @@max_connections";
const BASICS_WSREP: &str = "SELECT @@version, @@read_only, @@max_connections, \
     @@wsrep_on, @@wsrep_desync, @@wsrep_reject_queries";
const WSREP_VARIABLES: &str = "SELECT @@wsrep_on, @@wsrep_desync, @@wsrep_reject_queries";
/// Every status counter remora may use, in one statement.
const GLOBAL_STATUS: &str = "SHOW GLOBAL STATUS WHERE Variable_name IN \
     ('wsrep_ready', 'wsrep_cluster_status', 'wsrep_local_state', \
     'wsrep_local_state_comment', 'wsrep_local_recv_queue', \
     'Threads_running', 'Threads_connected', 'Uptime')";
/// Server error: the variable does not exist (no wsrep in this build).
const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;

/// What remora has learnt about the server across polls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Known {
    dialect: Option<Dialect>,
    /// `@@wsrep_*` variables exist (MariaDB builds with wsrep, which Debian's has).
    wsrep_variables: Option<bool>,
    /// The pooled connection on which `wsrep_sync_wait = 0` was set.
    sync_wait_off_on: Option<u32>,
}

/// The driver's TLS options for `tls`, like the MySQL client's `--ssl-mode`:
/// `preferred` and `required` encrypt without checking the certificate,
/// `verify_ca` checks it was signed by `ca_file`, `verify_identity` also
/// that it names the host. `server_name`: the name to check instead of the
/// host (see [`Probe::connect`]).
fn ssl_opts(tls: &TlsConfig, server_name: Option<&str>) -> Option<SslOpts> {
    let mut checked = SslOpts::default()
        .with_root_certs(tls.ca_file.iter().map(|path| path.clone().into()).collect())
        .with_disable_built_in_roots(tls.ca_file.is_some());
    if let Some(name) = server_name {
        checked = checked.with_danger_tls_hostname_override(Some(name.to_owned()));
    }
    match tls.mode {
        TlsMode::Disabled => None,
        TlsMode::Preferred | TlsMode::Required => Some(
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        TlsMode::VerifyCa => Some(checked.with_danger_skip_domain_validation(true)),
        TlsMode::VerifyIdentity => Some(checked),
    }
}

/// The first name a certificate presented, from rustls's message for a
/// certificate that does not name the host we connected to: `certificate not
/// valid for name "127.0.0.1"; certificate is only valid for
/// DnsName("db1") or ...`.
fn presented_name(message: &str) -> Option<&str> {
    let (_, names) = message.split_once("certificate is only valid for ")?;
    if let Some(rest) = names.strip_prefix("DnsName(\"") {
        return rest.split('"').next().filter(|name| !name.is_empty());
    }
    let rest = names.strip_prefix("IpAddress(")?;
    rest.split(')')
        .next()
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
}

/// Talks to one server through one pool for the life of the process.
pub struct Probe {
    pool: Pool,
    /// Connection options without TLS, which `tls` is added to.
    opts: OptsBuilder,
    tls: TlsConfig,
    target: String,
    host: String,
    connect_timeout: Duration,
    query_timeout: Duration,
    heartbeat: Option<HeartbeatQuery>,
    read_load: bool,
    read_uptime: bool,
    known: Known,
    tls_state: TlsState,
    logins: LoginBackoff,
}

/// After the server rejects remora's password, the same password is not
/// tried again at every poll: accounts with `FAILED_LOGIN_ATTEMPTS` (MySQL
/// 8.0.19+) lock after a few consecutive failures. The wait doubles from
/// [`FIRST_RETRY`] up to [`LAST_RETRY`]; a new password (a new [`Probe`])
/// starts afresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LoginBackoff {
    /// Consecutive rejected logins, and the error the last one got.
    rejected: u32,
    last_code: u16,
    /// No login is tried before this.
    next_try: Option<Instant>,
}

/// The wait after the first rejected login.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two logins with a rejected password.
const LAST_RETRY: Duration = Duration::from_secs(60);

impl LoginBackoff {
    /// The rejection still in force at `now`, if no login may be tried yet.
    fn holding(&self, now: Instant) -> Option<PollError> {
        let next = self.next_try?;
        (now < next).then_some(PollError::AuthFailed(self.last_code))
    }

    /// Records how a poll that tried to log in at `now` ended.
    fn record(&mut self, error: Option<&PollError>, now: Instant) {
        match error {
            Some(PollError::AuthFailed(code)) => {
                let wait = FIRST_RETRY
                    .saturating_mul(1u32 << self.rejected.min(16))
                    .min(LAST_RETRY);
                self.rejected = self.rejected.saturating_add(1);
                self.last_code = *code;
                self.next_try = now.checked_add(wait);
            }
            _ => *self = LoginBackoff::default(),
        }
    }

    /// Whether the last login attempt was rejected.
    fn rejected(&self) -> bool {
        self.rejected > 0
    }
}

// The pool's own Debug would print connection options, password included.
impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("target", &self.target)
            .field("tls", &self.tls.mode)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("heartbeat", &self.heartbeat)
            .field("read_load", &self.read_load)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// Builds the pool. Lazy: nothing connects until the first poll.
    pub fn new(config: &MysqlConfig, password: Option<&Secret>) -> Probe {
        // One poll at a time needs one connection; the second slot lets a new
        // connection open while a timed-out one is still being cleaned up. min 1
        // keeps the connection open between polls instead of reconnecting each time.
        let constraints = PoolConstraints::new(1, 2).expect("1 <= 2: valid pool constraints");
        let pool_opts = PoolOpts::new()
            .with_constraints(constraints)
            // We set no session state worth resetting (wsrep_sync_wait = 0 is
            // meant to stay); a reset costs a round trip per poll.
            .with_reset_connection(false);
        let opts = OptsBuilder::default()
            .ip_or_hostname(config.host.clone())
            .tcp_port(config.port)
            .user(Some(config.user.clone()))
            .pass(password.map(|secret| secret.expose().to_owned()))
            // Check the server the way its clients reach it, over TCP, rather than
            // letting the driver switch to a unix socket it discovers.
            .prefer_socket(false)
            .tcp_nodelay(true)
            .pool_opts(pool_opts);
        Probe {
            pool: Pool::new(opts.clone().ssl_opts(ssl_opts(&config.tls, None))),
            opts,
            tls: config.tls.clone(),
            target: format!("{}@{}:{}", config.user, config.host, config.port),
            host: config
                .host
                .chars()
                .filter(char::is_ascii_graphic)
                .take(64)
                .collect(),
            connect_timeout: config.connect_timeout,
            query_timeout: config.query_timeout,
            heartbeat: None,
            read_load: false,
            read_uptime: false,
            known: Known::default(),
            tls_state: match config.tls.mode {
                TlsMode::Disabled => TlsState::Off,
                _ => TlsState::On,
            },
            logins: LoginBackoff::default(),
        }
    }

    /// Also read the newest heartbeat row each poll.
    pub fn with_heartbeat(mut self, query: Option<HeartbeatQuery>) -> Probe {
        self.heartbeat = query;
        self
    }

    /// Also read the server's `Uptime` each poll.
    pub fn with_uptime(mut self, read_uptime: bool) -> Probe {
        self.read_uptime = read_uptime;
        self
    }

    /// Also read `Threads_running` / `Threads_connected` each poll.
    pub fn with_load(mut self, read_load: bool) -> Probe {
        self.read_load = read_load;
        self
    }

    /// Whether the server rejected the password at the last login tried.
    pub fn password_rejected(&self) -> bool {
        self.logins.rejected()
    }

    /// `user@host:port`, for logs.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Polls once. Every statement is under its own deadline.
    pub async fn poll(&mut self) -> Observation {
        let started = Instant::now();
        let result = match self.logins.holding(started) {
            Some(rejected) => Err(rejected),
            None => {
                let result = self.read_status().await;
                self.logins.record(result.as_ref().err(), started);
                result
            }
        };
        Observation {
            at: Instant::now(),
            wall: SystemTime::now(),
            duration: started.elapsed(),
            result,
            tls: self.tls_state,
        }
    }

    /// A connection within `connect_timeout`.
    ///
    /// With `tls.mode: preferred`, a server that offers no TLS is used in
    /// plaintext from then on. With `verify_ca`, a certificate that does not
    /// name the host is tried again, once, checking the name it presents:
    /// the chain is still verified against `ca_file`, only the host name is
    /// not (the driver's own switch for that does not work with this rustls:
    /// blackbeam/mysql_async#404). A message in another shape fails closed.
    async fn connect(&mut self) -> Result<Conn, PollError> {
        use mysql_async::{DriverError, Error};
        let handshake = self.tls.mode != TlsMode::Disabled;
        let retry = match self.get_conn().await? {
            Ok(conn) => return Ok(conn),
            Err(Error::Driver(DriverError::NoClientSslFlagFromServer))
                if self.tls.mode == TlsMode::Preferred =>
            {
                warn!(
                    "{} offers no TLS; connecting in plaintext, password included \
                     (mysql.tls.mode: preferred)",
                    self.target
                );
                self.tls_state = TlsState::PlaintextFallback;
                self.opts.clone()
            }
            Err(err) => match PollError::from_driver(err, None, handshake) {
                PollError::Tls(message) if self.tls.mode == TlsMode::VerifyCa => {
                    let Some(name) = presented_name(&message) else {
                        return Err(PollError::Tls(message));
                    };
                    self.opts.clone().ssl_opts(ssl_opts(&self.tls, Some(name)))
                }
                error => return Err(self.name_the_host(error)),
            },
        };
        let old = std::mem::replace(&mut self.pool, Pool::new(retry));
        tokio::spawn(old.disconnect());
        self.get_conn()
            .await?
            .map_err(|err| PollError::from_driver(err, None, handshake))
    }

    /// Names the host in a failed name lookup.
    fn name_the_host(&self, error: PollError) -> PollError {
        match error {
            PollError::Unreachable(why) if why == RESOLVE_FAILED => {
                PollError::Unreachable(format!("{RESOLVE_FAILED} {}", self.host))
            }
            other => other,
        }
    }

    async fn get_conn(&self) -> Result<Result<Conn, mysql_async::Error>, PollError> {
        timeout(self.connect_timeout, self.pool.get_conn())
            .await
            .map_err(|_| PollError::ConnectTimeout(self.connect_timeout))
    }

    async fn read_status(&mut self) -> Result<ServerStatus, PollError> {
        let mut conn = self.connect().await?;
        let status = self.read_on(&mut conn).await;
        if let Err(PollError::Server { code, .. }) = &status
            && PRIVILEGE_ERRORS.contains(code)
        {
            // MariaDB and MySQL fix a session's global privileges when it
            // logs in: a grant restored later is seen only by a new session.
            if timeout(self.connect_timeout, conn.disconnect())
                .await
                .is_err()
            {
                log::debug!("closing a connection after error {code} timed out");
            }
        }
        status
    }

    async fn read_on(&mut self, conn: &mut Conn) -> Result<ServerStatus, PollError> {
        let mut status = self.read_basics(conn).await?;
        let rows = self
            .query(
                conn,
                status.dialect.replica_status_statement(),
                status.dialect.replica_status_statement(),
            )
            .await?;
        status.channels = rows.iter().map(ChannelStatus::from_row).collect();

        let galera = status.galera.is_some();
        if galera || self.read_load || self.read_uptime {
            if galera && self.known.sync_wait_off_on != Some(conn.id()) {
                // Status reads must never wait for cluster-wide causality.
                self.query(
                    conn,
                    "SET SESSION wsrep_sync_wait = 0",
                    "SET wsrep_sync_wait",
                )
                .await?;
                self.known.sync_wait_off_on = Some(conn.id());
            }
            let rows = self
                .query(conn, GLOBAL_STATUS, "SHOW GLOBAL STATUS")
                .await?;
            let counters = status_map(&rows);
            if let Some(galera) = status.galera.as_mut() {
                galera.ready = counters.get("wsrep_ready").is_some_and(|v| v == "ON");
                galera.cluster_status = counters
                    .get("wsrep_cluster_status")
                    .cloned()
                    .unwrap_or_default();
                galera.local_state = number_of(&counters, "wsrep_local_state");
                galera.local_state_comment = counters
                    .get("wsrep_local_state_comment")
                    .cloned()
                    .unwrap_or_default();
                galera.recv_queue = number_of(&counters, "wsrep_local_recv_queue");
            }
            if self.read_uptime {
                status.uptime = counters
                    .get("Uptime")
                    .and_then(|v| v.trim().parse().ok())
                    .map(Duration::from_secs);
            }
            if self.read_load {
                status.load = Some(LoadStatus {
                    threads_running: number_of(&counters, "Threads_running"),
                    threads_connected: number_of(&counters, "Threads_connected"),
                });
            }
        }

        if let Some(heartbeat) = &self.heartbeat {
            status.heartbeat = Some(read_heartbeat(conn, heartbeat, self.query_timeout).await?);
        }
        Ok(status)
    }

    /// Version, read_only, max_connections and, on MariaDB, the wsrep switches.
    async fn read_basics(&mut self, conn: &mut Conn) -> Result<ServerStatus, PollError> {
        let combined = self.known.dialect == Some(Dialect::MariaDb)
            && self.known.wsrep_variables == Some(true);
        let statement = if combined { BASICS_WSREP } else { BASICS };
        let rows = match self.query(conn, statement, "SELECT @@version").await {
            Err(PollError::Server { code, .. })
                if combined && code == ER_UNKNOWN_SYSTEM_VARIABLE =>
            {
                // The server changed under us; learn it again.
                self.known = Known::default();
                self.query(conn, BASICS, "SELECT @@version").await?
            }
            other => other?,
        };
        let first = |index| rows.first()?.as_ref(index).cloned();
        let version = first(0)
            .and_then(value_text)
            .unwrap_or_else(|| "unknown".to_owned());
        let dialect = Dialect::detect(&version);
        self.known.dialect = Some(dialect);
        let mut status = ServerStatus {
            version,
            dialect,
            read_only: first(1).and_then(value_number).unwrap_or(0) != 0,
            max_connections: first(2).and_then(value_number),
            ..ServerStatus::default()
        };
        if dialect != Dialect::MariaDb {
            return Ok(status);
        }
        // (wsrep_on, wsrep_desync, wsrep_reject_queries)
        let wsrep = if combined {
            Some((first(3), first(4), first(5)))
        } else if self.known.wsrep_variables != Some(false) {
            match self.query(conn, WSREP_VARIABLES, "SELECT @@wsrep_on").await {
                Ok(rows) => {
                    self.known.wsrep_variables = Some(true);
                    let value = |index| rows.first()?.as_ref(index).cloned();
                    Some((value(0), value(1), value(2)))
                }
                Err(PollError::Server { code, .. }) if code == ER_UNKNOWN_SYSTEM_VARIABLE => {
                    self.known.wsrep_variables = Some(false);
                    None
                }
                Err(err) => return Err(err),
            }
        } else {
            None
        };
        if let Some((on, desync, reject)) = wsrep
            && on.and_then(value_number).unwrap_or(0) != 0
        {
            status.galera = Some(GaleraStatus {
                desync: desync.and_then(value_number).unwrap_or(0) != 0,
                reject_queries: reject.and_then(value_text).unwrap_or_else(|| "NONE".into()),
                ..GaleraStatus::default()
            });
        }
        Ok(status)
    }

    async fn query(
        &self,
        conn: &mut Conn,
        statement: &str,
        label: &'static str,
    ) -> Result<Vec<Row>, PollError> {
        query_within(conn, statement, label, self.query_timeout).await
    }

    /// Reads only the newest heartbeat row (for `lag.primary`: the writer's
    /// own row on the primary). Needs [`Probe::with_heartbeat`].
    pub async fn poll_heartbeat(&mut self) -> Result<HeartbeatRead, PollError> {
        if self.heartbeat.is_none() {
            return Err(PollError::Driver(
                "no heartbeat query configured".to_owned(),
            ));
        }
        let started = Instant::now();
        if let Some(rejected) = self.logins.holding(started) {
            return Err(rejected);
        }
        let read = match self.connect().await {
            Ok(mut conn) => {
                let query = self.heartbeat.as_ref().expect("checked above");
                read_heartbeat(&mut conn, query, self.query_timeout).await
            }
            Err(err) => Err(err),
        };
        self.logins.record(read.as_ref().err(), started);
        read
    }

    /// Closes the pool's connections, waiting at most `limit`.
    pub async fn disconnect(self, limit: Duration) {
        if timeout(limit, self.pool.disconnect()).await.is_err() {
            log::warn!("closing MySQL connections took longer than {limit:?}; abandoned");
        }
    }
}

async fn query_within(
    conn: &mut Conn,
    statement: &str,
    label: &'static str,
    limit: Duration,
) -> Result<Vec<Row>, PollError> {
    // On timeout the connection is dropped mid-query; the pool discards or
    // cleans it up in the background and the next poll gets another.
    timeout(limit, conn.query::<Row, _>(statement))
        .await
        .map_err(|_| PollError::QueryTimeout(limit))?
        .map_err(|err| PollError::from_driver(err, Some(label), false))
}

/// A missing or unreadable heartbeat table is an answer, not a failed poll;
/// a timeout or a lost connection is a failed poll like any other.
async fn read_heartbeat(
    conn: &mut Conn,
    query: &HeartbeatQuery,
    limit: Duration,
) -> Result<HeartbeatRead, PollError> {
    match query_within(conn, &query.sql, "heartbeat", limit).await {
        Ok(rows) => {
            let Some(row) = rows.first() else {
                return Ok(HeartbeatRead::Empty);
            };
            let ts = row.as_ref(0).cloned().and_then(value_text);
            let micros = row.as_ref(1).cloned().and_then(value_signed);
            Ok(match (ts, micros) {
                (Some(ts), Some(micros)) => HeartbeatRead::Row {
                    ts,
                    age: Duration::from_micros(micros.max(0) as u64),
                },
                _ => HeartbeatRead::Empty,
            })
        }
        Err(PollError::Server { code, message, .. }) => {
            Ok(HeartbeatRead::Unavailable { code, message })
        }
        Err(err) => Err(err),
    }
}

/// `SHOW GLOBAL STATUS` rows as name → value.
fn status_map(rows: &[Row]) -> std::collections::HashMap<String, String> {
    rows.iter()
        .filter_map(|row| {
            let name = row.as_ref(0).cloned().and_then(value_text)?;
            let value = row.as_ref(1).cloned().and_then(value_text)?;
            Some((name, value))
        })
        .collect()
}

fn number_of(map: &std::collections::HashMap<String, String>, name: &str) -> u64 {
    map.get(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl ChannelStatus {
    /// Reads a status row by column name, accepting either generation of names.
    pub fn from_row(row: &Row) -> ChannelStatus {
        ChannelStatus::from_columns(|name| {
            let index = row
                .columns_ref()
                .iter()
                .position(|column| column.name_str().eq_ignore_ascii_case(name))?;
            row.as_ref(index).cloned()
        })
    }

    /// Builds a channel from a column lookup. A missing, NULL or unparsable
    /// column becomes `None`/`Unknown`, never a panic.
    pub fn from_columns(column: impl Fn(&str) -> Option<Value>) -> ChannelStatus {
        let text = |names: &[&str]| names.iter().find_map(|name| value_text(column(name)?));
        let number = |names: &[&str]| names.iter().find_map(|name| value_number(column(name)?));
        let error = |errno: &str, message: &str| {
            let errno = u32::try_from(number(&[errno])?).ok()?;
            (errno != 0).then(|| ThreadError {
                errno,
                message: text(&[message]).unwrap_or_default(),
            })
        };
        ChannelStatus {
            name: text(&["Connection_name", "Channel_Name"]).unwrap_or_default(),
            source_host: text(&["Master_Host", "Source_Host"]),
            io_thread: ThreadState::parse(
                text(&["Slave_IO_Running", "Replica_IO_Running"]).as_deref(),
            ),
            sql_thread: ThreadState::parse(
                text(&["Slave_SQL_Running", "Replica_SQL_Running"]).as_deref(),
            ),
            seconds_behind: number(&["Seconds_Behind_Master", "Seconds_Behind_Source"]),
            sql_delay: number(&["SQL_Delay"]),
            io_error: error("Last_IO_Errno", "Last_IO_Error"),
            sql_error: error("Last_SQL_Errno", "Last_SQL_Error"),
            exec_position: text(&["Relay_Master_Log_File", "Relay_Source_Log_File"])
                .zip(number(&["Exec_Master_Log_Pos", "Exec_Source_Log_Pos"])),
        }
    }
}

fn value_text(value: Value) -> Option<String> {
    match value {
        Value::NULL => None,
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Value::Int(n) => Some(n.to_string()),
        Value::UInt(n) => Some(n.to_string()),
        other => Some(other.as_sql(true)),
    }
}

fn value_signed(value: Value) -> Option<i64> {
    match value {
        Value::Bytes(bytes) => std::str::from_utf8(&bytes).ok()?.trim().parse().ok(),
        Value::Int(n) => Some(n),
        Value::UInt(n) => i64::try_from(n).ok(),
        _ => None,
    }
}

fn value_number(value: Value) -> Option<u64> {
    match value {
        Value::Bytes(bytes) => std::str::from_utf8(&bytes).ok()?.trim().parse().ok(),
        Value::Int(n) => u64::try_from(n).ok(),
        Value::UInt(n) => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HeartbeatTimezone, LagConfig, MysqlConfig, Secret};
    use std::collections::HashMap;

    fn row(pairs: &[(&str, Option<&str>)]) -> ChannelStatus {
        let columns: HashMap<String, Value> = pairs
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    Some(text) => Value::Bytes(text.as_bytes().to_vec()),
                    None => Value::NULL,
                };
                (name.to_string(), value)
            })
            .collect();
        ChannelStatus::from_columns(|name| columns.get(name).cloned())
    }

    #[test]
    fn a_rejected_password_is_retried_ever_more_rarely_and_a_success_forgets() {
        let start = Instant::now();
        let mut backoff = LoginBackoff::default();
        assert_eq!(backoff.holding(start), None);
        let rejected = PollError::AuthFailed(1045);
        let mut at = start;
        let mut waits = Vec::new();
        for _ in 0..10 {
            backoff.record(Some(&rejected), at);
            let next = backoff.next_try.expect("a retry is scheduled");
            assert_eq!(backoff.holding(at), Some(PollError::AuthFailed(1045)));
            assert_eq!(
                backoff.holding(next),
                None,
                "tried again once the wait is over"
            );
            waits.push(next - at);
            at = next;
        }
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        backoff.record(Some(&PollError::Unreachable("refused".into())), at);
        assert_eq!(backoff, LoginBackoff::default(), "only rejections back off");
        for _ in 0..100 {
            backoff.record(Some(&rejected), at);
        }
        assert!(backoff.rejected());
    }

    #[test]
    fn heartbeat_queries() {
        let lag = LagConfig::default();
        assert_eq!(
            HeartbeatQuery::new(&lag).sql,
            "SELECT ts, TIMESTAMPDIFF(MICROSECOND, ts, NOW(6)) FROM `heartbeat`.`heartbeat` ORDER BY ts DESC LIMIT 1"
        );
        let lag = LagConfig {
            heartbeat_timezone: HeartbeatTimezone::Utc,
            heartbeat_server_id: Some(7),
            heartbeat_table: "ops.hb".into(),
            ..LagConfig::default()
        };
        assert_eq!(
            HeartbeatQuery::new(&lag).sql,
            "SELECT ts, TIMESTAMPDIFF(MICROSECOND, ts, UTC_TIMESTAMP(6)) FROM `ops`.`hb` WHERE server_id = 7 ORDER BY ts DESC LIMIT 1"
        );
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_password() {
        let config = MysqlConfig::default();
        let probe = Probe::new(&config, Some(&Secret::new("hunter2-debug")));
        let shown = format!("{probe:?}");
        assert!(shown.contains("remora@127.0.0.1:3306"), "{shown}");
        assert!(!shown.contains("hunter2-debug"), "{shown}");
        probe.disconnect(Duration::from_millis(100)).await;
    }

    #[test]
    fn dialect_follows_version() {
        assert_eq!(
            Dialect::detect("10.11.19-MariaDB-0+deb12u1"),
            Dialect::MariaDb
        );
        assert_eq!(Dialect::detect("5.5.5-10.6.12-MariaDB"), Dialect::MariaDb);
        assert_eq!(Dialect::detect("5.7.44-log"), Dialect::MySqlLegacy);
        assert_eq!(Dialect::detect("8.0.21"), Dialect::MySqlLegacy);
        assert_eq!(Dialect::detect("8.0.22"), Dialect::MySql);
        assert_eq!(Dialect::detect("8.4.3"), Dialect::MySql);
        assert_eq!(Dialect::detect("9.1.0-commercial"), Dialect::MySql);
    }

    #[test]
    fn reads_mariadb_names() {
        let status = row(&[
            ("Connection_name", Some("")),
            ("Master_Host", Some("127.0.0.1")),
            ("Slave_IO_Running", Some("Connecting")),
            ("Slave_SQL_Running", Some("Yes")),
            ("Last_IO_Errno", Some("2003")),
            ("Last_IO_Error", Some("error connecting to master")),
            ("Last_SQL_Errno", Some("0")),
            ("Last_SQL_Error", Some("")),
            ("Seconds_Behind_Master", None),
            ("SQL_Delay", Some("0")),
        ]);
        assert_eq!(status.io_thread, ThreadState::Connecting);
        assert_eq!(status.sql_thread, ThreadState::Yes);
        assert_eq!(status.seconds_behind, None);
        assert_eq!(status.io_error.as_ref().map(|e| e.errno), Some(2003));
        assert_eq!(status.sql_error, None);
        assert_eq!(status.sql_delay, Some(0));
    }

    #[test]
    fn reads_mysql_8_names() {
        let status = row(&[
            ("Source_Host", Some("10.0.0.1")),
            ("Replica_IO_Running", Some("Yes")),
            ("Replica_SQL_Running", Some("No")),
            ("Seconds_Behind_Source", Some("17")),
            ("Last_SQL_Errno", Some("1062")),
            (
                "Last_SQL_Error",
                Some("Duplicate entry '42' for key 'PRIMARY'"),
            ),
            ("Channel_Name", Some("eu")),
        ]);
        assert_eq!(status.name, "eu");
        assert_eq!(status.io_thread, ThreadState::Yes);
        assert_eq!(status.sql_thread, ThreadState::No);
        assert_eq!(status.seconds_behind, Some(17));
        assert_eq!(status.sql_error.map(|e| e.errno), Some(1062));
    }

    #[test]
    fn missing_and_odd_columns_never_panic() {
        let status = row(&[
            ("Seconds_Behind_Master", Some("soon")),
            ("Last_SQL_Errno", None),
        ]);
        assert_eq!(status, ChannelStatus::default());
    }

    #[test]
    fn error_phrases_carry_no_message_text() {
        let err = PollError::Server {
            code: 1227,
            message: "Access denied; you need SLAVE MONITOR".into(),
            statement: "SHOW ALL SLAVES STATUS",
        };
        assert_eq!(err.phrase(), "mysql error 1227 on SHOW ALL SLAVES STATUS");
        assert!(err.to_string().contains("SLAVE MONITOR"));
        assert_eq!(
            PollError::ConnectTimeout(Duration::from_millis(1500)).phrase(),
            "mysql connect timeout (1s 500ms)"
        );
    }

    #[test]
    fn the_presented_name_is_read_from_rustls_messages() {
        let one = "invalid peer certificate: certificate not valid for name \"127.0.0.1\"; \
                   certificate is only valid for DnsName(\"localhost\")";
        assert_eq!(presented_name(one), Some("localhost"));
        let many = "certificate not valid for name \"10.0.0.9\"; certificate is only valid \
                    for IpAddress(10.0.0.1) or DnsName(\"db\")";
        assert_eq!(presented_name(many), Some("10.0.0.1"));
        for other in [
            "invalid peer certificate: UnknownIssuer",
            "certificate not valid for name \"x\"; certificate is not valid for any names",
            "certificate is only valid for DnsName(\"\")",
        ] {
            assert_eq!(presented_name(other), None, "{other}");
        }
    }
}
