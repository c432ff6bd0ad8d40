//! Who asks: the agent checks answered for a pool, counted by what was
//! reported, and the HAProxy peers that sent them. A dead or misconfigured
//! HAProxy polls nobody, and an agent that only answers would never notice;
//! this is what lets `/status`, `/metrics` and an alert say that a HAProxy
//! stopped asking.
//!
//! Shared across snapshots and reloads (the agent's thread records, the
//! HTTP thread reads), so counts only grow and peers are remembered across
//! polls. Bounded: at most [`MAX_PEERS`] peers, each forgotten
//! [`PEER_MEMORY`] after it last asked, the least recent first when full.
//!
//! The record says when it cannot be trusted to be whole, so that nobody
//! (`remora ctl drain --wait`) reads "every HAProxy was told" into it on a
//! guess: when it had to forget a peer that was still asking to make room
//! ([`Checks::is_crowded`]: more HAProxies than it holds, or spoofed
//! addresses pushing the real ones out), and when one address checks at
//! more than one rhythm ([`Peer::is_several`]: several HAProxies behind
//! one address, SNAT, or several server lines of one HAProxy asking for
//! the same pool).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::answer::Reported;

/// Peers remembered per pool at most: a HAProxy sidecar in each of a
/// thousand application pods fits.
pub const MAX_PEERS: usize = 1024;
/// A peer that has not asked for this long is forgotten.
pub const PEER_MEMORY: Duration = Duration::from_secs(600);
/// A peer is silent once it has missed this many of its own intervals...
const MISSED_INTERVALS: u32 = 3;
/// ...and at least this long has passed: scheduling noise is not silence.
const SILENT_AT_LEAST: Duration = Duration::from_secs(1);
/// Before its second check a peer's pace is unknown: silent after this.
const SILENT_UNPACED: Duration = Duration::from_secs(60);
/// The gaps between a peer's latest checks that its rhythm is read from.
const RECENT_GAPS: usize = 8;
/// One HAProxy checks a server every `inter`, give or take `spread-checks`
/// (commonly 0 to 5%; up to 33% keeps gaps within 1:2): a longest recent
/// gap more than this many times the shortest is more than one asker at
/// this address. Erring this way fails a `--wait` closed; the other way
/// would report a drain acknowledged that was not.
const ONE_RHYTHM: u32 = 2;

/// The checks one pool answered, and who sent them.
#[derive(Debug, Default)]
pub struct Checks {
    answered: [AtomicU64; Reported::ALL.len()],
    record: Mutex<Record>,
}

/// The peers heard lately, by address.
#[derive(Debug, Default)]
struct Record {
    peers: HashMap<IpAddr, Peer>,
    /// When a peer still within [`PEER_MEMORY`] was last forgotten to make
    /// room.
    crowded_at: Option<Instant>,
}

/// One HAProxy (by source address) that asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peer {
    pub address: IpAddr,
    /// When it first asked, as far as remora remembers.
    pub first_at: Instant,
    pub last_at: Instant,
    /// `last_at` on the wall clock, for people.
    pub last_wall: SystemTime,
    pub checks: u64,
    /// What it was told last.
    pub last_reported: Reported,
    /// When it was first told `last_reported` (since it was told anything else).
    pub told_since: Instant,
    /// `told_since` on the wall clock, for people.
    pub told_wall: SystemTime,
    /// The gaps before its latest checks, in milliseconds, newest at
    /// `checks % RECENT_GAPS`.
    gaps: [u32; RECENT_GAPS],
}

