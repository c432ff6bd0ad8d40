//! Who follows whom, and which server is the writer: the fleet's targets
//! grouped into clusters, worked out purely from what each target's last
//! poll said about its server (who it is, whether it takes writes, whom it
//! follows). [`Topology::of`] is the one function, tested table by table;
//! [`crate::clusters`] feeds it and hands the writer's place over.
//!
//! Servers are matched by identity, never by host strings (the same server
//! is `10.0.0.11`, a DNS name and `127.0.0.1` in different places): a
//! replica's `Source_UUID` against each server's `@@server_uuid` (MySQL),
//! its `Master_Server_Id` against each server's `@@server_id` (MariaDB, or
//! where a uuid is missing). Server ids are unique only within one
//! replication setup, so an id that matches more than one server links
//! nothing, and says so; naming the clusters settles it.
//!
//! - A **cluster** is the targets named alike (`targets.NAME.cluster`), or
//!   found together through replication links, now or earlier in this
//!   process: an old primary that nobody follows any more stays in its
//!   cluster.
//! - Its **writer** is its one server that takes writes (writable and
//!   replicating from nowhere); when there are several, the one that the
//!   replicas follow, directly or through an intermediate replica; when no
//!   replica follows any of them, or the replicas are split, there is none.
//! - A member that takes writes and is not the writer is out of every
//!   pool; a replica whose source, followed up the chain, is not the
//!   writer is out for reads.
//! - Group Replication members, Galera nodes and Aurora instances keep the
//!   rules of their own kind, and a target whose identity cannot be read
//!   is judged alone; neither is placed in a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::health::{Assessment, Health, async_channels};
use crate::probe::{Observation, ServerStatus, ThreadState};

/// Who a server is: `@@server_id` and, on MySQL, `@@server_uuid`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Identity {
    pub server_id: u64,
    pub uuid: Option<String>,
}

/// A channel's source as its replica knows it: `Source_UUID` and
/// `Source_Server_Id` (`Master_Server_Id`), known once its IO thread has
/// connected.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SourceId {
    pub server_id: Option<u64>,
    pub uuid: Option<String>,
}

impl Identity {
    /// Whether `source` is this server: by uuid when both have one, by
    /// server id otherwise.
    pub fn is(&self, source: &SourceId) -> bool {
        match (&self.uuid, &source.uuid) {
            (Some(own), Some(theirs)) => own == theirs,
            _ => source.server_id == Some(self.server_id),
        }
    }
}

impl SourceId {
    /// What a replica's channel says of its source (0 and an empty uuid
    /// are "not known yet").
    pub fn new(server_id: Option<u64>, uuid: Option<&str>) -> SourceId {
        SourceId {
            server_id: server_id.filter(|id| *id != 0),
            uuid: uuid.filter(|uuid| !uuid.is_empty()).map(str::to_owned),
        }
    }

    fn is_known(&self) -> bool {
        self.server_id.is_some() || self.uuid.is_some()
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.uuid, self.server_id) {
            (Some(uuid), _) => write!(f, "server {uuid}"),
            (None, Some(id)) => write!(f, "server id {id}"),
            (None, None) => f.write_str("a source not connected yet"),
        }
    }
}

crate::labelled! {
    /// Servers whose kind has rules of its own, and is never placed.
    pub enum OwnRules {
        Group => "group replication",
        Galera => "galera",
        Aurora => "aurora",
    }
}

/// What a target's latest poll said of its server, for the topology.
#[derive(Debug, Clone, PartialEq)]
pub enum Facts {
    /// Not polled yet.
    Pending,
    /// Its poll failed or is stale: nothing is known of it now; `last` is
    /// the identity it had when it was last seen.
    Unknown {
        last: Option<Identity>,
    },
    /// A Group Replication member, a Galera node or an Aurora instance.
    OwnRules(OwnRules),
    /// Reachable, and its identity could not be read.
    Unidentified,
    Seen(Seen),
}

/// A server seen by its latest poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub identity: Identity,
    /// `read_only` (and `super_read_only`) off.
    pub writable: bool,
    /// The sources of its replication channels; none for a server that
    /// replicates from nowhere.
    pub sources: Vec<SourceId>,
}

impl Seen {
    /// Writable and replicating from nowhere: a primary that takes writes.
    pub fn takes_writes(&self) -> bool {
        self.writable && self.sources.is_empty()
    }
}

/// Where each replication channel pointed when its IO thread was last
/// connected. MariaDB's `Master_Server_Id` keeps naming the old source
/// after `CHANGE MASTER` points the channel elsewhere, until the new one
/// is connected (seen on 10.11; MySQL clears its ids): an id read while
/// the channel points elsewhere than when it was connected is not
/// believed. The address only tells that the channel changed, never who
/// the source is.
#[derive(Debug, Default)]
pub struct SourcesSeen {
    connected: BTreeMap<String, (Option<String>, Option<u64>)>,
}

impl SourcesSeen {
    /// The sources of `status`'s async channels, an id read since the
    /// channel was pointed elsewhere left unknown.
    pub fn sources(&mut self, status: &ServerStatus) -> Vec<SourceId> {
        let mut connected = BTreeMap::new();
        let sources = (async_channels(status))
            .map(|channel| {
                let address = (channel.source_host.clone(), channel.source_port);
                let id = SourceId::new(channel.source_server_id, channel.source_uuid.as_deref());
                let then = match channel.io_thread {
                    ThreadState::Yes => Some(address.clone()),
                    _ => self.connected.get(&channel.name).cloned(),
                };
                let believed = then.as_ref().is_none_or(|then| *then == address);
                if let Some(then) = then {
                    connected.insert(channel.name.clone(), then);
                }
                if believed {
                    id
                } else {
                    SourceId::new(None, None)
                }
            })
            .collect();
        self.connected = connected;
        sources
    }
}

impl Facts {
    /// What one poll says, the channels' sources read through `seen`. A
    /// failed poll knows no identity: the board keeps the last one.
    pub fn of(observation: &Observation, assessment: &Assessment, seen: &mut SourcesSeen) -> Facts {
        let Ok(status) = &observation.result else {
            return Facts::Unknown { last: None };
        };
        if status.aurora.is_some() {
            return Facts::OwnRules(OwnRules::Aurora);
        }
        if matches!(assessment.health, Health::GroupMember { .. }) {
            return Facts::OwnRules(OwnRules::Group);
        }
        if status.galera.is_some() {
            return Facts::OwnRules(OwnRules::Galera);
        }
        let Some(server_id) = status.server_id else {
            return Facts::Unidentified;
        };
        Facts::Seen(Seen {
            identity: Identity {
                server_id,
                uuid: status.server_uuid.clone(),
            },
            writable: !status.read_only,
            sources: seen.sources(status),
        })
    }

