//! The statements a poll runs, each under `query_timeout`, and what their
//! rows become.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use tokio::time::timeout;

use super::rows::{number_of, status_map, value_number, value_signed, value_text};
use super::{
    ChannelStatus, ClusterStatus, Dialect, GaleraStatus, GroupRead, HeartbeatRead, Known,
    LoadStatus, LocalState, PollError, Probe, RejectQueries, ServerStatus,
};
use crate::config::{HeartbeatTimezone, LagConfig};

/// What the first statement of a poll reads, by what is known of the server.
/// `super_read_only` (MySQL only) turns `read_only` on with it; Aurora
/// readers show only `innodb_read_only`. `server_id` (and on MySQL
/// `server_uuid`) is who the server is, for the topology.
const BASICS: &str =
    "SELECT @@version, @@read_only, @@max_connections, @@innodb_read_only, @@server_id";
const BASICS_WSREP: &str = "SELECT @@version, @@read_only, @@max_connections, \
     @@innodb_read_only, @@server_id, @@wsrep_on, @@wsrep_desync, @@wsrep_reject_queries";
const BASICS_UUID: &str = "SELECT @@version, @@read_only, @@max_connections, \
     @@innodb_read_only, @@server_id, @@server_uuid";
const WSREP_VARIABLES: &str = "SELECT @@wsrep_on, @@wsrep_desync, @@wsrep_reject_queries";
const SERVER_UUID: &str = "SELECT @@server_uuid";
/// Every status counter remora may use, in one statement.
const GLOBAL_STATUS: &str = "SHOW GLOBAL STATUS WHERE Variable_name IN \
     ('wsrep_ready', 'wsrep_cluster_status', 'wsrep_local_state', \
     'wsrep_local_state_comment', 'wsrep_local_recv_queue', \
     'Threads_running', 'Threads_connected', 'Uptime')";
/// Server error: the variable does not exist (no wsrep in this build).
pub(super) const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;

/// How the heartbeat row is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatQuery {
    /// `SELECT ts, age FROM ...`, built from validated configuration.
    sql: String,
}

impl HeartbeatQuery {
    pub fn new(lag: &LagConfig) -> HeartbeatQuery {
        let now = match lag.heartbeat_timezone {
            HeartbeatTimezone::Utc => "UTC_TIMESTAMP(6)",
            HeartbeatTimezone::Local => "NOW(6)",
        };
        let filter = lag
            .heartbeat_server_id
            .map(|id| format!(" WHERE server_id = {id}"))
            .unwrap_or_default();
        HeartbeatQuery {
            sql: format!(
                "SELECT ts, TIMESTAMPDIFF(MICROSECOND, ts, {now}) FROM {}{filter} ORDER BY ts DESC LIMIT 1",
                lag.heartbeat_table_sql()
            ),
        }
    }
}

impl Probe {
    pub(super) async fn read_on(&mut self, conn: &mut Conn) -> Result<ServerStatus, PollError> {
        let mut status = self.read_basics(conn).await?;
        let rows = self
            .query(
                conn,
                status.dialect.replica_status_statement(),
                status.dialect.replica_status_statement(),
            )
            .await?;
        status.channels = rows.iter().map(ChannelStatus::from_row).collect();
        self.read_topology(conn, &mut status).await?;

        let galera = status.galera.is_some();
        if galera || self.read_load || self.read_uptime {
            if galera && self.known.sync_wait_off_on != Some(conn.id()) {
                // Status reads must never wait for cluster-wide causality.
                self.query(
                    conn,
                    "SET SESSION wsrep_sync_wait = 0",
                    "SET wsrep_sync_wait",
                )
                .await?;
                self.known.sync_wait_off_on = Some(conn.id());
            }
            let rows = self
                .query(conn, GLOBAL_STATUS, "SHOW GLOBAL STATUS")
                .await?;
            let counters = status_map(&rows);
            if let Some(galera) = status.galera.as_mut() {
                galera.ready = counters.get("wsrep_ready").is_some_and(|v| v == "ON");
                galera.cluster_status = (counters.get("wsrep_cluster_status"))
                    .and_then(|status| ClusterStatus::from_label(status))
                    .unwrap_or_default();
                galera.local_state = LocalState::of(number_of(&counters, "wsrep_local_state"));
                galera.local_state_comment = counters
                    .get("wsrep_local_state_comment")
                    .cloned()
                    .unwrap_or_default();
                galera.recv_queue = number_of(&counters, "wsrep_local_recv_queue");
            }
            if self.read_uptime {
                status.uptime = counters
                    .get("Uptime")
                    .and_then(|v| v.trim().parse().ok())
                    .map(Duration::from_secs);
            }
            if self.read_load {
                status.load = Some(LoadStatus {
                    threads_running: number_of(&counters, "Threads_running"),
                    threads_connected: number_of(&counters, "Threads_connected"),
                });
            }
        }

        if let Some(heartbeat) = &self.heartbeat {
            status.heartbeat = Some(read_heartbeat(conn, heartbeat, self.query_timeout).await?);
        }
        Ok(status)
    }

