//! Passwords and tokens: resolved from their sources when needed, never
//! kept in [`super::Config`], and never printed (`Debug` and `Display` show
//! `MASKED`).

use std::fmt;
use std::path::Path;

use super::{Config, ConfigError, MysqlConfig, invalid};

/// A password. Never printed: `Debug` and `Display` show `MASKED`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The cleartext, for handing to the MySQL driver and nothing else.
    /// Whether `presented` is this secret, in time that does not depend
    /// on where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// The passwords a configuration refers to, resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Secrets {
    /// For `mysql`.
    pub mysql: Option<Secret>,
    /// For `lag.primary`.
    pub primary: Option<Secret>,
    /// `http.admin_token_file`'s token, as read at load; the HTTP switch
    /// reads the file again for every request.
    pub admin_token: Option<Secret>,
}

impl Config {
    /// Resolves every password source (environment variables, files).
    pub fn secrets(&self) -> Result<Secrets, ConfigError> {
        Ok(Secrets {
            mysql: self.mysql.password("mysql")?,
            primary: match &self.lag.primary {
                Some(primary) => primary.password("lag.primary")?,
                None => None,
            },
            admin_token: match &self.http.admin_token_file {
                Some(path) => Some(secret_file("http.admin_token_file", path)?),
                None => None,
            },
        })
    }
}

impl MysqlConfig {
    /// Resolves the password from its configured source, if any; `section`
    /// names this block in errors.
    pub fn password(&self, section: &str) -> Result<Option<Secret>, ConfigError> {
        let env_key = format!("{section}.password_env");
        let file_key = format!("{section}.password_file");
        if let Some(var) = &self.password_env {
            return match std::env::var(var) {
                Ok(value) if value.is_empty() => Err(invalid(
                    &env_key,
                    format!("environment variable {var} is empty"),
                )),
                Ok(value) => Ok(Some(Secret(value))),
                Err(std::env::VarError::NotPresent) => Err(invalid(
                    &env_key,
                    format!("environment variable {var} is not set"),
                )),
                Err(std::env::VarError::NotUnicode(_)) => Err(invalid(
                    &env_key,
                    format!("environment variable {var} is not valid UTF-8"),
                )),
            };
        }
        if let Some(path) = &self.password_file {
            return secret_file(&file_key, path).map(Some);
        }
        Ok(None)
    }
}

/// The secret in the file at `path` (`key` names it in errors): one
/// trailing newline is ignored, an empty file is an error. Warns when every
/// user may read it.
pub fn secret_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    warn_if_world_readable(key, path);
    read_secret(key, path)
}

/// The secret in the file at `path`, as [`secret_file`] reads it, without
/// the warning about its mode.
pub fn read_secret(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    let text = read_secret_file(path)
        .map_err(|why| invalid(key, format!("cannot read {}: {why}", path.display())))?;
    let value = text
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(invalid(key, format!("{} is empty", path.display())));
    }
    Ok(Secret(value.to_owned()))
}

/// Longest password or token file read.
const MAX_SECRET_BYTES: usize = 4096;

/// A password or token file's text: a regular file of at most
/// [`MAX_SECRET_BYTES`], UTF-8. The error never holds the file's content.
fn read_secret_file(path: &Path) -> Result<String, String> {
    let (bytes, more) = crate::files::read_regular(path, MAX_SECRET_BYTES)
        .map_err(|err| crate::files::phrase(&err))?;
    if more {
        return Err(format!("larger than {MAX_SECRET_BYTES} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())
}

/// Warns when anyone on the machine may read the password file.
fn warn_if_world_readable(key: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o004 != 0
    {
        log::warn!(
            "{key}: {} is readable by every user (mode {:o}); chmod o-r it",
            path.display(),
            metadata.permissions().mode() & 0o777
        );
    }
}
