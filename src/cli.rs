//! The command line, as clap reads it: the binary parses it, and the lab
//! generates the man pages and shell completions from the same definition,
//! so they cannot drift.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Tells HAProxy, through its agent-check, how much traffic a MySQL or
/// MariaDB server should get, from its replication health and lag.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Configuration file (YAML).
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Validate the configuration, print it with defaults filled in (never
    /// the password), and exit.
    #[arg(long, conflicts_with = "once")]
    pub check_config: bool,
    /// Poll once, print the agent line and the /status JSON, and exit: 0 when
    /// up, 1 otherwise.
    #[arg(long)]
    pub once: bool,
    /// Replay a trace (the CSV of GET /history?format=csv, or one written by
    /// hand: t,lag,...) under this configuration and print what each pool
    /// would have answered, and a summary; exit 2 on a malformed trace.
    #[arg(long, value_name = "TRACE", conflicts_with_all = ["once", "check_config"])]
    pub replay: Option<PathBuf>,
    /// With --replay: also write the chart, as the page draws it, to this file.
    #[arg(long, value_name = "OUT.svg", requires = "replay")]
    pub svg: Option<PathBuf>,
    /// With --replay and targets: replay under this target's configuration.
    #[arg(long, value_name = "NAME", requires = "replay")]
    pub target: Option<String>,
    /// Print a man page or a shell completion, generated from this
    /// definition, and exit (how the package builds them).
    #[arg(long, value_name = "WHAT", hide = true, exclusive = true)]
    pub generate: Option<Generated>,
}

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generated {
    /// remora(1).
    Man,
    /// remora-ctl(1).
    ManCtl,
    /// remora.yaml(5), from examples/remora-all.yaml.
    ManConfig,
    /// Bash completion.
    Bash,
    /// Zsh completion.
    Zsh,
}

/// The page or completion `what` names.
pub fn generate(what: Generated) -> std::io::Result<Vec<u8>> {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let mut out = Vec::new();
    match what {
        Generated::Man => clap_mangen::Man::new(command).render(&mut out)?,
        Generated::ManCtl => {
            command.build();
            let ctl = (command.find_subcommand("ctl").cloned())
                .expect("remora has a ctl subcommand")
                .name("remora-ctl");
            clap_mangen::Man::new(ctl).render(&mut out)?;
        }
        Generated::ManConfig => out.extend_from_slice(config_page().as_bytes()),
        Generated::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut command, "remora", &mut out)
        }
        Generated::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut command, "remora", &mut out)
        }
    }
    Ok(out)
}

/// Every key remora reads, with its default: the configuration reference.
pub const EVERY_KEY: &str = include_str!("../examples/remora-all.yaml");

/// remora.yaml(5): the configuration reference as a man page.
fn config_page() -> String {
    let escape = |line: &str| {
        let line = line.replace('\\', "\\e");
        if line.starts_with('.') || line.starts_with('\'') {
            format!("\\&{line}")
        } else {
            line
        }
    };
    let mut page = format!(
        ".TH REMORA.YAML 5 \"\" \"remora {}\" \"File Formats\"\n\
         .SH NAME\nremora.yaml \\- the configuration of remora\n\
         .SH SYNOPSIS\n/etc/remora/remora.yaml\n\
         .SH DESCRIPTION\n\
         remora reads one YAML file, named by \\fB\\-\\-config\\fR. Every key is optional; \
         an unknown key, a value of the wrong shape or thresholds out of order is an error \
         naming the key and its line. Durations are written 500ms, 1s, 5m, 1h. \
         Check a file with \\fBremora \\-\\-config FILE \\-\\-check\\-config\\fR, which prints \
         the configuration in effect, every default filled in.\n\
         .PP\nWith \\fBtargets\\fR (or \\fBtargets_file\\fR), one remora watches many servers: \
         each target inherits mysql, poll, lag, policy, pools, load, galera, \
         group_replication and maintenance from the top level and overrides what it names.\n\
         .SH EVERY KEY\nEach key with its default, unless marked example:\n.PP\n.nf\n",
        env!("CARGO_PKG_VERSION")
    );
    for line in EVERY_KEY.lines() {
        page.push_str(&escape(line));
        page.push('\n');
    }
    page.push_str(
        ".fi\n.SH FILES\n/etc/remora/remora.yaml\n.br\n/var/lib/remora/switch \
         (maintenance.state_file in the package)\n\
         .SH SEE ALSO\n\\fBremora\\fR(1), \\fBremora\\-ctl\\fR(1), \\fBhaproxy\\fR(1)\n",
    );
    page
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The admin switch from the command line: drain, maint, ready, status.
    /// Talks to the remora running with the same --config, on loopback.
    Ctl(Ctl),
}

#[derive(Debug, clap::Args)]
pub struct Ctl {
    #[command(subcommand)]
    pub action: CtlAction,
    /// With targets: the target to switch or show.
    #[arg(long, value_name = "NAME", global = true)]
    pub target: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlAction {
    /// Drain: weight 0, open sessions stay (HAProxy's `drain`).
    Drain(Switching),
    /// Maintenance: HAProxy's `maint` (sessions are not sent new work).
    Maint(Switching),
    /// Switch maintenance off: the measured verdict again.
    Ready,
    /// What remora answers now, and who asks.
    Status,
}

#[derive(Debug, clap::Args)]
pub struct Switching {
    /// Why, shown in the agent line (`#maintenance: MESSAGE`).
    pub message: Vec<String>,
    /// Return once every HAProxy that was asking has been answered the
    /// switch (exit 1 at --timeout, naming those that did not ask again).
    #[arg(long)]
    pub wait: bool,
    /// Also wait until the server's Threads_connected is at most N (needs
    /// a `load:` section, which has remora read it).
    #[arg(long, value_name = "N")]
    pub idle_below: Option<u64>,
    /// Longest --wait and --idle-below wait.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Once done (or given up), write this file, saying which: something
    /// another container or unit can wait on, instead of sleeping.
    #[arg(long, value_name = "FILE")]
    pub mark: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn the_man_pages_cover_every_option_and_every_key() {
        use clap::CommandFactory;
        let text = |what| String::from_utf8(generate(what).expect("renders")).expect("UTF-8");
        let man = text(Generated::Man);
        for arg in Cli::command()
            .get_arguments()
            .filter(|arg| !arg.is_hide_set())
        {
            let long = arg.get_long().expect("every option is long");
            assert!(
                man.contains(&long.replace('-', "\\-")),
                "{long} missing from remora(1)"
            );
        }
        assert!(man.contains("ctl"), "the subcommand is listed");
        let ctl = text(Generated::ManCtl);
        for word in ["drain", "maint", "ready", "status"] {
            assert!(ctl.contains(word), "{word} missing from remora-ctl(1)");
        }
        let config = text(Generated::ManConfig);
        let every: serde_yaml::Value = serde_yaml::from_str(EVERY_KEY).expect("YAML");
        for (key, _) in every.as_mapping().expect("a mapping") {
            let key = key.as_str().expect("a key");
            assert!(
                config.contains(&format!("{key}:")),
                "{key} missing from remora.yaml(5)"
            );
        }
        assert!(text(Generated::Bash).contains("remora"));
        assert!(text(Generated::Zsh).contains("#compdef remora"));
    }
}
