//! Nothing an operator's file, a client or a server's value can do hangs,
//! crashes or fools remora: the admin switch only the operator can flip, a
//! FIFO where the maintenance file should be, SIGTERM while a poll hangs, a
//! replica reporting 2^64-1 seconds of lag.
// This times real processes with the wall clock, on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use common::{mysql_section, remora_bin};
use remora_lab::fixture::{Channel, Flavor, MysqlFixture};
use remora_lab::{Pair, Remora, free_port, http_exchange};

/// The admin token the tests configure; `make test` scans every remora
/// output for it.
const TOKEN: &str = remora_lab::server::ADMIN_TOKEN;

/// A directory holding the admin token file the tests configure.
fn admin_token() -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    Ok((dir, token_file))
}

/// A remora configuration for a server that is not there, polled every
/// second, its switch guarded by the token in `token_file`.
fn unreachable_with_token(token_file: &std::path::Path) -> Result<String> {
    Ok(format!(
        "{}poll: {{interval: 1s}}\nhttp: {{admin_token_file: {}}}\n",
        mysql_section(free_port()?),
        token_file.display()
    ))
}

/// A FIFO at `path`, where an operator's file should be.
fn mkfifo(path: &std::path::Path) -> Result<()> {
    let made = std::process::Command::new("mkfifo").arg(path).status()?;
    anyhow::ensure!(made.success(), "mkfifo {} failed", path.display());
    Ok(())
}

