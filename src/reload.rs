//! What a reload changes, worked out before anything is touched: pure, so
//! every combination is table-tested. The poller rebuilds what the plan
//! says and keeps everything else (damper history, counters, connections);
//! [`crate::run`] opens the listeners whose addresses changed.

use std::net::SocketAddr;

use crate::config::{Config, Secrets};

/// One reload's consequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReloadPlan {
    /// Another server, or other credentials for it: a new connection, and
    /// what was learnt about the old server is forgotten.
    pub target: bool,
    /// Other status queries (lag source, load, uptime for a warm-up): a new
    /// connection that reads them.
    pub reads: bool,
    /// `lag.primary` or its credentials: a new primary connection.
    pub primary: bool,
    /// Other lag rules: remembered lag is no evidence under them.
    pub lag_rules: bool,
    /// Another `maintenance.file` to watch.
    pub maintenance_file: bool,
    /// Another `history.keep` or `poll.interval`: the history's size.
    pub history: bool,
    /// `agent.listen`'s new address, when it moved.
    pub agent_listen: Option<SocketAddr>,
    /// `http.listen`'s new address, when it moved.
    pub http_listen: Option<SocketAddr>,
}

impl ReloadPlan {
    pub fn between(
        (old, old_secrets): (&Config, &Secrets),
        (new, new_secrets): (&Config, &Secrets),
    ) -> ReloadPlan {
        let target = new.mysql != old.mysql || new_secrets.mysql != old_secrets.mysql;
        let reads = new.lag != old.lag
            || new.load.is_some() != old.load.is_some()
            || warms_up(new) != warms_up(old);
        let moved = |old: SocketAddr, new: SocketAddr| (old != new).then_some(new);
        ReloadPlan {
            target,
            reads,
            primary: reads
                || new.lag.primary != old.lag.primary
                || new_secrets.primary != old_secrets.primary,
            lag_rules: new.lag != old.lag,
            maintenance_file: new.maintenance.file != old.maintenance.file,
            history: new.history != old.history || new.poll.interval != old.poll.interval,
            agent_listen: moved(old.agent.listen, new.agent.listen),
            http_listen: moved(old.http.listen, new.http.listen),
        }
    }

    /// The watched server's connection is replaced.
    pub fn new_probe(&self) -> bool {
        self.target || self.reads
    }

    /// Lag remembered (for estimates, the heartbeat writer) is dropped.
    pub fn forgets_lag(&self) -> bool {
        self.target || self.lag_rules
    }
}

/// Whether any policy warms up, so the probe must read `Uptime`.
pub fn warms_up(config: &Config) -> bool {
    config
        .policies()
        .iter()
        .any(|(_, policy)| !policy.ramp_up.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml).expect("a valid test configuration")
    }

    fn plan(old: &str, new: &str) -> ReloadPlan {
        let secrets = Secrets::default();
        ReloadPlan::between((&config(old), &secrets), (&config(new), &secrets))
    }

    #[test]
    fn what_each_change_rebuilds() {
        let base = "mysql: {host: 127.0.0.1, port: 3306}\n";
        let none = ReloadPlan::default();
        let reads = ReloadPlan {
            reads: true,
            primary: true,
            ..none
        };
        let cases: &[(&str, &str, ReloadPlan)] = &[
            ("nothing", "", none),
            ("another policy", "policy: {drain_at: 90s}\n", none),
            ("a pool", "pools: {main: {drain_at: 90s}}\n", none),
            (
                "another port",
                "mysql: {host: 127.0.0.1, port: 3307}\n",
                ReloadPlan {
                    target: true,
                    ..none
                },
            ),
            (
                "another lag source",
                "lag: {source: replica_status}\n",
                ReloadPlan {
                    lag_rules: true,
                    ..reads
                },
            ),
            (
                "a longer history",
                "history: {keep: 2h}\n",
                ReloadPlan {
                    history: true,
                    ..none
                },
            ),
            (
                "load scaling",
                "load: {threads_running_full_below: 3, threads_running_min_at: 13}\n",
                reads,
            ),
            ("a warm-up", "policy: {ramp_up: 30s}\n", reads),
            ("a pool's warm-up", "pools: {main: {ramp_up: 30s}}\n", reads),
            (
                "a maintenance file",
                "maintenance: {file: /tmp/remora-maint}\n",
                ReloadPlan {
                    maintenance_file: true,
                    ..none
                },
            ),
            (
                "another agent port",
                "agent: {listen: 127.0.0.1:9999}\n",
                ReloadPlan {
                    agent_listen: Some("127.0.0.1:9999".parse().expect("address")),
                    ..none
                },
            ),
            (
                "another http port",
                "http: {listen: 127.0.0.1:9998}\n",
                ReloadPlan {
                    http_listen: Some("127.0.0.1:9998".parse().expect("address")),
                    ..none
                },
            ),
        ];
        for (what, change, expected) in cases {
            let new = if change.starts_with("mysql:") {
                (*change).to_owned()
            } else {
                format!("{base}{change}")
            };
            assert_eq!(plan(base, &new), *expected, "{what}");
        }
    }

    #[test]
    fn a_rotated_password_is_a_new_target_and_a_primary_one_a_new_primary() {
        let config = config("mysql: {port: 3306}\n");
        let old = Secrets::default();
        let mysql = Secrets {
            mysql: Some(Secret::new("rotated")),
            ..Secrets::default()
        };
        let plan = ReloadPlan::between((&config, &old), (&config, &mysql));
        assert!(plan.target && plan.new_probe() && plan.forgets_lag() && !plan.primary);
        let primary = Secrets {
            primary: Some(Secret::new("rotated")),
            ..Secrets::default()
        };
        let plan = ReloadPlan::between((&config, &old), (&config, &primary));
        assert!(plan.primary && !plan.target && !plan.new_probe());
    }

    #[test]
    fn the_lag_rules_forget_lag_but_load_does_not() {
        let lag = plan("", "lag: {subtract_sql_delay: true}\n");
        assert!(lag.forgets_lag() && lag.new_probe());
        let load = plan(
            "",
            "load: {threads_running_full_below: 3, threads_running_min_at: 13}\n",
        );
        assert!(!load.forgets_lag() && load.new_probe());
    }
}
