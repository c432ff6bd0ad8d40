//! A MySQL wire-protocol fixture for the server dialects that cannot be
//! installed on Debian 12 (MySQL 5.7, 8.0.22+, 8.4), built on opensrv-mysql.
//!
//! It answers remora's statements the way those versions do, replaying the
//! exact column names and order they send:
//!
//! - MySQL 8.0.22 and later, `SHOW REPLICA STATUS`: the 60 columns pushed by
//!   `show_slave_status_metadata()` in `sql/rpl_replica.cc` of
//!   mysql/mysql-server (read at commit 0305767c2d59, 8.0/8.x). MySQL 8.4 has
//!   the same list and no longer parses `SHOW SLAVE STATUS` (ER_PARSE_ERROR).
//! - MySQL 5.7, `SHOW SLAVE STATUS`: the 57 columns of the MySQL 5.7
//!   Reference Manual, 13.7.5.34 "SHOW SLAVE STATUS Statement" (old names,
//!   ending `Channel_Name`, `Master_TLS_Version`); 5.7 does not parse
//!   `SHOW REPLICA STATUS`.
//!
//! Every statement received is recorded, so tests can assert which one a
//! dialect got.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use async_trait::async_trait;
use opensrv_mysql::{
    AsyncMysqlIntermediary, AsyncMysqlShim, Column, ColumnFlags, ColumnType, ErrorKind,
    ParamParser, QueryResultWriter, StatementMetaWriter,
};
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Which server the fixture pretends to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MySql57,
    MySql80,
    MySql84,
}

impl Flavor {
    pub fn version(self) -> &'static str {
        match self {
            Flavor::MySql57 => "5.7.44-log",
            Flavor::MySql80 => "8.0.36",
            Flavor::MySql84 => "8.4.3",
        }
    }
}

/// `SHOW REPLICA STATUS` in MySQL 8.0.22+ and 8.4, in order; `true` marks
/// the integer columns (`Item_return_int`), the rest are strings.
pub const REPLICA_STATUS_8: [(&str, bool); 60] = [
    ("Replica_IO_State", false),
    ("Source_Host", false),
    ("Source_User", false),
    ("Source_Port", true),
    ("Connect_Retry", true),
    ("Source_Log_File", false),
    ("Read_Source_Log_Pos", true),
    ("Relay_Log_File", false),
    ("Relay_Log_Pos", true),
    ("Relay_Source_Log_File", false),
    ("Replica_IO_Running", false),
    ("Replica_SQL_Running", false),
    ("Replicate_Do_DB", false),
    ("Replicate_Ignore_DB", false),
    ("Replicate_Do_Table", false),
    ("Replicate_Ignore_Table", false),
    ("Replicate_Wild_Do_Table", false),
    ("Replicate_Wild_Ignore_Table", false),
    ("Last_Errno", true),
    ("Last_Error", false),
    ("Skip_Counter", true),
    ("Exec_Source_Log_Pos", true),
    ("Relay_Log_Space", true),
    ("Until_Condition", false),
    ("Until_Log_File", false),
    ("Until_Log_Pos", true),
    ("Source_SSL_Allowed", false),
    ("Source_SSL_CA_File", false),
    ("Source_SSL_CA_Path", false),
    ("Source_SSL_Cert", false),
    ("Source_SSL_Cipher", false),
    ("Source_SSL_Key", false),
    ("Seconds_Behind_Source", true),
    ("Source_SSL_Verify_Server_Cert", false),
    ("Last_IO_Errno", true),
    ("Last_IO_Error", false),
    ("Last_SQL_Errno", true),
    ("Last_SQL_Error", false),
    ("Replicate_Ignore_Server_Ids", false),
    ("Source_Server_Id", true),
    ("Source_UUID", false),
    ("Source_Info_File", false),
    ("SQL_Delay", true),
    ("SQL_Remaining_Delay", true),
    ("Replica_SQL_Running_State", false),
    ("Source_Retry_Count", true),
    ("Source_Bind", false),
    ("Last_IO_Error_Timestamp", false),
    ("Last_SQL_Error_Timestamp", false),
    ("Source_SSL_Crl", false),
    ("Source_SSL_Crlpath", false),
    ("Retrieved_Gtid_Set", false),
    ("Executed_Gtid_Set", false),
    ("Auto_Position", true),
    ("Replicate_Rewrite_DB", false),
    ("Channel_Name", false),
    ("Source_TLS_Version", false),
    ("Source_public_key_path", false),
    ("Get_Source_public_key", true),
    ("Network_Namespace", false),
];

