//! `remora ctl`: the admin switch from the command line, so nobody writes
//! HTTP by hand. It reads the HTTP address and the token file from the same
//! configuration file remora runs with, and talks to remora on loopback.
//!
//! `drain --wait` is a drain HAProxy has acknowledged: it returns once every
//! HAProxy peer that was asking has been answered `drain` (or `maint`) since
//! the switch was set, as remora's own record of who asks shows (see
//! [`crate::checks`]). No blind sleep before a stop.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::config::{Config, Secret};

/// What `remora ctl` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Switch maintenance on: `drain` (weight 0, sessions stay) or `maint`.
    Switch { maint: bool, message: String },
    /// Switch maintenance off.
    Ready,
    /// Show what remora answers now.
    Status,
}

/// How `remora ctl` waits after switching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Waiting {
    /// Until every HAProxy that was asking has been answered the switch.
    pub acknowledged: bool,
    /// Until the server's `Threads_connected` is at most this.
    pub idle_below: Option<u64>,
    pub timeout: Duration,
}

/// Why `remora ctl` failed: printed, and exit status 1.
#[derive(Debug)]
pub struct CtlError(String);

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CtlError {}

fn fail<T>(message: impl Into<String>) -> Result<T, CtlError> {
    Err(CtlError(message.into()))
}

/// Longest any one HTTP exchange with remora may take.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(5);
/// How often `--wait` looks at who has been answered.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Talks to one remora's HTTP listener.
pub struct Client {
    addr: SocketAddr,
    token: Option<Secret>,
    target: Option<String>,
}

impl Client {
    /// The remora `config` describes, reached on loopback when it listens
    /// on every address; `token` is `http.admin_token_file`'s.
    pub fn of(config: &Config, token: Option<Secret>, target: Option<String>) -> Client {
        let mut addr = config.http.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        Client {
            addr,
            token,
            target,
        }
    }

    fn path(&self, path: &str) -> String {
        match &self.target {
            Some(target) => {
                let name: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
                format!("{path}?target={name}")
            }
            None => path.to_owned(),
        }
    }

    /// One request; the status and body.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: String,
    ) -> Result<(StatusCode, String), CtlError> {
        let addr = self.addr;
        let not_there = |why: String| CtlError(format!("remora is not answering on {addr}: {why}"));
        let work = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|err| not_there(err.to_string()))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|err| not_there(err.to_string()))?;
            tokio::spawn(connection);
            let mut request = Request::builder()
                .method(method)
                .uri(self.path(path))
                .header(HOST, addr.to_string())
                .header(CONTENT_TYPE, "text/plain");
            if let Some(token) = &self.token {
                request = request.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
            }
            let request = request
                .body(Full::new(Bytes::from(body)))
                .map_err(|err| CtlError(format!("cannot build the request: {err}")))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|err| not_there(err.to_string()))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|err| not_there(err.to_string()))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        match timeout(EXCHANGE_LIMIT, work).await {
            Ok(done) => done,
            Err(_) => Err(not_there(format!("no answer within {EXCHANGE_LIMIT:?}"))),
        }
    }

    /// `GET /status`, parsed.
    pub async fn status(&self) -> Result<Value, CtlError> {
        let (code, body) = self.exchange(Method::GET, "/status", String::new()).await?;
        if code != StatusCode::OK {
            return fail(format!("/status answered {code}: {}", body.trim()));
        }
        serde_json::from_str(&body).map_err(|err| CtlError(format!("/status is not JSON: {err}")))
    }

    /// Sets or clears the switch; remora's reply.
    pub async fn switch(&self, action: &Action) -> Result<String, CtlError> {
        let (method, body) = match action {
            Action::Switch { maint, message } => {
                let mode = if *maint { "maint" } else { "drain" };
                (Method::POST, format!("{mode} {message}").trim().to_owned())
            }
            Action::Ready => (Method::DELETE, String::new()),
            Action::Status => return fail("not a switch"),
        };
        let (code, reply) = self.exchange(method, "/maintenance", body).await?;
        match code {
            StatusCode::OK => Ok(reply),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                fail(format!("the switch refused ({code}): {}", reply.trim()))
            }
            code => fail(format!("the switch answered {code}: {}", reply.trim())),
        }
    }
}

