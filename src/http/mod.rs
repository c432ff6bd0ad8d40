//! HTTP on `http.listen`, all answered from the same snapshot as the agent:
//!
//! - `GET /`: a live page for a person: verdicts, a chart, the last changes;
//! - `GET /status`: the verdict and everything behind it, as JSON;
//! - `GET /health[?pool=NAME]`: 200 when up with weight > 0, 404 when drained
//!   or in maintenance (for HAProxy's `http-check disable-on-404`), 503 when
//!   down; the body is the agent line;
//! - `GET /metrics`: Prometheus text exposition 0.0.4;
//! - `GET /events`: verdict changes, newest first, and `GET /history`
//!   (`?format=json|csv`, `since=` RFC 3339 or seconds ago, `limit=N`):
//!   the polls kept (`history.keep`), streamed;
//! - `POST /maintenance` (body: `drain|maint [reason]`) and
//!   `DELETE /maintenance`: the operator's switch, from loopback only, kept
//!   in `maintenance.state_file` when one is set.
//!
//! HTTP runs on a thread of its own, below the poller's priority: no
//! render, however heavy, delays a poll. The heavy renders (`/`,
//! `/events`, `/history`, and a fleet's `/status` and `/metrics`, which
//! cover every target) run at most [`HEAVY_RENDERS`] at a time; beyond
//! that they are answered 503 with `Retry-After`.
//!
//! Every connection is bounded: the request head must arrive within
//! [`HEADER_DEADLINE`] and fit in [`MAX_HEAD`] bytes (else 431), the body is
//! at most [`maintenance::MAX_TEXT`] bytes, keep-alive is off, no connection
//! lives longer than [`CONNECTION_DEADLINE`], and beyond [`MAX_CONNECTIONS`]
//! open at once a new one closes the oldest (see [`crate::connections`]).

mod body;
mod clusters;
mod history;
mod html;
mod metrics;
pub mod page;
mod status;

