//! The native lab as a newcomer drives it (`make up`, `make down`, `make
//! start-lag`): a failed `up` stops what it started and leaves nothing for
//! the next one to trip over; a bad argument touches nothing.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::Result;

fn lab(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Result<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_remora-lab"));
    command.arg("--dir").arg(dir).args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    Ok(command.output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Processes whose command line mentions `dir`: what a lab there started.
fn started_in(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| remora_lab::process::pid_is_running(*pid))
        .map(remora_lab::process::pid_command)
        .filter(|command| command.contains(&needle))
        .collect()
}

/// Free loopback ports for every listener `up` opens, with HAProxy's read
/// frontend on `haproxy_mysql`.
fn ports(haproxy_mysql: u16) -> Result<Vec<(&'static str, String)>> {
    let port = || remora_lab::free_port().map(|p| p.to_string());
    let bind = |port: String| format!("127.0.0.1:{port}");
    // The remoras bind any free ports and report them: none is guessed.
    let agent = || "0".to_owned();
    Ok(vec![
        ("PRIMARY_PORT", port()?),
        ("REPLICA_PORT", port()?),
        ("PRIMARY_AGENT_PORT", agent()),
        ("REPLICA_AGENT_PORT", agent()),
        ("HAPROXY_MYSQL_BIND", format!("127.0.0.1:{haproxy_mysql}")),
        ("HAPROXY_WRITER_BIND", bind(port()?)),
        ("HAPROXY_STATS_BIND", bind(port()?)),
    ])
}

#[test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
fn a_failed_up_stops_what_it_started_and_the_next_up_is_not_poisoned() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().join("lab");
    // HAProxy's port is taken: up gets as far as HAProxy, then fails.
    let busy = TcpListener::bind("127.0.0.1:0")?;
    let env = ports(busy.local_addr()?.port())?;
    let out = lab(&dir, &["up"], &env)?;
    let stderr = text(&out.stderr);
    println!(
        "up with HAProxy's port busy:\n{}{stderr}",
        text(&out.stdout)
    );
    assert!(
        !out.status.success(),
        "up succeeded with HAProxy's port busy"
    );
    assert!(stderr.contains("haproxy"), "{stderr}");
    assert!(stderr.contains("stopping what it started"), "{stderr}");
    assert_eq!(started_in(&dir), Vec::<String>::new(), "left running");
    assert!(!dir.exists(), "left {}", dir.display());

    // A folder left by some older, unfinished run is named, not misread.
    std::fs::create_dir_all(dir.join("primary").join("data"))?;
    let out = lab(&dir, &["up"], &env)?;
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&dir.join("primary").display().to_string()) && stderr.contains("make down"),
        "{stderr}"
    );
    assert!(!stderr.contains("Access denied"), "{stderr}");
    let out = lab(&dir, &["down"], &[])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.exists(), "down removes what is left");
    Ok(())
}

#[test]
#[ignore = "needs MySQL and HAProxy 3 from the sid root: `make test` builds it and runs this"]
fn the_labs_targets_work_on_mysql_behind_haproxy_3_as_on_mariadb() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().join("lab");
    let haproxy = remora_lab::free_port()?;
    let mut env = ports(haproxy)?;
    env.extend([
        ("SERVER", "mysql".to_owned()),
        ("HAPROXY", "sid".to_owned()),
    ]);
    let run = |args: &[&str]| -> Result<String> {
        let out = lab(&dir, args, &env)?;
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        anyhow::ensure!(out.status.success(), "{args:?}: {said}");
        Ok(said)
    };
    let in_root = || -> Result<Vec<String>> {
        let srv = remora_lab::sid::Root::find()?.path.join("srv");
        let mut names: Vec<String> = (std::fs::read_dir(&srv).into_iter().flatten().flatten())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    };
    let before = in_root()?;
    let up = run(&["up"])?;
    assert!(up.contains("writer: down #not writable: a replica"), "{up}");
    assert!(
        in_root()?.len() > before.len(),
        "the servers live in the sid root"
    );
    // make start-lag: SOURCE_DELAY, shown while the primary is written to.
    run(&["start-lag", "20"])?;
    let mut lag = String::new();
    for _ in 0..10 {
        run(&["stuff"])?;
        std::thread::sleep(std::time::Duration::from_millis(500));
        lag = run(&["slave-lag"])?;
        if !lag.starts_with("Seconds_Behind_Source: 0 ") {
            break;
        }
    }
    assert!(lag.starts_with("Seconds_Behind_Source: "), "{lag}");
    assert!(lag.contains("SQL_Delay: 20"), "{lag}");
    assert!(!lag.starts_with("Seconds_Behind_Source: 0 "), "{lag}");
    run(&["stop-lag"])?;
    assert!(run(&["slave-lag"])?.contains("SQL_Delay: 0"));
    let status = run(&["status"])?;
    assert!(
        status.contains("running") && !status.contains("NOT running"),
        "{status}"
    );
    let down = run(&["down"])?;
    assert!(
        down.contains("stopped primary") && down.contains("stopped haproxy"),
        "{down}"
    );
    assert_eq!(started_in(&dir), Vec::<String>::new(), "left running");
    assert!(!dir.exists(), "left {}", dir.display());
    assert_eq!(
        in_root()?,
        before,
        "down removes what up put in the sid root"
    );
    Ok(())
}

#[test]
fn start_lag_refuses_a_delay_mariadb_cannot_take_before_touching_anything() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let out = lab(scratch.path(), &["start-lag", "99999999999"], &[])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("2147483647"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}
