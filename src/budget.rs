//! `pools.NAME.keep_up`: a pool-wide depool budget. One remora that sees a
//! whole pool can refuse to take out more replicas than the pool can lose:
//! lag alone may take a target out only while at least `keep_up` of the
//! pool's targets stay up; when more would go, the least lagged stay in at
//! the pool's `min_weight`, saying so. Faults (unreachable, a broken SQL
//! thread, not a replica, maintenance, …) are never overridden.
//!
//! Each target's poller decides for itself, as it publishes, under the
//! pool's [`Board`] lock, from what every other member last published: it
//! may go out only while enough others are up without it, and it takes a
//! kept place from a more lagged target that holds one. A target kept up
//! hands its place back at its next poll once it is not needed. So the
//! kept answer is computed once, by the writer, and every reader (agent,
//! `/status`, `/health`, metrics, history) shows the same one.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::answer::{Answer, Reported};
use crate::config::{Config, Percent};
use crate::policy::{State, Verdict};
use crate::reason::Reason;

/// What a member's own verdict says, before the budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Standing {
    Up,
    /// Out (drain or down) because of its lag alone.
    LaggingOut(Duration),
    /// Out for anything else: never overridden.
    Fault,
}

impl Standing {
    /// A lag only estimated (an IO thread error, a stopped SQL thread,
    /// stale Aurora rows) means replication is broken: a fault, not lag.
    pub fn of(answer: &Answer) -> Standing {
        match (answer.reported, &answer.cause) {
            (Reported::Up, _) => Standing::Up,
            (Reported::Drain | Reported::Down, Reason::Lag { lag, .. }) if !lag.is_estimated() => {
                Standing::LaggingOut(lag.value)
            }
            _ => Standing::Fault,
        }
    }
}

/// What a member last published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    pub standing: Standing,
    /// Kept up by the budget (its own verdict was [`Standing::LaggingOut`]).
    pub kept: bool,
    /// A member of the pool: HAProxy asked about it for this pool lately,
    /// or `member_of` lists the pool.
    pub member: bool,
    /// When it published this.
    pub at: Instant,
    /// How long what it published stands: its `poll.stale_after`. A member
    /// that has not published since (its poller stuck) counts for nothing.
    pub fresh_for: Duration,
}

impl Published {
    fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.at) <= self.fresh_for
    }

    fn kept_lag(&self) -> Option<Duration> {
        match (self.kept, self.standing) {
            (true, Standing::LaggingOut(lag)) => Some(lag),
            _ => None,
        }
    }
}

/// Whether member `name`, whose own verdict is out by `lag`, stays up:
/// when fewer than `keep_up` of the others are up without it, counting a
/// kept member only if it has the better claim (less lag; on a tie, the
/// name first in order), and none that has not published lately. A more
/// lagged member kept up hands its place back at its next poll, seeing this
/// one up. Going out therefore always leaves `keep_up` others up.
pub fn stays_up(
    (lag, name): (Duration, &str),
    others: &BTreeMap<String, Published>,
    keep_up: usize,
    now: Instant,
) -> bool {
    let firmly_up = (others.iter())
        .filter(|(other, published)| *other != name && published.member)
        .filter(|(_, published)| published.is_fresh(now))
        .filter(|(other, published)| match published.kept_lag() {
            Some(kept) => (kept, other.as_str()) < (lag, name),
            None => published.standing == Standing::Up,
        })
        .count();
    firmly_up < keep_up
}

/// One pool's members as they last published, by target.
#[derive(Debug, Default)]
pub struct Board {
    members: Mutex<BTreeMap<String, Published>>,
}

/// A pool's budget and its board.
#[derive(Debug)]
struct Budget {
    keep_up: usize,
    min_weight: Percent,
    board: Board,
}

/// The pools with a budget, by name. Shared by every target's poller;
/// a reload sets the budgets anew and keeps the boards.
#[derive(Debug, Default)]
pub struct Boards {
    pools: RwLock<BTreeMap<String, Budget>>,
}