/// One HAProxy asking about one pool, as `/status` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Asker {
    pub pool: String,
    pub address: String,
    pub checks: u64,
    pub last_verdict: String,
    pub silent: bool,
    pub seconds_since_last_check: f64,
    /// It has asked more than once, so it has a pace: a HAProxy checking,
    /// not someone's one `nc`.
    pub paced: bool,
    /// Its checks come at more than one rhythm: several HAProxies behind
    /// one address, which the record counts as one.
    pub several: bool,
}

impl Asker {
    /// A HAProxy asking now: it checks at a pace, and has not fallen silent.
    fn is_asking(&self) -> bool {
        self.paced && !self.silent
    }
}

impl fmt::Display for Asker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (pool {}): last asked {:.1} s ago, told {}",
            self.address, self.pool, self.seconds_since_last_check, self.last_verdict
        )
    }
}

/// Every peer `/status` lists, by pool and address.
pub fn askers(status: &Value) -> Vec<Asker> {
    let mut found = Vec::new();
    let mut add = |pool: &str, peers: Option<&Value>| {
        for peer in peers.and_then(Value::as_array).into_iter().flatten() {
            found.push(Asker {
                pool: pool.to_owned(),
                address: peer["address"].as_str().unwrap_or("?").to_owned(),
                checks: peer["checks"].as_u64().unwrap_or(0),
                last_verdict: peer["last_verdict"].as_str().unwrap_or("?").to_owned(),
                silent: peer["silent"].as_bool().unwrap_or(true),
                seconds_since_last_check: peer["seconds_since_last_check"].as_f64().unwrap_or(0.0),
                paced: peer["interval_seconds"].is_number(),
                several: peer["several"].as_bool().unwrap_or(false),
            });
        }
    };
    add("default", status.get("peers"));
    add("(none named)", status.get("unmatched_peers"));
    for (pool, state) in status["pools"].as_object().into_iter().flatten() {
        add(pool, state.get("peers"));
    }
    found
}

/// The pools whose record of peers is crowded (one still asking was
/// forgotten to make room): who was told cannot be read from them.
pub fn crowded(status: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if status["peers_crowded"].as_bool() == Some(true) {
        found.push("default".to_owned());
    }
    if status["unmatched_peers_crowded"].as_bool() == Some(true) {
        found.push("(none named)".to_owned());
    }
    for (pool, state) in status["pools"].as_object().into_iter().flatten() {
        if state["peers_crowded"].as_bool() == Some(true) {
            found.push(pool.clone());
        }
    }
    found
}

/// Why remora's record of who asks cannot tell whether a switch was seen,
/// if it cannot: a drain is never reported acknowledged on a guess.
pub fn cannot_tell(status: &Value, askers: &[Asker]) -> Option<String> {
    let crowded = crowded(status);
    if !crowded.is_empty() {
        return Some(format!(
            "cannot tell whether every HAProxy was told: more HAProxies asked about pool {} \
             than remora remembers ({} addresses), and some were forgotten to make room",
            crowded.join(", "),
            crate::checks::MAX_PEERS
        ));
    }
    let several: Vec<String> = (askers.iter())
        .filter(|asker| asker.is_asking() && asker.several)
        .map(|asker| format!("{} (pool {})", asker.address, asker.pool))
        .collect();
    if !several.is_empty() {
        return Some(format!(
            "cannot tell whether every HAProxy was told: checks from {} come at more than one \
             rhythm, so several HAProxies (or server lines) share that address and count as \
             one; give each HAProxy its own source address (no SNAT between HAProxy and remora)",
            several.join(", ")
        ));
    }
    None
}

