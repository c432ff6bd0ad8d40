//! The fleet's clusters as the targets' pollers last saw them: one board,
//! shared by every poller like the budgets'. Each poller publishes what its
//! server is ([`Facts`]) and takes its place from the [`Topology`] of them
//! all, worked out again only when what a target says has changed or gone
//! stale; the readers read the same topology.
//!
//! The writer's place is handed over, never shared. A target the topology
//! names writer holds the place only once no other member of its cluster
//! holds it, and every HAProxy that asked about that member's writer
//! pools (`role: primary`) has since been told it is out; until then it
//! waits, out of its writer pools, saying for whom. One reply takes effect
//! in HAProxy at once, so HAProxy marks the old writer down before the new
//! one is ever up: two servers are never up for writes together, not even
//! for the length of an agent interval.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::checks::Checks;
use crate::topology::{Facts, Link, Member, Place, Placed, Topology};

/// With a record of HAProxies too crowded to tell who was told what
/// ([`Checks::is_crowded`]), the old writer counts as out this long after
/// it stopped holding the place: every HAProxy asks more often.
pub const CROWDED_HOLD: Duration = Duration::from_secs(60);

/// Every target's server as its poller last published it, and the
/// topology they make.
#[derive(Debug, Default)]
pub struct Clusters {
    board: Mutex<Board>,
}

#[derive(Debug, Default)]
struct Board {
    members: BTreeMap<String, Entry>,
    /// Every link seen since remora started: an old primary that nobody
    /// follows any more stays in its cluster.
    remembered: BTreeSet<Link>,
    /// Each cluster's writer when last seen: it still places the replicas
    /// while it is unreachable and nobody else takes writes.
    writers: BTreeSet<String>,
    topology: Arc<Topology>,
    /// Something published differs from what the topology was worked out from.
    changed: bool,
    /// When the first fresh entry goes stale.
    stale_at: Option<Instant>,
}

/// What one target published.
#[derive(Debug)]
struct Entry {
    /// `targets.NAME.cluster`.
    cluster: Option<String>,
    facts: Facts,
    at: Instant,
    /// Its `poll.stale_after`: a poller that has not published since is stuck.
    fresh_for: Duration,
    /// Holds the writer's place: the only member of its cluster that may be
    /// up for writes.
    holds: bool,
    /// When it last held the writer's place.
    held_at: Option<Instant>,
    /// The checks of its pools that take writes: who was told what.
    writer_checks: Vec<Arc<Checks>>,
}

impl Entry {
    fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.at) <= self.fresh_for
    }

    /// Its facts as the topology should read them at `now`: nothing is
    /// known of a target whose poller has not published for its
    /// `stale_after`.
    fn facts_at(&self, now: Instant) -> Facts {
        match (&self.facts, self.is_fresh(now)) {
            (facts, true) => facts.clone(),
            (facts, false) => Facts::Unknown {
                last: facts.identity().cloned(),
            },
        }
    }

    /// Whether any HAProxy may still send it writes: it holds the writer's
    /// place, or some HAProxy that asked about its writer pools has not
    /// been told since that it is out.
    fn may_take_writes(&self, now: Instant) -> bool {
        if self.holds && self.is_fresh(now) {
            return true;
        }
        (self.writer_checks.iter()).any(|checks| {
            let crowded = checks.is_crowded(now)
                && (self.held_at)
                    .is_some_and(|at| now.saturating_duration_since(at) < CROWDED_HOLD);
            crowded
                || (checks.peers(now).iter())
                    .any(|peer| !peer.is_silent(now) && peer.may_hold_up(now))
        })
    }
}

