//! HTTP on `http.listen`, all answered from the same snapshot as the agent:
//!
//! - `GET /status`: the verdict and everything behind it, as JSON;
//! - `GET /health[?pool=NAME]`: 200 when up with weight > 0, 404 when drained
//!   or in maintenance (for HAProxy's `http-check disable-on-404`), 503 when
//!   down; the body is the agent line;
//! - `GET /metrics`: Prometheus text exposition 0.0.4;
//! - `POST /maintenance` (body: `drain|maint [reason]`) and
//!   `DELETE /maintenance`: the operator's switch, from loopback only.
//!
//! Every connection is bounded: the request head must arrive within
//! [`HEADER_DEADLINE`] and fit in [`MAX_HEAD`] bytes (else 431), the body is
//! at most [`maintenance::MAX_TEXT`] bytes, keep-alive is off, no connection
//! lives longer than [`CONNECTION_DEADLINE`], and beyond [`MAX_CONNECTIONS`]
//! open at once a new one closes the oldest (see [`crate::connections`]).

use std::convert::Infallible;
use std::fmt::Write as _;
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
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::connections::Connections;
use crate::health::{Health, HeartbeatState};
use crate::maintenance::{self, Maintenance, Source};
use crate::poller::{Lookup, PoolVerdict, Reported, Snapshot};
use crate::probe::{ErrorKind, ThreadState};

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
        "/status" | "/health" | "/metrics" if !read_only => not_allowed("GET, HEAD"),
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
                    Some(m) => format!("{}\n", m.agent_line().trim_end()),
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
                    let audience = Audience::of(peer);
                    let mut body =
                        serde_json::to_string_pretty(&status_json(&snapshot, now, audience))
                            .expect("a JSON value always serializes");
                    body.push('\n');
                    reply(StatusCode::OK, "application/json", body)
                }
                "/health" => {
                    let lookup = snapshot.lookup(query_param(request.uri().query(), "pool"));
                    let code = match snapshot.reported(now, lookup.verdict()) {
                        Reported::Up if snapshot.state(now, lookup.verdict()).weight() > 0 => {
                            StatusCode::OK
                        }
                        Reported::Up | Reported::Drain | Reported::Maint => StatusCode::NOT_FOUND,
                        Reported::Down => StatusCode::SERVICE_UNAVAILABLE,
                    };
                    reply(
                        code,
                        "text/plain",
                        snapshot.agent_line(now, lookup).into_owned(),
                    )
                }
                _ => reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    metrics(&snapshot, now),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
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
    let line = switched.agent_line();
    info!("maintenance switched on by {peer}: {}", line.trim_end());
    switch.send_replace(Some(switched));
    reply(StatusCode::OK, "text/plain", line)
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

/// Who reads `/status`. Server error texts (`Last_SQL_Error`, a driver's
/// message) can quote row data: only a reader on this host sees them whole;
/// anyone else gets the errno and the agent's short phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Loopback,
    Remote,
}

impl Audience {
    pub fn of(peer: SocketAddr) -> Audience {
        if is_loopback(peer.ip()) {
            Audience::Loopback
        } else {
            Audience::Remote
        }
    }

    /// A server's error text as this reader may see it.
    fn server_text(self, text: &str) -> Option<String> {
        match self {
            Audience::Loopback => Some(text.chars().take(512).collect()),
            Audience::Remote => None,
        }
    }
}

/// A wall-clock time as RFC 3339, or `None` for one RFC 3339 cannot write
/// (before 1970 or after 9999, a clock set wrong): never a panic.
pub fn rfc3339(time: std::time::SystemTime) -> Option<String> {
    /// 10000-01-01T00:00:00Z.
    const END: Duration = Duration::from_secs(253_402_300_800);
    let since_epoch = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    (since_epoch < END).then(|| humantime::format_rfc3339_millis(time).to_string())
}

/// Milliseconds, to the microsecond.
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// Seconds, to the millisecond.
fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e3).round() / 1e3
}

