//! Whether a replica is catching up or falling behind: the slope of its
//! measured lag over the last polls, and when catching up, how long until
//! it is back under `full_weight_below`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::health::Lag;
use crate::policy::{State, Verdict};
use crate::reason::{Direction, Reason};

/// Measured lags the slope is fitted over, at most.
const POINTS: usize = 10;
/// Points older than this are not part of the trend.
const SPAN: Duration = Duration::from_secs(60);
/// A slope smaller than this, either way, is steady.
const STEADY: f64 = 0.01;

/// The lag's recent slope, from measured lags only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// Seconds of lag per second: positive is falling behind.
    pub rate: f64,
}

impl Trend {
    /// Seconds until `lag` falls under `target` at this rate, when catching up.
    pub fn eta(&self, lag: Duration, target: Duration) -> Option<f64> {
        (lag > target && self.rate < -STEADY).then(|| (lag - target).as_secs_f64() / -self.rate)
    }

    pub fn is_catching_up(&self) -> bool {
        self.rate < -STEADY
    }

    pub fn is_falling_behind(&self) -> bool {
        self.rate > STEADY
    }
}

/// The trend as `/status` and `/metrics` show it, for the default policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagTrendNow {
    /// Seconds of lag per second: positive is falling behind.
    pub rate: f64,
    /// While catching up: seconds until back under `full_weight_below`.
    pub eta_seconds: Option<f64>,
}

impl LagTrendNow {
    pub fn of(trend: Trend, lag: &Lag, full_weight_below: Duration) -> LagTrendNow {
        LagTrendNow {
            rate: trend.rate,
            eta_seconds: trend.eta(lag.value, full_weight_below),
        }
    }
}

/// `verdict` with the lag's direction added to its reason, where that helps
/// the operator: a measured lag that costs weight, growing or shrinking
/// (`lag 16.0s; falling behind`, `lag 40.0s; catching up`).
pub fn with_direction(mut verdict: Verdict, trend: Option<LagTrendNow>) -> Verdict {
    let Some(trend) = trend else {
        return verdict;
    };
    let heading = if trend.rate > STEADY {
        Direction::FallingBehind
    } else if trend.rate < -STEADY {
        Direction::CatchingUp
    } else {
        return verdict;
    };
    let costs_weight = verdict.state != State::Up(100);
    if let Reason::Lag { lag, direction } = &mut verdict.reason
        && !lag.is_estimated()
        && costs_weight
    {
        *direction = Some(heading);
    }
    verdict
}

/// The last measured lags, owned by the poller.
#[derive(Debug, Default)]
pub struct LagTrend {
    points: VecDeque<(Instant, f64)>,
}

impl LagTrend {
    /// Takes this poll's lag; the trend over the recent measured ones, once
    /// there are three spread over a second or more. An unknown lag (or an
    /// estimate) starts afresh: a gap says nothing about the slope.
    pub fn observe(&mut self, at: Instant, lag: Option<&Lag>) -> Option<Trend> {
        let Some(lag) = lag.filter(|lag| !lag.is_estimated()) else {
            self.points.clear();
            return None;
        };
        self.points.push_back((at, lag.value.as_secs_f64()));
        while self.points.len() > POINTS
            || self
                .points
                .front()
                .is_some_and(|(first, _)| at.saturating_duration_since(*first) > SPAN)
        {
            self.points.pop_front();
        }
        let (first, _) = *self.points.front()?;
        if self.points.len() < 3 || at.saturating_duration_since(first) < Duration::from_secs(1) {
            return None;
        }
        Some(Trend {
            rate: slope(first, &self.points),
        })
    }
}

