//! The `remora` command line: `--check-config`, `--once`, `--version`, and
//! how a bad configuration is reported.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::Result;
use common::{mysql_section, remora_bin};
use remora_lab::Pair;
use remora_lab::server::{CHECK_PASSWORD, REMORA_PASSWORD};

fn config_file(yaml: &str) -> Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    file.write_all(yaml.as_bytes())?;
    Ok(file)
}

fn remora(args: &[&str], config: &Path, env: &[(&str, &str)]) -> Result<Output> {
    let mut command = Command::new(remora_bin());
    command.arg("--config").arg(config).args(args);
    command.env_remove("REMORA_MYSQL_PASSWORD");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output()?;
    remora_lab::record_output(
        "cli",
        &format!("{}{}", text(&output.stdout), text(&output.stderr)),
    );
    Ok(output)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_config_prints_the_effective_config_and_never_the_password() -> Result<()> {
    let file = config_file(
        "mysql:\n  port: 3307\n  password_env: PW_FOR_CHECK\npolicy:\n  drain_at: 90s\n",
    )?;
    let out = remora(
        &["--check-config"],
        file.path(),
        &[("PW_FOR_CHECK", CHECK_PASSWORD)],
    )?;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for expected in [
        "port: 3307",
        "password_env: PW_FOR_CHECK",
        "drain_at: 1m 30s",
        "down_at: 5m",
        "min_weight: 10%",
        "listen: 127.0.0.1:9258",
        "listen: 127.0.0.1:9259",
        "max_connections: 1000",
        "mode: disabled",
        "stale_after: 5s",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    assert!(!stdout.contains(CHECK_PASSWORD) && !text(&out.stderr).contains(CHECK_PASSWORD));
    // What it prints is itself a valid configuration.
    let again = config_file(&stdout)?;
    let out = remora(&["--check-config"], again.path(), &[("PW_FOR_CHECK", "x")])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    Ok(())
}

#[test]
fn the_shipped_example_passes_check_config() -> Result<()> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/remora.yaml");
    let out = remora(
        &["--check-config"],
        &example,
        &[("REMORA_MYSQL_PASSWORD", "x")],
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    Ok(())
}

#[test]
fn invalid_configurations_exit_2_naming_the_key() -> Result<()> {
    let cases: &[(&str, &[&str])] = &[
        (
            "mysql:\n  prot: 3307\n",
            &["unknown field `prot`", "line 2"],
        ),
        ("mysql:\n  port: [\n", &["line"]),
        ("poll:\n  interval: 0s\n", &["poll.interval"]),
        ("poll:\n  interval: soon\n", &["poll.interval", "line 2"]),
        ("policy:\n  min_weight: 0%\n", &["policy.min_weight"]),
        (
            "policy:\n  drain_at: 10s\n",
            &["policy.drain_at", "policy.min_weight_at"],
        ),
        (
            "policy:\n  down_at: 30s\n",
            &["policy.down_at", "policy.drain_at"],
        ),
        ("policy:\n  recover_after: 0\n", &["policy.recover_after"]),
        (
            "mysql:\n  password_env: A\n  password_file: /b\n",
            &["mysql.password_env", "mysql.password_file"],
        ),
        ("agent:\n  listen: everywhere\n", &["agent.listen"]),
        (
            "agent:\n  listen: 9258\n",
            &["agent.listen", "like 127.0.0.1:9258"],
        ),
        ("poll:\n  interval: 1\n", &["poll.interval", "like 1s"]),
        (
            "agent:\n  request_timeout: 300000000000y\n",
            &["agent.request_timeout", "at most 1year"],
        ),
        (
            "pools:\n  main: {ramp_up: 2y}\n",
            &["pools.main.ramp_up", "at most 1year"],
        ),
        (
            "policy:\n  recover_after: 4000000000\n",
            &["policy.recover_after", "at most 10000"],
        ),
        (
            "mysql:\n  tls: {mode: verify_ca}\n",
            &["mysql.tls.ca_file", "verify_ca"],
        ),
        ("mysql:\n\tport: 3307\n", &["tab", "line 2"]),
    ];
    for (yaml, fragments) in cases {
        let file = config_file(yaml)?;
        for args in [&["--check-config"][..], &[]] {
            let out = remora(args, file.path(), &[])?;
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{yaml:?} {args:?}: {stderr}");
            for fragment in *fragments {
                assert!(
                    stderr.contains(fragment),
                    "{yaml:?}: {fragment:?} not in {stderr}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn missing_password_sources_are_clear_startup_errors() -> Result<()> {
    let file = config_file("mysql:\n  password_env: NOT_SET_ANYWHERE\n")?;
    for args in [&["--once"][..], &[]] {
        let out = remora(args, file.path(), &[])?;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("mysql.password_env") && stderr.contains("NOT_SET_ANYWHERE"),
            "{stderr}"
        );
    }
    // A config is checked in CI or on a workstation, where the secret is
    // not: everything else is validated, the missing secret is a warning.
    let out = remora(&["--check-config"], file.path(), &[])?;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("mysql.password_env"),
        "{stderr}"
    );
    let file = config_file("mysql:\n  password_file: /nonexistent/remora-secret\n")?;
    let out = remora(&[], file.path(), &[])?;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("mysql.password_file") && stderr.contains("/nonexistent/remora-secret")
    );

    let out = remora(&[], Path::new("/nonexistent/remora.yaml"), &[])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/remora.yaml"));
    Ok(())
}

#[test]
fn an_unresolvable_host_is_named() -> Result<()> {
    let file = config_file("mysql:\n  host: no-such-host.invalid\n  connect_timeout: 3s\n")?;
    let out = remora(&["--once"], file.path(), &[])?;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("down #mysql unreachable: cannot resolve host no-such-host.invalid\n"),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn version_prints_the_crate_version() -> Result<()> {
    let out = Command::new(remora_bin()).arg("--version").output()?;
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("remora {}", env!("CARGO_PKG_VERSION"))
    );
    Ok(())
}

#[test]
fn once_against_nothing_prints_down_and_exits_1() -> Result<()> {
    let port = remora_lab::free_port()?;
    let file = config_file(&format!("mysql:\n  port: {port}\n"))?;
    let out = remora(&["--once"], file.path(), &[])?;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let (line, json) = stdout.split_once('\n').expect("a line, then JSON");
    assert_eq!(line, "down #mysql unreachable: connection refused");
    let status: serde_json::Value = serde_json::from_str(json)?;
    assert_eq!(status["verdict"], "down");
    Ok(())
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn once_against_a_real_replica_prints_up_and_exits_0() -> Result<()> {
    let pair = Pair::start().await?;
    let file = config_file(&mysql_section(pair.replica.port))?;
    let path = file.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        remora(
            &["--once"],
            &path,
            &[("REMORA_MYSQL_PASSWORD", REMORA_PASSWORD)],
        )
    })
    .await??;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let (line, json) = stdout.split_once('\n').expect("a line, then JSON");
    assert_eq!(line, "up ready 100%");
    let status: serde_json::Value = serde_json::from_str(json)?;
    assert_eq!(status["role"], "replica");
    assert_eq!(status["replication"][0]["sql_thread"], "Yes");
    assert!(!stdout.contains(REMORA_PASSWORD));
    Ok(())
}

#[test]
fn a_password_file_readable_by_every_user_is_warned_about() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("password");
    std::fs::write(&secret, format!("{CHECK_PASSWORD}\n"))?;
    let file = config_file(&format!("mysql:\n  password_file: {}\n", secret.display()))?;
    for (mode, warned) in [(0o644, true), (0o640, false), (0o600, false)] {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode))?;
        let out = remora(&["--check-config"], file.path(), &[])?;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert_eq!(
            stderr.contains("mysql.password_file") && stderr.contains("readable by every user"),
            warned,
            "mode {mode:o}: {stderr}"
        );
        assert!(!stderr.contains(CHECK_PASSWORD) && !text(&out.stdout).contains(CHECK_PASSWORD));
    }
    Ok(())
}

