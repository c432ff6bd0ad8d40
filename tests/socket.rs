//! `mysql.socket`: remora beside mysqld over its unix socket, with a
//! password, and with MariaDB's `unix_socket` authentication, where the OS
//! user remora runs as is the account and no password exists anywhere.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use common::remora_bin;
use remora_lab::server::REMORA_USER;
use remora_lab::{Pair, Remora};

/// The OS user, and the MariaDB account `IDENTIFIED VIA unix_socket`.
const SOCKET_USER: &str = "remora-socket";

fn socket_of(pair: &Pair) -> PathBuf {
    pair.replica.dir.join("mysqld.sock")
}

/// uid and gid of [`SOCKET_USER`], created as a system user without a home
/// or a shell if this machine does not have it yet.
fn os_user() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<Option<u32>> {
        let out = Command::new("id").arg(flag).arg(SOCKET_USER).output()?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .flatten())
    };
    if id("-u")?.is_none() {
        let made = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(SOCKET_USER)
            .status()
            .context("running useradd (the tests run as root)")?;
        ensure!(made.success(), "useradd {SOCKET_USER} failed");
    }
    Ok((id("-u")?.context("uid")?, id("-g")?.context("gid")?))
}

/// The replica's datadir made traversable, so another OS user reaches its
/// socket (MariaDB creates the socket itself with mode 0777).
fn open_the_way_to(socket: &Path) -> Result<()> {
    let dir = socket.parent().context("socket directory")?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    Ok(())
}

/// remora's binary where any user may run it (the checkout may not be).
fn runnable_copy(dir: &Path) -> Result<PathBuf> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let copy = dir.join("remora");
    std::fs::copy(remora_bin(), &copy)?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    Ok(copy)
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn over_the_socket_with_a_password() -> Result<()> {
    let pair = Pair::start().await?;
    let socket = socket_of(&pair);
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "mysql:\n  socket: {}\n  user: {REMORA_USER}\n  password_env: REMORA_MYSQL_PASSWORD\n\
             poll: {{interval: 200ms}}\n",
            socket.display()
        ),
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");
    assert!(
        remora
            .log()
            .contains(&format!("watching {REMORA_USER}@{}", socket.display())),
        "{}",
        remora.log()
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn under_skip_networking_the_socket_is_the_only_way_in() -> Result<()> {
    let mut pair = Pair::start().await?;
    pair.replica.restart_without_tcp().await?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", pair.replica.port)).await;
    assert!(tcp.is_err(), "no TCP listener under skip-networking");
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "mysql:\n  socket: {}\n  user: {REMORA_USER}\n  password_env: REMORA_MYSQL_PASSWORD\n\
             poll: {{interval: 200ms}}\n",
            socket_of(&pair).display()
        ),
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%", "{}", remora.log());
    // Replication itself connects out to the primary, as before.
    assert_eq!(remora.status().await?["role"], "replica");
    pair.start_lag(30).await?;
    pair.stuff().await?;
    remora
        .wait_reply(std::time::Duration::from_secs(20), |r| r.contains("#lag"))
        .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn with_unix_socket_authentication_the_os_user_is_the_account_and_no_password_exists()
-> Result<()> {
    let pair = Pair::start().await?;
    let (uid, gid) = os_user()?;
    pair.replica
        .exec(&[
            &format!("CREATE USER '{SOCKET_USER}'@'localhost' IDENTIFIED VIA unix_socket"),
            &format!("GRANT SLAVE MONITOR ON *.* TO '{SOCKET_USER}'@'localhost'"),
        ])
        .await?;
    let socket = socket_of(&pair);
    open_the_way_to(&socket)?;
    let bin = tempfile::tempdir()?;
    let binary = runnable_copy(bin.path())?;
    // No password_env, no password_file: there is no password.
    let yaml = format!(
        "mysql:\n  socket: {}\n  user: {SOCKET_USER}\npoll: {{interval: 200ms}}\n",
        socket.display()
    );
    let remora = Remora::builder(&binary, &yaml)
        .run_as(uid, gid)
        .start()
        .await?;
    assert_eq!(remora.reply().await?, "up ready 100%", "{}", remora.log());
    let status = remora.status().await?;
    assert_eq!(status["role"], "replica", "{status}");

    // The same configuration run by another OS user (root) is refused: the
    // socket's peer is the credential.
    let as_root = Remora::start(&binary, &yaml).await?;
    assert_eq!(
        as_root.reply().await?,
        "down #mysql auth failed (error 1698)"
    );
    Ok(())
}