    /// The identity it has, or had when last seen.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Facts::Seen(seen) => Some(&seen.identity),
            Facts::Unknown { last } => last.as_ref(),
            _ => None,
        }
    }
}

/// One target, as the topology reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// `targets.NAME.cluster`, if set.
    pub cluster: Option<String>,
    pub facts: Facts,
}

/// A replica and its source, by target name.
pub type Link = (String, String);

/// Why a target is in no cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alone {
    /// Its kind has rules of its own.
    OwnRules(OwnRules),
    /// Reachable, and its identity could not be read.
    Unidentified,
    /// Never seen: not polled yet, or unreachable since remora started.
    NeverSeen,
}

impl fmt::Display for Alone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Alone::OwnRules(kind) => write!(f, "{kind}: judged by its own rules"),
            Alone::Unidentified => f.write_str("identity unread (@@server_id): judged alone"),
            Alone::NeverSeen => f.write_str("not seen yet: judged alone"),
        }
    }
}

/// Why a cluster with several servers that take writes has no writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoWriter {
    /// No replica follows any of them.
    NobodyFollows,
    /// The replicas follow more than one of them.
    Split,
}

/// Where one target stands in its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The writer.
    Writer,
    /// The writer, waiting until the server named is out of the writer
    /// pools everywhere (set by [`crate::clusters`], never by the topology).
    Waiting(String),
    /// Takes writes, and the replicas follow `writer`.
    NotTheWriter { writer: String },
    /// Takes writes beside the others in `writable`, and none is the writer.
    NoWriter {
        writable: Vec<String>,
        why: NoWriter,
    },
    /// A replica whose chain leads to the writer.
    FollowsWriter,
    /// A replica whose chain leads to `source` (reached `through` its own
    /// source, when that is another server), not to `writer`.
    FollowsElsewhere {
        source: String,
        through: Option<String>,
        writer: String,
    },
    /// Nothing to say: read-only and following nobody, unreachable now, or
    /// a replica in a cluster without a writer.
    Aside,
}

crate::labelled! {
    /// A [`Place`] without its names: what `/status` and the metrics say.
    pub enum PlaceKind {
        Writer => "writer",
        Waiting => "waiting",
        NotTheWriter => "not_the_writer",
        NoWriter => "no_writer",
        FollowsWriter => "follows_writer",
        FollowsElsewhere => "follows_elsewhere",
        Aside => "aside",
    }
}

impl Place {
    pub fn kind(&self) -> PlaceKind {
        match self {
            Place::Writer => PlaceKind::Writer,
            Place::Waiting(_) => PlaceKind::Waiting,
            Place::NotTheWriter { .. } => PlaceKind::NotTheWriter,
            Place::NoWriter { .. } => PlaceKind::NoWriter,
            Place::FollowsWriter => PlaceKind::FollowsWriter,
            Place::FollowsElsewhere { .. } => PlaceKind::FollowsElsewhere,
            Place::Aside => PlaceKind::Aside,
        }
    }
}

/// A target's cluster, and its place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub cluster: String,
    pub place: Place,
}

/// How a place is said in a reason: `not the writer: replicas follow db-1`.
impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Writer => f.write_str("the writer"),
            Place::Waiting(other) => {
                write!(
                    f,
                    "the writer once {other} is out of the writer pool everywhere"
                )
            }
            Place::NotTheWriter { writer } => {
                write!(f, "not the writer: replicas follow {writer}")
            }
            Place::NoWriter { writable, why } => {
                let either = if writable.len() == 2 { "either" } else { "any" };
                write!(
                    f,
                    "no writer: {} are writable and ",
                    listed(writable, "and")
                )?;
                match why {
                    NoWriter::NobodyFollows => write!(f, "no replica follows {either}"),
                    NoWriter::Split => f.write_str("the replicas are split between them"),
                }
            }
            Place::FollowsWriter => f.write_str("follows the writer"),
            Place::FollowsElsewhere {
                source,
                through,
                writer,
            } => {
                write!(f, "follows {source}")?;
                if let Some(through) = through {
                    write!(f, " through {through}")?;
                }
                write!(f, ", not the writer {writer}")
            }
            Place::Aside => f.write_str("aside"),
        }
    }
}

/// One cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    pub name: String,
    /// Named in the configuration; else found from replication links.
    pub named: bool,
    /// Its targets, in name order.
    pub members: Vec<String>,
    pub writer: Option<String>,
    /// Its servers that take writes.
    pub writable: Vec<String>,
    /// Why there is no writer although some take writes.
    pub no_writer: Option<NoWriter>,
    /// Who follows whom now: each replica and each source, a target's name
    /// or what the replica knows of it.
    pub follows: Vec<Link>,
}

/// Every cluster of a fleet, and each target's place in one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topology {
    pub clusters: Vec<Cluster>,
    /// Targets in no cluster, and why.
    pub alone: BTreeMap<String, Alone>,
    /// Each placed target's cluster (an index into `clusters`) and place.
    places: BTreeMap<String, (usize, Place)>,
    /// The replication links found now (replica, source), to remember.
    pub links: BTreeSet<Link>,
    /// What could not be linked, and why (an id that names two servers,
    /// a link between two named clusters).
    pub notes: Vec<String>,
}

/// Where a replica's chain of sources ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    /// At a target that follows nobody (or several).
    Target(usize),
    /// At a source that is no target, or cannot be told apart.
    Unresolved(String),
    /// At a channel not connected yet: where it leads is not known.
    NotConnected,
    /// Round a ring.
    Ring,
}

/// A source matched to the fleet's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resolved {
    Node(usize),
    /// Known, and no target (or more than one).
    Unresolved(String),
    /// Not known yet: the channel has not connected since it was pointed
    /// there (a replica being re-pointed).
    NotConnected,
}

/// The work of [`Topology::of`]: each server (one node for every target
/// with that identity) and what is known of it.
struct Graph<'a> {
    /// Nodes: the first target's name of each identity, its members (the
    /// target names that have it), its configured cluster, its facts.
    nodes: Vec<Node<'a>>,
    /// Each node's resolved sources (empty: follows nobody).
    sources: Vec<Vec<Resolved>>,
    notes: Vec<String>,
}

