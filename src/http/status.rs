//! `GET /status`: the verdict and everything behind it, as JSON, one
//! `Serialize` struct per section. Field names are remora's, the same
//! whatever the server calls its columns. The top level is the default
//! policy's answer; each configured pool has its own under `pools`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::checks::{Checks, Peer};
use crate::config::ErrorText;
use crate::fleet::Fleet;
use crate::health::{Health, HeartbeatReport, HeartbeatState, Lag, LagFrom, Load};
use crate::maintenance::Maintenance;
use crate::policy::{Recovery, Warming};
use crate::probe::{
    AuroraStatus, ChannelStatus, GaleraStatus, GroupStatus, Observation, ThreadError,
};
use crate::snapshot::{PollTime, PoolVerdict, Snapshot};
use crate::topology::{Cluster, Topology};
use crate::trend::LagTrendNow;
use crate::units::rfc3339;

/// Who reads `/status`. Server error texts (`Last_SQL_Error`, a driver's
/// message) can quote row data (`Duplicate entry 'alice@example.com'`), and
/// a loopback peer may be a local proxy for anyone: by default nobody sees
/// them, only the errno and remora's own phrase. With `http.error_text:
/// show`, readers on loopback see them whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Loopback,
    Remote,
}

impl Audience {
    pub fn of(peer: SocketAddr, error_text: ErrorText) -> Audience {
        if error_text == ErrorText::Show && super::is_loopback(peer.ip()) {
            Audience::Loopback
        } else {
            Audience::Remote
        }
    }

    /// A server's error text as this reader may see it.
    fn server_text(self, text: &str) -> Option<String> {
        match self {
            Audience::Loopback => Some(text.chars().take(512).collect()),
            Audience::Remote => None,
        }
    }
}

/// The `/status` document.
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    #[serde(flatten)]
    answer: PoolStatus<'a>,
    maintenance: Option<MaintenanceStatus<'a>>,
    measured: Measured,
    tls: &'static str,
    role: &'static str,
    read_only: Option<bool>,
    /// `@@server_id` and, on MySQL, `@@server_uuid`: who the server is.
    server_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_uuid: Option<&'a str>,
    /// With targets: its cluster, and its place there.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<PlacedStatus<'a>>,
    server_version: Option<&'a str>,
    dialect: Option<&'static str>,
    lag: Option<LagStatus<'a>>,
    heartbeat: Option<HeartbeatStatus<'a>>,
    replication: Vec<ChannelView<'a>>,
    galera: Option<&'a GaleraStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_replication: Option<&'a GroupStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aurora: Option<AuroraView<'a>>,
    load: Option<&'a Load>,
    last_poll: LastPoll,
    last_success: Option<LastSuccess>,
    polls: Polls,
    stale_after_seconds: f64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pools: BTreeMap<&'a str, PoolStatus<'a>>,
    /// HAProxy peers whose checks named no pool that exists.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unmatched_peers: Vec<PeerStatus>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    unmatched_peers_crowded: bool,
}