impl Checks {
    /// Counts one answered check; `peer` is who asked, when known.
    pub fn record(&self, reported: Reported, peer: Option<IpAddr>, now: Instant) {
        self.answered[reported as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(address) = peer {
            let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
            record.heard(address, reported, now, SystemTime::now());
        }
    }

    /// Checks answered with `reported` so far.
    pub fn get(&self, reported: Reported) -> u64 {
        self.answered[reported as usize].load(Ordering::Relaxed)
    }

    /// The peers that asked within [`PEER_MEMORY`] of `now`, the most
    /// recent first.
    pub fn peers(&self, now: Instant) -> Vec<Peer> {
        let record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        let mut recent: Vec<Peer> = (record.peers.values())
            .filter(|peer| !peer.is_forgotten(now))
            .copied()
            .collect();
        recent.sort_by_key(|peer| std::cmp::Reverse(peer.last_at));
        recent
    }

    /// Whether a peer that was still asking had to be forgotten to make
    /// room within [`PEER_MEMORY`] of `now`: the record is not whole, and
    /// who was told what cannot be read from it.
    pub fn is_crowded(&self, now: Instant) -> bool {
        let record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        record
            .crowded_at
            .is_some_and(|at| now.saturating_duration_since(at) <= PEER_MEMORY)
    }
}

impl Record {
    /// Notes a check from `address`, forgetting whoever is due first.
    fn heard(&mut self, address: IpAddr, reported: Reported, now: Instant, wall: SystemTime) {
        if let Some(peer) = self.peers.get_mut(&address) {
            peer.heard(reported, now, wall);
            return;
        }
        if self.peers.len() >= MAX_PEERS {
            self.peers.retain(|_, peer| !peer.is_forgotten(now));
        }
        if self.peers.len() >= MAX_PEERS
            && let Some(oldest) = (self.peers.values())
                .min_by_key(|peer| peer.last_at)
                .map(|peer| peer.address)
        {
            self.peers.remove(&oldest);
            self.crowded_at = Some(now);
        }
        self.peers.insert(
            address,
            Peer {
                address,
                first_at: now,
                last_at: now,
                last_wall: wall,
                checks: 1,
                last_reported: reported,
                told_since: now,
                told_wall: wall,
                gaps: [0; RECENT_GAPS],
            },
        );
    }
}

impl Peer {
    fn heard(&mut self, reported: Reported, now: Instant, wall: SystemTime) {
        let gap = now.saturating_duration_since(self.last_at).as_millis();
        self.gaps[(self.checks % RECENT_GAPS as u64) as usize] =
            u32::try_from(gap).unwrap_or(u32::MAX);
        self.last_at = now;
        self.last_wall = wall;
        self.checks += 1;
        if reported != self.last_reported {
            self.told_since = now;
            self.told_wall = wall;
        }
        self.last_reported = reported;
    }

    /// Whether a HAProxy at this address may still hold `up` for the pool:
    /// it was told up last; or several ask from this address, and not all
    /// of them need have asked since it was told otherwise (less than its
    /// longest recent gap ago).
    pub fn may_hold_up(&self, now: Instant) -> bool {
        if self.last_reported == Reported::Up {
            return true;
        }
        let longest = self.gaps.iter().max().copied().unwrap_or(0);
        self.is_several()
            && now.saturating_duration_since(self.told_since)
                <= Duration::from_millis(u64::from(longest))
    }

    /// Its own pace: the mean time between its checks, once it has sent two.
    pub fn interval(&self) -> Option<Duration> {
        let gaps = u32::try_from(self.checks.checked_sub(1)?).unwrap_or(u32::MAX);
        (gaps > 0).then(|| self.last_at.saturating_duration_since(self.first_at) / gaps)
    }

    /// Whether its latest checks come at more than one rhythm: the longest
    /// of its last [`RECENT_GAPS`] gaps is over [`ONE_RHYTHM`] times the
    /// shortest. One HAProxy asking about one server keeps one rhythm; two
    /// behind one address interleave theirs (unless their phases happen
    /// to split the interval evenly, which no record can tell from one).
    pub fn is_several(&self) -> bool {
        if self.checks <= RECENT_GAPS as u64 {
            return false;
        }
        let shortest = self.gaps.iter().min().copied().unwrap_or(0);
        let longest = self.gaps.iter().max().copied().unwrap_or(0);
        u64::from(longest) > u64::from(shortest) * u64::from(ONE_RHYTHM)
    }

