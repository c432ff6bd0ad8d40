//! Shared by the integration tests: where the binary is, and reading replies.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::Path;

/// The remora binary cargo built for these tests.
pub fn remora_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_remora"))
}

/// The weight in an `up ready N%` reply.
pub fn weight(reply: &str) -> Option<u32> {
    reply
        .strip_prefix("up ready ")?
        .split('%')
        .next()?
        .parse()
        .ok()
}

/// The mysql section every lab remora uses: the lab's remora user, with its
/// password from the environment.
pub fn mysql_section(port: u16) -> String {
    format!(
        "mysql:\n  port: {port}\n  user: remora\n  password_env: REMORA_MYSQL_PASSWORD\n  \
         connect_timeout: 1s\n  query_timeout: 1s\n"
    )
}
