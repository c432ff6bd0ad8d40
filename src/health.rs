//! Reading an observation: is the server reachable, a replica or not, how far
//! behind, and is that lag measured or estimated. Pure apart from a small
//! memory of the last measured lag per channel; no I/O.
//!
//! `Seconds_Behind_Master` is NULL whenever a replication thread is stopped or
//! connecting. NULL is never read as 0: remora estimates the lag as the last
//! measured lag plus the time since that measurement, so a replica whose IO
//! thread dies fades out along the policy's curve instead of serving ever
//! staler data at full weight.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::probe::{ChannelStatus, Observation, ThreadState};

/// What one observation means, with lag estimated where it is unknown.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// The poll failed: nothing is known about the server.
    Unreachable { reason: String },
    /// Reachable and not a replica.
    Primary { read_only: bool },
    /// A replica; `lag` is its worst channel's.
    Replica { lag: Lag, read_only: bool },
    /// A replica that is down whatever its lag: an SQL thread stopped on an
    /// error, or lag unknown with no earlier measurement to estimate from.
    Broken { reason: String, read_only: bool },
}

impl Health {
    pub fn lag(&self) -> Option<&Lag> {
        match self {
            Health::Replica { lag, .. } => Some(lag),
            _ => None,
        }
    }

    pub fn role(&self) -> &'static str {
        match self {
            Health::Unreachable { .. } => "unknown",
            Health::Primary { .. } => "primary",
            Health::Replica { .. } | Health::Broken { .. } => "replica",
        }
    }
}

/// How far a replica is behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Lag {
    pub value: Duration,
    /// The replication channel this lag belongs to (`""` is the default one).
    pub channel: String,
    /// `None` when measured this poll; otherwise why it could not be measured.
    pub estimated: Option<String>,
}

impl Lag {
    pub fn is_estimated(&self) -> bool {
        self.estimated.is_some()
    }
}

/// `lag 14.2s`, or `lag ~14.2s: io thread Connecting (error 2003)` when estimated.
impl fmt::Display for Lag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let channel = if self.channel.is_empty() {
            String::new()
        } else {
            format!(" on {}", self.channel)
        };
        let seconds = self.value.as_secs_f64();
        match &self.estimated {
            None => write!(f, "lag {seconds:.1}s{channel}"),
            Some(why) => write!(f, "lag ~{seconds:.1}s{channel}: {why}"),
        }
    }
}

/// The last lag measured on a channel, and when.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Measured {
    lag: Duration,
    at: Instant,
}

/// Turns observations into [`Health`], remembering the last measured lag per
/// channel so that an unknown lag can be estimated.
#[derive(Debug, Default)]
pub struct LagMemory {
    last_measured: HashMap<String, Measured>,
}

impl LagMemory {
    pub fn assess(&mut self, observation: &Observation) -> Health {
        let status = match &observation.result {
            Err(err) => {
                return Health::Unreachable {
                    reason: err.phrase(),
                };
            }
            Ok(status) => status,
        };
        let read_only = status.read_only;
        if status.channels.is_empty() {
            self.last_measured.clear();
            return Health::Primary { read_only };
        }
        // A channel that vanished (RESET SLAVE ALL) must not leave an old
        // measurement to be reused if a channel of that name comes back later.
        self.last_measured
            .retain(|name, _| status.channels.iter().any(|c| &c.name == name));

        let mut worst: Option<Lag> = None;
        for channel in &status.channels {
            match self.channel_lag(channel, observation.at) {
                Err(reason) => return Health::Broken { reason, read_only },
                Ok(lag) => {
                    if worst.as_ref().is_none_or(|w| lag.value > w.value) {
                        worst = Some(lag);
                    }
                }
            }
        }
        let lag = worst.expect("channels is not empty, and each gave a lag or returned");
        Health::Replica { lag, read_only }
    }

