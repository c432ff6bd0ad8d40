//! What only MySQL 8 and Aurora can tell: applier timestamps and Group
//! Replication membership (performance_schema), and Aurora's replica table.
//! Each statement names its columns, so rows are read by position; a
//! timestamp is read as text next to `NOW(6)` of the same statement and the
//! two are compared here: both are in the session's time zone, and an unset
//! stamp (`0000-00-00 00:00:00.000000`) is no time at all.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use mysql_async::{Conn, Row};

use super::rows::{value_number, value_text};
use super::{
    ApplierChannel, ApplierRead, AuroraReplica, AuroraStatus, GroupRead, GroupStatus, MemberState,
    PollError, Probe,
};

/// Every member as this one sees it, and which row is its own.
pub(super) const GROUP_MEMBERS: &str = "SELECT MEMBER_ID, MEMBER_STATE, MEMBER_ROLE, \
     @@server_uuid FROM performance_schema.replication_group_members";
/// This member's applier queue.
pub(super) const GROUP_QUEUE: &str = "SELECT COUNT_TRANSACTIONS_REMOTE_IN_APPLIER_QUEUE \
     FROM performance_schema.replication_group_member_stats WHERE MEMBER_ID = @@server_uuid";
/// Each channel's receiver: its state, when it last heard from the source,
/// and whether everything it received is applied.
pub(super) const RECEIVERS: &str = "SELECT CHANNEL_NAME, SERVICE_STATE, \
     LAST_HEARTBEAT_TIMESTAMP, LAST_QUEUED_TRANSACTION_END_QUEUE_TIMESTAMP, NOW(6), \
     GTID_SUBSET(RECEIVED_TRANSACTION_SET, @@GLOBAL.gtid_executed) \
     FROM performance_schema.replication_connection_status";
/// Each worker's transaction in hand and last applied, by original commit time.
pub(super) const WORKERS: &str = "SELECT CHANNEL_NAME, \
     APPLYING_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP, \
     LAST_APPLIED_TRANSACTION_ORIGINAL_COMMIT_TIMESTAMP, NOW(6) \
     FROM performance_schema.replication_applier_status_by_worker";
/// Answers only on Aurora MySQL; 1193 elsewhere.
pub(super) const AURORA_VERSION: &str = "SELECT @@aurora_version";
pub(super) const AURORA_REPLICAS: &str = "SELECT SERVER_ID, SESSION_ID, \
     REPLICA_LAG_IN_MILLISECONDS, LAST_UPDATE_TIMESTAMP, NOW(6), @@aurora_server_id \
     FROM information_schema.replica_host_status";

/// Errors that mean "this server has no such table or column, or remora may
/// not read it": an answer, not a failed poll.
const ABSENT: [u16; 4] = [
    1142, // ER_TABLEACCESS_DENIED_ERROR: no SELECT on the table
    1146, // ER_NO_SUCH_TABLE
    1054, // ER_BAD_FIELD_ERROR: an older server's columns
    1109, // ER_UNKNOWN_TABLE: information_schema without it
];

impl Probe {
    /// Rows of a table that may be missing or unreadable here: `Ok(Err(code))`
    /// for one of the [`ABSENT`] errors, `Err` for a failed poll.
    async fn rows_if_there(
        &self,
        conn: &mut Conn,
        statement: &str,
        label: &'static str,
    ) -> Result<Result<Vec<Row>, u16>, PollError> {
        match self.query(conn, statement, label).await {
            Ok(rows) => Ok(Ok(rows)),
            Err(PollError::Server { code, .. }) if ABSENT.contains(&code) => Ok(Err(code)),
            Err(err) => Err(err),
        }
    }

    /// The member's status, or `None` when this server is not in a group.
    pub(super) async fn read_group(&self, conn: &mut Conn) -> Result<Option<GroupRead>, PollError> {
        let rows = match self
            .rows_if_there(conn, GROUP_MEMBERS, "group members")
            .await?
        {
            Ok(rows) => rows,
            Err(code) => return Ok(Some(GroupRead::Unavailable { code })),
        };
        let Some(mut group) = group_of(&rows) else {
            return Ok(None);
        };
        if let Ok(rows) = self
            .rows_if_there(conn, GROUP_QUEUE, "group member stats")
            .await?
        {
            group.applier_queue = rows
                .first()
                .and_then(|row| row.as_ref(0).cloned())
                .and_then(value_number);
        }
        Ok(Some(GroupRead::Member(group)))
    }

    /// Every channel's receiver and workers.
    pub(super) async fn read_applier(&self, conn: &mut Conn) -> Result<ApplierRead, PollError> {
        let receivers = self.rows_if_there(conn, RECEIVERS, "replication_connection_status");
        let receivers = match receivers.await? {
            Ok(rows) => rows,
            Err(code) => return Ok(ApplierRead::Unavailable { code }),
        };
        let workers = self.rows_if_there(conn, WORKERS, "replication_applier_status_by_worker");
        let workers = match workers.await? {
            Ok(rows) => rows,
            Err(code) => return Ok(ApplierRead::Unavailable { code }),
        };
        Ok(ApplierRead::Channels(applier_of(&receivers, &workers)))
    }

