//! HTTP on `http.listen`, all answered from the same snapshot as the agent:
//!
//! - `GET /`: a live page for a person: verdicts, a chart, the last changes;
//! - `GET /status`: the verdict and everything behind it, as JSON;
//! - `GET /health[?pool=NAME]`: 200 when up with weight > 0, 404 when drained
//!   or in maintenance (for HAProxy's `http-check disable-on-404`), 503 when
//!   down; the body is the agent line;
//! - `GET /metrics`: Prometheus text exposition 0.0.4;
//! - `GET /events`: verdict changes, newest first, and `GET /history`
//!   (`?format=json|csv`): every poll kept (`history.keep`);
//! - `POST /maintenance` (body: `drain|maint [reason]`) and
//!   `DELETE /maintenance`: the operator's switch, from loopback only.
//!
//! Every connection is bounded: the request head must arrive within
//! [`HEADER_DEADLINE`] and fit in [`MAX_HEAD`] bytes (else 431), the body is
//! at most [`maintenance::MAX_TEXT`] bytes, keep-alive is off, no connection
//! lives longer than [`CONNECTION_DEADLINE`], and beyond [`MAX_CONNECTIONS`]
//! open at once a new one closes the oldest (see [`crate::connections`]).

mod history;
mod metrics;
pub mod page;
mod status;

pub use metrics::render as metrics;
pub use status::{Audience, Status, rfc3339};

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, HeaderValue, ORIGIN, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use log::{debug, info};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::answer::{Answer, Reported};
use crate::connections::Connections;
use crate::maintenance::{self, Maintenance, Source};
use crate::poller::Snapshot;

const HEADER_DEADLINE: Duration = Duration::from_secs(2);
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Largest request head read (hyper's floor is 8 KiB).
const MAX_HEAD: usize = 16 * 1024;
/// HTTP connections open at once; scrapers and health checks need a handful.
const MAX_CONNECTIONS: usize = 256;

/// The HTTP maintenance switch, shared with the poller.
pub type Switch = Arc<watch::Sender<Option<Maintenance>>>;

/// Serves HTTP on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    switch: Switch,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let connections = Connections::new("http");
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    debug!("http: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let slot = connections
            .admit(MAX_CONNECTIONS, "the HTTP connection cap")
            .make_room()
            .await;
        let snapshots = snapshots.clone();
        let switch = Arc::clone(&switch);
        let service = service_fn(move |request: Request<Incoming>| {
            let snapshots = snapshots.clone();
            let switch = Arc::clone(&switch);
            async move { Ok::<_, Infallible>(route(request, peer, &snapshots, &switch).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_DEADLINE)
            .max_buf_size(MAX_HEAD)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            tokio::select! {
                ended = timeout(CONNECTION_DEADLINE, connection) => match ended {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => debug!("http: connection ended: {err}"),
                    Err(_) => debug!("http: connection cut after {CONNECTION_DEADLINE:?}"),
                },
                _ = slot.closed() => debug!("http: connection from {peer} closed to make room"),
            }
        });
    }
    drop(listener);
    if timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        debug!("http: connections still open at shutdown");
    }
}

