//! Everything the project ships for operators must stay true: example
//! configurations load, the compose file points at files that exist and
//! passes HAProxy only variables its config reads, the systemd unit verifies.
//! (`haproxy -c` on every shipped HAProxy config is in tests/haproxy.rs.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use anyhow::{Context, Result};
use remora::config::Config;
use serde::Deserialize;
use serde_yaml::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn yaml_documents(path: &str) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(repo(path))?;
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Ok(Value::deserialize(document)?))
        .collect()
}

#[test]
fn the_kubernetes_example_carries_a_valid_remora_config() -> Result<()> {
    let documents = yaml_documents("examples/kubernetes-sidecar.yaml")?;
    let config_map = documents
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .context("a ConfigMap")?;
    let text = config_map["data"]["remora.yaml"]
        .as_str()
        .context("remora.yaml")?;
    let config = Config::from_yaml(text)?;
    assert_eq!(
        config.mysql.password_file.as_deref(),
        Some(Path::new("/run/secrets/remora/password")),
        "the password comes from the mounted Secret"
    );
    assert_eq!(config.pools.len(), 3);
    let kinds: BTreeSet<&str> = documents
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    assert!(kinds.is_superset(&BTreeSet::from([
        "Secret",
        "ConfigMap",
        "Service",
        "StatefulSet"
    ])));
    Ok(())
}

/// The Kubernetes example's `preStop` hooks, run for real against a real
/// remora: remora's own drains through the token-guarded switch with
/// `remora ctl --wait` and writes the file mysqld's hook waits on; nobody
/// sleeps a guessed number of seconds.
#[tokio::test]
async fn the_kubernetes_pre_stop_hooks_drain_and_mysqld_waits_on_a_named_file() -> Result<()> {
    let documents = yaml_documents("examples/kubernetes-sidecar.yaml")?;
    let config_map = documents
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .context("a ConfigMap")?;
    let config = Config::from_yaml(
        config_map["data"]["remora.yaml"]
            .as_str()
            .context("remora.yaml")?,
    )?;
    let token_path = config
        .http
        .admin_token_file
        .context("the example sets an admin token")?;
    let set = documents
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .context("a StatefulSet")?;
    let containers = set["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .context("containers")?;
    let hook = |name: &str| -> Result<Vec<String>> {
        let container = (containers.iter())
            .find(|c| c["name"] == name)
            .with_context(|| format!("the {name} container"))?;
        let command = container["lifecycle"]["preStop"]["exec"]["command"]
            .as_sequence()
            .with_context(|| format!("a preStop exec hook on {name}"))?;
        Ok(command
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect())
    };
    let (mysqld_hook, remora_hook) = (hook("mariadb")?, hook("remora")?);
    let everything = format!("{mysqld_hook:?}{remora_hook:?}");
    assert!(
        !everything.contains("sleep 1") && !everything.contains("\"sleep\""),
        "{everything}"
    );
    assert_eq!(remora_hook[1..3], ["ctl", "--config"], "{remora_hook:?}");
    assert!(
        remora_hook.contains(&"--wait".to_owned()),
        "{remora_hook:?}"
    );

    // remora's hook, pointed at a remora of this test (its bound address,
    // its token) and a marker file of this test.
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, remora_lab::server::ADMIN_TOKEN)?;
    let remora = remora_lab::Remora::start(
        Path::new(env!("CARGO_BIN_EXE_remora")),
        &format!(
            "mysql: {{port: {}}}\nhttp: {{admin_token_file: {}}}\n",
            remora_lab::free_port()?,
            token_file.display()
        ),
    )
    .await?;
    let ctl_config = dir.path().join("remora.yaml");
    std::fs::write(
        &ctl_config,
        format!(
            "http: {{listen: {}, admin_token_file: {}}}\n",
            remora.http,
            token_file.display()
        ),
    )?;
    let marker = dir.path().join("drained");
    assert!(token_path.starts_with("/run/secrets"), "{token_path:?}");
    let places = [
        ("/etc/remora/remora.yaml", ctl_config.display().to_string()),
        ("/var/lib/remora/drained", marker.display().to_string()),
    ];
    run_and_see(
        &remora,
        &remora_hook,
        &places,
        "up drain #maintenance: pod stopping",
    )
    .await?;

    // mysqld's hook returns once the file is there, and shows what it says.
    let script = (mysqld_hook.last().context("the script")?)
        .replace("/var/lib/remora/drained", &marker.display().to_string());
    let waited = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output(),
    )
    .await
    .context("mysqld's preStop returned")??;
    assert!(waited.status.success());
    assert!(String::from_utf8_lossy(&waited.stdout).contains("nothing to wait for"));
    Ok(())
}