impl Boards {
    /// The budgets `config`'s pools set (none without targets).
    pub fn of(config: &Config) -> Boards {
        let boards = Boards::default();
        boards.configure(config);
        boards
    }

    /// Sets the budgets `config`'s pools have now; a pool that keeps one
    /// keeps its board.
    pub fn configure(&self, config: &Config) {
        let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
        pools.retain(|name, _| config.pools.get(name).is_some_and(|p| p.keep_up.is_some()));
        for (name, pool) in &config.pools {
            if let Some(keep_up) = pool.keep_up {
                let min_weight = pool.policy(&config.policy).min_weight;
                let budget = pools.entry(name.clone()).or_insert_with(|| Budget {
                    keep_up,
                    min_weight,
                    board: Board::default(),
                });
                (budget.keep_up, budget.min_weight) = (keep_up, min_weight);
            }
        }
    }

    /// Whether `pool` has a budget.
    pub fn has(&self, pool: &str) -> bool {
        let pools = self.pools.read().unwrap_or_else(PoisonError::into_inner);
        pools.contains_key(pool)
    }

    /// Target `name`'s answer for `pool` under the budget: its own, or
    /// kept up. Records what it publishes for the other members to see,
    /// standing for `fresh_for` from `now`.
    pub fn publish(
        &self,
        pool: &str,
        (name, member): (&str, bool),
        own: &Answer,
        (now, fresh_for): (Instant, Duration),
    ) -> Option<Answer> {
        let pools = self.pools.read().unwrap_or_else(PoisonError::into_inner);
        let Budget {
            keep_up,
            min_weight,
            board,
        } = pools.get(pool)?;
        let standing = Standing::of(own);
        let mut members = board.members.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = match standing {
            Standing::LaggingOut(lag) => member && stays_up((lag, name), &members, *keep_up, now),
            Standing::Up | Standing::Fault => false,
        };
        let others: Vec<Published> = (members.iter())
            .filter(|(other, _)| *other != name)
            .map(|(_, published)| *published)
            .collect();
        members.insert(
            name.to_owned(),
            Published {
                standing,
                kept,
                member,
                at: now,
                fresh_for,
            },
        );
        let Standing::LaggingOut(lag) = standing else {
            return None;
        };
        if !kept {
            return None;
        }
        let pool_members = others.iter().filter(|other| other.member).count() + 1;
        let out = 1
            + (others.iter())
                .filter(|other| {
                    other.member && (other.standing != Standing::Up || !other.is_fresh(now))
                })
                .count();
        let weight = u8::try_from(min_weight.0.clamp(1, 100)).unwrap_or(100);
        let reason = Reason::KeptUp {
            lag,
            out,
            of: pool_members,
        };
        Some(Answer::of(&Verdict::new(State::Up(weight), reason)))
    }

