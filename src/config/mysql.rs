//! `mysql` (and `lag.primary`): where a server is, how to log in, how long
//! any wait on it may take, and TLS.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Section, duration};

/// Where the watched server is and how long any wait on it may take.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MysqlConfig {
    /// TCP host (default `127.0.0.1`); see [`MysqlConfig::host`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// TCP port (default 3306); see [`MysqlConfig::port`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A unix socket instead of TCP: a sidecar on the same host needs no
    /// network, and `unix_socket` / `auth_socket` accounts need no password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    pub user: String,
    /// Name of an environment variable holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Path of a file holding the password (one trailing newline is ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Deadline for getting a usable connection (TCP connect, greeting, auth).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Deadline for each status query.
    #[serde(with = "duration")]
    pub query_timeout: Duration,
    pub tls: TlsConfig,
}

/// TLS to the server, with the modes of the MySQL client's `--ssl-mode`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// PEM file of the CA that signed the server's certificate, for
    /// `verify_ca` and `verify_identity` (else the public web roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain TCP (a sidecar usually reaches mysqld over loopback).
    #[default]
    Disabled,
    /// TLS when the server offers it, plain TCP when it does not; the
    /// certificate is not checked.
    Preferred,
    /// TLS or no connection; the certificate is not checked.
    Required,
    /// TLS, with a certificate signed by `ca_file` (required); any host name.
    VerifyCa,
    /// TLS, with a certificate signed by `ca_file` and naming `host`.
    VerifyIdentity,
}

impl TlsMode {
    pub fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyIdentity)
    }
}

impl Default for MysqlConfig {
    fn default() -> Self {
        MysqlConfig {
            host: None,
            port: None,
            socket: None,
            user: "remora".into(),
            password_env: None,
            password_file: None,
            connect_timeout: Duration::from_secs(1),
            query_timeout: Duration::from_secs(1),
            tls: TlsConfig::default(),
        }
    }
}

/// Where a server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address<'a> {
    Tcp(&'a str, u16),
    Socket(&'a std::path::Path),
}

impl std::fmt::Display for Address<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(host, port) => write!(f, "{host}:{port}"),
            Address::Socket(path) => write!(f, "{}", path.display()),
        }
    }
}

impl MysqlConfig {
    /// The TCP host: `127.0.0.1` unless set.
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or("127.0.0.1")
    }

    /// The TCP port: 3306 unless set.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(3306)
    }

    /// The socket when set, else host and port.
    pub fn address(&self) -> Address<'_> {
        match &self.socket {
            Some(path) => Address::Socket(path),
            None => Address::Tcp(self.host(), self.port()),
        }
    }

    /// `section` names this block in errors (`mysql`, `lag.primary`).
    pub(super) fn validate(&self, section: &str) -> Result<(), ConfigError> {
        self.validate_address(section)?;
        if self.user.is_empty() {
            return Err(Section(section).invalid("user", "must not be empty"));
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err(Section(section).invalid(
                "password_env",
                format!("set either {section}.password_env or {section}.password_file, not both"),
            ));
        }
        if self.password_env.as_deref() == Some("") {
            return Err(
                Section(section).invalid("password_env", "must name an environment variable")
            );
        }
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("query_timeout", self.query_timeout),
        ] {
            if value.is_zero() {
                return Err(Section(section).invalid(key, "must be greater than 0"));
            }
        }
        if self.tls.mode == TlsMode::VerifyCa && self.tls.ca_file.is_none() {
            // The public web roots sign certificates for anyone's host name,
            // and verify_ca checks no host name: that would trust anyone.
            return Err(Section(section).invalid(
                "tls.ca_file",
                "must be set for mode verify_ca (the CA that signed the server's certificate); \
                 verify_identity may use the system roots",
            ));
        }
        if let Some(ca) = &self.tls.ca_file {
            let tls = Section(section);
            if !self.tls.mode.verifies() {
                return Err(tls.invalid(
                    "tls.ca_file",
                    "is used only by mode verify_ca or verify_identity",
                ));
            }
            match crate::files::read_regular(ca, MAX_CA_BYTES) {
                Ok((_, false)) => {}
                Ok((_, true)) => {
                    return Err(tls.invalid(
                        "tls.ca_file",
                        format!("{}: larger than {MAX_CA_BYTES} bytes", ca.display()),
                    ));
                }
                Err(err) => {
                    return Err(tls.invalid(
                        "tls.ca_file",
                        format!(
                            "cannot read {}: {}",
                            ca.display(),
                            crate::files::phrase(&err)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_address(&self, section: &str) -> Result<(), ConfigError> {
        if let Some(socket) = &self.socket {
            let tcp = [("host", self.host.is_some()), ("port", self.port.is_some())];
            if let Some((key, _)) = tcp.iter().find(|(_, set)| *set) {
                return Err(Section(section).invalid(
                    "socket",
                    format!("set either {section}.socket or {section}.{key}, not both"),
                ));
            }
            if !socket.is_absolute() {
                return Err(Section(section).invalid(
                    "socket",
                    format!("must be an absolute path, got {}", socket.display()),
                ));
            }
            if self.tls.mode != TlsMode::Disabled {
                return Err(Section(section).invalid(
                    "tls.mode",
                    "must be disabled with a socket: it never leaves the host, and the \
                     server does not offer TLS on it",
                ));
            }
        }
        if self.host().trim().is_empty() {
            return Err(Section(section).invalid("host", "must not be empty"));
        }
        if self.port() == 0 {
            return Err(Section(section).invalid("port", "must be between 1 and 65535"));
        }
        Ok(())
    }
}

/// Longest CA bundle read (Debian's whole system bundle is about 200 KB).
pub const MAX_CA_BYTES: usize = 1024 * 1024;
