//! Configuration: YAML parsed with serde, validated, secrets kept masked.
//!
//! Every struct rejects unknown keys, so a typo is an error naming the key and
//! line rather than a silently ignored setting. Durations are humantime strings
//! (`500ms`, `1s`, `5m`). [`Config::from_yaml`] parses and validates;
//! [`Config::load`] adds the file name. The MySQL password never lives in
//! [`Config`]: it is resolved on demand into a [`Secret`], whose `Debug` and
//! `Display` print `MASKED`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod duration;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub mysql: MysqlConfig,
    #[serde(default)]
    pub poll: PollConfig,
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub policy: Policy,
    /// Named pools, each `policy` with overrides; HAProxy picks one with
    /// `agent-send "<name>\n"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, PoolConfig>,
    #[serde(default)]
    pub lag: LagConfig,
    #[serde(default)]
    pub galera: GaleraConfig,
    /// Optional: scale the weight down under load too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadConfig>,
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
}

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
        self.source != LagSource::ReplicaStatus
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

/// An operator's switch that beats every measurement.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// While this file exists the agent answers `up drain` (or `up maint` if
    /// the file's first word is `maint`) with the rest of the file as reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// Where the watched server is and how long any wait on it may take.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MysqlConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Name of an environment variable holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Path of a file holding the password (one trailing newline is ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Deadline for getting a usable connection (TCP connect, greeting, auth).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Deadline for each status query.
    #[serde(with = "duration")]
    pub query_timeout: Duration,
    pub tls: TlsConfig,
}

/// TLS to the server, with the modes of the MySQL client's `--ssl-mode`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// PEM file of the CA that signed the server's certificate, for
    /// `verify_ca` and `verify_identity` (else the public web roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain TCP (a sidecar usually reaches mysqld over loopback).
    #[default]
    Disabled,
    /// TLS when the server offers it, plain TCP when it does not; the
    /// certificate is not checked.
    Preferred,
    /// TLS or no connection; the certificate is not checked.
    Required,
    /// TLS, with a certificate signed by `ca_file` (required); any host name.
    VerifyCa,
    /// TLS, with a certificate signed by `ca_file` and naming `host`.
    VerifyIdentity,
}

impl TlsMode {
    pub fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyIdentity)
    }
}

impl Default for MysqlConfig {
    fn default() -> Self {
        MysqlConfig {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "remora".into(),
            password_env: None,
            password_file: None,
            connect_timeout: Duration::from_secs(1),
            query_timeout: Duration::from_secs(1),
            tls: TlsConfig::default(),
        }
    }
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
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9258)),
            request_timeout: Duration::from_millis(100),
            max_connections: 1000,
        }
    }
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
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9259)),
            admin_token_file: None,
        }
    }
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

/// What kind of server a pool wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Any server, judged by its lag (a primary has none).
    #[default]
    Any,
    /// Only a writable primary: not a replica, `read_only` off.
    Primary,
    /// Only a replica, judged by its lag.
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Any => "any",
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// How lag maps to a verdict, and how cautiously a better verdict is believed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Which servers may be up at all.
    pub role: Role,
    /// Lag below this serves at full weight.
    #[serde(with = "duration")]
    pub full_weight_below: Duration,
    /// Weight falls linearly from 100% at `full_weight_below` to `min_weight` here.
    #[serde(with = "duration")]
    pub min_weight_at: Duration,
    pub min_weight: Percent,
    /// Lag at or above this: drain (no new connections).
    #[serde(with = "duration")]
    pub drain_at: Duration,
    /// Lag at or above this: down.
    #[serde(with = "duration")]
    pub down_at: Duration,
    /// Consecutive polls that must all qualify before a better verdict applies.
    pub recover_after: u32,
    /// Warm-up after recovery: the weight's ceiling rises from `min_weight`
    /// to 100% over this long after down, drain or maintenance ends, and
    /// while the server's uptime is shorter. `0s`: off.
    #[serde(with = "duration")]
    pub ramp_up: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            role: Role::Any,
            full_weight_below: Duration::from_secs(2),
            min_weight_at: Duration::from_secs(30),
            min_weight: Percent(10),
            drain_at: Duration::from_secs(60),
            down_at: Duration::from_secs(300),
            recover_after: 3,
            ramp_up: Duration::ZERO,
        }
    }
}

