//! Why a poll failed, as data: a kind for metrics, a short phrase for the
//! agent line, the whole message for logs and `/status` on loopback.

use std::fmt;
use std::io;
use std::time::Duration;

crate::labelled! {
    /// What kind of failure a [`PollError`] is: one per variant, listed by the
    /// type ([`ErrorKind::ALL`]) so `/metrics` exports every kind.
    pub enum ErrorKind {
        ConnectTimeout => "connect_timeout",
        QueryTimeout => "query_timeout",
        Unreachable => "unreachable",
        AuthFailed => "auth_failed",
        ServerError => "server_error",
        TlsFailed => "tls_failed",
        DriverError => "driver_error",
    }
}

/// Why a poll did not produce a [`ServerStatus`](super::ServerStatus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollError {
    /// No connection within `connect_timeout` (includes a frozen server that
    /// accepts TCP but never greets).
    ConnectTimeout(Duration),
    /// A status query did not finish within `query_timeout`.
    QueryTimeout(Duration),
    /// The network said no: refused, reset, closed.
    Unreachable(String),
    /// The server rejected our credentials (1045) or our host (1130).
    AuthFailed(u16),
    /// The server answered a statement with an error, e.g. 1227 for a missing privilege.
    Server {
        code: u16,
        message: String,
        /// A short name for the statement (`SHOW ALL SLAVES STATUS`).
        statement: &'static str,
    },
    /// TLS was configured and could not be set up: the server offers none,
    /// or its certificate was rejected.
    Tls(String),
    /// Anything else the driver reported.
    Driver(String),
}

impl PollError {
    /// A short, ASCII, row-data-free phrase for the agent line.
    pub fn phrase(&self) -> String {
        match self {
            PollError::ConnectTimeout(limit) => {
                format!("mysql connect timeout ({})", crate::config::show(*limit))
            }
            PollError::QueryTimeout(limit) => {
                format!("mysql query timeout ({})", crate::config::show(*limit))
            }
            PollError::Unreachable(why) => format!("mysql unreachable: {why}"),
            PollError::AuthFailed(code) => format!("mysql auth failed (error {code})"),
            PollError::Server {
                code, statement, ..
            } => format!("mysql error {code} on {statement}"),
            PollError::Tls(_) => "mysql tls failed".to_owned(),
            PollError::Driver(_) => "mysql driver error".to_owned(),
        }
    }

    /// Its kind, for metrics and `/status`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PollError::ConnectTimeout(_) => ErrorKind::ConnectTimeout,
            PollError::QueryTimeout(_) => ErrorKind::QueryTimeout,
            PollError::Unreachable(_) => ErrorKind::Unreachable,
            PollError::AuthFailed(_) => ErrorKind::AuthFailed,
            PollError::Server { .. } => ErrorKind::ServerError,
            PollError::Tls(_) => ErrorKind::TlsFailed,
            PollError::Driver(_) => ErrorKind::DriverError,
        }
    }

    /// `handshake`: whether the error can come from a TLS handshake (a
    /// connection attempt with TLS configured), where rustls reports a
    /// rejected certificate as invalid data.
    pub(super) fn from_driver(
        err: mysql_async::Error,
        statement: Option<&'static str>,
        handshake: bool,
    ) -> PollError {
        use mysql_async::{DriverError, Error, IoError};
        match err {
            Error::Driver(DriverError::NoClientSslFlagFromServer) => {
                PollError::Tls("the server offers no TLS".to_owned())
            }
            Error::Io(IoError::Tls(err)) => PollError::Tls(err.to_string()),
            Error::Io(IoError::Io(io)) if handshake && io.kind() == io::ErrorKind::InvalidData => {
                PollError::Tls(io.to_string())
            }
            Error::Server(server) if matches!(server.code, 1045 | 1130 | 1698) => {
                PollError::AuthFailed(server.code)
            }
            Error::Server(server) => PollError::Server {
                code: server.code,
                message: server.message,
                statement: statement.unwrap_or("connect"),
            },
            Error::Io(IoError::Io(io)) => PollError::Unreachable(io_phrase(&io)),
            Error::Driver(DriverError::ConnectionClosed) => {
                PollError::Unreachable("connection closed".to_owned())
            }
            other => PollError::Driver(other.to_string()),
        }
    }
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PollError::Server { message, .. } => write!(f, "{}: {message}", self.phrase()),
            PollError::Driver(message) | PollError::Tls(message) => {
                write!(f, "{}: {message}", self.phrase())
            }
            _ => f.write_str(&self.phrase()),
        }
    }
}

fn io_phrase(err: &io::Error) -> String {
    // A failed name lookup comes as an uncategorized error with getaddrinfo's text.
    if err.to_string().contains("failed to lookup address") {
        return RESOLVE_FAILED.to_owned();
    }
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
        io::ErrorKind::UnexpectedEof => "connection closed".to_owned(),
        io::ErrorKind::BrokenPipe => "connection closed".to_owned(),
        kind => kind.to_string(),
    }
}

/// What [`io_phrase`] says of a failed name lookup; [`Probe::connect`]
/// adds the name.
pub(super) const RESOLVE_FAILED: &str = "cannot resolve host";

/// Server errors for a missing privilege: access denied to a database (1044),
/// a privilege (1227), a table or column (1142, 1143), a routine (1370).
pub(super) const PRIVILEGE_ERRORS: [u16; 5] = [1044, 1142, 1143, 1227, 1370];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_phrases_carry_no_message_text() {
        let err = PollError::Server {
            code: 1227,
            message: "Access denied; you need SLAVE MONITOR".into(),
            statement: "SHOW ALL SLAVES STATUS",
        };
        assert_eq!(err.phrase(), "mysql error 1227 on SHOW ALL SLAVES STATUS");
        assert!(err.to_string().contains("SLAVE MONITOR"));
        assert_eq!(
            PollError::ConnectTimeout(Duration::from_millis(1500)).phrase(),
            "mysql connect timeout (1s 500ms)"
        );
    }
}