    /// Target `name` is no longer watched: it leaves every board.
    pub fn forget(&self, name: &str) {
        let pools = self.pools.read().unwrap_or_else(PoisonError::into_inner);
        for budget in pools.values() {
            let mut members = (budget.board.members.lock()).unwrap_or_else(PoisonError::into_inner);
            members.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::tests::lag as lag_reason;

    fn seconds(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Every member's `poll.stale_after` here.
    const FRESH: Duration = Duration::from_secs(5);

    /// When the tests' members publish.
    fn start() -> Instant {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *START.get_or_init(Instant::now)
    }

    fn published(standing: Standing, kept: bool) -> Published {
        Published {
            standing,
            kept,
            member: true,
            at: start(),
            fresh_for: FRESH,
        }
    }

    /// `name`, a member, publishes `own` at the tests' one instant.
    fn publish(boards: &Boards, pool: &str, name: &str, own: &Answer) -> Option<Answer> {
        boards.publish(pool, (name, true), own, (start(), FRESH))
    }

    fn up() -> Published {
        published(Standing::Up, false)
    }

    fn out(lag: u64, kept: bool) -> Published {
        published(Standing::LaggingOut(seconds(lag)), kept)
    }

    fn fault() -> Published {
        published(Standing::Fault, false)
    }

    fn others(members: &[Published]) -> BTreeMap<String, Published> {
        (members.iter().enumerate())
            .map(|(i, published)| (format!("other{i}"), *published))
            .collect()
    }

    #[test]
    fn lag_takes_a_target_out_only_while_enough_others_stay_up() {
        let me = (seconds(40), "me");
        assert!(!stays_up(me, &others(&[up(), up()]), 2, start()));
        assert!(stays_up(me, &others(&[up(), out(50, false)]), 2, start()));
        assert!(
            stays_up(me, &others(&[up(), fault()]), 2, start()),
            "faults count as out"
        );
        // A more lagged member kept up does not count: it will make way.
        assert!(stays_up(me, &others(&[up(), out(50, true)]), 2, start()));
        assert!(stays_up(
            me,
            &others(&[up(), up(), out(50, true)]),
            3,
            start()
        ));
        // A less lagged one does.
        assert!(!stays_up(me, &others(&[up(), out(30, true)]), 2, start()));
        // On equal lag, the name first in order has the better claim.
        assert!(!stays_up(
            (seconds(40), "zed"),
            &others(&[up(), out(40, true)]),
            2,
            start()
        ));
        assert!(stays_up(
            (seconds(40), "a"),
            &others(&[up(), out(40, true)]),
            2,
            start()
        ));
        // Targets HAProxy does not ask about for this pool are not its members.
        let stranger = Published {
            member: false,
            ..up()
        };
        assert!(stays_up(me, &others(&[up(), stranger]), 2, start()));
        // Its own earlier entry is not one of the others.
        let mut with_self = others(&[up()]);
        with_self.insert("me".into(), up());
        assert!(stays_up(me, &with_self, 2, start()));
    }

    #[test]
    fn a_member_that_stopped_publishing_counts_for_nothing() {
        let me = (seconds(40), "me");
        let later = start() + FRESH;
        assert!(
            !stays_up(me, &others(&[up(), up()]), 2, later),
            "fresh to the end"
        );
        // Its poller stuck: its last word, up, no longer holds.
        let much_later = start() + FRESH + seconds(1);
        assert!(stays_up(me, &others(&[up(), up()]), 2, much_later));
        // One that published since counts; one alone is not two.
        let fresh = Published {
            at: much_later,
            ..up()
        };
        assert!(stays_up(me, &others(&[fresh, up()]), 2, much_later));
        assert!(!stays_up(me, &others(&[fresh, fresh]), 2, much_later));
    }

    fn answer(state: State, reason: Reason) -> Answer {
        Answer::of(&Verdict::new(state, reason))
    }

    fn boards(keep_up: usize) -> Boards {
        let config = Config::from_yaml(&format!(
            "targets: {{a: {{mysql: {{host: a}}}}}}\npools: {{main: {{keep_up: {keep_up}, min_weight: 20%}}}}"
        ))
        .expect("valid");
        Boards::of(&config)
    }

    #[test]
    fn the_least_lagged_stay_in_at_min_weight_saying_why() {
        let boards = boards(2);
        let healthy = answer(State::Up(100), Reason::None);
        for name in ["r1", "r2", "r3"] {
            assert_eq!(publish(&boards, "main", name, &healthy), None);
        }
        // r1 and r2 fall behind past drain_at; r3 stays up.
        let r1 = answer(State::Drain, lag_reason(41.0));
        assert_eq!(
            publish(&boards, "main", "r1", &r1).map(|a| a.text().to_owned()),
            None,
            "r2 and r3 are still up: r1 may go"
        );
        let r2 = answer(State::Drain, lag_reason(70.0));
        let kept = publish(&boards, "main", "r2", &r2).expect("kept");
        assert_eq!(
            kept.text(),
            "up ready 20% #kept up: lag 70.0s (2 of 3 would be out)"
        );
        // r1, less lagged, takes the place at its next poll; r2 hands it back.
        let r1_kept = publish(&boards, "main", "r1", &r1).expect("kept");
        assert_eq!(
            r1_kept.text(),
            "up ready 20% #kept up: lag 41.0s (2 of 3 would be out)"
        );
        assert_eq!(publish(&boards, "main", "r2", &r2), None);
        // A fault is never overridden, whatever the budget.
        let broken = answer(
            State::Down,
            Reason::Role(crate::reason::Mismatch::NotReplica),
        );
        assert_eq!(publish(&boards, "main", "r3", &broken), None);
        // Pools without a budget are left alone.
        assert_eq!(publish(&boards, "other", "r2", &r2), None);
    }

    #[test]
    fn a_lag_that_is_only_estimated_is_a_fault_and_never_kept_up() {
        use crate::reason::tests::lag_of;
        let boards = boards(2);
        let healthy = answer(State::Up(100), Reason::None);
        for name in ["r1", "r2", "r3"] {
            publish(&boards, "main", name, &healthy);
        }
        let measured = answer(State::Drain, lag_reason(41.0));
        publish(&boards, "main", "r1", &measured);
        // r2's IO thread fails with 1236: its lag is a guess that grows;
        // replication is broken, and keep_up never keeps a fault.
        let estimated = answer(
            State::Down,
            lag_of(70.0, Some("io thread error 1236 (lag growing since)")),
        );
        assert_eq!(Standing::of(&estimated), Standing::Fault);
        assert_eq!(publish(&boards, "main", "r2", &estimated), None);
        // r1, measured, is the one kept.
        assert!(publish(&boards, "main", "r1", &measured).is_some());
    }

    /// Rounds of polls in any order, with any lags: once every member has
    /// polled since the last change, at least `keep_up` members that are
    /// not at fault are up (or all of them, if fewer), and the members kept
    /// up are the least lagged of those out by lag.
    #[test]
    fn after_a_round_the_budget_holds_and_keeps_the_least_lagged() {
        use proptest::prelude::*;
        let scenario = (
            1usize..5,
            prop::collection::vec(prop_oneof![Just(None), (1u64..600).prop_map(Some)], 2..8),
            prop::collection::vec(0usize..8, 0..40),
        );
        // Seeds of past failures live beside this file
        // (src/budget.proptest-regressions), not at the top of the repository.
        let config = ProptestConfig {
            failure_persistence: Some(Box::new(
                prop::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
            )),
            ..ProptestConfig::default()
        };
        proptest!(config, |((keep_up, lags, order) in scenario)| {
            let boards = boards(keep_up);
            let names: Vec<String> = (0..lags.len()).map(|i| format!("t{i}")).collect();
            let own = |i: usize| match lags[i] {
                None => answer(State::Up(100), Reason::None),
                Some(lag) => answer(State::Drain, lag_reason(lag as f64)),
            };
            let mut published: Vec<bool> = vec![true; lags.len()];
            // Some polls in a random order, then two full rounds.
            let rounds = (0..lags.len()).chain(0..lags.len());
            for i in order.into_iter().filter(|i| *i < lags.len()).chain(rounds) {
                let kept = publish(&boards, "main", &names[i], &own(i));
                published[i] = lags[i].is_none() || kept.is_some();
            }
            let up = published.iter().filter(|up| **up).count();
            prop_assert!(up >= keep_up.min(lags.len()), "{up} up of {lags:?}, keep_up {keep_up}");
            let mut out_by_lag: Vec<u64> = lags.iter().flatten().copied().collect();
            out_by_lag.sort_unstable();
            let healthy = lags.iter().filter(|lag| lag.is_none()).count();
            let kept_wanted = keep_up.saturating_sub(healthy).min(out_by_lag.len());
            let mut kept_lags: Vec<u64> = (0..lags.len())
                .filter(|i| lags[*i].is_some() && published[*i])
                .filter_map(|i| lags[i])
                .collect();
            kept_lags.sort_unstable();
            prop_assert_eq!(kept_lags.len(), kept_wanted);
            prop_assert_eq!(&kept_lags[..], &out_by_lag[..kept_wanted]);
        });
    }
}