    /// Not heard from for [`MISSED_INTERVALS`] of its own intervals (at
    /// least a second); a minute, while its pace is unknown.
    pub fn is_silent(&self, now: Instant) -> bool {
        let limit = match self.interval() {
            Some(interval) => (interval * MISSED_INTERVALS).max(SILENT_AT_LEAST),
            None => SILENT_UNPACED,
        };
        now.saturating_duration_since(self.last_at) > limit
    }

    fn is_forgotten(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_at) > PEER_MEMORY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn haproxy(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
    }

    /// One HAProxy told down holds nothing; several behind one address
    /// may, until the longest of their recent gaps has passed since.
    #[tokio::test(start_paused = true)]
    async fn who_may_still_hold_a_server_up() {
        let checks = Checks::default();
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        // 127.0.0.1: one HAProxy, every second. 127.0.0.2: two, at 0 and
        // 100 ms of every second (gaps of 100 and 900 ms).
        for second in 0..10 {
            checks.record(Reported::Up, haproxy(1), at(second * 1000));
            checks.record(Reported::Up, haproxy(2), at(second * 1000));
            checks.record(Reported::Up, haproxy(2), at(second * 1000 + 100));
        }
        let peer = |last: u8, now: Instant| {
            let peers = checks.peers(now);
            *(peers.iter())
                .find(|peer| Some(peer.address) == haproxy(last))
                .unwrap()
        };
        assert!(peer(1, at(10_000)).may_hold_up(at(10_000)));
        checks.record(Reported::Down, haproxy(1), at(10_000));
        checks.record(Reported::Down, haproxy(2), at(10_000));
        assert!(!peer(1, at(10_000)).may_hold_up(at(10_000)));
        assert!(peer(2, at(10_000)).is_several());
        // The other behind 127.0.0.2 may not have asked since.
        assert!(peer(2, at(10_500)).may_hold_up(at(10_500)));
        assert!(!peer(2, at(11_000)).may_hold_up(at(11_000)));
    }

