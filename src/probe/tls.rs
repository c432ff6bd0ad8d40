//! TLS to the server: the driver's options for each `mysql.tls.mode`, and
//! the plaintext fallback of `preferred`. The driver runs on OpenSSL
//! (native-tls): `verify_ca` checks the chain and no name, as the MySQL
//! client does, so a certificate that names nothing at all (the ones MySQL
//! makes for itself at `--initialize`) is verified too. The driver's rustls
//! path could not skip the name: it matched rustls's error by a text that
//! rustls no longer writes (mysql_async #404).

use log::warn;
use mysql_async::{Conn, Pool, SslOpts};
use tokio::time::timeout;

use super::error::RESOLVE_FAILED;
use super::{PollError, Probe, TlsState};
use crate::config::{TlsConfig, TlsMode};

/// The driver's TLS options for `tls`, like the MySQL client's `--ssl-mode`:
/// `preferred` and `required` encrypt without checking the certificate,
/// `verify_ca` checks it was signed by `ca_file`, `verify_identity` also
/// that it names the host.
pub(super) fn ssl_opts(tls: &TlsConfig) -> Option<SslOpts> {
    let checked = SslOpts::default()
        .with_root_certs(
            tls.ca_file
                .iter()
                .map(|path| ca_bundle(path).into())
                .collect(),
        )
        .with_disable_built_in_roots(tls.ca_file.is_some());
    match tls.mode {
        TlsMode::Disabled => None,
        TlsMode::Preferred | TlsMode::Required => Some(
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        TlsMode::VerifyCa => Some(checked.with_danger_skip_domain_validation(true)),
        TlsMode::VerifyIdentity => Some(checked),
    }
}

/// The CA bundle's bytes, read by remora's bounded reader (the driver would
/// open the path itself at every connection, and wait on a FIFO forever).
/// One that cannot be read now trusts nothing: the connection fails as
/// `mysql tls failed` rather than trusting the system roots.
fn ca_bundle(path: &std::path::Path) -> Vec<u8> {
    match crate::files::read_regular(path, crate::config::MAX_CA_BYTES) {
        Ok((bytes, false)) => bytes,
        Ok((_, true)) => {
            warn!(
                "mysql.tls.ca_file {}: too large; trusting nothing",
                path.display()
            );
            Vec::new()
        }
        Err(err) => {
            warn!(
                "mysql.tls.ca_file {}: {}; trusting nothing",
                path.display(),
                crate::files::phrase(&err)
            );
            Vec::new()
        }
    }
}

impl Probe {
    /// A connection within `connect_timeout`. With `tls.mode: preferred`, a
    /// server that offers no TLS is used in plaintext from then on.
    pub(super) async fn connect(&mut self) -> Result<Conn, PollError> {
        use mysql_async::{DriverError, Error};
        let handshake = self.tls.mode != TlsMode::Disabled;
        let retry = match self.get_conn().await? {
            Ok(conn) => return Ok(conn),
            Err(Error::Driver(DriverError::NoClientSslFlagFromServer))
                if self.tls.mode == TlsMode::Preferred =>
            {
                warn!(
                    "{} offers no TLS; connecting in plaintext, password included \
                     (mysql.tls.mode: preferred)",
                    self.target
                );
                self.tls_state = TlsState::PlaintextFallback;
                self.opts.clone()
            }
            Err(err) => {
                return Err(self.name_the_host(PollError::from_driver(err, None, handshake)));
            }
        };
        let old = std::mem::replace(&mut self.pool, Pool::new(retry));
        tokio::spawn(old.disconnect());
        self.get_conn()
            .await?
            .map_err(|err| PollError::from_driver(err, None, handshake))
    }

    /// Names the host in a failed name lookup.
    fn name_the_host(&self, error: PollError) -> PollError {
        match error {
            PollError::Unreachable(why) if why == RESOLVE_FAILED => {
                PollError::Unreachable(format!("{RESOLVE_FAILED} {}", self.host))
            }
            other => other,
        }
    }

    async fn get_conn(&self) -> Result<Result<Conn, mysql_async::Error>, PollError> {
        timeout(self.connect_timeout, self.pool.get_conn())
            .await
            .map_err(|_| PollError::ConnectTimeout(self.connect_timeout))
    }
}