/// `SHOW SLAVE STATUS` in MySQL 5.7, in order.
pub const SLAVE_STATUS_57: [(&str, bool); 57] = [
    ("Slave_IO_State", false),
    ("Master_Host", false),
    ("Master_User", false),
    ("Master_Port", true),
    ("Connect_Retry", true),
    ("Master_Log_File", false),
    ("Read_Master_Log_Pos", true),
    ("Relay_Log_File", false),
    ("Relay_Log_Pos", true),
    ("Relay_Master_Log_File", false),
    ("Slave_IO_Running", false),
    ("Slave_SQL_Running", false),
    ("Replicate_Do_DB", false),
    ("Replicate_Ignore_DB", false),
    ("Replicate_Do_Table", false),
    ("Replicate_Ignore_Table", false),
    ("Replicate_Wild_Do_Table", false),
    ("Replicate_Wild_Ignore_Table", false),
    ("Last_Errno", true),
    ("Last_Error", false),
    ("Skip_Counter", true),
    ("Exec_Master_Log_Pos", true),
    ("Relay_Log_Space", true),
    ("Until_Condition", false),
    ("Until_Log_File", false),
    ("Until_Log_Pos", true),
    ("Master_SSL_Allowed", false),
    ("Master_SSL_CA_File", false),
    ("Master_SSL_CA_Path", false),
    ("Master_SSL_Cert", false),
    ("Master_SSL_Cipher", false),
    ("Master_SSL_Key", false),
    ("Seconds_Behind_Master", true),
    ("Master_SSL_Verify_Server_Cert", false),
    ("Last_IO_Errno", true),
    ("Last_IO_Error", false),
    ("Last_SQL_Errno", true),
    ("Last_SQL_Error", false),
    ("Replicate_Ignore_Server_Ids", false),
    ("Master_Server_Id", true),
    ("Master_UUID", false),
    ("Master_Info_File", false),
    ("SQL_Delay", true),
    ("SQL_Remaining_Delay", true),
    ("Slave_SQL_Running_State", false),
    ("Master_Retry_Count", true),
    ("Master_Bind", false),
    ("Last_IO_Error_Timestamp", false),
    ("Last_SQL_Error_Timestamp", false),
    ("Master_SSL_Crl", false),
    ("Master_SSL_Crlpath", false),
    ("Retrieved_Gtid_Set", false),
    ("Executed_Gtid_Set", false),
    ("Auto_Position", true),
    ("Replicate_Rewrite_DB", false),
    ("Channel_Name", false),
    ("Master_TLS_Version", false),
];

/// One replication channel's state, by meaning.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub name: String,
    pub io_running: &'static str,
    pub sql_running: &'static str,
    pub seconds_behind: Option<u64>,
    pub sql_delay: u64,
    pub last_io_errno: u32,
    pub last_sql_errno: u32,
    pub last_sql_error: String,
    pub exec_pos: u64,
}

impl Channel {
    /// A healthy channel with `seconds_behind` lag.
    pub fn running(name: &str, seconds_behind: u64) -> Channel {
        Channel {
            name: name.into(),
            io_running: "Yes",
            sql_running: "Yes",
            seconds_behind: Some(seconds_behind),
            sql_delay: 0,
            last_io_errno: 0,
            last_sql_errno: 0,
            last_sql_error: String::new(),
            exec_pos: 4,
        }
    }
}

/// What the fixture server currently reports.
#[derive(Debug, Default)]
pub struct State {
    pub read_only: bool,
    pub channels: Vec<Channel>,
    /// Every statement received, in order.
    pub statements: Vec<String>,
}