struct Node<'a> {
    name: &'a str,
    targets: Vec<&'a str>,
    cluster: Option<&'a str>,
    facts: &'a Facts,
}

impl Topology {
    /// The topology of `members` (by target name), with the links seen
    /// earlier in `remembered`.
    pub fn of(members: &BTreeMap<String, Member>, remembered: &BTreeSet<Link>) -> Topology {
        Topology::remembering(members, remembered, &BTreeSet::new())
    }

    /// [`Topology::of`], where `writers` were the writers when last worked
    /// out: one of them, unreachable now, with nobody else writable, still
    /// places its cluster's replicas, so that a replica left on another
    /// server stays out through the failover.
    pub fn remembering(
        members: &BTreeMap<String, Member>,
        remembered: &BTreeSet<Link>,
        writers: &BTreeSet<String>,
    ) -> Topology {
        let mut topology = Topology::default();
        let graph = Graph::of(members, &mut topology.alone);
        let components = graph.components(remembered, &mut topology.notes);
        for component in components {
            let index = topology.clusters.len();
            let (cluster, places) = graph.cluster(&component, writers);
            for (node, place) in component.iter().zip(places) {
                for target in &graph.nodes[*node].targets {
                    topology
                        .places
                        .insert((*target).to_owned(), (index, place.clone()));
                }
            }
            topology.clusters.push(cluster);
        }
        topology.links = graph.single_links().collect();
        topology.notes.extend(graph.notes);
        topology
    }

    /// Target `name`'s cluster and place, when it is placed.
    pub fn place(&self, name: &str) -> Option<(&Cluster, &Place)> {
        let (index, place) = self.places.get(name)?;
        Some((&self.clusters[*index], place))
    }
}

impl<'a> Graph<'a> {
    fn of(members: &'a BTreeMap<String, Member>, alone: &mut BTreeMap<String, Alone>) -> Graph<'a> {
        let mut nodes: Vec<Node<'a>> = Vec::new();
        let mut by_identity: BTreeMap<&Identity, usize> = BTreeMap::new();
        for (name, member) in members {
            let why = match &member.facts {
                Facts::OwnRules(kind) => Some(Alone::OwnRules(*kind)),
                Facts::Unidentified => Some(Alone::Unidentified),
                facts if facts.identity().is_none() => Some(Alone::NeverSeen),
                _ => None,
            };
            if let Some(why) = why {
                alone.insert(name.clone(), why);
                continue;
            }
            let Some(identity) = member.facts.identity() else {
                continue;
            };
            match by_identity.get(identity) {
                // The same server under another name: one node.
                Some(&node) => {
                    nodes[node].targets.push(name);
                    if let Facts::Seen(_) = member.facts {
                        nodes[node].facts = &member.facts;
                    }
                }
                None => {
                    by_identity.insert(identity, nodes.len());
                    nodes.push(Node {
                        name,
                        targets: vec![name],
                        cluster: member.cluster.as_deref(),
                        facts: &member.facts,
                    });
                }
            }
        }
        let mut graph = Graph {
            sources: Vec::with_capacity(nodes.len()),
            nodes,
            notes: Vec::new(),
        };
        for node in 0..graph.nodes.len() {
            let resolved = match graph.nodes[node].facts {
                Facts::Seen(seen) => (seen.sources.iter())
                    .map(|source| graph.resolve(node, source))
                    .collect(),
                _ => Vec::new(),
            };
            graph.sources.push(resolved);
        }
        graph
    }

    /// The server `source` (followed by `replica`) is: by identity, among
    /// the replica's named cluster first.
    fn resolve(&mut self, replica: usize, source: &SourceId) -> Resolved {
        if !source.is_known() {
            return Resolved::NotConnected;
        }
        let matching: Vec<usize> = (0..self.nodes.len())
            .filter(|node| {
                self.nodes[*node]
                    .facts
                    .identity()
                    .is_some_and(|id| id.is(source))
            })
            .collect();
        let cluster = self.nodes[replica].cluster;
        let same_cluster: Vec<usize> = (matching.iter().copied())
            .filter(|node| cluster.is_some() && self.nodes[*node].cluster == cluster)
            .collect();
        let candidates = if same_cluster.is_empty() {
            matching
        } else {
            same_cluster
        };
        match candidates.as_slice() {
            [] => Resolved::Unresolved(format!("{source} (not a target)")),
            [node] => Resolved::Node(*node),
            several => {
                let names: Vec<&str> = several.iter().map(|n| self.nodes[*n].name).collect();
                self.notes.push(format!(
                    "{} follows {source}, which is {}: name their clusters (targets.NAME.cluster)",
                    self.nodes[replica].name,
                    listed(&names, "or")
                ));
                Resolved::Unresolved(format!("{source} (ambiguous)"))
            }
        }
    }

    /// The single-source links, by node: what discovery groups by and
    /// what the board remembers.
    fn single_links(&self) -> impl Iterator<Item = Link> + '_ {
        (0..self.nodes.len()).filter_map(|node| match self.sources[node].as_slice() {
            [Resolved::Node(source)] => Some((
                self.nodes[node].name.to_owned(),
                self.nodes[*source].name.to_owned(),
            )),
            _ => None,
        })
    }