/// One pool: any `policy` key, overriding the top-level `policy`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub full_weight_below: Option<Duration>,
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_weight_at: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_weight: Option<Percent>,
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub drain_at: Option<Duration>,
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub down_at: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_after: Option<u32>,
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ramp_up: Option<Duration>,
}

impl PoolConfig {
    /// The thresholds this pool sets must be in order among themselves
    /// (inherited ones are moved to fit them; see [`PoolConfig::policy`]).
    fn validate_order(&self, section: &str) -> Result<(), ConfigError> {
        let set = [
            ("full_weight_below", self.full_weight_below),
            ("min_weight_at", self.min_weight_at),
            ("drain_at", self.drain_at),
            ("down_at", self.down_at),
        ];
        let set: Vec<(&str, Duration)> = set
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)))
            .collect();
        check_order(section, &set)
    }

    /// `base` with this pool's overrides applied.
    ///
    /// An inherited threshold that would break the order of the ones the
    /// pool sets is moved to the nearest of them: `main: {drain_at: 10s}`
    /// under the default `min_weight_at: 30s` gets `min_weight_at: 10s`.
    /// Only thresholds the pool sets itself can conflict.
    pub fn policy(&self, base: &Policy) -> Policy {
        let set = [
            self.full_weight_below,
            self.min_weight_at,
            self.drain_at,
            self.down_at,
        ];
        let inherited = [
            base.full_weight_below,
            base.min_weight_at,
            base.drain_at,
            base.down_at,
        ];
        let threshold = |i: usize| match set[i] {
            Some(value) => value,
            None => {
                let floor = set[..i].iter().flatten().max().copied();
                let ceiling = set[i + 1..].iter().flatten().min().copied();
                inherited[i]
                    .max(floor.unwrap_or(Duration::ZERO))
                    .min(ceiling.unwrap_or(Duration::MAX))
            }
        };
        Policy {
            role: self.role.unwrap_or(base.role),
            full_weight_below: threshold(0),
            min_weight_at: threshold(1),
            min_weight: self.min_weight.unwrap_or(base.min_weight),
            drain_at: threshold(2),
            down_at: threshold(3),
            recover_after: self.recover_after.unwrap_or(base.recover_after),
            ramp_up: self.ramp_up.unwrap_or(base.ramp_up),
        }
    }
}

/// Most polls a better verdict may have to wait for: the damper remembers
/// that many verdicts per pool.
pub const MAX_RECOVER_AFTER: u32 = 10_000;

/// Longest pool name; HAProxy sends it as the agent request line.
pub const MAX_POOL_NAME: usize = 64;