/// The `/status` document. Field names are remora's, the same whatever the
/// server calls its columns. The top level is the default policy's verdict.
pub fn status_json(snapshot: &Snapshot, now: Instant, audience: Audience) -> Value {
    let observation = &snapshot.observation;
    let assessment = &snapshot.assessment;
    let (server_version, dialect, read_only, replication) = match &observation.result {
        Ok(status) => (
            Some(status.version.as_str()),
            Some(status.dialect.as_str()),
            Some(status.read_only),
            status
                .channels
                .iter()
                .map(|channel| {
                    let error = |err: &Option<crate::probe::ThreadError>| {
                        err.as_ref().map(|err| {
                            json!({
                                "errno": err.errno,
                                "message": audience.server_text(&err.message),
                            })
                        })
                    };
                    json!({
                        "channel": channel.name,
                        "source_host": channel.source_host,
                        "io_thread": channel.io_thread.as_str(),
                        "sql_thread": channel.sql_thread.as_str(),
                        "seconds_behind": channel.seconds_behind,
                        "sql_delay": channel.sql_delay,
                        "last_io_error": error(&channel.io_error),
                        "last_sql_error": error(&channel.sql_error),
                    })
                })
                .collect::<Vec<_>>(),
        ),
        Err(_) => (None, None, None, Vec::new()),
    };
    let lag = match &assessment.health {
        // Not a replica: nothing to lag behind.
        Health::Primary { .. } => json!({
            "seconds": 0.0,
            "estimated": false,
            "estimated_because": null,
            "channel": null,
            "source": "primary",
            "fallback": null,
        }),
        health => health.lag().map_or(Value::Null, |lag| {
            json!({
                "seconds": seconds(lag.value),
                "estimated": lag.is_estimated(),
                "estimated_because": lag.estimated,
                "channel": lag.channel,
                "source": lag.origin.as_str(),
                "fallback": lag.fallback,
            })
        }),
    };
    let heartbeat = assessment.heartbeat.as_ref().map(|heartbeat| {
        json!({
            "seconds": heartbeat.age.map(seconds),
            "ts": heartbeat.ts,
            "state": heartbeat.state.describe(),
            "decided_lag": heartbeat.state == HeartbeatState::Used,
            "primary_seconds": heartbeat.primary_age.map(seconds),
        })
    });
    let galera = assessment.galera.as_ref().map(|galera| {
        json!({
            "ready": galera.ready,
            "cluster_status": galera.cluster_status,
            "local_state": galera.local_state,
            "local_state_comment": galera.local_state_comment,
            "recv_queue": galera.recv_queue,
            "desync": galera.desync,
            "reject_queries": galera.reject_queries,
        })
    });
    let load = assessment.load.map(|load| {
        json!({
            "threads_running": load.threads_running,
            "threads_connected": load.threads_connected,
            "max_connections": load.max_connections,
        })
    });
    let maintenance = snapshot.maintenance.as_ref().map(|m| {
        json!({
            "mode": m.mode.as_str(),
            "reason": m.reason,
            "source": m.source.to_string(),
        })
    });
    let default = snapshot.default_pool();
    let measured = snapshot.state(now, default);
    let mut status = pool_json(snapshot, default, now);
    let facts = json!({
        "maintenance": maintenance,
        "measured": {
            "verdict": measured.as_str(),
            "weight": measured.weight(),
            "reason": default.decision.verdict.reason,
        },
        "tls": observation.tls.as_str(),
        "role": assessment.health.role(),
        "read_only": read_only,
        "server_version": server_version,
        "dialect": dialect,
        "lag": lag,
        "heartbeat": heartbeat,
        "replication": replication,
        "galera": galera,
        "load": load,
        "last_poll": {
            "at": rfc3339(observation.wall),
            "ok": observation.result.is_ok(),
            "duration_ms": millis(observation.duration),
            "error": observation.result.as_ref().err().map(|err| json!({
                "kind": err.kind().as_str(),
                "message": match audience {
                    Audience::Loopback => err.to_string(),
                    Audience::Remote => err.phrase(),
                },
            })),
        },
        "last_success": snapshot.last_success.map(|success| json!({
            "at": rfc3339(success.wall),
            "age_seconds": seconds(now.saturating_duration_since(success.at)),
            "duration_ms": millis(success.duration),
        })),
        "polls": {
            "total": snapshot.polls.polls,
            "errors": snapshot
                .polls
                .errors
                .iter()
                .map(|(kind, count)| (kind.as_str().to_owned(), Value::from(*count)))
                .collect::<serde_json::Map<String, Value>>(),
        },
        "stale_after_seconds": snapshot.stale_after.as_secs_f64(),
    });
    let map = status.as_object_mut().expect("pool_json builds an object");
    if let Value::Object(facts) = facts {
        map.extend(facts);
    }
    if snapshot.pools.len() > 1 {
        let pools: serde_json::Map<String, Value> = snapshot.pools[1..]
            .iter()
            .map(|pool| {
                let mut one = pool_json(snapshot, pool, now);
                one.as_object_mut()
                    .expect("pool_json builds an object")
                    .insert("role".into(), pool.role.as_str().into());
                (pool.name.clone(), one)
            })
            .collect();
        map.insert("pools".into(), Value::Object(pools));
    }
    status
}