impl Clusters {
    /// Target `name`'s server as its latest poll saw it, published at
    /// `now` and standing for `fresh_for`. A failed poll keeps the identity
    /// the server had.
    pub fn publish(
        &self,
        name: &str,
        cluster: Option<&str>,
        facts: Facts,
        writer_checks: Vec<Arc<Checks>>,
        (now, fresh_for): (Instant, Duration),
    ) {
        let mut board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
        let old = board.members.remove(name);
        let facts = match (facts, &old) {
            (Facts::Unknown { last: None }, Some(old)) => Facts::Unknown {
                last: old.facts.identity().cloned(),
            },
            (facts, _) => facts,
        };
        let same = old.as_ref().is_some_and(|old| {
            old.facts == facts && old.cluster.as_deref() == cluster && old.is_fresh(now)
        });
        board.changed |= !same;
        let (holds, held_at) = old.map_or((false, None), |old| (old.holds, old.held_at));
        board.members.insert(
            name.to_owned(),
            Entry {
                cluster: cluster.map(str::to_owned),
                facts,
                at: now,
                fresh_for,
                holds,
                held_at,
                writer_checks,
            },
        );
    }

    /// Target `name`'s cluster and place at `now`, the writer's handed
    /// over; `None` when it is in no cluster (not published yet, or judged
    /// alone).
    pub fn place(&self, name: &str, now: Instant) -> Option<Placed> {
        let mut board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
        board.refresh(now);
        let topology = Arc::clone(&board.topology);
        let placed = topology.place(name).map(|(cluster, place)| Placed {
            place: match place {
                Place::Writer => board.hand_over(name, &cluster.members, now),
                place => place.clone(),
            },
            cluster: cluster.name.clone(),
        });
        if let Some(entry) = board.members.get_mut(name) {
            entry.holds = placed
                .as_ref()
                .is_some_and(|placed| placed.place == Place::Writer);
            if entry.holds {
                entry.held_at = Some(now);
            }
        }
        placed
    }

    /// The topology as last worked out, for the readers.
    pub fn topology(&self) -> Arc<Topology> {
        let board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&board.topology)
    }

    /// Target `name` is no longer watched: it leaves its cluster, and its
    /// links are forgotten.
    pub fn forget(&self, name: &str) {
        let mut board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
        board.members.remove(name);
        board
            .remembered
            .retain(|(replica, source)| replica != name && source != name);
        board.writers.remove(name);
        board.changed = true;
    }
}

impl Board {
    /// Works the topology out again if anything changed or went stale.
    fn refresh(&mut self, now: Instant) {
        let expired = self.stale_at.is_some_and(|at| now > at);
        if !self.changed && !expired {
            return;
        }
        let members: BTreeMap<String, Member> = (self.members.iter())
            .map(|(name, entry)| {
                let member = Member {
                    cluster: entry.cluster.clone(),
                    facts: entry.facts_at(now),
                };
                (name.clone(), member)
            })
            .collect();
        let topology = Topology::remembering(&members, &self.remembered, &self.writers);
        self.remembered.extend(topology.links.iter().cloned());
        self.remember_writers(&topology, &members);
        self.topology = Arc::new(topology);
        self.changed = false;
        self.stale_at = (self.members.values())
            .filter(|entry| entry.is_fresh(now) && !matches!(entry.facts, Facts::Unknown { .. }))
            .map(|entry| entry.at + entry.fresh_for)
            .min();
    }

    /// Each cluster's writer now, or, while it has none, the one before
    /// if it is unreachable (a server seen since and not the writer has
    /// been demoted, or split from the others).
    fn remember_writers(&mut self, topology: &Topology, members: &BTreeMap<String, Member>) {
        let unreachable = |name: &str| {
            matches!(
                members.get(name),
                Some(Member {
                    facts: Facts::Unknown { .. },
                    ..
                })
            )
        };
        let mut writers = BTreeSet::new();
        for cluster in &topology.clusters {
            match &cluster.writer {
                Some(writer) => {
                    writers.insert(writer.clone());
                }
                None => writers.extend(
                    (cluster.members.iter())
                        .filter(|name| self.writers.contains(*name) && unreachable(name))
                        .cloned(),
                ),
            }
        }
        self.writers = writers;
    }