async fn switch(
    http: SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    http_exchange(http, method, "/maintenance", headers, body).await
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn with_an_admin_token_only_its_holder_can_flip_maintenance_and_never_a_browser() -> Result<()>
{
    let pair = Pair::start().await?;
    let (_dir, token_file) = admin_token()?;
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 10s, stale_after: 30s}}\nhttp: {{admin_token_file: {}}}\n",
            mysql_section(pair.replica.port),
            token_file.display()
        ),
    )
    .await?;
    let http = remora.http;
    assert_eq!(remora.reply().await?, "up ready 100%");

    let bearer = format!("Bearer {TOKEN}");
    let (code, _) = switch(http, "POST", &[], "drain no token").await?;
    assert_eq!(code, 401, "no token: unauthorised");
    let (code, _) = switch(http, "POST", &[("Authorization", "Bearer nope")], "drain").await?;
    assert_eq!(code, 403, "a wrong token: forbidden");
    // A page's script: the browser adds Origin, whatever else it sends.
    let from_a_page = [
        ("Authorization", bearer.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let (code, _) = switch(http, "POST", &from_a_page, "drain from a page").await?;
    assert_eq!(code, 403, "a browser never gets a write through");
    let (code, _) = switch(http, "DELETE", &[("Origin", "null")], "").await?;
    assert_eq!(code, 403);
    assert_eq!(remora.reply().await?, "up ready 100%", "nothing switched");

    let (code, body) = switch(
        http,
        "POST",
        &[("Authorization", bearer.as_str())],
        "drain moving racks",
    )
    .await?;
    assert_eq!(
        (code, body.as_str()),
        (200, "up drain #maintenance: moving racks\n")
    );
    // The switch is applied by the poller, at once but not in this reply's
    // instant.
    remora
        .wait_reply(Duration::from_secs(2), |r| {
            r == "up drain #maintenance: moving racks"
        })
        .await?;

    // A rotated token applies at once, without a reload.
    std::fs::write(&token_file, "rotated-admin-token\n")?;
    let (code, _) = switch(http, "DELETE", &[("Authorization", bearer.as_str())], "").await?;
    assert_eq!(code, 403, "the old token no longer works");
    let (code, _) = switch(
        http,
        "DELETE",
        &[("Authorization", "Bearer rotated-admin-token")],
        "",
    )
    .await?;
    assert_eq!(code, 200);
    remora
        .wait_reply(Duration::from_secs(2), |r| r == "up ready 100%")
        .await?;
    assert!(
        !remora.log().contains(TOKEN) && !remora.log().contains("rotated-admin-token"),
        "tokens are never logged:\n{}",
        remora.log()
    );
    Ok(())
}

#[tokio::test]
async fn without_a_token_a_browser_still_cannot_flip_maintenance() -> Result<()> {
    let remora = Remora::start(remora_bin(), &mysql_section(free_port()?)).await?;
    let (code, _) = switch(
        remora.http,
        "POST",
        &[("Origin", "http://localhost:3000")],
        "drain",
    )
    .await?;
    assert_eq!(code, 403);
    let (code, _) = switch(remora.http, "POST", &[], "drain by an operator").await?;
    assert_eq!(
        code, 200,
        "the loopback rule alone still lets an operator in"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn a_fifo_as_maintenance_file_drains_and_sigterm_still_stops_remora() -> Result<()> {
    let pair = Pair::start().await?;
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("maintenance");
    mkfifo(&fifo)?;
    let mut remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\nmaintenance: {{file: {}}}\n",
            mysql_section(pair.replica.port),
            fifo.display()
        ),
    )
    .await?;
    // The operator wanted the server out; only the reason is lost.
    remora
        .wait_reply(Duration::from_secs(3), |r| {
            r == "up drain #maintenance file unreadable: not a regular file"
        })
        .await?;
    let exited = stop_within_two_seconds(&mut remora).await;
    assert!(exited, "SIGTERM ignored:\n{}", remora.log());
    Ok(())
}

/// SIGTERM, then whether remora exited within 2 s.
async fn stop_within_two_seconds(remora: &mut Remora) -> bool {
    remora
        .signal(remora_lab::signal::SIGTERM)
        .expect("remora is running");
    remora.wait_exit(Duration::from_secs(2)).await.is_some()
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn sigterm_stops_remora_within_two_seconds_while_a_poll_hangs() -> Result<()> {
    let pair = Pair::start().await?;
    let mut remora = Remora::start(
        remora_bin(),
        &format!(
            "mysql:\n  port: {}\n  user: remora\n  password_env: REMORA_MYSQL_PASSWORD\n  \
             connect_timeout: 30s\n  query_timeout: 30s\npoll: {{interval: 100ms, stale_after: 60s}}\n",
            pair.replica.port
        ),
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");
    // A frozen server: every poll now waits out a 30 s query timeout.
    pair.replica.freeze()?;
    let polls_before = polls(&remora).await?;
    // Wait until a poll is under way and stuck: the poll count stops moving.
    let mut stuck = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if polls(&remora).await? == polls_before {
            stuck = true;
            break;
        }
    }
    let exited = stop_within_two_seconds(&mut remora).await;
    pair.replica.thaw()?;
    assert!(stuck, "the poll never hung");
    assert!(
        exited,
        "SIGTERM waited for the hung poll:\n{}",
        remora.log()
    );
    Ok(())
}

async fn polls(remora: &Remora) -> Result<u64> {
    let (_, body) = remora.get("/status").await?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    status["polls"]["total"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no polls.total in {status}"))
}

#[tokio::test]
async fn a_replica_reporting_two_to_the_sixty_four_seconds_of_lag_is_unknown_not_a_panic()
-> Result<()> {
    let fixture = MysqlFixture::start(Flavor::MySql80).await?;
    fixture.set(|s| s.channels = vec![Channel::running("", 1)]);
    let mut remora = Remora::start(
        remora_bin(),
        &format!(
            "mysql: {{port: {}, user: remora}}\npoll: {{interval: 100ms}}\npolicy: {{recover_after: 1}}\n",
            fixture.addr.port()
        ),
    )
    .await?;
    remora
        .wait_reply(Duration::from_secs(5), |r| r == "up ready 100%")
        .await?;
    // MySQL's known glitch: 18446744073709551615 for a moment.
    fixture.set(|s| s.channels[0].seconds_behind = Some(u64::MAX));
    let (reply, _) = remora
        .wait_reply(Duration::from_secs(5), |r| {
            r.contains("implausible lag reported (18446744073709551615s)")
        })
        .await?;
    assert!(
        reply.starts_with("up ready") && reply.contains("#lag ~"),
        "estimated from the last measurement: {reply}"
    );
    // Then NULL: no panic, still answering.
    fixture.set(|s| {
        s.channels[0].seconds_behind = None;
        s.channels[0].io_running = "Connecting";
    });
    remora
        .wait_reply(Duration::from_secs(5), |r| {
            r.ends_with("io thread connecting")
        })
        .await?;
    assert!(remora.is_running(), "{}", remora.log());
    let (code, _) = remora.get("/metrics").await?;
    assert_eq!(code, 200);
    Ok(())
}

/// A password file laid out the way Kubernetes mounts a Secret:
/// `password -> ..data/password`, `..data -> ..<version>`.
struct MountedSecret {
    dir: tempfile::TempDir,
    version: u32,
}

impl MountedSecret {
    fn new(password: &str) -> Result<MountedSecret> {
        let mut secret = MountedSecret {
            dir: tempfile::tempdir()?,
            version: 0,
        };
        secret.rotate(password)?;
        std::os::unix::fs::symlink("..data/password", secret.path())?;
        Ok(secret)
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("password")
    }

    /// A new version, swapped in atomically; no signal is sent.
    fn rotate(&mut self, password: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.version += 1;
        let version = format!("..{}", self.version);
        let folder = self.dir.path().join(&version);
        std::fs::create_dir(&folder)?;
        let file = folder.join("password");
        std::fs::write(&file, format!("{password}\n"))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        let swap = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&version, &swap)?;
        std::fs::rename(&swap, self.dir.path().join("..data"))?;
        Ok(())
    }
}

fn password_file_config(port: u16, file: &std::path::Path) -> String {
    format!(
        "mysql:\n  port: {port}\n  user: remora\n  password_file: {}\n  \
         connect_timeout: 1s\n  query_timeout: 1s\npoll: {{interval: 200ms}}\n\
         policy: {{recover_after: 1}}\n",
        file.display()
    )
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn a_rotated_password_file_is_used_within_two_polls_without_a_reload() -> Result<()> {
    use remora_lab::server::{CHANGED_PASSWORD, REMORA_PASSWORD, REMORA_USER};
    let pair = Pair::start().await?;
    let mut secret = MountedSecret::new(REMORA_PASSWORD)?;
    let remora = Remora::start(
        remora_bin(),
        &password_file_config(pair.replica.port, &secret.path()),
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");

    // Rotate on the server and in the file, then drop remora's session so
    // that it must log in again.
    pair.replica
        .exec(&[&format!(
            "ALTER USER {REMORA_USER}@'%' IDENTIFIED BY '{CHANGED_PASSWORD}'"
        )])
        .await?;
    secret.rotate(CHANGED_PASSWORD)?;
    let polls_before = remora.polls().await?;
    pair.replica.kill_sessions(REMORA_USER).await?;
    remora.wait_until_polls(polls_before + 2).await?;
    assert_eq!(
        remora.reply().await?,
        "up ready 100%",
        "back up within two polls, with no SIGHUP:\n{}",
        remora.log()
    );
    assert!(
        remora.log().contains("mysql.password_file changed"),
        "{}",
        remora.log()
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn a_rejected_password_is_not_retried_at_every_poll_and_a_fixed_file_ends_it() -> Result<()> {
    use remora_lab::server::{REMORA_PASSWORD, WRONG_PASSWORD};
    let pair = Pair::start().await?;
    let mut secret = MountedSecret::new(WRONG_PASSWORD)?;
    let remora = Remora::start(
        remora_bin(),
        &password_file_config(pair.replica.port, &secret.path()),
    )
    .await?;
    assert_eq!(
        remora.reply().await?,
        "down #mysql auth failed (error 1045)"
    );
    let denied = || async {
        let value = pair
            .replica
            .value(
                "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
                    WHERE VARIABLE_NAME = 'ACCESS_DENIED_ERRORS'",
            )
            .await?
            .unwrap_or_default();
        anyhow::Ok(value.parse::<u64>().unwrap_or(0))
    };
    let (denied_before, polls_before) = (denied().await?, remora.polls().await?);
    remora.wait_until_polls(polls_before + 20).await?;
    let tried = denied().await? - denied_before;
    // Twenty polls 200 ms apart are four seconds: logins at most 1 s, 2 s
    // and 4 s apart, instead of twenty.
    assert!(
        tried <= 4,
        "{tried} logins with a rejected password in 20 polls"
    );

    // The operator fixes the file: the very next poll reads it again.
    secret.rotate(REMORA_PASSWORD)?;
    let polls_before = remora.polls().await?;
    remora.wait_until_polls(polls_before + 2).await?;
    assert_eq!(remora.reply().await?, "up ready 100%", "{}", remora.log());
    Ok(())
}

/// `Last_SQL_Error` quotes the row ("Duplicate entry '42' ..."), and a
/// loopback peer may be any local proxy: by default no HTTP answer carries
/// it, only the errno and remora's own phrase. An operator who wants the
/// text opts in, and then only readers on this host see it.
#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn server_error_texts_are_served_to_nobody_unless_the_operator_opts_in() -> Result<()> {
    let pair = Pair::start().await?;
    let port = free_port()?;
    let (_dir, token_file) = admin_token()?;
    let yaml = |error_text: &str| {
        format!(
            "{}poll: {{interval: 200ms}}\nhttp: {{admin_token_file: {}, error_text: {error_text}}}\n",
            mysql_section(pair.replica.port),
            token_file.display()
        )
    };
    let mut remora = Remora::builder(remora_bin(), &yaml("hide"))
        .listening(
            SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            SocketAddr::from(([0, 0, 0, 0], port)),
        )
        .start()
        .await?;
    pair.break_replication(42).await?;
    remora
        .wait_reply(Duration::from_secs(5), |r| {
            r == "down #sql thread error 1062"
        })
        .await?;
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    let outside = SocketAddr::from((remora_lab::non_loopback_ipv4()?, port));
    let status = async |addr: SocketAddr| -> Result<serde_json::Value> {
        let (code, body) = remora_lab::http_get(addr, "/status").await?;
        anyhow::ensure!(code == 200, "{code}");
        Ok(serde_json::from_str(&body)?)
    };
    for path in [
        "/status",
        "/events",
        "/history",
        "/history?format=csv",
        "/",
        "/metrics",
    ] {
        let (code, body) = remora_lab::http_get(local, path).await?;
        assert_eq!(code, 200, "{path}");
        assert!(
            !body.contains("Duplicate entry"),
            "{path} serves row data:\n{body}"
        );
    }
    let hidden = status(local).await?;
    let error = &hidden["replication"][0]["last_sql_error"];
    assert_eq!(error["errno"], 1062, "the errno is for everyone");
    assert_eq!(error["message"], serde_json::Value::Null, "{hidden}");

    remora.rewrite_config(&yaml("show"), None, None)?;
    remora.reload()?;
    let shown = remora_lab::wait_until("error_text: show", Duration::from_secs(10), async || {
        let shown = status(local).await?;
        Ok((!shown["replication"][0]["last_sql_error"]["message"].is_null()).then_some(shown))
    })
    .await?;
    let message = &shown["replication"][0]["last_sql_error"]["message"];
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains("Duplicate entry")),
        "{shown}"
    );
    let remote = status(outside).await?;
    assert_eq!(
        remote["replication"][0]["last_sql_error"]["message"],
        serde_json::Value::Null
    );
    assert!(!remote.to_string().contains("Duplicate entry"), "{remote}");
    assert_eq!(remote["reason"], "sql thread error 1062");
    Ok(())
}

/// A drain an operator set over HTTP outlives a restart (a crash, an OOM
/// kill, `systemctl restart`): the first answer after it is the drain.
#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn a_drain_set_over_http_survives_a_restart() -> Result<()> {
    let pair = Pair::start().await?;
    let (dir, token_file) = admin_token()?;
    let state_file = dir.path().join("switch");
    let mut remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\nhttp: {{admin_token_file: {}}}\n\
             maintenance: {{state_file: {}}}\n",
            mysql_section(pair.replica.port),
            token_file.display(),
            state_file.display()
        ),
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let (code, _) = switch(remora.http, "POST", &auth, "drain moving racks").await?;
    assert_eq!(code, 200);
    let mode = std::fs::metadata(&state_file)?.permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    remora.restart().await?;
    assert_eq!(remora.reply().await?, "up drain #maintenance: moving racks");

    // Switched off, it stays off after the next restart.
    let (code, _) = switch(remora.http, "DELETE", &auth, "").await?;
    assert_eq!(code, 200);
    assert!(!state_file.exists());
    remora.restart().await?;
    assert_eq!(remora.reply().await?, "up ready 100%");

    // A state file that cannot be trusted still means an operator wanted
    // the server out.
    std::fs::write(&state_file, "\u{0}garbage")?;
    remora.restart().await?;
    let reply = remora.reply().await?;
    assert!(
        reply.starts_with("up drain #maintenance state unreadable: starts with"),
        "{reply}"
    );
    Ok(())
}

/// The admin token file is read on every switch, by the same bounded reader
/// as every other file: a FIFO put in its place refuses the switch at once.
#[tokio::test]
async fn a_fifo_as_admin_token_file_refuses_the_switch_without_hanging() -> Result<()> {
    let (_dir, token_file) = admin_token()?;
    let remora = Remora::start(remora_bin(), &unreachable_with_token(&token_file)?).await?;
    std::fs::remove_file(&token_file)?;
    mkfifo(&token_file)?;
    let bearer = format!("Bearer {TOKEN}");
    let (code, body) = switch(remora.http, "POST", &[("Authorization", &bearer)], "drain").await?;
    assert_eq!(
        (code, body.as_str()),
        (503, "the admin token cannot be read\n")
    );
    assert!(
        remora.log().contains("http.admin_token_file: cannot read"),
        "{}",
        remora.log()
    );
    Ok(())
}

/// A remote client hammering the switch cannot flood the log.
#[tokio::test]
async fn refused_switch_attempts_cannot_flood_the_log() -> Result<()> {
    let (_dir, token_file) = admin_token()?;
    let remora = Remora::builder(remora_bin(), &unreachable_with_token(&token_file)?)
        .listening(
            SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            SocketAddr::from(([0, 0, 0, 0], free_port()?)),
        )
        .start()
        .await?;
    let outside = SocketAddr::from((remora_lab::non_loopback_ipv4()?, remora.http.port()));
    for _ in 0..200 {
        let (code, _) = http_exchange(outside, "POST", "/maintenance", &[], "drain").await?;
        assert_eq!(code, 403);
    }
    let logged = remora.log().matches("maintenance switch refused").count();
    assert!(
        (1..=6).contains(&logged),
        "{logged} lines:\n{}",
        remora.log()
    );
    Ok(())
}

/// `tls.ca_file` naming a FIFO (or a hung mount) cannot hang
/// `--check-config` or start-up: exit 2 naming the key.
#[tokio::test]
async fn a_fifo_as_tls_ca_file_is_refused_at_once_naming_the_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("ca.pem");
    mkfifo(&fifo)?;
    let config = dir.path().join("remora.yaml");
    std::fs::write(
        &config,
        format!(
            "mysql: {{host: 127.0.0.1, tls: {{mode: verify_ca, ca_file: {}}}}}\n",
            fifo.display()
        ),
    )?;
    for args in [&["--check-config"][..], &[]] {
        let mut child = tokio::process::Command::new(remora_bin())
            .arg("--config")
            .arg(&config)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stderr = String::new();
        let mut pipe = child.stderr.take().expect("piped");
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut stderr).await?;
            child.wait().await
        })
        .await;
        let status = waited.map_err(|_| anyhow::anyhow!("{args:?}: hung on the FIFO"))??;
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("mysql.tls.ca_file") && stderr.contains("not a regular file"),
            "{args:?}: {stderr}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_reload_from_a_fifo_is_rejected_and_remora_keeps_serving_and_stops_on_sigterm()