/// The peers that were asking before the switch and have not been
/// answered it since: those with no new check, or whose last answer is
/// not the switch's.
pub fn not_yet_told(before: &[Asker], now: &[Asker]) -> Vec<Asker> {
    let now: BTreeMap<(&str, &str), &Asker> = (now.iter())
        .map(|asker| ((asker.pool.as_str(), asker.address.as_str()), asker))
        .collect();
    (before.iter())
        .filter(|asker| asker.is_asking())
        .filter_map(|asker| {
            let current = now.get(&(asker.pool.as_str(), asker.address.as_str()));
            let told = current.is_some_and(|current| {
                current.checks > asker.checks
                    && matches!(current.last_verdict.as_str(), "drain" | "maint")
            });
            (!told).then(|| (*current.unwrap_or(&asker)).clone())
        })
        .collect()
}

/// Runs `action` and waits as asked; what to print on success.
pub async fn run(client: &Client, action: &Action, waiting: Waiting) -> Result<String, CtlError> {
    match action {
        Action::Status => Ok(summary(&client.status().await?)),
        Action::Ready => client.switch(action).await,
        Action::Switch { .. } => {
            let before = if waiting.acknowledged {
                Some(client.status().await?)
            } else {
                None
            };
            let mut said = client.switch(action).await?;
            let deadline = Instant::now() + waiting.timeout;
            if let Some(before) = before {
                said.push_str(&wait_acknowledged(client, &before, deadline).await?);
            }
            if let Some(idle) = waiting.idle_below {
                said.push_str(&wait_idle(client, idle, deadline).await?);
            }
            Ok(said)
        }
    }
}

/// Waits until every HAProxy asking in `before` (the status before the
/// switch) has been answered the switch; fails at once, switch left on,
/// when the record cannot tell.
async fn wait_acknowledged(
    client: &Client,
    before: &Value,
    deadline: Instant,
) -> Result<String, CtlError> {
    let before_askers = askers(before);
    if let Some(why) = cannot_tell(before, &before_askers) {
        return fail(format!("switched, but {why}"));
    }
    let asking = before_askers
        .iter()
        .filter(|asker| asker.is_asking())
        .count();
    if asking == 0 {
        return Ok("no HAProxy was asking: nothing to wait for\n".into());
    }
    loop {
        let status = client.status().await?;
        let now = askers(&status);
        if let Some(why) = cannot_tell(&status, &now) {
            return fail(format!("switched, but {why}"));
        }
        let left = not_yet_told(&before_askers, &now);
        if left.is_empty() {
            return Ok(format!(
                "acknowledged: every HAProxy asking ({asking}) has been answered the switch\n"
            ));
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = left.iter().map(ToString::to_string).collect();
            return fail(format!(
                "not acknowledged within the timeout by {} of {asking}: {}",
                left.len(),
                names.join("; ")
            ));
        }
        sleep(LOOK_EVERY).await;
    }
}

async fn wait_idle(client: &Client, idle: u64, deadline: Instant) -> Result<String, CtlError> {
    loop {
        let status = client.status().await?;
        let Some(connected) = status["load"]["threads_connected"].as_u64() else {
            return fail(
                "--idle-below needs Threads_connected, which remora reads only with a `load:` \
                 section in its configuration",
            );
        };
        if connected <= idle {
            return Ok(format!("idle: {connected} connected (at most {idle})\n"));
        }
        if Instant::now() >= deadline {
            return fail(format!(
                "still {connected} connected at the timeout (waited for at most {idle})"
            ));
        }
        sleep(LOOK_EVERY).await;
    }
}

