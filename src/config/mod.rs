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
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod duration;
mod fleet;
mod mysql;
mod policy;
mod secrets;
mod sections;
mod targets;

pub use fleet::{DEFAULT_MAX_TARGETS, FILE_SETS, FleetConfig, HostPattern, Share};
pub use mysql::{Address, MAX_CA_BYTES, MysqlConfig, TlsConfig, TlsMode};
pub use policy::{
    MAX_POOL_NAME, MAX_RECOVER_AFTER, Percent, Policy, PoolConfig, Role, StandaloneVerdict,
    Thresholds,
};
pub use secrets::{Secret, Secrets, read_secret, secret_file};
pub use sections::{
    AgentConfig, DonorVerdict, ErrorText, GaleraConfig, GroupReplicationConfig, HeartbeatTimezone,
    HistoryConfig, HttpConfig, LagConfig, LagSource, LoadConfig, MAX_SAMPLES, MaintenanceConfig,
    PollConfig, Unnamed, samples_for,
};
pub use targets::{
    MAX_TARGET_NAME, TargetSections, check_target_name, parse_targets, read_targets_file,
};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, deserialize_with = "empty_is_default")]
    pub mysql: MysqlConfig,
    #[serde(default, deserialize_with = "empty_is_default")]
    pub poll: PollConfig,
    #[serde(default, deserialize_with = "empty_is_default")]
    pub agent: AgentConfig,
    #[serde(default, deserialize_with = "empty_is_default")]
    pub http: HttpConfig,
    #[serde(default, deserialize_with = "empty_is_default")]
    pub policy: Policy,
    /// Named pools, each `policy` with overrides; HAProxy picks one with
    /// `agent-send "<name>\n"`.
    #[serde(
        default,
        deserialize_with = "empty_is_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub pools: BTreeMap<String, PoolConfig>,
    #[serde(default, deserialize_with = "empty_is_default")]
    pub lag: LagConfig,
    #[serde(default, deserialize_with = "empty_is_default")]
    pub galera: GaleraConfig,
    #[serde(default, deserialize_with = "empty_is_default")]
    pub group_replication: GroupReplicationConfig,
    /// Optional: scale the weight down under load too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadConfig>,
    #[serde(default, deserialize_with = "empty_is_default")]
    pub maintenance: MaintenanceConfig,
    #[serde(default, deserialize_with = "empty_is_default")]
    pub history: HistoryConfig,
    /// Servers watched from here, by name (`targets.rs`): each inherits
    /// the top level's sections and overrides what it names.
    #[serde(
        default,
        deserialize_with = "empty_is_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub targets: BTreeMap<String, serde_yaml::Value>,
    /// More targets, in a file of their own, re-read when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets_file: Option<std::path::PathBuf>,
    /// How far a fleet trusts what it is told: its size, how a shrinking
    /// targets file is held back, what that file may name.
    #[serde(default, deserialize_with = "empty_is_default")]
    pub fleet: FleetConfig,
    /// The top level as written, which each target is laid over.
    #[serde(skip)]
    pub(crate) base: AsWritten,
    /// A target's `member_of`: the pools it belongs to for their depool
    /// budget, whether HAProxy has asked about it yet or not.
    #[serde(skip)]
    pub member_of: Vec<String>,
    /// A target's `cluster`: the targets named alike replicate together,
    /// whatever their replication links show.
    #[serde(skip)]
    pub cluster: Option<String>,
}

/// The configuration's text as YAML values, for targets to be laid over.
/// Not part of what a configuration means: two configurations that parse
/// alike are equal however they were written.
#[derive(Debug, Clone, Default)]
pub struct AsWritten(pub(crate) serde_yaml::Value);

impl PartialEq for AsWritten {
    fn eq(&self, _: &AsWritten) -> bool {
        true
    }
}

/// A section written with nothing under it (`maintenance:` and only
/// comments) means its defaults, as a section left out does.
fn empty_is_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
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

/// A section's name, for errors that name the key:
/// `Section("pools.main").invalid("down_at", …)` says `pools.main.down_at: …`.
#[derive(Debug, Clone, Copy)]
struct Section<'a>(&'a str);