impl<'a> Status<'a> {
    pub fn of(snapshot: &'a Snapshot, now: Instant, audience: Audience) -> Status<'a> {
        let observation = &snapshot.observation;
        let assessment = &snapshot.assessment;
        let server = observation.result.as_ref().ok();
        let measured = snapshot.measured(now, &snapshot.default);
        Status {
            answer: PoolStatus::of(snapshot, &snapshot.default, now, false),
            maintenance: snapshot.maintenance.as_ref().map(MaintenanceStatus::of),
            measured: Measured {
                verdict: measured.as_str(),
                weight: measured.weight(),
                reason: snapshot.default.decision.verdict.reason.to_string(),
            },
            tls: observation.tls.as_str(),
            role: assessment.health.role(),
            read_only: server.map(|status| status.read_only),
            server_id: server.and_then(|status| status.server_id),
            server_uuid: server.and_then(|status| status.server_uuid.as_deref()),
            cluster: snapshot.placed.as_ref().map(|placed| PlacedStatus {
                name: &placed.cluster,
                place: placed.place.kind().as_str(),
                says: placed.place.to_string(),
            }),
            server_version: server.map(|status| status.version.as_str()),
            dialect: server.map(|status| status.dialect.as_str()),
            lag: LagStatus::of(&assessment.health, snapshot.trend),
            heartbeat: assessment.heartbeat.as_ref().map(HeartbeatStatus::of),
            replication: server.map_or_else(Vec::new, |status| {
                let view = |channel| ChannelView::of(channel, audience);
                status.channels.iter().map(view).collect()
            }),
            galera: assessment.galera.as_ref(),
            group_replication: assessment.group.as_ref(),
            aurora: server
                .and_then(|status| status.aurora.as_ref())
                .map(AuroraView::of),
            load: assessment.load.as_ref(),
            last_poll: LastPoll::of(observation, audience),
            last_success: snapshot
                .last_success
                .map(|success| LastSuccess::of(success, now)),
            polls: Polls {
                total: snapshot.polls.polls,
                errors: (snapshot.polls.errors.iter())
                    .map(|(kind, count)| (kind.as_str(), *count))
                    .collect(),
            },
            stale_after_seconds: snapshot.settings.stale_after.as_secs_f64(),
            pools: (snapshot.pools.iter())
                .map(|pool| (pool.name.label(), PoolStatus::of(snapshot, pool, now, true)))
                .collect(),
            unmatched_peers: PeerStatus::all(&snapshot.unknown_checks, now),
            unmatched_peers_crowded: snapshot.unknown_checks.is_crowded(now),
        }
    }
}

/// `/status` of a fleet, without `?target=`: every target with its
/// verdicts (the same fields as its own document's), and how the last read
/// of `targets_file` went.
#[derive(Debug, Serialize)]
pub struct FleetStatus {
    targets: BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    targets_file: Option<TargetsFileStatus>,
    /// The clusters the targets make: each one's writer, and who follows whom.
    #[serde(skip_serializing_if = "Option::is_none")]
    clusters: Option<ClustersStatus>,
}

/// The topology as `/status` shows it.
#[derive(Debug, Serialize)]
struct ClustersStatus {
    clusters: Vec<ClusterStatus>,
    /// Targets in no cluster, and why (rules of their own, identity unread).
    alone: BTreeMap<String, String>,
    /// What could not be linked, and why.
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ClusterStatus {
    #[serde(flatten)]
    cluster: Cluster,
    /// Each member's place as its last poll took it (a writer waiting for
    /// the last one to be out says so), and the place in words.
    places: BTreeMap<String, PlaceStatus>,
}

#[derive(Debug, Serialize)]
struct PlaceStatus {
    place: &'static str,
    says: String,
}

impl ClustersStatus {
    fn of(topology: &Topology, fleet: &Fleet) -> ClustersStatus {
        let place_of = |member: &String| {
            let snapshot = Arc::clone(&fleet.targets.get(member)?.snapshots.borrow());
            let place = &snapshot.placed.as_ref()?.place;
            let status = PlaceStatus {
                place: place.kind().as_str(),
                says: place.to_string(),
            };
            Some((member.clone(), status))
        };
        ClustersStatus {
            clusters: (topology.clusters.iter())
                .map(|cluster| ClusterStatus {
                    places: cluster.members.iter().filter_map(place_of).collect(),
                    cluster: cluster.clone(),
                })
                .collect(),
            alone: (topology.alone.iter())
                .map(|(name, why)| (name.clone(), why.to_string()))
                .collect(),
            notes: topology.notes.clone(),
        }
    }
}

/// A target's cluster and place.
#[derive(Debug, Serialize)]
struct PlacedStatus<'a> {
    name: &'a str,
    place: &'static str,
    /// The place in words (`not the writer: replicas follow db-1`).
    says: String,
}

/// The fields of a target's own `/status` that the fleet's lists.
const LISTED: [&str; 12] = [
    "verdict",
    "weight",
    "reason",
    "agent_reply",
    "stale",
    "maintenance",
    "role",
    "cluster",
    "lag",
    "last_poll",
    "last_success",
    "pools",
];

impl FleetStatus {
    pub fn of(fleet: &Fleet, now: Instant, audience: Audience) -> FleetStatus {
        let targets = (fleet.targets.iter())
            .map(|(name, watched)| {
                let snapshot = Arc::clone(&watched.snapshots.borrow());
                let whole =
                    serde_json::to_value(Status::of(&snapshot, now, audience)).unwrap_or_default();
                let mut listed = serde_json::Map::new();
                listed.insert("server".into(), watched.server.clone().into());
                for key in LISTED {
                    if let Some(value) = whole.get(key) {
                        listed.insert(key.into(), value.clone());
                    }
                }
                (name.clone(), serde_json::Value::Object(listed))
            })
            .collect();
        FleetStatus {
            targets,
            targets_file: fleet.targets_file.as_ref().map(|file| TargetsFileStatus {
                path: file.path.display().to_string(),
                ok: file.error.is_none(),
                error: file.error.clone(),
                held: file.held.clone(),
                read_at: rfc3339(file.at),
            }),
            clusters: (fleet.clusters.as_ref())
                .map(|clusters| ClustersStatus::of(&clusters.topology(), fleet)),
        }
    }
}

#[derive(Debug, Serialize)]
struct TargetsFileStatus {
    path: String,
    ok: bool,
    /// Why the last change was not used; the targets before it stay.
    error: Option<String>,
    /// Read, and held back (a sharp shrink): why the targets before it
    /// stay for now.
    held: Option<String>,
    read_at: Option<String>,
}

/// One policy's answer: what the agent says now, maintenance and
/// staleness included.
#[derive(Debug, Serialize)]
struct PoolStatus<'a> {
    verdict: &'static str,
    weight: u8,
    reason: &'a str,
    agent_reply: &'a str,
    stale: bool,
    recovering: Option<Recovering>,
    warming_up: Option<WarmingUp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// The HAProxies that asked about this pool in the last ten minutes.
    peers: Vec<PeerStatus>,
    /// More asked than the record holds: one still asking was forgotten
    /// to make room, so `peers` is not everyone.
    peers_crowded: bool,
}