    /// `name`, the topology's writer, holds the place, or waits for the
    /// first other member of its cluster that any HAProxy may still send
    /// writes to. The same server under another name is no other member.
    fn hand_over(&self, name: &str, members: &[String], now: Instant) -> Place {
        let identity = (self.members.get(name)).and_then(|entry| entry.facts.identity());
        let other = (members.iter())
            .filter(|member| member.as_str() != name)
            .filter_map(|member| Some((member, self.members.get(member)?)))
            .filter(|(_, entry)| identity.is_none() || entry.facts.identity() != identity)
            .find(|(_, entry)| entry.may_take_writes(now));
        match other {
            Some((other, _)) => Place::Waiting(other.clone()),
            None => Place::Writer,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::answer::Reported;

    const FRESH: Duration = Duration::from_secs(5);

    /// `topology::mariadb`, following one server or none.
    fn mariadb(id: u64, writable: bool, follows: Option<u64>) -> Facts {
        crate::topology::mariadb(id, writable, follows.as_slice())
    }

    /// A board, each target's writer pool checks, and the clock.
    struct Fleet {
        clusters: Clusters,
        checks: BTreeMap<&'static str, Arc<Checks>>,
        now: Instant,
    }

    impl Fleet {
        fn new(names: &[&'static str]) -> Fleet {
            Fleet {
                clusters: Clusters::default(),
                checks: names.iter().map(|name| (*name, Arc::default())).collect(),
                now: Instant::now(),
            }
        }

        fn publish(&self, name: &'static str, facts: Facts) {
            let checks = vec![Arc::clone(&self.checks[name])];
            (self.clusters).publish(name, Some("shop"), facts, checks, (self.now, FRESH));
        }

        fn place(&self, name: &str) -> Option<Place> {
            Some(self.clusters.place(name, self.now)?.place)
        }

        /// The HAProxy at 127.0.0.1 asks `name`'s writer pool, and is told `reported`.
        fn told(&self, name: &str, reported: Reported) {
            let haproxy = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
            self.checks[name].record(reported, haproxy, self.now);
        }

        fn later(&mut self, by: Duration) {
            self.now += by;
        }
    }

    fn answer(place: &Option<Place>) -> Reported {
        match place {
            Some(Place::Writer) => Reported::Up,
            _ => Reported::Down,
        }
    }

    #[test]
    fn the_new_writer_waits_until_every_haproxy_was_told_the_old_one_is_out() {
        let mut fleet = Fleet::new(&["db-1", "db-2", "db-3"]);
        fleet.publish("db-1", mariadb(1, true, None));
        fleet.publish("db-2", mariadb(2, false, Some(1)));
        fleet.publish("db-3", mariadb(3, false, Some(1)));
        assert_eq!(fleet.place("db-1"), Some(Place::Writer));
        fleet.told("db-1", Reported::Up);
        fleet.told("db-2", Reported::Down);
        // A switchover: db-2 promoted, db-3 re-pointed to it, db-1 still writable.
        fleet.later(Duration::from_secs(1));
        fleet.publish("db-2", mariadb(2, true, None));
        fleet.publish("db-3", mariadb(3, false, Some(2)));
        // db-2 polls first: db-1 still holds the place.
        assert_eq!(fleet.place("db-2"), Some(Place::Waiting("db-1".into())));
        fleet.publish("db-1", mariadb(1, true, None));
        let out = fleet.place("db-1");
        assert!(matches!(out, Some(Place::NotTheWriter { .. })), "{out:?}");
        // db-1 is out, but HAProxy was last told it is up.
        assert_eq!(fleet.place("db-2"), Some(Place::Waiting("db-1".into())));
        fleet.later(Duration::from_secs(1));
        fleet.told("db-1", answer(&out));
        assert_eq!(fleet.place("db-2"), Some(Place::Writer));
        // And now db-1, should it be named writer again, waits for db-2.
        fleet.told("db-2", Reported::Up);
        fleet.publish("db-3", mariadb(3, false, Some(1)));
        assert_eq!(fleet.place("db-1"), Some(Place::Waiting("db-2".into())));
    }

    #[test]
    fn a_holder_whose_poller_stopped_publishing_holds_nothing_once_told_out() {
        let mut fleet = Fleet::new(&["db-1", "db-2"]);
        fleet.publish("db-1", mariadb(1, true, None));
        fleet.publish("db-2", mariadb(2, false, Some(1)));
        assert_eq!(fleet.place("db-1"), Some(Place::Writer));
        // db-1's poller hangs; its readers answer stale (down).
        fleet.later(FRESH + Duration::from_secs(1));
        fleet.told("db-1", Reported::Down);
        fleet.publish("db-2", mariadb(2, true, None));
        assert_eq!(fleet.place("db-2"), Some(Place::Writer));
    }

    #[test]
    fn a_failed_poll_keeps_the_identity_so_its_replicas_still_name_it() {
        let fleet = Fleet::new(&["db-1", "db-2", "db-3"]);
        fleet.publish("db-1", mariadb(1, true, None));
        fleet.publish("db-3", mariadb(3, false, Some(1)));
        fleet.publish("db-1", Facts::Unknown { last: None });
        fleet.publish("db-2", mariadb(2, true, None));
        assert_eq!(fleet.place("db-2"), Some(Place::Writer));
        assert_eq!(
            fleet.place("db-3"),
            Some(Place::FollowsElsewhere {
                source: "db-1".into(),
                through: None,
                writer: "db-2".into(),
            })
        );
        assert_eq!(fleet.clusters.topology().clusters.len(), 1);
    }

    #[test]
    fn the_writer_lost_is_remembered_until_another_takes_writes() {
        let fleet = Fleet::new(&["db-1", "db-2", "db-3"]);
        fleet.publish("db-1", mariadb(1, true, None));
        fleet.publish("db-2", mariadb(2, false, Some(1)));
        fleet.publish("db-3", mariadb(3, false, Some(9)));
        assert!(matches!(
            fleet.place("db-3"),
            Some(Place::FollowsElsewhere { .. })
        ));
        // The writer dies: its replica serves on, the one elsewhere stays out.
        fleet.publish("db-1", Facts::Unknown { last: None });
        assert_eq!(fleet.place("db-2"), Some(Place::FollowsWriter));
        assert!(matches!(
            fleet.place("db-3"),
            Some(Place::FollowsElsewhere { .. })
        ));
        // db-2 promoted: the new writer places them.
        fleet.publish("db-2", mariadb(2, true, None));
        assert_eq!(fleet.place("db-2"), Some(Place::Writer));
        // db-2 made read-only again: nobody writes, and db-1, gone, is no
        // longer remembered as the writer.
        fleet.publish("db-2", mariadb(2, false, None));
        assert_eq!(fleet.place("db-3"), Some(Place::Aside));
    }

    #[test]
    fn a_forgotten_target_leaves_its_cluster_and_its_links() {
        let fleet = Fleet::new(&["db-1", "db-2"]);
        let unnamed = |name, facts| {
            (fleet.clusters).publish(name, None, facts, Vec::new(), (fleet.now, FRESH));
        };
        unnamed("db-1", mariadb(1, true, None));
        unnamed("db-2", mariadb(2, false, Some(1)));
        assert_eq!(fleet.place("db-2"), Some(Place::FollowsWriter));
        unnamed("db-2", mariadb(2, true, None));
        // Remembered: db-2 followed db-1, so both are one cluster with no writer.
        assert!(matches!(fleet.place("db-2"), Some(Place::NoWriter { .. })));
        fleet.clusters.forget("db-1");
        assert_eq!(fleet.place("db-2"), Some(Place::Writer));
        assert_eq!(fleet.place("db-1"), None);
    }
}