/// A running fixture server; stops when dropped.
#[derive(Debug)]
pub struct MysqlFixture {
    pub addr: SocketAddr,
    pub flavor: Flavor,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for MysqlFixture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MysqlFixture {
    /// Listens on a free loopback port.
    pub async fn start(flavor: Flavor) -> Result<MysqlFixture> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fixture")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shim = Shim {
                    flavor,
                    state: Arc::clone(&shared),
                };
                tokio::spawn(async move {
                    let (reader, writer) = stream.into_split();
                    let _ = AsyncMysqlIntermediary::run_on(shim, reader, writer).await;
                });
            }
        });
        Ok(MysqlFixture {
            addr,
            flavor,
            state,
            task,
        })
    }

    /// Changes what the server reports.
    pub fn set(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.lock().expect("fixture state lock"));
    }

    /// The statements received so far.
    pub fn statements(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("fixture state lock")
            .statements
            .clone()
    }
}

struct Shim {
    flavor: Flavor,
    state: Arc<Mutex<State>>,
}

/// The columns `flavor` sends for its replica-status statement. MySQL 8.0's
/// deprecated `SHOW SLAVE STATUS` sends the same list under the old names
/// (`rename_fields_use_old_replica_source_terms`).
fn status_columns(flavor: Flavor, old_names: bool) -> Vec<(String, bool)> {
    let list: &[(&str, bool)] = match flavor {
        Flavor::MySql57 => &SLAVE_STATUS_57,
        Flavor::MySql80 | Flavor::MySql84 => &REPLICA_STATUS_8,
    };
    list.iter()
        .map(|(name, numeric)| {
            let name = if old_names {
                name.replace("Replica", "Slave").replace("Source", "Master")
            } else {
                (*name).to_owned()
            };
            (name, *numeric)
        })
        .collect()
}

/// A column's value for `channel`, by name in either generation.
fn value_of(name: &str, channel: &Channel) -> Option<String> {
    let generic = name.replace("Replica", "Slave").replace("Source", "Master");
    Some(match generic.as_str() {
        "Slave_IO_State" => "Waiting for source to send event".into(),
        "Master_Host" => "10.0.0.1".into(),
        "Master_User" => "repl".into(),
        "Master_Port" => "3306".into(),
        "Connect_Retry" => "60".into(),
        "Master_Log_File" | "Relay_Master_Log_File" => "binlog.000001".into(),
        "Read_Master_Log_Pos" | "Exec_Master_Log_Pos" => channel.exec_pos.to_string(),
        "Relay_Log_File" => "relay.000002".into(),
        "Slave_IO_Running" => channel.io_running.into(),
        "Slave_SQL_Running" => channel.sql_running.into(),
        "Last_Errno" | "Last_SQL_Errno" => channel.last_sql_errno.to_string(),
        "Last_Error" | "Last_SQL_Error" => channel.last_sql_error.clone(),
        "Seconds_Behind_Master" => return channel.seconds_behind.map(|s| s.to_string()),
        "Last_IO_Errno" => channel.last_io_errno.to_string(),
        "Master_Server_Id" => "1".into(),
        "SQL_Delay" => channel.sql_delay.to_string(),
        "SQL_Remaining_Delay" => return None,
        "Channel_Name" => channel.name.clone(),
        "Until_Condition" => "None".into(),
        "Master_SSL_Allowed" | "Master_SSL_Verify_Server_Cert" => "No".into(),
        _ => String::new(),
    })
}

fn column(name: &str, numeric: bool) -> Column {
    Column {
        table: String::new(),
        column: name.to_owned(),
        coltype: if numeric {
            ColumnType::MYSQL_TYPE_LONGLONG
        } else {
            ColumnType::MYSQL_TYPE_VAR_STRING
        },
        colflags: ColumnFlags::empty(),
    }
}

#[async_trait]
impl<W: AsyncWrite + Send + Unpin> AsyncMysqlShim<W> for Shim {
    type Error = io::Error;