/// What `remora ctl status` prints: every pool's agent line, the switch,
/// and who asks.
pub fn summary(status: &Value) -> String {
    let mut out = String::new();
    if let Some(targets) = status["targets"].as_object() {
        for (name, target) in targets {
            out.push_str(&format!(
                "{name}: {}\n",
                target["agent_reply"].as_str().unwrap_or("?")
            ));
        }
        return out;
    }
    out.push_str(&format!(
        "default: {}\n",
        status["agent_reply"].as_str().unwrap_or("?")
    ));
    for (pool, state) in status["pools"].as_object().into_iter().flatten() {
        out.push_str(&format!(
            "{pool}: {}\n",
            state["agent_reply"].as_str().unwrap_or("?")
        ));
    }
    match status["maintenance"].as_object() {
        Some(on) => out.push_str(&format!(
            "maintenance: {} ({})\n",
            on.get("mode").and_then(Value::as_str).unwrap_or("?"),
            on.get("source").and_then(Value::as_str).unwrap_or("?")
        )),
        None => out.push_str("maintenance: off\n"),
    }
    let askers = askers(status);
    let asking = askers.iter().filter(|asker| asker.is_asking()).count();
    out.push_str(&format!(
        "HAProxy peers asking: {asking} ({} seen in 10 minutes)\n",
        askers.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asker(pool: &str, address: &str, checks: u64, verdict: &str, silent: bool) -> Asker {
        Asker {
            pool: pool.into(),
            address: address.into(),
            checks,
            last_verdict: verdict.into(),
            silent,
            seconds_since_last_check: 0.5,
            paced: true,
            several: false,
        }
    }

    #[test]
    fn a_drain_is_acknowledged_once_every_asking_haproxy_was_told_it() {
        let before = [
            asker("main", "10.0.0.5", 10, "up", false),
            asker("main", "10.0.0.6", 7, "up", false),
            asker("writer", "10.0.0.5", 10, "down", false),
            asker("main", "10.0.0.9", 3, "up", true),
        ];
        let partly = [
            asker("main", "10.0.0.5", 11, "drain", false),
            asker("main", "10.0.0.6", 7, "up", false),
            asker("writer", "10.0.0.5", 11, "down", false),
        ];
        let left = not_yet_told(&before, &partly);
        let left: Vec<(&str, &str)> = (left.iter())
            .map(|a| (a.pool.as_str(), a.address.as_str()))
            .collect();
        assert_eq!(left, [("main", "10.0.0.6"), ("writer", "10.0.0.5")]);
        let all = [
            asker("main", "10.0.0.5", 12, "drain", false),
            asker("main", "10.0.0.6", 8, "maint", false),
            asker("writer", "10.0.0.5", 12, "drain", false),
        ];
        assert!(
            not_yet_told(&before, &all).is_empty(),
            "the silent one is not waited for"
        );
        // Someone's one `nc` is no HAProxy: nothing to wait for.
        let once = Asker {
            paced: false,
            ..asker("main", "10.0.0.8", 1, "up", false)
        };
        assert!(not_yet_told(&[once], &[]).is_empty());
    }

    #[test]
    fn a_record_that_cannot_tell_is_never_read_as_acknowledged() {
        let whole = serde_json::json!({"peers": [], "peers_crowded": false, "pools": {}});
        let asking = [asker("main", "10.0.0.5", 10, "up", false)];
        assert_eq!(cannot_tell(&whole, &asking), None);
        // More HAProxies than remora remembers: everyone may have been
        // forgotten, and "nobody was asking" would be a guess.
        let crowded = serde_json::json!({"peers": [], "pools": {"main": {"peers": [], "peers_crowded": true}}});
        let why = cannot_tell(&crowded, &[]).expect("crowded");
        assert!(why.contains("pool main"), "{why}");
        // Two HAProxies behind one address count as one.
        let shared = Asker {
            several: true,
            ..asker("main", "10.0.0.9", 20, "up", false)
        };
        let why = cannot_tell(&whole, &[shared]).expect("several");
        assert!(why.contains("10.0.0.9 (pool main)"), "{why}");
    }

    #[test]
    fn status_documents_list_their_askers() {
        let status: Value = serde_json::json!({
            "agent_reply": "up ready 100%",
            "peers": [],
            "unmatched_peers": [{"address": "10.0.0.7", "checks": 2, "last_verdict": "down", "silent": false, "seconds_since_last_check": 1.0, "interval_seconds": 1.0}],
            "pools": {"main": {"agent_reply": "up drain #maintenance", "peers": [
                {"address": "10.0.0.5", "checks": 9, "last_verdict": "drain", "silent": false, "seconds_since_last_check": 0.2, "interval_seconds": 1.0}
            ]}},
            "maintenance": {"mode": "drain", "source": "http"}
        });
        let found = askers(&status);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].pool, "main");
        let text = summary(&status);
        assert!(text.contains("main: up drain #maintenance"), "{text}");
        assert!(text.contains("maintenance: drain (http)"), "{text}");
        assert!(text.contains("HAProxy peers asking: 2"), "{text}");
    }
}
