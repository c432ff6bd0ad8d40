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

mod error;
mod mysql8;
mod observation;
mod queries;
mod rows;
mod tls;

use error::PRIVILEGE_ERRORS;
pub use error::{ErrorKind, PollError};
pub use mysql8::age;
pub use observation::{
    ApplierChannel, ApplierRead, AuroraReplica, AuroraStatus, ChannelStatus, ClusterStatus,
    Dialect, GaleraStatus, GroupRead, GroupStatus, HeartbeatRead, LoadStatus, LocalState,
    MemberState, Observation, RejectQueries, ServerStatus, ThreadError, ThreadState, TlsState,
};
use queries::ER_UNKNOWN_SYSTEM_VARIABLE;
pub use queries::HeartbeatQuery;

use std::fmt;
use std::time::{Duration, SystemTime};

use mysql_async::{OptsBuilder, Pool, PoolConstraints, PoolOpts};
use tokio::time::{Instant, timeout};

use crate::config::{MysqlConfig, Secret, TlsConfig, TlsMode};

/// What remora has learnt about the server across polls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Known {
    dialect: Option<Dialect>,
    /// `@@wsrep_*` variables exist (MariaDB builds with wsrep, which Debian's has).
    wsrep_variables: Option<bool>,
    /// The pooled connection on which `wsrep_sync_wait = 0` was set.
    sync_wait_off_on: Option<u32>,
    /// `@@aurora_version` exists.
    aurora: Option<bool>,
    /// `@@server_uuid` exists (MySQL).
    server_uuid: Option<bool>,
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
    read_applier: bool,
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
            .field("read_applier", &self.read_applier)
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
            .ip_or_hostname(config.host())
            .tcp_port(config.port())
            .socket(
                config
                    .socket
                    .as_ref()
                    .map(|path| path.display().to_string()),
            )
            .user(Some(config.user.clone()))
            .pass(password.map(|secret| secret.expose().to_owned()))
            // Check the server the way its clients reach it, over TCP, rather than
            // letting the driver switch to a unix socket it discovers.
            .prefer_socket(false)
            .tcp_nodelay(true)
            .pool_opts(pool_opts);
        Probe {
            pool: Pool::new(opts.clone().ssl_opts(tls::ssl_opts(&config.tls))),
            opts,
            tls: config.tls.clone(),
            target: format!("{}@{}", config.user, config.address()),
            host: config
                .host()
                .chars()
                .filter(char::is_ascii_graphic)
                .take(64)
                .collect(),
            connect_timeout: config.connect_timeout,
            query_timeout: config.query_timeout,
            heartbeat: None,
            read_load: false,
            read_uptime: false,
            read_applier: false,
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

    /// Also read MySQL 8's applier timestamps each poll, on a server that has them.
    pub fn with_applier(mut self, read_applier: bool) -> Probe {
        self.read_applier = read_applier;
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

    /// Connects and reads the server's status; a session that lacked a
    /// privilege is closed, so a restored grant is seen by the next poll.
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
                queries::read_heartbeat(&mut conn, query, self.query_timeout).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MysqlConfig, Secret};

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

    #[tokio::test]
    async fn debug_output_never_shows_the_password() {
        let config = MysqlConfig::default();
        let probe = Probe::new(&config, Some(&Secret::new("hunter2-debug")));
        let shown = format!("{probe:?}");
        assert!(shown.contains("remora@127.0.0.1:3306"), "{shown}");
        assert!(!shown.contains("hunter2-debug"), "{shown}");
        probe.disconnect(Duration::from_millis(100)).await;
    }
}
