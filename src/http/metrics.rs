//! `GET /metrics`: Prometheus text exposition 0.0.4, one function per
//! metric family. Names are remora's, whatever the server calls its
//! columns. Families with a label from a kind (`kind`, `state`, `verdict`)
//! iterate that kind's `ALL`, so a new variant cannot be forgotten.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tokio::time::Instant;

use crate::answer::Reported;
use crate::checks::Peer;
use crate::config::Role;
use crate::fleet::Fleet;
use crate::health::LagFrom;
use crate::probe::{ChannelStatus, ErrorKind, MemberState, ServerStatus, ThreadState, TlsState};
use crate::snapshot::Snapshot;
use crate::topology::{PlaceKind, Topology};

/// The `/metrics` page of one server.
pub fn render(snapshot: &Snapshot, now: Instant) -> String {
    let mut out = Exposition::default();
    build_info(&mut out);
    server(&mut out, snapshot, now);
    out.text()
}

/// The `/metrics` page of a fleet: every target's series, each with a
/// `target` label, under one `# HELP` and `# TYPE` per family; and the
/// targets themselves.
pub fn render_fleet(fleet: &Fleet, now: Instant) -> String {
    let mut out = Exposition::default();
    build_info(&mut out);
    out.gauge(
        "remora_targets",
        "Servers this remora watches.",
        fleet.targets.len() as f64,
    );
    if let Some(file) = &fleet.targets_file {
        out.gauge(
            "remora_targets_file_ok",
            "1 when the last change of targets_file was read and used; 0 while the previous targets stay because it could not be.",
            bool_value(file.error.is_none()),
        );
        out.gauge(
            "remora_targets_file_held",
            "1 while a read of targets_file that would remove more targets than fleet.max_removed is held back and the targets before it stay; 0 otherwise.",
            bool_value(file.held.is_some()),
        );
    }
    if let Some(clusters) = &fleet.clusters {
        cluster_writers(&mut out, &clusters.topology(), fleet, now);
    }
    for (name, watched) in &fleet.targets {
        let snapshot = Arc::clone(&watched.snapshots.borrow());
        out.target = Some(name.clone());
        server(&mut out, &snapshot, now);
    }
    out.text()
}

/// Per cluster: the servers that take writes, and the targets told up in a
/// writer pool (`role: primary`). An alert fires on two of either.
fn cluster_writers(out: &mut Exposition, topology: &Topology, fleet: &Fleet, now: Instant) {
    let up_for_writes = |member: &String| {
        fleet.targets.get(member).is_some_and(|watched| {
            let snapshot = Arc::clone(&watched.snapshots.borrow());
            (snapshot.every_pool())
                .filter(|pool| pool.role == Role::Primary)
                .any(|pool| snapshot.answer(now, pool).reported == Reported::Up)
        })
    };
    out.family(
        "remora_cluster_writable",
        "gauge",
        "Servers of the cluster that take writes (writable, replicating from nowhere).",
        (topology.clusters.iter()).map(|cluster| {
            (
                vec![("cluster", cluster.name.as_str())],
                cluster.writable.len() as f64,
            )
        }),
    );
    out.family(
        "remora_cluster_writers",
        "gauge",
        "Targets of the cluster told up in a writer pool (role: primary) now.",
        (topology.clusters.iter()).map(|cluster| {
            let writers = cluster.members.iter().filter(|m| up_for_writes(m)).count();
            (vec![("cluster", cluster.name.as_str())], writers as f64)
        }),
    );
}

/// A fleet target's place in its cluster, one-hot.
fn place(out: &mut Exposition, snapshot: &Snapshot) {
    let Some(placed) = &snapshot.placed else {
        return;
    };
    let kind = placed.place.kind();
    out.family(
        "remora_cluster_place",
        "gauge",
        "The target's place in its cluster, one-hot: writer, waiting (the writer, until the last one is out), not_the_writer, no_writer, follows_writer, follows_elsewhere, aside.",
        PlaceKind::ALL.iter().map(|each| {
            (
                vec![("cluster", placed.cluster.as_str()), ("place", each.as_str())],
                bool_value(kind == *each),
            )
        }),
    );
}

