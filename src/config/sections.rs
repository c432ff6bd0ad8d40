//! The smaller sections: `poll`, `agent`, `http`, `lag`, `galera`, `load`
//! and `maintenance`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::{ConfigError, MysqlConfig, Percent, duration, invalid};

/// Where lag is read from, and which replication channels count.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LagConfig {
    pub source: LagSource,
    /// `database.table` written by `pt-heartbeat --update` on the primary.
    pub heartbeat_table: String,
    /// Time zone of the `ts` column: `local` (pt-heartbeat's default) or
    /// `utc` (`pt-heartbeat --utc`).
    pub heartbeat_timezone: HeartbeatTimezone,
    /// Only rows written by this server id (pt-heartbeat's `--master-server-id`);
    /// by default the newest row, whoever wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_server_id: Option<u32>,
    /// The heartbeat writer counts as dead when its row has not advanced for
    /// this long while replication kept applying other events (or, with
    /// `primary`, when the primary's own row is this old). Keep it above
    /// pt-heartbeat's `--interval`.
    #[serde(with = "duration")]
    pub heartbeat_writer_timeout: Duration,
    /// Optional connection to the primary, to check that the heartbeat writer
    /// is alive before blaming the replica for an old heartbeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<MysqlConfig>,
    /// Subtract `SQL_Delay` (an intended `MASTER_DELAY`) from the lag of a
    /// deliberately delayed replica.
    pub subtract_sql_delay: bool,
    /// Replication channels that matter (MariaDB connection names, MySQL
    /// channel names). Empty: all of them, and the worst one decides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

impl Default for LagConfig {
    fn default() -> Self {
        LagConfig {
            source: LagSource::Auto,
            heartbeat_table: "heartbeat.heartbeat".into(),
            heartbeat_timezone: HeartbeatTimezone::Local,
            heartbeat_server_id: None,
            heartbeat_writer_timeout: Duration::from_secs(5),
            primary: None,
            subtract_sql_delay: false,
            channels: Vec::new(),
        }
    }
}

impl LagConfig {
    /// Whether the heartbeat table is read at all.
    pub fn reads_heartbeat(&self) -> bool {
        matches!(self.source, LagSource::Auto | LagSource::Heartbeat)
    }

    /// Whether MySQL 8's applier timestamps are read, where they exist.
    pub fn reads_applier(&self) -> bool {
        matches!(self.source, LagSource::Auto | LagSource::Applier)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LagSource {
    /// The heartbeat when its table is readable, else replica status.
    #[default]
    Auto,
    /// The heartbeat; an unreadable table is down.
    Heartbeat,
    /// `Seconds_Behind_Master` / `Seconds_Behind_Source` only.
    ReplicaStatus,
    /// MySQL 8.0+: the original commit time of the transactions being
    /// applied (performance_schema); unreadable tables are down.
    Applier,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeartbeatTimezone {
    #[default]
    Local,
    Utc,
}

/// How a Galera node's state maps to a verdict.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GaleraConfig {
    /// A donor (`wsrep_local_state` 2, serving a state transfer): `drain` or `down`.
    pub donor: DonorVerdict,
    /// Optional: weight 100% below this `wsrep_local_recv_queue`...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv_queue_full_below: Option<u64>,
    /// ...falling to `policy.min_weight` at this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv_queue_min_at: Option<u64>,
}

/// How a Group Replication member's applier queue weighs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupReplicationConfig {
    /// Weight 100% below this `COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE`...
    pub applier_queue_full_below: u64,
    /// ...falling to `policy.min_weight` at this one (by default the
    /// flow-control threshold, where the group starts throttling writers).
    pub applier_queue_min_at: u64,
}

impl Default for GroupReplicationConfig {
    fn default() -> Self {
        GroupReplicationConfig {
            applier_queue_full_below: 100,
            applier_queue_min_at: 25_000,
        }
    }
}

impl GroupReplicationConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_pair(
            "group_replication.applier_queue_full_below",
            Some(self.applier_queue_full_below),
            "group_replication.applier_queue_min_at",
            Some(self.applier_queue_min_at),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DonorVerdict {
    #[default]
    Drain,
    Down,
}

/// Load-aware weight: the weight is the lower of the lag weight and this one.
/// Each pair is optional, but a pair is set whole.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadConfig {
    /// `Threads_running` below this: 100%...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads_running_full_below: Option<u64>,
    /// ...falling linearly to `policy.min_weight` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads_running_min_at: Option<u64>,
    /// `Threads_connected` as a share of `max_connections`: below this 100%...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_full_below: Option<Percent>,
    /// ...falling linearly to `policy.min_weight` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_min_at: Option<Percent>,
}

/// Most polls kept: a day at one a second, some 20 MB with three pools.
pub const MAX_SAMPLES: usize = 100_000;

/// How many polls `interval` apart fill `keep`.
pub fn samples_for(keep: Duration, interval: Duration) -> usize {
    let polls = keep.as_secs_f64() / interval.as_secs_f64().max(1e-3);
    if polls >= usize::MAX as f64 {
        usize::MAX
    } else {
        polls.ceil() as usize
    }
}

/// What is kept in memory for `/history` and `/events`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// How far back `/history` reaches: one sample per poll.
    #[serde(with = "duration")]
    pub keep: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            keep: Duration::from_secs(3600),
        }
    }
}