impl Section<'_> {
    fn key(self, name: &str) -> String {
        format!("{}.{name}", self.0)
    }

    fn invalid(self, name: &str, message: impl fmt::Display) -> ConfigError {
        invalid(&self.key(name), message)
    }
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
        let mut config = config;
        config.base =
            AsWritten(serde_yaml::from_str(text).map_err(|err| ConfigError(err.to_string()))?);
        if config.has_targets()
            && let Some(name) = config.pools.iter().find_map(|(n, p)| p.listen.map(|_| n))
        {
            return Err(invalid(
                &format!("pools.{name}.listen"),
                "a pool's own agent port is for a single server; with targets, HAProxy names TARGET/POOL",
            ));
        }
        if !config.has_targets()
            && let Some(name) = config.pools.iter().find_map(|(n, p)| p.keep_up.map(|_| n))
        {
            return Err(invalid(
                &format!("pools.{name}.keep_up"),
                "a pool-wide depool budget needs targets: one remora that sees the whole pool",
            ));
        }
        if !config.targets.is_empty() {
            config.target_configs(&Default::default())?;
        }
        config.within_max_targets(config.targets.len(), "targets")?;
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
        let samples = samples_for(self.history.keep, self.poll.interval);
        if samples > MAX_SAMPLES {
            return Err(invalid(
                "history.keep",
                format!(
                    "at most {} polls (history.keep / poll.interval), got {samples}",
                    MAX_SAMPLES
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
        self.group_replication.validate()?;
        if let Some(load) = &self.load {
            load.validate()?;
        }
        self.policy.validate("policy")?;
        self.http.validate()?;
        self.fleet.validate(&targets::TARGET_KEYS)?;
        self.validate_pools()
    }

    /// Pool names and each pool's policy; agent ports used once.
    fn validate_pools(&self) -> Result<(), ConfigError> {
        let mut ports = vec![("agent.listen".to_owned(), self.agent.listen)];
        for (name, pool) in &self.pools {
            if let Some(reserved) = RESERVED_POOL_NAMES.iter().find(|r| **r == name) {
                return Err(invalid(
                    &format!("pools.{name}"),
                    format!(
                        "the name {reserved} is reserved ({}): choose another",
                        match *reserved {
                            "default" => "the top-level policy",
                            _ => "the label of checks that named no pool",
                        }
                    ),
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
            if let Some(listen) = pool.listen {
                let key = format!("{section}.listen");
                if let Some((other, _)) =
                    (ports.iter()).find(|(_, used)| *used == listen && listen.port() != 0)
                {
                    return Err(invalid(&key, format!("{listen} is already {other}")));
                }
                ports.push((key, listen));
            }
        }
        Ok(())
    }

    /// The pools with an agent port of their own, and the port.
    pub fn pool_listeners(&self) -> BTreeMap<String, std::net::SocketAddr> {
        (self.pools.iter())
            .filter_map(|(name, pool)| Some((name.clone(), pool.listen?)))
            .collect()
    }

    /// Every policy remora answers for: the default, then each pool.
    pub fn policies(&self) -> Vec<(PoolName, Policy)> {
        std::iter::once((PoolName::Default, self.policy.clone()))
            .chain(
                self.pools
                    .iter()
                    .map(|(name, pool)| (PoolName::Named(name.clone()), pool.policy(&self.policy))),
            )
            .collect()
    }
}

/// Which policy: the top-level one, or a pool by its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PoolName {
    /// The top-level `policy`: what a check naming no pool may get.
    Default,
    Named(String),
}

impl PoolName {
    /// The name in metrics, logs, `/events` and `/history`: `default` for
    /// the top-level policy (a name no pool may take).
    pub fn label(&self) -> &str {
        match self {
            PoolName::Default => RESERVED_POOL_NAMES[0],
            PoolName::Named(name) => name,
        }
    }

    /// Whether this is the pool a request named `name`.
    pub fn is(&self, name: &str) -> bool {
        matches!(self, PoolName::Named(own) if own == name)
    }
}

/// Names no pool may have: `default` is the top-level policy's label and
/// `unknown` the label of checks that named no pool, in metrics and
/// history; a pool so named would share their series.
pub const RESERVED_POOL_NAMES: [&str; 2] = ["default", "unknown"];

/// Longest configuration file read.
const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// A duration as an operator writes it (`1s`, `500ms`).
pub(crate) fn show(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENTED_FILE: &str = "\
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
        let config = Config::from_yaml(DOCUMENTED_FILE).expect("valid");
        assert_eq!(config.mysql.port(), 3307);
        assert_eq!(
            config.mysql.password_env.as_deref(),
            Some("REMORA_MYSQL_PASSWORD")
        );
        assert_eq!(config.policy.min_weight, Percent(10));
        assert_eq!(config.policy.thresholds.down_at, Duration::from_secs(300));
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
        let names: Vec<&str> = policies.iter().map(|(name, _)| name.label()).collect();
        assert_eq!(names, ["default", "backup", "main", "writer"]);
        assert_eq!(policies[0].0, PoolName::Default);
        let main = &policies[2].1;
        assert_eq!(main.thresholds.drain_at, Duration::from_secs(10));
        assert_eq!(main.thresholds.down_at, Duration::from_secs(30));
        assert_eq!(
            main.thresholds.full_weight_below,
            Duration::from_secs(2),
            "inherited"
        );
        assert_eq!(
            main.thresholds.min_weight_at,
            Duration::from_secs(10),
            "moved below drain_at"
        );
        assert_eq!(main.role, Role::Any);
        assert_eq!(policies[1].1.thresholds.down_at, Duration::from_secs(7200));
        assert_eq!(
            policies[1].1.thresholds.min_weight_at,
            Duration::from_secs(30)
        );
        // Raised to the pool's own drain_at rather than contradicting it.
        let only_drain = Config::from_yaml("pools: {slow: {drain_at: 1h}}").expect("valid");
        assert_eq!(
            only_drain.policies()[1].1.thresholds.down_at,
            Duration::from_secs(3600)
        );
        assert_eq!(policies[3].1.role, Role::Primary);
        assert_eq!(config.agent.request_timeout, Duration::from_millis(100));
    }

    #[test]
    fn lag_galera_load_and_maintenance_sections_parse() {
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
        assert_eq!(config.lag.primary.as_ref().map(|p| p.port()), Some(3306));
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
    fn a_section_with_only_comments_means_its_defaults() {
        let config = Config::from_yaml(
            "maintenance:\n  # file: /etc/remora/maintenance\npolicy:\nhistory:\n",
        )
        .expect("valid");
        assert_eq!(config, Config::default());
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
            (
                "mysql:\n  socket: /run/mysqld/mysqld.sock\n  host: db\n",
                &["mysql.socket", "mysql.host", "not both"],
            ),
            (
                "mysql:\n  socket: /run/mysqld/mysqld.sock\n  port: 3306\n",
                &["mysql.socket", "mysql.port", "not both"],
            ),
            (
                "mysql:\n  socket: mysqld.sock\n",
                &["mysql.socket", "absolute"],
            ),
            (
                "mysql:\n  socket: /run/mysqld/mysqld.sock\n  tls: {mode: required}\n",
                &["mysql.tls.mode", "socket"],
            ),
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
            ("pools:\n  unknown: {}\n", &["pools.unknown", "reserved"]),
            (
                "pools:\n  a: {listen: '127.0.0.1:9258'}\n",
                &["pools.a.listen", "agent.listen"],
            ),
            (
                "http:\n  listen: 0.0.0.0:9259\n",
                &["http.admin_token_file", "0.0.0.0:9259", "without a token"],
            ),
            ("agent:\n  unnamed: anyone\n", &["agent.unnamed"]),
            ("http:\n  error_text: all\n", &["http.error_text"]),
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
        // SAFETY: no other thread reads or writes this variable. (A test: the
        // crate's own unsafe code lives in `os` alone.)
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(var, "hunter2")
        };
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
        let config = Config::from_yaml(DOCUMENTED_FILE).expect("valid");
        let yaml = serde_yaml::to_string(&config).expect("serializable");
        assert_eq!(Config::from_yaml(&yaml).expect("reparses"), config);
    }
}
