//! Context-aware pools: one remora beside a real replica answers each pool's
//! question, chosen by the line HAProxy's `agent-send` writes.

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

    // An unknown name: the default policy's answer, saying so; logged once.
    for _ in 0..3 {
        assert_eq!(ask(b"mian\n").await?, "up ready 100% #unknown pool mian\n");
    }
    assert_eq!(
        remora.log().matches("unknown pool \"mian\"").count(),
        1,
        "{}",
        remora.log()
    );

    // Bounded request lines: a 10 kB line is ignored, not buffered.
    let long = [b'x'; 10_000];
    let mut stream = TcpStream::connect(remora.agent).await?;
    let _ = stream.write_all(&long).await;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    assert_eq!(reply, "up ready 100%\n");

    // HTTP follows the same rules.
    assert_eq!(
        remora.get("/health?pool=writer").await?,
        (503, "down #not writable: a replica\n".to_owned())
    );
    assert_eq!(remora.get("/health?pool=main").await?.0, 200);
    assert_eq!(
        remora.get("/health?pool=nope").await?,
        (200, "up ready 100% #unknown pool nope\n".to_owned())
    );
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

    // No request line: the default answer once agent.request_timeout (300ms) passes.
    let asked = Instant::now();
    assert_eq!(agent_request(with_pools.agent, b"").await?, refused);
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
    assert_eq!(reply, refused);
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