    /// On MySQL: Group Replication, applier timestamps and Aurora, each
    /// only where it can exist.
    async fn read_topology(
        &mut self,
        conn: &mut Conn,
        status: &mut ServerStatus,
    ) -> Result<(), PollError> {
        if status.dialect == Dialect::MariaDb {
            return Ok(());
        }
        if status.dialect == Dialect::MySql {
            status.group = self.read_group(conn).await?;
            if self.read_applier || matches!(status.group, Some(GroupRead::Member(_))) {
                status.applier = Some(self.read_applier(conn).await?);
            }
        }
        if self.is_aurora(conn).await? {
            status.aurora = Some(self.read_aurora(conn).await?);
        }
        Ok(())
    }

    /// Version, read_only, max_connections, the server's identity and, on
    /// MariaDB, the wsrep switches.
    async fn read_basics(&mut self, conn: &mut Conn) -> Result<ServerStatus, PollError> {
        let combined = self.known.dialect == Some(Dialect::MariaDb)
            && self.known.wsrep_variables == Some(true);
        let with_uuid = self
            .known
            .dialect
            .is_some_and(|dialect| dialect != Dialect::MariaDb)
            && self.known.server_uuid == Some(true);
        let statement = match (combined, with_uuid) {
            (true, _) => BASICS_WSREP,
            (false, true) => BASICS_UUID,
            (false, false) => BASICS,
        };
        let rows = match self.query(conn, statement, "SELECT @@version").await {
            Err(PollError::Server { code, .. })
                if (combined || with_uuid) && code == ER_UNKNOWN_SYSTEM_VARIABLE =>
            {
                // The server changed under us; learn it again.
                self.known = Known::default();
                self.query(conn, BASICS, "SELECT @@version").await?
            }
            other => other?,
        };
        let first = |index| rows.first()?.as_ref(index).cloned();
        let version = first(0)
            .and_then(value_text)
            .unwrap_or_else(|| "unknown".to_owned());
        let dialect = Dialect::detect(&version);
        self.known.dialect = Some(dialect);
        let mut status = ServerStatus {
            version,
            dialect,
            read_only: [first(1), first(3)]
                .into_iter()
                .any(|flag| flag.and_then(value_number).unwrap_or(0) != 0),
            max_connections: first(2).and_then(value_number),
            server_id: first(4).and_then(value_number),
            ..ServerStatus::default()
        };
        if dialect != Dialect::MariaDb {
            status.server_uuid = match with_uuid {
                true => first(5).and_then(value_text),
                false => self.read_server_uuid(conn).await?,
            }
            .filter(|uuid| !uuid.is_empty());
            return Ok(status);
        }
        // (wsrep_on, wsrep_desync, wsrep_reject_queries)
        let wsrep = if combined {
            Some((first(5), first(6), first(7)))
        } else if self.known.wsrep_variables != Some(false) {
            match self.query(conn, WSREP_VARIABLES, "SELECT @@wsrep_on").await {
                Ok(rows) => {
                    self.known.wsrep_variables = Some(true);
                    let value = |index| rows.first()?.as_ref(index).cloned();
                    Some((value(0), value(1), value(2)))
                }
                Err(PollError::Server { code, .. }) if code == ER_UNKNOWN_SYSTEM_VARIABLE => {
                    self.known.wsrep_variables = Some(false);
                    None
                }
                Err(err) => return Err(err),
            }
        } else {
            None
        };
        if let Some((on, desync, reject)) = wsrep
            && on.and_then(value_number).unwrap_or(0) != 0
        {
            status.galera = Some(GaleraStatus {
                desync: desync.and_then(value_number).unwrap_or(0) != 0,
                reject_queries: match reject.and_then(value_text) {
                    None => RejectQueries::None,
                    Some(text) => {
                        RejectQueries::from_label(&text).unwrap_or(RejectQueries::Unknown)
                    }
                },
                ..GaleraStatus::default()
            });
        }
        Ok(status)
    }

