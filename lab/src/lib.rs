//! remora's lab: real MySQL and MariaDB servers, remora processes (and HAProxy) on
//! loopback, for the integration tests, `make up`/`make demo`, and the
//! benchmark. Everything listens on 127.0.0.1, on free ports unless told
//! otherwise, and every process is stopped by pid: on drop, on panic, and by
//! the kernel if the test process dies (see [`process`]).
// The lab runs and times real processes: the wall clock, on purpose.
#![allow(clippy::disallowed_methods)]

pub mod accounts;
pub mod bench;
pub mod demo;
pub mod engine;
pub mod failover;
pub mod fixture;
pub mod galera;
pub mod group;
pub mod haproxy;
pub mod heartbeat;
pub mod measure;
pub mod multisource;
pub mod process;
pub mod prometheus;
pub mod readers;
pub mod remora;
pub mod server;
pub mod sid;
pub mod stack;
pub mod staleness;
pub mod topology;
pub mod wait;

/// Signal numbers for [`Process::signal`] and [`Remora::signal`].
pub mod signal {
    pub use libc::{SIGCONT, SIGHUP, SIGINT, SIGKILL, SIGSTOP, SIGTERM};
}

pub use engine::Engine;
pub use haproxy::Haproxy;
pub use process::{Lifetime, Process};
pub use remora::{
    Builder as RemoraBuilder, Remora, agent_reply, agent_request, http_exchange, http_get,
};
pub use server::{Pair, ReplicaStatus, Server, Writer};
pub use stack::Stack;
pub use wait::wait_until;

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

use anyhow::{Context, Result};

/// A local IPv4 address that is not loopback (for testing what remora
/// accepts only from loopback), from `hostname -I`.
pub fn non_loopback_ipv4() -> Result<std::net::Ipv4Addr> {
    let output = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .context("running hostname -I")?;
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|word| word.parse::<std::net::Ipv4Addr>().ok())
        .find(|ip| !ip.is_loopback())
        .context("this machine has no non-loopback IPv4 address")
}

/// `addr` as `/proc/net/tcp` writes it (`0100007F:1F90`); IPv4 only.
fn proc_net_tcp_address(addr: std::net::SocketAddr) -> Result<String> {
    let std::net::SocketAddr::V4(addr) = addr else {
        anyhow::bail!("{addr}: only IPv4 sockets are looked up");
    };
    Ok(format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(addr.ip().octets()),
        addr.port()
    ))
}

/// Whether the peer of this machine's IPv4 TCP socket bound at `local` has
/// closed its side (the socket is in CLOSE_WAIT, `/proc/net/tcp`): its
/// FIN arrived after everything it sent.
pub fn peer_closed(local: std::net::SocketAddr) -> Result<bool> {
    const CLOSE_WAIT: &str = "08";
    let wanted = proc_net_tcp_address(local)?;
    let table = std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
    let state = table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let address = fields.next()?;
        let state = fields.nth(1)?;
        (address == wanted).then_some(state)
    });
    Ok(state == Some(CLOSE_WAIT))
}

/// Whether a process still holds the other end of this machine's IPv4 TCP
/// socket bound at `local` (`/proc/net/tcp`): a socket its process closed
/// and left to the kernel to finish has inode 0. `None` when that end is
/// gone altogether.
pub fn peer_socket_held(local: std::net::SocketAddr) -> Result<Option<bool>> {
    let wanted = proc_net_tcp_address(local)?;
    let table = std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
    Ok(table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (remote, inode) = (fields.get(2)?, fields.get(9)?);
        (*remote == wanted).then(|| *inode != "0")
    }))
}

/// A loopback port that was free a moment ago and has not been handed out by
/// this process before (tests run in parallel threads).
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .context("binding 127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut handed_out = HANDED_OUT
            .lock()
            .expect("no panics while holding this lock");
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port found in 100 attempts")
}

/// Where everything remora printed during a test run is collected, when the
/// run sets `REMORA_OUTPUT_DIR` (`make test` does, then scans it for every
/// password in [`server::TEST_PASSWORDS`]).
pub const OUTPUT_DIR_ENV: &str = "REMORA_OUTPUT_DIR";

/// Keeps `text` (something remora printed) for the end-of-run scan, if this
/// run collects output.
pub fn record_output(label: &str, text: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let Some(dir) = std::env::var_os(OUTPUT_DIR_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let name = format!(
        "{label}-{}-{}.log",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    if let Err(err) =
        std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(&name), text))
    {
        eprintln!("cannot keep remora's output in {}: {err}", dir.display());
    }
}

/// Files under `dir` holding any of the test passwords, with the password.
pub fn find_passwords(
    dir: &std::path::Path,
) -> Result<(usize, Vec<(std::path::PathBuf, &'static str)>)> {
    let mut scanned = 0;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        scanned += 1;
        for password in server::TEST_PASSWORDS {
            if text.contains(password) {
                found.push((path.clone(), *password));
            }
        }
    }
    Ok((scanned, found))
}
