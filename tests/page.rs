//! The live page in a real browser: Debian's chromium, headless, loads `/`
//! from a remora watching a lagging replica; the DOM shows every pool's
//! verdict, the chart with its lines and the changes listed, and a
//! screenshot is kept under `target/`.

mod common;

use std::path::Path;

use anyhow::{Context, Result, ensure};
use common::{chromium, drained_replica};
use remora_lab::Pair;

#[tokio::test]
#[ignore = "needs MariaDB and chromium: `make test` installs it and runs this"]
async fn the_page_shows_verdicts_the_chart_and_the_changes_in_a_real_browser() -> Result<()> {
    let pair = Pair::start().await?;
    let (remora, _writes) = drained_replica(&pair).await?;

    let (code, html) = remora.get("/").await?;
    assert_eq!(code, 200);
    assert!(html.len() < 300 * 1024, "{} bytes", html.len());
    ensure!(
        !html.contains("<script src") && !html.contains("<link"),
        "no external asset"
    );

    let url = format!("http://{}/", remora.http);
    let dom = chromium(&["--dump-dom"], &url)?;
    for wanted in [
        "id=\"verdicts\"",
        "data-pool=\"default\"",
        "data-pool=\"main\"",
        "DRAIN",
        "id=\"chart\"",
        "class=\"lag\"",
        "class=\"threshold\"",
        "class=\"weight\"",
        "id=\"events\"",
        "class=\"event\"",
        "Maintenance off",
        "falling behind",
    ] {
        ensure!(
            dom.contains(wanted),
            "{wanted} missing from the DOM:\n{dom}"
        );
    }
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/remora-page.png");
    chromium(
        &[
            "--window-size=1100,1000",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    )?;
    let png = std::fs::read(&shot).context("the screenshot")?;
    ensure!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    Ok(())
}
