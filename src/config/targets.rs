//! `targets` and `targets_file`: one remora watching many servers. Each
//! target is the top-level configuration with the target's own sections
//! laid over it (maps merge key by key, anything else replaces), so it
//! inherits `mysql`, `poll`, `lag`, `policy`, `pools`, `load`, `galera` and
//! `group_replication`, and overrides what it names.
//!
//! `targets_file` holds the same map in a file of its own, which
//! consul-template, a Kubernetes ConfigMap or any inventory can write, or
//! Prometheus's file_sd list (`[{targets: [host:port, …], labels: {…}}]`),
//! the file an operator already writes for mysqld_exporter's `/probe`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::{Config, ConfigError, invalid};

/// The sections a target may set for itself; everything else (listeners,
/// HTTP, history) is remora's, not a server's.
pub const TARGET_KEYS: [&str; 11] = [
    "mysql",
    "poll",
    "lag",
    "policy",
    "pools",
    "load",
    "galera",
    "group_replication",
    "maintenance",
    "member_of",
    "cluster",
];

/// Longest target name: it travels in every agent request (`TARGET/POOL`).
pub const MAX_TARGET_NAME: usize = 128;

/// Longest targets file read.
pub const MAX_TARGETS_FILE_BYTES: usize = 4 * 1024 * 1024;

/// Each target's own sections, by name, as written (a mapping each).
pub type TargetSections = BTreeMap<String, Value>;

impl Config {
    /// Whether this remora watches targets rather than one server.
    pub fn has_targets(&self) -> bool {
        !self.targets.is_empty() || self.targets_file.is_some()
    }

    /// Every target's whole configuration: the inline `targets` and, when
    /// given, `from_file` (a `targets_file`'s map, held to what a targets
    /// file may set and name: `fleet.file_may_set`, `fleet.file_hosts`). A
    /// name in both is an error.
    pub fn target_configs(
        &self,
        from_file: &TargetSections,
    ) -> Result<BTreeMap<String, Config>, ConfigError> {
        let mut all = BTreeMap::new();
        let inline = self.targets.iter().map(|entry| (entry, false));
        for ((name, sections), in_file) in inline.chain(from_file.iter().map(|e| (e, true))) {
            if all.contains_key(name) {
                return Err(invalid(
                    &format!("targets.{name}"),
                    "named both in targets and in targets_file",
                ));
            }
            let sections = match sections {
                Value::Mapping(map) => map.clone(),
                Value::Null => Mapping::new(),
                _ => return Err(invalid(&format!("targets.{name}"), "must be a mapping")),
            };
            if in_file {
                self.trust_file_entry(name, &sections)?;
            }
            all.insert(name.clone(), self.target_config(name, &sections)?);
        }
        each_switch_its_own(&all)?;
        Ok(all)
    }

    /// Refuses a target set of `count` (from `source`) over `fleet.max_targets`.
    pub fn within_max_targets(&self, count: usize, source: &str) -> Result<(), ConfigError> {
        if count > self.fleet.max_targets {
            return Err(ConfigError::new(format!(
                "{source}: {count} targets, more than fleet.max_targets ({}) allows",
                self.fleet.max_targets
            )));
        }
        Ok(())
    }

    /// A targets file is trusted with addresses and labels: anything else
    /// (a password file, a state file, TLS paths) only where
    /// `fleet.file_may_set` says so, and hosts only within
    /// `fleet.file_hosts`.
    fn trust_file_entry(&self, name: &str, sections: &Mapping) -> Result<(), ConfigError> {
        let key = format!("targets.{name}");
        for leaf in leaf_keys(sections) {
            if !self.fleet.file_may_set(&leaf) {
                return Err(invalid(
                    &format!("{key}.{leaf}"),
                    format!(
                        "a targets file may not set this (it sets {}; fleet.file_may_set allows more)",
                        super::FILE_SETS.join(", ")
                    ),
                ));
            }
        }
        let host = (sections.get("mysql"))
            .and_then(|mysql| mysql.get("host"))
            .and_then(Value::as_str);
        if let Some(host) = host
            && !self.fleet.file_may_name(host)
        {
            let allowed: Vec<String> = self
                .fleet
                .file_hosts
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(invalid(
                &format!("{key}.mysql.host"),
                format!("{host}: not in fleet.file_hosts ({})", allowed.join(", ")),
            ));
        }
        Ok(())
    }