impl<'a> PoolStatus<'a> {
    fn of(snapshot: &'a Snapshot, pool: &'a PoolVerdict, now: Instant, with_role: bool) -> Self {
        let answer = snapshot.answer(now, pool);
        PoolStatus {
            verdict: answer.reported.as_str(),
            weight: answer.weight,
            reason: &answer.reason,
            agent_reply: answer.text(),
            stale: snapshot.is_stale(now, pool),
            recovering: pool.decision.recovering.map(Recovering::of),
            warming_up: pool.decision.warming.map(WarmingUp::of),
            role: with_role.then(|| pool.role.as_str()),
            peers: PeerStatus::all(&pool.checks, now),
            peers_crowded: pool.checks.is_crowded(now),
        }
    }
}

/// An Aurora instance, and whose copy of `replica_host_status` judged it.
#[derive(Debug, Serialize)]
struct AuroraView<'a> {
    server_id: &'a str,
    /// `own`, or the target (its cluster's writer) whose copy was read.
    replica_host_status_from: &'a str,
}

impl<'a> AuroraView<'a> {
    fn of(aurora: &'a AuroraStatus) -> AuroraView<'a> {
        AuroraView {
            server_id: &aurora.server_id,
            replica_host_status_from: aurora.copy_of.as_deref().unwrap_or("own"),
        }
    }
}

/// One HAProxy that asks: where from, how often, when last, what it was told.
#[derive(Debug, Serialize)]
struct PeerStatus {
    address: String,
    checks: u64,
    last_check: Option<String>,
    seconds_since_last_check: f64,
    /// The mean time between its checks, once it has sent two.
    interval_seconds: Option<f64>,
    /// It missed three of its own intervals (or a minute, pace unknown).
    silent: bool,
    /// Its checks come at more than one rhythm: several HAProxies (or
    /// server lines) behind this one address.
    several: bool,
    last_verdict: &'static str,
    /// When it was first told `last_verdict`: when this HAProxy learnt it.
    last_verdict_since: Option<String>,
}

impl PeerStatus {
    fn all(checks: &Checks, now: Instant) -> Vec<PeerStatus> {
        let of = |peer: Peer| PeerStatus {
            address: peer.address.to_string(),
            checks: peer.checks,
            last_check: rfc3339(peer.last_wall),
            seconds_since_last_check: now.saturating_duration_since(peer.last_at).as_secs_f64(),
            interval_seconds: peer.interval().map(|interval| interval.as_secs_f64()),
            silent: peer.is_silent(now),
            several: peer.is_several(),
            last_verdict: peer.last_reported.as_str(),
            last_verdict_since: rfc3339(peer.told_wall),
        };
        checks.peers(now).into_iter().map(of).collect()
    }
}

#[derive(Debug, Serialize)]
struct Recovering {
    polls: u32,
    needed: u32,
    towards: &'static str,
    towards_weight: u8,
}

impl Recovering {
    fn of(recovery: Recovery) -> Recovering {
        Recovering {
            polls: recovery.polls,
            needed: recovery.needed,
            towards: recovery.towards.as_str(),
            towards_weight: recovery.towards.weight(),
        }
    }
}

#[derive(Debug, Serialize)]
struct WarmingUp {
    seconds: u64,
    of_seconds: u64,
    ceiling: u8,
}

impl WarmingUp {
    fn of(warming: Warming) -> WarmingUp {
        WarmingUp {
            seconds: warming.elapsed.as_secs(),
            of_seconds: warming.length.as_secs(),
            ceiling: warming.ceiling,
        }
    }
}

#[derive(Debug, Serialize)]
struct MaintenanceStatus<'a> {
    mode: &'static str,
    reason: &'a str,
    source: String,
}