    /// The clusters, as lists of nodes: named ones whole, and nodes joined
    /// by single-source links now or `remembered`. A link between two
    /// named clusters joins nothing.
    fn components(&self, remembered: &BTreeSet<Link>, notes: &mut Vec<String>) -> Vec<Vec<usize>> {
        let count = self.nodes.len();
        let mut parent: Vec<usize> = (0..count).collect();
        // Each set's configured name, kept at its root.
        let mut named: Vec<Option<&str>> = self.nodes.iter().map(|node| node.cluster).collect();
        let by_target: BTreeMap<&str, usize> = (0..count)
            .flat_map(|node| self.nodes[node].targets.iter().map(move |t| (*t, node)))
            .collect();
        let mut pairs: Vec<(usize, usize, bool)> = Vec::new();
        let mut first_of: BTreeMap<&str, usize> = BTreeMap::new();
        for node in 0..count {
            if let Some(cluster) = self.nodes[node].cluster {
                let first = *first_of.entry(cluster).or_insert(node);
                pairs.push((node, first, false));
            }
        }
        let current: Vec<Link> = self.single_links().collect();
        for (replica, source) in current.iter().chain(remembered) {
            if let (Some(&a), Some(&b)) = (
                by_target.get(replica.as_str()),
                by_target.get(source.as_str()),
            ) {
                pairs.push((a, b, true));
            }
        }
        for (a, b, is_link) in pairs {
            let (root_a, root_b) = (find(&mut parent, a), find(&mut parent, b));
            if root_a == root_b {
                continue;
            }
            match (named[root_a], named[root_b]) {
                (Some(x), Some(y)) if x != y => {
                    if is_link {
                        let note = format!(
                            "{} (cluster {x}) follows {} (cluster {y}): the clusters stay apart",
                            self.nodes[a].name, self.nodes[b].name
                        );
                        if !notes.contains(&note) {
                            notes.push(note);
                        }
                    }
                    continue;
                }
                (x, y) => {
                    parent[root_b] = root_a;
                    named[root_a] = x.or(y);
                }
            }
        }
        let mut components: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for node in 0..count {
            let root = find(&mut parent, node);
            components.entry(root).or_default().push(node);
        }
        let mut components: Vec<Vec<usize>> = components.into_values().collect();
        components.sort_by_key(|nodes| self.cluster_name(nodes));
        components
    }

    fn cluster_name(&self, component: &[usize]) -> (String, bool) {
        match component.iter().find_map(|node| self.nodes[*node].cluster) {
            Some(name) => (name.to_owned(), true),
            // Nodes are in name order: the first is the smallest name.
            None => (self.nodes[component[0]].name.to_owned(), false),
        }
    }

    fn seen(&self, node: usize) -> Option<&Seen> {
        match self.nodes[node].facts {
            Facts::Seen(seen) => Some(seen),
            _ => None,
        }
    }

    /// Where `node`'s chain of sources ends, starting from `source`.
    fn root_from(&self, node: usize, source: &Resolved) -> Root {
        let mut visited = BTreeSet::from([node]);
        let mut at = source.clone();
        loop {
            let next = match &at {
                Resolved::Unresolved(what) => return Root::Unresolved(what.clone()),
                Resolved::NotConnected => return Root::NotConnected,
                Resolved::Node(next) => *next,
            };
            if !visited.insert(next) {
                return Root::Ring;
            }
            match self.sources[next].as_slice() {
                [only] => at = only.clone(),
                _ => return Root::Target(next),
            }
        }
    }

    /// A cluster of `component`'s nodes, and each node's place in it.
    fn cluster(&self, component: &[usize], writers: &BTreeSet<String>) -> (Cluster, Vec<Place>) {
        let (name, named) = self.cluster_name(component);
        let takes_writes = |node: &usize| self.seen(*node).is_some_and(Seen::takes_writes);
        let writable: Vec<usize> = component.iter().copied().filter(takes_writes).collect();
        // Each single-source replica's vote: the writable server its chain ends at.
        let mut votes: BTreeMap<usize, usize> = BTreeMap::new();
        for node in component {
            if let (Some(_), [source]) = (self.seen(*node), self.sources[*node].as_slice())
                && let Root::Target(root) = self.root_from(*node, source)
                && writable.contains(&root)
            {
                *votes.entry(root).or_default() += 1;
            }
        }
        let (writer, no_writer) = match writable.as_slice() {
            [] => (None, None),
            [only] => (Some(*only), None),
            _ => match votes.keys().copied().collect::<Vec<_>>().as_slice() {
                [followed] => (Some(*followed), None),
                [] => (None, Some(NoWriter::NobodyFollows)),
                _ => (None, Some(NoWriter::Split)),
            },
        };
        let name_of = |node: usize| self.nodes[node].name.to_owned();
        let writable_names: Vec<String> = writable.iter().map(|node| name_of(*node)).collect();
        // Nobody writable: the writer last seen, if unreachable now.
        let lost_writer = (component.iter().copied()).find(|node| {
            writable.is_empty()
                && matches!(self.nodes[*node].facts, Facts::Unknown { .. })
                && (self.nodes[*node].targets.iter()).any(|target| writers.contains(*target))
        });
        let placing = writer.or(lost_writer);
        let places = (component.iter())
            .map(|node| {
                let Some(seen) = self.seen(*node) else {
                    return Place::Aside;
                };
                match (seen.takes_writes(), writer) {
                    (true, Some(writer)) if writer == *node => Place::Writer,
                    (true, Some(writer)) => Place::NotTheWriter {
                        writer: name_of(writer),
                    },
                    (true, None) => Place::NoWriter {
                        writable: writable_names.clone(),
                        why: no_writer.unwrap_or(NoWriter::NobodyFollows),
                    },
                    (false, _) if !seen.sources.is_empty() => match placing {
                        Some(writer) => self.replica_place(*node, writer),
                        None => Place::Aside,
                    },
                    (false, _) => Place::Aside,
                }
            })
            .collect();
        let mut members: Vec<String> = (component.iter())
            .flat_map(|node| self.nodes[*node].targets.iter().map(|t| (*t).to_owned()))
            .collect();
        members.sort();
        let cluster = Cluster {
            name,
            named,
            members,
            writer: writer.map(name_of),
            writable: writable_names,
            no_writer,
            follows: self.follows(component),
        };
        (cluster, places)
    }

    /// Who follows whom in `component`: each replica target and its source,
    /// a target's name or what the replica knows of it.
    fn follows(&self, component: &[usize]) -> Vec<Link> {
        let mut follows = Vec::new();
        for node in component {
            for source in &self.sources[*node] {
                let source = match source {
                    Resolved::Node(source) => self.nodes[*source].name.to_owned(),
                    Resolved::Unresolved(what) => what.clone(),
                    Resolved::NotConnected => SourceId::new(None, None).to_string(),
                };
                for target in &self.nodes[*node].targets {
                    follows.push(((*target).to_owned(), source.clone()));
                }
            }
        }
        follows
    }