    /// One target's configuration: its sections over the top level's.
    fn target_config(&self, name: &str, sections: &Mapping) -> Result<Config, ConfigError> {
        let key = format!("targets.{name}");
        check_target_name(name).map_err(|why| invalid(&key, why))?;
        if !names_its_server(sections) {
            return Err(invalid(
                &key,
                "names no server: a target sets mysql.host or mysql.socket (a file cut short?)",
            ));
        }
        if let Some(pool) = own_keep_up(sections) {
            return Err(invalid(
                &format!("{key}.pools.{pool}.keep_up"),
                format!(
                    "keep_up is a budget across targets: set it once, at the top level (pools.{pool}.keep_up)"
                ),
            ));
        }
        let mut merged = match &self.base.0 {
            Value::Mapping(_) => self.base.0.clone(),
            _ => Value::Mapping(Mapping::new()),
        };
        if let Value::Mapping(map) = &mut merged {
            for remora_own in ["targets", "targets_file", "member_of", "fleet"] {
                map.remove(remora_own);
            }
        }
        for (section, value) in sections {
            let section = section.as_str().unwrap_or("?");
            if !TARGET_KEYS.contains(&section) {
                return Err(invalid(
                    &format!("{key}.{section}"),
                    format!(
                        "not a per-target setting (a target may set {})",
                        TARGET_KEYS.join(", ")
                    ),
                ));
            }
            if section == "member_of" || section == "cluster" {
                continue;
            }
            merge(&mut merged, section, value.clone());
        }
        let mut config: Config =
            serde_yaml::from_value(merged).map_err(|err| invalid(&key, err))?;
        config.base = Default::default();
        config.member_of =
            member_of(sections).map_err(|why| invalid(&format!("{key}.member_of"), why))?;
        config.cluster =
            cluster(sections).map_err(|why| invalid(&format!("{key}.cluster"), why))?;
        config.validate().map_err(|err| invalid(&key, err))?;
        if let Some(name) = config.pools.iter().find_map(|(n, p)| p.listen.map(|_| n)) {
            return Err(invalid(
                &format!("{key}.pools.{name}.listen"),
                "a pool's own agent port is for a single server; with targets, HAProxy names TARGET/POOL",
            ));
        }
        // One switch per target, side by side: a path the top level gives
        // every target becomes PATH.NAME; a target's own is used as written.
        let own = |file: &str| {
            sections
                .get("maintenance")
                .and_then(|m| m.get(file))
                .is_some()
        };
        let maintenance = &mut config.maintenance;
        for (path, file) in [
            (&mut maintenance.file, "file"),
            (&mut maintenance.state_file, "state_file"),
        ] {
            if let Some(inherited) = path.as_mut().filter(|_| !own(file)) {
                let mut named = inherited.clone().into_os_string();
                named.push(format!(".{name}"));
                *inherited = named.into();
            }
        }
        Ok(config)
    }
}

/// No two targets share a maintenance file or a state file: one `touch`
/// (or one HTTP switch) is one target's.
fn each_switch_its_own(all: &BTreeMap<String, Config>) -> Result<(), ConfigError> {
    let mut seen: BTreeMap<&std::path::Path, (&str, &str)> = BTreeMap::new();
    for (name, config) in all {
        let files = [
            ("maintenance.file", &config.maintenance.file),
            ("maintenance.state_file", &config.maintenance.state_file),
        ];
        for (key, path) in files {
            let Some(path) = path.as_deref() else {
                continue;
            };
            if let Some((other, other_key)) = seen.insert(path, (name, key)) {
                return Err(invalid(
                    &format!("targets.{name}.{key}"),
                    format!("{} is also targets.{other}.{other_key}", path.display()),
                ));
            }
        }
    }
    Ok(())
}