    fn version(&self) -> String {
        self.flavor.version().to_owned()
    }

    async fn on_prepare<'a>(
        &'a mut self,
        _query: &'a str,
        info: StatementMetaWriter<'a, W>,
    ) -> io::Result<()> {
        info.error(
            ErrorKind::ER_UNKNOWN_ERROR,
            b"the fixture has no prepared statements",
        )
        .await
    }

    async fn on_execute<'a>(
        &'a mut self,
        _id: u32,
        _params: ParamParser<'a>,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        results
            .error(
                ErrorKind::ER_UNKNOWN_ERROR,
                b"the fixture has no prepared statements",
            )
            .await
    }

    async fn on_close(&mut self, _stmt: u32) {}

    async fn on_query<'a>(
        &'a mut self,
        query: &'a str,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        let (read_only, channels) = {
            let mut state = self.state.lock().expect("fixture state lock");
            state.statements.push(query.to_owned());
            (state.read_only, state.channels.clone())
        };
        let upper = query.trim().to_ascii_uppercase();
        if let Some(list) = upper.strip_prefix("SELECT @@") {
            let names: Vec<String> = list
                .split(',')
                .map(|name| name.trim().trim_start_matches("@@").to_ascii_lowercase())
                .collect();
            let values: HashMap<&str, String> = HashMap::from([
                ("version", self.flavor.version().to_owned()),
                ("read_only", u8::from(read_only).to_string()),
                ("innodb_read_only", "0".into()),
                ("max_connections", "151".into()),
                ("max_allowed_packet", "67108864".into()),
                ("wait_timeout", "28800".into()),
            ]);
            if let Some(unknown) = names.iter().find(|n| !values.contains_key(n.as_str())) {
                let message = format!("Unknown system variable '{unknown}'");
                return results
                    .error(ErrorKind::ER_UNKNOWN_SYSTEM_VARIABLE, message.as_bytes())
                    .await;
            }
            let columns: Vec<Column> = names
                .iter()
                .map(|n| column(&format!("@@{n}"), false))
                .collect();
            let mut rows = results.start(&columns).await?;
            for name in &names {
                rows.write_col(values[name.as_str()].as_str())?;
            }
            rows.end_row().await?;
            return rows.finish().await;
        }
        let replica_status = match (upper.as_str(), self.flavor) {
            ("SHOW SLAVE STATUS", Flavor::MySql57)
            | ("SHOW REPLICA STATUS", Flavor::MySql80 | Flavor::MySql84) => true,
            // 8.0.22–8.3 still accept the old statement (with old names);
            // remora must not need it, and the tests check it never asks.
            ("SHOW SLAVE STATUS", Flavor::MySql80) => true,
            _ => false,
        };
        if replica_status {
            let old_names = upper == "SHOW SLAVE STATUS" && self.flavor == Flavor::MySql80;
            let names = status_columns(self.flavor, old_names);
            let columns: Vec<Column> = names
                .iter()
                .map(|(n, numeric)| column(n, *numeric))
                .collect();
            let mut rows = results.start(&columns).await?;
            for channel in &channels {
                for (name, _) in &names {
                    rows.write_col(value_of(name, channel))?;
                }
                rows.end_row().await?;
            }
            return rows.finish().await;
        }
        if upper.starts_with("SHOW GLOBAL STATUS") {
            let columns = [column("Variable_name", false), column("Value", false)];
            let mut rows = results.start(&columns).await?;
            for (name, value) in [("Threads_connected", "3"), ("Threads_running", "2")] {
                rows.write_col(name)?;
                rows.write_col(value)?;
                rows.end_row().await?;
            }
            return rows.finish().await;
        }
        if upper.starts_with("SELECT TS") {
            return results
                .error(
                    ErrorKind::ER_NO_SUCH_TABLE,
                    b"Table 'heartbeat.heartbeat' doesn't exist",
                )
                .await;
        }
        let message = format!("You have an error in your SQL syntax near '{query}'");
        results
            .error(ErrorKind::ER_PARSE_ERROR, message.as_bytes())
            .await
    }
}
