//! A read-only server that replicates from nowhere serves data that never
//! changes: out by default, as `policy.standalone_read_only` says otherwise.
//! On a real pair's primary, with `read_only` switched on and off, and on a
//! replica whose replication was removed: on MariaDB 10.11, MariaDB 11 and
//! MySQL 9 alike.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{mysql_section, remora_bin};
use remora_lab::{Engine, Pair, Remora, agent_request};

on_servers!(
    a_primary_switched_read_only_is_out_until_it_is_writable_again,
    mysql
);
async fn a_primary_switched_read_only_is_out_until_it_is_writable_again(
    engine: Engine,
) -> Result<()> {
    let pair = Pair::start_on(engine).await?;
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\npolicy: {{recover_after: 2}}\n\
             agent: {{unnamed: default}}\n\
             pools:\n  frozen_ok: {{standalone_read_only: up}}\n  \
             cautious: {{standalone_read_only: drain}}\n  writer: {{role: primary}}\n",
            mysql_section(pair.primary.port)
        ),
    )
    .await?;
    let ask = async |pool: &str| -> Result<String> {
        let reply = agent_request(remora.agent, format!("{pool}\n").as_bytes()).await?;
        Ok(reply.trim_end().to_owned())
    };
    assert_eq!(ask("").await?, "up ready 100%");

    pair.primary.exec(&["SET GLOBAL read_only = ON"]).await?;
    remora
        .wait_reply(Duration::from_secs(5), |r| {
            r == "down #read-only but not replicating"
        })
        .await?;
    assert_eq!(
        ask("frozen_ok").await?,
        "up ready 100% #read-only but not replicating"
    );
    assert_eq!(
        ask("cautious").await?,
        "up drain #read-only but not replicating"
    );
    assert_eq!(ask("writer").await?, "down #not writable: read_only is on");
    let status = remora.status().await?;
    assert_eq!(status["role"], "standalone", "{status}");
    assert_eq!(status["read_only"], true, "{status}");
    assert_eq!(status["lag"], serde_json::Value::Null, "{status}");

    pair.primary.exec(&["SET GLOBAL read_only = OFF"]).await?;
    remora
        .wait_reply(Duration::from_secs(5), |r| r == "up ready 100%")
        .await?;
    assert_eq!(ask("writer").await?, "up ready 100%");
    assert_eq!(remora.status().await?["role"], "primary");
    Ok(())
}

on_servers!(
    a_replica_whose_replication_was_removed_is_out_while_it_stays_read_only,
    mysql
);
async fn a_replica_whose_replication_was_removed_is_out_while_it_stays_read_only(
    engine: Engine,
) -> Result<()> {
    let pair = Pair::start_on(engine).await?;
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\n",
            mysql_section(pair.replica.port)
        ),
    )
    .await?;
    assert_eq!(remora.reply().await?, "up ready 100%");
    // RESET SLAVE ALL (RESET REPLICA ALL) leaves no channel at all: the
    // replica now looks like a standalone server, and its copy stops changing.
    let reset = match engine {
        Engine::MySql => "RESET REPLICA ALL",
        Engine::MariaDb | Engine::MariaDbLts => "RESET SLAVE ALL",
    };
    pair.replica
        .exec(&["SET GLOBAL read_only = ON", &engine.stop_replica(""), reset])
        .await?;
    remora
        .wait_reply(Duration::from_secs(5), |r| {
            r == "down #read-only but not replicating"
        })
        .await?;
    Ok(())
}