/// A whole percentage, written `10%` (a bare `10` is accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Percent(pub u32);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Percent;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole percentage like \"10%\"")
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Percent, E> {
                u32::try_from(n)
                    .map(Percent)
                    .map_err(|_| E::custom(format!("percentage {n} is out of range")))
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Percent, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("percentage {n} is negative")))
                    .and_then(|n| self.visit_u64(n))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Percent, E> {
                let digits = text.trim();
                let digits = digits.strip_suffix('%').unwrap_or(digits).trim();
                digits.parse().map(Percent).map_err(|_| {
                    E::custom(format!(
                        "invalid percentage {text:?}, expected a whole number like \"10%\""
                    ))
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A password. Never printed: `Debug` and `Display` show `MASKED`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The cleartext, for handing to the MySQL driver and nothing else.
    /// Whether `presented` is this secret, in time that does not depend
    /// on where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// A configuration that cannot be used. The message names the offending key
/// (and, for YAML errors, the line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError(message.into())
    }
}

fn invalid(key: &str, message: impl fmt::Display) -> ConfigError {
    ConfigError(format!("{key}: {message}"))
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let cannot = |why: String| ConfigError(format!("cannot read {}: {why}", path.display()));
        let (bytes, more) = crate::files::read_regular(path, MAX_CONFIG_BYTES)
            .map_err(|err| cannot(crate::files::phrase(&err)))?;
        if more {
            return Err(cannot(format!("larger than {MAX_CONFIG_BYTES} bytes")));
        }
        let text = String::from_utf8(bytes).map_err(|_| cannot("not UTF-8 text".into()))?;
        Config::from_yaml(&text).map_err(|err| ConfigError(format!("{}: {err}", path.display())))
    }

    /// Parses and validates a configuration from YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        // An empty document means "all defaults", not a syntax error.
        let text = if text.trim().is_empty() { "{}" } else { text };
        let config: Config = serde_yaml::from_str(text).map_err(|err| {
            // serde_yaml leaves the position out of some messages (an unknown
            // top-level key, for one); add it whenever it is known.
            let mut message = err.to_string();
            if let Some(at) = err.location() {
                if !message.contains(" at line ") {
                    message = format!("{message} at line {} column {}", at.line(), at.column());
                }
                // YAML's message for a tab ("cannot start any token") does
                // not say what the operator sees.
                if text
                    .lines()
                    .nth(at.line().saturating_sub(1))
                    .is_some_and(|line| line.contains('\t'))
                {
                    message.push_str(&format!(
                        "; line {} has a tab: YAML indents with spaces only",
                        at.line()
                    ));
                }
            }
            ConfigError(message)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone cannot: ordering of thresholds, non-zero
    /// intervals, one password source at most.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.mysql.validate("mysql")?;
        for (key, value) in [
            ("poll.interval", self.poll.interval),
            ("poll.stale_after", self.poll.stale_after),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.poll.stale_after < self.poll.interval {
            return Err(invalid(
                "poll.stale_after",
                format!(
                    "must be at least poll.interval ({}), got {}",
                    show(self.poll.interval),
                    show(self.poll.stale_after)
                ),
            ));
        }
        if self.agent.request_timeout.is_zero() {
            return Err(invalid("agent.request_timeout", "must be greater than 0"));
        }
        if self.agent.max_connections == 0 {
            return Err(invalid("agent.max_connections", "must be at least 1"));
        }
        self.lag.validate()?;
        self.galera.validate()?;
        if let Some(load) = &self.load {
            load.validate()?;
        }
        self.policy.validate("policy")?;
        for (name, pool) in &self.pools {
            if name == "default" {
                return Err(invalid(
                    "pools.default",
                    "the name default is reserved for the top-level policy",
                ));
            }
            if name.is_empty()
                || name.len() > MAX_POOL_NAME
                || !name.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(invalid(
                    &format!("pools.{name}"),
                    format!(
                        "a pool name is 1 to {MAX_POOL_NAME} printable ASCII characters without spaces"
                    ),
                ));
            }
            let section = format!("pools.{name}");
            pool.validate_order(&section)?;
            pool.policy(&self.policy).validate(&section)?;
        }
        Ok(())
    }

    /// Every policy remora answers for: the default (named `""`), then each pool.
    pub fn policies(&self) -> Vec<(String, Policy)> {
        std::iter::once((String::new(), self.policy.clone()))
            .chain(
                self.pools
                    .iter()
                    .map(|(name, pool)| (name.clone(), pool.policy(&self.policy))),
            )
            .collect()
    }
}

impl Policy {
    /// Validates thresholds; `section` prefixes key names in errors.
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let ordered = [
            ("full_weight_below", self.full_weight_below),
            ("min_weight_at", self.min_weight_at),
            ("drain_at", self.drain_at),
            ("down_at", self.down_at),
        ];
        check_order(section, &ordered)?;
        if self.down_at.is_zero() {
            return Err(invalid(
                &format!("{section}.down_at"),
                "must be greater than 0",
            ));
        }
        if !(1..=100).contains(&self.min_weight.0) {
            return Err(invalid(
                &format!("{section}.min_weight"),
                format!("must be between 1% and 100%, got {}", self.min_weight),
            ));
        }
        if self.recover_after == 0 {
            return Err(invalid(
                &format!("{section}.recover_after"),
                "must be at least 1 (1 means a better verdict applies at once)",
            ));
        }
        if self.recover_after > MAX_RECOVER_AFTER {
            return Err(invalid(
                &format!("{section}.recover_after"),
                format!(
                    "must be at most {MAX_RECOVER_AFTER} polls, got {}",
                    self.recover_after
                ),
            ));
        }
        Ok(())
    }
}

