//! The lab's accounts and credentials, which servers are set up with and
//! tests use. Lab-only: never use these anywhere real.

pub const ROOT_PASSWORD: &str = "secret";
pub const REPL_USER: &str = "repl";
pub const REPL_PASSWORD: &str = "repl-secret";
pub const REMORA_USER: &str = "remora";
/// Distinctive on purpose: tests grep logs and output for it.
pub const REMORA_PASSWORD: &str = "remora-lab-Pw-5ec2e7";
/// What a test changes the remora user's password to while remora runs.
pub const CHANGED_PASSWORD: &str = "remora-changed-Pw-81c4a0";
/// A password that is wrong everywhere.
pub const WRONG_PASSWORD: &str = "wrong-Pw-9d1f0c";
/// A password given only to `--check-config`.
pub const CHECK_PASSWORD: &str = "s3cr3t-Value";
/// Every password the tests hand remora: none may appear in anything remora
/// prints (see [`crate::record_output`] and `remora-lab check-output`).
pub const TEST_PASSWORDS: &[&str] = &[
    REMORA_PASSWORD,
    CHANGED_PASSWORD,
    WRONG_PASSWORD,
    CHECK_PASSWORD,
    ADMIN_TOKEN,
];

/// The token tests put in `http.admin_token_file`; never printed either.
pub const ADMIN_TOKEN: &str = "lab-admin-token-5c1e";

/// The privilege remora needs on MariaDB 10.5+ (and nothing more; see
/// [`crate::engine::Engine::remora_grants`] for MySQL)...
pub const REMORA_GRANT: &str = "SLAVE MONITOR";
/// ...plus reading pt-heartbeat's table, where a heartbeat is used.
pub const HEARTBEAT_DATABASE: &str = "heartbeat";