-> Result<()> {
    let mut remora = Remora::start(remora_bin(), &mysql_section(free_port()?)).await?;
    let before = remora.reply().await?;
    // The configuration file becomes a FIFO nobody writes to.
    let config = remora.config_path.clone();
    std::fs::remove_file(&config)?;
    mkfifo(&config)?;
    remora.reload()?;
    let polls = remora.polls().await?;
    remora.wait_until_polls(polls + 2).await?;
    assert_eq!(remora.reply().await?, before, "still serving");
    assert!(
        remora.log().contains("reload rejected") && remora.log().contains("not a regular file"),
        "{}",
        remora.log()
    );
    assert!(
        stop_within_two_seconds(&mut remora).await,
        "{}",
        remora.log()
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn a_password_file_readable_by_everyone_is_warned_about_once_not_every_poll() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let pair = Pair::start().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{}\n", remora_lab::server::REMORA_PASSWORD))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
    let remora = Remora::start(
        remora_bin(),
        &password_file_config(pair.replica.port, &file),
    )
    .await?;
    let polls = remora.polls().await?;
    remora.wait_until_polls(polls + 10).await?;
    assert_eq!(remora.reply().await?, "up ready 100%");
    let warnings = remora.log().matches("readable by every user").count();
    assert_eq!(warnings, 1, "{}", remora.log());
    Ok(())
}

/// `systemctl reload` may come while remora is still starting (a
/// `Type=exec` unit counts as started once the binary runs): that SIGHUP
/// must not end it. It is handled from the first line of `main`, before the
/// configuration is even read, not only once remora serves.
#[tokio::test]
async fn a_sighup_while_remora_starts_does_not_end_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (agent, http) = (free_port()?, free_port()?);
    // Nearly 1 MiB of configuration (the most remora reads): reading it
    // takes long enough to see what remora does meanwhile.
    let config = dir.path().join("remora.yaml");
    std::fs::write(
        &config,
        format!(
            "{}{}agent: {{listen: '127.0.0.1:{agent}'}}\nhttp: {{listen: '127.0.0.1:{http}'}}\n",
            "# padding: a long configuration file\n".repeat(27_000),
            mysql_section(free_port()?)
        ),
    )?;
    let mut child = tokio::process::Command::new(remora_bin())
        .arg("--config")
        .arg(&config)
        .env(remora_lab::remora::PASSWORD_ENV, "unused")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().expect("running");
    let hangup = 1u64 << (remora_lab::signal::SIGHUP - 1);
    let handles_hangup = || -> bool {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.lines().any(|line| {
            let mask = line
                .strip_prefix("SigIgn:")
                .or_else(|| line.strip_prefix("SigCgt:"));
            mask.and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                .is_some_and(|mask| mask & hangup != 0)
        })
    };
    let started = std::time::Instant::now();
    while !handles_hangup() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "SIGHUP never handled"
        );
        std::hint::spin_loop();
    }
    let agent = SocketAddr::from(([127, 0, 0, 1], agent));
    let serving = tokio::net::TcpStream::connect(agent).await.is_ok();
    // SAFETY: kill only sends a signal to the child this test started.
    let sent = unsafe { libc::kill(pid as libc::pid_t, remora_lab::signal::SIGHUP) };
    anyhow::ensure!(sent == 0, "kill failed");
    assert!(!serving, "SIGHUP was handled only once remora listened");
    let answered =
        remora_lab::wait_until("remora to answer", Duration::from_secs(10), async || {
            Ok(remora_lab::agent_reply(agent)
                .await
                .ok()
                .filter(|r| !r.is_empty()))
        })
        .await?;
    assert!(answered.starts_with("down #mysql"), "{answered}");
    assert!(child.try_wait()?.is_none(), "remora ended");
    Ok(())
}