impl<'a> MaintenanceStatus<'a> {
    fn of(maintenance: &'a Maintenance) -> Self {
        MaintenanceStatus {
            mode: maintenance.mode.as_str(),
            reason: &maintenance.reason,
            source: maintenance.source.to_string(),
        }
    }
}

/// The default policy's measured verdict, maintenance aside.
#[derive(Debug, Serialize)]
struct Measured {
    verdict: &'static str,
    weight: u8,
    reason: String,
}

#[derive(Debug, Serialize)]
struct LagStatus<'a> {
    seconds: f64,
    /// Seconds of lag per second over the last polls: positive is falling
    /// behind; null until there are enough measured polls.
    rate: Option<f64>,
    /// While catching up: seconds until back under `full_weight_below`.
    eta_seconds: Option<f64>,
    estimated: bool,
    estimated_because: Option<&'a str>,
    channel: Option<&'a str>,
    source: LagFrom,
    fallback: Option<&'a str>,
}

impl<'a> LagStatus<'a> {
    fn of(health: &'a Health, trend: Option<LagTrendNow>) -> Option<Self> {
        match health {
            // Not a replica: nothing to lag behind.
            Health::Primary { .. } => Some(LagStatus {
                seconds: 0.0,
                rate: None,
                eta_seconds: None,
                estimated: false,
                estimated_because: None,
                channel: None,
                source: LagFrom::Primary,
                fallback: None,
            }),
            health => health.lag().map(|lag| LagStatus::measured(lag, trend)),
        }
    }

    fn measured(lag: &'a Lag, trend: Option<LagTrendNow>) -> Self {
        LagStatus {
            seconds: seconds(lag.value),
            rate: trend.map(|trend| (trend.rate * 1e3).round() / 1e3),
            eta_seconds: trend
                .and_then(|trend| trend.eta_seconds)
                .map(|eta| eta.round()),
            estimated: lag.is_estimated(),
            estimated_because: lag.estimated.as_deref(),
            channel: Some(&lag.channel),
            source: lag.origin.into(),
            fallback: lag.fallback.as_deref(),
        }
    }
}

