//! A fleet that one bad file, one busy HAProxy tier or one broken replica
//! cannot take down: the edges of the happy path, each a scenario an
//! operator has lived through. In this process, against the lab's MySQL
//! wire-protocol fixtures; plain `cargo test` runs them.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::central::{Central, fleet_yaml, hung_server, on_port, write};
use common::running::{Running, replica};
use remora::config::Config;
use remora::ctl::{self, Action, Client, Waiting};
use remora_lab::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targets_file_emptied_in_place_keeps_every_target_until_confirmed() -> Result<()> {
    let (a, b) = (replica(0).await?, replica(16).await?);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("targets.yaml");
    let both = format!(
        "r1: {}\nr2: {}\n",
        on_port(a.addr.port()),
        on_port(b.addr.port())
    );
    write(&file, &both)?;
    let yaml = fleet_yaml(&format!("targets_file: {}\n", file.display()));
    let central = Central::start(&yaml).await?;
    assert_eq!(central.targets().await?, ["r1", "r2"]);

    // A template engine writing in place: `>` truncates, and the watcher
    // reads the file empty.
    let before = central.json("/status").await?["targets_file"]["read_at"].clone();
    std::fs::write(&file, "")?;
    let state = central.next_file_read(&before).await?;
    assert_eq!(central.targets().await?, ["r1", "r2"], "{state}");
    assert_eq!(central.reply("r1/main\n").await?, "up ready 100%");
    assert_eq!(central.reply("r2/main\n").await?, "up ready 55% #lag 16.0s");
    let held = state["held"].as_str().context("held says why")?;
    assert!(held.contains("would remove 2 of 2 targets"), "{state}");

    // The engine finishes writing: the same set, nothing to hold.
    let before = state["read_at"].clone();
    std::fs::write(&file, &both)?;
    let state = central.next_file_read(&before).await?;
    assert!(state["held"].is_null(), "{state}");
    assert_eq!(central.targets().await?, ["r1", "r2"]);

    // An empty file the operator means: SIGHUP is their word for it.
    std::fs::write(&file, "")?;
    central.reload(Config::from_yaml(&yaml)?).await?;
    central.wait_for_targets(&[]).await?;
    central.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharp_shrink_waits_until_the_file_has_read_the_same_for_a_while() -> Result<()> {
    let fixtures = [replica(0).await?, replica(0).await?, replica(0).await?];
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("targets.yaml");
    let entry = |i: usize| format!("r{i}: {}\n", on_port(fixtures[i].addr.port()));
    write(&file, &(entry(0) + &entry(1) + &entry(2)))?;
    let central = Central::start(&fleet_yaml(&format!(
        "targets_file: {}\nfleet: {{max_removed: 1, removal_hold: 3s}}\n",
        file.display()
    )))
    .await?;
    // One removed is within max_removed: applied at once.
    write(&file, &(entry(0) + &entry(1)))?;
    central.wait_for_targets(&["r0", "r1"]).await?;
    // Both of the rest: held, then applied once the file has read the
    // same for removal_hold.
    let before = central.json("/status").await?["targets_file"]["read_at"].clone();
    write(&file, "")?;
    let state = central.next_file_read(&before).await?;
    let held_at = tokio::time::Instant::now();
    ensure!(state["held"].is_string(), "{state}");
    assert_eq!(central.targets().await?, ["r0", "r1"]);
    // An empty file is never applied by the watcher alone...
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(central.targets().await?, ["r0", "r1"]);
    // ...but a smaller set is, once it stays.
    write(&file, &entry(1))?;
    central.wait_for_targets(&["r1"]).await?;
    let waited = held_at.elapsed();
    ensure!(waited >= Duration::from_secs(3), "applied after {waited:?}");
    central.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_file_is_refused_not_read_as_a_smaller_set() -> Result<()> {
    let (a, b) = (replica(0).await?, replica(16).await?);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("targets.yaml");
    let r1 = format!("r1: {}\n", on_port(a.addr.port()));
    write(&file, &format!("{r1}r2: {}\n", on_port(b.addr.port())))?;
    let central =
        Central::start(&fleet_yaml(&format!("targets_file: {}\n", file.display()))).await?;
    // Read while the writer was cut off after `r2:`.
    let before = central.json("/status").await?["targets_file"]["read_at"].clone();
    write(&file, &format!("{r1}r2:"))?;
    let state = central.next_file_read(&before).await?;
    let error = state["error"].as_str().context("refused, saying why")?;
    assert!(error.contains("targets.r2"), "{error}");
    assert!(error.contains("mysql.host or mysql.socket"), "{error}");
    assert_eq!(central.reply("r2/main\n").await?, "up ready 55% #lag 16.0s");
    central.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_listing_more_targets_than_the_cap_is_refused_keeping_the_old_set() -> Result<()> {
    let a = replica(0).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("targets.json");
    write(
        &file,
        &format!(r#"[{{"targets": ["127.0.0.1:{}"]}}]"#, a.addr.port()),
    )?;
    let central = Central::start(&format!(
        "mysql: {{user: remora, connect_timeout: 300ms}}\npoll: {{interval: 1s}}\n\
         targets_file: {}\n",
        file.display()
    ))
    .await?;
    let first = format!("127.0.0.1:{}", a.addr.port());
    assert_eq!(central.targets().await?, [first.as_str()]);
    // The whole estate's file_sd list: far more than one remora watches.
    let estate: Vec<String> = (1..=1001)
        .map(|port| format!("\"127.0.0.1:{port}\""))
        .collect();
    let before = central.json("/status").await?["targets_file"]["read_at"].clone();
    write(
        &file,
        &format!(r#"[{{"targets": [{}]}}]"#, estate.join(",")),
    )?;
    let state = central.next_file_read(&before).await?;
    let error = state["error"].as_str().context("refused, saying why")?;
    assert!(error.contains("1001 targets"), "{error}");
    assert!(error.contains("fleet.max_targets"), "{error}");
    assert_eq!(central.targets().await?, [first.as_str()]);
    central.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targets_file_may_name_addresses_but_not_secrets_paths_or_other_hosts() -> Result<()> {
    let a = replica(0).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("targets.yaml");
    write(&file, &format!("r1: {}\n", on_port(a.addr.port())))?;
    let central = Central::start(&fleet_yaml(&format!(
        "targets_file: {}\nfleet: {{file_hosts: [127.0.0.0/8]}}\n",
        file.display()
    )))
    .await?;
    for (text, wanted) in [
        (
            "[{\"targets\": [\"evil.example:3306\"]}]".to_owned(),
            "evil.example: not in fleet.file_hosts",
        ),
        (
            format!(
                "r1: {{mysql: {{host: 127.0.0.1, port: {}, password_file: /etc/shadow}}}}\n",
                a.addr.port()
            ),
            "targets.r1.mysql.password_file: a targets file may not set this",
        ),
        (
            format!(
                "r1: {{mysql: {{host: 127.0.0.1, port: {}}}, maintenance: {{state_file: /etc/passwd}}}}\n",
                a.addr.port()
            ),
            "targets.r1.maintenance.state_file: a targets file may not set this",
        ),
    ] {
        let before = central.json("/status").await?["targets_file"]["read_at"].clone();
        write(&file, &text)?;
        let state = central.next_file_read(&before).await?;
        let error = state["error"].as_str().context("refused")?;
        assert!(error.contains(wanted), "{text}: {error}");
        assert_eq!(central.reply("r1/main\n").await?, "up ready 100%");
    }
    central.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_touch_drains_one_target_not_the_fleet() -> Result<()> {
    let (a, b) = (replica(0).await?, replica(0).await?);
    let dir = tempfile::tempdir()?;
    let maint = dir.path().join("maint");
    let central = Central::start(&fleet_yaml(&format!(
        "maintenance: {{file: {}}}\ntargets: {{r1: {}, r2: {}}}\n",
        maint.display(),
        on_port(a.addr.port()),
        on_port(b.addr.port())
    )))
    .await?;
    // The shared name drains nobody: each target has its own file.
    std::fs::write(&maint, "")?;
    std::fs::write(dir.path().join("maint.r1"), "kernel upgrade")?;
    wait_until("r1 to drain", Duration::from_secs(10), async || {
        Ok(central
            .reply("r1/main\n")
            .await?
            .starts_with("up drain")
            .then_some(()))
    })
    .await?;
    assert_eq!(central.reply("r2/main\n").await?, "up ready 100%");
    let status = central.json("/status?target=r2").await?;
    assert!(status["maintenance"].is_null(), "{status}");
    central.stop().await
}

/// `remora ctl drain --wait` against a remora listening for HTTP on `http`.
async fn drain_and_wait(http: SocketAddr, target: Option<&str>) -> Result<String> {
    let config = Config::from_yaml(&format!("http: {{listen: '{http}'}}"))?;
    let client = Client::of(&config, None, target.map(str::to_owned));
    let action = Action::Switch {
        maint: false,
        message: "kernel upgrade".into(),
    };
    let waiting = Waiting {
        acknowledged: true,
        idle_below: None,
        timeout: Duration::from_secs(10),
    };
    ctl::run(&client, &action, waiting)
        .await
        .map_err(Into::into)
}

/// One agent check from `source` (a loopback address of its own), as a
/// HAProxy there would send it.
async fn check_from(source: Ipv4Addr, agent: SocketAddr, request: &str) -> Result<String> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let mut stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(agent)).await??;
    stream.write_all(request.as_bytes()).await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply)).await??;
    Ok(reply)
}

/// The `n`th HAProxy's loopback address: 127.1.x.y.
fn haproxy(n: usize) -> Ipv4Addr {
    let [_, _, high, low] = (n as u32).to_be_bytes();
    Ipv4Addr::new(127, 1, high, low)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_is_not_acknowledged_when_more_haproxies_ask_than_remora_remembers() -> Result<()> {
    let a = replica(0).await?;
    let remora = Running::start(Config::from_yaml(&format!(
        "mysql: {{host: 127.0.0.1, port: {}, user: remora}}\npoll: {{interval: 100ms}}\n",
        a.addr.port()
    ))?)
    .await?;
    // A sidecar HAProxy in each of 1,025 application pods, every one
    // checking in turn, round after round.
    let pods = remora::checks::MAX_PEERS + 1;
    for _round in 0..2 {
        for pod in 0..pods {
            let reply = check_from(haproxy(pod), remora.agent, "").await?;
            ensure!(reply.starts_with("up ready 100%"), "{reply}");
        }
    }
    match drain_and_wait(remora.http, None).await {
        Ok(said) => bail!("acknowledged on a guess: {said}"),
        Err(err) => {
            let err = err.to_string();
            assert!(err.contains("cannot tell"), "{err}");
            assert!(err.contains("forgotten to make room"), "{err}");
        }
    }
    // The drain itself is on: only the acknowledgement is refused.
    wait_until(
        "the drain to be answered",
        Duration::from_secs(5),
        async || {
            Ok(remora
                .reply("")
                .await?
                .starts_with("up drain")
                .then_some(()))
        },
    )
    .await?;
    remora.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_haproxies_behind_one_address_are_not_taken_for_one() -> Result<()> {
    let a = replica(0).await?;
    let remora = Running::start(Config::from_yaml(&format!(
        "mysql: {{host: 127.0.0.1, port: {}, user: remora}}\npoll: {{interval: 100ms}}\n",
        a.addr.port()
    ))?)
    .await?;
    // Two HAProxies behind one SNAT address, each checking every 400 ms,
    // 60 ms apart.
    let snat = Ipv4Addr::new(127, 2, 0, 1);
    let every = Duration::from_millis(400);
    let asking = {
        let agent = remora.agent;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let _ = check_from(snat, agent, "").await;
                tokio::time::sleep(Duration::from_millis(60)).await;
                let _ = check_from(snat, agent, "").await;
            }
        })
    };
    wait_until(
        "ten rounds of checks",
        Duration::from_secs(20),
        async || {
            let status = remora.json("/status").await?;
            let checks = status["peers"][0]["checks"].as_u64().unwrap_or(0);
            Ok((checks >= 20).then_some(()))
        },
    )
    .await?;
    let waited = drain_and_wait(remora.http, None).await;
    asking.abort();
    match waited {
        Ok(said) => bail!("acknowledged on a guess: {said}"),
        Err(err) => {
            let err = err.to_string();
            assert!(err.contains("more than one rhythm"), "{err}");
            assert!(err.contains("127.2.0.1"), "{err}");
        }
    }
    remora.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_new_targets_first_poll() -> Result<()> {
    let a = replica(0).await?;
    let hung = hung_server()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("targets.yaml");
    write(&file, &format!("r1: {}\n", on_port(a.addr.port())))?;
    // A server that never greets, with a minute to do it in.
    let connect_timeout = Duration::from_secs(60);
    let central = Central::start(&format!(
        "mysql: {{user: remora, connect_timeout: 60s}}\npoll: {{interval: 100ms}}\n\
         targets_file: {}\n",
        file.display()
    ))
    .await?;
    write(
        &file,
        &format!(
            "r1: {}\nstuck: {}\n",
            on_port(a.addr.port()),
            on_port(hung.local_addr()?.port())
        ),
    )?;
    // The change is being applied (stuck's first poll is under way)...
    tokio::time::sleep(Duration::from_secs(3)).await;
    // ...and SIGTERM does not wait for it.
    let asked = tokio::time::Instant::now();
    central.stop().await?;
    let took = asked.elapsed();
    ensure!(
        took * 6 < connect_timeout,
        "stopped after {took:?}, the connect timeout being {connect_timeout:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleets_own_pages_take_a_heavy_place_like_the_rest() -> Result<()> {
    let a = replica(0).await?;
    let central = Central::start(&format!(
        "mysql: {{user: remora}}\npoll: {{interval: 10ms}}\nhistory: {{keep: 10m}}\n\
         pools: {{main: {{drain_at: 10s}}, backup: {{drain_at: 1h}}, writer: {{role: primary}}, \
         reporting: {{drain_at: 1d}}}}\ntargets: {{r1: {}}}\n",
        on_port(a.addr.port())
    ))
    .await?;
    // A history big enough that its body outlasts the socket buffers.
    wait_until("a long history", Duration::from_secs(20), async || {
        let status = central.json("/status?target=r1").await?;
        let polls = status["polls"]["total"].as_u64().context("polls.total")?;
        Ok((polls >= 200).then_some(()))
    })
    .await?;
    // Readers that ask for the history and never read hold every place.
    let mut stalled = Vec::new();
    for _ in 0..remora::http::HEAVY_RENDERS {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let mut stream = socket.connect(central.http).await?;
        stream
            .write_all(b"GET /history?target=r1 HTTP/1.0\r\nHost: remora\r\n\r\n")
            .await?;
        stalled.push(stream);
    }
    for path in ["/history?target=r1", "/status", "/metrics", "/"] {
        let (code, body) = wait_until(
            &format!("{path} to find every place taken"),
            Duration::from_secs(5),
            async || {
                let (code, body) = central.get(path).await?;
                Ok((code == 503).then_some((code, body)))
            },
        )
        .await?;
        assert!(body.contains("busy"), "{path}: {code} {body}");
    }
    drop(stalled);
    wait_until("places freed", Duration::from_secs(5), async || {
        Ok((central.get("/status").await?.0 == 200).then_some(()))
    })
    .await?;
    central.stop().await
}
