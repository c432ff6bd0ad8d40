//! A real single-node MariaDB Galera cluster (Debian's galera-4): up only
//! when ready, primary and synced; an operator's desync or reject_queries
//! drains it; status reads never wait for cluster causality.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{mysql_section, remora_bin};
use remora_lab::Remora;
use remora_lab::galera::GaleraNode;

#[tokio::test]
#[ignore = "needs MariaDB and galera-4: `make test` installs it and runs this"]
async fn galera_node_states_map_to_verdicts() -> Result<()> {
    let node = GaleraNode::start().await?;
    let server = &node.server;
    // Record every statement, to see remora's session settings.
    server
        .exec(&[
            "SET GLOBAL log_output = 'TABLE'",
            "SET GLOBAL general_log = ON",
        ])
        .await?;
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\npolicy: {{recover_after: 2}}\n",
            mysql_section(server.port)
        ),
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");
    let (_, body) = remora.get("/status").await?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(status["galera"]["local_state"], 4, "{status}");
    assert_eq!(status["galera"]["cluster_status"], "Primary");
    assert_eq!(status["galera"]["ready"], true);

    // Desync (the node becomes Donor/Desynced): drained, then back.
    server.exec(&["SET GLOBAL wsrep_desync = ON"]).await?;
    remora
        .wait_reply(Duration::from_secs(5), |r| {
            r == "up drain #galera desynced (wsrep_desync ON)"
        })
        .await?;
    assert_eq!(remora.get("/health").await?.0, 404);
    server.exec(&["SET GLOBAL wsrep_desync = OFF"]).await?;
    remora
        .wait_reply(Duration::from_secs(5), |r| r == "up ready 100%")
        .await?;

    // An operator rejects queries: drained too.
    server
        .exec(&["SET GLOBAL wsrep_reject_queries = ALL"])
        .await?;
    remora
        .wait_reply(Duration::from_secs(5), |r| {
            r == "up drain #galera rejects queries (ALL)"
        })
        .await?;
    server
        .exec(&["SET GLOBAL wsrep_reject_queries = NONE"])
        .await?;
    remora
        .wait_reply(Duration::from_secs(5), |r| r == "up ready 100%")
        .await?;

    let logged = server
        .value(
            "SELECT COUNT(*) FROM mysql.general_log \
             WHERE argument LIKE 'SET SESSION wsrep_sync_wait = 0'",
        )
        .await?;
    assert!(
        logged.is_some_and(|n| n != "0"),
        "remora's session turned wsrep_sync_wait off"
    );
    server.exec(&["SET GLOBAL general_log = OFF"]).await?;
    Ok(())
}
