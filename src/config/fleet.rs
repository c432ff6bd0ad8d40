//! `fleet`: how far one remora watching many servers trusts what it is
//! told. A targets file is written by something else (consul-template, a
//! ConfigMap, an inventory), so a bad one must not take the fleet down nor
//! steer the fleet's password: how many targets one remora takes, how sharp
//! a shrink of the file is applied at once, and what the file may name.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ConfigError, Section, duration, show};

/// The `fleet` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// A target set larger than this is refused, whole, and the old one
    /// kept: each target costs a poller, a connection and its history.
    pub max_targets: usize,
    /// A targets file read that would remove more than this (a count, or a
    /// share of the targets running) is held back...
    pub max_removed: Share,
    /// ...until the file has read the same for this long. A file that
    /// lists no target at all is held until a reload (SIGHUP).
    #[serde(with = "duration")]
    pub removal_hold: Duration,
    /// The hosts a targets file may point remora at (and send the fleet's
    /// password to): networks (`10.0.0.0/8`), names (`db-1.internal`) and
    /// name suffixes (`*.db.internal`). Empty: any host.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub file_hosts: Vec<HostPattern>,
    /// What a targets file may set beyond addresses and labels
    /// ([`FILE_SETS`]): sections or keys (`policy`, `mysql.user`,
    /// `maintenance.state_file`). Secrets and paths only when listed here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub file_may_set: Vec<String>,
}

/// What every targets file may set: where the server is, and the labels
/// that place it.
pub const FILE_SETS: [&str; 4] = ["mysql.host", "mysql.port", "member_of", "cluster"];

/// The largest fleet remora takes by default: about 212 KiB a target with
/// an hour of history and 0.03% of a core polled every second
/// (`docs/performance.md`), so some 220 MiB and a quarter of a core.
pub const DEFAULT_MAX_TARGETS: usize = 1000;

/// Longest `removal_hold`: a shrink held longer is one nobody confirms.
const MAX_REMOVAL_HOLD: Duration = Duration::from_secs(3600);

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            max_targets: DEFAULT_MAX_TARGETS,
            max_removed: Share::Percent(10),
            removal_hold: Duration::from_secs(10),
            file_hosts: Vec::new(),
            file_may_set: Vec::new(),
        }
    }
}

