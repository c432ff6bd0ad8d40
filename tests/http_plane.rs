//! The HTTP plane can never hurt the verdict: heavy `/history` readers,
//! however many and however slow, neither slow the poller nor change an
//! agent answer nor grow remora's memory. On the real replica, with the
//! history filled.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::{Checker, mysql_section, remora_bin, rss_kib};
use remora_lab::{Pair, Remora};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Four pools, a poll every 20 ms: a big history fast.
const FOUR_POOLS: &str = "poll: {interval: 20ms, stale_after: 2s}\nhistory: {keep: 10m}\n\
    pools: {main: {drain_at: 10s}, backup: {drain_at: 1h}, writer: {role: primary}, \
    reporting: {drain_at: 1d}}\n";

/// Polls remora made over `window`, per second.
async fn poll_rate(remora: &Remora, window: Duration) -> Result<f64> {
    let before = remora.polls().await?;
    tokio::time::sleep(window).await;
    let after = remora.polls().await?;
    Ok((after - before) as f64 / window.as_secs_f64())
}

/// Downloads `/history` over and over until stopped; returns how many
/// bodies came whole and how many were turned away (503).
fn download_in_a_loop(
    http: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let (mut whole, mut busy) = (0, 0);
        while !stop.is_cancelled() {
            match remora_lab::http_get(http, "/history").await {
                Ok((200, _)) => whole += 1,
                Ok((503, _)) => {
                    busy += 1;
                    // A client that honours Retry-After would wait a second;
                    // this one only yields, to keep the pressure on.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ => {}
            }
        }
        (whole, busy)
    })
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn heavy_history_readers_never_slow_the_poller_nor_change_an_answer_nor_grow_memory()
-> Result<()> {
    let pair = Pair::start().await?;
    let mut remora = Remora::start(
        remora_bin(),
        &format!("{}{FOUR_POOLS}", mysql_section(pair.replica.port)),
    )
    .await?;
    // Some 1,000 polls, five pools each (the default and four).
    remora.wait_until_polls(1000).await?;
    let (code, body) = remora.get("/history").await?;
    assert_eq!(code, 200);
    let history: serde_json::Value = serde_json::from_str(&body)?;
    let samples = history["samples"].as_array().context("samples")?.len();
    assert!(samples >= 900, "{samples} samples kept");
    let answer = remora.reply().await?;

    let quiet = poll_rate(&remora, Duration::from_secs(4)).await?;

    // Dozens of clients downloading the whole history in a loop.
    let checks = Checker::start(remora.agent, 50);
    let stop = tokio_util::sync::CancellationToken::new();
    let downloaders: Vec<_> = (0..48)
        .map(|_| download_in_a_loop(remora.http, stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flooded = poll_rate(&remora, Duration::from_secs(4)).await?;
    stop.cancel();
    let (mut whole, mut busy) = (0, 0);
    for downloader in downloaders {
        let (w, b) = downloader.await?;
        whole += w;
        busy += b;
    }
    checks_during(&checks, &answer)?;
    assert!(
        flooded >= 0.8 * quiet,
        "{flooded:.1} polls/s under the flood, {quiet:.1} quiet"
    );
    assert!(whole > 0, "some downloads came whole");
    println!(
        "polls/s quiet {quiet:.1}, flooded {flooded:.1} ({:.2}x); {whole} bodies whole, {busy} turned away",
        flooded / quiet
    );

    // Well over a hundred clients that ask for the history and never read,
    // with small receive windows, so the kernel cannot take the body off
    // remora's hands: each holds its body in remora for as long as it lives.
    let rss_before = rss_kib(remora.pid());
    let mut stalled = Vec::new();
    for _ in 0..150 {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let mut stream = socket.connect(remora.http).await?;
        stream
            .write_all(b"GET /history HTTP/1.0\r\nHost: remora\r\n\r\n")
            .await?;
        stalled.push(stream);
    }
    // The last one answered: every request before it has been routed (one
    // HTTP thread, accepting in order). The first few hold their places;
    // the rest were told to come back.
    let mut head = [0u8; 12];
    stalled[149].read_exact(&mut head).await?;
    assert_eq!(&head, b"HTTP/1.0 503", "the 150th reader is turned away");
    let rss_during = rss_kib(remora.pid());
    let grown_mib = rss_during.saturating_sub(rss_before) as f64 / 1024.0;
    println!("RSS {rss_before} KiB before 150 stalled readers, {rss_during} KiB with them");
    assert!(grown_mib <= 64.0, "RSS grew {grown_mib:.1} MiB");
    let mut rest = String::new();
    stalled[149].read_to_string(&mut rest).await?;
    assert!(
        rest.to_ascii_lowercase().contains("retry-after: 1"),
        "{rest}"
    );
    drop(stalled);

    assert!(remora.is_running(), "remora is still up");
    assert_eq!(remora.reply().await?, answer);
    Ok(())
}

/// Every agent answer during the flood was the one before it.
fn checks_during(checks: &Checker, answer: &str) -> Result<()> {
    anyhow::ensure!(checks.count() > 100, "{} checks", checks.count());
    let failures = checks.failures();
    anyhow::ensure!(failures.is_empty(), "{failures:?}");
    let changed = checks.any_reply(|reply| reply != answer);
    anyhow::ensure!(changed.is_none(), "an answer changed: {changed:?}");
    Ok(())
}

#[tokio::test]
#[ignore = "needs MariaDB: `make test` installs it and runs this"]
async fn history_takes_since_and_limit() -> Result<()> {
    let pair = Pair::start().await?;
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "{}poll: {{interval: 50ms}}\npools: {{\"a,b\": {{}}}}\n",
            mysql_section(pair.replica.port)
        ),
    )
    .await?;
    remora.wait_until_polls(60).await?;
    let samples = async |query: &str| -> Result<Vec<serde_json::Value>> {
        let (code, body) = remora.get(&format!("/history{query}")).await?;
        anyhow::ensure!(code == 200, "{query}: {code} {body}");
        let history: serde_json::Value = serde_json::from_str(&body)?;
        Ok(history["samples"].as_array().context("samples")?.clone())
    };
    let all = samples("").await?;
    assert!(all.len() >= 60, "{}", all.len());
    assert_eq!(samples("?limit=5").await?.len(), 5);
    // The newest five: the last one is as new as the whole history's.
    let newest = samples("?limit=5").await?;
    assert!(newest[4]["at"].as_str() >= all.last().context("a sample")?["at"].as_str());

    // Seconds ago: only the last second's samples, about 20 at 50 ms.
    let recent = samples("?since=1").await?.len();
    assert!((5..=40).contains(&recent), "{recent} in the last second");
    // An RFC 3339 time: from it on, here from the tenth sample.
    let tenth = all[9]["at"].as_str().context("at")?;
    let from_tenth = samples(&format!("?since={tenth}&format=json")).await?;
    assert_eq!(from_tenth[0]["at"].as_str(), Some(tenth));
    let encoded = tenth.replace(':', "%3A");
    assert_eq!(samples(&format!("?since={encoded}")).await?[0]["at"], tenth);
    assert!(samples("?since=2999-01-01T00:00:00Z").await?.is_empty());

    for bad in ["?since=yesterday", "?limit=0", "?limit=-1", "?since=-5"] {
        let (code, body) = remora.get(&format!("/history{bad}")).await?;
        assert_eq!(code, 400, "{bad}: {body}");
        let named = if bad.contains("since") {
            "since"
        } else {
            "limit"
        };
        assert!(body.starts_with(named), "{bad}: {body}");
    }

    // CSV too; a pool name with a comma is quoted in the header.
    let (_, csv) = remora.get("/history?format=csv&limit=3").await?;
    let mut lines = csv.lines();
    let header = lines.next().context("a header")?;
    assert!(
        header.contains(",\"a,b_target\",\"a,b_verdict\","),
        "{header}"
    );
    assert_eq!(lines.count(), 3);
    Ok(())
}