    /// `@@server_uuid`, learning whether the server has it (MySQL does;
    /// something that only speaks its protocol may not).
    async fn read_server_uuid(&mut self, conn: &mut Conn) -> Result<Option<String>, PollError> {
        if self.known.server_uuid == Some(false) {
            return Ok(None);
        }
        match self.query(conn, SERVER_UUID, "SELECT @@server_uuid").await {
            Ok(rows) => {
                self.known.server_uuid = Some(true);
                Ok(rows
                    .first()
                    .and_then(|row| row.as_ref(0).cloned())
                    .and_then(value_text))
            }
            Err(PollError::Server { code, .. }) if code == ER_UNKNOWN_SYSTEM_VARIABLE => {
                self.known.server_uuid = Some(false);
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    pub(super) async fn query(
        &self,
        conn: &mut Conn,
        statement: &str,
        label: &'static str,
    ) -> Result<Vec<Row>, PollError> {
        query_within(conn, statement, label, self.query_timeout).await
    }
}

async fn query_within(
    conn: &mut Conn,
    statement: &str,
    label: &'static str,
    limit: Duration,
) -> Result<Vec<Row>, PollError> {
    // On timeout the connection is dropped mid-query; the pool discards or
    // cleans it up in the background and the next poll gets another.
    timeout(limit, conn.query::<Row, _>(statement))
        .await
        .map_err(|_| PollError::QueryTimeout(limit))?
        .map_err(|err| PollError::from_driver(err, Some(label), false))
}

/// A missing or unreadable heartbeat table is an answer, not a failed poll;
/// a timeout or a lost connection is a failed poll like any other.
pub(super) async fn read_heartbeat(
    conn: &mut Conn,
    query: &HeartbeatQuery,
    limit: Duration,
) -> Result<HeartbeatRead, PollError> {
    match query_within(conn, &query.sql, "heartbeat", limit).await {
        Ok(rows) => {
            let Some(row) = rows.first() else {
                return Ok(HeartbeatRead::Empty);
            };
            let ts = row.as_ref(0).cloned().and_then(value_text);
            let micros = row.as_ref(1).cloned().and_then(value_signed);
            Ok(match (ts, micros) {
                (Some(ts), Some(micros)) => HeartbeatRead::Row {
                    ts,
                    age: Duration::from_micros(micros.max(0) as u64),
                },
                _ => HeartbeatRead::Empty,
            })
        }
        Err(PollError::Server { code, message, .. }) => {
            Ok(HeartbeatRead::Unavailable { code, message })
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HeartbeatTimezone, LagConfig};

    #[test]
    fn heartbeat_queries() {
        let lag = LagConfig::default();
        assert_eq!(
            HeartbeatQuery::new(&lag).sql,
            "SELECT ts, TIMESTAMPDIFF(MICROSECOND, ts, NOW(6)) FROM `heartbeat`.`heartbeat` ORDER BY ts DESC LIMIT 1"
        );
        let lag = LagConfig {
            heartbeat_timezone: HeartbeatTimezone::Utc,
            heartbeat_server_id: Some(7),
            heartbeat_table: "ops.hb".into(),
            ..LagConfig::default()
        };
        assert_eq!(
            HeartbeatQuery::new(&lag).sql,
            "SELECT ts, TIMESTAMPDIFF(MICROSECOND, ts, UTC_TIMESTAMP(6)) FROM `ops`.`hb` WHERE server_id = 7 ORDER BY ts DESC LIMIT 1"
        );
    }
}