/// `--once` with targets polls every target and prints a line each, then
/// their documents by name; 1 unless every one is up. `--replay` replays
/// under the target `--target` names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_prints_every_target_and_replay_takes_a_target() -> Result<()> {
    use remora_lab::fixture::{Channel, Flavor, MysqlFixture};
    let replica = |lag| async move {
        let fixture = MysqlFixture::start(Flavor::MySql57).await?;
        fixture.set(|s| {
            s.read_only = true;
            s.channels = vec![Channel::running("", lag)];
        });
        anyhow::Ok(fixture)
    };
    let (fresh, behind) = (replica(0).await?, replica(16).await?);
    let config = config_file(&format!(
        "mysql: {{user: remora}}\npools: {{main: {{drain_at: 10s, down_at: 60s}}}}\n\
         targets:\n  fresh: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n  behind: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n",
        fresh.addr.port(),
        behind.addr.port()
    ))?;
    let out = tokio::task::spawn_blocking({
        let path = config.path().to_owned();
        move || remora(&["--once"], &path, &[])
    })
    .await??;
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("behind: up ready 55% #lag 16.0s\nfresh: up ready 100%\n"),
        "{stdout}"
    );
    let documents: serde_json::Value =
        serde_json::from_str(stdout.splitn(3, '\n').nth(2).unwrap_or_default())?;
    assert_eq!(
        documents["behind"]["pools"]["main"]["verdict"], "drain",
        "{documents}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "up in the default policy: {stdout}"
    );

    let trace = config_file("t,lag\n0,0\n1,20\n2,20\n")?;
    let trace_path = trace.path().display().to_string();
    let replayed = remora(
        &["--replay", &trace_path, "--target", "behind"],
        config.path(),
        &[],
    )?;
    assert_eq!(
        replayed.status.code(),
        Some(0),
        "{}",
        text(&replayed.stderr)
    );
    assert!(
        text(&replayed.stdout).contains("pool main:"),
        "{}",
        text(&replayed.stdout)
    );
    let unnamed = remora(&["--replay", &trace_path], config.path(), &[])?;
    assert_eq!(unnamed.status.code(), Some(2));
    assert!(
        text(&unnamed.stderr).contains("--target NAME"),
        "{}",
        text(&unnamed.stderr)
    );
    let unknown = remora(
        &["--replay", &trace_path, "--target", "nope"],
        config.path(),
        &[],
    )?;
    assert!(
        text(&unknown.stderr).contains("no target named \"nope\""),
        "{}",
        text(&unknown.stderr)
    );
    Ok(())
}
