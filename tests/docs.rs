//! The README, CONTRIBUTING.md and docs/ checked against the code, so that
//! what an operator copies works: every YAML block is a configuration remora
//! accepts, every `remora` command line parses, every option they name
//! exists, every link and anchor leads somewhere, every configuration key is
//! in the reference, and every HAProxy server line carries what remora needs.
//! With real servers, every HAProxy block passes `haproxy -c`, and the
//! README's own walk (its grants, its configuration, its server line, its
//! `nc` and `curl` checks and its `remora ctl drain --wait`) is followed
//! against a real MariaDB replica behind a real HAProxy.
// This test times real processes with the wall clock, on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::{CommandFactory, Parser};
use common::{remora_bin, shell_words};
use remora::cli::Cli;
use remora::config::Config;
use remora_lab::haproxy::{Haproxy, Release, Targets};
use remora_lab::server::{CHANGED_PASSWORD, Pair};
use remora_lab::{Engine, Remora};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A Markdown file an operator or contributor reads.
struct Doc {
    /// Relative to the repository, as links from other docs name it.
    path: String,
    text: String,
}

/// The README, CONTRIBUTING.md and every file in docs/.
fn docs() -> Vec<Doc> {
    let mut paths = vec!["README.md".to_owned(), "CONTRIBUTING.md".to_owned()];
    let mut in_docs: Vec<String> = std::fs::read_dir(repo("docs"))
        .expect("docs/ exists")
        .map(|entry| {
            entry
                .expect("readable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    in_docs.sort();
    paths.extend(in_docs);
    paths
        .into_iter()
        .map(|path| Doc {
            text: std::fs::read_to_string(repo(&path)).expect("readable"),
            path,
        })
        .collect()
}

/// A fenced code block: its language and its lines, fence indentation removed.
struct Block {
    /// `README.md:42`, where the block's first line is.
    at: String,
    lang: String,
    body: String,
}

fn blocks(doc: &Doc) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<(usize, usize, String, Vec<&str>)> = None;
    for (number, line) in doc.text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((number + 2, indent, lang.trim().to_owned(), vec![])),
            (Some(_), Some("")) => {
                let (first, _, lang, lines) = open.take().expect("open");
                found.push(Block {
                    at: format!("{}:{first}", doc.path),
                    lang,
                    body: lines.join("\n"),
                });
            }
            (Some((_, indent, _, lines)), _) => {
                lines.push(line.get(*indent..).unwrap_or(line.trim_start()))
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{}: a code block is never closed", doc.path);
    found
}

fn every_block(lang: &str) -> Vec<Block> {
    docs()
        .iter()
        .flat_map(blocks)
        .filter(|block| block.lang == lang)
        .collect()
}

#[test]
fn every_yaml_block_is_a_configuration_remora_accepts() {
    let yaml = every_block("yaml");
    assert!(yaml.len() >= 3, "the README and docs show configurations");
    for block in yaml {
        if let Err(err) = Config::from_yaml(&block.body) {
            panic!("{}: remora refuses this configuration: {err}", block.at);
        }
    }
}

/// The `remora …` command on a line of a shell block, environment
/// assignments and a `$ ` prompt left out; none when the line runs
/// something else.
fn remora_command(line: &str) -> Option<Vec<String>> {
    let line = line.trim_start().trim_start_matches("$ ");
    let words: Vec<String> = shell_words(line)
        .into_iter()
        .skip_while(|word| {
            word.split_once('=')
                .is_some_and(|(name, _)| !name.contains('/'))
        })
        .collect();
    let program = words.first()?;
    (program == "remora" || program.ends_with("/remora")).then_some(words)
}

#[test]
fn every_remora_command_in_the_docs_is_one_the_binary_accepts() {
    let mut checked = 0;
    for block in ["sh", "console"].into_iter().flat_map(every_block) {
        for line in block.body.lines() {
            let Some(words) = remora_command(line) else {
                continue;
            };
            if let Err(err) = Cli::try_parse_from(&words) {
                use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
                assert!(
                    matches!(err.kind(), DisplayHelp | DisplayVersion),
                    "{}: `{}` is refused: {err}",
                    block.at,
                    line.trim()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} remora commands found");
}

/// Every long option of remora and of its subcommands.
fn long_options() -> BTreeSet<String> {
    fn collect(command: &clap::Command, into: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            into.extend(arg.get_long().map(str::to_owned));
        }
        for sub in command.get_subcommands() {
            collect(sub, into);
        }
    }
    let mut options = BTreeSet::from(["help".to_owned(), "version".to_owned()]);
    collect(&Cli::command(), &mut options);
    options
}

#[test]
fn every_option_a_synopsis_names_is_one_remora_has() {
    let known = long_options();
    let mut checked = 0;
    for doc in docs() {
        for block in blocks(&doc) {
            for line in block.body.lines().map(str::trim_start) {
                if !line.starts_with("remora ") && !line.starts_with("$ remora ") {
                    continue;
                }
                for word in line.split_whitespace() {
                    let word = word.trim_matches(|c| matches!(c, '[' | ']' | '`' | ',' | ')'));
                    if let Some(option) = word.strip_prefix("--") {
                        let option = option.split('=').next().unwrap_or(option);
                        assert!(
                            known.contains(option),
                            "{}: `--{option}` is not an option of remora",
                            block.at
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} options found");
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#').trim()));
        }
    }
    found
}

/// The targets of `[text](target)` links, outside code.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let mut rest = line;
        while !fenced && let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn every_link_and_anchor_in_the_docs_leads_somewhere() {
    let docs = docs();
    let mut checked = 0;
    for doc in &docs {
        let dir = Path::new(&doc.path).parent().expect("a path").to_owned();
        for link in links(&doc.text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (path, fragment) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                PathBuf::from(&doc.path)
            } else {
                normalize(&dir.join(path))
            };
            assert!(
                repo(&target.to_string_lossy()).exists(),
                "{}: the link to {link} leads nowhere",
                doc.path
            );
            if !fragment.is_empty() {
                let text = std::fs::read_to_string(repo(&target.to_string_lossy()))
                    .expect("a Markdown file");
                assert!(
                    anchors(&text).contains(fragment),
                    "{}: {} has no heading #{fragment}",
                    doc.path,
                    target.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} links found");
}

/// `docs/../examples/x` as `examples/x`.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every key of examples/remora-all.yaml, the commented examples included,
/// as `section.key`, with pool and target names written `NAME`.
fn every_configuration_key() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo("examples/remora-all.yaml")).expect("readable");
    // `# key: value` is a commented example key: the mark and one space go,
    // the rest of the indentation stays.
    let uncommented: Vec<String> = text
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            let Some(rest) = trimmed.strip_prefix("# ") else {
                return line.to_owned();
            };
            let is_key = rest.trim_start().split_once(':').is_some_and(|(key, _)| {
                !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
            });
            if is_key {
                format!("{indent}{rest}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    let document: serde_yaml::Value = serde_yaml::from_str(&uncommented.join("\n"))
        .expect("remora-all.yaml, uncommented, is YAML");
    fn flatten(value: &serde_yaml::Value, path: String, into: &mut BTreeSet<String>) {
        match value.as_mapping() {
            Some(map) if path != "lag.primary" => {
                for (key, value) in map {
                    let key = key.as_str().expect("string keys");
                    let named = path == "pools" || path == "targets";
                    let key = if named { "NAME" } else { key };
                    let path = if path.is_empty() {
                        key.to_owned()
                    } else {
                        format!("{path}.{key}")
                    };
                    flatten(value, path, into);
                }
            }
            _ => {
                into.insert(path);
            }
        }
    }
    let mut keys = BTreeSet::new();
    flatten(&document, String::new(), &mut keys);
    keys
}

#[test]
fn every_configuration_key_is_in_the_reference() {
    let reference = std::fs::read_to_string(repo("docs/configuration.md")).expect("readable");
    let keys = every_configuration_key();
    assert!(keys.len() >= 45, "remora-all.yaml gave only {keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|key| {
            // `pools.NAME.drain_at` is a policy key, documented once as `policy.drain_at`.
            let as_policy = key
                .strip_prefix("pools.NAME.")
                .map(|rest| format!("`policy.{rest}`"));
            !reference.contains(&format!("`{key}`"))
                && !as_policy.is_some_and(|policy| reference.contains(&policy))
                && !key.starts_with("targets.NAME.mysql")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks {missing:?}"
    );
}

/// The HAProxy `server` lines of a block, each with its block's
/// `default-server` words in front.
fn server_lines(block: &str) -> Vec<String> {
    let defaults: String = block
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("default-server "))
        .collect::<Vec<_>>()
        .join(" ");
    block
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("server "))
        .map(|line| format!("{defaults} {line}"))
        .collect()
}

#[test]
fn every_haproxy_server_line_carries_weight_a_check_and_the_agent() {
    let mut checked = 0;
    for block in every_block("haproxy") {
        for line in server_lines(&block.body) {
            let words: Vec<&str> = line.split_whitespace().collect();
            for needed in ["weight", "check", "agent-check", "agent-port"] {
                assert!(
                    words.contains(&needed),
                    "{}: `{line}` lacks {needed}",
                    block.at
                );
            }
            let weight = words[words.iter().position(|w| *w == "weight").expect("weight") + 1];
            assert_eq!(weight, "100", "{}: percentages need weight 100", block.at);
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} server lines found");
}

#[test]
fn the_internals_layout_names_every_file_of_the_crate() {
    let internals = std::fs::read_to_string(repo("docs/performance.md")).expect("readable");
    for entry in std::fs::read_dir(repo("src")).expect("src/") {
        let path = entry.expect("readable").path();
        let name = path.file_name().expect("a name").to_string_lossy();
        let shown = if path.is_dir() {
            format!("  {name}/")
        } else {
            format!("  {name} ")
        };
        // proptest keeps its regression seeds beside the code; not a module.
        if name.ends_with(".rs") || (path.is_dir() && name != "proptest-regressions") {
            assert!(
                internals.contains(&shown),
                "docs/performance.md's layout lacks src/{name}"
            );
        }
    }
}

#[test]
fn the_readme_is_the_operators_first_hour_in_the_order_they_need_it() {
    let readme = std::fs::read_to_string(repo("README.md")).expect("readable");
    let lines: Vec<&str> = readme.lines().collect();
    assert!(lines.len() <= 200, "README.md has {} lines", lines.len());
    let first_screen = lines[..40].join("\n");
    for command in ["make demo", "make test"] {
        assert!(
            first_screen.contains(command),
            "{command} is not on the first screen"
        );
    }
    let headings: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("## "))
        .collect();
    assert_eq!(
        headings,
        [
            "Install",
            "Grants",
            "A minimal configuration",
            "The HAProxy server line",
            "Check it",
            "Where next",
            "For contributors"
        ]
    );
}

/// A configuration for `haproxy -c` or a real HAProxy around `block`:
/// global and defaults, and a backend when the block is only server lines.
fn haproxy_config(block: &str, index: usize) -> String {
    let sections = [
        "global",
        "defaults",
        "frontend",
        "backend",
        "listen",
        "resolvers",
    ];
    let first = block.split_whitespace().next().unwrap_or_default();
    let body = if sections.contains(&first) {
        block.to_owned()
    } else {
        format!(
            "backend docs_{index}\n    balance roundrobin\n    {}",
            block.trim()
        )
    };
    format!(
        "global\n    stats socket \"${{HAPROXY_STATS_SOCKET-/dev/null/none}}\" level admin\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1m\n    timeout server 1m\n\
         {body}\n"
    )
}

#[test]
#[ignore = "needs HAProxy: `make test` installs it and runs this"]
fn every_haproxy_block_in_the_docs_passes_haproxy_check() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let blocks = every_block("haproxy");
    ensure!(blocks.len() >= 4, "only {} HAProxy blocks", blocks.len());
    for (index, block) in blocks.iter().enumerate() {
        let path = dir.path().join(format!("docs-{index}.cfg"));
        std::fs::write(&path, haproxy_config(&block.body, index))?;
        let socket = dir.path().join("unused.sock").display().to_string();
        let env = [("HAPROXY_STATS_SOCKET".into(), socket)];
        for release in Release::ALL {
            // The 3.1+ lines are `text` blocks: every `haproxy` one runs on 2.6.
            remora_lab::haproxy::check_on(release, &path, &env)
                .with_context(|| block.at.clone())?;
        }
    }
    Ok(())
}

/// The blocks of `lang` under the README's heading `section`, joined.
fn readme_block(section: &str, lang: &str) -> Result<String> {
    Ok(readme_blocks(section, lang)?.join("\n"))
}

/// The blocks of `lang` under the README's heading `section`, in order.
fn readme_blocks(section: &str, lang: &str) -> Result<Vec<String>> {
    let readme = Doc {
        path: "README.md".into(),
        text: std::fs::read_to_string(repo("README.md"))?,
    };
    let line_of = |heading: &str| {
        readme
            .text
            .lines()
            .position(|line| line == heading)
            .map(|index| index + 1)
    };
    let start = line_of(&format!("## {section}"))
        .with_context(|| format!("README.md has no section {section}"))?;
    let end = (readme.text.lines().enumerate())
        .find(|(index, line)| *index + 1 > start && line.starts_with("## "))
        .map_or(usize::MAX, |(index, _)| index + 1);
    let found: Vec<String> = blocks(&readme)
        .into_iter()
        .filter(|block| {
            let at: usize = block
                .at
                .rsplit(':')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            block.lang == lang && at > start && at < end
        })
        .map(|block| block.body)
        .collect();
    ensure!(
        !found.is_empty(),
        "README.md's {section} has no {lang} block"
    );
    Ok(found)
}

/// `remora ctl` as the README writes it, with its config file replaced by
/// `config`.
fn run_readme_ctl(line: &str, config: &Path) -> Result<std::process::Output> {
    let words = remora_command(line).context("a remora command")?;
    let args: Vec<String> = (words.into_iter().skip(1))
        .map(|word| {
            if word == "/etc/remora/remora.yaml" {
                config.display().to_string()
            } else {
                word
            }
        })
        .collect();
    Ok(common::run_remora(&args)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MariaDB and HAProxy: `make test` installs it and runs this"]
async fn a_newcomer_following_the_readme_alone_on_mariadb_behind_haproxy_2_6() -> Result<()> {
    readme_walk(Engine::MariaDb, Release::Debian).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MySQL and HAProxy 3 from the sid root: `make test` builds it and runs this"]
async fn a_newcomer_following_the_readme_alone_on_mysql_behind_haproxy_3() -> Result<()> {
    readme_walk(Engine::MySql, Release::Sid).await
}

/// A newcomer follows the README alone and gets their replica weighted by
/// HAProxy: its grants for the server (MariaDB's, or MySQL's), its
/// configuration, `nc`, its server line and its drain.
async fn readme_walk(engine: Engine, release: Release) -> Result<()> {
    let pair = Pair::start_on(engine).await?;
    let replica = &pair.replica;
    // The lab's own account goes: only the README's grants are left to work with.
    let mut statements = vec!["DROP USER 'remora'@'%'".to_owned()];
    let grants = readme_blocks("Grants", "sql")?;
    let grants = match engine {
        Engine::MariaDb | Engine::MariaDbLts => grants.first(),
        Engine::MySql => grants.get(1),
    };
    let grants = grants.context("the README's grants for this server")?;
    statements.extend(
        grants
            .replace("choose-a-password", CHANGED_PASSWORD)
            .split(';')
            .map(|statement| {
                let code: Vec<&str> = statement
                    .lines()
                    .map(|line| line.split("--").next().unwrap_or_default())
                    .collect();
                code.join("\n").trim().to_owned()
            })
            .filter(|statement| !statement.is_empty()),
    );
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    replica.exec(&statements).await?;

    // The README's configuration, pointed at this replica, with the
    // password in a root-only file as it says.
    let secrets = tempfile::tempdir()?;
    let password = secrets.path().join("mysql-password");
    std::fs::write(&password, format!("{CHANGED_PASSWORD}\n"))?;
    let yaml = remora_lab::remora::set_keys(
        &readme_block("A minimal configuration", "yaml")?,
        &[
            ("mysql", "port", u64::from(replica.port).into()),
            (
                "mysql",
                "password_file",
                password.display().to_string().into(),
            ),
            (
                "maintenance",
                "state_file",
                secrets.path().join("switch").display().to_string().into(),
            ),
        ],
    )?;
    let remora = Remora::start(remora_bin(), &yaml).await?;

    // Check it: `nc` gets what the README's comment says.
    let check = readme_block("Check it", "sh")?;
    let expected = check
        .lines()
        .find(|line| line.starts_with("nc "))
        .and_then(|line| line.split_once('#'))
        .map(|(_, said)| said.trim().to_owned())
        .context("the README's nc line says what it answers")?;
    assert_eq!(remora.reply().await?.trim(), expected);
    let status = remora.status().await?;
    assert_eq!(status["verdict"], "up", "{status}");
    assert_eq!(remora.get("/health").await?.0, 200);

    // The README's server line, at this replica and its remora.
    let block = readme_block("The HAProxy server line", "haproxy")?;
    let (backend, server) = {
        let backend = block
            .lines()
            .find_map(|line| line.strip_prefix("backend "))
            .context("a backend")?;
        let line = server_lines(&block).pop().context("a server line")?;
        let mut words = line
            .split_whitespace()
            .skip_while(|w| *w != "server")
            .skip(1);
        (
            backend.trim().to_owned(),
            words.next().context("a name")?.to_owned(),
        )
    };
    let placed: Vec<String> = block
        .lines()
        .map(|line| {
            let mut words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if words.first().is_some_and(|w| w == "server") {
                words[2] = "\"${REPLICA_ADDR}\"".into();
            }
            if let Some(at) = words.iter().position(|w| w == "agent-port") {
                words[at + 1] = "\"${REPLICA_AGENT_PORT}\"".into();
            }
            format!("    {}", words.join(" "))
        })
        .collect();
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("readme.cfg");
    std::fs::write(&config, haproxy_config(placed.join("\n").trim(), 0))?;
    let at = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let targets = Targets {
        primary: at(pair.primary.port),
        primary_agent: remora.agent,
        replica: at(replica.port),
        replica_agent: remora.agent,
        main_min_servers: 1,
    };
    let haproxy = Haproxy::start_config_on(release, &config, &targets).await?;
    let seen = haproxy
        .watch_server(&backend, &server, Duration::from_secs(15), |s| {
            s.status == "UP" && s.weight == 100 && s.agent_status.starts_with("L7")
        })
        .await?;
    println!("HAProxy: {seen:?}");

    // Drain with the README's line: when it returns, HAProxy has the server in DRAIN.
    let ctl_config = dir.path().join("remora.yaml");
    std::fs::write(
        &ctl_config,
        remora_lab::remora::set_keys(
            &std::fs::read_to_string(&remora.config_path)?,
            &[("http", "listen", remora.http.to_string().into())],
        )?,
    )?;
    let ctl: Vec<&str> = check.lines().filter(|l| l.contains(" ctl ")).collect();
    let [drain, ready] = ctl[..] else {
        bail!("the README shows a drain and a ready, got {ctl:?}");
    };
    let out = tokio::task::block_in_place(|| run_readme_ctl(drain, &ctl_config))?;
    ensure!(out.status.success(), "{}", common::said(&out));
    let drained = haproxy.server(&backend, &server).await?;
    assert!(drained.status.starts_with("DRAIN"), "{drained:?}");
    let out = tokio::task::block_in_place(|| run_readme_ctl(ready, &ctl_config))?;
    ensure!(out.status.success());
    haproxy
        .watch_server(&backend, &server, Duration::from_secs(15), |s| {
            s.status == "UP" && s.weight == 100
        })
        .await?;
    Ok(())
}
