//! HTTP on `http.listen`, all answered from the same snapshot as the agent:
//!
//! - `GET /status`: the verdict and everything behind it, as JSON;
//! - `GET /health`: 200 when up with weight > 0, 404 when drained (for
//!   HAProxy's `http-check disable-on-404`), 503 when down; the body is the
//!   agent line.
//!
//! Every connection is bounded: the request head must arrive within
//! [`HEADER_DEADLINE`], keep-alive is off, and no connection lives longer than
//! [`CONNECTION_DEADLINE`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use log::debug;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::policy::State;
use crate::poller::{Lookup, PoolVerdict, Snapshot};

const HEADER_DEADLINE: Duration = Duration::from_secs(2);
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves HTTP on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    debug!("http: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let snapshots = snapshots.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let snapshot = Arc::clone(&snapshots.borrow());
            async move { Ok::<_, Infallible>(respond(&request, &snapshot)) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_DEADLINE)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            match timeout(CONNECTION_DEADLINE, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => debug!("http: connection ended: {err}"),
                Err(_) => debug!("http: connection cut after {CONNECTION_DEADLINE:?}"),
            }
        });
    }
    drop(listener);
    if timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        debug!("http: connections still open at shutdown");
    }
}

fn respond<B>(request: &Request<B>, snapshot: &Snapshot) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !matches!(path, "/status" | "/health") {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let now = Instant::now();
    match path {
        "/status" => {
            let mut body = serde_json::to_string_pretty(&status_json(snapshot, now))
                .expect("a JSON value always serializes");
            body.push('\n');
            reply(StatusCode::OK, "application/json", body)
        }
        _ => {
            let lookup = snapshot.lookup(query_param(request.uri().query(), "pool"));
            let code = match snapshot.state(now, lookup.verdict()) {
                State::Up(weight) if weight > 0 => StatusCode::OK,
                State::Up(_) | State::Drain => StatusCode::NOT_FOUND,
                State::Down => StatusCode::SERVICE_UNAVAILABLE,
            };
            reply(
                code,
                "text/plain",
                snapshot.agent_line(now, lookup).into_owned(),
            )
        }
    }
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

fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
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
/// server calls its columns.
pub fn status_json(snapshot: &Snapshot, now: Instant) -> Value {
    let observation = &snapshot.observation;
    let default = snapshot.default_pool();
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
                                "message": err.message.chars().take(512).collect::<String>(),
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
    let lag = match &snapshot.health {
        // Not a replica: nothing to lag behind.
        Health::Primary { .. } => json!({
            "seconds": 0.0,
            "estimated": false,
            "estimated_because": null,
            "channel": null,
            "source": "primary",
        }),
        health => health.lag().map_or(Value::Null, |lag| {
            json!({
                "seconds": seconds(lag.value),
                "estimated": lag.is_estimated(),
                "estimated_because": lag.estimated,
                "channel": lag.channel,
                "source": "replica_status",
            })
        }),
    };
    let mut status = pool_json(snapshot, default, now);
    let facts = json!({
        "role": snapshot.health.role(),
        "read_only": read_only,
        "server_version": server_version,
        "dialect": dialect,
        "lag": lag,
        "replication": replication,
        "last_poll": {
            "at": rfc3339(observation.wall),
            "ok": observation.result.is_ok(),
            "duration_ms": millis(observation.duration),
            "error": observation.result.as_ref().err().map(|err| json!({
                "kind": err.kind(),
                "message": err.to_string(),
            })),
        },
        "last_success": snapshot.last_success.map(|success| json!({
            "at": rfc3339(success.wall),
            "age_seconds": seconds(now.saturating_duration_since(success.at)),
            "duration_ms": millis(success.duration),
        })),
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

/// One policy's verdict as `/status` shows it.
fn pool_json(snapshot: &Snapshot, pool: &PoolVerdict, now: Instant) -> Value {
    let state = snapshot.state(now, pool);
    let stale = snapshot.is_stale(now, pool);
    let line = snapshot.agent_line(now, Lookup::Found(pool));
    let line = line.trim_end();
    let reason = if stale {
        line.trim_start_matches("down #").to_owned()
    } else {
        pool.decision.verdict.reason.clone()
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
        "verdict": state.as_str(),
        "weight": state.weight(),
        "reason": reason,
        "agent_reply": line,
        "stale": stale,
        "recovering": recovering,
    })
}