/// Least-squares slope of `points` (seconds since `origin`, value).
fn slope(origin: Instant, points: &VecDeque<(Instant, f64)>) -> f64 {
    let n = points.len() as f64;
    let xs = points
        .iter()
        .map(|(at, _)| at.saturating_duration_since(origin).as_secs_f64());
    let mean_x = xs.clone().sum::<f64>() / n;
    let mean_y = points.iter().map(|(_, y)| y).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for (x, (_, y)) in xs.zip(points) {
        covariance += (x - mean_x) * (y - mean_y);
        variance += (x - mean_x) * (x - mean_x);
    }
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Broken, LagOrigin};
    use crate::reason::tests::{lag as lag_reason, lag_of};

    fn lag(seconds: f64) -> Lag {
        Lag {
            value: Duration::from_secs_f64(seconds),
            channel: String::new(),
            estimated: None,
            origin: LagOrigin::ReplicaStatus,
            fallback: None,
        }
    }

    fn feed(trend: &mut LagTrend, start: Instant, lags: &[f64]) -> Option<Trend> {
        let mut last = None;
        for (i, value) in lags.iter().enumerate() {
            last = trend.observe(start + Duration::from_secs(i as u64), Some(&lag(*value)));
        }
        last
    }

    #[test]
    fn a_replica_falling_behind_has_a_positive_rate_and_no_eta() {
        let mut trend = LagTrend::default();
        let seen = feed(&mut trend, Instant::now(), &[2.0, 3.0, 4.0, 5.0, 6.0]).expect("a trend");
        assert!((seen.rate - 1.0).abs() < 1e-9, "{seen:?}");
        assert!(seen.is_falling_behind());
        assert_eq!(
            seen.eta(Duration::from_secs(6), Duration::from_secs(2)),
            None
        );
    }

    #[test]
    fn a_replica_catching_up_says_when_it_will_be_back() {
        let mut trend = LagTrend::default();
        let seen =
            feed(&mut trend, Instant::now(), &[30.0, 28.0, 26.0, 24.0, 22.0]).expect("a trend");
        assert!((seen.rate + 2.0).abs() < 1e-9, "{seen:?}");
        assert!(seen.is_catching_up());
        // 22 s now, back under 2 s at 2 s a second: in 10 s.
        let eta = seen
            .eta(Duration::from_secs(22), Duration::from_secs(2))
            .expect("an eta");
        assert!((eta - 10.0).abs() < 1e-9, "{eta}");
        // Already under the target: nothing to wait for.
        assert_eq!(
            seen.eta(Duration::from_secs(1), Duration::from_secs(2)),
            None
        );
    }

    #[test]
    fn too_few_points_or_an_unknown_lag_give_no_trend() {
        let mut trend = LagTrend::default();
        let start = Instant::now();
        assert_eq!(feed(&mut trend, start, &[5.0, 6.0]), None);
        assert!(
            trend
                .observe(start + Duration::from_secs(2), Some(&lag(7.0)))
                .is_some()
        );
        assert_eq!(trend.observe(start + Duration::from_secs(3), None), None);
        assert_eq!(
            trend.observe(start + Duration::from_secs(4), Some(&lag(9.0))),
            None
        );
        let steady = feed(&mut LagTrend::default(), start, &[3.0, 3.0, 3.0, 3.0]).expect("a trend");
        assert!(!steady.is_catching_up() && !steady.is_falling_behind());
    }

    #[test]
    fn the_reason_says_which_way_the_lag_goes_when_it_costs_weight() {
        let behind = Some(LagTrendNow {
            rate: 1.0,
            eta_seconds: None,
        });
        let back = Some(LagTrendNow {
            rate: -2.0,
            eta_seconds: Some(10.0),
        });
        let steady = Some(LagTrendNow {
            rate: 0.0,
            eta_seconds: None,
        });
        let sql_error = Reason::Broken(Broken::SqlThreadError {
            errno: 1062,
            channel: String::new(),
        });
        let recovering = Reason::Recovering {
            polls: 1,
            needed: 3,
            now: Box::new(lag_reason(2.0)),
        };
        let mut after_fallback = lag_reason(0.5);
        if let Reason::Lag { lag, .. } = &mut after_fallback {
            lag.fallback = Some("heartbeat writer stale 6.0s".into());
        }
        let cases = [
            (
                State::Up(55),
                lag_reason(16.0),
                behind,
                "lag 16.0s; falling behind",
            ),
            (
                State::Drain,
                lag_reason(40.0),
                back,
                "lag 40.0s; catching up",
            ),
            (State::Up(55), lag_reason(16.0), steady, "lag 16.0s"),
            (State::Up(55), lag_reason(16.0), None, "lag 16.0s"),
            (
                State::Up(33),
                after_fallback.clone(),
                behind,
                "lag 0.5s (replica status: heartbeat writer stale 6.0s); falling behind",
            ),
            // Full weight needs no direction; an estimate says why it is one.
            (
                State::Up(100),
                after_fallback,
                behind,
                "lag 0.5s (replica status: heartbeat writer stale 6.0s)",
            ),
            (
                State::Up(85),
                lag_of(5.1, Some("io thread stopped")),
                behind,
                "lag ~5.1s: io thread stopped",
            ),
            (State::Down, sql_error, behind, "sql thread error 1062"),
            (
                State::Up(40),
                recovering,
                back,
                "recovering 1/3: now lag 2.0s",
            ),
        ];
        for (state, reason, trend, wanted) in cases {
            let verdict = with_direction(Verdict::new(state, reason), trend);
            assert_eq!(verdict.reason.to_string(), wanted, "{state:?} {trend:?}");
        }
    }

    #[test]
    fn old_points_leave_the_fit() {
        let mut trend = LagTrend::default();
        let start = Instant::now();
        // Falling behind for a while, then catching up: the last ten decide.
        let mut lags: Vec<f64> = (0..20).map(f64::from).collect();
        lags.extend((0..10).map(|i| 20.0 - 2.0 * f64::from(i)));
        let seen = feed(&mut trend, start, &lags).expect("a trend");
        assert!(seen.rate < -1.5, "{seen:?}");
    }
}