#[derive(Debug, Serialize)]
struct HeartbeatStatus<'a> {
    seconds: Option<f64>,
    ts: Option<&'a str>,
    state: String,
    decided_lag: bool,
    primary_seconds: Option<f64>,
}

impl<'a> HeartbeatStatus<'a> {
    fn of(heartbeat: &'a HeartbeatReport) -> Self {
        HeartbeatStatus {
            seconds: heartbeat.age.map(seconds),
            ts: heartbeat.ts.as_deref(),
            state: heartbeat.state.describe(),
            decided_lag: heartbeat.state == HeartbeatState::Used,
            primary_seconds: heartbeat.primary_age.map(seconds),
        }
    }
}

#[derive(Debug, Serialize)]
struct ChannelView<'a> {
    channel: &'a str,
    source_host: Option<&'a str>,
    io_thread: &'static str,
    sql_thread: &'static str,
    seconds_behind: Option<u64>,
    sql_delay: Option<u64>,
    last_io_error: Option<ThreadErrorView>,
    last_sql_error: Option<ThreadErrorView>,
    /// The source's server id and (MySQL) uuid, once connected.
    source_server_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_uuid: Option<&'a str>,
    /// MariaDB 11.6+: the newest event applied behind the newest received.
    #[serde(skip_serializing_if = "Option::is_none")]
    applied_behind_received_seconds: Option<u64>,
}

impl<'a> ChannelView<'a> {
    fn of(channel: &'a ChannelStatus, audience: Audience) -> Self {
        let error = |err: &Option<ThreadError>| {
            err.as_ref().map(|err| ThreadErrorView {
                errno: err.errno,
                message: audience.server_text(&err.message),
            })
        };
        ChannelView {
            channel: &channel.name,
            source_host: channel.source_host.as_deref(),
            io_thread: channel.io_thread.as_str(),
            sql_thread: channel.sql_thread.as_str(),
            seconds_behind: channel.seconds_behind,
            sql_delay: channel.sql_delay,
            last_io_error: error(&channel.io_error),
            last_sql_error: error(&channel.sql_error),
            source_server_id: channel.source_server_id,
            source_uuid: channel.source_uuid.as_deref(),
            applied_behind_received_seconds: channel.applied_behind_received,
        }
    }
}

#[derive(Debug, Serialize)]
struct ThreadErrorView {
    errno: u32,
    /// `None` for a reader off this host: the text can quote row data.
    message: Option<String>,
}

#[derive(Debug, Serialize)]
struct LastPoll {
    at: Option<String>,
    ok: bool,
    duration_ms: f64,
    error: Option<PollErrorView>,
}

impl LastPoll {
    fn of(observation: &Observation, audience: Audience) -> LastPoll {
        LastPoll {
            at: rfc3339(observation.wall),
            ok: observation.result.is_ok(),
            duration_ms: millis(observation.duration),
            error: observation.result.as_ref().err().map(|err| PollErrorView {
                kind: err.kind().as_str(),
                message: match audience {
                    Audience::Loopback => err.to_string(),
                    Audience::Remote => err.phrase(),
                },
            }),
        }
    }
}

#[derive(Debug, Serialize)]
struct PollErrorView {
    kind: &'static str,
    message: String,
}

#[derive(Debug, Serialize)]
struct LastSuccess {
    at: Option<String>,
    age_seconds: f64,
    duration_ms: f64,
}

impl LastSuccess {
    fn of(success: PollTime, now: Instant) -> LastSuccess {
        LastSuccess {
            at: rfc3339(success.wall),
            age_seconds: seconds(now.saturating_duration_since(success.at)),
            duration_ms: millis(success.duration),
        }
    }
}

#[derive(Debug, Serialize)]
struct Polls {
    total: u64,
    errors: BTreeMap<&'static str, u64>,
}

/// Milliseconds, to the microsecond.
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// Seconds, to the millisecond.
fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e3).round() / 1e3
}
