//! The agent and HTTP listeners of a real remora process: protocol manners,
//! hostile clients, start-up and shutdown. These watch a MySQL address that
//! refuses or never greets, so they need no database: the verdict is `down`,
//! and what is under test is how it is served.
// This times real processes with the wall clock, on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::TcpListener as StdListener;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{mysql_section, remora_bin};
use remora_lab::{Remora, agent_reply, free_port, signal, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REFUSED: &str = "down #mysql unreachable: connection refused";

/// remora watching a port nothing listens on.
async fn remora_watching_nothing() -> Result<Remora> {
    let port = free_port()?;
    Remora::start(
        remora_bin(),
        &format!("{}poll: {{interval: 200ms}}\n", mysql_section(port)),
    )
    .await
}

#[tokio::test]
async fn replies_at_once_without_waiting_for_a_request() -> Result<()> {
    let remora = remora_watching_nothing().await?;
    let asked = Instant::now();
    let reply = agent_reply(remora.agent).await?;
    assert_eq!(reply, format!("{REFUSED}\n"));
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_client_that_writes_first_still_reads_the_whole_reply() -> Result<()> {
    let remora = remora_watching_nothing().await?;
    // Write, then read only after remora has replied and closed: had remora
    // closed with our bytes unread, the kernel's reset would have discarded
    // the reply from our receive queue.
    let mut stream = TcpStream::connect(remora.agent).await?;
    stream.write_all(b"x\n").await?;
    let local = stream.local_addr()?;
    wait_until("remora's FIN", Duration::from_secs(5), async || {
        Ok(remora_lab::peer_closed(local)?.then_some(()))
    })
    .await?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    assert_eq!(reply, format!("{REFUSED}\n"));

    // The same with the operator's tool of choice.
    let agent = remora.agent;
    let output = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf 'x\\n' | nc -w 3 {} {}",
                agent.ip(),
                agent.port()
            ))
            .output()
    })
    .await?
    .context("running nc (netcat-openbsd)")?;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{REFUSED}\n")
    );
    Ok(())
}

#[tokio::test]
async fn with_pools_a_client_that_sent_its_whole_line_is_let_go_at_once_and_others_linger()
-> Result<()> {
    let port = free_port()?;
    let remora = Remora::start(
        remora_bin(),
        &format!("{}pools: {{main: {{}}}}\n", mysql_section(port)),
    )
    .await?;
    // HAProxy's exchange: one line, then it reads the reply (and keeps its
    // end open here): remora has nothing left to discard and lets go.
    let mut haproxy = TcpStream::connect(remora.agent).await?;
    haproxy.write_all(b"main\n").await?;
    let mut reply = String::new();
    haproxy.read_to_string(&mut reply).await?;
    assert_eq!(reply, format!("{REFUSED}\n"));
    let local = haproxy.local_addr()?;
    wait_until(
        "remora to let go of its socket",
        Duration::from_millis(800),
        async || Ok((remora_lab::peer_socket_held(local)? != Some(true)).then_some(())),
    )
    .await?;
    // More after the line: remora lingers, reading it, until we close (or
    // 1 s). An exchange this test took half of that over (a busy machine)
    // cannot tell, and is tried again.
    let mut sloppies = Vec::new();
    for _ in 0..5 {
        let began = Instant::now();
        let mut sloppy = TcpStream::connect(remora.agent).await?;
        sloppy.write_all(b"main\nand more").await?;
        let mut reply = String::new();
        sloppy.read_to_string(&mut reply).await?;
        assert_eq!(reply, format!("{REFUSED}\n"));
        // Its FIN has come (we read to EOF), yet it still holds its end.
        let held = remora_lab::peer_socket_held(sloppy.local_addr()?)?;
        sloppies.push(sloppy);
        if held == Some(true) {
            return Ok(());
        }
        assert!(
            began.elapsed() >= Duration::from_millis(500),
            "remora let go of the sloppy client's socket at once: {held:?}"
        );
    }
    drop(haproxy);
    anyhow::bail!("five exchanges in a row took over half of remora's linger: cannot tell")
}

#[tokio::test]
async fn never_answers_before_the_first_poll_has_an_answer() -> Result<()> {
    // A "server" that completes TCP handshakes but never greets, like a
    // frozen mysqld: the first poll can only end by its connect timeout.
    let silent = StdListener::bind("127.0.0.1:0")?;
    let port = silent.local_addr()?.port();
    let yaml =
        format!("mysql:\n  port: {port}\n  connect_timeout: 1500ms\npoll: {{interval: 1s}}\n");
    let started = Instant::now();
    let remora = Remora::builder(remora_bin(), &yaml).spawn()?;
    // Connect as soon as the listener exists; the reply must wait for the poll.
    let reply = loop {
        match TcpStream::connect(remora.agent).await {
            Ok(mut stream) => {
                let mut reply = String::new();
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply))
                    .await??;
                break reply;
            }
            Err(_) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(err) => return Err(err.into()),
        }
    };
    assert_eq!(reply, "down #mysql connect timeout (1s 500ms)\n");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
    Ok(())
}

