//! Context-aware pools: one remora beside a real replica answers each pool's
//! question, chosen by the line HAProxy's `agent-send` writes.
// This times real processes with the wall clock, on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::{mysql_section, remora_bin};
use remora_lab::{Pair, Remora, agent_request, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const POOLS: &str = "poll: {interval: 200ms}
agent: {request_timeout: 300ms}
pools:
  main: {drain_at: 10s, down_at: 30s}
  backup: {drain_at: 1h, down_at: 2h}
  writer: {role: primary}
";

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn each_pool_answers_its_own_question_about_the_same_replica() -> Result<()> {
    let pair = Pair::start().await?;
    let remora = Remora::start(
        remora_bin(),
        &format!("{}{POOLS}", mysql_section(pair.replica.port)),
    )
    .await?;
    let ask = |request: &'static [u8]| agent_request(remora.agent, request);

    assert_eq!(ask(b"main\n").await?, "up ready 100%\n");
    assert_eq!(ask(b"backup\n").await?, "up ready 100%\n");
    assert_eq!(ask(b"writer\n").await?, "down #not writable: a replica\n");
    assert_eq!(ask(b"writer\r\n").await?, "down #not writable: a replica\n");
    assert_eq!(
        ask(b"  writer \n").await?,
        "down #not writable: a replica\n"
    );
    // The line without its newline, then EOF, still names the pool.
    let mut stream = TcpStream::connect(remora.agent).await?;
    stream.write_all(b"writer").await?;
    stream.shutdown().await?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    assert_eq!(reply, "down #not writable: a replica\n");

    // An unknown name (a typo): the strictest pool's answer, saying so;
    // logged once.
    for _ in 0..3 {
        assert_eq!(
            ask(b"writter\n").await?,
            "down #not writable: a replica; unknown pool writter\n"
        );
    }
    assert_eq!(
        remora.log().matches("unknown pool \"writter\"").count(),
        1,
        "{}",
        remora.log()
    );

    // Bounded request lines: a 10 kB line is not buffered, and fails closed.
    let long = [b'x'; 10_000];
    let mut stream = TcpStream::connect(remora.agent).await?;
    let _ = stream.write_all(&long).await;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    assert_eq!(
        reply,
        "down #not writable: a replica; unreadable pool name\n"
    );

    // HTTP follows the same rules.
    assert_eq!(
        remora.get("/health?pool=writer").await?,
        (503, "down #not writable: a replica\n".to_owned())
    );
    assert_eq!(remora.get("/health?pool=main").await?.0, 200);
    assert_eq!(
        remora.get("/health?pool=nope").await?,
        (
            503,
            "down #not writable: a replica; unknown pool nope\n".to_owned()
        )
    );
    assert_eq!(remora.get("/health").await?.0, 200, "the default policy");
    let (_, body) = remora.get("/status").await?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(
        status["verdict"], "up",
        "the default policy at the top level"
    );
    assert_eq!(status["pools"]["writer"]["verdict"], "down");
    assert_eq!(status["pools"]["writer"]["role"], "primary");
    assert_eq!(
        status["pools"]["writer"]["reason"],
        "not writable: a replica"
    );
    assert_eq!(status["pools"]["main"]["agent_reply"], "up ready 100%");

    // Hysteresis is per pool: lag that drains main leaves backup serving.
    let _writes = pair.keep_writing(Duration::from_millis(100));
    pair.start_lag(60).await?;
    let backup = wait_until("pool main to drain", Duration::from_secs(20), async || {
        if !ask(b"main\n").await?.starts_with("up drain") {
            return Ok(None);
        }
        Ok(Some(ask(b"backup\n").await?))
    })
    .await?;
    assert!(backup.starts_with("up ready"), "{backup}");
    Ok(())
}

#[tokio::test]
async fn with_pools_the_agent_waits_briefly_for_the_pool_name_and_without_pools_never() -> Result<()>
{
    let port = remora_lab::free_port()?;
    let with_pools =
        Remora::start(remora_bin(), &format!("{}{POOLS}", mysql_section(port))).await?;
    let without = Remora::start(
        remora_bin(),
        &format!("{}poll: {{interval: 200ms}}\n", mysql_section(port)),
    )
    .await?;
    let refused = "down #mysql unreachable: connection refused\n";
    let unnamed = "down #mysql unreachable: connection refused; no pool named\n";

    // No request line: an answer once agent.request_timeout (300ms) passes.
    let asked = Instant::now();
    assert_eq!(agent_request(with_pools.agent, b"").await?, unnamed);
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(280),
        "answered after {waited:?}"
    );

    // A half-closed client has said all it will: no need to wait.
    let asked = Instant::now();
    let mut stream = TcpStream::connect(with_pools.agent).await?;
    stream.shutdown().await?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    assert_eq!(reply, unnamed);
    // Judged against the wait just measured, in the same run: whatever the
    // machine adds to one reply it adds to the other.
    let half_closed = asked.elapsed();
    assert!(
        half_closed < waited / 2,
        "half-closed answered after {half_closed:?}, a silent client after {waited:?}"
    );

    // Without pools, never: the reply is written before anything is read.
    let mut times = Vec::new();
    for _ in 0..10 {
        let asked = Instant::now();
        assert_eq!(agent_request(without.agent, b"").await?, refused);
        times.push(asked.elapsed());
    }
    times.sort();
    assert!(
        times[5] < waited / 2,
        "median {:?} without pools, {waited:?} for a silent client with pools",
        times[5]
    );
    Ok(())
}

