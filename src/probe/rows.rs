//! Row decoding: columns read by name in either generation of names, and
//! values that may be NULL, text or numbers. A missing, NULL or unparsable
//! value becomes `None` or `Unknown`, never a panic.

use std::collections::HashMap;

use mysql_async::{Row, Value};

use super::{ChannelStatus, ThreadError, ThreadState};

/// `SHOW GLOBAL STATUS` rows as name → value.
pub(super) fn status_map(rows: &[Row]) -> HashMap<String, String> {
    rows.iter()
        .filter_map(|row| {
            let name = row.as_ref(0).cloned().and_then(value_text)?;
            let value = row.as_ref(1).cloned().and_then(value_text)?;
            Some((name, value))
        })
        .collect()
}

pub(super) fn number_of(map: &HashMap<String, String>, name: &str) -> u64 {
    map.get(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl ThreadState {
    /// `Yes`, `No` or `Connecting`, in any case; anything else is unknown.
    fn parse(text: Option<&str>) -> ThreadState {
        match text.map(str::trim) {
            Some(t) if t.eq_ignore_ascii_case("yes") => ThreadState::Yes,
            Some(t) if t.eq_ignore_ascii_case("no") => ThreadState::No,
            Some(t) if t.eq_ignore_ascii_case("connecting") => ThreadState::Connecting,
            _ => ThreadState::Unknown,
        }
    }
}

impl ChannelStatus {
    /// Reads a status row by column name, accepting either generation of names.
    pub fn from_row(row: &Row) -> ChannelStatus {
        ChannelStatus::from_columns(|name| {
            let index = row
                .columns_ref()
                .iter()
                .position(|column| column.name_str().eq_ignore_ascii_case(name))?;
            row.as_ref(index).cloned()
        })
    }

    /// Builds a channel from a column lookup. A missing, NULL or unparsable
    /// column becomes `None`/`Unknown`, never a panic.
    pub fn from_columns(column: impl Fn(&str) -> Option<Value>) -> ChannelStatus {
        let text = |names: &[&str]| names.iter().find_map(|name| value_text(column(name)?));
        let number = |names: &[&str]| names.iter().find_map(|name| value_number(column(name)?));
        let error = |errno: &str, message: &str| {
            let errno = u32::try_from(number(&[errno])?).ok()?;
            (errno != 0).then(|| ThreadError {
                errno,
                message: text(&[message]).unwrap_or_default(),
            })
        };
        ChannelStatus {
            name: text(&["Connection_name", "Channel_Name"]).unwrap_or_default(),
            source_host: text(&["Master_Host", "Source_Host"]),
            source_port: number(&["Master_Port", "Source_Port"]),
            io_thread: ThreadState::parse(
                text(&["Slave_IO_Running", "Replica_IO_Running"]).as_deref(),
            ),
            sql_thread: ThreadState::parse(
                text(&["Slave_SQL_Running", "Replica_SQL_Running"]).as_deref(),
            ),
            seconds_behind: number(&["Seconds_Behind_Master", "Seconds_Behind_Source"]),
            sql_delay: number(&["SQL_Delay"]),
            io_error: error("Last_IO_Errno", "Last_IO_Error"),
            sql_error: error("Last_SQL_Errno", "Last_SQL_Error"),
            exec_position: text(&["Relay_Master_Log_File", "Relay_Source_Log_File"])
                .zip(number(&["Exec_Master_Log_Pos", "Exec_Source_Log_Pos"])),
            source_server_id: number(&["Master_Server_Id", "Source_Server_Id"]),
            source_uuid: text(&["Source_UUID", "Master_UUID"])
                .filter(|uuid| !uuid.trim().is_empty()),
            applied_behind_received: number(&["Master_Slave_time_diff"]),
        }
    }
}

pub(super) fn value_text(value: Value) -> Option<String> {
    match value {
        Value::NULL => None,
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Value::Int(n) => Some(n.to_string()),
        Value::UInt(n) => Some(n.to_string()),
        other => Some(other.as_sql(true)),
    }
}

pub(super) fn value_signed(value: Value) -> Option<i64> {
    match value {
        Value::Bytes(bytes) => std::str::from_utf8(&bytes).ok()?.trim().parse().ok(),
        Value::Int(n) => Some(n),
        Value::UInt(n) => i64::try_from(n).ok(),
        _ => None,
    }
}

pub(super) fn value_number(value: Value) -> Option<u64> {
    match value {
        Value::Bytes(bytes) => std::str::from_utf8(&bytes).ok()?.trim().parse().ok(),
        Value::Int(n) => u64::try_from(n).ok(),
        Value::UInt(n) => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Option<&str>)]) -> ChannelStatus {
        let columns: HashMap<String, Value> = pairs
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    Some(text) => Value::Bytes(text.as_bytes().to_vec()),
                    None => Value::NULL,
                };
                (name.to_string(), value)
            })
            .collect();
        ChannelStatus::from_columns(|name| columns.get(name).cloned())
    }

    #[test]
    fn reads_mariadb_names() {
        let status = row(&[
            ("Connection_name", Some("")),
            ("Master_Host", Some("127.0.0.1")),
            ("Slave_IO_Running", Some("Connecting")),
            ("Slave_SQL_Running", Some("Yes")),
            ("Last_IO_Errno", Some("2003")),
            ("Last_IO_Error", Some("error connecting to master")),
            ("Last_SQL_Errno", Some("0")),
            ("Last_SQL_Error", Some("")),
            ("Seconds_Behind_Master", None),
            ("SQL_Delay", Some("0")),
        ]);
        assert_eq!(status.io_thread, ThreadState::Connecting);
        assert_eq!(status.sql_thread, ThreadState::Yes);
        assert_eq!(status.seconds_behind, None);
        assert_eq!(status.io_error.as_ref().map(|e| e.errno), Some(2003));
        assert_eq!(status.sql_error, None);
        assert_eq!(status.sql_delay, Some(0));
    }

    #[test]
    fn reads_mysql_8_names() {
        let status = row(&[
            ("Source_Host", Some("10.0.0.1")),
            ("Replica_IO_Running", Some("Yes")),
            ("Replica_SQL_Running", Some("No")),
            ("Seconds_Behind_Source", Some("17")),
            ("Last_SQL_Errno", Some("1062")),
            (
                "Last_SQL_Error",
                Some("Duplicate entry '42' for key 'PRIMARY'"),
            ),
            ("Channel_Name", Some("eu")),
        ]);
        assert_eq!(status.name, "eu");
        assert_eq!(status.io_thread, ThreadState::Yes);
        assert_eq!(status.sql_thread, ThreadState::No);
        assert_eq!(status.seconds_behind, Some(17));
        assert_eq!(status.sql_error.map(|e| e.errno), Some(1062));
    }

    #[test]
    fn missing_and_odd_columns_never_panic() {
        let status = row(&[
            ("Seconds_Behind_Master", Some("soon")),
            ("Last_SQL_Errno", None),
        ]);
        assert_eq!(status, ChannelStatus::default());
    }
}
