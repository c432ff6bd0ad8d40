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
    pub host: String,
    pub port: u16,
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
            host: "127.0.0.1".into(),
            port: 3306,
            user: "remora".into(),
            password_env: None,
            password_file: None,
            connect_timeout: Duration::from_secs(1),
            query_timeout: Duration::from_secs(1),
            tls: TlsConfig::default(),
        }
    }
}

impl MysqlConfig {
    /// `section` names this block in errors (`mysql`, `lag.primary`).
    pub(super) fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(Section(section).invalid("host", "must not be empty"));
        }
        if self.port == 0 {
            return Err(Section(section).invalid("port", "must be between 1 and 65535"));
        }
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
            std::fs::File::open(ca).map_err(|err| {
                tls.invalid(
                    "tls.ca_file",
                    format!("cannot read {}: {err}", ca.display()),
                )
            })?;
        }
        Ok(())
    }
}