/// Every series about the server `snapshot` watches.
fn server(out: &mut Exposition, snapshot: &Snapshot, now: Instant) {
    polling(out, snapshot);
    poll_errors(out, snapshot);
    lag(out, snapshot);
    if let Ok(status) = &snapshot.observation.result {
        replica_status(out, status);
    }
    galera_group_and_load(out, snapshot);
    out.gauge(
        "remora_maintenance",
        "1 while an operator's maintenance switch is on.",
        bool_value(snapshot.maintenance.is_some()),
    );
    answers(out, snapshot, now);
    place(out, snapshot);
    agent_checks(out, snapshot);
    agent_peers(out, snapshot, now);
}

fn build_info(out: &mut Exposition) {
    out.family(
        "remora_build_info",
        "gauge",
        "remora's version.",
        [(vec![("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    );
}

/// Whether the last poll reached the server, how, how long it took, how
/// many there were and when the last good one was.
fn polling(out: &mut Exposition, snapshot: &Snapshot) {
    out.gauge(
        "remora_mysql_up",
        "1 when the last poll reached MySQL and read its status.",
        bool_value(snapshot.observation.result.is_ok()),
    );
    out.gauge(
        "remora_mysql_tls_plaintext_fallback",
        "1 when mysql.tls.mode preferred fell back to plaintext: the password crosses unencrypted.",
        bool_value(snapshot.observation.tls == TlsState::PlaintextFallback),
    );
    out.gauge(
        "remora_poll_duration_seconds",
        "How long the last poll took.",
        snapshot.observation.duration.as_secs_f64(),
    );
    out.family(
        "remora_polls_total",
        "counter",
        "Polls of MySQL since start.",
        [(Vec::new(), snapshot.polls.polls as f64)],
    );
    if let Some(success) = snapshot.last_success {
        let since_epoch = success
            .wall
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        out.gauge(
            "remora_last_success_timestamp_seconds",
            "Wall-clock time of the last successful poll.",
            since_epoch.as_secs_f64(),
        );
    }
}

fn poll_errors(out: &mut Exposition, snapshot: &Snapshot) {
    out.family(
        "remora_poll_errors_total",
        "counter",
        "Failed polls since start, by kind.",
        ErrorKind::ALL.iter().map(|kind| {
            let count = snapshot.polls.errors.get(kind).copied().unwrap_or(0);
            (vec![("kind", kind.as_str())], count as f64)
        }),
    );
}

/// The lag that decides, where it came from, and the heartbeat's age. One
/// series each, whatever the source: a source that flips (heartbeat to
/// replica status) moves a one-hot, it does not end the lag's series.
fn lag(out: &mut Exposition, snapshot: &Snapshot) {
    let assessment = &snapshot.assessment;
    if let Some((value, source, estimated)) = assessment.health.reported_lag() {
        let value = value.as_secs_f64();
        out.gauge(
            "remora_lag_seconds",
            "The lag that decides the verdict (0 on a primary; absent while unknown).",
            value,
        );
        out.gauge(
            "remora_lag_estimated",
            "1 while the lag is estimated (it could not be measured this poll).",
            bool_value(estimated),
        );
        out.family(
            "remora_lag_source",
            "gauge",
            "Where the lag came from, one-hot.",
            (LagFrom::ALL.iter())
                .map(|each| (vec![("source", each.as_str())], bool_value(*each == source))),
        );
    }
    if let Some(trend) = snapshot.trend {
        out.gauge(
            "remora_lag_rate",
            "Seconds of lag per second over the last polls: positive is falling behind.",
            trend.rate,
        );
        if let Some(eta) = trend.eta_seconds {
            out.gauge(
                "remora_lag_eta_seconds",
                "While catching up: seconds until the lag is back under full_weight_below.",
                eta,
            );
        }
    }
    if let Some(age) = assessment.heartbeat.as_ref().and_then(|h| h.age) {
        out.gauge(
            "remora_heartbeat_age_seconds",
            "Age of the newest heartbeat row on the watched server.",
            age.as_secs_f64(),
        );
    }
}

fn replica_status(out: &mut Exposition, status: &ServerStatus) {
    out.family(
        "remora_replica_seconds_behind",
        "gauge",
        "Seconds_Behind_Master / Seconds_Behind_Source per channel (absent when NULL).",
        status
            .channels
            .iter()
            .filter_map(|c| Some((vec![("channel", c.name.as_str())], c.seconds_behind? as f64))),
    );
    thread_states(
        out,
        "remora_replica_io_thread",
        "IO (receiver) thread state per channel, one-hot.",
        &status.channels,
        |c| c.io_thread,
    );
    thread_states(
        out,
        "remora_replica_sql_thread",
        "SQL (applier) thread state per channel, one-hot.",
        &status.channels,
        |c| c.sql_thread,
    );
}

fn thread_states(
    out: &mut Exposition,
    name: &str,
    help: &str,
    channels: &[ChannelStatus],
    thread: fn(&ChannelStatus) -> ThreadState,
) {
    out.family(
        name,
        "gauge",
        help,
        channels.iter().flat_map(|c| {
            ThreadState::ALL.iter().map(move |state| {
                (
                    vec![("channel", c.name.as_str()), ("state", state.as_str())],
                    bool_value(thread(c) == *state),
                )
            })
        }),
    );
}

fn galera_group_and_load(out: &mut Exposition, snapshot: &Snapshot) {
    if let Some(galera) = &snapshot.assessment.galera {
        out.gauge(
            "remora_galera_local_state",
            "wsrep_local_state (4 = synced).",
            galera.local_state.number() as f64,
        );
        out.gauge(
            "remora_galera_recv_queue",
            "wsrep_local_recv_queue.",
            galera.recv_queue as f64,
        );
    }
    if let Some(group) = &snapshot.assessment.group {
        out.family(
            "remora_group_replication_member_state",
            "gauge",
            "This member's MEMBER_STATE, one-hot.",
            MemberState::ALL.iter().map(|state| {
                let on = bool_value(*state == group.state);
                (vec![("state", state.as_str())], on)
            }),
        );
        out.gauge(
            "remora_group_replication_primary",
            "1 when this member's MEMBER_ROLE is PRIMARY.",
            bool_value(group.primary),
        );
        out.gauge(
            "remora_group_replication_reachable_members",
            "Members this one sees ONLINE or RECOVERING.",
            group.reachable as f64,
        );
        out.gauge(
            "remora_group_replication_members",
            "Members this one lists.",
            group.members as f64,
        );
        if let Some(queue) = group.applier_queue {
            out.gauge(
                "remora_group_replication_applier_queue",
                "COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE.",
                queue as f64,
            );
        }
    }
    if let Some(load) = &snapshot.assessment.load {
        out.gauge(
            "remora_threads_running",
            "Threads_running.",
            load.threads_running as f64,
        );
        out.gauge(
            "remora_threads_connected",
            "Threads_connected.",
            load.threads_connected as f64,
        );
    }
}

/// What each pool is told now: its weight, and its verdict one-hot.
fn answers(out: &mut Exposition, snapshot: &Snapshot, now: Instant) {
    let answers: Vec<_> = snapshot
        .every_pool()
        .map(|pool| (pool.label(), snapshot.answer(now, pool)))
        .collect();
    out.family(
        "remora_weight_percent",
        "gauge",
        "Weight the agent reports, per pool (0 unless up).",
        answers
            .iter()
            .map(|(pool, answer)| (vec![("pool", *pool)], f64::from(answer.weight))),
    );
    out.family(
        "remora_verdict",
        "gauge",
        "What the agent reports per pool, one-hot.",
        answers.iter().flat_map(|(pool, answer)| {
            Reported::ALL.iter().map(move |reported| {
                (
                    vec![("pool", *pool), ("verdict", reported.as_str())],
                    bool_value(answer.reported == *reported),
                )
            })
        }),
    );
}

fn agent_checks(out: &mut Exposition, snapshot: &Snapshot) {
    let counters = snapshot
        .every_pool()
        .map(|pool| (pool.label(), &*pool.checks))
        .chain([("unknown", &*snapshot.unknown_checks)]);
    out.family(
        "remora_agent_checks_total",
        "counter",
        "Agent checks answered, per pool asked for and what was reported.",
        counters.flat_map(|(pool, checks)| {
            Reported::ALL.iter().map(move |reported| {
                (
                    vec![("pool", pool), ("verdict", reported.as_str())],
                    checks.get(*reported) as f64,
                )
            })
        }),
    );
}

/// Who asks, per pool, without a label per peer (so the series stay few
/// whatever connects): how many HAProxies asked in the last ten minutes,
/// how many of them fell silent, and when the last check came. An alert
/// on the silent ones fires when a HAProxy stops asking.
fn agent_peers(out: &mut Exposition, snapshot: &Snapshot, now: Instant) {
    let pools: Vec<(&str, Vec<Peer>)> = (snapshot.every_pool())
        .map(|pool| (pool.label(), pool.checks.peers(now)))
        .chain([("unknown", snapshot.unknown_checks.peers(now))])
        .collect();
    out.family(
        "remora_agent_peers",
        "gauge",
        "HAProxy peers (source addresses) that asked about this pool in the last 10 minutes.",
        (pools.iter()).map(|(pool, peers)| (vec![("pool", *pool)], peers.len() as f64)),
    );
    out.family(
        "remora_agent_peers_silent",
        "gauge",
        "Of those, the peers that missed three of their own check intervals: a HAProxy that stopped asking.",
        (pools.iter()).map(|(pool, peers)| {
            let silent = peers.iter().filter(|peer| peer.is_silent(now)).count();
            (vec![("pool", *pool)], silent as f64)
        }),
    );
    out.family(
        "remora_agent_last_check_timestamp_seconds",
        "gauge",
        "When the last agent check about this pool came (Unix time); 0 if none in the last 10 minutes.",
        (pools.iter()).map(|(pool, peers)| {
            let last = (peers.first())
                .and_then(|peer| peer.last_wall.duration_since(UNIX_EPOCH).ok())
                .map_or(0.0, |since| since.as_secs_f64());
            (vec![("pool", *pool)], last)
        }),
    );
}

/// Prometheus text exposition format 0.0.4: `# HELP`, `# TYPE`, then
/// samples; label values escaped. A family written again (another target's)
/// adds its samples under the first one's header.
#[derive(Debug, Default)]
struct Exposition {
    families: Vec<Family>,
    /// Where each family is in `families`.
    index: HashMap<String, usize>,
    /// Set while a fleet's target is written: every sample gets `target`.
    target: Option<String>,
}

#[derive(Debug)]
struct Family {
    header: String,
    samples: String,
}

impl Exposition {
    fn family<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
    ) {
        let at = match self.index.get(name) {
            Some(at) => *at,
            None => {
                self.families.push(Family {
                    header: format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"),
                    samples: String::new(),
                });
                self.index.insert(name.to_owned(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        let out = &mut self.families[at].samples;
        for (labels, value) in samples {
            out.push_str(name);
            let target = self.target.as_deref().map(|target| ("target", target));
            let labels: Vec<(&str, &str)> = target.into_iter().chain(labels).collect();
            if !labels.is_empty() {
                out.push('{');
                for (i, (label, value)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{label}=\"{}\"", escape_label(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(value));
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help, [(Vec::new(), value)]);
    }

    fn text(&self) -> String {
        let size = (self.families.iter())
            .map(|f| f.header.len() + f.samples.len())
            .sum();
        let mut text = String::with_capacity(size);
        for family in &self.families {
            text.push_str(&family.header);
            text.push_str(&family.samples);
        }
        text
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        value.to_string()
    }
}

fn bool_value(yes: bool) -> f64 {
    if yes { 1.0 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let mut out = Exposition::default();
        out.gauge("remora_x", "An x.", 1.5);
        out.family(
            "remora_y_total",
            "counter",
            "A y.",
            [
                (vec![("pool", "a\"b"), ("channel", "c\\d\ne")], 3.0),
                (vec![], f64::INFINITY),
            ],
        );
        assert_eq!(
            out.text(),
            "# HELP remora_x An x.\n# TYPE remora_x gauge\nremora_x 1.5\n\
             # HELP remora_y_total A y.\n# TYPE remora_y_total counter\n\
             remora_y_total{pool=\"a\\\"b\",channel=\"c\\\\d\\ne\"} 3\n\
             remora_y_total +Inf\n"
        );
    }
}
