//! Who asks: the agent checks answered for a pool, counted by what was
//! reported, and the HAProxy peers that sent them. A dead or misconfigured
//! HAProxy polls nobody, and an agent that only answers would never notice;
//! this is what lets `/status`, `/metrics` and an alert say that a HAProxy
//! stopped asking.
//!
//! Shared across snapshots and reloads (the agent's thread records, the
//! HTTP thread reads), so counts only grow and peers are remembered across
//! polls. Bounded: at most [`MAX_PEERS`] peers, each forgotten
//! [`PEER_MEMORY`] after it last asked, the oldest first when full.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::answer::Reported;

/// Peers remembered per pool at most.
pub const MAX_PEERS: usize = 64;
/// A peer that has not asked for this long is forgotten.
pub const PEER_MEMORY: Duration = Duration::from_secs(600);
/// A peer is silent once it has missed this many of its own intervals...
const MISSED_INTERVALS: u32 = 3;
/// ...and at least this long has passed: scheduling noise is not silence.
const SILENT_AT_LEAST: Duration = Duration::from_secs(1);
/// Before its second check a peer's pace is unknown: silent after this.
const SILENT_UNPACED: Duration = Duration::from_secs(60);

/// The checks one pool answered, and who sent them.
#[derive(Debug, Default)]
pub struct Checks {
    answered: [AtomicU64; Reported::ALL.len()],
    peers: Mutex<Vec<Peer>>,
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
}

impl Checks {
    /// Counts one answered check; `peer` is who asked, when known.
    pub fn record(&self, reported: Reported, peer: Option<IpAddr>, now: Instant) {
        self.answered[reported as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(address) = peer {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            heard(&mut peers, address, reported, now, SystemTime::now());
        }
    }

    /// Checks answered with `reported` so far.
    pub fn get(&self, reported: Reported) -> u64 {
        self.answered[reported as usize].load(Ordering::Relaxed)
    }

    /// The peers that asked within [`PEER_MEMORY`] of `now`, the most
    /// recent first.
    pub fn peers(&self, now: Instant) -> Vec<Peer> {
        let peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut recent: Vec<Peer> = (peers.iter())
            .filter(|peer| !peer.is_forgotten(now))
            .copied()
            .collect();
        recent.sort_by_key(|peer| std::cmp::Reverse(peer.last_at));
        recent
    }
}

/// Notes a check from `address`, forgetting whoever is due first.
fn heard(
    peers: &mut Vec<Peer>,
    address: IpAddr,
    reported: Reported,
    now: Instant,
    wall: SystemTime,
) {
    peers.retain(|peer| !peer.is_forgotten(now));
    if let Some(peer) = peers.iter_mut().find(|peer| peer.address == address) {
        peer.last_at = now;
        peer.last_wall = wall;
        peer.checks += 1;
        peer.last_reported = reported;
        return;
    }
    if peers.len() >= MAX_PEERS
        && let Some(oldest) = (peers.iter().enumerate())
            .min_by_key(|(_, peer)| peer.last_at)
            .map(|(i, _)| i)
    {
        peers.swap_remove(oldest);
    }
    peers.push(Peer {
        address,
        first_at: now,
        last_at: now,
        last_wall: wall,
        checks: 1,
        last_reported: reported,
    });
}

impl Peer {
    /// Its own pace: the mean time between its checks, once it has sent two.
    pub fn interval(&self) -> Option<Duration> {
        let gaps = u32::try_from(self.checks.checked_sub(1)?).unwrap_or(u32::MAX);
        (gaps > 0).then(|| self.last_at.saturating_duration_since(self.first_at) / gaps)
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

    #[tokio::test(start_paused = true)]
    async fn peers_are_bounded_and_forgotten_oldest_first() {
        let checks = Checks::default();
        let start = Instant::now();
        for i in 0..=MAX_PEERS {
            let at = start + Duration::from_millis(i as u64);
            checks.record(Reported::Up, haproxy(i as u8), at);
        }
        let now = start + Duration::from_secs(1);
        let peers = checks.peers(now);
        assert_eq!(peers.len(), MAX_PEERS);
        assert!(!peers.iter().any(|p| Some(p.address) == haproxy(0)));
        assert!(
            peers
                .iter()
                .any(|p| Some(p.address) == haproxy(MAX_PEERS as u8))
        );
        let much_later = start + PEER_MEMORY + Duration::from_secs(2);
        assert!(checks.peers(much_later).is_empty());
        checks.record(Reported::Up, haproxy(200), much_later);
        assert_eq!(checks.peers(much_later).len(), 1);
    }
}