/// One policy's answer as `/status` shows it: what the agent says now,
/// maintenance and staleness included.
fn pool_json(snapshot: &Snapshot, pool: &PoolVerdict, now: Instant) -> Value {
    let reported = snapshot.reported(now, pool);
    let line = snapshot.agent_line(now, Lookup::Found(pool));
    let line = line.trim_end();
    let reason = line.split_once(" #").map_or("", |(_, reason)| reason);
    let weight = match reported {
        Reported::Up => snapshot.state(now, pool).weight(),
        _ => 0,
    };
    let recovering = pool.decision.recovering.map(|recovery| {
        json!({
            "polls": recovery.polls,
            "needed": recovery.needed,
            "towards": recovery.towards.as_str(),
            "towards_weight": recovery.towards.weight(),
        })
    });
    json!({
        "verdict": reported.as_str(),
        "weight": weight,
        "reason": reason,
        "agent_reply": line,
        "stale": snapshot.is_stale(now, pool),
        "recovering": recovering,
        "warming_up": pool.decision.warming.map(|warming| json!({
            "seconds": warming.elapsed.as_secs(),
            "of_seconds": warming.length.as_secs(),
            "ceiling": warming.ceiling,
        })),
    })
}

/// Prometheus text exposition format 0.0.4: `# HELP`, `# TYPE`, then
/// samples; label values escaped.
#[derive(Debug, Default)]
struct Exposition(String);

impl Exposition {
    fn family<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
    ) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.0.push_str(name);
            if !labels.is_empty() {
                self.0.push('{');
                for (i, (label, value)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.0.push(',');
                    }
                    let _ = write!(self.0, "{label}=\"{}\"", escape_label(value));
                }
                self.0.push('}');
            }
            let _ = writeln!(self.0, " {}", format_value(value));
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help, [(Vec::new(), value)]);
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        value.to_string()
    }
}

fn bool_value(yes: bool) -> f64 {
    if yes { 1.0 } else { 0.0 }
}