/// Whether a target's own sections say which server it watches.
fn names_its_server(sections: &Mapping) -> bool {
    let mysql = sections.get("mysql");
    ["host", "socket"].iter().any(|key| {
        mysql
            .and_then(|m| m.get(*key))
            .is_some_and(|v| !v.is_null())
    })
}

/// The pool whose `keep_up` a target sets for itself, if any.
fn own_keep_up(sections: &Mapping) -> Option<String> {
    let pools = sections.get("pools")?.as_mapping()?;
    pools.iter().find_map(|(name, pool)| {
        pool.get("keep_up")
            .is_some()
            .then(|| name.as_str().unwrap_or("?").to_owned())
    })
}

/// Every leaf key a mapping sets, dotted (`mysql.host`, `policy.min_weight`).
fn leaf_keys(sections: &Mapping) -> Vec<String> {
    let mut leaves = Vec::new();
    for (key, value) in sections {
        let key = key.as_str().unwrap_or("?");
        match value {
            Value::Mapping(inner) if !inner.is_empty() => {
                leaves.extend(
                    leaf_keys(inner)
                        .into_iter()
                        .map(|leaf| format!("{key}.{leaf}")),
                );
            }
            _ => leaves.push(key.to_owned()),
        }
    }
    leaves
}

/// The pools a target's `member_of` lists.
fn member_of(sections: &Mapping) -> Result<Vec<String>, String> {
    match sections.get("member_of") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(pools)) => (pools.iter())
            .map(|pool| {
                pool.as_str()
                    .map(str::to_owned)
                    .ok_or("a pool name is a string".to_owned())
            })
            .collect(),
        Some(_) => Err("a list of pool names".into()),
    }
}

/// A target's `cluster`: a name like a target's.
fn cluster(sections: &Mapping) -> Result<Option<String>, String> {
    match sections.get("cluster") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) => {
            check_target_name(name).map_err(|_| {
                format!("a cluster name is 1 to {MAX_TARGET_NAME} letters, digits and . - _ : [ ]")
            })?;
            Ok(Some(name.clone()))
        }
        Some(_) => Err("a cluster name (a string)".into()),
    }
}

/// `value` laid over `base[section]`: mappings merge key by key, anything
/// else replaces.
fn merge(base: &mut Value, section: &str, value: Value) {
    let Value::Mapping(base) = base else {
        return;
    };
    match (base.get_mut(section), value) {
        (Some(Value::Mapping(old)), Value::Mapping(new)) => {
            for (key, value) in new {
                let key_text = key.as_str().unwrap_or_default().to_owned();
                let mut wrapped = Value::Mapping(std::mem::take(old));
                merge(&mut wrapped, &key_text, value);
                if let Value::Mapping(back) = wrapped {
                    *old = back;
                }
            }
        }
        (_, value) => {
            base.insert(Value::from(section), value);
        }
    }
}

/// A target name goes into agent requests (`TARGET/POOL`), URLs and
/// metric labels: 1 to [`MAX_TARGET_NAME`] of letters, digits and `.-_:[]`.
pub fn check_target_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_:[]".contains(c);
    if name.is_empty() || name.len() > MAX_TARGET_NAME || !name.chars().all(allowed) {
        return Err(format!(
            "a target name is 1 to {MAX_TARGET_NAME} letters, digits and . - _ : [ ] (it is sent as TARGET/POOL)"
        ));
    }
    Ok(())
}