impl FleetConfig {
    pub fn validate(&self, sections: &[&str]) -> Result<(), ConfigError> {
        let section = Section("fleet");
        if self.max_targets == 0 {
            return Err(section.invalid("max_targets", "must be at least 1"));
        }
        if let Share::Percent(percent) = self.max_removed
            && percent > 100
        {
            return Err(section.invalid("max_removed", "a share is at most 100%"));
        }
        if self.removal_hold > MAX_REMOVAL_HOLD {
            return Err(section.invalid(
                "removal_hold",
                format!(
                    "at most {}, got {}",
                    show(MAX_REMOVAL_HOLD),
                    show(self.removal_hold)
                ),
            ));
        }
        for key in &self.file_may_set {
            let top = key.split('.').next().unwrap_or_default();
            if !sections.contains(&top) {
                return Err(section.invalid(
                    "file_may_set",
                    format!(
                        "{key:?} is not something a target sets (a target sets {})",
                        sections.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether a targets file may set `key` (dotted: `mysql.password_file`).
    pub fn file_may_set(&self, key: &str) -> bool {
        let within = |allowed: &str| {
            key == allowed
                || key
                    .strip_prefix(allowed)
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        FILE_SETS.iter().any(|allowed| within(allowed))
            || self.file_may_set.iter().any(|allowed| within(allowed))
    }

    /// Whether a targets file may point remora at `host`.
    pub fn file_may_name(&self, host: &str) -> bool {
        self.file_hosts.is_empty() || self.file_hosts.iter().any(|p| p.matches(host))
    }

    /// How many of `running` targets one read may remove at once.
    pub fn removable(&self, running: usize) -> usize {
        match self.max_removed {
            Share::Count(count) => count,
            Share::Percent(percent) => running * percent as usize / 100,
        }
    }
}

/// A count (`5`) or a share (`10%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    Count(usize),
    Percent(u32),
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Share::Count(count) => write!(f, "{count}"),
            Share::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

impl Serialize for Share {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Share::Count(count) => serializer.serialize_u64(*count as u64),
            Share::Percent(_) => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Share;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a count like 5 or a share like \"10%\"")
            }

            fn visit_u64<E: serde::de::Error>(self, count: u64) -> Result<Share, E> {
                usize::try_from(count)
                    .map(Share::Count)
                    .map_err(|_| E::custom(format!("count {count} is out of range")))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Share, E> {
                let wrong = || E::invalid_value(serde::de::Unexpected::Str(text), &self);
                match text.trim().strip_suffix('%') {
                    Some(percent) => percent
                        .trim()
                        .parse()
                        .map(Share::Percent)
                        .map_err(|_| wrong()),
                    None => text.trim().parse().map(Share::Count).map_err(|_| wrong()),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A host a targets file may name: a network, a name, or `*.` a suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Network { base: IpAddr, prefix: u8 },
    Name(String),
    Suffix(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let text = text.trim();
        if let Some(suffix) = text.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(format!("{text:?}: a suffix is *.domain"));
            }
            return Ok(HostPattern::Suffix(format!(
                ".{}",
                suffix.to_ascii_lowercase()
            )));
        }
        if let Some((base, prefix)) = text.split_once('/') {
            let base: IpAddr = (base.parse()).map_err(|_| format!("{text:?}: not a network"))?;
            let most = if base.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = (prefix.parse().ok())
                .filter(|prefix| *prefix <= most)
                .ok_or_else(|| format!("{text:?}: a prefix length is 0 to {most}"))?;
            return Ok(HostPattern::Network { base, prefix });
        }
        if let Ok(address) = text.parse::<IpAddr>() {
            let prefix = if address.is_ipv4() { 32 } else { 128 };
            return Ok(HostPattern::Network {
                base: address,
                prefix,
            });
        }
        if text.is_empty() || text.contains(['*', '/', ' ']) {
            return Err(format!("{text:?}: a network, a host name or *.suffix"));
        }
        Ok(HostPattern::Name(text.to_ascii_lowercase()))
    }

    /// Whether `host`, as a targets file writes it, is one of these. A
    /// name is matched as written: what it resolves to is not looked up.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match self {
            HostPattern::Network { base, prefix } => host
                .parse::<IpAddr>()
                .is_ok_and(|address| within(address, *base, *prefix)),
            HostPattern::Name(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len() && host.to_ascii_lowercase().ends_with(suffix.as_str())
            }
        }
    }
}

fn within(address: IpAddr, base: IpAddr, prefix: u8) -> bool {
    let bits = |address: IpAddr| -> (u128, u8) {
        match address {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    };
    let ((address, family), (base, base_family)) = (bits(address), bits(base));
    if family != base_family {
        return false;
    }
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    address & mask == base & mask
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Network { base, prefix } => write!(f, "{base}/{prefix}"),
            HostPattern::Name(name) => f.write_str(name),
            HostPattern::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        HostPattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn host_patterns_match_networks_names_and_suffixes() {
        let patterns = |list: &[&str]| -> Vec<HostPattern> {
            list.iter()
                .map(|p| HostPattern::parse(p).expect(p))
                .collect()
        };
        let any = |list: &[HostPattern], host: &str| list.iter().any(|p| p.matches(host));
        let allowed = patterns(&[
            "10.0.0.0/8",
            "fd00::/8",
            "db-1.internal",
            "*.db.example",
            "192.0.2.7",
        ]);
        for host in [
            "10.1.2.3",
            "fd00::1",
            "[fd00::1]",
            "DB-1.internal",
            "r1.db.example",
            "192.0.2.7",
        ] {
            assert!(any(&allowed, host), "{host}");
        }
        for host in [
            "11.0.0.1",
            "::1",
            "evil.example",
            "db.example",
            "xdb.example",
            "192.0.2.8",
            "db-1.internal.evil",
        ] {
            assert!(!any(&allowed, host), "{host}");
        }
        assert!(
            HostPattern::parse("0.0.0.0/0")
                .expect("all")
                .matches("203.0.113.9")
        );
        for bad in ["10.0.0.0/33", "*.", "a b", "x/8", "*.a*"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_fleet_section_names_its_keys_when_wrong() {
        let config = Config::from_yaml(
            "fleet: {max_targets: 50, max_removed: 5, removal_hold: 30s, file_hosts: [10.0.0.0/8], \
             file_may_set: [policy, mysql.user]}",
        )
        .expect("valid");
        assert_eq!(config.fleet.max_targets, 50);
        assert_eq!(config.fleet.max_removed, Share::Count(5));
        assert_eq!(config.fleet.removable(1000), 5);
        assert!(config.fleet.file_may_set("policy.min_weight"));
        assert!(config.fleet.file_may_set("mysql.user"));
        assert!(config.fleet.file_may_set("mysql.port"));
        assert!(!config.fleet.file_may_set("mysql.password_file"));
        assert!(!config.fleet.file_may_set("mysql.user_x"));
        assert!(config.fleet.file_may_name("10.9.9.9"));
        assert!(!config.fleet.file_may_name("evil.example"));
        assert_eq!(FleetConfig::default().removable(25), 2, "10% of 25");
        for (yaml, key) in [
            ("fleet: {max_targets: 0}", "fleet.max_targets"),
            ("fleet: {max_removed: 120%}", "fleet.max_removed"),
            ("fleet: {max_removed: some}", "fleet"),
            ("fleet: {removal_hold: 2h}", "fleet.removal_hold"),
            ("fleet: {file_hosts: ['10.0.0.0/40']}", "fleet"),
            ("fleet: {file_may_set: [agent]}", "fleet.file_may_set"),
            ("fleet: {max_target: 3}", "fleet"),
        ] {
            let err = Config::from_yaml(yaml).expect_err(yaml).to_string();
            assert!(err.starts_with(key), "{yaml}: {err}");
        }
    }
}