/// The command of `examples/mariadb-drain.conf`'s `ExecStop=`, its `-`
/// (a failure does not stop the stop) taken off.
fn drain_drop_in_command() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(repo("examples/mariadb-drain.conf"))?;
    let line = (text.lines())
        .find_map(|line| line.strip_prefix("ExecStop="))
        .context("an ExecStop= line")?;
    Ok(common::shell_words(line.trim_start_matches('-')))
}

/// The drop-in that drains before mysqld's stop signal really drains: its
/// `ExecStop=` command, pointed at a remora of this test, switches it to
/// drain and returns 0 (no HAProxy asks here, so there is nobody to wait for).
#[tokio::test]
async fn the_systemd_drop_in_drains_through_remora_before_mysqld_stops() -> Result<()> {
    let command = drain_drop_in_command()?;
    assert_eq!(
        command[..4],
        [
            "/usr/bin/remora",
            "ctl",
            "--config",
            "/etc/remora/remora.yaml"
        ]
    );
    assert!(command.contains(&"--wait".to_owned()), "{command:?}");
    let remora = remora_lab::Remora::start(
        Path::new(env!("CARGO_BIN_EXE_remora")),
        &format!("mysql: {{port: {}}}\n", remora_lab::free_port()?),
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let ctl_config = dir.path().join("remora.yaml");
    std::fs::write(&ctl_config, format!("http: {{listen: {}}}\n", remora.http))?;
    let places = [("/etc/remora/remora.yaml", ctl_config.display().to_string())];
    run_and_see(
        &remora,
        &command,
        &places,
        "up drain #maintenance: mysqld stopping",
    )
    .await
}

/// Runs a shipped `remora …` command line (its program is the packaged
/// path) with the paths in `places` moved into the test's, and waits until
/// `remora` answers `answer`.
async fn run_and_see(
    remora: &remora_lab::Remora,
    command: &[String],
    places: &[(&str, String)],
    answer: &str,
) -> Result<()> {
    let args: Vec<String> = (command[1..].iter())
        .map(|arg| {
            (places.iter())
                .find(|(shipped, _)| arg == shipped)
                .map_or_else(|| arg.clone(), |(_, here)| here.clone())
        })
        .collect();
    let out = common::run_remora(&args)?;
    assert!(out.status.success(), "{}", common::said(&out));
    remora
        .wait_reply(std::time::Duration::from_secs(2), |r| r == answer)
        .await?;
    Ok(())
}

#[test]
#[ignore = "needs systemd-analyze and mariadb-server's unit: `make test` installs them and runs this"]
fn the_drain_drop_in_verifies_beside_the_real_mariadb_unit() -> Result<()> {
    // systemd reads NAME.service.d/ beside the unit it verifies. Without the
    // `-`, a command that is not there fails the verification, so this
    // proves the drop-in is read.
    let dir = tempfile::tempdir()?;
    let unit = dir.path().join("mariadb.service");
    std::fs::copy("/usr/lib/systemd/system/mariadb.service", &unit)
        .context("mariadb-server's systemd unit")?;
    let drop_ins = dir.path().join("mariadb.service.d");
    std::fs::create_dir(&drop_ins)?;
    let text = std::fs::read_to_string(repo("examples/mariadb-drain.conf"))?;
    let verify = |binary: &str| -> Result<std::process::Output> {
        let drop_in = text
            .replace("ExecStop=-/usr/bin/remora", &format!("ExecStop={binary}"))
            .replace(
                "/etc/remora/remora.yaml",
                &repo("examples/remora.yaml").display().to_string(),
            );
        std::fs::write(drop_ins.join("remora-drain.conf"), drop_in)?;
        Ok(Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()?)
    };
    let output = verify(env!("CARGO_BIN_EXE_remora"))?;
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
    let missing = verify("/nonexistent/remora")?;
    assert!(!missing.status.success(), "the drop-in was not read");
    Ok(())
}

/// Every Kubernetes manifest in examples/: a YAML file whose documents
/// carry `apiVersion` and `kind`.
fn kubernetes_manifests() -> Result<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(repo("examples"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") {
            continue;
        }
        let path = format!("examples/{name}");
        let documents = yaml_documents(&path)?;
        if documents
            .iter()
            .any(|document| document.get("apiVersion").is_some() && document.get("kind").is_some())
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

#[test]
#[ignore = "needs kubernetes-validate (PyPI): `make test` installs it and runs this"]
fn every_kubernetes_manifest_passes_the_schema_validator() -> Result<()> {
    // `make deps` installs it into target/tools-venv; the schemas ship with
    // it, so it works offline.
    let validator = std::env::var_os("KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("target/tools-venv/bin/kubernetes-validate"));
    let manifests = kubernetes_manifests()?;
    assert!(
        !manifests.is_empty(),
        "examples/ has no Kubernetes manifest"
    );
    for manifest in manifests {
        let output = Command::new(&validator)
            .args(["--strict", "--quiet"])
            .arg(repo(&manifest))
            .output()
            .with_context(|| {
                format!("running {} (`make deps` installs it)", validator.display())
            })?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && said.trim().is_empty(),
            "{manifest}: {said}"
        );
    }
    Ok(())
}

#[test]
#[ignore = "needs docker compose or Debian's docker-compose: `make test` installs it and runs this"]
fn the_compose_file_passes_docker_compose_config() -> Result<()> {
    // The compose plugin when the docker client has it, else Debian's
    // docker-compose; neither needs a Docker engine for `config`.
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|output| output.status.success());
    let (program, first): (&str, &[&str]) = if plugin {
        ("docker", &["compose"])
    } else {
        ("docker-compose", &[])
    };
    for profile in ["mariadb", "percona"] {
        let output = Command::new(program)
            .args(first)
            .arg("-f")
            .arg(repo("docker-compose.yml"))
            .args(["--profile", profile, "config", "--quiet"])
            .output()
            .with_context(|| format!("running {program} (`make deps` installs docker-compose)"))?;
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "profile {profile}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The central remora's Deployment: its config and targets ConfigMaps are
/// what remora runs, and its liveness probe answers 200 while every target
/// is down (a database's health must never restart remora).
#[tokio::test]
async fn the_central_kubernetes_example_runs_and_stays_alive_with_every_target_down() -> Result<()>
{
    let documents = yaml_documents("examples/kubernetes-fleet.yaml")?;
    let data = |name: &str, key: &str| -> Result<String> {
        let map = (documents.iter())
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
            .with_context(|| format!("ConfigMap {name}"))?;
        Ok(map["data"][key]
            .as_str()
            .with_context(|| format!("{name}: {key}"))?
            .to_owned())
    };
    let deployment = (documents.iter())
        .find(|d| d["kind"] == "Deployment")
        .context("a Deployment")?;
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let liveness = container["livenessProbe"]["httpGet"]["path"]
        .as_str()
        .context("an HTTP liveness probe")?;

    // Secrets, state and the targets file in this test's directory.
    let dir = tempfile::tempdir()?;
    let file = |name: &str, text: &str| -> Result<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    };
    let mut yaml = data("remora-fleet-config", "remora.yaml")?;
    for (from, to) in [
        (
            "/run/secrets/remora/password",
            file("password", "not-used-Pw\n")?,
        ),
        (
            "/run/secrets/remora-admin/token",
            file("token", remora_lab::server::ADMIN_TOKEN)?,
        ),
        (
            "/var/lib/remora/switch",
            dir.path().join("switch").display().to_string(),
        ),
        (
            "/etc/remora-targets/targets.yaml",
            file("targets.yaml", &data("remora-targets", "targets.yaml")?)?,
        ),
    ] {
        assert!(yaml.contains(from), "{from}");
        yaml = yaml.replace(from, &to);
    }
    let remora = remora_lab::Remora::start(Path::new(env!("CARGO_BIN_EXE_remora")), &yaml).await?;
    let status = remora.status().await?;
    let targets = status["targets"]
        .as_object()
        .context("targets in /status")?;
    for name in ["primary", "replica-1", "replica-2", "aurora-r1"] {
        assert!(targets.contains_key(name), "{name} missing: {status}");
    }
    assert_eq!(remora.reply().await?.trim(), "down #no target named");
    let (code, body) = remora.get(liveness).await?;
    assert_eq!(code, 200, "the liveness probe {liveness}: {body}");
    assert_eq!(
        remora.get("/health").await?.0,
        400,
        "/health needs ?target= here"
    );
    Ok(())
}

#[test]
fn the_compose_file_refers_to_real_files_and_real_haproxy_variables() -> Result<()> {
    let compose = &yaml_documents("docker-compose.yml")?[0];
    let services = compose["services"].as_mapping().context("services")?;
    // One profile per flavour, each a whole lab; the Makefile's lab targets
    // name these services.
    for (flavor, prefix) in [("mariadb", ""), ("percona", "percona-")] {
        let names: BTreeSet<String> = (services.iter())
            .filter(|(_, service)| service["profiles"] == Value::from(vec![flavor]))
            .filter_map(|(name, _)| name.as_str().map(str::to_owned))
            .collect();
        let expected: BTreeSet<String> = [
            format!("{prefix}primary"),
            format!("{prefix}replica"),
            format!("remora-{prefix}primary"),
            format!("remora-{prefix}replica"),
            if prefix.is_empty() {
                "haproxy".to_owned()
            } else {
                format!("haproxy-{}", flavor)
            },
        ]
        .into();
        assert_eq!(names, expected, "profile {flavor}");
    }
    assert!(
        services.values().all(|s| s["profiles"].is_sequence()),
        "every service belongs to a flavour"
    );
    // Every bind-mounted file and the Dockerfile exist.
    let mut mounts = Vec::new();
    for service in services.values() {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let spec = volume.as_str().context("short volume syntax")?;
            mounts.push(spec.split(':').next().unwrap_or_default().to_owned());
        }
    }
    let anchor = &compose["x-remora"];
    for volume in anchor["volumes"].as_sequence().into_iter().flatten() {
        mounts.push(
            volume
                .as_str()
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    mounts.push(
        anchor["build"]["dockerfile"]
            .as_str()
            .context("dockerfile")?
            .to_owned(),
    );
    for mount in &mounts {
        assert!(repo(mount).exists(), "compose refers to missing {mount}");
    }
    // The remora config it mounts is valid.
    Config::load(&repo("examples/remora-pools.yaml"))?;
    // Each variable compose gives HAProxy is one haproxy.cfg reads.
    let cfg = std::fs::read_to_string(repo("haproxy/haproxy.cfg"))?;
    for haproxy in ["haproxy", "haproxy-percona"] {
        let env = services[&Value::from(haproxy)]["environment"]
            .as_mapping()
            .context("haproxy environment")?;
        for key in env.keys().filter_map(Value::as_str) {
            assert!(
                cfg.contains(&format!("${{{key}-")),
                "haproxy.cfg never reads {key}"
            );
        }
    }
    Ok(())
}

#[test]
fn the_dockerfile_copies_files_that_exist() -> Result<()> {
    let dockerfile = std::fs::read_to_string(repo("examples/Dockerfile"))?;
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let source = line.split_whitespace().nth(1).context("COPY source")?;
        if source != "." {
            assert!(repo(source).exists(), "Dockerfile copies missing {source}");
        }
    }
    assert!(
        dockerfile.contains("USER nonroot"),
        "runs as a non-root user"
    );
    Ok(())
}

/// The unit restarts remora however often it fails, caps its memory so
/// that it, not mysqld, is killed, and gives the switch's state file a home
/// the shipped config points at.
#[test]
fn the_systemd_unit_restarts_forever_caps_memory_and_keeps_the_switch() -> Result<()> {
    let unit = std::fs::read_to_string(repo("examples/remora.service"))?;
    for line in [
        "StartLimitIntervalSec=0",
        "Restart=always",
        "StateDirectory=remora",
        "SystemCallFilter=setpriority",
        "SystemCallErrorNumber=EPERM",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
    assert!(
        unit.lines().any(|l| l.starts_with("MemoryMax=")),
        "MemoryMax missing"
    );
    let config = remora::config::Config::load(&repo("examples/remora.yaml"))?;
    assert_eq!(
        config.maintenance.state_file.as_deref(),
        Some(std::path::Path::new("/var/lib/remora/switch"))
    );
    Ok(())
}

#[test]
#[ignore = "needs systemd-analyze (Debian's systemd): `make test` installs it and runs this"]
fn the_systemd_unit_verifies() -> Result<()> {
    // systemd-analyze checks that ExecStart exists: point it at the binary
    // cargo built, and the config at the shipped example.
    let unit = std::fs::read_to_string(repo("examples/remora.service"))?
        .replace("/usr/bin/remora", env!("CARGO_BIN_EXE_remora"))
        .replace(
            "/etc/remora/remora.yaml",
            &repo("examples/remora.yaml").display().to_string(),
        );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("remora.service");
    std::fs::write(&path, unit)?;
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .context("running systemd-analyze (Debian package systemd)")?;
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
    Ok(())
}

/// The statements of a SQL script: comments dropped, split at `;`.
fn statements_of(sql: &str) -> Vec<String> {
    let without_comments: String = sql
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// The SQL a lab flavour runs: its primary's init script, the heredoc of
/// its replica's, and what the Makefile's lab targets pass to `-e`.
fn lab_sql(flavor: &str, primary: &str, replica: &str) -> Result<Vec<String>> {
    let mut sql = statements_of(&std::fs::read_to_string(repo(primary))?);
    let script = std::fs::read_to_string(repo(replica))?;
    let heredoc = script
        .split_once("<<'SQL'\n")
        .and_then(|(_, rest)| rest.split_once("\nSQL"))
        .context("the replica script's SQL heredoc")?
        .0;
    sql.extend(statements_of(heredoc));
    let dry_run = Command::new("make")
        .args(["-s", "-n", "DOCKER=yes", &format!("FLAVOR={flavor}")])
        .args(["start-lag", "stop-lag", "slave-lag", "stuff"])
        .current_dir(repo(""))
        .output()?;
    assert!(dry_run.status.success(), "{dry_run:?}");
    let commands = String::from_utf8(dry_run.stdout)?.replace("\\\n", " ");
    for command in commands.lines() {
        let quoted = command
            .split_once(" -e \"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .with_context(|| format!("no -e \"…\" in {command}"))?
            .0;
        sql.extend(statements_of(&quoted.replace("\\G", "")));
    }
    Ok(sql)
}

async fn refused_by_mysql_8(statements: &[String]) -> Result<Vec<String>> {
    use mysql_async::prelude::Queryable;
    use remora_lab::fixture::{Flavor, MysqlFixture};
    let fixture = MysqlFixture::start(Flavor::MySql80).await?;
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(fixture.addr.port())
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts).await?;
    let mut refused = Vec::new();
    for statement in statements {
        if let Err(err) = conn.query_drop(statement).await {
            refused.push(format!("{statement}: {err}"));
        }
    }
    conn.disconnect().await?;
    Ok(refused)
}

#[tokio::test]
async fn the_percona_lab_runs_only_mysql_8_sql() -> Result<()> {
    let percona = lab_sql(
        "percona",
        "lab/compose/percona-primary.sql",
        "lab/compose/percona-replica.sh",
    )?;
    assert!(percona.len() >= 15, "{percona:#?}");
    assert!(
        percona
            .iter()
            .any(|s| s.starts_with("CHANGE REPLICATION SOURCE TO SOURCE_DELAY=300")),
        "make start-lag FLAVOR=percona: {percona:#?}"
    );
    assert_eq!(refused_by_mysql_8(&percona).await?, Vec::<String>::new());
    // The check can fail: the MariaDB lab's SQL is not MySQL 8's.
    let mariadb = lab_sql(
        "mariadb",
        "lab/compose/primary.sql",
        "lab/compose/replica.sh",
    )?;
    let refused = refused_by_mysql_8(&mariadb).await?;
    for mariadb_only in [
        "SLAVE MONITOR",
        "MASTER_USE_GTID",
        "gtid_slave_pos",
        "CHANGE MASTER TO",
    ] {
        assert!(
            refused.iter().any(|r| r.contains(mariadb_only)),
            "{mariadb_only} refused: {refused:#?}"
        );
    }
    Ok(())
}

#[test]
fn the_fleet_example_and_its_targets_file_name_what_haproxy_fleet_cfg_asks_for() -> Result<()> {
    let config = Config::load(&repo("examples/remora-fleet.yaml"))?;
    let text = std::fs::read_to_string(repo("examples/targets.yaml"))?;
    let from_file = remora::config::parse_targets(&text).map_err(anyhow::Error::msg)?;
    let targets = config.target_configs(&from_file)?;
    let haproxy = std::fs::read_to_string(repo("haproxy/haproxy-fleet.cfg"))?;
    for line in haproxy
        .lines()
        .filter(|line| line.contains("agent-send \""))
    {
        let asked = line.split("agent-send \"").nth(1).unwrap_or_default();
        let asked = asked.trim_end_matches("\\n\"");
        let (target, pool) = asked.split_once('/').unwrap_or((asked, ""));
        assert!(
            targets.contains_key(target),
            "{target} is not a target: {line}"
        );
        assert!(
            config.pools.contains_key(pool),
            "{pool} is not a pool: {line}"
        );
    }
    assert_eq!(targets["replica"].member_of, ["main"]);
    assert_eq!(
        targets["aurora-r1"].poll.interval,
        std::time::Duration::from_secs(2)
    );
    assert_eq!(targets["replica"].mysql.user, "remora", "inherited");
    Ok(())
}
