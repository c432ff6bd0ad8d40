//! TLS to MySQL against a real MariaDB started with a certificate from a CA
//! this test generates (openssl). The user remora connects as REQUIRES SSL,
//! so an `up` proves the session was encrypted.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use common::remora_bin;
use remora_lab::server::{REMORA_GRANT, REMORA_PASSWORD, Server};
use remora_lab::{Lifetime, Remora, free_port};

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A self-signed CA named `name`: (`name.pem`, `name.key`) in `dir`.
fn ca(dir: &Path, name: &str) -> Result<PathBuf> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=remora test {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    )?;
    Ok(dir.join(format!("{name}.pem")))
}

/// A server certificate for DNS name `localhost` only, signed by CA `ca`:
/// (`server.pem`, `server.key`).
fn server_certificate(dir: &Path, ca: &str) -> Result<(PathBuf, PathBuf)> {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    )?;
    Ok((dir.join("server.pem"), dir.join("server.key")))
}

/// `remora --once` as `user` at `host:port` with `tls`; its agent line.
async fn once(user: &str, host: &str, port: u16, tls: &str) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("remora.yaml");
    std::fs::write(
        &config,
        format!(
            "mysql:\n  host: {host}\n  port: {port}\n  user: {user}\n  \
             password_env: REMORA_MYSQL_PASSWORD\n  connect_timeout: 3s\n  tls: {tls}\n"
        ),
    )?;
    let out = tokio::process::Command::new(remora_bin())
        .arg("--config")
        .arg(&config)
        .arg("--once")
        .env("REMORA_MYSQL_PASSWORD", REMORA_PASSWORD)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    remora_lab::record_output("tls", &format!("{stdout}{stderr}"));
    ensure!(
        !stdout.contains(REMORA_PASSWORD) && !stderr.contains(REMORA_PASSWORD),
        "password shown"
    );
    let line = stdout.lines().next().unwrap_or_default().to_owned();
    println!("tls {tls} as {user}@{host}: {line}");
    if line.starts_with("down") {
        println!("{stdout}");
    }
    Ok(line)
}

#[tokio::test]
#[ignore = "needs MariaDB and openssl: `make test` installs it and runs this"]
async fn tls_modes_against_mariadb_with_a_generated_ca() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs)?;
    let good_ca = ca(&certs, "ca")?;
    let other_ca = ca(&certs, "other-ca")?;
    let (cert, key) = server_certificate(&certs, "ca")?;

    let port = free_port()?;
    let server = Server::start_with(
        "tls",
        1,
        &dir.path().join("tls"),
        port,
        Lifetime::Tied,
        &[
            format!("--ssl-ca={}", good_ca.display()),
            format!("--ssl-cert={}", cert.display()),
            format!("--ssl-key={}", key.display()),
        ],
    )
    .await?;
    server
        .exec(&[
            &format!("CREATE USER remora_tls@'%' IDENTIFIED BY '{REMORA_PASSWORD}' REQUIRE SSL"),
            &format!("GRANT {REMORA_GRANT} ON *.* TO remora_tls@'%'"),
        ])
        .await?;
    let up = "up ready 100%";
    let good = good_ca.display();
    let other = other_ca.display();

    // The user requires TLS: without it, the server refuses the login.
    assert_eq!(
        once("remora_tls", "127.0.0.1", port, "{mode: disabled}").await?,
        "down #mysql auth failed (error 1045)"
    );
    // required encrypts without checking the certificate.
    assert_eq!(
        once("remora_tls", "127.0.0.1", port, "{mode: required}").await?,
        up
    );
    assert_eq!(
        once("remora_tls", "127.0.0.1", port, "{mode: preferred}").await?,
        up
    );
    // verify_ca: signed by our CA, whatever the name.
    let verify_ca = format!("{{mode: verify_ca, ca_file: {good}}}");
    assert_eq!(once("remora_tls", "127.0.0.1", port, &verify_ca).await?, up);
    let wrong_ca = format!("{{mode: verify_ca, ca_file: {other}}}");
    assert_eq!(
        once("remora_tls", "127.0.0.1", port, &wrong_ca).await?,
        "down #mysql tls failed"
    );
    // verify_identity: the certificate names localhost, not 127.0.0.1.
    let identity = format!("{{mode: verify_identity, ca_file: {good}}}");
    assert_eq!(
        once("remora_tls", "127.0.0.1", port, &identity).await?,
        "down #mysql tls failed"
    );
    assert_eq!(once("remora_tls", "localhost", port, &identity).await?, up);

    // A server without TLS: preferred falls back, required refuses.
    let plain_port = free_port()?;
    let _plain = Server::start(
        "plain",
        2,
        &dir.path().join("plain"),
        plain_port,
        Lifetime::Tied,
    )
    .await?;
    assert_eq!(
        once("remora", "127.0.0.1", plain_port, "{mode: preferred}").await?,
        up
    );
    assert_eq!(
        once("remora", "127.0.0.1", plain_port, "{mode: required}").await?,
        "down #mysql tls failed"
    );
    // The fallback is no secret: a warning, /status and /metrics say so.
    let remora = Remora::start(
        remora_bin(),
        &format!(
            "mysql:\n  port: {plain_port}\n  user: remora\n  password_env: REMORA_MYSQL_PASSWORD\n  \
             tls: {{mode: preferred}}\npoll: {{interval: 200ms}}\n"
        ),
    )
    .await?;
    assert_eq!(remora.reply().await?, up);
    assert_eq!(remora.status().await?["tls"], "plaintext fallback");
    let (_, metrics) = remora.get("/metrics").await?;
    assert!(
        metrics.contains("\nremora_mysql_tls_plaintext_fallback 1\n"),
        "{metrics}"
    );
    assert!(
        remora.log().contains("WARN") && remora.log().contains("plaintext"),
        "{}",
        remora.log()
    );
    Ok(())
}