/// An operator's switch that beats every measurement.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// While this file exists the agent answers `up drain` (or `up maint` if
    /// the file's first word is `maint`) with the rest of the file as reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Where the switch set over HTTP is kept, so that a drain survives a
    /// restart: written on every switch, read at start before the first
    /// answer. Unreadable or malformed: drain, saying why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    /// One poll per interval, however often the agent is asked.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// No successful poll for this long: the verdict is down whatever it was.
    #[serde(with = "duration")]
    pub stale_after: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            interval: Duration::from_secs(1),
            stale_after: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// With pools configured: how long to wait for the request line naming
    /// the pool (`agent-send`). No line by then: the default policy answers.
    /// Without pools the agent never waits.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Connections open at once. Beyond this a new connection closes the
    /// oldest open one (see the connections module).
    pub max_connections: usize,
    /// With pools configured: who answers an exchange that names no pool
    /// (none arrived within `request_timeout`). `strictest`: the strictest
    /// pool, so a late or lost name never routes writes to a replica.
    /// `default`: the top-level policy, for backends without `agent-send`.
    pub unnamed: Unnamed,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9258)),
            request_timeout: Duration::from_millis(100),
            max_connections: 1000,
            unnamed: Unnamed::Strictest,
        }
    }
}

/// Who answers an agent exchange that names no pool, when pools exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unnamed {
    /// The strictest configured pool: fail closed.
    #[default]
    Strictest,
    /// The top-level policy.
    Default,
}

/// Whether HTTP answers carry the text of a server's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorText {
    /// Only the errno and remora's own phrase: `Last_SQL_Error` and driver
    /// messages can quote row data.
    #[default]
    Hide,
    /// The whole text, to readers on loopback.
    Show,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// When set, `POST`/`DELETE /maintenance` need `Authorization: Bearer
    /// <token>` with the token in this file (re-read on every switch, so a
    /// rotated file applies at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// `show`: `/status` gives loopback readers the text of server errors.
    pub error_text: ErrorText,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9259)),
            admin_token_file: None,
            error_text: ErrorText::Hide,
        }
    }
}

