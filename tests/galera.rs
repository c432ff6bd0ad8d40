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

/// One remora watching a real Galera node and a MySQL 8 Group Replication
/// member (the wire fixture: MySQL 8 cannot be installed here), each judged
/// by its own rules, side by side.
#[tokio::test]
#[ignore = "needs MariaDB and galera-4: `make test` installs it and runs this"]
async fn a_galera_node_and_a_group_member_in_one_remora_are_each_judged_by_their_own_rules()
-> Result<()> {
    use remora_lab::fixture::{Flavor, Member, MysqlFixture};
    let node = GaleraNode::start().await?;
    let member = MysqlFixture::start(Flavor::MySql84).await?;
    let own = |state: &'static str| Member {
        id: "8a94f357-aab4-11df-86ab-c80aa9429562".into(), // the fixture's @@server_uuid
        port: 3306,
        state,
        role: "SECONDARY",
    };
    member.set(|s| {
        s.read_only = true;
        s.members = vec![
            Member {
                id: "0b1c-primary".into(),
                port: 3306,
                state: "ONLINE",
                role: "PRIMARY",
            },
            own("ONLINE"),
        ];
    });
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "mysql: {{user: remora, password_env: REMORA_MYSQL_PASSWORD}}\n\
             poll: {{interval: 200ms}}\npolicy: {{recover_after: 1}}\n\
             targets:\n  node: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n  member: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n",
            node.server.port,
            member.addr.port()
        ),
    )
    .await?;
    let ask = async |target: &str| -> Result<String> {
        let reply =
            remora_lab::agent_request(remora.agent, format!("{target}\n").as_bytes()).await?;
        Ok(reply.trim_end().to_owned())
    };
    let settle = async |target: &str, wanted: &str| -> Result<()> {
        remora_lab::wait_until(
            &format!("{target}: {wanted}"),
            Duration::from_secs(10),
            async || Ok((ask(target).await? == wanted).then_some(())),
        )
        .await
    };
    settle("node", "up ready 100%").await?;
    settle("member", "up ready 100%").await?;
    let (_, body) = remora.get("/status?target=node").await?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(status["galera"]["cluster_status"], "Primary", "{status}");
    let (_, body) = remora.get("/status?target=member").await?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(status["role"], "group secondary", "{status}");

    // Each breaks its own way; the other is not touched.
    node.server.exec(&["SET GLOBAL wsrep_desync = ON"]).await?;
    member.set(|s| s.members[1] = own("RECOVERING"));
    settle("node", "up drain #galera desynced (wsrep_desync ON)").await?;
    settle("member", "down #group replication member recovering").await?;
    node.server.exec(&["SET GLOBAL wsrep_desync = OFF"]).await?;
    settle("node", "up ready 100%").await?;
    assert_eq!(
        ask("member").await?,
        "down #group replication member recovering"
    );
    Ok(())
}