    /// Whether this is Aurora, asked once per server.
    pub(super) async fn is_aurora(&mut self, conn: &mut Conn) -> Result<bool, PollError> {
        if let Some(known) = self.known.aurora {
            return Ok(known);
        }
        let aurora = match self
            .query(conn, AURORA_VERSION, "SELECT @@aurora_version")
            .await
        {
            // Only a real version string: a proxy in between may answer
            // any variable with NULL or ''.
            Ok(rows) => rows
                .first()
                .and_then(|row| text(row, 0))
                .is_some_and(|version| !version.trim().is_empty()),
            Err(PollError::Server { code, .. }) if code == super::ER_UNKNOWN_SYSTEM_VARIABLE => {
                false
            }
            Err(err) => return Err(err),
        };
        self.known.aurora = Some(aurora);
        Ok(aurora)
    }

    /// Aurora's replica table and this instance's id.
    pub(super) async fn read_aurora(&self, conn: &mut Conn) -> Result<AuroraStatus, PollError> {
        let rows = self
            .query(conn, AURORA_REPLICAS, "replica_host_status")
            .await?;
        Ok(aurora_of(&rows))
    }
}

fn text(row: &Row, index: usize) -> Option<String> {
    row.as_ref(index).cloned().and_then(value_text)
}

/// The age of `stamp` at `now`, both as the server wrote them; `None` for
/// an unset or unreadable stamp. A stamp ahead of `now` (clock skew) is age 0.
pub fn age(stamp: Option<&str>, now: Option<&str>) -> Option<Duration> {
    let parse = |text: &str| humantime::parse_rfc3339_weak(text.trim()).ok();
    let stamp: SystemTime = parse(stamp?)?;
    let now = parse(now?)?;
    Some(now.duration_since(stamp).unwrap_or(Duration::ZERO))
}

/// The own row decides: no own row, no group.
fn group_of(rows: &[Row]) -> Option<GroupStatus> {
    let own_id = rows.first().and_then(|row| text(row, 3))?;
    let own = rows
        .iter()
        .find(|row| text(row, 0).is_some_and(|id| id.eq_ignore_ascii_case(&own_id)))?;
    let state_of = |row: &Row| {
        text(row, 1)
            .and_then(|state| MemberState::from_label(state.trim()))
            .unwrap_or(MemberState::Unknown)
    };
    let reachable = rows
        .iter()
        .filter(|row| matches!(state_of(row), MemberState::Online | MemberState::Recovering))
        .count();
    Some(GroupStatus {
        state: state_of(own),
        primary: text(own, 2).is_some_and(|role| role.trim().eq_ignore_ascii_case("PRIMARY")),
        reachable,
        members: rows.len(),
        applier_queue: None,
    })
}

/// Receivers and workers joined by channel name. A channel's `applying` is
/// its oldest transaction in hand; `last_applied`, its newest applied.
fn applier_of(receivers: &[Row], workers: &[Row]) -> Vec<ApplierChannel> {
    let mut channels: BTreeMap<String, ApplierChannel> = BTreeMap::new();
    for row in receivers {
        let name = text(row, 0).unwrap_or_default();
        let now = text(row, 4);
        let heard = [text(row, 2), text(row, 3)]
            .iter()
            .filter_map(|stamp| age(stamp.as_deref(), now.as_deref()))
            .min();
        let channel = ApplierChannel {
            name: name.clone(),
            receiving: text(row, 1).is_some_and(|s| s.trim().eq_ignore_ascii_case("ON")),
            caught_up: row
                .as_ref(5)
                .cloned()
                .and_then(value_number)
                .map(|n| n != 0),
            source_silent: heard,
            applying: None,
            last_applied: None,
        };
        channels.insert(name, channel);
    }
    for row in workers {
        let name = text(row, 0).unwrap_or_default();
        let now = text(row, 3);
        let Some(channel) = channels.get_mut(&name) else {
            continue;
        };
        if let Some(applying) = age(text(row, 1).as_deref(), now.as_deref()) {
            channel.applying = channel.applying.max(Some(applying));
        }
        if let Some(applied) = age(text(row, 2).as_deref(), now.as_deref()) {
            channel.last_applied = Some(channel.last_applied.map_or(applied, |a| a.min(applied)));
        }
    }
    channels.into_values().collect()
}

fn aurora_of(rows: &[Row]) -> AuroraStatus {
    AuroraStatus {
        server_id: rows
            .first()
            .and_then(|row| text(row, 5))
            .unwrap_or_default(),
        rows: rows
            .iter()
            .map(|row| AuroraReplica {
                server_id: text(row, 0).unwrap_or_default(),
                session_id: text(row, 1).unwrap_or_default(),
                lag_ms: text(row, 2).and_then(|lag| lag.trim().parse().ok()),
                updated: age(text(row, 3).as_deref(), text(row, 4).as_deref()),
            })
            .collect(),
        copy_of: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_come_from_two_stamps_of_one_clock() {
        let now = Some("2026-12-02 01:00:10.500000");
        assert_eq!(
            age(Some("2026-12-02 01:00:09.250000"), now),
            Some(Duration::from_millis(1250))
        );
        assert_eq!(age(Some("0000-00-00 00:00:00.000000"), now), None, "unset");
        assert_eq!(age(Some(""), now), None);
        assert_eq!(age(None, now), None);
        assert_eq!(
            age(Some("2026-12-02 01:00:11.000000"), now),
            Some(Duration::ZERO),
            "a stamp ahead of now is skew, not negative lag"
        );
        assert_eq!(age(Some("garbage"), now), None);
    }
}