impl HttpConfig {
    /// The maintenance switch answers loopback peers only, but a listener on
    /// another address also serves whatever forwards to it from this host
    /// (a mesh's sidecar, a container's neighbours): there it needs a token.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() && self.admin_token_file.is_none() {
            return Err(invalid(
                "http.admin_token_file",
                format!(
                    "required when http.listen ({}) is not a loopback address: \
                     the maintenance switch would be open without a token",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

/// An optional [`listen_address`].
pub(super) fn some_listen_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    listen_address(deserializer).map(Some)
}

/// An address and port to listen on. A bare port is refused with the form
/// expected: whether it should mean loopback or every interface is the
/// operator's call, not remora's.
fn listen_address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    struct Address;
    impl serde::de::Visitor<'_> for Address {
        type Value = SocketAddr;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an address and port, like 127.0.0.1:9258")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SocketAddr, E> {
            text.trim().parse().map_err(|_| {
                E::custom(format!(
                    "invalid address {text:?}; write an address and port, like 127.0.0.1:9258"
                ))
            })
        }
        fn visit_u64<E: serde::de::Error>(self, port: u64) -> Result<SocketAddr, E> {
            Err(E::custom(format!(
                "a bare port ({port}) is not an address; write it like 127.0.0.1:{port}"
            )))
        }
        fn visit_i64<E: serde::de::Error>(self, port: i64) -> Result<SocketAddr, E> {
            self.visit_u64(port.unsigned_abs())
        }
    }
    deserializer.deserialize_any(Address)
}

impl LagConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let parts: Vec<&str> = self.heartbeat_table.split('.').collect();
        let identifier = |part: &&str| {
            (1..=64).contains(&part.len())
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        };
        if parts.len() != 2 || !parts.iter().all(identifier) {
            return Err(invalid(
                "lag.heartbeat_table",
                format!(
                    "must be database.table (letters, digits, _ and $), got {:?}",
                    self.heartbeat_table
                ),
            ));
        }
        if self.heartbeat_writer_timeout.is_zero() {
            return Err(invalid(
                "lag.heartbeat_writer_timeout",
                "must be greater than 0",
            ));
        }
        if let Some(primary) = &self.primary {
            primary.validate("lag.primary")?;
        }
        if self.channels.iter().any(String::is_empty) {
            return Err(invalid(
                "lag.channels",
                "names must not be empty (the default channel of MariaDB/MySQL cannot be named here)",
            ));
        }
        Ok(())
    }

    /// The heartbeat table, quoted for SQL. Validated to be two identifiers.
    pub fn heartbeat_table_sql(&self) -> String {
        self.heartbeat_table
            .split('.')
            .map(|part| format!("`{part}`"))
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl GaleraConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_pair(
            "galera.recv_queue_full_below",
            self.recv_queue_full_below,
            "galera.recv_queue_min_at",
            self.recv_queue_min_at,
        )
    }
}

impl LoadConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_pair(
            "load.threads_running_full_below",
            self.threads_running_full_below,
            "load.threads_running_min_at",
            self.threads_running_min_at,
        )?;
        check_pair(
            "load.connections_full_below",
            self.connections_full_below.map(|p| u64::from(p.0)),
            "load.connections_min_at",
            self.connections_min_at.map(|p| u64::from(p.0)),
        )?;
        for (key, value) in [
            ("load.connections_full_below", self.connections_full_below),
            ("load.connections_min_at", self.connections_min_at),
        ] {
            if value.is_some_and(|p| !(1..=100).contains(&p.0)) {
                return Err(invalid(key, "must be between 1% and 100%"));
            }
        }
        if self.threads_running_full_below.is_none() && self.connections_full_below.is_none() {
            return Err(invalid(
                "load",
                "set threads_running_full_below/min_at, connections_full_below/min_at, or both",
            ));
        }
        Ok(())
    }
}

/// A "full below" / "minimum at" pair: both or neither, in order.
fn check_pair(
    low_key: &str,
    low: Option<u64>,
    high_key: &str,
    high: Option<u64>,
) -> Result<(), ConfigError> {
    match (low, high) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(invalid(high_key, format!("must be set with {low_key}"))),
        (None, Some(_)) => Err(invalid(low_key, format!("must be set with {high_key}"))),
        (Some(low), Some(high)) if high <= low => Err(invalid(
            high_key,
            format!("must be greater than {low_key} ({low}), got {high}"),
        )),
        _ => Ok(()),
    }
}
