//! What one poll saw, by meaning rather than by whatever the server calls
//! its columns.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::PollError;

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
    /// `@@server_id`: who the server is, with `server_uuid` on MySQL.
    pub server_id: Option<u64>,
    /// `@@server_uuid` (MySQL; MariaDB has none).
    pub server_uuid: Option<String>,
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
    /// MySQL 8 applier timestamps, when read (`lag.source` auto or applier,
    /// or a Group Replication member).
    pub applier: Option<ApplierRead>,
    /// Set when this server is a Group Replication member.
    pub group: Option<GroupRead>,
    /// Set on Aurora MySQL (`@@aurora_version` exists).
    pub aurora: Option<AuroraStatus>,
}

/// What the performance_schema replication tables say (MySQL 8.0+).
#[derive(Debug, Clone, PartialEq)]
pub enum ApplierRead {
    /// One entry per channel in `replication_connection_status`.
    Channels(Vec<ApplierChannel>),
    /// The tables could not be read: 1142 without the `SELECT` grant on
    /// performance_schema, 1146 or 1054 on a server without them.
    Unavailable { code: u16 },
}

/// One channel's receiver and workers, as ages on the server's clock.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApplierChannel {
    pub name: String,
    /// The receiver's `SERVICE_STATE` is `ON`.
    pub receiving: bool,
    /// Every transaction received is applied:
    /// `GTID_SUBSET(RECEIVED_TRANSACTION_SET, @@GLOBAL.gtid_executed)`.
    pub caught_up: Option<bool>,
    /// Since the receiver last heard from its source (a heartbeat or a
    /// queued transaction); `None` when it never has.
    pub source_silent: Option<Duration>,
    /// Now minus the original commit time of the oldest transaction a worker
    /// is applying; `None` when no worker is applying one.
    pub applying: Option<Duration>,
    /// Now minus the newest original commit time a worker has applied.
    pub last_applied: Option<Duration>,
}

/// What `performance_schema.replication_group_members` says.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupRead {
    /// This server's own row is there: it is a member.
    Member(GroupStatus),
    /// The table could not be read (1142: no `SELECT` grant).
    Unavailable { code: u16 },
}

/// A Group Replication member, in its own view of the group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupStatus {
    pub state: MemberState,
    /// `MEMBER_ROLE` is `PRIMARY` (every member, in multi-primary mode).
    pub primary: bool,
    /// Members this one sees `ONLINE` or `RECOVERING`...
    pub reachable: usize,
    /// ...of all the rows it lists.
    pub members: usize,
    /// `COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE` of its own stats row.
    pub applier_queue: Option<u64>,
}

impl GroupStatus {
    /// In a partition that holds a majority of the group: more than half
    /// of the members `ONLINE` or `RECOVERING` (MySQL Router's rule).
    pub fn has_majority(&self) -> bool {
        self.reachable * 2 > self.members
    }
}

crate::labelled! {
    /// `MEMBER_STATE`, as Group Replication writes it.
    pub enum MemberState {
        Online => "ONLINE",
        Recovering => "RECOVERING",
        Offline => "OFFLINE",
        Error => "ERROR",
        Unreachable => "UNREACHABLE",
        /// A state this version of remora does not know.
        Unknown => "unknown",
    }
}

/// Aurora MySQL's view of its cluster (`information_schema.replica_host_status`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuroraStatus {
    /// `@@aurora_server_id`: this instance.
    pub server_id: String,
    pub rows: Vec<AuroraReplica>,
    /// `None`: the rows are this instance's own copy of the table. With
    /// targets, a reader's rows may come from its cluster's writer, which is
    /// a target too: its copy does not lag behind with the reader (the name
    /// of that target).
    pub copy_of: Option<String>,
}

/// One row of `replica_host_status`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuroraReplica {
    pub server_id: String,
    /// `MASTER_SESSION_ID` on the writer's row.
    pub session_id: String,
    /// `REPLICA_LAG_IN_MILLISECONDS`, a double; `None` when NULL.
    pub lag_ms: Option<f64>,
    /// Since `LAST_UPDATE_TIMESTAMP`, on the server's clock.
    pub updated: Option<Duration>,
}

crate::labelled! {
    /// `wsrep_cluster_status`, as the server writes it; `unknown` for
    /// anything else (a value a lying server made up).
    #[derive(Default)]
    pub enum ClusterStatus {
        Primary => "Primary",
        NonPrimary => "non-Primary",
        Disconnected => "Disconnected",
        #[default]
        Unknown => "unknown",
    }
}

crate::labelled! {
    /// `@@wsrep_reject_queries`, as the server writes it.
    #[derive(Default)]
    pub enum RejectQueries {
        #[default]
        None => "NONE",
        All => "ALL",
        AllKill => "ALL_KILL",
        /// A value no server sends: as strict as `ALL`.
        Unknown => "unknown",
    }
}

crate::labelled! {
    /// `wsrep_local_state`, by its number.
    #[derive(Default)]
    pub enum LocalState {
        Joining => "joining",
        DonorDesynced => "donor/desynced",
        Joined => "joined",
        Synced => "synced",
        /// 0, or a number no server sends.
        #[default]
        Unknown => "unknown",
    }
}

impl LocalState {
    /// The state `wsrep_local_state` numbers.
    pub fn of(number: u64) -> LocalState {
        match number {
            1 => LocalState::Joining,
            2 => LocalState::DonorDesynced,
            3 => LocalState::Joined,
            4 => LocalState::Synced,
            _ => LocalState::Unknown,
        }
    }

    /// Its number, as the server counts (0 for unknown).
    pub fn number(self) -> u64 {
        match self {
            LocalState::Joining => 1,
            LocalState::DonorDesynced => 2,
            LocalState::Joined => 3,
            LocalState::Synced => 4,
            LocalState::Unknown => 0,
        }
    }
}

/// A Galera node's state (`SHOW GLOBAL STATUS LIKE 'wsrep%'` and variables).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct GaleraStatus {
    /// `wsrep_ready`
    pub ready: bool,
    /// `wsrep_cluster_status`.
    pub cluster_status: ClusterStatus,
    /// `wsrep_local_state`: `/status` shows its number (4 is synced).
    #[serde(serialize_with = "local_state_number")]
    pub local_state: LocalState,
    pub local_state_comment: String,
    /// `wsrep_local_recv_queue`: write-sets received but not yet applied.
    pub recv_queue: u64,
    /// `@@wsrep_desync`: an operator took the node out of flow control.
    pub desync: bool,
    /// `@@wsrep_reject_queries`.
    pub reject_queries: RejectQueries,
}

fn local_state_number<S: serde::Serializer>(state: &LocalState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(state.number())
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

/// One row of `SHOW ALL SLAVES STATUS` / `SHOW REPLICA STATUS`, by meaning
/// rather than by whatever the server calls its columns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelStatus {
    /// `Connection_name` (MariaDB) or `Channel_Name` (MySQL); `""` is the default channel.
    pub name: String,
    pub source_host: Option<String>,
    /// `Master_Port` / `Source_Port`.
    pub source_port: Option<u64>,
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
    /// The source's `@@server_id` (`Master_Server_Id`, `Source_Server_Id`):
    /// 0 until the IO thread has connected.
    pub source_server_id: Option<u64>,
    /// The source's `@@server_uuid` (MySQL's `Source_UUID`): empty until
    /// the IO thread has connected; MariaDB has none.
    pub source_uuid: Option<String>,
    /// MariaDB 11.6+'s `Master_Slave_time_diff`: how far, by the source's
    /// clock, the newest event applied is behind the newest received.
    pub applied_behind_received: Option<u64>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
