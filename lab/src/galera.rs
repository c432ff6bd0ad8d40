//! A real single-node MariaDB Galera cluster (Debian's galera-4), bootstrapped
//! on free loopback ports.

use std::path::Path;

use anyhow::{Context, Result};

use crate::Server;
use crate::process::Lifetime;

/// Where Debian's galera-4 installs the provider.
pub const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";

#[derive(Debug)]
pub struct GaleraNode {
    pub server: Server,
    _scratch: tempfile::TempDir,
}

impl GaleraNode {
    /// Bootstraps a new one-node cluster; killed and removed on drop.
    pub async fn start() -> Result<GaleraNode> {
        if !Path::new(PROVIDER).exists() {
            anyhow::bail!("{PROVIDER} missing: install Debian's galera-4 (make deps)");
        }
        let scratch = tempfile::Builder::new()
            .prefix("remora-lab-galera-")
            .tempdir()
            .context("creating a temporary directory")?;
        let (group, ist) = (crate::free_port()?, crate::free_port()?);
        let args = vec![
            "--wsrep-on=ON".to_owned(),
            format!("--wsrep-provider={PROVIDER}"),
            "--wsrep-cluster-address=gcomm://".to_owned(),
            "--wsrep-new-cluster".to_owned(),
            "--wsrep-cluster-name=remora-lab".to_owned(),
            format!("--wsrep-node-address=127.0.0.1:{group}"),
            format!(
                "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{group};ist.recv_addr=127.0.0.1:{ist}"
            ),
            "--wsrep-sst-method=rsync".to_owned(),
            "--innodb-autoinc-lock-mode=2".to_owned(),
        ];
        let server = Server::start_with(
            "galera",
            11,
            &scratch.path().join("galera"),
            crate::free_port()?,
            Lifetime::Tied,
            &args,
        )
        .await?;
        Ok(GaleraNode {
            server,
            _scratch: scratch,
        })
    }
}
