//! The Debian package for real: built with cargo-deb from the binary these
//! tests run, checked by lintian, installed with dpkg, its configuration
//! checked by the installed binary as the installed user would, and purged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};

fn run(program: &str, args: &[&str]) -> Result<Output> {
    let output = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .with_context(|| format!("running {program}"))?;
    Ok(output)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn succeed(program: &str, args: &[&str]) -> Result<String> {
    let output = run(program, args)?;
    ensure!(
        output.status.success(),
        "{program} {args:?}:\n{}",
        text(&output)
    );
    Ok(text(&output))
}

/// The package, built from the `checked` binary `make test` has just built
/// (`make deb` builds a release one).
fn build_package(out: &Path) -> Result<PathBuf> {
    let binary = Path::new(env!("CARGO_BIN_EXE_remora"));
    let profile = binary
        .parent()
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .context("the binary's profile directory")?;
    let deb = out.join("remora.deb");
    succeed(
        "cargo",
        &[
            "deb",
            "--no-build",
            "--profile",
            profile,
            "--output",
            &deb.display().to_string(),
        ],
    )?;
    Ok(deb)
}

/// Removes the package on drop, even when the test fails half way.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "remora"]);
    }
}

#[test]
#[ignore = "needs cargo-deb, lintian and dpkg: `make test` installs it and runs this"]
fn the_package_installs_checks_its_config_and_purges_cleanly() -> Result<()> {
    let out = tempfile::tempdir()?;
    let deb = build_package(out.path())?;
    let deb = deb.display().to_string();

    // Errors fail; what lintian still says is printed for the closing note.
    let lint = succeed(
        "lintian",
        &["--fail-on", "error", "--tag-display-limit", "0", &deb],
    )?;
    eprintln!("lintian:\n{lint}");

    let contents = succeed("dpkg-deb", &["--contents", &deb])?;
    for path in [
        "./usr/bin/remora",
        "./etc/remora/remora.yaml",
        "./usr/lib/systemd/system/remora.service",
        "./usr/share/doc/remora/README.md",
        "./usr/share/doc/remora/copyright",
    ] {
        ensure!(contents.contains(path), "{path} missing from:\n{contents}");
    }
    let conffiles = succeed("dpkg-deb", &["--info", &deb, "conffiles"])?;
    ensure!(conffiles.contains("/etc/remora/remora.yaml"), "{conffiles}");

    let _installed = Installed;
    succeed("dpkg", &["-i", &deb])?;
    let user = succeed("id", &["-u", "remora"]).context("the package's system user")?;
    ensure!(user.trim() != "0", "remora is a system user, not root");
    // The installed binary, as the installed user, on the installed config.
    let checked = succeed(
        "runuser",
        &[
            "-u",
            "remora",
            "--",
            "/usr/bin/remora",
            "--config",
            "/etc/remora/remora.yaml",
            "--check-config",
        ],
    )?;
    ensure!(checked.contains("policy:"), "{checked}");
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/remora.service")?;
    ensure!(unit.contains("ExecStart=/usr/bin/remora"), "{unit}");
    ensure!(unit.contains("User=remora"), "{unit}");

    succeed("dpkg", &["--purge", "remora"])?;
    ensure!(!Path::new("/usr/bin/remora").exists(), "purged");
    ensure!(
        !Path::new("/etc/remora/remora.yaml").exists(),
        "conffile purged"
    );
    Ok(())
}