/// Reads `targets_file`: remora's own map of targets, or Prometheus's
/// file_sd list. Errors name the file and what is wrong.
pub fn read_targets_file(path: &Path) -> Result<TargetSections, ConfigError> {
    let cannot = |why: String| ConfigError::new(format!("targets_file {}: {why}", path.display()));
    let (bytes, more) = crate::files::read_regular(path, MAX_TARGETS_FILE_BYTES)
        .map_err(|err| cannot(crate::files::phrase(&err)))?;
    if more {
        return Err(cannot(format!(
            "larger than {MAX_TARGETS_FILE_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| cannot("not UTF-8 text".into()))?;
    parse_targets(&text).map_err(cannot)
}

/// A targets file's text: a map (`name: {mysql: …}`), a file_sd list, or
/// nothing at all (no targets).
pub fn parse_targets(text: &str) -> Result<TargetSections, String> {
    if text.trim().is_empty() {
        return Ok(TargetSections::new());
    }
    let value: Value = serde_yaml::from_str(text).map_err(|err| err.to_string())?;
    match value {
        Value::Null => Ok(TargetSections::new()),
        Value::Mapping(map) => map
            .into_iter()
            .map(|(name, sections)| {
                let name = name
                    .as_str()
                    .ok_or("a target name must be a string")?
                    .to_owned();
                if !matches!(sections, Value::Mapping(_) | Value::Null) {
                    return Err(format!("{name}: must be a mapping"));
                }
                Ok((name, sections))
            })
            .collect(),
        Value::Sequence(groups) => file_sd(groups),
        _ => Err("must be a map of targets or a file_sd list".into()),
    }
}

/// Prometheus file_sd groups: each `host:port` a target, named by the
/// group's `name` label (one target per group then) or by its address,
/// in the cluster its `cluster` label names.
fn file_sd(groups: Vec<Value>) -> Result<TargetSections, String> {
    let mut all = TargetSections::new();
    for (i, group) in groups.into_iter().enumerate() {
        let at = format!("file_sd group {i}");
        let addresses = (group.get("targets").and_then(Value::as_sequence))
            .ok_or_else(|| format!("{at}: needs a list of targets"))?;
        let label = |key: &str| {
            (group.get("labels"))
                .and_then(|labels| labels.get(key))
                .and_then(Value::as_str)
        };
        let (name, cluster) = (label("name"), label("cluster"));
        if name.is_some() && addresses.len() != 1 {
            return Err(format!(
                "{at}: a name label names one target, and this group lists {}",
                addresses.len()
            ));
        }
        for address in addresses {
            let address =
                (address.as_str()).ok_or_else(|| format!("{at}: a target is host:port"))?;
            let (host, port) = split_address(address)
                .ok_or_else(|| format!("{at}: {address:?} is not host:port"))?;
            let mut mysql = Mapping::new();
            mysql.insert("host".into(), host.into());
            mysql.insert("port".into(), port.into());
            let mut sections = Mapping::new();
            sections.insert("mysql".into(), Value::Mapping(mysql));
            if let Some(cluster) = cluster {
                sections.insert("cluster".into(), cluster.into());
            }
            let name = name.unwrap_or(address).to_owned();
            if all.insert(name.clone(), Value::Mapping(sections)).is_some() {
                return Err(format!("{at}: target {name} listed twice"));
            }
        }
    }
    Ok(all)
}

/// `host:port`, `[v6]:port`; a bare host is port 3306.
fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
            (host, port.parse().ok()?)
        }
        None if !address.is_empty() => (address, 3306),
        _ => return None,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const FLEET: &str = "\
mysql: {user: remora, password_env: REMORA_MYSQL_PASSWORD, connect_timeout: 2s}
poll: {interval: 500ms}
pools:
  main: {drain_at: 10s, down_at: 30s}
targets:
  replica-1: {mysql: {host: 10.0.0.11}}
  replica-2: {mysql: {host: 10.0.0.12, port: 3307}, policy: {min_weight: 20%}}
  slow: {mysql: {host: 10.0.0.13}, poll: {interval: 2s}, pools: {main: {drain_at: 20s}}}
";

    #[test]
    fn each_target_inherits_the_top_level_and_overrides_what_it_names() {
        let config = Config::from_yaml(FLEET).expect("valid");
        assert!(config.has_targets());
        let targets = config
            .target_configs(&TargetSections::new())
            .expect("valid");
        let names: Vec<&str> = targets.keys().map(String::as_str).collect();
        assert_eq!(names, ["replica-1", "replica-2", "slow"]);
        let one = &targets["replica-1"];
        assert_eq!(one.mysql.host.as_deref(), Some("10.0.0.11"));
        assert_eq!(one.mysql.user, "remora");
        assert_eq!(one.mysql.connect_timeout, Duration::from_secs(2));
        assert_eq!(one.poll.interval, Duration::from_millis(500));
        assert!(one.targets.is_empty(), "a target watches one server");
        let two = &targets["replica-2"];
        assert_eq!(two.mysql.port(), 3307);
        assert_eq!(two.policy.min_weight.0, 20);
        assert_eq!(two.policies()[1].1.min_weight.0, 20, "pools inherit it");
        let slow = &targets["slow"];
        assert_eq!(slow.poll.interval, Duration::from_secs(2));
        let main = &slow.policies()[1].1;
        assert_eq!(main.thresholds.drain_at, Duration::from_secs(20));
        assert_eq!(main.thresholds.down_at, Duration::from_secs(30), "merged");
    }

    #[test]
    fn bad_targets_name_the_key() {
        let cases = [
            (
                "targets: {r1: {mysql: {host: a}, agent: {listen: 127.0.0.1:1}}}",
                "targets.r1.agent: not a per-target",
            ),
            (
                "targets: {r1: {mysql: {host: a, hots: x}}}",
                "targets.r1: unknown field `hots`",
            ),
            (
                "targets: {r1: {mysql: {host: a}, policy: {drain_at: 1s, down_at: 1s}}}",
                "targets.r1: policy.",
            ),
            ("targets: {'a/b': {}}", "targets.a/b: a target name is"),
            (
                "targets: {r1: {mysql: {host: a}, pools: {p: {listen: 127.0.0.1:0}}}}",
                "targets.r1.pools.p.listen:",
            ),
            ("targets: {r1: 3}", "targets.r1: must be a mapping"),
            (
                "targets: {r1: {mysql: {port: 3307}}}",
                "targets.r1: names no server",
            ),
            (
                "pools: {main: {keep_up: 1}}\ntargets: {r1: {mysql: {host: a}, pools: {main: {keep_up: 2}}}}",
                "targets.r1.pools.main.keep_up: keep_up is a budget across targets",
            ),
            (
                "targets: {r1: {mysql: {host: a}, maintenance: {file: /m}}, r2: {mysql: {host: b}, maintenance: {file: /m}}}",
                "targets.r2.maintenance.file: /m is also targets.r1.maintenance.file",
            ),
            (
                "fleet: {max_targets: 1}\ntargets: {r1: {mysql: {host: a}}, r2: {mysql: {host: b}}}",
                "targets: 2 targets, more than fleet.max_targets (1) allows",
            ),
        ];
        for (yaml, wanted) in cases {
            let err = Config::from_yaml(yaml).expect_err(yaml);
            assert!(err.to_string().starts_with(wanted), "{yaml}: {err}");
        }
        let twice = Config::from_yaml("targets: {r1: {mysql: {host: a}}}").expect("valid");
        let file = parse_targets("r1: {mysql: {host: a}}").expect("valid");
        let err = twice.target_configs(&file).expect_err("named twice");
        assert!(err.to_string().contains("both"), "{err}");
    }

    #[test]
    fn a_targets_file_is_a_map_or_a_file_sd_list() {
        let map = parse_targets("r1: {mysql: {host: 10.0.0.1}}\nr2:\n").expect("a map");
        assert_eq!(map.len(), 2);
        let sd = parse_targets(
            r#"[{"targets": ["10.0.0.1:3306", "db2:3307", "db3"], "labels": {"env": "prod"}},
                {"targets": ["[::1]:3308"], "labels": {"name": "aurora-r1"}}]"#,
        )
        .expect("file_sd JSON");
        let names: Vec<&str> = sd.keys().map(String::as_str).collect();
        assert_eq!(names, ["10.0.0.1:3306", "aurora-r1", "db2:3307", "db3"]);
        let config = Config::from_yaml("mysql: {user: remora}").expect("valid");
        let targets = config.target_configs(&sd).expect("valid");
        assert_eq!(targets["db2:3307"].mysql.port(), 3307);
        assert_eq!(targets["db3"].mysql.port(), 3306);
        assert_eq!(targets["aurora-r1"].mysql.host.as_deref(), Some("::1"));
        assert_eq!(targets["aurora-r1"].mysql.user, "remora");
        assert!(parse_targets("").expect("empty").is_empty());
        for (bad, wanted) in [
            ("[{labels: {}}]", "needs a list of targets"),
            (
                "[{targets: [a:1, b:2], labels: {name: x}}]",
                "names one target",
            ),
            ("[{targets: ['a:notaport']}]", "not host:port"),
            ("just text", "a map of targets or a file_sd list"),
            ("[{targets: [a:1]}, {targets: [a:1]}]", "listed twice"),
        ] {
            let err = parse_targets(bad).expect_err(bad);
            assert!(err.contains(wanted), "{bad}: {err}");
        }
    }

    #[test]
    fn member_of_lists_pools() {
        let config = Config::from_yaml(
            "pools: {main: {keep_up: 1}}\ntargets: {r1: {mysql: {host: a}, member_of: [main]}, r2: {mysql: {host: b}}}",
        )
        .expect("valid");
        let targets = config
            .target_configs(&TargetSections::new())
            .expect("valid");
        assert_eq!(targets["r1"].member_of, ["main"]);
        assert!(targets["r2"].member_of.is_empty());
        let err = Config::from_yaml("targets: {r1: {mysql: {host: a}, member_of: main}}")
            .expect_err("not a list");
        assert!(
            err.to_string().starts_with("targets.r1.member_of: a list"),
            "{err}"
        );
        let err = Config::from_yaml("pools: {main: {keep_up: 1}}").expect_err("no targets");
        assert!(err.to_string().starts_with("pools.main.keep_up:"), "{err}");
    }

    #[test]
    fn a_cluster_is_named_in_the_configuration_or_by_a_file_sd_label() {
        let config = Config::from_yaml(
            "targets: {db-1: {mysql: {host: a}, cluster: shop}, db-2: {mysql: {host: b}}}",
        )
        .expect("valid");
        let targets = config
            .target_configs(&TargetSections::new())
            .expect("valid");
        assert_eq!(targets["db-1"].cluster.as_deref(), Some("shop"));
        assert_eq!(targets["db-2"].cluster, None);
        let sd =
            parse_targets("[{targets: ['10.0.0.1:3306'], labels: {name: db-3, cluster: shop}}]")
                .expect("file_sd");
        let targets = config
            .target_configs(&sd)
            .expect("a file may name a cluster");
        assert_eq!(targets["db-3"].cluster.as_deref(), Some("shop"));
        for (bad, wanted) in [
            (
                "cluster: [shop]",
                "targets.db-1.cluster: a cluster name (a string)",
            ),
            (
                "cluster: 'a shop'",
                "targets.db-1.cluster: a cluster name is 1 to",
            ),
        ] {
            let yaml = format!("targets: {{db-1: {{mysql: {{host: a}}, {bad}}}}}");
            let err = Config::from_yaml(&yaml).expect_err(bad);
            assert!(err.to_string().starts_with(wanted), "{bad}: {err}");
        }
    }

    #[test]
    fn each_target_has_its_own_switch_files() {
        let config = Config::from_yaml(
            "maintenance: {file: /etc/remora/maint, state_file: /var/lib/remora/switch}\n\
             targets: {r1: {mysql: {host: a}}, r1.new: {mysql: {host: b}}, \
             own: {mysql: {host: c}, maintenance: {file: /run/own-maint}}}",
        )
        .expect("valid");
        let targets = config
            .target_configs(&TargetSections::new())
            .expect("valid");
        let files = |name: &str| {
            let maintenance = &targets[name].maintenance;
            (maintenance.file.clone(), maintenance.state_file.clone())
        };
        let path = |text: &str| Some(std::path::PathBuf::from(text));
        assert_eq!(
            files("r1"),
            (
                path("/etc/remora/maint.r1"),
                path("/var/lib/remora/switch.r1")
            ),
            "one touch drains one target, not the fleet"
        );
        assert_eq!(
            files("own"),
            (path("/run/own-maint"), path("/var/lib/remora/switch.own")),
            "a target's own path is used as written"
        );
        // r1's switch is written whole beside its state file, then renamed
        // over it: never where r1.new keeps its own.
        let dir = tempfile::tempdir().expect("tempdir");
        let in_dir = |name: &str| dir.path().join(format!("switch.{name}"));
        use crate::maintenance::{Maintenance, Source};
        let drain = |reason: &str| Maintenance::parse(&format!("drain {reason}"), Source::Http);
        Maintenance::keep(&in_dir("r1.new"), Some(&drain("r1.new's"))).expect("kept");
        Maintenance::keep(&in_dir("r1"), Some(&drain("r1's"))).expect("kept");
        let kept =
            std::fs::read_to_string(in_dir("r1.new")).expect("r1.new's state file is still there");
        assert_eq!(kept.trim(), "drain r1.new's");
    }

    #[test]
    fn a_targets_file_is_trusted_with_addresses_and_labels_only() {
        let config = Config::from_yaml(
            "mysql: {user: remora, password_file: /etc/remora/password}\n\
             fleet: {file_hosts: [10.0.0.0/8, '*.db.internal'], file_may_set: [policy]}\n\
             targets_file: /etc/remora/targets.yaml",
        )
        .expect("valid");
        let fine = parse_targets(
            "r1: {mysql: {host: 10.0.0.1, port: 3307}, member_of: [main], policy: {min_weight: 20%}}\n\
             r2: {mysql: {host: r2.db.internal}}",
        )
        .expect("a map");
        let targets = config
            .target_configs(&fine)
            .expect("within what the file may set");
        assert_eq!(
            targets["r1"].mysql.password_file.as_deref(),
            Some(Path::new("/etc/remora/password")),
            "the secret comes from the configuration"
        );
        for (text, wanted) in [
            (
                "r1: {mysql: {host: 10.0.0.1, password_file: /etc/shadow}}",
                "targets.r1.mysql.password_file: a targets file may not set this",
            ),
            (
                "r1: {mysql: {host: 10.0.0.1}, maintenance: {state_file: /etc/passwd}}",
                "targets.r1.maintenance.state_file: a targets file may not set this",
            ),
            (
                "r1: {mysql: {socket: /run/evil.sock}}",
                "targets.r1.mysql.socket:",
            ),
            (
                "[{targets: ['evil.example:3306']}]",
                "targets.evil.example:3306.mysql.host: evil.example: not in fleet.file_hosts",
            ),
            (
                "r1: {mysql: {host: 10.0.0.1}}\nr2:",
                "targets.r2: names no server",
            ),
        ] {
            let file = parse_targets(text).expect(text);
            let err = config.target_configs(&file).expect_err(text).to_string();
            assert!(err.starts_with(wanted), "{text}: {err}");
        }
        // Inline targets are the configuration's own: trusted whole.
        let inline = Config::from_yaml(
            "fleet: {file_hosts: [10.0.0.0/8]}\n\
             targets: {r1: {mysql: {host: elsewhere, password_file: /etc/remora/r1}}}",
        );
        assert!(inline.is_ok(), "{inline:?}");
    }
}