/// A pool name can arrive late (one lost `agent-send` segment costs a
/// 200 ms retransmission), garbled or not at all: none of those exchanges
/// may get an answer more permissive than the pool it was meant for. On a
/// healthy replica the default policy and `main` say `up ready 100%`, and
/// `writer` must never hear it.
#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn a_late_or_garbled_pool_name_never_gets_a_more_permissive_answer() -> Result<()> {
    let pair = Pair::start().await?;
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\nagent: {{request_timeout: 100ms}}\n\
             pools: {{main: {{}}, writer: {{role: primary}}}}\n",
            mysql_section(pair.replica.port)
        ),
    )
    .await?;
    let strictest = "down #not writable: a replica";
    let failed_closed = async || -> Result<u64> {
        let metrics = remora.get("/metrics").await?.1;
        let series = "remora_agent_checks_total{pool=\"unknown\",verdict=\"down\"} ";
        Ok((metrics.lines())
            .find_map(|line| line.strip_prefix(series)?.parse().ok())
            .unwrap_or(0))
    };
    let before = failed_closed().await?;

    // `writer` at once: as before.
    let prompt = agent_request(remora.agent, b"writer\n").await?;
    assert_eq!(prompt, format!("{strictest}\n"));

    // `writer` after the request timeout: answered before it came, as the
    // strictest pool, and never up.
    let mut stream = TcpStream::connect(remora.agent).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stream.write_all(b"writer\n").await;
    let mut late = String::new();
    let _ = stream.read_to_string(&mut late).await;
    assert_eq!(late, format!("{strictest}; no pool named\n"));

    // Half a name when the timeout fires, bytes that are not UTF-8, a line
    // longer than a request may be: garbled, never up.
    let mut half = TcpStream::connect(remora.agent).await?;
    half.write_all(b"wri").await?;
    let mut reply = String::new();
    half.read_to_string(&mut reply).await?;
    assert_eq!(reply, format!("{strictest}; unreadable pool name\n"));
    for garbled in [&b"\xffwriter\xfe\n"[..], &[b'w'; 300]] {
        let reply = agent_request(remora.agent, garbled).await?;
        assert_eq!(reply, format!("{strictest}; unreadable pool name\n"));
    }
    assert_eq!(failed_closed().await? - before, 4, "counted as unknown");

    // An operator whose backends send no name says so: those get the
    // default policy again, and a garbled name still fails closed.
    let mut remora = remora;
    let yaml = format!(
        "{}poll: {{interval: 200ms}}\nagent: {{request_timeout: 100ms, unnamed: default}}\n\
         pools: {{main: {{}}, writer: {{role: primary}}}}\n",
        mysql_section(pair.replica.port)
    );
    remora.rewrite_config(&yaml, None, None)?;
    remora.reload()?;
    wait_until(
        "agent.unnamed: default",
        Duration::from_secs(10),
        async || Ok((agent_request(remora.agent, b"").await? == "up ready 100%\n").then_some(())),
    )
    .await?;
    let reply = agent_request(remora.agent, b"\xff\n").await?;
    assert_eq!(reply, format!("{strictest}; unreadable pool name\n"));
    Ok(())
}

/// A backend without `agent-send` can have a port of its pool's own: every
/// exchange there is that pool's, with nothing to read.
#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn a_pool_with_its_own_port_answers_there_without_a_name() -> Result<()> {
    let pair = Pair::start().await?;
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 200ms}}\n\
             pools: {{main: {{}}, writer: {{role: primary, listen: '127.0.0.1:0'}}}}\n",
            mysql_section(pair.replica.port)
        ),
    )
    .await?;
    // Port 0: the kernel chose one, and remora says which.
    let log = remora.log();
    let port: std::net::SocketAddr = log
        .lines()
        .find_map(|line| line.split("pool writer: agent listening on ").nth(1))
        .map(str::trim)
        .and_then(|addr| addr.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no pool port in the log:\n{log}"))?;
    assert_eq!(
        agent_request(port, b"").await?,
        "down #not writable: a replica\n"
    );
    // Whatever a client sends there, the answer is the pool's.
    assert_eq!(
        agent_request(port, b"main\n").await?,
        "down #not writable: a replica\n"
    );
    assert_eq!(
        agent_request(remora.agent, b"main\n").await?,
        "up ready 100%\n"
    );
    Ok(())
}