    /// A replica's place: fine if any of its chains leads to `writer`.
    fn replica_place(&self, node: usize, writer: usize) -> Place {
        let sources = &self.sources[node];
        let roots: Vec<Root> = (sources.iter())
            .map(|source| self.root_from(node, source))
            .collect();
        if roots.contains(&Root::Target(writer)) {
            return Place::FollowsWriter;
        }
        // A channel being re-pointed may be on its way to the writer.
        if roots.contains(&Root::NotConnected) {
            return Place::Aside;
        }
        let source = match &roots[0] {
            Root::Target(root) => self.nodes[*root].name.to_owned(),
            Root::Unresolved(what) => what.clone(),
            Root::Ring => "a replication ring".to_owned(),
            Root::NotConnected => return Place::Aside,
        };
        let through = match (&sources[0], &roots[0]) {
            (Resolved::Node(direct), Root::Target(root)) if direct != root => {
                Some(self.nodes[*direct].name.to_owned())
            }
            (Resolved::Node(direct), Root::Ring | Root::Unresolved(_)) => {
                Some(self.nodes[*direct].name.to_owned())
            }
            _ => None,
        };
        Place::FollowsElsewhere {
            source,
            through,
            writer: self.nodes[writer].name.to_owned(),
        }
    }
}

fn find(parent: &mut [usize], mut node: usize) -> usize {
    while parent[node] != node {
        parent[node] = parent[parent[node]];
        node = parent[node];
    }
    node
}

/// `a`, `a and b`, `a, b and c` (`or` in place of `and` where asked).
pub fn listed(names: &[impl AsRef<str>], and: &str) -> String {
    match names {
        [] => String::new(),
        [only] => only.as_ref().to_owned(),
        [init @ .., last] => {
            let init: Vec<&str> = init.iter().map(AsRef::as_ref).collect();
            format!("{} {and} {}", init.join(", "), last.as_ref())
        }
    }
}

