//! remora's lab: real MariaDB servers, remora processes (and HAProxy) on
//! loopback, for the integration tests, `make up`/`make demo`, and the
//! benchmark. Everything listens on 127.0.0.1, on free ports unless told
//! otherwise, and every process is stopped by pid: on drop, on panic, and by
//! the kernel if the test process dies (see [`process`]).

pub mod bench;
pub mod demo;
pub mod fixture;
pub mod galera;
pub mod haproxy;
pub mod heartbeat;
pub mod mariadb;
pub mod multisource;
pub mod process;
pub mod remora;
pub mod stack;

/// Signal numbers for [`Process::signal`] and [`Remora::signal`].
pub mod signal {
    pub use libc::{SIGCONT, SIGHUP, SIGINT, SIGKILL, SIGSTOP, SIGTERM};
}

pub use haproxy::Haproxy;
pub use mariadb::{Pair, Server, SlaveStatus, Writer};
pub use process::{Lifetime, Process};
pub use remora::{Remora, agent_reply, agent_request, http_get};
pub use stack::Stack;

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
