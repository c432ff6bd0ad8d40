//! `remora`: parse the command line, load the configuration, bind, run, and
//! turn the outcome into an exit status. Everything else lives in the library.

#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser as _;
use log::{error, info, warn};
use tokio::signal::unix::{SignalKind, signal};

use remora::cli::{Cli, Command, Ctl, CtlAction};
use remora::config::{Config, ConfigError, Secrets};

/// Exit status for a configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;

/// Runtime worker threads (see `main`).
const WORKER_THREADS: usize = 2;

fn main() -> ExitCode {
    // `systemctl reload` may come while remora is still starting: until the
    // reload handler is installed (`serve`), a SIGHUP is ignored rather than
    // the default, which ends the process.
    remora::os::ignore_hangup_for_now();
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Some(what) = cli.generate {
        return match remora::cli::generate(what) {
            Ok(bytes) => {
                use std::io::Write as _;
                let _ = std::io::stdout().write_all(&bytes);
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("remora: cannot generate: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(config_path) = cli.config.clone() else {
        eprintln!("remora: --config FILE is required");
        return ExitCode::from(EXIT_CONFIG);
    };
    if let Some(Command::Ctl(ctl)) = &cli.command {
        return ctl_main(&config_path, ctl);
    }
    if cli.check_config {
        return check_config(&config_path);
    }
    if let Some(trace) = &cli.replay {
        return replay(
            &config_path,
            trace,
            cli.svg.as_deref(),
            cli.target.as_deref(),
        );
    }
    let (config, secrets) = match load(&config_path) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("remora: invalid configuration: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    // Two workers whatever the host's size: a sidecar's work is one poll a
    // second and short replies; a 64-core database host needs no 64 threads.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("remora: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = if cli.once {
        runtime.block_on(once(config, secrets))
    } else {
        match runtime.block_on(serve(config_path, config, secrets)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                error!("{err:#}");
                ExitCode::FAILURE
            }
        }
    };
    // A file read still hung on the blocking pool must not hold up the exit.
    runtime.shutdown_timeout(EXIT_LIMIT);
    outcome
}

/// `remora ctl`: 0 when done (and, with --wait, acknowledged); 1 when the
/// switch refused, remora is not there or the wait timed out; 2 for a
/// configuration that cannot be used.
fn ctl_main(path: &Path, ctl: &Ctl) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("remora ctl: invalid configuration: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let token = match &config.http.admin_token_file {
        Some(file) => match remora::config::read_secret("http.admin_token_file", file) {
            Ok(token) => Some(token),
            Err(err) => {
                eprintln!("remora ctl: {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => None,
    };
    let (action, waiting) = match &ctl.action {
        CtlAction::Drain(how) | CtlAction::Maint(how) => (
            remora::ctl::Action::Switch {
                maint: matches!(ctl.action, CtlAction::Maint(_)),
                message: how.message.join(" "),
            },
            remora::ctl::Waiting {
                acknowledged: how.wait,
                idle_below: how.idle_below,
                timeout: how.timeout,
            },
        ),
        CtlAction::Ready => (remora::ctl::Action::Ready, Default::default()),
        CtlAction::Status => (remora::ctl::Action::Status, Default::default()),
    };
    let client = remora::ctl::Client::of(&config, token, ctl.target.clone());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("remora ctl: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mark = match &ctl.action {
        CtlAction::Drain(how) | CtlAction::Maint(how) => how.mark.clone(),
        CtlAction::Ready | CtlAction::Status => None,
    };
    let outcome = runtime.block_on(remora::ctl::run(&client, &action, waiting));
    // Written whatever the outcome: whoever waits on it must not wait for
    // ever because the wait timed out.
    if let Some(mark) = mark {
        let text = match &outcome {
            Ok(said) => said.clone(),
            Err(err) => format!("{err}\n"),
        };
        if let Err(err) = std::fs::write(&mark, text) {
            eprintln!("remora ctl: cannot write --mark {}: {err}", mark.display());
            return ExitCode::FAILURE;
        }
    }
    match outcome {
        Ok(said) => {
            print!("{said}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("remora ctl: {err}");
            ExitCode::FAILURE
        }
    }
}

/// How long work still running at exit gets before it is abandoned.
const EXIT_LIMIT: Duration = Duration::from_millis(250);
/// Longest a SIGHUP may spend reading the configuration file.
const RELOAD_READ_LIMIT: Duration = Duration::from_secs(2);

/// `--check-config`: validates everything and prints the effective
/// configuration. A secret that cannot be had here (CI, a workstation) is a
/// warning naming its key; starting remora still fails on it.
fn check_config(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("remora: invalid configuration: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(err) = config.secrets() {
        eprintln!("remora: warning: {err} (needed to start, not to check)");
    }
    match serde_yaml::to_string(&config) {
        Ok(yaml) => {
            println!("# effective configuration of {}", path.display());
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("remora: cannot print the configuration: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Longest trace read.
const MAX_TRACE_BYTES: usize = 256 * 1024 * 1024;

/// `--replay`: the policy code over a trace, offline; no secret is needed.
fn replay(config: &Path, trace: &Path, svg: Option<&Path>, target: Option<&str>) -> ExitCode {
    let config = match Config::load(config).and_then(|config| replayed_config(config, target)) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("remora: invalid configuration: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let text = match remora::files::read_regular(trace, MAX_TRACE_BYTES) {
        Ok((bytes, false)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok((_, true)) => {
            eprintln!(
                "remora: {}: larger than {MAX_TRACE_BYTES} bytes",
                trace.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(err) => {
            eprintln!(
                "remora: cannot read {}: {}",
                trace.display(),
                remora::files::phrase(&err)
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let rows = match remora::history::trace::parse(&text) {
        Ok(rows) => rows,
        Err(err) => {
            eprintln!("remora: {}: {err}", trace.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let replayed = remora::replay::run(&config, &rows);
    print!("{}", replayed.report());
    if let Some(out) = svg {
        let chart = remora::http::page::Chart {
            pools: &replayed.pools,
            samples: &replayed.samples,
            events: &replayed.changes,
            thresholds: &config.policy.thresholds,
            end_ms: replayed.samples.last().map_or(0, |s| s.at_ms),
            longest: Duration::MAX,
        };
        if let Err(err) = std::fs::write(out, remora::http::page::svg(&chart)) {
            eprintln!("remora: cannot write {}: {err}", out.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// The configuration a replay runs under: the file's, or with targets,
/// the named target's (`--target`, required then).
fn replayed_config(config: Config, target: Option<&str>) -> Result<Config, ConfigError> {
    if !config.has_targets() {
        return match target {
            None => Ok(config),
            Some(_) => Err(ConfigError::new(
                "--target: the configuration names no targets",
            )),
        };
    }
    let Some(name) = target else {
        return Err(ConfigError::new(
            "the configuration watches targets: say which with --target NAME",
        ));
    };
    let from_file = match &config.targets_file {
        Some(path) => remora::config::read_targets_file(path)?,
        None => Default::default(),
    };
    let mut targets = config.target_configs(&from_file)?;
    targets
        .remove(name)
        .ok_or_else(|| ConfigError::new(format!("--target: no target named {name:?}")))
}

/// Reads, validates and resolves the secrets of a configuration file.
fn load(path: &Path) -> Result<(Config, Secrets), ConfigError> {
    let config = Config::load(path)?;
    let secrets = config.secrets()?;
    Ok((config, secrets))
}

async fn once(config: Config, secrets: Secrets) -> ExitCode {
    if config.has_targets() {
        return once_each(&config, &secrets).await;
    }
    let snapshot = remora::poll_once(&config, &secrets).await;
    let now = tokio::time::Instant::now();
    let answer = snapshot.answer(now, &snapshot.default);
    print!("{}", answer.line());
    println!(
        "{}",
        serde_json::to_string_pretty(&remora::http::Status::of(
            &snapshot,
            now,
            remora::http::Audience::Loopback,
        ))
        .expect("the status document always serializes")
    );
    match snapshot.measured(now, &snapshot.default) {
        remora::policy::State::Up(_) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// `--once` with targets: every target polled at once; a line each
/// (`NAME: agent line`), then their `/status` documents by name. 0 when
/// every target is up.
async fn once_each(config: &Config, secrets: &Secrets) -> ExitCode {
    let targets = match remora::fleet::resolve_within(config, secrets).await {
        Ok(targets) => targets,
        Err(err) => {
            eprintln!("remora: invalid configuration: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let polled = remora::poll_each(targets).await;
    let now = tokio::time::Instant::now();
    let mut documents = serde_json::Map::new();
    let mut all_up = true;
    for (name, snapshot) in &polled {
        let answer = snapshot.answer(now, &snapshot.default);
        print!("{name}: {}", answer.line());
        let status = remora::http::Status::of(snapshot, now, remora::http::Audience::Loopback);
        documents.insert(
            name.clone(),
            serde_json::to_value(status).unwrap_or_default(),
        );
        all_up &= matches!(
            snapshot.measured(now, &snapshot.default),
            remora::policy::State::Up(_)
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&documents).expect("the status documents serialize")
    );
    if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn serve(path: PathBuf, config: Config, secrets: Secrets) -> anyhow::Result<()> {
    match remora::raise_fd_limit() {
        Ok(limit) if (limit as usize) < config.agent.max_connections + remora::SPARE_FDS => warn!(
            "agent.max_connections ({}) is close to the open-files limit ({limit}): \
             raise LimitNOFILE / ulimit -n, or lower agent.max_connections",
            config.agent.max_connections
        ),
        Ok(_) => {}
        Err(err) => warn!("cannot read the open-files limit: {err}"),
    }
    let listeners = remora::Listeners::bind(&config).await?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM: shutting down"),
            _ = interrupt.recv() => info!("SIGINT: shutting down"),
        }
    };
    // SIGHUP: re-read the file; only a valid configuration reaches `run`.
    let (reloads, reload_queue) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            info!("SIGHUP: reloading {}", path.display());
            let reading = {
                let path = path.clone();
                move || load(&path)
            };
            let loaded = remora::files::blocking_within(RELOAD_READ_LIMIT, reading)
                .await
                .unwrap_or_else(|| {
                    Err(ConfigError::new(format!(
                        "{} not read within {RELOAD_READ_LIMIT:?}",
                        path.display()
                    )))
                });
            match loaded {
                Ok(loaded) => {
                    if reloads.send(loaded).await.is_err() {
                        break;
                    }
                }
                Err(err) => {
                    error!("reload rejected, still running the previous configuration: {err}");
                }
            }
        }
    });
    remora::run(config, secrets, listeners, shutdown, reload_queue).await?;
    info!("stopped");
    Ok(())
}
