//! Group Replication for real: a single-primary group of three MySQL 9
//! members from the sid root, watched by one remora (a target per member).
//! A secondary's weight falls as the group's writes queue up in its applier,
//! the writer pool follows the group's own PRIMARY through a switch, a
//! member that left the group is down, and one cut off in a minority (the
//! two others frozen with SIGSTOP) is down until they come back.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::remora_bin;
use mysql_async::prelude::Queryable;
use remora_lab::group::Group;
use remora_lab::{Remora, agent_request, wait_until};

/// Every member a target; pools for writes and reads.
fn config(group: &Group) -> String {
    let targets: Vec<String> = (group.members.iter().enumerate())
        .map(|(i, member)| {
            format!(
                "  m{i}: {{mysql: {{host: 127.0.0.1, port: {}}}}}\n",
                member.port
            )
        })
        .collect();
    format!(
        "mysql: {{user: remora, password_env: REMORA_MYSQL_PASSWORD, connect_timeout: 1s, \
         query_timeout: 1s}}\npoll: {{interval: 200ms}}\npolicy: {{recover_after: 1}}\n\
         group_replication: {{applier_queue_full_below: 2, applier_queue_min_at: 20}}\n\
         pools: {{writer: {{role: primary}}, readers: {{role: replica}}}}\ntargets:\n{}",
        targets.concat()
    )
}

async fn ask(remora: &Remora, request: &str) -> Result<String> {
    let reply = agent_request(remora.agent, format!("{request}\n").as_bytes()).await?;
    Ok(reply.trim_end().to_owned())
}

/// Waits until every `(request, reply)` holds at once.
async fn until(remora: &Remora, wanted: &[(&str, &str)], limit: Duration) -> Result<()> {
    let mut last = Vec::new();
    wait_until(&format!("{wanted:?}"), limit, async || {
        last.clear();
        for (request, _) in wanted {
            last.push(ask(remora, request).await?);
        }
        Ok((wanted.iter().zip(&last))
            .all(|((_, want), got)| want == got)
            .then_some(()))
    })
    .await
    .with_context(|| format!("last answers: {last:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MySQL with Group Replication from the sid root: `make test` builds it and runs this"]
async fn the_writer_pool_follows_the_groups_primary_and_a_member_out_of_the_group_is_down()
-> Result<()> {
    let group = Group::start().await?;
    let remora = Remora::start(remora_bin(), &config(&group)).await?;
    let secondary = "down #not writable: group replication secondary";
    until(
        &remora,
        &[
            ("m0/writer", "up ready 100%"),
            ("m1/writer", secondary),
            ("m2/writer", secondary),
            (
                "m0/readers",
                "down #not a replica: group replication primary",
            ),
            ("m1/readers", "up ready 100%"),
            ("m2/readers", "up ready 100%"),
        ],
        Duration::from_secs(10),
    )
    .await?;
    let status = remora.json("/status?target=m1").await?;
    assert_eq!(status["role"], "group secondary", "{status}");
    assert_eq!(status["group_replication"]["state"], "ONLINE", "{status}");
    assert_eq!(status["group_replication"]["members"], 3, "{status}");

    // A secondary's applier held by a table lock: the group's writes queue
    // up there, and its weight falls with the queue.
    let mut holder = group.members[2].conn().await?;
    holder.query_drop("LOCK TABLES lab.ticks READ").await?;
    let writes = group.members[0].keep_writing(
        "INSERT INTO lab.ticks () VALUES ()",
        Duration::from_millis(100),
    );
    let queued = wait_until(
        "m2's queue to cost it weight",
        Duration::from_secs(20),
        async || {
            let reply = ask(&remora, "m2/readers").await?;
            Ok(reply
                .contains("#group replication applier queue")
                .then_some(reply))
        },
    )
    .await?;
    drop(writes);
    holder.query_drop("UNLOCK TABLES").await?;
    holder.disconnect().await?;
    let weight = common::weight(&queued).context("a weight")?;
    assert!(weight < 100, "{queued}");
    until(
        &remora,
        &[("m2/readers", "up ready 100%")],
        Duration::from_secs(20),
    )
    .await?;

    // group_replication_set_as_primary: the writer pool moves with it.
    group.set_primary(1).await?;
    assert_eq!(group.primary(0).await?, 1);
    until(
        &remora,
        &[
            ("m0/writer", secondary),
            ("m1/writer", "up ready 100%"),
            ("m0/readers", "up ready 100%"),
        ],
        Duration::from_secs(10),
    )
    .await?;

    // A member that left the group (STOP GROUP_REPLICATION) is down, for
    // reads and writes, until it is back ONLINE.
    group.members[2].exec(&["STOP GROUP_REPLICATION"]).await?;
    let offline = "down #group replication member offline";
    until(
        &remora,
        &[("m2/readers", offline), ("m2/writer", offline)],
        Duration::from_secs(10),
    )
    .await?;
    group.members[2].exec(&["START GROUP_REPLICATION"]).await?;
    group.wait_state(2, "ONLINE").await?;
    until(
        &remora,
        &[("m2/readers", "up ready 100%")],
        Duration::from_secs(10),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MySQL with Group Replication from the sid root: `make test` builds it and runs this"]
async fn a_member_cut_off_in_a_minority_is_down_until_the_group_is_whole() -> Result<()> {
    let group = Group::start().await?;
    let remora = Remora::start(remora_bin(), &config(&group)).await?;
    until(
        &remora,
        &[("m0/writer", "up ready 100%"), ("m0", "up ready 100%")],
        Duration::from_secs(10),
    )
    .await?;
    // The two others freeze: m0 still runs, and sees them UNREACHABLE.
    for i in [1, 2] {
        group.members[i].freeze()?;
    }
    let minority = "down #group replication minority partition (1 of 3 members reachable)";
    let frozen = until(
        &remora,
        &[("m0/writer", minority), ("m0", minority)],
        Duration::from_secs(30),
    )
    .await;
    for i in [1, 2] {
        group.members[i].thaw()?;
    }
    frozen?;
    until(
        &remora,
        &[("m0/writer", "up ready 100%")],
        Duration::from_secs(60),
    )
    .await
}