    #[tokio::test(start_paused = true)]
    async fn each_haproxy_is_remembered_with_its_count_and_last_answer() {
        let checks = Checks::default();
        let start = Instant::now();
        for second in 0..5 {
            let at = start + Duration::from_secs(second);
            checks.record(Reported::Up, haproxy(1), at);
            checks.record(Reported::Up, haproxy(2), at);
        }
        let later = start + Duration::from_millis(4_500);
        checks.record(Reported::Drain, haproxy(2), later);
        checks.record(Reported::Drain, None, later);
        let peers = checks.peers(later);
        assert_eq!(peers.len(), 2, "{peers:?}");
        assert_eq!(peers[0].address, haproxy(2).unwrap());
        assert_eq!(
            (peers[0].checks, peers[0].last_reported),
            (6, Reported::Drain)
        );
        assert_eq!((peers[1].checks, peers[1].last_reported), (5, Reported::Up));
        assert_eq!(peers[1].interval(), Some(Duration::from_secs(1)));
        assert_eq!(
            (checks.get(Reported::Up), checks.get(Reported::Drain)),
            (10, 2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_haproxy_that_stops_asking_falls_silent_after_three_of_its_intervals() {
        let checks = Checks::default();
        let start = Instant::now();
        for second in 0..4 {
            checks.record(
                Reported::Up,
                haproxy(1),
                start + Duration::from_secs(2 * second),
            );
        }
        let last = start + Duration::from_secs(6);
        let peer = checks.peers(last)[0];
        assert!(!peer.is_silent(last + Duration::from_secs(6)));
        assert!(peer.is_silent(last + Duration::from_millis(6_001)));
        // One check says nothing of its pace: a minute.
        let once = Checks::default();
        once.record(Reported::Up, haproxy(9), start);
        let peer = once.peers(start)[0];
        assert!(!peer.is_silent(start + Duration::from_secs(60)));
        assert!(peer.is_silent(start + Duration::from_secs(61)));
    }

    /// The `n`th of many HAProxies, each at its own address.
    fn one_of_many(n: usize) -> Option<IpAddr> {
        let [_, _, high, low] = (n as u32).to_be_bytes();
        Some(IpAddr::V4(Ipv4Addr::new(10, 1, high, low)))
    }

    #[tokio::test(start_paused = true)]
    async fn peers_are_bounded_and_forgotten_oldest_first() {
        let checks = Checks::default();
        let start = Instant::now();
        for i in 0..=MAX_PEERS {
            let at = start + Duration::from_millis(i as u64);
            checks.record(Reported::Up, one_of_many(i), at);
        }
        let now = start + Duration::from_secs(1);
        let peers = checks.peers(now);
        assert_eq!(peers.len(), MAX_PEERS);
        assert!(!peers.iter().any(|p| Some(p.address) == one_of_many(0)));
        assert!(
            peers
                .iter()
                .any(|p| Some(p.address) == one_of_many(MAX_PEERS))
        );
        assert!(checks.is_crowded(now), "one still asking was forgotten");
        let much_later = start + PEER_MEMORY + Duration::from_secs(2);
        assert!(checks.peers(much_later).is_empty());
        assert!(!checks.is_crowded(much_later), "and that too is forgotten");
        checks.record(Reported::Up, haproxy(200), much_later);
        assert_eq!(checks.peers(much_later).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn more_haproxies_than_the_record_holds_make_it_crowded_not_empty() {
        // A sidecar HAProxy in each of MAX_PEERS + 1 pods, all checking
        // every 2 s: each is forgotten before its second check would have
        // given it a pace, and the record says it is not whole.
        let checks = Checks::default();
        let start = Instant::now();
        let every = Duration::from_secs(2);
        let pods = MAX_PEERS + 1;
        for round in 0..3u32 {
            for pod in 0..pods {
                let at = start + every * round + every.mul_f64(pod as f64 / pods as f64);
                checks.record(Reported::Up, one_of_many(pod), at);
            }
        }
        let now = start + every * 3;
        assert!(checks.is_crowded(now));
        // Peers that have room are not crowded, however many checks.
        let few = Checks::default();
        for round in 0..3u32 {
            for pod in 0..64 {
                few.record(Reported::Up, one_of_many(pod), start + every * round);
            }
        }
        assert!(!few.is_crowded(now));
    }

    #[tokio::test(start_paused = true)]
    async fn two_haproxies_behind_one_address_check_at_two_rhythms() {
        let start = Instant::now();
        let every = Duration::from_secs(2);
        let alone = Checks::default();
        let shared = Checks::default();
        for round in 0..10u32 {
            let at = start + every * round;
            // One HAProxy, a few milliseconds of scheduling noise.
            alone.record(
                Reported::Up,
                haproxy(1),
                at + Duration::from_millis(u64::from(round % 3) * 7),
            );
            // Two behind one SNAT address, 300 ms apart in phase.
            shared.record(Reported::Up, haproxy(2), at);
            shared.record(Reported::Up, haproxy(2), at + Duration::from_millis(300));
        }
        let now = start + every * 10;
        assert!(!alone.peers(now)[0].is_several());
        let peer = shared.peers(now)[0];
        assert!(peer.is_several(), "{peer:?}");
        // HAProxy's spread-checks (30% here) keeps one rhythm.
        let spread = Checks::default();
        let mut at = start;
        for gap in [
            1400u64, 1500, 2500, 2600, 1450, 2000, 1700, 2300, 1400, 2600,
        ] {
            at += Duration::from_millis(gap);
            spread.record(Reported::Up, haproxy(3), at);
        }
        assert!(!spread.peers(at)[0].is_several());
    }
}
