//! Child processes that are always cleaned up by pid.
//!
//! A [`Process`] kills its child when dropped, including during a panic's
//! unwinding. A tied process also gets `PR_SET_PDEATHSIG`, so the kernel kills
//! it if the test process itself dies without unwinding. A detached process
//! (for `make up`) runs in its own session and outlives the command that
//! started it; `remora-lab down` kills it by the pid recorded in the lab's
//! state file.

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How a child relates to the process that starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed when the [`Process`] is dropped, or when this process dies.
    Tied,
    /// Keeps running after this process exits (`make up`).
    Detached,
}

#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: &Path,
        lifetime: Lifetime,
    ) -> Result<Process> {
        let out = open_log(log)?;
        let err = out.try_clone().context("duplicating log handle")?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        match lifetime {
            // SAFETY: prctl is async-signal-safe and touches only this child.
            // The death signal fires when the spawning *thread* exits; callers
            // spawn from the thread that owns the Process (a test's thread or
            // main), never from a pooled worker.
            Lifetime::Tied => unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            },
            // SAFETY: setsid is async-signal-safe; it detaches the child from
            // our terminal so a Ctrl-C at `make up` does not reach it.
            Lifetime::Detached => unsafe {
                command.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            },
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {:?}", command.get_program()))?;
        let pid = child.id();
        Ok(Process {
            name: name.to_owned(),
            child: Some(child),
            pid,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// True while the process exists and is not a zombie.
    pub fn is_running(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            return matches!(child.try_wait(), Ok(None));
        }
        pid_is_running(self.pid)
    }

    /// Exit status, if the process has exited (only for processes we spawned).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        // SAFETY: plain kill(2) on a pid we started and have not reaped.
        if unsafe { libc::kill(self.pid as libc::pid_t, signal) } != 0 {
            bail!(
                "signal {signal} to {} ({}): {}",
                self.name,
                self.pid,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// SIGSTOP: the process keeps its sockets but runs nothing.
    pub fn freeze(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)
    }

    pub fn thaw(&self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }

    /// Waits up to `limit` for the process to exit on its own; its exit status
    /// if it did.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        crate::wait_until("the process to exit", limit, async || {
            Ok(self.try_exit_status())
        })
        .await
        .ok()
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns the exit status when known.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let _ = self.signal(libc::SIGCONT);
        let _ = self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return self.reap();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        self.reap()
    }

    /// SIGKILL and reap. Safe to call more than once.
    pub fn kill(&mut self) {
        if self.is_running() {
            // A frozen process dies from SIGKILL too; SIGCONT is for politeness.
            let _ = self.signal(libc::SIGCONT);
            let _ = self.signal(libc::SIGKILL);
        }
        self.reap();
    }

    fn reap(&mut self) -> Option<ExitStatus> {
        match &mut self.child {
            Some(child) => child.wait().ok(),
            None => {
                wait_gone(self.pid, Duration::from_secs(5));
                None
            }
        }
    }

    /// Stops tracking the process: it will not be killed on drop.
    pub fn detach(mut self) -> u32 {
        self.child = None;
        let pid = self.pid;
        std::mem::forget(self);
        pid
    }

    /// The last `lines` lines of the process's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log {}", path.display()))
}

/// The last `lines` lines of a text file ("" if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// True if `pid` exists and is not a zombie (a killed process can linger as
/// one: `kill -0` alone would say it still runs).
pub fn pid_is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => !status
            .lines()
            .any(|line| line.starts_with("State:") && line.contains('Z')),
        Err(_) => false,
    }
}

/// The command line of `pid`, for checking a recorded pid still is what we started.
pub fn pid_command(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_default()
}

/// SIGKILLs a recorded pid if it still runs `expected`, and waits for it to go.
pub fn kill_recorded(pid: u32, expected: &str) -> bool {
    if !pid_is_running(pid) || !pid_command(pid).contains(expected) {
        return false;
    }
    // SAFETY: kill(2) on a pid verified above to run our program.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGCONT);
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    wait_gone(pid, Duration::from_secs(5));
    true
}

fn wait_gone(pid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while pid_is_running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}
