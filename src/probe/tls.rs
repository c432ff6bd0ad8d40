//! TLS to the server: the driver's options for each `mysql.tls.mode`, the
//! plaintext fallback of `preferred`, and the retry that checks the name a
//! certificate presents under `verify_ca`.

use log::warn;
use mysql_async::{Conn, Pool, SslOpts};
use tokio::time::timeout;

use super::error::RESOLVE_FAILED;
use super::{PollError, Probe, TlsState};
use crate::config::{TlsConfig, TlsMode};

/// The driver's TLS options for `tls`, like the MySQL client's `--ssl-mode`:
/// `preferred` and `required` encrypt without checking the certificate,
/// `verify_ca` checks it was signed by `ca_file`, `verify_identity` also
/// that it names the host. `server_name`: the name to check instead of the
/// host (see [`Probe::connect`]).
pub(super) fn ssl_opts(tls: &TlsConfig, server_name: Option<&str>) -> Option<SslOpts> {
    let mut checked = SslOpts::default()
        .with_root_certs(
            tls.ca_file
                .iter()
                .map(|path| ca_bundle(path).into())
                .collect(),
        )
        .with_disable_built_in_roots(tls.ca_file.is_some());
    if let Some(name) = server_name {
        checked = checked.with_danger_tls_hostname_override(Some(name.to_owned()));
    }
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

/// The first name a certificate presented, from rustls's message for a
/// certificate that does not name the host we connected to: `certificate not
/// valid for name "127.0.0.1"; certificate is only valid for
/// DnsName("db1") or ...`.
fn presented_name(message: &str) -> Option<&str> {
    let (_, names) = message.split_once("certificate is only valid for ")?;
    if let Some(rest) = names.strip_prefix("DnsName(\"") {
        return rest.split('"').next().filter(|name| !name.is_empty());
    }
    let rest = names.strip_prefix("IpAddress(")?;
    rest.split(')')
        .next()
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
}

impl Probe {
    /// A connection within `connect_timeout`.
    ///
    /// With `tls.mode: preferred`, a server that offers no TLS is used in
    /// plaintext from then on. With `verify_ca`, a certificate that does not
    /// name the host is tried again, once, checking the name it presents:
    /// the chain is still verified against `ca_file`, only the host name is
    /// not (the driver's own switch for that does not work with this rustls:
    /// blackbeam/mysql_async#404). A message in another shape fails closed.
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
            Err(err) => match PollError::from_driver(err, None, handshake) {
                PollError::Tls(message) if self.tls.mode == TlsMode::VerifyCa => {
                    let Some(name) = presented_name(&message) else {
                        return Err(PollError::Tls(message));
                    };
                    self.opts.clone().ssl_opts(ssl_opts(&self.tls, Some(name)))
                }
                error => return Err(self.name_the_host(error)),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_presented_name_is_read_from_rustls_messages() {
        let one = "invalid peer certificate: certificate not valid for name \"127.0.0.1\"; \
                   certificate is only valid for DnsName(\"localhost\")";
        assert_eq!(presented_name(one), Some("localhost"));
        let many = "certificate not valid for name \"10.0.0.9\"; certificate is only valid \
                    for IpAddress(10.0.0.1) or DnsName(\"db\")";
        assert_eq!(presented_name(many), Some("10.0.0.1"));
        for other in [
            "invalid peer certificate: UnknownIssuer",
            "certificate not valid for name \"x\"; certificate is not valid for any names",
            "certificate is only valid for DnsName(\"\")",
        ] {
            assert_eq!(presented_name(other), None, "{other}");
        }
    }
}