/// The `/metrics` page. Names are remora's, whatever the server calls its columns.
pub fn metrics(snapshot: &Snapshot, now: Instant) -> String {
    let mut out = Exposition::default();
    let assessment = &snapshot.assessment;
    out.family(
        "remora_build_info",
        "gauge",
        "remora's version.",
        [(vec![("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    );
    out.gauge(
        "remora_mysql_up",
        "1 when the last poll reached MySQL and read its status.",
        bool_value(snapshot.observation.result.is_ok()),
    );
    out.gauge(
        "remora_mysql_tls_plaintext_fallback",
        "1 when mysql.tls.mode preferred fell back to plaintext: the password crosses unencrypted.",
        bool_value(snapshot.observation.tls == crate::probe::TlsState::PlaintextFallback),
    );
    out.gauge(
        "remora_poll_duration_seconds",
        "How long the last poll took.",
        snapshot.observation.duration.as_secs_f64(),
    );
    out.family(
        "remora_polls_total",
        "counter",
        "Polls of MySQL since start.",
        [(Vec::new(), snapshot.polls.polls as f64)],
    );
    let errors: Vec<(&str, u64)> = ErrorKind::ALL
        .iter()
        .map(|kind| {
            let count = snapshot.polls.errors.get(kind).copied().unwrap_or(0);
            (kind.as_str(), count)
        })
        .collect();
    out.family(
        "remora_poll_errors_total",
        "counter",
        "Failed polls since start, by kind.",
        errors
            .iter()
            .map(|(kind, count)| (vec![("kind", *kind)], *count as f64)),
    );
    if let Some(success) = snapshot.last_success {
        let since_epoch = success
            .wall
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        out.gauge(
            "remora_last_success_timestamp_seconds",
            "Wall-clock time of the last successful poll.",
            since_epoch.as_secs_f64(),
        );
    }

    let lag = match &assessment.health {
        Health::Primary { .. } => Some((0.0, "primary", false)),
        health => health.lag().map(|lag| {
            (
                lag.value.as_secs_f64(),
                lag.origin.as_str(),
                lag.is_estimated(),
            )
        }),
    };
    if let Some((value, source, estimated)) = lag {
        let estimated = if estimated { "true" } else { "false" };
        out.family(
            "remora_lag_seconds",
            "gauge",
            "The lag that decides the verdict, by where it came from.",
            [(vec![("source", source), ("estimated", estimated)], value)],
        );
    }
    if let Some(age) = assessment.heartbeat.as_ref().and_then(|h| h.age) {
        out.gauge(
            "remora_heartbeat_age_seconds",
            "Age of the newest heartbeat row on the watched server.",
            age.as_secs_f64(),
        );
    }

    if let Ok(status) = &snapshot.observation.result {
        out.family(
            "remora_replica_seconds_behind",
            "gauge",
            "Seconds_Behind_Master / Seconds_Behind_Source per channel (absent when NULL).",
            status.channels.iter().filter_map(|c| {
                Some((vec![("channel", c.name.as_str())], c.seconds_behind? as f64))
            }),
        );
        for (name, help, thread) in [
            (
                "remora_replica_io_thread",
                "IO (receiver) thread state per channel, one-hot.",
                (|c: &crate::probe::ChannelStatus| c.io_thread) as fn(&_) -> ThreadState,
            ),
            (
                "remora_replica_sql_thread",
                "SQL (applier) thread state per channel, one-hot.",
                |c: &crate::probe::ChannelStatus| c.sql_thread,
            ),
        ] {
            out.family(
                name,
                "gauge",
                help,
                status.channels.iter().flat_map(|c| {
                    [ThreadState::Yes, ThreadState::No, ThreadState::Connecting].map(|state| {
                        (
                            vec![("channel", c.name.as_str()), ("state", state.as_str())],
                            bool_value(thread(c) == state),
                        )
                    })
                }),
            );
        }
    }
    if let Some(galera) = &assessment.galera {
        out.gauge(
            "remora_galera_local_state",
            "wsrep_local_state (4 = synced).",
            galera.local_state as f64,
        );
        out.gauge(
            "remora_galera_recv_queue",
            "wsrep_local_recv_queue.",
            galera.recv_queue as f64,
        );
    }
    if let Some(load) = &assessment.load {
        out.gauge(
            "remora_threads_running",
            "Threads_running.",
            load.threads_running as f64,
        );
        out.gauge(
            "remora_threads_connected",
            "Threads_connected.",
            load.threads_connected as f64,
        );
    }

    out.gauge(
        "remora_maintenance",
        "1 while an operator's maintenance switch is on.",
        bool_value(snapshot.maintenance.is_some()),
    );
    let reported: Vec<(&str, Reported, u8)> = snapshot
        .pools
        .iter()
        .map(|pool| {
            let reported = snapshot.reported(now, pool);
            let weight = match reported {
                Reported::Up => snapshot.state(now, pool).weight(),
                _ => 0,
            };
            (pool.label(), reported, weight)
        })
        .collect();
    out.family(
        "remora_weight_percent",
        "gauge",
        "Weight the agent reports, per pool (0 unless up).",
        reported
            .iter()
            .map(|(pool, _, weight)| (vec![("pool", *pool)], f64::from(*weight))),
    );
    out.family(
        "remora_verdict",
        "gauge",
        "What the agent reports per pool, one-hot.",
        reported.iter().flat_map(|(pool, now, _)| {
            Reported::ALL.map(|state| {
                (
                    vec![("pool", *pool), ("verdict", state.as_str())],
                    bool_value(*now == state),
                )
            })
        }),
    );
    let mut checks = Vec::new();
    for pool in &snapshot.pools {
        for state in Reported::ALL {
            checks.push((pool.label(), state, pool.checks.get(state)));
        }
    }
    for state in Reported::ALL {
        checks.push(("unknown", state, snapshot.unknown_checks.get(state)));
    }
    out.family(
        "remora_agent_checks_total",
        "counter",
        "Agent checks answered, per pool asked for and what was reported.",
        checks.iter().map(|(pool, state, count)| {
            (
                vec![("pool", *pool), ("verdict", state.as_str())],
                *count as f64,
            )
        }),
    );
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let mut out = Exposition::default();
        out.gauge("remora_x", "An x.", 1.5);
        out.family(
            "remora_y_total",
            "counter",
            "A y.",
            [
                (vec![("pool", "a\"b"), ("channel", "c\\d\ne")], 3.0),
                (vec![], f64::INFINITY),
            ],
        );
        assert_eq!(
            out.0,
            "# HELP remora_x An x.\n# TYPE remora_x gauge\nremora_x 1.5\n\
             # HELP remora_y_total A y.\n# TYPE remora_y_total counter\n\
             remora_y_total{pool=\"a\\\"b\",channel=\"c\\\\d\\ne\"} 3\n\
             remora_y_total +Inf\n"
        );
    }

    #[test]
    fn wall_clocks_out_of_rfc3339_range_render_as_nothing() {
        use std::time::{SystemTime, UNIX_EPOCH};
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(86400)).as_deref(),
            Some("1970-01-02T00:00:00.000Z")
        );
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(1)), None);
        let year_10000 = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(rfc3339(year_10000), None);
        assert!(rfc3339(year_10000 - Duration::from_secs(1)).is_some());
        assert!(rfc3339(SystemTime::now()).is_some());
    }

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