pub use metrics::{render as metrics, render_fleet as fleet_metrics};
pub use status::{Audience, FleetStatus, Status};

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{
    ALLOW, AUTHORIZATION, CONTENT_TYPE, HeaderValue, ORIGIN, RETRY_AFTER as RETRY_AFTER_HEADER,
    WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use log::{debug, info};
use socket2::SockRef;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::answer::{Answer, Reported};
use crate::connections::Connections;
use crate::fleet::{Choice, Fleet, Watched};
use crate::history::Selection;
use crate::logs::Throttle;
use crate::maintenance::{self, Maintenance, Source};
use crate::snapshot::{Asked, Lookup, Snapshot};
use crate::threads::Priority;

pub use body::Body;
use body::Holding as _;

const HEADER_DEADLINE: Duration = Duration::from_secs(2);
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Largest request head read (hyper's floor is 8 KiB).
const MAX_HEAD: usize = 16 * 1024;
/// HTTP connections open at once; scrapers and health checks need a handful.
const MAX_CONNECTIONS: usize = 256;
/// Each connection's kernel send buffer (Linux doubles it): with
/// [`MAX_CONNECTIONS`] open, some 32 MiB at most, wherever the memory limit
/// counts socket buffers (a cgroup's does).
const SEND_BUFFER: usize = 64 * 1024;
/// Refused switch attempts logged per [`REFUSAL_WINDOW`]; the rest are
/// counted and the count logged once the window is over.
const REFUSALS_LOGGED: u32 = 5;
const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

/// Heavy renders (`/`, `/events`, `/history`) under way at once; more are
/// answered 503. Each holds its place until its body is sent or dropped.
pub const HEAVY_RENDERS: usize = 4;
/// What a 503 for a heavy render tells the client to wait, in seconds.
const RETRY_AFTER: &str = "1";

/// The HTTP maintenance switch, shared with the poller.
pub type Switch = Arc<watch::Sender<Option<Maintenance>>>;

/// What every request on one listener shares.
struct Shared {
    fleet: watch::Receiver<Arc<Fleet>>,
    heavy: Arc<Semaphore>,
    /// Refused switch attempts are logged at most this often.
    refusals: Throttle,
}

/// Runs [`serve`] on a thread of its own, at a lower priority than the
/// poller's.
pub fn spawn(
    listener: TcpListener,
    fleet: watch::Receiver<Arc<Fleet>>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    crate::threads::serve_on_own_thread("http", Priority::Background, listener, move |listener| {
        serve(listener, fleet, shutdown)
    })
}

/// Serves HTTP on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    fleet: watch::Receiver<Arc<Fleet>>,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let connections = Connections::new("http");
    let shared = Arc::new(Shared {
        fleet,
        heavy: Arc::new(Semaphore::new(HEAVY_RENDERS)),
        refusals: Throttle::new(REFUSALS_LOGGED, REFUSAL_WINDOW),
    });
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
        // The kernel's send buffer grows to megabytes for a client that does
        // not read, and a container's memory limit counts it: keep it small.
        if let Err(err) = SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER) {
            debug!("http: cannot size the send buffer: {err}");
        }
        let slot = connections
            .admit(MAX_CONNECTIONS, "the HTTP connection cap")
            .make_room()
            .await;
        let shared = Arc::clone(&shared);
        let service = service_fn(move |request: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(route(request, peer, &shared).await) }
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

async fn route(request: Request<Incoming>, peer: SocketAddr, shared: &Shared) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let read_only = matches!(method, Method::GET | Method::HEAD);
    if !read_only
        && matches!(
            path.as_str(),
            "/" | "/status" | "/health" | "/metrics" | "/events" | "/history"
        )
    {
        return not_allowed("GET, HEAD");
    }
    let fleet = Arc::clone(&shared.fleet.borrow());
    let target = query_param(request.uri().query(), "target");
    match fleet.choose(target.as_deref()) {
        Choice::Target(watched) => {
            let watched = watched.clone();
            about_one(request, peer, shared, &path, &watched).await
        }
        Choice::NoneNamed => about_all(&path, &fleet, peer, shared),
        Choice::Unknown => {
            let name: String = target.unwrap_or_default().chars().take(64).collect();
            reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("unknown target {name:?}\n"),
            )
        }
    }
}