async fn route(
    request: Request<Incoming>,
    peer: SocketAddr,
    snapshots: &watch::Receiver<Arc<Snapshot>>,
    switch: &Switch,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let read_only = matches!(method, Method::GET | Method::HEAD);
    match path.as_str() {
        "/" if read_only => {
            let snapshot = Arc::clone(&snapshots.borrow());
            reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page::render(&snapshot, Instant::now()),
            )
        }
        "/" | "/status" | "/health" | "/metrics" | "/events" | "/history" if !read_only => {
            not_allowed("GET, HEAD")
        }
        "/events" | "/history" => {
            let snapshot = Arc::clone(&snapshots.borrow());
            kept(
                &path,
                query_param(request.uri().query(), "format"),
                &snapshot,
            )
        }
        "/maintenance" => match method {
            Method::POST | Method::DELETE => {
                let token_file = snapshots.borrow().admin_token_file.clone();
                match refusal(&request, peer, token_file).await {
                    None => maintenance(request, peer, switch).await,
                    Some(refused) => refused,
                }
            }
            Method::GET | Method::HEAD => {
                let snapshot = Arc::clone(&snapshots.borrow());
                let text = match &snapshot.maintenance {
                    Some(m) => m.answer().line().to_owned(),
                    None => "off\n".to_owned(),
                };
                reply(StatusCode::OK, "text/plain", text)
            }
            _ => not_allowed("GET, HEAD, POST, DELETE"),
        },
        "/status" | "/health" | "/metrics" => {
            let snapshot = Arc::clone(&snapshots.borrow());
            let now = Instant::now();
            match path.as_str() {
                "/status" => {
                    let status = Status::of(&snapshot, now, Audience::of(peer));
                    let mut body = serde_json::to_string_pretty(&status)
                        .expect("the status document always serializes");
                    body.push('\n');
                    reply(StatusCode::OK, "application/json", body)
                }
                "/health" => {
                    let lookup = snapshot.lookup(query_param(request.uri().query(), "pool"));
                    let answer = snapshot.answer_to(now, lookup);
                    reply(health_code(&answer), "text/plain", answer.line().to_owned())
                }
                _ => reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    metrics::render(&snapshot, now),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// `/events`, and `/history` as JSON or CSV.
fn kept(path: &str, format: Option<&str>, snapshot: &Snapshot) -> Response<Full<Bytes>> {
    let kept = &snapshot.history;
    match (path, format) {
        ("/events", _) => reply(StatusCode::OK, "application/json", history::events(kept)),
        ("/history", None | Some("json")) => {
            reply(StatusCode::OK, "application/json", history::json(kept))
        }
        ("/history", Some("csv")) => reply(StatusCode::OK, "text/csv", history::csv(kept)),
        _ => reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "format is json or csv\n".into(),
        ),
    }
}

/// Longest the switch waits to read `http.admin_token_file`.
const TOKEN_READ_LIMIT: Duration = Duration::from_secs(1);

/// Whether `request` may flip the maintenance switch: never from a browser
/// (an `Origin` header: a page's script, which needs no preflight for a
/// text/plain POST), only from loopback, and with the admin token when one
/// is configured. `None` when it may; the refusal otherwise.
async fn refusal(
    request: &Request<Incoming>,
    peer: SocketAddr,
    token_file: Option<std::path::PathBuf>,
) -> Option<Response<Full<Bytes>>> {
    let refuse = |code, text: &str| Some(reply(code, "text/plain", format!("{text}\n")));
    if request.headers().contains_key(ORIGIN) {
        info!("maintenance switch refused to {peer}: a browser request (Origin header)");
        return refuse(
            StatusCode::FORBIDDEN,
            "maintenance cannot be switched from a browser page",
        );
    }
    if !is_loopback(peer.ip()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "maintenance can be switched from loopback only",
        );
    }
    let path = token_file?;
    let Some(presented) = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        let mut response = reply(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "maintenance needs Authorization: Bearer <token> (http.admin_token_file)\n".into(),
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Some(response);
    };
    // Read again on every switch: a rotated file applies at once. Warned
    // about at start if every user may read it; not per request.
    let read = crate::files::read_within(TOKEN_READ_LIMIT, move || {
        crate::config::read_secret("http.admin_token_file", &path)
    })
    .await;
    let token = match read {
        Some(Ok(token)) => token,
        failed => {
            let why = match failed {
                Some(Err(err)) => err.to_string(),
                _ => format!("http.admin_token_file: not read within {TOKEN_READ_LIMIT:?}"),
            };
            log::error!("maintenance switch refused: {why}");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the admin token cannot be read",
            );
        }
    };
    if !token.matches(presented.trim()) {
        info!("maintenance switch refused to {peer}: wrong admin token");
        return refuse(StatusCode::FORBIDDEN, "wrong admin token");
    }
    None
}

/// Turns the HTTP maintenance switch on (POST) or off (DELETE).
async fn maintenance(
    request: Request<Incoming>,
    peer: SocketAddr,
    switch: &Switch,
) -> Response<Full<Bytes>> {
    if request.method() == Method::DELETE {
        switch.send_replace(None);
        info!("maintenance switched off by {peer}");
        return reply(StatusCode::OK, "text/plain", "off\n".into());
    }
    let body = match Limited::new(request.into_body(), maintenance::MAX_TEXT)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                format!("the body is limited to {} bytes\n", maintenance::MAX_TEXT),
            );
        }
    };
    let text = String::from_utf8_lossy(&body);
    let switched = Maintenance::parse(&text, Source::Http);
    let answer = switched.answer();
    info!("maintenance switched on by {peer}: {}", answer.text());
    switch.send_replace(Some(switched));
    reply(StatusCode::OK, "text/plain", answer.line().to_owned())
}

/// `/health`: 200 when up with weight, 404 when drained or in maintenance
/// (for `http-check disable-on-404`), 503 when down.
fn health_code(answer: &Answer) -> StatusCode {
    match answer.reported {
        Reported::Up if answer.weight > 0 => StatusCode::OK,
        Reported::Up | Reported::Drain | Reported::Maint => StatusCode::NOT_FOUND,
        Reported::Down => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = reply(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain",
        "method not allowed\n".into(),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// The value of `key` in a query string (no percent-decoding: pool names are
/// plain ASCII).
fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

fn reply(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback("127.0.0.1".parse().expect("ip")));
        assert!(is_loopback("127.8.9.10".parse().expect("ip")));
        assert!(is_loopback("::1".parse().expect("ip")));
        assert!(is_loopback("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!is_loopback("10.0.0.1".parse().expect("ip")));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().expect("ip")));
    }
}
