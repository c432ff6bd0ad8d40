//! The MySQL password never shows: not in logs at the most verbose level, not
//! in `/status` or `/health`, not when authentication fails.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::remora_bin;
use remora_lab::server::{REMORA_PASSWORD, WRONG_PASSWORD};
use remora_lab::{Pair, Remora};

async fn everything_it_shows(remora: &Remora) -> Result<String> {
    let mut shown = remora.log();
    for path in ["/status", "/health", "/nope"] {
        shown.push_str(&remora.get(path).await?.1);
    }
    shown.push_str(&remora.reply().await?);
    Ok(shown)
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn the_password_appears_in_no_log_status_or_reply() -> Result<()> {
    let mut pair = Pair::start().await?;
    let remora = Remora::builder(
        remora_bin(),
        &format!(
            "mysql:\n  port: {}\n  password_env: REMORA_MYSQL_PASSWORD\npoll: {{interval: 200ms}}\n",
            pair.replica.port
        ),
    )
    .env("RUST_LOG", "trace")
    .start()
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");
    // Error paths log too: lose the server, then get it back.
    pair.replica.kill();
    remora
        .wait_reply(Duration::from_secs(5), |r| r.starts_with("down"))
        .await?;
    pair.replica.restart().await?;
    remora
        .wait_reply(Duration::from_secs(10), |r| r == "up ready 100%")
        .await?;

    let shown = everything_it_shows(&remora).await?;
    assert!(
        shown.contains("TRACE") || shown.contains("DEBUG"),
        "verbose logging was on"
    );
    assert!(
        !shown.contains(REMORA_PASSWORD),
        "password leaked:\n{shown}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn a_wrong_password_is_an_auth_failure_that_does_not_echo_it() -> Result<()> {
    let pair = Pair::start().await?;
    let dir = tempfile::tempdir()?;
    let secret_file = dir.path().join("password");
    let wrong = WRONG_PASSWORD;
    std::fs::write(&secret_file, format!("{wrong}\n"))?;
    let remora = Remora::builder(
        remora_bin(),
        &format!(
            "mysql:\n  port: {}\n  password_file: {}\npoll: {{interval: 200ms}}\n",
            pair.replica.port,
            secret_file.display()
        ),
    )
    .env("RUST_LOG", "trace")
    .start()
    .await?;
    assert_eq!(
        remora.reply().await?,
        "down #mysql auth failed (error 1045)"
    );
    let shown = everything_it_shows(&remora).await?;
    assert!(shown.contains("auth_failed"), "{shown}");
    assert!(!shown.contains(wrong), "password leaked:\n{shown}");
    Ok(())
}