#[tokio::test]
async fn http_health_status_and_unknown_paths() -> Result<()> {
    let remora = remora_watching_nothing().await?;
    let (code, body) = remora.get("/health").await?;
    assert_eq!(
        (code, body.as_str()),
        (503, format!("{REFUSED}\n").as_str())
    );

    let (code, body) = remora.get("/status").await?;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(status["verdict"], "down");
    assert_eq!(status["weight"], 0);
    assert_eq!(status["reason"], "mysql unreachable: connection refused");
    assert_eq!(status["role"], "unknown");
    assert_eq!(status["last_poll"]["ok"], false);
    assert_eq!(status["last_poll"]["error"]["kind"], "unreachable");
    assert_eq!(status["last_success"], serde_json::Value::Null);

    assert_eq!(remora.get("/nope").await?.0, 404);
    assert_eq!(remora.get("/status/extra").await?.0, 404);
    let (code, _) = remora_lab::remora::http_request(remora.http, "POST", "/status").await?;
    assert_eq!(code, 405);

    // A client that sends half a request head holds only its own connection.
    let mut slow = TcpStream::connect(remora.http).await?;
    slow.write_all(b"GET /sta").await?;
    let asked = Instant::now();
    assert_eq!(remora.get("/health").await?.0, 503);
    assert!(asked.elapsed() < Duration::from_millis(500));
    // ...and is cut off by the header deadline rather than kept forever.
    let mut rest = Vec::new();
    let cut = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(cut.is_ok(), "slow client still connected after 5s");
    Ok(())
}

#[tokio::test]
async fn sigterm_exits_zero_within_two_seconds_even_with_clients_lingering() -> Result<()> {
    let mut remora = remora_watching_nothing().await?;
    let mut lingering = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(remora.agent).await?;
        stream.write_all(b"main\n").await?;
        lingering.push(stream);
    }
    let http_idle = TcpStream::connect(remora.http).await?;

    let asked = Instant::now();
    remora.signal(signal::SIGTERM)?;
    let status = remora
        .wait_exit(Duration::from_secs(3))
        .await
        .context("no exit within 3s")?;
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}\n{}", remora.log());
    assert!(took < Duration::from_secs(2), "exited after {took:?}");
    assert!(remora.log().contains("SIGTERM"), "{}", remora.log());
    drop((lingering, http_idle));
    Ok(())
}

#[tokio::test]
async fn sigint_is_a_clean_exit_too() -> Result<()> {
    let mut remora = remora_watching_nothing().await?;
    remora.signal(signal::SIGINT)?;
    let status = remora
        .wait_exit(Duration::from_secs(3))
        .await
        .context("no exit within 3s")?;
    assert!(status.success(), "{status:?}");
    Ok(())
}

/// Sends `raw` to the HTTP port and reads until remora closes: the status
/// code, if any response came, and how long it took.
async fn http_raw(addr: std::net::SocketAddr, raw: &[u8]) -> Result<(Option<u16>, Duration)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await?;
    // The peer may close before taking it all: that is an answer too.
    let _ = stream.write_all(raw).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    anyhow::ensure!(read.is_ok(), "http: no close within 15 s after {raw:.40?}");
    let text = String::from_utf8_lossy(&response);
    let code = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok());
    Ok((code, started.elapsed()))
}

#[tokio::test]
async fn hostile_http_requests_get_a_4xx_or_a_close_and_never_a_hang() -> Result<()> {
    let mut remora = remora_watching_nothing().await?;
    let http = remora.http;
    let huge_header = format!(
        "GET /status HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let huge_body = format!(
        "POST /maintenance HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n{}",
        "d".repeat(1 << 20)
    );
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "malformed request line",
            b"GARBAGE\r\n\r\n".to_vec(),
            &[400],
        ),
        ("binary", b"\x00\xff\xfe\x01\r\n\r\n".to_vec(), &[400]),
        (
            "unknown method",
            b"BREW /status HTTP/1.1\r\n\r\n".to_vec(),
            &[405],
        ),
        (
            "unknown method, unknown path",
            b"BREW /pot HTTP/1.1\r\n\r\n".to_vec(),
            &[404, 405],
        ),
        ("huge header", huge_header.into_bytes(), &[431]),
        ("huge maintenance body", huge_body.into_bytes(), &[413]),
        (
            "bad version",
            b"GET /status HTTP/7.0\r\n\r\n".to_vec(),
            &[400, 505],
        ),
        (
            "no host, absolute garbage URI",
            b"GET :::: HTTP/1.1\r\n\r\n".to_vec(),
            &[400],
        ),
    ];
    for (name, raw, allowed) in cases {
        let (code, took) = http_raw(http, &raw).await?;
        println!("http {name}: {code:?} in {took:?}");
        anyhow::ensure!(
            code.is_none_or(|code| allowed.contains(&code)),
            "{name}: got {code:?}, expected one of {allowed:?} or a close"
        );
    }
    // The huge body did not switch maintenance on.
    assert_eq!(remora.get("/maintenance").await?, (200, "off\n".to_owned()));

    // Slow headers: a head that never ends is cut off at the header deadline.
    let (code, took) = http_raw(http, b"GET /status HTTP/1.1\r\nX-Slow: ").await?;
    println!("http slow headers: {code:?} after {took:?}");
    anyhow::ensure!(
        code.is_none_or(|code| code == 408),
        "slow headers: {code:?}"
    );

    // More slow clients than the HTTP cap (256): each new one closes the
    // oldest, so a health check in the middle of them is still answered.
    let mut slow = Vec::new();
    for _ in 0..400 {
        let mut stream = TcpStream::connect(http).await?;
        stream
            .write_all(b"GET /status HTTP/1.1\r\nX-Slow: ")
            .await?;
        slow.push(stream);
    }
    let (code, body) = remora.get("/health").await?;
    assert_eq!(
        (code, body.as_str()),
        (503, format!("{REFUSED}\n").as_str())
    );
    let fds = std::fs::read_dir(format!("/proc/{}/fd", remora.pid()))?.count();
    println!("http: 400 slow clients, remora has {fds} descriptors open");
    anyhow::ensure!(fds < 256 + 48, "{fds} descriptors open");
    drop(slow);
    assert!(remora.is_running(), "remora survived:\n{}", remora.log());
    Ok(())
}