/// A request about one server: the one a sidecar watches, or `?target=`.
async fn about_one(
    request: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
    path: &str,
    watched: &Watched,
) -> Response<Body> {
    let snapshot = Arc::clone(&watched.snapshots.borrow());
    match path {
        "/" | "/events" | "/history" => {
            let Ok(place) = Arc::clone(&shared.heavy).try_acquire_owned() else {
                return busy();
            };
            heavy(path, request.uri().query(), &snapshot, watched).holding(place)
        }
        "/maintenance" => match request.method().clone() {
            Method::POST | Method::DELETE => {
                let token_file = snapshot.settings.admin_token_file.clone();
                match refusal(&request, peer, token_file, &shared.refusals).await {
                    None => maintenance(request, peer, &watched.switch, &snapshot).await,
                    Some(refused) => refused,
                }
            }
            Method::GET | Method::HEAD => {
                let text = match &snapshot.maintenance {
                    Some(m) => Answer::maintenance(m).line().to_owned(),
                    None => "off\n".to_owned(),
                };
                reply(StatusCode::OK, "text/plain", text)
            }
            _ => not_allowed("GET, HEAD, POST, DELETE"),
        },
        "/status" => {
            let audience = Audience::of(peer, snapshot.settings.error_text);
            let status = Status::of(&snapshot, Instant::now(), audience);
            json(&status)
        }
        "/health" => {
            // Without `?pool=` an HTTP check asks for the default policy on
            // purpose: unlike a lost agent-send, nothing was meant and lost.
            let pool = query_param(request.uri().query(), "pool");
            let lookup = match &pool {
                Some(pool) => snapshot.lookup(Asked::Pool(pool)),
                None => Lookup::Found(&snapshot.default),
            };
            let answer = snapshot.answer_to(Instant::now(), lookup);
            reply(health_code(&answer), "text/plain", answer.line().to_owned())
        }
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics::render(&snapshot, Instant::now()),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// A request to a fleet that names no target: `/status`, `/metrics` and
/// `/` cover every target, each a heavy render (its cost grows with the
/// fleet); the rest need one.
fn about_all(path: &str, fleet: &Fleet, peer: SocketAddr, shared: &Shared) -> Response<Body> {
    match path {
        "/" | "/status" | "/metrics" => {}
        "/health" | "/events" | "/history" | "/maintenance" => {
            return bad_request(&format!(
                "remora watches {} targets here: name one ({path}?target=NAME)",
                fleet.targets.len()
            ));
        }
        _ => return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
    let Ok(place) = Arc::clone(&shared.heavy).try_acquire_owned() else {
        return busy();
    };
    let now = Instant::now();
    let rendered = match path {
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page::overview(fleet, now),
        ),
        "/status" => json(&FleetStatus::of(
            fleet,
            now,
            Audience::of(peer, fleet.settings.error_text),
        )),
        _ => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics::render_fleet(fleet, now),
        ),
    };
    rendered.holding(place)
}

fn json(document: &impl serde::Serialize) -> Response<Body> {
    let mut body =
        serde_json::to_string_pretty(document).expect("the status document always serializes");
    body.push('\n');
    reply(StatusCode::OK, "application/json", body)
}

/// `/`, `/events`, and `/history` as JSON or CSV, streamed.
fn heavy(
    path: &str,
    query: Option<&str>,
    snapshot: &Snapshot,
    watched: &Watched,
) -> Response<Body> {
    let kept = &snapshot.history;
    match path {
        "/" => {
            let target = query_param(query, "target");
            let page = page::render(snapshot, Instant::now(), &watched.server, target.as_deref());
            reply(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        "/events" => reply(StatusCode::OK, "application/json", history::events(kept)),
        _ => {
            let (format, content_type) = match query_param(query, "format").as_deref() {
                None | Some("json") => (history::Format::Json, "application/json"),
                Some("csv") => (history::Format::Csv, "text/csv"),
                Some(_) => return bad_request("format is json or csv"),
            };
            let selection = match selection(query, SystemTime::now()) {
                Ok(selection) => selection,
                Err(why) => return bad_request(&why),
            };
            let samples = history::Samples::new(Arc::clone(kept), format, selection);
            let mut response = Response::new(Body::streamed(samples));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
    }
}

/// `since=` and `limit=` of a `/history` request, or what is wrong with them.
fn selection(query: Option<&str>, now: SystemTime) -> Result<Selection, String> {
    let since_ms = match query_param(query, "since") {
        None => None,
        Some(text) => Some(since(&text, now).ok_or_else(|| {
            format!("since is an RFC 3339 time in UTC (2026-12-04T10:00:00Z) or seconds ago, got {text:?}")
        })?),
    };
    let limit = match query_param(query, "limit") {
        None => None,
        Some(text) => Some(
            text.parse::<usize>()
                .ok()
                .filter(|limit| *limit > 0)
                .ok_or_else(|| format!("limit is a number of samples, at least 1, got {text:?}"))?,
        ),
    };
    Ok(Selection { since_ms, limit })
}

/// Milliseconds since 1970 of `since=`: an RFC 3339 time, or seconds before `now`.
fn since(text: &str, now: SystemTime) -> Option<u64> {
    let at = match text.parse::<f64>() {
        Ok(ago) if ago.is_finite() && ago >= 0.0 => {
            let ago = Duration::try_from_secs_f64(ago).ok()?;
            now.checked_sub(ago).unwrap_or(UNIX_EPOCH)
        }
        Ok(_) => return None,
        Err(_) => humantime::parse_rfc3339_weak(text).ok()?,
    };
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    Some(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
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
    log: &Throttle,
) -> Option<Response<Body>> {
    let refuse = |code, text: &str| Some(reply(code, "text/plain", format!("{text}\n")));
    if request.headers().contains_key(ORIGIN) {
        log.info(|| {
            format!("maintenance switch refused to {peer}: a browser request (Origin header)")
        });
        return refuse(
            StatusCode::FORBIDDEN,
            "maintenance cannot be switched from a browser page",
        );
    }
    if !is_loopback(peer.ip()) {
        log.info(|| format!("maintenance switch refused to {peer}: not from loopback"));
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
    let read = crate::files::blocking_within(TOKEN_READ_LIMIT, move || {
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
        log.info(|| format!("maintenance switch refused to {peer}: wrong admin token"));
        return refuse(StatusCode::FORBIDDEN, "wrong admin token");
    }
    None
}

/// Turns the HTTP maintenance switch on (POST) or off (DELETE), and keeps
/// it in `maintenance.state_file`. A switch that cannot be kept still
/// applies now (the operator asked for it), and the reply says it will not
/// survive a restart.
async fn maintenance(
    request: Request<Incoming>,
    peer: SocketAddr,
    switch: &Switch,
    snapshot: &Snapshot,
) -> Response<Body> {
    let switched = if request.method() == Method::DELETE {
        None
    } else {
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
        Some(Maintenance::parse(
            &String::from_utf8_lossy(&body),
            Source::Http,
        ))
    };
    let unkept = match &snapshot.settings.state_file {
        Some(path) => keep_switch(path.clone(), switched.clone()).await.err(),
        None => None,
    };
    let mut text = match &switched {
        Some(on) => {
            info!(
                "maintenance switched on by {peer}: {}",
                crate::logs::escaped(Answer::maintenance(on).text())
            );
            Answer::maintenance(on).line().to_owned()
        }
        None => {
            info!("maintenance switched off by {peer}");
            "off\n".to_owned()
        }
    };
    switch.send_replace(switched);
    if let Some(why) = unkept {
        log::error!("maintenance switch not kept: {why}; it applies until remora restarts");
        text.push_str(&format!(
            "not kept ({why}): applies until remora restarts\n"
        ));
        return reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", text);
    }
    reply(StatusCode::OK, "text/plain", text)
}

/// Longest writing the state file may take.
const STATE_WRITE_LIMIT: Duration = Duration::from_secs(1);

/// Writes the switch to `maintenance.state_file`, off the async thread.
async fn keep_switch(
    path: std::path::PathBuf,
    switched: Option<Maintenance>,
) -> Result<(), String> {
    let shown = path.display().to_string();
    let writing = move || Maintenance::keep(&path, switched.as_ref());
    match crate::files::blocking_within(STATE_WRITE_LIMIT, writing).await {
        Some(Ok(())) => Ok(()),
        Some(Err(err)) => Err(format!(
            "maintenance.state_file {shown}: {}",
            crate::files::phrase(&err)
        )),
        None => Err(format!(
            "maintenance.state_file {shown}: not written within {STATE_WRITE_LIMIT:?}"
        )),
    }
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

/// 503 for a heavy render beyond [`HEAVY_RENDERS`].
fn busy() -> Response<Body> {
    let mut response = reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        format!(
            "busy: {HEAVY_RENDERS} heavy renders (/, /events, /history, a fleet's /status or /metrics) under way; retry\n"
        ),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER_HEADER, HeaderValue::from_static(RETRY_AFTER));
    response
}

fn bad_request(why: &str) -> Response<Body> {
    reply(StatusCode::BAD_REQUEST, "text/plain", format!("{why}\n"))
}

fn not_allowed(allow: &'static str) -> Response<Body> {
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

/// The value of `key` in a query string, percent-decoded (a time's `:`
/// arrives as `%3A` from some clients).
fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find_map(|(name, value)| (name == key).then_some(value))
}

fn reply(code: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Body::whole(body));
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