/// The passwords a configuration refers to, resolved.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// For `mysql`.
    pub mysql: Option<Secret>,
    /// For `lag.primary`.
    pub primary: Option<Secret>,
    /// `http.admin_token_file`'s token, as read at load; the HTTP switch
    /// reads the file again for every request.
    pub admin_token: Option<Secret>,
}

impl Config {
    /// Resolves every password source (environment variables, files).
    pub fn secrets(&self) -> Result<Secrets, ConfigError> {
        Ok(Secrets {
            mysql: self.mysql.password("mysql")?,
            primary: match &self.lag.primary {
                Some(primary) => primary.password("lag.primary")?,
                None => None,
            },
            admin_token: match &self.http.admin_token_file {
                Some(path) => Some(secret_file("http.admin_token_file", path)?),
                None => None,
            },
        })
    }
}

impl MysqlConfig {
    /// `section` names this block in errors (`mysql`, `lag.primary`).
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(invalid(&format!("{section}.host"), "must not be empty"));
        }
        if self.port == 0 {
            return Err(invalid(
                &format!("{section}.port"),
                "must be between 1 and 65535",
            ));
        }
        if self.user.is_empty() {
            return Err(invalid(&format!("{section}.user"), "must not be empty"));
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err(invalid(
                &format!("{section}.password_env"),
                format!("set either {section}.password_env or {section}.password_file, not both"),
            ));
        }
        if self.password_env.as_deref() == Some("") {
            return Err(invalid(
                &format!("{section}.password_env"),
                "must name an environment variable",
            ));
        }
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("query_timeout", self.query_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(
                    &format!("{section}.{key}"),
                    "must be greater than 0",
                ));
            }
        }
        if self.tls.mode == TlsMode::VerifyCa && self.tls.ca_file.is_none() {
            // The public web roots sign certificates for anyone's host name,
            // and verify_ca checks no host name: that would trust anyone.
            return Err(invalid(
                &format!("{section}.tls.ca_file"),
                "must be set for mode verify_ca (the CA that signed the server's certificate); \
                 verify_identity may use the system roots",
            ));
        }
        if let Some(ca) = &self.tls.ca_file {
            let key = format!("{section}.tls.ca_file");
            if !self.tls.mode.verifies() {
                return Err(invalid(
                    &key,
                    "is used only by mode verify_ca or verify_identity",
                ));
            }
            std::fs::File::open(ca)
                .map_err(|err| invalid(&key, format!("cannot read {}: {err}", ca.display())))?;
        }
        Ok(())
    }

    /// Resolves the password from its configured source, if any; `section`
    /// names this block in errors.
    pub fn password(&self, section: &str) -> Result<Option<Secret>, ConfigError> {
        let env_key = format!("{section}.password_env");
        let file_key = format!("{section}.password_file");
        if let Some(var) = &self.password_env {
            return match std::env::var(var) {
                Ok(value) if value.is_empty() => Err(invalid(
                    &env_key,
                    format!("environment variable {var} is empty"),
                )),
                Ok(value) => Ok(Some(Secret(value))),
                Err(std::env::VarError::NotPresent) => Err(invalid(
                    &env_key,
                    format!("environment variable {var} is not set"),
                )),
                Err(std::env::VarError::NotUnicode(_)) => Err(invalid(
                    &env_key,
                    format!("environment variable {var} is not valid UTF-8"),
                )),
            };
        }
        if let Some(path) = &self.password_file {
            return secret_file(&file_key, path).map(Some);
        }
        Ok(None)
    }
}

/// The secret in the file at `path` (`key` names it in errors): one
/// trailing newline is ignored, an empty file is an error. Warns when every
/// user may read it.
pub fn secret_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    warn_if_world_readable(key, path);
    read_secret(key, path)
}

/// The secret in the file at `path`, as [`secret_file`] reads it, without
/// the warning about its mode.
pub fn read_secret(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    let text = read_secret_file(path)
        .map_err(|why| invalid(key, format!("cannot read {}: {why}", path.display())))?;
    let value = text
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(invalid(key, format!("{} is empty", path.display())));
    }
    Ok(Secret(value.to_owned()))
}

