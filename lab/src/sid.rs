//! The servers Debian 12 does not ship, from Debian's own archive: a sid
//! root filesystem that `lab/sid-root.sh` (run by `make deps`) builds with
//! mmdebstrap, holding MySQL (with Group Replication), HAProxy 3 and, under
//! `/opt/mariadb`, MariaDB 11. They run with `chroot`: the network is
//! shared, so they listen on 127.0.0.1 like the rest of the lab, and every
//! path they are given is a path inside the root (a lab keeps their data
//! under the root's `/tmp`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// Where the root is, when not at [`DEFAULT_ROOT`].
pub const ROOT_ENV: &str = "REMORA_SID_ROOT";
/// Outside every clone, so that a new clone on this machine reuses it.
pub const DEFAULT_ROOT: &str = "/var/cache/remora-lab/sid";

/// The sid root.
#[derive(Debug, Clone)]
pub struct Root {
    pub path: PathBuf,
}

/// What the root holds, as each server says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    pub mysql: String,
    pub haproxy: String,
    pub mariadb: String,
}

impl Root {
    /// The root `make deps` built, checked once per process; an error
    /// saying how to build it when it is not there.
    pub fn find() -> Result<&'static Root> {
        static FOUND: OnceLock<std::result::Result<Root, String>> = OnceLock::new();
        let found = FOUND.get_or_init(|| {
            let path = std::env::var_os(ROOT_ENV)
                .map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from);
            let root = Root { path };
            match root.versions() {
                Ok(versions) => {
                    eprintln!(
                        "sid root {}: MySQL {}, HAProxy {}, MariaDB {}",
                        root.path.display(),
                        versions.mysql,
                        versions.haproxy,
                        versions.mariadb
                    );
                    Ok(root)
                }
                Err(err) => Err(format!("{err:#}")),
            }
        });
        found
            .as_ref()
            .map_err(|why| anyhow::anyhow!("{why} (`make deps` builds it: lab/sid-root.sh)"))
    }

    /// `program` (a path inside the root) run inside the root.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("chroot");
        command.arg(&self.path).arg(program);
        command
    }

    /// `host` (a path under the root) as the root's processes see it.
    pub fn inside(&self, host: &Path) -> Result<PathBuf> {
        let within = host.strip_prefix(&self.path).with_context(|| {
            format!(
                "{} is not inside the sid root {}",
                host.display(),
                self.path.display()
            )
        })?;
        Ok(Path::new("/").join(within))
    }

    /// A temporary directory under the root's `/tmp`, removed on drop.
    pub fn tempdir(&self, prefix: &str) -> Result<tempfile::TempDir> {
        let tmp = self.path.join("tmp");
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp)
            .with_context(|| format!("creating a directory under {}", tmp.display()))
    }

    /// Each server's version, from its own `--version`.
    pub fn versions(&self) -> Result<Versions> {
        if !self.path.join("usr/sbin/mysqld").exists() {
            bail!("no sid root at {}", self.path.display());
        }
        let version = |program: &str, flag: &str| -> Result<String> {
            let output =
                self.command(program).arg(flag).output().with_context(|| {
                    format!("running {program} {flag} in {}", self.path.display())
                })?;
            let text = String::from_utf8_lossy(&output.stdout);
            first_version(&text).with_context(|| format!("{program} {flag} said {:?}", text.trim()))
        };
        Ok(Versions {
            mysql: version("mysqld", "--version")?,
            haproxy: version("haproxy", "-v")?,
            mariadb: version("/opt/mariadb/usr/sbin/mariadbd", "--version")?,
        })
    }
}

/// The first `N.N.N` in `text`.
fn first_version(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|word| word.split('.').filter(|part| !part.is_empty()).count() == 3)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_what_each_server_prints() {
        assert_eq!(
            first_version("/usr/sbin/mysqld  Ver 9.7.4-2 for Linux on x86_64 ((Debian))")
                .as_deref(),
            Some("9.7.4")
        );
        assert_eq!(
            first_version("HAProxy version 3.2.26-1 2026/10/14 - https://haproxy.org/").as_deref(),
            Some("3.2.26")
        );
        assert_eq!(
            first_version("mariadbd  Ver 11.8.9-MariaDB-4 from Debian for debian-linux-gnu")
                .as_deref(),
            Some("11.8.9")
        );
        assert_eq!(first_version("no version here"), None);
    }
}