/// A MariaDB server: its server id, and the server ids it follows.
#[cfg(test)]
pub fn mariadb(id: u64, writable: bool, follows: &[u64]) -> Facts {
    Facts::Seen(Seen {
        identity: Identity {
            server_id: id,
            uuid: None,
        },
        writable,
        sources: follows
            .iter()
            .map(|id| SourceId::new(Some(*id), None))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(id: u64) -> Facts {
        mariadb(id, true, &[])
    }

    fn read_only(id: u64) -> Facts {
        mariadb(id, false, &[])
    }

    fn replica(id: u64, of: u64) -> Facts {
        mariadb(id, false, &[of])
    }

    fn gone(id: u64) -> Facts {
        Facts::Unknown {
            last: Some(Identity {
                server_id: id,
                uuid: None,
            }),
        }
    }

    fn fleet(members: &[(&str, Facts)]) -> BTreeMap<String, Member> {
        (members.iter())
            .map(|(name, facts)| {
                let member = Member {
                    cluster: None,
                    facts: facts.clone(),
                };
                ((*name).to_owned(), member)
            })
            .collect()
    }

    fn named(cluster: &str, mut members: BTreeMap<String, Member>) -> BTreeMap<String, Member> {
        for member in members.values_mut() {
            member.cluster = Some(cluster.to_owned());
        }
        members
    }

    fn places(topology: &Topology) -> BTreeMap<String, Place> {
        (topology.places.iter())
            .map(|(name, (_, place))| (name.clone(), place.clone()))
            .collect()
    }

    fn place_of(topology: &Topology, name: &str) -> Place {
        topology
            .place(name)
            .map(|(_, place)| place.clone())
            .unwrap_or_else(|| {
                panic!("{name} is not placed: {topology:?}");
            })
    }

    fn not_the_writer(writer: &str) -> Place {
        Place::NotTheWriter {
            writer: writer.into(),
        }
    }

    fn elsewhere(source: &str, through: Option<&str>, writer: &str) -> Place {
        Place::FollowsElsewhere {
            source: source.into(),
            through: through.map(Into::into),
            writer: writer.into(),
        }
    }

    fn no_writer(writable: &[&str], why: NoWriter) -> Place {
        Place::NoWriter {
            writable: writable.iter().map(|w| (*w).to_owned()).collect(),
            why,
        }
    }

    #[test]
    fn one_writable_server_is_the_writer_and_its_replicas_follow_it() {
        let topology = Topology::of(
            &fleet(&[
                ("db-1", primary(1)),
                ("db-2", replica(2, 1)),
                ("db-3", replica(3, 1)),
            ]),
            &BTreeSet::new(),
        );
        assert_eq!(topology.clusters.len(), 1, "{topology:?}");
        let cluster = &topology.clusters[0];
        assert_eq!((cluster.name.as_str(), cluster.named), ("db-1", false));
        assert_eq!(cluster.writer.as_deref(), Some("db-1"));
        assert_eq!(cluster.members, ["db-1", "db-2", "db-3"]);
        assert_eq!(
            places(&topology),
            BTreeMap::from([
                ("db-1".into(), Place::Writer),
                ("db-2".into(), Place::FollowsWriter),
                ("db-3".into(), Place::FollowsWriter),
            ])
        );
        assert_eq!(
            topology.links,
            BTreeSet::from([
                ("db-2".into(), "db-1".into()),
                ("db-3".into(), "db-1".into())
            ])
        );
    }

    #[test]
    fn of_two_writable_servers_the_one_the_replicas_follow_is_the_writer() {
        // A switchover half done: db-2 promoted, db-3 still on db-1.
        let topology = Topology::of(
            &fleet(&[
                ("db-1", primary(1)),
                ("db-2", primary(2)),
                ("db-3", replica(3, 1)),
            ]),
            &BTreeSet::from([("db-2".into(), "db-1".into())]),
        );
        assert_eq!(place_of(&topology, "db-1"), Place::Writer);
        assert_eq!(place_of(&topology, "db-2"), not_the_writer("db-1"));
        assert_eq!(place_of(&topology, "db-3"), Place::FollowsWriter);
        // db-3 re-pointed: db-2 is the writer, and db-1 is not.
        let topology = Topology::of(
            &fleet(&[
                ("db-1", primary(1)),
                ("db-2", primary(2)),
                ("db-3", replica(3, 2)),
            ]),
            &BTreeSet::from([
                ("db-2".into(), "db-1".into()),
                ("db-3".into(), "db-1".into()),
            ]),
        );
        assert_eq!(place_of(&topology, "db-1"), not_the_writer("db-2"));
        assert_eq!(place_of(&topology, "db-2"), Place::Writer);
        assert_eq!(place_of(&topology, "db-3"), Place::FollowsWriter);
    }

    #[test]
    fn a_returning_old_primary_stays_in_its_cluster_and_is_not_the_writer() {
        // db-1 failed, db-2 promoted, db-3 re-pointed; db-1 is back,
        // writable, and nobody follows it: only memory places it.
        let members = fleet(&[
            ("db-1", primary(1)),
            ("db-2", primary(2)),
            ("db-3", replica(3, 2)),
        ]);
        let remembered = BTreeSet::from([
            ("db-2".into(), "db-1".into()),
            ("db-3".into(), "db-1".into()),
        ]);
        let topology = Topology::of(&members, &remembered);
        assert_eq!(topology.clusters.len(), 1, "{topology:?}");
        assert_eq!(place_of(&topology, "db-1"), not_the_writer("db-2"));
        assert_eq!(place_of(&topology, "db-2"), Place::Writer);
        // Without that memory (remora restarted since), db-1 is a cluster
        // of its own: naming the cluster is what keeps it placed.
        let forgotten = Topology::of(&members, &BTreeSet::new());
        assert_eq!(forgotten.clusters.len(), 2);
        assert_eq!(place_of(&forgotten, "db-1"), Place::Writer);
        let by_name = Topology::of(&named("shop", members), &BTreeSet::new());
        assert_eq!(place_of(&by_name, "db-1"), not_the_writer("db-2"));
        assert_eq!(by_name.clusters[0].name, "shop");
        assert!(by_name.clusters[0].named);
    }

    #[test]
    fn while_the_writer_is_unreachable_its_replicas_serve_and_one_left_elsewhere_does_not() {
        // db-2 was the writer and is gone; db-3 followed it; db-4 was left
        // on db-1, read-only since the switchover, and its copy is frozen.
        let members = fleet(&[
            ("db-1", read_only(1)),
            ("db-2", gone(2)),
            ("db-3", replica(3, 2)),
            ("db-4", replica(4, 1)),
        ]);
        let remembered = BTreeSet::from([
            ("db-2".into(), "db-1".into()),
            ("db-3".into(), "db-2".into()),
        ]);
        let writers = BTreeSet::from(["db-2".to_owned()]);
        let topology = Topology::remembering(&members, &remembered, &writers);
        assert_eq!(topology.clusters[0].writer, None, "{topology:?}");
        assert_eq!(place_of(&topology, "db-3"), Place::FollowsWriter);
        assert_eq!(
            place_of(&topology, "db-4").to_string(),
            "follows db-1, not the writer db-2"
        );
        assert_eq!(place_of(&topology, "db-2"), Place::Aside);
        // Without the memory, nobody is placed: all serve.
        let forgotten = Topology::of(&members, &remembered);
        assert_eq!(place_of(&forgotten, "db-4"), Place::Aside);
        // A remembered writer seen again, read-only, places nobody.
        let demoted = fleet(&[
            ("db-1", read_only(1)),
            ("db-2", read_only(2)),
            ("db-3", replica(3, 2)),
            ("db-4", replica(4, 1)),
        ]);
        let topology = Topology::remembering(&demoted, &remembered, &writers);
        assert_eq!(place_of(&topology, "db-4"), Place::Aside);
    }

    #[test]
    fn the_topology_cannot_tell_and_nobody_is_the_writer() {
        let both = ["db-1", "db-2"];
        // Two writable, nobody follows either.
        let members = named("shop", fleet(&[("db-1", primary(1)), ("db-2", primary(2))]));
        let topology = Topology::of(&members, &BTreeSet::new());
        assert_eq!(topology.clusters[0].writer, None);
        assert_eq!(
            topology.clusters[0].no_writer,
            Some(NoWriter::NobodyFollows)
        );
        for name in both {
            assert_eq!(
                place_of(&topology, name),
                no_writer(&both, NoWriter::NobodyFollows)
            );
        }
        // The replicas split between them.
        let members = named(
            "shop",
            fleet(&[
                ("db-1", primary(1)),
                ("db-2", primary(2)),
                ("db-3", replica(3, 1)),
                ("db-4", replica(4, 2)),
            ]),
        );
        let topology = Topology::of(&members, &BTreeSet::new());
        assert_eq!(
            place_of(&topology, "db-1"),
            no_writer(&both, NoWriter::Split)
        );
        assert_eq!(
            place_of(&topology, "db-2"),
            no_writer(&both, NoWriter::Split)
        );
        // No writer: replicas are judged by their lag, as without a cluster.
        assert_eq!(place_of(&topology, "db-3"), Place::Aside);
    }

    #[test]
    fn a_replica_left_behind_follows_the_old_primary_not_the_writer() {
        // db-1 made read-only, db-2 promoted, db-3 never re-pointed: its
        // lag is 0, its copy frozen.
        let topology = Topology::of(
            &fleet(&[
                ("db-1", read_only(1)),
                ("db-2", primary(2)),
                ("db-3", replica(3, 1)),
            ]),
            &BTreeSet::from([("db-2".into(), "db-1".into())]),
        );
        assert_eq!(place_of(&topology, "db-2"), Place::Writer);
        assert_eq!(place_of(&topology, "db-3"), elsewhere("db-1", None, "db-2"));
        assert_eq!(place_of(&topology, "db-1"), Place::Aside);
        // Its old primary dead: it still follows it.
        let topology = Topology::of(
            &fleet(&[
                ("db-1", gone(1)),
                ("db-2", primary(2)),
                ("db-3", replica(3, 1)),
            ]),
            &BTreeSet::from([("db-2".into(), "db-1".into())]),
        );
        assert_eq!(place_of(&topology, "db-3"), elsewhere("db-1", None, "db-2"));
    }

    #[test]
    fn a_chain_leads_to_the_writer_or_names_where_it_ends() {
        // db-4 follows db-3, which follows the writer db-1: fine.
        let chain = fleet(&[
            ("db-1", primary(1)),
            ("db-3", replica(3, 1)),
            ("db-4", replica(4, 3)),
        ]);
        let topology = Topology::of(&chain, &BTreeSet::new());
        assert_eq!(place_of(&topology, "db-4"), Place::FollowsWriter);
        // db-3 left on the old primary db-2: db-4 behind it is out too, saying through whom.
        let stranded = fleet(&[
            ("db-1", primary(1)),
            ("db-2", read_only(2)),
            ("db-3", replica(3, 2)),
            ("db-4", replica(4, 3)),
        ]);
        let topology = Topology::of(&named("shop", stranded), &BTreeSet::new());
        assert_eq!(place_of(&topology, "db-3"), elsewhere("db-2", None, "db-1"));
        assert_eq!(
            place_of(&topology, "db-4"),
            elsewhere("db-2", Some("db-3"), "db-1")
        );
        assert_eq!(
            place_of(&topology, "db-4").to_string(),
            "follows db-2 through db-3, not the writer db-1"
        );
    }

    #[test]
    fn a_replica_following_a_server_remora_does_not_watch_is_out_only_in_a_named_cluster() {
        let members = fleet(&[("db-1", primary(1)), ("db-3", replica(3, 9))]);
        // Found from links: db-3 links to nothing, and is a cluster of its own.
        let topology = Topology::of(&members, &BTreeSet::new());
        assert_eq!(place_of(&topology, "db-3"), Place::Aside);
        // Named together: its source is not the writer.
        let topology = Topology::of(&named("shop", members), &BTreeSet::new());
        assert_eq!(
            place_of(&topology, "db-3"),
            elsewhere("server id 9 (not a target)", None, "db-1")
        );
    }

    #[test]
    fn a_server_id_two_clusters_share_links_nothing_until_the_clusters_are_named() {
        // Two setups, both numbered from 1.
        let mut members = fleet(&[
            ("a-1", primary(1)),
            ("a-2", replica(2, 1)),
            (
                "b-1",
                Facts::Seen(Seen {
                    identity: Identity {
                        server_id: 1,
                        uuid: Some("b".into()),
                    },
                    writable: true,
                    sources: Vec::new(),
                }),
            ),
            ("b-2", replica(2, 1)),
        ]);
        let topology = Topology::of(&members, &BTreeSet::new());
        assert_eq!(place_of(&topology, "a-1"), Place::Writer);
        assert_eq!(place_of(&topology, "b-1"), Place::Writer);
        assert!(
            topology
                .notes
                .iter()
                .any(|note| note.contains("server id 1, which is a-1 or b-1")),
            "{:?}",
            topology.notes
        );
        assert_eq!(place_of(&topology, "a-2"), Place::Aside);
        for (name, cluster) in [("a-1", "a"), ("a-2", "a"), ("b-1", "b"), ("b-2", "b")] {
            members.get_mut(name).unwrap().cluster = Some(cluster.into());
        }
        let topology = Topology::of(&members, &BTreeSet::new());
        assert!(topology.notes.is_empty(), "{:?}", topology.notes);
        assert_eq!(place_of(&topology, "a-2"), Place::FollowsWriter);
        assert_eq!(place_of(&topology, "b-2"), Place::FollowsWriter);
        assert_eq!(topology.clusters.len(), 2);
    }

    #[test]
    fn mysql_servers_are_matched_by_uuid() {
        let server = |id: u64, uuid: &str, writable: bool, follows: Option<&str>| {
            Facts::Seen(Seen {
                identity: Identity {
                    server_id: id,
                    uuid: Some(uuid.into()),
                },
                writable,
                // A MySQL replica knows both; the same id on two servers is
                // told apart by uuid.
                sources: follows
                    .map(|uuid| SourceId::new(Some(1), Some(uuid)))
                    .into_iter()
                    .collect(),
            })
        };
        let topology = Topology::of(
            &fleet(&[
                ("m-1", server(1, "aaaa", true, None)),
                ("m-2", server(1, "bbbb", true, None)),
                ("m-3", server(3, "cccc", false, Some("bbbb"))),
            ]),
            &BTreeSet::new(),
        );
        assert_eq!(place_of(&topology, "m-2"), Place::Writer);
        assert_eq!(place_of(&topology, "m-3"), Place::FollowsWriter);
        assert_eq!(
            place_of(&topology, "m-1"),
            Place::Writer,
            "a cluster of its own"
        );
    }

    #[test]
    fn the_same_server_under_two_names_is_one_server() {
        let topology = Topology::of(
            &fleet(&[
                ("db-1", primary(1)),
                ("db-1-by-ip", primary(1)),
                ("db-2", replica(2, 1)),
            ]),
            &BTreeSet::new(),
        );
        assert_eq!(place_of(&topology, "db-1"), Place::Writer);
        assert_eq!(place_of(&topology, "db-1-by-ip"), Place::Writer);
        assert_eq!(topology.clusters[0].writable, ["db-1"]);
        assert_eq!(topology.clusters[0].members, ["db-1", "db-1-by-ip", "db-2"]);
    }

    #[test]
    fn servers_with_rules_of_their_own_and_unread_identities_are_judged_alone() {
        let topology = Topology::of(
            &fleet(&[
                ("gr-1", Facts::OwnRules(OwnRules::Group)),
                ("galera-1", Facts::OwnRules(OwnRules::Galera)),
                ("proxy", Facts::Unidentified),
                ("new", Facts::Pending),
                ("dead", Facts::Unknown { last: None }),
            ]),
            &BTreeSet::new(),
        );
        assert!(topology.clusters.is_empty());
        assert_eq!(
            topology.alone,
            BTreeMap::from([
                ("dead".into(), Alone::NeverSeen),
                ("galera-1".into(), Alone::OwnRules(OwnRules::Galera)),
                ("gr-1".into(), Alone::OwnRules(OwnRules::Group)),
                ("new".into(), Alone::NeverSeen),
                ("proxy".into(), Alone::Unidentified),
            ])
        );
        assert_eq!(topology.place("proxy"), None);
    }

    #[test]
    fn a_replica_of_several_sources_is_fine_when_one_chain_leads_to_the_writer_and_links_nothing() {
        let topology = Topology::of(
            &named(
                "shop",
                fleet(&[
                    ("db-1", primary(1)),
                    ("db-2", read_only(2)),
                    ("agg", mariadb(5, false, &[2, 1])),
                ]),
            ),
            &BTreeSet::new(),
        );
        assert_eq!(place_of(&topology, "agg"), Place::FollowsWriter);
        assert!(!topology.links.iter().any(|(replica, _)| replica == "agg"));
        // Found from links, it joins no cluster.
        let found = Topology::of(
            &fleet(&[("db-1", primary(1)), ("agg", mariadb(5, false, &[2, 1]))]),
            &BTreeSet::new(),
        );
        assert_eq!(found.clusters.len(), 2);
    }

    #[test]
    fn a_ring_is_said_as_such_and_a_source_not_connected_yet_says_nothing() {
        let members = named(
            "shop",
            fleet(&[
                ("db-1", primary(1)),
                ("db-2", replica(2, 3)),
                ("db-3", replica(3, 2)),
                ("db-4", mariadb(4, false, &[0])),
            ]),
        );
        let topology = Topology::of(&members, &BTreeSet::new());
        assert_eq!(
            place_of(&topology, "db-2"),
            elsewhere("a replication ring", Some("db-3"), "db-1")
        );
        // A channel not connected yet may be on its way to the writer.
        assert_eq!(place_of(&topology, "db-4"), Place::Aside);
    }

    #[test]
    fn a_link_between_two_named_clusters_joins_nothing_and_says_so() {
        let mut members = fleet(&[
            ("a-1", primary(1)),
            ("b-1", primary(2)),
            ("b-2", replica(3, 1)),
        ]);
        members.get_mut("a-1").unwrap().cluster = Some("a".into());
        for name in ["b-1", "b-2"] {
            members.get_mut(name).unwrap().cluster = Some("b".into());
        }
        let topology = Topology::of(&members, &BTreeSet::new());
        assert_eq!(topology.clusters.len(), 2);
        assert_eq!(
            topology.notes,
            ["b-2 (cluster b) follows a-1 (cluster a): the clusters stay apart"]
        );
        // b-2 follows a server of another cluster, not its writer b-1.
        assert_eq!(place_of(&topology, "b-2"), elsewhere("a-1", None, "b-1"));
    }

    #[test]
    fn each_place_that_takes_a_server_out_names_both_servers() {
        let cases = [
            (
                not_the_writer("db-1"),
                "not the writer: replicas follow db-1",
            ),
            (
                no_writer(&["db-1", "db-2"], NoWriter::NobodyFollows),
                "no writer: db-1 and db-2 are writable and no replica follows either",
            ),
            (
                no_writer(&["db-1", "db-2", "db-3"], NoWriter::NobodyFollows),
                "no writer: db-1, db-2 and db-3 are writable and no replica follows any",
            ),
            (
                no_writer(&["db-1", "db-2"], NoWriter::Split),
                "no writer: db-1 and db-2 are writable and the replicas are split between them",
            ),
            (
                elsewhere("db-1", None, "db-2"),
                "follows db-1, not the writer db-2",
            ),
            (
                Place::Waiting("db-1".into()),
                "the writer once db-1 is out of the writer pool everywhere",
            ),
        ];
        for (place, said) in cases {
            assert_eq!(place.to_string(), said);
        }
    }

    #[test]
    fn an_id_read_after_the_channel_was_pointed_elsewhere_is_not_believed() {
        use crate::probe::ChannelStatus;
        let channel = |port: u64, io: ThreadState, id: u64| ServerStatus {
            channels: vec![ChannelStatus {
                source_host: Some("10.0.0.1".into()),
                source_port: Some(port),
                io_thread: io,
                source_server_id: Some(id),
                ..ChannelStatus::default()
            }],
            ..ServerStatus::default()
        };
        let one = SourceId::new(Some(1), None);
        let unknown = SourceId::new(None, None);
        let mut seen = SourcesSeen::default();
        // Never seen connected: believed.
        assert_eq!(
            seen.sources(&channel(3306, ThreadState::Connecting, 1)),
            vec![one.clone()]
        );
        assert_eq!(
            seen.sources(&channel(3306, ThreadState::Yes, 1)),
            vec![one.clone()]
        );
        // Its source died: still the same source.
        assert_eq!(
            seen.sources(&channel(3306, ThreadState::Connecting, 1)),
            vec![one.clone()]
        );
        // CHANGE MASTER to 3307, not connected yet: MariaDB still says 1.
        assert_eq!(
            seen.sources(&channel(3307, ThreadState::Connecting, 1)),
            vec![unknown.clone()]
        );
        assert_eq!(
            seen.sources(&channel(3307, ThreadState::No, 1)),
            vec![unknown]
        );
        // Connected: the new id.
        let two = SourceId::new(Some(2), None);
        assert_eq!(
            seen.sources(&channel(3307, ThreadState::Yes, 2)),
            vec![two.clone()]
        );
        assert_eq!(
            seen.sources(&channel(3307, ThreadState::Connecting, 2)),
            vec![two]
        );
    }

    #[test]
    fn every_cluster_has_at_most_one_writer_whatever_the_servers_say() {
        // Every fleet of four MariaDB servers with ids 1–4: each writable
        // or not, following nobody or one of the others (or itself), named
        // together or not.
        let choices: Vec<(bool, Option<u64>)> = [false, true]
            .into_iter()
            .flat_map(|w| [None, Some(1), Some(2), Some(3), Some(4)].map(|f| (w, f)))
            .collect();
        let mut checked = 0;
        for combination in 0..choices.len().pow(4) {
            let mut rest = combination;
            let mut members = Vec::new();
            for id in 1..=4u64 {
                let (writable, follows) = choices[rest % choices.len()];
                rest /= choices.len();
                let sources: Vec<u64> = follows.into_iter().collect();
                members.push((format!("db-{id}"), mariadb(id, writable, &sources)));
            }
            let members: BTreeMap<String, Member> = (members.into_iter())
                .map(|(name, facts)| {
                    (
                        name,
                        Member {
                            cluster: None,
                            facts,
                        },
                    )
                })
                .collect();
            for members in [members.clone(), named("all", members)] {
                let topology = Topology::of(&members, &BTreeSet::new());
                for cluster in &topology.clusters {
                    let writers = (cluster.members.iter())
                        .filter(|name| place_of(&topology, name) == Place::Writer)
                        .count();
                    assert!(writers <= 1, "{cluster:?}");
                    assert_eq!(writers == 1, cluster.writer.is_some(), "{cluster:?}");
                    if cluster.writable.len() == 1 {
                        assert_eq!(cluster.writer, Some(cluster.writable[0].clone()));
                    }
                    for name in &cluster.members {
                        let writable = match &members[name].facts {
                            Facts::Seen(seen) => seen.takes_writes(),
                            _ => false,
                        };
                        let place = place_of(&topology, name);
                        // Whatever takes writes is the writer, or says why not.
                        assert_eq!(
                            writable,
                            matches!(
                                place,
                                Place::Writer | Place::NotTheWriter { .. } | Place::NoWriter { .. }
                            ),
                            "{name}: {place:?} in {cluster:?}"
                        );
                    }
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 2 * 10usize.pow(4));
    }
}