    fn channel_lag(&mut self, channel: &ChannelStatus, now: Instant) -> Result<Lag, String> {
        let on = if channel.name.is_empty() {
            String::new()
        } else {
            format!(" on {}", channel.name)
        };
        if channel.sql_thread != ThreadState::Yes
            && let Some(err) = &channel.sql_error
        {
            return Err(format!("sql thread error {}{on}", err.errno));
        }
        let running =
            channel.io_thread == ThreadState::Yes && channel.sql_thread == ThreadState::Yes;
        if let (true, Some(seconds)) = (running, channel.seconds_behind) {
            let lag = Duration::from_secs(seconds);
            self.last_measured
                .insert(channel.name.clone(), Measured { lag, at: now });
            return Ok(Lag {
                value: lag,
                channel: channel.name.clone(),
                estimated: None,
            });
        }

        let why = unknown_because(channel);
        match self.last_measured.get(&channel.name) {
            // Unknown since just after `at`: it has grown by at most the time since.
            Some(measured) => Ok(Lag {
                value: measured.lag + now.saturating_duration_since(measured.at),
                channel: channel.name.clone(),
                estimated: Some(why),
            }),
            None => Err(format!("lag unknown{on}: {why}")),
        }
    }
}

/// Why `Seconds_Behind_Master` cannot be trusted this poll, in a few words.
fn unknown_because(channel: &ChannelStatus) -> String {
    if channel.io_thread != ThreadState::Yes {
        let mut why = format!("io thread {}", channel.io_thread.describe());
        if let Some(err) = &channel.io_error {
            why.push_str(&format!(" (error {})", err.errno));
        }
        why
    } else if channel.sql_thread != ThreadState::Yes {
        format!("sql thread {}", channel.sql_thread.describe())
    } else {
        "lag not reported".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Dialect, PollError, ServerStatus, ThreadError};
    use std::time::SystemTime;

    fn observe(at: Instant, channels: Vec<ChannelStatus>) -> Observation {
        Observation {
            at,
            wall: SystemTime::now(),
            duration: Duration::from_millis(2),
            result: Ok(ServerStatus {
                version: "10.11.19-MariaDB".into(),
                dialect: Dialect::MariaDb,
                read_only: true,
                channels,
            }),
        }
    }

    fn running(seconds: Option<u64>) -> ChannelStatus {
        ChannelStatus {
            io_thread: ThreadState::Yes,
            sql_thread: ThreadState::Yes,
            seconds_behind: seconds,
            ..ChannelStatus::default()
        }
    }

    fn io_connecting() -> ChannelStatus {
        ChannelStatus {
            io_thread: ThreadState::Connecting,
            sql_thread: ThreadState::Yes,
            io_error: Some(ThreadError {
                errno: 2003,
                message: "error reconnecting to master".into(),
            }),
            ..ChannelStatus::default()
        }
    }

    #[test]
    fn no_channels_is_a_primary() {
        let health = LagMemory::default().assess(&observe(Instant::now(), vec![]));
        assert_eq!(health, Health::Primary { read_only: true });
    }

    #[test]
    fn failed_poll_is_unreachable_with_its_phrase() {
        let observation = Observation {
            at: Instant::now(),
            wall: SystemTime::now(),
            duration: Duration::from_secs(1),
            result: Err(PollError::ConnectTimeout(Duration::from_secs(1))),
        };
        let health = LagMemory::default().assess(&observation);
        assert_eq!(
            health,
            Health::Unreachable {
                reason: "mysql connect timeout (1s)".into()
            }
        );
    }

    #[test]
    fn measured_lag_is_read_as_is() {
        let health = LagMemory::default().assess(&observe(Instant::now(), vec![running(Some(7))]));
        let lag = health.lag().expect("replica");
        assert_eq!(lag.value, Duration::from_secs(7));
        assert!(!lag.is_estimated());
        assert_eq!(lag.to_string(), "lag 7.0s");
    }

    #[test]
    fn unknown_lag_grows_from_the_last_measurement() {
        let mut memory = LagMemory::default();
        let t0 = Instant::now();
        memory.assess(&observe(t0, vec![running(Some(3))]));
        let later = t0 + Duration::from_millis(4500);
        let health = memory.assess(&observe(later, vec![io_connecting()]));
        let lag = health.lag().expect("estimated, not broken");
        assert_eq!(lag.value, Duration::from_millis(7500));
        assert_eq!(
            lag.to_string(),
            "lag ~7.5s: io thread connecting (error 2003)"
        );
    }

    #[test]
    fn null_lag_with_both_threads_running_is_not_zero() {
        let mut memory = LagMemory::default();
        let t0 = Instant::now();
        memory.assess(&observe(t0, vec![running(Some(1))]));
        let health = memory.assess(&observe(t0 + Duration::from_secs(2), vec![running(None)]));
        let lag = health.lag().expect("estimated");
        assert_eq!(lag.value, Duration::from_secs(3));
        assert_eq!(lag.estimated.as_deref(), Some("lag not reported"));
    }

    #[test]
    fn unknown_lag_without_history_is_broken() {
        let stopped = ChannelStatus {
            io_thread: ThreadState::Yes,
            sql_thread: ThreadState::No,
            ..ChannelStatus::default()
        };
        let health = LagMemory::default().assess(&observe(Instant::now(), vec![stopped]));
        assert_eq!(
            health,
            Health::Broken {
                reason: "lag unknown: sql thread stopped".into(),
                read_only: true
            }
        );
    }

    #[test]
    fn sql_error_is_broken_and_names_the_errno() {
        let mut memory = LagMemory::default();
        let t0 = Instant::now();
        memory.assess(&observe(t0, vec![running(Some(0))]));
        let failed = ChannelStatus {
            io_thread: ThreadState::Yes,
            sql_thread: ThreadState::No,
            sql_error: Some(ThreadError {
                errno: 1062,
                message: "Duplicate entry '42' for key 'PRIMARY'".into(),
            }),
            ..ChannelStatus::default()
        };
        let health = memory.assess(&observe(t0 + Duration::from_secs(1), vec![failed]));
        assert_eq!(
            health,
            Health::Broken {
                reason: "sql thread error 1062".into(),
                read_only: true
            }
        );
    }

    #[test]
    fn stale_error_text_on_a_running_sql_thread_is_ignored() {
        let mut channel = running(Some(2));
        channel.sql_error = Some(ThreadError {
            errno: 1062,
            message: "old".into(),
        });
        let health = LagMemory::default().assess(&observe(Instant::now(), vec![channel]));
        assert_eq!(health.lag().map(|l| l.value), Some(Duration::from_secs(2)));
    }

    #[test]
    fn worst_channel_wins() {
        let mut fast = running(Some(1));
        fast.name = "a".into();
        let mut slow = running(Some(9));
        slow.name = "b".into();
        let health = LagMemory::default().assess(&observe(Instant::now(), vec![fast, slow]));
        let lag = health.lag().expect("replica");
        assert_eq!(lag.channel, "b");
        assert_eq!(lag.to_string(), "lag 9.0s on b");
    }

    #[test]
    fn a_broken_channel_breaks_the_replica() {
        let mut ok = running(Some(0));
        ok.name = "a".into();
        let mut broken = ChannelStatus {
            sql_thread: ThreadState::No,
            sql_error: Some(ThreadError {
                errno: 1146,
                message: String::new(),
            }),
            ..running(None)
        };
        broken.name = "b".into();
        let health = LagMemory::default().assess(&observe(Instant::now(), vec![ok, broken]));
        assert_eq!(
            health,
            Health::Broken {
                reason: "sql thread error 1146 on b".into(),
                read_only: true
            }
        );
    }

    #[test]
    fn an_unreachable_poll_keeps_the_memory() {
        let mut memory = LagMemory::default();
        let t0 = Instant::now();
        memory.assess(&observe(t0, vec![running(Some(2))]));
        memory.assess(&Observation {
            at: t0 + Duration::from_secs(1),
            wall: SystemTime::now(),
            duration: Duration::from_secs(1),
            result: Err(PollError::Unreachable("connection refused".into())),
        });
        let health = memory.assess(&observe(t0 + Duration::from_secs(5), vec![io_connecting()]));
        assert_eq!(health.lag().map(|l| l.value), Some(Duration::from_secs(7)));
    }

    #[test]
    fn becoming_a_primary_forgets_old_measurements() {
        let mut memory = LagMemory::default();
        let t0 = Instant::now();
        memory.assess(&observe(t0, vec![running(Some(2))]));
        memory.assess(&observe(t0, vec![]));
        let health = memory.assess(&observe(t0 + Duration::from_secs(1), vec![io_connecting()]));
        assert!(matches!(health, Health::Broken { .. }), "{health:?}");
    }
}