/// Longest configuration file read.
const MAX_CONFIG_BYTES: usize = 1024 * 1024;
/// Longest password or token file read.
const MAX_SECRET_BYTES: usize = 4096;

/// A password or token file's text: a regular file of at most
/// [`MAX_SECRET_BYTES`], UTF-8. The error never holds the file's content.
pub(crate) fn read_secret_file(path: &Path) -> Result<String, String> {
    let (bytes, more) = crate::files::read_regular(path, MAX_SECRET_BYTES)
        .map_err(|err| crate::files::phrase(&err))?;
    if more {
        return Err(format!("larger than {MAX_SECRET_BYTES} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())
}

/// Warns when anyone on the machine may read the password file.
fn warn_if_world_readable(key: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o004 != 0
    {
        log::warn!(
            "{key}: {} is readable by every user (mode {:o}); chmod o-r it",
            path.display(),
            metadata.permissions().mode() & 0o777
        );
    }
}

impl LagConfig {
    fn validate(&self) -> Result<(), ConfigError> {
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
    fn validate(&self) -> Result<(), ConfigError> {
        check_pair(
            "galera.recv_queue_full_below",
            self.recv_queue_full_below,
            "galera.recv_queue_min_at",
            self.recv_queue_min_at,
        )
    }
}

impl LoadConfig {
    fn validate(&self) -> Result<(), ConfigError> {
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

/// Each threshold must be at least the one before it.
fn check_order(section: &str, thresholds: &[(&str, Duration)]) -> Result<(), ConfigError> {
    for pair in thresholds.windows(2) {
        let ((lower_key, lower), (key, value)) = (pair[0], pair[1]);
        if value < lower {
            return Err(invalid(
                &format!("{section}.{key}"),
                format!(
                    "must be at least {section}.{lower_key} ({}), got {}",
                    show(lower),
                    show(value)
                ),
            ));
        }
    }
    Ok(())
}

/// A duration as an operator writes it (`1s`, `500ms`).
pub(crate) fn show(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = "\
mysql:
  host: 127.0.0.1
  port: 3307
  user: remora
  password_env: REMORA_MYSQL_PASSWORD   # or: password_file: /run/secrets/remora
  connect_timeout: 1s
  query_timeout: 1s
poll:
  interval: 1s        # one poll per interval, whatever the check rate
  stale_after: 5s     # no successful poll for this long -> down
agent:
  listen: 127.0.0.1:9258
http:
  listen: 127.0.0.1:9259
policy:
  full_weight_below: 2s   # lag below this -> 100%
  min_weight_at: 30s      # weight falls linearly to min_weight here
  min_weight: 10%
  drain_at: 60s           # lag >= this -> drain
  down_at: 300s           # lag >= this -> down
  recover_after: 3        # consecutive better polls before weight rises or down ends
";

    #[test]
    fn the_documented_file_is_accepted_as_written() {
        let config = Config::from_yaml(ISSUE_EXAMPLE).expect("valid");
        assert_eq!(config.mysql.port, 3307);
        assert_eq!(
            config.mysql.password_env.as_deref(),
            Some("REMORA_MYSQL_PASSWORD")
        );
        assert_eq!(config.policy.min_weight, Percent(10));
        assert_eq!(config.policy.down_at, Duration::from_secs(300));
        assert_eq!(config.poll.stale_after, Duration::from_secs(5));
    }

    #[test]
    fn shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
            let path = entry.expect("readable entry").path();
            if path.extension().is_some_and(|ext| ext == "yaml")
                && path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("remora"))
            {
                Config::load(&path).unwrap_or_else(|err| panic!("{err}"));
                seen += 1;
            }
        }
        assert!(seen > 0, "no examples/remora*.yaml found");
    }

    #[test]
    fn pools_override_the_default_policy() {
        let config = Config::from_yaml(
            "pools: { main: {drain_at: 10s, down_at: 30s}, backup: {drain_at: 1h, down_at: 2h}, writer: {role: primary} }",
        )
        .expect("valid");
        let policies = config.policies();
        let names: Vec<&str> = policies.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["", "backup", "main", "writer"]);
        let main = &policies[2].1;
        assert_eq!(main.drain_at, Duration::from_secs(10));
        assert_eq!(main.down_at, Duration::from_secs(30));
        assert_eq!(main.full_weight_below, Duration::from_secs(2), "inherited");
        assert_eq!(
            main.min_weight_at,
            Duration::from_secs(10),
            "moved below drain_at"
        );
        assert_eq!(main.role, Role::Any);
        assert_eq!(policies[1].1.down_at, Duration::from_secs(7200));
        assert_eq!(policies[1].1.min_weight_at, Duration::from_secs(30));
        // Raised to the pool's own drain_at rather than contradicting it.
        let only_drain = Config::from_yaml("pools: {slow: {drain_at: 1h}}").expect("valid");
        assert_eq!(
            only_drain.policies()[1].1.down_at,
            Duration::from_secs(3600)
        );
        assert_eq!(policies[3].1.role, Role::Primary);
        assert_eq!(config.agent.request_timeout, Duration::from_millis(100));
    }

    #[test]
    fn issue_four_sections_parse() {
        let config = Config::from_yaml(
            "lag:
  source: heartbeat
  heartbeat_table: monitoring.hb
  heartbeat_timezone: utc
  heartbeat_server_id: 7
  subtract_sql_delay: true
  channels: [eu, us]
  primary: {host: 10.0.0.1, password_env: PRIMARY_PW}
galera: {donor: down, recv_queue_full_below: 10, recv_queue_min_at: 100}
load: {threads_running_full_below: 16, threads_running_min_at: 64}
maintenance: {file: /etc/remora/maintenance}
",
        )
        .expect("valid");
        assert_eq!(config.lag.source, LagSource::Heartbeat);
        assert_eq!(config.lag.heartbeat_table_sql(), "`monitoring`.`hb`");
        assert_eq!(config.lag.primary.as_ref().map(|p| p.port), Some(3306));
        assert_eq!(config.galera.donor, DonorVerdict::Down);
        assert_eq!(
            config.load.as_ref().and_then(|l| l.threads_running_min_at),
            Some(64)
        );
        let err = config.secrets().expect_err("PRIMARY_PW is not set");
        assert!(
            err.to_string().starts_with("lag.primary.password_env"),
            "{err}"
        );
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(Config::from_yaml("\n").expect("valid"), Config::default());
    }

    #[test]
    fn min_weight_accepts_bare_number() {
        let config = Config::from_yaml("policy: {min_weight: 25}").expect("valid");
        assert_eq!(config.policy.min_weight, Percent(25));
    }

    /// Each invalid file and a fragment its error must contain: the key, and
    /// the line for YAML errors.
    #[test]
    fn invalid_files_name_their_key() {
        let cases: &[(&str, &[&str])] = &[
            ("mysql:\n  prot: 3307\n", &["mysql", "prot", "line 2"]),
            ("mysql:\n  port: many\n", &["mysql.port", "line 2"]),
            ("mysql:\n  port: 0\n", &["mysql.port"]),
            ("mysql:\n  host: ''\n", &["mysql.host"]),
            ("mysql:\n  user: ''\n", &["mysql.user"]),
            (
                "mysql:\n  connect_timeout: 5 parsecs\n",
                &["mysql.connect_timeout", "line 2"],
            ),
            ("mysql:\n  query_timeout: 0s\n", &["mysql.query_timeout"]),
            (
                "mysql:\n  tls: {mode: sometimes}\n",
                &["mysql.tls.mode", "line 2", "verify_identity"],
            ),
            (
                "mysql:\n  tls: {mode: required, ca_file: /etc/hostname}\n",
                &["mysql.tls.ca_file", "verify_ca"],
            ),
            (
                "mysql:\n  tls: {mode: verify_ca, ca_file: /nonexistent/ca.pem}\n",
                &["mysql.tls.ca_file", "/nonexistent/ca.pem"],
            ),
            ("poll:\n  interval: 0s\n", &["poll.interval"]),
            (
                "poll:\n  interval: 2s\n  stale_after: 1s\n",
                &["poll.stale_after"],
            ),
            ("agent:\n  listen: nowhere\n", &["agent.listen", "line 2"]),
            ("http:\n  listen: 1.2.3.4\n", &["http.listen", "line 2"]),
            ("policy:\n  min_weight: 0%\n", &["policy.min_weight"]),
            ("policy:\n  min_weight: 101%\n", &["policy.min_weight"]),
            (
                "policy:\n  min_weight: lots\n",
                &["policy.min_weight", "line 2"],
            ),
            (
                "policy:\n  full_weight_below: 40s\n",
                &["policy.min_weight_at", "policy.full_weight_below"],
            ),
            ("policy:\n  drain_at: 10s\n", &["policy.drain_at"]),
            ("policy:\n  down_at: 30s\n", &["policy.down_at"]),
            ("policy:\n  recover_after: 0\n", &["policy.recover_after"]),
            ("policy:\n  recover_after: -1\n", &["policy.recover_after"]),
            (
                "mysql:\n  password_env: X\n  password_file: /y\n",
                &["mysql.password_env", "mysql.password_file"],
            ),
            ("mysql:\n  password_env: ''\n", &["mysql.password_env"]),
            ("surprise: 1\n", &["surprise", "line 1"]),
            ("mysql: [1, 2\n", &["line"]),
            ("mysql:\n  port: 1\n  port: 2\n", &["port", "duplicate"]),
            (
                "pools:\n  main:\n    dran_at: 5s\n",
                &["pools.main", "dran_at", "line 3"],
            ),
            (
                "pools:\n  main:\n    role: writer\n",
                &["pools.main.role", "line 3"],
            ),
            (
                "pools:\n  main: {drain_at: 1h, down_at: 10m}\n",
                &["pools.main.down_at", "pools.main.drain_at"],
            ),
            (
                "pools:\n  main: {min_weight_at: 20s, down_at: 10s}\n",
                &["pools.main.down_at", "pools.main.min_weight_at (20s)"],
            ),
            (
                "pools:\n  main: {recover_after: 0}\n",
                &["pools.main.recover_after"],
            ),
            ("pools:\n  'a pool': {}\n", &["pools.a pool", "name"]),
            ("pools:\n  default: {}\n", &["pools.default", "reserved"]),
            (
                "agent:\n  request_timeout: 0ms\n",
                &["agent.request_timeout"],
            ),
        ];
        for (yaml, fragments) in cases {
            let err = Config::from_yaml(yaml)
                .expect_err(&format!("should be rejected: {yaml}"))
                .to_string();
            for fragment in *fragments {
                assert!(
                    err.contains(fragment),
                    "error for {yaml:?} should mention {fragment:?}: {err}"
                );
            }
        }
    }

    #[test]
    fn password_from_env_and_file() {
        // Each test uses its own variable name: tests run in parallel threads.
        let var = "REMORA_TEST_PASSWORD_FROM_ENV";
        let config = MysqlConfig {
            password_env: Some(var.into()),
            ..MysqlConfig::default()
        };
        let err = config.password("mysql").expect_err("unset variable");
        assert!(err.to_string().contains("mysql.password_env"), "{err}");
        assert!(err.to_string().contains(var), "{err}");
        // SAFETY: no other thread reads or writes this variable.
        unsafe { std::env::set_var(var, "hunter2") };
        let secret = config.password("mysql").expect("set").expect("some");
        assert_eq!(secret.expose(), "hunter2");

        let dir = std::env::temp_dir().join(format!("remora-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("password");
        std::fs::write(&file, "s3cret\r\n").expect("write");
        let config = MysqlConfig {
            password_file: Some(file.clone()),
            ..MysqlConfig::default()
        };
        assert_eq!(
            config
                .password("mysql")
                .expect("ok")
                .expect("some")
                .expose(),
            "s3cret"
        );
        std::fs::remove_file(&file).expect("remove");
        let err = config.password("mysql").expect_err("missing file");
        assert!(err.to_string().contains("mysql.password_file"), "{err}");
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn secrets_are_masked() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "MASKED MASKED");
    }

    #[test]
    fn effective_config_round_trips() {
        let config = Config::from_yaml(ISSUE_EXAMPLE).expect("valid");
        let yaml = serde_yaml::to_string(&config).expect("serializable");
        assert_eq!(Config::from_yaml(&yaml).expect("reparses"), config);
    }
}
